//! The background side of the window: a tokio runtime on its own threads runs the node and
//! every call to it. The UI thread only spawns small tasks here (which never blocks it); each
//! task sends its result back as an [`Update`] on a bounded channel and asks egui to repaint.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use encrypto_crypto::file::FileId;
use encrypto_crypto::keystore::KdfParams;
use encrypto_crypto::{Cipher, PeerId, PublicIdentity, RsaBits};
use encrypto_node::FileTransfer;
use encrypto_node::config::ConfigFile;
use encrypto_node::view::{Contact, Message};
use encrypto_node::{
    DataDir, DataDirError, Multiaddr, NodeConfig, NodeError, NodeEvent, NodeHandle, PeerInfo,
    StoreError, Via,
};
use tokio::sync::{broadcast, mpsc};
use zeroize::Zeroizing;

/// Updates waiting for the UI thread at most; a task with a result waits for room.
const UPDATE_QUEUE: usize = 1024;
/// Most updates applied in one frame, so a burst of events cannot stall a frame.
pub(crate) const UPDATES_PER_FRAME: usize = 512;
/// How long the node may take to flush and stop when the window closes.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// How long a desktop notification may take before it counts as unavailable.
const NOTIFY_WAIT: Duration = Duration::from_secs(5);
/// The newest messages of a chat loaded into the window.
pub(crate) const HISTORY_LIMIT: usize = 500;

/// The unlocked identity and its running node.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) handle: NodeHandle,
    pub(crate) name: String,
    pub(crate) peer_id: PeerId,
    pub(crate) public: PublicIdentity,
}

/// Why the identity could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// The passphrase does not open the keystore.
    WrongPassphrase,
    /// Another process (a daemon, another window) holds the store.
    InUse(String),
    /// Anything else, as one line.
    Other(String),
}

/// What the user asked for on the onboarding screen.
pub(crate) enum OpenRequest {
    Create {
        name: String,
        passphrase: Zeroizing<String>,
    },
    Unlock {
        passphrase: Zeroizing<String>,
    },
}

/// A result or an event for the UI thread.
pub(crate) enum Update {
    Ready(Box<Session>),
    OpenFailed(OpenError),
    Event(NodeEvent),
    /// Events were dropped (the UI fell behind): reload everything.
    Lagged,
    Contacts(Vec<Contact>),
    History(PeerId, Vec<Message>),
    Peers(Vec<PeerInfo>),
    ListenAddrs(Vec<Multiaddr>),
    SearchResults {
        query: String,
        found: Vec<PeerInfo>,
        /// The user pressed Enter (search the DHT too).
        dht: bool,
    },
    Sent(PeerId),
    /// Every file transfer, newest first.
    Files(Vec<FileTransfer>),
    /// A file was offered in a chat (its offer is queued like a text).
    FileSent(FileTransfer),
    /// A download was started, or started again.
    Fetching(FileTransfer),
    /// A contact was added (pinned) on the user's request.
    Added(Contact),
    /// A contact was marked verified.
    Verified(Contact),
    /// A contact's relay mark was set or cleared.
    RelaySet(Contact),
    /// A command failed: one line for the status bar.
    Error(String),
    /// Something the user should know: one line for the status bar.
    Info(String),
    NotificationsUnavailable,
}

/// How the window's node is set up.
#[derive(Clone)]
pub(crate) struct NodeSetup {
    pub(crate) data_dir: PathBuf,
    pub(crate) kdf: KdfParams,
    pub(crate) rsa_bits: RsaBits,
    pub(crate) node: NodeConfig,
}

pub(crate) struct Backend {
    rt: tokio::runtime::Runtime,
    tx: mpsc::Sender<Update>,
    rx: mpsc::Receiver<Update>,
    ctx: Arc<OnceLock<egui::Context>>,
    node: Option<NodeHandle>,
}

