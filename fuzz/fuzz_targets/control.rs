//! Control payload decoding and verification (alice -> bob) on arbitrary bytes.
#![no_main]

mod common;

use encrypto_crypto::MessageId;
use encrypto_crypto::control::Control;
use encrypto_crypto::envelope::{OpenContext, OpenPolicy};
use libfuzzer_sys::fuzz_target;

fn never(_: &[u8; 32], _: &MessageId) -> bool {
    false
}

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Control::from_bytes(data) {
        assert_eq!(c.to_bytes(), data, "decoding is canonical");
        let ctx = OpenContext {
            me: common::bob(),
            sender: common::alice().public(),
            now_ms: 1_767_225_600_000,
            policy: OpenPolicy::default(),
            seen: &never,
        };
        let _ = c.verify(&ctx);
    }
});
