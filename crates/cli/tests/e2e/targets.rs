//! The worker checks a planet's host again right before it connects: a planet registered under
//! a looser policy is refused at run time, permanently, and no connection is made.

use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;

use crate::harness::Env;

/// A planet on a local port that only this test listens on, so any connection attempt shows.
async fn trap_planet(env: &Env, name: &str) -> (String, TcpListener) {
    let trap = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = trap.local_addr().unwrap().port();
    let r = env
        .app
        .post(
            &env.planets(),
            &env.token,
            json!({ "name": name, "engine": "postgresql", "connection": {
                "host": "127.0.0.1", "port": port, "database": "app", "user": "u", "password": "pw", "sslmode": "disable",
            } }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    (r.json()["id"].as_str().unwrap().to_owned(), trap)
}

async fn no_connection(trap: &TcpListener) {
    let attempt = tokio::time::timeout(Duration::from_millis(300), trap.accept()).await;
    assert!(attempt.is_err(), "the worker connected to a refused target");
}

#[tokio::test]
async fn a_tightened_tenant_policy_stops_backups_and_restores_before_they_connect() {
    let env = Env::new().await;
    let (planet, trap) = trap_planet(&env, "trap").await;
    // Registered while loopback was allowed; now the platform denies it for this tenant.
    let r = env
        .app
        .patch(
            &format!("/api/v1/tenants/{}", env.tenant),
            &env.app.platform(),
            json!({ "targetPolicy": { "allow": ["127.0.0.0/8"], "deny": ["127.0.0.1"] } }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (stop, worker) = env.worker();

    let sentence = "host 127.0.0.1 is refused: 127.0.0.1 is listed in the tenant's targetPolicy.deny";
    let b = env.start_backup(&planet).await;
    let id = b["id"].as_str().unwrap();
    let done = env.wait_status(id, "failed", Duration::from_secs(30)).await;
    assert_eq!(done["errorMessage"], sentence, "{done}");
    // Permanent: one attempt, no retries.
    let attempts = env.attempts(id).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].1, 1, "{attempts:?}");
    no_connection(&trap).await;

    let r = env
        .upload(
            &planet,
            &env.token,
            "archive",
            "dump.sql",
            b"CREATE TABLE t (id int);\n".to_vec(),
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let restore = env
        .restore_outcome(&r.header("location").unwrap().replace(&env.app.base, ""))
        .await;
    assert_eq!(restore["status"], "failed", "{restore}");
    assert!(
        restore["errorMessage"].as_str().unwrap().contains(sentence),
        "{restore}"
    );
    no_connection(&trap).await;

    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_worker_under_a_stricter_platform_policy_refuses_what_the_api_accepted() {
    let env = Env::new().await;
    let (planet, trap) = trap_planet(&env, "trap").await;
    // This worker runs with the default policy: loopback is refused.
    let mut strict = env.app.config.clone();
    strict.targets.allow.clear();
    let worker = svalbard_worker::build(&strict, env.app.pool.clone()).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    let running = tokio::spawn(async move { worker.run(s).await.unwrap() });

    let b = env.start_backup(&planet).await;
    let id = b["id"].as_str().unwrap();
    let done = env.wait_status(id, "failed", Duration::from_secs(30)).await;
    assert_eq!(
        done["errorMessage"], "host 127.0.0.1 is refused: loopback addresses are not allowed (targets.allow)",
        "{done}"
    );
    no_connection(&trap).await;
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn a_restore_into_the_control_database_is_refused() {
    use secrecy::ExposeSecret as _;
    let env = Env::new().await;
    let url = env.app.config.database_url.as_ref().unwrap().expose_secret().to_owned();
    let control: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let control_db = control.get_database().unwrap().to_owned();
    // A planet on the control database's server (allowed here, as loopback is) ...
    let planet = env.planet("neighbour", "postgres", "postgres", None).await;
    let (stop, worker) = env.worker();
    // ... restored over the control database itself.
    let r = env
        .upload(
            &planet,
            &env.token,
            "archive",
            "dump.sql",
            b"CREATE TABLE pwned (id int);\n".to_vec(),
            Some(json!({ "targetDatabase": control_db, "replace": true })),
        )
        .await;
    if r.status == 202 {
        let restore = env.restore_outcome(&r.header("location").unwrap()).await;
        assert_eq!(restore["status"], "failed", "{restore}");
        assert!(
            restore["errorMessage"]
                .as_str()
                .unwrap()
                .contains("that is Svalbard's own control database"),
            "{restore}"
        );
    } else {
        // Refused up front (a restore may not name another database), which is as good.
        assert_eq!(r.status, 400, "{}", r.text);
    }
    let pwned: bool = sqlx::query_scalar("SELECT to_regclass('public.pwned') IS NOT NULL")
        .fetch_one(&env.app.pool)
        .await
        .unwrap();
    assert!(!pwned, "the restore wrote into the control database");
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn administrative_connections_to_a_control_database_named_postgres_are_refused() {
    use secrecy::ExposeSecret as _;
    let env = Env::new().await;
    // A planet on the control database's server under another database name ...
    let planet = env.planet("neighbour", "app_elsewhere", "postgres", None).await;
    // ... for a worker whose control database is that server's `postgres`: the worker's
    // administrative connections go to `postgres`, so the planet must be refused although its
    // own database is not the control database.
    let url = env.app.config.database_url.as_ref().unwrap().expose_secret().to_owned();
    let control: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let mut cfg = env.app.config.clone();
    cfg.database_url = Some(
        format!(
            "postgres://{}@{}:{}/postgres",
            control.get_username(),
            control.get_host(),
            control.get_port()
        )
        .into(),
    );
    let worker = svalbard_worker::build(&cfg, env.app.pool.clone()).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    let running = tokio::spawn(async move { worker.run(s).await.unwrap() });

    let b = env.start_backup(&planet).await;
    let id = b["id"].as_str().unwrap();
    let done = env.wait_status(id, "failed", Duration::from_secs(30)).await;
    assert_eq!(
        done["errorMessage"], "host 127.0.0.1 is refused: that is Svalbard's own control database",
        "{done}"
    );
    let attempts = env.attempts(id).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    stop.cancel();
    running.await.unwrap();
}
