use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use encrypto_crypto::storage::RecordError;
use encrypto_crypto::storage::StorageKey;
use encrypto_crypto::{Cipher, KeyId, MessageId, PeerId};
use tempfile::TempDir;

use super::*;

fn peer(seed: u8) -> PeerId {
    libp2p::identity::Keypair::ed25519_from_bytes([seed; 32])
        .expect("32 bytes are an ed25519 secret key")
        .public()
        .to_peer_id()
}

fn key(seed: u8) -> StorageKey {
    StorageKey::from_bytes([seed; 32])
}

fn id(n: u8) -> MessageId {
    MessageId([n; 16])
}

fn open(dir: &Path) -> Store {
    Store::open(dir, key(1)).unwrap()
}

/// Writes `version` as the store's format, as a build of that format would have.
fn set_format(store: &Store, version: u32) {
    store
        .inner
        .tree(TreeId::Meta)
        .insert(FORMAT_KEY, &version.to_be_bytes())
        .unwrap();
}

fn msg(peer: PeerId, ts: u64, n: u8, direction: Direction, text: &str) -> StoredMessage {
    StoredMessage {
        id: id(n),
        peer,
        direction,
        timestamp_ms: ts,
        cipher: Cipher::Aes,
        body: Body::Text(text.into()),
        status: match direction {
            Direction::In => Status::Received,
            Direction::Out => Status::Queued,
        },
        envelope: Some(vec![n; 40]),
    }
}

fn outgoing(peer: PeerId, ts: u64, n: u8, text: &str) -> (StoredMessage, OutboxItem) {
    let m = msg(peer, ts, n, Direction::Out, text);
    let item = OutboxItem {
        id: m.id,
        peer,
        created_ms: ts,
        cipher: Cipher::Aes,
        kind: OutboxKind::Text(text.into()),
        attempts: 0,
    };
    (m, item)
}

fn contact(peer: PeerId, name: &str) -> Contact {
    Contact {
        peer_id: peer,
        name: name.into(),
        profile: vec![1, 2, 3],
        ed25519: [9; 32],
        rsa_der: vec![4; 300],
        cipher: Cipher::Rsa,
        verified: true,
        key_changed: false,
        added_ms: 1_700_000_000_000,
        pending_profile: Some(vec![7, 7]),
        listed: true,
        relay: true,
    }
}

fn known(peer: PeerId, name: &str, last_seen_ms: u64) -> KnownPeer {
    KnownPeer {
        peer_id: peer,
        name: Some(name.into()),
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        via: "mdns".into(),
        last_seen_ms,
    }
}

fn texts(history: &[StoredMessage]) -> Vec<&str> {
    history
        .iter()
        .map(|m| match &m.body {
            Body::Text(t) => t.as_str(),
            Body::File { .. } => "<file>",
        })
        .collect()
}

/// Every file under `dir`, as bytes, concatenated.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.extend(fs::read(&path).unwrap());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn everything_persists_across_close_and_reopen() {
    let dir = TempDir::new().unwrap();
    let (a, b) = (peer(1), peer(2));
    let (out, item) = outgoing(a, 20, 2, "to a");
    {
        let store = open(dir.path());
        store.put_contact(&contact(a, "alice")).unwrap();
        store
            .put_message(&msg(a, 10, 1, Direction::In, "from a"))
            .unwrap();
        store.enqueue_outgoing(&out, &item).unwrap();
        store.put_outbound_session(&a, b"session bytes").unwrap();
        store
            .put_inbound_key(&a, &KeyId([7; 16]), &[8; 32])
            .unwrap();
        store.put_peer(&known(b, "bob", 5)).unwrap();
        store.put_setting("theme", b"dark").unwrap();
        assert!(
            store
                .store_incoming(&msg(b, 30, 3, Direction::In, "from b"))
                .unwrap()
        );
    }
    let store = open(dir.path());
    assert_eq!(store.contact(&a).unwrap(), Some(contact(a, "alice")));
    assert_eq!(store.contact(&b).unwrap(), None);
    assert_eq!(store.contacts().unwrap(), vec![contact(a, "alice")]);
    assert_eq!(
        store.history(&a, None).unwrap(),
        vec![msg(a, 10, 1, Direction::In, "from a"), out.clone()]
    );
    assert_eq!(store.outbox().unwrap(), vec![item.clone()]);
    assert_eq!(
        &store.outbound_session(&a).unwrap().unwrap()[..],
        b"session bytes"
    );
    assert_eq!(store.outbound_session(&b).unwrap(), None);
    let inbound = store.inbound_keys(&a).unwrap();
    assert_eq!(inbound.len(), 1);
    assert_eq!((inbound[0].0, *inbound[0].1), (KeyId([7; 16]), [8; 32]));
    assert!(store.inbound_keys(&b).unwrap().is_empty());
    assert_eq!(store.peers().unwrap(), vec![known(b, "bob", 5)]);
    assert_eq!(store.peer(&b).unwrap(), Some(known(b, "bob", 5)));
    assert_eq!(store.setting("theme").unwrap(), Some(b"dark".to_vec()));
    assert_eq!(store.setting("other").unwrap(), None);
    assert!(store.is_seen(&b, &id(3)).unwrap());
    assert_eq!(
        store.message(&b, 30, &id(3)).unwrap(),
        Some(msg(b, 30, 3, Direction::In, "from b"))
    );
}

#[test]
fn history_is_per_chat_in_time_order_and_limit_keeps_the_newest() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let (a, b) = (peer(1), peer(2));
    // Inserted out of order and interleaved with another chat.
    for (ts, n) in [(300, 3), (100, 1), (500, 5), (200, 2), (400, 4)] {
        store
            .put_message(&msg(a, ts, n, Direction::In, &format!("a{n}")))
            .unwrap();
        store
            .put_message(&msg(b, ts + 1, n, Direction::Out, &format!("b{n}")))
            .unwrap();
    }
    // Same millisecond: ordered by id.
    store
        .put_message(&msg(a, 300, 9, Direction::Out, "a9"))
        .unwrap();

    let all = store.history(&a, None).unwrap();
    assert_eq!(texts(&all), ["a1", "a2", "a3", "a9", "a4", "a5"]);
    assert!(all.iter().all(|m| m.peer == a));
    assert_eq!(
        texts(&store.history(&b, None).unwrap()),
        ["b1", "b2", "b3", "b4", "b5"]
    );

    assert_eq!(texts(&store.history(&a, Some(2)).unwrap()), ["a4", "a5"]);
    assert_eq!(texts(&store.history(&a, Some(1)).unwrap()), ["a5"]);
    assert!(store.history(&a, Some(0)).unwrap().is_empty());
    assert_eq!(store.history(&a, Some(100)).unwrap(), all);
    assert!(store.history(&peer(3), None).unwrap().is_empty());

    assert_eq!(
        texts(&store.history_before(&a, 400, 2).unwrap()),
        ["a3", "a9"]
    );
    assert_eq!(
        texts(&store.history_before(&a, 400, 10).unwrap()),
        ["a1", "a2", "a3", "a9"]
    );
    assert!(store.history_before(&a, 100, 10).unwrap().is_empty());
    assert_eq!(store.message_count(&a).unwrap(), 6);
    assert_eq!(store.message_count(&b).unwrap(), 5);
}

