//! The Connectware-style profile: database maintenance of one planet. The base URL of a planet is
//! `/profiles/connectware/tenants/{tenantId}/projects/{projectId}/planets/{planetId}`; below it
//! the document's paths (`/api/maintenance/db…`) work as written. Besides Bearer, these routes
//! (and no others) take HTTP Basic whose password is a Svalbard token, so `curl -u` works.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use svalbard_core::auth::Role;
use svalbard_core::backup::{Backup, BackupStatus};
use svalbard_core::page::PageRequest;
use svalbard_core::repo::{backups, restores};
use svalbard_core::restore::{Restore, RestoreStatus};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::BasicOrBearer;
use crate::error::{ApiError, ApiResult};
use crate::routes::PlanetPath;
use crate::routes::backups::{CreateBackup, archive_key, new_backup, start_backup};
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(connectware_status)
        .service(connectware_backup)
        .service(connectware_download)
        .service(connectware_restore);
}

/// The last backup or restore, spelled as the Connectware document spells it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectwareOperation {
    /// Whether the operation ended well (the document's spelling). `false` while it runs.
    pub succeded: bool,
    /// The backup's or restore's id.
    pub id: String,
    /// `OK` when it succeeded; while it runs `scheduled` or `running`; otherwise why it did
    /// not. A restore refused across versions names the version that can restore the file.
    pub status_message: String,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
}

impl From<&Backup> for ConnectwareOperation {
    fn from(b: &Backup) -> Self {
        let succeeded = b.status == BackupStatus::Succeeded;
        Self {
            succeded: succeeded,
            id: b.id.to_string(),
            status_message: if succeeded {
                "OK".into()
            } else {
                b.error_message.clone().unwrap_or_else(|| b.status.as_str().into())
            },
            start_date: b.started_at,
            end_date: b.completed_at,
        }
    }
}

impl From<&Restore> for ConnectwareOperation {
    fn from(r: &Restore) -> Self {
        let succeeded = r.status == RestoreStatus::Succeeded;
        Self {
            succeded: succeeded,
            id: r.id.to_string(),
            status_message: if succeeded {
                "OK".into()
            } else {
                r.error_message.clone().unwrap_or_else(|| r.status.as_str().into())
            },
            start_date: r.started_at,
            end_date: r.completed_at,
        }
    }
}

/// The maintenance status of the planet; `backup` and `restore` are `null` until there is one.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectwareStatus {
    /// A backup or restore of this planet is scheduled or running.
    pub running: bool,
    pub backup: Option<ConnectwareOperation>,
    pub restore: Option<ConnectwareOperation>,
}

/// The form of a restore upload.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct ConnectwareUpload {
    /// The backup file: as downloaded from `GET …/api/maintenance/db/backup`, or a plain engine
    /// dump (pg_dump custom or SQL, optionally gzip- or zstd-compressed).
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// A backup file, as downloaded.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct BackupFile(Vec<u8>);

/// Status of the database maintenance: whether an operation runs and how the last ones ended.
#[utoipa::path(
    tag = "connectware",
    security(("basic" = []), ("bearer" = [])),
    params(PlanetPath),
    responses((status = 200, description = "The status", body = ConnectwareStatus)),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/api/maintenance/db")]
async fn connectware_status(
    state: State,
    BasicOrBearer(auth): BasicOrBearer,
    path: web::Path<PlanetPath>,
) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let tenant = auth.tenant(tenant)?;
    let backup = backups::last_for_planet(&state.pool, tenant, project, planet).await?;
    let restore = restores::last_for_planet(&state.pool, tenant, planet).await?;
    let running =
        backup.as_ref().is_some_and(|b| b.status.in_flight()) || restore.as_ref().is_some_and(|r| r.status.in_flight());
    Ok(HttpResponse::Ok().json(ConnectwareStatus {
        running,
        backup: backup.as_ref().map(ConnectwareOperation::from),
        restore: restore.as_ref().map(ConnectwareOperation::from),
    }))
}

