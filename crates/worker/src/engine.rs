//! Engine drivers: what differs between database engines sits behind one trait, so the
//! pipeline exists once. Adding an engine touches this module and the engine enum.

use std::path::PathBuf;

use async_trait::async_trait;
use secrecy::ExposeSecret as _;
use svalbard_core::domain::Engine;
use svalbard_core::dumpinfo::DumpFormat;
use svalbard_core::repo::planets::Connection;
use svalbard_core::verification::TableCounts;

use crate::pg;
use crate::process::ToolCommand;
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
    /// With `snapshot`, the dump reads the database as of that exported snapshot.
    fn dump(&self, probe: &Probe, conn: &Connection, snapshot: Option<&str>) -> ToolCommand;

    /// A session whose snapshot the dump takes over, so that the rows counted in it are exactly
    /// those of the dump; `None` where the engine cannot share a snapshot with its dump tool.
    async fn snapshot(&self, _conn: &Connection) -> anyhow::Result<Option<pg::SnapshotSession>> {
        Ok(None)
    }

    /// Rows of every table of `database`, counted exactly, keyed as the dump's record keys them
    /// (`schema.table` for PostgreSQL, the table's name for MySQL).
    async fn table_counts(&self, conn: &Connection, database: &str) -> Result<TableCounts, JobError>;

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

    /// Whether `database` exists, and how many objects it holds: everything a restore could
    /// collide with or an application could depend on, not only tables.
    async fn inspect(&self, conn: &Connection, database: &str) -> Result<Option<i64>, JobError>;

    async fn create_database(&self, conn: &Connection, database: &str) -> Result<(), JobError>;

    async fn drop_database(&self, conn: &Connection, database: &str) -> Result<(), JobError>;

    /// Gives `from` the name `to` (which must not exist), ending `from`'s sessions.
    async fn rename_database(&self, conn: &Connection, from: &str, to: &str) -> Result<(), JobError>;

    /// The process that loads a dump of `kind` from stdin into `database` atomically, and how
    /// the dump is fed to it.
    fn restore(&self, tool: &Tool, kind: &DumpFormat, conn: &Connection, database: &str) -> Loader;

    /// A process that reads a whole dump of `kind` from stdin and fails if it is damaged;
    /// `None` when decompressing it in full is the only check there is.
    fn check_whole(&self, tool: &Tool, kind: &DumpFormat) -> Option<ToolCommand>;

    /// Tables and rows in `database`, counted exactly: the totals of [`Driver::table_counts`].
    async fn verify(&self, conn: &Connection, database: &str) -> Result<(i64, i64), JobError> {
        let counts = self.table_counts(conn, database).await?;
        Ok((i64::try_from(counts.len()).unwrap_or(i64::MAX), counts.values().sum()))
    }

    /// Whether a database can be renamed, so `replace` can restore beside the target and swap.
    /// Without it, `replace` drops and recreates the target before loading.
    fn can_rename(&self) -> bool {
        true
    }
}

/// A loading tool and how the dump reaches its stdin.
pub struct Loader {
    pub command: ToolCommand,
    /// Written before the dump (psql's restricted mode).
    pub prologue: Vec<u8>,
    /// Rewrites the dump on its way in.
    pub filter: Option<pg::MetaFilter>,
}

