//! The verification job: restore a backup's archive into a scratch database on a server of the
//! platform (or, when the planet's policy says `verifyOn: source`, on the planet's own server,
//! checked against the target policy as a restore's target is), count what it holds, compare
//! that with the rows counted while dumping, and drop the scratch database, whatever happened.
//!
//! The archive goes through the same checks as a restore (checksum against the catalog, format
//! and versions) and the same sandboxed tools. A verification that cannot restore the archive
//! fails its job, and the queue records the failure on the backup; one that restores it records
//! what it found, `verified` or `failed` with the tables that differ.

use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::PgPool;
use svalbard_core::config::{VerificationConfig, VerificationServer};
use svalbard_core::domain::Engine;
use svalbard_core::dumpinfo::decompress_prefix;
use svalbard_core::ids::BackupId;
use svalbard_core::jobs::Abandoned;
use svalbard_core::repo::planets::Connection;
use svalbard_core::repo::{backups, planets, schedules};
use svalbard_core::schedule::VerifyOn;
use svalbard_core::verification::{self, VerificationStatus, scratch_database};
use tokio_util::sync::CancellationToken;

use crate::engine::{self, Driver};
use crate::restore::{ArchiveErrorOr, Reading, RestoreJob, check_belongs, detect};
use crate::runner::{Handler, JobContext, JobError};

pub struct VerifyJob {
    /// Reads and feeds archives as a restore does.
    pub archives: RestoreJob,
    pub servers: VerificationConfig,
}

fn transient(e: impl std::fmt::Display) -> JobError {
    JobError::Transient(e.to_string())
}

/// Counts a verification's outcome and makes a failure loud.
fn announce(status: VerificationStatus, backup: BackupId, detail: &str) {
    metrics::counter!("svalbard_verifications_total", "outcome" => status.as_str()).increment(1);
    match status {
        VerificationStatus::Verified => tracing::info!(backup_id = %backup, "backup verified by restore"),
        VerificationStatus::Failed => {
            tracing::error!(backup_id = %backup, detail, "backup verification failed: the archive does not restore to what was dumped");
        }
    }
}

impl VerifyJob {
    fn server(&self, engine: Engine) -> (&VerificationServer, Connection) {
        let server = match engine {
            Engine::Postgresql => &self.servers.postgresql,
            Engine::Mysql => &self.servers.mysql,
        };
        let conn = Connection {
            host: server.host.clone(),
            port: server.port,
            database: match engine {
                Engine::Postgresql => "postgres".to_owned(),
                Engine::Mysql => String::new(),
            },
            user: server.user.clone(),
            sslmode: server.sslmode.parse().unwrap_or(svalbard_core::domain::SslMode::Prefer),
            password: server.password.clone(),
            hostaddr: None,
        };
        (server, conn)
    }

    /// The platform's verification server is none of a tenant's business: its address is cut
    /// from what the backup's verification shows.
    fn redact(server: Option<&VerificationServer>, e: JobError) -> JobError {
        let Some(server) = server else { return e };
        let cut = |m: String| {
            m.replace(&format!("{}:{}", server.host, server.port), "[verification server]")
                .replace(&format!("\"{}\"", server.host), "[verification server]")
        };
        match e {
            JobError::Transient(m) => JobError::Transient(cut(m)),
            JobError::Permanent(m) => JobError::Permanent(cut(m)),
            JobError::Incompatible(m) => JobError::Incompatible(cut(m)),
        }
    }
}

