//! The job loop against a real PostgreSQL, with handlers of kinds only these tests register:
//! a panic ends its attempt, a lease that cannot be renewed stops the attempt before it runs
//! out, and a destructive step sees a lost lease.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::PgPool;
use svalbard_core::config::Config;
use svalbard_core::ids::TenantId;
use svalbard_core::jobs::{self, NewJob};
use svalbard_worker::runner::{Handler, JobContext, JobError, Worker};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn setup(kind: &'static str) -> (PgPool, Uuid) {
    let (pool, _) = svalbard_testkit::fresh_pool().await.unwrap();
    let tenant = TenantId::new();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
        .bind(tenant)
        .bind(format!("t{}", tenant.0.simple()))
        .execute(&pool)
        .await
        .unwrap();
    let subject = Uuid::now_v7();
    let mut conn = pool.acquire().await.unwrap();
    jobs::enqueue(
        &mut conn,
        &NewJob {
            tenant,
            kind,
            subject,
            payload: serde_json::json!({}),
            max_attempts: 1,
        },
    )
    .await
    .unwrap();
    (pool, subject)
}

fn worker(pool: &PgPool, lease_secs: u64) -> Worker {
    let config = Config::from_defaults_with(serde_json::json!({ "worker": {
        "lease_secs": lease_secs, "heartbeat_secs": 1, "poll_secs": 1, "backoff_base_secs": 1,
    }, "maintenance": { "enabled": false } }))
    .unwrap();
    Worker::new(pool.clone(), config.worker)
}

async fn job(pool: &PgPool, subject: Uuid) -> (String, Option<String>, Option<chrono::DateTime<chrono::Utc>>) {
    sqlx::query_as("SELECT state, last_error, lease_until FROM jobs WHERE subject_id = $1")
        .bind(subject)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until the job is in `state`, or panics after `limit`.
async fn wait_state(pool: &PgPool, subject: Uuid, state: &str, limit: Duration) -> Option<String> {
    let started = Instant::now();
    loop {
        let (s, error, _) = job(pool, subject).await;
        if s == state {
            return error;
        }
        assert!(started.elapsed() < limit, "the job is {s}, not {state}: {error:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Panics;

#[async_trait]
impl Handler for Panics {
    async fn run(&self, _ctx: &JobContext, _cancel: CancellationToken) -> Result<(), JobError> {
        let name = "ååååååååååååååååååååååååååååååå";
        // A tenant's name cut at a byte inside a character.
        let cut = &name[..name.len().min(41)];
        Err(JobError::Transient(cut.to_owned()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_attempt_ends_its_job_with_a_clear_error_and_stops_renewing_its_lease() {
    let (pool, subject) = setup("panics").await;
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        worker(&pool, 3)
            .with_handler("panics", Arc::new(Panics))
            .run(stop.clone()),
    );
    let error = wait_state(&pool, subject, "failed", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        error.contains("internal error") && error.contains("byte index"),
        "{error}"
    );
    let (_, _, lease_until) = job(&pool, subject).await;
    assert!(lease_until.is_none(), "the lease is still held");
    stop.cancel();
    run.await.unwrap().unwrap();
}

/// Records when the attempt was stopped, and whether the lease was still valid then.
struct Waits(Arc<Mutex<Option<bool>>>);

#[async_trait]
impl Handler for Waits {
    async fn run(&self, ctx: &JobContext, cancel: CancellationToken) -> Result<(), JobError> {
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(Duration::from_secs(60)) => return Ok(()),
        }
        let valid: bool = sqlx::query_scalar("SELECT lease_until > now() FROM jobs WHERE id = $1")
            .bind(ctx.job.id)
            .fetch_one(&ctx.pool)
            .await
            .unwrap();
        *self.0.lock().unwrap() = Some(valid);
        Err(JobError::Transient("stopped".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_cannot_renew_its_lease_stops_before_the_lease_runs_out() {
    let (pool, subject) = setup("waits").await;
    let seen = Arc::new(Mutex::new(None));
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        worker(&pool, 4)
            .with_handler("waits", Arc::new(Waits(seen.clone())))
            .run(stop.clone()),
    );
    wait_state(&pool, subject, "running", Duration::from_secs(10)).await;
    // Every renewal now fails, as with a control database that refuses writes.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER refuse_jobs BEFORE UPDATE ON jobs FOR EACH STATEMENT EXECUTE FUNCTION refuse();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let started = Instant::now();
    while seen.lock().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(10), "the attempt went on");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        *seen.lock().unwrap(),
        Some(true),
        "stopped only after the lease ran out"
    );
    sqlx::raw_sql("DROP TRIGGER refuse_jobs ON jobs")
        .execute(&pool)
        .await
        .unwrap();
    stop.cancel();
    run.await.unwrap().unwrap();
}

/// A destructive step asks first; here the job is taken over just before.
struct Checks(Arc<Mutex<Option<bool>>>);

#[async_trait]
impl Handler for Checks {
    async fn run(&self, ctx: &JobContext, _cancel: CancellationToken) -> Result<(), JobError> {
        let before = ctx.ensure_lease().await.is_ok();
        sqlx::query("UPDATE jobs SET lease_token = $2 WHERE id = $1")
            .bind(ctx.job.id)
            .bind(Uuid::new_v4())
            .execute(&ctx.pool)
            .await
            .unwrap();
        let after = ctx.ensure_lease().await;
        *self.0.lock().unwrap() = Some(before && after.is_err());
        after
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destructive_step_sees_that_the_lease_was_lost() {
    let (pool, subject) = setup("checks").await;
    let seen = Arc::new(Mutex::new(None));
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        worker(&pool, 5)
            .with_handler("checks", Arc::new(Checks(seen.clone())))
            .run(stop.clone()),
    );
    let started = Instant::now();
    while seen.lock().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(10), "the handler did not run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(*seen.lock().unwrap(), Some(true));
    // The attempt's failure is not written over the job's new owner.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(job(&pool, subject).await.0, "running");
    stop.cancel();
    run.await.unwrap().unwrap();
}
