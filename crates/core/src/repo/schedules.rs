//! Schedules, and the scheduler's claim: one transaction locks the due schedules, creates their
//! backups and advances them to their next run, so any number of schedulers create exactly one
//! backup per due time. After downtime the missed runs are coalesced into one backup.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::backup::{Mechanism, Metadata, Method};
use crate::error::{Error, Result};
use crate::ids::{BackupId, PlanetId, ProjectId, TenantId};
use crate::repo::backups::{self, NewBackup};
use crate::repo::limits::Limits;
use crate::schedule::{NewSchedule, RetentionPolicy, Schedule, Spec};

const COLUMNS: &str =
    "tenant_id, project_id, planet_id, cron, timezone, enabled, mechanism, retention, verify_every, verify_cron,
     next_verification_at, verify_on, next_run_at, last_run_at, last_outcome, last_backup_id, skipped_runs, created_at,
     updated_at";

#[derive(sqlx::FromRow)]
struct Row {
    tenant_id: TenantId,
    project_id: ProjectId,
    planet_id: PlanetId,
    cron: String,
    timezone: String,
    enabled: bool,
    mechanism: String,
    retention: sqlx::types::Json<RetentionPolicy>,
    verify_every: Option<i32>,
    verify_cron: Option<String>,
    next_verification_at: Option<DateTime<Utc>>,
    verify_on: String,
    next_run_at: Option<DateTime<Utc>>,
    last_run_at: Option<DateTime<Utc>>,
    last_outcome: Option<String>,
    last_backup_id: Option<BackupId>,
    skipped_runs: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Row {
    fn into_schedule(self) -> Result<Schedule> {
        Ok(Schedule {
            tenant_id: self.tenant_id,
            project_id: self.project_id,
            planet_id: self.planet_id,
            cron: self.cron,
            timezone: self.timezone,
            enabled: self.enabled,
            mechanism: self
                .mechanism
                .parse()
                .map_err(|_| Error::Other(anyhow::anyhow!("stored schedule has an invalid mechanism")))?,
            retention: self.retention.0,
            verify_every: self.verify_every,
            verify_cron: self.verify_cron,
            next_verification_at: self.next_verification_at,
            verify_on: self
                .verify_on
                .parse()
                .map_err(|_| Error::Other(anyhow::anyhow!("stored schedule has an invalid verify_on")))?,
            next_run_at: self.next_run_at,
            last_run_at: self.last_run_at,
            last_outcome: self.last_outcome,
            last_backup_id: self.last_backup_id,
            skipped_runs: self.skipped_runs,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Creates or replaces the planet's schedule; the next run is computed from `now`.
pub async fn put(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    planet: PlanetId,
    new: &NewSchedule,
    now: DateTime<Utc>,
    audit: &super::audit::Entry,
) -> Result<(Schedule, bool)> {
    super::planets::get(pool, tenant, project, planet).await?;
    let mut tx = pool.begin().await?;
    let next = new.enabled.then(|| new.spec.next_after(now)).flatten();
    let next_verification = new
        .verify_cron
        .as_ref()
        .filter(|_| new.enabled)
        .and_then(|(_, spec)| spec.next_after(now));
    let row = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO schedules (planet_id, tenant_id, project_id, cron, timezone, enabled, mechanism, retention, next_run_at,
                                verify_every, verify_cron, next_verification_at, verify_on)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (planet_id) DO UPDATE SET cron = $4, timezone = $5, enabled = $6, mechanism = $7,
                retention = $8, next_run_at = $9, verify_every = $10, verify_cron = $11, next_verification_at = $12,
                verify_on = $13, updated_at = now()
         RETURNING {COLUMNS}"
    )))
    .bind(planet)
    .bind(tenant)
    .bind(project)
    .bind(&new.cron)
    .bind(&new.timezone)
    .bind(new.enabled)
    .bind(new.mechanism.as_str())
    .bind(sqlx::types::Json(&new.retention))
    .bind(next)
    .bind(new.verify_every)
    .bind(new.verify_cron.as_ref().map(|(text, _)| text.as_str()))
    .bind(next_verification)
    .bind(new.verify_on.as_str())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| super::fk_to_not_found(e, "planet"))?;
    audit.write(&mut tx, Some(planet.0)).await?;
    tx.commit().await?;
    // Inserted and updated rows differ in that an update moves `updated_at` past `created_at`.
    let created = row.created_at == row.updated_at;
    Ok((row.into_schedule()?, created))
}

pub async fn get(pool: &PgPool, tenant: TenantId, project: ProjectId, planet: PlanetId) -> Result<Schedule> {
    super::planets::get(pool, tenant, project, planet).await?;
    sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM schedules WHERE tenant_id = $1 AND project_id = $2 AND planet_id = $3"
    )))
    .bind(tenant)
    .bind(project)
    .bind(planet)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("schedule"))?
    .into_schedule()
}

