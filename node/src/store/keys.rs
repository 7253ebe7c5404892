//! Record keys: which bytes each record is stored under, and the keyed hashes that keep those
//! bytes from naming anyone.

use encrypto_crypto::storage::StorageKey;
use encrypto_crypto::{KeyId, MessageId, PeerId};
use zeroize::Zeroizing;

/// Length of a chat tag.
pub(super) const TAG_LEN: usize = 16;
/// Length of a history or outbox key: tag, timestamp, message id.
pub(super) const MESSAGE_KEY_LEN: usize = TAG_LEN + 8 + 16;

/// Keyed hash of a peer id: the prefix of every per-chat record. Stable for one storage key,
/// unlinkable to the peer without it.
pub(super) type ChatTag = [u8; TAG_LEN];

/// The trees of the store. Their names are on disk in clear; they say what kind of records a
/// tree holds, nothing about whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum TreeId {
    Meta,
    Contacts,
    Messages,
    Outbox,
    Seen,
    SeenIndex,
    OutboundSessions,
    InboundKeys,
    Peers,
    Settings,
    Transfers,
    Manifests,
    Chunks,
    Journal,
}

impl TreeId {
    pub(super) const ALL: [TreeId; 14] = [
        TreeId::Meta,
        TreeId::Contacts,
        TreeId::Messages,
        TreeId::Outbox,
        TreeId::Seen,
        TreeId::SeenIndex,
        TreeId::OutboundSessions,
        TreeId::InboundKeys,
        TreeId::Peers,
        TreeId::Settings,
        TreeId::Transfers,
        TreeId::Manifests,
        TreeId::Chunks,
        TreeId::Journal,
    ];

    /// The sled tree name, also the first part of every sealing context.
    pub(super) fn name(self) -> &'static str {
        match self {
            TreeId::Meta => "meta",
            TreeId::Contacts => "contacts",
            TreeId::Messages => "messages",
            TreeId::Outbox => "outbox",
            TreeId::Seen => "seen",
            TreeId::SeenIndex => "seen_index",
            TreeId::OutboundSessions => "outbound_sessions",
            TreeId::InboundKeys => "inbound_keys",
            TreeId::Peers => "peers",
            TreeId::Settings => "settings",
            TreeId::Transfers => "transfers",
            TreeId::Manifests => "manifests",
            TreeId::Chunks => "chunks",
            TreeId::Journal => "journal",
        }
    }

    /// One record of the tree, for error messages.
    pub(super) fn record(self) -> &'static str {
        match self {
            TreeId::Meta => "store check",
            TreeId::Contacts => "contact",
            TreeId::Messages => "message",
            TreeId::Outbox => "outbox item",
            TreeId::Seen => "seen message id",
            TreeId::SeenIndex => "seen message ids",
            TreeId::OutboundSessions => "outbound session",
            TreeId::InboundKeys => "inbound session key",
            TreeId::Peers => "known peer",
            TreeId::Settings => "setting",
            TreeId::Transfers => "file transfer",
            TreeId::Manifests => "file manifest",
            TreeId::Chunks => "chunk mark",
            TreeId::Journal => "interrupted write",
        }
    }

    /// Largest plaintext of one record of this tree.
    pub(super) fn max_record(self) -> usize {
        match self {
            TreeId::Manifests => encrypto_crypto::file::MAX_MANIFEST_LEN,
            // It holds what one write's records held before it, in memory already.
            TreeId::Journal => super::journal::MAX_JOURNAL_RECORD,
            _ => super::MAX_RECORD_LEN,
        }
    }
}

/// The associated data a record is sealed with: tree name, a zero byte, the record's key.
/// Tree names contain no zero byte, so no two slots share a context.
pub(super) fn context(tree: TreeId, key: &[u8]) -> Vec<u8> {
    let name = tree.name().as_bytes();
    let mut c = Vec::with_capacity(name.len() + 1 + key.len());
    c.extend_from_slice(name);
    c.push(0);
    c.extend_from_slice(key);
    c
}

