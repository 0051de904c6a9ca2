//! The Guidewire-style profile: the native backup routes under the document's words (a project
//! is a star system), with the fields of its example response.

use actix_web::{HttpResponse, delete, get, post, web};
use serde::{Deserialize, Serialize};
use svalbard_core::auth::Role;
use svalbard_core::backup::Backup;
use svalbard_core::ids::{BackupId, PlanetId, ProjectId, TenantId};
use svalbard_core::page::Page;
use svalbard_core::repo::backups;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{ListQuery, OptionalJson};
use crate::idempotency::{IdempotencyKey, Reply};
use crate::routes::backups::{CreateBackup, backup_path, new_backup, start_backup, status_filter};
use crate::routes::{IdempotencyHeader, Paging, StatusFilter, location};
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(guidewire_create_backup)
        .service(guidewire_list_planet_backups)
        .service(guidewire_list_starsystem_backups)
        .service(guidewire_get_backup)
        .service(guidewire_delete_backup);
}

/// Path of a star system (a project).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct StarSystemPath {
    /// The tenant.
    #[serde(rename = "tenantId")]
    #[param(rename = "tenantId")]
    pub tenant: TenantId,
    /// The star system: a project.
    #[serde(rename = "projectId")]
    #[param(rename = "projectId")]
    pub project: ProjectId,
}

/// Path of a planet of a star system.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct StarSystemPlanetPath {
    /// The tenant.
    #[serde(rename = "tenantId")]
    #[param(rename = "tenantId")]
    pub tenant: TenantId,
    /// The star system: a project.
    #[serde(rename = "projectId")]
    #[param(rename = "projectId")]
    pub project: ProjectId,
    /// The planet.
    #[serde(rename = "planetId")]
    #[param(rename = "planetId")]
    pub planet: PlanetId,
}

/// Path of a backup of a star system.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct StarSystemBackupPath {
    /// The tenant.
    #[serde(rename = "tenantId")]
    #[param(rename = "tenantId")]
    pub tenant: TenantId,
    /// The star system: a project.
    #[serde(rename = "projectId")]
    #[param(rename = "projectId")]
    pub project: ProjectId,
    /// The backup.
    #[serde(rename = "backupId")]
    #[param(rename = "backupId")]
    pub backup: BackupId,
}

/// Whether a backup is temporary, as the document's `type` says it.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum BackupType {
    /// Expires after a day unless a retention was given.
    #[serde(rename = "temporary")]
    Temporary,
    /// Kept for the retention of its planet class (or the one given).
    #[serde(rename = "standard")]
    Standard,
}

/// A backup as the Guidewire document shows it: the native backup and its `type`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GuidewireBackup {
    /// `temporary` or `standard`.
    #[serde(rename = "type")]
    pub kind: BackupType,
    #[serde(flatten)]
    pub backup: Backup,
}

impl From<Backup> for GuidewireBackup {
    fn from(backup: Backup) -> Self {
        Self {
            kind: if backup.temporary {
                BackupType::Temporary
            } else {
                BackupType::Standard
            },
            backup,
        }
    }
}

