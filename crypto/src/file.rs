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

/// Seals chunk `index` of a file of `chunk_count` chunks. Deterministic: the same key, id,
/// index, count and plaintext always give the same bytes (`plaintext.len() + 16`).
///
/// This is the low-level primitive: it does not check the plaintext's length against a
/// manifest (AES-GCM itself would refuse a chunk over 64 GiB, far beyond
/// [`MAX_CHUNK_SIZE`]). Senders use [`ManifestBuilder::seal_next_chunk`] while building and
/// [`FileManifest::reseal_chunk`] afterwards, which do.
pub fn seal_chunk(
    key: &FileKey,
    file_id: &FileId,
    index: u64,
    chunk_count: u64,
    plaintext: &[u8],
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(plaintext.len() + SEALED_CHUNK_OVERHEAD);
    buf.extend_from_slice(plaintext);
    seal_chunk_in_place(key, file_id, index, chunk_count, &mut buf);
    buf
}

/// [`seal_chunk`] in place: `buf` holds the plaintext and ends up holding the sealed chunk.
/// A sender streaming a large file reuses one buffer (with room for
/// [`SEALED_CHUNK_OVERHEAD`] more bytes) and allocates nothing per chunk.
pub fn seal_chunk_in_place(
    key: &FileKey,
    file_id: &FileId,
    index: u64,
    chunk_count: u64,
    buf: &mut Vec<u8>,
) {
    aead::seal_in_place(
        key.as_bytes(),
        &chunk_nonce(index),
        &chunk_aad(file_id, index, chunk_count),
        buf,
    );
}

/// Checks a sealed chunk against a manifest without the key: the index is in range, the
/// length is exactly what the manifest implies, and the BLAKE3 hash matches. This is what relays
/// run on every chunk they store or serve.
///
/// The manifest should have been checked with [`FileManifest::verify`] first; on a manifest
/// that was not, this still never panics.
///
/// # Errors
/// [`FileError::ChunkIndexOutOfRange`], [`FileError::ChunkLength`],
/// [`FileError::ChunkHashMismatch`], or [`FileError::InvalidManifest`] for a manifest whose
/// sizes are inconsistent.
pub fn verify_chunk(manifest: &FileManifest, index: u64, sealed: &[u8]) -> Result<(), FileError> {
    let expected_hash = check_chunk_shape(manifest, index, sealed)?;
    if sealed_chunk_hash(sealed) != *expected_hash {
        return Err(FileError::ChunkHashMismatch { index });
    }
    Ok(())
}

/// The index is in range and the length is exactly what the manifest implies; returns the
/// chunk's expected hash.
fn check_chunk_shape<'m>(
    manifest: &'m FileManifest,
    index: u64,
    sealed: &[u8],
) -> Result<&'m [u8; HASH_LEN], FileError> {
    let expected_len = manifest.sealed_chunk_len(index)?;
    let expected_hash = usize::try_from(index)
        .ok()
        .and_then(|i| manifest.chunk_hashes.get(i))
        .ok_or(FileError::ChunkIndexOutOfRange {
            index,
            count: manifest.chunk_count(),
        })?;
    let actual = sealed.len() as u64;
    if actual != expected_len {
        return Err(FileError::ChunkLength {
            index,
            expected: expected_len,
            actual,
        });
    }
    Ok(expected_hash)
}

/// Decrypts a sealed chunk after checking its index and length against the manifest.
///
/// The recipient does not need [`verify_chunk`]'s hash: the AES-GCM tag authenticates the chunk
/// under the file key, bound to this file id, index and chunk count, which is strictly stronger
/// than the public hash (only someone holding the key could have made it). Skipping the second
/// hashing pass keeps opening at raw AES-GCM speed. A sender that equivocates (seals different
/// bytes than it hashed) is caught by the whole-file SHA-256 in the sealed metadata.
///
/// # Errors
/// [`FileError::ChunkIndexOutOfRange`] or [`FileError::ChunkLength`] for a chunk that cannot be
/// the one asked for; [`FileError::Decryption`] if the key is not this file's or the chunk was
/// tampered with or sealed for another index, file or chunk count.
pub fn open_chunk(
    key: &FileKey,
    manifest: &FileManifest,
    index: u64,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let mut buf = Zeroizing::new(sealed.to_vec());
    open_chunk_in_place(key, manifest, index, &mut buf)?;
    Ok(buf)
}

/// [`open_chunk`] in place: `buf` holds the sealed chunk and, on success, ends up holding the
/// plaintext. A recipient writing a large file to disk reuses one buffer.
///
/// # Errors
/// As [`open_chunk`]. On an error `buf` holds no plaintext.
pub fn open_chunk_in_place(
    key: &FileKey,
    manifest: &FileManifest,
    index: u64,
    buf: &mut Vec<u8>,
) -> Result<(), FileError> {
    check_chunk_shape(manifest, index, buf)?;
    let aad = chunk_aad(&manifest.file_id, index, manifest.chunk_count());
    if aead::open_in_place(key.as_bytes(), &chunk_nonce(index), &aad, buf) {
        Ok(())
    } else {
        Err(FileError::Decryption)
    }
}

fn validate_file_name(name: &str) -> Result<(), FileError> {
    if name.is_empty() {
        return Err(FileError::InvalidMeta("the file name is empty"));
    }
    if name.len() > MAX_FILE_NAME_LEN {
        return Err(FileError::InvalidMeta(
            "the file name is longer than 255 bytes",
        ));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == '/' || c == '\\')
    {
        return Err(FileError::InvalidMeta(
            "the file name contains a control character or a path separator",
        ));
    }
    if name == "." || name == ".." {
        return Err(FileError::InvalidMeta("the file name is . or .."));
    }
    Ok(())
}

fn validate_media_type(media_type: &str) -> Result<(), FileError> {
    if media_type.is_empty() {
        return Err(FileError::InvalidMeta("the media type is empty"));
    }
    if media_type.len() > MAX_MEDIA_TYPE_LEN {
        return Err(FileError::InvalidMeta(
            "the media type is longer than 127 bytes",
        ));
    }
    if !media_type
        .bytes()
        .all(|b| b == b' ' || b.is_ascii_graphic())
    {
        return Err(FileError::InvalidMeta(
            "the media type is not printable ASCII",
        ));
    }
    Ok(())
}

