use std::time::Duration;

use serde_json::json;
use svalbard_core::auth::Role;

use crate::harness::Env;

const MINUTE: Duration = Duration::from_secs(60);

/// Runs SQL as root on the local MariaDB; its tab-separated answer.
pub(crate) fn mariadb(database: Option<&str>, sql: &str) -> String {
    let mut cmd = std::process::Command::new("mariadb");
    cmd.args([
        "--no-defaults",
        "-h",
        "127.0.0.1",
        "-P",
        "3306",
        "-u",
        "root",
        "--batch",
        "--skip-column-names",
    ]);
    if let Some(db) = database {
        cmd.arg(format!("--database={db}"));
    }
    let out = cmd
        .arg("-e")
        .arg(sql)
        .output()
        .expect("the mariadb client is needed for these tests");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn fresh(hint: &str) -> String {
    format!("svalbard_t_{hint}_{}", &uuid::Uuid::now_v7().simple().to_string()[20..])
}

/// A MariaDB database with rows, a view, a routine and a trigger.
pub(crate) fn source_db() -> String {
    let db = fresh("my");
    mariadb(None, &format!("CREATE DATABASE {db}"));
    mariadb(
        Some(&db),
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100), note BLOB) ENGINE=InnoDB;
         CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, customer INT) ENGINE=InnoDB;
         INSERT INTO customers SELECT seq, CONCAT('c', seq), UNHEX(MD5(seq)) FROM seq_1_to_5000;
         CREATE VIEW named AS SELECT id, name FROM customers WHERE id < 10;
         CREATE PROCEDURE count_customers() SELECT COUNT(*) FROM customers;
         CREATE TRIGGER remember AFTER INSERT ON customers FOR EACH ROW INSERT INTO audit (customer) VALUES (NEW.id);",
    );
    db
}

fn fingerprint(db: &str) -> Vec<String> {
    vec![
        mariadb(
            Some(db),
            "SELECT COUNT(*), MD5(GROUP_CONCAT(id, name, HEX(note) ORDER BY id)) FROM customers",
        ),
        mariadb(
            None,
            &format!("SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{db}'"),
        ),
        mariadb(
            None,
            &format!("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{db}'"),
        ),
        mariadb(
            None,
            &format!("SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '{db}'"),
        ),
    ]
}

