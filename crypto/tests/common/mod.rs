//! Shared helpers for the crypto crate's integration tests: the fixed identities that every
//! known-answer vector is built from, and small hex/JSON helpers.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::PathBuf;
use std::sync::OnceLock;

use encrypto_crypto::{Identity, RsaBits};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Path of a file under `crypto/tests/vectors/`.
///
/// `cargo test` sets `CARGO_MANIFEST_DIR` when it runs the test too, and that one is read
/// first: the value compiled in is the checkout the binary was built in, and a test binary
/// from a build cache shared between checkouts (as CI's is) may come from another one.
pub fn vector_path(name: &str) -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests")
        .join("vectors")
        .join(name)
}

/// Reads a vector file as JSON.
pub fn read_vector(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(vector_path(name))
        .unwrap_or_else(|e| panic!("reading vector {name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing vector {name}: {e}"))
}

/// Writes a vector file (used only by the `#[ignore]`d regenerate tests).
pub fn write_vector(name: &str, value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).expect("json") + "\n";
    std::fs::write(vector_path(name), text).expect("writing vector");
}

/// A hex field of a vector.
pub fn hex_field(v: &serde_json::Value, key: &str) -> Vec<u8> {
    let s = v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {key} missing"));
    hex::decode(s).unwrap_or_else(|e| panic!("vector field {key}: {e}"))
}

/// A deterministic CSPRNG.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn load(name: &str) -> Identity {
    let v = read_vector("identities.json");
    let who = &v[name];
    let seed: [u8; 32] = hex_field(who, "ed25519_secret")
        .try_into()
        .expect("32 bytes");
    Identity::from_secret_parts(&seed, &hex_field(who, "rsa_pkcs8")).expect("vector identity")
}

/// Alice, from `identities.json` (RSA-2048).
pub fn alice() -> &'static Identity {
    static CELL: OnceLock<Identity> = OnceLock::new();
    CELL.get_or_init(|| load("alice"))
}

/// Bob, from `identities.json` (RSA-2048).
pub fn bob() -> &'static Identity {
    static CELL: OnceLock<Identity> = OnceLock::new();
    CELL.get_or_init(|| load("bob"))
}

/// Carol, from `identities.json` (RSA-2048).
pub fn carol() -> &'static Identity {
    static CELL: OnceLock<Identity> = OnceLock::new();
    CELL.get_or_init(|| load("carol"))
}

/// Generates the identities file; run only by `regenerate_identities`.
pub fn generate_identities() -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (i, name) in ["alice", "bob", "carol"].iter().enumerate() {
        let id = Identity::generate(&mut rng(100 + i as u64), RsaBits::B2048).expect("keygen");
        out.insert(
            (*name).to_owned(),
            serde_json::json!({
                "ed25519_secret": hex::encode(*id.ed25519_secret()),
                "rsa_pkcs8": hex::encode(&*id.rsa_pkcs8_der().expect("der")),
                "peer_id": id.peer_id().to_string(),
                "fingerprint": id.public().fingerprint().to_string(),
            }),
        );
    }
    serde_json::Value::Object(out)
}
