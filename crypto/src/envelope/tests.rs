use super::*;
use crate::identity::Identity;
use crate::test_support::{alice, bob, carol, rng};
use std::cell::RefCell;
use std::collections::HashSet;
use zeroize::Zeroizing;

const NOW: u64 = 1_767_225_600_000;

fn never_seen() -> impl ReplayGuard {
    |_: &[u8; 32], _: &MessageId| false
}

fn ctx<'a>(me: &'a Identity, from: &'a Identity, seen: &'a dyn ReplayGuard) -> OpenContext<'a> {
    OpenContext {
        me,
        sender: from.public(),
        now_ms: NOW,
        policy: OpenPolicy::default(),
        seen,
    }
}

fn aes_envelope(text: &[u8]) -> Envelope {
    let mut r = rng(10);
    let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    seal_aes(
        alice(),
        bob().public(),
        &mut s,
        MessageId::random(&mut r),
        NOW,
        text,
        &mut r,
    )
    .unwrap()
}

#[test]
fn aes_round_trip_unwraps_once_then_uses_the_cache() {
    let mut r = rng(11);
    let mut session = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    let mut inbound = InboundSessions::default();
    let seen = never_seen();
    for i in 0..3u8 {
        let env = seal_aes(
            alice(),
            bob().public(),
            &mut session,
            MessageId::random(&mut r),
            NOW + u64::from(i),
            &[i; 200],
            &mut r,
        )
        .unwrap();
        let env = Envelope::from_bytes(&env.to_bytes()).unwrap();
        let opened = open(&env, &ctx(bob(), alice(), &seen), &mut inbound, &mut r).unwrap();
        assert_eq!(&opened.plaintext[..], &[i; 200]);
        assert_eq!(opened.cipher, Cipher::Aes);
        assert_eq!(inbound.len(), 1);
    }
    assert_eq!(session.messages_sealed(), 3);
}

#[test]
fn acknowledged_session_omits_the_wrapped_key() {
    let mut r = rng(12);
    let mut session = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    let first = seal_aes(
        alice(),
        bob().public(),
        &mut session,
        MessageId::random(&mut r),
        NOW,
        b"1",
        &mut r,
    )
    .unwrap();
    assert!(first.wrapped_key.is_some());
    session.mark_acknowledged();
    let second = seal_aes(
        alice(),
        bob().public(),
        &mut session,
        MessageId::random(&mut r),
        NOW,
        b"2",
        &mut r,
    )
    .unwrap();
    assert!(second.wrapped_key.is_none());
    // A receiver that lost its cache cannot open the second one, and says why.
    let seen = never_seen();
    let mut empty = InboundSessions::default();
    let err = open(&second, &ctx(bob(), alice(), &seen), &mut empty, &mut r).unwrap_err();
    assert_eq!(err.reason(), RejectReason::UnknownSessionKey);
    // With the first message's key cached, it opens.
    open(&first, &ctx(bob(), alice(), &seen), &mut empty, &mut r).unwrap();
    assert_eq!(
        &open(&second, &ctx(bob(), alice(), &seen), &mut empty, &mut r)
            .unwrap()
            .plaintext[..],
        b"2"
    );
}

#[test]
fn rsa_round_trip_multi_block_and_empty() {
    let mut r = rng(13);
    let seen = never_seen();
    for len in [0usize, 1, 190, 191, 1000, MAX_RSA_BODY_LEN] {
        let text: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let env = seal_rsa(
            alice(),
            bob().public(),
            MessageId::random(&mut r),
            NOW,
            &text,
            &mut r,
        )
        .unwrap();
        let env = Envelope::from_bytes(&env.to_bytes()).unwrap();
        let opened = open(
            &env,
            &ctx(bob(), alice(), &seen),
            &mut InboundSessions::default(),
            &mut r,
        )
        .unwrap();
        assert_eq!(&opened.plaintext[..], &text[..], "len {len}");
        assert_eq!(opened.cipher, Cipher::Rsa);
    }
}

