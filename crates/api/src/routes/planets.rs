use std::collections::BTreeMap;

use actix_web::{HttpResponse, delete, get, patch, post, web};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use svalbard_core::FieldError;
use svalbard_core::auth::Role;
use svalbard_core::domain::{Engine, Name, Planet, PlanetClass, SslMode, check, validate_labels};
use svalbard_core::ids::{PlanetId, ProjectId, TenantId};
use svalbard_core::page::Page;
use svalbard_core::repo::planets::{self, Connection, NewPlanet, PlanetPatch};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::{IdempotencyHeader, Paging, PlanetPath, ProjectPath, location};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, ListQuery};
use crate::idempotency::{IdempotencyKey, Reply};
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(create_planet)
        .service(list_planets)
        .service(get_planet)
        .service(update_planet)
        .service(delete_planet);
}

/// How Svalbard reaches the database.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionInput {
    #[schema(
        example = "db.internal",
        min_length = 1,
        max_length = 253,
        pattern = "^[A-Za-z0-9._:\\[\\]/-]+$"
    )]
    pub host: String,
    /// Defaults to the engine's port (5432, 3306).
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    #[schema(
        example = "app",
        min_length = 1,
        max_length = 63,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub database: String,
    #[schema(
        example = "backup",
        min_length = 1,
        max_length = 63,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub user: String,
    /// Write-only: stored encrypted, never returned. Only this host, port, user and database
    /// ever receive it: changing any of them without a new password removes it.
    #[serde(skip_serializing_if = "never_serialized")]
    #[schema(write_only, min_length = 1, max_length = 1024, pattern = "^[^\\x00]*$")]
    pub password: Option<String>,
    /// Defaults to `prefer`.
    pub sslmode: Option<SslMode>,
}

/// A new planet.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePlanet {
    /// Unique within the project: lowercase letters, digits and `-`, 1–63 characters.
    #[schema(example = "orders", pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    pub engine: Engine,
    /// Defaults to `dev`.
    pub planet_class: Option<PlanetClass>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub connection: ConnectionInput,
}

/// Keeps a secret out of every serialisation (idempotency fingerprints included) as
/// `skip_serializing` would, while the OpenAPI document still lists the field.
fn never_serialized<T>(_: &T) -> bool {
    true
}

fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Changes to connection settings; absent fields stay as they are. Changing `host`, `port`,
/// `user` or `database` without a new `password` removes the stored password, so a password is
/// never sent to a server or account it was not given for.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPatch {
    #[schema(min_length = 1, max_length = 253, pattern = "^[A-Za-z0-9._:\\[\\]/-]+$")]
    pub host: Option<String>,
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    #[schema(min_length = 1, max_length = 63, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub database: Option<String>,
    #[schema(min_length = 1, max_length = 63, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub user: Option<String>,
    /// A new password, or `null` to remove it. Write-only.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "never_serialized"
    )]
    #[schema(value_type = Option<String>, write_only, min_length = 1, max_length = 1024, pattern = "^[^\\x00]*$")]
    pub password: Option<Option<String>>,
    pub sslmode: Option<SslMode>,
}

/// Changes to a planet (JSON merge patch); the engine cannot change.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdatePlanet {
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: Option<String>,
    pub planet_class: Option<PlanetClass>,
    /// Replaces all labels.
    pub labels: Option<BTreeMap<String, String>>,
    pub connection: Option<ConnectionPatch>,
}

fn host(errors: &mut Vec<FieldError>, field: &str, v: &str) {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']' | b'/'));
    if !ok {
        errors.push(FieldError::new(
            field,
            "must be a host name or IP address (1 to 253 characters)",
        ));
    }
}

fn ident(errors: &mut Vec<FieldError>, field: &str, v: &str) {
    if v.is_empty() || v.len() > 63 || v.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            "must be 1 to 63 characters without control characters",
        ));
    }
}

fn port(errors: &mut Vec<FieldError>, field: &str, v: Option<u16>) {
    if v == Some(0) {
        errors.push(FieldError::new(field, "must be between 1 and 65535"));
    }
}

fn password(errors: &mut Vec<FieldError>, field: &str, v: Option<&str>) -> Option<SecretString> {
    let v = v?;
    if v.is_empty() || v.len() > 1024 || v.contains('\0') {
        errors.push(FieldError::new(field, "must be 1 to 1024 characters without NUL"));
    }
    Some(SecretString::from(v.to_owned()))
}

/// The host must pass the target policy (the tenant's, else the platform's): a refusal is a 400
/// naming `connection.host` and the rule.
async fn check_target(state: &State, tenant: TenantId, host: &str, port: u16, database: &str) -> ApiResult<()> {
    let lists = svalbard_core::repo::tenants::target_policy(&state.pool, tenant).await?;
    state
        .targets
        .check(lists.as_ref(), host, port, Some(database))
        .await
        .map(|_| ())
        .map_err(|refusal| ApiError::invalid("connection.host", refusal.0))
}

fn planet_path(t: TenantId, p: ProjectId, id: PlanetId) -> String {
    format!("/tenants/{t}/projects/{p}/planets/{id}")
}

