//! Counts per bucket, and rates that know their numerator and denominator.
//!
//! A [`Rate`] is never averaged: two rates combine by adding numerators and denominators, then
//! dividing once ([`Rate::add`]). That is the only way to combine them here, so "average of
//! per-provider rates" cannot be written by accident.

use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

use crate::event::{Brief, EventKind};

/// What one bucket counts. `blocked_mailjet` is the part of `blocked` with category `mailjet`
/// (Mailjet's own suppression: nothing was attempted), kept apart so that reputation rates can
/// exclude it (see `shared/mailjet/EVENTS.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub sent: u32,
    pub open: u32,
    pub click: u32,
    pub bounce: u32,
    pub hard_bounce: u32,
    pub blocked: u32,
    pub blocked_mailjet: u32,
    pub spam: u32,
    pub unsub: u32,
    pub unknown: u32,
}

impl Counts {
    /// The counts of one event.
    pub fn of(event: &Brief) -> Counts {
        let mut c = Counts::default();
        match event.kind {
            EventKind::Sent => c.sent = 1,
            EventKind::Open => c.open = 1,
            EventKind::Click => c.click = 1,
            EventKind::Bounce => {
                c.bounce = 1;
                c.hard_bounce = u32::from(event.hard_bounce == Some(true));
            }
            EventKind::Blocked => {
                c.blocked = 1;
                c.blocked_mailjet = u32::from(event.error_related_to.as_deref() == Some("mailjet"));
            }
            EventKind::Spam => c.spam = 1,
            EventKind::Unsub => c.unsub = 1,
            EventKind::Unknown => c.unknown = 1,
        }
        c
    }

    /// These counts minus `other`'s, field by field (never below 0): a long window without
    /// its most recent part.
    pub fn minus(&self, other: &Counts) -> Counts {
        Counts {
            sent: self.sent.saturating_sub(other.sent),
            open: self.open.saturating_sub(other.open),
            click: self.click.saturating_sub(other.click),
            bounce: self.bounce.saturating_sub(other.bounce),
            hard_bounce: self.hard_bounce.saturating_sub(other.hard_bounce),
            blocked: self.blocked.saturating_sub(other.blocked),
            blocked_mailjet: self.blocked_mailjet.saturating_sub(other.blocked_mailjet),
            spam: self.spam.saturating_sub(other.spam),
            unsub: self.unsub.saturating_sub(other.unsub),
            unknown: self.unknown.saturating_sub(other.unknown),
        }
    }

    pub fn total(&self) -> u64 {
        [
            self.sent,
            self.open,
            self.click,
            self.bounce,
            self.blocked,
            self.spam,
            self.unsub,
            self.unknown,
        ]
        .iter()
        .map(|&v| u64::from(v))
        .sum()
    }

    /// Whether any `sent` event is in these counts. Without them every rate is meaningless
    /// (a deployment that does not receive `sent` would show a 100 % bounce rate), so consumers
    /// report "no sent events" instead of the rates.
    pub fn has_sends(&self) -> bool {
        self.sent > 0
    }

    /// Blocks that count against reputation: all but Mailjet's own suppression.
    pub fn reputation_blocks(&self) -> u64 {
        u64::from(self.blocked.saturating_sub(self.blocked_mailjet))
    }

    /// Delivery attempts: `sent + bounce + blocked` (excluding category `mailjet`).
    pub fn attempts(&self) -> u64 {
        u64::from(self.sent) + u64::from(self.bounce) + self.reputation_blocks()
    }

    pub fn bounce_rate(&self) -> Rate {
        Rate::new(
            self.bounce.into(),
            u64::from(self.sent) + u64::from(self.bounce),
        )
    }

    pub fn hard_bounce_rate(&self) -> Rate {
        Rate::new(
            self.hard_bounce.into(),
            u64::from(self.sent) + u64::from(self.bounce),
        )
    }

    pub fn block_rate(&self) -> Rate {
        Rate::new(self.reputation_blocks(), self.attempts())
    }

    pub fn spam_rate(&self) -> Rate {
        Rate::new(self.spam.into(), self.sent.into())
    }

    pub fn unsub_rate(&self) -> Rate {
        Rate::new(self.unsub.into(), self.sent.into())
    }

    /// Every rate, by the name rules and the API use.
    pub fn rates(&self) -> [(RateKind, Rate); 5] {
        RateKind::ALL.map(|k| (k, k.of(self)))
    }
}

