//! Schedules, retention and the reaper against real workers, PostgreSQL and the S3 server.

use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use serde_json::{Value, json};
use svalbard_core::ids::{BackupId, PlanetId, ProjectId, RestoreId, TenantId};
use svalbard_core::jobs;
use svalbard_testkit::source;
use svalbard_worker::reaper::{self, Settings};

use crate::harness::Env;

const MINUTE: Duration = Duration::from_secs(60);

fn ids(b: &Value) -> (TenantId, ProjectId, PlanetId, BackupId) {
    let id = |k: &str| b[k].as_str().unwrap().parse::<uuid::Uuid>().unwrap();
    (
        TenantId(id("tenantId")),
        ProjectId(id("projectId")),
        PlanetId(id("planetId")),
        BackupId(id("id")),
    )
}

impl Env {
    /// A PostgreSQL planet over a fresh small source database.
    async fn orders_planet(&self, hint: &str) -> String {
        let src = source::create(hint, &source::sample_schema(500)).await.unwrap();
        self.planet("orders", &src, "postgres", None).await
    }

    /// `n` succeeded backups of the planet, taken by a worker that stops afterwards.
    async fn backups_of(&self, planet: &str, n: usize) -> Vec<Value> {
        let (stop, worker) = self.worker();
        let mut taken = Vec::new();
        for _ in 0..n {
            taken.push(self.take_backup(planet).await);
        }
        stop.cancel();
        worker.await.unwrap();
        taken
    }

    async fn take_backup(&self, planet: &str) -> Value {
        let created = self.start_backup(planet).await;
        self.wait_status(created["id"].as_str().unwrap(), "succeeded", MINUTE)
            .await
    }

    async fn prefix_of(&self, b: &Value) -> String {
        let (t, p, x, id) = ids(b);
        self.storage.backup_prefix(t, p, x, id)
    }

    async fn keys_of(&self, b: &Value) -> Vec<String> {
        self.storage.list_keys(&self.prefix_of(b).await).await.unwrap()
    }
}

