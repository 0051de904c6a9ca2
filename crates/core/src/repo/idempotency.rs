//! `Idempotency-Key` records: the first request with a key reserves it, its response is stored,
//! and a retry with the same key and body gets that response again, for [`TTL_HOURS`]. The
//! request is kept only as a keyed fingerprint (see [`fingerprint`]), so the table reveals
//! nothing of the bodies (passwords included) to whoever reads it without the key.

use sqlx::PgPool;

use crate::error::Result;

/// How long a key is remembered; a retry after that runs the request anew.
pub const TTL_HOURS: i32 = 24;

/// Expired records removed per reservation, so the table stays small without a sweeper.
const PRUNE_BATCH: i64 = 100;

/// HMAC-SHA256 over the parts, each followed by a NUL, as hex.
#[must_use]
pub fn fingerprint(key: &[u8; 32], parts: &[&[u8]]) -> String {
    let mut data = Vec::new();
    for p in parts {
        data.extend_from_slice(p);
        data.push(0);
    }
    hex::encode(crate::crypto::mac(key, &data))
}

/// What a stored key says about a new request.
pub enum Lookup {
    /// The key is new and now reserved for this request.
    Reserved,
    /// The same request was answered before: replay this.
    Replay {
        status: u16,
        location: Option<String>,
        body: serde_json::Value,
    },
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key is still being processed.
    InProgress,
}

#[derive(sqlx::FromRow)]
struct Stored {
    request_hash: String,
    status: Option<i32>,
    location: Option<String>,
    body: Option<serde_json::Value>,
}

pub async fn reserve(pool: &PgPool, scope: &str, key: &str, request_hash: &str) -> Result<Lookup> {
    // This key if it expired, and a few other expired ones while at it.
    sqlx::query(
        "DELETE FROM idempotency_keys
         WHERE created_at < now() - make_interval(hours => $3)
           AND ((scope = $1 AND key = $2)
                OR (scope, key) IN (SELECT scope, key FROM idempotency_keys
                                    WHERE created_at < now() - make_interval(hours => $3)
                                    ORDER BY created_at LIMIT $4))",
    )
    .bind(scope)
    .bind(key)
    .bind(TTL_HOURS)
    .bind(PRUNE_BATCH)
    .execute(pool)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(request_hash)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Lookup::Reserved);
    }
    let row: Option<Stored> = sqlx::query_as(
        "SELECT request_hash, status, location, body FROM idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => Lookup::InProgress,
        Some(stored) if stored.request_hash != request_hash => Lookup::Mismatch,
        Some(Stored {
            status: Some(status),
            location,
            body,
            ..
        }) => Lookup::Replay {
            status: u16::try_from(status).unwrap_or(200),
            location,
            body: body.unwrap_or(serde_json::Value::Null),
        },
        Some(_) => Lookup::InProgress,
    })
}

pub async fn complete(
    pool: &PgPool,
    scope: &str,
    key: &str,
    status: u16,
    location: Option<&str>,
    body: &serde_json::Value,
) -> Result<()> {
    sqlx::query("UPDATE idempotency_keys SET status = $3, location = $4, body = $5 WHERE scope = $1 AND key = $2")
        .bind(scope)
        .bind(key)
        .bind(i32::from(status))
        .bind(location)
        .bind(body)
        .execute(pool)
        .await?;
    Ok(())
}

/// Frees a key whose request failed, so the client may retry with it.
pub async fn release(pool: &PgPool, scope: &str, key: &str) -> Result<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL")
        .bind(scope)
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}
