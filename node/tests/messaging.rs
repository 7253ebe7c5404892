//! Real nodes on loopback exchanging messages: every test starts actual `encrypto-node` nodes
//! (libp2p over TCP or QUIC on 127.0.0.1, sled stores in temporary directories) and waits for
//! events with bounded timeouts. No mock network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;

use encrypto_crypto::{Cipher, Identity, MessageId, PeerId, RsaBits};
use encrypto_node::NodeError;
use encrypto_node::NodeEvent;
use encrypto_node::view::{Body, Direction, Status};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use rand::SeedableRng;
use rand::rngs::StdRng;
use support::{Running, Spec, connect, wait_for};
use tempfile::TempDir;

async fn delivered(r: &mut Running, want: &[MessageId]) {
    let mut left: std::collections::HashSet<MessageId> = want.iter().copied().collect();
    wait_for(&mut r.events, |e| {
        if let NodeEvent::Delivered { id, .. } = e {
            left.remove(id);
        }
        left.is_empty().then_some(())
    })
    .await;
}

fn texts(history: &[encrypto_node::view::Message], direction: Direction) -> Vec<String> {
    history
        .iter()
        .filter(|m| m.direction == direction)
        .map(|m| match &m.body {
            Body::Text(t) => t.clone(),
            other => panic!("unexpected body {other:?}"),
        })
        .collect()
}

async fn both_ways(listen: &str) {
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb) = (
        Spec::new(&tmp, "alice", 1, listen),
        Spec::new(&tmp, "bob", 2, listen),
    );
    let (mut a, mut b) = (sa.start().unwrap(), sb.start().unwrap());
    connect(&mut a, &mut b).await.unwrap();
    let (pa, pb) = (a.handle.peer_id(), b.handle.peer_id());

    let m1 = a.handle.send_text(pb, "hello bob".into()).await.unwrap();
    let m2 = b.handle.send_text(pa, "hi alice".into()).await.unwrap();
    delivered(&mut a, &[m1]).await;
    delivered(&mut b, &[m2]).await;

    let ha = a.handle.history(pb, None).await.unwrap();
    let hb = b.handle.history(pa, None).await.unwrap();
    assert_eq!(texts(&ha, Direction::Out), ["hello bob"]);
    assert_eq!(texts(&ha, Direction::In), ["hi alice"]);
    assert_eq!(texts(&hb, Direction::In), ["hello bob"]);
    assert_eq!(texts(&hb, Direction::Out), ["hi alice"]);
    assert!(
        ha.iter()
            .filter(|m| m.direction == Direction::Out)
            .all(|m| m.status == Status::Delivered)
    );
    assert!(hb.iter().all(|m| m.cipher == Cipher::Aes));
    // "Show ciphertext": the sender records the envelope the peer acknowledged; it is the one
    // the peer keeps.
    let envelope = |h: &[encrypto_node::view::Message], d| {
        h.iter()
            .find(|m| m.direction == d)
            .and_then(|m| m.envelope.clone())
    };
    let sent = envelope(&ha, Direction::Out);
    assert!(sent.is_some(), "the sent envelope is recorded");
    assert_eq!(sent, envelope(&hb, Direction::In));
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn two_nodes_exchange_messages_both_ways_over_tcp() {
    both_ways("/ip4/127.0.0.1/tcp/0").await;
}

#[tokio::test]
async fn two_nodes_exchange_messages_both_ways_over_quic() {
    both_ways("/ip4/127.0.0.1/udp/0/quic-v1").await;
}

