//! `aes` sessions: the sender's [`OutboundSession`] (a key wrapped once for the recipient,
//! rotated by [`RotationPolicy`]) and the receiver's cache of unwrapped keys,
//! [`InboundSessions`].

use std::collections::{HashMap, VecDeque};
use std::fmt;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::*;
use crate::aead::KEY_LEN;
use crate::codec;
use crate::identity::{ED25519_LEN, PublicIdentity};

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

/// The sender's side of an `aes` session with one recipient.
pub struct OutboundSession {
    pub(super) key: Zeroizing<[u8; KEY_LEN]>,
    pub(super) key_id: KeyId,
    pub(super) recipient: [u8; ED25519_LEN],
    pub(super) wrapped: Vec<u8>,
    created_ms: u64,
    pub(super) sealed: u64,
    pub(super) acknowledged: bool,
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

/// The receiver's cache of unwrapped `aes` session keys, by sender and key id. Bounded: the
/// oldest entries are evicted first (an evicted key is unwrapped again if it is still in use
/// and its envelope still carries it).
pub struct InboundSessions {
    keys: HashMap<([u8; ED25519_LEN], KeyId), Zeroizing<[u8; KEY_LEN]>>,
    order: VecDeque<([u8; ED25519_LEN], KeyId)>,
    capacity: usize,
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
