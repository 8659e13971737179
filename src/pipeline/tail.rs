//! The tailing thread: journal → classification → windows, with periodic checkpoints.
//!
//! It reads the journal in batches after its checkpoint, classifies each event's provider
//! (learning from `sent` replies), and records it in the windows at the wall clock and in the
//! `bouncewatch_events_total` counters. Every [`SNAPSHOT_EVERY`] it evicts idle keys, re-ranks
//! the campaign labels and saves the windows, the counters, the classifier's new knowledge and
//! its checkpoint together (see `state.rs`); it saves again when it stops. After `kill -9` it
//! restarts from that snapshot and replays the journal after it: no event is missed or counted
//! twice, and each replayed event gets the campaign label it had the first time.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::state::StateDb;
use super::{Classifier, Provider, ProvidersConfig};
use crate::event::EventKind;
use crate::journal::{Journal, JournalError, Progress, Tail};
use crate::metrics::Metrics;
use crate::windows::{CampaignKey, Key, Scope, Windows, WindowsConfig};

/// Events taken from the journal per batch (and per lock of the windows).
const BATCH: usize = 5_000;
/// Also how often idle keys are evicted and the campaign labels re-ranked.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(60);

/// What the pipeline shares with the query API.
pub struct Shared {
    /// A `std` mutex: held for one batch at most, never across an `.await`.
    pub windows: Mutex<Windows>,
    /// The last `seq` counted in the windows.
    pub seq: AtomicI64,
    stop: AtomicBool,
}

/// The running pipeline. [`Pipeline::stop`] saves a final snapshot.
pub struct Pipeline {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot open the pipeline state at {path}: {source}")]
    State {
        path: std::path::PathBuf,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot start the pipeline thread: {0}")]
    Thread(std::io::Error),
}

impl Pipeline {
    /// Restores the last snapshot from `dir/pipeline.sqlite3` and starts tailing.
    pub fn start(
        dir: &Path,
        windows: &WindowsConfig,
        providers: &ProvidersConfig,
        metrics: Arc<Metrics>,
        journal: Option<&Journal>,
    ) -> Result<Pipeline, PipelineError> {
        let path = dir.join("pipeline.sqlite3");
        let state_err = |source| PipelineError::State {
            path: path.clone(),
            source,
        };
        let state = StateDb::open(&path).map_err(state_err)?;
        let restored = state.load().map_err(state_err)?;
        let mut classifier = Classifier::new(providers)?;
        classifier.restore(restored.learned);
        let windows_state = match restored.windows {
            Some(snapshot) => Windows::restore(windows, snapshot),
            None => Windows::new(windows),
        };
        if let Some(saved) = restored.campaigns {
            let mut campaigns = metrics.campaigns();
            let top_n = campaigns.top_n();
            *campaigns = saved.restore(top_n).hold_like(&campaigns);
        }
        tracing::info!(
            seq = restored.seq,
            keys = windows_state.len(),
            "pipeline restored; replaying the journal after its checkpoint"
        );
        metrics.pipeline_progress(restored.seq, windows_state.placements());
        metrics.replay_to_journal_head();
        let shared = Arc::new(Shared {
            windows: Mutex::new(windows_state),
            seq: AtomicI64::new(restored.seq),
            stop: AtomicBool::new(false),
        });
        metrics.attach_windows(shared.clone(), windows);
        let progress = journal.map(Journal::progress_shared);
        if let Some(p) = &progress {
            p.checkpointed.store(restored.seq, Ordering::Release);
        }
        let runner = Runner {
            tail: Tail::open(dir)?.with_recent(journal.map(Journal::recent)),
            progress,
            state,
            classifier,
            shared: shared.clone(),
            unsaved_learned: Vec::new(),
            metrics,
        };
        let thread = std::thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || runner.run())
            .map_err(PipelineError::Thread)?;
        Ok(Pipeline {
            shared,
            thread: Some(thread),
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The pipeline's thread, to wake it when a query waits for fresh counts.
    pub fn waker(&self) -> Option<std::thread::Thread> {
        self.thread.as_ref().map(|t| t.thread().clone())
    }

    /// Counts what is left in the journal, saves a snapshot and stops.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            if thread.join().is_err() {
                tracing::error!("the pipeline thread panicked");
            }
        }
    }
}

