//! Sealing records at rest with the storage key.
//!
//! Everything the node keeps on disk that a reader of the disk must not see (message bodies,
//! drafts, file keys) is sealed with the random [`StorageKey`] held in the keystore. A sealed
//! record is
//!
//! ```text
//! version (1 byte, = 1) || nonce (12 random bytes) || AES-256-GCM ciphertext || tag (16 bytes)
//! ```
//!
//! The associated data binds the version and a caller-chosen *context*, for example the chat
//! and slot a record is stored under. A record copied to another slot, or sealed under another
//! key, therefore does not open: the store cannot be rearranged by someone who can only write
//! to the disk.
//!
//! Nonces are random. NIST SP 800-38D allows 2^32 random-nonce encryptions under one key, far
//! more records than a personal history holds.

use std::fmt;

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::aead::{self, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::canonical::Canonical;

/// Length of a [`StorageKey`] in bytes.
pub const STORAGE_KEY_LEN: usize = KEY_LEN;
/// The current sealed-record format, the first byte of every record.
pub const RECORD_VERSION: u8 = 1;
/// Bytes a sealed record adds to its plaintext: version, nonce and tag.
pub const RECORD_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

const AAD_DOMAIN: &[u8] = b"encrypto/record/v1";

/// The random 256-bit key that seals history and other records on disk. Zeroized on drop;
/// prints as `StorageKey(..)`.
#[derive(Clone)]
pub struct StorageKey(Zeroizing<[u8; STORAGE_KEY_LEN]>);

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageKey(..)")
    }
}

impl StorageKey {
    /// Draws a fresh key from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut key = Zeroizing::new([0u8; STORAGE_KEY_LEN]);
        rng.fill_bytes(&mut *key);
        StorageKey(key)
    }

    /// Wraps existing key bytes (as read back from the keystore).
    pub fn from_bytes(bytes: [u8; STORAGE_KEY_LEN]) -> Self {
        StorageKey(Zeroizing::new(bytes))
    }

    /// The key bytes, for the keystore only.
    pub fn to_bytes(&self) -> Zeroizing<[u8; STORAGE_KEY_LEN]> {
        self.0.clone()
    }
}

/// Why a sealed record did not open.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// Too short to hold a version byte, a nonce and a tag.
    #[error("sealed record is truncated")]
    Truncated,
    /// The first byte names a record format this build does not know.
    #[error("unsupported sealed record version {0}")]
    UnsupportedVersion(u8),
    /// The record does not authenticate: wrong key, wrong context, or damaged bytes. Which of
    /// these it was is deliberately not told apart.
    #[error("sealed record rejected: wrong key, wrong context, or damaged")]
    Rejected,
}

fn aad(version: u8, context: &[u8]) -> Vec<u8> {
    Canonical::new(AAD_DOMAIN)
        .u8(version)
        .bytes(context)
        .finish()
}

