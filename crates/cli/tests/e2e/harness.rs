use std::time::{Duration, Instant};

use serde_json::{Value, json};
use svalbard_core::auth::Role;
use svalbard_core::storage::Storage;
use svalbard_testkit::app::TestApp;
use tokio_util::sync::CancellationToken;

/// Worker settings that make leases, heartbeats and retries quick enough to watch in a test.
pub fn fast_worker() -> Value {
    json!({ "worker": {
        "lease_secs": 3, "heartbeat_secs": 1, "poll_secs": 1, "backoff_base_secs": 1,
        "part_size_mib": 5, "parts_in_flight": 2, "max_attempts": 3, "shutdown_grace_secs": 5,
    }, "maintenance": { "schedule_tick_secs": 1 } })
}

pub struct Env {
    pub app: TestApp,
    pub tenant: String,
    pub project: String,
    pub token: String,
    pub storage: Storage,
}

impl Env {
    pub async fn new() -> Self {
        svalbard_testkit::require_s3();
        Self::with_overrides(fast_worker()).await
    }

    /// As [`Env::new`], with the given configuration (which may name its own S3 server).
    pub async fn with_overrides(overrides: Value) -> Self {
        let app = TestApp::spawn_with(overrides).await;
        let tenant = app.tenant("e2e").await;
        let project = app.project(&tenant, "shop").await;
        let token = app.token(&tenant, Role::Admin);
        let storage = svalbard_testkit::storage(&app.config);
        Self {
            app,
            tenant,
            project,
            token,
            storage,
        }
    }

