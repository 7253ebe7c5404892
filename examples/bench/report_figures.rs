//! The report figures: DHT name lookup over 30 nodes (`dht`), idle daemon RSS (`idle`),
//! history open with 1,000,000 messages (`history`); what each measures: the benchmark's
//! module doc. Here: running the three into the report, and what they share (temporary
//! directories, child processes of this program in a hidden role).

use std::ffi::OsString;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use tokio::time::timeout_at;

use crate::Args;
use crate::dht::{DHT_NODES, DHT_QUIET, dht};
use crate::history::{HISTORY_PAGE, history};
use crate::idle::{IDLE, idle_rss};
use crate::report::{Report, ms, percentile};

/// Measures the three report figures into `report`; a failed one does not stop the others.
pub(crate) async fn measure(args: &Args, report: &mut Report) {
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
pub(crate) fn grouped(n: usize) -> String {
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

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn tempdir(args: &Args, prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&args.dir)
        .with_context(|| format!("creating a temporary directory in {}", args.dir.display()))
}

// ----- child processes ----------------------------------------------------------------------

/// A child process of this program in one of its hidden roles, its stdout read line by line.
/// Dropping it kills it if it still runs.
pub(crate) struct Child {
    process: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Child {
    pub(crate) fn spawn(args: &[OsString]) -> Result<Child> {
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

    pub(crate) fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The next line it prints.
    pub(crate) async fn line(&mut self, until: tokio::time::Instant, what: &str) -> Result<String> {
        timeout_at(until, self.lines.recv())
            .await
            .map_err(|_| anyhow!("timed out waiting for {what}"))?
            .with_context(|| format!("the child process exited before {what}"))
    }

    /// Closes its stdin (an idle node's cue to stop) and waits until it exits, successfully.
    pub(crate) async fn finish(mut self, until: tokio::time::Instant) -> Result<()> {
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
