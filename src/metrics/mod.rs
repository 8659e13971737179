//! The signals bouncewatch exports: OpenTelemetry instruments, pushed over OTLP/HTTP and served
//! at `GET /metrics` from the same collection.
//!
//! One `SdkMeterProvider` has two readers: a periodic reader that pushes OTLP protobuf with
//! cumulative temporality (when an endpoint is configured), and a manual reader that
//! `/metrics` collects on every scrape. Both see the same instruments, so the two paths cannot
//! disagree. Names come from [`names`] only.
//!
//! The request path must stay cheap, so counters there are plain atomics that observable
//! instruments read at collection time; only histograms are recorded through the SDK, once per
//! request or commit. Per-event counters with a campaign label live in [`CampaignCounters`],
//! which the pipeline updates once per batch under one lock.

pub mod campaigns;
pub mod config;
pub mod delay;
pub mod names;
mod observers;
mod otlp;
mod prometheus;

use observers::register_observers;
use otlp::{build_exporter, otlp_requested, persistent_instance_id, random_id, resource};

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, PeriodicReader, Pipeline, SdkMeterProvider, Temporality,
};

use crate::event::EventKind;
use crate::pipeline::Shared;
use crate::windows::WindowsConfig;
pub use campaigns::CampaignCounters;
pub use config::MetricsConfig;
pub use delay::{DelaySummary, RecentDelays};
use names::Signal;

/// Statuses the receiver answers with; anything else is counted as `other`.
const STATUSES: [u16; 10] = [200, 400, 401, 403, 404, 405, 408, 413, 500, 503];

/// Histogram buckets, in the histogram's unit.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: [f64; 13] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];
const DELAY_BUCKETS: [f64; 14] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0,
    86400.0,
];

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

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot set up the OTLP exporter (metrics.otlp_endpoint): {0}")]
    Exporter(String),
}

/// The hot-path counters, read by the observable instruments at each collection.
#[derive(Default)]
struct Counters {
    requests: [AtomicU64; STATUSES.len() + 1],
    events: [AtomicU64; EventKind::ALL.len()],
    duplicates: AtomicU64,
    quarantined: AtomicU64,
    unauthorized: AtomicU64,
    too_large: AtomicU64,
    connections_refused: AtomicU64,
    unavailable: [AtomicU64; Unavailable::ALL.len()],
    empty: AtomicU64,
    last_event_ms: AtomicI64,
    commits: AtomicU64,
    commit_failures: AtomicU64,
    retention_deleted: AtomicU64,
    journal_seq: AtomicI64,
    pipeline_seq: AtomicI64,
    late: AtomicU64,
    clamped: AtomicU64,
    tests: AtomicU64,
    silenced: AtomicU64,
    /// The journal's newest `seq` when the pipeline started. Until the pipeline has counted
    /// that far, the counters restored from its snapshot are behind what the previous run
    /// exported (it replays what came after the snapshot), and a store would read the lower
    /// value as a reset and count the replay twice: they are not exported until then.
    replay_until: AtomicI64,
}

impl Counters {
    /// Whether the pipeline is still replaying what the journal held at start.
    pub(super) fn replaying(&self) -> bool {
        seq(&self.pipeline_seq) < seq(&self.replay_until)
    }
}

/// The windows the rate gauges read, once the pipeline has started.
struct WindowsSource {
    shared: Arc<Shared>,
    /// `(minutes, label)` per configured window, label as in `window="5m"`.
    windows: Vec<(u32, String)>,
}

/// The `outcome` label of `bouncewatch_alert_notifications_total`.
const NOTIFICATION_OUTCOMES: [&str; 2] = ["delivered", "given_up"];

