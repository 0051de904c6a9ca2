//! What the catalog says about the whole installation, for the gauges dashboards and alert
//! rules read: each planet's newest good backup and last failure, the queue, stored bytes.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::backup::BackupStatus;
use crate::jobs::JobState;

/// Recovery point of one planet.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanetPoint {
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    pub planet_id: Uuid,
    pub tenant: String,
    pub project: String,
    pub planet: String,
    pub created_at: DateTime<Utc>,
    /// Completion of the newest `succeeded` backup.
    pub last_success: Option<DateTime<Utc>>,
    /// End (or creation) of the newest `failed` or `incomplete` backup.
    pub last_failure: Option<DateTime<Utc>>,
    /// Failed or incomplete backups since the newest succeeded one.
    pub failures_since_success: i64,
    /// The schedule, when one is enabled.
    pub cron: Option<String>,
    pub timezone: Option<String>,
}

/// Jobs of one kind waiting in the queue.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuePoint {
    pub kind: String,
    /// Queued jobs, due or not.
    pub queued: i64,
    /// Seconds the longest-waiting due job has been ready without a worker taking it.
    pub oldest_due_secs: f64,
}

/// One snapshot of the catalog.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// Planets, worst recovery point first, at most the limit asked for.
    pub planets: Vec<PlanetPoint>,
    /// Planets left out by the limit.
    pub planets_left_out: i64,
    pub queue: Vec<QueuePoint>,
    /// Bytes of each tenant's stored archives, as its `storedBytes` limit counts them.
    pub stored_bytes: Vec<(Uuid, String, i64)>,
}

/// Reads the snapshot; `planet_limit` bounds the number of planets (and so of series).
pub async fn snapshot(pool: &PgPool, planet_limit: i64) -> sqlx::Result<Fleet> {
    let planets: Vec<PlanetPoint> = sqlx::query_as(
        "WITH agg AS (
             SELECT planet_id,
                    max(completed_at) FILTER (WHERE status = $2) AS last_success,
                    max(created_at) FILTER (WHERE status = $2) AS last_success_created,
                    max(coalesce(completed_at, created_at)) FILTER (WHERE status = ANY($3))
                        AS last_failure
             FROM backups GROUP BY planet_id)
         SELECT p.tenant_id, p.project_id, p.id AS planet_id, t.name AS tenant, pr.name AS project,
                p.name AS planet, p.created_at, agg.last_success, agg.last_failure,
                (SELECT count(*) FROM backups f
                  WHERE f.planet_id = p.id AND f.status = ANY($3)
                    AND f.created_at > coalesce(agg.last_success_created, '-infinity')) AS failures_since_success,
                s.cron, s.timezone
         FROM planets p
         JOIN tenants t ON t.id = p.tenant_id
         JOIN projects pr ON pr.id = p.project_id
         LEFT JOIN agg ON agg.planet_id = p.id
         LEFT JOIN schedules s ON s.planet_id = p.id AND s.enabled
         ORDER BY agg.last_success NULLS FIRST, p.id
         LIMIT $1",
    )
    .bind(planet_limit)
    .bind(BackupStatus::Succeeded.as_str())
    .bind(BackupStatus::names(&[BackupStatus::Failed, BackupStatus::Incomplete]))
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM planets")
        .fetch_one(pool)
        .await?;
    // Every kind this build queues has series, at zero when none waits.
    let kinds = [
        super::backups::BACKUP_JOB,
        super::backups::DELETE_JOB,
        super::backups::VERIFY_JOB,
        super::restores::RESTORE_JOB,
    ];
    let queue: Vec<QueuePoint> = sqlx::query_as(
        "SELECT k.kind, count(j.id) AS queued,
                coalesce(extract(epoch FROM now() - min(j.run_after) FILTER (WHERE j.run_after <= now())), 0)::float8
                    AS oldest_due_secs
         FROM (SELECT unnest($2::text[]) AS kind UNION SELECT DISTINCT kind FROM jobs WHERE state = $1) k
         LEFT JOIN jobs j ON j.kind = k.kind AND j.state = $1
         GROUP BY k.kind ORDER BY k.kind",
    )
    .bind(JobState::Queued.as_str())
    .bind(&kinds[..])
    .fetch_all(pool)
    .await?;
    let stored_bytes: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT t.id, t.name, coalesce(sum(b.size_bytes), 0)::bigint
         FROM tenants t LEFT JOIN backups b
           ON b.tenant_id = t.id AND b.status = ANY($1) AND b.size_bytes IS NOT NULL
         GROUP BY t.id, t.name ORDER BY t.id",
    )
    // As the tenant's storedBytes limit counts them.
    .bind(BackupStatus::names(&[BackupStatus::Succeeded, BackupStatus::Missing]))
    .fetch_all(pool)
    .await?;
    #[allow(clippy::cast_possible_wrap)]
    let left_out = total - planets.len() as i64;
    Ok(Fleet {
        planets,
        planets_left_out: left_out.max(0),
        queue,
        stored_bytes,
    })
}
