//! End-to-end tests of the daemon and the CLI: real `encrypto daemon` processes on loopback
//! (mDNS off, TCP on 127.0.0.1 port 0), driven only through the real binary's commands and
//! its control socket. Every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tempfile::TempDir;

const PASS: &str = "daemon test passphrase";
/// The longest any single step may take.
const STEP: Duration = Duration::from_secs(60);

/// One user: a data directory with an identity.
struct User {
    tmp: TempDir,
    data: PathBuf,
}

impl User {
    fn new(name: &str) -> User {
        let tmp = TempDir::new().unwrap();
        let data = tmp.path().join("data");
        let user = User { tmp, data };
        let out = user
            .cmd()
            .args(["init", "--rsa-bits", "2048", "--name", name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        user
    }

    /// `encrypto --data-dir DATA` with the passphrase in the environment.
    fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_encrypto"));
        cmd.env_remove("ENCRYPTO_DATA_DIR")
            .env_remove("ENCRYPTO_NEW_PASSPHRASE")
            .env("ENCRYPTO_PASSPHRASE", PASS)
            .env("HOME", self.tmp.path().join("home"))
            .stdin(Stdio::null())
            .arg("--data-dir")
            .arg(&self.data);
        cmd
    }

    fn socket(&self) -> PathBuf {
        self.data.join("encrypto.sock")
    }

    /// Runs a client command; returns the output.
    fn run(&self, args: &[&str]) -> Output {
        let mut child = self
            .cmd()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_bounded(&mut child, STEP);
        child.wait_with_output().unwrap()
    }

    /// Runs `--json ARGS`, checks success, returns every stdout line as JSON.
    fn json(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "{args:?}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn one(&self, args: &[&str]) -> Value {
        let mut lines = self.json(args);
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        lines.remove(0)
    }

    /// Starts `daemon --json --no-mdns` on 127.0.0.1 (at `port`, 0 for any).
    fn start(&self, port: u16) -> Daemon {
        let listen = format!("/ip4/127.0.0.1/tcp/{port}");
        let mut child = self
            .cmd()
            .args(["--json", "daemon", "--no-mdns", "--listen", &listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(STEP) {
            Ok(line) if !line.is_empty() => line,
            _ => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "no ready line; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        let ready: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(ready["event"], "ready");
        let addr = format!(
            "{}/p2p/{}",
            ready["listen_addrs"][0].as_str().unwrap(),
            ready["peer_id"].as_str().unwrap()
        );
        Daemon {
            child: Some(child),
            peer_id: ready["peer_id"].as_str().unwrap().to_owned(),
            addr,
        }
    }
}

/// A running daemon; killed if the test ends without stopping it.
struct Daemon {
    child: Option<Child>,
    peer_id: String,
    /// Its listen address with `/p2p/PEER_ID`.
    addr: String,
}

impl Daemon {
    fn port(&self) -> u16 {
        let tcp = self.addr.split("/tcp/").nth(1).unwrap();
        tcp.split('/').next().unwrap().parse().unwrap()
    }

    /// Sends SIGTERM and waits for the exit; returns (success, stderr).
    fn terminate(mut self) -> (bool, String) {
        let mut child = self.child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        wait_bounded(&mut child, STEP);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for `child` to exit, killing it (and failing) after `limit`.
fn wait_bounded(child: &mut Child, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("a command did not finish within {limit:?}");
}

/// `watch --json` as a child: its event lines arrive on a channel.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Watch {
    fn start(user: &User) -> Watch {
        let mut child = user
            .cmd()
            .args(["--json", "watch"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    return;
                }
            }
        });
        Watch { child, lines }
    }

    /// The first event matching `pick` (bounded).
    fn expect(&self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(event) if pick(&event) => return event,
                Ok(_) => {}
                Err(_) => panic!("watch did not see {what} within {STEP:?}"),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Checks a failure: exit code, one line on stderr containing `want`.
fn fails(out: &Output, code: i32, want: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(want), "{err:?} lacks {want:?}");
}

/// Polls `cond` (bounded).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("not within {STEP:?}: {what}");
}

fn texts(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .map(|m| m["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

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
              {\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"whoami\"}\n",
        )
        .unwrap();
    let mut reader = BufReader::new(socket.try_clone().unwrap());
    let mut replies = Vec::new();
    for _ in 0..5 {
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
