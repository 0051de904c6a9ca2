//! The job queue, and the one place where the end of an attempt is written.
//!
//! A job serves one *subject* (a backup, a restore, a backup's deletion). Its life:
//!
//! ```text
//!            enqueue (in the transaction that creates the subject)
//!               │
//!               ▼
//!   ┌──────► queued ──claim──► running ──finish(Succeeded)──────────────► succeeded
//!   │                            │
//!   └── finish(Failed, transient)┤  (or its lease expired: recover_expired)
//!       while the retry policy   │
//!       allows another attempt   ├──finish(Failed, no retry left / permanent)──► failed
//!                                └──cancel_for_subject (the subject was deleted)──► cancelled
//! ```
//!
//! - **Claim.** [`claim`] takes the next runnable job with `FOR UPDATE SKIP LOCKED` and gives it
//!   a fresh [`Lease`] token. The token, not the worker, is the attempt's identity: every write
//!   the attempt makes (heartbeat, progress, its subject's transitions, its outcome) names it, so
//!   an attempt that lost its lease is refused even when the same process claimed the job again.
//! - **Heartbeat.** [`heartbeat`] renews `lease_until`; the worker stops an attempt that cannot
//!   renew before its lease runs out (see the worker's runner).
//! - **Outcome.** [`finish`] writes the job's outcome and its subject's transition in one
//!   transaction that first locks the job row for the lease ([`lock`]). A handler that commits
//!   a result of its own (a stored archive) does so through [`lock`] too, and completes the job
//!   in the same transaction ([`Fenced::complete`]). The subjects' state machines are
//!   [`crate::backup::BackupStatus`] and [`crate::restore::RestoreStatus`]; [`subject_ended`] is
//!   the only bridge from a job's end to them.
//! - **Retries.** [`RetryPolicy`]: exponential backoff with jitter, bounded by a number of
//!   attempts and by a horizon measured from the first attempt.
//! - **Recovery.** [`recover_expired`] handles each job whose lease expired in a transaction of
//!   its own (an error on one does not stop the others); [`repair_subjects`] finds subjects left
//!   in flight whose job has ended (or vanished) and ends them too.
//! - **Pruning.** [`prune`] deletes finished jobs after a retention period.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::string_enum;
use crate::error::Result;
use crate::ids::{BackupId, JobId, RestoreId, TenantId};
use crate::repo::{backups, restores};

/// Channel on which new jobs are announced; a hint only, polling is the truth.
pub const CHANNEL: &str = "svalbard_jobs";

string_enum!(
    /// `queued → running → succeeded | failed`, back to `queued` for a retry; `cancelled` from
    /// `queued` or `running` when the subject goes away.
    JobState {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl JobState {
    /// Not ended yet: waiting or running.
    pub const LIVE: [Self; 2] = [Self::Queued, Self::Running];
    /// Ended for good.
    pub const FINISHED: [Self; 3] = [Self::Succeeded, Self::Failed, Self::Cancelled];

    /// The states as text, to bind as a `text[]` parameter (`state = ANY($n)`).
    #[must_use]
    pub fn names(set: &[Self]) -> Vec<&'static str> {
        set.iter().map(|s| s.as_str()).collect()
    }
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub tenant: TenantId,
    pub kind: &'static str,
    pub subject: Uuid,
    pub payload: serde_json::Value,
    pub max_attempts: i32,
}

/// One claimed attempt of a job: the job and the token of this claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub job: JobId,
    pub token: Uuid,
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
    pub lease_token: Uuid,
}

impl Job {
    #[must_use]
    pub fn lease(&self) -> Lease {
        Lease {
            job: self.id,
            token: self.lease_token,
        }
    }
}

