//! The CLI's client commands: each connects to the daemon's socket in the data dir, calls one
//! JSON-RPC method and prints the result: one JSON object per line with `--json`, a sentence
//! or a table otherwise.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use encrypto_node::{DataDir, DataDirError};
use serde_json::{Value, json};

use crate::commands::Global;
use crate::output;
use crate::rpc::{self, RpcError};

/// How long a call may wait for its answer (adding a peer waits up to 20 s for its profile).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Why there is no connection to a daemon.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotRunning {
    /// No identity in the data dir: nothing could be running.
    #[error(
        "no identity in {0}: create one with `encrypto init --name NAME`, then start the daemon with `encrypto daemon`"
    )]
    NoIdentity(PathBuf),
    /// An identity, but no daemon answers.
    #[error(
        "no daemon is running for {0}; start one with `encrypto{1} daemon` (it keeps running; use another terminal or run it as a service)"
    )]
    NoDaemon(PathBuf, String),
    /// The keystore is gone but its message store is there: `init` is not the way out.
    #[error(transparent)]
    KeystoreMissing(DataDirError),
}

/// A connection to the daemon's control socket.
pub(crate) struct Connection {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Connection {
    /// Connects to the daemon serving the data dir of `global`.
    ///
    /// # Errors
    /// [`NotRunning`] when no daemon answers; an I/O error otherwise.
    pub(crate) fn open(global: &Global) -> Result<Connection> {
        let dir = global.data_dir_path()?;
        let socket = rpc::socket_path(&dir);
        match UnixStream::connect(&socket) {
            Ok(stream) => {
                stream.set_read_timeout(Some(CALL_TIMEOUT)).ok();
                let writer = stream
                    .try_clone()
                    .context("cannot use the control socket")?;
                Ok(Connection {
                    reader: BufReader::new(stream),
                    writer,
                    next_id: 1,
                })
            }
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
                Err(not_running(&dir, global).into())
            }
            Err(e) => Err(e)
                .with_context(|| format!("cannot connect to the daemon at {}", socket.display())),
        }
    }

    /// Calls `method` and returns its result; an error reply becomes an [`RpcError`].
    pub(crate) fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.send(&request)?;
        loop {
            let reply = self.read()?;
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                continue; // an event notification, or a stray reply
            }
            if let Some(error) = reply.get("error") {
                return Err(RpcError::from_json(error).into());
            }
            return Ok(reply.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    /// Waits up to `timeout` for the reply of a long call (`send --wait`).
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.reader.get_ref().set_read_timeout(Some(timeout)).ok();
    }

    fn send(&mut self, request: &Value) -> Result<()> {
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .context("cannot send to the daemon (did it stop?)")
    }

    /// The next line from the daemon, as JSON.
    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => bail!("the daemon closed the connection (did it stop?)"),
            Ok(_) => {
                serde_json::from_str(&line).context("the daemon sent something that is not JSON")
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                bail!("the daemon did not answer in time")
            }
            Err(e) => Err(e).context("cannot read from the daemon"),
        }
    }

    /// `watch`: subscribes and prints events until the daemon goes away or stdout closes.
    pub(crate) fn watch(mut self, json: bool) -> Result<()> {
        self.reader.get_ref().set_read_timeout(None).ok();
        self.call("subscribe", json!({}))?;
        if !json {
            output::note("Watching events; Ctrl-C to stop.");
        }
        loop {
            let line = self.read()?;
            if line.get("method").and_then(Value::as_str) != Some(rpc::EVENT_METHOD) {
                continue;
            }
            let event = line.get("params").cloned().unwrap_or(Value::Null);
            let text = if json {
                output::json(&event)
            } else {
                format!("{}\n", describe_event(&event))
            };
            if let Err(e) = output::print(&text) {
                // `encrypto watch | head`: the reader went away; that ends the watch.
                if e.chain().any(|c| {
                    c.downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
                }) {
                    return Ok(());
                }
                return Err(e);
            }
        }
    }
}

fn not_running(dir: &Path, global: &Global) -> NotRunning {
    match DataDir::open_existing(dir).and_then(|d| d.require_identity()) {
        Ok(()) => {}
        Err(e @ DataDirError::KeystoreMissing { .. }) => return NotRunning::KeystoreMissing(e),
        Err(_) => return NotRunning::NoIdentity(dir.to_path_buf()),
    }
    let flag = match &global.data_dir {
        Some(d) => format!(" --data-dir {}", d.display()),
        None => String::new(),
    };
    NotRunning::NoDaemon(dir.to_path_buf(), flag)
}

