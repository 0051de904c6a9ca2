//! The Camunda-style profile: the backup management API of one planet, with backups named by a
//! number the client chooses. The base URL of a planet is
//! `/profiles/camunda/tenants/{tenantId}/projects/{projectId}/planets/{planetId}`; below it the
//! document's paths (`/actuator/backupHistory…`) work as written. A backup's `details` are its
//! parts (dump, upload, manifest), one snapshot each.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use svalbard_core::auth::Role;
use svalbard_core::backup::{Backup, BackupStatus, Part};
use svalbard_core::ids::{PlanetId, ProjectId, TenantId};
use svalbard_core::repo::{backup_numbers, backups};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::routes::PlanetPath;
use crate::routes::backups::{CreateBackup, new_backup};
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(camunda_create_backup)
        .service(camunda_list_backups)
        .service(camunda_get_backup)
        .service(camunda_delete_backup);
}

/// Path of a numbered backup of a planet.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NumberedBackupPath {
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
    /// The number the backup was created with.
    #[serde(rename = "backupId")]
    #[param(rename = "backupId", value_type = i64, minimum = 0)]
    pub backup_id: String,
}

fn number(raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| ApiError::invalid("backupId", "must be a whole number, 0 or more"))
}

/// A backup request: the client's number for it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TakeBackup {
    /// 0 or more; unique among this planet's existing backups.
    #[schema(minimum = 0)]
    pub backup_id: i64,
}

/// The snapshots the backup will consist of.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledSnapshots {
    pub scheduled_snapshots: Vec<String>,
}

/// The document's backup states.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum CamundaState {
    /// The backup can be restored.
    #[serde(rename = "COMPLETED")]
    Completed,
    /// Scheduled or running.
    #[serde(rename = "IN_PROGRESS")]
    InProgress,
    /// It could not be taken; `failureReason` says why.
    #[serde(rename = "FAILED")]
    Failed,
    /// Part of the document's vocabulary; a backup this server cannot take ends `FAILED`.
    #[serde(rename = "INCOMPATIBLE")]
    Incompatible,
    /// Interrupted (its attempts ran out), or its archive is missing from storage.
    #[serde(rename = "INCOMPLETE")]
    Incomplete,
}

/// One part of a backup, as a snapshot.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotDetail {
    /// `svalbard_<backupId>_<part>_part_<i>_of_<n>`.
    pub snapshot_name: String,
    /// `IN_PROGRESS`, `SUCCESS` or `FAILED`.
    pub state: String,
    pub start_time: Option<DateTime<Utc>>,
    /// Why the part failed, when it did.
    pub failures: Vec<String>,
}

/// The state of a backup.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupState {
    pub backup_id: i64,
    pub state: CamundaState,
    pub failure_reason: Option<String>,
    /// One entry per part of the backup.
    pub details: Vec<SnapshotDetail>,
}

fn snapshot_names(number: i64, parts: &[Part]) -> Vec<String> {
    let n = parts.len();
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| format!("svalbard_{number}_{}_part_{}_of_{n}", p.name, i + 1))
        .collect()
}

