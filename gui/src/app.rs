//! The window's state, and what each update from the node does to it.
//!
//! [`App`] is a plain struct: one of three screens (onboarding, "in use by another process",
//! the main view) plus the backend that runs the node. [`App::ui`] first applies the
//! updates waiting on the channel (never waiting for more), then draws.
//!
//! File transfers are kept per transfer (file, our role, the other side), as the node keys
//! them: loaded whole from `files()` when a chat opens or a transfer appears, then moved on by
//! the progress, completion and failure events.

use std::collections::{HashMap, HashSet};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use encrypto_crypto::file::FileId;
use encrypto_crypto::keystore::KdfParams;
use encrypto_crypto::{Fingerprint, MessageId, PeerId, PublicIdentity, RsaBits};
use encrypto_node::FileTransfer;
use encrypto_node::view::{Body, Contact, Message, TransferRole, TransferState};
use encrypto_node::{Multiaddr, NodeConfig, NodeEvent, NodeHandle, PeerInfo};
use zeroize::Zeroizing;

use crate::backend::{Backend, NodeSetup, OpenError, Session, UPDATES_PER_FRAME, Update};

/// The control socket a daemon serves in its data directory.
const SOCKET_FILE: &str = "encrypto.sock";
/// A download that finishes within this long of its offer is announced by the offer's
/// notification alone, so a small file does not notify twice.
const QUIET_DOWNLOAD: Duration = Duration::from_secs(5);
/// Weight of the newest measurement in a transfer's smoothed rate.
const RATE_WEIGHT: f64 = 0.3;

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

/// A transfer as the node keys it: the file, our part in it, the other side.
pub(crate) type TransferKey = (FileId, TransferRole, PeerId);

/// A transfer as the window shows it: the node's record, moved on by events, and the rate
/// measured from its progress events.
pub(crate) struct TransferView {
    pub(crate) transfer: FileTransfer,
    /// Bytes per second, smoothed; `None` until two progress events have been seen.
    pub(crate) rate: Option<f64>,
    /// The last progress event: when, and the bytes done then.
    last: Option<(Instant, u64)>,
}

impl TransferView {
    fn new(transfer: FileTransfer) -> Self {
        TransferView {
            transfer,
            rate: None,
            last: None,
        }
    }

    fn progress(&mut self, bytes_done: u64, now: Instant) {
        let t = &mut self.transfer;
        // A progress event forwarded late must not undo a completion or a failure already
        // read from the node.
        if matches!(t.state, TransferState::Complete | TransferState::Failed) {
            return;
        }
        t.state = TransferState::Transferring;
        t.bytes_done = t.bytes_done.max(bytes_done);
        if let Some((at, before)) = self.last {
            let secs = now.duration_since(at).as_secs_f64();
            if secs > 0.0 && bytes_done >= before {
                let rate = (bytes_done - before) as f64 / secs;
                self.rate = Some(
                    self.rate
                        .map_or(rate, |r| r * (1.0 - RATE_WEIGHT) + rate * RATE_WEIGHT),
                );
            }
        }
        self.last = Some((now, bytes_done));
    }
}

/// One line of the file picker's listing.
pub(crate) struct PickerEntry {
    /// The name as shown (lossy for names that are not UTF-8).
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) dir: bool,
    pub(crate) size: u64,
}

