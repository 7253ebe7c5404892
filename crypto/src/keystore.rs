//! The keystore: an identity's private keys and the storage key, sealed under a passphrase.
//!
//! Argon2id turns the passphrase, a random salt and the cost parameters recorded in the file
//! into 64 bytes. The first 32 are the AES-256-GCM key that seals the secrets; the last 32 give
//! a 16-byte *check* value stored in the clear. On opening, a check that does not match means
//! a wrong passphrase; a check that matches over a ciphertext that does not authenticate means
//! a damaged file. The user is told which of the two happened. The check gives a guesser
//! nothing the ciphertext would not: each guess still costs one full Argon2id run.
//!
//! # Format
//!
//! The file is CBOR (see [`crate::codec`]) of
//!
//! ```text
//! { format: "encrypto-keystore", version: 1,
//!   kdf: { alg: "argon2id", m_cost_kib, t_cost, p_cost, salt: 16 bytes },
//!   check: 16 bytes, nonce: 12 bytes, ciphertext }
//! ```
//!
//! `format` and `version` stay the first two fields in every version, so a newer file is
//! reported as [`KeystoreError::UnsupportedVersion`], not as damage. The associated data
//! covers format, version, every KDF parameter, the salt and the check, so none of them can be
//! changed without the file failing to open. The plaintext is CBOR of the Ed25519 seed, the RSA
//! key (PKCS#8 DER), the storage key, the name and the creation time.
//!
//! Cost parameters read from a file are bounded *before* Argon2id runs (memory at most 1 GiB,
//! at most 16 passes and 8 lanes), so a hostile file cannot make the node allocate gigabytes or
//! spin for minutes. Only the one canonical encoding of a keystore is accepted.

use std::fmt;

use argon2::{Algorithm, Argon2, Version};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::aead::{self, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::canonical::Canonical;
use crate::codec;
use crate::identity::{ED25519_LEN, Identity};
use crate::storage::{STORAGE_KEY_LEN, StorageKey};

/// Largest keystore file accepted (and produced).
pub const MAX_KEYSTORE_LEN: usize = 64 * 1024;

const FORMAT: &str = "encrypto-keystore";
const VERSION: u16 = 1;
const KDF_ALG: &str = "argon2id";
const SALT_LEN: usize = 16;
const CHECK_LEN: usize = 16;
const KDF_OUT_LEN: usize = 64;
const AAD_DOMAIN: &[u8] = b"encrypto/keystore/v1";
const CHECK_DOMAIN: &[u8] = b"encrypto/keystore/check";

/// Upper bound on the Argon2id memory cost: 1 GiB.
const MAX_M_COST_KIB: u32 = 1_048_576;
/// Upper bound on Argon2id passes.
const MAX_T_COST: u32 = 16;
/// Upper bound on Argon2id lanes.
const MAX_P_COST: u32 = 8;
/// Longest error detail quoted from a file, so a hostile file cannot fill a log line.
const MAX_DETAIL_LEN: usize = 160;

/// Errors from sealing and opening a keystore.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeystoreError {
    /// The passphrase does not unlock this keystore.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The file is not a keystore, or it was damaged after it was written.
    #[error("keystore is corrupted: {0}")]
    Corrupted(String),
    /// The file was written by a newer (or unknown) version of the format.
    #[error("unsupported keystore version {0} (this build reads version 1)")]
    UnsupportedVersion(u16),
    /// Key derivation parameters outside the accepted bounds (asked for when sealing, or found
    /// in a file), or contents too large to seal.
    #[error("invalid keystore parameters: {0}")]
    InvalidParams(String),
    /// An empty passphrase: never accepted for sealing, so never right for opening.
    #[error("the passphrase is empty")]
    EmptyPassphrase,
}

/// Argon2id cost parameters.
///
/// Accepted bounds, for sealing and for files being opened: `p_cost` in 1..=8, `t_cost` in
/// 1..=16, `m_cost_kib` from `8 * p_cost` up to 1 GiB (1,048,576 KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, in KiB.
    pub m_cost_kib: u32,
    /// Passes over the memory.
    pub t_cost: u32,
    /// Lanes (degree of parallelism).
    pub p_cost: u32,
}

