//! Every client tool the worker starts (`pg_dump`, `pg_restore`, `psql`, `mariadb-dump`,
//! `mariadb`, their `--version` probes) is built and started here, so that each one starts
//! clean: an empty environment plus an allowlist, a scratch home and working directory of its
//! own, a deadline, and a cap on the output kept. The worker's environment holds the platform's
//! secrets (the control database's URL, the sealing keys, the S3 keys), and its home may hold
//! `~/.pgpass`, `~/.psqlrc`, `~/.my.cnf` or a `pg_service.conf`: none of that is a tenant's.
//!
//! What a tool prints when it fails goes to the worker's log in full, and into the job's error
//! message (which tenants read) only as a short excerpt with paths, environment-looking
//! assignments and foreign addresses removed: see [`excerpt`].

use std::ffi::OsStr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, ReadBuf};
use tokio::process::{Child, ChildStdout};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

/// Variables a tool keeps from the worker's environment: where to find programs. Nothing else
/// of the worker's environment reaches a tool.
const INHERITED: &[&str] = &["PATH"];

/// Messages in English whatever the machine's locale, so failures read (and classify) the same
/// everywhere; UTF-8 so tenant names come through intact.
const LOCALE: &str = "C.UTF-8";

/// How long a catalogue query, a version probe or the row count after a restore may take. A
/// catalogue query answers in seconds; counting the rows of every table of a large database
/// takes minutes. A server that stops answering must not hold a job slot until the job's
/// deadline.
pub const QUERY_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// How long a dump or a restore may stream. The job's own deadline (`worker.job_deadline_secs`)
/// normally ends a long attempt first, by cancelling it, which kills the tool; this bound only
/// catches a tool that outlives its attempt, so it sits well above any sensible job deadline.
pub const STREAM_DEADLINE: Duration = Duration::from_secs(48 * 3600);

/// How long a `--version` probe may take.
const VERSION_DEADLINE: Duration = Duration::from_secs(30);

/// Most of a tool's stderr kept (in the log in full up to this size; in error messages as an excerpt).
const STDERR_KEPT: usize = 16 * 1024;

/// Most of a query's answer kept: the worker's queries answer with a number or a list of table
/// names; more than this is refused rather than buffered.
const STDOUT_KEPT: usize = 8 * 1024 * 1024;

/// Longest excerpt of a tool's message in an error message tenants read.
pub const EXCERPT_CHARS: usize = 300;

/// A client tool to start: the program, its arguments and its own variables; the clean
/// environment, the scratch directory and the deadline are added when it starts.
pub struct ToolCommand {
    cmd: std::process::Command,
    /// `None`: [`QUERY_DEADLINE`] for a query, [`STREAM_DEADLINE`] for a stream.
    deadline: Option<Duration>,
    /// The planet's own host: the one address an excerpt of the tool's message may name.
    host: String,
}

