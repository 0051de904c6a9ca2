//! Envelope encryption of archives, in the age format (`age-encryption.org/v1`).
//!
//! Three layers of keys:
//! - each archive is encrypted while it streams under a key of its own, the *data key* (age's
//!   file key);
//! - the data key is wrapped for a *tenant key*, an age X25519 identity: once in the archive's
//!   own age header, so that `age -d -i tenant.key` opens a downloaded archive with no help
//!   from Svalbard, and once in the catalog, under a key derived from the tenant key, so that
//!   rotating the tenant key re-wraps every data key without rewriting an archive;
//! - tenant keys are sealed by the platform's master keys (`crypto.keys`); rotating a master
//!   key seals them again, and no archive is touched.
//!
//! Deleting a tenant deletes its keys: whatever is left of its archives, in a bucket's old
//! versions or on someone's disk, can no longer be decrypted (crypto-shredding).

use std::collections::HashSet;
use std::io::Read;
use std::sync::Mutex;

use age::secrecy::ExposeSecret as _;
use age::x25519;
use age_core::format::{FileKey, Stanza};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::SecretString;
use uuid::Uuid;

use crate::crypto::{KeyRing, Sealed, mac};

/// First bytes of every age file.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// `encryption` of an archive encrypted as this module describes.
pub const AGE: &str = "age";
/// `encryption` of an archive stored in the clear.
pub const NONE: &str = "none";

/// Bytes of an age file key.
const DATA_KEY_LEN: usize = 16;
const NONCE_LEN: usize = 24;

/// Whether the bytes start an age file.
#[must_use]
pub fn is_encrypted(head: &[u8]) -> bool {
    head.starts_with(AGE_MAGIC)
}

/// The key one archive is encrypted with (age's file key).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DataKey([u8; DATA_KEY_LEN]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// One version of a tenant's key: an age X25519 identity.
#[derive(Clone)]
pub struct TenantKey {
    pub version: i32,
    identity: x25519::Identity,
}

impl std::fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantKey")
            .field("version", &self.version)
            .field("recipient", &self.recipient().to_string())
            .finish_non_exhaustive()
    }
}

fn seal_context(tenant: Uuid, version: i32) -> Vec<u8> {
    format!("tenant_key:{tenant}:{version}").into_bytes()
}

impl TenantKey {
    #[must_use]
    pub fn generate(version: i32) -> Self {
        Self {
            version,
            identity: x25519::Identity::generate(),
        }
    }

    /// Reads an `AGE-SECRET-KEY-1...` line.
    pub fn parse(version: i32, identity: &str) -> anyhow::Result<Self> {
        let identity = identity
            .trim()
            .parse::<x25519::Identity>()
            .map_err(|e| anyhow::anyhow!("not an age X25519 identity: {e}"))?;
        Ok(Self { version, identity })
    }

    /// The public half (`age1...`), which archives are encrypted to.
    #[must_use]
    pub fn recipient(&self) -> x25519::Recipient {
        self.identity.to_public()
    }

    /// The secret half, as age writes it in an identity file.
    #[must_use]
    pub fn identity(&self) -> SecretString {
        SecretString::from(self.identity.to_string().expose_secret().to_owned())
    }

    /// Seals the identity under the master key ring, bound to its tenant and version.
    pub fn seal(&self, ring: &KeyRing, tenant: Uuid) -> anyhow::Result<Sealed> {
        ring.seal(
            self.identity.to_string().expose_secret().as_bytes(),
            &seal_context(tenant, self.version),
        )
    }

    /// Opens what [`TenantKey::seal`] sealed.
    pub fn open(ring: &KeyRing, tenant: Uuid, version: i32, sealed: &Sealed) -> anyhow::Result<Self> {
        let plain = ring.open(sealed, &seal_context(tenant, version))?;
        let text = std::str::from_utf8(&plain).map_err(|_| anyhow::anyhow!("the sealed tenant key is not text"))?;
        Self::parse(version, text)
    }

    /// The cipher that wraps data keys in the catalog, derived from the identity so that no key
    /// serves two purposes.
    fn wrapping_cipher(&self) -> XChaCha20Poly1305 {
        let key = mac(
            self.identity.to_string().expose_secret().as_bytes(),
            b"svalbard: data keys in the catalog",
        );
        XChaCha20Poly1305::new(&key.into())
    }

