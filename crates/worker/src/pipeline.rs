//! The streaming backup pipeline: dump bytes in, one archive object in S3 out.
//!
//! Three stages run at once, joined by bounded channels so memory stays at a few parts
//! whatever the database size:
//!
//! ```text
//! dump stdout ──chunks──▶ zstd, then age, on a blocking thread ──full parts──▶ S3 UploadPart (N in flight)
//!   (async read)           (+ SHA-256 of the stored bytes)
//! ```
//!
//! An encrypted archive is an age file whose plaintext is the unencrypted archive: the header
//! frame, then the zstd stream (see [`svalbard_core::envelope`]). age encrypts in 64 KiB chunks,
//! so encryption adds one chunk to what is held.
//!
//! Compression runs off the async executor because zstd at ~hundreds of MiB/s would starve it.
//! Any failure or cancellation aborts the multipart upload, so nothing is left behind.
//!
//! Parts grow as the archive does (see [`svalbard_core::storage::part_size`]): from 16 MiB,
//! doubling every 1,000 parts, 10,000 parts hold S3's 5 TiB object limit. Memory is bounded by
//! the parts alive at once: `parts_in_flight` being uploaded (and kept for a retry), one queued,
//! one being filled, so `(parts_in_flight + 2) × current part size` plus zstd's window. With the
//! defaults that is 64 MiB for the first 16 GB of archive, 4 GiB around 1 TiB and 16 GiB near
//! the 5 TiB limit; `parts_in_flight = 1` lowers each to three parts. A store that stops
//! answering holds these parts while each request is sent again, and back-pressure stalls the
//! dump tool meanwhile; nothing else piles up.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use sha2::{Digest as _, Sha256};
use svalbard_core::archive::{ArchiveHeader, encode_header};
use svalbard_core::envelope::{DataKey, TenantKey, encryptor};
use svalbard_core::storage::{Storage, describe, part_size, upload_capacity, with_retries};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use svalbard_core::storage::{MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE};

/// Size of one read from the dump.
const READ_CHUNK: usize = 256 * 1024;

/// Chunks queued between the reader and the compressor.
const CHUNKS_QUEUED: usize = 32;

/// How long aborting a failed upload may take before it is left to the bucket's lifecycle rules.
const ABORT_TIMEOUT: Duration = Duration::from_secs(60);

/// Tuning of one upload.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Size of the first parts, raised to [`MIN_PART_SIZE`] when smaller.
    pub part_size: usize,
    /// Parts after which the part size doubles, up to [`MAX_PART_SIZE`].
    pub double_every: u32,
    /// Parts uploaded concurrently; one more is being filled and one waits in between.
    pub parts_in_flight: usize,
    /// zstd level: 1 is the sweet spot, higher levels cost far more time than they save space.
    pub zstd_level: i32,
}

impl Default for UploadSettings {
    fn default() -> Self {
        Self {
            part_size: 16 * 1024 * 1024,
            double_every: 1000,
            parts_in_flight: 2,
            zstd_level: 1,
        }
    }
}

/// Where the archive goes.
#[derive(Debug, Clone)]
pub struct UploadTarget {
    pub client: Client,
    /// Only for error messages: the SDK does not expose the endpoint it was built with.
    pub endpoint: String,
    pub bucket: String,
    pub key: String,
    /// How long each request is sent again through an outage before the upload fails.
    pub retry_for: Duration,
}

impl UploadTarget {
    /// `key` is the full object key, prefix included (see [`Storage::backup_prefix`]).
    #[must_use]
    pub fn new(storage: &Storage, key: impl Into<String>) -> Self {
        Self {
            client: storage.client.clone(),
            endpoint: storage.endpoint.clone(),
            bucket: storage.bucket.clone(),
            key: key.into(),
            retry_for: storage.retry_for,
        }
    }

    fn storage_error(&self, what: &str, err: impl std::fmt::Display) -> UploadError {
        UploadError::Storage {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            message: format!("{what}: {err}"),
        }
    }
}

/// What was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOutcome {
    /// Size of the stored archive object.
    pub size_bytes: u64,
    /// Bytes read from the input.
    pub uncompressed_bytes: u64,
    /// SHA-256 of the stored archive object, in hex.
    pub sha256_hex: String,
    pub parts: u32,
    /// The key the archive is encrypted with, when it is.
    pub data_key: Option<DataKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Object storage failed; usually worth a retry.
    #[error("object storage at {endpoint} (bucket {bucket}, key {key}): {message}")]
    Storage {
        endpoint: String,
        bucket: String,
        key: String,
        message: String,
    },
    /// Reading the dump failed.
    #[error("reading the dump failed: {0}")]
    Source(#[source] std::io::Error),
    /// Compression failed, or the archive would exceed what one multipart upload can hold.
    #[error("writing the archive failed: {0}")]
    Archive(#[source] std::io::Error),
    #[error("the upload was cancelled")]
    Cancelled,
}

impl UploadError {
    /// Whether another attempt may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Storage { .. })
    }
}

