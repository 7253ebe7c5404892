//! The wire protocols: their names, their message types, and our own request-response codec.
//!
//! Transport lives elsewhere (the swarm module); this module only says what travels on a stream
//! and how it is framed, so it can be tested over in-memory I/O.
//!
//! # Protocols
//!
//! - [`MSG_PROTOCOL`] (`/encrypto/msg/3`): a [`MsgRequest`] carries one signed envelope, a
//!   batch of them ([`EnvelopeBatch`], at most [`MAX_BATCH_ENVELOPES`] in one frame), or one
//!   control payload; the [`MsgResponse`] is the receiver's signed delivery ack, sent only once
//!   the messages are durable and naming each one it accepted, or a bare
//!   [`MsgResponse::Rejected`] that says nothing more. The envelopes of one request are
//!   signed together, with one signature (version 2 envelopes,
//!   [`encrypto_crypto::envelope::sign_batch`]). (`/1` had no batches: one envelope and one
//!   signed ack per stream; `/2` had batches of envelopes each signed alone.)
//! - [`PROFILE_PROTOCOL`] (`/encrypto/profile/1`): both sides exchange their signed profiles
//!   ([`ProfileRequest`] / [`ProfileResponse`]).
//! - [`FILE_PROTOCOL`] (`/encrypto/file/1`): files are pulled. A [`FileRequest`] asks for a
//!   manifest or one sealed chunk, asks a relay contact to hold a file (and pass the sender's
//!   sealed offer on), passes such an offer on, or says a download is complete; the
//!   [`FileResponse`] carries the bytes, `Ok`, or a bare `Unavailable` / `Rejected`. The
//!   offer itself travels in the chat, as [`ChatPayload::File`] in an envelope.
//! - [`KAD_PROTOCOL`] (`/encrypto/kad/1.0.0`): our own Kademlia protocol name, so our DHT does
//!   not mix with the public IPFS one.
//!
//! The payloads stay opaque bytes here (the CBOR of an [`Envelope`], a [`Control`] or a
//! [`SignedProfile`]): the node decodes them with the crypto crate's own `from_bytes`, which
//! enforces that type's size limit and canonical encoding, and checks signatures.
//!
//! # Framing
//!
//! One request or response per stream direction: a 4-byte big-endian length, then exactly that
//! many bytes of packed CBOR ([`encrypto_crypto::codec`]). The limits of [`CborCodec`] bound
//! that length (the 4-byte prefix comes on top).
//!
//! - Reading, the declared length is checked against the limit *before* a byte of the body is
//!   read, so a peer cannot make us buffer more than the limit. An oversized frame is an
//!   [`InvalidData`](std::io::ErrorKind::InvalidData) error carrying
//!   [`FrameError::TooLarge`]; a stream that ends early is
//!   [`UnexpectedEof`](std::io::ErrorKind::UnexpectedEof) with [`FrameError::Truncated`] or
//!   [`FrameError::TruncatedPrefix`]; bytes that are not exactly one value of the expected type
//!   are `InvalidData` with [`FrameError::Malformed`].
//! - Writing, a message whose encoding exceeds the limit is refused locally with
//!   [`FrameError::TooLarge`] and nothing is sent.
//!
//! libp2p hands these errors to the behaviour as `InboundFailure::Io` / `OutboundFailure::Io`;
//! [`frame_error`] recovers the [`FrameError`] from them, so logs can tell "oversized" from
//! "malformed" from "the peer went away". (libp2p's built-in CBOR codec, by contrast, caps
//! requests at 1 MiB and reports an oversized one as a bare EOF.)
//!
//! [`Envelope`]: encrypto_crypto::envelope::Envelope
//! [`Control`]: encrypto_crypto::control::Control
//! [`SignedProfile`]: encrypto_crypto::SignedProfile

mod codec;
mod file;
mod msg;
mod profile;
#[cfg(test)]
mod tests;

