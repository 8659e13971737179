//! Every signal bouncewatch exports, named once.
//!
//! Dashboards and alert rules depend on these names, so call sites never spell a metric name:
//! they go through [`super::Metrics`], which creates its OpenTelemetry instruments from these
//! constants, and the dashboard and alert tests read this file.
//!
//! `name` is the name a Prometheus query uses. It is what Prometheus' OTLP translation (and
//! VictoriaMetrics' `-opentelemetry.usePrometheusNaming`) makes of the instrument name: the
//! instrument is called `name` without `_total`, and the translation adds `_total` back to a
//! monotonic sum. Units are spelled in the names (`_seconds`) and the instruments carry no UCUM
//! unit, so no translator appends a second suffix. Both export paths thus show one set of names.

/// How a signal aggregates, as Prometheus' `# TYPE` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One exported signal: its name, its meaning and unit, its kind and the labels it carries.
#[derive(Debug, Clone, Copy)]
pub struct Signal {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
}

impl Signal {
    /// The OpenTelemetry instrument's name: `name`, without the `_total` a counter gets back
    /// from the translation.
    pub fn instrument(&self) -> &'static str {
        match self.kind {
            Kind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            _ => self.name,
        }
    }
}

pub const RECEIVER_REQUESTS: Signal = Signal {
    name: "bouncewatch_receiver_requests_total",
    help: "Webhook requests answered, by HTTP status.",
    kind: Kind::Counter,
    labels: &["status"],
};

pub const RECEIVER_EVENTS: Signal = Signal {
    name: "bouncewatch_receiver_events_total",
    help: "Events newly stored in the journal, by event type (duplicates excluded).",
    kind: Kind::Counter,
    labels: &["event"],
};

pub const RECEIVER_DUPLICATES: Signal = Signal {
    name: "bouncewatch_receiver_duplicates_total",
    help: "Events received again (Mailjet retries) and not stored a second time.",
    kind: Kind::Counter,
    labels: &[],
};

pub const RECEIVER_QUARANTINED: Signal = Signal {
    name: "bouncewatch_receiver_quarantined_total",
    help: "Bodies or array elements that were not events, kept in the quarantine.",
    kind: Kind::Counter,
    labels: &[],
};

pub const RECEIVER_UNAUTHORIZED: Signal = Signal {
    name: "bouncewatch_receiver_unauthorized_total",
    help: "Webhook requests refused with 401 for a wrong or missing credential.",
    kind: Kind::Counter,
    labels: &[],
};

pub const RECEIVER_TOO_LARGE: Signal = Signal {
    name: "bouncewatch_receiver_body_too_large_total",
    help: "Webhook requests refused with 413 because the body exceeded server.max_body.",
    kind: Kind::Counter,
    labels: &[],
};

pub const RECEIVER_CONNECTIONS_REFUSED: Signal = Signal {
    name: "bouncewatch_receiver_connections_refused_total",
    help: "Connections closed on arrival because server.max_connections were open.",
    kind: Kind::Counter,
    labels: &[],
};

pub const RECEIVER_UNAVAILABLE: Signal = Signal {
    name: "bouncewatch_receiver_unavailable_total",
    help: "Webhook requests answered 503, by reason (queue_full, storage, closed).",
    kind: Kind::Counter,
    labels: &["reason"],
};

pub const RECEIVER_EMPTY: Signal = Signal {
    name: "bouncewatch_receiver_empty_bodies_total",
    help: "Empty bodies and empty arrays (the Mailjet UI's test button), answered 200, nothing stored.",
    kind: Kind::Counter,
    labels: &[],
};

pub const RECEIVER_REQUEST_DURATION: Signal = Signal {
    name: "bouncewatch_receiver_request_duration_seconds",
    help: "Time from request start to answer, for webhook requests, in seconds.",
    kind: Kind::Histogram,
    labels: &[],
};

