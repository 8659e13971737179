//! Alert rules: how they are written in the config, the built-in defaults, and how one rule
//! turns the windows (or the receiver's own health) into observations, one per key.
//!
//! Every rate rule judges the **Wilson lower bound** of its rate, not the point estimate, and
//! asks for a minimum denominator too: 2 bounces in 40 sends must not page anyone. A rule's
//! observation says whether it *breaches* (fire) and whether it is *clean* (counts towards
//! resolving); between the two is the hysteresis band where a firing alert holds.

use serde::{Deserialize, Serialize};

use super::health::{HealthHistory, HealthSample};
use super::wilson::lower_bound;
use crate::config::ConfigError;
use crate::config::units::DurationText;
use crate::windows::{Key, Rate, RateKind, Scope, Windows};

/// `[[alerts.rules]]`: one flat table per rule; which fields apply depends on `kind`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Shown in messages; unique.
    pub name: String,
    pub kind: RuleKind,
    /// The rate a threshold, spike or burn-rate rule watches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateKind>,
    /// `[]` (global), `["provider"]`, `["campaign"]` or `["campaign", "provider"]`.
    #[serde(default)]
    pub group_by: Vec<GroupBy>,
    /// Threshold: the window the rate is taken over. Spike: the short window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<DurationText>,
    /// Threshold: the rate (its lower bound) above which the rule fires. Webhook: the limit of
    /// the signal (a share, a count, seconds or events, see [`WebhookSignal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The smallest denominator (sends, attempts) the rate needs before it can fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_volume: Option<u64>,
    /// Spike: the long window of the key's own baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_window: Option<DurationText>,
    /// Spike: how many times the baseline the lower bound must exceed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// Spike: an absolute floor the lower bound must also exceed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<f64>,
    /// Burn rate: the policy target the budget is measured against (spam 0.001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
    /// Burn rate: the window pairs; the rule fires when both windows of a pair burn faster
    /// than its factor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub burn_windows: Vec<BurnWindow>,
    /// Webhook: which of the service's own signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<WebhookSignal>,
    #[serde(default)]
    pub severity: Severity,
    /// Channel names from `[notify]`; empty means every configured channel.
    #[serde(default)]
    pub channels: Vec<String>,
    /// How long a breach must last before it fires.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<DurationText>,
    /// A firing alert counts an evaluation as clean only below this rate (point estimate).
    /// Unset: clean means "does not breach".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<f64>,
    /// Clean evaluations in a row that resolve a firing alert (default `alerts.clear_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_after: Option<u32>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Threshold,
    Spike,
    BurnRate,
    Webhook,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Campaign,
    Provider,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BurnWindow {
    pub long: DurationText,
    pub short: DurationText,
    pub factor: f64,
}

/// The service watching itself.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WebhookSignal {
    /// No event received for `window` although the last 24 h had at least `min_volume`.
    NoEvents,
    /// Share of webhook requests answered 401 over `window` above `threshold`.
    Unauthorized,
    /// 413 answers over `window` above `threshold` (a count).
    TooLarge,
    /// Share of webhook requests answered 5xx over `window` above `threshold`.
    Unavailable,
    /// Quarantined bodies over `window` above `threshold` (a count).
    Quarantined,
    /// Journal commit failures over `window` above `threshold` (a count).
    CommitFailures,
    /// p99 of event delay (receipt − event time) over `window` above `threshold` seconds.
    DelayP99,
    /// Pipeline lag above `threshold` events and higher than `window` ago.
    PipelineLag,
    /// Mailjet's callbacks (watched by `serve` with API credentials): more than `threshold`
    /// dead, missing or pointing elsewhere.
    MailjetCallbacks,
}

impl WebhookSignal {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookSignal::NoEvents => "no_events",
            WebhookSignal::Unauthorized => "unauthorized",
            WebhookSignal::TooLarge => "too_large",
            WebhookSignal::Unavailable => "unavailable",
            WebhookSignal::Quarantined => "quarantined",
            WebhookSignal::CommitFailures => "commit_failures",
            WebhookSignal::DelayP99 => "delay_p99",
            WebhookSignal::PipelineLag => "pipeline_lag",
            WebhookSignal::MailjetCallbacks => "mailjet_callbacks",
        }
    }
}

