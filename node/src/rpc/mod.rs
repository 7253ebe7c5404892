//! The control socket's protocol, typed: JSON-RPC 2.0, one JSON value per line, on the Unix
//! socket `DATA_DIR/encrypto.sock`. The daemon (server), the CLI (client) and the `rpc` fuzz
//! target all read and write it through these types, so the contract lives in one place;
//! `docs/rpc.md` documents every method with an example.
//!
//! - This module: the framing (requests, replies, notifications, batches), the error codes
//!   and [`Method`], the list of methods.
//! - [`params`]: each method's parameters, parsed into a [`Call`]. Unknown parameters are
//!   refused (`invalid params: unknown field ...`), never ignored.
//! - [`replies`]: each method's result and the events `subscribe` streams.

pub mod params;
pub mod replies;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use params::Call;

/// The socket's file name in the data directory.
pub const SOCKET_NAME: &str = "encrypto.sock";

/// The longest request line the daemon reads; a longer one is refused and the connection
/// closed (a message is at most 64 KiB, so a request never needs more).
pub const MAX_LINE: usize = 1 << 20;

/// The notification method that carries events after `subscribe`.
pub const EVENT_METHOD: &str = "event";

/// The protocol version every request and reply carries.
const VERSION: &str = "2.0";

/// JSON-RPC 2.0 error codes.
pub mod code {
    /// The line is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON, but not a request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The parameters are missing, unknown or of the wrong type.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The method ran and failed (unknown contact, store error, ...).
    pub const FAILED: i64 = -32000;
    /// `send` with `wait`: not delivered in time (the message stays queued).
    pub const TIMEOUT: i64 = -32001;
}

/// The socket of the daemon serving `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Every method the daemon serves, by its wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// `whoami`: name, peer id, fingerprint, listen addresses.
    Whoami,
    /// `peers`: connected and discovered peers.
    Peers,
    /// `search`: people by name, locally and in the DHT.
    Search,
    /// `add`: pins a peer's profile and makes it a contact.
    Add,
    /// `contacts`: the contact list.
    Contacts,
    /// `verify`: the safety number; marks the contact verified.
    Verify,
    /// `relay`: marks a contact as a relay for files.
    Relay,
    /// `send`: a text message.
    Send,
    /// `history`: a chat, oldest first.
    History,
    /// `cipher`: switches a chat's cipher.
    Cipher,
    /// `delete-chat` (also `delete_chat`): deletes a chat's history.
    DeleteChat,
    /// `send-file` (also `send_file`): offers a file.
    SendFile,
    /// `fetch`: downloads an offered file.
    Fetch,
    /// `files`: every file transfer.
    Files,
    /// `forward`: sends a file we hold to another contact.
    Forward,
    /// `subscribe`: streams events on the connection.
    Subscribe,
    /// `passwd`: re-seals the keystore under a new passphrase.
    Passwd,
}

impl Method {
    /// Every method, in the order the docs list them.
    pub const ALL: [Method; 17] = [
        Method::Whoami,
        Method::Peers,
        Method::Search,
        Method::Add,
        Method::Contacts,
        Method::Relay,
        Method::Verify,
        Method::Send,
        Method::History,
        Method::Cipher,
        Method::DeleteChat,
        Method::SendFile,
        Method::Files,
        Method::Fetch,
        Method::Forward,
        Method::Subscribe,
        Method::Passwd,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Whoami => "whoami",
            Method::Peers => "peers",
            Method::Search => "search",
            Method::Add => "add",
            Method::Contacts => "contacts",
            Method::Verify => "verify",
            Method::Relay => "relay",
            Method::Send => "send",
            Method::History => "history",
            Method::Cipher => "cipher",
            Method::DeleteChat => "delete-chat",
            Method::SendFile => "send-file",
            Method::Fetch => "fetch",
            Method::Files => "files",
            Method::Forward => "forward",
            Method::Subscribe => "subscribe",
            Method::Passwd => "passwd",
        }
    }

    /// The method a wire name means (the two-word ones also with `_`), if any.
    pub fn from_name(name: &str) -> Option<Method> {
        match name {
            "delete_chat" => Some(Method::DeleteChat),
            "send_file" => Some(Method::SendFile),
            _ => Method::ALL.into_iter().find(|m| m.as_str() == name),
        }
    }

    /// The error for a name that is no method: it lists every method.
    pub fn not_found(name: &str) -> RpcError {
        let names: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
        RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("no method {name:?}; the methods are {}", names.join(", ")),
        )
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JSON-RPC error: a code, one line a person can act on, and optional data for scripts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    /// One of [`code`].
    #[serde(default)]
    pub code: i64,
    /// One line saying what went wrong and what to do.
    #[serde(default = "no_message")]
    pub message: String,
    /// What a script may need (the queued message of a `send` that timed out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

