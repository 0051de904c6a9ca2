//! The drop-in profiles' edges that need no worker: who may use HTTP Basic, what the numbered
//! ids accept, the 502 of an unreachable store, and ids of other planets.

use reqwest::Method;
use serde_json::json;
use svalbard_core::auth::Role;
use svalbard_testkit::app::{Resp, TestApp};

async fn basic(app: &TestApp, method: Method, path: &str, password: &str) -> Resp {
    let res = app
        .client
        .request(method, format!("{}{path}", app.base))
        .basic_auth("admin", Some(password))
        .send()
        .await
        .unwrap();
    Resp {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        text: res.text().await.unwrap(),
    }
}

#[tokio::test]
async fn basic_auth_is_taken_by_the_connectware_profile_alone() {
    let app = TestApp::spawn().await;
    let t = app.tenant("cw").await;
    let p = app.project(&t, "shop").await;
    let x = app.planet(&t, &p, "orders").await;
    let viewer = app.token(&t, Role::Viewer);
    let status = format!("/profiles/connectware/tenants/{t}/projects/{p}/planets/{x}/api/maintenance/db");
    let r = basic(&app, Method::GET, &status, &viewer).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["running"], false);
    assert!(v["backup"].is_null() && v["restore"].is_null(), "{v}");
    // Bearer works there too.
    assert_eq!(app.get(&status, &viewer).await.status, 200);
    // A wrong password, or none, is a 401.
    basic(&app, Method::GET, &status, "not-a-token").await.problem(401);
    let r = app
        .client
        .get(format!("{}{status}", app.base))
        .header("authorization", "Basic !!!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The same credentials anywhere else are refused.
    for path in [
        format!("/api/v1/tenants/{t}/projects/{p}/planets/{x}/maintenance"),
        format!("/api/v1/tenants/{t}/starsystems/{p}/backup"),
        format!("/profiles/dbaas/tenants/{t}/api/databases/{x}/backups"),
        format!("/profiles/camunda/tenants/{t}/projects/{p}/planets/{x}/actuator/backupHistory"),
    ] {
        basic(&app, Method::GET, &path, &viewer).await.problem(401);
    }
    // The viewer may not start a backup, download or restore through it.
    basic(&app, Method::POST, &format!("{status}/backup"), &viewer)
        .await
        .problem(403);
    basic(&app, Method::GET, &format!("{status}/backup"), &viewer)
        .await
        .problem(403);
    // No succeeded backup yet: nothing to download.
    let operator = app.token(&t, Role::Operator);
    basic(&app, Method::GET, &format!("{status}/backup"), &operator)
        .await
        .problem(409);
    // Restoring replaces the database: an operator is refused before anything is read.
    basic(&app, Method::POST, &format!("{status}/restore"), &operator)
        .await
        .problem(403);
}

#[tokio::test]
async fn numbered_ids_are_checked_and_an_unreachable_store_is_a_502() {
    let app = TestApp::spawn_with(json!({ "s3": { "endpoint": "http://127.0.0.1:9" } })).await;
    let t = app.tenant("cam").await;
    let p = app.project(&t, "shop").await;
    let x = app.planet(&t, &p, "orders").await;
    let admin = app.token(&t, Role::Admin);
    let base = format!("/profiles/camunda/tenants/{t}/projects/{p}/planets/{x}/actuator/backupHistory");
    for bad in [
        json!({ "backupId": -1 }),
        json!({ "backupId": "x" }),
        json!({ "backupId": 1.5 }),
    ] {
        app.post(&base, &admin, bad).await.names_field("backupId");
    }
    let missing = app.post(&base, &admin, json!({})).await.problem(400);
    assert!(missing["detail"].as_str().unwrap().contains("backupId"), "{missing}");
    for bad in ["abc", "-4", "1.0", "99999999999999999999"] {
        app.get(&format!("{base}/{bad}"), &admin).await.names_field("backupId");
    }
    app.get(&format!("{base}/5"), &admin).await.problem(404);
    app.delete(&format!("{base}/5"), &admin).await.problem(404);
    let r = app.post(&base, &admin, json!({ "backupId": 5 })).await;
    r.problem(502);
    // Nothing was kept: the number is still free and no backup exists.
    let r = app.get(&base, &admin).await;
    assert_eq!(r.json(), json!([]), "{}", r.text);
    let r = app
        .get(&format!("/api/v1/tenants/{t}/projects/{p}/planets/{x}/backups"), &admin)
        .await;
    assert_eq!(r.json()["items"], json!([]), "{}", r.text);
}

