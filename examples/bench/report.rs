//! The table the bench prints, the statistics in it, and the machine it ran on.

use std::path::Path;
use std::time::Duration;

use encrypto_crypto::RsaBits;

use crate::messages::TEXT_LEN;
use crate::{Args, dht};

struct Row {
    figure: String,
    value: String,
    goal: &'static str,
}

/// The figures so far; any failed one fails the run.
#[derive(Default)]
pub(crate) struct Report {
    rows: Vec<Row>,
    pub(crate) failed: bool,
}

impl Report {
    pub(crate) fn row(
        &mut self,
        figure: impl Into<String>,
        value: impl Into<String>,
        goal: &'static str,
    ) {
        self.rows.push(Row {
            figure: figure.into(),
            value: value.into(),
            goal,
        });
    }

    pub(crate) fn fail(&mut self, figure: impl Into<String>, error: &anyhow::Error) {
        self.failed = true;
        self.row(figure, format!("FAILED: {error:#}"), "");
    }

    pub(crate) fn print(&self) {
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

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// The nearest-rank percentile of sorted durations.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
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

pub(crate) fn print_machine(args: &Args) {
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
            dht::DHT_NODES,
            RsaBits::default().bits(),
            args.history_messages
        );
    }
    println!();
}

/// `VmHWM` (peak resident set) of this process, in MiB.
pub(crate) fn peak_rss_mib() -> f64 {
    status_mib("/proc/self/status", "VmHWM:")
}

/// A `kB` field (`VmRSS:`, `VmHWM:`) of a `/proc/PID/status` file, in MiB; NaN if unreadable.
pub(crate) fn status_mib(status: &str, field: &str) -> f64 {
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
