//! Known-answer tests for the keystore and for records sealed with the storage key. The vectors
//! in `tests/vectors/keystore.json` and `storage.json` pin both formats: a keystore written by
//! this version must open in every later one, and so must a sealed record.
//!
//! The re-seal tests replay the seeded test RNG (`StdRng`, ChaCha12 in `rand` 0.10). If a
//! `rand` upgrade changes that generator, only the re-seal tests fail; the open tests, which
//! are what protects users' files, do not depend on it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{alice, hex_field, read_vector, rng, write_vector};
use encrypto_crypto::Identity;
use encrypto_crypto::keystore::{self, KdfParams, KeystoreContents, KeystoreError};
use encrypto_crypto::storage::{self, StorageKey};

const PASSPHRASE: &str = "correct horse battery staple";
const NAME: &str = "Alice Example";
const CREATED_MS: u64 = 1_767_225_600_000;
const STORAGE_KEY_SEED: u64 = 200;
const KEYSTORE_SEAL_SEED: u64 = 201;
const RECORD_KEY_SEED: u64 = 202;
const RECORD_SEAL_SEED: u64 = 203;
const CONTEXT: &[u8] = b"chat/12D3KooW/message/0000000000000042";
const PLAINTEXT: &[u8] = b"Meet me at the usual place at 6. Bring the blue folder.";

fn alice_contents(storage_key: [u8; 32]) -> KeystoreContents {
    let a = alice();
    KeystoreContents {
        identity: Identity::from_secret_parts(&a.ed25519_secret(), &a.rsa_pkcs8_der().unwrap())
            .unwrap(),
        name: NAME.to_owned(),
        created_ms: CREATED_MS,
        storage_key: StorageKey::from_bytes(storage_key),
    }
}

fn params_of(v: &serde_json::Value) -> KdfParams {
    let field = |k: &str| u32::try_from(v["params"][k].as_u64().unwrap()).unwrap();
    KdfParams {
        m_cost_kib: field("m_cost_kib"),
        t_cost: field("t_cost"),
        p_cost: field("p_cost"),
    }
}

fn key_of(v: &serde_json::Value, field: &str) -> [u8; 32] {
    hex_field(v, field).try_into().expect("32-byte key")
}

#[test]
fn keystore_vector_opens_to_its_recorded_contents() {
    let v = read_vector("keystore.json");
    assert_eq!(v["passphrase"], PASSPHRASE);
    let opened = keystore::open(&hex_field(&v, "keystore"), PASSPHRASE.as_bytes()).unwrap();
    assert_eq!(opened.identity.public(), alice().public());
    assert_eq!(opened.identity.peer_id().to_string(), v["peer_id"]);
    assert_eq!(*opened.identity.ed25519_secret(), *alice().ed25519_secret());
    assert_eq!(opened.name, v["name"]);
    assert_eq!(opened.created_ms, v["created_ms"].as_u64().unwrap());
    assert_eq!(*opened.storage_key.to_bytes(), key_of(&v, "storage_key"));
}

#[test]
fn keystore_vector_rejects_a_wrong_passphrase() {
    let v = read_vector("keystore.json");
    assert_eq!(
        keystore::open(&hex_field(&v, "keystore"), b"Correct horse battery staple").unwrap_err(),
        KeystoreError::WrongPassphrase
    );
}

#[test]
fn keystore_reseals_to_the_same_bytes() {
    let v = read_vector("keystore.json");
    let contents = alice_contents(key_of(&v, "storage_key"));
    let seed = v["seal_rng_seed"].as_u64().unwrap();
    let again = keystore::seal(
        &contents,
        PASSPHRASE.as_bytes(),
        params_of(&v),
        &mut rng(seed),
    )
    .unwrap();
    assert_eq!(hex::encode(again), v["keystore"]);
}

#[test]
fn storage_vector_opens_and_reseals() {
    let v = read_vector("storage.json");
    let key = StorageKey::from_bytes(key_of(&v, "key"));
    let context = hex_field(&v, "context");
    let sealed = hex_field(&v, "sealed");
    let opened = storage::open_record(&key, &context, &sealed).unwrap();
    assert_eq!(*opened, hex_field(&v, "plaintext"));
    let seed = v["seal_rng_seed"].as_u64().unwrap();
    let again = storage::seal_record(&key, &context, &opened, &mut rng(seed));
    assert_eq!(again, sealed);
    assert!(storage::open_record(&key, b"another slot", &sealed).is_err());
}

#[test]
#[ignore = "writes the vector files; run by hand after an intended format change"]
fn regenerate_keystore_vectors() {
    let storage_key = StorageKey::generate(&mut rng(STORAGE_KEY_SEED));
    let contents = alice_contents(*storage_key.to_bytes());
    let params = KdfParams::INSECURE_FAST;
    let sealed = keystore::seal(
        &contents,
        PASSPHRASE.as_bytes(),
        params,
        &mut rng(KEYSTORE_SEAL_SEED),
    )
    .unwrap();
    write_vector(
        "keystore.json",
        &serde_json::json!({
            "comment": "Alice's keystore, sealed with KdfParams::INSECURE_FAST (test-only costs)",
            "passphrase": PASSPHRASE,
            "peer_id": alice().peer_id().to_string(),
            "name": NAME,
            "created_ms": CREATED_MS,
            "storage_key": hex::encode(*storage_key.to_bytes()),
            "params": {
                "m_cost_kib": params.m_cost_kib,
                "t_cost": params.t_cost,
                "p_cost": params.p_cost,
            },
            "seal_rng_seed": KEYSTORE_SEAL_SEED,
            "keystore": hex::encode(sealed),
        }),
    );

    let key = StorageKey::generate(&mut rng(RECORD_KEY_SEED));
    let sealed = storage::seal_record(&key, CONTEXT, PLAINTEXT, &mut rng(RECORD_SEAL_SEED));
    write_vector(
        "storage.json",
        &serde_json::json!({
            "key": hex::encode(*key.to_bytes()),
            "context": hex::encode(CONTEXT),
            "plaintext": hex::encode(PLAINTEXT),
            "seal_rng_seed": RECORD_SEAL_SEED,
            "sealed": hex::encode(sealed),
        }),
    );
}
