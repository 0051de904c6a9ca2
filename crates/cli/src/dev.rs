//! `svalbard dev`: everything in one process with nothing to configure.
//!
//! Secrets are generated once into the data folder; the control database is the local
//! PostgreSQL server when one answers on 127.0.0.1:5432, else a private cluster started from the
//! installed server binaries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use figment::providers::{Format, Serialized, Toml};
use sqlx::Connection as _;
use svalbard_core::auth::{Role, mint_hs256};
use svalbard_core::config::Config;
use svalbard_core::crypto::KeyRing;
use svalbard_core::domain::Name;
use svalbard_core::repo::{audit, tenants};

/// Loopback, which `dev` allows so that planets on this machine can be tried; the control
/// database stays refused even so.
const DEV_ALLOW: &[&str] = &["127.0.0.0/8", "::1"];

const LOCAL_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

pub async fn run(file: Option<&Path>, data_dir: &Path, private: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let secrets = ensure_secrets(data_dir)?;
    let mut figment = Config::figment(file).join(Toml::file(&secrets));
    // Stops the private cluster, if one was started, when `dev` ends.
    let mut cluster: Option<Box<dyn FnOnce()>> = None;
    if figment.find_value("database_url").is_err() {
        let local = if private { None } else { local_server().await };
        let url = match local {
            Some(url) => url,
            None => {
                let (url, stop) = private_cluster(&data_dir.join("postgres"))?;
                cluster = Some(stop);
                url
            }
        };
        figment = figment.merge(Serialized::default("database_url", url));
    }
    let mut embedded_s3 = None;
    if figment.find_value("s3.endpoint").is_err() {
        let root = data_dir.join("objects");
        let bucket: String = figment.extract_inner("s3.bucket").unwrap_or_else(|_| "svalbard".into());
        let endpoint = crate::embedded_s3::start(&root, &bucket, "svalbard-dev", "svalbard-dev-secret").await?;
        figment = figment.merge(Serialized::default(
            "s3",
            serde_json::json!({
                "endpoint": endpoint,
                "region": "us-east-1",
                "access_key_id": "svalbard-dev",
                "secret_access_key": "svalbard-dev-secret",
                "force_path_style": true,
            }),
        ));
        embedded_s3 = Some((endpoint, root));
    }
    let loopback_allowed = figment
        .extract_inner::<svalbard_core::config::TargetsConfig>("targets")
        .map_or(true, |t| t.allow.is_empty());
    if loopback_allowed {
        figment = figment.merge(Serialized::default("targets.allow", DEV_ALLOW));
    }
    let config: Config = figment.extract().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    crate::init_tracing(&config);
    if let Some((endpoint, root)) = &embedded_s3 {
        tracing::info!(%endpoint, root = %root.display(), "serving an embedded S3 store");
    }
    let pool = crate::connect(&config).await?;

    let demo = Name::parse("name", "demo").map_err(|e| anyhow::anyhow!(e.message))?;
    let tenant = match tenants::find_by_name(&pool, &demo).await? {
        Some(t) => t,
        None => {
            let new = tenants::NewTenant {
                display_name: Some("Demo tenant"),
                ..tenants::NewTenant::default()
            };
            let by = audit::Entry {
                tenant: svalbard_core::ids::TenantId(uuid::Uuid::nil()),
                actor: "svalbard dev".into(),
                role: Role::Admin,
                platform: true,
                client_address: None,
                action: "tenant.create",
                resource_type: "tenant",
                outcome: audit::Outcome::Success,
            };
            tenants::create(&pool, &demo, new, &by).await?
        }
    };
    let targets = if loopback_allowed {
        concat!(
            "loopback addresses are ALLOWED (a `svalbard dev` default; set targets.allow to change it); ",
            "the control database stays refused"
        )
        .to_owned()
    } else {
        format!(
            "targets.allow = {:?}; the control database stays refused",
            config.targets.allow
        )
    };
    let ttl = Duration::from_secs(7 * 86_400);
    let admin = mint_hs256(&config.auth, "dev", &tenant.id.to_string(), Role::Admin, ttl)?;
    let platform = mint_hs256(&config.auth, "dev", "*", Role::Admin, ttl)?;
    let base = format!("http://{}", config.http.listen);
    println!(
        "\nSvalbard is starting on {base}\n\n\
         demo tenant:     {tid}\n\
         admin token:     export TOKEN={admin}\n\
         platform token:  export PLATFORM_TOKEN={platform}\n\n\
         try:\n  curl -s -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/tenants/{tid}/projects\n\
         API reference:   {base}/docs/\n\
         target policy:   {targets}\n",
        tid = tenant.id,
    );

    let stop = crate::shutdown_signal();
    let worker = crate::worker(&config, pool.clone()).await?;
    let worker_stop = stop.clone();
    let worker_task = tokio::spawn(async move { worker.run(worker_stop).await });
    let served = crate::serve(config, pool, stop.clone()).await;
    stop.cancel();
    worker_task.await??;
    if let Some(stop) = cluster {
        stop();
    }
    served
}

