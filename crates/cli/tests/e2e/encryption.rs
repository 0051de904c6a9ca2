//! Archives are encrypted for their tenant: noise without its key, restorable with it through
//! Svalbard and with standard tools alone; rotations of the master and the tenant key leave
//! older backups restorable; a deleted tenant's leftover archives open with nothing.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use svalbard_core::auth::Role;
use svalbard_core::crypto::KeyRing;
use svalbard_core::envelope::{self, Openers};
use svalbard_testkit::{SEAL_KEYS, source};

use crate::harness::Env;

const MINUTE: Duration = Duration::from_secs(60);

/// The line of the README that restores a downloaded archive with standard tools only.
fn readme_restore_line() -> String {
    include_str!("../../../../README.md")
        .lines()
        .find(|l| {
            l.starts_with("age -d -i tenant.key backup.svb.zst.age | zstd -d | pg_restore") && l.contains("$TARGET_URL")
        })
        .expect("the README shows how to restore an archive with standard tools")
        .to_owned()
}

fn svalbard(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_svalbard"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

impl Env {
    fn keys_path(&self) -> String {
        format!("/api/v1/tenants/{}/keys", self.tenant)
    }

    async fn export_keys(&self) -> Value {
        let r = self.app.get(&format!("{}/export", self.keys_path()), &self.token).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
        r.json()
    }

    async fn succeeded(&self, planet: &str) -> Value {
        let id = self.start_backup(planet).await["id"].as_str().unwrap().to_owned();
        self.wait_status(&id, "succeeded", 2 * MINUTE).await
    }

    /// Restores a backup into a new database `target`; the restore's final state.
    async fn restore_into(&self, backup: &str, target: &str) -> Value {
        let r = self
            .app
            .post(
                &format!("{}/restores", self.backup_path(backup)),
                &self.token,
                json!({ "targetDatabase": target }),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        self.restore_outcome(&r.header("location").unwrap()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_archive_is_noise_without_its_key_and_restores_with_it() {
    let env = Env::new().await;
    let src = source::create("sealed", &source::sample_schema(400)).await.unwrap();
    let planet = env.planet("orders", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let b = env.succeeded(&planet).await;
    let id = b["id"].as_str().unwrap().to_owned();
    assert_eq!(b["encryption"], "age", "{b}");
    let archive = env.download(&id).await;

    // Without the key: not zstd, no header, and none of the data in the clear.
    assert!(envelope::is_encrypted(&archive));
    assert!(zstd::decode_all(&archive[..]).is_err());
    assert!(svalbard_core::archive::read_header(&archive).unwrap().is_none());
    assert!(
        !archive.windows(b"PGDMP".len()).any(|w| w == b"PGDMP"),
        "the dump shows through"
    );

    // The export is an admin's, audited, and another tenant's is useless here.
    for role in [Role::Viewer, Role::Operator] {
        env.app
            .get(
                &format!("{}/export", env.keys_path()),
                &env.app.token(&env.tenant, role),
            )
            .await
            .problem(403);
    }
    let other = env.app.tenant("intruder").await;
    let other_admin = env.app.token(&other, Role::Admin);
    env.app
        .get(&format!("{}/export", env.keys_path()), &other_admin)
        .await
        .problem(404);
    let theirs = env
        .app
        .get(&format!("/api/v1/tenants/{other}/keys/export"), &other_admin)
        .await
        .json();
    let export = env.export_keys().await;
    assert_eq!(export["format"], "age-x25519");
    assert_eq!(export["keys"][0]["version"], 1);
    let audit = env
        .app
        .get(
            &format!("/api/v1/tenants/{}/audit-events?action=key.export", env.tenant),
            &env.token,
        )
        .await
        .json();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"key.export"), "{audit}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backup.svb.zst.age"), &archive).unwrap();
    std::fs::write(dir.path().join("tenant.key"), export["identityFile"].as_str().unwrap()).unwrap();
    std::fs::write(dir.path().join("theirs.key"), theirs["identityFile"].as_str().unwrap()).unwrap();

    // Standard tools only: exactly the README's line, into an empty database.
    let by_hand = source::create("sealed_std", "SELECT 1").await.unwrap();
    let line = readme_restore_line();
    let out = std::process::Command::new("bash")
        .args(["-o", "pipefail", "-c", &line])
        .current_dir(dir.path())
        .env("TARGET_URL", format!("postgresql://postgres@127.0.0.1:5432/{by_hand}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "`{line}` failed: {}", stderr(&out));
    assert_eq!(
        source::fingerprint(&by_hand).await.unwrap(),
        source::fingerprint(&src).await.unwrap()
    );
    // The other tenant's key does not open it, with age as with Svalbard.
    let out = std::process::Command::new("age")
        .args(["-d", "-i", "theirs.key", "backup.svb.zst.age"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success() && out.stdout.is_empty());

    // `svalbard archive`: inspect without and with the key, verify, decrypt.
    let o = svalbard(dir.path(), &["archive", "inspect", "backup.svb.zst.age"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("encryption: age") && stdout(&o).contains("X25519"),
        "{}",
        stdout(&o)
    );
    let o = svalbard(
        dir.path(),
        &["archive", "inspect", "-i", "tenant.key", "--json", "backup.svb.zst.age"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let seen: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(seen["header"]["backupId"], id.as_str(), "{seen}");
    assert_eq!(seen["header"]["tenantId"], env.tenant.as_str(), "{seen}");
    assert_eq!(seen["dump"]["format"], "pg_dump custom", "{seen}");
    let checksum = b["checksum"].as_str().unwrap();
    let o = svalbard(
        dir.path(),
        &[
            "archive",
            "verify",
            "-i",
            "tenant.key",
            "--checksum",
            checksum,
            "backup.svb.zst.age",
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("sha256: ok") && stdout(&o).contains("age: ok") && stdout(&o).contains("zstd: ok"),
        "{}",
        stdout(&o)
    );
    let o = svalbard(
        dir.path(),
        &[
            "archive",
            "decrypt",
            "-i",
            "tenant.key",
            "-o",
            "dump.pgdump",
            "backup.svb.zst.age",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read(dir.path().join("dump.pgdump"))
            .unwrap()
            .starts_with(b"PGDMP")
    );
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("dump.pgdump"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the plain dump is readable by others: {mode:o}");
    }
    let o = svalbard(
        dir.path(),
        &[
            "archive",
            "decrypt",
            "-i",
            "theirs.key",
            "-o",
            "stolen.pgdump",
            "backup.svb.zst.age",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not have"), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stolen") || n.starts_with(".svalbard-decrypt"))
        .collect();
    assert!(left.is_empty(), "a failed decrypt left {left:?}");

    // One flipped byte: the checksum says so, and so does every chunk's tag without it.
    let mut damaged = archive.clone();
    let at = damaged.len() / 2;
    damaged[at] ^= 0x40;
    std::fs::write(dir.path().join("damaged.svb.zst.age"), &damaged).unwrap();
    let o = svalbard(
        dir.path(),
        &[
            "archive",
            "verify",
            "-i",
            "tenant.key",
            "--checksum",
            checksum,
            "damaged.svb.zst.age",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("MISMATCH"), "{}", stdout(&o));
    let o = svalbard(
        dir.path(),
        &["archive", "verify", "-i", "tenant.key", "damaged.svb.zst.age"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("DAMAGED"), "{}", stdout(&o));

    // Through Svalbard: from the stored backup, and from the downloaded file uploaded again.
    let copy = format!("{src}_copy");
    let done = env.restore_into(&id, &copy).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        source::fingerprint(&copy).await.unwrap(),
        source::fingerprint(&src).await.unwrap()
    );

    stop.cancel();
    worker.await.unwrap();
    for db in [&src, &by_hand, &copy] {
        source::drop(db).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_taken_before_key_rotations_restore_after_them() {
    let env = Env::new().await;
    let src = source::create("rotate", &source::sample_schema(200)).await.unwrap();
    let planet = env.planet("orders", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let before = env.succeeded(&planet).await;
    let id = before["id"].as_str().unwrap().to_owned();
    stop.cancel();
    worker.await.unwrap();

    // The tenant's key rotates: version 2 encrypts from now on, and the backup's data key is
    // wrapped again under it.
    let r = env
        .app
        .send(
            reqwest::Method::POST,
            &format!("{}/rotate", env.keys_path()),
            Some(&env.token),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["key"]["version"], 2, "{}", r.text);
    assert_eq!(r.json()["rewrappedBackups"], 1, "{}", r.text);
    let listed = env.app.get(&env.keys_path(), &env.token).await.json();
    assert_eq!(listed["items"][0]["retiredAt"], Value::Null, "{listed}");
    assert!(listed["items"][1]["retiredAt"].is_string(), "{listed}");
    let version: i32 = sqlx::query_scalar("SELECT data_key_version FROM backups WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&env.app.pool)
        .await
        .unwrap();
    assert_eq!(version, 2);
    // Version 1 is destroyed: the catalog no longer needs it.
    sqlx::query("DELETE FROM tenant_keys WHERE tenant_id = $1::uuid AND version = 1")
        .bind(&env.tenant)
        .execute(&env.app.pool)
        .await
        .unwrap();

    // The master key rotates too: a worker started with the new key first seals the tenant's
    // key again with it.
    let new_master = KeyRing::generate_spec("t2");
    let mut rotated = env
        .command("work", &format!("{new_master},{SEAL_KEYS}"))
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let ids: Vec<String> = sqlx::query_scalar("SELECT master_key_id FROM tenant_keys WHERE tenant_id = $1::uuid")
            .bind(&env.tenant)
            .fetch_all(&env.app.pool)
            .await
            .unwrap();
        if ids == ["t2"] {
            break;
        }
        assert!(
            started.elapsed() < MINUTE,
            "the tenant key was not sealed again: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The new master key alone opens it.
    let only_new = KeyRing::parse(&new_master.clone().into()).unwrap();
    let opened = svalbard_core::repo::keys::all(&env.app.pool, &only_new, env.tenant.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(opened.len(), 1);

    // The backup taken before both rotations restores, through the re-wrapped data key.
    let copy = format!("{src}_before");
    let done = env.restore_into(&id, &copy).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        source::fingerprint(&copy).await.unwrap(),
        source::fingerprint(&src).await.unwrap()
    );
    // And a new backup is encrypted for version 2.
    let after = env.succeeded(&planet).await;
    let (keys, _) = env.leftovers(&after).await;
    let manifest_key = keys.iter().find(|k| k.ends_with("manifest.json")).unwrap();
    let manifest: Value = serde_json::from_slice(&svalbard_testkit::object(&env.storage, manifest_key).await).unwrap();
    assert_eq!(manifest["encryption"], "age");
    assert_eq!(manifest["recipient"], listed["items"][0]["recipient"], "{manifest}");

    rotated.kill().await.unwrap();
    source::drop(&src).await.unwrap();
    source::drop(&copy).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tenants_leftover_archives_open_with_nothing() {
    let env = Env::new().await;
    let src = source::create("shred", &source::sample_schema(100)).await.unwrap();
    let planet = env.planet("orders", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let b = env.succeeded(&planet).await;
    let id = b["id"].as_str().unwrap().to_owned();
    // A copy survives somewhere: a download, an old object version.
    let leftover = env.download(&id).await;
    assert!(
        env.open_archive(&leftover)
            .await
            .starts_with(&0x184D_2A50u32.to_le_bytes())
    );
    // Another tenant has keys of its own in the same control database.
    let other = env.app.tenant("neighbour").await;
    let r = env
        .app
        .get(
            &format!("/api/v1/tenants/{other}/keys/export"),
            &env.app.token(&other, Role::Admin),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let r = env.app.delete(&env.backup_path(&id), &env.token).await;
    assert!(r.status == 202 || r.status == 204, "{}", r.text);
    env.wait_for(&id, MINUTE, |b| b["status"] == "deleted").await;
    let wrapped: Option<Vec<u8>> = sqlx::query_scalar("SELECT data_key FROM backups WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&env.app.pool)
        .await
        .unwrap();
    assert!(wrapped.is_none(), "the deleted backup kept its data key");
    stop.cancel();
    worker.await.unwrap();

    let r = env
        .app
        .delete(&format!("/api/v1/tenants/{}", env.tenant), &env.app.platform())
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_keys WHERE tenant_id = $1::uuid")
        .bind(&env.tenant)
        .fetch_one(&env.app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the deleted tenant's keys remain");
    env.app
        .get(&format!("{}/export", env.keys_path()), &env.app.platform())
        .await
        .problem(404);

    // Every key the platform still holds, opened with its master keys, fails on the leftover.
    let ring = KeyRing::parse(&SEAL_KEYS.to_owned().into()).unwrap();
    let tenants: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM tenant_keys")
        .fetch_all(&env.app.pool)
        .await
        .unwrap();
    assert!(!tenants.is_empty());
    let mut every_key = Vec::new();
    for t in tenants {
        every_key.extend(
            svalbard_core::repo::keys::all(&env.app.pool, &ring, svalbard_core::ids::TenantId(t))
                .await
                .unwrap(),
        );
    }
    let openers = Openers {
        tenant_keys: every_key,
        data_key: None,
    };
    let err = openers
        .decrypt(&leftover[..])
        .err()
        .expect("a leftover archive decrypted");
    assert!(matches!(err, age::DecryptError::NoMatchingKeys), "{err}");
    source::drop(&src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_put_in_another_backups_place_does_not_restore() {
    let env = Env::new().await;
    let src = source::create("swap", &source::sample_schema(100)).await.unwrap();
    let planet = env.planet("orders", &src, "postgres", None).await;
    let (stop, worker) = env.worker();
    let victim = env.succeeded(&planet).await["id"].as_str().unwrap().to_owned();
    let other = env.succeeded(&planet).await["id"].as_str().unwrap().to_owned();
    let key: String = sqlx::query_scalar("SELECT object_key FROM backups WHERE id = $1::uuid")
        .bind(&victim)
        .fetch_one(&env.app.pool)
        .await
        .unwrap();
    let theirs = env.download(&other).await;
    // A valid dump encrypted afresh for the tenant's public key, which the manifest shows.
    let forged = {
        use std::io::Write as _;
        let recipient = env.tenant_keys().await.remove(0).recipient();
        let (enc, _) = envelope::encryptor(&recipient).unwrap();
        let mut w = enc.wrap_output(Vec::new()).unwrap();
        w.write_all(&env.open_archive(&theirs).await).unwrap();
        w.finish().unwrap()
    };
    for (what, bytes) in [("another backup's archive", theirs), ("a forged archive", forged)] {
        env.storage
            .put(&key, bytes.clone(), "application/octet-stream")
            .await
            .unwrap();
        // As if the object changed after its checksum was checked.
        sqlx::query("UPDATE backups SET checksum = $2 WHERE id = $1::uuid")
            .bind(&victim)
            .bind(format!(
                "sha256:{}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
            ))
            .execute(&env.app.pool)
            .await
            .unwrap();
        let target = format!("{src}_swap");
        let done = env.restore_into(&victim, &target).await;
        assert_eq!(done["status"], "failed", "{what}: {done}");
        let msg = done["errorMessage"].as_str().unwrap();
        assert!(
            msg.contains("does not authenticate") && msg.contains("not touched"),
            "{what}: {msg}"
        );
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&target)
            .fetch_one(&env.app.pool)
            .await
            .unwrap();
        assert!(!exists, "{what}: the target was created");
    }
    stop.cancel();
    worker.await.unwrap();
    source::drop(&src).await.unwrap();
}
