use std::collections::HashSet;
use std::io::Write as _;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use svalbard_testkit::source;

use crate::harness::Env;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_download_and_restore_round_trip() {
    let env = Env::new().await;
    let src = source::create("rt", &source::sample_schema(20_000)).await.unwrap();
    let planet = env.planet("orders", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let created = env.start_backup(&planet).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["status"], "scheduled");
    let b = env.wait_status(id, "succeeded", MINUTE).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(b["displayStatus"], "ready");
    assert!(
        b["engineVersion"]
            .as_str()
            .unwrap()
            .starts_with(|c: char| c.is_ascii_digit())
    );
    assert!(b["toolVersion"].as_str().is_some());
    assert_eq!(b["formatVersion"], 1);
    assert!(b["expirationDate"].as_str().is_some());
    assert!(b["progress"].is_null());
    for part in b["parts"].as_array().unwrap() {
        assert_eq!(part["state"], "succeeded", "{b}");
    }

    // Download through the pre-signed URL: the bytes never pass through the API.
    let link = env
        .app
        .get(&format!("{}/archive", env.backup_path(id)), &env.token)
        .await
        .json();
    let url = link["downloadUrl"].as_str().unwrap();
    assert!(url.starts_with(env.app.config.s3.endpoint.as_deref().unwrap()));
    let archive = env.app.client.get(url).send().await.unwrap();
    assert_eq!(archive.status(), 200);
    assert!(
        archive.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(".svb.zst")
    );
    let bytes = archive.bytes().await.unwrap();
    assert_eq!(bytes.len() as i64, b["sizeBytes"].as_i64().unwrap());
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
        b["checksum"].as_str().unwrap()
    );
    assert_eq!(link["checksum"], b["checksum"]);

    // Encrypted for the tenant: without its key the archive is noise, to zstd as to anyone.
    assert!(svalbard_core::envelope::is_encrypted(&bytes));
    assert_eq!(b["encryption"], "age");
    assert!(zstd::decode_all(&bytes[..]).is_err());
    assert!(svalbard_core::archive::read_header(&bytes).unwrap().is_none());

    // Self-describing once decrypted: the header names the backup, and plain zstd yields the dump.
    let bytes = env.open_archive(&bytes).await;
    let (header, _) = svalbard_core::archive::read_header(&bytes).unwrap().unwrap();
    assert_eq!(header.backup_id.to_string(), id);
    assert_eq!(header.engine, "postgresql");
    let dump = zstd::decode_all(&bytes[..]).unwrap();
    assert!(dump.starts_with(b"PGDMP"));

    // Restore into a new database and compare every table.
    let target = source::create("rt_target", "SELECT 1").await.unwrap();
    let mut file = tempfile();
    file.1.write_all(&dump).unwrap();
    let out = std::process::Command::new("pg_restore")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "--no-owner",
            "--exit-on-error",
            "-d",
            &target,
        ])
        .arg(&file.0)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        source::fingerprint(&target).await.unwrap(),
        source::fingerprint(&src).await.unwrap()
    );

    // The manifest, written last, agrees with the catalog.
    let (keys, uploads) = env.leftovers(&b).await;
    assert!(uploads.is_empty());
    assert_eq!(
        keys.iter().filter(|k| k.ends_with(".svb.zst.age")).count(),
        1,
        "{keys:?}"
    );
    let manifest_key = keys.iter().find(|k| k.ends_with("manifest.json")).expect("no manifest");
    let manifest: serde_json::Value =
        serde_json::from_slice(&svalbard_testkit::object(&env.storage, manifest_key).await).unwrap();
    assert_eq!(manifest["checksum"], b["checksum"]);
    assert_eq!(manifest["sizeBytes"], b["sizeBytes"]);

    // The redirect form answers 302 to the same object.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect
        .get(format!("{}{}/archive?redirect=true", env.app.base, env.backup_path(id)))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);

    let m = env
        .app
        .get(&format!("{}/{planet}/maintenance", env.planets()), &env.token)
        .await
        .json();
    assert_eq!(m["running"], false);
    assert_eq!(m["backup"]["succeeded"], true);
    assert_eq!(m["backup"]["id"], id);

    let _ = std::fs::remove_file(&file.0);
    source::drop(&src).await.unwrap();
    source::drop(&target).await.unwrap();
}