impl ToolCommand {
    /// `program` with a cleared environment plus [`INHERITED`] and the locale.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let mut cmd = std::process::Command::new(program);
        cmd.env_clear();
        for name in INHERITED {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.env("LANG", LOCALE).env("LC_ALL", LOCALE).stdin(Stdio::null());
        Self {
            cmd,
            deadline: None,
            host: String::new(),
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// One of the tool's own variables (`PGPASSWORD`, `MYSQL_PWD`, `PGSSLMODE`, ...).
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(key, value);
        self
    }

    pub fn stdin(&mut self, cfg: Stdio) -> &mut Self {
        self.cmd.stdin(cfg);
        self
    }

    pub fn stdout(&mut self, cfg: Stdio) -> &mut Self {
        self.cmd.stdout(cfg);
        self
    }

    pub fn stderr(&mut self, cfg: Stdio) -> &mut Self {
        self.cmd.stderr(cfg);
        self
    }

    /// How long the tool may run before it is killed.
    pub fn deadline(&mut self, deadline: Duration) -> &mut Self {
        self.deadline = Some(deadline);
        self
    }

    /// The planet's own host, which excerpts of the tool's messages may keep.
    pub fn host(&mut self, host: &str) -> &mut Self {
        host.clone_into(&mut self.host);
        self
    }

    #[must_use]
    pub fn get_host(&self) -> &str {
        &self.host
    }

    /// The command as it stands (arguments and the tool's own variables), for tests.
    #[must_use]
    pub fn as_std(&self) -> &std::process::Command {
        &self.cmd
    }

    /// A scratch directory for one run, made the tool's home and working directory, so that
    /// nothing the worker's home holds is read and whatever the tool writes is removed with it.
    fn prepare(&mut self) -> std::io::Result<Scratch> {
        let dir = tempfile::Builder::new().prefix("svalbard-tool-").tempdir()?;
        let path = dir.path();
        self.cmd
            .current_dir(path)
            .env("HOME", path)
            .env("TMPDIR", path)
            // libpq and psql: files that do not exist, in a place the tool cannot be pointed
            // away from by the worker's own settings.
            .env("PGPASSFILE", path.join("pgpass"))
            .env("PGSERVICEFILE", path.join("pg_service.conf"))
            .env("PGSYSCONFDIR", path)
            .env("PSQLRC", path.join("psqlrc"))
            // The MariaDB tools also run with `--no-defaults`; this covers the rest.
            .env("MYSQL_HOME", path)
            .env("MYSQL_HISTFILE", "/dev/null");
        if let Some(root) = trusted_root_cert() {
            self.cmd.env("PGSSLROOTCERT", root);
        }
        Ok(Scratch(dir))
    }

    /// Starts the tool; it is killed when the returned child is dropped.
    pub fn spawn(self) -> std::io::Result<Running> {
        self.spawn_within(QUERY_DEADLINE)
    }

    /// As [`spawn`](Self::spawn), with `deadline` unless one was set.
    pub fn spawn_within(mut self, deadline: Duration) -> std::io::Result<Running> {
        let scratch = self.prepare()?;
        let mut cmd = tokio::process::Command::from(self.cmd);
        cmd.kill_on_drop(true);
        let child = cmd.spawn()?;
        Ok(Running {
            child,
            deadline: self.deadline.unwrap_or(deadline),
            host: self.host,
            _scratch: scratch,
        })
    }

    /// Runs the tool to completion without a runtime (for `--version` probes on blocking
    /// threads): its stdout, or an error naming how it ended.
    pub fn output_blocking(mut self) -> anyhow::Result<Vec<u8>> {
        use std::io::Read as _;
        let _scratch = self.prepare()?;
        let program = self.cmd.get_program().to_string_lossy().into_owned();
        let mut child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {program}"))?;
        let mut stdout = child.stdout.take().context("no stdout")?;
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = (&mut stdout).take(STDOUT_KEPT as u64).read_to_end(&mut out);
            out
        });
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > self.deadline.unwrap_or(VERSION_DEADLINE) {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("{program} did not answer within {VERSION_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = reader.join().unwrap_or_default();
        if !status.success() {
            anyhow::bail!("{program} failed ({status})");
        }
        Ok(out)
    }
}

/// A CA bundle the operator configured for verifying tenants' servers: `PGSSLROOTCERT` of the
/// worker, else the worker's `~/.postgresql/root.crt` (where libpq looks by default). It is a
/// public certificate, not a secret, and without it `verify-full` could not work.
fn trusted_root_cert() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PGSSLROOTCERT") {
        return Some(p.into());
    }
    let home = std::env::var_os("HOME")?;
    let default = PathBuf::from(home).join(".postgresql").join("root.crt");
    default.is_file().then_some(default)
}

/// The scratch directory of one tool run, removed when dropped.
struct Scratch(#[allow(dead_code)] tempfile::TempDir);

/// A started tool.
pub struct Running {
    pub child: Child,
    pub deadline: Duration,
    pub host: String,
    _scratch: Scratch,
}

/// Reads at most `limit` bytes of `reader`, draining the rest so the writer never blocks.
async fn read_capped(mut reader: impl AsyncRead + Unpin, limit: usize) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut cut = false;
    let mut buf = [0u8; 8192];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, cut));
        }
        let room = limit.saturating_sub(kept.len());
        cut |= n > room;
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

