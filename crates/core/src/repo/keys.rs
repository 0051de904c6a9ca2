//! Tenant keys: the versions of each tenant's archive key, sealed by the master key ring (see
//! [`crate::envelope`]). The newest version that is not retired encrypts new archives; every
//! version opens the archives written under it until the tenant is deleted.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::fk_to_not_found;
use crate::crypto::{KeyRing, Sealed};
use crate::envelope::TenantKey;
use crate::error::{Error, Result};
use crate::ids::TenantId;

/// A version of a tenant's key as the API shows it: never the secret, unless exported.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersion {
    pub version: i32,
    /// The age recipient (public key) archives of this version are encrypted to.
    #[schema(example = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p")]
    pub recipient: String,
    pub created_at: DateTime<Utc>,
    /// When a newer version took over; archives written under this one still open with it.
    pub retired_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    version: i32,
    recipient: String,
    master_key_id: String,
    sealed: Vec<u8>,
    created_at: DateTime<Utc>,
    retired_at: Option<DateTime<Utc>>,
}

impl Row {
    fn open(&self, ring: &KeyRing, tenant: TenantId) -> Result<TenantKey> {
        let sealed = Sealed {
            key_id: self.master_key_id.clone(),
            bytes: self.sealed.clone(),
        };
        TenantKey::open(ring, tenant.0, self.version, &sealed)
            .map_err(|e| Error::Other(e.context(format!("tenant key version {} cannot be opened", self.version))))
    }

    fn info(&self) -> KeyVersion {
        KeyVersion {
            version: self.version,
            recipient: self.recipient.clone(),
            created_at: self.created_at,
            retired_at: self.retired_at,
        }
    }
}

const COLUMNS: &str = "version, recipient, master_key_id, sealed, created_at, retired_at";

/// Counts what happened to tenant keys: created, rotated, exported, resealed, reseal_failed.
fn count(operation: &'static str, n: u64) {
    metrics::counter!("svalbard_tenant_key_operations_total", "operation" => operation).increment(n);
}

async fn rows(conn: &mut PgConnection, tenant: TenantId) -> Result<Vec<Row>> {
    Ok(sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenant_keys WHERE tenant_id = $1 ORDER BY version DESC"
    )))
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?)
}

async fn insert(conn: &mut PgConnection, ring: &KeyRing, tenant: TenantId, key: &TenantKey) -> Result<bool> {
    let sealed = key.seal(ring, tenant.0)?;
    let inserted = sqlx::query(
        "INSERT INTO tenant_keys (tenant_id, version, recipient, master_key_id, sealed)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, version) DO NOTHING",
    )
    .bind(tenant)
    .bind(key.version)
    .bind(key.recipient().to_string())
    .bind(&sealed.key_id)
    .bind(&sealed.bytes)
    .execute(&mut *conn)
    .await
    .map_err(|e| fk_to_not_found(e, "tenant"))?
    .rows_affected();
    if inserted == 1 && key.version == 1 {
        count("created", 1);
    }
    Ok(inserted == 1)
}

/// The key new archives of the tenant are encrypted with; the first one is made on first use.
pub async fn current(pool: &PgPool, ring: &KeyRing, tenant: TenantId) -> Result<TenantKey> {
    let mut conn = pool.acquire().await?;
    if let Some(row) = newest(&mut conn, tenant).await? {
        return row.open(ring, tenant);
    }
    // Two first backups at once both try; the one whose row lands is the key, for both.
    insert(&mut conn, ring, tenant, &TenantKey::generate(1)).await?;
    newest(&mut conn, tenant)
        .await?
        .ok_or(Error::NotFound("tenant key"))?
        .open(ring, tenant)
}

async fn newest(conn: &mut PgConnection, tenant: TenantId) -> Result<Option<Row>> {
    Ok(sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenant_keys WHERE tenant_id = $1 AND retired_at IS NULL ORDER BY version DESC LIMIT 1"
    )))
    .bind(tenant)
    .fetch_optional(conn)
    .await?)
}

