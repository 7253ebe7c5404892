//! Encrypto's benchmark: `cargo run --release --example bench [-- FLAGS]`.
//!
//! Starts two real nodes in this process (libp2p over TCP on 127.0.0.1, noise and yamux, mDNS
//! off, sled stores in temporary directories), connects them, waits until each has pinned the
//! other's profile, and measures messaging A→B with 200-byte texts:
//!
//! - **pipelined**: `send_text` called back to back (each call returns once its message is
//!   durable in the outbox); msgs/s from the first call to the last `Delivered` event, so every
//!   message counted is durable on both sides and acknowledged end to end. Once with one
//!   caller (each call awaited before the next, so every message waits for its own flush) and
//!   once with `--callers` concurrent callers (64 by default: what the node's group commit can
//!   carry when callers do not serialise on durability, as a daemon serving many requests);
//! - **unpipelined**: one message at a time, latency from calling `send_text` to its
//!   `Delivered` event: p50, p99 and max.
//!
//! Both for cipher `aes` and, after a cipher switch confirmed by the peer, for `rsa` (smaller
//! counts: each `rsa` message costs an RSA-OAEP encryption and decryption). A few unpipelined
//! warm-up messages per cipher are not counted (the first `aes` message sets up the session).
//!
//! After the `aes` figures, what an unpipelined message cannot go below on this machine, each
//! over 2,000 tries after 200 not counted: a plain TCP round trip on 127.0.0.1 (a 300-byte
//! request, a 150-byte answer), the same round trip over a bare libp2p swarm pair with the
//! nodes' transport (TCP, noise, yamux, one request-response exchange per message), and one
//! small record written to a store and flushed (the disk write a durable message waits for).
//! A message waits for one libp2p round trip and two flushes (the sender's outbox, the
//! receiver's history), plus its signing and checking (`cargo bench -p encrypto-crypto
//! --bench crypto -- message`).
//!
//! Then files (`--file-mib`, 256 by default): a plain TCP copy and two raw libp2p copies (the
//! nodes' transport, TCP + noise + yamux, with nothing on top: all the bytes on one stream,
//! and 4 MiB requests with 4 in flight, each on a stream of its own) of that many bytes, and a file
//! of that size from node A to node B, B running in a child process of its own (this program
//! with `--file-receiver`) so that its peak RSS is measured alone. The transfer rate counts
//! from B's offer to the file in place, hash checked; the end-to-end rate also counts the
//! sender's sealing pass.
//!
//! Then the other figures of the benchmark report (`--report-only` runs only these, `--no-report`
//! skips them):
//!
//! - **DHT name lookup** over 30 nodes in this process (TCP on 127.0.0.1, mDNS off, RSA-2048
//!   identities from a seeded RNG, since RSA key generation is slow; real sled stores), each
//!   bootstrapped through the first and announcing its own name. Once the DHT has settled
//!   (the first node finds every name, within a bounded wait, and then 10 s more pass: lookups
//!   made in the first seconds after every name is found are much slower, see `DHT_QUIET`),
//!   10 nodes each look up 8 other nodes' names, one lookup at a time, with `search_dht` (the
//!   DHT only: a provider query for the name, then the providers' signed profile records): p50
//!   and p99 over all 80 lookups, each timed from the call to its answer, and how many answers
//!   lacked the node looked up;
//! - **idle daemon RSS**: a node in a child process of its own (this program with
//!   `--idle-node`), with a real data directory made as `encrypto init` makes one (keystore
//!   sealed with the recommended Argon2id cost, RSA-3072 identity) and unlocked as `encrypto
//!   daemon` unlocks it, the default node config but for TCP on 127.0.0.1 port 0 and mDNS off,
//!   connected to one peer (a node in this process; both sides have pinned the other's
//!   profile), then left idle for 10 s: its `VmRSS` (current resident set) read from
//!   `/proc/PID/status`, in MiB (and its `VmHWM`, the peak since it started, for comparison).
//!   Not counted: the daemon's control socket, which this node has not;
//! - **history open**: a store filled with `--history-messages` (1,000,000 by default) messages
//!   in one chat (through the node's store API, `Store::put_message` for outgoing messages and
//!   `Store::write_incoming_many` in batches for incoming ones, half and half, each a 200-byte
//!   text with the bytes of a real `aes` envelope of such a text), written by a child process
//!   (`--history-fill`), with the fill rate; then a fresh child process (`--history-open`)
//!   times `Store::open` plus reading the chat's newest page as the window loads it
//!   (`Store::history(peer, Some(500))`, the GUI's `HISTORY_LIMIT`), four times. The figure is
//!   the median of the last three (reopens); the first is reported beside it: sled 0.34 writes
//!   its snapshot only when it opens a database, so the first open replays everything logged
//!   since the last open, here the whole fill. Each open is a process of its own, so no sled
//!   state or file lock of an earlier one is left; the OS page cache is warm (the store was
//!   just written, and nothing evicts it).
//!
//! The receiver's inbound rate limit (2,000 envelopes/s per peer, burst 4,000, by default) is
//! raised for the run, so the figures show what the pipeline carries rather than the
//! anti-abuse policy; `--default-rate-limit` keeps the default.
//!
//! `Delivered` events are drained by a dedicated thread (the node's broadcast channel holds
//! 8,192 events, one batch ack completes up to 64 messages at once, and a collector scheduled
//! on the same two cores as the nodes could fall behind); if it lags anyway the figure is
//! reported as failed rather than guessed.
//!
//! Every wait is bounded: a deadline (`--deadline-secs`, 600 by default, for each part: messages,
//! files, and each report figure) and a stall bound (no delivery for 45 s); a child process
//! that overruns is killed. When either is hit, or anything fails, it prints the figures
//! it has and exits non-zero. Progress goes to stderr, the table to stdout.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use encrypto_crypto::{Cipher, Identity, MessageId, PeerId, RsaBits, StorageKey};
use encrypto_node::{NodeConfig, NodeEvent, NodeHandle};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout_at;

// Not examples/report_figures.rs: cargo would take that for an example of its own.
#[path = "bench/report_figures.rs"]
mod report_figures;

/// Bytes per benchmark text.
const TEXT_LEN: usize = 200;
/// Unpipelined messages sent before each cipher's measurements and not counted.
const WARM_UP: usize = 10;
/// The longest the pipeline may go without a single delivery before the run is called stalled
/// (longer than the node's 30 s request timeout plus its first retry).
const STALL: Duration = Duration::from_secs(45);
/// The longest one setup step (start, connect, cipher switch) may take.
const SETUP_STEP: Duration = Duration::from_secs(60);

