//! Resource types of the API and their validated building blocks.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, FieldError};
use crate::ids::{PlanetId, ProjectId, TenantId};

/// A resource name: 1–63 characters of lowercase letters, digits and `-`, starting with a letter
/// and not ending with `-` (usable in object keys, DNS names and file names alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
pub struct Name(String);

impl Name {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let msg = |m: &str| FieldError::new(field, m);
        if raw.is_empty() || raw.len() > 63 {
            return Err(msg("must be 1 to 63 characters long"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(msg("may contain only lowercase letters, digits and '-'"));
        }
        if !raw.as_bytes()[0].is_ascii_lowercase() {
            return Err(msg("must start with a lowercase letter"));
        }
        if raw.ends_with('-') {
            return Err(msg("must not end with '-'"));
        }
        Ok(Self(raw.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! string_enum {
    ($(#[doc = $doc:literal])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        // By hand rather than derived: the derive does not see a `rename` that arrives through
        // this macro and would document the Rust variant names instead of the wire's.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{ObjectBuilder, Type};
                let doc: &[&str] = &[$($doc),*];
                let doc = doc.iter().map(|l| l.trim()).collect::<Vec<_>>().join("\n");
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description((!doc.is_empty()).then_some(doc))
                    .enum_values(Some(Self::ALL.iter().copied()))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $name {
            pub const ALL: &'static [&'static str] = &[$($text),+];

            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("`{other}` is not one of: {}", Self::ALL.join(", "))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use string_enum;

string_enum!(
    /// Database engine of a planet.
    Engine { Postgresql => "postgresql", Mysql => "mysql" }
);
string_enum!(
    /// Class of a planet; picks the default retention of its backups.
    PlanetClass { Dev => "dev", Test => "test", Prod => "prod" }
);
string_enum!(
    /// TLS mode towards the planet, with PostgreSQL's names.
    SslMode {
        Disable => "disable",
        Allow => "allow",
        Prefer => "prefer",
        Require => "require",
        VerifyCa => "verify-ca",
        VerifyFull => "verify-full",
    }
);

impl PlanetClass {
    /// Default retention of a backup of a planet of this class.
    #[must_use]
    pub fn default_retention_days(self) -> i32 {
        match self {
            Self::Dev => 7,
            Self::Test => 14,
            Self::Prod => 30,
        }
    }
}

impl Engine {
    #[must_use]
    pub fn default_port(self) -> u16 {
        match self {
            Self::Postgresql => 5432,
            Self::Mysql => 3306,
        }
    }
}

/// Labels: at most 64, keys 1–63 characters of `[a-zA-Z0-9._/-]`, values up to 255 characters.
pub fn validate_labels(field: &str, labels: &BTreeMap<String, String>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if labels.len() > 64 {
        errors.push(FieldError::new(field, "at most 64 labels"));
    }
    for (k, v) in labels {
        let ok = !k.is_empty()
            && k.len() <= 63
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'));
        if !ok {
            errors.push(FieldError::new(
                format!("{field}.{k}"),
                "label keys are 1 to 63 characters of letters, digits, '.', '_', '/' and '-'",
            ));
        }
        if v.len() > 255 {
            errors.push(FieldError::new(
                format!("{field}.{k}"),
                "label values are at most 255 characters",
            ));
        }
    }
    errors
}

/// Collects field errors into one validation error.
pub fn check(errors: Vec<FieldError>) -> Result<(), Error> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}

/// A tenant: the unit of isolation.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub id: TenantId,
    #[schema(value_type = String)]
    pub name: String,
    pub display_name: Option<String>,
    /// The tenant's own limits; an absent one is the service's configured default.
    #[sqlx(flatten)]
    pub limits: TenantLimits,
    /// Which hosts this tenant's planets may name: its `allow` replaces the platform's
    /// `targets.allow`, its `deny` adds to the platform's `targets.deny`, which keeps applying;
    /// absent means the platform's lists. Set by platform administrators only.
    #[schema(value_type = Option<crate::netpolicy::PolicyLists>)]
    pub target_policy: Option<sqlx::types::Json<crate::netpolicy::PolicyLists>>,
    pub created_at: DateTime<Utc>,
}

/// Per-tenant limits. Past one, creating a backup or restore answers 429 (`concurrentJobs`) or
/// 409 (`backups`, `storedBytes`) naming it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantLimits {
    /// Backups and restores queued or running at once.
    #[schema(minimum = 1)]
    #[sqlx(rename = "max_concurrent_jobs")]
    pub concurrent_jobs: Option<i32>,
    /// Bytes of stored archives.
    #[schema(minimum = 1)]
    #[sqlx(rename = "max_stored_bytes")]
    pub stored_bytes: Option<i64>,
    /// Backups kept, counting those in progress.
    #[schema(minimum = 1)]
    #[sqlx(rename = "max_backups")]
    pub backups: Option<i32>,
}

impl TenantLimits {
    /// Field errors, named under `limits.`.
    #[must_use]
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let positive = [
            ("limits.concurrentJobs", self.concurrent_jobs.map(i64::from)),
            ("limits.storedBytes", self.stored_bytes),
            ("limits.backups", self.backups.map(i64::from)),
        ];
        for (field, v) in positive {
            if v.is_some_and(|n| n < 1) {
                errors.push(FieldError::new(
                    field,
                    "must be at least 1 (leave it out for the default)",
                ));
            }
        }
        errors
    }
}

/// A project groups the planets of a tenant.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: ProjectId,
    pub tenant_id: TenantId,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A database Svalbard backs up.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Planet {
    pub id: PlanetId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub name: String,
    pub engine: Engine,
    pub planet_class: PlanetClass,
    pub labels: BTreeMap<String, String>,
    pub connection: ConnectionView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Connection settings as shown: the password is never returned, only whether one is set.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub sslmode: SslMode,
    /// Whether a password is stored (it is write-only).
    pub password_set: bool,
}
