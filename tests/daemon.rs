//! End-to-end tests of the daemon and the CLI: real `encrypto daemon` processes on loopback
//! (mDNS off, TCP on 127.0.0.1 port 0), driven only through the real binary's commands and
//! its control socket. Every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;

use serde_json::{Value, json};
use support::{PASS, STEP, User, Watch, eventually, fails, stderr, texts};

#[test]
fn two_daemons_chat_through_the_cli() {
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let (da, db) = (alice.start(0), bob.start(0));
    let mode = std::fs::metadata(alice.socket()).unwrap();
    assert!(mode.file_type().is_socket());
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let me = alice.one(&["whoami"]);
    assert_eq!(me["name"], "alice");
    assert_eq!(me["peer_id"], da.peer_id.as_str());
    assert_eq!(me["fingerprint"].as_str().unwrap().len(), 35);
    assert!(
        me["listen_addrs"][0]
            .as_str()
            .unwrap()
            .starts_with("/ip4/127.0.0.1/tcp/")
    );

    let watch = Watch::start(&bob);
    let added = alice.one(&["add", &db.addr]);
    assert_eq!(added["peer_id"], db.peer_id.as_str());
    assert_eq!(added["name"], "bob");
    assert_eq!(added["fingerprint"].as_str().unwrap().len(), 35);
    let contacts = alice.json(&["contacts"]);
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0]["cipher"], "aes");
    assert_eq!(contacts[0]["verified"], false);
    let peers = alice.json(&["peers"]);
    let bob_peer = peers
        .iter()
        .find(|p| p["peer_id"] == db.peer_id.as_str())
        .unwrap();
    assert_eq!(bob_peer["connected"], true);
    assert_eq!(bob_peer["via"], "direct");
    let found = alice.json(&["search", "BO"]);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0]["name"].as_str(), found[0]["source"].as_str()),
        (Some("bob"), Some("local"))
    );

    let sent = alice.one(&["send", "bob", "hello bob", "--wait"]);
    assert_eq!(sent["status"], "delivered");
    let id = sent["id"].as_str().unwrap().to_owned();
    let event = watch.expect("the message", |e| e["event"] == "message");
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["from"], da.peer_id.as_str());
    assert_eq!(event["text"], "hello bob");
    assert_eq!(event["cipher"], "aes");
    assert!(event["timestamp"].as_u64().unwrap() > 0);

    let ha = alice.json(&["history", "bob"]);
    assert_eq!(ha.len(), 1);
    assert_eq!(ha[0]["id"], id.as_str());
    assert_eq!(ha[0]["peer"], db.peer_id.as_str());
    assert_eq!(ha[0]["direction"], "out");
    assert_eq!(ha[0]["status"], "delivered");
    assert_eq!(ha[0]["file_id"], Value::Null);
    let hb = bob.json(&["history", &da.peer_id]);
    assert_eq!(hb.len(), 1);
    assert_eq!(hb[0]["id"], id.as_str());
    assert_eq!(hb[0]["direction"], "in");
    assert_eq!(hb[0]["text"], "hello bob");
    assert_eq!(hb[0]["timestamp"], ha[0]["timestamp"]);

    // Both sides compute the same safety number; verifying marks the contact.
    let va = alice.one(&["verify", "bob"]);
    let vb = bob.one(&["verify", "alice", "--show"]);
    assert_eq!(va["safety_number"], vb["safety_number"]);
    assert_eq!(alice.json(&["contacts"])[0]["verified"], true);
    assert_eq!(bob.json(&["contacts"])[0]["verified"], false);

    // Cipher switch: recorded on both sides, seen by bob's watch, used by the next message.
    let switched = alice.one(&["cipher", "bob", "rsa"]);
    assert_eq!(
        (switched["peer"].as_str(), switched["cipher"].as_str()),
        (Some(db.peer_id.as_str()), Some("rsa"))
    );
    let event = watch.expect("the cipher switch", |e| e["event"] == "cipher_changed");
    assert_eq!(
        (event["cipher"].as_str(), event["by"].as_str()),
        (Some("rsa"), Some(da.peer_id.as_str()))
    );
    assert_eq!(bob.json(&["contacts"])[0]["cipher"], "rsa");
    bob.one(&["send", "alice", "reply under rsa", "--wait"]);
    let ha = alice.json(&["history", "bob"]);
    assert_eq!(texts(&ha), ["hello bob", "reply under rsa"]);
    assert_eq!(ha[1]["cipher"], "rsa");
    assert_eq!(alice.json(&["history", "bob", "--limit", "1"]).len(), 1);

    // Delete for both: alice's history goes at once, bob's when the request arrives.
    let deleted = alice.one(&["delete-chat", "bob", "--for-both"]);
    assert_eq!(deleted["deleted"], 2);
    watch.expect("the delete", |e| e["event"] == "chat_deleted");
    assert!(alice.json(&["history", "bob"]).is_empty());
    assert!(bob.json(&["history", "alice"]).is_empty());

    let (ok, _) = da.terminate();
    assert!(ok);
    assert!(!alice.socket().exists(), "the socket outlived the daemon");
    let (ok, _) = db.terminate();
    assert!(ok);
}

