//! `bouncewatch_events_total{event, provider, campaign}` with a bounded campaign label.
//!
//! Campaign ids grow without end, and a series per campaign would grow the metrics store with
//! them. Only the top N campaigns by recent volume get their own `campaign` label; the rest
//! count under `campaign="other"`. The promise is that no exported counter ever goes backwards:
//!
//! - An event is attributed when it is counted, never re-attributed later. When a campaign
//!   joins the top N, its earlier events stay in `other`; when it leaves, its series is frozen
//!   (still exported, no longer growing) and its new events go to `other`.
//! - A frozen ("retired") campaign that comes back continues its own series.
//! - Retired series are bounded too: there are at most `2N` campaign slots, and making room
//!   drops the longest-retired series, which then disappears (a stale series, not a reset).
//!
//! The counts are restored from the pipeline's snapshot, so a restart does not reset them
//! either. The most series this can export is `events × providers × (2N + 1)`.
//!
//! - A new series is exported as 0 for a while before its count ([`CampaignCounters::hold`],
//!   `metrics.new_series_delay`). A Prometheus-style store never counts a series' first sample
//!   in `increase()`, so a series that first appeared at its count lost those events: a
//!   campaign's first bounce at a provider, all of its first minute. Seen at 0 first, the whole
//!   count is an increase.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::event::EventKind;
use crate::pipeline::Provider;
use crate::windows::CampaignKey;

const KINDS: usize = EventKind::ALL.len();
const PROVIDERS: usize = Provider::ALL.len();

/// The label of the roll-up series.
pub const OTHER: &str = "other";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SlotState {
    Free,
    Top,
    /// Left the top N at this generation; frozen until its slot is needed.
    Retired(u64),
}

/// One campaign label and its counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slot {
    campaign: Option<CampaignKey>,
    state: SlotState,
    /// `[provider][kind]`, cumulative.
    counts: Vec<[u64; KINDS]>,
    /// Series of this slot that began in this process, exported as 0 until the instant given.
    /// Rarely more than a few; expired ones are dropped at the next re-ranking.
    #[serde(skip)]
    held: Vec<(Provider, EventKind, Instant)>,
}

impl Slot {
    fn free() -> Slot {
        Slot {
            campaign: None,
            state: SlotState::Free,
            counts: vec![[0; KINDS]; PROVIDERS],
            held: Vec::new(),
        }
    }

    /// The value to export for `(provider, kind)` at `now`.
    fn exported(&self, provider: Provider, kind: EventKind, now: Instant) -> u64 {
        let n = self.counts[provider as usize][kind.index()];
        let held = self
            .held
            .iter()
            .any(|&(p, k, until)| p == provider && k == kind && now < until);
        if held { 0 } else { n }
    }
}

/// The cumulative event counters behind `bouncewatch_events_total`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CampaignCounters {
    top_n: usize,
    /// Slot 0 is `other`; slots `1..=2N` hold campaigns.
    slots: Vec<Slot>,
    /// Top and retired campaigns → their slot.
    #[serde(skip)]
    index: HashMap<CampaignKey, usize, foldhash::fast::RandomState>,
    /// Bumped by every re-ranking, to find the longest-retired slot.
    generation: u64,
    /// How long a new series is exported as 0 (`metrics.new_series_delay`).
    #[serde(skip)]
    hold: Duration,
    /// Events received before this (Unix ms) are replayed from the journal after a restart: a
    /// series they begin may already be in the store from before, at its count, and must not
    /// drop to 0 (which a store reads as a reset, and counts again).
    #[serde(skip)]
    fresh_from_ms: i64,
}

/// One exported series: `(event, provider, campaign label, value)`.
pub type Sample<'a> = (EventKind, Provider, &'a str, u64);

