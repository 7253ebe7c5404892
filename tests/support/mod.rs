//! What the end-to-end tests of the binary share: users with data directories, daemons
//! started from the real binary (optionally inside a network namespace), `watch` streams, and
//! bounded waits.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

pub const PASS: &str = "daemon test passphrase";
/// The longest any single step may take.
pub const STEP: Duration = Duration::from_secs(60);

/// One user: a data directory with an identity.
pub struct User {
    pub tmp: TempDir,
    pub data: PathBuf,
}

impl User {
    pub fn new(name: &str) -> User {
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
    pub fn cmd(&self) -> Command {
        self.cmd_in(None)
    }

    /// As [`User::cmd`], run inside the network namespace `netns` when given.
    pub fn cmd_in(&self, netns: Option<&str>) -> Command {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_encrypto")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_encrypto")),
        };
        cmd.env_remove("ENCRYPTO_DATA_DIR")
            .env_remove("ENCRYPTO_NEW_PASSPHRASE")
            .env("ENCRYPTO_PASSPHRASE", PASS)
            .env("HOME", self.tmp.path().join("home"))
            .stdin(Stdio::null())
            .arg("--data-dir")
            .arg(&self.data);
        cmd
    }

    pub fn socket(&self) -> PathBuf {
        self.data.join("encrypto.sock")
    }

    /// Runs a client command; returns the output.
    pub fn run(&self, args: &[&str]) -> Output {
        let child = self
            .cmd()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Output is read while the command runs (a full pipe would stall it), on a thread so
        // that the wait stays bounded.
        let pid = Pid::from_raw(child.id() as i32);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(STEP) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                let _ = kill(pid, Signal::SIGKILL);
                panic!(
                    "`encrypto {}` did not finish within {STEP:?}",
                    args.join(" ")
                );
            }
        }
    }

    /// Runs `--json ARGS`, checks success, returns every stdout line as JSON.
    pub fn json(&self, args: &[&str]) -> Vec<Value> {
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

    pub fn one(&self, args: &[&str]) -> Value {
        let mut lines = self.json(args);
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        lines.remove(0)
    }

    /// Starts `daemon --json --no-mdns` on 127.0.0.1 (at `port`, 0 for any).
    pub fn start(&self, port: u16) -> Daemon {
        self.start_with(port, &[])
    }

    /// As [`User::start`], with more daemon flags.
    pub fn start_with(&self, port: u16, extra: &[&str]) -> Daemon {
        self.start_in(None, &format!("/ip4/127.0.0.1/tcp/{port}"), extra)
    }

    /// Starts `daemon --json --no-mdns --listen LISTEN EXTRA...`, inside `netns` if given.
    pub fn start_in(&self, netns: Option<&str>, listen: &str, extra: &[&str]) -> Daemon {
        // The daemon's stderr goes to a file: a pipe nobody reads would fill and stall it.
        let log = self.tmp.path().join("daemon.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = self
            .cmd_in(netns)
            .args(["--json", "daemon", "--no-mdns", "--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(file)
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
                let _ = child.wait();
                panic!(
                    "no ready line; stderr: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
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
            log,
        }
    }
}

/// A running daemon; killed if the test ends without stopping it.
pub struct Daemon {
    pub child: Option<Child>,
    pub peer_id: String,
    /// Its listen address with `/p2p/PEER_ID`.
    pub addr: String,
    /// Where its stderr goes (appended to across restarts).
    pub log: PathBuf,
}

impl Daemon {
    pub fn port(&self) -> u16 {
        let tcp = self.addr.split("/tcp/").nth(1).unwrap();
        tcp.split('/').next().unwrap().parse().unwrap()
    }

    /// Sends SIGTERM and waits for the exit; returns (success, stderr).
    pub fn terminate(mut self) -> (bool, String) {
        let mut child = self.child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        wait_bounded(&mut child, STEP);
        let status = child.wait().unwrap();
        (
            status.success(),
            std::fs::read_to_string(&self.log).unwrap_or_default(),
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
pub fn wait_bounded(child: &mut Child, limit: Duration) {
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
pub struct Watch {
    pub child: Child,
    pub lines: mpsc::Receiver<Value>,
}

impl Watch {
    pub fn start(user: &User) -> Watch {
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
    pub fn expect(&self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
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

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Checks a failure: exit code, one line on stderr containing `want`.
pub fn fails(out: &Output, code: i32, want: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(want), "{err:?} lacks {want:?}");
}

/// Polls `cond` (bounded).
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("not within {STEP:?}: {what}");
}

pub fn texts(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .map(|m| m["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// SIGKILL: no clean shutdown, the socket file stays behind.
pub fn kill9(mut daemon: Daemon) {
    let mut child = daemon.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Restarts a killed daemon on its port: the stale socket it left must be removed first.
pub fn restart(user: &User, port: u16) -> Daemon {
    let _ = std::fs::remove_file(user.socket());
    user.start(port)
}

/// Runs a command; the error names it and says what it printed.
pub fn run_command(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{program} {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    run_command("ip", args).unwrap();
}

/// Whether a test that needs root (namespaces, a tmpfs) must run rather than skip itself:
/// CI sets `ENCRYPTO_REQUIRE_NETNS=1`.
pub fn privileged_required() -> bool {
    std::env::var_os("ENCRYPTO_REQUIRE_NETNS").is_some_and(|v| v == "1")
}

/// Skips `test` with a printed reason, or fails it where it must run.
pub fn skip(test: &str, reason: &str) {
    assert!(
        !privileged_required(),
        "ENCRYPTO_REQUIRE_NETNS=1 but {test} cannot run: {reason}"
    );
    eprintln!("SKIPPED {test}: {reason}");
}
