//! Serving a file's chunks and manifests to the peers it is for (its recipients and the relays
//! chosen for them), from the plaintext (sealed again per request) or a relay's sealed copy,
//! and the sender's progress that follows from it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use encrypto_crypto::PeerId;
use encrypto_crypto::file::{FileId, FileManifest};
use libp2p::request_response::ResponseChannel;
use tracing::debug;

use super::io::{Origin, read_chunk};
use super::{FileJob, PROGRESS_EVERY};
use crate::actor::{Actor, NodeEvent};
use crate::protocol::{FileRequest, FileResponse};
use crate::store::{TransferRole, TransferState};

/// Serving jobs running at once; requests beyond are answered "unavailable" (asked again).
const MAX_SERVING: usize = 64;

/// What the actor serves for one file id: its chunks, to whom.
pub(super) struct Served {
    pub(super) manifest: Arc<FileManifest>,
    /// Send: the plaintext and the key to seal it again. Relay: the sealed chunks.
    pub(super) origin: Origin,
    /// Who may ask: recipients (and the relays chosen for them).
    pub(super) allowed: HashSet<PeerId>,
    /// Each recipient's own manifest (the key is wrapped for each one).
    pub(super) manifests: HashMap<PeerId, Vec<u8>>,
}

#[derive(Default)]
pub(super) struct SendProgress {
    pub(super) chunks: HashSet<u64>,
    pub(super) bytes: u64,
    pub(super) last_emit: Option<Instant>,
}

impl SendProgress {
    /// Chunk `index` (`len` plaintext bytes) was served at `now`: the bytes served so far when
    /// a progress event is due (at most every [`PROGRESS_EVERY`]); a chunk asked again counts
    /// once.
    pub(super) fn served(&mut self, index: u64, len: u64, now: Instant) -> Option<u64> {
        if self.chunks.insert(index) {
            self.bytes += len;
        }
        let due = self
            .last_emit
            .is_none_or(|at| now.saturating_duration_since(at) >= PROGRESS_EVERY);
        if !due {
            return None;
        }
        self.last_emit = Some(now);
        Some(self.bytes)
    }
}

impl Actor {
    /// What we serve for `file_id`, from the cache or the store.
    pub(super) fn served(&mut self, file_id: &FileId) -> Option<Arc<Served>> {
        if let Some(s) = self.files.served.get(file_id) {
            return Some(Arc::clone(s));
        }
        let transfers = self.store.transfers_of(file_id).ok()?;
        let mut served: Option<Served> = None;
        for t in transfers {
            let origin = match t.role {
                TransferRole::Send => match (&t.path, &t.key) {
                    (Some(path), Some(key)) if t.state != TransferState::Failed => Origin::Plain {
                        path: path.clone(),
                        key: key.clone(),
                    },
                    _ => continue,
                },
                TransferRole::Relay if t.state == TransferState::Complete => match &t.path {
                    Some(path) => Origin::Sealed { path: path.clone() },
                    None => continue,
                },
                _ => continue,
            };
            let Ok(Some(bytes)) = self.store.manifest(file_id, t.role, &t.peer) else {
                continue;
            };
            let Ok(manifest) = FileManifest::from_bytes(&bytes) else {
                continue;
            };
            let recipient = encrypto_crypto::identity::peer_id_of(&manifest.recipient);
            let s = served.get_or_insert_with(|| Served {
                manifest: Arc::new(manifest),
                origin: origin.clone(),
                allowed: HashSet::new(),
                manifests: HashMap::new(),
            });
            // A plaintext origin beats a sealed one (it needs no relay copy).
            if matches!(origin, Origin::Plain { .. }) {
                s.origin = origin;
            }
            if let Some(recipient) = recipient {
                s.allowed.insert(recipient);
                s.manifests.insert(recipient, bytes);
            }
            if t.role == TransferRole::Send {
                s.allowed.extend(t.relays.iter().copied());
                for relay in &t.relays {
                    if let Some(bytes) = recipient.and_then(|r| s.manifests.get(&r).cloned()) {
                        s.manifests.entry(*relay).or_insert(bytes);
                    }
                }
            }
        }
        let served = Arc::new(served?);
        self.files.served.insert(*file_id, Arc::clone(&served));
        Some(served)
    }

