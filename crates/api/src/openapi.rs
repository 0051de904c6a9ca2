//! The OpenAPI document: paths come from the handlers, shared parts are added here.

use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Doc, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::error::{PROBLEM_JSON, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Svalbard",
        description = "Multi-tenant backup control plane for databases: tenants, projects and planets \
                       (databases), their backups in S3-compatible storage, and restores.",
        license(name = "Apache-2.0"),
    ),
    components(schemas(Problem, svalbard_core::FieldError)),
    tags(
        (name = "tenants", description = "Tenants: the unit of isolation (platform administrators)"),
        (name = "projects", description = "Projects group the planets of a tenant"),
        (name = "planets", description = "Planets: the databases Svalbard backs up"),
        (name = "backups", description = "Backups of planets, their archives and maintenance status"),
        (name = "restores", description = "Restores of stored backups into planets"),
        (name = "schedules", description = "Backup schedules of planets and their retention policies"),
        (name = "audit", description = "The audit log of a tenant: who did what, from where"),
        (name = "operations", description = "Health and readiness"),
    ),
)]
pub struct ApiDoc;

/// Bearer security on every operation, and the problem responses every operation can give.
pub struct Shared;

const COMMON: &[(&str, &str)] = &[
    ("400", "Invalid input: the problem names each offending field"),
    ("401", "Missing, malformed, expired or badly signed token"),
    ("403", "The token's role is too weak for this call"),
    ("404", "Not found, or not visible to this token's tenant"),
];

/// What operations with a body, and creates with an `Idempotency-Key`, can answer besides.
const BODY_AND_KEY: &[(&str, &str)] = &[
    ("413", "The body is larger than the configured limit"),
    ("415", "The body is not JSON"),
    ("422", "The Idempotency-Key was already used for a different request"),
];

impl Modify for Shared {
    fn modify(&self, doc: &mut Doc) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        let problem = ResponseBuilder::new()
            .description("A problem (RFC 9457)")
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        components.responses.insert("Problem".into(), RefOr::T(problem));
        doc.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
        for item in doc.paths.paths.values_mut() {
            let ops: [&mut Option<Operation>; 5] = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                let public = op
                    .security
                    .as_ref()
                    .is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()));
                let with_body = op.request_body.is_some();
                let extra: &[(&str, &str)] = match (
                    with_body,
                    op.operation_id.as_deref().is_some_and(|id| id.starts_with("create")),
                ) {
                    (true, true) => BODY_AND_KEY,
                    (true, false) => &BODY_AND_KEY[..2],
                    _ => &[],
                };
                for (code, desc) in COMMON.iter().chain(extra) {
                    if public && *code != "400" {
                        continue;
                    }
                    op.responses.responses.entry((*code).into()).or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(*desc)
                                .content(
                                    PROBLEM_JSON,
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("Problem")))
                                        .build(),
                                )
                                .build(),
                        )
                    });
                }
            }
        }
    }
}

/// The complete document, as served at `/openapi.json` and committed under `openapi/`.
#[must_use]
pub fn document() -> Doc {
    crate::startup::routes_and_doc().1
}

/// The document as pretty JSON with a trailing newline.
#[must_use]
pub fn document_json() -> String {
    let mut s = document().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}
