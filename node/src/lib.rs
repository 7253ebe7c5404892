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
//! - [`protocol`]: the wire protocols (`/encrypto/msg/3`, `/encrypto/profile/1`,
//!   `/encrypto/file/1`), their message types, and the length-prefixed CBOR codec with explicit
//!   size limits: `protocol/{mod (names and limits), msg, profile, file, codec}`.
//! - `store` (the crate's own; public only with the `bench-internals` feature, for the
//!   benches): the sled store in `DATA_DIR/store`: contacts, history, outbox, seen message
//!   ids, crypto sessions, known peers, settings and file transfers, every value sealed with
//!   the storage key and every per-chat key a keyed hash:
//!   `store/{mod (open, sealing), format, keys, journal, contacts, history, outbox, seen,
//!   sessions, settings, files, types, error}`.
//! - [`view`]: what the window, the daemon and the tests see of the store: [`view::Contact`],
//!   [`view::Message`] and the enums they carry (file transfers are
//!   [`FileTransfer`]).
//!
//! - [`swarm`]: the libp2p swarm: TCP (noise, yamux) and QUIC, identify, ping, mDNS, Kademlia
//!   on `/encrypto/kad/1.0.0`, the two request-response protocols, connection limits, and the
//!   libp2p defaults we override on purpose.
//!
//! - [`directory`]: the name directory on Kademlia: name and profile keys, and the checks on
//!   records before they are stored.
//!
//! - [`actor`]: the node actor with its [`NodeHandle`] and event stream; it owns the swarm
//!   and the store and runs the messaging flows (profiles pinned on connect, outbox and
//!   acknowledgements, retries, cipher switch, delete chat, rate limits). It runs on a thread
//!   of its own with the swarm's connection tasks ([`start`]); signature checks, RSA
//!   decryptions and flushes under load go to that runtime's blocking threads. Its public
//!   items are re-exported here at the crate root.
//!
//! - `unwrap` (private): the RSA work of opening inbound envelopes done ahead on the check
//!   jobs, and how jobs running at once share it (each session key unwrapped once).
//!
//! - `handle_ext`: what the daemon and the window both ask of a [`NodeHandle`] beyond single
//!   commands: [`NodeHandle::resolve_contact`] (a contact by name or peer id) and
//!   [`NodeHandle::wait_delivered`] (a delivery, with a timeout).
//!
//! - [`config`]: `DATA_DIR/config.json` (bootstrap peers, relay limits, download limit), read
//!   through serde types that refuse unknown keys by name: [`config::ConfigFile`].
//!
//! - [`rpc`]: the control socket's JSON-RPC 2.0 protocol as serde types (framing, error codes,
//!   [`rpc::Method`], each method's params and reply, the events), shared by the daemon, the
//!   CLI and the `rpc` fuzz target.
//!
//! - `test_support` (feature `test-support`): the harness that runs real nodes on loopback for
//!   the tests and the benchmark: start, connect, wait for an event with a bounded timeout.
//!
pub mod actor;
pub mod config;
pub mod datadir;
pub mod directory;
mod handle_ext;
pub mod protocol;
pub mod rpc;
#[cfg(feature = "bench-internals")]
pub mod store;
// Its items are `pub` for the bench (`bench-internals`); without it they are the crate's own.
#[cfg(not(feature = "bench-internals"))]
#[allow(unreachable_pub)]
pub(crate) mod store;
pub mod swarm;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod view;

mod unwrap;

pub use actor::{
    ADD_TIMEOUT, DirectoryEntry, FileTransfer, MAX_RSA_TEXT_LEN, MAX_TEXT_LEN, NodeConfig,
    NodeError, NodeEvent, NodeHandle, PeerInfo, SEARCH_TIMEOUT, Started, Via, addr_with_peer,
    peer_of_addr, start,
};
pub use datadir::{DataDir, DataDirError};
pub use handle_ext::{NotDelivered, ResolveError};
pub use libp2p::Multiaddr;
#[cfg(feature = "bench-internals")]
pub use store::Store;
pub use store::StoreError;
