//! The node actor: one task owns the libp2p swarm and the store; everything else talks to it
//! through a cloneable [`NodeHandle`] (bounded command channel, a oneshot reply per command)
//! and listens to [`NodeEvent`]s on a broadcast channel.
//!
//! # Flows
//!
//! - **Profiles** are exchanged on every new connection (`/encrypto/profile/1`): each side
//!   verifies the other's signed profile against the connection's PeerId and pins its keys on
//!   first sight. A later profile with other keys raises [`NodeEvent::KeyChanged`] and is not
//!   accepted.
//! - **Sending**: [`NodeHandle::send_text`] returns once the message is in the outbox and the
//!   history, flushed. The actor seals each outbox item when it can reach the peer (on connect,
//!   at once if connected, and on a retry timer with backoff) and sends it on `/encrypto/msg/3`,
//!   consecutive texts batched into one request. The response is a delivery ack signed by the
//!   recipient, naming the messages it stored; only then is an outbox entry removed and
//!   [`NodeEvent::Delivered`] emitted. Messages left out of an ack are sent again.
//! - **Receiving**: an envelope from a pinned contact is verified and opened by the crypto
//!   crate (signature before any RSA work; a batch's signatures are checked together on a
//!   blocking thread, requests still handled in arrival order: see the `inbound` module),
//!   de-duplicated by message id, stored durably, and only then acknowledged. A duplicate
//!   (the sender retrying after a lost ack) is acknowledged again without a second copy, so
//!   history holds every message exactly once.
//! - **Group commit**: the actor gathers whatever commands and swarm events are ready, writes
//!   the sends, receipts and acknowledgements among them (one atomic store write each, not
//!   flushed), and flushes on a blocking thread while it goes on serving the swarm. Callers
//!   are answered, texts sent and requests acknowledged once the flush covering their write is
//!   done; writes made during a flush wait for the next one.
//! - **Control payloads** (cipher switch, delete chat) travel through the same outbox and are
//!   acknowledged the same way.
//!
//! # Parts
//!
//! - `api`: the public API ([`NodeConfig`], [`NodeEvent`], [`NodeError`], [`NodeHandle`],
//!   [`Started`]) and the `Command`s a handle sends the actor, each with named fields.
//! - `commit`: the group commit's tickets, the flush in progress and what waits for it
//!   (`GroupCommit`, which hands back the waiters a flush releases for the actor to answer).
//! - `inbound`: inbound message requests in arrival order, their signatures checked off the
//!   actor's thread.
//! - `outbox`: the in-flight requests (one table) and the retry timers with their backoff.
//! - `receive`: the per-peer rate limit on inbound frames.
//! - `dht`: the name directory on Kademlia. `nat`: relay reservation, AutoNAT, hole punching.
//! - `files`: file transfers (sending, downloading, serving, relaying).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use encrypto_crypto::control::{Control, ControlKind};
use encrypto_crypto::envelope::{
    self, Envelope, InboundSessions, OpenContext, OpenPolicy, OutboundSession, RejectReason,
    ReplayGuard, UnsignedEnvelope, Verified,
};
use encrypto_crypto::{
    Cipher, Identity, MessageId, PeerId, PublicIdentity, SignedProfile, StorageKey,
};
use futures::{FutureExt, StreamExt};
use libp2p::core::upgrade::NegotiationError;
use libp2p::request_response::{self, Message, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, identify, mdns, ping};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::protocol::{
    ChatPayload, EnvelopeBatch, MSG_PROTOCOL, MsgRequest, MsgResponse, ProfileRequest,
    ProfileResponse,
};
use crate::store::{
    Acknowledged, Body, Contact, Direction, KnownPeer, OutboxItem, OutboxKind, Status, Store,
    StoreError, StoredMessage,
};
use crate::swarm::{self, Behaviour, BehaviourEvent};
use crate::unwrap::InboundKeys;

mod api;
mod commit;
mod dht;
mod files;
mod inbound;
mod nat;
mod outbox;
mod receive;
pub use api::{
    ADD_TIMEOUT, MAX_RSA_TEXT_LEN, MAX_TEXT_LEN, NodeConfig, NodeError, NodeEvent, NodeHandle,
    PeerInfo, Started, Via, addr_with_peer, peer_of_addr,
};
use api::{Command, Reply};
use commit::{Flushed, GroupCommit, Outcome};
pub use dht::{DirectoryEntry, SEARCH_TIMEOUT};
pub use files::FileTransfer;
use outbox::InFlight;

/// Most envelopes the node puts in one request (the protocol allows more, but a smaller batch
/// keeps the receiver's actor from working on one request for long).
const SEND_BATCH: usize = 64;
/// Most requests in flight to one peer at a time. Kept well below the request-response
/// stream limit per connection ([`crate::swarm::MAX_STREAMS_PER_CONNECTION`]), which counts
/// the peer's requests to us as well: past it, libp2p fails requests at once.
const MAX_IN_FLIGHT_PER_PEER: usize = 128;
/// Events a subscriber may fall behind by before it misses some. One actor turn can complete
/// many messages at once (up to [`MAX_BATCH`] acks of up to [`SEND_BATCH`] messages each),
/// each with its own [`NodeEvent::Delivered`].
const EVENT_CAPACITY: usize = 8 * 1024;
/// How often seen message ids past the replay window are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Most commands and swarm events handled before the pending writes are committed (one flush
/// for the whole group).
const MAX_BATCH: usize = 512;
/// How long the node with the greater peer id waits before it dials a peer that mDNS found
/// (see the mDNS arm of `handle_behaviour_event`).
const MDNS_DIAL_DELAY: Duration = Duration::from_secs(1);

/// A pinned contact with its keys parsed once (parsing an RSA key per message was a tenth of
/// the node's CPU in the benchmark).
struct Pinned {
    contact: Contact,
    public: PublicIdentity,
}

/// The store's seen ids for one sender, as the crypto crate's replay check. A store error
/// counts as "not seen": the message then fails to store and is rejected, and the sender
/// retries.
struct SeenIn<'a> {
    store: &'a Store,
    peer: PeerId,
}

impl ReplayGuard for SeenIn<'_> {
    fn is_seen(&self, _sender: &[u8; 32], id: &MessageId) -> bool {
        self.store.is_seen(&self.peer, id).unwrap_or(false)
    }
}

impl<'a> SeenIn<'a> {
    /// The context for checking a payload from this sender, now.
    fn context(
        &'a self,
        me: &'a Identity,
        sender: &'a PublicIdentity,
        policy: OpenPolicy,
    ) -> OpenContext<'a> {
        OpenContext {
            me,
            sender,
            now_ms: now_ms(),
            policy,
            seen: self,
        }
    }
}

/// An outbox item sealed for the wire.
enum Sealed {
    /// A control payload's encoding (already signed; sent alone).
    Control(Vec<u8>),
    /// An envelope, signed with the others of its request ([`envelope::sign_batch`]).
    Envelope(Box<UnsignedEnvelope>, Option<envelope::KeyId>),
}

/// An inbound request to acknowledge once what it carried is durable.
struct PendingAck {
    peer: PeerId,
    pinned: Arc<Pinned>,
    ids: Vec<MessageId>,
    channel: ResponseChannel<MsgResponse>,
}

/// What waits for a store flush (see [`Actor::commit`]).
enum Waiter {
    /// A `send_text` caller; its outbox item is sent once it is durable.
    Queued(Reply<MessageId>, OutboxItem),
    /// An inbound request whose messages are written: acknowledged once they are durable.
    Ack(PendingAck),
}

/// What to do with an inbound request once it is checked.
enum Inbound {
    /// Already durable (a replay, or a control payload acted on): acknowledge now.
    Ack(MessageId),
    /// A new message: store it in the group commit, then acknowledge.
    Store(StoredMessage),
}

/// How long the configured listeners may take to report their addresses when the node starts.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a node for an unlocked identity.
///
/// The node runs on a thread of its own, on a single-threaded tokio runtime: its actor, its
/// swarm and every connection task of the swarm, so that handing a frame between them never
/// wakes another thread. Slow work goes to that runtime's blocking threads: signature checks
/// and RSA decryptions of inbound batches, store flushes while several writes wait, file
/// sealing. Call it from within a tokio runtime (for [`Started::task`]); the caller's runtime
/// only carries the handle's requests and replies.
///
/// # Errors
/// [`NodeError::Store`] if the store cannot be opened (locked by another process, damaged,
/// another identity's), [`NodeError::Swarm`] if the network cannot be set up,
/// [`NodeError::Thread`] if the node's thread or runtime cannot start. A listener that closes
/// or reports no address within a few seconds is [`NodeError::Swarm`] too.
pub fn start(
    identity: Identity,
    name: &str,
    created_ms: u64,
    storage_key: StorageKey,
    config: NodeConfig,
) -> Result<Started, NodeError> {
    let name = name.to_owned();
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
    let (ended_tx, ended_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("encrypto-node".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name("encrypto-node-blocking")
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started_tx.send(Err(NodeError::Thread(format!(
                        "cannot build its runtime: {e}"
                    ))));
                    return;
                }
            };
            runtime.block_on(async move {
                let prepared = prepare(identity, &name, created_ms, storage_key, config);
                let (mut actor, commands, (handle, events)) = match prepared {
                    Ok(prepared) => prepared,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                match actor.await_listeners().await {
                    Ok(addrs) => {
                        let _ = started_tx.send(Ok((handle, events, addrs)));
                        actor.run(commands).await;
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                }
            });
            // Ends the connection tasks and waits for the blocking jobs still running (a
            // flush holds the store): once `ended` is sent, the store is closed.
            drop(runtime);
            let _ = ended_tx.send(());
        })
        .map_err(|e| NodeError::Thread(e.to_string()))?;
    let (handle, events, listen_addrs) = started_rx
        .recv()
        .map_err(|_| NodeError::Thread("it ended while starting".into()))??;
    let task = tokio::spawn(async move {
        if ended_rx.await.is_err() {
            tracing::error!("the node's thread panicked");
        }
    });
    Ok(Started {
        handle,
        events,
        task,
        listen_addrs,
    })
}