impl CampaignCounters {
    /// `hold`: how long a series that begins with an event received from now on is exported
    /// as 0 before its count.
    pub fn new(top_n: usize, hold: Duration) -> CampaignCounters {
        let mut c = CampaignCounters {
            top_n,
            slots: Vec::new(),
            index: HashMap::default(),
            generation: 0,
            hold,
            fresh_from_ms: crate::journal::now_ms(),
        };
        c.resize(top_n);
        c
    }

    /// Counters restored from a snapshot take the hold of the running process from `running`.
    pub fn hold_like(mut self, running: &CampaignCounters) -> CampaignCounters {
        self.hold = running.hold;
        self.fresh_from_ms = running.fresh_from_ms;
        self
    }

    /// Takes counters back from a snapshot, under the current `top_n`. A smaller N retires the
    /// excess campaigns; slots beyond the new `2N` are dropped, longest-retired first.
    pub fn restore(mut self, top_n: usize) -> CampaignCounters {
        // `CampaignKey::None` is saved as `null`, as a free slot's campaign is, and would come
        // back as no campaign at all (exported as `other`, then a new slot for the next event
        // without one). A campaign slot in use with no campaign is that key. Snapshots written
        // before this was understood may hold several: they are one series, so they merge.
        let mut none_slot: Option<usize> = None;
        for i in 1..self.slots.len() {
            if self.slots[i].state == SlotState::Free || self.slots[i].campaign.is_some() {
                continue;
            }
            match none_slot {
                None => {
                    self.slots[i].campaign = Some(CampaignKey::None);
                    none_slot = Some(i);
                }
                Some(first) => {
                    let extra = std::mem::replace(&mut self.slots[i], Slot::free());
                    if extra.state == SlotState::Top {
                        self.slots[first].state = SlotState::Top;
                    }
                    for (into, from) in self.slots[first].counts.iter_mut().zip(&extra.counts) {
                        for (a, b) in into.iter_mut().zip(from) {
                            *a += b;
                        }
                    }
                }
            }
        }
        self.index = self
            .slots
            .iter()
            .enumerate()
            .skip(1)
            .filter_map(|(i, s)| s.campaign.clone().map(|c| (c, i)))
            .collect();
        if self.slots.is_empty() {
            self.slots.push(Slot::free());
        }
        self.slots[0].campaign = None;
        self.slots[0].state = SlotState::Top;
        if top_n != self.top_n {
            // Keep the current members in rank order of their slots; the re-ranking that
            // follows a restart puts the right ones back.
            let members: Vec<CampaignKey> = self.members();
            self.top_n = top_n;
            self.rerank(members.into_iter().take(top_n).collect());
            self.resize(top_n);
        }
        self
    }

    fn resize(&mut self, top_n: usize) {
        let want = 1 + 2 * top_n;
        if self.slots.is_empty() {
            let mut other = Slot::free();
            other.state = SlotState::Top;
            self.slots.push(other);
        }
        while self.slots.len() > want {
            let victim = self
                .oldest_retired()
                .or_else(|| (self.slots.len() - 1 > 0).then(|| self.slots.len() - 1));
            let Some(victim) = victim else { break };
            self.drop_slot(victim);
            let last = self.slots.len() - 1;
            if victim != last {
                self.slots.swap(victim, last);
                if let Some(c) = &self.slots[victim].campaign {
                    self.index.insert(c.clone(), victim);
                }
            }
            self.slots.pop();
        }
        while self.slots.len() < want {
            self.slots.push(Slot::free());
        }
    }

    pub fn top_n(&self) -> usize {
        self.top_n
    }

    /// Counts one event, received at `received_at_ms`.
    pub fn count(
        &mut self,
        kind: EventKind,
        provider: Provider,
        campaign: &CampaignKey,
        received_at_ms: i64,
    ) {
        self.count_at(kind, provider, campaign, received_at_ms, Instant::now());
    }

