//! Known-answer tests for message envelopes and control payloads (`tests/vectors/envelope.json`,
//! `tests/vectors/control.json`). A failure here means the wire format changed.

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
    let v = read_vector("envelope.json");
    let mut sessions = InboundSessions::default();
    // In order: the first aes message carries the wrapped key, the second relies on the cache.
    for case in v["cases"].as_array().unwrap() {
        let bytes = hex_field(case, "cbor");
        let env = Envelope::from_bytes(&bytes).unwrap();
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
    let mut cases = Vec::new();
    let mut add = |name: &str, env: Envelope, plaintext: &[u8]| {
        cases.push(serde_json::json!({
            "name": name,
            "id": env.id.to_string(),
            "cipher": env.cipher.as_str(),
            "plaintext": hex::encode(plaintext),
            "cbor": hex::encode(env.to_bytes()),
        }));
    };
    let text = b"Hello Bob, this is Alice.";
    let id = MessageId::random(&mut r);
    let env = envelope::seal_aes(alice(), bob().public(), &mut session, id, NOW, text, &mut r);
    add("aes, first message of a session", env.unwrap(), text);
    session.mark_acknowledged();
    let text = b"Second message: the key is cached now.";
    let id = MessageId::random(&mut r);
    let env = envelope::seal_aes(
        alice(),
        bob().public(),
        &mut session,
        id,
        NOW + 1,
        text,
        &mut r,
    );
    add("aes, acknowledged session", env.unwrap(), text);
    let text = "RSA, block by block. ".repeat(12);
    let id = MessageId::random(&mut r);
    let env = envelope::seal_rsa(
        alice(),
        bob().public(),
        id,
        NOW + 2,
        text.as_bytes(),
        &mut r,
    );
    add("rsa, two blocks", env.unwrap(), text.as_bytes());
    write_vector("envelope.json", &serde_json::json!({ "cases": cases }));

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
