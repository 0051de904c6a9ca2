//! The committed OpenAPI document must be the one the code generates, and within `/api/v1` it
//! may only grow relative to the released snapshot.

use serde_json::Value;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/openapi.json");
const RELEASED_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/released/v1.json");

fn read(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

#[test]
fn committed_openapi_document_is_current() {
    let generated = svalbard_api::openapi::document_json();
    // Read before any rewrite: the comparison is always the file as committed against the code.
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    if committed != generated && std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).unwrap();
        panic!("openapi/openapi.json was stale and has been rewritten: review and commit it");
    }
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: regenerate it with `cargo run -q -p svalbard -- openapi > openapi/openapi.json` \
         (or UPDATE_OPENAPI=1 cargo test -p svalbard-api committed_openapi)"
    );
}

#[tokio::test]
async fn served_document_is_the_committed_one() {
    let app = svalbard_testkit::app::TestApp::spawn().await;
    let served: Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        served == read(COMMITTED),
        "/openapi.json differs from openapi/openapi.json"
    );
}

#[tokio::test]
async fn served_document_is_openapi_3_1_with_bearer_security() {
    let app = svalbard_testkit::app::TestApp::spawn().await;
    let doc: serde_json::Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/v1/tenants/{tenantId}/projects/{projectId}/planets/{planetId}"));
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("400"), "{method} {path} documents no 400");
            if path.starts_with("/api/") {
                for code in ["401", "403", "404", "503"] {
                    assert!(responses.contains_key(code), "{method} {path} documents no {code}");
                }
            }
            for (code, response) in responses {
                if code == "201" || code == "302" {
                    assert!(
                        response["headers"]["Location"].is_object(),
                        "{method} {path} {code}: Location"
                    );
                }
                if code == "429" || code == "503" {
                    assert!(
                        response["headers"]["Retry-After"].is_object(),
                        "{method} {path} {code}: Retry-After"
                    );
                }
            }
        }
    }
}

/// String enums are spelled as the wire spells them: the server's lowercase words, or the
/// upper-case states of the Camunda-style profile, never a Rust variant name (`Succeeded`).
#[test]
fn enums_are_documented_with_their_wire_spelling() {
    let doc = read(COMMITTED);
    let status = &doc["components"]["schemas"]["BackupStatus"]["enum"];
    assert!(status.as_array().unwrap().contains(&"succeeded".into()), "{status}");
    let mut enums = 0;
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        for v in schema["enum"].as_array().into_iter().flatten() {
            let v = v.as_str().unwrap();
            assert!(
                !(v.starts_with(|c: char| c.is_ascii_uppercase()) && v.chars().any(|c| c.is_ascii_lowercase())),
                "{name}: `{v}` is a Rust variant name, not the wire's"
            );
            enums += 1;
        }
    }
    assert!(enums > 20, "only {enums} enum values");
}

/// Whatever a released document had, the current one must still have.
fn compare(at: &str, old: &Value, new: &Value, errors: &mut Vec<String>) {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return;
    };
    if let (Some(r), Some(n_ref)) = (o.get("$ref"), n.get("$ref"))
        && r != n_ref
    {
        errors.push(format!("{at}: now refers to {n_ref} instead of {r}"));
    }
    if let Some(t) = o.get("type")
        && n.get("type").is_some_and(|nt| nt != t)
        && !(t.is_string() && n["type"].as_array().is_some_and(|a| a.contains(t)))
    {
        errors.push(format!("{at}: type changed from {t} to {}", n["type"]));
    }
    for v in o.get("enum").and_then(Value::as_array).into_iter().flatten() {
        if !n.get("enum").and_then(Value::as_array).is_some_and(|a| a.contains(v)) {
            errors.push(format!("{at}: enum value {v} was removed"));
        }
    }
    for (name, schema) in o.get("properties").and_then(Value::as_object).into_iter().flatten() {
        match n.get("properties").and_then(|p| p.get(name)) {
            Some(now) => compare(&format!("{at}.{name}"), schema, now, errors),
            None => errors.push(format!("{at}: field `{name}` was removed")),
        }
    }
    for key in ["items", "additionalProperties"] {
        if let (Some(a), Some(b)) = (o.get(key), n.get(key)) {
            compare(&format!("{at}[{key}]"), a, b, errors);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let (Some(a), Some(b)) = (
            o.get(key).and_then(Value::as_array),
            n.get(key).and_then(Value::as_array),
        ) {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                compare(&format!("{at}/{key}/{i}"), x, y, errors);
            }
        }
    }
}

