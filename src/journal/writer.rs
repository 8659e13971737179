//! The writer thread: group commit, deduplication and retention on the one write connection.
//!
//! Each turn takes the first queued command, then everything else already queued (up to
//! `max_batch_events`), writes it all in one transaction and commits once. Only after `COMMIT`
//! returns does any request in the batch get its answer. If the transaction fails, it is rolled
//! back, the sequence numbers it would have used are given back, and every request in it gets
//! the error: none of them is acknowledged.
//!
//! Within the transaction each event first claims its dedup key (see `dedup.rs`); the new ones
//! get the next sequence numbers and are appended, in order, to chunk rows (see `chunks.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, params};

use super::dedup::{DELETE_KEY, DIRECT_CLAIM_EVENTS, Dedup};
use super::recent::{self, Recent};
use super::{
    AppendOutcome, Command, JournalConfig, JournalError, NewQuarantine, Progress, RETENTION_BATCH,
    RETENTION_EVENTS, RETENTION_TICK,
};
use crate::event::{BriefAt, EventKind};
use crate::metrics::Metrics;

pub struct Writer {
    conn: Connection,
    progress: Arc<Progress>,
    /// The `seq` the next stored event gets. Advanced only when a commit succeeds.
    next_seq: i64,
    dedup: Dedup,
    /// Where each commit's chunks go once it has returned, for the journal's readers.
    recent: Arc<Recent>,
    max_batch_events: usize,
    retention: Duration,
    metrics: Arc<Metrics>,
    next_retention: Instant,
}

impl Writer {
    pub fn new(
        conn: Connection,
        config: &JournalConfig,
        metrics: Arc<Metrics>,
        progress: Arc<Progress>,
        next_seq: i64,
        dedup: Dedup,
        recent: Arc<Recent>,
    ) -> Writer {
        Writer {
            conn,
            progress,
            next_seq,
            dedup,
            recent,
            max_batch_events: config.max_batch_events.max(1),
            retention: config.retention.0,
            metrics,
            next_retention: Instant::now(),
        }
    }

    /// Serves commands until every sender is gone and the queue is empty.
    pub fn run(mut self, rx: Receiver<Command>) {
        loop {
            // Until the next retention step is due: at once while expired rows remain, so a
            // backlog is worked off between commits, or straight through when no request comes.
            let due = self
                .next_retention
                .saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(due) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => {
                    self.retention_step();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut stopping = matches!(first, Command::Shutdown);
            let mut batch = Vec::new();
            let mut weight = 0;
            if !stopping {
                weight += first.weight();
                batch.push(first);
            }
            // On shutdown, take everything still queued, whatever its size.
            while stopping || weight < self.max_batch_events {
                match rx.try_recv() {
                    Ok(Command::Shutdown) => stopping = true,
                    Ok(command) => {
                        weight += command.weight();
                        batch.push(command);
                    }
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit_batch(batch);
            }
            if stopping {
                self.final_sweep();
                break;
            }
            if Instant::now() >= self.next_retention {
                self.retention_step();
            }
        }
        tracing::info!("journal writer stopped: everything queued is committed");
    }

    fn commit_batch(&mut self, batch: Vec<Command>) {
        let started = Instant::now();
        let events: usize = batch.iter().map(Command::weight).sum();
        let result = write_all(&self.conn, &mut self.dedup, &batch, self.next_seq);
        let elapsed = started.elapsed();
        match result {
            Ok((outcomes, tally, next_seq, chunks)) => {
                self.dedup.committed();
                // Before `committed` moves: a reader that sees the new `seq` finds its chunks.
                self.recent.publish(chunks);
                self.metrics.journal_commit(elapsed, events);
                self.metrics.committed(&tally.stored, super::now_ms());
                self.metrics.duplicates(tally.duplicates);
                self.metrics.quarantined(tally.quarantined);
                if next_seq > self.next_seq {
                    self.next_seq = next_seq;
                    self.metrics.journal_seq(next_seq - 1);
                    self.progress
                        .committed
                        .store(next_seq - 1, Ordering::Release);
                }
                for (command, outcome) in batch.into_iter().zip(outcomes) {
                    match command {
                        Command::Append(_, reply) => {
                            let _ = reply.send(Ok(outcome));
                        }
                        Command::Probe(reply) => {
                            let _ = reply.send(Ok(()));
                        }
                        Command::Shutdown => {}
                    }
                }
            }
            Err(e) => {
                self.dedup.rolled_back();
                let message = describe(&e);
                self.metrics.journal_commit_failed();
                // `write_all`'s transaction has rolled back as it was dropped.
                tracing::error!(error = %message, requests = batch.len(), events, "journal commit failed; the batch is answered 503");
                for command in batch {
                    let err = || JournalError::Storage(message.clone());
                    match command {
                        Command::Append(_, reply) => {
                            let _ = reply.send(Err(err()));
                        }
                        Command::Probe(reply) => {
                            let _ = reply.send(Err(err()));
                        }
                        Command::Shutdown => {}
                    }
                }
            }
        }
    }

    /// On a graceful stop, puts the in-memory dedup keys into the table, so that the next start
    /// has none to recompute. If it fails, the next start recomputes them: nothing is lost.
    fn final_sweep(&mut self) {
        let last_seq = self.next_seq - 1;
        let result = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            self.dedup.before_commit(&tx, last_seq, true)?;
            tx.commit()
        })();
        match result {
            Ok(()) => self.dedup.committed(),
            Err(e) => {
                self.dedup.rolled_back();
                tracing::warn!(error = %describe(&e), "could not write the dedup keys held in memory; the next start recomputes them");
            }
        }
    }

