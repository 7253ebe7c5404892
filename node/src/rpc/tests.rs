use encrypto_crypto::Cipher;
use serde_json::json;

use super::params::*;
use super::replies::*;
use super::*;

fn error_code(reply: &Result<Request, Value>) -> i64 {
    reply.as_ref().unwrap_err()["error"]["code"]
        .as_i64()
        .unwrap()
}

fn params(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
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
    let sent = Sent {
        id: "x".into(),
        status: SendStatus::Queued,
    };
    let e = RpcError::failed("first\nsecond").with_data(&sent);
    assert_eq!(e.message, "first second");
    let back: RpcError = serde_json::from_value(to_value(&e)).unwrap();
    assert_eq!(back, e);
    assert_eq!(back.data_as::<Sent>(), Some(sent));
    let r = error_response(&json!(7), &e);
    assert_eq!(r["id"], 7);
    assert_eq!(r["error"]["code"], code::FAILED);
    assert_eq!(r["error"]["data"]["status"], "queued");
    // Without data, there is no `data` member; a reply read back keeps its error.
    let plain = error_response(&json!("a"), &RpcError::new(code::TIMEOUT, "late"));
    assert!(plain["error"].get("data").is_none());
    let incoming: Incoming = serde_json::from_value(plain).unwrap();
    let err = incoming.into_result::<Sent>().unwrap_err();
    assert_eq!((err.code, err.message.as_str()), (code::TIMEOUT, "late"));
}

/// Every method's params, as a client sends them, parse back into the same call.
#[test]
fn each_methods_params_round_trip() {
    let calls = [
        Call::Whoami,
        Call::Peers,
        Call::Search(SearchParams {
            name: "bob".into(),
            source: Some(Source::Dht),
        }),
        Call::Search(SearchParams {
            name: "bob".into(),
            source: None,
        }),
        Call::Add(AddParams {
            peer: "/ip4/127.0.0.1/tcp/1".into(),
        }),
        Call::Contacts,
        Call::Verify(VerifyParams {
            to: "bob".into(),
            show: Some(true),
        }),
        Call::Relay(RelayParams {
            to: "bob".into(),
            on: Some(false),
        }),
        Call::Send(SendParams {
            to: "bob".into(),
            text: "hi".into(),
            cipher: Some(Cipher::Rsa),
            wait: Some(true),
            timeout: Some(5),
        }),
        Call::History(HistoryParams {
            to: "bob".into(),
            limit: Some(3),
        }),
        Call::Cipher(CipherParams {
            to: "bob".into(),
            cipher: Cipher::Aes,
        }),
        Call::DeleteChat(DeleteChatParams {
            to: "bob".into(),
            for_both: Some(true),
        }),
        Call::SendFile(SendFileParams {
            to: "bob".into(),
            path: "/tmp/a".into(),
            via: Some(vec!["carol".into()]),
        }),
        Call::Fetch(FetchParams {
            file_id: "00".into(),
            out: Some("/tmp/b".into()),
        }),
        Call::Files(FilesParams { file_id: None }),
        Call::Forward(ForwardParams {
            file_id: "00".into(),
            to: "dave".into(),
        }),
        Call::Subscribe,
        Call::Passwd(PasswdParams {
            passphrase: "old".into(),
            new_passphrase: "new".into(),
        }),
    ];
    let mut methods = std::collections::HashSet::new();
    for call in calls {
        let line = request_line(1, call.method(), &call.params());
        let request = match parse_line(line.as_bytes()) {
            Line::One(Ok(request)) => request,
            other => panic!("{line}: {other:?}"),
        };
        let back = Call::parse(&request.method, request.params).unwrap();
        assert_eq!(back, call, "{line}");
        methods.insert(call.method());
    }
    assert_eq!(methods.len(), Method::ALL.len(), "a method without a case");
}

