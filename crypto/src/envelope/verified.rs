//! The receiver's split path: envelopes checked up to their signature on one thread
//! ([`verify_many`](super::verify_many)), their RSA work done ahead ([`RsaWork`]), and opened on
//! another ([`open_verified`]).

use std::fmt;

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::open::{check_verified_header, decrypt, open_rsa, unwrap_session_key};
use super::*;
use crate::aead::KEY_LEN;
use crate::identity::{ED25519_LEN, Identity, PublicIdentity};

/// An envelope whose structure, sender and signature have been checked against a sender's
/// key by [`verify_many`]; [`open_verified`] does the rest of [`open`]. It may also carry the
/// outcome of its RSA work, done ahead ([`Verified::rsa_work`]).
#[derive(Debug, Clone)]
pub struct Verified {
    pub(super) envelope: Envelope,
    pub(super) ahead: Ahead,
}

/// The RSA private-key work of opening an envelope, when it was done ahead.
#[derive(Clone)]
pub(super) enum Ahead {
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

/// The RSA private-key work opening a [`Verified`] envelope takes, which the receiver may do
/// ahead ([`Verified::rsa_work`]): on the thread that checked its signature, so that the one
/// which opens it does not stop for it. How many of these run at once, and which are left to
/// another thread already doing the same, is the caller's choice: each step here is pure.
#[derive(Debug)]
pub enum RsaWork<'a> {
    /// None: an envelope addressed to another identity (opening rejects it without any RSA
    /// work), or an `aes` envelope that brings no wrapped key.
    None,
    /// An `rsa` body to decrypt: [`Verified::decrypt_rsa_ahead`].
    Body,
    /// An `aes` session key the envelope brings wrapped. Unless the receiver's
    /// [`InboundSessions`] hold it already ([`WrappedKey::is_cached`]), it is unwrapped
    /// ([`WrappedKey::unwrap_key`]) and added to them ([`InboundSessions::insert`]); an unwrap
    /// that fails is recorded in the envelope ([`Verified::reject_ahead`]).
    SessionKey(WrappedKey<'a>),
}

/// An `aes` session key wrapped for the recipient, as one envelope brings it.
#[derive(Debug, Clone, Copy)]
pub struct WrappedKey<'a> {
    /// The sender's Ed25519 public key: with `key_id`, the key's name in [`InboundSessions`].
    pub sender: [u8; ED25519_LEN],
    /// The id the envelope claims for the key; [`WrappedKey::unwrap_key`] checks it.
    pub key_id: KeyId,
    /// The key, RSA-OAEP encrypted for the recipient.
    pub wrapped: &'a [u8],
}

impl WrappedKey<'_> {
    /// Whether `sessions` hold this key already (nothing left to unwrap).
    pub fn is_cached(&self, sessions: &InboundSessions) -> bool {
        sessions.contains(&self.sender, &self.key_id)
    }

    /// Unwraps the key with `me`'s RSA key (one private-key operation) and checks it against
    /// its id. The result goes to [`InboundSessions::insert`] under [`WrappedKey::sender`].
    ///
    /// # Errors
    /// [`OpenError`] when the key does not unwrap or is not the one its id names; the envelope
    /// is then rejected for that reason ([`Verified::reject_ahead`]).
    pub fn unwrap_key<R: CryptoRng + ?Sized>(
        &self,
        me: &Identity,
        rng: &mut R,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, OpenError> {
        unwrap_session_key(me, &self.key_id, self.wrapped, rng)
    }
}

impl Verified {
    /// The RSA work opening this envelope takes that can be done ahead, for the identity whose
    /// public half is `me`.
    pub fn rsa_work(&self, me: &PublicIdentity) -> RsaWork<'_> {
        let env = &self.envelope;
        if env.recipient != me.ed25519_bytes() {
            return RsaWork::None;
        }
        match (env.cipher, env.key_id, env.wrapped_key.as_ref()) {
            (Cipher::Rsa, _, _) => RsaWork::Body,
            (Cipher::Aes, Some(key_id), Some(wrapped)) => RsaWork::SessionKey(WrappedKey {
                sender: env.sender,
                key_id,
                wrapped,
            }),
            (Cipher::Aes, _, _) => RsaWork::None,
        }
    }

    /// Decrypts an `rsa` body addressed to `me` now, for [`open_verified`] to use, or records
    /// why it failed: [`open_verified`] then rejects the envelope for that reason after its
    /// own checks. Anything else is left as it is.
    pub fn decrypt_rsa_ahead<R: CryptoRng + ?Sized>(&mut self, me: &Identity, rng: &mut R) {
        if !matches!(self.rsa_work(me.public()), RsaWork::Body) {
            return;
        }
        self.ahead = match open_rsa(&self.envelope, me, rng) {
            Ok(body) => Ahead::Body(body),
            Err(e) => Ahead::Failed(e.0),
        };
    }

    /// Records that the RSA work done ahead for this envelope failed with `error` (a
    /// [`WrappedKey::unwrap_key`] of its key, or of the same wrapped key under the same id):
    /// [`open_verified`] rejects it for that reason after its own checks, so that a replay is
    /// still told as one.
    pub fn reject_ahead(&mut self, error: OpenError) {
        self.ahead = Ahead::Failed(error.0);
    }
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
