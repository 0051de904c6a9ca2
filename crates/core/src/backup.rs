//! The backup resource: states, representation and the create request's validated form.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{Engine, PlanetClass, string_enum};
use crate::ids::{BackupId, PlanetId, ProjectId, TenantId};
use crate::jobs::Cause;

string_enum!(
    /// `scheduled → running → succeeded | failed | incomplete`; `succeeded → expired`;
    /// `succeeded ⇄ missing` (the archive is not in object storage, confirmed by a listing; it
    /// turns back when the archive is found again); any finished backup `→ deleting → deleted`.
    BackupStatus {
        Scheduled => "scheduled",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Incomplete => "incomplete",
        Missing => "missing",
        Expired => "expired",
        Deleting => "deleting",
        Deleted => "deleted",
    }
);
string_enum!(
    /// How the backup is taken.
    Mechanism { Logical => "logical", Physical => "physical" }
);
string_enum!(
    /// Who asked for the backup.
    Method { Manual => "manual", Periodic => "periodic" }
);

impl BackupStatus {
    /// A short word for dashboards.
    #[must_use]
    pub fn display(self) -> &'static str {
        match self {
            Self::Scheduled => "pending",
            Self::Running => "in progress",
            Self::Succeeded => "ready",
            Self::Failed => "failed",
            Self::Incomplete => "incomplete",
            Self::Missing => "archive missing",
            Self::Expired => "expired",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
        }
    }

    /// Still being taken.
    #[must_use]
    pub fn in_flight(self) -> bool {
        matches!(self, Self::Scheduled | Self::Running)
    }

    /// Being taken: a job owns the backup.
    pub const IN_FLIGHT: [Self; 2] = [Self::Scheduled, Self::Running];

    /// Kept, or being kept: counted against a tenant's limits. A `missing` archive may come
    /// back, so it still counts.
    pub const KEPT: [Self; 4] = [Self::Scheduled, Self::Running, Self::Succeeded, Self::Missing];

    /// Holding objects in the bucket, or possibly so: a tenant with any of these cannot be
    /// deleted without orphaning archives.
    pub const HOLDING_OBJECTS: [Self; 5] = [
        Self::Scheduled,
        Self::Running,
        Self::Succeeded,
        Self::Deleting,
        Self::Missing,
    ];

    /// The statuses as text, to bind as a `text[]` parameter (`status = ANY($n)`).
    #[must_use]
    pub fn names(set: &[Self]) -> Vec<&'static str> {
        set.iter().map(|s| s.as_str()).collect()
    }

    /// Where an in-flight backup goes when its job fails for good: `failed` when retrying could
    /// not help, `incomplete` when the attempts ran out.
    #[must_use]
    pub fn given_up(cause: Cause) -> Self {
        match cause {
            Cause::Permanent | Cause::Incompatible => Self::Failed,
            Cause::Exhausted => Self::Incomplete,
        }
    }
}

/// Progress of a running backup.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Bytes of the engine's dump read so far.
    pub bytes_processed: i64,
    /// `connecting`, `dumping`, `finalizing`, ...
    pub phase: Option<String>,
}

/// One step of taking a backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    /// `dump`, `upload` or `manifest`.
    pub name: String,
    /// `pending`, `running`, `succeeded` or `failed`.
    pub state: String,
    pub size_bytes: Option<i64>,
    pub start_time: Option<DateTime<Utc>>,
    /// Failed attempts of this step.
    pub failures: i32,
}

/// Free-text metadata given at creation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Up to 200 characters.
    #[schema(pattern = "^\\s*[^\\x00-\\x1f\\x7f-\\x9f]{0,200}\\s*$")]
    pub name: Option<String>,
    /// Up to 2000 characters.
    #[schema(pattern = "^\\s*[^\\x00-\\x1f\\x7f-\\x9f]{0,2000}\\s*$")]
    pub description: Option<String>,
}

/// Where the backup comes from, Guidewire style.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    pub tenant: String,
    pub project: String,
    /// The planet class the backup was taken as.
    pub stage: PlanetClass,
    /// The planet's name.
    pub name: String,
}

/// A backup of a planet.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    pub id: BackupId,
    /// `YYYYMMDDhhmmss_<planet>` (UTC).
    pub name: String,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub planet_id: PlanetId,
    pub engine: Engine,
    pub mechanism: Mechanism,
    pub method: Method,
    pub temporary: bool,
    pub pinned: bool,
    pub status: BackupStatus,
    /// `pending`, `in progress`, `ready`, `failed`, ...; a succeeded backup whose last
    /// verification passed is `verified`, one whose last verification failed is
    /// `verification failed`.
    pub display_status: &'static str,
    pub error_message: Option<String>,
    pub progress: Option<Progress>,
    /// Size of the stored archive.
    pub size_bytes: Option<i64>,
    /// `sha256:<hex>` of the stored archive.
    pub checksum: Option<String>,
    /// `zstd`.
    #[schema(example = "zstd")]
    pub compression: String,
    /// `age`: the archive is an age file encrypted for the tenant's key (see
    /// `GET /tenants/{tenantId}/keys/export`); `none`: stored in the clear. Set when the
    /// backup succeeds; `none` until then.
    #[schema(example = "age")]
    pub encryption: String,
    pub engine_version: Option<String>,
    pub tool_version: Option<String>,
    pub format_version: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expiration_date: Option<DateTime<Utc>>,
    pub retention_period_in_days: i32,
    pub metadata: Metadata,
    pub environment: Environment,
    pub parts: Vec<Part>,
    /// The outcome of the last verification by restore; absent until one has ended.
    pub verification: Option<crate::verification::BackupVerification>,
}

/// Default retention: by planet class, one day for temporary backups, unless given.
#[must_use]
pub fn retention_days(class: PlanetClass, temporary: bool, requested: Option<i32>) -> i32 {
    requested.unwrap_or(if temporary { 1 } else { class.default_retention_days() })
}

/// `YYYYMMDDhhmmss_<planet>`.
#[must_use]
pub fn backup_name(at: DateTime<Utc>, planet: &str) -> String {
    format!("{}_{planet}", at.format("%Y%m%d%H%M%S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_retention() {
        let at = DateTime::parse_from_rfc3339("2026-01-29T09:53:09Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(backup_name(at, "orders"), "20260129095309_orders");
        assert_eq!(retention_days(PlanetClass::Prod, false, None), 30);
        assert_eq!(retention_days(PlanetClass::Dev, false, None), 7);
        assert_eq!(retention_days(PlanetClass::Test, true, None), 1);
        assert_eq!(retention_days(PlanetClass::Test, true, Some(10)), 10);
    }
}
