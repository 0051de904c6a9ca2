//! Engine drivers: what differs between database engines sits behind one trait, so the
//! pipeline exists once. Adding an engine touches this module and the engine enum.

use std::path::PathBuf;

use async_trait::async_trait;
use secrecy::ExposeSecret as _;
use svalbard_core::domain::Engine;
use svalbard_core::dumpinfo::DumpFormat;
use svalbard_core::repo::planets::Connection;
use tokio::process::Command;

use crate::pg;
use crate::runner::JobError;

/// Versions found when probing a server, recorded with the backup.
#[derive(Debug, Clone)]
pub struct Probe {
    pub engine_version: String,
    pub tool_version: String,
    pub dump_tool: PathBuf,
}

#[async_trait]
pub trait Driver: Send + Sync {
    /// Connects, reads the server version and picks a dump tool that can dump it.
    async fn probe(&self, conn: &Connection) -> Result<Probe, JobError>;

    /// The dump process: writes the dump to stdout, errors to stderr; secrets never on argv.
    fn dump(&self, probe: &Probe, conn: &Connection) -> Command;

    /// Name of the dump tool, for messages.
    fn dump_tool(&self) -> &'static str;

    /// Whether a failure message means retrying cannot help (bad credentials, missing database).
    fn is_permanent(&self, message: &str) -> bool;

    /// The tool that loads a dump, chosen to read the most dump versions.
    fn restore_tool(&self) -> Result<Tool, JobError>;

    /// Whether this worker can restore a dump that starts with `head` (decompressed) into a
    /// server of `target_major`: `Err` carries the message of an `incompatible` restore.
    fn check_dump(&self, head: &[u8], tool: &Tool, target_major: u32, force: bool) -> Result<(), String>;

    /// Major version and full version string of the server.
    async fn server_version(&self, conn: &Connection) -> Result<(u32, String), JobError>;

    /// Whether `database` exists, and how many objects it holds.
    async fn inspect(&self, conn: &Connection, database: &str) -> Result<Option<i64>, JobError>;

    async fn create_database(&self, conn: &Connection, database: &str) -> Result<(), JobError>;

    async fn drop_database(&self, conn: &Connection, database: &str) -> Result<(), JobError>;

    /// Gives `from` the name `to` (which must not exist).
    async fn rename_database(&self, conn: &Connection, from: &str, to: &str) -> Result<(), JobError>;

    /// The process that loads a dump of `kind` from stdin into `database` atomically.
    fn restore(&self, tool: &Tool, kind: &DumpFormat, conn: &Connection, database: &str) -> Command;

    /// A process that reads a whole dump of `kind` from stdin and fails if it is damaged;
    /// `None` when decompressing it in full is the only check there is.
    fn check_whole(&self, tool: &Tool, kind: &DumpFormat) -> Option<Command>;

    /// Tables and rows in `database`, counted exactly.
    async fn verify(&self, conn: &Connection, database: &str) -> Result<(i64, i64), JobError>;

    /// Whether a database can be renamed, so `replace` can restore beside the target and swap.
    /// Without it, `replace` drops and recreates the target before loading.
    fn can_rename(&self) -> bool {
        true
    }
}

/// A client tool and its version.
#[derive(Debug, Clone)]
pub struct Tool {
    pub path: PathBuf,
    pub major: u32,
    pub version: String,
}

/// The driver of an engine.
#[must_use]
pub fn driver(engine: Engine, pg_roots: &[String]) -> Box<dyn Driver> {
    match engine {
        Engine::Postgresql => Box::new(Postgres {
            roots: pg_roots.to_vec(),
        }),
        Engine::Mysql => Box::new(Mysql),
    }
}

pub struct Postgres {
    roots: Vec<String>,
}

impl Postgres {
    fn params(conn: &Connection) -> pg::ConnParams {
        pg::ConnParams {
            host: conn.host.clone(),
            port: conn.port,
            database: conn.database.clone(),
            user: conn.user.clone(),
            password: conn.password.as_ref().map(|p| p.expose_secret().to_owned().into()),
            sslmode: conn.sslmode.as_str().to_owned(),
            hostaddr: conn.hostaddr,
        }
    }
}

