//! The job loop: claim a job, keep its lease alive, run its handler, and hand what the attempt
//! came to to the queue ([`jobs::finish`]), which writes the job and its subject together.
//!
//! An attempt never outlives its lease: the heartbeat cancels it when the job is no longer its
//! own, when the deadline passes, and when renewing keeps failing for so long that the lease
//! could run out before the next beat. The handler runs in a task of its own, so a panic ends
//! the attempt (and its heartbeat) with a clear error instead of leaving the lease renewed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use svalbard_core::config::WorkerConfig;
use svalbard_core::jobs::{self, Abandoned, Applied, FailureKind, Job, Lease, Outcome, RetryPolicy};
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
    /// Another version of the software is needed (a newer archive format, ...).
    #[error("{0}")]
    Incompatible(String),
}

impl JobError {
    fn into_outcome(self) -> Outcome {
        let (error, kind) = match self {
            Self::Transient(m) => (m, FailureKind::Transient),
            Self::Permanent(m) => (m, FailureKind::Permanent),
            Self::Incompatible(m) => (m, FailureKind::Incompatible),
        };
        Outcome::Failed { error, kind }
    }
}

/// What runs one kind of job.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt. `cancel` fires when the job is cancelled, the lease is lost (or could
    /// be), the deadline passes or the worker stops. A result the attempt records is committed
    /// through [`jobs::lock`] with the attempt's lease ([`JobContext::lease`]); failures are
    /// returned and written by the queue, with the subject's transition.
    async fn run(&self, ctx: &JobContext, cancel: CancellationToken) -> Result<(), JobError>;

    /// After the job failed for good (its subject has been ended with it): removes what its
    /// attempts left outside the database. Best effort; the reaper catches the rest.
    async fn failed(&self, _pool: &PgPool, _job: &Abandoned) {}
}

/// Until when the lease is known to hold, by this worker's clock: the start of the last
/// successful renewal plus the lease's length.
struct LeaseClock {
    valid_until: Mutex<Instant>,
}

impl LeaseClock {
    fn valid_until(&self) -> Instant {
        self.valid_until.lock().map_or_else(|_| Instant::now(), |t| *t)
    }

    fn renewed(&self, until: Instant) {
        if let Ok(mut t) = self.valid_until.lock() {
            *t = until;
        }
    }
}

/// One claimed attempt.
pub struct JobContext {
    pub job: Job,
    pub worker_id: String,
    pub pool: PgPool,
    clock: Arc<LeaseClock>,
    margin: Duration,
    cancel: CancellationToken,
}

impl JobContext {
    /// The attempt's lease: what every write it makes is fenced by.
    #[must_use]
    pub fn lease(&self) -> Lease {
        self.job.lease()
    }

    /// Checks, before a destructive step, that the attempt still owns the job and will for at
    /// least one more heartbeat; otherwise stops the attempt.
    pub async fn ensure_lease(&self) -> Result<(), JobError> {
        let lost =
            || JobError::Transient("the attempt lost its lease; it stopped before changing anything else".into());
        if self.cancel.is_cancelled() || Instant::now() + self.margin >= self.clock.valid_until() {
            self.cancel.cancel();
            return Err(lost());
        }
        match jobs::holds(&self.pool, self.lease(), self.margin).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.cancel.cancel();
                Err(lost())
            }
            Err(e) => Err(JobError::Transient(format!("cannot check the attempt's lease: {e}"))),
        }
    }
}

pub struct Worker {
    pool: PgPool,
    config: WorkerConfig,
    id: String,
    handlers: HashMap<&'static str, Arc<dyn Handler>>,
    maintenance: Option<crate::maintenance::Maintenance>,
    webhooks: Option<crate::webhooks::Deliverer>,
    /// Internal names (object storage endpoint, bucket, control database host) that a
    /// tenant-visible error message must not carry.
    internal: Vec<String>,
}

