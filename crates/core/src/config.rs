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
    #[serde(default, deserialize_with = "secret")]
    pub database_url: Option<SecretString>,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub crypto: CryptoConfig,
    pub s3: S3Config,
    pub worker: WorkerConfig,
    pub limits: LimitsConfig,
    pub maintenance: MaintenanceConfig,
    pub targets: TargetsConfig,
    pub webhooks: WebhooksConfig,
    pub verification: VerificationConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
}

/// Where verifications restore archives: servers of the platform, one per engine (a tenant's
/// own server only when its planet's schedule asks for it). A scratch database is created there
/// for each verification and dropped afterwards. These servers are the platform's own
/// (configured here, not by a tenant), so the target policy that guards tenants' addresses does
/// not apply to them; their names are cut from every message a tenant reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationConfig {
    pub postgresql: VerificationServer,
    pub mysql: VerificationServer,
    /// The shortest time a schedule's `verifyCron` may leave between two verifications, so that
    /// no tenant keeps the shared verification servers busy.
    pub min_cron_interval_secs: u64,
}

/// A server verifications restore into; its user must be allowed to create and drop databases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationServer {
    pub host: String,
    pub port: u16,
    pub user: String,
    #[serde(default, deserialize_with = "secret")]
    pub password: Option<SecretString>,
    /// libpq-style TLS mode (`disable`, `prefer`, `require`, `verify-full`, ...).
    pub sslmode: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the API listens on.
    pub listen: String,
    /// Public base URL used in `Location` headers; empty means relative locations.
    pub public_url: String,
    /// Address of the separate Prometheus `/metrics` listener; empty disables it. Kept off the
    /// public listener so the request counts by route and tenant activity stay internal.
    pub metrics_listen: String,
}

/// Which hosts tenants may point Svalbard at (see `netpolicy`). Each list takes CIDRs, single
/// addresses and host names (`*.example.com` for a whole domain); in the environment a list is
/// comma-separated.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsConfig {
    /// Re-admits addresses a default rule refuses (loopback, link-local, the control server).
    #[serde(default, deserialize_with = "list")]
    pub allow: Vec<String>,
    /// Refuses more; deny wins over allow.
    #[serde(default, deserialize_with = "list")]
    pub deny: Vec<String>,
}

impl TargetsConfig {
    #[must_use]
    pub fn lists(&self) -> crate::netpolicy::PolicyLists {
        crate::netpolicy::PolicyLists {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
        }
    }
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
    #[serde(default, deserialize_with = "secret")]
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
    #[serde(default, deserialize_with = "secret")]
    pub keys: Option<SecretString>,
    /// How new archives are stored: `age`, encrypted with a key of their own wrapped by the
    /// tenant's key (the default), or `none`, in the clear (a bucket encrypted by other means).
    #[serde(default)]
    pub archives: ArchiveEncryption,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveEncryption {
    #[default]
    Age,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint of an S3-compatible service; unset means AWS (or the embedded store in `dev`).
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    #[serde(default, deserialize_with = "text")]
    pub access_key_id: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    pub secret_access_key: Option<SecretString>,
    /// Path-style addressing, needed by most self-hosted S3 servers.
    pub force_path_style: bool,
    /// Lifetime of pre-signed download URLs, in seconds (capped at 7 days).
    pub presign_ttl_secs: u64,
    /// Prefix of every object Svalbard writes.
    pub prefix: String,
    /// How long a request of an upload (a part, the completion) keeps being sent again through
    /// an outage of the store, with backoff, before the attempt fails.
    pub retry_secs: u64,
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
    /// Attempts before a job is given up, whatever the horizon.
    pub max_attempts: i32,
    /// Base of the exponential retry backoff.
    pub backoff_base_secs: u64,
    /// Longest wait between two attempts.
    pub backoff_max_secs: u64,
    /// A failed attempt is retried only while the next one starts within this long of the
    /// first: how long an outage the retries outlast.
    pub retry_horizon_secs: u64,
    /// Finished jobs are deleted after this many days.
    pub job_retention_days: u64,
    /// Upper bound of one job's run time.
    pub job_deadline_secs: u64,
    /// How often the queue is polled when no notification arrives.
    pub poll_secs: u64,
    /// Grace period for running jobs when the worker is asked to stop.
    pub shutdown_grace_secs: u64,
    /// Size of the first parts of a multipart upload, in MiB (S3 wants at least 5).
    pub part_size_mib: usize,
    /// Parts after which the part size doubles (up to 5 GiB), so 10,000 parts hold terabytes.
    pub part_double_every: u32,
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
    /// Backups and restores a tenant may have queued or running at once (0: no limit).
    pub tenant_concurrent_jobs: i64,
    /// Bytes of archives a tenant may store (0: no limit).
    pub tenant_stored_bytes: i64,
    /// Backups a tenant may keep, counting those in progress (0: no limit).
    pub tenant_backups: i64,
}

/// The periodic work every worker shares: the scheduler, retention and the reaper. Each task
/// runs on one worker at a time, at most once per interval across the fleet.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Whether this process runs the periodic tasks at all.
    pub enabled: bool,
    /// How often due schedules are looked for.
    pub schedule_tick_secs: u64,
    /// How often retention is applied to every planet (it also runs after each backup).
    pub retention_every_secs: u64,
    /// How often the reaper sweeps the bucket.
    pub reaper_every_secs: u64,
    /// Unfinished multipart uploads older than this are aborted.
    pub stale_upload_secs: u64,
    /// Objects without a catalog row are deleted once older than this.
    pub orphan_grace_secs: u64,
    /// Stored archives checked for presence per sweep, least recently checked first.
    pub verify_batch: i64,
    /// A reaper sweep that finds more than this many archives of its batch missing, and more
    /// than `halt_missing_percent` of it, changes nothing and reports instead.
    pub halt_missing_min: u64,
    pub halt_missing_percent: u64,
}

