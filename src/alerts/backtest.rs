//! Backtest: recorded events replayed in **event time** through the real engine and rules, to
//! see which incidents they would have raised, when, and when they would have resolved.
//!
//! The promise: nothing here decides what an alert is. Events go through the same
//! [`Classifier`] (learning from `sent` replies, as the pipeline does) and the same [`Windows`]
//! as live; a virtual clock steps every `alerts.interval` from the first event's time to the
//! last one's plus [`Options::tail`], recording each event once the clock has reached its time,
//! and at each step the [`Engine`] evaluates exactly as the live loop would. Its notifications
//! become one [`Incident`] per rule and key. Only the engine's message cap is lifted, so no
//! key is left out of the timeline.

use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::engine::{Engine, Notification};
use super::health::HealthSample;
use super::rules::Severity;
use super::state::Notice;
use crate::config::{Config, ConfigError};
use crate::event::{Event, EventKind, parse_event};
use crate::journal::{JournalError, Tail};
use crate::pipeline::Classifier;
use crate::windows::{Key, Rate, Windows};

/// Events read from the journal per query, as the pipeline reads them.
const JOURNAL_BATCH: usize = 5_000;
/// More evaluations than this means an event's time is far off (a year at 15 s).
const MAX_EVALUATIONS: i64 = 2_000_000;

/// How a replay runs, beyond what the config says.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the clock runs on after the last event, so that firing alerts can resolve as
    /// their windows drain. The recording ends there, not the traffic: during the tail the
    /// `no-events` rule sees the receiver as still receiving.
    pub tail: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tail: Duration::from_secs(2 * 3600),
        }
    }
}

/// One incident of one rule for one key: from its firing notice to its resolved notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub rule: String,
    /// The observation's key; `null` for the webhook rules, which watch the receiver itself.
    pub key: Option<Key>,
    pub severity: Severity,
    /// Unix seconds of the evaluation that fired it.
    pub fired_at: i64,
    /// Unix seconds of the evaluation that resolved it; `None` while still firing at the end.
    pub resolved_at: Option<i64>,
    /// What the rule saw when it fired, at each repeat, and when it resolved.
    pub values: Vec<Reading>,
}

/// One observation of an incident, as its notification carried it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub at: i64,
    pub value: f64,
    pub limit: f64,
    pub rate: Option<Rate>,
    pub lower_bound: Option<f64>,
}

/// A replay's incidents, and what it went through to find them.
#[derive(Debug, Clone)]
pub struct Replay {
    pub incidents: Vec<Incident>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub events: usize,
    /// Event time of the first and the last event, Unix seconds.
    pub first: Option<i64>,
    pub last: Option<i64>,
    pub evaluations: u64,
    pub interval_secs: i64,
    pub incidents: usize,
    pub firing_at_end: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let (Some(first), Some(last)) = (self.first, self.last) else {
            return write!(f, "backtest: no events, no incidents");
        };
        let time = |s: i64| {
            let t = UNIX_EPOCH + Duration::from_secs(s.max(0) as u64);
            humantime::format_rfc3339_seconds(t).to_string()
        };
        write!(
            f,
            "backtest: {} events from {} to {}, {} evaluations every {}s, {} incidents ({} still firing at the end)",
            self.events,
            time(first),
            time(last),
            self.evaluations,
            self.interval_secs,
            self.incidents,
            self.firing_at_end
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read events file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("events file {path}, line {line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "events file {path}: no event has a `time`, and the backtest replays in event time; export the events with Mailjet's `time` field"
    )]
    NoTime { path: PathBuf },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot read the journal {path}: {source}")]
    JournalRead {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the events span Unix time {first} to {last}: {evaluations} evaluations at alerts.interval; is an event's `time` wrong? Filter the input or raise alerts.interval"
    )]
    TooLong {
        first: i64,
        last: i64,
        evaluations: i64,
    },
}

/// Replays `events` (`(received_at_ms, event)`, in any order) and returns the incidents, in
/// the order they fired.
pub fn run(
    config: &Config,
    events: impl IntoIterator<Item = (i64, Event)>,
    opts: &Options,
) -> Result<Vec<Incident>, BacktestError> {
    replay(config, events, opts).map(|r| r.incidents)
}