/// Every key of the tenant, newest first, opened.
pub async fn all(pool: &PgPool, ring: &KeyRing, tenant: TenantId) -> Result<Vec<TenantKey>> {
    let mut conn = pool.acquire().await?;
    rows(&mut conn, tenant)
        .await?
        .iter()
        .map(|r| r.open(ring, tenant))
        .collect()
}

/// What opens an archive the tenant uploads: any of its keys (a stored backup opens with its
/// own data key alone).
pub async fn upload_openers(pool: &PgPool, ring: &KeyRing, tenant: TenantId) -> Result<crate::envelope::Openers> {
    Ok(crate::envelope::Openers {
        tenant_keys: all(pool, ring, tenant).await?,
        data_key: None,
    })
}

/// The versions of the tenant's key, newest first, without their secrets.
pub async fn list(pool: &PgPool, tenant: TenantId) -> Result<Vec<KeyVersion>> {
    let mut conn = pool.acquire().await?;
    Ok(rows(&mut conn, tenant).await?.iter().map(Row::info).collect())
}

/// The key that opens one backup's data key in the catalog, and that data key.
pub async fn data_key(
    pool: &PgPool,
    ring: &KeyRing,
    tenant: TenantId,
    backup: Uuid,
    version: i32,
    wrapped: &[u8],
) -> Result<crate::envelope::DataKey> {
    let row = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenant_keys WHERE tenant_id = $1 AND version = $2"
    )))
    .bind(tenant)
    .bind(version)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("tenant key"))?;
    Ok(row.open(ring, tenant)?.unwrap(backup, wrapped)?)
}

/// Every key of the tenant with its secret, for an admin to keep: an archive downloaded from
/// the bucket then opens with standard tools alone. The export is audited.
pub async fn export(
    pool: &PgPool,
    ring: &KeyRing,
    tenant: TenantId,
    audit: &super::audit::Entry,
) -> Result<Vec<(KeyVersion, TenantKey)>> {
    let mut tx = pool.begin().await?;
    super::tenants::lock(&mut tx, tenant, false).await?;
    let mut found = rows(&mut tx, tenant).await?;
    if found.is_empty() {
        // A tenant that has not encrypted anything yet gets its key now, so the export is the
        // key of every archive to come too.
        insert(&mut tx, ring, tenant, &TenantKey::generate(1)).await?;
        found = rows(&mut tx, tenant).await?;
    }
    let keys = found
        .iter()
        .map(|r| Ok((r.info(), r.open(ring, tenant)?)))
        .collect::<Result<Vec<_>>>()?;
    audit.write(&mut tx, None).await?;
    tx.commit().await?;
    count("exported", 1);
    Ok(keys)
}

