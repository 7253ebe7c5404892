use std::time::{Duration, Instant};

use encrypto_crypto::PeerId;
use encrypto_crypto::file::FileId;

use super::*;

fn key(sender: PeerId) -> TKey {
    (
        FileId::random(&mut rand::rng()),
        TransferRole::Relay,
        sender,
    )
}

#[test]
fn an_offer_goes_out_once_until_answered_and_backs_off_when_not_taken() {
    let mut files = Files::default();
    let recipient = PeerId::random();
    let k = key(PeerId::random());
    files.offers.insert(k, RelayOffer::new(recipient, vec![7]));
    let now = Instant::now();
    assert_eq!(files.due_offers(now), vec![(k, recipient, vec![7])]);
    assert!(files.due_offers(now).is_empty());
    assert!(!files.offer_answered(k, false, now));
    assert!(files.due_offers(now).is_empty());
    assert_eq!(files.due_offers(now + SOURCE_BACKOFF).len(), 1);
    for _ in 0..20 {
        files.offer_answered(k, false, now);
    }
    assert_eq!(files.offers[&k].backoff, OFFER_BACKOFF_MAX);
    assert!(files.offer_answered(k, true, now));
    assert!(files.offers.is_empty());
    assert!(!files.offer_answered(k, true, now));
}

#[test]
fn a_recipient_connecting_makes_its_offers_due_at_once() {
    let mut files = Files::default();
    let recipient = PeerId::random();
    let other = PeerId::random();
    let mine = key(PeerId::random());
    let theirs = key(PeerId::random());
    files
        .offers
        .insert(mine, RelayOffer::new(recipient, vec![1]));
    files.offers.insert(theirs, RelayOffer::new(other, vec![2]));
    let now = Instant::now();
    assert_eq!(files.due_offers(now).len(), 2);
    files.offer_answered(mine, false, now);
    files.offer_answered(theirs, false, now);
    let later = now + Duration::from_millis(1);
    files.offers_due_for(recipient, later);
    assert_eq!(files.due_offers(later), vec![(mine, recipient, vec![1])]);
}
