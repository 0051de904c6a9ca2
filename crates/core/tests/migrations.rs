//! Migrations are idempotent, and processes starting together do not break each other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::{Connection, PgConnection, PgPool};

#[tokio::test]
async fn concurrent_and_repeated_migrations_succeed() {
    let server = svalbard_testkit::server_url();
    let name = format!("svalbard_t_mig_{}", uuid::Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("{server}/{name}");
    let runs = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let pool = PgPool::connect(&url).await.unwrap();
            svalbard_core::db::migrate(&pool).await
        })
    });
    for run in futures_util::future::join_all(runs).await {
        run.unwrap().unwrap();
    }
    let pool = PgPool::connect(&url).await.unwrap();
    svalbard_core::db::migrate(&pool).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        applied,
        i64::try_from(svalbard_core::db::MIGRATOR.iter().count()).unwrap()
    );
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
        .execute(&mut admin)
        .await
        .unwrap();
}
