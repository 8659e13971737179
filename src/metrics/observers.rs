//! The observable instruments: callbacks that read the process's state when a reader
//! (the `/metrics` scrape or the OTLP push) collects. The request path only bumps atomics;
//! the work of turning them, the campaign counters and the windows into data points happens
//! here, once per collection.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use super::names;
use super::{Counters, STATUSES, State, Unavailable, get, seq};
use crate::event::EventKind;
use crate::pipeline::Provider;
use crate::windows::{Key, RateKind, Scope};

/// The observable instruments: each reads [`State`] when a reader collects.
pub(super) fn register_observers(meter: &Meter, state: &Arc<State>) {
    use names::*;
    let counter = |s: &Signal, read: fn(&Counters) -> u64| {
        let st = state.clone();
        meter
            .u64_observable_counter(s.instrument())
            .with_description(s.help)
            .with_callback(move |o| o.observe(read(&st.counters), &[]))
            .build();
    };
    counter(&RECEIVER_DUPLICATES, |c| get(&c.duplicates));
    counter(&RECEIVER_QUARANTINED, |c| get(&c.quarantined));
    counter(&RECEIVER_UNAUTHORIZED, |c| get(&c.unauthorized));
    counter(&RECEIVER_TOO_LARGE, |c| get(&c.too_large));
    counter(&RECEIVER_CONNECTIONS_REFUSED, |c| {
        get(&c.connections_refused)
    });
    counter(&RECEIVER_EMPTY, |c| get(&c.empty));
    counter(&JOURNAL_COMMITS, |c| get(&c.commits));
    counter(&JOURNAL_COMMIT_FAILURES, |c| get(&c.commit_failures));
    counter(&JOURNAL_RETENTION_DELETED, |c| get(&c.retention_deleted));
    // Restored from the pipeline's snapshot: not exported during a replay (`replaying`).
    let restored = |s: &Signal, read: fn(&Counters) -> u64| {
        let st = state.clone();
        meter
            .u64_observable_counter(s.instrument())
            .with_description(s.help)
            .with_callback(move |o| {
                if !st.counters.replaying() {
                    o.observe(read(&st.counters), &[]);
                }
            })
            .build();
    };
    restored(&EVENTS_LATE, |c| get(&c.late));
    restored(&EVENTS_CLAMPED, |c| get(&c.clamped));
    restored(&EVENTS_TEST, |c| get(&c.tests));
    counter(&ALERTS_SILENCED, |c| get(&c.silenced));
    let st = state.clone();
    meter
        .u64_observable_gauge(MAILJET_CALLBACK_ALIVE.instrument())
        .with_description(MAILJET_CALLBACK_ALIVE.help)
        .with_callback(move |o| {
            let Some(shared) = st.mailjet.get() else {
                return;
            };
            let w = shared.lock().unwrap_or_else(|p| p.into_inner());
            for c in &w.rows {
                let alive = u64::from(c.status.eq_ignore_ascii_case("alive"));
                o.observe(
                    alive,
                    &[
                        KeyValue::new("event_type", c.event_type.clone()),
                        KeyValue::new("backup", c.is_backup.to_string()),
                    ],
                );
            }
            // A type with no callback at all gets nothing from Mailjet either: 0, not a gap
            // that a `== 0` rule would miss.
            for missing in &w.problems.missing {
                o.observe(
                    0,
                    &[
                        KeyValue::new("event_type", missing.clone()),
                        KeyValue::new("backup", "false"),
                    ],
                );
            }
        })
        .build();
    let st = state.clone();
    meter
        .u64_observable_gauge(MAILJET_CHECKED.instrument())
        .with_description(MAILJET_CHECKED.help)
        .with_callback(move |o| {
            if let Some(shared) = st.mailjet.get() {
                let w = shared.lock().unwrap_or_else(|p| p.into_inner());
                o.observe(u64::try_from(w.checked_ms / 1000).unwrap_or(0), &[]);
            }
        })
        .build();
    let st = state.clone();
    meter
        .u64_observable_counter(ALERT_NOTIFICATIONS.instrument())
        .with_description(ALERT_NOTIFICATIONS.help)
        .with_callback(move |o| {
            let counts = st
                .notifications
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for ((channel, outcome), n) in counts {
                o.observe(
                    n,
                    &[
                        KeyValue::new("channel", channel),
                        KeyValue::new("outcome", outcome),
                    ],
                );
            }
        })
        .build();
    let st = state.clone();
    meter
        .u64_observable_gauge(ALERTS_FIRING.instrument())
        .with_description(ALERTS_FIRING.help)
        .with_callback(move |o| {
            let firing = st.firing.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for (rule, severity, n) in firing {
                o.observe(
                    n,
                    &[
                        KeyValue::new("rule", rule),
                        KeyValue::new("severity", severity),
                    ],
                );
            }
        })
        .build();

    let st = state.clone();
    meter
        .u64_observable_counter(RECEIVER_REQUESTS.instrument())
        .with_description(RECEIVER_REQUESTS.help)
        .with_callback(move |o| {
            for (i, c) in st.counters.requests.iter().enumerate() {
                let status = STATUSES.get(i).map_or("other".to_string(), u16::to_string);
                o.observe(get(c), &[KeyValue::new("status", status)]);
            }
        })
        .build();
    let st = state.clone();
    meter
        .u64_observable_counter(RECEIVER_EVENTS.instrument())
        .with_description(RECEIVER_EVENTS.help)
        .with_callback(move |o| {
            for kind in EventKind::ALL {
                let n = get(&st.counters.events[kind.index()]);
                o.observe(n, &[KeyValue::new("event", kind.as_str())]);
            }
        })
        .build();
    let st = state.clone();
    meter
        .u64_observable_counter(RECEIVER_UNAVAILABLE.instrument())
        .with_description(RECEIVER_UNAVAILABLE.help)
        .with_callback(move |o| {
            for why in Unavailable::ALL {
                let n = get(&st.counters.unavailable[why as usize]);
                o.observe(n, &[KeyValue::new("reason", why.as_str())]);
            }
        })
        .build();
    let st = state.clone();
    meter
        .u64_observable_counter(EVENTS.instrument())
        .with_description(EVENTS.help)
        .with_callback(move |o| {
            if st.counters.replaying() {
                return;
            }
            let samples = st
                .campaigns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .samples();
            for (kind, provider, campaign, n) in samples {
                let attrs = [
                    KeyValue::new("event", kind.as_str()),
                    KeyValue::new("provider", provider.as_str()),
                    KeyValue::new("campaign", campaign),
                ];
                o.observe(n, &attrs);
            }
        })
        .build();

    let gauge = |s: &Signal, read: fn(&Counters) -> f64| {
        let st = state.clone();
        meter
            .f64_observable_gauge(s.instrument())
            .with_description(s.help)
            .with_callback(move |o| o.observe(read(&st.counters), &[]))
            .build();
    };
    // Absent until an event was ever stored: a 0 would read as "last event in 1970".
    let st = state.clone();
    meter
        .f64_observable_gauge(RECEIVER_LAST_EVENT.instrument())
        .with_description(RECEIVER_LAST_EVENT.help)
        .with_callback(move |o| {
            let ms = st.counters.last_event_ms.load(Ordering::Relaxed);
            if ms > 0 {
                o.observe(ms as f64 / 1000.0, &[]);
            }
        })
        .build();
    gauge(&JOURNAL_LAST_SEQ, |c| seq(&c.journal_seq) as f64);
    gauge(&PIPELINE_LAST_SEQ, |c| seq(&c.pipeline_seq) as f64);
    gauge(&PIPELINE_LAG, |c| {
        (seq(&c.journal_seq) - seq(&c.pipeline_seq)).max(0) as f64
    });

    type Pick = fn(&crate::windows::Rate) -> Option<f64>;
    let picks: [(Signal, Pick); 3] = [
        (WINDOW_RATE, |r| r.value()),
        (WINDOW_RATE_NUMERATOR, |r| Some(r.numerator as f64)),
        (WINDOW_RATE_DENOMINATOR, |r| Some(r.denominator as f64)),
    ];
    for (signal, pick) in picks {
        let st = state.clone();
        meter
            .f64_observable_gauge(signal.instrument())
            .with_description(signal.help)
            .with_callback(move |o| {
                for (attrs, rate) in window_rates(&st) {
                    if let Some(v) = pick(&rate) {
                        o.observe(v, &attrs);
                    }
                }
            })
            .build();
    }
    let st = state.clone();
    meter
        .u64_observable_gauge(WINDOW_REASONS.instrument())
        .with_description(WINDOW_REASONS.help)
        .with_callback(move |o| {
            for (attrs, n) in window_reasons(&st) {
                o.observe(n, &attrs);
            }
        })
        .build();
}

