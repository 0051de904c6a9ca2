use reqwest::Method;
use serde_json::{Value, json};
use svalbard_core::auth::Role;

use svalbard_testkit::app::{TestApp, planet_body};

struct World {
    a: String,
    a_project: String,
    a_planet: String,
    a_backup: String,
    a_webhook: String,
    b: String,
    b_project: String,
}

async fn world(app: &TestApp) -> World {
    let a = app.tenant("alpha").await;
    let a_project = app.project(&a, "shop").await;
    let a_planet = app.planet(&a, &a_project, "orders").await;
    // The backup is taken through the Camunda-style profile, so that it also has a number.
    let numbered =
        format!("/profiles/camunda/tenants/{a}/projects/{a_project}/planets/{a_planet}/actuator/backupHistory");
    let r = app
        .post(&numbered, &app.platform(), json!({ "backupId": NUMBER }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let backups = format!("/api/v1/tenants/{a}/projects/{a_project}/planets/{a_planet}/backups");
    let r = app.get(&backups, &app.platform()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let a_backup = r.json()["items"][0]["id"].as_str().unwrap().to_owned();
    let schedule = format!("/api/v1/tenants/{a}/projects/{a_project}/planets/{a_planet}/schedule");
    let r = app
        .send(
            Method::PUT,
            &schedule,
            Some(&app.platform()),
            Some(json!({ "cron": "0 3 * * *", "retention": { "keepLast": 5 } })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app
        .post(
            &format!("/api/v1/tenants/{a}/webhooks"),
            &app.platform(),
            json!({ "url": "http://127.0.0.1:9/hooks", "eventTypes": ["backup.failed"] }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let a_webhook = r.json()["id"].as_str().unwrap().to_owned();
    let b = app.tenant("beta").await;
    let b_project = app.project(&b, "shop").await;
    World {
        a,
        a_project,
        a_planet,
        a_backup,
        a_webhook,
        b,
        b_project,
    }
}

/// The number of the world's backup in the Camunda-style profile.
const NUMBER: i64 = 7;

/// Every tenant-scoped endpoint, addressed with tenant `t`, project `p`, planet `x`, backup `b`
/// and webhook `h`, with the role each needs. Deleting ones come last.
fn endpoints(t: &str, p: &str, x: &str, b: &str, h: &str) -> Vec<(Method, String, Option<Value>, Role)> {
    let planets = format!("/api/v1/tenants/{t}/projects/{p}/planets");
    let backups = format!("/api/v1/tenants/{t}/projects/{p}/backups");
    let starsystem = format!("/api/v1/tenants/{t}/starsystems/{p}");
    let connectware = format!("/profiles/connectware/tenants/{t}/projects/{p}/planets/{x}/api/maintenance/db");
    let databases = format!("/profiles/dbaas/tenants/{t}/api/databases/{x}/backups");
    let camunda = format!("/profiles/camunda/tenants/{t}/projects/{p}/planets/{x}/actuator/backupHistory");
    let webhooks = format!("/api/v1/tenants/{t}/webhooks");
    vec![
        (Method::GET, format!("/api/v1/tenants/{t}"), None, Role::Viewer),
        (Method::GET, format!("/api/v1/tenants/{t}/projects"), None, Role::Viewer),
        (
            Method::POST,
            format!("/api/v1/tenants/{t}/projects"),
            Some(json!({ "name": "intruder" })),
            Role::Admin,
        ),
        (
            Method::GET,
            format!("/api/v1/tenants/{t}/projects/{p}"),
            None,
            Role::Viewer,
        ),
        (Method::GET, planets.clone(), None, Role::Viewer),
        (
            Method::POST,
            planets.clone(),
            Some(planet_body("intruder")),
            Role::Admin,
        ),
        (Method::GET, format!("{planets}/{x}"), None, Role::Viewer),
        (
            Method::PATCH,
            format!("{planets}/{x}"),
            Some(json!({ "planetClass": "prod" })),
            Role::Admin,
        ),
        (
            Method::POST,
            format!("{planets}/{x}/backups"),
            Some(json!({ "temporary": true })),
            Role::Operator,
        ),
        (Method::GET, format!("{planets}/{x}/backups"), None, Role::Viewer),
        (Method::GET, format!("{planets}/{x}/maintenance"), None, Role::Viewer),
        (Method::GET, backups.clone(), None, Role::Viewer),
        (Method::GET, format!("{backups}/{b}"), None, Role::Viewer),
        // An archive is the whole database: reading it is more than viewing.
        (Method::GET, format!("{backups}/{b}/archive"), None, Role::Operator),
        // A verification restores the whole archive on the platform's server.
        (
            Method::POST,
            format!("{backups}/{b}/verifications"),
            None,
            Role::Operator,
        ),
        (
            Method::GET,
            format!("/api/v1/tenants/{t}/audit-events"),
            None,
            Role::Admin,
        ),
        (Method::GET, format!("{planets}/{x}/schedule"), None, Role::Viewer),
        (
            Method::PUT,
            format!("{planets}/{x}/schedule"),
            Some(json!({ "cron": "*/5 * * * *", "retention": { "keepLast": 1 } })),
            Role::Admin,
        ),
        (
            Method::GET,
            format!("{planets}/{x}/retention/preview"),
            None,
            Role::Viewer,
        ),
        (
            Method::PATCH,
            format!("{backups}/{b}"),
            Some(json!({ "pinned": true })),
            Role::Admin,
        ),
        // The drop-in profiles.
        (
            Method::POST,
            format!("{starsystem}/planets/{x}/backups"),
            Some(json!({ "temporary": true })),
            Role::Operator,
        ),
        (
            Method::GET,
            format!("{starsystem}/planets/{x}/backups"),
            None,
            Role::Viewer,
        ),
        (Method::GET, format!("{starsystem}/backup"), None, Role::Viewer),
        (Method::GET, format!("{starsystem}/backups/{b}"), None, Role::Viewer),
        (Method::GET, connectware.clone(), None, Role::Viewer),
        (Method::POST, format!("{connectware}/backup"), None, Role::Operator),
        (Method::GET, format!("{connectware}/backup"), None, Role::Operator),
        // Not a form: refused as such once the caller may restore.
        (
            Method::POST,
            format!("{connectware}/restore"),
            Some(json!({})),
            Role::Admin,
        ),
        (Method::GET, databases.clone(), None, Role::Viewer),
        (Method::POST, databases.clone(), None, Role::Operator),
        (Method::GET, format!("{databases}/{b}/archive"), None, Role::Operator),
        (
            Method::POST,
            camunda.clone(),
            Some(json!({ "backupId": NUMBER + 1 })),
            Role::Operator,
        ),
        (Method::GET, camunda.clone(), None, Role::Viewer),
        (Method::GET, format!("{camunda}/{NUMBER}"), None, Role::Viewer),
        (Method::GET, format!("/api/v1/tenants/{t}/keys"), None, Role::Admin),
        (
            Method::GET,
            format!("/api/v1/tenants/{t}/keys/export"),
            None,
            Role::Admin,
        ),
        (
            Method::POST,
            format!("/api/v1/tenants/{t}/keys/rotate"),
            None,
            Role::Admin,
        ),
        (Method::GET, webhooks.clone(), None, Role::Admin),
        (
            Method::POST,
            webhooks.clone(),
            Some(json!({ "url": "http://127.0.0.1:9/intruder", "eventTypes": ["restore.failed"] })),
            Role::Admin,
        ),
        (Method::GET, format!("{webhooks}/{h}"), None, Role::Admin),
        (Method::GET, format!("{webhooks}/{h}/deliveries"), None, Role::Admin),
        (Method::DELETE, format!("{webhooks}/{h}"), None, Role::Admin),
        (Method::DELETE, format!("{planets}/{x}/schedule"), None, Role::Admin),
        // The numbered backup is the world's backup: deleted under its number first, then again
        // through the other routes (a repeated delete changes nothing).
        (Method::DELETE, format!("{camunda}/{NUMBER}"), None, Role::Admin),
        (Method::DELETE, format!("{starsystem}/backups/{b}"), None, Role::Admin),
        (Method::DELETE, format!("{backups}/{b}"), None, Role::Admin),
        (Method::DELETE, format!("{planets}/{x}"), None, Role::Admin),
        (
            Method::DELETE,
            format!("/api/v1/tenants/{t}/projects/{p}"),
            None,
            Role::Admin,
        ),
        (Method::DELETE, format!("/api/v1/tenants/{t}"), None, Role::Admin),
    ]
}

async fn snapshot(app: &TestApp, w: &World) -> Vec<String> {
    let admin = app.platform();
    let mut out = Vec::new();
    for path in [
        format!("/api/v1/tenants/{}", w.a),
        format!("/api/v1/tenants/{}/projects", w.a),
        format!("/api/v1/tenants/{}/projects/{}/planets", w.a, w.a_project),
        format!(
            "/api/v1/tenants/{}/projects/{}/backups?status=scheduled",
            w.a, w.a_project
        ),
        format!(
            "/api/v1/tenants/{}/projects/{}/planets/{}/schedule",
            w.a, w.a_project, w.a_planet
        ),
        format!("/api/v1/tenants/{}/webhooks", w.a),
        format!("/api/v1/tenants/{}/keys", w.a),
    ] {
        let r = app.get(&path, &admin).await;
        assert_eq!(r.status, 200);
        out.push(r.text);
    }
    out
}

#[tokio::test]
async fn another_tenants_ids_are_not_found_everywhere() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    // A MySQL planet of A is as invisible to B as a PostgreSQL one.
    let mysql = app
        .post(
            &format!("/api/v1/tenants/{}/projects/{}/planets", w.a, w.a_project),
            &app.platform(),
            json!({ "name": "maria", "engine": "mysql", "connection": { "host": "127.0.0.1", "database": "d", "user": "root" } }),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = snapshot(&app, &w).await;
    for role in [Role::Viewer, Role::Operator, Role::Admin] {
        let b_token = app.token(&w.b, role);
        // B's token on A's ids.
        for planet in [&w.a_planet, &mysql] {
            for (method, path, body, _) in endpoints(&w.a, &w.a_project, planet, &w.a_backup, &w.a_webhook) {
                let r = app.send(method.clone(), &path, Some(&b_token), body).await;
                let p = r.problem(404);
                assert!(!r.text.contains(&w.a_project), "{method} {path} leaked: {p}");
            }
        }
        // B's own tenant id with A's project and planet ids.
        for (method, path, body, needed) in endpoints(&w.b, &w.a_project, &w.a_planet, &w.a_backup, &w.a_webhook)
            .into_iter()
            .skip(3)
        {
            if path == format!("/api/v1/tenants/{}", w.b)
                || path.ends_with(&format!("/tenants/{}/projects", w.b))
                || path.ends_with(&format!("/tenants/{}/audit-events", w.b))
                || path.ends_with(&format!("/tenants/{}/webhooks", w.b))
                || path.contains(&format!("/tenants/{}/keys", w.b))
            {
                continue;
            }
            let r = app.send(method.clone(), &path, Some(&b_token), body).await;
            if role >= needed {
                r.problem(404);
            } else {
                assert!(r.status == 403 || r.status == 404, "{method} {path}: {}", r.text);
            }
        }
        // B's project id under A's tenant is also unknown to A.
        let a_token = app.token(&w.a, Role::Admin);
        app.get(&format!("/api/v1/tenants/{}/projects/{}", w.a, w.b_project), &a_token)
            .await
            .problem(404);
    }
    assert_eq!(snapshot(&app, &w).await, before, "another tenant changed something");
}

#[tokio::test]
async fn roles_are_checked_on_every_mutating_call() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let before = snapshot(&app, &w).await;
    for role in [Role::Viewer, Role::Operator] {
        let token = app.token(&w.a, role);
        for (method, path, body, needed) in endpoints(&w.a, &w.a_project, &w.a_planet, &w.a_backup, &w.a_webhook) {
            let r = app.send(method.clone(), &path, Some(&token), body).await;
            if role >= needed {
                // Allowed: whatever the outcome (a 409 for a second backup, say), not refused.
                assert!(
                    ![401, 403, 404].contains(&r.status) && r.status < 500,
                    "{method} {path} as {role:?}: {}",
                    r.text
                );
            } else {
                r.problem(403);
            }
        }
    }
    assert_eq!(snapshot(&app, &w).await, before, "a weak role changed something");

    // A tenant's own admin cannot manage tenants.
    let tenant_admin = app.token(&w.a, Role::Admin);
    app.post("/api/v1/tenants", &tenant_admin, json!({ "name": "mine" }))
        .await
        .problem(403);
    app.get("/api/v1/tenants", &tenant_admin).await.problem(403);
    app.delete(&format!("/api/v1/tenants/{}", w.a), &tenant_admin)
        .await
        .problem(403);
    // Nor raise its own limits; another tenant's id is simply unknown.
    let limits = json!({ "limits": { "concurrentJobs": 1000 } });
    app.patch(&format!("/api/v1/tenants/{}", w.a), &tenant_admin, limits.clone())
        .await
        .problem(403);
    app.patch(&format!("/api/v1/tenants/{}", w.b), &tenant_admin, limits)
        .await
        .problem(404);
    // A platform viewer reads but does not write.
    let platform_viewer = app.token("*", Role::Viewer);
    assert_eq!(app.get("/api/v1/tenants", &platform_viewer).await.status, 200);
    app.post("/api/v1/tenants", &platform_viewer, json!({ "name": "mine" }))
        .await
        .problem(403);
    app.post(
        &format!("/api/v1/tenants/{}/projects", w.a),
        &platform_viewer,
        json!({ "name": "x" }),
    )
    .await
    .problem(403);

    // The admin of the tenant does every tenant-scoped call.
    let admin = app.token(&w.a, Role::Admin);
    for (method, path, body, _) in endpoints(&w.a, &w.a_project, &w.a_planet, &w.a_backup, &w.a_webhook) {
        if path.ends_with(&w.a) && method == Method::DELETE {
            continue;
        }
        let r = app.send(method.clone(), &path, Some(&admin), body).await;
        assert!(
            ![401, 403, 404].contains(&r.status) && r.status < 500,
            "{method} {path} as admin: {}",
            r.text
        );
    }
}