/// Generates the HS256 secret and the sealing key once, readable only by the owner.
fn ensure_secrets(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("secrets.toml");
    if !path.exists() {
        let body = format!(
            "# Generated by `svalbard dev`; keep it private.\n[auth]\nhs256_secret = \"{}\"\n\n[crypto]\nkeys = \"{}\"\n",
            random_secret(),
            KeyRing::generate_spec("dev1"),
        );
        std::fs::write(&path, body)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(path)
}

/// 64 random alphanumerics, from the same generator as the sealing keys.
fn random_secret() -> String {
    let a = KeyRing::generate_spec("x");
    let b = KeyRing::generate_spec("y");
    format!("{}{}", &a[2..], &b[2..])
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

/// The local server, with a `svalbard` database created if missing.
async fn local_server() -> Option<String> {
    let mut conn = tokio::time::timeout(
        Duration::from_secs(3),
        sqlx::PgConnection::connect(&format!("{LOCAL_SERVER}/postgres")),
    )
    .await
    .ok()?
    .ok()?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'svalbard')")
        .fetch_one(&mut conn)
        .await
        .ok()?;
    if !exists {
        sqlx::query("CREATE DATABASE svalbard").execute(&mut conn).await.ok()?;
    }
    Some(format!("{LOCAL_SERVER}/svalbard"))
}

/// Starts (initialising once) a cluster in `dir` on a free port, as an unprivileged user when
/// running as root, since PostgreSQL refuses to run as root.
fn private_cluster(dir: &Path) -> anyhow::Result<(String, Box<dyn FnOnce()>)> {
    let bin = find_server_bin().context(
        "no PostgreSQL answers on 127.0.0.1:5432 and no server binaries were found under /usr/lib/postgresql; \
         install postgresql or set DATABASE_URL",
    )?;
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    let run = move |program: PathBuf, args: &[&str]| -> anyhow::Result<()> {
        let mut cmd = if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd
            .args(args)
            .output()
            .with_context(|| format!("running {}", program.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "{} failed: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    if as_root {
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()?;
    }
    let data = dir.join("data");
    let data_s = data.to_string_lossy().into_owned();
    if !data.join("PG_VERSION").exists() {
        run(
            bin.join("initdb"),
            &["-D", &data_s, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        )?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let opts = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", dir.display());
    let log = dir.join("postgres.log").to_string_lossy().into_owned();
    // A cluster left running by an earlier start is stopped first so the port is ours.
    let _ = run(bin.join("pg_ctl"), &["-D", &data_s, "-m", "fast", "stop"]);
    run(
        bin.join("pg_ctl"),
        &["-D", &data_s, "-o", &opts, "-l", &log, "-w", "start"],
    )?;
    eprintln!(
        "started a private PostgreSQL cluster in {} on port {port}",
        dir.display()
    );
    let stop = move || {
        let _ = run(bin.join("pg_ctl"), &["-D", &data_s, "-m", "fast", "stop"]);
    };
    Ok((format!("postgres://postgres@127.0.0.1:{port}/postgres"), Box::new(stop)))
}

fn find_server_bin() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, p)| p)
}
