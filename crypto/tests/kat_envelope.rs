//! Known-answer tests for message envelopes and control payloads (`tests/vectors/envelope.json`,
//! `tests/vectors/envelope_batch.json`, `tests/vectors/control.json`). A failure here means the
//! wire format changed.
//!
//! `envelope.json` holds version 1 envelopes, each signed alone: no longer written, still
//! opened, so the file is frozen. `envelope_batch.json` holds version 2 ones, signed together
//! with one signature ([`envelope::sign_batch`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{alice, bob, hex_field, read_vector, rng, write_vector};
use encrypto_crypto::MessageId;
use encrypto_crypto::control::{Control, ControlKind};
use encrypto_crypto::envelope::{
    self, Envelope, InboundSessions, OpenContext, OpenPolicy, OutboundSession,
};

const NOW: u64 = 1_767_225_600_000;

fn never(_: &[u8; 32], _: &MessageId) -> bool {
    false
}

fn bob_ctx(now_ms: u64) -> OpenContext<'static> {
    OpenContext {
        me: bob(),
        sender: alice().public(),
        now_ms,
        policy: OpenPolicy::default(),
        seen: &never,
    }
}

#[test]
fn envelope_vectors_open_to_their_plaintexts_and_reencode() {
    for (file, version) in [
        ("envelope.json", Envelope::VERSION_SIGNED_ALONE),
        ("envelope_batch.json", Envelope::VERSION),
    ] {
        open_vectors(file, version);
    }
}

fn open_vectors(file: &str, version: u8) {
    let v = read_vector(file);
    let mut sessions = InboundSessions::default();
    // In order: the first aes message carries the wrapped key, the second relies on the cache.
    for case in v["cases"].as_array().unwrap() {
        let bytes = hex_field(case, "cbor");
        let env = Envelope::from_bytes(&bytes).unwrap();
        assert_eq!(env.version, version, "{file}: {}", case["name"]);
        assert_eq!(
            env.to_bytes(),
            bytes,
            "re-encoding changed {}",
            case["name"]
        );
        let opened = envelope::open(&env, &bob_ctx(NOW), &mut sessions, &mut rng(0)).unwrap();
        assert_eq!(&opened.plaintext[..], hex_field(case, "plaintext"));
        assert_eq!(opened.cipher.as_str(), case["cipher"]);
        assert_eq!(opened.id.to_string(), case["id"]);
    }
}

#[test]
fn control_vectors_verify_and_resign_identically() {
    let v = read_vector("control.json");
    for case in v["cases"].as_array().unwrap() {
        let bytes = hex_field(case, "cbor");
        let c = Control::from_bytes(&bytes).unwrap();
        let kind = c.verify(&bob_ctx(NOW)).unwrap().clone();
        assert_eq!(c.to_bytes(), bytes);
        // Ed25519 is deterministic: signing the same payload again gives the same bytes.
        let again = Control::sign(alice(), bob().public(), c.id, c.timestamp, kind).unwrap();
        assert_eq!(again.to_bytes(), bytes, "{}", case["name"]);
    }
}

#[test]
#[ignore = "writes the vector files; run by hand after an intended format change"]
fn regenerate_envelope_vectors() {
    let mut r = rng(200);
    let mut session = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    let mut unsigned = Vec::new();
    let text = b"Hello Bob, this is Alice.".to_vec();
    let id = MessageId::random(&mut r);
    let env = envelope::seal_aes_unsigned(
        alice(),
        bob().public(),
        &mut session,
        id,
        NOW,
        &text,
        &mut r,
    );
    unsigned.push(("aes, first message of a session", env.unwrap(), text));
    session.mark_acknowledged();
    let text = b"Second message: the key is cached now.".to_vec();
    let id = MessageId::random(&mut r);
    let env = envelope::seal_aes_unsigned(
        alice(),
        bob().public(),
        &mut session,
        id,
        NOW + 1,
        &text,
        &mut r,
    );
    unsigned.push(("aes, acknowledged session", env.unwrap(), text));
    let text = "RSA, block by block. ".repeat(12).into_bytes();
    let id = MessageId::random(&mut r);
    let env = envelope::seal_rsa_unsigned(alice(), bob().public(), id, NOW + 2, &text, &mut r);
    unsigned.push(("rsa, two blocks", env.unwrap(), text));
    let signed = envelope::sign_batch(
        alice(),
        unsigned.iter().map(|(_, u, _)| u.clone()).collect(),
    );
    let cases: Vec<_> = unsigned
        .iter()
        .zip(signed)
        .map(|((name, _, plaintext), env)| {
            serde_json::json!({
                "name": format!("{name}, signed in a batch of three"),
                "id": env.id.to_string(),
                "cipher": env.cipher.as_str(),
                "plaintext": hex::encode(plaintext),
                "cbor": hex::encode(env.to_bytes()),
            })
        })
        .collect();
    write_vector(
        "envelope_batch.json",
        &serde_json::json!({ "cases": cases }),
    );

    let kinds = [
        (
            "cipher switch",
            ControlKind::CipherSwitch {
                cipher: encrypto_crypto::Cipher::Rsa,
            },
        ),
        ("delete chat", ControlKind::DeleteChat),
        (
            "delivery ack",
            ControlKind::DeliveryAck {
                ids: vec![MessageId([1; 16]), MessageId([2; 16])],
            },
        ),
    ];
    let cases: Vec<_> = kinds
        .into_iter()
        .enumerate()
        .map(|(i, (name, kind))| {
            let c = Control::sign(
                alice(),
                bob().public(),
                MessageId([i as u8 + 10; 16]),
                NOW + 10,
                kind,
            )
            .unwrap();
            serde_json::json!({ "name": name, "cbor": hex::encode(c.to_bytes()) })
        })
        .collect();
    write_vector("control.json", &serde_json::json!({ "cases": cases }));
}