/// Everything the observable instruments' callbacks read.
struct State {
    counters: Counters,
    /// When this process's metrics began, Unix ms.
    started_ms: i64,
    campaigns: Mutex<CampaignCounters>,
    delays: Mutex<RecentDelays>,
    /// The Mailjet watch's last answer, once `serve` watches Mailjet.
    mailjet: OnceLock<crate::mailjet::watch::Shared>,
    /// `(rule, severity, firing)` as of the last evaluation.
    firing: Mutex<Vec<(String, &'static str, u64)>>,
    /// `(channel, outcome)` → notifications.
    notifications: Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
    windows: OnceLock<WindowsSource>,
}

/// The `/metrics` reader, shared between the meter provider (which owns its readers) and the
/// scrape handler.
#[derive(Debug, Clone)]
struct ScrapeReader(Arc<ManualReader>);

impl MetricReader for ScrapeReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// All signals. One instance per process, shared through an `Arc`.
pub struct Metrics {
    state: Arc<State>,
    request_duration: Histogram<f64>,
    commit_duration: Histogram<f64>,
    batch_size: Histogram<u64>,
    event_delay: Histogram<f64>,
    provider: SdkMeterProvider,
    scrape: ScrapeReader,
    resource: Resource,
    pushing: bool,
}

impl Default for Metrics {
    /// No OTLP push, whatever the environment says: for tests and benchmarks.
    fn default() -> Self {
        let config = MetricsConfig::default();
        Metrics::build(&config, random_id(), None)
    }
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

impl Metrics {
    /// The process's metrics: `/metrics` always, and an OTLP push when `config` or the
    /// `OTEL_EXPORTER_OTLP_*` variables name an endpoint. Call it outside the async runtime:
    /// the OTLP exporter runs a blocking HTTP client on its own thread.
    pub fn new(config: &MetricsConfig, data_dir: &Path) -> Result<Metrics, MetricsError> {
        let instance = if config.instance_id.is_empty() {
            persistent_instance_id(data_dir)
        } else {
            config.instance_id.clone()
        };
        let exporter = if otlp_requested(config) {
            Some(build_exporter(config)?)
        } else {
            None
        };
        Ok(Metrics::build(config, instance, exporter))
    }

    fn build(
        config: &MetricsConfig,
        instance: String,
        exporter: Option<opentelemetry_otlp::MetricExporter>,
    ) -> Metrics {
        let resource = resource(config, instance);
        let scrape = ScrapeReader(Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        ));
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(scrape.clone());
        let pushing = exporter.is_some();
        if let Some(exporter) = exporter {
            let mut reader = PeriodicReader::builder(exporter);
            let default_interval = MetricsConfig::default().otlp_interval;
            let from_env = std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(std::time::Duration::from_millis);
            let interval = match from_env {
                Some(interval) if config.otlp_interval == default_interval => interval,
                _ => {
                    reader = reader.with_interval(config.otlp_interval.0);
                    config.otlp_interval.0
                }
            };
            let delay = config.new_series_delay.0;
            if !delay.is_zero() && interval > delay {
                // `validate` refuses this when the endpoint is in the config; from `OTEL_*`
                // variables it is only seen here.
                tracing::warn!(
                    interval_ms = interval.as_millis() as u64,
                    new_series_delay = %config.new_series_delay,
                    "the OTLP push interval is longer than metrics.new_series_delay: new series \
                     of bouncewatch_events_total may reach the store at their count, and \
                     increase() will miss their first events"
                );
            }
            builder = builder.with_reader(reader.build());
        }
        let provider = builder.build();
        let meter = provider.meter("bouncewatch");
        let state = Arc::new(State {
            counters: Counters::default(),
            started_ms: crate::journal::now_ms(),
            campaigns: Mutex::new(CampaignCounters::new(
                config.top_campaigns,
                config.new_series_delay.0,
            )),
            delays: Mutex::new(RecentDelays::default()),
            firing: Mutex::new(Vec::new()),
            notifications: Mutex::new(std::collections::BTreeMap::new()),
            mailjet: OnceLock::new(),
            windows: OnceLock::new(),
        });
        register_observers(&meter, &state);
        let f64_histogram = |s: &Signal, buckets: &[f64]| {
            meter
                .f64_histogram(s.instrument())
                .with_description(s.help)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let request_duration = f64_histogram(&names::RECEIVER_REQUEST_DURATION, &LATENCY_BUCKETS);
        let commit_duration = f64_histogram(&names::JOURNAL_COMMIT_DURATION, &LATENCY_BUCKETS);
        let event_delay = f64_histogram(&names::EVENT_DELAY, &DELAY_BUCKETS);
        let batch_size = meter
            .u64_histogram(names::JOURNAL_BATCH_SIZE.instrument())
            .with_description(names::JOURNAL_BATCH_SIZE.help)
            .with_boundaries(BATCH_BUCKETS.to_vec())
            .build();
        Metrics {
            state,
            request_duration,
            commit_duration,
            batch_size,
            event_delay,
            provider,
            scrape,
            resource,
            pushing,
        }
    }

