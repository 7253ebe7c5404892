//! Signed control payloads: the chat events both sides must agree on.
//!
//! - [`ControlKind::CipherSwitch`]: "from now on this chat uses `aes` / `rsa`".
//! - [`ControlKind::DeleteChat`]: "delete our chat history" (the delete-for-both request).
//! - [`ControlKind::DeliveryAck`]: "I stored these messages durably" (the response to a message
//!   or to another control payload).
//!
//! They carry no secret, so they are signed but not encrypted (the libp2p transport encrypts
//! them on the wire anyway). They go through exactly the same checks as envelopes, in the same
//! order ([`crate::envelope::open`]'s: sender = pinned key, signature, recipient, time window,
//! replay) and fail with the same opaque [`OpenError`].

use serde::{Deserialize, Serialize};

use crate::canonical::Canonical;
use crate::codec;
use crate::envelope::{
    Cipher, MessageId, OpenContext, OpenError, RejectReason, check_signed_header,
};
use crate::identity::{ED25519_LEN, Identity, PublicIdentity, SIGNATURE_LEN};

/// Most message ids one acknowledgement may carry.
pub const MAX_ACK_IDS: usize = 1024;
/// Largest encoded control payload accepted from the network.
pub const MAX_CONTROL_LEN: usize = 24 * 1024;

/// What a control payload says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlKind {
    /// The chat switches to this cipher for messages sent after this point.
    CipherSwitch {
        /// The new cipher.
        cipher: Cipher,
    },
    /// Delete the chat history between sender and recipient, on both sides.
    DeleteChat,
    /// These messages (or control payloads) were stored durably by the sender of the ack.
    DeliveryAck {
        /// Acknowledged ids, at most [`MAX_ACK_IDS`].
        ids: Vec<MessageId>,
    },
}

impl ControlKind {
    fn write(&self, c: Canonical) -> Canonical {
        match self {
            ControlKind::CipherSwitch { cipher } => c.u8(1).u8(cipher.code()),
            ControlKind::DeleteChat => c.u8(2),
            ControlKind::DeliveryAck { ids } => {
                let mut c = c.u8(3).u64(ids.len() as u64);
                for id in ids {
                    c = c.fixed(&id.0);
                }
                c
            }
        }
    }
}

/// A signed control payload as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// Format version, [`Control::VERSION`].
    pub version: u8,
    /// Signer's Ed25519 public key.
    #[serde(with = "serde_bytes")]
    pub sender: [u8; ED25519_LEN],
    /// Addressee's Ed25519 public key.
    #[serde(with = "serde_bytes")]
    pub recipient: [u8; ED25519_LEN],
    /// Id of this payload (de-duplicated like message ids; acks of it name it).
    pub id: MessageId,
    /// Signer's clock, Unix milliseconds.
    pub timestamp: u64,
    /// The event.
    pub kind: ControlKind,
    /// Ed25519 signature over the canonical encoding.
    #[serde(with = "serde_bytes")]
    pub signature: [u8; SIGNATURE_LEN],
}

/// A control payload could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// An acknowledgement with more than [`MAX_ACK_IDS`] ids.
    #[error("an acknowledgement carries at most {MAX_ACK_IDS} ids, not {0}")]
    TooManyIds(usize),
}

impl Control {
    /// The current format.
    pub const VERSION: u8 = 1;

    /// Signs a control payload from `me` to `recipient`.
    ///
    /// # Errors
    /// [`ControlError::TooManyIds`] for an oversized acknowledgement.
    pub fn sign(
        me: &Identity,
        recipient: &PublicIdentity,
        id: MessageId,
        now_ms: u64,
        kind: ControlKind,
    ) -> Result<Self, ControlError> {
        if let ControlKind::DeliveryAck { ids } = &kind
            && ids.len() > MAX_ACK_IDS
        {
            return Err(ControlError::TooManyIds(ids.len()));
        }
        let mut c = Control {
            version: Self::VERSION,
            sender: me.public().ed25519_bytes(),
            recipient: recipient.ed25519_bytes(),
            id,
            timestamp: now_ms,
            kind,
            signature: [0; SIGNATURE_LEN],
        };
        c.signature = me.sign(&c.signed_bytes());
        Ok(c)
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let c = Canonical::new(b"encrypto/control/v1")
            .u8(self.version)
            .fixed(&self.sender)
            .fixed(&self.recipient)
            .fixed(&self.id.0)
            .u64(self.timestamp);
        self.kind.write(c).finish()
    }

    fn check_structure(&self) -> Result<(), OpenError> {
        if self.version != Self::VERSION {
            return Err(OpenError(RejectReason::UnsupportedVersion(self.version)));
        }
        if let ControlKind::DeliveryAck { ids } = &self.kind
            && ids.len() > MAX_ACK_IDS
        {
            return Err(OpenError(RejectReason::Malformed(
                "too many acknowledged ids",
            )));
        }
        Ok(())
    }

