//! Opening checks: the format version, the storage key's check record, and the generations
//! that find damage inside sled's log (with the marker file beside it).

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::keys::TreeId;
use super::{
    CHECK_KEY, CHECK_PLAINTEXT, FORMAT_KEY, FORMAT_VERSION, GENERATION_KEY, Inner, MARKER_FILE,
    MARKER_GENERATION, MARKER_HEADER, OLDEST_FORMAT, Result, StoreError,
};

impl Inner {
    /// Checks the format version and that the check record opens with our key; initialises a
    /// new store.
    ///
    /// sled treats a damaged log as its end: a database file that was truncated or overwritten
    /// opens as an empty (or shorter) database. The marker file, written once the store is
    /// initialised, tells "new" from "everything lost" so the latter is an error, not a fresh
    /// empty store quietly taking its place.
    pub(super) fn check_format_and_key(&self) -> Result<()> {
        let marker = self.path.join(MARKER_FILE);
        let initialised = match fs::symlink_metadata(&marker) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(StoreError::Io {
                    op: "read",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let format = self.get(TreeId::Meta, FORMAT_KEY)?;
        let check = self.get(TreeId::Meta, CHECK_KEY)?;
        let (format, check) = match (format, check) {
            (Some(format), Some(check)) => (format, check),
            (None, None) if !initialised => {
                self.initialise()?;
                return self.advance_generation(1);
            }
            (None, None) => {
                return Err(self.damaged(
                    "its records are gone: the database file was truncated, replaced or lost",
                ));
            }
            _ => return Err(self.damaged("its format or check record is missing")),
        };
        let version = <[u8; 4]>::try_from(&format[..])
            .map(u32::from_be_bytes)
            .map_err(|_| self.damaged("its format record is malformed"))?;
        if !(OLDEST_FORMAT..=FORMAT_VERSION).contains(&version) {
            return Err(StoreError::UnsupportedVersion {
                path: self.path.clone(),
                version,
            });
        }
        match self.open_bytes(TreeId::Meta, CHECK_KEY, &check) {
            Ok(plain) if plain[..] == *CHECK_PLAINTEXT => {}
            _ => {
                return Err(StoreError::WrongKey {
                    path: self.path.clone(),
                });
            }
        }
        let expected = if initialised {
            read_marker_generation(&marker)
        } else {
            None
        };
        self.check_generation(expected, &marker)?;
        if version < FORMAT_VERSION {
            // Every older format's records read as they are: only the number changes.
            self.insert(
                TreeId::Meta,
                FORMAT_KEY,
                FORMAT_VERSION.to_be_bytes().to_vec(),
            )?;
            self.flush()?;
        }
        Ok(())
    }

    /// Finds damage inside sled's log, which sled itself does not report: it reads its log up
    /// to the first record that fails its checksum and drops everything after it, so a store
    /// damaged in the middle opens as an older, shorter store.
    ///
    /// The store counts *generations*: a sealed meta record, written and flushed at every open
    /// and as the last write of every clean close, and then copied into the marker file. The
    /// record is the newest thing in the log, so if the log is cut anywhere before it, the
    /// store holds an older generation than the marker says it should. A crash between the
    /// two writes leaves the store ahead of the marker, which is fine.
    ///
    /// What this cannot see: damage to records written after the last open of a node that
    /// was then killed rather than closed, and a marker file removed or copied together with
    /// the damaged store (the marker is then the user's word that the store is as it should
    /// be).
    fn check_generation(&self, expected: Option<u64>, marker: &Path) -> Result<()> {
        let stored = match self.get(TreeId::Meta, GENERATION_KEY)? {
            None => 0,
            Some(sealed) => {
                let plain = self.open_bytes(TreeId::Meta, GENERATION_KEY, &sealed)?;
                <[u8; 8]>::try_from(&plain[..])
                    .map(u64::from_be_bytes)
                    .map_err(|_| self.damaged("its generation record is malformed"))?
            }
        };
        if let Some(expected) = expected
            && stored < expected
        {
            return Err(StoreError::LogDamaged {
                path: self.path.clone(),
                marker: marker.to_owned(),
            });
        }
        self.advance_generation(stored.max(expected.unwrap_or(0)) + 1)
    }

    /// Writes `generation` into the store, flushes, then writes it into the marker file.
    pub(super) fn advance_generation(&self, generation: u64) -> Result<()> {
        let sealed = self.seal_bytes(TreeId::Meta, GENERATION_KEY, &generation.to_be_bytes())?;
        self.insert(TreeId::Meta, GENERATION_KEY, sealed)?;
        self.flush()?;
        self.write_marker(&self.path.join(MARKER_FILE), generation)?;
        self.generation.store(generation, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the format and check records of a new store (atomically) and flushes.
    fn initialise(&self) -> Result<()> {
        let mut batch = sled::Batch::default();
        batch.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes());
        batch.insert(
            CHECK_KEY,
            self.seal_bytes(TreeId::Meta, CHECK_KEY, CHECK_PLAINTEXT)?,
        );
        self.tree(TreeId::Meta)
            .apply_batch(batch)
            .map_err(|e| self.sled_error("write to", e))?;
        self.flush()
    }

    fn write_marker(&self, marker: &Path, generation: u64) -> Result<()> {
        let contents = format!("{MARKER_HEADER}\n{MARKER_GENERATION}{generation}\n");
        let write = || -> io::Result<()> {
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(marker)?;
            io::Write::write_all(&mut file, contents.as_bytes())?;
            file.sync_all()
        };
        write().map_err(|source| StoreError::Io {
            op: "write to",
            path: self.path.clone(),
            source,
        })
    }
}

/// The generation the marker file says the store has reached, if it says one: markers written
/// before generations were counted, or damaged ones, say nothing.
fn read_marker_generation(marker: &Path) -> Option<u64> {
    let mut buf = Vec::new();
    let file = fs::File::open(marker).ok()?;
    io::Read::read_to_end(&mut io::Read::take(file, 4096), &mut buf).ok()?;
    let text = String::from_utf8(buf).ok()?;
    let mut lines = text.lines();
    if lines.next()? != MARKER_HEADER {
        return None;
    }
    lines.next()?.strip_prefix(MARKER_GENERATION)?.parse().ok()
}