#[test]
fn deleting_one_chat_leaves_the_other() {
    let dir = TempDir::new().unwrap();
    let (a, b) = (peer(1), peer(2));
    {
        let store = open(dir.path());
        for n in 1..=5 {
            store
                .put_message(&msg(a, u64::from(n), n, Direction::In, "a"))
                .unwrap();
            store
                .put_message(&msg(b, u64::from(n), n, Direction::In, "b"))
                .unwrap();
        }
        store.put_contact(&contact(a, "alice")).unwrap();
        assert_eq!(store.delete_chat(&a).unwrap(), 5);
        assert_eq!(store.delete_chat(&a).unwrap(), 0);
        assert_eq!(store.message_count(&a).unwrap(), 0);
    }
    let store = open(dir.path());
    assert!(store.history(&a, None).unwrap().is_empty());
    assert_eq!(store.history(&b, None).unwrap().len(), 5);
    assert_eq!(store.message_count(&b).unwrap(), 5);
    assert!(store.contact(&a).unwrap().is_some(), "the contact stays");
}

#[test]
fn store_incoming_is_exactly_once_and_survives_reopen() {
    let dir = TempDir::new().unwrap();
    let (a, b) = (peer(1), peer(2));
    let m = msg(a, 1000, 1, Direction::In, "once");
    {
        let store = open(dir.path());
        assert!(!store.is_seen(&a, &m.id).unwrap());
        assert!(store.store_incoming(&m).unwrap());
        assert!(store.is_seen(&a, &m.id).unwrap());
        // A resend, even with another timestamp (another history key), is a duplicate.
        assert!(!store.store_incoming(&m).unwrap());
        let mut later = m.clone();
        later.timestamp_ms = 2000;
        assert!(!store.store_incoming(&later).unwrap());
        assert_eq!(store.history(&a, None).unwrap(), vec![m.clone()]);
        // Seen ids are per sender.
        assert!(!store.is_seen(&b, &m.id).unwrap());
    }
    let store = open(dir.path());
    assert!(store.is_seen(&a, &m.id).unwrap());
    assert!(!store.store_incoming(&m).unwrap());
    assert_eq!(store.history(&a, None).unwrap(), vec![m.clone()]);

    // A batch: new, a repeat within the batch, an old duplicate, another sender.
    let fresh = msg(a, 1001, 2, Direction::In, "two");
    let from_b = msg(b, 1000, 1, Direction::In, "same id, other sender");
    let stored = store
        .store_incoming_many(&[fresh.clone(), fresh.clone(), m.clone(), from_b.clone()])
        .unwrap();
    assert_eq!(stored, [true, false, false, true]);
    assert_eq!(store.history(&a, None).unwrap(), vec![m, fresh]);
    assert_eq!(store.history(&b, None).unwrap(), vec![from_b]);
}

#[test]
fn mark_seen_and_prune_seen() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let a = peer(1);
    assert!(store.mark_seen(&a, &id(1), 100).unwrap());
    assert!(!store.mark_seen(&a, &id(1), 100).unwrap());
    assert!(store.is_seen(&a, &id(1)).unwrap());
    assert!(
        store
            .store_incoming(&msg(a, 500, 2, Direction::In, "x"))
            .unwrap()
    );
    assert_eq!(store.prune_seen(200).unwrap(), 1);
    assert!(!store.is_seen(&a, &id(1)).unwrap());
    assert!(store.is_seen(&a, &id(2)).unwrap());
}

#[test]
fn enqueue_and_complete_outgoing() {
    let dir = TempDir::new().unwrap();
    let (a, b) = (peer(1), peer(2));
    let (m1, i1) = outgoing(a, 10, 1, "first");
    let (m2, i2) = outgoing(a, 20, 2, "second");
    let (m3, i3) = outgoing(b, 15, 3, "to b");
    {
        let store = open(dir.path());
        store.enqueue_outgoing(&m1, &i1).unwrap();
        store
            .enqueue_outgoing_many(&[(m3.clone(), i3.clone()), (m2.clone(), i2.clone())])
            .unwrap();
    }
    // The outbox survives a restart, oldest first across chats.
    let store = open(dir.path());
    assert_eq!(
        store.outbox().unwrap(),
        vec![i1.clone(), i3.clone(), i2.clone()]
    );
    assert_eq!(store.outbox_for(&a).unwrap(), vec![i1.clone(), i2.clone()]);
    assert_eq!(
        store.history(&a, None).unwrap(),
        vec![m1.clone(), m2.clone()]
    );

    // An attempt is counted; an item completed meanwhile is not resurrected.
    let tried = OutboxItem {
        attempts: 1,
        ..i1.clone()
    };
    assert!(store.update_outbox(&tried).unwrap());
    assert_eq!(store.outbox_for(&a).unwrap()[0].attempts, 1);
    assert!(store.set_status(&a, 10, &m1.id, Status::Sent).unwrap());

    assert!(store.complete_outgoing(&a, &m1.id, 10).unwrap());
    assert!(
        !store.complete_outgoing(&a, &m1.id, 10).unwrap(),
        "a repeated ack changes nothing"
    );
    assert!(!store.update_outbox(&tried).unwrap());
    assert_eq!(store.outbox().unwrap(), vec![i3.clone(), i2.clone()]);
    let history = store.history(&a, None).unwrap();
    assert_eq!(history[0].status, Status::Delivered);
    assert_eq!(history[1].status, Status::Queued);

    // One acknowledgement for several ids (one unknown).
    assert_eq!(
        store
            .complete_outgoing_many(&a, &[(m2.id, 20), (id(99), 20)])
            .unwrap(),
        1
    );
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.outbox().unwrap(), vec![i3]);
    assert!(
        store
            .history(&a, None)
            .unwrap()
            .iter()
            .all(|m| m.status == Status::Delivered)
    );
    assert_eq!(store.history(&b, None).unwrap()[0].status, Status::Queued);
}

#[test]
fn enqueue_outgoing_writes_nothing_when_any_part_is_invalid() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let a = peer(1);
    let (m1, i1) = outgoing(a, 10, 1, "fine");
    let (m2, mut i2) = outgoing(a, 20, 2, "mismatched");
    i2.created_ms = 21;
    let err = store
        .enqueue_outgoing_many(&[(m1.clone(), i1.clone()), (m2, i2)])
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    let (m3, i3) = outgoing(a, 30, 3, &"x".repeat(MAX_RECORD_LEN));
    let err = store
        .enqueue_outgoing_many(&[(m1, i1), (m3, i3)])
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("over the store's limit"), "{err}");
    assert!(store.outbox().unwrap().is_empty());
    assert_eq!(store.message_count(&a).unwrap(), 0);
}

#[test]
fn control_items_and_acks_after_a_deleted_chat() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let a = peer(1);
    let control = OutboxItem {
        id: id(5),
        peer: a,
        created_ms: 50,
        cipher: Cipher::Aes,
        kind: OutboxKind::Control(vec![1, 2, 3]),
        attempts: 0,
    };
    store.enqueue_control(&control).unwrap();
    let (m, i) = outgoing(a, 60, 6, "pending");
    store.enqueue_outgoing(&m, &i).unwrap();
    assert_eq!(store.outbox().unwrap(), vec![control.clone(), i.clone()]);
    assert_eq!(
        store.message_count(&a).unwrap(),
        1,
        "a control item has no history entry"
    );

    assert!(store.complete_outgoing(&a, &control.id, 50).unwrap());
    // Deleting the chat keeps the message queued; its ack then only clears the outbox.
    assert_eq!(store.delete_chat(&a).unwrap(), 1);
    assert_eq!(store.outbox().unwrap(), vec![i]);
    assert!(store.complete_outgoing(&a, &m.id, 60).unwrap());
    assert!(store.outbox().unwrap().is_empty());
    assert!(store.history(&a, None).unwrap().is_empty());
}

