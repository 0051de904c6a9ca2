//! Which of a planet's succeeded backups retention keeps, and why. Pure: the caller supplies the
//! backups, the policy and the clock.
//!
//! Rules, first match wins:
//! 1. The newest succeeded backup is kept, whatever its age: failures never erode the last good copy.
//!    So is the newest *verified* one (its last verification by restore passed): the last copy
//!    known to restore is never expired in favour of newer ones that are merely stored.
//! 2. Pinned backups are kept.
//! 3. A backup a restore or a verification is reading is kept until it ends.
//! 4. A temporary backup goes once its `expirationDate` has passed.
//! 5. With grandfather-father-son counts, a backup is kept when a count selects it (the N newest;
//!    the newest of each of the last N days, ISO weeks, months that have one, in the schedule's
//!    time zone) or when it is younger than `retentionPeriodInDays`; otherwise it goes.
//! 6. Without counts, a backup goes once it is older than `retentionPeriodInDays`, or, without
//!    a period, once its own `expirationDate` has passed.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ids::BackupId;
use crate::schedule::RetentionPolicy;

/// A succeeded backup as retention sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub id: BackupId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub pinned: bool,
    pub temporary: bool,
    pub expiration_date: Option<DateTime<Utc>>,
    /// An active restore or verification reads this backup.
    pub in_use: bool,
    /// Its last verification by restore passed.
    pub verified: bool,
}

/// What retention decides for one backup.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub backup_id: BackupId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// `true`: kept now; `false`: expires now.
    pub keep: bool,
    /// Why, for a person.
    pub reason: String,
}

/// Decides every backup, newest first. Backups given in any order.
#[must_use]
pub fn evaluate(policy: &RetentionPolicy, tz: Tz, backups: &[Candidate], now: DateTime<Utc>) -> Vec<Verdict> {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.0.cmp(&a.id.0)));
    let selected = gfs(policy, tz, sorted.iter().filter(|b| !b.temporary).copied());
    let newest_verified = sorted.iter().find(|b| b.verified).map(|b| b.id);
    sorted
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let (keep, reason) = if i > 0 && newest_verified == Some(b.id) {
                (
                    true,
                    "the newest verified backup of the planet is always kept".to_owned(),
                )
            } else {
                decide(policy, b, i == 0, selected.get(&b.id), now)
            };
            Verdict {
                backup_id: b.id,
                name: b.name.clone(),
                created_at: b.created_at,
                keep,
                reason,
            }
        })
        .collect()
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn decide(
    policy: &RetentionPolicy,
    b: &Candidate,
    newest: bool,
    selected_by: Option<&String>,
    now: DateTime<Utc>,
) -> (bool, String) {
    if newest {
        return (true, "the newest succeeded backup of the planet is always kept".into());
    }
    if b.pinned {
        return (true, "pinned".into());
    }
    if b.in_use {
        return (true, "a restore or a verification is reading it".into());
    }
    let expired = b.expiration_date.filter(|e| *e <= now);
    if b.temporary {
        return match expired {
            Some(e) => (false, format!("temporary backup, expired on {}", day(e))),
            None => (true, "temporary backup, not yet expired".into()),
        };
    }
    let young = policy
        .retention_period_in_days
        .filter(|days| now - b.created_at < chrono::Duration::days(i64::from(*days)));
    if policy.has_counts() {
        if let Some(why) = selected_by {
            return (true, format!("kept by {why}"));
        }
        if let Some(days) = young {
            return (true, format!("younger than the retention period of {days} days"));
        }
        return (
            false,
            format!("not selected by the policy ({})", policy.describe_counts())
                + &policy
                    .retention_period_in_days
                    .map(|d| format!(" and older than {d} days"))
                    .unwrap_or_default(),
        );
    }
    match (policy.retention_period_in_days, young, expired) {
        (Some(days), None, _) => (false, format!("older than the retention period of {days} days")),
        (Some(days), Some(_), _) => (true, format!("younger than the retention period of {days} days")),
        (None, _, Some(e)) => (false, format!("its retention period ended on {}", day(e))),
        (None, _, None) => (true, "within its retention period".into()),
    }
}

/// The calendar bucket (day, ISO week, month) a local time falls in.
type BucketOf = fn(DateTime<Tz>) -> (i32, u32, u32);

