//! The job queue against a real PostgreSQL: claims, leases, fencing, outcomes written with
//! their subjects, recovery, repair, pruning and fairness.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use sqlx::PgPool;
use svalbard_core::ids::TenantId;
use svalbard_core::jobs::{self, Applied, FailureKind, Lease, NewJob, Outcome, RetryPolicy};
use svalbard_core::repo::backups::{BACKUP_JOB, DELETE_JOB};
use svalbard_core::repo::restores::RESTORE_JOB;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);
const DEADLINE: Duration = Duration::from_secs(3600);

fn policy(base_secs: u64) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_secs(base_secs),
        max_delay: Duration::from_secs(600),
        horizon: Duration::from_secs(3600),
    }
}

fn transient(error: &str) -> Outcome {
    Outcome::Failed {
        error: error.into(),
        kind: FailureKind::Transient,
    }
}

async fn tenant(pool: &PgPool) -> TenantId {
    let id = TenantId::new();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
        .bind(id)
        .bind(format!("t{}", id.0.simple()))
        .execute(pool)
        .await
        .unwrap();
    id
}

async fn enqueue_kind(pool: &PgPool, tenant: TenantId, kind: &'static str, subject: Uuid, max_attempts: i32) {
    let mut conn = pool.acquire().await.unwrap();
    jobs::enqueue(
        &mut conn,
        &NewJob {
            tenant,
            kind,
            subject,
            payload: serde_json::json!({}),
            max_attempts,
        },
    )
    .await
    .unwrap();
}

async fn enqueue(pool: &PgPool, tenant: TenantId, max_attempts: i32) -> Uuid {
    let subject = Uuid::now_v7();
    enqueue_kind(pool, tenant, "test", subject, max_attempts).await;
    subject
}

/// A project and a planet of the tenant, as rows.
async fn planet(pool: &PgPool, tenant: TenantId) -> (Uuid, Uuid) {
    let (project, planet) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query("INSERT INTO projects (id, tenant_id, name) VALUES ($1, $2, $3)")
        .bind(project)
        .bind(tenant)
        .bind(format!("p{}", project.simple()))
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO planets (id, tenant_id, project_id, name, engine, planet_class, host, port, database_name, db_user, sslmode)
         VALUES ($1, $2, $3, 'orders', 'postgresql', 'dev', '127.0.0.1', 5432, 'orders', 'postgres', 'disable')",
    )
    .bind(planet)
    .bind(tenant)
    .bind(project)
    .execute(pool)
    .await
    .unwrap();
    (project, planet)
}

/// A backup row in `status`, on a planet of its own.
async fn backup_row(pool: &PgPool, tenant: TenantId, status: &str) -> Uuid {
    let (project, planet) = planet(pool, tenant).await;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO backups (id, tenant_id, project_id, planet_id, name, engine, method, status, storage_prefix, stage, retention_days)
         VALUES ($1, $2, $3, $4, 'b', 'postgresql', 'manual', $5, 'x/', 'dev', 7)",
    )
    .bind(id)
    .bind(tenant)
    .bind(project)
    .bind(planet)
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn restore_row(pool: &PgPool, tenant: TenantId, status: &str) -> Uuid {
    let (project, planet) = planet(pool, tenant).await;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO restores (id, tenant_id, project_id, planet_id, target_database, status)
         VALUES ($1, $2, $3, $4, 'orders', $5)",
    )
    .bind(id)
    .bind(tenant)
    .bind(project)
    .bind(planet)
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn backup_status(pool: &PgPool, id: Uuid) -> (String, Option<String>) {
    sqlx::query_as("SELECT status, error_message FROM backups WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn job_of(pool: &PgPool, subject: Uuid) -> (String, i32, Option<Uuid>) {
    sqlx::query_as(
        "SELECT state, attempts, lease_token FROM jobs WHERE subject_id = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(subject)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn expire_leases(pool: &PgPool) {
    sqlx::query("UPDATE jobs SET lease_until = now() - interval '1 second' WHERE state = 'running'")
        .execute(pool)
        .await
        .unwrap();
}

async fn make_runnable(pool: &PgPool) {
    sqlx::query("UPDATE jobs SET run_after = now() WHERE state = 'queued'")
        .execute(pool)
        .await
        .unwrap();
}

/// Makes every update of `table` fail, as a control-database failure in the middle of a
/// transaction would.
async fn break_updates_of(pool: &PgPool, table: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER refuse_{table} BEFORE UPDATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION refuse();"
    )))
    .execute(pool)
    .await
    .unwrap();
}

