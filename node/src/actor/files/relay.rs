//! Relaying: holding the sealed chunks of a file a contact sends to someone else (blind: the
//! relay cannot read it), passing the sender's sealed offer on to the recipient, taking an
//! offer a relay passes on, and dropping the relayed copy once the recipient has the file.

use std::fs;
use std::time::{Duration, Instant};

use encrypto_crypto::envelope::Envelope;
use encrypto_crypto::file::{FileId, FileManifest};
use encrypto_crypto::{MessageId, PeerId};
use tracing::{info, warn};

use super::{Files, Pending, SOURCE_BACKOFF, TKey, tkey};
use crate::actor::{Actor, Inbound, NodeEvent, now_ms};
use crate::protocol::FileRequest;
use crate::store::{Body, Transfer, TransferRole, TransferState};

/// Longest wait between a relay's attempts to pass an offer on.
const OFFER_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A sender's sealed offer a relay passes on to the recipient.
pub(super) struct RelayOffer {
    pub(super) recipient: PeerId,
    pub(super) envelope: Vec<u8>,
    pub(super) next_at: Instant,
    pub(super) backoff: Duration,
    pub(super) in_flight: bool,
}

impl RelayOffer {
    pub(super) fn new(recipient: PeerId, envelope: Vec<u8>) -> Self {
        RelayOffer {
            recipient,
            envelope,
            next_at: Instant::now(),
            backoff: SOURCE_BACKOFF,
            in_flight: false,
        }
    }
}

impl Files {
    /// The offers due at `now` (not in flight, their backoff over), each marked in flight:
    /// `(transfer, recipient, sealed offer)`.
    pub(super) fn due_offers(&mut self, now: Instant) -> Vec<(TKey, PeerId, Vec<u8>)> {
        self.offers
            .iter_mut()
            .filter(|(_, o)| !o.in_flight && o.next_at <= now)
            .map(|(key, o)| {
                o.in_flight = true;
                (*key, o.recipient, o.envelope.clone())
            })
            .collect()
    }

    /// `peer` connected at `now`: the offers held for it are due at once.
    pub(super) fn offers_due_for(&mut self, peer: PeerId, now: Instant) {
        for o in self.offers.values_mut() {
            if o.recipient == peer {
                o.next_at = now;
            }
        }
    }

    /// The recipient answered the offer of `key` (or could not be reached): taken, it is
    /// forgotten (true if it was held); else it is tried again after its backoff, doubled.
    pub(super) fn offer_answered(&mut self, key: TKey, taken: bool, now: Instant) -> bool {
        if taken {
            return self.offers.remove(&key).is_some();
        }
        if let Some(o) = self.offers.get_mut(&key) {
            o.in_flight = false;
            o.next_at = now + o.backoff;
            o.backoff = (o.backoff * 2).min(OFFER_BACKOFF_MAX);
        }
        false
    }
}

impl Actor {
    /// A contact asks us to hold the sealed chunks of a file it sends to someone else.
    pub(super) fn accept_hold(
        &mut self,
        sender: PeerId,
        bytes: &[u8],
        offer: Option<Vec<u8>>,
    ) -> Result<(), String> {
        let pinned = self
            .pinned(&sender)
            .map_err(|e| e.to_string())?
            .filter(|p| !p.contact.key_changed)
            .ok_or("the sender is not a contact")?;
        let manifest = FileManifest::from_bytes(bytes).map_err(|e| e.to_string())?;
        manifest.verify(&pinned.public).map_err(|e| e.to_string())?;
        if let Some(existing) = self
            .store
            .transfer(&manifest.file_id, TransferRole::Relay, &sender)
            .map_err(|e| e.to_string())?
            && existing.state != TransferState::Failed
        {
            return Ok(());
        }
        let transfer = Transfer {
            file_id: manifest.file_id,
            peer: sender,
            role: TransferRole::Relay,
            name: String::new(),
            size: manifest.size,
            state: TransferState::Transferring,
            path: None,
            out: None,
            sha256: None,
            key: None,
            message_id: MessageId([0; 16]),
            created_ms: now_ms(),
            error: None,
            sources: Vec::new(),
            relays: Vec::new(),
            manifest_hash: *blake3::hash(bytes).as_bytes(),
            offer: offer.clone(),
        };
        self.store
            .put_manifest(&manifest.file_id, TransferRole::Relay, &sender, bytes)
            .and_then(|()| self.store.put_transfer(&transfer))
            .map_err(|e| e.to_string())?;
        info!(%sender, file = %manifest.file_id, size = manifest.size, "holding a file for a contact");
        if let (Some(envelope), Some(recipient)) = (
            offer,
            encrypto_crypto::identity::peer_id_of(&manifest.recipient),
        ) {
            self.files
                .offers
                .insert(tkey(&transfer), RelayOffer::new(recipient, envelope));
        }
        self.start_download(transfer);
        Ok(())
    }