#[test]
fn another_storage_key_is_refused_at_open_and_records_do_not_open() {
    let dir = TempDir::new().unwrap();
    let a = peer(1);
    {
        let store = open(dir.path());
        store.put_contact(&contact(a, "alice")).unwrap();
        store
            .put_message(&msg(a, 1, 1, Direction::In, "hi"))
            .unwrap();
        let (m, i) = outgoing(a, 2, 2, "queued");
        store.enqueue_outgoing(&m, &i).unwrap();
        store.put_setting("theme", b"dark").unwrap();
        store.put_outbound_session(&a, b"s").unwrap();
    }
    let err = Store::open(dir.path(), key(2)).unwrap_err();
    assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");
    let line = err.to_string();
    assert!(line.contains(&dir.path().display().to_string()), "{line}");
    assert!(line.contains("storage key"), "{line}");

    // Past the check (as if it were missing), every record fails on its own, cleanly.
    {
        let store = Store::open_unchecked(dir.path(), key(2)).unwrap();
        let mut records = 0;
        for tree in TreeId::ALL {
            for entry in store.inner.tree(tree).iter() {
                let (k, sealed) = entry.unwrap();
                if tree == TreeId::Meta && &k[..] == FORMAT_KEY {
                    continue;
                }
                let err = store.inner.open_bytes(tree, &k, &sealed).unwrap_err();
                assert!(
                    matches!(
                        err,
                        StoreError::Record {
                            source: RecordError::Rejected,
                            ..
                        }
                    ),
                    "{err}"
                );
                records += 1;
            }
        }
        assert_eq!(
            records, 8,
            "check, generation, contact, 2 messages, outbox item, setting, session"
        );
        // Listings skip what does not open; lookups by key 2's tags find nothing.
        assert!(store.contacts().unwrap().is_empty());
        assert!(store.outbox().unwrap().is_empty());
        assert!(store.peers().unwrap().is_empty());
        assert_eq!(store.contact(&a).unwrap(), None);
        assert!(store.history(&a, None).unwrap().is_empty());
    }
    // Nothing was dropped from disk.
    let store = open(dir.path());
    assert_eq!(store.contacts().unwrap().len(), 1);
    assert_eq!(store.history(&a, None).unwrap().len(), 2);
    assert_eq!(store.outbox().unwrap().len(), 1);
    assert_eq!(store.setting("theme").unwrap(), Some(b"dark".to_vec()));
}

#[test]
fn a_record_copied_to_another_slot_does_not_open() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let (a, b) = (peer(1), peer(2));
    store.put_contact(&contact(a, "alice")).unwrap();
    store.put_contact(&contact(b, "bob")).unwrap();
    let inner = &store.inner;
    let (tag_a, tag_b) = (inner.tag(&a), inner.tag(&b));

    // Alice's contact record written over Bob's slot.
    let sealed_a = inner.get(TreeId::Contacts, &tag_a).unwrap().unwrap();
    inner
        .insert(TreeId::Contacts, &tag_b, sealed_a.to_vec())
        .unwrap();
    let err = store.contact(&b).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Record {
                what: "contact",
                source: RecordError::Rejected,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("does not open"), "{err}");
    // The listing skips it but keeps it on disk.
    assert_eq!(store.contacts().unwrap(), vec![contact(a, "alice")]);
    assert!(inner.get(TreeId::Contacts, &tag_b).unwrap().is_some());

    // A message moved to another chat, another time, or into the outbox.
    let m = msg(a, 100, 1, Direction::In, "moved");
    store.put_message(&m).unwrap();
    let key_a = keys::message_key(&tag_a, 100, &m.id);
    let sealed = inner.get(TreeId::Messages, &key_a).unwrap().unwrap();
    for key in [
        keys::message_key(&tag_b, 100, &m.id),
        keys::message_key(&tag_a, 101, &m.id),
        keys::message_key(&tag_a, 100, &id(2)),
    ] {
        inner
            .insert(TreeId::Messages, &key, sealed.to_vec())
            .unwrap();
    }
    inner
        .insert(TreeId::Outbox, &key_a, sealed.to_vec())
        .unwrap();
    assert_eq!(store.history(&a, None).unwrap(), vec![m.clone()]);
    assert!(store.history(&b, None).unwrap().is_empty());
    assert_eq!(store.message_count(&a).unwrap(), 3, "kept on disk");
    assert!(store.message(&a, 101, &m.id).is_err());
    assert!(store.outbox().unwrap().is_empty());

    // A flipped bit.
    let mut tampered = sealed.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    inner.insert(TreeId::Messages, &key_a, tampered).unwrap();
    assert!(matches!(
        store.message(&a, 100, &m.id),
        Err(StoreError::Record { .. })
    ));
    assert!(store.history(&a, None).unwrap().is_empty());
    assert!(store.set_status(&a, 100, &m.id, Status::Sent).is_err());
    assert!(!store.set_status(&a, 999, &m.id, Status::Sent).unwrap());
}

#[test]
fn an_ack_for_a_history_entry_that_does_not_open_still_clears_the_outbox() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let a = peer(1);
    let (m, i) = outgoing(a, 10, 1, "x");
    store.enqueue_outgoing(&m, &i).unwrap();
    let key = keys::message_key(&store.inner.tag(&a), 10, &m.id);
    store
        .inner
        .insert(TreeId::Messages, &key, vec![1; 64])
        .unwrap();
    assert!(store.complete_outgoing(&a, &m.id, 10).unwrap());
    assert!(store.outbox().unwrap().is_empty());
    assert_eq!(
        store.message_count(&a).unwrap(),
        1,
        "the entry stays on disk"
    );
}

#[test]
fn sled_files_hold_no_plaintext_names_or_peer_ids() {
    const MARKER: &str = "PLAINTEXT-MARKER-7f3a";
    const NAME: &str = "Marker Name";
    let dir = TempDir::new().unwrap();
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes([42; 32]).unwrap();
    let a = keypair.public().to_peer_id();
    let ed25519 = keypair.public().try_into_ed25519().unwrap().to_bytes();
    {
        let store = open(dir.path());
        let mut c = contact(a, NAME);
        c.ed25519 = ed25519;
        store.put_contact(&c).unwrap();
        for n in 0..50u8 {
            let text = format!("{MARKER} message {n}");
            store
                .store_incoming(&msg(a, u64::from(n), n, Direction::In, &text))
                .unwrap();
        }
        let (m, i) = outgoing(a, 100, 100, &format!("{MARKER} queued"));
        store.enqueue_outgoing(&m, &i).unwrap();
        store
            .put_message(&StoredMessage {
                body: Body::File {
                    file_id: [1; 16],
                    name: format!("{MARKER}.pdf"),
                    size: 5,
                },
                ..msg(a, 101, 101, Direction::Out, "")
            })
            .unwrap();
        store.put_peer(&known(a, NAME, 1)).unwrap();
        store.put_setting(MARKER, MARKER.as_bytes()).unwrap();
        store.put_outbound_session(&a, MARKER.as_bytes()).unwrap();
        store.flush().unwrap();
    }
    let bytes = all_bytes(dir.path());
    assert!(bytes.len() > 10_000, "the store wrote its data");
    for needle in [
        MARKER.as_bytes(),
        NAME.as_bytes(),
        &a.to_bytes(),
        a.to_base58().as_bytes(),
        &ed25519,
    ] {
        assert!(
            !contains(&bytes, needle),
            "found {:?} in the store's files",
            String::from_utf8_lossy(needle)
        );
    }
    // The data is there all the same.
    let store = open(dir.path());
    assert_eq!(store.history(&a, None).unwrap().len(), 52);
    assert_eq!(store.contact(&a).unwrap().unwrap().name, NAME);
}

