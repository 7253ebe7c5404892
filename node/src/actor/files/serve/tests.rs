use std::time::Instant;

use super::*;

#[test]
fn send_progress_counts_a_chunk_once_and_is_reported_at_most_so_often() {
    let mut p = SendProgress::default();
    let now = Instant::now();
    assert_eq!(p.served(0, 10, now), Some(10));
    assert_eq!(p.served(1, 10, now), None);
    assert_eq!(p.served(1, 10, now + PROGRESS_EVERY), Some(20));
    assert_eq!(p.served(2, 5, now + PROGRESS_EVERY), None);
    assert_eq!(p.bytes, 25);
}
