//! One error type for the HTTP layer; each variant is one RFC 9457 problem.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use svalbard_core::{Error, FieldError};
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for a person.
    pub detail: String,
    /// The invalid fields, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The tenant limit that was reached: `concurrentJobs`, `backups` or `storedBytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{detail}")]
    MethodNotAllowed { detail: String, allow: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    IdempotencyMismatch(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// A tenant limit: 429 while it is a matter of waiting, 409 when something must be deleted.
    #[error("{message}")]
    LimitReached {
        limit: &'static str,
        message: String,
        busy: bool,
    },
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            Self::Unauthorized(_) => ("unauthorized", "Unauthorized"),
            Self::Forbidden(_) => ("forbidden", "Forbidden"),
            Self::NotFound(_) => ("not-found", "Not Found"),
            Self::MethodNotAllowed { .. } => ("method-not-allowed", "Method Not Allowed"),
            Self::Conflict(_) => ("conflict", "Conflict"),
            Self::BadRequest(_) => ("bad-request", "Bad Request"),
            Self::Validation(_) => ("validation", "Invalid Request"),
            Self::IdempotencyMismatch(_) => ("idempotency-key-reused", "Idempotency Key Reused"),
            Self::PayloadTooLarge(_) => ("payload-too-large", "Payload Too Large"),
            Self::UnsupportedMediaType(_) => ("unsupported-media-type", "Unsupported Media Type"),
            Self::TooManyRequests(_) => ("limit-reached", "Too Many Requests"),
            Self::LimitReached { busy: true, .. } => ("limit-reached", "Too Many Requests"),
            Self::LimitReached { busy: false, .. } => ("quota-exceeded", "Quota Exceeded"),
            Self::BadGateway(_) => ("upstream-unavailable", "Bad Gateway"),
            Self::Unavailable(_) => ("unavailable", "Service Unavailable"),
            Self::Internal(_) => ("internal", "Internal Server Error"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (slug, title) = self.slug_and_title();
        let detail = match self {
            Self::Validation(errors) => {
                let fields: Vec<_> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
                format!("the request is invalid: {}", fields.join("; "))
            }
            // Internal errors are logged, not shown.
            Self::Internal(_) => "an internal error occurred; it has been logged".into(),
            // Storage errors name endpoints, buckets and keys: logged, not shown.
            Self::BadGateway(_) => {
                "object storage did not answer as expected; try again later (the cause has been logged)".into()
            }
            other => other.to_string(),
        };
        Problem {
            kind: format!("urn:svalbard:problem:{slug}"),
            title: title.into(),
            status: self.status_code().as_u16(),
            detail,
            errors: match self {
                Self::Validation(errors) => errors.clone(),
                _ => Vec::new(),
            },
            limit: match self {
                Self::LimitReached { limit, .. } => Some(limit),
                _ => None,
            },
        }
    }
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::BadRequest(_) | Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::IdempotencyMismatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests(_) | Self::LimitReached { busy: true, .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::LimitReached { busy: false, .. } => StatusCode::CONFLICT,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(e) = self {
            tracing::error!(error = ?e, "request failed");
        }
        if let Self::BadGateway(e) = self {
            tracing::warn!(error = %e, "object storage failed");
        }
        let mut res = HttpResponse::build(self.status_code());
        res.content_type(PROBLEM_JSON);
        match self {
            Self::Unauthorized(msg) => {
                let msg = msg.replace('"', "'");
                res.insert_header((
                    header::WWW_AUTHENTICATE,
                    format!("Bearer realm=\"svalbard\", error=\"invalid_token\", error_description=\"{msg}\""),
                ));
            }
            Self::MethodNotAllowed { allow, .. } => {
                res.insert_header((header::ALLOW, allow.clone()));
            }
            Self::LimitReached { busy: true, .. } | Self::TooManyRequests(_) => {
                res.insert_header((header::RETRY_AFTER, "30"));
            }
            // A busy or restarting control database is usually back within seconds.
            Self::Unavailable(_) => {
                res.insert_header((header::RETRY_AFTER, "5"));
            }
            _ => {}
        }
        res.json(self.problem())
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(what) => Self::NotFound(what),
            Error::Conflict(msg) => Self::Conflict(msg),
            Error::Validation(errors) => Self::Validation(errors),
            Error::Unavailable(msg) => Self::BadGateway(msg),
            Error::LimitReached { limit, message, busy } => Self::LimitReached { limit, message, busy },
            Error::Database(db) if is_transient(&db) => {
                Self::Unavailable("the control database is busy with a conflicting change; try again".into())
            }
            Error::Database(db) => Self::Internal(db.into()),
            Error::Other(other) => Self::Internal(other),
        }
    }
}

/// Deadlocks, serialization failures and lock timeouts: the same request succeeds when retried.
fn is_transient(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001" | "55P03")))
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(e).into()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
