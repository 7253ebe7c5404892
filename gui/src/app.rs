//! The window's state, and what each update from the node does to it.
//!
//! [`App`] is a plain struct: one of three screens (onboarding, "in use by another process",
//! the main view) plus the backend that runs the node. [`App::ui`] first applies the
//! updates waiting on the channel (never waiting for more), then draws.

use std::collections::{HashMap, HashSet};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use encrypto_crypto::keystore::KdfParams;
use encrypto_crypto::{Fingerprint, MessageId, PeerId, PublicIdentity, RsaBits};
use encrypto_node::store::{Contact, StoredMessage};
use encrypto_node::{Multiaddr, NodeConfig, NodeEvent, NodeHandle, PeerInfo};
use zeroize::Zeroizing;

use crate::backend::{Backend, NodeSetup, OpenError, Session, UPDATES_PER_FRAME, Update};

/// The control socket a daemon serves in its data directory.
const SOCKET_FILE: &str = "encrypto.sock";

/// How the window starts its node.
#[derive(Debug, Clone)]
pub struct Options {
    /// The data directory (the same default as the CLI's).
    pub data_dir: PathBuf,
    /// Argon2 parameters for a new identity ([`KdfParams::RECOMMENDED`]; tests use
    /// [`KdfParams::INSECURE_FAST`]).
    pub kdf: KdfParams,
    /// RSA key size for a new identity.
    pub rsa_bits: RsaBits,
    /// The node's configuration; its `data_dir` is replaced by [`Options::data_dir`].
    pub node: NodeConfig,
    /// Show desktop notifications for incoming messages while the window is not focused.
    pub notifications: bool,
}

impl Options {
    /// Defaults for the data directory `data_dir`: recommended Argon2, 3072-bit RSA, TCP and
    /// QUIC on every interface, mDNS on, notifications on.
    pub fn new(data_dir: PathBuf) -> Self {
        Options {
            node: NodeConfig::new(data_dir.clone()),
            data_dir,
            kdf: KdfParams::RECOMMENDED,
            rsa_bits: RsaBits::B3072,
            notifications: true,
        }
    }
}

/// The window: its state and the backend running the node.
pub struct App {
    setup: NodeSetup,
    notifications: bool,
    pub(crate) backend: Backend,
    pub(crate) screen: Screen,
    title: String,
}