fn seal_meta(
    key: &FileKey,
    file_id: &FileId,
    size: u64,
    meta: &MetaPlain,
) -> Result<Vec<u8>, FileError> {
    let cbor = Zeroizing::new(
        codec::encode(meta).map_err(|_| FileError::InvalidMeta("metadata cannot be encoded"))?,
    );
    let len = u16::try_from(cbor.len())
        .ok()
        .filter(|l| usize::from(*l) <= META_PADDED_LEN - 2)
        .ok_or(FileError::InvalidMeta("metadata too long"))?;
    let mut padded = Zeroizing::new(Vec::with_capacity(META_PADDED_LEN));
    padded.extend_from_slice(&len.to_be_bytes());
    padded.extend_from_slice(&cbor);
    padded.resize(META_PADDED_LEN, 0);
    Ok(aead::seal(
        key.as_bytes(),
        &meta_nonce(),
        &meta_aad(file_id, size),
        &padded,
    ))
}

/// Builds a manifest while sealing a file chunk by chunk, so the file is never held in memory.
///
/// Feed every chunk in order to [`seal_next_chunk`](Self::seal_next_chunk) (each exactly
/// `chunk_size` bytes except the last), store or send what it returns, then call
/// [`finish`](Self::finish).
pub struct ManifestBuilder {
    key: FileKey,
    file_id: FileId,
    recipient: PublicIdentity,
    size: u64,
    chunk_size: u32,
    chunk_count: u64,
    name: String,
    media_type: String,
    chunk_hashes: Vec<[u8; HASH_LEN]>,
    plaintext_hash: Sha256,
}

impl fmt::Debug for ManifestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManifestBuilder")
            .field("file_id", &self.file_id)
            .field("size", &self.size)
            .field("chunk_size", &self.chunk_size)
            .field("chunks_sealed", &self.chunk_hashes.len())
            .field("chunk_count", &self.chunk_count)
            .finish_non_exhaustive()
    }
}

impl ManifestBuilder {
    /// Starts a file of `size` bytes for `recipient` and draws its [`FileKey`] from `rng`.
    /// Use [`chunk_size_for`] unless there is a reason to pick the chunk size yourself.
    ///
    /// # Errors
    /// [`FileError::TooLarge`] over [`MAX_FILE_SIZE`]; [`FileError::InvalidChunkSize`] for a
    /// chunk size out of bounds or giving more than [`MAX_CHUNKS`] chunks;
    /// [`FileError::InvalidMeta`] for an empty or overlong name or media type, a name with a
    /// control character or path separator, or a media type that is not printable ASCII.
    pub fn new<R: CryptoRng + ?Sized>(
        rng: &mut R,
        recipient: &PublicIdentity,
        file_id: FileId,
        size: u64,
        chunk_size: u32,
        name: &str,
        media_type: &str,
    ) -> Result<Self, FileError> {
        if size > MAX_FILE_SIZE {
            return Err(FileError::TooLarge { size });
        }
        let chunk_count = chunk_count_of(size, chunk_size)
            .filter(|n| (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) && *n <= MAX_CHUNKS)
            .ok_or(FileError::InvalidChunkSize { chunk_size, size })?;
        validate_file_name(name)?;
        validate_media_type(media_type)?;
        // chunk_count <= MAX_CHUNKS, so this is at most 4 MiB.
        let capacity = usize::try_from(chunk_count).unwrap_or(0);
        Ok(ManifestBuilder {
            key: FileKey::generate(rng),
            file_id,
            recipient: recipient.clone(),
            size,
            chunk_size,
            chunk_count,
            name: name.to_owned(),
            media_type: media_type.to_owned(),
            chunk_hashes: Vec::with_capacity(capacity),
            plaintext_hash: Sha256::new(),
        })
    }

    /// The file's key (keep it to re-seal chunks on demand and to forward the file).
    pub fn key(&self) -> &FileKey {
        &self.key
    }

    /// The file's id.
    pub fn file_id(&self) -> &FileId {
        &self.file_id
    }

    /// How many chunks the file has.
    pub fn chunk_count(&self) -> u64 {
        self.chunk_count
    }

    /// Index of the chunk [`seal_next_chunk`](Self::seal_next_chunk) expects next.
    pub fn next_index(&self) -> u64 {
        self.chunk_hashes.len() as u64
    }

    /// Plaintext length the next chunk must have, or `None` once every chunk is sealed.
    pub fn next_chunk_len(&self) -> Option<u64> {
        plain_chunk_len(
            self.size,
            self.chunk_size,
            self.chunk_count,
            self.next_index(),
        )
    }

