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