pub(crate) enum Screen {
    Onboarding(Onboarding),
    /// Another process (a daemon) uses the data directory.
    InUse(String),
    Main(Box<Main>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnboardingMode {
    Create,
    Unlock,
}

pub(crate) struct Onboarding {
    pub(crate) mode: OnboardingMode,
    pub(crate) data_dir: PathBuf,
    pub(crate) name: String,
    pub(crate) passphrase: Zeroizing<String>,
    pub(crate) repeat: Zeroizing<String>,
    pub(crate) busy: bool,
    pub(crate) error: Option<String>,
    /// Focus the first field on the first frame.
    pub(crate) autofocus: bool,
}

/// A contact with what the window derives from it once.
pub(crate) struct ContactRow {
    pub(crate) contact: Contact,
    pub(crate) public: Option<PublicIdentity>,
    pub(crate) fingerprint: Option<Fingerprint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialog {
    Delete(PeerId),
    Verify(PeerId),
}

/// The main view's state.
pub(crate) struct Main {
    pub(crate) session: Session,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) contacts: Vec<ContactRow>,
    fingerprints: HashMap<[u8; 32], Fingerprint>,
    pub(crate) histories: HashMap<PeerId, Vec<StoredMessage>>,
    pub(crate) unread: HashMap<PeerId, usize>,
    pub(crate) selected: Option<PeerId>,
    pub(crate) drafts: HashMap<PeerId, String>,
    pub(crate) search: String,
    pub(crate) searched: String,
    pub(crate) search_results: Vec<PeerInfo>,
    pub(crate) add_addr: String,
    pub(crate) peers: Vec<PeerInfo>,
    pub(crate) listen_addrs: Vec<Multiaddr>,
    pub(crate) show_ciphertext: HashSet<MessageId>,
    pub(crate) dialog: Option<Dialog>,
    pub(crate) network_open: bool,
    /// The last status line, and whether it is an error.
    pub(crate) status: Option<(String, bool)>,
    pub(crate) notifications_unavailable: bool,
    pub(crate) focused: bool,
    /// Open this chat as soon as the peer becomes a contact (after "add").
    pub(crate) pending_open: Option<PeerId>,
    dirty_history: HashSet<PeerId>,
    dirty_contacts: bool,
    dirty_network: bool,
}

impl App {
    /// A window for `options.data_dir`: onboarding first (create or unlock), or a notice if a
    /// daemon already serves that data directory.
    ///
    /// # Errors
    /// The tokio runtime cannot be started.
    pub fn new(options: Options) -> std::io::Result<App> {
        let backend = Backend::new()?;
        let data_dir = options.data_dir.clone();
        let screen = if UnixStream::connect(data_dir.join(SOCKET_FILE)).is_ok() {
            Screen::InUse(format!(
                "An Encrypto daemon already runs on {}: one process per data directory. \
                 Use the CLI against it, or stop it and open the window again.",
                data_dir.display()
            ))
        } else {
            let has_identity = data_dir
                .join(encrypto_node::datadir::KEYSTORE_FILE)
                .exists();
            Screen::Onboarding(Onboarding {
                mode: if has_identity {
                    OnboardingMode::Unlock
                } else {
                    OnboardingMode::Create
                },
                data_dir: data_dir.clone(),
                name: String::new(),
                passphrase: Zeroizing::new(String::new()),
                repeat: Zeroizing::new(String::new()),
                busy: false,
                error: None,
                autofocus: true,
            })
        };
        Ok(App {
            setup: NodeSetup {
                data_dir,
                kdf: options.kdf,
                rsa_bits: options.rsa_bits,
                node: options.node,
            },
            notifications: options.notifications,
            backend,
            screen,
            title: String::new(),
        })
    }

    /// The running node, once the identity is open (for tests and the screenshot script).
    pub fn node(&self) -> Option<NodeHandle> {
        self.backend.node().cloned()
    }

    /// Unread incoming messages over all chats.
    pub fn unread_total(&self) -> usize {
        match &self.screen {
            Screen::Main(main) => main.unread.values().sum(),
            _ => 0,
        }
    }

    /// The window's title: "Encrypto", with the unread count when there is one.
    pub fn title(&self) -> String {
        match self.unread_total() {
            0 => "Encrypto".to_owned(),
            n => format!("Encrypto ({n})"),
        }
    }

    /// Applies waiting updates and draws the window into `ui`. Never blocks.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.backend.set_ctx(ui.ctx());
        let focused = ui.input(|i| i.viewport().focused).unwrap_or(true);
        self.pump(focused);
        let title = self.title();
        if title != self.title {
            ui.ctx()
                .send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
        match &mut self.screen {
            Screen::Onboarding(state) => {
                if let Some(request) = state.ui(ui) {
                    state.busy = true;
                    state.error = None;
                    self.backend.open(request, self.setup.clone());
                }
            }
            Screen::InUse(message) => crate::views::in_use(ui, message),
            Screen::Main(main) => main.ui(ui, &self.backend),
        }
    }

    /// Applies the updates waiting on the channel, then asks for what they made stale.
    fn pump(&mut self, focused: bool) {
        if let Screen::Main(main) = &mut self.screen {
            if focused && !main.focused {
                // Back in the window: the open chat is read now.
                if let Some(peer) = main.selected {
                    main.unread.remove(&peer);
                }
            }
            main.focused = focused;
        }
        for _ in 0..UPDATES_PER_FRAME {
            let Some(update) = self.backend.try_next() else {
                break;
            };
            self.apply(update);
        }
        if let Screen::Main(main) = &mut self.screen {
            main.request_stale(&self.backend);
        }
    }

    fn apply(&mut self, update: Update) {
        match update {
            Update::Ready(session) => {
                self.backend.set_node(session.handle.clone());
                self.screen = Screen::Main(Box::new(Main::new(*session)));
            }
            Update::OpenFailed(OpenError::InUse(message)) => {
                self.screen = Screen::InUse(format!(
                    "Another Encrypto process (a daemon or another window) uses this data \
                     directory: one process per data directory. ({message})"
                ));
            }
            Update::OpenFailed(error) => {
                if let Screen::Onboarding(state) = &mut self.screen {
                    state.busy = false;
                    state.autofocus = true;
                    state.error = Some(match error {
                        OpenError::WrongPassphrase => {
                            "Wrong passphrase: the keystore did not open.".to_owned()
                        }
                        OpenError::InUse(m) | OpenError::Other(m) => m,
                    });
                }
            }
            Update::NotificationsUnavailable => {
                if let Screen::Main(main) = &mut self.screen {
                    main.notifications_unavailable = true;
                }
            }
            other => {
                if let Screen::Main(main) = &mut self.screen
                    && let Some((summary, body)) = main.apply(other)
                    && self.notifications
                    && !main.notifications_unavailable
                {
                    self.backend.notify(summary, body);
                }
            }
        }
    }

    /// Opens the chat with `peer`, now if it is a contact, else as soon as it becomes one.
    pub fn open_chat(&mut self, peer: PeerId) {
        if let Screen::Main(main) = &mut self.screen {
            if main.contact(&peer).is_some() {
                main.open_chat(peer, &self.backend);
            } else {
                main.pending_open = Some(peer);
            }
        }
    }

    /// Stops the node, flushing its store (a few seconds at most).
    pub fn shutdown(&mut self) {
        self.backend.shutdown();
    }
}

impl eframe::App for App {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.backend.set_ctx(ctx);
        let focused = ctx.input(|i| i.viewport().focused).unwrap_or(true);
        self.pump(focused);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        App::ui(self, ui);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.shutdown();
    }
}

impl Main {
    fn new(session: Session) -> Self {
        let fingerprint = session.public.fingerprint();
        Main {
            session,
            fingerprint,
            contacts: Vec::new(),
            fingerprints: HashMap::new(),
            histories: HashMap::new(),
            unread: HashMap::new(),
            selected: None,
            drafts: HashMap::new(),
            search: String::new(),
            searched: String::new(),
            search_results: Vec::new(),
            add_addr: String::new(),
            peers: Vec::new(),
            listen_addrs: Vec::new(),
            show_ciphertext: HashSet::new(),
            dialog: None,
            network_open: false,
            status: None,
            notifications_unavailable: false,
            focused: true,
            pending_open: None,
            dirty_history: HashSet::new(),
            dirty_contacts: true,
            dirty_network: true,
        }
    }

