#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The backup pipeline against a real S3 server and a real PostgreSQL.
//!
//! Needs `S3_ENDPOINT`, `S3_BUCKET`, `S3_ACCESS_KEY_ID`, `S3_SECRET_ACCESS_KEY` and `S3_REGION`
//! (e.g. a single-node Garage), and PostgreSQL at 127.0.0.1:5432 with user `postgres` trusted,
//! plus the `psql`, `pg_dump`, `pg_restore` and `zstd` programs.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::Utc;
use secrecy::SecretString;
use sha2::{Digest as _, Sha256};
use svalbard_core::archive::{ArchiveHeader, FORMAT_VERSION, read_header};
use svalbard_core::config::S3Config;
use svalbard_core::storage::Storage;
use svalbard_worker::pg::{self, ConnParams, DEFAULT_PG_ROOTS};
use svalbard_worker::pipeline::{UploadError, UploadSettings, UploadTarget, upload_stream};
use tokio::io::{AsyncRead, AsyncWriteExt as _, ReadBuf};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const PG_HOST: &str = "127.0.0.1";
const PG_PORT: u16 = 5432;
const PG_USER: &str = "postgres";
const MIB: usize = 1024 * 1024;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need a real S3 server. Start one (e.g. a single-node \
             Garage) and set S3_ENDPOINT, S3_BUCKET, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY and \
             S3_REGION."
        )
    })
}

fn storage() -> Storage {
    Storage::new(&S3Config {
        endpoint: Some(env("S3_ENDPOINT")),
        bucket: env("S3_BUCKET"),
        region: std::env::var("S3_REGION").unwrap_or_else(|_| "garage".to_owned()),
        access_key_id: Some(env("S3_ACCESS_KEY_ID")),
        secret_access_key: Some(SecretString::from(env("S3_SECRET_ACCESS_KEY"))),
        force_path_style: true,
        presign_ttl_secs: 600,
        prefix: String::new(),
        retry_secs: 300,
    })
}

/// A key prefix of its own for each test, so runs never see each other's objects.
fn unique_prefix(test: &str) -> String {
    format!("pipeline-tests/{test}/{}/", Uuid::now_v7())
}

fn header(engine_version: &str, tool_version: &str) -> ArchiveHeader {
    ArchiveHeader {
        format_version: FORMAT_VERSION,
        engine: "postgresql".to_owned(),
        engine_version: engine_version.to_owned(),
        tool_version: tool_version.to_owned(),
        tenant_id: Uuid::now_v7(),
        project_id: Uuid::now_v7(),
        planet_id: Uuid::now_v7(),
        backup_id: Uuid::now_v7(),
        created_at: Utc::now(),
    }
}

fn conn(database: &str) -> ConnParams {
    ConnParams {
        host: PG_HOST.to_owned(),
        port: PG_PORT,
        database: database.to_owned(),
        user: PG_USER.to_owned(),
        password: None,
        sslmode: "disable".to_owned(),
        hostaddr: None,
    }
}

