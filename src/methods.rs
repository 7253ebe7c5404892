//! The daemon's JSON-RPC methods: each reads its parameters, calls the node through its
//! handle, and answers with the JSON fields of the public contract (`docs/rpc.md`). The CLI
//! prints these same objects, so the names here are the names scripts see.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use encrypto_crypto::file::FileId;
use encrypto_crypto::keystore::KdfParams;
use encrypto_crypto::{Cipher, PeerId, PublicIdentity, SafetyNumber};
use encrypto_node::FileTransfer;
use encrypto_node::view::{Body, Contact, Direction, Message, Status, TransferRole};
use encrypto_node::{DataDir, Multiaddr, NodeEvent, NodeHandle, PeerInfo};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::daemon::Client;
use crate::rpc::{self, RpcError, code};

/// The longest `send --wait` may wait.
const MAX_WAIT_SECS: u64 = 24 * 60 * 60;
/// `send --wait` without a timeout waits this long.
pub(crate) const DEFAULT_WAIT_SECS: u64 = 60;

/// What the methods need: the node and who we are.
pub(crate) struct Server {
    node: NodeHandle,
    name: String,
    public: PublicIdentity,
    data_dir: PathBuf,
}

type Params = Map<String, Value>;
type MethodResult = Result<Value, RpcError>;

impl Server {
    pub(crate) fn new(
        node: NodeHandle,
        name: String,
        public: PublicIdentity,
        dir: DataDir,
    ) -> Self {
        Server {
            node,
            name,
            public,
            data_dir: dir.path().to_path_buf(),
        }
    }

    /// Answers one request line (a request, a notification or a batch); `None` when nothing
    /// is to be sent back (notifications, `subscribe`, whose reply is already queued).
    pub(crate) async fn handle_line(&self, line: &[u8], client: &mut Client) -> Option<Value> {
        match rpc::parse_line(line) {
            rpc::Line::One(request) => self.handle_request(request, client).await,
            rpc::Line::Batch(batch) => {
                let mut replies = Vec::new();
                for request in batch {
                    if let Some(reply) = self.handle_request(request, client).await {
                        replies.push(reply);
                    }
                }
                (!replies.is_empty()).then_some(Value::Array(replies))
            }
        }
    }

    async fn handle_request(
        &self,
        request: Result<rpc::Request, Value>,
        client: &mut Client,
    ) -> Option<Value> {
        let rpc::Request { id, method, params } = match request {
            Ok(request) => request,
            Err(reply) => return Some(reply),
        };
        let reply_id = id.clone().unwrap_or(Value::Null);
        if method == "subscribe" {
            // The reply goes first, then the events, on the same stream.
            let events = self.node.subscribe();
            if id.is_some() {
                let reply = rpc::response(&reply_id, json!({ "subscribed": true }));
                if client.tx.send(reply).await.is_err() {
                    return None;
                }
            }
            client.subscriptions.push(tokio::spawn(forward_events(
                events,
                client.tx.clone(),
                self.node.peer_id(),
            )));
            return None;
        }
        let result = self.call(&method, &params).await;
        id.map(|id| match result {
            Ok(value) => rpc::response(&id, value),
            Err(error) => rpc::error_response(&id, &error),
        })
    }

