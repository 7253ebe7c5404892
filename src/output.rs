//! Printing results: aligned text lines for people, one JSON object for scripts.

use std::io::{self, Write};

use anyhow::{Context, Result};

/// Width of the labels in text output, so values line up (`fingerprint:` is the longest).
const LABEL_WIDTH: usize = 13;

/// Writes `text` to stdout. A closed stdout is an error to report, not a panic.
pub(crate) fn print(text: &str) -> Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")
}

/// `label: value` lines with the values aligned.
pub(crate) fn fields(rows: &[(&str, String)]) -> String {
    let mut text = String::new();
    for (label, value) in rows {
        let label = format!("{label}:");
        text.push_str(&format!("{label:<LABEL_WIDTH$}{value}\n"));
    }
    text
}

/// One JSON object on one line.
pub(crate) fn json(value: &impl serde::Serialize) -> String {
    let line = serde_json::to_string(value)
        .expect("output types are plain structs with string keys, which always serialize");
    format!("{line}\n")
}

/// A line on stderr for the person at the terminal (hints, progress). Never fails the command.
pub(crate) fn note(line: &str) {
    let _ = writeln!(io::stderr(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_align_values() {
        let text = fields(&[("name", "Alice".into()), ("fingerprint", "12345".into())]);
        assert_eq!(text, "name:        Alice\nfingerprint: 12345\n");
    }
}
