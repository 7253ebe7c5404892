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
