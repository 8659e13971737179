//! The writer thread: group commit, deduplication and retention on the one write connection.
//!
//! Each turn takes the first queued command, then everything else already queued (up to
//! `max_batch_events`), writes it all in one transaction and commits once. Only after `COMMIT`
//! returns does any request in the batch get its answer. If the transaction fails, it is rolled
//! back and every request in it gets the error: none of them is acknowledged.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, Transaction, params};

use super::{
    Append, AppendOutcome, Command, JournalConfig, JournalError, NewEvent, NewQuarantine, Progress,
    RETENTION_BATCH, RETENTION_TICK, to_sql_u64,
};
use crate::metrics::Metrics;

pub struct Writer {
    conn: Connection,
    progress: Arc<Progress>,
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
    ) -> Writer {
        Writer {
            conn,
            progress,
            max_batch_events: config.max_batch_events.max(1),
            retention: config.retention.0,
            metrics,
            next_retention: Instant::now(),
        }
    }

    /// Serves commands until every sender is gone and the queue is empty.
    pub fn run(mut self, rx: Receiver<Command>) {
        loop {
            let first = match rx.recv_timeout(RETENTION_TICK) {
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
        let result = write_all(&mut self.conn, &batch);
        let elapsed = started.elapsed();
        match result {
            Ok(outcomes) => {
                self.metrics.journal_commit(elapsed, events);
                let newest = outcomes.iter().flat_map(|o| o.seqs.iter().flatten()).max();
                if let Some(&seq) = newest {
                    self.progress.committed.fetch_max(seq, Ordering::AcqRel);
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
                let message = describe(&e);
                self.metrics.journal_commit_failed();
                tracing::error!(error = %message, requests = batch.len(), events, "journal commit failed; the batch is answered 503");
                if !self.conn.is_autocommit()
                    && let Err(rollback) = self.conn.execute_batch("ROLLBACK")
                {
                    tracing::error!(error = %rollback, "journal rollback failed");
                }
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

    /// Deletes at most one batch of expired rows, in its own short transaction, so retention
    /// never holds the write lock long enough to stall ingest.
    fn retention_step(&mut self) {
        let cutoff = super::now_ms() - self.retention.as_millis() as i64;
        let result = (|| -> rusqlite::Result<usize> {
            let tx = self.conn.transaction()?;
            let events = tx.execute(
                "DELETE FROM events WHERE seq IN \
                 (SELECT seq FROM events WHERE received_at_ms < ?1 ORDER BY seq LIMIT ?2)",
                params![cutoff, RETENTION_BATCH as i64],
            )?;
            let quarantined = tx.execute(
                "DELETE FROM quarantine WHERE id IN \
                 (SELECT id FROM quarantine WHERE received_at_ms < ?1 ORDER BY id LIMIT ?2)",
                params![cutoff, RETENTION_BATCH as i64],
            )?;
            tx.commit()?;
            Ok(events + quarantined)
        })();
        match result {
            Ok(deleted) if deleted > 0 => {
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

/// Writes every command of the batch in one transaction and commits it.
fn write_all(conn: &mut Connection, batch: &[Command]) -> rusqlite::Result<Vec<AppendOutcome>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for command in batch {
        match command {
            Command::Append(append, _) => outcomes.push(write_append(&tx, append)?),
            Command::Probe(_) => {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('probe', ?1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [super::now_ms().to_string()],
                )?;
                outcomes.push(AppendOutcome { seqs: Vec::new() });
            }
            Command::Shutdown => outcomes.push(AppendOutcome { seqs: Vec::new() }),
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

fn write_append(tx: &Transaction, append: &Append) -> rusqlite::Result<AppendOutcome> {
    let mut seqs = Vec::with_capacity(append.events.len());
    if !append.events.is_empty() {
        let mut insert = tx.prepare_cached(INSERT_EVENT)?;
        for new in &append.events {
            let inserted = insert_event(&mut insert, new)?;
            seqs.push(if inserted {
                Some(tx.last_insert_rowid())
            } else {
                None
            });
        }
    }
    if !append.quarantine.is_empty() {
        let mut insert = tx.prepare_cached(INSERT_QUARANTINE)?;
        for q in &append.quarantine {
            insert_quarantine(&mut insert, q)?;
        }
    }
    Ok(AppendOutcome { seqs })
}

const INSERT_EVENT: &str = "INSERT OR IGNORE INTO events
    (dedup_key, received_at_ms, event, time, message_id, raw) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

const INSERT_QUARANTINE: &str = "INSERT INTO quarantine
    (received_at_ms, reason, route, content_type, body, body_len, truncated)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Inserts one event unless its dedup key is already stored; returns whether it was new.
fn insert_event(stmt: &mut rusqlite::CachedStatement, new: &NewEvent) -> rusqlite::Result<bool> {
    let e = &new.event;
    let changed = stmt.execute(params![
        &new.dedup_key[..],
        new.received_at_ms,
        e.event_name,
        e.time,
        to_sql_u64(e.message_id.0),
        new.raw,
    ])?;
    Ok(changed == 1)
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
