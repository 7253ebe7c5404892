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
//!   [`io::ErrorKind::InvalidData`] error carrying [`FrameError::TooLarge`]; a stream that ends
//!   early is [`io::ErrorKind::UnexpectedEof`] with [`FrameError::Truncated`] or
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

use std::fmt;
use std::io;
use std::marker::PhantomData;

use encrypto_crypto::codec::{CodecError, decode, encode};
use encrypto_crypto::control::{MAX_ACK_IDS, MAX_CONTROL_LEN};
use encrypto_crypto::envelope::MAX_ENVELOPE_LEN;
use encrypto_crypto::file::{FileId, MAX_CHUNK_SIZE, MAX_MANIFEST_LEN, SEALED_CHUNK_OVERHEAD};
use encrypto_crypto::identity::MAX_PROFILE_LEN;
use futures::prelude::*;
use libp2p::StreamProtocol;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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

/// A request on `/encrypto/msg/3`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MsgRequest {
    /// The CBOR of a signed [`Envelope`](encrypto_crypto::envelope::Envelope).
    Envelope(serde_bytes::ByteBuf),
    /// The CBOR of a signed [`Control`](encrypto_crypto::control::Control) payload.
    Control(serde_bytes::ByteBuf),
    /// Several envelopes to one recipient, answered by one ack naming those accepted.
    Envelopes(EnvelopeBatch),
}

/// One to [`MAX_BATCH_ENVELOPES`] envelope encodings that fit in one [`MAX_MSG_FRAME`] frame
/// together. Decoding stops at the first envelope past the count limit (the frame's byte limit
/// is checked before decoding), so a hostile batch costs no more than its frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvelopeBatch {
    items: Vec<serde_bytes::ByteBuf>,
    /// Encoded size of `items` (each with its byte-string header).
    bytes: usize,
}

impl EnvelopeBatch {
    /// An empty batch (an empty batch is not a valid request: push at least one).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an envelope encoding if the batch stays within [`MAX_BATCH_ENVELOPES`] and, framed
    /// as a request, within [`MAX_MSG_FRAME`]; otherwise hands it back.
    ///
    /// # Errors
    /// The envelope, unchanged, when it does not fit (send it in the next batch).
    pub fn try_push(&mut self, envelope: Vec<u8>) -> Result<(), Vec<u8>> {
        let size = envelope.len() + BATCH_ITEM_OVERHEAD;
        if self.items.len() >= MAX_BATCH_ENVELOPES
            || self.bytes + size + FRAME_OVERHEAD > MAX_MSG_FRAME
        {
            return Err(envelope);
        }
        self.bytes += size;
        self.items.push(envelope.into());
        Ok(())
    }

    /// Whether `count` envelopes of `bytes` encoded bytes in all fit in one batch.
    pub fn fits(count: usize, bytes: usize) -> bool {
        count <= MAX_BATCH_ENVELOPES
            && bytes + count * BATCH_ITEM_OVERHEAD + FRAME_OVERHEAD <= MAX_MSG_FRAME
    }

    /// How many envelopes it carries.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it carries none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The envelope encodings, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.items.iter().map(|b| b.as_slice())
    }
}

impl Serialize for EnvelopeBatch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.items.is_empty() || self.items.len() > MAX_BATCH_ENVELOPES {
            return Err(serde::ser::Error::custom(format!(
                "a batch carries 1 to {MAX_BATCH_ENVELOPES} envelopes, not {}",
                self.items.len()
            )));
        }
        self.items.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for EnvelopeBatch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EnvelopeBatch;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "1 to {MAX_BATCH_ENVELOPES} envelopes")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<EnvelopeBatch, A::Error> {
                let mut batch = EnvelopeBatch::new();
                while let Some(item) = seq.next_element::<serde_bytes::ByteBuf>()? {
                    if batch.items.len() == MAX_BATCH_ENVELOPES {
                        return Err(serde::de::Error::invalid_length(
                            MAX_BATCH_ENVELOPES + 1,
                            &self,
                        ));
                    }
                    batch.bytes += item.len() + BATCH_ITEM_OVERHEAD;
                    batch.items.push(item);
                }
                if batch.items.is_empty() {
                    return Err(serde::de::Error::invalid_length(0, &self));
                }
                Ok(batch)
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

/// The answer on `/encrypto/msg/3`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MsgResponse {
    /// The CBOR of a signed [`Control`](encrypto_crypto::control::Control) with
    /// [`ControlKind::DeliveryAck`](encrypto_crypto::control::ControlKind::DeliveryAck), sent
    /// once the messages are durable. For a batch it names the envelopes accepted (stored now
    /// or before); the others were rejected.
    Ack(serde_bytes::ByteBuf),
    /// Not accepted; deliberately says no more than that.
    Rejected,
}

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

