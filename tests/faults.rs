//! Faults on real daemons: processes killed with SIGKILL at random points while messages
//! stream. Whatever the sender's `send` accepted must end up in the receiver's history exactly
//! once, whichever side dies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use rand::RngExt;
use serde_json::{Value, json};
use support::{STEP, User, eventually, kill9, restart};

const MESSAGES: usize = 2_000;
const CYCLES: usize = 10;

/// Sends `count` messages to `to` over one socket connection, pipelined 32 at a time; returns
/// the ids the daemon accepted (an error reply or a dead daemon ends the stream early).
fn stream(user: &User, to: &str, count: usize, tag: &str) -> Vec<String> {
    let Ok(socket) = UnixStream::connect(user.socket()) else {
        return Vec::new();
    };
    socket.set_read_timeout(Some(STEP)).unwrap();
    let mut writer = socket.try_clone().unwrap();
    let mut reader = BufReader::new(socket);
    let mut accepted = Vec::new();
    let mut sent = 0;
    while sent < count {
        let batch = (count - sent).min(32);
        let mut lines = String::new();
        for i in sent..sent + batch {
            let request = json!({"jsonrpc": "2.0", "id": i, "method": "send",
                "params": {"to": to, "text": format!("{tag} {i}")}});
            lines.push_str(&format!("{request}\n"));
        }
        if writer.write_all(lines.as_bytes()).is_err() {
            return accepted;
        }
        for _ in 0..batch {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(n) if n > 0 => {}
                _ => return accepted,
            }
            let reply: Value = serde_json::from_str(&line).unwrap();
            if let Some(id) = reply["result"]["id"].as_str() {
                accepted.push(id.to_owned());
            }
        }
        sent += batch;
    }
    accepted
}

/// Every message of `tag` is in `user`'s history with `peer` exactly once.
fn check_exactly_once(receiver: &User, peer: &str, accepted: &[String]) {
    let history = receiver.json(&["history", peer]);
    let mut count: HashMap<&str, usize> = HashMap::new();
    for m in &history {
        *count.entry(m["id"].as_str().unwrap()).or_default() += 1;
    }
    for id in accepted {
        assert_eq!(
            count.get(id.as_str()),
            Some(&1),
            "message {id} not exactly once"
        );
    }
}

fn all_delivered(sender: &User, peer: &str, accepted: &[String]) -> bool {
    let history = sender.json(&["history", peer]);
    let delivered: std::collections::HashSet<&str> = history
        .iter()
        .filter(|m| m["status"] == "delivered")
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    accepted.iter().all(|id| delivered.contains(id.as_str()))
}

#[test]
fn the_receiver_killed_ten_times_mid_stream_loses_nothing_and_duplicates_nothing() {
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let da = alice.start(0);
    let first = bob.start(0);
    let bob_port = first.port();
    let bob_id = first.peer_id.clone();
    alice.one(&["add", &first.addr]);
    let mut db = Some(first);

    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let alice = &alice;
        let bob_id2 = bob_id.clone();
        scope.spawn(move || tx.send(stream(alice, &bob_id2, MESSAGES, "msg")).unwrap());
        let mut rng = rand::rng();
        for _ in 0..CYCLES {
            std::thread::sleep(Duration::from_millis(rng.random_range(50..400)));
            kill9(db.take().unwrap());
            db = Some(restart(&bob, bob_port));
        }
    });
    let accepted = rx.recv_timeout(STEP).unwrap();
    assert_eq!(accepted.len(), MESSAGES, "alice's daemon refused sends");
    eventually("every accepted message delivered", || {
        all_delivered(&alice, &bob_id, &accepted)
    });
    check_exactly_once(&bob, &da.peer_id, &accepted);
}

#[test]
fn the_sender_killed_ten_times_mid_stream_keeps_its_outbox() {
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let first = alice.start(0);
    let alice_port = first.port();
    let alice_id = first.peer_id.clone();
    let mut da = Some(first);
    let db = bob.start(0);
    alice.one(&["add", &db.addr]);

    // Each cycle streams from a fresh connection and kills Alice mid-stream: what her daemon
    // accepted before dying is what must arrive.
    let mut accepted = Vec::new();
    let mut rng = rand::rng();
    for cycle in 0..CYCLES {
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|scope| {
            let alice = &alice;
            let to = db.peer_id.clone();
            scope.spawn(move || {
                tx.send(stream(
                    alice,
                    &to,
                    MESSAGES / CYCLES,
                    &format!("cycle {cycle}"),
                ))
                .unwrap()
            });
            std::thread::sleep(Duration::from_millis(rng.random_range(20..200)));
            kill9(da.take().unwrap());
        });
        accepted.extend(rx.recv_timeout(STEP).unwrap());
        da = Some(restart(&alice, alice_port));
    }
    assert!(!accepted.is_empty());
    eventually("every accepted message delivered", || {
        all_delivered(&alice, &db.peer_id, &accepted)
    });
    check_exactly_once(&bob, &alice_id, &accepted);
    drop(da);
}
