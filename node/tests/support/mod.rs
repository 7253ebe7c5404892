//! What the node integration tests share: the harness of `encrypto_node::test_support`, with
//! a wait that fails the test instead of returning an error.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub use encrypto_node::test_support::{
    Running, STEP, Spec, connect, listen_loopback, raw_swarm, seeded_identity, start_node,
    trace_if_asked, wait_event,
};

use encrypto_node::NodeEvent;
use tokio::sync::broadcast;

/// Waits (at most [`STEP`]) for the first event that `pick` maps to a value.
pub async fn wait_for<T>(
    events: &mut broadcast::Receiver<NodeEvent>,
    pick: impl FnMut(&NodeEvent) -> Option<T>,
) -> T {
    wait_event(events, STEP, "an event", pick).await.unwrap()
}
