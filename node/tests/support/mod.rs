//! What the node integration tests share: the step timeout and waiting for an event.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use encrypto_crypto::{Identity, RsaBits, StorageKey};
use encrypto_node::NodeEvent;
use encrypto_node::{NodeConfig, NodeHandle};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, Swarm, SwarmBuilder, noise, tcp, yamux};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tempfile::TempDir;
use tokio::sync::broadcast;

/// The longest any single step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(30);

/// A bare libp2p swarm for `me` on the nodes' transport (TCP, noise, yamux), with `behaviour`
/// and connections kept while idle for `idle`: the raw peer a test drives by hand.
pub fn raw_swarm<B: NetworkBehaviour>(
    me: &Identity,
    idle: Duration,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> Swarm<B> {
    SwarmBuilder::with_existing_identity(me.to_libp2p_keypair())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build()
}

/// Waits (at most [`STEP`]) for the first event that `pick` maps to a value.
pub async fn wait_for<T>(
    events: &mut broadcast::Receiver<NodeEvent>,
    mut pick: impl FnMut(&NodeEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(STEP, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(v) = pick(&event) {
                        return v;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("node stopped"),
            }
        }
    })
    .await
    .expect("event not seen within the step timeout")
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

/// What it takes to start (and restart) one node.
pub struct Spec {
    pub name: &'static str,
    pub seed: u64,
    pub dir: PathBuf,
    pub storage: [u8; 32],
    pub listen: String,
    /// Changes to the default test configuration.
    pub tweak: fn(&mut NodeConfig),
}

pub struct Running {
    pub handle: NodeHandle,
    pub events: broadcast::Receiver<NodeEvent>,
    pub addr: Multiaddr,
    pub task: tokio::task::JoinHandle<()>,
}

impl Spec {
    pub fn new(tmp: &TempDir, name: &'static str, seed: u64, listen: &str) -> Spec {
        Spec {
            name,
            seed,
            dir: tmp.path().join(name),
            storage: [seed as u8; 32],
            listen: listen.to_owned(),
            tweak: |_| {},
        }
    }

    pub fn identity(&self) -> Identity {
        Identity::generate(&mut StdRng::seed_from_u64(self.seed), RsaBits::B2048).unwrap()
    }

    pub async fn start(&mut self) -> Running {
        trace_if_asked();
        let mut config = NodeConfig::new(self.dir.clone());
        config.swarm.listen = vec![self.listen.parse().unwrap()];
        config.swarm.mdns = false;
        (self.tweak)(&mut config);
        let encrypto_node::Started {
            handle,
            mut events,
            task,
        } = encrypto_node::start(
            self.identity(),
            self.name,
            1,
            StorageKey::from_bytes(self.storage),
            config,
        )
        .unwrap();
        let addr = match handle.listen_addrs().await.unwrap().into_iter().next() {
            Some(addr) => addr,
            None => {
                wait_for(&mut events, |e| match e {
                    NodeEvent::Listening { addr } => Some(addr.clone()),
                    _ => None,
                })
                .await
            }
        };
        // Restarts listen on the same address, so peers that knew it can redial.
        self.listen = addr.to_string();
        Running {
            handle,
            events,
            addr,
            task,
        }
    }
}

impl Running {
    pub async fn stop(self) {
        self.handle.shutdown().await;
        tokio::time::timeout(STEP, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Connects `a` to `b` and waits until each has pinned the other's profile.
pub async fn connect(a: &mut Running, b: &mut Running) {
    let (pa, pb) = (a.handle.peer_id(), b.handle.peer_id());
    a.handle.dial(b.addr.clone()).await.unwrap();
    wait_for(&mut a.events, |e| {
        matches!(e, NodeEvent::ProfileVerified { peer, .. } if *peer == pb).then_some(())
    })
    .await;
    wait_for(&mut b.events, |e| {
        matches!(e, NodeEvent::ProfileVerified { peer, .. } if *peer == pa).then_some(())
    })
    .await;
}
