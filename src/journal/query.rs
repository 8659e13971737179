//! Read queries behind `/api/v1/events` and `/api/v1/quarantine`: newest first, cursor paged.
//!
//! The cursor is the last `seq` (or quarantine `id`) of the page; the next page asks for rows
//! below it. Paging stays correct while new rows arrive, because new rows only get larger seqs.

use rusqlite::types::Value;
use rusqlite::{Connection, Row};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{from_sql_u64, to_sql_u64};

/// The most rows one page may hold.
pub const MAX_LIMIT: usize = 1000;

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

/// One stored event as the API returns it.
#[derive(Debug, Serialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub received_at_ms: i64,
    pub event: String,
    pub time: Option<i64>,
    pub message_id: u64,
    pub message_guid: Option<String>,
    pub email: String,
    pub campaign_id: u64,
    pub contact_id: u64,
    pub custom_campaign: Option<String>,
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
    /// The event object exactly as Mailjet sent it.
    pub raw: Box<RawValue>,
}

#[derive(Debug, Serialize)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

const EVENT_COLUMNS: &str = "seq, received_at_ms, event, time, message_id, message_guid, email, \
    campaign_id, contact_id, custom_campaign, custom_campaign_decoded, custom_id, payload, \
    blocked, hard_bounce, error_related_to, error, comment, smtp_reply, url, ip, geo, agent, \
    source, list_id, raw";

pub fn events(conn: &Connection, f: &EventFilter) -> rusqlite::Result<EventPage> {
    let mut clauses: Vec<&str> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    let mut add = |clause: &'static str, values: &[Value]| {
        clauses.push(clause);
        args.extend_from_slice(values);
    };
    if let Some(v) = &f.email {
        add("email = ?", &[Value::Text(v.clone())]);
    }
    if let Some(v) = f.message_id {
        add("message_id = ?", &[Value::Integer(to_sql_u64(v))]);
    }
    if let Some(v) = &f.campaign {
        match v.parse::<u64>() {
            Ok(id) => add("campaign_id = ?", &[Value::Integer(to_sql_u64(id))]),
            Err(_) => add(
                "(custom_campaign_decoded = ? OR custom_campaign = ?)",
                &[Value::Text(v.clone()), Value::Text(v.clone())],
            ),
        }
    }
    if let Some(v) = &f.event {
        add("event = ?", &[Value::Text(v.clone())]);
    }
    if let Some(v) = &f.custom_id {
        add("custom_id = ?", &[Value::Text(v.clone())]);
    }
    if let Some(v) = f.since {
        add("time >= ?", &[Value::Integer(v)]);
    }
    if let Some(v) = f.until {
        add("time <= ?", &[Value::Integer(v)]);
    }
    if let Some(v) = f.before {
        add("seq < ?", &[Value::Integer(v)]);
    }
    let limit = f.limit.clamp(1, MAX_LIMIT);
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events {} ORDER BY seq DESC LIMIT {limit}",
        if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        }
    );
    let mut stmt = conn.prepare(&sql)?;
    let events = stmt
        .query_map(rusqlite::params_from_iter(args), event_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next_cursor = (events.len() == limit)
        .then(|| events.last().map(|e| e.seq.to_string()))
        .flatten();
    Ok(EventPage {
        events,
        next_cursor,
    })
}

fn event_row(r: &Row) -> rusqlite::Result<StoredEvent> {
    let raw: String = r.get(25)?;
    let raw = RawValue::from_string(raw).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(25, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(StoredEvent {
        seq: r.get(0)?,
        received_at_ms: r.get(1)?,
        event: r.get(2)?,
        time: r.get(3)?,
        message_id: from_sql_u64(r.get(4)?),
        message_guid: r.get(5)?,
        email: r.get(6)?,
        campaign_id: from_sql_u64(r.get(7)?),
        contact_id: from_sql_u64(r.get(8)?),
        custom_campaign: r.get(9)?,
        custom_campaign_decoded: r.get(10)?,
        custom_id: r.get(11)?,
        payload: r.get(12)?,
        blocked: r.get(13)?,
        hard_bounce: r.get(14)?,
        error_related_to: r.get(15)?,
        error: r.get(16)?,
        comment: r.get(17)?,
        smtp_reply: r.get(18)?,
        url: r.get(19)?,
        ip: r.get(20)?,
        geo: r.get(21)?,
        agent: r.get(22)?,
        source: r.get(23)?,
        list_id: r.get::<_, Option<i64>>(24)?.map(from_sql_u64),
        raw,
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
    let rows = stmt
        .query_map(
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
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next_cursor = (rows.len() == limit)
        .then(|| rows.last().map(|q| q.id.to_string()))
        .flatten();
    Ok(QuarantinePage {
        quarantined: rows,
        next_cursor,
    })
}
