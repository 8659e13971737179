//! Reading events back out of chunk rows (see `schema.rs` for why events are stored in chunks).
//!
//! A chunk's `events` column is a JSON array of raw event objects; the event at array index `i`
//! has `seq = first_seq + i`. Splitting uses `RawValue`, so each event comes back byte for byte
//! as Mailjet sent it.

use rusqlite::{Connection, OptionalExtension};
use serde_json::value::RawValue;

use crate::event::{
    Brief, DedupKey, Event, parse_brief, parse_brief_array, parse_event, parse_event_array,
};

/// A chunk is closed once its text would pass this size, so reading one event by `seq` never
/// loads more than about this much.
pub const MAX_CHUNK_BYTES: usize = 256 * 1024;

/// Chunk rows fetched per query while walking the journal. It is written into the SQL as a
/// literal: SQLite re-prepares a statement whose `LIMIT` is bound whenever a new value is bound,
/// and rusqlite's statement cache clears the bindings each time, so a bound `LIMIT` meant a
/// fresh prepare per walk (7 % of the pipeline's instructions).
macro_rules! chunks_per_query {
    () => {
        64
    };
}
const CHUNKS_PER_QUERY: i64 = chunks_per_query!();

/// The walk from the chunk holding `?1`, in order.
const FORWARD_SQL: &str = concat!(
    "SELECT first_seq, count, received_at_ms, events FROM chunks ",
    "WHERE first_seq >= coalesce((SELECT max(first_seq) FROM chunks WHERE first_seq <= ?1), 0) ",
    "ORDER BY first_seq LIMIT ",
    chunks_per_query!()
);

/// One stored event: its position, when it was received, and its exact JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRaw {
    pub seq: i64,
    pub received_at_ms: i64,
    pub raw: String,
}

/// A chunk row copied out of SQLite, for the query API, which reads a few chunks and keeps
/// their events.
struct Chunk {
    first_seq: i64,
    count: i64,
    received_at_ms: i64,
    events: Vec<u8>,
}

impl Chunk {
    fn from_row(r: &rusqlite::Row) -> rusqlite::Result<Chunk> {
        Ok(Chunk {
            first_seq: r.get(0)?,
            count: r.get(1)?,
            received_at_ms: r.get(2)?,
            events: r.get_ref(3)?.as_bytes()?.to_vec(),
        })
    }

    /// The seqs the chunk holds.
    fn seqs(&self) -> std::ops::Range<i64> {
        self.first_seq..self.first_seq + self.count
    }

    /// The chunk's events with their seqs, in order; none, with an error in the log, for a
    /// chunk damaged on disk (see [`ChunkRef::parse`]).
    fn split(&self) -> Vec<StoredRaw> {
        let chunk = ChunkRef {
            first_seq: self.first_seq,
            count: self.count,
            received_at_ms: self.received_at_ms,
            events: &self.events,
        };
        chunk
            .parse(raw_array, |one| Ok(one.to_string()))
            .into_iter()
            .map(|(seq, raw)| StoredRaw {
                seq,
                received_at_ms: self.received_at_ms,
                raw,
            })
            .collect()
    }
}

/// The exact text of each element of a chunk's array.
fn raw_array(text: &str) -> Result<Vec<String>, String> {
    serde_json::from_str::<Vec<&RawValue>>(text)
        .map(|raws| raws.into_iter().map(|raw| raw.get().to_string()).collect())
        .map_err(|e| e.to_string())
}

/// One stored event, parsed in full: what the backtest replays.
#[derive(Debug)]
pub struct TailedEvent {
    pub seq: i64,
    pub received_at_ms: i64,
    pub event: Event,
}

/// One stored event's [`Brief`], borrowed from its chunk: what the pipeline and the lookup
/// indexer consume.
#[derive(Debug)]
pub struct TailedBrief<'a> {
    pub seq: i64,
    pub received_at_ms: i64,
    pub brief: Brief<'a>,
}

/// A chunk row as SQLite hands it out. Its text is borrowed from the statement, so walking the
/// journal copies no chunk out of SQLite.
struct ChunkRef<'a> {
    first_seq: i64,
    count: i64,
    received_at_ms: i64,
    events: &'a [u8],
}