/// Enqueues a job inside the caller's transaction (the one that writes the row it serves).
pub async fn enqueue(conn: &mut PgConnection, job: &NewJob) -> Result<JobId> {
    let id = JobId::new();
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, kind, subject_id, payload, max_attempts, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(job.tenant)
    .bind(job.kind)
    .bind(job.subject)
    .bind(&job.payload)
    .bind(job.max_attempts)
    .bind(JobState::Queued.as_str())
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(job.kind)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Claims the next runnable job under a new lease. Tenants with fewer running jobs go first,
/// so one tenant's long queue cannot starve another's single job.
pub async fn claim(pool: &PgPool, worker: &str, lease: Duration, deadline: Duration) -> Result<Option<Job>> {
    let job = sqlx::query_as::<_, Job>(
        "WITH running AS (
             SELECT tenant_id, count(*) AS n FROM jobs WHERE state = $5 GROUP BY tenant_id
         ), candidate AS (
             SELECT j.id FROM jobs j LEFT JOIN running r ON r.tenant_id = j.tenant_id
             WHERE j.state = $6 AND j.run_after <= now()
             ORDER BY COALESCE(r.n, 0), j.run_after, j.id
             LIMIT 1
             FOR UPDATE OF j SKIP LOCKED
         )
         UPDATE jobs SET state = $5, locked_by = $1, lease_token = $4,
                lease_until = now() + make_interval(secs => $2),
                deadline = now() + make_interval(secs => $3),
                first_claimed_at = COALESCE(first_claimed_at, now()),
                attempts = attempts + 1, updated_at = now()
         FROM candidate WHERE jobs.id = candidate.id
         RETURNING jobs.id, jobs.tenant_id, jobs.kind, jobs.subject_id, jobs.payload, jobs.attempts,
                   jobs.max_attempts, jobs.deadline, jobs.lease_token",
    )
    .bind(worker)
    .bind(secs(lease))
    .bind(secs(deadline))
    .bind(Uuid::new_v4())
    .bind(JobState::Running.as_str())
    .bind(JobState::Queued.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(job)
}

/// Extends the lease. `false` means the attempt is no longer the job's (cancelled or taken
/// over): stop it.
pub async fn heartbeat(pool: &PgPool, lease: Lease, duration: Duration) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE jobs SET lease_until = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1 AND lease_token = $2 AND state = $4",
    )
    .bind(lease.job)
    .bind(lease.token)
    .bind(secs(duration))
    .bind(JobState::Running.as_str())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Whether the lease still holds for at least `margin`: checked before a destructive step.
pub async fn holds(pool: &PgPool, lease: Lease, margin: Duration) -> Result<bool> {
    Ok(sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND lease_token = $2 AND state = $3
                        AND lease_until > now() + make_interval(secs => $4))",
    )
    .bind(lease.job)
    .bind(lease.token)
    .bind(JobState::Running.as_str())
    .bind(secs(margin))
    .fetch_one(pool)
    .await?)
}

/// What [`lock`] found of the job it locked.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Locked {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub kind: String,
    pub subject_id: Uuid,
    pub attempts: i32,
    pub max_attempts: i32,
    pub first_claimed_at: Option<DateTime<Utc>>,
    pub deadline: Option<DateTime<Utc>>,
}

/// A transaction that holds the job row locked for one lease: whatever is written through it
/// commits only if the attempt still owned the job.
pub struct Fenced {
    tx: Transaction<'static, Postgres>,
    pub job: Locked,
}

impl Fenced {
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Marks the job succeeded and commits everything written through this transaction.
    pub async fn complete(mut self) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET state = $2, locked_by = NULL, lease_until = NULL, lease_token = NULL,
                    finished_at = now(), updated_at = now()
             WHERE id = $1",
        )
        .bind(self.job.id)
        .bind(JobState::Succeeded.as_str())
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(())
    }

    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

const LOCKED_COLUMNS: &str = "id, tenant_id, kind, subject_id, attempts, max_attempts, first_claimed_at, deadline";

/// Begins a transaction that first locks the job row, if the lease still holds it. `None`:
/// the attempt is not the job's any more; nothing may be written for it.
pub async fn lock(pool: &PgPool, lease: Lease) -> Result<Option<Fenced>> {
    let mut tx = pool.begin().await?;
    let job = sqlx::query_as::<_, Locked>(sqlx::AssertSqlSafe(format!(
        "SELECT {LOCKED_COLUMNS} FROM jobs WHERE id = $1 AND lease_token = $2 AND state = $3 FOR UPDATE"
    )))
    .bind(lease.job)
    .bind(lease.token)
    .bind(JobState::Running.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    Ok(job.map(|job| Fenced { tx, job }))
}

// ---- retries ------------------------------------------------------------------------------

/// When a failed attempt is followed by another: exponential backoff from `base`, each delay
/// capped at `max_delay` and jittered by ±25 %, while fewer than `max_attempts` were made and
/// the next attempt would start within `horizon` of the first one.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max_delay: Duration,
    pub horizon: Duration,
}