#[test]
fn a_store_in_use_is_locked() {
    let dir = TempDir::new().unwrap();
    let _first = open(dir.path());
    let err = Store::open(dir.path(), key(1)).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
}

/// A store with 200 messages, closed; returns its directory.
fn filled_store() -> TempDir {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    for n in 0..200u8 {
        let m = msg(peer(1), u64::from(n), n, Direction::In, &"x".repeat(500));
        store.put_message(&m).unwrap();
    }
    dir
}

#[test]
fn a_replaced_or_truncated_database_is_damaged_not_silently_empty() {
    type Damage = fn(&Path);
    let cases: [(&str, Damage); 4] = [
        ("db overwritten", |dir| {
            fs::write(dir.join("db"), vec![0xff; 4096]).unwrap()
        }),
        ("db truncated to 10 bytes", |dir| {
            let bytes = fs::read(dir.join("db")).unwrap();
            fs::write(dir.join("db"), &bytes[..10]).unwrap()
        }),
        ("db and conf overwritten", |dir| {
            fs::write(dir.join("db"), vec![0xff; 4096]).unwrap();
            fs::write(dir.join("conf"), vec![0xff; 4096]).unwrap()
        }),
        ("db removed", |dir| fs::remove_file(dir.join("db")).unwrap()),
    ];
    for (case, damage) in cases {
        let dir = filled_store();
        damage(dir.path());
        let err = Store::open(dir.path(), key(1)).unwrap_err();
        assert!(matches!(err, StoreError::Damaged { .. }), "{case}: {err}");
        let line = err.to_string();
        assert!(
            line.contains(&dir.path().display().to_string()),
            "{case}: {line}"
        );
        assert!(line.contains("is damaged"), "{case}: {line}");
        assert!(line.contains("move it away"), "{case}: {line}");
    }
}

#[test]
fn damaged_bytes_inside_the_database_never_panic() {
    // sled treats the first bad checksum as the end of its log: what follows is not
    // recovered. That is sled's limit; ours is that nothing panics and what opens is intact.
    for seed in 0..12u64 {
        let dir = filled_store();
        let path = dir.path().join("db");
        let mut bytes = fs::read(&path).unwrap();
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for _ in 0..=seed % 4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = usize::try_from(x % bytes.len() as u64).unwrap();
            bytes[at] ^= 0x5a;
        }
        if seed == 0 {
            bytes.truncate(bytes.len() / 2);
        }
        fs::write(&path, &bytes).unwrap();
        match Store::open(dir.path(), key(1)) {
            Ok(store) => {
                for m in store.history(&peer(1), None).unwrap() {
                    assert_eq!(m.body, Body::Text("x".repeat(500)));
                }
            }
            Err(e) => assert!(e.to_string().contains("message store"), "{e}"),
        }
    }
}

#[test]
fn damage_inside_the_log_is_found_not_opened_as_a_shorter_history() {
    let dir = filled_store();
    let db = dir.path().join("db");
    let mut bytes = fs::read(&db).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0x5a;
    }
    fs::write(&db, &bytes).unwrap();
    let err = Store::open(dir.path(), key(1)).unwrap_err();
    assert!(matches!(err, StoreError::LogDamaged { .. }), "{err}");
    let again = Store::open(dir.path(), key(1)).unwrap_err();
    assert!(matches!(again, StoreError::LogDamaged { .. }), "{again}");
    let line = err.to_string();
    assert!(line.contains("restore it from a backup"), "{line}");
    assert!(line.contains(MARKER_FILE), "{line}");
    // sled discards what follows the damage as it opens (it rewrites the rest of that log
    // segment): that part is gone whether the store is then refused or not. Refusing keeps the
    // node from carrying on as if the shorter history were all there was.

    // Without the marker, the store opens with what sled still reads: the oldest messages,
    // intact.
    fs::remove_file(dir.path().join(MARKER_FILE)).unwrap();
    let store = Store::open(dir.path(), key(1)).unwrap();
    let left = store.history(&peer(1), None).unwrap();
    assert!(!left.is_empty() && left.len() < 200, "{}", left.len());
    for (n, m) in left.iter().enumerate() {
        assert_eq!(m.timestamp_ms, n as u64);
        assert_eq!(m.body, Body::Text("x".repeat(500)));
    }
    drop(store);
    // And from then on it opens as it is.
    let store = Store::open(dir.path(), key(1)).unwrap();
    assert_eq!(store.history(&peer(1), None).unwrap().len(), left.len());
}

#[test]
fn a_store_left_by_a_killed_node_is_not_called_damaged() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    store
        .put_message(&msg(peer(1), 1, 1, Direction::In, "before the kill"))
        .unwrap();
    store.flush().unwrap();
    // No clean close: the process "dies" with the store open.
    let marker = fs::read(dir.path().join(MARKER_FILE)).unwrap();
    let copy = TempDir::new().unwrap();
    for name in ["conf", "db"] {
        fs::copy(dir.path().join(name), copy.path().join(name)).unwrap();
    }
    fs::write(copy.path().join(MARKER_FILE), marker).unwrap();
    let reopened = Store::open(copy.path(), key(1)).unwrap();
    assert_eq!(reopened.history(&peer(1), None).unwrap().len(), 1);
}

#[test]
fn a_newer_format_is_refused() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(dir.path());
        set_format(&store, FORMAT_VERSION + 1);
    }
    let err = Store::open(dir.path(), key(1)).unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedVersion { version, .. } if version == FORMAT_VERSION + 1),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade Encrypto"), "{err}");
}