/// A request on `/encrypto/file/1`. Who may ask what is the node's business (see
/// `actor::files`): a sender serves its file to the recipient and to the relays it chose; a
/// relay serves what it holds to the file's recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileRequest {
    /// The signed manifest of a file (answered with [`FileResponse::Manifest`]).
    Manifest {
        /// The file.
        file_id: FileId,
    },
    /// One sealed chunk (answered with [`FileResponse::Chunk`]).
    Chunk {
        /// The file.
        file_id: FileId,
        /// The chunk's index.
        index: u64,
    },
    /// The sender asks a relay to hold a file for its recipient: the relay checks the
    /// manifest against the sender's pinned key, then pulls every chunk from the sender and
    /// checks each against the manifest. Answered with [`FileResponse::Ok`] or
    /// [`FileResponse::Rejected`].
    Hold {
        /// The manifest's CBOR.
        manifest: serde_bytes::ByteBuf,
        /// The offer for the recipient, sealed by the sender with cipher `rsa` (self-contained:
        /// it opens without any earlier message), which the relay passes on when it can reach
        /// the recipient: so a recipient who was offline gets the file with the sender gone.
        offer: Option<serde_bytes::ByteBuf>,
    },
    /// A relay passes on a sender's sealed offer (see [`FileRequest::Hold`]); the recipient
    /// opens it as the sender's (de-duplicated by message id) and answers
    /// [`FileResponse::Ok`] once it is stored.
    Offer {
        /// The envelope's CBOR.
        envelope: serde_bytes::ByteBuf,
    },
    /// The recipient has the whole file: the sender marks the transfer complete and a relay
    /// may drop its copy. Answered with [`FileResponse::Ok`].
    Complete {
        /// The file.
        file_id: FileId,
    },
}

/// The answer on `/encrypto/file/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileResponse {
    /// A manifest's CBOR.
    Manifest(serde_bytes::ByteBuf),
    /// A sealed chunk.
    Chunk(serde_bytes::ByteBuf),
    /// Done.
    Ok,
    /// Not here (yet): ask another source, or again later.
    Unavailable,
    /// Refused; deliberately says no more.
    Rejected,
}

/// One peer that can serve a file's chunks, with addresses to reach it at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSource {
    /// The peer's PeerId bytes.
    pub peer: serde_bytes::ByteBuf,
    /// Multiaddrs it was reachable at, as strings (hints; the node also uses what it knows).
    pub addrs: Vec<String>,
}

/// A file offered in a chat: what [`ChatPayload::File`] carries, sealed in the envelope like
/// a text. The name travels here (confidential, like a text) so the chat can show it at
/// once; the manifest's sealed metadata must agree with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOffer {
    /// The file.
    pub file_id: FileId,
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// BLAKE3 of the manifest's CBOR, which the recipient fetches when it is not inline.
    #[serde(with = "serde_bytes")]
    pub manifest_hash: [u8; 32],
    /// The manifest's CBOR, when it fits in the envelope.
    pub manifest: Option<serde_bytes::ByteBuf>,
    /// Relays that hold (or are fetching) the sealed chunks, besides the sender.
    pub sources: Vec<FileSource>,
}

/// The plaintext inside a chat envelope (what [`MsgRequest::Envelope`] carries, sealed).
/// Versioned by its variants: new kinds are appended, never reordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatPayload {
    /// A text message.
    Text(String),
    /// A file offer.
    File(FileOffer),
}

impl ChatPayload {
    /// Encodes as CBOR.
    pub fn to_bytes(&self) -> Vec<u8> {
        encrypto_crypto::codec::encode(self).expect("a chat payload always encodes")
    }

    /// Decodes a payload opened from an envelope.
    ///
    /// # Errors
    /// [`encrypto_crypto::codec::CodecError`] for bytes that are not a payload.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, encrypto_crypto::codec::CodecError> {
        encrypto_crypto::codec::decode(bytes, encrypto_crypto::envelope::MAX_BODY_LEN)
    }
}

/// Why a frame was not read or written. Carried inside the [`io::Error`]s of [`CborCodec`];
/// get it back with [`frame_error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame's CBOR is longer than the limit (declared by a peer, or produced locally).
    /// Nothing of the body was read, or nothing was sent.
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// The declared (reading) or encoded (writing) length.
        size: usize,
        /// The limit it was checked against.
        limit: usize,
    },
    /// The stream ended inside the 4-byte length prefix.
    #[error("frame truncated: the stream ended after {received} of the 4 length bytes")]
    TruncatedPrefix {
        /// Prefix bytes received before the end of the stream.
        received: usize,
    },
    /// The stream ended before the declared length was read.
    #[error("frame truncated: the stream ended after {received} of {expected} bytes")]
    Truncated {
        /// The declared length.
        expected: usize,
        /// Bytes received before the end of the stream.
        received: usize,
    },
    /// The bytes are not exactly one value of the expected message type.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A local message could not be encoded (a bug, not bad input).
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// The [`FrameError`] inside an I/O error from [`CborCodec`], if it carries one (a plain
/// transport error, such as a reset stream, does not).
pub fn frame_error(e: &io::Error) -> Option<&FrameError> {
    e.get_ref()?.downcast_ref::<FrameError>()
}

