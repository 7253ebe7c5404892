//! A damaged data directory, on the real binary: the keystore truncated, with bytes flipped or
//! missing; the message store's files truncated, overwritten or deleted. Every command that
//! reads them must stop with one line on stderr that names the damaged file or directory and
//! says what to do, never panic, and never quietly carry on with part of the data lost.
//!
//! What sled can survive (garbage after its log, its `conf` file gone) must leave every message
//! readable. Damage inside sled's log cannot be repaired: sled reads its log up to the first
//! bad record and drops the rest. What we can promise there is that the daemon says so instead
//! of starting with a shorter history, and that what sled still reads, opened on purpose, is
//! intact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{PASS, STEP, User, texts};
use tempfile::TempDir;

/// Messages Alice sends Bob before Bob's store is damaged.
const MESSAGES: usize = 40;
/// How long a command that must refuse to start may take (Argon2 included).
const REFUSE_WITHIN: Duration = Duration::from_secs(30);

const DAEMON: &[&str] = &[
    "--json",
    "daemon",
    "--no-mdns",
    "--listen",
    "/ip4/127.0.0.1/tcp/0",
];

/// Runs `args` for `user`, expecting it to fail by itself within [`REFUSE_WITHIN`]: a daemon
/// that starts instead is killed and the test fails. Checks the failure is one `error:` line
/// and no panic; returns that line.
fn refuses(user: &User, args: &[&str], passphrase: &str) -> String {
    let child = user
        .cmd()
        .env("ENCRYPTO_PASSPHRASE", passphrase)
        .env("ENCRYPTO_NEW_PASSPHRASE", "another passphrase")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, REFUSE_WITHIN)
        .unwrap_or_else(|| panic!("`encrypto {}` did not stop by itself", args.join(" ")));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let what = format!("`encrypto {}`", args.join(" "));
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    assert_ne!(out.status.code(), Some(101), "{what}: {err}");
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert_eq!(err.lines().count(), 1, "{what}: not one line: {err:?}");
    assert!(err.starts_with("error: "), "{what}: {err}");
    err.trim_end().to_owned()
}

/// Waits for `child` (bounded), killing it and returning `None` if it is still running then.
fn wait_output(child: Child, limit: Duration) -> Option<Output> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Some(out.unwrap()),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = rx.recv_timeout(STEP);
            None
        }
    }
}

