//! Receiving: the per-peer rate limit on inbound message frames. (The ordered queue of
//! inbound requests and their off-thread checks are in `inbound`.)

use std::collections::HashMap;
use std::time::Instant;

use encrypto_crypto::PeerId;

/// A token bucket per peer for inbound frames: `rate` tokens a second, at most `burst`.
pub(super) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<PeerId, Bucket>,
}

/// One peer's tokens, as of `last`.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// `per_second` frames a second on average, in bursts of up to `burst`, raised to a full
    /// batch ([`MAX_BATCH_ENVELOPES`](crate::protocol::MAX_BATCH_ENVELOPES)) so that such a
    /// batch is never refused for its size alone.
    pub(super) fn new(per_second: u32, burst: u32) -> Self {
        RateLimiter {
            rate: f64::from(per_second),
            burst: f64::from(burst).max(crate::protocol::MAX_BATCH_ENVELOPES as f64),
            buckets: HashMap::new(),
        }
    }

    /// Takes `n` tokens from the peer's bucket at `now`, if it has them.
    pub(super) fn allow(&mut self, peer: &PeerId, n: usize, now: Instant) -> bool {
        let burst = self.burst;
        let bucket = self.buckets.entry(*peer).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        bucket.tokens = (bucket.tokens
            + now.saturating_duration_since(bucket.last).as_secs_f64() * self.rate)
            .min(burst);
        bucket.last = now;
        // Batches hold at most a few hundred envelopes: exact as an f64.
        let n = n as f64;
        if bucket.tokens >= n {
            bucket.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Drops a peer's bucket (its last connection closed): it starts full next time.
    pub(super) fn forget(&mut self, peer: &PeerId) {
        self.buckets.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::protocol::MAX_BATCH_ENVELOPES;

    #[test]
    fn a_burst_is_allowed_then_refused_until_tokens_come_back() {
        let burst = u32::try_from(MAX_BATCH_ENVELOPES).unwrap() * 2;
        let mut limiter = RateLimiter::new(10, burst);
        let (peer, other) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        assert!(limiter.allow(&peer, burst as usize, t0));
        assert!(!limiter.allow(&peer, 1, t0));
        // Another peer has its own bucket.
        assert!(limiter.allow(&other, 1, t0));
        // A second at 10 a second gives back 10 tokens, not 11.
        let t1 = t0 + Duration::from_secs(1);
        assert!(limiter.allow(&peer, 10, t1));
        assert!(!limiter.allow(&peer, 1, t1));
        // Refill never goes past the burst.
        let later = t1 + Duration::from_secs(3600);
        assert!(!limiter.allow(&peer, burst as usize + 1, later));
        assert!(limiter.allow(&peer, burst as usize, later));
    }

    #[test]
    fn the_burst_is_at_least_a_full_batch_and_forget_refills() {
        let mut limiter = RateLimiter::new(0, 1);
        let peer = PeerId::random();
        let now = Instant::now();
        assert!(limiter.allow(&peer, MAX_BATCH_ENVELOPES, now));
        assert!(!limiter.allow(&peer, 1, now));
        limiter.forget(&peer);
        assert!(limiter.allow(&peer, 1, now));
    }
}