/// How often finished jobs are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

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
            webhooks: None,
            internal: Vec::new(),
        }
    }

    /// Names of the platform's own services, replaced in every error a tenant may read.
    #[must_use]
    pub fn with_internal_names(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.internal.extend(names.into_iter().filter(|n| n.len() >= 3));
        // Longest first, so an endpoint URL goes before the host inside it.
        self.internal.sort_by_key(|n| std::cmp::Reverse(n.len()));
        self
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

    /// Also delivers webhooks.
    #[must_use]
    pub fn with_webhooks(mut self, w: crate::webhooks::Deliverer) -> Self {
        self.webhooks = Some(w);
        self
    }

    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    fn policy(&self) -> RetryPolicy {
        self.config.retry_policy()
    }

    /// Runs until `stop` fires, then lets running jobs finish within the grace period and
    /// releases those that do not.
    pub async fn run(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        // Every series a dashboard or alert reads exists from the start, at zero, so `rate()`
        // and `increase()` see the first event.
        for kind in self.handlers.keys() {
            for outcome in ["succeeded", "retried", "failed", "abandoned"] {
                metrics::counter!("svalbard_jobs_total", "kind" => *kind, "outcome" => outcome).increment(0);
            }
        }
        let maintenance = self.maintenance.take();
        let webhooks = self.webhooks.take();
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.config.concurrency.max(1)));
        let jobs_stop = CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let wake = Arc::new(tokio::sync::Notify::new());
        tracker.spawn(listen(this.pool.clone(), wake.clone(), stop.clone()));
        if let Some(m) = maintenance {
            tracker.spawn(m.run(stop.clone()));
        }
        if let Some(w) = webhooks {
            tracker.spawn(w.run(stop.clone()));
        }
        tracing::info!(worker = %this.id, concurrency = this.config.concurrency, "worker started");
        let poll = Duration::from_secs(this.config.poll_secs.max(1));
        let mut pruned_at: Option<Instant> = None;
        while !stop.is_cancelled() {
            this.recover().await;
            if pruned_at.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(Instant::now());
                this.prune().await;
            }
            if let Err(e) = this.gauge_queue().await {
                tracing::debug!(error = %e, "counting jobs failed");
            }
            // Claim while there are free slots and runnable jobs.
            loop {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                // The lease is counted from before the claim: this worker never believes it
                // longer than the database does.
                let claimed_at = Instant::now();
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
                            me.execute(job, claimed_at, jobs_stop).await;
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
            "SELECT s.state, count(j.id) FROM unnest($1::text[]) AS s(state)
             LEFT JOIN jobs j ON j.state = s.state GROUP BY s.state",
        )
        .bind(jobs::JobState::names(&jobs::JobState::LIVE))
        .fetch_all(&self.pool)
        .await?;
        for (state, n) in counts {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("svalbard_jobs", "state" => state).set(n as f64);
        }
        Ok(())
    }

    /// Takes over jobs whose worker vanished, and ends subjects no job serves any more.
    async fn recover(&self) {
        match jobs::recover_expired(&self.pool, &self.policy()).await {
            Ok(recovery) => {
                for abandoned in recovery.abandoned {
                    tracing::warn!(job_id = %abandoned.id, kind = %abandoned.kind, error = %abandoned.error, "job abandoned");
                    metrics::counter!("svalbard_jobs_total", "kind" => abandoned.kind.clone(), "outcome" => "abandoned")
                        .increment(1);
                    if let Some(h) = self.handlers.get(abandoned.kind.as_str()) {
                        h.failed(&self.pool, &abandoned).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "looking for jobs whose lease expired failed"),
        }
        match jobs::repair_subjects(&self.pool).await {
            Ok(r) if r != jobs::Repaired::default() => {
                tracing::warn!(?r, "repaired subjects left without a live job");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "repairing subjects failed"),
        }
    }

    async fn prune(&self) {
        let age = Duration::from_secs(self.config.job_retention_days.saturating_mul(86_400));
        match jobs::prune(&self.pool, age, 10_000).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "finished jobs pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed"),
        }
    }

    async fn execute(self: Arc<Self>, job: Job, claimed_at: Instant, stopping: CancellationToken) {
        let span = tracing::info_span!(
            "job",
            job_id = %job.id,
            tenant_id = %job.tenant_id,
            kind = %job.kind,
            subject_id = %job.subject_id,
            attempt = job.attempts,
            project_id = tracing::field::Empty,
            planet_id = tracing::field::Empty,
            backup_id = tracing::field::Empty,
            restore_id = tracing::field::Empty,
        );
        async move {
            let lease = job.lease();
            let Some(handler) = self.handlers.get(job.kind.as_str()).cloned() else {
                let outcome = Outcome::Failed {
                    error: format!("no handler for jobs of kind `{}`", job.kind),
                    kind: FailureKind::Permanent,
                };
                self.record(&job, &outcome, None).await;
                return;
            };
            let lease_len = Duration::from_secs(self.config.lease_secs);
            let every = Duration::from_secs(self.config.heartbeat_secs.max(1));
            let cancel = CancellationToken::new();
            // Whatever happens to this task, the attempt and its heartbeat end with it.
            let _stop_attempt = cancel.clone().drop_guard();
            let clock = Arc::new(LeaseClock {
                valid_until: Mutex::new(claimed_at + lease_len),
            });
            let beat = AbortOnDrop(tokio::spawn(
                heartbeat(
                    self.pool.clone(),
                    lease,
                    job.deadline,
                    lease_len,
                    every,
                    clock.clone(),
                    cancel.clone(),
                )
                .in_current_span(),
            ));
            let ctx = Arc::new(JobContext {
                job: job.clone(),
                worker_id: self.id.clone(),
                pool: self.pool.clone(),
                clock,
                margin: every,
                cancel: cancel.clone(),
            });
            let started = Instant::now();
            let mut attempt = tokio::spawn({
                let (handler, ctx, cancel) = (handler.clone(), ctx.clone(), cancel.clone());
                async move { handler.run(&ctx, cancel).await }.in_current_span()
            });
            let joined = tokio::select! {
                r = &mut attempt => Some(r),
                () = cancel.cancelled() => {
                    // The lease is lost (or the deadline passed): the attempt has one beat to
                    // notice, then it is stopped, killing its tools, so nothing it would do later
                    // can touch what the attempt that takes over does.
                    match tokio::time::timeout(every, &mut attempt).await {
                        Ok(r) => Some(r),
                        Err(_) => {
                            attempt.abort();
                            let _ = (&mut attempt).await;
                            tracing::warn!("the attempt did not stop when its lease was lost; it was aborted");
                            Some(Ok(Err(JobError::Transient(
                                "the attempt was stopped: its lease was lost or its deadline passed".into(),
                            ))))
                        }
                    }
                }
                () = stopping.cancelled() => None,
            };
            cancel.cancel();
            drop(beat);
            metrics::histogram!("svalbard_job_duration_seconds", "kind" => job.kind.clone())
                .record(started.elapsed().as_secs_f64());
            let outcome = match joined {
                None => {
                    attempt.abort();
                    let _ = attempt.await;
                    let _ = jobs::release(&self.pool, lease).await;
                    tracing::info!("released at shutdown");
                    return;
                }
                Some(Ok(Ok(()))) => Outcome::Succeeded,
                Some(Ok(Err(e))) => e.into_outcome(),
                Some(Err(e)) => {
                    let what = if e.is_panic() {
                        panic_message(e.into_panic())
                    } else {
                        "the attempt's task was aborted".to_owned()
                    };
                    tracing::error!(panic = %what, "the attempt panicked");
                    Outcome::Failed {
                        error: format!("the worker hit an internal error and stopped the attempt: {what}"),
                        kind: FailureKind::Permanent,
                    }
                }
            };
            self.record(&job, &outcome, Some(handler.as_ref())).await;
        }
        .instrument(span)
        .await;
    }

    /// Hands the outcome to the queue, retrying a few times through a control-database blip
    /// (the lease expiring is the fallback: the job is then recovered).
    async fn record(&self, job: &Job, outcome: &Outcome, handler: Option<&dyn Handler>) {
        let redacted;
        let outcome = match outcome {
            Outcome::Failed { error, kind } if self.internal.iter().any(|n| error.contains(n.as_str())) => {
                // The whole text stays in the log; the job and its subject keep a version that
                // names no internal service.
                tracing::warn!(%error, "attempt failed");
                redacted = Outcome::Failed {
                    error: redact(error, &self.internal),
                    kind: *kind,
                };
                &redacted
            }
            other => other,
        };
        let policy = self.policy();
        let mut tries = 0;
        let applied = loop {
            tries += 1;
            match jobs::finish(&self.pool, job.lease(), outcome, &policy).await {
                Ok(a) => break a,
                Err(e) if tries < 3 => {
                    tracing::warn!(error = %e, "recording the job's outcome failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "recording the job's outcome failed; its lease will expire and it will be recovered");
                    return;
                }
            }
        };
        let kind = job.kind.clone();
        match (applied, outcome) {
            (Applied::Succeeded, _) => {
                metrics::counter!("svalbard_jobs_total", "kind" => kind, "outcome" => "succeeded").increment(1);
            }
            (Applied::WillRetry(after), Outcome::Failed { error, .. }) => {
                tracing::warn!(%error, retry_in = ?after, "attempt failed; will retry");
                metrics::counter!("svalbard_jobs_total", "kind" => kind, "outcome" => "retried").increment(1);
            }
            (Applied::Failed, Outcome::Failed { error, .. }) => {
                tracing::warn!(%error, "job failed");
                metrics::counter!("svalbard_jobs_total", "kind" => kind, "outcome" => "failed").increment(1);
                if let Some(h) = handler {
                    let abandoned = Abandoned {
                        id: job.id,
                        tenant_id: job.tenant_id,
                        kind: job.kind.clone(),
                        subject_id: job.subject_id,
                        error: error.clone(),
                    };
                    h.failed(&self.pool, &abandoned).await;
                }
            }
            // A handler that recorded its result completed the job itself.
            (Applied::Lost, Outcome::Succeeded) => {
                metrics::counter!("svalbard_jobs_total", "kind" => kind, "outcome" => "succeeded").increment(1);
            }
            (Applied::Lost, Outcome::Failed { error, .. }) => {
                tracing::warn!(%error, "the job was taken over or cancelled; this attempt's outcome is dropped");
            }
            (Applied::WillRetry(_) | Applied::Failed, Outcome::Succeeded) => {}
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `text` with each of `names` replaced by a neutral word.
fn redact(text: &str, names: &[String]) -> String {
    names
        .iter()
        .fold(text.to_owned(), |t, n| t.replace(n.as_str(), "[internal]"))
}

/// Keeps the lease alive. Cancels the attempt when the job is no longer its own, past its
/// deadline, or when renewals keep failing and the lease could run out before the next beat.
async fn heartbeat(
    pool: PgPool,
    lease: Lease,
    deadline: Option<chrono::DateTime<chrono::Utc>>,
    length: Duration,
    every: Duration,
    clock: Arc<LeaseClock>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if deadline.is_some_and(|d| d <= chrono::Utc::now()) {
            tracing::warn!("deadline passed; stopping the attempt");
            cancel.cancel();
            return;
        }
        let sent = Instant::now();
        let error = match tokio::time::timeout(every, jobs::heartbeat(&pool, lease, length)).await {
            Ok(Ok(true)) => {
                clock.renewed(sent + length);
                continue;
            }
            Ok(Ok(false)) => {
                tracing::warn!("lease lost (cancelled or taken over); stopping the attempt");
                cancel.cancel();
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the control database did not answer in time".to_owned(),
        };
        if Instant::now() + every >= clock.valid_until() {
            tracing::warn!(%error, "cannot renew the lease, which may run out before the next beat; stopping the attempt");
            cancel.cancel();
            return;
        }
        tracing::warn!(%error, "heartbeat failed; the lease still holds");
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

#[cfg(test)]
mod tests {
    #[test]
    fn internal_names_leave_tenant_messages() {
        let names = vec![
            "http://10.1.2.3:3900".to_owned(),
            "10.1.2.3:3900".to_owned(),
            "bucket prod".to_owned(),
        ];
        let text = "object storage at http://10.1.2.3:3900 (bucket prod, key t/a): connect to 10.1.2.3:3900 refused";
        let out = super::redact(text, &names);
        assert!(!out.contains("10.1.2.3") && !out.contains("prod"), "{out}");
        assert!(out.contains("key t/a"), "{out}");
    }
}
