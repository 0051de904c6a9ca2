//! PostgreSQL engine helpers: server version, choice of `pg_dump`, and the dump command.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, bail};
use secrecy::{ExposeSecret as _, SecretString};

use crate::process::{ProcessStream, ToolCommand};

/// Where Debian-style packages install one folder per major version (`<root>/<major>/bin`).
pub const DEFAULT_PG_ROOTS: &[&str] = &["/usr/lib/postgresql"];

/// How to reach one PostgreSQL database.
#[derive(Debug, Clone)]
pub struct ConnParams {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<SecretString>,
    /// libpq `sslmode`: `disable`, `prefer`, `require`, `verify-full`, ...
    pub sslmode: String,
    /// The checked address to connect to (libpq `hostaddr`); `host` stays for TLS verification.
    pub hostaddr: Option<std::net::IpAddr>,
}

/// Seconds libpq waits for a connection before giving up.
const CONNECT_TIMEOUT_SECS: &str = "10";

/// Connection settings shared by every libpq client we start. The password travels in the
/// tool's own environment because argv is visible to every user of the machine; nothing else
/// of the worker's environment reaches the tool (see [`ToolCommand`]).
fn apply_conn(cmd: &mut ToolCommand, conn: &ConnParams) {
    cmd.arg("--host")
        .arg(&conn.host)
        .arg("--port")
        .arg(conn.port.to_string())
        .arg("--username")
        .arg(&conn.user)
        // A bare database name containing `=` or a URI prefix would be read by libpq as a
        // connection string; quoting it inside one keeps tenant input a plain name.
        .arg("--dbname")
        .arg(format!("dbname={}", conninfo_quote(&conn.database)))
        .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT_SECS)
        .env("PGAPPNAME", "svalbard-worker")
        .host(&conn.host);
    if let Some(addr) = conn.hostaddr {
        cmd.env("PGHOSTADDR", addr.to_string());
    }
    if !conn.sslmode.is_empty() {
        cmd.env("PGSSLMODE", &conn.sslmode);
    }
    if let Some(pw) = &conn.password {
        cmd.env("PGPASSWORD", pw.expose_secret());
        for (key, value) in password_guard(&conn.sslmode) {
            cmd.env(key, value);
        }
    }
}

/// Settings that keep libpq from handing the planet's password to a server that asks for it in
/// clear text or as an MD5 hash.
///
/// - `PGREQUIREAUTH` (libpq 16 and later): refuse the `password` and `md5` methods; SCRAM,
///   certificates, GSS and servers that ask for nothing still work. libpq 15 ignores the
///   variable: it has no way to refuse a method by name.
/// - `PGCHANNELBINDING=require` (libpq 13 and later), when TLS is required but the server's
///   certificate is not verified (`require`): only SCRAM with channel binding is accepted, so
///   a machine in the middle that terminates TLS cannot ask for the password. It needs TLS and
///   SCRAM on the server, which `require` promises the first of; with `verify-ca` and
///   `verify-full` the server is already authenticated by its certificate.
fn password_guard(sslmode: &str) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![("PGREQUIREAUTH", "!password,!md5")];
    if sslmode == "require" {
        out.push(("PGCHANNELBINDING", "require"));
    }
    out
}

/// Quotes a value for a libpq connection string.
fn conninfo_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Asks for the server's version: `server_version_num|server_version`.
pub const VERSION_QUERY: &str =
    "SELECT current_setting('server_version_num') || '|' || current_setting('server_version')";

/// The server's major version and full version string, asked in `conn.database`.
pub async fn server_version(conn: &ConnParams) -> anyhow::Result<(u32, String)> {
    let out = psql(conn, VERSION_QUERY)
        .await
        .context("cannot query the server's version")?;
    parse_server_version(&out)
}

/// The server's major version and full version string (`15.20 (Debian 15.20-0+deb12u1)`), from
/// the answer to [`VERSION_QUERY`].
pub fn parse_server_version(out: &str) -> anyhow::Result<(u32, String)> {
    let Some((num, full)) = out.split_once('|') else {
        bail!("unexpected answer of psql to the version query: {out:?}");
    };
    let num: u32 = num
        .trim()
        .parse()
        .with_context(|| format!("unexpected server_version_num {num:?}"))?;
    Ok((major_of_version_num(num), full.trim().to_owned()))
}