fn no_message() -> String {
    "the daemon sent an error without a message".to_owned()
}

impl RpcError {
    /// An error with `code` and `message`, without data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// A method that ran and failed.
    pub fn failed(message: impl std::fmt::Display) -> Self {
        // One line, whatever the cause chain contained.
        RpcError::new(code::FAILED, message.to_string().replace(['\n', '\r'], " "))
    }

    /// Parameters that are missing, unknown or wrong.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        RpcError::new(code::INVALID_PARAMS, message)
    }

    /// The same error carrying `data`.
    pub fn with_data(mut self, data: impl Serialize) -> Self {
        self.data = Some(to_value(&data));
        self
    }

    /// The data, read as `T` (`None` when there is none or it is something else).
    pub fn data_as<T: DeserializeOwned>(&self) -> Option<T> {
        self.data
            .clone()
            .and_then(|data| serde_json::from_value(data).ok())
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RpcError {}

/// Our own reply and event types as JSON: they are plain structs with string keys, which
/// always serialize.
pub(crate) fn to_value(value: &impl Serialize) -> Value {
    serde_json::to_value(value).expect("an RPC type always serializes to JSON")
}

/// A success reply.
#[derive(Serialize)]
struct Success<'a, R> {
    jsonrpc: &'static str,
    id: &'a Value,
    result: &'a R,
}

/// An error reply.
#[derive(Serialize)]
struct Failure<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    error: &'a RpcError,
}

/// A request as a client sends it, or a notification as the daemon sends it (no `id`).
#[derive(Serialize)]
struct Outgoing<'a, P> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    method: &'a str,
    params: &'a P,
}

/// A success response.
pub fn response(id: &Value, result: &impl Serialize) -> Value {
    to_value(&Success {
        jsonrpc: VERSION,
        id,
        result,
    })
}

/// An error response (`id` is null when the request's id could not be read).
pub fn error_response(id: &Value, error: &RpcError) -> Value {
    to_value(&Failure {
        jsonrpc: VERSION,
        id,
        error,
    })
}

/// A notification carrying one event.
pub fn event_notification(event: &replies::EventNote) -> Value {
    to_value(&Outgoing {
        jsonrpc: VERSION,
        id: None,
        method: EVENT_METHOD,
        params: event,
    })
}

/// The line a client sends to call `method` with `params` (without its newline).
pub fn request_line(id: u64, method: Method, params: &impl Serialize) -> String {
    to_value(&Outgoing {
        jsonrpc: VERSION,
        id: Some(id),
        method: method.as_str(),
        params,
    })
    .to_string()
}

/// A line the daemon sent, as a client reads it: a reply to one of its requests or a
/// notification.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Incoming {
    /// The request it answers; `None` for a notification.
    #[serde(default)]
    pub id: Option<Value>,
    /// A notification's method ([`EVENT_METHOD`]).
    #[serde(default)]
    pub method: Option<String>,
    /// A notification's content.
    #[serde(default)]
    pub params: Option<Value>,
    /// A success reply's result.
    #[serde(default)]
    pub result: Option<Value>,
    /// An error reply's error.
    #[serde(default)]
    pub error: Option<RpcError>,
}

