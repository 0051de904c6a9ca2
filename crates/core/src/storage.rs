//! Object storage through aws-sdk-s3, the same code path against AWS, Garage or the embedded
//! development store.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::presigning::PresigningConfig;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use crate::config::S3Config;
use crate::ids::{BackupId, PlanetId, ProjectId, TenantId};

/// A storage error in a line a person can act on: the service's code, message and HTTP status,
/// or why the request never got an answer.
pub fn describe<E>(e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_s3::error::SdkError;
    match e {
        SdkError::ServiceError(s) => format!(
            "{} (HTTP {}): {}",
            s.err().code().unwrap_or("error"),
            s.raw().status().as_u16(),
            s.err().message().unwrap_or("no message")
        ),
        SdkError::TimeoutError(_) => "no answer in time".into(),
        other => aws_sdk_s3::error::DisplayErrorContext(other).to_string(),
    }
}

/// Whether a failed request may succeed when sent again: it got no answer (connection refused
/// or reset, a timeout), or the server said it is overloaded or broken.
pub fn is_retryable<E>(e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool {
    use aws_sdk_s3::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            status >= 500 || status == 429 || status == 408
        }
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    }
}

/// Longest wait between two sends of one request.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Sends a request until it succeeds, fails for good, or `horizon` has passed since the first
/// try: exponential backoff with jitter, on top of the SDK's own quick retries, so an outage of
/// a few minutes costs a wait rather than the attempt (and a new dump of the database).
pub async fn with_retries<T, E, F, Fut>(
    what: &str,
    horizon: Duration,
    mut send: F,
) -> Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>
where
    F: FnMut() -> Fut,
    Fut:
        std::future::Future<Output = Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>>,
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use rand::Rng as _;
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        match send().await {
            Ok(v) => return Ok(v),
            Err(e) if is_retryable(&e) && started.elapsed() + delay < horizon => {
                let wait = delay.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
                tracing::warn!(what, error = %describe(&e), retry_in = ?wait, "object storage request failed; sending it again");
                metrics::counter!("svalbard_storage_retries_total").increment(1);
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Smallest part S3 accepts (except for the last one).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Largest part S3 accepts.
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;

/// Most parts one multipart upload may have.
pub const MAX_PARTS: u32 = 10_000;

/// Size of part `number` (from 1) of an upload whose parts start at `first` bytes and double
/// every `double_every` parts, up to [`MAX_PART_SIZE`]. From 16 MiB doubling every 1,000 parts,
/// 10,000 parts hold more than S3's 5 TiB object limit, and an archive of a few GiB still goes
/// in parts small enough to keep memory low.
#[must_use]
pub fn part_size(number: u32, first: usize, double_every: u32) -> usize {
    let first = first.clamp(MIN_PART_SIZE, MAX_PART_SIZE);
    let doublings = (number.saturating_sub(1) / double_every.max(1)).min(32);
    first.saturating_mul(1usize << doublings).min(MAX_PART_SIZE)
}

/// Most bytes an upload can hold with this part size schedule.
#[must_use]
pub fn upload_capacity(first: usize, double_every: u32) -> u64 {
    (1..=MAX_PARTS).map(|n| part_size(n, first, double_every) as u64).sum()
}

/// An unfinished multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<DateTime<Utc>>,
}

/// An object as a listing shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub last_modified: Option<DateTime<Utc>>,
    pub size: i64,
}

fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// Longest lifetime of a pre-signed URL that S3 accepts.
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone)]
pub struct Storage {
    pub client: Client,
    pub bucket: String,
    pub prefix: String,
    pub endpoint: String,
    pub presign_ttl: Duration,
    /// How long one request of an upload is sent again through an outage.
    pub retry_for: Duration,
}

