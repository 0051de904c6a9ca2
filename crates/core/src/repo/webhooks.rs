//! Webhook endpoints and their deliveries. Deliveries are queued by [`notify`] inside the
//! transaction of the change they report; the worker claims due ones with [`claim`] under a
//! lease and writes each attempt with [`record`], fenced by that lease.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::fk_to_not_found;
use crate::crypto::{KeyRing, Sealed};
use crate::error::{Error, Result};
use crate::ids::{DeliveryId, TenantId, WebhookId};
use crate::page::{Page, PageRequest};
use crate::webhook::{
    Attempt, CreatedWebhook, Delivery, DeliveryStatus, EventType, Webhook, WebhookUrl, body, generate_secret,
};

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: WebhookId,
    tenant_id: TenantId,
    url: String,
    event_types: Vec<String>,
    created_at: DateTime<Utc>,
}

fn corrupt(what: &str) -> Error {
    Error::Other(anyhow::anyhow!("stored webhook has an invalid {what}"))
}

impl EndpointRow {
    fn into_webhook(self) -> Result<Webhook> {
        Ok(Webhook {
            id: self.id,
            tenant_id: self.tenant_id,
            url: self.url,
            event_types: self
                .event_types
                .iter()
                .map(|e| e.parse().map_err(|_| corrupt("event type")))
                .collect::<Result<_>>()?,
            created_at: self.created_at,
        })
    }
}

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, event_types, created_at";

/// Registers an endpoint with a fresh secret, sealed; the answer carries the secret in clear.
pub async fn create(
    pool: &PgPool,
    keys: &KeyRing,
    tenant: TenantId,
    url: &WebhookUrl,
    events: &[EventType],
    audit: &super::audit::Entry,
) -> Result<CreatedWebhook> {
    let id = WebhookId::new();
    let secret = generate_secret();
    let sealed = keys.seal(secret.expose_secret().as_bytes(), id.0.as_bytes())?;
    let events: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as::<_, EndpointRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret_sealed, secret_key_id)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {ENDPOINT_COLUMNS}"
    )))
    .bind(id)
    .bind(tenant)
    .bind(url.as_str())
    .bind(&events)
    .bind(&sealed.bytes)
    .bind(&sealed.key_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| fk_to_not_found(e, "tenant"))?;
    audit.write(&mut tx, Some(id.0)).await?;
    tx.commit().await?;
    Ok(CreatedWebhook {
        webhook: row.into_webhook()?,
        secret: secret.expose_secret().to_owned(),
    })
}

pub async fn list(pool: &PgPool, tenant: TenantId, page: PageRequest) -> Result<Page<Webhook>> {
    let rows = sqlx::query_as::<_, EndpointRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    )))
    .bind(tenant)
    .bind(page.before)
    .bind(page.fetch())
    .fetch_all(pool)
    .await?;
    let hooks = rows
        .into_iter()
        .map(EndpointRow::into_webhook)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page::from_rows(hooks, page, |w| w.id.0))
}

pub async fn get(pool: &PgPool, tenant: TenantId, id: WebhookId) -> Result<Webhook> {
    sqlx::query_as::<_, EndpointRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("webhook"))?
    .into_webhook()
}

/// Removes an endpoint and its deliveries; one being sent finishes, and its record is dropped.
pub async fn delete(pool: &PgPool, tenant: TenantId, id: WebhookId, audit: &super::audit::Entry) -> Result<()> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(Error::NotFound("webhook"));
    }
    audit.write(&mut tx, Some(id.0)).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: DeliveryId,
    endpoint_id: WebhookId,
    event_type: String,
    data: serde_json::Value,
    status: String,
    attempts: sqlx::types::Json<Vec<Attempt>>,
    created_at: DateTime<Utc>,
    next_attempt_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

impl DeliveryRow {
    fn into_delivery(self) -> Result<Delivery> {
        let status: DeliveryStatus = self.status.parse().map_err(|_| corrupt("delivery status"))?;
        Ok(Delivery {
            id: self.id,
            webhook_id: self.endpoint_id,
            event_type: self.event_type.parse().map_err(|_| corrupt("event type"))?,
            data: self.data,
            status,
            attempts: self.attempts.0,
            created_at: self.created_at,
            next_attempt_at: (status == DeliveryStatus::Pending).then_some(self.next_attempt_at),
            completed_at: self.completed_at,
        })
    }
}