const USAGE: &str = "\
usage: cargo run --release --example bench -- [FLAGS]

  --messages N              aes messages, pipelined (default 20000)
  --latency-messages N      aes messages, one at a time (default 1000)
  --rsa-messages N          rsa messages, pipelined (default 500)
  --rsa-latency-messages N  rsa messages, one at a time (default 100)
  --callers K               also run the pipelined figures with K concurrent send_text
                            callers (default 64; 1 runs only the sequential caller)
  --deadline-secs S         give up after S seconds in all (default 600)
  --dir PATH                where the temporary data directories go (default: the temp dir)
  --default-rate-limit      keep the receiver's default inbound rate limit
  --file-mib N              file benchmark size in MiB (default 256)
  --files-only              only the file figures
  --no-files                no file figures
  --report-only             only the report figures: DHT name lookup, idle daemon RSS,
                            history open
  --no-report               no report figures
  --history-messages N      messages in the history-open store (default 1000000)";

struct Args {
    messages: usize,
    latency_messages: usize,
    rsa_messages: usize,
    rsa_latency_messages: usize,
    callers: usize,
    deadline: Duration,
    dir: PathBuf,
    default_rate_limit: bool,
    file_mib: u64,
    files: bool,
    messages_too: bool,
    /// The report figures: DHT name lookup, idle daemon RSS, history open.
    report: bool,
    history_messages: usize,
    /// Internal: run as the file benchmark's receiving node, with its data here.
    file_receiver: Option<PathBuf>,
    /// Internal: run as the idle node, with its data directory here.
    idle_node: Option<PathBuf>,
    /// Internal: fill the history store here with `history_messages` messages.
    history_fill: Option<PathBuf>,
    /// Internal: time opening the history store here and reading its newest page.
    history_open: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    fn number(flag: &str, value: Option<String>) -> Result<u64> {
        let value = value.with_context(|| format!("{flag} needs a number"))?;
        value
            .parse()
            .with_context(|| format!("{flag}: {value:?} is not a whole number"))
    }
    fn count(flag: &str, value: Option<String>) -> Result<usize> {
        let n = usize::try_from(number(flag, value)?)?;
        if n == 0 {
            bail!("{flag} must be at least 1");
        }
        Ok(n)
    }
    let mut args = Args {
        messages: 20_000,
        latency_messages: 1_000,
        rsa_messages: 500,
        rsa_latency_messages: 100,
        callers: 64,
        deadline: Duration::from_secs(600),
        dir: std::env::temp_dir(),
        default_rate_limit: false,
        file_mib: 256,
        files: true,
        messages_too: true,
        report: true,
        history_messages: 1_000_000,
        file_receiver: None,
        idle_node: None,
        history_fill: None,
        history_open: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--messages" => args.messages = count(&flag, it.next())?,
            "--latency-messages" => args.latency_messages = count(&flag, it.next())?,
            "--rsa-messages" => args.rsa_messages = count(&flag, it.next())?,
            "--rsa-latency-messages" => args.rsa_latency_messages = count(&flag, it.next())?,
            "--callers" => args.callers = count(&flag, it.next())?,
            "--deadline-secs" => args.deadline = Duration::from_secs(number(&flag, it.next())?),
            "--dir" => args.dir = it.next().context("--dir needs a path")?.into(),
            "--default-rate-limit" => args.default_rate_limit = true,
            "--file-mib" => args.file_mib = count(&flag, it.next())? as u64,
            "--files-only" => {
                args.messages_too = false;
                args.report = false;
            }
            "--no-files" => args.files = false,
            "--report-only" => {
                args.messages_too = false;
                args.files = false;
            }
            "--no-report" => args.report = false,
            "--history-messages" => args.history_messages = count(&flag, it.next())?,
            "--file-receiver" => {
                args.file_receiver =
                    Some(it.next().context("--file-receiver needs a path")?.into());
            }
            "--idle-node" => {
                args.idle_node = Some(it.next().context("--idle-node needs a path")?.into());
            }
            "--history-fill" => {
                args.history_fill = Some(it.next().context("--history-fill needs a path")?.into());
            }
            "--history-open" => {
                args.history_open = Some(it.next().context("--history-open needs a path")?.into());
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other:?}\n{USAGE}"),
        }
    }
    Ok(args)
}

// ----- the table ----------------------------------------------------------------------------

struct Row {
    figure: String,
    value: String,
    goal: &'static str,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    failed: bool,
}

impl Report {
    fn row(&mut self, figure: impl Into<String>, value: impl Into<String>, goal: &'static str) {
        self.rows.push(Row {
            figure: figure.into(),
            value: value.into(),
            goal,
        });
    }

    fn fail(&mut self, figure: impl Into<String>, error: &anyhow::Error) {
        self.failed = true;
        self.row(figure, format!("FAILED: {error:#}"), "");
    }

