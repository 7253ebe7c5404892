//! Settings: named values, each filed under a keyed hash of its name.

#[cfg(doc)]
use super::StoreError;
use super::keys::TreeId;
use super::{Result, Store};

impl Store {
    /// Sets a setting. Flushed before returning.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`]; write or flush failures.
    pub fn put_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        let key = self.inner.subkeys.setting_key(name);
        let sealed = self.inner.seal_bytes(TreeId::Settings, &key, value)?;
        self.inner.insert(TreeId::Settings, &key, sealed)?;
        self.inner.flush()
    }

    #[cfg(test)]
    /// A setting's value, if set.
    ///
    /// # Errors
    /// [`StoreError::Record`] if it does not open; read failures.
    pub fn setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let key = self.inner.subkeys.setting_key(name);
        match self.inner.get(TreeId::Settings, &key)? {
            Some(sealed) => Ok(Some(
                self.inner
                    .open_bytes(TreeId::Settings, &key, &sealed)?
                    .to_vec(),
            )),
            None => Ok(None),
        }
    }

    #[cfg(test)]
    /// Removes a setting. Returns whether it was set. Flushed before returning.
    ///
    /// # Errors
    /// Write or flush failures.
    pub fn remove_setting(&self, name: &str) -> Result<bool> {
        let removed = self
            .inner
            .remove(TreeId::Settings, &self.inner.subkeys.setting_key(name))?;
        self.inner.flush()?;
        Ok(removed)
    }
}
