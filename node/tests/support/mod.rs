//! What the node integration tests share: the step timeout and waiting for an event.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use encrypto_node::NodeEvent;
use tokio::sync::broadcast;

/// The longest any single step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(30);

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
