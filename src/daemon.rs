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
use encrypto_node::{DataDir, Multiaddr, NodeConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::commands::Global;
use crate::methods::Server;
use crate::rpc::{self, RpcError, code};
use crate::{UsageError, output, passphrase};

/// Replies and notifications queued for one client before it counts as stuck.
const CLIENT_QUEUE: usize = 1024;
/// How long the daemon waits for its listeners to report their addresses before it prints
/// the ready line anyway.
const LISTEN_WAIT: Duration = Duration::from_secs(5);

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
    let mut bootstrap = parse_addrs("--bootstrap", &options.bootstrap)?;
    let external = parse_addrs("--external-addr", &options.external_addr)?;
    let dir = DataDir::open_existing(global.data_dir_path()?)?;
    dir.require_identity()?;
    let file = ConfigFile::read(&dir.path().join(CONFIG_FILE))?;
    for addr in file.bootstrap {
        if !bootstrap.contains(&addr) {
            bootstrap.push(addr);
        }
    }
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
    if let Some(secs) = file.relay_max_circuit_secs {
        config.swarm.relay_max_circuit_duration = Duration::from_secs(secs);
    }
    if let Some(bytes) = file.relay_max_circuit_bytes {
        config.swarm.relay_max_circuit_bytes = bytes;
    }
    if let Some(n) = file.relay_max_reservations {
        config.swarm.relay_max_reservations = n;
    }
    if let Some(n) = file.relay_max_circuits {
        config.swarm.relay_max_circuits = n;
    }
    if let Some(limit) = file.download_limit {
        config.auto_download_max = limit;
    }
    config.bootstrap = bootstrap;
    config.external_addrs = external;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(global.json, dir, contents, config, socket))
}

/// The daemon's optional config file in the data dir.
const CONFIG_FILE: &str = "config.json";
/// A config file larger than this is not a config file.
const MAX_CONFIG_LEN: u64 = 1024 * 1024;

/// What `DATA_DIR/config.json` may set (every key optional):
///
/// ```json
/// {"bootstrap": ["/ip4/198.51.100.7/tcp/4001/p2p/12D3Koo..."],
///  "relay": {"max_circuit_secs": 3600, "max_circuit_bytes": 1073741824,
///            "max_reservations": 128, "max_circuits": 64},
///  "download_limit": 1073741824}
/// ```
///
/// `download_limit`: incoming files up to this many bytes download at once; larger ones wait
/// for `encrypto fetch` (0: every file waits).
#[derive(Debug, Default)]
struct ConfigFile {
    bootstrap: Vec<Multiaddr>,
    relay_max_circuit_secs: Option<u64>,
    relay_max_circuit_bytes: Option<u64>,
    relay_max_reservations: Option<usize>,
    relay_max_circuits: Option<usize>,
    download_limit: Option<u64>,
}

impl ConfigFile {
    /// Reads the file, or the defaults when there is none. A file that is there but wrong is
    /// an error naming it and the key.
    fn read(path: &Path) -> Result<ConfigFile> {
        let text = match std::fs::metadata(path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(ConfigFile::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            Ok(meta) if meta.len() > MAX_CONFIG_LEN => {
                bail!(
                    "{} is over {MAX_CONFIG_LEN} bytes; is it the right file?",
                    path.display()
                )
            }
            Ok(_) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        };
        let config: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let mut out = ConfigFile::default();
        if let Some(list) = config.get("bootstrap") {
            let Some(list) = list.as_array() else {
                bail!(
                    "{}: \"bootstrap\" must be a list of multiaddrs",
                    path.display()
                );
            };
            for v in list {
                let addr = v
                    .as_str()
                    .unwrap_or_default()
                    .parse::<Multiaddr>()
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{}: bootstrap entry {v} is not a multiaddr ({e})",
                            path.display()
                        )
                    })?;
                out.bootstrap.push(addr);
            }
        }
        if let Some(relay) = config.get("relay") {
            let number = |key: &str| -> Result<Option<u64>> {
                match relay.get(key) {
                    None => Ok(None),
                    Some(v) => v.as_u64().filter(|n| *n > 0).map(Some).ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}: relay.{key} must be a positive whole number",
                            path.display()
                        )
                    }),
                }
            };
            out.relay_max_circuit_secs = number("max_circuit_secs")?;
            out.relay_max_circuit_bytes = number("max_circuit_bytes")?;
            out.relay_max_reservations = number("max_reservations")?.map(|n| n as usize);
            out.relay_max_circuits = number("max_circuits")?.map(|n| n as usize);
        }
        if let Some(v) = config.get("download_limit") {
            out.download_limit = Some(v.as_u64().ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: download_limit must be a whole number of bytes",
                    path.display()
                )
            })?);
        }
        Ok(out)
    }
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
    let listeners = config.swarm.listen.len();
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let public = contents.identity.public().clone();
    let encrypto_node::Started {
        handle: node, task, ..
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

    let addrs = wait_listening(&node, listeners).await;
    let addr_strings: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let ready = if json {
        output::json(&json!({
            "event": "ready",
            "peer_id": node.peer_id().to_string(),
            "listen_addrs": addr_strings,
            "socket": socket,
        }))
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

/// The node's listen addresses once every listener has reported one (bounded wait).
async fn wait_listening(node: &encrypto_node::NodeHandle, listeners: usize) -> Vec<Multiaddr> {
    let deadline = tokio::time::Instant::now() + LISTEN_WAIT;
    loop {
        let addrs = node.listen_addrs().await.unwrap_or_default();
        if addrs.len() >= listeners || tokio::time::Instant::now() >= deadline {
            return addrs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_sets_bootstrap_and_relay_limits_and_names_what_is_wrong() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        assert!(ConfigFile::read(&path).unwrap().bootstrap.is_empty());
        std::fs::write(
            &path,
            r#"{"bootstrap": ["/ip4/127.0.0.1/tcp/4001"], "relay": {"max_circuit_secs": 60, "max_circuits": 3}}"#,
        )
        .unwrap();
        let config = ConfigFile::read(&path).unwrap();
        assert_eq!(config.bootstrap.len(), 1);
        assert_eq!(config.relay_max_circuit_secs, Some(60));
        assert_eq!(config.relay_max_circuits, Some(3));
        assert_eq!(config.relay_max_circuit_bytes, None);
        for (bad, want) in [
            ("{", "not valid JSON"),
            (r#"{"bootstrap": "x"}"#, "must be a list"),
            (r#"{"relay": {"max_circuits": -1}}"#, "relay.max_circuits"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = format!("{:#}", ConfigFile::read(&path).unwrap_err());
            assert!(err.contains(want) && err.contains("config.json"), "{err}");
        }
    }
}
