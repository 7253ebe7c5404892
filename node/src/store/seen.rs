//! Seen message ids: what a receiver has accepted, so that a repeat or a replay is not filed
//! twice.
//!
//! Every message and control payload a node accepts leaves an *entry*: a keyed hash of its id
//! and sender (`Subkeys::seen_key`, 16 bytes) and the payload's time (`u64` BE, 8 bytes), by
//! which pruning forgets it once the replay window has passed. One sled record per entry cost
//! about 20 µs of CPU to write, a third of a received message's cost at the node's group
//! sizes, however small the record (`cargo bench -p encrypto-node --bench store`). So the
//! entries live in the `seen_index` tree as two kinds of record, each a sealed run of packed
//! entries:
//!
//! - the *log*: one record per write (a group of received messages, one control payload),
//!   under `0 ‖ sequence number (u64 BE)`. Its hashes are also held in memory, loaded at open.
//! - *chunks*: entries sorted by hash, under `1 ‖ the lowest hash the chunk covers`; a chunk
//!   covers every hash from its bound up to the next chunk's bound.
//!
//! Once the log holds [`LOG_MAX`] entries it is merged, in one atomic batch, into the chunks
//! its hashes fall in, and its records are removed; a chunk that grows past twice
//! [`CHUNK_LEN`] entries is split. A merge rewrites only the chunks that gain entries, which
//! while the index holds fewer than about `LOG_MAX * CHUNK_LEN` (two million) entries is
//! nearly all of them: merges cost in proportion to the whole index, once every `LOG_MAX`
//! messages. Pruning merges the log and rewrites every chunk that holds an entry too old.
//!
//! A lookup looks at the in-memory log, then opens the one chunk whose range holds the hash
//! (a `get_lt` and an opening of 1.5–3 KB). Hashes found in no chunk are remembered until the
//! next merge, so the replay check made while opening an envelope and the check made when
//! filing it cost one chunk opening between them.
//!
//! Writers hold the index's lock from the check to the end of the write, so two writers
//! cannot both file the same id. A chunk or log record that does not open is skipped with a
//! warning (its ids are forgotten: a repeat of one is filed again), never deleted by reading;
//! a merge that adds entries to a chunk that does not open replaces it.
//!
//! Stores of formats 1 and 2 kept one record per id in the `seen` tree. It is still read while
//! it holds any, and pruned as before, but never written.

use std::collections::HashSet;
use std::sync::{MutexGuard, PoisonError};

use encrypto_crypto::{MessageId, PeerId};

use super::journal::Change;
use super::keys::TreeId;
use super::types::SeenRecord;
use super::{Inner, MAX_RECORD_LEN, Result, Store, StoredMessage};

/// Length of a seen id's keyed hash.
const HASH_LEN: usize = 16;
/// Length of an entry: hash, then time.
const ENTRY_LEN: usize = HASH_LEN + 8;
/// First byte of a log record's key.
const LOG_TAG: u8 = 0;
/// First byte of a chunk's key.
const CHUNK_TAG: u8 = 1;
/// Length of a chunk's key: the tag, then its bound.
const CHUNK_KEY_LEN: usize = 1 + HASH_LEN;
/// How many entries the log holds before it is merged into the chunks.
pub(super) const LOG_MAX: usize = 32_768;
/// How many entries a chunk is cut to when one is split (a chunk holds up to twice as many).
pub(super) const CHUNK_LEN: usize = 64;
/// The most entries one log record holds (a write of more makes several records).
const LOG_RECORD_MAX: usize = MAX_RECORD_LEN / ENTRY_LEN / 2;
/// The most "not in any chunk" answers remembered between merges.
const ABSENT_MAX: usize = 4096;

type SeenHash = [u8; HASH_LEN];

/// One seen id: its keyed hash and the time it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    hash: SeenHash,
    timestamp_ms: u64,
}

/// The in-memory part of the index, behind `Inner::seen`.
pub(super) struct SeenIndex {
    /// The hashes in the log.
    recent: HashSet<SeenHash>,
    /// Hashes found in no chunk (and not in the `seen` tree) since the last merge.
    absent: HashSet<SeenHash>,
    /// The sequence number of the next log record.
    next_seq: u64,
    /// Whether the `seen` tree of an older store still holds entries.
    legacy: bool,
    /// The log's size at which the next merge is tried (raised after a merge fails).
    merge_at: usize,
    log_max: usize,
    chunk_len: usize,
}

