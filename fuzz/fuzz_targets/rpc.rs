//! The daemon's JSON-RPC request parser on arbitrary lines, then each request's typed
//! parameters: it never panics, every reply it makes is a JSON-RPC 2.0 error response on one
//! line (the socket's framing), and every call it accepts is sent by a client the same way.
#![no_main]

use encrypto_node::rpc::{self, Call, Line, Request, code};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check(request: Result<Request, Value>) {
    match request {
        Ok(r) => {
            assert!(matches!(
                &r.id,
                None | Some(Value::Null | Value::String(_) | Value::Number(_))
            ));
            match Call::parse(&r.method, r.params) {
                // What a client would send for this call parses back into the same call.
                Ok(call) => {
                    let line = rpc::request_line(1, call.method(), &call.params());
                    let Line::One(Ok(again)) = rpc::parse_line(line.as_bytes()) else {
                        panic!("a client's request does not parse: {line}");
                    };
                    let again = Call::parse(&again.method, again.params).expect("parses again");
                    assert_eq!(again, call);
                }
                Err(e) => {
                    assert!(matches!(
                        e.code,
                        code::METHOD_NOT_FOUND | code::INVALID_PARAMS
                    ));
                    let reply = rpc::error_response(&Value::Null, &e);
                    let line = serde_json::to_string(&reply).expect("a reply serializes");
                    assert!(!line.contains('\n'), "a reply spans lines");
                }
            }
        }
        Err(reply) => {
            assert_eq!(reply["jsonrpc"], "2.0");
            assert!(reply["error"]["code"].is_i64());
            let line = serde_json::to_string(&reply).expect("a reply serializes");
            assert!(!line.contains('\n'), "a reply spans lines");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match rpc::parse_line(data) {
        Line::One(request) => check(request),
        Line::Batch(batch) => {
            assert!(!batch.is_empty());
            batch.into_iter().for_each(check);
        }
    }
});