/// Makes a new version of the tenant's key the one that encrypts, and wraps every data key of
/// the tenant's stored backups under it in the same transaction (a backup still running then
/// commits under the version it started with, which stays). Archives are not rewritten; each
/// keeps in its own header the version it was written under, which the export still holds.
pub async fn rotate(
    pool: &PgPool,
    ring: &KeyRing,
    tenant: TenantId,
    audit: &super::audit::Entry,
) -> Result<(KeyVersion, u64)> {
    let mut tx = pool.begin().await?;
    super::tenants::lock(&mut tx, tenant, true).await?;
    let existing = rows(&mut tx, tenant).await?;
    let opened = existing
        .iter()
        .map(|r| Ok((r.version, r.open(ring, tenant)?)))
        .collect::<Result<std::collections::HashMap<_, _>>>()?;
    let next = TenantKey::generate(existing.first().map_or(1, |r| r.version + 1));
    if !insert(&mut tx, ring, tenant, &next).await? {
        return Err(Error::Conflict(
            "the tenant's key changed meanwhile (its first key was being made); rotate again".into(),
        ));
    }
    sqlx::query(
        "UPDATE tenant_keys SET retired_at = now() WHERE tenant_id = $1 AND version < $2 AND retired_at IS NULL",
    )
    .bind(tenant)
    .bind(next.version)
    .execute(&mut *tx)
    .await?;
    // Backups are locked in turn, so a backup committing meanwhile either waits for this
    // transaction or is already seen here.
    let wrapped: Vec<(Uuid, i32, Vec<u8>)> = sqlx::query_as(
        "SELECT id, data_key_version, data_key FROM backups
         WHERE tenant_id = $1 AND data_key IS NOT NULL FOR UPDATE",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    // Wrapped again in memory (a few dozen bytes a backup), written in batches.
    let mut ids = Vec::with_capacity(wrapped.len());
    let mut keys = Vec::with_capacity(wrapped.len());
    for (backup, version, data_key) in wrapped {
        match opened
            .get(&version)
            .ok_or_else(|| anyhow::anyhow!("it names tenant key version {version}, which does not exist"))
            .and_then(|old| old.unwrap(backup, &data_key))
        {
            Ok(key) => {
                ids.push(backup);
                keys.push(next.wrap(backup, &key)?);
            }
            // Left under the version it names, which stays: a damaged row must not block the
            // rotation of every other.
            Err(e) => tracing::error!(%tenant, backup_id = %backup, error = %e, "a data key cannot be wrapped again"),
        }
    }
    for (ids, keys) in ids.chunks(1000).zip(keys.chunks(1000)) {
        sqlx::query(
            "UPDATE backups b SET data_key = k.key, data_key_version = $3
             FROM unnest($1::uuid[], $2::bytea[]) AS k(id, key) WHERE b.id = k.id",
        )
        .bind(ids)
        .bind(keys)
        .bind(next.version)
        .execute(&mut *tx)
        .await?;
    }
    let rewrapped = ids.len() as u64;
    audit.write(&mut tx, None).await?;
    let info = rows(&mut tx, tenant)
        .await?
        .into_iter()
        .find(|r| r.version == next.version)
        .map(|r| r.info())
        .ok_or(Error::NotFound("tenant key"))?;
    tx.commit().await?;
    count("rotated", 1);
    Ok((info, rewrapped))
}

/// Seals again, with the ring's first master key, every tenant key sealed with another one:
/// after a master key is put first, the old one can be retired once this has run and logged no
/// key it could not seal. Archives are not touched. Returns how many keys were sealed again;
/// a key the ring cannot open is logged and left.
pub async fn reseal(pool: &PgPool, ring: &KeyRing) -> Result<u64> {
    let first = ring.ids().first().map(|s| (*s).to_owned()).unwrap_or_default();
    let stale: Vec<(TenantId, i32)> =
        sqlx::query_as("SELECT tenant_id, version FROM tenant_keys WHERE master_key_id <> $1")
            .bind(&first)
            .fetch_all(pool)
            .await?;
    let (mut done, mut failed) = (0u64, 0u64);
    for (tenant, version) in stale {
        let mut tx = pool.begin().await?;
        let row = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tenant_keys WHERE tenant_id = $1 AND version = $2 AND master_key_id <> $3 FOR UPDATE"
        )))
        .bind(tenant)
        .bind(version)
        .bind(&first)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { continue };
        // A key this ring cannot open is left as it is, and said: it must not keep the other
        // tenants' keys, or the process, from going on.
        let sealed = match row.open(ring, tenant).and_then(|k| Ok(k.seal(ring, tenant.0)?)) {
            Ok(sealed) => sealed,
            Err(e) => {
                tracing::error!(tenant_id = %tenant, version, sealed_with = %row.master_key_id, error = %e,
                    "a tenant key cannot be sealed again with the first master key; keep the key that sealed it in the ring");
                failed += 1;
                continue;
            }
        };
        sqlx::query("UPDATE tenant_keys SET master_key_id = $3, sealed = $4 WHERE tenant_id = $1 AND version = $2")
            .bind(tenant)
            .bind(version)
            .bind(&sealed.key_id)
            .bind(&sealed.bytes)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        done += 1;
    }
    count("resealed", done);
    count("reseal_failed", failed);
    if done > 0 {
        tracing::info!(keys = done, master_key = %first, "tenant keys sealed again with the first master key");
    }
    if failed > 0 {
        tracing::error!(keys = failed, master_key = %first, "tenant keys are still sealed with another master key");
    }
    Ok(done)
}
