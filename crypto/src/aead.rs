//! The one place that calls AES-256-GCM. Every module seals through these two functions, so
//! key and nonce sizes are enforced by the types and the crate has one AEAD code path.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use zeroize::Zeroizing;

/// AES-256 key length.
pub(crate) const KEY_LEN: usize = 32;
/// AES-GCM nonce length.
pub(crate) const NONCE_LEN: usize = 12;
/// AES-GCM tag length (added to every ciphertext).
pub(crate) const TAG_LEN: usize = 16;

/// Encrypts and authenticates `plaintext` and `aad`. The (key, nonce) pair must never repeat.
pub(crate) fn seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = Aes256Gcm::new(&(*key).into());
    cipher
        .encrypt(
            &(*nonce).into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption only fails for inputs over 64 GiB")
}

/// Checks and decrypts; `None` on any failure (one opaque outcome, by design).
pub(crate) fn open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let cipher = Aes256Gcm::new(&(*key).into());
    cipher
        .decrypt(
            &(*nonce).into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = [7u8; KEY_LEN];
        let nonce = [1u8; NONCE_LEN];
        let ct = seal(&key, &nonce, b"aad", b"hello");
        assert_eq!(ct.len(), 5 + TAG_LEN);
        assert_eq!(&open(&key, &nonce, b"aad", &ct).unwrap()[..], b"hello");
        assert!(open(&key, &nonce, b"aaD", &ct).is_none());
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(open(&key, &nonce, b"aad", &bad).is_none());
    }

    #[test]
    fn nist_gcm_test_case_14() {
        // NIST GCM spec test case 14: AES-256, zero key, zero IV, one zero block.
        let ct = seal(&[0; 32], &[0; 12], b"", &[0; 16]);
        assert_eq!(
            ct,
            [
                0xce, 0xa7, 0x40, 0x3d, 0x4d, 0x60, 0x6b, 0x6e, 0x07, 0x4e, 0xc5, 0xd3, 0xba, 0xf3,
                0x9d, 0x18, 0xd0, 0xd1, 0xc8, 0xa7, 0x99, 0x99, 0x6b, 0xf0, 0x26, 0x5b, 0x98, 0xb5,
                0xd4, 0x8a, 0xb9, 0x19
            ]
        );
    }
}
