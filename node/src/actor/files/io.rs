//! The blocking file work of transfers, run on tokio's blocking pool: reading a file and
//! sealing it once for its manifest, reading (and sealing again) a chunk to serve, checking,
//! opening and writing a received chunk, hashing in order, the last check of a download and
//! putting it in place under a name not taken, and reserving its disk space.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use encrypto_crypto::file::{
    self as cfile, FileId, FileKey, FileManifest, ManifestBuilder, SEALED_CHUNK_OVERHEAD,
};
use sha2::{Digest, Sha256};

use crate::actor::NodeError;

/// Names tried for a download whose name is taken: `name`, `name (1)`, ... `name (999)`.
const MAX_NAME_TRIES: u32 = 1000;

/// A file read and sealed once: the manifest builder, the file's name and size.
pub(in crate::actor) type PreparedFile = (ManifestBuilder, String, u64);

/// Why a received chunk was not stored.
pub(in crate::actor) enum ChunkFault {
    /// It failed verification: the source is counted and another one asked.
    Bad(String),
    /// Writing it failed (permissions, an I/O error): the download fails.
    Io(String),
    /// The disk is full: the download fails and gives the space back.
    DiskFull,
}

/// Why a finished download was not put in place.
pub(in crate::actor) enum Finish {
    /// These chunks turned out bad on disk: fetch them again.
    Repair(Vec<u64>),
    /// Give up.
    Fail(String),
}

/// Where received chunks go.
pub(super) enum SinkMode {
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

pub(super) struct Sink {
    pub(super) file: File,
    pub(super) mode: SinkMode,
    pub(super) have: Vec<bool>,
}

#[derive(Clone)]
pub(super) enum Origin {
    Plain { path: PathBuf, key: FileKey },
    Sealed { path: PathBuf },
}

/// A media type from the file name's extension, for the manifest (the recipient's window may
/// use it to show an icon); `application/octet-stream` when unknown.
pub(super) fn media_type_of(name: &str) -> &'static str {
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
pub(super) fn prepare(
    path: &Path,
    recipient: &encrypto_crypto::PublicIdentity,
    max_size: u64,
) -> Result<Box<PreparedFile>, NodeError> {
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
pub(super) fn read_chunk(
    origin: &Origin,
    manifest: &FileManifest,
    index: u64,
) -> Result<Vec<u8>, String> {
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
pub(super) fn store_chunk(
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
pub(super) fn catch_up_hash(
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

pub(super) fn describe_io(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::StorageFull {
        "the disk is full".into()
    } else {
        e.to_string()
    }
}

/// The last step of a download: every chunk is written. Recipient: check the whole-file
/// SHA-256 against the sender's, then link the file into place under a name not taken and
/// remove the partial file. Relay: just sync. Runs on the blocking pool.
pub(super) fn finish(
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
pub(super) fn place(partial: &Path, target: &Path, exact: bool) -> io::Result<PathBuf> {
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
pub(super) fn numbered(path: &Path, n: u32) -> PathBuf {
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
pub(super) fn reserve_space(file: &File, len: u64) -> Result<(), String> {
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

pub(super) fn open_partial(path: &Path) -> io::Result<File> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn numbered_names_keep_the_extension() {
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
    pub(super) fn place_never_overwrites() {
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
    pub(super) fn media_types_by_extension() {
        assert_eq!(media_type_of("a.PNG"), "image/png");
        assert_eq!(media_type_of("noext"), "application/octet-stream");
    }
}