#[test]
fn a_terminated_daemon_keeps_its_queued_messages() {
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let (da, db) = (alice.start(0), bob.start(0));
    alice.one(&["add", &db.addr]);
    let bob_port = db.port();
    let (ok, _) = db.terminate();
    assert!(ok);

    // Bob is away: sends are durable at once; --wait gives up with the id and exit 1.
    let queued = alice.one(&["send", "bob", "first while away"]);
    assert_eq!(queued["status"], "queued");
    let out = alice.run(&[
        "--json",
        "send",
        "bob",
        "second while away",
        "--wait",
        "--timeout",
        "1",
    ]);
    fails(&out, 1, "not delivered within 1 s");
    let pending: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pending["status"], "queued");
    let history = alice.json(&["history", "bob"]);
    assert!(
        history.iter().all(|m| m["status"] == "queued"),
        "{history:?}"
    );

    // Alice stops with both queued, and starts again on another port; bob comes back at
    // his old address: the outbox is delivered, once.
    let (ok, err) = da.terminate();
    assert!(ok, "{err}");
    assert!(!alice.socket().exists());
    let _da = alice.start(0);
    let _db = bob.start(bob_port);
    eventually("both queued messages delivered", || {
        alice
            .json(&["history", "bob"])
            .iter()
            .all(|m| m["status"] == "delivered")
    });
    let hb = bob.json(&["history", "alice"]);
    assert_eq!(texts(&hb), ["first while away", "second while away"]);
    assert_eq!(hb[0]["id"], queued["id"]);
    assert_eq!(hb[1]["id"], pending["id"]);
}

