//! Read queries behind `/api/v1/events` and `/api/v1/quarantine`: newest first, cursor paged.
//!
//! The cursor is the last `seq` (or quarantine `id`) examined; the next page asks for rows below
//! it. Paging stays correct while new rows arrive, because new rows only get larger seqs.
//! A filter on email, message id, custom id or campaign goes through the lookup index; the
//! others scan the journal by `seq`. Either way every row is re-parsed from `raw` by the same
//! parser the receiver used and checked against every filter, so the answer is exact.

use rusqlite::Connection;
use serde::Serialize;
use serde_json::value::RawValue;

use super::chunks::{self, StoredRaw};
use super::index::{LookupKey, part_of};
use super::postings;
use crate::event::{Event, parse_event};

/// The most rows one page may hold.
pub const MAX_LIMIT: usize = 1000;
/// A page also ends once its events' raw JSON (or the quarantined bodies) pass this many
/// bytes, whatever `limit` says: a thousand quarantined bodies of 1 MiB made one answer of
/// 6 GB (a NUL byte is six in JSON). The next page starts after the last row.
pub const PAGE_BYTES: usize = 8 << 20;
/// Candidate rows read per round trip while filling a page.
const CHUNK: usize = 500;

/// Filters of `GET /api/v1/events`; every one is optional and they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub email: Option<String>,
    pub message_id: Option<u64>,
    /// A numeric `mj_campaign_id`, or a `customcampaign` name (raw or decoded).
    pub campaign: Option<String>,
    pub event: Option<String>,
    pub custom_id: Option<String>,
    /// Bounds on the event's own `time`, Unix seconds, inclusive.
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: usize,
    /// Only rows with `seq` below this.
    pub before: Option<i64>,
}

impl EventFilter {
    /// The most selective indexed filter, if any. Values the index does not hold (a zero id,
    /// an empty string: test events) fall back to a scan.
    fn lookup(&self) -> Option<LookupKey> {
        let text = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        self.message_id
            .filter(|&id| id != 0)
            .map(LookupKey::MessageId)
            .or_else(|| text(&self.custom_id).map(LookupKey::CustomId))
            .or_else(|| text(&self.email).map(LookupKey::Email))
            .or_else(|| {
                text(&self.campaign)
                    .filter(|c| c != "0")
                    .map(LookupKey::Campaign)
            })
    }

    fn matches(&self, e: &Event) -> bool {
        let campaign_ok = self.campaign.as_deref().is_none_or(|c| {
            c.parse::<u64>().is_ok_and(|id| id == e.campaign_id)
                || e.custom_campaign.as_deref() == Some(c)
                || e.custom_campaign_decoded.as_deref() == Some(c)
        });
        campaign_ok
            && self.email.as_deref().is_none_or(|v| e.email == v)
            && self.message_id.is_none_or(|v| e.message_id.0 == v)
            && self.event.as_deref().is_none_or(|v| e.event_name == v)
            && self
                .custom_id
                .as_deref()
                .is_none_or(|v| e.custom_id.as_deref() == Some(v))
            && self.since.is_none_or(|t| e.time.is_some_and(|et| et >= t))
            && self.until.is_none_or(|t| e.time.is_some_and(|et| et <= t))
    }
}

/// One stored event as the API returns it: its position, its parsed fields, and `raw` exactly
/// as received.
#[derive(Debug, Serialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub received_at_ms: i64,
    #[serde(flatten)]
    pub event: Event,
    /// The event object exactly as Mailjet sent it.
    pub raw: Box<RawValue>,
}

#[derive(Debug, Serialize)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

pub fn events(conn: &Connection, f: &EventFilter) -> rusqlite::Result<EventPage> {
    let limit = f.limit.clamp(1, MAX_LIMIT);
    let lookup = f.lookup().map(|k| k.hash());
    let mut page = Vec::with_capacity(limit.min(CHUNK));
    let mut bytes = 0;
    let mut below = f.before.unwrap_or(i64::MAX);
    loop {
        let candidates = match lookup {
            Some(k) => lookup_candidates(conn, k, below)?,
            None => scan_candidates(conn, below)?,
        };
        for StoredRaw {
            seq,
            received_at_ms,
            raw,
        } in candidates.rows
        {
            let Ok(event) = parse_event(&raw) else {
                continue;
            };
            if !f.matches(&event) {
                continue;
            }
            let raw = RawValue::from_string(raw).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?;
            bytes += raw.get().len();
            page.push(StoredEvent {
                seq,
                received_at_ms,
                event,
                raw,
            });
            if page.len() == limit || bytes >= PAGE_BYTES {
                return Ok(EventPage {
                    events: page,
                    next_cursor: Some(seq.to_string()),
                });
            }
        }
        match candidates.next_below {
            Some(next) => below = next,
            None => {
                return Ok(EventPage {
                    events: page,
                    next_cursor: None,
                });
            }
        }
    }
}