    /// Encodes as CBOR.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self).expect("a control payload always encodes")
    }

    /// Decodes and checks the structure (not the signature).
    ///
    /// # Errors
    /// [`OpenError`] with reason [`RejectReason::TooLarge`] or [`RejectReason::Malformed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OpenError> {
        let c: Control = codec::decode_canonical(bytes, MAX_CONTROL_LEN).map_err(|e| match e {
            codec::CodecError::TooLarge { .. } => OpenError(RejectReason::TooLarge),
            _ => OpenError(RejectReason::Malformed("not a control payload")),
        })?;
        c.check_structure()?;
        Ok(c)
    }

    /// Verifies the payload as [`crate::envelope::open`] verifies an envelope and returns what
    /// it says. The caller records the id as seen once it has acted on it.
    ///
    /// # Errors
    /// [`OpenError`]; its reason says which check failed.
    pub fn verify(&self, ctx: &OpenContext<'_>) -> Result<&ControlKind, OpenError> {
        self.check_structure()?;
        check_signed_header(
            ctx,
            &self.sender,
            &self.recipient,
            &self.id,
            self.timestamp,
            &self.signed_bytes(),
            &self.signature,
        )?;
        Ok(&self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{OpenPolicy, ReplayGuard};
    use crate::test_support::{alice, bob, carol, rng};

    const NOW: u64 = 1_767_225_600_000;

    fn ctx<'a>(me: &'a Identity, from: &'a Identity, seen: &'a dyn ReplayGuard) -> OpenContext<'a> {
        OpenContext {
            me,
            sender: from.public(),
            now_ms: NOW,
            policy: OpenPolicy::default(),
            seen,
        }
    }

    fn kinds() -> Vec<ControlKind> {
        let mut r = rng(1);
        vec![
            ControlKind::CipherSwitch {
                cipher: Cipher::Rsa,
            },
            ControlKind::CipherSwitch {
                cipher: Cipher::Aes,
            },
            ControlKind::DeleteChat,
            ControlKind::DeliveryAck {
                ids: (0..3).map(|_| MessageId::random(&mut r)).collect(),
            },
        ]
    }

    #[test]
    fn round_trip_every_kind() {
        let seen = |_: &[u8; 32], _: &MessageId| false;
        for kind in kinds() {
            let c = Control::sign(
                alice(),
                bob().public(),
                MessageId([7; 16]),
                NOW,
                kind.clone(),
            )
            .unwrap();
            let c = Control::from_bytes(&c.to_bytes()).unwrap();
            assert_eq!(c.verify(&ctx(bob(), alice(), &seen)).unwrap(), &kind);
        }
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let seen = |_: &[u8; 32], _: &MessageId| false;
        for kind in kinds() {
            let bytes = Control::sign(alice(), bob().public(), MessageId([7; 16]), NOW, kind)
                .unwrap()
                .to_bytes();
            for bit in 0..bytes.len() * 8 {
                let mut b = bytes.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                if let Ok(c) = Control::from_bytes(&b) {
                    assert!(c.verify(&ctx(bob(), alice(), &seen)).is_err(), "bit {bit}");
                }
            }
        }
    }

    #[test]
    fn kinds_cannot_be_swapped_under_one_signature() {
        let seen = |_: &[u8; 32], _: &MessageId| false;
        let mut c = Control::sign(
            alice(),
            bob().public(),
            MessageId([1; 16]),
            NOW,
            ControlKind::CipherSwitch {
                cipher: Cipher::Aes,
            },
        )
        .unwrap();
        c.kind = ControlKind::DeleteChat;
        let err = c.verify(&ctx(bob(), alice(), &seen)).unwrap_err();
        assert_eq!(err.reason(), RejectReason::BadSignature);
    }

    #[test]
    fn forged_misaddressed_and_replayed_rejected() {
        let never = |_: &[u8; 32], _: &MessageId| false;
        let c = Control::sign(
            alice(),
            bob().public(),
            MessageId([2; 16]),
            NOW,
            ControlKind::DeleteChat,
        )
        .unwrap();
        // Arrives on Carol's connection: not Carol's key.
        assert_eq!(
            c.verify(&ctx(bob(), carol(), &never)).unwrap_err().reason(),
            RejectReason::SenderMismatch
        );
        // Delivered to Carol.
        assert_eq!(
            c.verify(&ctx(carol(), alice(), &never))
                .unwrap_err()
                .reason(),
            RejectReason::WrongRecipient
        );
        // Already seen.
        let always = |_: &[u8; 32], _: &MessageId| true;
        assert_eq!(
            c.verify(&ctx(bob(), alice(), &always))
                .unwrap_err()
                .reason(),
            RejectReason::Replayed
        );
    }

    #[test]
    fn oversized_ack_refused_on_both_ends() {
        let ids = vec![MessageId([0; 16]); MAX_ACK_IDS + 1];
        assert_eq!(
            Control::sign(
                alice(),
                bob().public(),
                MessageId([3; 16]),
                NOW,
                ControlKind::DeliveryAck { ids: ids.clone() }
            )
            .unwrap_err(),
            ControlError::TooManyIds(MAX_ACK_IDS + 1)
        );
        let mut c = Control::sign(
            alice(),
            bob().public(),
            MessageId([3; 16]),
            NOW,
            ControlKind::DeleteChat,
        )
        .unwrap();
        c.kind = ControlKind::DeliveryAck { ids };
        assert!(Control::from_bytes(&c.to_bytes()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1024)) {
            let _ = Control::from_bytes(&bytes);
        }
    }
}