pub async fn delete(
    pool: &PgPool,
    tenant: TenantId,
    project: ProjectId,
    planet: PlanetId,
    audit: &super::audit::Entry,
) -> Result<()> {
    super::planets::get(pool, tenant, project, planet).await?;
    let mut tx = pool.begin().await?;
    let n = sqlx::query("DELETE FROM schedules WHERE tenant_id = $1 AND project_id = $2 AND planet_id = $3")
        .bind(tenant)
        .bind(project)
        .bind(planet)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(Error::NotFound("schedule"));
    }
    audit.write(&mut tx, Some(planet.0)).await?;
    tx.commit().await?;
    Ok(())
}

/// The retention policy of a planet and the time zone its days are counted in; the defaults
/// when the planet has no schedule.
pub async fn policy(conn: &mut PgConnection, planet: PlanetId) -> Result<(RetentionPolicy, chrono_tz::Tz)> {
    let row: Option<(sqlx::types::Json<RetentionPolicy>, String)> =
        sqlx::query_as("SELECT retention, timezone FROM schedules WHERE planet_id = $1")
            .bind(planet)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match row {
        Some((policy, tz)) => (policy.0, tz.parse().unwrap_or(chrono_tz::UTC)),
        None => (RetentionPolicy::default(), chrono_tz::UTC),
    })
}

/// What the scheduler did with one due schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub tenant: TenantId,
    pub planet: PlanetId,
    /// The due time handled.
    pub due: DateTime<Utc>,
    /// The backup created, or `None` when the run was skipped.
    pub backup: Option<BackupId>,
    /// Later due times that had also passed and were folded into this run.
    pub coalesced: u32,
    pub outcome: String,
}

#[derive(sqlx::FromRow)]
struct DueRow {
    tenant_id: TenantId,
    project_id: ProjectId,
    planet_id: PlanetId,
    cron: String,
    timezone: String,
    mechanism: String,
    retention: sqlx::types::Json<RetentionPolicy>,
    next_run_at: DateTime<Utc>,
}

/// What the scheduler needs to create backups.
pub struct Settings<'a> {
    pub limits: Limits,
    pub max_attempts: i32,
    pub prefix: &'a (dyn Fn(TenantId, ProjectId, PlanetId, BackupId) -> String + Sync),
    /// Schedules handled per transaction.
    pub batch: i64,
}

/// Handles the schedules due at `now` (up to a batch): creates each one's backup
/// (`method: periodic`) or records why the run was skipped, and moves it to its first run after
/// `now`. Each schedule is handled in a transaction of its own that locks the tenant, the planet
/// and then the schedule (the order creates and deletes take them in), so a schedule another
/// scheduler is handling is passed over and is no longer due once it commits. A schedule that
/// fails is recorded as such and does not hold up the others.
pub async fn run_due(pool: &PgPool, now: DateTime<Utc>, settings: &Settings<'_>) -> Result<Vec<Run>> {
    let due: Vec<(TenantId, PlanetId, String, String)> = sqlx::query_as(
        "SELECT tenant_id, planet_id, cron, timezone FROM schedules WHERE enabled AND next_run_at <= $1
         ORDER BY next_run_at LIMIT $2",
    )
    .bind(now)
    .bind(settings.batch)
    .fetch_all(pool)
    .await?;
    let mut runs = Vec::with_capacity(due.len());
    for (tenant, planet, cron, timezone) in due {
        match run_one(pool, now, settings, tenant, planet).await {
            Ok(Some(run)) => runs.push(run),
            Ok(None) => {}
            Err(e) => {
                let next = Spec::parse(&cron, &timezone).ok().and_then(|s| s.next_after(now));
                let outcome = format!("failed: {e}");
                let recorded: Option<DateTime<Utc>> = sqlx::query_scalar(
                    "UPDATE schedules SET next_run_at = $2, last_run_at = next_run_at, last_outcome = $3,
                            skipped_runs = skipped_runs + 1, enabled = enabled AND $2 IS NOT NULL, updated_at = now()
                     WHERE planet_id = $1 AND enabled AND next_run_at <= $4
                     RETURNING last_run_at",
                )
                .bind(planet)
                .bind(next)
                .bind(&outcome)
                .bind(now)
                .fetch_optional(pool)
                .await?;
                if let Some(due) = recorded {
                    runs.push(Run {
                        tenant,
                        planet,
                        due,
                        backup: None,
                        coalesced: 0,
                        outcome,
                    });
                }
            }
        }
    }
    Ok(runs)
}

