//! Recent event delays (receipt time − event time), for in-process quantiles.
//!
//! A long delay means Mailjet held the event back and retried: the endpoint was failing or
//! slow. The alert engine needs "p99 delay over the last few minutes", which a cumulative
//! histogram cannot answer, so delays go into one HDR histogram per minute of receipt, and a
//! quantile merges the minutes of the window asked for. Minutes older than [`KEEP_MINUTES`]
//! are dropped, so memory is bounded (about 12 KiB per minute).

use std::collections::VecDeque;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The longest window a quantile can be asked for.
pub const KEEP_MINUTES: u32 = 60;

/// Delays are kept in milliseconds up to 30 days; longer ones are clamped there.
const MAX_MS: u64 = 30 * 86_400_000;

/// Quantiles of the delays received in a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DelaySummary {
    pub window_minutes: u32,
    pub count: u64,
    pub p50_seconds: f64,
    pub p90_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
}

#[derive(Debug, Default)]
pub struct RecentDelays {
    /// `(minute of receipt, delays in ms)`, oldest first.
    minutes: VecDeque<(u32, Histogram<u32>)>,
}

impl RecentDelays {
    /// Records one delay, received in `minute` (Unix minutes).
    pub fn record(&mut self, minute: u32, delay_ms: u64) {
        let fresh = self.minutes.back().is_none_or(|(m, _)| *m < minute);
        if fresh {
            let Ok(h) = Histogram::new_with_bounds(1, MAX_MS, 2) else {
                return;
            };
            self.minutes.push_back((minute, h));
            while self
                .minutes
                .front()
                .is_some_and(|(m, _)| m + KEEP_MINUTES <= minute)
            {
                self.minutes.pop_front();
            }
        }
        // The newest minute, or an older one still kept (the pipeline's clock only moves
        // forward, so that is rare).
        if let Some((_, h)) = self.minutes.iter_mut().rev().find(|(m, _)| *m <= minute) {
            h.saturating_record(delay_ms.clamp(1, MAX_MS));
        }
    }

    /// The quantiles of the delays received in the last `window_minutes` up to `now_minute`;
    /// `None` if there were none.
    pub fn summary(&self, now_minute: u32, window_minutes: u32) -> Option<DelaySummary> {
        let window = window_minutes.clamp(1, KEEP_MINUTES);
        let mut merged: Option<Histogram<u32>> = None;
        for (_, h) in self
            .minutes
            .iter()
            .filter(|(m, _)| *m + window > now_minute && *m <= now_minute)
        {
            match &mut merged {
                Some(acc) => {
                    let _ = acc.add(h);
                }
                None => merged = Some(h.clone()),
            }
        }
        let h = merged.filter(|h| !h.is_empty())?;
        let secs = |ms: u64| ms as f64 / 1000.0;
        Some(DelaySummary {
            window_minutes: window,
            count: h.len(),
            p50_seconds: secs(h.value_at_quantile(0.5)),
            p90_seconds: secs(h.value_at_quantile(0.9)),
            p99_seconds: secs(h.value_at_quantile(0.99)),
            max_seconds: secs(h.max()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_cover_only_the_window_asked_for() {
        let mut d = RecentDelays::default();
        // Minute 100: 99 prompt events (1 s) and one retried for an hour.
        for _ in 0..99 {
            d.record(100, 1_000);
        }
        d.record(100, 3_600_000);
        // Minute 104: ten events 2 minutes late.
        for _ in 0..10 {
            d.record(104, 120_000);
        }
        let five = d.summary(104, 5).unwrap();
        assert_eq!(five.count, 110);
        assert!((0.99..1.01).contains(&five.p50_seconds), "{five:?}");
        assert!((119.0..121.0).contains(&five.p99_seconds), "{five:?}");
        assert!((3590.0..3620.0).contains(&five.max_seconds), "{five:?}");

        let one = d.summary(104, 1).unwrap();
        assert_eq!(one.count, 10);
        assert!((119.0..121.0).contains(&one.p50_seconds), "{one:?}");
        assert_eq!(
            d.summary(110, 5),
            None,
            "nothing received in minutes 106..110"
        );
    }

    #[test]
    fn old_minutes_are_dropped() {
        let mut d = RecentDelays::default();
        for m in 0..(3 * KEEP_MINUTES) {
            d.record(m, 5_000);
        }
        assert_eq!(d.minutes.len(), KEEP_MINUTES as usize);
        assert_eq!(d.summary(3 * KEEP_MINUTES - 1, 60).unwrap().count, 60);
    }
}