/// The catalog gauges of the API's `/metrics`: one series per planet and metric, so their number
/// is bounded here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Most planets given series of their own, the worst recovery points first; the rest are
    /// counted in `svalbard_planets_unexported`.
    pub planet_series_limit: u64,
    /// Add `tenant`, `project` and `planet` name labels beside the ids (names are chosen by
    /// tenants and may change, which starts new series).
    pub name_labels: bool,
    /// Recovery-point target of planets without an enabled schedule, in seconds; 0 leaves them
    /// without one. Scheduled planets get twice their longest gap between runs.
    pub rpo_unscheduled_secs: u64,
    /// Reads the catalog at most this often, however often `/metrics` is scraped.
    pub refresh_secs: u64,
}

/// Delivery of webhooks by the workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Whether this worker delivers webhooks at all.
    pub enabled: bool,
    /// Deliveries in flight at once in this worker, across all tenants.
    pub concurrency: usize,
    /// Deliveries in flight at once for one tenant (across the workers); one endpoint never has
    /// more than one.
    pub per_tenant: usize,
    /// How long one attempt may take, connection included, before it counts as failed.
    pub timeout_secs: u64,
    /// How often due deliveries are looked for.
    pub poll_millis: u64,
    /// Backoff after the first failed attempt, doubling to `backoff_max_secs` (±25 % jitter).
    pub backoff_base_secs: u64,
    pub backoff_max_secs: u64,
    /// A delivery is given up when its next attempt would start later than this after it was
    /// queued, or after `max_attempts`.
    pub retry_horizon_secs: u64,
    pub max_attempts: i32,
    /// Delivered and failed deliveries are deleted after this many days.
    pub retention_days: u64,
}

