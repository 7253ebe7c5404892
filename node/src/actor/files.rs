//! The actor's side of file transfers: sending (seal once to build the manifest, then seal
//! each chunk again from disk when it is asked for), receiving (pull chunks from every source,
//! several at once, check each against the manifest, write it in place, rename the file into
//! place once its whole-file hash matches), holding sealed chunks for others (blind relay),
//! and resuming all of it after a restart from the chunk marks in the store.
//!
//! # Threads
//!
//! Everything that touches file contents (reading, sealing, hashing, opening, writing) runs on
//! tokio's blocking pool; the actor only schedules, keeps the books and answers requests, so a
//! 4 GiB transfer never stalls chat. Each job ends in a [`Job`] the actor picks up in its loop.
//!
//! # Memory
//!
//! A download holds at most [`WINDOW`] chunks in flight (each at most the manifest's chunk
//! size, 256 KiB for files up to 32 GiB), whatever the file's size. A sender reads one chunk
//! per request. Neither ever holds a file whole.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use encrypto_crypto::envelope::{self, Envelope};
use encrypto_crypto::file::{
    self as cfile, FileId, FileKey, FileManifest, ManifestBuilder, SEALED_CHUNK_OVERHEAD,
};
use encrypto_crypto::{MessageId, PeerId};
use libp2p::Multiaddr;
use libp2p::request_response::{self, Message, OutboundRequestId, ResponseChannel};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::{Actor, Inbound, NodeError, NodeEvent, Reply, now_ms};
use crate::protocol::{ChatPayload, FileOffer, FileRequest, FileResponse, FileSource};
use crate::store::{
    Body, Direction, OutboxItem, OutboxKind, Status, StoredMessage, Transfer, TransferRole,
    TransferState,
};

/// Chunk requests in flight for one download, over all its sources.
const WINDOW: usize = 32;
/// Chunk requests in flight to one source.
const PER_SOURCE: usize = 16;
/// Serving jobs running at once; requests beyond are answered "unavailable" (asked again).
const MAX_SERVING: usize = 64;
/// A source that sent this many chunks that failed verification is not asked again.
const MAX_BAD: u32 = 3;
/// Progress events at most this often per transfer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// A source that failed is asked again after this long, doubling up to [`SOURCE_BACKOFF_MAX`].
const SOURCE_BACKOFF: Duration = Duration::from_millis(500);
const SOURCE_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest wait between a relay's attempts to pass an offer on.
const OFFER_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Chunk marks are written (and flushed with the next group commit) in groups of this many,
/// and whenever a download goes idle: a crash costs at most these chunks again.
const MARK_BATCH: usize = 16;
/// Largest manifest sent inline in the offer; larger ones are fetched.
const INLINE_MANIFEST_MAX: usize = 32 * 1024;
/// At most this many marked relays are asked to hold a file for an offline recipient.
const MAX_AUTO_RELAYS: usize = 3;
/// Names tried for a download whose name is taken: `name`, `name (1)`, ... `name (999)`.
const MAX_NAME_TRIES: u32 = 1000;

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

/// A file read and sealed once: the manifest builder, the file's name and size.
type Prepared = (ManifestBuilder, String, u64);
/// A checked manifest, with the file key and SHA-256 for a recipient (not for a relay).
type Checked = (FileManifest, Option<FileKey>, Option<[u8; 32]>);

/// Identifies a transfer in the actor.
type TKey = (FileId, TransferRole, PeerId);

fn tkey(t: &Transfer) -> TKey {
    (t.file_id, t.role, t.peer)
}

/// What a finished blocking job reports.
pub(super) enum Job {
    /// `send_file`: the file was read and sealed once; the manifest can be signed.
    Prepared {
        reply: Reply<FileTransfer>,
        peer: PeerId,
        path: PathBuf,
        via: Vec<PeerId>,
        result: Result<Box<Prepared>, NodeError>,
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

/// Why a received chunk was not stored.
pub(super) enum ChunkFault {
    /// It failed verification: the source is counted and another one asked.
    Bad(String),
    /// Writing it failed (permissions, an I/O error): the download fails.
    Io(String),
    /// The disk is full: the download fails and gives the space back.
    DiskFull,
}

/// Why a finished download was not put in place.
pub(super) enum Finish {
    /// These chunks turned out bad on disk: fetch them again.
    Repair(Vec<u64>),
    /// Give up.
    Fail(String),
}

/// Where received chunks go.
enum SinkMode {
    /// Recipient: opened and written as plaintext; the whole-file SHA-256 is computed as the
    /// chunks arrive in order (those that arrive early are read back when their turn comes).
    Open {
        key: FileKey,
        hasher: Sha256,
        hashed: u64,
    },
    /// Relay: written sealed, as received.
    Blind,
}

struct Sink {
    file: File,
    mode: SinkMode,
    have: Vec<bool>,
}

/// A peer that can serve a download's chunks.
struct Source {
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    in_flight: usize,
    bad: u32,
    ready_at: Instant,
    backoff: Duration,
    /// The peer said it does not hold the file (yet): asked again after the backoff.
    unavailable: bool,
}

impl Source {
    fn new(peer: PeerId, addrs: Vec<Multiaddr>) -> Self {
        Source {
            peer,
            addrs,
            in_flight: 0,
            bad: 0,
            ready_at: Instant::now(),
            backoff: SOURCE_BACKOFF,
            unavailable: false,
        }
    }

    fn usable(&self, now: Instant) -> bool {
        self.bad < MAX_BAD && self.ready_at <= now && self.in_flight < PER_SOURCE
    }

    fn failed(&mut self) {
        self.ready_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(SOURCE_BACKOFF_MAX);
    }
}

/// A download (receive or relay) in progress.
struct Download {
    transfer: Transfer,
    manifest: Option<Arc<FileManifest>>,
    /// Where chunks are written before the file is put in place.
    partial: PathBuf,
    sink: Option<Arc<Mutex<Sink>>>,
    have: Vec<bool>,
    held: u64,
    bytes_done: u64,
    /// Lowest index that may still be missing.
    cursor: u64,
    in_flight: HashMap<u64, PeerId>,
    sources: Vec<Source>,
    /// Sources that sent a bad copy of a chunk: not asked for that chunk again.
    bad_from: HashMap<u64, Vec<PeerId>>,
    unmarked: Vec<u64>,
    manifest_asked: bool,
    finishing: bool,
    last_emit: Instant,
}

/// What the actor serves for one file id: its chunks, to whom.
struct Served {
    manifest: Arc<FileManifest>,
    /// Send: the plaintext and the key to seal it again. Relay: the sealed chunks.
    origin: Origin,
    /// Who may ask: recipients (and the relays chosen for them).
    allowed: HashSet<PeerId>,
    /// Each recipient's own manifest (the key is wrapped for each one).
    manifests: HashMap<PeerId, Vec<u8>>,
}

#[derive(Clone)]
enum Origin {
    Plain { path: PathBuf, key: FileKey },
    Sealed { path: PathBuf },
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
    pub(super) jobs: JoinSet<Job>,
    downloads: HashMap<TKey, Download>,
    requests: HashMap<OutboundRequestId, Pending>,
    served: HashMap<FileId, Arc<Served>>,
    serving: usize,
    /// Send transfers: chunks served to each recipient, for progress.
    sent: HashMap<(FileId, PeerId), SendProgress>,
    /// Relay: sealed offers to pass on to their recipients.
    offers: HashMap<TKey, RelayOffer>,
}

/// A sender's sealed offer a relay passes on to the recipient.
struct RelayOffer {
    recipient: PeerId,
    envelope: Vec<u8>,
    next_at: Instant,
    backoff: Duration,
    in_flight: bool,
}

impl RelayOffer {
    fn new(recipient: PeerId, envelope: Vec<u8>) -> Self {
        RelayOffer {
            recipient,
            envelope,
            next_at: Instant::now(),
            backoff: SOURCE_BACKOFF,
            in_flight: false,
        }
    }
}

#[derive(Default)]
struct SendProgress {
    chunks: HashSet<u64>,
    bytes: u64,
    last_emit: Option<Instant>,
}

/// A media type from the file name's extension, for the manifest (the recipient's window may
/// use it to show an icon); `application/octet-stream` when unknown.
fn media_type_of(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "md" | "log" => "text/plain",
        "html" | "htm" => "text/html",
        "csv" => "text/csv",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

/// Reads the file once, sealing each chunk to build the manifest (the sealed bytes are
/// dropped: chunks are sealed again on request). Runs on the blocking pool.
fn prepare(
    path: &Path,
    recipient: &encrypto_crypto::PublicIdentity,
    max_size: u64,
) -> Result<Box<Prepared>, NodeError> {
    let bad = |reason: String| NodeError::File(format!("{}: {reason}", path.display()));
    let meta = fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.is_dir() {
        return Err(bad("is a directory, not a file".into()));
    }
    if !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    let size = meta.len();
    if size > max_size {
        return Err(bad(format!(
            "is {size} bytes; the largest file that can be sent is {max_size} bytes"
        )));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| bad("has no file name".into()))?;
    let mut file = File::open(path).map_err(|e| bad(e.to_string()))?;
    let chunk_size = cfile::chunk_size_for(size).map_err(|e| bad(e.to_string()))?;
    let mut builder = ManifestBuilder::new(
        &mut rand::rng(),
        recipient,
        FileId::random(&mut rand::rng()),
        size,
        chunk_size,
        &name,
        media_type_of(&name),
    )
    .map_err(|e| bad(e.to_string()))?;
    let mut buf = Vec::with_capacity(chunk_size as usize);
    while let Some(len) = builder.next_chunk_len() {
        buf.clear();
        (&mut file)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|e| bad(e.to_string()))?;
        if buf.len() as u64 != len {
            return Err(bad("the file shrank while it was read".into()));
        }
        builder
            .seal_next_chunk(&buf)
            .map_err(|e| bad(e.to_string()))?;
    }
    let mut probe = [0u8; 1];
    if file.read(&mut probe).map_err(|e| bad(e.to_string()))? != 0 {
        return Err(bad("the file grew while it was read".into()));
    }
    Ok(Box::new((builder, name, size)))
}

/// Reads chunk `index` and seals it again (sender), or reads the sealed chunk (relay);
/// either way checked against the manifest. Runs on the blocking pool.
fn read_chunk(origin: &Origin, manifest: &FileManifest, index: u64) -> Result<Vec<u8>, String> {
    let plain_len = manifest.chunk_plain_len(index).map_err(|e| e.to_string())?;
    match origin {
        Origin::Plain { path, key } => {
            let file = File::open(path).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; plain_len as usize];
            let offset = index * u64::from(manifest.chunk_size);
            file.read_exact_at(&mut buf, offset)
                .map_err(|e| e.to_string())?;
            manifest
                .reseal_chunk(key, index, &buf)
                .map_err(|e| e.to_string())
        }
        Origin::Sealed { path } => {
            let file = File::open(path).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; plain_len as usize + SEALED_CHUNK_OVERHEAD];
            let stride = u64::from(manifest.chunk_size) + SEALED_CHUNK_OVERHEAD as u64;
            file.read_exact_at(&mut buf, index * stride)
                .map_err(|e| e.to_string())?;
            cfile::verify_chunk(manifest, index, &buf).map_err(|e| e.to_string())?;
            Ok(buf)
        }
    }
}

