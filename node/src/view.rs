//! What the window, the daemon and the tests see of the node's data: plain values made from the
//! store's records, so that callers never depend on how the store keeps them (a contact's raw
//! signed profiles, the record forms), and the store can change without changing them.
//!
//! [`FileTransfer`](crate::NodeHandle::files) is such a view too. [`Contact`] and [`Message`]
//! are what [`NodeHandle`](crate::NodeHandle) returns for contacts and history; the small
//! enums they carry ([`Body`], [`Direction`], [`Status`], [`TransferRole`], [`TransferState`])
//! are the store's own, re-exported here.

use std::fmt;

use encrypto_crypto::fingerprint::Fingerprint;
use encrypto_crypto::{Cipher, MessageId, PeerId, PublicIdentity, SignedProfile};

use crate::store;
pub use crate::store::{Body, Direction, Status, TransferRole, TransferState};

/// A peer whose keys are pinned, with the cipher chosen for the chat and what the user marked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The contact's PeerId (its Ed25519 key).
    pub peer_id: PeerId,
    /// Display name (from its profile, or chosen locally).
    pub name: String,
    /// The pinned public keys; `None` if the stored keys do not parse (a damaged record).
    pub public: Option<PublicIdentity>,
    /// Cipher of this chat.
    pub cipher: Cipher,
    /// The user compared safety numbers.
    pub verified: bool,
    /// The peer presented keys other than the pinned ones; the user has not accepted them.
    pub key_changed: bool,
    /// When the contact was added, Unix milliseconds.
    pub added_ms: u64,
    /// The keys the peer presented instead of the pinned ones (checked against its PeerId),
    /// which the user accepts by verifying the contact after comparing safety numbers; `None`
    /// unless `key_changed`.
    pub presented: Option<PublicIdentity>,
    /// Shown in the contact list: the user added this peer, or a chat with it exists. Every
    /// peer whose profile was verified has its keys pinned (trust on first use), but only
    /// these are the user's contacts.
    pub listed: bool,
    /// The user trusts this contact to hold sealed files for others: when a recipient is
    /// offline, files go to it automatically (it never gets the key, only sealed chunks).
    pub relay: bool,
}

impl Contact {
    /// The fingerprint of the pinned keys, or `None` if they do not parse. Computed on each
    /// call (an iterated hash, deliberately slow): a caller that shows many keeps them.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.public.as_ref().map(PublicIdentity::fingerprint)
    }
}

impl From<store::Contact> for Contact {
    fn from(c: store::Contact) -> Self {
        let public = c.public().ok();
        // The node keeps the presented profile only once it verified it; a record whose
        // profile no longer verifies offers nothing to accept.
        let presented = c
            .pending_profile
            .as_deref()
            .and_then(|bytes| SignedProfile::from_bytes(bytes).ok())
            .and_then(|p| p.verify(&c.peer_id).ok())
            .map(|v| v.public);
        Contact {
            peer_id: c.peer_id,
            name: c.name,
            public,
            cipher: c.cipher,
            verified: c.verified,
            key_changed: c.key_changed,
            added_ms: c.added_ms,
            presented,
            listed: c.listed,
            relay: c.relay,
        }
    }
}

/// One message of a chat's history. `Debug` does not print its text or its envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The message id (chosen by the sender).
    pub id: MessageId,
    /// The other side of the chat.
    pub peer: PeerId,
    /// Which way it went.
    pub direction: Direction,
    /// When it was sent (outgoing) or the sender's timestamp (incoming), Unix milliseconds.
    pub timestamp_ms: u64,
    /// The cipher it was sent with.
    pub cipher: Cipher,
    /// Its content.
    pub body: Body,
    /// Its delivery state.
    pub status: Status,
    /// The sealed envelope as sent or received, for "show ciphertext" (`None` until an
    /// outgoing message is acknowledged).
    pub envelope: Option<Vec<u8>>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("direction", &self.direction)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("cipher", &self.cipher)
            .field("body", &self.body)
            .field("status", &self.status)
            .field("envelope_len", &self.envelope.as_ref().map(Vec::len))
            .finish()
    }
}