#[test]
fn size_limits_are_clear_errors() {
    let mut r = rng(14);
    let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    let big = vec![0u8; MAX_BODY_LEN + 1];
    assert_eq!(
        seal_aes(
            alice(),
            bob().public(),
            &mut s,
            MessageId::random(&mut r),
            NOW,
            &big,
            &mut r
        )
        .unwrap_err(),
        SealError::TooLarge {
            len: MAX_BODY_LEN + 1,
            max: MAX_BODY_LEN
        }
    );
    let big = vec![0u8; MAX_RSA_BODY_LEN + 1];
    assert!(matches!(
        seal_rsa(
            alice(),
            bob().public(),
            MessageId::random(&mut r),
            NOW,
            &big,
            &mut r
        ),
        Err(SealError::TooLarge { .. })
    ));
    // A session made for Bob cannot seal for Carol.
    assert_eq!(
        seal_aes(
            alice(),
            carol().public(),
            &mut s,
            MessageId::random(&mut r),
            NOW,
            b"x",
            &mut r
        )
        .unwrap_err(),
        SealError::SessionMismatch
    );
}

#[test]
fn every_flipped_bit_is_rejected() {
    let mut r = rng(15);
    let seen = never_seen();
    for env in [
        aes_envelope(b"flip me"),
        seal_rsa(
            alice(),
            bob().public(),
            MessageId::random(&mut r),
            NOW,
            b"flip me",
            &mut r,
        )
        .unwrap(),
    ] {
        let bytes = env.to_bytes();
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let Ok(e) = Envelope::from_bytes(&b) else {
                continue;
            };
            let res = open(
                &e,
                &ctx(bob(), alice(), &seen),
                &mut InboundSessions::default(),
                &mut r,
            );
            assert!(
                res.is_err(),
                "bit {bit} of {:?} envelope accepted",
                env.cipher
            );
        }
    }
}

#[test]
fn signature_checked_before_any_rsa_work() {
    // A forged envelope (wrong signature) carrying a wrapped key must not reach RSA: we
    // check that the reason is BadSignature and that nothing was unwrapped into the cache.
    let mut env = aes_envelope(b"x");
    env.signature[0] ^= 1;
    let seen = never_seen();
    let mut inbound = InboundSessions::default();
    let err = open(&env, &ctx(bob(), alice(), &seen), &mut inbound, &mut rng(1)).unwrap_err();
    assert_eq!(err.reason(), RejectReason::BadSignature);
    assert!(inbound.is_empty());
}

#[test]
fn forged_sender_rejected() {
    // Carol signs an envelope claiming to be from Alice: sender field is Alice's key.
    let mut env = aes_envelope(b"x");
    resign(&mut env, carol());
    let seen = never_seen();
    let err = open(
        &env,
        &ctx(bob(), alice(), &seen),
        &mut InboundSessions::default(),
        &mut rng(1),
    )
    .unwrap_err();
    assert_eq!(err.reason(), RejectReason::BadSignature);
    // Carol signs honestly as herself but it arrives on Alice's connection.
    let mut r = rng(2);
    let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    let env = seal_aes(
        carol(),
        bob().public(),
        &mut s,
        MessageId::random(&mut r),
        NOW,
        b"x",
        &mut r,
    )
    .unwrap();
    let err = open(
        &env,
        &ctx(bob(), alice(), &seen),
        &mut InboundSessions::default(),
        &mut r,
    )
    .unwrap_err();
    assert_eq!(err.reason(), RejectReason::SenderMismatch);
}

/// Signs `env` again, alone, as `who`.
fn resign(env: &mut Envelope, who: &Identity) {
    env.proof = None;
    *env = sign_one(who, UnsignedEnvelope(env.clone()));
}

/// `n` `aes` envelopes from Alice to Bob in one session, signed together, the text of each
/// its index.
fn aes_batch(n: u16) -> Vec<Envelope> {
    let mut r = rng(21);
    let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    let unsigned = (0..n)
        .map(|i| {
            let id = MessageId::random(&mut r);
            let text = i.to_be_bytes();
            seal_aes_unsigned(alice(), bob().public(), &mut s, id, NOW, &text, &mut r).unwrap()
        })
        .collect();
    sign_batch(alice(), unsigned)
}

