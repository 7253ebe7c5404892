//! The report figures: DHT name lookup over 30 nodes, idle daemon RSS, history open with
//! 1,000,000 messages (what each measures: the benchmark's module doc).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use encrypto_crypto::envelope::{self, OutboundSession};
use encrypto_crypto::keystore::KdfParams;
use encrypto_crypto::{Cipher, Identity, MessageId, PeerId, RsaBits, StorageKey};
use encrypto_node::DataDir;
use encrypto_node::store::{Body, Direction, Status, Store, StoredMessage};
use encrypto_node::{NodeEvent, NodeHandle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::timeout_at;

use super::{
    Args, Report, Running, SETUP_STEP, bench_text, launch, local_config, ms, percentile,
    start_node, status_mib, wait_event,
};

/// Nodes in the DHT network.
pub(super) const DHT_NODES: usize = 30;
/// Nodes that look names up (1, 4, 7, …), and how many names each looks up.
const DHT_SEARCHERS: usize = 10;
const DHT_LOOKUPS_EACH: usize = 8;
/// The longest the DHT may take to settle once every node is up.
const DHT_SETTLE: Duration = Duration::from_secs(120);
/// How long the network is left alone once every name is found, before the lookups: in the
/// first seconds after that, lookups took 0.5 to 0.9 s (whichever node searched first), after
/// 10 s 20 to 40 ms; the network is still forming then (cause not pinned down).
const DHT_QUIET: Duration = Duration::from_secs(10);

/// How long the idle node is left alone once connected, before its RSS is read.
const IDLE: Duration = Duration::from_secs(10);
/// The idle node's keystore passphrase (a throwaway identity).
const PASSPHRASE: &[u8] = b"encrypto bench passphrase";

/// The page of history the window loads when a chat opens (the GUI's `HISTORY_LIMIT`).
const HISTORY_PAGE: usize = 500;
/// Timed reopens of the filled store after the first open, each in a fresh process.
const HISTORY_REOPENS: usize = 3;
/// Messages written per batch while filling.
const FILL_BATCH: usize = 1_000;
/// The filled store's storage key (hex) and its chat's peer, for the processes that open it.
const KEY_FILE: &str = "bench-store-key";

/// Measures the three report figures into `report`; a failed one does not stop the others.
pub(super) async fn measure(args: &Args, report: &mut Report) {
    eprintln!("report: DHT name lookup over {DHT_NODES} nodes");
    match dht(args).await {
        Ok(d) => {
            report.row(
                format!("DHT name lookup p50 / p99, {DHT_NODES} nodes"),
                format!(
                    "{} / {}",
                    ms(percentile(&d.times, 0.50)),
                    ms(percentile(&d.times, 0.99))
                ),
                "p50 < 300 ms",
            );
            report.row(
                "  lookups / failed (name owner not in the answer)",
                format!("{} / {}", d.times.len(), d.failed),
                "",
            );
            report.row(
                "  max lookup; nodes up in; DHT settled in (+ quiet)",
                format!(
                    "{}; {:.1} s; {:.1} s (+ {} s)",
                    ms(d.times.last().copied().unwrap_or_default()),
                    d.started_in.as_secs_f64(),
                    d.settled_in.as_secs_f64(),
                    DHT_QUIET.as_secs()
                ),
                "",
            );
        }
        Err(e) => report.fail(format!("DHT name lookup, {DHT_NODES} nodes"), &e),
    }

    eprintln!("report: idle daemon RSS");
    match idle_rss(args).await {
        Ok(idle) => {
            report.row(
                format!(
                    "idle daemon RSS (VmRSS after {} s idle, 1 peer)",
                    IDLE.as_secs()
                ),
                format!(
                    "{:.1} MiB ({:.1} MB)",
                    idle.rss_mib,
                    idle.rss_mib * 1.048_576
                ),
                "< 40 MB",
            );
            report.row(
                "  same node, peak since start (VmHWM)",
                format!("{:.1} MiB", idle.hwm_mib),
                "",
            );
        }
        Err(e) => report.fail("idle daemon RSS", &e),
    }

    let n = args.history_messages;
    eprintln!("report: history open, {} messages", grouped(n));
    match history(args).await {
        Ok(h) => {
            let total = |(open, page): &(Duration, Duration)| *open + *page;
            let mut reopens: Vec<Duration> = h.reopens.iter().map(total).collect();
            reopens.sort();
            let median = reopens[reopens.len() / 2];
            let (open, page) = h
                .reopens
                .iter()
                .find(|run| total(run) == median)
                .copied()
                .unwrap_or_default();
            report.row(
                format!("history open, {} messages", grouped(n)),
                format!("{} (median of {})", ms(median), reopens.len()),
                "< 1 s",
            );
            report.row(
                format!("  of which Store::open / newest {HISTORY_PAGE}"),
                format!("{} / {}", ms(open), ms(page)),
                "",
            );
            report.row(
                "  each reopen (open + page)",
                h.reopens
                    .iter()
                    .map(|run| ms(total(run)))
                    .collect::<Vec<_>>()
                    .join(", "),
                "",
            );
            report.row(
                "  first open after the fill (sled replays its log)",
                format!(
                    "{} (open {} + page {})",
                    ms(total(&h.first)),
                    ms(h.first.0),
                    ms(h.first.1)
                ),
                "< 1 s",
            );
            report.row(
                format!("  filling the store, {} messages", grouped(n)),
                format!(
                    "{:.0} msgs/s ({:.1} s, {:.0} MB on disk)",
                    n as f64 / h.fill.as_secs_f64(),
                    h.fill.as_secs_f64(),
                    h.disk_bytes as f64 / 1e6
                ),
                "",
            );
        }
        Err(e) => report.fail(format!("history open, {} messages", grouped(n)), &e),
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn tempdir(args: &Args, prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&args.dir)
        .with_context(|| format!("creating a temporary directory in {}", args.dir.display()))
}

// ----- child processes ----------------------------------------------------------------------

/// A child process of this program in one of its hidden roles, its stdout read line by line.
/// Dropping it kills it if it still runs.
struct Child {
    process: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Child {
    fn spawn(args: &[OsString]) -> Result<Child> {
        use std::io::BufRead;
        let mut process = std::process::Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a child process")?;
        let stdout = process.stdout.take().context("no stdout from the child")?;
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Child { process, lines })
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The next line it prints.
    async fn line(&mut self, until: tokio::time::Instant, what: &str) -> Result<String> {
        timeout_at(until, self.lines.recv())
            .await
            .map_err(|_| anyhow!("timed out waiting for {what}"))?
            .with_context(|| format!("the child process exited before {what}"))
    }

    /// Closes its stdin (an idle node's cue to stop) and waits until it exits, successfully.
    async fn finish(mut self, until: tokio::time::Instant) -> Result<()> {
        drop(self.process.stdin.take());
        loop {
            if let Some(status) = self.process.try_wait()? {
                if !status.success() {
                    bail!("the child process failed: {status}");
                }
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                bail!("the child process did not exit in time");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.process.try_wait(), Ok(None)) {
            let _ = self.process.kill();
        }
        let _ = self.process.wait();
    }
}

// ----- DHT name lookup ------------------------------------------------------------------------

struct DhtFigures {
    /// Every lookup's time, found or not, sorted.
    times: Vec<Duration>,
    /// Lookups whose answer did not include the node looked up.
    failed: usize,
    started_in: Duration,
    settled_in: Duration,
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

async fn dht(args: &Args) -> Result<DhtFigures> {
    let until = tokio::time::Instant::now() + args.deadline;
    let tmp = tempdir(args, "encrypto-bench-dht-")?;
    let mut nodes: Vec<Running> = Vec::with_capacity(DHT_NODES);
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
    nodes: &mut Vec<Running>,
    until: tokio::time::Instant,
) -> Result<DhtFigures> {
    let started = Instant::now();
    let mut bootstrap = None;
    for i in 0..DHT_NODES {
        let step = until.min(tokio::time::Instant::now() + SETUP_STEP);
        // RSA-2048 from a seeded RNG: key generation is the slow part of starting a node.
        let identity = tokio::task::spawn_blocking(move || {
            Identity::generate(&mut StdRng::seed_from_u64(6000 + i as u64), RsaBits::B2048)
        })
        .await??;
        let mut config = local_config(tmp.path().join(format!("n{i}")))?;
        config.bootstrap = bootstrap.iter().cloned().collect();
        let name = dht_name(i);
        let (node, _events) = launch(
            identity,
            &name,
            1,
            StorageKey::generate(&mut rand::rng()),
            config,
            step,
        )
        .await?;
        if bootstrap.is_none() {
            let addr = timeout_at(step, node.handle.listen_addrs())
                .await
                .map_err(|_| anyhow!("timed out asking the first node for its addresses"))??
                .into_iter()
                .next()
                .context("the first node listens nowhere")?;
            bootstrap = Some(encrypto_node::addr_with_peer(&addr, node.handle.peer_id()));
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

// ----- idle daemon RSS ------------------------------------------------------------------------

struct IdleFigures {
    rss_mib: f64,
    hwm_mib: f64,
}

/// A data directory made as `encrypto init` makes one, a node on it in a child process
/// (`--idle-node`), connected to a node here, idle for [`IDLE`]: its RSS.
async fn idle_rss(args: &Args) -> Result<IdleFigures> {
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

    let (a, _ea) = start_node(tmp.path().join("peer"), "peer", true, step()).await?;
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
pub(super) async fn idle_node(dir: PathBuf) -> Result<()> {
    let until = tokio::time::Instant::now() + Duration::from_secs(3600);
    let data = DataDir::open_existing(&dir)?;
    let contents = tokio::task::spawn_blocking(move || data.unlock(PASSPHRASE)).await??;
    let (node, mut events) = launch(
        contents.identity,
        &contents.name,
        contents.created_ms,
        contents.storage_key,
        local_config(dir)?,
        until,
    )
    .await?;
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        // A line, or the end of stdin (the parent closed it or exited): stop.
        let _ = std::io::stdin().read_line(&mut String::new());
        let _ = stop_tx.send(());
    });
    let addr = timeout_at(until, node.handle.listen_addrs())
        .await??
        .into_iter()
        .next()
        .context("the idle node listens nowhere")?;
    println!("ready {addr} {}", node.handle.peer_id());
    let pinned = wait_event(&mut events, until, "a peer's profile", |e| match e {
        NodeEvent::ProfileVerified { peer, .. } => Some(*peer),
        _ => None,
    });
    let stopped = tokio::select! {
        peer = pinned => {
            println!("connected {}", peer?);
            false
        }
        _ = &mut stop => true,
    };
    drop(events);
    if !stopped {
        let _ = stop.await;
    }
    node.handle.shutdown().await;
    let _ = tokio::time::timeout(SETUP_STEP, node.task).await;
    Ok(())
}

// ----- history open ---------------------------------------------------------------------------

struct HistoryFigures {
    fill: Duration,
    disk_bytes: u64,
    /// The first open's `Store::open` and newest-page times. sled 0.34 writes its snapshot
    /// only when it opens a database, replaying everything logged since the last one: this
    /// open replays the whole fill.
    first: (Duration, Duration),
    /// The same for each reopen after it.
    reopens: Vec<(Duration, Duration)>,
}

/// Fills a store in a child process (`--history-fill`), then opens it once and
/// [`HISTORY_REOPENS`] more times, each in a fresh child process (`--history-open`).
async fn history(args: &Args) -> Result<HistoryFigures> {
    let until = tokio::time::Instant::now() + args.deadline;
    let n = args.history_messages;
    let tmp = tempdir(args, "encrypto-bench-history-")?;
    let dir = tmp.path().as_os_str().to_owned();

    let mut fill = Child::spawn(&[
        "--history-fill".into(),
        dir.clone(),
        "--history-messages".into(),
        n.to_string().into(),
    ])?;
    let filled = fill.line(until, "the store to be filled").await?;
    fill.finish(until).await.context("filling the store")?;
    let mut parts = filled.split_whitespace().skip(1);
    let fill_secs: f64 = parts.next().context("no fill time")?.parse()?;
    let newest = parts.next().context("no newest id")?.to_owned();
    let disk_bytes = dir_size(&tmp.path().join("store"))?;

    let mut opens = Vec::with_capacity(1 + HISTORY_REOPENS);
    for run in 0..=HISTORY_REOPENS {
        let mut open = Child::spawn(&["--history-open".into(), dir.clone()])?;
        let line = open.line(until, "the store to open").await?;
        open.finish(until).await.context("opening the store")?;
        let mut parts = line.split_whitespace().skip(1);
        let open_secs: f64 = parts.next().context("no open time")?.parse()?;
        let page_secs: f64 = parts.next().context("no page time")?.parse()?;
        let count: usize = parts.next().context("no count")?.parse()?;
        let last = parts.next().unwrap_or_default();
        if count != HISTORY_PAGE.min(n) || last != newest {
            bail!(
                "open {run}: the newest page has {count} messages ending with {last:?}, not \
                 {} ending with {newest}",
                HISTORY_PAGE.min(n)
            );
        }
        eprintln!(
            "  {}: Store::open {:.1} ms, newest {HISTORY_PAGE} {:.1} ms",
            if run == 0 {
                "first open".to_owned()
            } else {
                format!("reopen {run}")
            },
            open_secs * 1e3,
            page_secs * 1e3
        );
        opens.push((
            Duration::from_secs_f64(open_secs),
            Duration::from_secs_f64(page_secs),
        ));
    }
    let first = opens.remove(0);
    Ok(HistoryFigures {
        fill: Duration::from_secs_f64(fill_secs),
        disk_bytes,
        first,
        reopens: opens,
    })
}

/// Bytes in the files under `dir`.
fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// `bench --history-fill DIR --history-messages N`: a store in `DIR/store` with `n` messages in
/// one chat, every other one outgoing (delivered) or incoming, each a benchmark text with the
/// bytes of a real `aes` envelope of such a text (as the node keeps the envelope it sent or
/// received). Prints progress to stderr and `filled SECS NEWEST_ID` when done; the key and the
/// chat's peer go into `DIR/bench-store-key`.
pub(super) fn history_fill(dir: &Path, n: usize) -> Result<()> {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    let identity = Identity::generate(&mut rng, RsaBits::B2048)?;
    let peer = identity.peer_id();
    let now = now_ms();
    let mut session = OutboundSession::new(&mut rng, identity.public(), now)?;
    session.mark_acknowledged();
    let sealed = envelope::seal_aes(
        &identity,
        identity.public(),
        &mut session,
        MessageId::random(&mut rng),
        now,
        bench_text(0).as_bytes(),
        &mut rng,
    )?
    .to_bytes();
    std::fs::write(dir.join(KEY_FILE), format!("{} {peer}\n", hex::encode(key)))?;
    eprintln!(
        "  filling a store with {} messages ({} bytes of text and {} of envelope each)",
        grouped(n),
        bench_text(0).len(),
        sealed.len()
    );

    let store = Store::open(&dir.join("store"), StorageKey::from_bytes(key))?;
    let first_ms = now.saturating_sub(n as u64 * 1000);
    let started = Instant::now();
    let mut newest = MessageId([0; 16]);
    let mut incoming = Vec::with_capacity(FILL_BATCH);
    let mut written = 0;
    while written < n {
        let end = (written + FILL_BATCH).min(n);
        incoming.clear();
        for i in written..end {
            let out = i % 2 == 0;
            let message = StoredMessage {
                id: MessageId::random(&mut rng),
                peer,
                direction: if out { Direction::Out } else { Direction::In },
                timestamp_ms: first_ms + i as u64 * 1000,
                cipher: Cipher::Aes,
                body: Body::Text(bench_text(i)),
                status: if out {
                    Status::Delivered
                } else {
                    Status::Received
                },
                envelope: Some(sealed.clone()),
            };
            newest = message.id;
            if out {
                store.put_message(&message)?;
            } else {
                incoming.push(message);
            }
        }
        if store.write_incoming_many(&incoming)?.contains(&false) {
            bail!("a new incoming message was taken for a repeat");
        }
        written = end;
        if written % 100_000 == 0 || written == n {
            store.flush()?;
            eprintln!(
                "  {} of {} written, {:.0} msgs/s",
                grouped(written),
                grouped(n),
                written as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    store.flush()?;
    let fill = started.elapsed();
    let count = store.message_count(&peer)?;
    if count != n {
        bail!("the store holds {count} messages, not {n}");
    }
    drop(store);
    println!("filled {} {}", fill.as_secs_f64(), hex::encode(newest.0));
    Ok(())
}

/// `bench --history-open DIR`: opens the store filled by `--history-fill` and reads its chat's
/// newest page; prints `opened OPEN_SECS PAGE_SECS COUNT NEWEST_ID`.
pub(super) fn history_open(dir: &Path) -> Result<()> {
    let text = std::fs::read_to_string(dir.join(KEY_FILE))?;
    let (key, peer) = text
        .trim()
        .split_once(' ')
        .context("a malformed key file")?;
    let key: [u8; 32] = hex::decode(key)?
        .try_into()
        .map_err(|_| anyhow!("the key is not 32 bytes"))?;
    let peer: PeerId = peer.parse()?;
    let key = StorageKey::from_bytes(key);
    let path = dir.join("store");

    let started = Instant::now();
    let store = Store::open(&path, key)?;
    let opened = started.elapsed();
    let page = store.history(&peer, Some(HISTORY_PAGE))?;
    let total = started.elapsed();

    let newest = page
        .last()
        .map_or_else(String::new, |m| hex::encode(m.id.0));
    println!(
        "opened {} {} {} {newest}",
        opened.as_secs_f64(),
        (total - opened).as_secs_f64(),
        page.len()
    );
    // A clean close (its generation record and flush) is not timed.
    drop(store);
    Ok(())
}
