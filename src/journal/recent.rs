//! The newest committed chunks, kept in memory for the threads that tail the journal.
//!
//! The pipeline and the lookup indexer read every event again after it is acknowledged. Read
//! from SQLite, each event's JSON is parsed a second and a third time, which was two thirds of
//! the pipeline's instructions and nearly half of the indexer's. So the writer, once a commit
//! has returned, hands its chunks here with each event's [`BriefAt`] from the receiver's parse,
//! and a reader that is close behind rebuilds its briefs from them without parsing.
//!
//! The promise: a reader gets exactly what it would have read from the journal, or nothing and
//! reads the journal itself. Only committed chunks are published, in `seq` order without gaps;
//! a reader is served only from a chunk holding the `seq` it asks for next. Memory is bounded
//! ([`MAX_BYTES`]): the oldest chunks go first, and a reader that falls behind them (the indexer
//! under heavy batches, anyone after a restart) reads SQLite as before.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::chunks::TailedBrief;
use crate::event::{Brief, BriefAt, parse_brief};

/// The most bytes of chunk text (and their events' positions) held. Under single events the
/// indexer, which reads every half second, stays within it; under heavy batches it falls
/// behind and reads SQLite, as it always did.
pub const MAX_BYTES: usize = 16 << 20;

/// One event of a chunk: its bytes in the chunk's text, and where its brief lies within them.
pub type Placed = (std::ops::Range<u32>, Option<BriefAt>);

/// One committed chunk row, as the writer built it.
#[derive(Debug)]
pub struct Chunk {
    pub first_seq: i64,
    pub received_at_ms: i64,
    /// The chunk's JSON array text, byte for byte what was stored.
    pub text: Vec<u8>,
    pub events: Vec<Placed>,
}

impl Chunk {
    fn end_seq(&self) -> i64 {
        self.first_seq + self.events.len() as i64
    }

    /// The memory it holds, counted by capacity.
    fn weight(&self) -> usize {
        self.text.capacity() + self.events.capacity() * std::mem::size_of::<Placed>()
    }
}

/// Which thread reads: each has its own position, and a chunk is dropped once both have
/// passed it (or memory runs short).
#[derive(Debug, Clone, Copy)]
pub enum Reader {
    Pipeline = 0,
    Indexer = 1,
}

#[derive(Debug)]
pub struct Recent {
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    chunks: VecDeque<Arc<Chunk>>,
    bytes: usize,
    /// The `seq` after the last chunk published: every event below it is committed.
    next_seq: i64,
    /// The last `seq` each [`Reader`] took; `i64::MAX` for one that has not read yet, so that a
    /// reader that never runs (a test, a tool) does not hold chunks.
    read: [i64; 2],
}