fn state_of(number: i64, b: &Backup) -> BackupState {
    let state = match b.status {
        BackupStatus::Succeeded => CamundaState::Completed,
        BackupStatus::Scheduled | BackupStatus::Running => CamundaState::InProgress,
        BackupStatus::Failed => CamundaState::Failed,
        // Gone backups are not shown under their number; listed here for completeness.
        BackupStatus::Incomplete
        | BackupStatus::Missing
        | BackupStatus::Expired
        | BackupStatus::Deleting
        | BackupStatus::Deleted => CamundaState::Incomplete,
    };
    let names = snapshot_names(number, &b.parts);
    let details = b
        .parts
        .iter()
        .zip(names)
        .map(|(p, snapshot_name)| {
            let failed = p.state == "failed";
            SnapshotDetail {
                snapshot_name,
                state: match p.state.as_str() {
                    "succeeded" => "SUCCESS",
                    "failed" => "FAILED",
                    _ => "IN_PROGRESS",
                }
                .into(),
                start_time: p.start_time,
                failures: if failed {
                    vec![b.error_message.clone().unwrap_or_else(|| "failed".into())]
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    BackupState {
        backup_id: number,
        state,
        failure_reason: match state {
            CamundaState::Completed | CamundaState::InProgress => None,
            _ => b.error_message.clone().or_else(|| Some(b.status.display().into())),
        },
        details,
    }
}

/// Starts a backup named by the client's number (operator). Answers 200 with the snapshots it
/// will consist of; 400 when the number names an existing backup of this planet, 502 when object
/// storage cannot be reached.
#[utoipa::path(
    tag = "camunda",
    request_body(content = TakeBackup),
    params(PlanetPath),
    responses(
        (status = 200, description = "The backup is scheduled", body = ScheduledSnapshots),
        (status = 409, description = "A backup or restore of this planet is in progress, or a tenant limit is reached", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant's limit of concurrent jobs is reached; `limit` names it", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/actuator/backupHistory")]
async fn camunda_create_backup(
    state: State,
    auth: Auth,
    path: web::Path<PlanetPath>,
    Json(body): Json<TakeBackup>,
) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let tenant = auth.tenant_with(tenant, Role::Operator)?;
    if body.backup_id < 0 {
        return Err(ApiError::invalid("backupId", "must be 0 or more"));
    }
    svalbard_core::repo::planets::get(&state.pool, tenant, project, planet).await?;
    // The document answers 502 when the store cannot be reached: asked before anything is kept.
    state.storage.ping().await.map_err(ApiError::BadGateway)?;
    let new = new_backup(&state, &CreateBackup::default())?;
    let storage = &state.storage;
    let b = backup_numbers::create(
        &state.pool,
        tenant,
        project,
        planet,
        body.backup_id,
        |id| storage.backup_prefix(tenant, project, planet, id),
        new,
    )
    .await?;
    Ok(HttpResponse::Ok().json(ScheduledSnapshots {
        scheduled_snapshots: snapshot_names(body.backup_id, &b.parts),
    }))
}

/// Lists the planet's numbered backups that exist, highest number first (at most 1000).
#[utoipa::path(
    tag = "camunda",
    params(PlanetPath),
    responses((status = 200, description = "The backups", body = Vec<BackupState>)),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/actuator/backupHistory")]
async fn camunda_list_backups(state: State, auth: Auth, path: web::Path<PlanetPath>) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    let list = backup_numbers::list(&state.pool, tenant, project, planet).await?;
    let states: Vec<BackupState> = list.iter().map(|(n, b)| state_of(*n, b)).collect();
    Ok(HttpResponse::Ok().json(states))
}

/// The state of a numbered backup; 404 when no backup of this planet has that number.
#[utoipa::path(
    tag = "camunda",
    params(NumberedBackupPath),
    responses((status = 200, description = "The backup's state", body = BackupState)),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/actuator/backupHistory/{backupId}")]
async fn camunda_get_backup(state: State, auth: Auth, path: web::Path<NumberedBackupPath>) -> ApiResult<HttpResponse> {
    let p = path.into_inner();
    let n = number(&p.backup_id)?;
    let tenant = auth.tenant(p.tenant)?;
    let b = backup_numbers::get(&state.pool, tenant, p.project, p.planet, n).await?;
    Ok(HttpResponse::Ok().json(state_of(n, &b)))
}

/// Deletes a numbered backup (admin): its archive is removed asynchronously and the number
/// becomes free. Answers 204.
#[utoipa::path(
    tag = "camunda",
    params(NumberedBackupPath),
    responses(
        (status = 204, description = "Deletion under way"),
        (status = 409, description = "A restore is reading this backup's archive", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/actuator/backupHistory/{backupId}")]
async fn camunda_delete_backup(
    state: State,
    auth: Auth,
    path: web::Path<NumberedBackupPath>,
) -> ApiResult<HttpResponse> {
    let p = path.into_inner();
    let n = number(&p.backup_id)?;
    let (tenant, audit) = auth
        .authorize(&state.pool, p.tenant, Role::Admin, "backup.delete", ("backup", None))
        .await?;
    let b = backup_numbers::get(&state.pool, tenant, p.project, p.planet, n).await?;
    let settle = std::time::Duration::from_secs(state.config.worker.lease_secs + state.config.worker.heartbeat_secs);
    backups::request_delete(&state.pool, tenant, p.project, b.id, settle, &audit).await?;
    Ok(HttpResponse::NoContent().finish())
}
