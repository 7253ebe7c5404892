//! Small text helpers: times and days in the local time zone, passphrase strength, peer ids,
//! ciphertext, sizes and rates for display.

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

/// A size in binary units: `0 B`, `512 B`, `1.5 KiB`, `3.0 MiB`, `1.2 GiB`.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // f64 loses precision only in digits that are not shown.
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    // 1023.96 KiB would print as "1024.0 KiB": show it as the next unit instead.
    if value >= 1023.95 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A transfer rate: `850 B/s`, `2.4 MiB/s`.
pub(crate) fn human_rate(bytes_per_sec: f64) -> String {
    let whole = if bytes_per_sec.is_finite() && bytes_per_sec > 0.0 {
        // Saturates for absurd values; a rate is never near u64::MAX.
        bytes_per_sec.round() as u64
    } else {
        0
    };
    format!("{}/s", human_size(whole))
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

    #[test]
    fn sizes_and_rates_in_binary_units() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(human_size(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_size(1 << 30), "1.0 GiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
        assert_eq!(human_rate(850.2), "850 B/s");
        assert_eq!(human_rate(2.5 * 1024.0 * 1024.0), "2.5 MiB/s");
        assert_eq!(human_rate(f64::NAN), "0 B/s");
    }
}
