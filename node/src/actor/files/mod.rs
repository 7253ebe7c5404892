//! The actor's side of file transfers: sending (seal once to build the manifest, then seal
//! each chunk again from disk when it is asked for), receiving (pull chunks from every source,
//! several at once, check each against the manifest, write it in place, rename the file into
//! place once its whole-file hash matches), holding sealed chunks for others (blind relay),
//! and resuming all of it after a restart from the chunk marks in the store.
//!
//! # Layout
//!
//! - this module: the [`Files`] part of the actor (the transfer engine's state), the public
//!   [`FileTransfer`] view, the [`FileJob`] a blocking job ends in, and the dispatch of file
//!   protocol events and finished jobs;
//! - [`io`]: the blocking file work: reading and sealing, storing and hashing chunks, the
//!   last check and the placing of a download, disk space;
//! - [`send`]: sending and forwarding a file, and the offers (sent in the chat, and received);
//! - [`download`]: downloads (receive or relay): fetching the manifest and the chunks,
//!   progress, chunk marks, finishing, failing and resuming; its books (sources and their
//!   back-off, the chunk-request window, chunks held) in `download::state`, tested alone;
//! - [`serve`]: serving chunks and manifests to peers;
//! - [`relay`]: holding files for others, and the offers a relay passes on.
//!
//! # Threads
//!
//! Everything that touches file contents (reading, sealing, hashing, opening, writing) runs on
//! tokio's blocking pool; the actor only schedules, keeps the books and answers requests, so a
//! 4 GiB transfer never stalls chat. Each job ends in a [`FileJob`] the actor picks up in its
//! loop.
//!
//! # Memory
//!
//! A download holds at most [`download::state::WINDOW`] chunks in flight (each at most the
//! manifest's chunk size, 256 KiB for files up to 32 GiB), whatever the file's size. A sender
//! reads one chunk per request. Neither ever holds a file whole.

mod download;
mod io;
mod relay;
mod send;
mod serve;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use encrypto_crypto::file::{FileId, FileManifest};
use encrypto_crypto::{MessageId, PeerId};
use libp2p::request_response::{self, Message, OutboundRequestId, ResponseChannel};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use self::download::Download;
use self::io::{ChunkFault, Finish, PreparedFile};
use self::relay::RelayOffer;
use self::serve::{SendProgress, Served};
use super::{Actor, NodeError, Reply};
use crate::protocol::{FileRequest, FileResponse};
use crate::store::{Transfer, TransferRole, TransferState};

/// Progress events at most this often per transfer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// A source that failed is asked again after this long, doubling up to
/// [`download::state::SOURCE_BACKOFF_MAX`]; a relay's first wait to pass an offer on again.
const SOURCE_BACKOFF: Duration = Duration::from_millis(500);

/// A transfer, as the handle reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTransfer {
    /// The file.
    pub file_id: FileId,
    /// The recipient (we send) or the sender (we receive or relay).
    pub peer: PeerId,
    /// Our part.
    pub role: TransferRole,
    /// The file's name (empty for a relay, which cannot read it).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where it is.
    pub state: TransferState,
    /// Plaintext bytes moved so far.
    pub bytes_done: u64,
    /// Receive: where it was saved, once complete. Send: the file sent.
    pub path: Option<PathBuf>,
    /// SHA-256 of the plaintext (not known to a relay).
    pub sha256: Option<[u8; 32]>,
    /// Why it failed.
    pub error: Option<String>,
    /// The chat message that offered it.
    pub message_id: MessageId,
    /// When it began, Unix milliseconds.
    pub created_ms: u64,
    /// Send: the relays asked to hold the sealed file (named with `via`, or marked as relays
    /// and chosen because the recipient was offline).
    pub relays: Vec<PeerId>,
}

/// Identifies a transfer in the actor.
type TKey = (FileId, TransferRole, PeerId);

fn tkey(t: &Transfer) -> TKey {
    (t.file_id, t.role, t.peer)
}

/// What a finished blocking job reports.
pub(super) enum FileJob {
    /// `send_file`: the file was read and sealed once; the manifest can be signed.
    Prepared {
        reply: Reply<FileTransfer>,
        peer: PeerId,
        path: PathBuf,
        via: Vec<PeerId>,
        result: Result<Box<PreparedFile>, NodeError>,
    },
    /// A chunk or manifest request was served (or not).
    Served {
        channel: ResponseChannel<FileResponse>,
        response: FileResponse,
        /// Send transfers: (file, requester, index, plaintext length) for progress.
        progress: Option<(FileId, PeerId, u64, u64)>,
        /// The file changed on disk since it was sent.
        changed: Option<FileId>,
    },
    /// A received chunk was checked and written.
    Stored {
        key: TKey,
        index: u64,
        source: PeerId,
        result: Result<u64, ChunkFault>,
    },
    /// A download's last chunk is in: the whole-file check and the rename.
    Finished {
        key: TKey,
        result: Result<PathBuf, Finish>,
    },
}

/// What an outbound file request was for.
enum Pending {
    Chunk {
        key: TKey,
        index: u64,
        source: PeerId,
    },
    Manifest {
        key: TKey,
        source: PeerId,
    },
    Hold {
        file_id: FileId,
        relay: PeerId,
    },
    Complete,
    Offer {
        key: TKey,
    },
}