#[tokio::test]
async fn dbaas_databases_are_the_tenants_planets_and_backups_belong_to_theirs() {
    let app = TestApp::spawn().await;
    let t = app.tenant("db").await;
    let p = app.project(&t, "shop").await;
    let x = app.planet(&t, &p, "orders").await;
    let y = app.planet(&t, &p, "stock").await;
    let admin = app.token(&t, Role::Admin);
    let xs = format!("/profiles/dbaas/tenants/{t}/api/databases/{x}/backups");
    let r = app.send(Method::POST, &xs, Some(&admin), None).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.header("location").is_some());
    let b = r.json()["database_backup"].clone();
    assert_eq!(b["status"], "scheduled");
    assert_eq!(b["method"], "manual");
    assert_eq!(b["type"], "postgresql");
    assert_eq!(b["database_id"], x.as_str());
    assert!(b["started_at"].is_null() && b["size"].is_null(), "{b}");
    let id = b["id"].as_str().unwrap();
    let r = app.get(&xs, &admin).await;
    assert_eq!(r.json()["database_backups"][0]["id"], id, "{}", r.text);
    // A second create while the first is queued is a conflict, as natively.
    app.send(Method::POST, &xs, Some(&admin), None).await.problem(409);
    // Not done yet: no archive.
    app.get(&format!("{xs}/{id}/archive"), &admin).await.problem(409);
    // The backup is not one of another database's.
    app.get(
        &format!("/profiles/dbaas/tenants/{t}/api/databases/{y}/backups/{id}/archive"),
        &admin,
    )
    .await
    .problem(404);
    // Ids that are not UUIDs are named.
    app.get(
        &format!("/profiles/dbaas/tenants/{t}/api/databases/my-db-123/backups"),
        &admin,
    )
    .await
    .names_field("db");
    app.get(&format!("{xs}/abcdefabcdefabcdef/archive"), &admin)
        .await
        .names_field("backup");
    // Another tenant's token does not reach the database, even under its own tenant id.
    let other = app.tenant("other").await;
    let intruder = app.token(&other, Role::Admin);
    app.get(&xs, &intruder).await.problem(404);
    app.get(
        &format!("/profiles/dbaas/tenants/{other}/api/databases/{x}/backups"),
        &intruder,
    )
    .await
    .problem(404);
}

#[tokio::test]
async fn guidewire_backups_carry_the_documents_fields_and_delete_answers_200() {
    let app = TestApp::spawn().await;
    let t = app.tenant("gw").await;
    let p = app.project(&t, "shop").await;
    let x = app.planet(&t, &p, "orders").await;
    let admin = app.token(&t, Role::Admin);
    let star = format!("/api/v1/tenants/{t}/starsystems/{p}");
    let r = app
        .post(
            &format!("{star}/planets/{x}/backups"),
            &admin,
            json!({ "temporary": true }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let b = r.json();
    assert_eq!(b["type"], "temporary");
    assert_eq!(b["environment"]["tenant"], "gw");
    assert_eq!(b["environment"]["project"], "shop");
    assert_eq!(b["environment"]["name"], "orders");
    assert!(b.get("expirationDate").is_some() && b["errorMessage"].is_null(), "{b}");
    let id = b["id"].as_str().unwrap();
    let r = app.get(&format!("{star}/backup"), &admin).await;
    assert_eq!(r.json()["items"][0]["id"], id, "{}", r.text);
    assert_eq!(r.json()["items"][0]["type"], "temporary");
    app.post(
        &format!("{star}/planets/{x}/backups"),
        &admin,
        json!({ "retentionPeriodInDays": 0 }),
    )
    .await
    .names_field("retentionPeriodInDays");
    let r = app.delete(&format!("{star}/backups/{id}"), &admin).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "deleting");
    app.get(&format!("{star}/backups/not-an-id"), &admin)
        .await
        .names_field("backupId");
}
