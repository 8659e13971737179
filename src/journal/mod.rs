//! The durable log of every event and every quarantined body, in embedded SQLite.
//!
//! The promise: **an append is acknowledged only after the transaction holding it has
//! committed** with `synchronous=FULL` in WAL mode, so a `200` survives `kill -9` and power
//! loss. One writer thread owns the only write connection and does group commit: it takes
//! everything queued, writes it in one transaction, commits once, then answers every request in
//! the batch. Deduplication lives here too: each event claims its dedup key (`dedup.rs`), so a
//! retried event is a no-op that is reported back as a duplicate. Events are stored
//! in chunk rows (`schema.rs`), and lookups by field go through a derived index (`index.rs`)
//! built after the acknowledgement.
//!
//! When the queue is full the append fails at once with [`JournalError::QueueFull`]; when the
//! disk fails it fails with [`JournalError::Storage`]. Callers turn both into `503`, never `200`.

mod chunks;
mod dedup;
mod index;
mod lock;
mod postings;
mod query;
mod recent;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::config::units::{DurationText, SizeText};
use crate::metrics::Metrics;

pub use chunks::{StoredRaw, Tail, TailedEvent};
pub use index::{LookupKey, Progress};
pub use lock::{DirLock, LockError};
pub use query::{
    EventFilter, EventPage, MAX_LIMIT, QuarantineFilter, QuarantinePage, StoredEvent,
    StoredQuarantine,
};
pub use recent::{Reader, Recent};

/// `[journal]` in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// Events and quarantined bodies older than this (by receive time) are deleted.
    pub retention: DurationText,
    /// Requests that may wait for the writer. Past this, appends answer `503 Retry-After`.
    pub queue_capacity: usize,
    /// The most events one group commit takes, so one commit never grows without bound.
    pub max_batch_events: usize,
    /// Quarantined bodies are stored up to this size; the rest is cut and the cut recorded.
    pub quarantine_max_body: SizeText,
    /// SQLite page cache of the writer connection. Bounds the journal's share of memory.
    pub cache_size: SizeText,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            retention: DurationText::from_secs(30 * 86_400),
            queue_capacity: 4096,
            max_batch_events: 50_000,
            quarantine_max_body: SizeText(1024 * 1024),
            cache_size: SizeText(8 * 1024 * 1024),
        }
    }
}

/// Why an append or a query failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the journal writer queue is full ({capacity} requests waiting)")]
    QueueFull { capacity: usize },
    #[error("the journal could not commit: {0}")]
    Storage(String),
    #[error("the journal is shut down")]
    Closed,
    #[error("cannot open the journal at {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("journal query failed: {0}")]
    Query(#[from] rusqlite::Error),
}

/// An event ready to be written: where its exact text sits in the request body, its dedup key
/// and its receive time. The body itself travels once, in [`Append::body`], so the request's
/// bytes reach the chunk row without a copy per event.
#[derive(Debug)]
pub struct NewEvent {
    /// Byte range of the event's JSON object in [`Append::body`].
    pub range: std::ops::Range<usize>,
    /// Computed on the request's own task, so the single writer thread only writes.
    pub dedup_key: crate::event::DedupKey,
    pub received_at_ms: i64,
    /// Counted by the writer once the event is committed.
    pub kind: crate::event::EventKind,
    /// Where its brief lies in its text, handed to the journal's readers with the commit (see
    /// `recent.rs`).
    pub brief: Option<crate::event::BriefAt>,
}

/// A body, or one element of a body, that could not be read as an event.
#[derive(Debug)]
pub struct NewQuarantine {
    pub reason: String,
    /// The request path, so an operator can tell which callback URL sent it.
    pub route: String,
    pub content_type: Option<String>,
    /// The bytes as received, already cut to `quarantine_max_body`.
    pub body: Vec<u8>,
    /// The length before cutting.
    pub original_len: usize,
    pub received_at_ms: i64,
}

/// Everything one request asks the journal to keep. It is committed all together or not at all.
#[derive(Debug, Default)]
pub struct Append {
    /// The request body the events' ranges point into. Its text is valid UTF-8 (the receiver
    /// checked) and each range is one JSON object.
    pub body: bytes::Bytes,
    pub events: Vec<NewEvent>,
    pub quarantine: Vec<NewQuarantine>,
}
impl Append {
    fn weight(&self) -> usize {
        self.events.len() + self.quarantine.len()
    }
}

