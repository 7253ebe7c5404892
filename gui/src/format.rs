//! Small text helpers: times and days in the local time zone, passphrase strength, peer ids
//! and ciphertext for display.

use chrono::{DateTime, Local, NaiveDate, TimeZone};
use encrypto_crypto::PeerId;

/// Most ciphertext bytes shown as hex under a message.
const CIPHERTEXT_SHOWN: usize = 768;

fn local(ms: u64) -> Option<DateTime<Local>> {
    let ms = i64::try_from(ms).ok()?;
    Local.timestamp_millis_opt(ms).single()
}

/// `14:05`, in local time.
pub(crate) fn time_of_day(ms: u64) -> String {
    local(ms).map_or_else(|| "--:--".to_owned(), |t| t.format("%H:%M").to_string())
}

/// The local calendar day of a timestamp.
pub(crate) fn day_of(ms: u64) -> Option<NaiveDate> {
    local(ms).map(|t| t.date_naive())
}

/// A day separator: "Today", "Yesterday" or "Monday 3 November 2026".
pub(crate) fn day_label(day: NaiveDate, today: NaiveDate) -> String {
    if day == today {
        "Today".to_owned()
    } else if today.pred_opt() == Some(day) {
        "Yesterday".to_owned()
    } else {
        day.format("%A %-d %B %Y").to_string()
    }
}

/// Today, in local time.
pub(crate) fn today() -> NaiveDate {
    Local::now().date_naive()
}

/// A PeerId shortened for display: its last 8 characters.
pub(crate) fn short_peer(peer: &PeerId) -> String {
    let s = peer.to_string();
    let tail = s.len().saturating_sub(8);
    format!("…{}", &s[tail..])
}

/// How strong a new passphrase looks: a hint, not a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strength {
    Empty,
    Weak,
    Fair,
    Strong,
}

impl Strength {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Strength::Empty => "",
            Strength::Weak => "weak: use a longer passphrase, several words work well",
            Strength::Fair => "fair: a few more characters or words make it strong",
            Strength::Strong => "strong",
        }
    }
}

/// Estimates strength from the length and the kinds of characters used (lower, upper, digits,
/// other): roughly bits of a random choice, which overrates a dictionary word, so the
/// thresholds are high.
pub(crate) fn strength(passphrase: &str) -> Strength {
    if passphrase.is_empty() {
        return Strength::Empty;
    }
    let mut pool = 0u32;
    if passphrase.chars().any(|c| c.is_lowercase()) {
        pool += 26;
    }
    if passphrase.chars().any(|c| c.is_uppercase()) {
        pool += 26;
    }
    if passphrase.chars().any(|c| c.is_ascii_digit()) {
        pool += 10;
    }
    if passphrase.chars().any(|c| !c.is_alphanumeric()) {
        pool += 32;
    }
    let len = passphrase.chars().count();
    let bits = f64::from(pool.max(2)).log2() * len as f64;
    if len < 10 || bits < 50.0 {
        Strength::Weak
    } else if bits < 75.0 {
        Strength::Fair
    } else {
        Strength::Strong
    }
}

/// The sealed bytes as hex, in groups of four bytes, cut after [`CIPHERTEXT_SHOWN`] bytes.
pub(crate) fn ciphertext_hex(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(CIPHERTEXT_SHOWN)];
    let mut out = String::with_capacity(shown.len() * 2 + shown.len() / 4 + 32);
    for (i, chunk) in shown.chunks(4).enumerate() {
        if i > 0 {
            out.push(if i % 8 == 0 { '\n' } else { ' ' });
        }
        for b in chunk {
            out.push_str(&format!("{b:02x}"));
        }
    }
    if bytes.len() > shown.len() {
        out.push_str(&format!("\n… ({} bytes in all)", bytes.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strength_grows_with_length_and_variety() {
        assert_eq!(strength(""), Strength::Empty);
        assert_eq!(strength("abc"), Strength::Weak);
        assert_eq!(strength("password1"), Strength::Weak);
        assert_eq!(strength("correcthorse12"), Strength::Fair);
        assert_eq!(strength("correct horse battery staple"), Strength::Strong);
    }

    #[test]
    fn day_labels() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        assert_eq!(day_label(today, today), "Today");
        assert_eq!(
            day_label(NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(), today),
            "Yesterday"
        );
        assert_eq!(
            day_label(NaiveDate::from_ymd_opt(2026, 11, 3).unwrap(), today),
            "Tuesday 3 November 2026"
        );
    }

    #[test]
    fn ciphertext_is_grouped_and_cut() {
        assert_eq!(ciphertext_hex(&[0xde, 0xad, 0xbe, 0xef, 1]), "deadbeef 01");
        let long = vec![0u8; 1000];
        let hex = ciphertext_hex(&long);
        assert!(hex.ends_with("(1000 bytes in all)"), "{hex}");
    }
}