/// The in-window file picker: a folder listing to click through and a path field.
pub(crate) struct FilePicker {
    /// The chat the file goes to.
    pub(crate) peer: PeerId,
    /// The folder listed.
    pub(crate) dir: PathBuf,
    pub(crate) entries: Vec<PickerEntry>,
    /// The listing was cut at this many entries.
    pub(crate) truncated: bool,
    /// The path field: a file to send, or a folder to open.
    pub(crate) path: String,
    pub(crate) show_hidden: bool,
    pub(crate) error: Option<String>,
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
    pub(crate) histories: HashMap<PeerId, Vec<Message>>,
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
    pub(crate) transfers: HashMap<TransferKey, TransferView>,
    pub(crate) picker: Option<FilePicker>,
    /// The folder the picker showed last, to open it there again.
    pub(crate) picker_dir: Option<PathBuf>,
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
    dirty_files: bool,
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
            transfers: HashMap::new(),
            picker: None,
            picker_dir: None,
            dialog: None,
            network_open: false,
            status: None,
            notifications_unavailable: false,
            focused: true,
            pending_open: None,
            dirty_history: HashSet::new(),
            dirty_contacts: true,
            dirty_network: true,
            dirty_files: false,
        }
    }

    /// Applies one update; returns a notification to show, if any.
    fn apply(&mut self, update: Update) -> Option<(String, String)> {
        match update {
            Update::Event(event) => return self.on_event(event),
            Update::Lagged => {
                self.dirty_contacts = true;
                self.dirty_network = true;
                self.dirty_files = true;
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
            Update::Files(list) => self.set_files(list),
            Update::FileSent(transfer) => {
                self.dirty_history.insert(transfer.peer);
                self.status = Some((
                    format!(
                        "offered {} to {}",
                        transfer.name,
                        self.name_of(&transfer.peer)
                    ),
                    false,
                ));
                self.put_transfer(transfer);
            }
            Update::Fetching(transfer) => self.put_transfer(transfer),
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
                self.put_contact(contact);
            }
            Update::RelaySet(contact) => {
                let status = if contact.relay {
                    format!(
                        "{} now holds your files, sealed, for contacts who are offline",
                        contact.name
                    )
                } else {
                    format!("{} is no longer a relay for your files", contact.name)
                };
                self.status = Some((status, false));
                self.put_contact(contact);
            }
            Update::Error(message) => self.status = Some((message, true)),
            Update::Info(message) => self.status = Some((message, false)),
            Update::Ready(_) | Update::OpenFailed(_) | Update::NotificationsUnavailable => {}
        }
        None
    }

    fn on_event(&mut self, event: NodeEvent) -> Option<(String, String)> {
        match event {
            NodeEvent::MessageReceived { peer, body, .. } => {
                self.dirty_history.insert(peer);
                let reading = self.selected == Some(peer) && self.focused;
                if !reading {
                    *self.unread.entry(peer).or_default() += 1;
                }
                if !self.focused {
                    // The text (and a file's name) stays out of the notification: other
                    // people can see the screen.
                    let what = match body {
                        Body::File { .. } => "New file from",
                        _ => "New message from",
                    };
                    return Some((
                        "Encrypto".to_owned(),
                        format!("{what} {}", self.name_of(&peer)),
                    ));
                }
            }
            NodeEvent::FileOffered { .. } => self.dirty_files = true,
            NodeEvent::FileProgress {
                peer,
                file_id,
                role,
                bytes_done,
                ..
            } => match self.transfers.get_mut(&(file_id, role, peer)) {
                Some(view) => view.progress(bytes_done, Instant::now()),
                None => self.dirty_files |= role != TransferRole::Relay,
            },
            NodeEvent::FileComplete {
                peer,
                file_id,
                role,
                path,
                sha256,
            } => {
                let Some(view) = self.transfers.get_mut(&(file_id, role, peer)) else {
                    self.dirty_files |= role != TransferRole::Relay;
                    return None;
                };
                let t = &mut view.transfer;
                t.state = TransferState::Complete;
                t.bytes_done = t.size;
                t.error = None;
                if path.is_some() {
                    t.path = path;
                }
                t.sha256 = sha256.or(t.sha256);
                let took_a_while = now_ms().saturating_sub(t.created_ms)
                    > u64::try_from(QUIET_DOWNLOAD.as_millis()).unwrap_or(u64::MAX);
                if role == TransferRole::Receive && !self.focused && took_a_while {
                    return Some((
                        "Encrypto".to_owned(),
                        format!("A file from {} is downloaded", self.name_of(&peer)),
                    ));
                }
            }
            NodeEvent::FileFailed {
                peer,
                file_id,
                role,
                reason,
            } => {
                if role == TransferRole::Relay {
                    return None;
                }
                let name = match self.transfers.get_mut(&(file_id, role, peer)) {
                    Some(view) => {
                        view.transfer.state = TransferState::Failed;
                        view.transfer.error = Some(reason.clone());
                        view.transfer.name.clone()
                    }
                    None => {
                        self.dirty_files = true;
                        "a file".to_owned()
                    }
                };
                let (way, whom) = match role {
                    TransferRole::Send => ("to", self.name_of(&peer)),
                    _ => ("from", self.name_of(&peer)),
                };
                self.status = Some((format!("{name} {way} {whom} failed: {reason}"), true));
            }
            NodeEvent::Delivered { peer, .. } => {
                self.dirty_history.insert(peer);
            }
            NodeEvent::CipherChanged { peer, cipher, by } => {
                self.dirty_contacts = true;
                if by == encrypto_node::view::Direction::In {
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
                if by == encrypto_node::view::Direction::In {
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
            NodeEvent::PeerIncompatible { peer } => {
                self.status = Some((
                    format!(
                        "{} runs another version of encrypto: your messages to them stay \
                         queued until one of you updates",
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
            let public = contact.public.clone();
            let fingerprint = public.as_ref().map(|p| {
                *self
                    .fingerprints
                    .entry(p.ed25519_bytes())
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
            self.dirty_files = true;
        }
        self.contacts = rows;
    }

    /// A contact the node just changed: shown as it is now at once, so that a toggle clicked
    /// again before the list is reloaded starts from the new state; the whole list is reloaded
    /// as well.
    fn put_contact(&mut self, contact: Contact) {
        if let Some(row) = self
            .contacts
            .iter_mut()
            .find(|r| r.contact.peer_id == contact.peer_id)
            && row.contact.public == contact.public
        {
            row.contact = contact;
        }
        self.dirty_contacts = true;
    }

    /// Replaces the transfers with the node's list, keeping the measured rates (and bytes
    /// already seen, should the list be older than the last progress event).
    fn set_files(&mut self, list: Vec<FileTransfer>) {
        let mut old = std::mem::take(&mut self.transfers);
        for transfer in list {
            if transfer.role == TransferRole::Relay {
                continue;
            }
            let key = (transfer.file_id, transfer.role, transfer.peer);
            let view = match old.remove(&key) {
                Some(mut view) => {
                    let seen = view.transfer.bytes_done;
                    let same_state = view.transfer.state == transfer.state;
                    view.transfer = transfer;
                    if same_state {
                        view.transfer.bytes_done = view.transfer.bytes_done.max(seen);
                    }
                    view
                }
                None => TransferView::new(transfer),
            };
            self.transfers.insert(key, view);
        }
    }

    /// Adds or replaces one transfer (one the user just started).
    fn put_transfer(&mut self, transfer: FileTransfer) {
        let key = (transfer.file_id, transfer.role, transfer.peer);
        match self.transfers.get_mut(&key) {
            Some(view) => view.transfer = transfer,
            None => {
                self.transfers.insert(key, TransferView::new(transfer));
            }
        }
    }

    /// Asks the node for whatever updates made stale.
    fn request_stale(&mut self, backend: &Backend) {
        if std::mem::take(&mut self.dirty_files) {
            backend.load_files();
        }
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
        backend.load_files();
    }

    /// The chat a file can be sent to now: the open one, with a contact whose keys are
    /// accepted.
    pub(crate) fn file_target(&self) -> Result<PeerId, String> {
        let peer = self
            .selected
            .ok_or_else(|| "open a chat to send a file in it".to_owned())?;
        match self.contact(&peer) {
            None => Err("this peer is not a contact yet".to_owned()),
            Some(row) if row.contact.key_changed => Err(format!(
                "{}'s keys changed: verify the contact before sending files",
                row.contact.name
            )),
            Some(_) => Ok(peer),
        }
    }

    /// Sends files (from the picker, or dropped on the window) to the open chat. Folders are
    /// refused here; the node reports anything else it cannot read.
    pub(crate) fn send_files(&mut self, paths: Vec<PathBuf>, backend: &Backend) {
        let peer = match self.file_target() {
            Ok(peer) => peer,
            Err(why) => {
                self.status = Some((format!("cannot send a file: {why}"), true));
                return;
            }
        };
        for path in paths {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string());
            if path.is_dir() {
                self.status = Some((format!("{name} is a folder: only files can be sent"), true));
                continue;
            }
            self.status = Some((format!("sealing {name}…"), false));
            backend.send_file(peer, path);
        }
    }
}

/// Now, Unix milliseconds (0 if the clock is before 1970).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
