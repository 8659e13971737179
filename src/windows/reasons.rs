//! Bounce and block reasons (`error_related_to` / `error`) per provider, over the same windows.
//!
//! These are the global and per-provider reasons: they answer "why is Microsoft blocking us".
//! Each campaign keeps its own short list beside its series (`campaign_reasons.rs`), so that
//! memory grows with the campaigns that bounce, not with every campaign. The values are free
//! text, so their number is capped: past [`MAX_REASONS`] distinct pairs, new ones count as
//! `other`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::rate::Counts;
use super::series::Series;
use crate::event::{Brief, EventKind};
use crate::pipeline::Provider;

/// How many distinct (category, error) pairs are tracked before new ones fold into `other`.
pub const MAX_REASONS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReasonKey {
    /// `None` for the global scope.
    pub provider: Option<Provider>,
    /// `bounce` or `blocked`.
    pub event: String,
    pub category: String,
    pub error: String,
}

/// One row of a "top reasons" answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    pub event: String,
    pub category: String,
    pub error: String,
    pub count: u64,
}

/// The `n` most frequent rows, most frequent first; ties in name order, so that an answer does
/// not change from one call to the next.
pub(super) fn most_frequent(mut rows: Vec<ReasonCount>, n: usize) -> Vec<ReasonCount> {
    rows.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.event, &a.category, &a.error).cmp(&(&b.event, &b.category, &b.error)))
    });
    rows.truncate(n);
    rows
}

/// A `(category, error)` pair's number in [`Reasons::pair_names`].
type PairId = u32;

/// foldhash, as for the other per-event maps: SipHash showed in the pipeline's profile.
type Fast = foldhash::fast::RandomState;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Reasons {
    series: Vec<(ReasonKey, Series)>,
    /// `category → error → pair`: looked up with the event's borrowed strings, so counting a
    /// known reason allocates nothing (it used to clone five strings per bounce).
    #[serde(skip)]
    pairs: HashMap<String, HashMap<String, PairId, Fast>, Fast>,
    #[serde(skip)]
    pair_names: Vec<(String, String)>,
    /// `(pair, bounce or blocked, scope)` → position in `series`.
    #[serde(skip)]
    index: HashMap<(PairId, EventKind, Option<Provider>), usize, Fast>,
}

impl PartialEq for Reasons {
    fn eq(&self, other: &Self) -> bool {
        self.series == other.series
    }
}

impl Reasons {
    /// Rebuilds the lookup tables after a snapshot is restored.
    pub fn reindex(&mut self) {
        self.pairs.clear();
        self.pair_names.clear();
        self.index.clear();
        for i in 0..self.series.len() {
            let key = &self.series[i].0;
            let (category, error) = (key.category.clone(), key.error.clone());
            let kind = if key.event == EventKind::Blocked.as_str() {
                EventKind::Blocked
            } else {
                EventKind::Bounce
            };
            let provider = key.provider;
            let pair = self.pair_id(&category, &error);
            self.index.insert((pair, kind, provider), i);
        }
    }

    /// The pair's id, registering it if new.
    fn pair_id(&mut self, category: &str, error: &str) -> PairId {
        if let Some(&id) = self.pairs.get(category).and_then(|m| m.get(error)) {
            return id;
        }
        let id = self.pair_names.len() as PairId;
        self.pair_names
            .push((category.to_string(), error.to_string()));
        self.pairs
            .entry(category.to_string())
            .or_default()
            .insert(error.to_string(), id);
        id
    }

    /// Counts the reason of a bounce or block; other events carry none.
    pub fn record(&mut self, event: &Brief, provider: Provider, at: u32, now: u32) {
        if !matches!(event.kind, EventKind::Bounce | EventKind::Blocked) {
            return;
        }
        let category = event.error_related_to.as_deref().unwrap_or_default();
        let error = event.error.as_deref().unwrap_or_default();
        let pair = match self.pairs.get(category).and_then(|m| m.get(error)) {
            Some(&id) => id,
            None if self.pair_names.len() >= MAX_REASONS => self.pair_id("other", "other"),
            None => self.pair_id(category, error),
        };
        let counts = Counts::of(event);
        for scope in [None, Some(provider)] {
            let i = match self.index.get(&(pair, event.kind, scope)) {
                Some(&i) => i,
                None => {
                    let (category, error) = self.pair_names[pair as usize].clone();
                    let key = ReasonKey {
                        provider: scope,
                        event: event.kind.as_str().to_string(),
                        category,
                        error,
                    };
                    self.series.push((key, Series::default()));
                    self.index
                        .insert((pair, event.kind, scope), self.series.len() - 1);
                    self.series.len() - 1
                }
            };
            self.series[i].1.add(at, now, counts);
        }
    }