impl From<store::StoredMessage> for Message {
    fn from(m: store::StoredMessage) -> Self {
        Message {
            id: m.id,
            peer: m.peer,
            direction: m.direction,
            timestamp_ms: m.timestamp_ms,
            cipher: m.cipher,
            body: m.body,
            status: m.status,
            envelope: m.envelope,
        }
    }
}

#[cfg(test)]
mod tests {
    use encrypto_crypto::{Identity, RsaBits};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const NOW: u64 = 1_767_225_600_000;

    fn identity(seed: u64) -> Identity {
        Identity::generate(&mut StdRng::seed_from_u64(seed), RsaBits::B2048).unwrap()
    }

    fn stored(identity: &Identity) -> store::Contact {
        let public = identity.public();
        store::Contact {
            peer_id: identity.peer_id(),
            name: "alice".into(),
            profile: identity.sign_profile("alice", NOW).unwrap().to_bytes(),
            ed25519: public.ed25519_bytes(),
            rsa_der: public.rsa_der().to_vec(),
            cipher: Cipher::Aes,
            verified: true,
            key_changed: false,
            added_ms: NOW,
            pending_profile: None,
            listed: true,
            relay: true,
        }
    }

    #[test]
    fn a_contact_carries_its_parsed_keys_and_marks() {
        let alice = identity(1);
        let view = Contact::from(stored(&alice));
        assert_eq!(view.peer_id, alice.peer_id());
        assert_eq!(view.name, "alice");
        assert_eq!(view.public.as_ref(), Some(alice.public()));
        assert_eq!(view.fingerprint(), Some(alice.public().fingerprint()));
        assert_eq!(view.cipher, Cipher::Aes);
        assert!(view.verified && !view.key_changed && view.listed && view.relay);
        assert_eq!(view.added_ms, NOW);
        assert_eq!(view.presented, None);
    }

    #[test]
    fn a_changed_key_is_presented_only_when_its_profile_verifies() {
        let alice = identity(1);
        // The same Ed25519 key (so the same PeerId) with another RSA key.
        let other = identity(2);
        let swapped =
            Identity::from_secret_parts(&alice.ed25519_secret(), &other.rsa_pkcs8_der().unwrap())
                .unwrap();
        let mut record = stored(&alice);
        record.key_changed = true;
        record.pending_profile = Some(swapped.sign_profile("alice", NOW).unwrap().to_bytes());
        let view = Contact::from(record.clone());
        assert!(view.key_changed);
        assert_eq!(view.public.as_ref(), Some(alice.public()));
        assert_eq!(view.presented.as_ref(), Some(swapped.public()));

        // Another peer's profile does not verify against this PeerId.
        record.pending_profile = Some(other.sign_profile("mallory", NOW).unwrap().to_bytes());
        assert_eq!(Contact::from(record.clone()).presented, None);
        record.pending_profile = Some(vec![0xff; 8]);
        assert_eq!(Contact::from(record).presented, None);
    }

    #[test]
    fn keys_that_do_not_parse_leave_the_contact_without_keys() {
        let mut record = stored(&identity(1));
        record.rsa_der = vec![1, 2, 3];
        let view = Contact::from(record);
        assert_eq!(view.public, None);
        assert_eq!(view.fingerprint(), None);
    }

    #[test]
    fn a_message_keeps_every_field_and_debug_hides_its_text() {
        let mut rng = StdRng::seed_from_u64(3);
        let stored = store::StoredMessage {
            id: MessageId::random(&mut rng),
            peer: identity(1).peer_id(),
            direction: Direction::Out,
            timestamp_ms: NOW,
            cipher: Cipher::Rsa,
            body: Body::Text("secret words".into()),
            status: Status::Delivered,
            envelope: Some(vec![7; 40]),
        };
        let view = Message::from(stored.clone());
        assert_eq!(view.id, stored.id);
        assert_eq!(view.peer, stored.peer);
        assert_eq!(view.direction, Direction::Out);
        assert_eq!(view.timestamp_ms, NOW);
        assert_eq!(view.cipher, Cipher::Rsa);
        assert_eq!(view.body, stored.body);
        assert_eq!(view.status, Status::Delivered);
        assert_eq!(view.envelope, stored.envelope);
        let debug = format!("{view:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("envelope_len: Some(40)"), "{debug}");
    }
}
