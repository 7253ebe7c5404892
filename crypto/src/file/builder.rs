//! The sender's side: a manifest built while the file is sealed chunk by chunk, its metadata
//! checked and sealed, its key wrapped for the recipient.

use super::*;

pub(super) fn validate_file_name(name: &str) -> Result<(), FileError> {
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

pub(super) fn validate_media_type(media_type: &str) -> Result<(), FileError> {
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

pub(super) fn seal_meta(
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

pub(super) fn wrap_key<R: CryptoRng + ?Sized>(
    key: &FileKey,
    recipient: &PublicIdentity,
    rng: &mut R,
) -> Result<Vec<u8>, FileError> {
    recipient
        .rsa_encrypt(rng, key.as_bytes())
        .map_err(|e| FileError::KeyWrap(e.to_string()))
}