#[test]
fn errors_are_one_clear_line_with_the_right_exit_code() {
    let alice = User::new("alice");
    // No daemon.
    fails(&alice.run(&["contacts"]), 1, "no daemon is running");
    fails(&alice.run(&["send", "bob", "hi"]), 1, "encrypto --data-dir");
    // Usage errors, before anything runs.
    fails(
        &alice.run(&["daemon", "--listen", "not-an-addr"]),
        2,
        "--listen \"not-an-addr\" is not a multiaddr",
    );
    fails(
        &alice.run(&["daemon", "--bootstrap", "/ip4/1.2.3"]),
        2,
        "--bootstrap",
    );
    // A file in the socket's place, then a socket nobody answers on.
    std::fs::write(alice.socket(), b"").unwrap();
    fails(&alice.run(&["daemon", "--no-mdns"]), 1, "is not a socket");
    std::fs::remove_file(alice.socket()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(alice.socket()).unwrap());
    fails(
        &alice.run(&["daemon", "--no-mdns"]),
        1,
        "did not stop cleanly",
    );
    std::fs::remove_file(alice.socket()).unwrap();

    let da = alice.start(0);
    // A second daemon on the same data dir, and another node on a taken port.
    fails(&alice.run(&["daemon", "--no-mdns"]), 1, "already running");
    let carol = User::new("carol");
    let taken = format!("/ip4/127.0.0.1/tcp/{}", da.port());
    fails(
        &carol.run(&["daemon", "--no-mdns", "--listen", &taken]),
        1,
        &taken,
    );
    assert!(!carol.socket().exists());

    // Recipients: unknown, misspelt, ambiguous.
    let (bob1, bob2) = (User::new("bob"), User::new("Bob"));
    let (d1, d2) = (bob1.start(0), bob2.start(0));
    alice.one(&["add", &d1.addr]);
    fails(
        &alice.run(&["send", "carol", "hi"]),
        1,
        "no contact named \"carol\"",
    );
    fails(
        &alice.run(&["send", "bobb", "hi"]),
        1,
        "did you mean \"bob\"",
    );
    alice.one(&["add", &d2.addr]);
    let out = alice.run(&["send", "bob", "hi"]);
    fails(&out, 1, "2 contacts are named \"bob\"");
    assert!(stderr(&out).contains(&d1.peer_id) && stderr(&out).contains(&d2.peer_id));
    alice.one(&["send", &d2.peer_id, "by peer id works"]);
    fails(
        &alice.run(&["send", &d1.peer_id, ""]),
        2,
        "the message is empty",
    );
    fails(
        &alice.run(&["add", "not-a-peer"]),
        2,
        "neither a peer id nor a multiaddr",
    );
    fails(
        &alice.run(&["cipher", &d1.peer_id, "des"]),
        2,
        "invalid value",
    );
    let unreachable = format!("/ip4/127.0.0.1/tcp/1/p2p/{}", carol_peer_id(&carol));
    fails(&alice.run(&["add", &unreachable]), 1, "cannot reach");

    // The socket: bad JSON, unknown methods and bad params get JSON-RPC errors on the same
    // connection, and the daemon goes on answering.
    let mut socket = UnixStream::connect(alice.socket()).unwrap();
    socket.set_read_timeout(Some(STEP)).unwrap();
    socket
        .write_all(
            b"{not json\n\
              {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"launch\"}\n\
              {\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"send\",\"params\":{\"to\":\"bob\"}}\n\
              {\"id\":3,\"method\":\"whoami\"}\n\
              {\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"whoami\"}\n\
              {\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"send\",\"params\":{\"to\":\"bob\",\"text\":\"hi\",\"wiat\":true}}\n",
        )
        .unwrap();
    let mut reader = BufReader::new(socket.try_clone().unwrap());
    let mut replies = Vec::new();
    for _ in 0..6 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        replies.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    assert_eq!(replies[0]["error"]["code"], -32700);
    assert_eq!(replies[0]["id"], Value::Null);
    assert_eq!(
        (
            replies[1]["id"].clone(),
            replies[1]["error"]["code"].clone()
        ),
        (json!(1), json!(-32601))
    );
    assert_eq!(replies[2]["error"]["code"], -32602);
    assert_eq!(replies[3]["error"]["code"], -32600);
    assert_eq!(replies[4]["result"]["name"], "alice");
    // An unknown parameter is refused by name, not ignored (the message was not sent).
    assert_eq!(replies[5]["error"]["code"], -32602);
    let refused = replies[5]["error"]["message"].as_str().unwrap();
    assert!(refused.contains("unknown field `wiat`"), "{refused}");
    // The method-not-found message lists every method, the file ones too.
    let not_found = replies[1]["error"]["message"].as_str().unwrap();
    for method in [
        "relay",
        "send-file",
        "fetch",
        "files",
        "forward",
        "subscribe",
    ] {
        assert!(not_found.contains(method), "{not_found}");
    }
    // An endless line is cut off, and the daemon still serves others.
    let mut flood = UnixStream::connect(alice.socket()).unwrap();
    flood.set_read_timeout(Some(STEP)).unwrap();
    let _ = flood.write_all(&vec![b'x'; 2 << 20]);
    let mut answer = String::new();
    let _ = flood.read_to_string(&mut answer);
    assert!(answer.contains("-32600"), "{answer}");
    assert_eq!(alice.one(&["whoami"])["name"], "alice");
}