/// An endpoint's deliveries, newest first.
pub async fn deliveries(
    pool: &PgPool,
    tenant: TenantId,
    id: WebhookId,
    status: Option<DeliveryStatus>,
    page: PageRequest,
) -> Result<Page<Delivery>> {
    get(pool, tenant, id).await?;
    let rows = sqlx::query_as::<_, DeliveryRow>(
        "SELECT id, endpoint_id, event_type, COALESCE(payload -> 'data', '{}') AS data, status, attempts,
                created_at, next_attempt_at, completed_at
         FROM webhook_deliveries
         WHERE tenant_id = $1 AND endpoint_id = $2 AND ($3::uuid IS NULL OR id < $3)
           AND ($5::text IS NULL OR status = $5)
         ORDER BY id DESC LIMIT $4",
    )
    .bind(tenant)
    .bind(id)
    .bind(page.before)
    .bind(page.fetch())
    .bind(status.map(DeliveryStatus::as_str))
    .fetch_all(pool)
    .await?;
    let items = rows
        .into_iter()
        .map(DeliveryRow::into_delivery)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page::from_rows(items, page, |d| d.id.0))
}

// ---- queueing ------------------------------------------------------------------------------

/// Queues `event` for every endpoint of the tenant that wants it, on `conn`: inside the
/// transaction of the change it reports. Returns how many deliveries were queued.
pub async fn notify(
    conn: &mut PgConnection,
    tenant: TenantId,
    event: EventType,
    data: serde_json::Value,
) -> Result<u64> {
    let endpoints: Vec<WebhookId> = sqlx::query_scalar(
        "SELECT id FROM webhook_endpoints WHERE tenant_id = $1 AND $2 = ANY(event_types) ORDER BY id",
    )
    .bind(tenant)
    .bind(event.as_str())
    .fetch_all(&mut *conn)
    .await?;
    if endpoints.is_empty() {
        return Ok(0);
    }
    // Ids are time-ordered (v7), as the lists' paging expects, so they are made here.
    let ids: Vec<Uuid> = endpoints.iter().map(|_| Uuid::now_v7()).collect();
    let payload = body(event, Utc::now(), data);
    let n = sqlx::query(
        "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, event_type, payload)
         SELECT d.id, $3, d.endpoint_id, $4, $5 FROM unnest($1::uuid[], $2::uuid[]) AS d(id, endpoint_id)",
    )
    .bind(&ids)
    .bind(&endpoints)
    .bind(tenant)
    .bind(event.as_str())
    .bind(&payload)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n)
}

/// What a backup event says: its ids, name, status and error message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BackupEvent {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub project_id: Uuid,
    pub planet_id: Uuid,
    pub name: String,
    pub status: String,
    pub error_message: Option<String>,
}

/// Columns a `RETURNING` of the backups table gives for [`BackupEvent`].
pub const BACKUP_EVENT_COLUMNS: &str = "id, tenant_id, project_id, planet_id, name, status, error_message";

impl BackupEvent {
    pub async fn notify(&self, conn: &mut PgConnection, event: EventType) -> Result<u64> {
        let data = serde_json::json!({
            "tenantId": self.tenant_id,
            "projectId": self.project_id,
            "planetId": self.planet_id,
            "backupId": self.id,
            "name": self.name,
            "status": self.status,
            "errorMessage": self.error_message,
        });
        notify(conn, self.tenant_id, event, data).await
    }
}

/// What a restore event says: its ids, source, status and error message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RestoreEvent {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub project_id: Uuid,
    pub planet_id: Uuid,
    pub source_backup_id: Option<Uuid>,
    pub status: String,
    pub error_message: Option<String>,
}

/// Columns a `RETURNING` of the restores table gives for [`RestoreEvent`].
pub const RESTORE_EVENT_COLUMNS: &str = "id, tenant_id, project_id, planet_id, source_backup_id, status, error_message";

impl RestoreEvent {
    pub async fn notify(&self, conn: &mut PgConnection, event: EventType) -> Result<u64> {
        let data = serde_json::json!({
            "tenantId": self.tenant_id,
            "projectId": self.project_id,
            "planetId": self.planet_id,
            "restoreId": self.id,
            "sourceBackupId": self.source_backup_id,
            "status": self.status,
            "errorMessage": self.error_message,
        });
        notify(conn, self.tenant_id, event, data).await
    }
}

// ---- worker side ---------------------------------------------------------------------------

/// A delivery claimed for one attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: DeliveryId,
    pub tenant_id: TenantId,
    pub endpoint_id: WebhookId,
    pub url: String,
    pub payload: serde_json::Value,
    pub attempt_count: i32,
    pub created_at: DateTime<Utc>,
    pub lease_token: Uuid,
    secret_sealed: Vec<u8>,
    secret_key_id: String,
}

