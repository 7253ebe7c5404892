//! The node's public API: how it is configured ([`NodeConfig`]), what it reports
//! ([`NodeEvent`]), how its calls fail ([`NodeError`]), and the [`NodeHandle`] whose calls
//! become [`Command`]s for the actor.

use std::path::PathBuf;
use std::time::Duration;

use encrypto_crypto::envelope::{self, OpenPolicy, RotationPolicy};
use encrypto_crypto::file::FileId;
use encrypto_crypto::{Cipher, MessageId, PeerId};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{DirectoryEntry, FileTransfer, SEARCH_TIMEOUT};
use crate::store::{Body, Contact, Direction, StoredMessage, TransferRole};
use crate::swarm::{self, SwarmConfig};
use crate::view;

/// Largest text a message may carry (the `aes` body limit, less the payload's framing).
pub const MAX_TEXT_LEN: usize = envelope::MAX_BODY_LEN - 64;
/// Largest text an `rsa` message may carry.
pub const MAX_RSA_TEXT_LEN: usize = envelope::MAX_RSA_BODY_LEN - 64;
/// How long [`NodeHandle::add_peer`] waits for the peer's verified profile.
pub const ADD_TIMEOUT: Duration = Duration::from_secs(20);

/// How the node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The data directory; the store lives in `DATA_DIR/store`.
    pub data_dir: PathBuf,
    /// Transports, discovery and limits.
    pub swarm: SwarmConfig,
    /// Peers to dial at start (multiaddrs ending in `/p2p/PEER_ID`, or plain addresses).
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses at which others can reach this node (a public address, a port forward),
    /// confirmed as external from the start; a relay server needs one to accept reservations.
    pub external_addrs: Vec<Multiaddr>,
    /// When outbound `aes` sessions rotate.
    pub rotation: RotationPolicy,
    /// What inbound envelopes are accepted (time window).
    pub open_policy: OpenPolicy,
    /// Inbound envelopes accepted per peer and second, on average.
    pub inbound_per_second: u32,
    /// Inbound envelopes a peer may send in one burst (never less than a full batch,
    /// [`MAX_BATCH_ENVELOPES`](crate::protocol::MAX_BATCH_ENVELOPES), or such a batch would
    /// never be accepted).
    pub inbound_burst: u32,
    /// First retry delay for a peer that could not be reached; doubles up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Incoming files up to this size download at once; larger ones wait for
    /// [`NodeHandle::fetch_file`].
    pub auto_download_max: u64,
    /// Largest file [`NodeHandle::send_file`] accepts.
    pub max_file_size: u64,
}

impl NodeConfig {
    /// Defaults for a node whose data lives in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        NodeConfig {
            data_dir,
            swarm: SwarmConfig::default(),
            bootstrap: Vec::new(),
            external_addrs: Vec::new(),
            rotation: RotationPolicy::default(),
            open_policy: OpenPolicy::default(),
            inbound_per_second: 2_000,
            inbound_burst: 4_000,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            auto_download_max: 1 << 30,
            max_file_size: encrypto_crypto::file::MAX_FILE_SIZE,
        }
    }
}

/// How a peer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// mDNS on the local network.
    Mdns,
    /// The Kademlia DHT.
    Kad,
    /// Dialled by address, or it dialled us.
    Direct,
    /// Through a circuit relay.
    Relay,
}

impl Via {
    /// `mdns`, `kad`, `direct` or `relay`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Mdns => "mdns",
            Via::Kad => "kad",
            Via::Direct => "direct",
            Via::Relay => "relay",
        }
    }

    pub(super) fn parse(s: &str) -> Via {
        match s {
            "mdns" => Via::Mdns,
            "kad" => Via::Kad,
            "relay" => Via::Relay,
            _ => Via::Direct,
        }
    }
}

/// A peer the node knows of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its PeerId.
    pub peer_id: PeerId,
    /// Its verified profile name, if we have one.
    pub name: Option<String>,
    /// Addresses it was seen at.
    pub addrs: Vec<Multiaddr>,
    /// Whether a connection is open now.
    pub connected: bool,
    /// How it was found; for a peer connected now that was found through the DHT or a relay,
    /// how the connection runs (`Relay` when every connection goes through a relay, else
    /// `Direct`).
    pub via: Via,
}

