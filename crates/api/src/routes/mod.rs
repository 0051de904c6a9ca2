//! One module per resource; each exposes `configure` and nothing else registers its routes.

pub mod audit;
pub mod backups;
pub mod keys;
pub mod ops;
pub mod planets;
pub mod profiles;
pub mod projects;
pub mod restores;
pub mod schedules;
pub mod tenants;
pub mod webhooks;

use serde::Deserialize;
use svalbard_core::ids::{BackupId, PlanetId, ProjectId, TenantId};
use utoipa::IntoParams;

use crate::state::State;

/// Path of a tenant.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantPath {
    /// The tenant.
    #[serde(rename = "tenantId")]
    #[param(rename = "tenantId")]
    pub tenant: TenantId,
}

/// Path of a project.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProjectPath {
    /// The tenant.
    #[serde(rename = "tenantId")]
    #[param(rename = "tenantId")]
    pub tenant: TenantId,
    /// The project.
    #[serde(rename = "projectId")]
    #[param(rename = "projectId")]
    pub project: ProjectId,
}

/// Path of a planet.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PlanetPath {
    /// The tenant.
    #[serde(rename = "tenantId")]
    #[param(rename = "tenantId")]
    pub tenant: TenantId,
    /// The project.
    #[serde(rename = "projectId")]
    #[param(rename = "projectId")]
    pub project: ProjectId,
    /// The planet.
    #[serde(rename = "planetId")]
    #[param(rename = "planetId")]
    pub planet: PlanetId,
}

/// Path of a backup.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BackupPath {
    /// The tenant.
    #[serde(rename = "tenantId")]
    #[param(rename = "tenantId")]
    pub tenant: TenantId,
    /// The project.
    #[serde(rename = "projectId")]
    #[param(rename = "projectId")]
    pub project: ProjectId,
    /// The backup.
    #[serde(rename = "backupId")]
    #[param(rename = "backupId")]
    pub backup: BackupId,
}

/// Path of a restore.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RestorePath {
    /// The tenant.
    #[serde(rename = "tenantId")]
    #[param(rename = "tenantId")]
    pub tenant: TenantId,
    /// The project.
    #[serde(rename = "projectId")]
    #[param(rename = "projectId")]
    pub project: ProjectId,
    /// The restore.
    #[serde(rename = "restoreId")]
    #[param(rename = "restoreId")]
    pub restore: svalbard_core::ids::RestoreId,
}

/// The `Idempotency-Key` header of creates (documentation; read by `IdempotencyKey`).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// Makes the create safe to retry: the same key and body get the first answer again.
    #[param(rename = "Idempotency-Key")]
    pub idempotency_key: Option<String>,
}

/// Paging of lists (documentation; parsed by `ListQuery`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page, as given (opaque); any other value answers 400.
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

/// Status filter of backup lists (documentation; parsed by `ListQuery`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusFilter {
    /// Only backups in this state, spelled exactly as listed (`succeeded`, not `Succeeded`).
    pub status: Option<svalbard_core::backup::BackupStatus>,
}

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