fn tempfile() -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("svalbard-test-{}.dump", uuid::Uuid::now_v7().simple()));
    let file = std::fs::File::create(&path).unwrap();
    (path, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_at_once_and_stores_nothing() {
    let env = Env::new().await;
    let user = source::password_role("the-right-password").await.unwrap();
    let src = source::create("pw", &source::sample_schema(10)).await.unwrap();
    let planet = env.planet("locked", &src, user, Some("a-wrong-password")).await;
    let (stop, worker) = env.worker();
    let id = env.start_backup(&planet).await["id"].as_str().unwrap().to_owned();
    let b = env.wait_status(&id, "failed", MINUTE).await;
    stop.cancel();
    worker.await.unwrap();
    let message = b["errorMessage"].as_str().unwrap();
    assert!(message.contains("authentication failed"), "{message}");
    assert!(
        !message.contains("a-wrong-password"),
        "the password leaked into the message"
    );
    assert_eq!(
        env.attempts(&id).await,
        vec![("backup".to_owned(), 1, "failed".to_owned())],
        "retried a permanent error"
    );
    let (keys, uploads) = env.leftovers(&b).await;
    assert!(keys.is_empty() && uploads.is_empty(), "{keys:?} {uploads:?}");
    let m = env
        .app
        .get(&format!("{}/{planet}/maintenance", env.planets()), &env.token)
        .await
        .json();
    assert_eq!(m["backup"]["succeeded"], false);
    assert!(
        m["backup"]["statusMessage"]
            .as_str()
            .unwrap()
            .contains("authentication failed")
    );
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_replaced_and_the_backup_ends_once() {
    let env = Env::new().await;
    let src = source::large().await.unwrap();
    let planet = env.planet("large", &src, "postgres", None).await;
    let mut first = env.worker_process();
    let id = env.start_backup(&planet).await["id"].as_str().unwrap().to_owned();
    // Wait until the dump is streaming, then kill the worker without warning.
    env.wait_for(&id, MINUTE, |b| b["status"] != "scheduled").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let running = env.backup(&id).await;
    assert_eq!(
        running["status"], "running",
        "the backup finished before the kill: {running}"
    );

    let mut second = env.worker_process();
    let b = env.wait_status(&id, "succeeded", 3 * MINUTE).await;
    second.start_kill().unwrap();
    second.wait().await.unwrap();
    let jobs = env.attempts(&id).await;
    assert_eq!(jobs, vec![("backup".to_owned(), 2, "succeeded".to_owned())]);
    let (keys, uploads) = env.leftovers(&b).await;
    assert!(uploads.is_empty(), "a multipart upload was left behind: {uploads:?}");
    let archives: Vec<_> = keys.iter().filter(|k| k.ends_with(".svb.zst.age")).collect();
    assert_eq!(archives.len(), 1, "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("manifest.json")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_backup_cancels_it_and_leaves_nothing() {
    let env = Env::new().await;
    let src = source::large().await.unwrap();
    let planet = env.planet("large", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let id = env.start_backup(&planet).await["id"].as_str().unwrap().to_owned();
    env.wait_for(&id, MINUTE, |b| b["status"] != "scheduled").await;
    // Caught while pg_dump runs.
    let started = std::time::Instant::now();
    while !live_tools_below(std::process::id()).iter().any(|(_, t)| t == "pg_dump") {
        assert!(started.elapsed() < MINUTE, "pg_dump never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = env.app.delete(&env.backup_path(&id), &env.token).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["status"], "deleting");
    let b = env.wait_status(&id, "deleted", MINUTE).await;
    // The dump tools are gone: no live pg_dump or psql below this test's process (the large
    // source is shared with other tests, so its sessions are not this test's alone). A killed
    // tool's connection goes with it.
    let started = std::time::Instant::now();
    loop {
        let tools = live_tools_below(std::process::id());
        if tools.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the cancelled backup's tools still run: {tools:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (keys, uploads) = env.leftovers(&b).await;
    assert!(keys.is_empty() && uploads.is_empty(), "{keys:?} {uploads:?}");
    // Tombstones show only when asked for; deleting again changes nothing.
    let list = env
        .app
        .get(&format!("{}/{planet}/backups", env.planets()), &env.token)
        .await
        .json();
    assert!(list["items"].as_array().unwrap().is_empty());
    let list = env
        .app
        .get(
            &format!("{}/{planet}/backups?status=deleted", env.planets()),
            &env.token,
        )
        .await
        .json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let again = env.app.delete(&env.backup_path(&id), &env.token).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.json()["status"], "deleted");
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_backups_with_two_workers_each_run_exactly_once() {
    // Leases long enough that a busy machine cannot let one run out: a second attempt here
    // would mean two workers claimed the same job, not that a lease expired (the chaos test
    // covers expiry).
    let mut overrides = crate::harness::fast_worker();
    overrides["worker"]["lease_secs"] = serde_json::json!(60);
    overrides["worker"]["heartbeat_secs"] = serde_json::json!(2);
    svalbard_testkit::require_s3();
    let env = Env::with_overrides(overrides).await;
    let src = source::create("many", &source::sample_schema(200)).await.unwrap();
    let mut planets = Vec::new();
    for i in 0..100 {
        planets.push(env.planet(&format!("p{i}"), &src, "postgres", None).await);
    }
    let (stop1, w1) = env.worker();
    let (stop2, w2) = env.worker();
    let creates = planets.iter().map(|p| env.start_backup(p));
    let ids: Vec<String> = futures_util::future::join_all(creates)
        .await
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 100);
    for id in &ids {
        env.wait_status(id, "succeeded", 5 * MINUTE).await;
    }
    stop1.cancel();
    stop2.cancel();
    w1.await.unwrap();
    w2.await.unwrap();
    let runs: Vec<(i32, String, Option<String>)> =
        sqlx::query_as("SELECT attempts, state, last_error FROM jobs WHERE kind = 'backup'")
            .fetch_all(&env.app.pool)
            .await
            .unwrap();
    assert_eq!(runs.len(), 100);
    let again: Vec<_> = runs.iter().filter(|(a, s, _)| *a != 1 || s != "succeeded").collect();
    assert!(again.is_empty(), "{again:?}");
    for id in ids.iter().take(5) {
        let b = env.backup(id).await;
        let (keys, uploads) = env.leftovers(&b).await;
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(uploads.is_empty());
    }
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_that_gave_up_is_started_again_by_another_delete() {
    let env = Env::new().await;
    let src = source::create("redel", &source::sample_schema(10)).await.unwrap();
    let planet = env.planet("db", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let id = env.start_backup(&planet).await["id"].as_str().unwrap().to_owned();
    let b = env.wait_status(&id, "succeeded", MINUTE).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(
        env.app.delete(&env.backup_path(&id), &env.token).await.json()["status"],
        "deleting"
    );
    // The delete job ran out of attempts (storage was gone for hours, say).
    sqlx::query("UPDATE jobs SET state = 'failed' WHERE subject_id = $1::uuid AND kind = 'delete-backup'")
        .bind(&id)
        .execute(&env.app.pool)
        .await
        .unwrap();
    assert_eq!(env.app.delete(&env.backup_path(&id), &env.token).await.status, 202);
    let (stop, worker) = env.worker();
    env.wait_status(&id, "deleted", MINUTE).await;
    stop.cancel();
    worker.await.unwrap();
    let (keys, uploads) = env.leftovers(&b).await;
    assert!(keys.is_empty() && uploads.is_empty());
    source::drop(&src).await.unwrap();
}

/// Live (not zombie) `pg_dump` and `psql` processes among the descendants of `pid`.
fn live_tools_below(pid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{p}/task")).map(|d| d.flatten().collect::<Vec<_>>());
        for task in tasks.unwrap_or_default() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                queue.push(child);
                let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
                // `pid (comm) state ...`
                let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
                let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
                let comm = comm.trim();
                if (comm == "pg_dump" || comm == "psql") && state != Some(Some('Z')) {
                    found.push((child, comm.to_owned()));
                }
            }
        }
    }
    found
}
