use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use svalbard_testkit::app::TestApp;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(overrides: Value) -> Value {
    let mut c =
        json!({ "sub": "t", "tenant": "*", "role": "admin", "iss": "svalbard", "aud": "svalbard", "exp": now() + 600 });
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn hs256(secret: &str, c: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        c,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn signed(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, c: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, c, key).unwrap()
}

async fn assert_401(app: &TestApp, auth: Option<&str>) {
    let mut req = app.client.get(format!("{}/api/v1/tenants", app.base));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 401, "{auth:?}");
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn every_bad_token_is_401_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    let secret = svalbard_testkit::HS256_SECRET;
    let good = hs256(secret, &claims(json!({})));
    let ok = app
        .client
        .get(format!("{}/api/v1/tenants", app.base))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
    );
    let cases = vec![
        None,
        Some("Basic dXNlcjpwYXNz".to_owned()),
        Some("Bearer".to_owned()),
        Some("Bearer not-a-jwt".to_owned()),
        Some(format!("Bearer {unsigned}")),
        Some(format!(
            "Bearer {}",
            hs256("another-secret-another-secret-0123456789", &claims(json!({})))
        )),
        Some(format!(
            "Bearer {}",
            hs256(secret, &claims(json!({ "exp": now() - 3600 })))
        )),
        Some(format!(
            "Bearer {}",
            hs256(secret, &claims(json!({ "nbf": now() + 3600 })))
        )),
        Some(format!(
            "Bearer {}",
            hs256(secret, &claims(json!({ "aud": "someone-else" })))
        )),
        Some(format!(
            "Bearer {}",
            hs256(secret, &claims(json!({ "iss": "someone-else" })))
        )),
        Some(format!("Bearer {}", hs256(secret, &claims(json!({ "exp": null }))))),
        Some(format!("Bearer {}", hs256(secret, &claims(json!({ "role": "root" }))))),
        Some(format!(
            "Bearer {}",
            hs256(secret, &claims(json!({ "tenant": "not-a-uuid" })))
        )),
        // Tampered payload: the signature no longer matches.
        Some(format!("Bearer {}", {
            let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
            parts[1] = URL_SAFE_NO_PAD.encode(claims(json!({ "role": "admin", "sub": "evil" })).to_string());
            parts.join(".")
        })),
    ];
    for case in cases {
        assert_401(&app, case.as_deref()).await;
    }
}

#[tokio::test]
async fn rs256_keys_rotate_by_kid_and_other_algorithms_are_refused() {
    let (pool, url) = svalbard_testkit::fresh_pool().await.unwrap();
    let config = svalbard_testkit::config(
        &url,
        json!({ "auth": { "algorithm": "RS256", "public_keys": [
            { "kid": "old", "pem": fixture("rsa1.pub") },
            { "kid": "new", "pem": fixture("rsa2.pub") },
        ] } }),
    )
    .unwrap();
    let app = TestApp::spawn_on(config, pool);
    let k1 = EncodingKey::from_rsa_pem(fixture("rsa1.key").as_bytes()).unwrap();
    let k2 = EncodingKey::from_rsa_pem(fixture("rsa2.key").as_bytes()).unwrap();
    let c = claims(json!({}));
    for token in [
        signed(Algorithm::RS256, Some("old"), &k1, &c),
        signed(Algorithm::RS256, Some("new"), &k2, &c),
    ] {
        let r = app
            .client
            .get(format!("{}/api/v1/tenants", app.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Right key, wrong kid; unknown kid; no kid; HS256 (even "signed" with the public key).
    for bad in [
        signed(Algorithm::RS256, Some("new"), &k1, &c),
        signed(Algorithm::RS256, Some("gone"), &k1, &c),
        signed(Algorithm::RS256, None, &k1, &c),
        hs256(&fixture("rsa1.pub"), &c),
        hs256(svalbard_testkit::HS256_SECRET, &c),
    ] {
        assert_401(&app, Some(&format!("Bearer {bad}"))).await;
    }
}

#[tokio::test]
async fn eddsa_tokens_verify() {
    let (pool, url) = svalbard_testkit::fresh_pool().await.unwrap();
    let config = svalbard_testkit::config(
        &url,
        json!({ "auth": { "algorithm": "EdDSA", "public_keys": [{ "kid": "ed", "pem": fixture("ed1.pub") }] } }),
    )
    .unwrap();
    let app = TestApp::spawn_on(config, pool);
    let key = EncodingKey::from_ed_pem(fixture("ed1.key").as_bytes()).unwrap();
    let token = signed(Algorithm::EdDSA, Some("ed"), &key, &claims(json!({})));
    let r = app
        .client
        .get(format!("{}/api/v1/tenants", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_401(
        &app,
        Some(&format!(
            "Bearer {}",
            hs256(svalbard_testkit::HS256_SECRET, &claims(json!({})))
        )),
    )
    .await;
}
