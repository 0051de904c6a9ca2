//! PostgreSQL engine helpers: server version, choice of `pg_dump`, and the dump command.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, bail};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::process::Command;

use crate::process::ProcessStream;

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
/// environment because argv is visible to every user of the machine.
fn apply_conn(cmd: &mut Command, conn: &ConnParams) {
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
        // Inherited settings meant for the control database must not reach a tenant's server.
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS")
        .env_remove("PGDATABASE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match conn.hostaddr {
        Some(addr) => cmd.env("PGHOSTADDR", addr.to_string()),
        None => cmd.env_remove("PGHOSTADDR"),
    };
    if conn.sslmode.is_empty() {
        cmd.env_remove("PGSSLMODE");
    } else {
        cmd.env("PGSSLMODE", &conn.sslmode);
    }
    match &conn.password {
        Some(pw) => cmd.env("PGPASSWORD", pw.expose_secret()),
        None => cmd.env_remove("PGPASSWORD"),
    };
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

/// The server's major version and full version string (`15.20 (Debian 15.20-0+deb12u1)`).
pub async fn server_version(conn: &ConnParams) -> anyhow::Result<(u32, String)> {
    let out = psql(
        conn,
        "SELECT current_setting('server_version_num') || '|' || current_setting('server_version')",
    )
    .await
    .context("cannot query the server's version")?;
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
    let out = std::process::Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !out.status.success() {
        bail!("{} --version failed", bin.display());
    }
    parse_tool_version(&String::from_utf8_lossy(&out.stdout))
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
pub fn dump_command(bin: &Path, conn: &ConnParams) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["--format=custom", "--compress=0", "--no-password"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    apply_conn(&mut cmd, conn);
    cmd
}

/// `pg_restore` of a custom-format dump read from stdin into `conn.database`, in one
/// transaction that rolls back on the first error, so a failed restore leaves the target as it was.
pub fn restore_command(bin: &Path, conn: &ConnParams) -> Command {
    let mut cmd = Command::new(bin);
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
pub fn list_command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--list")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// `psql` loading a plain SQL dump from stdin in one transaction that stops at the first error.
pub fn sql_restore_command(conn: &ConnParams) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args([
        "--no-psqlrc",
        "--quiet",
        "--single-transaction",
        "--no-password",
        "-v",
        "ON_ERROR_STOP=1",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    apply_conn(&mut cmd, conn);
    cmd.stdin(Stdio::piped());
    cmd
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
    let mut cmd = Command::new("psql");
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
    fn finds_installed_pg_dump_for_this_server() {
        let roots: Vec<String> = DEFAULT_PG_ROOTS.iter().map(|s| (*s).to_owned()).collect();
        let (bin, version) = find_pg_dump(&roots, 9).unwrap();
        assert!(bin.ends_with("pg_dump"), "{}", bin.display());
        assert!(version.starts_with(|c: char| c.is_ascii_digit()), "{version}");
        let err = find_pg_dump(&roots, 99).unwrap_err().to_string();
        assert!(err.contains("server version 99") && err.contains("found"), "{err}");
    }
}