fn reasons(verified: Vec<Result<Verified, OpenError>>) -> Vec<Option<RejectReason>> {
    verified
        .into_iter()
        .map(|v| v.err().map(|e| e.reason()))
        .collect()
}

#[test]
fn envelopes_signed_together_share_one_signature_and_each_opens_alone() {
    let envelopes = aes_batch(10);
    let seen = never_seen();
    let mut sessions = InboundSessions::default();
    for (i, env) in envelopes.iter().enumerate() {
        assert_eq!(env.signature, envelopes[0].signature);
        let proof = env.proof.as_ref().unwrap();
        assert_eq!((proof.count, usize::from(proof.index)), (10, i));
        assert!(proof_len(env) <= MAX_PROOF_LEN);
        // Checked alone, from its own bytes.
        let env = Envelope::from_bytes(&env.to_bytes()).unwrap();
        let opened = open(
            &env,
            &ctx(bob(), alice(), &seen),
            &mut sessions,
            &mut rng(3),
        );
        assert_eq!(&opened.unwrap().plaintext[..], &(i as u16).to_be_bytes());
    }
    let verified = verify_many(envelopes, alice().public());
    assert!(verified.iter().all(Result::is_ok));
}

/// How many bytes the proof adds to `env`'s encoding.
fn proof_len(env: &Envelope) -> usize {
    let mut bare = env.clone();
    bare.proof = None;
    env.to_bytes().len() - bare.to_bytes().len()
}

#[test]
fn the_largest_proof_fits_its_bound_and_large_sets_get_one_signature_per_batch() {
    let envelopes = aes_batch(u16::try_from(MAX_SIGNED_BATCH).unwrap() + 3);
    let longest = envelopes.iter().map(proof_len).max().unwrap();
    assert!(longest <= MAX_PROOF_LEN, "{longest} > {MAX_PROOF_LEN}");
    let (first, rest) = envelopes.split_at(MAX_SIGNED_BATCH);
    assert!(first.iter().all(|e| e.signature == first[0].signature));
    assert!(rest.iter().all(|e| e.signature == rest[0].signature));
    assert_ne!(first[0].signature, rest[0].signature);
    assert_eq!(
        rest[2].proof.as_ref().map(|p| (p.count, p.index)),
        Some((3, 2))
    );
    assert!(
        verify_many(envelopes, alice().public())
            .iter()
            .all(Result::is_ok)
    );
}

#[test]
fn max_signed_len_bounds_every_envelope_in_any_batch() {
    let mut r = rng(22);
    let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    let mut unsigned = Vec::new();
    for len in [0, 1, 23, 24, 255, 256, 65_535, 65_536, MAX_BODY_LEN] {
        let id = MessageId::random(&mut r);
        let text = vec![7u8; len];
        unsigned.push(
            seal_aes_unsigned(alice(), bob().public(), &mut s, id, u64::MAX, &text, &mut r)
                .unwrap(),
        );
        s.mark_acknowledged();
    }
    for len in [0, 300, MAX_RSA_BODY_LEN] {
        let id = MessageId::random(&mut r);
        let text = vec![7u8; len];
        unsigned
            .push(seal_rsa_unsigned(alice(), bob().public(), id, u64::MAX, &text, &mut r).unwrap());
    }
    // Padded to the largest batch, so that the proofs are the longest there are.
    let bounds: Vec<usize> = unsigned
        .iter()
        .map(UnsignedEnvelope::max_signed_len)
        .collect();
    let padding = unsigned.last().unwrap().clone();
    unsigned.resize(MAX_SIGNED_BATCH, padding);
    for (env, bound) in sign_batch(alice(), unsigned).iter().zip(bounds) {
        let len = env.to_bytes().len();
        assert!(
            len <= bound,
            "{len} > {bound} ({:?}, {} bytes)",
            env.cipher,
            env.body.len()
        );
    }
}

#[test]
fn a_changed_envelope_of_a_batch_is_the_only_one_rejected() {
    let mut envelopes = aes_batch(8);
    envelopes[3].body[0] ^= 1;
    envelopes[6].timestamp += 1;
    let mut expected = vec![None; 8];
    expected[3] = Some(RejectReason::BadSignature);
    expected[6] = Some(RejectReason::BadSignature);
    assert_eq!(reasons(verify_many(envelopes, alice().public())), expected);
}