/// Runs SQL with psql and returns its unaligned, tuples-only output.
fn psql(database: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            PG_HOST,
            "-p",
            &PG_PORT.to_string(),
        ])
        .args(["-U", PG_USER, "-d", database, "-c", sql])
        .output()
        .expect("cannot run psql");
    assert!(
        out.status.success(),
        "psql failed on {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A database created for one test and dropped afterwards, whatever the outcome.
struct TestDb(String);

impl TestDb {
    fn create(role: &str) -> Self {
        let name = format!("svalbard_pipeline_{role}_{}", Uuid::now_v7().simple());
        psql("postgres", &format!("CREATE DATABASE {name}"));
        Self(name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-h",
                PG_HOST,
                "-p",
                &PG_PORT.to_string(),
                "-U",
                PG_USER,
                "-d",
                "postgres",
            ])
            .args(["-c", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0)])
            .status();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("svalbard-pipeline-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn object_exists(storage: &Storage, key: &str) -> bool {
    match storage
        .client
        .head_object()
        .bucket(&storage.bucket)
        .key(key)
        .send()
        .await
    {
        Ok(_) => true,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => false,
        Err(e) => panic!("HeadObject {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)),
    }
}

/// Upload ids of the multipart uploads in progress under `prefix`.
async fn uploads_under(storage: &Storage, prefix: &str) -> Vec<String> {
    storage
        .list_uploads(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.upload_id)
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Decompresses with the standard `zstd` program, which must skip the header frame.
fn zstd_decompress(archive: &Path, out: &Path) {
    let status = Command::new("zstd")
        .arg("-q")
        .arg("-d")
        .arg("-f")
        .arg(archive)
        .arg("-o")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "zstd -d failed on {}", archive.display());
}

fn table_fingerprint(database: &str) -> String {
    psql(
        database,
        "SELECT count(*) || ' ' || md5(string_agg(id || ':' || name || ':' || payload || ':' || created, ',' \
         ORDER BY id)) FROM items",
    )
}

#[tokio::test]
async fn postgres_dump_round_trips_through_s3_and_standard_tools() {
    let storage = storage();
    let src = TestDb::create("src");
    // Hex digests compress about 2:1, so 200k rows give a dump of several 5 MiB parts.
    psql(
        &src.0,
        "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, payload text NOT NULL, \
                             created timestamptz NOT NULL);
         INSERT INTO items
         SELECT g, 'item ' || g,
                md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) || md5((g * 31)::text),
                timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute'
         FROM generate_series(1, 200000) g;",
    );
    let source_fingerprint = table_fingerprint(&src.0);
    assert!(source_fingerprint.starts_with("200000 "), "{source_fingerprint}");

    let (major, server_version) = pg::server_version(&conn(&src.0)).await.unwrap();
    assert!(
        server_version.starts_with(&major.to_string()),
        "{major} vs {server_version}"
    );
    let roots: Vec<String> = DEFAULT_PG_ROOTS.iter().map(|s| (*s).to_owned()).collect();
    let (pg_dump, tool_version) = pg::find_pg_dump(&roots, major).unwrap();

    let dump = pg::spawn_dump(&pg_dump, &conn(&src.0)).unwrap();

    let key = format!("{}archive.pgdump.zst", unique_prefix("roundtrip"));
    let header = header(&server_version, &tool_version);
    let progress = Arc::new(AtomicU64::new(0));
    let settings = UploadSettings {
        part_size: 5 * MIB,
        double_every: 1000,
        parts_in_flight: 2,
        zstd_level: 1,
    };
    let outcome = upload_stream(
        dump,
        &header,
        None,
        &UploadTarget::new(&storage, key.clone()),
        &settings,
        &CancellationToken::new(),
        progress.clone(),
    )
    .await
    .unwrap();
    assert!(outcome.parts >= 3, "expected several parts, got {outcome:?}");
    assert_eq!(progress.load(Ordering::Relaxed), outcome.uncompressed_bytes);
    assert!(outcome.size_bytes < outcome.uncompressed_bytes, "{outcome:?}");

    let archive = svalbard_testkit::object(&storage, &key).await;
    assert_eq!(archive.len() as u64, outcome.size_bytes);
    assert_eq!(sha256_hex(&archive), outcome.sha256_hex);
    let (read_back, header_len) = read_header(&archive).unwrap().expect("no Svalbard header");
    assert_eq!(read_back, header);
    assert_eq!(
        &archive[header_len..header_len + 4],
        &[0x28, 0xB5, 0x2F, 0xFD],
        "zstd frame after the header"
    );

    let tmp = TempDir::new();
    let archive_path = tmp.0.join("archive.pgdump.zst");
    let dump_path = tmp.0.join("archive.pgdump");
    std::fs::write(&archive_path, &archive).unwrap();
    zstd_decompress(&archive_path, &dump_path);
    let dump = std::fs::read(&dump_path).unwrap();
    assert_eq!(dump.len() as u64, outcome.uncompressed_bytes);
    assert_eq!(&dump[..5], b"PGDMP", "custom-format dump expected");

    let dst = TestDb::create("dst");
    let out = Command::new("pg_restore")
        .args([
            "--no-owner",
            "--exit-on-error",
            "-h",
            PG_HOST,
            "-p",
            &PG_PORT.to_string(),
            "-U",
            PG_USER,
        ])
        .args(["-d", &dst.0])
        .arg(&dump_path)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(table_fingerprint(&dst.0), source_fingerprint);

    storage
        .client
        .delete_object()
        .bucket(&storage.bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
}

/// Endless incompressible bytes, so parts fill up quickly.
struct Noise(u64);

impl AsyncRead for Noise {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        while buf.remaining() > 0 {
            // xorshift64: fast and good enough to defeat zstd.
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let n = buf.remaining().min(8);
            buf.put_slice(&self.0.to_le_bytes()[..n]);
        }
        Poll::Ready(Ok(()))
    }
}

/// Fails after `left` bytes, like a dump whose pipe breaks.
struct Breaking {
    noise: Noise,
    left: usize,
}

impl AsyncRead for Breaking {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "dump connection lost",
            )));
        }
        let want = buf.remaining().min(self.left);
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(want));
        let Poll::Ready(r) = Pin::new(&mut self.noise).poll_read(cx, &mut limited) else {
            unreachable!()
        };
        r?;
        let n = limited.filled().len();
        buf.advance(n);
        self.left -= n;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn cancellation_mid_stream_aborts_the_multipart_upload() {
    let storage = storage();
    let prefix = unique_prefix("cancel");
    let key = format!("{prefix}archive.pgdump.zst");
    let cancel = CancellationToken::new();
    let progress = Arc::new(AtomicU64::new(0));

    let upload = tokio::spawn({
        let target = UploadTarget::new(&storage, key.clone());
        let cancel = cancel.clone();
        let progress = progress.clone();
        async move {
            let settings = UploadSettings {
                part_size: 5 * MIB,
                double_every: 1000,
                parts_in_flight: 2,
                zstd_level: 1,
            };
            let h = header("15", "15");
            upload_stream(
                Noise(0x9E37_79B9_7F4A_7C15),
                &h,
                None,
                &target,
                &settings,
                &cancel,
                progress,
            )
            .await
        }
    });

    // Cancel only once a part is really stored, so there is something to clean up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no part was uploaded within 60 s"
        );
        assert!(!upload.is_finished(), "the endless upload ended by itself");
        if let Some(id) = uploads_under(&storage, &prefix).await.first() {
            let parts = storage
                .client
                .list_parts()
                .bucket(&storage.bucket)
                .key(&key)
                .upload_id(id)
                .send()
                .await
                .unwrap();
            if !parts.parts().is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();

    let result = tokio::time::timeout(Duration::from_secs(30), upload)
        .await
        .expect("cancellation hangs")
        .unwrap();
    assert!(matches!(result, Err(UploadError::Cancelled)), "{result:?}");
    assert!(progress.load(Ordering::Relaxed) >= 5 * MIB as u64);
    assert_eq!(uploads_under(&storage, &prefix).await, Vec::<String>::new());
    assert!(!object_exists(&storage, &key).await);
}

