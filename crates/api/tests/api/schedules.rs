//! Schedules, the scheduler driven by an injected clock, retention and per-tenant limits.

use chrono::{DateTime, Duration, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::PgPool;
use svalbard_core::auth::Role;
use svalbard_core::backup::Mechanism;
use svalbard_core::ids::{BackupId, PlanetId, ProjectId, TenantId};
use svalbard_core::repo::limits::Limits;
use svalbard_core::repo::{retention, schedules};
use svalbard_core::schedule::{NewSchedule, RetentionPolicy, Spec};
use svalbard_testkit::app::TestApp;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

struct Planet {
    tenant: String,
    project: String,
    id: String,
}

impl Planet {
    async fn new(app: &TestApp, tenant: &str, name: &str) -> Self {
        let project = match app
            .get(&format!("/api/v1/tenants/{tenant}/projects"), &app.platform())
            .await
            .json()["items"][0]["id"]
            .as_str()
        {
            Some(p) => p.to_owned(),
            None => app.project(tenant, "shop").await,
        };
        let id = app.planet(tenant, &project, name).await;
        Self {
            tenant: tenant.to_owned(),
            project,
            id,
        }
    }

    fn path(&self, rest: &str) -> String {
        format!(
            "/api/v1/tenants/{}/projects/{}/planets/{}{rest}",
            self.tenant, self.project, self.id
        )
    }

    fn ids(&self) -> (TenantId, ProjectId, PlanetId) {
        (
            self.tenant.parse().unwrap(),
            self.project.parse().unwrap(),
            self.id.parse().unwrap(),
        )
    }

    /// Sets the schedule as of `now` (the injected clock), bypassing the API's wall clock.
    async fn schedule(&self, pool: &PgPool, cron: &str, tz: &str, retention: RetentionPolicy, now: DateTime<Utc>) {
        let (t, p, x) = self.ids();
        let new = NewSchedule {
            cron: cron.into(),
            timezone: tz.into(),
            spec: Spec::parse(cron, tz).unwrap(),
            enabled: true,
            mechanism: Mechanism::Logical,
            retention,
            verify_every: None,
            verify_cron: None,
            verify_on: svalbard_core::schedule::VerifyOn::Platform,
        };
        let by = svalbard_core::repo::audit::Entry {
            tenant: t,
            actor: "test".into(),
            role: svalbard_core::auth::Role::Admin,
            platform: true,
            client_address: None,
            action: "schedule.put",
            resource_type: "schedule",
            outcome: svalbard_core::repo::audit::Outcome::Success,
        };
        schedules::put(pool, t, p, x, &new, now, &by).await.unwrap();
    }
}

fn prefix(t: TenantId, p: ProjectId, x: PlanetId, b: BackupId) -> String {
    format!("tenants/{t}/projects/{p}/planets/{x}/backups/{b}/")
}

fn settings(limits: Limits) -> schedules::Settings<'static> {
    schedules::Settings {
        limits,
        max_attempts: 3,
        prefix: &prefix,
        batch: 100,
    }
}

/// Stands in for a worker: the backup succeeded at `when` with `size` bytes.
async fn succeed(pool: &PgPool, id: BackupId, when: DateTime<Utc>, size: i64) {
    sqlx::query(
        "UPDATE backups SET status = 'succeeded', size_bytes = $3, created_at = $2, completed_at = $2,
                object_key = storage_prefix || 'archive-1.svb.zst',
                expiration_date = $2 + make_interval(days => retention_days)
         WHERE id = $1",
    )
    .bind(id)
    .bind(when)
    .bind(size)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("UPDATE jobs SET state = 'succeeded' WHERE subject_id = $1")
        .bind(id.0)
        .execute(pool)
        .await
        .unwrap();
}

