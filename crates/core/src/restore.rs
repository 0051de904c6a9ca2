//! The restore resource.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{Engine, string_enum};
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

/// Longest suffix of a derived target name (`<planet database>_<suffix>`).
pub const TARGET_SUFFIX_MAX: usize = 32;

/// Longest database name: PostgreSQL cuts identifiers at 63 bytes (MySQL allows 64 characters).
pub const DATABASE_NAME_MAX: usize = 63;

/// Databases no restore may go into, whatever the planet: the server's templates and system
/// schemas. The maintenance database `postgres` is refused unless it is the planet's own.
fn reserved(engine: Engine, name: &str, planet_database: &str) -> bool {
    match engine {
        Engine::Postgresql => {
            matches!(name, "template0" | "template1") || (name == "postgres" && planet_database != "postgres")
        }
        Engine::Mysql => matches!(
            name.to_ascii_lowercase().as_str(),
            "mysql" | "information_schema" | "performance_schema" | "sys"
        ),
    }
}

/// Whether a restore into a planet whose database is `planet_database` may target `target`:
/// the planet's own database, or a name derived from it, `<planet database>_<suffix>` with a
/// suffix of 1 to 32 lowercase ASCII letters, digits and underscores (at most 63 bytes in all),
/// and never a template, a system schema or the maintenance database. A tenant names a
/// database it owns; it cannot aim a restore at whatever else lives on the same server.
/// `Err` says why, for a 400 or a failed restore.
pub fn check_target(engine: Engine, planet_database: &str, target: &str) -> Result<(), String> {
    let pattern = || {
        format!(
            "a restore target must be the planet's database `{planet_database}` or `{planet_database}_<suffix>` \
             (suffix: 1 to {TARGET_SUFFIX_MAX} lowercase letters, digits or underscores; \
             at most {DATABASE_NAME_MAX} bytes in all)"
        )
    };
    if reserved(engine, target, planet_database) {
        return Err(format!("`{target}` is a database of the server itself; {}", pattern()));
    }
    if target == planet_database {
        return Ok(());
    }
    let derived = target
        .strip_prefix(planet_database)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|suffix| {
            (1..=TARGET_SUFFIX_MAX).contains(&suffix.len())
                && suffix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    if derived && target.len() <= DATABASE_NAME_MAX {
        Ok(())
    } else {
        Err(pattern())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_planets_database_or_derived_from_it() {
        let pg = Engine::Postgresql;
        assert!(check_target(pg, "shop", "shop").is_ok());
        assert!(check_target(pg, "shop", "shop_copy").is_ok());
        assert!(check_target(pg, "shop", "shop_2026_01_01").is_ok());
        assert!(check_target(pg, "postgres", "postgres").is_ok());
        assert!(check_target(pg, "postgres", "postgres_copy").is_ok());
        for bad in [
            "other",
            "shopx",
            "shop_",
            "shop_Copy",
            "shop_c-1",
            "shop_ä",
            "shop_copy;drop",
            "sho",
            "",
            "postgres",
            "template1",
            "template0",
        ] {
            let e = check_target(pg, "shop", bad).unwrap_err();
            assert!(e.contains("`shop_<suffix>`"), "{bad}: {e}");
        }
        assert!(check_target(pg, "shop", &format!("shop_{}", "a".repeat(33))).is_err());
        // The suffix fits, the whole name does not.
        let long = "d".repeat(50);
        assert!(check_target(pg, &long, &format!("{long}_{}", "a".repeat(12))).is_ok());
        assert!(check_target(pg, &long, &format!("{long}_{}", "a".repeat(13))).is_err());
        // A planet whose own database is a template cannot be restored into at all.
        assert!(check_target(pg, "template1", "template1").is_err());

        let my = Engine::Mysql;
        assert!(check_target(my, "shop", "shop_restored").is_ok());
        assert!(check_target(my, "mysql", "mysql").is_err());
        assert!(check_target(my, "shop", "information_schema").is_err());
        assert!(check_target(my, "shop", "postgres").is_err());
    }
}
