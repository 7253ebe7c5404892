//! The fixed test identities of `crypto/tests/vectors/identities.json`, so targets can run the
//! full verification path, not only decoding.
// Not every target uses both identities.
#![allow(dead_code)]

use std::sync::OnceLock;

use encrypto_crypto::Identity;

fn load(name: &str) -> Identity {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../../crypto/tests/vectors/identities.json"))
            .expect("identities.json");
    let seed: [u8; 32] = hex::decode(v[name]["ed25519_secret"].as_str().expect("seed"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let der = hex::decode(v[name]["rsa_pkcs8"].as_str().expect("der")).expect("hex");
    Identity::from_secret_parts(&seed, &der).expect("identity")
}

pub fn alice() -> &'static Identity {
    static CELL: OnceLock<Identity> = OnceLock::new();
    CELL.get_or_init(|| load("alice"))
}

pub fn bob() -> &'static Identity {
    static CELL: OnceLock<Identity> = OnceLock::new();
    CELL.get_or_init(|| load("bob"))
}
