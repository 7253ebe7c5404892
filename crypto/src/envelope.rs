//! Message envelopes: what one node sends another for every chat message.
//!
//! Two ciphers, chosen per chat:
//!
//! - **`aes`**: a session key (AES-256) is wrapped once with the recipient's RSA key
//!   (OAEP-SHA256) and named by a [`KeyId`]. Each message is AES-256-GCM under that key with a
//!   fresh random nonce. The wrapped key rides along in every envelope until the sender sees an
//!   acknowledgement ([`OutboundSession::mark_acknowledged`]), so a lost or reordered first
//!   message never strands the rest; the receiver unwraps it once and caches it in
//!   [`InboundSessions`]. RSA work is per session, not per message. Sessions rotate by count
//!   and age ([`RotationPolicy`]) and, by the node, on every cipher switch.
//! - **`rsa`**: the body is RSA-OAEP-SHA256 encrypted directly, block by block. Slow by nature
//!   (one private-key operation per block on the receiver), so its bodies are capped at
//!   [`MAX_RSA_BODY_LEN`].
//!
//! Every envelope is signed with the sender's Ed25519 key. Its canonical encoding (sender,
//! recipient, message id, timestamp, cipher, key id, wrapped key, nonce and ciphertext) is a
//! leaf of a Merkle tree over the envelopes the sender signs together, and the signature
//! covers the tree's root, its size and the sender ([`sign_batch`]; format version 2). Each
//! envelope carries the signature and its path to the root ([`BatchProof`]), so it is checked
//! alone, from its own bytes; envelopes sent together cost the sender one signature and the
//! receiver one check. Version 1 envelopes, signed one by one over that encoding itself, are
//! still opened.
//!
//! [`open`] checks, in this order: structure, sender = the pinned key, **signature**,
//! recipient = us, timestamp window, replay; only then does it do any RSA or AES work. So no
//! one who cannot sign as the contact can make a node decrypt anything (no decryption oracle).
//! A receiver with many envelopes from one sender can split that in two: [`verify_many`] does
//! the checks up to the signature for all of them at once (one batch verification, on any
//! thread), and [`open_verified`] the rest for each, in the same order.
//! Every failure is one opaque [`OpenError`] ("message rejected"); the precise
//! [`RejectReason`] is available to logs and tests through [`OpenError::reason`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::aead::{self, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::canonical::Canonical;
use crate::codec;
use crate::identity::{ED25519_LEN, Identity, PublicIdentity, SIGNATURE_LEN};
use crate::merkle;

/// Largest plaintext body of an `aes` message.
pub const MAX_BODY_LEN: usize = 64 * 1024;
/// Largest plaintext body of an `rsa` message (each block costs the receiver one RSA
/// private-key operation).
pub const MAX_RSA_BODY_LEN: usize = 8 * 1024;
/// Largest encoded envelope accepted from the network.
pub const MAX_ENVELOPE_LEN: usize = 96 * 1024;
/// Largest RSA ciphertext block (4096-bit keys).
const MAX_RSA_BLOCK: usize = 512;

/// The cipher a message (or a chat) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Cipher {
    /// AES-256-GCM under an RSA-wrapped session key.
    #[default]
    Aes,
    /// RSA-OAEP-SHA256 directly, block by block.
    Rsa,
}

impl Cipher {
    /// The code used in canonical (signed) encodings.
    pub(crate) fn code(self) -> u8 {
        match self {
            Cipher::Aes => 1,
            Cipher::Rsa => 2,
        }
    }

    /// `"aes"` or `"rsa"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cipher::Aes => "aes",
            Cipher::Rsa => "rsa",
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Cipher {
    type Err = UnknownCipher;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "aes" => Ok(Cipher::Aes),
            "rsa" => Ok(Cipher::Rsa),
            _ => Err(UnknownCipher(s.to_owned())),
        }
    }
}

/// A cipher name that is neither `aes` nor `rsa`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cipher {0:?}: expected \"aes\" or \"rsa\"")]
pub struct UnknownCipher(pub String);

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(#[serde(with = "serde_bytes")] pub [u8; 16]);

        impl $name {
            /// A fresh random id.
            pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
                let mut id = [0u8; 16];
                rng.fill_bytes(&mut id);
                $name(id)
            }
        }

        impl fmt::Display for $name {
            /// 32 lowercase hex digits.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let s = s.as_bytes();
                if s.len() != 32 {
                    return Err(InvalidId);
                }
                let mut id = [0u8; 16];
                for (i, pair) in s.chunks_exact(2).enumerate() {
                    let hi = (pair[0] as char).to_digit(16).ok_or(InvalidId)?;
                    let lo = (pair[1] as char).to_digit(16).ok_or(InvalidId)?;
                    id[i] = (hi * 16 + lo) as u8;
                }
                Ok($name(id))
            }
        }
    };
}

id_type!(
    /// A message id: 16 random bytes chosen by the sender; receivers de-duplicate by it.
    MessageId
);
id_type!(
    /// Names an `aes` session key: the first 16 bytes of SHA-256 over the key, so a receiver
    /// can check that a wrapped key is the one the id promises.
    KeyId
);

/// A string that is not 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an id: expected 32 hexadecimal digits")]
pub struct InvalidId;

/// When an outbound `aes` session is replaced by a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicy {
    /// Rotate after this many messages.
    pub max_messages: u64,
    /// Rotate when the session is this old (milliseconds).
    pub max_age_ms: u64,
}

impl Default for RotationPolicy {
    /// 1,000 messages or 24 hours, whichever comes first.
    fn default() -> Self {
        RotationPolicy {
            max_messages: 1_000,
            max_age_ms: 24 * 60 * 60 * 1000,
        }
    }
}

/// What a receiver accepts, beyond signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenPolicy {
    /// Reject timestamps more than this far in the future (clock skew allowance), ms.
    pub max_future_skew_ms: u64,
    /// Reject timestamps older than this, ms; `None` accepts any age. Replay protection then
    /// rests on the receiver keeping seen message ids for at least this long.
    pub max_age_ms: Option<u64>,
}

impl Default for OpenPolicy {
    /// Ten minutes of skew; messages up to 90 days old (a sender's outbox may hold a message
    /// that long while the recipient is offline).
    fn default() -> Self {
        OpenPolicy {
            max_future_skew_ms: 10 * 60 * 1000,
            max_age_ms: Some(90 * 24 * 60 * 60 * 1000),
        }
    }
}

/// Tells [`open`] whether a message id from a sender was already accepted.
pub trait ReplayGuard {
    /// `true` if `(sender, id)` was accepted before.
    fn is_seen(&self, sender: &[u8; ED25519_LEN], id: &MessageId) -> bool;
}

impl<F: Fn(&[u8; ED25519_LEN], &MessageId) -> bool> ReplayGuard for F {
    fn is_seen(&self, sender: &[u8; ED25519_LEN], id: &MessageId) -> bool {
        self(sender, id)
    }
}

/// A sealed message as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version, [`Envelope::VERSION`].
    pub version: u8,
    /// Sender's Ed25519 public key.
    #[serde(with = "serde_bytes")]
    pub sender: [u8; ED25519_LEN],
    /// Recipient's Ed25519 public key.
    #[serde(with = "serde_bytes")]
    pub recipient: [u8; ED25519_LEN],
    /// Message id.
    pub id: MessageId,
    /// Sender's clock when sealed, Unix milliseconds.
    pub timestamp: u64,
    /// Cipher of the body.
    pub cipher: Cipher,
    /// `aes`: the session key's id.
    pub key_id: Option<KeyId>,
    /// `aes`: the session key wrapped for the recipient (until the session is acknowledged).
    pub wrapped_key: Option<serde_bytes::ByteBuf>,
    /// `aes`: the AES-GCM nonce.
    pub nonce: Option<serde_bytes::ByteArray<NONCE_LEN>>,
    /// Ciphertext.
    pub body: serde_bytes::ByteBuf,
    /// Version 2: the sender's Ed25519 signature over the root of the batch `proof` places
    /// this envelope in ([`sign_batch`]). Version 1: over this envelope's canonical encoding.
    #[serde(with = "serde_bytes")]
    pub signature: [u8; SIGNATURE_LEN],
    /// Version 2: where this envelope sits among those signed with it. Absent in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<BatchProof>,
}

/// An envelope's place in the batch of envelopes its sender signed with one signature: enough
/// to check the signature from this envelope alone (a Merkle inclusion path, [`merkle`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchProof {
    /// How many envelopes were signed together, 1 to [`MAX_SIGNED_BATCH`].
    pub count: u16,
    /// This envelope's position among them.
    pub index: u16,
    /// The sibling hashes from this envelope's leaf up to the root.
    pub path: Vec<serde_bytes::ByteArray<32>>,
}

/// Most envelopes [`sign_batch`] covers with one signature; it splits larger sets.
pub const MAX_SIGNED_BATCH: usize = merkle::MAX_LEAVES;

/// Upper bound on how many bytes a [`BatchProof`] adds to an envelope's encoding: its key in
/// the envelope's map, its own map header and three keys, the count and index (3 bytes each at
/// most), an array header (3 at most) and [`merkle::MAX_PATH_LEN`] hashes of 2 + 32 bytes.
pub const MAX_PROOF_LEN: usize = 1 + 1 + 3 + 3 + 3 + 3 + merkle::MAX_PATH_LEN * 34;
const _: () = assert!(MAX_SIGNED_BATCH <= u16::MAX as usize);

