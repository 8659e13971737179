//! The lookup index's lists: the events of one key in one partition and one indexer burst, as
//! one row.
//!
//! A row is `(part, k, last, seqs)`: `last` is the newest event's `seq`, and `seqs` holds the
//! older ones, newest first, each as its gap to the one before it in LEB128 varints (one or
//! two bytes for a key that recurs within a burst). A campaign, a custom id or a shared mailbox
//! recurs thousands of times a burst: one row then stands for all of them, where a row per
//! event cost the indexer a B-tree insert each.
//!
//! Bursts take disjoint, increasing ranges of `seq`, so the lists of one key in one partition
//! never overlap: ordered by `last`, each list's events are older than the next one's.

use super::index::part_of;

/// Groups `entries`, `(k, seq)` pairs sorted by `(part_of(seq), k, seq)` with no duplicates,
/// into one list per partition and key, and hands each to `row` as `(part, k, last, seqs)`.
pub fn lists(
    entries: &[(i64, i64)],
    mut row: impl FnMut(i64, i64, i64, &[u8]) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut gaps = Vec::new();
    for run in entries.chunk_by(|a, b| (part_of(a.1), a.0) == (part_of(b.1), b.0)) {
        let (k, last) = run[run.len() - 1];
        gaps.clear();
        let mut newer = last;
        for &(_, seq) in run.iter().rev().skip(1) {
            push_varint(&mut gaps, (newer - seq) as u64);
            newer = seq;
        }
        row(part_of(last), k, last, &gaps)?;
    }
    Ok(())
}

/// The seqs of the list `(last, seqs)`, newest first. A list cut short, with a gap of zero or
/// one that passes below the first `seq` (a damaged row) ends where the damage starts: a lookup
/// then misses those events, and never points at one twice.
pub fn seqs(last: i64, gaps: &[u8]) -> impl Iterator<Item = i64> + '_ {
    let mut at = 0;
    let mut current = Some(last);
    std::iter::from_fn(move || {
        let seq = current?;
        current = read_varint(gaps, &mut at)
            .filter(|&gap| gap > 0)
            .and_then(|gap| seq.checked_sub(i64::try_from(gap).ok()?))
            .filter(|&older| older > 0);
        Some(seq)
    })
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The varint at `*at`, moving `*at` past it; `None` at the end or on a truncated one.
fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(entries: &[(i64, i64)]) -> Vec<(i64, i64, i64, Vec<u8>)> {
        let mut out = Vec::new();
        lists(entries, |part, k, last, gaps| {
            out.push((part, k, last, gaps.to_vec()));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn a_list_per_key_and_partition_gives_back_its_seqs_newest_first() {
        // Partition 0 ends at 65,535.
        let entries = [
            (-5, 3),
            (-5, 4),
            (-5, 200),
            (-5, 65_500),
            (9, 4),
            (-5, 65_536),
            (-5, 65_540),
        ];
        let rows = rows(&entries);
        let keys: Vec<_> = rows.iter().map(|r| (r.0, r.1, r.2)).collect();
        assert_eq!(keys, [(0, -5, 65_500), (0, 9, 4), (1, -5, 65_540)]);
        // Gaps 65,300 (three bytes), 196 (two) and 1 (one).
        assert_eq!(rows[0].3.len(), 3 + 2 + 1);
        assert!(rows[1].3.is_empty());
        let back = |r: &(i64, i64, i64, Vec<u8>)| seqs(r.2, &r.3).collect::<Vec<_>>();
        assert_eq!(back(&rows[0]), [65_500, 200, 4, 3]);
        assert_eq!(back(&rows[1]), [4]);
        assert_eq!(back(&rows[2]), [65_540, 65_536]);
    }

    #[test]
    fn a_damaged_list_stops_at_the_damage() {
        let mut gaps = Vec::new();
        push_varint(&mut gaps, 300);
        push_varint(&mut gaps, 5);
        assert_eq!(seqs(1000, &gaps).collect::<Vec<_>>(), [1000, 700, 695]);
        // Cut inside the first varint: only `last` is left.
        assert_eq!(seqs(1000, &gaps[..1]).collect::<Vec<_>>(), [1000]);
        // A zero gap would name the same event twice.
        assert_eq!(seqs(1000, &[5, 0, 1]).collect::<Vec<_>>(), [1000, 995]);
        // A gap past the first seq, and a varint longer than 64 bits.
        assert_eq!(seqs(10, &[10]).collect::<Vec<_>>(), [10]);
        assert_eq!(seqs(10, &[0xff; 11]).collect::<Vec<_>>(), [10]);
        let mut huge = Vec::new();
        push_varint(&mut huge, u64::MAX);
        assert_eq!(seqs(10, &huge).collect::<Vec<_>>(), [10]);
    }
}
