//! A download's books, kept apart from the swarm and the store so they can be tested alone:
//! its sources and their back-off, the chunks held and in flight, the window of chunk
//! requests, the sources that sent bad copies, and the chunk marks not yet written.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use encrypto_crypto::PeerId;
use encrypto_crypto::file::FileManifest;
use libp2p::Multiaddr;

use super::super::SOURCE_BACKOFF;
use super::super::io::Sink;
use crate::store::{Transfer, TransferRole};

/// Chunk requests in flight for one download, over all its sources.
pub(in crate::actor::files) const WINDOW: usize = 32;
/// Chunk requests in flight to one source.
const PER_SOURCE: usize = 16;
/// A source that sent this many chunks that failed verification is not asked again.
const MAX_BAD: u32 = 3;
/// The longest a failed source waits before it is asked again.
pub(in crate::actor::files) const SOURCE_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Chunk marks are written (and flushed with the next group commit) in groups of this many,
/// and whenever a download goes idle: a crash costs at most these chunks again.
const MARK_BATCH: usize = 16;

/// A peer that can serve a download's chunks.
pub(in crate::actor::files) struct Source {
    pub(in crate::actor::files) peer: PeerId,
    pub(in crate::actor::files) addrs: Vec<Multiaddr>,
    pub(in crate::actor::files) in_flight: usize,
    pub(in crate::actor::files) bad: u32,
    pub(in crate::actor::files) ready_at: Instant,
    pub(in crate::actor::files) backoff: Duration,
    /// The peer said it does not hold the file (yet): asked again after the backoff.
    pub(in crate::actor::files) unavailable: bool,
}

impl Source {
    pub(in crate::actor::files) fn new(peer: PeerId, addrs: Vec<Multiaddr>) -> Self {
        Source {
            peer,
            addrs,
            in_flight: 0,
            bad: 0,
            ready_at: Instant::now(),
            backoff: SOURCE_BACKOFF,
            unavailable: false,
        }
    }

    pub(in crate::actor::files) fn usable(&self, now: Instant) -> bool {
        self.bad < MAX_BAD && self.ready_at <= now && self.in_flight < PER_SOURCE
    }

    /// A request to this source failed at `now`: it rests for its backoff, which doubles.
    pub(in crate::actor::files) fn failed(&mut self, now: Instant) {
        self.ready_at = now + self.backoff;
        self.backoff = (self.backoff * 2).min(SOURCE_BACKOFF_MAX);
    }

    /// It served a good chunk: a later failure starts from the shortest backoff again.
    fn served(&mut self) {
        self.backoff = SOURCE_BACKOFF;
        self.unavailable = false;
    }
}

/// A download (receive or relay) in progress.
pub(in crate::actor::files) struct Download {
    pub(in crate::actor::files) transfer: Transfer,
    pub(in crate::actor::files) manifest: Option<Arc<FileManifest>>,
    /// Where chunks are written before the file is put in place.
    pub(in crate::actor::files) partial: PathBuf,
    pub(in crate::actor::files) sink: Option<Arc<Mutex<Sink>>>,
    pub(in crate::actor::files) have: Vec<bool>,
    pub(in crate::actor::files) held: u64,
    pub(in crate::actor::files) bytes_done: u64,
    /// Lowest index that may still be missing.
    pub(in crate::actor::files) cursor: u64,
    pub(in crate::actor::files) in_flight: HashMap<u64, PeerId>,
    pub(in crate::actor::files) sources: Vec<Source>,
    /// Sources that sent a bad copy of a chunk: not asked for that chunk again.
    pub(in crate::actor::files) bad_from: HashMap<u64, Vec<PeerId>>,
    pub(in crate::actor::files) unmarked: Vec<u64>,
    pub(in crate::actor::files) manifest_asked: bool,
    pub(in crate::actor::files) finishing: bool,
    pub(in crate::actor::files) last_emit: Instant,
}

impl Download {
    /// A download of `transfer` that knows nothing yet: no manifest, no chunks.
    pub(in crate::actor::files) fn new(transfer: Transfer, partial: PathBuf) -> Self {
        let sources = sources_of(&transfer);
        Download {
            transfer,
            manifest: None,
            partial,
            sink: None,
            have: Vec::new(),
            held: 0,
            bytes_done: 0,
            cursor: 0,
            in_flight: HashMap::new(),
            sources,
            bad_from: HashMap::new(),
            unmarked: Vec::new(),
            manifest_asked: false,
            finishing: false,
            last_emit: Instant::now(),
        }
    }

    pub(in crate::actor::files) fn source_mut(&mut self, peer: PeerId) -> Option<&mut Source> {
        self.sources.iter_mut().find(|s| s.peer == peer)
    }

    /// The chunks held (from the marks) become the download's books: `have`, the count and
    /// the plaintext bytes, each chunk's length from `chunk_len`.
    pub(in crate::actor::files) fn load_held(
        &mut self,
        count: usize,
        held: &[u64],
        chunk_len: impl Fn(u64) -> u64,
    ) {
        let mut have = vec![false; count];
        for index in held {
            if let Some(slot) = usize::try_from(*index).ok().and_then(|i| have.get_mut(i)) {
                *slot = true;
            }
        }
        self.held = have.iter().filter(|h| **h).count() as u64;
        self.bytes_done = have
            .iter()
            .enumerate()
            .filter(|(_, h)| **h)
            .map(|(i, _)| chunk_len(i as u64))
            .sum();
        self.have = have;
    }

    /// Picks the source to ask for the manifest, unless one is asked already: the request
    /// counts against the source's share.
    pub(in crate::actor::files) fn ask_manifest(
        &mut self,
        now: Instant,
    ) -> Option<(PeerId, Vec<Multiaddr>)> {
        if self.manifest_asked {
            return None;
        }
        let source = self.sources.iter_mut().find(|s| s.usable(now))?;
        source.in_flight += 1;
        self.manifest_asked = true;
        Some((source.peer, source.addrs.clone()))
    }

