use sqlx::PgPool;

use super::fk_to_not_found;
use crate::domain::{Name, Project};
use crate::error::{Error, Result, is_unique_violation};
use crate::ids::{ProjectId, TenantId};
use crate::page::{Page, PageRequest};

macro_rules! project_columns {
    () => {
        "id, tenant_id, name, description, created_at"
    };
}

pub async fn create(pool: &PgPool, tenant: TenantId, name: &Name, description: Option<&str>) -> Result<Project> {
    sqlx::query_as::<_, Project>(concat!(
        "INSERT INTO projects (id, tenant_id, name, description) VALUES ($1, $2, $3, $4) RETURNING ",
        project_columns!(),
        ""
    ))
    .bind(ProjectId::new())
    .bind(tenant)
    .bind(name.as_str())
    .bind(description)
    .fetch_one(pool)
    .await
    .map_err(|e| {
        if is_unique_violation(&e, "projects_tenant_id_name_key") {
            Error::Conflict(format!("a project named `{name}` already exists in this tenant"))
        } else {
            fk_to_not_found(e, "tenant")
        }
    })
}

pub async fn list(pool: &PgPool, tenant: TenantId, page: PageRequest) -> Result<Page<Project>> {
    let rows = sqlx::query_as::<_, Project>(concat!(
        "SELECT ",
        project_columns!(),
        " FROM projects WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(tenant)
    .bind(page.before)
    .bind(page.fetch())
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, page, |p| p.id.0))
}

pub async fn get(pool: &PgPool, tenant: TenantId, project: ProjectId) -> Result<Project> {
    sqlx::query_as::<_, Project>(concat!(
        "SELECT ",
        project_columns!(),
        " FROM projects WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(project)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("project"))
}

/// Deletes a project with its planets, refusing while any of its backups is stored.
pub async fn delete(pool: &PgPool, tenant: TenantId, project: ProjectId) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT id FROM projects WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
        .bind(tenant)
        .bind(project)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound("project"))?;
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM backups WHERE tenant_id = $1 AND project_id = $2 AND status <> 'deleted'",
    )
    .bind(tenant)
    .bind(project)
    .fetch_one(&mut *tx)
    .await?;
    if stored > 0 {
        return Err(Error::Conflict(format!(
            "the project still has {stored} backup(s); delete them first so no archive is orphaned"
        )));
    }
    sqlx::query("DELETE FROM projects WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(project)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