    async fn call(&self, method: &str, params: &Params) -> MethodResult {
        match method {
            "whoami" => self.whoami().await,
            "peers" => self.peers().await,
            "search" => self.search(params).await,
            "add" => self.add(params).await,
            "contacts" => self.contacts().await,
            "verify" => self.verify(params).await,
            "relay" => self.relay(params).await,
            "send" => self.send(params).await,
            "history" => self.history(params).await,
            "cipher" => self.cipher(params).await,
            "delete-chat" | "delete_chat" => self.delete_chat(params).await,
            "passwd" => self.passwd(params).await,
            "send-file" | "send_file" => self.send_file(params).await,
            "fetch" => self.fetch(params).await,
            "files" => self.files(params).await,
            "forward" => self.forward(params).await,
            other => Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!(
                    "no method {other:?}; the methods are whoami, peers, search, add, contacts, verify, send, history, cipher, delete-chat, subscribe, passwd"
                ),
            )),
        }
    }

    async fn whoami(&self) -> MethodResult {
        let addrs = self.node.listen_addrs().await.map_err(RpcError::failed)?;
        Ok(json!({
            "name": self.name,
            "peer_id": self.node.peer_id().to_string(),
            "fingerprint": self.public.fingerprint().to_string(),
            "listen_addrs": strings(&addrs),
        }))
    }

    async fn peers(&self) -> MethodResult {
        let peers = self.node.peers().await.map_err(RpcError::failed)?;
        Ok(Value::Array(peers.iter().map(peer_json).collect()))
    }

    async fn search(&self, params: &Params) -> MethodResult {
        let name = required_str(params, "name")?;
        if name.trim().is_empty() {
            return Err(RpcError::invalid_params("the name to search for is empty"));
        }
        let (use_local, use_dht) = match params.get("source").and_then(Value::as_str) {
            None => (true, true),
            Some("local") => (true, false),
            Some("dht") => (false, true),
            Some(other) => {
                return Err(RpcError::invalid_params(format!(
                    "unknown source {other:?}: local or dht (or leave it out for both)"
                )));
            }
        };
        // Both at once: the local answer is immediate, the DHT's takes a lookup.
        let (local, dht) = tokio::join!(
            async {
                if use_local {
                    self.node.search_local(name).await
                } else {
                    Ok(Vec::new())
                }
            },
            async {
                if use_dht {
                    self.node.search_dht(name).await
                } else {
                    Ok(Vec::new())
                }
            }
        );
        let local = local.map_err(RpcError::failed)?;
        let dht = dht.map_err(RpcError::failed)?;
        let contacts = self.contacts_by_peer().await?;
        let mut out: Vec<Value> = local
            .iter()
            .map(|p| {
                let fingerprint = contacts
                    .get(&p.peer_id)
                    .and_then(Contact::fingerprint)
                    .map(|f| f.to_string());
                json!({
                    "peer_id": p.peer_id.to_string(),
                    "name": p.name,
                    "fingerprint": fingerprint,
                    "source": "local",
                })
            })
            .collect();
        for entry in dht {
            if local.iter().any(|p| p.peer_id == entry.peer_id) {
                continue;
            }
            out.push(json!({
                "peer_id": entry.peer_id.to_string(),
                "name": entry.name,
                "fingerprint": entry.fingerprint.to_string(),
                "source": "dht",
            }));
        }
        Ok(Value::Array(out))
    }

    async fn add(&self, params: &Params) -> MethodResult {
        let target = required_str(params, "peer")?.trim();
        let result = if target.starts_with('/') {
            let addr: Multiaddr = target.parse().map_err(|e| {
                RpcError::invalid_params(format!("{target:?} is not a multiaddr: {e}"))
            })?;
            self.node.add_peer(addr).await
        } else {
            let peer: PeerId = target.parse().map_err(|_| {
                RpcError::invalid_params(format!(
                    "{target:?} is neither a peer id nor a multiaddr ending in /p2p/PEER_ID"
                ))
            })?;
            self.node.add_peer_id(peer).await
        };
        let contact = result.map_err(RpcError::failed)?;
        Ok(json!({
            "peer_id": contact.peer_id.to_string(),
            "name": contact.name,
            "fingerprint": contact.fingerprint().map(|f| f.to_string()),
            "verified": contact.verified,
        }))
    }

    async fn contacts(&self) -> MethodResult {
        let contacts = self.node.contacts().await.map_err(RpcError::failed)?;
        Ok(Value::Array(contacts.iter().map(contact_json).collect()))
    }

    async fn verify(&self, params: &Params) -> MethodResult {
        let show_only = optional_bool(params, "show")?.unwrap_or(false);
        let contact = self.resolve(params).await?;
        let contact = if show_only {
            contact
        } else {
            self.node
                .verify_contact(contact.peer_id)
                .await
                .map_err(RpcError::failed)?
        };
        // With `show` on a changed key, the number is the one for the keys being offered.
        let keys = match (&contact.presented, show_only) {
            (Some(presented), true) => Some(presented.clone()),
            _ => contact.public.clone(),
        }
        .ok_or_else(|| RpcError::failed("the contact's pinned keys do not parse"))?;
        Ok(json!({
            "peer_id": contact.peer_id.to_string(),
            "name": contact.name,
            "safety_number": SafetyNumber::between(&self.public, &keys).to_string(),
            "verified": contact.verified,
            "key_changed": contact.key_changed,
        }))
    }

    /// Marks a contact as a relay for files (`on`, default true) or clears the mark.
    async fn relay(&self, params: &Params) -> MethodResult {
        let on = optional_bool(params, "on")?.unwrap_or(true);
        let contact = self.resolve(params).await?;
        let contact = self
            .node
            .set_relay(contact.peer_id, on)
            .await
            .map_err(RpcError::failed)?;
        Ok(contact_json(&contact))
    }

    async fn send(&self, params: &Params) -> MethodResult {
        // Parameters first: a malformed request is an invalid-params error whoever `to` is.
        let text = required_str(params, "text")?;
        if text.is_empty() {
            return Err(RpcError::invalid_params("the message is empty"));
        }
        let cipher = optional_cipher(params)?;
        let wait = optional_bool(params, "wait")?.unwrap_or(false);
        let secs = optional_u64(params, "timeout")?.unwrap_or(DEFAULT_WAIT_SECS);
        if secs == 0 || secs > MAX_WAIT_SECS {
            return Err(RpcError::invalid_params(format!(
                "timeout must be 1 to {MAX_WAIT_SECS} seconds"
            )));
        }
        let contact = self.resolve(params).await?;
        // Subscribed before sending, so the delivery cannot slip past.
        let mut events = self.node.subscribe();
        let peer = contact.peer_id;
        let id = self
            .node
            .send_text_with(peer, text.to_owned(), cipher)
            .await
            .map_err(RpcError::failed)?;
        if !wait {
            return Ok(json!({ "id": id.to_string(), "status": "queued" }));
        }
        let delivered = tokio::time::timeout(Duration::from_secs(secs), async {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::Delivered { id: done, .. }) if done == id => return true,
                    Ok(_) => {}
                    // Events were missed: the store knows whether it was delivered.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Ok(history) = self.node.history(peer, None).await
                            && history
                                .iter()
                                .any(|m| m.id == id && m.status == Status::Delivered)
                        {
                            return true;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return false,
                }
            }
        })
        .await
        .unwrap_or(false);
        if delivered {
            Ok(json!({ "id": id.to_string(), "status": "delivered" }))
        } else {
            Err(RpcError::new(
                code::TIMEOUT,
                format!(
                    "not delivered within {secs} s; message {id} stays queued and is delivered when {} is reachable",
                    contact.name
                ),
            )
            .with_data(json!({ "id": id.to_string(), "status": "queued" })))
        }
    }

    async fn history(&self, params: &Params) -> MethodResult {
        let limit = optional_u64(params, "limit")?
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .filter(|n| *n > 0);
        let contact = self.resolve(params).await?;
        let history = self
            .node
            .history(contact.peer_id, limit)
            .await
            .map_err(RpcError::failed)?;
        Ok(Value::Array(history.iter().map(message_json).collect()))
    }

    async fn cipher(&self, params: &Params) -> MethodResult {
        let cipher = optional_cipher(params)?
            .ok_or_else(|| RpcError::invalid_params("missing \"cipher\": aes or rsa"))?;
        let contact = self.resolve(params).await?;
        self.node
            .set_cipher(contact.peer_id, cipher)
            .await
            .map_err(RpcError::failed)?;
        Ok(json!({ "peer": contact.peer_id.to_string(), "cipher": cipher.as_str() }))
    }

    async fn delete_chat(&self, params: &Params) -> MethodResult {
        let for_both = optional_bool(params, "for_both")?.unwrap_or(false);
        let contact = self.resolve(params).await?;
        let deleted = self
            .node
            .delete_chat(contact.peer_id, for_both)
            .await
            .map_err(RpcError::failed)?;
        Ok(json!({
            "peer": contact.peer_id.to_string(),
            "deleted": deleted,
            "for_both": for_both,
        }))
    }

    async fn passwd(&self, params: &Params) -> MethodResult {
        let old = required_str(params, "passphrase")?.to_owned();
        let new = required_str(params, "new_passphrase")?.to_owned();
        let data_dir = self.data_dir.clone();
        let result = tokio::task::spawn_blocking(move || {
            let old = zeroize::Zeroizing::new(old);
            let new = zeroize::Zeroizing::new(new);
            DataDir::open_existing(data_dir)?.change_passphrase(
                old.as_bytes(),
                new.as_bytes(),
                KdfParams::RECOMMENDED,
                &mut rand::rng(),
            )
        })
        .await
        .map_err(RpcError::failed)?;
        result.map_err(RpcError::failed)?;
        Ok(json!({ "ok": true }))
    }

    async fn send_file(&self, params: &Params) -> MethodResult {
        let path = absolute_path(params, "path")?
            .ok_or_else(|| RpcError::invalid_params("missing \"path\""))?;
        let via_names = match params.get("via") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        RpcError::invalid_params("\"via\" must be a list of contacts")
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(RpcError::invalid_params(
                    "\"via\" must be a list of contacts",
                ));
            }
        };
        let contact = self.resolve(params).await?;
        let mut via = Vec::new();
        for name in via_names {
            let contacts = self.node.contacts().await.map_err(RpcError::failed)?;
            via.push(resolve_contact(&name, contacts)?.peer_id);
        }
        let sent = self
            .node
            .send_file(contact.peer_id, path, via)
            .await
            .map_err(RpcError::failed)?;
        Ok(offer_json(&sent))
    }

    async fn fetch(&self, params: &Params) -> MethodResult {
        let file_id = file_id_param(params)?;
        let out = absolute_path(params, "out")?;
        let transfer = self
            .node
            .fetch_file(file_id, out)
            .await
            .map_err(RpcError::failed)?;
        Ok(file_json(&transfer))
    }

    async fn files(&self, params: &Params) -> MethodResult {
        let only = match params.get("file_id") {
            None | Some(Value::Null) => None,
            Some(_) => Some(file_id_param(params)?),
        };
        let files = self.node.files().await.map_err(RpcError::failed)?;
        Ok(Value::Array(
            files
                .iter()
                .filter(|f| only.is_none_or(|id| f.file_id == id))
                .map(file_json)
                .collect(),
        ))
    }

    async fn forward(&self, params: &Params) -> MethodResult {
        let file_id = file_id_param(params)?;
        let contact = self.resolve(params).await?;
        let sent = self
            .node
            .forward_file(file_id, contact.peer_id)
            .await
            .map_err(RpcError::failed)?;
        Ok(offer_json(&sent))
    }

    async fn contacts_by_peer(&self) -> Result<HashMap<PeerId, Contact>, RpcError> {
        let contacts = self.node.contacts().await.map_err(RpcError::failed)?;
        Ok(contacts.into_iter().map(|c| (c.peer_id, c)).collect())
    }

    /// The contact that `params.to` names: a peer id, or the name of exactly one contact.
    async fn resolve(&self, params: &Params) -> Result<Contact, RpcError> {
        let to = required_str(params, "to")?.trim();
        let contacts = self.node.contacts().await.map_err(RpcError::failed)?;
        resolve_contact(to, contacts)
    }
}

