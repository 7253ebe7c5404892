//! Files sealed for one recipient, moved in chunks, storable and verifiable by blind relays.
//!
//! A file is cut into chunks of [`FileManifest::chunk_size`] bytes (the last one shorter) and
//! each chunk is sealed with AES-256-GCM under a random per-file [`FileKey`]. The nonce is the
//! chunk index (`0u32 || index as u64`, big-endian): the key is never reused across files, so
//! (key, nonce) never repeats, and sealing is deterministic, which lets the sender re-seal any
//! chunk on demand from the original file and get the very same bytes. The additional data binds
//! the file id, the chunk index and the chunk count, so chunks cannot be swapped, reordered, moved
//! between files, or dropped from the end.
//!
//! A signed [`FileManifest`] lists the BLAKE3 hash of every *sealed* chunk, the sizes, the file key
//! wrapped with the recipient's RSA key, and the file's name, media type and plaintext SHA-256
//! sealed under the file key (padded to a fixed length, so not even the name's length shows).
//! Any peer can therefore check the manifest's signature and every chunk ([`verify_chunk`])
//! without being able to read anything: a relay sees sizes and ciphertext hashes only.
//!
//! # Flow
//!
//! - Sender: [`ManifestBuilder::new`], then [`ManifestBuilder::seal_next_chunk`] for each chunk in
//!   order (a 4 GiB file is never held in memory), then [`ManifestBuilder::finish`], which seals
//!   the metadata, wraps the key and signs. The sender keeps the [`FileKey`] to re-seal chunks
//!   ([`FileManifest::reseal_chunk`]) and to forward ([`FileManifest::forward`]).
//! - Relay: [`FileManifest::from_bytes`], [`FileManifest::verify`] against the sender's pinned
//!   key, then [`verify_chunk`] for every chunk it stores or serves.
//! - Recipient: [`FileManifest::verify`] first (before any RSA work, so nobody who cannot sign as
//!   a contact can make us decrypt), then [`FileManifest::unwrap_key`],
//!   [`FileManifest::open_meta`] and [`open_chunk`] per chunk.
//!
//! # Empty files
//!
//! A file of 0 bytes has **no chunks**: `chunk_hashes` is empty and the manifest alone (with its
//! sealed metadata, which carries the SHA-256 of the empty string) is the whole transfer. Every
//! other file has `ceil(size / chunk_size)` chunks, all `chunk_size` bytes long except possibly
//! the last.
//!
//! # Layout
//!
//! This file holds the limits, the errors, the key, id and metadata types and the chunk
//! arithmetic; `chunk` seals, checks and opens chunks, `builder` builds a manifest while
//! sealing, `manifest` is the signed [`FileManifest`]. Every public item is re-exported here:
//! paths are `encrypto_crypto::file::X`.

