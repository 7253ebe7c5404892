//! The group commit's bookkeeping: which writes are durable, the flush in progress, and what
//! waits for a flush.
//!
//! The actor writes a group without flushing; each write that something waits on takes a
//! ticket ([`GroupCommit::note_write`]), and the waiters wait on that ticket
//! ([`GroupCommit::wait`]). One flush at a time runs (off the actor's thread unless few wait);
//! when it ends, [`GroupCommit::flushed`] hands back the waiters it covered, for the actor to
//! answer. Writes made during a flush wait for the next one. Nothing here talks to the swarm or
//! the callers, so it is tested without either.

use std::collections::VecDeque;

use tokio::task::{JoinError, JoinSet};

use crate::store::StoreError;

/// Most waiters for which the actor flushes on its own thread: when only one or two wait, the
/// node is lightly loaded, and flushing right there saves the two thread hand-offs on their
/// way and costs nothing else to wait.
const INLINE_FLUSH_MAX: usize = 2;

/// A store flush run off the actor's thread: the ticket it covers and how it went.
pub(super) type Flushed = (u64, Result<(), StoreError>);

/// How a flush ended for the waiters it covered (in ticket order).
#[derive(Debug)]
pub(super) enum Outcome<W> {
    /// Everything up to the flush's ticket is durable: answer these.
    Durable(Vec<W>),
    /// The flush failed: these get the error (callers) or are rejected (requests).
    Failed(Vec<W>, StoreError),
}

/// Tickets, the flush in progress and the waiters, generic over what waits (the actor's
/// `Waiter`) so that tests need no swarm.
pub(super) struct GroupCommit<W> {
    /// The last ticket handed out.
    written: u64,
    /// The last ticket a finished flush covered.
    durable: u64,
    /// The flush in progress, if any (at most one; writes made meanwhile wait for the next).
    flushing: JoinSet<Flushed>,
    /// What waits for a flush, in ticket order.
    waiting: VecDeque<(u64, W)>,
}

impl<W> Default for GroupCommit<W> {
    fn default() -> Self {
        Self {
            written: 0,
            durable: 0,
            flushing: JoinSet::new(),
            waiting: VecDeque::new(),
        }
    }
}

impl<W> GroupCommit<W> {
    /// A write that something will wait on: its ticket.
    pub(super) fn note_write(&mut self) -> u64 {
        self.written += 1;
        self.written
    }

    /// The last ticket handed out: what waits on it waits for everything written so far.
    pub(super) fn last_ticket(&self) -> u64 {
        self.written
    }

    /// Whether a finished flush covered `ticket`.
    pub(super) fn is_durable(&self, ticket: u64) -> bool {
        ticket <= self.durable
    }

    /// `waiter` waits for the flush covering `ticket`. Tickets come in order: a waiter is
    /// never given a ticket older than one already waiting.
    pub(super) fn wait(&mut self, ticket: u64, waiter: W) {
        debug_assert!(self.waiting.back().is_none_or(|(t, _)| *t <= ticket));
        self.waiting.push_back((ticket, waiter));
    }

    /// Whether a flush is running.
    pub(super) fn is_flushing(&self) -> bool {
        !self.flushing.is_empty()
    }

    /// Whether something written is not covered by a flush and no flush is running.
    pub(super) fn flush_due(&self) -> bool {
        self.written != self.durable && self.flushing.is_empty()
    }

    /// Starts a flush of everything written so far, unless one is running (the next one
    /// starts when it ends) or nothing was written. With few waiters it runs `flush` right
    /// here and returns how it went; otherwise on a blocking thread, whose end
    /// [`GroupCommit::join_flush`] reports. Call from within a tokio runtime.
    pub(super) fn start_flush(
        &mut self,
        flush: impl FnOnce() -> Result<(), StoreError> + Send + 'static,
    ) -> Option<Flushed> {
        if !self.flush_due() {
            return None;
        }
        let ticket = self.written;
        if (1..=INLINE_FLUSH_MAX).contains(&self.waiting.len()) {
            return Some((ticket, flush()));
        }
        self.flushing.spawn_blocking(move || (ticket, flush()));
        None
    }

    /// The end of the running flush (pending while none runs: guard with
    /// [`GroupCommit::is_flushing`]).
    pub(super) async fn join_flush(&mut self) -> Option<Result<Flushed, JoinError>> {
        self.flushing.join_next().await
    }

    /// The end of the running flush if it has ended.
    pub(super) fn try_join_flush(&mut self) -> Option<Result<Flushed, JoinError>> {
        self.flushing.try_join_next()
    }

