//! The message figures: two nodes in this process, pipelined and unpipelined texts A→B, for
//! each cipher (see the crate docs).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use encrypto_crypto::{Cipher, MessageId, PeerId};
use encrypto_node::test_support::{connect_within, wait_event};
use encrypto_node::{NodeEvent, NodeHandle};
use tokio::sync::{broadcast, watch};
use tokio::time::timeout_at;

use crate::Args;
use crate::floor::measure_floor;
use crate::nodes::{Node, SETUP_STEP, left, start_node};
use crate::report::{Report, ms, percentile};

/// Bytes per benchmark text.
pub(crate) const TEXT_LEN: usize = 200;
/// Unpipelined messages sent before each cipher's measurements and not counted.
const WARM_UP: usize = 10;
/// The longest the pipeline may go without a single delivery before the run is called stalled
/// (longer than the node's 30 s request timeout plus its first retry).
const STALL: Duration = Duration::from_secs(45);

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

/// The two nodes of the message figures, connected, and A's deliveries as they come.
struct Bench {
    a: Node,
    b: Node,
    pb: PeerId,
    deadline: tokio::time::Instant,
    deliveries: Arc<Deliveries>,
    wake: watch::Receiver<()>,
    collector: std::thread::JoinHandle<()>,
    // Dropped last: the stores live in it.
    _tmp: tempfile::TempDir,
}

impl Bench {
    async fn start(args: &Args) -> Result<Bench> {
        let deadline = tokio::time::Instant::now() + args.deadline;
        let step = || deadline.min(tokio::time::Instant::now() + SETUP_STEP);
        let tmp = tempfile::Builder::new()
            .prefix("encrypto-bench-")
            .tempdir_in(&args.dir)
            .with_context(|| format!("creating a temporary directory in {}", args.dir.display()))?;
        let mut a = start_node(tmp.path().join("a"), "alice", true).await?;
        let mut b = start_node(tmp.path().join("b"), "bob", args.default_rate_limit).await?;
        let pb = b.handle.peer_id();
        connect_within(&mut a, &mut b, left(step())).await?;
        let (a, b) = (Node::from(a), Node::from(b));

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
        wait_event(&mut eb, left(until), "B to take the switch to rsa", |e| {
            matches!(e, NodeEvent::CipherChanged { peer, cipher: Cipher::Rsa, .. } if *peer == pa)
                .then_some(())
        })
        .await?;
        Ok(())
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
pub(crate) fn bench_text(i: usize) -> String {
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

pub(crate) async fn run_messages(args: &Args, report: &mut Report) {
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
