//! The backup job: probe the server, stream the engine's dump into one archive object, write
//! the manifest, and record the result, fenced by the job's lease at every step. Also the
//! delete job, which removes a backup's objects and leaves a tombstone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::PgPool;
use svalbard_core::archive::{ArchiveHeader, FORMAT_VERSION, Manifest, sha256_checksum};
use svalbard_core::backup::{BackupStatus, Part};
use svalbard_core::config::WorkerConfig;
use svalbard_core::crypto::KeyRing;
use svalbard_core::envelope;
use svalbard_core::ids::BackupId;
use svalbard_core::jobs::{Abandoned, Lease};
use svalbard_core::repo::{backups, keys, planets};
use svalbard_core::storage::Storage;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::engine::{self, Driver};
use crate::pipeline::{UploadError, UploadSettings, UploadTarget, upload_stream};
use crate::process::ProcessStream;
use crate::runner::{Handler, JobContext, JobError};

/// How often progress is written while a dump streams.
const REPORT_EVERY: Duration = Duration::from_secs(2);

pub struct BackupJob {
    pub storage: Storage,
    pub keys: Arc<KeyRing>,
    /// Whether new archives are encrypted for their tenant.
    pub encrypt: bool,
    pub config: WorkerConfig,
    pub targets: Arc<svalbard_core::netpolicy::Guard>,
}

fn transient(e: impl std::fmt::Display) -> JobError {
    JobError::Transient(e.to_string())
}

/// The steps of a backup as shown in its `parts`; failures are counted across attempts.
#[derive(Clone)]
struct Steps(Arc<Mutex<Vec<Part>>>);

impl Steps {
    fn new(parts: Vec<Part>) -> Self {
        Self(Arc::new(Mutex::new(parts)))
    }

    fn set(&self, name: &str, state: &str, size: Option<u64>) {
        let Ok(mut parts) = self.0.lock() else { return };
        if let Some(p) = parts.iter_mut().find(|p| p.name == name) {
            if state == "running" {
                p.start_time = Some(Utc::now());
            }
            if state == "failed" {
                p.failures += 1;
            }
            p.state = state.to_owned();
            if let Some(s) = size {
                p.size_bytes = i64::try_from(s).ok();
            }
        }
    }

    /// The step that was running when an attempt failed.
    fn fail_running(&self) {
        let running: Vec<String> = self
            .snapshot()
            .into_iter()
            .filter(|p| p.state == "running")
            .map(|p| p.name)
            .collect();
        for name in running {
            self.set(&name, "failed", None);
        }
    }

