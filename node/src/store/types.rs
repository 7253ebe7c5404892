//! What the store keeps, as the node sees it, and the private record forms written (sealed) to
//! disk.
//!
//! The public types carry no serde: their on-disk form is the private `*Record` mirror next
//! to each, so the disk format can evolve without changing the node's API and the API can
//! change without silently changing the disk format. Records are packed CBOR (fields keyed by
//! index): append new fields at the end with `#[serde(default)]`, never reorder.

use std::fmt;

use encrypto_crypto::fingerprint::Fingerprint;
use encrypto_crypto::{Cipher, MessageId, PeerId, PublicIdentity};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// A contact: a peer whose keys are pinned, with the cipher chosen for the chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The contact's PeerId (its Ed25519 key).
    pub peer_id: PeerId,
    /// Display name (from its profile, or chosen locally).
    pub name: String,
    /// The contact's `SignedProfile`, as CBOR.
    pub profile: Vec<u8>,
    /// Pinned Ed25519 public key.
    pub ed25519: [u8; 32],
    /// Pinned RSA public key, SubjectPublicKeyInfo DER.
    pub rsa_der: Vec<u8>,
    /// Cipher of this chat.
    pub cipher: Cipher,
    /// The user compared safety numbers.
    pub verified: bool,
    /// The peer presented a key other than the pinned one; the user has not accepted it.
    pub key_changed: bool,
    /// When the contact was added, Unix milliseconds.
    pub added_ms: u64,
    /// The signed profile (CBOR) the peer presented with keys other than the pinned ones,
    /// kept so the user can accept the new keys after comparing safety numbers; `None`
    /// unless `key_changed`.
    pub pending_profile: Option<Vec<u8>>,
    /// Shown in the contact list: the user added this peer, or a chat with it exists. Every
    /// peer whose profile was verified has its keys pinned (trust on first use), but only
    /// these are the user's contacts.
    pub listed: bool,
    /// The user trusts this contact to hold sealed files for others: when a recipient is
    /// offline, files go to it automatically (it never gets the key, only sealed chunks).
    pub relay: bool,
}

impl Contact {
    /// The pinned public keys.
    ///
    /// # Errors
    /// If the stored keys do not parse (a damaged record).
    pub fn public(&self) -> Result<PublicIdentity, encrypto_crypto::identity::IdentityError> {
        PublicIdentity::from_bytes(&self.ed25519, &self.rsa_der)
    }

    /// The fingerprint of the pinned keys, or `None` if they do not parse.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.public().ok().map(|p| p.fingerprint())
    }
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Received from the peer.
    In,
    /// Sent by us.
    Out,
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Outgoing, accepted by `send`, not yet handed to the peer.
    Queued,
    /// Outgoing, handed to the peer, no acknowledgement yet.
    Sent,
    /// Outgoing, acknowledged by the peer (stored durably there).
    Delivered,
    /// Incoming.
    Received,
}

/// The content of a message. `Debug` does not print text or file names.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A text message.
    Text(String),
    /// A file offer.
    File {
        /// The file's id.
        #[serde(with = "serde_bytes")]
        file_id: [u8; 16],
        /// The file's name.
        name: String,
        /// Its size in bytes.
        size: u64,
    },
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Text(text) => write!(f, "Text({} bytes)", text.len()),
            Body::File { size, .. } => f
                .debug_struct("File")
                .field("size", size)
                .finish_non_exhaustive(),
        }
    }
}

/// One message of a chat's history.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message id (chosen by the sender).
    pub id: MessageId,
    /// The other side of the chat.
    pub peer: PeerId,
    /// Which way it went.
    pub direction: Direction,
    /// The time it is filed under, Unix milliseconds: when it was sent (outgoing) or the
    /// sender's timestamp (incoming). Part of its key: keep it to find the message again.
    pub timestamp_ms: u64,
    /// The cipher it was sent with.
    pub cipher: Cipher,
    /// Its content.
    pub body: Body,
    /// Its delivery state.
    pub status: Status,
    /// The sealed envelope as sent or received, for "show ciphertext".
    pub envelope: Option<Vec<u8>>,
}

