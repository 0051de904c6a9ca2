//! The DBaaS-style profile: backups of a database by its id. A database is a planet of the
//! tenant, named by its planet id; the base URL of a tenant is `/profiles/dbaas/tenants/{tenantId}`
//! and below it the document's paths (`/api/databases/{db}/backups…`) work as written.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use svalbard_core::auth::Role;
use svalbard_core::backup::{Backup, BackupStatus, Method};
use svalbard_core::domain::Engine;
use svalbard_core::ids::{BackupId, PlanetId, TenantId};
use svalbard_core::page::PageRequest;
use svalbard_core::repo::{backups, planets};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::routes::backups::{CreateBackup, backup_path, download_url, new_backup, start_backup};
use crate::routes::location;
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(dbaas_list_backups)
        .service(dbaas_create_backup)
        .service(dbaas_archive);
}

/// Path of a database.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DatabasePath {
    /// The tenant.
    #[serde(rename = "tenantId")]
    #[param(rename = "tenantId")]
    pub tenant: TenantId,
    /// The database: a planet id of the tenant.
    pub db: PlanetId,
}

/// Path of a backup of a database.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DatabaseBackupPath {
    /// The tenant.
    #[serde(rename = "tenantId")]
    #[param(rename = "tenantId")]
    pub tenant: TenantId,
    /// The database: a planet id of the tenant.
    pub db: PlanetId,
    /// The backup.
    pub backup: BackupId,
}

/// The document's backup states.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum DbaasStatus {
    /// Queued, not started.
    #[serde(rename = "scheduled")]
    Scheduled,
    /// Being taken.
    #[serde(rename = "pending")]
    Pending,
    /// Stored; the archive can be downloaded.
    #[serde(rename = "done")]
    Done,
    /// Failed, interrupted, or its archive is missing from storage.
    #[serde(rename = "error")]
    Error,
}

/// A backup with the document's attributes.
#[derive(Debug, Serialize, ToSchema)]
pub struct DbaasBackup {
    pub id: BackupId,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    /// `YYYYMMDDhhmmss_<planet>` (UTC).
    pub name: String,
    /// Archive size in bytes, once stored.
    pub size: Option<i64>,
    pub status: DbaasStatus,
    pub database_id: PlanetId,
    /// The database type.
    #[serde(rename = "type")]
    pub kind: Engine,
    pub method: Method,
}

impl DbaasBackup {
    /// The backup in the document's terms; `None` for one that is gone (expired or deleted).
    fn from_backup(b: Backup) -> Option<Self> {
        let status = match b.status {
            BackupStatus::Scheduled => DbaasStatus::Scheduled,
            BackupStatus::Running => DbaasStatus::Pending,
            BackupStatus::Succeeded => DbaasStatus::Done,
            BackupStatus::Failed | BackupStatus::Incomplete | BackupStatus::Missing => DbaasStatus::Error,
            BackupStatus::Expired | BackupStatus::Deleting | BackupStatus::Deleted => return None,
        };
        Some(Self {
            id: b.id,
            created_at: b.created_at,
            started_at: b.started_at,
            name: b.name,
            size: b.size_bytes,
            status,
            database_id: b.planet_id,
            kind: b.engine,
            method: b.method,
        })
    }
}

/// The list envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct DbaasBackupList {
    /// Newest first; at most 200. Expired and deleted backups are left out.
    pub database_backups: Vec<DbaasBackup>,
}

/// The create envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct DbaasCreated {
    pub database_backup: DbaasBackup,
}

/// The archive link envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct DbaasArchive {
    /// Pre-signed GET URL of the archive (age-encrypted for the tenant's key unless stored in the
    /// clear, then a zstd stream); short-lived.
    pub download_url: String,
}

/// Lists the backups of a database, newest first (at most 200).
#[utoipa::path(
    tag = "dbaas",
    params(DatabasePath),
    responses((status = 200, description = "The backups", body = DbaasBackupList)),
)]
#[get("/tenants/{tenantId}/api/databases/{db}/backups")]
async fn dbaas_list_backups(state: State, auth: Auth, path: web::Path<DatabasePath>) -> ApiResult<HttpResponse> {
    let DatabasePath { tenant, db } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    let planet = planets::find(&state.pool, tenant, db).await?;
    let page = PageRequest::parse(Some(200), None).map_err(ApiError::Validation)?;
    let items = backups::list_for_planet(&state.pool, tenant, planet.project_id, db, None, page)
        .await?
        .items;
    Ok(HttpResponse::Ok().json(DbaasBackupList {
        database_backups: items.into_iter().filter_map(DbaasBackup::from_backup).collect(),
    }))
}

/// Schedules a backup of the database (operator). Answers 201 at once with it `scheduled`; the
/// backup is taken asynchronously. No body is read.
#[utoipa::path(
    tag = "dbaas",
    params(DatabasePath),
    responses(
        (status = 201, description = "The scheduled backup", body = DbaasCreated, headers(("Location" = String))),
        (status = 409, description = "A backup or restore of this database is in progress, or a tenant limit is reached", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant's limit of concurrent jobs is reached; `limit` names it", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/tenants/{tenantId}/api/databases/{db}/backups")]
async fn dbaas_create_backup(state: State, auth: Auth, path: web::Path<DatabasePath>) -> ApiResult<HttpResponse> {
    let DatabasePath { tenant, db } = path.into_inner();
    let tenant = auth.tenant_with(tenant, Role::Operator)?;
    let planet = planets::find(&state.pool, tenant, db).await?;
    let project = planet.project_id;
    let new = new_backup(&state, &CreateBackup::default())?;
    let b = start_backup(&state, tenant, project, db, new).await?;
    let at = location(&state, &backup_path(tenant, project, b.id));
    let backup = DbaasBackup::from_backup(b)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a new backup is not scheduled")))?;
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::LOCATION, at))
        .json(DbaasCreated {
            database_backup: backup,
        }))
}

/// A pre-signed URL to download a backup (operator; every link is audited).
#[utoipa::path(
    tag = "dbaas",
    params(DatabaseBackupPath),
    responses(
        (status = 200, description = "The link", body = DbaasArchive),
        (status = 409, description = "The backup has no archive (not `done`)", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/tenants/{tenantId}/api/databases/{db}/backups/{backup}/archive")]
async fn dbaas_archive(state: State, auth: Auth, path: web::Path<DatabaseBackupPath>) -> ApiResult<HttpResponse> {
    let DatabaseBackupPath { tenant, db, backup } = path.into_inner();
    let (tenant, audit) = auth
        .authorize(
            &state.pool,
            tenant,
            Role::Operator,
            "backup.download",
            ("backup", Some(backup.0)),
        )
        .await?;
    let planet = planets::find(&state.pool, tenant, db).await?;
    // The backup must be one of this database's.
    let row = backups::row(&state.pool, tenant, planet.project_id, backup).await?;
    if row.planet_id != db {
        return Err(ApiError::NotFound("backup"));
    }
    let (url, _) = download_url(&state, tenant, planet.project_id, backup, audit).await?;
    Ok(HttpResponse::Ok().json(DbaasArchive { download_url: url }))
}
