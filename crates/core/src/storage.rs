//! Object storage through aws-sdk-s3, the same code path against AWS, Garage or the embedded
//! development store.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::presigning::PresigningConfig;
use secrecy::ExposeSecret;

use crate::config::S3Config;
use crate::ids::{BackupId, PlanetId, ProjectId, TenantId};

/// Longest lifetime of a pre-signed URL that S3 accepts.
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone)]
pub struct Storage {
    pub client: Client,
    pub bucket: String,
    pub prefix: String,
    pub endpoint: String,
    pub presign_ttl: Duration,
}

impl Storage {
    pub fn new(cfg: &S3Config) -> Self {
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(Region::new(cfg.region.clone()))
            .force_path_style(cfg.force_path_style)
            // Self-hosted S3 servers reject the SDK's default CRC checksums on multipart uploads.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(ep) = &cfg.endpoint {
            b = b.endpoint_url(ep);
        }
        if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
            b = b.credentials_provider(Credentials::new(
                id,
                secret.expose_secret(),
                None,
                None,
                "svalbard-config",
            ));
        }
        Self {
            client: Client::from_conf(b.build()),
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.trim_matches('/').to_owned(),
            endpoint: cfg.endpoint.clone().unwrap_or_else(|| format!("s3 ({})", cfg.region)),
            presign_ttl: Duration::from_secs(cfg.presign_ttl_secs).min(MAX_PRESIGN),
        }
    }

    fn prefixed(&self, key: String) -> String {
        if self.prefix.is_empty() {
            key
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// Folder of one backup: the archive and its manifest.
    #[must_use]
    pub fn backup_prefix(&self, t: TenantId, p: ProjectId, planet: PlanetId, b: BackupId) -> String {
        self.prefixed(format!("tenants/{t}/projects/{p}/planets/{planet}/backups/{b}/"))
    }

    /// Whether the bucket answers.
    pub async fn ping(&self) -> Result<(), String> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "object storage at {} is unreachable: {}",
                    self.endpoint,
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })
    }

    /// A pre-signed GET of `key`, downloaded under `file_name`.
    pub async fn presign_get(&self, key: &str, file_name: &str, ttl: Duration) -> anyhow::Result<String> {
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_disposition(format!("attachment; filename=\"{file_name}\""))
            .presigned(PresigningConfig::expires_in(ttl.min(MAX_PRESIGN))?)
            .await?;
        Ok(req.uri().to_owned())
    }
}
