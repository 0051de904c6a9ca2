//! Restores. A restore and a backup never run on the same planet at once: both creates lock the
//! planet row and look at the other table.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::backup::Progress;
use crate::error::{Error, Result, is_unique_violation};
use crate::ids::{BackupId, PlanetId, ProjectId, RestoreId, TenantId};
use crate::jobs::{self, JobState, Lease, NewJob, SubjectEnd};
use crate::page::{Page, PageRequest};
use crate::repo::webhooks::{RESTORE_EVENT_COLUMNS, RestoreEvent};
use crate::restore::{Restore, RestoreSource, RestoreStatus, RestoreTarget, Verification};
use crate::webhook::EventType;

pub const RESTORE_JOB: &str = "restore";

macro_rules! restore_columns {
    () => {
        "id, tenant_id, project_id, planet_id, source_backup_id, source_upload_key, source_upload_name,
         source_upload_size, target_database, replace_target, force, status, error_message, phase,
         bytes_processed, verification, created_at, started_at, completed_at, target_claimed_at"
    };
}

#[derive(sqlx::FromRow)]
pub struct Row {
    pub id: RestoreId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub planet_id: PlanetId,
    pub source_backup_id: Option<BackupId>,
    pub source_upload_key: Option<String>,
    pub source_upload_name: Option<String>,
    pub source_upload_size: Option<i64>,
    pub target_database: String,
    pub replace_target: bool,
    pub force: bool,
    pub status: String,
    pub error_message: Option<String>,
    pub phase: Option<String>,
    pub bytes_processed: i64,
    pub verification: Option<sqlx::types::Json<Verification>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Set once an attempt is about to create the target database it restores into.
    pub target_claimed_at: Option<DateTime<Utc>>,
}

impl Row {
    pub fn status(&self) -> Result<RestoreStatus> {
        self.status
            .parse()
            .map_err(|_| Error::Other(anyhow::anyhow!("stored restore has an invalid status")))
    }

    pub fn into_restore(self) -> Result<Restore> {
        let status = self.status()?;
        Ok(Restore {
            id: self.id,
            tenant_id: self.tenant_id,
            project_id: self.project_id,
            status,
            error_message: self.error_message,
            source: RestoreSource {
                backup_id: self.source_backup_id,
                upload_name: self.source_upload_name,
                upload_size_bytes: self.source_upload_size,
            },
            target: RestoreTarget {
                planet_id: self.planet_id,
                database: self.target_database,
                replace: self.replace_target,
            },
            progress: status.in_flight().then_some(Progress {
                bytes_processed: self.bytes_processed,
                phase: self.phase,
            }),
            verification: self.verification.map(|v| v.0),
            created_at: self.created_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
        })
    }
}

/// A validated restore request.
pub struct NewRestore {
    pub target_planet: PlanetId,
    pub target_database: Option<String>,
    pub replace: bool,
    pub force: bool,
    pub source_backup: Option<BackupId>,
    pub upload: Option<(String, String, i64)>,
    pub max_attempts: i32,
    pub limits: super::limits::Limits,
}

/// Refuses when a backup or restore of the planet is in progress. The caller holds the planet
/// row locked.
pub async fn ensure_idle(conn: &mut PgConnection, planet: PlanetId) -> Result<()> {
    let busy: Option<(String, uuid::Uuid, String)> = sqlx::query_as(
        "SELECT 'backup', id, status FROM backups WHERE planet_id = $1 AND status IN ('scheduled', 'running')
         UNION ALL
         SELECT 'restore', id, status FROM restores WHERE planet_id = $1 AND status IN ('scheduled', 'running')
         LIMIT 1",
    )
    .bind(planet)
    .fetch_optional(&mut *conn)
    .await?;
    match busy {
        Some((kind, id, status)) => Err(Error::Conflict(format!(
            "{kind} {id} of this planet is {status}; wait for it to finish"
        ))),
        None => Ok(()),
    }
}

/// Inserts the restore and its job in one transaction. The target planet must be of the
/// tenant and, when restoring a backup, of the backup's engine.
pub async fn create(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    new: NewRestore,
    audit: &super::audit::Entry,
) -> Result<Restore> {
    create_with_id(pool, tenant, project, RestoreId::new(), new, audit).await
}