/// A copy of `user`'s data directory as a new user (same identity, same passphrase).
fn copy_of(user: &User) -> User {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&user.data, &data);
    User { tmp, data }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_file() {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn keystore(user: &User) -> PathBuf {
    user.data.join("keystore")
}

fn store(user: &User) -> PathBuf {
    user.data.join("store")
}

/// Flips every byte of `file` in `range` (clamped to the file).
fn flip(file: &Path, at: usize, len: usize) {
    let mut bytes = fs::read(file).unwrap();
    let end = (at + len).min(bytes.len());
    for b in &mut bytes[at..end] {
        *b ^= 0x5a;
    }
    fs::write(file, bytes).unwrap();
}

fn truncate(file: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Alice and Bob, with `MESSAGES` messages from Alice in Bob's history, both daemons stopped
/// cleanly. Returns (alice, bob, alice's peer id, the texts in Bob's history).
fn chatted() -> (User, User, String, Vec<String>) {
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let da = alice.start(0);
    let db = bob.start(0);
    alice.one(&["add", &db.addr]);
    for i in 0..MESSAGES {
        alice.one(&["send", &db.peer_id, &format!("message {i:03}"), "--wait"]);
    }
    let history = bob.json(&["history", &da.peer_id]);
    let want: Vec<String> = (0..MESSAGES).map(|i| format!("message {i:03}")).collect();
    assert_eq!(texts(&history), want);
    let alice_id = da.peer_id.clone();
    for d in [da, db] {
        let (ok, log) = d.terminate();
        assert!(ok, "{log}");
    }
    (alice, bob, alice_id, want)
}

/// Starts `user`'s daemon (it must start), reads its history with `peer`, stops it.
fn readable_history(user: &User, peer: &str) -> Vec<String> {
    let d = user.start(0);
    let history = user.json(&["history", peer]);
    let contacts = user.json(&["contacts"]);
    assert_eq!(contacts.len(), 1, "the contact survives: {contacts:?}");
    let (ok, log) = d.terminate();
    assert!(ok, "{log}");
    texts(&history)
}

#[test]
fn a_damaged_keystore_is_named_with_what_to_do_and_a_wrong_passphrase_stays_distinct() {
    let (_alice, bob, _, _) = chatted();
    let good = fs::read(keystore(&bob)).unwrap();
    let commands: [&[&str]; 3] = [DAEMON, &["whoami"], &["passwd"]];

    // The intact keystore with a wrong passphrase: said so, and not called damaged.
    for args in commands {
        let line = refuses(&bob, args, "not the passphrase");
        assert!(line.contains("wrong passphrase"), "{args:?}: {line}");
        assert!(line.contains(keystore(&bob).to_str().unwrap()), "{line}");
        assert!(!line.contains("damaged"), "{args:?}: {line}");
    }

    type Damage = fn(&Path, &[u8]);
    let cases: [(&str, Damage); 6] = [
        ("truncated to half", |k, good| {
            truncate(k, good.len() as u64 / 2)
        }),
        ("truncated by one byte", |k, good| {
            truncate(k, good.len() as u64 - 1)
        }),
        ("emptied", |k, _| truncate(k, 0)),
        ("a byte flipped in the sealed keys", |k, good| {
            flip(k, good.len() - 40, 1)
        }),
        ("a byte flipped in the header", |k, _| flip(k, 20, 1)),
        ("overwritten with garbage", |k, good| {
            fs::write(k, vec![0xa5; good.len()]).unwrap()
        }),
    ];
    for (case, damage) in cases {
        let user = copy_of(&bob);
        damage(&keystore(&user), &good);
        let damaged = fs::read(keystore(&user)).unwrap();
        for args in commands {
            let line = refuses(&user, args, PASS);
            let path = keystore(&user);
            assert!(
                line.contains(&format!("the keystore {} is damaged", path.display())),
                "{case}, {args:?}: {line}"
            );
            assert!(line.contains("restore it from a backup"), "{case}: {line}");
            assert!(!line.contains("wrong passphrase"), "{case}: {line}");
        }
        // Nothing was rewritten (passwd above must not have replaced it), and the store is
        // untouched.
        assert_eq!(fs::read(keystore(&user)).unwrap(), damaged, "{case}");
        // With the keystore restored from a backup, everything is back.
        fs::write(keystore(&user), &good).unwrap();
        assert!(user.run(&["whoami"]).status.success(), "{case}");
    }
}

#[test]
fn a_missing_keystore_beside_a_store_says_restore_it_not_just_init() {
    let (alice, bob, alice_id, want) = chatted();
    let user = copy_of(&bob);
    let good = fs::read(keystore(&user)).unwrap();
    fs::remove_file(keystore(&user)).unwrap();
    // The daemon and the offline commands, a client of the daemon, and `init`, which would
    // make an identity that cannot read the store.
    let commands: [&[&str]; 5] = [
        DAEMON,
        &["whoami"],
        &["passwd"],
        &["contacts"],
        &["init", "--rsa-bits", "2048", "--name", "bob"],
    ];
    for args in commands {
        let line = refuses(&user, args, PASS);
        assert!(
            line.contains(keystore(&user).to_str().unwrap()),
            "{args:?}: names the missing file: {line}"
        );
        assert!(line.contains("missing"), "{args:?}: {line}");
        assert!(
            line.contains("restore the keystore from a backup"),
            "{args:?}: {line}"
        );
        assert!(
            line.contains(store(&user).to_str().unwrap()),
            "{args:?}: names the store a new identity could not read: {line}"
        );
    }
    assert!(!keystore(&user).exists(), "`init` wrote nothing");
    assert!(store(&user).join("db").exists(), "the store is left alone");
    fs::write(keystore(&user), &good).unwrap();
    assert_eq!(readable_history(&user, &alice_id), want);

    // A data directory that never had a store: no identity yet, as before.
    let empty = copy_of(&alice);
    fs::remove_file(keystore(&empty)).unwrap();
    fs::remove_dir_all(store(&empty)).unwrap();
    let line = refuses(&empty, &["whoami"], PASS);
    assert!(line.contains("run `encrypto init"), "{line}");
}

#[test]
fn a_damaged_store_stops_the_daemon_naming_it_and_what_to_do() {
    let (_alice, bob, alice_id, want) = chatted();
    let db_len = fs::metadata(store(&bob).join("db")).unwrap().len();
    assert!(db_len > 8192, "the store holds the history: {db_len} bytes");

    type Damage = fn(&Path, u64);
    let cases: [(&str, Damage); 8] = [
        ("db truncated to nothing", |s, _| truncate(&s.join("db"), 0)),
        ("db truncated to 10 bytes", |s, _| {
            truncate(&s.join("db"), 10)
        }),
        ("db cut in half", |s, len| truncate(&s.join("db"), len / 2)),
        ("db overwritten with garbage", |s, len| {
            fs::write(s.join("db"), vec![0xa5; len as usize]).unwrap()
        }),
        ("db deleted", |s, _| fs::remove_file(s.join("db")).unwrap()),
        ("bytes flipped in the middle of the db", |s, len| {
            flip(&s.join("db"), len as usize / 2, 64)
        }),
        ("conf overwritten with garbage", |s, _| {
            fs::write(s.join("conf"), vec![0xa5; 62]).unwrap()
        }),
        ("conf cut short", |s, _| truncate(&s.join("conf"), 10)),
    ];
    for (case, damage) in cases {
        let user = copy_of(&bob);
        damage(&store(&user), db_len);
        let line = refuses(&user, DAEMON, PASS);
        assert!(
            line.contains(&format!(
                "the message store {} is damaged",
                store(&user).display()
            )),
            "{case}: {line}"
        );
        assert!(line.contains("restore it from a backup"), "{case}: {line}");
        assert!(!user.socket().exists(), "{case}: the socket was removed");
        // Refusing changed nothing: a second start says the same.
        assert_eq!(refuses(&user, DAEMON, PASS), line, "{case}");
    }

    // The undamaged copy still holds everything: the cases above damaged copies only.
    assert_eq!(readable_history(&copy_of(&bob), &alice_id), want);
}

#[test]
fn damage_sled_survives_loses_nothing() {
    let (_alice, bob, alice_id, want) = chatted();
    type Damage = fn(&Path);
    let cases: [(&str, Damage); 4] = [
        ("garbage after the log", |s| {
            let mut bytes = fs::read(s.join("db")).unwrap();
            bytes.extend(std::iter::repeat_n(0xa5, 5000));
            fs::write(s.join("db"), bytes).unwrap()
        }),
        ("conf deleted", |s| fs::remove_file(s.join("conf")).unwrap()),
        ("blobs directory deleted", |s| {
            fs::remove_dir_all(s.join("blobs")).unwrap()
        }),
        ("our marker file deleted", |s| {
            fs::remove_file(s.join("encrypto-store")).unwrap()
        }),
    ];
    for (case, damage) in cases {
        let user = copy_of(&bob);
        damage(&store(&user));
        assert_eq!(readable_history(&user, &alice_id), want, "{case}");
        // And again after that clean restart.
        assert_eq!(readable_history(&user, &alice_id), want, "{case}, twice");
    }
}

#[test]
fn after_damage_inside_the_log_what_sled_still_reads_opens_on_purpose_and_is_intact() {
    let (_alice, bob, alice_id, want) = chatted();
    let user = copy_of(&bob);
    let db = store(&user).join("db");
    let len = fs::metadata(&db).unwrap().len() as usize;
    flip(&db, len / 2, 64);
    let line = refuses(&user, DAEMON, PASS);
    assert!(line.contains("is damaged"), "{line}");
    // The way out the error offers: open what is still readable.
    let marker = store(&user).join("encrypto-store");
    assert!(
        line.contains(marker.to_str().unwrap()),
        "says how to open what is readable: {line}"
    );
    fs::remove_file(&marker).unwrap();
    let left = readable_history(&user, &alice_id);
    eprintln!(
        "after flipping 64 bytes at {} of {len}: {} of {MESSAGES} messages readable",
        len / 2,
        left.len()
    );
    assert!(left.len() < want.len(), "damage in the log loses its tail");
    assert_eq!(
        left,
        want[..left.len()],
        "what is left is the oldest, intact"
    );
    // From there on the store is consistent again: it opens as it is.
    assert_eq!(readable_history(&user, &alice_id), left);
}
