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
//! (`Store::enqueue_outgoing` and `Store::store_incoming` write history and the outbox or
//! the seen ids with one journal record of what they replace, and a write that a crash cut
//! short is undone at the next open: see `store::journal`, and the `journal` tree below). The
//! exception is `Store::complete_outgoing`, whose every partial state is one a resend
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

mod contacts;
mod error;
mod files;
mod format;
mod history;
mod journal;
mod keys;
mod outbox;
mod seen;
mod sessions;
// Only the bench and the tests write settings today.
#[cfg(any(test, feature = "bench-internals"))]
mod settings;
#[cfg(test)]
mod tests;
mod types;

use std::fs;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use encrypto_crypto::PeerId;
use encrypto_crypto::codec;
use encrypto_crypto::storage::{self, RECORD_OVERHEAD, StorageKey};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

pub use error::StoreError;
pub use files::{Transfer, TransferRole, TransferState};
pub use types::{
    Acknowledged, Body, Contact, Direction, KnownPeer, OutboxItem, OutboxKind, Status,
    StoredMessage,
};

use keys::{ChatTag, Subkeys, TreeId};

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

    #[cfg(test)]
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
}

impl Inner {
    fn tree(&self, tree: TreeId) -> &sled::Tree {
        &self.trees[tree as usize]
    }

    fn tag(&self, peer: &PeerId) -> ChatTag {
        self.subkeys.chat_tag(peer)
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
