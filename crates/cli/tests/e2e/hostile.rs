//! A hostile tenant's uploads: plain SQL that tries to run client commands on the worker, read
//! its environment, or leave half a load behind; restores aimed at databases that are not the
//! planet's. Each attack is performed against the real services and shown to fail.

use std::path::PathBuf;

use serde_json::{Value, json};
use svalbard_testkit::source;

use crate::harness::Env;
use crate::mysql::mariadb;

/// A file that a payload would create if a client command ran on the worker.
fn marker() -> PathBuf {
    std::env::temp_dir().join(format!("svalbard-marker-{}", uuid::Uuid::now_v7().simple()))
}

/// A plain SQL dump that creates a table, runs `payload`, and goes on.
fn sql_with(payload: &str) -> Vec<u8> {
    format!(
        "-- PostgreSQL database dump\nCREATE TABLE intruder (x int);\nINSERT INTO intruder VALUES (1);\n\
         {payload}\nINSERT INTO intruder VALUES (2);\n"
    )
    .into_bytes()
}

async fn pg_database_exists(name: &str) -> bool {
    let mut db = source::connect("postgres").await.unwrap();
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut db)
        .await
        .unwrap()
}

async fn pg_table_exists(database: &str, table: &str) -> bool {
    let mut db = source::connect(database).await.unwrap();
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(&mut db)
        .await
        .unwrap()
}

