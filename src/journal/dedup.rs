//! Deduplication: whether an event is already stored, found by its key (`Event::dedup_key`).
//!
//! The promise: once the commit holding an event returns, every later claim of the same key
//! finds it, in this process or after any restart, until retention deletes the event.
//!
//! Keys live in two places. The `dedup` table holds the key of every stored event up to
//! `meta.dedup_seq`. A key stored after that is in the table or in memory ([`Dedup::recent`]):
//! a small commit keeps its keys in memory, and they go into the table in one sorted sweep once
//! [`SWEEP_KEYS`] have gathered, inside an ordinary commit, together with the new `dedup_seq`.
//! Writing each key in its own small commit cost the writer a third of its time with single
//! events: the keys of concurrent events land far apart in the tree, so a commit of 13 events
//! rewrote 6 to 8 leaves of 16 KiB (measured). A large commit (a Version 2 batch) writes its
//! keys straight into the table: they share leaves already, and a second pass over them cost
//! more than it saved (measured). The in-memory keys are never the only copy of anything: their
//! events are on disk before any acknowledgement, and at start [`Dedup::load`] recomputes them
//! from the chunks stored after `dedup_seq`.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::event::DedupKey;

/// How many in-memory keys trigger a sweep into the table. Sweeping 8,192 keys takes about
/// 4 ms once (measured under single events), against a handful of 16 KiB leaves rewritten per
/// commit without it. It bounds the memory (about 50 bytes a key) and the work of a restart
/// (one parse per key).
pub const SWEEP_KEYS: usize = 8192;

/// A commit of at least this many events writes its keys straight into the table.
pub const DIRECT_CLAIM_EVENTS: usize = 256;

/// Keys one statement of the sweep inserts.
const SWEEP_ROWS: usize = 128;

const INSERT_KEY: &str = "INSERT OR IGNORE INTO dedup (key, seq) VALUES (?1, ?2)";
/// Deletes one event's key; the `seq` check leaves a key that belongs to another event.
pub(super) const DELETE_KEY: &str = "DELETE FROM dedup WHERE key = ?1 AND seq = ?2";

/// [`INSERT_KEY`] for [`SWEEP_ROWS`] keys at once.
fn sweep_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let rows = vec!["(?, ?)"; SWEEP_ROWS].join(", ");
        format!("INSERT OR IGNORE INTO dedup (key, seq) VALUES {rows}")
    })
}

/// The `meta` row that says up to which `seq` the table holds every key.
const DEDUP_SEQ: &str = "dedup_seq";

#[derive(Debug, Default)]
pub struct Dedup {
    /// Key → `seq` of every stored event above `dedup_seq` (plus those claimed in the open
    /// transaction). foldhash, as in the windows: a key is looked up for every event, and SipHash
    /// showed in the writer's profile. Its seed is random per process, like SipHash's.
    recent: HashMap<DedupKey, i64, foldhash::fast::RandomState>,
    /// Keys claimed in the open transaction: they leave `recent` again if it rolls back.
    staged: Vec<DedupKey>,
    /// Whether the open transaction swept `recent` into the table: if it commits, `recent` is
    /// empty from then on.
    swept: bool,
}

impl Dedup {
    /// Recomputes the keys of the events stored after `meta.dedup_seq`. Reads only, so a journal
    /// on a full or read-only disk still opens.
    pub fn load(conn: &Connection) -> rusqlite::Result<Dedup> {
        let after = swept_seq(conn)?.unwrap_or(0);
        let mut dedup = Dedup::default();
        super::chunks::each_event(conn, after, |seq, event| {
            dedup.recent.insert(event.dedup_key(), seq);
            Ok(())
        })?;
        if !dedup.recent.is_empty() {
            tracing::info!(
                keys = dedup.recent.len(),
                after_seq = after,
                "dedup keys of the latest events recomputed from the journal"
            );
        }
        Ok(dedup)
    }

