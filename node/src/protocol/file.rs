//! `/encrypto/file/1`: files are pulled, manifest first, then sealed chunks; the offer itself
//! travels in the chat.

use encrypto_crypto::file::FileId;
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::msg::ChatPayload;

/// A request on `/encrypto/file/1`. Who may ask what is the node's business (see
/// `node::files`): a sender serves its file to the recipient and to the relays it chose; a
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
