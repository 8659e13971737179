//! The alert engine: every rule, every key, one evaluation at a time.
//!
//! It takes its clock, the windows and a health sample as arguments and returns the
//! notifications to send, so the same code runs live (every `alerts.interval`) and in a
//! backtest. Alerts of one rule that change in the same evaluation are grouped into one
//! notification per kind (firing, repeat, resolved), listing at most `max_keys` of them.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::health::{HealthHistory, HealthSample};
use super::rules::{Inputs, Observation, Rule, RuleKind, Severity, WebhookSignal};
use super::state::{AlertState, Notice, Timing, step};
use crate::windows::{Key, RateKind, ReasonCount, Windows};

/// How many reasons a notification lists.
const TOP_REASONS: usize = 5;

/// One alert inside a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertLine {
    pub observation: Observation,
    /// When the incident started (Unix seconds).
    pub since: i64,
}

/// What goes into the outbox: one message for one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub rule: String,
    pub kind: RuleKind,
    pub rate: Option<RateKind>,
    pub signal: Option<WebhookSignal>,
    pub severity: Severity,
    pub channels: Vec<String>,
    pub notice: Notice,
    /// Unix seconds of the evaluation.
    pub at: i64,
    pub alerts: Vec<AlertLine>,
    /// Alerts beyond the list cap.
    pub more: usize,
    /// Top bounce and block reasons where they explain the alert.
    pub reasons: Vec<ReasonCount>,
    /// The rule's window, in minutes, for links and wording.
    pub window_minutes: u32,
}

/// A stored alert: its rule, its key and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAlert {
    pub rule: String,
    pub key: Option<Key>,
    pub state: AlertState,
}

pub struct Engine {
    rules: Vec<Rule>,
    confidence: f64,
    repeat_secs: i64,
    max_keys: usize,
    /// `(rule index, key)` → state; only pending and firing alerts are here. A quiet key has
    /// no entry, so an evaluation over 100,000 quiet keys touches this map only for lookups.
    states: HashMap<(usize, Option<Key>), AlertState, foldhash::fast::RandomState>,
    health: HealthHistory,
}

impl Engine {
    pub fn new(rules: Vec<Rule>, confidence: f64, repeat_secs: i64, max_keys: usize) -> Engine {
        Engine {
            rules,
            confidence,
            repeat_secs,
            max_keys: max_keys.max(1),
            states: HashMap::default(),
            health: HealthHistory::default(),
        }
    }

    /// Puts back the alerts a previous run left, so a restart neither re-sends a firing alert
    /// nor forgets one. Alerts of rules that no longer exist are dropped.
    pub fn restore(&mut self, alerts: Vec<StoredAlert>) {
        for a in alerts {
            if let Some(i) = self.rules.iter().position(|r| r.name() == a.rule) {
                self.states.insert((i, a.key), a.state);
            }
        }
    }

    /// Puts back the health samples a previous run stored, before the first evaluation.
    pub fn restore_health(&mut self, samples: Vec<HealthSample>) {
        for sample in samples {
            self.health.push(sample);
        }
    }

    /// The health sample of the last evaluation, to store.
    pub fn latest_health(&self) -> Option<&HealthSample> {
        self.health.latest()
    }

    /// Every pending or firing alert, to store.
    pub fn alerts(&self) -> Vec<StoredAlert> {
        let mut out: Vec<StoredAlert> = self
            .states
            .iter()
            .map(|((rule, key), state)| StoredAlert {
                rule: self.rules[*rule].name().to_string(),
                key: key.clone(),
                state: *state,
            })
            .collect();
        out.sort_by(|a, b| (&a.rule, &a.key).cmp(&(&b.rule, &b.key)));
        out
    }

    /// Firing alerts per rule (0 for a quiet rule), for the `bouncewatch_alerts_firing` gauge.
    pub fn firing_counts(&self) -> Vec<(String, Severity, u64)> {
        let mut firing = vec![0u64; self.rules.len()];
        for ((rule, _), s) in &self.states {
            if s.phase == super::state::Phase::Firing {
                firing[*rule] += 1;
            }
        }
        self.rules
            .iter()
            .zip(firing)
            .map(|(r, n)| (r.name().to_string(), r.config.severity, n))
            .collect()
    }