/// Registers a database to back up (admin).
#[utoipa::path(
    tag = "planets",
    request_body = CreatePlanet,
    params(
        ProjectPath,
        IdempotencyHeader,
    ),
    responses(
        (status = 201, description = "The planet", body = Planet, headers(("Location" = String))),
        (status = 409, description = "A planet with this name exists", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/tenants/{tenantId}/projects/{projectId}/planets")]
async fn create_planet(
    state: State,
    auth: Auth,
    path: web::Path<ProjectPath>,
    idem: IdempotencyKey,
    Json(body): Json<CreatePlanet>,
) -> ApiResult<HttpResponse> {
    let ProjectPath { tenant, project } = path.into_inner();
    let (tenant, audit) = auth
        .authorize(&state.pool, tenant, Role::Admin, "planet.create", ("planet", None))
        .await?;
    let mut errors = Vec::new();
    let name = Name::parse("name", &body.name).map_err(|e| errors.push(e)).ok();
    errors.extend(validate_labels("labels", &body.labels));
    let c = &body.connection;
    host(&mut errors, "connection.host", &c.host);
    ident(&mut errors, "connection.database", &c.database);
    ident(&mut errors, "connection.user", &c.user);
    port(&mut errors, "connection.port", c.port);
    let secret = password(&mut errors, "connection.password", c.password.as_deref());
    check(errors)?;
    let new = NewPlanet {
        name: name.ok_or_else(|| ApiError::invalid("name", "is invalid"))?,
        engine: body.engine,
        planet_class: body.planet_class.unwrap_or(PlanetClass::Dev),
        labels: body.labels.clone(),
        connection: Connection {
            host: c.host.clone(),
            port: c.port.unwrap_or_else(|| body.engine.default_port()),
            database: c.database.clone(),
            user: c.user.clone(),
            sslmode: c.sslmode.unwrap_or(SslMode::Prefer),
            password: secret,
            hostaddr: None,
        },
    };
    check_target(
        &state,
        tenant,
        &new.connection.host,
        new.connection.port,
        &new.connection.database,
    )
    .await?;
    // The fingerprint must cover the password too (it is keyed, and only the MAC is stored).
    let fingerprint = (&body, c.password.as_deref());
    idem.run(&state, &auth, &fingerprint, || async {
        let p = planets::create(&state.pool, &state.keys, tenant, project, new, &audit).await?;
        Ok(Reply::created(location(&state, &planet_path(tenant, project, p.id)), p))
    })
    .await
}

/// Lists the project's planets, newest first.
#[utoipa::path(
    tag = "planets",
    params(
        ProjectPath,
        Paging,
    ),
    responses((status = 200, description = "A page of planets", body = Page<Planet>)),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/planets")]
async fn list_planets(state: State, auth: Auth, path: web::Path<ProjectPath>, q: ListQuery) -> ApiResult<HttpResponse> {
    let ProjectPath { tenant, project } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    Ok(HttpResponse::Ok().json(planets::list(&state.pool, tenant, project, q.page).await?))
}

/// Reads a planet (the password is never returned).
#[utoipa::path(
    tag = "planets",
    params(
        PlanetPath,
    ),
    responses((status = 200, description = "The planet", body = Planet)),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}")]
async fn get_planet(state: State, auth: Auth, path: web::Path<PlanetPath>) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    Ok(HttpResponse::Ok().json(planets::get(&state.pool, tenant, project, planet).await?))
}

/// Changes a planet (admin). Absent fields stay; `connection.password: null` removes the password,
/// and so does a change of host, port, user or database that comes without a new password.
#[utoipa::path(
    tag = "planets",
    request_body(content = UpdatePlanet, content_type = "application/merge-patch+json"),
    params(
        PlanetPath,
    ),
    responses(
        (status = 200, description = "The planet", body = Planet),
        (status = 409, description = "A planet with this name exists", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[patch("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}")]
async fn update_planet(
    state: State,
    auth: Auth,
    path: web::Path<PlanetPath>,
    Json(body): Json<UpdatePlanet>,
) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let (tenant, audit) = auth
        .authorize(
            &state.pool,
            tenant,
            Role::Admin,
            "planet.update",
            ("planet", Some(planet.0)),
        )
        .await?;
    let mut errors = Vec::new();
    let name = body
        .name
        .as_deref()
        .and_then(|n| Name::parse("name", n).map_err(|e| errors.push(e)).ok());
    if let Some(labels) = &body.labels {
        errors.extend(validate_labels("labels", labels));
    }
    let c = body.connection.unwrap_or_default();
    if let Some(h) = &c.host {
        host(&mut errors, "connection.host", h);
    }
    if let Some(d) = &c.database {
        ident(&mut errors, "connection.database", d);
    }
    if let Some(u) = &c.user {
        ident(&mut errors, "connection.user", u);
    }
    port(&mut errors, "connection.port", c.port);
    let new_password = c
        .password
        .as_ref()
        .map(|p| password(&mut errors, "connection.password", p.as_deref()));
    check(errors)?;
    if c.host.is_some() || c.port.is_some() || c.database.is_some() {
        let current = planets::get(&state.pool, tenant, project, planet).await?.connection;
        check_target(
            &state,
            tenant,
            c.host.as_deref().unwrap_or(&current.host),
            c.port.unwrap_or(current.port),
            c.database.as_deref().unwrap_or(&current.database),
        )
        .await?;
    }
    let patch = PlanetPatch {
        name,
        planet_class: body.planet_class,
        labels: body.labels,
        host: c.host,
        port: c.port,
        database: c.database,
        user: c.user,
        sslmode: c.sslmode,
        password: new_password,
    };
    Ok(HttpResponse::Ok()
        .json(planets::update(&state.pool, &state.keys, tenant, project, planet, patch, &audit).await?))
}

/// Deletes a planet (admin); refused (409) while it has backups.
#[utoipa::path(
    tag = "planets",
    params(
        PlanetPath,
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "The planet still has backups", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}")]
async fn delete_planet(state: State, auth: Auth, path: web::Path<PlanetPath>) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let (tenant, audit) = auth
        .authorize(
            &state.pool,
            tenant,
            Role::Admin,
            "planet.delete",
            ("planet", Some(planet.0)),
        )
        .await?;
    planets::delete(&state.pool, tenant, project, planet, &audit).await?;
    Ok(HttpResponse::NoContent().finish())
}