/// Everything of `released` that a client may rely on, missing or narrowed in `current`.
fn breaking_changes(released: &Value, current: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    for (path, item) in released["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let label = format!("{} {path}", method.to_uppercase());
            let Some(now) = current["paths"].get(path).and_then(|i| i.get(method)) else {
                errors.push(format!("{label}: the operation was removed"));
                continue;
            };
            for code in op["responses"].as_object().into_iter().flat_map(|r| r.keys()) {
                if now["responses"].get(code).is_none() {
                    errors.push(format!("{label}: status {code} was removed"));
                }
            }
            let params = |op: &Value| -> Vec<(String, String, bool)> {
                op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        (
                            p["in"].as_str().unwrap_or_default().to_owned(),
                            p["name"].as_str().unwrap_or_default().to_owned(),
                            p["required"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect()
            };
            let before = params(op);
            for (loc, name, _) in &before {
                if !params(now).iter().any(|(l, n, _)| l == loc && n == name) {
                    errors.push(format!("{label}: {loc} parameter {name} was removed"));
                }
            }
            for (loc, name, required) in params(now) {
                let was = before.iter().find(|(l, n, _)| *l == loc && *n == name);
                if required && was.is_none_or(|(_, _, r)| !r) {
                    errors.push(format!("{label}: {loc} parameter {name} became required"));
                }
            }
        }
    }
    let schemas = |d: &Value| d["components"]["schemas"].clone();
    let (old, new) = (schemas(released), schemas(current));
    for (name, schema) in old.as_object().into_iter().flatten() {
        match new.get(name) {
            Some(now) => compare(name, schema, now, &mut errors),
            None => errors.push(format!("schema {name} was removed")),
        }
    }
    errors
}

#[test]
fn nothing_released_in_v1_disappears() {
    let released = read(RELEASED_V1);
    let current = read(COMMITTED);
    let errors = breaking_changes(&released, &current);
    assert!(
        errors.is_empty(),
        "/api/v1 only grows (see README, API versioning); breaking changes against openapi/released/v1.json:\n  {}",
        errors.join("\n  ")
    );
}

/// The check itself catches each kind of removal.
#[test]
fn the_release_check_sees_removals() {
    let released = read(RELEASED_V1);
    assert!(breaking_changes(&released, &released).is_empty());
    let mut doc = released.clone();
    let paths = doc["paths"].as_object_mut().unwrap();
    let first = paths.keys().next().unwrap().clone();
    paths.remove(&first);
    let schemas = doc["components"]["schemas"].as_object_mut().unwrap();
    schemas["BackupStatus"]["enum"].as_array_mut().unwrap().pop();
    schemas["Backup"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("checksum");
    let errors = breaking_changes(&released, &doc).join("\n");
    assert!(errors.contains("the operation was removed"), "{errors}");
    assert!(errors.contains("enum value \"deleted\" was removed"), "{errors}");
    assert!(errors.contains("field `checksum` was removed"), "{errors}");
    let mut doc = released.clone();
    let op = doc["paths"]["/api/v1/tenants"]["post"]["responses"]
        .as_object_mut()
        .unwrap();
    op.remove("409");
    let errors = breaking_changes(&released, &doc).join("\n");
    assert!(errors.contains("status 409 was removed"), "{errors}");
}
