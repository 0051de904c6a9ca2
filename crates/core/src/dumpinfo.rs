//! Recognising an uploaded file before restoring it: a Svalbard archive, a plain zstd or gzip
//! file, or an uncompressed dump; and inside it a `pg_dump` custom-format archive or plain SQL.
//!
//! Detection only looks at the first bytes, so a restore can be refused with a useful message
//! (which tool version can restore it) before the target database is touched and before the
//! whole file has been read.

use crate::archive::{self, ArchiveError, ArchiveHeader};

/// Leading decompressed bytes that [`sniff_dump`] needs: a custom-format header is a few
/// hundred bytes (database name and two version strings), so this leaves ample room.
pub const DUMP_PREFIX_LEN: usize = 8 * 1024;

/// Newest `pg_dump` archive format (major, minor) this code knows the header layout of. Like
/// `pg_restore`, any revision within it is accepted.
const NEWEST_ARCHIVE_VERSION: (u8, u8) = (1, 16);

/// zstd frame magic, little-endian 0xFD2FB528.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// gzip member magic; the compression method byte that follows is not checked because
/// anything starting with these two bytes is hopeless as a dump anyway.
const GZIP_MAGIC: [u8; 2] = [0x1F, 0x8B];

const PGDMP_MAGIC: &[u8; 5] = b"PGDMP";

/// How the dump is wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Container {
    /// A Svalbard archive: the header frame, then a zstd stream of the dump.
    Svalbard(ArchiveHeader),
    /// A zstd file, possibly starting with other tools' skippable frames.
    Zstd,
    Gzip,
    /// Not compressed, or compressed in a way not recognised here.
    Raw,
}

/// What kind of dump the (decompressed) bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpFormat {
    /// A `pg_dump` archive (custom format, or the `toc.dat` of a directory-format dump).
    PgCustom(PgDumpHeader),
    /// SQL text, e.g. `pg_dump` plain format, `mysqldump` or `mariadb-dump`.
    PlainSql,
    /// Neither; says what was seen instead, for the error message.
    Unknown(String),
}

/// The header of a `pg_dump` archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgDumpHeader {
    /// (major, minor, revision) of the archive format, e.g. (1, 14, 0) from `pg_dump` 12–15.
    pub archive_version: (u8, u8, u8),
    /// `pg_dump`'s archive format code: 1 custom, 3 tar, 4 null, 5 directory.
    pub format: u8,
    pub database: Option<String>,
    /// `server_version` of the server that was dumped.
    pub dumped_from: Option<String>,
    /// Version of the `pg_dump` that wrote the archive.
    pub dumped_by: Option<String>,
}

impl PgDumpHeader {
    /// Major version of the `pg_dump` that wrote the archive, e.g. 15 for
    /// `15.20 (Debian 15.20-0+deb12u1)`; 9 for `9.6.24`.
    #[must_use]
    pub fn dumped_by_major(&self) -> Option<u32> {
        self.dumped_by.as_deref().and_then(leading_major)
    }

    /// Major version of the server that was dumped.
    #[must_use]
    pub fn dumped_from_major(&self) -> Option<u32> {
        self.dumped_from.as_deref().and_then(leading_major)
    }
}

/// Recognises the container from the first bytes of a file.
///
/// `prefix` should hold [`archive::MAX_HEADER_FRAME`] bytes, or the whole file when smaller,
/// so that a Svalbard header frame is complete. Returns the container and how many leading
/// bytes to skip before the (possibly compressed) dump starts: the header frame's length for a
/// Svalbard archive, 0 otherwise.
pub fn sniff_container(prefix: &[u8]) -> Result<(Container, usize), ArchiveError> {
    if let Some((header, frame_len)) = archive::read_header(prefix)? {
        return Ok((Container::Svalbard(header), frame_len));
    }
    if prefix.starts_with(&ZSTD_MAGIC) || is_zstd_skippable_frame(prefix) {
        return Ok((Container::Zstd, 0));
    }
    if prefix.starts_with(&GZIP_MAGIC) {
        return Ok((Container::Gzip, 0));
    }
    Ok((Container::Raw, 0))
}