#[tokio::test]
async fn source_failure_aborts_the_multipart_upload() {
    let storage = storage();
    let prefix = unique_prefix("source-error");
    let key = format!("{prefix}archive.pgdump.zst");
    let input = Breaking {
        noise: Noise(42),
        left: 12 * MIB,
    };
    let settings = UploadSettings {
        part_size: 5 * MIB,
        double_every: 1000,
        parts_in_flight: 2,
        zstd_level: 1,
    };
    let result = upload_stream(
        input,
        &header("15", "15"),
        None,
        &UploadTarget::new(&storage, key.clone()),
        &settings,
        &CancellationToken::new(),
        Arc::new(AtomicU64::new(0)),
    )
    .await;
    let err = result.unwrap_err();
    assert!(matches!(err, UploadError::Source(_)), "{err:?}");
    assert!(err.to_string().contains("dump connection lost"), "{err}");
    assert!(!err.is_transient());
    assert_eq!(uploads_under(&storage, &prefix).await, Vec::<String>::new());
    assert!(!object_exists(&storage, &key).await);
}

#[tokio::test]
async fn failed_dump_is_not_stored() {
    let storage = storage();
    let prefix = unique_prefix("dump-error");
    let key = format!("{prefix}archive.pgdump.zst");
    let (major, _) = pg::server_version(&conn("postgres")).await.unwrap();
    let roots: Vec<String> = DEFAULT_PG_ROOTS.iter().map(|s| (*s).to_owned()).collect();
    let (pg_dump, _) = pg::find_pg_dump(&roots, major).unwrap();
    let missing = format!("svalbard_pipeline_missing_{}", Uuid::now_v7().simple());
    let dump = pg::spawn_dump(&pg_dump, &conn(&missing)).unwrap();
    let err = upload_stream(
        dump,
        &header("15", "15"),
        None,
        &UploadTarget::new(&storage, key.clone()),
        &UploadSettings::default(),
        &CancellationToken::new(),
        Arc::new(AtomicU64::new(0)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, UploadError::Source(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("pg_dump failed") && msg.contains(&missing), "{msg}");
    assert_eq!(uploads_under(&storage, &prefix).await, Vec::<String>::new());
    assert!(!object_exists(&storage, &key).await);
}

#[tokio::test]
async fn empty_input_gives_a_valid_archive() {
    let storage = storage();
    let key = format!("{}archive.pgdump.zst", unique_prefix("empty"));
    let header = header("15", "15");
    let outcome = upload_stream(
        tokio::io::empty(),
        &header,
        None,
        &UploadTarget::new(&storage, key.clone()),
        &UploadSettings::default(),
        &CancellationToken::new(),
        Arc::new(AtomicU64::new(0)),
    )
    .await
    .unwrap();
    assert_eq!(outcome.parts, 1);
    assert_eq!(outcome.uncompressed_bytes, 0);

    let archive = svalbard_testkit::object(&storage, &key).await;
    assert_eq!(archive.len() as u64, outcome.size_bytes);
    assert_eq!(sha256_hex(&archive), outcome.sha256_hex);
    assert_eq!(read_header(&archive).unwrap().unwrap().0, header);

    let mut zstd = tokio::process::Command::new("zstd")
        .args(["-q", "-d", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = zstd.stdin.take().unwrap();
    stdin.write_all(&archive).await.unwrap();
    drop(stdin);
    let out = zstd.wait_with_output().await.unwrap();
    assert!(out.status.success(), "zstd -d refused the empty archive");
    assert!(out.stdout.is_empty());

    storage
        .client
        .delete_object()
        .bucket(&storage.bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn unreachable_storage_is_a_transient_error_naming_the_endpoint() {
    let storage = Storage::new(&S3Config {
        endpoint: Some("http://127.0.0.1:9".to_owned()),
        bucket: "nowhere".to_owned(),
        region: "garage".to_owned(),
        access_key_id: Some("GK000000000000000000000000".to_owned()),
        secret_access_key: Some(SecretString::from("0".repeat(64))),
        force_path_style: true,
        presign_ttl_secs: 600,
        prefix: String::new(),
        // A few sends, so the test shows the error without waiting out a real outage.
        retry_secs: 2,
    });
    let err = upload_stream(
        tokio::io::empty(),
        &header("15", "15"),
        None,
        &UploadTarget::new(&storage, "k/archive"),
        &UploadSettings::default(),
        &CancellationToken::new(),
        Arc::new(AtomicU64::new(0)),
    )
    .await
    .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("http://127.0.0.1:9") && msg.contains("nowhere") && msg.contains("k/archive"),
        "{msg}"
    );
}

/// Endless hex digits: compresses about 2:1, like much real data.
struct HexNoise(Noise);

impl AsyncRead for HexNoise {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.0).poll_read(cx, buf);
        for b in &mut buf.filled_mut()[before..] {
            *b = b"0123456789abcdef"[usize::from(*b & 15)];
        }
        r
    }
}

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Peak memory is process-wide, so this runs alone and in release mode:
/// `cargo test --release -p svalbard-worker --test pipeline -- --ignored --exact memory_stays_bounded_whatever_the_input_size`
#[tokio::test]
#[ignore = "slow; measures process-wide memory, so run it alone in release mode"]
async fn memory_stays_bounded_whatever_the_input_size() {
    const INPUT: u64 = 2 * 1024 * 1024 * 1024;
    let storage = storage();
    let key = format!("{}archive.zst", unique_prefix("memory"));
    let settings = UploadSettings::default();
    let before = peak_rss();
    let started = std::time::Instant::now();
    let input = tokio::io::AsyncReadExt::take(HexNoise(Noise(7)), INPUT);
    let outcome = upload_stream(
        input,
        &header("15", "15"),
        None,
        &UploadTarget::new(&storage, key.clone()),
        &settings,
        &CancellationToken::new(),
        Arc::new(AtomicU64::new(0)),
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    let grown = peak_rss().saturating_sub(before);
    eprintln!(
        "{INPUT} bytes in {elapsed:?} ({:.0} MiB/s), stored {} bytes in {} parts, peak memory grew by {} MiB",
        INPUT as f64 / elapsed.as_secs_f64() / MIB as f64,
        outcome.size_bytes,
        outcome.parts,
        grown / MIB as u64
    );
    assert_eq!(outcome.uncompressed_bytes, INPUT);
    // Four parts (one filling, one queued, two in flight) plus zstd's window and buffers.
    assert!(
        grown < 8 * settings.part_size as u64,
        "peak memory grew by {grown} bytes"
    );
    storage
        .client
        .delete_object()
        .bucket(&storage.bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn parts_grow_as_the_upload_proceeds_and_the_archive_round_trips() {
    use tokio::io::AsyncReadExt as _;
    let storage = storage();
    const INPUT: u64 = 48 * MIB as u64;
    let key = format!("{}archive.svb.zst", unique_prefix("growing"));
    // From S3's smallest part, doubling every two parts: 5, 5, 10, 10, 20 MiB hold 50 MiB,
    // where fixed parts would take ten.
    let settings = UploadSettings {
        part_size: 5 * MIB,
        double_every: 2,
        parts_in_flight: 2,
        zstd_level: 1,
    };
    let outcome = upload_stream(
        Noise(0x9E37_79B9_7F4A_7C15).take(INPUT),
        &header("15", "15"),
        None,
        &UploadTarget::new(&storage, key.clone()),
        &settings,
        &CancellationToken::new(),
        Arc::new(AtomicU64::new(0)),
    )
    .await
    .unwrap();
    assert_eq!(outcome.uncompressed_bytes, INPUT);
    assert_eq!(outcome.parts, 5, "{outcome:?}");

    // Each stored part, as the store reports it.
    let mut sizes = Vec::new();
    for n in 1..=5 {
        let head = storage
            .client
            .head_object()
            .bucket(&storage.bucket)
            .key(&key)
            .part_number(n)
            .send()
            .await
            .unwrap();
        sizes.push(head.content_length().unwrap());
    }
    let m = i64::try_from(MIB).unwrap();
    assert_eq!(sizes[..4], [5 * m, 5 * m, 10 * m, 10 * m], "{sizes:?}");
    assert_eq!(sizes.iter().sum::<i64>(), i64::try_from(outcome.size_bytes).unwrap());

    let archive = svalbard_testkit::object(&storage, &key).await;
    assert_eq!(sha256_hex(&archive), outcome.sha256_hex);
    let (_, header_len) = read_header(&archive).unwrap().expect("no Svalbard header");
    let restored = zstd::decode_all(&archive[header_len..]).unwrap();
    let mut expected = Vec::new();
    Noise(0x9E37_79B9_7F4A_7C15)
        .take(INPUT)
        .read_to_end(&mut expected)
        .await
        .unwrap();
    assert!(restored == expected, "the archive does not give back the input");
    storage.delete(&key).await.unwrap();
}