impl Storage {
    pub fn new(cfg: &S3Config) -> Self {
        // The SDK's own retries cover a blip; [`with_retries`] covers an outage.
        let retry = aws_sdk_s3::config::retry::RetryConfig::standard()
            .with_max_attempts(6)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(10));
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .retry_config(retry)
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
            retry_for: Duration::from_secs(cfg.retry_secs),
        }
    }

    fn prefixed(&self, key: String) -> String {
        if self.prefix.is_empty() {
            key
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// Folder of an archive uploaded for a restore.
    #[must_use]
    pub fn upload_prefix(&self, t: TenantId, p: ProjectId, planet: PlanetId, r: crate::ids::RestoreId) -> String {
        self.prefixed(format!("tenants/{t}/projects/{p}/planets/{planet}/uploads/{r}/"))
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
            .customize()
            // A readiness probe reports what it finds now, rather than retrying past its timeout.
            .config_override(
                aws_sdk_s3::Config::builder()
                    .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(1)),
            )
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

impl Storage {
    /// A small object read whole, or `None` when there is no such key.
    pub async fn get_small(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(self.error("reading an object", e)),
        };
        Ok(Some(out.body.collect().await?.into_bytes().to_vec()))
    }

    /// An object's body as a stream and its length, for the profiles that serve a download
    /// themselves (a client that does not follow redirects).
    pub async fn open(&self, key: &str) -> anyhow::Result<(Option<i64>, aws_sdk_s3::primitives::ByteStream)> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("reading an object", e))?;
        Ok((out.content_length, out.body))
    }

    /// Keys of every object under `prefix`.
    pub async fn list_keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("listing objects", e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        }
        Ok(keys)
    }

    /// Multipart uploads under `prefix` that were started and never completed.
    /// A store that does not implement the listing (some embedded ones) has none to show.
    pub async fn list_uploads(&self, prefix: &str) -> anyhow::Result<Vec<Upload>> {
        use aws_sdk_s3::error::ProvideErrorMetadata as _;
        let mut uploads = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let out = match self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if e.code() == Some("NotImplemented") => return Ok(uploads),
                Err(e) => return Err(self.error("listing multipart uploads", e)),
            };
            uploads.extend(out.uploads().iter().filter_map(|u| {
                Some(Upload {
                    key: u.key()?.to_owned(),
                    upload_id: u.upload_id()?.to_owned(),
                    initiated: u.initiated().and_then(to_chrono),
                })
            }));
            if out.is_truncated() != Some(true) || out.next_key_marker().is_none() {
                return Ok(uploads);
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            id_marker = out.next_upload_id_marker().map(str::to_owned);
        }
    }

    /// One page (up to 1000) of the objects under `prefix`, and the token of the next page.
    pub async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> anyhow::Result<(Vec<Listed>, Option<String>)> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| self.error("listing objects", e))?;
        let items = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(Listed {
                    key: o.key()?.to_owned(),
                    last_modified: o.last_modified().and_then(to_chrono),
                    size: o.size().unwrap_or(0),
                })
            })
            .collect();
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok((items, next))
    }

    /// Whether an object exists: `Ok(false)` only when the store says it does not.
    pub async fn exists(&self, key: &str) -> anyhow::Result<bool> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(aws_sdk_s3::operation::head_object::HeadObjectError::is_not_found) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.error("reading an object's metadata", e)),
        }
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("deleting an object", e))?;
        Ok(())
    }

    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> anyhow::Result<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.error("aborting a multipart upload", e))?;
        Ok(())
    }

    /// The object naming the installation whose bucket (and prefix) this is.
    #[must_use]
    pub fn installation_key(&self) -> String {
        self.prefixed("svalbard/installation.json".into())
    }

    /// Where every object of the tenants lives.
    #[must_use]
    pub fn tenants_root(&self) -> String {
        self.prefixed("tenants/".into())
    }

    /// Removes everything under `prefix`: unfinished uploads and objects. Idempotent.
    pub async fn clear(&self, prefix: &str) -> anyhow::Result<usize> {
        let mut removed = 0;
        for u in self.list_uploads(prefix).await? {
            self.abort_upload(&u.key, &u.upload_id).await?;
            removed += 1;
        }
        for key in self.list_keys(prefix).await? {
            self.delete(&key).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Writes a small object in one request, sent again through an outage like an upload's
    /// parts: a backup's manifest follows its archive and must not cost the attempt either.
    pub async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> anyhow::Result<()> {
        let body = bytes::Bytes::from(body);
        with_retries("PutObject", self.retry_for, || {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(content_type)
                .body(body.clone().into())
                .send()
        })
        .await
        .map_err(|e| self.error("writing an object", e))?;
        Ok(())
    }

    fn error<E>(
        &self,
        what: &str,
        e: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> anyhow::Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        anyhow::anyhow!(
            "object storage at {} (bucket {}): {what} failed: {}",
            self.endpoint,
            self.bucket,
            describe(&e)
        )
    }
}

/// An object written part by part, one part in memory at a time; aborted unless completed.
/// Parts grow as the object does (see [`part_size`]).
pub struct PartWriter<'a> {
    storage: &'a Storage,
    key: String,
    upload_id: String,
    parts: Vec<aws_sdk_s3::types::CompletedPart>,
    buffer: Vec<u8>,
    first_part_size: usize,
    part_size: usize,
    written: u64,
}