impl Env {
    /// An endpoint of this tenant for `event` on a port nobody answers: its deliveries are
    /// queued and attempted, never delivered. Returns the path of its deliveries.
    async fn webhook_for(&self, event: &str) -> String {
        let hooks = format!("/api/v1/tenants/{}/webhooks", self.tenant);
        let r = self
            .app
            .post(
                &hooks,
                &self.token,
                json!({ "url": "http://127.0.0.1:9/hooks", "eventTypes": [event] }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        format!("{hooks}/{}/deliveries", r.json()["id"].as_str().unwrap())
    }

    /// The `data` of each delivery queued for the endpoint, newest first.
    async fn delivered_data(&self, deliveries: &str) -> Vec<(String, Value)> {
        let r = self.app.get(deliveries, &self.token).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["eventType"].as_str().unwrap().to_owned(), d["data"].clone()))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_takes_due_scheduled_backups_and_retention_expires_the_old_ones() {
    let env = Env::new().await;
    let planet = env.orders_planet("sched").await;
    let schedule = format!("{}/{planet}/schedule", env.planets());
    let r = env
        .app
        .send(
            Method::PUT,
            &schedule,
            Some(&env.token),
            Some(json!({ "cron": "0 3 * * *", "retention": { "keepLast": 1 } })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // A manual backup, pinned.
    let (stop, worker) = env.worker();
    let pinned = env.take_backup(&planet).await;
    let pinned_id = pinned["id"].as_str().unwrap();
    let r = env
        .app
        .patch(&env.backup_path(pinned_id), &env.token, json!({ "pinned": true }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // The schedule comes due (as if 03:00 had arrived): the worker's scheduler takes a backup.
    sqlx::query("UPDATE schedules SET next_run_at = now()")
        .execute(&env.app.pool)
        .await
        .unwrap();
    let list = format!("{}/{planet}/backups?status=succeeded", env.planets());
    let started = std::time::Instant::now();
    let periodic = loop {
        let items = env.app.get(&list, &env.token).await.json()["items"].clone();
        if let Some(b) = items.as_array().unwrap().iter().find(|b| b["method"] == "periodic") {
            break b.clone();
        }
        assert!(started.elapsed() < MINUTE, "no periodic backup: {items}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let s = env.app.get(&schedule, &env.token).await.json();
    assert_eq!(s["lastBackupId"], periodic["id"], "{s}");
    let next = chrono::DateTime::parse_from_rfc3339(s["nextRunAt"].as_str().unwrap()).unwrap();
    assert!(next > Utc::now(), "{s}");

    // A third backup succeeds: keepLast 1 lets the periodic one go, the pinned one stays.
    let expiries = env.webhook_for("backup.expired").await;
    let newest = env.take_backup(&planet).await;
    let gone = env
        .wait_for(periodic["id"].as_str().unwrap(), MINUTE, |b| b["status"] == "expired")
        .await;
    assert!(gone["errorMessage"].as_str().unwrap().contains("keepLast 1"), "{gone}");
    // The tenant's webhook heard of it (and of nothing else).
    let heard = env.delivered_data(&expiries).await;
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(heard[0].0, "backup.expired");
    assert_eq!(heard[0].1["backupId"], periodic["id"], "{heard:?}");
    assert_eq!(heard[0].1["status"], "expired", "{heard:?}");
    assert_eq!(heard[0].1["errorMessage"], gone["errorMessage"], "{heard:?}");
    let started = std::time::Instant::now();
    while !env.keys_of(&periodic).await.is_empty() {
        assert!(started.elapsed() < MINUTE, "the expired backup's objects stay");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.cancel();
    worker.await.unwrap();
    for b in [&pinned, &newest] {
        assert_eq!(env.backup(b["id"].as_str().unwrap()).await["status"], "succeeded");
        assert_eq!(env.keys_of(b).await.len(), 2, "archive and manifest of {}", b["id"]);
    }
    env.app
        .get(
            &format!("{}/archive", env.backup_path(periodic["id"].as_str().unwrap())),
            &env.token,
        )
        .await
        .problem(409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_cut_short_by_a_dying_worker_completes_later() {
    let env = Env::new().await;
    let planet = env.orders_planet("crashdel").await;
    let b = env.backups_of(&planet, 1).await.remove(0);
    let id = b["id"].as_str().unwrap();
    assert_eq!(env.keys_of(&b).await.len(), 2);

    // A worker claims the deletion, removes the archive, and dies before the rest.
    let r = env.app.delete(&env.backup_path(id), &env.token).await;
    assert_eq!(r.status, 202);
    let claimed = jobs::claim(
        &env.app.pool,
        "doomed-worker",
        Duration::from_secs(1),
        Duration::from_secs(3600),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(claimed.kind, "delete-backup");
    let archive = env
        .keys_of(&b)
        .await
        .into_iter()
        .find(|k| k.contains("archive-"))
        .unwrap();
    env.storage.delete(&archive).await.unwrap();
    assert_eq!(env.keys_of(&b).await.len(), 1, "the manifest is left");
    assert_eq!(env.backup(id).await["status"], "deleting");

    // Its lease runs out; another worker takes the job over and finishes it.
    let (stop, worker) = env.worker();
    env.wait_status(id, "deleted", MINUTE).await;
    stop.cancel();
    worker.await.unwrap();
    assert!(env.keys_of(&b).await.is_empty());
    let (keys, uploads) = env.leftovers(&b).await;
    assert!(keys.is_empty() && uploads.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_worker_process_mid_deletion_leaves_the_deletion_to_finish_later() {
    use futures_util::StreamExt as _;
    let env = Env::new().await;
    let planet = env.orders_planet("killdel").await;
    let b = env.backups_of(&planet, 1).await.remove(0);
    let id = b["id"].as_str().unwrap();
    // Enough objects in the backup's folder that removing them takes a while.
    let prefix = env.prefix_of(&b).await;
    futures_util::stream::iter(0..600)
        .map(|i| {
            let (s, key) = (&env.storage, format!("{prefix}extra-{i:04}"));
            async move { s.put(&key, vec![0; 16], "application/octet-stream").await.unwrap() }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let total = env.keys_of(&b).await.len();
    assert_eq!(total, 602);

    // A real `svalbard work` starts deleting, and is killed without warning half-way.
    let mut doomed = env.worker_process();
    let r = env.app.delete(&env.backup_path(id), &env.token).await;
    assert_eq!(r.status, 202);
    let started = std::time::Instant::now();
    loop {
        let left = env.keys_of(&b).await.len();
        if left < total {
            break;
        }
        assert!(started.elapsed() < MINUTE, "the deletion never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    doomed.start_kill().unwrap();
    doomed.wait().await.unwrap();
    let left = env.keys_of(&b).await.len();
    assert!(left > 0, "the deletion finished before the kill; nothing was cut short");
    assert_eq!(env.backup(id).await["status"], "deleting");

    // Once the dead worker's lease runs out, another worker finishes the job.
    let (stop, worker) = env.worker();
    env.wait_status(id, "deleted", MINUTE).await;
    stop.cancel();
    worker.await.unwrap();
    let (keys, uploads) = env.leftovers(&b).await;
    assert!(keys.is_empty() && uploads.is_empty(), "{} objects left", keys.len());
    let jobs = env.attempts(id).await;
    assert!(
        jobs.iter()
            .any(|(kind, attempts, state)| kind == "delete-backup" && *attempts >= 2 && state == "succeeded"),
        "{jobs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_sweeps_orphans_and_stale_uploads_and_confirms_lost_archives_before_saying_so() {
    let env = Env::new().await;
    let planet = env.orders_planet("reaper").await;
    // The genuine orphans are older than the catalog's newest rows: it has seen past them.
    let (stray_id, upload_id, stale_id) = (BackupId::new(), RestoreId::new(), BackupId::new());
    let verifications = env.webhook_for("verification.failed").await;
    let [lost, kept]: [Value; 2] = env.backups_of(&planet, 2).await.try_into().unwrap();
    let s = &env.storage;
    let (t, p, x, _) = ids(&kept);
    let lost_id = lost["id"].as_str().unwrap();
    // The backup that loses its archive is pinned: whatever happens, its row and what is left
    // of its objects stay.
    let r = env
        .app
        .send(
            Method::PATCH,
            &env.backup_path(lost_id),
            Some(&env.token),
            Some(json!({ "pinned": true })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Planted: an archive of a backup the catalog never heard of, an upload of a restore that
    // does not exist, the archive of an attempt that lost, a stale multipart upload, and a file
    // that is not Svalbard's.
    let stray = format!("{}archive-1.svb.zst", s.backup_prefix(t, p, x, stray_id));
    let upload = format!("{}dump.sql.gz", s.upload_prefix(t, p, x, upload_id));
    let zombie = format!("{}archive-9.svb.zst", env.prefix_of(&kept).await);
    let foreign = format!("{}README.txt", s.tenants_root());
    for key in [&stray, &upload, &zombie, &foreign] {
        s.put(key, b"leftover".to_vec(), "application/octet-stream")
            .await
            .unwrap();
    }
    let stale_key = format!("{}archive-1.svb.zst", s.backup_prefix(t, p, x, stale_id));
    s.client
        .create_multipart_upload()
        .bucket(&s.bucket)
        .key(&stale_key)
        .send()
        .await
        .unwrap();
    // A backup queued but not yet taken (no worker runs) owns its folder: an upload under way
    // there is never aborted, however old.
    let queued = env.start_backup(&planet).await;
    let in_flight_key = format!("{}archive-1.svb.zst", env.prefix_of(&queued).await);
    s.client
        .create_multipart_upload()
        .bucket(&s.bucket)
        .key(&in_flight_key)
        .send()
        .await
        .unwrap();
    // Behind Svalbard's back, the first backup's archive disappears.
    let lost_archive = env
        .keys_of(&lost)
        .await
        .into_iter()
        .find(|k| k.contains("archive-"))
        .unwrap();
    let lost_bytes = svalbard_testkit::object(s, &lost_archive).await;
    s.delete(&lost_archive).await.unwrap();

    // Within the grace period nothing is deleted, and one sweep that misses an archive only
    // suspects it.
    let patient = Settings::with_grace(Duration::from_secs(3600), Duration::from_secs(3600));
    let r = reaper::sweep(&env.app.pool, s, patient, Utc::now()).await.unwrap();
    assert_eq!((r.aborted_uploads, r.deleted_orphans), (0, 0), "{r:?}");
    assert_eq!(r.young_orphans, 3, "{r:?}");
    assert_eq!(r.unknown_keys, 1, "{r:?}");
    assert_eq!(
        (
            r.checked_archives,
            r.suspected_missing,
            r.marked_missing,
            r.halted.as_deref()
        ),
        (2, 1, 0, None),
        "{r:?}"
    );
    let suspected = env.backup(lost_id).await;
    assert_eq!(suspected["status"], "succeeded", "{suspected}");
    assert!(
        env.delivered_data(&verifications).await.is_empty(),
        "a suspicion is no verdict"
    );

    // Past the grace period: the orphans and the upload go. The next sweep lists the lost
    // backup's folder, does not find the archive there either, and only then says it is missing;
    // its manifest stays.
    let eager = Settings::with_grace(Duration::ZERO, Duration::ZERO);
    let r = reaper::sweep(&env.app.pool, s, eager, Utc::now()).await.unwrap();
    assert_eq!(r.aborted_uploads, 1, "{r:?}");
    assert_eq!(r.deleted_orphans, 3, "{r:?}");
    assert_eq!((r.suspected_missing, r.marked_missing, r.protected), (0, 1, 1), "{r:?}");
    let flagged = env.backup(lost_id).await;
    assert_eq!(flagged["status"], "missing", "{flagged}");
    assert_eq!(flagged["pinned"], true, "{flagged}");
    let msg = flagged["errorMessage"].as_str().unwrap();
    assert!(
        msg.contains("missing from object storage") && msg.contains(&lost_archive),
        "{msg}"
    );
    let heard = env.delivered_data(&verifications).await;
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(heard[0].0, "verification.failed");
    assert_eq!(heard[0].1["backupId"], lost_id, "{heard:?}");
    assert_eq!(heard[0].1["status"], "missing", "{heard:?}");
    assert_eq!(heard[0].1["errorMessage"], msg, "{heard:?}");
    let uploads = s.list_uploads(&s.tenants_root()).await.unwrap();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert_eq!(uploads[0].key, in_flight_key);
    let mut left = s.list_keys(&s.tenants_root()).await.unwrap();
    left.sort();
    let mut expected = env.keys_of(&kept).await;
    expected.extend(env.keys_of(&lost).await);
    expected.push(foreign.clone());
    expected.sort();
    assert_eq!(
        left, expected,
        "the kept backup, the lost one's manifest and the foreign file remain"
    );
    assert_eq!(env.keys_of(&kept).await.len(), 2);
    assert_eq!(
        env.keys_of(&lost).await,
        vec![format!("{}manifest.json", env.prefix_of(&lost).await)]
    );
    assert_eq!(env.backup(kept["id"].as_str().unwrap()).await["status"], "succeeded");
    // A second pass finds nothing more to do, and deletes nothing of the missing backup.
    let r = reaper::sweep(&env.app.pool, s, eager, Utc::now()).await.unwrap();
    assert_eq!(
        (r.aborted_uploads, r.deleted_orphans, r.marked_missing, r.found_again),
        (0, 0, 0, 0),
        "{r:?}"
    );
    assert_eq!(env.keys_of(&lost).await.len(), 1);

    // The archive is put back (restored from elsewhere): the backup is ready again.
    s.put(&lost_archive, lost_bytes, "application/zstd").await.unwrap();
    let r = reaper::sweep(&env.app.pool, s, eager, Utc::now()).await.unwrap();
    assert_eq!(r.found_again, 1, "{r:?}");
    let back = env.backup(lost_id).await;
    assert_eq!(back["status"], "succeeded", "{back}");
    assert!(back["errorMessage"].is_null(), "{back}");
    assert_eq!(
        env.download(lost_id).await.len(),
        lost["sizeBytes"].as_u64().unwrap() as usize
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaper_pointed_at_the_wrong_bucket_halts_and_changes_nothing() {
    let env = Env::new().await;
    let planet = env.orders_planet("wrongbucket").await;
    let stray_id = BackupId::new();
    let taken = env.backups_of(&planet, 3).await;
    let s = &env.storage;
    let (t, p, x, _) = ids(&taken[0]);
    let stray = format!("{}archive-1.svb.zst", s.backup_prefix(t, p, x, stray_id));
    s.put(&stray, b"leftover".to_vec(), "application/octet-stream")
        .await
        .unwrap();
    let catalog = || async {
        sqlx::query_as::<_, (String, Option<chrono::DateTime<Utc>>, Option<chrono::DateTime<Utc>>)>(
            "SELECT status, checked_at, missing_since FROM backups ORDER BY id",
        )
        .fetch_all(&env.app.pool)
        .await
        .unwrap()
    };
    let before = catalog().await;
    let keys_before = s.list_keys(&s.tenants_root()).await.unwrap();

    // An empty bucket on another server, as a worker with the wrong settings would see, twice.
    let garage = crate::garage::Garage::start().await;
    let mut wrong = env.app.config.s3.clone();
    garage.configure(&mut wrong);
    let wrong = svalbard_core::storage::Storage::new(&wrong);
    let eager = Settings::with_grace(Duration::ZERO, Duration::ZERO);
    for _ in 0..2 {
        let r = reaper::sweep(&env.app.pool, &wrong, eager, Utc::now()).await.unwrap();
        assert_eq!(r.checked_archives, 3, "{r:?}");
        let why = r
            .halted
            .as_deref()
            .unwrap_or_else(|| panic!("the sweep did not halt: {r:?}"));
        assert!(why.contains("3 of the 3 archives"), "{why}");
        assert_eq!(
            (
                r.suspected_missing,
                r.marked_missing,
                r.deleted_orphans,
                r.aborted_uploads
            ),
            (0, 0, 0, 0),
            "{r:?}"
        );
    }
    assert_eq!(before, catalog().await, "a halted sweep changed the catalog");
    assert_eq!(s.list_keys(&s.tenants_root()).await.unwrap(), keys_before);

    // The right bucket: all is well, and the stray object goes.
    let r = reaper::sweep(&env.app.pool, s, eager, Utc::now()).await.unwrap();
    assert_eq!(
        (r.halted.as_deref(), r.suspected_missing, r.deleted_orphans),
        (None, 0, 1),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_newer_than_a_rolled_back_catalog_survive_the_reaper() {
    let env = Env::new().await;
    let planet = env.orders_planet("rollback").await;
    let taken = env.backups_of(&planet, 4).await;
    let s = &env.storage;
    let all = || async { s.list_keys(&s.tenants_root()).await.unwrap() };
    let before = all().await;
    assert_eq!(before.len(), 8, "{before:?}");
    // The control database goes back to a snapshot taken before the newest backup: its row is
    // gone, its objects are not, and they are long past the grace period.
    let forget = |b: &Value| {
        let id: uuid::Uuid = b["id"].as_str().unwrap().parse().unwrap();
        let pool = env.app.pool.clone();
        async move {
            sqlx::query("DELETE FROM backups WHERE id = $1")
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    forget(&taken[3]).await;
    let eager = Settings::with_grace(Duration::ZERO, Duration::ZERO);
    let later = Utc::now() + chrono::Duration::days(2);
    let r = reaper::sweep(&env.app.pool, s, eager, later).await.unwrap();
    assert_eq!(
        (r.deleted_orphans, r.spared_unknown, r.halted.as_deref()),
        (0, 2, None),
        "{r:?}"
    );
    assert_eq!(all().await, before, "the newest backup's objects were deleted");

    // A snapshot older still: two backups forgotten is too large a share of the bucket to be
    // orphans, whatever their ids say.
    forget(&taken[2]).await;
    // Another backup is taken: the catalog has now seen past the forgotten ones.
    env.backups_of(&planet, 1).await;
    let before = all().await;
    let r = reaper::sweep(&env.app.pool, s, eager, later).await.unwrap();
    assert_eq!((r.deleted_orphans, r.spared_unknown), (0, 0), "{r:?}");
    let why = r
        .halted
        .as_deref()
        .unwrap_or_else(|| panic!("the sweep did not halt: {r:?}"));
    assert!(why.contains("4 of the 10 objects"), "{why}");
    assert_eq!(all().await, before, "the forgotten backups' objects were deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_control_database_on_a_used_bucket_deletes_nothing() {
    let env = Env::new().await;
    let planet = env.orders_planet("fresh").await;
    env.backups_of(&planet, 2).await;
    let s = &env.storage;
    let eager = Settings::with_grace(Duration::ZERO, Duration::ZERO);
    // The first installation's reaper has swept once: the bucket knows whose it is.
    let r = reaper::sweep(&env.app.pool, s, eager, Utc::now()).await.unwrap();
    assert_eq!((r.deleted_orphans, r.halted.as_deref()), (0, None), "{r:?}");
    let before = s.list_keys(&s.tenants_root()).await.unwrap();

    // A new installation, with its own empty control database, on the same bucket and prefix.
    let mut o = crate::harness::fast_worker();
    o["s3"] = json!({ "prefix": env.app.config.s3.prefix });
    let fresh = Env::with_overrides(o).await;
    let later = Utc::now() + chrono::Duration::days(2);
    for _ in 0..2 {
        let r = reaper::sweep(&fresh.app.pool, &fresh.storage, eager, later)
            .await
            .unwrap();
        assert_eq!(r.deleted_orphans, 0, "{r:?}");
        let why = r
            .halted
            .as_deref()
            .unwrap_or_else(|| panic!("no mismatch reported: {r:?}"));
        assert!(why.contains("installation"), "{why}");
    }
    assert_eq!(s.list_keys(&s.tenants_root()).await.unwrap(), before);
    // The first installation is unaffected.
    let r = reaper::sweep(&env.app.pool, s, eager, Utc::now()).await.unwrap();
    assert_eq!(r.halted.as_deref(), None, "{r:?}");
}
