//! The OpenAPI document: paths come from the handlers, shared parts are added here.
//!
//! What every operation has in common is derived from the operations themselves, so a new
//! route gets it without saying so: the problems any authenticated call can answer, the ones a
//! body or an `Idempotency-Key` adds, the `Retry-After` of a 429 or 503 and the `Location` of a
//! 201. Response objects list every field the server always writes as required.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Doc, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::error::{PROBLEM_JSON, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Svalbard",
        description = "Multi-tenant backup control plane for databases: tenants, projects and planets \
                       (databases), their backups in S3-compatible storage, and restores.\n\n\
                       Errors are RFC 9457 problems (`application/problem+json`). Within `/api/v1` the \
                       document only grows: fields, enum values, operations and status codes are added, \
                       never removed or renamed.",
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
        (name = "webhooks", description = "Signed notifications of a tenant's backups and restores, sent to its own endpoints"),
        (name = "keys", description = "A tenant's archive keys: every archive is encrypted for them (age), they are \
            sealed by the platform's master keys, and an admin can rotate or export them"),
        (name = "audit", description = "The audit log of a tenant: who did what, from where"),
        (name = "operations", description = "Health and readiness"),
        (name = "guidewire", description = "Drop-in profile: the Guidewire database backups API, under \
            `/api/v1/tenants/{tenantId}/starsystems/{projectId}` (a star system is a project)"),
        (name = "connectware", description = "Drop-in profile: Connectware's database backup and restore, \
            one planet per base URL `/profiles/connectware/tenants/{tenantId}/projects/{projectId}/planets/{planetId}`. \
            Takes HTTP Basic as well as Bearer: any user name, a Svalbard token as the password"),
        (name = "dbaas", description = "Drop-in profile: the DBaaS backups API, base URL \
            `/profiles/dbaas/tenants/{tenantId}`; a database id is a planet id of the tenant"),
        (name = "camunda", description = "Drop-in profile: Camunda's backup management API with client-chosen \
            numeric ids, one planet per base URL `/profiles/camunda/tenants/{tenantId}/projects/{projectId}/planets/{planetId}`"),
    ),
)]
pub struct ApiDoc;

/// Bearer security on every operation, and the problem responses every operation can give.
pub struct Shared;

/// What any call can answer.
const ANY: &[(&str, &str)] = &[(
    "400",
    "Invalid input: a path id that is not a UUID, a query parameter out of range (a `cursor` \
     that is not a `nextCursor` of this API, a `status` not spelled as listed), or an invalid \
     body; the problem names each offending field",
)];

/// What an authenticated call can answer besides.
const AUTHENTICATED: &[(&str, &str)] = &[
    ("401", "Missing, malformed, expired or badly signed token"),
    (
        "403",
        "The token's role is too weak for this call, or it belongs to another tenant",
    ),
    ("404", "Not found, or not visible to this token's tenant"),
    (
        "503",
        "The control database is busy with a conflicting change or unreachable; retry after `Retry-After` seconds",
    ),
];

/// What operations with a body can answer besides.
const WITH_BODY: &[(&str, &str)] = &[
    ("413", "The body is larger than the configured limit"),
    ("415", "The body's content type is not the documented one"),
];

/// What operations taking an `Idempotency-Key` can answer besides.
const WITH_KEY: &[(&str, &str)] = &[("422", "The Idempotency-Key was already used for a different request")];

/// Operations that reach object storage while answering.
const UPSTREAM: &[&str] = &[
    "archive",
    "restore_upload",
    "connectware_download",
    "connectware_restore",
    "dbaas_archive",
    "camunda_create_backup",
];
const BAD_GATEWAY: (&str, &str) = ("502", "Object storage did not answer as expected; retry later");

/// The `Idempotency-Key` header as the server accepts it.
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]([\\t -~]{0,253}[!-~])?$";

