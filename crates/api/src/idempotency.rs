//! `Idempotency-Key` on creates: a retried POST gets the first response, never a second resource.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use serde::Serialize;
use svalbard_core::repo::idempotency::{self, Lookup};

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::State;

/// A successful answer of a create: status, `Location` and body.
pub struct Reply<T> {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: T,
}

impl<T> Reply<T> {
    pub fn created(location: String, body: T) -> Self {
        Self {
            status: StatusCode::CREATED,
            location: Some(location),
            body,
        }
    }

    pub fn accepted(location: String, body: T) -> Self {
        Self {
            status: StatusCode::ACCEPTED,
            location: Some(location),
            body,
        }
    }
}

fn respond(status: StatusCode, location: Option<&str>, body: &serde_json::Value) -> HttpResponse {
    let mut res = HttpResponse::build(status);
    if let Some(l) = location {
        res.insert_header((header::LOCATION, l.to_owned()));
    }
    res.json(body)
}

/// The request's `Idempotency-Key`, with the method and path it was sent to.
pub struct IdempotencyKey {
    key: Option<String>,
    target: String,
}

impl FromRequest for IdempotencyKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let target = format!("{} {}", req.method(), req.path());
        let key = match req.headers().get("idempotency-key") {
            None => Ok(None),
            Some(v) => match v.to_str() {
                Ok(k) if !k.is_empty() && k.len() <= 255 => Ok(Some(k.to_owned())),
                _ => Err(ApiError::invalid(
                    "Idempotency-Key",
                    "must be 1 to 255 visible ASCII characters",
                )),
            },
        };
        ready(key.map(|key| Self { key, target }))
    }
}

impl IdempotencyKey {
    /// Runs `create` once per key: a replay with the same body gets the stored answer, a replay
    /// with another body a 422.
    pub async fn run<B, T, F, Fut>(self, state: &State, auth: &Auth, body: &B, create: F) -> ApiResult<HttpResponse>
    where
        B: Serialize,
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = ApiResult<Reply<T>>>,
    {
        let Some(key) = self.key else {
            let reply = create().await?;
            let body = serde_json::to_value(&reply.body).map_err(|e| ApiError::Internal(e.into()))?;
            return Ok(respond(reply.status, reply.location.as_deref(), &body));
        };
        let scope = auth.0.scope_key();
        let body = serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.into()))?;
        let hash = idempotency::fingerprint(
            &state.fingerprint_key,
            &[scope.as_bytes(), self.target.as_bytes(), &body],
        );
        match idempotency::reserve(&state.pool, &scope, &key, &hash).await? {
            Lookup::Replay { status, location, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let mut res = respond(status, location.as_deref(), &body);
                res.headers_mut().insert(
                    header::HeaderName::from_static("idempotent-replayed"),
                    header::HeaderValue::from_static("true"),
                );
                Ok(res)
            }
            Lookup::Mismatch => Err(ApiError::IdempotencyMismatch(
                "this Idempotency-Key was already used for a different request".into(),
            )),
            Lookup::InProgress => Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still being processed".into(),
            )),
            Lookup::Reserved => match create().await {
                Ok(reply) => {
                    let json = serde_json::to_value(&reply.body).map_err(|e| ApiError::Internal(e.into()))?;
                    idempotency::complete(
                        &state.pool,
                        &scope,
                        &key,
                        reply.status.as_u16(),
                        reply.location.as_deref(),
                        &json,
                    )
                    .await?;
                    Ok(respond(reply.status, reply.location.as_deref(), &json))
                }
                Err(e) => {
                    idempotency::release(&state.pool, &scope, &key).await?;
                    Err(e)
                }
            },
        }
    }
}
