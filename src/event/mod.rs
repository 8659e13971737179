//! The domain types of one Mailjet event, and the edge that builds them.
//!
//! Mailjet's payloads drift: integers arrive as `""`, booleans as `"true"`, keys go missing and
//! ids exceed 2^53 (see `shared/mailjet/EVENTS.md`). That mess is absorbed once, in [`parse`],
//! and the rest of the program sees only the clean types defined here: an [`Event`] whose
//! [`MessageId`] is an exact `u64` and whose [`EventKind`] is a closed set plus `Unknown`.

mod brief;
mod parse;
mod rfc2047;

#[cfg(test)]
pub use brief::owned_brief;
pub use brief::{Brief, BriefAt, parse_brief, parse_brief_array};

pub use parse::{BodyItem, SplitBody, parse_event, parse_event_array, split_body};
pub use rfc2047::decode as decode_rfc2047;

/// Length of a [`DedupKey`]: event time (4 bytes), `MessageID` (8), hash of the rest (8).
pub const DEDUP_KEY_LEN: usize = 20;

/// What the journal deduplicates on; see [`Event::dedup_key`].
pub type DedupKey = [u8; DEDUP_KEY_LEN];

use serde::Serialize;

/// The seven documented event types, plus `Unknown` for anything else (legacy `typofix`, future
/// types). Unknown events are kept and counted, never rejected: Mailjet would retry them forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Sent,
    Open,
    Click,
    Bounce,
    Blocked,
    Spam,
    Unsub,
    #[default]
    Unknown,
}

impl EventKind {
    /// Every kind, in a stable order, for counters indexed by kind.
    pub const ALL: [EventKind; 8] = [
        EventKind::Sent,
        EventKind::Open,
        EventKind::Click,
        EventKind::Bounce,
        EventKind::Blocked,
        EventKind::Spam,
        EventKind::Unsub,
        EventKind::Unknown,
    ];

    /// Maps Mailjet's `event` string; anything unrecognised is `Unknown`.
    pub fn from_name(name: &str) -> EventKind {
        match name {
            "sent" => EventKind::Sent,
            "open" => EventKind::Open,
            "click" => EventKind::Click,
            "bounce" => EventKind::Bounce,
            "blocked" => EventKind::Blocked,
            "spam" => EventKind::Spam,
            "unsub" => EventKind::Unsub,
            _ => EventKind::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Sent => "sent",
            EventKind::Open => "open",
            EventKind::Click => "click",
            EventKind::Bounce => "bounce",
            EventKind::Blocked => "blocked",
            EventKind::Spam => "spam",
            EventKind::Unsub => "unsub",
            EventKind::Unknown => "unknown",
        }
    }

    /// Position in [`EventKind::ALL`], for array-backed counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Mailjet's `MessageID`. Routinely above 2^53, so it is never allowed near a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
#[serde(transparent)]
pub struct MessageId(pub u64);

/// One event as Mailjet described it, with the type drift already resolved.
///
/// Optional text fields are `None` when the key was absent or `null`, and `Some("")` when Mailjet
/// sent an empty string, so the stored row says what arrived. It serializes as the API shows
/// it: `event` is the name as received, ids are exact integers.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Event {
    /// Parsed `event`; `Unknown` keeps its original spelling in `event_name`.
    #[serde(skip)]
    pub kind: EventKind,
    /// The `event` string exactly as received.
    #[serde(rename = "event")]
    pub event_name: String,
    /// Mailjet's `time`, Unix seconds. `None` only when the key was absent.
    pub time: Option<i64>,
    pub message_id: MessageId,
    pub message_guid: Option<String>,
    pub email: String,
    /// `mj_campaign_id`; 0 means none.
    pub campaign_id: u64,
    pub contact_id: u64,
    /// `customcampaign` exactly as received (possibly RFC 2047 encoded).
    pub custom_campaign: Option<String>,
    /// `customcampaign` with RFC 2047 encoded words decoded; equal to the raw form otherwise.
    pub custom_campaign_decoded: Option<String>,
    pub custom_id: Option<String>,
    pub payload: Option<String>,
    pub blocked: Option<bool>,
    pub hard_bounce: Option<bool>,
    pub error_related_to: Option<String>,
    pub error: Option<String>,
    pub comment: Option<String>,
    pub smtp_reply: Option<String>,
    pub url: Option<String>,
    pub ip: Option<String>,
    pub geo: Option<String>,
    pub agent: Option<String>,
    pub source: Option<String>,
    pub list_id: Option<u64>,
}

