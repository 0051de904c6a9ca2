//! The job queue against a real PostgreSQL: claims, leases, fencing, retries and fairness.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use sqlx::PgPool;
use svalbard_core::ids::TenantId;
use svalbard_core::jobs::{self, Failure, NewJob};

const LEASE: Duration = Duration::from_secs(30);
const DEADLINE: Duration = Duration::from_secs(3600);

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

async fn enqueue(pool: &PgPool, tenant: TenantId, max_attempts: i32) -> uuid::Uuid {
    let subject = uuid::Uuid::now_v7();
    let mut conn = pool.acquire().await.unwrap();
    jobs::enqueue(
        &mut conn,
        &NewJob {
            tenant,
            kind: "test",
            subject,
            payload: serde_json::json!({}),
            max_attempts,
        },
    )
    .await
    .unwrap();
    subject
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

#[tokio::test]
async fn claim_complete_is_fenced_against_other_workers() {
    let (pool, _) = svalbard_testkit::fresh_pool().await.unwrap();
    let t = tenant(&pool).await;
    enqueue(&pool, t, 3).await;
    let job = jobs::claim(&pool, "w1", LEASE, DEADLINE).await.unwrap().unwrap();
    assert_eq!(job.attempts, 1);
    assert!(
        jobs::claim(&pool, "w2", LEASE, DEADLINE).await.unwrap().is_none(),
        "claimed twice"
    );
    let mut conn = pool.acquire().await.unwrap();
    assert!(
        !jobs::complete(&mut conn, job.id, "w2").await.unwrap(),
        "a stranger completed the job"
    );
    assert!(jobs::heartbeat(&pool, job.id, "w1", LEASE).await.unwrap());
    assert!(jobs::complete(&mut conn, job.id, "w1").await.unwrap());
    assert!(
        !jobs::complete(&mut conn, job.id, "w1").await.unwrap(),
        "completed twice"
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_zombie_is_fenced_out() {
    let (pool, _) = svalbard_testkit::fresh_pool().await.unwrap();
    let t = tenant(&pool).await;
    enqueue(&pool, t, 3).await;
    let first = jobs::claim(&pool, "zombie", LEASE, DEADLINE).await.unwrap().unwrap();
    expire_leases(&pool).await;
    assert!(
        jobs::recover_expired(&pool, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    // Backoff: not runnable yet.
    assert!(jobs::claim(&pool, "w2", LEASE, DEADLINE).await.unwrap().is_none());
    make_runnable(&pool).await;
    let second = jobs::claim(&pool, "w2", LEASE, DEADLINE).await.unwrap().unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempts, 2);
    // The zombie wakes up: its heartbeat, failure and completion are all refused.
    assert!(!jobs::heartbeat(&pool, first.id, "zombie", LEASE).await.unwrap());
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        jobs::fail(&mut conn, &first, "zombie", "late", true, Duration::ZERO)
            .await
            .unwrap(),
        Failure::Lost
    );
    assert!(!jobs::complete(&mut conn, first.id, "zombie").await.unwrap());
    assert!(jobs::complete(&mut conn, second.id, "w2").await.unwrap());
}

#[tokio::test]
async fn retries_back_off_and_the_last_attempt_is_final() {
    let (pool, _) = svalbard_testkit::fresh_pool().await.unwrap();
    let t = tenant(&pool).await;
    let subject = enqueue(&pool, t, 2).await;
    let mut conn = pool.acquire().await.unwrap();
    let job = jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();
    assert_eq!(
        jobs::fail(&mut conn, &job, "w", "storage down", true, Duration::from_secs(60))
            .await
            .unwrap(),
        Failure::WillRetry
    );
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
    let abandoned = jobs::recover_expired(&pool, Duration::ZERO).await.unwrap();
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].subject_id, subject);
    assert!(
        abandoned[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("no attempt is left")
    );
    assert!(!jobs::heartbeat(&pool, job.id, "w", LEASE).await.unwrap());

    // A permanent error is final at once.
    enqueue(&pool, t, 5).await;
    let job = jobs::claim(&pool, "w", LEASE, DEADLINE).await.unwrap().unwrap();
    assert_eq!(
        jobs::fail(&mut conn, &job, "w", "bad password", false, Duration::ZERO)
            .await
            .unwrap(),
        Failure::Final
    );
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
    assert!(!jobs::heartbeat(&pool, job.id, "w", LEASE).await.unwrap());
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