    fn print(&self) {
        let width = self
            .rows
            .iter()
            .map(|r| r.figure.chars().count())
            .max()
            .unwrap_or(0);
        let value_width = self
            .rows
            .iter()
            .map(|r| r.value.chars().count())
            .max()
            .unwrap_or(0)
            .min(40);
        println!(
            "{:width$}  {:value_width$}  goal",
            "figure",
            "value",
            width = width,
            value_width = value_width
        );
        for r in &self.rows {
            println!(
                "{:width$}  {:value_width$}  {}",
                r.figure,
                r.value,
                r.goal,
                width = width,
                value_width = value_width
            );
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// The nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ----- the machine --------------------------------------------------------------------------

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The filesystem type `dir` lives on (the longest matching mount point in /proc/mounts).
fn filesystem_of(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    std::fs::read_to_string("/proc/mounts")
        .ok()
        .and_then(|mounts| {
            mounts
                .lines()
                .filter_map(|l| {
                    let mut fields = l.split_whitespace();
                    let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
                    dir.starts_with(point)
                        .then(|| (point.len(), kind.to_owned()))
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, kind)| kind)
        })
        .unwrap_or_else(|| "unknown filesystem".into())
}

fn print_machine(args: &Args) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
    println!("machine  {}, {cores} cores, Linux {kernel}", cpu_model());
    if let Some(rustc) = command_line("rustc", &["-V"]) {
        println!("rustc    {rustc} (the one on PATH)");
    }
    if let Some(commit) = command_line("git", &["rev-parse", "--short", "HEAD"]) {
        let dirty = command_line("git", &["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|s| !s.is_empty());
        let note = if dirty { " + uncommitted changes" } else { "" };
        println!("commit   {commit}{note}");
    }
    println!(
        "data     {} ({})",
        args.dir.display(),
        filesystem_of(&args.dir)
    );
    let limit = if args.default_rate_limit {
        "default receiver rate limit (2,000/s, burst 4,000)"
    } else {
        "receiver rate limit raised"
    };
    if args.messages_too || args.files {
        println!(
            "setup    two nodes in one process, TCP 127.0.0.1, mDNS off, RSA-{} identities, \
             {TEXT_LEN}-byte texts, {limit}",
            RsaBits::default().bits()
        );
    }
    if args.report {
        println!(
            "report   DHT: {} nodes in one process, RSA-2048 identities (seeded RNG); idle \
             daemon: a child process, RSA-{} identity, real data dir; history: {} messages, \
             each open in a fresh process",
            report_figures::DHT_NODES,
            RsaBits::default().bits(),
            args.history_messages
        );
    }
    println!();
}

// ----- delivery events ----------------------------------------------------------------------

/// Every `Delivered` event of node A, in order, stamped when the collector saw it.
#[derive(Default)]
struct Deliveries {
    log: Mutex<Vec<(MessageId, Instant)>>,
    lagged: AtomicU64,
}

impl Deliveries {
    fn log(&self) -> MutexGuard<'_, Vec<(MessageId, Instant)>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.log().len()
    }
}

/// Drains node A's events on its own thread; ends when the node and its handles are gone.
fn spawn_collector(
    mut events: broadcast::Receiver<NodeEvent>,
    deliveries: Arc<Deliveries>,
    wake: watch::Sender<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        loop {
            match events.blocking_recv() {
                Ok(NodeEvent::Delivered { id, .. }) => {
                    let at = Instant::now();
                    deliveries.log().push((id, at));
                    wake.send_replace(());
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    deliveries.lagged.fetch_add(n, Ordering::Relaxed);
                    wake.send_replace(());
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

async fn wait_event<T>(
    events: &mut broadcast::Receiver<NodeEvent>,
    until: tokio::time::Instant,
    what: &str,
    mut pick: impl FnMut(&NodeEvent) -> Option<T>,
) -> Result<T> {
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
                    bail!("the node stopped while waiting for {what}")
                }
            }
        }
    };
    timeout_at(until, wait)
        .await
        .map_err(|_| anyhow!("timed out waiting for {what}"))?
}

// ----- the two nodes ------------------------------------------------------------------------

struct Running {
    handle: NodeHandle,
    task: JoinHandle<()>,
}

struct Bench {
    a: Running,
    b: Running,
    pb: PeerId,
    deadline: tokio::time::Instant,
    deliveries: Arc<Deliveries>,
    wake: watch::Receiver<()>,
    collector: std::thread::JoinHandle<()>,
    // Dropped last: the stores live in it.
    _tmp: tempfile::TempDir,
}

async fn start_node(
    dir: PathBuf,
    name: &str,
    default_rate_limit: bool,
    until: tokio::time::Instant,
) -> Result<(Running, broadcast::Receiver<NodeEvent>)> {
    let identity =
        tokio::task::spawn_blocking(|| Identity::generate(&mut rand::rng(), RsaBits::default()))
            .await??;
    let mut config = local_config(dir)?;
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
        until,
    )
    .await
}

/// The default node config for data in `dir`, but for TCP on 127.0.0.1 (an ephemeral port)
/// only and mDNS off.
fn local_config(dir: PathBuf) -> Result<NodeConfig> {
    let mut config = NodeConfig::new(dir);
    config.swarm.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    config.swarm.mdns = false;
    Ok(config)
}

/// Starts a node and waits until it listens.
async fn launch(
    identity: Identity,
    name: &str,
    created_ms: u64,
    storage_key: StorageKey,
    config: NodeConfig,
    until: tokio::time::Instant,
) -> Result<(Running, broadcast::Receiver<NodeEvent>)> {
    let encrypto_node::Started {
        handle,
        events,
        task,
    } = encrypto_node::start(identity, name, created_ms, storage_key, config)
        .with_context(|| format!("starting node {name}"))?;
    // Wait until it listens, so it can be dialled.
    let mut listening = handle.subscribe();
    if timeout_at(until, handle.listen_addrs())
        .await
        .map_err(|_| anyhow!("timed out asking node {name} for its addresses"))??
        .is_empty()
    {
        wait_event(&mut listening, until, "a listen address", |e| {
            matches!(e, NodeEvent::Listening { .. }).then_some(())
        })
        .await?;
    }
    Ok((Running { handle, task }, events))
}

impl Bench {
    async fn start(args: &Args) -> Result<Bench> {
        let deadline = tokio::time::Instant::now() + args.deadline;
        let step = || deadline.min(tokio::time::Instant::now() + SETUP_STEP);
        let tmp = tempfile::Builder::new()
            .prefix("encrypto-bench-")
            .tempdir_in(&args.dir)
            .with_context(|| format!("creating a temporary directory in {}", args.dir.display()))?;
        let (a, mut ea) = start_node(tmp.path().join("a"), "alice", true, step()).await?;
        let (b, mut eb) =
            start_node(tmp.path().join("b"), "bob", args.default_rate_limit, step()).await?;
        let (pa, pb) = (a.handle.peer_id(), b.handle.peer_id());

        let addr = timeout_at(step(), b.handle.listen_addrs())
            .await
            .map_err(|_| anyhow!("timed out asking node B for its addresses"))??
            .into_iter()
            .next()
            .context("node B listens nowhere")?;
        a.handle.dial(addr).await?;
        wait_event(&mut ea, step(), "A to pin B's profile", |e| {
            matches!(e, NodeEvent::ProfileVerified { peer, .. } if *peer == pb).then_some(())
        })
        .await?;
        wait_event(&mut eb, step(), "B to pin A's profile", |e| {
            matches!(e, NodeEvent::ProfileVerified { peer, .. } if *peer == pa).then_some(())
        })
        .await?;

        let deliveries = Arc::new(Deliveries::default());
        let (wake_tx, wake) = watch::channel(());
        let collector = spawn_collector(a.handle.subscribe(), deliveries.clone(), wake_tx);
        Ok(Bench {
            a,
            b,
            pb,
            deadline,
            deliveries,
            wake,
            collector,
            _tmp: tmp,
        })
    }

    async fn send(&self, i: usize) -> Result<MessageId> {
        send_one(&self.a.handle, self.pb, i, self.deadline).await
    }

    /// Waits until every id in `ids` has a `Delivered` event logged at or after `cursor`;
    /// returns when the last of them was seen.
    async fn wait_delivered(&mut self, mut cursor: usize, ids: &[MessageId]) -> Result<Instant> {
        let mut left: HashSet<MessageId> = ids.iter().copied().collect();
        let mut last = Instant::now();
        let mut progress_at = tokio::time::Instant::now();
        loop {
            let lagged = self.deliveries.lagged.load(Ordering::Relaxed);
            if lagged > 0 {
                bail!("the event stream lagged by {lagged} events; figure not valid");
            }
            let before = left.len();
            {
                let log = self.deliveries.log();
                for (id, at) in log.get(cursor..).unwrap_or_default() {
                    if left.remove(id) {
                        last = last.max(*at);
                    }
                }
                cursor = log.len();
            }
            if left.is_empty() {
                return Ok(last);
            }
            if left.len() < before {
                progress_at = tokio::time::Instant::now();
            }
            let until = self.deadline.min(progress_at + STALL);
            match timeout_at(until, self.wake.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the event collector stopped"),
                Err(_) => {
                    let done = ids.len() - left.len();
                    if tokio::time::Instant::now() >= self.deadline {
                        bail!("deadline reached with {done} of {} delivered", ids.len());
                    }
                    bail!(
                        "stalled: {done} of {} delivered, none for {} s",
                        ids.len(),
                        STALL.as_secs()
                    );
                }
            }
        }
    }

    /// Sends `n` messages without waiting for acknowledgements: `callers` tasks each call
    /// `send_text` back to back (one caller: the calls are strictly sequential).
    async fn pipelined(&mut self, n: usize, callers: usize) -> Result<Pipelined> {
        let cursor = self.deliveries.len();
        let mut ids = Vec::with_capacity(n);
        let mut calls = Vec::with_capacity(n);
        let start = Instant::now();
        if callers <= 1 {
            for i in 0..n {
                let t = Instant::now();
                ids.push(
                    self.send(i)
                        .await
                        .with_context(|| format!("after {i} of {n} sent"))?,
                );
                calls.push(t.elapsed());
            }
        } else {
            let mut tasks = tokio::task::JoinSet::new();
            for first in 0..callers.min(n) {
                let (handle, pb, deadline) = (self.a.handle.clone(), self.pb, self.deadline);
                tasks.spawn(async move {
                    let mut sent = Vec::new();
                    for i in (first..n).step_by(callers) {
                        let t = Instant::now();
                        let id = send_one(&handle, pb, i, deadline).await?;
                        sent.push((id, t.elapsed()));
                    }
                    anyhow::Ok(sent)
                });
            }
            while let Some(done) = tasks.join_next().await {
                for (id, call) in done?? {
                    ids.push(id);
                    calls.push(call);
                }
            }
        }
        let sent = start.elapsed();
        eprintln!(
            "  {n} sent in {:.2} s, waiting for the acknowledgements",
            sent.as_secs_f64()
        );
        let last = self.wait_delivered(cursor, &ids).await?;
        calls.sort();
        Ok(Pipelined {
            n,
            total: last.saturating_duration_since(start),
            sent,
            calls,
        })
    }

    /// Sends `n` messages one at a time; the sorted latencies, and the error that cut the run
    /// short if one did.
    async fn unpipelined(&mut self, n: usize) -> (Vec<Duration>, Option<anyhow::Error>) {
        let mut latencies = Vec::with_capacity(n);
        for i in 0..n {
            let cursor = self.deliveries.len();
            let t = Instant::now();
            let result = match self.send(i).await {
                Ok(id) => self.wait_delivered(cursor, &[id]).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(at) => latencies.push(at.saturating_duration_since(t)),
                Err(e) => {
                    latencies.sort();
                    return (latencies, Some(e));
                }
            }
        }
        latencies.sort();
        (latencies, None)
    }

    async fn switch_to_rsa(&mut self) -> Result<()> {
        let pa = self.a.handle.peer_id();
        let mut eb = self.b.handle.subscribe();
        self.a.handle.set_cipher(self.pb, Cipher::Rsa).await?;
        let until = self.deadline.min(tokio::time::Instant::now() + SETUP_STEP);
        wait_event(&mut eb, until, "B to take the switch to rsa", |e| {
            matches!(e, NodeEvent::CipherChanged { peer, cipher: Cipher::Rsa, .. } if *peer == pa)
                .then_some(())
        })
        .await
    }

    async fn stop(self) {
        for r in [&self.a, &self.b] {
            let _ = tokio::time::timeout(SETUP_STEP, r.handle.shutdown()).await;
        }
        let Bench {
            a, b, collector, ..
        } = self;
        for r in [a, b] {
            let _ = tokio::time::timeout(SETUP_STEP, r.task).await;
            drop(r.handle);
        }
        // The nodes and their handles are gone: the collector sees the channel close.
        let _ = collector.join();
    }
}

/// The `i`th benchmark text: [`TEXT_LEN`] bytes.
fn bench_text(i: usize) -> String {
    let mut text = format!("bench message {i} ");
    text.extend(std::iter::repeat_n(
        '.',
        TEXT_LEN.saturating_sub(text.len()),
    ));
    text
}

/// Sends the `i`th benchmark text.
async fn send_one(
    handle: &NodeHandle,
    peer: PeerId,
    i: usize,
    deadline: tokio::time::Instant,
) -> Result<MessageId> {
    timeout_at(deadline, handle.send_text(peer, bench_text(i)))
        .await
        .map_err(|_| anyhow!("deadline reached in send_text"))?
        .map_err(Into::into)
}

struct Pipelined {
    n: usize,
    /// From the first `send_text` call to the last `Delivered` event.
    total: Duration,
    /// From the first `send_text` call to the last one's return.
    sent: Duration,
    /// How long each `send_text` call took, sorted.
    calls: Vec<Duration>,
}

/// Measures one cipher's two figures into `report`; `false` when something failed.
async fn measure(
    bench: &mut Bench,
    report: &mut Report,
    cipher: &str,
    pipelined: usize,
    unpipelined: usize,
    callers: &[usize],
    goals: bool,
) -> bool {
    eprintln!("{cipher}: {WARM_UP} warm-up messages");
    if let (_, Some(e)) = bench.unpipelined(WARM_UP).await {
        report.fail(format!("{cipher} warm-up"), &e);
        return false;
    }

    for &callers in callers {
        let who = if callers == 1 {
            "1 caller".to_owned()
        } else {
            format!("{callers} callers")
        };
        eprintln!("{cipher}: {pipelined} pipelined messages, {who}");
        let figure = format!("{cipher} pipelined, {pipelined} msgs, {who}, durable + acked");
        match bench.pipelined(pipelined, callers).await {
            Ok(p) => {
                let rate = p.n as f64 / p.total.as_secs_f64();
                report.row(
                    figure,
                    format!("{rate:.0} msgs/s ({:.2} s)", p.total.as_secs_f64()),
                    if goals { ">= 10,000 msgs/s" } else { "" },
                );
                report.row(
                    "  send_text calls alone (durable enqueue)",
                    format!("{:.0} msgs/s", p.n as f64 / p.sent.as_secs_f64()),
                    "",
                );
                report.row(
                    "  one send_text call, p50 / p99 / max",
                    format!(
                        "{} / {} / {}",
                        ms(percentile(&p.calls, 0.50)),
                        ms(percentile(&p.calls, 0.99)),
                        ms(p.calls.last().copied().unwrap_or_default()),
                    ),
                    "",
                );
            }
            Err(e) => {
                report.fail(figure, &e);
                return false;
            }
        }
    }

    eprintln!("{cipher}: {unpipelined} unpipelined messages");
    let (latencies, error) = bench.unpipelined(unpipelined).await;
    let k = latencies.len();
    let of = if k == unpipelined {
        format!("{k} msgs")
    } else {
        format!("{k} of {unpipelined} msgs")
    };
    if k > 0 {
        let stats = [
            ("p50", 0.50, if goals { "<= 1 ms" } else { "" }),
            ("p99", 0.99, if goals { "<= 5 ms" } else { "" }),
            ("max", 1.0, ""),
        ];
        for (name, p, goal) in stats {
            report.row(
                format!("{cipher} unpipelined send->ack {name}, {of}"),
                ms(percentile(&latencies, p)),
                goal,
            );
        }
    }
    if let Some(e) = error {
        report.fail(format!("{cipher} unpipelined"), &e);
        return false;
    }
    true
}

async fn run(args: &Args, report: &mut Report) {
    if args.messages_too {
        run_messages(args, report).await;
    }
    if args.files && !report.failed {
        measure_files(args, report).await;
    }
    if args.report && !report.failed {
        report_figures::measure(args, report).await;
    }
}

async fn run_messages(args: &Args, report: &mut Report) {
    eprintln!("starting two nodes (RSA key generation takes a few seconds)");
    let mut bench = match Bench::start(args).await {
        Ok(bench) => bench,
        Err(e) => {
            report.fail("setup", &e);
            return;
        }
    };
    let callers: Vec<usize> = if args.callers > 1 {
        vec![1, args.callers]
    } else {
        vec![1]
    };
    let ok = measure(
        &mut bench,
        report,
        "aes",
        args.messages,
        args.latency_messages,
        &callers,
        true,
    )
    .await;
    if ok {
        measure_floor(args, report).await;
    }
    if ok && !report.failed {
        eprintln!("switching the chat to rsa");
        match bench.switch_to_rsa().await {
            Ok(()) => {
                measure(
                    &mut bench,
                    report,
                    "rsa",
                    args.rsa_messages,
                    args.rsa_latency_messages,
                    &callers,
                    false,
                )
                .await;
            }
            Err(e) => report.fail("rsa cipher switch", &e),
        }
    }
    if report.failed {
        // A stuck node may never stop; the process exits anyway.
        return;
    }
    bench.stop().await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = args.file_receiver.clone() {
        return match file_receiver(dir).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench receiver: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // A child process in one of the hidden roles of the report figures.
    let child = if let Some(dir) = args.idle_node.clone() {
        Some(("idle node", report_figures::idle_node(dir).await))
    } else if let Some(dir) = args.history_fill.clone() {
        Some((
            "history fill",
            report_figures::history_fill(&dir, args.history_messages),
        ))
    } else {
        args.history_open
            .clone()
            .map(|dir| ("history open", report_figures::history_open(&dir)))
    };
    if let Some((role, result)) = child {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench {role}: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let mut report = Report::default();
    run(&args, &mut report).await;
    print_machine(&args);
    report.print();
    if report.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

// ----- files ----------------------------------------------------------------------------------

/// How a file benchmark went: MB/s of the transfer (offer received → file in place), MB/s
/// end to end (`send_file` called → file in place, so including the sender's sealing pass),
/// and the receiver's peak RSS.
struct FileFigures {
    transfer_mbs: f64,
    end_to_end_mbs: f64,
    receiver_peak_rss_mib: f64,
}

fn mbs(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

/// The file's content: pseudo-random (so nothing compresses or dedups), written in 1 MiB
/// pieces, never held whole.
fn write_random_file(path: &Path, bytes: u64) -> Result<()> {
    use rand::Rng;
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut piece = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(piece.len() as u64) as usize;
        rand::rng().fill_bytes(&mut piece[..n]);
        file.write_all(&piece[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(())
}

/// A plain TCP copy of `bytes` over 127.0.0.1, 1 MiB writes, on two threads: MB/s.
fn tcp_copy(bytes: u64) -> Result<f64> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> Result<u64> {
        let (mut socket, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = socket.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            got += n as u64;
        }
    });
    let started = Instant::now();
    let mut socket = std::net::TcpStream::connect(addr)?;
    let piece = vec![7u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(piece.len() as u64) as usize;
        socket.write_all(&piece[..n])?;
        left -= n as u64;
    }
    drop(socket);
    let got = reader
        .join()
        .map_err(|_| anyhow!("the TCP reader panicked"))??;
    if got != bytes {
        bail!("the TCP copy moved {got} of {bytes} bytes");
    }
    Ok(mbs(bytes, started.elapsed()))
}

/// The libp2p baseline: the same transport as the nodes (TCP, noise, yamux) with nothing on
/// top but a 4-byte length prefix: 4 MiB frames, 4 in flight, the receiver discards them.
mod raw {
    use futures::prelude::*;
    use libp2p::StreamProtocol;
    use libp2p::request_response;

    pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/encrypto-bench/raw/1");

    #[derive(Clone, Default)]
    pub(crate) struct Codec;

    impl request_response::Codec for Codec {
        type Protocol = StreamProtocol;
        type Request = Vec<u8>;
        type Response = ();

        async fn read_request<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
        ) -> std::io::Result<Vec<u8>>
        where
            T: AsyncRead + Unpin + Send,
        {
            let mut len = [0u8; 4];
            io.read_exact(&mut len).await?;
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            io.read_exact(&mut body).await?;
            Ok(body)
        }

        async fn read_response<T>(&mut self, _: &StreamProtocol, _: &mut T) -> std::io::Result<()>
        where
            T: AsyncRead + Unpin + Send,
        {
            Ok(())
        }

        async fn write_request<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            req: Vec<u8>,
        ) -> std::io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            io.write_all(&(req.len() as u32).to_be_bytes()).await?;
            io.write_all(&req).await?;
            io.flush().await
        }

        async fn write_response<T>(
            &mut self,
            _: &StreamProtocol,
            _: &mut T,
            (): (),
        ) -> std::io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            Ok(())
        }
    }
}

/// The single-stream baseline: one libp2p stream (TCP, noise, yamux) that carries all the
/// bytes, written from a 1 MiB buffer and read into a 64 KiB one and discarded. The request
/// is the byte count; the bytes follow it on the stream.
mod one_stream {
    use futures::prelude::*;
    use libp2p::StreamProtocol;
    use libp2p::request_response;

    pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/encrypto-bench/stream/1");
    const WRITE: usize = 1 << 20;
    const READ: usize = 64 << 10;

    #[derive(Clone, Default)]
    pub(crate) struct Codec;

    impl request_response::Codec for Codec {
        type Protocol = StreamProtocol;
        type Request = u64;
        type Response = u64;

        async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<u64>
        where
            T: AsyncRead + Unpin + Send,
        {
            let mut len = [0u8; 8];
            io.read_exact(&mut len).await?;
            let want = u64::from_be_bytes(len);
            let mut buf = vec![0u8; READ];
            let mut got = 0u64;
            while got < want {
                let n = io.read(&mut buf).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                got += n as u64;
            }
            Ok(got)
        }

        async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<u64>
        where
            T: AsyncRead + Unpin + Send,
        {
            let mut got = [0u8; 8];
            io.read_exact(&mut got).await?;
            Ok(u64::from_be_bytes(got))
        }

        async fn write_request<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            bytes: u64,
        ) -> std::io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            io.write_all(&bytes.to_be_bytes()).await?;
            let buf = vec![7u8; WRITE];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(WRITE as u64) as usize;
                io.write_all(&buf[..n]).await?;
                left -= n as u64;
            }
            io.flush().await
        }