fn invalid_data(e: FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn truncated(e: FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, e)
}

/// A length-prefixed CBOR codec with explicit size limits, generic over request/response types.
///
/// See the [module docs](self) for the framing. Streams are closed by libp2p's
/// request-response handler after each write, as with its own codecs.
pub struct CborCodec<Req, Resp> {
    max_request: usize,
    max_response: usize,
    phantom: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> CborCodec<Req, Resp> {
    /// A codec that refuses requests over `max_request` and responses over `max_response`
    /// bytes of CBOR, both when reading and when writing. Limits above `u32::MAX` (the largest
    /// length the prefix can declare) act as `u32::MAX`.
    pub fn new(max_request: usize, max_response: usize) -> Self {
        let cap = usize::try_from(u32::MAX).unwrap_or(usize::MAX);
        CborCodec {
            max_request: max_request.min(cap),
            max_response: max_response.min(cap),
            phantom: PhantomData,
        }
    }

    /// The request limit in bytes.
    pub fn max_request(&self) -> usize {
        self.max_request
    }

    /// The response limit in bytes.
    pub fn max_response(&self) -> usize {
        self.max_response
    }
}

impl<Req, Resp> Clone for CborCodec<Req, Resp> {
    fn clone(&self) -> Self {
        CborCodec {
            max_request: self.max_request,
            max_response: self.max_response,
            phantom: PhantomData,
        }
    }
}

impl<Req, Resp> fmt::Debug for CborCodec<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CborCodec")
            .field("max_request", &self.max_request)
            .field("max_response", &self.max_response)
            .finish()
    }
}

/// The `/encrypto/msg/3` codec with its limits, so `request_response::Behaviour::new` works.
impl Default for CborCodec<MsgRequest, MsgResponse> {
    fn default() -> Self {
        Self::new(MAX_MSG_FRAME, MAX_MSG_FRAME)
    }
}

/// The `/encrypto/profile/1` codec with its limits, so `request_response::Behaviour::new` works.
impl Default for CborCodec<ProfileRequest, ProfileResponse> {
    fn default() -> Self {
        Self::new(MAX_PROFILE_FRAME, MAX_PROFILE_FRAME)
    }
}

/// The codec of `/encrypto/file/1`.
pub type FileCodec = CborCodec<FileRequest, FileResponse>;

/// The `/encrypto/file/1` codec: [`MAX_FILE_REQUEST`] and [`MAX_FILE_RESPONSE`].
pub fn file_codec() -> FileCodec {
    CborCodec::new(MAX_FILE_REQUEST, MAX_FILE_RESPONSE)
}

/// The codec of `/encrypto/msg/3`.
pub type MsgCodec = CborCodec<MsgRequest, MsgResponse>;
/// The codec of `/encrypto/profile/1`.
pub type ProfileCodec = CborCodec<ProfileRequest, ProfileResponse>;

/// The `/encrypto/msg/3` codec: [`MAX_MSG_FRAME`] both ways.
pub fn msg_codec() -> MsgCodec {
    CborCodec::new(MAX_MSG_FRAME, MAX_MSG_FRAME)
}

/// The `/encrypto/profile/1` codec: [`MAX_PROFILE_FRAME`] both ways.
pub fn profile_codec() -> ProfileCodec {
    CborCodec::new(MAX_PROFILE_FRAME, MAX_PROFILE_FRAME)
}

