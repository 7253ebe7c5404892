//! The data directory and the sealed keystore file in it.
//!
//! A data directory holds one identity. It is created with mode 0700 (and an existing one that
//! other users can enter is tightened to 0700); the keystore file in it is written with mode
//! 0600, atomically: a temporary file in the same directory is written, synced and then moved
//! into place, and the directory is synced, so a crash leaves either the old keystore or the
//! new one, never half of one.
//!
//! The keystore bytes are sealed by [`encrypto_crypto::keystore`]; this module only moves them
//! between the disk and that pure code, and turns its errors into ones a user can act on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use encrypto_crypto::identity::{IdentityError, validate_name};
use encrypto_crypto::keystore::{self, KdfParams, KeystoreContents, KeystoreError};
use encrypto_crypto::{CryptoRng, Identity, RsaBits, StorageKey};

/// Name of the keystore file inside the data directory.
pub const KEYSTORE_FILE: &str = "keystore";

/// Name of the message store's directory inside the data directory (the node's sled store).
pub const STORE_DIR: &str = "store";

/// Prefix of the temporary files written next to the keystore before they are moved into place.
const TEMP_PREFIX: &str = ".keystore.tmp-";

/// Errors from the data directory and its keystore. Each one reads as a single line that names
/// the file involved and, where there is one, what the user can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// There is no keystore in the data directory (or no data directory at all).
    #[error("no identity in {}: run `encrypto init --name NAME` first", path.display())]
    NoIdentity {
        /// The data directory.
        path: PathBuf,
    },
    /// The keystore is gone but the message store sealed with its storage key is still there:
    /// only that keystore opens the history, so a new identity is not the answer.
    #[error(
        "the keystore {} is missing, but the message store {} made with it is still there; restore the keystore from a backup (a new identity could not read that history), or move the store away to start afresh",
        path.display(),
        store.display()
    )]
    KeystoreMissing {
        /// Where the keystore should be.
        path: PathBuf,
        /// The message store's directory.
        store: PathBuf,
    },
    /// `create_identity` found a keystore already there; nothing was changed.
    #[error(
        "an identity already exists (keystore {}); nothing was changed; to create a new one, move that file away first",
        path.display()
    )]
    IdentityExists {
        /// The existing keystore file.
        path: PathBuf,
    },
    /// The passphrase does not open the keystore.
    #[error("wrong passphrase for the keystore {}", path.display())]
    WrongPassphrase {
        /// The keystore file.
        path: PathBuf,
    },
    /// An empty passphrase was given where a new one is chosen.
    #[error("the passphrase is empty: choose a non-empty passphrase")]
    EmptyPassphrase,
    /// The keystore file is not a keystore: truncated, overwritten, or too large.
    #[error(
        "the keystore {} is damaged ({reason}); restore it from a backup, or move it away and run `encrypto init` to create a new identity",
        path.display()
    )]
    Corrupted {
        /// The keystore file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The keystore was written by a newer (or unknown) version of Encrypto.
    #[error(
        "the keystore {} has format version {version}, which this version of Encrypto cannot read; upgrade Encrypto",
        path.display()
    )]
    UnsupportedVersion {
        /// The keystore file.
        path: PathBuf,
        /// The version found in the file.
        version: u16,
    },
    /// The data directory is a shared, sticky directory such as `/tmp`, which must not be
    /// made private and must not hold a keystore.
    #[error(
        "the data directory {} is shared with other users (a sticky directory like /tmp); choose a directory of your own",
        path.display()
    )]
    SharedDirectory {
        /// The data directory.
        path: PathBuf,
    },
    /// The name is invalid, or key generation failed.
    #[error(transparent)]
    Identity(IdentityError),
    /// Any other keystore failure (for example invalid key-derivation parameters).
    #[error("cannot use the keystore {}", path.display())]
    Keystore {
        /// The keystore file.
        path: PathBuf,
        /// What the keystore reported.
        #[source]
        source: KeystoreError,
    },
    /// A file-system operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done, as a verb phrase (`read the keystore`).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// A data directory: where one user's keystore (and later the store and the control socket)