        async fn write_response<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            got: u64,
        ) -> std::io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            io.write_all(&got.to_be_bytes()).await?;
            io.flush().await
        }
    }
}

/// A bare swarm on the nodes' transport (TCP with nodelay, noise, yamux) speaking one
/// request-response protocol with `codec`: what the raw copies run on.
fn bench_swarm<C>(
    codec: C,
    protocol: libp2p::StreamProtocol,
    timeout: Duration,
) -> Result<libp2p::Swarm<libp2p::request_response::Behaviour<C>>>
where
    C: libp2p::request_response::Codec<Protocol = libp2p::StreamProtocol> + Clone + Send + 'static,
{
    use libp2p::request_response::{self, ProtocolSupport};
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )?
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                codec,
                [(protocol, ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(timeout),
            )
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

fn stream_swarm() -> Result<libp2p::Swarm<libp2p::request_response::Behaviour<one_stream::Codec>>> {
    bench_swarm(
        one_stream::Codec,
        one_stream::PROTOCOL,
        Duration::from_secs(300),
    )
}

fn raw_swarm() -> Result<libp2p::Swarm<libp2p::request_response::Behaviour<raw::Codec>>> {
    bench_swarm(raw::Codec, raw::PROTOCOL, Duration::from_secs(120))
}

/// Makes `swarm` listen on TCP 127.0.0.1, port 0; the address it got (within 10 s).
async fn listen_local<B: libp2p::swarm::NetworkBehaviour>(
    swarm: &mut libp2p::Swarm<B>,
) -> Result<libp2p::Multiaddr> {
    use futures::StreamExt;
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                swarm.select_next_some().await
            {
                return address;
            }
        }
    })
    .await
    .map_err(|_| anyhow!("a bench swarm got no listen address within 10 s"))
}