impl RetryPolicy {
    /// The delay after the `attempts`-th attempt, before jitter.
    #[must_use]
    pub fn nominal_delay(&self, attempts: i32) -> Duration {
        let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(0);
        self.base.saturating_mul(2u32.saturating_pow(exp)).min(self.max_delay)
    }

    /// The jittered delay after the `attempts`-th attempt.
    #[must_use]
    pub fn delay(&self, attempts: i32) -> Duration {
        self.nominal_delay(attempts)
            .mul_f64(rand::thread_rng().gen_range(0.75..1.25))
    }

    /// The delay before the next attempt, or `None` when the job should give up.
    #[must_use]
    pub fn next(
        &self,
        attempts: i32,
        max_attempts: i32,
        first_claimed_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        if attempts >= max_attempts {
            return None;
        }
        let delay = self.delay(attempts);
        let started = first_claimed_at.unwrap_or(now);
        let spent = (now - started).to_std().unwrap_or_default();
        (spent + delay <= self.horizon).then_some(delay)
    }

    /// The nominal schedule: the delays before each retry, until the policy gives up.
    #[must_use]
    pub fn schedule(&self, max_attempts: i32) -> Vec<Duration> {
        let mut out = Vec::new();
        let mut spent = Duration::ZERO;
        for attempts in 1..max_attempts {
            let d = self.nominal_delay(attempts);
            if spent + d > self.horizon {
                break;
            }
            spent += d;
            out.push(d);
        }
        out
    }
}

// ---- outcomes -----------------------------------------------------------------------------

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Worth another attempt (storage unreachable, connection reset, ...).
    Transient,
    /// Retrying cannot help (bad credentials, invalid archive, ...).
    Permanent,
    /// The subject needs another version of the software (a newer archive format, ...).
    Incompatible,
}

/// What a handler's attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done. A handler with a result to record has already committed it with [`Fenced::complete`].
    Succeeded,
    Failed {
        error: String,
        kind: FailureKind,
    },
}

/// What [`finish`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Succeeded,
    /// Requeued; the next attempt runs after this delay.
    WillRetry(Duration),
    /// Ended for good.
    Failed,
    /// The attempt is not the job's any more; nothing was written.
    Lost,
}

/// How a job's end reaches its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectEnd<'a> {
    /// An attempt failed, another will follow.
    Retrying { error: &'a str },
    /// The job failed for good.
    Failed { error: &'a str, cause: Cause },
}

/// Why a job failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Retrying could not help.
    Permanent,
    /// Another version of the software is needed.
    Incompatible,
    /// Attempts or retry horizon used up (or the deadline passed).
    Exhausted,
}

/// Applies a job's end to its subject, inside the caller's (fenced) transaction: the only
/// bridge from the queue to the subjects' state machines.
pub async fn subject_ended(conn: &mut PgConnection, kind: &str, subject: Uuid, end: SubjectEnd<'_>) -> Result<()> {
    match kind {
        backups::BACKUP_JOB => backups::job_ended(conn, BackupId(subject), end).await,
        restores::RESTORE_JOB => restores::job_ended(conn, RestoreId(subject), end).await,
        backups::VERIFY_JOB => backups::verification_ended(conn, BackupId(subject), end).await,
        // A deletion that gives up leaves the backup `deleting`; `repair_subjects` queues
        // another, as deleting can be repeated.
        _ => Ok(()),
    }
}

async fn requeue(conn: &mut PgConnection, id: JobId, delay: Duration, error: &str) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = $2, run_after = now() + make_interval(secs => $3), finished_at = NULL,
                locked_by = NULL, lease_until = NULL, lease_token = NULL, last_error = $4, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(JobState::Queued.as_str())
    .bind(secs(delay))
    .bind(error)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn end_failed(conn: &mut PgConnection, id: JobId, error: &str) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = $2, finished_at = now(), locked_by = NULL, lease_until = NULL,
                lease_token = NULL, last_error = $3, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(JobState::Failed.as_str())
    .bind(error)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Fails or requeues a locked job, and tells its subject, in the caller's transaction.