/// Calls `method` and prints its result: for `--json`, a list as one object per line and an
/// object as one line; otherwise what `human` makes of it.
pub(crate) fn run(
    global: &Global,
    method: &str,
    params: Value,
    human: impl FnOnce(&Value) -> String,
) -> Result<()> {
    let result = Connection::open(global)?.call(method, params)?;
    print_result(global.json, &result, human)
}

pub(crate) fn print_result(
    json: bool,
    result: &Value,
    human: impl FnOnce(&Value) -> String,
) -> Result<()> {
    let text = if json {
        match result {
            Value::Array(items) => items.iter().map(output::json).collect(),
            other => output::json(other),
        }
    } else {
        human(result)
    };
    output::print(&text)
}

/// `send`: with `wait`, the call lasts until delivery or the timeout; a timeout still prints
/// the queued message's id (with `--json`) before the error.
pub(crate) fn send(global: &Global, params: Value, wait_secs: Option<u64>) -> Result<()> {
    let mut connection = Connection::open(global)?;
    if let Some(secs) = wait_secs {
        connection.set_timeout(Duration::from_secs(secs) + Duration::from_secs(30));
    }
    let to = params["to"].as_str().unwrap_or_default().to_owned();
    match connection.call("send", params) {
        Ok(result) => print_result(global.json, &result, |r| {
            let id = r["id"].as_str().unwrap_or_default();
            match r["status"].as_str() {
                Some("delivered") => format!("Delivered message {id} to {to}\n"),
                _ => format!("Queued message {id} for {to}; it is delivered in the background\n"),
            }
        }),
        Err(e) => {
            if global.json
                && let Some(data) = e.downcast_ref::<RpcError>().and_then(|r| r.data.clone())
                && data.get("id").is_some()
            {
                output::print(&output::json(&data))?;
            }
            Err(e)
        }
    }
}

/// How often a waiting `send-file` or `fetch` asks the daemon how the transfer goes.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// `send-file`: the path is made absolute here (the daemon's working directory is not ours);
/// with `wait`, follows the transfer until the contact has the whole file.
pub(crate) fn send_file(
    global: &Global,
    to: &str,
    path: &Path,
    via: &[String],
    wait: bool,
    timeout: Option<u64>,
) -> Result<()> {
    let path =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let mut connection = Connection::open(global)?;
    let offer = connection.call(
        "send-file",
        json!({ "to": to, "path": path.display().to_string(), "via": via }),
    )?;
    let file_id = s(&offer["file_id"]).to_owned();
    if wait && let Err(e) = follow(&mut connection, &file_id, "out", timeout, global.json) {
        // The offer is made whatever happened while waiting: scripts still get its fields.
        if global.json {
            output::print(&output::json(&offer))?;
        }
        return Err(e);
    }
    print_result(global.json, &offer, |r| {
        let done = if wait {
            "sent"
        } else {
            "offered; it moves in the background (`encrypto files` shows how far)"
        };
        format!(
            "{} ({}) {done} to {to}\nfile id {}\nsha256 {}\n",
            s(&r["name"]),
            human_size(r["size"].as_u64().unwrap_or(0)),
            s(&r["file_id"]),
            s(&r["sha256"]),
        )
    })
}

/// `fetch`: starts the download and follows it until the file is in place.
pub(crate) fn fetch(
    global: &Global,
    file_id: &str,
    out: Option<&Path>,
    timeout: Option<u64>,
) -> Result<()> {
    let out = out
        .map(std::path::absolute)
        .transpose()
        .context("cannot resolve --out")?;
    let mut connection = Connection::open(global)?;
    let started = connection.call(
        "fetch",
        json!({ "file_id": file_id, "out": out.map(|p| p.display().to_string()) }),
    )?;
    let file_id = s(&started["file_id"]).to_owned();
    let done = follow(&mut connection, &file_id, "in", timeout, global.json)?;
    print_result(global.json, &done, |r| {
        format!(
            "Saved {} ({}) to {}\nsha256 {}\n",
            s(&r["name"]),
            human_size(r["size"].as_u64().unwrap_or(0)),
            s(&r["path"]),
            s(&r["sha256"]),
        )
    })
}

