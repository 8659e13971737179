//! The receiver's own health, sampled at each evaluation, for the webhook rules.
//!
//! The counters are cumulative (like Prometheus counters), so a rule over "the last 10
//! minutes" subtracts the sample taken 10 minutes ago from the latest. The history keeps a day
//! of samples; the clock is the engine's, so a backtest can feed samples of its own. The
//! samples are stored with the alert state, so a restart neither resolves an alert on a
//! quarantined body nor forgets one that was about to fire; the new process's counters start
//! at 0, which [`HealthHistory::increase`] reads as a reset.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// How long samples are kept: the longest window a webhook rule can use.
pub const KEEP_SECS: i64 = 24 * 3600;

/// One reading of the receiver's counters and gauges.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthSample {
    /// Unix seconds.
    pub at: i64,
    /// Webhook requests answered, any status.
    pub requests: u64,
    pub unauthorized: u64,
    pub too_large: u64,
    /// Answered 5xx.
    pub unavailable: u64,
    pub quarantined: u64,
    pub commit_failures: u64,
    /// When the last event was stored, Unix ms (0: never).
    pub last_event_ms: i64,
    /// Events counted in the last 24 h of event time: the baseline that says events are
    /// expected.
    pub events_24h: u64,
    /// p99 of the delay of events received in the last 5 minutes, in seconds.
    pub delay_p99: Option<f64>,
    pub pipeline_lag: i64,
    /// What Mailjet last said about the callbacks (when `serve` watches them): the number of
    /// problems and their description. `None` while not watched or not yet asked.
    #[serde(default)]
    pub callbacks: Option<(u32, String)>,
}

#[derive(Debug, Default)]
pub struct HealthHistory {
    samples: VecDeque<HealthSample>,
}

impl HealthHistory {
    pub fn push(&mut self, sample: HealthSample) {
        while self
            .samples
            .front()
            .is_some_and(|s| s.at + KEEP_SECS < sample.at)
        {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn latest(&self) -> Option<&HealthSample> {
        self.samples.back()
    }

    /// The newest sample taken at or before `at`.
    pub fn at_or_before(&self, at: i64) -> Option<&HealthSample> {
        self.samples.iter().rev().find(|s| s.at <= at)
    }

    /// How much a counter grew over the last `window_secs`: from the sample at the window's
    /// start (or the oldest one, while the history is shorter) to the latest. The counters are
    /// the process's own, and start at 0 again after a restart: as in Prometheus, a value below
    /// the one before is a reset, and counts in full.
    pub fn increase(&self, window_secs: i64, counter: impl Fn(&HealthSample) -> u64) -> u64 {
        let Some(latest) = self.latest() else {
            return 0;
        };
        let from = latest.at - window_secs;
        let start = self.samples.iter().rposition(|s| s.at <= from).unwrap_or(0);
        let mut previous = None;
        let mut total = 0u64;
        for sample in self.samples.iter().skip(start) {
            let now = counter(sample);
            total += match previous {
                Some(before) if now >= before => now - before,
                Some(_) => now,
                None => 0,
            };
            previous = Some(now);
        }
        total
    }

    /// The samples, oldest first, to store.
    pub fn samples(&self) -> impl Iterator<Item = &HealthSample> {
        self.samples.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increase_is_the_growth_over_the_window() {
        let mut h = HealthHistory::default();
        for i in 0..=20 {
            h.push(HealthSample {
                at: 1000 + i * 60,
                requests: (i * 10) as u64,
                ..Default::default()
            });
        }
        assert_eq!(h.increase(5 * 60, |s| s.requests), 50);
        assert_eq!(
            h.increase(24 * 3600, |s| s.requests),
            200,
            "from the oldest"
        );
        assert_eq!(h.at_or_before(1000 + 90).unwrap().at, 1060);
    }

    /// A restart puts the counters back to 0: the growth before it still counts, and so does
    /// the growth after it.
    #[test]
    fn increase_counts_across_a_reset() {
        let mut h = HealthHistory::default();
        for (at, quarantined) in [(0, 0), (60, 0), (120, 1), (180, 1), (240, 0), (300, 2)] {
            h.push(HealthSample {
                at,
                quarantined,
                ..Default::default()
            });
        }
        assert_eq!(h.increase(600, |s| s.quarantined), 3);
        assert_eq!(
            h.increase(150, |s| s.quarantined),
            2,
            "from the sample at 120"
        );
        assert_eq!(h.increase(60, |s| s.quarantined), 2);
    }

    #[test]
    fn old_samples_are_dropped() {
        let mut h = HealthHistory::default();
        h.push(HealthSample {
            at: 0,
            ..Default::default()
        });
        h.push(HealthSample {
            at: KEEP_SECS + 10,
            ..Default::default()
        });
        assert_eq!(h.samples.len(), 1);
    }
}
