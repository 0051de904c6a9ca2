use sqlx::PgPool;

use crate::domain::{Name, Tenant, TenantLimits};
use crate::error::{Error, Result, is_unique_violation};
use crate::ids::TenantId;
use crate::page::{Page, PageRequest};

const COLUMNS: &str = "id, name, display_name, max_concurrent_jobs, max_stored_bytes, max_backups, created_at";

pub async fn create(pool: &PgPool, name: &Name, display_name: Option<&str>, limits: TenantLimits) -> Result<Tenant> {
    sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO tenants (id, name, display_name, max_concurrent_jobs, max_stored_bytes, max_backups)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    )))
    .bind(TenantId::new())
    .bind(name.as_str())
    .bind(display_name)
    .bind(limits.concurrent_jobs)
    .bind(limits.stored_bytes)
    .bind(limits.backups)
    .fetch_one(pool)
    .await
    .map_err(|e| {
        if is_unique_violation(&e, "tenants_name_key") {
            Error::Conflict(format!("a tenant named `{name}` already exists"))
        } else {
            e.into()
        }
    })
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

/// Deletes a tenant with its projects and planets, refusing while any backup is stored.
pub async fn delete(pool: &PgPool, tenant: TenantId) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound("tenant"))?;
    // Backups that hold objects, or may: a tenant's rows go with it, its archives must not be orphaned.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM backups WHERE tenant_id = $1
           AND (status IN ('scheduled', 'running', 'succeeded', 'deleting') OR (status = 'expired' AND object_key IS NOT NULL))",
    )
        .bind(tenant)
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

/// Changes a tenant's display name and limits; `None` leaves a value as it is, a limit given as
/// `null` in the request returns it to the default.
pub async fn update(
    pool: &PgPool,
    tenant: TenantId,
    display_name: Option<Option<&str>>,
    limits: Option<TenantLimits>,
) -> Result<Tenant> {
    sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "UPDATE tenants SET display_name = CASE WHEN $2 THEN $3 ELSE display_name END,
                max_concurrent_jobs = CASE WHEN $4 THEN $5 ELSE max_concurrent_jobs END,
                max_stored_bytes = CASE WHEN $4 THEN $6 ELSE max_stored_bytes END,
                max_backups = CASE WHEN $4 THEN $7 ELSE max_backups END
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(display_name.is_some())
    .bind(display_name.flatten())
    .bind(limits.is_some())
    .bind(limits.and_then(|l| l.concurrent_jobs))
    .bind(limits.and_then(|l| l.stored_bytes))
    .bind(limits.and_then(|l| l.backups))
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("tenant"))
}
