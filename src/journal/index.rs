//! The lookup index: which events carry a given email, message id, custom id or campaign.
//!
//! It is derived data, built after the acknowledgement so that it stays off the ingest path. A
//! separate thread tails the journal by `seq`, every half second or when a query is waiting for
//! it, and writes a list of seqs per partition and key hash (see [`PART_BITS`] and
//! `postings.rs`) into its own SQLite file, `index.sqlite3`, with its own write lock, so it
//! never holds up a journal commit. Its progress (`indexed_seq`) is committed in the same
//! transaction as its rows, so after a crash it resumes exactly where it stopped. Delete the
//! file and it is rebuilt from the journal. Queries wait (briefly) for the index to reach the
//! journal's last commit, so a reader sees its own writes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use crate::event::Brief;

/// Rows the indexer takes from the journal per transaction. Bursts of 100,000 helped while the
/// lookup table was not partitioned (more entries per leaf write); with partitions, batches ran
/// as fast with 20,000 (306,000–326,000 against 309,000–326,000 events/s), with a lower p99
/// (36–39 against 42–47 ms) and a fifth of the memory for the burst's sorted entries.
pub const INDEX_BATCH: usize = 20_000;
/// How often lists of events below the journal's oldest `seq` (expired by retention) are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Lists lead with `seq >> PART_BITS`: the table is a run of partitions of 65,536 events
/// each, in `seq` order, with the hashed keys sorted inside each. A burst of new lists then
/// lands in the newest one or two partitions, and rewrites their leaves only. With the hash
/// first, a burst's rows were spread over the whole table, so the pages a burst rewrote grew
/// with the index, up to all of it once the journal held a few million events. A lookup seeks
/// once per partition, newest first, until it has a page (a 30-day journal of 30 million events
/// has about 460). Retention drops whole partitions.
pub const PART_BITS: u32 = 16;

/// The partition an entry of event `seq` belongs to.
pub fn part_of(seq: i64) -> i64 {
    seq >> PART_BITS
}

/// `lookup` holds one list per partition, key hash and indexer burst (`postings.rs`).
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS lookup (
    part INTEGER NOT NULL,
    k    INTEGER NOT NULL,
    last INTEGER NOT NULL,
    seqs BLOB    NOT NULL,
    PRIMARY KEY (part, k, last)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"#;

/// What the writer has committed and what the indexer has caught up to, shared by both threads
/// and the query path.
#[derive(Debug, Default)]
pub struct Progress {
    /// The highest `seq` committed to the journal.
    pub committed: AtomicI64,
    /// The highest `seq` whose lookup lists are committed to the index.
    pub indexed: AtomicI64,
    /// Set by `Journal::close`; the indexer finishes its batch and exits.
    pub stop: AtomicBool,
    /// The highest `seq` the pipeline has saved in its snapshot. Retention deletes no event
    /// above it: after `kill -9` the pipeline replays the journal from its snapshot, and an
    /// event deleted before it was in one would drop out of the counts. 0 (nothing) until the
    /// pipeline starts.
    pub checkpointed: AtomicI64,
    /// Set by the writer when retention waits for [`Progress::checkpointed`]: the pipeline
    /// then saves its snapshot sooner than its minute.
    pub checkpoint_wanted: AtomicBool,
}

/// The fields one can look an event up by. Each becomes a 64-bit hash in `lookup.k`; a match is
/// always confirmed against the parsed event, so a hash collision costs a row read, never a
/// wrong answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupKey {
    Email(String),
    MessageId(u64),
    CustomId(String),
    /// A campaign id (as decimal text) or a `customcampaign` name, raw or decoded. Ids and names
    /// share one key space so that `campaign=2024` finds either.
    Campaign(String),
}

const EMAIL: u8 = 1;
const MESSAGE_ID: u8 = 2;
const CUSTOM_ID: u8 = 3;
const CAMPAIGN: u8 = 4;

impl LookupKey {
    pub fn hash(&self) -> i64 {
        match self {
            LookupKey::Email(v) => hash_tagged(EMAIL, v),
            LookupKey::MessageId(v) => hash_tagged(MESSAGE_ID, itoa::Buffer::new().format(*v)),
            LookupKey::CustomId(v) => hash_tagged(CUSTOM_ID, v),
            LookupKey::Campaign(v) => hash_tagged(CAMPAIGN, v),
        }
    }

