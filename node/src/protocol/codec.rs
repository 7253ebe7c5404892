//! The length-prefixed CBOR codec with its size limits (see the framing in the
//! [protocol docs](super)).

use std::fmt;
use std::io;
use std::marker::PhantomData;

use encrypto_crypto::codec::{CodecError, decode, encode};
use futures::prelude::*;
use libp2p::StreamProtocol;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::file::{FileRequest, FileResponse};
use super::msg::{MsgRequest, MsgResponse};
use super::profile::{ProfileRequest, ProfileResponse};
use super::{MAX_FILE_REQUEST, MAX_FILE_RESPONSE, MAX_MSG_FRAME, MAX_PROFILE_FRAME, PREFIX_LEN};

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

pub(super) fn invalid_data(e: FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn truncated(e: FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, e)
}

/// A length-prefixed CBOR codec with explicit size limits, generic over request/response types.
///
/// See the [protocol docs](super) for the framing. Streams are closed by libp2p's
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
