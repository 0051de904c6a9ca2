//! The restore job: verify the archive in full, check that this worker and the target can
//! restore it, and only then touch the target — atomically, so a failed restore leaves it as it
//! was. Finally count what the target holds.

use std::io::Read as _;
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use svalbard_core::archive::{FORMAT_VERSION, read_header};
use svalbard_core::config::WorkerConfig;
use svalbard_core::crypto::KeyRing;
use svalbard_core::ids::RestoreId;
use svalbard_core::jobs::Abandoned;
use svalbard_core::repo::{backups, planets, restores};
use svalbard_core::restore::{RestoreStatus, Verification};
use svalbard_core::storage::{Storage, describe};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use crate::engine::{self, Driver, Tool};
use crate::runner::{Handler, JobContext, JobError};

/// How much of the archive is kept to look at the dump's own header.
const HEAD: usize = 256 * 1024;

pub struct RestoreJob {
    pub storage: Storage,
    pub keys: Arc<KeyRing>,
    pub config: WorkerConfig,
}

fn transient(e: impl std::fmt::Display) -> JobError {
    JobError::Transient(e.to_string())
}

#[async_trait]
impl Handler for RestoreJob {
    async fn run(&self, ctx: &JobContext, cancel: CancellationToken) -> Result<(), JobError> {
        let id = RestoreId(ctx.job.subject_id);
        let row = restores::for_job(&ctx.pool, ctx.job.tenant_id, id)
            .await
            .map_err(transient)?;
        if !row.status().map_err(transient)?.in_flight() {
            return Ok(());
        }
        if !restores::mark_running(&ctx.pool, id, ctx.job.id, &ctx.worker_id)
            .await
            .map_err(transient)?
        {
            return Err(JobError::Transient("the job was taken over".into()));
        }
        match self.restore(ctx, &row, &cancel).await {
            Err(Refusal::Incompatible(msg)) => {
                restores::finish(&ctx.pool, id, RestoreStatus::Incompatible, &msg)
                    .await
                    .map_err(transient)?;
                Err(JobError::Permanent(msg))
            }
            Err(Refusal::Job(e)) => Err(e),
            Ok(()) => Ok(()),
        }
    }

    async fn give_up(&self, pool: &PgPool, job: &Abandoned, error: &str, _permanent: bool) -> anyhow::Result<()> {
        restores::finish(pool, RestoreId(job.subject_id), RestoreStatus::Failed, error).await?;
        Ok(())
    }
}

enum Refusal {
    Incompatible(String),
    Job(JobError),
}

impl From<JobError> for Refusal {
    fn from(e: JobError) -> Self {
        Self::Job(e)
    }
}

impl RestoreJob {
    async fn restore(&self, ctx: &JobContext, row: &restores::Row, cancel: &CancellationToken) -> Result<(), Refusal> {
        let report = |phase: &'static str| restores::report(&ctx.pool, row.id, ctx.job.id, &ctx.worker_id, 0, phase);
        let backup_id = row
            .source_backup_id
            .ok_or_else(|| JobError::Permanent("restores from uploads are not supported by this worker".into()))?;
        let backup = backups::for_job(&ctx.pool, row.tenant_id, backup_id)
            .await
            .map_err(transient)?;
        let key = backup
            .object_key
            .clone()
            .ok_or_else(|| JobError::Permanent("the backup has no archive".into()))?;
        let expected = backup.checksum.clone().unwrap_or_default();
        let (_, conn) =
            planets::get_with_connection(&ctx.pool, &self.keys, row.tenant_id, row.project_id, row.planet_id)
                .await
                .map_err(|e| JobError::Permanent(format!("the target planet cannot be read: {e}")))?;
        let driver: Box<dyn Driver> = engine::driver(
            backup
                .engine
                .parse()
                .map_err(|_| JobError::Permanent("unknown engine".into()))?,
            &self.config.pg_bin_roots,
        );

        // 1. Integrity: the whole archive must hash to what the catalog recorded.
        let (head, actual) = self.hash_archive(&key, cancel).await?;
        if format!("sha256:{actual}") != expected {
            return Err(JobError::Permanent(format!(
                "the archive is corrupted or was modified: its SHA-256 is {actual}, the backup recorded {expected}; \
                 the target was not touched"
            ))
            .into());
        }

        // 2. Versions: of the archive format, of the dump against our tool and the target server.
        let skip = match read_header(&head) {
            Ok(Some((header, skip))) => {
                if header.format_version > FORMAT_VERSION {
                    return Err(Refusal::Incompatible(format!(
                        "archive format {} is newer than this worker understands ({FORMAT_VERSION})",
                        header.format_version
                    )));
                }
                skip
            }
            Ok(None) => 0,
            Err(e) => return Err(Refusal::Incompatible(e.to_string())),
        };
        let dump_head = decompress_prefix(&head[skip..]);
        let tool: Tool = driver.restore_tool()?;
        let (target_major, _) = driver.server_version(&conn).await?;
        driver
            .check_dump(&dump_head, &tool, target_major, row.force)
            .map_err(Refusal::Incompatible)?;

        // 3. The target: an empty or absent database; with `replace`, a scratch database that
        //    takes the target's place only once the restore has succeeded.
        let database = row.target_database.clone();
        let existing = driver.inspect(&conn, &database).await?;
        let into = match (existing, row.replace_target) {
            (Some(objects), false) if objects > 0 => {
                return Err(JobError::Permanent(format!(
                    "the target database {database} is not empty ({objects} objects); restore into an empty \
                     database or ask an admin to restore with replace"
                ))
                .into());
            }
            (Some(_), false) => database.clone(),
            (None, _) => {
                driver.create_database(&conn, &database).await?;
                database.clone()
            }
            (Some(_), true) => {
                let scratch = format!(
                    "{}_svb_{}",
                    &database[..database.len().min(40)],
                    &row.id.0.simple().to_string()[24..]
                );
                driver.drop_database(&conn, &scratch).await?;
                driver.create_database(&conn, &scratch).await?;
                scratch
            }
        };
        let _ = report("restoring").await;
        let loaded = self.load(&key, &*driver, &tool, &conn, &into, cancel).await;
        if let Err(e) = loaded {
            if into != database || existing.is_none() {
                let _ = driver.drop_database(&conn, &into).await;
            }
            return Err(e.into());
        }
        if into != database {
            driver.drop_database(&conn, &database).await?;
            driver.rename_database(&conn, &into, &database).await?;
        }

        // 4. What the target holds now.
        let _ = report("verifying").await;
        let (tables, rows) = driver.verify(&conn, &database).await?;
        let verification = Verification { tables, rows };
        if !restores::succeed(&ctx.pool, row.id, ctx.job.id, &ctx.worker_id, &verification)
            .await
            .map_err(transient)?
        {
            return Err(JobError::Transient("the job was taken over before it committed".into()).into());
        }
        tracing::info!(tables, rows, "restore succeeded");
        Ok(())
    }

