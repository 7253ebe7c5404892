//! History: a chat's messages, filed one to a record or several to a page.
//!
//! The node writes messages in groups (the queued sends of one actor turn, a batch received
//! from one peer), and sled costs about as much CPU per insert whatever the value's size
//! (`cargo bench -p encrypto-node --bench store`). So the messages of one chat in one group
//! are filed as one *page*: a single sealed record holding up to [`PAGE_MAX_MESSAGES`]
//! messages whose times span at most [`PAGE_SPAN_MS`], under a key made of the first
//! message's time and id, then the last time and the count ([`keys::page_key`]). A message
//! written alone is filed under its own key ([`keys::message_key`]), as every message was
//! before pages existed (store format 1). The key's length tells the two apart.
//!
//! Both kinds sort together by their first time, so readers merge them:
//! - listing the newest messages scans a chat backwards and stops once it holds enough
//!   messages newer than anything the entries not yet read can hold (an entry's messages are
//!   at most `PAGE_SPAN_MS` later than the time its key sorts by);
//! - finding one message looks at its own key and at the pages whose key spans its time;
//! - counting and deleting read keys only (a page's key says how many messages it holds).

use std::cmp::Reverse;
use std::collections::HashMap;

use encrypto_crypto::MessageId;
use encrypto_crypto::PeerId;
use serde::{Deserialize, Serialize};

use super::journal::Change;
use super::keys::{self, ChatTag, Slot, TreeId};
use super::types::MessageRecord;
use super::{
    Acknowledged, Body, Direction, Inner, MAX_RECORD_LEN, Result, Status, Store, StoreError,
    StoredMessage,
};

/// The most a page's message times may span. Messages written together are normally
/// milliseconds apart; a batch spanning more (an outbox kept while the peer was away) is
/// filed as several entries. Readers rely on it: see the module doc.
pub(super) const PAGE_SPAN_MS: u64 = 100;
/// The most messages one page holds.
pub(super) const PAGE_MAX_MESSAGES: usize = 128;
/// The most a page's messages may add up to, by [`filed_len`] or [`outgoing_len`]: half a
/// record, so that a page fits when its messages' envelopes are recorded on delivery even if
/// those estimates fall short by half.
const PAGE_BUDGET: usize = MAX_RECORD_LEN / 2;
/// What a message's record adds beyond its body and envelope (id, peer, time, cipher,
/// status: about 80 bytes), generously.
const RECORD_OVERHEAD: usize = 256;
/// What sealing adds to a body to make its envelope: about 220 bytes for an `aes` text
/// (a 200-byte text makes a 423-byte envelope); an `rsa` one grows with its body (an
/// RSA-OAEP block for every 318 bytes, about a fifth more), which the budget's margin covers.
const ENVELOPE_OVERHEAD: usize = 1024;

/// A page: several messages of one chat, oldest first.
#[derive(Serialize, Deserialize)]
pub(super) struct PageRecord {
    messages: Vec<MessageRecord>,
}

/// What `m`'s body takes in its record.
fn body_len(m: &StoredMessage) -> usize {
    match &m.body {
        Body::Text(text) => text.len(),
        Body::File { name, .. } => name.len(),
    }
}

/// A bound on what `m` takes in a page, including the envelope a delivery records (a
/// message without one is taken to be a text, whose envelope seals its body).
pub(super) fn filed_len(m: &StoredMessage) -> usize {
    let body = body_len(m);
    let envelope = m
        .envelope
        .as_ref()
        .map_or(body + ENVELOPE_OVERHEAD, Vec::len);
    body + envelope + RECORD_OVERHEAD
}

/// [`filed_len`] for an outgoing message whose envelope will seal `payload_len` bytes (a
/// file offer's payload, which may carry its manifest, is much larger than the history's
/// body): a bound on both its history entry once delivered and its outbox item.
pub(super) fn outgoing_len(m: &StoredMessage, payload_len: usize) -> usize {
    body_len(m) + payload_len + ENVELOPE_OVERHEAD + RECORD_OVERHEAD
}

/// The order of a chat's history: by time, then id.
fn order(m: &StoredMessage) -> (u64, [u8; 16]) {
    (m.timestamp_ms, m.id.0)
}

