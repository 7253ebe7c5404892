use std::sync::OnceLock;

use encrypto_crypto::envelope::{
    self, Envelope, OpenContext, OpenPolicy, OutboundSession, RejectReason,
};
use encrypto_crypto::identity::RsaBits;
use encrypto_crypto::{MessageId, codec, rand_core};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::*;

const NOW: u64 = 1_767_225_600_000;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn identity(cell: &'static OnceLock<Identity>, seed: u64) -> &'static Identity {
    cell.get_or_init(|| Identity::generate(&mut rng(seed), RsaBits::B2048).unwrap())
}

fn alice() -> &'static Identity {
    static CELL: OnceLock<Identity> = OnceLock::new();
    identity(&CELL, 1)
}

fn bob() -> &'static Identity {
    static CELL: OnceLock<Identity> = OnceLock::new();
    identity(&CELL, 2)
}

fn carol() -> &'static Identity {
    static CELL: OnceLock<Identity> = OnceLock::new();
    identity(&CELL, 3)
}

fn never_seen(_: &[u8; 32], _: &MessageId) -> bool {
    false
}

fn ctx(me: &'static Identity) -> OpenContext<'static> {
    OpenContext {
        me,
        sender: alice().public(),
        now_ms: NOW,
        policy: OpenPolicy::default(),
        seen: &never_seen,
    }
}

/// An RNG that fails the test when used: the RSA decryptions blind with the RNG and nothing
/// else in opening uses one, so working with it shows that no RSA work was made.
struct NoRsaWork;

impl rand_core::TryRng for NoRsaWork {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        panic!("an RSA private-key operation was made here")
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        panic!("an RSA private-key operation was made here")
    }
    fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), Self::Error> {
        panic!("an RSA private-key operation was made here")
    }
}

impl rand_core::TryCryptoRng for NoRsaWork {}

/// `n` envelopes from alice to bob in one session, which brings its key wrapped.
fn aes_envelopes(n: u8) -> Vec<Envelope> {
    let mut r = rng(20);
    let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    seal_in(&mut s, n, &mut r)
}

fn seal_in(session: &mut OutboundSession, n: u8, r: &mut StdRng) -> Vec<Envelope> {
    (0..n)
        .map(|i| {
            let id = MessageId::random(r);
            envelope::seal_aes(alice(), bob().public(), session, id, NOW, &[i], r).unwrap()
        })
        .collect()
}

fn verified_all(envelopes: Vec<Envelope>) -> Vec<Verified> {
    envelope::verify_many(envelopes, alice().public())
        .into_iter()
        .map(|v| v.expect("every signature is good"))
        .collect()
}

/// The cache out of its shared form, for opening.
fn into_sessions(keys: InboundKeys) -> InboundSessions {
    keys.sessions.into_inner().unwrap()
}

#[test]
fn rsa_work_done_ahead_leaves_none_for_the_opening() {
    let mut envelopes = aes_envelopes(4);
    let mut r = rng(30);
    let id = MessageId::random(&mut r);
    envelopes
        .push(envelope::seal_rsa(alice(), bob().public(), id, NOW, b"by rsa", &mut r).unwrap());
    let mut verified = verified_all(envelopes);

    let keys = InboundKeys::default();
    decrypt_ahead(verified.iter_mut(), bob(), &keys, &mut r);
    assert_eq!(keys.claims(), 0);
    let mut sessions = into_sessions(keys);
    assert_eq!(sessions.len(), 1, "the four share one session key");
    for v in &verified {
        envelope::open_verified(v, &ctx(bob()), &mut sessions, &mut NoRsaWork).unwrap();
    }
    // A key already cached costs nothing ahead either.
    let mut again = verified_all(aes_envelopes(2));
    let keys = InboundKeys {
        sessions: Mutex::new(sessions),
        ..InboundKeys::default()
    };
    decrypt_ahead(again.iter_mut(), bob(), &keys, &mut NoRsaWork);
}

