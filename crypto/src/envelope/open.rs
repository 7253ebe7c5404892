//! Opening an envelope: the checks in their order (structure, sender, signature, recipient,
//! time window, replay), then the decryption.

use std::fmt;

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::*;
use crate::aead::{self, KEY_LEN};
use crate::identity::{ED25519_LEN, Identity, PublicIdentity, SIGNATURE_LEN};

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
pub(super) fn check_verified_header(
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

pub(super) fn decrypt<R: CryptoRng + ?Sized>(
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
pub(super) fn unwrap_session_key<R: CryptoRng + ?Sized>(
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

pub(super) fn open_rsa<R: CryptoRng + ?Sized>(
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