impl Inner {
    /// The records that file `messages` (any chats, any order), cut as [`Inner::cut`] does.
    /// Returns (key, sealed record) pairs.
    pub(super) fn file_messages(&self, messages: &[&StoredMessage]) -> Result<Vec<Filed>> {
        self.cut(messages, |i| filed_len(messages[i]))
            .into_iter()
            .map(|(tag, run)| {
                let run: Vec<&StoredMessage> = run.iter().map(|&i| messages[i]).collect();
                self.file_run(&tag, &run)
            })
            .collect()
    }

    /// How `messages` (any chats, any order) are filed: for each chat, its messages by time,
    /// cut into runs by [`PAGE_SPAN_MS`], [`PAGE_MAX_MESSAGES`] and [`PAGE_BUDGET`], where
    /// `len(i)` bounds what the `i`th message takes. A run of several is a page, a run of
    /// one a lone record. Returns the runs as indices into `messages`, each with its chat's
    /// tag.
    pub(super) fn cut(
        &self,
        messages: &[&StoredMessage],
        len: impl Fn(usize) -> usize,
    ) -> Vec<(ChatTag, Vec<usize>)> {
        let mut sorted: Vec<(ChatTag, usize)> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| (self.tag(&m.peer), i))
            .collect();
        sorted.sort_by_key(|&(tag, i)| (tag, order(messages[i])));
        let mut runs: Vec<(ChatTag, Vec<usize>)> = Vec::new();
        let mut size = 0;
        for (tag, i) in sorted {
            let m = messages[i];
            size += len(i);
            if let Some((run_tag, run)) = runs.last_mut()
                && *run_tag == tag
                && m.timestamp_ms - messages[run[0]].timestamp_ms <= PAGE_SPAN_MS
                && run.len() < PAGE_MAX_MESSAGES
                && size <= PAGE_BUDGET
            {
                run.push(i);
                continue;
            }
            size = len(i);
            runs.push((tag, vec![i]));
        }
        runs
    }

    /// One record for `run` (one chat's messages, in order): a lone message's own, or a page.
    pub(super) fn file_run(&self, tag: &ChatTag, run: &[&StoredMessage]) -> Result<Filed> {
        let (first, last) = (run[0], run[run.len() - 1]);
        let key = keys::run_key(
            tag,
            (first.timestamp_ms, &first.id),
            last.timestamp_ms,
            run.len(),
        )
        .ok_or(StoreError::Invalid {
            what: "history page",
            reason: "more messages than a page holds",
        })?;
        let sealed = match run {
            [only] => self.seal_value(TreeId::Messages, &key, &MessageRecord::from(*only))?,
            _ => {
                let page = PageRecord {
                    messages: run.iter().map(|m| MessageRecord::from(*m)).collect(),
                };
                self.seal_value(TreeId::Messages, &key, &page)?
            }
        };
        Ok((key, sealed))
    }

    /// The messages of one entry of the `messages` tree.
    fn open_entry(&self, key: &[u8], slot: Slot, sealed: &[u8]) -> Result<Vec<StoredMessage>> {
        let records = match slot {
            Slot::One { .. } => {
                vec![self.open_value::<MessageRecord>(TreeId::Messages, key, sealed)?]
            }
            Slot::Page { count, .. } => {
                let page: PageRecord = self.open_value(TreeId::Messages, key, sealed)?;
                if page.messages.len() != usize::from(count) {
                    return Err(self.bad_record(
                        TreeId::Messages,
                        "a page holds another number of messages than its key says".into(),
                    ));
                }
                page.messages
            }
        };
        records
            .into_iter()
            .map(|r| StoredMessage::try_from(r).map_err(|e| self.bad_record(TreeId::Messages, e)))
            .collect()
    }

    /// [`Inner::open_entry`] for listings: an entry that does not open is skipped with a
    /// warning, never an error.
    fn open_listed(&self, key: &[u8], sealed: &[u8]) -> Vec<StoredMessage> {
        let Some(slot) = keys::slot(key) else {
            tracing::warn!("skipping a history record under a key the store does not write");
            return Vec::new();
        };
        self.open_entry(key, slot, sealed).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "skipping a stored record");
            Vec::new()
        })
    }

    /// The newest `limit` messages of the chat `tag` filed before `before_ms` (all times if
    /// `None`), oldest first.
    fn newest(
        &self,
        tag: &ChatTag,
        before_ms: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let tree = self.tree(TreeId::Messages);
        let entries = match before_ms {
            Some(before) => {
                tree.range(keys::message_key_floor(tag, 0)..keys::message_key_floor(tag, before))
            }
            None => tree.scan_prefix(tag),
        };
        let before = before_ms.unwrap_or(u64::MAX);
        let mut found: Vec<StoredMessage> = Vec::new();
        // The oldest time among the newest `limit` found so far, once there are that many.
        let mut kept_from: Option<u64> = None;
        for entry in entries.rev() {
            let (key, sealed) = entry.map_err(|e| self.sled_error("read", e))?;
            if let (Some(kept_from), Some(slot)) = (kept_from, keys::slot(&key))
                && kept_from > slot.first_ms().saturating_add(PAGE_SPAN_MS)
            {
                // Every entry still unread holds only messages older than all those kept.
                break;
            }
            // Messages older than all of the newest `limit` found so far are not among them.
            let floor = kept_from.unwrap_or(0);
            let added = found.len();
            found.extend(
                self.open_listed(&key, &sealed)
                    .into_iter()
                    .filter(|m| m.timestamp_ms < before && m.timestamp_ms >= floor),
            );
            if found.len() > added && found.len() >= limit {
                found.sort_unstable_by_key(|m| Reverse(order(m)));
                found.truncate(limit);
                kept_from = found.last().map(|m| m.timestamp_ms);
            }
        }
        found.sort_unstable_by_key(order);
        if found.len() > limit {
            found.drain(..found.len() - limit);
        }
        Ok(found)
    }

    /// The entries of chat `tag` in `tree` (history or outbox) that may hold a message filed
    /// at one of `times` (sorted): lone records at such a time, and pages whose span covers
    /// one. Keys only are read.
    pub(super) fn entries_at(
        &self,
        tree: TreeId,
        tag: &ChatTag,
        times: &[u64],
    ) -> Result<Vec<(sled::IVec, Slot)>> {
        let tree = self.tree(tree);
        let mut out = Vec::new();
        let mut i = 0;
        while i < times.len() {
            // One scan for each cluster of times closer than a page's span.
            let low = times[i].saturating_sub(PAGE_SPAN_MS);
            let mut high = times[i];
            while i < times.len() && times[i].saturating_sub(PAGE_SPAN_MS) <= high {
                high = times[i];
                i += 1;
            }
            let end = keys::message_key_floor(tag, high.saturating_add(1));
            let range = if high == u64::MAX {
                tree.range(keys::message_key_floor(tag, low)..)
            } else {
                tree.range(keys::message_key_floor(tag, low)..end)
            };
            for key in range.keys() {
                let key = key.map_err(|e| self.sled_error("read", e))?;
                if !key.starts_with(tag) {
                    break;
                }
                let Some(slot) = keys::slot(&key) else {
                    continue;
                };
                let from = times.partition_point(|&t| t < slot.first_ms());
                if times.get(from).is_some_and(|&t| t <= slot.last_ms()) {
                    out.push((key, slot));
                }
            }
        }
        Ok(out)
    }

    #[cfg(any(test, feature = "bench-internals"))]
    /// The entry holding the message `id` filed at `timestamp_ms` in chat `tag`, opened.
    fn find(
        &self,
        tag: &ChatTag,
        timestamp_ms: u64,
        id: &MessageId,
    ) -> Result<Option<(sled::IVec, Slot, Vec<StoredMessage>)>> {
        let own = keys::message_key(tag, timestamp_ms, id);
        for (key, slot) in self.entries_at(TreeId::Messages, tag, &[timestamp_ms])? {
            match slot {
                Slot::One { .. } if key[..] != own[..] => continue,
                _ => {}
            }
            let Some(sealed) = self.get(TreeId::Messages, &key)? else {
                continue;
            };
            let messages = self.open_entry(&key, slot, &sealed)?;
            if messages
                .iter()
                .any(|m| m.id == *id && m.timestamp_ms == timestamp_ms)
            {
                return Ok(Some((key, slot, messages)));
            }
        }
        Ok(None)
    }

    #[cfg(any(test, feature = "bench-internals"))]
    /// Applies `change` to the message `id` filed at `timestamp_ms` in chat `tag` and writes
    /// back the entry holding it (its page, or its own record). Returns `false`, writing
    /// nothing, if there is no such message. Not flushed.
    fn rewrite(
        &self,
        tag: &ChatTag,
        timestamp_ms: u64,
        id: &MessageId,
        change: impl FnOnce(&mut StoredMessage),
    ) -> Result<bool> {
        let Some((key, slot, mut messages)) = self.find(tag, timestamp_ms, id)? else {
            return Ok(false);
        };
        let Some(message) = messages
            .iter_mut()
            .find(|m| m.id == *id && m.timestamp_ms == timestamp_ms)
        else {
            return Ok(false);
        };
        change(message);
        let sealed = self.refile(&key, slot, &messages)?;
        self.insert(TreeId::Messages, &key, sealed)?;
        Ok(true)
    }

    /// Replaces the entry at `key` (a page or a lone record) with `messages`, unchanged in
    /// number and order.
    fn refile(&self, key: &[u8], slot: Slot, messages: &[StoredMessage]) -> Result<Vec<u8>> {
        match slot {
            Slot::One { .. } => {
                self.seal_value(TreeId::Messages, key, &MessageRecord::from(&messages[0]))
            }
            Slot::Page { .. } => {
                let page = PageRecord {
                    messages: messages.iter().map(MessageRecord::from).collect(),
                };
                self.seal_value(TreeId::Messages, key, &page)
            }
        }
    }

    /// Records deliveries in history: every outgoing message of `acked` (keyed by id) not yet
    /// delivered is marked so, with its envelope, as changes added to `changes` (the caller
    /// holds [`Inner::writing`] and writes them). Returns the ids it marked. `entries` come
    /// from [`Inner::entries_at`].
    pub(super) fn mark_delivered(
        &self,
        entries: &[(sled::IVec, Slot)],
        acked: &HashMap<MessageId, &Acknowledged>,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<MessageId>> {
        let mut marked = Vec::new();
        for (key, slot) in entries {
            let Some(sealed) = self.get(TreeId::Messages, key)? else {
                continue;
            };
            let mut messages = match self.open_entry(key, *slot, &sealed) {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(error = %e, "acknowledged message's history entry does not open; left as it is");
                    continue;
                }
            };
            let mut changed = Vec::new();
            for (i, message) in messages.iter_mut().enumerate() {
                let Some(a) = acked.get(&message.id) else {
                    continue;
                };
                if message.timestamp_ms != a.created_ms
                    || message.direction != Direction::Out
                    || message.status == Status::Delivered
                {
                    continue;
                }
                message.status = Status::Delivered;
                if let Some(envelope) = &a.envelope {
                    message.envelope = Some(envelope.clone());
                }
                changed.push(i);
            }
            if changed.is_empty() {
                continue;
            }
            let sealed = match self.refile(key, *slot, &messages) {
                // Pages are cut so that their envelopes fit; should one not, the delivery
                // is still recorded, without the envelopes.
                Err(StoreError::TooLarge { .. }) => {
                    for &i in &changed {
                        messages[i].envelope = None;
                    }
                    self.refile(key, *slot, &messages)?
                }
                other => other?,
            };
            changes.push(Change::put(TreeId::Messages, key, sealed));
            marked.extend(changed.into_iter().map(|i| messages[i].id));
        }
        Ok(marked)
    }
}