/// The peer id of a user without starting a daemon (unlocks offline).
fn carol_peer_id(user: &User) -> String {
    user.one(&["whoami"])["peer_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn whoami_works_with_and_without_a_daemon() {
    let alice = User::new("alice");
    let offline = alice.one(&["whoami"]);
    assert_eq!(offline["listen_addrs"], json!([]));
    let d = alice.start(0);
    let online = alice.one(&["whoami"]);
    assert_eq!(online["peer_id"], offline["peer_id"]);
    assert_eq!(online["fingerprint"], offline["fingerprint"]);
    assert_eq!(online["listen_addrs"].as_array().unwrap().len(), 1);

    // passwd over the socket: a wrong passphrase is refused, the right one re-seals.
    let call = |params: Value| {
        let mut socket = UnixStream::connect(alice.socket()).unwrap();
        socket.set_read_timeout(Some(STEP)).unwrap();
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": "passwd", "params": params});
        socket.write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(socket).read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap()
    };
    let refused = call(json!({"passphrase": "wrong", "new_passphrase": "new one"}));
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wrong passphrase"),
        "{refused}"
    );
    let changed = call(json!({"passphrase": PASS, "new_passphrase": "the new passphrase"}));
    assert_eq!(changed["result"]["ok"], true, "{changed}");
    let (ok, _) = d.terminate();
    assert!(ok);
    let out = alice.run(&["whoami"]);
    assert_eq!(out.status.code(), Some(1));
    let out = alice
        .cmd()
        .env("ENCRYPTO_PASSPHRASE", "the new passphrase")
        .args(["--json", "whoami"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_name_is_found_through_the_dht_and_added_by_peer_id() {
    let (hub, alice, bob) = (User::new("hub"), User::new("alice"), User::new("Bob Smith"));
    let dh = hub.start(0);
    let db = bob.start_with(0, &["--bootstrap", &dh.addr]);
    let _da = alice.start_with(0, &["--bootstrap", &dh.addr]);
    // Alice knows neither Bob's address nor his peer id: she searches his name.
    let mut found = Vec::new();
    eventually("bob found in the DHT", || {
        found = alice.json(&["search", "--dht", "bob smith"]);
        found.iter().any(|f| f["peer_id"] == db.peer_id.as_str())
    });
    let entry = found
        .iter()
        .find(|f| f["peer_id"] == db.peer_id.as_str())
        .unwrap();
    assert_eq!(entry["source"], "dht");
    assert_eq!(entry["name"], "Bob Smith");
    let bob_fingerprint = bob.one(&["whoami"])["fingerprint"].clone();
    assert_eq!(entry["fingerprint"], bob_fingerprint);
    // The DHT told her node where he is: the peer id alone is enough to add him.
    // Until she adds him he is no contact, though the DHT connected their nodes.
    assert!(alice.json(&["contacts"]).is_empty());
    let both = alice.json(&["search", "  BOB   smith "]);
    assert!(
        both.iter().any(|f| f["peer_id"] == db.peer_id.as_str()),
        "{both:?}"
    );
    let added = alice.one(&["add", &db.peer_id]);
    assert_eq!(added["fingerprint"], bob_fingerprint);
    let sent = alice.one(&["send", "Bob Smith", "found you", "--wait"]);
    assert_eq!(sent["status"], "delivered");
    assert_eq!(texts(&bob.json(&["history", "alice"])), ["found you"]);
}

#[test]
fn bootstrap_peers_come_from_the_config_file_and_are_remembered() {
    let (hub, carol) = (User::new("hub"), User::new("carol"));
    let dh = hub.start(0);
    let connected_to_hub = |user: &User| {
        user.json(&["peers"])
            .iter()
            .any(|p| p["peer_id"] == dh.peer_id.as_str() && p["connected"] == true)
    };
    // A misspelt key is refused by name, not ignored.
    std::fs::write(carol.data.join("config.json"), b"{\"bootstarp\": []}").unwrap();
    fails(
        &carol.run(&["daemon", "--no-mdns"]),
        1,
        "config.json: unknown field `bootstarp`",
    );
    // A broken config file is refused, naming the file.
    std::fs::write(
        carol.data.join("config.json"),
        b"{\"bootstrap\": [\"nonsense\"]}",
    )
    .unwrap();
    fails(
        &carol.run(&["daemon", "--no-mdns"]),
        1,
        "config.json: bootstrap entry",
    );
    std::fs::write(
        carol.data.join("config.json"),
        format!("{{\"bootstrap\": [\"{}\"]}}", dh.addr),
    )
    .unwrap();
    let dc = carol.start(0);
    eventually("carol connected to the hub from her config", || {
        connected_to_hub(&carol)
    });
    let (ok, _) = dc.terminate();
    assert!(ok);
    // Without the config file or flags, she rejoins through the peers she remembers.
    std::fs::remove_file(carol.data.join("config.json")).unwrap();
    let _dc = carol.start(0);
    eventually("carol reconnected to the hub from memory", || {
        connected_to_hub(&carol)
    });
}