/// Upper bound on an envelope's encoding without its body, wrapped key and proof: a map
/// header and 11 keys, the version, two keys of 2 + 32 bytes, a message id and key id of
/// 1 + 16, the timestamp (9), the cipher's name (4), a nonce of 1 + 12, the length headers of
/// the wrapped key and body (9 each) and a signature of 2 + 64; rounded up.
const ENVELOPE_FIXED_MAX: usize = 256;

impl Envelope {
    /// The envelope format [`seal_aes`], [`seal_rsa`] and [`sign_batch`] write: signed in
    /// batches.
    pub const VERSION: u8 = 2;
    /// The first format, signed one by one; still opened, no longer written.
    pub const VERSION_SIGNED_ALONE: u8 = 1;

    /// Encodes as CBOR.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self).expect("an envelope always encodes")
    }

    /// Decodes and checks the structure (not the signature: that needs the pinned key).
    ///
    /// # Errors
    /// [`OpenError`] with reason [`RejectReason::TooLarge`] or [`RejectReason::Malformed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OpenError> {
        let env: Envelope =
            codec::decode_canonical(bytes, MAX_ENVELOPE_LEN).map_err(|e| match e {
                codec::CodecError::TooLarge { .. } => OpenError(RejectReason::TooLarge),
                _ => OpenError(RejectReason::Malformed("not an envelope")),
            })?;
        env.check_structure()?;
        Ok(env)
    }

    /// The sender's PeerId, if the sender field is a valid key.
    pub fn sender_peer_id(&self) -> Option<crate::PeerId> {
        crate::identity::peer_id_of(&self.sender)
    }

    fn check_structure(&self) -> Result<(), OpenError> {
        let bad = |why| Err(OpenError(RejectReason::Malformed(why)));
        match (self.version, &self.proof) {
            (Self::VERSION_SIGNED_ALONE, None) => {}
            (Self::VERSION_SIGNED_ALONE, Some(_)) => {
                return bad("batch proof in a version 1 envelope");
            }
            (Self::VERSION, None) => return bad("version 2 envelope without a batch proof"),
            (Self::VERSION, Some(proof)) => {
                if proof.count == 0
                    || usize::from(proof.count) > MAX_SIGNED_BATCH
                    || proof.index >= proof.count
                    || proof.path.len() > merkle::MAX_PATH_LEN
                {
                    return bad("batch proof of impossible shape");
                }
            }
            (version, _) => return Err(OpenError(RejectReason::UnsupportedVersion(version))),
        }
        match self.cipher {
            Cipher::Aes => {
                if self.key_id.is_none() || self.nonce.is_none() {
                    return bad("aes envelope without key id or nonce");
                }
                if self
                    .wrapped_key
                    .as_ref()
                    .is_some_and(|w| w.is_empty() || w.len() > MAX_RSA_BLOCK)
                {
                    return bad("wrapped key of impossible length");
                }
                if self.body.len() < TAG_LEN || self.body.len() > MAX_BODY_LEN + TAG_LEN {
                    return bad("aes body of impossible length");
                }
            }
            Cipher::Rsa => {
                if self.key_id.is_some() || self.wrapped_key.is_some() || self.nonce.is_some() {
                    return bad("rsa envelope with session fields");
                }
                if self.body.is_empty() || self.body.len() > MAX_ENVELOPE_LEN {
                    return bad("rsa body of impossible length");
                }
            }
        }
        Ok(())
    }

    /// What the signature is over: for version 2 the batch's root (from this envelope's leaf
    /// and path), for version 1 the envelope's own canonical encoding. `None` when the path
    /// cannot belong to a batch of the stated size.
    fn signed_statement(&self) -> Option<Vec<u8>> {
        let Some(proof) = &self.proof else {
            return Some(self.signed_bytes());
        };
        let path: Vec<merkle::Hash> = proof.path.iter().map(|h| h.into_array()).collect();
        let root = merkle::root_from_path(
            &merkle::leaf_hash(&self.signed_bytes()),
            usize::from(proof.index),
            usize::from(proof.count),
            &path,
        )?;
        Some(batch_statement(&self.sender, proof.count, &root))
    }

    /// The canonical encoding of everything but the signature and proof: a version 1
    /// envelope's signed bytes, a version 2 envelope's Merkle leaf.
    fn signed_bytes(&self) -> Vec<u8> {
        Canonical::new(b"encrypto/envelope/v1")
            .u8(self.version)
            .fixed(&self.sender)
            .fixed(&self.recipient)
            .fixed(&self.id.0)
            .u64(self.timestamp)
            .u8(self.cipher.code())
            .opt_bytes(self.key_id.as_ref().map(|k| &k.0[..]))
            .opt_bytes(self.wrapped_key.as_deref().map(|w| &w[..]))
            .opt_bytes(self.nonce.as_ref().map(|n| &n[..]))
            .bytes(&self.body)
            .finish()
    }
}

/// What a batch's one signature covers: its sender, its size and its Merkle root.
fn batch_statement(sender: &[u8; ED25519_LEN], count: u16, root: &merkle::Hash) -> Vec<u8> {
    Canonical::new(b"encrypto/envelope-batch/v1")
        .fixed(sender)
        .u32(u32::from(count))
        .fixed(root)
        .finish()
}

/// Associated data for the AES-GCM body: binds the ciphertext to its header.
fn body_aad(
    version: u8,
    sender: &[u8; ED25519_LEN],
    recipient: &[u8; ED25519_LEN],
    id: &MessageId,
    timestamp: u64,
    key_id: &KeyId,
) -> Vec<u8> {
    Canonical::new(b"encrypto/envelope-body/v1")
        .u8(version)
        .fixed(sender)
        .fixed(recipient)
        .fixed(&id.0)
        .u64(timestamp)
        .fixed(&key_id.0)
        .finish()
}

fn key_id_of(key: &[u8; KEY_LEN]) -> KeyId {
    let mut h = Sha256::new();
    h.update(b"encrypto/key-id/v1\0");
    h.update(key);
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    KeyId(id)
}

/// Why a message could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The body is over the cipher's limit.
    #[error("message of {len} bytes is over the {max}-byte limit for this cipher")]
    TooLarge {
        /// Body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The session belongs to another recipient.
    #[error("the session was made for another recipient")]
    SessionMismatch,
    /// The session has sealed `u64::MAX` messages (cannot happen with any rotation policy).
    #[error("the session is exhausted")]
    SessionExhausted,
    /// RSA encryption failed.
    #[error("RSA encryption failed: {0}")]
    Rsa(String),
}

/// The sender's side of an `aes` session with one recipient.
pub struct OutboundSession {
    key: Zeroizing<[u8; KEY_LEN]>,
    key_id: KeyId,
    recipient: [u8; ED25519_LEN],
    wrapped: Vec<u8>,
    created_ms: u64,
    sealed: u64,
    acknowledged: bool,
}

impl fmt::Debug for OutboundSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundSession")
            .field("key_id", &self.key_id)
            .field("created_ms", &self.created_ms)
            .field("sealed", &self.sealed)
            .field("acknowledged", &self.acknowledged)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct SessionState {
    #[serde(with = "serde_bytes")]
    key: [u8; KEY_LEN],
    #[serde(with = "serde_bytes")]
    recipient: [u8; ED25519_LEN],
    wrapped: serde_bytes::ByteBuf,
    created_ms: u64,
    sealed: u64,
    acknowledged: bool,
}

impl Drop for SessionState {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl OutboundSession {
    /// Starts a session: a fresh key, wrapped for `recipient` (one RSA public-key operation).
    ///
    /// # Errors
    /// [`SealError::Rsa`] if RSA encryption fails.
    pub fn new<R: CryptoRng + ?Sized>(
        rng: &mut R,
        recipient: &PublicIdentity,
        now_ms: u64,
    ) -> Result<Self, SealError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(&mut key[..]);
        let wrapped = recipient
            .rsa_encrypt(rng, &key[..])
            .map_err(|e| SealError::Rsa(e.to_string()))?;
        Ok(OutboundSession {
            key_id: key_id_of(&key),
            key,
            recipient: recipient.ed25519_bytes(),
            wrapped,
            created_ms: now_ms,
            sealed: 0,
            acknowledged: false,
        })
    }

    /// The session key's id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Messages sealed so far.
    pub fn messages_sealed(&self) -> u64 {
        self.sealed
    }

    /// `true` when the policy says to start a new session before the next message.
    pub fn needs_rotation(&self, policy: &RotationPolicy, now_ms: u64) -> bool {
        self.sealed >= policy.max_messages
            || now_ms.saturating_sub(self.created_ms) >= policy.max_age_ms
    }

    /// Records that the recipient acknowledged a message of this session, so it holds the key
    /// and later envelopes can leave the wrapped key out.
    pub fn mark_acknowledged(&mut self) {
        self.acknowledged = true;
    }

    /// Whether [`Self::mark_acknowledged`] was called.
    pub fn is_acknowledged(&self) -> bool {
        self.acknowledged
    }

    /// Serialises the session (including its key) so the node can keep it sealed at rest with
    /// the storage key. Never write these bytes to disk unsealed.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let state = SessionState {
            key: *self.key,
            recipient: self.recipient,
            wrapped: serde_bytes::ByteBuf::from(self.wrapped.clone()),
            created_ms: self.created_ms,
            sealed: self.sealed,
            acknowledged: self.acknowledged,
        };
        Zeroizing::new(codec::encode(&state).expect("session state always encodes"))
    }

    /// Restores a session saved with [`Self::to_secret_bytes`].
    ///
    /// # Errors
    /// [`codec::CodecError`] if the bytes are not a saved session.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, codec::CodecError> {
        let state: SessionState = codec::decode(bytes, 4096)?;
        if state.wrapped.is_empty() || state.wrapped.len() > MAX_RSA_BLOCK {
            return Err(codec::CodecError::Malformed(
                "bad wrapped key length".into(),
            ));
        }
        let key = Zeroizing::new(state.key);
        Ok(OutboundSession {
            key_id: key_id_of(&key),
            key,
            recipient: state.recipient,
            wrapped: state.wrapped.to_vec(),
            created_ms: state.created_ms,
            sealed: state.sealed,
            acknowledged: state.acknowledged,
        })
    }
}

