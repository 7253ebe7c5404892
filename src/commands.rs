//! One function per command: resolve the data directory and passphrases, call the node, print.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use encrypto_crypto::RsaBits;
use encrypto_crypto::keystore::{KdfParams, KeystoreContents};
use encrypto_node::DataDir;
use encrypto_node::rpc::Call;
use encrypto_node::rpc::replies::Whoami;
use serde::Serialize;

use crate::{client, output, passphrase};

/// Options shared by every command.
#[derive(Debug)]
pub(crate) struct Global {
    /// `--data-dir` / `ENCRYPTO_DATA_DIR`, if given.
    pub(crate) data_dir: Option<PathBuf>,
    /// `--json`.
    pub(crate) json: bool,
    /// `--passphrase-file`.
    pub(crate) passphrase_file: Option<PathBuf>,
}

impl Global {
    /// `--data-dir`, else a non-empty `ENCRYPTO_DATA_DIR`, else the platform default.
    pub(crate) fn data_dir_path(&self) -> Result<PathBuf> {
        let from_env = || {
            std::env::var_os("ENCRYPTO_DATA_DIR")
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
        };
        self.data_dir
            .clone()
            .or_else(from_env)
            .or_else(DataDir::default_path)
            .context("no data directory: this system has no home directory; pass --data-dir DIR or set ENCRYPTO_DATA_DIR")
    }
}

/// `encrypto init`: create and seal a new identity.
pub(crate) fn init(global: &Global, name: &str, bits: RsaBits) -> Result<()> {
    // Everything that can be refused is checked before the passphrase is asked for.
    let name = encrypto_crypto::identity::validate_name(name)?;
    let dir = DataDir::open(global.data_dir_path()?)?;
    dir.require_no_identity()?;
    let passphrase = passphrase::current(global.passphrase_file.as_deref()).choose()?;
    if !global.json && std::io::stderr().is_terminal() {
        output::note(&format!(
            "Generating a {}-bit RSA key and sealing the keystore; this can take a few seconds...",
            bits.bits()
        ));
    }
    let contents = dir.create_identity(
        &name,
        passphrase.as_bytes(),
        bits,
        KdfParams::RECOMMENDED,
        now_ms()?,
        &mut rand::rng(),
    )?;
    let (peer_id, fingerprint) = public_strings(&contents);
    let text = if global.json {
        output::json(&Created {
            name: &contents.name,
            peer_id: &peer_id,
            fingerprint: &fingerprint,
            data_dir: dir.path(),
        })
    } else {
        format!(
            "Created a new identity in {}\n{}Keep the passphrase safe: nothing can unlock this identity without it.\n",
            dir.path().display(),
            output::fields(&[
                ("name", contents.name.clone()),
                ("peer id", peer_id),
                ("fingerprint", fingerprint),
            ]),
        )
    };
    output::print(&text)
}

/// `encrypto whoami`: ask the daemon if one runs (no passphrase needed, and it knows its
/// addresses); else unlock the identity and show who it is.
pub(crate) fn whoami(global: &Global) -> Result<()> {
    match client::Connection::open(global) {
        Ok(mut connection) => {
            let r: Whoami = connection.call(&Call::Whoami)?;
            return client::print_result(global.json, &r, |r| {
                output::fields(&[
                    ("name", r.name.clone()),
                    ("peer id", r.peer_id.clone()),
                    ("fingerprint", r.fingerprint.clone()),
                    ("listening", r.listen_addrs.join("\n             ")),
                ])
            });
        }
        Err(e) if e.downcast_ref::<client::NotRunning>().is_some() => {}
        Err(e) => return Err(e),
    }
    let dir = DataDir::open_existing(global.data_dir_path()?)?;
    dir.require_identity()?;
    let passphrase = passphrase::current(global.passphrase_file.as_deref()).get()?;
    let contents = dir.unlock(passphrase.as_bytes())?;
    let (peer_id, fingerprint) = public_strings(&contents);
    let text = if global.json {
        output::json(&Whoami {
            name: contents.name.clone(),
            peer_id,
            fingerprint,
            // No daemon runs, so nothing listens.
            listen_addrs: Vec::new(),
        })
    } else {
        output::fields(&[
            ("name", contents.name.clone()),
            ("peer id", peer_id),
            ("fingerprint", fingerprint),
            ("data dir", dir.path().display().to_string()),
            ("listening", "nowhere (offline)".to_owned()),
        ])
    };
    output::print(&text)
}

/// `encrypto passwd`: re-seal the keystore under a new passphrase.
pub(crate) fn passwd(global: &Global, new_passphrase_file: Option<&Path>) -> Result<()> {
    let dir = DataDir::open_existing(global.data_dir_path()?)?;
    dir.require_identity()?;
    let old = passphrase::old(global.passphrase_file.as_deref()).get()?;
    let source = passphrase::new(new_passphrase_file);
    let new = match source.non_interactive()? {
        Some(new) => new,
        None if source.can_prompt() => {
            // Check the old passphrase before making the user type a new one twice.
            drop(dir.unlock(old.as_bytes())?);
            source.prompt_twice()?
        }
        None => return Err(source.missing()),
    };
    dir.change_passphrase(
        old.as_bytes(),
        new.as_bytes(),
        KdfParams::RECOMMENDED,
        &mut rand::rng(),
    )?;
    let text = if global.json {
        output::json(&PassphraseChanged {
            ok: true,
            passphrase_changed: true,
            keystore: &dir.keystore_path(),
        })
    } else {
        format!("Passphrase changed for {}\n", dir.keystore_path().display())
    };
    output::print(&text)
}

/// What `init --json` prints.
#[derive(Serialize)]
struct Created<'a> {
    name: &'a str,
    peer_id: &'a str,
    fingerprint: &'a str,
    data_dir: &'a Path,
}

/// What `passwd --json` prints.
#[derive(Serialize)]
struct PassphraseChanged<'a> {
    ok: bool,
    passphrase_changed: bool,
    keystore: &'a Path,
}

fn public_strings(contents: &KeystoreContents) -> (String, String) {
    (
        contents.identity.peer_id().to_string(),
        contents.identity.public().fingerprint().to_string(),
    )
}

fn now_ms() -> Result<u64> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is set before 1970")?;
    Ok(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}
