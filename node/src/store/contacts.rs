//! Contacts (pinned keys and what the user named them) and known peers (where a peer was
//! last reachable).

use encrypto_crypto::PeerId;

#[cfg(doc)]
use super::StoreError;
use super::keys::TreeId;
use super::types::{ContactRecord, PeerRecord};
use super::{Contact, KnownPeer, Result, Store};

impl Store {
    /// Adds or replaces a contact. Flushed before returning (pinned keys must not be lost).
    ///
    /// # Errors
    /// [`StoreError::TooLarge`] for an oversized contact; write or flush failures.
    pub fn put_contact(&self, contact: &Contact) -> Result<()> {
        let tag = self.inner.tag(&contact.peer_id);
        let sealed =
            self.inner
                .seal_value(TreeId::Contacts, &tag, &ContactRecord::from(contact))?;
        self.inner.insert(TreeId::Contacts, &tag, sealed)?;
        self.inner.flush()
    }

    /// The contact for `peer`, if there is one.
    ///
    /// # Errors
    /// [`StoreError::Record`] or [`StoreError::BadRecord`] if its record does not open; read
    /// failures.
    pub fn contact(&self, peer: &PeerId) -> Result<Option<Contact>> {
        let tag = self.inner.tag(peer);
        let Some(sealed) = self.inner.get(TreeId::Contacts, &tag)? else {
            return Ok(None);
        };
        let contact: Contact =
            self.inner
                .open_record::<ContactRecord, _>(TreeId::Contacts, &tag, &sealed)?;
        if contact.peer_id != *peer {
            return Err(self
                .inner
                .bad_record(TreeId::Contacts, "filed under another peer".into()));
        }
        Ok(Some(contact))
    }

    /// Every contact, sorted by name (case-insensitively). Records that do not open are
    /// skipped with a warning.
    ///
    /// # Errors
    /// Read failures.
    pub fn contacts(&self) -> Result<Vec<Contact>> {
        let mut contacts: Vec<Contact> = self
            .inner
            .list::<ContactRecord, _>(TreeId::Contacts, self.inner.tree(TreeId::Contacts).iter())?;
        contacts.sort_by_cached_key(|c| (c.name.to_lowercase(), c.peer_id.to_bytes()));
        Ok(contacts)
    }

    #[cfg(test)]
    /// Removes the contact for `peer` (not its history). Returns whether there was one.
    /// Flushed before returning.
    ///
    /// # Errors
    /// Write or flush failures.
    pub fn remove_contact(&self, peer: &PeerId) -> Result<bool> {
        let removed = self.inner.remove(TreeId::Contacts, &self.inner.tag(peer))?;
        self.inner.flush()?;
        Ok(removed)
    }

    /// Adds or replaces a known peer (the caller merges addresses). Not flushed.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`]; write failures.
    pub fn put_peer(&self, peer: &KnownPeer) -> Result<()> {
        let tag = self.inner.tag(&peer.peer_id);
        let sealed = self
            .inner
            .seal_value(TreeId::Peers, &tag, &PeerRecord::from(peer))?;
        self.inner.insert(TreeId::Peers, &tag, sealed)
    }

    /// The known peer `peer`, if any.
    ///
    /// # Errors
    /// [`StoreError::Record`] or [`StoreError::BadRecord`] if it does not open; read failures.
    pub fn peer(&self, peer: &PeerId) -> Result<Option<KnownPeer>> {
        let tag = self.inner.tag(peer);
        match self.inner.get(TreeId::Peers, &tag)? {
            Some(sealed) => Ok(Some(self.inner.open_record::<PeerRecord, _>(
                TreeId::Peers,
                &tag,
                &sealed,
            )?)),
            None => Ok(None),
        }
    }

    /// Every known peer, most recently seen first. Records that do not open are skipped with
    /// a warning.
    ///
    /// # Errors
    /// Read failures.
    pub fn peers(&self) -> Result<Vec<KnownPeer>> {
        let mut peers: Vec<KnownPeer> = self
            .inner
            .list::<PeerRecord, _>(TreeId::Peers, self.inner.tree(TreeId::Peers).iter())?;
        peers.sort_by_key(|p| std::cmp::Reverse(p.last_seen_ms));
        Ok(peers)
    }

    #[cfg(test)]
    /// Forgets a known peer. Returns whether it was there. Not flushed.
    ///
    /// # Errors
    /// Write failures.
    pub fn remove_peer(&self, peer: &PeerId) -> Result<bool> {
        self.inner.remove(TreeId::Peers, &self.inner.tag(peer))
    }
}
