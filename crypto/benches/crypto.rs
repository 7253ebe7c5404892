//! Criterion benchmarks for the crypto core. Run: `cargo bench -p encrypto-crypto`.
//!
//! Each group measures its own reference next to the real thing, so the targets can be read off
//! one report:
//! - `message/aes_open_200B` against `message/floor_ed25519_verify+aesgcm_open_200B`
//!   (target: at most 1.3x);
//! - `file/seal+hash_256KiB` and `file/open+verify_256KiB` against
//!   `file/raw_aesgcm_seal_256KiB` (target: at least 70% of its throughput), and the two-thread
//!   sender pipeline against the same.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::mpsc;

use aes_gcm::aead::{Aead, AeadInOut, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};
use encrypto_crypto::envelope::{self, InboundSessions, OpenContext, OpenPolicy, OutboundSession};
use encrypto_crypto::file::{self, FileId, FileKey, ManifestBuilder};
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

/// One Ed25519 verify plus one AES-256-GCM open of a 200-byte body: the floor for opening an
/// `aes` message, measured next to it.
fn message_floor(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let mut rng = StdRng::seed_from_u64(2);
    let key = SigningKey::generate(&mut rng);
    let vk = key.verifying_key();
    // About the size of an envelope's signed bytes for a 200-byte body.
    let signed = [3u8; 340];
    let sig = key.sign(&signed);
    let cipher = Aes256Gcm::new(&[1u8; 32].into());
    let nonce = [0u8; 12].into();
    let aad = [9u8; 100];
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &BODY,
                aad: &aad,
            },
        )
        .expect("seal");
    g.bench_function("floor_ed25519_verify+aesgcm_open_200B", |b| {
        b.iter(|| {
            vk.verify_strict(black_box(&signed), &sig).expect("verify");
            let c = Aes256Gcm::new(&[1u8; 32].into());
            c.decrypt(
                &nonce,
                Payload {
                    msg: black_box(&ct),
                    aad: &aad,
                },
            )
            .expect("open")
        })
    });
}