/// `tag || timestamp_ms (big-endian) || id`: sorts per chat, then by time.
pub(super) fn message_key(
    tag: &ChatTag,
    timestamp_ms: u64,
    id: &MessageId,
) -> [u8; MESSAGE_KEY_LEN] {
    let mut k = [0u8; MESSAGE_KEY_LEN];
    k[..TAG_LEN].copy_from_slice(tag);
    k[TAG_LEN..TAG_LEN + 8].copy_from_slice(&timestamp_ms.to_be_bytes());
    k[TAG_LEN + 8..].copy_from_slice(&id.0);
    k
}

/// Length of a history page's key: tag, first timestamp, first id, last timestamp, count.
pub(super) const PAGE_KEY_LEN: usize = MESSAGE_KEY_LEN + 8 + 2;

/// What a key of the `messages` tree files: one message, or a page of several (see
/// `store::history`). Its length tells which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// One message, filed at its own time and id.
    One { timestamp_ms: u64, id: [u8; 16] },
    /// A page of `count` messages filed from `first_ms` to `last_ms` (inclusive).
    Page {
        first_ms: u64,
        last_ms: u64,
        count: u16,
    },
}

impl Slot {
    /// The earliest time a message of this entry is filed at (the key sorts by it).
    pub(super) fn first_ms(self) -> u64 {
        match self {
            Slot::One { timestamp_ms, .. } => timestamp_ms,
            Slot::Page { first_ms, .. } => first_ms,
        }
    }

    /// The latest time a message of this entry is filed at.
    pub(super) fn last_ms(self) -> u64 {
        match self {
            Slot::One { timestamp_ms, .. } => timestamp_ms,
            Slot::Page { last_ms, .. } => last_ms,
        }
    }

    /// How many messages the entry holds.
    pub(super) fn count(self) -> usize {
        match self {
            Slot::One { .. } => 1,
            Slot::Page { count, .. } => usize::from(count),
        }
    }
}

/// `tag || first_ms || first id || last_ms || count` (integers big-endian): a page of a chat's
/// messages, sorted with single messages by its first time.
pub(super) fn page_key(
    tag: &ChatTag,
    first_ms: u64,
    first_id: &MessageId,
    last_ms: u64,
    count: u16,
) -> [u8; PAGE_KEY_LEN] {
    let mut k = [0u8; PAGE_KEY_LEN];
    k[..MESSAGE_KEY_LEN].copy_from_slice(&message_key(tag, first_ms, first_id));
    k[MESSAGE_KEY_LEN..MESSAGE_KEY_LEN + 8].copy_from_slice(&last_ms.to_be_bytes());
    k[MESSAGE_KEY_LEN + 8..].copy_from_slice(&count.to_be_bytes());
    k
}

/// The key that files a run of `count` records of one chat (history entries or outbox items),
/// the first filed at `first` (time and id), the last at `last_ms`: the first record's own
/// key if it is alone, else a page key. `None` if `count` is 0 or more than a page key can
/// say.
pub(super) fn run_key(
    tag: &ChatTag,
    first: (u64, &MessageId),
    last_ms: u64,
    count: usize,
) -> Option<Vec<u8>> {
    match count {
        0 => None,
        1 => Some(message_key(tag, first.0, first.1).to_vec()),
        _ => {
            let count = u16::try_from(count).ok()?;
            Some(page_key(tag, first.0, first.1, last_ms, count).to_vec())
        }
    }
}

/// What a key of the `messages` tree files, or `None` for a key the store never writes.
pub(super) fn slot(key: &[u8]) -> Option<Slot> {
    let u64_at = |at: usize| {
        let bytes: [u8; 8] = key.get(at..at + 8)?.try_into().ok()?;
        Some(u64::from_be_bytes(bytes))
    };
    match key.len() {
        MESSAGE_KEY_LEN => Some(Slot::One {
            timestamp_ms: u64_at(TAG_LEN)?,
            id: key[TAG_LEN + 8..].try_into().ok()?,
        }),
        PAGE_KEY_LEN => {
            let first_ms = u64_at(TAG_LEN)?;
            let last_ms = u64_at(MESSAGE_KEY_LEN)?;
            let count = u16::from_be_bytes(key[MESSAGE_KEY_LEN + 8..].try_into().ok()?);
            (last_ms >= first_ms && count >= 2).then_some(Slot::Page {
                first_ms,
                last_ms,
                count,
            })
        }
        _ => None,
    }
}

