//! A tenant's archive keys: their versions, rotation and export (admin).

use actix_web::{HttpResponse, get, post, web};
use serde::Serialize;
use svalbard_core::auth::Role;
use svalbard_core::envelope::identity_file;
use svalbard_core::ids::TenantId;
use svalbard_core::repo::keys::{self, KeyVersion};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::TenantPath;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_keys).service(rotate_key).service(export_keys);
}

/// The versions of a tenant's archive key, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyList {
    pub tenant_id: TenantId,
    /// Empty until the tenant's first encrypted archive (or first export) makes version 1.
    pub items: Vec<KeyVersion>,
}

/// The outcome of a rotation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedKey {
    /// The version that encrypts from now on.
    pub key: KeyVersion,
    /// Data keys of stored backups wrapped again under it.
    pub rewrapped_backups: u64,
}

/// A tenant's keys with their secrets.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyExport {
    pub tenant_id: TenantId,
    /// Always `age-x25519`: each key is an age X25519 identity.
    #[schema(example = "age-x25519")]
    pub format: &'static str,
    /// An age identity file holding every version, newest first: saved as `tenant.key`, it
    /// opens any archive of the tenant with `age -d -i tenant.key`.
    #[schema(example = "# svalbard tenant 0190..., key version 1\n# public key: age1...\nAGE-SECRET-KEY-1...\n")]
    pub identity_file: String,
    pub keys: Vec<ExportedKey>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportedKey {
    #[serde(flatten)]
    pub key: KeyVersion,
    /// The secret key, `AGE-SECRET-KEY-1...`.
    pub identity: String,
}

/// Lists the versions of the tenant's archive key (admin); never their secrets.
#[utoipa::path(
    tag = "keys",
    params(TenantPath),
    responses((status = 200, description = "The key versions", body = KeyList)),
)]
#[get("/tenants/{tenantId}/keys")]
async fn list_keys(state: State, auth: Auth, path: web::Path<TenantPath>) -> ApiResult<HttpResponse> {
    let tenant = auth.tenant_with(path.into_inner().tenant, Role::Admin)?;
    svalbard_core::repo::tenants::get(&state.pool, tenant).await?;
    Ok(HttpResponse::Ok().json(KeyList {
        tenant_id: tenant,
        items: keys::list(&state.pool, tenant).await?,
    }))
}

/// Rotates the tenant's archive key (admin, audited).
///
/// A new version encrypts every archive from now on, and the data key of every stored backup
/// is wrapped again under it in the same transaction. Archives are not rewritten: each still
/// names in its own header the version it was written under, which stays (retired) so that
/// exported keys keep opening it.
#[utoipa::path(
    tag = "keys",
    params(TenantPath),
    responses(
        (status = 200, description = "The new version", body = RotatedKey),
        (status = 409, description = "Another change of the tenant's key happened at the same time; rotate again", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/tenants/{tenantId}/keys/rotate")]
async fn rotate_key(state: State, auth: Auth, path: web::Path<TenantPath>) -> ApiResult<HttpResponse> {
    let (tenant, audit) = auth
        .authorize(
            &state.pool,
            path.into_inner().tenant,
            Role::Admin,
            "key.rotate",
            ("tenant_key", None),
        )
        .await?;
    let (key, rewrapped_backups) = keys::rotate(&state.pool, &state.keys, tenant, &audit).await?;
    tracing::info!(%tenant, version = key.version, rewrapped_backups, "tenant key rotated");
    Ok(HttpResponse::Ok().json(RotatedKey { key, rewrapped_backups }))
}

/// Exports the tenant's archive keys with their secrets (admin, audited).
///
/// Whoever holds the export can read every archive of the tenant, wherever a copy of it is:
/// keep it as you keep the data. A downloaded archive then restores with standard tools alone,
/// e.g. `age -d -i tenant.key backup.svb.zst.age | zstd -d | pg_restore -d DATABASE`. The answer
/// is never cached.
#[utoipa::path(
    tag = "keys",
    params(TenantPath),
    responses((status = 200, description = "The keys", body = KeyExport, headers(("Cache-Control" = String, description = "`no-store`")))),
)]
#[get("/tenants/{tenantId}/keys/export")]
async fn export_keys(state: State, auth: Auth, path: web::Path<TenantPath>) -> ApiResult<HttpResponse> {
    use secrecy::ExposeSecret as _;
    let (tenant, audit) = auth
        .authorize(
            &state.pool,
            path.into_inner().tenant,
            Role::Admin,
            "key.export",
            ("tenant_key", None),
        )
        .await?;
    let exported = keys::export(&state.pool, &state.keys, tenant, &audit).await?;
    let secrets: Vec<_> = exported.iter().map(|(_, k)| k.clone()).collect();
    tracing::warn!(%tenant, versions = exported.len(), actor = %audit.actor, "tenant keys exported");
    let body = KeyExport {
        tenant_id: tenant,
        format: "age-x25519",
        identity_file: identity_file(tenant.0, &secrets).expose_secret().to_owned(),
        keys: exported
            .into_iter()
            .map(|(key, secret)| ExportedKey {
                key,
                identity: secret.identity().expose_secret().to_owned(),
            })
            .collect(),
    };
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(body))
}