#[test]
fn unknown_params_are_refused_by_name() {
    let err = Call::parse(
        "send",
        params(json!({"to": "bob", "text": "hi", "wiat": true})),
    )
    .unwrap_err();
    assert_eq!(err.code, code::INVALID_PARAMS);
    assert!(
        err.message
            .starts_with("invalid params: unknown field `wiat`, expected one of `to`, `text`"),
        "{}",
        err.message
    );
    let err = Call::parse("whoami", params(json!({"verbose": true}))).unwrap_err();
    assert_eq!(err.code, code::INVALID_PARAMS);
    assert!(
        err.message.contains("unknown field `verbose`"),
        "{}",
        err.message
    );
    let err = Call::parse("send", params(json!({"to": "bob"}))).unwrap_err();
    assert_eq!(err.code, code::INVALID_PARAMS);
    assert!(
        err.message.contains("missing field `text`"),
        "{}",
        err.message
    );
}

#[test]
fn a_param_of_the_wrong_type_is_named() {
    let err = Call::parse("history", params(json!({"to": "bob", "limit": "ten"}))).unwrap_err();
    assert_eq!(err.code, code::INVALID_PARAMS);
    assert!(
        err.message
            .starts_with("invalid params: \"limit\": invalid type"),
        "{}",
        err.message
    );
    let err = Call::parse(
        "send",
        params(json!({"to": "bob", "text": "hi", "cipher": "des"})),
    )
    .unwrap_err();
    assert!(
        err.message.contains("\"cipher\"") && err.message.contains("unknown cipher"),
        "{}",
        err.message
    );
}

#[test]
fn optional_params_may_be_null_and_ciphers_any_case() {
    let call = Call::parse(
        "send",
        params(json!({"to": "bob", "text": "hi", "cipher": "RSA", "wait": null, "timeout": null})),
    )
    .unwrap();
    assert_eq!(
        call,
        Call::Send(SendParams {
            to: "bob".into(),
            text: "hi".into(),
            cipher: Some(Cipher::Rsa),
            wait: None,
            timeout: None,
        })
    );
    let err = Call::parse("cipher", params(json!({"to": "bob", "cipher": "des"}))).unwrap_err();
    assert!(
        err.message.contains("unknown cipher \"des\""),
        "{}",
        err.message
    );
}

#[test]
fn method_names_and_the_not_found_message_come_from_one_list() {
    for method in Method::ALL {
        assert_eq!(Method::from_name(method.as_str()), Some(method));
    }
    assert_eq!(Method::from_name("delete_chat"), Some(Method::DeleteChat));
    assert_eq!(Method::from_name("send_file"), Some(Method::SendFile));
    let err = Call::parse("launch", Map::new()).unwrap_err();
    assert_eq!(err.code, code::METHOD_NOT_FOUND);
    for method in Method::ALL {
        assert!(err.message.contains(method.as_str()), "{}", err.message);
    }
}

#[test]
fn events_carry_their_name_and_timestamp_on_the_wire() {
    let note = EventNote {
        timestamp: 5,
        event: Event::Delivered {
            id: "m".into(),
            to: "p".into(),
        },
    };
    let value = event_notification(&note);
    assert_eq!(
        value,
        json!({"jsonrpc": "2.0", "method": "event",
               "params": {"event": "delivered", "timestamp": 5, "id": "m", "to": "p"}})
    );
    let incoming: Incoming = serde_json::from_value(value).unwrap();
    let back: EventNote = serde_json::from_value(incoming.event().unwrap()).unwrap();
    assert_eq!(back, note);
}

#[test]
fn a_file_message_has_name_and_size_and_a_text_has_neither() {
    let text = Message {
        id: "m".into(),
        peer: "p".into(),
        direction: Way::Out,
        text: Some("hi".into()),
        file_id: None,
        cipher: Cipher::Aes,
        timestamp: 1,
        status: SendStatus::Queued,
        name: None,
        size: None,
    };
    let value = to_value(&text);
    assert_eq!(value["file_id"], Value::Null);
    assert!(value.get("name").is_none() && value.get("size").is_none());
    let file = Message {
        text: None,
        file_id: Some("ab".into()),
        name: Some("a.zip".into()),
        size: Some(3),
        ..text
    };
    let value = to_value(&file);
    assert_eq!(
        (value["name"].clone(), value["size"].clone()),
        (json!("a.zip"), json!(3))
    );
    assert_eq!(value["text"], Value::Null);
}
