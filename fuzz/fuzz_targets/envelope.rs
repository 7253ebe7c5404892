//! Envelope decoding and the full `open` path (alice -> bob) on arbitrary bytes, and the
//! node's split path (`verify_many`, the RSA work done ahead, `open_verified`) agreeing with it.
#![no_main]

mod common;

use encrypto_crypto::MessageId;
use encrypto_crypto::envelope::{
    self, Envelope, InboundSessions, OpenContext, OpenPolicy, RsaWork,
};
use libfuzzer_sys::fuzz_target;

fn never(_: &[u8; 32], _: &MessageId) -> bool {
    false
}

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::from_bytes(data) {
        assert_eq!(env.to_bytes(), data, "decoding is canonical");
        let ctx = OpenContext {
            me: common::bob(),
            sender: common::alice().public(),
            now_ms: 1_767_225_600_000,
            policy: OpenPolicy::default(),
            seen: &never,
        };
        let mut rng = rand_core_rng();
        let whole = envelope::open(&env, &ctx, &mut InboundSessions::default(), &mut rng);
        // The node's path: signatures checked, RSA work done ahead on another thread (the
        // steps the node's `unwrap::decrypt_ahead` takes, in its order), then opened. It must
        // come to the same answer.
        let split = match envelope::verify_many(vec![env], ctx.sender).pop() {
            Some(Ok(mut verified)) => {
                let mut sessions = InboundSessions::default();
                let unwrapped = match verified.rsa_work(ctx.me.public()) {
                    RsaWork::None => None,
                    RsaWork::Body => {
                        verified.decrypt_rsa_ahead(ctx.me, &mut rng);
                        None
                    }
                    RsaWork::SessionKey(key) if key.is_cached(&sessions) => None,
                    RsaWork::SessionKey(key) => {
                        Some(key.unwrap_key(ctx.me, &mut rng).map(|k| (key.sender, k)))
                    }
                };
                match unwrapped {
                    Some(Ok((sender, key))) => {
                        sessions.insert(sender, key);
                    }
                    Some(Err(e)) => verified.reject_ahead(e),
                    None => {}
                }
                envelope::open_verified(&verified, &ctx, &mut sessions, &mut rng)
            }
            Some(Err(e)) => Err(e),
            None => panic!("verify_many returned nothing for one envelope"),
        };
        match (whole, split) {
            (Ok(a), Ok(b)) => assert_eq!(
                (a.id, a.cipher, a.key_id, &a.plaintext[..]),
                (b.id, b.cipher, b.key_id, &b.plaintext[..])
            ),
            (Err(a), Err(b)) => assert_eq!(a.reason(), b.reason()),
            (a, b) => panic!("open and the split path disagree: {a:?} / {b:?}"),
        }
    }
});

fn rand_core_rng() -> impl encrypto_crypto::CryptoRng {
    DetRng(0)
}

/// A fixed-sequence RNG: only used for RSA blinding, which does not change results. It hands
/// out the high bits of a 64-bit LCG: the low bits of one repeat with a short period (the
/// lowest byte every 256 steps), and blinding's rejection sampling, fed such a cycle, can
/// loop forever.
struct DetRng(u64);

impl DetRng {
    fn step(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0
    }
}

impl encrypto_crypto::rand_core::TryRng for DetRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok((self.step() >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok((self.step() >> 32) << 32 | self.step() >> 32)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for b in dst {
            *b = (self.step() >> 56) as u8;
        }
        Ok(())
    }
}

impl encrypto_crypto::rand_core::TryCryptoRng for DetRng {}