/// Checks a received chunk, opens it (recipient) and writes it in place. Runs on the blocking
/// pool; the check and decryption run outside the sink's lock.
fn store_chunk(
    manifest: &FileManifest,
    key: Option<&FileKey>,
    sink: &Mutex<Sink>,
    index: u64,
    mut bytes: Vec<u8>,
) -> Result<u64, ChunkFault> {
    cfile::verify_chunk(manifest, index, &bytes).map_err(|e| ChunkFault::Bad(e.to_string()))?;
    let offset = match key {
        Some(key) => {
            cfile::open_chunk_in_place(key, manifest, index, &mut bytes)
                .map_err(|e| ChunkFault::Bad(e.to_string()))?;
            index * u64::from(manifest.chunk_size)
        }
        None => index * (u64::from(manifest.chunk_size) + SEALED_CHUNK_OVERHEAD as u64),
    };
    let plain_len = manifest
        .chunk_plain_len(index)
        .map_err(|e| ChunkFault::Bad(e.to_string()))?;
    let mut sink = sink
        .lock()
        .map_err(|_| ChunkFault::Io("a writer thread failed".into()))?;
    sink.file.write_all_at(&bytes, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::StorageFull {
            ChunkFault::DiskFull
        } else {
            ChunkFault::Io(e.to_string())
        }
    })?;
    let i = usize::try_from(index).map_err(|_| ChunkFault::Bad("index out of range".into()))?;
    if let Some(slot) = sink.have.get_mut(i) {
        *slot = true;
    }
    let Sink { file, mode, have } = &mut *sink;
    if let SinkMode::Open { hasher, hashed, .. } = mode {
        if *hashed == index {
            hasher.update(&bytes);
            *hashed += 1;
        }
        catch_up_hash(file, manifest, have, hasher, hashed)
            .map_err(|e| ChunkFault::Io(describe_io(&e)))?;
    }
    Ok(plain_len)
}

/// Hashes, in order, the chunks already on disk past those hashed.
fn catch_up_hash(
    file: &File,
    manifest: &FileManifest,
    have: &[bool],
    hasher: &mut Sha256,
    hashed: &mut u64,
) -> io::Result<()> {
    let mut buf = Vec::new();
    while usize::try_from(*hashed)
        .ok()
        .and_then(|i| have.get(i))
        .copied()
        .unwrap_or(false)
    {
        let len = manifest
            .chunk_plain_len(*hashed)
            .map_err(|e| io::Error::other(e.to_string()))?;
        buf.resize(len as usize, 0);
        file.read_exact_at(&mut buf, *hashed * u64::from(manifest.chunk_size))?;
        hasher.update(&buf);
        *hashed += 1;
    }
    Ok(())
}

fn describe_io(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::StorageFull {
        "the disk is full".into()
    } else {
        e.to_string()
    }
}

/// The last step of a download: every chunk is written. Recipient: check the whole-file
/// SHA-256 against the sender's, then link the file into place under a name not taken and
/// remove the partial file. Relay: just sync. Runs on the blocking pool.
fn finish(
    manifest: &FileManifest,
    sink: &Mutex<Sink>,
    expected: Option<[u8; 32]>,
    partial: &Path,
    target: Option<(PathBuf, bool)>,
) -> Result<PathBuf, Finish> {
    let mut sink = sink
        .lock()
        .map_err(|_| Finish::Fail("a writer thread failed".into()))?;
    let Sink { file, mode, have } = &mut *sink;
    file.sync_all().map_err(|e| Finish::Fail(describe_io(&e)))?;
    let SinkMode::Open {
        key,
        hasher,
        hashed,
    } = mode
    else {
        return Ok(partial.to_owned());
    };
    catch_up_hash(file, manifest, have, hasher, hashed)
        .map_err(|e| Finish::Fail(describe_io(&e)))?;
    let digest: [u8; 32] = std::mem::take(hasher).finalize().into();
    *hashed = 0;
    if Some(digest) != expected {
        // Every chunk was checked on arrival, so the disk changed under us (or the sender's
        // hash is wrong): find the chunks that no longer seal to the manifest's hashes.
        let mut bad = Vec::new();
        let mut buf = Vec::new();
        for index in 0..manifest.chunk_count() {
            let len = manifest
                .chunk_plain_len(index)
                .map_err(|e| Finish::Fail(e.to_string()))?;
            buf.resize(len as usize, 0);
            let ok = file
                .read_exact_at(&mut buf, index * u64::from(manifest.chunk_size))
                .is_ok()
                && manifest.reseal_chunk(key, index, &buf).is_ok();
            if !ok {
                bad.push(index);
                if let Some(slot) = usize::try_from(index).ok().and_then(|i| have.get_mut(i)) {
                    *slot = false;
                }
            }
        }
        return Err(if bad.is_empty() {
            Finish::Fail("the file's SHA-256 does not match the one the sender signed".into())
        } else {
            Finish::Repair(bad)
        });
    }
    let Some((target, exact)) = target else {
        return Err(Finish::Fail("no destination".into()));
    };
    let placed = place(partial, &target, exact).map_err(|e| Finish::Fail(describe_io(&e)))?;
    let _ = fs::remove_file(partial);
    Ok(placed)
}

/// Links `partial` to `target`, or (unless `exact`) to `name (1).ext`, `name (2).ext`, ...:
/// a hard link fails if the name exists, so nothing is ever overwritten.
fn place(partial: &Path, target: &Path, exact: bool) -> io::Result<PathBuf> {
    let tries = if exact { 1 } else { MAX_NAME_TRIES };
    for n in 0..tries {
        let candidate = if n == 0 {
            target.to_owned()
        } else {
            numbered(target, n)
        };
        match fs::hard_link(partial, &candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{} exists; not overwritten", target.display()),
    ))
}

/// `dir/stem (n).ext`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem} ({n}).{}", ext.to_string_lossy()),
        None => format!("{stem} ({n})"),
    };
    path.with_file_name(name)
}

/// Room a download always leaves free on its disk, for the store (a full disk would stop it
/// from recording messages) and the rest of the machine.
const DISK_RESERVE: u64 = 64 << 20;

