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
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::test_support::{alice, bob, rng};
    use proptest::prelude::*;

    const PASS: &[u8] = b"correct horse battery staple";
    const FAST: KdfParams = KdfParams::INSECURE_FAST;

    fn copy_of(id: &Identity) -> Identity {
        Identity::from_secret_parts(&id.ed25519_secret(), &id.rsa_pkcs8_der().unwrap()).unwrap()
    }

    fn contents() -> KeystoreContents {
        KeystoreContents {
            identity: copy_of(alice()),
            name: "Alice".into(),
            created_ms: 1_767_225_600_000,
            storage_key: StorageKey::generate(&mut rng(10)),
        }
    }

    fn sealed() -> Vec<u8> {
        seal(&contents(), PASS, FAST, &mut rng(11)).unwrap()
    }

    fn assert_same(a: &KeystoreContents, b: &KeystoreContents) {
        assert_eq!(a.identity.public(), b.identity.public());
        assert_eq!(*a.identity.ed25519_secret(), *b.identity.ed25519_secret());
        assert_eq!(
            *a.identity.rsa_pkcs8_der().unwrap(),
            *b.identity.rsa_pkcs8_der().unwrap()
        );
        assert_eq!(a.name, b.name);
        assert_eq!(a.created_ms, b.created_ms);
        assert_eq!(*a.storage_key.to_bytes(), *b.storage_key.to_bytes());
    }

    fn decoded(bytes: &[u8]) -> KeystoreFile {
        codec::decode(bytes, MAX_KEYSTORE_LEN).unwrap()
    }

    #[test]
    fn round_trip() {
        let c = contents();
        let opened = open(&sealed(), PASS).unwrap();
        assert_same(&c, &opened);
    }

    #[test]
    fn round_trip_with_recommended_params() {
        let c = contents();
        let bytes = seal(&c, PASS, KdfParams::RECOMMENDED, &mut rng(1)).unwrap();
        assert_same(&c, &open(&bytes, PASS).unwrap());
        let kdf = decoded(&bytes).kdf;
        assert_eq!(kdf.params(), KdfParams::RECOMMENDED);
    }

    #[test]
    fn sealing_is_randomised() {
        let c = contents();
        let a = seal(&c, PASS, FAST, &mut rng(1)).unwrap();
        let b = seal(&c, PASS, FAST, &mut rng(2)).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, seal(&c, PASS, FAST, &mut rng(1)).unwrap());
    }

    #[test]
    fn no_secret_in_the_clear() {
        let c = contents();
        let bytes = sealed();
        let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(&*c.identity.ed25519_secret()));
        assert!(!contains(&*c.storage_key.to_bytes()));
        assert!(!contains(&c.identity.rsa_pkcs8_der().unwrap()[100..132]));
        assert!(!contains(b"Alice"));
    }

    #[test]
    fn wrong_passphrase() {
        let bytes = sealed();
        assert_eq!(
            open(&bytes, b"correct horse battery stapler").unwrap_err(),
            KeystoreError::WrongPassphrase
        );
        assert_eq!(
            open(&bytes, b"x").unwrap_err(),
            KeystoreError::WrongPassphrase
        );
        assert_eq!(
            open(&bytes, b"").unwrap_err(),
            KeystoreError::EmptyPassphrase
        );
    }

    #[test]
    fn empty_passphrase_refused() {
        assert_eq!(
            seal(&contents(), b"", FAST, &mut rng(1)).unwrap_err(),
            KeystoreError::EmptyPassphrase
        );
        assert_eq!(
            change_passphrase(&sealed(), PASS, b"", FAST, &mut rng(1)).unwrap_err(),
            KeystoreError::EmptyPassphrase
        );
    }

    #[test]
    fn change_passphrase_round_trip() {
        let c = contents();
        let old = sealed();
        let new = change_passphrase(&old, PASS, b"new passphrase", FAST, &mut rng(3)).unwrap();
        assert_eq!(
            open(&new, PASS).unwrap_err(),
            KeystoreError::WrongPassphrase
        );
        assert_same(&c, &open(&new, b"new passphrase").unwrap());
        // A fresh salt: the new file shares nothing derived from the old one.
        assert_ne!(decoded(&old).kdf.salt, decoded(&new).kdf.salt);
        assert_eq!(
            change_passphrase(&old, b"guess", b"new", FAST, &mut rng(3)).unwrap_err(),
            KeystoreError::WrongPassphrase
        );
    }

    #[test]
    fn params_out_of_bounds_refused_by_seal() {
        let c = contents();
        for bad in [
            KdfParams {
                m_cost_kib: 7,
                ..FAST
            },
            KdfParams {
                m_cost_kib: 16,
                t_cost: 1,
                p_cost: 4,
            },
            KdfParams {
                m_cost_kib: MAX_M_COST_KIB + 1,
                ..FAST
            },
            KdfParams {
                m_cost_kib: u32::MAX,
                ..FAST
            },
            KdfParams { t_cost: 0, ..FAST },
            KdfParams { t_cost: 17, ..FAST },
            KdfParams { p_cost: 0, ..FAST },
            KdfParams {
                m_cost_kib: 1024,
                t_cost: 1,
                p_cost: 9,
            },
            KdfParams {
                m_cost_kib: 1024,
                t_cost: 1,
                p_cost: u32::MAX,
            },
        ] {
            assert!(
                matches!(
                    seal(&c, PASS, bad, &mut rng(1)),
                    Err(KeystoreError::InvalidParams(_))
                ),
                "{bad:?}"
            );
            assert!(matches!(
                change_passphrase(&sealed(), PASS, b"n", bad, &mut rng(1)),
                Err(KeystoreError::InvalidParams(_))
            ));
        }
        // The edges are accepted.
        for good in [
            KdfParams {
                m_cost_kib: 64,
                t_cost: 16,
                p_cost: 8,
            },
            KdfParams {
                m_cost_kib: 8,
                t_cost: 1,
                p_cost: 1,
            },
        ] {
            assert!(good.validate().is_ok(), "{good:?}");
        }
        assert!(KdfParams::RECOMMENDED.validate().is_ok());
        assert!(
            KdfParams {
                m_cost_kib: MAX_M_COST_KIB,
                t_cost: MAX_T_COST,
                p_cost: MAX_P_COST
            }
            .validate()
            .is_ok()
        );
    }

    /// Re-encodes a keystore after `edit`, keeping it canonical.
    fn edited(bytes: &[u8], edit: impl FnOnce(&mut KeystoreFile)) -> Vec<u8> {
        let mut file = decoded(bytes);
        edit(&mut file);
        codec::encode(&file).unwrap()
    }

    #[test]
    fn hostile_params_rejected_before_argon2_runs() {
        let bytes = sealed();
        for (m, t, p) in [
            (4 * 1024 * 1024 - 1, 1, 1), // just under 4 GiB: the most a u32 of KiB can ask
            (2 * 1024 * 1024, 1, 1),
            (64, 1_000_000, 1),
            (u32::MAX, u32::MAX, u32::MAX),
            (1024, 1, 64),
            (0, 0, 0),
        ] {
            let hostile = edited(&bytes, |f| {
                f.kdf.m_cost_kib = m;
                f.kdf.t_cost = t;
                f.kdf.p_cost = p;
            });
            let start = Instant::now();
            let err = open(&hostile, PASS).unwrap_err();
            // Argon2 over gigabytes would take seconds (or fail to allocate).
            assert!(start.elapsed() < Duration::from_millis(500));
            assert!(matches!(err, KeystoreError::InvalidParams(_)), "{err:?}");
        }
    }

    #[test]
    fn tampered_params_salt_or_check_fail() {
        let bytes = sealed();
        let wrong = || KeystoreError::WrongPassphrase;
        let damaged = || KeystoreError::Corrupted("keystore data does not authenticate".into());
        type Edit = fn(&mut KeystoreFile);
        let cases: [(Edit, KeystoreError); 5] = [
            (|f| f.kdf.t_cost += 1, wrong()),
            (|f| f.kdf.m_cost_kib += 8, wrong()),
            (|f| f.kdf.salt[0] ^= 1, wrong()),
            (|f| f.check[15] ^= 0x80, wrong()),
            (|f| f.nonce[0] ^= 1, damaged()),
        ];
        for (i, (edit, expected)) in cases.into_iter().enumerate() {
            let bad = edited(&bytes, edit);
            assert_eq!(open(&bad, PASS).unwrap_err(), expected, "case {i}");
        }
    }

    #[test]
    fn damaged_ciphertext_is_corruption_not_a_wrong_passphrase() {
        let bytes = sealed();
        let bad = edited(&bytes, |f| {
            let last = f.ciphertext.len() - 1;
            f.ciphertext[last] ^= 1;
        });
        assert_eq!(
            open(&bad, PASS).unwrap_err(),
            KeystoreError::Corrupted("keystore data does not authenticate".into())
        );
        assert_eq!(
            open(&bad, b"wrong").unwrap_err(),
            KeystoreError::WrongPassphrase
        );
        let short = edited(&bytes, |f| f.ciphertext.truncate(TAG_LEN - 1));
        assert!(matches!(
            open(&short, PASS),
            Err(KeystoreError::Corrupted(_))
        ));
    }

    #[test]
    fn other_versions_and_formats() {
        let bytes = sealed();
        let v2 = edited(&bytes, |f| f.version = 2);
        assert_eq!(
            open(&v2, PASS).unwrap_err(),
            KeystoreError::UnsupportedVersion(2)
        );
        // A future version may look nothing like this one beyond its first two fields.
        #[derive(Serialize)]
        struct Future {
            format: &'static str,
            version: u16,
            something_else: Vec<u32>,
        }
        let future = codec::encode(&Future {
            format: FORMAT,
            version: 7,
            something_else: vec![1, 2, 3],
        })
        .unwrap();
        assert_eq!(
            open(&future, PASS).unwrap_err(),
            KeystoreError::UnsupportedVersion(7)
        );
        let other = edited(&bytes, |f| f.format = "something-else".into());
        assert!(matches!(
            open(&other, PASS),
            Err(KeystoreError::Corrupted(_))
        ));
        let scrypt = edited(&bytes, |f| f.kdf.alg = "scrypt".into());
        assert!(matches!(
            open(&scrypt, PASS),
            Err(KeystoreError::Corrupted(_))
        ));
        // A profile, a record, random bytes: not keystores.
        let profile = alice().sign_profile("Alice", 1).unwrap().to_bytes();
        assert!(matches!(
            open(&profile, PASS),
            Err(KeystoreError::Corrupted(_))
        ));
        assert!(matches!(open(b"", PASS), Err(KeystoreError::Corrupted(_))));
        let huge = vec![0u8; MAX_KEYSTORE_LEN + 1];
        assert!(matches!(
            open(&huge, PASS),
            Err(KeystoreError::Corrupted(_))
        ));
    }

    #[test]
    fn non_canonical_encoding_rejected() {
        let bytes = sealed();
        // The same keystore with string keys instead of packed indices decodes to the same
        // value but is not the encoding we write.
        let loose = serde_cbor::to_vec(&decoded(&bytes)).unwrap();
        assert_ne!(loose, bytes);
        assert_eq!(
            open(&loose, PASS).unwrap_err(),
            KeystoreError::Corrupted("non-canonical encoding".into())
        );
    }

    #[test]
    fn oversized_contents_refused_by_seal() {
        let mut c = contents();
        c.name = "x".repeat(MAX_KEYSTORE_LEN);
        assert!(matches!(
            seal(&c, PASS, FAST, &mut rng(1)),
            Err(KeystoreError::InvalidParams(_))
        ));
        // Just under the limit still seals and opens.
        c.name = "x".repeat(MAX_KEYSTORE_LEN - 2048);
        let bytes = seal(&c, PASS, FAST, &mut rng(1)).unwrap();
        assert!(bytes.len() <= MAX_KEYSTORE_LEN);
        assert_eq!(open(&bytes, PASS).unwrap().name, c.name);
    }

    #[test]
    fn every_bit_flip_is_an_error() {
        let bytes = sealed();
        let ct_len = decoded(&bytes).ciphertext.len();
        let start = Instant::now();
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let err = open(&bad, PASS).expect_err("a flipped bit must not open");
            // Inside the ciphertext the passphrase is still right: damage, not a wrong guess.
            if bit / 8 >= bytes.len() - ct_len {
                assert_eq!(
                    err,
                    KeystoreError::Corrupted("keystore data does not authenticate".into()),
                    "bit {bit}"
                );
            }
        }
        eprintln!(
            "{} bit flips of a {}-byte keystore in {:?}",
            bytes.len() * 8,
            bytes.len(),
            start.elapsed()
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sealed();
        for len in 0..bytes.len() {
            assert!(matches!(
                open(&bytes[..len], PASS),
                Err(KeystoreError::Corrupted(_))
            ));
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            open(&longer, PASS),
            Err(KeystoreError::Corrupted(_))
        ));
    }

    #[test]
    fn another_identity_round_trips_too() {
        let c = KeystoreContents {
            identity: copy_of(bob()),
            name: "Bob".into(),
            created_ms: 0,
            storage_key: StorageKey::generate(&mut rng(20)),
        };
        let bytes = seal(&c, b"b", FAST, &mut rng(21)).unwrap();
        assert_same(&c, &open(&bytes, b"b").unwrap());
    }

    #[test]
    fn debug_is_redacted() {
        let c = contents();
        let text = format!("{c:?}");
        assert!(text.contains("StorageKey(..)"));
        assert!(text.contains("Alice"));
        for secret in [
            c.storage_key.to_bytes().to_vec(),
            c.identity.ed25519_secret().to_vec(),
        ] {
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!text.contains(&hex));
            assert!(!text.contains(&format!("{:?}", &secret[..])[1..20]));
        }
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            KeystoreError::WrongPassphrase.to_string(),
            "wrong passphrase"
        );
        assert_eq!(
            KeystoreError::Corrupted("x".into()).to_string(),
            "keystore is corrupted: x"
        );
        // A long decoding error quoted from a hostile file is cut short.
        assert!(detail("€".repeat(1000)).len() <= MAX_DETAIL_LEN + '…'.len_utf8());
    }

    proptest! {
        #[test]
        fn prop_open_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            prop_assert!(open(&bytes, PASS).is_err());
        }

        #[test]
        fn prop_overwritten_byte_never_opens(
            index in any::<prop::sample::Index>(),
            value in any::<u8>(),
        ) {
            let bytes = sealed();
            let i = index.index(bytes.len());
            prop_assume!(bytes[i] != value);
            let mut bad = bytes;
            bad[i] = value;
            prop_assert!(open(&bad, PASS).is_err());
        }
    }
}
