//! Known-answer tests for identities, profiles and fingerprints. The vectors in
//! `tests/vectors/identities.json` and `profile.json` pin the formats: if one of these tests
//! fails, the wire format or the fingerprint construction changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{alice, bob, hex_field, read_vector, write_vector};
use encrypto_crypto::{SafetyNumber, SignedProfile};

#[test]
fn identities_match_their_recorded_peer_ids_and_fingerprints() {
    let v = read_vector("identities.json");
    for (name, id) in [("alice", alice()), ("bob", bob())] {
        assert_eq!(v[name]["peer_id"], id.peer_id().to_string());
        assert_eq!(
            v[name]["fingerprint"],
            id.public().fingerprint().to_string()
        );
    }
}

#[test]
fn profile_vector_decodes_verifies_and_reencodes() {
    let v = read_vector("profile.json");
    let bytes = hex_field(&v, "cbor");
    let profile = SignedProfile::from_bytes(&bytes).unwrap();
    let verified = profile.verify(&alice().peer_id()).unwrap();
    assert_eq!(verified.name, v["name"]);
    assert_eq!(verified.created, v["created"].as_u64().unwrap());
    assert_eq!(profile.to_bytes(), bytes);
    // Ed25519 signatures are deterministic: signing again gives the same bytes.
    let again = alice()
        .sign_profile(v["name"].as_str().unwrap(), verified.created)
        .unwrap();
    assert_eq!(again.to_bytes(), bytes);
}

#[test]
fn safety_number_vector() {
    let v = read_vector("profile.json");
    let sn = SafetyNumber::between(alice().public(), bob().public());
    assert_eq!(v["safety_number_alice_bob"], sn.to_string());
}

#[test]
#[ignore = "writes the vector files; run by hand after an intended format change"]
fn regenerate_identity_vectors() {
    write_vector("identities.json", &common::generate_identities());
    let p = alice()
        .sign_profile("Alice Example", 1_767_225_600_000)
        .unwrap();
    write_vector(
        "profile.json",
        &serde_json::json!({
            "name": "Alice Example",
            "created": 1_767_225_600_000u64,
            "cbor": hex::encode(p.to_bytes()),
            "safety_number_alice_bob":
                SafetyNumber::between(alice().public(), bob().public()).to_string(),
        }),
    );
}