#[tokio::test]
async fn a_thousand_messages_arrive_exactly_once_in_order() {
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb) = (
        Spec::new(&tmp, "alice", 3, "/ip4/127.0.0.1/tcp/0"),
        Spec::new(&tmp, "bob", 4, "/ip4/127.0.0.1/tcp/0"),
    );
    let (mut a, mut b) = (sa.start().unwrap(), sb.start().unwrap());
    connect(&mut a, &mut b).await.unwrap();
    let pb = b.handle.peer_id();
    let mut ids = Vec::new();
    for i in 0..1000 {
        ids.push(
            a.handle
                .send_text(pb, format!("message {i:04}"))
                .await
                .unwrap(),
        );
    }
    delivered(&mut a, &ids).await;
    let hb = b.handle.history(a.handle.peer_id(), None).await.unwrap();
    let want: Vec<String> = (0..1000).map(|i| format!("message {i:04}")).collect();
    assert_eq!(texts(&hb, Direction::In), want);
    let ha = a.handle.history(pb, None).await.unwrap();
    assert!(ha.iter().all(|m| m.status == Status::Delivered));
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Many callers at once make group commits with many waiters (flushed off the actor's
/// thread); a cipher switch in the middle writes the sends gathered before it first and is
/// queued after them. Every message arrives once, each caller's in the order it sent them,
/// and every one is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_and_a_cipher_switch_lose_and_repeat_nothing() {
    const CALLERS: usize = 32;
    const EACH: usize = 20;
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb) = (
        Spec::new(&tmp, "alice", 21, "/ip4/127.0.0.1/tcp/0"),
        Spec::new(&tmp, "bob", 22, "/ip4/127.0.0.1/tcp/0"),
    );
    let (mut a, mut b) = (sa.start().unwrap(), sb.start().unwrap());
    connect(&mut a, &mut b).await.unwrap();
    let (pa, pb) = (a.handle.peer_id(), b.handle.peer_id());
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..CALLERS {
        let handle = a.handle.clone();
        callers.spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EACH {
                ids.push(
                    handle
                        .send_text(pb, format!("caller {c:02} message {i:02}"))
                        .await
                        .unwrap(),
                );
            }
            ids
        });
    }
    a.handle.set_cipher(pb, Cipher::Aes).await.unwrap();
    let mut ids = Vec::new();
    while let Some(sent) = callers.join_next().await {
        ids.extend(sent.unwrap());
    }
    assert_eq!(ids.len(), CALLERS * EACH);
    delivered(&mut a, &ids).await;
    wait_for(&mut b.events, |e| {
        matches!(e, NodeEvent::CipherChanged { peer, cipher: Cipher::Aes, by: Direction::In } if *peer == pa)
            .then_some(())
    })
    .await;

    let received = texts(&b.handle.history(pa, None).await.unwrap(), Direction::In);
    assert_eq!(received.len(), CALLERS * EACH, "each message once");
    for c in 0..CALLERS {
        let prefix = format!("caller {c:02} ");
        let mine: Vec<&String> = received.iter().filter(|t| t.starts_with(&prefix)).collect();
        let want: Vec<String> = (0..EACH)
            .map(|i| format!("{prefix}message {i:02}"))
            .collect();
        assert_eq!(
            mine,
            want.iter().collect::<Vec<_>>(),
            "caller {c}'s messages, in order"
        );
    }
    let ha = a.handle.history(pb, None).await.unwrap();
    assert_eq!(ha.len(), CALLERS * EACH);
    assert!(ha.iter().all(|m| m.status == Status::Delivered));
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// `start` returns once every configured listener has its address: each is in
/// `Started::listen_addrs` with its real port, as the node itself reports them.
#[tokio::test]
async fn start_returns_the_addresses_of_every_listener() {
    let tmp = TempDir::new().unwrap();
    let mut config = encrypto_node::test_support::loopback_config(tmp.path().join("alice"));
    config.swarm.listen = vec![
        "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
    ];
    let started = encrypto_node::start(
        support::seeded_identity(51),
        "alice",
        1,
        encrypto_crypto::StorageKey::from_bytes([51; 32]),
        config,
    )
    .unwrap();
    let addrs = &started.listen_addrs;
    let tcp = addrs
        .iter()
        .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))));
    let quic = addrs
        .iter()
        .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)));
    assert!(
        tcp.is_some_and(|a| !a.iter().any(|p| p == Protocol::Tcp(0))),
        "no TCP port in {addrs:?}"
    );
    assert!(quic.is_some(), "no QUIC address in {addrs:?}");
    let mut reported = started.handle.listen_addrs().await.unwrap();
    let mut returned = addrs.clone();
    reported.sort();
    returned.sort();
    assert_eq!(reported, returned);
    started.handle.shutdown().await;
    started.task.await.unwrap();
}

