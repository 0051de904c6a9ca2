//! The committed OpenAPI document must match what the code generates.

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/openapi.json");

#[test]
fn committed_openapi_document_is_current() {
    let generated = svalbard_api::openapi::document_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: regenerate it with `cargo run -p svalbard -- openapi > openapi/openapi.json` \
         (or UPDATE_OPENAPI=1 cargo test -p svalbard-api committed_openapi)"
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
            if !path.ends_with("z") && path != "/metrics" {
                assert!(
                    responses.contains_key("401") && responses.contains_key("404"),
                    "{method} {path}"
                );
            }
        }
    }
}