#[test]
fn settings_sessions_and_peers_can_be_removed() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let (a, b) = (peer(1), peer(2));
    store.put_setting("s", b"1").unwrap();
    assert!(store.remove_setting("s").unwrap());
    assert!(!store.remove_setting("s").unwrap());
    assert_eq!(store.setting("s").unwrap(), None);

    store.put_outbound_session(&a, b"x").unwrap();
    assert!(store.remove_outbound_session(&a).unwrap());
    assert_eq!(store.outbound_session(&a).unwrap(), None);

    store
        .put_inbound_key(&a, &KeyId([1; 16]), &[1; 32])
        .unwrap();
    store
        .put_inbound_key(&a, &KeyId([2; 16]), &[2; 32])
        .unwrap();
    assert!(store.remove_inbound_key(&a, &KeyId([1; 16])).unwrap());
    let left: Vec<_> = store
        .inbound_keys(&a)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, [KeyId([2; 16])]);

    store.put_peer(&known(a, "old", 1)).unwrap();
    store.put_peer(&known(b, "new", 2)).unwrap();
    let names: Vec<_> = store.peers().unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(names, [Some("new".to_owned()), Some("old".to_owned())]);
    assert!(store.remove_peer(&a).unwrap());
    assert_eq!(store.peers().unwrap().len(), 1);

    store.put_contact(&contact(a, "zed")).unwrap();
    store.put_contact(&contact(b, "Amy")).unwrap();
    let names: Vec<_> = store
        .contacts()
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["Amy", "zed"]);
    assert!(store.remove_contact(&a).unwrap());
    assert!(!store.remove_contact(&a).unwrap());

    let err = store
        .put_setting("big", &vec![0; MAX_RECORD_LEN + 1])
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooLarge {
                what: "setting",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn unflushed_writes_act_at_once_and_persist_after_a_flush() {
    let tmp = TempDir::new().unwrap();
    let (a, b) = (peer(1), peer(2));
    {
        let store = open(tmp.path());
        store
            .write_outgoing_many(&[outgoing(a, 10, 1, "one"), outgoing(a, 11, 2, "two")])
            .unwrap();
        assert_eq!(store.outbox_for(&a).unwrap().len(), 2);
        let m = msg(b, 20, 3, Direction::In, "in");
        assert_eq!(
            store.write_incoming_many(std::slice::from_ref(&m)).unwrap(),
            vec![true]
        );
        // A repeat is caught before any flush.
        assert_eq!(store.write_incoming_many(&[m]).unwrap(), vec![false]);
        assert!(store.is_seen(&b, &id(3)).unwrap());
        let acked = Acknowledged {
            id: id(1),
            created_ms: 10,
            envelope: Some(b"sealed one".to_vec()),
        };
        assert_eq!(store.write_completed_many(&a, &[acked]).unwrap(), 1);
        store.flush().unwrap();
    }
    let store = open(tmp.path());
    let outbox = store.outbox_for(&a).unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].id, id(2));
    let history = store.history(&a, None).unwrap();
    assert_eq!(texts(&history), ["one", "two"]);
    assert_eq!(history[0].status, Status::Delivered);
    // The envelope the peer acknowledged is recorded with the delivery; the other entry
    // keeps what it had.
    assert_eq!(history[0].envelope.as_deref(), Some(&b"sealed one"[..]));
    assert_eq!(history[1].envelope, Some(vec![2; 40]));
    assert_eq!(texts(&store.history(&b, None).unwrap()), ["in"]);
    assert!(store.is_seen(&b, &id(3)).unwrap());
}

#[test]
fn flush_async_completes() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    store
        .put_message(&msg(peer(1), 1, 1, Direction::In, "x"))
        .unwrap();
    futures::executor::block_on(store.flush_async()).unwrap();
}

#[test]
fn debug_output_carries_no_message_text() {
    let (m, i) = outgoing(peer(1), 1, 1, "secret words");
    assert!(!format!("{m:?}").contains("secret"));
    assert!(!format!("{i:?}").contains("secret"));
    let file = Body::File {
        file_id: [0; 16],
        name: "secret.pdf".into(),
        size: 1,
    };
    assert!(!format!("{file:?}").contains("secret"));
}

#[test]
fn clearing_chunk_marks_takes_every_batch_and_only_that_transfer() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let file = encrypto_crypto::file::FileId::from_bytes([9; 16]);
    let other = encrypto_crypto::file::FileId::from_bytes([8; 16]);
    // More marks than one clearing batch holds, and not a multiple of it.
    let marks: Vec<u64> = (0..(3 * 256 + 17)).collect();
    store
        .mark_chunks(&file, TransferRole::Receive, &peer(1), &marks)
        .unwrap();
    store
        .mark_chunks(&file, TransferRole::Relay, &peer(1), &[0, 5])
        .unwrap();
    store
        .mark_chunks(&other, TransferRole::Receive, &peer(1), &[1, 2])
        .unwrap();
    store
        .mark_chunks(&file, TransferRole::Receive, &peer(2), &[3])
        .unwrap();
    assert_eq!(
        store
            .chunks_held(&file, TransferRole::Receive, &peer(1))
            .unwrap(),
        marks
    );

    store
        .clear_chunks(&file, TransferRole::Receive, &peer(1))
        .unwrap();
    let held = |f, role, p| store.chunks_held(f, role, &p).unwrap();
    assert!(held(&file, TransferRole::Receive, peer(1)).is_empty());
    assert_eq!(held(&file, TransferRole::Relay, peer(1)), vec![0, 5]);
    assert_eq!(held(&other, TransferRole::Receive, peer(1)), vec![1, 2]);
    assert_eq!(held(&file, TransferRole::Receive, peer(2)), vec![3]);
}

// ---- history pages ----------------------------------------------------------------------

fn nth_id(n: u32) -> MessageId {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    MessageId(id)
}

/// An outgoing message numbered `n` (its id and text), with its outbox item.
fn numbered(peer: PeerId, ts: u64, n: u32) -> (StoredMessage, OutboxItem) {
    let (mut m, mut item) = outgoing(peer, ts, 0, &format!("m{n}"));
    m.id = nth_id(n);
    m.envelope = None;
    item.id = m.id;
    (m, item)
}

/// The key lengths of the `messages` tree, in key order: which entries are pages.
fn entry_kinds(store: &Store) -> Vec<usize> {
    key_lengths(store, TreeId::Messages)
}

fn key_lengths(store: &Store, tree: TreeId) -> Vec<usize> {
    store
        .inner
        .tree(tree)
        .iter()
        .keys()
        .map(|k| k.unwrap().len())
        .collect()
}

const ONE: usize = keys::MESSAGE_KEY_LEN;
const PAGE: usize = keys::PAGE_KEY_LEN;

