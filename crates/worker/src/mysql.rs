//! MySQL and MariaDB: `mariadb-dump` / `mysqldump` and the `mariadb` / `mysql` client, whichever
//! is installed. The password travels in `MYSQL_PWD`, never on the command line.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::process::Command;

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
    let out = std::process::Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_once("Distrib ")
        .map(|(_, rest)| rest.split([',', ' ']).next().unwrap_or_default().to_owned())
        .or_else(|| text.split_whitespace().nth(2).map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned()))
}

fn apply_conn(cmd: &mut Command, conn: &ConnParams) {
    let host = conn.hostaddr.map_or_else(|| conn.host.clone(), |a| a.to_string());
    cmd.arg(format!("--host={host}"))
        .arg(format!("--port={}", conn.port))
        .arg(format!("--user={}", conn.user))
        .arg("--protocol=TCP")
        .env_remove("MYSQL_HOST")
        .env_remove("MYSQL_TCP_PORT")
        .kill_on_drop(true);
    match conn.sslmode.as_str() {
        "disable" | "allow" | "prefer" | "" => cmd.arg("--skip-ssl"),
        "verify-full" => cmd.args(["--ssl", "--ssl-verify-server-cert"]),
        _ => cmd.arg("--ssl"),
    };
    match &conn.password {
        Some(p) => cmd.env("MYSQL_PWD", p.expose_secret()),
        None => cmd.env_remove("MYSQL_PWD"),
    };
}

/// A consistent dump of one InnoDB database, with routines, triggers and events, restorable
/// under another name (no `CREATE DATABASE` in it).
pub fn dump_command(bin: &Path, conn: &ConnParams) -> Command {
    let mut cmd = Command::new(bin);
    // Option files come first on the command line or not at all.
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
pub fn restore_command(bin: &Path, conn: &ConnParams) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--no-defaults");
    apply_conn(&mut cmd, conn);
    cmd.args(["--connect-timeout=10", "--default-character-set=utf8mb4", "--batch"])
        .arg(format!("--database={}", conn.database))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Runs SQL and returns tab-separated rows without headers.
pub async fn query(conn: &ConnParams, database: Option<&str>, sql: &str) -> anyhow::Result<String> {
    let mut cmd = Command::new(client_tool()?);
    cmd.arg("--no-defaults");
    apply_conn(&mut cmd, conn);
    cmd.args([
        "--connect-timeout=10",
        "--batch",
        "--skip-column-names",
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
}