    /// The `n` most frequent reasons of a scope over the window.
    pub fn top(
        &self,
        provider: Option<Provider>,
        window: u32,
        now: u32,
        n: usize,
    ) -> Vec<ReasonCount> {
        let rows: Vec<ReasonCount> = self
            .series
            .iter()
            .filter(|(k, _)| k.provider == provider)
            .map(|(k, s)| {
                let c = s.sum(now, window);
                ReasonCount {
                    event: k.event.clone(),
                    category: k.category.clone(),
                    error: k.error.clone(),
                    count: u64::from(c.bounce) + u64::from(c.blocked),
                }
            })
            .filter(|r| r.count > 0)
            .collect();
        most_frequent(rows, n)
    }

    /// Rolls every series and drops the ones with nothing left in the longest window.
    pub fn evict_idle(&mut self, now: u32, longest: u32) {
        self.series.retain_mut(|(_, s)| {
            s.roll(now, longest);
            s.newest_minute().is_some_and(|m| m + longest > now)
        });
        self.reindex();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::owned_brief;

    fn bounce(category: &str, error: &str) -> Brief<'static> {
        owned_brief(&format!(
            r#"{{"event":"bounce","error_related_to":"{category}","error":"{error}"}}"#
        ))
    }

    #[test]
    fn top_reasons_per_provider_and_global() {
        let mut r = Reasons::default();
        for _ in 0..3 {
            r.record(
                &bounce("recipient", "user unknown"),
                Provider::Google,
                100,
                100,
            );
        }
        r.record(
            &bounce("spam", "sender blocked"),
            Provider::Microsoft,
            100,
            100,
        );
        let blocked = owned_brief(
            r#"{"event":"blocked","error_related_to":"spam","error":"sender blocked"}"#,
        );
        r.record(&blocked, Provider::Microsoft, 100, 100);
        r.record(
            &owned_brief(r#"{"event":"sent"}"#),
            Provider::Google,
            100,
            100,
        );

        let google = r.top(Some(Provider::Google), 5, 100, 5);
        assert_eq!(google.len(), 1);
        assert_eq!(
            (google[0].error.as_str(), google[0].count),
            ("user unknown", 3)
        );
        let global = r.top(None, 5, 100, 2);
        assert_eq!(global[0].count, 3);
        assert_eq!(global.len(), 2, "truncated to n");
        let microsoft = r.top(Some(Provider::Microsoft), 5, 100, 5);
        assert_eq!(
            microsoft
                .iter()
                .map(|r| r.event.as_str())
                .collect::<Vec<_>>(),
            vec!["blocked", "bounce"]
        );
    }

    #[test]
    fn free_text_reasons_are_capped() {
        let mut r = Reasons::default();
        for i in 0..MAX_REASONS + 50 {
            r.record(
                &bounce("recipient", &format!("odd reason {i}")),
                Provider::Other,
                100,
                100,
            );
        }
        let all = r.top(None, 5, 100, usize::MAX);
        assert_eq!(all.len(), MAX_REASONS + 1);
        let other = all.iter().find(|x| x.category == "other").unwrap();
        assert_eq!(other.count, 50);
    }

    #[test]
    fn survives_a_snapshot_round_trip() {
        let mut r = Reasons::default();
        r.record(&bounce("domain", "no mail host"), Provider::Yahoo, 100, 100);
        let mut back: Reasons = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        back.reindex();
        back.record(&bounce("domain", "no mail host"), Provider::Yahoo, 100, 100);
        assert_eq!(back.top(Some(Provider::Yahoo), 5, 100, 5)[0].count, 2);
        assert_eq!(back.series.len(), 2, "no duplicate series after restore");
    }
}
