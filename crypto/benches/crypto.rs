//! Criterion benchmarks for the crypto core. Run: `cargo bench -p encrypto-crypto`.
//!
//! Each group has its own baseline measured in the same run, so the ratios the issue sets as
//! targets can be read off one report:
//! - `message/aes_open_200B` against `baseline/ed25519_verify+aesgcm_open_200B`;
//! - `file/*_256KiB` against `baseline/aesgcm_seal_256KiB`.
#![allow(missing_docs)]

use std::hint::black_box;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use encrypto_crypto::envelope::{self, InboundSessions, OpenContext, OpenPolicy, OutboundSession};
use encrypto_crypto::file::{self, FileId, ManifestBuilder};
use encrypto_crypto::keystore::{self, KdfParams, KeystoreContents};
use encrypto_crypto::{Identity, MessageId, RsaBits, StorageKey};
use rand::SeedableRng;
use rand::rngs::StdRng;

const NOW: u64 = 1_767_225_600_000;
const BODY: [u8; 200] = [b'x'; 200];

fn never(_: &[u8; 32], _: &MessageId) -> bool {
    false
}

struct Pair {
    alice: Identity,
    bob: Identity,
}

fn pair() -> Pair {
    // The default key size, as real users have.
    let mut rng = StdRng::seed_from_u64(1);
    Pair {
        alice: Identity::generate(&mut rng, RsaBits::B3072).expect("keygen"),
        bob: Identity::generate(&mut rng, RsaBits::B3072).expect("keygen"),
    }
}

fn baselines(c: &mut Criterion) {
    let mut g = c.benchmark_group("baseline");
    let mut rng = StdRng::seed_from_u64(2);
    let key = SigningKey::generate(&mut rng);
    let vk = key.verifying_key();
    // About the size of an envelope's signed bytes for a 200-byte body.
    let signed = [3u8; 340];
    let sig = key.sign(&signed);
    let cipher = Aes256Gcm::new(&[1u8; 32].into());
    let nonce = [0u8; 12].into();
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &BODY,
                aad: &[9u8; 100],
            },
        )
        .expect("seal");
    g.bench_function("ed25519_verify+aesgcm_open_200B", |b| {
        b.iter(|| {
            vk.verify(black_box(&signed), &sig).expect("verify");
            let c = Aes256Gcm::new(&[1u8; 32].into());
            c.decrypt(
                &nonce,
                Payload {
                    msg: black_box(&ct),
                    aad: &[9u8; 100],
                },
            )
            .expect("open")
        })
    });
    let chunk = vec![7u8; 256 * 1024];
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("aesgcm_seal_256KiB", |b| {
        b.iter(|| {
            cipher.encrypt(
                &nonce,
                Payload {
                    msg: black_box(&chunk),
                    aad: b"",
                },
            )
        })
    });
    g.finish();
}