/// A record to write: its key and its sealed value.
pub(super) type Filed = (Vec<u8>, Vec<u8>);

impl Store {
    #[cfg(any(test, feature = "bench-internals"))]
    /// Adds or replaces one history entry (keyed by peer, timestamp and id). Not flushed: the
    /// node's durable paths are `Store::enqueue_outgoing` and `Store::store_incoming`.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`]; [`StoreError::Record`] or [`StoreError::BadRecord`] if the
    /// page holding the message does not open; write failures.
    pub fn put_message(&self, message: &StoredMessage) -> Result<()> {
        let inner = &self.inner;
        let _writing = inner.writing();
        let tag = inner.tag(&message.peer);
        let replaced = inner.rewrite(&tag, message.timestamp_ms, &message.id, |m| {
            *m = message.clone();
        })?;
        if !replaced {
            let (key, sealed) = inner.file_run(&tag, &[message])?;
            inner.insert(TreeId::Messages, &key, sealed)?;
        }
        Ok(())
    }

    #[cfg(test)]
    /// One history entry, if it exists.
    ///
    /// # Errors
    /// [`StoreError::Record`] or [`StoreError::BadRecord`] if it (or the page holding it)
    /// does not open; read failures.
    pub fn message(
        &self,
        peer: &PeerId,
        timestamp_ms: u64,
        id: &MessageId,
    ) -> Result<Option<StoredMessage>> {
        let found = self.inner.find(&self.inner.tag(peer), timestamp_ms, id)?;
        Ok(found.and_then(|(_, _, messages)| {
            messages
                .into_iter()
                .find(|m| m.id == *id && m.timestamp_ms == timestamp_ms)
        }))
    }

