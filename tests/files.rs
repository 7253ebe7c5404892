//! File transfers end to end through the real binary: `send-file`, `files`, `fetch`, `watch`,
//! `history`, and transfers that survive `kill -9` of either daemon. Real daemons on loopback;
//! every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{STEP, User, Watch, eventually, fails, kill9, restart};

fn random_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The one transfer of `file_id` in `direction` (`in`, `out`, `relay`).
fn transfer(user: &User, file_id: &str, direction: &str) -> Value {
    user.json(&["files"])
        .into_iter()
        .find(|f| f["file_id"] == file_id && f["direction"] == direction)
        .unwrap_or_else(|| panic!("no {direction} transfer of {file_id}"))
}

/// Waits (bounded, `steps` × [`STEP`]) until the transfer is complete.
fn complete(user: &User, file_id: &str, direction: &str, steps: u32) -> Value {
    let deadline = Instant::now() + STEP * steps;
    loop {
        let t = transfer(user, file_id, direction);
        match t["state"].as_str() {
            Some("complete") => return t,
            Some("failed") => panic!("transfer failed: {t}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "not complete in time: {t}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn files_move_through_the_cli_with_send_file_files_fetch_watch_and_history() {
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    // Bob downloads files up to 1 MB by himself; larger ones wait for `fetch`.
    std::fs::create_dir_all(&bob.data).unwrap();
    std::fs::write(
        bob.data.join("config.json"),
        r#"{"download_limit": 1000000}"#,
    )
    .unwrap();
    let (_da, db) = (alice.start(0), bob.start(0));
    alice.one(&["add", &db.addr]);
    let watch = Watch::start(&bob);

    let (small, small_bytes) = random_file(alice.tmp.path(), "notes.txt", 300_000, 1);
    let sent = alice.one(&["send-file", "bob", small.to_str().unwrap(), "--wait"]);
    assert_eq!(sent["name"], "notes.txt");
    assert_eq!(sent["size"], 300_000);
    assert_eq!(sent["sha256"], sha256_hex(&small_bytes).as_str());
    let id = sent["file_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    watch.expect("file_offered", |e| {
        e["event"] == "file_offered" && e["file_id"] == id.as_str() && e["name"] == "notes.txt"
    });
    let done = watch.expect("file_complete", |e| {
        e["event"] == "file_complete" && e["file_id"] == id.as_str() && e["direction"] == "in"
    });
    let got = transfer(&bob, &id, "in");
    assert_eq!(got["state"], "complete");
    assert_eq!(got["bytes_done"], 300_000);
    assert_eq!(got["sha256"], sent["sha256"]);
    assert_eq!(got["path"], done["path"]);
    let path = got["path"].as_str().unwrap();
    assert_eq!(
        Path::new(path),
        bob.data.join("downloads").join("notes.txt")
    );
    assert!(std::fs::read(path).unwrap() == small_bytes);
    assert_eq!(transfer(&alice, &id, "out")["state"], "complete");
    let history = bob.json(&["history", "alice"]);
    let item = history
        .iter()
        .find(|m| m["file_id"] == id.as_str())
        .unwrap();
    assert_eq!(
        (item["name"].as_str(), item["text"].as_str()),
        (Some("notes.txt"), None)
    );
    let human = String::from_utf8(bob.run(&["files"]).stdout).unwrap();
    assert!(
        human.contains("notes.txt") && human.contains("complete"),
        "{human}"
    );

    // Over Bob's limit: offered, then fetched to a path of his choosing.
    let (big, big_bytes) = random_file(alice.tmp.path(), "album.zip", 3_000_000, 2);
    let sent = alice.one(&["send-file", "bob", big.to_str().unwrap()]);
    let id = sent["file_id"].as_str().unwrap().to_owned();
    eventually("the offer reaches bob", || {
        bob.json(&["files"])
            .iter()
            .any(|f| f["file_id"] == id.as_str())
    });
    assert_eq!(transfer(&bob, &id, "in")["state"], "offered");
    let taken = bob.tmp.path().join("taken.zip");
    std::fs::write(&taken, b"mine").unwrap();
    fails(
        &bob.run(&["fetch", &id, "--out", taken.to_str().unwrap()]),
        1,
        "exists; not overwritten",
    );
    assert_eq!(std::fs::read(&taken).unwrap(), b"mine");
    let out = bob.tmp.path().join("album-copy.zip");
    let fetched = bob.one(&["fetch", &id, "--out", out.to_str().unwrap()]);
    assert_eq!(fetched["state"], "complete");
    assert_eq!(fetched["path"], out.to_str().unwrap());
    assert!(std::fs::read(&out).unwrap() == big_bytes);

    // Bad input: one line each, nothing sent.
    let missing = alice.tmp.path().join("missing.bin");
    fails(
        &alice.run(&["send-file", "bob", missing.to_str().unwrap()]),
        1,
        "missing.bin",
    );
    fails(
        &alice.run(&["send-file", "bob", alice.tmp.path().to_str().unwrap()]),
        1,
        "is a directory",
    );
    fails(
        &alice.run(&["send-file", "carol", small.to_str().unwrap()]),
        1,
        "no contact named",
    );
    fails(&bob.run(&["fetch", "xyz"]), 2, "not a file id");
    fails(
        &bob.run(&["fetch", "00000000000000000000000000000000"]),
        1,
        "no file",
    );
    assert_eq!(alice.json(&["files"]).len(), 2);

    // The relay mark: set, shown, cleared; an unknown contact is a clear error.
    assert_eq!(alice.one(&["relay", "bob"])["relay"], true);
    assert_eq!(alice.json(&["contacts"])[0]["relay"], true);
    let human = String::from_utf8(alice.run(&["contacts"]).stdout).unwrap();
    assert!(human.contains("RELAY"), "{human}");
    assert_eq!(alice.one(&["relay", "bob", "--off"])["relay"], false);
    assert_eq!(alice.json(&["contacts"])[0]["relay"], false);
    fails(&alice.run(&["relay", "carol"]), 1, "no contact named");
}

#[test]
fn a_file_transfer_survives_kill_9_of_the_receiver_and_of_the_sender() {
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let (mut da, mut db) = (Some(alice.start(0)), Some(bob.start(0)));
    let (pa, pb) = (da.as_ref().unwrap().port(), db.as_ref().unwrap().port());
    alice.one(&["add", &db.as_ref().unwrap().addr]);

    for (round, victim) in ["receiver", "sender"].into_iter().enumerate() {
        let (path, bytes) = random_file(
            alice.tmp.path(),
            &format!("{victim}.bin"),
            40 << 20,
            10 + round as u64,
        );
        let sent = alice.one(&["send-file", "bob", path.to_str().unwrap()]);
        let id = sent["file_id"].as_str().unwrap().to_owned();
        // Kill mid-transfer: once a quarter, not all, of the file is at Bob's.
        let deadline = Instant::now() + STEP;
        let mut seen = 0;
        while seen < (40 << 20) / 4 {
            assert!(Instant::now() < deadline, "the transfer did not start");
            if let Some(t) = bob
                .json(&["files"])
                .into_iter()
                .find(|f| f["file_id"] == id.as_str())
            {
                assert_ne!(
                    t["state"], "complete",
                    "done before the kill; use a larger file"
                );
                seen = t["bytes_done"].as_u64().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if victim == "receiver" {
            kill9(db.take().unwrap());
            db = Some(restart(&bob, pb));
            let held = transfer(&bob, &id, "in");
            assert!(
                held["bytes_done"].as_u64().unwrap() > 0,
                "nothing held after the restart: {held}"
            );
        } else {
            kill9(da.take().unwrap());
            std::thread::sleep(Duration::from_millis(500));
            da = Some(restart(&alice, pa));
        }
        let got = complete(&bob, &id, "in", 4);
        assert_eq!(got["sha256"], sha256_hex(&bytes).as_str());
        assert!(
            std::fs::read(got["path"].as_str().unwrap()).unwrap() == bytes,
            "the copy differs after kill -9 of the {victim}"
        );
    }
    drop((da, db));
}

#[test]
fn a_contact_marked_as_relay_carries_a_file_to_a_recipient_who_was_offline() {
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let (da, db, _dc) = (alice.start(0), bob.start(0), carol.start(0));
    let (carol_addr, bob_port) = (_dc.addr.clone(), db.port());
    alice.one(&["add", &db.addr]);
    alice.one(&["add", &carol_addr]);
    bob.one(&["add", &carol_addr]);
    alice.one(&["relay", "carol"]);

    // Bob goes offline; Alice sends without naming a relay.
    let (ok, _) = db.terminate();
    assert!(ok);
    eventually("alice sees bob gone", || {
        alice
            .json(&["peers"])
            .iter()
            .any(|p| p["name"] == "bob" && p["connected"] == false)
    });
    let (path, bytes) = random_file(alice.tmp.path(), "slides.pdf", 2_000_000, 40);
    let sent = alice.one(&["send-file", "bob", path.to_str().unwrap()]);
    let id = sent["file_id"].as_str().unwrap().to_owned();
    let carol_id = carol.one(&["whoami"])["peer_id"].clone();
    assert_eq!(sent["relays"], serde_json::json!([carol_id]));
    complete(&carol, &id, "relay", 2);
    let (ok, _) = da.terminate();
    assert!(ok);

    // Bob comes back with Alice gone: Carol passes the offer on and serves the file.
    let _db = bob.start(bob_port);
    let started = Instant::now();
    eventually("carol passes the offer on", || {
        bob.json(&["files"])
            .iter()
            .any(|f| f["file_id"] == id.as_str())
    });
    eprintln!(
        "the offer reached bob {:?} after his start",
        started.elapsed()
    );
    let got = complete(&bob, &id, "in", 3);
    assert!(std::fs::read(got["path"].as_str().unwrap()).unwrap() == bytes);
    eventually("carol drops her copy", || {
        carol
            .json(&["files"])
            .iter()
            .all(|f| f["file_id"] != id.as_str() || f["path"].is_null())
    });
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u32) -> Result<Tmpfs, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not running as root (mounting a tmpfs needs it)".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_owned()))
    }

    fn resize(&self, mib: u32) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "cannot resize the tmpfs");
    }

    /// Bytes allocated by the files under the mount.
    fn used(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fn walk(dir: &Path) -> u64 {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.0)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_download_that_would_fill_the_disk_fails_cleanly_and_chats_go_on() {
    let (alice, mut bob) = (User::new("alice"), User::new("bob"));
    // Bob's whole data directory (store, keystore, downloads) lives on a 96 MiB disk: a
    // 48 MiB file would leave less than the 64 MiB a download keeps free.
    let disk = match Tmpfs::mount(&bob.tmp.path().join("disk"), 96) {
        Ok(disk) => disk,
        Err(reason) => return support::skip("the full-disk test", &reason),
    };
    let moved = disk.0.join("data");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&bob.data)
        .arg(&moved)
        .status()
        .unwrap();
    assert!(status.success());
    bob.data = moved;
    let (_da, db) = (alice.start(0), bob.start(0));
    alice.one(&["add", &db.addr]);
    let before = disk.used();
    let watch = Watch::start(&bob);

    let (path, bytes) = random_file(alice.tmp.path(), "film.mkv", 48 << 20, 30);
    let sent = alice.one(&["send-file", "bob", path.to_str().unwrap()]);
    let id = sent["file_id"].as_str().unwrap().to_owned();
    let failed = watch.expect("file_failed", |e| {
        e["event"] == "file_failed" && e["file_id"] == id.as_str()
    });
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("not enough disk space")
            && reason.contains(&format!("encrypto fetch {id}")),
        "{reason}"
    );
    let t = transfer(&bob, &id, "in");
    assert_eq!(t["state"], "failed");
    assert_eq!(t["error"], failed["reason"]);
    assert!(t["path"].is_null(), "{t}");
    // Nothing under the final name, no partial file left, the space still free.
    let downloads = bob.data.join("downloads");
    let left: Vec<_> = std::fs::read_dir(&downloads)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in downloads: {left:?}");
    eprintln!(
        "tmpfs used: {} KiB before the transfer, {} KiB after it failed",
        before / 1024,
        disk.used() / 1024
    );
    assert!(disk.used() < before + (4 << 20), "the space is taken");

    // Chats go on, both ways, and are stored.
    alice.one(&["send", "bob", "did it arrive?", "--wait"]);
    bob.one(&["send", "alice", "no, my disk is full", "--wait"]);
    let history = support::texts(&bob.json(&["history", "alice"]));
    assert!(
        history.ends_with(&[
            "did it arrive?".to_owned(),
            "no, my disk is full".to_owned()
        ]),
        "{history:?}"
    );

    // With room made, `fetch` downloads it again, whole.
    disk.resize(160);
    let fetched = bob.one(&["fetch", &id, "--timeout", "120"]);
    assert_eq!(fetched["state"], "complete");
    assert!(std::fs::read(fetched["path"].as_str().unwrap()).unwrap() == bytes);
}
