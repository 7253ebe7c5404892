//! The name directory on Kademlia: how names and profiles map to DHT keys, and what the node
//! accepts into its record store.
//!
//! - A node **announces** itself as a provider of [`name_key`] of its normalised name (names
//!   are not unique: many nodes may provide the same key), and **publishes** its signed profile
//!   as the record under [`profile_key`] of its PeerId. Kademlia republishes both on a schedule
//!   and they expire when no longer republished.
//! - A **search** gets the providers of the name's key, then each provider's profile record,
//!   and keeps only profiles that verify against the PeerId they are filed under and carry
//!   the name searched for.
//! - **Nothing unsigned is stored**: the node filters inbound records ([`validate_record`]:
//!   only our profile keys, each holding a profile signed by the key's PeerId, size-bounded)
//!   and provider announcements ([`is_name_key`]; Kademlia itself only accepts a provider
//!   record from the provider).

use encrypto_crypto::{PeerId, SignedProfile, VerifiedProfile};
use libp2p::kad::{Record, RecordKey};

/// Prefix of the keys that names map to.
const NAME_PREFIX: &[u8] = b"/encrypto/name/1/";
/// Prefix of the keys that profiles are filed under.
const PROFILE_PREFIX: &[u8] = b"/encrypto/profile/1/";
/// The largest profile record accepted (a profile with a 4096-bit RSA key is about 700 bytes).
pub const MAX_PROFILE_RECORD: usize = 4 * 1024;

/// Why a DHT record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Not under our profile prefix, or the PeerId in the key does not parse.
    #[error("not an encrypto profile key")]
    Key,
    /// Over [`MAX_PROFILE_RECORD`].
    #[error("profile record of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The value is not a profile signed by the key's PeerId.
    #[error("profile record does not verify: {0}")]
    Unverified(String),
}

/// A name as the directory files it: trimmed, inner whitespace collapsed, lowercase. "Alice",
/// " alice " and "ALICE" are the same entry.
pub fn normalise(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The DHT key for a name: a hash of the normalised name under our prefix (so keys have one
/// length and reveal the name only to someone who guesses it).
pub fn name_key(name: &str) -> RecordKey {
    let hash = blake3::derive_key("encrypto name directory v1", normalise(name).as_bytes());
    let mut key = NAME_PREFIX.to_vec();
    key.extend_from_slice(&hash);
    RecordKey::new(&key)
}

/// Whether a provider announcement is for a name key of ours.
pub fn is_name_key(key: &RecordKey) -> bool {
    let bytes = key.as_ref();
    bytes.len() == NAME_PREFIX.len() + 32 && bytes.starts_with(NAME_PREFIX)
}

/// The DHT key under which `peer` publishes its signed profile.
pub fn profile_key(peer: &PeerId) -> RecordKey {
    let mut key = PROFILE_PREFIX.to_vec();
    key.extend_from_slice(&peer.to_bytes());
    RecordKey::new(&key)
}

/// The profile record for our own profile.
pub fn profile_record(peer: &PeerId, profile: &SignedProfile) -> Record {
    let mut record = Record::new(profile_key(peer), profile.to_bytes());
    record.publisher = Some(*peer);
    record
}

/// Checks a profile record: our key prefix, a PeerId, a bounded value holding a profile signed
/// by that PeerId. Returns the PeerId and the verified profile.
///
/// # Errors
/// [`RecordError`] saying what is wrong.
pub fn validate_record(record: &Record) -> Result<(PeerId, VerifiedProfile), RecordError> {
    let key = record.key.as_ref();
    let peer = key
        .strip_prefix(PROFILE_PREFIX)
        .and_then(|id| PeerId::from_bytes(id).ok())
        .ok_or(RecordError::Key)?;
    if record.value.len() > MAX_PROFILE_RECORD {
        return Err(RecordError::TooLarge(record.value.len()));
    }
    let verified = SignedProfile::from_bytes(&record.value)
        .and_then(|p| p.verify(&peer))
        .map_err(|e| RecordError::Unverified(e.to_string()))?;
    Ok((peer, verified))
}

#[cfg(test)]
mod tests {
    use encrypto_crypto::{Identity, RsaBits};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn identity(seed: u64) -> Identity {
        Identity::generate(&mut StdRng::seed_from_u64(seed), RsaBits::B2048).unwrap()
    }

    #[test]
    fn names_normalise_to_one_key() {
        assert_eq!(normalise("  Alice \t Smith "), "alice smith");
        assert_eq!(name_key("ALICE"), name_key(" alice"));
        assert_ne!(name_key("alice"), name_key("alicia"));
        assert!(is_name_key(&name_key("bob")));
        assert!(!is_name_key(&RecordKey::new(b"/encrypto/name/1/short")));
        assert!(!is_name_key(&profile_key(&identity(1).peer_id())));
    }

    #[test]
    fn a_signed_profile_record_validates() {
        let alice = identity(1);
        let record = profile_record(&alice.peer_id(), &alice.sign_profile("Alice", 5).unwrap());
        let (peer, verified) = validate_record(&record).unwrap();
        assert_eq!(peer, alice.peer_id());
        assert_eq!(verified.name, "Alice");
    }

    #[test]
    fn forged_foreign_oversized_and_garbage_records_are_refused() {
        let (alice, mallory) = (identity(1), identity(2));
        // Mallory's validly signed profile filed under Alice's key.
        let mut forged =
            profile_record(&alice.peer_id(), &mallory.sign_profile("Alice", 5).unwrap());
        assert!(matches!(
            validate_record(&forged),
            Err(RecordError::Unverified(_))
        ));
        // Alice's profile with a byte changed.
        let mut bytes = alice.sign_profile("Alice", 5).unwrap().to_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        forged.value = bytes;
        assert!(validate_record(&forged).is_err());
        // Not our prefix.
        let other = Record::new(RecordKey::new(b"/other/key"), vec![1, 2, 3]);
        assert_eq!(validate_record(&other), Err(RecordError::Key));
        // Too large.
        let big = Record::new(
            profile_key(&alice.peer_id()),
            vec![0; MAX_PROFILE_RECORD + 1],
        );
        assert_eq!(
            validate_record(&big),
            Err(RecordError::TooLarge(MAX_PROFILE_RECORD + 1))
        );
        // Random bytes.
        let junk = Record::new(profile_key(&alice.peer_id()), vec![0xff; 100]);
        assert!(matches!(
            validate_record(&junk),
            Err(RecordError::Unverified(_))
        ));
    }
}
