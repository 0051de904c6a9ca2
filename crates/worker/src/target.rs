//! The worker's own check of a planet's host, right before it connects: the policy may have
//! tightened since the planet was registered, and a name may resolve elsewhere now. The check
//! resolves the name once and pins the connection to the address it checked (`hostaddr`), so
//! the tool cannot be sent elsewhere by a second lookup.

use sqlx::PgPool;
use svalbard_core::ids::TenantId;
use svalbard_core::netpolicy::Guard;
use svalbard_core::repo::planets::Connection;
use svalbard_core::repo::tenants;

use crate::runner::JobError;

/// Maintenance databases the worker's administrative connections use on a planet's server
/// (creating, renaming and dropping a restore's database, reading the server's version): they
/// are connections to that server like any other, so a control database by one of these names
/// must be refused for them too.
const MAINTENANCE_DATABASES: &[&str] = &["postgres", "template1"];

/// The connection pinned to its checked address, or a permanent failure naming the rule.
/// `also` is another database the job will connect to on that server (a restore's target); the
/// maintenance databases are checked as well.
pub async fn checked(
    pool: &PgPool,
    guard: &Guard,
    tenant: TenantId,
    mut conn: Connection,
    also: Option<&str>,
) -> Result<Connection, JobError> {
    let lists = tenants::target_policy(pool, tenant)
        .await
        .map_err(|e| JobError::Transient(format!("the tenant's target policy cannot be read: {e}")))?;
    let mut databases = vec![Some(conn.database.as_str())];
    databases.extend(also.into_iter().chain(MAINTENANCE_DATABASES.iter().copied()).map(Some));
    databases.dedup();
    let addrs = guard
        .check_databases(lists.as_ref(), &conn.host, conn.port, &databases)
        .await
        .map_err(|refusal| {
            tracing::warn!(host = %conn.host, port = conn.port, %refusal, "target refused");
            JobError::Permanent(refusal.0)
        })?;
    conn.hostaddr = addrs.first().copied();
    Ok(conn)
}