/// The transfer engine's state in the actor.
#[derive(Default)]
pub(super) struct Files {
    pub(super) jobs: JoinSet<FileJob>,
    downloads: HashMap<TKey, Download>,
    requests: HashMap<OutboundRequestId, Pending>,
    served: HashMap<FileId, Arc<Served>>,
    serving: usize,
    /// Send transfers: chunks served to each recipient, for progress.
    sent: HashMap<(FileId, PeerId), SendProgress>,
    /// Relay: sealed offers to pass on to their recipients.
    offers: HashMap<TKey, RelayOffer>,
}

impl Actor {
    fn view(&self, t: &Transfer) -> FileTransfer {
        let bytes_done = match t.state {
            TransferState::Complete => t.size,
            _ => match t.role {
                TransferRole::Send => self
                    .files
                    .sent
                    .get(&(t.file_id, t.peer))
                    .map_or(0, |p| p.bytes),
                _ => self
                    .files
                    .downloads
                    .get(&tkey(t))
                    .map_or_else(|| self.held_bytes(t), |d| d.bytes_done),
            },
        };
        FileTransfer {
            file_id: t.file_id,
            peer: t.peer,
            role: t.role,
            name: t.name.clone(),
            size: t.size,
            state: t.state,
            bytes_done,
            path: t.path.clone(),
            sha256: t.sha256,
            error: t.error.clone(),
            message_id: t.message_id,
            created_ms: t.created_ms,
            relays: t.relays.clone(),
        }
    }

    /// Bytes held for a transfer that is not running (from its chunk marks).
    fn held_bytes(&self, t: &Transfer) -> u64 {
        let Ok(held) = self.store.chunks_held(&t.file_id, t.role, &t.peer) else {
            return 0;
        };
        if held.is_empty() {
            return 0;
        }
        let Ok(Some(bytes)) = self.store.manifest(&t.file_id, t.role, &t.peer) else {
            return 0;
        };
        let Ok(manifest) = FileManifest::from_bytes(&bytes) else {
            return 0;
        };
        held.iter()
            .filter_map(|i| manifest.chunk_plain_len(*i).ok())
            .sum()
    }

    pub(super) fn files_list(&self) -> Result<Vec<FileTransfer>, NodeError> {
        Ok(self
            .store
            .transfers()?
            .iter()
            .map(|t| self.view(t))
            .collect())
    }

    // ----- events ---------------------------------------------------------------------------

    pub(super) fn on_file_job(&mut self, done: Result<FileJob, tokio::task::JoinError>) {
        let job = match done {
            Ok(job) => job,
            Err(e) => {
                warn!(error = %e, "a file job failed");
                return;
            }
        };
        match job {
            FileJob::Prepared {
                reply,
                peer,
                path,
                via,
                result,
            } => self.on_prepared(reply, peer, path, via, result),
            FileJob::Served {
                channel,
                response,
                progress,
                changed,
            } => self.on_served(channel, response, progress, changed),
            FileJob::Stored {
                key,
                index,
                source,
                result,
            } => self.on_stored(key, index, source, result),
            FileJob::Finished { key, result } => self.on_finished(key, result),
        }
    }

    pub(super) fn handle_file_event(
        &mut self,
        event: request_response::Event<FileRequest, FileResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_file_request(peer, request, channel),
            request_response::Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.on_file_response(request_id, response),
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                debug!(%peer, %error, "file request failed");
                self.on_file_failure(request_id);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "inbound file request failed");
            }
            _ => {}
        }
    }

    fn on_file_response(&mut self, request_id: OutboundRequestId, response: FileResponse) {
        let Some(pending) = self.files.requests.remove(&request_id) else {
            return;
        };
        match (pending, response) {
            (Pending::Chunk { key, index, source }, FileResponse::Chunk(bytes)) => {
                self.on_chunk_response(key, index, source, bytes.into_vec());
            }
            (Pending::Chunk { key, index, source }, other) => {
                if let Some(d) = self.files.downloads.get_mut(&key) {
                    let refused = other == FileResponse::Rejected;
                    d.chunk_unavailable(index, source, refused, Instant::now());
                }
                self.pump(key);
            }
            (Pending::Manifest { key, source }, FileResponse::Manifest(bytes)) => {
                if let Some(d) = self.files.downloads.get_mut(&key)
                    && let Some(s) = d.source_mut(source)
                {
                    s.in_flight = s.in_flight.saturating_sub(1);
                }
                self.manifest_arrived(key, &bytes, Some(source));
            }
            (Pending::Manifest { key, source }, _) => self.manifest_failed(key, source),
            (Pending::Hold { file_id, relay }, FileResponse::Ok) => {
                info!(%relay, file = %file_id, "a relay holds the file");
            }
            (Pending::Hold { file_id, relay }, _) => {
                warn!(%relay, file = %file_id, "the relay refused to hold the file");
            }
            (Pending::Complete, _) => {}
            (Pending::Offer { key }, response) => {
                self.offer_answered(key, response == FileResponse::Ok);
            }
        }
    }

    fn on_file_failure(&mut self, request_id: OutboundRequestId) {
        let Some(pending) = self.files.requests.remove(&request_id) else {
            return;
        };
        match pending {
            Pending::Chunk { key, index, source } => {
                if let Some(d) = self.files.downloads.get_mut(&key) {
                    d.chunk_failed(index, source, Instant::now());
                }
                // The next pump (timer) asks again once the source's backoff is over.
            }
            Pending::Manifest { key, source } => self.manifest_failed(key, source),
            Pending::Hold { file_id, relay } => {
                warn!(%relay, file = %file_id, "cannot reach the relay to hold the file");
            }
            Pending::Complete => {}
            Pending::Offer { key } => self.offer_answered(key, false),
        }
    }
}