impl Event {
    /// The deduplication key. Mailjet events carry no id and retries resend identical bodies, so
    /// the key is derived from what identifies an occurrence: (`event`, `time`, `MessageID`,
    /// `email`, `url`). Two clicks on one link by one recipient within the same second collapse
    /// into one, which is the price of exactly-once counting across retries.
    ///
    /// Layout: the event's `time` as 4 big-endian bytes, the `MessageID` as 8 big-endian bytes,
    /// then 8 bytes of xxh3-64 over the length-prefixed fields. The key sorts by time, then by
    /// message, so the dedup table's inserts stay next to each other: events arrive roughly in
    /// time order, and a sending burst's `sent` events (the bulk of the traffic) carry
    /// increasing `MessageID`s. With a hash right after the time, every event of the current
    /// second went to a random leaf of that second's range, and a commit rewrote hundreds of
    /// pages (measured: 120,000 against 250,000–300,000 events/s in 100-event batches timed
    /// now). The hash is stable across releases and platforms, unlike std's `DefaultHasher`.
    pub fn dedup_key(&self) -> DedupKey {
        dedup_key(
            &self.event_name,
            self.time,
            self.message_id.0,
            &self.email,
            self.url.as_deref().unwrap_or(""),
        )
    }
}

/// The key behind [`Event::dedup_key`], from the five fields that identify an occurrence.
pub(crate) fn dedup_key(
    event_name: &str,
    time: Option<i64>,
    message_id: u64,
    email: &str,
    url: &str,
) -> DedupKey {
    let fields: [&[u8]; 5] = [
        event_name.as_bytes(),
        &time.unwrap_or(i64::MIN).to_le_bytes(),
        &message_id.to_le_bytes(),
        email.as_bytes(),
        url.as_bytes(),
    ];
    let len: usize = fields.iter().map(|f| 4 + f.len()).sum();
    // The hashed text is usually well under 256 bytes: build it on the stack, since this runs
    // for every event on the request path. A longer one (a long click URL) goes to the heap.
    let mut stack = [0u8; 256];
    let mut heap = Vec::new();
    let buf = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap[..]
    };
    let mut at = 0;
    for field in fields {
        buf[at..at + 4].copy_from_slice(&(field.len() as u32).to_le_bytes());
        buf[at + 4..at + 4 + field.len()].copy_from_slice(field);
        at += 4 + field.len();
    }
    let hash = xxhash_rust::xxh3::xxh3_64(buf).to_be_bytes();
    let secs = time.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32;
    let mut key = [0u8; DEDUP_KEY_LEN];
    key[..4].copy_from_slice(&secs.to_be_bytes());
    key[4..12].copy_from_slice(&message_id.to_be_bytes());
    key[12..].copy_from_slice(&hash);
    key
}

/// The Mailjet fixtures, for the parsers' tests: beside the repository, or where
/// `BOUNCEWATCH_SHARED_DIR` says (as in `tests/`).
#[cfg(test)]
pub(crate) fn fixture_files() -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    let shared = std::env::var_os("BOUNCEWATCH_SHARED_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let mut out = Vec::new();
    walk(&shared.join("mailjet/fixtures"), &mut out);
    out
}

/// Every event the receiver accepts from the fixtures: its file and its exact text.
#[cfg(test)]
pub(crate) fn fixture_events() -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    for path in fixture_files() {
        let body = std::fs::read(&path).unwrap();
        if let SplitBody::Items(items) = split_body(&body) {
            for item in items {
                if let BodyItem::Event { raw, .. } = item {
                    out.push((path.clone(), raw.to_string()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::dedup_key;

    fn hex(key: &[u8]) -> String {
        key.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Keys are stored: the same five fields must give the same bytes in every release, or a
    /// retry after an upgrade would be stored twice.
    #[test]
    fn a_dedup_key_is_the_same_in_every_release() {
        let short = dedup_key(
            "open",
            Some(1_700_000_000),
            19_421_777_835_146_490,
            "a@b.c",
            "",
        );
        let long_url = "https://example.com/".to_string() + &"x".repeat(600);
        let long = dedup_key("click", None, u64::MAX, "someone@example.com", &long_url);
        assert_eq!(hex(&short), "6553f1000045000108c53cfac953fa48d88f1ae0");
        assert_eq!(hex(&long), "00000000ffffffffffffffff990a9b2db2f7714b");
    }
}
