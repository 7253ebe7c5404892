//! File manifest decoding, verification against Alice's key, and the keyless chunk check a
//! relay runs, on arbitrary bytes.
#![no_main]

mod common;

use encrypto_crypto::file::{FileManifest, verify_chunk};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a chunk index and the tail is tried as that chunk, so one input
    // exercises both the manifest decoder and verify_chunk.
    let Some((&index, rest)) = data.split_first() else {
        return;
    };
    let split = rest.len() / 2;
    let (manifest, chunk) = rest.split_at(split);
    for bytes in [rest, manifest] {
        if let Ok(m) = FileManifest::from_bytes(bytes) {
            assert_eq!(m.to_bytes(), bytes, "decoding is canonical");
            let _ = m.verify(common::alice().public());
            let _ = verify_chunk(&m, u64::from(index), chunk);
            let _ = m.chunk_plain_len(u64::from(index));
        }
    }
});