/// Reserves the space of a download of `len` bytes up front (`fallocate`), so chunks never
/// fill the disk half-way: fails, saying how much is missing, unless `len` fits with
/// [`DISK_RESERVE`] to spare. On a filesystem that cannot preallocate, the check alone stands.
fn reserve_space(file: &File, len: u64) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / f64::from(1 << 20));
    let (Ok(stat), Ok(meta)) = (nix::sys::statvfs::fstatvfs(file), file.metadata()) else {
        // Nothing to measure with: the writes themselves report a full disk.
        return Ok(());
    };
    let free = stat.blocks_available().saturating_mul(stat.fragment_size());
    let missing = len.saturating_sub(meta.blocks() * 512);
    // A resumed download whose space is already taken needs nothing more.
    if missing > 0 && free < missing.saturating_add(DISK_RESERVE) {
        return Err(format!(
            "the file needs {} more, {} is free, and {} is kept free",
            mib(missing),
            mib(free),
            mib(DISK_RESERVE)
        ));
    }
    let Ok(end) = i64::try_from(len) else {
        return Err("the file is too large for this system".into());
    };
    if end == 0 {
        return Ok(());
    }
    match nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), 0, end) {
        Err(nix::errno::Errno::ENOSPC) => Err(format!("the file needs {}", mib(missing))),
        // Unsupported here, or some other refusal: the check above stands.
        _ => Ok(()),
    }
}