async fn run_one(
    pool: &PgPool,
    now: DateTime<Utc>,
    settings: &Settings<'_>,
    tenant: TenantId,
    planet: PlanetId,
) -> Result<Option<Run>> {
    let mut tx = pool.begin().await?;
    super::limits::lock_tenant(&mut tx, tenant).await?;
    sqlx::query("SELECT 1 FROM planets WHERE id = $1 FOR SHARE")
        .bind(planet)
        .execute(&mut *tx)
        .await?;
    let Some(d) = sqlx::query_as::<_, DueRow>(
        "SELECT tenant_id, project_id, planet_id, cron, timezone, mechanism, retention, next_run_at
         FROM schedules WHERE planet_id = $1 AND enabled AND next_run_at <= $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(planet)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?
    else {
        // Another scheduler handled it meanwhile.
        return Ok(None);
    };
    let spec = Spec::parse(&d.cron, &d.timezone);
    let (next, coalesced) = match &spec {
        Ok(spec) => (spec.next_after(now), spec.count_between(d.next_run_at, now)),
        Err(_) => (None, 0),
    };
    let created = match spec {
        Err(_) => Err(Error::Conflict(
            "the stored cron expression or time zone is invalid; schedule disabled".into(),
        )),
        Ok(_) => {
            let new = NewBackup {
                mechanism: d.mechanism.parse().unwrap_or(Mechanism::Logical),
                method: Method::Periodic,
                planet_class: None,
                temporary: false,
                retention_days: d.retention.0.retention_period_in_days,
                metadata: Metadata {
                    name: Some(format!("scheduled {}", d.next_run_at.format("%Y-%m-%dT%H:%M:%SZ"))),
                    description: None,
                },
                max_attempts: settings.max_attempts,
                limits: settings.limits,
            };
            let prefix = settings.prefix;
            backups::create_in(
                &mut tx,
                d.tenant_id,
                d.project_id,
                d.planet_id,
                |id| prefix(d.tenant_id, d.project_id, d.planet_id, id),
                &new,
                now,
            )
            .await
        }
    };
    let (backup, outcome) = match created {
        Ok(id) if coalesced > 0 => (
            Some(id),
            format!("created backup {id}; {coalesced} missed run(s) coalesced into it"),
        ),
        Ok(id) => (Some(id), format!("created backup {id}")),
        Err(Error::Conflict(msg) | Error::LimitReached { message: msg, .. }) => (None, format!("skipped: {msg}")),
        Err(e) => return Err(e),
    };
    sqlx::query(
        "UPDATE schedules SET next_run_at = $2, last_run_at = $3, last_outcome = $4,
                last_backup_id = COALESCE($5, last_backup_id),
                skipped_runs = skipped_runs + CASE WHEN $5 IS NULL THEN 1 ELSE 0 END,
                enabled = enabled AND $2 IS NOT NULL, updated_at = now()
         WHERE planet_id = $1",
    )
    .bind(d.planet_id)
    .bind(next)
    .bind(d.next_run_at)
    .bind(&outcome)
    .bind(backup)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(Run {
        tenant: d.tenant_id,
        planet: d.planet_id,
        due: d.next_run_at,
        backup,
        coalesced,
        outcome,
    }))
}

/// A verification on a cron that came due.
#[derive(Debug, Clone)]
pub struct VerificationRun {
    pub tenant: TenantId,
    pub planet: PlanetId,
    /// The backup whose verification was queued, if one was.
    pub backup: Option<BackupId>,
    pub outcome: String,
}

