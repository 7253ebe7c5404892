//! Downloads (a recipient's, or a relay's blind copy): the sources asked, the window of chunk
//! requests in flight, chunks checked and written off the actor's thread, progress, the chunk
//! marks that let a download resume after a restart, and how it finishes or fails.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use encrypto_crypto::PeerId;
use encrypto_crypto::file::{FileId, FileKey, FileManifest, SEALED_CHUNK_OVERHEAD};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::io::{
    ChunkFault, Finish, Sink, SinkMode, describe_io, finish, open_partial, reserve_space,
    store_chunk,
};
use super::relay::RelayOffer;
use super::{FileJob, FileTransfer, PROGRESS_EVERY, Pending, TKey, tkey};
use crate::actor::{Actor, NodeError, NodeEvent};
use crate::protocol::FileRequest;
use crate::store::{Transfer, TransferRole, TransferState};

mod state;

pub(super) use self::state::Download;

/// A checked manifest, with the file key and SHA-256 for a recipient (not for a relay).
pub(super) type CheckedManifest = (FileManifest, Option<FileKey>, Option<[u8; 32]>);

impl Actor {
    pub(super) fn downloads_dir(&self) -> PathBuf {
        self.config.data_dir.join("downloads")
    }

    pub(super) fn partial_path(&self, t: &Transfer) -> PathBuf {
        match t.role {
            TransferRole::Relay => self
                .config
                .data_dir
                .join("relay")
                .join(format!("{}-{}.sealed", t.file_id, t.peer)),
            _ => {
                let dir = t
                    .out
                    .as_deref()
                    .and_then(Path::parent)
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| self.downloads_dir(), Path::to_owned);
                dir.join(format!(".{}.encrypto-part", t.file_id))
            }
        }
    }

    /// Starts (or restarts) downloading a file offered to us.
    pub(in crate::actor) fn fetch_file(
        &mut self,
        file_id: FileId,
        out: Option<PathBuf>,
    ) -> Result<FileTransfer, NodeError> {
        let mut transfer = self
            .store
            .transfers_of(&file_id)?
            .into_iter()
            .find(|t| t.role == TransferRole::Receive)
            .ok_or_else(|| {
                NodeError::File(format!("no file {file_id} was offered to this node"))
            })?;
        if transfer.state == TransferState::Complete {
            return Ok(self.view(&transfer));
        }
        if let Some(out) = out {
            let out = if out.is_dir() {
                out.join(&transfer.name)
            } else {
                out
            };
            if out.exists() {
                return Err(NodeError::File(format!(
                    "{} exists; not overwritten",
                    out.display()
                )));
            }
            if self.files.downloads.contains_key(&tkey(&transfer))
                && transfer.out != Some(out.clone())
            {
                return Err(NodeError::File(
                    "the file is already downloading; wait for it or fetch it again once done"
                        .into(),
                ));
            }
            transfer.out = Some(out);
        }
        transfer.state = TransferState::Transferring;
        transfer.error = None;
        self.store.put_transfer(&transfer)?;
        self.start_download(transfer.clone());
        Ok(self.view(&transfer))
    }

    // ----- downloading ----------------------------------------------------------------------

    pub(super) fn start_download(&mut self, transfer: Transfer) {
        let key = tkey(&transfer);
        if self.files.downloads.contains_key(&key) {
            return;
        }
        let partial = self.partial_path(&transfer);
        self.files
            .downloads
            .insert(key, Download::new(transfer, partial));
        match self.store.manifest(&key.0, key.1, &key.2) {
            Ok(Some(bytes)) => self.manifest_arrived(key, &bytes, None),
            Ok(None) => self.pump(key),
            Err(e) => self.fail_download(key, format!("store: {e}")),
        }
    }

    /// A manifest is known for a download (stored, inline, or fetched from `from`): verify it
    /// against the sender's pinned key, unwrap the file key (recipient), open the partial file
    /// and load the chunk marks.
    pub(super) fn manifest_arrived(&mut self, key: TKey, bytes: &[u8], from: Option<PeerId>) {
        let Some(d) = self.files.downloads.get(&key) else {
            return;
        };
        if d.manifest.is_some() {
            return;
        }
        let expected_hash = d.transfer.manifest_hash;
        let offered_name = d.transfer.name.clone();
        let prepared = (|| -> Result<CheckedManifest, String> {
            if *blake3::hash(bytes).as_bytes() != expected_hash {
                return Err("the manifest does not match the offer".into());
            }
            let manifest = FileManifest::from_bytes(bytes).map_err(|e| e.to_string())?;
            let sender = self
                .pinned(&key.2)
                .map_err(|e| e.to_string())?
                .ok_or("the sender is not a contact")?;
            manifest.verify(&sender.public).map_err(|e| e.to_string())?;
            if manifest.file_id != key.0 {
                return Err("the manifest is for another file".into());
            }
            if key.1 == TransferRole::Relay {
                return Ok((manifest, None, None));
            }
            let file_key = manifest
                .unwrap_key(&self.identity, &mut rand::rng())
                .map_err(|e| e.to_string())?;
            let meta = manifest.open_meta(&file_key).map_err(|e| e.to_string())?;
            // The file is saved under the offer's name: it must be the signed, sealed one,
            // which the crypto crate has checked (no path separator, not `.` or `..`).
            if meta.name != offered_name {
                return Err("the offer's file name differs from the manifest's".into());
            }
            Ok((manifest, Some(file_key), Some(meta.sha256)))
        })();
        let (manifest, file_key, sha256) = match prepared {
            Ok(p) => p,
            Err(reason) => {
                if let Some(source) = from {
                    // A bad manifest from a relay: ask someone else.
                    warn!(%source, %reason, "a manifest was rejected");
                    if let Some(d) = self.files.downloads.get_mut(&key) {
                        if let Some(s) = d.source_mut(source) {
                            s.bad += 1;
                        }
                        d.manifest_asked = false;
                    }
                    self.pump(key);
                } else {
                    self.fail_download(key, reason);
                }
                return;
            }
        };
        if from.is_some()
            && let Err(e) = self.store.put_manifest(&key.0, key.1, &key.2, bytes)
        {
            return self.fail_download(key, format!("store: {e}"));
        }
        let held = match self.store.chunks_held(&key.0, key.1, &key.2) {
            Ok(held) => held,
            Err(e) => return self.fail_download(key, format!("store: {e}")),
        };
        let Some(d) = self.files.downloads.get_mut(&key) else {
            return;
        };
        let count = usize::try_from(manifest.chunk_count()).unwrap_or(0);
        // A partial file lost since (removed by hand) means starting over.
        let partial_exists = d.partial.exists();
        let held = if partial_exists { held } else { Vec::new() };
        d.load_held(count, &held, |i| manifest.chunk_plain_len(i).unwrap_or(0));
        let file = match open_partial(&d.partial) {
            Ok(f) => f,
            Err(e) => {
                let reason = format!("{}: {}", d.partial.display(), describe_io(&e));
                return self.fail_download(key, reason);
            }
        };
        let len = match file_key {
            Some(_) => manifest.size,
            None => manifest.size + manifest.chunk_count() * SEALED_CHUNK_OVERHEAD as u64,
        };
        if let Err(short) = reserve_space(&file, len) {
            drop(file);
            if !partial_exists {
                let _ = fs::remove_file(&d.partial);
            }
            let dir = d
                .partial
                .parent()
                .unwrap_or(&d.partial)
                .display()
                .to_string();
            let reason = match key.1 {
                TransferRole::Receive => format!(
                    "not enough disk space in {dir}: {short}; make room and run \
                     `encrypto fetch {}`",
                    key.0
                ),
                _ => format!("not enough disk space in {dir} to hold the file: {short}"),
            };
            return self.fail_download(key, reason);
        }
        let mode = match &file_key {
            Some(k) => SinkMode::Open {
                key: k.clone(),
                hasher: Sha256::new(),
                hashed: 0,
            },
            None => SinkMode::Blind,
        };
        d.sink = Some(Arc::new(Mutex::new(Sink {
            file,
            mode,
            have: d.have.clone(),
        })));
        d.manifest = Some(Arc::new(manifest));
        if sha256.is_some() || file_key.is_some() {
            d.transfer.sha256 = sha256;
            d.transfer.key = file_key;
        }
        if !partial_exists {
            let _ = self.store.clear_chunks(&key.0, key.1, &key.2);
        }
        let transfer = d.transfer.clone();
        if let Err(e) = self.store.put_transfer(&transfer) {
            warn!(error = %e, "cannot save a transfer");
        }
        self.pump(key);
    }

    /// Issues requests for a download up to its window: the manifest first if missing, then
    /// the lowest missing chunks, each from a usable source.
    pub(super) fn pump(&mut self, key: TKey) {
        let now = Instant::now();
        let Some(d) = self.files.downloads.get_mut(&key) else {
            return;
        };
        if d.finishing {
            return;
        }
        let Some(manifest) = d.manifest.clone() else {
            if let Some((peer, addrs)) = d.ask_manifest(now) {
                for addr in addrs {
                    self.swarm.add_peer_address(peer, addr);
                }
                self.reach_source(peer);
                let request_id = self
                    .swarm
                    .behaviour_mut()
                    .file
                    .send_request(&peer, FileRequest::Manifest { file_id: key.0 });
                self.files
                    .requests
                    .insert(request_id, Pending::Manifest { key, source: peer });
            }
            return;
        };
        let count = manifest.chunk_count();
        if d.held == count {
            return self.finish_download(key);
        }
        let requests = d.next_requests(count, now);
        let mut dialled = HashSet::new();
        for (peer, index, addrs) in requests {
            for addr in addrs {
                self.swarm.add_peer_address(peer, addr);
            }
            if dialled.insert(peer) {
                self.reach_source(peer);
            }
            let request_id = self.swarm.behaviour_mut().file.send_request(
                &peer,
                FileRequest::Chunk {
                    file_id: key.0,
                    index,
                },
            );
            self.files.requests.insert(
                request_id,
                Pending::Chunk {
                    key,
                    index,
                    source: peer,
                },
            );
        }
    }

    /// Dials a source that is not connected at every address remembered for it: libp2p
    /// forgets an address after a failed dial, and a source that restarted is usually back
    /// where it was. Called only when the source's backoff allows a request.
    pub(super) fn reach_source(&mut self, peer: PeerId) {
        if !self.connected.contains(&peer)
            && let Err(e) = self.dial_known(peer)
        {
            debug!(%peer, error = %e, "cannot dial a file source");
        }
    }

    /// Every download gets a chance to issue requests (sources that were backing off may be
    /// ready again). Called on the actor's timer and when a peer connects.
    pub(in crate::actor) fn pump_all(&mut self) {
        let keys: Vec<TKey> = self.files.downloads.keys().copied().collect();
        for key in keys {
            self.pump(key);
        }
        self.pump_offers();
        self.write_marks(false);
    }

    pub(super) fn on_chunk_response(
        &mut self,
        key: TKey,
        index: u64,
        source: PeerId,
        bytes: Vec<u8>,
    ) {
        let Some(d) = self.files.downloads.get_mut(&key) else {
            return;
        };
        let (Some(manifest), Some(sink)) = (d.manifest.clone(), d.sink.clone()) else {
            return;
        };
        let file_key = d
            .transfer
            .key
            .clone()
            .filter(|_| key.1 == TransferRole::Receive);
        self.files.jobs.spawn_blocking(move || FileJob::Stored {
            key,
            index,
            source,
            result: store_chunk(&manifest, file_key.as_ref(), &sink, index, bytes),
        });
    }

    pub(super) fn on_stored(
        &mut self,
        key: TKey,
        index: u64,
        source: PeerId,
        result: Result<u64, ChunkFault>,
    ) {
        let Some(d) = self.files.downloads.get_mut(&key) else {
            return;
        };
        match result {
            Ok(len) => {
                let full = d.chunk_stored(index, len, source);
                self.progress(key, false);
                if full {
                    self.write_marks(true);
                }
                self.pump(key);
            }
            Err(ChunkFault::Bad(reason)) => {
                warn!(%source, index, %reason, "a chunk failed verification; asking another source");
                let stuck = d.chunk_bad(index, source);
                self.emit(NodeEvent::Rejected {
                    peer: source,
                    reason: format!("chunk {index} of file {}: {reason}", key.0),
                });
                if stuck {
                    self.fail_download(
                        key,
                        format!("chunk {index} failed verification from every source"),
                    );
                } else {
                    self.pump(key);
                }
            }
            Err(ChunkFault::Io(reason)) => {
                d.release(index, source);
                let reason = format!("cannot write {}: {reason}", d.partial.display());
                self.fail_download(key, reason);
            }
            Err(ChunkFault::DiskFull) => {
                d.release(index, source);
                self.disk_full(key);
            }
        }
    }

    /// Writes the chunk marks not yet written (all downloads). With `now` false, only for
    /// downloads that have nothing in flight (idle or stalled), so marks are never far behind.
    pub(in crate::actor) fn write_marks(&mut self, now: bool) {
        let mut wrote = false;
        for (key, d) in &mut self.files.downloads {
            if !d.marks_due(now) {
                continue;
            }
            let marks = std::mem::take(&mut d.unmarked);
            match self.store.mark_chunks(&key.0, key.1, &key.2, &marks) {
                Ok(()) => wrote = true,
                Err(e) => {
                    warn!(error = %e, "cannot record received chunks; they will be fetched again");
                }
            }
        }
        if wrote {
            // Flushed with the next group commit, off the actor's thread.
            self.note_write();
        }
    }

    pub(super) fn progress(&mut self, key: TKey, force: bool) {
        let Some(d) = self.files.downloads.get_mut(&key) else {
            return;
        };
        if !force && d.last_emit.elapsed() < PROGRESS_EVERY {
            return;
        }
        d.last_emit = Instant::now();
        let event = NodeEvent::FileProgress {
            peer: key.2,
            file_id: key.0,
            role: key.1,
            bytes_done: d.bytes_done,
            size: d.transfer.size,
        };
        self.emit(event);
    }

    pub(super) fn finish_download(&mut self, key: TKey) {
        self.write_marks(true);
        let Some(d) = self.files.downloads.get_mut(&key) else {
            return;
        };
        if d.finishing {
            return;
        }
        let (Some(manifest), Some(sink)) = (d.manifest.clone(), d.sink.clone()) else {
            return;
        };
        d.finishing = true;
        let expected = d.transfer.sha256;
        let partial = d.partial.clone();
        let target = match key.1 {
            TransferRole::Relay => None,
            _ => Some(match &d.transfer.out {
                Some(out) => (out.clone(), false),
                None => (
                    self.config
                        .data_dir
                        .join("downloads")
                        .join(&d.transfer.name),
                    false,
                ),
            }),
        };
        self.progress(key, true);
        self.files.jobs.spawn_blocking(move || FileJob::Finished {
            key,
            result: finish(&manifest, &sink, expected, &partial, target),
        });
    }

    pub(super) fn on_finished(&mut self, key: TKey, result: Result<PathBuf, Finish>) {
        match result {
            Ok(path) => {
                let Some(d) = self.files.downloads.remove(&key) else {
                    return;
                };
                let mut t = d.transfer;
                t.state = TransferState::Complete;
                t.path = Some(path.clone());
                t.error = None;
                if let Err(e) = self.store.put_transfer(&t) {
                    warn!(error = %e, "cannot save a finished transfer");
                }
                if key.1 == TransferRole::Receive {
                    let _ = self.store.clear_chunks(&key.0, key.1, &key.2);
                    // Tell the sender and the relays (best effort: it only updates their
                    // display, and lets relays drop their copy).
                    for s in &d.sources {
                        let request_id = self
                            .swarm
                            .behaviour_mut()
                            .file
                            .send_request(&s.peer, FileRequest::Complete { file_id: key.0 });
                        self.files.requests.insert(request_id, Pending::Complete);
                    }
                } else {
                    self.files.served.remove(&key.0);
                }
                let _ = self.store.flush();
                info!(file = %key.0, path = %path.display(), "file complete");
                self.emit(NodeEvent::FileComplete {
                    peer: key.2,
                    file_id: key.0,
                    role: key.1,
                    path: Some(path),
                    sha256: t.sha256,
                });
            }
            Err(Finish::Repair(bad)) => {
                let Some(d) = self.files.downloads.get_mut(&key) else {
                    return;
                };
                warn!(file = %key.0, chunks = bad.len(), "chunks damaged on disk; fetching them again");
                let manifest = d.manifest.clone();
                d.forget(&bad, |i| {
                    manifest
                        .as_ref()
                        .map_or(0, |m| m.chunk_plain_len(i).unwrap_or(0))
                });
                for index in bad {
                    let _ = self.store.unmark_chunk(&key.0, key.1, &key.2, index);
                }
                self.pump(key);
            }
            Err(Finish::Fail(reason)) => {
                if let Some(d) = self.files.downloads.get_mut(&key) {
                    d.finishing = false;
                }
                self.fail_download(key, reason);
            }
        }
    }

    /// A download filled the disk: it fails, and its partial file is removed at once so the
    /// rest of the node (the store, chats) and the machine have room again. The chunks are
    /// fetched again by a later `fetch`.
    pub(super) fn disk_full(&mut self, key: TKey) {
        let Some(partial) = self.files.downloads.get(&key).map(|d| d.partial.clone()) else {
            return;
        };
        let dir = partial.parent().unwrap_or(&partial).display().to_string();
        // Forget the marks first: they must never claim chunks the removed file held.
        if let Some(d) = self.files.downloads.get_mut(&key) {
            d.unmarked.clear();
        }
        if let Err(e) = self.store.clear_chunks(&key.0, key.1, &key.2) {
            warn!(error = %e, "cannot clear the chunk marks of a download that filled the disk");
        }
        if let Err(e) = fs::remove_file(&partial) {
            warn!(path = %partial.display(), error = %e, "cannot remove a partial download");
        }
        let reason = match key.1 {
            TransferRole::Receive => format!(
                "the disk is full ({dir}): the partial download was removed to free the space; \
                 make room and run `encrypto fetch {}` to download it again",
                key.0
            ),
            _ => format!("the disk is full ({dir}): the relayed copy was removed"),
        };
        self.fail_download(key, reason);
    }

    pub(super) fn fail_download(&mut self, key: TKey, reason: String) {
        warn!(file = %key.0, %reason, "file transfer failed");
        self.write_marks(true);
        let transfer = match self.files.downloads.remove(&key) {
            Some(d) => Some(d.transfer),
            None => self.store.transfer(&key.0, key.1, &key.2).ok().flatten(),
        };
        if let Some(mut t) = transfer {
            t.state = TransferState::Failed;
            t.error = Some(reason.clone());
            if let Err(e) = self.store.put_transfer(&t) {
                warn!(error = %e, "cannot save a failed transfer");
            }
        }
        self.emit(NodeEvent::FileFailed {
            peer: key.2,
            file_id: key.0,
            role: key.1,
            reason,
        });
    }

    /// After a start: downloads that were running go on from the chunks held.
    pub(in crate::actor) fn resume_files(&mut self) {
        match self.store.transfers() {
            Ok(all) => {
                for t in all {
                    if t.role == TransferRole::Relay
                        && let Some(envelope) = t.offer.clone()
                        && let Ok(Some(bytes)) = self.store.manifest(&t.file_id, t.role, &t.peer)
                        && let Ok(m) = FileManifest::from_bytes(&bytes)
                        && let Some(recipient) = encrypto_crypto::identity::peer_id_of(&m.recipient)
                    {
                        self.files
                            .offers
                            .insert(tkey(&t), RelayOffer::new(recipient, envelope));
                    }
                    if t.role != TransferRole::Send && t.state == TransferState::Transferring {
                        self.start_download(t);
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot read file transfers"),
        }
    }

    pub(super) fn manifest_failed(&mut self, key: TKey, source: PeerId) {
        if let Some(d) = self.files.downloads.get_mut(&key) {
            d.manifest_failed(source, Instant::now());
        }
        self.pump(key);
    }
}
