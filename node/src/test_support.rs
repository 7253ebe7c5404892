//! The one harness for running real nodes in tests and the benchmark (feature `test-support`).
//!
//! Nodes listen on `127.0.0.1:0` with mDNS off ([`loopback_config`]); [`start_node`] returns
//! once they listen, with their address; [`connect`] dials and waits until both sides have
//! pinned each other's profile; [`wait_event`] waits for an event with a bounded timeout, never
//! for a fixed time. [`raw_swarm`] builds a bare libp2p swarm on the nodes' transport for the
//! tests (and the benchmark's floor figures) that drive a peer by hand.
//!
//! The node, root and window tests enable the feature through their dev-dependencies, so
//! `cargo test --workspace` needs no flag. Errors are [`HarnessError`]s: a test unwraps them,
//! the benchmark reports them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use encrypto_crypto::{Identity, PeerId, RsaBits, StorageKey};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, Swarm, SwarmBuilder, noise, tcp, yamux};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::broadcast;

use crate::{NodeConfig, NodeError, NodeEvent, NodeHandle};

/// The longest any single step of a test may take before it fails.
pub const STEP: Duration = Duration::from_secs(30);

/// What went wrong in the harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The node could not start, or a request to it failed.
    #[error("{what}: {source}")]
    Node {
        /// What was being done.
        what: String,
        /// Why it failed (boxed: a node error is large, and this one is rare).
        source: Box<NodeError>,
    },
    /// An awaited event did not come in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long was waited.
        after: Duration,
    },
    /// The node stopped (its event stream closed) while something was awaited.
    #[error("the node stopped while waiting for {0}")]
    Stopped(String),
    /// The node listens nowhere, so it cannot be dialled.
    #[error("node {0} listens nowhere")]
    NotListening(String),
    /// A raw swarm could not be built.
    #[error("cannot build a raw swarm: {0}")]
    Swarm(String),
    /// The node's task ended with a panic.
    #[error("the node's task failed: {0}")]
    Task(String),
}

impl HarnessError {
    fn node(what: impl Into<String>) -> impl FnOnce(NodeError) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Node {
            what,
            source: Box::new(source),
        }
    }
}

/// The default node config for data in `dir`, but for TCP on 127.0.0.1 (an ephemeral port)
/// only and mDNS off: nodes of one test find each other only when told.
pub fn loopback_config(dir: impl Into<PathBuf>) -> NodeConfig {
    let mut config = NodeConfig::new(dir.into());
    config.swarm.listen = vec![loopback_tcp()];
    config.swarm.mdns = false;
    config
}

/// `/ip4/127.0.0.1/tcp/0`.
pub fn loopback_tcp() -> Multiaddr {
    Multiaddr::empty()
        .with(libp2p::multiaddr::Protocol::Ip4(
            std::net::Ipv4Addr::LOCALHOST,
        ))
        .with(libp2p::multiaddr::Protocol::Tcp(0))
}

/// The RSA-2048 identity generated from `seed`: the same for every run of a test, and faster
/// than the default size.
///
/// # Panics
/// If key generation fails (it does not with a seeded RNG).
pub fn seeded_identity(seed: u64) -> Identity {
    Identity::generate(&mut StdRng::seed_from_u64(seed), RsaBits::B2048)
        .expect("RSA key generation from a seeded RNG")
}