/// What became of the events of an [`Append`]. The writer has counted them in the metrics
/// (stored by kind, duplicates, quarantined) by the time the request gets this.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Events newly stored.
    pub stored: usize,
    /// Events already stored, by an earlier request or earlier in this one.
    pub duplicates: usize,
}

type Reply<T> = oneshot::Sender<Result<T, JournalError>>;

/// A unit of work for the writer thread.
enum Command {
    Append(Append, Reply<AppendOutcome>),
    /// A real write and commit, for `/readyz`: it proves the disk still takes a transaction.
    Probe(Reply<()>),
    /// Commit everything queued before this, then stop. Sent once, by [`Journal::close`].
    Shutdown,
}

/// The handle shared by the HTTP layer. Cloning it is cheap; [`Journal::close`] stops it.
#[derive(Clone)]
pub struct Journal {
    tx: SyncSender<Command>,
    capacity: usize,
    /// A separate read-only connection for the query API, with the lookup index attached as
    /// `idx`. A `std` mutex because every use is a short synchronous query inside
    /// `spawn_blocking`; WAL lets it read while the writer writes.
    reader: Arc<Mutex<Connection>>,
    progress: Arc<Progress>,
    /// The newest committed chunks, for the threads that tail the journal.
    recent: Arc<Recent>,
    /// Woken by a query that needs the lookup index to catch up. The writer does not wake it
    /// per commit: indexing in bursts every half second disturbs ingest far less (measured).
    indexer: std::thread::Thread,
    threads: Arc<Mutex<Threads>>,
}

#[derive(Default)]
struct Threads {
    writer: Option<JoinHandle<()>>,
    indexer: Option<JoinHandle<()>>,
}

/// How long a query waits for the lookup index to reach the journal's last commit.
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

