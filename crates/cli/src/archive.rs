//! `svalbard archive`: reading a downloaded archive on its own, without a Svalbard server.
//!
//! An archive is an age file (when encrypted) whose plaintext is a zstd stream that starts with
//! Svalbard's header in a skippable frame; `inspect` shows what it says about itself, `verify`
//! checks every checksum it carries, and `decrypt` writes the engine's own dump.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use svalbard_core::archive::{MAX_HEADER_FRAME, Manifest, read_header};
use svalbard_core::dumpinfo::{self, Container, DumpFormat};
use svalbard_core::envelope;

#[derive(Subcommand)]
pub enum ArchiveCmd {
    /// Print what an archive says about itself: its encryption, Svalbard header and dump format.
    Inspect {
        file: PathBuf,
        /// age identity file (`GET /tenants/{t}/keys/export` → `identityFile`) to read inside an
        /// encrypted archive.
        #[arg(long, short = 'i')]
        identity: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check every checksum: the file's SHA-256 (against `--checksum` or the backup's
    /// manifest), every age chunk's tag, and the zstd frame checksums.
    Verify {
        file: PathBuf,
        #[arg(long, short = 'i')]
        identity: Option<PathBuf>,
        /// The backup's `checksum`, `sha256:<hex>`.
        #[arg(long, conflicts_with = "manifest")]
        checksum: Option<String>,
        /// The backup's `manifest.json`.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Write the plain dump (the engine's own format) of an archive.
    Decrypt {
        file: PathBuf,
        #[arg(long, short = 'i')]
        identity: Option<PathBuf>,
        /// Where to write; `-` (the default) is standard output.
        #[arg(long, short = 'o', default_value = "-")]
        output: PathBuf,
        /// Write the decrypted archive still compressed (`.svb.zst`) instead of the dump.
        #[arg(long)]
        compressed: bool,
    },
}

pub fn run(cmd: ArchiveCmd) -> anyhow::Result<u8> {
    match cmd {
        ArchiveCmd::Inspect { file, identity, json } => inspect(&file, identity.as_deref(), json),
        ArchiveCmd::Verify {
            file,
            identity,
            checksum,
            manifest,
        } => verify(&file, identity.as_deref(), checksum, manifest.as_deref()),
        ArchiveCmd::Decrypt {
            file,
            identity,
            output,
            compressed,
        } => decrypt(&file, identity.as_deref(), &output, compressed),
    }
}

type Identities = Vec<Box<dyn age::Identity + Send + Sync>>;

fn identities(path: &Path) -> anyhow::Result<Identities> {
    age::IdentityFile::from_file(path.display().to_string())
        .with_context(|| format!("cannot read the identity file {}", path.display()))?
        .into_identities()
        .with_context(|| format!("{} is not an age identity file", path.display()))
}

fn open(file: &Path) -> anyhow::Result<BufReader<File>> {
    Ok(BufReader::new(
        File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
    ))
}

/// The archive's plaintext: decrypted when it is an age file (which then needs `identity`).
fn plaintext(file: &Path, identity: Option<&Path>) -> anyhow::Result<(Box<dyn Read>, bool)> {
    let mut head = [0u8; 32];
    let n = open(file)?.read(&mut head)?;
    let input = open(file)?;
    if !envelope::is_encrypted(&head[..n]) {
        return Ok((Box::new(input), false));
    }
    let identity = identity.ok_or_else(|| {
        anyhow::anyhow!(
            "{} is encrypted (age); give the tenant's identity file with --identity \
             (the `identityFile` of GET /tenants/{{tenantId}}/keys/export)",
            file.display()
        )
    })?;
    let ids = identities(identity)?;
    let reader = age::Decryptor::new_buffered(input)
        .map_err(|e| anyhow::anyhow!(envelope::describe_decrypt_error(&e)))?
        .decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| anyhow::anyhow!(envelope::describe_decrypt_error(&e)))?;
    Ok((Box::new(reader), true))
}

/// The age header's recipient stanzas, by type, read without any key.
fn stanza_types(file: &Path) -> anyhow::Result<Vec<String>> {
    let mut text = Vec::new();
    open(file)?.take(64 * 1024).read_to_end(&mut text)?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("---"))
        .filter_map(|l| l.strip_prefix("-> "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

fn describe_dump(dump: &DumpFormat) -> Value {
    match dump {
        DumpFormat::PgCustom(h) => json!({
            "format": "pg_dump custom",
            "archiveVersion": format!("{}.{}.{}", h.archive_version.0, h.archive_version.1, h.archive_version.2),
            "database": h.database,
            "dumpedFrom": h.dumped_from,
            "dumpedBy": h.dumped_by,
        }),
        DumpFormat::PlainSql => json!({ "format": "SQL" }),
        DumpFormat::Unknown(seen) => json!({ "format": "unknown", "seen": seen }),
    }
}

fn inspect(file: &Path, identity: Option<&Path>, as_json: bool) -> anyhow::Result<u8> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let mut head = [0u8; 32];
    let n = open(file)?.read(&mut head)?;
    let encrypted = envelope::is_encrypted(&head[..n]);
    let mut out = json!({
        "file": file.display().to_string(),
        "sizeBytes": size,
        "encryption": if encrypted { envelope::AGE } else { envelope::NONE },
    });
    if encrypted {
        out["recipients"] = json!(stanza_types(file)?);
    }
    if encrypted && identity.is_none() {
        out["note"] = json!("encrypted: give --identity to read the Svalbard header inside");
    } else {
        let (mut reader, _) = plaintext(file, identity)?;
        let mut prefix = Vec::new();
        (&mut reader).take(256 * 1024).read_to_end(&mut prefix)?;
        match read_header(&prefix[..prefix.len().min(MAX_HEADER_FRAME)]) {
            Ok(Some((header, _))) => out["header"] = serde_json::to_value(header)?,
            Ok(None) => out["header"] = Value::Null,
            Err(e) => out["headerError"] = json!(e.to_string()),
        }
        match dumpinfo::detect(&prefix) {
            Ok(d) => {
                out["compression"] = json!(match d.container {
                    Container::Svalbard(_) | Container::Zstd => "zstd",
                    Container::Gzip => "gzip",
                    Container::Raw => "none",
                });
                out["dump"] = describe_dump(&d.dump);
            }
            Err(e) => out["dumpError"] = json!(e),
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_tree(&out, 0);
    }
    Ok(0)
}

fn print_tree(v: &Value, indent: usize) {
    let Value::Object(map) = v else { return };
    for (k, v) in map {
        match v {
            Value::Object(_) => {
                println!("{:indent$}{k}:", "");
                print_tree(v, indent + 2);
            }
            Value::Array(items) => println!(
                "{:indent$}{k}: {}",
                "",
                items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::String(s) => println!("{:indent$}{k}: {s}", ""),
            Value::Null => println!("{:indent$}{k}: -", ""),
            other => println!("{:indent$}{k}: {other}", ""),
        }
    }
}

fn file_sha256(file: &Path) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut open(file)?, &mut hasher)?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

fn verify(
    file: &Path,
    identity: Option<&Path>,
    checksum: Option<String>,
    manifest: Option<&Path>,
) -> anyhow::Result<u8> {
    let expected = match (checksum, manifest) {
        (Some(c), _) => Some(c),
        (None, Some(m)) => {
            let m: Manifest = serde_json::from_reader(open(m)?)
                .with_context(|| format!("{} is not a Svalbard manifest", m.display()))?;
            Some(m.checksum)
        }
        (None, None) => None,
    };
    let actual = file_sha256(file)?;
    match &expected {
        Some(e) if *e != actual => {
            println!("sha256: MISMATCH: the file hashes to {actual}, the backup recorded {e}");
            return Ok(1);
        }
        Some(_) => println!("sha256: ok ({actual})"),
        None => println!("sha256: {actual} (nothing to compare with: give --checksum or --manifest)"),
    }
    let (reader, encrypted) = plaintext(file, identity)?;
    match dump_bytes(reader) {
        Ok(n) => {
            if encrypted {
                println!("age: ok (every chunk authenticated)");
            }
            println!("zstd: ok ({n} bytes of dump, frame checksums match)");
            Ok(0)
        }
        Err(e) => {
            println!("content: DAMAGED: {e}");
            Ok(1)
        }
    }
}

/// Reads the whole dump out of an archive's plaintext, checking what its container checks;
/// returns its size.
fn dump_bytes(mut reader: Box<dyn Read>) -> std::io::Result<u64> {
    let mut prefix = Vec::new();
    (&mut reader).take(256 * 1024).read_to_end(&mut prefix)?;
    let detected = dumpinfo::detect(&prefix).map_err(std::io::Error::other)?;
    let mut whole = std::io::Cursor::new(prefix).chain(reader);
    let mut counted = Counter::default();
    match detected.container {
        Container::Svalbard(_) | Container::Zstd => {
            std::io::copy(&mut zstd::stream::read::Decoder::new(whole)?, &mut counted)?;
        }
        Container::Gzip => {
            std::io::copy(&mut flate2::read::MultiGzDecoder::new(whole), &mut counted)?;
        }
        Container::Raw => {
            std::io::copy(&mut whole, &mut counted)?;
        }
    }
    Ok(counted.0)
}

#[derive(Default)]
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn decrypt(file: &Path, identity: Option<&Path>, output: &Path, compressed: bool) -> anyhow::Result<u8> {
    let (reader, _) = plaintext(file, identity)?;
    if output == Path::new("-") {
        // What reaches a pipe is authenticated chunk by chunk, but whole only when the command
        // exits 0.
        let mut out = std::io::stdout().lock();
        copy_plain(reader, &mut out, compressed)
            .with_context(|| format!("{} cannot be read in full", file.display()))?;
        out.flush()?;
        return Ok(0);
    }
    // A file is written beside its destination under a temporary name, readable by its owner
    // alone, and takes its name only once complete; an error or an interruption leaves nothing.
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut partial = tempfile::Builder::new()
        .prefix(".svalbard-decrypt-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    {
        let mut out = std::io::BufWriter::new(partial.as_file_mut());
        copy_plain(reader, &mut out, compressed)
            .with_context(|| format!("{} cannot be read in full", file.display()))?;
        out.flush()?;
    }
    partial
        .persist(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(0)
}

/// The decrypted archive, or with `compressed` false the dump inside it (zstd skips the
/// Svalbard header frame), into `out`.
fn copy_plain(mut reader: Box<dyn Read>, out: &mut dyn Write, compressed: bool) -> std::io::Result<u64> {
    if compressed {
        std::io::copy(&mut reader, out)
    } else {
        std::io::copy(&mut zstd::stream::read::Decoder::new(reader)?, out)
    }
}