#[test]
fn a_group_to_one_chat_is_one_page_that_reads_like_single_messages() {
    let dir = TempDir::new().unwrap();
    let (a, b) = (peer(1), peer(2));
    let to_a: Vec<_> = (1..=10)
        .map(|n| numbered(a, 1000 + u64::from(n), n))
        .collect();
    let to_b: Vec<_> = (11..=13).map(|n| numbered(b, 1000, n)).collect();
    let sent: Vec<StoredMessage> = to_a.iter().map(|(m, _)| m.clone()).collect();
    let tried = OutboxItem {
        attempts: 3,
        ..to_a[6].1.clone()
    };
    {
        let store = open(dir.path());
        // One group, the two chats interleaved.
        let mut group = to_a.clone();
        group.splice(3..3, to_b.clone());
        store.enqueue_outgoing_many(&group).unwrap();
        assert_eq!(entry_kinds(&store), [PAGE, PAGE]);
        assert_eq!(key_lengths(&store, TreeId::Outbox), [PAGE, PAGE]);
        let items: Vec<OutboxItem> = to_a.iter().map(|(_, i)| i.clone()).collect();
        assert_eq!(store.outbox_for(&a).unwrap(), items);
        // An attempt counted on an item in a page.
        assert!(store.update_outbox(&tried).unwrap());
        assert_eq!(store.outbox_for(&a).unwrap()[6], tried);

        assert_eq!(store.history(&a, None).unwrap(), sent);
        assert_eq!(store.history(&a, Some(3)).unwrap(), sent[7..]);
        assert_eq!(store.history_before(&a, 1005, 2).unwrap(), sent[2..4]);
        assert_eq!(store.message_count(&a).unwrap(), 10);
        assert_eq!(store.message_count(&b).unwrap(), 3);
        assert_eq!(
            store.message(&a, 1005, &nth_id(5)).unwrap().as_ref(),
            Some(&sent[4])
        );
        assert_eq!(store.message(&a, 1006, &nth_id(5)).unwrap(), None);

        // Changing one message rewrites it in its page.
        assert!(
            store
                .set_status(&a, 1005, &nth_id(5), Status::Sent)
                .unwrap()
        );
        let mut edited = sent[5].clone();
        edited.body = Body::Text("edited".into());
        store.put_message(&edited).unwrap();
        assert_eq!(entry_kinds(&store), [PAGE, PAGE]);
        let history = store.history(&a, None).unwrap();
        assert_eq!(history[4].status, Status::Sent);
        assert_eq!(history[5], edited);
        assert_eq!(history.len(), 10);

        // Deliveries of part of the page, with their envelopes.
        let acked: Vec<Acknowledged> = (1..=4)
            .map(|n| Acknowledged {
                id: nth_id(n),
                created_ms: 1000 + u64::from(n),
                envelope: Some(vec![n as u8; 300]),
            })
            .collect();
        assert_eq!(store.write_completed_many(&a, &acked).unwrap(), 4);
        assert_eq!(store.write_completed_many(&a, &acked).unwrap(), 0);
        store.flush().unwrap();
    }
    let store = open(dir.path());
    let history = store.history(&a, None).unwrap();
    for (n, m) in (1..=10u8).zip(&history) {
        if n <= 4 {
            assert_eq!(m.status, Status::Delivered);
            assert_eq!(m.envelope, Some(vec![n; 300]));
        } else {
            assert_ne!(m.status, Status::Delivered);
            assert_eq!(m.envelope, None);
        }
    }
    let left = store.outbox_for(&a).unwrap();
    assert_eq!(
        left.iter().map(|i| i.id).collect::<Vec<_>>(),
        (5..=10).map(nth_id).collect::<Vec<_>>()
    );
    assert_eq!(left[2].attempts, 3);
    assert!(store.has_outbox_for(&a).unwrap());
    // The rest, acknowledged: the page leaves the outbox with its last item.
    let rest: Vec<(MessageId, u64)> = left.iter().map(|i| (i.id, i.created_ms)).collect();
    assert_eq!(store.complete_outgoing_many(&a, &rest).unwrap(), 6);
    assert!(!store.has_outbox_for(&a).unwrap());
    assert_eq!(key_lengths(&store, TreeId::Outbox), [PAGE]);
    assert!(!store.update_outbox(&tried).unwrap());
    assert!(
        store
            .history(&a, None)
            .unwrap()
            .iter()
            .all(|m| m.status == Status::Delivered)
    );
    assert_eq!(store.delete_chat(&a).unwrap(), 10);
    assert_eq!(store.history(&b, None).unwrap().len(), 3);
    assert_eq!(entry_kinds(&store), [PAGE]);
}

#[test]
fn pages_are_cut_by_time_span_count_and_size() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let a = peer(1);
    // 0, 50 and 100 are within a page's span of the first; 101 is not; 250 is alone.
    let spread: Vec<_> = [0, 50, 100, 101, 250]
        .iter()
        .zip(1..)
        .map(|(&ts, n)| numbered(a, ts, n))
        .collect();
    store.enqueue_outgoing_many(&spread).unwrap();
    assert_eq!(entry_kinds(&store), [PAGE, ONE, ONE]);
    assert_eq!(store.message_count(&a).unwrap(), 5);
    assert_eq!(store.delete_chat(&a).unwrap(), 5);

    // More than a page holds, all in one millisecond.
    let many: Vec<_> = (0..=history::PAGE_MAX_MESSAGES as u32)
        .map(|n| numbered(a, 7, n))
        .collect();
    store.enqueue_outgoing_many(&many).unwrap();
    assert_eq!(entry_kinds(&store), [PAGE, ONE]);
    assert_eq!(store.history(&a, None).unwrap().len(), many.len());
    assert_eq!(store.delete_chat(&a).unwrap(), many.len());

    // Large texts: three to a page, which still takes the largest envelopes on delivery.
    let text = "x".repeat(crate::MAX_TEXT_LEN / 2);
    let big: Vec<_> = (1..=4)
        .map(|n| {
            let (mut m, mut item) = numbered(a, 9, n);
            m.body = Body::Text(text.clone());
            item.kind = OutboxKind::Text(text.clone());
            (m, item)
        })
        .collect();
    store.enqueue_outgoing_many(&big).unwrap();
    assert_eq!(entry_kinds(&store), [PAGE, ONE]);
    let acked: Vec<Acknowledged> = (1..=4)
        .map(|n| Acknowledged {
            id: nth_id(n),
            created_ms: 9,
            envelope: Some(vec![1; encrypto_crypto::envelope::MAX_ENVELOPE_LEN]),
        })
        .collect();
    assert_eq!(store.write_completed_many(&a, &acked).unwrap(), 4);
    let history = store.history(&a, None).unwrap();
    assert!(history.iter().all(|m| m.status == Status::Delivered
        && m.envelope.as_ref().map(Vec::len) == Some(encrypto_crypto::envelope::MAX_ENVELOPE_LEN)));
}

#[test]
fn many_file_offers_in_one_group_are_paged_by_their_payloads() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let a = peer(1);
    // Offers that carry a manifest inline: the outbox item and the envelope are far larger
    // than the history's body (a file name). Twenty in one group once filled a page past
    // what a record may hold, and the whole group failed.
    let payload = vec![7u8; 33 * 1024];
    let offers: Vec<_> = (1..=20)
        .map(|n| {
            let (mut m, mut item) = numbered(a, 50, n);
            m.body = Body::File {
                file_id: [n as u8; 16],
                name: format!("file {n}.bin"),
                size: 1 << 30,
            };
            item.kind = OutboxKind::Payload(payload.clone());
            (m, item)
        })
        .collect();
    store.enqueue_outgoing_many(&offers).unwrap();
    let pages = key_lengths(&store, TreeId::Outbox);
    assert!(
        pages.len() > 1,
        "one page for 20 offers of 33 KiB: {pages:?}"
    );
    assert_eq!(store.outbox_for(&a).unwrap().len(), 20);
    // Delivered with envelopes as large as the payloads: every envelope is kept.
    let acked: Vec<Acknowledged> = (1..=20)
        .map(|n| Acknowledged {
            id: nth_id(n),
            created_ms: 50,
            envelope: Some(vec![n as u8; payload.len() + 600]),
        })
        .collect();
    assert_eq!(store.write_completed_many(&a, &acked).unwrap(), 20);
    let history = store.history(&a, None).unwrap();
    assert_eq!(history.len(), 20);
    assert!(history.iter().all(|m| m.status == Status::Delivered
        && m.envelope.as_ref().map(Vec::len) == Some(payload.len() + 600)));
    assert!(store.outbox().unwrap().is_empty());
}

