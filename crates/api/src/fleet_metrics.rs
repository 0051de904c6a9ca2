//! Catalog gauges of the API's `/metrics`: each planet's recovery point, the queue, stored bytes.
//!
//! Rendered from a fresh read of the control database (at most every `metrics.refresh_secs`)
//! rather than kept in the process's recorder, so a deleted planet or a drained queue leaves no
//! stale series behind. Every API replica reports the same values: aggregate with `max`.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::LabelSet;
use metrics_exporter_prometheus::formatting::{write_help_line, write_metric_line, write_type_line};
use sqlx::PgPool;
use svalbard_core::config::MetricsConfig;
use svalbard_core::repo::fleet::{self, Fleet};
use svalbard_core::schedule::Spec;

/// Runs looked at to find a schedule's longest gap (a week of a daily schedule, twice).
const GAP_RUNS: usize = 14;

/// The gauges as exposition text, from a snapshot no older than `refresh_secs`.
pub async fn text(pool: &PgPool, config: &MetricsConfig) -> String {
    static CACHE: Mutex<Option<(Instant, String)>> = Mutex::new(None);
    let fresh = Duration::from_secs(config.refresh_secs);
    if let Ok(cache) = CACHE.lock()
        && let Some((at, text)) = cache.as_ref()
        && at.elapsed() < fresh
    {
        return text.clone();
    }
    let limit = i64::try_from(config.planet_series_limit).unwrap_or(i64::MAX);
    let text = match fleet::snapshot(pool, limit).await {
        Ok(snapshot) => render(&snapshot, config, Utc::now()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the catalog for /metrics");
            let mut out = String::new();
            gauge_header(
                &mut out,
                "svalbard_catalog_up",
                "Whether the catalog gauges could be read (1) or not (0).",
            );
            line(&mut out, "svalbard_catalog_up", &[], 0.0);
            return out;
        }
    };
    if let Ok(mut cache) = CACHE.lock() {
        *cache = Some((Instant::now(), text.clone()));
    }
    text
}

/// One snapshot as exposition text.
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn render(snapshot: &Fleet, config: &MetricsConfig, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    gauge_header(
        &mut out,
        "svalbard_catalog_up",
        "Whether the catalog gauges could be read (1) or not (0).",
    );
    line(&mut out, "svalbard_catalog_up", &[], 1.0);

    let labels = |p: &fleet::PlanetPoint| {
        let mut l = vec![
            ("tenant_id", p.tenant_id.to_string()),
            ("project_id", p.project_id.to_string()),
            ("planet_id", p.planet_id.to_string()),
        ];
        if config.name_labels {
            l.push(("tenant", p.tenant.clone()));
            l.push(("project", p.project.clone()));
            l.push(("planet", p.planet.clone()));
        }
        l
    };
    let ts = |t: DateTime<Utc>| t.timestamp_millis() as f64 / 1000.0;
    let gaps: Vec<Option<f64>> = snapshot
        .planets
        .iter()
        .map(|p| {
            let spec = Spec::parse(p.cron.as_deref()?, p.timezone.as_deref()?).ok()?;
            Some(spec.longest_gap(now, GAP_RUNS)?.num_seconds() as f64)
        })
        .collect();

    type Value = fn(&fleet::PlanetPoint, Option<f64>, &MetricsConfig, &dyn Fn(DateTime<Utc>) -> f64) -> Option<f64>;
    let planet_gauges: [(&str, &str, Value); 6] = [
        (
            "svalbard_planet_last_success_timestamp_seconds",
            "Unix time (seconds) the newest succeeded backup of the planet completed; absent when it has none.",
            |p, _, _, ts| p.last_success.map(ts),
        ),
        (
            "svalbard_planet_last_failure_timestamp_seconds",
            "Unix time (seconds) the newest failed or incomplete backup of the planet ended; absent when none failed.",
            |p, _, _, ts| p.last_failure.map(ts),
        ),
        (
            "svalbard_planet_created_timestamp_seconds",
            "Unix time (seconds) the planet was created: the recovery point's floor before its first backup.",
            |p, _, _, ts| Some(ts(p.created_at)),
        ),
        (
            "svalbard_planet_failures_since_success",
            "Failed or incomplete backups of the planet since its newest succeeded one (backups).",
            |p, _, _, _| Some(p.failures_since_success as f64),
        ),
        (
            "svalbard_planet_schedule_interval_seconds",
            "Longest gap (seconds) between two runs of the planet's enabled schedule; absent without one.",
            |_, gap, _, _| gap,
        ),
        (
            "svalbard_planet_rpo_target_seconds",
            "Oldest the newest good backup may be (seconds): twice the schedule's longest gap, or metrics.rpo_unscheduled_secs for planets without a schedule; absent when neither applies.",
            |_, gap, config, _| {
                gap.map(|g| 2.0 * g)
                    .or((config.rpo_unscheduled_secs > 0).then_some(config.rpo_unscheduled_secs as f64))
            },
        ),
    ];
    for (name, help, value) in planet_gauges {
        gauge_header(&mut out, name, help);
        for (p, gap) in snapshot.planets.iter().zip(&gaps) {
            if let Some(v) = value(p, *gap, config, &ts) {
                line(&mut out, name, &labels(p), v);
            }
        }
    }
    gauge_header(
        &mut out,
        "svalbard_planets_unexported",
        "Planets without series of their own because of metrics.planet_series_limit (planets).",
    );
    line(
        &mut out,
        "svalbard_planets_unexported",
        &[],
        snapshot.planets_left_out as f64,
    );

    gauge_header(
        &mut out,
        "svalbard_jobs_queued",
        "Jobs waiting in the queue, due or not, by kind (jobs).",
    );
    for q in &snapshot.queue {
        line(
            &mut out,
            "svalbard_jobs_queued",
            &[("kind", q.kind.clone())],
            q.queued as f64,
        );
    }
    gauge_header(
        &mut out,
        "svalbard_jobs_oldest_due_seconds",
        "How long (seconds) the longest-waiting due job of a kind has been ready without a worker taking it.",
    );
    for q in &snapshot.queue {
        line(
            &mut out,
            "svalbard_jobs_oldest_due_seconds",
            &[("kind", q.kind.clone())],
            q.oldest_due_secs,
        );
    }
    gauge_header(
        &mut out,
        "svalbard_tenant_stored_bytes",
        "Bytes of a tenant's stored archives, as its storedBytes limit counts them (bytes).",
    );
    for (tenant, name, bytes) in &snapshot.stored_bytes {
        let mut l = vec![("tenant_id", tenant.to_string())];
        if config.name_labels {
            l.push(("tenant", name.clone()));
        }
        line(&mut out, "svalbard_tenant_stored_bytes", &l, *bytes as f64);
    }
    out
}