/// Copies `bytes` over one libp2p stream between two swarms in this process (each polled on
/// its own task): MB/s from the connection being up to the receiver's count coming back.
async fn libp2p_stream_copy(bytes: u64, until: tokio::time::Instant) -> Result<f64> {
    use futures::StreamExt;
    use libp2p::request_response::{Event, Message};
    use libp2p::swarm::SwarmEvent;
    let mut receiver = stream_swarm()?;
    let addr = listen_local(&mut receiver).await?;
    let receiver_id = *receiver.local_peer_id();
    let serving = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            }) = receiver.select_next_some().await
            {
                let _ = receiver.behaviour_mut().send_response(channel, request);
            }
        }
    });
    let mut sender = stream_swarm()?;
    sender.add_peer_address(receiver_id, addr);
    // Connect first (a tiny copy), so the timed copy starts on a connection that is up.
    let result = timeout_at(until, async {
        let mut started = None;
        sender.behaviour_mut().send_request(&receiver_id, 1);
        loop {
            match sender.select_next_some().await {
                SwarmEvent::Behaviour(Event::Message {
                    message: Message::Response { response, .. },
                    ..
                }) => match started {
                    None => {
                        started = Some(Instant::now());
                        sender.behaviour_mut().send_request(&receiver_id, bytes);
                    }
                    Some(at) => {
                        if response != bytes {
                            return Err(anyhow!("the receiver counted {response} bytes"));
                        }
                        return Ok(mbs(bytes, Instant::elapsed(&at)));
                    }
                },
                SwarmEvent::Behaviour(Event::OutboundFailure { error, .. }) => {
                    return Err(anyhow!("the one-stream libp2p copy failed: {error}"));
                }
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow!("the one-stream libp2p copy timed out"))?;
    serving.abort();
    result
}

/// Copies `bytes` between two libp2p swarms in this process (each polled on its own task):
/// MB/s.
async fn libp2p_copy(bytes: u64, until: tokio::time::Instant) -> Result<f64> {
    use futures::StreamExt;
    use libp2p::request_response::{Event, Message};
    use libp2p::swarm::SwarmEvent;
    const FRAME: u64 = 4 << 20;
    const IN_FLIGHT: usize = 4;
    let mut receiver = raw_swarm()?;
    let addr = listen_local(&mut receiver).await?;
    let receiver_id = *receiver.local_peer_id();
    let serving = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(Event::Message {
                message: Message::Request { channel, .. },
                ..
            }) = receiver.select_next_some().await
            {
                let _ = receiver.behaviour_mut().send_response(channel, ());
            }
        }
    });
    let mut sender = raw_swarm()?;
    // The first request dials the receiver at this address.
    sender.add_peer_address(receiver_id, addr);
    let frame = vec![7u8; FRAME as usize];
    let result = timeout_at(until, async {
        let mut started = None;
        let (mut sent, mut done, mut in_flight) = (0u64, 0u64, 0usize);
        loop {
            // The first request waits for the connection; timing starts once it is up.
            while sent < bytes && in_flight < IN_FLIGHT && (started.is_some() || in_flight == 0) {
                let n = (bytes - sent).min(FRAME) as usize;
                sender
                    .behaviour_mut()
                    .send_request(&receiver_id, frame[..n].to_vec());
                sent += n as u64;
                in_flight += 1;
            }
            match sender.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => {
                    started.get_or_insert_with(Instant::now);
                }
                SwarmEvent::Behaviour(Event::Message {
                    message: Message::Response { .. },
                    ..
                }) => {
                    in_flight -= 1;
                    done += FRAME.min(bytes - done);
                    if done == bytes {
                        let started = started.unwrap_or_else(Instant::now);
                        return Ok(mbs(bytes, started.elapsed()));
                    }
                }
                SwarmEvent::Behaviour(Event::OutboundFailure { error, .. }) => {
                    return Err(anyhow!("raw libp2p copy failed: {error}"));
                }
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow!("the raw libp2p copy timed out"))?;
    serving.abort();
    result
}

/// Round trips measured for the floor figures, after [`FLOOR_WARM_UP`] not counted.
const FLOOR_TRIES: usize = 2_000;
const FLOOR_WARM_UP: usize = 200;

/// The floor under an unpipelined message on this machine (see the module docs): a TCP round
/// trip, a bare libp2p request-response round trip, a small durable store write; p50 of each.
async fn measure_floor(args: &Args, report: &mut Report) {
    eprintln!("floor: round trips and flushes");
    let until = tokio::time::Instant::now() + args.deadline;
    let result = async {
        let tcp = tcp_round_trips(until).await?;
        let libp2p = libp2p_round_trips(until).await?;
        let flush = durable_writes(args).await?;
        anyhow::Ok((tcp, libp2p, flush))
    }
    .await;
    match result {
        Ok((tcp, libp2p, flush)) => {
            report.row(
                "  floor: TCP round trip p50 (300 B out, 150 B back)",
                ms(percentile(&tcp, 0.5)),
                "",
            );
            report.row(
                "  floor: libp2p request-response round trip p50 (bare swarms)",
                ms(percentile(&libp2p, 0.5)),
                "",
            );
            report.row(
                "  floor: store write of one small record, flushed, p50",
                ms(percentile(&flush, 0.5)),
                "",
            );
        }
        Err(e) => report.fail("floor figures", &e),
    }
}

/// Records one try's time, unless it is one of the first [`FLOOR_WARM_UP`].
fn record_try(times: &mut Vec<Duration>, i: usize, started: Instant) {
    if i >= FLOOR_WARM_UP {
        times.push(started.elapsed());
    }
}

async fn tcp_round_trips(until: tokio::time::Instant) -> Result<Vec<Duration>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let mut request = [0u8; 300];
        while socket.read_exact(&mut request).await.is_ok() {
            socket.write_all(&request[..150]).await?;
        }
        anyhow::Ok(())
    });
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let request = [7u8; 300];
    let mut answer = [0u8; 150];
    let mut times = Vec::with_capacity(FLOOR_TRIES);
    timeout_at(until, async {
        for i in 0..FLOOR_WARM_UP + FLOOR_TRIES {
            let t = Instant::now();
            socket.write_all(&request).await?;
            socket.read_exact(&mut answer).await?;
            record_try(&mut times, i, t);
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow!("the TCP round trips timed out"))??;
    times.sort();
    drop(socket);
    echo.abort();
    Ok(times)
}

async fn libp2p_round_trips(until: tokio::time::Instant) -> Result<Vec<Duration>> {
    use futures::StreamExt;
    use libp2p::request_response::{Event, Message};
    use libp2p::swarm::SwarmEvent;
    let mut receiver = bench_swarm(echo::Codec, echo::PROTOCOL, Duration::from_secs(30))?;
    let addr = listen_local(&mut receiver).await?;
    let receiver_id = *receiver.local_peer_id();
    let serving = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(Event::Message {
                message:
                    Message::Request {
                        mut request,
                        channel,
                        ..
                    },
                ..
            }) = receiver.select_next_some().await
            {
                request.truncate(150);
                let _ = receiver.behaviour_mut().send_response(channel, request);
            }
        }
    });
    let mut sender = bench_swarm(echo::Codec, echo::PROTOCOL, Duration::from_secs(30))?;
    sender.add_peer_address(receiver_id, addr);
    let mut times = Vec::with_capacity(FLOOR_TRIES);
    timeout_at(until, async {
        for i in 0..FLOOR_WARM_UP + FLOOR_TRIES {
            let t = Instant::now();
            sender
                .behaviour_mut()
                .send_request(&receiver_id, vec![7u8; 300]);
            loop {
                match sender.select_next_some().await {
                    SwarmEvent::Behaviour(Event::Message {
                        message: Message::Response { .. },
                        ..
                    }) => break,
                    SwarmEvent::Behaviour(Event::OutboundFailure { error, .. }) => {
                        bail!("a libp2p round trip failed: {error}")
                    }
                    _ => {}
                }
            }
            record_try(&mut times, i, t);
        }
        Ok(())
    })
    .await
    .map_err(|_| anyhow!("the libp2p round trips timed out"))??;
    times.sort();
    serving.abort();
    Ok(times)
}

