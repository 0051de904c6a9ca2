//! The audit log: downloads, restores, deletes, pins, schedule, planet and tenant changes, and
//! calls refused for want of a role; readable by the tenant's admins and platform admins only.

use std::time::Duration;

use serde_json::{Value, json};
use svalbard_core::auth::{Role, mint_hs256};
use svalbard_testkit::app::TestApp;

fn token(app: &TestApp, subject: &str, tenant: &str, role: Role) -> String {
    mint_hs256(&app.config.auth, subject, tenant, role, Duration::from_secs(600)).unwrap()
}

/// Every event of the tenant, following the cursor.
async fn all_events(app: &TestApp, tenant: &str, query: &str, tok: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = app
            .get(
                &format!("/api/v1/tenants/{tenant}/audit-events?limit=2{query}{cursor}"),
                tok,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.json();
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn actions_are_recorded_with_who_from_where_and_how_it_ended() {
    // Presigning is local: a storage endpoint nobody listens on still signs download URLs.
    let app = TestApp::spawn_with(json!({ "s3": {
        "endpoint": "http://127.0.0.1:1", "access_key_id": "k", "secret_access_key": "s",
    } }))
    .await;
    let t = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let p = app.project(&t, "shop").await;
    let x = app.planet(&t, &p, "orders").await;
    let alice = token(&app, "alice", &t, Role::Operator);
    let bob = token(&app, "bob", &t, Role::Admin);
    let victor = token(&app, "victor", &t, Role::Viewer);
    let planet = format!("/api/v1/tenants/{t}/projects/{p}/planets/{x}");

    let r = app.post(&format!("{planet}/backups"), &alice, json!({})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let b = r.json()["id"].as_str().unwrap().to_owned();
    // Stands in for a worker: the backup succeeded.
    sqlx::query(
        "UPDATE backups SET status = 'succeeded', size_bytes = 10, completed_at = now(),
                object_key = storage_prefix || 'archive-1.svb.zst' WHERE id = $1::uuid",
    )
    .bind(&b)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE jobs SET state = 'succeeded' WHERE subject_id = $1::uuid")
        .bind(&b)
        .execute(&app.pool)
        .await
        .unwrap();
    let backup = format!("/api/v1/tenants/{t}/projects/{p}/backups/{b}");

    // A viewer may not download: refused, and recorded as refused.
    app.get(&format!("{backup}/archive"), &victor).await.problem(403);
    let r = app.get(&format!("{backup}/archive"), &alice).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .get(format!("{}{backup}/archive?redirect=true", app.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    // Replacing needs admin: an operator's attempt is refused and recorded.
    app.post(&format!("{backup}/restores"), &alice, json!({ "replace": true }))
        .await
        .problem(403);
    let r = app.post(&format!("{backup}/restores"), &alice, json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    sqlx::query("UPDATE restores SET status = 'succeeded' WHERE planet_id = $1::uuid")
        .bind(&x)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.patch(&backup, &bob, json!({ "pinned": true })).await.status, 200);
    assert_eq!(app.patch(&backup, &bob, json!({ "pinned": false })).await.status, 200);
    let schedule = json!({ "cron": "0 3 * * *", "retention": { "keepLast": 3 } });
    let r = app
        .send(
            reqwest::Method::PUT,
            &format!("{planet}/schedule"),
            Some(&bob),
            Some(schedule),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(app.delete(&format!("{planet}/schedule"), &bob).await.status, 204);
    assert_eq!(
        app.patch(&planet, &bob, json!({ "planetClass": "prod" })).await.status,
        200
    );
    app.patch(&planet, &alice, json!({ "planetClass": "dev" }))
        .await
        .problem(403);
    assert_eq!(app.delete(&backup, &bob).await.status, 202);
    let r = app
        .patch(
            &format!("/api/v1/tenants/{t}"),
            &app.platform(),
            json!({ "targetPolicy": { "deny": ["10.0.0.0/8"] } }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.patch(&format!("/api/v1/tenants/{t}"), &bob, json!({ "targetPolicy": null }))
        .await
        .problem(403);

    let events = all_events(&app, &t, "", &bob).await;
    assert_eq!(
        actions(&events),
        [
            "tenant.update",
            "tenant.update",
            "backup.delete",
            "planet.update",
            "planet.update",
            "schedule.delete",
            "schedule.put",
            "backup.unpin",
            "backup.pin",
            "restore.create",
            "restore.create",
            "backup.download",
            "backup.download",
            "backup.download",
            "planet.create",
            "tenant.create",
        ],
        "{events:#?}"
    );
    let outcomes: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(outcomes[0], ("tenant.update", "bob", "denied"));
    assert_eq!(outcomes[1], ("tenant.update", "test", "success"));
    assert_eq!(outcomes[3], ("planet.update", "alice", "denied"));
    assert_eq!(outcomes[10], ("restore.create", "alice", "denied"));
    assert_eq!(outcomes[13], ("backup.download", "victor", "denied"));
    for e in &events {
        assert_eq!(e["tenantId"], t.as_str());
        assert_eq!(e["clientAddress"], "127.0.0.1", "{e}");
        assert!(e["occurredAt"].is_string());
    }
    let download = &events[11];
    assert_eq!(download["actor"], "alice");
    assert_eq!(download["actorRole"], "operator");
    assert_eq!(download["actorPlatform"], false);
    assert_eq!(download["resourceType"], "backup");
    assert_eq!(download["resourceId"], b.as_str());
    let restore = &events[9];
    assert_eq!(restore["resourceType"], "restore");
    assert!(restore["resourceId"].is_string());
    assert_eq!(events[1]["actorPlatform"], true);

    // Filters: by action, by actor, by time.
    let downloads = all_events(&app, &t, "&action=backup.download", &bob).await;
    assert_eq!(downloads.len(), 3);
    let by_victor = all_events(&app, &t, "&actor=victor", &bob).await;
    assert_eq!(actions(&by_victor), ["backup.download"]);
    assert_eq!(by_victor[0]["outcome"], "denied");
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let enc = |s: &str| s.replace('+', "%2B");
    assert!(
        all_events(&app, &t, &format!("&since={}", enc(&future)), &bob)
            .await
            .is_empty()
    );
    assert!(
        all_events(&app, &t, &format!("&until={}", enc(&past)), &bob)
            .await
            .is_empty()
    );
    assert_eq!(
        all_events(&app, &t, &format!("&since={}&until={}", enc(&past), enc(&future)), &bob)
            .await
            .len(),
        events.len()
    );
    app.get(&format!("/api/v1/tenants/{t}/audit-events?since=yesterday"), &bob)
        .await
        .names_field("since");

    // Who may read it: the tenant's admins and platform admins; not its viewers or operators,
    // and another tenant's admin learns nothing, not even that the tenant exists.
    app.get(&format!("/api/v1/tenants/{t}/audit-events"), &victor)
        .await
        .problem(403);
    app.get(&format!("/api/v1/tenants/{t}/audit-events"), &alice)
        .await
        .problem(403);
    let intruder = token(&app, "mallory", &other, Role::Admin);
    app.get(&format!("/api/v1/tenants/{t}/audit-events"), &intruder)
        .await
        .problem(404);
    assert_eq!(all_events(&app, &t, "", &app.platform()).await.len(), events.len());
    // The other tenant's log holds only its own creation.
    assert_eq!(
        actions(&all_events(&app, &other, "", &intruder).await),
        ["tenant.create"]
    );
}

#[tokio::test]
async fn a_change_and_its_record_commit_together() {
    let app = TestApp::spawn().await;
    let t = app.tenant("acme").await;
    let p = app.project(&t, "shop").await;
    let x = app.planet(&t, &p, "orders").await;
    // With the audit table refusing writes, the change itself does not happen.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let planet = format!("/api/v1/tenants/{t}/projects/{p}/planets/{x}");
    let r = app
        .patch(&planet, &app.platform(), json!({ "planetClass": "prod" }))
        .await;
    assert_eq!(r.status, 500, "{}", r.text);
    assert_eq!(app.get(&planet, &app.platform()).await.json()["planetClass"], "test");
    let r = app.delete(&planet, &app.platform()).await;
    assert_eq!(r.status, 500, "{}", r.text);
    assert_eq!(app.get(&planet, &app.platform()).await.status, 200);
}
