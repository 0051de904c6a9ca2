//! The job loop: claim, heartbeat, run, complete — fenced at every step.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use svalbard_core::config::WorkerConfig;
use svalbard_core::jobs::{self, Abandoned, Failure, Job};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// How an attempt ended badly.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (storage unreachable, connection reset, ...).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (bad credentials, invalid archive, ...).
    #[error("{0}")]
    Permanent(String),
}

/// What runs one kind of job.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Runs one attempt. `cancel` fires when the job is cancelled, the lease is lost, the
    /// deadline passes or the worker stops.
    async fn run(&self, ctx: &JobContext, cancel: CancellationToken) -> Result<(), JobError>;

    /// Notes on the job's subject that an attempt failed and another will follow.
    async fn retrying(&self, _pool: &PgPool, _job: &Job, _error: &str) -> anyhow::Result<()> {
        Ok(())
    }

    /// Records the final outcome on the job's subject after the last failed attempt.
    async fn give_up(&self, pool: &PgPool, job: &Abandoned, error: &str, permanent: bool) -> anyhow::Result<()>;
}

/// One claimed attempt.
pub struct JobContext {
    pub job: Job,
    pub worker_id: String,
    pub pool: PgPool,
}

pub struct Worker {
    pool: PgPool,
    config: WorkerConfig,
    id: String,
    handlers: HashMap<&'static str, Arc<dyn Handler>>,
    maintenance: Option<crate::maintenance::Maintenance>,
}

impl Worker {
    #[must_use]
    pub fn new(pool: PgPool, config: WorkerConfig) -> Self {
        let id = format!(
            "{}-{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        Self {
            pool,
            config,
            id,
            handlers: HashMap::new(),
            maintenance: None,
        }
    }

    #[must_use]
    pub fn with_handler(mut self, kind: &'static str, handler: Arc<dyn Handler>) -> Self {
        self.handlers.insert(kind, handler);
        self
    }

