//! The job queue: a PostgreSQL table, claimed with `FOR UPDATE SKIP LOCKED` under a lease that
//! a heartbeat keeps alive. Completion is fenced by `locked_by`, so a worker that lost its lease
//! (paused, partitioned, presumed dead) cannot overwrite the outcome of the one that took over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::Result;
use crate::ids::{JobId, TenantId};

/// Channel on which new jobs are announced; a hint only, polling is the truth.
pub const CHANNEL: &str = "svalbard_jobs";

#[derive(Debug, Clone)]
pub struct NewJob {
    pub tenant: TenantId,
    pub kind: &'static str,
    pub subject: Uuid,
    pub payload: serde_json::Value,
    pub max_attempts: i32,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub kind: String,
    pub subject_id: Uuid,
    pub payload: serde_json::Value,
    pub attempts: i32,
    pub max_attempts: i32,
    pub deadline: Option<DateTime<Utc>>,
}

/// Enqueues a job inside the caller's transaction (the one that writes the row it serves).
pub async fn enqueue(conn: &mut PgConnection, job: &NewJob) -> Result<JobId> {
    let id = JobId::new();
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, kind, subject_id, payload, max_attempts) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(job.tenant)
    .bind(job.kind)
    .bind(job.subject)
    .bind(&job.payload)
    .bind(job.max_attempts)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(job.kind)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

fn interval(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Claims the next runnable job. Tenants with fewer running jobs go first, so one tenant's
/// long queue cannot starve another's single job.
pub async fn claim(pool: &PgPool, worker: &str, lease: Duration, deadline: Duration) -> Result<Option<Job>> {
    let job = sqlx::query_as::<_, Job>(
        "WITH running AS (
             SELECT tenant_id, count(*) AS n FROM jobs WHERE state = 'running' GROUP BY tenant_id
         ), candidate AS (
             SELECT j.id FROM jobs j LEFT JOIN running r ON r.tenant_id = j.tenant_id
             WHERE j.state = 'queued' AND j.run_after <= now()
             ORDER BY COALESCE(r.n, 0), j.run_after, j.id
             LIMIT 1
             FOR UPDATE OF j SKIP LOCKED
         )
         UPDATE jobs SET state = 'running', locked_by = $1,
                lease_until = now() + make_interval(secs => $2),
                deadline = now() + make_interval(secs => $3),
                attempts = attempts + 1, updated_at = now()
         FROM candidate WHERE jobs.id = candidate.id
         RETURNING jobs.id, jobs.tenant_id, jobs.kind, jobs.subject_id, jobs.payload, jobs.attempts,
                   jobs.max_attempts, jobs.deadline",
    )
    .bind(worker)
    .bind(interval(lease))
    .bind(interval(deadline))
    .fetch_optional(pool)
    .await?;
    Ok(job)
}

/// Extends the lease. `false` means the job is no longer ours (cancelled or taken over): stop it.
pub async fn heartbeat(pool: &PgPool, job: JobId, worker: &str, lease: Duration) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE jobs SET lease_until = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1 AND locked_by = $2 AND state = 'running'",
    )
    .bind(job)
    .bind(worker)
    .bind(interval(lease))
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Marks the job done, fenced: returns `false` if another worker owns it now.
pub async fn complete(conn: &mut PgConnection, job: JobId, worker: &str) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE jobs SET state = 'succeeded', locked_by = NULL, lease_until = NULL, finished_at = now(), updated_at = now()
         WHERE id = $1 AND locked_by = $2 AND state = 'running'",
    )
    .bind(job)
    .bind(worker)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Ends a worker's fenced transaction: when its update of the job's subject hit the row