/// A node started by the harness.
#[derive(Debug)]
pub struct Running {
    /// Its handle.
    pub handle: NodeHandle,
    /// Its events from the start ([`crate::Started::events`]).
    pub events: broadcast::Receiver<NodeEvent>,
    /// Its first listen address (without `/p2p/`).
    pub addr: Multiaddr,
    /// Ends once it has stopped.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts a node (see [`crate::start`], whose arguments it takes); it listens by the time this returns. Call it within a
/// tokio runtime.
///
/// # Errors
/// [`HarnessError::Node`] if the node cannot start, [`HarnessError::NotListening`] if its
/// config has it listen nowhere.
pub fn start_node(
    identity: Identity,
    name: &str,
    created_ms: u64,
    storage_key: StorageKey,
    config: NodeConfig,
) -> Result<Running, HarnessError> {
    let crate::Started {
        handle,
        events,
        task,
        listen_addrs,
    } = crate::start(identity, name, created_ms, storage_key, config)
        .map_err(HarnessError::node(format!("starting node {name}")))?;
    let addr = listen_addrs
        .into_iter()
        .next()
        .ok_or_else(|| HarnessError::NotListening(name.to_owned()))?;
    Ok(Running {
        handle,
        events,
        addr,
        task,
    })
}

impl Running {
    /// Its address with `/p2p/PEER`, as `add_peer` and `bootstrap` take it.
    pub fn dialable(&self) -> Multiaddr {
        crate::addr_with_peer(&self.addr, self.handle.peer_id())
    }

    /// Waits (at most `limit`) for the first of its events that `pick` maps to a value.
    ///
    /// # Errors
    /// See [`wait_event`].
    pub async fn wait<T>(
        &mut self,
        limit: Duration,
        what: &str,
        pick: impl FnMut(&NodeEvent) -> Option<T>,
    ) -> Result<T, HarnessError> {
        wait_event(&mut self.events, limit, what, pick).await
    }

    /// Shuts the node down and waits (at most [`STEP`]) until its store is closed.
    ///
    /// # Errors
    /// [`HarnessError::Timeout`] if it does not stop in time, [`HarnessError::Task`] if its
    /// task panicked.
    pub async fn stop(self) -> Result<(), HarnessError> {
        self.handle.shutdown().await;
        tokio::time::timeout(STEP, self.task)
            .await
            .map_err(|_| HarnessError::Timeout {
                what: "the node to stop".into(),
                after: STEP,
            })?
            .map_err(|e| HarnessError::Task(e.to_string()))
    }
}

/// What it takes to start (and restart) one test node: a seeded identity and storage key,
/// a data directory, and a listen address that a restart keeps.
pub struct Spec {
    /// Its profile name.
    pub name: &'static str,
    /// Seeds its identity ([`seeded_identity`]) and its storage key.
    pub seed: u64,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its storage key's bytes.
    pub storage: [u8; 32],
    /// Where it listens; set to the address it got once it started, so that a restart
    /// listens there again and peers that knew it can redial.
    pub listen: String,
    /// Changes to [`loopback_config`].
    pub tweak: fn(&mut NodeConfig),
}

impl Spec {
    /// A node `name` with data in `root/name`, listening on `listen`.
    pub fn new(root: impl AsRef<Path>, name: &'static str, seed: u64, listen: &str) -> Spec {
        Spec {
            name,
            seed,
            dir: root.as_ref().join(name),
            storage: [seed as u8; 32],
            listen: listen.to_owned(),
            tweak: |_| {},
        }
    }

    /// Its identity.
    pub fn identity(&self) -> Identity {
        seeded_identity(self.seed)
    }