impl Default for SeenIndex {
    fn default() -> Self {
        SeenIndex {
            recent: HashSet::new(),
            absent: HashSet::new(),
            next_seq: 0,
            legacy: false,
            merge_at: LOG_MAX,
            log_max: LOG_MAX,
            chunk_len: CHUNK_LEN,
        }
    }
}

impl Store {
    /// Whether a message (or control payload) `id` from `sender` was already accepted.
    ///
    /// # Errors
    /// Read failures.
    pub fn is_seen(&self, sender: &PeerId, id: &MessageId) -> Result<bool> {
        let inner = &self.inner;
        let hash = inner.subkeys.seen_key(sender, id);
        inner.seen_contains(&mut inner.seen_index(), &hash)
    }

    /// `Store::store_incoming_many` without the flush (see [`Store::write_outgoing_many`]):
    /// the messages may be acknowledged only after the next [`Store::flush`]. A repeat is
    /// detected as soon as this returns, flushed or not.
    ///
    /// # Errors
    /// As `Store::store_incoming`, less flush failures.
    pub fn write_incoming_many(&self, messages: &[StoredMessage]) -> Result<Vec<bool>> {
        let inner = &self.inner;
        let mut index = inner.seen_index();
        let mut journal = inner.writing();
        let mut entries: Vec<Entry> = Vec::with_capacity(messages.len());
        let mut in_group = HashSet::with_capacity(messages.len());
        let mut stored = Vec::with_capacity(messages.len());
        for message in messages {
            let hash = inner.subkeys.seen_key(&message.peer, &message.id);
            let new = !in_group.contains(&hash) && !inner.seen_contains(&mut index, &hash)?;
            if new {
                in_group.insert(hash);
                entries.push(Entry {
                    hash,
                    timestamp_ms: message.timestamp_ms,
                });
            }
            stored.push(new);
        }
        if entries.is_empty() {
            return Ok(stored);
        }
        let fresh: Vec<&StoredMessage> = messages
            .iter()
            .zip(&stored)
            .filter_map(|(m, &new)| new.then_some(m))
            .collect();
        let filed = inner.file_messages(&fresh)?;
        let log = inner.seal_log(&index, &entries)?;
        let records = log.len();
        let changes = filed
            .into_iter()
            .map(|(key, sealed)| Change::put(TreeId::Messages, key, sealed))
            .chain(
                log.into_iter()
                    .map(|(key, sealed)| Change::put(TreeId::SeenIndex, key, sealed)),
            )
            .collect();
        inner.write_all(&mut journal, changes)?;
        drop(journal);
        inner.logged(&mut index, records, &entries);
        Ok(stored)
    }

    /// Marks `id` from `sender` seen without storing a message (for control payloads, once
    /// acted on). Returns `false` if it was already seen. Flushed before returning.
    /// `timestamp_ms` is the payload's time, used by [`Store::prune_seen`].
    ///
    /// # Errors
    /// Write or flush failures.
    pub fn mark_seen(&self, sender: &PeerId, id: &MessageId, timestamp_ms: u64) -> Result<bool> {
        let inner = &self.inner;
        let mut index = inner.seen_index();
        let hash = inner.subkeys.seen_key(sender, id);
        if inner.seen_contains(&mut index, &hash)? {
            return Ok(false);
        }
        let entries = [Entry { hash, timestamp_ms }];
        let log = inner.seal_log(&index, &entries)?;
        let tree = inner.tree(TreeId::SeenIndex);
        for (key, sealed) in &log {
            tree.insert(&key[..], &sealed[..])
                .map_err(|e| inner.sled_error("write to", e))?;
        }
        inner.logged(&mut index, log.len(), &entries);
        drop(index);
        inner.flush()?;
        Ok(true)
    }

    /// Forgets seen ids filed with a timestamp before `before_ms`. Safe only for ids the
    /// receiver would reject as too old anyway (the crypto's `OpenPolicy::max_age_ms`, minus
    /// a margin). Merges the log into the chunks and rewrites every chunk that held an entry
    /// that old. Entries that do not open are kept. Returns how many were removed. Not
    /// flushed.
    ///
    /// # Errors
    /// Read or write failures.
    pub fn prune_seen(&self, before_ms: u64) -> Result<usize> {
        let inner = &self.inner;
        let mut index = inner.seen_index();
        let mut count = inner.merge_seen(&mut index, Some(before_ms))?;
        if index.legacy {
            count += inner.prune_legacy_seen(before_ms)?;
            index.legacy = !inner.tree(TreeId::Seen).is_empty();
        }
        Ok(count)
    }