impl KdfParams {
    /// RFC 9106's second recommended setting, 64 MiB and 3 passes, with one lane instead of
    /// four because we hash on a single thread. Takes a fraction of a second on a desktop.
    pub const RECOMMENDED: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };

    /// The cheapest parameters Argon2id accepts (8 KiB, one pass). **For tests only**: a
    /// keystore sealed with these falls to a passphrase search almost as fast as no KDF at all.
    pub const INSECURE_FAST: KdfParams = KdfParams {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };

    fn validate(self) -> Result<(), KeystoreError> {
        let KdfParams {
            m_cost_kib,
            t_cost,
            p_cost,
        } = self;
        let reason = if !(1..=MAX_P_COST).contains(&p_cost) {
            format!("parallelism {p_cost} is outside 1..={MAX_P_COST}")
        } else if !(1..=MAX_T_COST).contains(&t_cost) {
            format!("time cost {t_cost} is outside 1..={MAX_T_COST}")
        } else if !(8 * p_cost..=MAX_M_COST_KIB).contains(&m_cost_kib) {
            // `p_cost <= 8` here, so `8 * p_cost` cannot overflow.
            format!(
                "memory cost {m_cost_kib} KiB is outside {}..={MAX_M_COST_KIB} KiB",
                8 * p_cost
            )
        } else {
            return Ok(());
        };
        Err(KeystoreError::InvalidParams(reason))
    }
}

/// What a keystore holds: the identity's private keys, the storage key, and the name and
/// creation time the user chose. Prints without any secret.
pub struct KeystoreContents {
    /// Both private keys.
    pub identity: Identity,
    /// The display name this identity was created with.
    pub name: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: u64,
    /// The key that seals history and other records on disk.
    pub storage_key: StorageKey,
}

impl fmt::Debug for KeystoreContents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeystoreContents")
            .field("identity", &self.identity)
            .field("name", &self.name)
            .field("created_ms", &self.created_ms)
            .field("storage_key", &self.storage_key)
            .finish()
    }
}

