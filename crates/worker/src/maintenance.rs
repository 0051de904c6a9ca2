//! Periodic work shared by every worker: the scheduler (every tick, on all workers: its claim is
//! transactional), and retention and the reaper (each on one worker per interval: the worker
//! that advances the task's row in `maintenance` runs it).

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use svalbard_core::config::{Config, MaintenanceConfig};
use svalbard_core::ids::PlanetId;
use svalbard_core::repo::limits::Limits;
use svalbard_core::repo::{retention, schedules};
use svalbard_core::storage::Storage;
use tokio_util::sync::CancellationToken;

use crate::reaper;

pub struct Maintenance {
    pub pool: PgPool,
    pub storage: Storage,
    pub config: MaintenanceConfig,
    pub limits: Limits,
    pub max_attempts: i32,
    pub worker_id: String,
}

impl Maintenance {
    #[must_use]
    pub fn new(config: &Config, pool: PgPool, storage: Storage, worker_id: String) -> Self {
        Self {
            pool,
            storage,
            config: config.maintenance.clone(),
            limits: (&config.limits).into(),
            max_attempts: config.worker.max_attempts,
            worker_id,
        }
    }

    /// Runs until `stop` fires: the scheduler and the other tasks in loops of their own, so a
    /// long sweep never delays a due backup.
    pub async fn run(self, stop: CancellationToken) {
        if !self.config.enabled {
            return;
        }
        // At zero from the start, so alerts on `increase()` see the first event.
        for outcome in ["created", "skipped", "coalesced"] {
            metrics::counter!("svalbard_schedule_runs_total", "outcome" => outcome).increment(0);
        }
        metrics::counter!("svalbard_backups_expired_total").increment(0);
        metrics::counter!("svalbard_storage_retries_total").increment(0);
        for action in crate::reaper::ACTIONS {
            metrics::counter!("svalbard_reaper_actions_total", "action" => action).increment(0);
        }
        let tick = Duration::from_secs(self.config.schedule_tick_secs.max(1));
        let scheduler = async {
            loop {
                if let Err(e) = self.schedule().await {
                    tracing::warn!(error = %e, "the scheduler failed; trying again at the next tick");
                }
                if let Err(e) = self.verify_on_cron().await {
                    tracing::warn!(error = %e, "queueing due verifications failed; trying again at the next tick");
                }
                if let Err(e) = self.gauge_verified().await {
                    tracing::debug!(error = %e, "reading the last verified backups failed");
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(tick) => {}
                }
            }
        };
        let tasks = async {
            loop {
                for (task, every) in [
                    ("retention", self.config.retention_every_secs),
                    ("reaper", self.config.reaper_every_secs),
                ] {
                    self.take_turn(task, Duration::from_secs(every)).await;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(tick) => {}
                }
            }
        };
        tokio::join!(scheduler, tasks);
    }

