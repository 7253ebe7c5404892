//! The file figures: a file from node A (this process) to node B (a child process of its own,
//! so that its peak RSS is measured alone), beside the plain and raw copies of `copies`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use encrypto_crypto::PeerId;
use encrypto_node::NodeEvent;
use encrypto_node::test_support::wait_event;
use tokio::time::timeout_at;

use crate::Args;
use crate::copies::{libp2p_copy, libp2p_stream_copy, mbs, tcp_copy};
use crate::nodes::{Node, left, start_node};
use crate::report::{Report, peak_rss_mib};

/// How a file benchmark went: MB/s of the transfer (offer received → file in place), MB/s
/// end to end (`send_file` called → file in place, so including the sender's sealing pass),
/// and the receiver's peak RSS.
struct FileFigures {
    transfer_mbs: f64,
    end_to_end_mbs: f64,
    receiver_peak_rss_mib: f64,
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

/// The receiving node, in a child process of its own (`bench --file-receiver DIR`), so its
/// peak RSS is its own: prints `ready ADDR PEER_ID`, then once a file is complete
/// `done SECS_SINCE_OFFER PEAK_RSS_MIB SHA256_HEX`.
pub(crate) async fn file_receiver(dir: PathBuf) -> Result<()> {
    let until = tokio::time::Instant::now() + Duration::from_secs(3600);
    let mut node = start_node(dir, "receiver", false).await?;
    let addr = node.addr.clone();
    println!("ready {addr} {}", node.handle.peer_id());
    let offered = wait_event(&mut node.events, left(until), "a file offer", |e| {
        matches!(e, NodeEvent::FileOffered { .. }).then(Instant::now)
    })
    .await?;
    let sha = wait_event(&mut node.events, left(until), "the file", |e| match e {
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

    let a = Node::from(start_node(tmp.path().join("a"), "sender", false).await?);
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

pub(crate) async fn measure_files(args: &Args, report: &mut Report) {
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