#[test]
fn incoming_repeats_are_left_out_of_the_page() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let a = peer(1);
    let m: Vec<StoredMessage> = (1..=5)
        .map(|n| {
            let mut m = msg(a, 500 + u64::from(n), 0, Direction::In, &format!("m{n}"));
            m.id = nth_id(n);
            m
        })
        .collect();
    let stored = store
        .store_incoming_many(&[m[0].clone(), m[1].clone(), m[2].clone()])
        .unwrap();
    assert_eq!(stored, [true, true, true]);
    let stored = store
        .store_incoming_many(&[m[1].clone(), m[3].clone(), m[3].clone(), m[4].clone()])
        .unwrap();
    assert_eq!(stored, [false, true, false, true]);
    assert_eq!(entry_kinds(&store), [PAGE, PAGE]);
    assert_eq!(store.history(&a, None).unwrap(), m);
    assert_eq!(store.message_count(&a).unwrap(), 5);
}

/// A small deterministic generator (xorshift), so that a failure names its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn history_of_pages_and_single_messages_reads_as_one_sorted_list() {
    let a = peer(1);
    for seed in 1..=6u64 {
        let dir = TempDir::new().unwrap();
        let store = open(dir.path());
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut model: Vec<StoredMessage> = Vec::new();
        let mut n = 0u32;
        // Groups sent, groups received with the sender's (older, overlapping) times, and
        // single messages, all in the same stretch of time.
        for _ in 0..40 {
            let base = rng.below(3_000);
            let size = 1 + rng.below(12);
            let mut group = Vec::new();
            for _ in 0..size {
                n += 1;
                let (mut m, item) = numbered(a, base + rng.below(150), n);
                if rng.below(3) == 0 {
                    m.direction = Direction::In;
                    m.status = Status::Received;
                }
                group.push((m, item));
            }
            match rng.below(3) {
                0 => {
                    let incoming: Vec<StoredMessage> = group
                        .iter()
                        .map(|(m, _)| StoredMessage {
                            direction: Direction::In,
                            status: Status::Received,
                            ..m.clone()
                        })
                        .collect();
                    store.store_incoming_many(&incoming).unwrap();
                    model.extend(incoming);
                }
                1 => {
                    let outgoing: Vec<_> = group
                        .into_iter()
                        .map(|(m, i)| {
                            (
                                StoredMessage {
                                    direction: Direction::Out,
                                    status: Status::Queued,
                                    ..m
                                },
                                i,
                            )
                        })
                        .collect();
                    store.enqueue_outgoing_many(&outgoing).unwrap();
                    model.extend(outgoing.into_iter().map(|(m, _)| m));
                }
                _ => {
                    for (m, _) in group {
                        store.put_message(&m).unwrap();
                        model.push(m);
                    }
                }
            }
        }
        model.sort_by_key(|m| (m.timestamp_ms, m.id.0));
        assert!(
            entry_kinds(&store).contains(&PAGE),
            "seed {seed}: no pages made"
        );
        assert_eq!(store.history(&a, None).unwrap(), model, "seed {seed}");
        assert_eq!(store.message_count(&a).unwrap(), model.len(), "seed {seed}");
        for limit in [0, 1, 2, 7, 30, 100, model.len(), model.len() + 5] {
            let newest = &model[model.len().saturating_sub(limit)..];
            assert_eq!(
                store.history(&a, Some(limit)).unwrap(),
                newest,
                "seed {seed}, newest {limit}"
            );
        }
        for _ in 0..30 {
            let before = rng.below(3_300);
            let limit = rng.below(40) as usize;
            let older: Vec<_> = model
                .iter()
                .filter(|m| m.timestamp_ms < before)
                .cloned()
                .collect();
            let expected = &older[older.len().saturating_sub(limit)..];
            assert_eq!(
                store.history_before(&a, before, limit).unwrap(),
                expected,
                "seed {seed}, {limit} before {before}"
            );
        }
        for m in model.iter().step_by(7) {
            assert_eq!(
                store.message(&a, m.timestamp_ms, &m.id).unwrap().as_ref(),
                Some(m),
                "seed {seed}"
            );
        }
    }
}

#[test]
fn a_format_1_store_opens_and_is_marked_with_this_format() {
    let dir = TempDir::new().unwrap();
    let a = peer(1);
    let m = msg(a, 10, 1, Direction::In, "from format 1");
    {
        let store = open(dir.path());
        // Format 1 filed every message alone, as `put_message` does for a new one.
        store.put_message(&m).unwrap();
        set_format(&store, 1);
    }
    let store = open(dir.path());
    assert_eq!(store.history(&a, None).unwrap(), vec![m]);
    let format = store.inner.get(TreeId::Meta, FORMAT_KEY).unwrap().unwrap();
    assert_eq!(format[..], FORMAT_VERSION.to_be_bytes());
    assert_eq!(FORMAT_VERSION, 4);
}

#[test]
fn an_older_stores_seen_ids_are_still_read_and_pruned() {
    let dir = TempDir::new().unwrap();
    let a = peer(1);
    {
        let store = open(dir.path());
        // Formats 1 and 2 kept one record per id in the `seen` tree.
        for (n, ts) in [(1, 100), (2, 900)] {
            let key = store.inner.subkeys.seen_key(&a, &id(n));
            let sealed = store
                .inner
                .seal_value(TreeId::Seen, &key, &types::SeenRecord { timestamp_ms: ts })
                .unwrap();
            store.inner.insert(TreeId::Seen, &key, sealed).unwrap();
        }
        set_format(&store, 2);
    }
    let store = open(dir.path());
    assert!(store.is_seen(&a, &id(1)).unwrap());
    assert!(
        !store
            .store_incoming(&msg(a, 100, 1, Direction::In, "repeat"))
            .unwrap()
    );
    assert!(!store.mark_seen(&a, &id(2), 900).unwrap());
    assert!(store.history(&a, None).unwrap().is_empty());
    assert!(store.mark_seen(&a, &id(3), 950).unwrap());
    // Pruning forgets the old tree's old ids, and the index's.
    assert_eq!(store.prune_seen(500).unwrap(), 1);
    assert!(!store.is_seen(&a, &id(1)).unwrap());
    assert!(store.is_seen(&a, &id(2)).unwrap());
    assert!(store.is_seen(&a, &id(3)).unwrap());
    assert_eq!(store.prune_seen(1000).unwrap(), 2);
    assert!(store.inner.tree(TreeId::Seen).is_empty());
    assert!(!store.is_seen(&a, &id(2)).unwrap());
    assert!(!store.is_seen(&a, &id(3)).unwrap());
}