impl Env {
    pub(crate) async fn mysql_planet(&self, name: &str, db: &str, password: Option<&str>) -> String {
        let mut connection =
            json!({ "host": "127.0.0.1", "port": 3306, "database": db, "user": "root", "sslmode": "disable" });
        if let Some(p) = password {
            connection["password"] = json!(p);
        }
        let r = self
            .app
            .post(
                &self.planets(),
                &self.token,
                json!({ "name": name, "engine": "mysql", "connection": connection }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()["id"].as_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_backup_and_restore_round_trip_with_routines_and_triggers() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let src = source_db();
    let planet = env.mysql_planet("shop", &src, None).await;
    let id = env.start_backup(&planet).await["id"].as_str().unwrap().to_owned();
    let b = env.wait_status(&id, "succeeded", MINUTE).await;
    assert!(b["engineVersion"].as_str().unwrap().contains("MariaDB"), "{b}");
    assert!(b["toolVersion"].as_str().unwrap().starts_with("10."), "{b}");

    // Plain zstd of the downloaded archive is the engine's own SQL dump.
    let bytes = env.download_plain(&id).await;
    let sql = zstd::decode_all(&bytes[..]).unwrap();
    assert!(
        sql.starts_with(b"-- MariaDB dump") || sql.starts_with(b"/*"),
        "{}",
        String::from_utf8_lossy(&sql[..60])
    );

    let target = format!("{src}_r");
    let r = env.restore(&id, &env.token, json!({ "targetDatabase": target })).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let expected = fingerprint(&src);
    let got = fingerprint(&target);
    assert_eq!(got, expected);
    assert_eq!(done["verification"]["tables"], 2);
    assert_eq!(done["verification"]["rows"], 5000);

    // Replace (admin) into a changed target.
    mariadb(Some(&target), "DELETE FROM customers WHERE id > 10");
    let admin = env.app.token(&env.tenant, Role::Admin);
    let r = env
        .restore(&id, &admin, json!({ "targetDatabase": target, "replace": true }))
        .await;
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(fingerprint(&target), expected);
    // Without replace into a non-empty target: refused, untouched.
    mariadb(Some(&target), "DELETE FROM customers WHERE id > 100");
    let before = fingerprint(&target);
    let r = env.restore(&id, &env.token, json!({ "targetDatabase": target })).await;
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(fingerprint(&target), before);

    stop.cancel();
    worker.await.unwrap();
    mariadb(None, &format!("DROP DATABASE {src}"));
    mariadb(None, &format!("DROP DATABASE {target}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_wrong_password_and_corrupted_archive_are_refused() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let src = source_db();
    let locked = env.mysql_planet("locked", &src, Some("not-the-password")).await;
    let id = env.start_backup(&locked).await["id"].as_str().unwrap().to_owned();
    let b = env.wait_status(&id, "failed", MINUTE).await;
    assert!(
        b["errorMessage"].as_str().unwrap().contains("authentication failed"),
        "{b}"
    );
    let (keys, uploads) = env.leftovers(&b).await;
    assert!(keys.is_empty() && uploads.is_empty());

    let planet = env.mysql_planet("open", &src, None).await;
    let id = env.start_backup(&planet).await["id"].as_str().unwrap().to_owned();
    env.wait_status(&id, "succeeded", MINUTE).await;
    env.rewrite_archive(
        &id,
        |mut bytes| {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x01;
            bytes
        },
        false,
    )
    .await;
    let target = format!("{src}_c");
    let r = env.restore(&id, &env.token, json!({ "targetDatabase": target })).await;
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert!(done["errorMessage"].as_str().unwrap().contains("corrupted"), "{done}");
    assert_eq!(
        mariadb(
            None,
            &format!("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{target}'")
        ),
        "0"
    );
    stop.cancel();
    worker.await.unwrap();
    mariadb(None, &format!("DROP DATABASE {src}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_uploads_restore_and_a_dump_from_a_newer_server_is_incompatible() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let src = source_db();
    let planet = env.mysql_planet("up", &src, None).await;
    let out = std::process::Command::new("mariadb-dump")
        .args([
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "--single-transaction",
            "--routines",
            "--triggers",
            "--hex-blob",
        ])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success());
    let dump = out.stdout;

    // A zstd-compressed plain dump restores.
    let target = format!("{src}_u");
    let r = env
        .upload(
            &planet,
            &env.token,
            "file",
            "shop.sql.zst",
            zstd::encode_all(&dump[..], 3).unwrap(),
            Some(json!({ "targetDatabase": target })),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(fingerprint(&target)[0], fingerprint(&src)[0]);

    // The same dump claiming a newer server than the target: incompatible, naming the version.
    let text = String::from_utf8(dump).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("-- Server version"))
        .unwrap()
        .to_owned();
    let newer = text.replacen(&line, "-- Server version\t99.1.0-MariaDB", 1);
    let target2 = format!("{src}_n");
    let r = env
        .upload(
            &planet,
            &env.token,
            "archive",
            "newer.sql",
            newer.into_bytes(),
            Some(json!({ "targetDatabase": target2 })),
        )
        .await;
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "incompatible", "{done}");
    assert!(done["errorMessage"].as_str().unwrap().contains("99.1"), "{done}");
    assert_eq!(
        mariadb(
            None,
            &format!("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{target2}'")
        ),
        "0"
    );

    stop.cancel();
    worker.await.unwrap();
    mariadb(None, &format!("DROP DATABASE {src}"));
    mariadb(None, &format!("DROP DATABASE {target}"));
}
