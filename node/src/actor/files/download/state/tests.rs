use std::path::PathBuf;
use std::time::{Duration, Instant};

use encrypto_crypto::file::FileId;
use encrypto_crypto::{MessageId, PeerId};

use super::*;
use crate::store::TransferState;

/// A download of a file offered by `sender`, also served by `relays`, no chunk held.
fn download(sender: PeerId, relays: &[PeerId], chunks: usize) -> Download {
    let transfer = Transfer {
        file_id: FileId::random(&mut rand::rng()),
        peer: sender,
        role: TransferRole::Receive,
        name: "a.bin".into(),
        size: chunks as u64 * 10,
        state: TransferState::Transferring,
        path: None,
        out: None,
        sha256: None,
        key: None,
        message_id: MessageId([1; 16]),
        created_ms: 0,
        error: None,
        sources: relays
            .iter()
            .map(|r| (*r, vec!["/ip4/127.0.0.1/tcp/1".to_owned()]))
            .collect(),
        relays: Vec::new(),
        manifest_hash: [0; 32],
        offer: None,
    };
    let mut d = Download::new(transfer, PathBuf::from("/nowhere/.part"));
    d.load_held(chunks, &[], |_| 10);
    d
}

#[test]
fn the_sender_comes_first_and_a_relay_once() {
    let sender = PeerId::random();
    let relay = PeerId::random();
    let d = download(sender, &[relay, sender, relay], 4);
    let peers: Vec<PeerId> = d.sources.iter().map(|s| s.peer).collect();
    assert_eq!(peers, vec![sender, relay]);
    assert!(d.sources[0].addrs.is_empty());
    assert_eq!(d.sources[1].addrs.len(), 1);
}

#[test]
fn a_failed_source_backs_off_doubling_up_to_the_cap() {
    let mut s = Source::new(PeerId::random(), Vec::new());
    let now = Instant::now();
    assert!(s.usable(now));
    s.failed(now);
    assert!(!s.usable(now));
    assert!(s.usable(now + SOURCE_BACKOFF));
    for _ in 0..20 {
        s.failed(now);
    }
    assert_eq!(s.backoff, SOURCE_BACKOFF_MAX);
    assert!(s.usable(now + SOURCE_BACKOFF_MAX));
    s.served();
    assert_eq!(s.backoff, SOURCE_BACKOFF);
}

#[test]
fn the_window_caps_requests_per_download_and_per_source() {
    let sender = PeerId::random();
    let relay = PeerId::random();
    let mut one = download(sender, &[], 100);
    let now = Instant::now();
    let asked = one.next_requests(100, now);
    assert_eq!(asked.len(), PER_SOURCE);
    let indices: Vec<u64> = asked.iter().map(|r| r.1).collect();
    assert_eq!(indices, (0..PER_SOURCE as u64).collect::<Vec<_>>());
    assert!(one.next_requests(100, now).is_empty());

    let mut two = download(sender, &[relay], 100);
    let now = Instant::now();
    let asked = two.next_requests(100, now);
    assert_eq!(asked.len(), WINDOW);
    let from_relay = asked.iter().filter(|r| r.0 == relay).count();
    assert_eq!(from_relay, WINDOW / 2);
    assert!(two.next_requests(100, now).is_empty());
}

#[test]
fn the_window_skips_chunks_held_and_in_flight() {
    let sender = PeerId::random();
    let mut d = download(sender, &[], 6);
    let now = Instant::now();
    d.load_held(6, &[0, 2], |_| 10);
    assert_eq!((d.held, d.bytes_done), (2, 20));
    let asked: Vec<u64> = d.next_requests(6, now).iter().map(|r| r.1).collect();
    assert_eq!(asked, vec![1, 3, 4, 5]);
    assert_eq!(d.cursor, 1);
    assert!(d.next_requests(6, now).is_empty());
    d.release(4, sender);
    let again: Vec<u64> = d.next_requests(6, now).iter().map(|r| r.1).collect();
    assert_eq!(again, vec![4]);
}

#[test]
fn a_bad_chunk_is_asked_of_another_source_until_none_is_left() {
    let sender = PeerId::random();
    let relay = PeerId::random();
    let mut d = download(sender, &[relay], 1);
    let now = Instant::now();
    let asked = d.next_requests(1, now);
    assert_eq!(asked.len(), 1);
    let first = asked[0].0;
    assert!(!d.chunk_bad(0, first));
    let asked = d.next_requests(1, now);
    assert_eq!(asked.len(), 1);
    assert_ne!(asked[0].0, first);
    assert!(d.chunk_bad(0, asked[0].0));
    assert!(d.next_requests(1, now).is_empty());
}

#[test]
fn a_refusal_rules_the_source_out() {
    let sender = PeerId::random();
    let mut d = download(sender, &[], 2);
    let now = Instant::now();
    assert_eq!(d.next_requests(2, now).len(), 2);
    d.chunk_unavailable(0, sender, false, now);
    assert!(d.sources[0].unavailable);
    assert!(d.next_requests(2, now).is_empty());
    assert_eq!(d.next_requests(2, now + Duration::from_secs(1)).len(), 1);
    d.chunk_unavailable(0, sender, true, now);
    assert_eq!(d.sources[0].bad, MAX_BAD);
    assert!(
        d.next_requests(2, now + Duration::from_secs(120))
            .is_empty()
    );
}

#[test]
fn held_bytes_count_each_chunk_once_and_go_back_on_repair() {
    let sender = PeerId::random();
    let mut d = download(sender, &[], 3);
    let now = Instant::now();
    assert_eq!(d.next_requests(3, now).len(), 3);
    assert!(!d.chunk_stored(0, 10, sender));
    assert!(!d.chunk_stored(0, 10, sender));
    assert!(!d.chunk_stored(2, 4, sender));
    assert_eq!((d.held, d.bytes_done), (2, 14));
    assert_eq!(d.unmarked, vec![0, 2]);
    assert!(d.in_flight.contains_key(&1));
    assert!(!d.in_flight.contains_key(&0));
    d.finishing = true;
    d.forget(&[2, 1], |i| if i == 2 { 4 } else { 10 });
    assert_eq!((d.held, d.bytes_done, d.cursor), (1, 10, 0));
    assert!(!d.finishing);
}

#[test]
fn marks_wait_for_a_batch_or_an_idle_download() {
    let sender = PeerId::random();
    let mut d = download(sender, &[], 40);
    let now = Instant::now();
    assert!(!d.marks_due(true));
    d.next_requests(40, now);
    d.chunk_stored(0, 10, sender);
    assert!(d.marks_due(true));
    assert!(!d.marks_due(false));
    let mut full = false;
    for index in 1..MARK_BATCH as u64 {
        full = d.chunk_stored(index, 10, sender);
    }
    assert!(full);
    assert!(d.marks_due(false));
}

#[test]
fn the_manifest_is_asked_of_one_source_at_a_time() {
    let sender = PeerId::random();
    let relay = PeerId::random();
    let mut d = download(sender, &[relay], 0);
    let now = Instant::now();
    let (first, _) = d.ask_manifest(now).expect("a source is usable");
    assert_eq!(first, sender);
    assert!(d.ask_manifest(now).is_none());
    d.manifest_failed(first, now);
    let (next, addrs) = d.ask_manifest(now).expect("the relay is usable");
    assert_eq!(next, relay);
    assert_eq!(addrs.len(), 1);
}