#[async_trait]
impl Handler for VerifyJob {
    async fn run(&self, ctx: &JobContext, cancel: CancellationToken) -> Result<(), JobError> {
        let started = Instant::now();
        let id = BackupId(ctx.job.subject_id);
        tracing::Span::current().record("backup_id", tracing::field::display(id));
        let row = backups::for_job(&ctx.pool, ctx.job.tenant_id, id)
            .await
            .map_err(transient)?;
        if row.status().map_err(transient)? != svalbard_core::backup::BackupStatus::Succeeded {
            tracing::info!(status = %row.status, "the backup is no longer succeeded; nothing to verify");
            return Ok(());
        }
        let engine: Engine = row
            .engine
            .parse()
            .map_err(|_| JobError::Permanent("unknown engine".into()))?;
        let scratch = scratch_database(id.0, ctx.job.attempts);
        let (server, conn) = match schedules::verify_on(&ctx.pool, row.planet_id)
            .await
            .map_err(transient)?
        {
            VerifyOn::Platform => {
                let (server, conn) = self.server(engine);
                (Some(server), conn)
            }
            VerifyOn::Source => {
                let (_, conn) = planets::get_with_connection(
                    &ctx.pool,
                    &self.archives.keys,
                    row.tenant_id,
                    row.project_id,
                    row.planet_id,
                )
                .await
                .map_err(|e| JobError::Permanent(format!("the planet cannot be read: {e}")))?;
                let conn =
                    crate::target::checked(&ctx.pool, &self.archives.targets, row.tenant_id, conn, Some(&scratch))
                        .await?;
                (None, conn)
            }
        };
        let driver = engine::driver(engine, &self.archives.config.pg_bin_roots);
        let restored = self.restore(ctx, &row, driver.as_ref(), &conn, &scratch, &cancel).await;
        // The scratch database goes whatever happened, and with it what an earlier attempt that
        // died may have left.
        if let Err(e) = driver.drop_database(&conn, &scratch).await {
            tracing::warn!(error = %e, database = %scratch, "dropping the verification's scratch database failed");
        }
        let restored = restored.map_err(|e| Self::redact(server, e))?;
        let took = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let outcome = verification::judge(row.table_counts.as_ref().map(|c| &c.0), &restored, Utc::now(), took);
        if !backups::record_verification(&ctx.pool, id, ctx.lease(), &outcome)
            .await
            .map_err(transient)?
        {
            return Err(JobError::Transient("the job was taken over before it committed".into()));
        }
        let detail = outcome
            .mismatches
            .iter()
            .map(|m| format!("{} {}", m.table, m.kind.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        announce(outcome.status, id, &detail);
        Ok(())
    }

    async fn failed(&self, _pool: &PgPool, job: &Abandoned) {
        announce(VerificationStatus::Failed, BackupId(job.subject_id), &job.error);
    }
}

impl VerifyJob {
    /// Checks the archive, restores it into `scratch` and counts its tables.
    async fn restore(
        &self,
        ctx: &JobContext,
        row: &backups::Row,
        driver: &dyn Driver,
        conn: &Connection,
        scratch: &str,
        cancel: &CancellationToken,
    ) -> Result<verification::TableCounts, JobError> {
        let key = row
            .object_key
            .clone()
            .ok_or_else(|| JobError::Permanent("the backup has no archive".into()))?;
        let tool = driver.restore_tool()?;
        let (head, actual, etag) = self.archives.hash_archive(&key, cancel).await?;
        if let Some(expected) = &row.checksum
            && format!("sha256:{actual}") != *expected
        {
            return Err(JobError::Permanent(format!(
                "the archive is corrupted or was modified: its SHA-256 is {actual}, the backup recorded {expected}"
            )));
        }
        let (head, openers) = self
            .archives
            .open_head(&ctx.pool, row.tenant_id, Some(row.id), head)
            .await?;
        let detected = match detect(&head) {
            Ok(d) => d,
            Err(ArchiveErrorOr::Incompatible(m) | ArchiveErrorOr::Invalid(m)) => return Err(JobError::Permanent(m)),
        };
        check_belongs(&detected.container, row.tenant_id, row.id).map_err(JobError::Permanent)?;
        let dump_head = decompress_prefix(&detected.container, &head[detected.skip.min(head.len())..]);
        let (server_major, _) = driver.server_version(conn).await?;
        driver
            .check_dump(&dump_head, &tool, server_major, false)
            .map_err(|m| JobError::Permanent(format!("the verification server cannot restore this archive: {m}")))?;
        if ctx.job.attempts > 1 {
            let _ = driver
                .drop_database(conn, &scratch_database(row.id.0, ctx.job.attempts - 1))
                .await;
        }
        ctx.ensure_lease().await?;
        driver.drop_database(conn, scratch).await?;
        driver.create_database(conn, scratch).await?;
        self.archives
            .feed(
                &Reading {
                    key: &key,
                    etag: etag.as_deref(),
                    container: &detected.container,
                    openers: openers.as_ref(),
                },
                Some(driver.restore(&tool, &detected.dump, conn, scratch)),
                false,
                cancel,
            )
            .await
            .map_err(|e| match e {
                JobError::Permanent(m) => JobError::Permanent(format!("the archive does not restore: {m}")),
                other => other,
            })?;
        driver.table_counts(conn, scratch).await
    }
}