async fn repair_updates_of(pool: &PgPool, table: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TRIGGER refuse_{table} ON {table}")))
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn claim_and_finish_are_fenced_by_the_lease() {
    let (pool, _) = svalbard_testkit::fresh_pool().await.unwrap();
    let t = tenant(&pool).await;
    enqueue(&pool, t, 3).await;
    let job = jobs::claim(&pool, "w1", LEASE, DEADLINE).await.unwrap().unwrap();
    assert_eq!(job.attempts, 1);
    assert!(
        jobs::claim(&pool, "w2", LEASE, DEADLINE).await.unwrap().is_none(),
        "claimed twice"
    );
    let stranger = Lease {
        job: job.id,
        token: Uuid::new_v4(),
    };
    assert_eq!(
        jobs::finish(&pool, stranger, &Outcome::Succeeded, &policy(1))
            .await
            .unwrap(),
        Applied::Lost,
        "a stranger completed the job"
    );
    assert!(jobs::heartbeat(&pool, job.lease(), LEASE).await.unwrap());
    assert!(jobs::holds(&pool, job.lease(), Duration::from_secs(5)).await.unwrap());
    assert_eq!(
        jobs::finish(&pool, job.lease(), &Outcome::Succeeded, &policy(1))
            .await
            .unwrap(),
        Applied::Succeeded
    );
    assert_eq!(
        jobs::finish(&pool, job.lease(), &Outcome::Succeeded, &policy(1))
            .await
            .unwrap(),
        Applied::Lost,
        "completed twice"
    );
    assert!(!jobs::holds(&pool, job.lease(), Duration::ZERO).await.unwrap());
}

/// Every slot of a worker process shares the worker's id: the fence must be the claim.
#[tokio::test]
async fn an_attempt_that_lost_its_lease_is_fenced_out_even_when_its_own_worker_reclaimed_the_job() {
    let (pool, _) = svalbard_testkit::fresh_pool().await.unwrap();
    let t = tenant(&pool).await;
    enqueue(&pool, t, 3).await;
    let first = jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();
    expire_leases(&pool).await;
    let recovery = jobs::recover_expired(&pool, &policy(60)).await.unwrap();
    assert_eq!(
        (recovery.requeued, recovery.abandoned.len(), recovery.errors),
        (1, 0, 0)
    );
    // Backoff: not runnable yet.
    assert!(jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().is_none());
    make_runnable(&pool).await;
    let second = jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempts, 2);
    assert_ne!(second.lease_token, first.lease_token);
    // The first attempt wakes up in the same process: heartbeat and outcome are refused.
    assert!(!jobs::heartbeat(&pool, first.lease(), LEASE).await.unwrap());
    assert!(!jobs::holds(&pool, first.lease(), Duration::ZERO).await.unwrap());
    assert_eq!(
        jobs::finish(&pool, first.lease(), &transient("late"), &policy(0))
            .await
            .unwrap(),
        Applied::Lost
    );
    assert!(jobs::lock(&pool, first.lease()).await.unwrap().is_none());
    assert!(!jobs::release(&pool, first.lease()).await.unwrap());
    assert_eq!(
        jobs::finish(&pool, second.lease(), &Outcome::Succeeded, &policy(0))
            .await
            .unwrap(),
        Applied::Succeeded
    );
}