/// Since 10 the major version is the first number. Servers before 10 (9.6 is 90600) all count
/// as 9: any `pg_dump` from 10 on dumps them.
fn major_of_version_num(num: u32) -> u32 {
    num / 10_000
}

/// The installed `pg_dump` to use for a server: the lowest major version not older than the
/// server (`pg_dump` refuses newer servers, and the oldest fitting one writes dumps that the
/// most `pg_restore` versions read). Returns its path and its version (`15.20`).
pub fn find_pg_dump(roots: &[String], server_major: u32) -> anyhow::Result<(PathBuf, String)> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else { continue };
        for entry in entries.flatten() {
            let Some(major) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let bin = entry.path().join("bin").join("pg_dump");
            if bin.is_file() {
                found.push((major, bin));
            }
        }
    }
    found.sort();
    let mut seen: Vec<String> = Vec::new();
    for (major, bin) in found.iter().filter(|(m, _)| *m >= server_major) {
        match tool_version(bin) {
            Ok((_, version)) => return Ok((bin.clone(), version)),
            Err(e) => seen.push(format!("{} ({major}, unusable: {e:#})", bin.display())),
        }
    }
    seen.extend(
        found
            .iter()
            .filter(|(m, _)| *m < server_major)
            .map(|(m, b)| format!("{} ({m})", b.display())),
    );

    match tool_version(Path::new("pg_dump")) {
        Ok((major, version)) if major >= server_major => {
            return Ok((which("pg_dump").unwrap_or_else(|| PathBuf::from("pg_dump")), version));
        }
        Ok((_, version)) => seen.push(format!("pg_dump {version} on PATH")),
        Err(_) => seen.push("no pg_dump on PATH".to_owned()),
    }
    bail!(
        "no pg_dump for PostgreSQL server version {server_major} (version {server_major} or newer is needed); found: {}",
        if seen.is_empty() {
            "nothing".to_owned()
        } else {
            seen.join(", ")
        }
    )
}

/// Major version and version string of a PostgreSQL client tool, from `--version`
/// (`pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)` gives 15 and `15.20`).
fn tool_version(bin: &Path) -> anyhow::Result<(u32, String)> {
    let mut cmd = ToolCommand::new(bin);
    cmd.arg("--version");
    let out = cmd
        .output_blocking()
        .with_context(|| format!("cannot run {} --version", bin.display()))?;
    parse_tool_version(&String::from_utf8_lossy(&out))
}