/// Streams `input` into the archive object `target.key`: the header frame, then `input`
/// compressed with zstd, encrypted to `encrypt_to` when given, uploaded as an S3 multipart
/// upload.
///
/// `progress` counts the input bytes read so far. On any error, and when `cancel` fires before
/// the upload completes, the multipart upload is aborted and the error returned.
pub async fn upload_stream<R>(
    input: R,
    header: &ArchiveHeader,
    encrypt_to: Option<&TenantKey>,
    target: &UploadTarget,
    settings: &UploadSettings,
    cancel: &CancellationToken,
    progress: Arc<AtomicU64>,
) -> Result<UploadOutcome, UploadError>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    if cancel.is_cancelled() {
        return Err(UploadError::Cancelled);
    }
    let encryption = encrypt_to
        .map(|k| encryptor(&k.recipient()))
        .transpose()
        .map_err(|e| UploadError::Archive(std::io::Error::other(format!("{e:#}"))))?;
    // Not raced against cancellation: an upload created after we stopped waiting for it would
    // never be aborted.
    let created = with_retries("CreateMultipartUpload", target.retry_for, || {
        target
            .client
            .create_multipart_upload()
            .bucket(&target.bucket)
            .key(&target.key)
            .content_type(if encryption.is_some() {
                "application/octet-stream"
            } else {
                "application/zstd"
            })
            .send()
    })
    .await
    .map_err(|e| target.storage_error("CreateMultipartUpload failed", describe(&e)))?;
    let Some(upload_id) = created.upload_id else {
        return Err(target.storage_error("CreateMultipartUpload failed", "no upload id in the answer"));
    };

    let streamed = tokio::select! {
        biased;
        () = cancel.cancelled() => Err(UploadError::Cancelled),
        r = stream_parts(input, header, encryption, target, &upload_id, settings, progress) => r,
    };
    // Completing is not raced against cancellation: once S3 has been asked to complete, an
    // abort could leave the finished object behind without anyone knowing about it.
    let result = match streamed {
        Ok((parts, outcome)) => complete(target, &upload_id, parts).await.map(|()| outcome),
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        tracing::warn!(bucket = %target.bucket, key = %target.key, error = %e, "aborting the multipart upload");
        abort(target, &upload_id).await;
    }
    result
}

async fn stream_parts<R>(
    input: R,
    header: &ArchiveHeader,
    encryption: Option<(age::Encryptor, DataKey)>,
    target: &UploadTarget,
    upload_id: &str,
    settings: &UploadSettings,
    progress: Arc<AtomicU64>,
) -> Result<(Vec<CompletedPart>, UploadOutcome), UploadError>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (first_part, double_every) = (settings.part_size, settings.double_every);
    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(CHUNKS_QUEUED);
    // One full part may wait while the uploads in flight run.
    let (part_tx, part_rx) = mpsc::channel::<Bytes>(1);

    let header_frame = encode_header(header);
    let level = settings.zstd_level;
    let (encryptor, data_key) = encryption.unzip();
    let compressor = tokio::task::spawn_blocking(move || {
        compress(
            chunk_rx,
            PartWriter::new(part_tx, first_part, double_every),
            encryptor,
            &header_frame,
            level,
        )
    });

    let (uncompressed_bytes, parts) = tokio::try_join!(
        read_input(input, chunk_tx, &progress),
        upload_parts(target, upload_id, part_rx, settings.parts_in_flight.max(1)),
    )?;
    let written = compressor
        .await
        .map_err(|e| UploadError::Archive(std::io::Error::other(format!("the compressor stopped: {e}"))))?
        .map_err(UploadError::Archive)?;
    let outcome = UploadOutcome {
        size_bytes: written.bytes,
        uncompressed_bytes,
        sha256_hex: hex::encode(written.sha256),
        parts: u32::try_from(parts.len()).unwrap_or(u32::MAX),
        data_key,
    };
    Ok((parts, outcome))
}

enum Chunk {
    Data(Bytes),
    /// The input ended normally; without it, a closed channel means the reader gave up.
    End,
}

