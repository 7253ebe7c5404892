//! Signed profile decoding and verification on arbitrary bytes.
#![no_main]

use encrypto_crypto::SignedProfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = SignedProfile::from_bytes(data) {
        assert_eq!(p.to_bytes(), data, "decoding is canonical");
        let _ = p.verify_self_signed();
    }
});
