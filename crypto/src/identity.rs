//! Identities: one Ed25519 key pair (signing, and the libp2p identity) plus one RSA key pair
//! (encryption), and the signed profile that publishes both under a name.
//!
//! The Ed25519 key *is* the libp2p key: [`Identity::to_libp2p_keypair`] hands the same secret to
//! libp2p, so a [`PeerId`] names exactly one signing key and a profile can be checked against
//! the PeerId it arrived from ([`SignedProfile::verify`]).

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::PeerId;
use crate::canonical::Canonical;
use crate::codec;
use crate::fingerprint::Fingerprint;

/// Length of an Ed25519 public key, secret key seed, and a raw peer key in envelopes.
pub const ED25519_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Longest accepted display name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 64;
/// Largest accepted encoded profile.
pub const MAX_PROFILE_LEN: usize = 2048;

/// Errors about keys and profiles.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    /// RSA key generation failed (the RNG failed, or an unsupported size).
    #[error("RSA key generation failed: {0}")]
    KeyGeneration(String),
    /// A key's bytes are not a valid key of the expected kind and size.
    #[error("invalid {kind} key: {reason}")]
    InvalidKey {
        /// Which key (`ed25519`, `rsa public`, `rsa private`).
        kind: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// A name is empty, too long, or holds control characters.
    #[error("invalid name: {0}")]
    InvalidName(&'static str),
    /// A profile's signature does not verify, or it does not belong to the claimed peer.
    #[error("profile rejected: {0}")]
    BadProfile(&'static str),
    /// Bytes that do not decode as a profile.
    #[error("malformed profile: {0}")]
    Malformed(#[from] codec::CodecError),
}

/// Size of the RSA key, chosen by the caller when an identity is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RsaBits {
    /// 2048 bits: fastest; still acceptable, mainly for tests and small devices.
    B2048,
    /// 3072 bits: the default (about 128-bit security).
    #[default]
    B3072,
    /// 4096 bits.
    B4096,
}

impl RsaBits {
    /// Number of bits.
    pub fn bits(self) -> usize {
        match self {
            RsaBits::B2048 => 2048,
            RsaBits::B3072 => 3072,
            RsaBits::B4096 => 4096,
        }
    }

    /// The size for a number of bits, if it is one we support.
    pub fn from_bits(bits: usize) -> Option<Self> {
        match bits {
            2048 => Some(RsaBits::B2048),
            3072 => Some(RsaBits::B3072),
            4096 => Some(RsaBits::B4096),
            _ => None,
        }
    }
}

/// A user's full identity: both private keys. Zeroized on drop; never printed.
pub struct Identity {
    signing: SigningKey,
    rsa: RsaPrivateKey,
    public: PublicIdentity,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.public.peer_id())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Generates a fresh identity. RSA generation takes from well under a second (2048 bits) to
    /// several seconds (4096 bits).
    ///
    /// # Errors
    /// [`IdentityError::KeyGeneration`] if the RSA generator fails.
    pub fn generate<R: CryptoRng + ?Sized>(
        rng: &mut R,
        bits: RsaBits,
    ) -> Result<Self, IdentityError> {
        let signing = SigningKey::generate(rng);
        let rsa = RsaPrivateKey::new(rng, bits.bits())
            .map_err(|e| IdentityError::KeyGeneration(e.to_string()))?;
        Self::from_keys(signing, rsa)
    }

    /// Rebuilds an identity from its secret parts, as stored in the keystore.
    ///
    /// # Errors
    /// [`IdentityError::InvalidKey`] if the RSA key does not parse, fails validation, or has an
    /// unsupported size.
    pub fn from_secret_parts(
        ed25519_secret: &[u8; ED25519_LEN],
        rsa_pkcs8_der: &[u8],
    ) -> Result<Self, IdentityError> {
        let signing = SigningKey::from_bytes(ed25519_secret);
        let rsa = RsaPrivateKey::from_pkcs8_der(rsa_pkcs8_der).map_err(|e| {
            IdentityError::InvalidKey {
                kind: "rsa private",
                reason: e.to_string(),
            }
        })?;
        rsa.validate().map_err(|e| IdentityError::InvalidKey {
            kind: "rsa private",
            reason: e.to_string(),
        })?;
        Self::from_keys(signing, rsa)
    }

    fn from_keys(signing: SigningKey, rsa: RsaPrivateKey) -> Result<Self, IdentityError> {
        let rsa_public = rsa.to_public_key();
        let public = PublicIdentity::from_keys(signing.verifying_key(), rsa_public)?;
        Ok(Identity {
            signing,
            rsa,
            public,
        })
    }

    /// The Ed25519 secret seed (for the keystore only).
    pub fn ed25519_secret(&self) -> Zeroizing<[u8; ED25519_LEN]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The RSA private key as PKCS#8 DER (for the keystore only).
    ///
    /// # Errors
    /// [`IdentityError::InvalidKey`] if the key cannot be encoded (not expected).
    pub fn rsa_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
        let doc = self
            .rsa
            .to_pkcs8_der()
            .map_err(|e| IdentityError::InvalidKey {
                kind: "rsa private",
                reason: e.to_string(),
            })?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// The public half.
    pub fn public(&self) -> &PublicIdentity {
        &self.public
    }

    /// The libp2p PeerId, derived from the Ed25519 key.
    pub fn peer_id(&self) -> PeerId {
        self.public.peer_id()
    }

    /// The same Ed25519 key as a libp2p keypair, for the swarm.
    pub fn to_libp2p_keypair(&self) -> libp2p_identity::Keypair {
        let secret = self.ed25519_secret();
        // `ed25519_from_bytes` zeroizes the buffer it is given; it only fails on a wrong length,
        // and a seed is always 32 bytes.
        libp2p_identity::Keypair::ed25519_from_bytes(*secret)
            .expect("a 32-byte Ed25519 seed is always a valid libp2p secret key")
    }

    /// Signs a canonical message.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(message).to_bytes()
    }

    /// RSA-OAEP-SHA256 decryption of one block, blinded with `rng`.
    pub(crate) fn rsa_decrypt<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        block: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        self.rsa
            .decrypt_blinded(rng, Oaep::<Sha256>::new(), block)
            .ok()
            .map(Zeroizing::new)
    }

    /// Signs a profile publishing this identity under `name`.
    ///
    /// # Errors
    /// [`IdentityError::InvalidName`] if the name is not acceptable (see [`validate_name`]).
    pub fn sign_profile(
        &self,
        name: &str,
        created_ms: u64,
    ) -> Result<SignedProfile, IdentityError> {
        let name = validate_name(name)?;
        let mut profile = SignedProfile {
            version: SignedProfile::VERSION,
            name,
            ed25519: self.public.ed25519_bytes(),
            rsa: serde_bytes::ByteBuf::from(self.public.rsa_der().to_vec()),
            created: created_ms,
            signature: [0; SIGNATURE_LEN],
        };
        profile.signature = self.sign(&profile.signed_bytes());
        Ok(profile)
    }
}

