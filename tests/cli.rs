//! End-to-end tests of the `encrypto` binary: the real executable, run in a temporary
//! directory, with passphrases passed explicitly and stdin never a terminal.

// `allow-unwrap-in-tests` covers `#[test]` functions only, not the helpers they share.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

const PASS: &str = "correct horse battery staple";

/// A scratch home with a data directory path inside it (not created yet).
struct Scratch {
    tmp: TempDir,
    data: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let tmp = TempDir::new().unwrap();
        let data = tmp.path().join("data");
        Scratch { tmp, data }
    }

    fn keystore(&self) -> PathBuf {
        self.data.join("keystore")
    }

    /// `encrypto` with a clean environment: no Encrypto variables, HOME inside the scratch
    /// directory (so the platform default can never be the real one), stdin not a terminal.
    fn bare(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_encrypto"));
        cmd.env_remove("ENCRYPTO_DATA_DIR")
            .env_remove("ENCRYPTO_PASSPHRASE")
            .env_remove("ENCRYPTO_NEW_PASSPHRASE")
            .env("HOME", self.tmp.path().join("home"))
            .env("XDG_DATA_HOME", self.tmp.path().join("home/.local/share"))
            .current_dir(self.tmp.path())
            .stdin(Stdio::null());
        cmd
    }

    /// `encrypto --data-dir DATA` with `passphrase` in ENCRYPTO_PASSPHRASE.
    fn with(&self, passphrase: &str) -> Command {
        let mut cmd = self.bare();
        cmd.arg("--data-dir")
            .arg(&self.data)
            .env("ENCRYPTO_PASSPHRASE", passphrase);
        cmd
    }

    fn init_json(&self, name: &str) -> Value {
        let out =
            run(self
                .with(PASS)
                .args(["--json", "init", "--rsa-bits", "2048", "--name", name]));
        json(&out)
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Checks success and returns stdout as JSON.
fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "status {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(out);
    assert_eq!(text.lines().count(), 1, "one JSON line: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Checks that the command failed with exit code 1 and exactly one line `error: ...` on
/// stderr, and returns that line.
fn one_line_error(out: &Output) -> String {
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.ends_with('\n'), "{stderr:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    stderr.trim_end().to_owned()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[test]
fn init_then_whoami_json_show_the_same_identity() {
    let s = Scratch::new();
    let init = s.init_json("Alice");
    assert_eq!(keys(&init), ["data_dir", "fingerprint", "name", "peer_id"]);
    assert_eq!(init["name"], "Alice");
    assert_eq!(init["data_dir"], s.data.to_str().unwrap());
    let peer_id = init["peer_id"].as_str().unwrap();
    assert!(peer_id.starts_with("12D3KooW"), "{peer_id}");
    let fingerprint = init["fingerprint"].as_str().unwrap();
    let groups: Vec<&str> = fingerprint.split(' ').collect();
    assert_eq!(groups.len(), 6, "{fingerprint}");
    assert!(
        groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit())),
        "{fingerprint}"
    );

    let whoami = json(&run(s.with(PASS).args(["whoami", "--json"])));
    assert_eq!(
        keys(&whoami),
        ["fingerprint", "listen_addrs", "name", "peer_id"]
    );
    assert_eq!(whoami["name"], "Alice");
    assert_eq!(whoami["peer_id"], init["peer_id"]);
    assert_eq!(whoami["fingerprint"], init["fingerprint"]);
    assert_eq!(whoami["listen_addrs"], Value::Array(Vec::new()));
}

#[test]
fn text_output_is_aligned_lines() {
    let s = Scratch::new();
    let out = run(s
        .with(PASS)
        .args(["init", "--rsa-bits", "2048", "--name", "  Bob  "]));
    assert!(out.status.success());
    let init = stdout(&out);
    assert!(init.contains("\nname:        Bob\n"), "{init}");
    assert!(init.contains("\npeer id:     12D3KooW"), "{init}");

    let whoami = stdout(&run(s.with(PASS).arg("whoami")));
    let lines: Vec<&str> = whoami.lines().collect();
    assert_eq!(lines[0], "name:        Bob");
    assert!(lines[1].starts_with("peer id:     12D3KooW"), "{whoami}");
    assert!(lines[2].starts_with("fingerprint: "), "{whoami}");
    assert_eq!(
        lines[3],
        format!("data dir:    {}", s.data.display()),
        "{whoami}"
    );
}

#[test]
fn init_twice_refuses_and_leaves_the_keystore_unchanged() {
    let s = Scratch::new();
    let first = s.init_json("Alice");
    let before = fs::read(s.keystore()).unwrap();

    let out =
        run(s
            .with("another passphrase")
            .args(["init", "--rsa-bits", "2048", "--name", "Mallory"]));
    let line = one_line_error(&out);
    assert!(line.contains("already exists"), "{line}");
    assert!(line.contains(s.keystore().to_str().unwrap()), "{line}");
    assert_eq!(fs::read(s.keystore()).unwrap(), before, "byte for byte");

    let whoami = json(&run(s.with(PASS).args(["--json", "whoami"])));
    assert_eq!(whoami["peer_id"], first["peer_id"]);
}

#[test]
fn wrong_passphrase_is_one_line_and_no_panic() {
    let s = Scratch::new();
    s.init_json("Alice");
    let line = one_line_error(&run(s.with("not the passphrase").arg("whoami")));
    assert!(line.contains("wrong passphrase"), "{line}");
    assert!(line.contains(s.keystore().to_str().unwrap()), "{line}");
}

#[test]
fn no_passphrase_source_and_no_terminal_is_a_clear_error() {
    let s = Scratch::new();
    let expected = "error: no passphrase: set ENCRYPTO_PASSPHRASE, pass --passphrase-file FILE, or run in a terminal";

    let mut init = s.bare();
    init.arg("--data-dir")
        .arg(&s.data)
        .args(["init", "--rsa-bits", "2048", "--name", "Alice"]);
    assert_eq!(one_line_error(&run(&mut init)), expected);
    assert!(
        !s.keystore().exists(),
        "nothing created without a passphrase"
    );

    s.init_json("Alice");
    let mut whoami = s.bare();
    whoami.arg("--data-dir").arg(&s.data).arg("whoami");
    assert_eq!(one_line_error(&run(&mut whoami)), expected);
}

#[test]
fn passphrase_file_gives_the_first_line() {
    let s = Scratch::new();
    let file = s.tmp.path().join("pass.txt");
    fs::write(&file, format!("{PASS}\nignored second line\n")).unwrap();

    let mut init = s.bare();
    init.arg("--data-dir")
        .arg(&s.data)
        .arg("--passphrase-file")
        .arg(&file)
        .args(["--json", "init", "--rsa-bits", "2048", "--name", "Alice"]);
    let created = json(&run(&mut init));

    // The file held exactly PASS: the environment variable unlocks it too.
    let whoami = json(&run(s.with(PASS).args(["--json", "whoami"])));
    assert_eq!(whoami["peer_id"], created["peer_id"]);

    // The global flag also works after the command.
    let mut whoami = s.bare();
    whoami
        .arg("--data-dir")
        .arg(&s.data)
        .args(["whoami", "--json", "--passphrase-file"])
        .arg(&file);
    assert_eq!(json(&run(&mut whoami))["peer_id"], created["peer_id"]);

    // ENCRYPTO_PASSPHRASE comes before the file.
    let wrong = s.tmp.path().join("wrong.txt");
    fs::write(&wrong, "not it\n").unwrap();
    let out = run(s
        .with(PASS)
        .arg("--passphrase-file")
        .arg(&wrong)
        .args(["--json", "whoami"]));
    assert_eq!(json(&out)["peer_id"], created["peer_id"]);

    // An empty ENCRYPTO_PASSPHRASE counts as unset: the file is used.
    let out = run(s
        .with("")
        .arg("--passphrase-file")
        .arg(&file)
        .args(["--json", "whoami"]));
    assert_eq!(json(&out)["peer_id"], created["peer_id"]);

    // A missing file is one line naming it.
    let missing = s.tmp.path().join("missing.txt");
    let mut whoami = s.bare();
    whoami
        .arg("--data-dir")
        .arg(&s.data)
        .arg("--passphrase-file")
        .arg(&missing)
        .arg("whoami");
    let line = one_line_error(&run(&mut whoami));
    assert!(line.contains(missing.to_str().unwrap()), "{line}");
}

#[test]
fn data_dir_from_the_environment() {
    let s = Scratch::new();
    let mut init = s.bare();
    init.env("ENCRYPTO_DATA_DIR", &s.data)
        .env("ENCRYPTO_PASSPHRASE", PASS)
        .args(["--json", "init", "--rsa-bits", "2048", "--name", "Alice"]);
    let created = json(&run(&mut init));
    assert_eq!(created["data_dir"], s.data.to_str().unwrap());
    assert!(s.keystore().is_file());

    let mut whoami = s.bare();
    whoami
        .env("ENCRYPTO_DATA_DIR", &s.data)
        .env("ENCRYPTO_PASSPHRASE", PASS)
        .args(["--json", "whoami"]);
    assert_eq!(json(&run(&mut whoami))["peer_id"], created["peer_id"]);

    // --data-dir wins over the environment.
    let elsewhere = s.tmp.path().join("elsewhere");
    let mut whoami = s.bare();
    whoami
        .env("ENCRYPTO_DATA_DIR", &s.data)
        .env("ENCRYPTO_PASSPHRASE", PASS)
        .arg("--data-dir")
        .arg(&elsewhere)
        .arg("whoami");
    let line = one_line_error(&run(&mut whoami));
    assert!(line.contains(elsewhere.to_str().unwrap()), "{line}");
}

#[test]
fn data_dir_is_0700_and_keystore_0600() {
    let s = Scratch::new();
    let nested = Scratch {
        data: s.tmp.path().join("a/b/data"),
        tmp: s.tmp,
    };
    nested.init_json("Alice");
    assert_eq!(mode(&nested.data), 0o700);
    assert_eq!(mode(&nested.keystore()), 0o600);
    let names: Vec<_> = fs::read_dir(&nested.data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keystore"], "no temporary files left behind");
}

#[test]
fn whoami_without_identity_says_run_init_and_creates_nothing() {
    let s = Scratch::new();
    let line = one_line_error(&run(s.with(PASS).arg("whoami")));
    assert_eq!(
        line,
        format!(
            "error: no identity in {}: run `encrypto init --name NAME` first",
            s.data.display()
        )
    );
    assert!(!s.data.exists());
}

#[test]
fn damaged_keystore_is_one_line_naming_the_file() {
    let s = Scratch::new();
    s.init_json("Alice");
    let good = fs::read(s.keystore()).unwrap();
    for bad in [
        good[..good.len() / 2].to_vec(),
        b"this is not a keystore".to_vec(),
        Vec::new(),
    ] {
        fs::write(s.keystore(), &bad).unwrap();
        let line = one_line_error(&run(s.with(PASS).arg("whoami")));
        assert!(
            line.contains(s.keystore().to_str().unwrap()),
            "{} bytes: {line}",
            bad.len()
        );
    }
}

#[test]
fn passwd_changes_the_passphrase() {
    let s = Scratch::new();
    let created = s.init_json("Alice");

    let out = run(s
        .with(PASS)
        .env("ENCRYPTO_NEW_PASSPHRASE", "a brand new passphrase")
        .args(["passwd"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).starts_with("Passphrase changed"));
    assert_eq!(mode(&s.keystore()), 0o600);

    let line = one_line_error(&run(s.with(PASS).arg("whoami")));
    assert!(line.contains("wrong passphrase"), "{line}");
    let whoami = json(&run(s
        .with("a brand new passphrase")
        .args(["--json", "whoami"])));
    assert_eq!(whoami["peer_id"], created["peer_id"]);
    assert_eq!(whoami["fingerprint"], created["fingerprint"]);

    let changed = json(&run(s
        .with("a brand new passphrase")
        .env("ENCRYPTO_NEW_PASSPHRASE", "a brand new passphrase")
        .args(["--json", "passwd"])));
    assert_eq!(changed["ok"], true);

    // And back again, with the new passphrase from a file.
    let file = s.tmp.path().join("new.txt");
    fs::write(&file, format!("{PASS}\n")).unwrap();
    let out = run(s
        .with("a brand new passphrase")
        .args(["passwd", "--new-passphrase-file"])
        .arg(&file));
    assert!(out.status.success());
    assert_eq!(
        json(&run(s.with(PASS).args(["--json", "whoami"])))["peer_id"],
        created["peer_id"]
    );
}

#[test]
fn passwd_refusals_leave_the_keystore_alone() {
    let s = Scratch::new();
    s.init_json("Alice");
    let before = fs::read(s.keystore()).unwrap();

    let line = one_line_error(&run(s
        .with("not it")
        .env("ENCRYPTO_NEW_PASSPHRASE", "new")
        .arg("passwd")));
    assert!(line.contains("wrong passphrase"), "{line}");

    let line = one_line_error(&run(s.with(PASS).arg("passwd")));
    assert_eq!(
        line,
        "error: no new passphrase: set ENCRYPTO_NEW_PASSPHRASE, pass --new-passphrase-file FILE, or run in a terminal"
    );

    // An empty variable counts as unset...
    let line = one_line_error(&run(s
        .with(PASS)
        .env("ENCRYPTO_NEW_PASSPHRASE", "")
        .arg("passwd")));
    assert!(line.contains("no new passphrase"), "{line}");
    // ...and an empty passphrase from a file is refused.
    let empty = s.tmp.path().join("empty.txt");
    fs::write(&empty, "\n").unwrap();
    let line = one_line_error(&run(s
        .with(PASS)
        .arg("passwd")
        .arg("--new-passphrase-file")
        .arg(&empty)));
    assert!(line.contains("empty"), "{line}");

    assert_eq!(fs::read(s.keystore()).unwrap(), before);
}

#[test]
fn bad_rsa_bits_is_a_usage_error() {
    let s = Scratch::new();
    for bits in ["1024", "3000", "big"] {
        let out = run(s
            .with(PASS)
            .args(["init", "--name", "Alice", "--rsa-bits", bits]));
        assert_eq!(out.status.code(), Some(2), "{bits}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--rsa-bits"), "{stderr}");
    }
    assert!(!s.data.exists());
}

#[test]
fn invalid_name_is_refused() {
    let s = Scratch::new();
    for name in ["", "   "] {
        let line = one_line_error(&run(s.with(PASS).args([
            "init",
            "--rsa-bits",
            "2048",
            "--name",
            name,
        ])));
        assert_eq!(line, "error: invalid name: the name is empty");
    }
    let long = "x".repeat(65);
    let line = one_line_error(&run(s.with(PASS).args([
        "init",
        "--rsa-bits",
        "2048",
        "--name",
        &long,
    ])));
    assert!(line.starts_with("error: invalid name: "), "{line}");
    assert!(!s.keystore().exists());
}

#[test]
fn empty_passphrase_is_refused_at_init() {
    let s = Scratch::new();
    // An empty ENCRYPTO_PASSPHRASE counts as unset: with no other source, that is the error.
    let line = one_line_error(&run(s.with("").args([
        "init",
        "--rsa-bits",
        "2048",
        "--name",
        "Alice",
    ])));
    assert!(line.contains("no passphrase"), "{line}");
    // An empty first line in a passphrase file is an empty passphrase, refused.
    let empty = s.tmp.path().join("empty.txt");
    fs::write(&empty, "\n").unwrap();
    let line = one_line_error(&run(s
        .bare()
        .arg("--data-dir")
        .arg(&s.data)
        .arg("--passphrase-file")
        .arg(&empty)
        .args(["init", "--rsa-bits", "2048", "--name", "Alice"])));
    assert!(line.contains("empty"), "{line}");
    assert!(!s.keystore().exists());
}
