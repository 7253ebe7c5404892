//! Sealing, checking and opening one chunk: the per-chunk primitives that senders, relays and
//! recipients share.

use zeroize::Zeroizing;

use super::*;
use crate::aead;

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