/// Finds the contact `to` names (a peer id, or a name matched case-insensitively), with an
/// error a person can act on otherwise.
pub(crate) fn resolve_contact(to: &str, contacts: Vec<Contact>) -> Result<Contact, RpcError> {
    if let Ok(peer) = to.parse::<PeerId>() {
        return contacts
            .into_iter()
            .find(|c| c.peer_id == peer)
            .ok_or_else(|| {
                RpcError::failed(format!(
                    "{peer} is not a contact; add it first with `encrypto add /ip4/ADDRESS/tcp/PORT/p2p/{peer}`"
                ))
            });
    }
    if to.is_empty() {
        return Err(RpcError::invalid_params(
            "no recipient: give a contact's name or peer id",
        ));
    }
    let wanted = to.to_lowercase();
    let (mut exact, others): (Vec<Contact>, Vec<Contact>) = contacts
        .into_iter()
        .partition(|c| c.name.to_lowercase() == wanted);
    match exact.len() {
        1 => Ok(exact.remove(0)),
        0 => {
            let mut close: Vec<&Contact> = others
                .iter()
                .filter(|c| {
                    let name = c.name.to_lowercase();
                    name.contains(&wanted)
                        || wanted.contains(&name)
                        || edit_distance(&name, &wanted) <= 2
                })
                .collect();
            close.truncate(3);
            let hint = if close.is_empty() {
                if others.is_empty() {
                    "you have no contacts yet; add one with `encrypto add PEER`".to_owned()
                } else {
                    "`encrypto contacts` lists them".to_owned()
                }
            } else {
                let names: Vec<String> = close
                    .iter()
                    .map(|c| format!("\"{}\" ({})", c.name, c.peer_id))
                    .collect();
                format!("did you mean {}?", names.join(" or "))
            };
            Err(RpcError::failed(format!(
                "no contact named \"{to}\"; {hint}"
            )))
        }
        n => {
            let candidates: Vec<String> = exact
                .iter()
                .map(|c| {
                    let fp = c.fingerprint().map(|f| f.short()).unwrap_or_default();
                    format!("{} (fingerprint {fp}…)", c.peer_id)
                })
                .collect();
            Err(RpcError::failed(format!(
                "{n} contacts are named \"{to}\": {}; use the peer id instead",
                candidates.join(", ")
            )))
        }
    }
}