/// A tool that reads the dump as it is.
impl From<ToolCommand> for Loader {
    fn from(command: ToolCommand) -> Self {
        Self {
            command,
            prologue: Vec::new(),
            filter: None,
        }
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
    // A planet with a password and `sslmode=require` on a server without SCRAM over TLS.
    "channel binding required",
    "no pg_dump for PostgreSQL",
    "aborting because of server version mismatch",
];

#[async_trait]
impl Driver for Postgres {
    async fn probe(&self, conn: &Connection) -> Result<Probe, JobError> {
        let (major, full) = self.server_version(conn).await?;
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

    fn dump(&self, probe: &Probe, conn: &Connection, snapshot: Option<&str>) -> ToolCommand {
        let mut cmd = pg::dump_command(&probe.dump_tool, &Self::params(conn));
        if let Some(s) = snapshot {
            cmd.arg(format!("--snapshot={s}"));
        }
        cmd
    }

    async fn snapshot(&self, conn: &Connection) -> anyhow::Result<Option<pg::SnapshotSession>> {
        pg::SnapshotSession::open(&Self::params(conn)).await.map(Some)
    }

    async fn table_counts(&self, conn: &Connection, database: &str) -> Result<TableCounts, JobError> {
        let out = self.run(conn, database, pg::TABLE_COUNTS_QUERY).await?;
        pg::parse_table_counts(&out).map_err(|e| JobError::Permanent(format!("{e:#}")))
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
            // A plain dump names no tool version; psql reads any, if it can read it safely.
            DumpFormat::PlainSql => pg::check_psql(&pg::psql_beside(&tool.path)),
            DumpFormat::Unknown(seen) => Err(format!("not a recognised archive: {seen}")),
        }
    }

    async fn server_version(&self, conn: &Connection) -> Result<(u32, String), JobError> {
        let out = self.run_admin(conn, pg::VERSION_QUERY).await.map_err(|e| match e {
            JobError::Permanent(m) => JobError::Permanent(format!("cannot query the server's version: {m}")),
            JobError::Transient(m) => JobError::Transient(format!("cannot query the server's version: {m}")),
            incompatible @ JobError::Incompatible(_) => incompatible,
        })?;
        pg::parse_server_version(&out).map_err(|e| JobError::Permanent(format!("{e:#}")))
    }

    async fn inspect(&self, conn: &Connection, database: &str) -> Result<Option<i64>, JobError> {
        let exists = self
            .run_admin(
                conn,
                &format!(
                    "SELECT count(*) FROM pg_database WHERE datname = {}",
                    pg::quote_literal(database)
                ),
            )
            .await?;
        if exists.trim() == "0" {
            return Ok(None);
        }
        let objects = self.run(conn, database, PG_OBJECTS).await?;
        Ok(Some(objects.trim().parse().unwrap_or(0)))
    }

    async fn create_database(&self, conn: &Connection, database: &str) -> Result<(), JobError> {
        self.run_admin(conn, &format!("CREATE DATABASE {}", pg::quote_ident(database)))
            .await
            .map(|_| ())
    }

    async fn drop_database(&self, conn: &Connection, database: &str) -> Result<(), JobError> {
        self.run_admin(
            conn,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg::quote_ident(database)),
        )
        .await
        .map(|_| ())
    }

