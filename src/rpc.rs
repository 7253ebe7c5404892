//! The control socket's protocol, shared by the daemon (server) and the CLI (client):
//! JSON-RPC 2.0, one JSON object per line, on the Unix socket `DATA_DIR/encrypto.sock`.
//! `docs/rpc.md` documents every method with an example.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

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

/// A request read from the socket and checked: what the daemon runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    /// `None` for a notification (no `id` member): it is run but not answered.
    pub(crate) id: Option<Value>,
    pub(crate) method: String,
    pub(crate) params: Map<String, Value>,
}

/// A request line, parsed: each request checked, or the error response it gets.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Line {
    One(Result<Request, Value>),
    Batch(Vec<Result<Request, Value>>),
}

/// Parses one line the daemon read (a request, a notification or a batch). Never fails: what
/// cannot be run becomes the error response to send back.
pub(crate) fn parse_line(line: &[u8]) -> Line {
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
pub(crate) fn parse_request(request: Value) -> Result<Request, Value> {
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
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
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

/// A notification carrying one event.
pub(crate) fn event_notification(event: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": EVENT_METHOD, "params": event })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_code(reply: &Result<Request, Value>) -> i64 {
        reply.as_ref().unwrap_err()["error"]["code"]
            .as_i64()
            .unwrap()
    }

    #[test]
    fn lines_parse_into_checked_requests_or_their_error_replies() {
        let one = |line: &str| match parse_line(line.as_bytes()) {
            Line::One(r) => r,
            Line::Batch(_) => panic!("a batch"),
        };
        let ok = one(r#"{"jsonrpc":"2.0","id":3,"method":"send","params":{"to":"bob"}}"#);
        let ok = ok.unwrap();
        assert_eq!((ok.id, ok.method.as_str()), (Some(json!(3)), "send"));
        assert_eq!(ok.params["to"], "bob");
        let note = one(r#"{"jsonrpc":"2.0","method":"whoami"}"#).unwrap();
        assert_eq!((note.id, note.params.len()), (None, 0));

        assert_eq!(error_code(&one("{nope")), code::PARSE_ERROR);
        assert_eq!(error_code(&one("[]")), code::INVALID_REQUEST);
        assert_eq!(error_code(&one("7")), code::INVALID_REQUEST);
        let no_version = one(r#"{"id":"a","method":"whoami"}"#);
        assert_eq!(error_code(&no_version), code::INVALID_REQUEST);
        assert_eq!(no_version.unwrap_err()["id"], "a");
        let bad_id = one(r#"{"jsonrpc":"2.0","id":{"x":1},"method":"whoami"}"#);
        assert_eq!(bad_id.as_ref().unwrap_err()["id"], Value::Null);
        assert_eq!(
            error_code(&one(r#"{"jsonrpc":"2.0","id":1}"#)),
            code::INVALID_REQUEST
        );
        let params = one(r#"{"jsonrpc":"2.0","id":1,"method":"send","params":[1]}"#);
        assert_eq!(error_code(&params), code::INVALID_PARAMS);

        match parse_line(br#"[{"jsonrpc":"2.0","id":1,"method":"peers"}, 5]"#) {
            Line::Batch(batch) => {
                assert_eq!(batch[0].as_ref().unwrap().method, "peers");
                assert_eq!(error_code(&batch[1]), code::INVALID_REQUEST);
            }
            Line::One(_) => panic!("not a batch"),
        }
    }

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
