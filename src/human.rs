//! What the client commands print for a person (without `--json`): tables, sentences and
//! event lines, made from the daemon's typed replies.

use encrypto_node::rpc::replies::{
    ContactInfo, Event, EventNote, FileInfo, FileState, Found, Message, Peer, Way,
};

/// A table with a header and columns padded to their widest cell.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut text = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        text.push_str(&line(row.clone()));
    }
    text
}

/// The first group of a fingerprint, or `-` when there is none.
fn short_fingerprint(fingerprint: Option<&str>) -> String {
    fingerprint
        .and_then(|f| f.split(' ').next())
        .map_or_else(|| "-".to_owned(), |first| format!("{first}…"))
}

fn yes_no(b: bool) -> String {
    let word = if b { "yes" } else { "no" };
    word.to_owned()
}

/// A name that may be unknown yet.
fn name_or_unknown(name: Option<&str>) -> String {
    name.unwrap_or("?").to_owned()
}

pub(crate) fn peers(items: &[Peer]) -> String {
    if items.is_empty() {
        return "No peers yet: none discovered, none connected.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|p| {
            vec![
                name_or_unknown(p.name.as_deref()),
                p.peer_id.clone(),
                p.via.clone(),
                yes_no(p.connected),
                p.addrs.first().map_or("-", String::as_str).to_owned(),
            ]
        })
        .collect();
    table(&["NAME", "PEER ID", "VIA", "CONNECTED", "ADDRESS"], &rows)
}

pub(crate) fn contacts(items: &[ContactInfo]) -> String {
    if items.is_empty() {
        return "No contacts yet: add one with `encrypto add /ip4/ADDRESS/tcp/PORT/p2p/PEER_ID`.\n"
            .to_owned();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|c| {
            let verified = if c.key_changed {
                "KEY CHANGED".to_owned()
            } else {
                yes_no(c.verified)
            };
            vec![
                c.name.clone(),
                c.peer_id.clone(),
                c.cipher.as_str().to_owned(),
                verified,
                yes_no(c.relay),
                short_fingerprint(c.fingerprint.as_deref()),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "PEER ID",
            "CIPHER",
            "VERIFIED",
            "RELAY",
            "FINGERPRINT",
        ],
        &rows,
    )
}

pub(crate) fn search(name: &str, items: &[Found]) -> String {
    if items.is_empty() {
        return format!("No one named \"{name}\" is known here yet.\n");
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|p| {
            let source = match p.source {
                encrypto_node::rpc::params::Source::Local => "local",
                encrypto_node::rpc::params::Source::Dht => "dht",
            };
            vec![
                name_or_unknown(p.name.as_deref()),
                short_fingerprint(p.fingerprint.as_deref()),
                p.peer_id.clone(),
                source.to_owned(),
            ]
        })
        .collect();
    table(&["NAME", "FINGERPRINT", "PEER ID", "SOURCE"], &rows)
}

pub(crate) fn history(to: &str, items: &[Message]) -> String {
    if items.is_empty() {
        return format!("No messages with {to}.\n");
    }
    let mut text = String::new();
    for m in items {
        let time = format_utc(m.timestamp);
        let who = match m.direction {
            Way::Out => "me",
            Way::In => to,
        };
        let body = match &m.text {
            Some(t) => t.clone(),
            None => format!(
                "[file {} ({}), id {}]",
                m.name.as_deref().unwrap_or(""),
                size(m.size.unwrap_or(0)),
                m.file_id.as_deref().unwrap_or("")
            ),
        };
        let status = match (m.direction, m.status) {
            (Way::Out, encrypto_node::rpc::replies::SendStatus::Queued) => ", queued",
            (Way::Out, encrypto_node::rpc::replies::SendStatus::Delivered) => ", delivered",
            (Way::In, _) => "",
        };
        text.push_str(&format!(
            "[{time}] {who}: {body}  ({}{status})\n",
            m.cipher.as_str()
        ));
    }
    text
}

/// `1.5 MiB` for a byte count.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `in`, `out` or `relay`.
fn part(part: encrypto_node::rpc::replies::Part) -> &'static str {
    use encrypto_node::rpc::replies::Part;
    match part {
        Part::In => "in",
        Part::Out => "out",
        Part::Relay => "relay",
    }
}

