//! mDNS discovery between two real nodes in two network namespaces joined by a veth pair.
//!
//! mDNS ignores loopback interfaces, so the loopback tests cannot cover it. This test creates
//! two fresh network namespaces, joins them with a veth pair (10.231.0.1/24 and 10.231.0.2/24,
//! created directly inside the namespaces so the host's own network is never touched), and runs
//! one node in each: a thread enters its namespace with `setns` before it creates any socket,
//! then runs the node on a current-thread tokio runtime. Each node must discover the other
//! through mDNS, dial it and verify its signed profile; then Alice sends Bob a text and waits
//! for the delivery ack while Bob finds it in his history.
//!
//! It needs root and a working `ip netns` (iproute2). Without them it prints why and passes;
//! set `ENCRYPTO_REQUIRE_NETNS=1` to make a missing prerequisite a failure instead (for CI
//! machines that are known to have both).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use encrypto_crypto::{Identity, MessageId, PeerId, RsaBits, StorageKey};
use encrypto_node::view::{Body, Direction};
use encrypto_node::{NodeConfig, NodeEvent, NodeHandle, PeerInfo, Via};
use nix::sched::{CloneFlags, setns};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tempfile::TempDir;
use tokio::sync::{broadcast, oneshot};

/// The longest any single step may take before the test fails.
const STEP: Duration = Duration::from_secs(60);
/// The longest the whole exchange may take, as seen from the test thread.
const WHOLE: Duration = Duration::from_secs(240);
/// The text Alice sends.
const TEXT: &str = "hello over mdns";

/// The namespaces this run created; deleted on drop, whatever happened (deleting a namespace
/// also destroys the veth end inside it, and with it the peer end).
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            match Command::new("ip").args(["netns", "del", name]).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "cannot delete network namespace {name}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => eprintln!("cannot delete network namespace {name}: {e}"),
            }
        }
    }
}

