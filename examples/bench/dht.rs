//! The DHT name lookup figure: 30 nodes in this process, each bootstrapped through the first
//! and announcing its own name; once the DHT has settled, 10 nodes each look up 8 names.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use encrypto_crypto::{Identity, PeerId, RsaBits, StorageKey};
use encrypto_node::NodeHandle;
use encrypto_node::test_support::loopback_config;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::timeout_at;

use crate::Args;
use crate::nodes::{Node, SETUP_STEP, launch};
use crate::report::ms;
use crate::report_figures::tempdir;
/// Nodes in the DHT network.
pub(crate) const DHT_NODES: usize = 30;
/// Nodes that look names up (1, 4, 7, …), and how many names each looks up.
const DHT_SEARCHERS: usize = 10;
const DHT_LOOKUPS_EACH: usize = 8;
/// The longest the DHT may take to settle once every node is up.
const DHT_SETTLE: Duration = Duration::from_secs(120);
/// How long the network is left alone once every name is found, before the lookups: in the
/// first seconds after that, lookups took 0.5 to 0.9 s (whichever node searched first), after
/// 10 s 20 to 40 ms; the network is still forming then (cause not pinned down).
pub(crate) const DHT_QUIET: Duration = Duration::from_secs(10);

pub(crate) struct DhtFigures {
    /// Every lookup's time, found or not, sorted.
    pub(crate) times: Vec<Duration>,
    /// Lookups whose answer did not include the node looked up.
    pub(crate) failed: usize,
    pub(crate) started_in: Duration,
    pub(crate) settled_in: Duration,
}

fn dht_name(i: usize) -> String {
    format!("bench node {i}")
}

/// Whether a DHT search from `searcher` for node `target`'s name finds that node.
async fn finds(searcher: &NodeHandle, target: usize, id: PeerId) -> Result<bool> {
    let name = dht_name(target);
    let found = searcher.search_dht(&name).await?;
    Ok(found.iter().any(|e| e.peer_id == id && e.name == name))
}

pub(crate) async fn dht(args: &Args) -> Result<DhtFigures> {
    let until = tokio::time::Instant::now() + args.deadline;
    let tmp = tempdir(args, "encrypto-bench-dht-")?;
    let mut nodes: Vec<Node> = Vec::with_capacity(DHT_NODES);
    let result = dht_run(&tmp, &mut nodes, until).await;
    let handles: Vec<NodeHandle> = nodes.iter().map(|n| n.handle.clone()).collect();
    futures::future::join_all(
        handles
            .iter()
            .map(|h| tokio::time::timeout(SETUP_STEP, h.shutdown())),
    )
    .await;
    for n in nodes {
        let _ = tokio::time::timeout(SETUP_STEP, n.task).await;
    }
    result
}

async fn dht_run(
    tmp: &tempfile::TempDir,
    nodes: &mut Vec<Node>,
    until: tokio::time::Instant,
) -> Result<DhtFigures> {
    let started = Instant::now();
    let mut bootstrap = None;
    for i in 0..DHT_NODES {
        // RSA-2048 from a seeded RNG: key generation is the slow part of starting a node.
        let identity = tokio::task::spawn_blocking(move || {
            Identity::generate(&mut StdRng::seed_from_u64(6000 + i as u64), RsaBits::B2048)
        })
        .await??;
        let mut config = loopback_config(tmp.path().join(format!("n{i}")));
        config.bootstrap = bootstrap.iter().cloned().collect();
        let name = dht_name(i);
        let node = Node::from(launch(
            identity,
            &name,
            1,
            StorageKey::generate(&mut rand::rng()),
            config,
        )?);
        if bootstrap.is_none() {
            bootstrap = Some(node.dialable());
        }
        nodes.push(node);
    }
    let started_in = started.elapsed();
    let handles: Vec<NodeHandle> = nodes.iter().map(|n| n.handle.clone()).collect();
    let ids: Vec<PeerId> = handles.iter().map(NodeHandle::peer_id).collect();

    // Settled: the first node finds every name (these lookups are not counted).
    eprintln!(
        "  {DHT_NODES} nodes up in {:.1} s; waiting for the DHT to settle",
        started_in.as_secs_f64()
    );
    let settling = Instant::now();
    let settle_until = until.min(tokio::time::Instant::now() + DHT_SETTLE);
    loop {
        let round =
            futures::future::join_all((0..DHT_NODES).map(|t| finds(&handles[0], t, ids[t])));
        let found = timeout_at(settle_until, round)
            .await
            .map_err(|_| anyhow!("the DHT did not settle in time (a search ran past it)"))?;
        let missing = found.iter().filter(|f| !matches!(f, Ok(true))).count();
        if missing == 0 {
            break;
        }
        if tokio::time::Instant::now() >= settle_until {
            bail!(
                "the DHT did not settle in {} s: the first node still misses {missing} of \
                 {DHT_NODES} names",
                settling.elapsed().as_secs()
            );
        }
        eprintln!("  the first node misses {missing} of {DHT_NODES} names");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let settled_in = settling.elapsed();
    eprintln!(
        "  settled in {:.1} s; {} lookups after {} s more",
        settled_in.as_secs_f64(),
        DHT_SEARCHERS * DHT_LOOKUPS_EACH,
        DHT_QUIET.as_secs()
    );
    tokio::time::sleep_until(until.min(tokio::time::Instant::now() + DHT_QUIET)).await;

    // Searchers 1, 4, …, 28 each look up names spread around the ring, one at a time.
    let mut times = Vec::with_capacity(DHT_SEARCHERS * DHT_LOOKUPS_EACH);
    let mut slowest = Vec::with_capacity(times.capacity());
    let mut failed = 0;
    for k in 0..DHT_SEARCHERS {
        let searcher = 1 + 3 * k;
        for j in 0..DHT_LOOKUPS_EACH {
            let target = (searcher + 1 + j * (DHT_NODES - 1) / DHT_LOOKUPS_EACH) % DHT_NODES;
            let t = Instant::now();
            let found = timeout_at(until, finds(&handles[searcher], target, ids[target]))
                .await
                .map_err(|_| anyhow!("deadline reached in a DHT lookup"))?;
            let took = t.elapsed();
            times.push(took);
            slowest.push((took, searcher, target));
            match found {
                Ok(true) => {}
                Ok(false) => failed += 1,
                Err(e) => {
                    eprintln!("  node {searcher} looking up node {target}: {e:#}");
                    failed += 1;
                }
            }
        }
    }
    times.sort();
    slowest.sort();
    let tail: Vec<String> = slowest
        .iter()
        .rev()
        .take(5)
        .map(|(took, s, t)| format!("{} ({s} -> {t})", ms(*took)))
        .collect();
    eprintln!("  slowest lookups (searcher -> owner): {}", tail.join(", "));
    Ok(DhtFigures {
        times,
        failed,
        started_in,
        settled_in,
    })
}
