//! Encrypto's cryptographic core.
//!
//! Everything a node needs to prove who it is, keep its secrets on disk, and exchange messages
//! and files that only the intended recipient can read. The crate is pure: no I/O, no async, no
//! global clock or RNG. Every function that needs the time takes `now_ms` (Unix milliseconds)
//! and every function that needs randomness takes `rng: &mut impl CryptoRng`, so tests are exact
//! and the node, the tests and the fuzzers share one code path.
//!
//! # Layout
//!
//! - [`codec`]: the one CBOR encoder/decoder, with a size limit checked before decoding.
//! - [`identity`]: Ed25519 + RSA identities, the libp2p [`PeerId`] bridge, signed profiles.
//! - [`fingerprint`]: per-identity fingerprints and pairwise safety numbers.
//! - [`keystore`]: private keys and the storage key, sealed under Argon2id(passphrase).
//! - [`envelope`]: signed, encrypted chat messages (`aes` sessions and `rsa` blocks), signed
//!   in batches.
//! - [`merkle`]: the Merkle trees that let one signature cover a batch of envelopes.
//! - [`control`]: signed control payloads (cipher switch, delete chat, delivery ack).
//! - [`file`](mod@file): signed file manifests and sealed, independently verifiable chunks.
//! - [`storage`]: sealing records at rest with the storage key.
//!
//! # Wire format
//!
//! All structures travel as CBOR (serde_cbor, packed: fields keyed by index). Signatures never
//! cover CBOR bytes: each signed structure has its own canonical byte encoding with a domain
//! separation prefix, so re-encoding can never change what was signed. Known-answer vectors in
//! `crypto/tests/vectors/` pin the format.
#![deny(unsafe_code)]

pub mod codec;
pub mod control;
pub mod envelope;
pub mod file;
pub mod fingerprint;
pub mod identity;
pub mod keystore;
pub mod merkle;
pub mod storage;

mod aead;
mod canonical;
#[cfg(test)]
mod test_support;

pub use libp2p_identity::PeerId;
pub use rand_core::{self, CryptoRng};

pub use envelope::{Cipher, KeyId, MessageId};
pub use fingerprint::{Fingerprint, SafetyNumber};
pub use identity::{Identity, PublicIdentity, RsaBits, SignedProfile, VerifiedProfile};
pub use storage::StorageKey;