    /// Seals the next chunk and records its hash. On error nothing is recorded, so the call can
    /// be retried with the right bytes.
    ///
    /// # Errors
    /// [`FileError::ChunkIndexOutOfRange`] when every chunk is already sealed;
    /// [`FileError::ChunkLength`] when `plaintext` is not exactly
    /// [`next_chunk_len`](Self::next_chunk_len) bytes.
    pub fn seal_next_chunk(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, FileError> {
        let index = self.next_index();
        let expected = self
            .next_chunk_len()
            .ok_or(FileError::ChunkIndexOutOfRange {
                index,
                count: self.chunk_count,
            })?;
        let actual = plaintext.len() as u64;
        if actual != expected {
            return Err(FileError::ChunkLength {
                index,
                expected,
                actual,
            });
        }
        let sealed = seal_chunk(&self.key, &self.file_id, index, self.chunk_count, plaintext);
        self.plaintext_hash.update(plaintext);
        self.chunk_hashes.push(sealed_chunk_hash(&sealed));
        Ok(sealed)
    }

    /// Seals the metadata, wraps the file key for the recipient, and signs the manifest as
    /// `sender`. Returns the manifest and the file key.
    ///
    /// # Errors
    /// [`FileError::Incomplete`] if a chunk was not sealed; [`FileError::KeyWrap`] if RSA
    /// encryption fails.
    pub fn finish<R: CryptoRng + ?Sized>(
        self,
        sender: &Identity,
        created_ms: u64,
        rng: &mut R,
    ) -> Result<(FileManifest, FileKey), FileError> {
        if self.next_index() != self.chunk_count {
            return Err(FileError::Incomplete {
                sealed: self.next_index(),
                expected: self.chunk_count,
            });
        }
        let meta = MetaPlain {
            name: self.name,
            media_type: self.media_type,
            sha256: self.plaintext_hash.finalize().into(),
        };
        let sealed_meta = seal_meta(&self.key, &self.file_id, self.size, &meta)?;
        let wrapped_key = wrap_key(&self.key, &self.recipient, rng)?;
        let mut manifest = FileManifest {
            version: FileManifest::VERSION,
            file_id: self.file_id,
            sender: sender.public().ed25519_bytes(),
            recipient: self.recipient.ed25519_bytes(),
            size: self.size,
            chunk_size: self.chunk_size,
            chunk_hashes: self.chunk_hashes,
            sealed_meta: ByteBuf::from(sealed_meta),
            wrapped_key: ByteBuf::from(wrapped_key),
            created: created_ms,
            signature: [0; SIGNATURE_LEN],
        };
        manifest.signature = sender.sign(&manifest.signed_bytes());
        Ok((manifest, self.key))
    }
}

fn wrap_key<R: CryptoRng + ?Sized>(
    key: &FileKey,
    recipient: &PublicIdentity,
    rng: &mut R,
) -> Result<Vec<u8>, FileError> {
    recipient
        .rsa_encrypt(rng, key.as_bytes())
        .map_err(|e| FileError::KeyWrap(e.to_string()))
}

/// The signed description of one file for one recipient: what relays check chunks against and
/// what the recipient opens the file with.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileManifest {
    /// Format version, [`FileManifest::VERSION`].
    pub version: u8,
    /// The file's id (the same for every copy and every forward).
    pub file_id: FileId,
    /// Ed25519 public key of the sender, who signed this manifest.
    #[serde(with = "serde_bytes")]
    pub sender: [u8; ED25519_LEN],
    /// Ed25519 public key of the recipient, who can unwrap the key.
    #[serde(with = "serde_bytes")]
    pub recipient: [u8; ED25519_LEN],
    /// Plaintext size in bytes.
    pub size: u64,
    /// Plaintext bytes per chunk (the last chunk may be shorter).
    pub chunk_size: u32,
    /// BLAKE3 hash of each *sealed* chunk, in order; `ceil(size / chunk_size)` entries. Encoded as
    /// one byte string of concatenated hashes.
    #[serde(with = "hash_list")]
    pub chunk_hashes: Vec<[u8; HASH_LEN]>,
    /// Name, media type and plaintext SHA-256, padded and sealed under the file key
    /// ([`SEALED_META_LEN`] bytes).
    pub sealed_meta: ByteBuf,
    /// The file key, RSA-OAEP-SHA256 encrypted to the recipient's RSA key.
    pub wrapped_key: ByteBuf,
    /// Creation time, Unix milliseconds.
    pub created: u64,
    /// Ed25519 signature by `sender` over the canonical encoding of every other field.
    #[serde(with = "serde_bytes")]
    pub signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for FileManifest {
    /// A summary: the hash list can hold 2^17 entries and has no place in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileManifest")
            .field("version", &self.version)
            .field("file_id", &self.file_id)
            .field("sender", &crate::identity::peer_id_of(&self.sender))
            .field("recipient", &crate::identity::peer_id_of(&self.recipient))
            .field("size", &self.size)
            .field("chunk_size", &self.chunk_size)
            .field("chunks", &self.chunk_hashes.len())
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl FileManifest {
    /// The current manifest format.
    pub const VERSION: u8 = 1;

    fn signed_bytes(&self) -> Vec<u8> {
        Canonical::new(MANIFEST_DOMAIN)
            .u8(self.version)
            .fixed(self.file_id.as_bytes())
            .fixed(&self.sender)
            .fixed(&self.recipient)
            .u64(self.size)
            .u32(self.chunk_size)
            .u64(self.chunk_count())
            .fixed(&hash_list_digest(&self.chunk_hashes))
            .bytes(&self.sealed_meta)
            .bytes(&self.wrapped_key)
            .u64(self.created)
            .finish()
    }

    /// Structural checks that need no key: version, bounds, and that every length agrees.
    fn validate(&self) -> Result<(), FileError> {
        if self.version != Self::VERSION {
            return Err(FileError::InvalidManifest("unsupported manifest version"));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(FileError::InvalidManifest("chunk size out of bounds"));
        }
        if self.size > MAX_FILE_SIZE {
            return Err(FileError::TooLarge { size: self.size });
        }
        let count = chunk_count_of(self.size, self.chunk_size)
            .ok_or(FileError::InvalidManifest("chunk size out of bounds"))?;
        if count > MAX_CHUNKS {
            return Err(FileError::InvalidManifest(
                "more chunks than allowed for this chunk size",
            ));
        }
        if count != self.chunk_count() {
            return Err(FileError::InvalidManifest(
                "chunk hash count does not match size and chunk size",
            ));
        }
        if self.sealed_meta.len() != SEALED_META_LEN {
            return Err(FileError::InvalidManifest(
                "sealed metadata has the wrong length",
            ));
        }
        if !RSA_BLOCK_LENS.contains(&self.wrapped_key.len()) {
            return Err(FileError::InvalidManifest(
                "wrapped key is not one RSA block",
            ));
        }
        Ok(())
    }

    /// How many chunks the file has (0 for an empty file).
    pub fn chunk_count(&self) -> u64 {
        self.chunk_hashes.len() as u64
    }

    /// Plaintext length of chunk `index`.
    ///
    /// # Errors
    /// [`FileError::ChunkIndexOutOfRange`]; [`FileError::InvalidManifest`] if the manifest's
    /// sizes are inconsistent (only possible for one that was not verified).
    pub fn chunk_plain_len(&self, index: u64) -> Result<u64, FileError> {
        let count = self.chunk_count();
        if index >= count {
            return Err(FileError::ChunkIndexOutOfRange { index, count });
        }
        plain_chunk_len(self.size, self.chunk_size, count, index)
            .filter(|len| *len > 0)
            .ok_or(FileError::InvalidManifest(
                "chunk hash count does not match size and chunk size",
            ))
    }

    /// Sealed length of chunk `index`: its plaintext length plus [`SEALED_CHUNK_OVERHEAD`].
    ///
    /// # Errors
    /// As [`chunk_plain_len`](Self::chunk_plain_len).
    pub fn sealed_chunk_len(&self, index: u64) -> Result<u64, FileError> {
        self.chunk_plain_len(index)?
            .checked_add(SEALED_CHUNK_OVERHEAD as u64)
            .ok_or(FileError::InvalidManifest("chunk size out of bounds"))
    }

    /// Encodes the manifest as CBOR.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self).expect("a manifest always encodes")
    }

    /// Decodes a manifest and checks its structure (not yet its signature: call
    /// [`verify`](Self::verify)).
    ///
    /// # Errors
    /// [`FileError::Malformed`] for bytes that are not a manifest or exceed
    /// [`MAX_MANIFEST_LEN`]; [`FileError::InvalidManifest`] or [`FileError::TooLarge`] for a
    /// manifest whose version, sizes or lengths are unacceptable or disagree.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FileError> {
        let manifest: FileManifest = codec::decode_canonical(bytes, MAX_MANIFEST_LEN)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the structure and that `sender` signed this manifest. Relays and recipients run
    /// this once on receipt, with the sender's pinned key, before anything else.
    ///
    /// # Errors
    /// The structural errors of [`from_bytes`](Self::from_bytes);
    /// [`FileError::SenderMismatch`] if the manifest names another sender;
    /// [`FileError::BadSignature`] if the signature does not verify.
    pub fn verify(&self, sender: &PublicIdentity) -> Result<(), FileError> {
        self.validate()?;
        if sender.ed25519_bytes() != self.sender {
            return Err(FileError::SenderMismatch);
        }
        if !sender.verify(&self.signed_bytes(), &self.signature) {
            return Err(FileError::BadSignature);
        }
        Ok(())
    }

    /// Unwraps the file key with the recipient's RSA key.
    ///
    /// Call [`verify`](Self::verify) with the sender's pinned key first: only then is this
    /// RSA decryption done for someone who can sign as a contact (no decryption oracle).
    ///
    /// # Errors
    /// [`FileError::WrongRecipient`] if the manifest is not addressed to `me` (checked before
    /// any RSA work); [`FileError::Decryption`] if the key does not unwrap.
    pub fn unwrap_key<R: CryptoRng + ?Sized>(
        &self,
        me: &Identity,
        rng: &mut R,
    ) -> Result<FileKey, FileError> {
        if me.public().ed25519_bytes() != self.recipient {
            return Err(FileError::WrongRecipient);
        }
        let key = me
            .rsa_decrypt(rng, &self.wrapped_key)
            .ok_or(FileError::Decryption)?;
        let key: [u8; FILE_KEY_LEN] = key
            .as_slice()
            .try_into()
            .map_err(|_| FileError::Decryption)?;
        Ok(FileKey::from_bytes(key))
    }

    /// Opens the sealed metadata: name, media type and plaintext SHA-256.
    ///
    /// # Errors
    /// [`FileError::Decryption`] if `key` is not this file's key;
    /// [`FileError::InvalidManifest`] if the sender sealed metadata that is malformed.
    pub fn open_meta(&self, key: &FileKey) -> Result<FileMeta, FileError> {
        let padded = aead::open(
            key.as_bytes(),
            &meta_nonce(),
            &meta_aad(&self.file_id, self.size),
            &self.sealed_meta,
        )
        .ok_or(FileError::Decryption)?;
        const BAD: FileError = FileError::InvalidManifest("malformed sealed metadata");
        let (len, rest) = padded.split_first_chunk::<2>().ok_or(BAD)?;
        let (cbor, padding) = rest
            .split_at_checked(usize::from(u16::from_be_bytes(*len)))
            .ok_or(BAD)?;
        if padding.iter().any(|b| *b != 0) {
            return Err(BAD);
        }
        let meta: MetaPlain = codec::decode(cbor, META_PADDED_LEN).map_err(|_| BAD)?;
        validate_file_name(&meta.name)
            .and_then(|()| validate_media_type(&meta.media_type))
            .map_err(|_| {
                FileError::InvalidManifest("sealed metadata has an invalid name or media type")
            })?;
        Ok(FileMeta {
            name: meta.name,
            media_type: meta.media_type,
            sha256: meta.sha256,
        })
    }

    /// Re-seals chunk `index` from the original plaintext (the sender serving a chunk on
    /// demand) and checks the result against the manifest, so a file that changed on disk since
    /// it was sent is caught here rather than by the recipient.
    ///
    /// # Errors
    /// [`FileError::ChunkIndexOutOfRange`]; [`FileError::ChunkLength`] if `plaintext` has the
    /// wrong length; [`FileError::ChunkHashMismatch`] if it is not the original chunk or `key`
    /// is not this file's key.
    pub fn reseal_chunk(
        &self,
        key: &FileKey,
        index: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, FileError> {
        let expected = self.chunk_plain_len(index)?;
        let actual = plaintext.len() as u64;
        if actual != expected {
            return Err(FileError::ChunkLength {
                index,
                expected,
                actual,
            });
        }
        let sealed = seal_chunk(key, &self.file_id, index, self.chunk_count(), plaintext);
        verify_chunk(self, index, &sealed)?;
        Ok(sealed)
    }

    /// Forwards the file to someone else without touching the chunks: the same file id, chunk
    /// hashes and sealed metadata, with the key re-wrapped for `new_recipient` and the manifest
    /// signed by `new_sender`. Peers that already hold the chunks can serve them for the new
    /// manifest as they are.
    ///
    /// # Errors
    /// The structural errors of [`from_bytes`](Self::from_bytes); [`FileError::Decryption`] if
    /// `key` is not this file's key; [`FileError::KeyWrap`] if RSA encryption fails.
    pub fn forward<R: CryptoRng + ?Sized>(
        &self,
        key: &FileKey,
        new_sender: &Identity,
        new_recipient: &PublicIdentity,
        created_ms: u64,
        rng: &mut R,
    ) -> Result<FileManifest, FileError> {
        self.validate()?;
        // Opening the metadata proves the key belongs to this file.
        self.open_meta(key)?;
        let mut manifest = FileManifest {
            sender: new_sender.public().ed25519_bytes(),
            recipient: new_recipient.ed25519_bytes(),
            wrapped_key: ByteBuf::from(wrap_key(key, new_recipient, rng)?),
            created: created_ms,
            signature: [0; SIGNATURE_LEN],
            ..self.clone()
        };
        manifest.signature = new_sender.sign(&manifest.signed_bytes());
        Ok(manifest)
    }
}

/// Serde for the chunk hash list: one CBOR byte string of concatenated hashes (34 bytes less
/// per hash than an array of byte strings, and decoded without a per-hash allocation).
mod hash_list {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;

    use super::{HASH_LEN, MAX_CHUNKS};

    pub(super) fn serialize<S: Serializer>(
        hashes: &[[u8; HASH_LEN]],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(hashes.as_flattened())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<[u8; HASH_LEN]>, D::Error> {
        deserializer.deserialize_bytes(HashListVisitor)
    }

    struct HashListVisitor;

    impl Visitor<'_> for HashListVisitor {
        type Value = Vec<[u8; HASH_LEN]>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "a byte string of at most {MAX_CHUNKS} concatenated {HASH_LEN}-byte hashes"
            )
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            if !v.len().is_multiple_of(HASH_LEN) || (v.len() / HASH_LEN) as u64 > MAX_CHUNKS {
                return Err(E::invalid_length(v.len(), &self));
            }
            v.chunks_exact(HASH_LEN)
                .map(|h| h.try_into().map_err(|_| E::invalid_length(v.len(), &self)))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{alice, bob, carol, rng};
    use proptest::prelude::*;

    const CHUNK: u32 = MIN_CHUNK_SIZE;
    const CREATED: u64 = 1_767_225_600_000;

    fn plaintext(size: usize, seed: u8) -> Vec<u8> {
        (0..size)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    struct Sent {
        manifest: FileManifest,
        key: FileKey,
        chunks: Vec<Vec<u8>>,
    }

    /// Alice sends `data` to `to` in chunks of `chunk_size`.
    fn send_with(data: &[u8], chunk_size: u32, to: &Identity, seed: u64) -> Sent {
        let mut r = rng(seed);
        let id = FileId::random(&mut r);
        let mut b = ManifestBuilder::new(
            &mut r,
            to.public(),
            id,
            data.len() as u64,
            chunk_size,
            "report.pdf",
            "application/pdf",
        )
        .unwrap();
        let chunks: Vec<Vec<u8>> = data
            .chunks(chunk_size as usize)
            .map(|c| b.seal_next_chunk(c).unwrap())
            .collect();
        let (manifest, key) = b.finish(alice(), CREATED, &mut r).unwrap();
        Sent {
            manifest,
            key,
            chunks,
        }
    }

    fn send(data: &[u8], seed: u64) -> Sent {
        send_with(data, CHUNK, bob(), seed)
    }

    fn receive(bytes: &[u8], from: &PublicIdentity, me: &Identity, chunks: &[Vec<u8>]) -> Vec<u8> {
        let m = FileManifest::from_bytes(bytes).unwrap();
        m.verify(from).unwrap();
        let key = m.unwrap_key(me, &mut rng(99)).unwrap();
        let meta = m.open_meta(&key).unwrap();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            out.extend_from_slice(&open_chunk(&key, &m, i as u64, c).unwrap());
        }
        assert_eq!(meta.sha256, <[u8; 32]>::from(Sha256::digest(&out)));
        out
    }

    #[test]
    fn round_trip_over_sizes() {
        let c = CHUNK as usize;
        for (i, size) in [0, 1, c - 1, c, c + 1, 3 * c + c / 2]
            .into_iter()
            .enumerate()
        {
            let data = plaintext(size, i as u8);
            let sent = send(&data, i as u64);
            let m = &sent.manifest;
            assert_eq!(m.chunk_count(), size.div_ceil(c) as u64);
            assert_eq!(sent.chunks.len(), size.div_ceil(c));
            for (j, chunk) in sent.chunks.iter().enumerate() {
                assert_eq!(chunk.len() as u64, m.sealed_chunk_len(j as u64).unwrap());
            }
            let bytes = m.to_bytes();
            assert_eq!(&FileManifest::from_bytes(&bytes).unwrap(), m);
            assert_eq!(receive(&bytes, alice().public(), bob(), &sent.chunks), data);
            let meta = m.open_meta(&sent.key).unwrap();
            assert_eq!(meta.name, "report.pdf");
            assert_eq!(meta.media_type, "application/pdf");
            assert_eq!(meta.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
        }
    }

    #[test]
    fn empty_file_has_no_chunks() {
        let sent = send(&[], 1);
        assert_eq!(sent.manifest.chunk_count(), 0);
        assert!(sent.chunks.is_empty());
        assert_eq!(
            verify_chunk(&sent.manifest, 0, &[0; TAG_LEN]),
            Err(FileError::ChunkIndexOutOfRange { index: 0, count: 0 })
        );
    }

    #[test]
    fn builder_checks_chunk_lengths_and_completeness() {
        let mut r = rng(5);
        let new = |r: &mut rand::rngs::StdRng, size| {
            let id = FileId::random(r);
            ManifestBuilder::new(r, bob().public(), id, size, CHUNK, "a", "b/c")
        };
        let mut b = new(&mut r, 5000).unwrap();
        assert_eq!(b.chunk_count(), 2);
        assert_eq!(b.next_chunk_len(), Some(4096));
        assert_eq!(
            b.seal_next_chunk(&[0; 4095]),
            Err(FileError::ChunkLength {
                index: 0,
                expected: 4096,
                actual: 4095
            })
        );
        b.seal_next_chunk(&[0; 4096]).unwrap();
        assert_eq!(b.next_index(), 1);
        assert!(matches!(
            b.seal_next_chunk(&[0; 4096]),
            Err(FileError::ChunkLength { index: 1, .. })
        ));
        let mut r2 = rng(6);
        let unfinished = new(&mut r2, 5000).unwrap();
        assert_eq!(
            unfinished.finish(alice(), 1, &mut r2).unwrap_err(),
            FileError::Incomplete {
                sealed: 0,
                expected: 2
            }
        );
        b.seal_next_chunk(&[0; 904]).unwrap();
        assert_eq!(b.next_chunk_len(), None);
        assert_eq!(
            b.seal_next_chunk(&[0; 1]),
            Err(FileError::ChunkIndexOutOfRange { index: 2, count: 2 })
        );
        let key = b.key().clone();
        let (m, k) = b.finish(alice(), 1, &mut r).unwrap();
        assert_eq!(k.as_bytes(), key.as_bytes());
        m.verify(alice().public()).unwrap();
    }

    #[test]
    fn builder_rejects_bad_parameters() {
        let mut r = rng(7);
        let id = FileId::random(&mut r);
        let p = bob().public();
        let new = |r: &mut rand::rngs::StdRng, size, chunk, name: &str, mt: &str| {
            ManifestBuilder::new(r, p, id, size, chunk, name, mt).map(|_| ())
        };
        assert_eq!(
            new(&mut r, 1, 0, "a", "b"),
            Err(FileError::InvalidChunkSize {
                chunk_size: 0,
                size: 1
            })
        );
        assert!(new(&mut r, 1, MIN_CHUNK_SIZE - 1, "a", "b").is_err());
        assert!(new(&mut r, 1, MAX_CHUNK_SIZE + 1, "a", "b").is_err());
        // 2^17 chunks of 4 KiB fit; one byte more does not.
        let max_small = MAX_CHUNKS * u64::from(MIN_CHUNK_SIZE);
        assert!(new(&mut r, max_small, MIN_CHUNK_SIZE, "a", "b").is_ok());
        assert!(matches!(
            new(&mut r, max_small + 1, MIN_CHUNK_SIZE, "a", "b"),
            Err(FileError::InvalidChunkSize { .. })
        ));
        assert_eq!(
            new(&mut r, u64::MAX, MAX_CHUNK_SIZE, "a", "b"),
            Err(FileError::TooLarge { size: u64::MAX })
        );
        for name in ["", ".", "..", "a/b", "a\\b", "a\nb", &"x".repeat(256)] {
            assert!(
                matches!(
                    new(&mut r, 1, CHUNK, name, "b"),
                    Err(FileError::InvalidMeta(_))
                ),
                "{name:?}"
            );
        }
        assert!(new(&mut r, 1, CHUNK, &"é".repeat(127), "b").is_ok());
        for mt in ["", "text/plain\n", "tëxt/plain", &"x".repeat(128)] {
            assert!(
                matches!(
                    new(&mut r, 1, CHUNK, "a", mt),
                    Err(FileError::InvalidMeta(_))
                ),
                "{mt:?}"
            );
        }
        assert!(new(&mut r, 1, CHUNK, "a", "text/plain; charset=utf-8").is_ok());
    }

    #[test]
    fn longest_metadata_fits_and_sealed_meta_length_is_fixed() {
        let mut r = rng(8);
        let mut lens = Vec::new();
        for name in ["a".to_owned(), "€".repeat(85)] {
            let mt = "m".repeat(MAX_MEDIA_TYPE_LEN);
            let id = FileId::random(&mut r);
            let b = ManifestBuilder::new(&mut r, bob().public(), id, 0, CHUNK, &name, &mt).unwrap();
            let (m, key) = b.finish(alice(), 1, &mut r).unwrap();
            assert_eq!(m.open_meta(&key).unwrap().name, name);
            lens.push(m.sealed_meta.len());
        }
        assert_eq!(lens, [SEALED_META_LEN, SEALED_META_LEN]);
    }

    #[test]
    fn relay_verifies_chunks_without_the_key() {
        let data = plaintext(3 * CHUNK as usize + 10, 3);
        let sent = send(&data, 10);
        // Carol relays: she has only the manifest bytes and the sealed chunks.
        let m = FileManifest::from_bytes(&sent.manifest.to_bytes()).unwrap();
        m.verify(alice().public()).unwrap();
        for (i, c) in sent.chunks.iter().enumerate() {
            verify_chunk(&m, i as u64, c).unwrap();
        }
        assert_eq!(
            m.unwrap_key(carol(), &mut rng(1)).unwrap_err(),
            FileError::WrongRecipient
        );
        let mut bad = sent.chunks[1].clone();
        bad[100] ^= 0x40;
        assert_eq!(
            verify_chunk(&m, 1, &bad),
            Err(FileError::ChunkHashMismatch { index: 1 })
        );
        let short = &sent.chunks[3][..sent.chunks[3].len() - 1];
        assert_eq!(
            verify_chunk(&m, 3, short),
            Err(FileError::ChunkLength {
                index: 3,
                expected: 10 + TAG_LEN as u64,
                actual: 9 + TAG_LEN as u64
            })
        );
        for index in [4, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(
                verify_chunk(&m, index, &sent.chunks[0]),
                Err(FileError::ChunkIndexOutOfRange { index, count: 4 })
            );
        }
    }

    #[test]
    fn every_bit_flip_in_a_sealed_chunk_is_caught() {
        let data = plaintext(CHUNK as usize + 100, 4);
        let sent = send(&data, 11);
        for (i, chunk) in sent.chunks.iter().enumerate() {
            for bit in 0..chunk.len() * 8 {
                let mut bad = chunk.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(verify_chunk(&sent.manifest, i as u64, &bad).is_err());
                assert!(open_chunk(&sent.key, &sent.manifest, i as u64, &bad).is_err());
            }
        }
    }

    #[test]
    fn every_bit_flip_in_an_encoded_manifest_is_caught() {
        let sent = send(&plaintext(100, 5), 12);
        let bytes = sent.manifest.to_bytes();
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let accepted =
                FileManifest::from_bytes(&bad).and_then(|m| m.verify(alice().public()).map(|()| m));
            assert!(accepted.is_err(), "bit {bit} flipped and still accepted");
        }
    }

    #[test]
    fn chunks_swapped_between_indices_are_rejected() {
        let data = plaintext(3 * CHUNK as usize, 6);
        let sent = send(&data, 13);
        let m = &sent.manifest;
        // Relays and recipients catch it by hash.
        assert_eq!(
            verify_chunk(m, 1, &sent.chunks[0]),
            Err(FileError::ChunkHashMismatch { index: 1 })
        );
        // Even with the hashes swapped in the manifest too (no longer signed), the AEAD binds
        // the index: the chunk does not open at another position.
        let mut forged = m.clone();
        forged.chunk_hashes.swap(0, 1);
        assert!(forged.verify(alice().public()).is_err());
        assert_eq!(
            open_chunk(&sent.key, &forged, 1, &sent.chunks[0]),
            Err(FileError::Decryption)
        );
    }

    #[test]
    fn truncated_file_does_not_open() {
        let data = plaintext(3 * CHUNK as usize, 7);
        let sent = send(&data, 14);
        let mut forged = sent.manifest.clone();
        forged.size = 2 * u64::from(CHUNK);
        forged.chunk_hashes.truncate(2);
        assert!(forged.verify(alice().public()).is_err());
        // The chunk count is in the AAD, so even unsigned the shorter file does not open.
        for i in 0..2 {
            assert_eq!(
                open_chunk(&sent.key, &forged, i, &sent.chunks[i as usize]),
                Err(FileError::Decryption)
            );
        }
    }

    #[test]
    fn chunks_swapped_between_files_are_rejected() {
        let data = plaintext(2 * CHUNK as usize, 8);
        let a = send(&data, 15);
        let b = send(&data, 16);
        assert_ne!(a.manifest.file_id, b.manifest.file_id);
        assert_eq!(
            verify_chunk(&b.manifest, 0, &a.chunks[0]),
            Err(FileError::ChunkHashMismatch { index: 0 })
        );
        let mut forged = b.manifest.clone();
        forged.chunk_hashes[0] = a.manifest.chunk_hashes[0];
        assert_eq!(
            open_chunk(&b.key, &forged, 0, &a.chunks[0]),
            Err(FileError::Decryption)
        );
        // Same key, other file id: the AAD still tells them apart.
        let resealed = seal_chunk(&b.key, &a.manifest.file_id, 0, 2, &data[..CHUNK as usize]);
        forged.chunk_hashes[0] = sealed_chunk_hash(&resealed);
        assert_eq!(
            open_chunk(&b.key, &forged, 0, &resealed),
            Err(FileError::Decryption)
        );
        assert_eq!(a.manifest.open_meta(&b.key), Err(FileError::Decryption));
    }

    #[test]
    fn wrong_recipient_cannot_unwrap() {
        let sent = send(&plaintext(10, 9), 17);
        assert_eq!(
            sent.manifest.unwrap_key(carol(), &mut rng(2)).unwrap_err(),
            FileError::WrongRecipient
        );
        // Readdressing the manifest to Carol breaks the signature, and her RSA key cannot
        // unwrap a key wrapped for Bob anyway.
        let mut readdressed = sent.manifest.clone();
        readdressed.recipient = carol().public().ed25519_bytes();
        assert_eq!(
            readdressed.verify(alice().public()),
            Err(FileError::BadSignature)
        );
        assert_eq!(
            readdressed.unwrap_key(carol(), &mut rng(2)).unwrap_err(),
            FileError::Decryption
        );
    }

    #[test]
    fn verify_checks_sender_and_signature() {
        let sent = send(&plaintext(10, 10), 18);
        let m = &sent.manifest;
        assert_eq!(m.verify(bob().public()), Err(FileError::SenderMismatch));
        let mut later = m.clone();
        later.created += 1;
        assert_eq!(later.verify(alice().public()), Err(FileError::BadSignature));
        let mut rehashed = m.clone();
        rehashed.chunk_hashes[0][31] ^= 1;
        assert_eq!(
            rehashed.verify(alice().public()),
            Err(FileError::BadSignature)
        );
        let mut resigned = m.clone();
        resigned.signature[0] ^= 1;
        assert_eq!(
            resigned.verify(alice().public()),
            Err(FileError::BadSignature)
        );
    }

    #[test]
    fn resealing_reproduces_the_chunks() {
        let data = plaintext(2 * CHUNK as usize + 7, 11);
        let sent = send(&data, 19);
        for (i, part) in data.chunks(CHUNK as usize).enumerate() {
            let again = sent
                .manifest
                .reseal_chunk(&sent.key, i as u64, part)
                .unwrap();
            assert_eq!(again, sent.chunks[i]);
        }
        let mut changed = data[..CHUNK as usize].to_vec();
        changed[0] ^= 1;
        assert_eq!(
            sent.manifest.reseal_chunk(&sent.key, 0, &changed),
            Err(FileError::ChunkHashMismatch { index: 0 })
        );
        assert!(matches!(
            sent.manifest.reseal_chunk(&sent.key, 2, &[0; 8]),
            Err(FileError::ChunkLength { index: 2, .. })
        ));
        assert!(matches!(
            sent.manifest.reseal_chunk(&sent.key, 3, &[]),
            Err(FileError::ChunkIndexOutOfRange { index: 3, .. })
        ));
    }

    #[test]
    fn forwarding_rewraps_only_the_key() {
        let data = plaintext(2 * CHUNK as usize + 500, 12);
        let sent = send(&data, 20);
        let bobs = FileManifest::from_bytes(&sent.manifest.to_bytes()).unwrap();
        bobs.verify(alice().public()).unwrap();
        let key = bobs.unwrap_key(bob(), &mut rng(3)).unwrap();
        let fwd = bobs
            .forward(&key, bob(), carol().public(), CREATED + 1, &mut rng(4))
            .unwrap();
        assert_eq!(fwd.file_id, bobs.file_id);
        assert_eq!(fwd.chunk_hashes, bobs.chunk_hashes);
        assert_eq!(fwd.sealed_meta, bobs.sealed_meta);
        assert_eq!(fwd.created, CREATED + 1);
        assert_ne!(fwd.wrapped_key, bobs.wrapped_key);
        assert_eq!(fwd.verify(alice().public()), Err(FileError::SenderMismatch));
        // Carol opens the original chunk bytes with the re-wrapped key.
        assert_eq!(
            receive(&fwd.to_bytes(), bob().public(), carol(), &sent.chunks),
            data
        );
        assert_eq!(
            fwd.unwrap_key(bob(), &mut rng(5)).unwrap_err(),
            FileError::WrongRecipient
        );
        // Bob cannot forward with a key that is not this file's.
        let other = FileKey::generate(&mut rng(6));
        assert_eq!(
            bobs.forward(&other, bob(), carol().public(), 1, &mut rng(7)),
            Err(FileError::Decryption)
        );
    }

    #[test]
    fn chunk_size_for_boundaries() {
        let d = u64::from(DEFAULT_CHUNK_SIZE);
        assert_eq!(chunk_size_for(0), Ok(DEFAULT_CHUNK_SIZE));
        assert_eq!(chunk_size_for(1), Ok(DEFAULT_CHUNK_SIZE));
        assert_eq!(chunk_size_for(d * MAX_CHUNKS), Ok(DEFAULT_CHUNK_SIZE));
        assert_eq!(
            chunk_size_for(d * MAX_CHUNKS + 1),
            Ok(2 * DEFAULT_CHUNK_SIZE)
        );
        assert_eq!(
            chunk_size_for(2 * d * MAX_CHUNKS),
            Ok(2 * DEFAULT_CHUNK_SIZE)
        );
        assert_eq!(
            chunk_size_for(2 * d * MAX_CHUNKS + 1),
            Ok(4 * DEFAULT_CHUNK_SIZE)
        );
        assert_eq!(chunk_size_for(MAX_FILE_SIZE), Ok(MAX_CHUNK_SIZE));
        assert_eq!(
            chunk_size_for(MAX_FILE_SIZE + 1),
            Err(FileError::TooLarge {
                size: MAX_FILE_SIZE + 1
            })
        );
        assert_eq!(
            chunk_size_for(u64::MAX),
            Err(FileError::TooLarge { size: u64::MAX })
        );
        // 4 GiB: the default size, 16384 chunks.
        assert_eq!(chunk_size_for(4 << 30), Ok(DEFAULT_CHUNK_SIZE));
        for size in [0, 1, d * MAX_CHUNKS + 1, 3 << 36, MAX_FILE_SIZE] {
            let c = chunk_size_for(size).unwrap();
            assert!((MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&c));
            assert!(size.div_ceil(u64::from(c)) <= MAX_CHUNKS);
        }
    }

    /// A structurally valid manifest of `size` bytes with fake hashes (no chunks sealed).
    fn shaped(size: u64, chunk_size: u32, hashes: usize) -> FileManifest {
        let sent = send(&[], 21);
        FileManifest {
            size,
            chunk_size,
            chunk_hashes: vec![[7; HASH_LEN]; hashes],
            ..sent.manifest
        }
    }

    #[test]
    fn absurd_manifests_are_rejected_without_panics() {
        let cases: Vec<(FileManifest, FileError)> = vec![
            (
                shaped(1 << 63, CHUNK, 1),
                FileError::TooLarge { size: 1 << 63 },
            ),
            (
                shaped(u64::MAX, MAX_CHUNK_SIZE, 0),
                FileError::TooLarge { size: u64::MAX },
            ),
            (
                shaped(10, 0, 1),
                FileError::InvalidManifest("chunk size out of bounds"),
            ),
            (
                shaped(10, u32::MAX, 1),
                FileError::InvalidManifest("chunk size out of bounds"),
            ),
            (
                shaped(10_000, CHUNK, 2),
                FileError::InvalidManifest("chunk hash count does not match size and chunk size"),
            ),
            (
                shaped(0, CHUNK, 1),
                FileError::InvalidManifest("chunk hash count does not match size and chunk size"),
            ),
            (
                shaped(MAX_FILE_SIZE, CHUNK, 3),
                FileError::InvalidManifest("more chunks than allowed for this chunk size"),
            ),
            (
                FileManifest {
                    version: 2,
                    ..shaped(0, CHUNK, 0)
                },
                FileError::InvalidManifest("unsupported manifest version"),
            ),
            (
                FileManifest {
                    sealed_meta: ByteBuf::from(vec![0; 10]),
                    ..shaped(0, CHUNK, 0)
                },
                FileError::InvalidManifest("sealed metadata has the wrong length"),
            ),
            (
                FileManifest {
                    wrapped_key: ByteBuf::from(vec![0; 255]),
                    ..shaped(0, CHUNK, 0)
                },
                FileError::InvalidManifest("wrapped key is not one RSA block"),
            ),
        ];
        for (m, err) in cases {
            assert_eq!(FileManifest::from_bytes(&m.to_bytes()), Err(err.clone()));
            assert_eq!(m.verify(alice().public()), Err(err));
            // The keyless chunk checks stay total on unverified manifests.
            for index in [0, 1, 2, u64::MAX] {
                let _ = verify_chunk(&m, index, &[0; 64]);
                let _ = m.sealed_chunk_len(index);
            }
        }
    }

    #[test]
    fn largest_manifest_fits_the_limit_and_one_more_hash_does_not_decode() {
        let full = shaped(MAX_FILE_SIZE, MAX_CHUNK_SIZE, MAX_CHUNKS as usize);
        let bytes = full.to_bytes();
        assert!(bytes.len() <= MAX_MANIFEST_LEN);
        assert_eq!(FileManifest::from_bytes(&bytes).unwrap(), full);
        assert_eq!(
            full.sealed_chunk_len(MAX_CHUNKS - 1),
            Ok(u64::from(MAX_CHUNK_SIZE) + TAG_LEN as u64)
        );
        let over = shaped(MAX_FILE_SIZE, MAX_CHUNK_SIZE, MAX_CHUNKS as usize + 1);
        assert!(matches!(
            FileManifest::from_bytes(&over.to_bytes()),
            Err(FileError::Malformed(_))
        ));
        let mut too_long = bytes;
        too_long.resize(MAX_MANIFEST_LEN + 1, 0);
        assert!(matches!(
            FileManifest::from_bytes(&too_long),
            Err(FileError::Malformed(codec::CodecError::TooLarge { .. }))
        ));
    }

    #[test]
    fn hash_list_must_be_whole_hashes() {
        let m = shaped(1, CHUNK, 1);
        let mut bytes = m.to_bytes();
        // The hash list is `58 20 <32 bytes>`: claim 31 bytes instead and drop one.
        let pos = bytes
            .windows(34)
            .position(|w| w[0] == 0x58 && w[1] == 0x20 && w[2..] == [7; 32])
            .unwrap();
        bytes[pos + 1] = 31;
        bytes.remove(pos + 2);
        assert!(matches!(
            FileManifest::from_bytes(&bytes),
            Err(FileError::Malformed(_))
        ));
    }

    #[test]
    fn file_id_text_round_trip() {
        let id = FileId::random(&mut rng(30));
        let s = id.to_string();
        assert_eq!(s.len(), 32);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(s.parse::<FileId>(), Ok(id));
        assert_eq!(s.to_uppercase().parse::<FileId>(), Ok(id));
        assert_eq!(format!("{id:?}"), format!("FileId({s})"));
        let fixed = FileId::from_bytes([0xab; 16]);
        assert_eq!(fixed.to_string(), "ab".repeat(16));
        for bad in [
            "",
            "ab",
            &"g".repeat(32),
            &"a".repeat(33),
            &"é".repeat(16),
            " 0".repeat(16).as_str(),
        ] {
            assert!(bad.parse::<FileId>().is_err(), "{bad:?}");
        }
        // Serde: a 16-byte CBOR byte string.
        let cbor = codec::encode(&fixed).unwrap();
        assert_eq!(cbor[0], 0x50);
        assert_eq!(codec::decode::<FileId>(&cbor, 64).unwrap(), fixed);
        assert!(
            codec::decode::<FileId>(&codec::encode(&ByteBuf::from(vec![1; 15])).unwrap(), 64)
                .is_err()
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let key = FileKey::from_bytes([0x42; 32]);
        assert_eq!(format!("{key:?}"), "FileKey(..)");
        let sent = send(&plaintext(10, 13), 22);
        let dbg = format!("{:?}", sent.manifest);
        assert!(dbg.contains("chunks: 1"));
        let b = ManifestBuilder::new(
            &mut rng(1),
            bob().public(),
            FileId::from_bytes([1; 16]),
            1,
            CHUNK,
            "a",
            "b",
        )
        .unwrap();
        assert!(!format!("{b:?}").contains("key"));
    }

    fn small_manifest_bytes() -> &'static [u8] {
        use std::sync::OnceLock;
        static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
        BYTES.get_or_init(|| send(&plaintext(5000, 14), 23).manifest.to_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = FileManifest::from_bytes(&bytes);
        }

        #[test]
        fn edited_manifests_never_panic_and_never_verify(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let original = small_manifest_bytes();
            let mut bytes = original.to_vec();
            for (pos, value) in edits {
                let pos = pos % bytes.len();
                bytes[pos] = value;
            }
            if let Ok(m) = FileManifest::from_bytes(&bytes) {
                let verified = m.verify(alice().public());
                prop_assert!(verified.is_err() || bytes == original);
                for index in 0..3 {
                    let _ = verify_chunk(&m, index, &[0; 4112]);
                }
            }
        }

        #[test]
        fn arbitrary_small_files_round_trip(
            data in proptest::collection::vec(any::<u8>(), 0..(3 * CHUNK as usize + 100)),
            seed in any::<u64>(),
        ) {
            let sent = send(&data, seed);
            let got = receive(&sent.manifest.to_bytes(), alice().public(), bob(), &sent.chunks);
            prop_assert_eq!(got, data);
        }
    }
}