/// Runs `ip ARGS`; the error names the command and says what `ip` printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The file `ip netns add NAME` bind-mounts the namespace on.
fn netns_file(name: &str) -> Result<PathBuf, String> {
    ["/run/netns", "/var/run/netns"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .ok_or_else(|| format!("no /run/netns/{name} or /var/run/netns/{name}"))
}

/// Whether a missing prerequisite must fail the test rather than skip it.
fn required() -> bool {
    std::env::var_os("ENCRYPTO_REQUIRE_NETNS").is_some_and(|v| v == "1")
}

/// Skips (prints the reason, returns `true`) or, when required, fails.
fn skip(reason: &str) -> bool {
    assert!(
        !required(),
        "ENCRYPTO_REQUIRE_NETNS=1 but cannot run: {reason}"
    );
    eprintln!("SKIPPED mdns_netns: {reason}");
    true
}

/// Two namespaces joined by a veth pair, addressed and up.
struct Lan {
    /// Alice's and Bob's namespace files.
    files: [PathBuf; 2],
    /// Deletes them on drop.
    _guard: Namespaces,
}

/// Sets up the namespaces, or `None` when this machine cannot (after printing why).
fn lan() -> Option<Lan> {
    if !nix::unistd::geteuid().is_root() {
        skip("not running as root (network namespaces need it)");
        return None;
    }
    if let Err(e) = ip(&["netns", "list"]) {
        skip(&format!("`ip netns` does not work here: {e}"));
        return None;
    }
    let pid = std::process::id();
    let names = [
        format!("encrypto-mdns-{pid}-a"),
        format!("encrypto-mdns-{pid}-b"),
    ];
    let veths = [format!("enca{pid}"), format!("encb{pid}")];
    let mut guard = Namespaces(Vec::new());
    for (i, name) in names.iter().enumerate() {
        // A leftover with our process id is from a dead run (ours is alive): remove it.
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        match ip(&["netns", "add", name]) {
            Ok(()) => guard.0.push(name.clone()),
            Err(e) if i == 0 => {
                skip(&format!("cannot create a network namespace: {e}"));
                return None;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (na, nb) = (names[0].as_str(), names[1].as_str());
    let (va, vb) = (veths[0].as_str(), veths[1].as_str());
    // Created directly inside the namespaces: no interface ever appears in the host's.
    ip(&[
        "link", "add", va, "netns", na, "type", "veth", "peer", "name", vb, "netns", nb,
    ])
    .unwrap();
    for (ns, dev, addr) in [(na, va, "10.231.0.1/24"), (nb, vb, "10.231.0.2/24")] {
        ip(&["-n", ns, "addr", "add", addr, "dev", dev]).unwrap();
        ip(&["-n", ns, "link", "set", "lo", "up"]).unwrap();
        ip(&["-n", ns, "link", "set", dev, "up"]).unwrap();
    }
    Some(Lan {
        files: [netns_file(na).unwrap(), netns_file(nb).unwrap()],
        _guard: guard,
    })
}

/// Runs `body` on a new thread inside the network namespace at `ns_file`, on a current-thread
/// tokio runtime, and sends its result back on the returned channel (a panic drops the sender,
/// which the receiver sees at once).
fn spawn_in_netns<F, Fut, T>(
    label: &str,
    ns_file: PathBuf,
    body: F,
) -> mpsc::Receiver<Result<T, String>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, String>>,
    T: Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(label.to_owned())
        .spawn(move || {
            let result = (|| {
                // The network namespace is per thread: enter it before any socket exists.
                // Threads this one starts later (tokio's blocking pool) inherit it.
                let file = File::open(&ns_file)
                    .map_err(|e| format!("cannot open {}: {e}", ns_file.display()))?;
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("cannot enter {}: {e}", ns_file.display()))?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot build a runtime: {e}"))?;
                runtime.block_on(body())
            })();
            let _ = tx.send(result);
        })
        .expect("cannot spawn a thread");
    rx
}

/// One node's identity and data directory.
struct Spec {
    name: &'static str,
    seed: u8,
    identity: Identity,
    dir: PathBuf,
}

impl Spec {
    fn new(tmp: &TempDir, name: &'static str, seed: u8) -> Spec {
        Spec {
            name,
            seed,
            identity: Identity::generate(
                &mut StdRng::seed_from_u64(u64::from(seed)),
                RsaBits::B2048,
            )
            .unwrap(),
            dir: tmp.path().join(name),
        }
    }
}

/// A node running on the current thread's runtime.
struct Running {
    handle: NodeHandle,
    events: broadcast::Receiver<NodeEvent>,
    /// Events a wait passed over, for the next waits: the other node may act before this
    /// one has seen everything it waits for first (Alice's text can arrive before Bob's
    /// mDNS discovery of her is reported).
    backlog: VecDeque<NodeEvent>,
    task: tokio::task::JoinHandle<()>,
}

/// Most events kept in a backlog (this test's nodes emit a few dozen).
const BACKLOG_MAX: usize = 10_000;

impl Running {
    fn start(spec: Spec) -> Result<Running, String> {
        let mut config = NodeConfig::new(spec.dir);
        config.swarm.listen = vec!["/ip4/0.0.0.0/tcp/0".parse().unwrap()];
        config.swarm.mdns = true;
        let encrypto_node::Started {
            handle,
            events,
            task,
            ..
        } = encrypto_node::start(
            spec.identity,
            spec.name,
            1,
            StorageKey::from_bytes([spec.seed; 32]),
            config,
        )
        .map_err(|e| format!("{}: cannot start the node: {e}", spec.name))?;
        Ok(Running {
            handle,
            events,
            backlog: VecDeque::new(),
            task,
        })
    }

    /// Waits until `pick` returns `Some`, at most [`STEP`]; `what` names it in the error.
    /// Events passed over by earlier waits are offered first, in the order they came.
    async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&NodeEvent) -> Option<T>,
    ) -> Result<T, String> {
        for i in 0..self.backlog.len() {
            if let Some(v) = pick(&self.backlog[i]) {
                self.backlog.remove(i);
                return Ok(v);
            }
        }
        let (events, backlog) = (&mut self.events, &mut self.backlog);
        let found = tokio::time::timeout(STEP, async {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        if let Some(v) = pick(&event) {
                            return Ok(v);
                        }
                        if backlog.len() < BACKLOG_MAX {
                            backlog.push_back(event);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(format!("the node stopped while waiting for {what}"));
                    }
                }
            }
        })
        .await;
        found.map_err(|_| format!("{what} not seen within {STEP:?}"))?
    }

    /// Waits until this node has discovered `other` through mDNS and verified its profile,
    /// in whichever order they happen (the other side may discover us first and dial).
    /// Returns how long each took.
    async fn meet(&mut self, other: PeerId) -> Result<Meeting, String> {
        let t0 = Instant::now();
        let (mut discovered, mut verified) = (None, None);
        self.wait_for(
            "mDNS discovery and a verified profile of the other peer",
            |e| {
                match e {
                    NodeEvent::PeerDiscovered {
                        peer,
                        via: Via::Mdns,
                    } if *peer == other => {
                        discovered.get_or_insert(t0.elapsed());
                    }
                    NodeEvent::ProfileVerified { peer, .. } if *peer == other => {
                        verified.get_or_insert(t0.elapsed());
                    }
                    _ => {}
                }
                discovered.zip(verified)
            },
        )
        .await
        .map_err(|e| format!("{e} (discovered: {discovered:?}, verified: {verified:?})"))
        .map(|(discovered, verified)| Meeting {
            discovered,
            verified,
        })
    }

    async fn stop(self) -> Result<(), String> {
        self.handle.shutdown().await;
        match tokio::time::timeout(STEP, self.task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the node task failed: {e}")),
            Err(_) => Err(format!("the node did not stop within {STEP:?}")),
        }
    }
}