    /// Starts it (see [`start_node`]).
    ///
    /// # Errors
    /// As [`start_node`]; [`HarnessError::Swarm`] if `listen` is not an address.
    pub fn start(&mut self) -> Result<Running, HarnessError> {
        trace_if_asked();
        let mut config = loopback_config(self.dir.clone());
        config.swarm.listen = vec![
            self.listen
                .parse()
                .map_err(|e| HarnessError::Swarm(format!("{:?}: {e}", self.listen)))?,
        ];
        (self.tweak)(&mut config);
        let running = start_node(
            self.identity(),
            self.name,
            1,
            StorageKey::from_bytes(self.storage),
            config,
        )?;
        self.listen = running.addr.to_string();
        Ok(running)
    }
}

/// Waits (at most `limit`) for the first event that `pick` maps to a value; `what` names it in
/// the error. Events the receiver lagged behind on are skipped.
///
/// # Errors
/// [`HarnessError::Timeout`], or [`HarnessError::Stopped`] if the node stopped.
pub async fn wait_event<T>(
    events: &mut broadcast::Receiver<NodeEvent>,
    limit: Duration,
    what: &str,
    mut pick: impl FnMut(&NodeEvent) -> Option<T>,
) -> Result<T, HarnessError> {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(v) = pick(&event) {
                        return Ok(v);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(HarnessError::Stopped(what.to_owned()));
                }
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .map_err(|_| HarnessError::Timeout {
            what: what.to_owned(),
            after: limit,
        })?
}

/// Waits (at most `limit`) until `events` reports that `peer`'s profile is pinned.
///
/// # Errors
/// See [`wait_event`].
pub async fn wait_verified(
    events: &mut broadcast::Receiver<NodeEvent>,
    peer: PeerId,
    limit: Duration,
) -> Result<(), HarnessError> {
    wait_event(events, limit, &format!("{peer}'s profile"), |e| {
        matches!(e, NodeEvent::ProfileVerified { peer: p, .. } if *p == peer).then_some(())
    })
    .await
}

/// Connects `a` to `b` and waits (at most [`STEP`] each) until each has pinned the other's
/// profile.
///
/// # Errors
/// [`HarnessError::Node`] if the dial fails at once, else as [`wait_event`].
pub async fn connect(a: &mut Running, b: &mut Running) -> Result<(), HarnessError> {
    connect_within(a, b, STEP).await
}

/// [`connect`], with each wait bounded by `limit`.
///
/// # Errors
/// As [`connect`].
pub async fn connect_within(
    a: &mut Running,
    b: &mut Running,
    limit: Duration,
) -> Result<(), HarnessError> {
    let (pa, pb) = (a.handle.peer_id(), b.handle.peer_id());
    a.handle
        .dial(b.addr.clone())
        .await
        .map_err(HarnessError::node("dialling"))?;
    wait_verified(&mut a.events, pb, limit).await?;
    wait_verified(&mut b.events, pa, limit).await
}

/// A bare libp2p swarm for `me` on the nodes' transport (TCP, noise, yamux), with `behaviour`
/// and connections kept while idle for `idle`: the raw peer a test drives by hand.
///
/// # Errors
/// [`HarnessError::Swarm`] if the transport or the behaviour cannot be set up.
pub fn raw_swarm<B: NetworkBehaviour>(
    me: &Identity,
    idle: Duration,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> Result<Swarm<B>, HarnessError> {
    raw_swarm_for(me.to_libp2p_keypair(), idle, behaviour)
}

/// [`raw_swarm`] for any libp2p key.
///
/// # Errors
/// As [`raw_swarm`].
pub fn raw_swarm_for<B: NetworkBehaviour>(
    keypair: libp2p::identity::Keypair,
    idle: Duration,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> Result<Swarm<B>, HarnessError> {
    Ok(SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| HarnessError::Swarm(e.to_string()))?
        .with_behaviour(behaviour)
        .map_err(|e| HarnessError::Swarm(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build())
}

/// Makes a raw swarm listen on [`loopback_tcp`]; returns the address it got (within [`STEP`]).
///
/// # Errors
/// [`HarnessError::Swarm`] if it cannot listen, [`HarnessError::Timeout`] if no address comes.
pub async fn listen_loopback<B: NetworkBehaviour>(
    swarm: &mut Swarm<B>,
) -> Result<Multiaddr, HarnessError> {
    use futures::StreamExt;
    swarm
        .listen_on(loopback_tcp())
        .map_err(|e| HarnessError::Swarm(e.to_string()))?;
    tokio::time::timeout(STEP, async {
        loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                swarm.select_next_some().await
            {
                return address;
            }
        }
    })
    .await
    .map_err(|_| HarnessError::Timeout {
        what: "a raw swarm's listen address".into(),
        after: STEP,
    })
}

/// With `RUST_LOG` set, the nodes' logs go to the test's output (shown when it fails).
pub fn trace_if_asked() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