/// Something that happened, for the window, the control socket and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The node listens on a new address.
    Listening {
        /// The address.
        addr: Multiaddr,
    },
    /// A peer was discovered.
    PeerDiscovered {
        /// The peer.
        peer: PeerId,
        /// How.
        via: Via,
    },
    /// A connection to a peer opened (its first).
    PeerConnected {
        /// The peer.
        peer: PeerId,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A peer's signed profile was verified and its keys pinned (or confirmed).
    ProfileVerified {
        /// The peer.
        peer: PeerId,
        /// Its name.
        name: String,
    },
    /// A pinned contact presented different keys: not accepted; the user must re-verify.
    KeyChanged {
        /// The peer.
        peer: PeerId,
    },
    /// A peer refused our message protocol: it runs another version of encrypto. Messages to
    /// it stay queued and are retried; told once, until it takes a request again.
    PeerIncompatible {
        /// The peer.
        peer: PeerId,
    },
    /// A message arrived and is stored.
    MessageReceived {
        /// From.
        peer: PeerId,
        /// Its id.
        id: MessageId,
        /// The sender's timestamp, Unix ms.
        timestamp_ms: u64,
        /// The cipher it came with.
        cipher: Cipher,
        /// What it says.
        body: Body,
    },
    /// A sent message was acknowledged by the recipient.
    Delivered {
        /// To.
        peer: PeerId,
        /// Its id.
        id: MessageId,
    },
    /// The chat's cipher changed.
    CipherChanged {
        /// The chat.
        peer: PeerId,
        /// The new cipher.
        cipher: Cipher,
        /// `Out` when we switched it, `In` when the peer did.
        by: Direction,
    },
    /// A chat's history was deleted.
    ChatDeleted {
        /// The chat.
        peer: PeerId,
        /// Messages deleted here.
        deleted: usize,
        /// `Out` when we deleted it, `In` when the peer asked.
        by: Direction,
    },
    /// DCUtR tried to turn a relayed connection into a direct one.
    HolePunch {
        /// The peer.
        peer: PeerId,
        /// Whether a direct connection now exists.
        direct: bool,
    },
    /// A contact offered us a file.
    FileOffered {
        /// From.
        peer: PeerId,
        /// The file.
        file_id: FileId,
        /// Its name.
        name: String,
        /// Its size in bytes.
        size: u64,
    },
    /// A transfer moved on (at most a few times a second per transfer).
    FileProgress {
        /// The other side.
        peer: PeerId,
        /// The file.
        file_id: FileId,
        /// Our part.
        role: TransferRole,
        /// Plaintext bytes moved so far.
        bytes_done: u64,
        /// The file's size.
        size: u64,
    },
    /// A transfer finished: received and in place (receive), held (relay), or the recipient
    /// said it has it (send).
    FileComplete {
        /// The other side.
        peer: PeerId,
        /// The file.
        file_id: FileId,
        /// Our part.
        role: TransferRole,
        /// Where the file is.
        path: Option<PathBuf>,
        /// Its SHA-256 (not known to a relay).
        sha256: Option<[u8; 32]>,
    },
    /// A transfer failed; `fetch_file` starts it again from what is held.
    FileFailed {
        /// The other side.
        peer: PeerId,
        /// The file.
        file_id: FileId,
        /// Our part.
        role: TransferRole,
        /// Why.
        reason: String,
    },
    /// An inbound frame was rejected (for logs and tests; never sent to the peer).
    Rejected {
        /// From.
        peer: PeerId,
        /// Why.
        reason: String,
    },
}