/// Takes a backup of the planet now (operator), as `POST …/planets/{planetId}/backups` does.
#[utoipa::path(
    tag = "guidewire",
    request_body(content = Option<CreateBackup>, description = "All fields optional; the body may be empty"),
    params(StarSystemPlanetPath, IdempotencyHeader),
    responses(
        (status = 201, description = "The scheduled backup", body = GuidewireBackup, headers(("Location" = String))),
        (status = 409, description = "A backup of this planet is already in progress, or a tenant limit is reached", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant's limit of concurrent jobs is reached; `limit` names it", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/tenants/{tenantId}/starsystems/{projectId}/planets/{planetId}/backups")]
async fn guidewire_create_backup(
    state: State,
    auth: Auth,
    path: web::Path<StarSystemPlanetPath>,
    idem: IdempotencyKey,
    OptionalJson(body): OptionalJson<CreateBackup>,
) -> ApiResult<HttpResponse> {
    let StarSystemPlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let tenant = auth.tenant_with(tenant, Role::Operator)?;
    let new = new_backup(&state, &body)?;
    idem.run(&state, &auth, &body, || async {
        let b = start_backup(&state, tenant, project, planet, new).await?;
        Ok(Reply::created(
            location(&state, &backup_path(tenant, project, b.id)),
            GuidewireBackup::from(b),
        ))
    })
    .await
}

/// Lists a planet's backups, newest first.
#[utoipa::path(
    tag = "guidewire",
    params(StarSystemPlanetPath, StatusFilter, Paging),
    responses((status = 200, description = "A page of backups", body = Page<GuidewireBackup>)),
)]
#[get("/tenants/{tenantId}/starsystems/{projectId}/planets/{planetId}/backups")]
async fn guidewire_list_planet_backups(
    state: State,
    auth: Auth,
    path: web::Path<StarSystemPlanetPath>,
    q: ListQuery,
) -> ApiResult<HttpResponse> {
    let StarSystemPlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    let status = status_filter(&q)?;
    let page = backups::list_for_planet(&state.pool, tenant, project, planet, status, q.page).await?;
    Ok(HttpResponse::Ok().json(page.map(GuidewireBackup::from)))
}

/// Lists the backups of every planet of a star system, newest first (the document's singular
/// `backup` path).
#[utoipa::path(
    tag = "guidewire",
    params(StarSystemPath, StatusFilter, Paging),
    responses((status = 200, description = "A page of backups", body = Page<GuidewireBackup>)),
)]
#[get("/tenants/{tenantId}/starsystems/{projectId}/backup")]
async fn guidewire_list_starsystem_backups(
    state: State,
    auth: Auth,
    path: web::Path<StarSystemPath>,
    q: ListQuery,
) -> ApiResult<HttpResponse> {
    let StarSystemPath { tenant, project } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    let status = status_filter(&q)?;
    let page = backups::list_for_project(&state.pool, tenant, project, status, q.page).await?;
    Ok(HttpResponse::Ok().json(page.map(GuidewireBackup::from)))
}

/// Reads a backup; it is ready when `status` is `succeeded` (`displayStatus` `ready`).
#[utoipa::path(
    tag = "guidewire",
    params(StarSystemBackupPath),
    responses((status = 200, description = "The backup", body = GuidewireBackup)),
)]
#[get("/tenants/{tenantId}/starsystems/{projectId}/backups/{backupId}")]
async fn guidewire_get_backup(
    state: State,
    auth: Auth,
    path: web::Path<StarSystemBackupPath>,
) -> ApiResult<HttpResponse> {
    let StarSystemBackupPath {
        tenant,
        project,
        backup,
    } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    let b = backups::get(&state.pool, tenant, project, backup).await?;
    Ok(HttpResponse::Ok().json(GuidewireBackup::from(b)))
}

/// Deletes a backup (admin), as the native DELETE does, but answering 200 as the document says.
#[utoipa::path(
    tag = "guidewire",
    params(StarSystemBackupPath),
    responses(
        (status = 200, description = "Deletion under way (or done)", body = GuidewireBackup),
        (status = 409, description = "A restore is reading this backup's archive", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/tenants/{tenantId}/starsystems/{projectId}/backups/{backupId}")]
async fn guidewire_delete_backup(
    state: State,
    auth: Auth,
    path: web::Path<StarSystemBackupPath>,
) -> ApiResult<HttpResponse> {
    let StarSystemBackupPath {
        tenant,
        project,
        backup,
    } = path.into_inner();
    let (tenant, audit) = auth
        .authorize(
            &state.pool,
            tenant,
            Role::Admin,
            "backup.delete",
            ("backup", Some(backup.0)),
        )
        .await?;
    let settle = std::time::Duration::from_secs(state.config.worker.lease_secs + state.config.worker.heartbeat_secs);
    let b = backups::request_delete(&state.pool, tenant, project, backup, settle, &audit).await?;
    Ok(HttpResponse::Ok().json(GuidewireBackup::from(b)))
}