/// zstd reserves sixteen magic numbers, 0x184D2A50..=0x184D2A5F, for frames decoders skip; a
/// file starting with one is a valid zstd file even when the frame is not ours.
fn is_zstd_skippable_frame(prefix: &[u8]) -> bool {
    prefix.len() >= 4 && prefix[0] & 0xF0 == 0x50 && prefix[1..4] == [0x2A, 0x4D, 0x18]
}

/// Recognises the dump from its first decompressed bytes ([`DUMP_PREFIX_LEN`] is enough).
#[must_use]
pub fn sniff_dump(decompressed_prefix: &[u8]) -> DumpFormat {
    if decompressed_prefix.starts_with(PGDMP_MAGIC) {
        return sniff_pg_archive(decompressed_prefix);
    }
    if looks_like_sql(decompressed_prefix) {
        return DumpFormat::PlainSql;
    }
    DumpFormat::Unknown(describe(decompressed_prefix))
}

/// Whether `pg_restore` of major version `pg_restore_major` can read the archive; the error
/// names the version that can.
pub fn pg_restore_can_read(header: &PgDumpHeader, pg_restore_major: u32) -> Result<(), String> {
    let (vmaj, vmin, _) = header.archive_version;
    let by = header.dumped_by.as_deref().map(version_token);
    if (vmaj, vmin) > NEWEST_ARCHIVE_VERSION {
        let (newest_maj, newest_min) = NEWEST_ARCHIVE_VERSION;
        let by = by.map(|v| format!(" (dumped by pg_dump {v})")).unwrap_or_default();
        return Err(format!(
            "pg_dump archive format {vmaj}.{vmin}{by} is newer than format \
             {newest_maj}.{newest_min}, the newest this Svalbard can restore; restore it with \
             pg_restore from the same or a later PostgreSQL release than the pg_dump that wrote it"
        ));
    }
    if let (Some(by), Some(major)) = (by, header.dumped_by_major())
        && major > pg_restore_major
    {
        return Err(format!(
            "dumped by pg_dump {by}; restoring needs pg_restore {major} or later; this worker \
             has {pg_restore_major}"
        ));
    }
    // Covers archives whose version string is missing or was edited: the format itself tells
    // which release introduced it.
    if let Some(needed) = pg_restore_major_for_archive(vmaj, vmin)
        && needed > pg_restore_major
    {
        return Err(format!(
            "pg_dump archive format {vmaj}.{vmin}; restoring needs pg_restore {needed} or later; \
             this worker has {pg_restore_major}"
        ));
    }
    Ok(())
}

/// The first PostgreSQL release whose `pg_restore` reads the archive format, for the formats
/// introduced since PostgreSQL 12.
fn pg_restore_major_for_archive(vmaj: u8, vmin: u8) -> Option<u32> {
    match (vmaj, vmin) {
        (1, 14) => Some(12),
        (1, 15) => Some(16),
        (1, 16) => Some(17),
        _ => None,
    }
}

/// The version number without the packager's suffix: `15.20` of `15.20 (Debian ...)`.
fn version_token(version: &str) -> &str {
    version.split_whitespace().next().unwrap_or(version)
}

fn leading_major(version: &str) -> Option<u32> {
    let version = version.trim_start();
    let digits = version.find(|c: char| !c.is_ascii_digit()).unwrap_or(version.len());
    version[..digits].parse().ok()
}

/// Why a header could not be read; turned into the `Unknown` description.
enum HeaderError {
    Truncated,
    Invalid(String),
}