use encrypto_crypto::control::{MAX_ACK_IDS, MAX_CONTROL_LEN};
use encrypto_crypto::envelope::MAX_ENVELOPE_LEN;
use encrypto_crypto::file::{MAX_CHUNK_SIZE, MAX_MANIFEST_LEN, SEALED_CHUNK_OVERHEAD};
use encrypto_crypto::identity::MAX_PROFILE_LEN;
use libp2p::StreamProtocol;

pub use codec::{
    CborCodec, FileCodec, FrameError, MsgCodec, ProfileCodec, file_codec, frame_error, msg_codec,
    profile_codec,
};
pub use file::{FileOffer, FileRequest, FileResponse, FileSource};
pub use msg::{ChatPayload, EnvelopeBatch, MsgRequest, MsgResponse};
pub use profile::{ProfileRequest, ProfileResponse};

/// Envelopes (one or a batch) and control payloads, answered by a delivery ack.
pub const MSG_PROTOCOL: StreamProtocol = StreamProtocol::new("/encrypto/msg/3");
/// Signed profile exchange.
pub const PROFILE_PROTOCOL: StreamProtocol = StreamProtocol::new("/encrypto/profile/1");
/// File manifests and sealed chunks, pulled by recipients and relays.
pub const FILE_PROTOCOL: StreamProtocol = StreamProtocol::new("/encrypto/file/1");
/// Our Kademlia protocol name.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/encrypto/kad/1.0.0");

/// Room for the CBOR around a payload: a one-entry map or array header, a variant index and a
/// byte-string header (at most 1 + 1 + 9 bytes); the rest is margin.
const FRAME_OVERHEAD: usize = 16;

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// Largest frame on `/encrypto/msg/3` (a batch of envelopes, or one envelope or control
/// payload, plus framing): the limit on the declared CBOR length, both ways. The 4-byte prefix
/// comes on top. Room for two maximal envelopes, or a full batch of chat-sized ones.
pub const MAX_MSG_FRAME: usize = 256 * 1024;
/// Most envelopes one [`MsgRequest::Envelopes`] may carry: no more than one delivery ack can
/// name ([`MAX_ACK_IDS`]).
pub const MAX_BATCH_ENVELOPES: usize = 256;
/// CBOR header of one byte string in a batch (at most 1 + 8 bytes).
const BATCH_ITEM_OVERHEAD: usize = 9;
/// Largest frame on `/encrypto/profile/1` (a signed profile plus framing), both ways.
pub const MAX_PROFILE_FRAME: usize = MAX_PROFILE_LEN + FRAME_OVERHEAD;

const _: () = assert!(
    MAX_MSG_FRAME >= max(MAX_ENVELOPE_LEN, MAX_CONTROL_LEN) + FRAME_OVERHEAD
        && MAX_MSG_FRAME >= 2 * (MAX_ENVELOPE_LEN + BATCH_ITEM_OVERHEAD) + FRAME_OVERHEAD
);
const _: () = assert!(MAX_BATCH_ENVELOPES <= MAX_ACK_IDS);

/// Largest request on `/encrypto/file/1`: a [`FileRequest::Hold`] carrying a manifest of the
/// largest size, plus framing.
pub const MAX_FILE_REQUEST: usize = MAX_MANIFEST_LEN + FRAME_OVERHEAD;
/// Largest response on `/encrypto/file/1`: a manifest or the largest sealed chunk, plus
/// framing.
pub const MAX_FILE_RESPONSE: usize = max(
    MAX_MANIFEST_LEN,
    MAX_CHUNK_SIZE as usize + SEALED_CHUNK_OVERHEAD,
) + FRAME_OVERHEAD;
const _: () = assert!(MAX_FILE_RESPONSE <= u32::MAX as usize);
const _: () = assert!(MAX_PROFILE_FRAME >= MAX_PROFILE_LEN);
const _: () = assert!(MAX_MSG_FRAME <= u32::MAX as usize);

/// Length of the big-endian length prefix of every frame.
const PREFIX_LEN: usize = 4;