impl Backend {
    pub(crate) fn new() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("encrypto-node")
            .enable_all()
            .build()?;
        let (tx, rx) = mpsc::channel(UPDATE_QUEUE);
        Ok(Backend {
            rt,
            tx,
            rx,
            ctx: Arc::new(OnceLock::new()),
            node: None,
        })
    }

    /// Remembers the egui context, so tasks can ask for a repaint.
    pub(crate) fn set_ctx(&self, ctx: &egui::Context) {
        let _ = self.ctx.set(ctx.clone());
    }

    /// The next update, if one is waiting.
    pub(crate) fn try_next(&mut self) -> Option<Update> {
        self.rx.try_recv().ok()
    }

    /// The running node, once the identity is open.
    pub(crate) fn node(&self) -> Option<&NodeHandle> {
        self.node.as_ref()
    }

    pub(crate) fn set_node(&mut self, handle: NodeHandle) {
        self.node = Some(handle);
    }

    /// Runs `task` on the runtime; its update (if any) goes to the UI thread.
    fn spawn<F>(&self, task: F)
    where
        F: Future<Output = Option<Update>> + Send + 'static,
    {
        let sender = Sender {
            tx: self.tx.clone(),
            ctx: Arc::clone(&self.ctx),
        };
        // Tasks belong to the runtime: dropping the backend drops the runtime and ends them.
        self.rt.spawn(async move {
            if let Some(update) = task.await {
                sender.send(update).await;
            }
        });
    }

    /// Runs a node call; an error becomes a status line.
    fn call<T, F, Fut>(
        &self,
        what: &'static str,
        call: F,
        done: impl FnOnce(T) -> Option<Update> + Send + 'static,
    ) where
        T: Send + 'static,
        F: FnOnce(NodeHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, NodeError>> + Send + 'static,
    {
        let Some(handle) = self.node.clone() else {
            return;
        };
        self.spawn(async move {
            match call(handle).await {
                Ok(value) => done(value),
                Err(e) => Some(Update::Error(format!("{what}: {e}"))),
            }
        });
    }

    /// Creates or unlocks the identity (slow: RSA and Argon2 run on a blocking thread), then
    /// starts the node and forwards its events.
    pub(crate) fn open(&self, request: OpenRequest, setup: NodeSetup) {
        let sender = Sender {
            tx: self.tx.clone(),
            ctx: Arc::clone(&self.ctx),
        };
        self.rt.spawn(async move {
            let opened = match open_identity(request, setup).await {
                Ok(opened) => opened,
                Err(e) => {
                    sender.send(Update::OpenFailed(e)).await;
                    return;
                }
            };
            let (session, mut events) = opened;
            sender.send(Update::Ready(Box::new(session))).await;
            loop {
                let update = match events.recv().await {
                    Ok(event) => Update::Event(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => Update::Lagged,
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                sender.send(update).await;
            }
        });
    }

    pub(crate) fn refresh_contacts(&self) {
        self.call(
            "contacts",
            |h| async move { h.contacts().await },
            |c| Some(Update::Contacts(c)),
        );
    }

    pub(crate) fn load_history(&self, peer: PeerId) {
        self.call(
            "history",
            move |h| async move { h.history(peer, Some(HISTORY_LIMIT)).await },
            move |m| Some(Update::History(peer, m)),
        );
    }

    pub(crate) fn refresh_network(&self) {
        self.call(
            "peers",
            |h| async move { h.peers().await },
            |p| Some(Update::Peers(p)),
        );
        self.call(
            "listen addresses",
            |h| async move { h.listen_addrs().await },
            |a| Some(Update::ListenAddrs(a)),
        );
    }

    pub(crate) fn send_text(&self, peer: PeerId, text: String) {
        self.call(
            "send",
            move |h| async move { h.send_text(peer, text).await },
            move |_id| Some(Update::Sent(peer)),
        );
    }

    /// Sends a file: the node reads and seals it first (a second or more for a large file).
    pub(crate) fn send_file(&self, peer: PeerId, path: PathBuf) {
        self.call(
            "send file",
            move |h| async move { h.send_file(peer, path, Vec::new()).await },
            |t| Some(Update::FileSent(t)),
        );
    }

    /// Starts (or restarts) downloading an offered file into the downloads directory.
    pub(crate) fn fetch_file(&self, file_id: FileId) {
        self.call(
            "download",
            move |h| async move { h.fetch_file(file_id, None).await },
            |t| Some(Update::Fetching(t)),
        );
    }

    pub(crate) fn load_files(&self) {
        self.call(
            "files",
            |h| async move { h.files().await },
            |f| Some(Update::Files(f)),
        );
    }

    pub(crate) fn set_cipher(&self, peer: PeerId, cipher: Cipher) {
        self.call(
            "cipher switch",
            move |h| async move { h.set_cipher(peer, cipher).await },
            |()| None,
        );
    }

    pub(crate) fn delete_chat(&self, peer: PeerId, for_both: bool) {
        self.call(
            "delete chat",
            move |h| async move { h.delete_chat(peer, for_both).await },
            move |n| {
                let whom = if for_both {
                    " (the peer is asked to delete it too)"
                } else {
                    ""
                };
                Some(Update::Info(format!("deleted {n} messages{whom}")))
            },
        );
    }

    /// Searches contacts and known peers by name; with `dht` (an Enter), the DHT name
    /// directory too: its verified profiles not known locally are added, found "via DHT".
    pub(crate) fn search(&self, query: String, dht: bool) {
        self.call(
            "search",
            {
                let query = query.clone();
                move |h| async move {
                    let mut found = h.search_local(&query).await?;
                    if dht {
                        for entry in h.search_dht(&query).await? {
                            if !found.iter().any(|p| p.peer_id == entry.peer_id) {
                                found.push(PeerInfo {
                                    peer_id: entry.peer_id,
                                    name: Some(entry.name),
                                    addrs: Vec::new(),
                                    connected: false,
                                    via: Via::Kad,
                                });
                            }
                        }
                    }
                    Ok(found)
                }
            },
            move |found| Some(Update::SearchResults { query, found, dht }),
        );
    }

    /// Adds a contact by address (`…/p2p/PEER_ID`): dials it and pins its signed profile.
    pub(crate) fn add_peer(&self, addr: Multiaddr) {
        self.call(
            "add contact",
            move |h| async move { h.add_peer(addr).await },
            |c| Some(Update::Added(c)),
        );
    }

    /// Adds a known peer as a contact, dialling the addresses the node knows for it.
    pub(crate) fn add_peer_id(&self, peer: PeerId) {
        self.call(
            "add contact",
            move |h| async move { h.add_peer_id(peer).await },
            |c| Some(Update::Added(c)),
        );
    }

    /// Marks a contact verified; for a contact whose keys changed, accepts the new keys.
    pub(crate) fn verify_contact(&self, peer: PeerId) {
        self.call(
            "verify",
            move |h| async move { h.verify_contact(peer).await },
            |c| Some(Update::Verified(c)),
        );
    }

    /// Marks a contact as a relay for our files (or clears the mark).
    pub(crate) fn set_relay(&self, peer: PeerId, relay: bool) {
        self.call(
            "relay mark",
            move |h| async move { h.set_relay(peer, relay).await },
            |c| Some(Update::RelaySet(c)),
        );
    }

    /// A desktop notification; a failure only turns notifications off for the session.
    pub(crate) fn notify(&self, summary: String, body: String) {
        self.spawn(async move {
            let shown = tokio::time::timeout(NOTIFY_WAIT, async move {
                notify_rust::Notification::new()
                    .appname("Encrypto")
                    .summary(&summary)
                    .body(&body)
                    .show_async()
                    .await
            })
            .await;
            match shown {
                Ok(Ok(_)) => None,
                _ => Some(Update::NotificationsUnavailable),
            }
        });
    }

    /// Stops the node (flushing its store), waiting a few seconds at most.
    pub(crate) fn shutdown(&mut self) {
        if let Some(handle) = self.node.take() {
            self.rt.block_on(async move {
                let _ = tokio::time::timeout(SHUTDOWN_WAIT, handle.shutdown()).await;
            });
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The sending side of the update channel, as tasks hold it.
struct Sender {
    tx: mpsc::Sender<Update>,
    ctx: Arc<OnceLock<egui::Context>>,
}

impl Sender {
    async fn send(&self, update: Update) {
        // The window is gone when the receiver is: nothing to tell.
        if self.tx.send(update).await.is_ok()
            && let Some(ctx) = self.ctx.get()
        {
            ctx.request_repaint();
        }
    }
}

async fn open_identity(
    request: OpenRequest,
    setup: NodeSetup,
) -> Result<(Session, broadcast::Receiver<NodeEvent>), OpenError> {
    // The same `config.json` the daemon takes (bootstrap peers, relay and download limits),
    // read before the slow key work so a broken file is reported at once.
    let file = ConfigFile::load(&setup.data_dir).map_err(|e| OpenError::Other(one_line(&e)))?;
    let dir = setup.data_dir.clone();
    let (kdf, bits) = (setup.kdf, setup.rsa_bits);
    let contents = tokio::task::spawn_blocking(move || {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        match request {
            OpenRequest::Create { name, passphrase } => DataDir::open(&dir)?.create_identity(
                &name,
                passphrase.as_bytes(),
                bits,
                kdf,
                now,
                &mut rand::rng(),
            ),
            OpenRequest::Unlock { passphrase } => {
                DataDir::open_existing(&dir)?.unlock(passphrase.as_bytes())
            }
        }
    })
    .await
    .map_err(|e| OpenError::Other(format!("the key task failed: {e}")))?
    .map_err(|e| match e {
        DataDirError::WrongPassphrase { .. } => OpenError::WrongPassphrase,
        other => OpenError::Other(one_line(&other)),
    })?;
    let public = contents.identity.public().clone();
    let peer_id = contents.identity.peer_id();
    let name = contents.name.clone();
    let mut config = setup.node;
    config.data_dir = setup.data_dir;
    file.apply(&mut config);
    let encrypto_node::Started { handle, events, .. } = encrypto_node::start(
        contents.identity,
        &contents.name,
        contents.created_ms,
        contents.storage_key,
        config,
    )
    .map_err(|e| match e {
        NodeError::Store(StoreError::Locked { .. }) => OpenError::InUse(one_line(&e)),
        other => OpenError::Other(one_line(&other)),
    })?;
    Ok((
        Session {
            handle,
            name,
            peer_id,
            public,
        },
        events,
    ))
}

/// An error and its causes on one line.
pub(crate) fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.replace(['\n', '\r'], " ")
}