use std::fmt;
use std::str::FromStr;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::aead::{self, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::canonical::Canonical;
use crate::codec;
use crate::identity::{ED25519_LEN, Identity, PublicIdentity, SIGNATURE_LEN};

mod builder;
mod chunk;
mod manifest;
#[cfg(test)]
mod tests;

pub use builder::ManifestBuilder;
use builder::{validate_file_name, validate_media_type, wrap_key};
pub use chunk::{open_chunk, open_chunk_in_place, seal_chunk, seal_chunk_in_place, verify_chunk};
pub use manifest::FileManifest;

/// Smallest accepted chunk size: 4 KiB.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// Largest accepted chunk size: 4 MiB.
pub const MAX_CHUNK_SIZE: u32 = 4 * 1024 * 1024;
/// Chunk size used whenever it gives at most [`MAX_CHUNKS`] chunks: 256 KiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 256 * 1024;
/// Most chunks one file may have (2^17).
pub const MAX_CHUNKS: u64 = 1 << 17;
/// Largest file that can be sent: [`MAX_CHUNKS`] chunks of [`MAX_CHUNK_SIZE`] (512 GiB).
pub const MAX_FILE_SIZE: u64 = MAX_CHUNKS * MAX_CHUNK_SIZE as u64;
/// Length of a chunk hash (BLAKE3-256).
pub const HASH_LEN: usize = 32;
/// Length of a [`FileKey`].
pub const FILE_KEY_LEN: usize = KEY_LEN;
/// Bytes a sealed chunk has beyond its plaintext (the AES-GCM tag).
pub const SEALED_CHUNK_OVERHEAD: usize = TAG_LEN;
/// Longest accepted file name, in bytes of UTF-8.
pub const MAX_FILE_NAME_LEN: usize = 255;
/// Longest accepted media type, in bytes.
pub const MAX_MEDIA_TYPE_LEN: usize = 127;
/// Length of [`FileManifest::sealed_meta`]: the metadata is padded to a fixed size before
/// sealing, so its length says nothing about the name.
pub const SEALED_META_LEN: usize = META_PADDED_LEN + TAG_LEN;
/// Largest accepted encoded manifest: room for [`MAX_CHUNKS`] hashes plus 512 KiB for every
/// other field (which need under 2 KiB).
pub const MAX_MANIFEST_LEN: usize = MAX_CHUNKS as usize * HASH_LEN + 512 * 1024;

/// Plaintext length of the sealed metadata: a u16 length, the CBOR, zero padding.
const META_PADDED_LEN: usize = 512;
/// RSA-OAEP block sizes of the supported RSA keys (2048, 3072, 4096 bits).
const RSA_BLOCK_LENS: [usize; 3] = [256, 384, 512];

const CHUNK_DOMAIN: &[u8] = b"encrypto/chunk/v1";
const META_DOMAIN: &[u8] = b"encrypto/file-meta/v1";
const MANIFEST_DOMAIN: &[u8] = b"encrypto/manifest/v1";
const HASH_LIST_DOMAIN: &[u8] = b"encrypto/chunk-hashes/v1";
/// Nonce prefix of the sealed metadata; chunk nonces start with four zero bytes instead.
const META_NONCE_PREFIX: [u8; 4] = [0, 0, 0, 1];

/// Errors about files, manifests and chunks.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileError {
    /// The manifest's signature does not verify against its sender.
    #[error("manifest signature does not verify")]
    BadSignature,
    /// The manifest is addressed to someone else.
    #[error("file is addressed to another recipient")]
    WrongRecipient,
    /// The manifest names a different sender than the key it was checked against.
    #[error("manifest was not sent by the expected sender")]
    SenderMismatch,
    /// A chunk index at or past the end of the file.
    #[error("chunk index {index} out of range for a file of {count} chunks")]
    ChunkIndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// How many chunks the file has.
        count: u64,
    },
    /// A chunk (sealed or plaintext, depending on the call) has the wrong length for its index.
    #[error("chunk {index} is {actual} bytes, expected {expected}")]
    ChunkLength {
        /// The chunk's index.
        index: u64,
        /// The length the manifest implies.
        expected: u64,
        /// The length given.
        actual: u64,
    },
    /// A sealed chunk's hash differs from the manifest's.
    #[error("chunk {index} does not match its hash in the manifest")]
    ChunkHashMismatch {
        /// The chunk's index.
        index: u64,
    },
    /// Decryption or key unwrapping failed (one opaque outcome, by design).
    #[error("decryption failed")]
    Decryption,
    /// The manifest is structurally unacceptable (version, sizes, counts, lengths).
    #[error("invalid manifest: {0}")]
    InvalidManifest(&'static str),
    /// A file name or media type is not acceptable.
    #[error("invalid file metadata: {0}")]
    InvalidMeta(&'static str),
    /// A chunk size outside [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`], or one that would give
    /// more than [`MAX_CHUNKS`] chunks for this file (see [`chunk_size_for`]).
    #[error("chunk size {chunk_size} is not usable for a file of {size} bytes")]
    InvalidChunkSize {
        /// The chunk size asked for.
        chunk_size: u32,
        /// The file size.
        size: u64,
    },
    /// The file is larger than [`MAX_FILE_SIZE`].
    #[error("file of {size} bytes exceeds the largest supported size of {MAX_FILE_SIZE} bytes")]
    TooLarge {
        /// The file size.
        size: u64,
    },
    /// [`ManifestBuilder::finish`] was called before every chunk was sealed.
    #[error("only {sealed} of {expected} chunks were sealed")]
    Incomplete {
        /// Chunks sealed so far.
        sealed: u64,
        /// Chunks the file has.
        expected: u64,
    },
    /// The file key could not be wrapped for the recipient (RSA encryption failed).
    #[error("cannot wrap the file key: {0}")]
    KeyWrap(String),
    /// A string that is not a file id (32 hex digits).
    #[error("invalid file id: {0}")]
    InvalidFileId(&'static str),
    /// Bytes that do not decode as a manifest, or exceed [`MAX_MANIFEST_LEN`].
    #[error("malformed manifest: {0}")]
    Malformed(#[from] codec::CodecError),
}

/// The random AES-256 key of one file. Zeroized on drop; printed as `FileKey(..)`. No
/// `PartialEq`: secrets are not compared with a timing-dependent `==`.
#[derive(Clone)]
pub struct FileKey(Zeroizing<[u8; FILE_KEY_LEN]>);

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKey(..)")
    }
}

impl FileKey {
    /// A fresh random key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut key = Zeroizing::new([0u8; FILE_KEY_LEN]);
        rng.fill_bytes(&mut key[..]);
        FileKey(key)
    }

    /// Rebuilds a key from its bytes (as kept, sealed, by the sender's store).
    pub fn from_bytes(bytes: [u8; FILE_KEY_LEN]) -> Self {
        FileKey(Zeroizing::new(bytes))
    }

    /// The raw key, for sealing it into the sender's store. Handle with care.
    pub fn as_bytes(&self) -> &[u8; FILE_KEY_LEN] {
        &self.0
    }
}

/// A file's random 128-bit identifier. Printed and parsed as 32 hex digits; CBOR as bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileId(#[serde(with = "serde_bytes")] [u8; 16]);

