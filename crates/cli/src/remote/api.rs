//! A small client of the Svalbard REST API: bearer token, JSON in and out, and problems
//! (RFC 9457) turned into errors that read like the server's own sentence.

use std::fmt;

use anyhow::Context as _;
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

/// An error answer of the API, as `application/problem+json` or whatever else came back.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub title: String,
    pub detail: String,
    /// `field: reason` for each invalid field of a validation problem.
    pub fields: Vec<String>,
}

impl Problem {
    fn from_answer(status: StatusCode, body: &str) -> Self {
        let doc: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
        let fields = doc
            .get("errors")
            .and_then(Value::as_array)
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        let field = e.get("field").and_then(Value::as_str).unwrap_or("?");
                        let reason = e.get("message").and_then(Value::as_str);
                        format!("{field}: {}", reason.unwrap_or("invalid"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            status,
            title: text("title").unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
            detail: text("detail").unwrap_or_else(|| body.chars().take(300).collect()),
            fields,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.title, self.status.as_u16(), self.detail)?;
        // Servers often say the first reason in `detail` already; the list adds the others.
        for field in self.fields.iter().filter(|field| !self.detail.contains(field.as_str())) {
            write!(f, "\n  {field}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

/// Where the API is and who is calling.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
    pub tenant: Uuid,
}

impl Api {
    /// `tenant` defaults to the token's own tenant claim.
    pub fn new(url: &str, token: &str, tenant: Option<Uuid>) -> anyhow::Result<Self> {
        let tenant = match tenant {
            Some(t) => t,
            None => token_tenant(token)?,
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("svalbard-cli/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            tenant,
        })
    }

    /// `/api/v1/tenants/{tenant}` followed by `rest`.
    pub fn tenant_path(&self, rest: &str) -> String {
        format!("/api/v1/tenants/{}{rest}", self.tenant)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(Method::PUT, path, Some(body)).await
    }

    /// GET, answering `None` on a 404 instead of an error.
    pub async fn find(&self, path: &str) -> anyhow::Result<Option<Value>> {
        match self.get(path).await {
            Ok(v) => Ok(Some(v)),
            Err(e)
                if e.downcast_ref::<Problem>()
                    .is_some_and(|p| p.status == StatusCode::NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Every item of a paged list (up to `limit`), following `nextCursor`.
    pub async fn list(&self, path: &str, query: &[(&str, String)], limit: usize) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q: Vec<(&str, String)> = query.to_vec();
            q.push(("limit", limit.saturating_sub(items.len()).clamp(1, 100).to_string()));
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            let page = self.send_query(Method::GET, path, &q, None).await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            cursor = page["nextCursor"].as_str().map(str::to_owned);
            if cursor.is_none() || items.len() >= limit {
                items.truncate(limit);
                return Ok(items);
            }
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.send_query(method, path, &[], body).await
    }

    async fn send_query(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token).query(query);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the Svalbard API at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.context("reading the API's answer")?;
        if !status.is_success() {
            return Err(Problem::from_answer(status, &text).into());
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("the API answered {status} with a body that is not JSON"))
    }
}

/// The `tenant` claim of a JWT, read without checking the signature (the server does that):
/// only a default for `--tenant`.
fn token_tenant(token: &str) -> anyhow::Result<Uuid> {
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|raw| serde_json::from_slice::<Value>(&raw).ok())
        .context("SVALBARD_TOKEN is not a JWT; mint one with `svalbard token`")?;
    let tenant = claims["tenant"].as_str().unwrap_or_default();
    tenant.parse().map_err(|_| {
        anyhow::anyhow!("the token is a platform token (tenant `{tenant}`); name the tenant with --tenant")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b(r#"{"alg":"HS256"}"#), b(claims))
    }

    #[test]
    fn tenant_comes_from_the_token() {
        let t = Uuid::now_v7();
        assert_eq!(token_tenant(&jwt(&format!(r#"{{"tenant":"{t}"}}"#))).unwrap(), t);
        let platform = token_tenant(&jwt(r#"{"tenant":"*"}"#)).unwrap_err().to_string();
        assert!(platform.contains("--tenant"), "{platform}");
        assert!(token_tenant("not-a-token").is_err());
    }

    #[test]
    fn problems_read_like_the_server() {
        let p = Problem::from_answer(
            StatusCode::BAD_REQUEST,
            r#"{"type":"about:blank","title":"Invalid request","status":400,"detail":"cron is invalid",
               "errors":[{"field":"cron","message":"expected five fields"}]}"#,
        );
        assert_eq!(
            p.to_string(),
            "Invalid request (400): cron is invalid\n  cron: expected five fields"
        );
        let plain = Problem::from_answer(StatusCode::BAD_GATEWAY, "upstream down");
        assert_eq!(plain.to_string(), "Bad Gateway (502): upstream down");
    }
}