    /// Applies one update; returns a notification to show, if any.
    fn apply(&mut self, update: Update) -> Option<(String, String)> {
        match update {
            Update::Event(event) => return self.on_event(event),
            Update::Lagged => {
                self.dirty_contacts = true;
                self.dirty_network = true;
                self.dirty_history.extend(self.histories.keys().copied());
            }
            Update::Contacts(contacts) => self.set_contacts(contacts),
            Update::History(peer, messages) => {
                self.histories.insert(peer, messages);
            }
            Update::Peers(peers) => self.peers = peers,
            Update::ListenAddrs(addrs) => self.listen_addrs = addrs,
            Update::SearchResults { query, found, dht } => {
                if query.trim() == self.search.trim() {
                    self.search_results = found;
                    if dht {
                        self.status = Some((
                            format!(
                                "{} found among contacts, nearby and in the DHT",
                                self.search_results.len()
                            ),
                            false,
                        ));
                    }
                }
            }
            Update::Sent(peer) => {
                self.dirty_history.insert(peer);
            }
            Update::Added(contact) => {
                self.status = Some((
                    format!(
                        "added {}: compare safety numbers (Verify…) before trusting it",
                        contact.name
                    ),
                    false,
                ));
                self.pending_open = Some(contact.peer_id);
                self.dirty_contacts = true;
            }
            Update::Verified(contact) => {
                self.status = Some((format!("{} is verified", contact.name), false));
                self.dirty_contacts = true;
            }
            Update::Error(message) => self.status = Some((message, true)),
            Update::Info(message) => self.status = Some((message, false)),
            Update::Ready(_) | Update::OpenFailed(_) | Update::NotificationsUnavailable => {}
        }
        None
    }

