//! Reading events back out of chunk rows (see `schema.rs` for why events are stored in chunks).
//!
//! A chunk's `events` column is a JSON array of raw event objects; the event at array index `i`
//! has `seq = first_seq + i`. Splitting uses `RawValue`, so each event comes back byte for byte
//! as Mailjet sent it.

use rusqlite::{Connection, params};
use serde_json::value::RawValue;

/// A chunk is closed once its text would pass this size, so reading one event by `seq` never
/// loads more than about this much.
pub const MAX_CHUNK_BYTES: usize = 256 * 1024;

/// Chunk rows fetched per query while walking the journal.
const CHUNKS_PER_QUERY: i64 = 64;

/// One stored event: its position, when it was received, and its exact JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRaw {
    pub seq: i64,
    pub received_at_ms: i64,
    pub raw: String,
}

struct Chunk {
    first_seq: i64,
    received_at_ms: i64,
    events: String,
}

impl Chunk {
    fn from_row(r: &rusqlite::Row) -> rusqlite::Result<Chunk> {
        Ok(Chunk {
            first_seq: r.get(0)?,
            received_at_ms: r.get(1)?,
            events: r.get(2)?,
        })
    }

    /// The chunk's events with their seqs, in order.
    fn split(&self) -> rusqlite::Result<Vec<StoredRaw>> {
        let items: Vec<&RawValue> = serde_json::from_str(&self.events).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?;
        Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, raw)| StoredRaw {
                seq: self.first_seq + i as i64,
                received_at_ms: self.received_at_ms,
                raw: raw.get().to_string(),
            })
            .collect())
    }
}

/// Up to `limit` events with `seq > after`, oldest first.
pub fn forward(conn: &Connection, after: i64, limit: usize) -> rusqlite::Result<Vec<StoredRaw>> {
    let mut out = Vec::new();
    let mut from = after;
    loop {
        let chunks = {
            let mut stmt = conn.prepare_cached(
                "SELECT first_seq, received_at_ms, events FROM chunks \
                 WHERE first_seq >= coalesce((SELECT max(first_seq) FROM chunks WHERE first_seq <= ?1), 0) \
                 ORDER BY first_seq LIMIT ?2",
            )?;
            stmt.query_map(params![from + 1, CHUNKS_PER_QUERY], Chunk::from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        let exhausted = (chunks.len() as i64) < CHUNKS_PER_QUERY;
        for chunk in &chunks {
            for event in chunk.split()? {
                if event.seq > from {
                    from = event.seq;
                    out.push(event);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        if exhausted {
            return Ok(out);
        }
    }
}

/// Up to `limit` events with `seq < below`, newest first.
pub fn backward(conn: &Connection, below: i64, limit: usize) -> rusqlite::Result<Vec<StoredRaw>> {
    let mut out = Vec::new();
    let mut under = below;
    loop {
        let chunks = {
            let mut stmt = conn.prepare_cached(
                "SELECT first_seq, received_at_ms, events FROM chunks \
                 WHERE first_seq < ?1 ORDER BY first_seq DESC LIMIT ?2",
            )?;
            stmt.query_map(params![under, CHUNKS_PER_QUERY], Chunk::from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        let exhausted = (chunks.len() as i64) < CHUNKS_PER_QUERY;
        for chunk in &chunks {
            for event in chunk.split()?.into_iter().rev() {
                if event.seq < under {
                    under = event.seq;
                    out.push(event);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        if exhausted {
            return Ok(out);
        }
    }
}

/// The events at `seqs`, in the order given. A seq that no longer exists (retention) is skipped.
/// Consecutive seqs from one chunk read and split it once.
pub fn by_seqs(conn: &Connection, seqs: &[i64]) -> rusqlite::Result<Vec<StoredRaw>> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_seq, received_at_ms, events FROM chunks \
         WHERE first_seq <= ?1 ORDER BY first_seq DESC LIMIT 1",
    )?;
    let mut current: Vec<StoredRaw> = Vec::new();
    let mut out = Vec::with_capacity(seqs.len());
    for &seq in seqs {
        let covered = |events: &[StoredRaw]| {
            events.first().is_some_and(|f| f.seq <= seq)
                && events.last().is_some_and(|l| l.seq >= seq)
        };
        if !covered(&current) {
            let chunk = stmt.query_map([seq], Chunk::from_row)?.next().transpose()?;
            current = match chunk {
                Some(chunk) => chunk.split()?,
                None => Vec::new(),
            };
        }
        if covered(&current) {
            let first = current[0].seq;
            out.push(current[(seq - first) as usize].clone());
        }
    }
    Ok(out)
}

/// A read-only cursor over the journal, for consumers that tail it by `seq` on their own
/// thread (the pipeline). WAL lets it read while the writer writes.
pub struct Tail {
    conn: Connection,
}

impl Tail {
    pub fn open(dir: &std::path::Path) -> Result<Tail, super::JournalError> {
        let path = dir.join("journal.sqlite3");
        let conn = super::schema::open_reader(&path)
            .map_err(|source| super::JournalError::Open { path, source })?;
        Ok(Tail { conn })
    }

    /// Up to `limit` events with `seq > after`, oldest first.
    pub fn after(&self, after: i64, limit: usize) -> rusqlite::Result<Vec<StoredRaw>> {
        forward(&self.conn, after, limit)
    }
}