    /// Whether an OTLP push is configured.
    pub fn pushing(&self) -> bool {
        self.pushing
    }

    /// The `service.instance.id` this process reports.
    pub fn instance_id(&self) -> String {
        self.resource
            .get(&opentelemetry::Key::from_static_str("service.instance.id"))
            .map(|v| v.as_str().into_owned())
            .unwrap_or_default()
    }

    fn counters(&self) -> &Counters {
        &self.state.counters
    }

    pub fn request(&self, status: u16, elapsed: Duration) {
        self.answered(status);
        self.request_duration.record(elapsed.as_secs_f64(), &[]);
    }

    /// A request answered without reaching the receiver (an unknown path): counted by status,
    /// kept out of the receiver's latency.
    pub fn answered(&self, status: u16) {
        let i = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        add(&self.counters().requests[i], 1);
    }

    /// Events one journal commit stored, by [`EventKind::index`], committed at `now_ms`.
    pub fn committed(&self, by_kind: &[u64; EventKind::ALL.len()], now_ms: i64) {
        let c = self.counters();
        for (counter, &n) in c.events.iter().zip(by_kind) {
            if n > 0 {
                add(counter, n as usize);
            }
        }
        if by_kind.iter().any(|&n| n > 0) {
            c.last_event_ms.fetch_max(now_ms, Ordering::Relaxed);
        }
    }

