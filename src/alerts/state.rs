//! One alert's life: `ok` → `pending` → `firing` → `resolved` (→ `ok`).
//!
//! - A breach starts `pending`, and fires once it has lasted the rule's `for` (at once when
//!   `for` is 0). A pending alert that stops breaching goes back to `ok` silently.
//! - A firing alert holds while it breaches, and is re-notified every `repeat` interval.
//! - It resolves only after `clear_after` clean evaluations in a row. An evaluation between
//!   the recovery level and the threshold is neither a breach nor clean: the count starts
//!   over. That is the hysteresis that keeps an alert from flapping.
//!
//! `ok` and `resolved` are not stored: an alert with no state is ok.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Pending,
    Firing,
}

/// What the state machine asks to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Firing,
    /// Still firing, `repeat` after the last notice.
    Repeat,
    /// Cleared; carries how long the incident lasted, in seconds.
    Resolved {
        lasted_secs: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub phase: Phase,
    /// When the current phase began (Unix seconds): the breach start while pending, the
    /// incident start while firing.
    pub since: i64,
    /// When the last notice for this alert was queued.
    pub notified_at: i64,
    /// Clean evaluations in a row while firing.
    pub clean: u32,
    /// The rule's limit when the alert fired. A spike's limit moves with its baseline, which
    /// the incident itself raises; the engine judges recovery against this frozen one.
    #[serde(default)]
    pub fired_limit: f64,
    /// A hash of the observation's detail at the last notice (which callbacks are dead), so
    /// that a change while firing is told at once instead of at the next repeat.
    #[serde(default)]
    pub detail: u64,
    /// Firing, but its notices were all silenced: nobody was told. It is announced when the
    /// silence ends while it still fires, and its resolution is not sent if it never was.
    #[serde(default)]
    pub unannounced: bool,
}

/// The timing a rule sets.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub for_secs: i64,
    pub clear_after: u32,
    pub repeat_secs: i64,
}

/// Advances one alert by one evaluation. `state` is `None` for an ok alert; the returned
/// state is `None` when the alert is (again) ok.
pub fn step(
    state: Option<AlertState>,
    breaching: bool,
    clean: bool,
    now: i64,
    t: Timing,
) -> (Option<AlertState>, Option<Notice>) {
    let fire = |since| {
        (
            Some(AlertState {
                phase: Phase::Firing,
                since,
                notified_at: now,
                clean: 0,
                fired_limit: 0.0,
                detail: 0,
                unannounced: false,
            }),
            Some(Notice::Firing),
        )
    };
    match state {
        None if !breaching => (None, None),
        None if t.for_secs <= 0 => fire(now),
        None => (
            Some(AlertState {
                phase: Phase::Pending,
                since: now,
                notified_at: 0,
                clean: 0,
                fired_limit: 0.0,
                detail: 0,
                unannounced: false,
            }),
            None,
        ),
        Some(s) if s.phase == Phase::Pending => {
            if !breaching {
                (None, None)
            } else if now - s.since >= t.for_secs {
                fire(s.since)
            } else {
                (Some(s), None)
            }
        }
        Some(mut s) => {
            if breaching {
                s.clean = 0;
                if now - s.notified_at >= t.repeat_secs {
                    s.notified_at = now;
                    return (Some(s), Some(Notice::Repeat));
                }
                return (Some(s), None);
            }
            if !clean {
                s.clean = 0;
                return (Some(s), None);
            }
            s.clean += 1;
            if s.clean >= t.clear_after {
                let lasted_secs = now - s.since;
                return (None, Some(Notice::Resolved { lasted_secs }));
            }
            (Some(s), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        for_secs: 60,
        clear_after: 3,
        repeat_secs: 3600,
    };

    /// Runs a script of (breaching, clean) evaluations 30 s apart; returns the notices.
    fn run(script: &[(bool, bool)], t: Timing) -> Vec<(i64, Notice)> {
        let mut state = None;
        let mut out = Vec::new();
        for (i, &(breaching, clean)) in script.iter().enumerate() {
            let now = 1000 + i as i64 * 30;
            let (next, notice) = step(state, breaching, clean, now, t);
            state = next;
            if let Some(n) = notice {
                out.push((now, n));
            }
        }
        out
    }

    const B: (bool, bool) = (true, false);
    const C: (bool, bool) = (false, true);
    /// Below the threshold but above the recovery level.
    const H: (bool, bool) = (false, false);

    #[test]
    fn fires_after_for_and_resolves_after_clean_evaluations() {
        let notices = run(&[B, B, B, C, C, C], T);
        assert_eq!(
            notices,
            vec![
                (1060, Notice::Firing),
                (1150, Notice::Resolved { lasted_secs: 150 })
            ]
        );
    }

    #[test]
    fn a_short_breach_stays_pending_and_silent() {
        assert!(run(&[B, C, B, C, B, C], T).is_empty());
    }

    #[test]
    fn the_hysteresis_band_holds_a_firing_alert() {
        // Dipping just under the threshold (H) never resolves; two clean evaluations then a
        // dip start the count over.
        let notices = run(&[B, B, B, H, H, C, C, H, C, C, B, H, H], T);
        assert_eq!(notices, vec![(1060, Notice::Firing)]);
    }

    #[test]
    fn a_long_incident_is_repeated() {
        let t = Timing {
            for_secs: 0,
            repeat_secs: 90,
            ..T
        };
        let notices = run(&[B, B, B, B, B, B, B], t);
        assert_eq!(
            notices,
            vec![
                (1000, Notice::Firing),
                (1090, Notice::Repeat),
                (1180, Notice::Repeat)
            ]
        );
    }
}