async fn fail(pool: &PgPool, id: BackupId) {
    sqlx::query("UPDATE backups SET status = 'failed', error_message = 'connection refused' WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET state = 'failed' WHERE subject_id = $1")
        .bind(id.0)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn schedule_crud_validation_and_roles() {
    let app = TestApp::spawn().await;
    let t = app.tenant("acme").await;
    let planet = Planet::new(&app, &t, "orders").await;
    let path = planet.path("/schedule");
    let admin = app.token(&t, Role::Admin);
    let put = |body: Value, token: String| {
        let (app, path) = (&app, path.clone());
        async move { app.send(Method::PUT, &path, Some(&token), Some(body)).await }
    };

    app.get(&path, &admin).await.problem(404);
    put(json!({ "cron": "0 2 * * *" }), app.token(&t, Role::Operator))
        .await
        .problem(403);
    for (body, field) in [
        (json!({ "cron": "0 2 * *" }), "cron"),
        (json!({ "cron": "0 0 2 * * *" }), "cron"),
        (json!({ "cron": "0 25 * * *" }), "cron"),
        (
            json!({ "cron": "0 2 * * *", "timezone": "Europe/Atlantis" }),
            "timezone",
        ),
        (json!({ "cron": "0 2 * * *", "mechanism": "physical" }), "mechanism"),
        (
            json!({ "cron": "0 2 * * *", "retention": { "keepDaily": 0 } }),
            "retention.keepDaily",
        ),
        (
            json!({ "cron": "0 2 * * *", "retention": { "retentionPeriodInDays": 99999 } }),
            "retention.retentionPeriodInDays",
        ),
        (
            json!({ "cron": "0 2 * * *", "retention": { "keepYearly": 2 } }),
            "retention.keepYearly",
        ),
        (json!({ "cron": 7 }), "cron"),
        (json!({ "cron": "0 2 * * *", "verifyCron": "0 2 * *" }), "verifyCron"),
        // More often than the platform's hour between verifications.
        (
            json!({ "cron": "0 2 * * *", "verifyCron": "*/30 * * * *" }),
            "verifyCron",
        ),
        (json!({ "cron": "0 2 * * *", "verifyOn": "tenant" }), "verifyOn"),
    ] {
        put(body.clone(), admin.clone()).await.names_field(field);
    }
    app.get(&path, &admin).await.problem(404);

    let body = json!({
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "retention": { "keepLast": 3, "keepDaily": 7, "retentionPeriodInDays": 14 },
    });
    let r = put(body.clone(), admin.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let s = r.json();
    assert_eq!(s["cron"], "30 2 * * *");
    assert_eq!(s["timezone"], "Europe/Berlin");
    assert_eq!(s["enabled"], true);
    assert_eq!(s["mechanism"], "logical");
    assert_eq!(s["retention"], body["retention"]);
    assert_eq!(s["skippedRuns"], 0);
    let next = at(s["nextRunAt"].as_str().unwrap());
    assert!(next > Utc::now() && next <= Utc::now() + Duration::hours(25), "{next}");
    let r = put(json!({ "cron": "0 4 * * *", "enabled": false }), admin.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["nextRunAt"], Value::Null);
    assert_eq!(r.json()["timezone"], "UTC");
    let viewer = app.token(&t, Role::Viewer);
    assert_eq!(app.get(&path, &viewer).await.json()["cron"], "0 4 * * *");
    app.delete(&path, &app.token(&t, Role::Operator)).await.problem(403);
    assert_eq!(app.delete(&path, &admin).await.status, 204);
    app.get(&path, &admin).await.problem(404);
    app.delete(&path, &admin).await.problem(404);
}

#[tokio::test]
async fn runs_fire_at_the_right_instants_across_both_dst_changes_in_berlin() {
    let app = TestApp::spawn().await;
    let t = app.tenant("acme").await;
    let planet = Planet::new(&app, &t, "orders").await;
    let mut fired = Vec::new();
    for (from, until) in [
        ("2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
        ("2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z"),
    ] {
        let mut now = at(from);
        planet
            .schedule(
                &app.pool,
                "30 2 * * *",
                "Europe/Berlin",
                RetentionPolicy::default(),
                now,
            )
            .await;
        // A scheduler ticking every five minutes; each backup finishes before the next tick.
        while now < at(until) {
            for run in schedules::run_due(&app.pool, now, &settings(Limits::default()))
                .await
                .unwrap()
            {
                let id = run.backup.expect("created");
                assert_eq!(run.coalesced, 0);
                fired.push((run.due, now));
                succeed(&app.pool, id, now, 10).await;
            }
            now += Duration::minutes(5);
        }
    }
    let dues: Vec<_> = fired.iter().map(|(due, _)| *due).collect();
    assert_eq!(
        dues,
        vec![
            at("2026-03-28T01:30:00Z"), // 02:30 CET
            at("2026-03-29T01:00:00Z"), // 02:30 does not exist: 03:00 CEST, right after the gap
            at("2026-03-30T00:30:00Z"), // 02:30 CEST
            at("2026-10-25T00:30:00Z"), // 02:30 CEST; the repeated 02:30 CET does not run again
            at("2026-10-26T01:30:00Z"), // 02:30 CET
        ]
    );
    // Each fired on the first tick at or after its due time.
    assert!(
        fired
            .iter()
            .all(|(due, tick)| *tick >= *due && *tick - *due < Duration::minutes(5))
    );
    let list = app.get(&planet.path("/backups"), &app.platform()).await.json();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|b| b["method"] == "periodic"), "{list}");
}

#[tokio::test]
async fn missed_runs_coalesce_into_one_backup() {
    let app = TestApp::spawn().await;
    let t = app.tenant("acme").await;
    let planet = Planet::new(&app, &t, "orders").await;
    planet
        .schedule(
            &app.pool,
            "0 * * * *",
            "UTC",
            RetentionPolicy::default(),
            at("2026-05-01T00:10:00Z"),
        )
        .await;
    // Down from 00:10 to 06:30: the runs of 01:00 to 06:00 were missed.
    let runs = schedules::run_due(&app.pool, at("2026-05-01T06:30:00Z"), &settings(Limits::default()))
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].due, at("2026-05-01T01:00:00Z"));
    assert_eq!(runs[0].coalesced, 5);
    assert!(
        runs[0].outcome.contains("5 missed run(s) coalesced"),
        "{}",
        runs[0].outcome
    );
    let again = schedules::run_due(&app.pool, at("2026-05-01T06:59:00Z"), &settings(Limits::default()))
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    let s = app.get(&planet.path("/schedule"), &app.platform()).await.json();
    assert_eq!(s["nextRunAt"], "2026-05-01T07:00:00Z");
    assert_eq!(s["lastRunAt"], "2026-05-01T01:00:00Z");
    assert_eq!(s["lastBackupId"], json!(runs[0].backup.unwrap()));
    let list = app.get(&planet.path("/backups"), &app.platform()).await.json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_schedulers_create_one_backup_per_due_time() {
    let app = TestApp::spawn().await;
    let t = app.tenant("acme").await;
    let mut planets = Vec::new();
    for i in 0..12 {
        let p = Planet::new(&app, &t, &format!("db{i}")).await;
        p.schedule(
            &app.pool,
            "*/10 * * * *",
            "UTC",
            RetentionPolicy::default(),
            at("2026-06-01T00:00:00Z"),
        )
        .await;
        planets.push(p);
    }
    for tick in ["2026-06-01T00:10:00Z", "2026-06-01T00:20:00Z", "2026-06-01T00:30:00Z"] {
        let now = at(tick);
        // Four schedulers on the same instant, each on its own connection.
        let s = settings(Limits::default());
        let rounds = futures_util::future::join_all((0..4).map(|_| schedules::run_due(&app.pool, now, &s))).await;
        let created: Vec<BackupId> = rounds
            .into_iter()
            .flat_map(|r| r.unwrap())
            .map(|run| run.backup.unwrap())
            .collect();
        assert_eq!(created.len(), planets.len(), "at {tick}");
        for id in created {
            succeed(&app.pool, id, now, 10).await;
        }
    }
    let per_planet: Vec<(PlanetId, i64)> =
        sqlx::query_as("SELECT planet_id, count(*) FROM backups WHERE method = 'periodic' GROUP BY planet_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(per_planet.len(), planets.len());
    assert!(per_planet.iter().all(|(_, n)| *n == 3), "{per_planet:?}");
}

#[tokio::test]
async fn a_run_due_while_a_backup_is_in_progress_or_past_a_limit_is_skipped_and_recorded() {
    let app = TestApp::spawn().await;
    let t = app.tenant("acme").await;
    let planet = Planet::new(&app, &t, "orders").await;
    let manual = app.post(&planet.path("/backups"), &app.platform(), json!({})).await;
    assert_eq!(manual.status, 201);
    planet
        .schedule(
            &app.pool,
            "0 * * * *",
            "UTC",
            RetentionPolicy::default(),
            at("2026-05-01T00:00:00Z"),
        )
        .await;
    let runs = schedules::run_due(&app.pool, at("2026-05-01T01:00:00Z"), &settings(Limits::default()))
        .await
        .unwrap();
    assert_eq!(runs[0].backup, None);
    assert!(runs[0].outcome.starts_with("skipped: backup "), "{}", runs[0].outcome);
    let s = app.get(&planet.path("/schedule"), &app.platform()).await.json();
    assert_eq!(s["skippedRuns"], 1);
    assert_eq!(s["nextRunAt"], "2026-05-01T02:00:00Z");
    assert!(s["lastOutcome"].as_str().unwrap().contains("already scheduled"), "{s}");

    // The manual backup finishes; a tenant limit of one backup now stops the next run.
    succeed(
        &app.pool,
        manual.json()["id"].as_str().unwrap().parse().unwrap(),
        Utc::now(),
        10,
    )
    .await;
    let one = Limits {
        backups: 1,
        ..Limits::default()
    };
    let runs = schedules::run_due(&app.pool, at("2026-05-01T02:00:00Z"), &settings(one))
        .await
        .unwrap();
    assert_eq!(runs[0].backup, None);
    assert!(runs[0].outcome.contains("limit is 1"), "{}", runs[0].outcome);
    let runs = schedules::run_due(&app.pool, at("2026-05-01T03:00:00Z"), &settings(Limits::default()))
        .await
        .unwrap();
    assert!(runs[0].backup.is_some());
    let s = app.get(&planet.path("/schedule"), &app.platform()).await.json();
    assert_eq!(s["skippedRuns"], 2);
}

#[tokio::test]
async fn tenant_limits_answer_429_or_409_naming_the_limit() {
    let app = TestApp::spawn().await;
    let platform = app.platform();
    let r = app
        .post(
            "/api/v1/tenants",
            &platform,
            json!({ "name": "tiny", "limits": { "backups": 0 } }),
        )
        .await;
    r.names_field("limits.backups");
    let r = app
        .post(
            "/api/v1/tenants",
            &platform,
            json!({ "name": "tiny", "limits": { "concurrentJobs": 1 } }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json()["limits"],
        json!({ "concurrentJobs": 1, "storedBytes": null, "backups": null })
    );
    let t = r.json()["id"].as_str().unwrap().to_owned();
    let one = Planet::new(&app, &t, "one").await;
    let two = Planet::new(&app, &t, "two").await;
    let first = app.post(&one.path("/backups"), &platform, json!({})).await;
    assert_eq!(first.status, 201);
    let r = app.post(&two.path("/backups"), &platform, json!({})).await;
    let p = r.problem(429);
    assert_eq!(p["limit"], "concurrentJobs", "{p}");
    assert_eq!(r.header("retry-after").as_deref(), Some("30"));
    let first_id: BackupId = first.json()["id"].as_str().unwrap().parse().unwrap();
    succeed(&app.pool, first_id, Utc::now(), 1000).await;
    let second = app.post(&two.path("/backups"), &platform, json!({})).await;
    assert_eq!(second.status, 201);
    // Restores count too.
    let r = app
        .post(
            &format!(
                "/api/v1/tenants/{t}/projects/{}/backups/{first_id}/restores",
                one.project
            ),
            &platform,
            json!({ "targetPlanetId": one.id }),
        )
        .await;
    assert_eq!(r.problem(429)["limit"], "concurrentJobs");
    succeed(
        &app.pool,
        second.json()["id"].as_str().unwrap().parse().unwrap(),
        Utc::now(),
        1,
    )
    .await;

    // Stored bytes and backup counts are quotas: 409.
    let tenant_path = format!("/api/v1/tenants/{t}");
    let r = app
        .patch(&tenant_path, &platform, json!({ "limits": { "storedBytes": 1000 } }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let p = app.post(&one.path("/backups"), &platform, json!({})).await.problem(409);
    assert_eq!(p["limit"], "storedBytes", "{p}");
    app.patch(&tenant_path, &platform, json!({ "limits": { "backups": 2 } }))
        .await;
    let p = app.post(&one.path("/backups"), &platform, json!({})).await.problem(409);
    assert_eq!(p["limit"], "backups", "{p}");
    // Back to the defaults: allowed again.
    let r = app.patch(&tenant_path, &platform, json!({ "limits": {} })).await;
    assert_eq!(r.json()["limits"]["backups"], Value::Null);
    assert_eq!(app.post(&one.path("/backups"), &platform, json!({})).await.status, 201);
}

#[tokio::test]
async fn retention_never_erodes_the_last_good_copies_and_respects_pins() {
    let app = TestApp::spawn().await;
    let t = app.tenant("acme").await;
    let planet = Planet::new(&app, &t, "orders").await;
    let platform = app.platform();
    let (_, _, planet_id) = planet.ids();
    // Three successes, long ago, then ten failures in a row.
    let mut good = Vec::new();
    for day in 1..=3 {
        let r = app.post(&planet.path("/backups"), &platform, json!({})).await;
        let id: BackupId = r.json()["id"].as_str().unwrap().parse().unwrap();
        succeed(&app.pool, id, at(&format!("2026-01-0{day}T02:00:00Z")), 100).await;
        good.push(id);
    }
    for _ in 0..10 {
        let r = app.post(&planet.path("/backups"), &platform, json!({})).await;
        fail(&app.pool, r.json()["id"].as_str().unwrap().parse().unwrap()).await;
    }
    let keep_last = |n| RetentionPolicy {
        keep_last: Some(n),
        ..RetentionPolicy::default()
    };
    let now = at("2026-09-01T00:00:00Z");
    planet.schedule(&app.pool, "0 2 * * *", "UTC", keep_last(3), now).await;
    assert!(retention::apply(&app.pool, planet_id, now).await.unwrap().is_empty());

    // keepLast 1: the two older ones would go; the preview says which and why, changing nothing.
    planet.schedule(&app.pool, "0 2 * * *", "UTC", keep_last(1), now).await;
    let preview = app.get(&planet.path("/retention/preview"), &platform).await.json();
    let delete: Vec<&str> = preview["delete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["backupId"].as_str().unwrap())
        .collect();
    assert_eq!(delete.len(), 2, "{preview}");
    assert!(
        preview["delete"][0]["reason"].as_str().unwrap().contains("keepLast 1"),
        "{preview}"
    );
    assert_eq!(preview["keep"][0]["backupId"], json!(good[2]));
    assert_eq!(preview["policy"], json!({ "keepLast": 1 }));

    // Pin the oldest (admin only): it survives.
    let backup = |id: BackupId| format!("/api/v1/tenants/{t}/projects/{}/backups/{id}", planet.project);
    app.patch(
        &backup(good[0]),
        &app.token(&t, Role::Operator),
        json!({ "pinned": true }),
    )
    .await
    .problem(403);
    app.patch(&backup(good[0]), &platform, json!({ "pinned": "yes" }))
        .await
        .names_field("pinned");
    let r = app.patch(&backup(good[0]), &platform, json!({ "pinned": true })).await;
    assert_eq!(r.json()["pinned"], true, "{}", r.text);

    let expired = retention::apply(&app.pool, planet_id, now).await.unwrap();
    assert_eq!(expired.iter().map(|v| v.backup_id).collect::<Vec<_>>(), vec![good[1]]);
    let b = app.get(&backup(good[1]), &platform).await.json();
    assert_eq!(b["status"], "expired");
    assert!(
        b["errorMessage"].as_str().unwrap().starts_with("expired by retention"),
        "{b}"
    );
    for id in [good[0], good[2]] {
        assert_eq!(app.get(&backup(id), &platform).await.json()["status"], "succeeded");
    }
    // Its objects go through the delete job, as for DELETE.
    let jobs: Vec<(String, String)> = sqlx::query_as("SELECT kind, state FROM jobs WHERE subject_id = $1")
        .bind(good[1].0)
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(jobs.contains(&("delete-backup".into(), "queued".into())), "{jobs:?}");
    // Applying again changes nothing; an expired backup cannot be pinned.
    assert!(retention::apply(&app.pool, planet_id, now).await.unwrap().is_empty());
    app.patch(&backup(good[1]), &platform, json!({ "pinned": true }))
        .await
        .problem(409);
}

#[tokio::test]
async fn a_restore_in_progress_refuses_backups_of_its_planet_and_deletes_of_its_source() {
    let app = TestApp::spawn().await;
    let t = app.tenant("acme").await;
    let planet = Planet::new(&app, &t, "orders").await;
    let admin = app.token(&t, Role::Admin);
    let backup = app.post(&planet.path("/backups"), &admin, json!({})).await;
    assert_eq!(backup.status, 201, "{}", backup.text);
    let backup = backup.json()["id"].as_str().unwrap().to_owned();
    let backup_path = format!(
        "/api/v1/tenants/{}/projects/{}/backups/{backup}",
        planet.tenant, planet.project
    );
    // While the backup is pending, a restore into its planet is refused (the rule's other side).
    let p = app
        .post(&format!("{backup_path}/restores"), &admin, json!({}))
        .await
        .problem(409);
    assert!(p["detail"].as_str().unwrap().contains(&backup), "{p}");
    succeed(&app.pool, backup.parse().unwrap(), Utc::now(), 10).await;

    // No worker runs: the restore stays scheduled.
    let restore = app.post(&format!("{backup_path}/restores"), &admin, json!({})).await;
    assert_eq!(restore.status, 202, "{}", restore.text);
    let restore = restore.json()["id"].as_str().unwrap().to_owned();

    let p = app.post(&planet.path("/backups"), &admin, json!({})).await.problem(409);
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains(&restore) && detail.contains("half-restored"), "{p}");
    let p = app.delete(&backup_path, &admin).await.problem(409);
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains(&restore) && detail.contains("reads this backup"), "{p}");
    assert_eq!(app.get(&backup_path, &admin).await.json()["status"], "succeeded");

    // The scheduler skips the run and says why.
    planet
        .schedule(
            &app.pool,
            "0 * * * *",
            "UTC",
            RetentionPolicy::default(),
            at("2026-05-01T00:00:00Z"),
        )
        .await;
    let runs = schedules::run_due(&app.pool, at("2026-05-01T01:00:00Z"), &settings(Limits::default()))
        .await
        .unwrap();
    assert_eq!(runs[0].backup, None);
    assert!(runs[0].outcome.starts_with("skipped: restore "), "{}", runs[0].outcome);
    let s = app.get(&planet.path("/schedule"), &app.platform()).await.json();
    assert_eq!(s["skippedRuns"], 1);

    // Once the restore has ended, both are accepted again.
    sqlx::query("UPDATE restores SET status = 'succeeded', completed_at = now() WHERE id = $1::uuid")
        .bind(&restore)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.delete(&backup_path, &admin).await.status, 202);
    assert_eq!(app.post(&planet.path("/backups"), &admin, json!({})).await.status, 201);
}
