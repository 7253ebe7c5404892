//! Encrypto's node: everything that runs on a user's machine around the pure crypto core.
//!
//! The node owns the data directory and the keystore file in it (creating an identity,
//! unlocking it with the passphrase, changing the passphrase, with atomic writes and owner-only
//! permissions), the sled store, the wire protocols and the libp2p swarm. The binary, the
//! window and the tests all go through this crate, so none of them touches the disk on their
//! own.
//!
//! # Layout
//!
//! - [`datadir`]: the data directory (mode 0700) and the sealed keystore file in it (mode
//!   0600): [`DataDir`].
//! - [`protocol`]: the wire protocols (`/encrypto/msg/3`, `/encrypto/profile/1`), their message
//!   types, and the length-prefixed CBOR codec with explicit size limits.
//! - [`store`]: the sled store in `DATA_DIR/store`: contacts, history, outbox, seen message
//!   ids, crypto sessions, known peers and settings, every value sealed with the storage key
//!   and every per-chat key a keyed hash: [`Store`].
//!
//! - [`swarm`]: the libp2p swarm: TCP (noise, yamux) and QUIC, identify, ping, mDNS, Kademlia
//!   on `/encrypto/kad/1.0.0`, the two request-response protocols, connection limits, and the
//!   libp2p defaults we override on purpose.
//!
//! - [`directory`]: the name directory on Kademlia: name and profile keys, and the checks on
//!   records before they are stored.
//!
//! - [`node`]: the `Node` actor with its [`NodeHandle`] and event stream; it owns the swarm
//!   and the store and runs the messaging flows (profiles pinned on connect, outbox and
//!   acknowledgements, retries, cipher switch, delete chat, rate limits). It runs on a thread
//!   of its own with the swarm's connection tasks ([`node::start`]); signature checks, RSA
//!   decryptions and flushes under load go to that runtime's blocking threads.
//!
//! - `test_support` (feature `test-support`): the harness that runs real nodes on loopback for
//!   the tests and the benchmark: start, connect, wait for an event with a bounded timeout.
//!
pub mod datadir;
pub mod directory;
pub mod node;
pub mod protocol;
pub mod store;
pub mod swarm;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use datadir::{DataDir, DataDirError};
pub use libp2p::Multiaddr;
pub use node::{DirectoryEntry, NodeConfig, NodeError, NodeEvent, NodeHandle, PeerInfo, Via};
pub use store::{Store, StoreError};
