//! The store's error type.

use std::io;
use std::path::PathBuf;

use encrypto_crypto::storage::RecordError;

/// Errors from the message store. Each one reads as a single line that names the store's
/// directory and, where there is one, what the user can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (or another `Store` in this one) has the store open.
    #[error(
        "the message store {} is in use by another process; stop the other Encrypto node using this data directory and try again",
        path.display()
    )]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// The storage engine cannot read the store's files.
    #[error(
        "the message store {} is damaged ({reason}); restore it from a backup, or move it away to start again with an empty history",
        path.display()
    )]
    Damaged {
        /// The store's directory.
        path: PathBuf,
        /// What the storage engine reported.
        reason: String,
    },
    /// sled read its log only up to damage in the middle of it: records the store held when
    /// it was last opened or closed are missing. (sled discards the unreadable rest of the log
    /// as it opens; the store refuses to go on as if the shorter history were all there was.)
    #[error(
        "the message store {} is damaged: records it held when it was last closed are missing (its log is damaged and was read only up to the damage); restore it from a backup, or, to go on with what is still readable, delete {}",
        path.display(),
        marker.display()
    )]
    LogDamaged {
        /// The store's directory.
        path: PathBuf,
        /// The marker file that holds the generation the store should have reached.
        marker: PathBuf,
    },
    /// The store was sealed with another storage key: it belongs to another identity (or its
    /// check record is damaged). Nothing in it was read or changed.
    #[error(
        "the message store {} does not open with this identity's storage key (it belongs to another identity, or is damaged); use the keystore it was created with, or move it away to start again with an empty history",
        path.display()
    )]
    WrongKey {
        /// The store's directory.
        path: PathBuf,
    },
    /// The store was written by a newer (or unknown) version of Encrypto.
    #[error(
        "the message store {} has format version {version}, which this version of Encrypto cannot read; upgrade Encrypto",
        path.display()
    )]
    UnsupportedVersion {
        /// The store's directory.
        path: PathBuf,
        /// The version found in the store.
        version: u32,
    },
    /// One stored record does not open under the storage key and its slot: sealed under
    /// another key, moved from another slot, or damaged. The record is left on disk.
    #[error(
        "a stored {what} in the message store {} does not open; it was left on disk untouched",
        path.display()
    )]
    Record {
        /// The store's directory.
        path: PathBuf,
        /// What kind of record it is (`message`, `contact`, ...).
        what: &'static str,
        /// Why it did not open.
        #[source]
        source: RecordError,
    },
    /// A record opened but its contents are not what this version of Encrypto writes.
    #[error(
        "a stored {what} in the message store {} is malformed ({reason}); it was left on disk untouched",
        path.display()
    )]
    BadRecord {
        /// The store's directory.
        path: PathBuf,
        /// What kind of record it is.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A value is larger than the store keeps in one record.
    #[error("the {what} is {size} bytes, over the store's limit of {limit} bytes per record")]
    TooLarge {
        /// What kind of record it is.
        what: &'static str,
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The caller passed values that contradict each other (a bug in the caller).
    #[error("cannot store the {what}: {reason}")]
    Invalid {
        /// What kind of record it is.
        what: &'static str,
        /// What is inconsistent.
        reason: &'static str,
    },
    /// A file-system operation failed.
    #[error("cannot {op} the message store {}", path.display())]
    Io {
        /// What was being done, as a verb phrase (`open`, `write to`).
        op: &'static str,
        /// The store's directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Any other storage engine failure.
    #[error("cannot {op} the message store {}", path.display())]
    Engine {
        /// What was being done, as a verb phrase.
        op: &'static str,
        /// The store's directory.
        path: PathBuf,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
}