    /// A relay passes on a sender's offer: opened as the sender's own envelope (checked
    /// against the sender's pinned key, de-duplicated by message id), stored, flushed.
    pub(super) fn accept_relayed_offer(
        &mut self,
        relay: PeerId,
        bytes: &[u8],
    ) -> Result<(), String> {
        if !self.allow_inbound(&relay, 1) {
            return Err("rate limited".into());
        }
        let env = Envelope::from_bytes(bytes).map_err(|e| crate::actor::inbound::reason(&e))?;
        let sender = encrypto_crypto::identity::peer_id_of(&env.sender)
            .ok_or("the envelope's sender is not a valid key")?;
        let pinned = self
            .pinned(&sender)
            .map_err(|e| e.to_string())?
            .filter(|p| !p.contact.key_changed)
            .ok_or("the sender is not a contact")?;
        let message = match self.receive_envelope(sender, &pinned.public, bytes)? {
            Inbound::Ack(_) => return Ok(()),
            Inbound::Store(message) => message,
        };
        if !matches!(message.body, Body::File { .. }) {
            return Err("a relay may only pass on file offers".into());
        }
        let fresh = self
            .store
            .write_incoming_many(std::slice::from_ref(&message))
            .and_then(|fresh| self.store.flush().map(|()| fresh))
            .map_err(|e| format!("store: {e}"))?;
        if fresh.first() == Some(&true) {
            if !pinned.contact.listed
                && let Err(e) = self.list_contact(&sender)
            {
                warn!(peer = %sender, error = %e, "cannot list a contact");
            }
            info!(%sender, %relay, "a file offer arrived through a relay");
            self.emit(NodeEvent::MessageReceived {
                peer: sender,
                id: message.id,
                timestamp_ms: message.timestamp_ms,
                cipher: message.cipher,
                body: message.body,
            });
        }
        Ok(())
    }

    /// Relay: passes on the offers it holds to their recipients, each with its own backoff.
    pub(super) fn pump_offers(&mut self) {
        let due = self.files.due_offers(Instant::now());
        for (key, recipient, envelope) in due {
            self.reach_source(recipient);
            let request_id = self.swarm.behaviour_mut().file.send_request(
                &recipient,
                FileRequest::Offer {
                    envelope: envelope.into(),
                },
            );
            self.files
                .requests
                .insert(request_id, Pending::Offer { key });
        }
    }

    /// A peer connected: offers held for it go out now rather than after their backoff.
    pub(in crate::actor) fn files_peer_connected(&mut self, peer: PeerId) {
        self.files.offers_due_for(peer, Instant::now());
    }

    pub(super) fn offer_answered(&mut self, key: TKey, taken: bool) {
        self.files.offer_answered(key, taken, Instant::now());
        if taken && let Ok(Some(mut t)) = self.store.transfer(&key.0, key.1, &key.2) {
            t.offer = None;
            if let Err(e) = self.store.put_transfer(&t) {
                warn!(error = %e, "cannot save a relayed transfer");
            }
        }
    }

    pub(super) fn peer_completed(&mut self, peer: PeerId, file_id: FileId) {
        self.drop_relay_copy(peer, file_id);
        // We sent it to `peer`.
        if let Ok(Some(mut t)) = self.store.transfer(&file_id, TransferRole::Send, &peer)
            && t.state != TransferState::Complete
        {
            t.state = TransferState::Complete;
            if let Err(e) = self.store.put_transfer(&t) {
                warn!(error = %e, "cannot save a finished transfer");
            }
            self.files.sent.remove(&(file_id, peer));
            self.emit(NodeEvent::FileComplete {
                peer,
                file_id,
                role: TransferRole::Send,
                path: t.path.clone(),
                sha256: t.sha256,
            });
        }
    }

    /// The recipient of a file we hold as a relay has it: the sealed copy is deleted (the
    /// record stays, so `files` still shows what was relayed).
    pub(super) fn drop_relay_copy(&mut self, recipient: PeerId, file_id: FileId) {
        let Ok(list) = self.store.transfers_of(&file_id) else {
            return;
        };
        for mut t in list {
            let held = t.path.is_some() || self.files.downloads.contains_key(&tkey(&t));
            if t.role != TransferRole::Relay || !held {
                continue;
            }
            let for_them = self
                .store
                .manifest(&file_id, t.role, &t.peer)
                .ok()
                .flatten()
                .and_then(|bytes| FileManifest::from_bytes(&bytes).ok())
                .and_then(|m| encrypto_crypto::identity::peer_id_of(&m.recipient))
                == Some(recipient);
            if !for_them {
                continue;
            }
            if self.files.downloads.remove(&tkey(&t)).is_some() {
                let _ = self.store.clear_chunks(&file_id, t.role, &t.peer);
            }
            if let Some(path) = t.path.take() {
                let _ = fs::remove_file(&path);
            }
            let partial = self.partial_path(&t);
            let _ = fs::remove_file(partial);
            t.state = TransferState::Complete;
            if let Err(e) = self.store.put_transfer(&t) {
                warn!(error = %e, "cannot save a relayed transfer");
            }
            self.files.served.remove(&file_id);
            info!(file = %file_id, "the recipient has the file; the relayed copy is deleted");
        }
    }
}

#[cfg(test)]
mod tests;
