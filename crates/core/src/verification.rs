//! Verification by restore: what a backup's archive held when it was restored into a scratch
//! database, compared with what the dump recorded of the source. Pure: the worker counts, this
//! module judges.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::string_enum;

string_enum!(
    /// `verified`: the archive restored and held every table the dump recorded, each with the
    /// rows counted while dumping. `failed`: it did not restore, or something differed.
    VerificationStatus {
        Verified => "verified",
        Failed => "failed",
    }
);

string_enum!(
    /// How a table differs: `missing` (recorded while dumping, absent after the restore),
    /// `rows` (another number of rows), `unexpected` (restored, not recorded while dumping).
    MismatchKind {
        Missing => "missing",
        Rows => "rows",
        Unexpected => "unexpected",
    }
);

/// One table that differs between what the dump recorded and what the restore produced.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Mismatch {
    /// `schema.table`.
    pub table: String,
    pub kind: MismatchKind,
    /// Rows counted while dumping; absent for an `unexpected` table.
    pub expected_rows: Option<i64>,
    /// Rows found after the restore; absent for a `missing` table.
    pub restored_rows: Option<i64>,
}

/// The outcome of the last verification of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupVerification {
    pub status: VerificationStatus,
    /// When the verification ended.
    pub at: DateTime<Utc>,
    /// How long it took, from claiming the job to the scratch database being dropped.
    pub duration_ms: i64,
    /// Tables found in the scratch database after the restore.
    pub tables: i64,
    /// Rows found in the scratch database after the restore, in all tables.
    pub rows: i64,
    /// Whether row counts recorded while dumping were there to compare with; without them
    /// (a backup taken before they were recorded, or a source whose tables could not be
    /// counted) only the restore itself is proven.
    pub compared: bool,
    /// Every table that differs; empty when verified.
    pub mismatches: Vec<Mismatch>,
    /// Why the verification failed, when the archive could not be restored at all.
    pub error_message: Option<String>,
}

/// Rows per table, keyed `schema.table`.
pub type TableCounts = BTreeMap<String, i64>;

/// Compares what the dump recorded (`expected`, when it recorded anything) with what the
/// scratch database holds after the restore.
#[must_use]
pub fn compare(expected: Option<&TableCounts>, restored: &TableCounts) -> Vec<Mismatch> {
    let Some(expected) = expected else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (table, &rows) in expected {
        match restored.get(table) {
            None => out.push(Mismatch {
                table: table.clone(),
                kind: MismatchKind::Missing,
                expected_rows: Some(rows),
                restored_rows: None,
            }),
            Some(&got) if got != rows => out.push(Mismatch {
                table: table.clone(),
                kind: MismatchKind::Rows,
                expected_rows: Some(rows),
                restored_rows: Some(got),
            }),
            Some(_) => {}
        }
    }
    for (table, &got) in restored {
        if !expected.contains_key(table) {
            out.push(Mismatch {
                table: table.clone(),
                kind: MismatchKind::Unexpected,
                expected_rows: None,
                restored_rows: Some(got),
            });
        }
    }
    out
}

/// The verification of an archive that restored.
#[must_use]
pub fn judge(
    expected: Option<&TableCounts>,
    restored: &TableCounts,
    at: DateTime<Utc>,
    duration_ms: i64,
) -> BackupVerification {
    let mismatches = compare(expected, restored);
    BackupVerification {
        status: if mismatches.is_empty() {
            VerificationStatus::Verified
        } else {
            VerificationStatus::Failed
        },
        at,
        duration_ms,
        tables: i64::try_from(restored.len()).unwrap_or(i64::MAX),
        rows: restored.values().sum(),
        compared: expected.is_some(),
        mismatches,
        error_message: None,
    }
}

/// The verification of an archive that could not be restored.
#[must_use]
pub fn failed(error: &str, at: DateTime<Utc>, duration_ms: i64) -> BackupVerification {
    BackupVerification {
        status: VerificationStatus::Failed,
        at,
        duration_ms,
        tables: 0,
        rows: 0,
        compared: false,
        mismatches: Vec::new(),
        error_message: Some(error.to_owned()),
    }
}

/// The scratch database a verification restores into: distinct from any tenant's name, short
/// enough for PostgreSQL's 63 bytes, and one per attempt so an attempt never loads another's.
#[must_use]
pub fn scratch_database(backup: uuid::Uuid, attempt: i32) -> String {
    let id = backup.simple().to_string();
    format!("svb_verify_{}_{attempt}", &id[id.len() - 16..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, i64)]) -> TableCounts {
        pairs.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
    }

    #[test]
    fn every_difference_is_named_by_table() {
        let expected = counts(&[("public.a", 3), ("public.b", 5), ("public.c", 0)]);
        let cases: &[(TableCounts, &[(&str, MismatchKind)])] = &[
            (expected.clone(), &[]),
            (
                counts(&[("public.a", 3), ("public.c", 0)]),
                &[("public.b", MismatchKind::Missing)],
            ),
            (
                counts(&[("public.a", 2), ("public.b", 5), ("public.c", 0)]),
                &[("public.a", MismatchKind::Rows)],
            ),
            (
                counts(&[("public.a", 3), ("public.b", 5), ("public.c", 0), ("public.z", 1)]),
                &[("public.z", MismatchKind::Unexpected)],
            ),
        ];
        for (restored, want) in cases {
            let found = compare(Some(&expected), restored);
            let got: Vec<(&str, MismatchKind)> = found.iter().map(|m| (m.table.as_str(), m.kind)).collect();
            assert_eq!(&got, want, "{restored:?}");
        }
        let missing = &compare(Some(&expected), &counts(&[("public.a", 3), ("public.c", 0)]))[0];
        assert_eq!((missing.expected_rows, missing.restored_rows), (Some(5), None));
    }

    #[test]
    fn verdicts_and_totals() {
        let now = Utc::now();
        let restored = counts(&[("public.a", 3), ("s.b", 4)]);
        let v = judge(Some(&restored.clone()), &restored, now, 12);
        assert_eq!(
            (v.status, v.tables, v.rows, v.compared),
            (VerificationStatus::Verified, 2, 7, true)
        );
        let v = judge(None, &restored, now, 12);
        assert_eq!((v.status, v.compared), (VerificationStatus::Verified, false));
        let v = judge(Some(&counts(&[("public.a", 3)])), &restored, now, 12);
        assert_eq!(v.status, VerificationStatus::Failed);
        let f = failed("cannot restore", now, 1);
        assert_eq!(
            (f.status, f.error_message.as_deref()),
            (VerificationStatus::Failed, Some("cannot restore"))
        );
    }

    #[test]
    fn scratch_names_are_distinct_and_short() {
        let id = uuid::Uuid::now_v7();
        let a = scratch_database(id, 1);
        assert!(a.starts_with("svb_verify_") && a.len() <= 63, "{a}");
        assert_ne!(a, scratch_database(id, 2));
    }
}