/// [`run`], with a summary of the replay.
pub fn replay(
    config: &Config,
    events: impl IntoIterator<Item = (i64, Event)>,
    opts: &Options,
) -> Result<Replay, BacktestError> {
    config.windows.validate()?;
    config.alerts.validate()?;
    let mut classifier = Classifier::new(&config.providers)?;
    let a = &config.alerts;
    let mut engine = Engine::new(
        a.compile()?,
        a.confidence,
        a.repeat_interval.0.as_secs() as i64,
        usize::MAX,
    );
    let mut windows = Windows::new(&config.windows);
    let interval = a.interval.0.as_secs().max(1) as i64;

    // An event without `time` is counted at its receipt, which is then its time.
    let mut events: Vec<Event> = events
        .into_iter()
        .map(|(received_at_ms, mut e)| {
            e.time.get_or_insert(received_at_ms.div_euclid(1000));
            e
        })
        .collect();
    events.sort_by_key(|e| e.time);
    let time = |e: &Event| e.time.unwrap_or_default();
    let (Some(first), Some(last)) = (events.first().map(time), events.last().map(time)) else {
        return Ok(Replay {
            incidents: Vec::new(),
            summary: Summary {
                interval_secs: interval,
                ..Summary::default()
            },
        });
    };
    let end = last.saturating_add(opts.tail.as_secs() as i64);
    let evaluations = (end - first) / interval + 1;
    if evaluations > MAX_EVALUATIONS {
        return Err(BacktestError::TooLong {
            first,
            last,
            evaluations,
        });
    }

    let mut timeline = Timeline::default();
    let mut next = 0;
    let mut last_event_ms = 0;
    let mut evicted_minute = first.div_euclid(60);
    let mut clock = first;
    let mut steps = 0;
    loop {
        while let Some(e) = events.get(next).filter(|e| time(e) <= clock) {
            if e.kind == EventKind::Sent
                && let Some(reply) = e.smtp_reply.as_deref()
            {
                classifier.learn(&e.email, reply);
            }
            windows.record(&e.brief(), classifier.classify(&e.email), clock);
            last_event_ms = last_event_ms.max(time(e) * 1000);
            next += 1;
        }
        if clock.div_euclid(60) > evicted_minute {
            windows.evict_idle(clock);
            evicted_minute = clock.div_euclid(60);
        }
        let recording_over = next == events.len() && clock > last;
        let sample = HealthSample {
            at: clock,
            requests: next as u64,
            last_event_ms: if recording_over {
                clock * 1000
            } else {
                last_event_ms
            },
            events_24h: windows.counts(&Key::Global, 24 * 60, clock).total(),
            ..HealthSample::default()
        };
        for n in engine.evaluate(clock, &windows, sample) {
            timeline.apply(&n);
        }
        steps += 1;
        if clock >= end {
            break;
        }
        clock += interval;
    }

    let incidents = timeline.incidents;
    let summary = Summary {
        events: events.len(),
        first: Some(first),
        last: Some(last),
        evaluations: steps,
        interval_secs: interval,
        incidents: incidents.len(),
        firing_at_end: incidents.iter().filter(|i| i.resolved_at.is_none()).count(),
    };
    Ok(Replay { incidents, summary })
}

/// Notifications folded into incidents.
#[derive(Default)]
struct Timeline {
    incidents: Vec<Incident>,
    /// `(rule, key)` → index of its incident still firing.
    open: BTreeMap<(String, Option<Key>), usize>,
}

impl Timeline {
    fn apply(&mut self, n: &Notification) {
        for line in &n.alerts {
            let o = &line.observation;
            let reading = Reading {
                at: n.at,
                value: o.value,
                limit: o.limit,
                rate: o.rate,
                lower_bound: o.lower_bound,
            };
            let slot = (n.rule.clone(), o.key.clone());
            match n.notice {
                Notice::Firing => {
                    self.open.insert(slot, self.incidents.len());
                    self.incidents.push(Incident {
                        rule: n.rule.clone(),
                        key: o.key.clone(),
                        severity: n.severity,
                        fired_at: n.at,
                        resolved_at: None,
                        values: vec![reading],
                    });
                }
                Notice::Repeat => {
                    if let Some(&i) = self.open.get(&slot) {
                        self.incidents[i].values.push(reading);
                    }
                }
                Notice::Resolved { .. } => {
                    if let Some(i) = self.open.remove(&slot) {
                        self.incidents[i].resolved_at = Some(n.at);
                        self.incidents[i].values.push(reading);
                    }
                }
            }
        }
    }
}