/// Reasons exported per scope and window.
const TOP_REASONS: usize = 10;

/// The top bounce and block reasons of every window, globally and per provider.
fn window_reasons(state: &State) -> Vec<(Vec<KeyValue>, u64)> {
    let Some(source) = state.windows.get() else {
        return Vec::new();
    };
    let now = crate::journal::now_ms() / 1000;
    let windows = source
        .shared
        .windows
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut scopes: Vec<Option<Provider>> = vec![None];
    scopes.extend(windows.keys(Scope::Provider).filter_map(|k| match k {
        Key::Provider(p) => Some(Some(p)),
        _ => None,
    }));
    let mut out = Vec::new();
    for provider in scopes {
        for (minutes, label) in &source.windows {
            let key = provider.map_or(Key::Global, Key::Provider);
            for r in windows.top_reasons(&key, *minutes, now, TOP_REASONS) {
                let mut attrs = vec![
                    KeyValue::new("event", r.event),
                    KeyValue::new("category", r.category),
                    KeyValue::new("error", r.error),
                    KeyValue::new("window", label.clone()),
                ];
                if let Some(p) = provider {
                    attrs.push(KeyValue::new("provider", p.as_str()));
                }
                out.push((attrs, r.count));
            }
        }
    }
    out
}

/// Every rate of every window, globally and per provider, with its attributes.
fn window_rates(state: &State) -> Vec<(Vec<KeyValue>, crate::windows::Rate)> {
    let Some(source) = state.windows.get() else {
        return Vec::new();
    };
    let now = crate::journal::now_ms() / 1000;
    let windows = source
        .shared
        .windows
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut keys: Vec<Key> = vec![Key::Global];
    keys.extend(windows.keys(Scope::Provider));
    let mut out = Vec::with_capacity(keys.len() * source.windows.len() * RateKind::ALL.len());
    for key in &keys {
        for (minutes, label) in &source.windows {
            let counts = windows.counts(key, *minutes, now);
            for kind in RateKind::ALL {
                let mut attrs = vec![
                    KeyValue::new("rate", kind.as_str()),
                    KeyValue::new("window", label.clone()),
                ];
                if let Key::Provider(p) = key {
                    attrs.push(KeyValue::new("provider", p.as_str()));
                }
                out.push((attrs, kind.of(&counts)));
            }
        }
    }
    out
}