/// Seals `plaintext` for `recipient` with cipher `aes` in `session`.
///
/// The caller picks the message id (random, or the id of an outbox entry being re-sealed) and
/// rotates the session when [`OutboundSession::needs_rotation`] says so.
///
/// # Errors
/// [`SealError::TooLarge`] over [`MAX_BODY_LEN`]; [`SealError::SessionMismatch`] if the session
/// was made for someone else.
pub fn seal_aes<R: CryptoRng + ?Sized>(
    sender: &Identity,
    recipient: &PublicIdentity,
    session: &mut OutboundSession,
    id: MessageId,
    now_ms: u64,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Envelope, SealError> {
    let unsigned = seal_aes_unsigned(sender, recipient, session, id, now_ms, plaintext, rng)?;
    Ok(sign_one(sender, unsigned))
}

/// [`seal_aes`] without the signature: for [`sign_batch`], which signs many at once.
///
/// # Errors
/// As [`seal_aes`].
pub fn seal_aes_unsigned<R: CryptoRng + ?Sized>(
    sender: &Identity,
    recipient: &PublicIdentity,
    session: &mut OutboundSession,
    id: MessageId,
    now_ms: u64,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<UnsignedEnvelope, SealError> {
    if plaintext.len() > MAX_BODY_LEN {
        return Err(SealError::TooLarge {
            len: plaintext.len(),
            max: MAX_BODY_LEN,
        });
    }
    if session.recipient != recipient.ed25519_bytes() {
        return Err(SealError::SessionMismatch);
    }
    let sealed = session
        .sealed
        .checked_add(1)
        .ok_or(SealError::SessionExhausted)?;
    let sender_key = sender.public().ed25519_bytes();
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let aad = body_aad(
        Envelope::VERSION,
        &sender_key,
        &session.recipient,
        &id,
        now_ms,
        &session.key_id,
    );
    let body = aead::seal(&session.key, &nonce, &aad, plaintext);
    let env = Envelope {
        version: Envelope::VERSION,
        sender: sender_key,
        recipient: session.recipient,
        id,
        timestamp: now_ms,
        cipher: Cipher::Aes,
        key_id: Some(session.key_id),
        wrapped_key: (!session.acknowledged)
            .then(|| serde_bytes::ByteBuf::from(session.wrapped.clone())),
        nonce: Some(serde_bytes::ByteArray::new(nonce)),
        body: serde_bytes::ByteBuf::from(body),
        signature: [0; SIGNATURE_LEN],
        proof: None,
    };
    session.sealed = sealed;
    Ok(UnsignedEnvelope(env))
}

/// Seals `plaintext` for `recipient` with cipher `rsa`: RSA-OAEP-SHA256 block by block.
///
/// # Errors
/// [`SealError::TooLarge`] over [`MAX_RSA_BODY_LEN`]; [`SealError::Rsa`] if RSA fails.
pub fn seal_rsa<R: CryptoRng + ?Sized>(
    sender: &Identity,
    recipient: &PublicIdentity,
    id: MessageId,
    now_ms: u64,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Envelope, SealError> {
    let unsigned = seal_rsa_unsigned(sender, recipient, id, now_ms, plaintext, rng)?;
    Ok(sign_one(sender, unsigned))
}

/// [`seal_rsa`] without the signature: for [`sign_batch`], which signs many at once.
///
/// # Errors
/// As [`seal_rsa`].
pub fn seal_rsa_unsigned<R: CryptoRng + ?Sized>(
    sender: &Identity,
    recipient: &PublicIdentity,
    id: MessageId,
    now_ms: u64,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<UnsignedEnvelope, SealError> {
    if plaintext.len() > MAX_RSA_BODY_LEN {
        return Err(SealError::TooLarge {
            len: plaintext.len(),
            max: MAX_RSA_BODY_LEN,
        });
    }
    let per_block = recipient.rsa_max_plaintext();
    let mut body = Vec::with_capacity(plaintext.len().div_ceil(per_block).max(1) * 512);
    // An empty body is still one (empty) block, so every rsa envelope has ciphertext.
    let blocks: Vec<&[u8]> = if plaintext.is_empty() {
        vec![&[][..]]
    } else {
        plaintext.chunks(per_block).collect()
    };
    for block in blocks {
        let ct = recipient
            .rsa_encrypt(rng, block)
            .map_err(|e| SealError::Rsa(e.to_string()))?;
        body.extend_from_slice(&ct);
    }
    let env = Envelope {
        version: Envelope::VERSION,
        sender: sender.public().ed25519_bytes(),
        recipient: recipient.ed25519_bytes(),
        id,
        timestamp: now_ms,
        cipher: Cipher::Rsa,
        key_id: None,
        wrapped_key: None,
        nonce: None,
        body: serde_bytes::ByteBuf::from(body),
        signature: [0; SIGNATURE_LEN],
        proof: None,
    };
    Ok(UnsignedEnvelope(env))
}

/// A sealed envelope that still lacks its signature ([`seal_aes_unsigned`],
/// [`seal_rsa_unsigned`]); [`sign_batch`] signs it.
#[derive(Debug, Clone)]
pub struct UnsignedEnvelope(Envelope);

impl UnsignedEnvelope {
    /// An upper bound on the length of the signed envelope's encoding, whatever batch it is
    /// signed in; computed from its variable-length fields, without encoding it.
    pub fn max_signed_len(&self) -> usize {
        let env = &self.0;
        ENVELOPE_FIXED_MAX
            + env.body.len()
            + env.wrapped_key.as_ref().map_or(0, |w| w.len())
            + MAX_PROOF_LEN
    }
}

fn sign_one(sender: &Identity, unsigned: UnsignedEnvelope) -> Envelope {
    let mut signed = sign_batch(sender, vec![unsigned]);
    signed.pop().expect("one envelope in, one out")
}

/// Signs envelopes `sender` sealed with one Ed25519 signature per [`MAX_SIGNED_BATCH`] of
/// them: over the root of a Merkle tree ([`merkle`]) whose leaves are the envelopes' canonical
/// encodings. Each envelope gets the signature and its own inclusion path ([`BatchProof`]), so
/// it is checked alone, by anyone holding the sender's key, as if it had been signed alone;
/// a receiver with several from one batch checks the signature once ([`verify_many`]).
/// Returns them in order.
///
/// `sender` must be the identity that sealed them: another one's signature does not verify.
pub fn sign_batch(sender: &Identity, unsigned: Vec<UnsignedEnvelope>) -> Vec<Envelope> {
    let mut signed = Vec::with_capacity(unsigned.len());
    let mut rest = unsigned.into_iter().map(|u| u.0).peekable();
    while rest.peek().is_some() {
        let mut batch: Vec<Envelope> = rest.by_ref().take(MAX_SIGNED_BATCH).collect();
        let leaves: Vec<merkle::Hash> = batch
            .iter()
            .map(|env| merkle::leaf_hash(&env.signed_bytes()))
            .collect();
        let (root, paths) = merkle::build(&leaves);
        let count = u16::try_from(batch.len()).expect("MAX_SIGNED_BATCH fits in u16");
        let signature = sender.sign(&batch_statement(
            &sender.public().ed25519_bytes(),
            count,
            &root,
        ));
        for ((index, env), path) in (0u16..).zip(batch.iter_mut()).zip(paths) {
            env.signature = signature;
            env.proof = Some(BatchProof {
                count,
                index,
                path: path.into_iter().map(serde_bytes::ByteArray::new).collect(),
            });
        }
        signed.append(&mut batch);
    }
    signed
}

/// The receiver's cache of unwrapped `aes` session keys, by sender and key id. Bounded: the
/// oldest entries are evicted first (an evicted key is unwrapped again if it is still in use
/// and its envelope still carries it).
pub struct InboundSessions {
    keys: HashMap<([u8; ED25519_LEN], KeyId), Zeroizing<[u8; KEY_LEN]>>,
    order: VecDeque<([u8; ED25519_LEN], KeyId)>,
    capacity: usize,
    /// Keys that a [`decrypt_ahead`] call is unwrapping now: another call leaves them to it.
    unwrapping: HashSet<([u8; ED25519_LEN], KeyId)>,
}

impl fmt::Debug for InboundSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundSessions")
            .field("len", &self.keys.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for InboundSessions {
    fn default() -> Self {
        Self::with_capacity(4096)
    }
}

impl InboundSessions {
    /// A cache holding at most `capacity` keys (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        InboundSessions {
            keys: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            unwrapping: HashSet::new(),
        }
    }

    /// Number of cached keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// `true` when no key is cached.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether the key `(sender, key_id)` is cached.
    pub fn contains(&self, sender: &[u8; ED25519_LEN], key_id: &KeyId) -> bool {
        self.keys.contains_key(&(*sender, *key_id))
    }

    /// Adds a key (for a node restoring keys it saved sealed) and returns its id.
    pub fn insert(&mut self, sender: [u8; ED25519_LEN], key: Zeroizing<[u8; KEY_LEN]>) -> KeyId {
        let id = key_id_of(&key);
        if self.keys.insert((sender, id), key).is_none() {
            self.order.push_back((sender, id));
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.keys.remove(&old);
                }
            }
        }
        id
    }

    /// The cached key, for a node saving it sealed.
    pub fn get(&self, sender: &[u8; ED25519_LEN], key_id: &KeyId) -> Option<&[u8; KEY_LEN]> {
        self.keys.get(&(*sender, *key_id)).map(|k| &**k)
    }
}

/// The precise reason an envelope or control payload was rejected. For logs and tests only:
/// never send it to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// Over the size limit.
    TooLarge,
    /// Not a valid encoding, or fields that contradict each other.
    Malformed(&'static str),
    /// A format version we do not speak.
    UnsupportedVersion(u8),
    /// The sender field is not the pinned key of the peer it came from.
    SenderMismatch,
    /// The signature does not verify.
    BadSignature,
    /// Addressed to someone else.
    WrongRecipient,
    /// Timestamp too far in the future.
    FromTheFuture,
    /// Timestamp older than the policy allows.
    TooOld,
    /// The message id was already accepted from this sender.
    Replayed,
    /// An `aes` message for a session key we do not hold, without the wrapped key.
    UnknownSessionKey,
    /// The unwrapped session key does not match its key id.
    KeyIdMismatch,
    /// Decryption failed (RSA or AES-GCM).
    Decryption,
}

/// An envelope or control payload was rejected. Displays only "message rejected"; the
/// [`RejectReason`] is for local logs and tests.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("message rejected")]
pub struct OpenError(pub(crate) RejectReason);

impl fmt::Debug for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpenError({:?})", self.0)
    }
}