async fn fail_locked(
    conn: &mut PgConnection,
    job: &Locked,
    error: &str,
    kind: FailureKind,
    policy: &RetryPolicy,
) -> Result<Applied> {
    let retry = match kind {
        FailureKind::Transient => policy.next(job.attempts, job.max_attempts, job.first_claimed_at, Utc::now()),
        FailureKind::Permanent | FailureKind::Incompatible => None,
    };
    if let Some(delay) = retry {
        requeue(conn, job.id, delay, error).await?;
        subject_ended(conn, &job.kind, job.subject_id, SubjectEnd::Retrying { error }).await?;
        return Ok(Applied::WillRetry(delay));
    }
    let cause = match kind {
        FailureKind::Transient => Cause::Exhausted,
        FailureKind::Permanent => Cause::Permanent,
        FailureKind::Incompatible => Cause::Incompatible,
    };
    give_up_locked(conn, job, error, cause).await
}

/// Fails a locked job for good, and its subject with it, in the caller's transaction.
async fn give_up_locked(conn: &mut PgConnection, job: &Locked, error: &str, cause: Cause) -> Result<Applied> {
    end_failed(conn, job.id, error).await?;
    subject_ended(conn, &job.kind, job.subject_id, SubjectEnd::Failed { error, cause }).await?;
    Ok(Applied::Failed)
}

/// Records the end of an attempt, and its subject's transition, in one transaction fenced by
/// the lease.
pub async fn finish(pool: &PgPool, lease: Lease, outcome: &Outcome, policy: &RetryPolicy) -> Result<Applied> {
    let Some(mut fenced) = lock(pool, lease).await? else {
        return Ok(Applied::Lost);
    };
    let applied = match outcome {
        Outcome::Succeeded => {
            fenced.complete().await?;
            return Ok(Applied::Succeeded);
        }
        Outcome::Failed { error, kind } => {
            let job = fenced.job.clone();
            fail_locked(fenced.conn(), &job, error, *kind, policy).await?
        }
    };
    fenced.commit().await?;
    Ok(applied)
}

/// Gives a job back to the queue untouched (graceful shutdown): the attempt does not count.
pub async fn release(pool: &PgPool, lease: Lease) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE jobs SET state = $3, attempts = GREATEST(attempts - 1, 0), locked_by = NULL,
                lease_until = NULL, lease_token = NULL, run_after = now(), updated_at = now()
         WHERE id = $1 AND lease_token = $2 AND state = $4",
    )
    .bind(lease.job)
    .bind(lease.token)
    .bind(JobState::Queued.as_str())
    .bind(JobState::Running.as_str())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

// ---- recovery -----------------------------------------------------------------------------

/// A job that ended for good in recovery; its handler may clean up outside the database.
#[derive(Debug, Clone)]
pub struct Abandoned {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub kind: String,
    pub subject_id: Uuid,
    pub error: String,
}

/// What [`recover_expired`] did.
#[derive(Debug, Default)]
pub struct Recovery {
    pub requeued: usize,
    pub abandoned: Vec<Abandoned>,
    /// Jobs whose recovery failed; tried again at the next pass.
    pub errors: usize,
}

const STOPPED_ANSWERING: &str = "the worker running this job stopped answering (lease expired)";

/// Requeues (with backoff) or fails each job whose lease expired, with its subject, one
/// transaction per job: one job's trouble does not keep the others stranded.
pub async fn recover_expired(pool: &PgPool, policy: &RetryPolicy) -> Result<Recovery> {
    let expired: Vec<JobId> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE state = $1 AND lease_until < now() ORDER BY lease_until LIMIT 500",
    )
    .bind(JobState::Running.as_str())
    .fetch_all(pool)
    .await?;
    let mut report = Recovery::default();
    for id in expired {
        match recover_one(pool, id, policy).await {
            Ok(None) => {}
            Ok(Some(None)) => report.requeued += 1,
            Ok(Some(Some(abandoned))) => report.abandoned.push(abandoned),
            Err(e) => {
                tracing::warn!(job_id = %id, error = %e, "recovering a job whose lease expired failed");
                report.errors += 1;
            }
        }
    }
    Ok(report)
}