    /// Every key an event can be found by. Empty values and zero ids are not indexed.
    #[cfg(test)]
    pub fn of(event: &Brief) -> Vec<LookupKey> {
        let mut keys = Vec::with_capacity(5);
        each_key(event, |tag, text| {
            let text = text.to_string();
            keys.push(match tag {
                EMAIL => LookupKey::Email(text),
                MESSAGE_ID => LookupKey::MessageId(text.parse().unwrap_or_default()),
                CUSTOM_ID => LookupKey::CustomId(text),
                _ => LookupKey::Campaign(text),
            });
        });
        keys
    }

    /// The hashes of [`LookupKey::of`], without building the keys: what the indexer stores.
    pub fn hashes_of(event: &Brief, mut each: impl FnMut(i64)) {
        each_key(event, |tag, text| each(hash_tagged(tag, text)));
    }
}

/// Calls `visit` with the tag and the text of each key `event` can be found by, in the order of
/// [`LookupKey::of`]. A campaign name equal to the campaign id, or a decoded name equal to the
/// raw one, is one key, not two. Nothing is allocated unless the name has encoded words.
fn each_key(event: &Brief, mut visit: impl FnMut(u8, &str)) {
    if !event.email.is_empty() {
        visit(EMAIL, &event.email);
    }
    let mut digits = itoa::Buffer::new();
    if event.message_id.0 != 0 {
        visit(MESSAGE_ID, digits.format(event.message_id.0));
    }
    if let Some(id) = event.custom_id.as_deref().filter(|s| !s.is_empty()) {
        visit(CUSTOM_ID, id);
    }
    let campaign_id = (event.campaign_id != 0).then(|| digits.format(event.campaign_id));
    if let Some(id) = campaign_id {
        visit(CAMPAIGN, id);
    }
    let raw = event.custom_campaign.as_deref().filter(|s| !s.is_empty());
    if let Some(raw) = raw.filter(|&raw| Some(raw) != campaign_id) {
        visit(CAMPAIGN, raw);
    }
    let decoded = event.custom_campaign_decoded();
    if let Some(name) = decoded.as_deref().filter(|s| !s.is_empty())
        && Some(name) != raw
        && Some(name) != campaign_id
    {
        visit(CAMPAIGN, name);
    }
}

/// The 64-bit hash of a key: xxh3 of its tag byte followed by its text. The hashed text is
/// built on the stack (it runs for several keys of every event), and on the heap only when it
/// is long. The hashes are stored, so this must not change.
fn hash_tagged(tag: u8, text: &str) -> i64 {
    let mut stack = [0u8; 128];
    let mut heap = Vec::new();
    let buf = if text.len() < stack.len() {
        &mut stack[..text.len() + 1]
    } else {
        heap.resize(text.len() + 1, 0);
        &mut heap[..]
    };
    buf[0] = tag;
    buf[1..].copy_from_slice(text.as_bytes());
    xxhash_rust::xxh3::xxh3_64(buf) as i64
}

/// Opens (or creates) the index file. `synchronous=NORMAL`: losing the last index transactions
/// in a power cut only means re-indexing them from the journal, which holds the truth.
/// An index with an older layout (a row per event, with or without partitions) is deleted,
/// file and all, and rebuilt from the journal in the background, as if it had been deleted by
/// hand.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = open_file(path)?;
    let older: bool = conn.query_row(
        "SELECT count(*) = 1 FROM sqlite_schema WHERE name = 'lookup' \
         AND NOT EXISTS (SELECT 1 FROM pragma_table_info('lookup') WHERE name = 'seqs')",
        [],
        |r| r.get(0),
    )?;
    if !older {
        conn.execute_batch(SCHEMA)?;
        return Ok(conn);
    }
    drop(conn);
    tracing::info!(path = %path.display(), "the lookup index has an older layout: rebuilding it from the journal");
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(super::schema::refuse(format!(
                    "cannot delete the old lookup index {}: {e}",
                    path.display()
                )));
            }
        }
    }
    let conn = open_file(path)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn open_file(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -8192)?;
    Ok(conn)
}

/// Reads the index's progress, resetting the index if it is ahead of the journal (a journal
/// restored from an older copy): then it is rebuilt from scratch.
pub fn indexed_seq(index: &Connection, journal_max: i64) -> rusqlite::Result<i64> {
    let seq: i64 = index
        .query_row(
            "SELECT value FROM meta WHERE key = 'indexed_seq'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    if seq > journal_max {
        tracing::warn!(
            seq,
            journal_max,
            "lookup index is ahead of the journal; rebuilding it"
        );
        index.execute_batch("DELETE FROM lookup; DELETE FROM meta;")?;
        return Ok(0);
    }
    Ok(seq)
}

