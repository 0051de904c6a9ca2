use serde_json::json;
use svalbard_core::auth::Role;
use svalbard_testkit::app::TestApp;

struct Fixture {
    app: TestApp,
    tenant: String,
    project: String,
    token: String,
}

impl Fixture {
    async fn new() -> Self {
        let app = TestApp::spawn().await;
        let tenant = app.tenant("backups").await;
        let project = app.project(&tenant, "shop").await;
        let token = app.token(&tenant, Role::Operator);
        Self {
            app,
            tenant,
            project,
            token,
        }
    }

    async fn planet(&self, name: &str) -> String {
        self.app.planet(&self.tenant, &self.project, name).await
    }

    fn backups(&self, planet: &str) -> String {
        format!(
            "/api/v1/tenants/{}/projects/{}/planets/{planet}/backups",
            self.tenant, self.project
        )
    }

    fn backup(&self, id: &str) -> String {
        format!("/api/v1/tenants/{}/projects/{}/backups/{id}", self.tenant, self.project)
    }
}

#[tokio::test]
async fn the_guidewire_sample_body_is_accepted_verbatim() {
    let f = Fixture::new().await;
    let planet = f.planet("orders").await;
    let sample = r#"{
"mechanism": "logical",
"planetClass": "dev",
"temporary": true,
"retentionPeriodInDays": 10,
"metadata": {
"name": "sample backup",
"description": "This is a sample backup."
}
}"#;
    let r = f
        .app
        .client
        .post(format!("{}{}", f.app.base, f.backups(&planet)))
        .bearer_auth(&f.token)
        .header("content-type", "application/json")
        .body(sample)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(location, f.backup(b["id"].as_str().unwrap()));
    assert_eq!(b["status"], "scheduled");
    assert_eq!(b["displayStatus"], "pending");
    assert_eq!(b["method"], "manual");
    assert_eq!(b["mechanism"], "logical");
    assert_eq!(b["temporary"], true);
    assert_eq!(b["retentionPeriodInDays"], 10);
    assert_eq!(
        b["metadata"],
        json!({ "name": "sample backup", "description": "This is a sample backup." })
    );
    assert_eq!(
        b["environment"],
        json!({ "tenant": "backups", "project": "shop", "stage": "dev", "name": "orders" })
    );
    assert_eq!(b["progress"], json!({ "bytesProcessed": 0, "phase": null }));
    let name = b["name"].as_str().unwrap();
    assert!(name.len() == 14 + 7 && name.ends_with("_orders") && name[..14].bytes().all(|c| c.is_ascii_digit()));
    assert_eq!(b["parts"].as_array().unwrap().len(), 3);
    assert_eq!(
        f.app.get(&f.backup(b["id"].as_str().unwrap()), &f.token).await.json(),
        b
    );
}

