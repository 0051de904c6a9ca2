//! Disaster recovery: the planet's database is gone, and its backup (or an uploaded dump)
//! brings it back under its own name.

use std::time::Duration;

use serde_json::json;
use svalbard_testkit::source;

use crate::harness::Env;

const MINUTE: Duration = Duration::from_secs(60);

async fn exists(db: &str) -> bool {
    let mut admin = source::connect("postgres").await.unwrap();
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(db)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_database_is_restored_from_its_backup_into_the_planet() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let src = source::create("dr", &source::sample_schema(3_000)).await.unwrap();
    let expected = source::fingerprint(&src).await.unwrap();
    let planet = env.planet("orders", &src, "postgres", None).await;
    let backup = env.start_backup(&planet).await["id"].as_str().unwrap().to_owned();
    env.wait_status(&backup, "succeeded", MINUTE).await;

    source::drop(&src).await.unwrap();
    assert!(!exists(&src).await);
    // The default target: the planet's own database, which no longer exists.
    let r = env.restore(&backup, &env.token, json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["target"]["database"], src.as_str());
    assert_eq!(source::fingerprint(&src).await.unwrap(), expected);
    assert_eq!(done["verification"]["tables"], expected.len());
    assert_eq!(done["verification"]["rows"], expected.iter().map(|t| t.1).sum::<i64>());

    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_into_a_planet_whose_database_does_not_exist_yet_creates_it() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let src = source::create("dru", &source::sample_schema(500)).await.unwrap();
    let expected = source::fingerprint(&src).await.unwrap();
    for (name, args) in [("app.dump", &["-Fc"][..]), ("app.sql", &[][..])] {
        let out = std::process::Command::new("pg_dump")
            .args(["-h", "127.0.0.1", "-U", "postgres"])
            .args(args)
            .arg(&src)
            .output()
            .unwrap();
        assert!(out.status.success());
        let fresh = format!("svalbard_t_absent_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        assert!(!exists(&fresh).await);
        let planet = env
            .planet(&format!("p{}", &fresh[fresh.len() - 6..]), &fresh, "postgres", None)
            .await;
        let r = env.upload(&planet, &env.token, "archive", name, out.stdout, None).await;
        assert_eq!(r.status, 202, "{name}: {}", r.text);
        let done = env.restore_outcome(&r.header("location").unwrap()).await;
        assert_eq!(done["status"], "succeeded", "{name}: {done}");
        assert_eq!(source::fingerprint(&fresh).await.unwrap(), expected, "{name}");
        source::drop(&fresh).await.unwrap();
    }
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}

fn mariadb(sql: &str) -> String {
    let out = std::process::Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "--batch",
            "--skip-column-names",
            "-e",
        ])
        .arg(sql)
        .output()
        .unwrap();
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_mariadb_database_is_restored_from_its_backup_into_the_planet() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let db = format!("svalbard_t_mydr_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    mariadb(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO {db}.t SELECT seq, CONCAT('v', seq) FROM {db}.seq_1_to_700;"
    ));
    let count = format!("SELECT COUNT(*), MD5(GROUP_CONCAT(id, v ORDER BY id)) FROM {db}.t");
    let expected = mariadb(&count);
    let r = env
        .app
        .post(
            &env.planets(),
            &env.token,
            json!({ "name": "maria", "engine": "mysql",
                    "connection": { "host": "127.0.0.1", "port": 3306, "database": db, "user": "root", "sslmode": "disable" } }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let planet = r.json()["id"].as_str().unwrap().to_owned();
    let backup = env.start_backup(&planet).await["id"].as_str().unwrap().to_owned();
    env.wait_status(&backup, "succeeded", MINUTE).await;

    mariadb(&format!("DROP DATABASE {db}"));
    let r = env.restore(&backup, &env.token, json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(mariadb(&count), expected);
    assert_eq!(done["verification"]["rows"], 700);

    stop.cancel();
    worker.await.unwrap();
    mariadb(&format!("DROP DATABASE {db}"));
}
