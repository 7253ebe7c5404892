//! The control socket's protocol, shared by the daemon (server) and the CLI (client):
//! JSON-RPC 2.0, one JSON object per line, on the Unix socket `DATA_DIR/encrypto.sock`.
//! `docs/rpc.md` documents every method with an example.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The socket's file name in the data directory.
pub(crate) const SOCKET_NAME: &str = "encrypto.sock";

/// The longest request line the daemon reads; a longer one is refused and the connection
/// closed (a message is at most 64 KiB, so a request never needs more).
pub(crate) const MAX_LINE: usize = 1 << 20;

/// The notification method that carries events after `subscribe`.
pub(crate) const EVENT_METHOD: &str = "event";

/// JSON-RPC 2.0 error codes.
pub(crate) mod code {
    /// The line is not JSON.
    pub(crate) const PARSE_ERROR: i64 = -32700;
    /// JSON, but not a request.
    pub(crate) const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
    /// The parameters are missing or of the wrong type.
    pub(crate) const INVALID_PARAMS: i64 = -32602;
    /// The method ran and failed (unknown contact, store error, ...).
    pub(crate) const FAILED: i64 = -32000;
    /// `send` with `wait`: not delivered in time (the message stays queued).
    pub(crate) const TIMEOUT: i64 = -32001;
}

/// The socket of the daemon serving `data_dir`.
pub(crate) fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// A JSON-RPC error: a code, one line a person can act on, and optional data for scripts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RpcError {
    pub(crate) code: i64,
    pub(crate) message: String,
    pub(crate) data: Option<Value>,
}

impl RpcError {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// A method that ran and failed.
    pub(crate) fn failed(message: impl std::fmt::Display) -> Self {
        // One line, whatever the cause chain contained.
        RpcError::new(code::FAILED, message.to_string().replace(['\n', '\r'], " "))
    }

    pub(crate) fn invalid_params(message: impl Into<String>) -> Self {
        RpcError::new(code::INVALID_PARAMS, message)
    }

    pub(crate) fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The error object of a response.
    pub(crate) fn to_json(&self) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        error
    }

    /// Reads an error object back (client side).
    pub(crate) fn from_json(error: &Value) -> Self {
        RpcError {
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the daemon sent an error without a message")
                .to_owned(),
            data: error.get("data").cloned(),
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RpcError {}

/// A success response.
pub(crate) fn response(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// An error response (`id` is null when the request's id could not be read).
pub(crate) fn error_response(id: &Value, error: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": error.to_json() })
}

/// A notification carrying one event.
pub(crate) fn event_notification(event: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": EVENT_METHOD, "params": event })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_and_stay_on_one_line() {
        let e = RpcError::failed("first\nsecond").with_data(json!({"id": "x"}));
        assert_eq!(e.message, "first second");
        let back = RpcError::from_json(&e.to_json());
        assert_eq!(back, e);
        let r = error_response(&json!(7), &e);
        assert_eq!(r["id"], 7);
        assert_eq!(r["error"]["code"], code::FAILED);
    }
}
