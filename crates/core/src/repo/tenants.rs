use sqlx::PgPool;

use crate::domain::{Name, Tenant};
use crate::error::{Error, Result, is_unique_violation};
use crate::ids::TenantId;
use crate::page::{Page, PageRequest};

pub async fn create(pool: &PgPool, name: &Name, display_name: Option<&str>) -> Result<Tenant> {
    sqlx::query_as::<_, Tenant>(
        "INSERT INTO tenants (id, name, display_name) VALUES ($1, $2, $3)
         RETURNING id, name, display_name, created_at",
    )
    .bind(TenantId::new())
    .bind(name.as_str())
    .bind(display_name)
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
    let rows = sqlx::query_as::<_, Tenant>(
        "SELECT id, name, display_name, created_at FROM tenants
         WHERE ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(page.before)
    .bind(page.fetch())
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, page, |t| t.id.0))
}

pub async fn get(pool: &PgPool, tenant: TenantId) -> Result<Tenant> {
    sqlx::query_as::<_, Tenant>("SELECT id, name, display_name, created_at FROM tenants WHERE id = $1")
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
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM backups WHERE tenant_id = $1 AND status <> 'deleted'")
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
    Ok(
        sqlx::query_as::<_, Tenant>("SELECT id, name, display_name, created_at FROM tenants WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(pool)
            .await?,
    )
}
