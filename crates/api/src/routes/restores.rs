use actix_web::{HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use svalbard_core::FieldError;
use svalbard_core::auth::Role;
use svalbard_core::backup::BackupStatus;
use svalbard_core::domain::check;
use svalbard_core::ids::{PlanetId, TenantId};
use svalbard_core::page::Page;
use svalbard_core::repo::backups;
use svalbard_core::repo::restores::{self, NewRestore};
use svalbard_core::restore::Restore;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::{BackupPath, IdempotencyHeader, Paging, PlanetPath, RestorePath, location};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ListQuery, OptionalJson};
use crate::idempotency::{IdempotencyKey, Reply};
use crate::state::State;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(restore_backup)
        .service(restore_upload)
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
    /// Database to restore into; defaults to the target planet's database. Either that
    /// database or a name derived from it, `<database>_<suffix>` (suffix: 1 to 32 lowercase
    /// letters, digits or underscores; at most 63 bytes in all); never a template or the
    /// server's maintenance database (400 naming `targetDatabase`).
    #[schema(min_length = 1, max_length = 63, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
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
    params(BackupPath, IdempotencyHeader),
    responses(
        (status = 202, description = "The scheduled restore", body = Restore, headers(("Location" = String))),
        (status = 409, description = "The backup is not restorable, or the target is busy", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant's limit of concurrent jobs is reached; `limit` names it", body = crate::error::Problem, content_type = "application/problem+json"),
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
    let (tenant, audit) = auth
        .authorize(&state.pool, tenant, Role::Operator, "restore.create", ("restore", None))
        .await?;
    if body.replace && auth.require(Role::Admin).is_err() {
        audit.denied(&state.pool, None).await;
        return Err(ApiError::Forbidden(
            "`replace: true` drops the target's objects and needs the `admin` role".into(),
        ));
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
        limits: (&state.config.limits).into(),
    };
    idem.run(&state, &auth, &body, || async {
        let r = restores::create(&state.pool, tenant, project, new, &audit).await?;
        let path = RestorePath {
            tenant,
            project: r.project_id,
            restore: r.id,
        };
        Ok(Reply::accepted(location(&state, &restore_path(&path)), r))
    })
    .await
}

/// Options of a restore from an upload, sent as the multipart field `options` (JSON).
#[derive(Debug, Default, Clone, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadOptions {
    /// Database to restore into; defaults to the planet's database. Either that database or
    /// `<database>_<suffix>`, as for the restore of a stored backup.
    #[schema(min_length = 1, max_length = 63, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub target_database: Option<String>,
    /// Drop and recreate the target first (admin).
    #[serde(default)]
    pub replace: bool,
    /// Restore into a server of an older major version than the source.
    #[serde(default)]
    pub force: bool,
}

/// The form of an upload, for the API description.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct UploadForm {
    /// The archive: a Svalbard archive, a pg_dump custom-format file or a plain SQL dump,
    /// optionally gzip- or zstd-compressed (`file` is accepted as the field name too).
    #[schema(value_type = String, format = Binary)]
    pub archive: Vec<u8>,
    /// JSON `UploadOptions`.
    pub options: Option<UploadOptions>,
}

fn file_name(raw: Option<&str>) -> String {
    let name: String = raw
        .unwrap_or("upload")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("upload")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(100)
        .collect();
    if name.is_empty() { "upload".into() } else { name }
}