#[test]
fn a_proof_moved_resized_or_reshaped_is_rejected() {
    let envelopes = aes_batch(8);
    let seen = never_seen();
    let rejected = |env: &Envelope| {
        open(
            env,
            &ctx(bob(), alice(), &seen),
            &mut InboundSessions::default(),
            &mut rng(1),
        )
        .unwrap_err()
        .reason()
    };
    let with = |i: usize, change: &dyn Fn(&mut BatchProof)| {
        let mut env = envelopes[i].clone();
        change(env.proof.as_mut().unwrap());
        env
    };
    use RejectReason::{BadSignature, Malformed};
    // Leaf 0's path has the same shape in a tree of 5: only the signed count tells.
    assert_eq!(rejected(&with(0, &|p| p.count = 5)), BadSignature);
    assert_eq!(rejected(&with(0, &|p| p.count = 9)), BadSignature);
    assert_eq!(rejected(&with(2, &|p| p.index = 3)), BadSignature);
    assert_eq!(rejected(&with(2, &|p| p.path.truncate(2))), BadSignature);
    assert_eq!(rejected(&with(2, &|p| p.path[1] = p.path[0])), BadSignature);
    let other = envelopes[5].proof.clone().unwrap();
    assert_eq!(rejected(&with(2, &|p| *p = other.clone())), BadSignature);
    assert_eq!(
        rejected(&with(2, &|p| p.index = 8)),
        Malformed("batch proof of impossible shape")
    );
    assert_eq!(
        rejected(&with(2, &|p| p.count = 0)),
        Malformed("batch proof of impossible shape")
    );
    let mut bare = envelopes[1].clone();
    bare.proof = None;
    assert_eq!(
        rejected(&bare),
        Malformed("version 2 envelope without a batch proof")
    );
    let mut old = envelopes[1].clone();
    old.version = Envelope::VERSION_SIGNED_ALONE;
    assert_eq!(
        rejected(&old),
        Malformed("batch proof in a version 1 envelope")
    );
    // Signed alone, the first way (version 1), it still opens.
    old.proof = None;
    old.signature = alice().sign(&old.signed_bytes());
    let aad_version_differs = open(
        &old,
        &ctx(bob(), alice(), &seen),
        &mut InboundSessions::default(),
        &mut rng(1),
    );
    // Its body was sealed as version 2, and the version is in the body's associated data.
    assert_eq!(
        aad_version_differs.unwrap_err().reason(),
        RejectReason::Decryption
    );
}

/// `n` `aes` envelopes from Alice to Bob in one session, the text of each its index.
fn aes_envelopes(n: u8) -> Vec<Envelope> {
    let mut r = rng(20);
    let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    (0..n)
        .map(|i| {
            let id = MessageId::random(&mut r);
            seal_aes(alice(), bob().public(), &mut s, id, NOW, &[i], &mut r).unwrap()
        })
        .collect()
}

#[test]
fn a_verified_batch_opens_as_each_envelope_would() {
    let envelopes = aes_envelopes(16);
    let verified = verify_many(envelopes.clone(), alice().public());
    let seen = never_seen();
    let (mut one, mut batch) = (InboundSessions::default(), InboundSessions::default());
    for (i, (env, v)) in envelopes.iter().zip(&verified).enumerate() {
        let v = v.as_ref().expect("every signature is good");
        let ctx = ctx(bob(), alice(), &seen);
        let alone = open(env, &ctx, &mut one, &mut rng(3)).unwrap();
        let opened = open_verified(v, &ctx, &mut batch, &mut rng(3)).unwrap();
        assert_eq!(&opened.plaintext[..], &[u8::try_from(i).unwrap()]);
        assert_eq!((opened.id, &opened.plaintext), (alone.id, &alone.plaintext));
    }
}

