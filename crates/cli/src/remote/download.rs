//! Downloading an archive through its pre-signed URL: into `<file>.part`, resumed with a
//! `Range` request when an earlier download stopped, and checked against the backup's
//! checksum before it takes its final name.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What a finished download wrote.
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    /// Bytes that were already there from an earlier, interrupted download.
    pub resumed_from: u64,
    pub checksum: String,
}

/// Fetches `url` into `out`. `size` and `checksum` (`sha256:<hex>`) are the backup's; a file
/// whose checksum differs is removed and reported, never left under the final name.
pub async fn fetch(
    url: &str,
    out: &Path,
    size: Option<u64>,
    checksum: Option<&str>,
    quiet: bool,
) -> anyhow::Result<Downloaded> {
    let part = part_path(out);
    let mut hasher = Sha256::new();
    let mut have = hash_existing(&part, &mut hasher).await?;
    if size.is_some_and(|s| have > s) {
        // Longer than the archive: not a piece of it.
        tokio::fs::remove_file(&part).await?;
        hasher = Sha256::new();
        have = 0;
    }

    // A pre-signed URL carries its own authorisation: the bearer token is never sent to storage.
    let http = reqwest::Client::builder()
        .user_agent(concat!("svalbard-cli/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut req = http.get(url);
    if have > 0 && size != Some(have) {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let resumed_from = have;
    if size != Some(have) || have == 0 {
        let resp = req.send().await.context("cannot reach object storage")?;
        let status = resp.status();
        let append = match status {
            StatusCode::PARTIAL_CONTENT => true,
            StatusCode::OK => false,
            StatusCode::RANGE_NOT_SATISFIABLE => true,
            other => anyhow::bail!(
                "object storage answered {other} for the archive (the link may have expired; run the command again)"
            ),
        };
        let mut file = if append {
            tokio::fs::OpenOptions::new().append(true).open(&part).await?
        } else {
            hasher = Sha256::new();
            have = 0;
            tokio::fs::File::create(&part)
                .await
                .with_context(|| format!("cannot write {}", part.display()))?
        };
        if status != StatusCode::RANGE_NOT_SATISFIABLE {
            let bar = progress(size, have, quiet);
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.context("the download was cut off; run the command again to resume")?;
                file.write_all(&chunk).await?;
                hasher.update(&chunk);
                have += chunk.len() as u64;
                bar.set_position(have);
            }
            bar.finish_and_clear();
        }
        file.flush().await?;
        file.sync_all().await?;
    }

    let got = format!("sha256:{}", hex::encode(hasher.finalize()));
    if let Some(size) = size {
        anyhow::ensure!(
            have == size,
            "received {have} bytes of {size}; run the command again to resume"
        );
    }
    if let Some(want) = checksum
        && want != got
    {
        tokio::fs::remove_file(&part).await.ok();
        anyhow::bail!(
            "the downloaded archive does not match the backup's checksum ({got}, expected {want}); removed it"
        );
    }
    tokio::fs::rename(&part, out)
        .await
        .with_context(|| format!("cannot move the download to {}", out.display()))?;
    Ok(Downloaded {
        path: out.to_owned(),
        bytes: have,
        resumed_from,
        checksum: got,
    })
}

/// `<file>.part`, where a download is kept until it is complete and checked.
pub fn part_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    out.with_file_name(name)
}

/// Feeds what an earlier download left into `hasher`; answers its length (0 when none).
async fn hash_existing(part: &Path, hasher: &mut Sha256) -> anyhow::Result<u64> {
    let mut file = match tokio::fs::File::open(part).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", part.display())),
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(len);
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

fn progress(size: Option<u64>, at: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = match size {
        Some(s) => ProgressBar::new(s).with_style(
            ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner(),
    };
    bar.set_position(at);
    bar
}

#[cfg(test)]
mod tests {
    use super::part_path;
    use std::path::Path;

    #[test]
    fn part_file_sits_beside_the_target() {
        assert_eq!(part_path(Path::new("dir/a.svb.zst")), Path::new("dir/a.svb.zst.part"));
        assert_eq!(part_path(Path::new("a")), Path::new("a.part"));
    }
}
