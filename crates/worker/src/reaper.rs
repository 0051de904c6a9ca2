//! The reaper: reconciles the bucket with the catalog.
//! - Multipart uploads under Svalbard's prefix older than `stale_upload` are aborted.
//! - Objects the catalog does not account for (no row, a row whose objects should be gone, an
//!   archive of an attempt that lost) are deleted once older than `orphan_grace`.
//! - A succeeded backup whose archive does not answer is first only *suspected*; a later sweep
//!   lists its folder before it becomes `missing`. A `missing` backup turns back to `succeeded`
//!   when its archive is found again, and its objects are never deleted by the reaper.
//!
//! A doubt never becomes a deletion: pinned backups and each planet's newest succeeded backup
//! are never touched, and a sweep that finds more than a small share of its batch missing (a
//! worker pointed at the wrong bucket, a lagging replica) changes nothing and reports instead.
//! A catalog that forgot is not a bucket of orphans: an object without a row goes only when the
//! catalog holds a newer row (it has seen past it), a sweep where many listed objects have no
//! row deletes nothing, and a control database and bucket of different installations (their
//! markers disagree) are never reconciled at all.
//! Only keys of Svalbard's own layout are ever deleted; anything else under the prefix is
//! reported and left alone. Listings are read a page at a time, so memory stays flat whatever
//! the bucket holds.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use svalbard_core::repo::webhooks::{BACKUP_EVENT_COLUMNS, BackupEvent};
use svalbard_core::storage::{Listed, Storage};
use svalbard_core::webhook::EventType;
use uuid::Uuid;

/// The `action` label values of `svalbard_reaper_actions_total`.
pub const ACTIONS: [&str; 8] = [
    "abort_upload",
    "delete_orphan",
    "suspect_missing",
    "mark_missing",
    "found_again",
    "spared_unknown",
    "halted",
    "installation_mismatch",
];

/// Settings of one sweep.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub stale_upload: Duration,
    pub orphan_grace: Duration,
    pub verify_batch: i64,
    /// A sweep halts when more archives than this are missing from its batch...
    pub halt_missing_min: u64,
    /// ...and they are more than this share (in percent) of the archives checked.
    pub halt_missing_percent: u64,
}

impl Settings {
    /// The defaults of the configuration, with the given grace periods.
    #[must_use]
    pub fn with_grace(stale_upload: Duration, orphan_grace: Duration) -> Self {
        Self {
            stale_upload,
            orphan_grace,
            verify_batch: 500,
            halt_missing_min: 2,
            halt_missing_percent: 10,
        }
    }

    /// Whether `missing` archives out of `checked` are too many to be believed.
    #[must_use]
    pub fn too_many_missing(&self, missing: u64, checked: u64) -> bool {
        missing > self.halt_missing_min && missing * 100 > checked * self.halt_missing_percent
    }
}

/// What a sweep did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub aborted_uploads: u64,
    pub deleted_orphans: u64,
    pub orphan_bytes: u64,
    /// Orphans still inside their grace period.
    pub young_orphans: u64,
    /// Keys under the prefix that are not of Svalbard's layout; left alone.
    pub unknown_keys: u64,
    pub checked_archives: u64,
    /// Archives that did not answer for the first time: recorded, nothing else changes.
    pub suspected_missing: u64,
    /// Suspected archives a listing of their folder did not show either: now `missing`.
    pub marked_missing: u64,
    /// Backups whose archive answered again: back to `succeeded` (or no longer suspected).
    pub found_again: u64,
    /// Objects left alone because they belong to a pinned backup, a planet's newest succeeded
    /// backup, or a backup whose archive is missing.
    pub protected: u64,
    /// Objects of a backup or restore the catalog has no row for, but whose id is newer than
    /// every row it holds: a catalog restored from an older snapshot, or a fresh one, has not
    /// seen them yet, so they are left alone.
    pub spared_unknown: u64,
    /// Objects of Svalbard's layout listed with (`accounted`) and without (`unaccounted`) a row.
    #[serde(skip)]
    accounted: u64,
    #[serde(skip)]
    unaccounted: u64,
    /// Set when too much of the batch was missing, or too much of the bucket unaccounted for,
    /// to be believed: the sweep deleted nothing.
    pub halted: Option<String>,
}

/// Where a key sits in the layout `tenants/{t}/projects/{p}/planets/{x}/{backups|uploads}/{id}/{file}`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Backup(Uuid),
    Upload(Uuid),
}