/// Polls `files` for one transfer until it is complete (returned), failed (an error with its
/// reason) or the timeout passes; shows a progress bar with rate and ETA on a terminal.
fn follow(
    connection: &mut Connection,
    file_id: &str,
    direction: &str,
    timeout: Option<u64>,
    json: bool,
) -> Result<Value> {
    let deadline = timeout.map(|secs| std::time::Instant::now() + Duration::from_secs(secs));
    let bar = indicatif::ProgressBar::with_draw_target(
        None,
        if json {
            indicatif::ProgressDrawTarget::hidden()
        } else {
            indicatif::ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    loop {
        let list = connection.call("files", json!({ "file_id": file_id }))?;
        let entry = list
            .as_array()
            .and_then(|l| l.iter().find(|f| s(&f["direction"]) == direction))
            .cloned()
            .with_context(|| format!("the daemon no longer lists file {file_id}"))?;
        if bar.length().is_none() {
            bar.set_length(entry["size"].as_u64().unwrap_or(0));
            bar.set_message(s(&entry["name"]).to_owned());
        }
        bar.set_position(entry["bytes_done"].as_u64().unwrap_or(0));
        match s(&entry["state"]) {
            "complete" => {
                bar.finish_and_clear();
                return Ok(entry);
            }
            "failed" => {
                bar.abandon();
                bail!(
                    "the transfer of {} failed: {}",
                    s(&entry["name"]),
                    entry["error"].as_str().unwrap_or("no reason given")
                );
            }
            _ => {}
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            bar.abandon();
            bail!(
                "{} (file id {file_id}) is not complete within {} s; it goes on in the background (`encrypto files`)",
                s(&entry["name"]),
                timeout.unwrap_or(0)
            );
        }
        std::thread::sleep(POLL_EVERY);
    }
}

// ----- human-readable output -------------------------------------------------------------

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// A table with a header and columns padded to their widest cell.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut text = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        text.push_str(&line(row.clone()));
    }
    text
}

fn short_fingerprint(v: &Value) -> String {
    v.as_str()
        .and_then(|f| f.split(' ').next())
        .map_or_else(|| "-".to_owned(), |first| format!("{first}…"))
}

pub(crate) fn human_peers(result: &Value) -> String {
    let items = result.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "No peers yet: none discovered, none connected.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|p| {
            vec![
                p["name"].as_str().unwrap_or("?").to_owned(),
                s(&p["peer_id"]).to_owned(),
                s(&p["via"]).to_owned(),
                if p["connected"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
                p["addrs"]
                    .as_array()
                    .and_then(|a| a.first())
                    .map_or("-", |a| s(a))
                    .to_owned(),
            ]
        })
        .collect();
    table(&["NAME", "PEER ID", "VIA", "CONNECTED", "ADDRESS"], &rows)
}

pub(crate) fn human_contacts(result: &Value) -> String {
    let items = result.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "No contacts yet: add one with `encrypto add /ip4/ADDRESS/tcp/PORT/p2p/PEER_ID`.\n"
            .to_owned();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|c| {
            let verified = if c["key_changed"].as_bool() == Some(true) {
                "KEY CHANGED"
            } else if c["verified"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            };
            vec![
                s(&c["name"]).to_owned(),
                s(&c["peer_id"]).to_owned(),
                s(&c["cipher"]).to_owned(),
                verified.to_owned(),
                if c["relay"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
                short_fingerprint(&c["fingerprint"]),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "PEER ID",
            "CIPHER",
            "VERIFIED",
            "RELAY",
            "FINGERPRINT",
        ],
        &rows,
    )
}

pub(crate) fn human_search(name: &str, result: &Value) -> String {
    let items = result.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return format!("No one named \"{name}\" is known here yet.\n");
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|p| {
            vec![
                p["name"].as_str().unwrap_or("?").to_owned(),
                short_fingerprint(&p["fingerprint"]),
                s(&p["peer_id"]).to_owned(),
                s(&p["source"]).to_owned(),
            ]
        })
        .collect();
    table(&["NAME", "FINGERPRINT", "PEER ID", "SOURCE"], &rows)
}

