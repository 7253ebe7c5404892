//! The node's sled store: contacts, history, outbox, seen message ids, crypto sessions, known
//! peers and settings, all sealed with the storage key.
//!
//! # Nothing readable without the passphrase
//!
//! Every value is sealed with [`encrypto_crypto::storage::seal_record`] under the storage key
//! (which only the passphrase unlocks), bound to the context `tree name || 0 || record key`:
//! a record copied to another slot or another tree does not open. Keys do not say whom the
//! user talks to either: per-chat records are keyed by a *chat tag*, a 16-byte BLAKE3 keyed
//! hash of the peer id under a subkey of the storage key; seen ids and setting names are keyed
//! hashes too. What a reader of the disk does learn: how many contacts, chats and messages
//! there are, which messages belong to the same (unnamed) chat, their times, message ids, and
//! approximate sizes.
//!
//! # On disk
//!
//! | tree | key | value (sealed) |
//! |---|---|---|
//! | `meta` | `format` / `check` | the format version (`u32` BE, the one value in clear) / a known plaintext, to tell a wrong key at open |
//! | `contacts` | chat tag (16) | [`Contact`] |
//! | `messages` | chat tag (16) ‖ timestamp ms (`u64` BE) ‖ message id (16); for a page, that of its first message ‖ its last timestamp ms (`u64` BE) ‖ count (`u16` BE) | [`StoredMessage`]; a page: several, oldest first (see `history`) |
//! | `outbox` | same as `messages` (`created_ms`); a page as in `messages`, with the count it was written with | [`OutboxItem`]; a page: several, oldest first (see `outbox`) |
//! | `seen_index` | `0` ‖ sequence number (`u64` BE) for a log record, `1` ‖ the lowest hash it covers for a chunk (see `seen`) | entries: keyed hash (16) of message id ‖ sender, then the payload's time (`u64` BE) |
//! | `seen` | keyed hash (16) of message id ‖ sender (formats 1 and 2 only: read and pruned, no longer written) | when it was seen |
//! | `outbound_sessions` | chat tag | the session's secret bytes |
//! | `inbound_keys` | chat tag ‖ keyed hash (16) of the key id | key id ‖ key |
//! | `peers` | chat tag | [`KnownPeer`] |
//! | `settings` | keyed hash (16) of the name | the value |
//! | `transfers` | file id (16) ‖ role (1) ‖ chat tag (16) | [`Transfer`] |
//! | `manifests` | same as `transfers` | the file's signed manifest (CBOR) |
//! | `chunks` | transfer key ‖ chunk index (`u64` BE) | nothing: the key says the chunk is held |
//! | `journal` | sequence number (`u64` BE) | what the records one write changes held before it, while it is being made (empty between writes) |
//!
//! Values are packed CBOR ([`encrypto_crypto::codec`]) inside the sealed record, decoded with
//! a size limit ([`MAX_RECORD_LEN`]).
//!
//! # Atomicity and durability
//!
//! Each call is atomic: it happens entirely or not at all, also across trees
//! ([`Store::enqueue_outgoing`] and [`Store::store_incoming`] write history and the outbox or
//! the seen ids with one journal record of what they replace, and a write that a crash cut
//! short is undone at the next open: see `store::journal`, and the `journal` tree below). The
//! exception is [`Store::complete_outgoing`], whose every partial state is one a resend
//! completes (it says how). Calls that the node's
//! delivery guarantees rest on flush before they return; each one says so. The others are
//! written to disk by sled's background flush (every 500 ms), by the next flushing call, by
//! [`Store::flush`], or when the store is dropped.
//!
//! A flush is sled's: it uses `sync_file_range`, not `fsync`. Data flushed survives the node
//! being killed, not necessarily a power cut or a kernel crash.
//!
//! Records that do not open (sealed under another key, moved from another slot, damaged) are
//! an error when asked for one by one and are skipped with a warning in listings; they are
//! never deleted by reading.
//!
//! # Damage
//!
//! Opening never panics. A store sealed with another storage key is refused
//! ([`StoreError::WrongKey`]) before anything is read. sled treats a damaged log as its end:
//! a database file that was overwritten, truncated to nothing or removed would open as an
//! empty database, so the store keeps a marker file (`encrypto-store`) beside sled's files and
//! an initialised store whose records are all gone is [`StoreError::Damaged`]. Damage in the
//! middle of the file makes sled recover the records before it and drop those after it, without
//! a word: the store records a *generation* as the last write of every open and clean close,
//! and in the marker file, so a log read only up to damage shows an older generation than the
//! marker, and is [`StoreError::LogDamaged`] instead of a shorter history. Not covered: damage
//! to what a node wrote after its last open when it was then killed rather than closed. Either
//! way, what sled drops is gone (it discards the unreadable rest of its log as it opens);
//! removing the marker file opens the store with what sled still reads.

