use serde::Serialize;
use utoipa::ToSchema;

/// One invalid field of a request, named by its JSON path.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the offending field, e.g. `connection.port`.
    pub field: String,
    /// Why the value was refused.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Errors of the domain and storage layers; the API maps each to a problem response.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Unavailable(String),
    /// A per-tenant limit would be exceeded. `busy`: it frees itself as jobs finish (try again
    /// later); otherwise something stored must go first.
    #[error("{message}")]
    LimitReached {
        limit: &'static str,
        message: String,
        busy: bool,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True when a database error is a unique-constraint violation on the named constraint or index.
pub fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505") && db.constraint().is_none_or(|c| c == constraint)
        }
        _ => false,
    }
}
