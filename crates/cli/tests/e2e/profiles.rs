//! The drop-in profiles, driven by the example calls of the four documents they follow, run
//! with the real `curl`: the same arguments apart from the base URL and the credentials (and
//! the options that report the status code). The documents break their commands over lines
//! with `\`, sometimes without the space a shell needs before it; the arguments here are the
//! words the commands mean.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use svalbard_testkit::source;

use crate::harness::Env;

const MINUTE: Duration = Duration::from_secs(60);

/// Runs `curl` with `args`, returning the status code and the body.
async fn curl(args: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(args)
        .args(["--silent", "--show-error", "--write-out", "\n%{http_code}"])
        .output()
        .await
        .expect("curl runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl {args:?} failed: {stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// Runs `curl` until its JSON answer satisfies `done`.
async fn curl_until(args: &[&str], done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (code, body) = curl(args).await;
        assert_eq!(code, 200, "{args:?}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if done(&v) {
            return v;
        }
        assert!(started.elapsed() < MINUTE, "{args:?} did not get there: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guidewire_document_calls() {
    let env = Env::new().await;
    let src = source::create("gw", &source::sample_schema(500)).await.unwrap();
    let planet = env.planet("testbackup", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let base = &env.app.base;
    let (tenant, project) = (&env.tenant, &env.project);
    let auth = format!("Authorization: Bearer {}", env.token);
    let body = r#"{
"mechanism": "logical",
"planetClass": "dev",
"temporary": true,
"retentionPeriodInDays": 10,
"metadata": {
"name": "sample backup",
"description": "This is a sample backup."
}
}"#;

    // Create a backup.
    let url = format!("{base}/api/v1/tenants/{tenant}/starsystems/{project}/planets/{planet}/backups");
    let (code, out) = curl(&[
        "-X",
        "POST",
        &url,
        "-H",
        "accept: application/json",
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
    ])
    .await;
    assert_eq!(code, 201, "{out}");
    let created = json_of(&out);
    let id = created["id"].as_str().unwrap().to_owned();

    // Check if the database backup is ready: `status` becomes `succeeded`.
    let url = format!("{base}/api/v1/tenants/{tenant}/starsystems/{project}/backups/{id}");
    let b = curl_until(
        &["-X", "GET", &url, "-H", "accept: application/json", "-H", &auth],
        |b| b["status"] != "scheduled" && b["status"] != "running",
    )
    .await;
    assert_eq!(b["status"], "succeeded", "{b}");
    assert_eq!(b["mechanism"], "logical");
    assert_eq!(b["type"], "temporary");
    assert_eq!(b["environment"]["tenant"], "e2e");
    assert_eq!(b["environment"]["project"], "shop");
    assert_eq!(b["environment"]["stage"], "dev");
    assert_eq!(b["environment"]["name"], "testbackup");
    assert_eq!(b["displayStatus"], "ready");
    assert!(b["errorMessage"].is_null(), "{b}");
    for field in ["startedAt", "completedAt", "expirationDate"] {
        assert!(b[field].is_string(), "{field}: {b}");
    }
    assert_eq!(b["retentionPeriodInDays"], 10);
    assert_eq!(b["metadata"]["name"], "sample backup");

    // Details of backups from a planet, and from a star system (the singular path).
    let url = format!("{base}/api/v1/tenants/{tenant}/starsystems/{project}/planets/{planet}/backups");
    let (code, out) = curl(&["-X", "GET", &url, "-H", "accept: application/json", "-H", &auth]).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(json_of(&out)["items"][0]["id"], id.as_str());
    let url = format!("{base}/api/v1/tenants/{tenant}/starsystems/{project}/backup");
    let (code, out) = curl(&["-X", "GET", &url, "-H", "accept: application/json", "-H", &auth]).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(json_of(&out)["items"][0]["type"], "temporary");

    // Delete a database backup: 200.
    let url = format!("{base}/api/v1/tenants/{tenant}/starsystems/{project}/backups/{id}");
    let (code, out) = curl(&["-X", "DELETE", &url, "-H", &auth]).await;
    assert_eq!(code, 200, "{out}");
    assert!(
        matches!(json_of(&out)["status"].as_str(), Some("deleting" | "deleted")),
        "{out}"
    );
    env.wait_status(&id, "deleted", MINUTE).await;
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectware_document_calls() {
    let env = Env::new().await;
    let src = source::create("cw", &source::sample_schema(2_000)).await.unwrap();
    let planet = env.planet("orders", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let host = format!(
        "{}/profiles/connectware/tenants/{}/projects/{}/planets/{planet}",
        env.app.base, env.tenant, env.project
    );
    let user = format!("admin:{}", env.token);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("connectware-db-backup.tgz");
    let file = file.to_str().unwrap();
    let status = format!("{host}/api/maintenance/db");
    let status_call = [
        "-k",
        "--header",
        "Content-Type: application/json",
        "--request",
        "GET",
        "-u",
        &user,
        &status,
    ];

    // Check status of maintenance operation: nothing has happened yet.
    let (code, out) = curl(&status_call).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(
        json_of(&out),
        json!({ "running": false, "backup": null, "restore": null })
    );

    // Start backup creation: 202.
    let backup = format!("{host}/api/maintenance/db/backup");
    let (code, out) = curl(&["-k", "--request", "POST", "-u", &user, &backup]).await;
    assert_eq!(code, 202, "{out}");
    let s = curl_until(&status_call, |s| s["running"] == false).await;
    let b = &s["backup"];
    assert_eq!(b["succeded"], true, "{s}");
    assert_eq!(b["statusMessage"], "OK", "{s}");
    assert!(b["startDate"].is_string() && b["endDate"].is_string(), "{s}");
    let id = b["id"].as_str().unwrap().to_owned();
    let before = source::fingerprint(&src).await.unwrap();

    // Download the backup file: the same bytes as the stored archive.
    let (code, _) = curl(&["-k", "--request", "GET", "-u", &user, &backup, "--output", file]).await;
    assert_eq!(code, 200);
    let downloaded = std::fs::read(file).unwrap();
    assert_eq!(downloaded, env.download(&id).await);

    // Change the database, then restore it from the file: the change is gone.
    let mut conn = source::connect(&src).await.unwrap();
    sqlx::query("CREATE TABLE after_the_backup (x int)")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let restore = format!("{host}/api/maintenance/db/restore");
    let form = format!("file=@{file}");
    let (code, out) = curl(&["-k", "--request", "POST", "-u", &user, "-F", &form, &restore]).await;
    assert_eq!(code, 202, "{out}");
    let s = curl_until(&status_call, |s| s["running"] == false).await;
    assert_eq!(s["restore"]["succeded"], true, "{s}");
    assert_eq!(s["restore"]["statusMessage"], "OK", "{s}");
    assert_eq!(source::fingerprint(&src).await.unwrap(), before);

    // A file from a newer version is refused, and the status names the version that can restore it.
    let plain = env.open_archive(&downloaded).await;
    let (_, skip) = svalbard_core::archive::read_header(&plain).unwrap().unwrap();
    let mut dump = zstd::decode_all(&plain[skip..]).unwrap();
    // "dumped from" and "dumped by" read like `15.20 (Debian 15.20-…)`: the third "15." starts
    // the "dumped by" string.
    let at: Vec<usize> = dump[..300]
        .windows(3)
        .enumerate()
        .filter(|(_, w)| *w == b"15.")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 4, "unexpected dump header");
    dump[at[2]..at[2] + 2].copy_from_slice(b"99");
    std::fs::write(file, zstd::encode_all(&dump[..], 1).unwrap()).unwrap();
    let (code, out) = curl(&["-k", "--request", "POST", "-u", &user, "-F", &form, &restore]).await;
    assert_eq!(code, 202, "{out}");
    let s = curl_until(&status_call, |s| s["running"] == false).await;
    assert_eq!(s["restore"]["succeded"], false, "{s}");
    let msg = s["restore"]["statusMessage"].as_str().unwrap();
    assert!(msg.contains("pg_restore 99 or later"), "{msg}");
    assert_eq!(
        source::fingerprint(&src).await.unwrap(),
        before,
        "a refused restore touched the database"
    );
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbaas_document_calls() {
    let env = Env::new().await;
    let src = source::create("dbaas", &source::sample_schema(500)).await.unwrap();
    let db = env.planet("kibana", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let api = format!("{}/profiles/dbaas/tenants/{}", env.app.base, env.tenant);
    let auth = format!("Authorization: Bearer {}", env.token);
    let headers = [
        "-H",
        "Accept: application/json",
        "-H",
        "Content-Type: application/json",
        "-H",
        &auth,
    ];

    // Schedule the creation of a new backup: 201.
    let url = format!("{api}/api/databases/{db}/backups");
    let (code, out) = curl(&[&headers[..], &["-X", "POST", url.as_str()][..]].concat()).await;
    assert_eq!(code, 201, "{out}");
    let b = json_of(&out)["database_backup"].clone();
    assert_eq!(b["status"], "scheduled", "{b}");
    assert_eq!(b["database_id"], db.as_str());
    assert_eq!(b["method"], "manual");
    assert!(b["started_at"].is_null() && b["size"].is_null(), "{b}");
    assert!(b["name"].as_str().unwrap().ends_with("_kibana"), "{b}");
    let id = b["id"].as_str().unwrap().to_owned();

    // List all backups for a database: it becomes `done`.
    let list = curl_until(&[&headers[..], &["-X", "GET", url.as_str()][..]].concat(), |v| {
        v["database_backups"][0]["status"] == "done"
    })
    .await;
    let done = &list["database_backups"][0];
    assert_eq!(done["id"], id.as_str());
    assert!(done["size"].as_i64().unwrap() > 0, "{done}");
    assert!(
        done["started_at"].is_string() && done["created_at"].is_string(),
        "{done}"
    );
    assert_eq!(done["type"], "postgresql");

    // Get a pre-signed URL to download the backup.
    let url = format!("{api}/api/databases/{db}/backups/{id}/archive");
    let (code, out) = curl(&[&headers[..], &["-X", "GET", url.as_str()][..]].concat()).await;
    assert_eq!(code, 200, "{out}");
    let link = json_of(&out)["download_url"].as_str().unwrap().to_owned();
    let (code, _) = curl(&[link.as_str(), "--output", "/dev/null"]).await;
    assert_eq!(code, 200);
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camunda_document_calls() {
    let env = Env::new().await;
    let src = source::create("cam", &source::sample_schema(500)).await.unwrap();
    let planet = env.planet("webapps", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let host = format!(
        "{}/profiles/camunda/tenants/{}/projects/{}/planets/{planet}",
        env.app.base, env.tenant, env.project
    );
    let auth = format!("Authorization: Bearer {}", env.token);
    let history = format!("{host}/actuator/backupHistory");

    // Create backup: 200 with the scheduled snapshots, one per part.
    let create = [
        "--request",
        "POST",
        &history,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{ "backupId": 123 }"#,
        "-H",
        &auth,
    ];
    let (code, out) = curl(&create).await;
    assert_eq!(code, 200, "{out}");
    let snapshots: Vec<String> = serde_json::from_value(json_of(&out)["scheduledSnapshots"].clone()).unwrap();
    assert_eq!(
        snapshots,
        [
            "svalbard_123_dump_part_1_of_3",
            "svalbard_123_upload_part_2_of_3",
            "svalbard_123_manifest_part_3_of_3"
        ]
    );
    // The same id again: 400.
    let (code, out) = curl(&create).await;
    assert_eq!(code, 400, "{out}");
    assert_eq!(json_of(&out)["errors"][0]["field"], "backupId");

    // Get backup state: COMPLETED, one detail per snapshot.
    let one = format!("{history}/123");
    let s = curl_until(&[&one, "-H", &auth], |s| s["state"] != "IN_PROGRESS").await;
    assert_eq!(s["backupId"], 123);
    assert_eq!(s["state"], "COMPLETED", "{s}");
    assert!(s["failureReason"].is_null(), "{s}");
    let details = s["details"].as_array().unwrap();
    assert_eq!(details.len(), 3, "{s}");
    for (d, name) in details.iter().zip(&snapshots) {
        assert_eq!(d["snapshotName"], name.as_str());
        assert_eq!(d["state"], "SUCCESS", "{s}");
        assert_eq!(d["failures"], json!([]));
        assert!(d["startTime"].is_string(), "{s}");
    }

    // Get backups list.
    let (code, out) = curl(&[&history, "-H", &auth]).await;
    assert_eq!(code, 200, "{out}");
    let list = json_of(&out);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["backupId"], 123);

    // Delete backup: 204; then the id is unknown, and free again.
    let (code, out) = curl(&["--request", "DELETE", &one, "-H", &auth]).await;
    assert_eq!(code, 204, "{out}");
    let (code, _) = curl(&[&one, "-H", &auth]).await;
    assert_eq!(code, 404);
    let (code, out) = curl(&[&history, "-H", &auth]).await;
    assert_eq!((code, json_of(&out)), (200, json!([])));
    let (code, out) = curl(&create).await;
    assert_eq!(code, 200, "{out}");
    let s = curl_until(&[&one, "-H", &auth], |s| s["state"] != "IN_PROGRESS").await;
    assert_eq!(s["state"], "COMPLETED", "{s}");
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}