impl Incoming {
    /// The reply's outcome, its result read as `R`.
    ///
    /// # Errors
    /// The daemon's error; a result that is not an `R` is a [`code::FAILED`] error naming
    /// what did not fit.
    pub fn into_result<R: DeserializeOwned>(self) -> Result<R, RpcError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        serde_json::from_value(self.result.unwrap_or(Value::Null)).map_err(|e| {
            RpcError::failed(format!(
                "the daemon's reply is not what this client expects: {e}"
            ))
        })
    }

    /// The event this line carries, if it is an event notification.
    pub fn event(self) -> Option<Value> {
        (self.method.as_deref() == Some(EVENT_METHOD)).then(|| self.params.unwrap_or(Value::Null))
    }
}

/// A request read from the socket and checked: what the daemon runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `None` for a notification (no `id` member): it is run but not answered.
    pub id: Option<Value>,
    /// The method's name as sent (see [`Call::parse`]).
    pub method: String,
    /// The parameters (an absent or null `params` is an empty object).
    pub params: Map<String, Value>,
}

/// A request line, parsed: each request checked, or the error response it gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A single request.
    One(Result<Request, Value>),
    /// A batch: each of its requests, in order.
    Batch(Vec<Result<Request, Value>>),
}

/// Parses one line the daemon read (a request, a notification or a batch). Never fails: what
/// cannot be run becomes the error response to send back.
pub fn parse_line(line: &[u8]) -> Line {
    match serde_json::from_slice(line) {
        Err(e) => Line::One(Err(error_response(
            &Value::Null,
            &RpcError::new(code::PARSE_ERROR, format!("not JSON: {e}")),
        ))),
        Ok(Value::Array(batch)) if batch.is_empty() => Line::One(Err(error_response(
            &Value::Null,
            &RpcError::new(code::INVALID_REQUEST, "an empty batch"),
        ))),
        Ok(Value::Array(batch)) => Line::Batch(batch.into_iter().map(parse_request).collect()),
        Ok(request) => Line::One(parse_request(request)),
    }
}

/// Checks one request of a line against JSON-RPC 2.0.
///
/// # Errors
/// The error response the request gets when it is not a valid request.
pub fn parse_request(request: Value) -> Result<Request, Value> {
    let Value::Object(mut request) = request else {
        let error = RpcError::new(code::INVALID_REQUEST, "a request must be a JSON object");
        return Err(error_response(&Value::Null, &error));
    };
    // No `id` member at all: a notification, answered with nothing.
    let id = request.remove("id");
    let reply_id = id.clone().unwrap_or(Value::Null);
    let invalid =
        |message: &str| error_response(&reply_id, &RpcError::new(code::INVALID_REQUEST, message));
    if !matches!(
        &id,
        None | Some(Value::Null | Value::String(_) | Value::Number(_))
    ) {
        // The id itself is unusable: the reply cannot name it.
        return Err(error_response(
            &Value::Null,
            &RpcError::new(
                code::INVALID_REQUEST,
                "\"id\" must be a string, a number or null",
            ),
        ));
    }
    if request.get("jsonrpc").and_then(Value::as_str) != Some(VERSION) {
        return Err(invalid(
            "not a JSON-RPC 2.0 request: \"jsonrpc\": \"2.0\" is missing",
        ));
    }
    let Some(method) = request
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return Err(invalid("\"method\" (a string) is missing"));
    };
    let params = match request.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(params)) => params,
        Some(_) => {
            let error = RpcError::invalid_params("\"params\" must be an object");
            return Err(error_response(&reply_id, &error));
        }
    };
    Ok(Request { id, method, params })
}

#[cfg(test)]
mod tests;
