//! Writes of several records made atomic without sled's transactions.
//!
//! The node's durable writes each change two records or more at once: a sent message's
//! history entry and outbox item, a received message's history entry and seen id, a
//! delivery's history entry and outbox item. They used to be sled transactions. sled 0.34
//! seals its log buffer before and after it reserves a transaction's place in the log
//! (`pin_log`), so each transaction costs two extra buffer writes on sled's I/O threads, and
//! a flush waits for all of them: a transaction over two trees and its flush took 180–230 µs
//! here, two plain inserts and their flush 75–105 µs (a throwaway program against
//! `patches/sled`; `docs/performance.md` has the figures). Those writes are the node's
//! latency floor, two of them in series for every message.
//!
//! sled recovers a prefix of its log after a crash: it reads the log in order and stops at
//! the first record that is torn or missing, so what comes back is every change up to some
//! point and none after it. On that, a write of several records here is:
//!
//! 1. one record in the `journal` tree saying what each record the write changes held before
//!    it (its sealed value, or that there was none), sealed like any other record;
//! 2. the changes, one plain insert or removal each;
//! 3. the journal record removed.
//!
//! After a crash the log holds a prefix of those steps: nothing, or the journal record with
//! some of the changes, or all of it. [`Inner::undo_journal`] at open puts back what every
//! journal record left names, and removes it: the write is then as if it never began, which is
//! what its caller could count on, since nothing is acknowledged or answered before a flush
//! covers the journal record's removal. The records a send or a receipt writes are new, so
//! their journal record holds only keys (about 100 bytes).
//!
//! A delivery needs no journal record ([`Inner::write_in_order`]): it marks history entries
//! first and removes outbox items after, and every prefix of that is a state that sending
//! the message again completes.
//!
//! Putting back a record is right only if nothing wrote it after the interrupted write: every
//! writer of the history, the outbox or the seen ids holds the journal's lock
//! ([`Inner::writing`]), so no other write comes between a journal record and its removal.
//! Writers of the seen ids hold the seen index's lock too, which is taken first.