/// What the node's thread sends back once the node is set up.
type StartedParts = (NodeHandle, broadcast::Receiver<NodeEvent>);

/// Opens the store, builds the swarm and the actor, on the node's own runtime.
fn prepare(
    identity: Identity,
    name: &str,
    created_ms: u64,
    storage_key: StorageKey,
    config: NodeConfig,
) -> Result<(Actor, mpsc::Receiver<Command>, StartedParts), NodeError> {
    let store = Store::open(
        &config.data_dir.join(crate::datadir::STORE_DIR),
        storage_key,
    )?;
    let profile = identity.sign_profile(name, created_ms)?;
    let mut swarm = swarm::build(identity.to_libp2p_keypair(), &config.swarm)?;
    for addr in &config.external_addrs {
        swarm.add_external_address(addr.clone());
    }
    for addr in &config.bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }
    let (commands, rx) = mpsc::channel(256);
    let (events, first_subscriber) = broadcast::channel(EVENT_CAPACITY);
    let peer_id = identity.peer_id();
    let limiter = receive::RateLimiter::new(config.inbound_per_second, config.inbound_burst);
    let retries = outbox::Retries::new(config.retry_initial, config.retry_max);
    let mut actor = Actor {
        identity: Arc::new(identity),
        profile,
        store,
        swarm,
        config,
        events: events.clone(),
        sessions: HashMap::new(),
        inbound: Arc::new(InboundKeys::default()),
        persisted_keys: HashSet::new(),
        incompatible: HashSet::new(),
        connected: HashSet::new(),
        pinned: HashMap::new(),
        in_flight: outbox::InFlightTable::default(),
        queues: HashMap::new(),
        pending_sends: Vec::new(),
        pending_replies: Vec::new(),
        pending_incoming: Vec::new(),
        pending_requests: Vec::new(),
        pending_acks: Vec::new(),
        commit: GroupCommit::default(),
        unflushed: HashSet::new(),
        retries,
        mdns_dials: HashMap::new(),
        limiter,
        last_ts: 0,
        last_prune: Instant::now(),
        adding: HashMap::new(),
        directory: dht::Directory::default(),
        reach: nat::Reachability::default(),
        files: files::Files::default(),
        requests: inbound::InboundQueue::default(),
    };
    actor.load_inbound_keys();
    actor.resume();
    Ok((
        actor,
        rx,
        (
            NodeHandle {
                commands,
                events,
                peer_id,
            },
            first_subscriber,
        ),
    ))
}

impl Actor {
    /// Drives the swarm until each configured listener has reported an address (or
    /// [`LISTEN_TIMEOUT`] passed); the events go through the usual handler, so none is lost.
    /// Returns every address listened on so far.
    async fn await_listeners(&mut self) -> Result<Vec<Multiaddr>, NodeError> {
        let expected = self.config.swarm.listen.len();
        let mut reported = HashSet::new();
        let waited = tokio::time::timeout(LISTEN_TIMEOUT, async {
            while reported.len() < expected {
                let event = self.swarm.select_next_some().await;
                match &event {
                    SwarmEvent::NewListenAddr { listener_id, .. } => {
                        reported.insert(*listener_id);
                    }
                    SwarmEvent::ListenerClosed {
                        listener_id,
                        reason,
                        ..
                    } if !reported.contains(listener_id) => {
                        let reason = match reason {
                            Err(e) => e.to_string(),
                            Ok(()) => "the listener closed".to_owned(),
                        };
                        return Err(self.listen_error(reason));
                    }
                    _ => {}
                }
                self.handle_swarm_event(event);
            }
            Ok(())
        })
        .await;
        match waited {
            Ok(result) => result?,
            Err(_) => {
                return Err(
                    self.listen_error(format!("no address reported within {LISTEN_TIMEOUT:?}"))
                );
            }
        }
        Ok(self.swarm.listeners().cloned().collect())
    }

    /// A listener failed while starting: libp2p does not say which configured address it was
    /// for, so the error names the first one (all of them in the reason when there are more).
    fn listen_error(&self, reason: String) -> NodeError {
        let listen = &self.config.swarm.listen;
        let reason = match listen.len() {
            0 | 1 => reason,
            _ => {
                let all: Vec<String> = listen.iter().map(ToString::to_string).collect();
                format!("{reason} (one of {})", all.join(", "))
            }
        };
        NodeError::Swarm(swarm::SwarmError::Listen {
            addr: listen.first().cloned().unwrap_or_else(Multiaddr::empty),
            reason,
        })
    }
}