/// The saved form of an [`OutboundSession`], to give one a wrapped key that is not its own.
#[derive(Serialize, Deserialize)]
struct SessionState {
    #[serde(with = "serde_bytes")]
    key: [u8; 32],
    #[serde(with = "serde_bytes")]
    recipient: [u8; 32],
    wrapped: serde_bytes::ByteBuf,
    created_ms: u64,
    sealed: u64,
    acknowledged: bool,
}

/// `session` with the wrapped key of `other`: its envelopes name one key and bring another.
fn with_wrapped_key_of(session: &OutboundSession, other: &OutboundSession) -> OutboundSession {
    let mut state: SessionState = codec::decode(&session.to_secret_bytes(), 4096).unwrap();
    let theirs: SessionState = codec::decode(&other.to_secret_bytes(), 4096).unwrap();
    state.wrapped = theirs.wrapped;
    OutboundSession::from_secret_bytes(&codec::encode(&state).unwrap()).unwrap()
}

#[test]
fn a_failed_unwrap_is_remembered_by_wrapped_key_and_key_id() {
    // Three envelopes whose wrapped key is not the key their id names: each rejected, with no
    // RSA work left for the opening. A fourth brings the same wrapped key under its own id:
    // the failure under the other id does not reject it, and it opens.
    let mut r = rng(31);
    let s1 = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    let mut s2 = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    let mut mismatched = with_wrapped_key_of(&s1, &s2);
    let mut envelopes = seal_in(&mut mismatched, 3, &mut r);
    envelopes.extend(seal_in(&mut s2, 1, &mut r));
    let mut verified = verified_all(envelopes);

    let keys = InboundKeys::default();
    decrypt_ahead(verified.iter_mut(), bob(), &keys, &mut r);
    assert_eq!(keys.claims(), 0);
    let mut sessions = into_sessions(keys);
    assert_eq!(sessions.len(), 1, "only the fourth one's key");
    let fourth = verified.pop().unwrap();
    let opened = envelope::open_verified(&fourth, &ctx(bob()), &mut sessions, &mut NoRsaWork);
    assert_eq!(&opened.unwrap().plaintext[..], &[0]);
    for v in &verified {
        let err = envelope::open_verified(v, &ctx(bob()), &mut sessions, &mut NoRsaWork);
        assert_eq!(err.unwrap_err().reason(), RejectReason::KeyIdMismatch);
    }
}

#[test]
fn a_key_another_call_is_unwrapping_is_left_to_it() {
    let envelopes = aes_envelopes(2);
    let key_id = envelopes[0].key_id.unwrap();
    let sender = alice().public().ed25519_bytes();
    let mut verified = verified_all(envelopes.clone());
    let keys = InboundKeys::default();
    let claim = (sender, key_id);
    lock(&keys.unwrapping).insert(claim);
    decrypt_ahead(verified.iter_mut(), bob(), &keys, &mut NoRsaWork);
    // The other call finishes: its key is cached, and these open with no RSA work left.
    lock(&keys.unwrapping).remove(&claim);
    let mut done = verified_all(envelopes);
    decrypt_ahead(done.iter_mut().take(1), bob(), &keys, &mut rng(32));
    assert_eq!(keys.claims(), 0);
    let mut sessions = into_sessions(keys);
    for v in &verified {
        let opened = envelope::open_verified(v, &ctx(bob()), &mut sessions, &mut NoRsaWork);
        assert_eq!(opened.unwrap().key_id, Some(key_id));
    }
}

#[test]
fn envelopes_for_another_identity_get_no_rsa_work_ahead() {
    let mut verified = verified_all(aes_envelopes(2));
    let keys = InboundKeys::default();
    decrypt_ahead(verified.iter_mut(), carol(), &keys, &mut NoRsaWork);
    let mut sessions = into_sessions(keys);
    assert!(sessions.is_empty());
    let err = envelope::open_verified(&verified[0], &ctx(carol()), &mut sessions, &mut NoRsaWork);
    assert_eq!(err.unwrap_err().reason(), RejectReason::WrongRecipient);
}
