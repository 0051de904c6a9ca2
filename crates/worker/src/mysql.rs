//! MySQL and MariaDB: `mariadb-dump` / `mysqldump` and the `mariadb` / `mysql` client, whichever
//! is installed. The password travels in `MYSQL_PWD`, never on the command line.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};

use crate::process::ToolCommand;

#[derive(Debug, Clone)]
pub struct ConnParams {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<SecretString>,
    /// PostgreSQL-style mode, mapped to the client's TLS options.
    pub sslmode: String,
    /// The checked address to connect to; the client has no separate name for TLS, so this
    /// replaces `host` on the command line.
    pub hostaddr: Option<std::net::IpAddr>,
}

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names
        .iter()
        .find_map(|n| std::env::split_paths(&path).map(|d| d.join(n)).find(|p| p.is_file()))
}

/// The dump tool: `mariadb-dump`, else `mysqldump`.
pub fn dump_tool() -> anyhow::Result<PathBuf> {
    which(&["mariadb-dump", "mysqldump"]).context("neither mariadb-dump nor mysqldump is installed")
}

/// The client: `mariadb`, else `mysql`.
pub fn client_tool() -> anyhow::Result<PathBuf> {
    which(&["mariadb", "mysql"]).context("neither the mariadb nor the mysql client is installed")
}

/// `--version` of a tool, e.g. `mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, ...` → `10.11.19-MariaDB`.
pub fn tool_version(bin: &Path) -> anyhow::Result<String> {
    let mut cmd = ToolCommand::new(bin);
    cmd.arg("--version");
    let out = cmd.output_blocking()?;
    let text = String::from_utf8_lossy(&out);
    Ok(text
        .split_once("Distrib ")
        .map(|(_, rest)| rest.split([',', ' ']).next().unwrap_or_default().to_owned())
        .or_else(|| text.split_whitespace().nth(2).map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned()))
}

/// Connection options shared by every MariaDB tool. Option files come first on the command
/// line or not at all, so every builder starts with `--no-defaults` before calling this.
fn apply_conn(cmd: &mut ToolCommand, conn: &ConnParams) {
    let host = conn.hostaddr.map_or_else(|| conn.host.clone(), |a| a.to_string());
    cmd.arg(format!("--host={host}"))
        .arg(format!("--port={}", conn.port))
        .arg(format!("--user={}", conn.user))
        .arg("--protocol=TCP")
        .host(&host);
    cmd.args(tls_args(&conn.sslmode));
    if let Some(p) = &conn.password {
        cmd.env("MYSQL_PWD", p.expose_secret());
    }
}

/// The client's TLS options for a PostgreSQL-style `sslmode`. The MariaDB 10.x client's `--ssl`
/// uses TLS when the server offers it and goes on without it otherwise, which is what `allow`
/// and `prefer` mean. It has no option that insists on TLS without checking the certificate, so
/// `require` verifies the certificate too (as `verify-ca` and `verify-full` do): a server
/// without TLS, or with a certificate the worker's trust store does not accept, is refused
/// rather than sent the password in clear text.
fn tls_args(sslmode: &str) -> &'static [&'static str] {
    match sslmode {
        "disable" => &["--skip-ssl"],
        "allow" | "prefer" | "" => &["--ssl"],
        _ => &["--ssl", "--ssl-verify-server-cert"],
    }
}