/// Restores an uploaded archive into a planet (operator; `replace` needs admin). The upload is
/// streamed to object storage (never held whole) and checked before anything is scheduled.
#[utoipa::path(
    tag = "restores",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    params(PlanetPath),
    responses(
        (status = 202, description = "The scheduled restore", body = Restore, headers(("Location" = String))),
        (status = 409, description = "A backup or restore of the planet is in progress", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant's limit of concurrent jobs is reached; `limit` names it", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The upload is larger than the configured limit", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/tenants/{tenantId}/projects/{projectId}/planets/{planetId}/restores")]
async fn restore_upload(
    state: State,
    auth: Auth,
    req: actix_web::HttpRequest,
    path: web::Path<PlanetPath>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let PlanetPath {
        tenant,
        project,
        planet,
    } = path.into_inner();
    let r = upload(&state, &auth, &req, (tenant, project, planet), payload, false).await?;
    let path = RestorePath {
        tenant,
        project: r.project_id,
        restore: r.id,
    };
    Ok(HttpResponse::Accepted()
        .insert_header((
            actix_web::http::header::LOCATION,
            location(&state, &restore_path(&path)),
        ))
        .json(r))
}

/// Streams an uploaded archive (multipart field `archive` or `file`) into object storage and
/// schedules its restore into the planet: what every route restoring an upload does. With
/// `replacing`, the restore replaces the planet's database whatever the form's options say.
pub(crate) async fn upload(
    state: &State,
    auth: &Auth,
    req: &actix_web::HttpRequest,
    (tenant, project, planet): (svalbard_core::ids::TenantId, svalbard_core::ids::ProjectId, PlanetId),
    payload: web::Payload,
    replacing: bool,
) -> ApiResult<Restore> {
    let (tenant, audit) = auth
        .authorize(&state.pool, tenant, Role::Operator, "restore.create", ("restore", None))
        .await?;
    let target = svalbard_core::repo::planets::get(&state.pool, tenant, project, planet).await?;
    let is_multipart = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !is_multipart {
        return Err(ApiError::UnsupportedMediaType(
            "the body must be `multipart/form-data` with a field `archive`".into(),
        ));
    }
    let id = svalbard_core::ids::RestoreId::new();
    let prefix = state.storage.upload_prefix(tenant, target.project_id, planet, id);
    let limit = state.config.limits.upload_bytes;
    let part_size = state.config.worker.part_size_mib * 1024 * 1024;
    let form = actix_multipart::Multipart::new(req.headers(), payload);
    let received = receive(state, tenant, form, &prefix, part_size, limit).await;
    let (mut options, stored) = match received {
        Ok(r) => r,
        Err(e) => {
            // Whatever part of the form arrived before the problem is not kept.
            let _ = state.storage.clear(&prefix).await;
            return Err(e);
        }
    };
    let Some((key, file, size)) = stored else {
        return Err(ApiError::invalid(
            "archive",
            "a file field named `archive` (or `file`) is required",
        ));
    };
    if replacing {
        options.replace = true;
    }
    let cleanup = |e: ApiError| {
        let storage = state.storage.clone();
        let prefix = prefix.clone();
        async move {
            let _ = storage.clear(&prefix).await;
            e
        }
    };
    if options.replace && auth.require(Role::Admin).is_err() {
        audit.clone().denied(&state.pool, None).await;
        return Err(cleanup(ApiError::Forbidden(
            "`replace: true` drops the target's objects and needs the `admin` role".into(),
        ))
        .await);
    }
    if let Some(db) = &options.target_database
        && (db.is_empty() || db.len() > 63 || db.chars().any(char::is_control))
    {
        return Err(cleanup(ApiError::invalid(
            "options.targetDatabase",
            "must be 1 to 63 characters without control characters",
        ))
        .await);
    }
    let new = NewRestore {
        target_planet: planet,
        target_database: options.target_database.clone(),
        replace: options.replace,
        force: options.force,
        source_backup: None,
        upload: Some((key, file, i64::try_from(size).unwrap_or(i64::MAX))),
        max_attempts: state.config.worker.max_attempts,
        limits: (&state.config.limits).into(),
    };
    match restores::create_with_id(&state.pool, tenant, project, id, new, &audit).await {
        Ok(r) => Ok(r),
        // The options arrive as a form field: name the field as it was sent.
        Err(svalbard_core::Error::Validation(errors)) => Err(cleanup(ApiError::Validation(
            errors
                .into_iter()
                .map(|f| {
                    if f.field == "targetDatabase" {
                        FieldError::new("options.targetDatabase", f.message)
                    } else {
                        f
                    }
                })
                .collect(),
        ))
        .await),
        Err(e) => Err(cleanup(e.into()).await),
    }
}

/// The start of an uploaded archive as the worker will read it: decrypted with the tenant's
/// keys when it is one of its encrypted archives.
async fn plaintext_head(state: &State, tenant: TenantId, head: Vec<u8>) -> ApiResult<Vec<u8>> {
    use svalbard_core::envelope;
    if !envelope::is_encrypted(&head) {
        return Ok(head);
    }
    svalbard_core::repo::keys::upload_openers(&state.pool, &state.keys, tenant)
        .await?
        .decrypt_prefix(&head, head.len())
        .map_err(|e| ApiError::invalid("archive", envelope::describe_decrypt_error(&e)))
}

/// Reads the form: the options, and the archive streamed into object storage under `prefix`.
async fn receive(
    state: &State,
    tenant: TenantId,
    mut form: actix_multipart::Multipart,
    prefix: &str,
    part_size: usize,
    limit: u64,
) -> ApiResult<(UploadOptions, Option<(String, String, u64)>)> {
    use futures_util::StreamExt as _;
    let mut options = UploadOptions::default();
    let mut stored: Option<(String, String, u64)> = None;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| ApiError::BadRequest(format!("the multipart body is malformed: {e}")))?;
        let disposition = field.content_disposition().cloned();
        let name = disposition
            .as_ref()
            .and_then(|d| d.get_name())
            .unwrap_or_default()
            .to_owned();
        match name.as_str() {
            "options" => {
                let body = read_field(&mut field, 64 * 1024).await?;
                options = crate::extract::parse_json::<UploadOptions>(&body).map_err(|e| match e {
                    ApiError::Validation(errs) => ApiError::Validation(
                        errs.into_iter()
                            .map(|f| FieldError::new(format!("options.{}", f.field), f.message))
                            .collect(),
                    ),
                    other => other,
                })?;
            }
            "archive" | "file" if stored.is_none() => {
                let file = file_name(disposition.as_ref().and_then(|d| d.get_filename()));
                let key = format!("{prefix}{file}");
                let mut writer = svalbard_core::storage::PartWriter::begin(&state.storage, &key, part_size)
                    .await
                    .map_err(|e| ApiError::BadGateway(format!("{e:#}")))?;
                let mut head = Vec::new();
                let outcome: Result<(), ApiError> = async {
                    while let Some(chunk) = field.next().await {
                        let chunk =
                            chunk.map_err(|e| ApiError::BadRequest(format!("the upload was interrupted: {e}")))?;
                        if writer.written() + chunk.len() as u64 > limit {
                            return Err(ApiError::PayloadTooLarge(format!(
                                "the upload exceeds the limit of {limit} bytes"
                            )));
                        }
                        if head.len() < 256 * 1024 {
                            head.extend_from_slice(&chunk[..chunk.len().min(256 * 1024 - head.len())]);
                        }
                        writer
                            .write(&chunk)
                            .await
                            .map_err(|e| ApiError::BadGateway(format!("{e:#}")))?;
                    }
                    let head = plaintext_head(state, tenant, head).await?;
                    svalbard_core::dumpinfo::detect(&head).map_err(|seen| ApiError::invalid("archive", seen))?;
                    Ok(())
                }
                .await;
                match outcome {
                    Ok(()) => {
                        let size = writer
                            .complete()
                            .await
                            .map_err(|e| ApiError::BadGateway(format!("{e:#}")))?;
                        stored = Some((key, file, size));
                    }
                    Err(e) => {
                        writer.abort().await;
                        return Err(e);
                    }
                }
            }
            _ => {
                // Unknown fields are drained so the form can be read to its end.
                read_field(&mut field, 1024 * 1024).await?;
            }
        }
    }
    Ok((options, stored))
}

async fn read_field(field: &mut actix_multipart::Field, limit: usize) -> ApiResult<Vec<u8>> {
    use futures_util::StreamExt as _;
    let mut out = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("the multipart body is malformed: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(format!("a form field exceeds {limit} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
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