impl fmt::Debug for StoredMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredMessage")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("direction", &self.direction)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("cipher", &self.cipher)
            .field("body", &self.body)
            .field("status", &self.status)
            .field("envelope_len", &self.envelope.as_ref().map(Vec::len))
            .finish()
    }
}

/// What an outbox item sends. The plaintext is kept (sealed at rest) rather than the
/// envelope, so that after a restart the node re-seals it under its current session with the
/// same message id; the receiver de-duplicates by that id. Variants are appended, never
/// reordered (they are stored by index).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OutboxKind {
    /// A chat message's text.
    Text(String),
    /// A control payload (cipher switch, delete chat), encoded: the node decides whether it
    /// resends these bytes or re-signs the event.
    Control(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Any other chat payload (a file offer), encoded: sealed in an envelope like a text.
    Payload(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl fmt::Debug for OutboxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboxKind::Text(text) => write!(f, "Text({} bytes)", text.len()),
            OutboxKind::Control(bytes) => write!(f, "Control({} bytes)", bytes.len()),
            OutboxKind::Payload(bytes) => write!(f, "Payload({} bytes)", bytes.len()),
        }
    }
}

/// Something accepted for sending and not yet acknowledged by the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// The message (or control payload) id; the acknowledgement names it.
    pub id: MessageId,
    /// The recipient.
    pub peer: PeerId,
    /// When it was accepted, Unix milliseconds. Part of its key, and equal to the history
    /// entry's `timestamp_ms` for chat messages.
    pub created_ms: u64,
    /// The cipher to send it with.
    pub cipher: Cipher,
    /// What to send.
    pub kind: OutboxKind,
    /// Delivery attempts so far.
    pub attempts: u32,
}

/// An outgoing message or control payload the peer acknowledged (see
/// [`Store::write_completed_many`](crate::store::Store::write_completed_many)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    /// Its id.
    pub id: MessageId,
    /// Its outbox item's `created_ms` (part of the key).
    pub created_ms: u64,
    /// The sealed envelope the peer holds, recorded in the history entry for "show
    /// ciphertext" (`None` for a control payload, which has no entry).
    pub envelope: Option<Vec<u8>>,
}

/// A peer the node has learned about, remembered across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPeer {
    /// The peer.
    pub peer_id: PeerId,
    /// Its name, if a profile told us.
    pub name: Option<String>,
    /// Its addresses, as multiaddr strings.
    pub addrs: Vec<String>,
    /// How it was found (`mdns`, `kad`, `identify`, ...).
    pub via: String,
    /// When it was last seen, Unix milliseconds.
    pub last_seen_ms: u64,
}

fn peer_from(bytes: &[u8]) -> Result<PeerId, String> {
    PeerId::from_bytes(bytes).map_err(|_| "invalid peer id".to_owned())
}

#[derive(Serialize, Deserialize)]
pub(super) struct ContactRecord {
    peer_id: ByteBuf,
    name: String,
    profile: ByteBuf,
    #[serde(with = "serde_bytes")]
    ed25519: [u8; 32],
    rsa_der: ByteBuf,
    cipher: Cipher,
    verified: bool,
    key_changed: bool,
    added_ms: u64,
    #[serde(default)]
    pending_profile: Option<ByteBuf>,
    /// Records written before this field existed were all contacts.
    #[serde(default = "listed_by_default")]
    listed: bool,
    #[serde(default)]
    relay: bool,
}

fn listed_by_default() -> bool {
    true
}

impl From<&Contact> for ContactRecord {
    fn from(c: &Contact) -> Self {
        ContactRecord {
            peer_id: ByteBuf::from(c.peer_id.to_bytes()),
            name: c.name.clone(),
            profile: ByteBuf::from(c.profile.clone()),
            ed25519: c.ed25519,
            rsa_der: ByteBuf::from(c.rsa_der.clone()),
            cipher: c.cipher,
            verified: c.verified,
            key_changed: c.key_changed,
            added_ms: c.added_ms,
            pending_profile: c.pending_profile.clone().map(ByteBuf::from),
            listed: c.listed,
            relay: c.relay,
        }
    }
}

