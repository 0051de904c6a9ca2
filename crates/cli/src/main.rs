//! `svalbard`: one binary for every role of the service.

mod archive;
mod dev;
mod embedded_s3;
mod remote;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use svalbard_core::auth::Role;
use svalbard_core::config::Config;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "svalbard",
    version,
    about = "Multi-tenant backup control plane for databases"
)]
struct Cli {
    /// TOML configuration file (also `SVALBARD_CONFIG`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Service(Service),
    #[command(flatten)]
    Client(remote::Client),
    /// Read a downloaded archive on its own: inspect, verify or decrypt it.
    #[command(subcommand)]
    Archive(archive::ArchiveCmd),
}

/// Commands that run a part of Svalbard itself.
#[derive(Subcommand)]
enum Service {
    /// API and worker in one process on embedded defaults, for trying Svalbard out.
    Dev {
        /// Folder for generated secrets and a private database cluster.
        #[arg(long, default_value = ".svalbard/dev")]
        data_dir: PathBuf,
        /// Start a private PostgreSQL cluster in the data folder even when a local server answers.
        #[arg(long)]
        private_cluster: bool,
    },
    /// Serve the HTTP API.
    Serve,
    /// Run a worker.
    Work,
    /// Apply control-database migrations and exit.
    Migrate,
    /// Mint a token signed with the configured HS256 secret.
    Token {
        /// A tenant id, or `*` for a platform administrator.
        #[arg(long)]
        tenant: String,
        /// viewer, operator or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Lifetime, e.g. `15m`, `1h`, `7d`.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The `sub` claim.
        #[arg(long, default_value = "cli")]
        subject: String,
    },
    /// Print the OpenAPI document.
    Openapi,
}

fn parse_ttl(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("`{s}` is not a duration like 15m, 1h or 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("`{s}`: unit must be s, m, h or d"),
    };
    anyhow::ensure!(secs > 0, "the lifetime must be positive");
    Ok(Duration::from_secs(secs))
}

pub fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Cancelled on SIGINT or SIGTERM.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                Some(()) = async { match term.as_mut() { Some(s) => s.recv().await, None => None } } => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stopping");
        t.cancel();
    });
    token
}

pub async fn connect(config: &Config) -> anyhow::Result<sqlx::PgPool> {
    let url = config
        .database_url
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("DATABASE_URL is not set (or use `svalbard dev`)"))?;
    let pool = svalbard_core::db::connect(url, 16).await?;
    svalbard_core::db::migrate(&pool).await?;
    Ok(pool)
}

/// Serves the API until `stop` fires.
pub async fn serve(config: Config, pool: sqlx::PgPool, stop: CancellationToken) -> anyhow::Result<()> {
    let listen = config.http.listen.clone();
    let keys = config
        .crypto
        .keys
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("crypto.keys is required (SVALBARD_CRYPTO__KEYS)"))?;
    let ring = svalbard_core::crypto::KeyRing::parse(keys)?;
    svalbard_core::crypto::verify_ring(&pool, &ring).await?;
    if let Err(e) = svalbard_core::repo::keys::reseal(&pool, &ring).await {
        tracing::error!(error = %e, "sealing tenant keys again with the first master key failed; trying at the next start");
    }
    let app = svalbard_api::Application::build(config, pool)?;
    tracing::info!(%listen, port = app.port(), metrics_port = app.metrics_port(), "API listening");
    let handle = app.handle();
    tokio::spawn(async move {
        stop.cancelled().await;
        handle.stop(true).await;
    });
    app.run_until_stopped().await?;
    Ok(())
}

pub async fn worker(config: &Config, pool: sqlx::PgPool) -> anyhow::Result<svalbard_worker::runner::Worker> {
    svalbard_worker::start(config, pool).await
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Client(call) => match remote::run(call).await {
            Ok(code) => std::process::ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Archive(cmd) => match archive::run(cmd) {
            Ok(code) => std::process::ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Service(command) => match run_service(cli.config, command).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e:?}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

async fn run_service(config_file: Option<PathBuf>, command: Service) -> anyhow::Result<()> {
    let config_file = config_file.as_deref();
    match command {
        Service::Openapi => {
            print!("{}", svalbard_api::openapi::document_json());
            Ok(())
        }
        Service::Token {
            tenant,
            role,
            ttl,
            subject,
        } => {
            let config = Config::load(config_file)?;
            let role: Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            if tenant != "*" {
                tenant
                    .parse::<uuid::Uuid>()
                    .context("--tenant must be a tenant id (UUID) or `*`")?;
            }
            println!(
                "{}",
                svalbard_core::auth::mint_hs256(&config.auth, &subject, &tenant, role, parse_ttl(&ttl)?)?
            );
            Ok(())
        }
        Service::Migrate => {
            let config = Config::load(config_file)?;
            init_tracing(&config);
            connect(&config).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Service::Serve => {
            let config = Config::load(config_file)?;
            init_tracing(&config);
            let pool = connect(&config).await?;
            serve(config, pool, shutdown_signal()).await
        }
        Service::Work => {
            let config = Config::load(config_file)?;
            init_tracing(&config);
            let pool = connect(&config).await?;
            let stop = shutdown_signal();
            // Checked before the health listener starts, so a refused worker never looks ready.
            let built = worker(&config, pool.clone()).await?;
            let storage = svalbard_core::storage::Storage::new(&config.s3);
            let (port, health) = svalbard_api::worker_ops::server(&config.worker.listen, pool.clone(), storage)?;
            tracing::info!(port, "worker health and metrics listening");
            let handle = health.handle();
            tokio::spawn(health);
            let result = built.run(stop).await;
            handle.stop(true).await;
            result
        }
        Service::Dev {
            data_dir,
            private_cluster,
        } => dev::run(config_file, &data_dir, private_cluster).await,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90").unwrap().as_secs(), 90);
        assert_eq!(parse_ttl("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_ttl("1h").unwrap().as_secs(), 3600);
        assert_eq!(parse_ttl("7d").unwrap().as_secs(), 604_800);
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