/// Seen ids written in groups and alone, across merges of the log, chunk splits, prunes and
/// reopens, with small limits, against a map of what was accepted.
#[test]
fn seen_ids_through_merges_splits_prunes_and_reopens_match_a_model() {
    let senders = [peer(1), peer(2)];
    let mut chunks_seen = 0;
    for seed in 1..=4u64 {
        let dir = TempDir::new().unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut store = open(dir.path());
        store.set_seen_limits(40, 4);
        // (sender, id) -> the time it was first accepted with.
        let mut model: HashMap<(usize, u32), u64> = HashMap::new();
        let mut filed = [0usize; 2];
        let pick = |rng: &mut Rng| (rng.below(2) as usize, rng.below(300) as u32);
        for step in 0..150 {
            match rng.below(10) {
                0..=5 => {
                    let mut group = Vec::new();
                    let mut expected = Vec::new();
                    let mut in_group = HashSet::new();
                    for _ in 0..1 + rng.below(12) {
                        let (s, n) = pick(&mut rng);
                        let ts = 1_000 + rng.below(1_000);
                        let (mut m, _) = numbered(senders[s], ts, n);
                        m.direction = Direction::In;
                        m.status = Status::Received;
                        let new = !model.contains_key(&(s, n)) && in_group.insert((s, n));
                        expected.push(new);
                        group.push((s, n, m));
                    }
                    let messages: Vec<StoredMessage> =
                        group.iter().map(|(_, _, m)| m.clone()).collect();
                    let stored = store.store_incoming_many(&messages).unwrap();
                    assert_eq!(stored, expected, "seed {seed} step {step}");
                    for ((s, n, m), new) in group.iter().zip(stored) {
                        if new {
                            model.insert((*s, *n), m.timestamp_ms);
                            filed[*s] += 1;
                        }
                    }
                }
                6 => {
                    let (s, n) = pick(&mut rng);
                    let ts = 1_000 + rng.below(1_000);
                    let new = !model.contains_key(&(s, n));
                    assert_eq!(
                        store.mark_seen(&senders[s], &nth_id(n), ts).unwrap(),
                        new,
                        "seed {seed} step {step}"
                    );
                    model.entry((s, n)).or_insert(ts);
                }
                7 => {
                    let cutoff = 1_000 + rng.below(400);
                    let old = model.values().filter(|&&ts| ts < cutoff).count();
                    assert_eq!(store.prune_seen(cutoff).unwrap(), old, "seed {seed}");
                    model.retain(|_, ts| *ts >= cutoff);
                }
                8 => {
                    drop(store);
                    store = open(dir.path());
                    store.set_seen_limits(40, 4);
                }
                _ => {
                    for _ in 0..20 {
                        let (s, n) = pick(&mut rng);
                        assert_eq!(
                            store.is_seen(&senders[s], &nth_id(n)).unwrap(),
                            model.contains_key(&(s, n)),
                            "seed {seed} step {step}"
                        );
                    }
                }
            }
        }
        for s in 0..2 {
            for n in 0..300 {
                assert_eq!(
                    store.is_seen(&senders[s], &nth_id(n)).unwrap(),
                    model.contains_key(&(s, n)),
                    "seed {seed}: sender {s}, id {n}"
                );
            }
            assert_eq!(store.message_count(&senders[s]).unwrap(), filed[s]);
        }
        chunks_seen = chunks_seen.max(store.seen_records().0);
    }
    assert!(chunks_seen > 10, "the log was merged and chunks split");
}

/// Whether the journal holds a write (one cut short and not yet undone).
fn journal_is_empty(store: &Store) -> bool {
    store.inner.tree(TreeId::Journal).is_empty()
}

#[test]
fn a_send_cut_short_at_any_step_is_undone_at_the_next_open() {
    let b = peer(2);
    let kept = outgoing(b, 5, 9, "sent before");
    // History entry, outbox item: a cut after 0, 1 or 2 of them.
    for applied in 0..=2 {
        let dir = TempDir::new().unwrap();
        let (m, item) = outgoing(b, 10, 1, "one");
        {
            let store = open(dir.path());
            store.enqueue_outgoing(&kept.0, &kept.1).unwrap();
            store.inner.writing().cut_after = Some(applied);
            store
                .write_outgoing_many(&[(m.clone(), item.clone())])
                .unwrap_err();
            assert!(!journal_is_empty(&store));
        }
        let store = open(dir.path());
        assert!(journal_is_empty(&store), "cut after {applied}");
        assert_eq!(
            store.history(&b, None).unwrap(),
            vec![kept.0.clone()],
            "cut after {applied}"
        );
        assert_eq!(
            store.outbox_for(&b).unwrap(),
            vec![kept.1.clone()],
            "cut after {applied}"
        );
        // The same send again goes through whole.
        store.enqueue_outgoing(&m, &item).unwrap();
        assert_eq!(store.history(&b, None).unwrap().len(), 2);
        assert_eq!(store.outbox_for(&b).unwrap().len(), 2);
    }
}

#[test]
fn a_receipt_cut_short_is_undone_and_the_resent_message_is_filed_once() {
    let a = peer(1);
    // History entry, seen id.
    for applied in 0..=2 {
        let dir = TempDir::new().unwrap();
        let m = msg(a, 10, 1, Direction::In, "hello");
        {
            let store = open(dir.path());
            store.inner.writing().cut_after = Some(applied);
            store
                .write_incoming_many(std::slice::from_ref(&m))
                .unwrap_err();
        }
        let store = open(dir.path());
        assert!(journal_is_empty(&store));
        assert!(!store.is_seen(&a, &m.id).unwrap(), "cut after {applied}");
        assert!(
            store.history(&a, None).unwrap().is_empty(),
            "cut after {applied}"
        );
        // The sender, never acknowledged, sends it again.
        assert_eq!(
            store.store_incoming_many(std::slice::from_ref(&m)).unwrap(),
            vec![true]
        );
        assert_eq!(
            store.store_incoming_many(std::slice::from_ref(&m)).unwrap(),
            vec![false]
        );
        assert_eq!(
            store.history(&a, None).unwrap(),
            vec![m],
            "cut after {applied}"
        );
    }
}

#[test]
fn a_delivery_record_cut_short_leaves_nothing_a_resent_ack_does_not_complete() {
    let b = peer(2);
    let sent = [outgoing(b, 10, 1, "one"), outgoing(b, 11, 2, "two")];
    let acked: Vec<Acknowledged> = sent
        .iter()
        .map(|(m, _)| Acknowledged {
            id: m.id,
            created_ms: m.timestamp_ms,
            envelope: Some(vec![5; 30]),
        })
        .collect();
    // The history page, then the outbox page.
    for applied in 0..=2 {
        let dir = TempDir::new().unwrap();
        {
            let store = open(dir.path());
            store.write_outgoing_many(&sent).unwrap();
            store.inner.writing().cut_after = Some(applied);
            store.write_completed_many(&b, &acked).unwrap_err();
        }
        let store = open(dir.path());
        let left = store.outbox_for(&b).unwrap();
        // Never an item gone from the outbox whose message is not marked delivered.
        for m in store.history(&b, None).unwrap() {
            let queued = left.iter().any(|i| i.id == m.id);
            assert!(
                queued || m.status == Status::Delivered,
                "cut after {applied}: {m:?}"
            );
        }
        assert_eq!(left.is_empty(), applied == 2, "cut after {applied}");
        // The messages left are sent again and acknowledged again.
        store.write_completed_many(&b, &acked).unwrap();
        assert!(store.outbox_for(&b).unwrap().is_empty());
        for m in store.history(&b, None).unwrap() {
            assert_eq!(m.status, Status::Delivered, "cut after {applied}");
            assert_eq!(m.envelope, Some(vec![5; 30]));
        }
    }
}

#[test]
fn a_journal_record_that_does_not_open_is_damage() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(dir.path());
        store.inner.writing().cut_after = Some(0);
        store
            .write_outgoing_many(&[
                outgoing(peer(2), 10, 1, "one"),
                outgoing(peer(3), 10, 2, "two"),
            ])
            .unwrap_err();
        let journal = store.inner.tree(TreeId::Journal);
        let (key, sealed) = journal.first().unwrap().unwrap();
        let mut sealed = sealed.to_vec();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        journal.insert(key, sealed).unwrap();
    }
    let err = Store::open(dir.path(), key(1)).err().unwrap();
    assert!(
        matches!(&err, StoreError::Damaged { reason, .. } if reason.contains("interrupted write")),
        "{err}"
    );
}