    /// Deletes at most one batch of expired rows, in its own short transaction, so retention
    /// never holds the write lock long enough to stall ingest. Receive time grows with `seq`,
    /// so each step looks only at the oldest rows: its cost does not grow with the journal.
    fn retention_step(&mut self) {
        let cutoff = super::now_ms() - self.retention.as_millis() as i64;
        let next_seq = self.next_seq;
        // Returns (events and quarantined bodies deleted, the expired chunks).
        let result = (|| -> rusqlite::Result<(usize, Vec<super::chunks::ExpiredChunk>)> {
            let tx = self.conn.transaction()?;
            // A dedup key lives exactly as long as its event: the keys are recomputed from the
            // chunks about to go, and deleted one by one (see `chunks::expired`).
            let checkpointed = self.progress.checkpointed.load(Ordering::Acquire);
            let expired = super::chunks::expired(&tx, cutoff, RETENTION_EVENTS, checkpointed)?;
            if expired.is_empty() && super::chunks::oldest_received_before(&tx, cutoff)? {
                // Expired, but not yet in the pipeline's snapshot: ask for one.
                self.progress
                    .checkpoint_wanted
                    .store(true, Ordering::Release);
            }
            let mut events = 0;
            {
                let mut delete_key = tx.prepare_cached(DELETE_KEY)?;
                let mut delete_chunk = tx.prepare_cached(DELETE_CHUNK)?;
                for chunk in &expired {
                    for (seq, key) in &chunk.keys {
                        delete_key.execute(params![&key[..], seq])?;
                    }
                    let unkeyed = chunk.count as usize - chunk.keys.len();
                    if unkeyed > 0 {
                        tracing::warn!(
                            first_seq = chunk.first_seq,
                            unkeyed,
                            "retention: events that no longer parse leave their dedup keys behind"
                        );
                    }
                    delete_chunk.execute([chunk.first_seq])?;
                    events += chunk.count as usize;
                }
            }
            if !expired.is_empty() {
                // With every chunk gone, this is what keeps `seq` from starting over.
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('next_seq', ?1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [next_seq.to_string()],
                )?;
            }
            let quarantined = tx.execute(
                "DELETE FROM quarantine WHERE id IN (SELECT id FROM \
                 (SELECT id, received_at_ms FROM quarantine ORDER BY id LIMIT ?2) \
                 WHERE received_at_ms < ?1)",
                params![cutoff, RETENTION_BATCH as i64],
            )?;
            tx.commit()?;
            Ok((events + quarantined, expired))
        })();
        match result {
            Ok((deleted, expired)) if deleted > 0 => {
                self.dedup
                    .forget(expired.into_iter().flat_map(|chunk| chunk.keys));
                tracing::debug!(deleted, "retention deleted expired rows");
                self.metrics.retention_deleted(deleted);
                // More may be waiting: come back after the next batch, not after a full tick.
                self.next_retention = Instant::now();
            }
            Ok(_) => self.next_retention = Instant::now() + RETENTION_TICK,
            Err(e) => {
                tracing::warn!(error = %describe(&e), "retention step failed; will retry");
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                self.next_retention = Instant::now() + RETENTION_TICK;
            }
        }
    }
}

impl Command {
    fn weight(&self) -> usize {
        match self {
            Command::Append(append, _) => append.weight().max(1),
            Command::Probe(_) => 1,
            Command::Shutdown => 0,
        }
    }
}