fn open_partial(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn sources_of(transfer: &Transfer) -> Vec<Source> {
    let mut sources = Vec::new();
    if transfer.role == TransferRole::Receive || transfer.role == TransferRole::Relay {
        sources.push(Source::new(transfer.peer, Vec::new()));
    }
    for (peer, addrs) in &transfer.sources {
        if !sources.iter().any(|s| s.peer == *peer) {
            let addrs = addrs.iter().filter_map(|a| a.parse().ok()).collect();
            sources.push(Source::new(*peer, addrs));
        }
    }
    sources
}

impl Actor {
    fn downloads_dir(&self) -> PathBuf {
        self.config.data_dir.join("downloads")
    }

    fn partial_path(&self, t: &Transfer) -> PathBuf {
        match t.role {
            TransferRole::Relay => self
                .config
                .data_dir
                .join("relay")
                .join(format!("{}-{}.sealed", t.file_id, t.peer)),
            _ => {
                let dir = t
                    .out
                    .as_deref()
                    .and_then(Path::parent)
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| self.downloads_dir(), Path::to_owned);
                dir.join(format!(".{}.encrypto-part", t.file_id))
            }
        }
    }

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

    // ----- commands -------------------------------------------------------------------------

    pub(super) fn send_file(
        &mut self,
        peer: PeerId,
        path: PathBuf,
        via: Vec<PeerId>,
        reply: Reply<FileTransfer>,
    ) {
        let pinned = match self.contact_for_sending(&peer) {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        for relay in &via {
            if *relay == peer || *relay == self.identity.peer_id() {
                let _ = reply.send(Err(NodeError::File(
                    "a relay must be a third peer, not the recipient or this node".into(),
                )));
                return;
            }
        }
        let via = match self.with_marked_relays(peer, via) {
            Ok(via) => via,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let recipient = pinned.public.clone();
        let max = self.config.max_file_size;
        self.files.jobs.spawn_blocking(move || {
            let result = prepare(&path, &recipient, max);
            Job::Prepared {
                reply,
                peer,
                path,
                via,
                result,
            }
        });
    }

    /// The relays for a file to `peer`: those named, and, when `peer` is not connected, the
    /// contacts marked as relays (at most [`MAX_AUTO_RELAYS`], connected ones first).
    fn with_marked_relays(
        &mut self,
        peer: PeerId,
        mut via: Vec<PeerId>,
    ) -> Result<Vec<PeerId>, NodeError> {
        if self.connected.contains(&peer) {
            return Ok(via);
        }
        let me = self.identity.peer_id();
        let mut marked: Vec<PeerId> = self
            .store
            .contacts()?
            .into_iter()
            .filter(|c| c.relay && !c.key_changed)
            .map(|c| c.peer_id)
            .filter(|r| *r != peer && *r != me && !via.contains(r))
            .collect();
        marked.sort_by_key(|r| !self.connected.contains(r));
        marked.truncate(MAX_AUTO_RELAYS);
        if !marked.is_empty() {
            info!(%peer, relays = ?marked, "the recipient is offline: the file goes to its marked relays too");
        }
        via.extend(marked);
        Ok(via)
    }

    /// The file was read and sealed once: sign the manifest, record the transfer, and queue
    /// the offer in the chat like a text (answered once it is durable).
    fn on_prepared(
        &mut self,
        reply: Reply<FileTransfer>,
        peer: PeerId,
        path: PathBuf,
        via: Vec<PeerId>,
        result: Result<Box<Prepared>, NodeError>,
    ) {
        let (builder, name, size) = match result {
            Ok(r) => *r,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let path = fs::canonicalize(&path).unwrap_or(path);
        let sha_and_manifest = builder
            .finish(&self.identity, now_ms(), &mut rand::rng())
            .map_err(|e| NodeError::Crypto(e.to_string()))
            .and_then(|(manifest, key)| {
                let meta = manifest
                    .open_meta(&key)
                    .map_err(|e| NodeError::Crypto(e.to_string()))?;
                Ok((manifest, key, meta.sha256))
            });
        let (manifest, key, sha256) = match sha_and_manifest {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        match self.queue_file(peer, manifest, key, name, size, sha256, Some(path), via) {
            Ok((transfer, rx)) => self.reply_when_queued(&transfer, rx, reply),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Records an outgoing transfer and queues its offer; the receiver answers once the offer
    /// is durable in the outbox.
    #[allow(clippy::too_many_arguments)]
    fn queue_file(
        &mut self,
        peer: PeerId,
        manifest: FileManifest,
        key: FileKey,
        name: String,
        size: u64,
        sha256: [u8; 32],
        path: Option<PathBuf>,
        via: Vec<PeerId>,
    ) -> Result<(Transfer, oneshot::Receiver<Result<MessageId, NodeError>>), NodeError> {
        let contact = self.contact_for_sending(&peer)?.contact.clone();
        if !contact.listed {
            self.list_contact(&peer)?;
        }
        let manifest_bytes = manifest.to_bytes();
        let manifest_hash = *blake3::hash(&manifest_bytes).as_bytes();
        let sources: Vec<FileSource> = via
            .iter()
            .map(|relay| FileSource {
                peer: relay.to_bytes().into(),
                addrs: self.known_addrs(relay),
            })
            .collect();
        let offer = FileOffer {
            file_id: manifest.file_id,
            name: name.clone(),
            size,
            manifest_hash,
            manifest: (manifest_bytes.len() <= INLINE_MANIFEST_MAX)
                .then(|| manifest_bytes.clone().into()),
            sources,
        };
        let id = MessageId::random(&mut rand::rng());
        let ts = self.next_ts();
        // The relays' copy of the offer: sealed with `rsa` (it opens without any earlier
        // message, whenever it arrives), the same message id (the recipient keeps one), and no
        // inline manifest (the relay serves it).
        let relay_offer = if via.is_empty() {
            None
        } else {
            let public = self.contact_for_sending(&peer)?.public.clone();
            let copy = FileOffer {
                manifest: None,
                ..offer.clone()
            };
            match envelope::seal_rsa(
                &self.identity,
                &public,
                id,
                ts,
                &ChatPayload::File(copy).to_bytes(),
                &mut rand::rng(),
            ) {
                Ok(env) => Some(env.to_bytes()),
                Err(e) => {
                    warn!(error = %e, "the offer does not fit a relayed envelope; relays get only the chunks");
                    None
                }
            }
        };
        let transfer = Transfer {
            file_id: manifest.file_id,
            peer,
            role: TransferRole::Send,
            name: name.clone(),
            size,
            state: TransferState::Offered,
            path,
            out: None,
            sha256: Some(sha256),
            key: Some(key),
            message_id: id,
            created_ms: ts,
            error: None,
            sources: Vec::new(),
            relays: via.clone(),
            manifest_hash,
            offer: None,
        };
        self.store.put_manifest(
            &manifest.file_id,
            TransferRole::Send,
            &peer,
            &manifest_bytes,
        )?;
        self.store.put_transfer(&transfer)?;
        self.files.served.remove(&manifest.file_id);
        let message = StoredMessage {
            id,
            peer,
            direction: Direction::Out,
            timestamp_ms: ts,
            cipher: contact.cipher,
            body: Body::File {
                file_id: *manifest.file_id.as_bytes(),
                name,
                size,
            },
            status: Status::Queued,
            envelope: None,
        };
        let item = OutboxItem {
            id,
            peer,
            created_ms: ts,
            cipher: contact.cipher,
            kind: OutboxKind::Payload(ChatPayload::File(offer).to_bytes()),
            attempts: 0,
        };
        let (tx, rx) = oneshot::channel();
        self.queue_send(message, item, tx);
        for relay in via {
            self.ask_to_hold(
                manifest.file_id,
                relay,
                manifest_bytes.clone(),
                relay_offer.clone(),
            );
        }
        Ok((transfer, rx))
    }

    /// Answers `send_file` / `forward_file` once the offer is durable in the outbox.
    fn reply_when_queued(
        &self,
        transfer: &Transfer,
        queued: oneshot::Receiver<Result<MessageId, NodeError>>,
        reply: Reply<FileTransfer>,
    ) {
        let view = self.view(transfer);
        tokio::spawn(async move {
            let result = match queued.await {
                Ok(Ok(_)) => Ok(view),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(NodeError::Stopped),
            };
            let _ = reply.send(result);
        });
    }

    fn known_addrs(&self, peer: &PeerId) -> Vec<String> {
        match self.store.peer(peer) {
            Ok(Some(known)) => known.addrs,
            _ => Vec::new(),
        }
    }

    fn ask_to_hold(
        &mut self,
        file_id: FileId,
        relay: PeerId,
        manifest: Vec<u8>,
        offer: Option<Vec<u8>>,
    ) {
        let request_id = self.swarm.behaviour_mut().file.send_request(
            &relay,
            FileRequest::Hold {
                manifest: manifest.into(),
                offer: offer.map(Into::into),
            },
        );
        self.files
            .requests
            .insert(request_id, Pending::Hold { file_id, relay });
    }

    /// Sends a file we hold (received complete, or sent) to another contact without sealing
    /// its chunks again: only the key is wrapped anew.
    pub(super) fn forward_file(&mut self, file_id: FileId, to: PeerId, reply: Reply<FileTransfer>) {
        let result = (|| {
            let source = self
                .store
                .transfers_of(&file_id)?
                .into_iter()
                .find(|t| {
                    t.key.is_some()
                        && t.path.is_some()
                        && (t.role == TransferRole::Send || t.state == TransferState::Complete)
                })
                .ok_or_else(|| {
                    NodeError::File(format!("no complete copy of file {file_id} is here"))
                })?;
            let bytes = self
                .store
                .manifest(&file_id, source.role, &source.peer)?
                .ok_or_else(|| NodeError::File(format!("the manifest of {file_id} is missing")))?;
            let manifest =
                FileManifest::from_bytes(&bytes).map_err(|e| NodeError::File(e.to_string()))?;
            let key = source.key.clone().ok_or(NodeError::Stopped)?;
            let public = self.contact_for_sending(&to)?.public.clone();
            let forwarded = manifest
                .forward(&key, &self.identity, &public, now_ms(), &mut rand::rng())
                .map_err(|e| NodeError::Crypto(e.to_string()))?;
            self.queue_file(
                to,
                forwarded,
                key,
                source.name.clone(),
                source.size,
                source.sha256.unwrap_or_default(),
                source.path.clone(),
                Vec::new(),
            )
        })();
        match result {
            Ok((transfer, rx)) => self.reply_when_queued(&transfer, rx, reply),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Starts (or restarts) downloading a file offered to us.
    pub(super) fn fetch_file(
        &mut self,
        file_id: FileId,
        out: Option<PathBuf>,
    ) -> Result<FileTransfer, NodeError> {
        let mut transfer = self
            .store
            .transfers_of(&file_id)?
            .into_iter()
            .find(|t| t.role == TransferRole::Receive)
            .ok_or_else(|| {
                NodeError::File(format!("no file {file_id} was offered to this node"))
            })?;
        if transfer.state == TransferState::Complete {
            return Ok(self.view(&transfer));
        }
        if let Some(out) = out {
            let out = if out.is_dir() {
                out.join(&transfer.name)
            } else {
                out
            };
            if out.exists() {
                return Err(NodeError::File(format!(
                    "{} exists; not overwritten",
                    out.display()
                )));
            }
            if self.files.downloads.contains_key(&tkey(&transfer))
                && transfer.out != Some(out.clone())
            {
                return Err(NodeError::File(
                    "the file is already downloading; wait for it or fetch it again once done"
                        .into(),
                ));
            }
            transfer.out = Some(out);
        }
        transfer.state = TransferState::Transferring;
        transfer.error = None;
        self.store.put_transfer(&transfer)?;
        self.start_download(transfer.clone());
        Ok(self.view(&transfer))
    }

    pub(super) fn files_list(&self) -> Result<Vec<FileTransfer>, NodeError> {
        Ok(self
            .store
            .transfers()?
            .iter()
            .map(|t| self.view(t))
            .collect())
    }

    // ----- receiving an offer ---------------------------------------------------------------

    /// A file offer arrived in a chat envelope: record the transfer (before the message is
    /// acknowledged) and start downloading it if it is small enough.
    pub(super) fn receive_offer(
        &mut self,
        peer: PeerId,
        id: MessageId,
        offer: &FileOffer,
    ) -> Result<Body, String> {
        let body = Body::File {
            file_id: *offer.file_id.as_bytes(),
            name: offer.name.clone(),
            size: offer.size,
        };
        let existing = self
            .store
            .transfer(&offer.file_id, TransferRole::Receive, &peer)
            .map_err(|e| format!("store: {e}"))?;
        if existing.is_some() {
            return Ok(body);
        }
        if let Some(inline) = &offer.manifest
            && *blake3::hash(inline).as_bytes() != offer.manifest_hash
        {
            return Err("the inline manifest does not match its hash".into());
        }
        let sources = offer
            .sources
            .iter()
            .filter_map(|s| Some((PeerId::from_bytes(&s.peer).ok()?, s.addrs.clone())))
            .filter(|(p, _)| *p != self.identity.peer_id() && *p != peer)
            .take(8)
            .collect();
        let auto = offer.size <= self.config.auto_download_max;
        let transfer = Transfer {
            file_id: offer.file_id,
            peer,
            role: TransferRole::Receive,
            name: offer.name.clone(),
            size: offer.size,
            state: if auto {
                TransferState::Transferring
            } else {
                TransferState::Offered
            },
            path: None,
            out: None,
            sha256: None,
            key: None,
            message_id: id,
            created_ms: now_ms(),
            error: None,
            sources,
            relays: Vec::new(),
            manifest_hash: offer.manifest_hash,
            offer: None,
        };
        let stored = (|| {
            if let Some(inline) = &offer.manifest {
                self.store
                    .put_manifest(&offer.file_id, TransferRole::Receive, &peer, inline)?;
            }
            self.store.put_transfer(&transfer)
        })();
        stored.map_err(|e| format!("store: {e}"))?;
        self.emit(NodeEvent::FileOffered {
            peer,
            file_id: offer.file_id,
            name: offer.name.clone(),
            size: offer.size,
        });
        if auto {
            self.start_download(transfer);
        }
        Ok(body)
    }

    // ----- downloading ----------------------------------------------------------------------

    fn start_download(&mut self, transfer: Transfer) {
        let key = tkey(&transfer);
        if self.files.downloads.contains_key(&key) {
            return;
        }
        let partial = self.partial_path(&transfer);
        let sources = sources_of(&transfer);
        let download = Download {
            transfer,
            manifest: None,
            partial,
            sink: None,
            have: Vec::new(),
            held: 0,
            bytes_done: 0,
            cursor: 0,
            in_flight: HashMap::new(),
            sources,
            bad_from: HashMap::new(),
            unmarked: Vec::new(),
            manifest_asked: false,
            finishing: false,
            last_emit: Instant::now(),
        };
        self.files.downloads.insert(key, download);
        match self.store.manifest(&key.0, key.1, &key.2) {
            Ok(Some(bytes)) => self.manifest_arrived(key, &bytes, None),
            Ok(None) => self.pump(key),
            Err(e) => self.fail_download(key, format!("store: {e}")),
        }
    }

    /// A manifest is known for a download (stored, inline, or fetched from `from`): verify it
    /// against the sender's pinned key, unwrap the file key (recipient), open the partial file
    /// and load the chunk marks.
    fn manifest_arrived(&mut self, key: TKey, bytes: &[u8], from: Option<PeerId>) {
        let Some(d) = self.files.downloads.get(&key) else {
            return;
        };
        if d.manifest.is_some() {
            return;
        }
        let expected_hash = d.transfer.manifest_hash;
        let offered_name = d.transfer.name.clone();
        let prepared = (|| -> Result<Checked, String> {
            if *blake3::hash(bytes).as_bytes() != expected_hash {
                return Err("the manifest does not match the offer".into());
            }
            let manifest = FileManifest::from_bytes(bytes).map_err(|e| e.to_string())?;
            let sender = self
                .pinned(&key.2)
                .map_err(|e| e.to_string())?
                .ok_or("the sender is not a contact")?;
            manifest.verify(&sender.public).map_err(|e| e.to_string())?;
            if manifest.file_id != key.0 {
                return Err("the manifest is for another file".into());
            }
            if key.1 == TransferRole::Relay {
                return Ok((manifest, None, None));
            }
            let file_key = manifest
                .unwrap_key(&self.identity, &mut rand::rng())
                .map_err(|e| e.to_string())?;
            let meta = manifest.open_meta(&file_key).map_err(|e| e.to_string())?;
            // The file is saved under the offer's name: it must be the signed, sealed one,
            // which the crypto crate has checked (no path separator, not `.` or `..`).
            if meta.name != offered_name {
                return Err("the offer's file name differs from the manifest's".into());
            }
            Ok((manifest, Some(file_key), Some(meta.sha256)))
        })();
        let (manifest, file_key, sha256) = match prepared {
            Ok(p) => p,
            Err(reason) => {
                if let Some(source) = from {
                    // A bad manifest from a relay: ask someone else.
                    warn!(%source, %reason, "a manifest was rejected");
                    if let Some(d) = self.files.downloads.get_mut(&key) {
                        if let Some(s) = d.sources.iter_mut().find(|s| s.peer == source) {
                            s.bad += 1;
                        }
                        d.manifest_asked = false;
                    }
                    self.pump(key);
                } else {
                    self.fail_download(key, reason);
                }
                return;
            }
        };
        if from.is_some()
            && let Err(e) = self.store.put_manifest(&key.0, key.1, &key.2, bytes)
        {
            return self.fail_download(key, format!("store: {e}"));
        }
        let held = match self.store.chunks_held(&key.0, key.1, &key.2) {
            Ok(held) => held,
            Err(e) => return self.fail_download(key, format!("store: {e}")),
        };
        let Some(d) = self.files.downloads.get_mut(&key) else {
            return;
        };
        let count = usize::try_from(manifest.chunk_count()).unwrap_or(0);
        let mut have = vec![false; count];
        // A partial file lost since (removed by hand) means starting over.
        let partial_exists = d.partial.exists();
        if partial_exists {
            for index in held {
                if let Some(slot) = usize::try_from(index).ok().and_then(|i| have.get_mut(i)) {
                    *slot = true;
                }
            }
        }
        d.held = have.iter().filter(|h| **h).count() as u64;
        d.bytes_done = have
            .iter()
            .enumerate()
            .filter(|(_, h)| **h)
            .filter_map(|(i, _)| manifest.chunk_plain_len(i as u64).ok())
            .sum();
        let file = match open_partial(&d.partial) {
            Ok(f) => f,
            Err(e) => {
                let reason = format!("{}: {}", d.partial.display(), describe_io(&e));
                return self.fail_download(key, reason);
            }
        };
        let len = match file_key {
            Some(_) => manifest.size,
            None => manifest.size + manifest.chunk_count() * SEALED_CHUNK_OVERHEAD as u64,
        };
        if let Err(short) = reserve_space(&file, len) {
            drop(file);
            if !partial_exists {
                let _ = fs::remove_file(&d.partial);
            }
            let dir = d
                .partial
                .parent()
                .unwrap_or(&d.partial)
                .display()
                .to_string();
            let reason = match key.1 {
                TransferRole::Receive => format!(
                    "not enough disk space in {dir}: {short}; make room and run \
                     `encrypto fetch {}`",
                    key.0
                ),
                _ => format!("not enough disk space in {dir} to hold the file: {short}"),
            };
            return self.fail_download(key, reason);
        }
        let mode = match &file_key {
            Some(k) => SinkMode::Open {
                key: k.clone(),
                hasher: Sha256::new(),
                hashed: 0,
            },
            None => SinkMode::Blind,
        };
        d.sink = Some(Arc::new(Mutex::new(Sink {
            file,
            mode,
            have: have.clone(),
        })));
        d.have = have;
        d.manifest = Some(Arc::new(manifest));
        if sha256.is_some() || file_key.is_some() {
            d.transfer.sha256 = sha256;
            d.transfer.key = file_key;
        }
        if !partial_exists {
            let _ = self.store.clear_chunks(&key.0, key.1, &key.2);
        }
        let transfer = d.transfer.clone();
        if let Err(e) = self.store.put_transfer(&transfer) {
            warn!(error = %e, "cannot save a transfer");
        }
        self.pump(key);
    }

    /// Issues requests for a download up to its window: the manifest first if missing, then
    /// the lowest missing chunks, each from a usable source.
    fn pump(&mut self, key: TKey) {
        let now = Instant::now();
        let Some(d) = self.files.downloads.get_mut(&key) else {
            return;
        };
        if d.finishing {
            return;
        }
        let Some(manifest) = d.manifest.clone() else {
            if !d.manifest_asked
                && let Some(source) = d.sources.iter_mut().find(|s| s.usable(now))
            {
                let peer = source.peer;
                source.in_flight += 1;
                d.manifest_asked = true;
                let addrs = source.addrs.clone();
                for addr in addrs {
                    self.swarm.add_peer_address(peer, addr);
                }
                self.reach_source(peer);
                let request_id = self
                    .swarm
                    .behaviour_mut()
                    .file
                    .send_request(&peer, FileRequest::Manifest { file_id: key.0 });
                self.files
                    .requests
                    .insert(request_id, Pending::Manifest { key, source: peer });
            }
            return;
        };
        let count = manifest.chunk_count();
        if d.held == count {
            return self.finish_download(key);
        }
        let mut requests = Vec::new();
        while d.cursor < count && d.have.get(d.cursor as usize).copied().unwrap_or(false) {
            d.cursor += 1;
        }
        let mut index = d.cursor;
        while d.in_flight.len() < WINDOW && index < count {
            let i = index;
            index += 1;
            if d.have[i as usize] || d.in_flight.contains_key(&i) {
                continue;
            }
            let avoid = d.bad_from.get(&i);
            let Some(source) = d
                .sources
                .iter_mut()
                .filter(|s| s.usable(now) && avoid.is_none_or(|a| !a.contains(&s.peer)))
                .min_by_key(|s| s.in_flight)
            else {
                break;
            };
            source.in_flight += 1;
            d.in_flight.insert(i, source.peer);
            requests.push((source.peer, i, source.addrs.clone()));
        }
        let mut dialled = HashSet::new();
        for (peer, index, addrs) in requests {
            for addr in addrs {
                self.swarm.add_peer_address(peer, addr);
            }
            if dialled.insert(peer) {
                self.reach_source(peer);
            }
            let request_id = self.swarm.behaviour_mut().file.send_request(
                &peer,
                FileRequest::Chunk {
                    file_id: key.0,
                    index,
                },
            );
            self.files.requests.insert(
                request_id,
                Pending::Chunk {
                    key,
                    index,
                    source: peer,
                },
            );
        }
    }

    /// Dials a source that is not connected at every address remembered for it: libp2p
    /// forgets an address after a failed dial, and a source that restarted is usually back
    /// where it was. Called only when the source's backoff allows a request.
    fn reach_source(&mut self, peer: PeerId) {
        if !self.connected.contains(&peer)
            && let Err(e) = self.dial_known(peer)
        {
            debug!(%peer, error = %e, "cannot dial a file source");
        }
    }

    /// Every download gets a chance to issue requests (sources that were backing off may be
    /// ready again). Called on the actor's timer and when a peer connects.
    pub(super) fn pump_all(&mut self) {
        let keys: Vec<TKey> = self.files.downloads.keys().copied().collect();
        for key in keys {
            self.pump(key);
        }
        self.pump_offers();
        self.write_marks(false);
    }

    fn on_chunk_response(&mut self, key: TKey, index: u64, source: PeerId, bytes: Vec<u8>) {
        let Some(d) = self.files.downloads.get_mut(&key) else {
            return;
        };
        let (Some(manifest), Some(sink)) = (d.manifest.clone(), d.sink.clone()) else {
            return;
        };
        let file_key = d
            .transfer
            .key
            .clone()
            .filter(|_| key.1 == TransferRole::Receive);
        self.files.jobs.spawn_blocking(move || Job::Stored {
            key,
            index,
            source,
            result: store_chunk(&manifest, file_key.as_ref(), &sink, index, bytes),
        });
    }

    fn release_request(d: &mut Download, index: u64, source: PeerId) {
        d.in_flight.remove(&index);
        if let Some(s) = d.sources.iter_mut().find(|s| s.peer == source) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }

    fn on_stored(
        &mut self,
        key: TKey,
        index: u64,
        source: PeerId,
        result: Result<u64, ChunkFault>,
    ) {
        let Some(d) = self.files.downloads.get_mut(&key) else {
            return;
        };
        Self::release_request(d, index, source);
        match result {
            Ok(len) => {
                if let Some(s) = d.sources.iter_mut().find(|s| s.peer == source) {
                    s.backoff = SOURCE_BACKOFF;
                    s.unavailable = false;
                }
                let i = index as usize;
                if !d.have[i] {
                    d.have[i] = true;
                    d.held += 1;
                    d.bytes_done += len;
                    d.unmarked.push(index);
                }
                let full = d.unmarked.len() >= MARK_BATCH;
                self.progress(key, false);
                if full {
                    self.write_marks(true);
                }
                self.pump(key);
            }
            Err(ChunkFault::Bad(reason)) => {
                warn!(%source, index, %reason, "a chunk failed verification; asking another source");
                if let Some(s) = d.sources.iter_mut().find(|s| s.peer == source) {
                    s.bad += 1;
                }
                d.bad_from.entry(index).or_default().push(source);
                let stuck = !d
                    .sources
                    .iter()
                    .any(|s| s.bad < MAX_BAD && !d.bad_from[&index].contains(&s.peer));
                self.emit(NodeEvent::Rejected {
                    peer: source,
                    reason: format!("chunk {index} of file {}: {reason}", key.0),
                });
                if stuck {
                    self.fail_download(
                        key,
                        format!("chunk {index} failed verification from every source"),
                    );
                } else {
                    self.pump(key);
                }
            }
            Err(ChunkFault::Io(reason)) => {
                let reason = format!("cannot write {}: {reason}", d.partial.display());
                self.fail_download(key, reason);
            }
            Err(ChunkFault::DiskFull) => self.disk_full(key),
        }
    }

    /// Writes the chunk marks not yet written (all downloads). With `now` false, only for
    /// downloads that have nothing in flight (idle or stalled), so marks are never far behind.
    pub(super) fn write_marks(&mut self, now: bool) {
        let mut wrote = false;
        for (key, d) in &mut self.files.downloads {
            if d.unmarked.is_empty()
                || (!now && !d.in_flight.is_empty() && d.unmarked.len() < MARK_BATCH)
            {
                continue;
            }
            let marks = std::mem::take(&mut d.unmarked);
            match self.store.mark_chunks(&key.0, key.1, &key.2, &marks) {
                Ok(()) => wrote = true,
                Err(e) => {
                    warn!(error = %e, "cannot record received chunks; they will be fetched again");
                }
            }
        }
        if wrote {
            // Flushed with the next group commit, off the actor's thread.
            self.note_write();
        }
    }

    fn progress(&mut self, key: TKey, force: bool) {
        let Some(d) = self.files.downloads.get_mut(&key) else {
            return;
        };
        if !force && d.last_emit.elapsed() < PROGRESS_EVERY {
            return;
        }
        d.last_emit = Instant::now();
        let event = NodeEvent::FileProgress {
            peer: key.2,
            file_id: key.0,
            role: key.1,
            bytes_done: d.bytes_done,
            size: d.transfer.size,
        };
        self.emit(event);
    }

    fn finish_download(&mut self, key: TKey) {
        self.write_marks(true);
        let Some(d) = self.files.downloads.get_mut(&key) else {
            return;
        };
        if d.finishing {
            return;
        }
        let (Some(manifest), Some(sink)) = (d.manifest.clone(), d.sink.clone()) else {
            return;
        };
        d.finishing = true;
        let expected = d.transfer.sha256;
        let partial = d.partial.clone();
        let target = match key.1 {
            TransferRole::Relay => None,
            _ => Some(match &d.transfer.out {
                Some(out) => (out.clone(), false),
                None => (
                    self.config
                        .data_dir
                        .join("downloads")
                        .join(&d.transfer.name),
                    false,
                ),
            }),
        };
        self.progress(key, true);
        self.files.jobs.spawn_blocking(move || Job::Finished {
            key,
            result: finish(&manifest, &sink, expected, &partial, target),
        });
    }

    fn on_finished(&mut self, key: TKey, result: Result<PathBuf, Finish>) {
        match result {
            Ok(path) => {
                let Some(d) = self.files.downloads.remove(&key) else {
                    return;
                };
                let mut t = d.transfer;
                t.state = TransferState::Complete;
                t.path = Some(path.clone());
                t.error = None;
                if let Err(e) = self.store.put_transfer(&t) {
                    warn!(error = %e, "cannot save a finished transfer");
                }
                if key.1 == TransferRole::Receive {
                    let _ = self.store.clear_chunks(&key.0, key.1, &key.2);
                    // Tell the sender and the relays (best effort: it only updates their
                    // display, and lets relays drop their copy).
                    for s in &d.sources {
                        let request_id = self
                            .swarm
                            .behaviour_mut()
                            .file
                            .send_request(&s.peer, FileRequest::Complete { file_id: key.0 });
                        self.files.requests.insert(request_id, Pending::Complete);
                    }
                } else {
                    self.files.served.remove(&key.0);
                }
                let _ = self.store.flush();
                info!(file = %key.0, path = %path.display(), "file complete");
                self.emit(NodeEvent::FileComplete {
                    peer: key.2,
                    file_id: key.0,
                    role: key.1,
                    path: Some(path),
                    sha256: t.sha256,
                });
            }
            Err(Finish::Repair(bad)) => {
                let Some(d) = self.files.downloads.get_mut(&key) else {
                    return;
                };
                warn!(file = %key.0, chunks = bad.len(), "chunks damaged on disk; fetching them again");
                d.finishing = false;
                for index in bad {
                    if let Some(slot) = d.have.get_mut(index as usize)
                        && *slot
                    {
                        *slot = false;
                        d.held -= 1;
                        if let Some(m) = &d.manifest {
                            d.bytes_done -= m.chunk_plain_len(index).unwrap_or(0);
                        }
                    }
                    let _ = self.store.unmark_chunk(&key.0, key.1, &key.2, index);
                }
                d.cursor = 0;
                self.pump(key);
            }
            Err(Finish::Fail(reason)) => {
                if let Some(d) = self.files.downloads.get_mut(&key) {
                    d.finishing = false;
                }
                self.fail_download(key, reason);
            }
        }
    }

    /// A download filled the disk: it fails, and its partial file is removed at once so the
    /// rest of the node (the store, chats) and the machine have room again. The chunks are
    /// fetched again by a later `fetch`.
    fn disk_full(&mut self, key: TKey) {
        let Some(partial) = self.files.downloads.get(&key).map(|d| d.partial.clone()) else {
            return;
        };
        let dir = partial.parent().unwrap_or(&partial).display().to_string();
        // Forget the marks first: they must never claim chunks the removed file held.
        if let Some(d) = self.files.downloads.get_mut(&key) {
            d.unmarked.clear();
        }
        if let Err(e) = self.store.clear_chunks(&key.0, key.1, &key.2) {
            warn!(error = %e, "cannot clear the chunk marks of a download that filled the disk");
        }
        if let Err(e) = fs::remove_file(&partial) {
            warn!(path = %partial.display(), error = %e, "cannot remove a partial download");
        }
        let reason = match key.1 {
            TransferRole::Receive => format!(
                "the disk is full ({dir}): the partial download was removed to free the space; \
                 make room and run `encrypto fetch {}` to download it again",
                key.0
            ),
            _ => format!("the disk is full ({dir}): the relayed copy was removed"),
        };
        self.fail_download(key, reason);
    }

    fn fail_download(&mut self, key: TKey, reason: String) {
        warn!(file = %key.0, %reason, "file transfer failed");
        self.write_marks(true);
        let transfer = match self.files.downloads.remove(&key) {
            Some(d) => Some(d.transfer),
            None => self.store.transfer(&key.0, key.1, &key.2).ok().flatten(),
        };
        if let Some(mut t) = transfer {
            t.state = TransferState::Failed;
            t.error = Some(reason.clone());
            if let Err(e) = self.store.put_transfer(&t) {
                warn!(error = %e, "cannot save a failed transfer");
            }
        }
        self.emit(NodeEvent::FileFailed {
            peer: key.2,
            file_id: key.0,
            role: key.1,
            reason,
        });
    }

    /// After a start: downloads that were running go on from the chunks held.
    pub(super) fn resume_files(&mut self) {
        match self.store.transfers() {
            Ok(all) => {
                for t in all {
                    if t.role == TransferRole::Relay
                        && let Some(envelope) = t.offer.clone()
                        && let Ok(Some(bytes)) = self.store.manifest(&t.file_id, t.role, &t.peer)
                        && let Ok(m) = FileManifest::from_bytes(&bytes)
                        && let Some(recipient) = encrypto_crypto::identity::peer_id_of(&m.recipient)
                    {
                        self.files
                            .offers
                            .insert(tkey(&t), RelayOffer::new(recipient, envelope));
                    }
                    if t.role != TransferRole::Send && t.state == TransferState::Transferring {
                        self.start_download(t);
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot read file transfers"),
        }
    }

    // ----- serving --------------------------------------------------------------------------

    /// What we serve for `file_id`, from the cache or the store.
    fn served(&mut self, file_id: &FileId) -> Option<Arc<Served>> {
        if let Some(s) = self.files.served.get(file_id) {
            return Some(Arc::clone(s));
        }
        let transfers = self.store.transfers_of(file_id).ok()?;
        let mut served: Option<Served> = None;
        for t in transfers {
            let origin = match t.role {
                TransferRole::Send => match (&t.path, &t.key) {
                    (Some(path), Some(key)) if t.state != TransferState::Failed => Origin::Plain {
                        path: path.clone(),
                        key: key.clone(),
                    },
                    _ => continue,
                },
                TransferRole::Relay if t.state == TransferState::Complete => match &t.path {
                    Some(path) => Origin::Sealed { path: path.clone() },
                    None => continue,
                },
                _ => continue,
            };
            let Ok(Some(bytes)) = self.store.manifest(file_id, t.role, &t.peer) else {
                continue;
            };
            let Ok(manifest) = FileManifest::from_bytes(&bytes) else {
                continue;
            };
            let recipient = encrypto_crypto::identity::peer_id_of(&manifest.recipient);
            let s = served.get_or_insert_with(|| Served {
                manifest: Arc::new(manifest),
                origin: origin.clone(),
                allowed: HashSet::new(),
                manifests: HashMap::new(),
            });
            // A plaintext origin beats a sealed one (it needs no relay copy).
            if matches!(origin, Origin::Plain { .. }) {
                s.origin = origin;
            }
            if let Some(recipient) = recipient {
                s.allowed.insert(recipient);
                s.manifests.insert(recipient, bytes);
            }
            if t.role == TransferRole::Send {
                s.allowed.extend(t.relays.iter().copied());
                for relay in &t.relays {
                    if let Some(bytes) = recipient.and_then(|r| s.manifests.get(&r).cloned()) {
                        s.manifests.entry(*relay).or_insert(bytes);
                    }
                }
            }
        }
        let served = Arc::new(served?);
        self.files.served.insert(*file_id, Arc::clone(&served));
        Some(served)
    }

    fn on_file_request(
        &mut self,
        peer: PeerId,
        request: FileRequest,
        channel: ResponseChannel<FileResponse>,
    ) {
        let respond = |actor: &mut Actor, channel, response| {
            let _ = actor
                .swarm
                .behaviour_mut()
                .file
                .send_response(channel, response);
        };
        match request {
            FileRequest::Manifest { file_id } => {
                let response = match self.served(&file_id) {
                    Some(s) => match s.manifests.get(&peer) {
                        Some(bytes) => FileResponse::Manifest(bytes.clone().into()),
                        None => FileResponse::Rejected,
                    },
                    None => FileResponse::Unavailable,
                };
                respond(self, channel, response);
            }
            FileRequest::Chunk { file_id, index } => {
                let Some(served) = self.served(&file_id) else {
                    return respond(self, channel, FileResponse::Unavailable);
                };
                if !served.allowed.contains(&peer) {
                    debug!(%peer, %file_id, "chunk request from a peer the file is not for");
                    return respond(self, channel, FileResponse::Rejected);
                }
                if self.files.serving >= MAX_SERVING {
                    return respond(self, channel, FileResponse::Unavailable);
                }
                self.files.serving += 1;
                self.files.jobs.spawn_blocking(move || {
                    match read_chunk(&served.origin, &served.manifest, index) {
                        Ok(bytes) => {
                            let len = served.manifest.chunk_plain_len(index).unwrap_or(0);
                            Job::Served {
                                channel,
                                response: FileResponse::Chunk(bytes.into()),
                                progress: Some((file_id, peer, index, len)),
                                changed: None,
                            }
                        }
                        Err(reason) => {
                            debug!(%file_id, index, %reason, "cannot serve a chunk");
                            let changed =
                                matches!(served.origin, Origin::Plain { .. }).then_some(file_id);
                            Job::Served {
                                channel,
                                response: FileResponse::Unavailable,
                                progress: None,
                                changed,
                            }
                        }
                    }
                });
            }
            FileRequest::Hold { manifest, offer } => {
                let offer = offer.map(serde_bytes::ByteBuf::into_vec);
                let response = match self.accept_hold(peer, &manifest, offer) {
                    Ok(()) => FileResponse::Ok,
                    Err(reason) => {
                        debug!(%peer, %reason, "refused to hold a file");
                        self.emit(NodeEvent::Rejected { peer, reason });
                        FileResponse::Rejected
                    }
                };
                respond(self, channel, response);
            }
            FileRequest::Complete { file_id } => {
                self.peer_completed(peer, file_id);
                respond(self, channel, FileResponse::Ok);
            }
            FileRequest::Offer { envelope } => {
                let response = match self.accept_relayed_offer(peer, &envelope) {
                    Ok(()) => FileResponse::Ok,
                    Err(reason) => {
                        debug!(%peer, %reason, "a relayed offer was rejected");
                        self.emit(NodeEvent::Rejected { peer, reason });
                        FileResponse::Rejected
                    }
                };
                respond(self, channel, response);
            }
        }
    }

    /// A contact asks us to hold the sealed chunks of a file it sends to someone else.
    fn accept_hold(
        &mut self,
        sender: PeerId,
        bytes: &[u8],
        offer: Option<Vec<u8>>,
    ) -> Result<(), String> {
        let pinned = self
            .pinned(&sender)
            .map_err(|e| e.to_string())?
            .filter(|p| !p.contact.key_changed)
            .ok_or("the sender is not a contact")?;
        let manifest = FileManifest::from_bytes(bytes).map_err(|e| e.to_string())?;
        manifest.verify(&pinned.public).map_err(|e| e.to_string())?;
        if let Some(existing) = self
            .store
            .transfer(&manifest.file_id, TransferRole::Relay, &sender)
            .map_err(|e| e.to_string())?
            && existing.state != TransferState::Failed
        {
            return Ok(());
        }
        let transfer = Transfer {
            file_id: manifest.file_id,
            peer: sender,
            role: TransferRole::Relay,
            name: String::new(),
            size: manifest.size,
            state: TransferState::Transferring,
            path: None,
            out: None,
            sha256: None,
            key: None,
            message_id: MessageId([0; 16]),
            created_ms: now_ms(),
            error: None,
            sources: Vec::new(),
            relays: Vec::new(),
            manifest_hash: *blake3::hash(bytes).as_bytes(),
            offer: offer.clone(),
        };
        self.store
            .put_manifest(&manifest.file_id, TransferRole::Relay, &sender, bytes)
            .and_then(|()| self.store.put_transfer(&transfer))
            .map_err(|e| e.to_string())?;
        info!(%sender, file = %manifest.file_id, size = manifest.size, "holding a file for a contact");
        if let (Some(envelope), Some(recipient)) = (
            offer,
            encrypto_crypto::identity::peer_id_of(&manifest.recipient),
        ) {
            self.files
                .offers
                .insert(tkey(&transfer), RelayOffer::new(recipient, envelope));
        }
        self.start_download(transfer);
        Ok(())
    }

    /// A relay passes on a sender's offer: opened as the sender's own envelope (checked
    /// against the sender's pinned key, de-duplicated by message id), stored, flushed.
    fn accept_relayed_offer(&mut self, relay: PeerId, bytes: &[u8]) -> Result<(), String> {
        if !self.allow_inbound(&relay, 1) {
            return Err("rate limited".into());
        }
        let env = Envelope::from_bytes(bytes).map_err(|e| super::inbound::reason(&e))?;
        let sender = encrypto_crypto::identity::peer_id_of(&env.sender)
            .ok_or("the envelope's sender is not a valid key")?;
        let pinned = self
            .pinned(&sender)
            .map_err(|e| e.to_string())?
            .filter(|p| !p.contact.key_changed)
            .ok_or("the sender is not a contact")?;
        let message = match self.receive_envelope(sender, &pinned.public, bytes)? {
            Inbound::Ack(_) => return Ok(()),
            Inbound::Store(message) => message,
        };
        if !matches!(message.body, Body::File { .. }) {
            return Err("a relay may only pass on file offers".into());
        }
        let fresh = self
            .store
            .write_incoming_many(std::slice::from_ref(&message))
            .and_then(|fresh| self.store.flush().map(|()| fresh))
            .map_err(|e| format!("store: {e}"))?;
        if fresh.first() == Some(&true) {
            if !pinned.contact.listed
                && let Err(e) = self.list_contact(&sender)
            {
                warn!(peer = %sender, error = %e, "cannot list a contact");
            }
            info!(%sender, %relay, "a file offer arrived through a relay");
            self.emit(NodeEvent::MessageReceived {
                peer: sender,
                id: message.id,
                timestamp_ms: message.timestamp_ms,
                cipher: message.cipher,
                body: message.body,
            });
        }
        Ok(())
    }

    /// Relay: passes on the offers it holds to their recipients, each with its own backoff.
    fn pump_offers(&mut self) {
        let now = Instant::now();
        let due: Vec<(TKey, PeerId, Vec<u8>)> = self
            .files
            .offers
            .iter_mut()
            .filter(|(_, o)| !o.in_flight && o.next_at <= now)
            .map(|(key, o)| {
                o.in_flight = true;
                (*key, o.recipient, o.envelope.clone())
            })
            .collect();
        for (key, recipient, envelope) in due {
            self.reach_source(recipient);
            let request_id = self.swarm.behaviour_mut().file.send_request(
                &recipient,
                FileRequest::Offer {
                    envelope: envelope.into(),
                },
            );
            self.files
                .requests
                .insert(request_id, Pending::Offer { key });
        }
    }

    /// A peer connected: offers held for it go out now rather than after their backoff.
    pub(super) fn files_peer_connected(&mut self, peer: PeerId) {
        let now = Instant::now();
        for o in self.files.offers.values_mut() {
            if o.recipient == peer {
                o.next_at = now;
            }
        }
    }

    fn offer_answered(&mut self, key: TKey, taken: bool) {
        if taken {
            self.files.offers.remove(&key);
            if let Ok(Some(mut t)) = self.store.transfer(&key.0, key.1, &key.2) {
                t.offer = None;
                if let Err(e) = self.store.put_transfer(&t) {
                    warn!(error = %e, "cannot save a relayed transfer");
                }
            }
        } else if let Some(o) = self.files.offers.get_mut(&key) {
            o.in_flight = false;
            o.next_at = Instant::now() + o.backoff;
            o.backoff = (o.backoff * 2).min(OFFER_BACKOFF_MAX);
        }
    }

    fn peer_completed(&mut self, peer: PeerId, file_id: FileId) {
        self.drop_relay_copy(peer, file_id);
        // We sent it to `peer`.
        if let Ok(Some(mut t)) = self.store.transfer(&file_id, TransferRole::Send, &peer)
            && t.state != TransferState::Complete
        {
            t.state = TransferState::Complete;
            if let Err(e) = self.store.put_transfer(&t) {
                warn!(error = %e, "cannot save a finished transfer");
            }
            self.files.sent.remove(&(file_id, peer));
            self.emit(NodeEvent::FileComplete {
                peer,
                file_id,
                role: TransferRole::Send,
                path: t.path.clone(),
                sha256: t.sha256,
            });
        }
    }

    /// The recipient of a file we hold as a relay has it: the sealed copy is deleted (the
    /// record stays, so `files` still shows what was relayed).
    fn drop_relay_copy(&mut self, recipient: PeerId, file_id: FileId) {
        let Ok(list) = self.store.transfers_of(&file_id) else {
            return;
        };
        for mut t in list {
            let held = t.path.is_some() || self.files.downloads.contains_key(&tkey(&t));
            if t.role != TransferRole::Relay || !held {
                continue;
            }
            let for_them = self
                .store
                .manifest(&file_id, t.role, &t.peer)
                .ok()
                .flatten()
                .and_then(|bytes| FileManifest::from_bytes(&bytes).ok())
                .and_then(|m| encrypto_crypto::identity::peer_id_of(&m.recipient))
                == Some(recipient);
            if !for_them {
                continue;
            }
            if self.files.downloads.remove(&tkey(&t)).is_some() {
                let _ = self.store.clear_chunks(&file_id, t.role, &t.peer);
            }
            if let Some(path) = t.path.take() {
                let _ = fs::remove_file(&path);
            }
            let partial = self.partial_path(&t);
            let _ = fs::remove_file(partial);
            t.state = TransferState::Complete;
            if let Err(e) = self.store.put_transfer(&t) {
                warn!(error = %e, "cannot save a relayed transfer");
            }
            self.files.served.remove(&file_id);
            info!(file = %file_id, "the recipient has the file; the relayed copy is deleted");
        }
    }

    fn on_served(
        &mut self,
        channel: ResponseChannel<FileResponse>,
        response: FileResponse,
        progress: Option<(FileId, PeerId, u64, u64)>,
        changed: Option<FileId>,
    ) {
        self.files.serving = self.files.serving.saturating_sub(1);
        let _ = self
            .swarm
            .behaviour_mut()
            .file
            .send_response(channel, response);
        if let Some((file_id, peer, index, len)) = progress {
            let p = self.files.sent.entry((file_id, peer)).or_default();
            if p.chunks.insert(index) {
                p.bytes += len;
            }
            let due = p.last_emit.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
            let bytes = p.bytes;
            if due {
                p.last_emit = Some(Instant::now());
                // The store is read at most a few times a second, not per chunk; a relay
                // fetching from us has no send transfer and gets no progress event.
                if let Ok(Some(mut t)) = self.store.transfer(&file_id, TransferRole::Send, &peer) {
                    if t.state == TransferState::Offered {
                        t.state = TransferState::Transferring;
                        let _ = self.store.put_transfer(&t);
                    }
                    self.emit(NodeEvent::FileProgress {
                        peer,
                        file_id,
                        role: TransferRole::Send,
                        bytes_done: bytes,
                        size: t.size,
                    });
                }
            }
        }
        if let Some(file_id) = changed {
            self.files.served.remove(&file_id);
            if let Ok(list) = self.store.transfers_of(&file_id) {
                for mut t in list {
                    if t.role == TransferRole::Send && t.state != TransferState::Complete {
                        let reason =
                            "the file changed or went away on disk since it was sent".to_owned();
                        t.state = TransferState::Failed;
                        t.error = Some(reason.clone());
                        let _ = self.store.put_transfer(&t);
                        self.emit(NodeEvent::FileFailed {
                            peer: t.peer,
                            file_id,
                            role: TransferRole::Send,
                            reason,
                        });
                    }
                }
            }
        }
    }

    // ----- events ---------------------------------------------------------------------------

    pub(super) fn on_file_job(&mut self, done: Result<Job, tokio::task::JoinError>) {
        let job = match done {
            Ok(job) => job,
            Err(e) => {
                warn!(error = %e, "a file job failed");
                return;
            }
        };
        match job {
            Job::Prepared {
                reply,
                peer,
                path,
                via,
                result,
            } => self.on_prepared(reply, peer, path, via, result),
            Job::Served {
                channel,
                response,
                progress,
                changed,
            } => self.on_served(channel, response, progress, changed),
            Job::Stored {
                key,
                index,
                source,
                result,
            } => self.on_stored(key, index, source, result),
            Job::Finished { key, result } => self.on_finished(key, result),
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
                    Self::release_request(d, index, source);
                    if let Some(s) = d.sources.iter_mut().find(|s| s.peer == source) {
                        s.unavailable = true;
                        s.failed();
                        if other == FileResponse::Rejected {
                            s.bad = MAX_BAD;
                        }
                    }
                }
                self.pump(key);
            }
            (Pending::Manifest { key, source }, FileResponse::Manifest(bytes)) => {
                if let Some(d) = self.files.downloads.get_mut(&key)
                    && let Some(s) = d.sources.iter_mut().find(|s| s.peer == source)
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

    fn manifest_failed(&mut self, key: TKey, source: PeerId) {
        if let Some(d) = self.files.downloads.get_mut(&key) {
            d.manifest_asked = false;
            if let Some(s) = d.sources.iter_mut().find(|s| s.peer == source) {
                s.in_flight = s.in_flight.saturating_sub(1);
                s.failed();
            }
        }
        self.pump(key);
    }

    fn on_file_failure(&mut self, request_id: OutboundRequestId) {
        let Some(pending) = self.files.requests.remove(&request_id) else {
            return;
        };
        match pending {
            Pending::Chunk { key, index, source } => {
                if let Some(d) = self.files.downloads.get_mut(&key) {
                    Self::release_request(d, index, source);
                    if let Some(s) = d.sources.iter_mut().find(|s| s.peer == source) {
                        s.failed();
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_names_keep_the_extension() {
        assert_eq!(
            numbered(Path::new("/d/report.pdf"), 2),
            PathBuf::from("/d/report (2).pdf")
        );
        assert_eq!(
            numbered(Path::new("/d/README"), 1),
            PathBuf::from("/d/README (1)")
        );
    }

    #[test]
    fn place_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join(".part");
        fs::write(&partial, b"new").unwrap();
        let target = dir.path().join("a.txt");
        fs::write(&target, b"old").unwrap();
        let placed = place(&partial, &target, false).unwrap();
        assert_eq!(placed, dir.path().join("a (1).txt"));
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(fs::read(&placed).unwrap(), b"new");
        assert!(place(&partial, &target, true).is_err());
    }

    #[test]
    fn media_types_by_extension() {
        assert_eq!(media_type_of("a.PNG"), "image/png");
        assert_eq!(media_type_of("noext"), "application/octet-stream");
    }
}