fn parse_tool_version(text: &str) -> anyhow::Result<(u32, String)> {
    let version = text
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .with_context(|| format!("no version in {text:?}"))?;
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    let first: u32 = digits.parse().with_context(|| format!("bad version {version:?}"))?;
    Ok((first, version.to_owned()))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `pg_dump` in custom format without its own compression (zstd does that, much faster),
/// stdout and stderr piped, killed when dropped.
pub fn dump_command(bin: &Path, conn: &ConnParams) -> ToolCommand {
    let mut cmd = ToolCommand::new(bin);
    cmd.args(["--format=custom", "--compress=0", "--no-password"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    apply_conn(&mut cmd, conn);
    cmd
}

/// `pg_restore` of a custom-format dump read from stdin into `conn.database`, in one
/// transaction that rolls back on the first error, so a failed restore leaves the target as it was.
pub fn restore_command(bin: &Path, conn: &ConnParams) -> ToolCommand {
    let mut cmd = ToolCommand::new(bin);
    cmd.args([
        "--single-transaction",
        "--exit-on-error",
        "--no-owner",
        "--no-privileges",
        "--no-password",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    apply_conn(&mut cmd, conn);
    cmd.stdin(Stdio::piped());
    cmd
}

/// `pg_restore --list` reading a custom-format dump from stdin: reads the whole archive's table
/// of contents, so a damaged archive fails here, before any target is touched.
pub fn list_command(bin: &Path) -> ToolCommand {
    let mut cmd = ToolCommand::new(bin);
    cmd.arg("--list")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// `psql` loading a plain SQL dump from stdin in one transaction that stops at the first error.
///
/// The dump is read through `-f -`, not as bare stdin: psql applies `--single-transaction` only
/// to `-c` and `-f`, so without it a failed load would leave its first half behind. The stream
/// must start with [`restrict_prologue`], so that none of psql's own commands (`\!`, `\o |`,
/// `\copy … program`, `\connect`, backticks, ...) can run: a dump is data, and the worker that
/// reads it holds the platform's secrets.
pub fn sql_restore_command(psql: &Path, conn: &ConnParams) -> ToolCommand {
    let mut cmd = ToolCommand::new(psql);
    cmd.args([
        "--no-psqlrc",
        "--quiet",
        "--single-transaction",
        "--no-password",
        "--set=ON_ERROR_STOP=1",
        "--file=-",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    apply_conn(&mut cmd, conn);
    cmd.stdin(Stdio::piped());
    cmd
}

/// The `psql` that loads plain SQL: the one beside the chosen `pg_restore`, else the one on PATH.
#[must_use]
pub fn psql_beside(pg_restore: &Path) -> PathBuf {
    let beside = pg_restore.with_file_name("psql");
    if beside.is_file() {
        beside
    } else {
        which("psql").unwrap_or_else(|| PathBuf::from("psql"))
    }
}

/// The first release of each major version whose psql has `\restrict` (August 2025); every
/// major version after 17 has it from the start.
const RESTRICT_SINCE: &[(u32, u32)] = &[(13, 22), (14, 19), (15, 14), (16, 10), (17, 6)];

/// Whether a psql of `version` (`15.20`, `18.1`, `17beta1`) has restricted mode.
#[must_use]
pub fn psql_can_restrict(version: &str) -> bool {
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let Some(major) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    if major > 17 {
        return true;
    }
    RESTRICT_SINCE
        .iter()
        .any(|&(m, since)| m == major && minor >= since && version.contains('.'))
}

/// Checks that `psql` can load plain SQL safely: Err names what is missing.
pub fn check_psql(psql: &Path) -> Result<(), String> {
    let (_, version) = tool_version(psql).map_err(|e| format!("plain SQL needs psql, which cannot run: {e:#}"))?;
    if psql_can_restrict(&version) {
        Ok(())
    } else {
        Err(format!(
            "restoring plain SQL needs a psql with restricted mode (\\restrict: 13.22, 14.19, 15.14, 16.10, 17.6 \
             or later); this worker has psql {version}; upload a custom-format dump (pg_dump -Fc) instead"
        ))
    }
}

/// A random key for `\restrict`: 40 letters and digits from the thread's CSPRNG, new for every
/// load, so that a dump cannot contain the `\unrestrict` that ends restricted mode.
#[must_use]
pub fn restrict_key() -> String {
    use rand::Rng as _;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// What psql reads before the dump: restricted mode, left only by a key the dump cannot know.
#[must_use]
pub fn restrict_prologue(key: &str) -> Vec<u8> {
    format!("\\restrict {key}\n").into_bytes()
}

/// The longest line judged as a possible `\restrict` / `\unrestrict` line of the dump itself.
const META_LINE: usize = 512;

/// Removes the dump's own `\restrict KEY` and `\unrestrict KEY` lines (pg_dump writes them
/// into plain dumps since the releases in [`RESTRICT_SINCE`]): under the worker's restricted
/// mode psql would refuse the first and fail on the second. Nothing else is changed. Removing
/// lines can only take commands away, and the worker's own key never appears in the output,
/// so a dump stays restricted whatever it contains.
#[derive(Default)]
pub struct MetaFilter {
    state: LineState,
}

#[derive(Default)]
enum LineState {
    /// At the start of a line.
    #[default]
    Start,
    /// A line starting with a backslash, kept until it ends or grows too long to be one of ours.
    Held(Vec<u8>),
    /// Inside a line that is passed on as it is.
    Pass,
}

impl MetaFilter {
    /// Filters one chunk of the dump into `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match &mut self.state {
                LineState::Pass => match input.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        out.extend_from_slice(&input[..=i]);
                        input = &input[i + 1..];
                        self.state = LineState::Start;
                    }
                    None => {
                        out.extend_from_slice(input);
                        return;
                    }
                },
                LineState::Start => {
                    self.state = if input[0] == b'\\' {
                        LineState::Held(Vec::new())
                    } else {
                        LineState::Pass
                    };
                }
                LineState::Held(held) => {
                    let room = META_LINE.saturating_sub(held.len());
                    match input.iter().take(room).position(|&b| b == b'\n') {
                        Some(i) => {
                            held.extend_from_slice(&input[..i]);
                            if !is_restrict_line(held) {
                                out.extend_from_slice(held);
                                out.push(b'\n');
                            }
                            input = &input[i + 1..];
                            self.state = LineState::Start;
                        }
                        None if input.len() < room => {
                            held.extend_from_slice(input);
                            return;
                        }
                        None => {
                            out.extend_from_slice(held);
                            self.state = LineState::Pass;
                        }
                    }
                }
            }
        }
    }

    /// The end of the dump: a held last line without a newline.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let LineState::Held(held) = std::mem::take(&mut self.state)
            && !is_restrict_line(&held)
        {
            out.extend_from_slice(&held);
        }
    }
}

fn is_restrict_line(line: &[u8]) -> bool {
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    matches!(words.next(), Some("\\restrict" | "\\unrestrict"))
        && words
            .next()
            .is_some_and(|k| k.chars().all(|c| c.is_ascii_alphanumeric()))
        && words.next().is_none()
}

/// The newest installed `pg_restore` (it reads the most archive versions): path, major, version.
pub fn find_pg_restore(roots: &[String]) -> anyhow::Result<(PathBuf, u32, String)> {
    let mut best: Option<(u32, PathBuf, String)> = None;
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else { continue };
        for entry in entries.flatten() {
            let bin = entry.path().join("bin").join("pg_restore");
            if let Ok((major, version)) = tool_version(&bin)
                && best.as_ref().is_none_or(|(m, _, _)| major > *m)
            {
                best = Some((major, bin, version));
            }
        }
    }
    if best.is_none()
        && let Ok((major, version)) = tool_version(Path::new("pg_restore"))
    {
        best = Some((
            major,
            which("pg_restore").unwrap_or_else(|| PathBuf::from("pg_restore")),
            version,
        ));
    }
    best.map(|(m, p, v)| (p, m, v)).context("no pg_restore is installed")
}

/// Runs one SQL statement with psql and returns its unaligned, tuples-only output.
pub async fn psql(conn: &ConnParams, sql: &str) -> anyhow::Result<String> {
    let mut cmd = ToolCommand::new("psql");
    cmd.args([
        "--no-psqlrc",
        "--no-align",
        "--tuples-only",
        "--no-password",
        "-v",
        "ON_ERROR_STOP=1",
        "--command",
        sql,
    ]);
    apply_conn(&mut cmd, conn);
    let target = format!("PostgreSQL at {}:{} (database {})", conn.host, conn.port, conn.database);
    crate::process::run_client(cmd, "psql", &target).await
}

/// Rows of every table of the database, as one JSON object `{"schema.table": rows}`: counted
/// exactly, table by table, in the statement's snapshot.
pub const TABLE_COUNTS_QUERY: &str = "SELECT COALESCE(json_object_agg(schemaname || '.' || tablename,
        (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', schemaname, tablename),
                                              false, true, '')))[1]::text::bigint), '{}')
     FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')";