/// `tag || timestamp_ms`: the first key of a chat at or after `timestamp_ms`.
pub(super) fn message_key_floor(tag: &ChatTag, timestamp_ms: u64) -> [u8; TAG_LEN + 8] {
    let mut k = [0u8; TAG_LEN + 8];
    k[..TAG_LEN].copy_from_slice(tag);
    k[TAG_LEN..].copy_from_slice(&timestamp_ms.to_be_bytes());
    k
}

/// Length of a transfer key: file id, role, chat tag.
pub(super) const TRANSFER_KEY_LEN: usize = 16 + 1 + TAG_LEN;

/// `file id || role || tag`: one transfer of one file, with one peer, in one role. A file
/// forwarded to several contacts has one transfer per contact.
pub(super) fn transfer_key(file_id: &[u8; 16], role: u8, tag: &ChatTag) -> [u8; TRANSFER_KEY_LEN] {
    let mut k = [0u8; TRANSFER_KEY_LEN];
    k[..16].copy_from_slice(file_id);
    k[16] = role;
    k[17..].copy_from_slice(tag);
    k
}

/// `transfer key || index (big-endian)`: one chunk held for a transfer.
pub(super) fn chunk_key(
    transfer: &[u8; TRANSFER_KEY_LEN],
    index: u64,
) -> [u8; TRANSFER_KEY_LEN + 8] {
    let mut k = [0u8; TRANSFER_KEY_LEN + 8];
    k[..TRANSFER_KEY_LEN].copy_from_slice(transfer);
    k[TRANSFER_KEY_LEN..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Subkeys derived from the storage key once, at open. Zeroized on drop.
pub(super) struct Subkeys {
    chat_tag: Zeroizing<[u8; 32]>,
    seen: Zeroizing<[u8; 32]>,
    setting: Zeroizing<[u8; 32]>,
    key_slot: Zeroizing<[u8; 32]>,
}

fn truncate(hash: blake3::Hash) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash.as_bytes()[..16]);
    out
}

impl Subkeys {
    pub(super) fn derive(key: &StorageKey) -> Self {
        let bytes = key.to_bytes();
        let derive = |context: &str| Zeroizing::new(blake3::derive_key(context, &bytes[..]));
        Subkeys {
            chat_tag: derive("encrypto store chat-tag v1"),
            seen: derive("encrypto store seen-id v1"),
            setting: derive("encrypto store setting-name v1"),
            key_slot: derive("encrypto store inbound-key-slot v1"),
        }
    }

    /// The 16-byte tag every per-chat record of `peer` is keyed by.
    pub(super) fn chat_tag(&self, peer: &PeerId) -> ChatTag {
        truncate(blake3::keyed_hash(&self.chat_tag, &peer.to_bytes()))
    }

    /// The key of a seen-id record: a keyed hash of the message id and the sender.
    pub(super) fn seen_key(&self, sender: &PeerId, id: &MessageId) -> [u8; 16] {
        let mut h = blake3::Hasher::new_keyed(&self.seen);
        // The id has a fixed length, so id || sender is unambiguous.
        h.update(&id.0);
        h.update(&sender.to_bytes());
        truncate(h.finalize())
    }

    // Nothing in the node writes settings today (the bench and the tests do); the tree stays
    // part of the format.
    #[cfg_attr(not(any(test, feature = "bench-internals")), allow(dead_code))]
    /// The key of a setting: a keyed hash of its name.
    pub(super) fn setting_key(&self, name: &str) -> [u8; 16] {
        truncate(blake3::keyed_hash(&self.setting, name.as_bytes()))
    }

    /// The key of an inbound session key: the chat tag, then a keyed hash of the key id (the
    /// key id also travels in envelopes, so it is not written in clear).
    pub(super) fn inbound_key_slot(&self, tag: &ChatTag, key_id: &KeyId) -> [u8; TAG_LEN + 16] {
        let mut k = [0u8; TAG_LEN + 16];
        k[..TAG_LEN].copy_from_slice(tag);
        k[TAG_LEN..].copy_from_slice(&truncate(blake3::keyed_hash(&self.key_slot, &key_id.0)));
        k
    }
}