    fn count_at(
        &mut self,
        kind: EventKind,
        provider: Provider,
        campaign: &CampaignKey,
        received_at_ms: i64,
        now: Instant,
    ) {
        let slot = match self.index.get(campaign) {
            Some(&i) if self.slots[i].state == SlotState::Top => i,
            Some(_) => 0,
            None if self.top_len() < self.top_n => self.admit(campaign.clone()),
            None => 0,
        };
        let slot = &mut self.slots[slot];
        let n = &mut slot.counts[provider as usize][kind.index()];
        if *n == 0 && !self.hold.is_zero() && received_at_ms >= self.fresh_from_ms {
            slot.held.push((provider, kind, now + self.hold));
        }
        *n += 1;
    }

    /// Sets the top N to `ranked` (best first; only the first N count). Members that left are
    /// frozen, newcomers get a slot (their own old one if they were retired).
    pub fn rerank(&mut self, ranked: Vec<CampaignKey>) {
        self.generation += 1;
        let now = Instant::now();
        for slot in &mut self.slots {
            slot.held.retain(|&(_, _, until)| now < until);
        }
        let wanted: HashMap<&CampaignKey, (), foldhash::fast::RandomState> =
            ranked.iter().take(self.top_n).map(|c| (c, ())).collect();
        for slot in self.slots.iter_mut().skip(1) {
            if slot.state == SlotState::Top
                && slot
                    .campaign
                    .as_ref()
                    .is_some_and(|c| !wanted.contains_key(c))
            {
                slot.state = SlotState::Retired(self.generation);
            }
        }
        for campaign in ranked.into_iter().take(self.top_n) {
            match self.index.get(&campaign) {
                Some(&i) => self.slots[i].state = SlotState::Top,
                None => {
                    self.admit(campaign);
                }
            }
        }
    }

    /// The campaigns that currently have their own label.
    pub fn members(&self) -> Vec<CampaignKey> {
        self.slots
            .iter()
            .filter(|s| s.state == SlotState::Top)
            .filter_map(|s| s.campaign.clone())
            .collect()
    }

    /// Every non-zero counter, for export (a new one as 0 while it is held).
    pub fn samples(&self) -> Vec<(EventKind, Provider, String, u64)> {
        self.samples_at(Instant::now())
    }

    fn samples_at(&self, now: Instant) -> Vec<(EventKind, Provider, String, u64)> {
        let mut out = Vec::new();
        for slot in &self.slots {
            let label = match (&slot.campaign, slot.state) {
                (_, SlotState::Free) => continue,
                (Some(c), _) => c.to_string(),
                (None, _) => OTHER.to_string(),
            };
            for provider in Provider::ALL {
                for kind in EventKind::ALL {
                    if slot.counts[provider as usize][kind.index()] > 0 {
                        let n = slot.exported(provider, kind, now);
                        out.push((kind, provider, label.clone(), n));
                    }
                }
            }
        }
        out
    }

    fn top_len(&self) -> usize {
        self.slots
            .iter()
            .skip(1)
            .filter(|s| s.state == SlotState::Top)
            .count()
    }

    /// Gives `campaign` a slot in the top N, freeing the longest-retired slot if none is free.
    fn admit(&mut self, campaign: CampaignKey) -> usize {
        let i = match self
            .slots
            .iter()
            .skip(1)
            .position(|s| s.state == SlotState::Free)
        {
            Some(i) => i + 1,
            None => {
                // At most N slots are top, so with 2N slots and none free, one is retired.
                let Some(i) = self.oldest_retired() else {
                    return 0;
                };
                self.drop_slot(i);
                i
            }
        };
        self.index.insert(campaign.clone(), i);
        let slot = &mut self.slots[i];
        slot.campaign = Some(campaign);
        slot.state = SlotState::Top;
        i
    }