fn owner(root: &str, key: &str) -> Option<Owner> {
    let rest = key.strip_prefix(root)?;
    let parts: Vec<&str> = rest.splitn(8, '/').collect();
    let [t, "projects", p, "planets", x, kind, id, file] = parts.as_slice() else {
        return None;
    };
    if file.is_empty() || [t, p, x].iter().any(|s| s.parse::<Uuid>().is_err()) {
        return None;
    }
    let id = id.parse::<Uuid>().ok()?;
    match *kind {
        "backups" => Some(Owner::Backup(id)),
        "uploads" => Some(Owner::Upload(id)),
        _ => None,
    }
}

/// What the reaper needs to know of a backup that owns objects.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    status: String,
    archive: Option<String>,
    /// Pinned, or its planet's newest succeeded backup: its objects are never deleted, whatever
    /// its status says (only leftovers of attempts that lost, next to a recorded archive, go).
    protected: bool,
}

/// What becomes of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// The catalog accounts for it, or may soon.
    Keep,
    /// An orphan by the catalog's word, but of a backup no automatic deletion may touch.
    Protected(String),
    Orphan(String),
}

/// Whether an object is an orphan, and why.
fn verdict(key: &str, owner: &Owner, backups: &Backups, restores: &Restores) -> Verdict {
    match owner {
        Owner::Backup(id) => match backups.get(id) {
            None => Verdict::Orphan(format!("no backup {id} in the catalog")),
            Some(b) => {
                let reason = match b.status.as_str() {
                    // In flight: the running attempt owns its folder. Deleting: its job clears it.
                    "scheduled" | "running" | "deleting" => return Verdict::Keep,
                    // The catalog names this backup's archive; anything else in its folder is
                    // what an attempt that lost left, not the backup.
                    "succeeded" => {
                        let keeps = b.archive.as_deref() == Some(key) || key.ends_with("/manifest.json");
                        return if keeps {
                            Verdict::Keep
                        } else {
                            Verdict::Orphan(format!("not the archive of succeeded backup {id}"))
                        };
                    }
                    // Whatever is left of a lost archive's backup is kept for whoever looks into it.
                    "missing" => return Verdict::Protected(format!("backup {id} has its archive missing")),
                    other => format!("backup {id} is {other}"),
                };
                if b.protected {
                    Verdict::Protected(format!("{reason}, but it is pinned or its planet's newest good backup"))
                } else {
                    Verdict::Orphan(reason)
                }
            }
        },
        Owner::Upload(id) => match restores.get(id).map(String::as_str) {
            None => Verdict::Orphan(format!("no restore {id} in the catalog")),
            Some("scheduled" | "running") => Verdict::Keep,
            Some(other) => Verdict::Orphan(format!("restore {id} is {other}")),
        },
    }
}

type Backups = HashMap<Uuid, Known>;
type Restores = HashMap<Uuid, String>;

/// The catalog rows (status, and archive for backups) of the owners of a set of keys.
async fn catalog(pool: &PgPool, owners: impl Iterator<Item = &Owner>) -> anyhow::Result<(Backups, Restores)> {
    let (mut backup_ids, mut restore_ids) = (Vec::new(), Vec::new());
    for o in owners {
        match o {
            Owner::Backup(id) => backup_ids.push(*id),
            Owner::Upload(id) => restore_ids.push(*id),
        }
    }
    let backups = sqlx::query_as::<_, (Uuid, String, Option<String>, bool)>(
        "SELECT b.id, b.status, b.object_key,
                b.pinned OR b.id = (SELECT n.id FROM backups n
                                    WHERE n.planet_id = b.planet_id AND n.status = 'succeeded'
                                    ORDER BY n.completed_at DESC NULLS LAST, n.id DESC LIMIT 1)
         FROM backups b WHERE b.id = ANY($1)",
    )
    .bind(&backup_ids)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(id, status, archive, protected)| {
        (
            id,
            Known {
                status,
                archive,
                protected,
            },
        )
    })
    .collect();
    let restores = sqlx::query_as("SELECT id, status FROM restores WHERE id = ANY($1)")
        .bind(&restore_ids)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    Ok((backups, restores))
}

