//! Known-answer tests for file manifests and sealed chunks. `tests/vectors/file.json` holds a
//! three-chunk file Alice sent Bob (chunk size 4096): its plaintext, file key, manifest CBOR and
//! sealed chunks. If one of these tests fails, the manifest format, the chunk nonce or AAD, or the
//! metadata sealing changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{alice, bob, carol, hex_field, read_vector, rng, write_vector};
use encrypto_crypto::file::{
    FileId, FileKey, FileManifest, ManifestBuilder, open_chunk, seal_chunk, verify_chunk,
};

const NAME: &str = "field-notes.txt";
const MEDIA_TYPE: &str = "text/plain; charset=utf-8";
const CREATED: u64 = 1_767_225_600_000;
const CHUNK_SIZE: u32 = 4096;

fn chunks(v: &serde_json::Value) -> Vec<Vec<u8>> {
    v["chunks"]
        .as_array()
        .expect("chunks array")
        .iter()
        .map(|c| hex::decode(c.as_str().expect("hex string")).expect("hex"))
        .collect()
}

fn manifest(v: &serde_json::Value) -> FileManifest {
    FileManifest::from_bytes(&hex_field(v, "manifest")).unwrap()
}

fn key(v: &serde_json::Value) -> FileKey {
    FileKey::from_bytes(hex_field(v, "file_key").try_into().unwrap())
}

#[test]
fn manifest_vector_decodes_and_verifies() {
    let v = read_vector("file.json");
    let m = manifest(&v);
    m.verify(alice().public()).unwrap();
    let plaintext = hex_field(&v, "plaintext");
    assert_eq!(m.file_id.to_string(), v["file_id"]);
    assert_eq!(m.size, plaintext.len() as u64);
    assert_eq!(m.chunk_size, CHUNK_SIZE);
    assert_eq!(m.created, CREATED);
    assert_eq!(m.chunk_count(), 3);
    assert_eq!(m.sender, alice().public().ed25519_bytes());
    assert_eq!(m.recipient, bob().public().ed25519_bytes());
    // A relay (Carol) checks every chunk without the key.
    for (i, c) in chunks(&v).iter().enumerate() {
        verify_chunk(&m, i as u64, c).unwrap();
    }
    assert!(m.unwrap_key(carol(), &mut rng(1)).is_err());
}

#[test]
fn bob_unwraps_and_opens_the_recorded_plaintext() {
    let v = read_vector("file.json");
    let m = manifest(&v);
    m.verify(alice().public()).unwrap();
    let key = m.unwrap_key(bob(), &mut rng(2)).unwrap();
    assert_eq!(key.as_bytes(), self::key(&v).as_bytes());
    let meta = m.open_meta(&key).unwrap();
    assert_eq!(meta.name, v["name"]);
    assert_eq!(meta.media_type, v["media_type"]);
    assert_eq!(meta.sha256.to_vec(), hex_field(&v, "sha256"));
    let mut out = Vec::new();
    for (i, c) in chunks(&v).iter().enumerate() {
        out.extend_from_slice(&open_chunk(&key, &m, i as u64, c).unwrap());
    }
    assert_eq!(out, hex_field(&v, "plaintext"));
}

#[test]
fn manifest_reencodes_to_the_committed_bytes() {
    let v = read_vector("file.json");
    assert_eq!(manifest(&v).to_bytes(), hex_field(&v, "manifest"));
}

#[test]
fn resealing_reproduces_the_committed_chunks() {
    let v = read_vector("file.json");
    let m = manifest(&v);
    let key = key(&v);
    let id: FileId = v["file_id"].as_str().unwrap().parse().unwrap();
    let plaintext = hex_field(&v, "plaintext");
    let committed = chunks(&v);
    for (i, part) in plaintext.chunks(CHUNK_SIZE as usize).enumerate() {
        let index = i as u64;
        assert_eq!(seal_chunk(&key, &id, index, 3, part), committed[i]);
        assert_eq!(m.reseal_chunk(&key, index, part).unwrap(), committed[i]);
    }
}

/// 10,000 bytes of text: two full chunks of 4096 and a last one of 1808.
fn sample_plaintext() -> Vec<u8> {
    let mut text = String::new();
    let mut line = 0;
    while text.len() < 10_000 {
        text.push_str(&format!(
            "{line:04}: the quick brown fox jumps over the lazy dog, sealed chunk by chunk.\n"
        ));
        line += 1;
    }
    text.truncate(10_000);
    text.into_bytes()
}

#[test]
#[ignore = "writes the vector file; run by hand after an intended format change"]
fn regenerate_file_vector() {
    let plaintext = sample_plaintext();
    let mut r = rng(200);
    let id = FileId::random(&mut r);
    let mut b = ManifestBuilder::new(
        &mut r,
        bob().public(),
        id,
        plaintext.len() as u64,
        CHUNK_SIZE,
        NAME,
        MEDIA_TYPE,
    )
    .unwrap();
    let sealed: Vec<String> = plaintext
        .chunks(CHUNK_SIZE as usize)
        .map(|c| hex::encode(b.seal_next_chunk(c).unwrap()))
        .collect();
    let (m, key) = b.finish(alice(), CREATED, &mut r).unwrap();
    let sha256 = m.open_meta(&key).unwrap().sha256;
    write_vector(
        "file.json",
        &serde_json::json!({
            "sender": "alice",
            "recipient": "bob",
            "name": NAME,
            "media_type": MEDIA_TYPE,
            "created": CREATED,
            "chunk_size": CHUNK_SIZE,
            "file_id": id.to_string(),
            "file_key": hex::encode(key.as_bytes()),
            "sha256": hex::encode(sha256),
            "plaintext": hex::encode(&plaintext),
            "manifest": hex::encode(m.to_bytes()),
            "chunks": sealed,
        }),
    );
}