/// Events from a file of one Mailjet event JSON object per line (blank lines are skipped). A
/// line without `time` is taken to have arrived with the line before it (a recording is in
/// arrival order); leading ones with the first timed line.
pub fn events_from_jsonl(path: &Path) -> Result<Vec<(i64, Event)>, BacktestError> {
    let read_err = |source| BacktestError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut events: Vec<(i64, Event)> = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(read_err)?;
        if line.trim().is_empty() {
            continue;
        }
        let event = parse_event(&line).map_err(|message| BacktestError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        })?;
        events.push((event.time.map_or(i64::MIN, |t| t * 1000), event));
    }
    let Some(first_ms) = events.iter().map(|e| e.0).find(|&t| t != i64::MIN) else {
        if events.is_empty() {
            return Ok(events);
        }
        return Err(BacktestError::NoTime {
            path: path.to_path_buf(),
        });
    };
    let mut previous = first_ms;
    for (received, _) in &mut events {
        if *received == i64::MIN {
            *received = previous;
        }
        previous = *received;
    }
    Ok(events)
}

/// Every event of the journal in `dir`, with its receipt time.
pub fn events_from_journal(dir: &Path) -> Result<Vec<(i64, Event)>, BacktestError> {
    let tail = Tail::open(dir)?;
    let mut events = Vec::new();
    let mut seq = 0;
    loop {
        let batch =
            tail.after(seq, JOURNAL_BATCH)
                .map_err(|source| BacktestError::JournalRead {
                    path: dir.join("journal.sqlite3"),
                    source,
                })?;
        let Some(last) = batch.last().map(|r| r.seq) else {
            return Ok(events);
        };
        seq = last;
        events.extend(batch.into_iter().map(|r| (r.received_at_ms, r.event)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000;

    fn event(json: &str) -> Event {
        parse_event(json).unwrap()
    }

    /// `n` sends and `hard` hard bounces at Gmail in minute `m` after `T0`.
    fn minute(m: i64, n: usize, hard: usize) -> Vec<(i64, Event)> {
        let t = T0 + m * 60;
        let sent = (0..n).map(|_| {
            event(&format!(
                r#"{{"event":"sent","time":{t},"email":"a@gmail.com"}}"#
            ))
        });
        let bounces = (0..hard).map(|_| {
            event(&format!(
                r#"{{"event":"bounce","time":{t},"email":"a@gmail.com","hard_bounce":true}}"#
            ))
        });
        sent.chain(bounces).map(|e| (t * 1000, e)).collect()
    }

    #[test]
    fn an_incident_fires_resolves_and_order_of_input_does_not_matter() {
        let mut events: Vec<(i64, Event)> = (0..30).flat_map(|m| minute(m, 50, 0)).collect();
        events.extend(minute(30, 100, 60));
        events.extend((31..100).flat_map(|m| minute(m, 50, 0)));
        let config = Config::default();
        let forward = run(&config, events.clone(), &Options::default()).unwrap();
        events.reverse();
        let backward = run(&config, events, &Options::default()).unwrap();
        assert_eq!(forward, backward);
        let hard: Vec<&Incident> = forward
            .iter()
            .filter(|i| i.rule == "hard-bounce-rate")
            .collect();
        assert_eq!(hard.len(), 1, "{forward:?}");
        let i = hard[0];
        assert_eq!(i.key, Some(Key::Global));
        assert_eq!(i.fired_at, T0 + 30 * 60);
        assert!(i.resolved_at.is_some_and(|r| r > i.fired_at), "{i:?}");
        assert_eq!(i.values.len(), 2, "at fire and at resolve");
        assert_eq!(i.values[0].rate, Some(Rate::new(60, 1660)));
    }

    #[test]
    fn the_end_of_a_recording_is_not_an_outage() {
        let events: Vec<(i64, Event)> = (0..60).flat_map(|m| minute(m, 10, 0)).collect();
        let replay = replay(&Config::default(), events, &Options::default()).unwrap();
        assert!(replay.incidents.is_empty(), "{:?}", replay.incidents);
        assert_eq!(replay.summary.events, 600);
        assert_eq!(replay.summary.evaluations, (59 * 60 + 7200) / 30 + 1);
    }

    #[test]
    fn jsonl_skips_blank_lines_names_a_bad_one_and_dates_untimed_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(
            &path,
            "{\"event\":\"open\"}\n\n{\"event\":\"sent\",\"time\":100}\n{\"event\":\"click\"}\n",
        )
        .unwrap();
        let got: Vec<i64> = events_from_jsonl(&path)
            .unwrap()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(got, vec![100_000, 100_000, 100_000]);

        std::fs::write(&path, "{\"event\":\"sent\",\"time\":1}\n\nnot json\n").unwrap();
        let err = events_from_jsonl(&path).unwrap_err().to_string();
        assert!(
            err.contains("events.jsonl") && err.contains("line 3"),
            "{err}"
        );

        std::fs::write(&path, "{\"event\":\"sent\"}\n").unwrap();
        let err = events_from_jsonl(&path).unwrap_err().to_string();
        assert!(err.contains("no event has a `time`"), "{err}");
    }
}
