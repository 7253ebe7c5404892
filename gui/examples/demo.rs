//! Two local nodes chatting, one of them in the real window: what `scripts/screenshot.sh`
//! photographs.
//!
//! `cargo run -p encrypto-gui --example demo -- DIR`: creates two identities in `DIR` (Alice,
//! the window's, and Bob, a node run here), starts Bob on 127.0.0.1, and opens the window on
//! Alice's data directory with Bob as a bootstrap peer. The window asks for Alice's passphrase
//! (`ENCRYPTO_DEMO_PASSPHRASE`, default `demo passphrase`); once it is unlocked, Bob and Alice
//! exchange a short scripted conversation through their nodes, and the window opens the chat.
//!
//! Demo identities use fast key derivation and 2048-bit RSA, so they are not for real use.

use std::path::{Path, PathBuf};
use std::time::Duration;

use encrypto_crypto::keystore::KdfParams;
use encrypto_crypto::{Cipher, PeerId, RsaBits};
use encrypto_gui::{App, Options};
use encrypto_node::test_support::{loopback_config, start_node};
use encrypto_node::{DataDir, NodeHandle};

fn identity(
    dir: &Path,
    name: &str,
    passphrase: &str,
) -> encrypto_crypto::keystore::KeystoreContents {
    let data = DataDir::open(dir).expect("a data directory");
    if data.has_identity() {
        return data
            .unlock(passphrase.as_bytes())
            .expect("the demo passphrase");
    }
    data.create_identity(
        name,
        passphrase.as_bytes(),
        RsaBits::B2048,
        KdfParams::INSECURE_FAST,
        1_764_000_000_000,
        &mut rand::rng(),
    )
    .expect("a new identity")
}

/// Bob's side of the conversation, and Alice's lines sent through her node.
async fn converse(bob: NodeHandle, alice: NodeHandle) {
    let alice_id = alice.peer_id();
    let bob_id = bob.peer_id();
    let mut events = bob.subscribe();
    // Both sides must have pinned each other's profile first.
    for _ in 0..600 {
        let both = bob
            .contacts()
            .await
            .map(|c| c.iter().any(|c| c.peer_id == alice_id));
        let back = alice
            .contacts()
            .await
            .map(|c| c.iter().any(|c| c.peer_id == bob_id));
        if matches!((both, back), (Ok(true), Ok(true))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines: [(bool, &str); 6] = [
        (false, "Hey Alice! Is this the new Encrypto build?"),
        (
            true,
            "It is. No server anywhere: my laptop talks straight to yours.",
        ),
        (false, "And the history?"),
        (
            true,
            "On our own disks, every message sealed with a local key.",
        ),
        (
            false,
            "Switching us to RSA for a moment, just to see it work.",
        ),
        (
            true,
            "Got it, the badge says RSA now. Back to AES after this one.",
        ),
    ];
    for (i, (from_alice, text)) in lines.into_iter().enumerate() {
        if i == 4 {
            let _ = bob.set_cipher(alice_id, Cipher::Rsa).await;
        }
        let sent = if from_alice {
            alice.send_text(bob_id, text.to_owned()).await
        } else {
            bob.send_text(alice_id, text.to_owned()).await
        };
        if let Err(e) = sent {
            eprintln!("demo: cannot send: {e}");
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let _ = alice.set_cipher(bob_id, Cipher::Aes).await;
    // Keep Bob answering delivery acknowledgements until the window closes.
    while events.recv().await.is_ok() {}
}

/// The window, which opens the chat with Bob and starts the conversation once unlocked.
struct Demo {
    app: App,
    bob: NodeHandle,
    bob_id: PeerId,
    started: bool,
    rt: tokio::runtime::Handle,
}

impl eframe::App for Demo {
    fn logic(&mut self, ctx: &egui::Context, frame: &mut eframe::Frame) {
        eframe::App::logic(&mut self.app, ctx, frame);
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        eframe::App::ui(&mut self.app, ui, frame);
        if !self.started
            && let Some(alice) = self.app.node()
        {
            self.started = true;
            self.app.open_chat(self.bob_id);
            self.rt.spawn(converse(self.bob.clone(), alice));
        }
        if self.started {
            self.app.open_chat(self.bob_id);
        }
    }

    fn on_exit(&mut self, gl: Option<&eframe::glow::Context>) {
        eframe::App::on_exit(&mut self.app, gl);
    }
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("encrypto-demo"));
    let passphrase =
        std::env::var("ENCRYPTO_DEMO_PASSPHRASE").unwrap_or_else(|_| "demo passphrase".into());
    let alice_dir = root.join("alice");
    drop(identity(&alice_dir, "Alice", &passphrase));
    let bob = identity(&root.join("bob"), "Bob", "bob's demo passphrase");
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let bob_id = bob.identity.peer_id();
    // Bob listens by the time his node has started: his address is the window's bootstrap.
    let bob_node = {
        let _guard = rt.enter();
        start_node(
            bob.identity,
            &bob.name,
            bob.created_ms,
            bob.storage_key,
            loopback_config(root.join("bob")),
        )
        .expect("Bob's node")
    };
    let bootstrap = bob_node.dialable();

    let mut options = Options::new(alice_dir.clone());
    options.node = loopback_config(&alice_dir);
    options.node.bootstrap = vec![bootstrap];
    options.notifications = false;
    let demo = Demo {
        app: App::new(options).expect("the window's runtime"),
        bob: bob_node.handle,
        bob_id,
        started: false,
        rt: rt.handle().clone(),
    };
    let native = eframe::NativeOptions {
        renderer: eframe::Renderer::Glow,
        viewport: egui::ViewportBuilder::default()
            .with_title("Encrypto")
            .with_inner_size([1100.0, 720.0]),
        ..Default::default()
    };
    if let Err(e) = eframe::run_native(
        "Encrypto",
        native,
        Box::new(|cc| {
            encrypto_gui::apply_theme(&cc.egui_ctx);
            Ok(Box::new(demo))
        }),
    ) {
        eprintln!("demo: the window failed: {e}");
        std::process::exit(1);
    }
}