    /// Starts claiming keys in the open transaction of `conn`. A large commit passes `large`:
    /// every key it holds, in order, and the `seq` its first new event gets. Its keys are then
    /// claimed in the table all at once ([`Dedup::claim_large`]); a small commit's keys are
    /// claimed one at a time, in memory.
    pub fn claimer<'c>(
        &'c mut self,
        conn: &'c Connection,
        large: Option<(&[DedupKey], i64)>,
    ) -> rusqlite::Result<Claimer<'c>> {
        Ok(match large {
            Some((keys, first_seq)) => {
                Claimer::Decided(self.claim_large(conn, keys, first_seq)?.into_iter())
            }
            None => Claimer::OneByOne {
                statement: conn.prepare_cached("SELECT 1 FROM dedup WHERE key = ?1")?,
                dedup: self,
            },
        })
    }

    /// Claims every key of a large commit straight in the table: `keys` in the commit's order,
    /// the new ones getting `seq`s from `first_seq` up, in that order. Returns each key with
    /// the `seq` of its event if it is new, `None` if it is a duplicate.
    ///
    /// A key held in memory, or met earlier in the commit, is a duplicate without asking the
    /// table. The others go in [`SWEEP_ROWS`] to an `INSERT OR IGNORE`, as in the sweep: with a
    /// statement per key, the claims were half the writer's instructions under batches, and
    /// this cut the writer's total by 12 % (callgrind: 8,400 → 7,400 per event). When a
    /// statement inserts fewer rows than it was given, some key was stored already: the rows it
    /// inserted are deleted, and its group is claimed one key at a time, which tells which. A
    /// retried batch takes that path; new events, nearly all of them, do not. (A savepoint
    /// around each group, tried first, made batches 5 % slower over six rounds: SQLite copies
    /// each page a savepoint touches into a sub-journal.)
    fn claim_large(
        &mut self,
        conn: &Connection,
        keys: &[DedupKey],
        first_seq: i64,
    ) -> rusqlite::Result<Vec<(DedupKey, Option<i64>)>> {
        let mut seen: std::collections::HashSet<&DedupKey, foldhash::fast::RandomState> =
            std::collections::HashSet::with_capacity_and_hasher(keys.len(), Default::default());
        let candidates: Vec<usize> = (0..keys.len())
            .filter(|&i| !self.recent.contains_key(&keys[i]) && seen.insert(&keys[i]))
            .collect();
        let mut seqs = vec![None; keys.len()];
        let mut seq = first_seq;
        let mut one = conn.prepare_cached(INSERT_KEY)?;
        // One statement per key: the changed row count tells whether each was new.
        let mut one_at_a_time =
            |group: &[usize], seqs: &mut [Option<i64>], seq: &mut i64| -> rusqlite::Result<()> {
                for &i in group {
                    if one.execute(params![&keys[i][..], *seq])? == 1 {
                        seqs[i] = Some(*seq);
                        *seq += 1;
                    }
                }
                Ok(())
            };
        let mut groups = candidates.chunks_exact(SWEEP_ROWS);
        for group in groups.by_ref() {
            let mut rows: Vec<SortedKey> = group
                .iter()
                .zip(seq..)
                .map(|(&i, seq)| (sort_order(&keys[i]), &keys[i], seq))
                .collect();
            rows.sort_unstable_by_key(|&(order, _, _)| order);
            let inserted = insert_rows(&mut conn.prepare_cached(sweep_sql())?, &rows)?;
            if inserted == rows.len() {
                for (&i, s) in group.iter().zip(seq..) {
                    seqs[i] = Some(s);
                }
                seq += group.len() as i64;
            } else {
                // Undo the group's rows: every key stored before has a `seq` below `first_seq`,
                // so `(key, seq)` matches only the rows this statement inserted.
                let mut undo = conn.prepare_cached(DELETE_KEY)?;
                for (_, key, seq) in &rows {
                    undo.execute(params![&key[..], seq])?;
                }
                one_at_a_time(group, &mut seqs, &mut seq)?;
            }
        }
        one_at_a_time(groups.remainder(), &mut seqs, &mut seq)?;
        Ok(keys.iter().copied().zip(seqs).collect())
    }

    /// Called inside the transaction, just before `COMMIT`, with the last `seq` it stored:
    /// sweeps the in-memory keys into the table once there are enough of them, or always when
    /// `force` is set (a graceful stop), so that the next start has nothing to recompute.
    pub fn before_commit(
        &mut self,
        conn: &Connection,
        last_seq: i64,
        force: bool,
    ) -> rusqlite::Result<()> {
        if self.recent.len() < SWEEP_KEYS && !force {
            return Ok(());
        }
        // In key order, each leaf of the tree is written once, however many keys it takes.
        // Compared as integers: byte-wise comparisons of 8,192 keys (`memcmp` each time) were
        // a tenth of the writer's instructions under single events. The integers are taken
        // out of the map first, so the sort moves them in one array instead of following
        // pointers into the map at each comparison.
        let mut keys: Vec<SortedKey> = self
            .recent
            .iter()
            .map(|(key, &seq)| (sort_order(key), key, seq))
            .collect();
        keys.sort_unstable_by_key(|&(order, _, _)| order);
        // Many rows per statement: with one row each, a statement's own bind, step, reset and
        // halt cost as much as the insert (measured under single events: 5,500 against 2,900
        // instructions per key, and 7 % more requests per second).
        let mut rows = keys.chunks_exact(SWEEP_ROWS);
        let mut insert = conn.prepare_cached(sweep_sql())?;
        for group in rows.by_ref() {
            insert_rows(&mut insert, group)?;
        }
        let mut insert = conn.prepare_cached(INSERT_KEY)?;
        for (_, key, seq) in rows.remainder() {
            insert.execute(params![&key[..], seq])?;
        }
        set_swept_seq(conn, last_seq)?;
        self.swept = true;
        Ok(())
    }

    /// The transaction committed: its claims are final.
    pub fn committed(&mut self) {
        self.staged.clear();
        if std::mem::take(&mut self.swept) {
            self.recent.clear();
        }
    }

    /// The transaction rolled back: its claims never happened, and a sweep in it neither.
    pub fn rolled_back(&mut self) {
        for key in self.staged.drain(..) {
            self.recent.remove(&key);
        }
        self.swept = false;
    }

    /// Retention committed the deletion of these events: their in-memory keys go too. (Their
    /// rows in the table were deleted in the same transaction as the events.)
    pub fn forget(&mut self, expired: impl IntoIterator<Item = (i64, DedupKey)>) {
        for (seq, key) in expired {
            if self.recent.get(&key) == Some(&seq) {
                self.recent.remove(&key);
            }
        }
    }

    /// Keys held in memory, not yet in the table.
    #[cfg(test)]
    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }
}