/// What one rule saw for one key at one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The key: a windows key for rate rules; `None` for webhook rules.
    pub key: Option<Key>,
    /// The rate over the rule's (short) window, with its evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// Its Wilson lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_bound: Option<f64>,
    /// Spike: the baseline rate; burn rate: the long window's rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Rate>,
    /// The number the rule compared: lower bound, burn rate, share, count, seconds, events.
    pub value: f64,
    /// What it was compared with.
    pub limit: f64,
    pub breaching: bool,
    /// Counts towards resolving a firing alert.
    pub clean: bool,
    /// What the number stands for, when it is more than a number (which callbacks are dead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A rule, checked and ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    pub config: RuleConfig,
    pub for_secs: i64,
    pub clear_after: u32,
}

/// What a rule reads: the windows at `now`, the receiver's health history, the confidence.
pub struct Inputs<'a> {
    pub now: i64,
    pub windows: &'a Windows,
    pub health: &'a HealthHistory,
    pub confidence: f64,
}

fn minutes(d: Option<DurationText>, default_secs: u64) -> u32 {
    (d.map_or(default_secs, |d| d.0.as_secs()) / 60).max(1) as u32
}

/// The channel names a rule may list.
pub const CHANNELS: [&str; 3] = ["slack", "email", "log"];

/// Values that would make a rule never fire, or fire on nothing: a rate outside 0 to 1, a
/// window under a minute, a spike factor that is no spike, burn windows the wrong way round, an
/// unknown channel. (Whether the windows are kept long enough, and the channels configured, is
/// checked against the rest of the config by `Config::validate`.)
fn check_values(c: &RuleConfig) -> Result<(), String> {
    let share = |name: &str, v: Option<f64>| match v {
        Some(v) if !(v > 0.0 && v < 1.0) => Err(format!(
            "`{name}` = {v} is a rate: between 0 and 1 (e.g. 0.02 for 2 %)"
        )),
        _ => Ok(()),
    };
    let minute = |name: &str, d: Option<DurationText>| match d {
        Some(d) if d.0.as_secs() < 60 => Err(format!("`{name}` must be at least 1m")),
        _ => Ok(()),
    };
    minute("window", c.window)?;
    minute("baseline_window", c.baseline_window)?;
    if c.kind == RuleKind::Webhook {
        if c.threshold.is_some_and(|t| t < 0.0) {
            return Err("`threshold` must not be negative".into());
        }
    } else {
        share("threshold", c.threshold)?;
        share("recovery", c.recovery)?;
        share("objective", c.objective)?;
        if let Some(floor) = c.floor
            && !(0.0..1.0).contains(&floor)
        {
            return Err(format!("`floor` = {floor} is a rate: between 0 and 1"));
        }
    }
    if c.kind == RuleKind::Spike
        && let Some(f) = c.factor
        && f <= 1.0
    {
        return Err(format!(
            "`factor` = {f}: a spike is more than its baseline, so above 1 (e.g. 3)"
        ));
    }
    for (i, w) in c.burn_windows.iter().enumerate() {
        minute("burn_windows.short", Some(w.short))?;
        if w.long.0 <= w.short.0 {
            return Err(format!(
                "burn_windows[{i}]: `long` ({}) must be longer than `short` ({})",
                humantime::format_duration(w.long.0),
                humantime::format_duration(w.short.0)
            ));
        }
        if w.factor <= 0.0 {
            return Err(format!("burn_windows[{i}]: `factor` must be above 0"));
        }
    }
    if let Some(unknown) = c
        .channels
        .iter()
        .find(|ch| !CHANNELS.contains(&ch.as_str()))
    {
        return Err(format!(
            "channel {unknown:?} is not one of {}",
            CHANNELS.join(", ")
        ));
    }
    Ok(())
}

impl Rule {
    /// The longest window the rule reads, in seconds: the buckets must reach that far back.
    pub fn longest_window_secs(&self) -> u64 {
        let c = &self.config;
        if c.kind == RuleKind::Webhook {
            return 0;
        }
        [c.window, c.baseline_window]
            .into_iter()
            .flatten()
            .map(|d| d.0.as_secs())
            .chain(c.burn_windows.iter().map(|w| w.long.0.as_secs()))
            .max()
            .unwrap_or(0)
    }