/// As [`create`], with an id chosen in advance (an upload is stored under it first).
pub async fn create_with_id(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    id: RestoreId,
    new: NewRestore,
    audit: &super::audit::Entry,
) -> Result<Restore> {
    let mut tx = pool.begin().await?;
    let own = super::limits::lock_tenant(&mut tx, tenant).await?;
    let (target_project, engine, database): (ProjectId, String, String) = sqlx::query_as(
        "SELECT project_id, engine, database_name FROM planets WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(tenant)
    .bind(new.target_planet)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound("planet"))?;
    if let (Some(target), Ok(engine)) = (&new.target_database, engine.parse())
        && let Err(why) = crate::restore::check_target(engine, &database, target)
    {
        return Err(Error::invalid("targetDatabase", why));
    }
    if let Some(backup) = new.source_backup {
        let (backup_engine, status): (String, String) = sqlx::query_as(
            "SELECT engine, status FROM backups WHERE tenant_id = $1 AND project_id = $2 AND id = $3 FOR SHARE",
        )
        .bind(tenant)
        .bind(project)
        .bind(backup)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound("backup"))?;
        if status != "succeeded" {
            return Err(Error::Conflict(format!(
                "backup {backup} is {status}; only a succeeded backup can be restored"
            )));
        }
        if backup_engine != engine {
            return Err(Error::invalid(
                "targetPlanetId",
                format!("the target planet runs {engine}, the backup is of {backup_engine}"),
            ));
        }
    }
    ensure_idle(&mut tx, new.target_planet).await?;
    super::limits::check(&mut tx, tenant, own, new.limits, super::limits::Creating::Restore).await?;
    let (key, name, size) = new
        .upload
        .clone()
        .map_or((None, None, None), |(k, n, s)| (Some(k), Some(n), Some(s)));
    let inserted = sqlx::query(
        "INSERT INTO restores (id, tenant_id, project_id, planet_id, source_backup_id, source_upload_key,
                               source_upload_name, source_upload_size, target_database, replace_target, force, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(id)
    .bind(tenant)
    .bind(target_project)
    .bind(new.target_planet)
    .bind(new.source_backup)
    .bind(key)
    .bind(name)
    .bind(size)
    .bind(new.target_database.unwrap_or(database))
    .bind(new.replace)
    .bind(new.force)
    .bind(RestoreStatus::Scheduled.as_str())
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        return Err(if is_unique_violation(&e, "restores_one_active") {
            Error::Conflict("a restore of this planet is already in progress".into())
        } else {
            e.into()
        });
    }
    jobs::enqueue(
        &mut tx,
        &NewJob {
            tenant,
            kind: RESTORE_JOB,
            subject: id.0,
            payload: serde_json::json!({}),
            max_attempts: new.max_attempts,
        },
    )
    .await?;
    // As created (`scheduled`), whatever a worker does the moment it commits.
    let created = get(&mut *tx, tenant, target_project, id).await?;
    audit.write(&mut tx, Some(id.0)).await?;
    tx.commit().await?;
    Ok(created)
}

pub async fn get<'e>(
    db: impl sqlx::PgExecutor<'e>,
    tenant: TenantId,
    project: ProjectId,
    id: RestoreId,
) -> Result<Restore> {
    sqlx::query_as::<_, Row>(concat!(
        "SELECT ",
        restore_columns!(),
        " FROM restores WHERE tenant_id = $1 AND project_id = $2 AND id = $3"
    ))
    .bind(tenant)
    .bind(project)
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound("restore"))?
    .into_restore()
}

pub async fn list_for_planet(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    planet: PlanetId,
    page: PageRequest,
) -> Result<Page<Restore>> {
    super::planets::get(pool, tenant, project, planet).await?;
    let rows = sqlx::query_as::<_, Row>(concat!(
        "SELECT ",
        restore_columns!(),
        " FROM restores WHERE tenant_id = $1 AND planet_id = $2 AND ($3::uuid IS NULL OR id < $3)
          ORDER BY id DESC LIMIT $4"
    ))
    .bind(tenant)
    .bind(planet)
    .bind(page.before)
    .bind(page.fetch())
    .fetch_all(pool)
    .await?;
    let items = rows.into_iter().map(Row::into_restore).collect::<Result<Vec<_>>>()?;
    Ok(Page::from_rows(items, page, |r| r.id.0))
}

pub async fn last_for_planet(pool: &PgPool, tenant: TenantId, planet: PlanetId) -> Result<Option<Restore>> {
    sqlx::query_as::<_, Row>(concat!(
        "SELECT ",
        restore_columns!(),
        " FROM restores WHERE tenant_id = $1 AND planet_id = $2 ORDER BY id DESC LIMIT 1"
    ))
    .bind(tenant)
    .bind(planet)
    .fetch_optional(pool)
    .await?
    .map(Row::into_restore)
    .transpose()
}

// ---- worker side -------------------------------------------------------------------------

