//! The reaper: reconciles the bucket with the catalog.
//! - Multipart uploads under Svalbard's prefix older than `stale_upload` are aborted.
//! - Objects the catalog does not account for (no row, a row whose objects should be gone, an
//!   archive of an attempt that lost) are deleted once older than `orphan_grace`.
//! - Succeeded backups whose archive is missing become `incomplete`, with a message.
//!
//! Only keys of Svalbard's own layout are ever deleted; anything else under the prefix is
//! reported and left alone. Listings are read a page at a time, so memory stays flat whatever
//! the bucket holds.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use svalbard_core::storage::{Listed, Storage};
use uuid::Uuid;

/// Settings of one sweep.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub stale_upload: Duration,
    pub orphan_grace: Duration,
    pub verify_batch: i64,
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
    pub marked_incomplete: u64,
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

/// Why an object is an orphan, or `None` when the catalog accounts for it (or may soon).
fn orphan_reason(
    key: &str,
    owner: &Owner,
    backups: &HashMap<Uuid, (String, Option<String>)>,
    restores: &HashMap<Uuid, String>,
) -> Option<String> {
    match owner {
        Owner::Backup(id) => match backups.get(id) {
            None => Some(format!("no backup {id} in the catalog")),
            Some((status, archive)) => match status.as_str() {
                // In flight: the running attempt owns its folder. Deleting: its job clears it.
                "scheduled" | "running" | "deleting" => None,
                "succeeded" => {
                    let keeps = archive.as_deref() == Some(key) || key.ends_with("/manifest.json");
                    (!keeps).then(|| format!("not the archive of succeeded backup {id}"))
                }
                other => Some(format!("backup {id} is {other}")),
            },
        },
        Owner::Upload(id) => match restores.get(id).map(String::as_str) {
            None => Some(format!("no restore {id} in the catalog")),
            Some("scheduled" | "running") => None,
            Some(other) => Some(format!("restore {id} is {other}")),
        },
    }
}

type Backups = HashMap<Uuid, (String, Option<String>)>;
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
    let backups = sqlx::query_as::<_, (Uuid, String, Option<String>)>(
        "SELECT id, status, object_key FROM backups WHERE id = ANY($1)",
    )
    .bind(&backup_ids)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(id, s, k)| (id, (s, k)))
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
    let root = storage.tenants_root();
    // An upload whose start time the store does not tell counts as new.
    let age = |t: Option<DateTime<Utc>>| t.map_or(Duration::ZERO, |t| (now - t).to_std().unwrap_or(Duration::ZERO));

    // 1. Stale multipart uploads, except those of a backup or restore still in flight.
    let uploads = storage.list_uploads(&root).await?;
    let owners: Vec<Option<Owner>> = uploads.iter().map(|u| owner(&root, &u.key)).collect();
    let (backups, restores) = catalog(pool, owners.iter().flatten()).await?;
    for (u, owner) in uploads.iter().zip(&owners) {
        let in_flight = match owner {
            Some(Owner::Backup(id)) => backups.get(id).is_some_and(|(s, _)| s == "scheduled" || s == "running"),
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
    let mut token = None;
    loop {
        let (page, next) = storage.list_page(&root, token).await?;
        reap_page(pool, storage, &root, &page, settings, now, &mut report).await?;
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }

    // 3. Archives the catalog promises but the bucket lost.
    let due: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, object_key FROM backups WHERE status = 'succeeded' AND object_key IS NOT NULL
         ORDER BY checked_at NULLS FIRST, id LIMIT $1",
    )
    .bind(settings.verify_batch)
    .fetch_all(pool)
    .await?;
    for (id, key) in due {
        report.checked_archives += 1;
        if storage.exists(&key).await? {
            sqlx::query("UPDATE backups SET checked_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(pool)
                .await?;
            continue;
        }
        let marked = sqlx::query(
            "UPDATE backups SET status = 'incomplete', checked_at = $2,
                    error_message = 'the archive ' || object_key || ' is missing from object storage (found by the reaper on ' || to_char($2 AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC); this backup cannot be restored'
             WHERE id = $1 AND status = 'succeeded'",
        )
        .bind(id)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected();
        if marked == 1 {
            tracing::warn!(backup_id = %id, %key, "archive missing from object storage; backup marked incomplete");
            metrics::counter!("svalbard_reaper_actions_total", "action" => "mark_incomplete").increment(1);
            report.marked_incomplete += 1;
        }
    }
    tracing::info!(?report, "reaper sweep done");
    Ok(report)
}

async fn reap_page(
    pool: &PgPool,
    storage: &Storage,
    root: &str,
    page: &[Listed],
    settings: Settings,
    now: DateTime<Utc>,
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
        let Some(reason) = orphan_reason(&object.key, &owner, &backups, &restores) else {
            continue;
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
        let backups = HashMap::from([(b, ("succeeded".to_owned(), Some(archive.clone())))]);
        let none = HashMap::new();
        let o = Owner::Backup(b);
        assert_eq!(orphan_reason(&archive, &o, &backups, &none), None);
        assert_eq!(
            orphan_reason(&key("backups", "manifest.json"), &o, &backups, &none),
            None
        );
        assert!(orphan_reason(&key("backups", "archive-1.svb.zst"), &o, &backups, &none).is_some());
        assert!(orphan_reason(&archive, &o, &HashMap::new(), &none).is_some());
        let running = HashMap::from([(b, ("running".to_owned(), None))]);
        assert_eq!(
            orphan_reason(&key("backups", "archive-1.svb.zst"), &o, &running, &none),
            None
        );
    }
}
