//! `encrypto gui` (and `encrypto` with no command) where there is no display: one line that
//! says so and points to `encrypto daemon`, a non-zero exit, no panic.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

use tempfile::TempDir;

fn without_display(tmp: &TempDir, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_encrypto"))
        .args(args)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("ENCRYPTO_DATA_DIR")
        .env("HOME", tmp.path().join("home"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn gui_without_a_display_prints_one_line_and_fails() {
    for args in [&["gui"][..], &[][..]] {
        let tmp = TempDir::new().unwrap();
        let out = without_display(&tmp, args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: no display"), "{stderr}");
        assert!(stderr.contains("encrypto daemon"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}