#[test]
fn a_bad_envelope_in_a_batch_is_the_only_one_rejected() {
    let mut envelopes = aes_envelopes(8);
    envelopes[2].body[0] ^= 1; // the signature no longer matches
    resign(&mut envelopes[5], carol());
    envelopes[6].version = 9;
    let mut r = rng(4);
    let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    let id = MessageId::random(&mut r);
    envelopes.push(seal_aes(carol(), bob().public(), &mut s, id, NOW, b"x", &mut r).unwrap());
    let reasons: Vec<Option<RejectReason>> = verify_many(envelopes, alice().public())
        .into_iter()
        .map(|v| v.err().map(|e| e.reason()))
        .collect();
    use RejectReason::{BadSignature, SenderMismatch, UnsupportedVersion};
    let expected = [
        None,
        None,
        Some(BadSignature),
        None,
        None,
        Some(BadSignature),
        Some(UnsupportedVersion(9)),
        None,
        Some(SenderMismatch),
    ];
    assert_eq!(reasons, expected);
    // One envelope alone is checked on its own, with the same answer.
    let mut alone = aes_envelopes(1);
    alone[0].body[0] ^= 1;
    let reason = verify_many(alone, alice().public())[0]
        .as_ref()
        .unwrap_err()
        .reason();
    assert_eq!(reason, BadSignature);
}

/// An RNG that fails the test when used: the RSA decryptions blind with the RNG and
/// nothing else in opening uses one, so opening with it shows that no RSA work was left.
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

fn verified_all(envelopes: Vec<Envelope>) -> Vec<Verified> {
    verify_many(envelopes, alice().public())
        .into_iter()
        .map(|v| v.expect("every signature is good"))
        .collect()
}

/// The RSA work ahead, step by step on one thread, as a receiver that runs no other call
/// at the same time would do it (the node's policy across threads is `node::unwrap`).
fn work_ahead<R: CryptoRng + ?Sized>(
    verified: &mut [Verified],
    me: &Identity,
    sessions: &mut InboundSessions,
    rng: &mut R,
) {
    for v in verified {
        let unwrapped = match v.rsa_work(me.public()) {
            RsaWork::None => continue,
            RsaWork::Body => {
                v.decrypt_rsa_ahead(me, rng);
                continue;
            }
            RsaWork::SessionKey(key) if key.is_cached(sessions) => continue,
            RsaWork::SessionKey(key) => key.unwrap_key(me, rng).map(|k| (key.sender, k)),
        };
        match unwrapped {
            Ok((sender, key)) => {
                sessions.insert(sender, key);
            }
            Err(e) => v.reject_ahead(e),
        }
    }
}

#[test]
fn rsa_work_done_ahead_leaves_none_for_the_opening_and_opens_the_same() {
    let mut envelopes = aes_envelopes(4);
    let mut r = rng(30);
    let id = MessageId::random(&mut r);
    envelopes.push(seal_rsa(alice(), bob().public(), id, NOW, b"by rsa", &mut r).unwrap());
    let mut verified = verified_all(envelopes.clone());
    let empty = InboundSessions::default();
    assert!(
        verified
            .iter()
            .all(|v| v.envelope().needs_private_key(&empty))
    );

    let mut sessions = InboundSessions::default();
    work_ahead(&mut verified, bob(), &mut sessions, &mut r);
    assert_eq!(sessions.len(), 1, "the four share one session key");
    assert!(!verified[0].envelope().needs_private_key(&sessions));
    let seen = never_seen();
    let ctx = ctx(bob(), alice(), &seen);
    for (env, v) in envelopes.iter().zip(&verified) {
        let ahead = open_verified(v, &ctx, &mut sessions, &mut NoRsaWork).unwrap();
        let mut fresh = InboundSessions::default();
        let alone = open(env, &ctx, &mut fresh, &mut rng(3)).unwrap();
        assert_eq!(
            (ahead.id, ahead.cipher, ahead.key_id, &ahead.plaintext),
            (alone.id, alone.cipher, alone.key_id, &alone.plaintext)
        );
    }
    // A key already cached costs nothing ahead either.
    let mut again = verified_all(aes_envelopes(2));
    work_ahead(&mut again, bob(), &mut sessions, &mut NoRsaWork);
}