fn gauge_header(out: &mut String, name: &str, help: &str) {
    write_help_line(out, name, None, None, help);
    write_type_line(out, name, None, None, "gauge");
}

fn line(out: &mut String, name: &str, labels: &[(&'static str, String)], value: f64) {
    let key = metrics::Key::from_parts(
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| metrics::Label::new(*k, v.clone()))
            .collect::<Vec<_>>(),
    );
    let set = LabelSet::from_key_and_global(&key, &indexmap::IndexMap::new());
    write_metric_line::<&str, f64>(out, name, None, &set, None, value, None);
    // The helper ends each line itself; keep the output well-formed if that ever changes.
    if !out.ends_with('\n') {
        let _ = writeln!(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use svalbard_core::repo::fleet::{PlanetPoint, QueuePoint};
    use uuid::Uuid;

    fn config() -> MetricsConfig {
        MetricsConfig {
            planet_series_limit: 10,
            name_labels: true,
            rpo_unscheduled_secs: 0,
            refresh_secs: 15,
        }
    }

    fn planet(cron: Option<&str>) -> PlanetPoint {
        PlanetPoint {
            tenant_id: Uuid::now_v7(),
            project_id: Uuid::now_v7(),
            planet_id: Uuid::now_v7(),
            tenant: "acme".into(),
            project: "shop".into(),
            planet: "orders \"eu\"\n".into(),
            created_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            last_success: Some("2026-06-01T02:30:00Z".parse().unwrap()),
            last_failure: None,
            failures_since_success: 2,
            cron: cron.map(str::to_owned),
            timezone: cron.map(|_| "UTC".to_owned()),
        }
    }

    #[test]
    fn planets_queue_and_bytes_render_with_escaped_labels() {
        let fleet = Fleet {
            planets: vec![planet(Some("30 2 * * *")), planet(None)],
            planets_left_out: 3,
            queue: vec![QueuePoint {
                kind: "backup".into(),
                queued: 4,
                oldest_due_secs: 12.5,
            }],
            stored_bytes: vec![(Uuid::now_v7(), "acme".into(), 1024)],
        };
        let text = render(&fleet, &config(), "2026-06-01T12:00:00Z".parse().unwrap());
        assert!(text.contains("# HELP svalbard_planet_last_success_timestamp_seconds Unix time (seconds)"));
        assert!(text.contains("# TYPE svalbard_planet_rpo_target_seconds gauge"));
        // The scheduled planet has an interval and a target of twice it; the other has neither.
        assert_eq!(text.matches("svalbard_planet_schedule_interval_seconds{").count(), 1);
        assert!(text.contains("} 86400\n"), "{text}");
        assert!(text.contains("} 172800\n"), "{text}");
        assert_eq!(text.matches("svalbard_planet_rpo_target_seconds{").count(), 1);
        assert!(text.contains("svalbard_planet_last_success_timestamp_seconds{") && text.contains("} 1780281000\n"));
        assert!(text.contains(r#"planet="orders \"eu\"\n""#), "{text}");
        assert!(text.contains(r#"svalbard_jobs_queued{kind="backup"} 4"#));
        assert!(text.contains(r#"svalbard_jobs_oldest_due_seconds{kind="backup"} 12.5"#));
        assert!(text.contains("svalbard_planets_unexported 3"));
        assert!(text.contains(r#"tenant="acme"} 1024"#));
        assert!(!text.contains("svalbard_planet_last_failure_timestamp_seconds{"));
    }

    #[test]
    fn unscheduled_planets_take_the_configured_target() {
        let fleet = Fleet {
            planets: vec![planet(None)],
            ..Fleet::default()
        };
        let mut c = config();
        c.rpo_unscheduled_secs = 3600;
        c.name_labels = false;
        let text = render(&fleet, &c, Utc::now());
        assert!(text.contains("} 3600\n"), "{text}");
        assert!(!text.contains("planet=\""), "{text}");
    }
}