    /// The chat with `peer`, oldest first. With `limit`, only the newest `limit` messages
    /// (still oldest first). Records that do not open are skipped with a warning.
    ///
    /// # Errors
    /// Read failures.
    pub fn history(&self, peer: &PeerId, limit: Option<usize>) -> Result<Vec<StoredMessage>> {
        let inner = &self.inner;
        let tag = inner.tag(peer);
        if let Some(limit) = limit {
            return inner.newest(&tag, None, limit);
        }
        let mut all = Vec::new();
        for entry in inner.tree(TreeId::Messages).scan_prefix(tag) {
            let (key, sealed) = entry.map_err(|e| inner.sled_error("read", e))?;
            all.extend(inner.open_listed(&key, &sealed));
        }
        all.sort_unstable_by_key(order);
        Ok(all)
    }

    #[cfg(test)]
    /// A page of older history: the newest `limit` messages of the chat with `peer` filed
    /// strictly before `before_ms`, oldest first. For scrolling back from the oldest message
    /// shown.
    ///
    /// # Errors
    /// Read failures.
    pub fn history_before(
        &self,
        peer: &PeerId,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        self.inner
            .newest(&self.inner.tag(peer), Some(before_ms), limit)
    }

    #[cfg(test)]
    /// Sets the status of one history entry. Returns `false` if there is no such entry. Not
    /// flushed.
    ///
    /// # Errors
    /// [`StoreError::Record`] or [`StoreError::BadRecord`] if the entry does not open; write
    /// failures.
    pub fn set_status(
        &self,
        peer: &PeerId,
        timestamp_ms: u64,
        id: &MessageId,
        status: Status,
    ) -> Result<bool> {
        let _writing = self.inner.writing();
        self.inner
            .rewrite(&self.inner.tag(peer), timestamp_ms, id, |m| {
                m.status = status
            })
    }

