//! Criterion benchmarks of the store writes a message costs. Run: `cargo bench -p
//! encrypto-node --bench store`.
//!
//! Each figure is one group commit of [`GROUP`] messages as the node writes it (one sled
//! transaction over two trees, no flush; the flush is its own figure), reported per message:
//! the sender's send (one history page and one outbox page for the group), its delivery
//! record (the outbox page removed, the history page rewritten with the messages marked
//! delivered and the envelopes the peer holds) and the receiver's receipt (one history page,
//! and a seen id for each message). 200-byte texts and 423-byte envelopes, the sizes of a
//! real `aes` message, 1 ms apart (a group fits one page). The store grows over the run, as a
//! chat does; the number of messages it ends with is printed.
//!
//! The same writes for a group of one message (`store_one/*`), as the node makes them when
//! messages come one at a time: the cost of each write is then mostly sled's transaction
//! itself, and it lies on the path of an unpipelined message.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use encrypto_crypto::{Cipher, MessageId, PeerId, StorageKey};
use encrypto_node::Store;
use encrypto_node::store::{
    Acknowledged, Body, Direction, OutboxItem, OutboxKind, Status, StoredMessage,
};

/// Messages per group commit (what one actor turn gathers under load).
const GROUP: usize = 64;
const TEXT: [u8; 200] = [b'x'; 200];
const ENVELOPE_LEN: usize = 423;

fn peer() -> PeerId {
    libp2p::identity::Keypair::ed25519_from_bytes([7; 32])
        .expect("32 bytes are an ed25519 secret key")
        .public()
        .to_peer_id()
}

/// A run of message numbers, for ids and timestamps that never repeat.
struct Numbers(u64);

impl Numbers {
    fn message(&mut self, peer: PeerId, direction: Direction) -> StoredMessage {
        self.0 += 1;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.0.to_be_bytes());
        StoredMessage {
            id: MessageId(id),
            peer,
            direction,
            timestamp_ms: 1_767_225_600_000 + self.0,
            cipher: Cipher::Aes,
            body: Body::Text(String::from_utf8_lossy(&TEXT).into_owned()),
            status: match direction {
                Direction::In => Status::Received,
                Direction::Out => Status::Queued,
            },
            envelope: (direction == Direction::In).then(|| vec![5; ENVELOPE_LEN]),
        }
    }

    /// A group of `n` received messages.
    fn incoming(&mut self, peer: PeerId, n: usize) -> Vec<StoredMessage> {
        (0..n).map(|_| self.message(peer, Direction::In)).collect()
    }

    /// A group of `n` sent messages with their outbox items.
    fn outgoing(&mut self, peer: PeerId, n: usize) -> Vec<(StoredMessage, OutboxItem)> {
        (0..n)
            .map(|_| {
                let m = self.message(peer, Direction::Out);
                let item = OutboxItem {
                    id: m.id,
                    peer,
                    created_ms: m.timestamp_ms,
                    cipher: Cipher::Aes,
                    kind: OutboxKind::Text(String::from_utf8_lossy(&TEXT).into_owned()),
                    attempts: 0,
                };
                (m, item)
            })
            .collect()
    }
}

fn store_writes(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(dir.path(), StorageKey::from_bytes([1; 32])).expect("store");
    let mut numbers = Numbers(0);
    writes(c, "store", GROUP, &store, &mut numbers);
    writes(c, "store_one", 1, &store, &mut numbers);
    eprintln!("store: {} messages written in all", numbers.0);
}

/// The four figures for groups of `n` messages, as benchmark group `name`.
fn writes(c: &mut Criterion, name: &str, n: usize, store: &Store, numbers: &mut Numbers) {
    let peer = peer();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(n as u64));
    // Every iteration adds a group for good: shorter runs keep the store to a chat's size.
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));

    g.bench_function(format!("send_x{n}"), |b| {
        b.iter_batched(
            || numbers.outgoing(peer, n),
            |pairs| store.write_outgoing_many(black_box(&pairs)).expect("write"),
            BatchSize::PerIteration,
        );
    });
    g.bench_function(format!("delivered_x{n}"), |b| {
        b.iter_batched(
            || {
                let pairs = numbers.outgoing(peer, n);
                store.write_outgoing_many(&pairs).expect("write");
                pairs
                    .iter()
                    .map(|(m, _)| Acknowledged {
                        id: m.id,
                        created_ms: m.timestamp_ms,
                        envelope: Some(vec![5; ENVELOPE_LEN]),
                    })
                    .collect::<Vec<_>>()
            },
            |acked| {
                let changed = store.write_completed_many(&peer, black_box(&acked));
                assert_eq!(changed.expect("write"), n);
            },
            BatchSize::PerIteration,
        );
    });
    g.bench_function(format!("receive_x{n}"), |b| {
        b.iter_batched(
            || numbers.incoming(peer, n),
            |messages| {
                let fresh = store
                    .write_incoming_many(black_box(&messages))
                    .expect("write");
                assert!(fresh.iter().all(|new| *new));
            },
            BatchSize::PerIteration,
        );
    });
    g.bench_function(format!("receive_x{n}+flush"), |b| {
        b.iter_batched(
            || numbers.incoming(peer, n),
            |messages| {
                store
                    .write_incoming_many(black_box(&messages))
                    .expect("write");
                store.flush().expect("flush");
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

criterion_group!(benches, store_writes);
criterion_main!(benches);