impl AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.sent = self.sent.saturating_add(o.sent);
        self.open = self.open.saturating_add(o.open);
        self.click = self.click.saturating_add(o.click);
        self.bounce = self.bounce.saturating_add(o.bounce);
        self.hard_bounce = self.hard_bounce.saturating_add(o.hard_bounce);
        self.blocked = self.blocked.saturating_add(o.blocked);
        self.blocked_mailjet = self.blocked_mailjet.saturating_add(o.blocked_mailjet);
        self.spam = self.spam.saturating_add(o.spam);
        self.unsub = self.unsub.saturating_add(o.unsub);
        self.unknown = self.unknown.saturating_add(o.unknown);
    }
}

impl Add for Counts {
    type Output = Counts;
    fn add(mut self, o: Counts) -> Counts {
        self += o;
        self
    }
}

/// The rates EVENTS.md defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKind {
    Bounce,
    HardBounce,
    Block,
    Spam,
    Unsub,
}

impl RateKind {
    pub const ALL: [RateKind; 5] = [
        RateKind::Bounce,
        RateKind::HardBounce,
        RateKind::Block,
        RateKind::Spam,
        RateKind::Unsub,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RateKind::Bounce => "bounce",
            RateKind::HardBounce => "hard_bounce",
            RateKind::Block => "block",
            RateKind::Spam => "spam",
            RateKind::Unsub => "unsub",
        }
    }

    pub fn of(self, c: &Counts) -> Rate {
        match self {
            RateKind::Bounce => c.bounce_rate(),
            RateKind::HardBounce => c.hard_bounce_rate(),
            RateKind::Block => c.block_rate(),
            RateKind::Spam => c.spam_rate(),
            RateKind::Unsub => c.unsub_rate(),
        }
    }
}

/// A proportion with its evidence. `value()` is `None` without a denominator: a deployment that
/// receives no `sent` events is told so, not shown a 100 % bounce rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub numerator: u64,
    pub denominator: u64,
}

impl Rate {
    pub fn new(numerator: u64, denominator: u64) -> Rate {
        Rate {
            numerator,
            denominator,
        }
    }

    pub fn value(&self) -> Option<f64> {
        (self.denominator > 0).then(|| self.numerator as f64 / self.denominator as f64)
    }
}

impl Add for Rate {
    type Output = Rate;
    /// Sum numerators and denominators, then divide once: never an average of ratios.
    fn add(self, o: Rate) -> Rate {
        Rate::new(
            self.numerator + o.numerator,
            self.denominator + o.denominator,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::owned_brief;

    fn counts(json: &str) -> Counts {
        Counts::of(&owned_brief(json))
    }

    #[test]
    fn rates_follow_the_events_md_definitions() {
        let mut c = Counts::default();
        for _ in 0..90 {
            c += counts(r#"{"event":"sent"}"#);
        }
        for _ in 0..6 {
            c += counts(r#"{"event":"bounce","hard_bounce":true}"#);
        }
        for _ in 0..4 {
            c += counts(r#"{"event":"bounce","hard_bounce":"false"}"#);
        }
        c += counts(r#"{"event":"blocked","error_related_to":"spam","error":"sender blocked"}"#);
        c += counts(r#"{"event":"blocked","error_related_to":"mailjet","error":"preblocked"}"#);
        c += counts(r#"{"event":"spam"}"#);
        c += counts(r#"{"event":"unsub"}"#);
        c += counts(r#"{"event":"typofix"}"#);
        assert_eq!(c.bounce_rate(), Rate::new(10, 100));
        assert_eq!(c.hard_bounce_rate(), Rate::new(6, 100));
        // The mailjet-category block is neither a block against reputation nor an attempt.
        assert_eq!(c.block_rate(), Rate::new(1, 101));
        assert_eq!(c.spam_rate(), Rate::new(1, 90));
        assert_eq!(c.unsub_rate(), Rate::new(1, 90));
        assert_eq!(c.unknown, 1);
        assert_eq!(c.total(), 90 + 10 + 2 + 1 + 1 + 1);
    }

    #[test]
    fn rates_combine_by_summing_never_by_averaging() {
        // 1/100 and 9/10: the average of ratios would be 45.5 %, the true rate is 10/110.
        let combined = Rate::new(1, 100) + Rate::new(9, 10);
        assert_eq!(combined, Rate::new(10, 110));
        assert!((combined.value().unwrap() - 10.0 / 110.0).abs() < 1e-12);
    }

    #[test]
    fn without_sent_events_there_is_no_rate() {
        let c = counts(r#"{"event":"bounce"}"#);
        assert!(
            !c.has_sends(),
            "a bounce alone must be reported as 'no sent events'"
        );
        assert_eq!(c.spam_rate().value(), None);
        assert_eq!(Counts::default().bounce_rate().value(), None);
    }
}