/// Reads the input into the compressor's queue and returns the number of bytes read.
async fn read_input<R>(mut input: R, tx: mpsc::Sender<Chunk>, progress: &AtomicU64) -> Result<u64, UploadError>
where
    R: AsyncRead + Unpin,
{
    let mut total = 0u64;
    loop {
        let mut buf = bytes::BytesMut::with_capacity(READ_CHUNK);
        let n = input.read_buf(&mut buf).await.map_err(UploadError::Source)?;
        let chunk = if n == 0 { Chunk::End } else { Chunk::Data(buf.freeze()) };
        if tx.send(chunk).await.is_err() {
            // The compressor is gone; its own error says why.
            return Ok(total);
        }
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
}

struct Written {
    bytes: u64,
    sha256: [u8; 32],
}

/// Where the archive's bytes go: straight into parts, or through age first.
enum Sink {
    Plain(PartWriter),
    Encrypted(age::stream::StreamWriter<PartWriter>),
}

impl Sink {
    fn new(out: PartWriter, encryptor: Option<age::Encryptor>) -> std::io::Result<Self> {
        Ok(match encryptor {
            Some(e) => Self::Encrypted(e.wrap_output(out)?),
            None => Self::Plain(out),
        })
    }

    /// Ends the age stream (its last chunk is marked as such, so a cut archive is detected).
    fn finish(self) -> std::io::Result<PartWriter> {
        match self {
            Self::Plain(out) => Ok(out),
            Self::Encrypted(w) => w.finish(),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(out) => out.write(data),
            Self::Encrypted(w) => w.write(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(out) => out.flush(),
            Self::Encrypted(w) => w.flush(),
        }
    }
}

/// Runs on a blocking thread: header frame, then the zstd stream, encrypted or not, cut into
/// parts.
fn compress(
    mut rx: mpsc::Receiver<Chunk>,
    out: PartWriter,
    encryptor: Option<age::Encryptor>,
    header_frame: &[u8],
    level: i32,
) -> std::io::Result<Written> {
    let mut out = Sink::new(out, encryptor)?;
    out.write_all(header_frame)?;
    let mut enc = zstd::stream::write::Encoder::new(out, level)?;
    // A frame checksum lets plain `zstd -d` detect a damaged archive too.
    enc.include_checksum(true)?;
    loop {
        match rx.blocking_recv() {
            Some(Chunk::Data(data)) => enc.write_all(&data)?,
            Some(Chunk::End) => break,
            None => return Err(std::io::Error::other("the input was abandoned")),
        }
    }
    let mut out = enc.finish()?.finish()?;
    out.send_part()?;
    Ok(Written {
        bytes: out.total,
        sha256: out.hasher.finalize().into(),
    })
}

/// Collects the stored bytes into parts, hashing them on the way.
struct PartWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    first_part: usize,
    double_every: u32,
    /// Size of the part being filled.
    part_size: usize,
    parts_sent: u32,
    total: u64,
    hasher: Sha256,
}

impl PartWriter {
    fn new(tx: mpsc::Sender<Bytes>, first_part: usize, double_every: u32) -> Self {
        // Unit tests cut parts smaller than S3's minimum; the schedule applies from there.
        let part_size = if first_part < MIN_PART_SIZE {
            first_part.max(1)
        } else {
            part_size(1, first_part, double_every)
        };
        Self {
            tx,
            buf: Vec::with_capacity(part_size),
            first_part,
            double_every,
            part_size,
            parts_sent: 0,
            total: 0,
            hasher: Sha256::new(),
        }
    }

    /// Size of part `number`: the schedule's, or, below S3's minimum (tests), the same doubling
    /// from the size given.
    fn size_of(&self, number: u32) -> usize {
        if self.first_part >= MIN_PART_SIZE {
            return part_size(number, self.first_part, self.double_every);
        }
        let doublings = (number.saturating_sub(1) / self.double_every.max(1)).min(20);
        self.first_part.max(1) << doublings
    }

    /// Sends what is buffered as the next part; the last part may be small, or even hold only
    /// the header of an empty dump, but there is always at least one.
    fn send_part(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() && self.parts_sent > 0 {
            return Ok(());
        }
        if self.parts_sent >= MAX_PARTS {
            return Err(std::io::Error::other(format!(
                "the archive exceeds the {} bytes {MAX_PARTS} parts hold from {} MiB doubling every {} parts; \
                 raise the part size",
                upload_capacity(self.first_part, self.double_every),
                self.first_part / (1024 * 1024),
                self.double_every
            )));
        }
        self.part_size = self.size_of(self.parts_sent + 2);
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(self.part_size));
        self.tx
            .blocking_send(Bytes::from(part))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the uploader stopped"))?;
        self.parts_sent += 1;
        Ok(())
    }
}