/// One pass over the bucket and the catalog.
pub async fn sweep(pool: &PgPool, storage: &Storage, settings: Settings, now: DateTime<Utc>) -> anyhow::Result<Report> {
    let mut report = Report::default();
    // Archives first: a sweep that finds too many missing believes nothing else the bucket says
    // either, and deletes nothing.
    verify_archives(pool, storage, settings, now, &mut report).await?;
    if let Some(why) = &report.halted {
        tracing::error!(
            bucket = %storage.bucket, endpoint = %storage.endpoint, %why, ?report,
            "reaper sweep halted: nothing was changed or deleted; check the storage settings of this worker"
        );
        metrics::counter!("svalbard_reaper_actions_total", "action" => "halted").increment(1);
        return Ok(report);
    }
    // A control database and a bucket of two different installations (a new control database
    // on a used bucket, or the wrong bucket) would take each other's objects for orphans.
    if let Some(why) = installation_mismatch(pool, storage).await? {
        tracing::error!(
            bucket = %storage.bucket, endpoint = %storage.endpoint, %why,
            "reaper sweep halted: the control database and the bucket belong to different installations; nothing was deleted"
        );
        metrics::counter!("svalbard_reaper_actions_total", "action" => "installation_mismatch").increment(1);
        report.halted = Some(why);
        return Ok(report);
    }
    let root = storage.tenants_root();
    // An upload whose start time the store does not tell counts as new.
    let age = |t: Option<DateTime<Utc>>| t.map_or(Duration::ZERO, |t| (now - t).to_std().unwrap_or(Duration::ZERO));

    // 1. Stale multipart uploads, except those of a backup or restore still in flight.
    let uploads = storage.list_uploads(&root).await?;
    let owners: Vec<Option<Owner>> = uploads.iter().map(|u| owner(&root, &u.key)).collect();
    let (backups, restores) = catalog(pool, owners.iter().flatten()).await?;
    for (u, owner) in uploads.iter().zip(&owners) {
        let in_flight = match owner {
            Some(Owner::Backup(id)) => backups
                .get(id)
                .is_some_and(|b| b.status == "scheduled" || b.status == "running"),
            Some(Owner::Upload(id)) => restores.get(id).is_some_and(|s| s == "scheduled" || s == "running"),
            None => false,
        };
        if !in_flight && age(u.initiated) >= settings.stale_upload {
            storage.abort_upload(&u.key, &u.upload_id).await?;
            tracing::info!(key = %u.key, initiated = ?u.initiated, "aborted a stale multipart upload");
            metrics::counter!("svalbard_reaper_actions_total", "action" => "abort_upload").increment(1);
            report.aborted_uploads += 1;
        }
    }

    // 2. Orphaned objects, a page at a time.
    // The newest id the catalog holds: an object of a newer backup or restore was written after
    // the catalog's last word, so its missing row says nothing (a catalog rolled back to a
    // snapshot, or a new one pointed at a used bucket). Read before listing, so objects written
    // while the sweep runs count as newer too.
    let newest = newest_id(pool).await?;
    // A dry pass first: when a large share of what the bucket holds has no row, the catalog is
    // the one that lost its memory, and nothing is deleted.
    let mut census = Report::default();
    let pass = Pass {
        pool,
        storage,
        root: &root,
        settings,
        now,
        newest,
    };
    pass.run(Mode::Count, &mut census).await?;
    let listed = census.unaccounted + census.accounted;
    if settings.too_many_missing(census.unaccounted, listed) {
        let why = format!(
            "{} of the {listed} objects under {root} in bucket {} have no row in the catalog (more than {} and more than {} %); \
             a control database restored from an older snapshot, or the wrong one, looks the same as orphans",
            census.unaccounted, storage.bucket, settings.halt_missing_min, settings.halt_missing_percent
        );
        tracing::error!(bucket = %storage.bucket, %why, "reaper deleted no orphans: the catalog does not account for the bucket");
        metrics::counter!("svalbard_reaper_actions_total", "action" => "halted").increment(1);
        report.halted = Some(why);
        return Ok(report);
    }
    pass.run(Mode::Delete, &mut report).await?;
    tracing::info!(?report, "reaper sweep done");
    Ok(report)
}

/// One pass over the listing under `root`, a page at a time.
struct Pass<'a> {
    pool: &'a PgPool,
    storage: &'a Storage,
    root: &'a str,
    settings: Settings,
    now: DateTime<Utc>,
    newest: Option<Uuid>,
}

impl Pass<'_> {
    async fn run(&self, mode: Mode, report: &mut Report) -> anyhow::Result<()> {
        let mut token = None;
        loop {
            let (page, next) = self.storage.list_page(self.root, token).await?;
            reap_page(
                self.pool,
                self.storage,
                self.root,
                &page,
                self.settings,
                self.now,
                self.newest,
                mode,
                report,
            )
            .await?;
            match next {
                Some(t) => token = Some(t),
                None => return Ok(()),
            }
        }
    }
}

