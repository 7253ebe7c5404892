//! Encrypto's node: everything that runs on a user's machine around the pure crypto core.
//!
//! Today the node owns the data directory and the keystore file in it: creating an identity,
//! unlocking it with the passphrase, and changing the passphrase, with atomic writes and
//! owner-only permissions. The binary, the window and the tests all go through this crate, so
//! none of them touches the disk on their own.
//!
//! # Layout
//!
//! - [`datadir`]: the data directory (mode 0700) and the sealed keystore file in it (mode
//!   0600): [`DataDir`].
//!
//! The libp2p swarm, the protocols, the sled store, the `Node` actor with its `NodeHandle`,
//! and the JSON-RPC control socket come with the node issue.

pub mod datadir;

pub use datadir::{DataDir, DataDirError};
