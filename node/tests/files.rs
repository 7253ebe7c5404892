//! File transfers between real nodes on loopback: real libp2p connections, real sled stores,
//! real files on disk. No mock network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};

use encrypto_crypto::PeerId;
use encrypto_crypto::file::FileId;
use encrypto_node::view::{Body, TransferRole, TransferState};
use encrypto_node::{FileTransfer, NodeConfig, NodeEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use support::{Running, Spec, connect, wait_for};
use tempfile::TempDir;

const LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

/// A file of `len` pseudo-random bytes (seeded, so a failure can be reproduced).
fn random_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

/// Waits for the transfer of `file_id` to complete in `role`, failing on a failure event.
async fn completed(r: &mut Running, file_id: FileId, role: TransferRole) -> Option<PathBuf> {
    wait_for_long(r, |e| match e {
        NodeEvent::FileComplete {
            file_id: f,
            role: ro,
            path,
            ..
        } if *f == file_id && *ro == role => Some(path.clone()),
        NodeEvent::FileFailed {
            file_id: f, reason, ..
        } if *f == file_id => panic!("transfer failed: {reason}"),
        _ => None,
    })
    .await
}

/// [`wait_for`] with room for a large file on a loaded debug build: up to 8 steps.
async fn wait_for_long<T>(r: &mut Running, pick: impl FnMut(&NodeEvent) -> Option<T>) -> T {
    r.wait(8 * support::STEP, "an event (8 steps)", pick)
        .await
        .unwrap()
}

async fn transfer(r: &Running, file_id: FileId, role: TransferRole) -> FileTransfer {
    r.handle
        .files()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.file_id == file_id && t.role == role)
        .expect("the transfer is listed")
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_file_arrives_byte_identical_and_shows_in_both_histories() {
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb) = (
        Spec::new(&tmp, "alice", 1, LISTEN),
        Spec::new(&tmp, "bob", 2, LISTEN),
    );
    let (mut a, mut b) = (sa.start().unwrap(), sb.start().unwrap());
    connect(&mut a, &mut b).await.unwrap();
    let (pa, pb) = (a.handle.peer_id(), b.handle.peer_id());
    let (path, bytes) = random_file(tmp.path(), "video.bin", 64 << 20, 7);

    let sent = a
        .handle
        .send_file(pb, path.clone(), Vec::new())
        .await
        .unwrap();
    assert_eq!(sent.name, "video.bin");
    assert_eq!(sent.size, bytes.len() as u64);
    assert_eq!(sent.sha256, Some(sha256(&bytes)));

    let saved = completed(&mut b, sent.file_id, TransferRole::Receive)
        .await
        .unwrap();
    assert_eq!(saved, sb.dir.join("downloads").join("video.bin"));
    assert!(std::fs::read(&saved).unwrap() == bytes, "the copy differs");
    completed(&mut a, sent.file_id, TransferRole::Send).await;

    let got = transfer(&b, sent.file_id, TransferRole::Receive).await;
    assert_eq!(got.state, TransferState::Complete);
    assert_eq!(got.bytes_done, bytes.len() as u64);
    assert_eq!(got.sha256, Some(sha256(&bytes)));
    assert_eq!(got.peer, pa);
    // No partial file is left beside it.
    let left: Vec<_> = std::fs::read_dir(sb.dir.join("downloads"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");

    for (node, peer) in [(&a, pb), (&b, pa)] {
        let history = node.handle.history(peer, None).await.unwrap();
        assert!(history.iter().any(|m| matches!(
            &m.body,
            Body::File { file_id, name, size }
                if file_id == sent.file_id.as_bytes() && name == "video.bin" && *size == 64 << 20
        )));
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_one_byte_files_arrive_and_names_never_clash() {
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb) = (
        Spec::new(&tmp, "alice", 3, LISTEN),
        Spec::new(&tmp, "bob", 4, LISTEN),
    );
    let (mut a, mut b) = (sa.start().unwrap(), sb.start().unwrap());
    connect(&mut a, &mut b).await.unwrap();
    let pb = b.handle.peer_id();
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    let one = tmp.path().join("one.txt");
    std::fs::write(&one, b"x").unwrap();

    let e = a.handle.send_file(pb, empty, Vec::new()).await.unwrap();
    let saved = completed(&mut b, e.file_id, TransferRole::Receive)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&saved).unwrap(), b"");

    let o = a
        .handle
        .send_file(pb, one.clone(), Vec::new())
        .await
        .unwrap();
    let saved = completed(&mut b, o.file_id, TransferRole::Receive)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&saved).unwrap(), b"x");

    // The same name again: saved beside the first, which is not overwritten.
    std::fs::write(&one, b"y").unwrap();
    let o2 = a.handle.send_file(pb, one, Vec::new()).await.unwrap();
    let saved2 = completed(&mut b, o2.file_id, TransferRole::Receive)
        .await
        .unwrap();
    assert_eq!(saved2, sb.dir.join("downloads").join("one (1).txt"));
    assert_eq!(std::fs::read(&saved).unwrap(), b"x");
    assert_eq!(std::fs::read(&saved2).unwrap(), b"y");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_are_clear_errors() {
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb) = (
        Spec::new(&tmp, "alice", 5, LISTEN),
        Spec::new(&tmp, "bob", 6, LISTEN),
    );
    sa.tweak = |c: &mut NodeConfig| c.max_file_size = 1000;
    let (mut a, mut b) = (sa.start().unwrap(), sb.start().unwrap());
    connect(&mut a, &mut b).await.unwrap();
    let pb = b.handle.peer_id();
    let missing = a
        .handle
        .send_file(pb, tmp.path().join("nope"), Vec::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("nope") && missing.contains("No such file"),
        "{missing}"
    );
    let dir = a
        .handle
        .send_file(pb, tmp.path().to_owned(), Vec::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(dir.contains("is a directory"), "{dir}");
    let (big, _) = random_file(tmp.path(), "big", 1001, 1);
    let big = a
        .handle
        .send_file(pb, big, Vec::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        big.contains("largest file that can be sent is 1000 bytes"),
        "{big}"
    );
    let stranger = PeerId::random();
    let (small, _) = random_file(tmp.path(), "small", 10, 1);
    assert!(
        a.handle
            .send_file(stranger, small, Vec::new())
            .await
            .is_err()
    );
    let unknown = b
        .handle
        .fetch_file(FileId::from_bytes([9; 16]), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("no file"), "{unknown}");
    assert!(a.handle.files().await.unwrap().is_empty());
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_interrupted_by_a_restart_resumes_from_the_chunks_held() {
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb) = (
        Spec::new(&tmp, "alice", 7, LISTEN),
        Spec::new(&tmp, "bob", 8, LISTEN),
    );
    let (mut a, mut b) = (sa.start().unwrap(), sb.start().unwrap());
    connect(&mut a, &mut b).await.unwrap();
    let pb = b.handle.peer_id();
    let (path, bytes) = random_file(tmp.path(), "big.bin", 48 << 20, 9);
    let size = bytes.len() as u64;
    let sent = a.handle.send_file(pb, path, Vec::new()).await.unwrap();

    // Stop the receiver part-way.
    let before = wait_for_long(&mut b, |e| match e {
        NodeEvent::FileProgress { bytes_done, .. } if *bytes_done >= size / 4 => Some(*bytes_done),
        _ => None,
    })
    .await;
    assert!(
        before < size,
        "the file finished before the receiver could be stopped"
    );
    b.stop().await.unwrap();

    let mut b = sb.start().unwrap();
    let held = transfer(&b, sent.file_id, TransferRole::Receive).await;
    assert!(
        held.bytes_done >= before,
        "after the restart only {} of the {before} bytes received are held",
        held.bytes_done
    );
    assert_ne!(held.state, TransferState::Complete);
    // It goes on by itself once the peers meet again.
    let saved = completed(&mut b, sent.file_id, TransferRole::Receive)
        .await
        .unwrap();
    assert!(std::fs::read(&saved).unwrap() == bytes, "the copy differs");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_serves_the_sealed_chunks_while_the_sender_is_offline_and_learns_nothing() {
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb, mut sr) = (
        Spec::new(&tmp, "alice", 11, LISTEN),
        Spec::new(&tmp, "bob", 12, LISTEN),
        Spec::new(&tmp, "relay", 13, LISTEN),
    );
    // Bob downloads only when asked, so the sender can leave first.
    sb.tweak = |c: &mut NodeConfig| c.auto_download_max = 0;
    let (mut a, mut b, mut r) = (
        sa.start().unwrap(),
        sb.start().unwrap(),
        sr.start().unwrap(),
    );
    connect(&mut a, &mut b).await.unwrap();
    connect(&mut a, &mut r).await.unwrap();
    let (pb, pr) = (b.handle.peer_id(), r.handle.peer_id());
    let (path, bytes) = random_file(tmp.path(), "secret.bin", 8 << 20, 21);

    let sent = a.handle.send_file(pb, path, vec![pr]).await.unwrap();
    let sealed = completed(&mut r, sent.file_id, TransferRole::Relay)
        .await
        .unwrap();
    // It holds every sealed chunk (the file plus a tag per 256 KiB chunk), and no plaintext.
    let probes: Vec<&[u8]> = (0..8).map(|i| &bytes[i * (1 << 20)..][..64]).collect();
    assert_eq!(
        std::fs::metadata(&sealed).unwrap().len(),
        bytes.len() as u64 + 32 * 16
    );
    for file in files_under(&sr.dir) {
        let content = std::fs::read(&file).unwrap();
        for probe in &probes {
            assert!(
                !contains(&content, probe),
                "plaintext in {}",
                file.display()
            );
        }
    }
    wait_for(&mut b.events, |e| {
        matches!(e, NodeEvent::FileOffered { file_id, .. } if *file_id == sent.file_id)
            .then_some(())
    })
    .await;
    let offered = transfer(&b, sent.file_id, TransferRole::Receive).await;
    assert_eq!(offered.state, TransferState::Offered);
    a.stop().await.unwrap();

    b.handle.fetch_file(sent.file_id, None).await.unwrap();
    let saved = completed(&mut b, sent.file_id, TransferRole::Receive)
        .await
        .unwrap();
    assert!(std::fs::read(&saved).unwrap() == bytes, "the copy differs");

    // The relay never had the key and never wrote plaintext.
    let held = transfer(&r, sent.file_id, TransferRole::Relay).await;
    assert_eq!(held.sha256, None);
    assert_eq!(held.name, "");
    // Told that Bob has the file, the relay deletes its sealed copy (bounded wait).
    let mut dropped = false;
    for _ in 0..150 {
        if transfer(&r, sent.file_id, TransferRole::Relay)
            .await
            .path
            .is_none()
        {
            dropped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        dropped,
        "the relay kept its copy after the recipient completed"
    );
    r.stop().await.unwrap();
    for file in files_under(&sr.dir) {
        let content = std::fs::read(&file).unwrap();
        for probe in &probes {
            assert!(
                !contains(&content, probe),
                "plaintext in {}",
                file.display()
            );
        }
    }
    b.stop().await.unwrap();
}

mod hostile {
    use encrypto_node::protocol::{FILE_PROTOCOL, FileCodec, FileRequest, FileResponse};
    use encrypto_node::test_support::{listen_loopback, raw_swarm_for};
    use futures::StreamExt;
    use libp2p::request_response::{self, Message, ProtocolSupport};
    use libp2p::swarm::SwarmEvent;
    use libp2p::{Multiaddr, Swarm};
    use std::time::Duration;

    pub(crate) type Source = Swarm<request_response::Behaviour<FileCodec>>;

    /// A peer that agrees to hold files and then serves chunks of the right length made of
    /// random bytes.
    pub(crate) fn swarm() -> Source {
        let key = libp2p::identity::Keypair::generate_ed25519();
        // libp2p's default idle timeout, as a swarm built without one has.
        raw_swarm_for(key, Duration::from_secs(10), |_| {
            request_response::Behaviour::with_codec(
                encrypto_node::protocol::file_codec(),
                [(FILE_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default(),
            )
        })
        .unwrap()
    }

    pub(crate) async fn listen(swarm: &mut Source) -> Multiaddr {
        listen_loopback(swarm).await.unwrap()
    }

    /// Serves until dropped; every chunk request bumps `served`.
    pub(crate) async fn serve(
        mut swarm: Source,
        chunk_len: usize,
        served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use rand::Rng;
        loop {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            }) = swarm.select_next_some().await
            {
                let response = match request {
                    FileRequest::Hold { .. }
                    | FileRequest::Complete { .. }
                    | FileRequest::Offer { .. } => FileResponse::Ok,
                    FileRequest::Chunk { .. } => {
                        served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let mut junk = vec![0u8; chunk_len];
                        rand::rng().fill_bytes(&mut junk);
                        FileResponse::Chunk(junk.into())
                    }
                    FileRequest::Manifest { .. } => FileResponse::Unavailable,
                };
                let _ = swarm.behaviour_mut().send_response(channel, response);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_chunks_from_a_hostile_source_are_rejected_and_fetched_elsewhere() {
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb) = (
        Spec::new(&tmp, "alice", 31, LISTEN),
        Spec::new(&tmp, "bob", 32, LISTEN),
    );
    let (mut a, mut b) = (sa.start().unwrap(), sb.start().unwrap());
    connect(&mut a, &mut b).await.unwrap();
    let pb = b.handle.peer_id();

    let mut source = hostile::swarm();
    let evil = *source.local_peer_id();
    let addr = hostile::listen(&mut source).await;
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // 256 KiB chunks, sealed: 16 bytes more.
    let server = tokio::spawn(hostile::serve(source, 256 * 1024 + 16, served.clone()));
    a.handle.dial(addr).await.unwrap();
    wait_for(&mut a.events, |e| {
        matches!(e, NodeEvent::PeerConnected { peer } if *peer == evil).then_some(())
    })
    .await;

    let (path, bytes) = random_file(tmp.path(), "doc.pdf", 4 << 20, 33);
    let sent = a.handle.send_file(pb, path, vec![evil]).await.unwrap();
    let mut rejected = 0;
    let saved = wait_for_long(&mut b, |e| match e {
        NodeEvent::Rejected { peer, reason } if *peer == evil => {
            assert!(reason.contains("chunk"), "{reason}");
            rejected += 1;
            None
        }
        NodeEvent::FileComplete { file_id, path, .. } if *file_id == sent.file_id => {
            Some(path.clone().unwrap())
        }
        NodeEvent::FileFailed { reason, .. } => panic!("transfer failed: {reason}"),
        _ => None,
    })
    .await;
    assert!(std::fs::read(&saved).unwrap() == bytes, "the copy differs");
    let asked = served.load(std::sync::atomic::Ordering::SeqCst);
    assert!(asked >= 1, "the hostile source was never asked");
    assert!(rejected >= 1, "no bad chunk was reported");
    server.abort();
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_offline_when_the_file_is_sent_gets_it_from_a_marked_relay_alone() {
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb, mut sr) = (
        Spec::new(&tmp, "alice", 41, LISTEN),
        Spec::new(&tmp, "bob", 42, LISTEN),
        Spec::new(&tmp, "relay", 43, LISTEN),
    );
    let (mut a, mut b, mut r) = (
        sa.start().unwrap(),
        sb.start().unwrap(),
        sr.start().unwrap(),
    );
    // Everyone has met once (keys pinned), then Bob goes offline.
    connect(&mut a, &mut b).await.unwrap();
    connect(&mut a, &mut r).await.unwrap();
    connect(&mut b, &mut r).await.unwrap();
    let (pa, pb, pr) = (a.handle.peer_id(), b.handle.peer_id(), r.handle.peer_id());
    let marked = a.handle.set_relay(pr, true).await.unwrap();
    assert!(marked.relay);
    assert!(
        a.handle.contact(pr).await.unwrap().unwrap().relay,
        "the mark is not kept"
    );
    // With Bob online, the file goes to him alone.
    let (small, _) = random_file(tmp.path(), "note.txt", 1000, 45);
    let direct = a.handle.send_file(pb, small, Vec::new()).await.unwrap();
    assert!(
        direct.relays.is_empty(),
        "a relay was used for an online recipient"
    );
    completed(&mut b, direct.file_id, TransferRole::Receive).await;
    b.stop().await.unwrap();
    wait_for(&mut a.events, |e| {
        matches!(e, NodeEvent::PeerDisconnected { peer } if *peer == pb).then_some(())
    })
    .await;

    // Bob is offline: the file goes to the marked relay without being named.
    let (path, bytes) = random_file(tmp.path(), "minutes.odt", 3 << 20, 44);
    let sent = a.handle.send_file(pb, path, Vec::new()).await.unwrap();
    assert_eq!(sent.relays, vec![pr]);
    completed(&mut r, sent.file_id, TransferRole::Relay).await;
    a.stop().await.unwrap();

    // Bob comes back and meets only the relay: the offer and every chunk come from it.
    let mut b = sb.start().unwrap();
    connect(&mut b, &mut r).await.unwrap();
    let saved = completed(&mut b, sent.file_id, TransferRole::Receive)
        .await
        .unwrap();
    assert!(std::fs::read(&saved).unwrap() == bytes, "the copy differs");
    let history = b.handle.history(pa, None).await.unwrap();
    assert!(history.iter().any(|m| matches!(
        &m.body,
        Body::File { file_id, .. } if file_id == sent.file_id.as_bytes()
    )));
    b.stop().await.unwrap();
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_file_is_forwarded_without_sealing_it_again() {
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb, mut sc) = (
        Spec::new(&tmp, "alice", 51, LISTEN),
        Spec::new(&tmp, "bob", 52, LISTEN),
        Spec::new(&tmp, "carol", 53, LISTEN),
    );
    let (mut a, mut b, mut c) = (
        sa.start().unwrap(),
        sb.start().unwrap(),
        sc.start().unwrap(),
    );
    connect(&mut a, &mut b).await.unwrap();
    connect(&mut b, &mut c).await.unwrap();
    let (pb, pc) = (b.handle.peer_id(), c.handle.peer_id());
    let (path, bytes) = random_file(tmp.path(), "plan.pdf", 2 << 20, 54);
    let sent = a.handle.send_file(pb, path, Vec::new()).await.unwrap();
    completed(&mut b, sent.file_id, TransferRole::Receive).await;

    // Bob passes it on to Carol; Alice is gone by then, so the chunks come from Bob's copy.
    a.stop().await.unwrap();
    let forwarded = b.handle.forward_file(sent.file_id, pc).await.unwrap();
    assert_eq!(forwarded.file_id, sent.file_id);
    assert_eq!(forwarded.name, "plan.pdf");
    let saved = completed(&mut c, sent.file_id, TransferRole::Receive)
        .await
        .unwrap();
    assert!(std::fs::read(&saved).unwrap() == bytes, "the copy differs");
    assert_eq!(
        transfer(&c, sent.file_id, TransferRole::Receive).await.peer,
        pb
    );
    // Nothing to forward that is not here.
    let missing = c
        .handle
        .forward_file(FileId::from_bytes([3; 16]), pb)
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("no complete copy"), "{missing}");
    b.stop().await.unwrap();
    c.stop().await.unwrap();
}