/// The tool's stderr for a tenant: logged in full (under the job's span), returned as an excerpt.
#[must_use]
pub fn report_failure(tool: &str, stderr: &str, host: &str) -> String {
    let stderr = stderr.trim();
    if !stderr.is_empty() {
        tracing::warn!(tool, stderr, "client tool failed");
    }
    excerpt(stderr, host)
}

/// Runs a client tool to completion: its trimmed stdout, or an error that names `target` and
/// carries an excerpt of the tool's stderr.
pub async fn run_client(mut cmd: ToolCommand, tool: &str, target: &str) -> anyhow::Result<String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut running = cmd
        .spawn()
        .with_context(|| format!("cannot run {tool} (is the client installed?)"))?;
    let stdout = running.child.stdout.take().context("no stdout")?;
    let stderr = running.child.stderr.take().context("no stderr")?;
    let deadline = running.deadline;
    let work = async {
        let (out, err) = tokio::try_join!(read_capped(stdout, STDOUT_KEPT), read_capped(stderr, STDERR_KEPT))?;
        let status = running.child.wait().await?;
        Ok::<_, std::io::Error>((out, err, status))
    };
    let Ok(finished) = tokio::time::timeout(deadline, work).await else {
        // Dropping the child kills it.
        anyhow::bail!(
            "{target}: {tool} did not finish within {} s and was stopped",
            deadline.as_secs()
        );
    };
    let ((out, out_cut), (err, _), status) = finished.with_context(|| format!("{tool} could not be read"))?;
    if !status.success() {
        let message = report_failure(tool, &String::from_utf8_lossy(&err), &running.host);
        anyhow::bail!("{target}: {message}");
    }
    if out_cut {
        anyhow::bail!("{target}: the answer of {tool} exceeds {STDOUT_KEPT} bytes");
    }
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// The stdout of a running tool, except that the end of the stream is an error (carrying an
/// excerpt of the tool's stderr) when the process failed: a dump cut short by a lost connection
/// or a killed server must never be stored as if it were complete.
///
/// Dropping it kills the process.
pub struct ProcessStream {
    stdout: ChildStdout,
    /// Drains stderr (so the tool never blocks on it) and waits for the exit status.
    exit: JoinHandle<std::io::Result<()>>,
    stdout_done: bool,
    exit_reported: bool,
}

/// Kernel buffer of the dump tool's stdout (the unprivileged maximum by default).
const PIPE_SIZE: usize = 1024 * 1024;

impl ProcessStream {
    /// Starts `cmd` with stdout and stderr piped; `name` appears in errors. The tool is killed
    /// when the stream is dropped or its deadline passes.
    pub fn spawn(mut cmd: ToolCommand, name: &'static str) -> anyhow::Result<Self> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut running = cmd
            .spawn_within(STREAM_DEADLINE)
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = running
            .child
            .stdout
            .take()
            .with_context(|| format!("{name} without stdout"))?;
        // A deeper pipe lets the dump tool keep writing while the reader is busy for a moment
        // (a part being handed to the uploader); best effort, the default is 64 KiB.
        if let Err(e) = rustix::pipe::fcntl_setpipe_size(&stdout, PIPE_SIZE) {
            tracing::debug!(error = %e, "could not enlarge the dump pipe");
        }
        let stderr = running
            .child
            .stderr
            .take()
            .with_context(|| format!("{name} without stderr"))?;
        let exit = tokio::spawn(
            async move {
                // The whole of it, scratch directory included, lives until the tool has exited.
                let mut running = running;
                let deadline = running.deadline;
                let work = async {
                    let (kept, _) = read_capped(stderr, STDERR_KEPT).await?;
                    let status = running.child.wait().await?;
                    Ok::<_, std::io::Error>((kept, status))
                };
                let Ok(finished) = tokio::time::timeout(deadline, work).await else {
                    let _ = running.child.start_kill();
                    return Err(std::io::Error::other(format!(
                        "{name} did not finish within {} s and was stopped",
                        deadline.as_secs()
                    )));
                };
                let (kept, status) = finished?;
                if status.success() {
                    Ok(())
                } else {
                    let message = report_failure(name, &String::from_utf8_lossy(&kept), &running.host);
                    Err(std::io::Error::other(format!("{name} failed ({status}): {message}")))
                }
            }
            .in_current_span(),
        );
        Ok(Self {
            stdout,
            exit,
            stdout_done: false,
            exit_reported: false,
        })
    }
}

