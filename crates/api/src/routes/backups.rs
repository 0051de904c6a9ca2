use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use svalbard_core::FieldError;
use svalbard_core::auth::Role;
use svalbard_core::backup::{Backup, BackupStatus, Mechanism, Metadata, Method};
use svalbard_core::domain::{PlanetClass, check};
use svalbard_core::ids::{BackupId, ProjectId, TenantId};
use svalbard_core::page::Page;
use svalbard_core::repo::backups::{self, NewBackup};
use svalbard_core::repo::restores;
use svalbard_core::restore::RestoreStatus;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::{BackupPath, IdempotencyHeader, Paging, PlanetPath, ProjectPath, StatusFilter, location, optional_text};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, ListQuery, OptionalJson};
use crate::idempotency::{IdempotencyKey, Reply};
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(create_backup)
        .service(list_planet_backups)
        .service(list_project_backups)
        .service(get_backup)
        .service(update_backup)
        .service(delete_backup)
        .service(archive)
        .service(verify_backup)
        .service(maintenance);
}

/// A backup request; every field is optional.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBackup {
    /// `logical` (the engine's dump tool). `physical` is not supported yet.
    pub mechanism: Option<Mechanism>,
    /// Class to take the backup as; defaults to the planet's. Picks the default retention.
    pub planet_class: Option<PlanetClass>,
    /// A temporary backup expires after a day unless a retention is given.
    pub temporary: Option<bool>,
    /// 1–3650; defaults by class: dev 7, test 14, prod 30.
    #[schema(minimum = 1, maximum = 3650)]
    pub retention_period_in_days: Option<i32>,
    pub metadata: Option<Metadata>,
}

pub(crate) fn status_filter(q: &ListQuery) -> Result<Option<&str>, ApiError> {
    match q.status.as_deref() {
        // Exactly as the document spells it: `status=` or `status=Succeeded` is no filter at all.
        Some(s) if s.parse::<BackupStatus>().is_err() => Err(ApiError::invalid(
            "status",
            format!("must be one of: {}", BackupStatus::ALL.join(", ")),
        )),
        other => Ok(other),
    }
}

/// The validated form of a create request, as every route that creates a backup takes it.
pub(crate) fn new_backup(state: &State, body: &CreateBackup) -> ApiResult<NewBackup> {
    let mut errors = Vec::new();
    if body.mechanism == Some(Mechanism::Physical) {
        errors.push(FieldError::new(
            "mechanism",
            "physical backups are not supported for this engine yet; use `logical`",
        ));
    }
    if let Some(days) = body.retention_period_in_days
        && !(1..=3650).contains(&days)
    {
        errors.push(FieldError::new("retentionPeriodInDays", "must be between 1 and 3650"));
    }
    let metadata = body.metadata.clone().unwrap_or_default();
    let metadata = Metadata {
        name: optional_text(&mut errors, "metadata.name", metadata.name.as_deref(), 200),
        description: optional_text(
            &mut errors,
            "metadata.description",
            metadata.description.as_deref(),
            2000,
        ),
    };
    check(errors)?;
    Ok(NewBackup {
        mechanism: Mechanism::Logical,
        method: Method::Manual,
        planet_class: body.planet_class,
        temporary: body.temporary.unwrap_or(false),
        retention_days: body.retention_period_in_days,
        metadata,
        max_attempts: state.config.worker.max_attempts,
        limits: (&state.config.limits).into(),
    })
}

pub(crate) fn backup_path(t: TenantId, p: ProjectId, b: BackupId) -> String {
    format!("/tenants/{t}/projects/{p}/backups/{b}")
}