/// Durable small writes to a store in a temporary directory: one setting written and flushed.
async fn durable_writes(args: &Args) -> Result<Vec<Duration>> {
    let tmp = tempfile::Builder::new()
        .prefix("encrypto-bench-flush")
        .tempdir_in(&args.dir)
        .with_context(|| format!("creating a temporary directory in {}", args.dir.display()))?;
    tokio::task::spawn_blocking(move || {
        let store = encrypto_node::Store::open(tmp.path(), StorageKey::generate(&mut rand::rng()))?;
        let mut times = Vec::with_capacity(FLOOR_TRIES);
        for i in 0..FLOOR_WARM_UP + FLOOR_TRIES {
            let t = Instant::now();
            // One sealed record, then sled's flush (put_setting flushes before it returns).
            store.put_setting("bench", &i.to_be_bytes())?;
            record_try(&mut times, i, t);
        }
        times.sort();
        anyhow::Ok(times)
    })
    .await?
}

/// A request-response protocol of length-prefixed byte strings both ways: what the libp2p
/// round trips of the floor figures run on.
mod echo {
    use futures::prelude::*;
    use libp2p::StreamProtocol;
    use libp2p::request_response;

    pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/encrypto-bench/echo/1");
    /// Longer requests or answers are refused.
    const MAX: usize = 64 << 10;

