//! A campaign's own bounce and block reasons, per provider, over the same windows.
//!
//! When one campaign's bounces spike, the first question is why, and the global or provider
//! reasons mix every other campaign in. Each campaign therefore keeps a short list of its
//! reasons. Memory follows the campaign's trouble, not its volume: a campaign that never
//! bounced holds an empty list (no heap), and one list holds at most
//! [`MAX_CAMPAIGN_REASONS`] distinct (provider, event, category, error) entries, past which
//! new ones count as `other` for their provider and event. The list goes with its campaign
//! when the campaign is evicted.

use serde::{Deserialize, Serialize};

use super::reasons::{ReasonCount, most_frequent};
use super::series::Series;
use crate::event::{Brief, EventKind};
use crate::pipeline::Provider;

/// Distinct entries one campaign tracks before new ones fold into `other`. Most campaigns
/// meet a handful of reasons at two or three providers.
pub const MAX_CAMPAIGN_REASONS: usize = 16;

/// The category and error an entry counts once its campaign has no room left.
const OTHER: &str = "other";

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignReasons {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    provider: Provider,
    /// `blocked` when true, `bounce` otherwise.
    blocked: bool,
    category: Box<str>,
    error: Box<str>,
    /// Events per bucket: one number, not a whole `Counts`.
    series: Series<u32>,
}

impl Entry {
    fn is(&self, provider: Provider, blocked: bool, category: &str, error: &str) -> bool {
        self.provider == provider
            && self.blocked == blocked
            && *self.category == *category
            && *self.error == *error
    }
}

impl CampaignReasons {
    /// Counts the reason of a bounce or block at `provider`; other events carry none.
    pub fn record(&mut self, event: &Brief, provider: Provider, at: u32, now: u32) {
        let blocked = match event.kind {
            EventKind::Bounce => false,
            EventKind::Blocked => true,
            _ => return,
        };
        let category = event.error_related_to.as_deref().unwrap_or_default();
        let error = event.error.as_deref().unwrap_or_default();
        // A linear scan of at most 17 entries. (Measured: a scan of eight-byte hashed tags
        // instead was no faster; a bounce's cost is in the buckets it touches.)
        let find = |entries: &[Entry], category: &str, error: &str| {
            entries
                .iter()
                .position(|e| e.is(provider, blocked, category, error))
        };
        let i = match find(&self.entries, category, error) {
            Some(i) => i,
            None if self.entries.len() >= MAX_CAMPAIGN_REASONS => {
                match find(&self.entries, OTHER, OTHER) {
                    Some(i) => i,
                    None => self.push(provider, blocked, OTHER, OTHER),
                }
            }
            None => self.push(provider, blocked, category, error),
        };
        self.entries[i].series.add(at, now, 1);
    }

    fn push(&mut self, provider: Provider, blocked: bool, category: &str, error: &str) -> usize {
        // Grown one at a time: most campaigns that bounce at all meet few reasons.
        self.entries.reserve_exact(1);
        self.entries.push(Entry {
            provider,
            blocked,
            category: category.into(),
            error: error.into(),
            series: Series::default(),
        });
        self.entries.len() - 1
    }

    /// The `n` most frequent reasons over the window: at one provider, or at all of them
    /// (`None`, each reason summed over the providers).
    pub fn top(
        &self,
        provider: Option<Provider>,
        window: u32,
        now: u32,
        n: usize,
    ) -> Vec<ReasonCount> {
        let mut rows: Vec<ReasonCount> = Vec::new();
        for e in &self.entries {
            if provider.is_some_and(|p| p != e.provider) {
                continue;
            }
            let count = u64::from(e.series.sum(now, window));
            if count == 0 {
                continue;
            }
            let event = if e.blocked { "blocked" } else { "bounce" };
            match rows
                .iter_mut()
                .find(|r| r.event == event && *r.category == *e.category && *r.error == *e.error)
            {
                Some(row) => row.count += count,
                None => rows.push(ReasonCount {
                    event: event.to_string(),
                    category: e.category.to_string(),
                    error: e.error.to_string(),
                    count,
                }),
            }
        }
        most_frequent(rows, n)
    }

    /// Rolls every entry and drops the ones with nothing left in the longest window.
    pub fn evict_idle(&mut self, now: u32, longest: u32) {
        self.entries.retain_mut(|e| {
            e.series.roll(now, longest);
            e.series.newest_minute().is_some_and(|m| m + longest > now)
        });
        self.entries.shrink_to_fit();
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Heap bytes held, for the memory report.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self
                .entries
                .iter()
                .map(|e| e.category.len() + e.error.len() + e.series.heap_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::owned_brief;

    fn event(kind: &str, category: &str, error: &str) -> Brief<'static> {
        owned_brief(&format!(
            r#"{{"event":"{kind}","error_related_to":"{category}","error":"{error}"}}"#
        ))
    }

    #[test]
    fn reasons_are_summed_over_providers_or_shown_for_one() {
        let mut r = CampaignReasons::default();
        let unknown = event("bounce", "recipient", "user unknown");
        for _ in 0..3 {
            r.record(&unknown, Provider::Google, 100, 100);
        }
        r.record(&unknown, Provider::Microsoft, 100, 100);
        let blocked = event("blocked", "spam", "sender blocked");
        for _ in 0..2 {
            r.record(&blocked, Provider::Microsoft, 100, 100);
        }
        r.record(&event("sent", "", ""), Provider::Google, 100, 100);

        let all = r.top(None, 5, 100, 5);
        let rows: Vec<_> = all
            .iter()
            .map(|r| (r.event.as_str(), r.error.as_str(), r.count))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("bounce", "user unknown", 4),
                ("blocked", "sender blocked", 2)
            ]
        );
        let microsoft = r.top(Some(Provider::Microsoft), 5, 100, 5);
        assert_eq!(microsoft[0].error, "sender blocked");
        assert_eq!(microsoft[1].count, 1);
        assert!(r.top(Some(Provider::Yahoo), 5, 100, 5).is_empty());
        // Out of the five-minute window, in the hour.
        assert!(r.top(None, 5, 110, 5).is_empty());
        assert_eq!(r.top(None, 60, 110, 5)[0].count, 4);
    }

    #[test]
    fn a_campaign_holds_a_bounded_list_and_drops_idle_entries() {
        let mut r = CampaignReasons::default();
        assert_eq!(r.heap_bytes(), 0, "no bounce, no heap");
        for i in 0..MAX_CAMPAIGN_REASONS + 10 {
            let e = event("bounce", "recipient", &format!("odd reason {i}"));
            r.record(&e, Provider::Other, 100, 100);
        }
        assert_eq!(r.entries.len(), MAX_CAMPAIGN_REASONS + 1);
        let all = r.top(None, 5, 100, usize::MAX);
        let other = all.iter().find(|x| x.category == OTHER).unwrap();
        assert_eq!(other.count, 10);
        r.evict_idle(100 + 2 * 24 * 60, 24 * 60);
        assert!(r.is_empty());
    }

    #[test]
    fn survives_a_snapshot_round_trip() {
        let mut r = CampaignReasons::default();
        let e = event("bounce", "domain", "no mail host");
        r.record(&e, Provider::Yahoo, 100, 100);
        let mut back: CampaignReasons =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        back.record(&e, Provider::Yahoo, 100, 100);
        assert_eq!(back.top(Some(Provider::Yahoo), 5, 100, 5)[0].count, 2);
        assert_eq!(back.entries.len(), 1, "no duplicate entry after restore");
    }
}