impl FileId {
    /// A fresh random id.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        FileId(id)
    }

    /// An id from its bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        FileId(bytes)
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for FileId {
    /// 32 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({self})")
    }
}

impl FromStr for FileId {
    type Err = FileError;

    /// Parses 32 hex digits (either case).
    fn from_str(s: &str) -> Result<Self, FileError> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return Err(FileError::InvalidFileId("a file id is 32 hex digits"));
        }
        let mut id = [0u8; 16];
        for (out, pair) in id.iter_mut().zip(s.chunks_exact(2)) {
            let [hi, lo] = pair else {
                return Err(FileError::InvalidFileId("a file id is 32 hex digits"));
            };
            *out = (hex_digit(*hi)? << 4) | hex_digit(*lo)?;
        }
        Ok(FileId(id))
    }
}

fn hex_digit(c: u8) -> Result<u8, FileError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(FileError::InvalidFileId("not a hex digit")),
    }
}

/// What only the recipient learns about a file: sealed in [`FileManifest::sealed_meta`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// File name (no path separators, no control characters, at most [`MAX_FILE_NAME_LEN`]
    /// bytes).
    pub name: String,
    /// Media type such as `image/png` (printable ASCII, at most [`MAX_MEDIA_TYPE_LEN`] bytes).
    pub media_type: String,
    /// SHA-256 of the whole plaintext file.
    pub sha256: [u8; HASH_LEN],
}

/// The metadata as CBOR inside the sealed, padded block.
#[derive(Serialize, Deserialize)]
struct MetaPlain {
    name: String,
    media_type: String,
    #[serde(with = "serde_bytes")]
    sha256: [u8; HASH_LEN],
}

/// The chunk size to use for a file of `size` bytes: [`DEFAULT_CHUNK_SIZE`] unless that would
/// give more than [`MAX_CHUNKS`] chunks (files over 32 GiB), then the smallest power of two that
/// fits, up to [`MAX_CHUNK_SIZE`].
///
/// # Errors
/// [`FileError::TooLarge`] for files over [`MAX_FILE_SIZE`].
pub fn chunk_size_for(size: u64) -> Result<u32, FileError> {
    if size > MAX_FILE_SIZE {
        return Err(FileError::TooLarge { size });
    }
    // ceil(size / c) <= MAX_CHUNKS  <=>  c >= ceil(size / MAX_CHUNKS)
    let needed = size.div_ceil(MAX_CHUNKS).next_power_of_two();
    let chunk = needed.max(u64::from(DEFAULT_CHUNK_SIZE));
    u32::try_from(chunk)
        .ok()
        .filter(|c| *c <= MAX_CHUNK_SIZE)
        .ok_or(FileError::TooLarge { size })
}

/// Number of chunks of a file, or `None` if the chunk size is zero.
fn chunk_count_of(size: u64, chunk_size: u32) -> Option<u64> {
    (chunk_size != 0).then(|| size.div_ceil(u64::from(chunk_size)))
}

/// Plaintext length of chunk `index`, with checked arithmetic (sizes may be untrusted).
fn plain_chunk_len(size: u64, chunk_size: u32, count: u64, index: u64) -> Option<u64> {
    if index >= count {
        return None;
    }
    let start = index.checked_mul(u64::from(chunk_size))?;
    let remaining = size.checked_sub(start)?;
    Some(remaining.min(u64::from(chunk_size)))
}

fn chunk_nonce(index: u64) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[4..].copy_from_slice(&index.to_be_bytes());
    nonce
}

fn meta_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..4].copy_from_slice(&META_NONCE_PREFIX);
    nonce
}

fn chunk_aad(file_id: &FileId, index: u64, chunk_count: u64) -> Vec<u8> {
    Canonical::new(CHUNK_DOMAIN)
        .fixed(file_id.as_bytes())
        .u64(index)
        .u64(chunk_count)
        .finish()
}

fn meta_aad(file_id: &FileId, size: u64) -> Vec<u8> {
    Canonical::new(META_DOMAIN)
        .fixed(file_id.as_bytes())
        .u64(size)
        .finish()
}

/// The hash of a sealed chunk. BLAKE3 rather than SHA-256 because the chunk pipeline hashes
/// every byte once more after AES-GCM: on our machines BLAKE3 runs at about 3.5x AES-256-GCM's
/// speed where SHA-256 (with SHA-NI) runs at about 1.6x, which is the difference between the
/// pipeline reaching 78% or 63% of raw AES-GCM throughput (see `crypto/benches`).
pub fn sealed_chunk_hash(sealed: &[u8]) -> [u8; HASH_LEN] {
    blake3::hash(sealed).into()
}

fn hash_list_digest(hashes: &[[u8; HASH_LEN]]) -> [u8; HASH_LEN] {
    Sha256::new()
        .chain_update(HASH_LIST_DOMAIN)
        .chain_update(hashes.as_flattened())
        .finalize()
        .into()
}
