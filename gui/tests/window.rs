//! The window, driven headless by egui_kittest against real nodes on loopback: the window's
//! own in-process node and a peer node started here. Widgets are found by label and role.

// `allow-unwrap-in-tests` covers `#[test]` functions only, not the helpers they share.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::Key;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use encrypto_crypto::keystore::KdfParams;
use encrypto_crypto::{Cipher, PeerId, RsaBits};
use encrypto_gui::{App, Options};
use encrypto_node::FileTransfer;
use encrypto_node::test_support::{Running, loopback_config, start_node};
use encrypto_node::view::{Body, Direction, TransferRole, TransferState};
use encrypto_node::{DataDir, NodeConfig};
use tempfile::TempDir;

/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(40);

/// The harness's loopback config, with retries fast enough for a test.
fn loopback(dir: &Path) -> NodeConfig {
    let mut config = loopback_config(dir);
    config.retry_initial = Duration::from_millis(100);
    config.retry_max = Duration::from_secs(1);
    config
}

/// A node run by the test itself, on its own runtime.
struct Peer {
    rt: tokio::runtime::Runtime,
    node: Running,
    _dir: TempDir,
}

impl Peer {
    fn start(name: &str) -> Peer {
        let dir = TempDir::new().unwrap();
        let data = DataDir::open(dir.path().join("data")).unwrap();
        let contents = data
            .create_identity(
                name,
                b"peer passphrase",
                RsaBits::B2048,
                KdfParams::INSECURE_FAST,
                1_700_000_000_000,
                &mut rand::rng(),
            )
            .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let node = {
            let _guard = rt.enter();
            start_node(
                contents.identity,
                &contents.name,
                contents.created_ms,
                contents.storage_key,
                loopback(data.path()),
            )
            .unwrap()
        };
        Peer {
            rt,
            node,
            _dir: dir,
        }
    }

    fn texts_with(&self, peer: PeerId) -> Vec<(Direction, String)> {
        self.rt
            .block_on(self.node.handle.history(peer, None))
            .unwrap()
            .into_iter()
            .filter_map(|m| match m.body {
                Body::Text(t) => Some((m.direction, t)),
                _ => None,
            })
            .collect()
    }

    /// The file named `name` this node receives (or received).
    fn download_named(&self, name: &str) -> Option<FileTransfer> {
        self.rt
            .block_on(self.node.handle.files())
            .unwrap()
            .into_iter()
            .find(|t| t.role == TransferRole::Receive && t.name == name)
    }

    fn cipher_of(&self, peer: PeerId) -> Option<Cipher> {
        self.rt
            .block_on(self.node.handle.contacts())
            .unwrap()
            .into_iter()
            .find(|c| c.peer_id == peer)
            .map(|c| c.cipher)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let handle = self.node.handle.clone();
        self.rt.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), handle.shutdown()).await;
        });
    }
}

fn options(dir: &Path) -> Options {
    let mut options = Options::new(dir.to_owned());
    options.kdf = KdfParams::INSECURE_FAST;
    options.rsa_bits = RsaBits::B2048;
    options.node = loopback(dir);
    options.notifications = false;
    options
}

fn harness(app: App) -> Harness<'static, App> {
    Harness::builder()
        .with_size([1000.0, 700.0])
        .build_ui_state(|ui, app: &mut App| app.ui(ui), app)
}

