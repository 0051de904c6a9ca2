//! What operators see: `/metrics` of the API and of a real `svalbard work` after a backup, a
//! failed backup and a restore, checked against the shipped Grafana dashboard and alert rules —
//! every metric, label and label value they name must exist in a real scrape.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use promql_parser::parser::{self, Expr};
use serde_json::{Value, json};
use svalbard_testkit::source;

use crate::harness::Env;

const MINUTE: Duration = Duration::from_secs(60);

/// Family name → label name → values seen, from Prometheus text; and the `# HELP` of each family.
#[derive(Default)]
struct Scrape {
    series: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    help: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn parse(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                self.help.insert(name.to_owned(), help.to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (head, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match head.split_once('{') {
                Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
                None => (head, BTreeMap::new()),
            };
            let family = self.series.entry(name.to_owned()).or_default();
            for (k, v) in &labels {
                family.entry(k.clone()).or_default().insert(v.clone());
            }
            self.samples.push((name.to_owned(), labels, value.parse().unwrap()));
        }
    }

    /// The value of the one sample of `name` whose labels include `with`.
    fn value(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && with.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, _, v)| *v)
    }
}

fn parse_labels(raw: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = raw;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_owned(), value);
        rest = &after[end..];
    }
    out
}

/// A label matcher: label, value, and whether the value is a regular expression.
type LabelMatch = (String, String, bool);

/// What an expression reads: metric names with their label matchers, and grouping labels.
#[derive(Default, Debug)]
struct Reads {
    selectors: Vec<(String, Vec<LabelMatch>)>,
    grouping: BTreeSet<String>,
}

fn walk(expr: &Expr, reads: &mut Reads) {
    let mut labels = |m: &Option<parser::LabelModifier>| {
        if let Some(m) = m {
            reads.grouping.extend(m.labels().labels.iter().cloned());
        }
    };
    match expr {
        Expr::Aggregate(a) => {
            labels(&a.modifier);
            walk(&a.expr, reads);
            if let Some(p) = &a.param {
                walk(p, reads);
            }
        }
        Expr::Binary(b) => {
            if let Some(m) = &b.modifier {
                labels(&m.matching);
            }
            walk(&b.lhs, reads);
            walk(&b.rhs, reads);
        }
        Expr::Unary(u) => walk(&u.expr, reads),
        Expr::Paren(p) => walk(&p.expr, reads),
        Expr::Subquery(s) => walk(&s.expr, reads),
        Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, reads)),
        Expr::VectorSelector(vs) => selector(vs, reads),
        Expr::MatrixSelector(ms) => selector(&ms.vs, reads),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector(vs: &parser::VectorSelector, reads: &mut Reads) {
    let name = vs.name.clone().expect("every selector names its metric");
    let matchers = vs
        .matchers
        .matchers
        .iter()
        .filter(|m| m.name != "__name__")
        .map(|m| {
            let regex = matches!(m.op, promql_parser::label::MatchOp::Re(_));
            (m.name.clone(), m.value.clone(), regex)
        })
        .collect();
    reads.selectors.push((name, matchers));
}

/// Labels Prometheus adds when it scrapes, or that histograms carry.
const SCRAPE_LABELS: [&str; 3] = ["instance", "job", "le"];

/// What in `expr` (from `origin`) the scrape does not have.
fn unknown_in(origin: &str, expr: &str, scrape: &Scrape) -> Vec<String> {
    let parsed = parser::parse(expr).unwrap_or_else(|e| panic!("{origin}: `{expr}` does not parse: {e}"));
    let mut reads = Reads::default();
    walk(&parsed, &mut reads);
    let mut problems = Vec::new();
    let mut labels_of_expr = BTreeSet::new();
    for (name, matchers) in &reads.selectors {
        let Some(family) = scrape.series.get(name) else {
            problems.push(format!("{origin}: metric {name} is not exported"));
            continue;
        };
        labels_of_expr.extend(family.keys().cloned());
        for (label, value, regex) in matchers {
            let Some(values) = family.get(label) else {
                problems.push(format!("{origin}: {name} has no label {label}"));
                continue;
            };
            let wanted: Vec<&str> = if *regex {
                value.split('|').collect()
            } else {
                vec![value.as_str()]
            };
            for w in wanted {
                if !values.contains(w) {
                    problems.push(format!("{origin}: {name} never has {label}=\"{w}\" (seen: {values:?})"));
                }
            }
        }
    }
    for label in &reads.grouping {
        if !SCRAPE_LABELS.contains(&label.as_str()) && !labels_of_expr.contains(label) {
            problems.push(format!("{origin}: groups by {label}, which none of its metrics has"));
        }
    }
    problems
}