impl Write for PartWriter {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let len = data.len();
        self.hasher.update(data);
        self.total += len as u64;
        while !data.is_empty() {
            let room = self.part_size - self.buf.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            self.buf.extend_from_slice(now);
            data = rest;
            if self.buf.len() == self.part_size {
                self.send_part()?;
            }
        }
        Ok(len)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Uploads parts as they come, at most `in_flight` at once, until the compressor is done.
async fn upload_parts(
    target: &UploadTarget,
    upload_id: &str,
    mut rx: mpsc::Receiver<Bytes>,
    in_flight: usize,
) -> Result<Vec<CompletedPart>, UploadError> {
    let mut running = FuturesUnordered::new();
    let mut done = Vec::new();
    let mut next_number = 1i32;
    loop {
        // Taking no new part while all slots are busy is what bounds memory.
        if running.len() >= in_flight {
            if let Some(r) = running.next().await {
                done.push(r?);
            }
            continue;
        }
        tokio::select! {
            part = rx.recv() => match part {
                Some(part) => {
                    running.push(upload_part(target, upload_id, next_number, part));
                    next_number += 1;
                }
                None => break,
            },
            Some(r) = running.next(), if !running.is_empty() => done.push(r?),
        }
    }
    while let Some(r) = running.next().await {
        done.push(r?);
    }
    Ok(done)
}

async fn upload_part(
    target: &UploadTarget,
    upload_id: &str,
    number: i32,
    part: Bytes,
) -> Result<CompletedPart, UploadError> {
    let len = part.len();
    // The part stays in memory until it is stored, so a failed send is sent again as it was.
    let out = with_retries("UploadPart", target.retry_for, || {
        target
            .client
            .upload_part()
            .bucket(&target.bucket)
            .key(&target.key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .body(ByteStream::from(part.clone()))
            .customize()
            // Hashing every part for the signature (and again on the server to check it) costs
            // two extra SHA-256 passes over the archive; the archive's own SHA-256 is recorded.
            .disable_payload_signing()
            .send()
    })
    .await
    .map_err(|e| target.storage_error(&format!("UploadPart {number} ({len} bytes) failed"), describe(&e)))?;
    Ok(CompletedPart::builder()
        .part_number(number)
        .set_e_tag(out.e_tag)
        .build())
}

async fn complete(target: &UploadTarget, upload_id: &str, mut parts: Vec<CompletedPart>) -> Result<(), UploadError> {
    parts.sort_by_key(|p| p.part_number);
    let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
    with_retries("CompleteMultipartUpload", target.retry_for, || {
        target
            .client
            .complete_multipart_upload()
            .bucket(&target.bucket)
            .key(&target.key)
            .upload_id(upload_id)
            .multipart_upload(done.clone())
            .send()
    })
    .await
    .map_err(|e| target.storage_error("CompleteMultipartUpload failed", describe(&e)))?;
    Ok(())
}

/// Best effort: an upload that cannot be aborted is left to the bucket's lifecycle rules.
async fn abort(target: &UploadTarget, upload_id: &str) {
    let req = target
        .client
        .abort_multipart_upload()
        .bucket(&target.bucket)
        .key(&target.key)
        .upload_id(upload_id);
    match tokio::time::timeout(ABORT_TIMEOUT, req.send()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(
            bucket = %target.bucket, key = %target.key, upload_id,
            error = %describe(&e), "cannot abort the multipart upload"
        ),
        Err(_) => tracing::error!(
            bucket = %target.bucket, key = %target.key, upload_id,
            "aborting the multipart upload timed out"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_writer_cuts_exact_parts_and_hashes_everything() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut w = PartWriter::new(tx, 10, u32::MAX);
        w.write_all(&[1u8; 7]).unwrap();
        w.write_all(&[2u8; 18]).unwrap();
        w.send_part().unwrap();
        w.send_part().unwrap();
        let total = w.total;
        let digest: [u8; 32] = w.hasher.clone().finalize().into();
        drop(w);
        let mut parts = Vec::new();
        while let Ok(p) = rx.try_recv() {
            parts.push(p);
        }
        assert_eq!(parts.iter().map(Bytes::len).collect::<Vec<_>>(), vec![10, 10, 5]);
        assert_eq!(total, 25);
        let all: Vec<u8> = parts.concat();
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&all)));
    }

    #[test]
    fn parts_grow_as_the_schedule_says() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut w = PartWriter::new(tx, 4, 2);
        w.write_all(&[7u8; 4 + 4 + 8 + 8 + 16 + 3]).unwrap();
        w.send_part().unwrap();
        drop(w);
        let mut sizes = Vec::new();
        while let Ok(p) = rx.try_recv() {
            sizes.push(p.len());
        }
        assert_eq!(sizes, vec![4, 4, 8, 8, 16, 3]);
    }

    #[test]
    fn empty_output_still_makes_one_part() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut w = PartWriter::new(tx, 10, u32::MAX);
        w.send_part().unwrap();
        w.send_part().unwrap();
        drop(w);
        assert_eq!(rx.try_recv().unwrap().len(), 0);
        assert!(rx.try_recv().is_err());
    }
}
