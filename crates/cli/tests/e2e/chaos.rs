//! Chaos: a hundred backups and twenty restores at once, run by two real `svalbard work`
//! processes that are killed with SIGKILL every few seconds, against a Garage server of this
//! test's own that is stopped and started again, with the workers' control-database
//! connections terminated once. In the end nothing may be lost: every backup and restore has
//! ended with a reason, every stored archive matches its recorded checksum, no multipart upload
//! is left and no object lacks its catalog row.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::{StreamExt as _, stream};
use serde_json::json;
use sha2::Digest as _;
use svalbard_testkit::source;

use crate::garage::Garage;
use crate::harness::{Env, fast_worker};

const BACKUPS: usize = 100;
const RESTORES: usize = 20;

#[derive(sqlx::FromRow)]
struct BackupRow {
    id: String,
    status: String,
    error_message: Option<String>,
    object_key: Option<String>,
    checksum: Option<String>,
    storage_prefix: String,
}

async fn sql_count(env: &Env, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&env.app.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_ends_every_job_exactly_once_and_loses_nothing() {
    let started = Instant::now();
    let mut garage = Garage::start().await;
    let mut overrides = fast_worker();
    overrides["s3"] = garage.overrides()["s3"].clone();
    overrides["s3"]["prefix"] = json!(format!("chaos-{}", uuid::Uuid::now_v7().simple()));
    overrides["worker"]["max_attempts"] = json!(30);
    overrides["worker"]["retry_horizon_secs"] = json!(150);
    overrides["worker"]["backoff_max_secs"] = json!(4);
    overrides["maintenance"]["enabled"] = json!(false);
    let env = Env::with_overrides(overrides).await;

    // A small source, and one good backup of it to restore from.
    let src = source::create("chaos", &source::sample_schema(200)).await.unwrap();
    let seed_planet = env.planet("seed", &src, "postgres", None).await;
    let (stop_seed, seed_worker) = env.worker();
    let seed = env.start_backup(&seed_planet).await["id"].as_str().unwrap().to_owned();
    env.wait_status(&seed, "succeeded", Duration::from_secs(60)).await;
    stop_seed.cancel();
    seed_worker.await.unwrap();

    let planets: Vec<String> = stream::iter(0..BACKUPS + RESTORES)
        .map(|i| {
            let (env, src) = (&env, &src);
            async move { env.planet(&format!("c{i}"), src, "postgres", None).await }
        })
        .buffered(8)
        .collect()
        .await;
    // Restore targets derive from the planets' database, as the restore rules demand.
    let targets: Vec<String> = (0..RESTORES).map(|i| format!("{src}_r{i}")).collect();

    let mut workers = [env.worker_process(), env.worker_process()];
    // Everything at once.
    let backups: Vec<String> = stream::iter(&planets[..BACKUPS])
        .map(|p| async { env.start_backup(p).await["id"].as_str().unwrap().to_owned() })
        .buffer_unordered(16)
        .collect()
        .await;
    let restores: Vec<String> = stream::iter(planets[BACKUPS..].iter().zip(&targets))
        .map(|(planet, target)| {
            let (env, seed) = (&env, &seed);
            async move {
                let r = env
                    .restore(
                        seed,
                        &env.token,
                        json!({ "targetPlanetId": planet, "targetDatabase": target }),
                    )
                    .await;
                assert_eq!(r.status, 202, "{}", r.text);
                r.json()["id"].as_str().unwrap().to_owned()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    println!(
        "chaos: created {} backups and {} restores",
        backups.len(),
        restores.len()
    );

    // Chaos for a minute: a worker killed every 4 s and started again; storage down for 15 s;
    // the workers' control-database connections cut once.
    let chaos = Instant::now();
    let (mut kills, mut terminated) = (0, 0_i64);
    let (mut garage_stopped, mut garage_restarted, mut cut) = (false, false, false);
    while chaos.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let victim = kills % 2;
        workers[victim].start_kill().unwrap();
        let _ = workers[victim].wait().await;
        workers[victim] = env.worker_process();
        kills += 1;
        let t = chaos.elapsed();
        if !garage_stopped && t > Duration::from_secs(10) {
            garage.halt();
            garage_stopped = true;
            println!("chaos: garage stopped at {t:?}");
        } else if garage_stopped && !garage_restarted && t > Duration::from_secs(25) {
            garage.resume().await;
            garage_restarted = true;
            println!("chaos: garage started again at {:?}", chaos.elapsed());
        }
        if !cut && t > Duration::from_secs(35) {
            terminated = sql_count(
                &env,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = 'svalbard-worker' AND datname = current_database()",
            )
            .await;
            cut = true;
            println!("chaos: terminated {terminated} worker connections at {t:?}");
        }
    }
    assert!(garage_restarted && cut);

    // Calm: both workers run until everything has ended.
    let calm = Instant::now();
    loop {
        let open = sql_count(
            &env,
            "SELECT (SELECT count(*) FROM backups WHERE status IN ('scheduled', 'running'))
                  + (SELECT count(*) FROM restores WHERE status IN ('scheduled', 'running'))",
        )
        .await;
        if open == 0 {
            break;
        }
        assert!(
            calm.elapsed() < Duration::from_secs(180),
            "{open} backups and restores have not ended"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for w in &mut workers {
        w.start_kill().unwrap();
        let _ = w.wait().await;
    }

    // Every backup and restore ended, with a reason when it did not succeed.
    let rows: Vec<BackupRow> =
        sqlx::query_as("SELECT id::text, status, error_message, object_key, checksum, storage_prefix FROM backups")
            .fetch_all(&env.app.pool)
            .await
            .unwrap();
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for BackupRow {
        id,
        status,
        error_message: error,
        ..
    } in &rows
    {
        *by_status.entry(status.clone()).or_default() += 1;
        assert!(
            matches!(status.as_str(), "succeeded" | "failed" | "incomplete"),
            "backup {id} is {status}"
        );
        if status != "succeeded" {
            assert!(
                error.as_deref().is_some_and(|e| !e.is_empty()),
                "backup {id} {status} without a reason"
            );
        }
    }
    let restored: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT id::text, status, error_message FROM restores")
            .fetch_all(&env.app.pool)
            .await
            .unwrap();
    let mut restore_status: HashMap<String, usize> = HashMap::new();
    for (id, status, error) in &restored {
        *restore_status.entry(status.clone()).or_default() += 1;
        assert!(
            matches!(status.as_str(), "succeeded" | "failed" | "incompatible"),
            "restore {id} is {status}"
        );
        if status != "succeeded" {
            assert!(
                error.as_deref().is_some_and(|e| !e.is_empty()),
                "restore {id} {status} without a reason"
            );
        }
    }
    let past_lease = sql_count(
        &env,
        "SELECT count(*) FROM backups b WHERE status = 'running' AND NOT EXISTS
           (SELECT 1 FROM jobs j WHERE j.subject_id = b.id AND j.state = 'running' AND j.lease_until > now())",
    )
    .await;
    let live_jobs = sql_count(&env, "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')").await;

    // Every stored archive is the one the catalog recorded.
    let mut mismatched = 0;
    let mut verified = 0;
    for BackupRow {
        id,
        status,
        object_key: key,
        checksum,
        ..
    } in &rows
    {
        if status != "succeeded" {
            continue;
        }
        let bytes = svalbard_testkit::object(&env.storage, key.as_deref().unwrap()).await;
        let actual = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
        if Some(&actual) != checksum.as_ref() {
            mismatched += 1;
            println!("chaos: backup {id}: archive {actual}, catalog {checksum:?}");
        }
        verified += 1;
    }
    // Nothing in the bucket without its catalog row; no upload left unfinished.
    let root = env.app.config.s3.prefix.clone();
    let keys = env.storage.list_keys(&root).await.unwrap();
    let uploads = env.storage.list_uploads(&root).await.unwrap();
    let expected: HashSet<String> = rows
        .iter()
        .filter(|r| r.status == "succeeded")
        .flat_map(|r| {
            [
                r.object_key.clone().unwrap(),
                format!("{}manifest.json", r.storage_prefix),
            ]
        })
        .collect();
    let orphans: Vec<&String> = keys
        .iter()
        .filter(|k| !rows.iter().any(|r| k.starts_with(&r.storage_prefix)))
        .collect();
    let leftovers: Vec<&String> = keys.iter().filter(|k| !expected.contains(*k)).collect();
    let succeeded_restores = restore_status.get("succeeded").copied().unwrap_or(0);
    println!(
        "chaos: backups {by_status:?}, restores {restore_status:?}, running past their lease {past_lease}, \
         live jobs {live_jobs}, archives verified {verified} (mismatched {mismatched}), multipart uploads left {}, \
         objects without a catalog row {}, other objects of ended backups {}, worker kills {kills}, \
         connections terminated {terminated}, wall time {:?}",
        uploads.len(),
        orphans.len(),
        leftovers.len(),
        started.elapsed()
    );
    assert_eq!(rows.len(), BACKUPS + 1);
    assert_eq!(restored.len(), RESTORES);
    assert_eq!(past_lease, 0);
    assert_eq!(live_jobs, 0);
    assert_eq!(mismatched, 0);
    assert!(uploads.is_empty(), "{uploads:?}");
    assert!(orphans.is_empty(), "{orphans:?}");
    assert!(
        by_status.get("succeeded").copied().unwrap_or(0) > BACKUPS / 2,
        "{by_status:?}"
    );
    assert!(succeeded_restores > 0, "{restore_status:?}");

    for db in targets.iter().chain([&src]) {
        let _ = source::drop(db).await;
    }
}