/// (`updated == 1`), completes the job and commits both; otherwise rolls everything back.
/// `false`: the job is not ours any more.
pub async fn complete_with(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    updated: u64,
    job: JobId,
    worker: &str,
) -> Result<bool> {
    if updated != 1 || !complete(&mut tx, job, worker).await? {
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// Exponential backoff with ±25 % jitter, capped at an hour.
#[must_use]
pub fn backoff(base: Duration, attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(0);
    let raw = base
        .saturating_mul(2u32.saturating_pow(exp))
        .min(Duration::from_secs(3600));
    raw.mul_f64(rand::thread_rng().gen_range(0.75..1.25))
}

/// Outcome of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Requeued for another attempt.
    WillRetry,
    /// No attempt left, or the error is permanent.
    Final,
    /// Not ours any more; nothing was written.
    Lost,
}

/// Records a failed attempt, fenced. Transient errors are retried while attempts remain.
pub async fn fail(
    conn: &mut PgConnection,
    job: &Job,
    worker: &str,
    error: &str,
    transient: bool,
    backoff_base: Duration,
) -> Result<Failure> {
    let retry = transient && job.attempts < job.max_attempts;
    let delay = backoff(backoff_base, job.attempts);
    let n = sqlx::query(
        "UPDATE jobs SET
            state = CASE WHEN $3 THEN 'queued' ELSE 'failed' END,
            run_after = CASE WHEN $3 THEN now() + make_interval(secs => $4) ELSE run_after END,
            finished_at = CASE WHEN $3 THEN NULL ELSE now() END,
            locked_by = NULL, lease_until = NULL, last_error = $5, updated_at = now()
         WHERE id = $1 AND locked_by = $2 AND state = 'running'",
    )
    .bind(job.id)
    .bind(worker)
    .bind(retry)
    .bind(interval(delay))
    .bind(error)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(match (n, retry) {
        (0, _) => Failure::Lost,
        (_, true) => Failure::WillRetry,
        (_, false) => Failure::Final,
    })
}

/// Gives a job back to the queue untouched (graceful shutdown): the attempt does not count.
pub async fn release(pool: &PgPool, job: JobId, worker: &str) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE jobs SET state = 'queued', attempts = GREATEST(attempts - 1, 0), locked_by = NULL,
                lease_until = NULL, run_after = now(), updated_at = now()
         WHERE id = $1 AND locked_by = $2 AND state = 'running'",
    )
    .bind(job)
    .bind(worker)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// A job whose worker vanished and that has no attempt left.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Abandoned {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub kind: String,
    pub subject_id: Uuid,
    pub last_error: Option<String>,
}

/// Requeues jobs whose lease expired (with backoff), and fails those with no attempt left or
/// past their deadline. Returns the failed ones so their subjects can be marked.
pub async fn recover_expired(pool: &PgPool, backoff_base: Duration) -> Result<Vec<Abandoned>> {
    sqlx::query(
        "UPDATE jobs SET state = 'queued', locked_by = NULL, lease_until = NULL,
                run_after = now() + make_interval(secs => LEAST(3600, $1 * power(2, LEAST(attempts - 1, 16)))
                                                         * (0.75 + random() * 0.5)),
                last_error = 'the worker running this job stopped answering (lease expired)', updated_at = now()
         WHERE state = 'running' AND lease_until < now()
           AND attempts < max_attempts AND (deadline IS NULL OR deadline > now())",
    )
    .bind(interval(backoff_base))
    .execute(pool)
    .await?;
    let abandoned = sqlx::query_as::<_, Abandoned>(
        "UPDATE jobs SET state = 'failed', locked_by = NULL, lease_until = NULL, finished_at = now(), updated_at = now(),
                last_error = CASE WHEN deadline IS NOT NULL AND deadline <= now()
                                  THEN 'the job ran past its deadline'
                                  ELSE 'the worker running this job stopped answering, and no attempt is left' END
         WHERE state = 'running' AND lease_until < now()
         RETURNING id, tenant_id, kind, subject_id, last_error",
    )
    .fetch_all(pool)
    .await?;
    Ok(abandoned)
}

/// Cancels the queued or running jobs of a subject (e.g. a deleted backup). A running worker
/// learns it at its next heartbeat and stops.
pub async fn cancel_for_subject(conn: &mut PgConnection, subject: Uuid) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE jobs SET state = 'cancelled', locked_by = NULL, lease_until = NULL, finished_at = now(), updated_at = now()
         WHERE subject_id = $1 AND state IN ('queued', 'running')",
    )
    .bind(subject)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}