mod error;
mod files;
mod history;
mod journal;
mod keys;
mod outbox;
mod seen;
#[cfg(test)]
mod tests;
mod types;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use encrypto_crypto::codec;
use encrypto_crypto::storage::{self, RECORD_OVERHEAD, StorageKey};
use encrypto_crypto::{KeyId, MessageId, PeerId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

pub use error::StoreError;
pub use files::{Transfer, TransferRole, TransferState};
pub use types::{
    Acknowledged, Body, Contact, Direction, KnownPeer, OutboxItem, OutboxKind, Status,
    StoredMessage,
};

use journal::Change;
use keys::{ChatTag, Subkeys, TreeId};
use types::{ContactRecord, PeerRecord};

/// Largest plaintext of one record (before sealing). A message with its envelope is at most
/// about 160 KiB.
pub const MAX_RECORD_LEN: usize = 512 * 1024;

/// The store format this build writes and reads. Format 2 files a group's messages to one
/// chat as a page (`store::history`); format 3 keeps seen ids in the `seen_index` tree
/// (`store::seen`); format 4 writes several records at once with a record in the `journal`
/// tree (`store::journal`), which an interrupted write leaves to be undone at the next open.
/// This build reads older stores as they are, and marks them format 4 at open, so that a
/// build that does not know pages, the index or the journal refuses them rather than showing
/// a history with pages missing, filing a repeat twice or leaving a write half done.
const FORMAT_VERSION: u32 = 4;
/// The oldest format this build opens (and upgrades).
const OLDEST_FORMAT: u32 = 1;
const FORMAT_KEY: &[u8] = b"format";
const CHECK_KEY: &[u8] = b"check";
const CHECK_PLAINTEXT: &[u8] = b"encrypto store check v1";
/// The meta record that counts opens and clean closes (see `Inner::check_generation`).
const GENERATION_KEY: &[u8] = b"generation";
/// A file next to sled's, written once the store is initialised and again at every open and
/// clean close with the generation last written (see `Inner::check_format_and_key`).
const MARKER_FILE: &str = "encrypto-store";
const MARKER_HEADER: &str = "encrypto store v1";
const MARKER_GENERATION: &str = "generation ";
/// How long [`Store::open`] waits for a lock held by a store just closed in this process.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_RETRY: Duration = Duration::from_millis(20);
/// sled's default page cache is 1 GiB; a personal history needs far less.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

type Result<T, E = StoreError> = std::result::Result<T, E>;
/// The node's encrypted store. Cheap to clone (clones share one database); every method is
/// synchronous and may block on disk I/O.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    db: sled::Db,
    trees: Vec<sled::Tree>,
    key: StorageKey,
    subkeys: Subkeys,
    /// The generation written at open (0 until the store is checked): a clean close writes
    /// the next one.
    generation: AtomicU64,
    /// The seen ids' log in memory (see `seen`), loaded at open.
    seen: Mutex<seen::SeenIndex>,
    /// Multi-record writes (see `journal`); its lock is held by every writer of the
    /// history, the outbox and the seen ids.
    journal: Mutex<journal::Journal>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let generation = *self.generation.get_mut();
        if generation > 0 {
            // The last record of a clean close, so that damage anywhere before it is found at
            // the next open (see `check_generation`).
            if let Err(e) = self.advance_generation(generation + 1) {
                tracing::warn!(path = %self.path.display(), error = %e, "recording a clean close of the store failed");
            }
            return;
        }
        if let Err(e) = self.db.flush() {
            tracing::warn!(path = %self.path.display(), error = %e, "flushing the store on close failed");
        }
    }
}

impl Store {
    /// Opens the store in `dir` (the node uses `DATA_DIR/store`), creating it (mode 0700) if
    /// needed, and checks that it was sealed with `key`. Subkeys are derived here, once.
    ///
    /// A lock still held by a store just dropped in this process is waited for (up to two
    /// seconds: sled releases it lazily); a lock held by another process is an error after
    /// that wait.
    ///
    /// # Errors
    /// [`StoreError::Locked`] if another process has it open; [`StoreError::WrongKey`] if it
    /// belongs to another storage key; [`StoreError::Damaged`] if sled cannot read it;
    /// [`StoreError::LogDamaged`] if sled reads it only up to damage in the middle;
    /// [`StoreError::UnsupportedVersion`] for a newer format; [`StoreError::Io`] if the
    /// directory cannot be created or read.
    pub fn open(dir: &Path, key: StorageKey) -> Result<Store> {
        let store = Self::open_unchecked(dir, key)?;
        store.inner.check_format_and_key()?;
        store.inner.undo_journal()?;
        store.inner.load_seen()?;
        Ok(store)
    }

