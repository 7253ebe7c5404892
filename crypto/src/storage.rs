//! Sealing records at rest with the storage key.

use zeroize::Zeroizing;

/// The random 256-bit key that seals history and other records on disk.
pub struct StorageKey(Zeroizing<[u8; 32]>);