    fn snapshot(&self) -> Vec<Part> {
        self.0.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// Names the backup and its planet on the job's span, so every line the attempt logs has them.
fn record_ids(id: BackupId, project: svalbard_core::ids::ProjectId, planet: svalbard_core::ids::PlanetId) {
    let span = tracing::Span::current();
    span.record("backup_id", tracing::field::display(id));
    span.record("project_id", tracing::field::display(project));
    span.record("planet_id", tracing::field::display(planet));
}

#[async_trait]
impl Handler for BackupJob {
    async fn run(&self, ctx: &JobContext, cancel: CancellationToken) -> Result<(), JobError> {
        let id = BackupId(ctx.job.subject_id);
        let row = backups::for_job(&ctx.pool, ctx.job.tenant_id, id)
            .await
            .map_err(transient)?;
        record_ids(id, row.project_id, row.planet_id);
        if !row.status().map_err(transient)?.in_flight() {
            tracing::info!(status = %row.status, "backup is no longer wanted; nothing to do");
            return Ok(());
        }
        if !backups::mark_running(&ctx.pool, id, ctx.lease())
            .await
            .map_err(transient)?
        {
            return Err(JobError::Transient("the job was taken over or cancelled".into()));
        }
        let steps = Steps::new(row.parts.0.clone());
        let result = self.take(ctx, &row, &steps, &cancel).await;
        if let Err(e) = &result {
            steps.fail_running();
            let _ = backups::report(&ctx.pool, id, ctx.lease(), 0, "failed", &steps.snapshot()).await;
            tracing::warn!(error = %e, "backup attempt failed");
        }
        result
    }

    async fn failed(&self, pool: &PgPool, job: &Abandoned) {
        // Whatever the last attempt left behind is removed now; the reaper catches the rest.
        if let Ok(row) = backups::for_job(pool, job.tenant_id, BackupId(job.subject_id)).await
            && row
                .status()
                .is_ok_and(|s| matches!(s, BackupStatus::Failed | BackupStatus::Incomplete))
            && let Err(e) = self.storage.clear(&row.storage_prefix).await
        {
            tracing::warn!(error = %e, "could not remove the leftovers of a failed backup");
        }
    }
}

impl BackupJob {
    async fn take(
        &self,
        ctx: &JobContext,
        row: &backups::Row,
        steps: &Steps,
        cancel: &CancellationToken,
    ) -> Result<(), JobError> {
        let id = row.id;
        let (planet, conn) =
            planets::get_with_connection(&ctx.pool, &self.keys, row.tenant_id, row.project_id, row.planet_id)
                .await
                .map_err(|e| JobError::Permanent(format!("the planet cannot be read: {e}")))?;
        let conn = crate::target::checked(&ctx.pool, &self.targets, row.tenant_id, conn, None).await?;
        let driver: Box<dyn Driver> = engine::driver(planet.engine, &self.config.pg_bin_roots);
        steps.set("dump", "running", None);
        let probe = driver.probe(&conn).await?;
        tracing::info!(engine_version = %probe.engine_version, tool = %probe.dump_tool.display(), "dumping");

        // An earlier attempt may have left an unfinished upload or an uncommitted archive. Only
        // the lease's holder may clear them: an attempt that lost its lease while probing must
        // not remove what the attempt that took over has stored since.
        ctx.ensure_lease().await?;
        self.storage.clear(&row.storage_prefix).await.map_err(transient)?;
        let tenant_key = if self.encrypt {
            Some(
                keys::current(&ctx.pool, &self.keys, row.tenant_id)
                    .await
                    .map_err(|e| transient(format!("the tenant's archive key cannot be read: {e}")))?,
            )
        } else {
            None
        };
        let key = format!(
            "{}archive-{}.svb.zst{}",
            row.storage_prefix,
            ctx.job.attempts,
            if tenant_key.is_some() { ".age" } else { "" }
        );
        let header = ArchiveHeader {
            format_version: FORMAT_VERSION,
            engine: planet.engine.as_str().to_owned(),
            engine_version: probe.engine_version.clone(),
            tool_version: probe.tool_version.clone(),
            tenant_id: row.tenant_id.0,
            project_id: row.project_id.0,
            planet_id: row.planet_id.0,
            backup_id: id.0,
            created_at: row.created_at,
        };

        // Where the engine can share its dump's snapshot, the rows of every table are counted in
        // it while the dump streams: the record a verification compares the restore with. A
        // source that cannot be counted is still backed up, without the record.
        let session = match driver.snapshot(&conn).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot share the dump's snapshot; its rows will not be counted");
                None
            }
        };
        let dump = ProcessStream::spawn(
            driver.dump(&probe, &conn, session.as_ref().map(|s| s.snapshot.as_str())),
            driver.dump_tool(),
        )
        .map_err(|e| JobError::Permanent(format!("{e:#}")))?;
        // A SQL dump (MySQL) cannot share its snapshot: its rows are counted in the dump itself
        // as it streams by.
        let (input, in_dump): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, _) = match planet.engine {
            svalbard_core::domain::Engine::Mysql => {
                let (counting, counter) = crate::sqlcount::Counting::new(dump);
                (Box::new(counting), Some(counter))
            }
            svalbard_core::domain::Engine::Postgresql => (Box::new(dump), None),
        };
        // The session is handed back with the counts and kept until the dump has ended, so the
        // snapshot outlives the dump's taking it over. An attempt that ends early (cancelled,
        // failed) drops the task, which ends the session and its count on the source at once.
        let counting = session.map(|mut s| {
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
                async move {
                    let counts = s.count_tables().await;
                    (s, counts)
                }
                .instrument(tracing::Span::current()),
            ))
        });

        steps.set("upload", "running", None);
        let progress = Arc::new(AtomicU64::new(0));
        let reporter = tokio::spawn(
            report_progress(
                ctx.pool.clone(),
                id,
                ctx.lease(),
                progress.clone(),
                steps.clone(),
                cancel.clone(),
            )
            .instrument(tracing::Span::current()),
        );
        let settings = UploadSettings {
            part_size: self.config.part_size_mib * 1024 * 1024,
            double_every: self.config.part_double_every,
            parts_in_flight: self.config.parts_in_flight,
            zstd_level: self.config.zstd_level,
        };
        let target = UploadTarget::new(&self.storage, key.clone());
        let uploaded = upload_stream(
            input,
            &header,
            tenant_key.as_ref(),
            &target,
            &settings,
            cancel,
            progress.clone(),
        )
        .await;
        reporter.abort();
        let outcome = uploaded.map_err(|e| match e {
            UploadError::Source(err) => {
                let msg = err.to_string();
                let msg = if msg.contains("password authentication failed") {
                    format!("authentication failed: {msg}")
                } else {
                    msg
                };
                if driver.is_permanent(&msg) {
                    JobError::Permanent(msg)
                } else {
                    JobError::Transient(msg)
                }
            }
            UploadError::Cancelled => JobError::Transient("the backup was cancelled".into()),
            other => transient(other),
        })?;
        let table_counts = match counting {
            Some(task) => match task.await {
                Ok((_session, Ok(counts))) => Some(counts),
                Ok((_, Err(e))) => {
                    tracing::warn!(error = %format!("{e:#}"), "counting the dump's rows failed; the backup has no record of them");
                    None
                }
                Err(_) => None,
            },
            None => in_dump.and_then(|c| c.lock().ok().map(|c| c.counts().clone())),
        };
        steps.set("dump", "succeeded", Some(outcome.uncompressed_bytes));
        steps.set("upload", "succeeded", Some(outcome.size_bytes));

        // The manifest marks the archive complete; write it only while the job is still ours.
        if cancel.is_cancelled() {
            let _ = self.storage.clear(&row.storage_prefix).await;
            return Err(JobError::Transient("the backup was cancelled".into()));
        }
        steps.set("manifest", "running", None);
        let checksum = sha256_checksum(&outcome.sha256_hex);
        let wrapped = match (&tenant_key, &outcome.data_key) {
            (Some(k), Some(data_key)) => Some((k.version, k.wrap(id.0, data_key).map_err(transient)?)),
            _ => None,
        };
        let encryption = if wrapped.is_some() {
            envelope::AGE
        } else {
            envelope::NONE
        };
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            backup_id: id.0,
            engine: header.engine.clone(),
            engine_version: probe.engine_version.clone(),
            tool_version: probe.tool_version.clone(),
            archive_key: key.clone(),
            size_bytes: outcome.size_bytes,
            checksum: checksum.clone(),
            uncompressed_bytes: outcome.uncompressed_bytes,
            encryption: encryption.to_owned(),
            recipient: tenant_key.as_ref().map(|k| k.recipient().to_string()),
            created_at: row.created_at,
            completed_at: Utc::now(),
        };
        let body = serde_json::to_vec_pretty(&manifest).map_err(transient)?;
        self.storage
            .put(
                &format!("{}manifest.json", row.storage_prefix),
                body,
                "application/json",
            )
            .await
            .map_err(transient)?;
        steps.set("manifest", "succeeded", None);
        let committed = backups::succeed(
            &ctx.pool,
            id,
            ctx.lease(),
            &backups::Success {
                object_key: &key,
                size_bytes: outcome.size_bytes,
                checksum: &checksum,
                engine_version: &probe.engine_version,
                tool_version: &probe.tool_version,
                format_version: FORMAT_VERSION,
                bytes_processed: outcome.uncompressed_bytes,
                parts: &steps.snapshot(),
                table_counts: table_counts.as_ref(),
                encryption,
                data_key: wrapped.as_ref().map(|(v, k)| (*v, k.as_slice())),
            },
        )
        .await
        .map_err(transient)?;
        if !committed {
            // Another worker owns the backup now, or it was deleted: our archive is not the one.
            tracing::warn!("lost the backup before committing; removing this attempt's archive");
            let _ = self
                .storage
                .client
                .delete_object()
                .bucket(&self.storage.bucket)
                .key(&key)
                .send()
                .await;
            return Err(JobError::Transient(
                "the job was taken over or cancelled before it committed".into(),
            ));
        }
        metrics::counter!("svalbard_backup_bytes_total", "kind" => "stored").increment(outcome.size_bytes);
        metrics::counter!("svalbard_backup_bytes_total", "kind" => "dumped").increment(outcome.uncompressed_bytes);
        tracing::info!(
            size = outcome.size_bytes,
            dumped = outcome.uncompressed_bytes,
            "backup succeeded"
        );
        match backups::verify_if_due(&ctx.pool, row.planet_id, id, self.config.max_attempts).await {
            Ok(Some(_)) => tracing::info!("verification of the backup queued by the planet's policy"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "queueing the verification the planet's policy asks for failed"),
        }
        // A new good copy may let older ones go; the periodic pass catches a failure here.
        if let Err(e) = crate::maintenance::apply_retention(&ctx.pool, row.planet_id).await {
            tracing::warn!(error = %e, "applying retention after the backup failed");
        }
        Ok(())
    }
}

