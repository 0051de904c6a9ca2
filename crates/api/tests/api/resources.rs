use serde_json::json;
use svalbard_core::auth::Role;

use svalbard_testkit::app::{TestApp, planet_body};

#[tokio::test]
async fn tenant_project_planet_crud() {
    let app = TestApp::spawn().await;
    let admin = app.platform();

    let r = app
        .post(
            "/api/v1/tenants",
            &admin,
            json!({ "name": "acme", "displayName": "ACME Corp" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let tenant = r.json();
    let t = tenant["id"].as_str().unwrap();
    assert_eq!(r.header("location").unwrap(), format!("/api/v1/tenants/{t}"));
    assert_eq!(tenant["name"], "acme");
    assert_eq!(tenant["displayName"], "ACME Corp");
    assert_eq!(app.get(&format!("/api/v1/tenants/{t}"), &admin).await.json(), tenant);
    app.post("/api/v1/tenants", &admin, json!({ "name": "acme" }))
        .await
        .problem(409);

    let tok = app.token(t, Role::Admin);
    let r = app
        .post(
            &format!("/api/v1/tenants/{t}/projects"),
            &tok,
            json!({ "name": "billing", "description": "Billing" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let project = r.json();
    let p = project["id"].as_str().unwrap();
    assert_eq!(project["tenantId"], t);
    assert_eq!(
        app.get(&format!("/api/v1/tenants/{t}/projects/{p}"), &tok).await.json(),
        project
    );
    app.post(
        &format!("/api/v1/tenants/{t}/projects"),
        &tok,
        json!({ "name": "billing" }),
    )
    .await
    .problem(409);

    let planets = format!("/api/v1/tenants/{t}/projects/{p}/planets");
    let r = app.post(&planets, &tok, planet_body("orders")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let planet = r.json();
    let id = planet["id"].as_str().unwrap();
    assert_eq!(r.header("location").unwrap(), format!("{planets}/{id}"));
    assert_eq!(planet["engine"], "postgresql");
    assert_eq!(planet["planetClass"], "test");
    assert_eq!(planet["labels"]["team"], "payments");
    assert_eq!(planet["connection"]["port"], 5432);
    assert_eq!(planet["connection"]["sslmode"], "prefer");
    assert_eq!(planet["connection"]["passwordSet"], true);
    app.post(&planets, &tok, planet_body("orders")).await.problem(409);

    let r = app
        .patch(
            &format!("{planets}/{id}"),
            &tok,
            json!({ "planetClass": "prod", "labels": { "tier": "1" }, "connection": { "port": 6432, "password": null } }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let patched = r.json();
    assert_eq!(patched["planetClass"], "prod");
    assert_eq!(patched["labels"], json!({ "tier": "1" }));
    assert_eq!(patched["connection"]["port"], 6432);
    assert_eq!(patched["connection"]["host"], "127.0.0.1");
    assert_eq!(patched["connection"]["passwordSet"], false);
    assert_eq!(patched["name"], "orders");
    assert_eq!(app.get(&format!("{planets}/{id}"), &tok).await.json(), patched);

    let list = app.get(&planets, &tok).await.json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["nextCursor"].is_null());

    assert_eq!(app.delete(&format!("{planets}/{id}"), &tok).await.status, 204);
    app.get(&format!("{planets}/{id}"), &tok).await.problem(404);
    app.delete(&format!("{planets}/{id}"), &tok).await.problem(404);
    assert_eq!(
        app.delete(&format!("/api/v1/tenants/{t}/projects/{p}"), &tok)
            .await
            .status,
        204
    );
    app.get(&format!("/api/v1/tenants/{t}/projects/{p}"), &tok)
        .await
        .problem(404);
    assert_eq!(app.delete(&format!("/api/v1/tenants/{t}"), &admin).await.status, 204);
    app.get(&format!("/api/v1/tenants/{t}"), &admin).await.problem(404);
}

#[tokio::test]
async fn pagination_is_newest_first_and_stable() {
    let app = TestApp::spawn().await;
    let t = app.tenant("pager").await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(app.project(&t, &format!("p{i}")).await);
    }
    created.reverse();
    let tok = app.token(&t, Role::Viewer);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = cursor.as_ref().map_or(String::new(), |c| format!("&cursor={c}"));
        let page = app
            .get(&format!("/api/v1/tenants/{t}/projects?limit=3{q}"), &tok)
            .await
            .json();
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        // A project created while paging does not disturb the pages after the cursor.
        if pages == 1 {
            app.project(&t, "late").await;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);
}

#[tokio::test]
async fn idempotency_key_replays_and_refuses_other_bodies() {
    let app = TestApp::spawn().await;
    let t = app.tenant("idem").await;
    let tok = app.token(&t, Role::Admin);
    let path = format!("/api/v1/tenants/{t}/projects");
    let send = |body: serde_json::Value| {
        app.client
            .post(format!("{}{path}", app.base))
            .bearer_auth(&tok)
            .header("Idempotency-Key", "k-1")
            .json(&body)
            .send()
    };
    let first = send(json!({ "name": "once" })).await.unwrap();
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: serde_json::Value = first.json().await.unwrap();
    let again = send(json!({ "name": "once" })).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"].to_str().unwrap(), location);
    assert_eq!(again.json::<serde_json::Value>().await.unwrap(), first);
    let other = send(json!({ "name": "twice" })).await.unwrap();
    assert_eq!(other.status(), 422);
    assert_eq!(other.headers()["content-type"], "application/problem+json");
    let list = app.get(&path, &tok).await.json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // A failed create frees its key for a corrected retry.
    let bad = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(&tok)
        .header("Idempotency-Key", "k-2")
        .json(&json!({ "name": "Bad Name" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let good = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(&tok)
        .header("Idempotency-Key", "k-2")
        .json(&json!({ "name": "good" }))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 201);
}

#[tokio::test]
async fn password_is_never_returned_and_sealed_at_rest() {
    let app = TestApp::spawn().await;
    let t = app.tenant("secrets").await;
    let p = app.project(&t, "vault").await;
    let tok = app.token(&t, Role::Admin);
    let secret = "pw-Secret-42";
    let planets = format!("/api/v1/tenants/{t}/projects/{p}/planets");
    let created = app.post(&planets, &tok, planet_body("db")).await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let patched = app
        .patch(
            &format!("{planets}/{id}"),
            &tok,
            json!({ "connection": { "password": "n3w-Secret-43" } }),
        )
        .await;
    let bodies = [
        created.text,
        app.get(&format!("{planets}/{id}"), &tok).await.text,
        app.get(&planets, &tok).await.text,
        patched.text,
        app.get("/openapi.json", &tok).await.text,
    ];
    for body in &bodies {
        assert!(
            !body.contains(secret) && !body.contains("n3w-Secret-43"),
            "password leaked: {body}"
        );
    }
    let (sealed, key_id): (Vec<u8>, String) =
        sqlx::query_as("SELECT password_sealed, password_key_id FROM planets WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(key_id, "t1");
    assert!(!sealed.windows(5).any(|w| w == b"n3w-S"));
}

#[tokio::test]
async fn deleting_what_still_has_backups_is_refused() {
    let app = TestApp::spawn().await;
    let t = app.tenant("keeper").await;
    let p = app.project(&t, "proj").await;
    let planet = app.planet(&t, &p, "db").await;
    sqlx::query(
        "INSERT INTO backups (id, tenant_id, project_id, planet_id, name, engine, method, status, storage_prefix, stage, retention_days)
         VALUES (gen_random_uuid(), $1::uuid, $2::uuid, $3::uuid, 'b', 'postgresql', 'manual', 'succeeded', 'k', 'test', 14)",
    )
    .bind(&t)
    .bind(&p)
    .bind(&planet)
    .execute(&app.pool)
    .await
    .unwrap();
    let admin = app.platform();
    for path in [
        format!("/api/v1/tenants/{t}/projects/{p}/planets/{planet}"),
        format!("/api/v1/tenants/{t}/projects/{p}"),
        format!("/api/v1/tenants/{t}"),
    ] {
        let problem = app.delete(&path, &admin).await.problem(409);
        assert!(problem["detail"].as_str().unwrap().contains("1 backup"), "{problem}");
        assert_eq!(app.get(&path, &admin).await.status, 200);
    }
}
