//! Each method's result, and the events `subscribe` streams: the objects scripts see (the CLI
//! prints these same objects with `--json`). Ids, peer ids, addresses and hashes travel as
//! strings; a field that can be unknown is `null`, never left out (except a file message's
//! `name` and `size` in `history`, which only file messages have).

use encrypto_crypto::{Cipher, PeerId};
use serde::{Deserialize, Serialize};

use super::params::Source;
use crate::view::{
    Body, Contact, Direction, Message as StoredMessage, Status, TransferRole, TransferState,
};
use crate::{DirectoryEntry, FileTransfer};
use crate::{Multiaddr, NodeEvent, PeerInfo};

/// `whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    /// The display name.
    pub name: String,
    /// The peer id.
    pub peer_id: String,
    /// The fingerprint of the keys (six groups of five digits).
    pub fingerprint: String,
    /// Where the node listens.
    pub listen_addrs: Vec<String>,
}

/// One entry of `peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Its peer id.
    pub peer_id: String,
    /// Its verified profile name; null until verified.
    pub name: Option<String>,
    /// Addresses it was seen at.
    pub addrs: Vec<String>,
    /// A connection is open now.
    pub connected: bool,
    /// `mdns`, `kad`, `direct` or `relay`.
    pub via: String,
}

impl From<&PeerInfo> for Peer {
    fn from(p: &PeerInfo) -> Self {
        Peer {
            peer_id: p.peer_id.to_string(),
            name: p.name.clone(),
            addrs: strings(&p.addrs),
            connected: p.connected,
            via: p.via.as_str().to_owned(),
        }
    }
}

/// One entry of `search`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// Its peer id.
    pub peer_id: String,
    /// Its name (null for a known peer whose profile was not verified).
    pub name: Option<String>,
    /// Its fingerprint (null for a local peer whose keys are not pinned).
    pub fingerprint: Option<String>,
    /// Where it was found.
    pub source: Source,
}

impl Found {
    /// A local match; `contact` is the pinned contact of that peer, if any.
    pub fn local(p: &PeerInfo, contact: Option<&Contact>) -> Self {
        Found {
            peer_id: p.peer_id.to_string(),
            name: p.name.clone(),
            fingerprint: contact
                .and_then(Contact::fingerprint)
                .map(|f| f.to_string()),
            source: Source::Local,
        }
    }
}

impl From<&DirectoryEntry> for Found {
    fn from(entry: &DirectoryEntry) -> Self {
        Found {
            peer_id: entry.peer_id.to_string(),
            name: Some(entry.name.clone()),
            fingerprint: Some(entry.fingerprint.to_string()),
            source: Source::Dht,
        }
    }
}

/// `add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Added {
    /// Its peer id.
    pub peer_id: String,
    /// Its name.
    pub name: String,
    /// Its fingerprint.
    pub fingerprint: Option<String>,
    /// Whether it was verified (before).
    pub verified: bool,
}

impl From<&Contact> for Added {
    fn from(c: &Contact) -> Self {
        Added {
            peer_id: c.peer_id.to_string(),
            name: c.name.clone(),
            fingerprint: c.fingerprint().map(|f| f.to_string()),
            verified: c.verified,
        }
    }
}

/// One entry of `contacts`; also what `relay` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactInfo {
    /// Its peer id.
    pub peer_id: String,
    /// Its name.
    pub name: String,
    /// Its fingerprint.
    pub fingerprint: Option<String>,
    /// The chat's cipher.
    pub cipher: Cipher,
    /// Safety numbers were compared.
    pub verified: bool,
    /// It presented other keys than the pinned ones (sending is refused until `verify`).
    pub key_changed: bool,
    /// It is marked as a relay for our files.
    pub relay: bool,
}

impl From<&Contact> for ContactInfo {
    fn from(c: &Contact) -> Self {
        ContactInfo {
            peer_id: c.peer_id.to_string(),
            name: c.name.clone(),
            fingerprint: c.fingerprint().map(|f| f.to_string()),
            cipher: c.cipher,
            verified: c.verified,
            key_changed: c.key_changed,
            relay: c.relay,
        }
    }
}

