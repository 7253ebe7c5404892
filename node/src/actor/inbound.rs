//! Inbound message requests, in arrival order, with the signature checks off the actor.
//!
//! Checking an envelope's Ed25519 signature is most of what receiving it costs, and an RSA
//! private-key operation (a new `aes` session key to unwrap, an `rsa` body) costs about 10 ms
//! each. A batch of envelopes is therefore parsed and checked on a blocking thread
//! ([`check_batch`]: one batch verification for all its signatures, then the RSA work, with
//! the keys it unwraps added to the actor's cache) while the actor goes on serving the swarm
//! and flushing the store; the actor then does the rest of opening each envelope (recipient,
//! time window, replay, AES decryption) and files the new ones in the group commit. The node's
//! connections share the actor's thread, so RSA work there would stall all of them.
//!
//! Requests are handled in the order they arrived: one that comes while a batch is being
//! checked waits behind it (a delete-for-both must not overtake the messages sent before it),
//! and a batch is taken up only when every request before it is done.
//!
//! The queue is bounded by what the network allows: each entry holds an inbound stream
//! awaiting its response, and libp2p caps those per connection
//! ([`MAX_STREAMS_PER_CONNECTION`](crate::swarm::MAX_STREAMS_PER_CONNECTION)), as the node
//! caps connections; the rate limit refuses a batch before it is queued. At most
//! [`MAX_CHECK_JOBS`] batches are checked at once, so a flood of batches never costs more
//! threads than that.

use std::collections::VecDeque;
use std::sync::Arc;

use encrypto_crypto::envelope::{self, Envelope, OpenError, Verified};
use encrypto_crypto::identity::{Identity, PublicIdentity};
use libp2p::request_response::ResponseChannel;
use tokio::task::{Id, JoinError, JoinSet};
use tracing::{debug, warn};

use super::{Actor, Inbound, NodeEvent, PeerId, PendingAck, Pinned};
use crate::protocol::{EnvelopeBatch, MsgRequest, MsgResponse};

/// A batch this small is checked on the actor's thread (when nothing waits before it and it
/// needs no RSA work): the hand-off to another thread would cost more than it saves.
const CHECK_IN_PLACE_MAX: usize = 1;

/// Most batches checked at the same time (one per core of the machines we aim at).
const MAX_CHECK_JOBS: usize = 2;

/// Each envelope of a batch as the blocking thread checked it: its structure, sender and
/// signature, or why it is refused.
pub(super) type CheckedBatch = Vec<Result<Verified, String>>;

/// What a check job hands back: the batch and how each of its envelopes fared.
pub(super) type CheckJob = (EnvelopeBatch, CheckedBatch);

/// The inbound requests not handled yet, oldest first, and the checks running for them.
#[derive(Default)]
pub(super) struct InboundQueue {
    queue: VecDeque<Queued>,
    /// The batches being checked, on blocking threads.
    pub(super) jobs: JoinSet<CheckJob>,
}

/// A request waiting for its turn.
struct Queued {
    peer: PeerId,
    pinned: Arc<Pinned>,
    channel: ResponseChannel<MsgResponse>,
    work: Work,
}

enum Work {
    /// A batch of envelopes waiting for a free check job.
    Waiting(EnvelopeBatch),
    /// A batch of envelopes being checked by the job `Id`.
    Checking(Id),
    /// A batch of envelopes, checked.
    Checked(CheckJob),
    /// A batch whose check failed (the job panicked): refused, the sender sends it again.
    Failed,
    /// Any other request, handled as usual when its turn comes.
    Other(MsgRequest),
}

/// Parses each envelope of `batch` and checks its structure, sender and signature against
/// `sender` (all signatures in one batch verification).
pub(super) fn verify_batch(batch: &EnvelopeBatch, sender: &PublicIdentity) -> CheckedBatch {
    let mut envelopes = Vec::with_capacity(batch.len());
    let parsed: Vec<Result<(), String>> = batch
        .iter()
        .map(|bytes| {
            let envelope = Envelope::from_bytes(bytes).map_err(|e| reason(&e))?;
            envelopes.push(envelope);
            Ok(())
        })
        .collect();
    let mut verified = envelope::verify_many(envelopes, sender).into_iter();
    parsed
        .into_iter()
        .map(|p| {
            p?;
            match verified.next() {
                Some(v) => v.map_err(|e| reason(&e)),
                None => Err("internal: an envelope was not checked".into()),
            }
        })
        .collect()
}

/// [`verify_batch`], then the RSA work of opening the envelopes that passed, done ahead
/// ([`crate::unwrap::decrypt_ahead`]): what a check job does.
pub(super) fn check_batch(
    batch: &EnvelopeBatch,
    sender: &PublicIdentity,
    me: &Identity,
    keys: &crate::unwrap::InboundKeys,
) -> CheckedBatch {
    let mut checked = verify_batch(batch, sender);
    crate::unwrap::decrypt_ahead(
        checked.iter_mut().filter_map(|c| c.as_mut().ok()),
        me,
        keys,
        &mut rand::rng(),
    );
    checked
}

/// How a refused envelope or control payload is reported (the reason, not the opaque error
/// text).
pub(super) fn reason(e: &OpenError) -> String {
    format!("{:?}", e.reason())
}

