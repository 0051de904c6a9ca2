//! Backup schedules: a five-field cron expression read in an IANA time zone, and the retention
//! policy applied to the planet's backups. Cron parsing and the daylight-saving rules are
//! croner's (OCPS / Vixie cron): a fixed-time run that falls into the spring-forward gap runs
//! right after it, on the same day; one that falls into the repeated autumn hour runs once, at
//! its first occurrence. Interval patterns (`*/15 * * * *`) skip the gap and run in both passes
//! of the repeated hour.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::backup::Mechanism;
use crate::domain::string_enum;
use crate::error::FieldError;
use crate::ids::{BackupId, PlanetId, ProjectId, TenantId};

/// Counting missed runs after downtime stops here; the count is for reporting only.
const MISSED_COUNT_CAP: u32 = 10_000;

/// How long the planet's backups are kept. Without counts, a backup is kept until it is older
/// than `retentionPeriodInDays` (or, with no period either, until its own `expirationDate`).
/// With counts (grandfather-father-son), a backup is kept when a count selects it or when it is
/// younger than `retentionPeriodInDays`. The newest succeeded backup and pinned backups are
/// always kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionPolicy {
    /// 1–3650 days.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3650)]
    pub retention_period_in_days: Option<i32>,
    /// Keep the N newest backups (1–1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub keep_last: Option<i32>,
    /// Keep the newest backup of each of the last N days that have one (1–1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub keep_daily: Option<i32>,
    /// Keep the newest backup of each of the last N ISO weeks that have one (1–1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub keep_weekly: Option<i32>,
    /// Keep the newest backup of each of the last N months that have one (1–1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub keep_monthly: Option<i32>,
}

impl RetentionPolicy {
    /// Field errors, named under `prefix` (e.g. `retention.keepDaily`).
    #[must_use]
    pub fn validate(&self, prefix: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(d) = self.retention_period_in_days
            && !(1..=3650).contains(&d)
        {
            errors.push(FieldError::new(
                format!("{prefix}retentionPeriodInDays"),
                "must be between 1 and 3650",
            ));
        }
        for (name, value) in self.counts() {
            if let Some(n) = value
                && !(1..=1000).contains(&n)
            {
                errors.push(FieldError::new(format!("{prefix}{name}"), "must be between 1 and 1000"));
            }
        }
        errors
    }