impl AsyncRead for ProcessStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.stdout_done {
            let before = buf.filled().len();
            ready!(Pin::new(&mut self.stdout).poll_read(cx, buf))?;
            if buf.filled().len() > before || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            self.stdout_done = true;
        }
        if self.exit_reported {
            return Poll::Ready(Ok(()));
        }
        let exit = ready!(Pin::new(&mut self.exit).poll(cx));
        self.exit_reported = true;
        Poll::Ready(exit.unwrap_or_else(|e| Err(std::io::Error::other(format!("waiting for the tool failed: {e}")))))
    }
}

impl Drop for ProcessStream {
    fn drop(&mut self) {
        // Dropping the task drops the child, which `kill_on_drop` kills.
        self.exit.abort();
    }
}

/// What a tenant may read of a tool's message: at most [`EXCERPT_CHARS`] characters, on one
/// line, with file paths, URLs, `KEY=value` assignments and IP addresses or host names other
/// than `host` (the planet's own) replaced by placeholders.
#[must_use]
pub fn excerpt(message: &str, host: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut previous = String::new();
    for word in message.split_whitespace() {
        let cleaned = clean_word(word, &previous, host);
        previous = word
            .trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_ascii_lowercase();
        words.push(cleaned);
    }
    let joined = words.join(" ");
    if joined.chars().count() <= EXCERPT_CHARS {
        return joined;
    }
    let mut cut: String = joined.chars().take(EXCERPT_CHARS).collect();
    cut.push('…');
    cut
}

/// Words after which a dotted name is a host, as libpq and the MariaDB client phrase it
/// (`server at "db.example"`, `host name "db.example"`, `server on 'db.example'`).
const HOST_CONTEXT: &[&str] = &["host", "server", "at", "on", "to", "name", "address", "hostname"];

fn clean_word(word: &str, previous: &str, host: &str) -> String {
    // Quotes, brackets and trailing punctuation stay; the core is judged.
    let start = word
        .find(|c: char| !matches!(c, '"' | '\'' | '(' | '[' | '<' | '`' | '«'))
        .unwrap_or(word.len());
    let end = word
        .rfind(|c: char| !matches!(c, '"' | '\'' | ')' | ']' | '>' | '`' | ',' | ';' | ':' | '.' | '»'))
        .map_or(start, |i| i + word[i..].chars().next().map_or(1, char::len_utf8));
    if start >= end {
        return word.to_owned();
    }
    let (lead, core, tail) = (&word[..start], &word[start..end], &word[end..]);
    let replacement = if core.contains("://") {
        Some("<url>")
    } else if is_assignment(core) {
        Some("<setting>")
    } else if is_path(core) {
        Some("<path>")
    } else if is_address(core) && !same_host(core, host) {
        Some("<address>")
    } else if HOST_CONTEXT.contains(&previous)
        && is_host_name(core)
        && (core.contains('.') || !lead.is_empty())
        && !same_host(core, host)
    {
        Some("<host>")
    } else {
        None
    };
    match replacement {
        Some(r) => format!("{lead}{r}{tail}"),
        None => word.to_owned(),
    }
}

fn same_host(core: &str, host: &str) -> bool {
    !host.is_empty() && core.eq_ignore_ascii_case(host)
}