/// Starts the creation of a backup file (operator). Answers 202; the status shows its progress.
#[utoipa::path(
    tag = "connectware",
    security(("basic" = []), ("bearer" = [])),
    params(PlanetPath),
    responses(
        (status = 202, description = "The backup is scheduled", body = ConnectwareOperation),
        (status = 409, description = "A backup or restore of this planet is in progress, or a tenant limit is reached", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant's limit of concurrent jobs is reached; `limit` names it", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/api/maintenance/db/backup")]
async fn connectware_backup(
    state: State,
    BasicOrBearer(auth): BasicOrBearer,
    path: web::Path<PlanetPath>,
) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let tenant = auth.tenant_with(tenant, Role::Operator)?;
    let new = new_backup(&state, &CreateBackup::default())?;
    let b = start_backup(&state, tenant, project, planet, new).await?;
    Ok(HttpResponse::Accepted().json(ConnectwareOperation::from(&b)))
}

/// Downloads the newest succeeded backup file of the planet (operator), streamed, so that
/// `curl --output` saves it. The file is encrypted for the tenant's key (age; see
/// `GET /api/v1/tenants/{tenantId}/keys/export`): `age -d`, then `zstd -d`, give the engine's
/// dump, and the upload restore takes it back as it is.
#[utoipa::path(
    tag = "connectware",
    security(("basic" = []), ("bearer" = [])),
    params(PlanetPath),
    responses(
        (status = 200, description = "The backup file", content_type = "application/octet-stream", body = BackupFile),
        (status = 409, description = "The planet has no succeeded backup yet", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/api/maintenance/db/backup")]
async fn connectware_download(
    state: State,
    BasicOrBearer(auth): BasicOrBearer,
    path: web::Path<PlanetPath>,
) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let (tenant, audit) = auth
        .authorize(&state.pool, tenant, Role::Operator, "backup.download", ("backup", None))
        .await?;
    let first = PageRequest::parse(Some(1), None).map_err(ApiError::Validation)?;
    let newest = backups::list_for_planet(&state.pool, tenant, project, planet, Some("succeeded"), first)
        .await?
        .items
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Conflict("the planet has no succeeded backup to download yet".into()))?;
    let row = backups::row(&state.pool, tenant, project, newest.id).await?;
    let key = archive_key(&row)?;
    let (length, mut body) = state
        .storage
        .open(&key)
        .await
        .map_err(|e| ApiError::BadGateway(format!("{e:#}")))?;
    // No archive leaves without its record: a failed write fails the request.
    audit.write_alone(&state.pool, Some(newest.id.0)).await?;
    let first = body.next().await;
    let stream = futures_util::stream::unfold((first, body), |(pending, mut body)| async move {
        let chunk = pending?;
        let next = body.next().await;
        Some((chunk.map_err(std::io::Error::other), (next, body)))
    });
    let mut res = HttpResponse::Ok();
    res.content_type("application/octet-stream").insert_header((
        header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"{}.svb.zst\"", row.name),
    ));
    if let Some(length) = length.and_then(|l| u64::try_from(l).ok()) {
        res.no_chunking(length);
    }
    Ok(res.streaming(stream))
}

/// Restores the planet's database from an uploaded backup file (admin: the database is
/// replaced), sent as the form field `file`. Answers 202; the status shows how it ended.
#[utoipa::path(
    tag = "connectware",
    security(("basic" = []), ("bearer" = [])),
    request_body(content = ConnectwareUpload, content_type = "multipart/form-data"),
    params(PlanetPath),
    responses(
        (status = 202, description = "The restore is scheduled", body = ConnectwareOperation),
        (status = 409, description = "A backup or restore of the planet is in progress", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant's limit of concurrent jobs is reached; `limit` names it", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/api/maintenance/db/restore")]
async fn connectware_restore(
    state: State,
    BasicOrBearer(auth): BasicOrBearer,
    req: HttpRequest,
    path: web::Path<PlanetPath>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    // Restoring the database replaces it, as the document's restore does: that needs `admin`,
    // checked before the upload is read.
    auth.authorize(&state.pool, tenant, Role::Admin, "restore.create", ("restore", None))
        .await?;
    let r = crate::routes::restores::upload(&state, &auth, &req, (tenant, project, planet), payload, true).await?;
    Ok(HttpResponse::Accepted().json(ConnectwareOperation::from(&r)))
}