#[tokio::test]
async fn defaults_conflicts_and_refusals() {
    let f = Fixture::new().await;
    let test_planet = f.planet("tested").await; // planet class `test`
    // An empty body, without even a content type, is a backup with every default.
    let r = f
        .app
        .send(reqwest::Method::POST, &f.backups(&test_planet), Some(&f.token), None)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let first = r.json();
    assert_eq!(first["retentionPeriodInDays"], 14);
    assert_eq!(first["environment"]["stage"], "test");
    assert_eq!(first["temporary"], false);
    // A second one while the first is pending names the first.
    let p = f
        .app
        .post(&f.backups(&test_planet), &f.token, json!({}))
        .await
        .problem(409);
    assert!(
        p["detail"].as_str().unwrap().contains(first["id"].as_str().unwrap()),
        "{p}"
    );

    let other = f.planet("other").await;
    let r = f
        .app
        .post(
            &f.backups(&other),
            &f.token,
            json!({ "temporary": true, "planetClass": "prod" }),
        )
        .await;
    assert_eq!(r.json()["retentionPeriodInDays"], 1);
    assert_eq!(r.json()["environment"]["stage"], "prod");

    let third = f.planet("third").await;
    f.app
        .post(&f.backups(&third), &f.token, json!({ "mechanism": "physical" }))
        .await
        .names_field("mechanism");
    f.app
        .post(&f.backups(&third), &f.token, json!({ "retentionPeriodInDays": 0 }))
        .await
        .names_field("retentionPeriodInDays");
    f.app
        .post(&f.backups(&third), &f.token, json!({ "retentionPeriodInDays": 3651 }))
        .await
        .names_field("retentionPeriodInDays");
    f.app
        .post(&f.backups(&third), &f.token, json!({ "retentionPeriodInDays": "ten" }))
        .await
        .names_field("retentionPeriodInDays");
    f.app
        .post(&f.backups(&third), &f.token, json!({ "mechanism": "snapshot" }))
        .await
        .names_field("mechanism");
    f.app
        .post(&f.backups(&third), &f.token, json!({ "metadata": { "colour": "red" } }))
        .await
        .names_field("metadata.colour");
    f.app
        .post(
            &f.backups(&third),
            &f.token,
            json!({ "metadata": { "name": "x".repeat(201) } }),
        )
        .await
        .names_field("metadata.name");
    f.app
        .post(&f.backups(&third), &f.token, json!({ "schedule": "daily" }))
        .await
        .names_field("schedule");
    let viewer = f.app.token(&f.tenant, Role::Viewer);
    f.app.post(&f.backups(&third), &viewer, json!({})).await.problem(403);
    let list = f.app.get(&f.backups(&third), &f.token).await.json();
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "a refused create stored something"
    );

    // Nothing to download yet; a viewer may not download at all; an operator may not delete.
    let id = first["id"].as_str().unwrap();
    f.app
        .get(&format!("{}/archive", f.backup(id)), &viewer)
        .await
        .problem(403);
    let p = f
        .app
        .get(&format!("{}/archive", f.backup(id)), &f.token)
        .await
        .problem(409);
    assert!(p["detail"].as_str().unwrap().contains("scheduled"));
    f.app.delete(&f.backup(id), &f.token).await.problem(403);
    let admin = f.app.token(&f.tenant, Role::Admin);
    let r = f.app.delete(&f.backup(id), &admin).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["status"], "deleting");
    // With the first one gone, a new backup of the planet may start.
    assert_eq!(
        f.app.post(&f.backups(&test_planet), &f.token, json!({})).await.status,
        201
    );
}

#[tokio::test]
async fn lists_filter_page_and_stay_newest_first() {
    let f = Fixture::new().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let planet = f.planet(&format!("db{i}")).await;
        ids.push(
            f.app.post(&f.backups(&planet), &f.token, json!({})).await.json()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids.reverse();
    let project = format!("/api/v1/tenants/{}/projects/{}/backups", f.tenant, f.project);
    let page1 = f.app.get(&format!("{project}?limit=3"), &f.token).await.json();
    let page2 = f
        .app
        .get(
            &format!("{project}?limit=3&cursor={}", page1["nextCursor"].as_str().unwrap()),
            &f.token,
        )
        .await
        .json();
    let seen: Vec<&str> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["items"].as_array().unwrap())
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(seen, ids);
    assert!(page2["nextCursor"].is_null());
    let scheduled = f.app.get(&format!("{project}?status=scheduled"), &f.token).await.json();
    assert_eq!(scheduled["items"].as_array().unwrap().len(), 5);
    let none = f.app.get(&format!("{project}?status=succeeded"), &f.token).await.json();
    assert!(none["items"].as_array().unwrap().is_empty());
    f.app
        .get(&format!("{project}?status=bogus"), &f.token)
        .await
        .names_field("status");
}

#[tokio::test]
async fn idempotent_backup_creation_and_maintenance_status() {
    let f = Fixture::new().await;
    let planet = f.planet("orders").await;
    let post = || {
        f.app
            .client
            .post(format!("{}{}", f.app.base, f.backups(&planet)))
            .bearer_auth(&f.token)
            .header("Idempotency-Key", "nightly-2026-11-23")
            .json(&json!({ "metadata": { "name": "nightly" } }))
            .send()
    };
    let a: serde_json::Value = post().await.unwrap().json().await.unwrap();
    let replay = post().await.unwrap();
    assert_eq!(replay.status(), 201, "a retried create must not conflict with itself");
    let b: serde_json::Value = replay.json().await.unwrap();
    assert_eq!(a["id"], b["id"]);
    let m = f
        .app
        .get(
            &format!(
                "/api/v1/tenants/{}/projects/{}/planets/{planet}/maintenance",
                f.tenant, f.project
            ),
            &f.token,
        )
        .await
        .json();
    assert_eq!(m["running"], true);
    assert_eq!(m["backup"]["id"], a["id"]);
    assert_eq!(m["backup"]["succeeded"], false);
    assert!(m["restore"].is_null());
}
