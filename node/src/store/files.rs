//! File transfers: one record per (file, role, peer), the signed manifest beside it, and one
//! empty mark per chunk held (the chunk bitmap, which survives restarts so a transfer resumes
//! where it stopped).

use std::path::PathBuf;

use encrypto_crypto::file::{FileId, FileKey};
use encrypto_crypto::{MessageId, PeerId};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use super::keys::{self, TRANSFER_KEY_LEN, TreeId};
use super::{Result, Store};

/// How many chunk marks [`Store::clear_chunks`] removes in one sled batch.
const CLEAR_BATCH: usize = 256;

/// Our part in a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferRole {
    /// We sent the file; `peer` is the recipient. Chunks are sealed again from `path` on
    /// request.
    Send,
    /// We receive the file; `peer` is the sender.
    Receive,
    /// We hold the sealed chunks for someone else (a blind relay); `peer` is the sender.
    Relay,
}

impl TransferRole {
    fn byte(self) -> u8 {
        match self {
            TransferRole::Send => 0,
            TransferRole::Receive => 1,
            TransferRole::Relay => 2,
        }
    }
}

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferState {
    /// Offered; nothing moved yet (an incoming file over the automatic download limit waits
    /// here for `fetch`).
    Offered,
    /// Chunks are moving.
    Transferring,
    /// Every chunk is here (or, for a sender, the recipient said so).
    Complete,
    /// Stopped with an error (see `error`); `fetch` starts it again from what is held.
    Failed,
}

impl TransferState {
    /// `offered`, `transferring`, `complete` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::Offered => "offered",
            TransferState::Transferring => "transferring",
            TransferState::Complete => "complete",
            TransferState::Failed => "failed",
        }
    }
}

/// One file transfer as the store keeps it.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The file.
    pub file_id: FileId,
    /// The other side: the recipient (send) or the sender (receive, relay).
    pub peer: PeerId,
    /// Our part.
    pub role: TransferRole,
    /// The file's name (for a relay: empty, it cannot read it).
    pub name: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Where it is.
    pub state: TransferState,
    /// Send: the file read from. Receive: where it was saved, once complete. Relay: the file
    /// of sealed chunks.
    pub path: Option<PathBuf>,
    /// Receive: where the user asked it to be saved (`fetch --out`), if not the downloads
    /// directory.
    pub out: Option<PathBuf>,
    /// SHA-256 of the plaintext (unknown to a relay).
    pub sha256: Option<[u8; 32]>,
    /// The file key (send, receive); never held by a relay.
    pub key: Option<FileKey>,
    /// The chat message that offered it (zero for a relay).
    pub message_id: MessageId,
    /// When the transfer began, Unix milliseconds.
    pub created_ms: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// Receive: the peers besides the sender that can serve chunks, with address hints.
    pub sources: Vec<(PeerId, Vec<String>)>,
    /// Send: the relays allowed to fetch the chunks.
    pub relays: Vec<PeerId>,
    /// BLAKE3 of the manifest's CBOR.
    pub manifest_hash: [u8; 32],
    /// Relay: the sender's sealed offer, until the recipient has taken it.
    pub offer: Option<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct TransferRecord {
    file_id: FileId,
    peer: ByteBuf,
    role: TransferRole,
    name: String,
    size: u64,
    state: TransferState,
    path: Option<String>,
    out: Option<String>,
    sha256: Option<ByteBuf>,
    key: Option<ByteBuf>,
    message_id: MessageId,
    created_ms: u64,
    error: Option<String>,
    sources: Vec<(ByteBuf, Vec<String>)>,
    relays: Vec<ByteBuf>,
    #[serde(with = "serde_bytes")]
    manifest_hash: [u8; 32],
    #[serde(default)]
    offer: Option<ByteBuf>,
}