impl<'a> ChunkRef<'a> {
    /// Borrows a row selected as `first_seq, count, received_at_ms, events`.
    fn read(row: &'a rusqlite::Row<'_>) -> rusqlite::Result<ChunkRef<'a>> {
        Ok(ChunkRef {
            first_seq: row.get(0)?,
            count: row.get(1)?,
            received_at_ms: row.get(2)?,
            events: row.get_ref(3)?.as_bytes()?,
        })
    }
}

impl ChunkRef<'_> {
    /// Parses the chunk with `parse_array` in one pass; when one element fails (a parser change),
    /// parses element by element with `parse_one`, and skips the ones that fail with a warning
    /// rather than stopping the consumer.
    ///
    /// The text is checked to be UTF-8 once, here, so that the parsers borrow its strings
    /// unchecked: checking each string as it is read was a seventh of the pipeline's CPU.
    fn parse<'a, T>(
        &'a self,
        parse_array: impl Fn(&'a str) -> Result<Vec<T>, String>,
        parse_one: impl Fn(&'a str) -> Result<T, String>,
    ) -> Vec<(i64, T)> {
        let text = match std::str::from_utf8(self.events) {
            Ok(text) => text,
            Err(e) => return self.damaged(&e),
        };
        if let Ok(items) = parse_array(text) {
            return self.numbered(items.into_iter().map(Some));
        }
        match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(raws) => self.numbered(raws.into_iter().map(|raw| parse_one(raw.get()).ok())),
            Err(e) => self.damaged(&e),
        }
    }

    /// None of the events of a chunk that no longer reads, and an error in the log.
    fn damaged<T>(&self, error: &dyn std::fmt::Display) -> Vec<(i64, T)> {
        tracing::error!(
            first_seq = self.first_seq,
            count = self.count,
            %error,
            "journal chunk is damaged and no longer parses; its events are skipped"
        );
        Vec::new()
    }

    fn numbered<T>(&self, items: impl Iterator<Item = Option<T>>) -> Vec<(i64, T)> {
        items
            .enumerate()
            .filter_map(|(i, item)| {
                let seq = self.first_seq + i as i64;
                if item.is_none() {
                    tracing::warn!(seq, "journal event no longer parses; skipped");
                }
                item.map(|item| (seq, item))
            })
            .collect()
    }
}

