//! The RSA work of opening inbound envelopes, done ahead on the check jobs: which of it runs,
//! and how the jobs running at the same time share it.
//!
//! The crypto crate offers the pure steps ([`Verified::rsa_work`], [`WrappedKey::unwrap_key`],
//! [`InboundSessions::insert`], [`Verified::reject_ahead`]); the policy is the node's: several
//! check jobs run at once on the blocking threads and share one session cache, and after a key
//! rotation several batches in flight bring the same new key.
//!
//! [`WrappedKey::unwrap_key`]: encrypto_crypto::envelope::WrappedKey::unwrap_key

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use encrypto_crypto::envelope::{InboundSessions, KeyId, OpenError, RsaWork, Verified};
use encrypto_crypto::{CryptoRng, Identity};

/// The unwrapped `aes` session keys of inbound chats, shared by the node and its check jobs,
/// with the keys that a [`decrypt_ahead`] call is unwrapping now (by sender and key id).
///
/// Lock order: the sessions first, then the claims; the claims lock is held only to insert or
/// remove one entry, never during RSA work.
#[derive(Debug, Default)]
pub(crate) struct InboundKeys {
    sessions: Mutex<InboundSessions>,
    unwrapping: Mutex<HashSet<([u8; 32], KeyId)>>,
}

impl InboundKeys {
    /// The session cache, locked.
    pub(crate) fn sessions(&self) -> MutexGuard<'_, InboundSessions> {
        lock(&self.sessions)
    }

    /// How many keys calls are unwrapping now (none once every call has returned).
    #[cfg(test)]
    fn claims(&self) -> usize {
        lock(&self.unwrapping).len()
    }
}

/// A poisoned lock is taken as it is: each write under these locks is a single insert or
/// removal, whole or not at all.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Does the RSA private-key work of opening `verified` ahead, on the thread that checked
/// their signatures, so that the thread which opens them ([`open_verified`]) does not stop for
/// it: an `aes` session key not cached yet is unwrapped, checked against its key id and added
/// to `keys` (each distinct key once, even across threads), and an `rsa` body is decrypted
/// into its [`Verified`]. An envelope addressed to another identity than `me` is left alone
/// (opening rejects it without any RSA work). A failure is recorded in the envelope, and
/// [`open_verified`] rejects it for that reason after its own checks.
///
/// The lock on the sessions is never held during an RSA operation. A key that another call is
/// unwrapping at the same time is left to it (the envelope carries nothing ahead): after a
/// key rotation several batches in flight bring the same new key, and unwrapping it once per
/// batch would take every core for the length of an RSA decryption. Opening such an envelope
/// finds the key cached once the other call is done, provided it is opened after the
/// envelopes of that call, as the node opens batches in the order they came.
///
/// [`open_verified`]: encrypto_crypto::envelope::open_verified
pub(crate) fn decrypt_ahead<'a, R: CryptoRng + ?Sized>(
    verified: impl IntoIterator<Item = &'a mut Verified>,
    me: &Identity,
    keys: &InboundKeys,
    rng: &mut R,
) {
    // Wrapped keys (with the key id they claim to be) that did not unwrap in this call, so
    // that a batch repeating one costs one RSA operation, not one per envelope. By key id as
    // well: the same wrapped key under its own id still opens.
    let mut failed: HashMap<(Vec<u8>, KeyId), OpenError> = HashMap::new();
    for v in verified {
        let key = match v.rsa_work(me.public()) {
            RsaWork::None => continue,
            RsaWork::Body => {
                v.decrypt_rsa_ahead(me, rng);
                continue;
            }
            RsaWork::SessionKey(key) => key,
        };
        let tried = || (key.wrapped.to_vec(), key.key_id);
        let known_bad = if failed.is_empty() {
            None
        } else {
            failed.get(&tried()).copied()
        };
        if let Some(error) = known_bad {
            v.reject_ahead(error);
            continue;
        }
        let claim = (key.sender, key.key_id);
        {
            let sessions = keys.sessions();
            if key.is_cached(&sessions) || !lock(&keys.unwrapping).insert(claim) {
                continue;
            }
        }
        let unwrapped = key.unwrap_key(me, rng);
        let mut sessions = keys.sessions();
        lock(&keys.unwrapping).remove(&claim);
        match unwrapped {
            Ok(unwrapped) => {
                sessions.insert(key.sender, unwrapped);
            }
            Err(error) => {
                failed.insert(tried(), error);
                v.reject_ahead(error);
            }
        }
    }
}

#[cfg(test)]
mod tests;
