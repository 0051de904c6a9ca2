//! The archive format: one object that plain `zstd -d` turns into the engine's own dump, once
//! decrypted where it is encrypted (see [`crate::envelope`]: an age file whose plaintext is
//! what this module describes).
//!
//! An archive starts with a zstd *skippable frame* whose payload is `SVALBARD` followed by the
//! JSON [`ArchiveHeader`]; standard decompressors skip that frame, so the rest is an ordinary
//! zstd stream of the dump. A downloaded archive is therefore enough to restore, with or
//! without Svalbard, and the catalog can be rebuilt from the bucket.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Newest archive format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Magic number of the skippable frame carrying the header (the first of the sixteen zstd
/// reserves for skippable frames; the others are left to other tools).
pub const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;

/// First bytes of the skippable frame's payload, telling our frame from anyone else's.
pub const HEADER_MAGIC: &[u8; 8] = b"SVALBARD";

/// Largest header frame accepted, so a reader knows how many leading bytes it needs and a
/// hostile file cannot make it buffer much.
pub const MAX_HEADER_FRAME: usize = 64 * 1024;

/// Bytes of the skippable frame before its payload: magic and payload length.
const FRAME_PREFIX: usize = 8;

/// What an archive says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveHeader {
    pub format_version: u32,
    /// `postgresql`, `mysql`, ...
    pub engine: String,
    /// Version of the server that was dumped.
    pub engine_version: String,
    /// Version of the dump tool that wrote the dump.
    pub tool_version: String,
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    pub planet_id: Uuid,
    pub backup_id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// `manifest.json`, written next to the archive once it is complete; its presence marks the
/// backup as usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u32,
    pub backup_id: Uuid,
    pub engine: String,
    pub engine_version: String,
    pub tool_version: String,
    /// Key of the archive object in the bucket.
    pub archive_key: String,
    /// Size of the stored archive object.
    pub size_bytes: u64,
    /// `sha256:<hex>` of the stored archive object's bytes.
    pub checksum: String,
    /// Size of the dump before compression.
    pub uncompressed_bytes: u64,
    /// `none`, or `age`: the archive is an age file, encrypted to `recipient`.
    #[serde(default = "no_encryption")]
    pub encryption: String,
    /// The tenant key (an age recipient) the archive was encrypted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
}

fn no_encryption() -> String {
    crate::envelope::NONE.to_owned()
}

/// The `checksum` notation used in manifests and the API for a SHA-256 given in hex.
#[must_use]
pub fn sha256_checksum(hex_digest: &str) -> String {
    format!("sha256:{hex_digest}")
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the archive header is invalid: {0}")]
    InvalidHeader(String),
    #[error(
        "the archive has format version {found}, newer than version {supported} supported by this \
         Svalbard; restore it with a Svalbard release that supports format version {found}"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    /// The header frame is cut off: at least `needed` leading bytes are required.
    #[error("the archive header is truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
}

/// The whole skippable frame carrying `header`, to be written before the zstd stream.
#[must_use]
pub fn encode_header(header: &ArchiveHeader) -> Vec<u8> {
    // Serializing a struct of strings, numbers, UUIDs and a timestamp cannot fail.
    let json = serde_json::to_vec(header).unwrap_or_default();
    let payload_len = HEADER_MAGIC.len() + json.len();
    let mut out = Vec::with_capacity(FRAME_PREFIX + payload_len);
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(HEADER_MAGIC);
    out.extend_from_slice(&json);
    out
}