/// The backups each count selects, with the first count that selected each.
fn gfs<'a>(
    policy: &RetentionPolicy,
    tz: Tz,
    newest_first: impl Iterator<Item = &'a Candidate> + Clone,
) -> std::collections::HashMap<BackupId, String> {
    let mut kept = std::collections::HashMap::new();
    if let Some(n) = policy.keep_last {
        for b in newest_first.clone().take(usize::try_from(n).unwrap_or(0)) {
            kept.entry(b.id).or_insert_with(|| format!("keepLast {n}"));
        }
    }
    let buckets: [(Option<i32>, &str, BucketOf); 3] = [
        (policy.keep_daily, "keepDaily", |t| (t.year(), t.month(), t.day())),
        (policy.keep_weekly, "keepWeekly", |t| {
            let w = t.iso_week();
            (w.year(), w.week(), 0)
        }),
        (policy.keep_monthly, "keepMonthly", |t| (t.year(), t.month(), 0)),
    ];
    for (count, name, bucket_of) in buckets {
        let Some(n) = count else { continue };
        let mut seen = HashSet::new();
        for b in newest_first.clone() {
            if seen.len() >= usize::try_from(n).unwrap_or(0) {
                break;
            }
            // The first backup met in a bucket, newest first, is that bucket's newest.
            if seen.insert(bucket_of(b.created_at.with_timezone(&tz))) {
                kept.entry(b.id).or_insert_with(|| format!("{name} {n}"));
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A succeeded backup taken at `when`, expiring after `days`.
    fn backup(when: &str, days: i64) -> Candidate {
        let created_at = at(when);
        Candidate {
            id: BackupId::new(),
            name: when.into(),
            created_at,
            pinned: false,
            temporary: false,
            expiration_date: Some(created_at + chrono::Duration::days(days)),
            in_use: false,
            verified: false,
        }
    }

    fn deleted(policy: &RetentionPolicy, backups: &[Candidate], now: &str) -> Vec<String> {
        let mut names: Vec<String> = evaluate(policy, chrono_tz::UTC, backups, at(now))
            .into_iter()
            .filter(|v| !v.keep)
            .map(|v| v.name)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn table() {
        let counts = |last, daily, weekly, monthly| RetentionPolicy {
            keep_last: last,
            keep_daily: daily,
            keep_weekly: weekly,
            keep_monthly: monthly,
            ..RetentionPolicy::default()
        };
        let period = |d| RetentionPolicy {
            retention_period_in_days: Some(d),
            ..RetentionPolicy::default()
        };
        // Three good backups, then ten failures (which never reach retention) and a month's wait:
        // every backup is past its period, and only the newest succeeded one is guaranteed.
        let three = [
            backup("2026-01-01T02:00:00Z", 7),
            backup("2026-01-02T02:00:00Z", 7),
            backup("2026-01-03T02:00:00Z", 7),
        ];
        // Daily backups at 02:00 over 70 days, 2026-01-01 (a Thursday) to 2026-03-11.
        let daily: Vec<Candidate> = (0..70)
            .map(|d| {
                let t = at("2026-01-01T02:00:00Z") + chrono::Duration::days(d);
                let mut b = backup(&t.to_rfc3339(), 365);
                b.name = day(t);
                b
            })
            .collect();
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let kept_of = |policy: &RetentionPolicy, now: &str| -> Vec<String> {
            let mut k: Vec<String> = evaluate(policy, chrono_tz::UTC, &daily, at(now))
                .into_iter()
                .filter(|v| v.keep)
                .map(|v| v.name)
                .collect();
            k.sort();
            k
        };

        struct Case<'a> {
            what: &'a str,
            policy: RetentionPolicy,
            backups: Vec<Candidate>,
            now: &'a str,
            deleted: Vec<String>,
        }
        let cases = [
            Case {
                what: "own expiration dates, all past: all but the newest go",
                policy: RetentionPolicy::default(),
                backups: three.to_vec(),
                now: "2026-02-01T00:00:00Z",
                deleted: names(&["2026-01-01T02:00:00Z", "2026-01-02T02:00:00Z"]),
            },
            Case {
                what: "keepLast 3 after ten failures: the three successes stay",
                policy: counts(Some(3), None, None, None),
                backups: three.to_vec(),
                now: "2027-01-01T00:00:00Z",
                deleted: vec![],
            },
            Case {
                what: "nothing is due yet",
                policy: period(30),
                backups: three.to_vec(),
                now: "2026-01-20T00:00:00Z",
                deleted: vec![],
            },
            Case {
                what: "period: older than 30 days goes, except the newest",
                policy: period(30),
                backups: three.to_vec(),
                now: "2026-02-01T12:00:00Z",
                deleted: names(&["2026-01-01T02:00:00Z", "2026-01-02T02:00:00Z"]),
            },
            Case {
                what: "keepLast 1 with a period keeps the young ones",
                policy: RetentionPolicy {
                    keep_last: Some(1),
                    retention_period_in_days: Some(2),
                    ..RetentionPolicy::default()
                },
                backups: three.to_vec(),
                now: "2026-01-03T12:00:00Z",
                deleted: names(&["2026-01-01T02:00:00Z"]),
            },
            Case {
                what: "pinned backups survive every rule",
                policy: counts(Some(1), None, None, None),
                backups: {
                    let mut v = three.to_vec();
                    v[0].pinned = true;
                    v
                },
                now: "2026-06-01T00:00:00Z",
                deleted: names(&["2026-01-02T02:00:00Z"]),
            },
            Case {
                what: "a backup being restored from is kept",
                policy: counts(Some(1), None, None, None),
                backups: {
                    let mut v = three.to_vec();
                    v[1].in_use = true;
                    v
                },
                now: "2026-06-01T00:00:00Z",
                deleted: names(&["2026-01-01T02:00:00Z"]),
            },
            Case {
                what: "the newest verified backup is kept, older verified ones are not",
                policy: counts(Some(1), None, None, None),
                backups: {
                    let mut v = three.to_vec();
                    v[0].verified = true;
                    v[1].verified = true;
                    v
                },
                now: "2026-06-01T00:00:00Z",
                deleted: names(&["2026-01-01T02:00:00Z"]),
            },
            Case {
                what: "the newest backup being verified too, the older ones go",
                policy: period(30),
                backups: {
                    let mut v = three.to_vec();
                    v[2].verified = true;
                    v
                },
                now: "2026-06-01T00:00:00Z",
                deleted: names(&["2026-01-01T02:00:00Z", "2026-01-02T02:00:00Z"]),
            },
            Case {
                what: "temporary backups go after their own period even under keepLast",
                policy: counts(Some(10), None, None, None),
                backups: {
                    let mut v = three.to_vec();
                    v[1].temporary = true;
                    v[1].expiration_date = Some(at("2026-01-03T02:00:00Z"));
                    v
                },
                now: "2026-01-04T00:00:00Z",
                deleted: names(&["2026-01-02T02:00:00Z"]),
            },
        ];
        for c in cases {
            assert_eq!(deleted(&c.policy, &c.backups, c.now), c.deleted, "{}", c.what);
        }

        // GFS over the 70 daily backups, judged on 2026-03-11 12:00.
        let now = "2026-03-11T12:00:00Z";
        assert_eq!(
            kept_of(&counts(Some(2), None, None, None), now),
            names(&["2026-03-10", "2026-03-11"])
        );
        assert_eq!(
            kept_of(&counts(None, Some(3), None, None), now),
            names(&["2026-03-09", "2026-03-10", "2026-03-11"])
        );
        // ISO weeks end on Sunday: 03-08, 03-01, 02-22 close the three weeks before this one.
        assert_eq!(
            kept_of(&counts(None, None, Some(4), None), now),
            names(&["2026-02-22", "2026-03-01", "2026-03-08", "2026-03-11"])
        );
        assert_eq!(
            kept_of(&counts(None, None, None, Some(3)), now),
            names(&["2026-01-31", "2026-02-28", "2026-03-11"])
        );
        // Combined: the union, each backup once.
        assert_eq!(
            kept_of(&counts(Some(1), Some(2), Some(2), Some(2)), now),
            names(&["2026-02-28", "2026-03-08", "2026-03-10", "2026-03-11"])
        );
    }

    #[test]
    fn days_follow_the_schedule_time_zone() {
        // 23:30 UTC on 1 March is already 2 March in Berlin: two backups on the same Berlin day.
        let backups = [backup("2026-03-01T23:30:00Z", 365), backup("2026-03-02T20:00:00Z", 365)];
        let policy = RetentionPolicy {
            keep_daily: Some(2),
            ..RetentionPolicy::default()
        };
        let now = at("2026-03-03T00:00:00Z");
        let berlin = evaluate(&policy, chrono_tz::Europe::Berlin, &backups, now);
        assert_eq!(berlin.iter().filter(|v| !v.keep).count(), 1);
        let utc = evaluate(&policy, chrono_tz::UTC, &backups, now);
        assert_eq!(utc.iter().filter(|v| !v.keep).count(), 0);
        assert!(
            berlin[1].reason.starts_with("not selected by the policy (keepDaily 2)"),
            "{}",
            berlin[1].reason
        );
    }

    #[test]
    fn the_preview_says_why_the_verified_backup_stays() {
        let mut old = backup("2026-01-01T02:00:00Z", 7);
        old.verified = true;
        let backups = [old, backup("2026-01-02T02:00:00Z", 7)];
        let v = evaluate(
            &RetentionPolicy::default(),
            chrono_tz::UTC,
            &backups,
            at("2026-03-01T00:00:00Z"),
        );
        assert!(v.iter().all(|v| v.keep), "{v:?}");
        assert_eq!(v[1].reason, "the newest verified backup of the planet is always kept");
    }
}