/// Messages of libpq and the PostgreSQL tools that no retry will fix.
const PG_PERMANENT: &[&str] = &[
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "does not exist",
    "permission denied",
    "no pg_hba.conf entry",
    "server does not support SSL",
    "no pg_dump for PostgreSQL",
    "aborting because of server version mismatch",
];

#[async_trait]
impl Driver for Postgres {
    async fn probe(&self, conn: &Connection) -> Result<Probe, JobError> {
        let params = Self::params(conn);
        let (major, full) = pg::server_version(&params)
            .await
            .map_err(|e| self.classify(&format!("{e:#}")))?;
        let roots = self.roots.clone();
        let (dump_tool, tool_version) = tokio::task::spawn_blocking(move || pg::find_pg_dump(&roots, major))
            .await
            .map_err(|e| JobError::Transient(e.to_string()))?
            .map_err(|e| JobError::Permanent(format!("{e:#}")))?;
        Ok(Probe {
            engine_version: full,
            tool_version,
            dump_tool,
        })
    }

    fn dump(&self, probe: &Probe, conn: &Connection) -> Command {
        pg::dump_command(&probe.dump_tool, &Self::params(conn))
    }

    fn dump_tool(&self) -> &'static str {
        "pg_dump"
    }

    fn is_permanent(&self, message: &str) -> bool {
        PG_PERMANENT.iter().any(|p| message.contains(p))
    }

    fn restore_tool(&self) -> Result<Tool, JobError> {
        let (path, major, version) =
            pg::find_pg_restore(&self.roots).map_err(|e| JobError::Permanent(format!("{e:#}")))?;
        Ok(Tool { path, major, version })
    }

    fn check_dump(&self, head: &[u8], tool: &Tool, target_major: u32, force: bool) -> Result<(), String> {
        use svalbard_core::dumpinfo::{pg_restore_can_read, sniff_dump};
        match sniff_dump(head) {
            DumpFormat::PgCustom(h) => {
                pg_restore_can_read(&h, tool.major)?;
                if let Some(source) = h.dumped_from_major()
                    && source > target_major
                    && !force
                {
                    return Err(format!(
                        "dumped from PostgreSQL {source}; the target server runs {target_major}; restore into a server \
                         of version {source} or later, or set options.force to try anyway"
                    ));
                }
                Ok(())
            }
            // A plain dump names no tool version; psql reads any.
            DumpFormat::PlainSql => Ok(()),
            DumpFormat::Unknown(seen) => Err(format!("not a recognised archive: {seen}")),
        }
    }

    async fn server_version(&self, conn: &Connection) -> Result<(u32, String), JobError> {
        pg::server_version(&Self::params(conn))
            .await
            .map_err(|e| self.classify(&format!("{e:#}")))
    }

    async fn inspect(&self, conn: &Connection, database: &str) -> Result<Option<i64>, JobError> {
        let exists = self
            .run(
                conn,
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_database WHERE datname = {}",
                    pg::quote_literal(database)
                ),
            )
            .await?;
        if exists.trim() == "0" {
            return Ok(None);
        }
        let objects = self
            .run(
                conn,
                database,
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
                   AND c.relkind IN ('r', 'v', 'm', 'S', 'f', 'p')",
            )
            .await?;
        Ok(Some(objects.trim().parse().unwrap_or(0)))
    }

    async fn create_database(&self, conn: &Connection, database: &str) -> Result<(), JobError> {
        self.run(
            conn,
            "postgres",
            &format!("CREATE DATABASE {}", pg::quote_ident(database)),
        )
        .await
        .map(|_| ())
    }

    async fn drop_database(&self, conn: &Connection, database: &str) -> Result<(), JobError> {
        self.run(
            conn,
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg::quote_ident(database)),
        )
        .await
        .map(|_| ())
    }

    async fn rename_database(&self, conn: &Connection, from: &str, to: &str) -> Result<(), JobError> {
        self.run(
            conn,
            "postgres",
            &format!(
                "ALTER DATABASE {} RENAME TO {}",
                pg::quote_ident(from),
                pg::quote_ident(to)
            ),
        )
        .await
        .map(|_| ())
    }

    fn restore(&self, tool: &Tool, kind: &DumpFormat, conn: &Connection, database: &str) -> Command {
        match kind {
            DumpFormat::PlainSql => pg::sql_restore_command(&Self::on(conn, database)),
            _ => pg::restore_command(&tool.path, &Self::on(conn, database)),
        }
    }

    fn check_whole(&self, tool: &Tool, kind: &DumpFormat) -> Option<Command> {
        matches!(kind, DumpFormat::PgCustom(_)).then(|| pg::list_command(&tool.path))
    }

    async fn verify(&self, conn: &Connection, database: &str) -> Result<(i64, i64), JobError> {
        let out = self
            .run(
                conn,
                database,
                "SELECT count(*) || '|' || COALESCE(sum((xpath('/row/c/text()', query_to_xml(
                        format('SELECT count(*) AS c FROM %I.%I', schemaname, tablename), false, true, '')))[1]::text::bigint), 0)
                 FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
            )
            .await?;
        let (tables, rows) = out.split_once('|').unwrap_or(("0", "0"));
        Ok((tables.trim().parse().unwrap_or(0), rows.trim().parse().unwrap_or(0)))
    }
}

