//! Engine drivers: what differs between database engines sits behind one trait, so the
//! pipeline exists once. Adding an engine touches this module and the engine enum.

use std::path::PathBuf;

use async_trait::async_trait;
use secrecy::ExposeSecret as _;
use svalbard_core::domain::Engine;
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
}

/// The driver of an engine.
#[must_use]
pub fn driver(engine: Engine, pg_roots: &[String]) -> Box<dyn Driver> {
    match engine {
        Engine::Postgresql => Box::new(Postgres {
            roots: pg_roots.to_vec(),
        }),
        Engine::Mysql => Box::new(Unsupported(engine)),
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
}

impl Postgres {
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

/// An engine this worker cannot back up.
struct Unsupported(Engine);

#[async_trait]
impl Driver for Unsupported {
    async fn probe(&self, _: &Connection) -> Result<Probe, JobError> {
        Err(JobError::Permanent(format!(
            "backups of {} planets are not supported by this worker",
            self.0
        )))
    }

    fn dump(&self, _: &Probe, _: &Connection) -> Command {
        Command::new("false")
    }

    fn dump_tool(&self) -> &'static str {
        "dump"
    }

    fn is_permanent(&self, _: &str) -> bool {
        true
    }
}