    /// Sets how many entries the log holds before a merge and how long chunks are cut, so
    /// that tests see merges and splits with few messages.
    #[cfg(test)]
    pub(super) fn set_seen_limits(&self, log_max: usize, chunk_len: usize) {
        let mut index = self.inner.seen_index();
        index.log_max = log_max;
        index.merge_at = log_max;
        index.chunk_len = chunk_len;
    }

    /// How many chunks and log records the index has, for tests.
    #[cfg(test)]
    pub(super) fn seen_records(&self) -> (usize, usize) {
        let tree = self.inner.tree(TreeId::SeenIndex);
        (
            tree.scan_prefix([CHUNK_TAG]).count(),
            tree.scan_prefix([LOG_TAG]).count(),
        )
    }
}

impl Store {
    #[cfg(test)]
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

    #[cfg(test)]
    /// `Store::store_incoming` for several messages: one write and one flush. Returns,
    /// for each message, whether it was new (a repeat within `messages` counts as a
    /// duplicate).
    ///
    /// # Errors
    /// As `Store::store_incoming`; nothing is written on error.
    pub fn store_incoming_many(&self, messages: &[StoredMessage]) -> Result<Vec<bool>> {
        let stored = self.write_incoming_many(messages)?;
        if stored.contains(&true) {
            self.inner.flush()?;
        }
        Ok(stored)
    }
}

impl Inner {
    /// The index's lock. A panic while it was held leaves at worst an id unremembered.
    pub(super) fn seen_index(&self) -> MutexGuard<'_, SeenIndex> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the log into memory, at open.
    pub(super) fn load_seen(&self) -> Result<()> {
        let mut index = self.seen_index();
        index.recent.clear();
        index.absent.clear();
        index.next_seq = 0;
        for record in self.tree(TreeId::SeenIndex).scan_prefix([LOG_TAG]) {
            let (key, sealed) = record.map_err(|e| self.sled_error("read", e))?;
            if let Ok(seq) = <[u8; 8]>::try_from(&key[1..]) {
                index.next_seq = index.next_seq.max(u64::from_be_bytes(seq) + 1);
            }
            match self.open_entries(&key, &sealed) {
                Ok(entries) => index.recent.extend(entries.iter().map(|e| e.hash)),
                Err(e) => tracing::warn!(error = %e, "skipping seen message ids that do not open"),
            }
        }
        index.legacy = !self.tree(TreeId::Seen).is_empty();
        Ok(())
    }

    /// Whether `hash` is in the log, a chunk, or an older store's `seen` tree.
    fn seen_contains(&self, index: &mut SeenIndex, hash: &SeenHash) -> Result<bool> {
        if index.recent.contains(hash) {
            return Ok(true);
        }
        if index.absent.contains(hash) {
            return Ok(false);
        }
        let found = match self.covering_chunk(hash)? {
            Some((key, sealed)) => match self.open_bytes(TreeId::SeenIndex, &key, &sealed) {
                Ok(plain) if plain.len() % ENTRY_LEN == 0 => find(&plain, hash),
                Ok(_) => {
                    tracing::warn!("skipping a chunk of seen message ids of a wrong length");
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a chunk of seen message ids that does not open");
                    false
                }
            },
            None => false,
        };
        let found = found || (index.legacy && self.get(TreeId::Seen, hash)?.is_some());
        if !found {
            if index.absent.len() >= ABSENT_MAX {
                index.absent.clear();
            }
            index.absent.insert(*hash);
        }
        Ok(found)
    }

    /// The chunk whose range holds `hash`: the one with the greatest bound not above it.
    fn covering_chunk(&self, hash: &SeenHash) -> Result<Option<(sled::IVec, sled::IVec)>> {
        // Every key below `1 ‖ hash ‖ 0` and above `1` is a chunk bounded at or below `hash`.
        let mut probe = [0u8; CHUNK_KEY_LEN + 1];
        probe[0] = CHUNK_TAG;
        probe[1..CHUNK_KEY_LEN].copy_from_slice(hash);
        let below = self
            .tree(TreeId::SeenIndex)
            .get_lt(probe)
            .map_err(|e| self.sled_error("read", e))?;
        Ok(below.filter(|(key, _)| key.len() == CHUNK_KEY_LEN && key[0] == CHUNK_TAG))
    }