/// Request examples of the main operations, by operation id.
fn request_example(operation_id: &str) -> Option<Value> {
    Some(match operation_id {
        "create_tenant" => json!({ "name": "acme", "displayName": "Acme Corporation" }),
        "create_project" => json!({ "name": "shop", "description": "Web shop databases" }),
        "create_planet" => json!({
            "name": "orders",
            "engine": "postgresql",
            "planetClass": "prod",
            "labels": { "team": "payments" },
            "connection": {
                "host": "db.internal", "port": 5432, "database": "orders",
                "user": "backup", "password": "s3cret", "sslmode": "require"
            }
        }),
        "update_planet" => json!({ "labels": { "team": "checkout" }, "connection": { "sslmode": "verify-full" } }),
        "create_backup" | "guidewire_create_backup" => json!({
            "mechanism": "logical",
            "planetClass": "dev",
            "temporary": true,
            "retentionPeriodInDays": 10,
            "metadata": { "name": "sample backup", "description": "This is a sample backup." }
        }),
        "update_backup" => json!({ "pinned": true }),
        "camunda_create_backup" => json!({ "backupId": 123 }),
        "create_webhook" => json!({
            "url": "https://hooks.example.com/svalbard",
            "eventTypes": ["backup.failed", "restore.failed", "verification.failed"]
        }),
        "restore_backup" => json!({ "targetDatabase": "orders_copy" }),
        "put_schedule" => json!({
            "cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "retention": { "keepDaily": 7, "keepWeekly": 4, "keepMonthly": 6 }
        }),
        _ => return None,
    })
}

fn problem_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

fn string_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

fn retry_after() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
        .description(Some("Seconds to wait before trying again"))
        .build()
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.patch,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
}

fn is_public(op: &Operation) -> bool {
    op.security
        .as_ref()
        .is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()))
}

fn has_idempotency_key(op: &Operation) -> bool {
    op.parameters
        .iter()
        .flatten()
        .any(|p| p.parameter_in == ParameterIn::Header && p.name == IDEMPOTENCY_KEY)
}

/// A query or header parameter is absent or has a value: JSON's `null` means nothing there.
fn without_null(schema: &mut RefOr<Schema>) {
    match schema {
        RefOr::T(Schema::Object(o)) => {
            if let SchemaType::Array(types) = &o.schema_type {
                let rest: Vec<Type> = types.iter().filter(|t| **t != Type::Null).cloned().collect();
                if let [only] = rest.as_slice() {
                    o.schema_type = SchemaType::Type(only.clone());
                }
            }
        }
        RefOr::T(Schema::OneOf(o)) => {
            let rest: Vec<RefOr<Schema>> = o
                .items
                .iter()
                .filter(|i| !matches!(i, RefOr::T(Schema::Object(n)) if n.schema_type == SchemaType::Type(Type::Null)))
                .cloned()
                .collect();
            if let [only] = rest.as_slice() {
                *schema = only.clone();
            }
        }
        _ => {}
    }
}

/// The key is optional but, when sent, must be what the server takes.
fn refine_parameters(op: &mut Operation) {
    for p in op.parameters.iter_mut().flatten() {
        if p.parameter_in != ParameterIn::Path
            && let Some(schema) = &mut p.schema
        {
            without_null(schema);
        }
        if p.parameter_in == ParameterIn::Header && p.name == IDEMPOTENCY_KEY {
            p.schema = Some(RefOr::T(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(255))
                    .pattern(Some(IDEMPOTENCY_KEY_PATTERN))
                    .build(),
            )));
        }
    }
}

fn add_problems(op: &mut Operation) {
    let public = is_public(op);
    let mut wanted: Vec<(&str, &str)> = ANY.to_vec();
    if !public {
        wanted.extend_from_slice(AUTHENTICATED);
    }
    if op.request_body.is_some() {
        wanted.extend_from_slice(WITH_BODY);
    }
    if has_idempotency_key(op) {
        wanted.extend_from_slice(WITH_KEY);
    }
    if op.operation_id.as_deref().is_some_and(|id| UPSTREAM.contains(&id)) {
        wanted.push(BAD_GATEWAY);
    }
    for (code, desc) in wanted {
        op.responses
            .responses
            .entry(code.into())
            .or_insert_with(|| problem_response(desc));
    }
}

fn add_headers(op: &mut Operation) {
    for (code, response) in &mut op.responses.responses {
        let RefOr::T(response) = response else { continue };
        match code.as_str() {
            "201" => {
                response
                    .headers
                    .insert("Location".into(), string_header("The created resource"));
            }
            "202" if response.headers.contains_key("Location") => {
                response
                    .headers
                    .insert("Location".into(), string_header("The accepted resource, to poll"));
            }
            "302" => {
                response
                    .headers
                    .insert("Location".into(), string_header("Where to go instead"));
            }
            "401" => {
                response.headers.insert(
                    "WWW-Authenticate".into(),
                    string_header("`Bearer` challenge naming what is wrong with the token"),
                );
            }
            "429" | "503" => {
                response.headers.insert("Retry-After".into(), retry_after());
            }
            _ => {}
        }
    }
}

fn add_example(op: &mut Operation) {
    let Some(example) = op.operation_id.as_deref().and_then(request_example) else {
        return;
    };
    if let Some(body) = &mut op.request_body {
        for content in body.content.values_mut() {
            content.example = Some(example.clone());
        }
    }
}

