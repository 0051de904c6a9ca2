//! Per-tenant limits, checked inside the transaction that creates a backup or a restore. The
//! tenant row is locked first, so concurrent creates of one tenant are counted one after another.

use sqlx::PgConnection;

use crate::backup::BackupStatus;
use crate::config::LimitsConfig;
use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::repo::backups::BACKUP_JOB;
use crate::repo::restores::RESTORE_JOB;

/// The configured defaults; a tenant's own values override them. 0 means no limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub concurrent_jobs: i64,
    pub stored_bytes: i64,
    pub backups: i64,
}

impl From<&LimitsConfig> for Limits {
    fn from(c: &LimitsConfig) -> Self {
        Self {
            concurrent_jobs: c.tenant_concurrent_jobs,
            stored_bytes: c.tenant_stored_bytes,
            backups: c.tenant_backups,
        }
    }
}

/// What is about to be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creating {
    Backup,
    Restore,
}

fn effective(own: Option<i64>, default: i64) -> Option<i64> {
    own.or(Some(default)).filter(|n| *n > 0)
}

/// The tenant's own limits, read under a lock that every create of the tenant takes first
/// (tenant, then planet: the order deleting a tenant takes its rows in).
#[derive(Debug, Clone, Copy)]
pub struct Locked {
    jobs: Option<i32>,
    bytes: Option<i64>,
    backups: Option<i32>,
}

pub async fn lock_tenant(conn: &mut PgConnection, tenant: TenantId) -> Result<Locked> {
    let (jobs, bytes, backups): (Option<i32>, Option<i64>, Option<i32>) = sqlx::query_as(
        "SELECT max_concurrent_jobs, max_stored_bytes, max_backups FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("tenant"))?;
    Ok(Locked { jobs, bytes, backups })
}

/// Refuses the create when it would take the tenant past one of its limits. The caller holds
/// the tenant locked ([`lock_tenant`]).
pub async fn check(
    conn: &mut PgConnection,
    tenant: TenantId,
    own: Locked,
    defaults: Limits,
    creating: Creating,
) -> Result<()> {
    let Locked { jobs, bytes, backups } = own;
    if let Some(max) = effective(jobs.map(i64::from), defaults.concurrent_jobs) {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND kind IN ($2, $3) AND state IN ('queued', 'running')",
        )
        .bind(tenant)
        .bind(BACKUP_JOB)
        .bind(RESTORE_JOB)
        .fetch_one(&mut *conn)
        .await?;
        if n >= max {
            return Err(Error::LimitReached {
                limit: "concurrentJobs",
                message: format!(
                    "the tenant has {n} backups and restores queued or running, its limit of concurrent jobs is {max}; try again when one has finished"
                ),
                busy: true,
            });
        }
    }
    if creating == Creating::Restore {
        return Ok(());
    }
    if let Some(max) = effective(backups.map(i64::from), defaults.backups) {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM backups WHERE tenant_id = $1 AND status = ANY($2)")
            .bind(tenant)
            .bind(BackupStatus::names(&BackupStatus::KEPT))
            .fetch_one(&mut *conn)
            .await?;
        if n >= max {
            return Err(Error::LimitReached {
                limit: "backups",
                message: format!(
                    "the tenant keeps {n} backups, its limit is {max}; delete backups or tighten retention first"
                ),
                busy: false,
            });
        }
    }
    if let Some(max) = effective(bytes, defaults.stored_bytes) {
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(size_bytes), 0)::bigint FROM backups WHERE tenant_id = $1 AND status = ANY($2)",
        )
        .bind(tenant)
        .bind(BackupStatus::names(&[BackupStatus::Succeeded, BackupStatus::Missing]))
        .fetch_one(&mut *conn)
        .await?;
        if n >= max {
            return Err(Error::LimitReached {
                limit: "storedBytes",
                message: format!(
                    "the tenant stores {n} bytes of backups, its limit is {max}; delete backups or tighten retention first"
                ),
                busy: false,
            });
        }
    }
    Ok(())
}