/// What a node command can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The peer is not a contact: no pinned keys to encrypt to.
    #[error("{0} is not a contact yet: connect to it first so its signed profile can be pinned")]
    UnknownPeer(PeerId),
    /// The contact's keys changed and were not accepted.
    #[error("the keys of {0} changed: verify the contact again before sending")]
    KeyChanged(PeerId),
    /// The text is over the cipher's limit.
    #[error("the message is {len} bytes; the limit with cipher {cipher} is {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
        /// The cipher.
        cipher: Cipher,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The swarm could not be built or could not listen.
    #[error(transparent)]
    Swarm(#[from] swarm::SwarmError),
    /// A dial failed at once (bad address).
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The name cannot be published in a profile (empty, too long, control characters).
    #[error(transparent)]
    Identity(#[from] encrypto_crypto::identity::IdentityError),
    /// A group commit to the store failed (the message was not queued).
    #[error("cannot write to the message store: {0}")]
    StoreWrite(String),
    /// Sealing or signing failed (not expected with valid pinned keys).
    #[error("cannot seal: {0}")]
    Crypto(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// A peer could not be reached to add it.
    #[error("cannot reach {peer}: {reason}")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// No address is known for a peer added by PeerId alone.
    #[error("no address is known for {0}: add it by a multiaddr ending in /p2p/{0}")]
    NoAddress(PeerId),
    /// No verified profile arrived in time.
    #[error("{0} did not present a verified profile within {secs} s", secs = ADD_TIMEOUT.as_secs())]
    Timeout(PeerId),
    /// One's own PeerId where another peer's was expected.
    #[error("that is this node's own peer id")]
    SelfPeer,
    /// A file cannot be sent, fetched or forwarded.
    #[error("{0}")]
    File(String),
    /// The node's thread or its runtime could not start.
    #[error("cannot start the node's thread: {0}")]
    Thread(String),
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// What a [`NodeHandle`] asks of the actor; each carries the oneshot its answer goes to.
pub(super) enum Command {
    SendText {
        peer: PeerId,
        text: String,
        /// This message's cipher; `None`: the chat's.
        cipher: Option<Cipher>,
        reply: Reply<MessageId>,
    },
    AddPeer {
        peer: PeerId,
        /// Where to dial it; `None`: the addresses known for it.
        addr: Option<Multiaddr>,
        reply: Reply<Contact>,
    },
    VerifyContact {
        peer: PeerId,
        reply: Reply<Contact>,
    },
    SetRelay {
        peer: PeerId,
        relay: bool,
        reply: Reply<Contact>,
    },
    SetCipher {
        peer: PeerId,
        cipher: Cipher,
        reply: Reply<()>,
    },
    DeleteChat {
        peer: PeerId,
        /// Ask the peer to delete its copy too.
        for_both: bool,
        reply: Reply<usize>,
    },
    History {
        peer: PeerId,
        limit: Option<usize>,
        reply: Reply<Vec<StoredMessage>>,
    },
    Contacts {
        reply: Reply<Vec<Contact>>,
    },
    Contact {
        peer: PeerId,
        reply: Reply<Option<Contact>>,
    },
    Peers {
        reply: Reply<Vec<PeerInfo>>,
    },
    SearchLocal {
        name: String,
        reply: Reply<Vec<PeerInfo>>,
    },
    SearchDht {
        name: String,
        reply: Reply<Vec<DirectoryEntry>>,
    },
    Dial {
        addr: Multiaddr,
        reply: Reply<()>,
    },
    ListenAddrs {
        reply: Reply<Vec<Multiaddr>>,
    },
    SendFile {
        peer: PeerId,
        path: PathBuf,
        /// Relays asked to hold the sealed chunks.
        via: Vec<PeerId>,
        reply: Reply<FileTransfer>,
    },
    FetchFile {
        file_id: FileId,
        /// Where to save it; `None`: the downloads directory.
        out: Option<PathBuf>,
        reply: Reply<FileTransfer>,
    },
    ForwardFile {
        file_id: FileId,
        to: PeerId,
        reply: Reply<FileTransfer>,
    },
    Files {
        reply: Reply<Vec<FileTransfer>>,
    },
    Shutdown {
        /// Answered once the store is flushed and connections are closed.
        done: oneshot::Sender<()>,
    },
}

/// A cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) events: broadcast::Sender<NodeEvent>,
    pub(super) peer_id: PeerId,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// A new subscription to the node's events, from now on ([`Started::events`] has them
    /// from the start).
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// Queues a text message; returns once it is durable in the outbox. Delivery happens in
    /// the background ([`NodeEvent::Delivered`]).
    ///
    /// # Errors
    /// [`NodeError::UnknownPeer`], [`NodeError::KeyChanged`], [`NodeError::TooLarge`], or a
    /// store failure.
    pub async fn send_text(&self, peer: PeerId, text: String) -> Result<MessageId, NodeError> {
        self.send_text_with(peer, text, None).await
    }

    /// As [`send_text`](Self::send_text), with this message's cipher chosen here instead of
    /// the chat's (`None`: the chat's). The chat's cipher does not change.
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub async fn send_text_with(
        &self,
        peer: PeerId,
        text: String,
        cipher: Option<Cipher>,
    ) -> Result<MessageId, NodeError> {
        self.ask(|reply| Command::SendText {
            peer,
            text,
            cipher,
            reply,
        })
        .await
    }

    /// Adds a contact by address: dials `addr` (which must end in `/p2p/PEER_ID`), waits for
    /// the peer's signed profile, verifies it against the PeerId and pins its keys. Returns the
    /// contact (at once if it is already pinned and connected).
    ///
    /// # Errors
    /// [`NodeError::Dial`] for an address without a PeerId or one that cannot be reached,
    /// [`NodeError::KeyChanged`] if the peer now presents keys other than the pinned ones,
    /// [`NodeError::Timeout`] if no verified profile arrives within [`ADD_TIMEOUT`].
    pub async fn add_peer(&self, addr: Multiaddr) -> Result<view::Contact, NodeError> {
        let peer = peer_of_addr(&addr).ok_or_else(|| NodeError::Dial {
            addr: addr.clone(),
            reason: "the address does not end in /p2p/PEER_ID".to_owned(),
        })?;
        self.add(peer, Some(addr)).await
    }

    /// Adds a contact by PeerId alone, dialling the addresses the node knows for it.
    ///
    /// # Errors
    /// As [`add_peer`](Self::add_peer); [`NodeError::NoAddress`] when no address is known.
    pub async fn add_peer_id(&self, peer: PeerId) -> Result<view::Contact, NodeError> {
        self.add(peer, None).await
    }

    async fn add(&self, peer: PeerId, addr: Option<Multiaddr>) -> Result<view::Contact, NodeError> {
        if peer == self.peer_id {
            return Err(NodeError::SelfPeer);
        }
        tokio::time::timeout(
            ADD_TIMEOUT,
            self.ask(|reply| Command::AddPeer { peer, addr, reply }),
        )
        .await
        .map_err(|_| NodeError::Timeout(peer))?
        .map(view::Contact::from)
    }

    /// Marks a contact verified (the user compared safety numbers). For a contact whose key
    /// changed, this accepts the new keys it presented: they replace the pinned ones, and the
    /// chat's session keys start afresh.
    ///
    /// # Errors
    /// [`NodeError::UnknownPeer`] or a store failure.
    pub async fn verify_contact(&self, peer: PeerId) -> Result<view::Contact, NodeError> {
        self.ask(|reply| Command::VerifyContact { peer, reply })
            .await
            .map(view::Contact::from)
    }

    /// Marks a contact as a relay for files, or clears the mark. A file sent to a recipient
    /// who is not connected goes, sealed, to every contact marked so (besides any named with
    /// `via`); they never get its key. Purely local: the contact is not told.
    ///
    /// # Errors
    /// [`NodeError::UnknownPeer`] or a store failure.
    pub async fn set_relay(&self, peer: PeerId, relay: bool) -> Result<view::Contact, NodeError> {
        self.ask(|reply| Command::SetRelay { peer, relay, reply })
            .await
            .map(view::Contact::from)
    }

    /// Switches the chat's cipher; the peer is told with a signed control message.
    ///
    /// # Errors
    /// [`NodeError::UnknownPeer`] or a store failure.
    pub async fn set_cipher(&self, peer: PeerId, cipher: Cipher) -> Result<(), NodeError> {
        self.ask(|reply| Command::SetCipher {
            peer,
            cipher,
            reply,
        })
        .await
    }

    /// Deletes the chat's history here; with `for_both`, also asks the peer to (a signed
    /// request it honours and acknowledges). Returns how many messages were deleted here.
    ///
    /// # Errors
    /// [`NodeError::UnknownPeer`] (for both) or a store failure.
    pub async fn delete_chat(&self, peer: PeerId, for_both: bool) -> Result<usize, NodeError> {
        self.ask(|reply| Command::DeleteChat {
            peer,
            for_both,
            reply,
        })
        .await
    }

    /// The chat with `peer`, oldest first; with a limit, the newest `limit` messages.
    ///
    /// # Errors
    /// A store failure.
    pub async fn history(
        &self,
        peer: PeerId,
        limit: Option<usize>,
    ) -> Result<Vec<view::Message>, NodeError> {
        let history = self
            .ask(|reply| Command::History { peer, limit, reply })
            .await?;
        Ok(history.into_iter().map(view::Message::from).collect())
    }

    /// The contact list: pinned peers the user added, or with whom a chat exists (sent or
    /// received a message). Other verified peers are pinned too but not listed
    /// ([`contact`](Self::contact) reads any of them).
    ///
    /// # Errors
    /// A store failure.
    pub async fn contacts(&self) -> Result<Vec<view::Contact>, NodeError> {
        let contacts = self.ask(|reply| Command::Contacts { reply }).await?;
        Ok(contacts.into_iter().map(view::Contact::from).collect())
    }

    /// The pinned keys and state of one peer, whether or not it is in the contact list.
    ///
    /// # Errors
    /// A store failure.
    pub async fn contact(&self, peer: PeerId) -> Result<Option<view::Contact>, NodeError> {
        let contact = self.ask(|reply| Command::Contact { peer, reply }).await?;
        Ok(contact.map(view::Contact::from))
    }

    /// Connected and discovered peers, with how they were found.
    ///
    /// # Errors
    /// A store failure.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NodeError> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// Contacts and known peers whose name starts with `name` (case-insensitive).
    ///
    /// # Errors
    /// A store failure.
    pub async fn search_local(&self, name: &str) -> Result<Vec<PeerInfo>, NodeError> {
        self.ask(|reply| Command::SearchLocal {
            name: name.to_owned(),
            reply,
        })
        .await
    }

    /// Searches the name directory (the DHT) for every profile that claims `name`
    /// (normalised: case and surrounding whitespace do not matter), each verified against
    /// its PeerId. Answers when the lookup completes, or after [`SEARCH_TIMEOUT`] with what
    /// was found by then.
    ///
    /// # Errors
    /// [`NodeError::Stopped`].
    pub async fn search_dht(&self, name: &str) -> Result<Vec<DirectoryEntry>, NodeError> {
        let name = name.to_owned();
        tokio::time::timeout(
            SEARCH_TIMEOUT + Duration::from_secs(5),
            self.ask(|reply| Command::SearchDht { name, reply }),
        )
        .await
        .unwrap_or(Ok(Vec::new()))
    }

    /// Dials an address (returns when the dial has started; watch for
    /// [`NodeEvent::PeerConnected`]).
    ///
    /// # Errors
    /// [`NodeError::Dial`] for an address that cannot be dialled at all.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.ask(|reply| Command::Dial { addr, reply }).await
    }

    /// The addresses the node listens on.
    ///
    /// # Errors
    /// [`NodeError::Stopped`].
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        self.ask(|reply| Command::ListenAddrs { reply }).await
    }

    /// Sends a file: it is read once to seal it and build its signed manifest (never held
    /// whole in memory), then offered in the chat like a text; the recipient pulls the sealed
    /// chunks, which are sealed again from the file on request. Returns once the offer is
    /// durable in the outbox. `via` names relays (third contacts) asked to hold the sealed
    /// chunks for the recipient; they never get the key.
    ///
    /// # Errors
    /// [`NodeError::File`] for a path that is missing, unreadable, a directory or too large;
    /// [`NodeError::UnknownPeer`] / [`NodeError::KeyChanged`] as for texts.
    pub async fn send_file(
        &self,
        peer: PeerId,
        path: PathBuf,
        via: Vec<PeerId>,
    ) -> Result<FileTransfer, NodeError> {
        self.ask(|reply| Command::SendFile {
            peer,
            path,
            via,
            reply,
        })
        .await
    }

    /// Starts (or restarts, after a failure) downloading a file offered to us, into `out`
    /// (a file name, or a directory) or the downloads directory.
    ///
    /// # Errors
    /// [`NodeError::File`] if no such file was offered or `out` exists.
    pub async fn fetch_file(
        &self,
        file_id: FileId,
        out: Option<PathBuf>,
    ) -> Result<FileTransfer, NodeError> {
        self.ask(|reply| Command::FetchFile {
            file_id,
            out,
            reply,
        })
        .await
    }

    /// Sends a file we hold (received, or sent) to another contact without sealing its
    /// chunks again.
    ///
    /// # Errors
    /// [`NodeError::File`] if no complete copy is here; as [`NodeHandle::send_file`].
    pub async fn forward_file(
        &self,
        file_id: FileId,
        to: PeerId,
    ) -> Result<FileTransfer, NodeError> {
        self.ask(|reply| Command::ForwardFile { file_id, to, reply })
            .await
    }

    /// Every file transfer, newest first.
    ///
    /// # Errors
    /// [`NodeError::Store`] on read failures.
    pub async fn files(&self) -> Result<Vec<FileTransfer>, NodeError> {
        self.ask(|reply| Command::Files { reply }).await
    }

    /// Stops the node: flushes the store, closes connections, ends the actor task.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { done: tx })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}

/// A node just started by [`start`](super::start).
#[derive(Debug)]
pub struct Started {
    /// The only way to talk to the node; clone it freely.
    pub handle: NodeHandle,
    /// A subscription made before the node's task first ran: it sees every event from the
    /// start. One made later with [`NodeHandle::subscribe`] can miss what the node did in
    /// between (it runs on its own thread: a peer may already be connected and verified).
    pub events: broadcast::Receiver<NodeEvent>,
    /// Ends when the node has stopped and its store is closed: after [`NodeHandle::shutdown`],
    /// or once every handle is dropped.
    pub task: tokio::task::JoinHandle<()>,
    /// Where it listens: every configured listener has reported its addresses before
    /// [`start`](super::start) returns, so a caller can hand them out (or dial them) at once.
    pub listen_addrs: Vec<Multiaddr>,
}

/// `addr` ending in `/p2p/PEER` (what [`NodeHandle::add_peer`] takes), unless it already
/// names a peer.
pub fn addr_with_peer(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    if peer_of_addr(addr).is_some() {
        addr.clone()
    } else {
        addr.clone().with(libp2p::multiaddr::Protocol::P2p(peer))
    }
}

/// The PeerId an address ends with (`/p2p/ID`), if any.
pub fn peer_of_addr(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_reads_back_what_it_writes_and_unknown_is_direct() {
        for via in [Via::Mdns, Via::Kad, Via::Direct, Via::Relay] {
            assert_eq!(Via::parse(via.as_str()), via);
        }
        assert_eq!(Via::parse("carrier pigeon"), Via::Direct);
    }

    #[test]
    fn addr_with_peer_appends_the_peer_once() {
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let full = addr_with_peer(&addr, peer);
        assert_eq!(peer_of_addr(&full), Some(peer));
        assert_eq!(addr_with_peer(&full, PeerId::random()), full);
        assert_eq!(peer_of_addr(&addr), None);
    }

    #[tokio::test]
    async fn a_handle_whose_actor_is_gone_answers_stopped() {
        let (commands, receiver) = mpsc::channel(1);
        let (events, _) = broadcast::channel(1);
        let handle = NodeHandle {
            commands,
            events,
            peer_id: PeerId::random(),
        };
        // The actor took the command but dropped its reply: stopped while working.
        let taker = tokio::spawn(async move {
            let mut receiver = receiver;
            let command = receiver.recv().await;
            assert!(matches!(command, Some(Command::Contacts { .. })));
        });
        assert!(matches!(handle.contacts().await, Err(NodeError::Stopped)));
        taker.await.unwrap();
        // No actor at all.
        assert!(matches!(handle.peers().await, Err(NodeError::Stopped)));
        assert!(matches!(
            handle.add_peer_id(handle.peer_id()).await,
            Err(NodeError::SelfPeer)
        ));
    }
}
