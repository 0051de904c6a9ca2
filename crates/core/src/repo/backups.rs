//! Backups. API-side functions take the tenant first; worker-side functions are fenced by the
//! job that owns the backup, so a worker that lost its claim cannot change it.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::{Acquire as _, PgConnection, PgPool, Postgres};

use crate::backup::{
    Backup, BackupStatus, Environment, Mechanism, Metadata, Method, Part, Progress, backup_name, retention_days,
};
use crate::domain::PlanetClass;
use crate::error::{Error, Result, is_unique_violation};
use crate::ids::{BackupId, JobId, PlanetId, ProjectId, TenantId};
use crate::jobs::{self, JobState, Lease, NewJob, SubjectEnd};
use crate::page::{Page, PageRequest};
use crate::repo::limits::{self, Creating, Limits};
use crate::repo::webhooks::{BACKUP_EVENT_COLUMNS, BackupEvent};
use crate::verification::{BackupVerification, TableCounts, VerificationStatus};
use crate::webhook::EventType;

pub const BACKUP_JOB: &str = "backup";
pub const DELETE_JOB: &str = "delete-backup";
/// Restores a backup's archive into a scratch database and compares it with the dump's record.
pub const VERIFY_JOB: &str = "verify-backup";

macro_rules! backup_select {
    () => {
        "SELECT b.id, b.name, b.tenant_id, b.project_id, b.planet_id, b.engine, b.mechanism, b.method, b.temporary,
                b.pinned, b.status, b.error_message, b.phase, b.bytes_processed, b.size_bytes, b.checksum,
                b.compression, b.encryption, b.engine_version, b.tool_version, b.format_version, b.storage_prefix, b.object_key,
                b.stage, b.retention_days, b.metadata, b.parts, b.created_at, b.started_at, b.completed_at,
                b.expiration_date, b.table_counts, b.verification, t.name AS tenant_name, p.name AS project_name, x.name AS planet_name
         FROM backups b
         JOIN tenants t ON t.id = b.tenant_id
         JOIN projects p ON p.id = b.project_id
         JOIN planets x ON x.id = b.planet_id "
    };
}

#[derive(sqlx::FromRow)]
pub struct Row {
    pub id: BackupId,
    pub name: String,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub planet_id: PlanetId,
    pub engine: String,
    pub mechanism: String,
    pub method: String,
    pub temporary: bool,
    pub pinned: bool,
    pub status: String,
    pub error_message: Option<String>,
    pub phase: Option<String>,
    pub bytes_processed: i64,
    pub size_bytes: Option<i64>,
    pub checksum: Option<String>,
    pub compression: String,
    pub encryption: String,
    pub engine_version: Option<String>,
    pub tool_version: Option<String>,
    pub format_version: Option<i32>,
    pub storage_prefix: String,
    pub object_key: Option<String>,
    pub stage: String,
    pub retention_days: i32,
    pub metadata: sqlx::types::Json<Metadata>,
    pub parts: sqlx::types::Json<Vec<Part>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expiration_date: Option<DateTime<Utc>>,
    pub table_counts: Option<sqlx::types::Json<TableCounts>>,
    pub verification: Option<sqlx::types::Json<BackupVerification>>,
    pub tenant_name: String,
    pub project_name: String,
    pub planet_name: String,
}

fn corrupt(what: &str) -> Error {
    Error::Other(anyhow::anyhow!("stored backup has an invalid {what}"))
}

impl Row {
    pub fn status(&self) -> Result<BackupStatus> {
        self.status.parse().map_err(|_| corrupt("status"))
    }