/// `None`: nothing to do (recovered meanwhile); `Some(None)`: requeued; `Some(Some(_))`: failed.
async fn recover_one(pool: &PgPool, id: JobId, policy: &RetryPolicy) -> Result<Option<Option<Abandoned>>> {
    let mut tx = pool.begin().await?;
    let Some(job) = sqlx::query_as::<_, Locked>(sqlx::AssertSqlSafe(format!(
        "SELECT {LOCKED_COLUMNS} FROM jobs WHERE id = $1 AND state = $2 AND lease_until < now()
         FOR UPDATE SKIP LOCKED"
    )))
    .bind(id)
    .bind(JobState::Running.as_str())
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    let (error, applied) = if job.deadline.is_some_and(|d| d <= Utc::now()) {
        let error = "the job ran past its deadline";
        (error, give_up_locked(&mut tx, &job, error, Cause::Exhausted).await?)
    } else {
        let error = STOPPED_ANSWERING;
        (
            error,
            fail_locked(&mut tx, &job, error, FailureKind::Transient, policy).await?,
        )
    };
    tx.commit().await?;
    Ok(Some(match applied {
        Applied::WillRetry(_) => None,
        _ => Some(Abandoned {
            id: job.id,
            tenant_id: job.tenant_id,
            kind: job.kind,
            subject_id: job.subject_id,
            error: error.to_owned(),
        }),
    }))
}

/// What [`repair_subjects`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Repaired {
    pub backups: u64,
    pub restores: u64,
    pub deletions_requeued: u64,
}

/// Ends the subjects left in flight with no live job behind them (its job ended, or was pruned,
/// without the subject's transition), and queues the deletion of backups left `deleting`
/// without one. Nothing should be found; this is the net under everything else.
pub async fn repair_subjects(pool: &PgPool) -> Result<Repaired> {
    let live = JobState::names(&JobState::LIVE);
    let mut tx = pool.begin().await?;
    let backups = backups::repair_orphaned(&mut tx, &live).await?;
    let restores = restores::repair_orphaned(&mut tx, &live).await?;
    let deletions_requeued = backups::requeue_stranded_deletions(&mut tx, &live).await?;
    tx.commit().await?;
    Ok(Repaired {
        backups,
        restores,
        deletions_requeued,
    })
}

/// Cancels the queued or running jobs of a subject (e.g. a deleted backup). A running worker
/// learns it at its next heartbeat and stops.
pub async fn cancel_for_subject(conn: &mut PgConnection, subject: Uuid) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE jobs SET state = $2, locked_by = NULL, lease_until = NULL, lease_token = NULL,
                finished_at = now(), updated_at = now()
         WHERE subject_id = $1 AND state = ANY($3)",
    )
    .bind(subject)
    .bind(JobState::Cancelled.as_str())
    .bind(JobState::names(&JobState::LIVE))
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Deletes up to `batch` jobs that finished more than `age` ago.
pub async fn prune(pool: &PgPool, age: Duration, batch: i64) -> Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM jobs WHERE id IN (
             SELECT id FROM jobs WHERE finished_at < now() - make_interval(secs => $1) AND state = ANY($2)
             LIMIT $3)",
    )
    .bind(secs(age))
    .bind(JobState::names(&JobState::FINISHED))
    .bind(batch)
    .execute(pool)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(base: u64, max: u64, horizon: u64) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(base),
            max_delay: Duration::from_secs(max),
            horizon: Duration::from_secs(horizon),
        }
    }

    #[test]
    fn the_default_schedule_outlasts_an_hour_long_outage_without_exceeding_it() {
        let p = policy(5, 600, 3600);
        let s: Vec<u64> = p.schedule(20).iter().map(Duration::as_secs).collect();
        assert_eq!(s, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600, 600]);
        let total: u64 = s.iter().sum();
        assert!((3000..=3600).contains(&total), "{total}");
        // The number of attempts bounds it too.
        assert_eq!(p.schedule(4).len(), 3);
    }

    #[test]
    fn jitter_stays_within_a_quarter_and_the_horizon_is_measured_from_the_first_attempt() {
        let p = policy(10, 600, 3600);
        for attempts in 1..12 {
            let nominal = p.nominal_delay(attempts).as_secs_f64();
            let d = p.delay(attempts).as_secs_f64();
            assert!(
                d >= nominal * 0.75 && d <= nominal * 1.25,
                "{attempts}: {d} vs {nominal}"
            );
        }
        let now = Utc::now();
        assert!(p.next(1, 20, Some(now), now).is_some());
        assert!(p.next(20, 20, Some(now), now).is_none(), "attempts used up");
        let long_ago = now - chrono::Duration::seconds(3590);
        assert!(p.next(2, 20, Some(long_ago), now).is_none(), "past the horizon");
    }
}
