//! `/encrypto/profile/1`: both sides send their signed profile.

use serde::{Deserialize, Serialize};

/// A request on `/encrypto/profile/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRequest {
    /// The requester's [`SignedProfile`](encrypto_crypto::SignedProfile) CBOR.
    pub profile: serde_bytes::ByteBuf,
}

/// The answer on `/encrypto/profile/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileResponse {
    /// The responder's [`SignedProfile`](encrypto_crypto::SignedProfile) CBOR.
    pub profile: serde_bytes::ByteBuf,
}
