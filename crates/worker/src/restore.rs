//! The restore job: verify the archive in full, check that this worker and the target can
//! restore it, and only then touch the target — atomically, so a failed restore leaves it as it
//! was. Finally count what the target holds.

use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use svalbard_core::archive::{FORMAT_VERSION, read_header};
use svalbard_core::config::WorkerConfig;
use svalbard_core::crypto::KeyRing;
use svalbard_core::dumpinfo::{Container, Detected, decompress_prefix};
use svalbard_core::envelope::{self, Openers};
use svalbard_core::ids::{BackupId, RestoreId, TenantId};
use svalbard_core::jobs::Abandoned;
use svalbard_core::repo::{backups, keys, planets, restores};
use svalbard_core::restore::Verification;
use svalbard_core::storage::{Storage, describe};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use crate::engine::{self, Driver, Loader, Tool};
use crate::runner::{Handler, JobContext, JobError};

/// How much of the archive is kept to look at the dump's own header.
const HEAD: usize = 256 * 1024;

pub struct RestoreJob {
    pub storage: Storage,
    pub keys: Arc<KeyRing>,
    pub config: WorkerConfig,
    pub targets: Arc<svalbard_core::netpolicy::Guard>,
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
        let span = tracing::Span::current();
        span.record("restore_id", tracing::field::display(id));
        span.record("project_id", tracing::field::display(row.project_id));
        span.record("planet_id", tracing::field::display(row.planet_id));
        if let Some(backup) = row.source_backup_id {
            span.record("backup_id", tracing::field::display(backup));
        }
        if !row.status().map_err(transient)?.in_flight() {
            return Ok(());
        }
        if !restores::mark_running(&ctx.pool, id, ctx.lease())
            .await
            .map_err(transient)?
        {
            return Err(JobError::Transient("the job was taken over".into()));
        }
        match self.restore(ctx, &row, &cancel).await {
            Err(Refusal::Incompatible(msg)) => Err(JobError::Incompatible(msg)),
            Err(Refusal::Job(e)) => Err(e),
            Ok(()) => Ok(()),
        }
    }

    async fn failed(&self, pool: &PgPool, job: &Abandoned) {
        // An upload that cannot be restored is not kept; the client has the file.
        if let Ok(row) = restores::for_job(pool, job.tenant_id, RestoreId(job.subject_id)).await
            && let Some(key) = row.source_upload_key
        {
            let s = &self.storage;
            if let Err(e) = s.client.delete_object().bucket(&s.bucket).key(&key).send().await {
                tracing::warn!(error = %describe(&e), "could not remove a failed restore's upload");
            }
        }
    }
}

