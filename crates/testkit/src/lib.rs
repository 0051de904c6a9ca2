//! Test support. Every test gets its own control database, cloned from a template that holds
//! the migrated schema (one template per schema version, built once under an advisory lock so
//! parallel test processes do not collide).

pub mod app;
pub mod source;

use secrecy::SecretString;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use svalbard_core::config::Config;

/// Server the tests use; `TEST_PG_SERVER` overrides it.
#[must_use]
pub fn server_url() -> String {
    std::env::var("TEST_PG_SERVER").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Name of the template for the current set of migrations.
fn template_name() -> String {
    let mut h = Sha256::new();
    for m in svalbard_core::db::MIGRATOR.iter() {
        h.update(m.version.to_le_bytes());
        h.update(&*m.checksum);
    }
    format!("svalbard_tpl_{}", &hex::encode(h.finalize())[..16])
}

async fn admin() -> anyhow::Result<PgConnection> {
    Ok(PgConnection::connect(&format!("{}/postgres", server_url())).await?)
}

/// A fresh, migrated, empty control database; returns its URL.
pub async fn fresh_database() -> anyhow::Result<String> {
    let template = template_name();
    let mut conn = admin().await?;
    // Serialise template creation across test processes.
    sqlx::query("SELECT pg_advisory_lock(724311)")
        .execute(&mut conn)
        .await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&template)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        let building = format!("{template}_building");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {building}")))
            .execute(&mut conn)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {building}")))
            .execute(&mut conn)
            .await?;
        let pool = PgPool::connect(&format!("{}/{building}", server_url())).await?;
        svalbard_core::db::migrate(&pool).await?;
        pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {building} RENAME TO {template}"
        )))
        .execute(&mut conn)
        .await?;
    }
    let name = format!("svalbard_t_{}", uuid::Uuid::now_v7().simple());
    let created = sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE {template}"
    )))
    .execute(&mut conn)
    .await;
    sqlx::query("SELECT pg_advisory_unlock(724311)")
        .execute(&mut conn)
        .await?;
    created?;
    Ok(format!("{}/{name}", server_url()))
}

/// A pool on a fresh control database.
pub async fn fresh_pool() -> anyhow::Result<(PgPool, String)> {
    let url = fresh_database().await?;
    let pool = PgPoolOptions::new().max_connections(8).connect(&url).await?;
    Ok((pool, url))
}

pub const HS256_SECRET: &str = "test-secret-test-secret-test-secret-0123456789";
pub const SEAL_KEYS: &str = "t1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// S3 settings of the test server, from `S3_ENDPOINT`, `S3_BUCKET`, `S3_ACCESS_KEY_ID`,
/// `S3_SECRET_ACCESS_KEY` and `S3_REGION`, with a per-test prefix.
#[must_use]
pub fn s3_settings() -> serde_json::Value {
    let var = |k: &str| std::env::var(k).ok();
    serde_json::json!({
        "endpoint": var("S3_ENDPOINT"),
        "bucket": var("S3_BUCKET").unwrap_or_else(|| "svalbard-test".into()),
        "region": var("S3_REGION").unwrap_or_else(|| "garage".into()),
        "access_key_id": var("S3_ACCESS_KEY_ID"),
        "secret_access_key": var("S3_SECRET_ACCESS_KEY"),
        "force_path_style": true,
        "prefix": format!("test-{}", uuid::Uuid::now_v7().simple()),
    })
}

/// What the tests' planets and sources live on: this machine. The control database stays
/// refused even so, as everywhere.
pub const LOOPBACK: &[&str] = &["127.0.0.0/8", "::1"];

/// Test configuration on `database_url`, listening on a free port (metrics too), merged with
/// `overrides`. Loopback targets are allowed; `{"targets": {"allow": []}}` restores the default.
pub fn config(database_url: &str, overrides: serde_json::Value) -> anyhow::Result<Config> {
    let mut base = serde_json::json!({
        "database_url": database_url,
        "http": { "listen": "127.0.0.1:0", "public_url": "", "metrics_listen": "127.0.0.1:0" },
        "targets": { "allow": LOOPBACK },
        "auth": { "hs256_secret": HS256_SECRET },
        "crypto": { "keys": SEAL_KEYS },
        "s3": s3_settings(),
        "worker": { "poll_secs": 1, "heartbeat_secs": 1, "lease_secs": 5, "backoff_base_secs": 1 },
    });
    merge(&mut base, overrides);
    Config::from_defaults_with(base)
}

fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// Object storage of the test configuration.
#[must_use]
pub fn storage(config: &Config) -> svalbard_core::storage::Storage {
    svalbard_core::storage::Storage::new(&config.s3)
}

/// A whole object of the test bucket, read into memory (tests only read small ones).
pub async fn object(storage: &svalbard_core::storage::Storage, key: &str) -> Vec<u8> {
    let out = storage
        .client
        .get_object()
        .bucket(&storage.bucket)
        .key(key)
        .send()
        .await;
    let out = out.unwrap_or_else(|e| panic!("GetObject {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
    out.body
        .collect()
        .await
        .map(|b| b.into_bytes().to_vec())
        .unwrap_or_else(|e| panic!("reading {key}: {e}"))
}

/// Fails loudly when the tests that need object storage run without one.
pub fn require_s3() {
    assert!(
        std::env::var_os("S3_ENDPOINT").is_some(),
        "these tests need a real S3 server: run them through scripts/test.sh, or set S3_ENDPOINT, S3_BUCKET, \
         S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY and S3_REGION"
    );
}

/// Wraps a secret for APIs that want one.
#[must_use]
pub fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}