    #[derive(Clone, Default)]
    pub(crate) struct Codec;

    async fn read<T: AsyncRead + Unpin + Send>(io: &mut T) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX {
            return Err(std::io::Error::other("frame too long"));
        }
        let mut body = vec![0u8; len];
        io.read_exact(&mut body).await?;
        Ok(body)
    }

    async fn write<T: AsyncWrite + Unpin + Send>(io: &mut T, body: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(body);
        io.write_all(&frame).await?;
        io.flush().await
    }

    impl request_response::Codec for Codec {
        type Protocol = StreamProtocol;
        type Request = Vec<u8>;
        type Response = Vec<u8>;

        async fn read_request<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
        ) -> std::io::Result<Vec<u8>>
        where
            T: AsyncRead + Unpin + Send,
        {
            read(io).await
        }

        async fn read_response<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
        ) -> std::io::Result<Vec<u8>>
        where
            T: AsyncRead + Unpin + Send,
        {
            read(io).await
        }

        async fn write_request<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            request: Vec<u8>,
        ) -> std::io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            write(io, &request).await
        }

        async fn write_response<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            response: Vec<u8>,
        ) -> std::io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            write(io, &response).await
        }
    }
}

/// `VmHWM` (peak resident set) of this process, in MiB.
fn peak_rss_mib() -> f64 {
    status_mib("/proc/self/status", "VmHWM:")
}

