use std::time::Duration;

use serde_json::{Value, json};
use svalbard_core::auth::Role;
use svalbard_testkit::source;

use crate::harness::Env;

const MINUTE: Duration = Duration::from_secs(60);

impl Env {
    fn restores_of(&self, backup: &str) -> String {
        format!("{}/restores", self.backup_path(backup))
    }

    /// A succeeded backup of a fresh source database.
    async fn backed_up(&self, rows: u32) -> (String, String, String) {
        let src = source::create("rs", &source::sample_schema(rows)).await.unwrap();
        let planet = self
            .planet(
                &format!("p{}", &uuid::Uuid::now_v7().simple().to_string()[24..]),
                &src,
                "postgres",
                None,
            )
            .await;
        let id = self.start_backup(&planet).await["id"].as_str().unwrap().to_owned();
        self.wait_status(&id, "succeeded", MINUTE).await;
        (src, planet, id)
    }

    /// Asks for a restore of a stored backup.
    pub(crate) async fn restore(&self, backup: &str, token: &str, body: Value) -> svalbard_testkit::app::Resp {
        self.app.post(&self.restores_of(backup), token, body).await
    }

    /// Replaces the stored archive of a backup, keeping the catalog's checksum unless told.
    pub(crate) async fn rewrite_archive(&self, backup: &str, edit: impl FnOnce(Vec<u8>) -> Vec<u8>, recatalog: bool) {
        let b = self.backup(backup).await;
        let (keys, _) = self.leftovers(&b).await;
        let key = keys.iter().find(|k| k.contains(".svb.zst")).unwrap();
        let stored = svalbard_testkit::object(&self.storage, key).await;
        let bytes = self.seal_archive(backup, &edit(self.open_archive(&stored).await)).await;
        if recatalog {
            use sha2::Digest as _;
            sqlx::query("UPDATE backups SET checksum = $2 WHERE id = $1::uuid")
                .bind(backup)
                .bind(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))))
                .execute(&self.app.pool)
                .await
                .unwrap();
        }
        self.storage.put(key, bytes, "application/zstd").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_database_with_equal_rows() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let (src, planet, backup) = env.backed_up(5_000).await;
    // A name derived from the planet's database, as restore targets must be.
    let target = format!("{src}_restored");
    let r = env
        .restore(&backup, &env.token, json!({ "targetDatabase": target }))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let location = r.header("location").unwrap();
    assert_eq!(r.json()["status"], "scheduled");
    let done = env.restore_outcome(&location).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["source"]["backupId"], backup.as_str());
    assert_eq!(done["target"]["database"], target.as_str());
    let fp = source::fingerprint(&target).await.unwrap();
    assert_eq!(fp, source::fingerprint(&src).await.unwrap());
    assert_eq!(done["verification"]["tables"], fp.len());
    assert_eq!(done["verification"]["rows"], fp.iter().map(|t| t.1).sum::<i64>());
    let m = env
        .app
        .get(&format!("{}/{planet}/maintenance", env.planets()), &env.token)
        .await
        .json();
    assert_eq!(m["restore"]["succeeded"], true);
    let list = env
        .app
        .get(&format!("{}/{planet}/restores", env.planets()), &env.token)
        .await
        .json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
    source::drop(&target).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_refused_before_the_target_is_touched() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let (src, planet, backup) = env.backed_up(5_000).await;
    env.rewrite_archive(
        &backup,
        |mut b| {
            let mid = b.len() / 2;
            b[mid] ^= 0x40;
            b
        },
        false,
    )
    .await;
    // The planet's own database (the source) is the target: replacing it must not happen.
    let before = source::fingerprint(&src).await.unwrap();
    let admin = env.app.token(&env.tenant, Role::Admin);
    let r = env.restore(&backup, &admin, json!({ "replace": true })).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["errorMessage"].as_str().unwrap().contains("corrupted"), "{done}");
    assert_eq!(source::fingerprint(&src).await.unwrap(), before);
    let _ = planet;
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_from_a_newer_pg_dump_is_incompatible_and_names_the_version() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let (src, _, backup) = env.backed_up(100).await;
    env.rewrite_archive(
        &backup,
        |archive| {
            let (_, skip) = svalbard_core::archive::read_header(&archive).unwrap().unwrap();
            let mut dump = zstd::decode_all(&archive[skip..]).unwrap();
            // "dumped from" and "dumped by" read like `15.20 (Debian 15.20-…)`: the third "15." starts
            // the "dumped by" string.
            let at: Vec<usize> = dump[..300]
                .windows(3)
                .enumerate()
                .filter(|(_, w)| *w == b"15.")
                .map(|(i, _)| i)
                .collect();
            assert_eq!(at.len(), 4, "unexpected dump header");
            let by = at[2];
            dump[by..by + 2].copy_from_slice(b"99");
            let mut out = archive[..skip].to_vec();
            out.extend(zstd::encode_all(&dump[..], 1).unwrap());
            out
        },
        true,
    )
    .await;
    let target = format!("{src}_newer");
    let r = env
        .restore(&backup, &env.token, json!({ "targetDatabase": target }))
        .await;
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "incompatible", "{done}");
    let msg = done["errorMessage"].as_str().unwrap();
    assert!(
        msg.contains("pg_dump 99") && msg.contains("pg_restore 99 or later"),
        "{msg}"
    );
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
    source::drop(&target).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_needs_admin_and_a_non_empty_target_is_left_alone() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let (src, planet, backup) = env.backed_up(1_000).await;
    let operator = env.app.token(&env.tenant, Role::Operator);
    env.restore(&backup, &operator, json!({ "replace": true }))
        .await
        .problem(403);

    // Into the source itself, which is not empty, without replace: refused, nothing changed.
    let before = source::fingerprint(&src).await.unwrap();
    let r = env.restore(&backup, &operator, json!({})).await;
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert!(done["errorMessage"].as_str().unwrap().contains("not empty"), "{done}");
    assert_eq!(source::fingerprint(&src).await.unwrap(), before);

    // An admin replaces a changed target with the backup's content.
    let mut db = source::connect(&src).await.unwrap();
    sqlx::query("DELETE FROM orders").execute(&mut db).await.unwrap();
    sqlx::query("CREATE TABLE stray (x int)")
        .execute(&mut db)
        .await
        .unwrap();
    drop(db);
    let admin = env.app.token(&env.tenant, Role::Admin);
    let r = env.restore(&backup, &admin, json!({ "replace": true })).await;
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(source::fingerprint(&src).await.unwrap(), before);
    // Neither the scratch database nor the old target set aside for the swap is left.
    let mut admin_db = source::connect("postgres").await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE $1 || '\\_svb\\_%'")
        .bind(&src)
        .fetch_one(&mut admin_db)
        .await
        .unwrap();
    assert_eq!(left, 0);
    drop(admin_db);

    // Busy planets: no restore while a backup is pending, and the other way round.
    stop.cancel();
    worker.await.unwrap();
    let pending = env.start_backup(&planet).await;
    let p = env.restore(&backup, &operator, json!({})).await.problem(409);
    assert!(p["detail"].as_str().unwrap().contains(pending["id"].as_str().unwrap()));
    source::drop(&src).await.unwrap();
}