#[test]
fn the_rsa_work_of_each_kind_of_envelope() {
    let mut r = rng(33);
    let id = MessageId::random(&mut r);
    let by_rsa = seal_rsa(alice(), bob().public(), id, NOW, b"by rsa", &mut r).unwrap();
    let mut session = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    session.mark_acknowledged();
    let id = MessageId::random(&mut r);
    let no_key = seal_aes(alice(), bob().public(), &mut session, id, NOW, b"x", &mut r).unwrap();
    let mut verified = verified_all(vec![aes_envelope(b"x"), by_rsa, no_key]);
    let key_id = verified[0].envelope().key_id.unwrap();
    match verified[0].rsa_work(bob().public()) {
        RsaWork::SessionKey(key) => {
            assert_eq!(key.sender, alice().public().ed25519_bytes());
            assert_eq!(key.key_id, key_id);
            assert!(!key.is_cached(&InboundSessions::default()));
            // Unwrapped under its own id; the cache holds it under that id.
            let unwrapped = key.unwrap_key(bob(), &mut r).unwrap();
            let mut sessions = InboundSessions::default();
            assert_eq!(sessions.insert(key.sender, unwrapped), key_id);
            assert!(key.is_cached(&sessions));
            // Not by anyone else.
            assert!(key.unwrap_key(carol(), &mut r).is_err());
        }
        other => panic!("an aes envelope with its key: {other:?}"),
    }
    assert!(matches!(
        verified[1].rsa_work(bob().public()),
        RsaWork::Body
    ));
    assert!(matches!(
        verified[2].rsa_work(bob().public()),
        RsaWork::None
    ));
    // Decrypting ahead touches only an rsa body addressed to `me`.
    verified[0].decrypt_rsa_ahead(bob(), &mut NoRsaWork);
    verified[1].decrypt_rsa_ahead(carol(), &mut NoRsaWork);
    let seen = never_seen();
    let err = open_verified(
        &verified[1],
        &ctx(carol(), alice(), &seen),
        &mut InboundSessions::default(),
        &mut NoRsaWork,
    );
    assert_eq!(err.unwrap_err().reason(), RejectReason::WrongRecipient);
    verified[1].decrypt_rsa_ahead(bob(), &mut r);
    let opened = open_verified(
        &verified[1],
        &ctx(bob(), alice(), &seen),
        &mut InboundSessions::default(),
        &mut NoRsaWork,
    );
    assert_eq!(&opened.unwrap().plaintext[..], b"by rsa");
}

#[test]
fn a_failure_ahead_rejects_the_envelope_after_the_other_checks() {
    // Alice (a contact: her signatures verify) sends three envelopes whose wrapped key is
    // not the key their id names: each rejected, and no RSA work left for the opening. A
    // fourth brings the same wrapped key under its own id: that one opens.
    let mut r = rng(31);
    let mut s1 = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    let mut s2 = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    let mut envelopes: Vec<Envelope> = (0..3u8)
        .map(|i| {
            let id = MessageId::random(&mut r);
            let mut env =
                seal_aes(alice(), bob().public(), &mut s1, id, NOW, &[i], &mut r).unwrap();
            env.wrapped_key = Some(serde_bytes::ByteBuf::from(s2.wrapped.clone()));
            resign(&mut env, alice());
            env
        })
        .collect();
    let id = MessageId::random(&mut r);
    envelopes.push(seal_aes(alice(), bob().public(), &mut s2, id, NOW, b"ok", &mut r).unwrap());
    let mut verified = verified_all(envelopes);
    let mut sessions = InboundSessions::default();
    work_ahead(&mut verified, bob(), &mut sessions, &mut r);
    assert_eq!(sessions.len(), 1, "only the fourth one's key");
    let seen = never_seen();
    let ctx4 = ctx(bob(), alice(), &seen);
    let fourth = verified.pop().unwrap();
    let opened = open_verified(&fourth, &ctx4, &mut sessions, &mut NoRsaWork).unwrap();
    assert_eq!(&opened.plaintext[..], b"ok");
    for v in &verified {
        let err = open_verified(
            v,
            &ctx(bob(), alice(), &seen),
            &mut sessions,
            &mut NoRsaWork,
        );
        assert_eq!(err.unwrap_err().reason(), RejectReason::KeyIdMismatch);
    }
    // A replay is still told as one (and acknowledged again), not as the failure.
    let always = |_: &[u8; 32], _: &MessageId| true;
    let err = open_verified(
        &verified[0],
        &ctx(bob(), alice(), &always),
        &mut sessions,
        &mut NoRsaWork,
    );
    assert_eq!(err.unwrap_err().reason(), RejectReason::Replayed);
}

