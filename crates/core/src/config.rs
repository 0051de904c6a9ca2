//! Layered configuration: built-in defaults, then an optional TOML file, then the environment
//! (`SVALBARD_SECTION__KEY`, plus the well-known `DATABASE_URL` and `S3_*` variables).

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// PostgreSQL URL of the control database.
    pub database_url: Option<SecretString>,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub crypto: CryptoConfig,
    pub s3: S3Config,
    pub worker: WorkerConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the API listens on.
    pub listen: String,
    /// Public base URL used in `Location` headers; empty means relative locations.
    pub public_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    EdDSA,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The only algorithm tokens may be signed with.
    pub algorithm: JwtAlgorithm,
    /// Shared secret for HS256 (also used by `svalbard token`).
    pub hs256_secret: Option<SecretString>,
    /// Public keys in PEM for RS256/EdDSA, selected by the token's `kid`.
    #[serde(default)]
    pub public_keys: Vec<PublicKeyConfig>,
    pub issuer: String,
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    pub kid: String,
    pub pem: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoConfig {
    /// Comma-separated `keyid:base64(32 bytes)`; the first seals new secrets, all open old ones.
    pub keys: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint of an S3-compatible service; unset means AWS (or the embedded store in `dev`).
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    /// Path-style addressing, needed by most self-hosted S3 servers.
    pub force_path_style: bool,
    /// Lifetime of pre-signed download URLs, in seconds (capped at 7 days).
    pub presign_ttl_secs: u64,
    /// Prefix of every object Svalbard writes.
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Address of the worker's health and metrics listener (`svalbard work` only).
    pub listen: String,
    /// Jobs run at once by one worker process.
    pub concurrency: usize,
    /// How long a claim is valid without a heartbeat.
    pub lease_secs: u64,
    /// How often a running job renews its lease.
    pub heartbeat_secs: u64,
    /// Attempts before a job is given up.
    pub max_attempts: i32,
    /// Base of the exponential retry backoff.
    pub backoff_base_secs: u64,
    /// Upper bound of one job's run time.
    pub job_deadline_secs: u64,
    /// How often the queue is polled when no notification arrives.
    pub poll_secs: u64,
    /// Grace period for running jobs when the worker is asked to stop.
    pub shutdown_grace_secs: u64,
    /// Size of one multipart part, in MiB (S3 wants at least 5).
    pub part_size_mib: usize,
    /// Parts uploaded concurrently.
    pub parts_in_flight: usize,
    /// zstd compression level of archives.
    pub zstd_level: i32,
    /// Directories searched for PostgreSQL client binaries (`<dir>/<major>/bin`).
    pub pg_bin_roots: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest JSON request body, in bytes.
    pub json_body_bytes: usize,
    /// Largest uploaded archive, in bytes.
    pub upload_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info,svalbard=debug`.
    pub filter: String,
}

/// Defaults as a serializable tree: secrets are absent here and come from a file or the environment.
fn defaults() -> serde_json::Value {
    serde_json::json!({
        "http": HttpConfig { listen: "127.0.0.1:8080".into(), public_url: String::new() },
        "auth": {
            "algorithm": "HS256",
            "public_keys": [],
            "issuer": "svalbard",
            "audience": "svalbard",
            "leeway_secs": 30,
        },
        "crypto": {},
        "s3": {
            "bucket": "svalbard",
            "region": "us-east-1",
            "force_path_style": true,
            "presign_ttl_secs": 900,
            "prefix": "",
        },
        "worker": WorkerConfig {
            listen: "127.0.0.1:9091".into(),
            concurrency: 4,
            lease_secs: 30,
            heartbeat_secs: 5,
            max_attempts: 5,
            backoff_base_secs: 5,
            job_deadline_secs: 6 * 3600,
            poll_secs: 2,
            shutdown_grace_secs: 30,
            part_size_mib: 16,
            parts_in_flight: 2,
            zstd_level: 1,
            pg_bin_roots: vec!["/usr/lib/postgresql".into(), "/usr/pgsql".into()],
        },
        "limits": LimitsConfig { json_body_bytes: 256 * 1024, upload_bytes: 10 * 1024 * 1024 * 1024 },
        "log": LogConfig { format: "pretty".into(), filter: "info".into() },
    })
}

impl Config {
    /// Loads defaults, then `file` (or `SVALBARD_CONFIG`) if given, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::figment(file)
            .extract()
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))
    }

    pub fn figment(file: Option<&Path>) -> Figment {
        let mut fig = Figment::from(Serialized::defaults(defaults()));
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("SVALBARD_CONFIG").map(Into::into));
        if let Some(file) = file {
            fig = fig.merge(Toml::file_exact(file));
        }
        fig.merge(Env::prefixed("SVALBARD_").ignore(&["CONFIG"]).split("__"))
            .merge(Env::raw().only(&["DATABASE_URL"]).map(|_| "database_url".into()))
            .merge(
                Env::raw()
                    .only(&[
                        "S3_ENDPOINT",
                        "S3_BUCKET",
                        "S3_REGION",
                        "S3_ACCESS_KEY_ID",
                        "S3_SECRET_ACCESS_KEY",
                    ])
                    .map(|k| format!("s3.{}", k.as_str().to_ascii_lowercase().trim_start_matches("s3_")).into()),
            )
    }

    /// Configuration for tests and `dev`: defaults plus the given overrides, no environment.
    pub fn from_defaults_with(overrides: serde_json::Value) -> anyhow::Result<Self> {
        Figment::from(Serialized::defaults(defaults()))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))
    }
}