/// `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// Its peer id.
    pub peer_id: String,
    /// Its name.
    pub name: String,
    /// The 60-digit safety number, the same on both sides.
    pub safety_number: String,
    /// Whether it is marked verified now.
    pub verified: bool,
    /// Whether its keys changed (and were not accepted).
    pub key_changed: bool,
}

/// Where a sent message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendStatus {
    /// Durable in the outbox, not yet acknowledged.
    Queued,
    /// Acknowledged by the peer.
    Delivered,
}

/// `send` (and the `data` of its timeout error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The message id.
    pub id: String,
    /// Where it is.
    pub status: SendStatus,
}

/// `in` or `out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Way {
    /// From the peer.
    In,
    /// From us.
    Out,
}

impl From<Direction> for Way {
    fn from(d: Direction) -> Self {
        match d {
            Direction::In => Way::In,
            Direction::Out => Way::Out,
        }
    }
}

/// One message of `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The message id.
    pub id: String,
    /// The contact's peer id.
    pub peer: String,
    /// Who sent it.
    pub direction: Way,
    /// The text; null for a file.
    pub text: Option<String>,
    /// The file id of a file message; null for a text.
    pub file_id: Option<String>,
    /// Its cipher.
    pub cipher: Cipher,
    /// The sender's time, Unix milliseconds.
    pub timestamp: u64,
    /// `queued` until the peer acknowledged it, then `delivered` (incoming messages are
    /// `delivered`).
    pub status: SendStatus,
    /// A file message's file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A file message's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl From<&StoredMessage> for Message {
    fn from(m: &StoredMessage) -> Self {
        let (text, file_id, name, size) = match &m.body {
            Body::Text(text) => (Some(text.clone()), None, None, None),
            Body::File {
                file_id,
                name,
                size,
            } => (
                None,
                Some(hex::encode(file_id)),
                Some(name.clone()),
                Some(*size),
            ),
        };
        Message {
            id: m.id.to_string(),
            peer: m.peer.to_string(),
            direction: m.direction.into(),
            text,
            file_id,
            cipher: m.cipher,
            timestamp: m.timestamp_ms,
            status: match m.status {
                // The node never records `Sent` (a message is queued until acknowledged);
                // should an old store hold one, it is still waiting for its acknowledgement.
                Status::Queued | Status::Sent => SendStatus::Queued,
                // An incoming message is in the history because it was delivered here.
                Status::Delivered | Status::Received => SendStatus::Delivered,
            },
            name,
            size,
        }
    }
}

/// `cipher`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CipherSet {
    /// The contact's peer id.
    pub peer: String,
    /// The chat's cipher now.
    pub cipher: Cipher,
}

/// `delete-chat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatDeleted {
    /// The contact's peer id.
    pub peer: String,
    /// How many messages were deleted here.
    pub deleted: u64,
    /// The contact was asked to delete it too.
    pub for_both: bool,
}

/// `passwd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// Always true.
    pub ok: bool,
}

/// `subscribe`'s reply, before the events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// Always true.
    pub subscribed: bool,
}

/// `send-file` and `forward`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The file id.
    pub file_id: String,
    /// The file name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its content, hex.
    pub sha256: Option<String>,
    /// The peers asked to hold it for the recipient.
    pub relays: Vec<String>,
}

impl From<&FileTransfer> for Offer {
    fn from(f: &FileTransfer) -> Self {
        Offer {
            file_id: f.file_id.to_string(),
            name: f.name.clone(),
            size: f.size,
            sha256: f.sha256.map(hex::encode),
            relays: peer_strings(&f.relays),
        }
    }
}

/// Our part in a transfer: `out` (we send), `in` (we receive), `relay` (we hold it sealed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// We send it.
    Out,
    /// We receive it.
    In,
    /// We hold its sealed chunks for someone else.
    Relay,
}

impl From<TransferRole> for Part {
    fn from(role: TransferRole) -> Self {
        match role {
            TransferRole::Send => Part::Out,
            TransferRole::Receive => Part::In,
            TransferRole::Relay => Part::Relay,
        }
    }
}

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// Offered, not started.
    Offered,
    /// Moving.
    Transferring,
    /// Done.
    Complete,
    /// Stopped with an error.
    Failed,
}

