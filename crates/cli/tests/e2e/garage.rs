//! A Garage S3 server of a test's own, on free ports, that the test may stop and start again:
//! its data folder outlives a restart. Configured as the development scripts configure theirs.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use svalbard_core::config::S3Config;

pub struct Garage {
    dir: PathBuf,
    pub endpoint: String,
    pub bucket: String,
    access_key: String,
    secret_key: String,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `n` (up to 64) hex digits no other run will pick.
fn hex(n: usize) -> String {
    use sha2::Digest as _;
    let mut s = hex::encode(sha2::Sha256::digest(uuid::Uuid::now_v7().as_bytes()));
    s.truncate(n);
    s
}

impl Garage {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("svalbard-e2e-garage-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (s3, rpc) = (free_port(), free_port());
        std::fs::write(
            dir.join("garage.toml"),
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\ncompression_level = \"none\"\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n\n[s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n",
                d = dir.display(),
                secret = hex(64),
            ),
        )
        .unwrap();
        let mut g = Self {
            dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "svalbard-own".into(),
            access_key: format!("GK{}", hex(24)),
            secret_key: hex(64),
            child: None,
        };
        g.resume().await;
        g
    }

    /// Starts the server (again) on the same folder and ports; returns once S3 answers.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "garage is already running");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("garage.log"))
            .unwrap();
        let child = Command::new("garage")
            .arg("-c")
            .arg(self.dir.join("garage.toml"))
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &self.access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &self.secret_key)
            .env("GARAGE_DEFAULT_BUCKET", &self.bucket)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("`garage` must be on PATH");
        self.child = Some(child);
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            // Any HTTP answer (403 without credentials) means the S3 API is up.
            if client.get(&self.endpoint).send().await.is_ok() {
                break;
            }
            let log = std::fs::read_to_string(self.dir.join("garage.log")).unwrap_or_default();
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "garage did not start:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The default bucket and key are set up right after the API opens.
        let storage = svalbard_core::storage::Storage::new(&self.s3(S3Config::clone(&base())));
        while storage.ping().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "garage's bucket did not appear"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the server (SIGTERM) and waits for it to exit.
    pub fn halt(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// `s3` pointed at this server.
    #[must_use]
    pub fn s3(&self, mut s3: S3Config) -> S3Config {
        self.configure(&mut s3);
        s3
    }

    pub fn configure(&self, s3: &mut S3Config) {
        s3.endpoint = Some(self.endpoint.clone());
        s3.bucket.clone_from(&self.bucket);
        s3.region = "garage".into();
        s3.access_key_id = Some(self.access_key.clone());
        s3.secret_access_key = Some(SecretString::from(self.secret_key.clone()));
        s3.force_path_style = true;
    }

    /// The settings as configuration overrides (`{"s3": ...}`).
    #[must_use]
    pub fn overrides(&self) -> serde_json::Value {
        serde_json::json!({ "s3": {
            "endpoint": self.endpoint, "bucket": self.bucket, "region": "garage",
            "access_key_id": self.access_key, "secret_access_key": self.secret_key,
        } })
    }
}

fn base() -> S3Config {
    S3Config {
        endpoint: None,
        bucket: String::new(),
        region: String::new(),
        access_key_id: None,
        secret_access_key: None,
        force_path_style: true,
        presign_ttl_secs: 600,
        prefix: String::new(),
        retry_secs: 10,
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Merges configuration overrides, `over` winning.
pub fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}
