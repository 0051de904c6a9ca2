//! Every answer of the real server, against the committed OpenAPI document: its status must be
//! listed for the operation, its content type must be the listed one, its body must validate
//! against the listed schema (`$ref`s into the components resolved, formats checked), and the
//! headers the document promises must be there. Every operation of the document is called.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use svalbard_core::auth::Role;
use svalbard_testkit::app::{Resp, TestApp};
use tokio_util::sync::CancellationToken;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/openapi.json");
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

pub struct Contract {
    doc: Value,
    /// Statuses seen per `METHOD template`.
    seen: Mutex<BTreeMap<String, BTreeSet<u16>>>,
}

impl Contract {
    pub fn committed() -> Self {
        let doc = serde_json::from_str(&std::fs::read_to_string(COMMITTED).unwrap()).unwrap();
        Self {
            doc,
            seen: Mutex::default(),
        }
    }

    /// `METHOD template` of every operation in the document.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for m in METHODS {
                if item.get(m).is_some() {
                    out.push((m.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    fn template_of(&self, path: &str) -> String {
        let path = path.split('?').next().unwrap();
        let parts: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .find(|t| {
                let segs: Vec<&str> = t.split('/').collect();
                segs.len() == parts.len() && segs.iter().zip(&parts).all(|(s, p)| s.starts_with('{') || s == p)
            })
            .unwrap_or_else(|| panic!("{path} matches no path of the document"))
            .clone()
    }

    /// A `$ref` into the document, followed.
    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => self
                .doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling $ref {r}")),
            None => v,
        }
    }

    /// Validates `instance` against `schema`, whose `$ref`s point into this document.
    pub fn validate(&self, schema: &Value, instance: &Value) -> Result<(), String> {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| format!("the document's schema does not compile: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Checks one real answer against the operation's documented responses.
    #[track_caller]
    pub fn check(&self, method: &Method, path: &str, r: &Resp) {
        let template = self.template_of(path);
        let label = format!("{method} {template}");
        let op = &self.doc["paths"][&template][method.as_str().to_lowercase()];
        assert!(op.is_object(), "{label} is not in the document (answered {})", r.status);
        let status = r.status.to_string();
        let Some(response) = op["responses"].get(&status).or_else(|| op["responses"].get("default")) else {
            panic!(
                "{method} {path} answered {status}, which the document does not list for {label}; body: {}",
                r.text
            );
        };
        let response = self.resolve(response);
        let content = response["content"].as_object();
        match content.filter(|c| !c.is_empty()) {
            None => assert!(
                r.text.is_empty(),
                "{label} {status}: the document lists no body, the server sent {}",
                r.text
            ),
            Some(content) => {
                let media = r
                    .header("content-type")
                    .unwrap_or_else(|| panic!("{label} {status}: no content type; body: {}", r.text));
                let media = media.split(';').next().unwrap().trim().to_ascii_lowercase();
                let Some(listed) = content.get(&media) else {
                    panic!(
                        "{label} {status}: content type {media} is not one of {:?}",
                        content.keys().collect::<Vec<_>>()
                    );
                };
                if media == "application/json" || media.ends_with("+json") {
                    let body: Value = serde_json::from_str(&r.text)
                        .unwrap_or_else(|e| panic!("{label} {status}: not JSON ({e}): {}", r.text));
                    if let Some(schema) = listed.get("schema")
                        && let Err(e) = self.validate(schema, &body)
                    {
                        panic!("{label} {status}: the body does not match the document: {e}\nbody: {body:#}");
                    }
                }
            }
        }
        for header in response["headers"].as_object().into_iter().flat_map(|h| h.keys()) {
            // Headers the server always sends with these answers.
            if matches!(header.as_str(), "Location" | "Retry-After" | "WWW-Authenticate") {
                assert!(
                    r.header(header).is_some(),
                    "{label} {status}: the documented {header} header is missing"
                );
            }
        }
        self.seen.lock().unwrap().entry(label).or_default().insert(r.status);
    }

    fn seen(&self) -> BTreeMap<String, BTreeSet<u16>> {
        self.seen.lock().unwrap().clone()
    }
}

/// The application and a worker, with a tenant, project and planet on a real database.
struct World {
    app: TestApp,
    contract: Contract,
    admin: String,
    viewer: String,
    tenant: String,
    project: String,
    planet: String,
    database: String,
    stop: CancellationToken,
}

impl World {
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let r = self.app.send(method.clone(), path, token, body).await;
        self.contract.check(&method, path, &r);
        r
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Resp {
        let req = self
            .app
            .client
            .request(method.clone(), format!("{}{path}", self.app.base));
        let res = build(req).send().await.unwrap();
        let r = Resp {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            text: res.text().await.unwrap(),
        };
        self.contract.check(&method, path, &r);
        r
    }

    fn project_path(&self) -> String {
        format!("/api/v1/tenants/{}/projects/{}", self.tenant, self.project)
    }

    fn planet_path(&self) -> String {
        format!("{}/planets/{}", self.project_path(), self.planet)
    }

    async fn wait(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let r = self.call(Method::GET, path, Some(&self.admin), None).await;
            let v = r.json();
            if done(&v) {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "{path} did not finish: {v}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn finished(v: &Value) -> bool {
    !matches!(v["status"].as_str(), Some("scheduled" | "running"))
}

/// Fills a path template with the given ids (by parameter name).
fn fill(template: &str, ids: &BTreeMap<&str, String>) -> String {
    template
        .split('/')
        .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => ids
                .get(name)
                .cloned()
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            None => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn method_of(m: &str) -> Method {
    Method::from_bytes(m.as_bytes()).unwrap()
}

#[tokio::test]
async fn every_answer_of_every_operation_matches_the_committed_document() {
    svalbard_testkit::require_s3();
    let app = TestApp::spawn_with(json!({
        "worker": { "lease_secs": 3, "heartbeat_secs": 1, "poll_secs": 1, "backoff_base_secs": 1 },
        "limits": { "json_body_bytes": 4096 },
    }))
    .await;
    let contract = Contract::committed();
    let database = svalbard_testkit::source::create("contract", &svalbard_testkit::source::sample_schema(200))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let worker = svalbard_worker::build(&app.config, app.pool.clone()).unwrap();
    let s = stop.clone();
    tokio::spawn(async move { worker.run(s).await.unwrap() });

    let platform = app.platform();
    let r = app
        .send(
            Method::POST,
            "/api/v1/tenants",
            Some(&platform),
            Some(json!({ "name": "contract" })),
        )
        .await;
    contract.check(&Method::POST, "/api/v1/tenants", &r);
    let tenant = r.json()["id"].as_str().unwrap().to_owned();
    let admin = app.token(&tenant, Role::Admin);
    let viewer = app.token(&tenant, Role::Viewer);
    let mut w = World {
        contract,
        admin,
        viewer,
        tenant: tenant.clone(),
        project: String::new(),
        planet: String::new(),
        database: database.clone(),
        stop,
        app,
    };
    let projects = format!("/api/v1/tenants/{tenant}/projects");
    let r = w
        .call(
            Method::POST,
            &projects,
            Some(&w.admin),
            Some(json!({ "name": "shop", "description": "Shop" })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    w.project = r.json()["id"].as_str().unwrap().to_owned();
    let planets = format!("{}/planets", w.project_path());
    let r = w
        .call(
            Method::POST,
            &planets,
            Some(&w.admin),
            Some(json!({
                "name": "orders", "engine": "postgresql", "planetClass": "test", "labels": { "team": "a" },
                "connection": { "host": "127.0.0.1", "port": 5432, "database": database, "user": "postgres", "sslmode": "disable" }
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    w.planet = r.json()["id"].as_str().unwrap().to_owned();

    happy_path(&w).await;
    profiles(&w).await;
    problems(&w).await;
    sweep(&w).await;

    let seen = w.contract.seen();
    let missing: Vec<String> = w
        .contract
        .operations()
        .into_iter()
        .map(|(m, p)| format!("{m} {p}"))
        .filter(|op| !seen.contains_key(op))
        .collect();
    assert!(missing.is_empty(), "operations never called: {missing:?}");
    for (op, statuses) in &seen {
        eprintln!("{op}: {statuses:?}");
    }
    w.stop.cancel();
    let _ = svalbard_testkit::source::drop(&w.database).await;
    let _ = svalbard_testkit::source::drop(&format!("{}_copy", w.database)).await;
}

/// The walk-through: every operation answering as it does when all is well.
async fn happy_path(w: &World) {
    let admin = Some(w.admin.as_str());
    let platform = w.app.platform();
    let tenant_path = format!("/api/v1/tenants/{}", w.tenant);
    w.call(Method::GET, "/api/v1/tenants", Some(&platform), None).await;
    w.call(Method::GET, "/api/v1/tenants?limit=1", Some(&platform), None)
        .await;
    w.call(Method::GET, &tenant_path, admin, None).await;
    w.call(
        Method::PATCH,
        &tenant_path,
        Some(&platform),
        Some(json!({ "displayName": "Contract", "limits": { "backups": 100 } })),
    )
    .await;
    w.call(Method::GET, &format!("{tenant_path}/projects"), admin, None)
        .await;
    w.call(Method::GET, &w.project_path(), admin, None).await;
    let planets = format!("{}/planets", w.project_path());
    w.call(Method::GET, &planets, admin, None).await;
    w.call(Method::GET, &w.planet_path(), admin, None).await;
    let r = w
        .call(
            Method::PATCH,
            &w.planet_path(),
            admin,
            Some(json!({ "labels": { "team": "b" }, "connection": { "sslmode": "disable" } })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // A webhook endpoint that hears of the backup below (no one listens there: its delivery
    // stays pending with a failed attempt or none yet).
    let webhooks = format!("{tenant_path}/webhooks");
    let r = w
        .call(
            Method::POST,
            &webhooks,
            admin,
            Some(json!({ "url": "http://127.0.0.1:9/hooks", "eventTypes": ["backup.succeeded", "backup.failed"] })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let webhook_path = format!("{webhooks}/{}", r.json()["id"].as_str().unwrap());
    w.call(Method::GET, &webhooks, admin, None).await;
    w.call(Method::GET, &webhook_path, admin, None).await;

    // The create-backup example of the document, as sent.
    let backups = format!("{}/backups", w.planet_path());
    let r = w
        .call(
            Method::POST,
            &backups,
            admin,
            Some(json!({
                "mechanism": "logical", "planetClass": "dev", "temporary": true, "retentionPeriodInDays": 10,
                "metadata": { "name": "sample backup", "description": "This is a sample backup." }
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let backup = r.json()["id"].as_str().unwrap().to_owned();
    let backup_path = format!("{}/backups/{backup}", w.project_path());
    let b = w.wait(&backup_path, finished).await;
    assert_eq!(b["status"], "succeeded", "{b}");
    let r = w
        .call(Method::GET, &format!("{webhook_path}/deliveries?limit=5"), admin, None)
        .await;
    assert_eq!(r.json()["items"][0]["eventType"], "backup.succeeded", "{}", r.text);
    w.call(
        Method::GET,
        &format!("{webhook_path}/deliveries?status=pending"),
        admin,
        None,
    )
    .await;
    let r = w.call(Method::DELETE, &webhook_path, admin, None).await;
    assert_eq!(r.status, 204, "{}", r.text);

    // The tenant's archive keys: the backup above made version 1; a rotation re-wraps its key.
    let keys = format!("{tenant_path}/keys");
    let r = w.call(Method::GET, &keys, admin, None).await;
    assert_eq!(r.json()["items"][0]["version"], 1, "{}", r.text);
    let r = w.call(Method::GET, &format!("{keys}/export"), admin, None).await;
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert!(r.json()["identityFile"].as_str().unwrap().contains("AGE-SECRET-KEY-1"));
    let r = w.call(Method::POST, &format!("{keys}/rotate"), admin, None).await;
    assert_eq!(r.json()["key"]["version"], 2, "{}", r.text);
    assert_eq!(r.json()["rewrappedBackups"], 1, "{}", r.text);
    w.call(Method::GET, &format!("{backups}?status=succeeded&limit=5"), admin, None)
        .await;
    w.call(
        Method::GET,
        &format!("{}/backups?status=succeeded", w.project_path()),
        admin,
        None,
    )
    .await;
    w.call(Method::GET, &format!("{}/maintenance", w.planet_path()), admin, None)
        .await;
    let r = w
        .call(Method::GET, &format!("{backup_path}/archive"), admin, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The redirect itself, not where it leads.
    let direct = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let path = format!("{backup_path}/archive?redirect=true");
    let res = direct
        .get(format!("{}{path}", w.app.base))
        .bearer_auth(&w.admin)
        .send()
        .await
        .unwrap();
    let r = Resp {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        text: res.text().await.unwrap(),
    };
    w.contract.check(&Method::GET, &path, &r);
    assert_eq!(r.status, 302, "{}", r.text);

    let r = w
        .call(
            Method::POST,
            &format!("{backup_path}/restores"),
            admin,
            Some(json!({ "targetDatabase": format!("{}_copy", w.database) })),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let location = r.header("location").unwrap();
    let restore = w.wait(&location, finished).await;
    assert_eq!(restore["status"], "succeeded", "{restore}");
    w.call(Method::GET, &format!("{}/restores", w.planet_path()), admin, None)
        .await;

    // A verification by restore: 202 at once, 409 while it is queued or running, and the
    // outcome on the backup.
    let verifications = format!("{backup_path}/verifications");
    let r = w.call(Method::POST, &verifications, admin, None).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let r = w.call(Method::POST, &verifications, admin, None).await;
    assert_eq!(r.status, 409, "{}", r.text);
    let b = w.wait(&backup_path, |b| b["verification"].is_object()).await;
    assert_eq!(b["verification"]["status"], "verified", "{b}");

    let schedule = format!("{}/schedule", w.planet_path());
    let body =
        json!({ "cron": "30 2 * * *", "timezone": "Europe/Berlin", "retention": { "keepDaily": 7, "keepWeekly": 4 } });
    let r = w.call(Method::PUT, &schedule, admin, Some(body.clone())).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = w.call(Method::PUT, &schedule, admin, Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    w.call(Method::GET, &schedule, admin, None).await;
    w.call(
        Method::GET,
        &format!("{}/retention/preview", w.planet_path()),
        admin,
        None,
    )
    .await;
    let r = w
        .call(Method::PATCH, &backup_path, admin, Some(json!({ "pinned": true })))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = w.call(Method::DELETE, &schedule, admin, None).await;
    assert_eq!(r.status, 204, "{}", r.text);

    // An upload restore of the downloaded archive.
    let link = w
        .call(Method::GET, &format!("{backup_path}/archive"), admin, None)
        .await
        .json();
    let archive = w
        .app
        .client
        .get(link["downloadUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .part(
            "archive",
            reqwest::multipart::Part::bytes(archive.to_vec()).file_name("orders.svb.zst"),
        )
        .text(
            "options",
            json!({ "targetDatabase": format!("{}_up", w.database) }).to_string(),
        );
    let r = w
        .raw(Method::POST, &format!("{}/restores", w.planet_path()), |b| {
            b.bearer_auth(&w.admin).multipart(form)
        })
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let uploaded = w.wait(&r.header("location").unwrap(), finished).await;
    assert_eq!(uploaded["status"], "succeeded", "{uploaded}");
    let _ = svalbard_testkit::source::drop(&format!("{}_up", w.database)).await;

    let r = w.call(Method::DELETE, &backup_path, admin, None).await;
    assert_eq!(r.status, 202, "{}", r.text);
    w.call(Method::GET, &format!("{backups}?status=deleted"), admin, None)
        .await;

    // What only operations say: health and readiness (metrics have a listener of their own).
    for path in ["/healthz", "/readyz"] {
        let r = w.call(Method::GET, path, None, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }

    // Deletes, from the leaves up, on resources of their own.
    let p2 = w
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/projects", w.tenant),
            admin,
            Some(json!({ "name": "gone" })),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p2_path = format!("/api/v1/tenants/{}/projects/{p2}", w.tenant);
    let planet2 = w
        .call(
            Method::POST,
            &format!("{p2_path}/planets"),
            admin,
            Some(svalbard_testkit::app::planet_body("gone")),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = w
        .call(Method::DELETE, &format!("{p2_path}/planets/{planet2}"), admin, None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = w.call(Method::DELETE, &p2_path, admin, None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let t2 = w
        .call(
            Method::POST,
            "/api/v1/tenants",
            Some(&platform),
            Some(json!({ "name": "gone" })),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = w
        .call(Method::DELETE, &format!("/api/v1/tenants/{t2}"), Some(&platform), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
}

/// Polls `path` (with `auth` applied to each request) until `done` holds.
async fn poll(
    w: &World,
    path: &str,
    auth: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let r = w.raw(Method::GET, path, &auth).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        let v = r.json();
        if done(&v) {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{path} did not finish: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The drop-in profiles, each answer checked against the document like the native ones.
async fn profiles(w: &World) {
    let admin = Some(w.admin.as_str());
    let bearer = |b: reqwest::RequestBuilder| b.bearer_auth(&w.admin);
    let basic = |b: reqwest::RequestBuilder| b.basic_auth("admin", Some(&w.admin));

    // Guidewire: the native routes under `starsystems`, with `type`, answering 200 to DELETE.
    let star = format!("/api/v1/tenants/{}/starsystems/{}", w.tenant, w.project);
    let r = w
        .call(
            Method::POST,
            &format!("{star}/planets/{}/backups", w.planet),
            admin,
            Some(json!({
                "mechanism": "logical", "planetClass": "dev", "temporary": true, "retentionPeriodInDays": 10,
                "metadata": { "name": "sample backup", "description": "This is a sample backup." }
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["type"], "temporary");
    let gw = r.json()["id"].as_str().unwrap().to_owned();
    let b = w.wait(&format!("{star}/backups/{gw}"), finished).await;
    assert_eq!(b["status"], "succeeded", "{b}");
    assert_eq!(b["displayStatus"], "ready", "{b}");
    w.call(
        Method::GET,
        &format!("{star}/planets/{}/backups", w.planet),
        admin,
        None,
    )
    .await;
    let r = w
        .call(Method::GET, &format!("{star}/backup?limit=5"), admin, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Connectware: status, backup, download (streamed) and a replacing restore of the file.
    let cw = format!(
        "/profiles/connectware/tenants/{}/projects/{}/planets/{}/api/maintenance/db",
        w.tenant, w.project, w.planet
    );
    let r = w.raw(Method::GET, &cw, basic).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = w.raw(Method::POST, &format!("{cw}/backup"), basic).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let s = poll(w, &cw, basic, |v| v["running"] == false).await;
    assert_eq!(s["backup"]["succeded"], true, "{s}");
    let file = w
        .app
        .client
        .get(format!("{}{cw}/backup", w.app.base))
        .basic_auth("admin", Some(&w.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    let r = Resp {
        status: 200,
        headers: file.headers().clone(),
        text: String::new(),
    };
    w.contract.check(&Method::GET, &format!("{cw}/backup"), &r);
    assert_eq!(r.header("content-type").as_deref(), Some("application/octet-stream"));
    let bytes = file.bytes().await.unwrap();
    assert!(bytes.len() > 100);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("connectware-db-backup.tgz"),
    );
    let r = w
        .raw(Method::POST, &format!("{cw}/restore"), |b| {
            b.basic_auth("admin", Some(&w.admin)).multipart(form)
        })
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let s = poll(w, &cw, basic, |v| v["running"] == false).await;
    assert_eq!(s["restore"]["succeded"], true, "{s}");
    assert_eq!(s["restore"]["statusMessage"], "OK", "{s}");

    // DBaaS: the envelopes and the archive link.
    let db = format!(
        "/profiles/dbaas/tenants/{}/api/databases/{}/backups",
        w.tenant, w.planet
    );
    let r = w.raw(Method::POST, &db, bearer).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = r.json()["database_backup"].clone();
    assert_eq!(created["status"], "scheduled", "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let list = poll(w, &db, bearer, |v| {
        v["database_backups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"] == id.as_str() && b["status"] == "done")
    })
    .await;
    assert!(list["database_backups"].as_array().unwrap().len() >= 2, "{list}");
    let r = w.raw(Method::GET, &format!("{db}/{id}/archive"), bearer).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Camunda: a client-chosen number, its state, the list, a duplicate, the delete.
    let cam = format!(
        "/profiles/camunda/tenants/{}/projects/{}/planets/{}/actuator/backupHistory",
        w.tenant, w.project, w.planet
    );
    let r = w
        .call(Method::POST, &cam, admin, Some(json!({ "backupId": 123 })))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json()["scheduledSnapshots"].as_array().unwrap().len(),
        3,
        "{}",
        r.text
    );
    let r = w
        .call(Method::POST, &cam, admin, Some(json!({ "backupId": 123 })))
        .await;
    assert_eq!(r.names_field("backupId")["status"], 400, "{}", r.text);
    let one = format!("{cam}/123");
    let s = poll(w, &one, bearer, |v| v["state"] != "IN_PROGRESS").await;
    assert_eq!(s["state"], "COMPLETED", "{s}");
    let r = w.call(Method::GET, &cam, admin, None).await;
    assert_eq!(r.json()[0]["backupId"], 123, "{}", r.text);
    let r = w.call(Method::DELETE, &one, admin, None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = w.call(Method::GET, &one, admin, None).await;
    assert_eq!(r.status, 404, "{}", r.text);

    // Guidewire's DELETE, last: the archive it removes is no longer needed.
    let r = w
        .call(Method::DELETE, &format!("{star}/backups/{gw}"), admin, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// The problems a client meets, each one documented.
async fn problems(w: &World) {
    let admin = Some(w.admin.as_str());
    let planets = format!("{}/planets", w.project_path());
    let backups = format!("{}/backups", w.project_path());
    // Query parameters: an opaque cursor not from this API, a status in the wrong case, a limit out of range.
    for q in [
        "cursor=bm90LWEtY3Vyc29y",
        "status=Scheduled",
        "status=nope",
        "limit=0",
        "limit=x",
    ] {
        let r = w.call(Method::GET, &format!("{backups}?{q}"), admin, None).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text);
    }
    let r = w
        .call(Method::GET, &format!("{planets}?cursor=%2F%2F"), admin, None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // A webhook URL refused by the target policy, and event types that do not exist.
    let webhooks = format!("/api/v1/tenants/{}/webhooks", w.tenant);
    for body in [
        json!({ "url": "http://169.254.169.254/latest", "eventTypes": ["backup.failed"] }),
        json!({ "url": "https://hooks.example.com/", "eventTypes": ["backup.exploded"] }),
        json!({ "url": "https://hooks.example.com/", "eventTypes": [] }),
    ] {
        let r = w.call(Method::POST, &webhooks, admin, Some(body)).await;
        assert_eq!(r.status, 400, "{}", r.text);
    }
    // Bodies: invalid, not JSON, too large, duplicate names, a reused idempotency key.
    let r = w
        .call(Method::POST, &planets, admin, Some(json!({ "name": "Not Valid" })))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = w
        .raw(Method::POST, &planets, |b| {
            b.bearer_auth(&w.admin)
                .header("content-type", "text/plain")
                .body("name=x")
        })
        .await;
    assert_eq!(r.status, 415, "{}", r.text);
    let r = w
        .raw(Method::POST, &planets, |b| {
            b.bearer_auth(&w.admin)
                .header("content-type", "application/json")
                .body(format!("{{\"name\":\"{}\"}}", "a".repeat(8192)))
        })
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    let r = w
        .raw(Method::POST, &planets, |b| {
            b.bearer_auth(&w.admin)
                .header("content-type", "application/json")
                .body("{not json")
        })
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let projects = format!("/api/v1/tenants/{}/projects", w.tenant);
    let r = w
        .call(Method::POST, &projects, admin, Some(json!({ "name": "shop" })))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    for (name, want) in [("keyed", 201), ("other", 422)] {
        let r = w
            .raw(Method::POST, &projects, |b| {
                b.bearer_auth(&w.admin)
                    .header("idempotency-key", "contract-1")
                    .json(&json!({ "name": name }))
            })
            .await;
        assert_eq!(r.status, want, "{}", r.text);
    }
    // Tokens: none, garbage, another tenant's, too weak a role.
    let r = w.call(Method::GET, &planets, None, None).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = w.call(Method::GET, &planets, Some("not-a-token"), None).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let other = w.app.token(&uuid::Uuid::now_v7().to_string(), Role::Admin);
    let r = w.call(Method::GET, &planets, Some(&other), None).await;
    assert!(matches!(r.status, 403 | 404), "{}", r.text);
    let r = w
        .call(
            Method::POST,
            &format!("{}/backups", w.planet_path()),
            Some(&w.viewer),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    // The archive of a backup that has none yet is a conflict.
    let r = w
        .call(
            Method::POST,
            &format!("{}/backups", w.planet_path()),
            admin,
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let path = format!("{backups}/{id}");
    let r = w.call(Method::GET, &format!("{path}/archive"), admin, None).await;
    assert!(matches!(r.status, 200 | 409), "{}", r.text);
    w.wait(&path, finished).await;
    let r = w.call(Method::DELETE, &path, admin, None).await;
    assert_eq!(r.status, 202, "{}", r.text);
}

/// Every operation of the document, called generically: without a token, with ids that do not
/// exist, with an id that is not one, and with a role too weak to write.
async fn sweep(w: &World) {
    let mut real = BTreeMap::new();
    real.insert("tenantId", w.tenant.clone());
    real.insert("projectId", w.project.clone());
    real.insert("planetId", w.planet.clone());
    let unknown: BTreeMap<&str, String> = BTreeMap::new();
    for (m, template) in w.contract.operations() {
        let method = method_of(&m);
        let public = !template.starts_with("/api/") && !template.starts_with("/profiles/");
        let body = (m != "GET" && m != "DELETE").then(|| json!({}));
        let path = fill(&template, &real);
        let r = w.call(method.clone(), &path, None, body.clone()).await;
        if !public {
            assert_eq!(r.status, 401, "{m} {path} without a token: {}", r.text);
        }
        if public {
            continue;
        }
        let r = w
            .call(method.clone(), &fill(&template, &unknown), Some(&w.admin), body.clone())
            .await;
        assert!(
            r.status >= 400 && r.status < 500,
            "{m} {template} with unknown ids: {}",
            r.text
        );
        // The last id of the path, not one.
        if let Some(start) = template.rfind('{') {
            let end = start + template[start..].find('}').unwrap() + 1;
            let bad = format!("{}not-a-uuid{}", &template[..start], &template[end..]);
            let r = w
                .call(method.clone(), &fill(&bad, &real), Some(&w.admin), body.clone())
                .await;
            assert_eq!(r.status, 400, "{m} {bad}: {}", r.text);
        }
        if m != "GET" {
            let r = w.call(method.clone(), &path, Some(&w.viewer), body.clone()).await;
            assert!(r.status >= 400 && r.status < 500, "{m} {path} as viewer: {}", r.text);
        } else if !template.contains("{backupId}") && !template.contains("{restoreId}") {
            let r = w.call(method.clone(), &path, Some(&w.admin), None).await;
            assert!(r.status < 500, "{m} {path}: {}", r.text);
        }
    }
}

#[test]
fn the_request_examples_match_their_schemas() {
    let contract = Contract::committed();
    let mut count = 0;
    for (m, template) in contract.operations() {
        let op = &contract.doc["paths"][&template][m.to_lowercase()];
        for (media, content) in op["requestBody"]["content"].as_object().into_iter().flatten() {
            if let Some(example) = content.get("example") {
                if let Err(e) = contract.validate(&content["schema"], example) {
                    panic!("{m} {template} ({media}): the example does not match: {e}");
                }
                count += 1;
            }
        }
    }
    assert!(count >= 6, "only {count} request examples");
}