/// The public half of an identity: what peers pin and encrypt to.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicIdentity {
    ed25519: VerifyingKey,
    rsa: RsaPublicKey,
    rsa_der: Vec<u8>,
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicIdentity")
            .field("peer_id", &self.peer_id())
            .field("rsa_bits", &(self.rsa.size() * 8))
            .finish()
    }
}

impl PublicIdentity {
    fn from_keys(ed25519: VerifyingKey, rsa: RsaPublicKey) -> Result<Self, IdentityError> {
        check_rsa_size(&rsa)?;
        let rsa_der = rsa
            .to_public_key_der()
            .map_err(|e| IdentityError::InvalidKey {
                kind: "rsa public",
                reason: e.to_string(),
            })?
            .as_bytes()
            .to_vec();
        Ok(PublicIdentity {
            ed25519,
            rsa,
            rsa_der,
        })
    }

    /// Parses a public identity from raw bytes: a 32-byte Ed25519 key and an RSA public key
    /// in SubjectPublicKeyInfo DER. Weak Ed25519 keys and RSA keys outside 2048–4096 bits are
    /// rejected.
    ///
    /// # Errors
    /// [`IdentityError::InvalidKey`] naming which key is wrong.
    pub fn from_bytes(ed25519: &[u8; ED25519_LEN], rsa_der: &[u8]) -> Result<Self, IdentityError> {
        let ed = VerifyingKey::from_bytes(ed25519).map_err(|e| IdentityError::InvalidKey {
            kind: "ed25519",
            reason: e.to_string(),
        })?;
        if ed.is_weak() {
            return Err(IdentityError::InvalidKey {
                kind: "ed25519",
                reason: "weak (small-order) key".into(),
            });
        }
        let rsa =
            RsaPublicKey::from_public_key_der(rsa_der).map_err(|e| IdentityError::InvalidKey {
                kind: "rsa public",
                reason: e.to_string(),
            })?;
        let public = Self::from_keys(ed, rsa)?;
        // Only the canonical DER of a key is accepted, so one key has one encoding.
        if public.rsa_der != rsa_der {
            return Err(IdentityError::InvalidKey {
                kind: "rsa public",
                reason: "non-canonical encoding".into(),
            });
        }
        Ok(public)
    }