/// A consistent dump of one InnoDB database, with routines, triggers and events, restorable
/// under another name (no `CREATE DATABASE` in it).
pub fn dump_command(bin: &Path, conn: &ConnParams) -> ToolCommand {
    let mut cmd = ToolCommand::new(bin);
    cmd.arg("--no-defaults");
    apply_conn(&mut cmd, conn);
    cmd.args([
        "--single-transaction",
        "--quick",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--default-character-set=utf8mb4",
        "--no-tablespaces",
        "--skip-lock-tables",
    ])
    .arg("--")
    .arg(&conn.database)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// The client reading SQL from stdin into `conn.database`, stopping at the first error.
///
/// A dump is data: `--binary-mode` turns off every client command in piped input except
/// `DELIMITER` and `\C` (so no `\!`, `system`, `source`, `tee`, `connect` to another host),
/// and `--sandbox` refuses whatever would still reach the worker's file system.
pub fn restore_command(bin: &Path, conn: &ConnParams) -> ToolCommand {
    let mut cmd = ToolCommand::new(bin);
    cmd.arg("--no-defaults");
    apply_conn(&mut cmd, conn);
    cmd.args([
        "--connect-timeout=10",
        "--default-character-set=utf8mb4",
        "--batch",
        "--binary-mode",
        "--sandbox",
        // LOAD DATA LOCAL lets the server (or the dump) name a file of the worker to send.
        "--local-infile=0",
    ])
    .arg(format!("--database={}", conn.database))
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

/// Runs SQL and returns tab-separated rows without headers.
pub async fn query(conn: &ConnParams, database: Option<&str>, sql: &str) -> anyhow::Result<String> {
    let mut cmd = ToolCommand::new(client_tool()?);
    cmd.arg("--no-defaults");
    apply_conn(&mut cmd, conn);
    cmd.args([
        "--connect-timeout=10",
        "--batch",
        "--skip-column-names",
        "--sandbox",
        "--local-infile=0",
        "--execute",
        sql,
    ]);
    if let Some(db) = database {
        cmd.arg(format!("--database={db}"));
    }
    let target = format!("MySQL at {}:{}", conn.host, conn.port);
    crate::process::run_client(cmd, "the mariadb client", &target).await
}

/// Quotes an identifier.
#[must_use]
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a string literal.
#[must_use]
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The leading `major.minor` of a server version such as `10.11.19-MariaDB-0+deb12u1`.
#[must_use]
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The server version a SQL dump was taken from, from its header comments
/// (`-- Server version\t10.11.19-MariaDB-...`).
#[must_use]
pub fn dumped_from(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&head[..head.len().min(4096)]);
    text.lines()
        .find_map(|l| l.strip_prefix("-- Server version"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_quoting() {
        assert_eq!(major_minor("10.11.19-MariaDB-0+deb12u1"), Some((10, 11)));
        assert_eq!(major_minor("8.0.36"), Some((8, 0)));
        assert_eq!(
            dumped_from(
                b"-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\n--\n-- Server version\t10.11.19-MariaDB-0+deb12u1\n"
            ),
            Some("10.11.19-MariaDB-0+deb12u1".into())
        );
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn password_is_never_an_argument() {
        let conn = ConnParams {
            host: "db".into(),
            port: 3306,
            database: "app".into(),
            user: "u".into(),
            password: Some(SecretString::from("s3cret")),
            sslmode: "disable".into(),
            hostaddr: None,
        };
        let cmd = dump_command(Path::new("/usr/bin/mariadb-dump"), &conn);
        let args: Vec<String> = cmd
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!args.iter().any(|a| a.contains("s3cret")));
        assert!(args.contains(&"--single-transaction".to_owned()) && args.contains(&"--routines".to_owned()));
    }

    #[test]
    fn tls_when_offered_and_verified_when_required() {
        assert_eq!(tls_args("disable"), ["--skip-ssl"]);
        assert_eq!(tls_args("prefer"), ["--ssl"]);
        assert_eq!(tls_args("allow"), ["--ssl"]);
        for strict in ["require", "verify-ca", "verify-full"] {
            assert_eq!(tls_args(strict), ["--ssl", "--ssl-verify-server-cert"], "{strict}");
        }
        let conn = ConnParams {
            host: "db".into(),
            port: 3306,
            database: "app".into(),
            user: "u".into(),
            password: None,
            sslmode: "prefer".into(),
            hostaddr: None,
        };
        let args: Vec<String> = restore_command(Path::new("mariadb"), &conn)
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[0], "--no-defaults");
        assert!(args.contains(&"--sandbox".to_owned()) && args.contains(&"--binary-mode".to_owned()));
        assert!(args.contains(&"--local-infile=0".to_owned()), "{args:?}");
    }
}
