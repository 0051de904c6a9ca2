//! The API on a free port against a fresh control database, and a small HTTP client for it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::PgPool;
use svalbard_api::Application;
use svalbard_core::auth::{Role, mint_hs256};
use svalbard_core::config::Config;

pub struct TestApp {
    pub base: String,
    /// Base URL of the metrics listener, when it is enabled.
    pub metrics_base: Option<String>,
    pub pool: PgPool,
    pub config: Config,
    pub client: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
    }

    /// Asserts the status and that the body is a problem document; returns it.
    #[track_caller]
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        let p = self.json();
        assert_eq!(p["status"], status);
        assert!(p["type"].as_str().unwrap().starts_with("urn:svalbard:problem:"));
        assert!(!p["title"].as_str().unwrap().is_empty());
        assert!(!p["detail"].as_str().unwrap().is_empty());
        p
    }

    /// Asserts a 400 validation problem naming `field`.
    #[track_caller]
    pub fn names_field(&self, field: &str) -> Value {
        let p = self.problem(400);
        let fields: Vec<&str> = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "expected field {field} in {fields:?}");
        p
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(json!({})).await
    }

    pub async fn spawn_with(overrides: Value) -> Self {
        let (pool, url) = crate::fresh_pool().await.unwrap();
        let config = crate::config(&url, overrides).unwrap();
        Self::spawn_on(config, pool)
    }

    pub fn spawn_on(config: Config, pool: PgPool) -> Self {
        let app = Application::build(config.clone(), pool.clone()).unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let metrics_base = app.metrics_port().map(|p| format!("http://127.0.0.1:{p}"));
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            base,
            metrics_base,
            pool,
            config,
            client,
            handle,
        }
    }

    pub fn token(&self, tenant: &str, role: Role) -> String {
        mint_hs256(&self.config.auth, "test", tenant, role, Duration::from_secs(3600)).unwrap()
    }

    pub fn platform(&self) -> String {
        self.token("*", Role::Admin)
    }

    pub async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        Resp {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            text: res.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(Method::PATCH, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.send(Method::DELETE, path, Some(token), None).await
    }

    /// Creates a tenant; returns its id.
    pub async fn tenant(&self, name: &str) -> String {
        let r = self
            .post("/api/v1/tenants", &self.platform(), json!({ "name": name }))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()["id"].as_str().unwrap().to_owned()
    }

    /// Creates a project; returns its id.
    pub async fn project(&self, tenant: &str, name: &str) -> String {
        let r = self
            .post(
                &format!("/api/v1/tenants/{tenant}/projects"),
                &self.platform(),
                json!({ "name": name }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()["id"].as_str().unwrap().to_owned()
    }

    /// Creates a PostgreSQL planet; returns its id.
    pub async fn planet(&self, tenant: &str, project: &str, name: &str) -> String {
        let r = self
            .post(
                &format!("/api/v1/tenants/{tenant}/projects/{project}/planets"),
                &self.platform(),
                planet_body(name),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()["id"].as_str().unwrap().to_owned()
    }
}

pub fn planet_body(name: &str) -> Value {
    json!({
        "name": name,
        "engine": "postgresql",
        "planetClass": "test",
        "labels": { "team": "payments" },
        "connection": { "host": "127.0.0.1", "database": "app", "user": "backup", "password": "pw-Secret-42" }
    })
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        // Stop accepting; the runtime ends with the test anyway.
        drop(handle.stop(false));
    }
}
