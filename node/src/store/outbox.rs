//! The outbox: what was accepted for sending and not yet acknowledged.
//!
//! Like history (see `store::history`), a group of messages to one chat is filed as one
//! *page* of outbox items, under a page key with the same layout as history's; an item
//! written alone (a control payload, a message sent on its own) has its own key. A page's
//! key keeps the span and count it was written with: items leave the page as the peer
//! acknowledges them, the page is rewritten under the same key (its span still bounds the
//! items left), and removed with its last item.

use std::collections::{HashMap, HashSet};

use encrypto_crypto::{MessageId, PeerId};
use serde::{Deserialize, Serialize};

use super::history::{self, Filed};
use super::journal::Change;
use super::keys::{self, ChatTag, Slot, TreeId};
use super::types::OutboxRecord;
use super::{
    Acknowledged, Inner, OutboxItem, OutboxKind, Result, Store, StoreError, StoredMessage,
    engine_error,
};

/// A page of outbox items to one chat, oldest first.
#[derive(Serialize, Deserialize)]
struct OutboxPageRecord {
    items: Vec<OutboxRecord>,
}

impl Inner {
    /// One outbox record for `run` (one chat's items, in order): a lone item's own, or a
    /// page.
    pub(super) fn file_items(&self, tag: &ChatTag, run: &[&OutboxItem]) -> Result<Filed> {
        let (first, last) = (run[0], run[run.len() - 1]);
        let key = keys::run_key(
            tag,
            (first.created_ms, &first.id),
            last.created_ms,
            run.len(),
        )
        .ok_or(StoreError::Invalid {
            what: "outbox page",
            reason: "more items than a page holds",
        })?;
        let sealed = match run {
            [only] => self.seal_value(TreeId::Outbox, &key, &OutboxRecord::from(*only))?,
            _ => self.seal_items(&key, run.iter().copied())?,
        };
        Ok((key, sealed))
    }

    fn seal_items<'a>(
        &self,
        key: &[u8],
        items: impl Iterator<Item = &'a OutboxItem>,
    ) -> Result<Vec<u8>> {
        let page = OutboxPageRecord {
            items: items.map(OutboxRecord::from).collect(),
        };
        self.seal_value(TreeId::Outbox, key, &page)
    }

    /// The items of one entry of the outbox.
    fn open_items(&self, key: &[u8], slot: Slot, sealed: &[u8]) -> Result<Vec<OutboxItem>> {
        let records = match slot {
            Slot::One { .. } => {
                vec![self.open_value::<OutboxRecord>(TreeId::Outbox, key, sealed)?]
            }
            Slot::Page { .. } => {
                self.open_value::<OutboxPageRecord>(TreeId::Outbox, key, sealed)?
                    .items
            }
        };
        records
            .into_iter()
            .map(|r| OutboxItem::try_from(r).map_err(|e| self.bad_record(TreeId::Outbox, e)))
            .collect()
    }

    /// Every item of `entries`, oldest first. Entries that do not open are skipped with a
    /// warning and stay on disk.
    fn list_items(
        &self,
        entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    ) -> Result<Vec<OutboxItem>> {
        let mut items = Vec::new();
        for entry in entries {
            let (key, sealed) = entry.map_err(|e| self.sled_error("read", e))?;
            let opened = keys::slot(&key)
                .ok_or_else(|| {
                    self.bad_record(
                        TreeId::Outbox,
                        "filed under a key the store does not write".into(),
                    )
                })
                .and_then(|slot| self.open_items(&key, slot, &sealed));
            match opened {
                Ok(opened) => items.extend(opened),
                Err(e) => tracing::warn!(error = %e, "skipping a stored record"),
            }
        }
        items.sort_by_key(|i| (i.created_ms, i.id));
        Ok(items)
    }

    /// Removes the items of `acked` (by id and time) from `entries` (from
    /// [`Inner::entries_at`] on the outbox), as changes added to `changes` (the caller holds
    /// [`Inner::writing`] and writes them). Returns the ids removed.
    pub(super) fn remove_acknowledged(
        &self,
        entries: &[(sled::IVec, Slot)],
        acked: &HashMap<MessageId, &Acknowledged>,
        changes: &mut Vec<Change>,
    ) -> Result<HashSet<MessageId>> {
        let is_acked = |id: &MessageId, created_ms: u64| {
            acked.get(id).is_some_and(|a| a.created_ms == created_ms)
        };
        let mut removed = HashSet::new();
        for (key, slot) in entries {
            if let Slot::One { timestamp_ms, id } = *slot {
                let id = MessageId(id);
                if is_acked(&id, timestamp_ms) && self.get(TreeId::Outbox, key)?.is_some() {
                    changes.push(Change::remove(TreeId::Outbox, key));
                    removed.insert(id);
                }
                continue;
            }
            let Some(sealed) = self.get(TreeId::Outbox, key)? else {
                continue;
            };
            let items = match self.open_items(key, *slot, &sealed) {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(error = %e, "an outbox page does not open; left as it is");
                    continue;
                }
            };
            let (done, left): (Vec<_>, Vec<_>) =
                items.iter().partition(|i| is_acked(&i.id, i.created_ms));
            if done.is_empty() {
                continue;
            }
            if left.is_empty() {
                changes.push(Change::remove(TreeId::Outbox, key));
            } else {
                let sealed = self.seal_items(key, left.into_iter())?;
                changes.push(Change::put(TreeId::Outbox, key, sealed));
            }
            removed.extend(done.iter().map(|i| i.id));
        }
        Ok(removed)
    }
}