/// `NAME=value`, as `env` prints it or a configuration file holds it.
fn is_assignment(core: &str) -> bool {
    let Some((name, _)) = core.split_once('=') else {
        return false;
    };
    !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_path(core: &str) -> bool {
    (core.starts_with('/') && core.len() > 1)
        || core.starts_with("./")
        || core.starts_with("../")
        || core.starts_with("~/")
        || core.split('/').filter(|s| !s.is_empty()).count() >= 3
}

/// An IPv4 or IPv6 address, possibly with a port (`10.0.0.5:5432`, `[fe80::1]:5432`).
fn is_address(core: &str) -> bool {
    use std::net::{IpAddr, SocketAddr};
    core.parse::<IpAddr>().is_ok()
        || core.parse::<SocketAddr>().is_ok()
        || (core.contains("]:") && format!("[{core}").parse::<SocketAddr>().is_ok())
        || core.strip_suffix(']').is_some_and(|a| a.parse::<IpAddr>().is_ok())
        || core
            .split('%')
            .next()
            .is_some_and(|a| a.contains(':') && a.parse::<std::net::Ipv6Addr>().is_ok())
}

/// A DNS name such as `db.internal` or `localhost`.
fn is_host_name(core: &str) -> bool {
    let labels: Vec<&str> = core.split('.').collect();
    labels
        .iter()
        .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        && labels
            .last()
            .is_some_and(|l| l.chars().any(|c| c.is_ascii_alphabetic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set (to a secret-looking value) in the environment of the test's own re-run, where the
    /// spawned tool must not see it.
    const PROBE: &str = "SVALBARD_TEST_PROBE_SECRET";

    #[tokio::test]
    async fn a_tool_sees_only_the_allowlist() {
        if std::env::var_os(PROBE).is_none() {
            // Re-run this very test with secrets in the environment, as the worker has them.
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "process::tests::a_tool_sees_only_the_allowlist",
                    "--nocapture",
                ])
                .env(PROBE, "hunter2-probe")
                .env("DATABASE_URL", "postgres://svalbard:hunter2-probe@control/svalbard")
                .env("SVALBARD_CRYPTO__KEYS", "k1:hunter2-probe")
                .env("S3_SECRET_ACCESS_KEY", "hunter2-probe")
                .env("PGPASSWORD", "hunter2-probe")
                .env("PGSERVICE", "control")
                .env("MYSQL_PWD", "hunter2-probe")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
            assert!(text.contains("1 passed"), "{text}");
            return;
        }
        let mut cmd = ToolCommand::new("env");
        cmd.env("PGPASSWORD", "the-planets-own");
        let printed = run_client(cmd, "env", "test").await.unwrap();
        assert!(!printed.contains("hunter2-probe"), "{printed}");
        let names: Vec<&str> = printed
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        let allowed = [
            "PATH",
            "LANG",
            "LC_ALL",
            "HOME",
            "TMPDIR",
            "PGPASSFILE",
            "PGSERVICEFILE",
            "PGSYSCONFDIR",
            "PSQLRC",
            "MYSQL_HOME",
            "MYSQL_HISTFILE",
            "PGSSLROOTCERT",
            "PGPASSWORD",
        ];
        for n in &names {
            assert!(allowed.contains(n), "{n} reached the tool: {printed}");
        }
        assert!(printed.contains("PGPASSWORD=the-planets-own"), "{printed}");
        // Home and working directory are the scratch directory, not the worker's.
        let home = printed.lines().find_map(|l| l.strip_prefix("HOME=")).unwrap();
        assert!(home.contains("svalbard-tool-"), "{home}");
        assert_ne!(Some(std::ffi::OsString::from(home)), std::env::var_os("HOME"));
        let mut pwd = ToolCommand::new("pwd");
        pwd.arg("-P");
        let cwd = run_client(pwd, "pwd", "test").await.unwrap();
        assert!(cwd.contains("svalbard-tool-"), "{cwd}");
        assert!(!std::path::Path::new(&cwd).exists(), "the scratch directory was kept");
    }

    #[tokio::test]
    async fn a_tool_past_its_deadline_is_stopped_and_its_output_is_capped() {
        let mut cmd = ToolCommand::new("sleep");
        cmd.arg("30").deadline(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let err = run_client(cmd, "sleep", "test").await.unwrap_err().to_string();
        assert!(err.contains("did not finish"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let mut cmd = ToolCommand::new("head");
        cmd.args(["-c", &(STDOUT_KEPT + 10).to_string(), "/dev/zero"]);
        let err = run_client(cmd, "head", "test").await.unwrap_err().to_string();
        assert!(err.contains("exceeds"), "{err}");

        let mut cmd = ToolCommand::new("sh");
        cmd.args(["-c", "head -c 100000 /dev/zero | tr '\\0' x >&2; exit 3"]);
        let err = run_client(cmd, "sh", "test").await.unwrap_err().to_string();
        assert!(err.len() < 1000, "{}", err.len());
    }

    #[tokio::test]
    async fn a_streaming_tool_keeps_its_scratch_directory_until_it_ends() {
        let mut cmd = ToolCommand::new("sh");
        cmd.args(["-c", "sleep 0.3; test -d \"$PWD\" && echo kept"]);
        let mut stream = ProcessStream::spawn(cmd, "sh").unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        assert_eq!(out.trim(), "kept");
    }

    #[test]
    fn version_probes_go_through_the_same_door() {
        let mut cmd = ToolCommand::new("sh");
        cmd.args(["-c", "echo $HOME; test -z \"$CARGO_MANIFEST_DIR\" && echo clean"]);
        let out = cmd.output_blocking().unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("svalbard-tool-") && text.contains("clean"), "{text}");
    }

    #[test]
    fn excerpts_keep_the_sense_and_drop_what_is_not_the_tenants() {
        let host = "db.tenant.example";
        let m = excerpt(
            "pg_dump: error: connection to server at \"db.tenant.example\" (10.1.2.3), port 5432 failed: \
             FATAL:  password authentication failed for user \"app\"",
            host,
        );
        assert_eq!(
            m,
            "pg_dump: error: connection to server at \"db.tenant.example\" (<address>), port 5432 failed: FATAL: \
             password authentication failed for user \"app\""
        );
        let m = excerpt(
            "psql: error: could not translate host name \"control.internal\" to address: Name or service not known",
            host,
        );
        assert!(m.contains("\"<host>\"") && !m.contains("control.internal"), "{m}");
        let m = excerpt(
            "DATABASE_URL=postgres://svalbard:pw@10.0.0.1/svalbard\nSVALBARD_CRYPTO__KEYS=k1:abc\nHOME=/root\n\
             psql:<stdin>:3: ERROR: division by zero",
            host,
        );
        assert!(!m.contains("pw@") && !m.contains("abc") && !m.contains("/root"), "{m}");
        assert!(m.contains("division by zero"), "{m}");
        let m = excerpt(
            "could not open file \"/etc/svalbard/keys.toml\": Permission denied",
            host,
        );
        assert_eq!(m, "could not open file \"<path>\": Permission denied");
        let m = excerpt(
            "ERROR 2005 (HY000): Unknown server host 'metadata.google.internal' (-2)",
            host,
        );
        assert!(!m.contains("metadata"), "{m}");
        let m = excerpt("connect to [fe80::1]:5432 or 169.254.169.254:80 failed", host);
        assert!(!m.contains("fe80") && !m.contains("169.254"), "{m}");
        // Names of the tenant's own objects and version numbers stay.
        let m = excerpt("relation \"public.orders\" does not exist; server 15.20", host);
        assert_eq!(m, "relation \"public.orders\" does not exist; server 15.20");
        let long = "x".repeat(1000);
        let m = excerpt(&format!("é{long}"), host);
        assert_eq!(m.chars().count(), EXCERPT_CHARS + 1);
    }
}