/// Takes a backup of the planet now (operator). Answers 201 at once with the backup
/// `scheduled`; poll it until `succeeded`.
#[utoipa::path(
    tag = "backups",
    request_body(content = Option<CreateBackup>, description = "All fields optional; the body may be empty"),
    params(
        PlanetPath,
        IdempotencyHeader,
    ),
    responses(
        (status = 201, description = "The scheduled backup", body = Backup, headers(("Location" = String))),
        (status = 409, description = "A backup of this planet is already in progress, or the tenant's `backups` or `storedBytes` limit is reached (`limit` names it)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant's limit of concurrent jobs is reached; `limit` names it", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/backups")]
async fn create_backup(
    state: State,
    auth: Auth,
    path: web::Path<PlanetPath>,
    idem: IdempotencyKey,
    OptionalJson(body): OptionalJson<CreateBackup>,
) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let tenant = auth.tenant_with(tenant, Role::Operator)?;
    let new = new_backup(&state, &body)?;
    idem.run(&state, &auth, &body, || async {
        let b = start_backup(&state, tenant, project, planet, new).await?;
        Ok(Reply::created(location(&state, &backup_path(tenant, project, b.id)), b))
    })
    .await
}

/// Creates a backup of the planet, stored under the prefix its ids give: what every route that
/// takes a backup (native or a profile's) does.
pub(crate) async fn start_backup(
    state: &State,
    tenant: TenantId,
    project: ProjectId,
    planet: svalbard_core::ids::PlanetId,
    new: NewBackup,
) -> ApiResult<Backup> {
    let storage = &state.storage;
    Ok(backups::create(
        &state.pool,
        tenant,
        project,
        planet,
        |id| storage.backup_prefix(tenant, project, planet, id),
        new,
    )
    .await?)
}

/// Lists a planet's backups, newest first. Deleted backups show only with `status=deleted`.
#[utoipa::path(
    tag = "backups",
    params(
        PlanetPath,
        StatusFilter,
        Paging,
    ),
    responses((status = 200, description = "A page of backups", body = Page<Backup>)),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/backups")]
async fn list_planet_backups(
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
    let status = status_filter(&q)?;
    Ok(HttpResponse::Ok().json(backups::list_for_planet(&state.pool, tenant, project, planet, status, q.page).await?))
}

/// Lists the backups of every planet of a project, newest first.
#[utoipa::path(
    tag = "backups",
    params(
        ProjectPath,
        StatusFilter,
        Paging,
    ),
    responses((status = 200, description = "A page of backups", body = Page<Backup>)),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/backups")]
async fn list_project_backups(
    state: State,
    auth: Auth,
    path: web::Path<ProjectPath>,
    q: ListQuery,
) -> ApiResult<HttpResponse> {
    let ProjectPath { tenant, project } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    let status = status_filter(&q)?;
    Ok(HttpResponse::Ok().json(backups::list_for_project(&state.pool, tenant, project, status, q.page).await?))
}

/// Reads a backup, with its progress while it runs.
#[utoipa::path(
    tag = "backups",
    params(
        BackupPath,
    ),
    responses((status = 200, description = "The backup", body = Backup)),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/backups/{backupId}")]
async fn get_backup(state: State, auth: Auth, path: web::Path<BackupPath>) -> ApiResult<HttpResponse> {
    let BackupPath {
        tenant,
        project,
        backup,
    } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    Ok(HttpResponse::Ok().json(backups::get(&state.pool, tenant, project, backup).await?))
}

/// Verifies a succeeded backup by restoring it (operator). A worker restores the archive into a
/// scratch database on a server of the platform (the planet's own server only when its
/// schedule says `verifyOn: source`), compares every table and
/// its rows with what was counted while dumping, and drops the scratch database. Answers 202
/// with the backup; its `verification` holds the outcome once the verification has ended
/// (`verified`, or `failed` with the tables that differ), and a failed one shows in its
/// `displayStatus`.
#[utoipa::path(
    tag = "backups",
    params(BackupPath),
    responses(
        (status = 202, description = "The verification is queued; the backup as it stands", body = Backup, headers(("Location" = String, description = "The backup, whose `verification` shows the outcome"))),
        (status = 409, description = "The backup is not `succeeded`, or a verification of it is already queued or running", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/tenants/{tenantId}/projects/{projectId}/backups/{backupId}/verifications")]
async fn verify_backup(state: State, auth: Auth, path: web::Path<BackupPath>) -> ApiResult<HttpResponse> {
    let BackupPath {
        tenant,
        project,
        backup,
    } = path.into_inner();
    let (tenant, audit) = auth
        .authorize(
            &state.pool,
            tenant,
            Role::Operator,
            "backup.verify",
            ("backup", Some(backup.0)),
        )
        .await?;
    let b = backups::request_verification(
        &state.pool,
        tenant,
        project,
        backup,
        state.config.worker.max_attempts,
        &audit,
    )
    .await?;
    Ok(HttpResponse::Accepted()
        .insert_header((
            header::LOCATION,
            location(&state, &backup_path(tenant, b.project_id, b.id)),
        ))
        .json(b))
}

/// Changes to a backup.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateBackup {
    /// A pinned backup is never expired by retention.
    pub pinned: Option<bool>,
}

/// Pins or unpins a backup (admin). Pinning an expired or deleted backup is a conflict.
#[utoipa::path(
    tag = "backups",
    request_body(content = UpdateBackup, content_type = "application/merge-patch+json"),
    params(
        BackupPath,
    ),
    responses(
        (status = 200, description = "The backup", body = Backup),
        (status = 409, description = "The backup's archive is gone or going", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[patch("/tenants/{tenantId}/projects/{projectId}/backups/{backupId}")]
async fn update_backup(
    state: State,
    auth: Auth,
    path: web::Path<BackupPath>,
    Json(body): Json<UpdateBackup>,
) -> ApiResult<HttpResponse> {
    let BackupPath {
        tenant,
        project,
        backup,
    } = path.into_inner();
    let action = if body.pinned == Some(false) {
        "backup.unpin"
    } else {
        "backup.pin"
    };
    let (tenant, audit) = auth
        .authorize(&state.pool, tenant, Role::Admin, action, ("backup", Some(backup.0)))
        .await?;
    if let Some(pinned) = body.pinned {
        backups::set_pinned(&state.pool, tenant, project, backup, pinned, &audit).await?;
    }
    Ok(HttpResponse::Ok().json(backups::get(&state.pool, tenant, project, backup).await?))
}

/// Deletes a backup (admin). A scheduled or running backup is cancelled; a finished one goes
/// `deleting` while its objects are removed, then `deleted` (kept as a tombstone). Repeatable.
#[utoipa::path(
    tag = "backups",
    params(
        BackupPath,
    ),
    responses((status = 202, description = "Deletion under way (or done)", body = Backup)),
)]
#[delete("/tenants/{tenantId}/projects/{projectId}/backups/{backupId}")]
async fn delete_backup(state: State, auth: Auth, path: web::Path<BackupPath>) -> ApiResult<HttpResponse> {
    let BackupPath {
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
    Ok(HttpResponse::Accepted()
        .json(backups::request_delete(&state.pool, tenant, project, backup, settle, &audit).await?))
}

/// A short-lived download link of a backup's archive.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveLink {
    /// Pre-signed GET URL of the archive; the bytes never pass through the API.
    pub download_url: String,
    pub expires_at: DateTime<Utc>,
    pub size_bytes: Option<i64>,
    /// `sha256:<hex>` of the archive.
    pub checksum: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ArchiveQuery {
    redirect: Option<bool>,
}

/// A pre-signed download URL of a succeeded backup's archive (operator: an archive is the whole
/// database). With `redirect=true`, a 302 to it. The archive is encrypted for the tenant's key
/// (`encryption: age`; see `GET /tenants/{tenantId}/keys/export`): `age -d`, then `zstd -d`,
/// give the engine's own dump. Every link issued is written to the audit log.
#[utoipa::path(
    tag = "backups",
    params(
        BackupPath,
        ("redirect" = Option<bool>, Query, description = "Answer 302 to the URL instead of 200"),
    ),
    responses(
        (status = 200, description = "The link", body = ArchiveLink),
        (status = 302, description = "Redirect to the link"),
        (status = 409, description = "The backup has no archive (not succeeded)", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/backups/{backupId}/archive")]
async fn archive(state: State, auth: Auth, req: HttpRequest, path: web::Path<BackupPath>) -> ApiResult<HttpResponse> {
    let BackupPath {
        tenant,
        project,
        backup,
    } = path.into_inner();
    let (tenant, audit) = auth
        .authorize(
            &state.pool,
            tenant,
            Role::Operator,
            "backup.download",
            ("backup", Some(backup.0)),
        )
        .await?;
    let q = web::Query::<ArchiveQuery>::from_query(req.query_string())
        .map_err(|_| ApiError::invalid("redirect", "must be true or false"))?;
    let (url, row) = download_url(&state, tenant, project, backup, audit).await?;
    let ttl = state.storage.presign_ttl;
    if q.redirect.unwrap_or(false) {
        return Ok(HttpResponse::Found().insert_header((header::LOCATION, url)).finish());
    }
    let expires_at = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default();
    Ok(HttpResponse::Ok().json(ArchiveLink {
        download_url: url,
        expires_at,
        size_bytes: row.size_bytes,
        checksum: row.checksum,
    }))
}

/// The object key of a succeeded backup's archive, or the conflict of one that has none.
pub(crate) fn archive_key(row: &backups::Row) -> ApiResult<String> {
    let status = row.status()?;
    match (&row.object_key, status) {
        (Some(key), BackupStatus::Succeeded) => Ok(key.clone()),
        _ => Err(ApiError::Conflict(format!(
            "backup {} is {} and has no archive to download",
            row.id,
            status.as_str()
        ))),
    }
}

/// A pre-signed URL of a succeeded backup's archive, written to the audit log (`audit` is the
/// authorized `backup.download` record) before it is handed out.
pub(crate) async fn download_url(
    state: &State,
    tenant: TenantId,
    project: ProjectId,
    backup: BackupId,
    audit: svalbard_core::repo::audit::Entry,
) -> ApiResult<(String, backups::Row)> {
    let row = backups::row(&state.pool, tenant, project, backup).await?;
    let key = archive_key(&row)?;
    let url = state
        .storage
        .presign_get(&key, &format!("{}.svb.zst", row.name), state.storage.presign_ttl)
        .await
        .map_err(|e| ApiError::BadGateway(format!("cannot sign a download URL: {e}")))?;
    // No link leaves without its record: a failed write fails the request.
    audit.write_alone(&state.pool, Some(backup.0)).await?;
    Ok((url, row))
}

/// The last backup of a planet, Connectware style.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationSummary {
    pub id: uuid::Uuid,
    pub succeeded: bool,
    pub status: String,
    pub status_message: Option<String>,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
}

/// What a planet is doing and how its last operations ended.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Maintenance {
    /// A backup or restore of this planet is scheduled or running.
    pub running: bool,
    pub backup: Option<OperationSummary>,
    pub restore: Option<OperationSummary>,
}

/// Maintenance status of a planet: whether an operation runs and how the last ones ended.
#[utoipa::path(
    tag = "backups",
    params(
        PlanetPath,
    ),
    responses((status = 200, description = "The status", body = Maintenance)),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/maintenance")]
async fn maintenance(state: State, auth: Auth, path: web::Path<PlanetPath>) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    let last = backups::last_for_planet(&state.pool, tenant, project, planet).await?;
    let backup = last.map(|b| OperationSummary {
        id: b.id.0,
        succeeded: b.status == BackupStatus::Succeeded,
        status: b.status.as_str().into(),
        status_message: b.error_message.or_else(|| Some(b.status.display().into())),
        start_date: b.started_at,
        end_date: b.completed_at,
    });
    let restore = restores::last_for_planet(&state.pool, tenant, planet)
        .await?
        .map(|r| OperationSummary {
            id: r.id.0,
            succeeded: r.status == RestoreStatus::Succeeded,
            status: r.status.as_str().into(),
            status_message: r.error_message.or_else(|| Some(r.status.as_str().into())),
            start_date: r.started_at,
            end_date: r.completed_at,
        });
    let in_flight = |s: &Option<OperationSummary>| {
        s.as_ref()
            .is_some_and(|o| o.status == "scheduled" || o.status == "running")
    };
    let running = in_flight(&backup) || in_flight(&restore);
    Ok(HttpResponse::Ok().json(Maintenance {
        running,
        backup,
        restore,
    }))
}
