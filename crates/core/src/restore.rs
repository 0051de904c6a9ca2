//! The restore resource.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::string_enum;
use crate::ids::{BackupId, PlanetId, ProjectId, RestoreId, TenantId};
use crate::jobs::Cause;

string_enum!(
    /// `scheduled → running → succeeded | failed | incompatible`.
    RestoreStatus {
        Scheduled => "scheduled",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Incompatible => "incompatible",
    }
);

impl RestoreStatus {
    #[must_use]
    pub fn in_flight(self) -> bool {
        matches!(self, Self::Scheduled | Self::Running)
    }

    /// Being restored: a job owns the restore.
    pub const IN_FLIGHT: [Self; 2] = [Self::Scheduled, Self::Running];

    /// The statuses as text, to bind as a `text[]` parameter (`status = ANY($n)`).
    #[must_use]
    pub fn names(set: &[Self]) -> Vec<&'static str> {
        set.iter().map(|s| s.as_str()).collect()
    }

    /// Where an in-flight restore goes when its job fails for good.
    #[must_use]
    pub fn given_up(cause: Cause) -> Self {
        match cause {
            Cause::Incompatible => Self::Incompatible,
            Cause::Permanent | Cause::Exhausted => Self::Failed,
        }
    }
}

/// Where the restored data comes from.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// The stored backup, when restoring from one.
    pub backup_id: Option<BackupId>,
    /// File name of the uploaded archive, when restoring from an upload.
    pub upload_name: Option<String>,
    pub upload_size_bytes: Option<i64>,
}

/// Where the data goes.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    pub planet_id: PlanetId,
    pub database: String,
    /// The target's objects were dropped and recreated.
    pub replace: bool,
}

/// What the restored database holds, counted after the restore.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub tables: i64,
    pub rows: i64,
}

/// A restore into a planet.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Restore {
    pub id: RestoreId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub status: RestoreStatus,
    pub error_message: Option<String>,
    pub source: RestoreSource,
    pub target: RestoreTarget,
    pub progress: Option<crate::backup::Progress>,
    pub verification: Option<Verification>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}