impl Journal {
    /// Opens (or creates) `dir/journal.sqlite3` and `dir/index.sqlite3`, and starts the writer
    /// and indexer threads.
    pub fn open(
        dir: &Path,
        config: &JournalConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Journal, JournalError> {
        let path = dir.join("journal.sqlite3");
        let index_path = dir.join("index.sqlite3");
        let open_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Open { path, source }
        };
        let conn = schema::open_writer(&path, config.cache_size.0).map_err(open_err(&path))?;
        let next_seq = schema::next_seq(&conn).map_err(open_err(&path))?;
        let dedup = dedup::Dedup::load(&conn).map_err(open_err(&path))?;
        let committed = next_seq - 1;
        metrics.journal_seq(committed);
        if let Some(ms) = schema::last_received_ms(&conn).map_err(open_err(&path))? {
            metrics.last_event_at(ms);
        }
        let index_conn = index::open(&index_path).map_err(open_err(&index_path))?;
        let indexed = index::indexed_seq(&index_conn, committed).map_err(open_err(&index_path))?;
        let progress = Arc::new(Progress::default());
        progress.committed.store(committed, Ordering::Release);
        progress.indexed.store(indexed, Ordering::Release);

        let recent = Arc::new(Recent::new(next_seq));
        let indexer = index::Indexer {
            journal: schema::open_reader(&path).map_err(open_err(&path))?,
            index: index_conn,
            progress: progress.clone(),
            recent: Some(recent.clone()),
            batch: index::INDEX_BATCH,
        };
        let reader = schema::open_reader(&path).map_err(open_err(&path))?;
        reader
            .execute("ATTACH DATABASE ?1 AS idx", [index_path.to_string_lossy()])
            .map_err(open_err(&index_path))?;

        let spawn_err = |e: std::io::Error| {
            JournalError::Storage(format!("cannot start a journal thread: {e}"))
        };
        let indexer = std::thread::Builder::new()
            .name("journal-indexer".into())
            .spawn(move || indexer.run())
            .map_err(spawn_err)?;
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.max(1));
        let state = writer::Writer::new(
            conn,
            config,
            metrics,
            progress.clone(),
            next_seq,
            dedup,
            recent.clone(),
        );
        let writer = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || state.run(rx))
            .map_err(spawn_err)?;
        Ok(Journal {
            tx,
            capacity: config.queue_capacity.max(1),
            reader: Arc::new(Mutex::new(reader)),
            progress,
            recent,
            indexer: indexer.thread().clone(),
            threads: Arc::new(Mutex::new(Threads {
                writer: Some(writer),
                indexer: Some(indexer),
            })),
        })
    }

    /// Queues `append` and waits until it is committed. Fails at once when the queue is full.
    pub async fn append(&self, append: Append) -> Result<AppendOutcome, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append(append, reply))?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Commits a tiny write to prove the journal is writable right now.
    pub async fn probe(&self) -> Result<(), JournalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Probe(reply))?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    fn send(&self, command: Command) -> Result<(), JournalError> {
        self.tx.try_send(command).map_err(|e| match e {
            TrySendError::Full(_) => JournalError::QueueFull {
                capacity: self.capacity,
            },
            TrySendError::Disconnected(_) => JournalError::Closed,
        })
    }

    /// Runs a read query on the reader connection, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn).map_err(JournalError::from)
        })
        .await
        .map_err(|e| JournalError::Storage(format!("query task failed: {e}")))?
    }

    /// Lists events, newest first, one page at a time. Waits up to two seconds for the lookup
    /// index to include everything committed before the call, so a client reads its own writes.
    pub async fn events(&self, filter: EventFilter) -> Result<EventPage, JournalError> {
        self.wait_for(&self.progress.indexed, &self.indexer).await;
        self.read(move |conn| query::events(conn, &filter)).await
    }

    /// Read your writes: waits, up to two seconds, until `consumer` (the position of a thread
    /// that tails the journal) reaches what was committed when the call began, waking that
    /// thread so it does not sleep out its poll interval. The lookup index and the pipeline both
    /// answer queries this way.
    pub async fn wait_for(&self, consumer: &AtomicI64, waker: &std::thread::Thread) {
        let target = self.progress.committed.load(Ordering::Acquire);
        let deadline = tokio::time::Instant::now() + READ_YOUR_WRITES_WAIT;
        while consumer.load(Ordering::Acquire) < target && tokio::time::Instant::now() < deadline {
            waker.unpark();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The writer's and the indexer's positions in the journal.
    /// The newest committed chunks, for a thread that tails the journal (the pipeline).
    pub fn recent(&self) -> Arc<Recent> {
        self.recent.clone()
    }

    /// The progress shared with the writer, for the pipeline to report its checkpoint.
    pub fn progress_shared(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Lists quarantined bodies, newest first.
    pub async fn quarantined(
        &self,
        filter: QuarantineFilter,
    ) -> Result<QuarantinePage, JournalError> {
        self.read(move |conn| query::quarantine(conn, &filter))
            .await
    }

    /// Asks the writer to commit what is queued and stop, then stops the indexer, and waits for
    /// both. Appends sent after this fail with [`JournalError::Closed`]. Blocking: call it from
    /// `spawn_blocking` or outside the async runtime.
    pub fn close(self) {
        if self.tx.send(Command::Shutdown).is_err() {
            tracing::debug!("journal writer already stopped");
        }
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(writer) = threads.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the journal writer thread panicked during shutdown");
        }
        self.progress.stop.store(true, Ordering::Release);
        if let Some(indexer) = threads.indexer.take() {
            indexer.thread().unpark();
            if indexer.join().is_err() {
                tracing::error!("the journal indexer thread panicked during shutdown");
            }
        }
    }
}

/// Test support: creates `dir/journal.sqlite3` with the current schema and stores `chunks`, each
/// `(first_seq, JSON array of event objects)`, as chunk rows received at time 0.
#[cfg(test)]
pub(crate) fn test_journal(dir: &Path, chunks: &[(i64, &str)]) -> Connection {
    let conn = schema::open_writer(&dir.join("journal.sqlite3"), 1 << 20).unwrap();
    for (first, events) in chunks {
        let count = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(events)
            .unwrap()
            .len() as i64;
        conn.execute(
            "INSERT INTO chunks (first_seq, count, received_at_ms, events) VALUES (?1, ?2, 0, ?3)",
            rusqlite::params![first, count, events],
        )
        .unwrap();
    }
    conn
}

/// Test support: [`test_journal`] in a fresh temporary directory, which lives as long as the
/// returned `TempDir`.
#[cfg(test)]
pub(crate) fn test_journal_in_tempdir(chunks: &[(i64, &str)]) -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = test_journal(dir.path(), chunks);
    (dir, conn)
}

/// Milliseconds since the Unix epoch, the journal's receive-time unit.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How often the writer looks for expired rows when the last look found none.
pub(crate) const RETENTION_TICK: Duration = Duration::from_secs(5);
/// Quarantined bodies one retention step deletes at most.
pub(crate) const RETENTION_BATCH: usize = 2000;
/// Events one retention step deletes at most (it takes whole chunks, at least one): each costs
/// a parse and a key deletion, so a step stays within a few milliseconds.
pub(crate) const RETENTION_EVENTS: usize = 1000;
