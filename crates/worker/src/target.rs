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

/// The connection pinned to its checked address, or a permanent failure naming the rule.
/// `also` is another database the job will connect to on that server (a restore's target).
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
    let refused = |refusal: svalbard_core::netpolicy::Refusal| {
        tracing::warn!(host = %conn.host, port = conn.port, %refusal, "target refused");
        JobError::Permanent(refusal.0)
    };
    let addrs = guard
        .check(lists.as_ref(), &conn.host, conn.port, Some(&conn.database))
        .await
        .map_err(refused)?;
    if let Some(other) = also.filter(|d| *d != conn.database) {
        guard
            .check(lists.as_ref(), &conn.host, conn.port, Some(other))
            .await
            .map_err(refused)?;
    }
    conn.hostaddr = addrs.first().copied();
    Ok(conn)
}