pub const RECEIVER_LAST_EVENT: Signal = Signal {
    name: "bouncewatch_receiver_last_event_timestamp_seconds",
    help: "Unix time at which the last event was stored.",
    kind: Kind::Gauge,
    labels: &[],
};

pub const JOURNAL_COMMITS: Signal = Signal {
    name: "bouncewatch_journal_commits_total",
    help: "Group commits of the journal writer.",
    kind: Kind::Counter,
    labels: &[],
};

pub const JOURNAL_COMMIT_FAILURES: Signal = Signal {
    name: "bouncewatch_journal_commit_failures_total",
    help: "Journal transactions that failed (disk full, I/O error); their requests got 503.",
    kind: Kind::Counter,
    labels: &[],
};

pub const JOURNAL_COMMIT_DURATION: Signal = Signal {
    name: "bouncewatch_journal_commit_duration_seconds",
    help: "Time to write and commit one group, in seconds.",
    kind: Kind::Histogram,
    labels: &[],
};

pub const JOURNAL_BATCH_SIZE: Signal = Signal {
    name: "bouncewatch_journal_commit_batch_events",
    help: "Events and quarantined bodies written per group commit.",
    kind: Kind::Histogram,
    labels: &[],
};

pub const JOURNAL_RETENTION_DELETED: Signal = Signal {
    name: "bouncewatch_journal_retention_deleted_total",
    help: "Events and quarantined bodies deleted by retention.",
    kind: Kind::Counter,
    labels: &[],
};

pub const JOURNAL_LAST_SEQ: Signal = Signal {
    name: "bouncewatch_journal_last_seq",
    help: "The sequence number of the last event committed to the journal.",
    kind: Kind::Gauge,
    labels: &[],
};

pub const PIPELINE_LAST_SEQ: Signal = Signal {
    name: "bouncewatch_pipeline_last_seq",
    help: "The sequence number of the last event counted in the windows.",
    kind: Kind::Gauge,
    labels: &[],
};

pub const PIPELINE_LAG: Signal = Signal {
    name: "bouncewatch_pipeline_lag_events",
    help: "Events committed to the journal but not yet counted in the windows.",
    kind: Kind::Gauge,
    labels: &[],
};

pub const EVENTS: Signal = Signal {
    name: "bouncewatch_events_total",
    help: "Events counted by the pipeline (after deduplication), by type, mailbox provider and campaign; campaigns outside the top N by recent volume are counted as campaign=\"other\".",
    kind: Kind::Counter,
    labels: &["event", "provider", "campaign"],
};

pub const EVENT_DELAY: Signal = Signal {
    name: "bouncewatch_event_delay_seconds",
    help: "Time from the event (Mailjet's time) to its receipt; a long delay means Mailjet retried.",
    kind: Kind::Histogram,
    labels: &[],
};

pub const WINDOW_RATE: Signal = Signal {
    name: "bouncewatch_window_rate",
    help: "A rate over a sliding event-time window, globally (no provider label) or per provider; absent while its denominator is 0.",
    kind: Kind::Gauge,
    labels: &["rate", "window", "provider"],
};

pub const WINDOW_RATE_NUMERATOR: Signal = Signal {
    name: "bouncewatch_window_rate_numerator",
    help: "The numerator of bouncewatch_window_rate (bounces, blocks, complaints...); sum these across replicas, then divide.",
    kind: Kind::Gauge,
    labels: &["rate", "window", "provider"],
};

pub const WINDOW_RATE_DENOMINATOR: Signal = Signal {
    name: "bouncewatch_window_rate_denominator",
    help: "The denominator of bouncewatch_window_rate (sent, or delivery attempts for the block rate).",
    kind: Kind::Gauge,
    labels: &["rate", "window", "provider"],
};

pub const WINDOW_REASONS: Signal = Signal {
    name: "bouncewatch_window_reason_events",
    help: "Bounces and blocks by reason (error_related_to as category, error) over a sliding window: the top 10 globally (no provider label) and per provider.",
    kind: Kind::Gauge,
    labels: &["event", "category", "error", "window", "provider"],
};

