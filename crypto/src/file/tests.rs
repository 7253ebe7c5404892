use super::*;
use crate::test_support::{alice, bob, carol, rng};
use proptest::prelude::*;

const CHUNK: u32 = MIN_CHUNK_SIZE;
const CREATED: u64 = 1_767_225_600_000;

fn plaintext(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

struct Sent {
    manifest: FileManifest,
    key: FileKey,
    chunks: Vec<Vec<u8>>,
}

/// Alice sends `data` to `to` in chunks of `chunk_size`.
fn send_with(data: &[u8], chunk_size: u32, to: &Identity, seed: u64) -> Sent {
    let mut r = rng(seed);
    let id = FileId::random(&mut r);
    let mut b = ManifestBuilder::new(
        &mut r,
        to.public(),
        id,
        data.len() as u64,
        chunk_size,
        "report.pdf",
        "application/pdf",
    )
    .unwrap();
    let chunks: Vec<Vec<u8>> = data
        .chunks(chunk_size as usize)
        .map(|c| b.seal_next_chunk(c).unwrap())
        .collect();
    let (manifest, key) = b.finish(alice(), CREATED, &mut r).unwrap();
    Sent {
        manifest,
        key,
        chunks,
    }
}

fn send(data: &[u8], seed: u64) -> Sent {
    send_with(data, CHUNK, bob(), seed)
}

fn receive(bytes: &[u8], from: &PublicIdentity, me: &Identity, chunks: &[Vec<u8>]) -> Vec<u8> {
    let m = FileManifest::from_bytes(bytes).unwrap();
    m.verify(from).unwrap();
    let key = m.unwrap_key(me, &mut rng(99)).unwrap();
    let meta = m.open_meta(&key).unwrap();
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        out.extend_from_slice(&open_chunk(&key, &m, i as u64, c).unwrap());
    }
    assert_eq!(meta.sha256, <[u8; 32]>::from(Sha256::digest(&out)));
    out
}

