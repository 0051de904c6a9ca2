use std::time::{Duration, Instant};

use sha2::Digest as _;

use serde_json::json;
use svalbard_testkit::app::TestApp;
use svalbard_testkit::source;

use crate::harness::{Env, fast_worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_storage_is_retried_then_reported_without_its_endpoint() {
    svalbard_testkit::require_s3();
    let mut overrides = fast_worker();
    overrides["worker"]["max_attempts"] = json!(2);
    // Each request is sent again for two seconds only: the attempts, not the wait, are tested.
    overrides["s3"] = json!({ "endpoint": "http://127.0.0.1:1", "retry_secs": 2 });
    let app = TestApp::spawn_with(overrides).await;
    let tenant = app.tenant("dark").await;
    let project = app.project(&tenant, "p").await;
    let src = source::create("dark", &source::sample_schema(10)).await.unwrap();
    let planets = format!("/api/v1/tenants/{tenant}/projects/{project}/planets");
    let planet = app
        .post(
            &planets,
            &app.platform(),
            json!({ "name": "db", "engine": "postgresql",
                    "connection": { "host": "127.0.0.1", "database": src, "user": "postgres", "sslmode": "disable" } }),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = app
        .post(&format!("{planets}/{planet}/backups"), &app.platform(), json!({}))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = svalbard_worker::build(&app.config, app.pool.clone()).unwrap();
    let handle = tokio::spawn(worker.run(stop.clone()));
    let path = format!("/api/v1/tenants/{tenant}/projects/{project}/backups/{id}");
    let started = std::time::Instant::now();
    let b = loop {
        let b = app.get(&path, &app.platform()).await.json();
        if b["status"] == "incomplete" || b["status"] == "failed" || b["status"] == "succeeded" {
            break b;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "{b}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(b["status"], "incomplete", "{b}");
    // The tenant learns that storage failed, not where the platform's storage lives.
    let message = b["errorMessage"].as_str().unwrap();
    assert!(message.contains("object storage"), "{b}");
    assert!(
        !message.contains("127.0.0.1:1") && !message.contains("svalbard-test"),
        "{b}"
    );
    let logged: String = sqlx::query_scalar("SELECT last_error FROM jobs WHERE subject_id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!logged.contains("127.0.0.1:1"), "{logged}");
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM jobs WHERE subject_id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 2);
    source::drop(&src).await.unwrap();
}

#[tokio::test]
async fn worker_readiness_reports_storage_and_database() {
    let env = Env::new().await;
    let (port, server) =
        svalbard_api::worker_ops::server("127.0.0.1:0", env.app.pool.clone(), env.storage.clone()).unwrap();
    tokio::spawn(server);
    let ready = env
        .app
        .client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let mut dark = env.app.config.s3.clone();
    dark.endpoint = Some("http://127.0.0.1:1".into());
    let (port, server) = svalbard_api::worker_ops::server(
        "127.0.0.1:0",
        env.app.pool.clone(),
        svalbard_core::storage::Storage::new(&dark),
    )
    .unwrap();
    tokio::spawn(server);
    let r = env
        .app
        .client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["controlDatabase"]["status"], "ok");
    assert!(
        body["objectStorage"]["detail"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:1"),
        "{body}"
    );
    let metrics = env
        .app
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_outage_mid_backup_is_waited_out_in_one_attempt() {
    use crate::harness::Env;
    use svalbard_core::auth::Role;

    let mut garage = crate::garage::Garage::start().await;
    let mut overrides = fast_worker();
    // Each request keeps being sent for up to three minutes.
    crate::garage::merge(&mut overrides, garage.overrides());
    overrides["s3"]["retry_secs"] = json!(180);
    overrides["maintenance"]["enabled"] = json!(false);
    let app = TestApp::spawn_with(overrides).await;
    let tenant = app.tenant("outage").await;
    let project = app.project(&tenant, "shop").await;
    let token = app.token(&tenant, Role::Admin);
    let storage = svalbard_testkit::storage(&app.config);
    let env = Env {
        app,
        tenant,
        project,
        token,
        storage,
    };
    // Hex text compresses about 2:1: some 60 MiB of archive, a dozen parts.
    let src = source::create(
        "outage",
        "CREATE TABLE blobs (id bigint PRIMARY KEY, body text NOT NULL);
         INSERT INTO blobs SELECT g, md5(g::text) || md5((g * 3)::text) || md5((g * 7)::text) || md5((g * 11)::text)
                                     || md5((g * 13)::text) || md5((g * 17)::text) || md5((g * 19)::text) || md5((g * 23)::text)
         FROM generate_series(1, 500000) g;",
    )
    .await
    .unwrap();
    let planet = env.planet("big", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let created = env.start_backup(&planet).await;
    let id = created["id"].as_str().unwrap().to_owned();

    // As soon as the archive's multipart upload exists, the store goes away for a minute.
    let started = Instant::now();
    loop {
        let (_, uploads) = env.leftovers(&created).await;
        if !uploads.is_empty() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the upload never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    garage.halt();
    let during = env.backup(&id).await;
    assert_eq!(
        during["status"], "running",
        "the backup ended before the outage: {during}"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    let waiting = env.backup(&id).await;
    assert_eq!(waiting["status"], "running", "{waiting}");
    garage.resume().await;

    let b = env.wait_status(&id, "succeeded", Duration::from_secs(240)).await;
    stop.cancel();
    worker.await.unwrap();
    let attempts = env.attempts(&id).await;
    assert_eq!(
        attempts,
        vec![("backup".to_owned(), 1, "succeeded".to_owned())],
        "the database was dumped again"
    );
    // The archive is whole: it hashes to what was recorded and holds the dump.
    let archive = env.download(&id).await;
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&archive))),
        b["checksum"].as_str().unwrap()
    );
    let archive = env.open_archive(&archive).await;
    let (_, header_len) = svalbard_core::archive::read_header(&archive).unwrap().unwrap();
    let dump = zstd::decode_all(&archive[header_len..]).unwrap();
    assert_eq!(&dump[..5], b"PGDMP");
    let (_, uploads) = env.leftovers(&b).await;
    assert!(uploads.is_empty(), "{uploads:?}");
    source::drop(&src).await.unwrap();
}
