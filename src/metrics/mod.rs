//! In-process counters of the receiver and the journal, rendered at `GET /metrics`.
//!
//! Every name comes from [`names`]. The counters are plain atomics so that the request path
//! pays a few nanoseconds; the latency summaries use `hdrhistogram` behind a short `std` mutex
//! (no `.await` is ever held across it). OpenTelemetry export builds on these (the windows and
//! metrics issue).

pub mod names;

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::event::EventKind;
use names::Signal;

/// Statuses the receiver answers with; anything else is counted as `other`.
const STATUSES: [u16; 8] = [200, 400, 401, 403, 404, 413, 500, 503];

/// Why a webhook request was answered 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    QueueFull,
    Storage,
    Closed,
}

impl Unavailable {
    const ALL: [Unavailable; 3] = [
        Unavailable::QueueFull,
        Unavailable::Storage,
        Unavailable::Closed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Unavailable::QueueFull => "queue_full",
            Unavailable::Storage => "storage",
            Unavailable::Closed => "closed",
        }
    }
}

/// A latency or size distribution: quantiles from an HDR histogram, plus an exact sum.
struct Summary {
    /// Values in the histogram's unit (microseconds, or a plain count).
    inner: Mutex<(Histogram<u64>, u64)>,
    /// Multiplies a recorded value into the exported unit (1e-6 for seconds from µs).
    scale: f64,
}

impl Summary {
    fn new(max: u64, scale: f64) -> Summary {
        let hist = Histogram::new_with_bounds(1, max.max(2), 2).unwrap_or_else(|_| {
            Histogram::new(2).expect("a 2-digit histogram with auto-resize is always valid")
        });
        Summary {
            inner: Mutex::new((hist, 0)),
            scale,
        }
    }

    fn record(&self, value: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.saturating_record(value.max(1));
        g.1 = g.1.saturating_add(value);
    }

    fn render(&self, out: &mut String, s: &Signal) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for q in [0.5, 0.9, 0.99] {
            let v = g.0.value_at_quantile(q) as f64 * self.scale;
            let _ = writeln!(out, "{}{{quantile=\"{q}\"}} {v}", s.name);
        }
        let _ = writeln!(out, "{}_sum {}", s.name, g.1 as f64 * self.scale);
        let _ = writeln!(out, "{}_count {}", s.name, g.0.len());
    }

    fn quantile(&self, q: f64) -> f64 {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.value_at_quantile(q) as f64 * self.scale
    }
}

/// All in-process counters. One instance per process, shared through an `Arc`.
pub struct Metrics {
    requests: [AtomicU64; STATUSES.len() + 1],
    events: [AtomicU64; EventKind::ALL.len()],
    duplicates: AtomicU64,
    quarantined: AtomicU64,
    unauthorized: AtomicU64,
    too_large: AtomicU64,
    unavailable: [AtomicU64; Unavailable::ALL.len()],
    empty: AtomicU64,
    request_duration: Summary,
    last_event_ms: AtomicI64,
    commits: AtomicU64,
    commit_failures: AtomicU64,
    commit_duration: Summary,
    batch_size: Summary,
    retention_deleted: AtomicU64,
    journal_seq: AtomicI64,
    pipeline_seq: AtomicI64,
    late: AtomicU64,
    clamped: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Default::default(),
            events: Default::default(),
            duplicates: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            unavailable: Default::default(),
            empty: AtomicU64::new(0),
            request_duration: Summary::new(60_000_000, 1e-6),
            last_event_ms: AtomicI64::new(0),
            commits: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            commit_duration: Summary::new(60_000_000, 1e-6),
            batch_size: Summary::new(10_000_000, 1.0),
            retention_deleted: AtomicU64::new(0),
            journal_seq: AtomicI64::new(0),
            pipeline_seq: AtomicI64::new(0),
            late: AtomicU64::new(0),
            clamped: AtomicU64::new(0),
        }
    }
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

impl Metrics {
    pub fn request(&self, status: u16, elapsed: Duration) {
        let i = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        add(&self.requests[i], 1);
        self.request_duration.record(elapsed.as_micros() as u64);
    }