    /// Checks a rule's fields for its kind.
    pub fn compile(config: RuleConfig, default_clear_after: u32) -> Result<Rule, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            key: "alerts.rules",
            message: format!("rule {:?}: {message}", config.name),
        };
        if config.name.trim().is_empty() {
            return Err(invalid("needs a name".into()));
        }
        let needs_rate = !matches!(config.kind, RuleKind::Webhook);
        if needs_rate && config.rate.is_none() {
            return Err(invalid(
                "needs `rate` (bounce, hard_bounce, block, spam or unsub)".into(),
            ));
        }
        match config.kind {
            RuleKind::Threshold if config.threshold.is_none() => {
                return Err(invalid("a threshold rule needs `threshold`".into()));
            }
            RuleKind::Spike if config.factor.is_none() => {
                return Err(invalid(
                    "a spike rule needs `factor` (times its baseline)".into(),
                ));
            }
            RuleKind::BurnRate if config.objective.is_none() || config.burn_windows.is_empty() => {
                return Err(invalid(
                    "a burn_rate rule needs `objective` and `burn_windows`".into(),
                ));
            }
            RuleKind::Webhook if config.signal.is_none() || config.threshold.is_none() => {
                return Err(invalid(
                    "a webhook rule needs `signal` and `threshold`".into(),
                ));
            }
            _ => {}
        }
        check_values(&config).map_err(invalid)?;
        let mut group_by = config.group_by.clone();
        group_by.sort();
        group_by.dedup();
        Ok(Rule {
            for_secs: config.for_.map_or(0, |d| d.0.as_secs() as i64),
            clear_after: config.clear_after.unwrap_or(default_clear_after).max(1),
            config: RuleConfig { group_by, ..config },
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The windows scope the rule's keys come from.
    fn scope(&self) -> Scope {
        match self.config.group_by.as_slice() {
            [] => Scope::Global,
            [GroupBy::Provider] => Scope::Provider,
            [GroupBy::Campaign] => Scope::Campaign,
            _ => Scope::CampaignProvider,
        }
    }

    /// One observation per key that has any evidence (or a single one for webhook rules).
    pub fn evaluate(&self, inputs: &Inputs) -> Vec<Observation> {
        if self.config.kind == RuleKind::Webhook {
            return self.evaluate_webhook(inputs).into_iter().collect();
        }
        let keys: Vec<Key> = match self.scope() {
            Scope::Global => vec![Key::Global],
            scope => inputs.windows.keys(scope).collect(),
        };
        keys.into_iter()
            .filter_map(|key| self.evaluate_key(inputs, key))
            .collect()
    }

    fn evaluate_key(&self, inputs: &Inputs, key: Key) -> Option<Observation> {
        let c = &self.config;
        let kind = c.rate?;
        let rate_over =
            |window_minutes: u32| kind.of(&inputs.windows.counts(&key, window_minutes, inputs.now));
        let min_volume = c.min_volume.unwrap_or(100);
        match c.kind {
            RuleKind::Threshold => {
                let threshold = c.threshold?;
                let rate = rate_over(minutes(c.window, 3600));
                if rate.denominator == 0 {
                    return None;
                }
                let lower = lower_bound(rate, inputs.confidence).unwrap_or(0.0);
                let breaching = lower > threshold && rate.denominator >= min_volume;
                Some(Observation {
                    key: Some(key),
                    rate: Some(rate),
                    lower_bound: Some(lower),
                    baseline: None,
                    value: lower,
                    limit: threshold,
                    breaching,
                    clean: self.clean(rate, breaching),
                    detail: None,
                })
            }
            RuleKind::Spike => {
                let factor = c.factor?;
                let floor = c.floor.unwrap_or(0.0);
                let short = minutes(c.window, 15 * 60);
                let recent = inputs.windows.counts(&key, short, inputs.now);
                let rate = kind.of(&recent);
                if rate.denominator == 0 {
                    return None;
                }
                // The baseline is the long window *before* the short one: an incident must not
                // raise its own bar (a sustained block would otherwise resolve itself).
                let long =
                    inputs
                        .windows
                        .counts(&key, minutes(c.baseline_window, 24 * 3600), inputs.now);
                let baseline = kind.of(&long.minus(&recent));
                let base = baseline.value().unwrap_or(0.0);
                let limit = (factor * base).max(floor);
                let lower = lower_bound(rate, inputs.confidence).unwrap_or(0.0);
                let breaching = lower > limit && rate.denominator >= min_volume;
                Some(Observation {
                    key: Some(key),
                    rate: Some(rate),
                    lower_bound: Some(lower),
                    baseline: Some(baseline),
                    value: lower,
                    limit,
                    breaching,
                    clean: self.clean(rate, breaching),
                    detail: None,
                })
            }
            RuleKind::BurnRate => {
                let objective = c.objective?.max(f64::MIN_POSITIVE);
                // The pair burning fastest (relative to its factor) is the one reported.
                let mut best: Option<Observation> = None;
                for pair in &c.burn_windows {
                    let long = rate_over(minutes(Some(pair.long), 3600));
                    let short = rate_over(minutes(Some(pair.short), 300));
                    if long.denominator == 0 {
                        continue;
                    }
                    let long_lower = lower_bound(long, inputs.confidence).unwrap_or(0.0);
                    let long_burn = long_lower / objective;
                    let short_burn = short.value().unwrap_or(0.0) / objective;
                    let breaching = long_burn > pair.factor
                        && short_burn > pair.factor
                        && long.denominator >= min_volume;
                    let obs = Observation {
                        key: Some(key.clone()),
                        rate: Some(short),
                        lower_bound: Some(long_lower),
                        baseline: Some(long),
                        value: long_burn,
                        limit: pair.factor,
                        breaching,
                        // Clean only once the long window itself is back under the factor: the
                        // short window holds few events, and its noise alone must not resolve
                        // a budget still burning (that made the alert flap).
                        clean: !breaching
                            && long.value().unwrap_or(0.0) / objective <= pair.factor
                            && c.recovery.is_none_or(|r| long.value().unwrap_or(0.0) < r),
                        detail: None,
                    };
                    let score = long_burn.min(short_burn) / pair.factor;
                    let better = match &best {
                        None => true,
                        Some(b) => {
                            (obs.breaching && !b.breaching)
                                || (obs.breaching == b.breaching && score > b.value / b.limit)
                        }
                    };
                    if better {
                        best = Some(obs);
                    }
                }
                best
            }
            RuleKind::Webhook => None,
        }
    }

    /// Clean: below the recovery rate if one is set, else simply not breaching.
    fn clean(&self, rate: Rate, breaching: bool) -> bool {
        match self.config.recovery {
            Some(r) => rate.value().unwrap_or(0.0) < r,
            None => !breaching,
        }
    }

    fn evaluate_webhook(&self, inputs: &Inputs) -> Option<Observation> {
        let c = &self.config;
        let signal = c.signal?;
        let limit = c.threshold?;
        let window = minutes(c.window, 15 * 60) as i64 * 60;
        let h = inputs.health;
        let latest: &HealthSample = h.latest()?;
        let mut detail = None;
        // Clean unless said otherwise: not breaching.
        let mut clean = None;
        let (value, breaching) = match signal {
            WebhookSignal::NoEvents => {
                let silent = if latest.last_event_ms > 0 {
                    (inputs.now - latest.last_event_ms / 1000).max(0) as f64
                } else {
                    // Never an event in this journal: nothing was expected yet.
                    0.0
                };
                let expected = latest.events_24h >= c.min_volume.unwrap_or(100);
                // Clears when events arrive again, not when a day of silence has emptied the
                // 24 hours that said events were expected.
                clean = Some(silent <= window as f64);
                (silent, expected && silent > window as f64)
            }
            WebhookSignal::Unauthorized | WebhookSignal::Unavailable => {
                let total = h.increase(window, |s| s.requests);
                let bad = h.increase(window, |s| match signal {
                    WebhookSignal::Unauthorized => s.unauthorized,
                    _ => s.unavailable,
                });
                let share = if total > 0 {
                    bad as f64 / total as f64
                } else {
                    0.0
                };
                (share, share > limit && bad >= c.min_volume.unwrap_or(5))
            }
            WebhookSignal::TooLarge
            | WebhookSignal::Quarantined
            | WebhookSignal::CommitFailures => {
                let n = h.increase(window, |s| match signal {
                    WebhookSignal::TooLarge => s.too_large,
                    WebhookSignal::Quarantined => s.quarantined,
                    _ => s.commit_failures,
                }) as f64;
                (n, n > limit)
            }
            WebhookSignal::DelayP99 => {
                let p99 = latest.delay_p99.unwrap_or(0.0);
                (p99, p99 > limit)
            }
            WebhookSignal::MailjetCallbacks => match &latest.callbacks {
                Some((n, what)) => {
                    detail = Some(what.clone());
                    (f64::from(*n), f64::from(*n) > limit)
                }
                None => (0.0, false),
            },
            WebhookSignal::PipelineLag => {
                let lag = latest.pipeline_lag as f64;
                let before = h.at_or_before(inputs.now - window).map(|s| s.pipeline_lag);
                let growing = before.is_some_and(|b| latest.pipeline_lag > b);
                (lag, lag > limit && growing)
            }
        };
        Some(Observation {
            key: None,
            rate: None,
            lower_bound: None,
            baseline: None,
            value,
            limit,
            breaching,
            clean: clean.unwrap_or(!breaching),
            detail,
        })
    }
}
