//! The audit log: who did (or was refused) what to which resource of a tenant, from where.
//! Successful changes are written in the transaction of the change itself, so a change is never
//! committed without its record.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Role;
use crate::error::Result;
use crate::ids::TenantId;
use crate::page::{Page, PageRequest};

/// Whether the action was carried out or refused for want of a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Denied,
}

impl Outcome {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
        }
    }
}

/// An event about to be written; the resource id is given when it is known.
#[derive(Debug, Clone)]
pub struct Entry {
    pub tenant: TenantId,
    pub actor: String,
    pub role: Role,
    pub platform: bool,
    pub client_address: Option<String>,
    /// `backup.download`, `planet.create`, ...
    pub action: &'static str,
    pub resource_type: &'static str,
    pub outcome: Outcome,
}

fn role_str(r: Role) -> &'static str {
    match r {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

impl Entry {
    /// Writes the event on `conn` (inside the action's transaction).
    pub async fn write(&self, conn: &mut PgConnection, resource_id: Option<Uuid>) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_events (id, tenant_id, actor, actor_role, actor_platform, action, resource_type,
                                       resource_id, client_address, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(Uuid::now_v7())
        .bind(self.tenant)
        .bind(&self.actor)
        .bind(role_str(self.role))
        .bind(self.platform)
        .bind(self.action)
        .bind(self.resource_type)
        .bind(resource_id)
        .bind(self.client_address.as_deref())
        .bind(self.outcome.as_str())
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Writes the event on its own (an action with no transaction of its own).
    pub async fn write_alone(&self, pool: &PgPool, resource_id: Option<Uuid>) -> Result<()> {
        let mut conn = pool.acquire().await?;
        self.write(&mut conn, resource_id).await
    }

    /// Records that the call was refused. The refusal is answered whether or not the record
    /// could be written, so a failure here is only logged.
    pub async fn denied(self, pool: &PgPool, resource_id: Option<Uuid>) {
        let entry = Self {
            outcome: Outcome::Denied,
            ..self
        };
        if let Err(e) = entry.write_alone(pool, resource_id).await {
            tracing::warn!(error = %e, action = entry.action, "a refused call could not be written to the audit log");
        }
    }
}

/// One audit event as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub occurred_at: DateTime<Utc>,
    /// The token's subject (`sub`).
    pub actor: String,
    /// The token's role: `viewer`, `operator` or `admin`.
    pub actor_role: String,
    /// The token was a platform token (tenant `*`).
    pub actor_platform: bool,
    /// What was done: `backup.download`, `backup.delete`, `backup.pin`, `backup.unpin`,
    /// `restore.create`, `schedule.put`, `schedule.delete`, `planet.create`, `planet.update`,
    /// `planet.delete`, `tenant.create`, `tenant.update`, `webhook.create`, `webhook.delete`.
    pub action: String,
    /// `backup`, `restore`, `schedule`, `planet`, `tenant` or `webhook`.
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    /// The address the request came from (the peer of the API's connection).
    pub client_address: Option<String>,
    /// `success`, or `denied` when the token's role was too weak.
    pub outcome: String,
}

/// Filters of the audit list; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub action: Option<String>,
    pub actor: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A tenant's events, newest first.
pub async fn list(pool: &PgPool, tenant: TenantId, filter: &Filter, page: PageRequest) -> Result<Page<AuditEvent>> {
    let rows = sqlx::query_as::<_, AuditEvent>(
        "SELECT id, tenant_id, occurred_at, actor, actor_role, actor_platform, action, resource_type, resource_id,
                client_address, outcome
         FROM audit_events
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2)
           AND ($3::text IS NULL OR action = $3) AND ($4::text IS NULL OR actor = $4)
           AND ($5::timestamptz IS NULL OR occurred_at >= $5) AND ($6::timestamptz IS NULL OR occurred_at < $6)
         ORDER BY id DESC LIMIT $7",
    )
    .bind(tenant)
    .bind(page.before)
    .bind(filter.action.as_deref())
    .bind(filter.actor.as_deref())
    .bind(filter.since)
    .bind(filter.until)
    .bind(page.fetch())
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, page, |e| e.id))
}
