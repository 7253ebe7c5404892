//! Crypto sessions: the outbound `aes` session with each peer and the inbound session keys
//! received from them.

use encrypto_crypto::{KeyId, PeerId};
use zeroize::Zeroizing;

#[cfg(doc)]
use super::StoreError;
use super::keys::TreeId;
use super::{Result, Store};

impl Store {
    /// Saves the outbound `aes` session with `peer` (the bytes of
    /// `OutboundSession::to_secret_bytes`). Not flushed: a session lost in a crash is replaced
    /// by a new one.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`]; write failures.
    pub fn put_outbound_session(&self, peer: &PeerId, secret: &[u8]) -> Result<()> {
        let tag = self.inner.tag(peer);
        let sealed = self
            .inner
            .seal_bytes(TreeId::OutboundSessions, &tag, secret)?;
        self.inner.insert(TreeId::OutboundSessions, &tag, sealed)
    }

    /// The saved outbound session with `peer`.
    ///
    /// # Errors
    /// [`StoreError::Record`] if it does not open; read failures.
    pub fn outbound_session(&self, peer: &PeerId) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let tag = self.inner.tag(peer);
        match self.inner.get(TreeId::OutboundSessions, &tag)? {
            Some(sealed) => Ok(Some(self.inner.open_bytes(
                TreeId::OutboundSessions,
                &tag,
                &sealed,
            )?)),
            None => Ok(None),
        }
    }

    /// Forgets the outbound session with `peer` (on a cipher switch, say). Returns whether
    /// there was one. Not flushed.
    ///
    /// # Errors
    /// Write failures.
    pub fn remove_outbound_session(&self, peer: &PeerId) -> Result<bool> {
        self.inner
            .remove(TreeId::OutboundSessions, &self.inner.tag(peer))
    }

    /// Saves an inbound session key from `peer`. Flushed before returning: once a message of
    /// the session is acknowledged the sender stops sending the wrapped key, so a key lost in
    /// a crash would strand the rest of the session. Save it before acknowledging.
    ///
    /// # Errors
    /// Write or flush failures.
    pub fn put_inbound_key(&self, peer: &PeerId, key_id: &KeyId, key: &[u8; 32]) -> Result<()> {
        let slot = self
            .inner
            .subkeys
            .inbound_key_slot(&self.inner.tag(peer), key_id);
        let mut plain = Zeroizing::new(Vec::with_capacity(48));
        plain.extend_from_slice(&key_id.0);
        plain.extend_from_slice(key);
        let sealed = self.inner.seal_bytes(TreeId::InboundKeys, &slot, &plain)?;
        self.inner.insert(TreeId::InboundKeys, &slot, sealed)?;
        self.inner.flush()
    }

    /// The inbound session keys saved for `peer`. Keys that do not open are skipped with a
    /// warning.
    ///
    /// # Errors
    /// Read failures.
    pub fn inbound_keys(&self, peer: &PeerId) -> Result<Vec<(KeyId, Zeroizing<[u8; 32]>)>> {
        let inner = &self.inner;
        let mut keys = Vec::new();
        for entry in inner.tree(TreeId::InboundKeys).scan_prefix(inner.tag(peer)) {
            let (slot, sealed) = entry.map_err(|e| inner.sled_error("read", e))?;
            let plain = match inner.open_bytes(TreeId::InboundKeys, &slot, &sealed) {
                Ok(plain) => plain,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an inbound session key that does not open");
                    continue;
                }
            };
            let (Ok(id), Ok(key)) = (
                <[u8; 16]>::try_from(plain.get(..16).unwrap_or_default()),
                <[u8; 32]>::try_from(plain.get(16..).unwrap_or_default()),
            ) else {
                tracing::warn!("skipping a malformed inbound session key");
                continue;
            };
            keys.push((KeyId(id), Zeroizing::new(key)));
        }
        Ok(keys)
    }

    #[cfg(test)]
    /// Forgets one inbound session key. Returns whether it was there. Not flushed.
    ///
    /// # Errors
    /// Write failures.
    pub fn remove_inbound_key(&self, peer: &PeerId, key_id: &KeyId) -> Result<bool> {
        let slot = self
            .inner
            .subkeys
            .inbound_key_slot(&self.inner.tag(peer), key_id);
        self.inner.remove(TreeId::InboundKeys, &slot)
    }
}