    /// Deletes the whole history with `peer` in one atomic batch and returns how many
    /// messages it held. Flushed before returning. The contact, the outbox (messages still
    /// to be delivered) and the seen ids (which keep replays out) stay.
    ///
    /// # Errors
    /// Read, write or flush failures.
    pub fn delete_chat(&self, peer: &PeerId) -> Result<usize> {
        let inner = &self.inner;
        let writing = inner.writing();
        let tree = inner.tree(TreeId::Messages);
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for key in tree.scan_prefix(inner.tag(peer)).keys() {
            let key = key.map_err(|e| inner.sled_error("read", e))?;
            count += keys::slot(&key).map_or(1, Slot::count);
            batch.remove(key);
        }
        tree.apply_batch(batch)
            .map_err(|e| inner.sled_error("write to", e))?;
        drop(writing);
        inner.flush()?;
        Ok(count)
    }

    #[cfg(any(test, feature = "bench-internals"))]
    /// How many messages the chat with `peer` holds (counting records that might not open;
    /// nothing is decrypted).
    ///
    /// # Errors
    /// Read failures.
    pub fn message_count(&self, peer: &PeerId) -> Result<usize> {
        let inner = &self.inner;
        let mut count = 0;
        for key in inner
            .tree(TreeId::Messages)
            .scan_prefix(inner.tag(peer))
            .keys()
        {
            let key = key.map_err(|e| inner.sled_error("read", e))?;
            count += keys::slot(&key).map_or(1, Slot::count);
        }
        Ok(count)
    }
}