    pub fn into_backup(self) -> Result<Backup> {
        let status = self.status()?;
        let verification = self.verification.map(|v| v.0);
        // A failed verification is as visible as a failed backup: the archive is there, but
        // it is not known to restore.
        let display_status = match &verification {
            Some(v) if status == BackupStatus::Succeeded && v.status == VerificationStatus::Failed => {
                "verification failed"
            }
            Some(v) if status == BackupStatus::Succeeded && v.status == VerificationStatus::Verified => "verified",
            _ => status.display(),
        };
        Ok(Backup {
            id: self.id,
            name: self.name,
            tenant_id: self.tenant_id,
            project_id: self.project_id,
            planet_id: self.planet_id,
            engine: self.engine.parse().map_err(|_| corrupt("engine"))?,
            mechanism: self.mechanism.parse().map_err(|_| corrupt("mechanism"))?,
            method: self.method.parse().map_err(|_| corrupt("method"))?,
            temporary: self.temporary,
            pinned: self.pinned,
            status,
            display_status,
            error_message: self.error_message,
            progress: status.in_flight().then_some(Progress {
                bytes_processed: self.bytes_processed,
                phase: self.phase,
            }),
            size_bytes: self.size_bytes,
            checksum: self.checksum,
            compression: self.compression,
            encryption: self.encryption,
            engine_version: self.engine_version,
            tool_version: self.tool_version,
            format_version: self.format_version,
            created_at: self.created_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
            expiration_date: self.expiration_date,
            retention_period_in_days: self.retention_days,
            metadata: self.metadata.0,
            environment: Environment {
                tenant: self.tenant_name,
                project: self.project_name,
                stage: self.stage.parse().map_err(|_| corrupt("stage"))?,
                name: self.planet_name,
            },
            parts: self.parts.0,
            verification,
        })
    }
}

/// A validated create request.
pub struct NewBackup {
    pub mechanism: Mechanism,
    pub method: Method,
    pub planet_class: Option<PlanetClass>,
    pub temporary: bool,
    pub retention_days: Option<i32>,
    pub metadata: Metadata,
    pub max_attempts: i32,
    pub limits: Limits,
}

fn initial_parts() -> Vec<Part> {
    ["dump", "upload", "manifest"]
        .into_iter()
        .map(|n| Part {
            name: n.into(),
            state: "pending".into(),
            ..Part::default()
        })
        .collect()
}

/// Inserts the backup and its job in one transaction and wakes the workers.
pub async fn create(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    planet: PlanetId,
    prefix: impl FnOnce(BackupId) -> String,
    new: NewBackup,
) -> Result<Backup> {
    let mut tx = pool.begin().await?;
    let id = create_in(&mut tx, tenant, project, planet, prefix, &new, Utc::now()).await?;
    // Read inside the transaction: the answer shows the backup as created (`scheduled`), even
    // if a worker picks it up the moment it commits.
    let created = row(&mut *tx, tenant, project, id).await?.into_backup()?;
    tx.commit().await?;
    Ok(created)
}

/// Inserts the backup and its job inside the caller's transaction (the scheduler's, which also
/// advances the schedule). Refused past a tenant limit, or while the planet has a backup in flight.
pub async fn create_in(
    conn: &mut PgConnection,
    tenant: TenantId,
    project: ProjectId,
    planet: PlanetId,
    prefix: impl FnOnce(BackupId) -> String,
    new: &NewBackup,
    now: DateTime<Utc>,
) -> Result<BackupId> {
    let own = limits::lock_tenant(conn, tenant).await?;
    // The lock keeps the planet from being deleted under the new backup, and serialises this
    // create with a restore's, which takes it exclusively.
    let (planet_name, engine, class): (String, String, String) = sqlx::query_as(
        "SELECT name, engine, planet_class FROM planets WHERE tenant_id = $1 AND project_id = $2 AND id = $3 FOR SHARE",
    )
    .bind(tenant)
    .bind(project)
    .bind(planet)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("planet"))?;
    if let Some((busy, status)) = sqlx::query_as::<_, (BackupId, String)>(
        "SELECT id, status FROM backups WHERE planet_id = $1 AND status IN ('scheduled', 'running') LIMIT 1",
    )
    .bind(planet)
    .fetch_optional(&mut *conn)
    .await?
    {
        return Err(busy_conflict(busy, &status));
    }
    // A dump taken while a restore loads the planet would capture a half-restored database and
    // then count as its newest good backup.
    if let Some((restore, status)) = sqlx::query_as::<_, (uuid::Uuid, String)>(
        "SELECT id, status FROM restores WHERE planet_id = $1 AND status IN ('scheduled', 'running') LIMIT 1",
    )
    .bind(planet)
    .fetch_optional(&mut *conn)
    .await?
    {
        return Err(Error::Conflict(format!(
            "restore {restore} into this planet is {status}; a backup taken now would capture a \
             half-restored database; wait for the restore to finish"
        )));
    }
    limits::check(conn, tenant, own, new.limits, Creating::Backup).await?;
    let class = new
        .planet_class
        .unwrap_or(class.parse().map_err(|_| corrupt("planet class"))?);
    let id = BackupId::new();
    // A savepoint: losing the race for the planet must not abort the caller's transaction.
    let mut sp = conn.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO backups (id, tenant_id, project_id, planet_id, name, engine, mechanism, method, temporary,
                              status, storage_prefix, stage, retention_days, metadata, parts, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'scheduled', $10, $11, $12, $13, $14, $15)",
    )
    .bind(id)
    .bind(tenant)
    .bind(project)
    .bind(planet)
    .bind(backup_name(now, &planet_name))
    .bind(&engine)
    .bind(new.mechanism.as_str())
    .bind(new.method.as_str())
    .bind(new.temporary)
    .bind(prefix(id))
    .bind(class.as_str())
    .bind(retention_days(class, new.temporary, new.retention_days))
    .bind(sqlx::types::Json(&new.metadata))
    .bind(sqlx::types::Json(initial_parts()))
    .bind(now)
    .execute(&mut *sp)
    .await;
    if let Err(e) = inserted {
        sp.rollback().await?;
        if is_unique_violation(&e, "backups_one_active") {
            return Err(Error::Conflict("another backup of this planet is in progress".into()));
        }
        return Err(e.into());
    }
    sp.commit().await?;
    jobs::enqueue(
        conn,
        &NewJob {
            tenant,
            kind: BACKUP_JOB,
            subject: id.0,
            payload: serde_json::json!({}),
            max_attempts: new.max_attempts,
        },
    )
    .await?;
    Ok(id)
}

