//! Signing envelopes in batches (one Ed25519 signature over a Merkle root, each envelope
//! with its path) and checking many from one sender at once.

use std::collections::HashMap;

use super::verified::Ahead;
use super::*;
use crate::canonical::Canonical;
use crate::identity::{ED25519_LEN, Identity, PublicIdentity, SIGNATURE_LEN};
use crate::merkle;

/// What a batch's one signature covers: its sender, its size and its Merkle root.
pub(super) fn batch_statement(
    sender: &[u8; ED25519_LEN],
    count: u16,
    root: &merkle::Hash,
) -> Vec<u8> {
    Canonical::new(b"encrypto/envelope-batch/v1")
        .fixed(sender)
        .u32(u32::from(count))
        .fixed(root)
        .finish()
}

/// A sealed envelope that still lacks its signature ([`seal_aes_unsigned`],
/// [`seal_rsa_unsigned`]); [`sign_batch`] signs it.
#[derive(Debug, Clone)]
pub struct UnsignedEnvelope(pub(super) Envelope);

impl UnsignedEnvelope {
    /// An upper bound on the length of the signed envelope's encoding, whatever batch it is
    /// signed in; computed from its variable-length fields, without encoding it.
    pub fn max_signed_len(&self) -> usize {
        let env = &self.0;
        ENVELOPE_FIXED_MAX
            + env.body.len()
            + env.wrapped_key.as_ref().map_or(0, |w| w.len())
            + MAX_PROOF_LEN
    }
}

pub(super) fn sign_one(sender: &Identity, unsigned: UnsignedEnvelope) -> Envelope {
    let mut signed = sign_batch(sender, vec![unsigned]);
    signed.pop().expect("one envelope in, one out")
}

/// Signs envelopes `sender` sealed with one Ed25519 signature per [`MAX_SIGNED_BATCH`] of
/// them: over the root of a Merkle tree ([`merkle`]) whose leaves are the envelopes' canonical
/// encodings. Each envelope gets the signature and its own inclusion path ([`BatchProof`]), so
/// it is checked alone, by anyone holding the sender's key, as if it had been signed alone;
/// a receiver with several from one batch checks the signature once ([`verify_many`]).
/// Returns them in order.
///
/// `sender` must be the identity that sealed them: another one's signature does not verify.
pub fn sign_batch(sender: &Identity, unsigned: Vec<UnsignedEnvelope>) -> Vec<Envelope> {
    let mut signed = Vec::with_capacity(unsigned.len());
    let mut rest = unsigned.into_iter().map(|u| u.0).peekable();
    while rest.peek().is_some() {
        let mut batch: Vec<Envelope> = rest.by_ref().take(MAX_SIGNED_BATCH).collect();
        let leaves: Vec<merkle::Hash> = batch
            .iter()
            .map(|env| merkle::leaf_hash(&env.signed_bytes()))
            .collect();
        let (root, paths) = merkle::build(&leaves);
        let count = u16::try_from(batch.len()).expect("MAX_SIGNED_BATCH fits in u16");
        let signature = sender.sign(&batch_statement(
            &sender.public().ed25519_bytes(),
            count,
            &root,
        ));
        for ((index, env), path) in (0u16..).zip(batch.iter_mut()).zip(paths) {
            env.signature = signature;
            env.proof = Some(BatchProof {
                count,
                index,
                path: path.into_iter().map(serde_bytes::ByteArray::new).collect(),
            });
        }
        signed.append(&mut batch);
    }
    signed
}

/// The first checks of [`open`] (structure, sender = `sender`, signature) for many envelopes
/// from one sender. Envelopes signed together ([`sign_batch`]) share one signature, checked
/// once; the distinct signatures are checked in one Ed25519 batch verification (about half
/// the work of checking them one by one), and when that fails, one by one, so that only the
/// envelopes under a bad one are rejected. Meant for a thread other than the one that opens
/// them: this is the part of opening that costs.
///
/// A batch verification accepts exactly the signatures made with `sender`'s key, as checking
/// them one by one (strictly) does; the two can differ only on a signature its key holder
/// crafted to differ (a nonce point of small order), so only on what that sender itself sent.
pub fn verify_many(
    envelopes: Vec<Envelope>,
    sender: &PublicIdentity,
) -> Vec<Result<Verified, OpenError>> {
    let expected = sender.ed25519_bytes();
    // Each envelope that passes the structural checks, with the index of its (statement,
    // signature) among the distinct ones.
    let mut distinct: Vec<(Vec<u8>, [u8; SIGNATURE_LEN])> = Vec::new();
    let mut index_of: HashMap<(Vec<u8>, [u8; SIGNATURE_LEN]), usize> = HashMap::new();
    let checked: Vec<Result<(Envelope, usize), OpenError>> = envelopes
        .into_iter()
        .map(|env| {
            // In the order `open` checks them, so that both give the same reason.
            env.check_structure()?;
            let statement = env
                .signed_statement()
                .ok_or(OpenError(RejectReason::BadSignature))?;
            if env.sender != expected {
                return Err(OpenError(RejectReason::SenderMismatch));
            }
            let key = (statement, env.signature);
            let at = *index_of.entry(key).or_insert_with_key(|key| {
                distinct.push(key.clone());
                distinct.len() - 1
            });
            Ok((env, at))
        })
        .collect();
    let all_good = distinct.len() > 1 && sender.verify_batch(&distinct);
    let good: Vec<bool> = distinct
        .iter()
        .map(|(statement, signature)| all_good || sender.verify(statement, signature))
        .collect();
    checked
        .into_iter()
        .map(|checked| {
            let (env, at) = checked?;
            if good[at] {
                Ok(Verified {
                    envelope: env,
                    ahead: Ahead::Nothing,
                })
            } else {
                Err(OpenError(RejectReason::BadSignature))
            }
        })
        .collect()
}