    /// The alert engine's firing count per rule, after each evaluation.
    pub fn alerts_firing(&self, per_rule: Vec<(String, &'static str, u64)>) {
        *self.state.firing.lock().unwrap_or_else(|p| p.into_inner()) = per_rule;
    }

    /// Lets `bouncewatch_mailjet_callback_alive` read the Mailjet watch.
    pub fn attach_mailjet(&self, shared: crate::mailjet::watch::Shared) {
        let _ = self.state.mailjet.set(shared);
    }

    /// The notification channels, so that each outcome is exported from 0 before anything
    /// happens (a rule on its increase then sees the first one).
    pub fn notification_channels(&self, channels: &[&str]) {
        let mut n = self
            .state
            .notifications
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for channel in channels {
            for outcome in NOTIFICATION_OUTCOMES {
                n.entry((channel.to_string(), outcome)).or_insert(0);
            }
        }
    }

    /// A notification delivered on `channel`, or given up.
    pub fn notification(&self, channel: &str, delivered: bool) {
        let outcome = NOTIFICATION_OUTCOMES[usize::from(!delivered)];
        *self
            .state
            .notifications
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((channel.to_string(), outcome))
            .or_insert(0) += 1;
    }

    /// Notifications a silence suppressed.
    pub fn silenced(&self, n: usize) {
        add(&self.counters().silenced, n);
    }

    /// When the last event was stored, as the journal remembers it at startup.
    pub fn last_event_at(&self, ms: i64) {
        self.counters()
            .last_event_ms
            .fetch_max(ms, Ordering::Relaxed);
    }

    pub fn duplicates(&self, n: usize) {
        add(&self.counters().duplicates, n);
    }

    pub fn quarantined(&self, n: usize) {
        add(&self.counters().quarantined, n);
    }

    pub fn unauthorized(&self) {
        add(&self.counters().unauthorized, 1);
    }

    pub fn too_large(&self) {
        add(&self.counters().too_large, 1);
    }

    pub fn connection_refused(&self) {
        add(&self.counters().connections_refused, 1);
    }

    pub fn unavailable(&self, why: Unavailable) {
        add(&self.counters().unavailable[why as usize], 1);
    }

    pub fn empty_body(&self) {
        add(&self.counters().empty, 1);
    }

    pub fn journal_commit(&self, elapsed: Duration, events: usize) {
        add(&self.counters().commits, 1);
        self.commit_duration.record(elapsed.as_secs_f64(), &[]);
        self.batch_size.record(events as u64, &[]);
    }

    pub fn journal_commit_failed(&self) {
        add(&self.counters().commit_failures, 1);
    }

    pub fn retention_deleted(&self, n: usize) {
        add(&self.counters().retention_deleted, n);
    }

    /// The journal's newest committed `seq`.
    pub fn journal_seq(&self, seq: i64) {
        self.counters()
            .journal_seq
            .fetch_max(seq, Ordering::Relaxed);
    }

    /// Called as the pipeline starts from its snapshot: the restored counters wait until it
    /// has counted everything the journal holds now (see `Counters::replay_until`).
    pub fn replay_to_journal_head(&self) {
        let c = self.counters();
        c.replay_until.store(seq(&c.journal_seq), Ordering::Relaxed);
    }

    /// Where the pipeline is, and the windows' running totals of late, clamped and test events
    /// (restored from its snapshot, so they do not reset on restart).
    pub fn pipeline_progress(&self, seq: i64, placed: crate::windows::Placements) {
        let c = self.counters();
        c.pipeline_seq.store(seq, Ordering::Relaxed);
        c.late.store(placed.late, Ordering::Relaxed);
        c.clamped.store(placed.clamped, Ordering::Relaxed);
        c.tests.store(placed.tests, Ordering::Relaxed);
    }

    /// A batch of events' delays from their `time` to their receipt: `(received_at_ms,
    /// delay_ms)` each. Into the exported histogram, and into the recent ones for quantiles.
    pub fn event_delays(&self, delays: &[(i64, i64)]) {
        if delays.is_empty() {
            return;
        }
        let mut recent = self.state.delays.lock().unwrap_or_else(|p| p.into_inner());
        for &(received_ms, delay_ms) in delays {
            let delay_ms = delay_ms.max(0);
            // The exported histogram starts empty in each process. An event received before
            // this one started is replayed from the journal after `kill -9`: the previous run
            // has exported it already.
            if received_ms >= self.state.started_ms {
                self.event_delay.record(delay_ms as f64 / 1000.0, &[]);
            }
            recent.record((received_ms.max(0) / 60_000) as u32, delay_ms as u64);
        }
    }

    /// The receiver's counters for the webhook alert rules (all but `events_24h`, which the
    /// windows know).
    pub fn health_sample(&self, now: i64) -> crate::alerts::HealthSample {
        let c = self.counters();
        let status = |code: u16| {
            STATUSES
                .iter()
                .position(|&s| s == code)
                .map_or(0, |i| get(&c.requests[i]))
        };
        crate::alerts::HealthSample {
            at: now,
            requests: c.requests.iter().map(get).sum(),
            unauthorized: status(401),
            too_large: status(413),
            unavailable: status(500) + status(503),
            quarantined: get(&c.quarantined),
            commit_failures: get(&c.commit_failures),
            last_event_ms: c.last_event_ms.load(Ordering::Relaxed),
            events_24h: 0,
            delay_p99: self.event_delay_summary(5).map(|d| d.p99_seconds),
            pipeline_lag: (seq(&c.journal_seq) - seq(&c.pipeline_seq)).max(0),
            callbacks: None,
        }
    }

    /// Quantiles of the delays of the events received in the last `window_minutes` (at most
    /// an hour), by the wall clock.
    pub fn event_delay_summary(&self, window_minutes: u32) -> Option<DelaySummary> {
        let now_minute = (crate::journal::now_ms().max(0) / 60_000) as u32;
        self.state
            .delays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .summary(now_minute, window_minutes)
    }

    /// The counters behind `bouncewatch_events_total`; the pipeline holds this for one batch.
    pub fn campaigns(&self) -> MutexGuard<'_, CampaignCounters> {
        self.state
            .campaigns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Lets the rate gauges read the pipeline's windows. Only the first call takes effect.
    pub fn attach_windows(&self, shared: Arc<Shared>, config: &WindowsConfig) {
        let windows = config
            .windows
            .iter()
            .map(|w| {
                let minutes = (w.0.as_secs() / 60) as u32;
                (minutes, window_label(minutes))
            })
            .collect();
        let _ = self.state.windows.set(WindowsSource { shared, windows });
    }

    /// Collects every instrument and renders the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut rm = ResourceMetrics::default();
        if let Err(e) = self.scrape.collect(&mut rm) {
            tracing::warn!(error = %e, "metrics collection failed");
        }
        prometheus::render(&rm)
    }

