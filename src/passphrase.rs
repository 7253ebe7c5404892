//! Where passphrases come from: an environment variable, else a file, else a hidden prompt
//! when stdin is a terminal, else a clear error.

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

use crate::output;

/// A passphrase file larger than this is not a passphrase file.
const MAX_FILE_LEN: u64 = 64 * 1024;

/// Passphrases shorter than this get a hint when typed at a prompt.
const HINT_BELOW_CHARS: usize = 12;

/// The non-interactive sources for one passphrase, and what to ask at the prompt.
pub(crate) struct Source<'a> {
    /// Environment variable, checked first.
    pub(crate) env: &'static str,
    /// File from a flag, checked second.
    pub(crate) file: Option<&'a Path>,
    /// The flag's name, for the error message.
    pub(crate) file_flag: &'static str,
    /// What the passphrase is, for the error message ("passphrase", "new passphrase").
    pub(crate) what: &'static str,
}

/// The current passphrase: `ENCRYPTO_PASSPHRASE`, else `--passphrase-file`.
pub(crate) fn current(file: Option<&Path>) -> Source<'_> {
    Source {
        env: "ENCRYPTO_PASSPHRASE",
        file,
        file_flag: "--passphrase-file",
        what: "passphrase",
    }
}

/// The current passphrase when a new one follows (`passwd`): the same sources as
/// [`current`], asked for as the "current passphrase".
pub(crate) fn old(file: Option<&Path>) -> Source<'_> {
    Source {
        what: "current passphrase",
        ..current(file)
    }
}

/// The new passphrase for `passwd`: `ENCRYPTO_NEW_PASSPHRASE`, else `--new-passphrase-file`.
pub(crate) fn new(file: Option<&Path>) -> Source<'_> {
    Source {
        env: "ENCRYPTO_NEW_PASSPHRASE",
        file,
        file_flag: "--new-passphrase-file",
        what: "new passphrase",
    }
}

impl Source<'_> {
    /// The passphrase from the environment or the file, if either is given.
    ///
    /// # Errors
    /// The variable or the file is not UTF-8, or the file cannot be read.
    pub(crate) fn non_interactive(&self) -> Result<Option<Zeroizing<String>>> {
        // An empty variable counts as unset (as ENCRYPTO_DATA_DIR): `ENCRYPTO_PASSPHRASE=` in a
        // script means "not from here", and an empty passphrase is never valid anyway.
        if let Some(value) = std::env::var_os(self.env).filter(|v| !v.is_empty()) {
            // The environment keeps its own copy; at least ours is wiped after use.
            return match value.into_string() {
                Ok(text) => Ok(Some(Zeroizing::new(text))),
                Err(_) => bail!("{} is not valid UTF-8", self.env),
            };
        }
        match self.file {
            Some(path) => read_first_line(path).map(Some),
            None => Ok(None),
        }
    }

    /// Whether a prompt is possible (stdin is a terminal).
    pub(crate) fn can_prompt(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    /// The error when there is no source at all.
    pub(crate) fn missing(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "no {}: set {}, pass {} FILE, or run in a terminal",
            self.what,
            self.env,
            self.file_flag
        )
    }

    /// A passphrase to unlock with: asked once at the prompt.
    ///
    /// # Errors
    /// No source, or one that cannot be read.
    pub(crate) fn get(&self) -> Result<Zeroizing<String>> {
        if let Some(passphrase) = self.non_interactive()? {
            return Ok(passphrase);
        }
        if !self.can_prompt() {
            return Err(self.missing());
        }
        prompt(&format!("{}: ", capitalised(self.what)))
    }

    /// A passphrase being chosen: asked twice at the prompt (they must match), with a hint if
    /// it is short.
    ///
    /// # Errors
    /// No source, one that cannot be read, or two entries that differ.
    pub(crate) fn choose(&self) -> Result<Zeroizing<String>> {
        if let Some(passphrase) = self.non_interactive()? {
            return Ok(passphrase);
        }
        if !self.can_prompt() {
            return Err(self.missing());
        }
        self.prompt_twice()
    }

    /// Asks twice at the terminal; callers check [`Source::can_prompt`] first.
    pub(crate) fn prompt_twice(&self) -> Result<Zeroizing<String>> {
        let first = prompt(&format!("{}: ", capitalised(self.what)))?;
        let second = prompt(&format!("Repeat the {}: ", self.what))?;
        if *first != *second {
            bail!(
                "the two {}s typed do not match; nothing was changed",
                self.what
            );
        }
        if first.chars().count() < HINT_BELOW_CHARS {
            output::note(
                "hint: passphrases shorter than 12 characters are easy to guess; several random words make a strong one",
            );
        }
        Ok(first)
    }
}

fn prompt(text: &str) -> Result<Zeroizing<String>> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .context("cannot read the passphrase from the terminal")
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The first line of `path`, without its line ending.
fn read_first_line(path: &Path) -> Result<Zeroizing<String>> {
    let context = || format!("cannot read the passphrase file {}", path.display());
    let file = File::open(path).with_context(context)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .with_context(context)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        bail!(
            "the passphrase file {} is larger than 64 KiB; it should hold just the passphrase on its first line",
            path.display()
        );
    }
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line)
        .ok()
        .with_context(|| format!("the passphrase file {} is not valid UTF-8", path.display()))?;
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_line_of(content: &[u8]) -> String {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("pass");
        std::fs::write(&path, content).unwrap();
        read_first_line(&path).unwrap().to_string()
    }

    #[test]
    fn file_gives_its_first_line_without_the_ending() {
        assert_eq!(first_line_of(b"secret\n"), "secret");
        assert_eq!(first_line_of(b"secret"), "secret");
        assert_eq!(first_line_of(b"secret\r\n"), "secret");
        assert_eq!(first_line_of(b"two words \nsecond line\n"), "two words ");
        assert_eq!(first_line_of(b""), "");
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::TempDir::new().unwrap();
        let missing = dir.path().join("missing");
        let err = read_first_line(&missing).unwrap_err();
        assert!(format!("{err:#}").contains(&missing.display().to_string()));

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 64 * 1024 + 1]).unwrap();
        assert!(format!("{:#}", read_first_line(&big).unwrap_err()).contains("64 KiB"));

        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe, b'\n']).unwrap();
        assert!(format!("{:#}", read_first_line(&binary).unwrap_err()).contains("UTF-8"));
    }

    #[test]
    fn missing_source_message_lists_every_option() {
        assert_eq!(
            current(None).missing().to_string(),
            "no passphrase: set ENCRYPTO_PASSPHRASE, pass --passphrase-file FILE, or run in a terminal"
        );
        assert_eq!(
            new(None).missing().to_string(),
            "no new passphrase: set ENCRYPTO_NEW_PASSPHRASE, pass --new-passphrase-file FILE, or run in a terminal"
        );
    }

    #[test]
    fn prompts_are_capitalised() {
        assert_eq!(capitalised("new passphrase"), "New passphrase");
        assert_eq!(capitalised(""), "");
    }
}