    /// The log records for `entries`, numbered from the index's next sequence number.
    fn seal_log(&self, index: &SeenIndex, entries: &[Entry]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        entries
            .chunks(LOG_RECORD_MAX)
            .zip(index.next_seq..)
            .map(|(run, seq)| {
                let mut key = Vec::with_capacity(9);
                key.push(LOG_TAG);
                key.extend_from_slice(&seq.to_be_bytes());
                let sealed = self.seal_bytes(TreeId::SeenIndex, &key, &pack(run))?;
                Ok((key, sealed))
            })
            .collect()
    }

    /// Records in memory that `records` log records holding `entries` were written, and
    /// merges the log if it is full. A failed merge is logged and tried again later: the
    /// entries stay in the log meanwhile.
    fn logged(&self, index: &mut SeenIndex, records: usize, entries: &[Entry]) {
        index.next_seq += records as u64;
        index.recent.extend(entries.iter().map(|e| e.hash));
        if index.recent.len() >= index.merge_at
            && let Err(e) = self.merge_seen(index, None)
        {
            tracing::warn!(error = %e, "cannot merge the log of seen message ids");
            index.merge_at = index.recent.len() + index.log_max;
        }
    }

    /// Merges the log into the chunks, removing entries older than `prune_before` (from
    /// every chunk) if given, in one atomic batch. Returns how many entries were removed.
    fn merge_seen(&self, index: &mut SeenIndex, prune_before: Option<u64>) -> Result<usize> {
        let tree = self.tree(TreeId::SeenIndex);
        let mut batch = sled::Batch::default();
        let mut adds: Vec<Entry> = Vec::with_capacity(index.recent.len());
        for record in tree.scan_prefix([LOG_TAG]) {
            let (key, sealed) = record.map_err(|e| self.sled_error("read", e))?;
            match self.open_entries(&key, &sealed) {
                Ok(entries) => {
                    adds.extend(entries);
                    batch.remove(key);
                }
                Err(e) => tracing::warn!(error = %e, "keeping seen message ids that do not open"),
            }
        }
        let mut pruned = 0;
        if let Some(before) = prune_before {
            let all = adds.len();
            adds.retain(|e| e.timestamp_ms >= before);
            pruned += all - adds.len();
        }
        adds.sort_unstable_by_key(|e| e.hash);
        adds.dedup_by_key(|e| e.hash);

        let mut chunks = tree.scan_prefix([CHUNK_TAG]).peekable();
        // Hashes below the first chunk's bound start a chunk bounded at zero.
        let mut rest = &adds[..];
        let first = next_bound(&mut chunks);
        let below = first.map_or(rest.len(), |b| rest.partition_point(|e| e.hash < b));
        if below > 0 {
            self.put_chunk(&mut batch, [0; HASH_LEN], &rest[..below], index.chunk_len)?;
            rest = &rest[below..];
        }
        while let Some(record) = chunks.next() {
            let (key, sealed) = record.map_err(|e| self.sled_error("read", e))?;
            let Ok(bound) = SeenHash::try_from(&key[1..]) else {
                tracing::warn!("skipping a seen message id record with a malformed key");
                continue;
            };
            let end = next_bound(&mut chunks)
                .map_or(rest.len(), |b| rest.partition_point(|e| e.hash < b));
            let (mine, after) = rest.split_at(end);
            rest = after;
            if mine.is_empty() && prune_before.is_none() {
                continue;
            }
            let mut held = match self.open_entries(&key, &sealed) {
                Ok(held) => held,
                Err(e) if mine.is_empty() => {
                    tracing::warn!(error = %e, "keeping a chunk of seen message ids that does not open");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replacing a chunk of seen message ids that does not open");
                    Vec::new()
                }
            };
            let before_len = held.len();
            if let Some(before) = prune_before {
                held.retain(|e| e.timestamp_ms >= before);
                pruned += before_len - held.len();
            }
            if mine.is_empty() && held.len() == before_len {
                continue;
            }
            let merged = merge_sorted(&held, mine);
            if merged.is_empty() {
                batch.remove(key);
            } else {
                self.put_chunk(&mut batch, bound, &merged, index.chunk_len)?;
            }
        }
        tree.apply_batch(batch)
            .map_err(|e| self.sled_error("write to", e))?;
        index.recent.clear();
        index.absent.clear();
        index.merge_at = index.log_max;
        Ok(pruned)
    }

