//! A planet's password never follows it to another server or account, idempotency records keep
//! only keyed fingerprints and are forgotten after a day, and storage problems name no
//! endpoint or bucket.

use serde_json::json;
use svalbard_core::auth::Role;
use svalbard_core::crypto::KeyRing;
use svalbard_core::repo::idempotency;
use svalbard_testkit::app::TestApp;

#[tokio::test]
async fn changing_where_a_planet_points_without_a_password_removes_the_password() {
    let app = TestApp::spawn().await;
    let t = app.tenant("acme").await;
    let p = app.project(&t, "shop").await;
    let x = app.planet(&t, &p, "orders").await;
    let path = format!("/api/v1/tenants/{t}/projects/{p}/planets/{x}");
    let admin = app.token(&t, Role::Admin);
    let password_set = |r: &svalbard_testkit::app::Resp| {
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["connection"]["passwordSet"].as_bool().unwrap()
    };
    // Changes that do not move the planet keep it, and so does restating the same host.
    assert!(password_set(
        &app.patch(&path, &admin, json!({ "labels": { "a": "b" } })).await
    ));
    assert!(password_set(
        &app.patch(&path, &admin, json!({ "connection": { "sslmode": "require" } }))
            .await
    ));
    assert!(password_set(
        &app.patch(&path, &admin, json!({ "connection": { "host": "127.0.0.1" } }))
            .await
    ));
    // Each of host, port, user and database without a new password removes it.
    for change in [
        json!({ "host": "127.0.0.2" }),
        json!({ "port": 5433 }),
        json!({ "user": "someone-else" }),
        json!({ "database": "other" }),
    ] {
        assert!(password_set(
            &app.patch(&path, &admin, json!({ "connection": { "password": "pw-2" } }))
                .await
        ));
        assert!(
            !password_set(&app.patch(&path, &admin, json!({ "connection": change.clone() })).await),
            "{change} kept the password"
        );
        let sealed: Option<Vec<u8>> = sqlx::query_scalar("SELECT password_sealed FROM planets WHERE id = $1::uuid")
            .bind(&x)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert!(sealed.is_none(), "{change} left the sealed password in the database");
    }
    // With a new password the change keeps that one.
    assert!(password_set(
        &app.patch(
            &path,
            &admin,
            json!({ "connection": { "host": "127.0.0.3", "password": "pw-3" } })
        )
        .await
    ));
}

async fn post_tenant(app: &TestApp, key: &str, name: &str) -> svalbard_testkit::app::Resp {
    let res = app
        .client
        .post(format!("{}/api/v1/tenants", app.base))
        .bearer_auth(app.platform())
        .header("Idempotency-Key", key)
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    svalbard_testkit::app::Resp {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        text: res.text().await.unwrap(),
    }
}

#[tokio::test]
async fn idempotency_fingerprints_are_keyed_macs() {
    let app = TestApp::spawn().await;
    let r = post_tenant(&app, "fp-1", "idem").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let stored: String = sqlx::query_scalar("SELECT request_hash FROM idempotency_keys WHERE key = 'fp-1'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // The request as the API serialises it, under the key derived from the key ring.
    let body = br#"{"name":"idem","displayName":null,"limits":null,"targetPolicy":null}"#;
    let key = KeyRing::parse(&svalbard_testkit::secret(svalbard_testkit::SEAL_KEYS))
        .unwrap()
        .derive_key("idempotency fingerprints");
    let expected = idempotency::fingerprint(&key, &[b"*:test", b"POST /api/v1/tenants", body]);
    assert_eq!(stored, expected);
    // Without the key the fingerprint cannot be recomputed (or guessed from the body).
    let other = KeyRing::parse(&svalbard_testkit::secret(
        "t2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
    ))
    .unwrap()
    .derive_key("idempotency fingerprints");
    assert_ne!(
        stored,
        idempotency::fingerprint(&other, &[b"*:test", b"POST /api/v1/tenants", body])
    );
    use sha2::Digest as _;
    let mut plain = sha2::Sha256::new();
    plain.update(b"POST /api/v1/tenants\0");
    plain.update(body);
    assert_ne!(stored, hex::encode(plain.finalize()));
}

#[tokio::test]
async fn idempotency_records_expire_after_a_day() {
    let app = TestApp::spawn().await;
    let first = post_tenant(&app, "day-1", "first").await;
    assert_eq!(first.status, 201, "{}", first.text);
    let replay = post_tenant(&app, "day-1", "first").await;
    assert_eq!(replay.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(replay.json()["id"], first.json()["id"]);
    post_tenant(&app, "day-1", "second").await.problem(422);

    // A day later the key is forgotten: the same key runs a request anew.
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'day-1'")
        .execute(&app.pool)
        .await
        .unwrap();
    let again = post_tenant(&app, "day-1", "second").await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert!(again.header("idempotent-replayed").is_none());
    assert_ne!(again.json()["id"], first.json()["id"]);
    // An expired record of the first body no longer replays it either.
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'day-1'")
        .execute(&app.pool)
        .await
        .unwrap();
    post_tenant(&app, "day-1", "first").await.problem(409);

    // Expired records of other callers are pruned as keys are reserved.
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash, status, created_at)
         SELECT 'someone', 'old-' || n, 'x', 201, now() - interval '2 days' FROM generate_series(1, 5) n",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(post_tenant(&app, "day-2", "third").await.status, 201);
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE created_at < now() - interval '24 hours'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn storage_problems_name_no_endpoint_or_bucket() {
    let app = TestApp::spawn_with(json!({ "s3": {
        "endpoint": "http://127.0.0.1:1",
        "bucket": "hidden-bucket-name",
        "access_key_id": "AKIDHIDDEN",
        "secret_access_key": "hidden-secret",
    } }))
    .await;
    let t = app.tenant("acme").await;
    let p = app.project(&t, "shop").await;
    let x = app.planet(&t, &p, "orders").await;
    let form = reqwest::multipart::Form::new().part(
        "archive",
        reqwest::multipart::Part::bytes(b"CREATE TABLE t (id int);\n".to_vec()).file_name("dump.sql"),
    );
    let res = app
        .client
        .post(format!(
            "{}/api/v1/tenants/{t}/projects/{p}/planets/{x}/restores",
            app.base
        ))
        .bearer_auth(app.token(&t, Role::Operator))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let r = svalbard_testkit::app::Resp {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        text: res.text().await.unwrap(),
    };
    r.problem(502);
    for secret in ["127.0.0.1", "hidden-bucket-name", "AKIDHIDDEN", "tenants/", "http://"] {
        assert!(!r.text.contains(secret), "the problem names `{secret}`: {}", r.text);
    }
}
