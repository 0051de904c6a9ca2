//! Verification by restore against real workers, PostgreSQL and the S3 server: a verified
//! backup, a tampered archive that restores but lacks a table, and retention that keeps the
//! newest verified backup.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest as _;
use svalbard_core::ids::{BackupId, PlanetId};
use svalbard_testkit::source;

use crate::harness::Env;

const MINUTE: Duration = Duration::from_secs(60);

/// Four tables, one of them empty and one in another schema: 10 + 20 + 7 + 0 rows.
const SCHEMA: &str = "CREATE TABLE a (id int PRIMARY KEY, v text);
     INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 10) g;
     CREATE TABLE b (id int PRIMARY KEY, v jsonb);
     INSERT INTO b SELECT g, jsonb_build_object('n', g) FROM generate_series(1, 20) g;
     CREATE TABLE c (id int, note text);
     INSERT INTO c SELECT g, E'line\\nbreak ' || g FROM generate_series(1, 7) g;
     CREATE SCHEMA s;
     CREATE TABLE s.empty (id int)";

impl Env {
    async fn succeeded_backup(&self, planet: &str) -> Value {
        let created = self.start_backup(planet).await;
        self.wait_status(created["id"].as_str().unwrap(), "succeeded", MINUTE)
            .await
    }

    /// Asks for a verification (as `token`) and waits for its outcome.
    async fn verify(&self, id: &str, token: &str) -> Value {
        let before = self.backup(id).await["verification"]["at"].clone();
        let r = self
            .app
            .send(
                Method::POST,
                &format!("{}/verifications", self.backup_path(id)),
                Some(token),
                None,
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert!(
            r.header("location").unwrap().ends_with(&self.backup_path(id)),
            "{:?}",
            r.header("location")
        );
        assert_eq!(r.json()["id"], id);
        self.wait_for(id, MINUTE, |b| {
            b["verification"].is_object() && b["verification"]["at"] != before
        })
        .await
    }

    async fn scratch_databases(&self, id: &str) -> Vec<String> {
        let suffix = &id.replace('-', "")[16..];
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE 'svb_verify_' || $1 || '%'")
            .bind(suffix)
            .fetch_all(&mut source::connect("postgres").await.unwrap())
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_verified_by_restore_and_retention_keeps_the_newest_verified_one() {
    let env = Env::new().await;
    let src = source::create("verify", SCHEMA).await.unwrap();
    let planet = env.planet("ledger", &src, "postgres", None).await;
    let (stop, worker) = env.worker();

    let first = env.succeeded_backup(&planet).await;
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(first["verification"].is_null(), "{first}");
    let recorded: Value = sqlx::query_scalar("SELECT table_counts FROM backups WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&env.app.pool)
        .await
        .unwrap();
    assert_eq!(
        recorded,
        json!({ "public.a": 10, "public.b": 20, "public.c": 7, "s.empty": 0 }),
        "counted in the dump's snapshot"
    );

    let operator = env.app.token(&env.tenant, svalbard_core::auth::Role::Operator);
    let b = env.verify(&id, &operator).await;
    let v = &b["verification"];
    assert_eq!(v["status"], "verified", "{b}");
    assert_eq!((v["tables"].as_i64(), v["rows"].as_i64()), (Some(4), Some(37)), "{v}");
    assert_eq!(v["compared"], true);
    assert_eq!(v["mismatches"], json!([]));
    assert!(
        v["errorMessage"].is_null() && v["durationMs"].as_i64().unwrap() > 0,
        "{v}"
    );
    assert_eq!(b["displayStatus"], "verified");
    assert!(
        env.scratch_databases(&id).await.is_empty(),
        "the scratch database is dropped"
    );
    let planet_id: PlanetId = planet.parse().unwrap();
    let last = svalbard_core::repo::backups::last_verified(&env.app.pool)
        .await
        .unwrap();
    assert!(last.iter().any(|(_, _, p, _)| *p == planet_id), "{last:?}");

    // Retention keeping one backup still keeps the verified one beside the newest.
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
    let second = env.succeeded_backup(&planet).await;
    svalbard_worker::maintenance::apply_retention(&env.app.pool, planet_id)
        .await
        .unwrap();
    assert_eq!(env.backup(&id).await["status"], "succeeded");
    let preview = env
        .app
        .get(&format!("{}/{planet}/retention/preview", env.planets()), &env.token)
        .await
        .json();
    let reason = preview["keep"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["backupId"] == id.as_str())
        .map(|k| k["reason"].clone());
    assert_eq!(
        reason,
        Some(json!("the newest verified backup of the planet is always kept")),
        "{preview}"
    );
    assert!(preview["delete"].as_array().unwrap().is_empty(), "{preview}");

    // With a policy of verifying every backup, the next one is verified without asking; it is
    // then the newest verified one, and the older two may go.
    let r = env
        .app
        .send(
            Method::PUT,
            &schedule,
            Some(&env.token),
            Some(json!({ "cron": "0 3 * * *", "retention": { "keepLast": 1 }, "verifyEvery": 1 })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["verifyEvery"], 1);
    let third = env.succeeded_backup(&planet).await;
    let third_id = third["id"].as_str().unwrap();
    let verified = env.wait_for(third_id, MINUTE, |b| b["verification"].is_object()).await;
    assert_eq!(verified["verification"]["status"], "verified", "{verified}");
    svalbard_worker::maintenance::apply_retention(&env.app.pool, planet_id)
        .await
        .unwrap();
    for old in [&id, second["id"].as_str().unwrap()] {
        assert_eq!(env.backup(old).await["status"], "expired");
    }
    assert_eq!(env.backup(third_id).await["status"], "succeeded");
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}

/// The dump of `db` without `table`, as `pg_dump` writes it for a backup.
fn dump_without(db: &str, table: &str) -> Vec<u8> {
    let out = std::process::Command::new("pg_dump")
        .args([
            "--format=custom",
            "--compress=0",
            "--no-password",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .arg(format!("--exclude-table={table}"))
        .arg(db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_fails_on_a_tampered_archive_and_names_the_missing_table() {
    let env = Env::new().await;
    let src = source::create("tamper", SCHEMA).await.unwrap();
    let planet = env.planet("ledger", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let backup = env.succeeded_backup(&planet).await;
    let id = backup["id"].as_str().unwrap().to_owned();
    let backup_id: BackupId = id.parse().unwrap();

    // The stored archive is replaced by one with the same header and format whose dump lacks
    // table `c`, and the catalog's checksum and data key with its own: the archive passes every
    // integrity check and restores, like a dump that silently lost a table.
    let original = env.download_plain(&id).await;
    let (_, frame) = svalbard_core::archive::read_header(&original).unwrap().unwrap();
    let mut tampered = original[..frame].to_vec();
    tampered.extend(zstd::encode_all(&dump_without(&src, "public.c")[..], 1).unwrap());
    let tampered = env.seal_archive(&id, &tampered).await;
    let key: String = sqlx::query_scalar("SELECT object_key FROM backups WHERE id = $1")
        .bind(backup_id)
        .fetch_one(&env.app.pool)
        .await
        .unwrap();
    env.storage
        .put(&key, tampered.clone(), "application/octet-stream")
        .await
        .unwrap();
    sqlx::query("UPDATE backups SET checksum = $2 WHERE id = $1")
        .bind(backup_id)
        .bind(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tampered))))
        .execute(&env.app.pool)
        .await
        .unwrap();

    let b = env.verify(&id, &env.token).await;
    let v = &b["verification"];
    assert_eq!(v["status"], "failed", "{b}");
    assert_eq!(
        v["mismatches"],
        json!([{ "table": "public.c", "kind": "missing", "expectedRows": 7, "restoredRows": null }]),
        "{v}"
    );
    assert_eq!((v["tables"].as_i64(), v["rows"].as_i64()), (Some(3), Some(30)), "{v}");
    assert_eq!(b["displayStatus"], "verification failed");
    assert_eq!(
        b["status"], "succeeded",
        "the archive is still there; it is not known to restore"
    );
    assert!(
        env.scratch_databases(&id).await.is_empty(),
        "dropped after a failure too"
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'backup.verification.failed' AND resource_id = $1",
    )
    .bind(backup_id.0)
    .fetch_one(&env.app.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // An archive whose bytes no longer match the catalog is not restored at all: the
    // verification fails with the reason, and the scratch database is never made.
    let mut corrupted = tampered;
    corrupted.push(0);
    env.storage
        .put(&key, corrupted, "application/octet-stream")
        .await
        .unwrap();
    let b = env.verify(&id, &env.token).await;
    let v = &b["verification"];
    assert_eq!(v["status"], "failed", "{b}");
    let why = v["errorMessage"].as_str().unwrap();
    assert!(
        why.contains("corrupted or was modified") && why.contains("SHA-256"),
        "{why}"
    );
    assert_eq!(b["displayStatus"], "verification failed");
    assert!(env.scratch_databases(&id).await.is_empty());
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_backup_is_verified_against_the_rows_counted_in_its_dump() {
    let env = Env::new().await;
    let src = crate::mysql::source_db();
    let planet = env.mysql_planet("shop", &src, None).await;
    let (stop, worker) = env.worker();
    let backup = env.succeeded_backup(&planet).await;
    let id = backup["id"].as_str().unwrap().to_owned();
    let recorded: Value = sqlx::query_scalar("SELECT table_counts FROM backups WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&env.app.pool)
        .await
        .unwrap();
    assert_eq!(
        recorded,
        json!({ "audit": 0, "customers": 5000 }),
        "counted in the dump"
    );
    let b = env.verify(&id, &env.token).await;
    let v = &b["verification"];
    assert_eq!(v["status"], "verified", "{b}");
    assert_eq!((v["tables"].as_i64(), v["rows"].as_i64()), (Some(2), Some(5000)), "{v}");
    assert_eq!(v["compared"], true);
    let left = crate::mysql::mariadb(
        None,
        &format!(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'svb_verify_{}%'",
            &id.replace('-', "")[16..]
        ),
    );
    assert_eq!(left, "0", "the scratch database is dropped");
    stop.cancel();
    worker.await.unwrap();
    crate::mysql::mariadb(None, &format!("DROP DATABASE {src}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_cron_verifies_the_newest_backup_on_the_planets_own_server_when_asked() {
    svalbard_testkit::require_s3();
    // The platform's verification server does not answer here: only the planet's own can serve.
    let mut overrides = crate::harness::fast_worker();
    overrides["verification"] = json!({ "postgresql": { "port": 1 }, "min_cron_interval_secs": 60 });
    let env = Env::with_overrides(overrides).await;
    let src = source::create("vcron", SCHEMA).await.unwrap();
    let planet = env.planet("ledger", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let older = env.succeeded_backup(&planet).await;
    let newest = env.succeeded_backup(&planet).await;

    let schedule = format!("{}/{planet}/schedule", env.planets());
    let put = |body: Value| env.app.send(Method::PUT, &schedule, Some(&env.token), Some(body));
    put(json!({ "cron": "0 3 * * *", "verifyCron": "61 * * * *" }))
        .await
        .names_field("verifyCron");
    put(json!({ "cron": "0 3 * * *", "verifyCron": "* * * * *", "verifyOn": "tenant" }))
        .await
        .names_field("verifyOn");
    let r = put(json!({ "cron": "0 3 * * *", "verifyCron": "* * * * *", "verifyOn": "source" })).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let s = r.json();
    assert_eq!(
        (s["verifyCron"].as_str(), s["verifyOn"].as_str()),
        (Some("* * * * *"), Some("source")),
        "{s}"
    );
    assert!(s["nextVerificationAt"].is_string(), "{s}");

    // At the next minute the newest backup is verified, on the planet's own server.
    let id = newest["id"].as_str().unwrap();
    let b = env.wait_for(id, 2 * MINUTE, |b| b["verification"].is_object()).await;
    assert_eq!(b["verification"]["status"], "verified", "{b}");
    assert_eq!(b["verification"]["rows"], 37, "{b}");
    assert!(
        env.scratch_databases(id).await.is_empty(),
        "the scratch database is dropped"
    );
    assert!(
        env.backup(older["id"].as_str().unwrap()).await["verification"].is_null(),
        "an older backup was verified"
    );
    let s = env.app.get(&schedule, &env.token).await.json();
    assert!(
        s["nextVerificationAt"].as_str().unwrap() > b["verification"]["at"].as_str().unwrap(),
        "{s}"
    );
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}