impl WebhooksConfig {
    #[must_use]
    pub fn retry_policy(&self) -> crate::jobs::RetryPolicy {
        crate::jobs::RetryPolicy {
            base: std::time::Duration::from_secs(self.backoff_base_secs),
            max_delay: std::time::Duration::from_secs(self.backoff_max_secs.max(self.backoff_base_secs)),
            horizon: std::time::Duration::from_secs(self.retry_horizon_secs),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info,svalbard=debug`.
    pub filter: String,
}

/// Environment values are parsed as TOML-like values, so a secret made only of digits arrives as
/// a number; secrets and keys are text whatever they look like.
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Text(String),
        Int(i64),
        Uint(u64),
        Float(f64),
        Bool(bool),
    }
    Ok(Option::<Loose>::deserialize(d)?.map(|v| match v {
        Loose::Text(s) => s,
        Loose::Int(n) => n.to_string(),
        Loose::Uint(n) => n.to_string(),
        Loose::Float(n) => n.to_string(),
        Loose::Bool(b) => b.to_string(),
    }))
}

/// A list, or one text of comma-separated items (as an environment variable gives it).
fn list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Loose {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Loose::deserialize(d)? {
        Loose::List(v) => v,
        Loose::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    Ok(text(d)?.map(SecretString::from))
}

/// Defaults as a serializable tree: secrets are absent here and come from a file or the environment.
fn defaults() -> serde_json::Value {
    serde_json::json!({
        "http": HttpConfig {
            listen: "127.0.0.1:8080".into(),
            public_url: String::new(),
            metrics_listen: "127.0.0.1:9464".into(),
        },
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
            "retry_secs": 300,
        },
        "worker": WorkerConfig {
            listen: "127.0.0.1:9091".into(),
            concurrency: 4,
            lease_secs: 30,
            heartbeat_secs: 5,
            max_attempts: 20,
            backoff_base_secs: 5,
            backoff_max_secs: 600,
            retry_horizon_secs: 3600,
            job_retention_days: 7,
            job_deadline_secs: 6 * 3600,
            poll_secs: 2,
            shutdown_grace_secs: 30,
            part_size_mib: 16,
            part_double_every: 1000,
            parts_in_flight: 2,
            zstd_level: 1,
            pg_bin_roots: vec!["/usr/lib/postgresql".into(), "/usr/pgsql".into()],
        },
        "limits": LimitsConfig {
            json_body_bytes: 256 * 1024,
            upload_bytes: 10 * 1024 * 1024 * 1024,
            tenant_concurrent_jobs: 0,
            tenant_stored_bytes: 0,
            tenant_backups: 0,
        },
        "maintenance": MaintenanceConfig {
            enabled: true,
            schedule_tick_secs: 15,
            retention_every_secs: 15 * 60,
            reaper_every_secs: 3600,
            stale_upload_secs: 24 * 3600,
            orphan_grace_secs: 3600,
            verify_batch: 500,
            halt_missing_min: 2,
            halt_missing_percent: 10,
        },
        "targets": { "allow": [], "deny": [] },
        "webhooks": WebhooksConfig {
            enabled: true,
            concurrency: 16,
            per_tenant: 4,
            timeout_secs: 10,
            poll_millis: 1000,
            backoff_base_secs: 10,
            backoff_max_secs: 3600,
            retry_horizon_secs: 24 * 3600,
            max_attempts: 40,
            retention_days: 30,
        },
        "verification": {
            "postgresql": { "host": "127.0.0.1", "port": 5432, "user": "postgres", "sslmode": "prefer" },
            "mysql": { "host": "127.0.0.1", "port": 3306, "user": "root", "sslmode": "prefer" },
            "min_cron_interval_secs": 3600,
        },
        "log": LogConfig { format: "pretty".into(), filter: "info".into() },
        "metrics": MetricsConfig {
            planet_series_limit: 5000,
            name_labels: false,
            rpo_unscheduled_secs: 0,
            refresh_secs: 15,
        },
    })
}

/// Settings that are text whatever they look like, and the variables that set them.
const TEXT_VARS: &[(&str, &str)] = &[
    ("DATABASE_URL", "database_url"),
    ("SVALBARD_DATABASE_URL", "database_url"),
    ("SVALBARD_AUTH__HS256_SECRET", "auth.hs256_secret"),
    ("SVALBARD_AUTH__ISSUER", "auth.issuer"),
    ("SVALBARD_AUTH__AUDIENCE", "auth.audience"),
    ("SVALBARD_CRYPTO__KEYS", "crypto.keys"),
    ("SVALBARD_S3__BUCKET", "s3.bucket"),
    ("S3_BUCKET", "s3.bucket"),
    ("SVALBARD_S3__ACCESS_KEY_ID", "s3.access_key_id"),
    ("S3_ACCESS_KEY_ID", "s3.access_key_id"),
    ("SVALBARD_S3__SECRET_ACCESS_KEY", "s3.secret_access_key"),
    ("S3_SECRET_ACCESS_KEY", "s3.secret_access_key"),
    ("SVALBARD_S3__PREFIX", "s3.prefix"),
    ("SVALBARD_TARGETS__ALLOW", "targets.allow"),
    ("SVALBARD_TARGETS__DENY", "targets.deny"),
    (
        "SVALBARD_VERIFICATION__POSTGRESQL__PASSWORD",
        "verification.postgresql.password",
    ),
    ("SVALBARD_VERIFICATION__MYSQL__PASSWORD", "verification.mysql.password"),
];

impl WorkerConfig {
    /// When failed attempts are retried.
    #[must_use]
    pub fn retry_policy(&self) -> crate::jobs::RetryPolicy {
        crate::jobs::RetryPolicy {
            base: std::time::Duration::from_secs(self.backoff_base_secs),
            max_delay: std::time::Duration::from_secs(self.backoff_max_secs.max(self.backoff_base_secs)),
            horizon: std::time::Duration::from_secs(self.retry_horizon_secs),
        }
    }
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
        fig = fig
            .merge(Env::prefixed("SVALBARD_").ignore(&["CONFIG"]).split("__"))
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
            );
        // The environment provider reads `000123` as the number 123: text settings are taken
        // again exactly as written.
        for (var, key) in TEXT_VARS {
            if let Ok(value) = std::env::var(var) {
                fig = fig.merge(Serialized::default(key, value));
            }
        }
        fig
    }

    /// Configuration for tests and `dev`: defaults plus the given overrides, no environment.
    pub fn from_defaults_with(overrides: serde_json::Value) -> anyhow::Result<Self> {
        Figment::from(Serialized::defaults(defaults()))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::Config;

    #[test]
    fn numeric_looking_secrets_stay_text() {
        let c = Config::from_defaults_with(serde_json::json!({
            "s3": { "secret_access_key": 123, "access_key_id": 42 },
            "auth": { "hs256_secret": 12345678901234567_u64 },
        }))
        .unwrap();
        assert_eq!(c.s3.secret_access_key.unwrap().expose_secret(), "123");
        assert_eq!(c.s3.access_key_id.as_deref(), Some("42"));
        assert_eq!(c.auth.hs256_secret.unwrap().expose_secret(), "12345678901234567");
    }

    #[test]
    fn target_lists_take_text_or_lists() {
        let c = Config::from_defaults_with(serde_json::json!({
            "targets": { "allow": "127.0.0.0/8, ::1", "deny": ["10.0.0.0/8"] },
        }))
        .unwrap();
        assert_eq!(c.targets.allow, ["127.0.0.0/8", "::1"]);
        assert_eq!(c.targets.deny, ["10.0.0.0/8"]);
        assert!(
            Config::from_defaults_with(serde_json::json!({}))
                .unwrap()
                .targets
                .allow
                .is_empty()
        );
    }
}