struct Actor {
    /// Shared with the inbound check jobs, which do the RSA work of opening ahead.
    identity: Arc<Identity>,
    profile: SignedProfile,
    store: Store,
    swarm: Swarm<Behaviour>,
    config: NodeConfig,
    events: broadcast::Sender<NodeEvent>,
    sessions: HashMap<PeerId, OutboundSession>,
    /// The unwrapped `aes` session keys of inbound chats; the inbound check jobs add the keys
    /// they unwrap ahead ([`crate::unwrap::decrypt_ahead`]).
    inbound: Arc<InboundKeys>,
    persisted_keys: HashSet<(PeerId, envelope::KeyId)>,
    /// Peers that refused our message protocol (another version of encrypto), warned about
    /// once until they take a request again.
    incompatible: HashSet<PeerId>,
    connected: HashSet<PeerId>,
    /// Contacts with parsed keys, by peer; dropped whenever a contact is written.
    pinned: HashMap<PeerId, Arc<Pinned>>,
    /// Outbound message requests waiting for their response.
    in_flight: outbox::InFlightTable<OutboundRequestId>,
    /// Outbox items loaded from the store and not in flight, per peer, oldest first. A peer
    /// with no entry is (re)loaded from the store on its next delivery.
    queues: HashMap<PeerId, VecDeque<OutboxItem>>,
    /// `send_text` calls waiting for the group commit, and their callers (same order).
    pending_sends: Vec<(StoredMessage, OutboxItem)>,
    pending_replies: Vec<Reply<MessageId>>,
    /// Inbound messages waiting for the group commit, and the requests that carried them.
    pending_incoming: Vec<StoredMessage>,
    pending_requests: Vec<PendingAck>,
    /// Acknowledged outgoing messages waiting for the group commit.
    pending_acks: Vec<(PeerId, Acknowledged)>,
    /// Group commits write without flushing; the flush runs on a blocking thread while the
    /// actor goes on pumping the swarm. Replies and acknowledgements wait here for the flush
    /// covering their write's ticket.
    commit: GroupCommit<Waiter>,
    /// Outgoing messages written but not flushed yet: not sent before they are durable.
    unflushed: HashSet<MessageId>,
    /// When peers with something to deliver are tried again.
    retries: outbox::Retries,
    /// Peers found through mDNS that this node dials at the given time unless connected by
    /// then.
    mdns_dials: HashMap<PeerId, Instant>,
    /// The per-peer limit on inbound message frames.
    limiter: receive::RateLimiter,
    last_ts: u64,
    last_prune: Instant,
    /// `add_peer` calls waiting for the peer's verified profile.
    adding: HashMap<PeerId, Vec<Reply<Contact>>>,
    /// The name directory: announcements and searches in progress.
    directory: dht::Directory,
    /// Relay reservation, AutoNAT status and how each connection runs.
    reach: nat::Reachability,
    /// File transfers: downloads, serving, and their blocking jobs.
    files: files::Files,
    /// Inbound message requests waiting for their turn, and their signature checks.
    requests: inbound::InboundQueue,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Actor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut stop = None;
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::Shutdown { done }) => stop = Some(Some(done)),
                    Some(command) => self.handle_command(command),
                    None => stop = Some(None),
                },
                Some(done) = self.commit.join_flush(), if self.commit.is_flushing() => {
                    self.on_flushed(done);
                }
                Some(done) = self.files.jobs.join_next(), if !self.files.jobs.is_empty() => {
                    self.on_file_job(done);
                }
                Some(done) = self.requests.jobs.join_next_with_id(),
                    if !self.requests.jobs.is_empty() =>
                {
                    self.on_verified(done);
                }
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                _ = tick.tick() => self.retry_due(),
            }
            // Take whatever else is ready without waiting, so that one flush covers the group.
            for _ in 0..MAX_BATCH {
                if stop.is_some() {
                    break;
                }
                let mut progressed = false;
                match commands.try_recv() {
                    Ok(Command::Shutdown { done }) => stop = Some(Some(done)),
                    Ok(command) => {
                        self.handle_command(command);
                        progressed = true;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => stop = Some(None),
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
                if let Some(event) = self.swarm.select_next_some().now_or_never() {
                    self.handle_swarm_event(event);
                    progressed = true;
                }
                if let Some(done) = self.commit.try_join_flush() {
                    self.on_flushed(done);
                    progressed = true;
                }
                if let Some(done) = self.files.jobs.try_join_next() {
                    self.on_file_job(done);
                    progressed = true;
                }
                if let Some(done) = self.requests.jobs.try_join_next_with_id() {
                    self.on_verified(done);
                    progressed = true;
                }
                if !progressed {
                    break;
                }
            }
            self.commit_group();
            self.start_flush();
            if let Some(done) = stop {
                self.shutdown();
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    }

    /// Writes the group: queued sends, received messages, acknowledged deliveries, each with
    /// one store write and no flush. Callers are answered and requests acknowledged once a
    /// flush covers their write ([`Actor::start_flush`], [`Actor::on_flushed`]); nothing
    /// waits for deliveries.
    fn commit_group(&mut self) {
        self.commit_sends();
        self.commit_incoming();
        self.commit_acks();
    }

    /// A write that something will wait on: its ticket.
    fn note_write(&mut self) -> u64 {
        self.commit.note_write()
    }

    /// Starts a flush of everything written so far ([`GroupCommit::start_flush`]: on a
    /// blocking thread, or right here when few wait) and answers its waiters if it ran here.
    fn start_flush(&mut self) {
        if !self.commit.flush_due() {
            return;
        }
        let store = self.store.clone();
        if let Some(done) = self.commit.start_flush(move || store.flush()) {
            self.answer(done);
        }
    }

    fn on_flushed(&mut self, done: Result<Flushed, tokio::task::JoinError>) {
        let (ticket, result) = match done {
            Ok(done) => done,
            // The flush thread panicked: nothing since the last flush is known to be durable.
            Err(e) => (
                self.commit.last_ticket(),
                Err(StoreError::Io {
                    op: "flush",
                    path: self.store.path().to_owned(),
                    source: std::io::Error::other(format!("the flush thread failed: {e}")),
                }),
            ),
        };
        self.answer((ticket, result));
        self.start_flush();
    }

    /// A flush ended: answers the waiters it covered.
    fn answer(&mut self, done: Flushed) {
        match self.commit.flushed(done) {
            Outcome::Durable(waiters) => self.release(waiters),
            Outcome::Failed(waiters, e) => self.fail_waiting(waiters, &e),
        }
    }

    /// What `waiters` wait for is durable: answer the callers, send their messages,
    /// acknowledge the requests.
    fn release(&mut self, waiters: Vec<Waiter>) {
        let mut peers = Vec::new();
        for waiter in waiters {
            match waiter {
                Waiter::Queued(reply, item) => {
                    let _ = reply.send(Ok(item.id));
                    self.unflushed.remove(&item.id);
                    if !peers.contains(&item.peer) {
                        peers.push(item.peer);
                    }
                    if let Some(queue) = self.queues.get_mut(&item.peer) {
                        queue.push_back(item);
                    }
                }
                Waiter::Ack(p) => self.acknowledge(p.peer, &p.pinned.public, p.ids, p.channel),
            }
        }
        for peer in peers {
            self.deliver(peer);
        }
    }

    /// The flush `waiters` waited for failed: the callers get the error and the requests are
    /// rejected (the sender retries them).
    fn fail_waiting(&mut self, waiters: Vec<Waiter>, e: &StoreError) {
        warn!(error = %e, "cannot flush the store");
        for waiter in waiters {
            match waiter {
                Waiter::Queued(reply, item) => {
                    self.unflushed.remove(&item.id);
                    let _ = reply.send(Err(NodeError::StoreWrite(e.to_string())));
                }
                Waiter::Ack(p) => self.reject(p.peer, p.channel, format!("store: {e}")),
            }
        }
    }

    /// A synchronous flush just covered every write so far.
    fn flushed_now(&mut self) {
        self.answer((self.commit.last_ticket(), Ok(())));
    }

    /// Acknowledges `ids` once everything written so far is durable (a repeat of a message
    /// whose first copy is written but not yet flushed must not be acknowledged before it).
    fn acknowledge_when_durable(&mut self, ack: PendingAck) {
        let ticket = self.commit.last_ticket();
        if self.commit.is_durable(ticket) {
            self.acknowledge(ack.peer, &ack.pinned.public, ack.ids, ack.channel);
        } else {
            self.commit.wait(ticket, Waiter::Ack(ack));
        }
    }

    fn commit_sends(&mut self) {
        if self.pending_sends.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending_sends);
        let replies = std::mem::take(&mut self.pending_replies);
        if let Err(e) = self.store.write_outgoing_many(&pending) {
            let text = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(NodeError::StoreWrite(text.clone())));
            }
            return;
        }
        let ticket = self.note_write();
        for ((_, item), reply) in pending.into_iter().zip(replies) {
            self.unflushed.insert(item.id);
            self.commit.wait(ticket, Waiter::Queued(reply, item));
        }
    }

    fn commit_incoming(&mut self) {
        if self.pending_requests.is_empty() {
            return;
        }
        let messages = std::mem::take(&mut self.pending_incoming);
        let requests = std::mem::take(&mut self.pending_requests);
        match self.store.write_incoming_many(&messages) {
            Ok(fresh) => {
                for (message, new) in messages.iter().zip(&fresh) {
                    if *new {
                        // Whoever writes to us is in the contact list from then on.
                        if let Ok(Some(p)) = self.pinned(&message.peer)
                            && !p.contact.listed
                            && let Err(e) = self.list_contact(&message.peer)
                        {
                            warn!(peer = %message.peer, error = %e, "cannot list a contact");
                        }
                        self.emit(NodeEvent::MessageReceived {
                            peer: message.peer,
                            id: message.id,
                            timestamp_ms: message.timestamp_ms,
                            cipher: message.cipher,
                            body: message.body.clone(),
                        });
                    }
                }
                let ticket = if fresh.contains(&true) {
                    self.note_write()
                } else {
                    self.commit.last_ticket()
                };
                for request in requests {
                    if self.commit.is_durable(ticket) {
                        self.acknowledge(
                            request.peer,
                            &request.pinned.public,
                            request.ids,
                            request.channel,
                        );
                    } else {
                        self.commit.wait(ticket, Waiter::Ack(request));
                    }
                }
            }
            Err(e) => {
                for request in requests {
                    self.reject(request.peer, request.channel, format!("store: {e}"));
                }
            }
        }
    }

    /// Records acknowledged deliveries. Not waited on: a completion lost in a crash only
    /// means the message is sent again and acknowledged as a duplicate.
    fn commit_acks(&mut self) {
        if self.pending_acks.is_empty() {
            return;
        }
        let mut by_peer: HashMap<PeerId, Vec<Acknowledged>> = HashMap::new();
        for (peer, acked) in std::mem::take(&mut self.pending_acks) {
            by_peer.entry(peer).or_default().push(acked);
        }
        for (peer, acked) in by_peer {
            // The peer holds them, durably, whatever becomes of the record below: told first,
            // as that record is a store write and nothing else waits for it. (Commands that
            // read history come after it on this thread.)
            for a in &acked {
                self.emit(NodeEvent::Delivered { peer, id: a.id });
            }
            // Not flushed for its own sake: the next flush, or sled's own every half second,
            // takes it along.
            if let Err(e) = self.store.write_completed_many(&peer, &acked) {
                // The items stay in the outbox and are sent again; the peer acknowledges the
                // duplicates without storing them twice.
                warn!(%peer, error = %e, "cannot record deliveries");
            }
            self.deliver(peer);
        }
    }

    /// Signs one delivery acknowledgement for `ids` and sends it as the response.
    fn acknowledge(
        &mut self,
        peer: PeerId,
        public: &PublicIdentity,
        ids: Vec<MessageId>,
        channel: ResponseChannel<MsgResponse>,
    ) {
        let ack = Control::sign(
            &self.identity,
            public,
            MessageId::random(&mut rand::rng()),
            now_ms(),
            ControlKind::DeliveryAck { ids },
        );
        match ack {
            Ok(ack) => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .msg
                    .send_response(channel, MsgResponse::Ack(ack.to_bytes().into()));
            }
            Err(e) => self.reject(peer, channel, e.to_string()),
        }
    }

    fn shutdown(&mut self) {
        self.write_marks(true);
        for (peer, session) in &self.sessions {
            if let Err(e) = self
                .store
                .put_outbound_session(peer, &session.to_secret_bytes())
            {
                warn!(%peer, error = %e, "cannot save an outbound session");
            }
        }
        match self.store.flush() {
            Ok(()) => self.flushed_now(),
            Err(e) => {
                warn!(error = %e, "cannot flush the store at shutdown");
                self.answer((self.commit.last_ticket(), Err(e)));
            }
        }
        let peers: Vec<PeerId> = self.connected.iter().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        info!("node stopped");
    }

    fn emit(&self, event: NodeEvent) {
        // No subscriber is fine: events are for whoever listens.
        let _ = self.events.send(event);
    }

    /// A timestamp for a new outgoing item: now, but strictly after the previous one, so a
    /// chat's order is the order of sending even within one millisecond.
    fn next_ts(&mut self) -> u64 {
        self.last_ts = now_ms().max(self.last_ts + 1);
        self.last_ts
    }

    /// The inbound session keys (a poisoned lock is taken as it is: a cache entry is written
    /// whole or not at all).
    fn inbound_sessions(&self) -> MutexGuard<'_, InboundSessions> {
        self.inbound.sessions()
    }

    fn load_inbound_keys(&mut self) {
        let contacts = match self.store.contacts() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot list contacts to restore session keys");
                return;
            }
        };
        for contact in contacts {
            match self.store.inbound_keys(&contact.peer_id) {
                Ok(keys) => {
                    for (key_id, key) in keys {
                        self.inbound_sessions().insert(contact.ed25519, key);
                        self.persisted_keys.insert((contact.peer_id, key_id));
                    }
                }
                Err(e) => warn!(peer = %contact.peer_id, error = %e, "cannot restore session keys"),
            }
        }
    }

    /// After a start: give the swarm the addresses remembered for known peers, and schedule
    /// delivery to every peer that still has messages in the outbox.
    fn resume(&mut self) {
        match self.store.peers() {
            Ok(peers) => {
                for known in peers {
                    for addr in known
                        .addrs
                        .iter()
                        .filter_map(|a| a.parse::<Multiaddr>().ok())
                    {
                        // Known peers are where a restarted node rejoins the DHT, even
                        // without its bootstrap list.
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&known.peer_id, addr.clone());
                        self.swarm.add_peer_address(known.peer_id, addr);
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot restore known peers"),
        }
        match self.store.outbox() {
            Ok(items) => {
                let now = Instant::now();
                for item in items {
                    self.retries.due_now(item.peer, now);
                }
            }
            Err(e) => warn!(error = %e, "cannot read the outbox"),
        }
        self.resume_files();
    }

    /// The one way into the send pipeline, for texts and file offers
    /// alike: `message` joins the history and `item` the outbox in the next group commit, and
    /// `reply` is answered with the message id once that write is flushed.
    fn queue_send(&mut self, message: StoredMessage, item: OutboxItem, reply: Reply<MessageId>) {
        self.pending_sends.push((message, item));
        self.pending_replies.push(reply);
    }

    // ----- commands -------------------------------------------------------------------------

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::SendText {
                peer,
                text,
                cipher,
                reply,
            } => match self.prepare_text(peer, text, cipher) {
                Ok((message, item)) => self.queue_send(message, item, reply),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::AddPeer { peer, addr, reply } => self.add_peer(peer, addr, reply),
            Command::VerifyContact { peer, reply } => {
                let _ = reply.send(self.verify_contact(peer));
            }
            Command::SetRelay { peer, relay, reply } => {
                let _ = reply.send(self.set_relay(peer, relay));
            }
            Command::SetCipher {
                peer,
                cipher,
                reply,
            } => {
                let _ = reply.send(self.set_cipher(peer, cipher));
            }
            Command::DeleteChat {
                peer,
                for_both,
                reply,
            } => {
                let _ = reply.send(self.delete_chat(peer, for_both));
            }
            Command::History { peer, limit, reply } => {
                let _ = reply.send(self.store.history(&peer, limit).map_err(Into::into));
            }
            Command::Contact { peer, reply } => {
                let _ = reply.send(self.store.contact(&peer).map_err(Into::into));
            }
            Command::Contacts { reply } => {
                let listed = self
                    .store
                    .contacts()
                    .map(|all| all.into_iter().filter(|c| c.listed).collect());
                let _ = reply.send(listed.map_err(Into::into));
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peers());
            }
            Command::SearchDht { name, reply } => self.search_dht(&name, reply),
            Command::SearchLocal { name, reply } => {
                let _ = reply.send(self.search_local(&name));
            }
            Command::Dial { addr, reply } => {
                let result = self.swarm.dial(addr.clone()).map_err(|e| NodeError::Dial {
                    addr,
                    reason: e.to_string(),
                });
                let _ = reply.send(result);
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(Ok(self.swarm.listeners().cloned().collect()));
            }
            Command::SendFile {
                peer,
                path,
                via,
                reply,
            } => self.send_file(peer, path, via, reply),
            Command::FetchFile {
                file_id,
                out,
                reply,
            } => {
                let _ = reply.send(self.fetch_file(file_id, out));
            }
            Command::ForwardFile { file_id, to, reply } => self.forward_file(file_id, to, reply),
            Command::Files { reply } => {
                let _ = reply.send(self.files_list());
            }
            Command::Shutdown { .. } => unreachable!("handled in run"),
        }
    }

    /// The pinned contact and its parsed keys, from the cache or the store.
    fn pinned(&mut self, peer: &PeerId) -> Result<Option<Arc<Pinned>>, NodeError> {
        if let Some(p) = self.pinned.get(peer) {
            return Ok(Some(Arc::clone(p)));
        }
        let Some(contact) = self.store.contact(peer)? else {
            return Ok(None);
        };
        let public = public_of(&contact)?;
        let p = Arc::new(Pinned { contact, public });
        self.pinned.insert(*peer, Arc::clone(&p));
        Ok(Some(p))
    }

    /// Shows a pinned peer in the contact list (added, or a chat began).
    fn list_contact(&mut self, peer: &PeerId) -> Result<(), NodeError> {
        let mut contact = self
            .store
            .contact(peer)?
            .ok_or(NodeError::UnknownPeer(*peer))?;
        if !contact.listed {
            contact.listed = true;
            self.save_contact(&contact)?;
        }
        Ok(())
    }

    /// Writes a contact and drops its cached copy.
    fn save_contact(&mut self, contact: &Contact) -> Result<(), crate::store::StoreError> {
        self.pinned.remove(&contact.peer_id);
        self.store.put_contact(contact)
    }

    fn contact_for_sending(&mut self, peer: &PeerId) -> Result<Arc<Pinned>, NodeError> {
        let p = self.pinned(peer)?.ok_or(NodeError::UnknownPeer(*peer))?;
        if p.contact.key_changed {
            return Err(NodeError::KeyChanged(*peer));
        }
        Ok(p)
    }

    /// Checks a text and builds its history entry and outbox item; the group commit writes
    /// them and answers the caller.
    fn prepare_text(
        &mut self,
        peer: PeerId,
        text: String,
        cipher: Option<Cipher>,
    ) -> Result<(StoredMessage, OutboxItem), NodeError> {
        let contact = self.contact_for_sending(&peer)?.contact.clone();
        if !contact.listed {
            self.list_contact(&peer)?;
        }
        let cipher = cipher.unwrap_or(contact.cipher);
        let max = match cipher {
            Cipher::Aes => MAX_TEXT_LEN,
            Cipher::Rsa => MAX_RSA_TEXT_LEN,
        };
        if text.len() > max {
            return Err(NodeError::TooLarge {
                len: text.len(),
                max,
                cipher,
            });
        }
        let id = MessageId::random(&mut rand::rng());
        let ts = self.next_ts();
        let message = StoredMessage {
            id,
            peer,
            direction: Direction::Out,
            timestamp_ms: ts,
            cipher,
            body: Body::Text(text.clone()),
            status: Status::Queued,
            envelope: None,
        };
        let item = OutboxItem {
            id,
            peer,
            created_ms: ts,
            cipher,
            kind: OutboxKind::Text(text),
            attempts: 0,
        };
        Ok((message, item))
    }

    fn queue_control(&mut self, peer: PeerId, kind: ControlKind) -> Result<(), NodeError> {
        let pinned = self.contact_for_sending(&peer)?;
        let (contact, public) = (&pinned.contact, &pinned.public);
        let id = MessageId::random(&mut rand::rng());
        let ts = self.next_ts();
        let control = Control::sign(&self.identity, public, id, ts, kind)
            .map_err(|e| NodeError::Crypto(e.to_string()))?;
        let item = OutboxItem {
            id,
            peer,
            created_ms: ts,
            cipher: contact.cipher,
            kind: OutboxKind::Control(control.to_bytes()),
            attempts: 0,
        };
        // Whatever was sent before the control payload is written first, and queued first
        // once the control payload's flush has made it durable too.
        self.commit_sends();
        self.store.enqueue_control(&item)?;
        self.flushed_now();
        if let Some(queue) = self.queues.get_mut(&peer) {
            queue.push_back(item);
        }
        self.deliver(peer);
        Ok(())
    }

    fn set_cipher(&mut self, peer: PeerId, cipher: Cipher) -> Result<(), NodeError> {
        let mut contact = self.contact_for_sending(&peer)?.contact.clone();
        contact.cipher = cipher;
        self.save_contact(&contact)?;
        // A cipher switch starts a new session key.
        self.sessions.remove(&peer);
        self.store.remove_outbound_session(&peer)?;
        self.queue_control(peer, ControlKind::CipherSwitch { cipher })?;
        self.emit(NodeEvent::CipherChanged {
            peer,
            cipher,
            by: Direction::Out,
        });
        Ok(())
    }

    fn delete_chat(&mut self, peer: PeerId, for_both: bool) -> Result<usize, NodeError> {
        // Everything queued or received before the delete is written first, so it is deleted too.
        self.commit_sends();
        self.commit_incoming();
        if for_both {
            self.queue_control(peer, ControlKind::DeleteChat)?;
        }
        let deleted = self.store.delete_chat(&peer)?;
        self.flushed_now();
        self.emit(NodeEvent::ChatDeleted {
            peer,
            deleted,
            by: Direction::Out,
        });
        Ok(deleted)
    }

    /// Dials `peer` (at `addr`, or at the addresses known for it) and answers `reply` once its
    /// profile is verified and pinned ([`Self::finish_adding`]).
    fn add_peer(&mut self, peer: PeerId, addr: Option<Multiaddr>, reply: Reply<Contact>) {
        if self.connected.contains(&peer) {
            match self.pinned(&peer) {
                Ok(Some(p)) if p.contact.key_changed => {
                    let _ = reply.send(Err(NodeError::KeyChanged(peer)));
                    return;
                }
                Ok(Some(p)) => {
                    let result = self.list_contact(&peer).map(|()| {
                        let mut contact = p.contact.clone();
                        contact.listed = true;
                        contact
                    });
                    let _ = reply.send(result);
                    return;
                }
                // Connected, profile not in yet: ask for it again and wait.
                Ok(None) => self.send_profile(peer),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        } else {
            let mut addrs: Vec<Multiaddr> = addr.into_iter().collect();
            if addrs.is_empty()
                && let Ok(Some(known)) = self.store.peer(&peer)
            {
                addrs.extend(known.addrs.iter().filter_map(|a| a.parse().ok()));
            }
            // The behaviours add what they know (Kademlia, after a directory search).
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addrs)
                .extend_addresses_through_behaviour()
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => {}
                // Nothing known locally: ask the DHT where it is, then dial.
                Err(libp2p::swarm::DialError::NoAddresses) => self.find_peer(peer),
                Err(e) => {
                    let _ = reply.send(Err(NodeError::Unreachable {
                        peer,
                        reason: e.to_string(),
                    }));
                    return;
                }
            }
        }
        let waiting = self.adding.entry(peer).or_default();
        waiting.retain(|r| !r.is_closed());
        waiting.push(reply);
    }

    /// Answers the `add_peer` calls waiting for `peer`.
    fn finish_adding(&mut self, peer: PeerId, result: impl Fn() -> Result<Contact, NodeError>) {
        for reply in self.adding.remove(&peer).unwrap_or_default() {
            let _ = reply.send(result());
        }
    }

    /// Marks a contact verified; accepts the new keys of a contact whose key changed.
    fn verify_contact(&mut self, peer: PeerId) -> Result<Contact, NodeError> {
        let mut contact = self
            .store
            .contact(&peer)?
            .ok_or(NodeError::UnknownPeer(peer))?;
        if contact.key_changed {
            if let Some(bytes) = contact.pending_profile.take() {
                let profile = SignedProfile::from_bytes(&bytes)?;
                let verified = profile.verify(&peer)?;
                contact.ed25519 = verified.public.ed25519_bytes();
                contact.rsa_der = verified.public.rsa_der().to_vec();
                contact.name = verified.name;
                contact.profile = bytes;
            }
            contact.key_changed = false;
            // Session keys were wrapped for the old RSA key: start afresh.
            self.sessions.remove(&peer);
            self.store.remove_outbound_session(&peer)?;
        }
        contact.verified = true;
        contact.listed = true;
        self.save_contact(&contact)?;
        self.deliver(peer);
        Ok(contact)
    }

    fn set_relay(&mut self, peer: PeerId, relay: bool) -> Result<Contact, NodeError> {
        let mut contact = self
            .store
            .contact(&peer)?
            .ok_or(NodeError::UnknownPeer(peer))?;
        contact.relay = relay;
        // Trusted with the user's files: a contact from now on.
        contact.listed |= relay;
        self.save_contact(&contact)?;
        Ok(contact)
    }

    fn peers(&self) -> Result<Vec<PeerInfo>, NodeError> {
        let mut out: HashMap<PeerId, PeerInfo> = HashMap::new();
        for known in self.store.peers()? {
            out.insert(
                known.peer_id,
                PeerInfo {
                    peer_id: known.peer_id,
                    name: known.name,
                    addrs: known.addrs.iter().filter_map(|a| a.parse().ok()).collect(),
                    connected: self.connected.contains(&known.peer_id),
                    via: Via::parse(&known.via),
                },
            );
        }
        for peer in &self.connected {
            out.entry(*peer).or_insert_with(|| PeerInfo {
                peer_id: *peer,
                name: None,
                addrs: Vec::new(),
                connected: true,
                via: Via::Direct,
            });
        }
        for contact in self.store.contacts()? {
            if let Some(info) = out.get_mut(&contact.peer_id) {
                info.name = Some(contact.name);
            }
        }
        // How a connected peer is reached now: through a relay only, or directly (after hole
        // punching, a peer found via a relay is direct; so is one found in the DHT, whichever
        // came last: a search can name a peer again after its relayed connection opened).
        for info in out.values_mut() {
            match self.connection_path(&info.peer_id) {
                Some(Via::Relay) => info.via = Via::Relay,
                Some(_) if matches!(info.via, Via::Relay | Via::Kad) => info.via = Via::Direct,
                _ => {}
            }
        }
        let mut peers: Vec<PeerInfo> = out.into_values().collect();
        peers.sort_by_key(|p| p.peer_id.to_bytes());
        Ok(peers)
    }

    fn search_local(&self, name: &str) -> Result<Vec<PeerInfo>, NodeError> {
        let needle = name.trim().to_lowercase();
        let mut found: HashMap<PeerId, PeerInfo> = HashMap::new();
        for peer in self.peers()? {
            if peer
                .name
                .as_ref()
                .is_some_and(|n| n.to_lowercase().starts_with(&needle))
            {
                found.insert(peer.peer_id, peer);
            }
        }
        for contact in self.store.contacts()? {
            if contact.name.to_lowercase().starts_with(&needle) {
                found.entry(contact.peer_id).or_insert(PeerInfo {
                    peer_id: contact.peer_id,
                    name: Some(contact.name),
                    addrs: Vec::new(),
                    connected: self.connected.contains(&contact.peer_id),
                    via: Via::Direct,
                });
            }
        }
        let mut out: Vec<PeerInfo> = found.into_values().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    // ----- delivery -------------------------------------------------------------------------

    /// Forgets seen message ids older than the oldest message the policy still accepts (plus a
    /// day of margin): anything older is rejected by its timestamp before the replay check.
    fn prune_seen(&mut self) {
        let Some(max_age) = self.config.open_policy.max_age_ms else {
            return;
        };
        let cutoff = now_ms().saturating_sub(max_age + 24 * 60 * 60 * 1000);
        match self.store.prune_seen(cutoff) {
            Ok(n) if n > 0 => debug!(pruned = n, "forgot old seen message ids"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot prune seen message ids"),
        }
    }

    /// Dials a peer that mDNS found, unless connected meanwhile.
    fn dial_discovered(&mut self, peer: PeerId) {
        if !self.connected.contains(&peer)
            && let Err(e) = self.swarm.dial(peer)
        {
            debug!(%peer, error = %e, "cannot dial a discovered peer");
        }
    }

    fn retry_due(&mut self) {
        self.pump_all();
        self.expire_searches();
        self.announce_if_due();
        let now = Instant::now();
        for peer in outbox::take_due(&mut self.mdns_dials, now) {
            self.dial_discovered(peer);
        }
        if now.duration_since(self.last_prune) >= PRUNE_EVERY {
            self.last_prune = now;
            self.prune_seen();
        }
        for peer in self.retries.take_due(now) {
            if self.connected.contains(&peer) {
                self.deliver(peer);
                continue;
            }
            // Redial only for something to deliver; the dial fails later (not here) when the
            // peer is down, so the next retry is scheduled either way.
            let pending = match self.store.has_outbox_for(&peer) {
                Ok(pending) => pending,
                Err(e) => {
                    warn!(%peer, error = %e, "cannot read the outbox");
                    true
                }
            };
            if pending {
                if let Err(e) = self.dial_known(peer) {
                    debug!(%peer, error = %e, "redial failed");
                }
                self.schedule_retry(peer);
            } else {
                self.retries.reset(&peer);
            }
        }
    }

    /// Dials `peer` at the addresses remembered for it in the store as well as those the
    /// behaviours know: libp2p forgets an address after a failed dial, and a peer that was
    /// down a moment ago is often back at the same address.
    fn dial_known(&mut self, peer: PeerId) -> Result<(), libp2p::swarm::DialError> {
        let addrs: Vec<Multiaddr> = match self.store.peer(&peer) {
            Ok(Some(known)) => known.addrs.iter().filter_map(|a| a.parse().ok()).collect(),
            _ => Vec::new(),
        };
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .build();
        self.swarm.dial(opts)
    }

    fn schedule_retry(&mut self, peer: PeerId) {
        self.retries.schedule(peer, Instant::now());
    }

    /// Sends what the outbox holds for `peer`, if it is connected; otherwise dials it and
    /// schedules a retry.
    fn deliver(&mut self, peer: PeerId) {
        if !self.connected.contains(&peer) {
            if let Err(e) = self.dial_known(peer) {
                debug!(%peer, error = %e, "cannot dial yet");
            }
            self.schedule_retry(peer);
            return;
        }
        if !self.queues.contains_key(&peer) {
            match self.store.outbox_for(&peer) {
                Ok(items) => {
                    // Acknowledged but not yet recorded: not to be sent again.
                    let acked: HashSet<MessageId> =
                        self.pending_acks.iter().map(|(_, a)| a.id).collect();
                    let flying = self.in_flight.ids_to(&peer);
                    let queue = items
                        .into_iter()
                        .filter(|i| {
                            !flying.contains(&i.id)
                                && !self.unflushed.contains(&i.id)
                                && !acked.contains(&i.id)
                        })
                        .collect();
                    self.queues.insert(peer, queue);
                }
                Err(e) => {
                    warn!(%peer, error = %e, "cannot read the outbox");
                    return;
                }
            }
        }
        let mut budget = MAX_IN_FLIGHT_PER_PEER.saturating_sub(self.in_flight.count_to(&peer));
        while budget > 0 {
            let Some(item) = self.queues.get_mut(&peer).and_then(VecDeque::pop_front) else {
                break;
            };
            let sealed = match self.seal_item(&item) {
                Ok(sealed) => sealed,
                // It stays in the store's outbox and is tried again after a reload.
                Err(e) => {
                    warn!(%peer, id = %item.id, error = %e, "cannot seal an outbox item");
                    continue;
                }
            };
            let (request, flight) = match sealed {
                Sealed::Control(bytes) => {
                    let flight = InFlight {
                        peer,
                        items: vec![(item.id, item.created_ms)],
                        key_ids: Vec::new(),
                        envelopes: Vec::new(),
                    };
                    (MsgRequest::Control(bytes.into()), flight)
                }
                Sealed::Envelope(unsigned, key_id) => {
                    let Some(sent) = self.fill_batch(peer, item, *unsigned, key_id) else {
                        continue;
                    };
                    sent
                }
            };
            let request_id = self.swarm.behaviour_mut().msg.send_request(&peer, request);
            self.in_flight.track(request_id, flight);
            budget -= 1;
        }
    }

    /// One request's batch of envelopes for `peer`: `first`, then the next queued texts, up to
    /// [`SEND_BATCH`] and the frame limit (a control payload goes alone and in order, so the
    /// batch stops before one), all signed with one signature. `None` if nothing could be
    /// sent.
    fn fill_batch(
        &mut self,
        peer: PeerId,
        first: OutboxItem,
        unsigned: UnsignedEnvelope,
        key_id: Option<envelope::KeyId>,
    ) -> Option<(MsgRequest, InFlight)> {
        let mut planned = unsigned.max_signed_len();
        let mut items = vec![(first, unsigned, key_id)];
        while items.len() < SEND_BATCH {
            let Some(item) = self.queues.get_mut(&peer).and_then(VecDeque::pop_front) else {
                break;
            };
            if matches!(item.kind, OutboxKind::Control(_)) {
                self.requeue_front(peer, vec![item]);
                break;
            }
            let (unsigned, key_id) = match self.seal_item(&item) {
                Ok(Sealed::Envelope(unsigned, key_id)) => (*unsigned, key_id),
                Ok(Sealed::Control(_)) => unreachable!("controls stop the batch above"),
                Err(e) => {
                    warn!(%peer, id = %item.id, error = %e, "cannot seal an outbox item");
                    continue;
                }
            };
            let len = unsigned.max_signed_len();
            if !EnvelopeBatch::fits(items.len() + 1, planned + len) {
                // The next request takes it (sealed again: the wasted seal only costs a nonce).
                self.requeue_front(peer, vec![item]);
                break;
            }
            planned += len;
            items.push((item, unsigned, key_id));
        }
        let (items, unsigned): (Vec<_>, Vec<_>) = items
            .into_iter()
            .map(|(item, unsigned, key_id)| ((item, key_id), unsigned))
            .unzip();
        let signed = envelope::sign_batch(&self.identity, unsigned);
        let mut batch = EnvelopeBatch::new();
        let mut flight = InFlight {
            peer,
            items: Vec::with_capacity(items.len()),
            key_ids: Vec::new(),
            envelopes: Vec::with_capacity(items.len()),
        };
        let mut items = items.into_iter().zip(signed);
        let mut left = Vec::new();
        for ((item, key_id), env) in items.by_ref() {
            let bytes = env.to_bytes();
            if batch.try_push(bytes.clone()).is_err() {
                // Not expected (the sizes above are upper bounds): whatever does not fit goes
                // in the next request.
                warn!(%peer, id = %item.id, "an envelope does not fit in a frame");
                left.push(item);
                break;
            }
            flight.envelopes.push((item.id, bytes));
            flight.items.push((item.id, item.created_ms));
            if let Some(key_id) = key_id
                && !flight.key_ids.contains(&key_id)
            {
                flight.key_ids.push(key_id);
            }
        }
        left.extend(items.map(|((item, _), _)| item));
        self.requeue_front(peer, left);
        (!batch.is_empty()).then_some((MsgRequest::Envelopes(batch), flight))
    }

    /// Puts `items` back at the front of `peer`'s queue, in their order.
    fn requeue_front(&mut self, peer: PeerId, items: Vec<OutboxItem>) {
        if let Some(queue) = self.queues.get_mut(&peer) {
            for item in items.into_iter().rev() {
                queue.push_front(item);
            }
        }
    }

    /// Forgets a finished request; returns it.
    fn untrack(&mut self, request_id: OutboundRequestId) -> Option<InFlight> {
        self.in_flight.untrack(&request_id)
    }

    /// A request to `peer` failed: reload its queue from the store next time (it still holds
    /// everything unacknowledged) and retry after the backoff.
    fn requeue(&mut self, peer: PeerId) {
        self.queues.remove(&peer);
        self.schedule_retry(peer);
    }

    fn seal_item(&mut self, item: &OutboxItem) -> Result<Sealed, NodeError> {
        let pinned = self.contact_for_sending(&item.peer)?;
        match &item.kind {
            OutboxKind::Control(bytes) => Ok(Sealed::Control(bytes.clone())),
            OutboxKind::Text(_) | OutboxKind::Payload(_) => {
                let public = &pinned.public;
                let payload = match &item.kind {
                    OutboxKind::Payload(bytes) => bytes.clone(),
                    OutboxKind::Text(text) => ChatPayload::Text(text.clone()).to_bytes(),
                    OutboxKind::Control(_) => unreachable!("matched above"),
                };
                let mut rng = rand::rng();
                let (env, key_id) = match item.cipher {
                    Cipher::Rsa => (
                        envelope::seal_rsa_unsigned(
                            &self.identity,
                            public,
                            item.id,
                            item.created_ms,
                            &payload,
                            &mut rng,
                        ),
                        None,
                    ),
                    Cipher::Aes => {
                        self.ensure_session(&item.peer, public)?;
                        let session = self
                            .sessions
                            .get_mut(&item.peer)
                            .ok_or(NodeError::UnknownPeer(item.peer))?;
                        let key_id = session.key_id();
                        (
                            envelope::seal_aes_unsigned(
                                &self.identity,
                                public,
                                session,
                                item.id,
                                item.created_ms,
                                &payload,
                                &mut rng,
                            ),
                            Some(key_id),
                        )
                    }
                };
                let env = env.map_err(|e| NodeError::Crypto(e.to_string()))?;
                Ok(Sealed::Envelope(Box::new(env), key_id))
            }
        }
    }

    /// Makes sure a usable outbound session for `peer` is in `self.sessions`: the saved one,
    /// or a new one when there is none or the policy says to rotate.
    fn ensure_session(&mut self, peer: &PeerId, public: &PublicIdentity) -> Result<(), NodeError> {
        let now = now_ms();
        if !self.sessions.contains_key(peer)
            && let Some(bytes) = self.store.outbound_session(peer)?
            && let Ok(session) = OutboundSession::from_secret_bytes(&bytes)
        {
            self.sessions.insert(*peer, session);
        }
        let stale = self
            .sessions
            .get(peer)
            .is_none_or(|s| s.needs_rotation(&self.config.rotation, now));
        if stale {
            let session = OutboundSession::new(&mut rand::rng(), public, now)
                .map_err(|e| NodeError::Crypto(e.to_string()))?;
            self.store
                .put_outbound_session(peer, &session.to_secret_bytes())?;
            self.sessions.insert(*peer, session);
        }
        Ok(())
    }

    fn on_ack(&mut self, request_id: OutboundRequestId, response: MsgResponse) {
        let Some(flight) = self.untrack(request_id) else {
            return;
        };
        let peer = flight.peer;
        self.incompatible.remove(&peer);
        let bytes = match response {
            MsgResponse::Ack(bytes) => bytes,
            MsgResponse::Rejected => {
                debug!(%peer, messages = flight.items.len(), "peer rejected a request; will retry");
                self.requeue(peer);
                return;
            }
        };
        let Ok(pinned) = self.contact_for_sending(&peer) else {
            return;
        };
        let public = &pinned.public;
        let never = |_: &[u8; 32], _: &MessageId| false;
        let ctx = OpenContext {
            me: &self.identity,
            sender: public,
            now_ms: now_ms(),
            policy: self.config.open_policy,
            seen: &never,
        };
        let acked: HashSet<MessageId> = match Control::from_bytes(&bytes) {
            Ok(control) => match control.verify(&ctx) {
                Ok(ControlKind::DeliveryAck { ids }) => ids.iter().copied().collect(),
                _ => HashSet::new(),
            },
            Err(_) => HashSet::new(),
        };
        let (done, missed): (Vec<_>, Vec<_>) = flight
            .items
            .into_iter()
            .partition(|(id, _)| acked.contains(id));
        if done.is_empty() {
            warn!(%peer, messages = missed.len(), "invalid acknowledgement");
            self.requeue(peer);
            return;
        }
        self.retries.reset(&peer);
        if let Some(session) = self.sessions.get_mut(&peer)
            && flight.key_ids.contains(&session.key_id())
            && !session.is_acknowledged()
        {
            session.mark_acknowledged();
            if let Err(e) = self
                .store
                .put_outbound_session(&peer, &session.to_secret_bytes())
            {
                warn!(%peer, error = %e, "cannot save the session");
            }
        }
        // The envelopes the peer holds (for "show ciphertext") are recorded with the
        // deliveries, in the same write.
        let mut envelopes: HashMap<MessageId, Vec<u8>> = flight.envelopes.into_iter().collect();
        self.pending_acks
            .extend(done.into_iter().map(|(id, created_ms)| {
                let acked = Acknowledged {
                    id,
                    created_ms,
                    envelope: envelopes.remove(&id),
                };
                (peer, acked)
            }));
        if !missed.is_empty() {
            debug!(%peer, messages = missed.len(), "peer rejected part of a batch; will retry");
            self.requeue(peer);
        }
    }

    fn on_outbound_failure(&mut self, request_id: OutboundRequestId) {
        if let Some(flight) = self.untrack(request_id) {
            self.requeue(flight.peer);
        }
    }

    // ----- receiving ------------------------------------------------------------------------

    /// Takes `n` tokens from the peer's bucket, if it has them.
    fn allow_inbound(&mut self, peer: &PeerId, n: usize) -> bool {
        self.limiter.allow(peer, n, Instant::now())
    }

    fn reject(&mut self, peer: PeerId, channel: ResponseChannel<MsgResponse>, reason: String) {
        debug!(%peer, %reason, "inbound frame rejected");
        self.emit(NodeEvent::Rejected { peer, reason });
        let _ = self
            .swarm
            .behaviour_mut()
            .msg
            .send_response(channel, MsgResponse::Rejected);
    }

    fn on_msg_request(
        &mut self,
        peer: PeerId,
        request: MsgRequest,
        channel: ResponseChannel<MsgResponse>,
    ) {
        let frames = match &request {
            MsgRequest::Envelopes(batch) => batch.len(),
            MsgRequest::Envelope(_) | MsgRequest::Control(_) => 1,
        };
        if !self.allow_inbound(&peer, frames) {
            return self.reject(peer, channel, "rate limited".into());
        }
        let pinned = match self.pinned(&peer) {
            Ok(Some(p)) if !p.contact.key_changed => p,
            Ok(Some(_)) => return self.reject(peer, channel, "keys changed".into()),
            Ok(None) => return self.reject(peer, channel, "not a contact yet".into()),
            Err(e) => return self.reject(peer, channel, e.to_string()),
        };
        self.take_msg_request(peer, pinned, request, channel);
    }

    /// Handles a message request whose turn has come (see [`inbound`]).
    fn handle_msg_request(
        &mut self,
        peer: PeerId,
        pinned: Arc<Pinned>,
        request: MsgRequest,
        channel: ResponseChannel<MsgResponse>,
    ) {
        let result = match request {
            MsgRequest::Envelope(bytes) => self.receive_envelope(peer, &pinned.public, &bytes),
            MsgRequest::Control(bytes) => {
                self.receive_control(peer, pinned.contact.clone(), &pinned.public, &bytes)
            }
            // Batches come through `take_msg_request`, which checks them off the actor; one
            // handed here directly is checked in place.
            MsgRequest::Envelopes(batch) => {
                let checked = inbound::verify_batch(&batch, &pinned.public);
                return self.receive_batch(peer, pinned, &batch, checked, channel);
            }
        };
        match result {
            Ok(Inbound::Ack(id)) => self.acknowledge_when_durable(PendingAck {
                peer,
                pinned,
                ids: vec![id],
                channel,
            }),
            Ok(Inbound::Store(message)) => {
                self.pending_requests.push(PendingAck {
                    peer,
                    pinned,
                    ids: vec![message.id],
                    channel,
                });
                self.pending_incoming.push(message);
            }
            Err(reason) => self.reject(peer, channel, reason),
        }
    }

    /// Verifies and opens an envelope; an error is the reason to reject.
    fn receive_envelope(
        &mut self,
        peer: PeerId,
        public: &PublicIdentity,
        bytes: &[u8],
    ) -> Result<Inbound, String> {
        let env = Envelope::from_bytes(bytes).map_err(|e| inbound::reason(&e))?;
        let checked = envelope::verify_many(vec![env], public)
            .pop()
            .ok_or("internal: the envelope was not checked")?
            .map_err(|e| inbound::reason(&e));
        self.receive_verified(peer, public, bytes, checked)
    }

    /// Opens an envelope whose signature is checked (`bytes` is its encoding, kept in
    /// history); an error is the reason to reject.
    fn receive_verified(
        &mut self,
        peer: PeerId,
        public: &PublicIdentity,
        bytes: &[u8],
        checked: Result<Verified, String>,
    ) -> Result<Inbound, String> {
        let verified = checked?;
        let seen = SeenIn {
            store: &self.store,
            peer,
        };
        let ctx = seen.context(&self.identity, public, self.config.open_policy);
        let mut sessions = self.inbound.sessions();
        let opened = match envelope::open_verified(&verified, &ctx, &mut sessions, &mut rand::rng())
        {
            Ok(opened) => opened,
            // The sender retried after our ack was lost: acknowledge again, store nothing.
            Err(e) if e.reason() == RejectReason::Replayed => {
                return Ok(Inbound::Ack(verified.envelope().id));
            }
            Err(e) => return Err(inbound::reason(&e)),
        };
        if let Some(key_id) = opened.key_id
            && !self.persisted_keys.contains(&(peer, key_id))
            && let Some(key) = sessions.get(&verified.envelope().sender, &key_id)
        {
            match self.store.put_inbound_key(&peer, &key_id, key) {
                Ok(()) => {
                    self.persisted_keys.insert((peer, key_id));
                }
                Err(e) => warn!(%peer, error = %e, "cannot save a session key"),
            }
        }
        drop(sessions);
        let payload =
            ChatPayload::from_bytes(&opened.plaintext).map_err(|e| format!("payload: {e}"))?;
        let body = match payload {
            ChatPayload::Text(text) => Body::Text(text),
            ChatPayload::File(offer) => self.receive_offer(peer, opened.id, &offer)?,
        };
        let message = StoredMessage {
            id: opened.id,
            peer,
            direction: Direction::In,
            timestamp_ms: opened.timestamp,
            cipher: opened.cipher,
            body,
            status: Status::Received,
            envelope: Some(bytes.to_vec()),
        };
        Ok(Inbound::Store(message))
    }

    fn receive_control(
        &mut self,
        peer: PeerId,
        mut contact: Contact,
        public: &PublicIdentity,
        bytes: &[u8],
    ) -> Result<Inbound, String> {
        // Messages received before this payload are written first (a delete must not miss
        // them).
        self.commit_incoming();
        let control = Control::from_bytes(bytes).map_err(|e| inbound::reason(&e))?;
        let seen = SeenIn {
            store: &self.store,
            peer,
        };
        let ctx = seen.context(&self.identity, public, self.config.open_policy);
        let kind = match control.verify(&ctx) {
            Ok(kind) => kind.clone(),
            Err(e) if e.reason() == RejectReason::Replayed => return Ok(Inbound::Ack(control.id)),
            Err(e) => return Err(inbound::reason(&e)),
        };
        match kind {
            ControlKind::CipherSwitch { cipher } => {
                contact.cipher = cipher;
                self.save_contact(&contact)
                    .map_err(|e| format!("store: {e}"))?;
                self.sessions.remove(&peer);
                self.emit(NodeEvent::CipherChanged {
                    peer,
                    cipher,
                    by: Direction::In,
                });
            }
            ControlKind::DeleteChat => {
                let deleted = self
                    .store
                    .delete_chat(&peer)
                    .map_err(|e| format!("store: {e}"))?;
                self.emit(NodeEvent::ChatDeleted {
                    peer,
                    deleted,
                    by: Direction::In,
                });
            }
            ControlKind::DeliveryAck { .. } => {
                return Err("an acknowledgement is not a request".into());
            }
        }
        self.store
            .mark_seen(&peer, &control.id, control.timestamp)
            .map_err(|e| format!("store: {e}"))?;
        Ok(Inbound::Ack(control.id))
    }

    // ----- profiles -------------------------------------------------------------------------

    fn send_profile(&mut self, peer: PeerId) {
        let request = ProfileRequest {
            profile: self.profile.to_bytes().into(),
        };
        self.swarm
            .behaviour_mut()
            .profile
            .send_request(&peer, request);
    }

    /// Verifies a peer's profile and pins its keys (or flags a key change).
    fn pin_profile(&mut self, peer: PeerId, bytes: &[u8]) {
        let verified = match SignedProfile::from_bytes(bytes).and_then(|p| {
            let v = p.verify(&peer)?;
            Ok((p, v))
        }) {
            Ok(v) => v,
            Err(e) => {
                warn!(%peer, error = %e, "rejected a profile");
                self.emit(NodeEvent::Rejected {
                    peer,
                    reason: format!("profile: {e}"),
                });
                return;
            }
        };
        let (profile, verified) = verified;
        let ed = verified.public.ed25519_bytes();
        let rsa = verified.public.rsa_der().to_vec();
        let existing = match self.store.contact(&peer) {
            Ok(c) => c,
            Err(e) => {
                warn!(%peer, error = %e, "cannot read a contact");
                return;
            }
        };
        let contact = match existing {
            Some(mut c) => {
                if c.ed25519 != ed || c.rsa_der != rsa {
                    let offered = profile.to_bytes();
                    if !c.key_changed || c.pending_profile.as_ref() != Some(&offered) {
                        // A re-verification accepts the keys of this profile.
                        c.key_changed = true;
                        c.verified = false;
                        c.pending_profile = Some(offered);
                        if let Err(e) = self.save_contact(&c) {
                            warn!(%peer, error = %e, "cannot record a key change");
                        }
                    }
                    self.emit(NodeEvent::KeyChanged { peer });
                    self.finish_adding(peer, || Err(NodeError::KeyChanged(peer)));
                    return;
                }
                c.name = verified.name.clone();
                c.profile = profile.to_bytes();
                c
            }
            None => Contact {
                peer_id: peer,
                name: verified.name.clone(),
                profile: profile.to_bytes(),
                ed25519: ed,
                rsa_der: rsa,
                cipher: Cipher::Aes,
                verified: false,
                key_changed: false,
                added_ms: now_ms(),
                pending_profile: None,
                listed: false,
                relay: false,
            },
        };
        // Someone asked to add this peer: it becomes a contact.
        let mut contact = contact;
        if self.adding.contains_key(&peer) {
            contact.listed = true;
        }
        if let Err(e) = self.save_contact(&contact) {
            warn!(%peer, error = %e, "cannot pin a profile");
            return;
        }
        self.remember_peer(peer, None, Some(verified.name.clone()), None);
        self.emit(NodeEvent::ProfileVerified {
            peer,
            name: verified.name,
        });
        self.finish_adding(peer, || Ok(contact.clone()));
        self.deliver(peer);
    }

    fn remember_peer(
        &mut self,
        peer: PeerId,
        addr: Option<&Multiaddr>,
        name: Option<String>,
        via: Option<Via>,
    ) {
        let mut known = match self.store.peer(&peer) {
            Ok(Some(k)) => k,
            Ok(None) => KnownPeer {
                peer_id: peer,
                name: None,
                addrs: Vec::new(),
                via: via.unwrap_or(Via::Direct).as_str().to_owned(),
                last_seen_ms: 0,
            },
            Err(e) => {
                warn!(%peer, error = %e, "cannot read a known peer");
                return;
            }
        };
        if let Some(addr) = addr {
            let addr = addr.to_string();
            if !known.addrs.contains(&addr) {
                known.addrs.push(addr);
                // Keep the list short: the newest addresses matter.
                if known.addrs.len() > 8 {
                    known.addrs.remove(0);
                }
            }
        }
        if name.is_some() {
            known.name = name;
        }
        if let Some(via) = via {
            known.via = via.as_str().to_owned();
        }
        known.last_seen_ms = now_ms();
        if let Err(e) = self.store.put_peer(&known) {
            warn!(%peer, error = %e, "cannot remember a peer");
        }
    }

    // ----- swarm events ---------------------------------------------------------------------

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.emit(NodeEvent::Listening { addr: address });
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                // An address we dialled can be dialled again; the far end of a connection we
                // accepted is the peer's source port, ephemeral on most systems. Its listen
                // addresses come with identify.
                let dialled = endpoint.is_dialer().then(|| endpoint.get_remote_address());
                self.remember_peer(peer_id, dialled, None, None);
                self.track_connection(peer_id, connection_id, &endpoint);
                if num_established.get() == 1 {
                    self.connected.insert(peer_id);
                    self.mdns_dials.remove(&peer_id);
                    self.emit(NodeEvent::PeerConnected { peer: peer_id });
                    self.send_profile(peer_id);
                    self.retries.reset(&peer_id);
                    self.files_peer_connected(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.untrack_connection(peer_id, connection_id);
                if num_established == 0 {
                    self.connected.remove(&peer_id);
                    self.queues.remove(&peer_id);
                    self.limiter.forget(&peer_id);
                    self.emit(NodeEvent::PeerDisconnected { peer: peer_id });
                }
            }
            SwarmEvent::ListenerClosed { listener_id, .. } => self.listener_closed(listener_id),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(?peer_id, %error, "outgoing connection failed");
                if let Some(peer) = peer_id
                    && !self.connected.contains(&peer)
                {
                    let reason = error.to_string();
                    self.finish_adding(peer, || {
                        Err(NodeError::Unreachable {
                            peer,
                            reason: reason.clone(),
                        })
                    });
                }
            }
            SwarmEvent::Behaviour(event) => self.handle_behaviour_event(event),
            _ => {}
        }
    }

    fn handle_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list {
                    // Not given to Kademlia here: a routing table's first peer starts a
                    // bootstrap that dials it at once, from both sides (see below). Identify
                    // gives Kademlia the peer's listen addresses once connected.
                    self.swarm.add_peer_address(peer, addr.clone());
                    self.remember_peer(peer, Some(&addr), None, Some(Via::Mdns));
                    self.emit(NodeEvent::PeerDiscovered {
                        peer,
                        via: Via::Mdns,
                    });
                    if self.connected.contains(&peer) {
                        continue;
                    }
                    // Two nodes on a LAN find each other within milliseconds. When both
                    // dialled at once, from their listening ports (which libp2p reuses for
                    // dials) to each other's, the two SYNs made one TCP connection
                    // (simultaneous open) on which both started noise as the initiator: both
                    // dials failed ("Handshake failed"), and nothing tried again (the mDNS
                    // test failed so in CI once). So the lesser peer id dials now, and the
                    // other only if no connection came within a second.
                    if self.identity.peer_id() < peer {
                        self.dial_discovered(peer);
                    } else {
                        self.mdns_dials
                            .entry(peer)
                            .or_insert(Instant::now() + MDNS_DIAL_DELAY);
                    }
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.note_protocols(peer_id, &info.protocols);
                // Kademlia learns addresses only when told: feed it the listen addresses. They
                // are also remembered, so the peer can be redialled after a restart.
                for addr in info.listen_addrs.iter().filter(|a| is_dialable(a)) {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                    self.remember_peer(peer_id, Some(addr), None, None);
                }
            }
            BehaviourEvent::Profile(event) => self.handle_profile_event(event),
            BehaviourEvent::Msg(event) => self.handle_msg_event(event),
            BehaviourEvent::File(event) => self.handle_file_event(event),
            BehaviourEvent::Kad(event) => self.handle_kad_event(event),
            BehaviourEvent::RelayClient(event) => self.handle_relay_client_event(event),
            BehaviourEvent::Dcutr(event) => self.handle_dcutr_event(event),
            BehaviourEvent::Autonat(event) => self.handle_autonat_event(event),
            // libp2p's ping only reports a failure; the connection is ours to close. A link
            // cut without a reset (a cable pulled, a partition) leaves TCP waiting for
            // minutes while messages time out on it; closed, the peer counts as gone and the
            // outbox redials it with backoff. A peer that does not speak ping is no failure.
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
            }) if !matches!(error, ping::Failure::Unsupported) => {
                debug!(%peer, %error, "ping failed; closing the connection");
                self.swarm.close_connection(connection);
            }
            _ => {}
        }
    }

    fn handle_profile_event(
        &mut self,
        event: request_response::Event<ProfileRequest, ProfileResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let response = ProfileResponse {
                    profile: self.profile.to_bytes().into(),
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .profile
                    .send_response(channel, response);
                self.pin_profile(peer, &request.profile);
            }
            request_response::Event::Message {
                peer,
                message: Message::Response { response, .. },
                ..
            } => self.pin_profile(peer, &response.profile),
            request_response::Event::OutboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "profile exchange failed");
            }
            _ => {}
        }
    }

    fn handle_msg_event(&mut self, event: request_response::Event<MsgRequest, MsgResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_msg_request(peer, request, channel),
            request_response::Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.on_ack(request_id, response),
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                if refused_protocol(&error) {
                    if self.incompatible.insert(peer) {
                        warn!(
                            %peer,
                            protocol = %MSG_PROTOCOL,
                            "the peer does not speak our message protocol (another version of \
                             encrypto?): messages to it stay queued and are retried"
                        );
                        self.emit(NodeEvent::PeerIncompatible { peer });
                    }
                } else {
                    debug!(%peer, %error, "message request failed");
                }
                self.on_outbound_failure(request_id);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "inbound message failed");
                self.emit(NodeEvent::Rejected {
                    peer,
                    reason: error.to_string(),
                });
            }
            _ => {}
        }
    }
}

