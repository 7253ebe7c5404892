//! Envelope decoding and the full `open` path (alice -> bob) on arbitrary bytes.
#![no_main]

mod common;

use encrypto_crypto::MessageId;
use encrypto_crypto::envelope::{self, Envelope, InboundSessions, OpenContext, OpenPolicy};
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
        let _ = envelope::open(&env, &ctx, &mut InboundSessions::default(), &mut rng);
    }
});

fn rand_core_rng() -> impl encrypto_crypto::CryptoRng {
    DetRng(0)
}

/// A fixed-sequence RNG: only used for RSA blinding, which does not change results.
struct DetRng(u64);

impl encrypto_crypto::rand_core::TryRng for DetRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.try_next_u64()? as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        Ok(self.0)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for b in dst {
            *b = self.try_next_u64()? as u8;
        }
        Ok(())
    }
}

impl encrypto_crypto::rand_core::TryCryptoRng for DetRng {}