    pub(super) fn on_file_request(
        &mut self,
        peer: PeerId,
        request: FileRequest,
        channel: ResponseChannel<FileResponse>,
    ) {
        let respond = |actor: &mut Actor, channel, response| {
            let _ = actor
                .swarm
                .behaviour_mut()
                .file
                .send_response(channel, response);
        };
        match request {
            FileRequest::Manifest { file_id } => {
                let response = match self.served(&file_id) {
                    Some(s) => match s.manifests.get(&peer) {
                        Some(bytes) => FileResponse::Manifest(bytes.clone().into()),
                        None => FileResponse::Rejected,
                    },
                    None => FileResponse::Unavailable,
                };
                respond(self, channel, response);
            }
            FileRequest::Chunk { file_id, index } => {
                let Some(served) = self.served(&file_id) else {
                    return respond(self, channel, FileResponse::Unavailable);
                };
                if !served.allowed.contains(&peer) {
                    debug!(%peer, %file_id, "chunk request from a peer the file is not for");
                    return respond(self, channel, FileResponse::Rejected);
                }
                if self.files.serving >= MAX_SERVING {
                    return respond(self, channel, FileResponse::Unavailable);
                }
                self.files.serving += 1;
                self.files.jobs.spawn_blocking(move || {
                    match read_chunk(&served.origin, &served.manifest, index) {
                        Ok(bytes) => {
                            let len = served.manifest.chunk_plain_len(index).unwrap_or(0);
                            FileJob::Served {
                                channel,
                                response: FileResponse::Chunk(bytes.into()),
                                progress: Some((file_id, peer, index, len)),
                                changed: None,
                            }
                        }
                        Err(reason) => {
                            debug!(%file_id, index, %reason, "cannot serve a chunk");
                            let changed =
                                matches!(served.origin, Origin::Plain { .. }).then_some(file_id);
                            FileJob::Served {
                                channel,
                                response: FileResponse::Unavailable,
                                progress: None,
                                changed,
                            }
                        }
                    }
                });
            }
            FileRequest::Hold { manifest, offer } => {
                let offer = offer.map(serde_bytes::ByteBuf::into_vec);
                let response = match self.accept_hold(peer, &manifest, offer) {
                    Ok(()) => FileResponse::Ok,
                    Err(reason) => {
                        debug!(%peer, %reason, "refused to hold a file");
                        self.emit(NodeEvent::Rejected { peer, reason });
                        FileResponse::Rejected
                    }
                };
                respond(self, channel, response);
            }
            FileRequest::Complete { file_id } => {
                self.peer_completed(peer, file_id);
                respond(self, channel, FileResponse::Ok);
            }
            FileRequest::Offer { envelope } => {
                let response = match self.accept_relayed_offer(peer, &envelope) {
                    Ok(()) => FileResponse::Ok,
                    Err(reason) => {
                        debug!(%peer, %reason, "a relayed offer was rejected");
                        self.emit(NodeEvent::Rejected { peer, reason });
                        FileResponse::Rejected
                    }
                };
                respond(self, channel, response);
            }
        }
    }

    pub(super) fn on_served(
        &mut self,
        channel: ResponseChannel<FileResponse>,
        response: FileResponse,
        progress: Option<(FileId, PeerId, u64, u64)>,
        changed: Option<FileId>,
    ) {
        self.files.serving = self.files.serving.saturating_sub(1);
        let _ = self
            .swarm
            .behaviour_mut()
            .file
            .send_response(channel, response);
        if let Some((file_id, peer, index, len)) = progress {
            let p = self.files.sent.entry((file_id, peer)).or_default();
            if let Some(bytes) = p.served(index, len, Instant::now()) {
                // The store is read at most a few times a second, not per chunk; a relay
                // fetching from us has no send transfer and gets no progress event.
                if let Ok(Some(mut t)) = self.store.transfer(&file_id, TransferRole::Send, &peer) {
                    if t.state == TransferState::Offered {
                        t.state = TransferState::Transferring;
                        let _ = self.store.put_transfer(&t);
                    }
                    self.emit(NodeEvent::FileProgress {
                        peer,
                        file_id,
                        role: TransferRole::Send,
                        bytes_done: bytes,
                        size: t.size,
                    });
                }
            }
        }
        if let Some(file_id) = changed {
            self.files.served.remove(&file_id);
            if let Ok(list) = self.store.transfers_of(&file_id) {
                for mut t in list {
                    if t.role == TransferRole::Send && t.state != TransferState::Complete {
                        let reason =
                            "the file changed or went away on disk since it was sent".to_owned();
                        t.state = TransferState::Failed;
                        t.error = Some(reason.clone());
                        let _ = self.store.put_transfer(&t);
                        self.emit(NodeEvent::FileFailed {
                            peer: t.peer,
                            file_id,
                            role: TransferRole::Send,
                            reason,
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