pub async fn for_job(pool: &PgPool, tenant: TenantId, id: RestoreId) -> Result<Row> {
    sqlx::query_as::<_, Row>(concat!(
        "SELECT ",
        restore_columns!(),
        " FROM restores WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("restore"))
}

/// Whether the attempt holding `$2`/`$3` (job id and lease token) still runs the job; `$4` is
/// the running state.
macro_rules! lease_holds {
    () => {
        "EXISTS (SELECT 1 FROM jobs WHERE id = $2 AND lease_token = $3 AND state = $4)"
    };
}

pub async fn mark_running(pool: &PgPool, id: RestoreId, lease: Lease) -> Result<bool> {
    Ok(sqlx::query(concat!(
        "UPDATE restores SET status = $5, phase = 'verifying', error_message = NULL,
                started_at = COALESCE(started_at, now())
         WHERE id = $1 AND status = ANY($6) AND ",
        lease_holds!()
    ))
    .bind(id)
    .bind(lease.job)
    .bind(lease.token)
    .bind(JobState::Running.as_str())
    .bind(RestoreStatus::Running.as_str())
    .bind(RestoreStatus::names(&RestoreStatus::IN_FLIGHT))
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

pub async fn report(pool: &PgPool, id: RestoreId, lease: Lease, bytes: u64, phase: &str) -> Result<bool> {
    Ok(sqlx::query(concat!(
        "UPDATE restores SET bytes_processed = $5, phase = $6 WHERE id = $1 AND status = $7 AND ",
        lease_holds!()
    ))
    .bind(id)
    .bind(lease.job)
    .bind(lease.token)
    .bind(JobState::Running.as_str())
    .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
    .bind(phase)
    .bind(RestoreStatus::Running.as_str())
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Records, fenced by the lease, that this restore is about to create its target, so a later
/// attempt can tell its own earlier load from other data.
pub async fn claim_target(pool: &PgPool, id: RestoreId, lease: Lease) -> Result<bool> {
    Ok(sqlx::query(concat!(
        "UPDATE restores SET target_claimed_at = COALESCE(target_claimed_at, now())
         WHERE id = $1 AND status = $5 AND ",
        lease_holds!()
    ))
    .bind(id)
    .bind(lease.job)
    .bind(lease.token)
    .bind(JobState::Running.as_str())
    .bind(RestoreStatus::Running.as_str())
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Records success with what the target now holds, and completes the job, in one transaction
/// fenced by the lease.
pub async fn succeed(pool: &PgPool, id: RestoreId, lease: Lease, v: &Verification) -> Result<bool> {
    let Some(mut fenced) = jobs::lock(pool, lease).await? else {
        return Ok(false);
    };
    let done = sqlx::query_as::<_, RestoreEvent>(sqlx::AssertSqlSafe(format!(
        "UPDATE restores SET status = $2, phase = NULL, completed_at = now(), verification = $4
         WHERE id = $1 AND status = $3 RETURNING {RESTORE_EVENT_COLUMNS}"
    )))
    .bind(id)
    .bind(RestoreStatus::Succeeded.as_str())
    .bind(RestoreStatus::Running.as_str())
    .bind(sqlx::types::Json(v))
    .fetch_optional(fenced.conn())
    .await?;
    let Some(done) = done else {
        return Ok(false);
    };
    done.notify(fenced.conn(), EventType::RestoreSucceeded).await?;
    fenced.complete().await?;
    Ok(true)
}

fn subject() -> super::subject::Subject {
    super::subject::Subject {
        table: "restores",
        noun: "restore",
        event_columns: RESTORE_EVENT_COLUMNS,
        running: RestoreStatus::Running.as_str(),
        in_flight: RestoreStatus::names(&RestoreStatus::IN_FLIGHT),
        given_up: |cause| RestoreStatus::given_up(cause).as_str(),
        orphaned: RestoreStatus::Failed.as_str(),
        job_kind: RESTORE_JOB,
        failed: EventType::RestoreFailed,
    }
}

/// The restore's side of its job's end, inside the queue's fenced transaction.
pub(crate) async fn job_ended(conn: &mut PgConnection, id: RestoreId, end: SubjectEnd<'_>) -> Result<()> {
    super::subject::job_ended::<RestoreEvent>(conn, &subject(), id.0, end).await
}

/// Ends in-flight restores that have no live job: `failed`, with their job's last error.
pub(crate) async fn repair_orphaned(conn: &mut PgConnection, live_jobs: &[&str]) -> Result<u64> {
    super::subject::repair_orphaned::<RestoreEvent>(conn, &subject(), live_jobs).await
}
