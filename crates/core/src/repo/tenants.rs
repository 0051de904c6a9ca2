use sqlx::PgPool;

use crate::backup::BackupStatus;
use crate::domain::{Name, Tenant, TenantLimits};
use crate::error::{Error, Result, is_unique_violation};
use crate::ids::TenantId;
use crate::netpolicy::PolicyLists;
use crate::page::{Page, PageRequest};
use crate::repo::audit;

const COLUMNS: &str =
    "id, name, display_name, max_concurrent_jobs, max_stored_bytes, max_backups, target_policy, created_at";

/// What a new tenant starts with besides its name.
#[derive(Default)]
pub struct NewTenant<'a> {
    pub display_name: Option<&'a str>,
    pub limits: TenantLimits,
    pub target_policy: Option<PolicyLists>,
}

pub async fn create(pool: &PgPool, name: &Name, new: NewTenant<'_>, audit: &audit::Entry) -> Result<Tenant> {
    let id = TenantId::new();
    let mut tx = pool.begin().await?;
    let tenant = sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO tenants (id, name, display_name, max_concurrent_jobs, max_stored_bytes, max_backups, target_policy)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(name.as_str())
    .bind(new.display_name)
    .bind(new.limits.concurrent_jobs)
    .bind(new.limits.stored_bytes)
    .bind(new.limits.backups)
    .bind(new.target_policy.map(sqlx::types::Json))
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e, "tenants_name_key") {
            Error::Conflict(format!("a tenant named `{name}` already exists"))
        } else {
            Error::from(e)
        }
    })?;
    audit::Entry {
        tenant: id,
        ..audit.clone()
    }
    .write(&mut tx, Some(id.0))
    .await?;
    tx.commit().await?;
    Ok(tenant)
}

/// The tenant's own target policy, if it has one (else the platform's applies).
pub async fn target_policy(pool: &PgPool, tenant: TenantId) -> Result<Option<PolicyLists>> {
    let row: Option<Option<sqlx::types::Json<PolicyLists>>> =
        sqlx::query_scalar("SELECT target_policy FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_optional(pool)
            .await?;
    Ok(row.ok_or(Error::NotFound("tenant"))?.map(|j| j.0))
}

pub async fn list(pool: &PgPool, page: PageRequest) -> Result<Page<Tenant>> {
    let rows = sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants WHERE ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
    )))
    .bind(page.before)
    .bind(page.fetch())
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, page, |t| t.id.0))
}

pub async fn get(pool: &PgPool, tenant: TenantId) -> Result<Tenant> {
    sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants WHERE id = $1"
    )))
    .bind(tenant)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("tenant"))
}

/// Locks the tenant's row for the rest of the transaction (shared or exclusive); 404 when
/// there is no such tenant.
pub(crate) async fn lock(conn: &mut sqlx::PgConnection, tenant: TenantId, exclusive: bool) -> Result<()> {
    let sql = if exclusive {
        "SELECT id FROM tenants WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT id FROM tenants WHERE id = $1 FOR SHARE"
    };
    sqlx::query(sql)
        .bind(tenant)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("tenant"))?;
    Ok(())
}

/// Deletes a tenant with its projects and planets, refusing while any backup is stored. Its
/// archive keys go with it (crypto-shredding: see [`crate::envelope`]).
pub async fn delete(pool: &PgPool, tenant: TenantId) -> Result<()> {
    let mut tx = pool.begin().await?;
    lock(&mut tx, tenant, true).await?;
    // Backups that hold objects, or may: a tenant's rows go with it, its archives must not be orphaned.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM backups WHERE tenant_id = $1
           AND (status = ANY($2) OR (status = $3 AND object_key IS NOT NULL))",
    )
    .bind(tenant)
    .bind(BackupStatus::names(&BackupStatus::HOLDING_OBJECTS))
    .bind(BackupStatus::Expired.as_str())
    .fetch_one(&mut *tx)
    .await?;
    if stored > 0 {
        return Err(Error::Conflict(format!(
            "the tenant still has {stored} backup(s); delete them first so no archive is orphaned"
        )));
    }
    sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn find_by_name(pool: &PgPool, name: &Name) -> Result<Option<Tenant>> {
    Ok(sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants WHERE name = $1"
    )))
    .bind(name.as_str())
    .fetch_optional(pool)
    .await?)
}

/// Changes to a tenant; `None` leaves a value as it is.
#[derive(Default)]
pub struct TenantPatch<'a> {
    /// `Some(None)` removes the display name.
    pub display_name: Option<Option<&'a str>>,
    /// Replaces every limit; one left out returns to the default.
    pub limits: Option<TenantLimits>,
    /// `Some(None)` returns the tenant to the platform's target policy.
    pub target_policy: Option<Option<PolicyLists>>,
}

/// Changes a tenant's display name, limits or target policy.
pub async fn update(pool: &PgPool, tenant: TenantId, patch: TenantPatch<'_>, audit: &audit::Entry) -> Result<Tenant> {
    let TenantPatch {
        display_name,
        limits,
        target_policy,
    } = patch;
    let mut tx = pool.begin().await?;
    let updated = sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "UPDATE tenants SET display_name = CASE WHEN $2 THEN $3 ELSE display_name END,
                max_concurrent_jobs = CASE WHEN $4 THEN $5 ELSE max_concurrent_jobs END,
                max_stored_bytes = CASE WHEN $4 THEN $6 ELSE max_stored_bytes END,
                max_backups = CASE WHEN $4 THEN $7 ELSE max_backups END,
                target_policy = CASE WHEN $8 THEN $9 ELSE target_policy END
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(display_name.is_some())
    .bind(display_name.flatten())
    .bind(limits.is_some())
    .bind(limits.and_then(|l| l.concurrent_jobs))
    .bind(limits.and_then(|l| l.stored_bytes))
    .bind(limits.and_then(|l| l.backups))
    .bind(target_policy.is_some())
    .bind(target_policy.flatten().map(sqlx::types::Json))
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound("tenant"))?;
    audit.write(&mut tx, Some(tenant.0)).await?;
    tx.commit().await?;
    Ok(updated)
}
