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

//!
//! # Layout
//!
//! This file holds the types every part shares (the [`Envelope`], its ids and limits, the
//! policies, [`OpenError`]); `seal` seals, `batch` signs in batches and checks many at once,
//! `open` opens, `verified` is the receiver's split path, `session` the `aes` sessions. Every
//! public item is re-exported here: paths are `encrypto_crypto::envelope::X`.

use std::fmt;
use std::str::FromStr;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::aead::{KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::canonical::Canonical;
use crate::codec;
use crate::identity::{ED25519_LEN, SIGNATURE_LEN};
use crate::merkle;

mod batch;
mod open;
mod seal;
mod session;
#[cfg(test)]
mod tests;
mod verified;

use batch::batch_statement;
use batch::sign_one;
pub use batch::{UnsignedEnvelope, sign_batch, verify_many};
pub(crate) use open::check_signed_header;
pub use open::{OpenContext, Opened, open};
pub use seal::{SealError, seal_aes, seal_aes_unsigned, seal_rsa, seal_rsa_unsigned};
pub use session::{InboundSessions, OutboundSession, RotationPolicy};
pub use verified::{RsaWork, Verified, WrappedKey, open_verified};

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