async fn report_progress(
    pool: PgPool,
    id: BackupId,
    lease: Lease,
    progress: Arc<AtomicU64>,
    steps: Steps,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(REPORT_EVERY) => {}
        }
        let bytes = progress.load(Ordering::Relaxed);
        match backups::report(&pool, id, lease, bytes, "dumping", &steps.snapshot()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("the backup is no longer ours; stopping");
                cancel.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "writing progress failed"),
        }
    }
}

/// Removes a backup's objects, then leaves its row as a `deleted` tombstone (or, for a backup
/// retention expired, `expired` without an archive). Every step can be repeated, so a worker
/// dying half-way is simply followed by another attempt.
pub struct DeleteJob {
    pub storage: Storage,
}

#[async_trait]
impl Handler for DeleteJob {
    async fn run(&self, ctx: &JobContext, _cancel: CancellationToken) -> Result<(), JobError> {
        let id = BackupId(ctx.job.subject_id);
        let row = backups::for_job(&ctx.pool, ctx.job.tenant_id, id)
            .await
            .map_err(transient)?;
        record_ids(id, row.project_id, row.planet_id);
        let status = row.status().map_err(transient)?;
        if !matches!(status, BackupStatus::Deleting | BackupStatus::Expired) {
            return Ok(());
        }
        let removed = self.storage.clear(&row.storage_prefix).await.map_err(transient)?;
        let marked = if status == BackupStatus::Expired {
            backups::mark_purged(&ctx.pool, id, ctx.lease()).await
        } else {
            backups::mark_deleted(&ctx.pool, id, ctx.lease()).await
        };
        if !marked.map_err(transient)? {
            return Err(JobError::Transient("the job was taken over".into()));
        }
        tracing::info!(removed, status = %status, "backup's objects removed");
        Ok(())
    }

    async fn failed(&self, _pool: &PgPool, job: &Abandoned) {
        tracing::error!(backup_id = %job.subject_id, error = %job.error, "deleting a backup's objects keeps failing; it stays `deleting` and its deletion is queued again");
    }
}
