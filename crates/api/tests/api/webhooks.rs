//! Webhook endpoints through the API: the secret is shown once and stored sealed, the URL is
//! checked like a planet's host, bad input is a 400 naming the field, and changes are audited.

use serde_json::{Value, json};
use svalbard_core::auth::Role;
use svalbard_testkit::app::TestApp;

fn body(url: &str) -> Value {
    json!({ "url": url, "eventTypes": ["backup.failed", "restore.failed", "backup.failed"] })
}

#[tokio::test]
async fn the_secret_is_shown_once_and_stored_sealed() {
    let app = TestApp::spawn().await;
    let t = app.tenant("hooks").await;
    let admin = app.token(&t, Role::Admin);
    let hooks = format!("/api/v1/tenants/{t}/webhooks");
    let r = app.post(&hooks, &admin, body("http://127.0.0.1:9/in")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = r.json();
    let id = created["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(
        created["eventTypes"],
        json!(["backup.failed", "restore.failed"]),
        "deduplicated"
    );
    assert_eq!(created["url"], "http://127.0.0.1:9/in");
    assert!(r.header("location").unwrap().ends_with(&format!("{hooks}/{id}")));

    let got = app.get(&format!("{hooks}/{id}"), &admin).await;
    assert_eq!(got.status, 200, "{}", got.text);
    let list = app.get(&hooks, &admin).await;
    assert_eq!(list.json()["items"][0]["id"], id);
    for r in [&got, &list] {
        assert!(!r.text.contains(secret) && !r.text.contains("secret"), "{}", r.text);
    }
    // At rest only the sealed form exists.
    let (sealed,): (Vec<u8>,) = sqlx::query_as("SELECT secret_sealed FROM webhook_endpoints WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let raw = &secret["whsec_".len()..];
    assert!(!String::from_utf8_lossy(&sealed).contains(raw));

    // A second endpoint gets another secret.
    let other = app.post(&hooks, &admin, body("http://127.0.0.1:9/two")).await.json();
    assert_ne!(other["secret"], created["secret"]);

    let deliveries = app.get(&format!("{hooks}/{id}/deliveries"), &admin).await;
    assert_eq!(deliveries.status, 200, "{}", deliveries.text);
    assert_eq!(deliveries.json()["items"], json!([]));
    app.get(&format!("{hooks}/{id}/deliveries?status=Pending"), &admin)
        .await
        .names_field("status");

    // A viewer is refused, and that is recorded too.
    let viewer = app.token(&t, Role::Viewer);
    app.post(&hooks, &viewer, body("http://127.0.0.1:9/x"))
        .await
        .problem(403);
    app.delete(&format!("{hooks}/{id}"), &viewer).await.problem(403);
    let r = app.delete(&format!("{hooks}/{id}"), &admin).await;
    assert_eq!(r.status, 204, "{}", r.text);
    app.get(&format!("{hooks}/{id}"), &admin).await.problem(404);
    app.delete(&format!("{hooks}/{id}"), &admin).await.problem(404);
    app.get(&format!("{hooks}/{id}/deliveries"), &admin).await.problem(404);

    let events = app
        .get(&format!("/api/v1/tenants/{t}/audit-events"), &admin)
        .await
        .json();
    let seen: Vec<(String, String, Option<String>)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resourceType"] == "webhook")
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
                e["resourceId"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let id = Some(id.to_owned());
    assert!(
        seen.contains(&("webhook.create".into(), "success".into(), id.clone())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("webhook.delete".into(), "success".into(), id.clone())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("webhook.delete".into(), "denied".into(), id)),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("webhook.create".into(), "denied".into(), None)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn bad_bodies_are_400s_naming_the_field() {
    let app = TestApp::spawn().await;
    let t = app.tenant("hooks").await;
    let admin = app.token(&t, Role::Admin);
    let hooks = format!("/api/v1/tenants/{t}/webhooks");
    for url in [
        "ftp://hooks.example.com/",
        "file:///etc/passwd",
        "https://user:pw@hooks.example.com/",
        "https://hooks.example.com/#frag",
        "hooks.example.com/path",
        "",
    ] {
        app.post(&hooks, &admin, json!({ "url": url, "eventTypes": ["backup.failed"] }))
            .await
            .names_field("url");
    }
    app.post(&hooks, &admin, json!({ "eventTypes": ["backup.failed"] }))
        .await
        .names_field("body");
    app.post(
        &hooks,
        &admin,
        json!({ "url": "https://hooks.example.com/", "eventTypes": [] }),
    )
    .await
    .names_field("eventTypes");
    let p = app
        .post(
            &hooks,
            &admin,
            json!({ "url": "https://hooks.example.com/", "eventTypes": ["backup.failed", "backup.exploded"] }),
        )
        .await
        .problem(400);
    assert_eq!(p["errors"][0]["field"], "eventTypes[1]", "{p}");
    app.post(
        &hooks,
        &admin,
        json!({ "url": "https://hooks.example.com/", "eventTypes": ["backup.failed"], "secret": "mine" }),
    )
    .await
    .problem(400);
    assert_eq!(app.get(&hooks, &admin).await.json()["items"], json!([]));
}

#[tokio::test]
async fn webhook_urls_obey_the_target_policy() {
    // The default policy: loopback and metadata addresses are refused.
    let app = TestApp::spawn_with(json!({ "targets": { "allow": [] } })).await;
    let t = app.tenant("hooks").await;
    let admin = app.token(&t, Role::Admin);
    let hooks = format!("/api/v1/tenants/{t}/webhooks");
    for (url, rule) in [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://2130706433/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://metadata.google.internal/", "metadata"),
        ("http://localhost:5432/", "loopback"),
    ] {
        let p = app.post(&hooks, &admin, body(url)).await.names_field("url");
        assert!(p.to_string().contains(rule), "{url}: {p}");
    }
    // The tenant's own deny applies on top.
    let r = app
        .patch(
            &format!("/api/v1/tenants/{t}"),
            &app.platform(),
            json!({ "targetPolicy": { "allow": ["127.0.0.0/8"], "deny": ["127.0.0.2"] } }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        app.post(&hooks, &admin, body("http://127.0.0.1:9/ok")).await.status,
        201
    );
    app.post(&hooks, &admin, body("http://127.0.0.2:9/no"))
        .await
        .names_field("url");
}