/// A node remembers where to redial a peer: the address it dialled, or the listen addresses
/// the peer announces, never the source port of a connection the peer opened (an ephemeral
/// port, which would crowd the real addresses out of the short list kept).
#[tokio::test]
async fn an_accepted_connection_leaves_only_dialable_addresses_remembered() {
    let tmp = TempDir::new().unwrap();
    // Alice listens on QUIC only, so her TCP dial to Bob cannot reuse a listening port: it
    // comes from an ephemeral one, as from behind most NATs.
    let (mut sa, mut sb) = (
        Spec::new(&tmp, "alice", 23, "/ip4/127.0.0.1/udp/0/quic-v1"),
        Spec::new(&tmp, "bob", 24, "/ip4/127.0.0.1/tcp/0"),
    );
    let (mut a, mut b) = (sa.start().unwrap(), sb.start().unwrap());
    connect(&mut a, &mut b).await.unwrap();
    let pa = a.handle.peer_id();
    let listening: Vec<Multiaddr> = a.handle.listen_addrs().await.unwrap();
    let known = |peers: Vec<encrypto_node::PeerInfo>| {
        peers
            .into_iter()
            .find(|p| p.peer_id == pa)
            .map(|p| p.addrs)
            .unwrap_or_default()
    };
    // Identify brings Alice's listen address; wait (bounded) until Bob has it.
    let mut addrs = Vec::new();
    for _ in 0..100 {
        addrs = known(b.handle.peers().await.unwrap());
        if !addrs.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!addrs.is_empty(), "Bob remembers no address for Alice");
    for addr in &addrs {
        assert!(
            listening.contains(addr),
            "Bob remembers {addr} for Alice, who listens on {listening:?}"
        );
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn messages_sent_while_the_peer_is_offline_arrive_after_restarts() {
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb) = (
        Spec::new(&tmp, "alice", 5, "/ip4/127.0.0.1/tcp/0"),
        Spec::new(&tmp, "bob", 6, "/ip4/127.0.0.1/tcp/0"),
    );
    let (mut a, mut b) = (sa.start().unwrap(), sb.start().unwrap());
    connect(&mut a, &mut b).await.unwrap();
    let (pa, pb): (PeerId, PeerId) = (a.handle.peer_id(), b.handle.peer_id());
    b.stop().await.unwrap();

    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            a.handle
                .send_text(pb, format!("offline {i}"))
                .await
                .unwrap(),
        );
    }
    // Alice restarts too before Bob is back: the outbox must survive it.
    a.stop().await.unwrap();
    let mut a = sa.start().unwrap();
    let mut b = sb.start().unwrap();
    // Nobody dials by hand: Alice remembers Bob's address and redials him on her own (Bob
    // restarted on the same address, as a daemon with a fixed port would).
    delivered(&mut a, &ids).await;
    let hb = b.handle.history(pa, None).await.unwrap();
    let want: Vec<String> = (0..20).map(|i| format!("offline {i}")).collect();
    assert_eq!(texts(&hb, Direction::In), want);
    let _ = &mut b.events;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn cipher_switch_and_delete_for_both_are_seen_on_both_sides() {
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb) = (
        Spec::new(&tmp, "alice", 7, "/ip4/127.0.0.1/tcp/0"),
        Spec::new(&tmp, "bob", 8, "/ip4/127.0.0.1/tcp/0"),
    );
    let (mut a, mut b) = (sa.start().unwrap(), sb.start().unwrap());
    connect(&mut a, &mut b).await.unwrap();
    let (pa, pb) = (a.handle.peer_id(), b.handle.peer_id());

    a.handle.set_cipher(pb, Cipher::Rsa).await.unwrap();
    wait_for(&mut b.events, |e| {
        matches!(e, NodeEvent::CipherChanged { peer, cipher: Cipher::Rsa, by: Direction::In } if *peer == pa)
            .then_some(())
    })
    .await;
    let m = a
        .handle
        .send_text(pb, "sent with rsa".into())
        .await
        .unwrap();
    delivered(&mut a, &[m]).await;
    let hb = b.handle.history(pa, None).await.unwrap();
    assert_eq!(hb.last().unwrap().cipher, Cipher::Rsa);
    assert_eq!(
        b.handle
            .contacts()
            .await
            .unwrap()
            .iter()
            .find(|c| c.peer_id == pa)
            .unwrap()
            .cipher,
        Cipher::Rsa
    );

    let deleted = a.handle.delete_chat(pb, true).await.unwrap();
    assert_eq!(deleted, 1);
    wait_for(&mut b.events, |e| {
        matches!(e, NodeEvent::ChatDeleted { peer, by: Direction::In, .. } if *peer == pa)
            .then_some(())
    })
    .await;
    assert!(b.handle.history(pa, None).await.unwrap().is_empty());
    assert!(a.handle.history(pb, None).await.unwrap().is_empty());
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn sending_to_a_stranger_or_too_much_is_a_clear_error() {
    let tmp = TempDir::new().unwrap();
    let mut sa = Spec::new(&tmp, "alice", 9, "/ip4/127.0.0.1/tcp/0");
    let a = sa.start().unwrap();
    let stranger = Identity::generate(&mut StdRng::seed_from_u64(99), RsaBits::B2048)
        .unwrap()
        .peer_id();
    let err = a.handle.send_text(stranger, "hi".into()).await.unwrap_err();
    assert!(err.to_string().contains("not a contact"), "{err}");
    a.stop().await.unwrap();
}

