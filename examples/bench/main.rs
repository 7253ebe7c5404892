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

//!
//! The modules, one per figure group: `messages` (the two nodes, pipelined and unpipelined
//! figures), `floor` (what an unpipelined message cannot go below), `copies` (the plain TCP
//! and raw libp2p copies the file figures compare with), `files` (the file transfer between
//! two nodes), `report_figures` (DHT lookup, idle RSS, history open); `nodes` starts nodes
//! through the node crate's test harness, `report` prints the table and the machine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

mod copies;
mod dht;
mod files;
mod floor;
mod history;
mod idle;
mod messages;
mod nodes;
mod report;
mod report_figures;

use report::{Report, print_machine};

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

async fn run(args: &Args, report: &mut Report) {
    if args.messages_too {
        messages::run_messages(args, report).await;
    }
    if args.files && !report.failed {
        files::measure_files(args, report).await;
    }
    if args.report && !report.failed {
        report_figures::measure(args, report).await;
    }
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
        return match files::file_receiver(dir).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench receiver: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // A child process in one of the hidden roles of the report figures.
    let child = if let Some(dir) = args.idle_node.clone() {
        Some(("idle node", idle::idle_node(dir).await))
    } else if let Some(dir) = args.history_fill.clone() {
        Some((
            "history fill",
            history::history_fill(&dir, args.history_messages),
        ))
    } else {
        args.history_open
            .clone()
            .map(|dir| ("history open", history::history_open(&dir)))
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