    /// Pushes a last time and stops the exporter.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "metrics shutdown");
        }
    }
}

/// `5m`, `1h`, `24h`: the window label of a number of minutes.
pub fn window_label(minutes: u32) -> String {
    if minutes.is_multiple_of(60) {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

pub(super) fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

pub(super) fn seq(a: &AtomicI64) -> i64 {
    a.load(Ordering::Relaxed)
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

    /// After `kill -9` the pipeline replays the journal from its snapshot, and its restored
    /// counters climb back to what the previous run exported; shown during the climb, they
    /// would read as a reset, and a store would count the replay twice.
    #[test]
    fn restored_counters_are_not_exported_while_the_journal_replays() {
        let m = Metrics::default();
        m.journal_seq(100);
        let placed = crate::windows::Placements {
            late: 3,
            clamped: 1,
            tests: 2,
        };
        m.pipeline_progress(40, placed);
        m.replay_to_journal_head();
        m.campaigns().count(
            EventKind::Sent,
            crate::pipeline::Provider::Google,
            &crate::windows::CampaignKey::Id(1),
            0,
        );
        let text = m.render();
        assert!(!text.contains("bouncewatch_events_total{"), "{text}");
        for series in [
            "bouncewatch_events_late_total ",
            "bouncewatch_events_clamped_total ",
            "bouncewatch_events_test_total ",
        ] {
            assert!(!text.lines().any(|l| l.starts_with(series)), "{text}");
        }
        m.pipeline_progress(100, placed);
        let text = m.render();
        assert!(text.contains("bouncewatch_events_total{"), "{text}");
        assert_eq!(sample(&text, "bouncewatch_events_late_total"), 3.0);
        assert_eq!(sample(&text, "bouncewatch_events_clamped_total"), 1.0);
        assert_eq!(sample(&text, "bouncewatch_events_test_total"), 2.0);
    }

    /// The exported delay histogram is the process's own: replayed events, received before it
    /// started, were in the previous run's.
    #[test]
    fn replayed_events_are_not_in_the_delay_histogram_again() {
        let m = Metrics::default();
        let started = m.state.started_ms;
        m.event_delays(&[(started - 5_000, 1_000), (started + 1, 2_000)]);
        let text = m.render();
        assert_eq!(sample(&text, "bouncewatch_event_delay_seconds_count"), 1.0);
        assert_eq!(sample(&text, "bouncewatch_event_delay_seconds_sum"), 2.0);
    }

    #[test]
    fn every_signal_renders_with_help_and_type() {
        let m = Metrics::default();
        assert!(!m.pushing());
        m.request(200, Duration::from_millis(3));
        m.request(418, Duration::from_millis(1));
        let mut by_kind = [0; EventKind::ALL.len()];
        by_kind[EventKind::Bounce.index()] = 1;
        m.committed(&by_kind, 1_700_000_000_000);
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
        // 3 ms and 1 ms: both under the 5 ms bucket, one under 2.5 ms.
        assert_eq!(
            sample(
                &text,
                "bouncewatch_receiver_request_duration_seconds_bucket{le=\"0.0025\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                "bouncewatch_receiver_request_duration_seconds_bucket{le=\"+Inf\"}"
            ),
            2.0
        );
        assert!(text.contains("target_info{"), "{text}");
        assert!(text.contains("service_instance_id=\""), "{text}");
    }
}