fn busy_conflict(busy: BackupId, status: &str) -> Error {
    Error::Conflict(format!(
        "backup {busy} of this planet is already {status}; wait for it to finish"
    ))
}

fn parse_status(status: Option<&str>) -> Result<Option<BackupStatus>> {
    status
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<BackupStatus>().map_err(|e| Error::invalid("status", e)))
        .transpose()
}

async fn list(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    planet: Option<PlanetId>,
    status: Option<&str>,
    page: PageRequest,
) -> Result<Page<Backup>> {
    let status = parse_status(status)?;
    let rows = sqlx::query_as::<_, Row>(concat!(
        backup_select!(),
        "WHERE b.tenant_id = $1 AND b.project_id = $2 AND ($3::uuid IS NULL OR b.planet_id = $3)
           AND (CASE WHEN $4::text IS NULL THEN b.status <> $7 ELSE b.status = $4 END)
           AND ($5::uuid IS NULL OR b.id < $5)
         ORDER BY b.id DESC LIMIT $6"
    ))
    .bind(tenant)
    .bind(project)
    .bind(planet)
    .bind(status.map(BackupStatus::as_str))
    .bind(page.before)
    .bind(page.fetch())
    .bind(BackupStatus::Deleted.as_str())
    .fetch_all(pool)
    .await?;
    let items = rows.into_iter().map(Row::into_backup).collect::<Result<Vec<_>>>()?;
    Ok(Page::from_rows(items, page, |b| b.id.0))
}

/// Backups of a planet, newest first; deleted ones only with `status=deleted`.
pub async fn list_for_planet(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    planet: PlanetId,
    status: Option<&str>,
    page: PageRequest,
) -> Result<Page<Backup>> {
    super::planets::get(pool, tenant, project, planet).await?;
    list(pool, tenant, project, Some(planet), status, page).await
}

/// Backups of every planet of a project, newest first.
pub async fn list_for_project(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    status: Option<&str>,
    page: PageRequest,
) -> Result<Page<Backup>> {
    super::projects::get(pool, tenant, project).await?;
    list(pool, tenant, project, None, status, page).await
}

pub async fn row<'e>(db: impl sqlx::PgExecutor<'e>, tenant: TenantId, project: ProjectId, id: BackupId) -> Result<Row> {
    sqlx::query_as::<_, Row>(concat!(
        backup_select!(),
        "WHERE b.tenant_id = $1 AND b.project_id = $2 AND b.id = $3"
    ))
    .bind(tenant)
    .bind(project)
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound("backup"))
}

pub async fn get(pool: &PgPool, tenant: TenantId, project: ProjectId, id: BackupId) -> Result<Backup> {
    row(pool, tenant, project, id).await?.into_backup()
}