/// Seals `plaintext` under `key`, bound to `context`. The output is
/// [`RECORD_OVERHEAD`] bytes longer than the plaintext and opens only with the same key and
/// context ([`open_record`]).
pub fn seal_record<R: CryptoRng + ?Sized>(
    key: &StorageKey,
    context: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let ciphertext = aead::seal(&key.0, &nonce, &aad(RECORD_VERSION, context), plaintext);
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

/// Opens a record sealed by [`seal_record`] with the same key and context.
///
/// # Errors
/// [`RecordError::Truncated`] if `sealed` is shorter than [`RECORD_OVERHEAD`];
/// [`RecordError::UnsupportedVersion`] if its first byte is not [`RECORD_VERSION`];
/// [`RecordError::Rejected`] if it does not authenticate under `key` and `context`.
pub fn open_record(
    key: &StorageKey,
    context: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, RecordError> {
    let Some((&version, rest)) = sealed.split_first() else {
        return Err(RecordError::Truncated);
    };
    if version != RECORD_VERSION {
        return Err(RecordError::UnsupportedVersion(version));
    }
    let Some((nonce, ciphertext)) = rest.split_first_chunk::<NONCE_LEN>() else {
        return Err(RecordError::Truncated);
    };
    if ciphertext.len() < TAG_LEN {
        return Err(RecordError::Truncated);
    }
    aead::open(&key.0, nonce, &aad(version, context), ciphertext).ok_or(RecordError::Rejected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::rng;
    use proptest::prelude::*;

    fn key(seed: u64) -> StorageKey {
        StorageKey::generate(&mut rng(seed))
    }

    #[test]
    fn round_trip_and_layout() {
        let k = key(1);
        let sealed = seal_record(&k, b"chat/1/slot/7", b"hello", &mut rng(2));
        assert_eq!(sealed.len(), 5 + RECORD_OVERHEAD);
        assert_eq!(sealed[0], RECORD_VERSION);
        assert_eq!(
            &open_record(&k, b"chat/1/slot/7", &sealed).unwrap()[..],
            b"hello"
        );
    }

    #[test]
    fn empty_plaintext_and_context() {
        let k = key(1);
        let sealed = seal_record(&k, b"", b"", &mut rng(2));
        assert_eq!(sealed.len(), RECORD_OVERHEAD);
        assert!(open_record(&k, b"", &sealed).unwrap().is_empty());
    }

    #[test]
    fn nonces_are_fresh() {
        let k = key(1);
        let mut r = rng(2);
        let a = seal_record(&k, b"c", b"same", &mut r);
        let b = seal_record(&k, b"c", b"same", &mut r);
        assert_ne!(a, b);
    }

    #[test]
    fn record_moved_to_another_context_or_key_is_rejected() {
        let k = key(1);
        let sealed = seal_record(&k, b"chat/alice", b"secret", &mut rng(2));
        assert_eq!(
            open_record(&k, b"chat/bob", &sealed),
            Err(RecordError::Rejected)
        );
        assert_eq!(
            open_record(&key(3), b"chat/alice", &sealed),
            Err(RecordError::Rejected)
        );
        // A context that merely extends the right one is another context.
        assert_eq!(
            open_record(&k, b"chat/alice\0", &sealed),
            Err(RecordError::Rejected)
        );
    }

    #[test]
    fn truncated_and_unknown_versions() {
        let k = key(1);
        let sealed = seal_record(&k, b"c", b"abc", &mut rng(2));
        assert_eq!(open_record(&k, b"c", &[]), Err(RecordError::Truncated));
        for len in 1..RECORD_OVERHEAD {
            assert_eq!(
                open_record(&k, b"c", &sealed[..len]),
                Err(RecordError::Truncated)
            );
        }
        for len in RECORD_OVERHEAD..sealed.len() {
            assert_eq!(
                open_record(&k, b"c", &sealed[..len]),
                Err(RecordError::Rejected)
            );
        }
        let mut v2 = sealed.clone();
        v2[0] = 2;
        assert_eq!(
            open_record(&k, b"c", &v2),
            Err(RecordError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let k = key(1);
        let sealed = seal_record(&k, b"ctx", b"a short message", &mut rng(2));
        for bit in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let err = open_record(&k, b"ctx", &bad).unwrap_err();
            if bit < 8 {
                assert!(matches!(err, RecordError::UnsupportedVersion(_)));
            } else {
                assert_eq!(err, RecordError::Rejected);
            }
        }
    }

    #[test]
    fn key_bytes_round_trip_and_debug_is_redacted() {
        let k = key(1);
        let again = StorageKey::from_bytes(*k.to_bytes());
        assert_eq!(*again.to_bytes(), *k.to_bytes());
        assert_eq!(format!("{k:?}"), "StorageKey(..)");
        assert_ne!(*key(1).to_bytes(), *key(2).to_bytes());
    }

    proptest! {
        #[test]
        fn prop_round_trip(
            plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
            context in proptest::collection::vec(any::<u8>(), 0..64),
            seed in any::<u64>(),
        ) {
            let k = key(seed);
            let sealed = seal_record(&k, &context, &plaintext, &mut rng(seed ^ 1));
            prop_assert_eq!(sealed.len(), plaintext.len() + RECORD_OVERHEAD);
            prop_assert_eq!(&open_record(&k, &context, &sealed).unwrap()[..], &plaintext[..]);
        }

        #[test]
        fn prop_other_context_or_key_fails(
            plaintext in proptest::collection::vec(any::<u8>(), 0..256),
            context in proptest::collection::vec(any::<u8>(), 0..32),
            other in proptest::collection::vec(any::<u8>(), 0..32),
            seed in any::<u64>(),
        ) {
            let k = key(seed);
            let sealed = seal_record(&k, &context, &plaintext, &mut rng(seed ^ 1));
            if other != context {
                prop_assert_eq!(open_record(&k, &other, &sealed), Err(RecordError::Rejected));
            }
            let k2 = key(seed.wrapping_add(1));
            prop_assert_eq!(open_record(&k2, &context, &sealed), Err(RecordError::Rejected));
        }

        #[test]
        fn prop_arbitrary_bytes_never_open(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            context in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            prop_assert!(open_record(&key(1), &context, &bytes).is_err());
        }

        #[test]
        fn prop_single_bit_flip_rejected(
            plaintext in proptest::collection::vec(any::<u8>(), 0..512),
            bit in any::<prop::sample::Index>(),
            seed in any::<u64>(),
        ) {
            let k = key(seed);
            let mut sealed = seal_record(&k, b"ctx", &plaintext, &mut rng(seed ^ 1));
            let bit = bit.index(sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(open_record(&k, b"ctx", &sealed).is_err());
        }
    }
}