#[test]
fn round_trip_over_sizes() {
    let c = CHUNK as usize;
    for (i, size) in [0, 1, c - 1, c, c + 1, 3 * c + c / 2]
        .into_iter()
        .enumerate()
    {
        let data = plaintext(size, i as u8);
        let sent = send(&data, i as u64);
        let m = &sent.manifest;
        assert_eq!(m.chunk_count(), size.div_ceil(c) as u64);
        assert_eq!(sent.chunks.len(), size.div_ceil(c));
        for (j, chunk) in sent.chunks.iter().enumerate() {
            assert_eq!(chunk.len() as u64, m.sealed_chunk_len(j as u64).unwrap());
        }
        let bytes = m.to_bytes();
        assert_eq!(&FileManifest::from_bytes(&bytes).unwrap(), m);
        assert_eq!(receive(&bytes, alice().public(), bob(), &sent.chunks), data);
        let meta = m.open_meta(&sent.key).unwrap();
        assert_eq!(meta.name, "report.pdf");
        assert_eq!(meta.media_type, "application/pdf");
        assert_eq!(meta.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    }
}

#[test]
fn empty_file_has_no_chunks() {
    let sent = send(&[], 1);
    assert_eq!(sent.manifest.chunk_count(), 0);
    assert!(sent.chunks.is_empty());
    assert_eq!(
        verify_chunk(&sent.manifest, 0, &[0; TAG_LEN]),
        Err(FileError::ChunkIndexOutOfRange { index: 0, count: 0 })
    );
}

#[test]
fn builder_checks_chunk_lengths_and_completeness() {
    let mut r = rng(5);
    let new = |r: &mut rand::rngs::StdRng, size| {
        let id = FileId::random(r);
        ManifestBuilder::new(r, bob().public(), id, size, CHUNK, "a", "b/c")
    };
    let mut b = new(&mut r, 5000).unwrap();
    assert_eq!(b.chunk_count(), 2);
    assert_eq!(b.next_chunk_len(), Some(4096));
    assert_eq!(
        b.seal_next_chunk(&[0; 4095]),
        Err(FileError::ChunkLength {
            index: 0,
            expected: 4096,
            actual: 4095
        })
    );
    b.seal_next_chunk(&[0; 4096]).unwrap();
    assert_eq!(b.next_index(), 1);
    assert!(matches!(
        b.seal_next_chunk(&[0; 4096]),
        Err(FileError::ChunkLength { index: 1, .. })
    ));
    let mut r2 = rng(6);
    let unfinished = new(&mut r2, 5000).unwrap();
    assert_eq!(
        unfinished.finish(alice(), 1, &mut r2).unwrap_err(),
        FileError::Incomplete {
            sealed: 0,
            expected: 2
        }
    );
    b.seal_next_chunk(&[0; 904]).unwrap();
    assert_eq!(b.next_chunk_len(), None);
    assert_eq!(
        b.seal_next_chunk(&[0; 1]),
        Err(FileError::ChunkIndexOutOfRange { index: 2, count: 2 })
    );
    let key = b.key().clone();
    let (m, k) = b.finish(alice(), 1, &mut r).unwrap();
    assert_eq!(k.as_bytes(), key.as_bytes());
    m.verify(alice().public()).unwrap();
}

#[test]
fn builder_rejects_bad_parameters() {
    let mut r = rng(7);
    let id = FileId::random(&mut r);
    let p = bob().public();
    let new = |r: &mut rand::rngs::StdRng, size, chunk, name: &str, mt: &str| {
        ManifestBuilder::new(r, p, id, size, chunk, name, mt).map(|_| ())
    };
    assert_eq!(
        new(&mut r, 1, 0, "a", "b"),
        Err(FileError::InvalidChunkSize {
            chunk_size: 0,
            size: 1
        })
    );
    assert!(new(&mut r, 1, MIN_CHUNK_SIZE - 1, "a", "b").is_err());
    assert!(new(&mut r, 1, MAX_CHUNK_SIZE + 1, "a", "b").is_err());
    // 2^17 chunks of 4 KiB fit; one byte more does not.
    let max_small = MAX_CHUNKS * u64::from(MIN_CHUNK_SIZE);
    assert!(new(&mut r, max_small, MIN_CHUNK_SIZE, "a", "b").is_ok());
    assert!(matches!(
        new(&mut r, max_small + 1, MIN_CHUNK_SIZE, "a", "b"),
        Err(FileError::InvalidChunkSize { .. })
    ));
    assert_eq!(
        new(&mut r, u64::MAX, MAX_CHUNK_SIZE, "a", "b"),
        Err(FileError::TooLarge { size: u64::MAX })
    );
    for name in ["", ".", "..", "a/b", "a\\b", "a\nb", &"x".repeat(256)] {
        assert!(
            matches!(
                new(&mut r, 1, CHUNK, name, "b"),
                Err(FileError::InvalidMeta(_))
            ),
            "{name:?}"
        );
    }
    assert!(new(&mut r, 1, CHUNK, &"é".repeat(127), "b").is_ok());
    for mt in ["", "text/plain\n", "tëxt/plain", &"x".repeat(128)] {
        assert!(
            matches!(
                new(&mut r, 1, CHUNK, "a", mt),
                Err(FileError::InvalidMeta(_))
            ),
            "{mt:?}"
        );
    }
    assert!(new(&mut r, 1, CHUNK, "a", "text/plain; charset=utf-8").is_ok());
}

#[test]
fn longest_metadata_fits_and_sealed_meta_length_is_fixed() {
    let mut r = rng(8);
    let mut lens = Vec::new();
    for name in ["a".to_owned(), "€".repeat(85)] {
        let mt = "m".repeat(MAX_MEDIA_TYPE_LEN);
        let id = FileId::random(&mut r);
        let b = ManifestBuilder::new(&mut r, bob().public(), id, 0, CHUNK, &name, &mt).unwrap();
        let (m, key) = b.finish(alice(), 1, &mut r).unwrap();
        assert_eq!(m.open_meta(&key).unwrap().name, name);
        lens.push(m.sealed_meta.len());
    }
    assert_eq!(lens, [SEALED_META_LEN, SEALED_META_LEN]);
}

#[test]
fn relay_verifies_chunks_without_the_key() {
    let data = plaintext(3 * CHUNK as usize + 10, 3);
    let sent = send(&data, 10);
    // Carol relays: she has only the manifest bytes and the sealed chunks.
    let m = FileManifest::from_bytes(&sent.manifest.to_bytes()).unwrap();
    m.verify(alice().public()).unwrap();
    for (i, c) in sent.chunks.iter().enumerate() {
        verify_chunk(&m, i as u64, c).unwrap();
    }
    assert_eq!(
        m.unwrap_key(carol(), &mut rng(1)).unwrap_err(),
        FileError::WrongRecipient
    );
    let mut bad = sent.chunks[1].clone();
    bad[100] ^= 0x40;
    assert_eq!(
        verify_chunk(&m, 1, &bad),
        Err(FileError::ChunkHashMismatch { index: 1 })
    );
    let short = &sent.chunks[3][..sent.chunks[3].len() - 1];
    assert_eq!(
        verify_chunk(&m, 3, short),
        Err(FileError::ChunkLength {
            index: 3,
            expected: 10 + TAG_LEN as u64,
            actual: 9 + TAG_LEN as u64
        })
    );
    for index in [4, u64::from(u32::MAX), u64::MAX] {
        assert_eq!(
            verify_chunk(&m, index, &sent.chunks[0]),
            Err(FileError::ChunkIndexOutOfRange { index, count: 4 })
        );
    }
}

#[test]
fn every_bit_flip_in_a_sealed_chunk_is_caught() {
    let data = plaintext(CHUNK as usize + 100, 4);
    let sent = send(&data, 11);
    for (i, chunk) in sent.chunks.iter().enumerate() {
        for bit in 0..chunk.len() * 8 {
            let mut bad = chunk.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(verify_chunk(&sent.manifest, i as u64, &bad).is_err());
            assert!(open_chunk(&sent.key, &sent.manifest, i as u64, &bad).is_err());
        }
    }
}

#[test]
fn every_bit_flip_in_an_encoded_manifest_is_caught() {
    let sent = send(&plaintext(100, 5), 12);
    let bytes = sent.manifest.to_bytes();
    for bit in 0..bytes.len() * 8 {
        let mut bad = bytes.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let accepted =
            FileManifest::from_bytes(&bad).and_then(|m| m.verify(alice().public()).map(|()| m));
        assert!(accepted.is_err(), "bit {bit} flipped and still accepted");
    }
}

#[test]
fn chunks_swapped_between_indices_are_rejected() {
    let data = plaintext(3 * CHUNK as usize, 6);
    let sent = send(&data, 13);
    let m = &sent.manifest;
    // Relays and recipients catch it by hash.
    assert_eq!(
        verify_chunk(m, 1, &sent.chunks[0]),
        Err(FileError::ChunkHashMismatch { index: 1 })
    );
    // Even with the hashes swapped in the manifest too (no longer signed), the AEAD binds
    // the index: the chunk does not open at another position.
    let mut forged = m.clone();
    forged.chunk_hashes.swap(0, 1);
    assert!(forged.verify(alice().public()).is_err());
    assert_eq!(
        open_chunk(&sent.key, &forged, 1, &sent.chunks[0]),
        Err(FileError::Decryption)
    );
}

#[test]
fn truncated_file_does_not_open() {
    let data = plaintext(3 * CHUNK as usize, 7);
    let sent = send(&data, 14);
    let mut forged = sent.manifest.clone();
    forged.size = 2 * u64::from(CHUNK);
    forged.chunk_hashes.truncate(2);
    assert!(forged.verify(alice().public()).is_err());
    // The chunk count is in the AAD, so even unsigned the shorter file does not open.
    for i in 0..2 {
        assert_eq!(
            open_chunk(&sent.key, &forged, i, &sent.chunks[i as usize]),
            Err(FileError::Decryption)
        );
    }
}

#[test]
fn chunks_swapped_between_files_are_rejected() {
    let data = plaintext(2 * CHUNK as usize, 8);
    let a = send(&data, 15);
    let b = send(&data, 16);
    assert_ne!(a.manifest.file_id, b.manifest.file_id);
    assert_eq!(
        verify_chunk(&b.manifest, 0, &a.chunks[0]),
        Err(FileError::ChunkHashMismatch { index: 0 })
    );
    let mut forged = b.manifest.clone();
    forged.chunk_hashes[0] = a.manifest.chunk_hashes[0];
    assert_eq!(
        open_chunk(&b.key, &forged, 0, &a.chunks[0]),
        Err(FileError::Decryption)
    );
    // Same key, other file id: the AAD still tells them apart.
    let resealed = seal_chunk(&b.key, &a.manifest.file_id, 0, 2, &data[..CHUNK as usize]);
    forged.chunk_hashes[0] = sealed_chunk_hash(&resealed);
    assert_eq!(
        open_chunk(&b.key, &forged, 0, &resealed),
        Err(FileError::Decryption)
    );
    assert_eq!(a.manifest.open_meta(&b.key), Err(FileError::Decryption));
}

#[test]
fn wrong_recipient_cannot_unwrap() {
    let sent = send(&plaintext(10, 9), 17);
    assert_eq!(
        sent.manifest.unwrap_key(carol(), &mut rng(2)).unwrap_err(),
        FileError::WrongRecipient
    );
    // Readdressing the manifest to Carol breaks the signature, and her RSA key cannot
    // unwrap a key wrapped for Bob anyway.
    let mut readdressed = sent.manifest.clone();
    readdressed.recipient = carol().public().ed25519_bytes();
    assert_eq!(
        readdressed.verify(alice().public()),
        Err(FileError::BadSignature)
    );
    assert_eq!(
        readdressed.unwrap_key(carol(), &mut rng(2)).unwrap_err(),
        FileError::Decryption
    );
}

#[test]
fn verify_checks_sender_and_signature() {
    let sent = send(&plaintext(10, 10), 18);
    let m = &sent.manifest;
    assert_eq!(m.verify(bob().public()), Err(FileError::SenderMismatch));
    let mut later = m.clone();
    later.created += 1;
    assert_eq!(later.verify(alice().public()), Err(FileError::BadSignature));
    let mut rehashed = m.clone();
    rehashed.chunk_hashes[0][31] ^= 1;
    assert_eq!(
        rehashed.verify(alice().public()),
        Err(FileError::BadSignature)
    );
    let mut resigned = m.clone();
    resigned.signature[0] ^= 1;
    assert_eq!(
        resigned.verify(alice().public()),
        Err(FileError::BadSignature)
    );
}

#[test]
fn resealing_reproduces_the_chunks() {
    let data = plaintext(2 * CHUNK as usize + 7, 11);
    let sent = send(&data, 19);
    for (i, part) in data.chunks(CHUNK as usize).enumerate() {
        let again = sent
            .manifest
            .reseal_chunk(&sent.key, i as u64, part)
            .unwrap();
        assert_eq!(again, sent.chunks[i]);
    }
    let mut changed = data[..CHUNK as usize].to_vec();
    changed[0] ^= 1;
    assert_eq!(
        sent.manifest.reseal_chunk(&sent.key, 0, &changed),
        Err(FileError::ChunkHashMismatch { index: 0 })
    );
    assert!(matches!(
        sent.manifest.reseal_chunk(&sent.key, 2, &[0; 8]),
        Err(FileError::ChunkLength { index: 2, .. })
    ));
    assert!(matches!(
        sent.manifest.reseal_chunk(&sent.key, 3, &[]),
        Err(FileError::ChunkIndexOutOfRange { index: 3, .. })
    ));
}

#[test]
fn forwarding_rewraps_only_the_key() {
    let data = plaintext(2 * CHUNK as usize + 500, 12);
    let sent = send(&data, 20);
    let bobs = FileManifest::from_bytes(&sent.manifest.to_bytes()).unwrap();
    bobs.verify(alice().public()).unwrap();
    let key = bobs.unwrap_key(bob(), &mut rng(3)).unwrap();
    let fwd = bobs
        .forward(&key, bob(), carol().public(), CREATED + 1, &mut rng(4))
        .unwrap();
    assert_eq!(fwd.file_id, bobs.file_id);
    assert_eq!(fwd.chunk_hashes, bobs.chunk_hashes);
    assert_eq!(fwd.sealed_meta, bobs.sealed_meta);
    assert_eq!(fwd.created, CREATED + 1);
    assert_ne!(fwd.wrapped_key, bobs.wrapped_key);
    assert_eq!(fwd.verify(alice().public()), Err(FileError::SenderMismatch));
    // Carol opens the original chunk bytes with the re-wrapped key.
    assert_eq!(
        receive(&fwd.to_bytes(), bob().public(), carol(), &sent.chunks),
        data
    );
    assert_eq!(
        fwd.unwrap_key(bob(), &mut rng(5)).unwrap_err(),
        FileError::WrongRecipient
    );
    // Bob cannot forward with a key that is not this file's.
    let other = FileKey::generate(&mut rng(6));
    assert_eq!(
        bobs.forward(&other, bob(), carol().public(), 1, &mut rng(7)),
        Err(FileError::Decryption)
    );
}

#[test]
fn chunk_size_for_boundaries() {
    let d = u64::from(DEFAULT_CHUNK_SIZE);
    assert_eq!(chunk_size_for(0), Ok(DEFAULT_CHUNK_SIZE));
    assert_eq!(chunk_size_for(1), Ok(DEFAULT_CHUNK_SIZE));
    assert_eq!(chunk_size_for(d * MAX_CHUNKS), Ok(DEFAULT_CHUNK_SIZE));
    assert_eq!(
        chunk_size_for(d * MAX_CHUNKS + 1),
        Ok(2 * DEFAULT_CHUNK_SIZE)
    );
    assert_eq!(
        chunk_size_for(2 * d * MAX_CHUNKS),
        Ok(2 * DEFAULT_CHUNK_SIZE)
    );
    assert_eq!(
        chunk_size_for(2 * d * MAX_CHUNKS + 1),
        Ok(4 * DEFAULT_CHUNK_SIZE)
    );
    assert_eq!(chunk_size_for(MAX_FILE_SIZE), Ok(MAX_CHUNK_SIZE));
    assert_eq!(
        chunk_size_for(MAX_FILE_SIZE + 1),
        Err(FileError::TooLarge {
            size: MAX_FILE_SIZE + 1
        })
    );
    assert_eq!(
        chunk_size_for(u64::MAX),
        Err(FileError::TooLarge { size: u64::MAX })
    );
    // 4 GiB: the default size, 16384 chunks.
    assert_eq!(chunk_size_for(4 << 30), Ok(DEFAULT_CHUNK_SIZE));
    for size in [0, 1, d * MAX_CHUNKS + 1, 3 << 36, MAX_FILE_SIZE] {
        let c = chunk_size_for(size).unwrap();
        assert!((MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&c));
        assert!(size.div_ceil(u64::from(c)) <= MAX_CHUNKS);
    }
}

/// A structurally valid manifest of `size` bytes with fake hashes (no chunks sealed).
fn shaped(size: u64, chunk_size: u32, hashes: usize) -> FileManifest {
    let sent = send(&[], 21);
    FileManifest {
        size,
        chunk_size,
        chunk_hashes: vec![[7; HASH_LEN]; hashes],
        ..sent.manifest
    }
}

#[test]
fn absurd_manifests_are_rejected_without_panics() {
    let cases: Vec<(FileManifest, FileError)> = vec![
        (
            shaped(1 << 63, CHUNK, 1),
            FileError::TooLarge { size: 1 << 63 },
        ),
        (
            shaped(u64::MAX, MAX_CHUNK_SIZE, 0),
            FileError::TooLarge { size: u64::MAX },
        ),
        (
            shaped(10, 0, 1),
            FileError::InvalidManifest("chunk size out of bounds"),
        ),
        (
            shaped(10, u32::MAX, 1),
            FileError::InvalidManifest("chunk size out of bounds"),
        ),
        (
            shaped(10_000, CHUNK, 2),
            FileError::InvalidManifest("chunk hash count does not match size and chunk size"),
        ),
        (
            shaped(0, CHUNK, 1),
            FileError::InvalidManifest("chunk hash count does not match size and chunk size"),
        ),
        (
            shaped(MAX_FILE_SIZE, CHUNK, 3),
            FileError::InvalidManifest("more chunks than allowed for this chunk size"),
        ),
        (
            FileManifest {
                version: 2,
                ..shaped(0, CHUNK, 0)
            },
            FileError::InvalidManifest("unsupported manifest version"),
        ),
        (
            FileManifest {
                sealed_meta: ByteBuf::from(vec![0; 10]),
                ..shaped(0, CHUNK, 0)
            },
            FileError::InvalidManifest("sealed metadata has the wrong length"),
        ),
        (
            FileManifest {
                wrapped_key: ByteBuf::from(vec![0; 255]),
                ..shaped(0, CHUNK, 0)
            },
            FileError::InvalidManifest("wrapped key is not one RSA block"),
        ),
    ];
    for (m, err) in cases {
        assert_eq!(FileManifest::from_bytes(&m.to_bytes()), Err(err.clone()));
        assert_eq!(m.verify(alice().public()), Err(err));
        // The keyless chunk checks stay total on unverified manifests.
        for index in [0, 1, 2, u64::MAX] {
            let _ = verify_chunk(&m, index, &[0; 64]);
            let _ = m.sealed_chunk_len(index);
        }
    }
}

#[test]
fn largest_manifest_fits_the_limit_and_one_more_hash_does_not_decode() {
    let full = shaped(MAX_FILE_SIZE, MAX_CHUNK_SIZE, MAX_CHUNKS as usize);
    let bytes = full.to_bytes();
    assert!(bytes.len() <= MAX_MANIFEST_LEN);
    assert_eq!(FileManifest::from_bytes(&bytes).unwrap(), full);
    assert_eq!(
        full.sealed_chunk_len(MAX_CHUNKS - 1),
        Ok(u64::from(MAX_CHUNK_SIZE) + TAG_LEN as u64)
    );
    let over = shaped(MAX_FILE_SIZE, MAX_CHUNK_SIZE, MAX_CHUNKS as usize + 1);
    assert!(matches!(
        FileManifest::from_bytes(&over.to_bytes()),
        Err(FileError::Malformed(_))
    ));
    let mut too_long = bytes;
    too_long.resize(MAX_MANIFEST_LEN + 1, 0);
    assert!(matches!(
        FileManifest::from_bytes(&too_long),
        Err(FileError::Malformed(codec::CodecError::TooLarge { .. }))
    ));
}

#[test]
fn hash_list_must_be_whole_hashes() {
    let m = shaped(1, CHUNK, 1);
    let mut bytes = m.to_bytes();
    // The hash list is `58 20 <32 bytes>`: claim 31 bytes instead and drop one.
    let pos = bytes
        .windows(34)
        .position(|w| w[0] == 0x58 && w[1] == 0x20 && w[2..] == [7; 32])
        .unwrap();
    bytes[pos + 1] = 31;
    bytes.remove(pos + 2);
    assert!(matches!(
        FileManifest::from_bytes(&bytes),
        Err(FileError::Malformed(_))
    ));
}

#[test]
fn file_id_text_round_trip() {
    let id = FileId::random(&mut rng(30));
    let s = id.to_string();
    assert_eq!(s.len(), 32);
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(s.parse::<FileId>(), Ok(id));
    assert_eq!(s.to_uppercase().parse::<FileId>(), Ok(id));
    assert_eq!(format!("{id:?}"), format!("FileId({s})"));
    let fixed = FileId::from_bytes([0xab; 16]);
    assert_eq!(fixed.to_string(), "ab".repeat(16));
    for bad in [
        "",
        "ab",
        &"g".repeat(32),
        &"a".repeat(33),
        &"é".repeat(16),
        " 0".repeat(16).as_str(),
    ] {
        assert!(bad.parse::<FileId>().is_err(), "{bad:?}");
    }
    // Serde: a 16-byte CBOR byte string.
    let cbor = codec::encode(&fixed).unwrap();
    assert_eq!(cbor[0], 0x50);
    assert_eq!(codec::decode::<FileId>(&cbor, 64).unwrap(), fixed);
    assert!(
        codec::decode::<FileId>(&codec::encode(&ByteBuf::from(vec![1; 15])).unwrap(), 64).is_err()
    );
}

#[test]
fn secrets_are_redacted() {
    let key = FileKey::from_bytes([0x42; 32]);
    assert_eq!(format!("{key:?}"), "FileKey(..)");
    let sent = send(&plaintext(10, 13), 22);
    let dbg = format!("{:?}", sent.manifest);
    assert!(dbg.contains("chunks: 1"));
    let b = ManifestBuilder::new(
        &mut rng(1),
        bob().public(),
        FileId::from_bytes([1; 16]),
        1,
        CHUNK,
        "a",
        "b",
    )
    .unwrap();
    assert!(!format!("{b:?}").contains("key"));
}

fn small_manifest_bytes() -> &'static [u8] {
    use std::sync::OnceLock;
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| send(&plaintext(5000, 14), 23).manifest.to_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = FileManifest::from_bytes(&bytes);
    }

    #[test]
    fn edited_manifests_never_panic_and_never_verify(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let original = small_manifest_bytes();
        let mut bytes = original.to_vec();
        for (pos, value) in edits {
            let pos = pos % bytes.len();
            bytes[pos] = value;
        }
        if let Ok(m) = FileManifest::from_bytes(&bytes) {
            let verified = m.verify(alice().public());
            prop_assert!(verified.is_err() || bytes == original);
            for index in 0..3 {
                let _ = verify_chunk(&m, index, &[0; 4112]);
            }
        }
    }

    #[test]
    fn arbitrary_small_files_round_trip(
        data in proptest::collection::vec(any::<u8>(), 0..(3 * CHUNK as usize + 100)),
        seed in any::<u64>(),
    ) {
        let sent = send(&data, seed);
        let got = receive(&sent.manifest.to_bytes(), alice().public(), bob(), &sent.chunks);
        prop_assert_eq!(got, data);
    }
}
