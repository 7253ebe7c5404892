//! The signed [`FileManifest`]: its checks, encoding and signature, and what a recipient (unwrap
//! the key, open the metadata) and a sender (re-seal, forward) do with it.

use super::*;

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

    pub(super) fn signed_bytes(&self) -> Vec<u8> {
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