/// Parses the answer of [`TABLE_COUNTS_QUERY`].
pub fn parse_table_counts(out: &str) -> anyhow::Result<svalbard_core::verification::TableCounts> {
    serde_json::from_str(out.trim()).with_context(|| format!("unexpected answer to the table count: {out:.200}"))
}

/// The line that ends the answer of [`SnapshotSession::count_tables`].
const COUNT_END: &str = "svb-count-end";

/// A `psql` session holding a repeatable-read transaction open whose snapshot `pg_dump` takes
/// over (`--snapshot`): what the session counts is exactly what the dump holds, whatever is
/// written to the source meanwhile. The session ends (and the snapshot with it) when dropped.
pub struct SnapshotSession {
    running: crate::process::Running,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// The snapshot's name, for `pg_dump --snapshot`.
    pub snapshot: String,
}

impl SnapshotSession {
    /// Opens the transaction and exports its snapshot.
    pub async fn open(conn: &ConnParams) -> anyhow::Result<Self> {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let mut cmd = ToolCommand::new("psql");
        cmd.args(["--no-psqlrc", "--no-align", "--tuples-only", "--quiet", "--no-password"]);
        apply_conn(&mut cmd, conn);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut running = cmd.spawn().context("cannot start psql")?;
        let mut stdin = running.child.stdin.take().context("no stdin")?;
        let stdout = running.child.stdout.take().context("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        // A backup that stops kills this session; the server ends a count it is running at
        // once only if it checks for its client meanwhile (PostgreSQL 14 and later; on older
        // servers the setting is refused and the count runs to its end).
        stdin
            .write_all(
                b"SET client_connection_check_interval = '1s';\n\
                  BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSELECT pg_export_snapshot();\n",
            )
            .await?;
        stdin.flush().await?;
        let snapshot = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .context("the server did not export a snapshot in time")??
            .context("the session ended before exporting a snapshot")?;
        let snapshot = snapshot.trim().to_owned();
        if snapshot.is_empty() || !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            bail!("unexpected snapshot name {snapshot:?}");
        }
        Ok(Self {
            running,
            stdin,
            lines,
            snapshot,
        })
    }