    /// The raw Ed25519 public key.
    pub fn ed25519_bytes(&self) -> [u8; ED25519_LEN] {
        self.ed25519.to_bytes()
    }

    /// The RSA public key in SubjectPublicKeyInfo DER.
    pub fn rsa_der(&self) -> &[u8] {
        &self.rsa_der
    }

    /// RSA modulus size in bytes (the size of one RSA-OAEP ciphertext block).
    pub fn rsa_block_len(&self) -> usize {
        self.rsa.size()
    }

    /// The libp2p PeerId of the Ed25519 key.
    pub fn peer_id(&self) -> PeerId {
        peer_id_of(&self.ed25519_bytes()).expect("a validated Ed25519 key always converts")
    }

    /// This identity's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self)
    }

    /// Verifies an Ed25519 signature over `message` (strict: no malleable signatures).
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.ed25519.verify_strict(message, &sig).is_ok()
    }

    /// Whether every signature was made with this key over its message, checked in one
    /// Ed25519 batch verification (see [`crate::envelope::verify_many`] for how it compares
    /// with [`Self::verify`]). A key of small order, which [`Self::verify`] never accepts,
    /// fails every batch.
    pub(crate) fn verify_batch(&self, signed: &[(Vec<u8>, [u8; SIGNATURE_LEN])]) -> bool {
        if self.ed25519.is_weak() {
            return false;
        }
        let messages: Vec<&[u8]> = signed.iter().map(|(m, _)| &m[..]).collect();
        let signatures: Vec<ed25519_dalek::Signature> = signed
            .iter()
            .map(|(_, s)| ed25519_dalek::Signature::from_bytes(s))
            .collect();
        let keys = vec![self.ed25519; signed.len()];
        ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
    }

    /// RSA-OAEP-SHA256 encryption of one block (at most [`Self::rsa_max_plaintext`] bytes).
    pub(crate) fn rsa_encrypt<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        block: &[u8],
    ) -> Result<Vec<u8>, rsa::Error> {
        self.rsa.encrypt(rng, Oaep::<Sha256>::new(), block)
    }

    /// The largest plaintext one RSA-OAEP-SHA256 block can hold: `k - 2·32 - 2`.
    pub fn rsa_max_plaintext(&self) -> usize {
        self.rsa.size() - 2 * 32 - 2
    }
}