/// The first two fields of every keystore version, read before anything else.
#[derive(Deserialize)]
struct Header {
    format: String,
    version: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KdfSection {
    alg: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    #[serde(with = "serde_bytes")]
    salt: [u8; SALT_LEN],
}

impl KdfSection {
    fn params(&self) -> KdfParams {
        KdfParams {
            m_cost_kib: self.m_cost_kib,
            t_cost: self.t_cost,
            p_cost: self.p_cost,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeystoreFile {
    format: String,
    version: u16,
    kdf: KdfSection,
    #[serde(with = "serde_bytes")]
    check: [u8; CHECK_LEN],
    #[serde(with = "serde_bytes")]
    nonce: [u8; NONCE_LEN],
    #[serde(with = "serde_bytes")]
    ciphertext: Vec<u8>,
}

impl KeystoreFile {
    fn aad(&self) -> Vec<u8> {
        Canonical::new(AAD_DOMAIN)
            .bytes(self.format.as_bytes())
            .u32(u32::from(self.version))
            .bytes(self.kdf.alg.as_bytes())
            .u32(self.kdf.m_cost_kib)
            .u32(self.kdf.t_cost)
            .u32(self.kdf.p_cost)
            .fixed(&self.kdf.salt)
            .fixed(&self.check)
            .finish()
    }
}

/// The sealed plaintext. Zeroized on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct Secrets {
    #[serde(with = "serde_bytes")]
    ed25519_secret: [u8; ED25519_LEN],
    #[serde(with = "serde_bytes")]
    rsa_pkcs8: Vec<u8>,
    #[serde(with = "serde_bytes")]
    storage_key: [u8; STORAGE_KEY_LEN],
    name: String,
    created_ms: u64,
}

/// A decoding error's text, shortened: it may quote bytes from the file.
fn detail(error: impl fmt::Display) -> String {
    let mut text = error.to_string();
    if text.len() > MAX_DETAIL_LEN {
        let mut end = MAX_DETAIL_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Argon2id(passphrase, salt, params) → (AES key, check).
fn derive(
    passphrase: &[u8],
    kdf: &KdfSection,
) -> Result<(Zeroizing<[u8; KEY_LEN]>, [u8; CHECK_LEN]), KeystoreError> {
    kdf.params().validate()?;
    let params = argon2::Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(KDF_OUT_LEN))
        .map_err(|e| KeystoreError::InvalidParams(format!("Argon2id refused them: {e}")))?;
    let mut out = Zeroizing::new([0u8; KDF_OUT_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, &kdf.salt, &mut *out)
        .map_err(|e| KeystoreError::InvalidParams(format!("Argon2id failed: {e}")))?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&out[..KEY_LEN]);
    let digest = Sha256::new()
        .chain_update(CHECK_DOMAIN)
        .chain_update(&out[KEY_LEN..])
        .finalize();
    let mut check = [0u8; CHECK_LEN];
    check.copy_from_slice(&digest[..CHECK_LEN]);
    Ok((key, check))
}

/// Equality without an early exit.
fn same_check(a: &[u8; CHECK_LEN], b: &[u8; CHECK_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes and checks everything that can be checked without the passphrase.
fn parse(bytes: &[u8]) -> Result<KeystoreFile, KeystoreError> {
    if bytes.len() > MAX_KEYSTORE_LEN {
        return Err(KeystoreError::Corrupted(format!(
            "the file is {} bytes, larger than any keystore ({MAX_KEYSTORE_LEN} bytes)",
            bytes.len()
        )));
    }
    let header: Header = codec::decode(bytes, MAX_KEYSTORE_LEN)
        .map_err(|e| KeystoreError::Corrupted(format!("not a keystore file: {}", detail(e))))?;
    if header.format != FORMAT {
        return Err(KeystoreError::Corrupted("not a keystore file".into()));
    }
    if header.version != VERSION {
        return Err(KeystoreError::UnsupportedVersion(header.version));
    }
    let file: KeystoreFile = codec::decode(bytes, MAX_KEYSTORE_LEN)
        .map_err(|e| KeystoreError::Corrupted(format!("malformed keystore: {}", detail(e))))?;
    // CBOR has several encodings of one value (integer widths, text or byte strings, key
    // order); accept only ours, so that every changed byte is an error.
    if codec::encode(&file).ok().as_deref() != Some(bytes) {
        return Err(KeystoreError::Corrupted("non-canonical encoding".into()));
    }
    if file.kdf.alg != KDF_ALG {
        return Err(KeystoreError::Corrupted(
            "unsupported key derivation algorithm".into(),
        ));
    }
    file.kdf.params().validate()?;
    if file.ciphertext.len() < TAG_LEN {
        return Err(KeystoreError::Corrupted(
            "the ciphertext is truncated".into(),
        ));
    }
    Ok(file)
}

/// Seals `contents` under `passphrase`, with a fresh salt and nonce from `rng`.
///
/// # Errors
/// [`KeystoreError::EmptyPassphrase`] for an empty passphrase;
/// [`KeystoreError::InvalidParams`] if `params` are outside the bounds documented on
/// [`KdfParams`], or if the contents (a very long name) would not fit in
/// [`MAX_KEYSTORE_LEN`].
pub fn seal<R: CryptoRng + ?Sized>(
    contents: &KeystoreContents,
    passphrase: &[u8],
    params: KdfParams,
    rng: &mut R,
) -> Result<Vec<u8>, KeystoreError> {
    if passphrase.is_empty() {
        return Err(KeystoreError::EmptyPassphrase);
    }
    params.validate()?;
    let mut rsa_pkcs8 = contents.identity.rsa_pkcs8_der().map_err(|e| {
        KeystoreError::InvalidParams(format!("the identity cannot be exported: {e}"))
    })?;
    let secrets = Secrets {
        ed25519_secret: *contents.identity.ed25519_secret(),
        // Moved, not copied: the buffer stays under `Secrets`' zeroize-on-drop.
        rsa_pkcs8: std::mem::take(&mut *rsa_pkcs8),
        storage_key: *contents.storage_key.to_bytes(),
        name: contents.name.clone(),
        created_ms: contents.created_ms,
    };
    let plaintext =
        Zeroizing::new(codec::encode(&secrets).expect("plain fields always encode as CBOR"));
    // Checked before the (slow) key derivation; the exact size is checked at the end.
    if plaintext.len() + TAG_LEN > MAX_KEYSTORE_LEN {
        return Err(too_large(plaintext.len() + TAG_LEN));
    }

    let mut salt = [0u8; SALT_LEN];
    rng.fill_bytes(&mut salt);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let kdf = KdfSection {
        alg: KDF_ALG.into(),
        m_cost_kib: params.m_cost_kib,
        t_cost: params.t_cost,
        p_cost: params.p_cost,
        salt,
    };
    let (key, check) = derive(passphrase, &kdf)?;
    let mut file = KeystoreFile {
        format: FORMAT.into(),
        version: VERSION,
        kdf,
        check,
        nonce,
        ciphertext: Vec::new(),
    };
    file.ciphertext = aead::seal(&key, &nonce, &file.aad(), &plaintext);
    let bytes = codec::encode(&file).expect("plain fields always encode as CBOR");
    if bytes.len() > MAX_KEYSTORE_LEN {
        return Err(too_large(bytes.len()));
    }
    Ok(bytes)
}

fn too_large(len: usize) -> KeystoreError {
    KeystoreError::InvalidParams(format!(
        "the sealed keystore would be {len} bytes, over the limit of {MAX_KEYSTORE_LEN}"
    ))
}

/// Opens a keystore with `passphrase`.
///
/// The file's structure and cost parameters are checked before Argon2id runs.
///
/// # Errors
/// [`KeystoreError::EmptyPassphrase`] for an empty passphrase;
/// [`KeystoreError::WrongPassphrase`] if the passphrase does not unlock the file;
/// [`KeystoreError::UnsupportedVersion`] for a file of another format version;
/// [`KeystoreError::InvalidParams`] if the file asks for costs outside the bounds documented on
/// [`KdfParams`]; [`KeystoreError::Corrupted`] for anything else that is wrong with the bytes,
/// including a file that the right passphrase unlocks but whose data no longer authenticates.
pub fn open(bytes: &[u8], passphrase: &[u8]) -> Result<KeystoreContents, KeystoreError> {
    if passphrase.is_empty() {
        return Err(KeystoreError::EmptyPassphrase);
    }
    let file = parse(bytes)?;
    let (key, check) = derive(passphrase, &file.kdf)?;
    if !same_check(&check, &file.check) {
        return Err(KeystoreError::WrongPassphrase);
    }
    let plaintext = aead::open(&key, &file.nonce, &file.aad(), &file.ciphertext)
        .ok_or_else(|| KeystoreError::Corrupted("keystore data does not authenticate".into()))?;
    let secrets: Secrets = codec::decode(&plaintext, MAX_KEYSTORE_LEN).map_err(|e| {
        KeystoreError::Corrupted(format!("the sealed contents are malformed: {}", detail(e)))
    })?;
    let identity = Identity::from_secret_parts(&secrets.ed25519_secret, &secrets.rsa_pkcs8)
        .map_err(|e| KeystoreError::Corrupted(format!("the stored identity is invalid: {e}")))?;
    Ok(KeystoreContents {
        identity,
        name: secrets.name.clone(),
        created_ms: secrets.created_ms,
        storage_key: StorageKey::from_bytes(secrets.storage_key),
    })
}

/// Re-seals a keystore under a new passphrase (and possibly new cost parameters), with a fresh
/// salt and nonce. The contents are unchanged.
///
/// # Errors
/// [`KeystoreError::EmptyPassphrase`] if either passphrase is empty;
/// [`KeystoreError::InvalidParams`] if `params` are out of bounds (checked before the old
/// passphrase is tried); otherwise any error of [`open`] with the old passphrase.
pub fn change_passphrase<R: CryptoRng + ?Sized>(
    bytes: &[u8],
    old: &[u8],
    new: &[u8],
    params: KdfParams,
    rng: &mut R,
) -> Result<Vec<u8>, KeystoreError> {
    if new.is_empty() {
        return Err(KeystoreError::EmptyPassphrase);
    }
    params.validate()?;
    let contents = open(bytes, old)?;
    seal(&contents, new, params, rng)
}

#[cfg(test)]
mod tests;