    /// Wraps an archive's data key, bound to its backup.
    pub fn wrap(&self, backup: Uuid, key: &DataKey) -> anyhow::Result<Vec<u8>> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .wrapping_cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: &key.0,
                    aad: backup.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("wrapping the data key failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens what [`TenantKey::wrap`] wrapped for the same backup.
    pub fn unwrap(&self, backup: Uuid, wrapped: &[u8]) -> anyhow::Result<DataKey> {
        anyhow::ensure!(wrapped.len() > NONCE_LEN, "the wrapped data key is truncated");
        let (nonce, ct) = wrapped.split_at(NONCE_LEN);
        let plain = self
            .wrapping_cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: backup.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "the data key of backup {backup} does not open with tenant key version {}",
                    self.version
                )
            })?;
        let key: [u8; DATA_KEY_LEN] = plain
            .try_into()
            .map_err(|_| anyhow::anyhow!("the data key of backup {backup} has the wrong length"))?;
        Ok(DataKey(key))
    }
}

/// The lines of an age identity file holding `keys`, each under a comment naming it.
#[must_use]
pub fn identity_file(tenant: Uuid, keys: &[TenantKey]) -> SecretString {
    let mut out = String::new();
    for k in keys {
        out.push_str(&format!(
            "# svalbard tenant {tenant}, key version {}\n# public key: {}\n{}\n",
            k.version,
            k.recipient(),
            k.identity.to_string().expose_secret()
        ));
    }
    SecretString::from(out)
}

/// Wraps the file key for a recipient and keeps a copy of it: the archive's data key.
struct Capture<'a> {
    inner: &'a x25519::Recipient,
    key: Mutex<Option<DataKey>>,
}

impl age::Recipient for Capture<'_> {
    fn wrap_file_key(&self, file_key: &FileKey) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        if let Ok(mut k) = self.key.lock() {
            *k = Some(DataKey(*file_key.expose_secret()));
        }
        self.inner.wrap_file_key(file_key)
    }
}

/// An encryptor for one archive, to `recipient`, and the data key it chose.
pub fn encryptor(recipient: &x25519::Recipient) -> anyhow::Result<(age::Encryptor, DataKey)> {
    let capture = Capture {
        inner: recipient,
        key: Mutex::new(None),
    };
    let enc = age::Encryptor::with_recipients(std::iter::once(&capture as &dyn age::Recipient))
        .map_err(|e| anyhow::anyhow!("cannot start encrypting: {e}"))?;
    let key = capture
        .key
        .into_inner()
        .ok()
        .flatten()
        .ok_or_else(|| anyhow::anyhow!("the encryptor chose no data key"))?;
    Ok((enc, key))
}

/// An identity that answers every stanza with a data key known from the catalog; age checks it
/// against the header's MAC.
struct KnownDataKey(DataKey);

impl age::Identity for KnownDataKey {
    fn unwrap_stanza(&self, _stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        Some(Ok(FileKey::new(Box::new(self.0.0))))
    }
}

/// What may open an archive: tenant keys, and the data key the catalog holds for it.
#[derive(Clone, Default)]
pub struct Openers {
    pub tenant_keys: Vec<TenantKey>,
    pub data_key: Option<DataKey>,
}

impl Openers {
    /// A reader of the plaintext of the age file `input`; every chunk is authenticated as it is
    /// read, so a damaged or truncated archive is an error, never wrong bytes.
    pub fn decrypt<R: Read>(&self, input: R) -> Result<age::stream::StreamReader<R>, age::DecryptError> {
        let decryptor = age::Decryptor::new(input)?;
        let known = self.data_key.map(KnownDataKey);
        // Tenant keys first: one that does not match the header says so and the next is tried,
        // while a data key is taken at its word and checked only by the header's MAC.
        let identities = self
            .tenant_keys
            .iter()
            .map(|k| &k.identity as &dyn age::Identity)
            .chain(known.as_ref().map(|k| k as &dyn age::Identity));
        decryptor.decrypt(identities)
    }

    /// As much plaintext as the first bytes of an archive hold, up to `max` bytes (for telling
    /// what the archive holds before reading it all).
    pub fn decrypt_prefix(&self, prefix: &[u8], max: usize) -> Result<Vec<u8>, age::DecryptError> {
        let mut reader = self.decrypt(prefix)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while out.len() < max {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n.min(max - out.len())]),
            }
        }
        Ok(out)
    }
}