struct Runner {
    tail: Tail,
    state: StateDb,
    classifier: Classifier,
    shared: Arc<Shared>,
    /// Learned since the last snapshot; saved with it, so a restart classifies as before.
    unsaved_learned: Vec<(String, Provider)>,
    metrics: Arc<Metrics>,
    /// The journal's, to tell retention what the snapshot holds.
    progress: Option<Arc<Progress>>,
}

/// The soonest a snapshot follows another when retention asks for one.
const WANTED_SNAPSHOT_GAP: Duration = Duration::from_secs(1);

impl Runner {
    fn run(mut self) {
        let mut next_snapshot = Instant::now() + SNAPSHOT_EVERY;
        let mut last_snapshot = Instant::now();
        let mut failing = false;
        loop {
            let stopping = self.shared.stop.load(Ordering::Acquire);
            let counted = match self.step() {
                Ok(n) => {
                    failing = false;
                    n
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "pipeline cannot read the journal; will retry");
                    }
                    failing = true;
                    0
                }
            };
            let now = Instant::now();
            if now >= next_snapshot {
                self.evict_and_rerank();
            }
            // Retention is waiting for events past the last snapshot: save sooner.
            let wanted = now >= last_snapshot + WANTED_SNAPSHOT_GAP
                && self
                    .progress
                    .as_ref()
                    .is_some_and(|p| p.checkpoint_wanted.swap(false, Ordering::AcqRel));
            if stopping && counted == 0 || now >= next_snapshot || wanted {
                self.save();
                if now >= next_snapshot {
                    next_snapshot = now + SNAPSHOT_EVERY;
                }
                last_snapshot = now;
            }
            if stopping && counted == 0 {
                return;
            }
            if counted == 0 {
                std::thread::park_timeout(Duration::from_millis(200));
            }
        }
    }

    /// Evicts idle keys and re-ranks the campaign labels. The snapshot is saved right after,
    /// so a replay after `kill -9` attributes every event to the labels it had the first time.
    fn evict_and_rerank(&mut self) {
        let clock = wall_clock();
        let mut windows = self.lock();
        let evicted = windows.evict_idle(clock);
        let ranked = rank_campaigns(&windows, clock);
        drop(windows);
        self.metrics.campaigns().rerank(ranked);
        tracing::debug!(
            evicted,
            "idle window keys evicted, campaign labels re-ranked"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.shared
            .windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the next batch; returns how many seqs it moved past.
    fn step(&mut self) -> rusqlite::Result<usize> {
        let from = self.shared.seq.load(Ordering::Acquire);
        let now = wall_clock();
        let Runner {
            tail,
            classifier,
            shared,
            unsaved_learned,
            metrics,
            ..
        } = self;
        // One chunk at a time: its events are borrowed from SQLite's row, so they are counted
        // before the next row is read.
        let last = tail.briefs_after(from, BATCH, |events| {
            let Some(last) = events.last().map(|e| e.seq) else {
                return;
            };
            let mut classified = Vec::with_capacity(events.len());
            let mut delays = Vec::with_capacity(events.len());
            for tailed in events {
                let event = &tailed.brief;
                if event.is_mailjet_test() {
                    // Counted by the windows as a test, and nowhere else (`Placement::Test`):
                    // neither in the campaign counters nor in the delays.
                    classified.push((event, Provider::Other, CampaignKey::of(event), None));
                    continue;
                }
                if let Some(time) = event.time {
                    delays.push((tailed.received_at_ms, tailed.received_at_ms - time * 1000));
                }
                if event.kind == EventKind::Sent
                    && let Some(reply) = event.smtp_reply.as_deref()
                    && let Some(learned) = classifier.learn(&event.email, reply)
                {
                    unsaved_learned.push(learned);
                }
                let provider = classifier.classify(&event.email);
                classified.push((
                    event,
                    provider,
                    CampaignKey::of(event),
                    Some(tailed.received_at_ms),
                ));
            }
            metrics.event_delays(&delays);
            // The windows lock is taken before the campaign counters' lock, as in `save`.
            let mut windows = shared.windows.lock().unwrap_or_else(|p| p.into_inner());
            {
                let mut campaigns = metrics.campaigns();
                for (event, provider, campaign, received_at_ms) in &classified {
                    if let Some(received_at_ms) = *received_at_ms {
                        campaigns.count(event.kind, *provider, campaign, received_at_ms);
                    }
                }
            }
            for (event, provider, campaign, _) in &classified {
                windows.record_in(event, campaign, *provider, now);
            }
            shared.seq.store(last, Ordering::Release);
            metrics.pipeline_progress(last, windows.placements());
        })?;
        let Some(last) = last else {
            return Ok(0);
        };
        // Past a chunk none of whose events parse any more, too (each was logged).
        if self.shared.seq.load(Ordering::Acquire) < last {
            let windows = self.lock();
            self.shared.seq.store(last, Ordering::Release);
            self.metrics.pipeline_progress(last, windows.placements());
        }
        Ok((last - from) as usize)
    }

    fn save(&mut self) {
        // The windows lock is taken before the campaign counters' lock, as in `step`, and both
        // are held, so the two snapshots describe the same seq.
        let (seq, snapshot, campaigns) = {
            let windows = self.lock();
            let campaigns = self.metrics.campaigns().clone();
            (
                self.shared.seq.load(Ordering::Acquire),
                windows.snapshot(),
                campaigns,
            )
        };
        match self
            .state
            .save(seq, &snapshot, &campaigns, &self.unsaved_learned)
        {
            Ok(()) => {
                self.unsaved_learned.clear();
                if let Some(p) = &self.progress {
                    p.checkpointed.fetch_max(seq, Ordering::AcqRel);
                }
            }
            Err(e) => tracing::error!(error = %e, "pipeline snapshot failed; will retry"),
        }
    }
}

/// Campaigns by their event count over the last hour, most first (ties by key), for the
/// `campaign` label of `bouncewatch_events_total`.
fn rank_campaigns(windows: &Windows, now: i64) -> Vec<CampaignKey> {
    let mut volumes: Vec<(u64, CampaignKey)> = windows
        .keys(Scope::Campaign)
        .filter_map(|key| {
            let n = windows.counts(&key, 60, now).total();
            match key {
                Key::Campaign(c) => Some((n, c)),
                _ => None,
            }
        })
        .filter(|(n, _)| *n > 0)
        .collect();
    volumes.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    volumes.into_iter().map(|(_, c)| c).collect()
}

fn wall_clock() -> i64 {
    crate::journal::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricsConfig;

    /// The newest chunk holds only events that no longer parse (a parser change): the pipeline
    /// logs them and moves past them, instead of reading that chunk again forever.
    #[test]
    fn a_last_chunk_that_no_longer_parses_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        crate::journal::test_journal(
            dir.path(),
            &[
                (
                    1,
                    r#"[{"event":"sent","time":1700000000,"email":"a@gmail.com"}]"#,
                ),
                (2, r#"[{"time":"x"},{"nope":1}]"#),
            ],
        );
        let metrics = Arc::new(Metrics::new(&MetricsConfig::default(), dir.path()).unwrap());
        let pipeline = Pipeline::start(
            dir.path(),
            &WindowsConfig::default(),
            &ProvidersConfig::default(),
            metrics,
            None,
        )
        .unwrap();
        let shared = pipeline.shared();
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.seq.load(Ordering::Acquire) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(shared.seq.load(Ordering::Acquire), 3);
        let totals = shared.windows.lock().unwrap().totals();
        assert_eq!((totals.sent, totals.total()), (1, 1));
        pipeline.stop();
    }
}
