//! The outbox's bookkeeping: the requests in flight, in one table, and the retry timers
//! (when each peer with something to deliver is tried again, with a backoff that doubles per
//! failure up to a ceiling).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use encrypto_crypto::envelope;
use encrypto_crypto::{MessageId, PeerId};

/// An outbound request waiting for its response.
pub(super) struct InFlight {
    pub(super) peer: PeerId,
    /// The messages it carries: (id, created_ms).
    pub(super) items: Vec<(MessageId, u64)>,
    /// The session keys their envelopes used.
    pub(super) key_ids: Vec<envelope::KeyId>,
    /// The envelopes sent for texts, by id: recorded in the history once acknowledged (for
    /// "show ciphertext").
    pub(super) envelopes: Vec<(MessageId, Vec<u8>)>,
}

/// The requests in flight, by request id (generic so that tests need no swarm). How many go
/// to a peer and which messages they carry are read from the table itself: a peer has at
/// most a few hundred in flight.
pub(super) struct InFlightTable<K> {
    requests: HashMap<K, InFlight>,
}

impl<K> Default for InFlightTable<K> {
    fn default() -> Self {
        InFlightTable {
            requests: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> InFlightTable<K> {
    /// A request was sent.
    pub(super) fn track(&mut self, request: K, flight: InFlight) {
        self.requests.insert(request, flight);
    }

    /// A request finished (answered or failed): forgotten, and returned.
    pub(super) fn untrack(&mut self, request: &K) -> Option<InFlight> {
        self.requests.remove(request)
    }

    /// How many requests to `peer` are in flight.
    pub(super) fn count_to(&self, peer: &PeerId) -> usize {
        self.requests.values().filter(|f| f.peer == *peer).count()
    }

    /// The messages in flight to `peer`.
    pub(super) fn ids_to(&self, peer: &PeerId) -> HashSet<MessageId> {
        self.requests
            .values()
            .filter(|f| f.peer == *peer)
            .flat_map(|f| f.items.iter().map(|(id, _)| *id))
            .collect()
    }
}

/// When each peer is retried, and its current backoff.
pub(super) struct Retries {
    initial: Duration,
    max: Duration,
    at: HashMap<PeerId, Instant>,
    backoff: HashMap<PeerId, Duration>,
}

impl Retries {
    /// First delay `initial`, doubling up to `max`.
    pub(super) fn new(initial: Duration, max: Duration) -> Self {
        Retries {
            initial,
            max,
            at: HashMap::new(),
            backoff: HashMap::new(),
        }
    }

    /// Tries `peer` at the next tick, unless a retry is already scheduled.
    pub(super) fn due_now(&mut self, peer: PeerId, now: Instant) {
        self.at.entry(peer).or_insert(now);
    }

    /// A delivery to `peer` failed: the next delay (`initial`, then doubled each time up to
    /// `max`), jittered by a quarter either way, unless a retry is already scheduled. Returns
    /// the delay before jitter.
    pub(super) fn schedule(&mut self, peer: PeerId, now: Instant) -> Duration {
        let next = self
            .backoff
            .get(&peer)
            .map_or(self.initial, |d| (*d * 2).min(self.max));
        self.backoff.insert(peer, next);
        // Two nodes that failed to reach each other at the same moment (both dialling at
        // once after a restart, say: one simultaneous-open TCP connection on which both
        // noise handshakes fail) would otherwise try again at the same moment too.
        let jittered = next.mul_f64(rand::random_range(0.75..1.25));
        self.at.entry(peer).or_insert(now + jittered);
        next
    }

    /// `peer` was reached: its next failure starts again from the first delay.
    pub(super) fn reset(&mut self, peer: &PeerId) {
        self.backoff.remove(peer);
    }

    /// The peers whose retry time has come by `now`, no longer scheduled.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<PeerId> {
        take_due(&mut self.at, now)
    }
}

/// Removes from `timers` the peers whose time has come by `now`, and returns them.
pub(super) fn take_due(timers: &mut HashMap<PeerId, Instant>, now: Instant) -> Vec<PeerId> {
    let due: Vec<PeerId> = timers
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(peer, _)| *peer)
        .collect();
    for peer in &due {
        timers.remove(peer);
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flight(peer: PeerId, ids: &[u8]) -> InFlight {
        InFlight {
            peer,
            items: ids.iter().map(|n| (MessageId([*n; 16]), 0)).collect(),
            key_ids: Vec::new(),
            envelopes: Vec::new(),
        }
    }

    #[test]
    fn the_in_flight_table_counts_and_forgets_per_peer() {
        let mut table = InFlightTable::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        table.track(1u64, flight(a, &[1, 2]));
        table.track(2, flight(a, &[3]));
        table.track(3, flight(b, &[4]));
        assert_eq!(table.count_to(&a), 2);
        assert_eq!(table.count_to(&b), 1);
        let ids: HashSet<MessageId> = [1, 2, 3].map(|n| MessageId([n; 16])).into();
        assert_eq!(table.ids_to(&a), ids);
        let done = table.untrack(&1).unwrap();
        assert_eq!((done.peer, done.items.len()), (a, 2));
        assert!(table.untrack(&1).is_none(), "forgotten once");
        assert_eq!(table.count_to(&a), 1);
        assert_eq!(table.ids_to(&a), [MessageId([3; 16])].into());
        assert_eq!(table.ids_to(&b), [MessageId([4; 16])].into());
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling_and_resets() {
        let mut retries = Retries::new(Duration::from_millis(500), Duration::from_secs(2));
        let peer = PeerId::random();
        let now = Instant::now();
        let delays: Vec<_> = (0..4).map(|_| retries.schedule(peer, now)).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 2000].map(Duration::from_millis).to_vec()
        );
        retries.reset(&peer);
        assert_eq!(retries.schedule(peer, now), Duration::from_millis(500));
    }

    #[test]
    fn a_retry_is_due_only_once_its_jittered_time_has_come() {
        let mut retries = Retries::new(Duration::from_secs(4), Duration::from_secs(60));
        let (late, soon) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        retries.schedule(late, now);
        retries.due_now(soon, now);
        assert_eq!(retries.take_due(now), vec![soon]);
        assert!(retries.take_due(now).is_empty(), "taken once");
        assert!(retries.take_due(now + Duration::from_secs(2)).is_empty());
        assert_eq!(retries.take_due(now + Duration::from_secs(5)), vec![late]);
    }
}