/// One round of candidate rows, and where the next round starts (`None`: nothing older).
struct Candidates {
    rows: Vec<StoredRaw>,
    next_below: Option<i64>,
}

/// The next events in the journal, newest first.
fn scan_candidates(conn: &Connection, below: i64) -> rusqlite::Result<Candidates> {
    let rows = chunks::backward(conn, below, CHUNK)?;
    let next_below = (rows.len() == CHUNK)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    Ok(Candidates { rows, next_below })
}

/// The next events the lookup index points at, newest first: one seek per partition, from the
/// one holding `below - 1` down, until a round is full. A listed event that retention has
/// deleted is skipped by `by_seqs`.
fn lookup_candidates(conn: &Connection, k: i64, below: i64) -> rusqlite::Result<Candidates> {
    let bound = |sql: &str| -> rusqlite::Result<Option<i64>> {
        conn.prepare_cached(sql)?.query_row([], |r| r.get(0))
    };
    let (Some(lowest), Some(highest)) = (
        bound("SELECT min(part) FROM idx.lookup")?,
        bound("SELECT max(part) FROM idx.lookup")?,
    ) else {
        return Ok(Candidates {
            rows: Vec::new(),
            next_below: None,
        });
    };
    // In each partition, the key's lists newest first, from the one that may hold `below`
    // itself: lists never overlap, so only the oldest list ending at or above `below` can
    // hold events under it.
    let mut stmt = conn.prepare_cached(
        "SELECT last, seqs FROM idx.lookup WHERE part = ?1 AND k = ?2 AND last <= coalesce( \
           (SELECT min(last) FROM idx.lookup WHERE part = ?1 AND k = ?2 AND last >= ?3), ?3) \
         ORDER BY last DESC",
    )?;
    let mut seqs = Vec::new();
    let mut part = part_of(below.saturating_sub(1)).min(highest);
    while part >= lowest && seqs.len() < CHUNK {
        let mut lists = stmt.query(rusqlite::params![part, k, below])?;
        while let Some(list) = lists.next()? {
            let last: i64 = list.get(0)?;
            let gaps = list.get_ref(1)?.as_blob()?;
            let older = postings::seqs(last, gaps).filter(|&seq| seq < below);
            seqs.extend(older.take(CHUNK - seqs.len()));
            if seqs.len() == CHUNK {
                break;
            }
        }
        part -= 1;
    }
    let next_below = (seqs.len() == CHUNK)
        .then(|| seqs.last().copied())
        .flatten();
    Ok(Candidates {
        rows: chunks::by_seqs(conn, &seqs)?,
        next_below,
    })
}

/// Filters of `GET /api/v1/quarantine`.
#[derive(Debug, Clone, Default)]
pub struct QuarantineFilter {
    pub limit: usize,
    pub before: Option<i64>,
}

/// One quarantined body. `body` is the text when it is UTF-8, else `body_base64` holds it.
#[derive(Debug, Serialize)]
pub struct StoredQuarantine {
    pub id: i64,
    pub received_at_ms: i64,
    pub reason: String,
    pub route: String,
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    pub body_len: i64,
    pub truncated: bool,
}

#[derive(Debug, Serialize)]
pub struct QuarantinePage {
    pub quarantined: Vec<StoredQuarantine>,
    pub next_cursor: Option<String>,
}

pub fn quarantine(conn: &Connection, f: &QuarantineFilter) -> rusqlite::Result<QuarantinePage> {
    use base64::Engine;
    let limit = f.limit.clamp(1, MAX_LIMIT);
    let mut stmt = conn.prepare(
        "SELECT id, received_at_ms, reason, route, content_type, body, body_len, truncated \
         FROM quarantine WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![f.before.unwrap_or(i64::MAX), limit as i64],
        |r| {
            let bytes: Vec<u8> = r.get(5)?;
            let (body, body_base64) = match String::from_utf8(bytes) {
                Ok(text) => (Some(text), None),
                Err(e) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
                ),
            };
            Ok(StoredQuarantine {
                id: r.get(0)?,
                received_at_ms: r.get(1)?,
                reason: r.get(2)?,
                route: r.get(3)?,
                content_type: r.get(4)?,
                body,
                body_base64,
                body_len: r.get(6)?,
                truncated: r.get(7)?,
            })
        },
    )?;
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut full = false;
    for row in rows {
        let row = row?;
        bytes += row.body.as_ref().map_or(0, String::len)
            + row.body_base64.as_ref().map_or(0, String::len);
        out.push(row);
        if out.len() == limit || bytes >= PAGE_BYTES {
            full = true;
            break;
        }
    }
    let rows = out;
    let next_cursor = full
        .then(|| rows.last().map(|q| q.id.to_string()))
        .flatten();
    Ok(QuarantinePage {
        quarantined: rows,
        next_cursor,
    })
}