#[derive(Serialize, serde::Deserialize)]
struct Marker {
    installation: Uuid,
}

/// Compares the installation id of the control database with the one in the bucket, writing
/// either that is absent (the first sweep of an installation writes both). Returns why they
/// disagree, if they do.
async fn installation_mismatch(pool: &PgPool, storage: &Storage) -> anyhow::Result<Option<String>> {
    sqlx::query("INSERT INTO installation (id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(Uuid::now_v7())
        .execute(pool)
        .await?;
    let ours: Uuid = sqlx::query_scalar("SELECT id FROM installation")
        .fetch_one(pool)
        .await?;
    let key = storage.installation_key();
    let Some(body) = storage.get_small(&key).await? else {
        let body = serde_json::to_vec(&Marker { installation: ours })?;
        storage.put(&key, body, "application/json").await?;
        tracing::info!(%key, installation = %ours, "wrote the installation marker into the bucket");
        return Ok(None);
    };
    Ok(match serde_json::from_slice::<Marker>(&body) {
        Ok(m) if m.installation == ours => None,
        Ok(m) => Some(format!(
            "the bucket {} (object {key}) belongs to installation {}, this control database to {ours}; \
             a new control database on a used bucket, or the wrong bucket, looks the same as orphans",
            storage.bucket, m.installation
        )),
        Err(e) => Some(format!(
            "the installation marker {key} in bucket {} is unreadable: {e}",
            storage.bucket
        )),
    })
}

/// The newest backup or restore id of the catalog (ids are UUID v7, ordered by creation time).
async fn newest_id(pool: &PgPool) -> anyhow::Result<Option<Uuid>> {
    let ids: Vec<Option<Uuid>> = sqlx::query_scalar(
        "SELECT (SELECT id FROM backups ORDER BY id DESC LIMIT 1)
         UNION ALL SELECT (SELECT id FROM restores ORDER BY id DESC LIMIT 1)",
    )
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().flatten().max())
}

/// Whether the catalog has seen past `id`: it holds a row created after it. An id that is not
/// a UUID v7 carries no time, so it is never taken as seen.
fn seen_past(newest: Option<Uuid>, id: Uuid) -> bool {
    id.get_version_num() == 7 && newest.is_some_and(|n| n > id)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Only count what has no row; change nothing.
    Count,
    Delete,
}

/// A backup due for the presence check of its archive.
#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    status: String,
    object_key: String,
    storage_prefix: String,
    missing_since: Option<DateTime<Utc>>,
}