/// live.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// The platform's data directory for Encrypto (for example `~/.local/share/encrypto` on
    /// Linux), or `None` if the platform does not have one (no home directory).
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "encrypto").map(|dirs| dirs.data_dir().to_owned())
    }

    /// Opens the data directory at `path`, creating it and its parents if needed. The directory
    /// is left with mode 0700: created so, or tightened if other users could enter it.
    ///
    /// # Errors
    /// [`DataDirError::Io`] if the directory cannot be created or restricted;
    /// [`DataDirError::SharedDirectory`] for a sticky, shared directory such as `/tmp`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataDirError> {
        let path = absolute(path.as_ref())?;
        create_private_dir(&path).map_err(|source| DataDirError::Io {
            op: "create the data directory",
            path: path.clone(),
            source,
        })?;
        restrict_dir(&path)?;
        Ok(DataDir { path })
    }

    /// Opens an existing data directory without creating anything: for commands that need an
    /// identity already there, so that a mistyped path does not leave an empty directory.
    ///
    /// # Errors
    /// [`DataDirError::NoIdentity`] if the directory does not exist; otherwise as
    /// [`DataDir::open`].
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self, DataDirError> {
        let path = absolute(path.as_ref())?;
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(DataDirError::Io {
                    op: "open the data directory",
                    path,
                    source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DataDirError::NoIdentity { path });
            }
            Err(source) => {
                return Err(DataDirError::Io {
                    op: "open the data directory",
                    path,
                    source,
                });
            }
        }
        restrict_dir(&path)?;
        Ok(DataDir { path })
    }

    /// The directory itself (absolute).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keystore file, `DIR/keystore`.
    pub fn keystore_path(&self) -> PathBuf {
        self.path.join(KEYSTORE_FILE)
    }

    /// The message store's directory, `DIR/store`.
    pub fn store_path(&self) -> PathBuf {
        self.path.join(STORE_DIR)
    }

    /// The error for "no keystore here": [`DataDirError::KeystoreMissing`] when a message
    /// store made with one is there, else [`DataDirError::NoIdentity`].
    fn no_keystore(&self) -> DataDirError {
        let store = self.store_path();
        if fs::symlink_metadata(&store).is_ok() {
            DataDirError::KeystoreMissing {
                path: self.keystore_path(),
                store,
            }
        } else {
            DataDirError::NoIdentity {
                path: self.path.clone(),
            }
        }
    }

    /// Whether anything is at the keystore path. Anything at all counts, so that nothing there
    /// is ever overwritten by a new identity.
    pub fn has_identity(&self) -> bool {
        fs::symlink_metadata(self.keystore_path()).is_ok()
    }

    /// Creates a new identity named `name` with a fresh storage key, seals it under
    /// `passphrase` and writes the keystore. Refuses to replace an existing keystore.
    ///
    /// RSA key generation and Argon2 make this take from a fraction of a second to several
    /// seconds, depending on `bits` and `params`.
    ///
    /// # Errors
    /// [`DataDirError::IdentityExists`] if a keystore is already there;
    /// [`DataDirError::KeystoreMissing`] if a message store of an earlier identity is there;
    /// [`DataDirError::Identity`] for an invalid name; [`DataDirError::EmptyPassphrase`];
    /// [`DataDirError::Io`] if the keystore cannot be written.
    pub fn create_identity<R: CryptoRng + ?Sized>(
        &self,
        name: &str,
        passphrase: &[u8],
        bits: RsaBits,
        params: KdfParams,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<KeystoreContents, DataDirError> {
        let name = validate_name(name).map_err(DataDirError::Identity)?;
        // Checked up front too, so the user is not made to wait for key generation first.
        if passphrase.is_empty() {
            return Err(DataDirError::EmptyPassphrase);
        }
        self.require_no_identity()?;
        // A store without its keystore cannot be opened by a new identity: refuse now rather
        // than after key generation, or at the daemon's first start.
        if fs::symlink_metadata(self.store_path()).is_ok() {
            return Err(self.no_keystore());
        }
        let identity = Identity::generate(rng, bits).map_err(DataDirError::Identity)?;
        let storage_key = StorageKey::generate(rng);
        let contents = KeystoreContents {
            identity,
            name,
            created_ms: now_ms,
            storage_key,
        };
        let sealed = keystore::seal(&contents, passphrase, params, rng)
            .map_err(|e| self.keystore_error(e, false))?;
        self.write_keystore(&sealed, Replace::No)?;
        Ok(contents)
    }

    /// Unlocks the keystore with `passphrase`.
    ///
    /// # Errors
    /// [`DataDirError::NoIdentity`] if there is no keystore ([`DataDirError::KeystoreMissing`]
    /// if a message store is there without it); [`DataDirError::WrongPassphrase`];
    /// [`DataDirError::Corrupted`] or [`DataDirError::UnsupportedVersion`] for a file that
    /// cannot be read as a keystore; [`DataDirError::Io`].
    pub fn unlock(&self, passphrase: &[u8]) -> Result<KeystoreContents, DataDirError> {
        let bytes = self.read_keystore()?;
        keystore::open(&bytes, passphrase).map_err(|e| self.keystore_error(e, true))
    }

    /// Re-seals the keystore under `new`, after checking `old`. The identity and the storage
    /// key are unchanged; the file is replaced atomically.
    ///
    /// # Errors
    /// As [`DataDir::unlock`] for `old`; [`DataDirError::EmptyPassphrase`] if `new` is empty;
    /// [`DataDirError::Io`] if the new keystore cannot be written (the old one then stays).
    pub fn change_passphrase<R: CryptoRng + ?Sized>(
        &self,
        old: &[u8],
        new: &[u8],
        params: KdfParams,
        rng: &mut R,
    ) -> Result<(), DataDirError> {
        if new.is_empty() {
            return Err(DataDirError::EmptyPassphrase);
        }
        let bytes = self.read_keystore()?;
        let sealed = keystore::change_passphrase(&bytes, old, new, params, rng)
            .map_err(|e| self.keystore_error(e, false))?;
        self.write_keystore(&sealed, Replace::Yes)
    }

    /// Fails unless a keystore is there: lets a caller check before asking for a passphrase.
    ///
    /// # Errors
    /// [`DataDirError::NoIdentity`], or [`DataDirError::KeystoreMissing`] if a message store is
    /// there without its keystore.
    pub fn require_identity(&self) -> Result<(), DataDirError> {
        if !self.has_identity() {
            return Err(self.no_keystore());
        }
        Ok(())
    }

    /// Fails if a keystore is there: lets a caller check before asking for a passphrase.
    ///
    /// # Errors
    /// [`DataDirError::IdentityExists`].
    pub fn require_no_identity(&self) -> Result<(), DataDirError> {
        if self.has_identity() {
            return Err(DataDirError::IdentityExists {
                path: self.keystore_path(),
            });
        }
        Ok(())
    }

    /// Maps a keystore error. `opening` says the error came from reading an existing file,
    /// where invalid parameters can only mean a damaged file.
    fn keystore_error(&self, error: KeystoreError, opening: bool) -> DataDirError {
        let path = self.keystore_path();
        match error {
            KeystoreError::WrongPassphrase => DataDirError::WrongPassphrase { path },
            KeystoreError::Corrupted(reason) => DataDirError::Corrupted { path, reason },
            KeystoreError::InvalidParams(reason) if opening => {
                DataDirError::Corrupted { path, reason }
            }
            KeystoreError::UnsupportedVersion(version) => {
                DataDirError::UnsupportedVersion { path, version }
            }
            KeystoreError::EmptyPassphrase => DataDirError::EmptyPassphrase,
            source => DataDirError::Keystore { path, source },
        }
    }

    /// Reads the keystore, refusing (before reading it all) a file larger than any keystore.
    fn read_keystore(&self) -> Result<Vec<u8>, DataDirError> {
        let path = self.keystore_path();
        let io_error = |source| DataDirError::Io {
            op: "read the keystore",
            path: path.clone(),
            source,
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(self.no_keystore()),
            Err(e) => return Err(io_error(e)),
        };
        let max = keystore::MAX_KEYSTORE_LEN;
        let too_large = |len: u64| DataDirError::Corrupted {
            path: path.clone(),
            reason: format!("{len} bytes, more than the {max}-byte limit for a keystore"),
        };
        let len = file.metadata().map_err(io_error)?.len();
        if len > max as u64 {
            return Err(too_large(len));
        }
        // The file may grow between the check and the read: never read more than the limit.
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(max as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error)?;
        if bytes.len() > max {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// Writes `bytes` as the keystore: temporary file (0600, created new), sync, move into
    /// place, sync the directory.
    fn write_keystore(&self, bytes: &[u8], replace: Replace) -> Result<(), DataDirError> {
        let target = self.keystore_path();
        let temp = TempFile::create(&self.path)?;
        let write_error = |source| DataDirError::Io {
            op: "write the keystore",
            path: target.clone(),
            source,
        };
        {
            let mut file = &temp.file;
            file.write_all(bytes).map_err(write_error)?;
            file.sync_all().map_err(write_error)?;
        }
        match replace {
            Replace::Yes => fs::rename(&temp.path, &target).map_err(write_error)?,
            // A hard link never replaces an existing file, so two `init`s racing cannot
            // overwrite each other. Where hard links are not supported, fall back to a
            // checked rename.
            Replace::No => match fs::hard_link(&temp.path, &target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(DataDirError::IdentityExists { path: target });
                }
                Err(_) => {
                    self.require_no_identity()?;
                    fs::rename(&temp.path, &target).map_err(write_error)?;
                }
            },
        }
        drop(temp);
        sync_dir(&self.path).map_err(|source| DataDirError::Io {
            op: "sync the data directory",
            path: self.path.clone(),
            source,
        })
    }
}

/// Whether a keystore write may replace an existing keystore.
#[derive(Clone, Copy)]
enum Replace {
    Yes,
    No,
}

/// A temporary file next to the keystore, removed when dropped (a no-op once it has been
/// renamed away).
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    fn create(dir: &Path) -> Result<Self, DataDirError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut last_error = None;
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(
                "{TEMP_PREFIX}{}-{nanos:09}-{n}",
                std::process::id()
            ));
            match create_private_file(&path) {
                Ok(file) => return Ok(TempFile { path, file }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
                Err(source) => {
                    return Err(DataDirError::Io {
                        op: "create a temporary file in",
                        path: dir.to_owned(),
                        source,
                    });
                }
            }
        }
        Err(DataDirError::Io {
            op: "create a temporary file in",
            path: dir.to_owned(),
            source: last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
        })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // After a rename the file is gone already; any other failure leaves a stray
        // `.keystore.tmp-*` file, which holds only sealed bytes.
        let _ = fs::remove_file(&self.path);
    }
}

fn absolute(path: &Path) -> Result<PathBuf, DataDirError> {
    std::path::absolute(path).map_err(|source| DataDirError::Io {
        op: "resolve the data directory",
        path: path.to_owned(),
        source,
    })
}

#[cfg(unix)]
fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

#[cfg(not(unix))]
fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Leaves `path` with mode 0700: whatever the umask did when creating it, or however an
/// existing directory was set up. A sticky directory that others can use (`/tmp`) is refused
/// rather than changed.
#[cfg(unix)]
fn restrict_dir(path: &Path) -> Result<(), DataDirError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|source| DataDirError::Io {
        op: "inspect the data directory",
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode == 0o700 {
        return Ok(());
    }
    if mode & 0o1000 != 0 && mode & 0o077 != 0 {
        return Err(DataDirError::SharedDirectory {
            path: path.to_owned(),
        });
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(|source| {
        DataDirError::Io {
            op: "set mode 0700 on the data directory",
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(not(unix))]
fn restrict_dir(_path: &Path) -> Result<(), DataDirError> {
    Ok(())
}

/// Makes a rename or link inside `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests;