/// A `kB` field (`VmRSS:`, `VmHWM:`) of a `/proc/PID/status` file, in MiB; NaN if unreadable.
fn status_mib(status: &str, field: &str) -> f64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The receiving node, in a child process of its own (`bench --file-receiver DIR`), so its
/// peak RSS is its own: prints `ready ADDR PEER_ID`, then once a file is complete
/// `done SECS_SINCE_OFFER PEAK_RSS_MIB SHA256_HEX`.
async fn file_receiver(dir: PathBuf) -> Result<()> {
    let until = tokio::time::Instant::now() + Duration::from_secs(3600);
    let (node, mut events) = start_node(dir, "receiver", false, until).await?;
    let addr = node
        .handle
        .listen_addrs()
        .await?
        .into_iter()
        .next()
        .context("the receiver listens nowhere")?;
    println!("ready {addr} {}", node.handle.peer_id());
    let offered = wait_event(&mut events, until, "a file offer", |e| {
        matches!(e, NodeEvent::FileOffered { .. }).then(Instant::now)
    })
    .await?;
    let sha = wait_event(&mut events, until, "the file", |e| match e {
        NodeEvent::FileComplete { sha256, .. } => Some(Ok(*sha256)),
        NodeEvent::FileFailed { reason, .. } => Some(Err(anyhow!("{reason}"))),
        _ => None,
    })
    .await??;
    println!(
        "done {} {} {}",
        offered.elapsed().as_secs_f64(),
        peak_rss_mib(),
        hex::encode(sha.unwrap_or_default())
    );
    node.handle.shutdown().await;
    Ok(())
}

/// A child process that is killed and reaped if the figure using it fails (a timeout, a
/// wrong hash), so that it does not outlive the bench holding its data directory.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A file of `bytes` from node A (this process) to node B (a child process): transfer and
/// end-to-end MB/s and B's peak RSS; the received file's SHA-256 must be the sender's.
async fn file_transfer(
    args: &Args,
    bytes: u64,
    until: tokio::time::Instant,
) -> Result<FileFigures> {
    use std::io::BufRead;
    let tmp = tempfile::Builder::new()
        .prefix("encrypto-bench-files-")
        .tempdir_in(&args.dir)?;
    let source = tmp.path().join("payload.bin");
    write_random_file(&source, bytes)?;
    let mut child = Reaped(
        std::process::Command::new(std::env::current_exe()?)
            .arg("--file-receiver")
            .arg(tmp.path().join("b"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .context("starting the receiving node")?,
    );
    let stdout = child
        .0
        .stdout
        .take()
        .context("no stdout from the receiver")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut next_line = async || -> Result<String> {
        timeout_at(until, rx.recv())
            .await
            .map_err(|_| anyhow!("the receiver said nothing in time"))?
            .context("the receiver exited")
    };
    let ready = next_line().await?;
    let mut parts = ready.split_whitespace().skip(1);
    let addr: encrypto_node::Multiaddr = parts.next().context("no address")?.parse()?;
    let peer: PeerId = parts.next().context("no peer id")?.parse()?;

    let (a, _ea) = start_node(tmp.path().join("a"), "sender", false, until).await?;
    let full = encrypto_node::addr_with_peer(&addr, peer);
    timeout_at(until, a.handle.add_peer(full))
        .await
        .map_err(|_| anyhow!("adding the receiver timed out"))??;
    let started = Instant::now();
    let sent = a.handle.send_file(peer, source, Vec::new()).await?;
    let done = next_line().await?;
    let end_to_end = started.elapsed();
    let mut parts = done.split_whitespace().skip(1);
    let secs: f64 = parts.next().context("no time")?.parse()?;
    let rss: f64 = parts.next().context("no rss")?.parse()?;
    let sha = parts.next().context("no sha256")?;
    if Some(sha.to_owned()) != sent.sha256.map(hex::encode) {
        bail!("the received file's SHA-256 differs from the sender's");
    }
    let _ = child.0.wait();
    a.handle.shutdown().await;
    Ok(FileFigures {
        transfer_mbs: bytes as f64 / 1e6 / secs.max(1e-9),
        end_to_end_mbs: mbs(bytes, end_to_end),
        receiver_peak_rss_mib: rss,
    })
}

async fn measure_files(args: &Args, report: &mut Report) {
    let bytes = args.file_mib << 20;
    let until = tokio::time::Instant::now() + args.deadline;
    eprintln!("files: plain TCP copy of {} MiB", args.file_mib);
    let tcp = match tcp_copy(bytes) {
        Ok(v) => v,
        Err(e) => return report.fail("plain TCP copy", &e),
    };
    eprintln!("files: raw libp2p copy of {} MiB", args.file_mib);
    let raw = match libp2p_copy(bytes, until).await {
        Ok(v) => v,
        Err(e) => return report.fail("raw libp2p copy", &e),
    };
    eprintln!("files: one-stream libp2p copy of {} MiB", args.file_mib);
    let one = match libp2p_stream_copy(bytes, until).await {
        Ok(v) => v,
        Err(e) => return report.fail("one-stream libp2p copy", &e),
    };
    eprintln!("files: a {} MiB file between two nodes", args.file_mib);
    let file = match file_transfer(args, bytes, until).await {
        Ok(v) => v,
        Err(e) => return report.fail("file transfer", &e),
    };
    let mib = args.file_mib;
    report.row(
        format!("plain TCP copy, {mib} MiB"),
        format!("{tcp:.0} MB/s"),
        "",
    );
    report.row(
        format!("raw libp2p copy, one stream (noise+yamux), {mib} MiB"),
        format!("{one:.0} MB/s"),
        "",
    );
    report.row(
        format!("raw libp2p copy, 4 MiB requests x4 in flight, {mib} MiB"),
        format!("{raw:.0} MB/s"),
        "",
    );
    report.row(
        format!("file transfer, {mib} MiB (offer -> file in place)"),
        format!(
            "{:.0} MB/s ({:.0}% of one stream, {:.0}% of x4)",
            file.transfer_mbs,
            file.transfer_mbs / one * 100.0,
            file.transfer_mbs / raw * 100.0
        ),
        ">= 75% of raw libp2p",
    );
    report.row(
        format!("file end to end, {mib} MiB (incl. sealing pass)"),
        format!("{:.0} MB/s", file.end_to_end_mbs),
        "",
    );
    report.row(
        "file receiver peak RSS",
        format!("{:.0} MiB", file.receiver_peak_rss_mib),
        "< 100 MB",
    );
}