async fn scrape(url: &str) -> String {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.text().await.unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_read_only_what_the_processes_export() {
    let env = Env::new().await;
    let src = source::create("obs", &source::sample_schema(2_000)).await.unwrap();
    let good = env.planet("orders", &src, "postgres", None).await;
    let bad = env.planet("gone", "svalbard_no_such_database", "postgres", None).await;
    let sched = env
        .app
        .send(
            reqwest::Method::PUT,
            &format!("{}/{good}/schedule", env.planets()),
            Some(&env.token),
            Some(json!({ "cron": "30 2 * * *", "timezone": "UTC" })),
        )
        .await;
    assert_eq!(sched.status, 201, "{}", sched.text);

    // A real `svalbard work`, with its health and metrics listener on a port this test knows.
    let port = free_port();
    let mut worker = env
        .command("work", svalbard_testkit::SEAL_KEYS)
        .env("SVALBARD_WORKER__LISTEN", format!("127.0.0.1:{port}"))
        .env("SVALBARD_LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = worker.stdout.take().unwrap();
    let log = tokio::spawn(async move {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut log, &mut text).await.ok();
        text
    });

    let ok = env.start_backup(&good).await;
    env.wait_status(ok["id"].as_str().unwrap(), "succeeded", MINUTE).await;
    let failed = env.start_backup(&bad).await;
    env.wait_status(failed["id"].as_str().unwrap(), "failed", MINUTE).await;
    let target = format!("{src}_obs");
    let r = env
        .app
        .post(
            &format!("{}/restores", env.backup_path(ok["id"].as_str().unwrap())),
            &env.token,
            json!({ "targetDatabase": target }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let restored = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(restored["status"], "succeeded", "{restored}");

    let mut scraped = Scrape::default();
    let worker_text = scrape(&format!("http://127.0.0.1:{port}/metrics")).await;
    let api_text = scrape(&format!("{}/metrics", env.app.metrics_base.as_ref().unwrap())).await;
    let mut worker_only = Scrape::default();
    worker_only.parse(&worker_text);
    scraped.parse(&worker_text);
    scraped.parse(&api_text);
    worker.kill().await.ok();
    let log = log.await.unwrap();

    // JSON lines; every line logged inside a job names the job, its tenant, and for backups and
    // restores the planet and the backup (and the restore).
    let mut in_jobs = 0;
    for line in log.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        let Some(job) = entry["spans"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "job"))
        else {
            continue;
        };
        in_jobs += 1;
        for field in ["job_id", "tenant_id", "kind"] {
            assert!(job[field].is_string(), "{field} missing: {line}");
        }
        if job["kind"] == "backup" || job["kind"] == "restore" {
            for field in ["backup_id", "planet_id", "project_id"] {
                assert!(job[field].is_string(), "{field} missing: {line}");
            }
        }
        if job["kind"] == "restore" {
            assert!(job["restore_id"].is_string(), "restore_id missing: {line}");
        }
    }
    assert!(in_jobs >= 3, "{log}");

    // The worker counts what it did, by kind and outcome.
    let jobs =
        |kind: &str, outcome: &str| worker_only.value("svalbard_jobs_total", &[("kind", kind), ("outcome", outcome)]);
    assert!(jobs("backup", "succeeded").unwrap() >= 1.0, "{worker_text}");
    assert!(jobs("backup", "failed").unwrap() >= 1.0, "{worker_text}");
    assert!(jobs("restore", "succeeded").unwrap() >= 1.0, "{worker_text}");
    assert!(
        worker_only
            .value("svalbard_backup_bytes_total", &[("kind", "stored")])
            .unwrap()
            > 0.0
    );

    // The API's catalog gauges: the good planet's recovery point and target, the bad one's failure.
    let planet = |id: &str| [("planet_id", id.to_owned()), ("tenant_id", env.tenant.clone())];
    let g = planet(&good);
    let g: Vec<(&str, &str)> = g.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let b = planet(&bad);
    let b: Vec<(&str, &str)> = b.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let now = chrono::Utc::now().timestamp() as f64;
    let last_good = scraped
        .value("svalbard_planet_last_success_timestamp_seconds", &g)
        .unwrap();
    assert!((now - last_good).abs() < 120.0, "{last_good} vs {now}");
    assert_eq!(scraped.value("svalbard_planet_rpo_target_seconds", &g), Some(172_800.0));
    assert_eq!(
        scraped.value("svalbard_planet_schedule_interval_seconds", &g),
        Some(86_400.0)
    );
    assert_eq!(scraped.value("svalbard_planet_failures_since_success", &g), Some(0.0));
    assert_eq!(scraped.value("svalbard_planet_failures_since_success", &b), Some(1.0));
    assert!(
        scraped
            .value("svalbard_planet_last_failure_timestamp_seconds", &b)
            .is_some()
    );
    assert!(
        scraped
            .value("svalbard_planet_last_success_timestamp_seconds", &b)
            .is_none()
    );
    assert!(
        scraped
            .value("svalbard_tenant_stored_bytes", &[("tenant_id", env.tenant.as_str())])
            .unwrap()
            > 0.0,
        "{api_text}"
    );
    assert_eq!(scraped.value("svalbard_catalog_up", &[]), Some(1.0));

    // Every family says what it measures, with its unit.
    for (family, help) in &scraped.help {
        assert!(help.contains('('), "# HELP of {family} names no unit: {help}");
    }
    for family in scraped.series.keys() {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| family.strip_suffix(s).filter(|b| scraped.help.contains_key(*b)))
            .unwrap_or(family);
        assert!(scraped.help.contains_key(base), "{family} has no # HELP");
    }

    // The dashboard and the alert rules read only what exists.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/deploy/grafana/svalbard.json")).unwrap())
            .unwrap();
    let mut problems = Vec::new();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let origin = format!("dashboard panel `{}`", panel["title"].as_str().unwrap());
            problems.extend(unknown_in(&origin, target["expr"].as_str().unwrap(), &scraped));
            checked += 1;
        }
    }
    let rules: Value = serde_norway::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/prometheus/svalbard.rules.yml")).unwrap(),
    )
    .unwrap();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let origin = format!("alert {}", rule["alert"].as_str().unwrap());
            problems.extend(unknown_in(&origin, rule["expr"].as_str().unwrap(), &scraped));
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} expressions found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // And the check itself catches a misspelt metric, label or label value.
    for wrong in [
        "sum(rate(svalbard_job_total[5m]))",
        "sum by (tenant) (svalbard_jobs_total)",
        r#"svalbard_jobs_total{outcome="failure"}"#,
    ] {
        assert!(!unknown_in("probe", wrong, &scraped).is_empty(), "{wrong} passed");
    }
    source::drop(&target).await.ok();
    source::drop(&src).await.ok();
}
