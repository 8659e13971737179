//! The journal's tables and the pragmas that make a commit durable.
//!
//! Events are stored in **chunks**: one row holds the raw JSON objects of consecutive events,
//! as a JSON array, and covers `seq` from `first_seq` to `first_seq + count - 1`. A row per
//! event cost the acknowledgement path twice as much per event (measured), because SQLite's work
//! is per row and per page, not per byte. The parsed fields are re-derived from the raw JSON by
//! the same parser whenever they are read, so there is one definition of what an event says.
//! The `events` view shows one row per event for people with a `sqlite3` shell.
//!
//! `dedup` holds one key per stored event (see `Event::dedup_key`) with that event's `seq`,
//! except the latest keys, which may still be in the writer's memory (see `dedup.rs`);
//! retention drops a key together with its event, recomputing the keys from the chunks it
//! deletes (an index on `seq` to find them cost 40 % of a commit's build time). Expiring keys by
//! their own time prefix would drop the key of an event that is still stored whenever its
//! event time is older than its receipt, as with replayed traffic. `seq` never goes back: when retention has
//! deleted every chunk, `meta.next_seq` remembers where it was.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

/// Bumped whenever the tables change; `open_writer` refuses a journal from a newer version.
/// Version 2: dedup keys lead with (time, `MessageID`) instead of (time, hash), see
/// [`rebuild_dedup_keys`]; and no index on `dedup.seq`, see `chunks::expired`.
/// Version 3: the keys of the latest events may be missing from `dedup`; `meta.dedup_seq` says
/// from where they are recomputed (see `dedup.rs`). An older release would not know to.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS chunks (
    first_seq      INTEGER PRIMARY KEY,
    count          INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    events         TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS dedup (
    key BLOB    PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS events AS
    SELECT c.first_seq + j.key      AS seq,
           c.received_at_ms         AS received_at_ms,
           j.value ->> '$.event'    AS event,
           j.value ->> '$.time'     AS time,
           j.value -> '$.MessageID' AS message_id,
           j.value                  AS raw
    FROM chunks AS c, json_each(c.events) AS j;

CREATE TABLE IF NOT EXISTS quarantine (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at_ms INTEGER NOT NULL,
    reason         TEXT    NOT NULL,
    route          TEXT    NOT NULL,
    content_type   TEXT,
    body           BLOB    NOT NULL,
    body_len       INTEGER NOT NULL,
    truncated      INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#;

/// Opens the one write connection: WAL, `synchronous=FULL`, schema created or checked.
pub fn open_writer(path: &Path, cache_bytes: u64) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // 16 KiB pages: a chunk row spans a quarter as many pages as with the 4 KiB default, and the
    // dedup tree is shallower (measured: 2.3 against 3.0 µs per event when rows were per event).
    // Only takes effect on a new file.
    conn.pragma_update(None, "page_size", 16384)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(refuse(format!(
            "SQLite refused WAL mode (got {mode}); the journal needs a file system that supports it"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -((cache_bytes / 1024).max(256) as i64))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(refuse(format!(
            "the journal was written by a newer bouncewatch (schema {version}, this one knows {SCHEMA_VERSION})"
        )));
    }
    // A current journal is opened without writing anything, so that a restart on a full or
    // read-only disk still comes up and answers 503 instead of refusing connections.
    if version < SCHEMA_VERSION {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(SCHEMA)?;
        if version == 1 {
            tx.execute_batch("DROP INDEX IF EXISTS dedup_seq")?;
            rebuild_dedup_keys(&tx)?;
        }
        // Up to here, every stored event's key is in the table.
        super::dedup::set_swept_seq(&tx, next_seq(&tx)? - 1)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
    }
    Ok(conn)
}

/// Recomputes every stored event's dedup key with the current layout, so that a retry of an
/// event stored before an upgrade is still recognised. Runs once, inside the upgrade's
/// transaction: a crash halfway leaves the journal at the old version, and the next start
/// does it again.
fn rebuild_dedup_keys(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM dedup", [])?;
    let mut insert = conn.prepare("INSERT OR IGNORE INTO dedup (key, seq) VALUES (?1, ?2)")?;
    let mut rebuilt = 0u64;
    super::chunks::each_event(conn, 0, |seq, event| {
        insert.execute(rusqlite::params![&event.dedup_key()[..], seq])?;
        rebuilt += 1;
        Ok(())
    })?;
    tracing::info!(
        rebuilt,
        "journal upgraded to schema {SCHEMA_VERSION}: dedup keys recomputed"
    );
    Ok(())
}

/// When the newest stored chunk was received (Unix ms), if any: the last event's receipt time
/// survives a restart, so "time since the last event" does not jump to 1970.
pub fn last_received_ms(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT received_at_ms FROM chunks ORDER BY first_seq DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .optional()
}

/// The `seq` the next stored event gets: one past the last stored, or past what retention
/// deleted, whichever is larger.
pub fn next_seq(conn: &Connection) -> rusqlite::Result<i64> {
    let stored: i64 = conn.query_row(
        "SELECT coalesce(max(first_seq + count), 1) FROM chunks",
        [],
        |r| r.get(0),
    )?;
    let remembered: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
            r.get(0)
        })
        .optional()?;
    let remembered = remembered.and_then(|v| v.parse::<i64>().ok()).unwrap_or(1);
    Ok(stored.max(remembered))
}

/// Opens a read-only connection for queries. It never blocks the writer (WAL).
pub fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "cache_size", -2048)?;
    Ok(conn)
}

/// An open-time refusal with our own message, in rusqlite's error type.
pub(super) fn refuse(message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
        Some(message),
    )
}