/// A number that orders keys as their bytes do, which is how the table's index orders them.
fn sort_order(key: &DedupKey) -> (u128, u32) {
    const _: () = assert!(
        crate::event::DEDUP_KEY_LEN == 20,
        "sort_order reads 16 + 4 bytes"
    );
    let mut head = [0u8; 16];
    head.copy_from_slice(&key[..16]);
    let mut tail = [0u8; 4];
    tail.copy_from_slice(&key[16..]);
    (u128::from_be_bytes(head), u32::from_be_bytes(tail))
}

/// A key, the number that orders it as the table does, and its event's `seq`.
type SortedKey<'k> = ((u128, u32), &'k DedupKey, i64);

/// Binds [`SWEEP_ROWS`] rows to `insert` (a [`sweep_sql`] statement) and runs it. Returns how
/// many rows it inserted: fewer than given when some key was already stored.
fn insert_rows(
    insert: &mut rusqlite::CachedStatement<'_>,
    rows: &[SortedKey],
) -> rusqlite::Result<usize> {
    debug_assert_eq!(rows.len(), SWEEP_ROWS);
    for (i, (_, key, seq)) in rows.iter().enumerate() {
        insert.raw_bind_parameter(2 * i + 1, &key[..])?;
        insert.raw_bind_parameter(2 * i + 2, seq)?;
    }
    insert.raw_execute()
}