/// Queues the verification of each due schedule's newest succeeded backup (up to `batch`
/// schedules) and moves the schedule to its next verification. One transaction per schedule
/// locks it (`SKIP LOCKED`), so any number of schedulers queue one verification per due time;
/// a planet whose newest backup is being verified already, or that has none, is passed over
/// until the next time.
pub async fn run_due_verifications(
    pool: &PgPool,
    now: DateTime<Utc>,
    max_attempts: i32,
    batch: i64,
) -> Result<Vec<VerificationRun>> {
    let due: Vec<PlanetId> = sqlx::query_scalar(
        "SELECT planet_id FROM schedules
         WHERE enabled AND verify_cron IS NOT NULL AND next_verification_at <= $1
         ORDER BY next_verification_at LIMIT $2",
    )
    .bind(now)
    .bind(batch)
    .fetch_all(pool)
    .await?;
    let mut runs = Vec::with_capacity(due.len());
    for planet in due {
        match verify_one(pool, now, max_attempts, planet).await {
            Ok(Some(run)) => runs.push(run),
            Ok(None) => {}
            Err(e) => {
                // One schedule that fails is moved on to its next time, so it cannot hold up the
                // others due after it.
                tracing::warn!(planet_id = %planet, error = %e, "queueing a due verification failed");
                let next: Option<(String, String)> =
                    sqlx::query_as("SELECT verify_cron, timezone FROM schedules WHERE planet_id = $1")
                        .bind(planet)
                        .fetch_optional(pool)
                        .await?;
                let next = next
                    .and_then(|(c, tz)| Spec::parse(&c, &tz).ok())
                    .and_then(|s| s.next_after(now));
                sqlx::query("UPDATE schedules SET next_verification_at = $2 WHERE planet_id = $1")
                    .bind(planet)
                    .bind(next)
                    .execute(pool)
                    .await?;
            }
        }
    }
    Ok(runs)
}

async fn verify_one(
    pool: &PgPool,
    now: DateTime<Utc>,
    max_attempts: i32,
    planet: PlanetId,
) -> Result<Option<VerificationRun>> {
    {
        let mut tx = pool.begin().await?;
        let row: Option<(TenantId, String, String)> = sqlx::query_as(
            "SELECT tenant_id, verify_cron, timezone FROM schedules
             WHERE planet_id = $1 AND enabled AND verify_cron IS NOT NULL AND next_verification_at <= $2
             FOR UPDATE SKIP LOCKED",
        )
        .bind(planet)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((tenant, cron, timezone)) = row else {
            return Ok(None);
        };
        let next = Spec::parse(&cron, &timezone).ok().and_then(|s| s.next_after(now));
        let newest: Option<BackupId> = sqlx::query_scalar(
            // Locked as an on-demand verification locks it, so the two cannot both queue one.
            "SELECT id FROM backups WHERE planet_id = $1 AND status = 'succeeded' ORDER BY id DESC LIMIT 1
             FOR UPDATE",
        )
        .bind(planet)
        .fetch_optional(&mut *tx)
        .await?;
        let (backup, outcome) = match newest {
            None => (None, "skipped: the planet has no succeeded backup".to_owned()),
            Some(id) if backups::verification_pending(&mut tx, id).await? => {
                (None, format!("skipped: backup {id} is being verified already"))
            }
            Some(id) => {
                backups::enqueue_verification(&mut tx, tenant, id, max_attempts).await?;
                (Some(id), format!("queued the verification of backup {id}"))
            }
        };
        sqlx::query("UPDATE schedules SET next_verification_at = $2 WHERE planet_id = $1")
            .bind(planet)
            .bind(next)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(VerificationRun {
            tenant,
            planet,
            backup,
            outcome,
        }))
    }
}

/// Where verifications of the planet's backups restore (the platform's server when the planet
/// has no schedule).
pub async fn verify_on(pool: &PgPool, planet: PlanetId) -> Result<crate::schedule::VerifyOn> {
    let on: Option<String> = sqlx::query_scalar("SELECT verify_on FROM schedules WHERE planet_id = $1")
        .bind(planet)
        .fetch_optional(pool)
        .await?;
    Ok(on
        .and_then(|s| s.parse().ok())
        .unwrap_or(crate::schedule::VerifyOn::Platform))
}
