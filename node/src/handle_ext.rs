//! What every front end (the daemon's methods, the window) asks of a node beyond its single
//! commands, written once: find the contact a person named, and wait for a delivery.

use std::time::Duration;

use encrypto_crypto::{MessageId, PeerId};
use tokio::sync::broadcast;

use crate::view::{Contact, Status};
use crate::{NodeError, NodeEvent, NodeHandle};

/// Why no single contact matches what a person typed. Each message is one line that says
/// what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// Nothing was given.
    #[error("no recipient: give a contact's name or peer id")]
    Empty,
    /// A peer id that is not a contact.
    #[error("{0} is not a contact; add it first with `encrypto add /ip4/ADDRESS/tcp/PORT/p2p/{0}`")]
    NotAContact(PeerId),
    /// No contact has this name.
    #[error("no contact named \"{name}\"; {hint}")]
    NoSuchName {
        /// The name as given.
        name: String,
        /// Close names, or where to find the contacts.
        hint: String,
    },
    /// Several contacts have this name.
    #[error(
        "{} contacts are named \"{name}\": {}; use the peer id instead",
        .candidates.len(),
        .candidates.join(", ")
    )]
    Ambiguous {
        /// The name as given.
        name: String,
        /// Each one's peer id and fingerprint.
        candidates: Vec<String>,
    },
    /// The node could not list the contacts.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Why a wait for a delivery ended without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotDelivered {
    /// Not acknowledged in time; the message stays queued.
    #[error("not delivered in time")]
    TimedOut,
    /// The node stopped.
    #[error("the node stopped")]
    Stopped,
}

impl NodeHandle {
    /// The contact `to` names: a peer id, or a name (case-insensitive) that exactly one
    /// contact has. Surrounding spaces are ignored.
    ///
    /// # Errors
    /// A [`ResolveError`] a person can act on: no such contact (with close names), several
    /// of that name (with their peer ids), or the node's error.
    pub async fn resolve_contact(&self, to: &str) -> Result<Contact, ResolveError> {
        let contacts = self.contacts().await?;
        resolve_in(to.trim(), contacts)
    }

    /// Waits until the peer acknowledged message `id`, for at most `timeout`. `events` must
    /// have been subscribed before the message was sent, so the delivery cannot slip past;
    /// if events were missed, the history says whether it was delivered.
    ///
    /// # Errors
    /// [`NotDelivered::TimedOut`] when the time is up (the message stays queued and is
    /// delivered later); [`NotDelivered::Stopped`] when the node stops first.
    pub async fn wait_delivered(
        &self,
        events: &mut broadcast::Receiver<NodeEvent>,
        peer: PeerId,
        id: MessageId,
        timeout: Duration,
    ) -> Result<(), NotDelivered> {
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::Delivered { id: done, .. }) if done == id => return Ok(()),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Ok(history) = self.history(peer, None).await
                            && history
                                .iter()
                                .any(|m| m.id == id && m.status == Status::Delivered)
                        {
                            return Ok(());
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(NotDelivered::Stopped),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(NotDelivered::TimedOut))
    }
}

/// The contact `to` names among `contacts`.
fn resolve_in(to: &str, contacts: Vec<Contact>) -> Result<Contact, ResolveError> {
    if let Ok(peer) = to.parse::<PeerId>() {
        return contacts
            .into_iter()
            .find(|c| c.peer_id == peer)
            .ok_or(ResolveError::NotAContact(peer));
    }
    if to.is_empty() {
        return Err(ResolveError::Empty);
    }
    let wanted = to.to_lowercase();
    let (mut exact, others): (Vec<Contact>, Vec<Contact>) = contacts
        .into_iter()
        .partition(|c| c.name.to_lowercase() == wanted);
    match exact.len() {
        1 => Ok(exact.remove(0)),
        0 => {
            let mut close: Vec<&Contact> = others
                .iter()
                .filter(|c| {
                    let name = c.name.to_lowercase();
                    name.contains(&wanted)
                        || wanted.contains(&name)
                        || edit_distance(&name, &wanted) <= 2
                })
                .collect();
            close.truncate(3);
            let hint = if close.is_empty() {
                if others.is_empty() {
                    "you have no contacts yet; add one with `encrypto add PEER`".to_owned()
                } else {
                    "`encrypto contacts` lists them".to_owned()
                }
            } else {
                let names: Vec<String> = close
                    .iter()
                    .map(|c| format!("\"{}\" ({})", c.name, c.peer_id))
                    .collect();
                format!("did you mean {}?", names.join(" or "))
            };
            Err(ResolveError::NoSuchName {
                name: to.to_owned(),
                hint,
            })
        }
        _ => Err(ResolveError::Ambiguous {
            name: to.to_owned(),
            candidates: exact
                .iter()
                .map(|c| {
                    let fp = c.fingerprint().map(|f| f.short()).unwrap_or_default();
                    format!("{} (fingerprint {fp}…)", c.peer_id)
                })
                .collect(),
        }),
    }
}

/// Levenshtein distance over chars (names are at most 64 bytes).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("bob", "bob"), 0);
        assert_eq!(edit_distance("bob", "rob"), 1);
        assert_eq!(edit_distance("bob", "bobby"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn an_empty_name_or_an_unknown_one_is_refused_with_a_hint() {
        assert!(matches!(
            resolve_in("", Vec::new()),
            Err(ResolveError::Empty)
        ));
        let err = resolve_in("bob", Vec::new()).unwrap_err().to_string();
        assert!(
            err.contains("no contact named \"bob\"; you have no contacts yet"),
            "{err}"
        );
    }
}
