//! Sending a file (read and sealed once, then offered in the chat like a text), forwarding a
//! file held here to another contact without sealing it again, asking relays to hold it, and
//! receiving an offer. An offer enters the send pipeline only through [`Actor::queue_send`].

use std::fs;
use std::path::PathBuf;

use encrypto_crypto::envelope;
use encrypto_crypto::file::{FileId, FileKey, FileManifest};
use encrypto_crypto::{MessageId, PeerId};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::io::{PreparedFile, prepare};
use super::{FileJob, FileTransfer, Pending};
use crate::actor::{Actor, NodeError, NodeEvent, Reply, now_ms};
use crate::protocol::{ChatPayload, FileOffer, FileRequest, FileSource};
use crate::store::{
    Body, Direction, OutboxItem, OutboxKind, Status, StoredMessage, Transfer, TransferRole,
    TransferState,
};

/// Largest manifest sent inline in the offer; larger ones are fetched.
const INLINE_MANIFEST_MAX: usize = 32 * 1024;
/// At most this many marked relays are asked to hold a file for an offline recipient.
const MAX_AUTO_RELAYS: usize = 3;

impl Actor {
    pub(in crate::actor) fn send_file(
        &mut self,
        peer: PeerId,
        path: PathBuf,
        via: Vec<PeerId>,
        reply: Reply<FileTransfer>,
    ) {
        let pinned = match self.contact_for_sending(&peer) {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        for relay in &via {
            if *relay == peer || *relay == self.identity.peer_id() {
                let _ = reply.send(Err(NodeError::File(
                    "a relay must be a third peer, not the recipient or this node".into(),
                )));
                return;
            }
        }
        let via = match self.with_marked_relays(peer, via) {
            Ok(via) => via,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let recipient = pinned.public.clone();
        let max = self.config.max_file_size;
        self.files.jobs.spawn_blocking(move || {
            let result = prepare(&path, &recipient, max);
            FileJob::Prepared {
                reply,
                peer,
                path,
                via,
                result,
            }
        });
    }

    /// The relays for a file to `peer`: those named, and, when `peer` is not connected, the
    /// contacts marked as relays (at most [`MAX_AUTO_RELAYS`], connected ones first).
    pub(super) fn with_marked_relays(
        &mut self,
        peer: PeerId,
        mut via: Vec<PeerId>,
    ) -> Result<Vec<PeerId>, NodeError> {
        if self.connected.contains(&peer) {
            return Ok(via);
        }
        let me = self.identity.peer_id();
        let mut marked: Vec<PeerId> = self
            .store
            .contacts()?
            .into_iter()
            .filter(|c| c.relay && !c.key_changed)
            .map(|c| c.peer_id)
            .filter(|r| *r != peer && *r != me && !via.contains(r))
            .collect();
        marked.sort_by_key(|r| !self.connected.contains(r));
        marked.truncate(MAX_AUTO_RELAYS);
        if !marked.is_empty() {
            info!(%peer, relays = ?marked, "the recipient is offline: the file goes to its marked relays too");
        }
        via.extend(marked);
        Ok(via)
    }

    /// The file was read and sealed once: sign the manifest, record the transfer, and queue
    /// the offer in the chat like a text (answered once it is durable).
    pub(super) fn on_prepared(
        &mut self,
        reply: Reply<FileTransfer>,
        peer: PeerId,
        path: PathBuf,
        via: Vec<PeerId>,
        result: Result<Box<PreparedFile>, NodeError>,
    ) {
        let (builder, name, size) = match result {
            Ok(r) => *r,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let path = fs::canonicalize(&path).unwrap_or(path);
        let sha_and_manifest = builder
            .finish(&self.identity, now_ms(), &mut rand::rng())
            .map_err(|e| NodeError::Crypto(e.to_string()))
            .and_then(|(manifest, key)| {
                let meta = manifest
                    .open_meta(&key)
                    .map_err(|e| NodeError::Crypto(e.to_string()))?;
                Ok((manifest, key, meta.sha256))
            });
        let (manifest, key, sha256) = match sha_and_manifest {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        match self.queue_file(peer, manifest, key, name, size, sha256, Some(path), via) {
            Ok((transfer, rx)) => self.reply_when_queued(&transfer, rx, reply),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Records an outgoing transfer and queues its offer; the receiver answers once the offer
    /// is durable in the outbox.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn queue_file(
        &mut self,
        peer: PeerId,
        manifest: FileManifest,
        key: FileKey,
        name: String,
        size: u64,
        sha256: [u8; 32],
        path: Option<PathBuf>,
        via: Vec<PeerId>,
    ) -> Result<(Transfer, oneshot::Receiver<Result<MessageId, NodeError>>), NodeError> {
        let contact = self.contact_for_sending(&peer)?.contact.clone();
        if !contact.listed {
            self.list_contact(&peer)?;
        }
        let manifest_bytes = manifest.to_bytes();
        let manifest_hash = *blake3::hash(&manifest_bytes).as_bytes();
        let sources: Vec<FileSource> = via
            .iter()
            .map(|relay| FileSource {
                peer: relay.to_bytes().into(),
                addrs: self.known_addrs(relay),
            })
            .collect();
        let offer = FileOffer {
            file_id: manifest.file_id,
            name: name.clone(),
            size,
            manifest_hash,
            manifest: (manifest_bytes.len() <= INLINE_MANIFEST_MAX)
                .then(|| manifest_bytes.clone().into()),
            sources,
        };
        let id = MessageId::random(&mut rand::rng());
        let ts = self.next_ts();
        // The relays' copy of the offer: sealed with `rsa` (it opens without any earlier
        // message, whenever it arrives), the same message id (the recipient keeps one), and no
        // inline manifest (the relay serves it).
        let relay_offer = if via.is_empty() {
            None
        } else {
            let public = self.contact_for_sending(&peer)?.public.clone();
            let copy = FileOffer {
                manifest: None,
                ..offer.clone()
            };
            match envelope::seal_rsa(
                &self.identity,
                &public,
                id,
                ts,
                &ChatPayload::File(copy).to_bytes(),
                &mut rand::rng(),
            ) {
                Ok(env) => Some(env.to_bytes()),
                Err(e) => {
                    warn!(error = %e, "the offer does not fit a relayed envelope; relays get only the chunks");
                    None
                }
            }
        };
        let transfer = Transfer {
            file_id: manifest.file_id,
            peer,
            role: TransferRole::Send,
            name: name.clone(),
            size,
            state: TransferState::Offered,
            path,
            out: None,
            sha256: Some(sha256),
            key: Some(key),
            message_id: id,
            created_ms: ts,
            error: None,
            sources: Vec::new(),
            relays: via.clone(),
            manifest_hash,
            offer: None,
        };
        self.store.put_manifest(
            &manifest.file_id,
            TransferRole::Send,
            &peer,
            &manifest_bytes,
        )?;
        self.store.put_transfer(&transfer)?;
        self.files.served.remove(&manifest.file_id);
        let message = StoredMessage {
            id,
            peer,
            direction: Direction::Out,
            timestamp_ms: ts,
            cipher: contact.cipher,
            body: Body::File {
                file_id: *manifest.file_id.as_bytes(),
                name,
                size,
            },
            status: Status::Queued,
            envelope: None,
        };
        let item = OutboxItem {
            id,
            peer,
            created_ms: ts,
            cipher: contact.cipher,
            kind: OutboxKind::Payload(ChatPayload::File(offer).to_bytes()),
            attempts: 0,
        };
        let (tx, rx) = oneshot::channel();
        self.queue_send(message, item, tx);
        for relay in via {
            self.ask_to_hold(
                manifest.file_id,
                relay,
                manifest_bytes.clone(),
                relay_offer.clone(),
            );
        }
        Ok((transfer, rx))
    }

    /// Answers `send_file` / `forward_file` once the offer is durable in the outbox.
    pub(super) fn reply_when_queued(
        &self,
        transfer: &Transfer,
        queued: oneshot::Receiver<Result<MessageId, NodeError>>,
        reply: Reply<FileTransfer>,
    ) {
        let view = self.view(transfer);
        tokio::spawn(async move {
            let result = match queued.await {
                Ok(Ok(_)) => Ok(view),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(NodeError::Stopped),
            };
            let _ = reply.send(result);
        });
    }

    pub(super) fn known_addrs(&self, peer: &PeerId) -> Vec<String> {
        match self.store.peer(peer) {
            Ok(Some(known)) => known.addrs,
            _ => Vec::new(),
        }
    }

    pub(super) fn ask_to_hold(
        &mut self,
        file_id: FileId,
        relay: PeerId,
        manifest: Vec<u8>,
        offer: Option<Vec<u8>>,
    ) {
        let request_id = self.swarm.behaviour_mut().file.send_request(
            &relay,
            FileRequest::Hold {
                manifest: manifest.into(),
                offer: offer.map(Into::into),
            },
        );
        self.files
            .requests
            .insert(request_id, Pending::Hold { file_id, relay });
    }

    /// Sends a file we hold (received complete, or sent) to another contact without sealing
    /// its chunks again: only the key is wrapped anew.
    pub(in crate::actor) fn forward_file(
        &mut self,
        file_id: FileId,
        to: PeerId,
        reply: Reply<FileTransfer>,
    ) {
        let result = (|| {
            let source = self
                .store
                .transfers_of(&file_id)?
                .into_iter()
                .find(|t| {
                    t.key.is_some()
                        && t.path.is_some()
                        && (t.role == TransferRole::Send || t.state == TransferState::Complete)
                })
                .ok_or_else(|| {
                    NodeError::File(format!("no complete copy of file {file_id} is here"))
                })?;
            let bytes = self
                .store
                .manifest(&file_id, source.role, &source.peer)?
                .ok_or_else(|| NodeError::File(format!("the manifest of {file_id} is missing")))?;
            let manifest =
                FileManifest::from_bytes(&bytes).map_err(|e| NodeError::File(e.to_string()))?;
            let key = source.key.clone().ok_or(NodeError::Stopped)?;
            let public = self.contact_for_sending(&to)?.public.clone();
            let forwarded = manifest
                .forward(&key, &self.identity, &public, now_ms(), &mut rand::rng())
                .map_err(|e| NodeError::Crypto(e.to_string()))?;
            self.queue_file(
                to,
                forwarded,
                key,
                source.name.clone(),
                source.size,
                source.sha256.unwrap_or_default(),
                source.path.clone(),
                Vec::new(),
            )
        })();
        match result {
            Ok((transfer, rx)) => self.reply_when_queued(&transfer, rx, reply),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    // ----- receiving an offer ---------------------------------------------------------------

    /// A file offer arrived in a chat envelope: record the transfer (before the message is
    /// acknowledged) and start downloading it if it is small enough.
    pub(in crate::actor) fn receive_offer(
        &mut self,
        peer: PeerId,
        id: MessageId,
        offer: &FileOffer,
    ) -> Result<Body, String> {
        let body = Body::File {
            file_id: *offer.file_id.as_bytes(),
            name: offer.name.clone(),
            size: offer.size,
        };
        let existing = self
            .store
            .transfer(&offer.file_id, TransferRole::Receive, &peer)
            .map_err(|e| format!("store: {e}"))?;
        if existing.is_some() {
            return Ok(body);
        }
        if let Some(inline) = &offer.manifest
            && *blake3::hash(inline).as_bytes() != offer.manifest_hash
        {
            return Err("the inline manifest does not match its hash".into());
        }
        let sources = offer
            .sources
            .iter()
            .filter_map(|s| Some((PeerId::from_bytes(&s.peer).ok()?, s.addrs.clone())))
            .filter(|(p, _)| *p != self.identity.peer_id() && *p != peer)
            .take(8)
            .collect();
        let auto = offer.size <= self.config.auto_download_max;
        let transfer = Transfer {
            file_id: offer.file_id,
            peer,
            role: TransferRole::Receive,
            name: offer.name.clone(),
            size: offer.size,
            state: if auto {
                TransferState::Transferring
            } else {
                TransferState::Offered
            },
            path: None,
            out: None,
            sha256: None,
            key: None,
            message_id: id,
            created_ms: now_ms(),
            error: None,
            sources,
            relays: Vec::new(),
            manifest_hash: offer.manifest_hash,
            offer: None,
        };
        let stored = (|| {
            if let Some(inline) = &offer.manifest {
                self.store
                    .put_manifest(&offer.file_id, TransferRole::Receive, &peer, inline)?;
            }
            self.store.put_transfer(&transfer)
        })();
        stored.map_err(|e| format!("store: {e}"))?;
        self.emit(NodeEvent::FileOffered {
            peer,
            file_id: offer.file_id,
            name: offer.name.clone(),
            size: offer.size,
        });
        if auto {
            self.start_download(transfer);
        }
        Ok(body)
    }
}