/// Locks one of the tenant's backups for a change and reads its status.
async fn lock_status(
    conn: &mut PgConnection,
    tenant: TenantId,
    project: ProjectId,
    id: BackupId,
) -> Result<BackupStatus> {
    let status: String = sqlx::query_scalar(
        "SELECT status FROM backups WHERE tenant_id = $1 AND project_id = $2 AND id = $3 FOR UPDATE",
    )
    .bind(tenant)
    .bind(project)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("backup"))?;
    status.parse().map_err(|_| corrupt("status"))
}

/// Pins or unpins a backup. Only backups that still hold (or will hold) an archive can be pinned.
pub async fn set_pinned(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    id: BackupId,
    pinned: bool,
    audit: &super::audit::Entry,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    let status = lock_status(&mut tx, tenant, project, id).await?;
    if pinned
        && matches!(
            status,
            BackupStatus::Expired | BackupStatus::Deleting | BackupStatus::Deleted
        )
    {
        return Err(Error::Conflict(format!(
            "backup {id} is {status}; its archive is gone or going, so it cannot be pinned"
        )));
    }
    sqlx::query("UPDATE backups SET pinned = $2 WHERE id = $1")
        .bind(id)
        .bind(pinned)
        .execute(&mut *tx)
        .await?;
    audit.write(&mut tx, Some(id.0)).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes a backup: a queued one is cancelled outright; a running one is cancelled and its
/// leftovers removed once its worker has stopped; a finished one goes `deleting` and a job
/// removes its objects. Repeating the call changes nothing.
pub async fn request_delete(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    id: BackupId,
    settle: std::time::Duration,
    audit: &super::audit::Entry,
) -> Result<Backup> {
    let mut tx = pool.begin().await?;
    let status = lock_status(&mut tx, tenant, project, id).await?;
    if !matches!(status, BackupStatus::Deleted | BackupStatus::Deleting) {
        // A restore's create reads the backup row `FOR SHARE`, so the lock above orders the two.
        if let Some((restore, rstatus)) = sqlx::query_as::<_, (uuid::Uuid, String)>(
            "SELECT id, status FROM restores WHERE source_backup_id = $1 AND status IN ('scheduled', 'running') LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        {
            return Err(Error::Conflict(format!(
                "restore {restore} is {rstatus} and reads this backup's archive; delete the backup once the \
                 restore has finished"
            )));
        }
    }
    match status {
        BackupStatus::Deleted => {}
        // A deletion whose job gave up is started again; one under way is left alone.
        BackupStatus::Deleting => {
            let pending: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE subject_id = $1 AND kind = $2 AND state IN ('queued', 'running'))",
            )
            .bind(id.0)
            .bind(DELETE_JOB)
            .fetch_one(&mut *tx)
            .await?;
            if !pending {
                enqueue_delete(&mut tx, tenant, id).await?;
            }
        }
        BackupStatus::Scheduled
        | BackupStatus::Running
        | BackupStatus::Succeeded
        | BackupStatus::Failed
        | BackupStatus::Incomplete
        | BackupStatus::Missing
        | BackupStatus::Expired => {
            jobs::cancel_for_subject(&mut tx, id.0).await?;
            sqlx::query(
                "UPDATE backups SET status = 'deleting', phase = NULL,
                        error_message = CASE WHEN status IN ('scheduled', 'running') THEN 'cancelled by a delete request' ELSE error_message END
                 WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let job = enqueue_delete(&mut tx, tenant, id).await?;
            // A running dump stops at its next heartbeat; removing its leftovers waits for that.
            if status == BackupStatus::Running {
                sqlx::query("UPDATE jobs SET run_after = now() + make_interval(secs => $2) WHERE id = $1")
                    .bind(job)
                    .bind(settle.as_secs_f64())
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    audit.write(&mut tx, Some(id.0)).await?;
    tx.commit().await?;
    get(pool, tenant, project, id).await
}

/// Queues the job that removes a backup's objects (for DELETE and for expiry). Deleting is
/// idempotent, so it may take many attempts through a long storage outage.
pub async fn enqueue_delete(conn: &mut PgConnection, tenant: TenantId, id: BackupId) -> Result<JobId> {
    jobs::enqueue(
        conn,
        &NewJob {
            tenant,
            kind: DELETE_JOB,
            subject: id.0,
            payload: serde_json::json!({}),
            max_attempts: 100,
        },
    )
    .await
}

/// Summary of a planet's last operations.
pub async fn last_for_planet(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    planet: PlanetId,
) -> Result<Option<Backup>> {
    super::planets::get(pool, tenant, project, planet).await?;
    let row = sqlx::query_as::<_, Row>(concat!(
        backup_select!(),
        "WHERE b.tenant_id = $1 AND b.project_id = $2 AND b.planet_id = $3 AND b.status <> $4
         ORDER BY b.id DESC LIMIT 1"
    ))
    .bind(tenant)
    .bind(project)
    .bind(planet)
    .bind(BackupStatus::Deleted.as_str())
    .fetch_optional(pool)
    .await?;
    row.map(Row::into_backup).transpose()
}

// ---- worker side -------------------------------------------------------------------------

/// The backup a job serves, whatever its tenant (the job row names it).
pub async fn for_job(pool: &PgPool, tenant: TenantId, id: BackupId) -> Result<Row> {
    sqlx::query_as::<_, Row>(concat!(backup_select!(), "WHERE b.tenant_id = $1 AND b.id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(Error::NotFound("backup"))
}

/// The data key of a backup's archive as the catalog holds it: the tenant key version that
/// wraps it, and the wrapped key. `None` for an archive stored in the clear.
pub async fn wrapped_data_key(pool: &PgPool, tenant: TenantId, id: BackupId) -> Result<Option<(i32, Vec<u8>)>> {
    let row: Option<(Option<i32>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT data_key_version, data_key FROM backups WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(pool)
            .await?;
    match row {
        None => Err(Error::NotFound("backup")),
        Some((Some(v), Some(k))) => Ok(Some((v, k))),
        Some(_) => Ok(None),
    }
}

/// Whether the attempt holding `$2`/`$3` (job id and lease token) still runs the job; `$4` is
/// the running state. Progress is written in single statements fenced by this.
macro_rules! lease_holds {
    () => {
        "EXISTS (SELECT 1 FROM jobs WHERE id = $2 AND lease_token = $3 AND state = $4)"
    };
}

pub async fn mark_running(pool: &PgPool, id: BackupId, lease: Lease) -> Result<bool> {
    Ok(sqlx::query(concat!(
        "UPDATE backups SET status = $5, phase = 'connecting', bytes_processed = 0, error_message = NULL,
                started_at = COALESCE(started_at, now())
         WHERE id = $1 AND status = ANY($6) AND ",
        lease_holds!()
    ))
    .bind(id)
    .bind(lease.job)
    .bind(lease.token)
    .bind(JobState::Running.as_str())
    .bind(BackupStatus::Running.as_str())
    .bind(BackupStatus::names(&BackupStatus::IN_FLIGHT))
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Progress and step states, written every few seconds while the dump streams.
pub async fn report(
    pool: &PgPool,
    id: BackupId,
    lease: Lease,
    bytes: u64,
    phase: &str,
    parts: &[Part],
) -> Result<bool> {
    let n = sqlx::query(concat!(
        "UPDATE backups SET bytes_processed = $5, phase = $6, parts = $7
         WHERE id = $1 AND status = $8 AND ",
        lease_holds!()
    ))
    .bind(id)
    .bind(lease.job)
    .bind(lease.token)
    .bind(JobState::Running.as_str())
    .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
    .bind(phase)
    .bind(sqlx::types::Json(parts))
    .bind(BackupStatus::Running.as_str())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// What a successful backup records.
pub struct Success<'a> {
    pub object_key: &'a str,
    pub size_bytes: u64,
    pub checksum: &'a str,
    pub engine_version: &'a str,
    pub tool_version: &'a str,
    pub format_version: u32,
    pub bytes_processed: u64,
    pub parts: &'a [Part],
    /// Rows per table counted while dumping, when they could be counted.
    pub table_counts: Option<&'a TableCounts>,
    /// `none`, or `age` with the archive's data key wrapped by this tenant key version.
    pub encryption: &'a str,
    pub data_key: Option<(i32, &'a [u8])>,
}

/// Marks the backup succeeded and completes its job, in one transaction fenced by the lease.
/// `false`: the attempt does not own the job (or the backup is no longer running); nothing
/// was written.
pub async fn succeed(pool: &PgPool, id: BackupId, lease: Lease, s: &Success<'_>) -> Result<bool> {
    let Some(mut fenced) = jobs::lock(pool, lease).await? else {
        return Ok(false);
    };
    let done = sqlx::query_as::<_, BackupEvent>(sqlx::AssertSqlSafe(format!(
        "UPDATE backups SET status = $2, phase = NULL, error_message = NULL, completed_at = now(),
                object_key = $4, size_bytes = $5, checksum = $6, engine_version = $7, tool_version = $8,
                format_version = $9, bytes_processed = $10, parts = $11, table_counts = $12,
                encryption = $13, data_key_version = $14, data_key = $15,
                expiration_date = now() + make_interval(days => retention_days)
         WHERE id = $1 AND status = $3 RETURNING {BACKUP_EVENT_COLUMNS}"
    )))
    .bind(id)
    .bind(BackupStatus::Succeeded.as_str())
    .bind(BackupStatus::Running.as_str())
    .bind(s.object_key)
    .bind(i64::try_from(s.size_bytes).unwrap_or(i64::MAX))
    .bind(s.checksum)
    .bind(s.engine_version)
    .bind(s.tool_version)
    .bind(i32::try_from(s.format_version).unwrap_or(i32::MAX))
    .bind(i64::try_from(s.bytes_processed).unwrap_or(i64::MAX))
    .bind(sqlx::types::Json(s.parts))
    .bind(s.table_counts.map(sqlx::types::Json))
    .bind(s.encryption)
    .bind(s.data_key.map(|(v, _)| v))
    .bind(s.data_key.map(|(_, k)| k))
    .fetch_optional(fenced.conn())
    .await?;
    let Some(done) = done else {
        return Ok(false);
    };
    done.notify(fenced.conn(), EventType::BackupSucceeded).await?;
    fenced.complete().await?;
    Ok(true)
}

fn subject() -> super::subject::Subject {
    super::subject::Subject {
        table: "backups",
        noun: "backup",
        event_columns: BACKUP_EVENT_COLUMNS,
        running: BackupStatus::Running.as_str(),
        in_flight: BackupStatus::names(&BackupStatus::IN_FLIGHT),
        given_up: |cause| BackupStatus::given_up(cause).as_str(),
        orphaned: BackupStatus::Incomplete.as_str(),
        job_kind: BACKUP_JOB,
        failed: EventType::BackupFailed,
    }
}

/// The backup's side of its job's end, inside the queue's fenced transaction: a retry leaves
/// it `running` with the error shown; giving up ends it `failed` or `incomplete`. A backup no
/// longer in flight (being deleted) is left alone.
pub(crate) async fn job_ended(conn: &mut PgConnection, id: BackupId, end: SubjectEnd<'_>) -> Result<()> {
    super::subject::job_ended::<BackupEvent>(conn, &subject(), id.0, end).await
}

/// Ends in-flight backups that have no live backup job: `incomplete`, with the last error of
/// their job if there was one.
pub(crate) async fn repair_orphaned(conn: &mut PgConnection, live_jobs: &[&str]) -> Result<u64> {
    super::subject::repair_orphaned::<BackupEvent>(conn, &subject(), live_jobs).await
}

/// Queues the deletion of backups left `deleting` without a live deletion job.
pub(crate) async fn requeue_stranded_deletions(conn: &mut PgConnection, live_jobs: &[&str]) -> Result<u64> {
    let stranded: Vec<(BackupId, TenantId)> = sqlx::query_as(
        "SELECT b.id, b.tenant_id FROM backups b
         WHERE b.status = $1
           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.subject_id = b.id AND j.kind = $2 AND j.state = ANY($3))
         LIMIT 100 FOR UPDATE OF b SKIP LOCKED",
    )
    .bind(BackupStatus::Deleting.as_str())
    .bind(DELETE_JOB)
    .bind(live_jobs)
    .fetch_all(&mut *conn)
    .await?;
    for (id, tenant) in &stranded {
        enqueue_delete(conn, *tenant, *id).await?;
    }
    Ok(stranded.len() as u64)
}

/// Ends the fenced transaction of a deletion: `update` the row (`$1` the backup), complete the
/// job. `false`: the attempt does not own the job, or the row was not in the expected status.
async fn end_deletion(
    pool: &PgPool,
    lease: Lease,
    update: sqlx::query::Query<'_, Postgres, PgArguments>,
) -> Result<bool> {
    let Some(mut fenced) = jobs::lock(pool, lease).await? else {
        return Ok(false);
    };
    if update.execute(fenced.conn()).await?.rows_affected() != 1 {
        return Ok(false);
    }
    fenced.complete().await?;
    Ok(true)
}

/// The last step of a delete: a tombstone remains. Completes the deletion job.
pub async fn mark_deleted(pool: &PgPool, id: BackupId, lease: Lease) -> Result<bool> {
    let update =
        // The data key goes with the archive from the catalog (a copy of the archive still
        // opens with the tenant's key, until the tenant is deleted).
        sqlx::query(
            "UPDATE backups SET status = $2, size_bytes = NULL, phase = NULL, data_key = NULL, data_key_version = NULL
             WHERE id = $1 AND status = $3",
        )
            .bind(id)
            .bind(BackupStatus::Deleted.as_str())
            .bind(BackupStatus::Deleting.as_str());
    end_deletion(pool, lease, update).await
}

/// The last step of expiring a backup: its objects are gone, the row stays `expired`.
/// Completes the deletion job.
pub async fn mark_purged(pool: &PgPool, id: BackupId, lease: Lease) -> Result<bool> {
    let update = sqlx::query(
        "UPDATE backups SET object_key = NULL, phase = NULL, data_key = NULL, data_key_version = NULL
         WHERE id = $1 AND status = $2",
    )
    .bind(id)
    .bind(BackupStatus::Expired.as_str());
    end_deletion(pool, lease, update).await
}

// ---- verification ------------------------------------------------------------------------

/// Whether a verification of the backup is queued or running.
pub(crate) async fn verification_pending(conn: &mut PgConnection, id: BackupId) -> Result<bool> {
    Ok(
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE subject_id = $1 AND kind = $2 AND state = ANY($3))",
        )
        .bind(id.0)
        .bind(VERIFY_JOB)
        .bind(JobState::names(&JobState::LIVE))
        .fetch_one(&mut *conn)
        .await?,
    )
}

/// Queues a verification of a backup, inside the caller's transaction.
pub async fn enqueue_verification(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: BackupId,
    max_attempts: i32,
) -> Result<JobId> {
    jobs::enqueue(
        conn,
        &NewJob {
            tenant,
            kind: VERIFY_JOB,
            subject: id.0,
            payload: serde_json::json!({}),
            max_attempts,
        },
    )
    .await
}

/// Asks for a verification of one of the tenant's backups: it must be `succeeded`, and not be
/// verified already at this moment (409 otherwise). Returns the backup as it stands.
pub async fn request_verification(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    id: BackupId,
    max_attempts: i32,
    audit: &super::audit::Entry,
) -> Result<Backup> {
    let mut tx = pool.begin().await?;
    let status = lock_status(&mut tx, tenant, project, id).await?;
    if status != BackupStatus::Succeeded {
        return Err(Error::Conflict(format!(
            "backup {id} is {status}; only a succeeded backup can be verified"
        )));
    }
    if verification_pending(&mut tx, id).await? {
        return Err(Error::Conflict(format!(
            "a verification of backup {id} is already queued or running"
        )));
    }
    enqueue_verification(&mut tx, tenant, id, max_attempts).await?;
    audit.write(&mut tx, Some(id.0)).await?;
    let backup = row(&mut *tx, tenant, project, id).await?.into_backup()?;
    tx.commit().await?;
    Ok(backup)
}

/// After a backup of `planet` succeeded: queues its verification when the planet's schedule
/// asks for every Nth backup and N succeeded backups have been taken since the last one queued
/// for verification (or ever, without one). Returns the job queued, if any.
pub async fn verify_if_due(pool: &PgPool, planet: PlanetId, id: BackupId, max_attempts: i32) -> Result<Option<JobId>> {
    // Most planets have no such policy: one read, without a transaction, says so.
    let wanted: Option<Option<i32>> = sqlx::query_scalar("SELECT verify_every FROM schedules WHERE planet_id = $1")
        .bind(planet)
        .fetch_optional(pool)
        .await?;
    if wanted.flatten().is_none() {
        return Ok(None);
    }
    let mut tx = pool.begin().await?;
    let every: Option<i32> = sqlx::query_scalar("SELECT verify_every FROM schedules WHERE planet_id = $1 FOR UPDATE")
        .bind(planet)
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
    let Some(every) = every else { return Ok(None) };
    // Backups since the newest one that was verified or is being verified, this one included.
    let (tenant, since): (TenantId, i64) = sqlx::query_as(
        "SELECT b.tenant_id, (SELECT count(*) FROM backups x
                 WHERE x.planet_id = b.planet_id AND x.status IN ('succeeded', 'expired', 'missing')
                   AND x.id > COALESCE((SELECT v.id FROM backups v
                                        WHERE v.planet_id = b.planet_id AND v.id < b.id
                                          AND (v.verification IS NOT NULL OR EXISTS (
                                               SELECT 1 FROM jobs j WHERE j.subject_id = v.id AND j.kind = $2))
                                        ORDER BY v.id DESC LIMIT 1),
                                       '00000000-0000-0000-0000-000000000000'::uuid)
                   AND x.id <= b.id)
         FROM backups b WHERE b.id = $1",
    )
    .bind(id)
    .bind(VERIFY_JOB)
    .fetch_one(&mut *tx)
    .await?;
    // Locked as an on-demand verification locks it, so the two cannot both queue one.
    sqlx::query("SELECT 1 FROM backups WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if since < i64::from(every) || verification_pending(&mut tx, id).await? {
        return Ok(None);
    }
    let job = enqueue_verification(&mut tx, tenant, id, max_attempts).await?;
    tx.commit().await?;
    Ok(Some(job))
}

/// Records a verification's outcome on its backup (and, when it failed, an audit event), and
/// completes the job, in one transaction fenced by the lease. `false`: the attempt does not own
/// the job any more; nothing was written.
pub async fn record_verification(pool: &PgPool, id: BackupId, lease: Lease, v: &BackupVerification) -> Result<bool> {
    let Some(mut fenced) = jobs::lock(pool, lease).await? else {
        return Ok(false);
    };
    write_verification(fenced.conn(), id, v).await?;
    fenced.complete().await?;
    Ok(true)
}

async fn write_verification(conn: &mut PgConnection, id: BackupId, v: &BackupVerification) -> Result<()> {
    let tenant: Option<TenantId> =
        sqlx::query_scalar("UPDATE backups SET verification = $2 WHERE id = $1 RETURNING tenant_id")
            .bind(id)
            .bind(sqlx::types::Json(v))
            .fetch_optional(&mut *conn)
            .await?;
    if let (Some(tenant), VerificationStatus::Failed) = (tenant, v.status) {
        super::audit::Entry {
            tenant,
            actor: "svalbard".into(),
            role: crate::auth::Role::Admin,
            platform: true,
            client_address: None,
            action: "backup.verification.failed",
            resource_type: "backup",
            outcome: super::audit::Outcome::Success,
        }
        .write(conn, Some(id.0))
        .await?;
    }
    Ok(())
}

/// A verification job's end, inside the queue's fenced transaction: giving up is recorded as a
/// failed verification with the job's error; a retry changes nothing the tenant sees.
pub(crate) async fn verification_ended(conn: &mut PgConnection, id: BackupId, end: SubjectEnd<'_>) -> Result<()> {
    if let SubjectEnd::Failed { error, .. } = end {
        let started: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT first_claimed_at FROM jobs WHERE subject_id = $1 AND kind = $2 ORDER BY created_at DESC LIMIT 1",
        )
        .bind(id.0)
        .bind(VERIFY_JOB)
        .fetch_optional(&mut *conn)
        .await?
        .flatten();
        let now = Utc::now();
        let took = started.map_or(0, |s| (now - s).num_milliseconds().max(0));
        write_verification(conn, id, &crate::verification::failed(error, now, took)).await?;
    }
    Ok(())
}

/// Seconds since the newest verified backup of each planet that has one, with its ids, for
/// the gauge.
pub async fn last_verified(pool: &PgPool) -> Result<Vec<(TenantId, ProjectId, PlanetId, DateTime<Utc>)>> {
    Ok(sqlx::query_as(
        "SELECT tenant_id, project_id, planet_id, max((verification->>'at')::timestamptz)
         FROM backups WHERE verification->>'status' = 'verified' AND status <> 'deleted'
         GROUP BY tenant_id, project_id, planet_id",
    )
    .fetch_all(pool)
    .await?)
}
