//! The idle daemon RSS figure: a node in a child process of its own, on a data directory made
//! as `encrypto init` makes one, connected to one peer, then left idle.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use encrypto_crypto::keystore::KdfParams;
use encrypto_crypto::{PeerId, RsaBits};
use encrypto_node::DataDir;
use encrypto_node::NodeEvent;
use encrypto_node::test_support::{loopback_config, wait_event};
use tokio::time::timeout_at;

use crate::Args;
use crate::nodes::{Node, SETUP_STEP, launch, left, start_node};
use crate::report::status_mib;
use crate::report_figures::{Child, now_ms, tempdir};
/// How long the idle node is left alone once connected, before its RSS is read.
pub(crate) const IDLE: Duration = Duration::from_secs(10);
/// The idle node's keystore passphrase (a throwaway identity).
const PASSPHRASE: &[u8] = b"encrypto bench passphrase";

pub(crate) struct IdleFigures {
    pub(crate) rss_mib: f64,
    pub(crate) hwm_mib: f64,
}

/// A data directory made as `encrypto init` makes one, a node on it in a child process
/// (`--idle-node`), connected to a node here, idle for [`IDLE`]: its RSS.
pub(crate) async fn idle_rss(args: &Args) -> Result<IdleFigures> {
    let until = tokio::time::Instant::now() + args.deadline;
    let step = || until.min(tokio::time::Instant::now() + SETUP_STEP);
    let tmp = tempdir(args, "encrypto-bench-idle-")?;
    let dir = tmp.path().join("daemon");
    let init = dir.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        DataDir::open(&init)?.create_identity(
            "idle daemon",
            PASSPHRASE,
            RsaBits::default(),
            KdfParams::RECOMMENDED,
            now_ms(),
            &mut rand::rng(),
        )?;
        Ok(())
    })
    .await??;

    let mut child = Child::spawn(&["--idle-node".into(), dir.into_os_string()])?;
    let ready = child.line(step(), "the idle node to listen").await?;
    let mut parts = ready.split_whitespace().skip(1);
    let addr: encrypto_node::Multiaddr = parts.next().context("no address")?.parse()?;
    let peer: PeerId = parts.next().context("no peer id")?.parse()?;

    let a = Node::from(start_node(tmp.path().join("peer"), "peer", true).await?);
    let result = async {
        timeout_at(
            step(),
            a.handle
                .add_peer(encrypto_node::addr_with_peer(&addr, peer)),
        )
        .await
        .map_err(|_| anyhow!("adding the idle node timed out"))??;
        let connected = child
            .line(step(), "the idle node to pin its peer's profile")
            .await?;
        if !connected.starts_with("connected ") {
            bail!("the idle node said {connected:?}");
        }
        eprintln!("  connected; idle for {} s", IDLE.as_secs());
        let idle_until = tokio::time::Instant::now() + IDLE;
        if idle_until > until {
            bail!("the deadline comes before the idle time is over");
        }
        tokio::time::sleep_until(idle_until).await;
        let status = format!("/proc/{}/status", child.pid());
        let figures = IdleFigures {
            rss_mib: status_mib(&status, "VmRSS:"),
            hwm_mib: status_mib(&status, "VmHWM:"),
        };
        if figures.rss_mib.is_nan() {
            bail!("cannot read the idle node's {status}");
        }
        Ok(figures)
    }
    .await;
    let finished = child.finish(step()).await;
    let _ = tokio::time::timeout(SETUP_STEP, a.handle.shutdown()).await;
    let _ = tokio::time::timeout(SETUP_STEP, a.task).await;
    let figures = result?;
    finished.context("stopping the idle node")?;
    Ok(figures)
}

/// The idle node (`bench --idle-node DIR`): unlocks the data directory as the daemon does,
/// starts the node, prints `ready ADDR PEER_ID`, then `connected PEER_ID` once a peer's profile
/// is pinned, and runs until its stdin closes.
pub(crate) async fn idle_node(dir: PathBuf) -> Result<()> {
    let until = tokio::time::Instant::now() + Duration::from_secs(3600);
    let data = DataDir::open_existing(&dir)?;
    let contents = tokio::task::spawn_blocking(move || data.unlock(PASSPHRASE)).await??;
    let mut node = launch(
        contents.identity,
        &contents.name,
        contents.created_ms,
        contents.storage_key,
        loopback_config(dir),
    )?;
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        // A line, or the end of stdin (the parent closed it or exited): stop.
        let _ = std::io::stdin().read_line(&mut String::new());
        let _ = stop_tx.send(());
    });
    let addr = node.addr.clone();
    println!("ready {addr} {}", node.handle.peer_id());
    let pinned = wait_event(
        &mut node.events,
        left(until),
        "a peer's profile",
        |e| match e {
            NodeEvent::ProfileVerified { peer, .. } => Some(*peer),
            _ => None,
        },
    );
    let stopped = tokio::select! {
        peer = pinned => {
            println!("connected {}", peer?);
            false
        }
        _ = &mut stop => true,
    };
    // Its events are no longer read: dropped, so that they do not pile up while it idles.
    let node = Node::from(node);
    if !stopped {
        let _ = stop.await;
    }
    node.handle.shutdown().await;
    let _ = tokio::time::timeout(SETUP_STEP, node.task).await;
    Ok(())
}
