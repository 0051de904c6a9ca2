//! The client commands of `svalbard`: backups, restores, planets and schedules of a remote
//! Svalbard, for people in a terminal (tables, progress) and for scripts (`--output json`).
//!
//! Exit status: 0 when the call (and, with `--wait`, the job) succeeded; 1 when the API
//! refused or could not be reached, with the problem's text on stderr; 3 when a job that was
//! waited for ended in any state but `succeeded`.

mod api;
mod download;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{Table, presets::NOTHING};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use uuid::Uuid;

use api::Api;

/// Exit status of a job that ended in failure while the command waited for it.
pub const EXIT_JOB_FAILED: u8 = 3;

#[derive(Args)]
pub struct Remote {
    /// Base URL of the Svalbard API.
    #[arg(long, env = "SVALBARD_URL", default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// Bearer token (mint one with `svalbard token`).
    #[arg(long, env = "SVALBARD_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Tenant id; defaults to the token's tenant.
    #[arg(long, env = "SVALBARD_TENANT", global = true)]
    tenant: Option<Uuid>,
    /// Project id; when absent, the project is looked up from the planet, backup or restore.
    #[arg(long, env = "SVALBARD_PROJECT", global = true)]
    project: Option<Uuid>,
    /// `table` for people, `json` for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum BackupCmd {
    /// Take a backup of a planet.
    Create {
        /// Planet id or name.
        #[arg(long)]
        planet: String,
        /// A temporary backup, expiring after a day unless a retention is given.
        #[arg(long)]
        temporary: bool,
        /// Days to keep the backup (1-3650).
        #[arg(long)]
        retention_days: Option<u32>,
        /// Wait until the backup ends, showing its progress.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// List backups, newest first.
    List {
        /// Only this planet's (id or name).
        #[arg(long)]
        planet: Option<String>,
        /// Only backups in this status.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one backup.
    Get { backup: Uuid },
    /// Download a backup's archive through a pre-signed URL, resuming an interrupted download
    /// and checking the checksum.
    Download {
        backup: Uuid,
        /// File to write; default `<backup name>.svb.zst`.
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum RestoreCmd {
    /// Restore a stored backup.
    Create {
        /// The backup to restore.
        #[arg(long)]
        backup: Uuid,
        /// Planet to restore into (same tenant and engine); default the backup's planet.
        #[arg(long)]
        target_planet: Option<String>,
        /// Database to restore into: the planet's database or `<database>_<suffix>`.
        #[arg(long)]
        target_database: Option<String>,
        /// Drop and recreate the target first (admin).
        #[arg(long)]
        replace: bool,
        /// Restore into a server of an older major version than the source.
        #[arg(long)]
        force: bool,
        /// Wait until the restore ends.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Show one restore.
    Get { restore: Uuid },
}

#[derive(Subcommand)]
pub enum PlanetCmd {
    /// List planets: of `--project`, or of every project of the tenant.
    List,
}

#[derive(Subcommand)]
pub enum ScheduleCmd {
    /// Create or replace a planet's backup schedule.
    Set {
        /// Planet id or name.
        #[arg(long)]
        planet: String,
        /// Five fields: minute hour day-of-month month day-of-week, e.g. `30 2 * * *`.
        #[arg(long)]
        cron: String,
        /// IANA time zone the expression is read in (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// Store the schedule without running it.
        #[arg(long)]
        disabled: bool,
        /// Keep backups younger than this many days.
        #[arg(long)]
        retention_days: Option<u32>,
        #[arg(long)]
        keep_last: Option<u32>,
        #[arg(long)]
        keep_daily: Option<u32>,
        #[arg(long)]
        keep_weekly: Option<u32>,
        #[arg(long)]
        keep_monthly: Option<u32>,
    },
    /// Show a planet's schedule.
    Get {
        /// Planet id or name.
        #[arg(long)]
        planet: String,
    },
}

/// Commands that talk to a running Svalbard.
#[derive(Subcommand)]
pub enum Client {
    /// Backups of a running Svalbard (reads SVALBARD_URL and SVALBARD_TOKEN).
    Backup {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: BackupCmd,
    },
    /// Restores of a running Svalbard.
    Restore {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: RestoreCmd,
    },
    /// Planets of a running Svalbard.
    Planet {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: PlanetCmd,
    },
    /// Backup schedules of a running Svalbard.
    Schedule {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: ScheduleCmd,
    },
}

enum Call {
    Backup(BackupCmd),
    Restore(RestoreCmd),
    Planet(PlanetCmd),
    Schedule(ScheduleCmd),
}

/// Runs a client command and answers the process's exit status.
pub async fn run(client: Client) -> anyhow::Result<u8> {
    let (remote, call) = match client {
        Client::Backup { remote, cmd } => (remote, Call::Backup(cmd)),
        Client::Restore { remote, cmd } => (remote, Call::Restore(cmd)),
        Client::Planet { remote, cmd } => (remote, Call::Planet(cmd)),
        Client::Schedule { remote, cmd } => (remote, Call::Schedule(cmd)),
    };
    let token = remote
        .token
        .as_deref()
        .context("no token: set SVALBARD_TOKEN or pass --token")?;
    let ctx = Ctx {
        api: Api::new(&remote.url, token, remote.tenant)?,
        project: remote.project,
        output: remote.output,
    };
    match call {
        Call::Backup(cmd) => ctx.backup(cmd).await,
        Call::Restore(cmd) => ctx.restore(cmd).await,
        Call::Planet(PlanetCmd::List) => {
            let planets = ctx.planets().await?;
            ctx.print_list(&planets, &["ID", "NAME", "ENGINE", "CLASS", "HOST", "DATABASE"], |p| {
                let c = &p["connection"];
                vec![
                    s(&p["id"]),
                    s(&p["name"]),
                    s(&p["engine"]),
                    s(&p["planetClass"]),
                    format!("{}:{}", s(&c["host"]), c["port"]),
                    s(&c["database"]),
                ]
            });
            Ok(0)
        }
        Call::Schedule(cmd) => ctx.schedule(cmd).await,
    }
}

struct Ctx {
    api: Api,
    project: Option<Uuid>,
    output: Output,
}

impl Ctx {
    async fn backup(&self, cmd: BackupCmd) -> anyhow::Result<u8> {
        match cmd {
            BackupCmd::Create {
                planet,
                temporary,
                retention_days,
                wait,
                timeout,
            } => {
                let (project, planet) = self.planet(&planet).await?;
                let mut body = json!({});
                if temporary {
                    body["temporary"] = json!(true);
                }
                if let Some(days) = retention_days {
                    body["retentionPeriodInDays"] = json!(days);
                }
                let created = self
                    .api
                    .post(
                        &self
                            .api
                            .tenant_path(&format!("/projects/{project}/planets/{planet}/backups")),
                        body,
                    )
                    .await?;
                let id = s(&created["id"]);
                if !wait {
                    self.print_backup(&created);
                    return Ok(0);
                }
                let path = self.api.tenant_path(&format!("/projects/{project}/backups/{id}"));
                let done = self.wait(&path, &format!("backup {id}"), timeout).await?;
                self.print_backup(&done);
                Ok(job_exit(&done))
            }
            BackupCmd::List { planet, status, limit } => {
                let mut query = Vec::new();
                if let Some(st) = status {
                    query.push(("status", st));
                }
                let backups = match planet {
                    Some(planet) => {
                        let (project, planet) = self.planet(&planet).await?;
                        let path = self
                            .api
                            .tenant_path(&format!("/projects/{project}/planets/{planet}/backups"));
                        self.api.list(&path, &query, limit).await?
                    }
                    None => {
                        let mut all = Vec::new();
                        for project in self.projects().await? {
                            let path = self.api.tenant_path(&format!("/projects/{project}/backups"));
                            all.extend(self.api.list(&path, &query, limit).await?);
                        }
                        all.sort_by(|a, b| s(&b["createdAt"]).cmp(&s(&a["createdAt"])));
                        all.truncate(limit);
                        all
                    }
                };
                self.print_list(
                    &backups,
                    &["ID", "NAME", "STATUS", "SIZE", "CREATED", "EXPIRES"],
                    backup_row,
                );
                Ok(0)
            }
            BackupCmd::Get { backup } => {
                let (_, b) = self.located("backups", backup).await?;
                self.print_backup(&b);
                Ok(0)
            }
            BackupCmd::Download { backup, file } => {
                let (project, b) = self.located("backups", backup).await?;
                let link = self
                    .api
                    .get(
                        &self
                            .api
                            .tenant_path(&format!("/projects/{project}/backups/{backup}/archive")),
                    )
                    .await?;
                let out = file.unwrap_or_else(|| PathBuf::from(format!("{}.svb.zst", s(&b["name"]))));
                let quiet = self.output == Output::Json || !std::io::stderr().is_terminal();
                let got = download::fetch(
                    link["downloadUrl"].as_str().context("the API sent no downloadUrl")?,
                    &out,
                    link["sizeBytes"].as_u64(),
                    link["checksum"].as_str(),
                    quiet,
                )
                .await?;
                let report = json!({
                    "backupId": backup,
                    "file": got.path.display().to_string(),
                    "sizeBytes": got.bytes,
                    "resumedFrom": got.resumed_from,
                    "checksum": got.checksum,
                    "verified": link["checksum"].is_string(),
                });
                match self.output {
                    Output::Json => println!("{report}"),
                    Output::Table => {
                        if got.resumed_from > 0 {
                            eprintln!("resumed at {}", HumanBytes(got.resumed_from));
                        }
                        println!(
                            "{} ({}, {} verified)",
                            got.path.display(),
                            HumanBytes(got.bytes),
                            got.checksum
                        );
                    }
                }
                Ok(0)
            }
        }
    }

    async fn restore(&self, cmd: RestoreCmd) -> anyhow::Result<u8> {
        match cmd {
            RestoreCmd::Create {
                backup,
                target_planet,
                target_database,
                replace,
                force,
                wait,
                timeout,
            } => {
                let (project, _) = self.located("backups", backup).await?;
                let mut body = json!({});
                if let Some(planet) = target_planet {
                    body["targetPlanetId"] = json!(self.planet(&planet).await?.1);
                }
                if let Some(db) = target_database {
                    body["targetDatabase"] = json!(db);
                }
                if replace {
                    body["replace"] = json!(true);
                }
                if force {
                    body["options"] = json!({ "force": true });
                }
                let created = self
                    .api
                    .post(
                        &self
                            .api
                            .tenant_path(&format!("/projects/{project}/backups/{backup}/restores")),
                        body,
                    )
                    .await?;
                let id = s(&created["id"]);
                let done = if wait {
                    let path = self.api.tenant_path(&format!("/projects/{project}/restores/{id}"));
                    self.wait(&path, &format!("restore {id}"), timeout).await?
                } else {
                    created
                };
                self.print_restore(&done);
                Ok(if wait { job_exit(&done) } else { 0 })
            }
            RestoreCmd::Get { restore } => {
                let (_, r) = self.located("restores", restore).await?;
                self.print_restore(&r);
                Ok(0)
            }
        }
    }

    async fn schedule(&self, cmd: ScheduleCmd) -> anyhow::Result<u8> {
        let (planet, schedule) = match cmd {
            ScheduleCmd::Set {
                planet,
                cron,
                timezone,
                disabled,
                retention_days,
                keep_last,
                keep_daily,
                keep_weekly,
                keep_monthly,
            } => {
                let mut body = json!({ "cron": cron, "enabled": !disabled });
                if let Some(tz) = timezone {
                    body["timezone"] = json!(tz);
                }
                let mut retention = serde_json::Map::new();
                for (key, value) in [
                    ("retentionPeriodInDays", retention_days),
                    ("keepLast", keep_last),
                    ("keepDaily", keep_daily),
                    ("keepWeekly", keep_weekly),
                    ("keepMonthly", keep_monthly),
                ] {
                    if let Some(v) = value {
                        retention.insert(key.into(), json!(v));
                    }
                }
                if !retention.is_empty() {
                    body["retention"] = Value::Object(retention);
                }
                (planet, Some(body))
            }
            ScheduleCmd::Get { planet } => (planet, None),
        };
        let (project, planet) = self.planet(&planet).await?;
        let path = self
            .api
            .tenant_path(&format!("/projects/{project}/planets/{planet}/schedule"));
        let answer = match schedule {
            Some(body) => self.api.put(&path, body).await?,
            None => self.api.get(&path).await?,
        };
        self.print_one(&answer, || {
            let r = &answer["retention"];
            vec![
                ("planet", s(&answer["planetId"])),
                ("cron", s(&answer["cron"])),
                ("timezone", s(&answer["timezone"])),
                ("enabled", answer["enabled"].to_string()),
                ("retention", compact(r)),
                ("next run", s(&answer["nextRunAt"])),
                ("last run", s(&answer["lastRunAt"])),
                ("last outcome", s(&answer["lastOutcome"])),
            ]
        });
        Ok(0)
    }

    /// Polls a backup or restore at `path` until it leaves `scheduled` and `running`; a progress
    /// line with bytes and rate on a terminal, one line per change of status elsewhere.
    async fn wait(&self, path: &str, what: &str, timeout: u64) -> anyhow::Result<Value> {
        let started = Instant::now();
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} read, {binary_bytes_per_sec} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        let mut last_status = String::new();
        loop {
            let current = self.api.get(path).await?;
            let status = s(&current["status"]);
            if !matches!(status.as_str(), "scheduled" | "running") {
                bar.finish_and_clear();
                return Ok(current);
            }
            let phase = current["progress"]["phase"].as_str().unwrap_or(status.as_str());
            if let Some(n) = current["progress"]["bytesProcessed"].as_u64() {
                bar.set_position(n);
            }
            bar.set_message(format!("{what}: {phase}"));
            if bar.is_hidden() && status != last_status {
                eprintln!("{what}: {status}");
            }
            last_status = status;
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(timeout),
                "{what} is still {last_status} after {timeout} s; it goes on without this command"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn projects(&self) -> anyhow::Result<Vec<Uuid>> {
        if let Some(p) = self.project {
            return Ok(vec![p]);
        }
        let all = self.api.list(&self.api.tenant_path("/projects"), &[], 10_000).await?;
        Ok(all.iter().filter_map(|p| p["id"].as_str()?.parse().ok()).collect())
    }

    async fn planets(&self) -> anyhow::Result<Vec<Value>> {
        let mut all = Vec::new();
        for project in self.projects().await? {
            let path = self.api.tenant_path(&format!("/projects/{project}/planets"));
            all.extend(self.api.list(&path, &[], 10_000).await?);
        }
        Ok(all)
    }

    /// `(project, planet)` of a planet named by id or by name.
    async fn planet(&self, wanted: &str) -> anyhow::Result<(Uuid, Uuid)> {
        if let Ok(id) = wanted.parse::<Uuid>() {
            let (project, _) = self.located("planets", id).await?;
            return Ok((project, id));
        }
        let found: Vec<(Uuid, Uuid)> = self
            .planets()
            .await?
            .iter()
            .filter(|p| p["name"] == wanted)
            .filter_map(|p| Some((p["projectId"].as_str()?.parse().ok()?, p["id"].as_str()?.parse().ok()?)))
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => anyhow::bail!("no planet is named `{wanted}`"),
            _ => anyhow::bail!(
                "{} planets are named `{wanted}`; pass --project or the planet's id",
                found.len()
            ),
        }
    }

    /// The project of a planet, backup or restore and the resource itself: `--project` when
    /// given, else the project that has it.
    async fn located(&self, kind: &str, id: Uuid) -> anyhow::Result<(Uuid, Value)> {
        for project in self.projects().await? {
            if let Some(found) = self
                .api
                .find(&self.api.tenant_path(&format!("/projects/{project}/{kind}/{id}")))
                .await?
            {
                return Ok((project, found));
            }
        }
        let singular = kind.trim_end_matches('s');
        anyhow::bail!("no {singular} {id} in this tenant")
    }

    fn print_backup(&self, b: &Value) {
        self.print_one(b, || {
            let mut rows = vec![
                ("id", s(&b["id"])),
                ("name", s(&b["name"])),
                ("planet", s(&b["planetId"])),
                ("status", s(&b["status"])),
                ("size", size(&b["sizeBytes"])),
                ("checksum", s(&b["checksum"])),
                ("created", s(&b["createdAt"])),
                ("completed", s(&b["completedAt"])),
                ("expires", s(&b["expirationDate"])),
                ("pinned", b["pinned"].to_string()),
            ];
            if let Some(e) = b["errorMessage"].as_str() {
                rows.push(("error", e.to_owned()));
            }
            rows
        });
    }

    fn print_restore(&self, r: &Value) {
        self.print_one(r, || {
            let mut rows = vec![
                ("id", s(&r["id"])),
                ("status", s(&r["status"])),
                ("source", compact(&r["source"])),
                (
                    "target",
                    format!(
                        "{} (planet {})",
                        s(&r["target"]["database"]),
                        s(&r["target"]["planetId"])
                    ),
                ),
                ("created", s(&r["createdAt"])),
                ("completed", s(&r["completedAt"])),
            ];
            if r["verification"].is_object() {
                rows.push((
                    "restored",
                    format!(
                        "{} tables, {} rows",
                        r["verification"]["tables"], r["verification"]["rows"]
                    ),
                ));
            }
            if let Some(e) = r["errorMessage"].as_str() {
                rows.push(("error", e.to_owned()));
            }
            rows
        });
    }

    fn print_one(&self, value: &Value, rows: impl FnOnce() -> Vec<(&'static str, String)>) {
        match self.output {
            Output::Json => println!("{value}"),
            Output::Table => {
                let mut t = Table::new();
                t.load_style(NOTHING);
                for (k, v) in rows() {
                    t.add_row(vec![k.to_owned(), v]);
                }
                println!("{}", t.trim_fmt());
            }
        }
    }

    fn print_list(&self, items: &[Value], header: &[&str], row: impl Fn(&Value) -> Vec<String>) {
        match self.output {
            Output::Json => println!("{}", Value::Array(items.to_vec())),
            Output::Table => {
                let mut t = Table::new();
                t.load_style(NOTHING).set_header(header.to_vec());
                for item in items {
                    t.add_row(row(item));
                }
                println!("{}", t.trim_fmt());
            }
        }
    }
}

fn backup_row(b: &Value) -> Vec<String> {
    vec![
        s(&b["id"]),
        s(&b["name"]),
        s(&b["status"]),
        size(&b["sizeBytes"]),
        s(&b["createdAt"]),
        s(&b["expirationDate"]),
    ]
}

fn job_exit(job: &Value) -> u8 {
    if job["status"] == "succeeded" {
        0
    } else {
        EXIT_JOB_FAILED
    }
}

/// A JSON value as table text: strings bare, null as `-`.
fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn size(v: &Value) -> String {
    v.as_u64()
        .map(|n| HumanBytes(n).to_string())
        .unwrap_or_else(|| "-".into())
}

/// An object as `key=value` pairs, skipping nulls.
fn compact(v: &Value) -> String {
    match v.as_object() {
        Some(map) => {
            let parts: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k}={}", s(v)))
                .collect();
            if parts.is_empty() { "-".into() } else { parts.join(" ") }
        }
        None => s(v),
    }
}