impl Postgres {
    fn on(conn: &Connection, database: &str) -> pg::ConnParams {
        let mut p = Self::params(conn);
        database.clone_into(&mut p.database);
        p
    }

    async fn run(&self, conn: &Connection, database: &str, sql: &str) -> Result<String, JobError> {
        pg::psql(&Self::on(conn, database), sql)
            .await
            .map_err(|e| self.classify(&format!("{e:#}")))
    }

    fn classify(&self, message: &str) -> JobError {
        let message = if message.contains("password authentication failed") || message.contains("no password supplied")
        {
            format!("authentication failed: {message}")
        } else {
            message.to_owned()
        };
        if self.is_permanent(&message) {
            JobError::Permanent(message)
        } else {
            JobError::Transient(message)
        }
    }
}

/// MySQL and MariaDB.
pub struct Mysql;

impl Mysql {
    fn on(conn: &Connection, database: &str) -> crate::mysql::ConnParams {
        crate::mysql::ConnParams {
            host: conn.host.clone(),
            port: conn.port,
            database: database.to_owned(),
            user: conn.user.clone(),
            password: conn.password.as_ref().map(|p| p.expose_secret().to_owned().into()),
            sslmode: conn.sslmode.as_str().to_owned(),
            hostaddr: conn.hostaddr,
        }
    }

    async fn run(&self, conn: &Connection, database: Option<&str>, sql: &str) -> Result<String, JobError> {
        crate::mysql::query(&Self::on(conn, database.unwrap_or_default()), database, sql)
            .await
            .map_err(|e| {
                let m = format!("{e:#}");
                let m = if m.contains("Access denied") {
                    format!("authentication failed: {m}")
                } else {
                    m
                };
                if self.is_permanent(&m) {
                    JobError::Permanent(m)
                } else {
                    JobError::Transient(m)
                }
            })
    }

    /// `major * 100 + minor`, so 10.11 compares below 11.4.
    fn rank(version: &str) -> Option<u32> {
        crate::mysql::major_minor(version).map(|(a, b)| a * 100 + b)
    }
}

const MYSQL_PERMANENT: &[&str] = &[
    "Access denied",
    "Unknown database",
    "is not allowed to connect",
    "authentication failed",
    "is not installed",
];

#[async_trait]
impl Driver for Mysql {
    async fn probe(&self, conn: &Connection) -> Result<Probe, JobError> {
        let (_, engine_version) = self.server_version(conn).await?;
        let tool = crate::mysql::dump_tool().map_err(|e| JobError::Permanent(format!("{e:#}")))?;
        let tool_version = crate::mysql::tool_version(&tool).map_err(|e| JobError::Permanent(format!("{e:#}")))?;
        Ok(Probe {
            engine_version,
            tool_version,
            dump_tool: tool,
        })
    }

    fn dump(&self, probe: &Probe, conn: &Connection) -> Command {
        crate::mysql::dump_command(&probe.dump_tool, &Self::on(conn, &conn.database))
    }

