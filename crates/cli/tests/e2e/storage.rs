use std::time::Duration;

use serde_json::json;
use svalbard_testkit::app::TestApp;
use svalbard_testkit::source;

use crate::harness::{Env, fast_worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_storage_is_retried_then_reported_with_its_endpoint() {
    svalbard_testkit::require_s3();
    let mut overrides = fast_worker();
    overrides["worker"]["max_attempts"] = json!(2);
    overrides["s3"] = json!({ "endpoint": "http://127.0.0.1:1" });
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
    assert!(b["errorMessage"].as_str().unwrap().contains("127.0.0.1:1"), "{b}");
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