#[tokio::test]
async fn retries_back_off_and_the_last_attempt_is_final() {
    let (pool, _) = svalbard_testkit::fresh_pool().await.unwrap();
    let t = tenant(&pool).await;
    let subject = enqueue(&pool, t, 2).await;
    let job = jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();
    let Applied::WillRetry(delay) = jobs::finish(&pool, job.lease(), &transient("storage down"), &policy(60))
        .await
        .unwrap()
    else {
        panic!("not retried");
    };
    assert!((45..=75).contains(&delay.as_secs()), "backoff was {delay:?}");
    let run_after: f64 =
        sqlx::query_scalar("SELECT EXTRACT(EPOCH FROM run_after - now())::float8 FROM jobs WHERE id = $1")
            .bind(job.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!((40.0..80.0).contains(&run_after), "backoff was {run_after}s");
    make_runnable(&pool).await;
    let job = jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();
    // The lease of the last attempt expires: the job is abandoned, with its subject named.
    expire_leases(&pool).await;
    let recovery = jobs::recover_expired(&pool, &policy(0)).await.unwrap();
    assert_eq!(recovery.abandoned.len(), 1);
    assert_eq!(recovery.abandoned[0].subject_id, subject);
    assert!(recovery.abandoned[0].error.contains("stopped answering"));
    assert!(!jobs::heartbeat(&pool, job.lease(), LEASE).await.unwrap());
    assert_eq!(job_of(&pool, subject).await.0, "failed");

    // A permanent error is final at once.
    enqueue(&pool, t, 5).await;
    let job = jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();
    let permanent = Outcome::Failed {
        error: "bad password".into(),
        kind: FailureKind::Permanent,
    };
    assert_eq!(
        jobs::finish(&pool, job.lease(), &permanent, &policy(0)).await.unwrap(),
        Applied::Failed
    );
}

#[tokio::test]
async fn the_retry_horizon_ends_retries_long_before_the_attempts_run_out() {
    let (pool, _) = svalbard_testkit::fresh_pool().await.unwrap();
    let t = tenant(&pool).await;
    let subject = enqueue(&pool, t, 100).await;
    let job = jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();
    // The first attempt started 59 minutes ago: the next one would start past the hour.
    sqlx::query("UPDATE jobs SET first_claimed_at = now() - interval '59 minutes' WHERE id = $1")
        .bind(job.id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        jobs::finish(&pool, job.lease(), &transient("storage down"), &policy(120))
            .await
            .unwrap(),
        Applied::Failed
    );
    assert_eq!(job_of(&pool, subject).await.0, "failed");
}

/// The job's outcome and the backup's transition are one transaction: when writing the
/// backup fails, the job is not ended either (its lease expires and it is recovered), so a
/// backup can never be left `running` behind an ended job.
#[tokio::test]
async fn a_job_outcome_and_its_backups_transition_commit_together_or_not_at_all() {
    let (pool, _) = svalbard_testkit::fresh_pool().await.unwrap();
    let t = tenant(&pool).await;
    let backup = backup_row(&pool, t, "running").await;
    enqueue_kind(&pool, t, BACKUP_JOB, backup, 2).await;
    let job = jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();

    break_updates_of(&pool, "backups").await;
    let failed = jobs::finish(&pool, job.lease(), &transient("storage down"), &policy(0)).await;
    assert!(failed.is_err(), "{failed:?}");
    let (state, attempts, token) = job_of(&pool, backup).await;
    assert_eq!(
        (state.as_str(), attempts, token),
        ("running", 1, Some(job.lease_token)),
        "the job was ended without its backup"
    );
    repair_updates_of(&pool, "backups").await;

    // Retried: the backup stays running and shows why.
    assert!(matches!(
        jobs::finish(&pool, job.lease(), &transient("storage down"), &policy(0))
            .await
            .unwrap(),
        Applied::WillRetry(_)
    ));
    assert_eq!(
        backup_status(&pool, backup).await,
        ("running".into(), Some("storage down".into()))
    );
    // The last attempt gives up: the job fails and the backup is incomplete, together.
    make_runnable(&pool).await;
    let job = jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();
    break_updates_of(&pool, "backups").await;
    assert!(
        jobs::finish(&pool, job.lease(), &transient("still down"), &policy(0))
            .await
            .is_err()
    );
    assert_eq!(job_of(&pool, backup).await.0, "running");
    assert_eq!(backup_status(&pool, backup).await.0, "running");
    repair_updates_of(&pool, "backups").await;
    assert_eq!(
        jobs::finish(&pool, job.lease(), &transient("still down"), &policy(0))
            .await
            .unwrap(),
        Applied::Failed
    );
    assert_eq!(
        backup_status(&pool, backup).await,
        ("incomplete".into(), Some("still down".into()))
    );
    assert_eq!(job_of(&pool, backup).await.0, "failed");
}

#[tokio::test]
async fn recovery_goes_on_past_a_job_it_cannot_recover() {
    let (pool, _) = svalbard_testkit::fresh_pool().await.unwrap();
    let t = tenant(&pool).await;
    let restore = restore_row(&pool, t, "running").await;
    enqueue_kind(&pool, t, RESTORE_JOB, restore, 1).await;
    let backup = backup_row(&pool, t, "running").await;
    enqueue_kind(&pool, t, BACKUP_JOB, backup, 1).await;
    jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();
    jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();
    expire_leases(&pool).await;

    break_updates_of(&pool, "restores").await;
    let recovery = jobs::recover_expired(&pool, &policy(0)).await.unwrap();
    assert_eq!(recovery.errors, 1);
    assert_eq!(recovery.abandoned.len(), 1);
    assert_eq!(recovery.abandoned[0].subject_id, backup);
    assert_eq!(backup_status(&pool, backup).await.0, "incomplete");
    assert_eq!(
        job_of(&pool, restore).await.0,
        "running",
        "rolled back, tried again later"
    );

    repair_updates_of(&pool, "restores").await;
    let recovery = jobs::recover_expired(&pool, &policy(0)).await.unwrap();
    assert_eq!((recovery.errors, recovery.abandoned.len()), (0, 1));
    let status: String = sqlx::query_scalar("SELECT status FROM restores WHERE id = $1")
        .bind(restore)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "failed");
}