    /// Also runs the scheduler, retention and the reaper.
    #[must_use]
    pub fn with_maintenance(mut self, m: crate::maintenance::Maintenance) -> Self {
        self.maintenance = Some(m);
        self
    }

    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until `stop` fires, then lets running jobs finish within the grace period and
    /// releases those that do not.
    pub async fn run(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let maintenance = self.maintenance.take();
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.config.concurrency.max(1)));
        let jobs_stop = CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let wake = Arc::new(tokio::sync::Notify::new());
        tracker.spawn(listen(this.pool.clone(), wake.clone(), stop.clone()));
        if let Some(m) = maintenance {
            tracker.spawn(m.run(stop.clone()));
        }
        tracing::info!(worker = %this.id, concurrency = this.config.concurrency, "worker started");
        let poll = Duration::from_secs(this.config.poll_secs.max(1));
        while !stop.is_cancelled() {
            if let Err(e) = this.recover().await {
                tracing::warn!(error = %e, "recovering expired jobs failed");
            }
            if let Err(e) = this.gauge_queue().await {
                tracing::debug!(error = %e, "counting jobs failed");
            }
            // Claim while there are free slots and runnable jobs.
            loop {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                match jobs::claim(
                    &this.pool,
                    &this.id,
                    Duration::from_secs(this.config.lease_secs),
                    Duration::from_secs(this.config.job_deadline_secs),
                )
                .await
                {
                    Ok(Some(job)) => {
                        let me = this.clone();
                        let jobs_stop = jobs_stop.clone();
                        tracker.spawn(async move {
                            me.execute(job, jobs_stop).await;
                            drop(permit);
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming a job failed");
                        break;
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
        tracker.close();
        let grace = Duration::from_secs(this.config.shutdown_grace_secs);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("grace period over; releasing running jobs");
            jobs_stop.cancel();
            tracker.wait().await;
        }
        tracing::info!(worker = %this.id, "worker stopped");
        Ok(())
    }

    /// Jobs waiting and running, across all workers, for dashboards.
    async fn gauge_queue(&self) -> anyhow::Result<()> {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT s.state, count(j.id) FROM (VALUES ('queued'), ('running')) AS s(state)
             LEFT JOIN jobs j ON j.state = s.state GROUP BY s.state",
        )
        .fetch_all(&self.pool)
        .await?;
        for (state, n) in counts {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("svalbard_jobs", "state" => state).set(n as f64);
        }
        Ok(())
    }

    async fn recover(&self) -> anyhow::Result<()> {
        for abandoned in jobs::recover_expired(&self.pool, Duration::from_secs(self.config.backoff_base_secs)).await? {
            let error = abandoned.last_error.clone().unwrap_or_default();
            tracing::warn!(job_id = %abandoned.id, kind = %abandoned.kind, %error, "job abandoned");
            metrics::counter!("svalbard_jobs_total", "kind" => abandoned.kind.clone(), "outcome" => "abandoned")
                .increment(1);
            if let Some(h) = self.handlers.get(abandoned.kind.as_str()) {
                h.give_up(&self.pool, &abandoned, &error, false).await?;
            }
        }
        Ok(())
    }

    async fn execute(self: Arc<Self>, job: Job, stopping: CancellationToken) {
        let span = tracing::info_span!(
            "job",
            job_id = %job.id,
            tenant_id = %job.tenant_id,
            kind = %job.kind,
            subject_id = %job.subject_id,
            attempt = job.attempts,
            backup_id = tracing::field::Empty,
        );
        async move {
            let Some(handler) = self.handlers.get(job.kind.as_str()).cloned() else {
                let mut conn = match self.pool.acquire().await {
                    Ok(c) => c,
                    Err(e) => return tracing::warn!(error = %e, "no connection to fail an unknown job"),
                };
                let msg = format!("no handler for jobs of kind `{}`", job.kind);
                let _ = jobs::fail(&mut conn, &job, &self.id, &msg, false, Duration::ZERO).await;
                return;
            };
            let cancel = CancellationToken::new();
            let heartbeat = tokio::spawn(heartbeat(
                self.pool.clone(),
                job.clone(),
                self.id.clone(),
                Duration::from_secs(self.config.lease_secs),
                Duration::from_secs(self.config.heartbeat_secs.max(1)),
                cancel.clone(),
            ));
            let ctx = JobContext { job: job.clone(), worker_id: self.id.clone(), pool: self.pool.clone() };
            let started = std::time::Instant::now();
            let outcome = tokio::select! {
                r = handler.run(&ctx, cancel.clone()) => Some(r),
                () = stopping.cancelled() => None,
            };
            cancel.cancel();
            heartbeat.abort();
            metrics::histogram!("svalbard_job_duration_seconds", "kind" => job.kind.clone()).record(started.elapsed().as_secs_f64());
            let Some(outcome) = outcome else {
                let _ = jobs::release(&self.pool, job.id, &self.id).await;
                tracing::info!("released at shutdown");
                return;
            };
            if let Err(e) = self.finish(&job, outcome, handler.as_ref()).await {
                tracing::error!(error = %e, "recording the job outcome failed; its lease will expire and it will be retried");
            }
        }
        .instrument(span)
        .await;
    }

    async fn finish(&self, job: &Job, outcome: Result<(), JobError>, handler: &dyn Handler) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        match outcome {
            Ok(()) => {
                // The handler commits its own result fenced; completing here is bookkeeping.
                jobs::complete(&mut conn, job.id, &self.id).await?;
                metrics::counter!("svalbard_jobs_total", "kind" => job.kind.clone(), "outcome" => "succeeded")
                    .increment(1);
            }
            Err(e) => {
                let (msg, transient) = match &e {
                    JobError::Transient(m) => (m.as_str(), true),
                    JobError::Permanent(m) => (m.as_str(), false),
                };
                let backoff = Duration::from_secs(self.config.backoff_base_secs);
                match jobs::fail(&mut conn, job, &self.id, msg, transient, backoff).await? {
                    Failure::WillRetry => {
                        tracing::warn!(error = msg, "attempt failed; will retry");
                        handler.retrying(&self.pool, job, msg).await?;
                        metrics::counter!("svalbard_jobs_total", "kind" => job.kind.clone(), "outcome" => "retried")
                            .increment(1);
                    }
                    Failure::Final => {
                        tracing::warn!(error = msg, "job failed");
                        metrics::counter!("svalbard_jobs_total", "kind" => job.kind.clone(), "outcome" => "failed")
                            .increment(1);
                        let abandoned = Abandoned {
                            id: job.id,
                            tenant_id: job.tenant_id,
                            kind: job.kind.clone(),
                            subject_id: job.subject_id,
                            last_error: Some(msg.to_owned()),
                        };
                        handler.give_up(&self.pool, &abandoned, msg, !transient).await?;
                    }
                    Failure::Lost => tracing::warn!("the job was taken over or cancelled; outcome dropped"),
                }
            }
        }
        Ok(())
    }
}

/// Keeps the lease alive; cancels the attempt when the job is no longer ours or past its deadline.
async fn heartbeat(
    pool: PgPool,
    job: Job,
    worker: String,
    lease: Duration,
    every: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if job.deadline.is_some_and(|d| d <= chrono::Utc::now()) {
            tracing::warn!("deadline passed; stopping the attempt");
            cancel.cancel();
            return;
        }
        match jobs::heartbeat(&pool, job.id, &worker, lease).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("lease lost (cancelled or taken over); stopping the attempt");
                cancel.cancel();
                return;
            }
            // A missed beat is not fatal; the lease outlives several beats.
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Wakes the loop on `NOTIFY`; reconnects when the connection drops. Polling remains the truth.
async fn listen(pool: PgPool, wake: Arc<tokio::sync::Notify>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "LISTEN connection failed; retrying");
                tokio::select! { () = stop.cancelled() => return, () = tokio::time::sleep(Duration::from_secs(5)) => continue }
            }
        };
        if listener.listen(jobs::CHANNEL).await.is_err() {
            continue;
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                n = listener.recv() => match n {
                    Ok(_) => wake.notify_one(),
                    Err(_) => break,
                },
            }
        }
    }
}