    fn counts(&self) -> [(&'static str, Option<i32>); 4] {
        [
            ("keepLast", self.keep_last),
            ("keepDaily", self.keep_daily),
            ("keepWeekly", self.keep_weekly),
            ("keepMonthly", self.keep_monthly),
        ]
    }

    /// Whether any grandfather-father-son count is set.
    #[must_use]
    pub fn has_counts(&self) -> bool {
        self.counts().iter().any(|(_, v)| v.is_some())
    }

    /// `keepLast 3, keepDaily 7`, for explanations.
    #[must_use]
    pub fn describe_counts(&self) -> String {
        self.counts()
            .iter()
            .filter_map(|(name, v)| v.map(|n| format!("{name} {n}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A parsed cron expression and the time zone it is read in.
#[derive(Debug, Clone)]
pub struct Spec {
    cron: Cron,
    tz: Tz,
}

/// Parses a time zone name of the IANA database (`Europe/Berlin`, `UTC`).
pub fn parse_timezone(field: &str, raw: &str) -> Result<Tz, FieldError> {
    raw.parse::<Tz>().map_err(|_| {
        FieldError::new(
            field,
            format!("`{raw}` is not a time zone of the IANA database, e.g. `Europe/Berlin` or `UTC`"),
        )
    })
}

impl Spec {
    /// Parses five-field cron (`minute hour day-of-month month day-of-week`) and a time zone,
    /// naming the offending field.
    pub fn parse(cron: &str, timezone: &str) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let fields = cron.split_whitespace().count();
        let parsed = if fields == 5 {
            CronParser::builder()
                .seconds(Seconds::Disallowed)
                .year(Year::Disallowed)
                .build()
                .parse(cron)
                .map_err(|e| errors.push(FieldError::new("cron", format!("invalid cron expression: {e}"))))
                .ok()
        } else {
            errors.push(FieldError::new(
                "cron",
                format!("must have 5 fields (minute hour day-of-month month day-of-week), found {fields}"),
            ));
            None
        };
        let tz = parse_timezone("timezone", timezone).map_err(|e| errors.push(e)).ok();
        match (parsed, tz) {
            (Some(cron), Some(tz)) if errors.is_empty() => {
                let spec = Self { cron, tz };
                if spec.next_after(Utc::now()).is_none() {
                    return Err(vec![FieldError::new(
                        "cron",
                        "never matches a date (such as the 30th of February)",
                    )]);
                }
                Ok(spec)
            }
            _ => Err(errors),
        }
    }

    #[must_use]
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first run strictly after `after`.
    #[must_use]
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The longest gap between consecutive runs among the next `runs` after `from`: how long a
    /// planet may go between two scheduled backups (a weekday-only cron waits over weekends).
    #[must_use]
    pub fn longest_gap(&self, from: DateTime<Utc>, runs: usize) -> Option<chrono::Duration> {
        let mut at = self.next_after(from)?;
        let mut longest: Option<chrono::Duration> = None;
        for _ in 0..runs {
            let next = self.next_after(at)?;
            let gap = next - at;
            longest = Some(longest.map_or(gap, |l| l.max(gap)));
            at = next;
        }
        longest
    }

    /// The shortest gap between consecutive runs among the next `runs` after `from`.
    #[must_use]
    pub fn shortest_gap(&self, from: DateTime<Utc>, runs: usize) -> Option<chrono::Duration> {
        let mut at = self.next_after(from)?;
        let mut shortest: Option<chrono::Duration> = None;
        for _ in 0..runs {
            let next = self.next_after(at)?;
            let gap = next - at;
            shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
            at = next;
        }
        shortest
    }

    /// Runs strictly after `from` and at or before `until` (capped), for reporting missed runs.
    #[must_use]
    pub fn count_between(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> u32 {
        let mut n = 0;
        let mut at = from;
        while n < MISSED_COUNT_CAP {
            match self.next_after(at) {
                Some(t) if t <= until => {
                    n += 1;
                    at = t;
                }
                _ => break,
            }
        }
        n
    }
}

/// A planet's backup schedule.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub planet_id: PlanetId,
    /// Five fields: minute hour day-of-month month day-of-week.
    #[schema(example = "30 2 * * *")]
    pub cron: String,
    /// IANA time zone the cron expression is read in.
    #[schema(example = "Europe/Berlin")]
    pub timezone: String,
    pub enabled: bool,
    pub mechanism: Mechanism,
    pub retention: RetentionPolicy,
    /// Every how many backups of the planet one is verified by restore; absent: only on demand.
    pub verify_every: Option<i32>,
    /// When the planet's newest backup is verified by restore, in the schedule's time zone;
    /// absent: no verification on a cron.
    #[schema(example = "0 6 * * 1")]
    pub verify_cron: Option<String>,
    /// When the next verification on the cron is due; absent without one or while disabled.
    pub next_verification_at: Option<DateTime<Utc>>,
    pub verify_on: VerifyOn,
    /// When the next backup is due; absent while disabled.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The last due time handled.
    pub last_run_at: Option<DateTime<Utc>>,
    /// What became of it: a backup created, or why the run was skipped.
    pub last_outcome: Option<String>,
    pub last_backup_id: Option<BackupId>,
    /// Due runs skipped because a backup of the planet was still in progress or a limit was reached.
    pub skipped_runs: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

string_enum!(
    /// Where verifications of the planet's backups restore: `platform`, a scratch database on
    /// the platform's verification server (the default); `source`, a scratch database on the
    /// planet's own server, which its user must be allowed to create and drop.
    VerifyOn { Platform => "platform", Source => "source" }
);

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub cron: String,
    pub timezone: String,
    pub spec: Spec,
    pub enabled: bool,
    pub mechanism: Mechanism,
    pub retention: RetentionPolicy,
    pub verify_every: Option<i32>,
    /// The verification cron, as given and parsed.
    pub verify_cron: Option<(String, Spec)>,
    pub verify_on: VerifyOn,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn longest_gap_spans_a_weekend() {
        let daily = Spec::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            daily.longest_gap(utc("2026-06-01T00:00:00Z"), 16),
            Some(chrono::Duration::days(1))
        );
        let weekdays = Spec::parse("0 6 * * 1-5", "UTC").unwrap();
        assert_eq!(
            weekdays.longest_gap(utc("2026-06-01T00:00:00Z"), 16),
            Some(chrono::Duration::days(3))
        );
        let hourly = Spec::parse("0 * * * *", "UTC").unwrap();
        assert_eq!(
            hourly.longest_gap(utc("2026-06-01T00:00:00Z"), 16),
            Some(chrono::Duration::hours(1))
        );
    }

    fn runs(spec: &Spec, from: &str, n: usize) -> Vec<DateTime<Utc>> {
        let mut at = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            at = spec.next_after(at).unwrap();
            out.push(at);
        }
        out
    }

    #[test]
    fn refuses_bad_expressions_naming_the_field() {
        for bad in [
            "",
            "* * * *",
            "0 0 * * * *",
            "61 * * * *",
            "0 25 * * *",
            "x y z w v",
            "0 0 30 2 *",
        ] {
            let errors = Spec::parse(bad, "UTC").unwrap_err();
            assert_eq!(errors[0].field, "cron", "{bad}");
        }
        let errors = Spec::parse("0 2 * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(errors, vec![FieldError::new("timezone", errors[0].message.clone())]);
        assert_eq!(Spec::parse("nope", "Nowhere").unwrap_err().len(), 2);
        assert!(Spec::parse("*/15 2-4 1,15 * MON-FRI", "Europe/Berlin").is_ok());
    }

    #[test]
    fn fixed_time_across_spring_forward_runs_right_after_the_gap() {
        // 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
        let spec = Spec::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            runs(&spec, "2026-03-28T00:00:00Z", 3),
            vec![
                utc("2026-03-28T01:30:00Z"), // 02:30 CET
                utc("2026-03-29T01:00:00Z"), // 03:00 CEST, right after the gap
                utc("2026-03-30T00:30:00Z"), // 02:30 CEST
            ]
        );
    }

    #[test]
    fn fixed_time_across_fall_back_runs_once() {
        // 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
        let spec = Spec::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            runs(&spec, "2026-10-24T12:00:00Z", 2),
            vec![
                utc("2026-10-25T00:30:00Z"), // 02:30 CEST, the first pass only
                utc("2026-10-26T01:30:00Z"), // 02:30 CET
            ]
        );
    }

    #[test]
    fn interval_patterns_skip_the_gap_and_run_in_both_passes() {
        let spec = Spec::parse("*/30 * * * *", "Europe/Berlin").unwrap();
        // Spring: 01:30 CET, then 03:00 CEST; nothing at 02:00 or 02:30.
        assert_eq!(
            runs(&spec, "2026-03-29T00:15:00Z", 2),
            vec![utc("2026-03-29T00:30:00Z"), utc("2026-03-29T01:00:00Z")]
        );
        // Autumn: 02:00 and 02:30 in CEST, then again in CET.
        assert_eq!(
            runs(&spec, "2026-10-24T23:45:00Z", 5),
            vec![
                utc("2026-10-25T00:00:00Z"),
                utc("2026-10-25T00:30:00Z"),
                utc("2026-10-25T01:00:00Z"),
                utc("2026-10-25T01:30:00Z"),
                utc("2026-10-25T02:00:00Z"),
            ]
        );
    }

    #[test]
    fn counts_missed_runs() {
        let spec = Spec::parse("0 * * * *", "UTC").unwrap();
        assert_eq!(
            spec.count_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T05:30:00Z")),
            5
        );
        assert_eq!(
            spec.count_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T00:59:00Z")),
            0
        );
    }

    #[test]
    fn policy_validation_names_fields() {
        let p = RetentionPolicy {
            retention_period_in_days: Some(0),
            keep_daily: Some(5000),
            ..RetentionPolicy::default()
        };
        let fields: Vec<_> = p.validate("retention.").into_iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["retention.retentionPeriodInDays", "retention.keepDaily"]);
        assert!(!p.has_counts() || p.describe_counts() == "keepDaily 5000");
    }
}