/// Raw AES-256-GCM over one chunk, in place in a reused buffer (a copy in, no allocation: the
/// cipher's own speed): the ceiling for the file pipeline, measured next to it.
fn raw_chunk_seal(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let plaintext = vec![0x5au8; 256 * 1024];
    let mut chunk = vec![0u8; 256 * 1024];
    let nonce = [0u8; 12].into();
    g.bench_function("raw_aesgcm_seal_256KiB", |b| {
        b.iter(|| {
            chunk.copy_from_slice(black_box(&plaintext));
            let c = Aes256Gcm::new(&[1u8; 32].into());
            c.encrypt_inout_detached(&nonce, b"", chunk.as_mut_slice().into())
                .expect("seal")
        })
    });
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

    // 16 envelopes each signed alone (as `/encrypto/msg/2` sent them): the signatures checked together
    // (`verify_many`, on a thread of its own in the node), then each opened.
    let batch: Vec<_> = (0..16)
        .map(|_| {
            let id = MessageId::random(&mut rng);
            envelope::seal_aes(
                &p.alice,
                p.bob.public(),
                &mut fresh,
                id,
                NOW,
                &BODY,
                &mut rng,
            )
            .expect("seal")
        })
        .collect();
    g.throughput(Throughput::Elements(16));
    g.bench_function("aes_open_200B_x16_one_by_one", |b| {
        b.iter(|| {
            for env in &batch {
                envelope::open(black_box(env), &ctx, &mut inbound, &mut rng).expect("open");
            }
        })
    });
    g.bench_function("aes_open_200B_x16_batch_verified", |b| {
        b.iter(|| {
            for v in envelope::verify_many(black_box(batch.clone()), p.alice.public()) {
                let v = v.expect("verified");
                envelope::open_verified(&v, &ctx, &mut inbound, &mut rng).expect("open");
            }
        })
    });

    // 64 envelopes as the node sends one request: sealed, then signed together with one
    // signature (`sign_batch`); and as the receiver checks and opens them.
    g.throughput(Throughput::Elements(64));
    let seal_64 = |session: &mut OutboundSession, rng: &mut StdRng| {
        let unsigned = (0..64)
            .map(|_| {
                let id = MessageId::random(rng);
                envelope::seal_aes_unsigned(&p.alice, p.bob.public(), session, id, NOW, &BODY, rng)
                    .expect("seal")
            })
            .collect();
        envelope::sign_batch(&p.alice, unsigned)
    };
    g.bench_function("aes_seal_200B_x64_signed_together", |b| {
        b.iter(|| seal_64(&mut session, &mut rng))
    });
    let together = seal_64(&mut fresh, &mut rng);
    g.bench_function("aes_open_200B_x64_signed_together", |b| {
        b.iter(|| {
            for v in envelope::verify_many(black_box(together.clone()), p.alice.public()) {
                let v = v.expect("verified");
                envelope::open_verified(&v, &ctx, &mut inbound, &mut rng).expect("open");
            }
        })
    });
    g.throughput(Throughput::Elements(1));

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

    // Measured after the real thing (see `files` for why order matters).
    message_floor(&mut g);

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
    // What the sender does per chunk: seal it and hash the sealed bytes for the manifest, in a
    // buffer it reuses from chunk to chunk.
    let mut buf = Vec::with_capacity(CHUNK + file::SEALED_CHUNK_OVERHEAD);
    g.bench_function("seal+hash_256KiB", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(black_box(&plaintext));
            file::seal_chunk_in_place(&key, &manifest.file_id, 0, 1, &mut buf);
            file::sealed_chunk_hash(&buf)
        })
    });
    // What a relay does per chunk: check it against the manifest without the key.
    g.bench_function("verify_256KiB", |b| {
        b.iter(|| file::verify_chunk(&manifest, 0, black_box(&sealed)).expect("verify"))
    });
    // What the recipient does per chunk: check index and length, then AES-GCM open (the tag is
    // the verification; the public hash is for peers without the key).
    g.bench_function("open+verify_256KiB", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(black_box(&sealed));
            file::open_chunk_in_place(&key, &manifest, 0, &mut buf).expect("open")
        })
    });
    // Everything the recipient must do per byte beyond what a raw noise stream does: the
    // public hash against the manifest (BLAKE3), the AES-GCM open, and the whole-file SHA-256
    // that decides whether the file goes into place. The file benchmark's ceiling.
    let mut whole = <sha2::Sha256 as sha2::Digest>::new();
    g.bench_function("recipient_verify+open+sha256_256KiB", |b| {
        b.iter(|| {
            file::verify_chunk(&manifest, 0, black_box(&sealed)).expect("verify");
            buf.clear();
            buf.extend_from_slice(black_box(&sealed));
            file::open_chunk_in_place(&key, &manifest, 0, &mut buf).expect("open");
            sha2::Digest::update(&mut whole, &buf);
        })
    });
    // The allocating conveniences, for comparison.
    g.bench_function("open_chunk_alloc_256KiB", |b| {
        b.iter(|| file::open_chunk(&key, &manifest, 0, black_box(&sealed)).expect("open"))
    });
    // Measured last: the first benchmark of a group runs while the CPU is still ramping up and
    // reads up to 40% slow on these machines, which would flatter everything compared to it.
    raw_chunk_seal(&mut g);

    // The sender's pipeline as the node runs it on two cores: one thread seals chunk i+1 while
    // the other hashes chunk i, buffers recycled between them.
    const FILE: usize = 64 * CHUNK;
    g.throughput(Throughput::Bytes(FILE as u64));
    g.bench_function("sender_pipeline_2threads_16MiB", |b| {
        b.iter(|| sender_pipeline(&key, &manifest.file_id, &plaintext, FILE / CHUNK))
    });
    g.finish();
}

/// Seals `chunks` copies of `chunk` on a second thread while this one hashes them.
fn sender_pipeline(key: &FileKey, file_id: &FileId, chunk: &[u8], chunks: usize) -> [u8; 32] {
    let (to_hash, sealed) = mpsc::sync_channel::<Vec<u8>>(2);
    let (to_seal, free) = mpsc::sync_channel::<Vec<u8>>(3);
    for _ in 0..3 {
        to_seal
            .send(Vec::with_capacity(
                chunk.len() + file::SEALED_CHUNK_OVERHEAD,
            ))
            .expect("buffer");
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            for i in 0..chunks {
                let mut buf = free.recv().expect("buffer back");
                buf.clear();
                buf.extend_from_slice(chunk);
                file::seal_chunk_in_place(key, file_id, i as u64, chunks as u64, &mut buf);
                to_hash.send(buf).expect("hasher alive");
            }
        });
        let mut last = [0u8; 32];
        for _ in 0..chunks {
            let buf = sealed.recv().expect("sealer alive");
            last = file::sealed_chunk_hash(&buf);
            // The sealer may already have finished; a closed channel is fine here.
            let _ = to_seal.send(buf);
        }
        last
    })
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

criterion_group!(benches, messages, files, keystore_unlock);
criterion_main!(benches);