#[tokio::test]
async fn subjects_left_in_flight_behind_an_ended_job_are_repaired() {
    let (pool, _) = svalbard_testkit::fresh_pool().await.unwrap();
    let t = tenant(&pool).await;
    // Planted as a crash between two writes would have left them.
    let backup = backup_row(&pool, t, "running").await;
    enqueue_kind(&pool, t, BACKUP_JOB, backup, 1).await;
    let restore = restore_row(&pool, t, "scheduled").await;
    enqueue_kind(&pool, t, RESTORE_JOB, restore, 1).await;
    let deleting = backup_row(&pool, t, "deleting").await;
    enqueue_kind(&pool, t, DELETE_JOB, deleting, 1).await;
    sqlx::query(
        "UPDATE jobs SET state = 'failed', finished_at = now(), last_error = 'storage down'
         WHERE subject_id IN ($1, $2)",
    )
    .bind(backup)
    .bind(deleting)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE jobs SET state = 'cancelled', finished_at = now() WHERE subject_id = $1")
        .bind(restore)
        .execute(&pool)
        .await
        .unwrap();
    // Healthy ones are left alone.
    let healthy = backup_row(&pool, t, "running").await;
    enqueue_kind(&pool, t, BACKUP_JOB, healthy, 1).await;

    let repaired = jobs::repair_subjects(&pool).await.unwrap();
    assert_eq!(
        repaired,
        jobs::Repaired {
            backups: 1,
            restores: 1,
            deletions_requeued: 1
        }
    );
    let (status, error) = backup_status(&pool, backup).await;
    assert_eq!(status, "incomplete");
    assert!(error.unwrap().contains("storage down"));
    let status: String = sqlx::query_scalar("SELECT status FROM restores WHERE id = $1")
        .bind(restore)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "failed");
    assert_eq!(
        job_of(&pool, deleting).await.0,
        "queued",
        "the deletion is queued again"
    );
    assert_eq!(backup_status(&pool, healthy).await.0, "running");
    assert_eq!(jobs::repair_subjects(&pool).await.unwrap(), jobs::Repaired::default());
}

#[tokio::test]
async fn finished_jobs_are_pruned_after_their_retention() {
    let (pool, _) = svalbard_testkit::fresh_pool().await.unwrap();
    let t = tenant(&pool).await;
    let old = enqueue(&pool, t, 1).await;
    let recent = enqueue(&pool, t, 1).await;
    let waiting = enqueue(&pool, t, 1).await;
    sqlx::query("UPDATE jobs SET state = 'succeeded', finished_at = now() - interval '8 days' WHERE subject_id = $1")
        .bind(old)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET state = 'failed', finished_at = now() - interval '6 days' WHERE subject_id = $1")
        .bind(recent)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        jobs::prune(&pool, Duration::from_secs(7 * 86_400), 100).await.unwrap(),
        1
    );
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT subject_id FROM jobs ORDER BY created_at")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [recent, waiting]);
}

#[tokio::test]
async fn a_busy_tenant_does_not_starve_another() {
    let (pool, _) = svalbard_testkit::fresh_pool().await.unwrap();
    let busy = tenant(&pool).await;
    let quiet = tenant(&pool).await;
    for _ in 0..50 {
        enqueue(&pool, busy, 3).await;
    }
    enqueue(&pool, quiet, 3).await;
    let first = jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();
    assert_eq!(first.tenant_id, busy, "oldest job first");
    let second = jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();
    assert_eq!(second.tenant_id, quiet, "the quiet tenant waited behind the busy one");
}

#[tokio::test]
async fn cancellation_stops_the_heartbeat_and_concurrent_claims_never_overlap() {
    let (pool, _) = svalbard_testkit::fresh_pool().await.unwrap();
    let t = tenant(&pool).await;
    let subject = enqueue(&pool, t, 3).await;
    let job = jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(jobs::cancel_for_subject(&mut conn, subject).await.unwrap(), 1);
    assert!(!jobs::heartbeat(&pool, job.lease(), LEASE).await.unwrap());
    drop(conn);

    for _ in 0..200 {
        enqueue(&pool, t, 3).await;
    }
    let mut tasks = Vec::new();
    for w in 0..4 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) = jobs::claim(&pool, &format!("w{w}"), LEASE, DEADLINE).await.unwrap() {
                mine.push(job.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 200);
    assert_eq!(unique.len(), 200, "a job was claimed twice");
}