/// Every file under `dir`, read whole.
fn files_under(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_stores_hold_no_message_text_and_no_private_key_bytes() {
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb) = (
        Spec::new(&tmp, "alice", 11, "/ip4/127.0.0.1/tcp/0"),
        Spec::new(&tmp, "bob", 12, "/ip4/127.0.0.1/tcp/0"),
    );
    let (mut a, mut b) = (sa.start().unwrap(), sb.start().unwrap());
    connect(&mut a, &mut b).await.unwrap();
    let (pa, pb) = (a.handle.peer_id(), b.handle.peer_id());
    let marker = "PLAINTEXT-MARKER-d41d8cd98f00";
    let m1 = a
        .handle
        .send_text(pb, format!("{marker} from alice"))
        .await
        .unwrap();
    let m2 = b
        .handle
        .send_text(pa, format!("{marker} from bob"))
        .await
        .unwrap();
    delivered(&mut a, &[m1]).await;
    delivered(&mut b, &[m2]).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();

    let mut secrets: Vec<(String, Vec<u8>)> = vec![("marker".into(), marker.as_bytes().to_vec())];
    for spec in [&sa, &sb] {
        let id = spec.identity();
        secrets.push((
            format!("{} ed25519 secret", spec.name),
            id.ed25519_secret().to_vec(),
        ));
        let der = id.rsa_pkcs8_der().unwrap();
        // Any 32-byte window of the RSA private key would do; take one from the middle.
        let mid = der.len() / 2;
        secrets.push((
            format!("{} rsa private key", spec.name),
            der[mid..mid + 32].to_vec(),
        ));
        secrets.push((format!("{} storage key", spec.name), spec.storage.to_vec()));
    }
    let files = files_under(tmp.path());
    assert!(
        files.len() > 2,
        "expected sled files, found {}",
        files.len()
    );
    for (path, bytes) in &files {
        for (what, secret) in &secrets {
            assert!(
                !contains(bytes, secret),
                "{what} found in {}",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn add_peer_by_address_pins_the_profile_and_reports_failures() {
    let tmp = TempDir::new().unwrap();
    let (mut sa, mut sb) = (
        Spec::new(&tmp, "alice", 41, "/ip4/127.0.0.1/tcp/0"),
        Spec::new(&tmp, "bob", 42, "/ip4/127.0.0.1/tcp/0"),
    );
    let (mut a, b) = (sa.start().unwrap(), sb.start().unwrap());
    let pb = b.handle.peer_id();

    // An address without /p2p/ and a PeerId with no known address are refused at once.
    let err = a.handle.add_peer(b.addr.clone()).await.unwrap_err();
    assert!(err.to_string().contains("/p2p/"), "{err}");
    let err = a.handle.add_peer_id(pb).await.unwrap_err();
    assert!(matches!(err, NodeError::NoAddress(p) if p == pb), "{err}");

    let full = b.addr.clone().with(Protocol::P2p(pb));
    let contact = a.handle.add_peer(full.clone()).await.unwrap();
    assert_eq!((contact.peer_id, contact.name.as_str()), (pb, "bob"));
    assert!(!contact.verified);
    assert!(contact.listed, "an added peer is a contact");
    assert_eq!(
        a.handle.contacts().await.unwrap(),
        std::slice::from_ref(&contact)
    );
    // Adding again while connected answers at once with the same contact.
    assert_eq!(a.handle.add_peer(full).await.unwrap(), contact);

    // One message with RSA in an AES chat: the chat keeps AES.
    let id = a
        .handle
        .send_text_with(pb, "sealed with rsa".into(), Some(Cipher::Rsa))
        .await
        .unwrap();
    delivered(&mut a, &[id]).await;
    let history = a.handle.history(pb, None).await.unwrap();
    assert_eq!(history[0].cipher, Cipher::Rsa);
    assert_eq!(a.handle.contacts().await.unwrap()[0].cipher, Cipher::Aes);

    // A peer that is gone: the dial fails and says so, well before the add timeout.
    b.stop().await.unwrap();
    let gone = Identity::generate(&mut StdRng::seed_from_u64(43), RsaBits::B2048)
        .unwrap()
        .peer_id();
    let nobody: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    let err = a
        .handle
        .add_peer(nobody.with(Protocol::P2p(gone)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::Unreachable { peer, .. } if peer == gone),
        "{err}"
    );
    a.stop().await.unwrap();
}