/// What a commit did: each command's outcome, what it holds for the metrics, the `seq` the next
/// event will get, and the chunk rows it wrote.
type Written = (Vec<AppendOutcome>, Tally, i64, Vec<recent::Chunk>);

/// Writes every command of the batch in one transaction and commits it.
fn write_all(
    conn: &Connection,
    dedup: &mut Dedup,
    batch: &[Command],
    next_seq: i64,
) -> rusqlite::Result<Written> {
    let tx = ImmediateTx::begin(conn)?;
    let weight: usize = batch.iter().map(Command::weight).sum();
    let mut chunks = ChunkBuilder::new(next_seq, chunk_bytes(batch), weight);
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut tally = Tally::default();
    // A large commit (a Version 2 batch) claims all its keys at once, in the table.
    let large: Option<Vec<crate::event::DedupKey>> = (weight >= DIRECT_CLAIM_EVENTS).then(|| {
        batch
            .iter()
            .filter_map(|command| match command {
                Command::Append(append, _) => Some(append.events.iter().map(|e| e.dedup_key)),
                _ => None,
            })
            .flatten()
            .collect()
    });
    {
        let mut claimer = dedup.claimer(&tx, large.as_deref().map(|keys| (keys, next_seq)))?;
        for command in batch {
            match command {
                Command::Append(append, _) => {
                    let mut outcome = AppendOutcome::default();
                    for new in &append.events {
                        if claimer.claim(&new.dedup_key, chunks.next_seq)? {
                            let raw = append.body.get(new.range.clone()).unwrap_or_default();
                            chunks.push(&tx, raw, new.received_at_ms, new.brief)?;
                            outcome.stored += 1;
                            tally.stored[new.kind.index()] += 1;
                        } else {
                            outcome.duplicates += 1;
                        }
                    }
                    insert_quarantine_rows(&tx, &append.quarantine)?;
                    tally.duplicates += outcome.duplicates;
                    tally.quarantined += append.quarantine.len();
                    outcomes.push(outcome);
                }
                Command::Probe(_) => {
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES ('probe', ?1) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        [super::now_ms().to_string()],
                    )?;
                    outcomes.push(AppendOutcome::default());
                }
                Command::Shutdown => outcomes.push(AppendOutcome::default()),
            }
        }
    }
    let (next_seq, written) = chunks.finish(&tx)?;
    dedup.before_commit(&tx, next_seq - 1, false)?;
    tx.commit()?;
    Ok((outcomes, tally, next_seq, written))
}

/// What one commit stored, counted once per commit rather than once per request.
#[derive(Default)]
struct Tally {
    stored: [u64; EventKind::ALL.len()],
    duplicates: usize,
    quarantined: usize,
}

/// The group commit's transaction: `BEGIN IMMEDIATE` and `COMMIT` as cached statements, where
/// rusqlite's `Transaction` parses both again for every commit (a few per cent of the writer's
/// instructions under single events). Dropped without [`ImmediateTx::commit`], it rolls back.
struct ImmediateTx<'c> {
    conn: &'c Connection,
}

impl<'c> ImmediateTx<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<ImmediateTx<'c>> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(ImmediateTx { conn })
    }

    fn commit(self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }
}

impl std::ops::Deref for ImmediateTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for ImmediateTx<'_> {
    fn drop(&mut self) {
        // After a successful `COMMIT` the connection is back in autocommit mode: nothing to undo.
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "journal rollback failed");
        }
    }
}

const DELETE_CHUNK: &str = "DELETE FROM chunks WHERE first_seq = ?1";

const INSERT_CHUNK: &str =
    "INSERT INTO chunks (first_seq, count, received_at_ms, events) VALUES (?1, ?2, ?3, ?4)";

/// Collects new events into chunk rows: a JSON array of their raw objects, cut at
/// [`super::chunks::MAX_CHUNK_BYTES`] so that reading one event never loads a huge row.
struct ChunkBuilder {
    next_seq: i64,
    first_seq: i64,
    count: i64,
    received_at_ms: i64,
    /// JSON text, kept as bytes: every piece is a UTF-8 slice of a checked body.
    text: Vec<u8>,
    /// Each event's bytes in `text`, and where its brief lies within them.
    events: Vec<recent::Placed>,
    /// The chunks written so far, handed to [`Recent`] if the commit returns.
    written: Vec<recent::Chunk>,
    /// The text's expected size, so that it is allocated once.
    capacity: usize,
}