/// How long discovery and the profile exchange took, from the node's start.
#[derive(Debug)]
struct Meeting {
    discovered: Duration,
    verified: Duration,
}

/// What Alice's thread saw.
#[derive(Debug)]
struct AliceSaw {
    meeting: Meeting,
    delivered: Duration,
    peers: Vec<PeerInfo>,
}

/// Waits for the other thread to say it is done (so neither node stops under the other).
async fn other_done(rx: oneshot::Receiver<()>, who: &str) -> Result<(), String> {
    match tokio::time::timeout(STEP, rx).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(format!("{who}'s thread failed")),
        Err(_) => Err(format!("{who} did not finish within {STEP:?}")),
    }
}

async fn alice(
    spec: Spec,
    bob: PeerId,
    sent_id: oneshot::Sender<MessageId>,
    done: oneshot::Sender<()>,
    bob_done: oneshot::Receiver<()>,
) -> Result<AliceSaw, String> {
    let mut node = Running::start(spec)?;
    let meeting = node.meet(bob).await?;
    let t0 = Instant::now();
    let id = node
        .handle
        .send_text(bob, TEXT.into())
        .await
        .map_err(|e| format!("cannot send to bob: {e}"))?;
    let _ = sent_id.send(id);
    node.wait_for("the delivery ack", |e| {
        matches!(e, NodeEvent::Delivered { peer, id: got } if *peer == bob && *got == id)
            .then_some(())
    })
    .await?;
    let delivered = t0.elapsed();
    let peers = node
        .handle
        .peers()
        .await
        .map_err(|e| format!("cannot list peers: {e}"))?;
    let _ = done.send(());
    other_done(bob_done, "bob").await?;
    node.stop().await?;
    Ok(AliceSaw {
        meeting,
        delivered,
        peers,
    })
}

