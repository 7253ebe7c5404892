//! The RSA work of opening inbound envelopes, done ahead on the check jobs: which of it runs,
//! and how the jobs running at the same time share it.
//!
//! The crypto crate offers the pure steps ([`Verified::rsa_work`], [`WrappedKey::unwrap_key`],
//! [`InboundSessions::insert`], [`Verified::reject_ahead`]); the policy is the node's: several
//! check jobs run at once on the blocking threads and share one session cache, and after a key
//! rotation several batches in flight bring the same new key.
//!
//! [`WrappedKey::unwrap_key`]: encrypto_crypto::envelope::WrappedKey::unwrap_key

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use encrypto_crypto::envelope::{InboundSessions, KeyId, OpenError, RsaWork, Verified};
use encrypto_crypto::{CryptoRng, Identity};

/// A session key being unwrapped: the cache it goes to (by address), its sender and its id.
type Claim = (usize, [u8; 32], KeyId);

/// The keys a [`decrypt_ahead`] call is unwrapping now, for every session cache in the
/// process. Kept here rather than beside the cache so that the cache stays the crypto crate's
/// plain type; entries are keyed by the cache's address, which cannot be reused while a call
/// holds a claim (the call borrows the cache), and each claim is gone when its call returns.
/// Lock order: the cache's lock first, then this one.
static UNWRAPPING: Mutex<BTreeSet<Claim>> = Mutex::new(BTreeSet::new());

/// A poisoned lock is taken as it is: each write under these locks is a single insert or
/// removal, whole or not at all.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Does the RSA private-key work of opening `verified` ahead, on the thread that checked
/// their signatures, so that the thread which opens them ([`open_verified`]) does not stop for
/// it: an `aes` session key not cached yet is unwrapped, checked against its key id and added
/// to `sessions` (each distinct key once, even across threads), and an `rsa` body is decrypted
/// into its [`Verified`]. An envelope addressed to another identity than `me` is left alone
/// (opening rejects it without any RSA work). A failure is recorded in the envelope, and
/// [`open_verified`] rejects it for that reason after its own checks.
///
/// The lock on `sessions` is never held during an RSA operation. A key that another call is
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
    sessions: &Mutex<InboundSessions>,
    rng: &mut R,
) {
    let cache = std::ptr::from_ref(sessions).addr();
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
        let claim = (cache, key.sender, key.key_id);
        {
            let sessions = lock(sessions);
            if key.is_cached(&sessions) || !lock(&UNWRAPPING).insert(claim) {
                continue;
            }
        }
        let unwrapped = key.unwrap_key(me, rng);
        let mut sessions = lock(sessions);
        lock(&UNWRAPPING).remove(&claim);
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
