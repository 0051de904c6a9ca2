use std::time::Duration;

use serde_json::{Value, json};
use svalbard_core::auth::Role;
use svalbard_testkit::source;

use crate::harness::Env;

const MINUTE: Duration = Duration::from_secs(60);

fn pg_dump(db: &str, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-U", "postgres"])
        .args(args)
        .arg(db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    out.stdin.take().unwrap().write_all(data).unwrap();
    out.wait_with_output().unwrap().stdout
}

impl Env {
    fn upload_path(&self, planet: &str) -> String {
        format!("{}/{planet}/restores", self.planets())
    }

    pub(crate) async fn upload(
        &self,
        planet: &str,
        token: &str,
        field: &str,
        name: &str,
        data: Vec<u8>,
        options: Option<Value>,
    ) -> svalbard_testkit::app::Resp {
        let mut form = reqwest::multipart::Form::new().part(
            field.to_owned(),
            reqwest::multipart::Part::bytes(data).file_name(name.to_owned()),
        );
        if let Some(o) = options {
            form = form.text("options", o.to_string());
        }
        let res = self
            .app
            .client
            .post(format!("{}{}", self.app.base, self.upload_path(planet)))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        svalbard_testkit::app::Resp {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            text: res.text().await.unwrap(),
        }
    }

    async fn uploads_left(&self, planet: &str) -> usize {
        let prefix = format!(
            "{}/tenants/{}/projects/{}/planets/{planet}/uploads/",
            self.app.config.s3.prefix, self.tenant, self.project
        );
        self.storage.list_keys(&prefix).await.unwrap().len() + self.storage.list_uploads(&prefix).await.unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_of_every_accepted_kind_restore() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let src = source::create("up", &source::sample_schema(3_000)).await.unwrap();
    let expected = source::fingerprint(&src).await.unwrap();
    let planet = env.planet("target", &src, "postgres", None).await;

    // A Svalbard archive as downloaded from the archive URL.
    let backup = env.start_backup(&planet).await["id"].as_str().unwrap().to_owned();
    env.wait_status(&backup, "succeeded", MINUTE).await;
    let archive = env.download(&backup).await;

    let kinds: Vec<(&str, &str, Vec<u8>)> = vec![
        ("archive", "backup.svb.zst", archive),
        ("file", "app.dump", pg_dump(&src, &["-Fc"])),
        ("archive", "app.sql.gz", gzip(&pg_dump(&src, &[]))),
    ];
    for (i, (field, name, data)) in kinds.into_iter().enumerate() {
        let target = format!("{src}_upl{i}");
        let r = env
            .upload(
                &planet,
                &env.token,
                field,
                name,
                data,
                Some(json!({ "targetDatabase": target })),
            )
            .await;
        assert_eq!(r.status, 202, "{name}: {}", r.text);
        let created = r.json();
        assert_eq!(created["source"]["uploadName"], name);
        let done = env.restore_outcome(&r.header("location").unwrap()).await;
        assert_eq!(done["status"], "succeeded", "{name}: {done}");
        assert_eq!(source::fingerprint(&target).await.unwrap(), expected, "{name}");
        assert_eq!(done["verification"]["tables"], expected.len());
        source::drop(&target).await.unwrap();
    }
    assert_eq!(env.uploads_left(&planet).await, 0, "a consumed upload was kept");
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_garbage_and_wrongly_sent_uploads_are_refused() {
    let env = Env::new().await;
    let (stop, worker) = env.worker();
    let src = source::create("bad", &source::sample_schema(20_000)).await.unwrap();
    let before = source::fingerprint(&src).await.unwrap();
    let planet = env.planet("target", &src, "postgres", None).await;
    let admin = env.app.token(&env.tenant, Role::Admin);

    // A truncated compressed dump: accepted (its start is fine), then failed before the
    // target — the source database itself, with replace — is touched.
    let dump = zstd::encode_all(&pg_dump(&src, &["-Fc"])[..], 1).unwrap();
    let half = dump[..dump.len() / 2].to_vec();
    let r = env
        .upload(
            &planet,
            &admin,
            "archive",
            "half.dump.zst",
            half,
            Some(json!({ "replace": true })),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let done = env.restore_outcome(&r.header("location").unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["errorMessage"]
            .as_str()
            .unwrap()
            .contains("corrupted or truncated"),
        "{done}"
    );
    assert_eq!(source::fingerprint(&src).await.unwrap(), before);

    // Garbage: 400 naming what was seen; nothing stored.
    let r = env
        .upload(
            &planet,
            &env.token,
            "archive",
            "photo.png",
            b"\x89PNG\r\n\x1a\nnot a dump".to_vec(),
            None,
        )
        .await;
    let p = r.names_field("archive");
    assert!(
        p["detail"].as_str().unwrap().contains("not a recognised archive"),
        "{p}"
    );
    // No archive field, bad options, an operator asking to replace, not multipart at all.
    env.upload(&planet, &env.token, "other", "x", b"x".to_vec(), None)
        .await
        .names_field("archive");
    env.upload(
        &planet,
        &env.token,
        "file",
        "d.dump",
        pg_dump(&src, &["-Fc"]),
        Some(json!({ "colour": 1 })),
    )
    .await
    .names_field("options.colour");
    env.upload(
        &planet,
        &env.app.token(&env.tenant, Role::Operator),
        "file",
        "d.dump",
        pg_dump(&src, &["-Fc"]),
        Some(json!({ "replace": true })),
    )
    .await
    .problem(403);
    env.app
        .post(&env.upload_path(&planet), &env.token, json!({}))
        .await
        .problem(415);
    assert_eq!(
        env.uploads_left(&planet).await,
        0,
        "a refused upload left objects behind"
    );
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}

#[tokio::test]
async fn an_upload_over_the_limit_is_413_and_stores_nothing() {
    svalbard_testkit::require_s3();
    let mut overrides = crate::harness::fast_worker();
    overrides["limits"] = json!({ "upload_bytes": 6 * 1024 * 1024 });
    let app = svalbard_testkit::app::TestApp::spawn_with(overrides).await;
    let tenant = app.tenant("big").await;
    let project = app.project(&tenant, "p").await;
    let planet = app.planet(&tenant, &project, "db").await;
    let data = vec![b'-'; 7 * 1024 * 1024];
    let form =
        reqwest::multipart::Form::new().part("archive", reqwest::multipart::Part::bytes(data).file_name("big.sql"));
    let r = app
        .client
        .post(format!(
            "{}/api/v1/tenants/{tenant}/projects/{project}/planets/{planet}/restores",
            app.base
        ))
        .bearer_auth(app.platform())
        .multipart(form)
        .send()
        .await;
    // The server may answer before reading everything; either way it is a 413 or a cut connection.
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    let storage = svalbard_testkit::storage(&app.config);
    let prefix = format!("{}/tenants/{tenant}/", app.config.s3.prefix);
    assert!(storage.list_keys(&prefix).await.unwrap().is_empty());
    assert!(storage.list_uploads(&prefix).await.unwrap().is_empty());
    let restores: i64 = sqlx::query_scalar("SELECT count(*) FROM restores")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(restores, 0);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_nothing() {
    use tokio::io::AsyncWriteExt as _;
    let env = Env::new().await;
    let src = source::create("cut", &source::sample_schema(10)).await.unwrap();
    let planet = env.planet("target", &src, "postgres", None).await;
    let addr = env.app.base.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let boundary = "svalbardboundary";
    let dump = pg_dump(&src, &["-Fc"]);
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"a.dump\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n",
        env.upload_path(&planet),
        env.token,
        dump.len() * 4,
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&dump).await.unwrap();
    tcp.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.uploads_left(&planet).await,
        1,
        "the upload did not start streaming to storage"
    );
    drop(tcp);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.uploads_left(&planet).await, 0);
    let restores: i64 = sqlx::query_scalar("SELECT count(*) FROM restores")
        .fetch_one(&env.app.pool)
        .await
        .unwrap();
    assert_eq!(restores, 0);
    source::drop(&src).await.unwrap();
}
