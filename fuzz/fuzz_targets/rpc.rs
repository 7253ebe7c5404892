//! The daemon's JSON-RPC request parser on arbitrary lines: it never panics, and every reply
//! it makes is a JSON-RPC 2.0 error response on one line (the socket's framing).
#![no_main]

// The parser lives in the binary crate; it depends only on serde_json.
#[allow(dead_code, unreachable_pub)]
#[path = "../../src/rpc.rs"]
mod rpc;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check(request: &Result<rpc::Request, Value>) {
    match request {
        Ok(r) => assert!(matches!(
            &r.id,
            None | Some(Value::Null | Value::String(_) | Value::Number(_))
        )),
        Err(reply) => {
            assert_eq!(reply["jsonrpc"], "2.0");
            assert!(reply["error"]["code"].is_i64());
            let line = serde_json::to_string(reply).expect("a reply serializes");
            assert!(!line.contains('\n'), "a reply spans lines");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match rpc::parse_line(data) {
        rpc::Line::One(request) => check(&request),
        rpc::Line::Batch(batch) => {
            assert!(!batch.is_empty());
            batch.iter().for_each(check);
        }
    }
});