/// Whether a request failed because the peer does not speak its protocol. Requests go with
/// the protocol proposal (lazy negotiation), so a refusal usually comes back as an I/O error
/// on the stream rather than as `UnsupportedProtocols`.
fn refused_protocol(error: &request_response::OutboundFailure) -> bool {
    match error {
        request_response::OutboundFailure::UnsupportedProtocols => true,
        request_response::OutboundFailure::Io(e) => e.get_ref().is_some_and(|inner| {
            matches!(
                inner.downcast_ref::<NegotiationError>(),
                Some(NegotiationError::Failed)
            )
        }),
        _ => false,
    }
}

/// Whether an address a peer announces is worth remembering (not an unspecified address).
fn is_dialable(addr: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

fn public_of(contact: &Contact) -> Result<PublicIdentity, NodeError> {
    PublicIdentity::from_bytes(&contact.ed25519, &contact.rsa_der).map_err(|e| {
        NodeError::Crypto(format!(
            "the pinned keys of {} are invalid: {e}",
            contact.peer_id
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use request_response::OutboundFailure;

    #[test]
    fn a_refused_protocol_is_told_from_other_failures() {
        let refused = std::io::Error::other(NegotiationError::Failed);
        assert!(refused_protocol(&OutboundFailure::Io(refused)));
        assert!(refused_protocol(&OutboundFailure::UnsupportedProtocols));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!refused_protocol(&OutboundFailure::Io(reset)));
        let other = std::io::Error::other("Protocol negotiation failed.");
        assert!(!refused_protocol(&OutboundFailure::Io(other)));
        assert!(!refused_protocol(&OutboundFailure::Timeout));
        assert!(!refused_protocol(&OutboundFailure::ConnectionClosed));
    }
}