/// Claims keys within one transaction, in the order of its events.
pub enum Claimer<'c> {
    /// A small commit: each key is looked up as it comes, and kept in memory if it is new.
    OneByOne {
        dedup: &'c mut Dedup,
        statement: rusqlite::CachedStatement<'c>,
    },
    /// A large commit: its keys were claimed up front ([`Dedup::claim_large`]), with the `seq`
    /// of each new one.
    Decided(std::vec::IntoIter<(DedupKey, Option<i64>)>),
}

impl Claimer<'_> {
    /// Claims `key` for the event that would get `seq`. Returns `false` when an event with this
    /// key is already stored (or claimed earlier in the same transaction): a duplicate.
    pub fn claim(&mut self, key: &DedupKey, seq: i64) -> rusqlite::Result<bool> {
        match self {
            Claimer::Decided(decided) => {
                let (claimed, assigned) = decided.next().ok_or_else(|| {
                    rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
                        Some("more keys claimed than the commit was opened with".to_string()),
                    )
                })?;
                debug_assert_eq!(&claimed, key, "keys claimed out of order");
                debug_assert!(
                    assigned.is_none_or(|s| s == seq),
                    "seq {seq} != {assigned:?}"
                );
                Ok(assigned.is_some())
            }
            Claimer::OneByOne { dedup, statement } => {
                if dedup.recent.contains_key(key) || statement.exists([&key[..]])? {
                    return Ok(false);
                }
                dedup.recent.insert(*key, seq);
                dedup.staged.push(*key);
                Ok(true)
            }
        }
    }
}

/// The `seq` up to which the table holds every key; `None` for a journal that has not recorded
/// it (then every stored event's key is recomputed at start, which is always correct).
pub fn swept_seq(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let value: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [DEDUP_SEQ], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(value.and_then(|v| v.parse().ok()))
}

