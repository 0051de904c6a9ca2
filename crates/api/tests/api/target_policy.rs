//! Planets may only name hosts the target policy allows: the control database never, and under
//! the default policy nothing on the platform's own machines or the cloud's metadata service.

use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use svalbard_core::auth::Role;
use svalbard_testkit::app::{Resp, TestApp};

fn planet(name: &str, host: &str, port: u16, database: &str) -> Value {
    json!({
        "name": name,
        "engine": "postgresql",
        "connection": { "host": host, "port": port, "database": database, "user": "backup", "password": "pw-1" }
    })
}

/// Host, port and database name of the test's own control database.
fn control(app: &TestApp) -> (String, u16, String) {
    let url = app.config.database_url.as_ref().unwrap().expose_secret().to_owned();
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    (
        opts.get_host().to_owned(),
        opts.get_port(),
        opts.get_database().unwrap().to_owned(),
    )
}

/// A 400 naming `connection.host` whose message is `expected` (or contains it).
#[track_caller]
fn refused(r: &Resp, expected: &str) {
    let p = r.names_field("connection.host");
    let message = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["field"] == "connection.host")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains(expected), "expected `{expected}`, got `{message}`");
}

async fn planets_path(app: &TestApp, tenant: &str) -> String {
    let project = app.project(tenant, "shop").await;
    format!("/api/v1/tenants/{tenant}/projects/{project}/planets")
}