/// The size of the chunk text the batch's events make, up to one chunk's limit, so that its
/// buffer is allocated once instead of growing by doubling (measured under single events: 1,000
/// fewer instructions per event in the writer, a third of its allocator's).
fn chunk_bytes(batch: &[Command]) -> usize {
    let events: usize = batch
        .iter()
        .map(|command| match command {
            Command::Append(append, _) => append.events.iter().map(|e| e.range.len() + 1).sum(),
            _ => 0,
        })
        .sum();
    (events + 1).min(super::chunks::MAX_CHUNK_BYTES + 1)
}

impl ChunkBuilder {
    /// `capacity`: the text's expected size, so that it is allocated once; `events`: how many
    /// events the commit has at most.
    fn new(next_seq: i64, capacity: usize, events: usize) -> ChunkBuilder {
        ChunkBuilder {
            next_seq,
            first_seq: next_seq,
            count: 0,
            received_at_ms: i64::MAX,
            text: Vec::with_capacity(capacity),
            events: Vec::with_capacity(events),
            written: Vec::new(),
            capacity,
        }
    }

    /// Appends one event's raw JSON; it gets the `seq` that was `next_seq`.
    fn push(
        &mut self,
        tx: &Connection,
        raw: &[u8],
        received_at_ms: i64,
        brief: Option<BriefAt>,
    ) -> rusqlite::Result<()> {
        if self.count > 0 && self.text.len() + raw.len() > super::chunks::MAX_CHUNK_BYTES {
            self.flush(tx)?;
        }
        if self.text.capacity() == 0 {
            // The text before went to `written`: the next chunk gets a buffer of its own.
            self.text.reserve(self.capacity);
        }
        self.text.push(if self.count == 0 { b'[' } else { b',' });
        // A chunk passes its limit by one event at most, which is at most `server.max_body`:
        // its offsets fit in `u32`. A chunk whose offsets did not is not handed on.
        let start = self.text.len();
        self.text.extend_from_slice(raw);
        if let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(self.text.len())) {
            self.events.push((start..end, brief));
        }
        self.received_at_ms = self.received_at_ms.min(received_at_ms);
        self.count += 1;
        self.next_seq += 1;
        Ok(())
    }

    fn flush(&mut self, tx: &Connection) -> rusqlite::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        self.text.push(b']');
        let text =
            rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(&self.text));
        tx.prepare_cached(INSERT_CHUNK)?.execute(params![
            self.first_seq,
            self.count,
            self.received_at_ms,
            text
        ])?;
        let events = std::mem::take(&mut self.events);
        if events.len() == self.count as usize {
            self.written.push(recent::Chunk {
                first_seq: self.first_seq,
                received_at_ms: self.received_at_ms,
                text: std::mem::take(&mut self.text),
                events,
            });
        }
        self.text.clear();
        self.first_seq = self.next_seq;
        self.count = 0;
        self.received_at_ms = i64::MAX;
        Ok(())
    }

    /// Writes the last chunk; returns the `seq` the next event gets, and the chunks written.
    fn finish(mut self, tx: &Connection) -> rusqlite::Result<(i64, Vec<recent::Chunk>)> {
        self.flush(tx)?;
        Ok((self.next_seq, self.written))
    }
}

const INSERT_QUARANTINE: &str = "INSERT INTO quarantine
    (received_at_ms, reason, route, content_type, body, body_len, truncated)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

fn insert_quarantine_rows(tx: &Connection, rows: &[NewQuarantine]) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = tx.prepare_cached(INSERT_QUARANTINE)?;
    for q in rows {
        insert_quarantine(&mut insert, q)?;
    }
    Ok(())
}

fn insert_quarantine(
    stmt: &mut rusqlite::CachedStatement,
    q: &NewQuarantine,
) -> rusqlite::Result<()> {
    stmt.execute(params![
        q.received_at_ms,
        q.reason,
        q.route,
        q.content_type,
        q.body,
        q.original_len as i64,
        q.original_len > q.body.len(),
    ])?;
    Ok(())
}

/// A message an operator can act on: disk full and read-only are named as such.
fn describe(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => format!("the disk holding the journal is full ({e})"),
        Some(ErrorCode::ReadOnly) => format!("the journal file is read-only ({e})"),
        Some(ErrorCode::CannotOpen) => format!("the journal file cannot be opened ({e})"),
        Some(ErrorCode::SystemIoFailure) => format!("disk I/O failed under the journal ({e})"),
        _ => e.to_string(),
    }
}
