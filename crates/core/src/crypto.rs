//! Secrets at rest: XChaCha20-Poly1305 under a key ring, each sealed value tagged with its key id
//! so keys can rotate (the first key seals; every key opens).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};

const NONCE_LEN: usize = 24;

/// HMAC-SHA256 of `data` under `key`.
#[must_use]
pub fn mac(key: &[u8], data: &[u8]) -> [u8; 32] {
    type HmacSha256 = hmac::Hmac<sha2::Sha256>;
    let mut m = <HmacSha256 as hmac::Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    hmac::Mac::update(&mut m, data);
    hmac::Mac::finalize(m).into_bytes().into()
}

pub struct KeyRing {
    /// (key id, cipher); the first one seals.
    keys: Vec<(String, XChaCha20Poly1305)>,
    /// Seed of keys for other purposes (MACs), derived from the sealing key so that no key
    /// serves two purposes.
    derive_seed: [u8; 32],
}

/// A sealed value and the id of the key that sealed it.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl KeyRing {
    /// Parses `id:base64key[,id:base64key...]`.
    pub fn parse(spec: &SecretString) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        let mut derive_seed = None;
        for item in spec.expose_secret().split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, b64) = item
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("crypto.keys: expected `keyid:base64`"))?;
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| anyhow::anyhow!("crypto.keys: key `{id}` is not base64"))?;
            anyhow::ensure!(
                raw.len() == 32,
                "crypto.keys: key `{id}` must be 32 bytes, got {}",
                raw.len()
            );
            let cipher = XChaCha20Poly1305::new_from_slice(&raw)
                .map_err(|_| anyhow::anyhow!("crypto.keys: key `{id}` is unusable"))?;
            keys.push((id.to_owned(), cipher));
            derive_seed.get_or_insert_with(|| mac(&raw, b"svalbard key ring: derived keys"));
        }
        anyhow::ensure!(!keys.is_empty(), "crypto.keys: at least one key is required");
        Ok(Self {
            keys,
            derive_seed: derive_seed.unwrap_or_default(),
        })
    }

    /// A key for `purpose` (e.g. `idempotency fingerprints`), stable while the first key is.
    #[must_use]
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        mac(&self.derive_seed, purpose.as_bytes())
    }

    /// A fresh random key spec (`id:base64`), for development set-ups.
    #[must_use]
    pub fn generate_spec(id: &str) -> String {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        format!("{id}:{}", STANDARD.encode(key))
    }

    /// Seals `plaintext`; `context` (e.g. the row id) is authenticated so a value cannot be moved.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> anyhow::Result<Sealed> {
        let (id, cipher) = &self.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ct);
        Ok(Sealed {
            key_id: id.clone(),
            bytes,
        })
    }

    /// Ids of the configured keys, the sealing one first; never the keys themselves.
    #[must_use]
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (_, cipher) =
            self.keys.iter().find(|(id, _)| *id == sealed.key_id).ok_or_else(|| {
                anyhow::anyhow!("the key `{}` that sealed this secret is not configured", sealed.key_id)
            })?;
        anyhow::ensure!(sealed.bytes.len() > NONCE_LEN, "sealed secret is truncated");
        let (nonce, ct) = sealed.bytes.split_at(NONCE_LEN);
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: context })
            .map_err(|_| anyhow::anyhow!("sealed secret does not authenticate under key `{}`", sealed.key_id))
    }
}

const CHECK_VALUE: &[u8] = b"svalbard key check";
const CHECK_CONTEXT: &[u8] = b"key_check";

/// Refuses a key ring that cannot open the check value of the control database.
///
/// The first process to start seals the value with its first key; every later one must open it
/// with one of its keys. A process with another installation's keys would otherwise take this
/// database's jobs and fail each of them on the first secret it cannot open. When the value was
/// sealed with an older key of the ring, it is sealed again with the first one, so retiring the
/// old key later keeps working, and the old key is recorded as retired: a ring that puts it
/// first again is refused, so a stale process cannot undo a rotation.
pub async fn verify_ring(pool: &sqlx::PgPool, ring: &KeyRing) -> anyhow::Result<()> {
    let fresh = ring.seal(CHECK_VALUE, CHECK_CONTEXT)?;
    sqlx::query("INSERT INTO key_check (key_id, sealed) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(&fresh.key_id)
        .bind(&fresh.bytes)
        .execute(pool)
        .await?;
    let (key_id, bytes, retired): (String, Vec<u8>, Vec<String>) =
        sqlx::query_as("SELECT key_id, sealed, retired_key_ids FROM key_check")
            .fetch_one(pool)
            .await?;
    let stored = Sealed { key_id, bytes };
    let opened = ring.open(&stored, CHECK_CONTEXT);
    if !matches!(&opened, Ok(v) if v == CHECK_VALUE) {
        let why = opened
            .err()
            .map_or_else(|| "it holds another value".to_owned(), |e| e.to_string());
        anyhow::bail!(
            "crypto.keys does not belong to this control database: its key ring (key ids: {}) cannot open \
             the database's key check value, sealed with key `{}` ({why}). A process with these keys would \
             fail every job whose secrets it cannot open, so it does not start. Configure the key ring the \
             API and the other workers of this database use; to rotate, put the new key first and keep the \
             old one after it.",
            ring.ids().join(", "),
            stored.key_id,
        );
    }
    if retired.contains(&fresh.key_id) {
        anyhow::bail!(
            "crypto.keys puts key `{}` first, but a rotation has already moved this control database from it to \
             key `{}`: a process with this ring would seal secrets back to the old key. Put key `{}` first (the \
             old one may stay after it).",
            fresh.key_id,
            stored.key_id,
            stored.key_id,
        );
    }
    if stored.key_id != fresh.key_id {
        // The key moved away from is recorded, so that no stale process can move back to it.
        sqlx::query(
            "UPDATE key_check SET key_id = $1, sealed = $2, updated_at = now(),
                    retired_key_ids = array_append(array_remove(retired_key_ids, $3), $3)
             WHERE key_id = $3",
        )
        .bind(&fresh.key_id)
        .bind(&fresh.bytes)
        .bind(&stored.key_id)
        .execute(pool)
        .await?;
        tracing::info!(from = %stored.key_id, to = %fresh.key_id, "key check value sealed again with the first key");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_opens_old_and_seals_with_first() {
        let old = KeyRing::generate_spec("k1");
        let new = KeyRing::generate_spec("k2");
        let ring1 = KeyRing::parse(&old.clone().into()).unwrap();
        let sealed = ring1.seal(b"hunter2", b"row").unwrap();
        let ring2 = KeyRing::parse(&format!("{new},{old}").into()).unwrap();
        assert_eq!(ring2.open(&sealed, b"row").unwrap(), b"hunter2");
        assert_eq!(ring2.seal(b"x", b"row").unwrap().key_id, "k2");
        assert!(ring2.open(&sealed, b"other-row").is_err());
    }
}