    /// Writes `entries` (sorted, not empty) as the chunk bounded at `bound`, split into
    /// chunks of about `chunk_len` if it holds more than twice that many.
    fn put_chunk(
        &self,
        batch: &mut sled::Batch,
        bound: SeenHash,
        entries: &[Entry],
        chunk_len: usize,
    ) -> Result<()> {
        let pieces = if entries.len() > 2 * chunk_len {
            entries.len() / chunk_len
        } else {
            1
        };
        let per_piece = entries.len().div_ceil(pieces);
        for (i, piece) in entries.chunks(per_piece).enumerate() {
            let bound = if i == 0 { bound } else { piece[0].hash };
            let mut key = Vec::with_capacity(CHUNK_KEY_LEN);
            key.push(CHUNK_TAG);
            key.extend_from_slice(&bound);
            let sealed = self.seal_bytes(TreeId::SeenIndex, &key, &pack(piece))?;
            batch.insert(key, sealed);
        }
        Ok(())
    }

    /// The entries of a log record or chunk.
    fn open_entries(&self, key: &[u8], sealed: &[u8]) -> Result<Vec<Entry>> {
        let plain = self.open_bytes(TreeId::SeenIndex, key, sealed)?;
        if plain.len() % ENTRY_LEN != 0 {
            return Err(self.bad_record(TreeId::SeenIndex, "a partial entry".into()));
        }
        Ok(plain.chunks_exact(ENTRY_LEN).map(unpack).collect())
    }

    /// The `seen` tree of formats 1 and 2, pruned as those formats did.
    fn prune_legacy_seen(&self, before_ms: u64) -> Result<usize> {
        let tree = self.tree(TreeId::Seen);
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for entry in tree.iter() {
            let (key, sealed) = entry.map_err(|e| self.sled_error("read", e))?;
            match self.open_value::<SeenRecord>(TreeId::Seen, &key, &sealed) {
                Ok(seen) if seen.timestamp_ms < before_ms => {
                    batch.remove(key);
                    count += 1;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "keeping a seen id that does not open"),
            }
        }
        tree.apply_batch(batch)
            .map_err(|e| self.sled_error("write to", e))?;
        Ok(count)
    }
}

fn pack(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(&e.hash);
        out.extend_from_slice(&e.timestamp_ms.to_be_bytes());
    }
    out
}

/// One packed entry (`bytes` is `ENTRY_LEN` long).
fn unpack(bytes: &[u8]) -> Entry {
    let (hash, time) = bytes.split_at(HASH_LEN);
    Entry {
        hash: hash.try_into().unwrap_or_default(),
        timestamp_ms: u64::from_be_bytes(time.try_into().unwrap_or_default()),
    }
}

/// The bound of the chunk `chunks` yields next, if any.
fn next_bound(chunks: &mut std::iter::Peekable<sled::Iter>) -> Option<SeenHash> {
    match chunks.peek() {
        Some(Ok((key, _))) => key.get(1..).and_then(|b| b.try_into().ok()),
        _ => None,
    }
}

/// Whether the packed, sorted entries `plain` hold `hash`.
fn find(plain: &[u8], hash: &SeenHash) -> bool {
    let (entries, _) = plain.as_chunks::<ENTRY_LEN>();
    entries
        .binary_search_by(|e| e[..HASH_LEN].cmp(&hash[..]))
        .is_ok()
}

/// The union of two runs sorted by hash, sorted, each hash once (`a`'s entry where both
/// hold it).
fn merge_sorted(a: &[Entry], b: &[Entry]) -> Vec<Entry> {
    let mut out = [a, b].concat();
    // Stable: of two equal hashes, `a`'s comes first and is the one kept.
    out.sort_by_key(|e| e.hash);
    out.dedup_by_key(|e| e.hash);
    out
}

#[cfg(test)]
mod unit {
    use super::*;

    fn e(first: u8, timestamp_ms: u64) -> Entry {
        let mut hash = [0u8; HASH_LEN];
        hash[0] = first;
        Entry { hash, timestamp_ms }
    }

    #[test]
    fn pack_unpack_find_merge() {
        let a = [e(1, 10), e(5, 50), e(9, 90)];
        let b = [e(2, 20), e(5, 55), e(10, 100)];
        let merged = merge_sorted(&a, &b);
        let firsts: Vec<u8> = merged.iter().map(|e| e.hash[0]).collect();
        assert_eq!(firsts, [1, 2, 5, 9, 10]);
        assert_eq!(merged[2].timestamp_ms, 50, "the held entry wins a tie");
        let packed = pack(&merged);
        let back: Vec<Entry> = packed.chunks_exact(ENTRY_LEN).map(unpack).collect();
        assert_eq!(back, merged);
        for x in 0..12u8 {
            assert_eq!(find(&packed, &e(x, 0).hash), firsts.contains(&x), "{x}");
        }
        assert!(!find(&[], &e(1, 0).hash));
    }
}