impl TryFrom<ContactRecord> for Contact {
    type Error = String;

    fn try_from(r: ContactRecord) -> Result<Self, String> {
        Ok(Contact {
            peer_id: peer_from(&r.peer_id)?,
            name: r.name,
            profile: r.profile.into_vec(),
            ed25519: r.ed25519,
            rsa_der: r.rsa_der.into_vec(),
            cipher: r.cipher,
            verified: r.verified,
            key_changed: r.key_changed,
            added_ms: r.added_ms,
            pending_profile: r.pending_profile.map(ByteBuf::into_vec),
            listed: r.listed,
            relay: r.relay,
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct MessageRecord {
    id: MessageId,
    peer: ByteBuf,
    pub(super) direction: Direction,
    timestamp_ms: u64,
    cipher: Cipher,
    body: Body,
    pub(super) status: Status,
    pub(super) envelope: Option<ByteBuf>,
}

impl From<&StoredMessage> for MessageRecord {
    fn from(m: &StoredMessage) -> Self {
        MessageRecord {
            id: m.id,
            peer: ByteBuf::from(m.peer.to_bytes()),
            direction: m.direction,
            timestamp_ms: m.timestamp_ms,
            cipher: m.cipher,
            body: m.body.clone(),
            status: m.status,
            envelope: m.envelope.clone().map(ByteBuf::from),
        }
    }
}

impl TryFrom<MessageRecord> for StoredMessage {
    type Error = String;

    fn try_from(r: MessageRecord) -> Result<Self, String> {
        Ok(StoredMessage {
            id: r.id,
            peer: peer_from(&r.peer)?,
            direction: r.direction,
            timestamp_ms: r.timestamp_ms,
            cipher: r.cipher,
            body: r.body,
            status: r.status,
            envelope: r.envelope.map(ByteBuf::into_vec),
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct OutboxRecord {
    id: MessageId,
    peer: ByteBuf,
    created_ms: u64,
    cipher: Cipher,
    kind: OutboxKind,
    attempts: u32,
}

impl From<&OutboxItem> for OutboxRecord {
    fn from(o: &OutboxItem) -> Self {
        OutboxRecord {
            id: o.id,
            peer: ByteBuf::from(o.peer.to_bytes()),
            created_ms: o.created_ms,
            cipher: o.cipher,
            kind: o.kind.clone(),
            attempts: o.attempts,
        }
    }
}

impl TryFrom<OutboxRecord> for OutboxItem {
    type Error = String;

    fn try_from(r: OutboxRecord) -> Result<Self, String> {
        Ok(OutboxItem {
            id: r.id,
            peer: peer_from(&r.peer)?,
            created_ms: r.created_ms,
            cipher: r.cipher,
            kind: r.kind,
            attempts: r.attempts,
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct PeerRecord {
    peer_id: ByteBuf,
    name: Option<String>,
    addrs: Vec<String>,
    via: String,
    last_seen_ms: u64,
}

impl From<&KnownPeer> for PeerRecord {
    fn from(p: &KnownPeer) -> Self {
        PeerRecord {
            peer_id: ByteBuf::from(p.peer_id.to_bytes()),
            name: p.name.clone(),
            addrs: p.addrs.clone(),
            via: p.via.clone(),
            last_seen_ms: p.last_seen_ms,
        }
    }
}

impl TryFrom<PeerRecord> for KnownPeer {
    type Error = String;

    fn try_from(r: PeerRecord) -> Result<Self, String> {
        Ok(KnownPeer {
            peer_id: peer_from(&r.peer_id)?,
            name: r.name,
            addrs: r.addrs,
            via: r.via,
            last_seen_ms: r.last_seen_ms,
        })
    }
}

/// A seen message id's record: only when it was seen, so old entries can be pruned.
#[derive(Serialize, Deserialize)]
pub(super) struct SeenRecord {
    pub(super) timestamp_ms: u64,
}