impl Env {
    /// Uploads `data` as `name` into `planet` with `options` and waits for the outcome.
    async fn upload_outcome(&self, planet: &str, name: &str, data: Vec<u8>, options: Value) -> Value {
        let r = self
            .upload(planet, &self.token, "archive", name, data, Some(options))
            .await;
        if r.status != 202 {
            return json!({ "status": "refused", "http": r.status, "body": r.text });
        }
        // Patient: these tests run many restores one after another on a shared server.
        let location = r.header("location").unwrap();
        let started = std::time::Instant::now();
        loop {
            let r = self.app.get(&location, &self.token).await.json();
            if !matches!(r["status"].as_str(), Some("scheduled" | "running")) {
                return r;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(180),
                "restore did not finish: {r}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_sql_cannot_run_client_commands_on_the_worker() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let src = source::create("hostile", &source::sample_schema(200)).await.unwrap();
    let before = source::fingerprint(&src).await.unwrap();
    let planet = env.planet("target", &src, "postgres", None).await;
    let escape = format!("svalbard_escape_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);

    let payloads: Vec<(&str, String, PathBuf)> = {
        let m: Vec<PathBuf> = (0..9).map(|_| marker()).collect();
        let p = |i: usize| m[i].display().to_string();
        vec![
            ("shell", format!("\\! touch {}", p(0)), m[0].clone()),
            ("output pipe", format!("\\o |touch {}\nSELECT 1;", p(1)), m[1].clone()),
            (
                "copy to program",
                format!("\\copy (select 1) to program 'touch {}'", p(2)),
                m[2].clone(),
            ),
            ("backticks", format!("\\set x `touch {}`", p(3)), m[3].clone()),
            ("gexec", format!("SELECT '\\! touch {}' \\gexec", p(4)), m[4].clone()),
            (
                "connect",
                format!("\\connect postgres\nCREATE TABLE {escape} (x int);"),
                m[5].clone(),
            ),
            (
                "unrestrict with a guessed key",
                format!("\\unrestrict wrongkey\n\\! touch {}", p(6)),
                m[6].clone(),
            ),
            (
                "unrestrict with a malformed key",
                format!("\\unrestrict wrong-key\n\\! touch {}", p(7)),
                m[7].clone(),
            ),
            (
                "restrict of its own",
                format!("\\restrict mine\n\\unrestrict mine\n\\! touch {}", p(8)),
                m[8].clone(),
            ),
        ]
    };
    for (what, payload, marker) in &payloads {
        // Into the planet's own database, which holds data (admin, replace): left as it was.
        let done = env
            .upload_outcome(&planet, "evil.sql", sql_with(payload), json!({ "replace": true }))
            .await;
        assert!(
            matches!(done["status"].as_str(), Some("failed" | "refused" | "incompatible")),
            "{what}: {done}"
        );
        assert!(!marker.exists(), "{what}: a client command ran on the worker");
        // Refused by psql's restricted mode, not by accident.
        let msg = done["errorMessage"].as_str().unwrap_or_default();
        assert!(msg.contains("restricted") || msg.contains("wrong key"), "{what}: {msg}");
        eprintln!("{what}: {msg}");
        assert_eq!(source::fingerprint(&src).await.unwrap(), before, "{what}");
        assert!(!pg_table_exists(&src, "intruder").await, "{what}");

        // Into a new database: nothing is created.
        let target = format!("{src}_new");
        let done = env
            .upload_outcome(
                &planet,
                "evil.sql",
                sql_with(payload),
                json!({ "targetDatabase": target }),
            )
            .await;
        assert!(
            matches!(done["status"].as_str(), Some("failed" | "refused" | "incompatible")),
            "{what}: {done}"
        );
        assert!(!marker.exists(), "{what}: a client command ran on the worker");
        assert!(!pg_database_exists(&target).await, "{what}: {target} was left behind");
    }
    assert!(
        !pg_table_exists("postgres", &escape).await,
        "\\connect reached another database"
    );

    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_plain_load_leaves_nothing_and_says_little() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let src = source::create("half", "SELECT 1").await.unwrap();
    let planet = env.planet("target", &src, "postgres", None).await;

    // Into an existing, empty database: the load runs there directly, in one transaction.
    let dump = b"-- PostgreSQL database dump\nCREATE TABLE first_half (x int);\n\
                 INSERT INTO first_half SELECT generate_series(1, 1000);\nSELECT 1/0;\n\
                 CREATE TABLE second_half (x int);\n"
        .to_vec();
    let done = env.upload_outcome(&planet, "half.sql", dump, json!({})).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["errorMessage"].as_str().unwrap().contains("division by zero"),
        "{done}"
    );
    assert!(pg_database_exists(&src).await);
    assert!(
        !pg_table_exists(&src, "first_half").await,
        "the first half of a failed load was committed"
    );

    // A server-side error naming a file: the path does not reach the message.
    let dump = b"-- PostgreSQL database dump\nCREATE TABLE t (x int);\n\
                 COPY t FROM '/nonexistent/svalbard/secret-folder/data.csv';\n"
        .to_vec();
    let done = env.upload_outcome(&planet, "path.sql", dump, json!({})).await;
    assert_eq!(done["status"], "failed", "{done}");
    let msg = done["errorMessage"].as_str().unwrap();
    assert!(!msg.contains("secret-folder") && msg.contains("<path>"), "{msg}");
    assert!(msg.chars().count() < 600, "{msg}");

    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_reads_nothing_of_the_workers_environment() {
    use secrecy::ExposeSecret as _;
    let env = Env::new().await;
    // A real `svalbard work` process, whose environment holds the platform's secrets.
    let mut worker = env.worker_process();
    let src = source::create("envleak", "SELECT 1").await.unwrap();
    let planet = env.planet("target", &src, "postgres", None).await;
    let c = &env.app.config;
    let url = c.database_url.as_ref().unwrap().expose_secret().to_owned();
    let secrets = [
        url.clone(),
        url.rsplit('/').next().unwrap().to_owned(),
        svalbard_testkit::SEAL_KEYS.to_owned(),
        svalbard_testkit::HS256_SECRET.to_owned(),
        c.s3.access_key_id.clone().unwrap(),
        c.s3.secret_access_key.as_ref().unwrap().expose_secret().to_owned(),
        c.s3.endpoint.clone().unwrap(),
        "DATABASE_URL".to_owned(),
        "SVALBARD_".to_owned(),
        "S3_".to_owned(),
    ];
    for payload in [
        "\\! env 1>&2\nSELECT 1/0;",
        "\\setenv X 1\n\\! env\nSELECT 1/0;",
        "\\getenv x DATABASE_URL\nSELECT :'x'::int;",
        "\\echo :DBNAME\nSELECT 1/0;",
    ] {
        let dump = format!("-- PostgreSQL database dump\n{payload}\n").into_bytes();
        let done = env.upload_outcome(&planet, "env.sql", dump, json!({})).await;
        assert_eq!(done["status"], "failed", "{done}");
        let msg = done["errorMessage"].as_str().unwrap();
        eprintln!("{payload:?}: {msg}");
        for s in &secrets {
            assert!(!msg.contains(s.as_str()), "{payload:?} read {s:?}: {msg}");
        }
    }
    worker.kill().await.unwrap();
    source::drop(&src).await.unwrap();
}

/// A MySQL planet of `env`'s tenant on the local MariaDB, for database `db`.
async fn mariadb_planet(env: &Env, db: &str) -> String {
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
    r.json()["id"].as_str().unwrap().to_owned()
}

fn mariadb_exists(db: &str) -> bool {
    mariadb(
        None,
        &format!("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{db}'"),
    ) == "1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_client_commands_do_not_run_either() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let db = format!("svalbard_t_myh_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let other = format!("{db}_other");
    mariadb(None, &format!("CREATE DATABASE {db}; CREATE DATABASE {other}"));
    let planet = mariadb_planet(&env, &db).await;

    // A file that, sourced, would write into another database.
    let sourced = marker().with_extension("sql");
    std::fs::write(&sourced, format!("CREATE TABLE {other}.sourced (x INT);\n")).unwrap();
    let m1 = marker();
    let m2 = marker();
    let payloads = [
        ("shell", format!("\\! touch {}", m1.display())),
        ("system", format!("system touch {}", m2.display())),
        ("source", format!("source {}", sourced.display())),
        ("source, short", format!("\\. {}", sourced.display())),
        (
            "connect",
            format!("connect {other} 127.0.0.1\nCREATE TABLE connected (x INT);"),
        ),
        ("tee", format!("tee {}", m1.display())),
    ];
    for (what, payload) in &payloads {
        let target = format!("{db}_new");
        let dump = format!(
            "-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\nCREATE TABLE intruder (x INT);\n\
             INSERT INTO intruder VALUES (1);\n{payload}\nINSERT INTO intruder VALUES (2);\n"
        )
        .into_bytes();
        let done = env
            .upload_outcome(&planet, "evil.sql", dump, json!({ "targetDatabase": target }))
            .await;
        assert_eq!(done["status"], "failed", "{what}: {done}");
        // Not run as a client command: unknown to the client, or sent to the server as SQL.
        let msg = done["errorMessage"].as_str().unwrap();
        assert!(
            msg.contains("Unknown command") || msg.contains("SQL syntax"),
            "{what}: {msg}"
        );
        eprintln!("{what}: {msg}");
        assert!(
            !m1.exists() && !m2.exists(),
            "{what}: a client command ran on the worker"
        );
        assert!(!mariadb_exists(&target), "{what}: {target} was left behind");
        assert_eq!(
            mariadb(
                None,
                &format!("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{other}'")
            ),
            "0",
            "{what}: another database was written"
        );
    }
    std::fs::remove_file(&sourced).unwrap();
    stop.cancel();
    worker.await.unwrap();
    mariadb(None, &format!("DROP DATABASE {db}; DROP DATABASE {other}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_dump_cannot_make_the_client_send_a_file_of_the_worker() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let db = format!("svalbard_t_myl_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    mariadb(None, &format!("CREATE DATABASE {db}"));
    let planet = mariadb_planet(&env, &db).await;
    // A file of the worker's that a LOCAL load would read and send to the tenant's server.
    let secret = marker();
    std::fs::write(&secret, "platform-secret-line\n").unwrap();
    let target = format!("{db}_new");
    let dump = format!(
        "-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\nCREATE TABLE stolen (line TEXT);\n\
         LOAD DATA LOCAL INFILE '{}' INTO TABLE stolen;\n",
        secret.display()
    )
    .into_bytes();
    let done = env
        .upload_outcome(&planet, "evil.sql", dump, json!({ "targetDatabase": target }))
        .await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        !done["errorMessage"].as_str().unwrap().contains("platform-secret"),
        "{done}"
    );
    assert!(!mariadb_exists(&target), "{target} was left behind: {done}");
    std::fs::remove_file(&secret).unwrap();
    stop.cancel();
    worker.await.unwrap();
    mariadb(None, &format!("DROP DATABASE {db}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_go_only_into_the_planets_database_or_one_derived_from_it() {
    let env = Env::new().await;
    let src = source::create("tgt", &source::sample_schema(10)).await.unwrap();
    let planet = env.planet("target", &src, "postgres", None).await;
    let backup: String = sqlx::query_scalar(
        "INSERT INTO backups (id, tenant_id, project_id, planet_id, name, engine, method, status, storage_prefix,
                              object_key, checksum, stage, retention_days)
         VALUES (gen_random_uuid(), $1::uuid, $2::uuid, $3::uuid, 'b', 'postgresql', 'manual', 'succeeded', 'p/',
                 'p/a.svb.zst', 'sha256:00', 'dev', 7)
         RETURNING id::text",
    )
    .bind(&env.tenant)
    .bind(&env.project)
    .bind(&planet)
    .fetch_one(&env.app.pool)
    .await
    .unwrap();
    for bad in [
        "template1".to_owned(),
        "template0".to_owned(),
        "postgres".to_owned(),
        "svalbard".to_owned(),
        format!("{src}x"),
        format!("{src}_UPPER"),
        format!("{src}_a-b"),
        format!("other_{src}"),
    ] {
        let p = env
            .restore(&backup, &env.token, json!({ "targetDatabase": bad }))
            .await
            .names_field("targetDatabase");
        assert!(p.to_string().contains("_<suffix>"), "{bad}: {p}");
        let dump = b"-- PostgreSQL database dump\nSELECT 1;\n".to_vec();
        env.upload(
            &planet,
            &env.token,
            "archive",
            "a.sql",
            dump,
            Some(json!({ "targetDatabase": bad })),
        )
        .await
        .names_field("options.targetDatabase");
    }
    // The planet's own database and derived names are accepted.
    let r = env
        .restore(
            &backup,
            &env.token,
            json!({ "targetDatabase": format!("{src}_copy_2") }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_checks_the_target_again_and_counts_every_kind_of_object() {
    let env = Env::new().await;
    let src = source::create("again", &source::sample_schema(10)).await.unwrap();
    let planet = env.planet("target", &src, "postgres", None).await;
    let dump = {
        let out = std::process::Command::new("pg_dump")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-Fc"])
            .arg(&src)
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };

    // A restore whose target was changed behind the API's back: refused by the worker.
    let r = env
        .upload(
            &planet,
            &env.token,
            "file",
            "a.dump",
            dump.clone(),
            Some(json!({ "targetDatabase": format!("{src}_ok") })),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let location = r.header("location").unwrap();
    sqlx::query("UPDATE restores SET target_database = 'template1' WHERE id = $1::uuid")
        .bind(location.rsplit('/').next().unwrap())
        .execute(&env.app.pool)
        .await
        .unwrap();
    let (stop, worker) = env.worker();
    let done = env.restore_outcome(&location).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["errorMessage"].as_str().unwrap().contains("not allowed"), "{done}");

    // "Empty" means no object of any kind, not only no table.
    for (what, setup) in [
        ("schema", "CREATE SCHEMA app"),
        ("function", "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'"),
        ("type", "CREATE TYPE mood AS ENUM ('ok')"),
        ("domain", "CREATE DOMAIN positive AS int CHECK (VALUE > 0)"),
        ("extension", "CREATE EXTENSION citext"),
        ("sequence", "CREATE SEQUENCE s"),
    ] {
        let target = format!("{src}_{what}");
        let mut admin = source::connect("postgres").await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {target}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let mut db = source::connect(&target).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(setup.to_owned()))
            .execute(&mut db)
            .await
            .unwrap();
        drop(db);
        let done = env
            .upload_outcome(&planet, "a.dump", dump.clone(), json!({ "targetDatabase": target }))
            .await;
        assert_eq!(done["status"], "failed", "{what}: {done}");
        assert!(
            done["errorMessage"].as_str().unwrap().contains("not empty"),
            "{what}: {done}"
        );
        assert!(!pg_table_exists(&target, "orders").await, "{what}");
        source::drop(&target).await.unwrap();
    }
    // A database that is really empty is restored into.
    let target = format!("{src}_empty");
    let mut admin = source::connect("postgres").await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {target}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let done = env
        .upload_outcome(&planet, "a.dump", dump, json!({ "targetDatabase": target }))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    source::drop(&target).await.unwrap();

    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_counts_routines_views_events_and_triggers_as_content() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let db = format!("svalbard_t_mye_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    mariadb(None, &format!("CREATE DATABASE {db}"));
    let r = env
        .app
        .post(
            &env.planets(),
            &env.token,
            json!({ "name": "maria", "engine": "mysql",
                    "connection": { "host": "127.0.0.1", "port": 3306, "database": db, "user": "root", "sslmode": "disable" } }),
        )
        .await;
    let planet = r.json()["id"].as_str().unwrap().to_owned();
    let dump = b"-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\nCREATE TABLE t (x INT);\n".to_vec();
    for (what, setup) in [
        ("routine", "CREATE PROCEDURE p() SELECT 1"),
        ("view", "CREATE VIEW v AS SELECT 1 AS one"),
        ("event", "CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO SELECT 1"),
    ] {
        let target = format!("{db}_{what}");
        mariadb(None, &format!("CREATE DATABASE {target}"));
        mariadb(Some(&target), setup);
        let done = env
            .upload_outcome(&planet, "a.sql", dump.clone(), json!({ "targetDatabase": target }))
            .await;
        assert_eq!(done["status"], "failed", "{what}: {done}");
        assert!(
            done["errorMessage"].as_str().unwrap().contains("not empty"),
            "{what}: {done}"
        );
        mariadb(None, &format!("DROP DATABASE {target}"));
    }
    stop.cancel();
    worker.await.unwrap();
    mariadb(None, &format!("DROP DATABASE {db}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sslmode_require_a_password_goes_only_to_a_channel_bound_scram_login() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let src = source::create("cb", "SELECT 1").await.unwrap();
    // The test server speaks TLS but lets anyone in without authentication, as a machine in the
    // middle or a server aimed at the password would: with `require`, the login is refused.
    let r = env
        .app
        .post(
            &env.planets(),
            &env.token,
            json!({ "name": "bound", "engine": "postgresql",
                    "connection": { "host": "127.0.0.1", "port": 5432, "database": src, "user": "postgres",
                                    "password": "a-secret", "sslmode": "require" } }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let planet = r.json()["id"].as_str().unwrap().to_owned();
    let id = env.start_backup(&planet).await["id"].as_str().unwrap().to_owned();
    let b = env.wait_status(&id, "failed", std::time::Duration::from_secs(60)).await;
    let msg = b["errorMessage"].as_str().unwrap();
    assert!(msg.contains("channel binding required"), "{msg}");
    assert!(!msg.contains("a-secret"), "{msg}");
    assert_eq!(
        env.attempts(&id).await,
        vec![("backup".to_owned(), 1, "failed".to_owned())],
        "retried a permanent refusal"
    );
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}
