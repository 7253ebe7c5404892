//! The CLI's client commands: each connects to the daemon's socket in the data dir, calls one
//! JSON-RPC method and prints the result: one JSON object per line with `--json`, a sentence
//! or a table otherwise.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use encrypto_crypto::Cipher;
use encrypto_node::rpc::params::{
    AddParams, CipherParams, DEFAULT_WAIT_SECS, DeleteChatParams, FetchParams, FilesParams,
    ForwardParams, HistoryParams, RelayParams, SearchParams, SendFileParams, SendParams, Source,
    VerifyParams,
};
use encrypto_node::rpc::replies::{
    Added, ChatDeleted, CipherSet, ContactInfo, EventNote, FileInfo, FileState, Found, Message,
    Offer, Part, Peer, SendStatus, Sent, Subscribed, Verified,
};
use encrypto_node::rpc::{self, Call, Incoming, RpcError};
use encrypto_node::{DataDir, DataDirError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::commands::Global;
use crate::{human, output};

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

    /// Calls the daemon and returns its result, read as `R`; an error reply becomes an
    /// [`RpcError`].
    pub(crate) fn call<R: DeserializeOwned>(&mut self, call: &Call) -> Result<R> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = rpc::request_line(id, call.method(), &call.params());
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .context("cannot send to the daemon (did it stop?)")?;
        loop {
            let reply = self.read()?;
            if reply.id.as_ref().and_then(serde_json::Value::as_u64) != Some(id) {
                continue; // an event notification, or a stray reply
            }
            return Ok(reply.into_result()?);
        }
    }

    /// Waits up to `timeout` for the reply of a long call (`send --wait`).
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.reader.get_ref().set_read_timeout(Some(timeout)).ok();
    }

    /// The next line from the daemon.
    fn read(&mut self) -> Result<Incoming> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => bail!("the daemon closed the connection (did it stop?)"),
            Ok(_) => serde_json::from_str(&line)
                .context("the daemon sent something that is not a JSON-RPC reply"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                bail!("the daemon did not answer in time")
            }
            Err(e) => Err(e).context("cannot read from the daemon"),
        }
    }

    /// `watch`: subscribes and prints events until the daemon goes away or stdout closes.
    pub(crate) fn watch(mut self, json: bool) -> Result<()> {
        self.reader.get_ref().set_read_timeout(None).ok();
        let _: Subscribed = self.call(&Call::Subscribe)?;
        if !json {
            output::note("Watching events; Ctrl-C to stop.");
        }
        loop {
            let Some(event) = self.read()?.event() else {
                continue;
            };
            let text = match serde_json::from_value::<EventNote>(event.clone()) {
                Ok(note) if json => output::json(&note),
                Ok(note) => format!("{}\n", human::describe_event(&note)),
                // An event this build does not know (a newer daemon): shown as it came.
                Err(_) if json => output::json(&event),
                Err(_) => format!("{event}\n"),
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

/// Calls the daemon and prints its result: with `--json` as one line, otherwise what `human`
/// makes of it.
fn run<R: Serialize + DeserializeOwned>(
    global: &Global,
    call: &Call,
    human: impl FnOnce(&R) -> String,
) -> Result<()> {
    let result: R = Connection::open(global)?.call(call)?;
    let text = if global.json {
        output::json(&result)
    } else {
        human(&result)
    };
    output::print(&text)
}

/// As [`run`] for a list: with `--json`, one line per item.
fn run_list<T: Serialize + DeserializeOwned>(
    global: &Global,
    call: &Call,
    human: impl FnOnce(&[T]) -> String,
) -> Result<()> {
    let items: Vec<T> = Connection::open(global)?.call(call)?;
    let text = if global.json {
        items.iter().map(output::json).collect()
    } else {
        human(&items)
    };
    output::print(&text)
}

/// `peers`.
pub(crate) fn peers(global: &Global) -> Result<()> {
    run_list::<Peer>(global, &Call::Peers, human::peers)
}

/// `search`.
pub(crate) fn search(global: &Global, name: String, source: Option<Source>) -> Result<()> {
    let call = Call::Search(SearchParams {
        name: name.clone(),
        source,
    });
    run_list::<Found>(global, &call, |found| human::search(&name, found))
}

/// `add`.
pub(crate) fn add(global: &Global, peer: String) -> Result<()> {
    run(global, &Call::Add(AddParams { peer }), |r: &Added| {
        format!(
            "Added {} ({})\nfingerprint: {}\nCompare safety numbers with `encrypto verify {}` before trusting it.\n",
            r.name,
            r.peer_id,
            r.fingerprint.as_deref().unwrap_or("?"),
            r.peer_id,
        )
    })
}

/// `contacts`.
pub(crate) fn contacts(global: &Global) -> Result<()> {
    run_list::<ContactInfo>(global, &Call::Contacts, human::contacts)
}

/// `verify`.
pub(crate) fn verify(global: &Global, to: String, show: bool) -> Result<()> {
    let call = Call::Verify(VerifyParams {
        to: to.clone(),
        show: Some(show),
    });
    run(global, &call, |r: &Verified| {
        let (number, name) = (&r.safety_number, &r.name);
        if show {
            format!(
                "Safety number with {name}:\n  {number}\nCompare it with {name}'s; if it matches, run `encrypto verify {to}`.\n"
            )
        } else {
            format!("Safety number with {name}:\n  {number}\nMarked {name} as verified.\n")
        }
    })
}

/// `relay`.
pub(crate) fn relay(global: &Global, to: String, off: bool) -> Result<()> {
    let call = Call::Relay(RelayParams { to, on: Some(!off) });
    run(global, &call, |r: &ContactInfo| {
        let name = &r.name;
        if off {
            format!("{name} is no longer a relay for your files.\n")
        } else {
            format!("{name} now holds your files, sealed, for recipients who are offline.\n")
        }
    })
}

/// `history`.
pub(crate) fn history(global: &Global, to: String, limit: Option<u64>) -> Result<()> {
    let call = Call::History(HistoryParams {
        to: to.clone(),
        limit,
    });
    run_list::<Message>(global, &call, |items| human::history(&to, items))
}

/// `cipher`.
pub(crate) fn cipher(global: &Global, to: String, cipher: Cipher) -> Result<()> {
    let call = Call::Cipher(CipherParams {
        to: to.clone(),
        cipher,
    });
    run(global, &call, |r: &CipherSet| {
        format!(
            "The chat with {to} now uses {}; {to} is told.\n",
            r.cipher.as_str()
        )
    })
}

/// `delete-chat`.
pub(crate) fn delete_chat(global: &Global, to: String, for_both: bool) -> Result<()> {
    let call = Call::DeleteChat(DeleteChatParams {
        to: to.clone(),
        for_both: Some(for_both),
    });
    run(global, &call, |r: &ChatDeleted| {
        let n = r.deleted;
        let also = if for_both {
            format!("; {to} was asked to delete it too")
        } else {
            String::new()
        };
        format!(
            "Deleted {n} message{} with {to}{also}.\n",
            if n == 1 { "" } else { "s" }
        )
    })
}

/// `files`.
pub(crate) fn files(global: &Global) -> Result<()> {
    run_list::<FileInfo>(global, &Call::Files(FilesParams::default()), human::files)
}

/// `forward`.
pub(crate) fn forward(global: &Global, file_id: String, to: String) -> Result<()> {
    let call = Call::Forward(ForwardParams {
        file_id,
        to: to.clone(),
    });
    run(global, &call, |r: &Offer| {
        format!(
            "Forwarded {} ({}) to {to}; file id {}\n",
            r.name,
            human::size(r.size),
            r.file_id,
        )
    })
}

/// `watch`.
pub(crate) fn watch(global: &Global) -> Result<()> {
    Connection::open(global)?.watch(global.json)
}

/// Prints one result: with `--json` as one line, otherwise what `human` makes of it.
pub(crate) fn print_result<R: Serialize>(
    json: bool,
    result: &R,
    human: impl FnOnce(&R) -> String,
) -> Result<()> {
    let text = if json {
        output::json(result)
    } else {
        human(result)
    };
    output::print(&text)
}

/// `send`: with `wait`, the call lasts until delivery or the timeout; a timeout still prints
/// the queued message's id (with `--json`) before the error.
pub(crate) fn send(
    global: &Global,
    to: String,
    text: String,
    cipher: Option<Cipher>,
    wait: bool,
    timeout: Option<u64>,
) -> Result<()> {
    let secs = wait.then(|| timeout.unwrap_or(DEFAULT_WAIT_SECS));
    let mut connection = Connection::open(global)?;
    if let Some(secs) = secs {
        connection.set_timeout(Duration::from_secs(secs) + Duration::from_secs(30));
    }
    let call = Call::Send(SendParams {
        to: to.clone(),
        text,
        cipher,
        wait: Some(wait),
        timeout: secs,
    });
    match connection.call::<Sent>(&call) {
        Ok(result) => print_result(global.json, &result, |r| match r.status {
            SendStatus::Delivered => format!("Delivered message {} to {to}\n", r.id),
            SendStatus::Queued => format!(
                "Queued message {} for {to}; it is delivered in the background\n",
                r.id
            ),
        }),
        Err(e) => {
            if global.json
                && let Some(queued) = e
                    .downcast_ref::<RpcError>()
                    .and_then(RpcError::data_as::<Sent>)
            {
                output::print(&output::json(&queued))?;
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
    let offer: Offer = connection.call(&Call::SendFile(SendFileParams {
        to: to.to_owned(),
        path: path.display().to_string(),
        via: Some(via.to_vec()),
    }))?;
    if wait
        && let Err(e) = follow(
            &mut connection,
            &offer.file_id,
            Part::Out,
            timeout,
            global.json,
        )
    {
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
            r.name,
            human::size(r.size),
            r.file_id,
            r.sha256.as_deref().unwrap_or(""),
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
    let started: FileInfo = connection.call(&Call::Fetch(FetchParams {
        file_id: file_id.to_owned(),
        out: out.map(|p| p.display().to_string()),
    }))?;
    let done = follow(
        &mut connection,
        &started.file_id,
        Part::In,
        timeout,
        global.json,
    )?;
    print_result(global.json, &done, |r| {
        format!(
            "Saved {} ({}) to {}\nsha256 {}\n",
            r.name,
            human::size(r.size),
            r.path.as_deref().unwrap_or(""),
            r.sha256.as_deref().unwrap_or(""),
        )
    })
}

/// Polls `files` for one transfer until it is complete (returned), failed (an error with its
/// reason) or the timeout passes; shows a progress bar with rate and ETA on a terminal.
fn follow(
    connection: &mut Connection,
    file_id: &str,
    direction: Part,
    timeout: Option<u64>,
    json: bool,
) -> Result<FileInfo> {
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
    let call = Call::Files(FilesParams {
        file_id: Some(file_id.to_owned()),
    });
    loop {
        let list: Vec<FileInfo> = connection.call(&call)?;
        let entry = list
            .into_iter()
            .find(|f| f.direction == direction)
            .with_context(|| format!("the daemon no longer lists file {file_id}"))?;
        if bar.length().is_none() {
            bar.set_length(entry.size);
            bar.set_message(entry.name.clone());
        }
        bar.set_position(entry.bytes_done);
        match entry.state {
            FileState::Complete => {
                bar.finish_and_clear();
                return Ok(entry);
            }
            FileState::Failed => {
                bar.abandon();
                bail!(
                    "the transfer of {} failed: {}",
                    entry.name,
                    entry.error.as_deref().unwrap_or("no reason given")
                );
            }
            FileState::Offered | FileState::Transferring => {}
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            bar.abandon();
            bail!(
                "{} (file id {file_id}) is not complete within {} s; it goes on in the background (`encrypto files`)",
                entry.name,
                timeout.unwrap_or(0)
            );
        }
        std::thread::sleep(POLL_EVERY);
    }
}