/// Levenshtein distance over chars (names are at most 64 bytes).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn required_str<'a>(params: &'a Params, name: &str) -> Result<&'a str, RpcError> {
    match params.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(RpcError::invalid_params(format!(
            "\"{name}\" must be a string"
        ))),
        None => Err(RpcError::invalid_params(format!("missing \"{name}\""))),
    }
}

fn optional_bool(params: &Params, name: &str) -> Result<Option<bool>, RpcError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(RpcError::invalid_params(format!(
            "\"{name}\" must be true or false"
        ))),
    }
}

fn optional_u64(params: &Params, name: &str) -> Result<Option<u64>, RpcError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| RpcError::invalid_params(format!("\"{name}\" must be a whole number"))),
    }
}

fn optional_cipher(params: &Params) -> Result<Option<Cipher>, RpcError> {
    match params.get("cipher") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| RpcError::invalid_params(format!("unknown cipher {s:?}: aes or rsa"))),
        Some(_) => Err(RpcError::invalid_params(
            "\"cipher\" must be \"aes\" or \"rsa\"",
        )),
    }
}

fn file_id_param(params: &Params) -> Result<FileId, RpcError> {
    let text = required_str(params, "file_id")?;
    text.trim().parse().map_err(|_| {
        RpcError::invalid_params(format!(
            "{text:?} is not a file id (32 hex digits, as `encrypto files` shows)"
        ))
    })
}

