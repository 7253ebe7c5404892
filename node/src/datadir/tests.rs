use std::os::unix::fs::PermissionsExt;

use encrypto_crypto::identity::IdentityError;
use tempfile::TempDir;

use super::*;

const PASS: &[u8] = b"correct horse battery staple";
const NOW: u64 = 1_790_000_000_000;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn create(dir: &DataDir, name: &str) -> Result<KeystoreContents, DataDirError> {
    dir.create_identity(
        name,
        PASS,
        RsaBits::B2048,
        KdfParams::INSECURE_FAST,
        NOW,
        &mut rand::rng(),
    )
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn open_creates_nested_dir_with_mode_0700() {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("a/b/data");
    let dir = DataDir::open(&path).unwrap();
    assert_eq!(dir.path(), path);
    assert_eq!(mode(&path), 0o700);
    assert_eq!(dir.keystore_path(), path.join("keystore"));
    assert!(!dir.has_identity());
}

#[test]
fn open_tightens_an_existing_open_dir() {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("data");
    fs::create_dir(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    DataDir::open(&path).unwrap();
    assert_eq!(mode(&path), 0o700);
}

#[test]
fn open_refuses_a_shared_sticky_dir() {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("shared");
    fs::create_dir(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o1777)).unwrap();
    let err = DataDir::open(&path).unwrap_err();
    assert!(matches!(err, DataDirError::SharedDirectory { .. }), "{err}");
    assert_eq!(mode(&path), 0o1777, "a shared dir is left as it was");
}

#[test]
fn open_existing_does_not_create_a_missing_dir() {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("missing");
    let err = DataDir::open_existing(&path).unwrap_err();
    assert!(matches!(err, DataDirError::NoIdentity { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "no identity in {}: run `encrypto init --name NAME` first",
            path.display()
        )
    );
    assert!(!path.exists());
}

#[test]
fn create_then_unlock_round_trips() {
    let tmp = TempDir::new().unwrap();
    let dir = DataDir::open(tmp.path().join("data")).unwrap();
    let created = create(&dir, "  Alice ").unwrap();
    assert_eq!(created.name, "Alice");
    assert_eq!(created.created_ms, NOW);
    assert!(dir.has_identity());

    let unlocked = dir.unlock(PASS).unwrap();
    assert_eq!(unlocked.name, "Alice");
    assert_eq!(unlocked.created_ms, NOW);
    assert_eq!(unlocked.identity.peer_id(), created.identity.peer_id());
    assert_eq!(
        unlocked.identity.public().fingerprint(),
        created.identity.public().fingerprint()
    );
    assert_eq!(
        *unlocked.storage_key.to_bytes(),
        *created.storage_key.to_bytes()
    );
}

#[test]
fn keystore_is_0600_and_no_temp_file_is_left() {
    let tmp = TempDir::new().unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    create(&dir, "Alice").unwrap();
    assert_eq!(mode(&dir.keystore_path()), 0o600);
    assert_eq!(entries(dir.path()), vec!["keystore".to_owned()]);
}

#[test]
fn create_twice_refuses_and_keeps_the_keystore() {
    let tmp = TempDir::new().unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    let first = create(&dir, "Alice").unwrap();
    let before = fs::read(dir.keystore_path()).unwrap();
    let err = create(&dir, "Mallory").unwrap_err();
    assert!(matches!(err, DataDirError::IdentityExists { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&dir.keystore_path().display().to_string())
    );
    assert_eq!(fs::read(dir.keystore_path()).unwrap(), before);
    assert_eq!(
        dir.unlock(PASS).unwrap().identity.peer_id(),
        first.identity.peer_id()
    );
    assert_eq!(entries(dir.path()), vec!["keystore".to_owned()]);
}

#[test]
fn create_never_replaces_whatever_is_at_the_keystore_path() {
    let tmp = TempDir::new().unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    fs::write(dir.keystore_path(), b"not mine").unwrap();
    let err = create(&dir, "Alice").unwrap_err();
    assert!(matches!(err, DataDirError::IdentityExists { .. }), "{err}");
    assert_eq!(fs::read(dir.keystore_path()).unwrap(), b"not mine");
}

#[test]
fn invalid_name_writes_nothing() {
    let tmp = TempDir::new().unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    for name in ["", "   ", "a\u{7}b", &"x".repeat(65)] {
        let err = create(&dir, name).unwrap_err();
        assert!(
            matches!(err, DataDirError::Identity(IdentityError::InvalidName(_))),
            "{name:?}: {err}"
        );
        assert!(err.to_string().starts_with("invalid name: "), "{err}");
    }
    assert!(!dir.has_identity());
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn empty_passphrase_is_refused() {
    let tmp = TempDir::new().unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    let err = dir
        .create_identity(
            "Alice",
            b"",
            RsaBits::B2048,
            KdfParams::INSECURE_FAST,
            NOW,
            &mut rand::rng(),
        )
        .unwrap_err();
    assert!(matches!(err, DataDirError::EmptyPassphrase), "{err}");
    assert!(!dir.has_identity());
}

#[test]
fn unlock_without_keystore_says_run_init() {
    let tmp = TempDir::new().unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    let err = dir.unlock(PASS).unwrap_err();
    assert!(matches!(err, DataDirError::NoIdentity { .. }), "{err}");
    assert!(err.to_string().contains("encrypto init --name NAME"));
}

#[test]
fn wrong_passphrase_is_a_clear_error() {
    let tmp = TempDir::new().unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    create(&dir, "Alice").unwrap();
    let err = dir.unlock(b"not it").unwrap_err();
    assert!(matches!(err, DataDirError::WrongPassphrase { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "wrong passphrase for the keystore {}",
            dir.keystore_path().display()
        )
    );
}

#[test]
fn garbage_and_truncated_keystores_are_corrupted_naming_the_file() {
    let tmp = TempDir::new().unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    create(&dir, "Alice").unwrap();
    let good = fs::read(dir.keystore_path()).unwrap();
    for bad in [
        b"garbage".to_vec(),
        Vec::new(),
        good[..good.len() / 2].to_vec(),
    ] {
        fs::write(dir.keystore_path(), &bad).unwrap();
        let err = dir.unlock(PASS).unwrap_err();
        assert!(
            matches!(
                err,
                DataDirError::Corrupted { .. } | DataDirError::UnsupportedVersion { .. }
            ),
            "{} bytes: {err}",
            bad.len()
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&dir.keystore_path().display().to_string()),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn oversized_keystore_is_refused() {
    let tmp = TempDir::new().unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    let file = File::create(dir.keystore_path()).unwrap();
    file.set_len(keystore::MAX_KEYSTORE_LEN as u64 + 1).unwrap();
    let err = dir.unlock(PASS).unwrap_err();
    match &err {
        DataDirError::Corrupted { reason, .. } => assert!(reason.contains("limit"), "{err}"),
        other => panic!("expected Corrupted, got {other}"),
    }
    assert!(err.to_string().contains("run `encrypto init`"));
}

#[test]
fn change_passphrase_swaps_passphrases_and_keeps_the_identity() {
    let tmp = TempDir::new().unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    let created = create(&dir, "Alice").unwrap();
    dir.change_passphrase(PASS, b"new one", KdfParams::INSECURE_FAST, &mut rand::rng())
        .unwrap();
    assert!(matches!(
        dir.unlock(PASS).unwrap_err(),
        DataDirError::WrongPassphrase { .. }
    ));
    let unlocked = dir.unlock(b"new one").unwrap();
    assert_eq!(unlocked.identity.peer_id(), created.identity.peer_id());
    assert_eq!(
        *unlocked.storage_key.to_bytes(),
        *created.storage_key.to_bytes()
    );
    assert_eq!(mode(&dir.keystore_path()), 0o600);
    assert_eq!(entries(dir.path()), vec!["keystore".to_owned()]);
}

#[test]
fn change_passphrase_with_wrong_old_leaves_the_file_alone() {
    let tmp = TempDir::new().unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    create(&dir, "Alice").unwrap();
    let before = fs::read(dir.keystore_path()).unwrap();
    let err = dir
        .change_passphrase(b"nope", b"new", KdfParams::INSECURE_FAST, &mut rand::rng())
        .unwrap_err();
    assert!(matches!(err, DataDirError::WrongPassphrase { .. }), "{err}");
    let err = dir
        .change_passphrase(PASS, b"", KdfParams::INSECURE_FAST, &mut rand::rng())
        .unwrap_err();
    assert!(matches!(err, DataDirError::EmptyPassphrase), "{err}");
    assert_eq!(fs::read(dir.keystore_path()).unwrap(), before);
}

#[test]
fn errors_are_send_sync_and_one_line() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<DataDirError>();
    let err = DataDirError::Corrupted {
        path: PathBuf::from("/d/keystore"),
        reason: "truncated".into(),
    };
    assert_eq!(
        err.to_string(),
        "the keystore /d/keystore is damaged (truncated); restore it from a backup, or move it away and run `encrypto init` to create a new identity"
    );
}