impl Actor {
    /// Takes an inbound message request (already rate limited, from a contact whose keys are
    /// pinned): handled now, or queued behind earlier ones; a batch of envelopes is checked
    /// on a blocking thread first.
    pub(super) fn take_msg_request(
        &mut self,
        peer: PeerId,
        pinned: Arc<Pinned>,
        request: MsgRequest,
        channel: ResponseChannel<MsgResponse>,
    ) {
        let idle = self.requests.queue.is_empty();
        let work = match request {
            MsgRequest::Envelopes(batch)
                if idle && batch.len() <= CHECK_IN_PLACE_MAX && !self.needs_private_key(&batch) =>
            {
                let checked = verify_batch(&batch, &pinned.public);
                return self.receive_batch(peer, pinned, &batch, checked, channel);
            }
            MsgRequest::Envelopes(batch) => Work::Waiting(batch),
            other if idle => return self.handle_msg_request(peer, pinned, other, channel),
            other => Work::Other(other),
        };
        self.requests.queue.push_back(Queued {
            peer,
            pinned,
            channel,
            work,
        });
        self.start_checks();
    }

    /// Whether opening some envelope of `batch` takes an RSA private-key operation.
    fn needs_private_key(&self, batch: &EnvelopeBatch) -> bool {
        let sessions = self.inbound_sessions();
        batch.iter().any(|bytes| {
            Envelope::from_bytes(bytes).is_ok_and(|env| env.needs_private_key(&sessions))
        })
    }

    /// Starts checking the oldest waiting batches, up to [`MAX_CHECK_JOBS`] at a time.
    fn start_checks(&mut self) {
        let InboundQueue { queue, jobs } = &mut self.requests;
        for queued in queue.iter_mut() {
            if jobs.len() >= MAX_CHECK_JOBS {
                return;
            }
            queued.work = match std::mem::replace(&mut queued.work, Work::Failed) {
                Work::Waiting(batch) => {
                    let public = queued.pinned.public.clone();
                    let me = Arc::clone(&self.identity);
                    let keys = Arc::clone(&self.inbound);
                    let job = jobs.spawn_blocking(move || {
                        let checked = check_batch(&batch, &public, &me, &keys);
                        (batch, checked)
                    });
                    Work::Checking(job.id())
                }
                other => other,
            };
        }
    }

    /// A batch's checks are done: handles every request whose turn has come.
    pub(super) fn on_verified(&mut self, done: Result<(Id, CheckJob), JoinError>) {
        let (id, work) = match done {
            Ok((id, job)) => (id, Work::Checked(job)),
            Err(e) => {
                warn!(error = %e, "an envelope check failed");
                (e.id(), Work::Failed)
            }
        };
        if let Some(queued) = self
            .requests
            .queue
            .iter_mut()
            .find(|q| matches!(q.work, Work::Checking(job) if job == id))
        {
            queued.work = work;
        }
        while let Some(front) = self.requests.queue.front() {
            if matches!(front.work, Work::Waiting(_) | Work::Checking(_)) {
                break;
            }
            let Some(queued) = self.requests.queue.pop_front() else {
                break;
            };
            let Queued {
                peer,
                pinned,
                channel,
                work,
                ..
            } = queued;
            match work {
                Work::Checked((batch, checked)) => {
                    self.receive_batch(peer, pinned, &batch, checked, channel);
                }
                Work::Failed => self.reject(peer, channel, "the envelope check failed".into()),
                Work::Other(request) => self.handle_msg_request(peer, pinned, request, channel),
                Work::Waiting(_) | Work::Checking(_) => {
                    unreachable!("the loop stops at a batch not checked yet")
                }
            }
        }
        self.start_checks();
    }

    /// Opens every checked envelope of a batch; the new ones join the group commit. One ack
    /// names every envelope accepted (new or repeated); the others are left out, and the
    /// sender retries them. A batch with nothing acceptable is rejected.
    pub(super) fn receive_batch(
        &mut self,
        peer: PeerId,
        pinned: Arc<Pinned>,
        batch: &EnvelopeBatch,
        checked: CheckedBatch,
        channel: ResponseChannel<MsgResponse>,
    ) {
        let mut ids = Vec::with_capacity(batch.len());
        let mut new = false;
        for (bytes, checked) in batch.iter().zip(checked) {
            match self.receive_verified(peer, &pinned.public, bytes, checked) {
                Ok(Inbound::Ack(id)) => ids.push(id),
                Ok(Inbound::Store(message)) => {
                    ids.push(message.id);
                    self.pending_incoming.push(message);
                    new = true;
                }
                Err(reason) => {
                    debug!(%peer, %reason, "envelope in a batch rejected");
                    self.emit(NodeEvent::Rejected { peer, reason });
                }
            }
        }
        let ack = PendingAck {
            peer,
            pinned,
            ids,
            channel,
        };
        if ack.ids.is_empty() {
            self.reject(
                peer,
                ack.channel,
                "no envelope in the batch accepted".into(),
            );
        } else if new {
            self.pending_requests.push(ack);
        } else {
            self.acknowledge_when_durable(ack);
        }
    }
}