/// An optional path parameter, which must be absolute (the daemon's working directory is not
/// the caller's; the CLI sends absolute paths).
fn absolute_path(params: &Params, name: &str) -> Result<Option<PathBuf>, RpcError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if Path::new(s).is_absolute() => Ok(Some(PathBuf::from(s))),
        Some(Value::String(s)) => Err(RpcError::invalid_params(format!(
            "\"{name}\" must be an absolute path, not {s:?}"
        ))),
        Some(_) => Err(RpcError::invalid_params(format!(
            "\"{name}\" must be a string"
        ))),
    }
}

/// What `send-file` and `forward` answer.
fn offer_json(f: &FileTransfer) -> Value {
    json!({
        "file_id": f.file_id.to_string(),
        "name": f.name,
        "size": f.size,
        "sha256": f.sha256.map(hex::encode),
        "relays": peer_strings(&f.relays),
    })
}

fn peer_strings(peers: &[PeerId]) -> Vec<String> {
    peers.iter().map(ToString::to_string).collect()
}

/// One entry of `files`.
pub(crate) fn file_json(f: &FileTransfer) -> Value {
    json!({
        "file_id": f.file_id.to_string(),
        "peer": f.peer.to_string(),
        "name": f.name,
        "size": f.size,
        "direction": role_str(f.role),
        "state": f.state.as_str(),
        "bytes_done": f.bytes_done,
        "path": f.path.as_ref().map(|p| p.display().to_string()),
        "sha256": f.sha256.map(hex::encode),
        "error": f.error,
        "relays": peer_strings(&f.relays),
    })
}