    async fn rename_database(&self, conn: &Connection, from: &str, to: &str) -> Result<(), JobError> {
        // A database with sessions cannot be renamed; they are ended first, as a forced drop
        // would. One that reconnects in between makes the rename fail, and nothing changed.
        self.run_admin(
            conn,
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()",
                pg::quote_literal(from)
            ),
        )
        .await?;
        self.run_admin(
            conn,
            &format!(
                "ALTER DATABASE {} RENAME TO {}",
                pg::quote_ident(from),
                pg::quote_ident(to)
            ),
        )
        .await
        .map(|_| ())
    }

    fn restore(&self, tool: &Tool, kind: &DumpFormat, conn: &Connection, database: &str) -> Loader {
        match kind {
            DumpFormat::PlainSql => Loader {
                command: pg::sql_restore_command(&pg::psql_beside(&tool.path), &Self::on(conn, database)),
                prologue: pg::restrict_prologue(&pg::restrict_key()),
                filter: Some(pg::MetaFilter::default()),
            },
            _ => pg::restore_command(&tool.path, &Self::on(conn, database)).into(),
        }
    }

    fn check_whole(&self, tool: &Tool, kind: &DumpFormat) -> Option<ToolCommand> {
        matches!(kind, DumpFormat::PgCustom(_)).then(|| pg::list_command(&tool.path))
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

    /// Runs `sql` on the server rather than in the planet's database: connected to the
    /// maintenance database `postgres`, else `template1`, else (where a server lets the planet's
    /// user into its own database only) the planet's database. Probing the version, checking
    /// whether a database exists and creating one must work when the planet's database is gone:
    /// that is the restore needed most.
    async fn run_admin(&self, conn: &Connection, sql: &str) -> Result<String, JobError> {
        let mut first: Option<String> = None;
        for db in maintenance_databases(&conn.database) {
            match pg::psql(&Self::on(conn, db), sql).await {
                Ok(out) => return Ok(out),
                Err(e) => {
                    let m = format!("{e:#}");
                    let refused_here = m.contains(&format!("\"{db}\""))
                        && (m.contains("does not exist")
                            || m.contains("pg_hba.conf")
                            || m.contains("permission denied"));
                    let m = first.get_or_insert(m).clone();
                    if !refused_here {
                        return Err(self.classify(&m));
                    }
                }
            }
        }
        Err(self.classify(&first.unwrap_or_default()))
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

/// The databases [`Postgres::run_admin`] tries, in order.
fn maintenance_databases(planet: &str) -> Vec<&str> {
    let mut out = vec!["postgres", "template1"];
    if !out.contains(&planet) {
        out.push(planet);
    }
    out
}

/// Objects of a PostgreSQL database that make it not empty: relations, schemas other than
/// `public`, functions and procedures, types of its own (domains, enums, ranges, composite and
/// base types, not the row and array types that come with tables), extensions other than the
/// built-in `plpgsql`, and large objects.
const PG_OBJECTS: &str = "SELECT
    (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
        AND n.nspname NOT LIKE 'pg_temp%' AND c.relkind IN ('r', 'v', 'm', 'S', 'f', 'p', 'c'))
  + (SELECT count(*) FROM pg_namespace
      WHERE nspname NOT IN ('public', 'pg_catalog', 'information_schema')
        AND nspname NOT LIKE 'pg_toast%' AND nspname NOT LIKE 'pg_temp%')
  + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
  + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
        AND t.typtype IN ('b', 'd', 'e', 'r') AND t.typcategory <> 'A')
  + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
  + (SELECT count(*) FROM pg_largeobject_metadata)";

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
    // `require` and stricter against a server without TLS or with an untrusted certificate.
    "TLS/SSL error",
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

    fn dump(&self, probe: &Probe, conn: &Connection, _snapshot: Option<&str>) -> ToolCommand {
        crate::mysql::dump_command(&probe.dump_tool, &Self::on(conn, &conn.database))
    }

    async fn table_counts(&self, conn: &Connection, database: &str) -> Result<TableCounts, JobError> {
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
        let mut out = TableCounts::new();
        if names.is_empty() {
            return Ok(out);
        }
        let db = crate::mysql::quote_ident(database);
        let union = names
            .iter()
            .map(|t| {
                format!(
                    "SELECT {}, COUNT(*) FROM {db}.{}",
                    crate::mysql::quote_literal(t),
                    crate::mysql::quote_ident(t)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        for line in self.run(conn, None, &union).await?.lines() {
            if let Some((name, n)) = line.rsplit_once('\t') {
                out.insert(name.to_owned(), n.trim().parse().unwrap_or(0));
            }
        }
        Ok(out)
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
                // Tables and views, routines, events and triggers.
                &format!(
                    "SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {lit})
                          + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {lit})
                          + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {lit})
                          + (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {lit})"
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

    fn restore(&self, tool: &Tool, _kind: &DumpFormat, conn: &Connection, database: &str) -> Loader {
        crate::mysql::restore_command(&tool.path, &Self::on(conn, database)).into()
    }

    fn check_whole(&self, _: &Tool, _: &DumpFormat) -> Option<ToolCommand> {
        None
    }
}
