//! `encrypto daemon`: the headless node. Unlocks the identity, starts the node, serves the
//! control socket (`DATA_DIR/encrypto.sock`, mode 0600) until SIGINT or SIGTERM, then stops
//! cleanly: the socket is removed and the store flushed.
//!
//! Startup refuses, with one line and a non-zero exit, a second daemon on the same data dir
//! (its socket answers), a socket file left by a daemon that did not stop cleanly, an
//! unparsable multiaddr and an address that cannot be listened on.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use encrypto_crypto::keystore::KeystoreContents;
use encrypto_node::config::ConfigFile;
use encrypto_node::rpc::{self, RpcError, code};
use encrypto_node::{DataDir, Multiaddr, NodeConfig};
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::commands::Global;
use crate::methods::Server;
use crate::{UsageError, output, passphrase};

/// Replies and notifications queued for one client before it counts as stuck.
const CLIENT_QUEUE: usize = 1024;

/// The daemon's command-line options.
#[derive(Debug, Default)]
pub(crate) struct Options {
    pub(crate) listen: Vec<String>,
    pub(crate) bootstrap: Vec<String>,
    pub(crate) no_mdns: bool,
    pub(crate) relay_server: bool,
    pub(crate) external_addr: Vec<String>,
}

/// Runs the daemon until a signal stops it.
pub(crate) fn run(global: &Global, options: Options) -> Result<()> {
    // Everything that can be refused is checked before the passphrase is asked for.
    let listen = parse_addrs("--listen", &options.listen)?;
    let bootstrap = parse_addrs("--bootstrap", &options.bootstrap)?;
    let external = parse_addrs("--external-addr", &options.external_addr)?;
    let dir = DataDir::open_existing(global.data_dir_path()?)?;
    dir.require_identity()?;
    let file = ConfigFile::load(dir.path())?;
    let socket = rpc::socket_path(dir.path());
    check_socket(&socket, dir.path())?;

    let passphrase = passphrase::current(global.passphrase_file.as_deref()).get()?;
    let contents = dir.unlock(passphrase.as_bytes())?;
    drop(passphrase);

    let mut config = NodeConfig::new(dir.path().to_path_buf());
    if !listen.is_empty() {
        config.swarm.listen = listen;
    }
    config.swarm.mdns = !options.no_mdns;
    config.swarm.relay_server = options.relay_server;
    // The flags' bootstrap peers first, then the file's.
    config.bootstrap = bootstrap;
    file.apply(&mut config);
    config.external_addrs = external;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(global.json, dir, contents, config, socket))
}

/// `--flag VALUE` values as multiaddrs; a bad one is a usage error naming the flag.
fn parse_addrs(flag: &str, values: &[String]) -> Result<Vec<Multiaddr>> {
    values
        .iter()
        .map(|value| {
            value.parse::<Multiaddr>().map_err(|e| {
                UsageError(format!(
                    "{flag} {value:?} is not a multiaddr ({e}); expected e.g. /ip4/127.0.0.1/tcp/4001"
                ))
                .into()
            })
        })
        .collect()
}

/// Refuses to start over a daemon that runs, or over a file that is in the socket's place.
fn check_socket(socket: &Path, data_dir: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", socket.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; move it away and start the daemon again",
            socket.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => bail!(
            "a daemon is already running for {} (it answers on {}); stop it first, or use another --data-dir",
            data_dir.display(),
            socket.display()
        ),
        Err(_) => bail!(
            "{} is left over from a daemon that did not stop cleanly (nothing answers on it); if no encrypto daemon runs for this data dir, remove it and start again",
            socket.display()
        ),
    }
}

/// Binds the socket with mode 0600 (the data dir is 0700 as well).
fn bind_socket(socket: &Path) -> Result<UnixListener> {
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("cannot create the control socket {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {} to its owner", socket.display()))?;
    Ok(listener)
}

/// The line `--json` prints once the daemon serves its socket.
#[derive(Serialize)]
struct Ready<'a> {
    event: &'static str,
    peer_id: String,
    listen_addrs: &'a [String],
    socket: &'a Path,
}

/// Removes the socket file when dropped, so every way out of [`serve`] cleans up.
struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != ErrorKind::NotFound
        {
            warn!(path = %self.0.display(), error = %e, "cannot remove the control socket");
        }
    }
}

async fn serve(
    json: bool,
    dir: DataDir,
    contents: KeystoreContents,
    config: NodeConfig,
    socket: PathBuf,
) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let public = contents.identity.public().clone();
    // `start` returns once every listener has reported its addresses.
    let encrypto_node::Started {
        handle: node,
        task,
        listen_addrs: addrs,
        ..
    } = encrypto_node::start(
        contents.identity,
        &contents.name,
        contents.created_ms,
        contents.storage_key,
        config,
    )?;
    let server = Arc::new(Server::new(node.clone(), contents.name, public, dir));
    let listener = match bind_socket(&socket) {
        Ok(listener) => listener,
        Err(e) => {
            node.shutdown().await;
            let _ = task.await;
            return Err(e);
        }
    };
    let guard = SocketGuard(socket.clone());

    let addr_strings: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let ready = if json {
        output::json(&Ready {
            event: "ready",
            peer_id: node.peer_id().to_string(),
            listen_addrs: &addr_strings,
            socket: &socket,
        })
    } else {
        format!(
            "ready: peer {} listening on {} (control socket {})\n",
            node.peer_id(),
            if addr_strings.is_empty() {
                "nothing yet".to_owned()
            } else {
                addr_strings.join(", ")
            },
            socket.display()
        )
    };
    output::print(&ready)?;
    info!(peer = %node.peer_id(), "daemon ready");

    let stop = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(handle_client(Arc::clone(&server), stream));
                }
                Err(e) => warn!(error = %e, "cannot accept a control connection"),
            },
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };
    info!(signal = stop, "stopping");
    // No new clients from here; the socket goes before the node so nobody connects to a
    // daemon that is going away.
    drop(listener);
    drop(guard);
    node.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    output::note(&format!("encrypto daemon stopped ({stop})"));
    Ok(())
}

/// Serves one client: reads request lines, answers each in order; `subscribe` adds event
/// notifications to the same stream.
async fn handle_client(server: Arc<Server>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Value>(CLIENT_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(value) = rx.recv().await {
            let mut line = value.to_string();
            line.push('\n');
            if write.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let mut client = Client {
        tx,
        subscriptions: Vec::new(),
    };
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = u64::try_from(rpc::MAX_LINE + 1).unwrap_or(u64::MAX);
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "control connection read failed");
                break;
            }
        }
        if line.len() > rpc::MAX_LINE {
            let error = RpcError::new(
                code::INVALID_REQUEST,
                format!("request line longer than {} bytes", rpc::MAX_LINE),
            );
            let _ = client
                .tx
                .send(rpc::error_response(&Value::Null, &error))
                .await;
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Some(reply) = server.handle_line(&line, &mut client).await
            && client.tx.send(reply).await.is_err()
        {
            break;
        }
    }
    // The client is gone (or misbehaved): its subscriptions end with it.
    for subscription in client.subscriptions.drain(..) {
        subscription.abort();
    }
    drop(client);
    let _ = writer.await;
}

/// One control connection: where its replies go, and its event subscriptions.
pub(crate) struct Client {
    /// Replies and notifications, written in order by the connection's writer task.
    pub(crate) tx: mpsc::Sender<Value>,
    /// Tasks forwarding node events to this client.
    pub(crate) subscriptions: Vec<tokio::task::JoinHandle<()>>,
}