/// Checks the least recently checked archives of succeeded (and missing) backups. Nothing is
/// written until the whole batch has been looked at, so a halted sweep leaves no trace.
async fn verify_archives(
    pool: &PgPool,
    storage: &Storage,
    settings: Settings,
    now: DateTime<Utc>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let due: Vec<Due> = sqlx::query_as(
        "SELECT id, status, object_key, storage_prefix, missing_since FROM backups
         WHERE status IN ('succeeded', 'missing') AND object_key IS NOT NULL
         ORDER BY checked_at NULLS FIRST, id LIMIT $1",
    )
    .bind(settings.verify_batch)
    .fetch_all(pool)
    .await?;
    let mut present = Vec::new();
    let mut absent = Vec::new();
    for b in due {
        report.checked_archives += 1;
        if storage.exists(&b.object_key).await? {
            present.push(b);
        } else {
            absent.push(b);
        }
    }
    // Only newly absent archives count: backups already known to be missing would otherwise
    // halt every later sweep.
    let newly = absent.iter().filter(|b| b.status == "succeeded").count() as u64;
    if settings.too_many_missing(newly, report.checked_archives) {
        report.halted = Some(format!(
            "{newly} of the {} archives checked are missing from bucket {} (more than {} and more than {} %); \
             a wrong bucket, prefix or endpoint, or a store still catching up, looks the same as lost archives",
            report.checked_archives, storage.bucket, settings.halt_missing_min, settings.halt_missing_percent
        ));
        return Ok(());
    }

    for b in present {
        let back = sqlx::query(
            "UPDATE backups SET checked_at = $2, missing_since = NULL,
                    status = CASE WHEN status = 'missing' THEN 'succeeded' ELSE status END,
                    error_message = CASE WHEN status = 'missing' THEN NULL ELSE error_message END
             WHERE id = $1 AND status IN ('succeeded', 'missing')",
        )
        .bind(b.id)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected();
        if back == 1 && (b.status == "missing" || b.missing_since.is_some()) {
            tracing::warn!(backup_id = %b.id, key = %b.object_key, was = %b.status, "archive found again; backup succeeded");
            metrics::counter!("svalbard_reaper_actions_total", "action" => "found_again").increment(1);
            report.found_again += 1;
        }
    }
    for b in absent {
        if b.status == "missing" {
            sqlx::query("UPDATE backups SET checked_at = $2 WHERE id = $1 AND status = 'missing'")
                .bind(b.id)
                .bind(now)
                .execute(pool)
                .await?;
            continue;
        }
        if b.missing_since.is_none() {
            sqlx::query(
                "UPDATE backups SET checked_at = $2, missing_since = $2 WHERE id = $1 AND status = 'succeeded'",
            )
            .bind(b.id)
            .bind(now)
            .execute(pool)
            .await?;
            tracing::warn!(backup_id = %b.id, key = %b.object_key, "archive did not answer; suspected missing, confirmed or cleared at the next sweep");
            metrics::counter!("svalbard_reaper_actions_total", "action" => "suspect_missing").increment(1);
            report.suspected_missing += 1;
            continue;
        }
        // Suspected on an earlier sweep: a listing of the folder, which a HEAD of a lagging
        // replica may not agree with, has the last word.
        let listed = storage.list_keys(&b.storage_prefix).await?;
        if listed.contains(&b.object_key) {
            sqlx::query(
                "UPDATE backups SET checked_at = $2, missing_since = NULL WHERE id = $1 AND status = 'succeeded'",
            )
            .bind(b.id)
            .bind(now)
            .execute(pool)
            .await?;
            tracing::warn!(backup_id = %b.id, key = %b.object_key, "archive listed though it did not answer; no longer suspected");
            report.found_again += 1;
            continue;
        }
        // The tenant's webhooks hear of it in the same transaction.
        let mut tx = pool.begin().await?;
        let marked = sqlx::query_as::<_, BackupEvent>(sqlx::AssertSqlSafe(format!(
            "UPDATE backups SET status = 'missing', checked_at = $2,
                    error_message = 'the archive ' || object_key || ' is missing from object storage (not found since '
                        || to_char(missing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC, confirmed by a listing on '
                        || to_char($2 AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC); this backup cannot be restored '
                        || 'unless the object is put back, and then it is ready again'
             WHERE id = $1 AND status = 'succeeded' RETURNING {BACKUP_EVENT_COLUMNS}"
        )))
        .bind(b.id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(marked) = &marked {
            marked.notify(&mut tx, EventType::VerificationFailed).await?;
        }
        tx.commit().await?;
        if marked.is_some() {
            tracing::error!(backup_id = %b.id, key = %b.object_key, "archive missing from object storage, confirmed by a listing; backup marked missing");
            metrics::counter!("svalbard_reaper_actions_total", "action" => "mark_missing").increment(1);
            report.marked_missing += 1;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn reap_page(
    pool: &PgPool,
    storage: &Storage,
    root: &str,
    page: &[Listed],
    settings: Settings,
    now: DateTime<Utc>,
    newest: Option<Uuid>,
    mode: Mode,
    report: &mut Report,
) -> anyhow::Result<()> {
    let owners: Vec<(&Listed, Option<Owner>)> = page.iter().map(|o| (o, owner(root, &o.key))).collect();
    let (backups, restores) = catalog(pool, owners.iter().filter_map(|(_, o)| o.as_ref())).await?;
    for (object, owner) in owners {
        let Some(owner) = owner else {
            tracing::warn!(key = %object.key, "object outside Svalbard's layout; left alone");
            report.unknown_keys += 1;
            continue;
        };
        let (id, rowless) = match owner {
            Owner::Backup(id) => (id, !backups.contains_key(&id)),
            Owner::Upload(id) => (id, !restores.contains_key(&id)),
        };
        if mode == Mode::Count {
            if rowless {
                report.unaccounted += 1;
            } else {
                report.accounted += 1;
            }
            continue;
        }
        if rowless && !seen_past(newest, id) {
            tracing::warn!(key = %object.key, %id, newest = ?newest,
                "object of a backup or restore newer than anything the catalog holds; left alone");
            metrics::counter!("svalbard_reaper_actions_total", "action" => "spared_unknown").increment(1);
            report.spared_unknown += 1;
            continue;
        }
        let reason = match verdict(&object.key, &owner, &backups, &restores) {
            Verdict::Keep => continue,
            Verdict::Protected(reason) => {
                tracing::debug!(key = %object.key, %reason, "object kept");
                report.protected += 1;
                continue;
            }
            Verdict::Orphan(reason) => reason,
        };
        let age = object
            .last_modified
            .map_or(Duration::ZERO, |t| (now - t).to_std().unwrap_or(Duration::ZERO));
        if age < settings.orphan_grace {
            report.young_orphans += 1;
            continue;
        }
        storage.delete(&object.key).await?;
        tracing::info!(key = %object.key, %reason, size = object.size, "deleted an orphaned object");
        metrics::counter!("svalbard_reaper_actions_total", "action" => "delete_orphan").increment(1);
        report.deleted_orphans += 1;
        report.orphan_bytes += u64::try_from(object.size).unwrap_or(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_layout_and_nothing_else() {
        let (t, p, x, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let root = "svb/tenants/";
        let key = |kind: &str, file: &str| format!("{root}{t}/projects/{p}/planets/{x}/{kind}/{b}/{file}");
        assert_eq!(
            owner(root, &key("backups", "archive-1.svb.zst")),
            Some(Owner::Backup(b))
        );
        assert_eq!(owner(root, &key("uploads", "dump.sql.gz")), Some(Owner::Upload(b)));
        assert_eq!(owner(root, &key("other", "x")), None);
        assert_eq!(owner(root, &key("backups", "")), None);
        assert_eq!(owner(root, "svb/tenants/readme.txt"), None);
        assert_eq!(owner(root, &format!("elsewhere/{t}")), None);
        assert_eq!(
            owner(
                root,
                &format!("{root}not-a-uuid/projects/{p}/planets/{x}/backups/{b}/f")
            ),
            None
        );

        let archive = key("backups", "archive-2.svb.zst");
        let known = |status: &str, archive: Option<&str>, protected: bool| Known {
            status: status.into(),
            archive: archive.map(str::to_owned),
            protected,
        };
        let backups = HashMap::from([(b, known("succeeded", Some(&archive), false))]);
        let none = HashMap::new();
        let o = Owner::Backup(b);
        assert_eq!(verdict(&archive, &o, &backups, &none), Verdict::Keep);
        assert_eq!(
            verdict(&key("backups", "manifest.json"), &o, &backups, &none),
            Verdict::Keep
        );
        assert!(matches!(
            verdict(&key("backups", "archive-1.svb.zst"), &o, &backups, &none),
            Verdict::Orphan(_)
        ));
        assert!(matches!(
            verdict(&archive, &o, &HashMap::new(), &none),
            Verdict::Orphan(_)
        ));
        let running = HashMap::from([(b, known("running", None, false))]);
        assert_eq!(
            verdict(&key("backups", "archive-1.svb.zst"), &o, &running, &none),
            Verdict::Keep
        );
        // What is left of a backup whose archive is missing, or of a pinned failed one, stays.
        for kept in [known("missing", Some(&archive), false), known("failed", None, true)] {
            let backups = HashMap::from([(b, kept)]);
            assert!(matches!(
                verdict(&key("backups", "manifest.json"), &o, &backups, &none),
                Verdict::Protected(_)
            ));
        }
        assert!(matches!(
            verdict(
                &key("backups", "manifest.json"),
                &o,
                &HashMap::from([(b, known("failed", None, false))]),
                &none
            ),
            Verdict::Orphan(_)
        ));
    }

    #[test]
    fn only_ids_older_than_the_newest_row_count_as_seen() {
        let (old, newest, young) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert!(seen_past(Some(newest), old));
        assert!(!seen_past(Some(newest), young));
        assert!(!seen_past(Some(newest), newest));
        assert!(!seen_past(None, old), "an empty catalog has seen nothing");
        assert!(
            !seen_past(Some(Uuid::max()), Uuid::nil()),
            "an id without a time is never seen"
        );
    }

    #[test]
    fn a_sweep_halts_only_past_both_thresholds() {
        let s = Settings::with_grace(Duration::ZERO, Duration::ZERO);
        assert!(!s.too_many_missing(2, 2), "two missing never halt");
        assert!(!s.too_many_missing(3, 500), "3 of 500 is a small share");
        assert!(s.too_many_missing(3, 3));
        assert!(s.too_many_missing(51, 500));
        assert!(!s.too_many_missing(50, 500), "exactly 10 % does not halt");
        assert!(!s.too_many_missing(0, 0));
    }
}