/// The database a replacing restore loads before it takes the target's place: unique per
/// attempt, so two attempts never load the same one, and within PostgreSQL's 63 bytes.
fn scratch_name(database: &str, restore: RestoreId, attempt: i32) -> String {
    let id = restore.0.simple().to_string();
    format!("{}_svb_{}_{attempt}", prefix_of(database, 40), &id[id.len() - 8..])
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
        let report = |phase: &'static str| restores::report(&ctx.pool, row.id, ctx.lease(), 0, phase);
        // The source: a stored backup (with the checksum the catalog recorded) or an upload.
        let (key, expected, engine) = match (row.source_backup_id, &row.source_upload_key) {
            (Some(b), _) => {
                let backup = backups::for_job(&ctx.pool, row.tenant_id, b).await.map_err(transient)?;
                let key = backup
                    .object_key
                    .clone()
                    .ok_or_else(|| JobError::Permanent("the backup has no archive".into()))?;
                (key, backup.checksum.clone(), backup.engine)
            }
            (None, Some(key)) => {
                let engine: String = sqlx::query_scalar("SELECT engine FROM planets WHERE id = $1")
                    .bind(row.planet_id)
                    .fetch_one(&ctx.pool)
                    .await
                    .map_err(transient)?;
                (key.clone(), None, engine)
            }
            (None, None) => return Err(JobError::Permanent("the restore has no source".into()).into()),
        };
        let (_, conn) =
            planets::get_with_connection(&ctx.pool, &self.keys, row.tenant_id, row.project_id, row.planet_id)
                .await
                .map_err(|e| JobError::Permanent(format!("the target planet cannot be read: {e}")))?;
        let conn = crate::target::checked(
            &ctx.pool,
            &self.targets,
            row.tenant_id,
            conn,
            Some(&row.target_database),
        )
        .await?;
        let engine: svalbard_core::domain::Engine = engine
            .parse()
            .map_err(|_| JobError::Permanent("unknown engine".into()))?;
        let driver: Box<dyn Driver> = engine::driver(engine, &self.config.pg_bin_roots);
        let tool: Tool = driver.restore_tool()?;

        // The target must be the planet's database or one derived from it, checked again here
        // because the planet may have changed since the restore was asked for.
        svalbard_core::restore::check_target(engine, &conn.database, &row.target_database).map_err(|why| {
            JobError::Permanent(format!(
                "the target database {} is not allowed: {why}; the target was not touched",
                row.target_database
            ))
        })?;

        // 1. Integrity, before the target is touched: a stored archive must hash to what the
        //    catalog recorded; an upload must decompress in full (frame checksums) and, for
        //    formats that have one, pass the tool's own full read.
        let (head, actual, etag) = self.hash_archive(&key, cancel).await?;
        if let Some(expected) = &expected
            && format!("sha256:{actual}") != *expected
        {
            return Err(JobError::Permanent(format!(
                "the archive is corrupted or was modified: its SHA-256 is {actual}, the backup recorded {expected}; \
                 the target was not touched"
            ))
            .into());
        }
        let (head, openers) = self
            .open_head(&ctx.pool, row.tenant_id, row.source_backup_id, head)
            .await
            .map_err(|e| match e {
                JobError::Permanent(m) => JobError::Permanent(format!("{m}; the target was not touched")),
                other => other,
            })?;
        let detected = match detect(&head) {
            Ok(d) => d,
            Err(ArchiveErrorOr::Incompatible(m)) => return Err(Refusal::Incompatible(m)),
            Err(ArchiveErrorOr::Invalid(m)) => return Err(JobError::Permanent(m).into()),
        };
        if let Some(b) = row.source_backup_id {
            check_belongs(&detected.container, row.tenant_id, b)
                .map_err(|m| JobError::Permanent(format!("{m}; the target was not touched")))?;
        }
        let reading = Reading {
            key: &key,
            etag: etag.as_deref(),
            container: &detected.container,
            openers: openers.as_ref(),
        };
        if expected.is_none() {
            let _ = report("checking").await;
            self.feed(
                &reading,
                driver.check_whole(&tool, &detected.dump).map(Into::into),
                true,
                cancel,
            )
            .await
            .map_err(|e| match e {
                JobError::Permanent(m) => JobError::Permanent(format!(
                    "the archive is corrupted or truncated ({m}); the target was not touched"
                )),
                other => other,
            })?;
        }

        // 2. Versions: the dump against this worker's tool and the target server.
        let dump_head = decompress_prefix(&detected.container, &head[detected.skip.min(head.len())..]);
        let (target_major, _) = driver.server_version(&conn).await?;
        driver
            .check_dump(&dump_head, &tool, target_major, row.force)
            .map_err(Refusal::Incompatible)?;

        // 3. The target: an empty or absent database; with `replace`, a scratch database that
        //    takes the target's place only once the restore has succeeded.
        let database = row.target_database.clone();
        let existing = driver.inspect(&conn, &database).await?;
        let claim = || async {
            if restores::claim_target(&ctx.pool, row.id, ctx.lease())
                .await
                .map_err(transient)?
            {
                Ok(())
            } else {
                Err(JobError::Transient("the job was taken over".into()))
            }
        };
        let into = match (existing, row.replace_target) {
            (Some(_), false) if row.target_claimed_at.is_some() => {
                // An earlier attempt of this restore created the target and loaded it, then died
                // before recording success: what is there is its own work.
                ctx.ensure_lease().await?;
                driver.drop_database(&conn, &database).await?;
                driver.create_database(&conn, &database).await?;
                database.clone()
            }
            (Some(objects), false) if objects > 0 => {
                return Err(JobError::Permanent(format!(
                    "the target database {database} is not empty ({objects} objects); restore into an empty \
                     database or ask an admin to restore with replace"
                ))
                .into());
            }
            // An existing database is never claimed: a later attempt must not drop a database
            // that this restore did not create, whatever it holds by then.
            (Some(_), false) => database.clone(),
            (None, _) => {
                ctx.ensure_lease().await?;
                claim().await?;
                driver.create_database(&conn, &database).await?;
                database.clone()
            }
            (Some(_), true) if !driver.can_rename() => {
                // No atomic swap on this engine: the target is dropped and recreated.
                ctx.ensure_lease().await?;
                driver.drop_database(&conn, &database).await?;
                driver.create_database(&conn, &database).await?;
                database.clone()
            }
            (Some(_), true) => {
                let scratch = scratch_name(&database, row.id, ctx.job.attempts);
                // What the previous attempt loaded, if it died before cleaning up.
                let _ = driver
                    .drop_database(&conn, &scratch_name(&database, row.id, ctx.job.attempts - 1))
                    .await;
                ctx.ensure_lease().await?;
                driver.drop_database(&conn, &scratch).await?;
                driver.create_database(&conn, &scratch).await?;
                scratch
            }
        };
        let _ = report("restoring").await;
        let loaded = self
            .feed(
                &reading,
                Some(driver.restore(&tool, &detected.dump, &conn, &into)),
                false,
                cancel,
            )
            .await;
        if let Err(e) = loaded {
            // Cleaning up is a destructive step too: only while the lease still holds, or it
            // might drop what a newer attempt has loaded.
            if (into != database || existing.is_none()) && ctx.ensure_lease().await.is_ok() {
                let _ = driver.drop_database(&conn, &into).await;
            }
            return Err(e.into());
        }
        if into != database {
            // The old target steps aside and is dropped only once the restored database has its
            // name: a failure in between leaves the old database in place, never none.
            ctx.ensure_lease().await?;
            let aside = format!("{into}_old");
            driver.drop_database(&conn, &aside).await?;
            driver.rename_database(&conn, &database, &aside).await?;
            if let Err(e) = driver.rename_database(&conn, &into, &database).await {
                let _ = driver.rename_database(&conn, &aside, &database).await;
                return Err(e.into());
            }
            driver.drop_database(&conn, &aside).await?;
        }

        // 4. What the target holds now.
        let _ = report("verifying").await;
        let (tables, rows) = driver.verify(&conn, &database).await?;
        let verification = Verification { tables, rows };
        if !restores::succeed(&ctx.pool, row.id, ctx.lease(), &verification)
            .await
            .map_err(transient)?
        {
            return Err(JobError::Transient("the job was taken over before it committed".into()).into());
        }
        if expected.is_none() {
            // The upload has served its purpose.
            let _ = self
                .storage
                .client
                .delete_object()
                .bucket(&self.storage.bucket)
                .key(&key)
                .send()
                .await;
        }
        tracing::info!(tables, rows, "restore succeeded");
        Ok(())
    }

    /// The archive object; with `if_match`, only while it is still the object that was hashed
    /// (its ETag), so the bytes fed to a tool are the bytes that were checked.
    pub(crate) async fn open(
        &self,
        key: &str,
        if_match: Option<&str>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, JobError> {
        self.storage
            .client
            .get_object()
            .bucket(&self.storage.bucket)
            .key(key)
            .set_if_match(if_match.map(str::to_owned))
            .send()
            .await
            .map_err(|e| {
                transient(format!(
                    "object storage at {}: reading the archive failed: {}",
                    self.storage.endpoint,
                    describe(&e)
                ))
            })
    }

    /// SHA-256 of the whole archive, its first bytes, and the ETag of the object hashed.
    pub(crate) async fn hash_archive(
        &self,
        key: &str,
        cancel: &CancellationToken,
    ) -> Result<(Vec<u8>, String, Option<String>), JobError> {
        let object = self.open(key, None).await?;
        let etag = object.e_tag.clone();
        let mut body = object.body.into_async_read();
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
        Ok((head, hex::encode(hasher.finalize()), etag))
    }

    /// The plaintext start of an archive, and what opens the rest, when it is encrypted: the
    /// tenant's keys and, for a stored backup, the data key the catalog holds for it.
    pub(crate) async fn open_head(
        &self,
        pool: &PgPool,
        tenant: TenantId,
        backup: Option<BackupId>,
        head: Vec<u8>,
    ) -> Result<(Vec<u8>, Option<Openers>), JobError> {
        let wrapped = match backup {
            Some(b) => backups::wrapped_data_key(pool, tenant, b)
                .await
                .map_err(transient)?
                .map(|w| (b, w)),
            None => None,
        };
        let encrypted = envelope::is_encrypted(&head);
        if encrypted == wrapped.is_none() && backup.is_some() {
            return Err(JobError::Permanent(if encrypted {
                "the backup was stored in the clear, but its archive is encrypted: the object was replaced".into()
            } else {
                "the backup was stored encrypted, but its archive is not: the object was replaced".into()
            }));
        }
        if !encrypted {
            return Ok((head, None));
        }
        // A stored backup opens with its own data key alone, which the header's MAC checks: an
        // object put in its place, even one encrypted for the tenant, does not open. An upload
        // opens with the tenant's keys.
        let openers = match wrapped {
            Some((b, (version, wrapped))) => Openers {
                tenant_keys: Vec::new(),
                data_key: Some(
                    keys::data_key(pool, &self.keys, tenant, b.0, version, &wrapped)
                        .await
                        .map_err(|e| match e {
                            svalbard_core::Error::Database(e) => transient(format!("the control database: {e}")),
                            _ => {
                                JobError::Permanent("the archive's data key does not open with the tenant's key".into())
                            }
                        })?,
                ),
            },
            None => keys::upload_openers(pool, &self.keys, tenant)
                .await
                .map_err(transient)?,
        };
        let plain = openers
            .decrypt_prefix(&head, HEAD)
            .map_err(|e| JobError::Permanent(envelope::describe_decrypt_error(&e)))?;
        Ok((plain, Some(openers)))
    }

    /// Streams the archive, decompressed, into `consumer`'s stdin (or nowhere, to check that it
    /// decompresses); fails unless everything was read and the consumer exits 0.
    pub(crate) async fn feed(
        &self,
        archive: &Reading<'_>,
        consumer: Option<Loader>,
        checking: bool,
        cancel: &CancellationToken,
    ) -> Result<(), JobError> {
        let Reading {
            key,
            etag,
            container,
            openers,
        } = *archive;
        let body = self.open(key, etag).await?.body.into_async_read();
        let (mut running, prologue, mut filter) = match consumer {
            Some(loader) => (
                Some(
                    loader
                        .command
                        .spawn_within(crate::process::STREAM_DEADLINE)
                        .map_err(|e| JobError::Permanent(format!("cannot start the restore tool: {e}")))?,
                ),
                loader.prologue,
                loader.filter,
            ),
            None => (None, Vec::new(), None),
        };
        let deadline = running.as_ref().map(|r| tokio::time::Instant::now() + r.deadline);
        let host = running.as_ref().map(|r| r.host.clone()).unwrap_or_default();
        let mut stdin = running.as_mut().and_then(|r| r.child.stdin.take());
        let errors = running.as_mut().and_then(|r| r.child.stderr.take()).map(|mut stderr| {
            tokio::spawn(async move {
                let mut kept = Vec::new();
                let _ = (&mut stderr).take(16 * 1024).read_to_end(&mut kept).await;
                // The rest is drained, so the tool never blocks on a full pipe.
                let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
                String::from_utf8_lossy(&kept).into_owned()
            })
        });
        // The prologue (psql's restricted mode) goes in before any byte of the dump, or nothing does.
        let mut fed: Result<(), JobError> = Ok(());
        if let Some(input) = stdin.as_mut()
            && !prologue.is_empty()
            && let Err(e) = input.write_all(&prologue).await
        {
            fed = Err(JobError::Permanent(format!("the restore tool stopped reading: {e}")));
        }
        // Decryption and decompression run on a blocking thread; zstd skips the Svalbard header
        // frame itself.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
        let container = container.clone();
        let openers = openers.cloned();
        let decoder = tokio::task::spawn_blocking(move || {
            let bridge = tokio_util::io::SyncIoBridge::new(body);
            let reader: Box<dyn std::io::Read> = match openers {
                Some(o) => match o.decrypt(std::io::BufReader::new(bridge)) {
                    Ok(r) => Box::new(r),
                    Err(e) => {
                        let why = std::io::Error::other(envelope::describe_decrypt_error(&e));
                        return tx.blocking_send(Err(why)).map_err(|_| ());
                    }
                },
                None => Box::new(bridge),
            };
            let mut input: Box<dyn std::io::Read> = match container {
                Container::Svalbard(_) | Container::Zstd => match zstd::stream::read::Decoder::new(reader) {
                    Ok(d) => Box::new(d),
                    Err(e) => return tx.blocking_send(Err(e)).map_err(|_| ()),
                },
                Container::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
                Container::Raw => Box::new(reader),
            };
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match input.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => tx.blocking_send(Ok(buf[..n].to_vec())).map_err(|_| ())?,
                    Err(e) => return tx.blocking_send(Err(e)).map_err(|_| ()),
                }
            }
        });
        let mut filtered = Vec::new();
        let past_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(past_deadline);
        while fed.is_ok() {
            let chunk = tokio::select! {
                () = cancel.cancelled() => { fed = Err(JobError::Transient("the restore was cancelled".into())); break; }
                () = &mut past_deadline => {
                    fed = Err(JobError::Permanent("the restore tool did not finish within its deadline and was stopped".into()));
                    break;
                }
                c = rx.recv() => c,
            };
            let chunk = match (chunk, filter.as_mut()) {
                (Some(Ok(bytes)), Some(f)) => {
                    filtered.clear();
                    f.push(&bytes, &mut filtered);
                    Some(Ok(std::mem::take(&mut filtered)))
                }
                (None, Some(f)) => {
                    filtered.clear();
                    f.finish(&mut filtered);
                    filter = None;
                    Some(Ok(std::mem::take(&mut filtered)))
                }
                (other, _) => other,
            };
            match chunk {
                None => break,
                Some(Ok(bytes)) => {
                    if let Some(input) = stdin.as_mut()
                        && let Err(e) = input.write_all(&bytes).await
                    {
                        if checking && e.kind() == std::io::ErrorKind::BrokenPipe {
                            // A checker may stop reading once it has seen what it needs (the
                            // table of contents); the rest is still decompressed, to check it.
                            stdin = None;
                        } else {
                            fed = Err(JobError::Permanent(format!("the restore tool stopped reading: {e}")));
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    fed = Err(JobError::Permanent(format!("the archive cannot be decompressed: {e}")));
                    break;
                }
            }
        }
        drop(rx);
        drop(stdin);
        let _ = decoder.await;
        let Some(mut running) = running else { return fed };
        if fed.is_err() {
            // Killing the tool before it commits rolls its single transaction back.
            let _ = running.child.start_kill();
        }
        let status = match deadline {
            Some(d) => match tokio::time::timeout_at(d, running.child.wait()).await {
                Ok(s) => s.map_err(transient)?,
                Err(_) => {
                    let _ = running.child.start_kill();
                    let _ = running.child.wait().await;
                    return Err(JobError::Permanent(
                        "the restore tool did not finish within its deadline and was stopped; nothing was committed"
                            .into(),
                    ));
                }
            },
            None => running.child.wait().await.map_err(transient)?,
        };
        let stderr = match errors {
            Some(t) => t.await.unwrap_or_default(),
            None => String::new(),
        };
        // The tool's full message goes to the log; the restore's message gets an excerpt.
        let said = crate::process::report_failure("the restore tool", &stderr, &host);
        match (fed, status.success()) {
            (Err(JobError::Permanent(m)), _) if !said.is_empty() => Err(JobError::Permanent(format!("{m}: {said}"))),
            (Err(e), _) => Err(e),
            (Ok(()), true) => Ok(()),
            (Ok(()), false) => Err(JobError::Permanent(format!(
                "the restore tool failed ({status}); nothing was committed: {said}"
            ))),
        }
    }
}