    fn on_event(&mut self, event: NodeEvent) -> Option<(String, String)> {
        match event {
            NodeEvent::MessageReceived { peer, .. } => {
                self.dirty_history.insert(peer);
                let reading = self.selected == Some(peer) && self.focused;
                if !reading {
                    *self.unread.entry(peer).or_default() += 1;
                }
                if !self.focused {
                    // The text stays out of the notification: other people can see the screen.
                    return Some((
                        "Encrypto".to_owned(),
                        format!("New message from {}", self.name_of(&peer)),
                    ));
                }
            }
            NodeEvent::Delivered { peer, .. } => {
                self.dirty_history.insert(peer);
            }
            NodeEvent::CipherChanged { peer, cipher, by } => {
                self.dirty_contacts = true;
                if by == encrypto_node::store::Direction::In {
                    self.status = Some((
                        format!(
                            "{} switched the chat to {}",
                            self.name_of(&peer),
                            crate::views::cipher_label(cipher)
                        ),
                        false,
                    ));
                }
            }
            NodeEvent::ChatDeleted { peer, by, .. } => {
                self.histories.remove(&peer);
                self.unread.remove(&peer);
                self.dirty_history.insert(peer);
                if by == encrypto_node::store::Direction::In {
                    self.status = Some((
                        format!("{} deleted your chat for both of you", self.name_of(&peer)),
                        false,
                    ));
                }
            }
            NodeEvent::ProfileVerified { .. } => {
                self.dirty_contacts = true;
                self.dirty_network = true;
            }
            NodeEvent::KeyChanged { peer } => {
                self.dirty_contacts = true;
                self.status = Some((
                    format!(
                        "The keys of {} changed: verify the contact again",
                        self.name_of(&peer)
                    ),
                    true,
                ));
            }
            NodeEvent::Listening { .. }
            | NodeEvent::PeerDiscovered { .. }
            | NodeEvent::PeerConnected { .. }
            | NodeEvent::PeerDisconnected { .. } => self.dirty_network = true,
            _ => {}
        }
        None
    }

    fn set_contacts(&mut self, contacts: Vec<Contact>) {
        let mut rows = Vec::with_capacity(contacts.len());
        for contact in contacts {
            let public = PublicIdentity::from_bytes(&contact.ed25519, &contact.rsa_der).ok();
            let fingerprint = public.as_ref().map(|p| {
                *self
                    .fingerprints
                    .entry(contact.ed25519)
                    .or_insert_with(|| p.fingerprint())
            });
            rows.push(ContactRow {
                contact,
                public,
                fingerprint,
            });
        }
        rows.sort_by_key(|r| r.contact.name.to_lowercase());
        if let Some(peer) = self.pending_open
            && rows.iter().any(|r| r.contact.peer_id == peer)
        {
            self.pending_open = None;
            self.selected = Some(peer);
            self.dirty_history.insert(peer);
        }
        self.contacts = rows;
    }

    /// Asks the node for whatever updates made stale.
    fn request_stale(&mut self, backend: &Backend) {
        if std::mem::take(&mut self.dirty_contacts) {
            backend.refresh_contacts();
        }
        if std::mem::take(&mut self.dirty_network) {
            backend.refresh_network();
        }
        for peer in std::mem::take(&mut self.dirty_history) {
            // Only chats the window shows or has shown are kept up to date.
            if self.selected == Some(peer) || self.histories.contains_key(&peer) {
                backend.load_history(peer);
            }
        }
    }

    pub(crate) fn contact(&self, peer: &PeerId) -> Option<&ContactRow> {
        self.contacts.iter().find(|r| &r.contact.peer_id == peer)
    }

    pub(crate) fn name_of(&self, peer: &PeerId) -> String {
        self.contact(peer)
            .map(|r| r.contact.name.clone())
            .or_else(|| {
                self.peers
                    .iter()
                    .find(|p| &p.peer_id == peer)
                    .and_then(|p| p.name.clone())
            })
            .unwrap_or_else(|| crate::format::short_peer(peer))
    }

    /// Opens a chat: selects it, marks it read, loads its history.
    pub(crate) fn open_chat(&mut self, peer: PeerId, backend: &Backend) {
        self.selected = Some(peer);
        self.unread.remove(&peer);
        backend.load_history(peer);
    }
}