#[tokio::test]
async fn restores_are_isolated_between_tenants() {
    let env = Env::new().await;
    let other = env.app.tenant("other").await;
    let other_project = env.app.project(&other, "x").await;
    let other_planet = env.app.planet(&other, &other_project, "db").await;
    let src = source::create("iso", &source::sample_schema(10)).await.unwrap();
    let planet = env.planet("mine", &src, "postgres", None).await;
    // A backup row stands in for a stored one: the API checks only the catalog.
    let backup: String = sqlx::query_scalar(
        "INSERT INTO backups (id, tenant_id, project_id, planet_id, name, engine, method, status, storage_prefix,
                              object_key, checksum, stage, retention_days)
         VALUES (gen_random_uuid(), $1::uuid, $2::uuid, $3::uuid, 'b', 'postgresql', 'manual', 'succeeded', 'p/',
                 'p/a.svb.zst', 'sha256:00', 'dev', 7)
         RETURNING id::text",
    )
    .bind(&env.tenant)
    .bind(&env.project)
    .bind(&planet)
    .fetch_one(&env.app.pool)
    .await
    .unwrap();
    let stranger = env.app.token(&other, Role::Admin);
    env.restore(&backup, &stranger, json!({})).await.problem(404);
    let r = env
        .app
        .post(
            &format!("/api/v1/tenants/{other}/projects/{other_project}/backups/{backup}/restores"),
            &stranger,
            json!({}),
        )
        .await;
    r.problem(404);
    // Our backup into their planet: unknown to us.
    env.restore(&backup, &env.token, json!({ "targetPlanetId": other_planet }))
        .await
        .problem(404);
    // A planet of another engine cannot take a PostgreSQL dump.
    let mysql = env
        .app
        .post(
            &env.planets(),
            &env.token,
            json!({ "name": "maria", "engine": "mysql", "connection": { "host": "127.0.0.1", "database": "d", "user": "root" } }),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.restore(&backup, &env.token, json!({ "targetPlanetId": mysql }))
        .await
        .names_field("targetPlanetId");
    let r = env.restore(&backup, &env.token, json!({ "targetDatabase": "" })).await;
    r.names_field("targetDatabase");
    let r = env.restore(&backup, &env.token, json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let location = r.header("location").unwrap();
    env.app
        .get(&location.replace(&env.tenant, &other), &stranger)
        .await
        .problem(404);
    env.app.get(&location, &stranger).await.problem(404);
    env.app
        .get(&format!("{}/{planet}/restores", env.planets()), &stranger)
        .await
        .problem(404);
    let dump = b"-- PostgreSQL database dump\nSELECT 1;\n".to_vec();
    env.upload(&planet, &stranger, "archive", "a.sql", dump.clone(), None)
        .await
        .problem(404);
    // Roles: a viewer restores nothing, but reads.
    let viewer = env.app.token(&env.tenant, Role::Viewer);
    env.restore(&backup, &viewer, json!({})).await.problem(403);
    env.upload(&planet, &viewer, "archive", "a.sql", dump, None)
        .await
        .problem(403);
    assert_eq!(env.app.get(&location, &viewer).await.status, 200);
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_takes_over_the_target_its_own_earlier_attempt_loaded() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let (src, _planet, backup) = env.backed_up(500).await;
    stop.cancel();
    worker.await.unwrap();

    // Queued while no worker runs; then the state an attempt leaves when it dies right after its
    // load committed: the target claimed, and holding rows.
    let target = format!("{src}_again");
    let r = env
        .restore(&backup, &env.token, json!({ "targetDatabase": target }))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    sqlx::query("UPDATE restores SET target_claimed_at = now() WHERE id = $1::uuid")
        .bind(&id)
        .execute(&env.app.pool)
        .await
        .unwrap();
    let mut admin = source::connect("postgres").await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{target}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    drop(admin);
    let mut half = source::connect(&target).await.unwrap();
    sqlx::raw_sql("CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)")
        .execute(&mut half)
        .await
        .unwrap();
    drop(half);

    let (stop, worker) = env.worker();
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        source::fingerprint(&target).await.unwrap(),
        source::fingerprint(&src).await.unwrap()
    );

    // Without the claim, the same filled target is somebody's data and is left alone.
    let other = format!("{src}_taken");
    let mut admin = source::connect("postgres").await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{other}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    drop(admin);
    let mut theirs = source::connect(&other).await.unwrap();
    sqlx::query("CREATE TABLE theirs (id int)")
        .execute(&mut theirs)
        .await
        .unwrap();
    drop(theirs);
    let r = env
        .restore(&backup, &env.token, json!({ "targetDatabase": other }))
        .await;
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["errorMessage"].as_str().unwrap().contains("not empty"), "{done}");

    stop.cancel();
    worker.await.unwrap();
    for db in [&src, &target, &other] {
        source::drop(db).await.unwrap();
    }
}