impl OpenError {
    /// The precise reason, for logs and tests.
    pub fn reason(&self) -> RejectReason {
        self.0
    }
}

/// Everything [`open`] needs to know about the receiving side.
#[derive(Clone, Copy)]
pub struct OpenContext<'a> {
    /// The receiving identity.
    pub me: &'a Identity,
    /// The key pinned for the peer the envelope came from.
    pub sender: &'a PublicIdentity,
    /// The receiver's clock, Unix milliseconds.
    pub now_ms: u64,
    /// Time window.
    pub policy: OpenPolicy,
    /// Seen message ids.
    pub seen: &'a dyn ReplayGuard,
}

impl fmt::Debug for OpenContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenContext")
            .field("me", &self.me.peer_id())
            .field("sender", &self.sender.peer_id())
            .field("now_ms", &self.now_ms)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The checks every signed payload goes through before anything else is done with it:
/// sender = pinned, signature, recipient = us, time window, replay.
pub(crate) fn check_signed_header(
    ctx: &OpenContext<'_>,
    sender: &[u8; ED25519_LEN],
    recipient: &[u8; ED25519_LEN],
    id: &MessageId,
    timestamp: u64,
    signed: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), OpenError> {
    if *sender != ctx.sender.ed25519_bytes() {
        return Err(OpenError(RejectReason::SenderMismatch));
    }
    if !ctx.sender.verify(signed, signature) {
        return Err(OpenError(RejectReason::BadSignature));
    }
    check_verified_header(ctx, sender, recipient, id, timestamp)
}

/// The checks of [`check_signed_header`] that follow the signature's.
fn check_verified_header(
    ctx: &OpenContext<'_>,
    sender: &[u8; ED25519_LEN],
    recipient: &[u8; ED25519_LEN],
    id: &MessageId,
    timestamp: u64,
) -> Result<(), OpenError> {
    if *recipient != ctx.me.public().ed25519_bytes() {
        return Err(OpenError(RejectReason::WrongRecipient));
    }
    if timestamp > ctx.now_ms.saturating_add(ctx.policy.max_future_skew_ms) {
        return Err(OpenError(RejectReason::FromTheFuture));
    }
    if let Some(max_age) = ctx.policy.max_age_ms
        && ctx.now_ms.saturating_sub(timestamp) > max_age
    {
        return Err(OpenError(RejectReason::TooOld));
    }
    if ctx.seen.is_seen(sender, id) {
        return Err(OpenError(RejectReason::Replayed));
    }
    Ok(())
}

/// A verified, decrypted message.
pub struct Opened {
    /// Message id.
    pub id: MessageId,
    /// Sender's timestamp, Unix milliseconds.
    pub timestamp: u64,
    /// Cipher it was sent with.
    pub cipher: Cipher,
    /// `aes`: the session key id.
    pub key_id: Option<KeyId>,
    /// The plaintext body.
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("id", &self.id)
            .field("timestamp", &self.timestamp)
            .field("cipher", &self.cipher)
            .field("len", &self.plaintext.len())
            .finish_non_exhaustive()
    }
}

/// Verifies and decrypts an envelope. See the module docs for the order of checks: the
/// signature is verified before any RSA or AES work. The caller records the id as seen only
/// after the message is stored durably.
///
/// # Errors
/// [`OpenError`]; its [`reason`](OpenError::reason) says which check failed.
pub fn open<R: CryptoRng + ?Sized>(
    envelope: &Envelope,
    ctx: &OpenContext<'_>,
    sessions: &mut InboundSessions,
    rng: &mut R,
) -> Result<Opened, OpenError> {
    envelope.check_structure()?;
    let statement = envelope
        .signed_statement()
        .ok_or(OpenError(RejectReason::BadSignature))?;
    check_signed_header(
        ctx,
        &envelope.sender,
        &envelope.recipient,
        &envelope.id,
        envelope.timestamp,
        &statement,
        &envelope.signature,
    )?;
    decrypt(envelope, ctx, sessions, rng)
}

/// An envelope whose structure, sender and signature have been checked against a sender's
/// key by [`verify_many`]; [`open_verified`] does the rest of [`open`]. It may also carry the
/// outcome of its RSA work, done ahead by [`decrypt_ahead`].
#[derive(Debug, Clone)]
pub struct Verified {
    envelope: Envelope,
    ahead: Ahead,
}

/// The RSA private-key work of opening an envelope, when [`decrypt_ahead`] did it.
#[derive(Clone)]
enum Ahead {
    /// Nothing done ahead (or nothing to do: an `aes` key already cached).
    Nothing,
    /// An `rsa` body, decrypted.
    Body(Zeroizing<Vec<u8>>),
    /// The RSA work failed: the envelope is rejected for this reason.
    Failed(RejectReason),
}

impl fmt::Debug for Ahead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ahead::Nothing => f.write_str("Nothing"),
            Ahead::Body(body) => write!(f, "Body({} bytes)", body.len()),
            Ahead::Failed(reason) => write!(f, "Failed({reason:?})"),
        }
    }
}

impl Verified {
    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
}

impl Envelope {
    /// Whether opening this envelope takes an RSA private-key operation (about 10 ms with
    /// RSA-3072): an `rsa` body, or an `aes` session key that `sessions` does not hold yet and
    /// that the envelope brings wrapped.
    pub fn needs_private_key(&self, sessions: &InboundSessions) -> bool {
        match self.cipher {
            Cipher::Rsa => true,
            Cipher::Aes => {
                self.wrapped_key.is_some()
                    && self
                        .key_id
                        .is_some_and(|key_id| !sessions.contains(&self.sender, &key_id))
            }
        }
    }
}

/// Does the RSA private-key work of opening `verified` ahead, on the thread that checked
/// their signatures ([`verify_many`]), so that the thread which opens them ([`open_verified`])
/// does not stop for it: an `aes` session key not cached yet is unwrapped, checked against its
/// key id and added to `sessions` (each distinct key once, even across threads), and an `rsa`
/// body is decrypted into its [`Verified`]. An envelope addressed to another identity than
/// `me` is left alone (opening rejects it without any RSA work). A failure is recorded in the
/// envelope, and [`open_verified`] rejects it for that reason after its own checks.
///
/// The lock on `sessions` is never held during an RSA operation. A key that another call is
/// unwrapping at the same time is left to it (the envelope carries nothing ahead): after a
/// key rotation several batches in flight bring the same new key, and unwrapping it once per
/// batch would take every core for the length of an RSA decryption. Opening such an envelope
/// finds the key cached once the other call is done, provided it is opened after the
/// envelopes of that call, as the node opens batches in the order they came.
pub fn decrypt_ahead<'a, R: CryptoRng + ?Sized>(
    verified: impl IntoIterator<Item = &'a mut Verified>,
    me: &Identity,
    sessions: &Mutex<InboundSessions>,
    rng: &mut R,
) {
    let lock = || sessions.lock().unwrap_or_else(PoisonError::into_inner);
    let mine = me.public().ed25519_bytes();
    // Wrapped keys (with the key id they claim to be) that did not unwrap in this call, so
    // that a batch repeating one costs one RSA operation, not one per envelope.
    let mut failed: HashMap<(Vec<u8>, KeyId), RejectReason> = HashMap::new();
    for v in verified {
        let env = &v.envelope;
        if env.recipient != mine {
            continue;
        }
        v.ahead = match env.cipher {
            Cipher::Rsa => match open_rsa(env, me, rng) {
                Ok(body) => Ahead::Body(body),
                Err(e) => Ahead::Failed(e.0),
            },
            Cipher::Aes => {
                let (Some(key_id), Some(wrapped)) = (env.key_id, env.wrapped_key.as_ref()) else {
                    continue;
                };
                let tried = || (wrapped.to_vec(), key_id);
                let known_bad = if failed.is_empty() {
                    None
                } else {
                    failed.get(&tried()).copied()
                };
                if let Some(reason) = known_bad {
                    Ahead::Failed(reason)
                } else {
                    {
                        let mut sessions = lock();
                        if sessions.contains(&env.sender, &key_id)
                            || !sessions.unwrapping.insert((env.sender, key_id))
                        {
                            continue;
                        }
                    }
                    let unwrapped = unwrap_session_key(me, &key_id, wrapped, rng);
                    let mut sessions = lock();
                    sessions.unwrapping.remove(&(env.sender, key_id));
                    match unwrapped {
                        Ok(key) => {
                            sessions.insert(env.sender, key);
                            Ahead::Nothing
                        }
                        Err(e) => {
                            failed.insert(tried(), e.0);
                            Ahead::Failed(e.0)
                        }
                    }
                }
            }
        };
    }
}

