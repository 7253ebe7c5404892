//! The history open figure: a store filled with many messages in one chat by a child process,
//! then opened (and its newest page read) in fresh child processes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use encrypto_crypto::envelope::{self, OutboundSession};
use encrypto_crypto::{Cipher, Identity, MessageId, PeerId, RsaBits, StorageKey};
use encrypto_node::store::{Body, Direction, Status, Store, StoredMessage};

use crate::Args;
use crate::messages::bench_text;
use crate::report_figures::{Child, grouped, now_ms, tempdir};
/// The page of history the window loads when a chat opens (the GUI's `HISTORY_LIMIT`).
pub(crate) const HISTORY_PAGE: usize = 500;
/// Timed reopens of the filled store after the first open, each in a fresh process.
const HISTORY_REOPENS: usize = 3;
/// Messages written per batch while filling.
const FILL_BATCH: usize = 1_000;
/// The filled store's storage key (hex) and its chat's peer, for the processes that open it.
const KEY_FILE: &str = "bench-store-key";

pub(crate) struct HistoryFigures {
    pub(crate) fill: Duration,
    pub(crate) disk_bytes: u64,
    /// The first open's `Store::open` and newest-page times. sled 0.34 writes its snapshot
    /// only when it opens a database, replaying everything logged since the last one: this
    /// open replays the whole fill.
    pub(crate) first: (Duration, Duration),
    /// The same for each reopen after it.
    pub(crate) reopens: Vec<(Duration, Duration)>,
}

/// Fills a store in a child process (`--history-fill`), then opens it once and
/// [`HISTORY_REOPENS`] more times, each in a fresh child process (`--history-open`).
pub(crate) async fn history(args: &Args) -> Result<HistoryFigures> {
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
pub(crate) fn history_fill(dir: &Path, n: usize) -> Result<()> {
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
pub(crate) fn history_open(dir: &Path) -> Result<()> {
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