    /// Seconds since the newest verified backup of each planet that has one: a dashboard
    /// alerts when it grows past the planet's verification interval.
    async fn gauge_verified(&self) -> svalbard_core::Result<()> {
        let now = Utc::now();
        for (tenant, project, planet, at) in svalbard_core::repo::backups::last_verified(&self.pool).await? {
            #[allow(clippy::cast_precision_loss)]
            let age = (now - at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!(
                "svalbard_seconds_since_last_verified_backup",
                "tenant_id" => tenant.to_string(),
                "project_id" => project.to_string(),
                "planet_id" => planet.to_string()
            )
            .set(age);
        }
        Ok(())
    }

    async fn take_turn(&self, task: &str, every: Duration) {
        match claim(&self.pool, task, every, &self.worker_id).await {
            Ok(true) => {
                let report = if task == "retention" {
                    self.retention().await.map(|n| serde_json::json!({ "expired": n }))
                } else {
                    self.reap().await.and_then(|r| Ok(serde_json::to_value(r)?))
                };
                let report = report.unwrap_or_else(|e| {
                    tracing::warn!(task, error = %e, "maintenance task failed");
                    serde_json::json!({ "error": e.to_string() })
                });
                if let Err(e) = record(&self.pool, task, &report).await {
                    tracing::debug!(task, error = %e, "recording a maintenance report failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(task, error = %e, "claiming a maintenance task failed"),
        }
    }

    /// Creates the backups of due schedules.
    pub async fn schedule(&self) -> anyhow::Result<Vec<schedules::Run>> {
        let storage = &self.storage;
        let prefix = |t, p, x, b| storage.backup_prefix(t, p, x, b);
        let settings = schedules::Settings {
            limits: self.limits,
            max_attempts: self.max_attempts,
            prefix: &prefix,
            batch: 100,
        };
        let mut runs = Vec::new();
        // A full batch means more may be due.
        loop {
            let batch = schedules::run_due(&self.pool, Utc::now(), &settings).await?;
            let full = i64::try_from(batch.len()).unwrap_or(i64::MAX) >= settings.batch;
            runs.extend(batch);
            if !full {
                break;
            }
        }
        for run in &runs {
            let outcome = if run.backup.is_some() { "created" } else { "skipped" };
            tracing::info!(tenant_id = %run.tenant, planet_id = %run.planet, due = %run.due, coalesced = run.coalesced, outcome = %run.outcome, "schedule ran");
            metrics::counter!("svalbard_schedule_runs_total", "outcome" => outcome).increment(1);
            if run.coalesced > 0 {
                metrics::counter!("svalbard_schedule_runs_total", "outcome" => "coalesced")
                    .increment(u64::from(run.coalesced));
            }
        }
        Ok(runs)
    }

    /// Queues the verifications that schedules' verification crons made due.
    pub async fn verify_on_cron(&self) -> anyhow::Result<Vec<schedules::VerificationRun>> {
        let mut runs = Vec::new();
        loop {
            let batch = schedules::run_due_verifications(&self.pool, Utc::now(), self.max_attempts, 100).await?;
            let full = batch.len() >= 100;
            runs.extend(batch);
            if !full {
                break;
            }
        }
        for run in &runs {
            tracing::info!(tenant_id = %run.tenant, planet_id = %run.planet, outcome = %run.outcome, "verification cron ran");
        }
        Ok(runs)
    }

    /// Applies retention to every planet with backups.
    pub async fn retention(&self) -> anyhow::Result<usize> {
        let mut expired = 0;
        let mut after: Option<PlanetId> = None;
        loop {
            let planets = retention::planets_with_backups(&self.pool, after, 500).await?;
            let Some(last) = planets.last().copied() else { break };
            for planet in planets {
                match apply_retention(&self.pool, planet).await {
                    Ok(n) => expired += n,
                    // One planet's trouble must not stop retention for the others.
                    Err(e) => tracing::warn!(planet_id = %planet, error = %e, "applying retention failed"),
                }
            }
            after = Some(last);
        }
        Ok(expired)
    }

    pub async fn reap(&self) -> anyhow::Result<reaper::Report> {
        let settings = reaper::Settings {
            stale_upload: Duration::from_secs(self.config.stale_upload_secs),
            orphan_grace: Duration::from_secs(self.config.orphan_grace_secs),
            verify_batch: self.config.verify_batch,
            halt_missing_min: self.config.halt_missing_min,
            halt_missing_percent: self.config.halt_missing_percent,
        };
        reaper::sweep(&self.pool, &self.storage, settings, Utc::now()).await
    }
}

/// Expires what the planet's policy lets go now; logs and counts each.
pub async fn apply_retention(pool: &PgPool, planet: PlanetId) -> anyhow::Result<usize> {
    let expired = retention::apply(pool, planet, Utc::now()).await?;
    for v in &expired {
        tracing::info!(planet_id = %planet, backup_id = %v.backup_id, reason = %v.reason, "backup expired by retention");
    }
    metrics::counter!("svalbard_backups_expired_total").increment(expired.len() as u64);
    Ok(expired.len())
}

/// Takes the task's turn if it is due: one worker per interval across the fleet.
async fn claim(pool: &PgPool, task: &str, every: Duration, worker: &str) -> anyhow::Result<bool> {
    sqlx::query("INSERT INTO maintenance (task) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(task)
        .execute(pool)
        .await?;
    let won = sqlx::query(
        "UPDATE maintenance SET next_run_at = now() + make_interval(secs => $2), last_run_at = now(), last_worker = $3
         WHERE task = $1 AND next_run_at <= now()",
    )
    .bind(task)
    .bind(every.as_secs_f64())
    .bind(worker)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(won == 1)
}

async fn record(pool: &PgPool, task: &str, report: &serde_json::Value) -> anyhow::Result<()> {
    sqlx::query("UPDATE maintenance SET last_report = $2 WHERE task = $1")
        .bind(task)
        .bind(report)
        .execute(pool)
        .await?;
    Ok(())
}