impl From<TransferState> for FileState {
    fn from(state: TransferState) -> Self {
        match state {
            TransferState::Offered => FileState::Offered,
            TransferState::Transferring => FileState::Transferring,
            TransferState::Complete => FileState::Complete,
            TransferState::Failed => FileState::Failed,
        }
    }
}

/// One entry of `files`; also what `fetch` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The file id.
    pub file_id: String,
    /// The other side's peer id.
    pub peer: String,
    /// The file name (empty for a relay, which cannot read it).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Our part.
    pub direction: Part,
    /// Where it is.
    pub state: FileState,
    /// Plaintext bytes moved so far.
    pub bytes_done: u64,
    /// The received file once complete, or the file sent.
    pub path: Option<String>,
    /// SHA-256 of its content, hex (null for a relay).
    pub sha256: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The peers asked to hold a file we send.
    pub relays: Vec<String>,
}

impl From<&FileTransfer> for FileInfo {
    fn from(f: &FileTransfer) -> Self {
        FileInfo {
            file_id: f.file_id.to_string(),
            peer: f.peer.to_string(),
            name: f.name.clone(),
            size: f.size,
            direction: f.role.into(),
            state: f.state.into(),
            bytes_done: f.bytes_done,
            path: f.path.as_ref().map(|p| p.display().to_string()),
            sha256: f.sha256.map(hex::encode),
            error: f.error.clone(),
            relays: peer_strings(&f.relays),
        }
    }
}

/// One event notification's content: when and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventNote {
    /// When it happened here, Unix milliseconds.
    pub timestamp: u64,
    /// What happened (its `event` member names it).
    #[serde(flatten)]
    pub event: Event,
}

/// What `subscribe` streams, by its `event` name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
#[allow(missing_docs)] // the fields are documented in docs/rpc.md's event table
pub enum Event {
    /// A message arrived.
    Message {
        id: String,
        from: String,
        text: Option<String>,
        file_id: Option<String>,
        cipher: Cipher,
        sent_at: u64,
    },
    /// A message was acknowledged.
    Delivered { id: String, to: String },
    /// A peer was found.
    PeerDiscovered { peer_id: String, via: String },
    /// A connection opened.
    PeerConnected { peer_id: String },
    /// The last connection closed.
    PeerDisconnected { peer_id: String },
    /// A chat's cipher was switched (`by` is the peer id of whoever switched it).
    CipherChanged {
        peer: String,
        cipher: Cipher,
        by: String,
    },
    /// A chat was deleted.
    ChatDeleted {
        peer: String,
        by: String,
        deleted: u64,
    },
    /// A contact presented other keys.
    KeyChanged { peer_id: String },
    /// A peer refused this build's message protocol.
    PeerIncompatible { peer_id: String },
    /// A peer's signed profile was verified.
    ProfileVerified { peer_id: String, name: String },
    /// The node listens on a new address.
    Listening { addr: String },
    /// Hole punching ended (`direct`: it made the connection direct).
    HolePunch { peer_id: String, direct: bool },
    /// A frame was dropped, or a chunk failed verification.
    Rejected { peer_id: String, reason: String },
    /// A file was offered to us.
    FileOffered {
        file_id: String,
        from: String,
        name: String,
        size: u64,
    },
    /// A transfer moved on.
    FileProgress {
        file_id: String,
        peer: String,
        direction: Part,
        bytes_done: u64,
        size: u64,
    },
    /// A transfer completed.
    FileComplete {
        file_id: String,
        peer: String,
        direction: Part,
        path: Option<String>,
        sha256: Option<String>,
    },
    /// A transfer failed.
    FileFailed {
        file_id: String,
        peer: String,
        direction: Part,
        reason: String,
    },
    /// This client read too slowly: that many events were skipped.
    Lagged { missed: u64 },
}