    /// A worker in this process, stopped when the token is cancelled.
    pub fn worker(&self) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = CancellationToken::new();
        let worker = svalbard_worker::build(&self.app.config, self.app.pool.clone()).unwrap();
        let s = stop.clone();
        (stop, tokio::spawn(async move { worker.run(s).await.unwrap() }))
    }

    /// `svalbard work` as a separate process with this test's configuration.
    pub fn worker_process(&self) -> tokio::process::Child {
        self.command("work", svalbard_testkit::SEAL_KEYS).spawn().unwrap()
    }

    /// `svalbard <sub>` with this test's configuration and the key ring `keys`.
    pub fn command(&self, sub: &str, keys: &str) -> tokio::process::Command {
        let c = &self.app.config;
        let w = &c.worker;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_svalbard"));
        cmd.arg(sub).env_clear();
        for keep in ["PATH", "HOME", "TMPDIR"] {
            if let Some(v) = std::env::var_os(keep) {
                cmd.env(keep, v);
            }
        }
        use secrecy::ExposeSecret as _;
        // Named, so a test can find (and cut) the workers' control-database connections.
        let url = format!(
            "{}?application_name=svalbard-worker",
            c.database_url.as_ref().unwrap().expose_secret()
        );
        cmd.env("DATABASE_URL", url)
            .env("SVALBARD_AUTH__HS256_SECRET", svalbard_testkit::HS256_SECRET)
            .env("SVALBARD_CRYPTO__KEYS", keys)
            .env("S3_ENDPOINT", c.s3.endpoint.as_deref().unwrap())
            .env("S3_BUCKET", &c.s3.bucket)
            .env("S3_REGION", &c.s3.region)
            .env("S3_ACCESS_KEY_ID", c.s3.access_key_id.as_deref().unwrap())
            .env(
                "S3_SECRET_ACCESS_KEY",
                c.s3.secret_access_key.as_ref().unwrap().expose_secret(),
            )
            .env("SVALBARD_S3__PREFIX", &c.s3.prefix)
            .env("SVALBARD_TARGETS__ALLOW", c.targets.allow.join(","))
            .env("SVALBARD_WORKER__LEASE_SECS", w.lease_secs.to_string())
            .env("SVALBARD_WORKER__HEARTBEAT_SECS", w.heartbeat_secs.to_string())
            .env("SVALBARD_WORKER__POLL_SECS", w.poll_secs.to_string())
            .env("SVALBARD_WORKER__BACKOFF_BASE_SECS", w.backoff_base_secs.to_string())
            .env("SVALBARD_WORKER__BACKOFF_MAX_SECS", w.backoff_max_secs.to_string())
            .env("SVALBARD_WORKER__RETRY_HORIZON_SECS", w.retry_horizon_secs.to_string())
            .env("SVALBARD_WORKER__MAX_ATTEMPTS", w.max_attempts.to_string())
            .env(
                "SVALBARD_MAINTENANCE__ENABLED",
                self.app.config.maintenance.enabled.to_string(),
            )
            .env("SVALBARD_WORKER__PART_SIZE_MIB", w.part_size_mib.to_string())
            .env("SVALBARD_WORKER__PARTS_IN_FLIGHT", "1")
            .env("SVALBARD_WORKER__LISTEN", "127.0.0.1:0")
            .env("SVALBARD_HTTP__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        cmd
    }

    pub fn planets(&self) -> String {
        format!("/api/v1/tenants/{}/projects/{}/planets", self.tenant, self.project)
    }

    pub fn backup_path(&self, id: &str) -> String {
        format!("/api/v1/tenants/{}/projects/{}/backups/{id}", self.tenant, self.project)
    }

    /// A PostgreSQL planet on the local server.
    pub async fn planet(&self, name: &str, database: &str, user: &str, password: Option<&str>) -> String {
        let mut connection =
            json!({ "host": "127.0.0.1", "port": 5432, "database": database, "user": user, "sslmode": "disable" });
        if let Some(p) = password {
            connection["password"] = json!(p);
        }
        let r = self
            .app
            .post(
                &self.planets(),
                &self.token,
                json!({ "name": name, "engine": "postgresql", "connection": connection }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()["id"].as_str().unwrap().to_owned()
    }

    pub async fn start_backup(&self, planet: &str) -> Value {
        let r = self
            .app
            .post(&format!("{}/{planet}/backups", self.planets()), &self.token, json!({}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()
    }

    pub async fn backup(&self, id: &str) -> Value {
        let r = self.app.get(&self.backup_path(id), &self.token).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()
    }

    /// Polls a backup until `done` holds, or panics after `limit`.
    pub async fn wait_for(&self, id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let b = self.backup(id).await;
            if done(&b) {
                return b;
            }
            assert!(
                started.elapsed() < limit,
                "backup {id} did not get there in {limit:?}: {b}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_status(&self, id: &str, status: &str, limit: Duration) -> Value {
        let b = self.wait_for(id, limit, |b| b["status"] == status || is_final(b)).await;
        assert_eq!(b["status"], status, "{b}");
        b
    }

    /// Polls a restore (by its `Location`) until it has ended, or panics after a minute.
    pub async fn restore_outcome(&self, location: &str) -> Value {
        let started = Instant::now();
        loop {
            let r = self.app.get(location, &self.token).await.json();
            if !matches!(r["status"].as_str(), Some("scheduled" | "running")) {
                return r;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "restore did not finish: {r}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The archive of a succeeded backup, fetched through its pre-signed URL.
    pub async fn download(&self, backup: &str) -> Vec<u8> {
        let link = self
            .app
            .get(&format!("{}/archive", self.backup_path(backup)), &self.token)
            .await
            .json();
        let res = self
            .app
            .client
            .get(link["downloadUrl"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap().to_vec()
    }

    /// The tenant's archive keys, opened with the test's master key ring.
    pub async fn tenant_keys(&self) -> Vec<svalbard_core::envelope::TenantKey> {
        let ring = svalbard_core::crypto::KeyRing::parse(&svalbard_testkit::SEAL_KEYS.to_owned().into()).unwrap();
        svalbard_core::repo::keys::all(&self.app.pool, &ring, self.tenant.parse().unwrap())
            .await
            .unwrap()
    }

    /// The plaintext of an archive: decrypted with the tenant's keys when it is encrypted.
    pub async fn open_archive(&self, bytes: &[u8]) -> Vec<u8> {
        use std::io::Read as _;
        if !svalbard_core::envelope::is_encrypted(bytes) {
            return bytes.to_vec();
        }
        let openers = svalbard_core::envelope::Openers {
            tenant_keys: self.tenant_keys().await,
            data_key: None,
        };
        let mut out = Vec::new();
        openers.decrypt(bytes).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    /// `plain` encrypted for the tenant's current key as the archive of `backup`, whose data
    /// key in the catalog becomes the new archive's: what someone who could also write the
    /// catalog would store.
    pub async fn seal_archive(&self, backup: &str, plain: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let key = self.tenant_keys().await.remove(0);
        let (enc, data_key) = svalbard_core::envelope::encryptor(&key.recipient()).unwrap();
        let mut w = enc.wrap_output(Vec::new()).unwrap();
        w.write_all(plain).unwrap();
        let id: uuid::Uuid = backup.parse().unwrap();
        sqlx::query("UPDATE backups SET data_key = $2, data_key_version = $3 WHERE id = $1")
            .bind(id)
            .bind(key.wrap(id, &data_key).unwrap())
            .bind(key.version)
            .execute(&self.app.pool)
            .await
            .unwrap();
        w.finish().unwrap()
    }

    /// The archive of a succeeded backup, downloaded and decrypted: the header frame and the
    /// zstd stream of the dump.
    pub async fn download_plain(&self, backup: &str) -> Vec<u8> {
        let bytes = self.download(backup).await;
        self.open_archive(&bytes).await
    }

    /// Object keys and unfinished multipart uploads under a backup's folder.
    pub async fn leftovers(&self, backup: &Value) -> (Vec<String>, Vec<svalbard_core::storage::Upload>) {
        let prefix = self.storage.backup_prefix(
            backup["tenantId"].as_str().unwrap().parse().unwrap(),
            backup["projectId"].as_str().unwrap().parse().unwrap(),
            backup["planetId"].as_str().unwrap().parse().unwrap(),
            backup["id"].as_str().unwrap().parse().unwrap(),
        );
        (
            self.storage.list_keys(&prefix).await.unwrap(),
            self.storage.list_uploads(&prefix).await.unwrap(),
        )
    }

    /// Attempts made by the jobs of a subject.
    pub async fn attempts(&self, subject: &str) -> Vec<(String, i32, String)> {
        sqlx::query_as("SELECT kind, attempts, state FROM jobs WHERE subject_id = $1::uuid ORDER BY created_at")
            .bind(subject)
            .fetch_all(&self.app.pool)
            .await
            .unwrap()
    }
}

pub fn is_final(b: &Value) -> bool {
    matches!(
        b["status"].as_str(),
        Some("succeeded" | "failed" | "incomplete" | "deleted")
    )
}
