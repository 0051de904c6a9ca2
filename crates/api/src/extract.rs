//! Extractors that turn every malformed input into a problem naming the field.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt as _;
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use svalbard_core::FieldError;
use svalbard_core::page::PageRequest;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body: content type checked, size bounded, and a deserialization error names the field.
pub struct Json<T>(pub T);

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// Reads a whole body up to `limit` bytes.
pub async fn read_body(mut payload: Payload, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("the request body could not be read: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "the request body exceeds {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A JSON number with no fraction (`5.0`) is the same number as `5`: integer fields take it.
fn integral(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                #[allow(clippy::cast_possible_truncation)]
                let i = f as i64;
                *v = serde_json::Value::from(i);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(integral),
        serde_json::Value::Object(m) => m.values_mut().for_each(integral),
        _ => {}
    }
}

/// The path of the first string (or key) holding a NUL, which PostgreSQL cannot store.
fn nul_at(v: &serde_json::Value, at: &str) -> Option<String> {
    let field = |k: &str| {
        if at.is_empty() {
            k.to_owned()
        } else {
            format!("{at}.{k}")
        }
    };
    match v {
        serde_json::Value::String(s) if s.contains('\0') => Some(if at.is_empty() { "body".into() } else { at.into() }),
        serde_json::Value::Array(a) => a.iter().enumerate().find_map(|(i, x)| nul_at(x, &format!("{at}[{i}]"))),
        serde_json::Value::Object(m) => m.iter().find_map(|(k, x)| {
            if k.contains('\0') {
                Some(field(k))
            } else {
                nul_at(x, &field(k))
            }
        }),
        _ => None,
    }
}

/// Parses JSON, naming the path of the first offending field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // Serde would read a struct from a JSON array by position; every body of the API is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    if let Some(field) = nul_at(&value, "") {
        return Err(ApiError::invalid(field, "must not contain NUL characters"));
    }
    integral(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        // serde's message carries position info that means nothing to callers.
        let msg = e.into_inner().to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::Validation(vec![FieldError::new(field, msg)])
    })
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = is_json(req);
        let limit = req
            .app_data::<web::Data<Arc<AppState>>>()
            .map_or(256 * 1024, |s| s.config.limits.json_body_bytes);
        let payload = payload.take();
        Box::pin(async move {
            if !json {
                return Err(ApiError::UnsupportedMediaType(
                    "the body must be `application/json`".into(),
                ));
            }
            let body = read_body(payload, limit).await?;
            parse_json(&body).map(Json)
        })
    }
}

/// A JSON body that may be left out entirely (then `T::default()`).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default + 'static> FromRequest for OptionalJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = is_json(req);
        let has_type = req.headers().contains_key(header::CONTENT_TYPE);
        let limit = req
            .app_data::<web::Data<Arc<AppState>>>()
            .map_or(256 * 1024, |s| s.config.limits.json_body_bytes);
        let payload = payload.take();
        Box::pin(async move {
            let body = read_body(payload, limit).await?;
            // Left out, or `null` (as the document allows): the defaults.
            if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null" {
                return Ok(OptionalJson(T::default()));
            }
            if !json && has_type {
                return Err(ApiError::UnsupportedMediaType(
                    "the body must be `application/json`".into(),
                ));
            }
            parse_json(&body).map(OptionalJson)
        })
    }
}

/// `?limit=&cursor=&status=` of list endpoints.
pub struct ListQuery {
    pub page: PageRequest,
    pub status: Option<String>,
}

impl ListQuery {
    pub fn parse(req: &HttpRequest) -> Result<Self, ApiError> {
        let q = web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map_err(|e| ApiError::BadRequest(format!("the query string is malformed: {e}")))?;
        let mut errors = Vec::new();
        let limit = match q.get("limit") {
            None => None,
            Some(l) => match l.parse::<i64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    errors.push(FieldError::new("limit", "must be a whole number"));
                    None
                }
            },
        };
        let page = match PageRequest::parse(limit, q.get("cursor").map(String::as_str)) {
            Ok(p) => Some(p),
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        };
        match page {
            Some(page) if errors.is_empty() => Ok(Self {
                page,
                status: q.get("status").cloned(),
            }),
            _ => Err(ApiError::Validation(errors)),
        }
    }
}

impl FromRequest for ListQuery {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Self::parse(req))
    }
}

/// Path parameters that are not UUIDs answer 400 naming the parameter.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, req| {
        let bad = req
            .match_info()
            .iter()
            .find(|(_, v)| uuid::Uuid::parse_str(v).is_err())
            .map_or_else(|| "path".to_owned(), |(k, _)| k.to_owned());
        ApiError::invalid(bad, "must be a UUID").into()
    })
}