#[test]
fn envelopes_for_another_identity_get_no_rsa_work_ahead() {
    let mut verified = verified_all(aes_envelopes(2));
    assert!(
        verified
            .iter()
            .all(|v| matches!(v.rsa_work(carol().public()), RsaWork::None))
    );
    let mut sessions = InboundSessions::default();
    work_ahead(&mut verified, carol(), &mut sessions, &mut NoRsaWork);
    assert!(sessions.is_empty());
    let seen = never_seen();
    let err = open_verified(
        &verified[0],
        &ctx(carol(), alice(), &seen),
        &mut sessions,
        &mut NoRsaWork,
    );
    assert_eq!(err.unwrap_err().reason(), RejectReason::WrongRecipient);
}

#[test]
fn a_verified_envelope_still_goes_through_the_other_checks() {
    let verified = verify_many(aes_envelopes(2), alice().public());
    let v = verified[0].as_ref().unwrap();
    let seen = never_seen();
    let mut sessions = InboundSessions::default();
    // Opened with another sender's context: refused, whoever verified it.
    let err = open_verified(v, &ctx(bob(), carol(), &seen), &mut sessions, &mut rng(5));
    assert_eq!(err.unwrap_err().reason(), RejectReason::SenderMismatch);
    // Not for this recipient.
    let err = open_verified(v, &ctx(carol(), alice(), &seen), &mut sessions, &mut rng(5));
    assert_eq!(err.unwrap_err().reason(), RejectReason::WrongRecipient);
    // Already seen.
    let always = |_: &[u8; 32], _: &MessageId| true;
    let err = open_verified(v, &ctx(bob(), alice(), &always), &mut sessions, &mut rng(5));
    assert_eq!(err.unwrap_err().reason(), RejectReason::Replayed);
    // Too old.
    let mut late = ctx(bob(), alice(), &seen);
    late.now_ms = NOW + 400 * 24 * 3600 * 1000;
    let err = open_verified(v, &late, &mut sessions, &mut rng(5));
    assert_eq!(err.unwrap_err().reason(), RejectReason::TooOld);
}

#[test]
fn wrong_recipient_rejected() {
    let env = aes_envelope(b"for bob");
    let seen = never_seen();
    let err = open(
        &env,
        &ctx(carol(), alice(), &seen),
        &mut InboundSessions::default(),
        &mut rng(1),
    )
    .unwrap_err();
    assert_eq!(err.reason(), RejectReason::WrongRecipient);
}

#[test]
fn replay_rejected() {
    let env = aes_envelope(b"once");
    let seen_ids: RefCell<HashSet<MessageId>> = RefCell::new(HashSet::new());
    let guard = |_: &[u8; 32], id: &MessageId| seen_ids.borrow().contains(id);
    let mut inbound = InboundSessions::default();
    let mut r = rng(3);
    let opened = open(&env, &ctx(bob(), alice(), &guard), &mut inbound, &mut r).unwrap();
    seen_ids.borrow_mut().insert(opened.id);
    let err = open(&env, &ctx(bob(), alice(), &guard), &mut inbound, &mut r).unwrap_err();
    assert_eq!(err.reason(), RejectReason::Replayed);
}

