//! The daemon's JSON-RPC methods: each takes its typed parameters
//! ([`encrypto_node::rpc::params`]), calls the node through its handle, and answers with its
//! typed reply ([`encrypto_node::rpc::replies`]), the objects of the public contract
//! (`docs/rpc.md`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use encrypto_crypto::file::FileId;
use encrypto_crypto::keystore::KdfParams;
use encrypto_crypto::{PeerId, PublicIdentity, SafetyNumber};
use encrypto_node::rpc::params::{
    CipherParams, DEFAULT_WAIT_SECS, DeleteChatParams, FetchParams, FilesParams, ForwardParams,
    HistoryParams, MAX_WAIT_SECS, PasswdParams, RelayParams, SearchParams, SendFileParams,
    SendParams, Source, VerifyParams,
};
use encrypto_node::rpc::replies::{
    Added, ChatDeleted, CipherSet, ContactInfo, Done, Event, EventNote, FileInfo, Found, Message,
    Offer, Peer, SendStatus, Sent, Subscribed, Verified, Whoami, strings,
};
use encrypto_node::rpc::{self, Call, RpcError, code};
use encrypto_node::view::Contact;
use encrypto_node::{DataDir, Multiaddr, NodeEvent, NodeHandle, ResolveError};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::daemon::Client;

/// What the methods need: the node and who we are.
pub(crate) struct Server {
    node: NodeHandle,
    name: String,
    public: PublicIdentity,
    data_dir: PathBuf,
}

type MethodResult = Result<Value, RpcError>;

