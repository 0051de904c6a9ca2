//! A process whose key ring does not belong to the control database refuses to start, so it
//! can never take (and fail) the jobs of the processes that hold the right keys.

use std::process::Stdio;
use std::time::{Duration, Instant};

use svalbard_core::crypto::KeyRing;
use svalbard_testkit::{SEAL_KEYS, source};

use crate::harness::Env;

impl Env {
    /// Runs `svalbard <sub>` with `keys` until it exits (it must, within 30 s): its status and
    /// what it wrote on stderr.
    async fn refused(&self, sub: &str, keys: &str) -> (std::process::ExitStatus, String) {
        let child = self
            .command(sub, keys)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`svalbard {sub}` with another key ring kept running"))
            .unwrap();
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    async fn check_key(&self) -> Option<String> {
        sqlx::query_scalar("SELECT key_id FROM key_check")
            .fetch_optional(&self.app.pool)
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_another_key_ring_refuses_to_start_and_a_rotated_ring_starts() {
    let env = Env::new().await;
    // The first worker to start seals the check value with its first key.
    let mut first = env.worker_process();
    let started = Instant::now();
    while env.check_key().await.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no key check value was written"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first.kill().await.unwrap();
    assert_eq!(env.check_key().await.as_deref(), Some("t1"));

    // A backup waits for a worker; one with another installation's keys must not take it.
    let src = source::create("keys", &source::sample_schema(50)).await.unwrap();
    let planet = env.planet("orders", &src, "postgres", None).await;
    let backup = env.start_backup(&planet).await;
    let id = backup["id"].as_str().unwrap();
    let stranger = KeyRing::generate_spec("other1");
    for sub in ["work", "serve"] {
        let (status, stderr) = env.refused(sub, &stranger).await;
        assert!(!status.success(), "`svalbard {sub}` started with another key ring");
        assert!(
            stderr.contains("crypto.keys does not belong to this control database")
                && stderr.contains("other1")
                && stderr.contains("sealed with key `t1`"),
            "{stderr}"
        );
    }
    assert_eq!(env.backup(id).await["status"], "scheduled");
    assert_eq!(env.attempts(id).await[0].1, 0, "the refused worker claimed the job");

    // A rotation: the new key first, the old one after it. The worker starts, opens the
    // planet's password sealed with the old key, and seals the check value again with the new.
    let t2 = KeyRing::generate_spec("t2");
    let rotated = format!("{t2},{SEAL_KEYS}");
    let mut worker = env.command("work", &rotated).spawn().unwrap();
    env.wait_status(id, "succeeded", Duration::from_secs(60)).await;
    assert_eq!(env.check_key().await.as_deref(), Some("t2"));
    worker.kill().await.unwrap();
    // After the rotation, a ring without the new key is refused too.
    let (status, stderr) = env.refused("work", SEAL_KEYS).await;
    assert!(!status.success());
    assert!(stderr.contains("sealed with key `t2`"), "{stderr}");
    // And so is a stale ring that still puts the old key first: it would seal everything back.
    for sub in ["work", "serve"] {
        let (status, stderr) = env.refused(sub, &format!("{SEAL_KEYS},{t2}")).await;
        assert!(!status.success(), "`svalbard {sub}` undid the rotation");
        assert!(
            stderr.contains("puts key `t1` first") && stderr.contains("Put key `t2` first"),
            "{stderr}"
        );
    }
    assert_eq!(env.check_key().await.as_deref(), Some("t2"));
    source::drop(&src).await.unwrap();
}