fn messages(c: &mut Criterion) {
    let p = pair();
    let mut rng = StdRng::seed_from_u64(3);
    let ctx = OpenContext {
        me: &p.bob,
        sender: p.alice.public(),
        now_ms: NOW,
        policy: OpenPolicy::default(),
        seen: &never,
    };
    let mut g = c.benchmark_group("message");

    let mut session = OutboundSession::new(&mut rng, p.bob.public(), NOW).expect("session");
    session.mark_acknowledged();
    g.bench_function("aes_seal_200B", |b| {
        b.iter(|| {
            let id = MessageId::random(&mut rng);
            envelope::seal_aes(
                &p.alice,
                p.bob.public(),
                &mut session,
                id,
                NOW,
                &BODY,
                &mut rng,
            )
            .expect("seal")
        })
    });

    // Open with the session key already cached (the steady state of a chat).
    let mut fresh = OutboundSession::new(&mut rng, p.bob.public(), NOW).expect("session");
    let first = envelope::seal_aes(
        &p.alice,
        p.bob.public(),
        &mut fresh,
        MessageId::random(&mut rng),
        NOW,
        &BODY,
        &mut rng,
    )
    .expect("seal");
    let mut inbound = InboundSessions::default();
    envelope::open(&first, &ctx, &mut inbound, &mut rng).expect("open");
    fresh.mark_acknowledged();
    let env = envelope::seal_aes(
        &p.alice,
        p.bob.public(),
        &mut fresh,
        MessageId::random(&mut rng),
        NOW,
        &BODY,
        &mut rng,
    )
    .expect("seal");
    g.bench_function("aes_open_200B", |b| {
        b.iter(|| envelope::open(black_box(&env), &ctx, &mut inbound, &mut rng).expect("open"))
    });

    g.bench_function("rsa_seal_200B", |b| {
        b.iter(|| {
            let id = MessageId::random(&mut rng);
            envelope::seal_rsa(&p.alice, p.bob.public(), id, NOW, &BODY, &mut rng).expect("seal")
        })
    });
    let env = envelope::seal_rsa(
        &p.alice,
        p.bob.public(),
        MessageId::random(&mut rng),
        NOW,
        &BODY,
        &mut rng,
    )
    .expect("seal");
    g.bench_function("rsa_open_200B", |b| {
        b.iter(|| {
            envelope::open(
                black_box(&env),
                &ctx,
                &mut InboundSessions::default(),
                &mut rng,
            )
            .expect("open")
        })
    });

    // Session set-up: the sender wraps a new key, the receiver unwraps it on first sight.
    g.bench_function("session_setup", |b| {
        b.iter_batched(
            || StdRng::seed_from_u64(4),
            |mut r| {
                let mut s = OutboundSession::new(&mut r, p.bob.public(), NOW).expect("session");
                let env = envelope::seal_aes(
                    &p.alice,
                    p.bob.public(),
                    &mut s,
                    MessageId::random(&mut r),
                    NOW,
                    &BODY,
                    &mut r,
                )
                .expect("seal");
                envelope::open(&env, &ctx, &mut InboundSessions::default(), &mut r).expect("open")
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn files(c: &mut Criterion) {
    const CHUNK: usize = 256 * 1024;
    let p = pair();
    let mut rng = StdRng::seed_from_u64(5);
    let plaintext = vec![0x5au8; CHUNK];
    let file_id = FileId::random(&mut rng);
    let mut builder = ManifestBuilder::new(
        &mut rng,
        p.bob.public(),
        file_id,
        CHUNK as u64,
        CHUNK as u32,
        "bench.bin",
        "application/octet-stream",
    )
    .expect("builder");
    let sealed = builder.seal_next_chunk(&plaintext).expect("seal");
    let (manifest, key) = builder.finish(&p.alice, NOW, &mut rng).expect("finish");

    let mut g = c.benchmark_group("file");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    // What the sender does per chunk: seal it and hash the sealed bytes for the manifest.
    g.bench_function("seal+hash_256KiB", |b| {
        b.iter(|| {
            let s = file::seal_chunk(&key, &manifest.file_id, 0, 1, black_box(&plaintext));
            black_box(blake3::hash(&s))
        })
    });
    // What a relay does per chunk: check it against the manifest without the key.
    g.bench_function("verify_256KiB", |b| {
        b.iter(|| file::verify_chunk(&manifest, 0, black_box(&sealed)).expect("verify"))
    });
    // What the recipient does per chunk: verify the hash, then decrypt.
    g.bench_function("open+verify_256KiB", |b| {
        b.iter(|| file::open_chunk(&key, &manifest, 0, black_box(&sealed)).expect("open"))
    });
    g.finish();
}

fn keystore_unlock(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(6);
    let contents = KeystoreContents {
        identity: Identity::generate(&mut rng, RsaBits::B3072).expect("keygen"),
        name: "Bench".into(),
        created_ms: NOW,
        storage_key: StorageKey::generate(&mut rng),
    };
    let sealed = keystore::seal(
        &contents,
        b"a long passphrase",
        KdfParams::RECOMMENDED,
        &mut rng,
    )
    .expect("seal");
    let mut g = c.benchmark_group("keystore");
    g.sample_size(10);
    g.bench_function("unlock_recommended", |b| {
        b.iter(|| keystore::open(black_box(&sealed), b"a long passphrase").expect("open"))
    });
    g.finish();
}

criterion_group!(benches, baselines, messages, files, keystore_unlock);
criterion_main!(benches);