    /// Counts the rows of every table in the snapshot. The count runs in a savepoint: a table
    /// it may not read fails the count, never the transaction whose snapshot the dump takes over
    /// (an error there would end the snapshot under the dump).
    pub async fn count_tables(&mut self) -> anyhow::Result<svalbard_core::verification::TableCounts> {
        use tokio::io::AsyncWriteExt as _;
        let script = format!(
            "SAVEPOINT svb_count;\n{};\nROLLBACK TO SAVEPOINT svb_count;\nSELECT '{COUNT_END}';\n",
            TABLE_COUNTS_QUERY.replace('\n', " ")
        );
        self.stdin.write_all(script.as_bytes()).await?;
        self.stdin.flush().await?;
        let deadline = tokio::time::Instant::now() + self.running.deadline;
        let mut answer = None;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .context("counting the tables took too long")??
                .context("the session ended while counting the tables")?;
            if line.trim() == COUNT_END {
                break;
            }
            answer = Some(line);
        }
        parse_table_counts(&answer.context("the tables could not be counted")?)
    }
}

/// Quotes an SQL identifier.
#[must_use]
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
#[must_use]
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Starts [`dump_command`]; its output ends in an error if `pg_dump` fails.
pub fn spawn_dump(bin: &Path, conn: &ConnParams) -> anyhow::Result<ProcessStream> {
    ProcessStream::spawn(dump_command(bin, conn), "pg_dump")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers() {
        assert_eq!(major_of_version_num(150_020), 15);
        assert_eq!(major_of_version_num(170_000), 17);
        assert_eq!(major_of_version_num(90_624), 9);
        assert_eq!(
            parse_tool_version("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n").unwrap(),
            (15, "15.20".to_owned())
        );
        assert_eq!(
            parse_tool_version("pg_dump (PostgreSQL) 17beta1").unwrap(),
            (17, "17beta1".to_owned())
        );
        assert!(parse_tool_version("nonsense").is_err());
    }

    #[test]
    fn database_names_stay_names() {
        assert_eq!(conninfo_quote("app"), "'app'");
        assert_eq!(conninfo_quote("host=evil dbname=x"), "'host=evil dbname=x'");
        assert_eq!(conninfo_quote(r"it's\"), r"'it\'s\\'");
    }

    #[test]
    fn password_is_never_an_argument() {
        let conn = ConnParams {
            host: "db.example".to_owned(),
            port: 5433,
            database: "app".to_owned(),
            user: "backup".to_owned(),
            password: Some(SecretString::from("s3cret")),
            sslmode: "require".to_owned(),
            hostaddr: None,
        };
        let cmd = dump_command(Path::new("/usr/bin/pg_dump"), &conn);
        let std = cmd.as_std();
        let args: Vec<_> = std.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(!args.iter().any(|a| a.contains("s3cret")), "{args:?}");
        assert!(args.contains(&"--format=custom".to_owned()) && args.contains(&"--compress=0".to_owned()));
        let env: Vec<_> = std
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(env.contains(&("PGPASSWORD".to_owned(), Some("s3cret".to_owned()))));
        assert!(env.contains(&("PGSSLMODE".to_owned(), Some("require".to_owned()))));
        assert!(env.contains(&("PGCONNECT_TIMEOUT".to_owned(), Some("10".to_owned()))));
    }

    #[test]
    fn restricted_mode_is_known_by_release() {
        for yes in ["15.14", "15.20", "14.19", "13.22", "16.10", "17.6", "18.0", "19beta1"] {
            assert!(psql_can_restrict(yes), "{yes}");
        }
        for no in ["15.13", "14.18", "16.9", "17.5", "12.22", "17beta1", "nonsense"] {
            assert!(!psql_can_restrict(no), "{no}");
        }
        let a = restrict_key();
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, restrict_key());
        assert_eq!(restrict_prologue("k"), b"\\restrict k\n");
    }

    fn filtered(chunks: &[&[u8]]) -> String {
        let mut f = MetaFilter::default();
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_dumps_own_restrict_lines_go_and_nothing_else_changes() {
        let dump = "--\n\\restrict AbC123\n\nSET x = 1;\nCOPY t FROM stdin;\n1\t\\\\restrict x\n\\.\n\
                    \\unrestrict AbC123\n\\! touch /tmp/x\n\\unrestrict bad-key\n\\restrict a b\nlast";
        let want = "--\n\nSET x = 1;\nCOPY t FROM stdin;\n1\t\\\\restrict x\n\\.\n\\! touch /tmp/x\n\
                    \\unrestrict bad-key\n\\restrict a b\nlast";
        assert_eq!(filtered(&[dump.as_bytes()]), want);
        // Split anywhere, the result is the same.
        let bytes = dump.as_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(filtered(&[&bytes[..cut], &bytes[cut..]]), want, "cut at {cut}");
        }
        let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(filtered(&one_by_one), want);
        // A long line that starts with a backslash passes whole.
        let long = format!("\\{}\nx\n", "a".repeat(5000));
        assert_eq!(filtered(&[long.as_bytes()]), long);
        assert_eq!(filtered(&[b"\\unrestrict K"]), "");
    }

    #[test]
    fn the_password_is_guarded() {
        let conn = ConnParams {
            host: "db.example".to_owned(),
            port: 5432,
            database: "app".to_owned(),
            user: "backup".to_owned(),
            password: Some(SecretString::from("s3cret")),
            sslmode: "require".to_owned(),
            hostaddr: None,
        };
        let envs = |c: &ConnParams| -> Vec<(String, String)> {
            dump_command(Path::new("pg_dump"), c)
                .as_std()
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_string_lossy().into_owned(), v?.to_string_lossy().into_owned())))
                .collect()
        };
        let e = envs(&conn);
        assert!(e.contains(&("PGREQUIREAUTH".into(), "!password,!md5".into())), "{e:?}");
        assert!(e.contains(&("PGCHANNELBINDING".into(), "require".into())), "{e:?}");
        let e = envs(&ConnParams {
            sslmode: "verify-full".into(),
            ..conn.clone()
        });
        assert!(!e.iter().any(|(k, _)| k == "PGCHANNELBINDING"), "{e:?}");
        let e = envs(&ConnParams { password: None, ..conn });
        assert!(
            !e.iter().any(|(k, _)| k == "PGREQUIREAUTH" || k == "PGPASSWORD"),
            "{e:?}"
        );
    }

    #[test]
    fn finds_installed_pg_dump_for_this_server() {
        let roots: Vec<String> = DEFAULT_PG_ROOTS.iter().map(|s| (*s).to_owned()).collect();
        let (bin, version) = find_pg_dump(&roots, 9).unwrap();
        assert!(bin.ends_with("pg_dump"), "{}", bin.display());
        assert!(version.starts_with(|c: char| c.is_ascii_digit()), "{version}");
        let err = find_pg_dump(&roots, 99).unwrap_err().to_string();
        assert!(err.contains("server version 99") && err.contains("found"), "{err}");
    }
}