    /// One evaluation at `now` (Unix seconds), with no silences.
    pub fn evaluate(
        &mut self,
        now: i64,
        windows: &Windows,
        sample: HealthSample,
    ) -> Vec<Notification> {
        self.evaluate_silenced(now, windows, sample, &|_, _| false)
            .0
    }

    /// One evaluation at `now`, where `silenced(rule, key)` says whether a silence covers an
    /// alert. A silenced alert's notices are held back, and it stays "unannounced" while it
    /// fires: when the silence ends it is announced (a firing notice), and if it resolves
    /// unannounced, nothing is sent. Also returns, for each alert whose notice was held back,
    /// the channels its rule names (for the count of what was silenced).
    pub fn evaluate_silenced(
        &mut self,
        now: i64,
        windows: &Windows,
        sample: HealthSample,
        silenced: &dyn Fn(&str, Option<&Key>) -> bool,
    ) -> (Vec<Notification>, Vec<Vec<String>>) {
        let mut held_back = Vec::new();
        self.health.push(sample);
        let mut out = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let inputs = Inputs {
                now,
                windows,
                health: &self.health,
                confidence: self.confidence,
            };
            // Only breaching keys and keys with a state can change anything; the rest (nearly
            // all of them) are dropped here, before any bookkeeping.
            let states = &self.states;
            let mut seen: Vec<Observation> = rule
                .evaluate(&inputs)
                .into_iter()
                .filter(|o| o.breaching || states.contains_key(&(index, o.key.clone())))
                .collect();
            // Alerts whose key has no evidence any more (evicted, or no sends in the window)
            // count as clean.
            let observed: std::collections::HashSet<&Option<Key>> =
                seen.iter().map(|o| &o.key).collect();
            let gone: Vec<Option<Key>> = states
                .keys()
                .filter(|(r, key)| *r == index && !observed.contains(key))
                .map(|(_, key)| key.clone())
                .collect();
            drop(observed);
            seen.extend(gone.into_iter().map(|key| Observation {
                key,
                rate: None,
                lower_bound: None,
                baseline: None,
                value: 0.0,
                limit: 0.0,
                breaching: false,
                clean: true,
                detail: None,
            }));
            let timing = Timing {
                for_secs: rule.for_secs,
                clear_after: rule.clear_after,
                repeat_secs: self.repeat_secs,
            };
            let mut groups: BTreeMap<u8, Vec<AlertLine>> = BTreeMap::new();
            let mut resolved_lasted = 0;
            for obs in seen {
                let slot = (index, obs.key.clone());
                let previous = self.states.get(&slot).copied();
                let mut clean = obs.clean;
                if let (RuleKind::Spike, Some(p)) = (rule.config.kind, previous)
                    && p.phase == super::state::Phase::Firing
                    && p.fired_limit > 0.0
                    && let Some(rate) = obs.rate
                {
                    // Recovered only once back under the bar the incident was judged against.
                    clean = clean && rate.value().unwrap_or(0.0) < p.fired_limit;
                }
                let (mut next, mut notice) = step(previous, obs.breaching, clean, now, timing);
                let detail = obs
                    .detail
                    .as_deref()
                    .map_or(0, |d| xxhash_rust::xxh3::xxh3_64(d.as_bytes()));
                if let (Some(s), Some(Notice::Firing)) = (next.as_mut(), notice) {
                    s.fired_limit = obs.limit;
                }
                if let Some(s) = next.as_mut()
                    && s.phase == super::state::Phase::Firing
                {
                    // What is wrong changed while firing (another callback died, one came
                    // back): say so now, not at the next repeat hours later.
                    if notice.is_none() && obs.breaching && s.detail != detail {
                        s.notified_at = now;
                        notice = Some(Notice::Repeat);
                    }
                    if notice.is_some() {
                        s.detail = detail;
                    }
                }
                let silent = silenced(rule.name(), obs.key.as_ref());
                match (next.as_mut(), notice) {
                    (Some(s), Some(Notice::Firing | Notice::Repeat)) if silent => {
                        s.unannounced = true;
                        notice = None;
                        held_back.push(rule.config.channels.clone());
                    }
                    (Some(s), Some(Notice::Firing | Notice::Repeat)) => s.unannounced = false,
                    (Some(s), None)
                        if s.phase == super::state::Phase::Firing && s.unannounced && !silent =>
                    {
                        // The silence is over and it still fires: nobody knows yet.
                        s.unannounced = false;
                        s.notified_at = now;
                        s.detail = detail;
                        notice = Some(Notice::Firing);
                    }
                    (None, Some(Notice::Resolved { .. }))
                        if previous.is_some_and(|p| p.unannounced) =>
                    {
                        notice = None; // never told, so nothing to resolve
                    }
                    (None, Some(Notice::Resolved { .. })) if silent => {
                        notice = None;
                        held_back.push(rule.config.channels.clone());
                    }
                    _ => {}
                }
                let since = next.or(previous).map_or(now, |s| s.since);
                match next {
                    Some(s) => {
                        self.states.insert(slot, s);
                    }
                    None => {
                        self.states.remove(&slot);
                    }
                }
                if let Some(notice) = notice {
                    let group = match notice {
                        Notice::Firing => 0,
                        Notice::Repeat => 1,
                        Notice::Resolved { lasted_secs } => {
                            resolved_lasted = resolved_lasted.max(lasted_secs);
                            2
                        }
                    };
                    groups.entry(group).or_default().push(AlertLine {
                        observation: obs,
                        since,
                    });
                }
            }
            for (group, mut lines) in groups {
                let notice = match group {
                    0 => Notice::Firing,
                    1 => Notice::Repeat,
                    _ => Notice::Resolved {
                        lasted_secs: resolved_lasted,
                    },
                };
                // The worst first: furthest past its limit.
                lines.sort_by(|a, b| {
                    let over = |l: &AlertLine| l.observation.value - l.observation.limit;
                    over(b).total_cmp(&over(a))
                });
                let more = lines.len().saturating_sub(self.max_keys);
                lines.truncate(self.max_keys);
                out.push(Notification {
                    rule: rule.name().to_string(),
                    kind: rule.config.kind,
                    rate: rule.config.rate,
                    signal: rule.config.signal,
                    severity: rule.config.severity,
                    channels: rule.config.channels.clone(),
                    notice,
                    at: now,
                    reasons: reasons(rule, &lines, windows, now),
                    window_minutes: window_minutes(rule),
                    alerts: lines,
                    more,
                });
            }
        }
        (out, held_back)
    }
}

fn window_minutes(rule: &Rule) -> u32 {
    let c = &rule.config;
    let d = match c.kind {
        RuleKind::BurnRate => c.burn_windows.first().map(|w| w.long),
        _ => c.window,
    };
    d.map_or(60, |d| (d.0.as_secs() / 60).max(1) as u32)
}

/// The top bounce or block reasons behind a bounce or block alert: those of its worst key
/// (a campaign's own, at its provider for a campaign × provider rule), or the global ones.
fn reasons(rule: &Rule, lines: &[AlertLine], windows: &Windows, now: i64) -> Vec<ReasonCount> {
    let relevant = matches!(
        rule.config.rate,
        Some(RateKind::Bounce | RateKind::HardBounce | RateKind::Block)
    );
    if !relevant {
        return Vec::new();
    }
    let key = lines
        .first()
        .and_then(|l| l.observation.key.clone())
        .unwrap_or(Key::Global);
    let want = match rule.config.rate {
        Some(RateKind::Block) => "blocked",
        _ => "bounce",
    };
    windows
        .top_reasons(&key, window_minutes(rule), now, TOP_REASONS * 2)
        .into_iter()
        .filter(|r| r.event == want)
        .take(TOP_REASONS)
        .collect()
}