fn role_str(role: TransferRole) -> &'static str {
    match role {
        TransferRole::Send => "out",
        TransferRole::Receive => "in",
        TransferRole::Relay => "relay",
    }
}

fn strings(addrs: &[Multiaddr]) -> Vec<String> {
    addrs.iter().map(ToString::to_string).collect()
}

fn peer_json(p: &PeerInfo) -> Value {
    json!({
        "peer_id": p.peer_id.to_string(),
        "name": p.name,
        "addrs": strings(&p.addrs),
        "connected": p.connected,
        "via": p.via.as_str(),
    })
}

fn contact_json(c: &Contact) -> Value {
    json!({
        "peer_id": c.peer_id.to_string(),
        "name": c.name,
        "fingerprint": c.fingerprint().map(|f| f.to_string()),
        "cipher": c.cipher.as_str(),
        "verified": c.verified,
        "key_changed": c.key_changed,
        "relay": c.relay,
    })
}

fn message_json(m: &Message) -> Value {
    let (text, file_id) = match &m.body {
        Body::Text(text) => (Some(text.clone()), None),
        Body::File { file_id, .. } => (None, Some(hex::encode(file_id))),
    };
    let mut value = json!({
        "id": m.id.to_string(),
        "peer": m.peer.to_string(),
        "direction": direction_str(m.direction),
        "text": text,
        "file_id": file_id,
        "cipher": m.cipher.as_str(),
        "timestamp": m.timestamp_ms,
        "status": match m.status {
            Status::Queued => "queued",
            Status::Sent => "sent",
            // An incoming message is in the history because it was delivered here.
            Status::Delivered | Status::Received => "delivered",
        },
    });
    if let Body::File { name, size, .. } = &m.body {
        value["name"] = json!(name);
        value["size"] = json!(size);
    }
    value
}

fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::In => "in",
        Direction::Out => "out",
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Who did something to a chat, as a PeerId: us (`Out`) or the peer (`In`).
fn by(direction: Direction, me: PeerId, peer: PeerId) -> String {
    match direction {
        Direction::Out => me.to_string(),
        Direction::In => peer.to_string(),
    }
}