/// Up to `limit` fully parsed events with `seq > after`, oldest first.
pub fn forward_events(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<TailedEvent>> {
    let mut out = Vec::new();
    walk_forward(conn, after, limit, |chunk, range| {
        for (seq, event) in chunk.parse(parse_event_array, parse_event) {
            if range.contains(&seq) {
                out.push(TailedEvent {
                    seq,
                    received_at_ms: chunk.received_at_ms,
                    event,
                });
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Hands every stored event with `seq > after`, fully parsed, to `visit`, oldest first, one
/// chunk in memory at a time: what dedup keys are recomputed from. Events that no longer parse
/// are skipped (and logged).
pub fn each_event(
    conn: &Connection,
    after: i64,
    mut visit: impl FnMut(i64, &Event) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    walk_forward(conn, after, 1 << 48, |chunk, range| {
        for (seq, event) in chunk.parse(parse_event_array, parse_event) {
            if range.contains(&seq) {
                visit(seq, &event)?;
            }
        }
        Ok(())
    })
}

/// Hands the briefs of up to `limit` events with `seq > after` to `consume`, oldest first, one
/// chunk at a time; returns the last `seq` passed, if any. It may be past the last event handed
/// over: events that no longer parse are skipped (and logged), not retried.
pub fn forward_briefs(
    conn: &Connection,
    after: i64,
    limit: usize,
    mut consume: impl FnMut(&[TailedBrief<'_>]),
) -> rusqlite::Result<Option<i64>> {
    let mut last = None;
    walk_forward(conn, after, limit, |chunk, range| {
        let briefs: Vec<TailedBrief> = chunk
            .parse(parse_brief_array, parse_brief)
            .into_iter()
            .filter(|(seq, _)| range.contains(seq))
            .map(|(seq, brief)| TailedBrief {
                seq,
                received_at_ms: chunk.received_at_ms,
                brief,
            })
            .collect();
        consume(&briefs);
        last = Some(range.end - 1);
        Ok(())
    })?;
    Ok(last)
}

/// [`forward_briefs`] for a thread that tails the journal as `reader`: served from `recent`
/// when it holds `after + 1`, from SQLite otherwise.
pub fn newest_briefs(
    conn: &Connection,
    recent: Option<&super::Recent>,
    reader: super::Reader,
    after: i64,
    limit: usize,
    mut consume: impl FnMut(&[TailedBrief<'_>]),
) -> rusqlite::Result<Option<i64>> {
    if let Some(recent) = recent
        && let Some(last) = recent.forward_briefs(reader, after, limit, &mut consume)
    {
        return Ok(last);
    }
    forward_briefs(conn, after, limit, consume)
}

/// Walks chunks from the one holding `after + 1`, in order, handing each to `visit` with the
/// range of its seqs to take: those above `after`, and no more than `limit` in all. Rows are
/// read one at a time, and the walk stops at `limit`, so no chunk past it is read.
fn walk_forward(
    conn: &Connection,
    after: i64,
    limit: usize,
    mut visit: impl FnMut(&ChunkRef<'_>, std::ops::Range<i64>) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut from = after;
    let mut taken = 0;
    loop {
        let mut stmt = conn.prepare_cached(FORWARD_SQL)?;
        let mut rows = stmt.query([from + 1])?;
        let mut read = 0;
        while let Some(row) = rows.next()? {
            read += 1;
            let chunk = ChunkRef::read(row)?;
            let start = (from + 1).max(chunk.first_seq);
            let end = (chunk.first_seq + chunk.count).min(start + (limit - taken) as i64);
            if start >= end {
                continue;
            }
            visit(&chunk, start..end)?;
            taken += (end - start) as usize;
            from = end - 1;
            if taken >= limit {
                return Ok(());
            }
        }
        if read < CHUNKS_PER_QUERY {
            return Ok(());
        }
    }
}

/// A chunk that retention deletes, with the dedup key of each of its events.
#[derive(Debug)]
pub struct ExpiredChunk {
    pub first_seq: i64,
    pub count: i64,
    /// `(seq, key)` of every event that still parses.
    pub keys: Vec<(i64, DedupKey)>,
}

/// The oldest chunks received before `cutoff_ms`, oldest first, until they hold `max_events`
/// events (a chunk is taken whole, so a budget above 0 always takes at least one). Each comes
/// with its events' dedup keys, recomputed from the stored JSON: that is how retention finds the
/// keys to delete without an index on `seq`, which cost the writer 40 % of its time building a
/// commit. Receive time grows with `seq`, so only the oldest rows are looked at.
pub fn expired(
    conn: &Connection,
    cutoff_ms: i64,
    max_events: usize,
    max_seq: i64,
) -> rusqlite::Result<Vec<ExpiredChunk>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT first_seq, count, received_at_ms, events FROM chunks ORDER BY first_seq LIMIT ",
        chunks_per_query!()
    ))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    let mut events = 0;
    while let Some(row) = rows.next()? {
        let chunk = ChunkRef::read(row)?;
        if chunk.received_at_ms >= cutoff_ms
            || events >= max_events
            || chunk.first_seq + chunk.count - 1 > max_seq
        {
            break;
        }
        let keys = chunk
            .parse(parse_event_array, parse_event)
            .into_iter()
            .map(|(seq, event)| (seq, event.dedup_key()))
            .collect();
        out.push(ExpiredChunk {
            first_seq: chunk.first_seq,
            count: chunk.count,
            keys,
        });
        events += chunk.count as usize;
    }
    Ok(out)
}

/// Up to `limit` events with `seq < below`, newest first.
pub fn backward(conn: &Connection, below: i64, limit: usize) -> rusqlite::Result<Vec<StoredRaw>> {
    let mut out = Vec::new();
    let mut under = below;
    loop {
        let chunks = {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT first_seq, count, received_at_ms, events FROM chunks ",
                "WHERE first_seq < ?1 ORDER BY first_seq DESC LIMIT ",
                chunks_per_query!()
            ))?;
            stmt.query_map([under], Chunk::from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        let exhausted = (chunks.len() as i64) < CHUNKS_PER_QUERY;
        for chunk in &chunks {
            for event in chunk.split().into_iter().rev() {
                if event.seq < under {
                    under = event.seq;
                    out.push(event);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            // Past a damaged chunk too, whose events `split` skipped.
            under = under.min(chunk.first_seq);
        }
        if exhausted {
            return Ok(out);
        }
    }
}

/// Whether the oldest chunk was received before `cutoff_ms`: retention has work waiting.
pub fn oldest_received_before(conn: &Connection, cutoff_ms: i64) -> rusqlite::Result<bool> {
    let oldest: Option<i64> = conn
        .prepare_cached("SELECT received_at_ms FROM chunks ORDER BY first_seq LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(oldest.is_some_and(|ms| ms < cutoff_ms))
}

/// The events at `seqs`, in the order given. A seq that no longer exists (retention) is skipped.
/// Consecutive seqs from one chunk read and split it once.
pub fn by_seqs(conn: &Connection, seqs: &[i64]) -> rusqlite::Result<Vec<StoredRaw>> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_seq, count, received_at_ms, events FROM chunks \
         WHERE first_seq <= ?1 ORDER BY first_seq DESC LIMIT 1",
    )?;
    // The chunk last read, with its events (none for a damaged one, read once all the same).
    let mut current: Option<(std::ops::Range<i64>, Vec<StoredRaw>)> = None;
    let mut out = Vec::with_capacity(seqs.len());
    for &seq in seqs {
        if !current
            .as_ref()
            .is_some_and(|(range, _)| range.contains(&seq))
        {
            let chunk = stmt.query_map([seq], Chunk::from_row)?.next().transpose()?;
            current = chunk.map(|chunk| (chunk.seqs(), chunk.split()));
        }
        if let Some((range, events)) = &current
            && range.contains(&seq)
            && let Some(event) = events.get((seq - range.start) as usize)
        {
            out.push(event.clone());
        }
    }
    Ok(out)
}

/// A read-only cursor over the journal, for consumers that tail it by `seq` on their own
/// thread (the pipeline). WAL lets it read while the writer writes.
pub struct Tail {
    conn: Connection,
    /// The newest chunks, read before SQLite when they hold the next `seq` (see `recent.rs`).
    recent: Option<std::sync::Arc<super::Recent>>,
}

impl Tail {
    pub fn open(dir: &std::path::Path) -> Result<Tail, super::JournalError> {
        let path = dir.join("journal.sqlite3");
        let conn = super::schema::open_reader(&path)
            .map_err(|source| super::JournalError::Open { path, source })?;
        Ok(Tail { conn, recent: None })
    }

    /// Reads the newest events from `recent` when it holds them, as the pipeline's reader.
    pub fn with_recent(mut self, recent: Option<std::sync::Arc<super::Recent>>) -> Tail {
        self.recent = recent;
        self
    }

    /// Up to `limit` fully parsed events with `seq > after`, oldest first.
    pub fn after(&self, after: i64, limit: usize) -> rusqlite::Result<Vec<TailedEvent>> {
        forward_events(&self.conn, after, limit)
    }

    /// See [`forward_briefs`].
    pub fn briefs_after(
        &self,
        after: i64,
        limit: usize,
        consume: impl FnMut(&[TailedBrief<'_>]),
    ) -> rusqlite::Result<Option<i64>> {
        newest_briefs(
            &self.conn,
            self.recent.as_deref(),
            super::Reader::Pipeline,
            after,
            limit,
            consume,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk's statement stays prepared across walks: a bound `LIMIT` made SQLite prepare it
    /// again on every walk.
    #[test]
    fn walking_the_journal_does_not_prepare_the_walk_again() {
        let (_dir, conn) = crate::journal::test_journal_in_tempdir(&[
            (
                1,
                r#"[{"event":"sent","MessageID":1},{"event":"sent","MessageID":2}]"#,
            ),
            (3, r#"[{"event":"open","MessageID":3}]"#),
        ]);
        for after in [0, 1, 2, 0] {
            forward_briefs(&conn, after, 10, |_| {}).unwrap();
        }
        let walk = conn.prepare_cached(FORWARD_SQL).unwrap();
        assert_eq!(walk.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    /// A chunk damaged on disk (not UTF-8, or not JSON) is passed over whole, so the pipeline
    /// and the indexer go on past it instead of retrying it forever.
    #[test]
    fn a_damaged_chunk_is_skipped_and_the_walk_goes_past_it() {
        let (_dir, conn) = crate::journal::test_journal_in_tempdir(&[
            (1, r#"[{"event":"sent","MessageID":1}]"#),
            (
                2,
                r#"[{"event":"sent","MessageID":2},{"event":"open","MessageID":3}]"#,
            ),
            (4, r#"[{"event":"open","MessageID":4}]"#),
            (5, r#"[{"event":"click","MessageID":5}]"#),
        ]);
        conn.execute(
            "UPDATE chunks SET events = X'5bff5d' WHERE first_seq = 2",
            [],
        )
        .unwrap();
        conn.execute(
            r#"UPDATE chunks SET events = '[{"event":"open","Mess' WHERE first_seq = 4"#,
            [],
        )
        .unwrap();
        let mut seqs = Vec::new();
        let last = forward_briefs(&conn, 0, 100, |events| {
            seqs.extend(events.iter().map(|e| e.seq));
        })
        .unwrap();
        assert_eq!(seqs, [1, 5]);
        assert_eq!(last, Some(5));
        let events: Vec<i64> = forward_events(&conn, 0, 100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(events, [1, 5]);
        let expired = expired(&conn, i64::MAX, 100, i64::MAX).unwrap();
        let keys: Vec<usize> = expired.iter().map(|c| c.keys.len()).collect();
        assert_eq!(keys, [1, 0, 0, 1], "no keys from the damaged chunks");
        // The query API's reads skip them too.
        let seqs = |rows: Vec<StoredRaw>| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(backward(&conn, i64::MAX, 100).unwrap()), [5, 1]);
        assert_eq!(seqs(by_seqs(&conn, &[5, 4, 3, 2, 1]).unwrap()), [5, 1]);
    }

    /// A page read backwards goes past a whole round of damaged chunks (64 of them) to the
    /// events under them, rather than asking for the same round again.
    #[test]
    fn a_backward_read_goes_past_a_round_of_damaged_chunks() {
        let texts: Vec<(i64, String)> = (1..=66)
            .map(|seq| (seq, format!(r#"[{{"event":"open","MessageID":{seq}}}]"#)))
            .collect();
        let rows: Vec<(i64, &str)> = texts.iter().map(|(s, t)| (*s, t.as_str())).collect();
        let (_dir, conn) = crate::journal::test_journal_in_tempdir(&rows);
        conn.execute("UPDATE chunks SET events = X'ff' WHERE first_seq >= 3", [])
            .unwrap();
        let found: Vec<i64> = backward(&conn, i64::MAX, 10)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(found, [2, 1]);
    }

    #[test]
    fn forward_walks_across_chunks_from_any_seq() {
        let (_dir, conn) = crate::journal::test_journal_in_tempdir(&[
            (
                1,
                r#"[{"event":"sent","MessageID":1},{"event":"sent","MessageID":2}]"#,
            ),
            (
                3,
                r#"[{"event":"open","MessageID":3},{"event":"click","MessageID":4},{"event":"spam","MessageID":5}]"#,
            ),
        ]);
        let ids = |after, limit| {
            forward_events(&conn, after, limit)
                .unwrap()
                .into_iter()
                .map(|e| (e.seq, e.event.message_id.0))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(0, 10), vec![(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]);
        assert_eq!(ids(3, 10), vec![(4, 4), (5, 5)]);
        assert_eq!(ids(1, 2), vec![(2, 2), (3, 3)]);
        assert_eq!(ids(5, 10), vec![]);
        let back: Vec<i64> = backward(&conn, 5, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(back, vec![4, 3, 2, 1]);
        let picked: Vec<i64> = by_seqs(&conn, &[5, 2, 9])
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(picked, vec![5, 2]);
    }

    #[test]
    fn an_event_that_no_longer_parses_is_skipped_alone() {
        let (_dir, conn) = crate::journal::test_journal_in_tempdir(&[(
            1,
            r#"[{"event":"sent","MessageID":1},{"time":"x"},{"event":"open","MessageID":3}]"#,
        )]);
        let got: Vec<(i64, u64)> = forward_events(&conn, 0, 10)
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.event.message_id.0))
            .collect();
        assert_eq!(got, vec![(1, 1), (3, 3)]);
    }

    #[test]
    fn briefs_come_a_whole_chunk_at_a_time_from_any_seq() {
        let (_dir, conn) = crate::journal::test_journal_in_tempdir(&[
            (
                1,
                r#"[{"event":"sent","MessageID":1},{"event":"sent","MessageID":2}]"#,
            ),
            (
                3,
                r#"[{"event":"open","MessageID":3},{"time":"x"},{"event":"spam","MessageID":5}]"#,
            ),
            (6, r#"[{"event":"click","MessageID":6}]"#),
        ]);
        let walk = |after, limit| {
            let mut calls = Vec::new();
            let last = forward_briefs(&conn, after, limit, |events| {
                calls.push(
                    events
                        .iter()
                        .map(|e| (e.seq, e.brief.message_id.0))
                        .collect::<Vec<_>>(),
                );
            })
            .unwrap();
            (calls, last)
        };
        // One call per chunk; the event that no longer parses is skipped, not the chunk.
        assert_eq!(
            walk(0, 100),
            (
                vec![vec![(1, 1), (2, 2)], vec![(3, 3), (5, 5)], vec![(6, 6)]],
                Some(6)
            )
        );
        // Starting in the middle of a chunk, and stopping at the limit.
        assert_eq!(walk(1, 2), (vec![vec![(2, 2)], vec![(3, 3)]], Some(3)));
        assert_eq!(walk(6, 10), (vec![], None));
    }

    #[test]
    fn expired_chunks_stop_at_the_cutoff_the_event_budget_and_the_checkpoint() {
        let (_dir, conn) = crate::journal::test_journal_in_tempdir(&[
            (
                1,
                r#"[{"event":"sent","time":5,"MessageID":1},{"time":"x"}]"#,
            ),
            (3, r#"[{"event":"open","time":6,"MessageID":3}]"#),
            (4, r#"[{"event":"click","time":7,"MessageID":4}]"#),
        ]);
        for (first_seq, received_at_ms) in [(1, 100), (3, 200), (4, 300)] {
            conn.execute(
                "UPDATE chunks SET received_at_ms = ?2 WHERE first_seq = ?1",
                rusqlite::params![first_seq, received_at_ms],
            )
            .unwrap();
        }
        let take = |cutoff, max| {
            expired(&conn, cutoff, max, i64::MAX)
                .unwrap()
                .into_iter()
                .map(|c| (c.first_seq, c.count, c.keys))
                .collect::<Vec<_>>()
        };
        let key = |json| parse_event(json).unwrap().dedup_key();
        let sent = key(r#"{"event":"sent","time":5,"MessageID":1}"#);
        let open = key(r#"{"event":"open","time":6,"MessageID":3}"#);
        // Received before 250: the first two chunks. The event that no longer parses has no
        // key to give, but its chunk still goes.
        assert_eq!(
            take(250, 100),
            vec![(1, 2, vec![(1, sent)]), (3, 1, vec![(3, open)])]
        );
        // The budget is met by the first chunk; a budget of 0 still takes nothing.
        assert_eq!(take(1000, 2), vec![(1, 2, vec![(1, sent)])]);
        assert_eq!(take(1000, 0), vec![]);
        assert_eq!(take(100, 10), vec![]);
        // Nothing past the pipeline's checkpoint: a chunk goes whole, once all of it is saved.
        let below = |max_seq| {
            expired(&conn, 1000, 100, max_seq)
                .unwrap()
                .iter()
                .map(|c| c.first_seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(below(0), Vec::<i64>::new());
        assert_eq!(below(1), Vec::<i64>::new(), "seq 2 is in the first chunk");
        assert_eq!(below(3), vec![1, 3]);
        assert_eq!(below(4), vec![1, 3, 4]);
    }

    #[test]
    fn a_chunk_whose_events_all_fail_to_parse_is_still_passed() {
        let (_dir, conn) =
            crate::journal::test_journal_in_tempdir(&[(1, r#"[{"time":"x"},{"nope":1}]"#)]);
        let mut seen = 0;
        let last = forward_briefs(&conn, 0, 10, |events| seen += events.len()).unwrap();
        assert_eq!((seen, last), (0, Some(2)));
    }
}