    fn oldest_retired(&self) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .skip(1)
            .filter_map(|(i, s)| match s.state {
                SlotState::Retired(g) => Some((g, i)),
                _ => None,
            })
            .min()
            .map(|(_, i)| i)
    }

    fn drop_slot(&mut self, i: usize) {
        if let Some(c) = self.slots[i].campaign.take() {
            self.index.remove(&c);
        }
        self.slots[i] = Slot::free();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn id(n: u64) -> CampaignKey {
        CampaignKey::Id(n)
    }

    fn series(c: &CampaignCounters) -> BTreeMap<(EventKind, Provider, String), u64> {
        c.samples()
            .into_iter()
            .map(|(k, p, l, n)| ((k, p, l), n))
            .collect()
    }

    #[test]
    fn the_first_n_campaigns_are_labelled_and_the_rest_roll_up() {
        let mut c = CampaignCounters::new(2, Duration::ZERO);
        for n in 1..=3 {
            c.count(EventKind::Sent, Provider::Google, &id(n), 0);
        }
        c.count(EventKind::Bounce, Provider::Google, &id(3), 0);
        let s = series(&c);
        assert_eq!(s[&(EventKind::Sent, Provider::Google, "1".into())], 1);
        assert_eq!(s[&(EventKind::Sent, Provider::Google, "2".into())], 1);
        assert_eq!(s[&(EventKind::Sent, Provider::Google, OTHER.into())], 1);
        assert_eq!(s[&(EventKind::Bounce, Provider::Google, OTHER.into())], 1);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn leaving_the_top_freezes_a_series_and_coming_back_continues_it() {
        let mut c = CampaignCounters::new(1, Duration::ZERO);
        c.count(EventKind::Sent, Provider::Yahoo, &id(1), 0);
        c.rerank(vec![id(2)]);
        c.count(EventKind::Sent, Provider::Yahoo, &id(1), 0);
        c.count(EventKind::Sent, Provider::Yahoo, &id(2), 0);
        let s = series(&c);
        assert_eq!(s[&(EventKind::Sent, Provider::Yahoo, "1".into())], 1);
        assert_eq!(s[&(EventKind::Sent, Provider::Yahoo, OTHER.into())], 1);
        assert_eq!(s[&(EventKind::Sent, Provider::Yahoo, "2".into())], 1);
        c.rerank(vec![id(1)]);
        c.count(EventKind::Sent, Provider::Yahoo, &id(1), 0);
        assert_eq!(
            series(&c)[&(EventKind::Sent, Provider::Yahoo, "1".into())],
            2
        );
    }

    #[test]
    fn a_snapshot_round_trip_keeps_every_counter_and_membership() {
        let mut c = CampaignCounters::new(2, Duration::ZERO);
        c.count(
            EventKind::Spam,
            Provider::Microsoft,
            &CampaignKey::Name("promo".into()),
            0,
        );
        c.count(EventKind::Sent, Provider::Other, &id(7), 0);
        c.rerank(vec![id(7)]);
        let json = serde_json::to_string(&c).unwrap();
        let back: CampaignCounters = serde_json::from_str(&json).unwrap();
        let mut back = back.restore(2);
        assert_eq!(series(&back), series(&c));
        assert_eq!(back.members(), vec![id(7)]);
        back.count(EventKind::Sent, Provider::Other, &id(7), 0);
        assert_eq!(
            series(&back)[&(EventKind::Sent, Provider::Other, "7".into())],
            2
        );
    }

    /// Events without a campaign keep their own series across a restart: the key is saved as
    /// `null`, like a free slot's, and must not come back as "no campaign".
    #[test]
    fn events_without_a_campaign_keep_their_series_across_a_restart() {
        let mut c = CampaignCounters::new(2, Duration::ZERO);
        c.count(EventKind::Sent, Provider::Gmx, &CampaignKey::None, 0);
        c.count(EventKind::Sent, Provider::Gmx, &CampaignKey::None, 0);
        let none = (EventKind::Sent, Provider::Gmx, "none".to_string());
        assert_eq!(series(&c)[&none], 2);
        for _ in 0..2 {
            let json = serde_json::to_string(&c).unwrap();
            c = serde_json::from_str::<CampaignCounters>(&json)
                .unwrap()
                .restore(2);
            assert_eq!(series(&c)[&none], 2);
            assert_eq!(c.members(), vec![CampaignKey::None]);
        }
        c.count(EventKind::Sent, Provider::Gmx, &CampaignKey::None, 0);
        c.count(EventKind::Sent, Provider::Gmx, &id(5), 0);
        let s = series(&c);
        assert_eq!(s[&none], 3);
        assert_eq!(s[&(EventKind::Sent, Provider::Gmx, "5".into())], 1);
        assert!(!s.contains_key(&(EventKind::Sent, Provider::Gmx, OTHER.into())));
    }

    /// Campaign id 42 and a campaign named "42" export two series, not one overwriting the
    /// other.
    #[test]
    fn an_id_and_a_name_alike_are_two_series() {
        let mut c = CampaignCounters::new(3, Duration::ZERO);
        c.count(EventKind::Sent, Provider::Google, &id(42), 0);
        c.count(
            EventKind::Sent,
            Provider::Google,
            &CampaignKey::Name("42".into()),
            0,
        );
        c.count(
            EventKind::Sent,
            Provider::Google,
            &CampaignKey::Name("42".into()),
            0,
        );
        let s = series(&c);
        assert_eq!(s[&(EventKind::Sent, Provider::Google, "42".into())], 1);
        assert_eq!(s[&(EventKind::Sent, Provider::Google, "name:42".into())], 2);
    }

    /// A snapshot from before the fix, with the key in two slots: one series, summed.
    #[test]
    fn two_slots_without_a_campaign_in_an_old_snapshot_merge() {
        let mut c = CampaignCounters::new(3, Duration::ZERO);
        c.count(EventKind::Sent, Provider::Gmx, &id(1), 0);
        c.count(EventKind::Sent, Provider::Gmx, &id(2), 0);
        c.count(EventKind::Sent, Provider::Gmx, &id(2), 0);
        let mut json: serde_json::Value = serde_json::to_value(&c).unwrap();
        for slot in json["slots"].as_array_mut().unwrap().iter_mut().skip(1) {
            slot["campaign"] = serde_json::Value::Null;
        }
        let back = serde_json::from_value::<CampaignCounters>(json)
            .unwrap()
            .restore(3);
        let s = series(&back);
        assert_eq!(s[&(EventKind::Sent, Provider::Gmx, "none".into())], 3);
        assert_eq!(back.members(), vec![CampaignKey::None]);
    }

    /// 100,000 campaigns with shifting ranks: the series count stays within
    /// `kinds × providers × (2N + 1)`, at most `2N + 1` campaign labels exist, and no counter
    /// present in two consecutive exports ever decreases.
    #[test]
    fn a_hundred_thousand_campaigns_stay_bounded_and_never_reset() {
        const N: usize = 50;
        let mut c = CampaignCounters::new(N, Duration::ZERO);
        let mut previous = series(&c);
        let mut total = 0u64;
        for round in 0..20u64 {
            for n in 0..100_000u64 {
                // Each round favours another band of campaigns.
                let weight = if (n + round * 37) % 1000 < 3 { 3 } else { 1 };
                for _ in 0..weight {
                    let provider = Provider::ALL[(n % 15) as usize];
                    c.count(EventKind::Sent, provider, &id(n), 0);
                    total += 1;
                }
            }
            let ranked: Vec<CampaignKey> = (0..100_000u64)
                .filter(|n| (n + round * 37) % 1000 < 3)
                .map(id)
                .collect();
            c.rerank(ranked);
            let now = series(&c);
            let labels: std::collections::HashSet<&String> = now.keys().map(|k| &k.2).collect();
            assert!(labels.len() <= 2 * N + 1, "{} labels", labels.len());
            assert!(now.len() <= EventKind::ALL.len() * PROVIDERS * (2 * N + 1));
            for (key, before) in &previous {
                if let Some(after) = now.get(key) {
                    assert!(after >= before, "{key:?} went from {before} to {after}");
                }
            }
            assert_eq!(c.members().len(), N);
            previous = now;
        }
        let other: u64 = previous
            .iter()
            .filter(|(k, _)| k.2 == OTHER)
            .map(|(_, n)| n)
            .sum();
        assert!(other > total / 2, "most events roll up into other");
    }

    /// A series that begins is exported as 0 for the hold, then at its count, so a store sees
    /// it start at 0; a series already exported keeps showing its count as it grows.
    #[test]
    fn a_new_series_is_exported_as_zero_until_its_hold_ends() {
        let hold = Duration::from_secs(120);
        let mut c = CampaignCounters::new(2, hold);
        let received = crate::journal::now_ms();
        let sent = (EventKind::Sent, Provider::Google, "7".to_string());
        let bounce = (EventKind::Bounce, Provider::Google, "7".to_string());
        let at = |c: &CampaignCounters, now: Instant| -> BTreeMap<_, _> {
            c.samples_at(now)
                .into_iter()
                .map(|(k, p, l, n)| ((k, p, l), n))
                .collect()
        };
        let start = Instant::now();
        for _ in 0..150 {
            c.count_at(EventKind::Sent, Provider::Google, &id(7), received, start);
        }
        assert_eq!(at(&c, start)[&sent], 0, "held: exported, at 0");
        assert_eq!(at(&c, start + hold - Duration::from_millis(1))[&sent], 0);
        assert_eq!(at(&c, start + hold)[&sent], 150);
        // The sent series has been exported; the campaign's first bounce is a new series.
        let later = start + hold + Duration::from_secs(1);
        c.count_at(EventKind::Bounce, Provider::Google, &id(7), received, later);
        c.count_at(EventKind::Sent, Provider::Google, &id(7), received, later);
        let s = at(&c, later);
        assert_eq!(s[&bounce], 0);
        assert_eq!(s[&sent], 151);
        assert_eq!(at(&c, later + hold)[&bounce], 1);
    }

    /// After a restart the journal is replayed from the snapshot's checkpoint. A series those
    /// events begin may be in the store already at its count; held at 0 it would read as a
    /// reset and be counted twice. Events received since the start are held as usual.
    #[test]
    fn replayed_events_are_exported_at_once_and_restored_series_are_not_held() {
        let hold = Duration::from_secs(120);
        let mut before = CampaignCounters::new(2, Duration::ZERO);
        before.count(EventKind::Sent, Provider::Yahoo, &id(1), 0);
        let json = serde_json::to_string(&before).unwrap();
        let running = CampaignCounters::new(2, hold);
        let mut c = serde_json::from_str::<CampaignCounters>(&json)
            .unwrap()
            .restore(2)
            .hold_like(&running);
        let replayed = running.fresh_from_ms - 1;
        c.count(EventKind::Sent, Provider::Yahoo, &id(1), replayed);
        c.count(EventKind::Open, Provider::Yahoo, &id(1), replayed);
        c.count(
            EventKind::Click,
            Provider::Yahoo,
            &id(1),
            running.fresh_from_ms,
        );
        let s = series(&c);
        assert_eq!(s[&(EventKind::Sent, Provider::Yahoo, "1".into())], 2);
        assert_eq!(s[&(EventKind::Open, Provider::Yahoo, "1".into())], 1);
        assert_eq!(s[&(EventKind::Click, Provider::Yahoo, "1".into())], 0);
    }

    #[test]
    fn a_smaller_n_after_restart_shrinks_the_slots() {
        let mut c = CampaignCounters::new(3, Duration::ZERO);
        for n in 1..=3 {
            c.count(EventKind::Sent, Provider::Google, &id(n), 0);
        }
        let c = c.restore(1);
        assert_eq!(c.members().len(), 1);
        assert!(c.slots.len() <= 3);
    }
}
