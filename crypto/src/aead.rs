//! The one place that calls AES-256-GCM. Every module seals through these two functions, so
//! key and nonce sizes are enforced by the types and the crate has one AEAD code path.

use aes_gcm::aead::{Aead, AeadInOut, Payload};
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

/// Like [`seal`], but encrypts `buf` in place and appends the tag: no allocation when `buf` has
/// room for [`TAG_LEN`] more bytes. For the file chunk pipeline, which reuses its buffers.
pub(crate) fn seal_in_place(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) {
    let cipher = Aes256Gcm::new(&(*key).into());
    let tag = cipher
        .encrypt_inout_detached(&(*nonce).into(), aad, buf.as_mut_slice().into())
        .expect("AES-GCM encryption only fails for inputs over 64 GiB");
    buf.extend_from_slice(&tag);
}

/// Like [`open`], but decrypts `buf` (ciphertext and tag) in place and truncates the tag.
/// Returns `false` if the tag does not verify; `buf` then holds no plaintext (the tag is
/// checked before anything is decrypted) but its contents are otherwise unspecified.
pub(crate) fn open_in_place(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> bool {
    let Some(body_len) = buf.len().checked_sub(TAG_LEN) else {
        return false;
    };
    let cipher = Aes256Gcm::new(&(*key).into());
    let (body, tag) = buf.split_at_mut(body_len);
    let tag: &[u8] = tag;
    let Ok(tag) = tag.try_into() else {
        return false;
    };
    if cipher
        .decrypt_inout_detached(&(*nonce).into(), aad, body.into(), tag)
        .is_err()
    {
        return false;
    }
    buf.truncate(body_len);
    true
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
    fn in_place_matches_allocating() {
        let key = [3u8; KEY_LEN];
        let nonce = [4u8; NONCE_LEN];
        let mut buf = b"in place".to_vec();
        seal_in_place(&key, &nonce, b"a", &mut buf);
        assert_eq!(buf, seal(&key, &nonce, b"a", b"in place"));
        let mut bad = buf.clone();
        bad[1] ^= 1;
        assert!(!open_in_place(&key, &nonce, b"a", &mut bad));
        assert!(!open_in_place(
            &key,
            &nonce,
            b"a",
            &mut vec![0; TAG_LEN - 1]
        ));
        assert!(open_in_place(&key, &nonce, b"a", &mut buf));
        assert_eq!(buf, b"in place");
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