impl Event {
    /// A node event as published to clients (`me` is our peer id, for `by`), or `None` for
    /// events that are not published.
    pub fn from_node(event: &NodeEvent, me: PeerId) -> Option<Event> {
        let by = |direction: &Direction, peer: &PeerId| match direction {
            Direction::Out => me.to_string(),
            Direction::In => peer.to_string(),
        };
        Some(match event {
            NodeEvent::MessageReceived {
                peer,
                id,
                timestamp_ms,
                cipher,
                body,
                ..
            } => {
                let (text, file_id) = match body {
                    Body::Text(text) => (Some(text.clone()), None),
                    Body::File { file_id, .. } => (None, Some(hex::encode(file_id))),
                };
                Event::Message {
                    id: id.to_string(),
                    from: peer.to_string(),
                    text,
                    file_id,
                    cipher: *cipher,
                    sent_at: *timestamp_ms,
                }
            }
            NodeEvent::Delivered { peer, id } => Event::Delivered {
                id: id.to_string(),
                to: peer.to_string(),
            },
            NodeEvent::PeerDiscovered { peer, via } => Event::PeerDiscovered {
                peer_id: peer.to_string(),
                via: via.as_str().to_owned(),
            },
            NodeEvent::PeerConnected { peer } => Event::PeerConnected {
                peer_id: peer.to_string(),
            },
            NodeEvent::PeerDisconnected { peer } => Event::PeerDisconnected {
                peer_id: peer.to_string(),
            },
            NodeEvent::CipherChanged {
                peer,
                cipher,
                by: who,
            } => Event::CipherChanged {
                peer: peer.to_string(),
                cipher: *cipher,
                by: by(who, peer),
            },
            NodeEvent::ChatDeleted {
                peer,
                deleted,
                by: who,
            } => Event::ChatDeleted {
                peer: peer.to_string(),
                by: by(who, peer),
                deleted: u64::try_from(*deleted).unwrap_or(u64::MAX),
            },
            NodeEvent::KeyChanged { peer } => Event::KeyChanged {
                peer_id: peer.to_string(),
            },
            NodeEvent::PeerIncompatible { peer } => Event::PeerIncompatible {
                peer_id: peer.to_string(),
            },
            NodeEvent::ProfileVerified { peer, name } => Event::ProfileVerified {
                peer_id: peer.to_string(),
                name: name.clone(),
            },
            NodeEvent::Listening { addr } => Event::Listening {
                addr: addr.to_string(),
            },
            NodeEvent::HolePunch { peer, direct } => Event::HolePunch {
                peer_id: peer.to_string(),
                direct: *direct,
            },
            NodeEvent::FileOffered {
                peer,
                file_id,
                name,
                size,
            } => Event::FileOffered {
                file_id: file_id.to_string(),
                from: peer.to_string(),
                name: name.clone(),
                size: *size,
            },
            NodeEvent::FileProgress {
                peer,
                file_id,
                role,
                bytes_done,
                size,
            } => Event::FileProgress {
                file_id: file_id.to_string(),
                peer: peer.to_string(),
                direction: (*role).into(),
                bytes_done: *bytes_done,
                size: *size,
            },
            NodeEvent::FileComplete {
                peer,
                file_id,
                role,
                path,
                sha256,
            } => Event::FileComplete {
                file_id: file_id.to_string(),
                peer: peer.to_string(),
                direction: (*role).into(),
                path: path.as_ref().map(|p| p.display().to_string()),
                sha256: sha256.map(hex::encode),
            },
            NodeEvent::FileFailed {
                peer,
                file_id,
                role,
                reason,
            } => Event::FileFailed {
                file_id: file_id.to_string(),
                peer: peer.to_string(),
                direction: (*role).into(),
                reason: reason.clone(),
            },
            NodeEvent::Rejected { peer, reason } => Event::Rejected {
                peer_id: peer.to_string(),
                reason: reason.clone(),
            },
            #[allow(unreachable_patterns)] // NodeEvent may grow events that are not published
            _ => return None,
        })
    }
}

/// Addresses as strings.
pub fn strings(addrs: &[Multiaddr]) -> Vec<String> {
    addrs.iter().map(ToString::to_string).collect()
}

fn peer_strings(peers: &[PeerId]) -> Vec<String> {
    peers.iter().map(ToString::to_string).collect()
}