pub const ALERTS_FIRING: Signal = Signal {
    name: "bouncewatch_alerts_firing",
    help: "Alerts firing now, per rule (0 while a rule is quiet); GET /api/v1/alerts lists their keys.",
    kind: Kind::Gauge,
    labels: &["rule", "severity"],
};

pub const ALERTS_SILENCED: Signal = Signal {
    name: "bouncewatch_alert_notifications_silenced_total",
    help: "Alert notifications suppressed by a silence (one per alert and channel).",
    kind: Kind::Counter,
    labels: &[],
};

pub const ALERT_NOTIFICATIONS: Signal = Signal {
    name: "bouncewatch_alert_notifications_total",
    help: "Alert notifications by channel and outcome: delivered, or given_up (a permanent error, or a day of failures).",
    kind: Kind::Counter,
    labels: &["channel", "outcome"],
};

pub const MAILJET_CALLBACK_ALIVE: Signal = Signal {
    name: "bouncewatch_mailjet_callback_alive",
    help: "Mailjet's view of each callback: 1 alive, 0 dead (suspended) or not registered. Only while serve watches Mailjet (API credentials set).",
    kind: Kind::Gauge,
    labels: &["event_type", "backup"],
};

pub const MAILJET_CHECKED: Signal = Signal {
    name: "bouncewatch_mailjet_checked_timestamp_seconds",
    help: "When Mailjet's API last answered the callback watch (Unix seconds; 0 before it first does). Only while serve watches Mailjet.",
    kind: Kind::Gauge,
    labels: &[],
};

pub const EVENTS_LATE: Signal = Signal {
    name: "bouncewatch_events_late_total",
    help: "Events older than the longest window when counted: in the totals only.",
    kind: Kind::Counter,
    labels: &[],
};

pub const EVENTS_CLAMPED: Signal = Signal {
    name: "bouncewatch_events_clamped_total",
    help: "Events whose time was ahead of the clock beyond windows.future_tolerance; counted at now.",
    kind: Kind::Counter,
    labels: &[],
};

pub const EVENTS_TEST: Signal = Signal {
    name: "bouncewatch_events_test_total",
    help: "Placeholder events from Mailjet's \"send test\" button (MessageID 0, no address, no campaign): stored, but counted in no window, rate or events_total.",
    kind: Kind::Counter,
    labels: &[],
};

/// Every signal, in the order `/metrics` renders them.
pub const ALL: &[Signal] = &[
    RECEIVER_REQUESTS,
    RECEIVER_EVENTS,
    RECEIVER_DUPLICATES,
    RECEIVER_QUARANTINED,
    RECEIVER_UNAUTHORIZED,
    RECEIVER_TOO_LARGE,
    RECEIVER_UNAVAILABLE,
    RECEIVER_CONNECTIONS_REFUSED,
    RECEIVER_EMPTY,
    RECEIVER_REQUEST_DURATION,
    RECEIVER_LAST_EVENT,
    JOURNAL_COMMITS,
    JOURNAL_COMMIT_FAILURES,
    JOURNAL_COMMIT_DURATION,
    JOURNAL_BATCH_SIZE,
    JOURNAL_RETENTION_DELETED,
    JOURNAL_LAST_SEQ,
    PIPELINE_LAST_SEQ,
    PIPELINE_LAG,
    EVENTS,
    EVENT_DELAY,
    WINDOW_RATE,
    WINDOW_RATE_NUMERATOR,
    WINDOW_RATE_DENOMINATOR,
    WINDOW_REASONS,
    ALERTS_FIRING,
    ALERTS_SILENCED,
    ALERT_NOTIFICATIONS,
    MAILJET_CALLBACK_ALIVE,
    MAILJET_CHECKED,
    EVENTS_LATE,
    EVENTS_CLAMPED,
    EVENTS_TEST,
];