fn path_string(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

impl From<&Transfer> for TransferRecord {
    fn from(t: &Transfer) -> Self {
        TransferRecord {
            file_id: t.file_id,
            peer: ByteBuf::from(t.peer.to_bytes()),
            role: t.role,
            name: t.name.clone(),
            size: t.size,
            state: t.state,
            path: t.path.as_deref().map(path_string),
            out: t.out.as_deref().map(path_string),
            sha256: t.sha256.map(|h| ByteBuf::from(h.to_vec())),
            key: t.key.as_ref().map(|k| ByteBuf::from(k.as_bytes().to_vec())),
            message_id: t.message_id,
            created_ms: t.created_ms,
            error: t.error.clone(),
            sources: t
                .sources
                .iter()
                .map(|(p, a)| (ByteBuf::from(p.to_bytes()), a.clone()))
                .collect(),
            relays: t
                .relays
                .iter()
                .map(|p| ByteBuf::from(p.to_bytes()))
                .collect(),
            manifest_hash: t.manifest_hash,
            offer: t.offer.clone().map(ByteBuf::from),
        }
    }
}

impl TryFrom<TransferRecord> for Transfer {
    type Error = String;

    fn try_from(r: TransferRecord) -> std::result::Result<Self, String> {
        let peer = |b: &[u8]| PeerId::from_bytes(b).map_err(|_| "invalid peer id".to_owned());
        let key = match r.key {
            Some(bytes) => {
                let bytes = Zeroizing::new(bytes.into_vec());
                let array: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| "file key of the wrong length".to_owned())?;
                Some(FileKey::from_bytes(array))
            }
            None => None,
        };
        let sha256 = match r.sha256 {
            Some(h) => Some(
                h.as_slice()
                    .try_into()
                    .map_err(|_| "sha256 of the wrong length".to_owned())?,
            ),
            None => None,
        };
        Ok(Transfer {
            file_id: r.file_id,
            peer: peer(&r.peer)?,
            role: r.role,
            name: r.name,
            size: r.size,
            state: r.state,
            path: r.path.map(PathBuf::from),
            out: r.out.map(PathBuf::from),
            sha256,
            key,
            message_id: r.message_id,
            created_ms: r.created_ms,
            error: r.error,
            sources: r
                .sources
                .into_iter()
                .map(|(p, a)| Ok((peer(&p)?, a)))
                .collect::<std::result::Result<_, String>>()?,
            relays: r
                .relays
                .iter()
                .map(|p| peer(p))
                .collect::<std::result::Result<_, String>>()?,
            manifest_hash: r.manifest_hash,
            offer: r.offer.map(ByteBuf::into_vec),
        })
    }
}

impl Store {
    fn transfer_key(
        &self,
        file_id: &FileId,
        role: TransferRole,
        peer: &PeerId,
    ) -> [u8; TRANSFER_KEY_LEN] {
        keys::transfer_key(file_id.as_bytes(), role.byte(), &self.inner.tag(peer))
    }

    /// Adds or replaces a transfer record. Not flushed (the node flushes with its group
    /// commit, or calls [`Store::flush`]).
    ///
    /// # Errors
    /// Write failures.
    pub fn put_transfer(&self, transfer: &Transfer) -> Result<()> {
        let key = self.transfer_key(&transfer.file_id, transfer.role, &transfer.peer);
        let sealed =
            self.inner
                .seal_value(TreeId::Transfers, &key, &TransferRecord::from(transfer))?;
        self.inner.insert(TreeId::Transfers, &key, sealed)
    }

    /// One transfer, if it exists.
    ///
    /// # Errors
    /// [`super::StoreError::Record`] if it does not open; read failures.
    pub fn transfer(
        &self,
        file_id: &FileId,
        role: TransferRole,
        peer: &PeerId,
    ) -> Result<Option<Transfer>> {
        let key = self.transfer_key(file_id, role, peer);
        match self.inner.get(TreeId::Transfers, &key)? {
            Some(sealed) => Ok(Some(self.inner.open_record::<TransferRecord, _>(
                TreeId::Transfers,
                &key,
                &sealed,
            )?)),
            None => Ok(None),
        }
    }

    /// Every transfer of one file (any role, any peer).
    ///
    /// # Errors
    /// Read failures.
    pub fn transfers_of(&self, file_id: &FileId) -> Result<Vec<Transfer>> {
        let tree = self.inner.tree(TreeId::Transfers);
        self.inner
            .list::<TransferRecord, _>(TreeId::Transfers, tree.scan_prefix(file_id.as_bytes()))
    }

    /// Every transfer, newest first.
    ///
    /// # Errors
    /// Read failures.
    pub fn transfers(&self) -> Result<Vec<Transfer>> {
        let tree = self.inner.tree(TreeId::Transfers);
        let mut all: Vec<Transfer> = self
            .inner
            .list::<TransferRecord, _>(TreeId::Transfers, tree.iter())?;
        all.sort_by_key(|t| std::cmp::Reverse(t.created_ms));
        Ok(all)
    }