/// Reads the header at the start of an archive.
///
/// `prefix` holds the first bytes of the file (reading [`MAX_HEADER_FRAME`] bytes, or the
/// whole file when smaller, is always enough). Returns the header and the number of bytes the
/// frame takes, after which the zstd stream of the dump starts; `None` when the bytes do not
/// start with a Svalbard header, e.g. a plain dump or a plain zstd file.
pub fn read_header(prefix: &[u8]) -> Result<Option<(ArchiveHeader, usize)>, ArchiveError> {
    let magic_end = FRAME_PREFIX + HEADER_MAGIC.len();
    if prefix.len() < magic_end {
        return Ok(None);
    }
    if prefix[..4] != SKIPPABLE_MAGIC.to_le_bytes() || &prefix[FRAME_PREFIX..magic_end] != HEADER_MAGIC {
        return Ok(None);
    }
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&prefix[4..FRAME_PREFIX]);
    let payload_len = u32::from_le_bytes(len_bytes) as usize;
    let frame_len = FRAME_PREFIX.saturating_add(payload_len);
    if payload_len < HEADER_MAGIC.len() || frame_len > MAX_HEADER_FRAME {
        return Err(ArchiveError::InvalidHeader(format!(
            "header frame of {frame_len} bytes (at most {MAX_HEADER_FRAME} allowed)"
        )));
    }
    if prefix.len() < frame_len {
        return Err(ArchiveError::Truncated {
            needed: frame_len,
            available: prefix.len(),
        });
    }
    let json = &prefix[magic_end..frame_len];

    // The version is checked before the rest, because a newer format may have changed the
    // other fields and "unsupported version" is the useful message then.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct VersionOnly {
        format_version: u32,
    }
    let version: VersionOnly = serde_json::from_slice(json).map_err(|e| ArchiveError::InvalidHeader(e.to_string()))?;
    if version.format_version > FORMAT_VERSION {
        return Err(ArchiveError::UnsupportedVersion {
            found: version.format_version,
            supported: FORMAT_VERSION,
        });
    }
    if version.format_version == 0 {
        return Err(ArchiveError::InvalidHeader(
            "format version 0 does not exist".to_owned(),
        ));
    }
    let header: ArchiveHeader = serde_json::from_slice(json).map_err(|e| ArchiveError::InvalidHeader(e.to_string()))?;
    Ok(Some((header, frame_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> ArchiveHeader {
        ArchiveHeader {
            format_version: FORMAT_VERSION,
            engine: "postgresql".to_owned(),
            engine_version: "15.20 (Debian 15.20-0+deb12u1)".to_owned(),
            tool_version: "15.20".to_owned(),
            tenant_id: Uuid::now_v7(),
            project_id: Uuid::now_v7(),
            planet_id: Uuid::now_v7(),
            backup_id: Uuid::now_v7(),
            created_at: Utc::now(),
        }
    }

    fn frame_with_json(json: &[u8]) -> Vec<u8> {
        let mut out = SKIPPABLE_MAGIC.to_le_bytes().to_vec();
        out.extend_from_slice(&u32::try_from(HEADER_MAGIC.len() + json.len()).unwrap().to_le_bytes());
        out.extend_from_slice(HEADER_MAGIC);
        out.extend_from_slice(json);
        out
    }

    #[test]
    fn header_round_trips_and_reports_its_length() {
        let h = header();
        let mut bytes = encode_header(&h);
        let frame_len = bytes.len();
        bytes.extend_from_slice(&[0x28, 0xB5, 0x2F, 0xFD, 1, 2, 3]);
        let (back, consumed) = read_header(&bytes).unwrap().unwrap();
        assert_eq!(back, h);
        assert_eq!(consumed, frame_len);
    }

    #[test]
    fn header_json_is_camel_case() {
        let bytes = encode_header(&header());
        let json: serde_json::Value = serde_json::from_slice(&bytes[16..]).unwrap();
        for field in [
            "formatVersion",
            "engineVersion",
            "toolVersion",
            "tenantId",
            "backupId",
            "createdAt",
        ] {
            assert!(json.get(field).is_some(), "missing {field} in {json}");
        }
    }

    #[test]
    fn header_frame_is_skipped_by_zstd() {
        let mut archive = encode_header(&header());
        archive.extend_from_slice(&zstd::encode_all(&b"the dump"[..], 1).unwrap());
        assert_eq!(zstd::decode_all(&archive[..]).unwrap(), b"the dump");
    }

    #[test]
    fn other_data_is_not_an_archive() {
        assert!(read_header(b"").unwrap().is_none());
        assert!(read_header(b"PGDMP\x01\x0e\x00").unwrap().is_none());
        assert!(
            read_header(&zstd::encode_all(&b"plain zstd"[..], 1).unwrap())
                .unwrap()
                .is_none()
        );
        // Someone else's skippable frame.
        let mut other = SKIPPABLE_MAGIC.to_le_bytes().to_vec();
        other.extend_from_slice(&8u32.to_le_bytes());
        other.extend_from_slice(b"SOMEONE!");
        assert!(read_header(&other).unwrap().is_none());
    }

    #[test]
    fn newer_format_is_refused_naming_both_versions() {
        let bytes = frame_with_json(br#"{"formatVersion":7,"somethingNew":true}"#);
        let err = read_header(&bytes).unwrap_err();
        assert!(matches!(
            err,
            ArchiveError::UnsupportedVersion {
                found: 7,
                supported: FORMAT_VERSION
            }
        ));
        let msg = err.to_string();
        assert!(
            msg.contains("version 7") && msg.contains(&format!("version {FORMAT_VERSION}")),
            "{msg}"
        );
    }

    #[test]
    fn bad_json_and_truncation_are_errors() {
        assert!(matches!(
            read_header(&frame_with_json(b"{not json")),
            Err(ArchiveError::InvalidHeader(_))
        ));
        assert!(matches!(
            read_header(&frame_with_json(br#"{"formatVersion":1}"#)),
            Err(ArchiveError::InvalidHeader(_))
        ));
        let bytes = encode_header(&header());
        assert!(matches!(
            read_header(&bytes[..bytes.len() - 1]),
            Err(ArchiveError::Truncated { needed, .. }) if needed == bytes.len()
        ));
    }

    #[test]
    fn manifest_is_camel_case() {
        let now = Utc::now();
        let m = Manifest {
            format_version: FORMAT_VERSION,
            backup_id: Uuid::now_v7(),
            engine: "postgresql".to_owned(),
            engine_version: "15.20".to_owned(),
            tool_version: "15.20".to_owned(),
            archive_key: "tenants/t/backup.pgdump.zst".to_owned(),
            size_bytes: 10,
            checksum: sha256_checksum("ab"),
            uncompressed_bytes: 20,
            encryption: "age".to_owned(),
            recipient: Some("age1xyz".to_owned()),
            created_at: now,
            completed_at: now,
        };
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["checksum"], "sha256:ab");
        assert_eq!(json["archiveKey"], "tenants/t/backup.pgdump.zst");
        assert_eq!(json["uncompressedBytes"], 20);
        assert_eq!(serde_json::from_value::<Manifest>(json).unwrap(), m);
    }
}