    fn dump_tool(&self) -> &'static str {
        "mariadb-dump"
    }

    fn is_permanent(&self, message: &str) -> bool {
        MYSQL_PERMANENT.iter().any(|p| message.contains(p))
    }

    fn restore_tool(&self) -> Result<Tool, JobError> {
        let path = crate::mysql::client_tool().map_err(|e| JobError::Permanent(format!("{e:#}")))?;
        let version = crate::mysql::tool_version(&path).unwrap_or_default();
        Ok(Tool {
            major: Self::rank(&version).unwrap_or(0),
            path,
            version,
        })
    }

    fn check_dump(&self, head: &[u8], _tool: &Tool, target: u32, force: bool) -> Result<(), String> {
        use svalbard_core::dumpinfo::sniff_dump;
        match sniff_dump(head) {
            DumpFormat::PlainSql => {
                if let Some(from) = crate::mysql::dumped_from(head)
                    && let Some(rank) = Self::rank(&from)
                    && rank > target
                    && !force
                {
                    return Err(format!(
                        "dumped from server {from}; the target server runs {}.{}; restore into a server of version {}.{} \
                         or later, or set options.force to try anyway",
                        target / 100,
                        target % 100,
                        rank / 100,
                        rank % 100
                    ));
                }
                Ok(())
            }
            DumpFormat::PgCustom(_) => {
                Err("a PostgreSQL custom-format dump cannot be restored into a MySQL planet".into())
            }
            DumpFormat::Unknown(seen) => Err(format!("not a recognised archive: {seen}")),
        }
    }

    async fn server_version(&self, conn: &Connection) -> Result<(u32, String), JobError> {
        let v = self.run(conn, None, "SELECT VERSION()").await?;
        Ok((Self::rank(&v).unwrap_or(0), v))
    }

    async fn inspect(&self, conn: &Connection, database: &str) -> Result<Option<i64>, JobError> {
        let lit = crate::mysql::quote_literal(database);
        let exists = self
            .run(
                conn,
                None,
                &format!("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {lit}"),
            )
            .await?;
        if exists.trim() == "0" {
            return Ok(None);
        }
        let objects = self
            .run(
                conn,
                None,
                &format!(
                    "SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {lit})
                          + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {lit})"
                ),
            )
            .await?;
        Ok(Some(objects.trim().parse().unwrap_or(0)))
    }

    async fn create_database(&self, conn: &Connection, database: &str) -> Result<(), JobError> {
        let q = crate::mysql::quote_ident(database);
        self.run(conn, None, &format!("CREATE DATABASE {q} CHARACTER SET utf8mb4"))
            .await
            .map(|_| ())
    }

    async fn drop_database(&self, conn: &Connection, database: &str) -> Result<(), JobError> {
        let q = crate::mysql::quote_ident(database);
        self.run(conn, None, &format!("DROP DATABASE IF EXISTS {q}"))
            .await
            .map(|_| ())
    }

    async fn rename_database(&self, _: &Connection, from: &str, to: &str) -> Result<(), JobError> {
        Err(JobError::Permanent(format!(
            "MySQL cannot rename database {from} to {to}"
        )))
    }

    fn can_rename(&self) -> bool {
        false
    }

    fn restore(&self, tool: &Tool, _kind: &DumpFormat, conn: &Connection, database: &str) -> Command {
        crate::mysql::restore_command(&tool.path, &Self::on(conn, database))
    }

    fn check_whole(&self, _: &Tool, _: &DumpFormat) -> Option<Command> {
        None
    }

    async fn verify(&self, conn: &Connection, database: &str) -> Result<(i64, i64), JobError> {
        let lit = crate::mysql::quote_literal(database);
        let tables = self
            .run(
                conn,
                None,
                &format!(
                    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {lit} AND TABLE_TYPE = 'BASE TABLE'"
                ),
            )
            .await?;
        let names: Vec<&str> = tables.lines().map(str::trim).filter(|t| !t.is_empty()).collect();
        if names.is_empty() {
            return Ok((0, 0));
        }
        let db = crate::mysql::quote_ident(database);
        let sum = names
            .iter()
            .map(|t| format!("(SELECT COUNT(*) FROM {db}.{})", crate::mysql::quote_ident(t)))
            .collect::<Vec<_>>()
            .join(" + ");
        let rows = self.run(conn, None, &format!("SELECT {sum}")).await?;
        Ok((
            i64::try_from(names.len()).unwrap_or(i64::MAX),
            rows.trim().parse().unwrap_or(0),
        ))
    }
}
