//! Client-chosen numeric ids of backups, scoped to a planet (the Camunda-style profile). The
//! backups themselves are ordinary backups; this table only names them.

use sqlx::PgPool;

use crate::backup::{Backup, BackupStatus};
use crate::error::{Error, Result, is_unique_violation};
use crate::ids::{BackupId, PlanetId, ProjectId, TenantId};
use crate::repo::backups::{self, NewBackup};

/// Statuses of a backup that no longer holds an archive: its number may be taken again, and it
/// is no longer shown under its number.
pub const GONE: [BackupStatus; 3] = [BackupStatus::Expired, BackupStatus::Deleting, BackupStatus::Deleted];

fn taken(number: i64) -> Error {
    Error::invalid("backupId", format!("a backup with id {number} already exists"))
}

/// Creates a backup of the planet named `number`, in one transaction with its job. Refused
/// (400 naming `backupId`) while the number names a backup that still exists.
pub async fn create(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    planet: PlanetId,
    number: i64,
    prefix: impl FnOnce(BackupId) -> String,
    new: NewBackup,
) -> Result<Backup> {
    let mut tx = pool.begin().await?;
    let existing: Option<(BackupId, String)> = sqlx::query_as(
        "SELECT n.backup_id, b.status FROM backup_numbers n JOIN backups b ON b.id = n.backup_id
          WHERE n.tenant_id = $1 AND n.planet_id = $2 AND n.number = $3 FOR UPDATE OF n",
    )
    .bind(tenant)
    .bind(planet)
    .bind(number)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((_, status)) = &existing {
        if !BackupStatus::names(&GONE).contains(&status.as_str()) {
            return Err(taken(number));
        }
        sqlx::query("DELETE FROM backup_numbers WHERE planet_id = $1 AND number = $2")
            .bind(planet)
            .bind(number)
            .execute(&mut *tx)
            .await?;
    }
    let id = backups::create_in(&mut tx, tenant, project, planet, prefix, &new, chrono::Utc::now()).await?;
    let inserted =
        sqlx::query("INSERT INTO backup_numbers (tenant_id, planet_id, number, backup_id) VALUES ($1, $2, $3, $4)")
            .bind(tenant)
            .bind(planet)
            .bind(number)
            .bind(id)
            .execute(&mut *tx)
            .await;
    match inserted {
        Err(e) if is_unique_violation(&e, "backup_numbers_pkey") => return Err(taken(number)),
        other => {
            other?;
        }
    }
    let created = backups::row(&mut *tx, tenant, project, id).await?.into_backup()?;
    tx.commit().await?;
    Ok(created)
}

/// The backup named `number` on the planet, unless it is gone.
pub async fn get(pool: &PgPool, tenant: TenantId, project: ProjectId, planet: PlanetId, number: i64) -> Result<Backup> {
    let id: Option<BackupId> = sqlx::query_scalar(
        "SELECT n.backup_id FROM backup_numbers n JOIN backups b ON b.id = n.backup_id
          WHERE n.tenant_id = $1 AND b.project_id = $2 AND n.planet_id = $3 AND n.number = $4
            AND NOT (b.status = ANY($5))",
    )
    .bind(tenant)
    .bind(project)
    .bind(planet)
    .bind(number)
    .bind(BackupStatus::names(&GONE))
    .fetch_optional(pool)
    .await?;
    let id = id.ok_or(Error::NotFound("backup"))?;
    backups::get(pool, tenant, project, id).await
}

/// The numbered backups of the planet that still exist, highest number first.
pub async fn list(pool: &PgPool, tenant: TenantId, project: ProjectId, planet: PlanetId) -> Result<Vec<(i64, Backup)>> {
    super::planets::get(pool, tenant, project, planet).await?;
    let ids: Vec<(i64, BackupId)> = sqlx::query_as(
        "SELECT n.number, n.backup_id FROM backup_numbers n JOIN backups b ON b.id = n.backup_id
          WHERE n.tenant_id = $1 AND b.project_id = $2 AND n.planet_id = $3 AND NOT (b.status = ANY($4))
          ORDER BY n.number DESC LIMIT 1000",
    )
    .bind(tenant)
    .bind(project)
    .bind(planet)
    .bind(BackupStatus::names(&GONE))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(ids.len());
    for (number, id) in ids {
        out.push((number, backups::get(pool, tenant, project, id).await?));
    }
    Ok(out)
}
