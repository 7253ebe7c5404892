//! Sealing: a message body encrypted for its recipient, `aes` in a session or `rsa` block by
//! block, into an envelope that [`sign_batch`](super::sign_batch) then signs.

use rand_core::CryptoRng;

use super::*;
use crate::aead::{self, NONCE_LEN};
use crate::identity::{Identity, PublicIdentity, SIGNATURE_LEN};

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