pub(crate) fn human_history(to: &str, result: &Value) -> String {
    let items = result.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return format!("No messages with {to}.\n");
    }
    let mut text = String::new();
    for m in &items {
        let time = format_utc(m["timestamp"].as_u64().unwrap_or(0));
        let who = if s(&m["direction"]) == "out" {
            "me"
        } else {
            to
        };
        let body = match m["text"].as_str() {
            Some(t) => t.to_owned(),
            None => format!(
                "[file {} ({}), id {}]",
                s(&m["name"]),
                human_size(m["size"].as_u64().unwrap_or(0)),
                s(&m["file_id"])
            ),
        };
        let status = if s(&m["direction"]) == "out" {
            format!(", {}", s(&m["status"]))
        } else {
            String::new()
        };
        text.push_str(&format!(
            "[{time}] {who}: {body}  ({}{status})\n",
            s(&m["cipher"])
        ));
    }
    text
}

/// `1.5 MiB` for a byte count.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub(crate) fn human_files(result: &Value) -> String {
    let items = result.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "No file transfers.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|f| {
            let size = f["size"].as_u64().unwrap_or(0);
            let done = f["bytes_done"].as_u64().unwrap_or(0);
            let percent = (done * 100).checked_div(size).unwrap_or(100);
            let state = match s(&f["state"]) {
                "transferring" => format!("transferring {percent}%"),
                "failed" => format!("failed: {}", s(&f["error"])),
                other => other.to_owned(),
            };
            let name = if s(&f["name"]).is_empty() {
                "(sealed, held for the recipient)".to_owned()
            } else {
                s(&f["name"]).to_owned()
            };
            vec![
                s(&f["file_id"]).to_owned(),
                s(&f["direction"]).to_owned(),
                name,
                human_size(size),
                state,
                f["path"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    table(&["FILE ID", "DIR", "NAME", "SIZE", "STATE", "PATH"], &rows)
}

/// One line for a person watching events.
pub(crate) fn describe_event(e: &Value) -> String {
    let time = format_utc(e["timestamp"].as_u64().unwrap_or(0));
    let what = match s(&e["event"]) {
        "message" => format!(
            "message from {}: {} ({})",
            s(&e["from"]),
            e["text"].as_str().unwrap_or("[file]"),
            s(&e["cipher"])
        ),
        "delivered" => format!("delivered {} to {}", s(&e["id"]), s(&e["to"])),
        "peer_discovered" => format!("discovered {} via {}", s(&e["peer_id"]), s(&e["via"])),
        "peer_connected" => format!("connected to {}", s(&e["peer_id"])),
        "peer_disconnected" => format!("disconnected from {}", s(&e["peer_id"])),
        "cipher_changed" => format!(
            "chat with {} now uses {} (changed by {})",
            s(&e["peer"]),
            s(&e["cipher"]),
            s(&e["by"])
        ),
        "chat_deleted" => format!("chat with {} deleted (by {})", s(&e["peer"]), s(&e["by"])),
        "key_changed" => format!(
            "WARNING: the keys of {} changed; compare safety numbers, then `encrypto verify`",
            s(&e["peer_id"])
        ),
        "peer_incompatible" => format!(
            "{} runs another version of encrypto: messages to it stay queued until one of you \
             updates",
            s(&e["peer_id"])
        ),
        "file_offered" => format!(
            "{} offers {} ({}); file id {}",
            s(&e["from"]),
            s(&e["name"]),
            human_size(e["size"].as_u64().unwrap_or(0)),
            s(&e["file_id"])
        ),
        "file_progress" => format!(
            "file {}: {} of {}",
            s(&e["file_id"]),
            human_size(e["bytes_done"].as_u64().unwrap_or(0)),
            human_size(e["size"].as_u64().unwrap_or(0))
        ),
        "file_complete" => format!(
            "file {} complete{}",
            s(&e["file_id"]),
            e["path"]
                .as_str()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        ),
        "file_failed" => format!("file {} failed: {}", s(&e["file_id"]), s(&e["reason"])),
        other => format!("{other}: {e}"),
    };
    format!("[{time}] {what}")
}

/// `YYYY-MM-DD HH:MM:SS` in UTC for Unix milliseconds.
pub(crate) fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_right_across_eras_and_leap_days() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_798_761_599_000), "2026-12-31 23:59:59");
    }

    #[test]
    fn tables_pad_columns() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A     BB\nlong  x\n");
    }
}
