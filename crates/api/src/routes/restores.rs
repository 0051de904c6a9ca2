use actix_web::{HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use svalbard_core::FieldError;
use svalbard_core::auth::Role;
use svalbard_core::backup::BackupStatus;
use svalbard_core::domain::check;
use svalbard_core::ids::PlanetId;
use svalbard_core::page::Page;
use svalbard_core::repo::backups;
use svalbard_core::repo::restores::{self, NewRestore};
use svalbard_core::restore::Restore;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::{BackupPath, Paging, PlanetPath, RestorePath, location};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ListQuery, OptionalJson};
use crate::idempotency::{IdempotencyKey, Reply};
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(restore_backup)
        .service(list_planet_restores)
        .service(get_restore);
}

/// Options of a restore.
#[derive(Debug, Default, Clone, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreOptions {
    /// Restore into a server of an older major version than the source (may fail).
    #[serde(default)]
    pub force: bool,
}

/// A restore of a stored backup; every field is optional.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRestore {
    /// A planet of the same tenant and engine; defaults to the backup's planet.
    pub target_planet_id: Option<PlanetId>,
    /// Database to restore into; defaults to the target planet's database.
    pub target_database: Option<String>,
    /// Drop and recreate the target database first (admin). Without it the target must be
    /// empty or absent (then it is created).
    #[serde(default)]
    pub replace: bool,
    pub options: Option<RestoreOptions>,
}

fn restore_path(p: &RestorePath) -> String {
    format!("/tenants/{}/projects/{}/restores/{}", p.tenant, p.project, p.restore)
}

/// Restores a succeeded backup into a planet (operator; `replace` needs admin). Answers 202 with
/// the restore `scheduled`; the archive is verified before the target is touched.
#[utoipa::path(
    tag = "restores",
    request_body(content = Option<CreateRestore>, description = "All fields optional; the body may be empty"),
    params(BackupPath, ("Idempotency-Key" = Option<String>, Header, description = "Makes the create safe to retry")),
    responses(
        (status = 202, description = "The scheduled restore", body = Restore, headers(("Location" = String))),
        (status = 409, description = "The backup is not restorable, or the target is busy", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/tenants/{tenantId}/projects/{projectId}/backups/{backupId}/restores")]
async fn restore_backup(
    state: State,
    auth: Auth,
    path: web::Path<BackupPath>,
    idem: IdempotencyKey,
    OptionalJson(body): OptionalJson<CreateRestore>,
) -> ApiResult<HttpResponse> {
    let BackupPath {
        tenant,
        project,
        backup,
    } = path.into_inner();
    let tenant = auth.tenant_with(tenant, Role::Operator)?;
    if body.replace {
        auth.require(Role::Admin).map_err(|_| {
            ApiError::Forbidden("`replace: true` drops the target's objects and needs the `admin` role".into())
        })?;
    }
    let mut errors = Vec::new();
    if let Some(db) = &body.target_database
        && (db.is_empty() || db.len() > 63 || db.chars().any(char::is_control))
    {
        errors.push(FieldError::new(
            "targetDatabase",
            "must be 1 to 63 characters without control characters",
        ));
    }
    check(errors)?;
    let source = backups::row(&state.pool, tenant, project, backup).await?;
    if source.status()? != BackupStatus::Succeeded {
        return Err(ApiError::Conflict(format!(
            "backup {backup} is {}; only a succeeded backup can be restored",
            source.status
        )));
    }
    let new = NewRestore {
        target_planet: body.target_planet_id.unwrap_or(source.planet_id),
        target_database: body.target_database.clone(),
        replace: body.replace,
        force: body.options.as_ref().is_some_and(|o| o.force),
        source_backup: Some(backup),
        upload: None,
        max_attempts: state.config.worker.max_attempts,
    };
    idem.run(&state, &auth, &body, || async {
        let r = restores::create(&state.pool, tenant, project, new).await?;
        let path = RestorePath {
            tenant,
            project: r.project_id,
            restore: r.id,
        };
        Ok(Reply::accepted(location(&state, &restore_path(&path)), r))
    })
    .await
}

/// Lists the restores into a planet, newest first.
#[utoipa::path(
    tag = "restores",
    params(PlanetPath, Paging),
    responses((status = 200, description = "A page of restores", body = Page<Restore>)),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/restores")]
async fn list_planet_restores(
    state: State,
    auth: Auth,
    path: web::Path<PlanetPath>,
    q: ListQuery,
) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    Ok(HttpResponse::Ok().json(restores::list_for_planet(&state.pool, tenant, project, planet, q.page).await?))
}

/// Reads a restore: status, source, target, progress and what the target held afterwards.
#[utoipa::path(
    tag = "restores",
    params(RestorePath),
    responses((status = 200, description = "The restore", body = Restore)),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/restores/{restoreId}")]
async fn get_restore(state: State, auth: Auth, path: web::Path<RestorePath>) -> ApiResult<HttpResponse> {
    let RestorePath {
        tenant,
        project,
        restore,
    } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    Ok(HttpResponse::Ok().json(restores::get(&state.pool, tenant, project, restore).await?))
}