/// Reads values the way `pg_dump`'s `ReadInt` and `ReadStr` write them.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    int_size: usize,
    /// Archives before 1.1 wrote integers without the sign byte.
    signed_ints: bool,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, HeaderError> {
        let b = *self.bytes.get(self.pos).ok_or(HeaderError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, len: usize) -> Result<&[u8], HeaderError> {
        let end = self.pos.checked_add(len).ok_or(HeaderError::Truncated)?;
        let out = self.bytes.get(self.pos..end).ok_or(HeaderError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn int(&mut self) -> Result<i64, HeaderError> {
        let negative = self.signed_ints && self.byte()? != 0;
        let int_size = self.int_size;
        let mut magnitude: u64 = 0;
        for (i, &b) in self.take(int_size)?.iter().enumerate() {
            if i >= 8 {
                if b != 0 {
                    return Err(HeaderError::Invalid("an integer does not fit in 64 bits".to_owned()));
                }
                continue;
            }
            magnitude |= u64::from(b) << (8 * i);
        }
        let value = i64::try_from(magnitude)
            .map_err(|_| HeaderError::Invalid("an integer does not fit in 64 bits".to_owned()))?;
        Ok(if negative { -value } else { value })
    }

    fn string(&mut self) -> Result<Option<String>, HeaderError> {
        let len = self.int()?;
        // pg_dump writes -1 for a null string and reads any negative length as one.
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        if len > DUMP_PREFIX_LEN {
            return Err(HeaderError::Invalid(format!("a header string of {len} bytes")));
        }
        // Database names need not be UTF-8 (the server encoding may be LATIN1, say); a lossy
        // conversion is enough for display and version parsing.
        Ok(Some(String::from_utf8_lossy(self.take(len)?).into_owned()))
    }
}

fn sniff_pg_archive(bytes: &[u8]) -> DumpFormat {
    let mut r = Reader {
        bytes,
        pos: PGDMP_MAGIC.len(),
        int_size: 0,
        signed_ints: true,
    };
    let fixed = (|| {
        let vmaj = r.byte()?;
        let vmin = r.byte()?;
        let vrev = if (vmaj, vmin) > (1, 0) { r.byte()? } else { 0 };
        Ok::<_, HeaderError>((vmaj, vmin, vrev))
    })();
    let version = match fixed {
        Ok(v) => v,
        Err(e) => return unreadable_header(None, &e, bytes.len()),
    };
    let rest = read_header_after_version(&mut r, version);
    match rest {
        Ok(header) => DumpFormat::PgCustom(header),
        // A format newer than this code knows may have moved things around; keep the version,
        // which is what the refusal needs to name.
        Err(_) if (version.0, version.1) > NEWEST_ARCHIVE_VERSION => DumpFormat::PgCustom(PgDumpHeader {
            archive_version: version,
            format: 0,
            database: None,
            dumped_from: None,
            dumped_by: None,
        }),
        Err(e) => unreadable_header(Some(version), &e, bytes.len()),
    }
}

fn unreadable_header(version: Option<(u8, u8, u8)>, error: &HeaderError, len: usize) -> DumpFormat {
    let what = match version {
        Some((vmaj, vmin, _)) => format!("a pg_dump archive (format {vmaj}.{vmin})"),
        None => "a pg_dump archive".to_owned(),
    };
    DumpFormat::Unknown(match error {
        HeaderError::Truncated => format!("{what} whose header is cut off after {len} bytes"),
        HeaderError::Invalid(why) => format!("{what} with an invalid header: {why}"),
    })
}

/// The rest of `ReadHead` in `pg_backup_archiver.c`, after the version bytes.
fn read_header_after_version(r: &mut Reader<'_>, version: (u8, u8, u8)) -> Result<PgDumpHeader, HeaderError> {
    let at_least = |maj: u8, min: u8| (version.0, version.1) >= (maj, min);
    if version.0 == 0 {
        return Err(HeaderError::Invalid(format!(
            "archive format {}.{} does not exist",
            version.0, version.1
        )));
    }
    r.signed_ints = (version.0, version.1) > (1, 0);
    let int_size = usize::from(r.byte()?);
    // pg_dump's own sanity limit.
    if int_size == 0 || int_size > 32 {
        return Err(HeaderError::Invalid(format!("integer size {int_size}")));
    }
    r.int_size = int_size;
    if at_least(1, 7) {
        let _offset_size = r.byte()?;
    }
    let format = r.byte()?;
    if at_least(1, 15) {
        let _compression_algorithm = r.byte()?;
    } else if at_least(1, 4) {
        let _compression_level = r.int()?;
    } else if at_least(1, 2) {
        let _compression_level = r.byte()?;
    }
    let mut database = None;
    if at_least(1, 4) {
        // Creation time: sec, min, hour, mday, mon, year, isdst.
        for _ in 0..7 {
            r.int()?;
        }
        database = r.string()?;
    }
    let (mut dumped_from, mut dumped_by) = (None, None);
    if at_least(1, 10) {
        dumped_from = r.string()?;
        dumped_by = r.string()?;
    }
    Ok(PgDumpHeader {
        archive_version: version,
        format,
        database,
        dumped_from,
        dumped_by,
    })
}

/// Statements and psql meta-commands a SQL dump starts with once comments are left out.
const SQL_STARTS: &[&str] = &[
    "SET",
    "CREATE",
    "INSERT",
    "BEGIN",
    "SELECT",
    "DROP",
    "ALTER",
    "COPY",
    "START",
    "LOCK",
    "USE",
    "\\connect",
    "\\restrict",
];

fn looks_like_sql(bytes: &[u8]) -> bool {
    let text = leading_text(bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.trim_start();
    if text.is_empty() || !is_texty(text) {
        return false;
    }
    if text.starts_with("--") || text.starts_with("/*!") || text.starts_with("/*M!") {
        return true;
    }
    SQL_STARTS.iter().any(|kw| {
        text.get(..kw.len()).is_some_and(|head| head.eq_ignore_ascii_case(kw))
            && text[kw.len()..].starts_with(|c: char| c.is_whitespace() || c == ';')
    })
}

/// The prefix as text up to the first invalid UTF-8 sequence (the prefix may end mid-character).
fn leading_text(bytes: &[u8]) -> &str {
    let head = &bytes[..bytes.len().min(DUMP_PREFIX_LEN)];
    match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
    }
}

/// Whether the start of `text` is free of control characters other than line breaks and tabs,
/// so that binary data that happens to start with `--` is not taken for SQL.
fn is_texty(text: &str) -> bool {
    text.chars()
        .take(512)
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\u{c}'))
}

/// A short description of unrecognised bytes for an error message.
fn describe(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "an empty file".to_owned();
    }
    if bytes.starts_with(&ZSTD_MAGIC) || is_zstd_skippable_frame(bytes) {
        return "zstd-compressed data inside the compressed file".to_owned();
    }
    if bytes.starts_with(&GZIP_MAGIC) {
        return "gzip-compressed data inside the compressed file".to_owned();
    }
    if bytes.get(257..262) == Some(b"ustar") {
        return "a tar archive".to_owned();
    }
    let text = leading_text(bytes);
    let shown: String = text.chars().take(40).collect();
    if !shown.trim().is_empty() && is_texty(&shown) {
        let ellipsis = if shown.len() < bytes.len() { "…" } else { "" };
        return format!("text starting \"{}{ellipsis}\"", shown.escape_debug());
    }
    let shown = bytes.len().min(16);
    let hex: Vec<String> = bytes[..shown].iter().map(|b| format!("{b:02x}")).collect();
    let ellipsis = if shown < bytes.len() { " …" } else { "" };
    format!("binary data starting {}{ellipsis}", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use chrono::Utc;
    use uuid::Uuid;

    use super::*;

    const PG_ARGS: &[&str] = &["-h", "127.0.0.1", "-U", "postgres"];

    fn require_tool(name: &str) {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| Path::new(&dir).join(name).is_file()));
        assert!(
            found,
            "this test needs `{name}` from the PostgreSQL client tools in PATH (and a PostgreSQL \
             server on 127.0.0.1:5432 accepting user postgres without a password)"
        );
    }

    fn run(tool: &str, args: &[&str]) -> Vec<u8> {
        require_tool(tool);
        let out = Command::new(tool)
            .args(args)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn pg_dump(extra: &[&str]) -> Vec<u8> {
        let mut args = PG_ARGS.to_vec();
        args.extend_from_slice(extra);
        args.push("postgres");
        run("pg_dump", &args)
    }

    fn server_version() -> String {
        let mut args = PG_ARGS.to_vec();
        args.extend_from_slice(&["-XAtc", "show server_version"]);
        String::from_utf8(run("psql", &args)).unwrap().trim().to_owned()
    }

    /// `pg_dump --version` prints `pg_dump (PostgreSQL) 15.20 (Debian ...)`; archives hold
    /// what follows the program name.
    fn pg_dump_version() -> String {
        let out = String::from_utf8(run("pg_dump", &["--version"])).unwrap();
        out.trim()
            .strip_prefix("pg_dump (PostgreSQL) ")
            .unwrap_or_else(|| panic!("unexpected pg_dump --version output: {out}"))
            .to_owned()
    }

    fn pg_header(bytes: &[u8]) -> PgDumpHeader {
        match sniff_dump(bytes) {
            DumpFormat::PgCustom(h) => h,
            other => panic!("expected a pg_dump archive, got {other:?}"),
        }
    }

    /// How `pg_dump` writes a string with 4-byte integers.
    fn write_str(s: &str) -> Vec<u8> {
        let mut out = vec![0u8];
        out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out
    }

    fn archive_header() -> ArchiveHeader {
        ArchiveHeader {
            format_version: archive::FORMAT_VERSION,
            engine: "postgresql".to_owned(),
            engine_version: "15.20".to_owned(),
            tool_version: "15.20".to_owned(),
            tenant_id: Uuid::now_v7(),
            project_id: Uuid::now_v7(),
            planet_id: Uuid::now_v7(),
            backup_id: Uuid::now_v7(),
            created_at: Utc::now(),
        }
    }

    fn header_with(version: (u8, u8, u8), dumped_by: Option<&str>) -> PgDumpHeader {
        PgDumpHeader {
            archive_version: version,
            format: 1,
            database: Some("app".to_owned()),
            dumped_from: Some("15.20".to_owned()),
            dumped_by: dumped_by.map(str::to_owned),
        }
    }

    #[test]
    fn custom_dump_header_names_server_and_pg_dump_versions() {
        let dump = pg_dump(&["-Fc"]);
        let (container, skip) = sniff_container(&dump).unwrap();
        assert_eq!((container, skip), (Container::Raw, 0));

        let header = pg_header(&dump[..dump.len().min(DUMP_PREFIX_LEN)]);
        let server = server_version();
        let tool = pg_dump_version();
        assert_eq!(header.format, 1);
        assert_eq!(header.archive_version.0, 1);
        assert!((12..=16).contains(&header.archive_version.1), "{header:?}");
        assert_eq!(header.database.as_deref(), Some("postgres"));
        assert_eq!(header.dumped_from.as_deref(), Some(server.as_str()));
        assert_eq!(header.dumped_by.as_deref(), Some(tool.as_str()));
        assert_eq!(header.dumped_from_major(), leading_major(&server));
        let tool_major = leading_major(&tool).unwrap();
        assert_eq!(header.dumped_by_major(), Some(tool_major));

        assert_eq!(pg_restore_can_read(&header, tool_major), Ok(()));
        let err = pg_restore_can_read(&header, tool_major - 1).unwrap_err();
        assert!(
            err.contains(&format!("restoring needs pg_restore {tool_major} or later")),
            "{err}"
        );
    }

    #[test]
    fn mariadb_dumps_are_sql() {
        // Recent mariadb-dump opens with a sandbox-mode comment before its header.
        let dump = b"/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\n";
        assert_eq!(sniff_dump(dump), DumpFormat::PlainSql);
        assert_eq!(
            sniff_dump(b"-- MySQL dump 10.13  Distrib 8.0.36\n"),
            DumpFormat::PlainSql
        );
    }

    #[test]
    fn plain_dump_is_sql() {
        let dump = pg_dump(&[]);
        assert_eq!(sniff_container(&dump).unwrap(), (Container::Raw, 0));
        assert_eq!(
            sniff_dump(&dump[..dump.len().min(DUMP_PREFIX_LEN)]),
            DumpFormat::PlainSql
        );
        // The header comment is optional; the statements alone are still SQL.
        let no_comments = pg_dump(&["--no-comments"]);
        let text = String::from_utf8(no_comments).unwrap();
        let statements: String = text
            .lines()
            .filter(|l| !l.starts_with("--") && !l.trim().is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(sniff_dump(statements.as_bytes()), DumpFormat::PlainSql, "{statements}");
    }

    #[test]
    fn dump_from_a_newer_pg_dump_is_refused_naming_its_version() {
        let mut dump = pg_dump(&["-Fc"]);
        let tool = pg_dump_version();
        let server = server_version();
        let worker_major = leading_major(&tool).unwrap();
        let digits = tool.find('.').unwrap();
        assert_eq!(digits, 2, "the edit assumes a two-digit major version: {tool}");

        // Only the "dumped by" string is edited; "dumped from" may read the same.
        let mut tail = write_str(&server);
        tail.extend_from_slice(&write_str(&tool));
        let at = dump
            .windows(tail.len())
            .position(|w| w == tail.as_slice())
            .expect("the version strings in the archive header");
        let by_at = at + tail.len() - tool.len();
        dump[by_at..by_at + digits].fill(b'9');

        let header = pg_header(&dump);
        assert_eq!(header.dumped_by_major(), Some(99));
        assert_eq!(header.dumped_from.as_deref(), Some(server.as_str()));
        let err = pg_restore_can_read(&header, worker_major).unwrap_err();
        let edited = format!("99{}", &tool[digits..]);
        let edited = version_token(&edited);
        assert_eq!(
            err,
            format!(
                "dumped by pg_dump {edited}; restoring needs pg_restore 99 or later; this worker \
                 has {worker_major}"
            )
        );
    }

    #[test]
    fn zstd_compressed_dump_is_sniffed_as_zstd() {
        let dump = pg_dump(&["-Fc"]);
        let compressed = zstd::encode_all(&dump[..], 3).unwrap();
        assert_eq!(sniff_container(&compressed).unwrap(), (Container::Zstd, 0));
        let back = zstd::decode_all(&compressed[..]).unwrap();
        assert!(matches!(sniff_dump(&back), DumpFormat::PgCustom(_)));
    }

    #[test]
    fn svalbard_archive_reports_header_and_skip_length() {
        let header = archive_header();
        let mut archive = archive::encode_header(&header);
        let frame_len = archive.len();
        archive.extend_from_slice(&zstd::encode_all(&b"PGDMP\x01\x0e\x00"[..], 1).unwrap());
        let (container, skip) = sniff_container(&archive).unwrap();
        assert_eq!(container, Container::Svalbard(header));
        assert_eq!(skip, frame_len);
        assert_eq!(sniff_container(&archive[skip..]).unwrap(), (Container::Zstd, 0));
    }

    #[test]
    fn truncated_svalbard_header_is_an_error() {
        let archive = archive::encode_header(&archive_header());
        assert!(matches!(
            sniff_container(&archive[..archive.len() - 1]),
            Err(ArchiveError::Truncated { .. })
        ));
    }

    #[test]
    fn gzip_and_other_skippable_frames_are_recognised() {
        // `gzip` of an empty file.
        let gz = [
            0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00,
        ];
        assert_eq!(sniff_container(&gz).unwrap(), (Container::Gzip, 0));

        let mut foreign = 0x184D_2A5Au32.to_le_bytes().to_vec();
        foreign.extend_from_slice(&4u32.to_le_bytes());
        foreign.extend_from_slice(b"meta");
        foreign.extend_from_slice(&zstd::encode_all(&b"SET x = 1;"[..], 1).unwrap());
        assert_eq!(sniff_container(&foreign).unwrap(), (Container::Zstd, 0));
        assert_eq!(zstd::decode_all(&foreign[..]).unwrap(), b"SET x = 1;");
    }

    #[test]
    fn sql_from_other_dump_tools_is_recognised() {
        for text in [
            "-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)\n--\n",
            "-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB\n",
            "\u{feff}\n\n  -- PostgreSQL database dump\n",
            "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n",
            "begin;\ncreate table t (id int);\n",
            "INSERT INTO t VALUES (1);",
        ] {
            assert_eq!(sniff_dump(text.as_bytes()), DumpFormat::PlainSql, "{text:?}");
        }
    }

    #[test]
    fn garbage_is_unknown_naming_what_was_seen() {
        let DumpFormat::Unknown(seen) = sniff_dump(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0]) else {
            panic!("a PNG is not a dump");
        };
        assert_eq!(seen, "binary data starting 89 50 4e 47 0d 0a 1a 0a 00 00");

        let DumpFormat::Unknown(seen) = sniff_dump(b"Hello, this is not a database dump at all, sorry") else {
            panic!("prose is not a dump");
        };
        assert_eq!(seen, "text starting \"Hello, this is not a database dump at al…\"");

        assert_eq!(sniff_dump(b""), DumpFormat::Unknown("an empty file".to_owned()));
        // Binary that happens to start like a comment.
        assert!(matches!(sniff_dump(b"--\x00\x01\x02"), DumpFormat::Unknown(_)));
        let gz_in_gz = sniff_dump(&[0x1f, 0x8b, 0x08, 0x00]);
        assert!(
            matches!(&gz_in_gz, DumpFormat::Unknown(s) if s.contains("gzip")),
            "{gz_in_gz:?}"
        );
    }

    #[test]
    fn truncated_custom_header_is_unknown() {
        let dump = pg_dump(&["-Fc"]);
        for len in [5, 7, 20, 70] {
            let seen = sniff_dump(&dump[..len]);
            assert!(
                matches!(&seen, DumpFormat::Unknown(s) if s.contains("pg_dump archive") && s.contains("cut off")),
                "{len}: {seen:?}"
            );
        }
    }

    #[test]
    fn archive_formats_newer_than_known_are_refused_naming_the_format() {
        // A 1.17 header that cannot even be parsed still yields the version to refuse.
        let header = pg_header(b"PGDMP\x01\x11\x00");
        assert_eq!(header.archive_version, (1, 17, 0));
        let err = pg_restore_can_read(&header, 99).unwrap_err();
        assert!(err.contains("format 1.17") && err.contains("1.16"), "{err}");

        let err = pg_restore_can_read(&header_with((1, 17, 0), Some("19.1")), 99).unwrap_err();
        assert!(err.contains("format 1.17 (dumped by pg_dump 19.1)"), "{err}");

        // Revisions within the newest known format are fine, as they are for pg_restore.
        assert_eq!(pg_restore_can_read(&header_with((1, 16, 3), Some("17.2")), 17), Ok(()));
    }

    #[test]
    fn archive_format_alone_tells_the_needed_pg_restore() {
        let err = pg_restore_can_read(&header_with((1, 16, 0), None), 15).unwrap_err();
        assert_eq!(
            err,
            "pg_dump archive format 1.16; restoring needs pg_restore 17 or later; this worker has 15"
        );
        assert_eq!(
            pg_restore_can_read(&header_with((1, 16, 0), Some("17.2")), 15).unwrap_err(),
            "dumped by pg_dump 17.2; restoring needs pg_restore 17 or later; this worker has 15"
        );
        assert_eq!(pg_restore_can_read(&header_with((1, 14, 0), None), 15), Ok(()));
        assert_eq!(
            pg_restore_can_read(&header_with((1, 12, 0), Some("9.6.24")), 15),
            Ok(())
        );
    }

    #[test]
    fn major_versions_are_the_leading_integer() {
        let mut h = header_with((1, 14, 0), Some("15.20 (Debian 15.20-0+deb12u1)"));
        assert_eq!(h.dumped_by_major(), Some(15));
        h.dumped_by = Some("9.6.24".to_owned());
        assert_eq!(h.dumped_by_major(), Some(9));
        h.dumped_by = Some("18devel".to_owned());
        assert_eq!(h.dumped_by_major(), Some(18));
        h.dumped_by = Some("devel".to_owned());
        assert_eq!(h.dumped_by_major(), None);
        h.dumped_from = None;
        assert_eq!(h.dumped_from_major(), None);
    }

    #[test]
    fn headers_of_older_and_newer_layouts_parse() {
        // 1.12 (pg_dump 9.x): int compression level; 1.15: compression algorithm byte.
        let mut v12 = b"PGDMP\x01\x0c\x00\x04\x08\x01".to_vec();
        v12.extend_from_slice(&[1, 1, 0, 0, 0]);
        let mut v15 = b"PGDMP\x01\x0f\x00\x04\x08\x01\x01".to_vec();
        for (bytes, from) in [(&mut v12, "9.6.24"), (&mut v15, "16.4")] {
            for _ in 0..7 {
                bytes.extend_from_slice(&[0, 1, 0, 0, 0]);
            }
            bytes.extend_from_slice(&write_str("app"));
            bytes.extend_from_slice(&write_str(from));
            bytes.extend_from_slice(&[1, 1, 0, 0, 0]); // null: length -1
            let h = pg_header(bytes);
            assert_eq!(h.database.as_deref(), Some("app"));
            assert_eq!(h.dumped_from.as_deref(), Some(from));
            assert_eq!(h.dumped_by, None);
        }
    }
}

/// What an uploaded or stored file turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub container: Container,
    /// Bytes of Svalbard header before the compressed stream.
    pub skip: usize,
    pub dump: DumpFormat,
}