    /// A flush covering writes up to `ticket` ended with `result`: the waiters it covered,
    /// oldest first. Those after `ticket` go on waiting.
    pub(super) fn flushed(&mut self, (ticket, result): Flushed) -> Outcome<W> {
        self.durable = self.durable.max(ticket);
        let mut covered = Vec::new();
        while self.waiting.front().is_some_and(|(t, _)| *t <= ticket) {
            let Some((_, waiter)) = self.waiting.pop_front() else {
                break;
            };
            covered.push(waiter);
        }
        match result {
            Ok(()) => Outcome::Durable(covered),
            Err(e) => Outcome::Failed(covered, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    fn failure() -> StoreError {
        StoreError::Io {
            op: "flush",
            path: "store".into(),
            source: std::io::Error::other("disk full"),
        }
    }

    fn durable(outcome: Outcome<&'static str>) -> Vec<&'static str> {
        match outcome {
            Outcome::Durable(w) => w,
            Outcome::Failed(_, e) => panic!("the flush failed: {e}"),
        }
    }

    #[test]
    fn tickets_come_in_order() {
        let mut commit = GroupCommit::<()>::default();
        assert_eq!(commit.last_ticket(), 0);
        assert!(commit.is_durable(0));
        assert!(!commit.flush_due());
        let tickets: Vec<u64> = (0..3).map(|_| commit.note_write()).collect();
        assert_eq!(tickets, [1, 2, 3]);
        assert_eq!(commit.last_ticket(), 3);
        assert!(!commit.is_durable(1));
        assert!(commit.flush_due());
    }

    #[test]
    fn a_flush_releases_exactly_the_waiters_up_to_its_ticket() {
        let mut commit = GroupCommit::default();
        let first = commit.note_write();
        commit.wait(first, "a");
        commit.wait(first, "b");
        let second = commit.note_write();
        commit.wait(second, "c");
        assert_eq!(durable(commit.flushed((first, Ok(())))), ["a", "b"]);
        assert!(commit.is_durable(first));
        assert!(!commit.is_durable(second));
        assert!(commit.flush_due());
        assert_eq!(durable(commit.flushed((second, Ok(())))), ["c"]);
        assert!(commit.is_durable(second));
        assert!(!commit.flush_due());
        assert!(durable(commit.flushed((second, Ok(())))).is_empty());
    }

    #[test]
    fn a_failed_flush_fails_its_waiters_and_no_others() {
        let mut commit = GroupCommit::default();
        let first = commit.note_write();
        commit.wait(first, "a");
        let second = commit.note_write();
        commit.wait(second, "b");
        match commit.flushed((first, Err(failure()))) {
            Outcome::Failed(waiters, e) => {
                assert_eq!(waiters, ["a"]);
                assert!(matches!(e, StoreError::Io { op: "flush", .. }), "{e}");
            }
            Outcome::Durable(w) => panic!("a failed flush released {w:?}"),
        }
        // Past a failure the next flush starts afresh from what is written.
        assert!(commit.flush_due());
        assert_eq!(durable(commit.flushed((second, Ok(())))), ["b"]);
    }

    #[test]
    fn few_waiters_are_flushed_inline() {
        let mut commit = GroupCommit::default();
        assert!(commit.start_flush(|| panic!("nothing to flush")).is_none());
        let ticket = commit.note_write();
        commit.wait(ticket, "a");
        let (covered, result) = commit.start_flush(|| Ok(())).expect("flushed inline");
        assert_eq!(covered, ticket);
        assert!(result.is_ok());
        assert!(!commit.is_flushing());
    }

    #[tokio::test]
    async fn writes_made_during_a_flush_wait_for_the_next_flush() {
        let mut commit = GroupCommit::default();
        let first = commit.note_write();
        for w in ["a", "b", "c"] {
            commit.wait(first, w);
        }
        let (go, gate) = mpsc::channel::<()>();
        let started = commit.start_flush(move || gate.recv().map_err(|_| failure()));
        assert!(
            started.is_none(),
            "three waiters are flushed off the thread"
        );
        assert!(commit.is_flushing());

        let second = commit.note_write();
        commit.wait(second, "d");
        assert!(!commit.flush_due(), "one flush at a time");
        assert!(commit.start_flush(|| panic!("a second flush")).is_none());

        go.send(()).expect("the flush waits");
        let done = commit
            .join_flush()
            .await
            .expect("a flush ran")
            .expect("the flush thread ended");
        assert_eq!(done.0, first);
        assert_eq!(durable(commit.flushed(done)), ["a", "b", "c"]);
        assert!(!commit.is_durable(second));

        let (covered, result) = commit.start_flush(|| Ok(())).expect("one waiter: inline");
        assert_eq!(covered, second);
        assert!(result.is_ok());
        assert_eq!(durable(commit.flushed((covered, result))), ["d"]);
    }
}