/// An archive to read in full: the object, the ETag it had when hashed, what it holds and what
/// opens it.
#[derive(Clone, Copy)]
pub(crate) struct Reading<'a> {
    pub key: &'a str,
    pub etag: Option<&'a str>,
    pub container: &'a Container,
    pub openers: Option<&'a Openers>,
}

/// The longest start of `name` of at most `max` bytes that ends on a character boundary.
fn prefix_of(name: &str, max: usize) -> &str {
    let mut end = name.len().min(max);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// A stored backup's archive must say it is that backup of that tenant: an archive of another
/// backup put in its place is refused, even when its checksum was changed to match.
pub(crate) fn check_belongs(container: &Container, tenant: TenantId, backup: BackupId) -> Result<(), String> {
    match container {
        Container::Svalbard(h) if h.backup_id != backup.0 || h.tenant_id != tenant.0 => Err(format!(
            "the archive is that of backup {} of another tenant or backup, not of backup {backup}: the object was replaced",
            h.backup_id
        )),
        _ => Ok(()),
    }
}

/// Why a file cannot be restored: another version is needed, or it is not an archive at all.
pub(crate) enum ArchiveErrorOr {
    Incompatible(String),
    Invalid(String),
}

pub(crate) fn detect(head: &[u8]) -> Result<Detected, ArchiveErrorOr> {
    use svalbard_core::archive::ArchiveError;
    match read_header(head) {
        Ok(Some((header, _))) if header.format_version > FORMAT_VERSION => {
            return Err(ArchiveErrorOr::Incompatible(format!(
                "archive format {} is newer than this worker understands ({FORMAT_VERSION}); restore it with a newer Svalbard",
                header.format_version
            )));
        }
        Err(e @ ArchiveError::UnsupportedVersion { .. }) => return Err(ArchiveErrorOr::Incompatible(e.to_string())),
        _ => {}
    }
    svalbard_core::dumpinfo::detect(head).map_err(ArchiveErrorOr::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_cut_on_a_character_boundary_and_differ_per_attempt() {
        let id = RestoreId(uuid::Uuid::now_v7());
        let name = "ö".repeat(30);
        let a = scratch_name(&name, id, 1);
        assert!(a.starts_with(&"ö".repeat(20)) && a.len() <= 63, "{a}");
        assert_ne!(a, scratch_name(&name, id, 2));
        assert!(scratch_name("orders", id, 3).starts_with("orders_svb_"));
    }
}