/// Steps the window until `done` holds, with a bounded number of steps and time.
fn wait_until(
    h: &mut Harness<'static, App>,
    what: &str,
    mut done: impl FnMut(&mut Harness<'static, App>) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    for _ in 0..10_000 {
        h.step();
        if done(h) {
            return;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

fn type_into(h: &mut Harness<'static, App>, label: &str, text: &str) {
    let field = h.get_by_label(label);
    field.focus();
    field.type_text(text);
    h.step();
    h.step();
}

fn has_label(h: &Harness<'static, App>, label: &str) -> bool {
    h.query_by_label(label).is_some()
}

/// Creates an identity through the onboarding screen and waits for the main view.
fn onboard(h: &mut Harness<'static, App>, name: &str, passphrase: &str) {
    h.step();
    type_into(h, "Name", name);
    type_into(h, "Passphrase", passphrase);
    type_into(h, "Repeat passphrase", passphrase);
    h.get_by_label("Create identity").click();
    wait_until(h, "the main view", |h| has_label(h, "Network"));
}

/// A window with a fresh identity "Alice", and a peer "Bob" connected to it (both sides have
/// pinned each other's profile).
struct Pair {
    h: Harness<'static, App>,
    bob: Peer,
    alice: PeerId,
    /// The window's data directory.
    alice_dir: PathBuf,
    _dir: TempDir,
}

fn pair() -> Pair {
    pair_with(|_| {})
}

/// [`pair`], with the window's options changed by `change` first.
fn pair_with(change: impl FnOnce(&mut Options)) -> Pair {
    let dir = TempDir::new().unwrap();
    let alice_dir = dir.path().join("alice");
    let mut window_options = options(&alice_dir);
    change(&mut window_options);
    let mut h = harness(App::new(window_options).unwrap());
    onboard(&mut h, "Alice", "alice passphrase");
    let node = h.state().node().expect("the node runs after onboarding");
    let bob = Peer::start("Bob");
    // The window's node listens once it has started.
    let addrs = bob.rt.block_on(node.listen_addrs()).unwrap();
    assert!(!addrs.is_empty(), "the window's node does not listen");
    // Each adds the other (a peer that only connects is pinned but not listed).
    let p2p = encrypto_node::addr_with_peer;
    bob.rt.block_on(node.add_peer(bob.node.dialable())).unwrap();
    bob.rt
        .block_on(bob.node.handle.add_peer(p2p(&addrs[0], node.peer_id())))
        .unwrap();
    wait_until(&mut h, "Bob as a contact", |h| has_label(h, "Bob"));
    // `add_peer` returned: Bob has pinned Alice and lists her.
    let alice = node.peer_id();
    Pair {
        h,
        bob,
        alice,
        alice_dir,
        _dir: dir,
    }
}

/// `len` bytes that differ from any other seed's (xorshift), so a mixed-up file cannot pass.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A file dropped on the window, as eframe's native integration hands it over.
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

/// Opens the chat with Bob and waits for it.
fn open_bob(h: &mut Harness<'static, App>) {
    h.get_by_label("Bob").click();
    wait_until(h, "the chat with Bob", |h| has_label(h, "Delete chat…"));
}

/// Waits until Bob holds the whole file `name`, and returns where he saved it.
fn wait_for_bob_to_hold(h: &mut Harness<'static, App>, bob: &Peer, name: &str) -> PathBuf {
    let mut saved = None;
    wait_until(h, &format!("{name} complete at Bob"), |_| {
        saved = bob
            .download_named(name)
            .filter(|t| t.state == TransferState::Complete)
            .and_then(|t| t.path);
        saved.is_some()
    });
    saved.unwrap()
}

#[test]
fn onboarding_creates_an_identity_and_a_wrong_passphrase_says_so() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    {
        let mut h = harness(App::new(options(&data)).unwrap());
        h.step();
        assert!(has_label(&h, "Create your identity"));
        onboard(&mut h, "Alice", "correct horse battery");
        assert!(has_label(&h, "Alice"));
        assert!(data.join("keystore").exists());
    }
    // Closed and opened again: the identity is there, so the window asks to unlock it.
    let mut h = harness(App::new(options(&data)).unwrap());
    h.step();
    assert!(has_label(&h, "Unlock your identity"));
    type_into(&mut h, "Passphrase", "not the passphrase");
    h.get_by_label("Unlock").click();
    wait_until(&mut h, "the wrong-passphrase message", |h| {
        has_label(h, "Wrong passphrase: the keystore did not open.")
    });
    assert!(h.state().node().is_none());
    type_into(&mut h, "Passphrase", "correct horse battery");
    h.key_press(Key::Enter);
    wait_until(&mut h, "the main view after unlocking", |h| {
        has_label(h, "Network")
    });
    assert!(has_label(&h, "Alice"));
}

#[test]
fn a_running_daemon_is_reported_with_an_offer_to_quit() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let _daemon = std::os::unix::net::UnixListener::bind(data.join("encrypto.sock")).unwrap();
    let mut h = harness(App::new(options(&data)).unwrap());
    h.step();
    assert!(has_label(&h, "Already running"));
    assert!(has_label(&h, "Quit"));
    assert!(!has_label(&h, "Create your identity"));
}

#[test]
fn a_message_typed_and_entered_reaches_the_peer() {
    let Pair {
        mut h, bob, alice, ..
    } = pair();
    h.get_by_label("Bob").click();
    wait_until(&mut h, "the chat with Bob", |h| {
        has_label(h, "Delete chat…")
    });
    // Every input of the main view has an accessible name.
    h.check_accessibility();
    type_into(&mut h, "Message", "hello Bob");
    // Shift+Enter adds a line; Enter sends.
    h.key_press_modifiers(egui::Modifiers::SHIFT, Key::Enter);
    h.step();
    h.get_by_label("Message").type_text("second line");
    h.step();
    assert_eq!(
        h.get_by_label("Message").value().as_deref(),
        Some("hello Bob\nsecond line")
    );
    h.key_press(Key::Enter);
    wait_until(&mut h, "the message in Bob's history", |_| {
        bob.texts_with(alice) == [(Direction::In, "hello Bob\nsecond line".to_owned())]
    });
    wait_until(&mut h, "the delivered ticks", |h| has_label(h, "✔✔"));
    assert_eq!(h.get_by_label("Message").value().as_deref(), Some(""));
}

#[test]
fn an_incoming_message_shows_with_an_unread_badge() {
    let Pair {
        mut h, bob, alice, ..
    } = pair();
    bob.rt
        .block_on(bob.node.handle.send_text(alice, "hi Alice".into()))
        .unwrap();
    wait_until(&mut h, "the unread badge", |h| has_label(h, "1 unread"));
    assert_eq!(h.state().title(), "Encrypto (1)");
    h.get_by_label("Bob").click();
    wait_until(&mut h, "the message in the chat", |h| {
        has_label(h, "hi Alice")
    });
    assert!(!has_label(&h, "1 unread"));
    assert_eq!(h.state().title(), "Encrypto");
}

#[test]
fn the_cipher_switch_reaches_the_peer() {
    let Pair {
        mut h, bob, alice, ..
    } = pair();
    assert_eq!(bob.cipher_of(alice), Some(Cipher::Aes));
    h.get_by_label("Bob").click();
    wait_until(&mut h, "the chat with Bob", |h| has_label(h, "RSA"));
    h.get_by_label("RSA").click();
    wait_until(&mut h, "Bob's side switched to RSA", |_| {
        bob.cipher_of(alice) == Some(Cipher::Rsa)
    });
    // A message sent now carries the RSA badge.
    type_into(&mut h, "Message", "sealed with RSA");
    h.key_press(Key::Enter);
    wait_until(&mut h, "the message at Bob", |_| {
        !bob.texts_with(alice).is_empty()
    });
    wait_until(&mut h, "the RSA badge on the message", |h| {
        h.query_all_by_label("RSA").count() >= 2
    });
}

#[test]
fn delete_for_both_empties_both_histories() {
    let Pair {
        mut h, bob, alice, ..
    } = pair();
    bob.rt
        .block_on(bob.node.handle.send_text(alice, "delete me".into()))
        .unwrap();
    h.get_by_label("Bob").click();
    wait_until(&mut h, "the message", |h| has_label(h, "delete me"));
    h.get_by_label("Delete chat…").click();
    wait_until(&mut h, "the confirmation", |h| {
        has_label(h, "Delete for both")
    });
    h.get_by_label("Delete for both").click();
    wait_until(&mut h, "the chat emptied here", |h| {
        !has_label(h, "delete me") && has_label(h, "No messages yet.")
    });
    wait_until(&mut h, "the chat emptied at Bob", |_| {
        bob.texts_with(alice).is_empty()
    });
}

#[test]
fn search_finds_the_peer_and_one_click_opens_the_chat() {
    let Pair { mut h, .. } = pair();
    type_into(&mut h, "Search", "zed");
    wait_until(&mut h, "no results", |h| {
        has_label(h, "Nobody by that name here yet.")
    });
    h.get_by_label("Search").focus();
    for _ in 0..3 {
        h.key_press(Key::Backspace);
        h.step();
    }
    assert_eq!(h.get_by_label("Search").value().as_deref(), Some(""));
    type_into(&mut h, "Search", "bo");
    wait_until(&mut h, "Bob among the results", |h| {
        h.query_by_label_contains("Bob  ·").is_some()
    });
    let result = h.get_by_label_contains("Bob  ·");
    assert!(
        result
            .accesskit_node()
            .label()
            .unwrap_or_default()
            .ends_with("contact")
    );
    result.click();
    wait_until(&mut h, "the chat with Bob", |h| {
        has_label(h, "Delete chat…")
    });
}

#[test]
fn show_ciphertext_shows_the_bytes_the_peer_received() {
    let Pair {
        mut h, bob, alice, ..
    } = pair();
    h.get_by_label("Bob").click();
    wait_until(&mut h, "the chat with Bob", |h| {
        has_label(h, "Delete chat…")
    });
    type_into(&mut h, "Message", "what does this look like sealed?");
    h.key_press(Key::Enter);
    wait_until(&mut h, "delivery", |h| has_label(h, "✔✔"));
    let received = bob
        .rt
        .block_on(bob.node.handle.history(alice, None))
        .unwrap()
        .pop()
        .and_then(|m| m.envelope)
        .expect("Bob keeps the envelope he received");
    h.get_by_label("ciphertext").click();
    let start: String = received[..4].iter().map(|b| format!("{b:02x}")).collect();
    wait_until(&mut h, "the ciphertext", |h| {
        h.query_by_label_contains(&start).is_some()
    });
    let node = h.get_by_label_contains(&start);
    // A label's text is its accessible value or its name, depending on the widget.
    let shown = node
        .value()
        .filter(|v| !v.is_empty())
        .or_else(|| node.accesskit_node().label())
        .unwrap_or_default();
    let hex: String = received
        .iter()
        .take(64)
        .map(|b| format!("{b:02x}"))
        .collect();
    let shown_hex: String = shown
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(128)
        .collect();
    assert_eq!(shown_hex, hex, "the window shows the bytes Bob received");
}

#[test]
fn verify_shows_the_safety_number_and_marks_the_contact_verified() {
    let Pair {
        mut h, bob, alice, ..
    } = pair();
    h.get_by_label("Bob").click();
    wait_until(&mut h, "the chat with Bob", |h| {
        has_label(h, "not verified")
    });
    h.get_by_label("Verify…").click();
    wait_until(&mut h, "the verify dialog", |h| {
        has_label(h, "Mark as verified")
    });
    // The safety number shown is the one Bob computes for the same pair of keys.
    let bob_public = bob
        .rt
        .block_on(bob.node.handle.contacts())
        .unwrap()
        .into_iter()
        .find(|c| c.peer_id == alice)
        .and_then(|c| c.public)
        .unwrap();
    let node = h.state().node().unwrap();
    let alice_public = bob
        .rt
        .block_on(node.contacts())
        .unwrap()
        .into_iter()
        .find(|c| c.peer_id == bob.node.handle.peer_id())
        .and_then(|c| c.public)
        .unwrap();
    let safety = encrypto_crypto::SafetyNumber::between(&bob_public, &alice_public).to_string();
    assert!(has_label(&h, &safety), "the dialog shows {safety}");
    h.get_by_label("Mark as verified").click();
    wait_until(&mut h, "the verified mark", |h| has_label(h, "✔ verified"));
    let verified = bob
        .rt
        .block_on(node.contacts())
        .unwrap()
        .into_iter()
        .any(|c| c.peer_id == bob.node.handle.peer_id() && c.verified);
    assert!(verified);
}

#[test]
fn the_relay_toggle_marks_the_contact_as_a_relay_and_clears_it() {
    let Pair { mut h, bob, .. } = pair();
    h.get_by_label("Bob").click();
    wait_until(&mut h, "the chat with Bob", |h| {
        has_label(h, "Relay for my files")
    });
    let node = h.state().node().unwrap();
    let relay_mark = |node: &encrypto_node::NodeHandle| {
        bob.rt
            .block_on(node.contact(bob.node.handle.peer_id()))
            .unwrap()
            .unwrap()
            .relay
    };
    assert!(!relay_mark(&node));
    h.get_by_label("Relay for my files").click();
    wait_until(&mut h, "the relay status line", |h| {
        has_label(
            h,
            "Bob now holds your files, sealed, for contacts who are offline",
        )
    });
    assert!(relay_mark(&node), "the mark is not in the store");
    h.get_by_label("Relay for my files").click();
    wait_until(&mut h, "the relay cleared", |h| {
        has_label(h, "Bob is no longer a relay for your files")
    });
    assert!(!relay_mark(&node));
}

#[test]
fn a_file_from_the_peer_shows_as_a_card_and_lands_in_downloads() {
    let Pair {
        mut h,
        bob,
        alice,
        alice_dir,
        ..
    } = pair();
    let files = TempDir::new().unwrap();
    // Several chunks (256 KiB each), so the transfer is not over in one request.
    let sent = content(1536 * 1024 + 17, 1);
    let source = files.path().join("holiday notes.bin");
    std::fs::write(&source, &sent).unwrap();
    open_bob(&mut h);
    bob.rt
        .block_on(bob.node.handle.send_file(alice, source, Vec::new()))
        .unwrap();
    wait_until(&mut h, "the file's card", |h| {
        has_label(h, "holiday notes.bin")
    });
    wait_until(&mut h, "the download complete", |h| {
        has_label(h, "complete") && has_label(h, "Copy path")
    });
    assert!(has_label(&h, "1.5 MiB · from Bob ·"), "size and direction");
    let saved = alice_dir.join("downloads").join("holiday notes.bin");
    assert!(
        has_label(&h, &saved.display().to_string()),
        "the card shows where it is"
    );
    assert_eq!(std::fs::read(&saved).unwrap(), sent, "byte-identical");
    assert!(!has_label(&h, "Download"), "nothing left to download");
}

#[test]
fn a_file_over_the_download_limit_waits_for_the_download_button() {
    let Pair {
        mut h,
        bob,
        alice,
        alice_dir,
        ..
    } = pair_with(|o| o.node.auto_download_max = 1024);
    let files = TempDir::new().unwrap();
    let sent = content(300 * 1024, 2);
    let source = files.path().join("big.dat");
    std::fs::write(&source, &sent).unwrap();
    open_bob(&mut h);
    bob.rt
        .block_on(bob.node.handle.send_file(alice, source, Vec::new()))
        .unwrap();
    wait_until(&mut h, "the offer with a Download button", |h| {
        has_label(h, "offered") && has_label(h, "Download")
    });
    let saved = alice_dir.join("downloads").join("big.dat");
    assert!(!saved.exists(), "nothing is fetched before the click");
    h.get_by_label("Download").click();
    wait_until(&mut h, "the download complete", |h| {
        has_label(h, "complete")
    });
    assert_eq!(std::fs::read(&saved).unwrap(), sent, "byte-identical");
}

#[test]
fn a_file_picked_or_dropped_reaches_the_peer() {
    let Pair {
        mut h, bob, alice, ..
    } = pair();
    let files = TempDir::new().unwrap();
    let report = content(700 * 1024, 3);
    std::fs::write(files.path().join("report.bin"), &report).unwrap();
    let note = content(1000, 4);
    let note_path = files.path().join("dropped note.txt");
    std::fs::write(&note_path, &note).unwrap();
    open_bob(&mut h);

    // The picker: a folder typed into the path field opens it; a click picks a file.
    h.get_by_label("Attach file…").click();
    wait_until(&mut h, "the file picker", |h| has_label(h, "File path"));
    h.check_accessibility();
    type_into(&mut h, "File path", &files.path().display().to_string());
    h.key_press(Key::Enter);
    wait_until(&mut h, "the folder's listing", |h| {
        has_label(h, "report.bin")
    });
    // The dialog is placed from the previous frame's size: let it settle before clicking.
    h.run_steps(3);
    h.get_by_label("report.bin").click();
    h.step();
    let picked = files.path().join("report.bin").display().to_string();
    assert_eq!(
        h.get_by_label("File path").value().as_deref(),
        Some(picked.as_str())
    );
    h.get_by_label("Send file").click();
    let saved = wait_for_bob_to_hold(&mut h, &bob, "report.bin");
    assert_eq!(std::fs::read(saved).unwrap(), report, "byte-identical");
    assert!(!has_label(&h, "File path"), "the picker closed");
    wait_until(&mut h, "the card complete on the sending side", |h| {
        has_label(h, "report.bin") && has_label(h, "complete")
    });

    // A file dropped on the window goes to the open chat.
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(note_path.clone())));
    h.step();
    let saved = wait_for_bob_to_hold(&mut h, &bob, "dropped note.txt");
    assert_eq!(std::fs::read(saved).unwrap(), note, "byte-identical");
    let offers = bob
        .rt
        .block_on(bob.node.handle.history(alice, None))
        .unwrap()
        .into_iter()
        .filter(|m| matches!(m.body, Body::File { .. }))
        .count();
    assert_eq!(offers, 2, "one offer per file, none twice");
}
