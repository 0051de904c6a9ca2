//! One module per resource; each exposes `configure` and nothing else registers its routes.

pub mod backups;
pub mod ops;
pub mod planets;
pub mod projects;
pub mod tenants;

use crate::state::State;

/// `Location` of a resource: absolute when a public URL is configured.
pub fn location(state: &State, path: &str) -> String {
    format!("{}/api/v1{path}", state.config.http.public_url.trim_end_matches('/'))
}

/// Optional free text: trimmed length checked, empty becomes absent.
pub fn optional_text(
    errors: &mut Vec<svalbard_core::FieldError>,
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Option<String> {
    let v = value?.trim();
    if v.chars().count() > max {
        errors.push(svalbard_core::FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        errors.push(svalbard_core::FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    (!v.is_empty()).then(|| v.to_owned())
}
