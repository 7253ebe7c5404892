//! Starting the bench's nodes, through the node crate's test harness
//! (`encrypto_node::test_support`): on 127.0.0.1 with an ephemeral port, mDNS off, and
//! listening by the time they are handed out.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use encrypto_crypto::{Identity, RsaBits, StorageKey};
use encrypto_node::Multiaddr;
use encrypto_node::test_support::{self, Running};
use encrypto_node::{NodeConfig, NodeHandle};
use tokio::task::JoinHandle;

/// The longest one setup step (start, connect, cipher switch) may take.
pub(crate) const SETUP_STEP: Duration = Duration::from_secs(60);

/// A node the bench started, without the event receiver it started with (a [`Running`] is
/// turned into one once its events are no longer read, so that they do not pile up unread).
pub(crate) struct Node {
    pub(crate) handle: NodeHandle,
    pub(crate) task: JoinHandle<()>,
    /// Its listen address (without `/p2p/`).
    pub(crate) addr: Multiaddr,
}

impl From<Running> for Node {
    fn from(running: Running) -> Node {
        let Running {
            handle, addr, task, ..
        } = running;
        Node { handle, task, addr }
    }
}

impl Node {
    /// Its address with `/p2p/PEER`, as `add_peer` and `bootstrap` take it.
    pub(crate) fn dialable(&self) -> Multiaddr {
        encrypto_node::addr_with_peer(&self.addr, self.handle.peer_id())
    }
}

/// A node for the message and file figures: a fresh identity of the default size, every file
/// downloaded by itself, and (unless `default_rate_limit`) no inbound rate limit.
pub(crate) async fn start_node(
    dir: PathBuf,
    name: &str,
    default_rate_limit: bool,
) -> Result<Running> {
    let identity =
        tokio::task::spawn_blocking(|| Identity::generate(&mut rand::rng(), RsaBits::default()))
            .await??;
    let mut config = test_support::loopback_config(dir);
    // Every file the bench sends downloads by itself, whatever `--file-mib` says (the default
    // limit, 1 GiB, would leave a larger one waiting for a fetch).
    config.auto_download_max = u64::MAX;
    if !default_rate_limit {
        config.inbound_per_second = u32::MAX;
        config.inbound_burst = u32::MAX;
    }
    launch(
        identity,
        name,
        1,
        StorageKey::generate(&mut rand::rng()),
        config,
    )
}

/// Starts a node; it listens by the time this returns.
pub(crate) fn launch(
    identity: Identity,
    name: &str,
    created_ms: u64,
    storage_key: StorageKey,
    config: NodeConfig,
) -> Result<Running> {
    Ok(test_support::start_node(
        identity,
        name,
        created_ms,
        storage_key,
        config,
    )?)
}

/// What is left of `until` from now: the bound for one wait.
pub(crate) fn left(until: tokio::time::Instant) -> Duration {
    until.saturating_duration_since(tokio::time::Instant::now())
}