impl Store {
    /// Files an outbox item that has no history entry (a control payload), then flushes.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`]; write or flush failures.
    pub fn enqueue_control(&self, item: &OutboxItem) -> Result<()> {
        let inner = &self.inner;
        let (key, sealed) = inner.file_items(&inner.tag(&item.peer), &[item])?;
        let writing = inner.writing();
        inner.insert(TreeId::Outbox, &key, sealed)?;
        drop(writing);
        inner.flush()
    }

    #[cfg(test)]
    /// Replaces an outbox item that is still there (to count an attempt, say); returns
    /// `false`, writing nothing, if it was completed meanwhile. Not flushed.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`]; [`StoreError::Record`] or [`StoreError::BadRecord`] if the
    /// page holding it does not open; write failures.
    pub fn update_outbox(&self, item: &OutboxItem) -> Result<bool> {
        let inner = &self.inner;
        let _writing = inner.writing();
        let tag = inner.tag(&item.peer);
        for (key, slot) in inner.entries_at(TreeId::Outbox, &tag, &[item.created_ms])? {
            let Some(old) = inner.get(TreeId::Outbox, &key)? else {
                continue;
            };
            let mut items = inner.open_items(&key, slot, &old)?;
            let Some(at) = items
                .iter()
                .position(|i| i.id == item.id && i.created_ms == item.created_ms)
            else {
                continue;
            };
            items[at] = item.clone();
            let sealed = match slot {
                Slot::One { .. } => {
                    inner.seal_value(TreeId::Outbox, &key, &OutboxRecord::from(item))?
                }
                Slot::Page { .. } => inner.seal_items(&key, items.iter())?,
            };
            // Only if the entry is unchanged since it was read: a completion meanwhile wins.
            return inner
                .tree(TreeId::Outbox)
                .compare_and_swap(&key, Some(&old), Some(sealed))
                .map(|swapped| swapped.is_ok())
                .map_err(|e| inner.sled_error("write to", e));
        }
        Ok(false)
    }

    /// Every outbox item, oldest first (by `created_ms`, then id). Items that do not open are
    /// skipped with a warning and stay on disk.
    ///
    /// # Errors
    /// Read failures.
    pub fn outbox(&self) -> Result<Vec<OutboxItem>> {
        self.inner
            .list_items(self.inner.tree(TreeId::Outbox).iter())
    }

    /// Whether anything is queued for `peer` (keys only: nothing is opened).
    ///
    /// # Errors
    /// Read failures.
    pub fn has_outbox_for(&self, peer: &PeerId) -> Result<bool> {
        let tag = self.inner.tag(peer);
        match self
            .inner
            .tree(TreeId::Outbox)
            .scan_prefix(tag)
            .keys()
            .next()
        {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(engine_error(self.inner.path.clone(), "read", e)),
        }
    }

    /// The outbox items for `peer`, oldest first.
    ///
    /// # Errors
    /// Read failures.
    pub fn outbox_for(&self, peer: &PeerId) -> Result<Vec<OutboxItem>> {
        let inner = &self.inner;
        inner.list_items(inner.tree(TreeId::Outbox).scan_prefix(inner.tag(peer)))
    }
}

impl Store {
    #[cfg(test)]
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

    #[cfg(test)]
    /// `Store::enqueue_outgoing` for several messages: one write and one flush for all
    /// of them (group commit for a sender with many messages queued).
    ///
    /// # Errors
    /// As `Store::enqueue_outgoing`; nothing is written if any pair is invalid.
    pub fn enqueue_outgoing_many(&self, pairs: &[(StoredMessage, OutboxItem)]) -> Result<()> {
        self.write_outgoing_many(pairs)?;
        self.inner.flush()
    }

    /// `Store::enqueue_outgoing_many` without the flush: the pairs are written atomically
    /// but are durable only after the next [`Store::flush`] (or another flushing call). For a
    /// caller that flushes off its own thread and answers once the flush is done.
    ///
    /// # Errors
    /// As `Store::enqueue_outgoing`, less flush failures.
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

    #[cfg(test)]
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

    #[cfg(test)]
    /// `Store::complete_outgoing` for several messages to one peer (one acknowledgement
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

    /// `Store::complete_outgoing_many` without the flush (see
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
}