    /// Stores a transfer's manifest (CBOR). Not flushed.
    ///
    /// # Errors
    /// [`super::StoreError::TooLarge`]; write failures.
    pub fn put_manifest(
        &self,
        file_id: &FileId,
        role: TransferRole,
        peer: &PeerId,
        manifest: &[u8],
    ) -> Result<()> {
        let key = self.transfer_key(file_id, role, peer);
        let sealed = self.inner.seal_bytes(TreeId::Manifests, &key, manifest)?;
        self.inner.insert(TreeId::Manifests, &key, sealed)
    }

    /// A transfer's manifest (CBOR), if stored.
    ///
    /// # Errors
    /// [`super::StoreError::Record`] if it does not open; read failures.
    pub fn manifest(
        &self,
        file_id: &FileId,
        role: TransferRole,
        peer: &PeerId,
    ) -> Result<Option<Vec<u8>>> {
        let key = self.transfer_key(file_id, role, peer);
        match self.inner.get(TreeId::Manifests, &key)? {
            Some(sealed) => Ok(Some(
                self.inner
                    .open_bytes(TreeId::Manifests, &key, &sealed)?
                    .to_vec(),
            )),
            None => Ok(None),
        }
    }

    /// Records that chunks `indexes` of a transfer are held (written and checked). Not
    /// flushed: losing the last marks to a crash only means fetching those chunks again.
    ///
    /// # Errors
    /// Write failures.
    pub fn mark_chunks(
        &self,
        file_id: &FileId,
        role: TransferRole,
        peer: &PeerId,
        indexes: &[u64],
    ) -> Result<()> {
        let key = self.transfer_key(file_id, role, peer);
        let mut batch = sled::Batch::default();
        for index in indexes {
            batch.insert(&keys::chunk_key(&key, *index)[..], &[][..]);
        }
        self.inner
            .tree(TreeId::Chunks)
            .apply_batch(batch)
            .map_err(|e| self.inner.sled_error("write to", e))
    }

    /// Forgets that chunk `index` of a transfer is held (it turned out bad on disk).
    ///
    /// # Errors
    /// Write failures.
    pub fn unmark_chunk(
        &self,
        file_id: &FileId,
        role: TransferRole,
        peer: &PeerId,
        index: u64,
    ) -> Result<()> {
        let key = self.transfer_key(file_id, role, peer);
        self.inner
            .remove(TreeId::Chunks, &keys::chunk_key(&key, index))
            .map(drop)
    }

    /// The indexes of the chunks held for a transfer, ascending.
    ///
    /// # Errors
    /// Read failures.
    pub fn chunks_held(
        &self,
        file_id: &FileId,
        role: TransferRole,
        peer: &PeerId,
    ) -> Result<Vec<u64>> {
        let key = self.transfer_key(file_id, role, peer);
        let mut out = Vec::new();
        for entry in self.inner.tree(TreeId::Chunks).scan_prefix(key) {
            let (k, _) = entry.map_err(|e| self.inner.sled_error("read", e))?;
            if let Ok(index) = <[u8; 8]>::try_from(&k[TRANSFER_KEY_LEN..]) {
                out.push(u64::from_be_bytes(index));
            }
        }
        Ok(out)
    }

    /// Forgets every chunk mark of a transfer (it is complete, or removed).
    ///
    /// The marks go in batches of 256: sled's memory for one batch grows with its
    /// size (one batch for the 16,384 marks of a 4 GiB file raised the receiver's peak RSS by
    /// about 30 MiB). So this is not atomic: a crash part-way leaves some marks. The callers
    /// clear before they remove a file, so what is left still names chunks on disk; marks of
    /// a partial file already gone are cleared again when the download is next loaded, and
    /// those of a completed transfer are never read.
    ///
    /// # Errors
    /// Write failures.
    pub fn clear_chunks(&self, file_id: &FileId, role: TransferRole, peer: &PeerId) -> Result<()> {
        let key = self.transfer_key(file_id, role, peer);
        let tree = self.inner.tree(TreeId::Chunks);
        let marks = tree
            .scan_prefix(key)
            .keys()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.inner.sled_error("read", e))?;
        for some in marks.chunks(CLEAR_BATCH) {
            let mut batch = sled::Batch::default();
            for k in some {
                batch.remove(k.clone());
            }
            tree.apply_batch(batch)
                .map_err(|e| self.inner.sled_error("write to", e))?;
        }
        Ok(())
    }
}