/// The first checks of [`open`] (structure, sender = `sender`, signature) for many envelopes
/// from one sender. Envelopes signed together ([`sign_batch`]) share one signature, checked
/// once; the distinct signatures are checked in one Ed25519 batch verification (about half
/// the work of checking them one by one), and when that fails, one by one, so that only the
/// envelopes under a bad one are rejected. Meant for a thread other than the one that opens
/// them: this is the part of opening that costs.
///
/// A batch verification accepts exactly the signatures made with `sender`'s key, as checking
/// them one by one (strictly) does; the two can differ only on a signature its key holder
/// crafted to differ (a nonce point of small order), so only on what that sender itself sent.
pub fn verify_many(
    envelopes: Vec<Envelope>,
    sender: &PublicIdentity,
) -> Vec<Result<Verified, OpenError>> {
    let expected = sender.ed25519_bytes();
    // Each envelope that passes the structural checks, with the index of its (statement,
    // signature) among the distinct ones.
    let mut distinct: Vec<(Vec<u8>, [u8; SIGNATURE_LEN])> = Vec::new();
    let mut index_of: HashMap<(Vec<u8>, [u8; SIGNATURE_LEN]), usize> = HashMap::new();
    let checked: Vec<Result<(Envelope, usize), OpenError>> = envelopes
        .into_iter()
        .map(|env| {
            // In the order `open` checks them, so that both give the same reason.
            env.check_structure()?;
            let statement = env
                .signed_statement()
                .ok_or(OpenError(RejectReason::BadSignature))?;
            if env.sender != expected {
                return Err(OpenError(RejectReason::SenderMismatch));
            }
            let key = (statement, env.signature);
            let at = *index_of.entry(key).or_insert_with_key(|key| {
                distinct.push(key.clone());
                distinct.len() - 1
            });
            Ok((env, at))
        })
        .collect();
    let all_good = distinct.len() > 1 && sender.verify_batch(&distinct);
    let good: Vec<bool> = distinct
        .iter()
        .map(|(statement, signature)| all_good || sender.verify(statement, signature))
        .collect();
    checked
        .into_iter()
        .map(|checked| {
            let (env, at) = checked?;
            if good[at] {
                Ok(Verified {
                    envelope: env,
                    ahead: Ahead::Nothing,
                })
            } else {
                Err(OpenError(RejectReason::BadSignature))
            }
        })
        .collect()
}

/// [`open`] for an envelope [`verify_many`] checked: the remaining checks (sender = the pinned
/// key of `ctx`, recipient, time window, replay), then the decryption.
///
/// # Errors
/// As [`open`].
pub fn open_verified<R: CryptoRng + ?Sized>(
    verified: &Verified,
    ctx: &OpenContext<'_>,
    sessions: &mut InboundSessions,
    rng: &mut R,
) -> Result<Opened, OpenError> {
    let envelope = &verified.envelope;
    if envelope.sender != ctx.sender.ed25519_bytes() {
        return Err(OpenError(RejectReason::SenderMismatch));
    }
    check_verified_header(
        ctx,
        &envelope.sender,
        &envelope.recipient,
        &envelope.id,
        envelope.timestamp,
    )?;
    match &verified.ahead {
        Ahead::Nothing => decrypt(envelope, ctx, sessions, rng),
        Ahead::Failed(reason) => Err(OpenError(*reason)),
        Ahead::Body(body) => Ok(Opened {
            id: envelope.id,
            timestamp: envelope.timestamp,
            cipher: envelope.cipher,
            key_id: envelope.key_id,
            plaintext: body.clone(),
        }),
    }
}

fn decrypt<R: CryptoRng + ?Sized>(
    envelope: &Envelope,
    ctx: &OpenContext<'_>,
    sessions: &mut InboundSessions,
    rng: &mut R,
) -> Result<Opened, OpenError> {
    let plaintext = match envelope.cipher {
        Cipher::Aes => open_aes(envelope, ctx.me, sessions, rng)?,
        Cipher::Rsa => open_rsa(envelope, ctx.me, rng)?,
    };
    Ok(Opened {
        id: envelope.id,
        timestamp: envelope.timestamp,
        cipher: envelope.cipher,
        key_id: envelope.key_id,
        plaintext,
    })
}

fn open_aes<R: CryptoRng + ?Sized>(
    env: &Envelope,
    me: &Identity,
    sessions: &mut InboundSessions,
    rng: &mut R,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let (Some(key_id), Some(nonce)) = (env.key_id, env.nonce.as_ref()) else {
        return Err(OpenError(RejectReason::Malformed(
            "aes envelope without key id or nonce",
        )));
    };
    if !sessions.contains(&env.sender, &key_id) {
        let wrapped = env
            .wrapped_key
            .as_ref()
            .ok_or(OpenError(RejectReason::UnknownSessionKey))?;
        let key = unwrap_session_key(me, &key_id, wrapped, rng)?;
        sessions.insert(env.sender, key);
    }
    let key = sessions
        .get(&env.sender, &key_id)
        .ok_or(OpenError(RejectReason::UnknownSessionKey))?;
    let aad = body_aad(
        env.version,
        &env.sender,
        &env.recipient,
        &env.id,
        env.timestamp,
        &key_id,
    );
    aead::open(key, nonce, &aad, &env.body).ok_or(OpenError(RejectReason::Decryption))
}

/// Unwraps an `aes` session key wrapped for `me` and checks it against its id.
fn unwrap_session_key<R: CryptoRng + ?Sized>(
    me: &Identity,
    key_id: &KeyId,
    wrapped: &[u8],
    rng: &mut R,
) -> Result<Zeroizing<[u8; KEY_LEN]>, OpenError> {
    let raw = me
        .rsa_decrypt(rng, wrapped)
        .ok_or(OpenError(RejectReason::Decryption))?;
    let key: [u8; KEY_LEN] = raw[..]
        .try_into()
        .map_err(|_| OpenError(RejectReason::Decryption))?;
    let key = Zeroizing::new(key);
    if key_id_of(&key) != *key_id {
        return Err(OpenError(RejectReason::KeyIdMismatch));
    }
    Ok(key)
}