/// A method's typed reply as the result of a response.
fn reply(value: impl Serialize) -> MethodResult {
    serde_json::to_value(value).map_err(RpcError::failed)
}

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
        let result = match Call::parse(&method, params) {
            Ok(Call::Subscribe) => {
                // The reply goes first, then the events, on the same stream.
                let events = self.node.subscribe();
                if id.is_some() {
                    let reply = rpc::response(&reply_id, &Subscribed { subscribed: true });
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
            Ok(call) => self.call(call).await,
            Err(error) => Err(error),
        };
        id.map(|id| match result {
            Ok(value) => rpc::response(&id, &value),
            Err(error) => rpc::error_response(&id, &error),
        })
    }

    async fn call(&self, call: Call) -> MethodResult {
        match call {
            Call::Whoami => self.whoami().await,
            Call::Peers => self.peers().await,
            Call::Search(p) => self.search(p).await,
            Call::Add(p) => self.add(&p.peer).await,
            Call::Contacts => self.contacts().await,
            Call::Verify(p) => self.verify(p).await,
            Call::Relay(p) => self.relay(p).await,
            Call::Send(p) => self.send(p).await,
            Call::History(p) => self.history(p).await,
            Call::Cipher(p) => self.cipher(p).await,
            Call::DeleteChat(p) => self.delete_chat(p).await,
            Call::Passwd(p) => self.passwd(p).await,
            Call::SendFile(p) => self.send_file(p).await,
            Call::Fetch(p) => self.fetch(p).await,
            Call::Files(p) => self.files(p).await,
            Call::Forward(p) => self.forward(p).await,
            // Answered in `handle_request`, which owns the connection.
            Call::Subscribe => reply(Subscribed { subscribed: true }),
            other => Err(rpc::Method::not_found(other.method().as_str())),
        }
    }

    async fn whoami(&self) -> MethodResult {
        let addrs = self.node.listen_addrs().await.map_err(RpcError::failed)?;
        reply(Whoami {
            name: self.name.clone(),
            peer_id: self.node.peer_id().to_string(),
            fingerprint: self.public.fingerprint().to_string(),
            listen_addrs: strings(&addrs),
        })
    }

    async fn peers(&self) -> MethodResult {
        let peers = self.node.peers().await.map_err(RpcError::failed)?;
        reply(peers.iter().map(Peer::from).collect::<Vec<_>>())
    }

    async fn search(&self, params: SearchParams) -> MethodResult {
        let name = params.name.as_str();
        if name.trim().is_empty() {
            return Err(RpcError::invalid_params("the name to search for is empty"));
        }
        let use_local = params.source != Some(Source::Dht);
        let use_dht = params.source != Some(Source::Local);
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
        let mut out: Vec<Found> = local
            .iter()
            .map(|p| Found::local(p, contacts.get(&p.peer_id)))
            .collect();
        for entry in &dht {
            if !local.iter().any(|p| p.peer_id == entry.peer_id) {
                out.push(Found::from(entry));
            }
        }
        reply(out)
    }

    async fn add(&self, target: &str) -> MethodResult {
        let target = target.trim();
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
        reply(Added::from(&contact))
    }

    async fn contacts(&self) -> MethodResult {
        let contacts = self.node.contacts().await.map_err(RpcError::failed)?;
        reply(contacts.iter().map(ContactInfo::from).collect::<Vec<_>>())
    }

    async fn verify(&self, params: VerifyParams) -> MethodResult {
        let show_only = params.show.unwrap_or(false);
        let contact = self.resolve(&params.to).await?;
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
        reply(Verified {
            peer_id: contact.peer_id.to_string(),
            name: contact.name.clone(),
            safety_number: SafetyNumber::between(&self.public, &keys).to_string(),
            verified: contact.verified,
            key_changed: contact.key_changed,
        })
    }

    /// Marks a contact as a relay for files (`on`, default true) or clears the mark.
    async fn relay(&self, params: RelayParams) -> MethodResult {
        let on = params.on.unwrap_or(true);
        let contact = self.resolve(&params.to).await?;
        let contact = self
            .node
            .set_relay(contact.peer_id, on)
            .await
            .map_err(RpcError::failed)?;
        reply(ContactInfo::from(&contact))
    }

    async fn send(&self, params: SendParams) -> MethodResult {
        // Parameters first: a malformed request is an invalid-params error whoever `to` is.
        if params.text.is_empty() {
            return Err(RpcError::invalid_params("the message is empty"));
        }
        let wait = params.wait.unwrap_or(false);
        let secs = params.timeout.unwrap_or(DEFAULT_WAIT_SECS);
        if secs == 0 || secs > MAX_WAIT_SECS {
            return Err(RpcError::invalid_params(format!(
                "timeout must be 1 to {MAX_WAIT_SECS} seconds"
            )));
        }
        let contact = self.resolve(&params.to).await?;
        // Subscribed before sending, so the delivery cannot slip past.
        let mut events = self.node.subscribe();
        let peer = contact.peer_id;
        let id = self
            .node
            .send_text_with(peer, params.text, params.cipher)
            .await
            .map_err(RpcError::failed)?;
        let sent = |status| Sent {
            id: id.to_string(),
            status,
        };
        if !wait {
            return reply(sent(SendStatus::Queued));
        }
        match self
            .node
            .wait_delivered(&mut events, peer, id, Duration::from_secs(secs))
            .await
        {
            Ok(()) => reply(sent(SendStatus::Delivered)),
            // Stopped or timed out: either way the message stays queued.
            Err(_) => Err(RpcError::new(
                code::TIMEOUT,
                format!(
                    "not delivered within {secs} s; message {id} stays queued and is delivered when {} is reachable",
                    contact.name
                ),
            )
            .with_data(sent(SendStatus::Queued))),
        }
    }

    async fn history(&self, params: HistoryParams) -> MethodResult {
        let limit = params
            .limit
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .filter(|n| *n > 0);
        let contact = self.resolve(&params.to).await?;
        let history = self
            .node
            .history(contact.peer_id, limit)
            .await
            .map_err(RpcError::failed)?;
        reply(history.iter().map(Message::from).collect::<Vec<_>>())
    }

    async fn cipher(&self, params: CipherParams) -> MethodResult {
        let contact = self.resolve(&params.to).await?;
        self.node
            .set_cipher(contact.peer_id, params.cipher)
            .await
            .map_err(RpcError::failed)?;
        reply(CipherSet {
            peer: contact.peer_id.to_string(),
            cipher: params.cipher,
        })
    }

    async fn delete_chat(&self, params: DeleteChatParams) -> MethodResult {
        let for_both = params.for_both.unwrap_or(false);
        let contact = self.resolve(&params.to).await?;
        let deleted = self
            .node
            .delete_chat(contact.peer_id, for_both)
            .await
            .map_err(RpcError::failed)?;
        reply(ChatDeleted {
            peer: contact.peer_id.to_string(),
            deleted: u64::try_from(deleted).unwrap_or(u64::MAX),
            for_both,
        })
    }

    async fn passwd(&self, params: PasswdParams) -> MethodResult {
        let PasswdParams {
            passphrase,
            new_passphrase,
        } = params;
        let old = zeroize::Zeroizing::new(passphrase);
        let new = zeroize::Zeroizing::new(new_passphrase);
        let data_dir = self.data_dir.clone();
        let result = tokio::task::spawn_blocking(move || {
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
        reply(Done { ok: true })
    }

    async fn send_file(&self, params: SendFileParams) -> MethodResult {
        let path = absolute_path("path", &params.path)?;
        let contact = self.resolve(&params.to).await?;
        let mut via = Vec::new();
        for name in params.via.unwrap_or_default() {
            via.push(self.resolve(&name).await?.peer_id);
        }
        let sent = self
            .node
            .send_file(contact.peer_id, path, via)
            .await
            .map_err(RpcError::failed)?;
        reply(Offer::from(&sent))
    }

    async fn fetch(&self, params: FetchParams) -> MethodResult {
        let file_id = file_id(&params.file_id)?;
        let out = params
            .out
            .as_deref()
            .map(|out| absolute_path("out", out))
            .transpose()?;
        let transfer = self
            .node
            .fetch_file(file_id, out)
            .await
            .map_err(RpcError::failed)?;
        reply(FileInfo::from(&transfer))
    }

    async fn files(&self, params: FilesParams) -> MethodResult {
        let only = params.file_id.as_deref().map(file_id).transpose()?;
        let files = self.node.files().await.map_err(RpcError::failed)?;
        reply(
            files
                .iter()
                .filter(|f| only.is_none_or(|id| f.file_id == id))
                .map(FileInfo::from)
                .collect::<Vec<_>>(),
        )
    }

    async fn forward(&self, params: ForwardParams) -> MethodResult {
        let file_id = file_id(&params.file_id)?;
        let contact = self.resolve(&params.to).await?;
        let sent = self
            .node
            .forward_file(file_id, contact.peer_id)
            .await
            .map_err(RpcError::failed)?;
        reply(Offer::from(&sent))
    }

    async fn contacts_by_peer(&self) -> Result<HashMap<PeerId, Contact>, RpcError> {
        let contacts = self.node.contacts().await.map_err(RpcError::failed)?;
        Ok(contacts.into_iter().map(|c| (c.peer_id, c)).collect())
    }

    /// The contact `to` names: a peer id, or the name of exactly one contact.
    async fn resolve(&self, to: &str) -> Result<Contact, RpcError> {
        self.node.resolve_contact(to).await.map_err(|e| match e {
            ResolveError::Empty => RpcError::invalid_params(e.to_string()),
            other => RpcError::failed(other),
        })
    }
}

fn file_id(text: &str) -> Result<FileId, RpcError> {
    text.trim().parse().map_err(|_| {
        RpcError::invalid_params(format!(
            "{text:?} is not a file id (32 hex digits, as `encrypto files` shows)"
        ))
    })
}

/// A path parameter, which must be absolute (the daemon's working directory is not the
/// caller's; the CLI sends absolute paths).
fn absolute_path(name: &str, path: &str) -> Result<PathBuf, RpcError> {
    if Path::new(path).is_absolute() {
        Ok(PathBuf::from(path))
    } else {
        Err(RpcError::invalid_params(format!(
            "\"{name}\" must be an absolute path, not {path:?}"
        )))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Forwards node events to one client until it goes away.
async fn forward_events(
    mut events: broadcast::Receiver<NodeEvent>,
    tx: tokio::sync::mpsc::Sender<Value>,
    me: PeerId,
) {
    loop {
        let event = match events.recv().await {
            Ok(event) => Event::from_node(&event, me),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Event::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Some(event) = event {
            let note = EventNote {
                timestamp: now_ms(),
                event,
            };
            if tx.send(rpc::event_notification(&note)).await.is_err() {
                return;
            }
        }
    }
}