/// Records that the table holds every key up to `seq`.
pub fn set_swept_seq(conn: &Connection, seq: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![DEDUP_SEQ, seq.to_string()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> (tempfile::TempDir, Connection) {
        crate::journal::test_journal_in_tempdir(&[])
    }

    /// The key of `{"event":"sent","time":1,"MessageID":id,"email":"a@example.com"}`.
    fn key(id: u64) -> DedupKey {
        crate::event::dedup_key("sent", Some(1), id, "a@example.com", "")
    }

    #[test]
    fn the_sweep_order_is_the_byte_order_of_the_keys() {
        // Keys that differ in the time, the message, the hash, and only in the last byte.
        let mut keys: Vec<DedupKey> = (0..2000u64)
            .map(|i| crate::event::dedup_key("open", Some((i % 7) as i64), i % 13, "a@b", ""))
            .collect();
        let mut last_byte = keys[0];
        last_byte[19] ^= 1;
        keys.push(last_byte);
        let mut by_bytes = keys.clone();
        by_bytes.sort_unstable();
        keys.sort_unstable_by_key(sort_order);
        assert_eq!(keys, by_bytes);
    }

    fn table_keys(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM dedup", [], |r| r.get(0))
            .unwrap()
    }

    /// Claims `ids` in one transaction and commits, as the writer does. A small commit gives
    /// each event `seq` = id; a large one numbers its new events from its largest id up, so
    /// above every `seq` stored before, as the writer numbers them.
    fn commit(dedup: &mut Dedup, conn: &mut Connection, ids: &[u64], direct: bool) -> Vec<bool> {
        let tx = conn.transaction().unwrap();
        let keys: Vec<DedupKey> = ids.iter().map(|&id| key(id)).collect();
        let fresh = if direct {
            let mut next = ids.iter().max().copied().unwrap_or(0) as i64;
            let mut claimer = dedup.claimer(&tx, Some((&keys, next))).unwrap();
            keys.iter()
                .map(|key| {
                    let fresh = claimer.claim(key, next).unwrap();
                    next += i64::from(fresh);
                    fresh
                })
                .collect()
        } else {
            let mut claimer = dedup.claimer(&tx, None).unwrap();
            ids.iter()
                .map(|&id| claimer.claim(&key(id), id as i64).unwrap())
                .collect()
        };
        let last = ids.iter().max().copied().unwrap_or(0) as i64;
        dedup.before_commit(&tx, last, false).unwrap();
        tx.commit().unwrap();
        dedup.committed();
        fresh
    }

    #[test]
    fn a_small_commit_keeps_its_keys_in_memory_until_a_sweep() {
        let (_dir, mut conn) = journal();
        let mut dedup = Dedup::load(&conn).unwrap();
        assert_eq!(
            commit(&mut dedup, &mut conn, &[1, 2, 1], false),
            [true, true, false]
        );
        assert_eq!((dedup.recent_len(), table_keys(&conn)), (2, 0));
        assert_eq!(commit(&mut dedup, &mut conn, &[2, 3], false), [false, true]);

        let tx = conn.transaction().unwrap();
        dedup.before_commit(&tx, 3, true).unwrap();
        tx.commit().unwrap();
        dedup.committed();
        assert_eq!((dedup.recent_len(), table_keys(&conn)), (0, 3));
        assert_eq!(swept_seq(&conn).unwrap(), Some(3));
        assert_eq!(
            commit(&mut dedup, &mut conn, &[1, 2, 3, 4], false),
            [false, false, false, true]
        );
    }

    #[test]
    fn enough_keys_in_memory_are_swept_within_a_commit() {
        let (_dir, mut conn) = journal();
        let mut dedup = Dedup::load(&conn).unwrap();
        let ids: Vec<u64> = (1..SWEEP_KEYS as u64).collect();
        commit(&mut dedup, &mut conn, &ids, false);
        assert_eq!(table_keys(&conn), 0);
        commit(&mut dedup, &mut conn, &[SWEEP_KEYS as u64], false);
        assert_eq!(
            (dedup.recent_len(), table_keys(&conn)),
            (0, SWEEP_KEYS as i64)
        );
        assert_eq!(swept_seq(&conn).unwrap(), Some(SWEEP_KEYS as i64));
    }

    /// The sweep writes many keys per statement and the rest one by one: each key lands in
    /// the table with its own event's `seq`, whichever way it went.
    #[test]
    fn a_sweep_stores_every_key_with_its_seq() {
        let (_dir, mut conn) = journal();
        let mut dedup = Dedup::load(&conn).unwrap();
        let count = 2 * SWEEP_ROWS as u64 + 3;
        // Claimed in an order that is not the keys' order, as concurrent events are.
        let ids: Vec<u64> = (1..=count).rev().collect();
        commit(&mut dedup, &mut conn, &ids, false);
        let tx = conn.transaction().unwrap();
        dedup.before_commit(&tx, count as i64, true).unwrap();
        tx.commit().unwrap();
        dedup.committed();

        let mut stored: Vec<(Vec<u8>, i64)> = conn
            .prepare("SELECT key, seq FROM dedup")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        stored.sort();
        let mut expected: Vec<(Vec<u8>, i64)> = (1..=count)
            .map(|id| (key(id).to_vec(), id as i64))
            .collect();
        expected.sort();
        assert_eq!(stored, expected);
        assert_eq!(dedup.recent_len(), 0);
    }

    /// A sweep that fails part way (here the file may not grow, as on a full disk) leaves
    /// nothing behind: the table and `dedup_seq` are as they were, every key is still claimed
    /// in memory, and the next sweep, once there is room, stores them all.
    #[test]
    fn a_sweep_that_fails_part_way_keeps_every_key_in_memory() {
        let (_dir, mut conn) = journal();
        let mut dedup = Dedup::load(&conn).unwrap();
        // Enough keys for several pages of the table, so that the sweep fails after some of
        // its statements have run.
        let count = 16 * SWEEP_ROWS as u64 + 3;
        let ids: Vec<u64> = (1..=count).collect();
        commit(&mut dedup, &mut conn, &ids, false);
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages).unwrap();
        let swept_before = swept_seq(&conn).unwrap();

        let tx = conn.transaction().unwrap();
        let err = dedup.before_commit(&tx, count as i64, true).unwrap_err();
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DiskFull),
            "{err}"
        );
        // SQLite has rolled back the whole transaction already, as it may on SQLITE_FULL.
        drop(tx);
        assert!(conn.is_autocommit());
        dedup.rolled_back();
        assert_eq!(table_keys(&conn), 0);
        assert_eq!(swept_seq(&conn).unwrap(), swept_before);
        assert_eq!(dedup.recent_len(), count as usize);
        assert_eq!(
            commit(&mut dedup, &mut conn, &[1, count, count + 1], false),
            [false, false, true]
        );

        conn.pragma_update(None, "max_page_count", 1 << 30).unwrap();
        let tx = conn.transaction().unwrap();
        dedup.before_commit(&tx, count as i64 + 1, true).unwrap();
        tx.commit().unwrap();
        dedup.committed();
        assert_eq!(
            (dedup.recent_len(), table_keys(&conn)),
            (0, count as i64 + 1)
        );
    }

    /// A large commit whose claims fail part way (a full disk) claims nothing: the error
    /// reaches the writer, the table is as it was, no key is left in memory, and the same keys
    /// are all new once there is room.
    #[test]
    fn a_large_commit_whose_claims_fail_part_way_claims_nothing() {
        let (_dir, mut conn) = journal();
        let mut dedup = Dedup::load(&conn).unwrap();
        assert_eq!(commit(&mut dedup, &mut conn, &[1], true), [true]);
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages).unwrap();
        // Enough keys for several pages of the table, so that some groups went in first.
        let keys: Vec<DedupKey> = (2..=16 * SWEEP_ROWS as u64 + 3).map(key).collect();

        let tx = conn.transaction().unwrap();
        let err = dedup
            .claimer(&tx, Some((&keys, 2)))
            .err()
            .expect("claims on a full disk succeeded");
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DiskFull),
            "{err}"
        );
        drop(tx);
        dedup.rolled_back();
        assert_eq!(table_keys(&conn), 1);
        assert_eq!(dedup.recent_len(), 0);

        conn.pragma_update(None, "max_page_count", 1 << 30).unwrap();
        let ids: Vec<u64> = (1..=16 * SWEEP_ROWS as u64 + 3).collect();
        let fresh = commit(&mut dedup, &mut conn, &ids, true);
        assert!(!fresh[0] && fresh[1..].iter().all(|&f| f));
        assert_eq!(table_keys(&conn), ids.len() as i64);
    }

    #[test]
    fn a_large_commit_writes_its_keys_to_the_table() {
        let (_dir, mut conn) = journal();
        let mut dedup = Dedup::load(&conn).unwrap();
        assert_eq!(commit(&mut dedup, &mut conn, &[1], false), [true]);
        assert_eq!(
            commit(&mut dedup, &mut conn, &[1, 2, 2], true),
            [false, true, false]
        );
        assert_eq!((dedup.recent_len(), table_keys(&conn)), (1, 1));
    }

    /// A large commit claims its keys in groups of [`SWEEP_ROWS`]. A group holding a key that
    /// is stored already falls back to one key at a time; a key in memory, or repeated in the
    /// commit, is a duplicate; and every new key is stored with the `seq` its event gets, in the
    /// commit's order, whichever way its group went.
    #[test]
    fn a_large_commit_claims_in_groups_and_numbers_its_new_events_in_order() {
        let (_dir, mut conn) = journal();
        let mut dedup = Dedup::load(&conn).unwrap();
        assert_eq!(commit(&mut dedup, &mut conn, &[1001], false), [true]);
        assert_eq!(commit(&mut dedup, &mut conn, &[1000], true), [true]);
        let mut ids: Vec<u64> = (1..=300).collect();
        ids.insert(10, 1000); // in the table: the first group goes one key at a time
        ids.insert(200, 1001); // in memory
        ids.push(5); // repeated
        let fresh = commit(&mut dedup, &mut conn, &ids, true);
        let duplicates: Vec<u64> = ids
            .iter()
            .zip(&fresh)
            .filter(|&(_, &fresh)| !fresh)
            .map(|(&id, _)| id)
            .collect();
        assert_eq!(duplicates, [1000, 1001, 5]);

        let stored: HashMap<Vec<u8>, i64> = conn
            .prepare("SELECT key, seq FROM dedup")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            stored.len(),
            301,
            "the 300 new keys and the one stored before"
        );
        assert_eq!(stored[&key(1000)[..]], 1000, "the stored key kept its seq");
        let mut next = 1001;
        for (id, fresh) in ids.iter().zip(&fresh) {
            if *fresh {
                assert_eq!(stored[&key(*id)[..]], next, "seq of id {id}");
                next += 1;
            }
        }
    }

    #[test]
    fn a_rolled_back_claim_never_happened() {
        let (_dir, mut conn) = journal();
        let mut dedup = Dedup::load(&conn).unwrap();
        commit(&mut dedup, &mut conn, &[1], false);
        {
            let tx = conn.transaction().unwrap();
            let mut claimer = dedup.claimer(&tx, None).unwrap();
            assert!(claimer.claim(&key(2), 2).unwrap());
            drop(claimer);
            dedup.before_commit(&tx, 2, true).unwrap();
            tx.rollback().unwrap();
            dedup.rolled_back();
        }
        assert_eq!((dedup.recent_len(), table_keys(&conn)), (1, 0));
        assert_eq!(commit(&mut dedup, &mut conn, &[1, 2], false), [false, true]);
        // The sweep in the rolled-back transaction did not empty the memory on the next commit.
        assert_eq!(dedup.recent_len(), 2);
    }

    #[test]
    fn forget_drops_only_the_expired_events_keys() {
        let (_dir, mut conn) = journal();
        let mut dedup = Dedup::load(&conn).unwrap();
        commit(&mut dedup, &mut conn, &[1, 2], false);
        // Key 2 with another seq belongs to another event: it stays.
        dedup.forget([(1, key(1)), (99, key(2))]);
        assert_eq!(commit(&mut dedup, &mut conn, &[1, 2], false), [true, false]);
    }

    #[test]
    fn load_recomputes_the_keys_stored_after_the_sweep() {
        let events: Vec<String> = (1..=4)
            .map(|id| {
                format!(r#"{{"event":"sent","time":1,"MessageID":{id},"email":"a@example.com"}}"#)
            })
            .collect();
        let (_dir, conn) =
            crate::journal::test_journal_in_tempdir(&[(1, &format!("[{}]", events.join(",")))]);
        conn.execute(
            "INSERT INTO dedup (key, seq) VALUES (?1, 1), (?2, 2)",
            params![&key(1)[..], &key(2)[..]],
        )
        .unwrap();
        set_swept_seq(&conn, 2).unwrap();
        let mut dedup = Dedup::load(&conn).unwrap();
        assert_eq!(dedup.recent_len(), 2, "the keys of seq 3 and 4");
        let mut conn = conn;
        assert_eq!(
            commit(&mut dedup, &mut conn, &[1, 2, 3, 4, 5], false),
            [false, false, false, false, true]
        );
    }
}
