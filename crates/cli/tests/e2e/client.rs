//! The `svalbard` command-line client against a running API and worker: planets, backups with
//! `--wait`, downloads that resume and check the checksum, restores, schedules, and the exit
//! status and problem text of refusals.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use svalbard_core::auth::Role;
use svalbard_testkit::source;

use crate::harness::Env;

/// `svalbard <args>` as a client of `env`'s API, with `token` (none when `None`).
async fn cli(env: &Env, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_svalbard"));
    cmd.args(args).env_clear().env("SVALBARD_URL", &env.app.base);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    if let Some(t) = token {
        cmd.env("SVALBARD_TOKEN", t);
    }
    cmd.output().await.unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON a successful `--output json` call printed.
fn json_of(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(o), stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn sha256_of(path: &Path) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(std::fs::read(path).unwrap())))
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("svalbard-cli-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_user_backs_up_downloads_and_restores() {
    let env = Env::new().await;
    let src = source::create("cli", &source::sample_schema(5_000)).await.unwrap();
    let planet = env.planet("orders", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let token = Some(env.token.as_str());

    // Planets of every project of the token's tenant, for people and for scripts.
    let table = cli(&env, token, &["planet", "list"]).await;
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(
        text.contains("NAME") && text.contains("orders") && text.contains(&planet),
        "{text}"
    );
    let planets = json_of(&cli(&env, token, &["planet", "list", "-o", "json"]).await);
    assert_eq!(planets[0]["id"], planet.as_str());

    // A backup named by its planet's name, waited for until it ends.
    let b = json_of(
        &cli(
            &env,
            token,
            &["backup", "create", "--planet", "orders", "--wait", "-o", "json"],
        )
        .await,
    );
    assert_eq!(b["status"], "succeeded", "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    let listed = json_of(&cli(&env, token, &["backup", "list", "--planet", &planet, "-o", "json"]).await);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    let got = cli(&env, token, &["backup", "get", &id]).await;
    assert!(stdout(&got).contains("succeeded"), "{}", stdout(&got));

    // A download checked against the backup's checksum.
    let dir = scratch_dir();
    let first = dir.join("first.svb.zst");
    let done = json_of(
        &cli(
            &env,
            token,
            &["backup", "download", &id, "-f", first.to_str().unwrap(), "-o", "json"],
        )
        .await,
    );
    assert_eq!(done["checksum"], b["checksum"]);
    assert_eq!(done["verified"], true);
    assert_eq!(done["resumedFrom"], 0);
    assert_eq!(sha256_of(&first), b["checksum"].as_str().unwrap());
    // It is the tenant's encrypted archive: whole by every checksum it carries.
    let export = env
        .app
        .get(&format!("/api/v1/tenants/{}/keys/export", env.tenant), &env.token)
        .await
        .json();
    let key = dir.join("tenant.key");
    std::fs::write(&key, export["identityFile"].as_str().unwrap()).unwrap();
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_svalbard"))
        .args(["archive", "verify", "-i", key.to_str().unwrap(), "--checksum"])
        .arg(b["checksum"].as_str().unwrap())
        .arg(&first)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );

    // An interrupted download resumes where it stopped and ends with the same bytes.
    let whole = std::fs::read(&first).unwrap();
    let half = whole.len() / 2;
    let second = dir.join("second.svb.zst");
    std::fs::write(dir.join("second.svb.zst.part"), &whole[..half]).unwrap();
    let resumed = json_of(
        &cli(
            &env,
            token,
            &["backup", "download", &id, "-f", second.to_str().unwrap(), "-o", "json"],
        )
        .await,
    );
    assert_eq!(resumed["resumedFrom"], half as u64);
    assert_eq!(std::fs::read(&second).unwrap(), whole);
    assert!(!dir.join("second.svb.zst.part").exists());

    // A leftover that is not a piece of this archive is caught by the checksum and removed.
    let third = dir.join("third.svb.zst");
    std::fs::write(dir.join("third.svb.zst.part"), vec![b'x'; half]).unwrap();
    let bad = cli(&env, token, &["backup", "download", &id, "-f", third.to_str().unwrap()]).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("does not match the backup's checksum"),
        "{}",
        stderr(&bad)
    );
    assert!(!third.exists() && !dir.join("third.svb.zst.part").exists());

    // A restore into a new database, waited for; the data is the source's.
    let target = format!("{src}_cli");
    let r = json_of(
        &cli(
            &env,
            token,
            &[
                "restore",
                "create",
                "--backup",
                &id,
                "--target-database",
                &target,
                "--wait",
                "-o",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(
        source::fingerprint(&target).await.unwrap(),
        source::fingerprint(&src).await.unwrap()
    );
    let shown = cli(&env, token, &["restore", "get", r["id"].as_str().unwrap()]).await;
    assert!(stdout(&shown).contains(&target), "{}", stdout(&shown));

    // A schedule with a retention policy.
    let s = json_of(
        &cli(
            &env,
            token,
            &[
                "schedule",
                "set",
                "--planet",
                "orders",
                "--cron",
                "30 2 * * *",
                "--keep-last",
                "3",
                "-o",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(s["cron"], "30 2 * * *");
    assert_eq!(s["retention"]["keepLast"], 3);
    assert_eq!(s["enabled"], true);

    stop.cancel();
    worker.await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
    source::drop(&target).await.ok();
    source::drop(&src).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_exit_non_zero_with_the_problem_text() {
    let env = Env::new().await;
    let src = source::create("cli_err", "CREATE TABLE t (id int)").await.unwrap();
    let planet = env.planet("orders", &src, "postgres", None).await;
    let token = Some(env.token.as_str());

    let bad_cron = cli(
        &env,
        token,
        &["schedule", "set", "--planet", &planet, "--cron", "every day"],
    )
    .await;
    assert_eq!(bad_cron.status.code(), Some(1));
    let text = stderr(&bad_cron);
    assert!(text.contains("(400)") && text.contains("cron"), "{text}");

    let viewer = env.app.token(&env.tenant, Role::Viewer);
    let denied = cli(&env, Some(&viewer), &["backup", "create", "--planet", &planet]).await;
    assert_eq!(denied.status.code(), Some(1));
    assert!(stderr(&denied).contains("(403)"), "{}", stderr(&denied));

    let other = env.app.tenant("other").await;
    let stranger = env.app.token(&other, Role::Admin);
    let hidden = cli(&env, Some(&stranger), &["schedule", "get", "--planet", &planet]).await;
    assert_eq!(hidden.status.code(), Some(1));
    assert!(stderr(&hidden).contains("no planet"), "{}", stderr(&hidden));

    let missing = cli(&env, token, &["backup", "get", &uuid::Uuid::now_v7().to_string()]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no backup"), "{}", stderr(&missing));

    let none = cli(&env, None, &["planet", "list"]).await;
    assert_eq!(none.status.code(), Some(1));
    assert!(stderr(&none).contains("SVALBARD_TOKEN"), "{}", stderr(&none));

    let forged = cli(&env, Some("a.b.c"), &["planet", "list"]).await;
    assert_eq!(forged.status.code(), Some(1));

    // A backup that ends `failed` while waited for: exit status 3 and the job's message.
    let gone = env.planet("gone", "svalbard_no_such_database", "postgres", None).await;
    let (stop, worker) = env.worker();
    let failed = cli(&env, token, &["backup", "create", "--planet", &gone, "--wait"]).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(
        failed.status.code(),
        Some(3),
        "{}\n{}",
        stdout(&failed),
        stderr(&failed)
    );
    let out = stdout(&failed);
    assert!(out.contains("failed") && out.contains("error"), "{out}");
    source::drop(&src).await.ok();
}