fn check_rsa_size(rsa: &RsaPublicKey) -> Result<(), IdentityError> {
    let bits = rsa.size() * 8;
    if RsaBits::from_bits(bits).is_none() {
        return Err(IdentityError::InvalidKey {
            kind: "rsa public",
            reason: format!("unsupported size of {bits} bits (2048, 3072 or 4096 expected)"),
        });
    }
    Ok(())
}

/// The libp2p PeerId of a raw Ed25519 public key, or `None` if the bytes are not a key.
pub fn peer_id_of(ed25519: &[u8; ED25519_LEN]) -> Option<PeerId> {
    let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(ed25519).ok()?;
    Some(libp2p_identity::PublicKey::from(key).to_peer_id())
}

/// Checks a display name and returns it trimmed.
///
/// Names are 1 to [`MAX_NAME_LEN`] bytes of UTF-8 with no control characters. They are not
/// unique: the fingerprint is what tells two people called "alice" apart.
///
/// # Errors
/// [`IdentityError::InvalidName`] saying what is wrong.
pub fn validate_name(name: &str) -> Result<String, IdentityError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(IdentityError::InvalidName("the name is empty"));
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(IdentityError::InvalidName(
            "the name is longer than 64 bytes",
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(IdentityError::InvalidName(
            "the name contains control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// A profile as it travels and is stored: {name, Ed25519 public, RSA public, created}, signed
/// by the Ed25519 key it contains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedProfile {
    /// Format version, [`SignedProfile::VERSION`].
    pub version: u8,
    /// Display name (not unique).
    pub name: String,
    /// Ed25519 public key.
    #[serde(with = "serde_bytes")]
    pub ed25519: [u8; ED25519_LEN],
    /// RSA public key, SubjectPublicKeyInfo DER.
    pub rsa: serde_bytes::ByteBuf,
    /// Creation time, Unix milliseconds.
    pub created: u64,
    /// Ed25519 signature over the canonical encoding.
    #[serde(with = "serde_bytes")]
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignedProfile {
    /// The current profile format.
    pub const VERSION: u8 = 1;

    fn signed_bytes(&self) -> Vec<u8> {
        Canonical::new(b"encrypto/profile/v1")
            .u8(self.version)
            .bytes(self.name.as_bytes())
            .fixed(&self.ed25519)
            .bytes(&self.rsa)
            .u64(self.created)
            .finish()
    }

    /// Encodes the profile as CBOR.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self).expect("a profile always encodes")
    }

    /// Decodes a profile (not yet verified).
    ///
    /// # Errors
    /// [`IdentityError::Malformed`] for bytes that are not a profile or exceed
    /// [`MAX_PROFILE_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        Ok(codec::decode_canonical(bytes, MAX_PROFILE_LEN)?)
    }

    /// Checks the profile's keys, name and signature, and that it belongs to `expected`.
    ///
    /// # Errors
    /// [`IdentityError`] saying what failed; a profile that fails is never to be used.
    pub fn verify(&self, expected: &PeerId) -> Result<VerifiedProfile, IdentityError> {
        let verified = self.verify_self_signed()?;
        if verified.public.peer_id() != *expected {
            return Err(IdentityError::BadProfile("profile belongs to another peer"));
        }
        Ok(verified)
    }

    /// Checks keys, name and signature without knowing which peer it should belong to.
    ///
    /// # Errors
    /// [`IdentityError`] saying what failed.
    pub fn verify_self_signed(&self) -> Result<VerifiedProfile, IdentityError> {
        if self.version != Self::VERSION {
            return Err(IdentityError::BadProfile("unsupported profile version"));
        }
        let name = validate_name(&self.name)?;
        if name != self.name {
            return Err(IdentityError::InvalidName(
                "name has surrounding whitespace",
            ));
        }
        let public = PublicIdentity::from_bytes(&self.ed25519, &self.rsa)?;
        if !public.verify(&self.signed_bytes(), &self.signature) {
            return Err(IdentityError::BadProfile("bad signature"));
        }
        Ok(VerifiedProfile {
            name,
            public,
            created: self.created,
        })
    }
}

/// A profile whose signature and keys have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProfile {
    /// Display name.
    pub name: String,
    /// The keys.
    pub public: PublicIdentity,
    /// Creation time, Unix milliseconds.
    pub created: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{alice, bob};

    #[test]
    fn libp2p_keypair_is_the_signing_key() {
        let a = alice();
        let kp = a.to_libp2p_keypair();
        assert_eq!(kp.public().to_peer_id(), a.peer_id());
        // A signature made through libp2p verifies with our key, and vice versa.
        let sig = kp.sign(b"hello").unwrap();
        let sig: [u8; 64] = sig.try_into().unwrap();
        assert!(a.public().verify(b"hello", &sig));
        let ours = a.sign(b"hello");
        assert!(kp.public().verify(b"hello", &ours));
    }

    #[test]
    fn secret_parts_round_trip() {
        let a = alice();
        let b =
            Identity::from_secret_parts(&a.ed25519_secret(), &a.rsa_pkcs8_der().unwrap()).unwrap();
        assert_eq!(a.public(), b.public());
    }

    #[test]
    fn profile_verifies_against_its_peer_only() {
        let a = alice();
        let p = a.sign_profile("Alice", 1_700_000_000_000).unwrap();
        let v = SignedProfile::from_bytes(&p.to_bytes())
            .unwrap()
            .verify(&a.peer_id())
            .unwrap();
        assert_eq!(v.name, "Alice");
        assert_eq!(&v.public, a.public());
        assert_eq!(
            p.verify(&bob().peer_id()),
            Err(IdentityError::BadProfile("profile belongs to another peer"))
        );
    }

    #[test]
    fn tampered_profile_rejected() {
        let a = alice();
        let p = a.sign_profile("Alice", 1).unwrap();
        let mut renamed = p.clone();
        renamed.name = "Mallory".into();
        assert!(renamed.verify(&a.peer_id()).is_err());
        let mut later = p.clone();
        later.created += 1;
        assert!(later.verify(&a.peer_id()).is_err());
        // Someone else's RSA key under Alice's signature.
        let mut swapped = p.clone();
        swapped.rsa = serde_bytes::ByteBuf::from(bob().public().rsa_der().to_vec());
        assert!(swapped.verify(&a.peer_id()).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("  ").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
        assert!(validate_name("a\u{0}b").is_err());
        assert_eq!(validate_name("  Zoë ").unwrap(), "Zoë");
    }

    #[test]
    fn every_flipped_bit_of_a_profile_is_rejected() {
        let a = alice();
        let bytes = a
            .sign_profile("Alice", 1_700_000_000_000)
            .unwrap()
            .to_bytes();
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            if let Ok(p) = SignedProfile::from_bytes(&b) {
                assert!(p.verify(&a.peer_id()).is_err(), "bit {bit} accepted");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)
        ) {
            if let Ok(p) = SignedProfile::from_bytes(&bytes) {
                let _ = p.verify_self_signed();
            }
        }

        #[test]
        fn profiles_round_trip_for_any_valid_name(name in "[^\\p{Cc}]{1,20}", created in 0u64..u64::MAX) {
            let a = alice();
            if let Ok(p) = a.sign_profile(&name, created) {
                let v = SignedProfile::from_bytes(&p.to_bytes()).unwrap().verify(&a.peer_id()).unwrap();
                proptest::prop_assert_eq!(v.name, name.trim());
                proptest::prop_assert_eq!(v.created, created);
            }
        }
    }

    #[test]
    fn unsupported_rsa_size_rejected() {
        let mut rng = crate::test_support::rng(9);
        let small = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let der = small.to_public_key().to_public_key_der().unwrap();
        let err = PublicIdentity::from_bytes(&alice().public().ed25519_bytes(), der.as_bytes())
            .unwrap_err();
        assert!(matches!(
            err,
            IdentityError::InvalidKey {
                kind: "rsa public",
                ..
            }
        ));
    }
}
