use serde_json::json;

use svalbard_testkit::app::TestApp;

#[tokio::test]
async fn health_readiness_metrics_and_request_ids() {
    let app = TestApp::spawn().await;
    let r = app.client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(
        app.client
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let docs = app.client.get(format!("{}/docs/", app.base)).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
    // Metrics are served on their own listener only, not to whoever reaches the API.
    let public = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert_eq!(public.status(), 404);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.metrics_base.as_ref().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("svalbard_http_requests_total"), "{metrics}");
}

#[tokio::test]
async fn an_empty_metrics_listen_disables_the_listener() {
    let app = TestApp::spawn_with(json!({ "http": { "metrics_listen": "" } })).await;
    assert!(app.metrics_base.is_none());
    let r = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn readiness_fails_when_the_control_database_is_gone() {
    let (_, url) = svalbard_testkit::fresh_pool().await.unwrap();
    let config = svalbard_testkit::config(&url, json!({})).unwrap();
    // A pool that points at a port nobody listens on.
    let dead = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(1))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    let app = TestApp::spawn_on(config, dead);
    let r = app.client.get(format!("{}/readyz", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Anyone may ask; nobody learns the control database's address or the driver's error.
    let body = r.text().await.unwrap();
    let p: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["detail"], "the control database is not ready", "{body}");
    for secret in ["127.0.0.1", ":1", "none", "postgres", "refused", "timed out"] {
        assert!(!body.contains(secret), "readiness leaked `{secret}`: {body}");
    }
    assert_eq!(
        app.client
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Endpoints that need the database answer with a problem, not a hang or a panic.
    let r = app
        .client
        .get(format!("{}/api/v1/tenants", app.base))
        .bearer_auth(app.platform())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error());
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}