/// Decompresses the start of a file as far as `prefix` reaches.
#[must_use]
pub fn decompress_prefix(container: &Container, compressed: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let limit = 64 * 1024;
    match container {
        Container::Svalbard(_) | Container::Zstd => {
            if let Ok(dec) = zstd::stream::read::Decoder::new(compressed) {
                let _ = dec.take(limit).read_to_end(&mut out);
            }
        }
        Container::Gzip => {
            let _ = flate2::read::MultiGzDecoder::new(compressed)
                .take(limit)
                .read_to_end(&mut out);
        }
        Container::Raw => {
            out.extend_from_slice(&compressed[..compressed.len().min(usize::try_from(limit).unwrap_or(0))])
        }
    }
    out
}

/// Detects the container and the dump inside from the first bytes of a file. `Err` says what
/// was seen when it is not something a restore can use.
pub fn detect(prefix: &[u8]) -> Result<Detected, String> {
    let (container, skip) = sniff_container(prefix).map_err(|e| format!("not a recognised archive: {e}"))?;
    let head = decompress_prefix(&container, &prefix[skip.min(prefix.len())..]);
    match sniff_dump(&head) {
        DumpFormat::Unknown(seen) => Err(format!(
            "not a recognised archive: expected a Svalbard archive, a pg_dump custom-format file or a plain SQL dump \
             (optionally gzip- or zstd-compressed), found {seen}"
        )),
        dump => Ok(Detected { container, skip, dump }),
    }
}
