use reqwest::Method;
use serde_json::json;
use svalbard_core::auth::Role;

use svalbard_testkit::app::{TestApp, planet_body};

#[tokio::test]
async fn malformed_bodies_name_the_field_and_change_nothing() {
    let app = TestApp::spawn().await;
    let t = app.tenant("strict").await;
    let p = app.project(&t, "proj").await;
    let x = app.planet(&t, &p, "db").await;
    let tok = app.token(&t, Role::Admin);
    let planets = format!("/api/v1/tenants/{t}/projects/{p}/planets");
    let planet = format!("{planets}/{x}");
    let before = app.get(&planet, &tok).await.text;

    let mut body = planet_body("ok");
    body["engine"] = json!("oracle");
    app.post(&planets, &tok, body).await.names_field("engine");
    let mut body = planet_body("ok");
    body["connection"]["port"] = json!("5432");
    app.post(&planets, &tok, body).await.names_field("connection.port");
    let mut body = planet_body("ok");
    body["connection"]["port"] = json!(70000);
    app.post(&planets, &tok, body).await.names_field("connection.port");
    let mut body = planet_body("ok");
    body["connection"]["port"] = json!(0);
    app.post(&planets, &tok, body).await.names_field("connection.port");
    let mut body = planet_body("ok");
    body["connection"]["shell"] = json!("rm -rf /");
    app.post(&planets, &tok, body).await.names_field("connection.shell");
    let mut body = planet_body("ok");
    body["connection"]["host"] = json!("db host; drop");
    app.post(&planets, &tok, body).await.names_field("connection.host");
    let mut body = planet_body("ok");
    body["labels"] = json!({ "bad key!": "v" });
    app.post(&planets, &tok, body).await.names_field("labels.bad key!");
    let mut body = planet_body("ok");
    body.as_object_mut().unwrap().remove("connection");
    app.post(&planets, &tok, body).await.names_field("body");
    for bad_name in ["", "UPPER", "9lives", "trailing-", "with space", &"x".repeat(64)] {
        app.post(&planets, &tok, planet_body(bad_name))
            .await
            .names_field("name");
    }
    app.post(
        &format!("/api/v1/tenants/{t}/projects"),
        &tok,
        json!({ "name": "ok", "description": 5 }),
    )
    .await
    .names_field("description");
    app.patch(&planet, &tok, json!({ "engine": "mysql" }))
        .await
        .names_field("engine");
    app.patch(&planet, &tok, json!({ "name": "Nope" }))
        .await
        .names_field("name");
    app.patch(&planet, &tok, json!({ "connection": { "port": -1 } }))
        .await
        .names_field("connection.port");
    app.patch(&planet, &tok, json!([1, 2])).await.problem(400);

    // Not JSON, wrong content type, too large.
    let raw = |body: &'static str, ct: &'static str| {
        app.client
            .post(format!("{}{planets}", app.base))
            .bearer_auth(&tok)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = raw("{\"name\": ", "application/json").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(
        raw("name=x", "application/x-www-form-urlencoded")
            .await
            .unwrap()
            .status(),
        415
    );
    let huge = format!("{{\"name\": \"{}\"}}", "a".repeat(300 * 1024));
    let r = app
        .client
        .post(format!("{}{planets}", app.base))
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    assert_eq!(
        app.get(&planet, &tok).await.text,
        before,
        "a refused request changed the planet"
    );
    let list = app.get(&planets, &tok).await.json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_paths_and_queries_are_problems() {
    let app = TestApp::spawn().await;
    let t = app.tenant("paths").await;
    let tok = app.token(&t, Role::Admin);
    app.get("/api/v1/tenants/not-a-uuid", &tok)
        .await
        .names_field("tenantId");
    app.get(&format!("/api/v1/tenants/{t}/projects/123"), &tok)
        .await
        .names_field("projectId");
    // The verification of a backup names the id that is not one.
    let p = uuid::Uuid::now_v7();
    app.post(
        &format!("/api/v1/tenants/{t}/projects/{p}/backups/not-a-backup/verifications"),
        &tok,
        json!({}),
    )
    .await
    .names_field("backupId");
    app.post(
        &format!("/api/v1/tenants/{t}/projects/x/backups/{p}/verifications"),
        &tok,
        json!({}),
    )
    .await
    .names_field("projectId");
    app.post(
        &format!("/api/v1/tenants/{t}/projects/{p}/backups/{p}/verifications"),
        &tok,
        json!({}),
    )
    .await
    .problem(404);
    app.get(&format!("/api/v1/tenants/{t}/projects?limit=0"), &tok)
        .await
        .names_field("limit");
    app.get(&format!("/api/v1/tenants/{t}/projects?limit=201"), &tok)
        .await
        .names_field("limit");
    app.get(&format!("/api/v1/tenants/{t}/projects?limit=ten"), &tok)
        .await
        .names_field("limit");
    app.get(&format!("/api/v1/tenants/{t}/projects?cursor=garbage"), &tok)
        .await
        .names_field("cursor");
    app.get("/api/v1/nothing-here", &tok).await.problem(404);
    app.get("/nothing", &tok).await.problem(404);
    let r = app
        .send(
            Method::PUT,
            &format!("/api/v1/tenants/{t}"),
            Some(&tok),
            Some(json!({})),
        )
        .await;
    r.problem(405);
    assert_eq!(r.header("allow").unwrap(), "GET, PATCH, DELETE");
    let r = app.send(Method::DELETE, "/api/v1/tenants", Some(&tok), None).await;
    r.problem(405);
    app.send(Method::POST, "/api/v1/tenants", Some(&tok), None)
        .await
        .problem(415);
    app.post(&format!("/api/v1/tenants/{t}/projects"), &tok, json!({ "name": "ok" }))
        .await;
    let r = app
        .client
        .post(format!("{}/api/v1/tenants/{t}/projects", app.base))
        .bearer_auth(&tok)
        .header("Idempotency-Key", "x".repeat(300))
        .json(&json!({ "name": "other" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