/// Labels, wherever a body takes them, as `validate_labels` checks them.
fn constrain_labels(schema: &mut Schema) {
    let Schema::Object(o) = schema else { return };
    for (name, prop) in &mut o.properties {
        let RefOr::T(Schema::Object(labels)) = prop else {
            continue;
        };
        if name == "labels" {
            labels.max_properties = Some(64);
            labels.property_names = Some(Box::new(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[A-Za-z0-9._/-]{1,63}$"))
                    .build(),
            )));
            labels.additional_properties = Some(Box::new(utoipa::openapi::schema::AdditionalProperties::RefOr(
                RefOr::T(Schema::Object(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .max_length(Some(255))
                        .pattern(Some("^[^\\x00]*$"))
                        .build(),
                )),
            )));
        }
    }
}

/// Component schemas reachable from `roots` (values holding `$ref`s), transitively.
fn reachable(doc: &Value, roots: impl IntoIterator<Item = Value>) -> BTreeSet<String> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref")
                    && let Some(name) = r.strip_prefix("#/components/schemas/")
                {
                    out.push(name.to_owned());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo = Vec::new();
    for root in roots {
        refs(&root, &mut todo);
    }
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            refs(&doc["components"]["schemas"][&name], &mut todo);
        }
    }
    seen
}

fn is_nullable(schema: &RefOr<Schema>) -> bool {
    match schema {
        RefOr::T(Schema::Object(o)) => matches!(&o.schema_type, SchemaType::Array(t) if t.contains(&Type::Null)),
        RefOr::T(Schema::OneOf(o)) => o
            .items
            .iter()
            .any(|i| matches!(i, RefOr::T(Schema::Object(n)) if n.schema_type == SchemaType::Type(Type::Null))),
        _ => false,
    }
}

/// Serde writes `None` as `null` rather than leaving the field out, so in what the server sends
/// a nullable field is always there: say so, and generated clients need not guess.
fn require_nullable(schema: &mut Schema) {
    match schema {
        Schema::Object(o) => {
            for (name, prop) in &mut o.properties {
                if is_nullable(prop) && !o.required.contains(name) {
                    o.required.push(name.clone());
                }
                if let RefOr::T(inner) = prop {
                    require_nullable(inner);
                }
            }
        }
        Schema::Array(a) => {
            if let utoipa::openapi::schema::ArrayItems::RefOrSchema(items) = &mut a.items
                && let RefOr::T(inner) = items.as_mut()
            {
                require_nullable(inner);
            }
        }
        _ => {}
    }
}

/// Marks the always-written nullable fields of the schemas only responses use as required.
/// Problems are left alone: their extension members are left out when empty.
fn require_response_fields(doc: &mut Doc) {
    let Ok(value) = serde_json::to_value(&*doc) else { return };
    let mut requests = Vec::new();
    let mut responses = Vec::new();
    for item in value["paths"].as_object().into_iter().flat_map(|p| p.values()) {
        for op in item.as_object().into_iter().flat_map(|o| o.values()) {
            requests.push(op["requestBody"].clone());
            requests.push(op["parameters"].clone());
            responses.push(op["responses"].clone());
        }
    }
    let in_requests = reachable(&value, requests);
    let response_only: Vec<String> = reachable(&value, responses)
        .difference(&in_requests)
        .filter(|name| *name != "Problem")
        .cloned()
        .collect();
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for name in response_only {
        if let Some(RefOr::T(schema)) = components.schemas.get_mut(&name) {
            require_nullable(schema);
        }
    }
}

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
        // Only the Connectware-style profile names it: its documented calls use `curl -u`.
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("Any user name; the password is a Svalbard token"))
                    .build(),
            ),
        );
        components
            .responses
            .insert("Problem".into(), problem_response("A problem (RFC 9457)"));
        doc.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                refine_parameters(op);
                add_problems(op);
                add_headers(op);
                add_example(op);
            }
        }
        require_response_fields(doc);
        if let Some(components) = doc.components.as_mut() {
            // No operation accepts a physical backup yet and none exists: the value is added to
            // the document (an allowed change) when the server takes it.
            if let Some(RefOr::T(Schema::Object(m))) = components.schemas.get_mut("Mechanism")
                && let Some(values) = &mut m.enum_values
            {
                values.retain(|v| v != "physical");
            }
            for schema in components.schemas.values_mut() {
                if let RefOr::T(schema) = schema {
                    constrain_labels(schema);
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