    /// The manifest request to `source` failed or was refused: another (or the same, after
    /// its backoff) is asked next.
    pub(in crate::actor::files) fn manifest_failed(&mut self, source: PeerId, now: Instant) {
        self.manifest_asked = false;
        if let Some(s) = self.source_mut(source) {
            s.in_flight = s.in_flight.saturating_sub(1);
            s.failed(now);
        }
    }

    /// The next chunk requests, up to [`WINDOW`] in flight: the lowest missing chunks, each
    /// from the usable source with the fewest requests in flight that has not sent a bad
    /// copy of it. Each returned `(source, index, addresses)` is counted in flight.
    pub(in crate::actor::files) fn next_requests(
        &mut self,
        count: u64,
        now: Instant,
    ) -> Vec<(PeerId, u64, Vec<Multiaddr>)> {
        let mut requests = Vec::new();
        while self.cursor < count && self.has(self.cursor) {
            self.cursor += 1;
        }
        let mut index = self.cursor;
        while self.in_flight.len() < WINDOW && index < count {
            let i = index;
            index += 1;
            if self.has(i) || self.in_flight.contains_key(&i) {
                continue;
            }
            let avoid = self.bad_from.get(&i);
            let Some(source) = self
                .sources
                .iter_mut()
                .filter(|s| s.usable(now) && avoid.is_none_or(|a| !a.contains(&s.peer)))
                .min_by_key(|s| s.in_flight)
            else {
                break;
            };
            source.in_flight += 1;
            self.in_flight.insert(i, source.peer);
            requests.push((source.peer, i, source.addrs.clone()));
        }
        requests
    }

    fn has(&self, index: u64) -> bool {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.have.get(i))
            .copied()
            .unwrap_or(false)
    }

    /// The request for chunk `index` to `source` is over (answered or not).
    pub(in crate::actor::files) fn release(&mut self, index: u64, source: PeerId) {
        self.in_flight.remove(&index);
        if let Some(s) = self.source_mut(source) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }

    /// `source` answered chunk `index` without it (it does not hold the file yet, or refused
    /// us for good).
    pub(in crate::actor::files) fn chunk_unavailable(
        &mut self,
        index: u64,
        source: PeerId,
        refused: bool,
        now: Instant,
    ) {
        self.release(index, source);
        if let Some(s) = self.source_mut(source) {
            s.unavailable = true;
            s.failed(now);
            if refused {
                s.bad = MAX_BAD;
            }
        }
    }

    /// The request for chunk `index` to `source` failed (unreachable, timed out).
    pub(in crate::actor::files) fn chunk_failed(
        &mut self,
        index: u64,
        source: PeerId,
        now: Instant,
    ) {
        self.release(index, source);
        if let Some(s) = self.source_mut(source) {
            s.failed(now);
        }
    }

    /// Chunk `index` (`len` plaintext bytes) from `source` is written: true when enough
    /// chunks wait for their marks to write a batch.
    pub(in crate::actor::files) fn chunk_stored(
        &mut self,
        index: u64,
        len: u64,
        source: PeerId,
    ) -> bool {
        self.release(index, source);
        if let Some(s) = self.source_mut(source) {
            s.served();
        }
        if let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|i| self.have.get_mut(i))
            && !*slot
        {
            *slot = true;
            self.held += 1;
            self.bytes_done += len;
            self.unmarked.push(index);
        }
        self.unmarked.len() >= MARK_BATCH
    }

    /// Chunk `index` from `source` failed verification: true when no source is left that may
    /// still send a good copy.
    pub(in crate::actor::files) fn chunk_bad(&mut self, index: u64, source: PeerId) -> bool {
        self.release(index, source);
        if let Some(s) = self.source_mut(source) {
            s.bad += 1;
        }
        let bad_from = self.bad_from.entry(index).or_default();
        bad_from.push(source);
        !self
            .sources
            .iter()
            .any(|s| s.bad < MAX_BAD && !bad_from.contains(&s.peer))
    }

    /// These chunks turned out bad on disk: they are fetched again, from the start.
    pub(in crate::actor::files) fn forget(&mut self, bad: &[u64], chunk_len: impl Fn(u64) -> u64) {
        self.finishing = false;
        for &index in bad {
            if let Some(slot) = usize::try_from(index)
                .ok()
                .and_then(|i| self.have.get_mut(i))
                && *slot
            {
                *slot = false;
                self.held -= 1;
                self.bytes_done -= chunk_len(index);
            }
        }
        self.cursor = 0;
    }

    /// Whether the marks not yet written are due: always with `now`, else only when the
    /// download has nothing in flight (idle or stalled) or a batch is full.
    pub(in crate::actor::files) fn marks_due(&self, now: bool) -> bool {
        !self.unmarked.is_empty()
            && (now || self.in_flight.is_empty() || self.unmarked.len() >= MARK_BATCH)
    }
}

pub(in crate::actor::files) fn sources_of(transfer: &Transfer) -> Vec<Source> {
    let mut sources = Vec::new();
    if transfer.role == TransferRole::Receive || transfer.role == TransferRole::Relay {
        sources.push(Source::new(transfer.peer, Vec::new()));
    }
    for (peer, addrs) in &transfer.sources {
        if !sources.iter().any(|s| s.peer == *peer) {
            let addrs = addrs.iter().filter_map(|a| a.parse().ok()).collect();
            sources.push(Source::new(*peer, addrs));
        }
    }
    sources
}

#[cfg(test)]
mod tests;