impl Claimed {
    /// The endpoint's signing secret, opened.
    pub fn secret(&self, keys: &KeyRing) -> Result<SecretString> {
        let clear = keys.open(
            &Sealed {
                key_id: self.secret_key_id.clone(),
                bytes: self.secret_sealed.clone(),
            },
            self.endpoint_id.0.as_bytes(),
        )?;
        Ok(SecretString::from(
            String::from_utf8(clear).map_err(|_| corrupt("secret"))?,
        ))
    }
}

/// Claims up to `limit` due deliveries under a lease of `lease`: at most one at a time per
/// endpoint and `per_tenant` per tenant (counting those already in flight anywhere), so a slow
/// endpoint holds one slot and no tenant holds them all.
pub async fn claim(pool: &PgPool, limit: usize, per_tenant: usize, lease: Duration) -> Result<Vec<Claimed>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    let due: Vec<(DeliveryId, TenantId, WebhookId)> = sqlx::query_as(
        "SELECT id, tenant_id, endpoint_id FROM webhook_deliveries
         WHERE status = $1 AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until < now())
         ORDER BY next_attempt_at, id LIMIT 500 FOR UPDATE SKIP LOCKED",
    )
    .bind(DeliveryStatus::Pending.as_str())
    .fetch_all(&mut *tx)
    .await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let busy: Vec<(TenantId, WebhookId)> = sqlx::query_as(
        "SELECT tenant_id, endpoint_id FROM webhook_deliveries WHERE status = $1 AND lease_until >= now()",
    )
    .bind(DeliveryStatus::Pending.as_str())
    .fetch_all(&mut *tx)
    .await?;
    let mut endpoints: HashSet<WebhookId> = busy.iter().map(|(_, e)| *e).collect();
    let mut tenants: HashMap<TenantId, usize> = HashMap::new();
    for (t, _) in &busy {
        *tenants.entry(*t).or_default() += 1;
    }
    let mut picked = Vec::new();
    for (id, tenant, endpoint) in due {
        if picked.len() >= limit {
            break;
        }
        let n = tenants.entry(tenant).or_default();
        if *n >= per_tenant.max(1) || !endpoints.insert(endpoint) {
            continue;
        }
        *n += 1;
        picked.push(id);
    }
    let claimed = sqlx::query_as::<_, Claimed>(
        "UPDATE webhook_deliveries d SET lease_token = gen_random_uuid(),
                lease_until = now() + make_interval(secs => $2)
         FROM webhook_endpoints e
         WHERE d.id = ANY($1) AND e.id = d.endpoint_id
         RETURNING d.id, d.tenant_id, d.endpoint_id, e.url, d.payload, d.attempt_count, d.created_at,
                   d.lease_token, e.secret_sealed, e.secret_key_id",
    )
    .bind(&picked)
    .bind(lease.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// What comes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    RetryAt(DateTime<Utc>),
    GiveUp,
}

/// Writes an attempt and what follows it, if the lease still holds the delivery. `false`: it
/// was taken over (or its endpoint deleted); nothing was written.
pub async fn record(pool: &PgPool, claimed: &Claimed, attempt: &Attempt, next: Next) -> Result<bool> {
    let (status, retry_at) = match next {
        Next::Delivered => (DeliveryStatus::Delivered, None),
        Next::RetryAt(at) => (DeliveryStatus::Pending, Some(at)),
        Next::GiveUp => (DeliveryStatus::Failed, None),
    };
    let n = sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts || jsonb_build_array($3::jsonb),
                attempt_count = attempt_count + 1, status = $4, next_attempt_at = COALESCE($5, next_attempt_at),
                completed_at = CASE WHEN $4 = $6 THEN NULL ELSE now() END,
                lease_token = NULL, lease_until = NULL
         WHERE id = $1 AND lease_token = $2",
    )
    .bind(claimed.id)
    .bind(claimed.lease_token)
    .bind(sqlx::types::Json(attempt))
    .bind(status.as_str())
    .bind(retry_at)
    .bind(DeliveryStatus::Pending.as_str())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Deletes up to `batch` deliveries that were delivered or given up more than `age` ago.
pub async fn prune(pool: &PgPool, age: Duration, batch: i64) -> Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM webhook_deliveries WHERE id IN (
             SELECT id FROM webhook_deliveries
             WHERE status <> $1 AND completed_at < now() - make_interval(secs => $2) LIMIT $3)",
    )
    .bind(DeliveryStatus::Pending.as_str())
    .bind(age.as_secs_f64())
    .bind(batch)
    .execute(pool)
    .await?
    .rows_affected())
}