    /// Opens the sled database and its trees without looking at the meta records.
    fn open_unchecked(dir: &Path, key: StorageKey) -> Result<Store> {
        let path = dir.to_path_buf();
        create_private_dir(dir).map_err(|source| StoreError::Io {
            op: "create",
            path: path.clone(),
            source,
        })?;
        let config = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES);
        // sled releases its file lock only when deferred cleanup of a dropped database has
        // run, which can lag behind the drop: a store closed and reopened in one process (a
        // node restarted in place, tests) can find its own old lock for a moment. Another
        // process holding it keeps it past the wait.
        let started = Instant::now();
        let db = loop {
            // sled 0.34 can panic on some damaged files instead of returning an error; a
            // damaged store must be an error the user can act on, never a crash.
            match panic::catch_unwind(AssertUnwindSafe(|| config.open())) {
                Ok(Ok(db)) => break db,
                Ok(Err(e)) => match open_error(path.clone(), e) {
                    StoreError::Locked { .. } if started.elapsed() < LOCK_WAIT => {
                        thread::sleep(LOCK_RETRY);
                    }
                    e => return Err(e),
                },
                Err(_) => {
                    return Err(StoreError::Damaged {
                        path,
                        reason: "the storage engine failed while reading it".into(),
                    });
                }
            }
        };
        let mut trees = Vec::with_capacity(TreeId::ALL.len());
        for tree in TreeId::ALL {
            match panic::catch_unwind(AssertUnwindSafe(|| db.open_tree(tree.name()))) {
                Ok(Ok(t)) => trees.push(t),
                Ok(Err(e)) => return Err(open_error(path, e)),
                Err(_) => {
                    return Err(StoreError::Damaged {
                        path,
                        reason: "the storage engine failed while reading it".into(),
                    });
                }
            }
        }
        let subkeys = Subkeys::derive(&key);
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                db,
                trees,
                key,
                subkeys,
                generation: AtomicU64::new(0),
                seen: Mutex::default(),
                journal: Mutex::default(),
            }),
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Writes everything written so far to disk. sled's flush uses `sync_file_range`: the data
    /// survives the process being killed, not necessarily a power cut.
    ///
    /// # Errors
    /// [`StoreError::Io`] or [`StoreError::Engine`] if the write fails.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// [`Store::flush`] without blocking the calling thread: for an async caller that groups
    /// several non-flushing writes and waits for them to be durable together.
    ///
    /// # Errors
    /// As [`Store::flush`].
    pub async fn flush_async(&self) -> Result<()> {
        self.inner
            .db
            .flush_async()
            .await
            .map(drop)
            .map_err(|e| self.inner.sled_error("flush", e))
    }

    // ---- contacts -------------------------------------------------------------------------

    /// Adds or replaces a contact. Flushed before returning (pinned keys must not be lost).
    ///
    /// # Errors
    /// [`StoreError::TooLarge`] for an oversized contact; write or flush failures.
    pub fn put_contact(&self, contact: &Contact) -> Result<()> {
        let tag = self.inner.tag(&contact.peer_id);
        let sealed =
            self.inner
                .seal_value(TreeId::Contacts, &tag, &ContactRecord::from(contact))?;
        self.inner.insert(TreeId::Contacts, &tag, sealed)?;
        self.inner.flush()
    }

    /// The contact for `peer`, if there is one.
    ///
    /// # Errors
    /// [`StoreError::Record`] or [`StoreError::BadRecord`] if its record does not open; read
    /// failures.
    pub fn contact(&self, peer: &PeerId) -> Result<Option<Contact>> {
        let tag = self.inner.tag(peer);
        let Some(sealed) = self.inner.get(TreeId::Contacts, &tag)? else {
            return Ok(None);
        };
        let contact: Contact =
            self.inner
                .open_record::<ContactRecord, _>(TreeId::Contacts, &tag, &sealed)?;
        if contact.peer_id != *peer {
            return Err(self
                .inner
                .bad_record(TreeId::Contacts, "filed under another peer".into()));
        }
        Ok(Some(contact))
    }

    /// Every contact, sorted by name (case-insensitively). Records that do not open are
    /// skipped with a warning.
    ///
    /// # Errors
    /// Read failures.
    pub fn contacts(&self) -> Result<Vec<Contact>> {
        let mut contacts: Vec<Contact> = self
            .inner
            .list::<ContactRecord, _>(TreeId::Contacts, self.inner.tree(TreeId::Contacts).iter())?;
        contacts.sort_by_cached_key(|c| (c.name.to_lowercase(), c.peer_id.to_bytes()));
        Ok(contacts)
    }

    /// Removes the contact for `peer` (not its history). Returns whether there was one.
    /// Flushed before returning.
    ///
    /// # Errors
    /// Write or flush failures.
    pub fn remove_contact(&self, peer: &PeerId) -> Result<bool> {
        let removed = self.inner.remove(TreeId::Contacts, &self.inner.tag(peer))?;
        self.inner.flush()?;
        Ok(removed)
    }

    // ---- outbox ---------------------------------------------------------------------------

    /// Files an outgoing chat message: its history entry and its outbox item, atomically (one
    /// journalled write over both trees), then flushes. When this returns, the message
    /// survives a restart and will be sent.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] unless `item` has the message's id, peer and
    /// `created_ms == timestamp_ms`; [`StoreError::TooLarge`]; write or flush failures.
    pub fn enqueue_outgoing(&self, message: &StoredMessage, item: &OutboxItem) -> Result<()> {
        self.enqueue_outgoing_many(&[(message.clone(), item.clone())])
    }

    /// [`Store::enqueue_outgoing`] for several messages: one write and one flush for all
    /// of them (group commit for a sender with many messages queued).
    ///
    /// # Errors
    /// As [`Store::enqueue_outgoing`]; nothing is written if any pair is invalid.
    pub fn enqueue_outgoing_many(&self, pairs: &[(StoredMessage, OutboxItem)]) -> Result<()> {
        self.write_outgoing_many(pairs)?;
        self.inner.flush()
    }

    /// [`Store::enqueue_outgoing_many`] without the flush: the pairs are written atomically
    /// but are durable only after the next [`Store::flush`] (or another flushing call). For a
    /// caller that flushes off its own thread and answers once the flush is done.
    ///
    /// # Errors
    /// As [`Store::enqueue_outgoing`], less flush failures.
    pub fn write_outgoing_many(&self, pairs: &[(StoredMessage, OutboxItem)]) -> Result<()> {
        let inner = &self.inner;
        for (message, item) in pairs {
            if message.id != item.id
                || message.peer != item.peer
                || message.timestamp_ms != item.created_ms
            {
                return Err(StoreError::Invalid {
                    what: "outgoing message",
                    reason: "the history entry and the outbox item differ in id, peer or time",
                });
            }
        }
        // The outbox is cut into pages as history is: message and item share id and time.
        let messages: Vec<&StoredMessage> = pairs.iter().map(|(m, _)| m).collect();
        let mut history = Vec::new();
        let mut items = Vec::new();
        let len = |i: usize| {
            let (message, item) = &pairs[i];
            let payload = match &item.kind {
                OutboxKind::Text(text) => text.len(),
                OutboxKind::Control(bytes) | OutboxKind::Payload(bytes) => bytes.len(),
            };
            history::outgoing_len(message, payload)
        };
        for (tag, run) in inner.cut(&messages, len) {
            let run_messages: Vec<&StoredMessage> = run.iter().map(|&i| &pairs[i].0).collect();
            let run_items: Vec<&OutboxItem> = run.iter().map(|&i| &pairs[i].1).collect();
            history.push(inner.file_run(&tag, &run_messages)?);
            items.push(inner.file_items(&tag, &run_items)?);
        }
        let changes = history
            .into_iter()
            .map(|(key, sealed)| Change::put(TreeId::Messages, key, sealed))
            .chain(
                items
                    .into_iter()
                    .map(|(key, sealed)| Change::put(TreeId::Outbox, key, sealed)),
            )
            .collect();
        inner.write_all(&mut inner.writing(), changes)
    }

    /// The peer acknowledged `id`: marks its outgoing history entry [`Status::Delivered`], then
    /// removes its outbox item, then flushes. A crash or an error between the two leaves the
    /// item, which is sent again and acknowledged as a duplicate (not atomic, and need not
    /// be: the entry is marked only once the peer holds the message). Returns whether
    /// anything changed (`false` for a repeated acknowledgement). A history entry that is
    /// gone (chat deleted) or does not open does not keep the item in the outbox.
    ///
    /// # Errors
    /// Write or flush failures.
    pub fn complete_outgoing(
        &self,
        peer: &PeerId,
        id: &MessageId,
        created_ms: u64,
    ) -> Result<bool> {
        Ok(self.complete_outgoing_many(peer, &[(*id, created_ms)])? > 0)
    }

    /// [`Store::complete_outgoing`] for several messages to one peer (one acknowledgement
    /// carries many ids): one write and one flush. Returns how many changed.
    ///
    /// # Errors
    /// Write or flush failures.
    pub fn complete_outgoing_many(
        &self,
        peer: &PeerId,
        acked: &[(MessageId, u64)],
    ) -> Result<usize> {
        let acked: Vec<Acknowledged> = acked
            .iter()
            .map(|&(id, created_ms)| Acknowledged {
                id,
                created_ms,
                envelope: None,
            })
            .collect();
        let changed = self.write_completed_many(peer, &acked)?;
        self.inner.flush()?;
        Ok(changed)
    }

    /// [`Store::complete_outgoing_many`] without the flush (see
    /// [`Store::write_outgoing_many`]), which also records in each history entry the sealed
    /// envelope the peer acknowledged (for "show ciphertext"; sealed with the storage key
    /// like the rest of the entry), in the same write. A completion lost in a crash
    /// only means the message is sent again, and the peer acknowledges the duplicate without
    /// storing it twice.
    ///
    /// # Errors
    /// Write failures.
    pub fn write_completed_many(&self, peer: &PeerId, acked: &[Acknowledged]) -> Result<usize> {
        let inner = &self.inner;
        let mut journal = inner.writing();
        let tag = inner.tag(peer);
        let mut times: Vec<u64> = acked.iter().map(|a| a.created_ms).collect();
        times.sort_unstable();
        times.dedup();
        let in_history = inner.entries_at(TreeId::Messages, &tag, &times)?;
        let in_outbox = inner.entries_at(TreeId::Outbox, &tag, &times)?;
        let by_id: HashMap<MessageId, &Acknowledged> = acked.iter().map(|a| (a.id, a)).collect();
        let mut changes = Vec::new();
        let delivered: HashSet<MessageId> = inner
            .mark_delivered(&in_history, &by_id, &mut changes)?
            .into_iter()
            .collect();
        let removed = inner.remove_acknowledged(&in_outbox, &by_id, &mut changes)?;
        // History first, then the outbox (see `Inner::write_in_order`).
        inner.write_in_order(&mut journal, changes)?;
        Ok(by_id
            .keys()
            .filter(|id| removed.contains(id) || delivered.contains(id))
            .count())
    }

    // ---- incoming and seen ids ------------------------------------------------------------

    /// Files an incoming message exactly once: checks its id against the seen ids of its
    /// sender (`message.peer`), then in one journalled write inserts it into history and
    /// records the id seen (see `store::seen`; no other writer comes between the check and the
    /// write); then flushes. Returns `false`, writing nothing, for a duplicate. When this
    /// returns the message is durable and may be acknowledged.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`]; write or flush failures.
    pub fn store_incoming(&self, message: &StoredMessage) -> Result<bool> {
        let stored = self.store_incoming_many(std::slice::from_ref(message))?;
        Ok(stored.first().copied().unwrap_or(false))
    }

    /// [`Store::store_incoming`] for several messages: one write and one flush. Returns,
    /// for each message, whether it was new (a repeat within `messages` counts as a
    /// duplicate).
    ///
    /// # Errors
    /// As [`Store::store_incoming`]; nothing is written on error.
    pub fn store_incoming_many(&self, messages: &[StoredMessage]) -> Result<Vec<bool>> {
        let stored = self.write_incoming_many(messages)?;
        if stored.contains(&true) {
            self.inner.flush()?;
        }
        Ok(stored)
    }

    // ---- crypto sessions ------------------------------------------------------------------

    /// Saves the outbound `aes` session with `peer` (the bytes of
    /// `OutboundSession::to_secret_bytes`). Not flushed: a session lost in a crash is replaced
    /// by a new one.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`]; write failures.
    pub fn put_outbound_session(&self, peer: &PeerId, secret: &[u8]) -> Result<()> {
        let tag = self.inner.tag(peer);
        let sealed = self
            .inner
            .seal_bytes(TreeId::OutboundSessions, &tag, secret)?;
        self.inner.insert(TreeId::OutboundSessions, &tag, sealed)
    }

    /// The saved outbound session with `peer`.
    ///
    /// # Errors
    /// [`StoreError::Record`] if it does not open; read failures.
    pub fn outbound_session(&self, peer: &PeerId) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let tag = self.inner.tag(peer);
        match self.inner.get(TreeId::OutboundSessions, &tag)? {
            Some(sealed) => Ok(Some(self.inner.open_bytes(
                TreeId::OutboundSessions,
                &tag,
                &sealed,
            )?)),
            None => Ok(None),
        }
    }

    /// Forgets the outbound session with `peer` (on a cipher switch, say). Returns whether
    /// there was one. Not flushed.
    ///
    /// # Errors
    /// Write failures.
    pub fn remove_outbound_session(&self, peer: &PeerId) -> Result<bool> {
        self.inner
            .remove(TreeId::OutboundSessions, &self.inner.tag(peer))
    }

    /// Saves an inbound session key from `peer`. Flushed before returning: once a message of
    /// the session is acknowledged the sender stops sending the wrapped key, so a key lost in
    /// a crash would strand the rest of the session. Save it before acknowledging.
    ///
    /// # Errors
    /// Write or flush failures.
    pub fn put_inbound_key(&self, peer: &PeerId, key_id: &KeyId, key: &[u8; 32]) -> Result<()> {
        let slot = self
            .inner
            .subkeys
            .inbound_key_slot(&self.inner.tag(peer), key_id);
        let mut plain = Zeroizing::new(Vec::with_capacity(48));
        plain.extend_from_slice(&key_id.0);
        plain.extend_from_slice(key);
        let sealed = self.inner.seal_bytes(TreeId::InboundKeys, &slot, &plain)?;
        self.inner.insert(TreeId::InboundKeys, &slot, sealed)?;
        self.inner.flush()
    }

    /// The inbound session keys saved for `peer`. Keys that do not open are skipped with a
    /// warning.
    ///
    /// # Errors
    /// Read failures.
    pub fn inbound_keys(&self, peer: &PeerId) -> Result<Vec<(KeyId, Zeroizing<[u8; 32]>)>> {
        let inner = &self.inner;
        let mut keys = Vec::new();
        for entry in inner.tree(TreeId::InboundKeys).scan_prefix(inner.tag(peer)) {
            let (slot, sealed) = entry.map_err(|e| inner.sled_error("read", e))?;
            let plain = match inner.open_bytes(TreeId::InboundKeys, &slot, &sealed) {
                Ok(plain) => plain,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an inbound session key that does not open");
                    continue;
                }
            };
            let (Ok(id), Ok(key)) = (
                <[u8; 16]>::try_from(plain.get(..16).unwrap_or_default()),
                <[u8; 32]>::try_from(plain.get(16..).unwrap_or_default()),
            ) else {
                tracing::warn!("skipping a malformed inbound session key");
                continue;
            };
            keys.push((KeyId(id), Zeroizing::new(key)));
        }
        Ok(keys)
    }

    /// Forgets one inbound session key. Returns whether it was there. Not flushed.
    ///
    /// # Errors
    /// Write failures.
    pub fn remove_inbound_key(&self, peer: &PeerId, key_id: &KeyId) -> Result<bool> {
        let slot = self
            .inner
            .subkeys
            .inbound_key_slot(&self.inner.tag(peer), key_id);
        self.inner.remove(TreeId::InboundKeys, &slot)
    }

    // ---- known peers ----------------------------------------------------------------------

    /// Adds or replaces a known peer (the caller merges addresses). Not flushed.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`]; write failures.
    pub fn put_peer(&self, peer: &KnownPeer) -> Result<()> {
        let tag = self.inner.tag(&peer.peer_id);
        let sealed = self
            .inner
            .seal_value(TreeId::Peers, &tag, &PeerRecord::from(peer))?;
        self.inner.insert(TreeId::Peers, &tag, sealed)
    }

    /// The known peer `peer`, if any.
    ///
    /// # Errors
    /// [`StoreError::Record`] or [`StoreError::BadRecord`] if it does not open; read failures.
    pub fn peer(&self, peer: &PeerId) -> Result<Option<KnownPeer>> {
        let tag = self.inner.tag(peer);
        match self.inner.get(TreeId::Peers, &tag)? {
            Some(sealed) => Ok(Some(self.inner.open_record::<PeerRecord, _>(
                TreeId::Peers,
                &tag,
                &sealed,
            )?)),
            None => Ok(None),
        }
    }

    /// Every known peer, most recently seen first. Records that do not open are skipped with
    /// a warning.
    ///
    /// # Errors
    /// Read failures.
    pub fn peers(&self) -> Result<Vec<KnownPeer>> {
        let mut peers: Vec<KnownPeer> = self
            .inner
            .list::<PeerRecord, _>(TreeId::Peers, self.inner.tree(TreeId::Peers).iter())?;
        peers.sort_by_key(|p| std::cmp::Reverse(p.last_seen_ms));
        Ok(peers)
    }

    /// Forgets a known peer. Returns whether it was there. Not flushed.
    ///
    /// # Errors
    /// Write failures.
    pub fn remove_peer(&self, peer: &PeerId) -> Result<bool> {
        self.inner.remove(TreeId::Peers, &self.inner.tag(peer))
    }

    // ---- settings -------------------------------------------------------------------------

    /// Sets a setting. Flushed before returning.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`]; write or flush failures.
    pub fn put_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        let key = self.inner.subkeys.setting_key(name);
        let sealed = self.inner.seal_bytes(TreeId::Settings, &key, value)?;
        self.inner.insert(TreeId::Settings, &key, sealed)?;
        self.inner.flush()
    }

    /// A setting's value, if set.
    ///
    /// # Errors
    /// [`StoreError::Record`] if it does not open; read failures.
    pub fn setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let key = self.inner.subkeys.setting_key(name);
        match self.inner.get(TreeId::Settings, &key)? {
            Some(sealed) => Ok(Some(
                self.inner
                    .open_bytes(TreeId::Settings, &key, &sealed)?
                    .to_vec(),
            )),
            None => Ok(None),
        }
    }

    /// Removes a setting. Returns whether it was set. Flushed before returning.
    ///
    /// # Errors
    /// Write or flush failures.
    pub fn remove_setting(&self, name: &str) -> Result<bool> {
        let removed = self
            .inner
            .remove(TreeId::Settings, &self.inner.subkeys.setting_key(name))?;
        self.inner.flush()?;
        Ok(removed)
    }
}

