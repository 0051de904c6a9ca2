//! Applying retention: the planet's succeeded backups are locked, judged by
//! [`crate::retention::evaluate`], and those that go become `expired` with a delete job in the
//! same transaction; the job removes their objects (resumably, as for DELETE).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use crate::error::Result;
use crate::ids::{PlanetId, ProjectId, TenantId};
use crate::repo::webhooks::{BACKUP_EVENT_COLUMNS, BackupEvent};
use crate::retention::{Candidate, Verdict, evaluate};
use crate::schedule::RetentionPolicy;
use crate::webhook::EventType;

/// What the current policy would do now.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub policy: RetentionPolicy,
    /// Time zone the policy's days, weeks and months are counted in.
    pub timezone: String,
    pub evaluated_at: DateTime<Utc>,
    /// Succeeded backups retention would expire now, and why.
    pub delete: Vec<Verdict>,
    /// Succeeded backups it keeps, and why.
    pub keep: Vec<Verdict>,
}

async fn judge(conn: &mut PgConnection, planet: PlanetId, now: DateTime<Utc>, lock: bool) -> Result<Preview> {
    let (policy, tz) = super::schedules::policy(conn, planet).await?;
    macro_rules! candidates {
        () => {
            "SELECT b.id, b.name, b.created_at, b.pinned, b.temporary, b.expiration_date,
                    (EXISTS (SELECT 1 FROM restores r WHERE r.source_backup_id = b.id AND r.status IN ('scheduled', 'running'))
                     OR EXISTS (SELECT 1 FROM jobs j WHERE j.subject_id = b.id AND j.kind = 'verify-backup'
                                  AND j.state IN ('queued', 'running'))) AS in_use,
                    COALESCE(b.verification->>'status' = 'verified', false) AS verified
             FROM backups b WHERE b.planet_id = $1 AND b.status = 'succeeded'"
        };
    }
    let sql = if lock {
        concat!(candidates!(), " ORDER BY b.id FOR UPDATE OF b")
    } else {
        candidates!()
    };
    let backups = sqlx::query_as::<_, Candidate>(sql)
        .bind(planet)
        .fetch_all(&mut *conn)
        .await?;
    let (keep, delete) = evaluate(&policy, tz, &backups, now).into_iter().partition(|v| v.keep);
    Ok(Preview {
        policy,
        timezone: tz.name().to_owned(),
        evaluated_at: now,
        delete,
        keep,
    })
}

/// What retention would expire now, read-only.
pub async fn preview(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    planet: PlanetId,
    now: DateTime<Utc>,
) -> Result<Preview> {
    super::planets::get(pool, tenant, project, planet).await?;
    let mut conn = pool.acquire().await?;
    judge(&mut conn, planet, now, false).await
}

/// Expires what the planet's policy lets go at `now`; returns the expired backups.
pub async fn apply(pool: &PgPool, planet: PlanetId, now: DateTime<Utc>) -> Result<Vec<Verdict>> {
    let mut tx = pool.begin().await?;
    let preview = judge(&mut tx, planet, now, true).await?;
    let mut expired = Vec::new();
    for v in preview.delete {
        // Checked again row by row: a restore may have started reading it meanwhile.
        let ended = sqlx::query_as::<_, BackupEvent>(sqlx::AssertSqlSafe(format!(
            "UPDATE backups b SET status = 'expired', phase = NULL, error_message = $2
             WHERE b.id = $1 AND b.status = 'succeeded'
               AND NOT EXISTS (SELECT 1 FROM restores r WHERE r.source_backup_id = b.id AND r.status IN ('scheduled', 'running'))
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.subject_id = b.id AND j.kind = 'verify-backup'
                                 AND j.state IN ('queued', 'running'))
             RETURNING {BACKUP_EVENT_COLUMNS}"
        )))
        .bind(v.backup_id)
        .bind(format!("expired by retention: {}", v.reason))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(ended) = ended else { continue };
        super::backups::enqueue_delete(&mut tx, ended.tenant_id, v.backup_id).await?;
        ended.notify(&mut tx, EventType::BackupExpired).await?;
        expired.push(v);
    }
    tx.commit().await?;
    Ok(expired)
}

/// Planets that have succeeded backups, for the periodic pass.
pub async fn planets_with_backups(pool: &PgPool, after: Option<PlanetId>, limit: i64) -> Result<Vec<PlanetId>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT planet_id FROM backups WHERE status = 'succeeded' AND ($1::uuid IS NULL OR planet_id > $1)
         ORDER BY planet_id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