#[test]
fn timestamps_out_of_range_rejected() {
    let mut r = rng(4);
    let seen = never_seen();
    let policy = OpenPolicy::default();
    for (ts, reason) in [
        (
            NOW + policy.max_future_skew_ms + 1,
            RejectReason::FromTheFuture,
        ),
        (NOW - policy.max_age_ms.unwrap() - 1, RejectReason::TooOld),
    ] {
        let mut s = OutboundSession::new(&mut r, bob().public(), ts).unwrap();
        let env = seal_aes(
            alice(),
            bob().public(),
            &mut s,
            MessageId::random(&mut r),
            ts,
            b"t",
            &mut r,
        )
        .unwrap();
        let err = open(
            &env,
            &ctx(bob(), alice(), &seen),
            &mut InboundSessions::default(),
            &mut r,
        )
        .unwrap_err();
        assert_eq!(err.reason(), reason);
    }
}

#[test]
fn wrapped_key_must_match_its_id() {
    // Alice (a contact, so her signature verifies) sends a wrapped key that is not the key
    // the id names: rejected after unwrapping, and not cached.
    let mut r = rng(5);
    let mut s1 = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    let s2 = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    let mut env = seal_aes(
        alice(),
        bob().public(),
        &mut s1,
        MessageId::random(&mut r),
        NOW,
        b"k",
        &mut r,
    )
    .unwrap();
    env.wrapped_key = Some(serde_bytes::ByteBuf::from(s2.wrapped.clone()));
    resign(&mut env, alice());
    let seen = never_seen();
    let mut inbound = InboundSessions::default();
    let err = open(&env, &ctx(bob(), alice(), &seen), &mut inbound, &mut r).unwrap_err();
    assert_eq!(err.reason(), RejectReason::KeyIdMismatch);
    assert!(inbound.is_empty());
}

#[test]
fn rotation_policy() {
    let mut r = rng(6);
    let p = RotationPolicy {
        max_messages: 2,
        max_age_ms: 1000,
    };
    let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    assert!(!s.needs_rotation(&p, NOW));
    assert!(s.needs_rotation(&p, NOW + 1000));
    for _ in 0..2 {
        seal_aes(
            alice(),
            bob().public(),
            &mut s,
            MessageId::random(&mut r),
            NOW,
            b"",
            &mut r,
        )
        .unwrap();
    }
    assert!(s.needs_rotation(&p, NOW));
}

#[test]
fn session_state_round_trips() {
    let mut r = rng(7);
    let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
    s.mark_acknowledged();
    let restored = OutboundSession::from_secret_bytes(&s.to_secret_bytes()).unwrap();
    assert_eq!(restored.key_id(), s.key_id());
    assert!(restored.is_acknowledged());
    assert!(OutboundSession::from_secret_bytes(b"junk").is_err());
}

#[test]
fn inbound_cache_is_bounded() {
    let mut c = InboundSessions::with_capacity(2);
    for i in 0..5u8 {
        c.insert([i; 32], Zeroizing::new([i; 32]));
    }
    assert_eq!(c.len(), 2);
    assert!(c.get(&[4; 32], &key_id_of(&[4; 32])).is_some());
    assert!(c.get(&[0; 32], &key_id_of(&[0; 32])).is_none());
}

#[test]
fn ids_print_and_parse() {
    let id = MessageId([0xab; 16]);
    assert_eq!(id.to_string(), "ab".repeat(16));
    assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
    assert!("xyz".parse::<MessageId>().is_err());
    assert!("zz".repeat(16).parse::<MessageId>().is_err());
    assert_eq!("RSA".parse::<Cipher>().unwrap(), Cipher::Rsa);
    assert!("des".parse::<Cipher>().is_err());
}

proptest::proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
        let _ = Envelope::from_bytes(&bytes);
    }

    #[test]
    fn aes_round_trip_any_body(body in proptest::collection::vec(proptest::num::u8::ANY, 0..4096), seed in 0u64..1000) {
        let mut r = rng(seed);
        let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        let env = seal_aes(alice(), bob().public(), &mut s, MessageId::random(&mut r), NOW, &body, &mut r).unwrap();
        let env = Envelope::from_bytes(&env.to_bytes()).unwrap();
        let seen = never_seen();
        let opened = open(&env, &ctx(bob(), alice(), &seen), &mut InboundSessions::default(), &mut r).unwrap();
        proptest::prop_assert_eq!(&opened.plaintext[..], &body[..]);
    }
}