impl Inner {
    fn tree(&self, tree: TreeId) -> &sled::Tree {
        &self.trees[tree as usize]
    }

    fn tag(&self, peer: &PeerId) -> ChatTag {
        self.subkeys.chat_tag(peer)
    }

    /// Checks the format version and that the check record opens with our key; initialises a
    /// new store.
    ///
    /// sled treats a damaged log as its end: a database file that was truncated or overwritten
    /// opens as an empty (or shorter) database. The marker file, written once the store is
    /// initialised, tells "new" from "everything lost" so the latter is an error, not a fresh
    /// empty store quietly taking its place.
    fn check_format_and_key(&self) -> Result<()> {
        let marker = self.path.join(MARKER_FILE);
        let initialised = match fs::symlink_metadata(&marker) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(StoreError::Io {
                    op: "read",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let format = self.get(TreeId::Meta, FORMAT_KEY)?;
        let check = self.get(TreeId::Meta, CHECK_KEY)?;
        let (format, check) = match (format, check) {
            (Some(format), Some(check)) => (format, check),
            (None, None) if !initialised => {
                self.initialise()?;
                return self.advance_generation(1);
            }
            (None, None) => {
                return Err(self.damaged(
                    "its records are gone: the database file was truncated, replaced or lost",
                ));
            }
            _ => return Err(self.damaged("its format or check record is missing")),
        };
        let version = <[u8; 4]>::try_from(&format[..])
            .map(u32::from_be_bytes)
            .map_err(|_| self.damaged("its format record is malformed"))?;
        if !(OLDEST_FORMAT..=FORMAT_VERSION).contains(&version) {
            return Err(StoreError::UnsupportedVersion {
                path: self.path.clone(),
                version,
            });
        }
        match self.open_bytes(TreeId::Meta, CHECK_KEY, &check) {
            Ok(plain) if plain[..] == *CHECK_PLAINTEXT => {}
            _ => {
                return Err(StoreError::WrongKey {
                    path: self.path.clone(),
                });
            }
        }
        let expected = if initialised {
            read_marker_generation(&marker)
        } else {
            None
        };
        self.check_generation(expected, &marker)?;
        if version < FORMAT_VERSION {
            // Every older format's records read as they are: only the number changes.
            self.insert(
                TreeId::Meta,
                FORMAT_KEY,
                FORMAT_VERSION.to_be_bytes().to_vec(),
            )?;
            self.flush()?;
        }
        Ok(())
    }

    /// Finds damage inside sled's log, which sled itself does not report: it reads its log up
    /// to the first record that fails its checksum and drops everything after it, so a store
    /// damaged in the middle opens as an older, shorter store.
    ///
    /// The store counts *generations*: a sealed meta record, written and flushed at every open
    /// and as the last write of every clean close, and then copied into the marker file. The
    /// record is the newest thing in the log, so if the log is cut anywhere before it, the
    /// store holds an older generation than the marker says it should. A crash between the
    /// two writes leaves the store ahead of the marker, which is fine.
    ///
    /// What this cannot see: damage to records written after the last open of a node that
    /// was then killed rather than closed, and a marker file removed or copied together with
    /// the damaged store (the marker is then the user's word that the store is as it should
    /// be).
    fn check_generation(&self, expected: Option<u64>, marker: &Path) -> Result<()> {
        let stored = match self.get(TreeId::Meta, GENERATION_KEY)? {
            None => 0,
            Some(sealed) => {
                let plain = self.open_bytes(TreeId::Meta, GENERATION_KEY, &sealed)?;
                <[u8; 8]>::try_from(&plain[..])
                    .map(u64::from_be_bytes)
                    .map_err(|_| self.damaged("its generation record is malformed"))?
            }
        };
        if let Some(expected) = expected
            && stored < expected
        {
            return Err(StoreError::LogDamaged {
                path: self.path.clone(),
                marker: marker.to_owned(),
            });
        }
        self.advance_generation(stored.max(expected.unwrap_or(0)) + 1)
    }

    /// Writes `generation` into the store, flushes, then writes it into the marker file.
    fn advance_generation(&self, generation: u64) -> Result<()> {
        let sealed = self.seal_bytes(TreeId::Meta, GENERATION_KEY, &generation.to_be_bytes())?;
        self.insert(TreeId::Meta, GENERATION_KEY, sealed)?;
        self.flush()?;
        self.write_marker(&self.path.join(MARKER_FILE), generation)?;
        self.generation.store(generation, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the format and check records of a new store (atomically) and flushes.
    fn initialise(&self) -> Result<()> {
        let mut batch = sled::Batch::default();
        batch.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes());
        batch.insert(
            CHECK_KEY,
            self.seal_bytes(TreeId::Meta, CHECK_KEY, CHECK_PLAINTEXT)?,
        );
        self.tree(TreeId::Meta)
            .apply_batch(batch)
            .map_err(|e| self.sled_error("write to", e))?;
        self.flush()
    }

    fn write_marker(&self, marker: &Path, generation: u64) -> Result<()> {
        let contents = format!("{MARKER_HEADER}\n{MARKER_GENERATION}{generation}\n");
        let write = || -> io::Result<()> {
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(marker)?;
            io::Write::write_all(&mut file, contents.as_bytes())?;
            file.sync_all()
        };
        write().map_err(|source| StoreError::Io {
            op: "write to",
            path: self.path.clone(),
            source,
        })
    }

    fn damaged(&self, reason: &str) -> StoreError {
        StoreError::Damaged {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map(drop)
            .map_err(|e| self.sled_error("flush", e))
    }

    fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.tree(tree)
            .get(key)
            .map_err(|e| self.sled_error("read", e))
    }

    fn insert(&self, tree: TreeId, key: &[u8], sealed: Vec<u8>) -> Result<()> {
        self.tree(tree)
            .insert(key, sealed)
            .map(drop)
            .map_err(|e| self.sled_error("write to", e))
    }

    fn remove(&self, tree: TreeId, key: &[u8]) -> Result<bool> {
        self.tree(tree)
            .remove(key)
            .map(|old| old.is_some())
            .map_err(|e| self.sled_error("write to", e))
    }

    fn seal_bytes(&self, tree: TreeId, key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        if plaintext.len() > tree.max_record() {
            return Err(StoreError::TooLarge {
                what: tree.record(),
                size: plaintext.len(),
                limit: tree.max_record(),
            });
        }
        Ok(storage::seal_record(
            &self.key,
            &keys::context(tree, key),
            plaintext,
            &mut rand::rng(),
        ))
    }

    fn seal_value<T: Serialize>(&self, tree: TreeId, key: &[u8], value: &T) -> Result<Vec<u8>> {
        let plain = Zeroizing::new(codec::encode(value).map_err(|e| StoreError::BadRecord {
            path: self.path.clone(),
            what: tree.record(),
            reason: e.to_string(),
        })?);
        self.seal_bytes(tree, key, &plain)
    }

    fn open_bytes(&self, tree: TreeId, key: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() > tree.max_record() + RECORD_OVERHEAD {
            return Err(self.bad_record(tree, "larger than any record the store writes".into()));
        }
        storage::open_record(&self.key, &keys::context(tree, key), sealed).map_err(|source| {
            StoreError::Record {
                path: self.path.clone(),
                what: tree.record(),
                source,
            }
        })
    }

    fn open_value<T: DeserializeOwned>(
        &self,
        tree: TreeId,
        key: &[u8],
        sealed: &[u8],
    ) -> Result<T> {
        let plain = self.open_bytes(tree, key, sealed)?;
        codec::decode(&plain, tree.max_record()).map_err(|e| self.bad_record(tree, e.to_string()))
    }

    /// Opens a record and converts it to its public type.
    fn open_record<R, T>(&self, tree: TreeId, key: &[u8], sealed: &[u8]) -> Result<T>
    where
        R: DeserializeOwned,
        T: TryFrom<R, Error = String>,
    {
        let record: R = self.open_value(tree, key, sealed)?;
        T::try_from(record).map_err(|reason| self.bad_record(tree, reason))
    }

    /// Opens every record of `entries`, skipping (with a warning) those that do not open.
    fn list<R, T>(
        &self,
        tree: TreeId,
        entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    ) -> Result<Vec<T>>
    where
        R: DeserializeOwned,
        T: TryFrom<R, Error = String>,
    {
        let mut out = Vec::new();
        for entry in entries {
            let (key, sealed) = entry.map_err(|e| self.sled_error("read", e))?;
            match self.open_record::<R, T>(tree, &key, &sealed) {
                Ok(value) => out.push(value),
                Err(e) => tracing::warn!(error = %e, "skipping a stored record"),
            }
        }
        Ok(out)
    }

    fn bad_record(&self, tree: TreeId, reason: String) -> StoreError {
        StoreError::BadRecord {
            path: self.path.clone(),
            what: tree.record(),
            reason,
        }
    }

    fn sled_error(&self, op: &'static str, e: sled::Error) -> StoreError {
        engine_error(self.path.clone(), op, e)
    }
}

fn engine_error(path: PathBuf, op: &'static str, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(source) => StoreError::Io { op, path, source },
        sled::Error::Corruption { at, .. } => StoreError::Damaged {
            path,
            reason: match at {
                Some(at) => format!("corrupt data at {at:?}"),
                None => "corrupt data".into(),
            },
        },
        other => StoreError::Engine {
            op,
            path,
            source: other,
        },
    }
}

/// Errors while opening: a held lock and anything unreadable get their own messages.
fn open_error(path: PathBuf, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked { path }
        }
        sled::Error::Io(source) => StoreError::Io {
            op: "open",
            path,
            source,
        },
        sled::Error::Unsupported(reason) | sled::Error::ReportableBug(reason) => {
            StoreError::Damaged { path, reason }
        }
        other => engine_error(path, "open", other),
    }
}

/// The generation the marker file says the store has reached, if it says one: markers written
/// before generations were counted, or damaged ones, say nothing.
fn read_marker_generation(marker: &Path) -> Option<u64> {
    let mut buf = Vec::new();
    let file = fs::File::open(marker).ok()?;
    io::Read::read_to_end(&mut io::Read::take(file, 4096), &mut buf).ok()?;
    let text = String::from_utf8(buf).ok()?;
    let mut lines = text.lines();
    if lines.next()? != MARKER_HEADER {
        return None;
    }
    lines.next()?.strip_prefix(MARKER_GENERATION)?.parse().ok()
}

/// Creates `dir` (and its parents) if needed; a directory created here is owner-only.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}
