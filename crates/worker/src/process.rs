//! A dump tool's output as a stream whose end reports how the tool exited.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, ReadBuf};
use tokio::process::{ChildStdout, Command};
use tokio::task::JoinHandle;

/// Runs a client tool to completion: its trimmed stdout, or an error that names `target` and
/// carries the tool's stderr.
pub async fn run_client(mut cmd: Command, tool: &str, target: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .with_context(|| format!("cannot run {tool} (is the client installed?)"))?;
    if !out.status.success() {
        anyhow::bail!("{target}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Most of a tool's stderr kept for the error message.
const STDERR_KEPT: usize = 16 * 1024;

/// The stdout of a running tool, except that the end of the stream is an error (carrying the
/// tool's stderr) when the process failed: a dump cut short by a lost connection or a killed
/// server must never be stored as if it were complete.
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
    /// Starts `cmd`, which must pipe stdout and stderr and kill on drop; `name` appears in errors.
    pub fn spawn(mut cmd: Command, name: &'static str) -> anyhow::Result<Self> {
        let mut child = cmd
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = child.stdout.take().with_context(|| format!("{name} without stdout"))?;
        // A deeper pipe lets the dump tool keep writing while the reader is busy for a moment
        // (a part being handed to the uploader); best effort, the default is 64 KiB.
        if let Err(e) = rustix::pipe::fcntl_setpipe_size(&stdout, PIPE_SIZE) {
            tracing::debug!(error = %e, "could not enlarge the dump pipe");
        }
        let mut stderr = child.stderr.take().with_context(|| format!("{name} without stderr"))?;
        let exit = tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                let n = stderr.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            let status = child.wait().await?;
            if status.success() {
                Ok(())
            } else {
                let message = String::from_utf8_lossy(&kept);
                Err(std::io::Error::other(format!(
                    "{name} failed ({status}): {}",
                    message.trim()
                )))
            }
        });
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