fn open_rsa<R: CryptoRng + ?Sized>(
    env: &Envelope,
    me: &Identity,
    rng: &mut R,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let block = me.public().rsa_block_len();
    if env.body.is_empty() || !env.body.len().is_multiple_of(block) {
        return Err(OpenError(RejectReason::Malformed(
            "rsa body is not whole blocks",
        )));
    }
    let per_block = me.public().rsa_max_plaintext();
    if env.body.len() / block > MAX_RSA_BODY_LEN.div_ceil(per_block).max(1) {
        return Err(OpenError(RejectReason::Malformed(
            "rsa body has too many blocks",
        )));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(env.body.len()));
    for ct in env.body.chunks_exact(block) {
        let pt = me
            .rsa_decrypt(rng, ct)
            .ok_or(OpenError(RejectReason::Decryption))?;
        out.extend_from_slice(&pt);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{alice, bob, carol, rng};
    use std::cell::RefCell;
    use std::collections::HashSet;

    const NOW: u64 = 1_767_225_600_000;

    fn never_seen() -> impl ReplayGuard {
        |_: &[u8; 32], _: &MessageId| false
    }

    fn ctx<'a>(me: &'a Identity, from: &'a Identity, seen: &'a dyn ReplayGuard) -> OpenContext<'a> {
        OpenContext {
            me,
            sender: from.public(),
            now_ms: NOW,
            policy: OpenPolicy::default(),
            seen,
        }
    }

    fn aes_envelope(text: &[u8]) -> Envelope {
        let mut r = rng(10);
        let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        seal_aes(
            alice(),
            bob().public(),
            &mut s,
            MessageId::random(&mut r),
            NOW,
            text,
            &mut r,
        )
        .unwrap()
    }

    #[test]
    fn aes_round_trip_unwraps_once_then_uses_the_cache() {
        let mut r = rng(11);
        let mut session = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        let mut inbound = InboundSessions::default();
        let seen = never_seen();
        for i in 0..3u8 {
            let env = seal_aes(
                alice(),
                bob().public(),
                &mut session,
                MessageId::random(&mut r),
                NOW + u64::from(i),
                &[i; 200],
                &mut r,
            )
            .unwrap();
            let env = Envelope::from_bytes(&env.to_bytes()).unwrap();
            let opened = open(&env, &ctx(bob(), alice(), &seen), &mut inbound, &mut r).unwrap();
            assert_eq!(&opened.plaintext[..], &[i; 200]);
            assert_eq!(opened.cipher, Cipher::Aes);
            assert_eq!(inbound.len(), 1);
        }
        assert_eq!(session.messages_sealed(), 3);
    }

    #[test]
    fn acknowledged_session_omits_the_wrapped_key() {
        let mut r = rng(12);
        let mut session = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        let first = seal_aes(
            alice(),
            bob().public(),
            &mut session,
            MessageId::random(&mut r),
            NOW,
            b"1",
            &mut r,
        )
        .unwrap();
        assert!(first.wrapped_key.is_some());
        session.mark_acknowledged();
        let second = seal_aes(
            alice(),
            bob().public(),
            &mut session,
            MessageId::random(&mut r),
            NOW,
            b"2",
            &mut r,
        )
        .unwrap();
        assert!(second.wrapped_key.is_none());
        // A receiver that lost its cache cannot open the second one, and says why.
        let seen = never_seen();
        let mut empty = InboundSessions::default();
        let err = open(&second, &ctx(bob(), alice(), &seen), &mut empty, &mut r).unwrap_err();
        assert_eq!(err.reason(), RejectReason::UnknownSessionKey);
        // With the first message's key cached, it opens.
        open(&first, &ctx(bob(), alice(), &seen), &mut empty, &mut r).unwrap();
        assert_eq!(
            &open(&second, &ctx(bob(), alice(), &seen), &mut empty, &mut r)
                .unwrap()
                .plaintext[..],
            b"2"
        );
    }

    #[test]
    fn rsa_round_trip_multi_block_and_empty() {
        let mut r = rng(13);
        let seen = never_seen();
        for len in [0usize, 1, 190, 191, 1000, MAX_RSA_BODY_LEN] {
            let text: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let env = seal_rsa(
                alice(),
                bob().public(),
                MessageId::random(&mut r),
                NOW,
                &text,
                &mut r,
            )
            .unwrap();
            let env = Envelope::from_bytes(&env.to_bytes()).unwrap();
            let opened = open(
                &env,
                &ctx(bob(), alice(), &seen),
                &mut InboundSessions::default(),
                &mut r,
            )
            .unwrap();
            assert_eq!(&opened.plaintext[..], &text[..], "len {len}");
            assert_eq!(opened.cipher, Cipher::Rsa);
        }
    }

    #[test]
    fn size_limits_are_clear_errors() {
        let mut r = rng(14);
        let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        let big = vec![0u8; MAX_BODY_LEN + 1];
        assert_eq!(
            seal_aes(
                alice(),
                bob().public(),
                &mut s,
                MessageId::random(&mut r),
                NOW,
                &big,
                &mut r
            )
            .unwrap_err(),
            SealError::TooLarge {
                len: MAX_BODY_LEN + 1,
                max: MAX_BODY_LEN
            }
        );
        let big = vec![0u8; MAX_RSA_BODY_LEN + 1];
        assert!(matches!(
            seal_rsa(
                alice(),
                bob().public(),
                MessageId::random(&mut r),
                NOW,
                &big,
                &mut r
            ),
            Err(SealError::TooLarge { .. })
        ));
        // A session made for Bob cannot seal for Carol.
        assert_eq!(
            seal_aes(
                alice(),
                carol().public(),
                &mut s,
                MessageId::random(&mut r),
                NOW,
                b"x",
                &mut r
            )
            .unwrap_err(),
            SealError::SessionMismatch
        );
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let mut r = rng(15);
        let seen = never_seen();
        for env in [
            aes_envelope(b"flip me"),
            seal_rsa(
                alice(),
                bob().public(),
                MessageId::random(&mut r),
                NOW,
                b"flip me",
                &mut r,
            )
            .unwrap(),
        ] {
            let bytes = env.to_bytes();
            for bit in 0..bytes.len() * 8 {
                let mut b = bytes.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                let Ok(e) = Envelope::from_bytes(&b) else {
                    continue;
                };
                let res = open(
                    &e,
                    &ctx(bob(), alice(), &seen),
                    &mut InboundSessions::default(),
                    &mut r,
                );
                assert!(
                    res.is_err(),
                    "bit {bit} of {:?} envelope accepted",
                    env.cipher
                );
            }
        }
    }

    #[test]
    fn signature_checked_before_any_rsa_work() {
        // A forged envelope (wrong signature) carrying a wrapped key must not reach RSA: we
        // check that the reason is BadSignature and that nothing was unwrapped into the cache.
        let mut env = aes_envelope(b"x");
        env.signature[0] ^= 1;
        let seen = never_seen();
        let mut inbound = InboundSessions::default();
        let err = open(&env, &ctx(bob(), alice(), &seen), &mut inbound, &mut rng(1)).unwrap_err();
        assert_eq!(err.reason(), RejectReason::BadSignature);
        assert!(inbound.is_empty());
    }

    #[test]
    fn forged_sender_rejected() {
        // Carol signs an envelope claiming to be from Alice: sender field is Alice's key.
        let mut env = aes_envelope(b"x");
        resign(&mut env, carol());
        let seen = never_seen();
        let err = open(
            &env,
            &ctx(bob(), alice(), &seen),
            &mut InboundSessions::default(),
            &mut rng(1),
        )
        .unwrap_err();
        assert_eq!(err.reason(), RejectReason::BadSignature);
        // Carol signs honestly as herself but it arrives on Alice's connection.
        let mut r = rng(2);
        let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        let env = seal_aes(
            carol(),
            bob().public(),
            &mut s,
            MessageId::random(&mut r),
            NOW,
            b"x",
            &mut r,
        )
        .unwrap();
        let err = open(
            &env,
            &ctx(bob(), alice(), &seen),
            &mut InboundSessions::default(),
            &mut r,
        )
        .unwrap_err();
        assert_eq!(err.reason(), RejectReason::SenderMismatch);
    }

    /// Signs `env` again, alone, as `who`.
    fn resign(env: &mut Envelope, who: &Identity) {
        env.proof = None;
        *env = sign_one(who, UnsignedEnvelope(env.clone()));
    }

    /// `n` `aes` envelopes from Alice to Bob in one session, signed together, the text of each
    /// its index.
    fn aes_batch(n: u16) -> Vec<Envelope> {
        let mut r = rng(21);
        let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        let unsigned = (0..n)
            .map(|i| {
                let id = MessageId::random(&mut r);
                let text = i.to_be_bytes();
                seal_aes_unsigned(alice(), bob().public(), &mut s, id, NOW, &text, &mut r).unwrap()
            })
            .collect();
        sign_batch(alice(), unsigned)
    }

    fn reasons(verified: Vec<Result<Verified, OpenError>>) -> Vec<Option<RejectReason>> {
        verified
            .into_iter()
            .map(|v| v.err().map(|e| e.reason()))
            .collect()
    }

    #[test]
    fn envelopes_signed_together_share_one_signature_and_each_opens_alone() {
        let envelopes = aes_batch(10);
        let seen = never_seen();
        let mut sessions = InboundSessions::default();
        for (i, env) in envelopes.iter().enumerate() {
            assert_eq!(env.signature, envelopes[0].signature);
            let proof = env.proof.as_ref().unwrap();
            assert_eq!((proof.count, usize::from(proof.index)), (10, i));
            assert!(proof_len(env) <= MAX_PROOF_LEN);
            // Checked alone, from its own bytes.
            let env = Envelope::from_bytes(&env.to_bytes()).unwrap();
            let opened = open(
                &env,
                &ctx(bob(), alice(), &seen),
                &mut sessions,
                &mut rng(3),
            );
            assert_eq!(&opened.unwrap().plaintext[..], &(i as u16).to_be_bytes());
        }
        let verified = verify_many(envelopes, alice().public());
        assert!(verified.iter().all(Result::is_ok));
    }

    /// How many bytes the proof adds to `env`'s encoding.
    fn proof_len(env: &Envelope) -> usize {
        let mut bare = env.clone();
        bare.proof = None;
        env.to_bytes().len() - bare.to_bytes().len()
    }

    #[test]
    fn the_largest_proof_fits_its_bound_and_large_sets_get_one_signature_per_batch() {
        let envelopes = aes_batch(u16::try_from(MAX_SIGNED_BATCH).unwrap() + 3);
        let longest = envelopes.iter().map(proof_len).max().unwrap();
        assert!(longest <= MAX_PROOF_LEN, "{longest} > {MAX_PROOF_LEN}");
        let (first, rest) = envelopes.split_at(MAX_SIGNED_BATCH);
        assert!(first.iter().all(|e| e.signature == first[0].signature));
        assert!(rest.iter().all(|e| e.signature == rest[0].signature));
        assert_ne!(first[0].signature, rest[0].signature);
        assert_eq!(
            rest[2].proof.as_ref().map(|p| (p.count, p.index)),
            Some((3, 2))
        );
        assert!(
            verify_many(envelopes, alice().public())
                .iter()
                .all(Result::is_ok)
        );
    }

    #[test]
    fn max_signed_len_bounds_every_envelope_in_any_batch() {
        let mut r = rng(22);
        let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        let mut unsigned = Vec::new();
        for len in [0, 1, 23, 24, 255, 256, 65_535, 65_536, MAX_BODY_LEN] {
            let id = MessageId::random(&mut r);
            let text = vec![7u8; len];
            unsigned.push(
                seal_aes_unsigned(alice(), bob().public(), &mut s, id, u64::MAX, &text, &mut r)
                    .unwrap(),
            );
            s.mark_acknowledged();
        }
        for len in [0, 300, MAX_RSA_BODY_LEN] {
            let id = MessageId::random(&mut r);
            let text = vec![7u8; len];
            unsigned.push(
                seal_rsa_unsigned(alice(), bob().public(), id, u64::MAX, &text, &mut r).unwrap(),
            );
        }
        // Padded to the largest batch, so that the proofs are the longest there are.
        let bounds: Vec<usize> = unsigned
            .iter()
            .map(UnsignedEnvelope::max_signed_len)
            .collect();
        let padding = unsigned.last().unwrap().clone();
        unsigned.resize(MAX_SIGNED_BATCH, padding);
        for (env, bound) in sign_batch(alice(), unsigned).iter().zip(bounds) {
            let len = env.to_bytes().len();
            assert!(
                len <= bound,
                "{len} > {bound} ({:?}, {} bytes)",
                env.cipher,
                env.body.len()
            );
        }
    }

    #[test]
    fn a_changed_envelope_of_a_batch_is_the_only_one_rejected() {
        let mut envelopes = aes_batch(8);
        envelopes[3].body[0] ^= 1;
        envelopes[6].timestamp += 1;
        let mut expected = vec![None; 8];
        expected[3] = Some(RejectReason::BadSignature);
        expected[6] = Some(RejectReason::BadSignature);
        assert_eq!(reasons(verify_many(envelopes, alice().public())), expected);
    }

    #[test]
    fn a_proof_moved_resized_or_reshaped_is_rejected() {
        let envelopes = aes_batch(8);
        let seen = never_seen();
        let rejected = |env: &Envelope| {
            open(
                env,
                &ctx(bob(), alice(), &seen),
                &mut InboundSessions::default(),
                &mut rng(1),
            )
            .unwrap_err()
            .reason()
        };
        let with = |i: usize, change: &dyn Fn(&mut BatchProof)| {
            let mut env = envelopes[i].clone();
            change(env.proof.as_mut().unwrap());
            env
        };
        use RejectReason::{BadSignature, Malformed};
        // Leaf 0's path has the same shape in a tree of 5: only the signed count tells.
        assert_eq!(rejected(&with(0, &|p| p.count = 5)), BadSignature);
        assert_eq!(rejected(&with(0, &|p| p.count = 9)), BadSignature);
        assert_eq!(rejected(&with(2, &|p| p.index = 3)), BadSignature);
        assert_eq!(rejected(&with(2, &|p| p.path.truncate(2))), BadSignature);
        assert_eq!(rejected(&with(2, &|p| p.path[1] = p.path[0])), BadSignature);
        let other = envelopes[5].proof.clone().unwrap();
        assert_eq!(rejected(&with(2, &|p| *p = other.clone())), BadSignature);
        assert_eq!(
            rejected(&with(2, &|p| p.index = 8)),
            Malformed("batch proof of impossible shape")
        );
        assert_eq!(
            rejected(&with(2, &|p| p.count = 0)),
            Malformed("batch proof of impossible shape")
        );
        let mut bare = envelopes[1].clone();
        bare.proof = None;
        assert_eq!(
            rejected(&bare),
            Malformed("version 2 envelope without a batch proof")
        );
        let mut old = envelopes[1].clone();
        old.version = Envelope::VERSION_SIGNED_ALONE;
        assert_eq!(
            rejected(&old),
            Malformed("batch proof in a version 1 envelope")
        );
        // Signed alone, the first way (version 1), it still opens.
        old.proof = None;
        old.signature = alice().sign(&old.signed_bytes());
        let aad_version_differs = open(
            &old,
            &ctx(bob(), alice(), &seen),
            &mut InboundSessions::default(),
            &mut rng(1),
        );
        // Its body was sealed as version 2, and the version is in the body's associated data.
        assert_eq!(
            aad_version_differs.unwrap_err().reason(),
            RejectReason::Decryption
        );
    }

    /// `n` `aes` envelopes from Alice to Bob in one session, the text of each its index.
    fn aes_envelopes(n: u8) -> Vec<Envelope> {
        let mut r = rng(20);
        let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        (0..n)
            .map(|i| {
                let id = MessageId::random(&mut r);
                seal_aes(alice(), bob().public(), &mut s, id, NOW, &[i], &mut r).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_verified_batch_opens_as_each_envelope_would() {
        let envelopes = aes_envelopes(16);
        let verified = verify_many(envelopes.clone(), alice().public());
        let seen = never_seen();
        let (mut one, mut batch) = (InboundSessions::default(), InboundSessions::default());
        for (i, (env, v)) in envelopes.iter().zip(&verified).enumerate() {
            let v = v.as_ref().expect("every signature is good");
            let ctx = ctx(bob(), alice(), &seen);
            let alone = open(env, &ctx, &mut one, &mut rng(3)).unwrap();
            let opened = open_verified(v, &ctx, &mut batch, &mut rng(3)).unwrap();
            assert_eq!(&opened.plaintext[..], &[u8::try_from(i).unwrap()]);
            assert_eq!((opened.id, &opened.plaintext), (alone.id, &alone.plaintext));
        }
    }

    #[test]
    fn a_bad_envelope_in_a_batch_is_the_only_one_rejected() {
        let mut envelopes = aes_envelopes(8);
        envelopes[2].body[0] ^= 1; // the signature no longer matches
        resign(&mut envelopes[5], carol());
        envelopes[6].version = 9;
        let mut r = rng(4);
        let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        let id = MessageId::random(&mut r);
        envelopes.push(seal_aes(carol(), bob().public(), &mut s, id, NOW, b"x", &mut r).unwrap());
        let reasons: Vec<Option<RejectReason>> = verify_many(envelopes, alice().public())
            .into_iter()
            .map(|v| v.err().map(|e| e.reason()))
            .collect();
        use RejectReason::{BadSignature, SenderMismatch, UnsupportedVersion};
        let expected = [
            None,
            None,
            Some(BadSignature),
            None,
            None,
            Some(BadSignature),
            Some(UnsupportedVersion(9)),
            None,
            Some(SenderMismatch),
        ];
        assert_eq!(reasons, expected);
        // One envelope alone is checked on its own, with the same answer.
        let mut alone = aes_envelopes(1);
        alone[0].body[0] ^= 1;
        let reason = verify_many(alone, alice().public())[0]
            .as_ref()
            .unwrap_err()
            .reason();
        assert_eq!(reason, BadSignature);
    }

    /// An RNG that fails the test when used: the RSA decryptions blind with the RNG and
    /// nothing else in opening uses one, so opening with it shows that no RSA work was left.
    struct NoRsaWork;

    impl rand_core::TryRng for NoRsaWork {
        type Error = std::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            panic!("an RSA private-key operation was made here")
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            panic!("an RSA private-key operation was made here")
        }
        fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), Self::Error> {
            panic!("an RSA private-key operation was made here")
        }
    }

    impl rand_core::TryCryptoRng for NoRsaWork {}

    fn verified_all(envelopes: Vec<Envelope>) -> Vec<Verified> {
        verify_many(envelopes, alice().public())
            .into_iter()
            .map(|v| v.expect("every signature is good"))
            .collect()
    }

    #[test]
    fn rsa_work_done_ahead_leaves_none_for_the_opening_and_opens_the_same() {
        let mut envelopes = aes_envelopes(4);
        let mut r = rng(30);
        let id = MessageId::random(&mut r);
        envelopes.push(seal_rsa(alice(), bob().public(), id, NOW, b"by rsa", &mut r).unwrap());
        let mut verified = verified_all(envelopes.clone());
        let empty = InboundSessions::default();
        assert!(
            verified
                .iter()
                .all(|v| v.envelope().needs_private_key(&empty))
        );

        let sessions = Mutex::new(InboundSessions::default());
        decrypt_ahead(verified.iter_mut(), bob(), &sessions, &mut r);
        let mut sessions = sessions.into_inner().unwrap();
        assert_eq!(sessions.len(), 1, "the four share one session key");
        assert!(!verified[0].envelope().needs_private_key(&sessions));
        let seen = never_seen();
        let ctx = ctx(bob(), alice(), &seen);
        for (env, v) in envelopes.iter().zip(&verified) {
            let ahead = open_verified(v, &ctx, &mut sessions, &mut NoRsaWork).unwrap();
            let mut fresh = InboundSessions::default();
            let alone = open(env, &ctx, &mut fresh, &mut rng(3)).unwrap();
            assert_eq!(
                (ahead.id, ahead.cipher, ahead.key_id, &ahead.plaintext),
                (alone.id, alone.cipher, alone.key_id, &alone.plaintext)
            );
        }
        // A key already cached costs nothing ahead either.
        let mut again = verified_all(aes_envelopes(2));
        decrypt_ahead(
            again.iter_mut(),
            bob(),
            &Mutex::new(sessions),
            &mut NoRsaWork,
        );
    }

    #[test]
    fn a_failure_ahead_rejects_the_envelope_after_the_other_checks() {
        // Alice (a contact: her signatures verify) sends three envelopes whose wrapped key is
        // not the key their id names: one RSA decryption for the three, each rejected, and no
        // RSA work left for the opening. A fourth brings the same wrapped key under its own
        // id: that one opens.
        let mut r = rng(31);
        let mut s1 = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        let mut s2 = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        let mut envelopes: Vec<Envelope> = (0..3u8)
            .map(|i| {
                let id = MessageId::random(&mut r);
                let mut env =
                    seal_aes(alice(), bob().public(), &mut s1, id, NOW, &[i], &mut r).unwrap();
                env.wrapped_key = Some(serde_bytes::ByteBuf::from(s2.wrapped.clone()));
                resign(&mut env, alice());
                env
            })
            .collect();
        let id = MessageId::random(&mut r);
        envelopes.push(seal_aes(alice(), bob().public(), &mut s2, id, NOW, b"ok", &mut r).unwrap());
        let mut verified = verified_all(envelopes);
        let sessions = Mutex::new(InboundSessions::default());
        decrypt_ahead(verified.iter_mut(), bob(), &sessions, &mut r);
        let mut sessions = sessions.into_inner().unwrap();
        assert_eq!(sessions.len(), 1, "only the fourth one's key");
        let seen = never_seen();
        let ctx4 = ctx(bob(), alice(), &seen);
        let fourth = verified.pop().unwrap();
        let opened = open_verified(&fourth, &ctx4, &mut sessions, &mut NoRsaWork).unwrap();
        assert_eq!(&opened.plaintext[..], b"ok");
        for v in &verified {
            let err = open_verified(
                v,
                &ctx(bob(), alice(), &seen),
                &mut sessions,
                &mut NoRsaWork,
            );
            assert_eq!(err.unwrap_err().reason(), RejectReason::KeyIdMismatch);
        }
        // A replay is still told as one (and acknowledged again), not as the failure.
        let always = |_: &[u8; 32], _: &MessageId| true;
        let err = open_verified(
            &verified[0],
            &ctx(bob(), alice(), &always),
            &mut sessions,
            &mut NoRsaWork,
        );
        assert_eq!(err.unwrap_err().reason(), RejectReason::Replayed);
    }

    #[test]
    fn a_key_another_call_is_unwrapping_is_left_to_it() {
        let envelopes = aes_envelopes(2);
        let key_id = envelopes[0].key_id.unwrap();
        let sender = alice().public().ed25519_bytes();
        let mut verified = verified_all(envelopes.clone());
        let mut claimed = InboundSessions::default();
        claimed.unwrapping.insert((sender, key_id));
        let sessions = Mutex::new(claimed);
        decrypt_ahead(verified.iter_mut(), bob(), &sessions, &mut NoRsaWork);
        // The other call finishes: its key is cached, and these open with no RSA work left.
        let mut done = verified_all(envelopes);
        let mut sessions = sessions.into_inner().unwrap();
        sessions.unwrapping.clear();
        let sessions = Mutex::new(sessions);
        decrypt_ahead(done.iter_mut().take(1), bob(), &sessions, &mut rng(32));
        let mut sessions = sessions.into_inner().unwrap();
        assert!(sessions.unwrapping.is_empty());
        let seen = never_seen();
        for v in &verified {
            let opened = open_verified(
                v,
                &ctx(bob(), alice(), &seen),
                &mut sessions,
                &mut NoRsaWork,
            );
            assert_eq!(opened.unwrap().key_id, Some(key_id));
        }
    }

    #[test]
    fn envelopes_for_another_identity_get_no_rsa_work_ahead() {
        let mut verified = verified_all(aes_envelopes(2));
        let sessions = Mutex::new(InboundSessions::default());
        decrypt_ahead(verified.iter_mut(), carol(), &sessions, &mut NoRsaWork);
        let mut sessions = sessions.into_inner().unwrap();
        assert!(sessions.is_empty());
        let seen = never_seen();
        let err = open_verified(
            &verified[0],
            &ctx(carol(), alice(), &seen),
            &mut sessions,
            &mut NoRsaWork,
        );
        assert_eq!(err.unwrap_err().reason(), RejectReason::WrongRecipient);
    }

    #[test]
    fn a_verified_envelope_still_goes_through_the_other_checks() {
        let verified = verify_many(aes_envelopes(2), alice().public());
        let v = verified[0].as_ref().unwrap();
        let seen = never_seen();
        let mut sessions = InboundSessions::default();
        // Opened with another sender's context: refused, whoever verified it.
        let err = open_verified(v, &ctx(bob(), carol(), &seen), &mut sessions, &mut rng(5));
        assert_eq!(err.unwrap_err().reason(), RejectReason::SenderMismatch);
        // Not for this recipient.
        let err = open_verified(v, &ctx(carol(), alice(), &seen), &mut sessions, &mut rng(5));
        assert_eq!(err.unwrap_err().reason(), RejectReason::WrongRecipient);
        // Already seen.
        let always = |_: &[u8; 32], _: &MessageId| true;
        let err = open_verified(v, &ctx(bob(), alice(), &always), &mut sessions, &mut rng(5));
        assert_eq!(err.unwrap_err().reason(), RejectReason::Replayed);
        // Too old.
        let mut late = ctx(bob(), alice(), &seen);
        late.now_ms = NOW + 400 * 24 * 3600 * 1000;
        let err = open_verified(v, &late, &mut sessions, &mut rng(5));
        assert_eq!(err.unwrap_err().reason(), RejectReason::TooOld);
    }

    #[test]
    fn wrong_recipient_rejected() {
        let env = aes_envelope(b"for bob");
        let seen = never_seen();
        let err = open(
            &env,
            &ctx(carol(), alice(), &seen),
            &mut InboundSessions::default(),
            &mut rng(1),
        )
        .unwrap_err();
        assert_eq!(err.reason(), RejectReason::WrongRecipient);
    }

    #[test]
    fn replay_rejected() {
        let env = aes_envelope(b"once");
        let seen_ids: RefCell<HashSet<MessageId>> = RefCell::new(HashSet::new());
        let guard = |_: &[u8; 32], id: &MessageId| seen_ids.borrow().contains(id);
        let mut inbound = InboundSessions::default();
        let mut r = rng(3);
        let opened = open(&env, &ctx(bob(), alice(), &guard), &mut inbound, &mut r).unwrap();
        seen_ids.borrow_mut().insert(opened.id);
        let err = open(&env, &ctx(bob(), alice(), &guard), &mut inbound, &mut r).unwrap_err();
        assert_eq!(err.reason(), RejectReason::Replayed);
    }

    #[test]
    fn timestamps_out_of_range_rejected() {
        let mut r = rng(4);
        let seen = never_seen();
        let policy = OpenPolicy::default();
        for (ts, reason) in [
            (
                NOW + policy.max_future_skew_ms + 1,
                RejectReason::FromTheFuture,
            ),
            (NOW - policy.max_age_ms.unwrap() - 1, RejectReason::TooOld),
        ] {
            let mut s = OutboundSession::new(&mut r, bob().public(), ts).unwrap();
            let env = seal_aes(
                alice(),
                bob().public(),
                &mut s,
                MessageId::random(&mut r),
                ts,
                b"t",
                &mut r,
            )
            .unwrap();
            let err = open(
                &env,
                &ctx(bob(), alice(), &seen),
                &mut InboundSessions::default(),
                &mut r,
            )
            .unwrap_err();
            assert_eq!(err.reason(), reason);
        }
    }

    #[test]
    fn wrapped_key_must_match_its_id() {
        // Alice (a contact, so her signature verifies) sends a wrapped key that is not the key
        // the id names: rejected after unwrapping, and not cached.
        let mut r = rng(5);
        let mut s1 = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        let s2 = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        let mut env = seal_aes(
            alice(),
            bob().public(),
            &mut s1,
            MessageId::random(&mut r),
            NOW,
            b"k",
            &mut r,
        )
        .unwrap();
        env.wrapped_key = Some(serde_bytes::ByteBuf::from(s2.wrapped.clone()));
        resign(&mut env, alice());
        let seen = never_seen();
        let mut inbound = InboundSessions::default();
        let err = open(&env, &ctx(bob(), alice(), &seen), &mut inbound, &mut r).unwrap_err();
        assert_eq!(err.reason(), RejectReason::KeyIdMismatch);
        assert!(inbound.is_empty());
    }

    #[test]
    fn rotation_policy() {
        let mut r = rng(6);
        let p = RotationPolicy {
            max_messages: 2,
            max_age_ms: 1000,
        };
        let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        assert!(!s.needs_rotation(&p, NOW));
        assert!(s.needs_rotation(&p, NOW + 1000));
        for _ in 0..2 {
            seal_aes(
                alice(),
                bob().public(),
                &mut s,
                MessageId::random(&mut r),
                NOW,
                b"",
                &mut r,
            )
            .unwrap();
        }
        assert!(s.needs_rotation(&p, NOW));
    }

    #[test]
    fn session_state_round_trips() {
        let mut r = rng(7);
        let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
        s.mark_acknowledged();
        let restored = OutboundSession::from_secret_bytes(&s.to_secret_bytes()).unwrap();
        assert_eq!(restored.key_id(), s.key_id());
        assert!(restored.is_acknowledged());
        assert!(OutboundSession::from_secret_bytes(b"junk").is_err());
    }

    #[test]
    fn inbound_cache_is_bounded() {
        let mut c = InboundSessions::with_capacity(2);
        for i in 0..5u8 {
            c.insert([i; 32], Zeroizing::new([i; 32]));
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(&[4; 32], &key_id_of(&[4; 32])).is_some());
        assert!(c.get(&[0; 32], &key_id_of(&[0; 32])).is_none());
    }

    #[test]
    fn ids_print_and_parse() {
        let id = MessageId([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
        assert!("xyz".parse::<MessageId>().is_err());
        assert!("zz".repeat(16).parse::<MessageId>().is_err());
        assert_eq!("RSA".parse::<Cipher>().unwrap(), Cipher::Rsa);
        assert!("des".parse::<Cipher>().is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = Envelope::from_bytes(&bytes);
        }

        #[test]
        fn aes_round_trip_any_body(body in proptest::collection::vec(proptest::num::u8::ANY, 0..4096), seed in 0u64..1000) {
            let mut r = rng(seed);
            let mut s = OutboundSession::new(&mut r, bob().public(), NOW).unwrap();
            let env = seal_aes(alice(), bob().public(), &mut s, MessageId::random(&mut r), NOW, &body, &mut r).unwrap();
            let env = Envelope::from_bytes(&env.to_bytes()).unwrap();
            let seen = never_seen();
            let opened = open(&env, &ctx(bob(), alice(), &seen), &mut InboundSessions::default(), &mut r).unwrap();
            proptest::prop_assert_eq!(&opened.plaintext[..], &body[..]);
        }
    }
}