    pub fn stored(&self, kind: EventKind, now_ms: i64) {
        add(&self.events[kind.index()], 1);
        self.last_event_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    pub fn duplicates(&self, n: usize) {
        add(&self.duplicates, n);
    }

    pub fn quarantined(&self, n: usize) {
        add(&self.quarantined, n);
    }

    pub fn unauthorized(&self) {
        add(&self.unauthorized, 1);
    }

    pub fn too_large(&self) {
        add(&self.too_large, 1);
    }

    pub fn unavailable(&self, why: Unavailable) {
        add(&self.unavailable[why as usize], 1);
    }

    pub fn empty_body(&self) {
        add(&self.empty, 1);
    }

    pub fn journal_commit(&self, elapsed: Duration, events: usize) {
        add(&self.commits, 1);
        self.commit_duration.record(elapsed.as_micros() as u64);
        self.batch_size.record(events as u64);
    }

    pub fn journal_commit_failed(&self) {
        add(&self.commit_failures, 1);
    }

    pub fn retention_deleted(&self, n: usize) {
        add(&self.retention_deleted, n);
    }

    /// The journal's newest committed `seq`.
    pub fn journal_seq(&self, seq: i64) {
        self.journal_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// Where the pipeline is, and its running totals of late and clamped events (restored from
    /// its snapshot, so they do not reset on restart).
    pub fn pipeline_progress(&self, seq: i64, late: u64, clamped: u64) {
        self.pipeline_seq.store(seq, Ordering::Relaxed);
        self.late.store(late, Ordering::Relaxed);
        self.clamped.store(clamped, Ordering::Relaxed);
    }

    /// The p-quantile of webhook request latency, in seconds.
    pub fn request_latency_quantile(&self, q: f64) -> f64 {
        self.request_duration.quantile(q)
    }

    /// Renders every signal in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        use names::*;
        let mut out = String::with_capacity(4096);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for s in ALL {
            let _ = writeln!(out, "# HELP {} {}", s.name, s.help);
            let _ = writeln!(out, "# TYPE {} {}", s.name, s.kind.as_str());
            match s.name {
                n if n == RECEIVER_REQUESTS.name => {
                    for (i, c) in self.requests.iter().enumerate() {
                        let status = STATUSES.get(i).map_or("other".to_string(), u16::to_string);
                        let _ = writeln!(out, "{n}{{status=\"{status}\"}} {}", get(c));
                    }
                }
                n if n == RECEIVER_EVENTS.name => {
                    for kind in EventKind::ALL {
                        let _ = writeln!(
                            out,
                            "{n}{{event=\"{}\"}} {}",
                            kind.as_str(),
                            get(&self.events[kind.index()])
                        );
                    }
                }
                n if n == RECEIVER_UNAVAILABLE.name => {
                    for why in Unavailable::ALL {
                        let _ = writeln!(
                            out,
                            "{n}{{reason=\"{}\"}} {}",
                            why.as_str(),
                            get(&self.unavailable[why as usize])
                        );
                    }
                }
                n if n == RECEIVER_REQUEST_DURATION.name => {
                    self.request_duration.render(&mut out, s)
                }
                n if n == JOURNAL_COMMIT_DURATION.name => self.commit_duration.render(&mut out, s),
                n if n == JOURNAL_BATCH_SIZE.name => self.batch_size.render(&mut out, s),
                n if n == RECEIVER_LAST_EVENT.name => {
                    let ms = self.last_event_ms.load(Ordering::Relaxed);
                    let _ = writeln!(out, "{n} {}", ms as f64 / 1000.0);
                }
                n if n == JOURNAL_LAST_SEQ.name => {
                    let _ = writeln!(out, "{n} {}", self.journal_seq.load(Ordering::Relaxed));
                }
                n if n == PIPELINE_LAST_SEQ.name => {
                    let _ = writeln!(out, "{n} {}", self.pipeline_seq.load(Ordering::Relaxed));
                }
                n if n == PIPELINE_LAG.name => {
                    let lag = self.journal_seq.load(Ordering::Relaxed)
                        - self.pipeline_seq.load(Ordering::Relaxed);
                    let _ = writeln!(out, "{n} {}", lag.max(0));
                }
                n => {
                    let c = match n {
                        _ if n == RECEIVER_DUPLICATES.name => &self.duplicates,
                        _ if n == RECEIVER_QUARANTINED.name => &self.quarantined,
                        _ if n == RECEIVER_UNAUTHORIZED.name => &self.unauthorized,
                        _ if n == RECEIVER_TOO_LARGE.name => &self.too_large,
                        _ if n == RECEIVER_EMPTY.name => &self.empty,
                        _ if n == JOURNAL_COMMITS.name => &self.commits,
                        _ if n == JOURNAL_COMMIT_FAILURES.name => &self.commit_failures,
                        _ if n == JOURNAL_RETENTION_DELETED.name => &self.retention_deleted,
                        _ if n == EVENTS_LATE.name => &self.late,
                        _ if n == EVENTS_CLAMPED.name => &self.clamped,
                        _ => unreachable!("signal {n} is in names::ALL but not rendered"),
                    };
                    let _ = writeln!(out, "{n} {}", get(c));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one sample's value back out of the rendered text.
    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn every_signal_renders_with_help_and_type() {
        let m = Metrics::default();
        m.request(200, Duration::from_millis(3));
        m.request(418, Duration::from_millis(1));
        m.stored(EventKind::Bounce, 1_700_000_000_000);
        m.duplicates(2);
        m.unavailable(Unavailable::Storage);
        let text = m.render();
        for s in names::ALL {
            assert!(
                text.contains(&format!("# TYPE {} {}", s.name, s.kind.as_str())),
                "{}",
                s.name
            );
        }
        assert_eq!(
            sample(&text, "bouncewatch_receiver_requests_total{status=\"200\"}"),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                "bouncewatch_receiver_requests_total{status=\"other\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(&text, "bouncewatch_receiver_events_total{event=\"bounce\"}"),
            1.0
        );
        assert_eq!(sample(&text, "bouncewatch_receiver_duplicates_total"), 2.0);
        assert_eq!(
            sample(
                &text,
                "bouncewatch_receiver_unavailable_total{reason=\"storage\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(&text, "bouncewatch_receiver_last_event_timestamp_seconds"),
            1_700_000_000.0
        );
        assert_eq!(
            sample(&text, "bouncewatch_receiver_request_duration_seconds_count"),
            2.0
        );
        let p99 = sample(
            &text,
            "bouncewatch_receiver_request_duration_seconds{quantile=\"0.99\"}",
        );
        assert!((0.0029..0.0031).contains(&p99), "{p99}");
    }
}