impl Recent {
    /// An empty ring for a journal whose next event gets `next_seq`.
    pub fn new(next_seq: i64) -> Recent {
        Recent {
            ring: Mutex::new(Ring {
                chunks: VecDeque::new(),
                bytes: 0,
                next_seq,
                read: [i64::MAX; 2],
            }),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the chunks of a commit that has returned, in order. A chunk that does not
    /// follow the last one (a commit whose chunks were not published) starts the ring afresh:
    /// readers then read SQLite until they reach it.
    pub fn publish(&self, chunks: Vec<Chunk>) {
        if chunks.is_empty() {
            return;
        }
        let mut ring = self.ring();
        for chunk in chunks {
            if chunk.first_seq != ring.next_seq {
                ring.chunks.clear();
                ring.bytes = 0;
            }
            ring.next_seq = chunk.end_seq();
            ring.bytes += chunk.weight();
            ring.chunks.push_back(Arc::new(chunk));
        }
        ring.prune();
    }

    /// Hands the briefs of up to `limit` events with `seq > after` to `consume`, one chunk at a
    /// time, as `chunks::forward_briefs` does from SQLite, and returns what it would: the last
    /// `seq` passed, if any. `None` when the ring does not hold `after + 1` and more is
    /// committed: the caller reads SQLite.
    pub fn forward_briefs(
        &self,
        reader: Reader,
        after: i64,
        limit: usize,
        mut consume: impl FnMut(&[TailedBrief<'_>]),
    ) -> Option<Option<i64>> {
        let taken: Vec<Arc<Chunk>> = {
            let mut ring = self.ring();
            ring.read[reader as usize] = after;
            if after + 1 >= ring.next_seq {
                ring.prune();
                return Some(None);
            }
            let start = ring
                .chunks
                .iter()
                .position(|c| c.first_seq <= after + 1 && after + 1 < c.end_seq())?;
            let mut events = 0;
            let taken = ring
                .chunks
                .iter()
                .skip(start)
                .take_while(|c| {
                    let more = events < limit;
                    events += (c.end_seq() - (after + 1).max(c.first_seq)) as usize;
                    more
                })
                .cloned()
                .collect();
            ring.prune();
            taken
        };
        let mut last = None;
        let mut left = limit;
        for chunk in &taken {
            let from = (after + 1).max(chunk.first_seq);
            let skip = (from - chunk.first_seq) as usize;
            let count = (chunk.events.len() - skip).min(left);
            let Some(briefs) = chunk.briefs(skip, count) else {
                // Impossible for text built from checked bodies, but SQLite's copy is the one
                // to trust then: the caller reads it from here on.
                last?;
                break;
            };
            consume(&briefs);
            left -= count;
            last = Some(from + count as i64 - 1);
            if left == 0 {
                break;
            }
        }
        if let Some(last) = last {
            let mut ring = self.ring();
            ring.read[reader as usize] = last;
            ring.prune();
        }
        Some(last)
    }
}

impl Ring {
    /// Drops the chunks every reader has passed, and the oldest ones past [`MAX_BYTES`].
    fn prune(&mut self) {
        let passed = self.read[0].min(self.read[1]);
        while let Some(front) = self.chunks.front()
            && (front.end_seq() - 1 <= passed || self.bytes > MAX_BYTES)
        {
            self.bytes -= front.weight();
            self.chunks.pop_front();
        }
    }
}

impl Chunk {
    /// The briefs of `count` events from the `skip`th, each rebuilt from its [`BriefAt`], or
    /// parsed when it has none. `None` when the text is not UTF-8 or an event's bytes are not
    /// in it.
    fn briefs(&self, skip: usize, count: usize) -> Option<Vec<TailedBrief<'_>>> {
        let text = std::str::from_utf8(&self.text).ok()?;
        let mut out = Vec::with_capacity(count);
        for (i, (range, at)) in self.events.iter().enumerate().skip(skip).take(count) {
            let raw = text.get(range.start as usize..range.end as usize)?;
            let brief: Brief = match at {
                Some(at) => at.brief(raw),
                None => match parse_brief(raw) {
                    Ok(brief) => brief,
                    Err(error) => {
                        tracing::warn!(seq = self.first_seq + i as i64, %error, "journal event no longer parses; skipped");
                        continue;
                    }
                },
            };
            // Every test that stores an event checks the two ways of reading it agree: the
            // journal's parse must give this same brief, and must not refuse the event.
            #[cfg(debug_assertions)]
            if at.is_some() {
                assert_eq!(
                    Ok::<_, &String>(&brief),
                    parse_brief(raw).as_ref(),
                    "a brief rebuilt from its positions differs from the parse: {raw}"
                );
            }
            out.push(TailedBrief {
                seq: self.first_seq + i as i64,
                received_at_ms: self.received_at_ms,
                brief,
            });
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BodyItem, SplitBody, split_body};

    /// Where the receiver located the brief of the single event `raw`.
    fn located(raw: &str) -> Option<BriefAt> {
        match split_body(raw.as_bytes()) {
            SplitBody::Items(items) => match &items[..] {
                [BodyItem::Event { brief, .. }] => *brief,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    /// A chunk of `raws` from `first_seq`, laid out as the writer lays it out.
    fn chunk(first_seq: i64, raws: &[String]) -> Chunk {
        let mut text = Vec::new();
        let mut events = Vec::new();
        for (i, raw) in raws.iter().enumerate() {
            text.push(if i == 0 { b'[' } else { b',' });
            let start = text.len() as u32;
            text.extend_from_slice(raw.as_bytes());
            events.push((start..text.len() as u32, located(raw)));
        }
        text.push(b']');
        Chunk {
            first_seq,
            received_at_ms: 5,
            text,
            events,
        }
    }

    /// Events whose `MessageID` is their `seq`.
    fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<String> {
        seqs.map(|id| {
            format!(r#"{{"event":"open","time":1,"MessageID":{id},"email":"r{id}@example.com"}}"#)
        })
        .collect()
    }

    /// The last `seq` passed, and each event's `(seq, MessageID)`.
    type Read = (Option<i64>, Vec<(i64, u64)>);

    /// What `reader` gets after `after`: the last `seq` passed and each event's
    /// `(seq, MessageID)`; `None` when it must read the journal.
    fn read(recent: &Recent, reader: Reader, after: i64, limit: usize) -> Option<Read> {
        let mut seen = Vec::new();
        let last = recent.forward_briefs(reader, after, limit, |events| {
            for e in events {
                assert_eq!(e.received_at_ms, 5);
                seen.push((e.seq, e.brief.message_id.0));
            }
        })?;
        Some((last, seen))
    }

    fn held(recent: &Recent) -> usize {
        recent.ring().chunks.len()
    }

    #[test]
    fn a_reader_gets_what_follows_its_seq_from_any_position() {
        let recent = Recent::new(1);
        assert_eq!(read(&recent, Reader::Indexer, 0, 10), Some((None, vec![])));
        recent.publish(vec![chunk(1, &events(1..=3)), chunk(4, &events(4..=5))]);
        let all: Vec<(i64, u64)> = (1..=5).map(|s| (s, s as u64)).collect();
        assert_eq!(read(&recent, Reader::Pipeline, 0, 10), Some((Some(5), all)));
        // From the middle of a chunk, across into the next, up to the limit.
        assert_eq!(
            read(&recent, Reader::Pipeline, 2, 2),
            Some((Some(4), vec![(3, 3), (4, 4)]))
        );
        assert_eq!(
            read(&recent, Reader::Pipeline, 3, 1),
            Some((Some(4), vec![(4, 4)]))
        );
        // Caught up: nothing more is committed, and the journal need not be read.
        assert_eq!(read(&recent, Reader::Pipeline, 5, 10), Some((None, vec![])));
    }

    #[test]
    fn a_reader_the_ring_cannot_serve_reads_the_journal() {
        // Events 1 to 9 were committed before the ring started (a restart).
        let recent = Recent::new(10);
        assert_eq!(read(&recent, Reader::Pipeline, 9, 10), Some((None, vec![])));
        recent.publish(vec![chunk(10, &events(10..=11))]);
        assert_eq!(read(&recent, Reader::Pipeline, 5, 10), None);
        assert_eq!(
            read(&recent, Reader::Pipeline, 9, 10),
            Some((Some(11), vec![(10, 10), (11, 11)]))
        );
        // A commit whose chunks were not published: the ring starts again after the gap.
        recent.publish(vec![chunk(15, &events(15..=15))]);
        assert_eq!(read(&recent, Reader::Pipeline, 11, 10), None);
        assert_eq!(
            read(&recent, Reader::Pipeline, 14, 10),
            Some((Some(15), vec![(15, 15)]))
        );
    }

    #[test]
    fn a_chunk_goes_once_both_readers_have_passed_it() {
        let recent = Recent::new(1);
        assert_eq!(read(&recent, Reader::Indexer, 0, 10), Some((None, vec![])));
        recent.publish(vec![chunk(1, &events(1..=2)), chunk(3, &events(3..=3))]);
        assert_eq!(read(&recent, Reader::Pipeline, 0, 10).unwrap().0, Some(3));
        assert_eq!(held(&recent), 2, "the indexer has not read them yet");
        assert_eq!(read(&recent, Reader::Indexer, 0, 2).unwrap().0, Some(2));
        assert_eq!(held(&recent), 1);
        assert_eq!(read(&recent, Reader::Indexer, 2, 10).unwrap().0, Some(3));
        assert_eq!(held(&recent), 0);
        assert_eq!(recent.ring().bytes, 0);
        assert_eq!(read(&recent, Reader::Indexer, 0, 10), None);
    }

    #[test]
    fn the_oldest_chunks_go_past_the_memory_bound() {
        let recent = Recent::new(1);
        // Both readers stay at 0, so only the bound drops anything.
        read(&recent, Reader::Pipeline, 0, 1);
        read(&recent, Reader::Indexer, 0, 1);
        let padding = "x".repeat(100_000);
        let big = |id: u64| {
            format!(
                r#"{{"event":"open","MessageID":{id},"email":"a@example.com","geo":"{padding}"}}"#
            )
        };
        let chunks = 2 * MAX_BYTES / 100_000;
        for seq in 1..=chunks as i64 {
            recent.publish(vec![chunk(seq, &[big(seq as u64)])]);
            assert!(recent.ring().bytes <= MAX_BYTES);
        }
        assert!(held(&recent) < chunks / 2 + 1, "{} held", held(&recent));
        assert_eq!(read(&recent, Reader::Pipeline, 0, 10), None);
        let last = chunks as i64;
        assert_eq!(
            read(&recent, Reader::Pipeline, last - 1, 10),
            Some((Some(last), vec![(last, last as u64)]))
        );
    }

    /// A chunk the ring cannot read (impossible from the writer, but not trusted) sends the
    /// reader to SQLite from that chunk on, after what came before it.
    #[test]
    fn a_chunk_that_does_not_read_sends_the_reader_to_the_journal() {
        let recent = Recent::new(1);
        assert_eq!(read(&recent, Reader::Pipeline, 0, 10), Some((None, vec![])));
        let mut broken = chunk(3, &events(3..=3));
        broken.events[0].0 = 1..broken.text.len() as u32 + 10;
        recent.publish(vec![chunk(1, &events(1..=2)), broken]);
        assert_eq!(
            read(&recent, Reader::Pipeline, 0, 10),
            Some((Some(2), vec![(1, 1), (2, 2)]))
        );
        assert_eq!(read(&recent, Reader::Pipeline, 2, 10), None);
    }

    #[test]
    fn an_event_the_receiver_did_not_locate_is_parsed() {
        let escaped = r#"{"event":"open","MessageID":7,"email":"a\u0040example.com"}"#.to_string();
        assert_eq!(located(&escaped), None);
        let recent = Recent::new(1);
        assert_eq!(read(&recent, Reader::Pipeline, 0, 10), Some((None, vec![])));
        recent.publish(vec![chunk(1, &[escaped])]);
        let mut emails = Vec::new();
        recent.forward_briefs(Reader::Pipeline, 0, 10, |events| {
            emails.extend(events.iter().map(|e| e.brief.email.to_string()))
        });
        assert_eq!(emails, ["a@example.com"]);
    }

    /// The pipeline's tail and the indexer take what the ring holds without reading the
    /// journal: here the journal on disk has none of it.
    #[test]
    fn the_readers_take_the_ring_before_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        drop(crate::journal::test_journal(dir.path(), &[]));
        let recent = Arc::new(Recent::new(1));
        let tail = super::super::Tail::open(dir.path())
            .unwrap()
            .with_recent(Some(recent.clone()));
        let progress = Arc::new(super::super::Progress::default());
        let mut indexer = super::super::index::Indexer {
            journal: super::super::schema::open_reader(&dir.path().join("journal.sqlite3"))
                .unwrap(),
            index: super::super::index::open(&dir.path().join("index.sqlite3")).unwrap(),
            progress: progress.clone(),
            recent: Some(recent.clone()),
            batch: 100,
        };
        assert_eq!(tail.briefs_after(0, 10, |_| {}).unwrap(), None);
        assert_eq!(indexer.step().unwrap(), 0);

        recent.publish(vec![chunk(1, &events(1..=3))]);
        let mut counted = Vec::new();
        let last = tail
            .briefs_after(0, 10, |events| {
                counted.extend(events.iter().map(|e| e.brief.email.to_string()))
            })
            .unwrap();
        assert_eq!(last, Some(3));
        assert_eq!(
            counted,
            ["r1@example.com", "r2@example.com", "r3@example.com"]
        );
        assert_eq!(indexer.step().unwrap(), 3);
        assert_eq!(
            progress.indexed.load(std::sync::atomic::Ordering::Acquire),
            3
        );
        let lists: i64 = indexer
            .index
            .query_row(
                "SELECT count(*) FROM lookup WHERE k = ?1",
                [super::super::LookupKey::Email("r2@example.com".into()).hash()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(lists, 1);
    }

    /// The writer publishes exactly what it stored: the same events, `seq`s and briefs the
    /// journal gives back, and nothing for a duplicate.
    #[tokio::test]
    async fn the_writer_publishes_what_it_commits() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = std::sync::Arc::new(
            crate::metrics::Metrics::new(&crate::metrics::MetricsConfig::default(), dir.path())
                .unwrap(),
        );
        let journal =
            super::super::Journal::open(dir.path(), &Default::default(), metrics).unwrap();
        let recent = journal.recent();
        // As the pipeline does at start: from here on the ring keeps what it has not read.
        assert_eq!(
            recent.forward_briefs(Reader::Pipeline, 0, 100, |_| {}),
            Some(None)
        );
        let bodies = [
            format!("[{}]", events(1..=3).join(",")),
            r#"{"event":"bounce","MessageID":9,"email":"b\u0040example.com","error":"user unknown"}"#.to_string(),
            // The second event is a retry of the first body's first.
            format!("[{},{}]", events(4..=4)[0], events(1..=1)[0]),
        ];
        for body in bodies {
            let body = bytes::Bytes::from(body);
            let SplitBody::Items(items) = split_body(&body) else {
                panic!()
            };
            let mut append = super::super::Append::default();
            for item in items {
                let BodyItem::Event {
                    kind,
                    dedup_key,
                    raw,
                    brief,
                } = item
                else {
                    panic!()
                };
                let start = raw.as_ptr() as usize - body.as_ptr() as usize;
                append.events.push(super::super::NewEvent {
                    range: start..start + raw.len(),
                    dedup_key,
                    // Now: an old receive time would be deleted by retention at once.
                    received_at_ms: super::super::now_ms(),
                    kind,
                    brief,
                });
            }
            append.body = body.clone();
            journal.append(append).await.unwrap();
        }
        let mut from_ring = Vec::new();
        let last = recent.forward_briefs(Reader::Pipeline, 0, 100, |events| {
            from_ring.extend(events.iter().map(|e| format!("{} {:?}", e.seq, e.brief)))
        });
        let reader =
            super::super::schema::open_reader(&dir.path().join("journal.sqlite3")).unwrap();
        let mut from_journal = Vec::new();
        super::super::chunks::forward_briefs(&reader, 0, 100, |events| {
            from_journal.extend(events.iter().map(|e| format!("{} {:?}", e.seq, e.brief)))
        })
        .unwrap();
        assert_eq!(last, Some(Some(5)));
        assert_eq!(from_ring.len(), 5);
        assert_eq!(from_ring, from_journal);
        journal.close();
    }
}