pub(crate) fn files(items: &[FileInfo]) -> String {
    if items.is_empty() {
        return "No file transfers.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|f| {
            let percent = (f.bytes_done * 100).checked_div(f.size).unwrap_or(100);
            let state = match f.state {
                FileState::Offered => "offered".to_owned(),
                FileState::Transferring => format!("transferring {percent}%"),
                FileState::Complete => "complete".to_owned(),
                FileState::Failed => format!("failed: {}", f.error.as_deref().unwrap_or("")),
            };
            let name = if f.name.is_empty() {
                "(sealed, held for the recipient)".to_owned()
            } else {
                f.name.clone()
            };
            vec![
                f.file_id.clone(),
                part(f.direction).to_owned(),
                name,
                size(f.size),
                state,
                f.path.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["FILE ID", "DIR", "NAME", "SIZE", "STATE", "PATH"], &rows)
}

/// One line for a person watching events.
pub(crate) fn describe_event(note: &EventNote) -> String {
    let time = format_utc(note.timestamp);
    let what = match &note.event {
        Event::Message {
            from, text, cipher, ..
        } => format!(
            "message from {from}: {} ({})",
            text.as_deref().unwrap_or("[file]"),
            cipher.as_str()
        ),
        Event::Delivered { id, to } => format!("delivered {id} to {to}"),
        Event::PeerDiscovered { peer_id, via } => format!("discovered {peer_id} via {via}"),
        Event::PeerConnected { peer_id } => format!("connected to {peer_id}"),
        Event::PeerDisconnected { peer_id } => format!("disconnected from {peer_id}"),
        Event::CipherChanged { peer, cipher, by } => format!(
            "chat with {peer} now uses {} (changed by {by})",
            cipher.as_str()
        ),
        Event::ChatDeleted { peer, by, .. } => format!("chat with {peer} deleted (by {by})"),
        Event::KeyChanged { peer_id } => format!(
            "WARNING: the keys of {peer_id} changed; compare safety numbers, then `encrypto verify`"
        ),
        Event::PeerIncompatible { peer_id } => format!(
            "{peer_id} runs another version of encrypto: messages to it stay queued until one of \
             you updates"
        ),
        Event::FileOffered {
            file_id,
            from,
            name,
            size: bytes,
        } => format!("{from} offers {name} ({}); file id {file_id}", size(*bytes)),
        Event::FileProgress {
            file_id,
            bytes_done,
            size: total,
            ..
        } => format!("file {file_id}: {} of {}", size(*bytes_done), size(*total)),
        Event::FileComplete { file_id, path, .. } => format!(
            "file {file_id} complete{}",
            path.as_deref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        ),
        Event::FileFailed {
            file_id, reason, ..
        } => format!("file {file_id} failed: {reason}"),
        Event::ProfileVerified { peer_id, name } => {
            format!("profile_verified: {peer_id} is {name}")
        }
        Event::Listening { addr } => format!("listening: {addr}"),
        Event::HolePunch { peer_id, direct } => {
            format!("hole_punch: {peer_id} direct={direct}")
        }
        Event::Rejected { peer_id, reason } => format!("rejected: {peer_id}: {reason}"),
        Event::Lagged { missed } => format!("lagged: {missed} events missed"),
        other => format!("{other:?}"),
    };
    format!("[{time}] {what}")
}

/// `YYYY-MM-DD HH:MM:SS` in UTC for Unix milliseconds.
pub(crate) fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_right_across_eras_and_leap_days() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_798_761_599_000), "2026-12-31 23:59:59");
    }

    #[test]
    fn tables_pad_columns() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A     BB\nlong  x\n");
    }
}