/// A node event as the `watch` / `subscribe` object, or `None` for events not published.
pub(crate) fn event_json(event: &NodeEvent, me: PeerId) -> Option<Value> {
    let timestamp = now_ms();
    let value = match event {
        NodeEvent::MessageReceived {
            peer,
            id,
            timestamp_ms,
            cipher,
            body,
            ..
        } => {
            let (text, file_id) = match body {
                Body::Text(text) => (Some(text.clone()), None),
                Body::File { file_id, .. } => (None, Some(hex::encode(file_id))),
            };
            json!({
                "event": "message", "timestamp": timestamp, "id": id.to_string(),
                "from": peer.to_string(), "text": text, "file_id": file_id,
                "cipher": cipher.as_str(), "sent_at": timestamp_ms,
            })
        }
        NodeEvent::Delivered { peer, id } => json!({
            "event": "delivered", "timestamp": timestamp, "id": id.to_string(),
            "to": peer.to_string(),
        }),
        NodeEvent::PeerDiscovered { peer, via } => json!({
            "event": "peer_discovered", "timestamp": timestamp,
            "peer_id": peer.to_string(), "via": via.as_str(),
        }),
        NodeEvent::PeerConnected { peer } => json!({
            "event": "peer_connected", "timestamp": timestamp, "peer_id": peer.to_string(),
        }),
        NodeEvent::PeerDisconnected { peer } => json!({
            "event": "peer_disconnected", "timestamp": timestamp, "peer_id": peer.to_string(),
        }),
        NodeEvent::CipherChanged {
            peer,
            cipher,
            by: who,
        } => json!({
            "event": "cipher_changed", "timestamp": timestamp, "peer": peer.to_string(),
            "cipher": cipher.as_str(), "by": by(*who, me, *peer),
        }),
        NodeEvent::ChatDeleted {
            peer,
            deleted,
            by: who,
        } => json!({
            "event": "chat_deleted", "timestamp": timestamp, "peer": peer.to_string(),
            "by": by(*who, me, *peer), "deleted": deleted,
        }),
        NodeEvent::KeyChanged { peer } => json!({
            "event": "key_changed", "timestamp": timestamp, "peer_id": peer.to_string(),
        }),
        NodeEvent::PeerIncompatible { peer } => json!({
            "event": "peer_incompatible", "timestamp": timestamp, "peer_id": peer.to_string(),
        }),
        NodeEvent::ProfileVerified { peer, name } => json!({
            "event": "profile_verified", "timestamp": timestamp,
            "peer_id": peer.to_string(), "name": name,
        }),
        NodeEvent::Listening { addr } => json!({
            "event": "listening", "timestamp": timestamp, "addr": addr.to_string(),
        }),
        NodeEvent::HolePunch { peer, direct } => json!({
            "event": "hole_punch", "timestamp": timestamp, "peer_id": peer.to_string(),
            "direct": direct,
        }),
        NodeEvent::FileOffered {
            peer,
            file_id,
            name,
            size,
        } => json!({
            "event": "file_offered", "timestamp": timestamp, "file_id": file_id.to_string(),
            "from": peer.to_string(), "name": name, "size": size,
        }),
        NodeEvent::FileProgress {
            peer,
            file_id,
            role,
            bytes_done,
            size,
        } => json!({
            "event": "file_progress", "timestamp": timestamp, "file_id": file_id.to_string(),
            "peer": peer.to_string(), "direction": role_str(*role),
            "bytes_done": bytes_done, "size": size,
        }),
        NodeEvent::FileComplete {
            peer,
            file_id,
            role,
            path,
            sha256,
        } => json!({
            "event": "file_complete", "timestamp": timestamp, "file_id": file_id.to_string(),
            "peer": peer.to_string(), "direction": role_str(*role),
            "path": path.as_ref().map(|p| p.display().to_string()),
            "sha256": sha256.map(hex::encode),
        }),
        NodeEvent::FileFailed {
            peer,
            file_id,
            role,
            reason,
        } => json!({
            "event": "file_failed", "timestamp": timestamp, "file_id": file_id.to_string(),
            "peer": peer.to_string(), "direction": role_str(*role), "reason": reason,
        }),
        NodeEvent::Rejected { peer, reason } => json!({
            "event": "rejected", "timestamp": timestamp, "peer_id": peer.to_string(),
            "reason": reason,
        }),
        _ => return None,
    };
    Some(value)
}

/// Forwards node events to one client until it goes away.
async fn forward_events(
    mut events: broadcast::Receiver<NodeEvent>,
    tx: tokio::sync::mpsc::Sender<Value>,
    me: PeerId,
) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event_json(&event, me),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(json!({
                "event": "lagged", "timestamp": now_ms(), "missed": missed,
            })),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Some(event) = event
            && tx.send(rpc::event_notification(event)).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("bob", "bob"), 0);
        assert_eq!(edit_distance("bob", "rob"), 1);
        assert_eq!(edit_distance("bob", "bobby"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