/// Parts after which a [`PartWriter`]'s part size doubles.
const PART_DOUBLE_EVERY: u32 = 1000;

impl<'a> PartWriter<'a> {
    pub async fn begin(storage: &'a Storage, key: &str, part_size: usize) -> anyhow::Result<Self> {
        let out = storage
            .client
            .create_multipart_upload()
            .bucket(&storage.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| storage.error("starting an upload", e))?;
        let upload_id = out
            .upload_id
            .ok_or_else(|| anyhow::anyhow!("object storage returned no upload id"))?;
        let first_part_size = part_size.clamp(MIN_PART_SIZE, MAX_PART_SIZE);
        Ok(Self {
            storage,
            key: key.to_owned(),
            upload_id,
            parts: Vec::new(),
            buffer: Vec::with_capacity(first_part_size),
            first_part_size,
            part_size: first_part_size,
            written: 0,
        })
    }

    #[must_use]
    pub fn written(&self) -> u64 {
        self.written
    }

    pub async fn write(&mut self, mut data: &[u8]) -> anyhow::Result<()> {
        self.written += data.len() as u64;
        while !data.is_empty() {
            let take = data.len().min(self.part_size - self.buffer.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == self.part_size {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        let n = u32::try_from(self.parts.len() + 1).unwrap_or(u32::MAX);
        anyhow::ensure!(
            n <= MAX_PARTS,
            "the object exceeds what {MAX_PARTS} parts can hold ({} bytes)",
            upload_capacity(self.first_part_size, PART_DOUBLE_EVERY)
        );
        let number = i32::try_from(n).unwrap_or(i32::MAX);
        self.part_size = part_size(n + 1, self.first_part_size, PART_DOUBLE_EVERY);
        let body = bytes::Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(self.part_size)));
        let s = self.storage;
        let out = with_retries("UploadPart", s.retry_for, || {
            s.client
                .upload_part()
                .bucket(&s.bucket)
                .key(&self.key)
                .upload_id(&self.upload_id)
                .part_number(number)
                .body(body.clone().into())
                .send()
        })
        .await
        .map_err(|e| s.error("uploading a part", e))?;
        self.parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag)
                .build(),
        );
        Ok(())
    }

    pub async fn complete(mut self) -> anyhow::Result<u64> {
        if !self.buffer.is_empty() || self.parts.is_empty() {
            self.flush().await?;
        }
        let s = self.storage;
        let done = aws_sdk_s3::types::CompletedMultipartUpload::builder()
            .set_parts(Some(self.parts.clone()))
            .build();
        with_retries("CompleteMultipartUpload", s.retry_for, || {
            s.client
                .complete_multipart_upload()
                .bucket(&s.bucket)
                .key(&self.key)
                .upload_id(&self.upload_id)
                .multipart_upload(done.clone())
                .send()
        })
        .await
        .map_err(|e| s.error("completing an upload", e))?;
        Ok(self.written)
    }

    pub async fn abort(self) {
        let s = self.storage;
        if let Err(e) = s
            .client
            .abort_multipart_upload()
            .bucket(&s.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await
        {
            tracing::warn!(key = %self.key, error = %describe(&e), "aborting an upload failed; the reaper will");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn parts_double_every_so_many_up_to_the_largest_s3_takes() {
        let size = |n| part_size(n, 16 * MIB, 1000);
        assert_eq!(size(1), 16 * MIB);
        assert_eq!(size(1000), 16 * MIB);
        assert_eq!(size(1001), 32 * MIB);
        assert_eq!(size(2001), 64 * MIB);
        assert_eq!(size(9000), 4096 * MIB);
        assert_eq!(size(9001), MAX_PART_SIZE);
        assert_eq!(size(MAX_PARTS), MAX_PART_SIZE);
        // 10,000 parts hold more than the 5 TiB S3 allows in one object.
        assert!(upload_capacity(16 * MIB, 1000) > 5 * (1 << 40));
        // The old fixed schedule held 160 GiB.
        assert_eq!(upload_capacity(16 * MIB, u32::MAX), 10_000 * 16 * MIB as u64);
        // Too small a first part is raised to what S3 accepts; no overflow at the far end.
        assert_eq!(part_size(1, 1, 2), MIN_PART_SIZE);
        assert_eq!(part_size(3, 1, 2), 2 * MIN_PART_SIZE);
        assert_eq!(part_size(u32::MAX, MAX_PART_SIZE, 1), MAX_PART_SIZE);
        assert_eq!(part_size(5, 5 * MIB, 0), 80 * MIB, "0 means every part");
    }
}