use std::collections::HashSet;
use std::sync::{MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::keys::TreeId;
use super::{Inner, Result};

/// Largest journal record (before sealing). It holds the old values of the records one write
/// replaces, which are in memory when it is written, so this bounds nothing the node would not
/// hold anyway; it is there for the decoder.
pub(super) const MAX_JOURNAL_RECORD: usize = 1 << 30;

/// One change of a multi-record write.
pub(super) enum Change {
    /// The record at `key` becomes `sealed`.
    Put {
        tree: TreeId,
        key: Vec<u8>,
        sealed: Vec<u8>,
    },
    /// The record at `key` is removed.
    Remove { tree: TreeId, key: Vec<u8> },
}

impl Change {
    pub(super) fn put(tree: TreeId, key: impl AsRef<[u8]>, sealed: Vec<u8>) -> Change {
        Change::Put {
            tree,
            key: key.as_ref().to_vec(),
            sealed,
        }
    }

    pub(super) fn remove(tree: TreeId, key: impl AsRef<[u8]>) -> Change {
        Change::Remove {
            tree,
            key: key.as_ref().to_vec(),
        }
    }
}

/// The journal's state in memory: the next record's sequence number.
#[derive(Default)]
pub(super) struct Journal {
    next: u64,
    /// Tests: the next multi-record write stops after its journal record and this many of
    /// its changes, as a crash would stop it, and fails.
    #[cfg(test)]
    pub(super) cut_after: Option<usize>,
}

/// A journal record as stored (inside its sealed value): each record the write changes, as
/// the tree's name, the record's key and its sealed value before the write (none if there was
/// no record).
#[derive(Serialize, Deserialize)]
struct JournalRecord {
    before: Vec<(String, ByteBuf, Option<ByteBuf>)>,
}

impl Inner {
    /// The lock every writer of the history, the outbox or the seen ids holds (see the
    /// module docs).
    pub(super) fn writing(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `changes` atomically (through a journal record when there are several). Not
    /// flushed. A write that fails part-way is undone at once if it can be, else at the next
    /// open.
    pub(super) fn write_all(&self, journal: &mut Journal, mut changes: Vec<Change>) -> Result<()> {
        if changes.len() <= 1 {
            return changes.pop().map_or(Ok(()), |only| self.apply(only));
        }
        let mut named = HashSet::with_capacity(changes.len());
        let mut before = Vec::with_capacity(changes.len());
        for change in &changes {
            let (Change::Put { tree, key, .. } | Change::Remove { tree, key }) = change;
            if named.insert((*tree, key.as_slice())) {
                let old = self.get(*tree, key)?;
                before.push((
                    tree.name().to_owned(),
                    ByteBuf::from(key.clone()),
                    old.map(|v| ByteBuf::from(v.to_vec())),
                ));
            }
        }
        let key = journal.next.to_be_bytes();
        let record = JournalRecord { before };
        let sealed = self.seal_value(TreeId::Journal, &key, &record)?;
        self.insert(TreeId::Journal, &key, sealed)?;
        journal.next += 1;
        self.cut_short(journal, &mut changes)?;
        let written = changes
            .into_iter()
            .try_for_each(|change| self.apply(change))
            .and_then(|()| self.remove(TreeId::Journal, &key).map(drop));
        if let Err(e) = written {
            if let Err(undo) = self.undo(&key, record) {
                tracing::warn!(error = %undo, "cannot undo a failed write; the next open will");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Applies `changes` one by one, in order, without a journal record: for a write whose
    /// every prefix is a state the store may be left in (a crash or an error part-way leaves
    /// one). A delivery is such a write: history entries marked delivered first, then the
    /// outbox items removed; an item left behind is sent again and acknowledged as a
    /// duplicate. Its journal record would have held the pages it rewrites, each twice in the
    /// log. The caller holds [`Inner::writing`] (`journal`).
    pub(super) fn write_in_order(
        &self,
        journal: &mut Journal,
        mut changes: Vec<Change>,
    ) -> Result<()> {
        self.cut_short(journal, &mut changes)?;
        for change in changes {
            self.apply(change)?;
        }
        Ok(())
    }

    /// Tests: when [`Journal::cut_after`] is set, applies only that many of `changes` and
    /// fails, as a crash part-way would leave the write.
    #[cfg(test)]
    fn cut_short(&self, journal: &mut Journal, changes: &mut Vec<Change>) -> Result<()> {
        let Some(n) = journal.cut_after.take() else {
            return Ok(());
        };
        for change in changes.drain(..).take(n) {
            self.apply(change)?;
        }
        Err(self.damaged("test: the write was cut short"))
    }

    #[cfg(not(test))]
    #[inline]
    fn cut_short(&self, _: &mut Journal, _: &mut Vec<Change>) -> Result<()> {
        Ok(())
    }

    fn apply(&self, change: Change) -> Result<()> {
        match change {
            Change::Put { tree, key, sealed } => self.insert(tree, &key, sealed),
            Change::Remove { tree, key } => self.remove(tree, &key).map(drop),
        }
    }

    /// Puts back what `record` (the journal record at `key`) names, then removes it.
    fn undo(&self, key: &[u8], record: JournalRecord) -> Result<()> {
        let mut changes = Vec::with_capacity(record.before.len());
        for (name, record_key, old) in record.before {
            let tree = TreeId::ALL
                .into_iter()
                .find(|t| t.name() == name)
                .ok_or_else(|| {
                    self.damaged(&format!("an interrupted write names no tree: {name:?}"))
                })?;
            changes.push(match old {
                Some(old) => Change::put(tree, &record_key, old.into_vec()),
                None => Change::remove(tree, &record_key),
            });
        }
        for change in changes {
            self.apply(change)?;
        }
        self.remove(TreeId::Journal, key).map(drop)
    }

    /// Undoes every write a crash interrupted (see the module docs), newest first, and
    /// flushes if there was any. Run at open, before anything reads the journalled trees.
    ///
    /// # Errors
    /// [`StoreError::Damaged`] for a journal record that does not open or names no tree of
    /// this store (the write it holds cannot be undone, and the records it changed may
    /// disagree); read, write or flush failures.
    pub(super) fn undo_journal(&self) -> Result<()> {
        let _writing = self.writing();
        let mut undone = 0usize;
        // Newest first: should two be left (a write that failed and could not be undone at
        // once, then a crash), the older one's values are the ones to end with.
        for entry in self.tree(TreeId::Journal).iter().rev() {
            let (key, sealed) = entry.map_err(|e| self.sled_error("read", e))?;
            let record: JournalRecord = self
                .open_value(TreeId::Journal, &key, &sealed)
                .map_err(|e| self.damaged(&format!("an interrupted write does not open: {e}")))?;
            self.undo(&key, record)?;
            undone += 1;
        }
        if undone > 0 {
            tracing::info!(writes = undone, "undid writes that a crash interrupted");
            self.flush()?;
        }
        Ok(())
    }
}