#[tokio::test]
async fn the_control_database_is_refused_even_where_loopback_is_allowed() {
    // The test configuration allows loopback, as `svalbard dev` does.
    let app = TestApp::spawn().await;
    let t = app.tenant("acme").await;
    let planets = planets_path(&app, &t).await;
    let admin = app.token(&t, Role::Admin);
    let (host, port, db) = control(&app);
    let own = "that is Svalbard's own control database";
    refused(&app.post(&planets, &admin, planet("ctl", &host, port, &db)).await, own);
    // Under another name for the same server.
    refused(
        &app.post(&planets, &admin, planet("ctl", "localhost", port, &db)).await,
        own,
    );
    refused(
        &app.post(&planets, &admin, planet("ctl", "::ffff:127.0.0.1", port, &db))
            .await,
        own,
    );
    // Nothing was stored.
    assert!(
        app.get(&planets, &admin).await.json()["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Another database of that server is a loopback target like any other here, but a PATCH
    // cannot turn it into the control database.
    let r = app.post(&planets, &admin, planet("app", &host, port, "app")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let path = format!("{planets}/{}", r.json()["id"].as_str().unwrap());
    refused(
        &app.patch(&path, &admin, json!({ "connection": { "database": db } }))
            .await,
        own,
    );
    assert_eq!(app.get(&path, &admin).await.json()["connection"]["database"], "app");

    // A platform administrator's per-tenant allow does not re-admit it either.
    let r = app
        .patch(
            &format!("/api/v1/tenants/{t}"),
            &app.platform(),
            json!({ "targetPolicy": { "allow": ["0.0.0.0/0", "::/0"] } }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    refused(&app.post(&planets, &admin, planet("ctl", &host, port, &db)).await, own);
}

#[tokio::test]
async fn the_default_policy_refuses_the_platforms_own_addresses() {
    let app = TestApp::spawn_with(json!({ "targets": { "allow": [] } })).await;
    let t = app.tenant("acme").await;
    let planets = planets_path(&app, &t).await;
    let admin = app.token(&t, Role::Admin);
    let cases = [
        (
            "127.0.0.1",
            "host 127.0.0.1 is refused: loopback addresses are not allowed (targets.allow)",
        ),
        (
            "::1",
            "host ::1 is refused: loopback addresses are not allowed (targets.allow)",
        ),
        (
            "localhost",
            "host localhost is refused: it resolves to 127.0.0.1, and loopback addresses are not allowed (targets.allow)",
        ),
        (
            "169.254.169.254",
            "host 169.254.169.254 is refused: cloud metadata addresses are not allowed (targets.allow)",
        ),
        (
            "metadata.google.internal",
            "host metadata.google.internal is refused: cloud metadata addresses are not allowed (targets.allow)",
        ),
        ("169.254.10.1", "link-local addresses are not allowed"),
        // Other spellings of loopback: refused whatever the resolver makes of them.
        ("2130706433", "host 2130706433 is refused"),
        ("0x7f.0.0.1", "host 0x7f.0.0.1 is refused"),
        ("0177.0.0.1", "host 0177.0.0.1 is refused"),
        ("[::1]", "host [::1] is refused: loopback addresses are not allowed"),
        ("0.0.0.0", "unspecified addresses are not allowed"),
        (
            "/var/run/postgresql",
            "host /var/run/postgresql is refused: Unix socket paths are not allowed",
        ),
    ];
    for (host, expected) in cases {
        let r = app.post(&planets, &admin, planet("p", host, 5432, "app")).await;
        // `localhost` may resolve to ::1 first; the rule is the same.
        let expected = if host == "localhost" && r.text.contains("resolves to ::1") {
            "loopback addresses are not allowed (targets.allow)"
        } else {
            expected
        };
        refused(&r, expected);
    }
    // The control database's server (any of its databases) is refused by default too.
    let (host, port, _) = control(&app);
    refused(
        &app.post(&planets, &admin, planet("p", &host, port, "app")).await,
        "refused",
    );

    // A planet on a public address is fine; a PATCH cannot move it onto loopback.
    let r = app
        .post(&planets, &admin, planet("public", "203.0.113.10", 5432, "app"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let path = format!("{planets}/{}", r.json()["id"].as_str().unwrap());
    refused(
        &app.patch(&path, &admin, json!({ "connection": { "host": "127.0.0.1" } }))
            .await,
        "host 127.0.0.1 is refused: loopback addresses are not allowed (targets.allow)",
    );
    refused(
        &app.patch(
            &path,
            &admin,
            json!({ "connection": { "host": "169.254.169.254", "port": 80 } }),
        )
        .await,
        "cloud metadata addresses are not allowed",
    );
    let now = app.get(&path, &admin).await.json();
    assert_eq!(now["connection"]["host"], "203.0.113.10");
    assert_eq!(now["connection"]["passwordSet"], true);
}

#[tokio::test]
async fn platform_deny_lists_refuse_more() {
    let app =
        TestApp::spawn_with(json!({ "targets": { "allow": [], "deny": ["203.0.113.0/24", "*.corp.example"] } })).await;
    let t = app.tenant("acme").await;
    let planets = planets_path(&app, &t).await;
    let admin = app.token(&t, Role::Admin);
    refused(
        &app.post(&planets, &admin, planet("p", "203.0.113.7", 5432, "app"))
            .await,
        "host 203.0.113.7 is refused: 203.0.113.0/24 is listed in targets.deny",
    );
    refused(
        &app.post(&planets, &admin, planet("p", "db.corp.example", 5432, "app"))
            .await,
        "host db.corp.example is refused: *.corp.example is listed in targets.deny",
    );
    let r = app
        .post(&planets, &admin, planet("p", "198.51.100.7", 5432, "app"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn only_platform_administrators_set_a_tenants_target_policy() {
    let app = TestApp::spawn_with(json!({ "targets": { "allow": [] } })).await;
    let a = app.tenant("alpha").await;
    let b = app.tenant("beta").await;
    let a_planets = planets_path(&app, &a).await;
    let b_planets = planets_path(&app, &b).await;
    let a_admin = app.token(&a, Role::Admin);
    let loopback = json!({ "targetPolicy": { "allow": ["127.0.0.1"] } });

    // The tenant's own admin may not widen its policy, on the tenant or when creating one.
    app.patch(&format!("/api/v1/tenants/{a}"), &a_admin, loopback.clone())
        .await
        .problem(403);
    app.post(
        "/api/v1/tenants",
        &a_admin,
        json!({ "name": "mine", "targetPolicy": { "allow": ["127.0.0.1"] } }),
    )
    .await
    .problem(403);
    let tenant = app.get(&format!("/api/v1/tenants/{a}"), &a_admin).await.json();
    assert!(tenant["targetPolicy"].is_null(), "{tenant}");
    refused(
        &app.post(&a_planets, &a_admin, planet("p", "127.0.0.1", 5432, "app"))
            .await,
        "loopback addresses are not allowed",
    );

    // Entries are checked.
    app.patch(
        &format!("/api/v1/tenants/{a}"),
        &app.platform(),
        json!({ "targetPolicy": { "allow": ["not a host"] } }),
    )
    .await
    .names_field("targetPolicy.allow[0]");

    // A platform administrator can.
    let r = app
        .patch(&format!("/api/v1/tenants/{a}"), &app.platform(), loopback)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["targetPolicy"]["allow"], json!(["127.0.0.1"]));
    let r = app
        .post(&a_planets, &a_admin, planet("p", "127.0.0.1", 5432, "app"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Another tenant keeps the platform's policy; the tenant's own refusals name its policy.
    refused(
        &app.post(
            &b_planets,
            &app.token(&b, Role::Admin),
            planet("p", "127.0.0.1", 5432, "app"),
        )
        .await,
        "(targets.allow)",
    );
    refused(
        &app.post(&a_planets, &a_admin, planet("q", "127.0.0.2", 5432, "app"))
            .await,
        "host 127.0.0.2 is refused: loopback addresses are not allowed (the tenant's targetPolicy.allow)",
    );

    // A tenant created with a policy has it from the start; `null` returns to the platform's.
    let r = app
        .post(
            "/api/v1/tenants",
            &app.platform(),
            json!({ "name": "gamma", "targetPolicy": { "deny": ["198.51.100.0/24"] } }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let g = r.json()["id"].as_str().unwrap().to_owned();
    let g_planets = planets_path(&app, &g).await;
    refused(
        &app.post(&g_planets, &app.platform(), planet("p", "198.51.100.1", 5432, "app"))
            .await,
        "host 198.51.100.1 is refused: 198.51.100.0/24 is listed in the tenant's targetPolicy.deny",
    );
    let r = app
        .patch(
            &format!("/api/v1/tenants/{g}"),
            &app.platform(),
            json!({ "targetPolicy": null }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["targetPolicy"].is_null());
    let r = app
        .post(&g_planets, &app.platform(), planet("p", "198.51.100.1", 5432, "app"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn the_platforms_deny_list_still_refuses_a_tenant_with_its_own_policy() {
    let app =
        TestApp::spawn_with(json!({ "targets": { "allow": [], "deny": ["198.51.100.0/24", "*.platform.example"] } }))
            .await;
    let t = app.tenant("acme").await;
    let planets = planets_path(&app, &t).await;
    let admin = app.token(&t, Role::Admin);
    // The tenant's override allows everything and denies something else of its own.
    let r = app
        .patch(
            &format!("/api/v1/tenants/{t}"),
            &app.platform(),
            json!({ "targetPolicy": { "allow": ["0.0.0.0/0", "::/0", "db.platform.example"], "deny": ["192.0.2.0/24"] } }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    refused(
        &app.post(&planets, &admin, planet("p", "198.51.100.7", 5432, "app"))
            .await,
        "host 198.51.100.7 is refused: 198.51.100.0/24 is listed in targets.deny",
    );
    refused(
        &app.post(&planets, &admin, planet("p", "db.platform.example", 5432, "app"))
            .await,
        "host db.platform.example is refused: *.platform.example is listed in targets.deny",
    );
    refused(
        &app.post(&planets, &admin, planet("p", "192.0.2.7", 5432, "app")).await,
        "host 192.0.2.7 is refused: 192.0.2.0/24 is listed in the tenant's targetPolicy.deny",
    );
    // What the override re-admits outside the platform's deny is accepted.
    let r = app
        .post(&planets, &admin, planet("p", "203.0.113.7", 5432, "app"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn an_allowed_name_does_not_re_admit_the_loopback_it_resolves_to() {
    let app = TestApp::spawn_with(json!({ "targets": { "allow": [] } })).await;
    let t = app.tenant("acme").await;
    let planets = planets_path(&app, &t).await;
    let admin = app.token(&t, Role::Admin);
    // Whoever runs a name's DNS chooses its addresses: allowing `localhost` by name (as a
    // platform admin might allow `*.acme.com`) must not reach this machine.
    let set = |allow: Value| {
        let app = &app;
        let path = format!("/api/v1/tenants/{t}");
        async move {
            let r = app
                .patch(&path, &app.platform(), json!({ "targetPolicy": { "allow": allow } }))
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
    };
    set(json!(["localhost"])).await;
    refused(
        &app.post(&planets, &admin, planet("p", "localhost", 5432, "app")).await,
        "loopback addresses are not allowed (the tenant's targetPolicy.allow)",
    );
    // The platform's allow by name is no different.
    let platform = TestApp::spawn_with(json!({ "targets": { "allow": ["localhost"] } })).await;
    let pt = platform.tenant("acme").await;
    let p_planets = planets_path(&platform, &pt).await;
    refused(
        &platform
            .post(
                &p_planets,
                &platform.token(&pt, Role::Admin),
                planet("p", "localhost", 5432, "app"),
            )
            .await,
        "loopback addresses are not allowed (targets.allow)",
    );
    // A network re-admits it.
    set(json!(["localhost", "127.0.0.0/8", "::1"])).await;
    let r = app.post(&planets, &admin, planet("p", "localhost", 5432, "app")).await;
    assert_eq!(r.status, 201, "{}", r.text);
}