async fn bob(
    spec: Spec,
    alice: PeerId,
    sent_id: oneshot::Receiver<MessageId>,
    done: oneshot::Sender<()>,
    alice_done: oneshot::Receiver<()>,
) -> Result<Meeting, String> {
    let mut node = Running::start(spec)?;
    let meeting = node.meet(alice).await?;
    let received = node
        .wait_for("alice's message", |e| match e {
            NodeEvent::MessageReceived { peer, id, .. } if *peer == alice => Some(*id),
            _ => None,
        })
        .await?;
    let sent = match tokio::time::timeout(STEP, sent_id).await {
        Ok(Ok(id)) => id,
        _ => return Err("alice never said which message she sent".into()),
    };
    if received != sent {
        return Err(format!("received {received:?}, alice sent {sent:?}"));
    }
    let history = node
        .handle
        .history(alice, None)
        .await
        .map_err(|e| format!("cannot read the history: {e}"))?;
    let found = history
        .iter()
        .any(|m| m.id == sent && m.direction == Direction::In && m.body == Body::Text(TEXT.into()));
    if !found {
        return Err(format!("alice's text is not in bob's history: {history:?}"));
    }
    let _ = done.send(());
    other_done(alice_done, "alice").await?;
    node.stop().await?;
    Ok(meeting)
}

/// Receives a thread's result, at most [`WHOLE`] after `start`.
fn result<T>(
    rx: &mpsc::Receiver<Result<T, String>>,
    who: &str,
    start: Instant,
) -> Result<T, String> {
    let left = WHOLE.saturating_sub(start.elapsed());
    match rx.recv_timeout(left) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{who}: {e}")),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(format!("{who} did not finish within {WHOLE:?}"))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(format!("{who}'s thread panicked")),
    }
}

#[test]
fn two_nodes_in_two_namespaces_find_each_other_with_mdns_and_chat() {
    let Some(lan) = lan() else { return };
    let tmp = TempDir::new().unwrap();
    let (a, b) = (Spec::new(&tmp, "alice", 1), Spec::new(&tmp, "bob", 2));
    let (pa, pb) = (a.identity.peer_id(), b.identity.peer_id());
    let (id_tx, id_rx) = oneshot::channel();
    let (alice_done_tx, alice_done_rx) = oneshot::channel();
    let (bob_done_tx, bob_done_rx) = oneshot::channel();

    let start = Instant::now();
    let [file_a, file_b] = lan.files.clone();
    let alice_rx = spawn_in_netns("alice", file_a, move || {
        alice(a, pb, id_tx, alice_done_tx, bob_done_rx)
    });
    let bob_rx = spawn_in_netns("bob", file_b, move || {
        bob(b, pa, id_rx, bob_done_tx, alice_done_rx)
    });
    // Both results first: when one side fails, the other usually fails because of it, and
    // the report must show the cause.
    let (alice_saw, bob_met) = match (
        result(&alice_rx, "alice", start),
        result(&bob_rx, "bob", start),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => panic!(
            "the exchange failed:\n  {}\n  {}",
            a.map(|_| "alice: ok".to_owned()).unwrap_or_else(|e| e),
            b.map(|_| "bob: ok".to_owned()).unwrap_or_else(|e| e)
        ),
    };
    eprintln!(
        "mdns_netns: alice discovered bob after {:?}, verified him after {:?}, \
         message delivered in {:?}; bob discovered alice after {:?}, verified her after {:?}; \
         {:?} in all",
        alice_saw.meeting.discovered,
        alice_saw.meeting.verified,
        alice_saw.delivered,
        bob_met.discovered,
        bob_met.verified,
        start.elapsed()
    );

    let seen = alice_saw
        .peers
        .iter()
        .find(|p| p.peer_id == pb)
        .unwrap_or_else(|| panic!("bob is not in alice's peers: {:?}", alice_saw.peers));
    assert_eq!(seen.via, Via::Mdns, "{seen:?}");
    assert_eq!(seen.name.as_deref(), Some("bob"), "{seen:?}");
    assert!(
        seen.addrs
            .iter()
            .any(|a| a.to_string().starts_with("/ip4/10.231.0.2/tcp/")),
        "bob's veth address is not among {:?}",
        seen.addrs
    );
    drop(lan);
}