    async fn open(&self, key: &str) -> Result<aws_sdk_s3::primitives::ByteStream, JobError> {
        self.storage
            .client
            .get_object()
            .bucket(&self.storage.bucket)
            .key(key)
            .send()
            .await
            .map(|o| o.body)
            .map_err(|e| {
                transient(format!(
                    "object storage at {}: reading the archive failed: {}",
                    self.storage.endpoint,
                    describe(&e)
                ))
            })
    }

    /// SHA-256 of the whole archive, and its first bytes.
    async fn hash_archive(&self, key: &str, cancel: &CancellationToken) -> Result<(Vec<u8>, String), JobError> {
        let mut body = self.open(key).await?.into_async_read();
        let mut hasher = Sha256::new();
        let mut head = Vec::with_capacity(HEAD);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if cancel.is_cancelled() {
                return Err(JobError::Transient("the restore was cancelled".into()));
            }
            let n = body.read(&mut buf).await.map_err(transient)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if head.len() < HEAD {
                let take = n.min(HEAD - head.len());
                head.extend_from_slice(&buf[..take]);
            }
        }
        Ok((head, hex::encode(hasher.finalize())))
    }

    /// Streams the archive, decompressed, into the restore tool; fails unless the tool exits 0.
    async fn load(
        &self,
        key: &str,
        driver: &dyn Driver,
        tool: &Tool,
        conn: &svalbard_core::repo::planets::Connection,
        database: &str,
        cancel: &CancellationToken,
    ) -> Result<(), JobError> {
        let body = self.open(key).await?.into_async_read();
        let mut child = driver
            .restore(tool, conn, database)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| JobError::Permanent(format!("cannot start {}: {e}", tool.path.display())))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| transient("the restore tool has no stdin"))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| transient("the restore tool has no stderr"))?;
        let errors = tokio::spawn(async move {
            let mut text = String::new();
            let _ = (&mut stderr).take(16 * 1024).read_to_string(&mut text).await;
            text
        });
        // zstd decodes on a blocking thread; skippable frames (the Svalbard header) are skipped.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
        let decoder = tokio::task::spawn_blocking(move || {
            let reader = tokio_util::io::SyncIoBridge::new(body);
            let mut dec = match zstd::stream::read::Decoder::new(reader) {
                Ok(d) => d,
                Err(e) => return tx.blocking_send(Err(e)).map_err(|_| ()),
            };
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match dec.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => tx.blocking_send(Ok(buf[..n].to_vec())).map_err(|_| ())?,
                    Err(e) => return tx.blocking_send(Err(e)).map_err(|_| ()),
                }
            }
        });
        let mut fed: Result<(), JobError> = Ok(());
        loop {
            let chunk = tokio::select! {
                () = cancel.cancelled() => { fed = Err(JobError::Transient("the restore was cancelled".into())); break; }
                c = rx.recv() => c,
            };
            match chunk {
                None => break,
                Some(Ok(bytes)) => {
                    if let Err(e) = stdin.write_all(&bytes).await {
                        fed = Err(JobError::Permanent(format!("the restore tool stopped reading: {e}")));
                        break;
                    }
                }
                Some(Err(e)) => {
                    fed = Err(JobError::Permanent(format!("the archive cannot be decompressed: {e}")));
                    break;
                }
            }
        }
        drop(rx);
        if fed.is_err() {
            // Killing the tool before it commits rolls its single transaction back.
            let _ = child.start_kill();
        }
        drop(stdin);
        let status = child.wait().await.map_err(transient)?;
        let _ = decoder.await;
        let stderr = errors.await.unwrap_or_default();
        fed?;
        if status.success() {
            Ok(())
        } else {
            Err(JobError::Permanent(format!(
                "{} failed ({status}); the target was rolled back: {}",
                tool.path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                stderr.trim()
            )))
        }
    }
}

/// Up to 64 KiB of what `compressed` (the start of a zstd stream) decompresses to.
fn decompress_prefix(compressed: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(dec) = zstd::stream::read::Decoder::new(compressed) {
        let _ = dec.take(64 * 1024).read_to_end(&mut out);
    }
    out
}