/// Svalbard's sentence for an archive that would not open.
#[must_use]
pub fn describe_decrypt_error(e: &age::DecryptError) -> String {
    match e {
        age::DecryptError::NoMatchingKeys => {
            "the archive is encrypted for a key this tenant does not have (another tenant's, or one destroyed)"
                .to_owned()
        }
        age::DecryptError::InvalidHeader | age::DecryptError::UnknownFormat => {
            "the archive's encryption header is damaged".to_owned()
        }
        age::DecryptError::InvalidMac => "the archive's encryption header does not authenticate".to_owned(),
        _ => format!("the archive cannot be decrypted: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn encrypt(key: &TenantKey, plain: &[u8]) -> (Vec<u8>, DataKey) {
        let (enc, data_key) = encryptor(&key.recipient()).unwrap();
        let mut w = enc.wrap_output(Vec::new()).unwrap();
        w.write_all(plain).unwrap();
        (w.finish().unwrap(), data_key)
    }

    fn read_all(openers: &Openers, archive: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        openers
            .decrypt(archive)
            .map_err(|e| describe_decrypt_error(&e))?
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn an_archive_opens_with_its_tenant_key_or_its_data_key_and_nothing_else() {
        let key = TenantKey::generate(1);
        let plain = vec![7u8; 200_000];
        let (archive, data_key) = encrypt(&key, &plain);
        assert!(is_encrypted(&archive));
        let by_tenant = Openers {
            tenant_keys: vec![key.clone()],
            data_key: None,
        };
        assert_eq!(read_all(&by_tenant, &archive).unwrap(), plain);
        let by_data_key = Openers {
            tenant_keys: vec![],
            data_key: Some(data_key),
        };
        assert_eq!(read_all(&by_data_key, &archive).unwrap(), plain);
        let other = Openers {
            tenant_keys: vec![TenantKey::generate(1)],
            data_key: None,
        };
        assert!(read_all(&other, &archive).unwrap_err().contains("does not have"));
        let wrong_data_key = Openers {
            tenant_keys: vec![],
            data_key: Some(encrypt(&key, b"x").1),
        };
        assert!(read_all(&wrong_data_key, &archive).is_err());
    }

    #[test]
    fn a_flipped_byte_or_a_cut_is_an_error_not_wrong_data() {
        let key = TenantKey::generate(1);
        let (archive, _) = encrypt(&key, &vec![1u8; 150_000]);
        let openers = Openers {
            tenant_keys: vec![key],
            data_key: None,
        };
        let mut flipped = archive.clone();
        let at = flipped.len() - 100;
        flipped[at] ^= 1;
        assert!(read_all(&openers, &flipped).is_err());
        assert!(read_all(&openers, &archive[..archive.len() - 20]).is_err());
    }

    #[test]
    fn data_keys_rewrap_and_stay_bound_to_their_backup() {
        let old = TenantKey::generate(1);
        let new = TenantKey::generate(2);
        let backup = Uuid::now_v7();
        let (_, data_key) = encrypt(&old, b"dump");
        let wrapped = old.wrap(backup, &data_key).unwrap();
        let rewrapped = new.wrap(backup, &old.unwrap(backup, &wrapped).unwrap()).unwrap();
        assert_eq!(new.unwrap(backup, &rewrapped).unwrap(), data_key);
        assert!(old.unwrap(backup, &rewrapped).is_err());
        assert!(new.unwrap(Uuid::now_v7(), &rewrapped).is_err());
    }

    #[test]
    fn tenant_keys_seal_under_the_ring_bound_to_tenant_and_version() {
        let ring = KeyRing::parse(&KeyRing::generate_spec("m1").into()).unwrap();
        let tenant = Uuid::now_v7();
        let key = TenantKey::generate(3);
        let sealed = key.seal(&ring, tenant).unwrap();
        let back = TenantKey::open(&ring, tenant, 3, &sealed).unwrap();
        assert_eq!(back.recipient().to_string(), key.recipient().to_string());
        assert!(TenantKey::open(&ring, Uuid::now_v7(), 3, &sealed).is_err());
        assert!(TenantKey::open(&ring, tenant, 4, &sealed).is_err());
    }

    #[test]
    fn the_identity_file_is_what_age_reads() {
        let keys = [TenantKey::generate(1), TenantKey::generate(2)];
        let file = identity_file(Uuid::now_v7(), &keys);
        let parsed = age::IdentityFile::from_buffer(file.expose_secret().as_bytes()).unwrap();
        assert_eq!(parsed.into_identities().unwrap().len(), 2);
    }

    #[test]
    fn a_prefix_decrypts_as_far_as_it_authenticates() {
        let key = TenantKey::generate(1);
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (archive, _) = encrypt(&key, &plain);
        let openers = Openers {
            tenant_keys: vec![key],
            data_key: None,
        };
        let head = openers.decrypt_prefix(&archive[..100_000], 1 << 20).unwrap();
        assert_eq!(head.len(), 64 * 1024);
        assert_eq!(head[..], plain[..64 * 1024]);
    }
}