/// Reads one frame and decodes it, checking the declared length before reading the body.
async fn read_frame<T, M>(io: &mut T, limit: usize) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: DeserializeOwned,
{
    let mut prefix = [0u8; PREFIX_LEN];
    let mut received = 0;
    while received < PREFIX_LEN {
        match io.read(&mut prefix[received..]).await {
            Ok(0) => return Err(truncated(FrameError::TruncatedPrefix { received })),
            Ok(n) => received += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let size = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if size > limit {
        return Err(invalid_data(FrameError::TooLarge { size, limit }));
    }
    // Read in place into a buffer of the declared size (`read_to_end` would zero it again as
    // it grows and copy it once more when probing for the end).
    let mut body = vec![0u8; size];
    let mut received = 0;
    while received < size {
        match io.read(&mut body[received..]).await {
            Ok(0) => {
                return Err(truncated(FrameError::Truncated {
                    expected: size,
                    received,
                }));
            }
            Ok(n) => received += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    decode(&body, limit).map_err(|e| {
        invalid_data(match e {
            CodecError::TooLarge { size, limit } => FrameError::TooLarge { size, limit },
            other => FrameError::Malformed(other.to_string()),
        })
    })
}

/// Encodes `msg` as one frame (prefix and body), refusing it if the body exceeds `limit`.
fn encode_frame<M: Serialize>(msg: &M, limit: usize) -> io::Result<Vec<u8>> {
    let body = encode(msg).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            FrameError::Encode(e.to_string()),
        )
    })?;
    let too_large = || {
        invalid_data(FrameError::TooLarge {
            size: body.len(),
            limit,
        })
    };
    if body.len() > limit {
        return Err(too_large());
    }
    let len = u32::try_from(body.len()).map_err(|_| too_large())?;
    let mut frame = Vec::with_capacity(PREFIX_LEN + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes a frame made by [`encode_frame`] in one write, then flushes. The request-response
/// handler closes the stream afterwards.
async fn write_frame<T>(io: &mut T, frame: Vec<u8>) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    io.write_all(&frame).await?;
    io.flush().await
}

impl<Req, Resp> libp2p::request_response::Codec for CborCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send,
    Resp: Serialize + DeserializeOwned + Send,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_request).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_response).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let frame = encode_frame(&req, self.max_request)?;
        write_frame(io, frame).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let frame = encode_frame(&resp, self.max_response)?;
        write_frame(io, frame).await
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use encrypto_crypto::control::{Control, ControlKind, MAX_ACK_IDS};
    use encrypto_crypto::envelope::{self, Envelope, MAX_BODY_LEN, MessageId, OutboundSession};
    use encrypto_crypto::identity::MAX_NAME_LEN;
    use encrypto_crypto::{Identity, RsaBits, SignedProfile};
    use futures::executor::block_on;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use serde_bytes::ByteBuf;

    use super::*;

    const NOW: u64 = 1_767_225_600_000;

    fn buf(len: usize, byte: u8) -> ByteBuf {
        ByteBuf::from(vec![byte; len])
    }

    /// The bytes `write_request` puts on the wire.
    fn written_request<Req, Resp>(codec: &mut CborCodec<Req, Resp>, req: Req) -> Vec<u8>
    where
        Req: Serialize + DeserializeOwned + Send,
        Resp: Serialize + DeserializeOwned + Send,
    {
        let mut out = Cursor::new(Vec::new());
        block_on(codec.write_request(&MSG_PROTOCOL, &mut out, req)).unwrap();
        out.into_inner()
    }

    fn written_response<Req, Resp>(codec: &mut CborCodec<Req, Resp>, resp: Resp) -> Vec<u8>
    where
        Req: Serialize + DeserializeOwned + Send,
        Resp: Serialize + DeserializeOwned + Send,
    {
        let mut out = Cursor::new(Vec::new());
        block_on(codec.write_response(&MSG_PROTOCOL, &mut out, resp)).unwrap();
        out.into_inner()
    }

    fn round_trip_request<Req, Resp>(codec: &mut CborCodec<Req, Resp>, req: Req) -> usize
    where
        Req: Serialize + DeserializeOwned + Send + Clone + PartialEq + fmt::Debug,
        Resp: Serialize + DeserializeOwned + Send,
    {
        let bytes = written_request(codec, req.clone());
        let mut input = Cursor::new(bytes.clone());
        let back = block_on(codec.read_request(&MSG_PROTOCOL, &mut input)).unwrap();
        assert_eq!(back, req);
        assert_eq!(
            input.position(),
            bytes.len() as u64,
            "the whole frame is read"
        );
        bytes.len()
    }

    fn round_trip_response<Req, Resp>(codec: &mut CborCodec<Req, Resp>, resp: Resp) -> usize
    where
        Req: Serialize + DeserializeOwned + Send,
        Resp: Serialize + DeserializeOwned + Send + Clone + PartialEq + fmt::Debug,
    {
        let bytes = written_response(codec, resp.clone());
        let mut input = Cursor::new(bytes.clone());
        let back = block_on(codec.read_response(&MSG_PROTOCOL, &mut input)).unwrap();
        assert_eq!(back, resp);
        bytes.len()
    }

    fn read_msg_request(bytes: &[u8]) -> io::Result<MsgRequest> {
        block_on(msg_codec().read_request(&MSG_PROTOCOL, &mut Cursor::new(bytes.to_vec())))
    }

    fn prefixed(len: u32, body: &[u8]) -> Vec<u8> {
        let mut v = len.to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    /// Yields a fixed prefix, then fails the test if anyone reads further.
    struct Tripwire {
        prefix: Vec<u8>,
        pos: usize,
    }

    impl AsyncRead for Tripwire {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let rest = &self.prefix[self.pos..];
            assert!(!rest.is_empty(), "the codec read past the length prefix");
            let n = rest.len().min(out.len());
            out[..n].copy_from_slice(&rest[..n]);
            self.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    fn identity(seed: u64) -> Identity {
        Identity::generate(&mut StdRng::seed_from_u64(seed), RsaBits::B2048).unwrap()
    }

    #[test]
    fn protocol_names() {
        assert_eq!(MSG_PROTOCOL.as_ref(), "/encrypto/msg/3");
        assert_eq!(PROFILE_PROTOCOL.as_ref(), "/encrypto/profile/1");
        assert_eq!(KAD_PROTOCOL.as_ref(), "/encrypto/kad/1.0.0");
    }

    #[test]
    fn codecs_carry_their_protocol_limits() {
        let m = msg_codec();
        assert_eq!(
            (m.max_request(), m.max_response()),
            (MAX_MSG_FRAME, MAX_MSG_FRAME)
        );
        let d = MsgCodec::default();
        assert_eq!(
            (d.max_request(), d.max_response()),
            (MAX_MSG_FRAME, MAX_MSG_FRAME)
        );
        let p = profile_codec();
        assert_eq!(
            (p.max_request(), p.max_response()),
            (MAX_PROFILE_FRAME, MAX_PROFILE_FRAME)
        );
        let d = ProfileCodec::default();
        assert_eq!(
            (d.max_request(), d.max_response()),
            (MAX_PROFILE_FRAME, MAX_PROFILE_FRAME)
        );
        let c = d.clone();
        assert_eq!(c.max_request(), MAX_PROFILE_FRAME);
    }

    #[test]
    fn every_message_type_round_trips() {
        let mut msg = msg_codec();
        for req in [
            MsgRequest::Envelope(buf(0, 0)),
            MsgRequest::Envelope(buf(300, 0xe1)),
            MsgRequest::Control(buf(1, 0xc0)),
            MsgRequest::Control(buf(5000, 0x17)),
            MsgRequest::Envelopes(batch_of(1, 300)),
            MsgRequest::Envelopes(batch_of(3, 10)),
        ] {
            round_trip_request(&mut msg, req);
        }
        for resp in [
            MsgResponse::Ack(buf(120, 0xac)),
            MsgResponse::Ack(buf(0, 0)),
            MsgResponse::Rejected,
        ] {
            round_trip_response(&mut msg, resp);
        }
        let mut profile = profile_codec();
        round_trip_request(
            &mut profile,
            ProfileRequest {
                profile: buf(700, 0x50),
            },
        );
        round_trip_response(
            &mut profile,
            ProfileResponse {
                profile: buf(700, 0x51),
            },
        );
    }

    #[test]
    fn frame_is_big_endian_length_then_cbor() {
        let req = MsgRequest::Control(buf(3, 7));
        let bytes = written_request(&mut msg_codec(), req.clone());
        let body = encode(&req).unwrap();
        assert_eq!(&bytes[..4], &(body.len() as u32).to_be_bytes());
        assert_eq!(&bytes[4..], &body[..]);
    }

    #[test]
    fn payloads_of_the_largest_allowed_size_fit() {
        let mut msg = msg_codec();
        let n = round_trip_request(&mut msg, MsgRequest::Envelope(buf(MAX_ENVELOPE_LEN, 0xff)));
        assert!(n <= PREFIX_LEN + MAX_MSG_FRAME);
        round_trip_request(&mut msg, MsgRequest::Control(buf(MAX_CONTROL_LEN, 0xff)));
        round_trip_response(&mut msg, MsgResponse::Ack(buf(MAX_CONTROL_LEN, 0xff)));
        let mut profile = profile_codec();
        round_trip_request(
            &mut profile,
            ProfileRequest {
                profile: buf(MAX_PROFILE_LEN, 0xff),
            },
        );
        round_trip_response(
            &mut profile,
            ProfileResponse {
                profile: buf(MAX_PROFILE_LEN, 0xff),
            },
        );
    }

    #[test]
    fn max_msg_frame_admits_a_maximal_envelope_and_ack() {
        let alice = identity(1);
        let bob = identity(2);
        let mut rng = StdRng::seed_from_u64(3);
        let mut session = OutboundSession::new(&mut rng, bob.public(), NOW).unwrap();
        let plaintext = vec![0x42; MAX_BODY_LEN];
        let mut env = envelope::seal_aes(
            &alice,
            bob.public(),
            &mut session,
            MessageId::random(&mut rng),
            NOW,
            &plaintext,
            &mut rng,
        )
        .unwrap();
        assert!(env.wrapped_key.is_some(), "a fresh session carries its key");
        let mut codec = msg_codec();

        let bytes = env.to_bytes();
        assert!(bytes.len() <= MAX_ENVELOPE_LEN);
        let framed = round_trip_request(&mut codec, MsgRequest::Envelope(ByteBuf::from(bytes)));
        assert!(framed <= PREFIX_LEN + MAX_MSG_FRAME);

        // The same envelope as a 4096-bit recipient would get it: a 512-byte wrapped key. The
        // signature no longer matches, but the size is what matters here, and the crypto crate
        // still accepts the structure.
        env.wrapped_key = Some(buf(512, 0x99));
        let bytes = env.to_bytes();
        assert!(bytes.len() <= MAX_ENVELOPE_LEN);
        let frame = written_request(&mut codec, MsgRequest::Envelope(ByteBuf::from(bytes)));
        let back = block_on(codec.read_request(&MSG_PROTOCOL, &mut Cursor::new(frame))).unwrap();
        let MsgRequest::Envelope(inner) = back else {
            panic!("wrong variant")
        };
        assert_eq!(Envelope::from_bytes(&inner).unwrap(), env);

        // The largest delivery ack.
        let ids = (0..MAX_ACK_IDS)
            .map(|_| MessageId::random(&mut rng))
            .collect();
        let ack = Control::sign(
            &bob,
            alice.public(),
            MessageId::random(&mut rng),
            NOW,
            ControlKind::DeliveryAck { ids },
        )
        .unwrap();
        let bytes = ack.to_bytes();
        assert!(bytes.len() <= MAX_CONTROL_LEN);
        let frame = written_response(&mut codec, MsgResponse::Ack(ByteBuf::from(bytes)));
        let back = block_on(codec.read_response(&MSG_PROTOCOL, &mut Cursor::new(frame))).unwrap();
        let MsgResponse::Ack(inner) = back else {
            panic!("wrong variant")
        };
        assert_eq!(Control::from_bytes(&inner).unwrap(), ack);

        // The largest profile.
        let profile = alice.sign_profile(&"n".repeat(MAX_NAME_LEN), NOW).unwrap();
        let bytes = profile.to_bytes();
        let mut codec = profile_codec();
        let frame = written_request(
            &mut codec,
            ProfileRequest {
                profile: ByteBuf::from(bytes),
            },
        );
        let back =
            block_on(codec.read_request(&PROFILE_PROTOCOL, &mut Cursor::new(frame))).unwrap();
        assert_eq!(SignedProfile::from_bytes(&back.profile).unwrap(), profile);
    }

    #[test]
    fn oversized_declared_length_is_refused_before_the_body() {
        // A tripwire reader: any read past the prefix fails the test.
        let declared = 2_000_000u32;
        let mut reader = Tripwire {
            prefix: declared.to_be_bytes().to_vec(),
            pos: 0,
        };
        let err = block_on(msg_codec().read_request(&MSG_PROTOCOL, &mut reader)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            frame_error(&err),
            Some(&FrameError::TooLarge {
                size: 2_000_000,
                limit: MAX_MSG_FRAME
            })
        );

        // The same with a body present: the cursor stays right after the prefix.
        let limit = MAX_MSG_FRAME as u32;
        let mut input = Cursor::new(prefixed(limit + 1, &vec![0; MAX_MSG_FRAME + 1]));
        let err = block_on(msg_codec().read_request(&MSG_PROTOCOL, &mut input)).unwrap_err();
        assert!(matches!(
            frame_error(&err),
            Some(FrameError::TooLarge { .. })
        ));
        assert_eq!(input.position(), 4);

        // u32::MAX is just another oversized length.
        let mut reader = Tripwire {
            prefix: u32::MAX.to_be_bytes().to_vec(),
            pos: 0,
        };
        let err =
            block_on(profile_codec().read_response(&PROFILE_PROTOCOL, &mut reader)).unwrap_err();
        assert!(matches!(
            frame_error(&err),
            Some(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn requests_and_responses_have_their_own_limits() {
        let mut codec = MsgCodec::new(100, 1000);
        let resp = MsgResponse::Ack(buf(500, 1));
        round_trip_response(&mut codec, resp.clone());
        // The same bytes as a request exceed the request limit.
        let frame = written_response(&mut codec, resp);
        let err = block_on(codec.read_request(&MSG_PROTOCOL, &mut Cursor::new(frame))).unwrap_err();
        assert!(matches!(
            frame_error(&err),
            Some(FrameError::TooLarge { limit: 100, .. })
        ));
    }

    #[test]
    fn oversized_write_is_refused_and_nothing_is_sent() {
        let mut codec = msg_codec();
        let mut out = Cursor::new(Vec::new());
        let req = MsgRequest::Envelope(buf(MAX_MSG_FRAME, 0));
        let err = block_on(codec.write_request(&MSG_PROTOCOL, &mut out, req)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let Some(FrameError::TooLarge { size, limit }) = frame_error(&err) else {
            panic!("expected TooLarge, got {err}")
        };
        assert!(*size > MAX_MSG_FRAME);
        assert_eq!(*limit, MAX_MSG_FRAME);
        assert!(out.get_ref().is_empty(), "nothing was written");

        let resp = ProfileResponse {
            profile: buf(MAX_PROFILE_FRAME, 0),
        };
        let err = block_on(profile_codec().write_response(&PROFILE_PROTOCOL, &mut out, resp))
            .unwrap_err();
        assert!(matches!(
            frame_error(&err),
            Some(FrameError::TooLarge { .. })
        ));
        assert!(out.get_ref().is_empty(), "nothing was written");
    }

    #[test]
    fn truncated_frames_are_errors() {
        let frame = written_request(&mut msg_codec(), MsgRequest::Envelope(buf(100, 1)));
        let body_len = frame.len() - 4;

        let err = read_msg_request(&frame[..frame.len() - 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            frame_error(&err),
            Some(&FrameError::Truncated {
                expected: body_len,
                received: body_len - 1
            })
        );
        assert!(err.to_string().contains("truncated"), "{err}");

        for cut in 0..4 {
            let err = read_msg_request(&frame[..cut]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
            assert_eq!(
                frame_error(&err),
                Some(&FrameError::TruncatedPrefix { received: cut })
            );
        }
    }

    #[test]
    fn malformed_bodies_are_invalid_data() {
        let cases: Vec<Vec<u8>> = vec![
            // Zero-length frame.
            prefixed(0, &[]),
            // A CBOR text string, not a MsgRequest.
            prefixed(4, &[0x63, b'a', b'b', b'c']),
            // An unknown variant index.
            prefixed(3, &[0xa1, 0x07, 0x40]),
            // Not CBOR at all.
            prefixed(3, &[0xff, 0xff, 0xff]),
        ];
        for bytes in cases {
            let err = read_msg_request(&bytes).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bytes:02x?}");
            assert!(
                matches!(frame_error(&err), Some(FrameError::Malformed(_))),
                "{err}"
            );
        }
        // A valid message followed by trailing bytes inside the frame.
        let mut body = encode(&MsgRequest::Control(buf(2, 2))).unwrap();
        body.push(0);
        let err = read_msg_request(&prefixed(body.len() as u32, &body)).unwrap_err();
        assert!(matches!(frame_error(&err), Some(FrameError::Malformed(_))));
    }

    /// [`MsgRequest`] with a batch that is a plain list, to put any count on the wire.
    #[derive(Serialize)]
    enum RawMsgRequest {
        #[allow(dead_code)]
        Envelope(ByteBuf),
        #[allow(dead_code)]
        Control(ByteBuf),
        Envelopes(Vec<ByteBuf>),
    }

    fn raw_batch(count: usize, len: usize) -> Vec<u8> {
        let body = encode(&RawMsgRequest::Envelopes(vec![buf(len, 0xb0); count])).unwrap();
        prefixed(body.len() as u32, &body)
    }

    fn batch_of(count: usize, len: usize) -> EnvelopeBatch {
        let mut batch = EnvelopeBatch::new();
        for _ in 0..count {
            batch.try_push(vec![0xb1; len]).unwrap();
        }
        batch
    }

    #[test]
    fn batches_round_trip_in_order() {
        let mut batch = EnvelopeBatch::new();
        for i in 0..5u8 {
            batch.try_push(vec![i; 100 + usize::from(i)]).unwrap();
        }
        assert_eq!(batch.len(), 5);
        let req = MsgRequest::Envelopes(batch.clone());
        round_trip_request(&mut msg_codec(), req.clone());
        let frame = written_request(&mut msg_codec(), req);
        let MsgRequest::Envelopes(back) = read_msg_request(&frame).unwrap() else {
            panic!("wrong variant")
        };
        let items: Vec<&[u8]> = back.iter().collect();
        assert_eq!(items.len(), 5);
        for (i, item) in items.iter().enumerate() {
            assert_eq!(item.len(), 100 + i);
            assert!(item.iter().all(|b| usize::from(*b) == i));
        }
    }

    #[test]
    fn a_batch_stops_at_its_count_and_byte_limits() {
        // Count: small envelopes stop at MAX_BATCH_ENVELOPES, and a full batch is a valid frame.
        let mut batch = batch_of(MAX_BATCH_ENVELOPES, 400);
        assert_eq!(batch.try_push(vec![1; 400]), Err(vec![1; 400]));
        let n = round_trip_request(&mut msg_codec(), MsgRequest::Envelopes(batch));
        assert!(n <= PREFIX_LEN + MAX_MSG_FRAME);

        // Bytes: maximal envelopes stop at what one frame holds, which is at least two.
        let mut batch = EnvelopeBatch::new();
        while batch.try_push(vec![2; MAX_ENVELOPE_LEN]).is_ok() {}
        assert!(batch.len() >= 2, "{}", batch.len());
        let n = round_trip_request(&mut msg_codec(), MsgRequest::Envelopes(batch.clone()));
        assert!(n <= PREFIX_LEN + MAX_MSG_FRAME);
        // What is left of the frame still takes a small envelope, up to the limit exactly.
        while batch.try_push(vec![3; 1000]).is_ok() {}
        let n = round_trip_request(&mut msg_codec(), MsgRequest::Envelopes(batch));
        assert!(n <= PREFIX_LEN + MAX_MSG_FRAME);
    }

    #[test]
    fn a_batch_over_the_count_limit_is_refused_while_decoding() {
        // The largest count decodes; one more is refused with a clear reason.
        assert!(read_msg_request(&raw_batch(MAX_BATCH_ENVELOPES, 1)).is_ok());
        let err = read_msg_request(&raw_batch(MAX_BATCH_ENVELOPES + 1, 1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let Some(FrameError::Malformed(reason)) = frame_error(&err) else {
            panic!("expected Malformed, got {err}")
        };
        assert!(
            reason.contains(&format!("1 to {MAX_BATCH_ENVELOPES} envelopes")),
            "{reason}"
        );
        // As many empty byte strings as the frame holds: refused the same way.
        let err = read_msg_request(&raw_batch(200_000, 0)).unwrap_err();
        assert!(matches!(frame_error(&err), Some(FrameError::Malformed(_))));
        // An empty batch is not a request either.
        let err = read_msg_request(&raw_batch(0, 0)).unwrap_err();
        assert!(matches!(frame_error(&err), Some(FrameError::Malformed(_))));
    }

    #[test]
    fn a_batch_over_the_byte_limit_is_refused_before_the_body() {
        let frame = raw_batch(3, MAX_ENVELOPE_LEN);
        let err = read_msg_request(&frame).unwrap_err();
        assert!(
            matches!(frame_error(&err), Some(FrameError::TooLarge { limit, .. }) if *limit == MAX_MSG_FRAME),
            "{err}"
        );
    }

    #[test]
    fn an_empty_batch_is_not_sent() {
        let mut out = Cursor::new(Vec::new());
        let req = MsgRequest::Envelopes(EnvelopeBatch::new());
        let err = block_on(msg_codec().write_request(&MSG_PROTOCOL, &mut out, req)).unwrap_err();
        assert!(
            matches!(frame_error(&err), Some(FrameError::Encode(_))),
            "{err}"
        );
        assert!(out.get_ref().is_empty());
    }

    #[test]
    fn errors_say_what_happened() {
        let e = FrameError::TooLarge {
            size: 2_000_000,
            limit: 100_000,
        };
        assert_eq!(
            e.to_string(),
            "frame of 2000000 bytes exceeds the 100000-byte limit"
        );
        let io_err = invalid_data(e.clone());
        assert_eq!(io_err.to_string(), e.to_string());
        assert_eq!(frame_error(&io_err), Some(&e));
        assert_eq!(
            FrameError::Truncated {
                expected: 10,
                received: 3
            }
            .to_string(),
            "frame truncated: the stream ended after 3 of 10 bytes"
        );
        // Plain transport errors carry no frame error.
        assert_eq!(frame_error(&io::Error::other("reset")), None);
        assert_eq!(
            frame_error(&io::Error::from(io::ErrorKind::ConnectionReset)),
            None
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_msg_request(&bytes);
            let _ = block_on(
                profile_codec().read_response(&PROFILE_PROTOCOL, &mut Cursor::new(bytes.clone())),
            );
        }

        #[test]
        fn random_bodies_behind_a_valid_length_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let frame = prefixed(body.len() as u32, &body);
            match read_msg_request(&frame) {
                // Whatever decodes must re-encode to a frame the codec accepts.
                Ok(req) => {
                    let again = written_request(&mut msg_codec(), req.clone());
                    prop_assert_eq!(read_msg_request(&again).unwrap(), req);
                }
                Err(e) => prop_assert!(frame_error(&e).is_some(), "{}", e),
            }
        }

        #[test]
        fn any_payload_round_trips(
            payload in proptest::collection::vec(any::<u8>(), 0..2048),
            control in any::<bool>(),
        ) {
            let req = if control {
                MsgRequest::Control(ByteBuf::from(payload))
            } else {
                MsgRequest::Envelope(ByteBuf::from(payload))
            };
            let frame = written_request(&mut msg_codec(), req.clone());
            prop_assert_eq!(read_msg_request(&frame).unwrap(), req);
        }
    }
}