/// Puts the calling thread in Linux's `SCHED_IDLE` class: it runs only on a core nothing else
/// wants. The index is derived work: acknowledging events comes first, and the index catches
/// up in the gaps.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads `param` and changes only the calling thread (pid 0).
        let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if result != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the indexer's priority");
        }
    }
}

/// The indexer thread's state.
pub struct Indexer {
    pub journal: Connection,
    pub index: Connection,
    pub progress: Arc<Progress>,
    /// The newest chunks, read before SQLite; `None` in tests that index a journal on disk.
    pub recent: Option<Arc<super::Recent>>,
    /// Events per burst: [`INDEX_BATCH`], smaller in tests.
    pub batch: usize,
}

impl Indexer {
    /// Tails the journal until `progress.stop` is set. Errors (a full disk under the index) are
    /// logged and retried: the journal, and so every acknowledged event, is unaffected.
    pub fn run(mut self) {
        lower_thread_priority();
        let mut next_purge = Instant::now();
        let mut failing = false;
        while !self.progress.stop.load(Ordering::Acquire) {
            match self.step() {
                // A short batch means caught up. Waiting for the next tick (or a query's wake-up)
                // indexes steady traffic in bursts; stepping again at once took a transaction
                // per journal commit, which cost single-event traffic a third more CPU.
                Ok(n) if n < self.batch => {
                    failing = false;
                    if Instant::now() >= next_purge {
                        if let Err(e) = self.purge_expired() {
                            tracing::warn!(error = %e, "lookup index purge failed; will retry");
                        }
                        next_purge = Instant::now() + PURGE_EVERY;
                    }
                    std::thread::park_timeout(Duration::from_millis(500));
                }
                Ok(_) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "lookup index update failed; queries may lag until it recovers");
                    }
                    failing = true;
                    std::thread::park_timeout(Duration::from_secs(1));
                }
            }
        }
    }

    /// Indexes the next batch of journal rows; returns how many it took.
    pub(super) fn step(&mut self) -> rusqlite::Result<usize> {
        let from = self.progress.indexed.load(Ordering::Acquire);
        // Sorted inserts walk the B-tree once from left to right instead of touching a random
        // page per entry: several times less work for the same rows.
        let mut entries: Vec<(i64, i64)> = Vec::new();
        let last = super::chunks::newest_briefs(
            &self.journal,
            self.recent.as_deref(),
            super::Reader::Indexer,
            from,
            self.batch,
            |events| {
                for tailed in events {
                    LookupKey::hashes_of(&tailed.brief, |k| entries.push((k, tailed.seq)));
                }
            },
        )?;
        let Some(last) = last else {
            return Ok(0);
        };
        // In the table's order; the partition is not stored in memory, which halves the burst's
        // size against a third field.
        entries.sort_unstable_by_key(|&(k, seq)| (part_of(seq), k, seq));
        entries.dedup();
        let tx = self.index.transaction()?;
        {
            // Bursts never overlap (a burst's lists commit with its progress), so no list is
            // ever replaced; REPLACE keeps the indexer going if one somehow were.
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO lookup (part, k, last, seqs) VALUES (?1, ?2, ?3, ?4)",
            )?;
            super::postings::lists(&entries, |part, k, last, seqs| {
                insert.execute(params![part, k, last, seqs]).map(drop)
            })?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('indexed_seq', ?1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [last],
            )?;
        }
        tx.commit()?;
        self.progress.indexed.store(last, Ordering::Release);
        Ok((last - from) as usize)
    }

    /// Drops the partitions whose events retention has all deleted. Lists naming deleted events
    /// in the oldest partition still in use stay until it goes; a lookup skips those events,
    /// since it reads every event it is pointed at.
    fn purge_expired(&mut self) -> rusqlite::Result<()> {
        let oldest: Option<i64> =
            self.journal
                .query_row("SELECT min(first_seq) FROM chunks", [], |r| r.get(0))?;
        let below = oldest.unwrap_or_else(|| self.progress.indexed.load(Ordering::Acquire) + 1);
        let deleted = self
            .index
            .execute("DELETE FROM lookup WHERE part < ?1", [part_of(below)])?;
        if deleted > 0 {
            tracing::debug!(deleted, "purged lookup lists of expired events");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_event;

    /// A journal holding one chunk per `(first_seq, count)`, its events all to `a@example.com`
    /// (`MessageID` 1000 + `seq`), indexed in bursts of `batch` events; a reader with the index
    /// attached, as the query API has it; and the indexer.
    fn indexed_journal(
        chunks: &[(i64, i64)],
        batch: usize,
    ) -> (tempfile::TempDir, Connection, Indexer) {
        let dir = tempfile::tempdir().unwrap();
        let journal_path = dir.path().join("journal.sqlite3");
        let index_path = dir.path().join("index.sqlite3");
        let arrays: Vec<(i64, String)> = chunks
            .iter()
            .map(|&(first_seq, count)| {
                let events: Vec<String> = (first_seq..first_seq + count)
                    .map(|seq| {
                        format!(
                            r#"{{"event":"open","time":1,"MessageID":{},"email":"a@example.com"}}"#,
                            1000 + seq
                        )
                    })
                    .collect();
                (first_seq, format!("[{}]", events.join(",")))
            })
            .collect();
        let rows: Vec<(i64, &str)> = arrays.iter().map(|(f, a)| (*f, a.as_str())).collect();
        crate::journal::test_journal(dir.path(), &rows);
        let first_seq = chunks[0].0;
        let total: i64 = chunks.iter().map(|c| c.1).sum();
        let progress = Arc::new(Progress::default());
        progress.indexed.store(first_seq - 1, Ordering::Release);
        let mut indexer = Indexer {
            journal: crate::journal::schema::open_reader(&journal_path).unwrap(),
            index: open(&index_path).unwrap(),
            progress,
            recent: None,
            batch,
        };
        let mut indexed = 0;
        while indexed < total as usize {
            let burst = indexer.step().unwrap();
            assert!(burst > 0 && burst <= batch);
            indexed += burst;
        }
        assert_eq!(indexed, total as usize);
        let reader = crate::journal::schema::open_reader(&journal_path).unwrap();
        reader
            .execute("ATTACH DATABASE ?1 AS idx", [index_path.to_string_lossy()])
            .unwrap();
        (dir, reader, indexer)
    }

    /// The seqs a lookup by email finds, newest first.
    fn found(reader: &Connection, limit: usize, before: Option<i64>) -> (Vec<i64>, Option<String>) {
        let filter = crate::journal::EventFilter {
            email: Some("a@example.com".into()),
            limit,
            before,
            ..Default::default()
        };
        let page = crate::journal::query::events(reader, &filter).unwrap();
        let seqs: Vec<i64> = page.events.iter().map(|e| e.seq).collect();
        (seqs, page.next_cursor)
    }

    #[test]
    fn a_lookup_pages_newest_first_across_partitions() {
        // Seqs 65,236 to 65,935: partitions 0 and 1, and more than one round of 500 candidates.
        let first = (1 << PART_BITS) - 300;
        let (_dir, reader, _indexer) = indexed_journal(&[(first, 700)], INDEX_BATCH);
        let page = |limit, before| found(&reader, limit, before);
        let (all, cursor) = page(1000, None);
        assert_eq!(all, (first..first + 700).rev().collect::<Vec<_>>());
        assert_eq!(cursor, None);
        let (newest, cursor) = page(600, None);
        assert_eq!(newest, all[..600]);
        let (rest, cursor) = page(600, cursor.map(|c| c.parse().unwrap()));
        assert_eq!(rest, all[600..]);
        assert_eq!(cursor, None);
        let (none, _) = page(10, Some(first));
        assert!(none.is_empty());
    }

    /// Bursts of 64 events give the email a list per burst and partition; pages of every size,
    /// with cursors inside lists and between them, still give each event once, newest first.
    #[test]
    fn a_lookup_pages_through_the_lists_of_many_bursts() {
        let first = (1 << PART_BITS) - 300;
        let (_dir, reader, indexer) = indexed_journal(&[(first, 400), (first + 400, 300)], 64);
        let lists: i64 = indexer
            .index
            .query_row(
                "SELECT count(*) FROM lookup WHERE k = ?1",
                [LookupKey::Email("a@example.com".into()).hash()],
                |r| r.get(0),
            )
            .unwrap();
        // 700 events in bursts of 64, one of which crosses into partition 1.
        assert_eq!(lists, 12);
        let all: Vec<i64> = (first..first + 700).rev().collect();
        assert_eq!(found(&reader, 1000, None).0, all);
        for limit in [1, 7, 64, 65, 499, 501] {
            let mut paged = Vec::new();
            let mut before = None;
            loop {
                let (seqs, cursor) = found(&reader, limit, before);
                assert!(seqs.len() <= limit);
                paged.extend(seqs);
                match cursor {
                    Some(c) => before = Some(c.parse().unwrap()),
                    None => break,
                }
            }
            assert_eq!(paged, all, "pages of {limit}");
        }
        // A cursor inside a list, one at the start of a list, and one below every event.
        for before in [first + 100, first + 128, first + 1] {
            let expected: Vec<i64> = (first..before).rev().collect();
            assert_eq!(found(&reader, 1000, Some(before)).0, expected);
        }
        assert!(found(&reader, 10, Some(first)).0.is_empty());
    }

    #[test]
    fn a_purge_drops_only_the_partitions_whose_events_are_all_gone() {
        // Partition 0 holds seqs up to 65,535; the three chunks end it and start partition 1.
        let p1 = 1 << PART_BITS;
        let (dir, reader, mut indexer) =
            indexed_journal(&[(p1 - 10, 10), (p1, 10), (p1 + 10, 10)], INDEX_BATCH);
        let entries = |index: &Connection, part: i64| -> i64 {
            index
                .query_row("SELECT count(*) FROM lookup WHERE part = ?1", [part], |r| {
                    r.get(0)
                })
                .unwrap()
        };
        let in_partition_1 = entries(&indexer.index, 1);
        assert!(entries(&indexer.index, 0) > 0 && in_partition_1 > 0);
        // Retention deleted the first two chunks: all of partition 0, half of partition 1.
        Connection::open(dir.path().join("journal.sqlite3"))
            .unwrap()
            .execute("DELETE FROM chunks WHERE first_seq < ?1", [p1 + 10])
            .unwrap();
        indexer.purge_expired().unwrap();
        assert_eq!(entries(&indexer.index, 0), 0);
        assert_eq!(
            entries(&indexer.index, 1),
            in_partition_1,
            "partition 1 still has live events"
        );
        // The entries of its deleted events stay, and a lookup passes over them.
        let (seqs, _) = found(&reader, 100, None);
        assert_eq!(seqs, (p1 + 10..p1 + 20).rev().collect::<Vec<_>>());
    }

    #[test]
    fn an_index_with_an_older_layout_is_rebuilt() {
        let older_layouts = [
            "CREATE TABLE lookup (k INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (k, seq)) WITHOUT ROWID;
             INSERT INTO lookup VALUES (1, 1);",
            "CREATE TABLE lookup (part INTEGER NOT NULL, k INTEGER NOT NULL, seq INTEGER NOT NULL,
                PRIMARY KEY (part, k, seq)) WITHOUT ROWID;
             INSERT INTO lookup VALUES (0, 1, 1);",
        ];
        for layout in older_layouts {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("index.sqlite3");
            let old = Connection::open(&path).unwrap();
            old.execute_batch(layout).unwrap();
            old.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 INSERT INTO meta VALUES ('indexed_seq', 1);",
            )
            .unwrap();
            drop(old);
            let conn = open(&path).unwrap();
            assert_eq!(
                indexed_seq(&conn, 1).unwrap(),
                0,
                "indexed again from the start"
            );
            let columns: Vec<String> = conn
                .prepare("SELECT name FROM pragma_table_info('lookup')")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(columns, ["part", "k", "last", "seqs"]);
        }
    }

    /// A directory made append-only (`chattr +a`) for as long as it lives: files can be created
    /// in it but none can be removed, not even by root. Needs root and a file system with file
    /// attributes (ext4 here); where it cannot be set, the error says why.
    struct AppendOnly<'a>(&'a Path);

    impl<'a> AppendOnly<'a> {
        fn set(dir: &'a Path) -> Result<AppendOnly<'a>, String> {
            let out = std::process::Command::new("chattr")
                .arg("+a")
                .arg(dir)
                .output()
                .map_err(|e| format!("cannot run chattr: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
            }
            Ok(AppendOnly(dir))
        }
    }

    impl Drop for AppendOnly<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .arg("-a")
                .arg(self.0)
                .status();
        }
    }

    /// An index with an older layout that cannot be deleted is refused, by name, and left
    /// whole: the journal does not open on an index it could not replace. (The server then
    /// exits with this message; deleting the file by hand, or fixing its directory, is the way
    /// out.)
    #[test]
    fn an_older_index_that_cannot_be_deleted_is_refused_by_name_and_left_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite3");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE lookup (k INTEGER NOT NULL, seq INTEGER NOT NULL,
                    PRIMARY KEY (k, seq)) WITHOUT ROWID;
                 INSERT INTO lookup VALUES (1, 1);",
            )
            .unwrap();
        let locked = match AppendOnly::set(dir.path()) {
            Ok(locked) => locked,
            Err(why) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED: cannot make a directory append-only ({why}); run as root");
                return;
            }
            Err(why) => panic!("cannot make a directory append-only ({why}); CI runs as root"),
        };
        let message = open(&path)
            .expect_err("an index that cannot be deleted was opened")
            .to_string();
        assert!(
            message.contains("cannot delete the old lookup index")
                && message.contains(&path.display().to_string()),
            "{message}"
        );
        drop(locked);
        let rows: i64 = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM lookup WHERE k = 1 AND seq = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 1, "the old index was changed");
    }

    /// The indexer stores hashes without building keys; they must be the hashes of the keys a
    /// query builds, and the same in every release (an index on disk outlives the binary).
    #[test]
    fn the_stored_hashes_are_the_keys_hashes_and_do_not_change() {
        let mut checked = 0;
        for (path, raw) in crate::event::fixture_events() {
            let event = parse_event(&raw).unwrap();
            let brief = event.brief();
            let mut stored = Vec::new();
            LookupKey::hashes_of(&brief, |k| stored.push(k));
            let keys: Vec<i64> = LookupKey::of(&brief).iter().map(LookupKey::hash).collect();
            assert_eq!(stored, keys, "{}", path.display());
            checked += stored.len();
        }
        assert!(checked >= 20, "only {checked} keys checked");
        // xxh3 of the tag byte and the text, short and past the stack buffer.
        let long = "x".repeat(300);
        for (key, tag, text) in [
            (LookupKey::Email("a@b.c".into()), 1, "a@b.c"),
            (
                LookupKey::MessageId(19_421_777_835_146_490),
                2,
                "19421777835146490",
            ),
            (LookupKey::CustomId(long.clone()), 3, long.as_str()),
            (LookupKey::Campaign("café".into()), 4, "café"),
        ] {
            let text = [&[tag][..], text.as_bytes()].concat();
            assert_eq!(key.hash(), xxhash_rust::xxh3::xxh3_64(&text) as i64);
        }
        // Computed by the release that wrote the first indexes.
        assert_eq!(
            LookupKey::Email("a@b.c".into()).hash(),
            -3_584_398_846_857_327_359
        );
    }

    #[test]
    fn every_findable_field_gets_a_key_and_empty_ones_do_not() {
        let e = parse_event(
            r#"{"event":"sent","MessageID":5,"email":"a@b.c","CustomID":"o-1","mj_campaign_id":7,"customcampaign":"=?utf-8?Q?caf=C3=A9?="}"#,
        )
        .unwrap();
        let keys = LookupKey::of(&e.brief());
        assert_eq!(
            keys,
            vec![
                LookupKey::Email("a@b.c".into()),
                LookupKey::MessageId(5),
                LookupKey::CustomId("o-1".into()),
                LookupKey::Campaign("7".into()),
                LookupKey::Campaign("=?utf-8?Q?caf=C3=A9?=".into()),
                LookupKey::Campaign("café".into()),
            ]
        );
        let test_event = parse_event(
            r#"{"event":"bounce","MessageID":0,"email":"","CustomID":"","mj_campaign_id":0}"#,
        )
        .unwrap();
        assert!(LookupKey::of(&test_event.brief()).is_empty());
        let mut none = 0;
        LookupKey::hashes_of(&test_event.brief(), |_| none += 1);
        assert_eq!(none, 0);
        // A name equal to the id, or decoded to itself, is one key.
        let same =
            parse_event(r#"{"event":"sent","mj_campaign_id":7,"customcampaign":"7"}"#).unwrap();
        assert_eq!(
            LookupKey::of(&same.brief()),
            vec![LookupKey::Campaign("7".into())]
        );
        assert_ne!(
            LookupKey::Email("x".into()).hash(),
            LookupKey::CustomId("x".into()).hash()
        );
    }
}
