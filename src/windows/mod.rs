//! Sliding windows: counts per event type in time buckets, for four scopes.
//!
//! Every event counts under `global`, its provider, its campaign, and campaign × provider. The
//! buckets go by **event time** (Mailjet's `time`), so retries and late complaints land in the
//! minute they happened. An event from the future (past `now + future_tolerance`) is clamped to
//! `now`; an event older than the longest window counts in the totals only, and as late.
//!
//! The clock is an argument, never read here, so the same code runs live and in backtests.
//! Memory follows activity ([`series`]), and keys idle for longer than the longest window are
//! evicted by [`Windows::evict_idle`].

pub mod campaign_reasons;
pub mod rate;
pub mod reasons;
pub mod series;

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::config::units::DurationText;
use crate::event::Brief;
use crate::pipeline::Provider;
pub use rate::{Counts, Rate, RateKind};
pub use reasons::{ReasonCount, Reasons};
use series::Series;

/// `[windows]` in the config file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WindowsConfig {
    /// The windows rates are computed over. Up to an hour they are exact to the minute.
    pub windows: Vec<DurationText>,
    /// How far ahead of the clock an event's time may be before it is clamped to now.
    pub future_tolerance: DurationText,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        WindowsConfig {
            windows: vec![
                DurationText::from_secs(5 * 60),
                DurationText::from_secs(3600),
                DurationText::from_secs(24 * 3600),
            ],
            future_tolerance: DurationText::from_secs(5 * 60),
        }
    }
}

impl WindowsConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.windows.is_empty() {
            return Err(ConfigError::Invalid {
                key: "windows.windows",
                message: "list at least one window, e.g. [\"5m\", \"1h\", \"24h\"]".into(),
            });
        }
        if let Some(w) = self
            .windows
            .iter()
            .find(|w| w.0.as_secs() < 60 || w.0.as_secs() % 60 != 0)
        {
            return Err(ConfigError::Invalid {
                key: "windows.windows",
                message: format!("{w} is not a whole number of minutes (buckets are one minute)"),
            });
        }
        Ok(())
    }

    /// The longest window, in minutes: how long buckets are kept.
    pub fn longest_minutes(&self) -> u32 {
        self.windows
            .iter()
            .map(|w| (w.0.as_secs() / 60) as u32)
            .max()
            .unwrap_or(60)
    }
}

/// The campaign an event belongs to: `mj_campaign_id`, or, when that is 0, the decoded
/// `customcampaign` name, so transactional streams tagged by name get their own series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CampaignKey {
    Id(u64),
    Name(String),
    /// Neither an id nor a name.
    None,
}

impl CampaignKey {
    pub fn of(event: &Brief) -> CampaignKey {
        if event.campaign_id != 0 {
            return CampaignKey::Id(event.campaign_id);
        }
        match event.custom_campaign_decoded().as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => CampaignKey::Name(name.to_string()),
            _ => CampaignKey::None,
        }
    }
}

/// A campaign as labels and the API show it: the id, the name, or `none`. A name that would
/// read as something else (an id, `none`, the metrics' `other`, or another such name) is shown
/// as `name:` + the name, so that two campaigns never share a label: a series exported under
/// one label by two campaigns would overwrite the other's.
impl fmt::Display for CampaignKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            CampaignKey::Id(id) => write!(f, "{id}"),
            CampaignKey::Name(name) => {
                let ambiguous = name.parse::<u64>().is_ok()
                    || name == "none"
                    || name == "other"
                    || name.starts_with("name:");
                if ambiguous {
                    write!(f, "name:{name}")
                } else {
                    f.write_str(name)
                }
            }
            CampaignKey::None => f.write_str("none"),
        }
    }
}

/// The four scopes a key can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Global,
    Provider,
    Campaign,
    CampaignProvider,
}

/// One series' identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Key {
    Global,
    Provider(Provider),
    Campaign(CampaignKey),
    CampaignProvider(CampaignKey, Provider),
}

impl Key {
    pub fn scope(&self) -> Scope {
        match self {
            Key::Global => Scope::Global,
            Key::Provider(_) => Scope::Provider,
            Key::Campaign(_) => Scope::Campaign,
            Key::CampaignProvider(..) => Scope::CampaignProvider,
        }
    }
}

/// Where an event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Counted in the windows, in its own minute.
    InWindow,
    /// Its time was ahead of the clock by more than the tolerance: counted at `now`.
    Clamped,
    /// Older than the longest window: counted in the totals only.
    Late,
    /// A placeholder from Mailjet's "send test" button: counted in no window and no total,
    /// so that testing the callback URL never moves a rate.
    Test,
}

/// How many events [`Windows::record`] placed as [`Placement::Late`], [`Placement::Clamped`]
/// and [`Placement::Test`], since the first start (they are in the snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placements {
    pub late: u64,
    pub clamped: u64,
    pub tests: u64,
}

/// The keys that live in [`Windows::fixed`], at their index: global, then each provider.
static FIXED_KEYS: [Key; 1 + Provider::ALL.len()] = [
    Key::Global,
    Key::Provider(Provider::Google),
    Key::Provider(Provider::Microsoft),
    Key::Provider(Provider::Yahoo),
    Key::Provider(Provider::Apple),
    Key::Provider(Provider::Gmx),
    Key::Provider(Provider::Orange),
    Key::Provider(Provider::Free),
    Key::Provider(Provider::Sfr),
    Key::Provider(Provider::LaPoste),
    Key::Provider(Provider::TOnline),
    Key::Provider(Provider::Comcast),
    Key::Provider(Provider::MailRu),
    Key::Provider(Provider::Yandex),
    Key::Provider(Provider::Qq),
    Key::Provider(Provider::Other),
];

/// Where a global or provider key sits in [`Windows::fixed`]; `None` for campaign keys.
fn fixed_index(key: &Key) -> Option<usize> {
    match key {
        Key::Global => Some(0),
        Key::Provider(p) => Some(1 + *p as usize),
        _ => None,
    }
}

/// One campaign's series: all its events, and per provider (a short list: a campaign reaches
/// a handful of providers, and a scan of a few entries beats a second hash lookup).
#[derive(Debug, Default)]
struct CampaignSeries {
    all: Series,
    providers: Vec<(Provider, Series)>,
    /// Its own bounce and block reasons; empty (no heap) while it has none.
    reasons: campaign_reasons::CampaignReasons,
}

impl CampaignSeries {
    fn provider(&self, p: Provider) -> Option<&Series> {
        self.providers.iter().find(|(q, _)| *q == p).map(|(_, s)| s)
    }
}

/// All series, and the all-time totals.
#[derive(Debug)]
pub struct Windows {
    /// The global and per-provider series, by [`fixed_index`]: every event updates two of
    /// them, and an array index needs no hashing. `None` until a key sees an event, and again
    /// once evicted.
    fixed: Vec<Option<Series>>,
    /// Per campaign, its series and its campaign × provider series: one hash lookup per event
    /// instead of two. foldhash, not std's SipHash: hashing is a large part of an update
    /// (measured: 1.27 → 1.42 M events/s). The keys are campaign ids and names the sender
    /// chose, so flooding resistance buys nothing here.
    campaigns: HashMap<CampaignKey, CampaignSeries, foldhash::fast::RandomState>,
    reasons: Reasons,
    longest: u32,
    tolerance_secs: i64,
    totals: Counts,
    late: u64,
    clamped: u64,
    tests: u64,
}

impl Windows {
    pub fn new(config: &WindowsConfig) -> Windows {
        Windows {
            fixed: vec![None; FIXED_KEYS.len()],
            campaigns: HashMap::default(),
            reasons: Reasons::default(),
            longest: config.longest_minutes(),
            tolerance_secs: config.future_tolerance.0.as_secs() as i64,
            totals: Counts::default(),
            late: 0,
            clamped: 0,
            tests: 0,
        }
    }

    /// Counts one event at the windows' clock `now` (Unix seconds).
    pub fn record(&mut self, event: &Brief, provider: Provider, now: i64) -> Placement {
        self.record_in(event, &CampaignKey::of(event), provider, now)
    }

    /// [`Windows::record`] for a caller that already knows the event's campaign.
    pub fn record_in(
        &mut self,
        event: &Brief,
        campaign: &CampaignKey,
        provider: Provider,
        now: i64,
    ) -> Placement {
        if event.is_mailjet_test() {
            self.tests += 1;
            return Placement::Test;
        }
        let counts = Counts::of(event);
        self.totals += counts;
        let mut time = event.time.unwrap_or(now);
        let mut placement = Placement::InWindow;
        if time > now + self.tolerance_secs {
            time = now;
            placement = Placement::Clamped;
            self.clamped += 1;
        }
        let now_minute = minute(now);
        let at = minute(time).min(now_minute);
        if at + self.longest <= now_minute {
            self.late += 1;
            return Placement::Late;
        }
        for i in [0, 1 + provider as usize] {
            self.fixed[i]
                .get_or_insert_with(Series::default)
                .add(at, now_minute, counts);
        }
        // Cloning an id costs nothing; a name costs what `CampaignKey::of` paid anyway.
        let campaign = self.campaigns.entry(campaign.clone()).or_default();
        campaign.all.add(at, now_minute, counts);
        match campaign.providers.iter_mut().find(|(p, _)| *p == provider) {
            Some((_, s)) => s.add(at, now_minute, counts),
            None => {
                let mut s = Series::default();
                s.add(at, now_minute, counts);
                // Most campaigns reach few providers: grow one at a time, not by 4.
                campaign.providers.reserve_exact(1);
                campaign.providers.push((provider, s));
            }
        }
        campaign.reasons.record(event, provider, at, now_minute);
        self.reasons.record(event, provider, at, now_minute);
        placement
    }

    /// The counts of `key` over the last `window_minutes` up to `now`.
    pub fn counts(&self, key: &Key, window_minutes: u32, now: i64) -> Counts {
        self.get(key)
            .map(|s| s.sum(minute(now), window_minutes))
            .unwrap_or_default()
    }

    fn get(&self, key: &Key) -> Option<&Series> {
        match key {
            Key::Global | Key::Provider(_) => fixed_index(key).and_then(|i| self.fixed[i].as_ref()),
            Key::Campaign(c) => self.campaigns.get(c).map(|e| &e.all),
            Key::CampaignProvider(c, p) => self.campaigns.get(c).and_then(|e| e.provider(*p)),
        }
    }

    /// Every key and its series, the fixed ones first.
    fn all(&self) -> impl Iterator<Item = (Key, &Series)> {
        let fixed = FIXED_KEYS
            .iter()
            .zip(&self.fixed)
            .filter_map(|(k, s)| s.as_ref().map(|s| (k.clone(), s)));
        let campaigns = self.campaigns.iter().flat_map(|(c, e)| {
            std::iter::once((Key::Campaign(c.clone()), &e.all)).chain(
                e.providers
                    .iter()
                    .map(move |(p, s)| (Key::CampaignProvider(c.clone(), *p), s)),
            )
        });
        fixed.chain(campaigns)
    }

    /// The most frequent bounce and block reasons of a key: globally, at a provider, in a
    /// campaign (all its providers), or in a campaign at one provider.
    pub fn top_reasons(
        &self,
        key: &Key,
        window_minutes: u32,
        now: i64,
        n: usize,
    ) -> Vec<ReasonCount> {
        let now = minute(now);
        match key {
            Key::Global => self.reasons.top(None, window_minutes, now, n),
            Key::Provider(p) => self.reasons.top(Some(*p), window_minutes, now, n),
            Key::Campaign(c) => self
                .campaigns
                .get(c)
                .map_or_else(Vec::new, |e| e.reasons.top(None, window_minutes, now, n)),
            Key::CampaignProvider(c, p) => self.campaigns.get(c).map_or_else(Vec::new, |e| {
                e.reasons.top(Some(*p), window_minutes, now, n)
            }),
        }
    }

    /// Every key of a scope.
    pub fn keys(&self, scope: Scope) -> Box<dyn Iterator<Item = Key> + '_> {
        match scope {
            Scope::Global | Scope::Provider => Box::new(
                FIXED_KEYS
                    .iter()
                    .zip(&self.fixed)
                    .filter(move |(k, s)| s.is_some() && k.scope() == scope)
                    .map(|(k, _)| k.clone()),
            ),
            Scope::Campaign => Box::new(self.campaigns.keys().cloned().map(Key::Campaign)),
            Scope::CampaignProvider => Box::new(self.campaigns.iter().flat_map(|(c, e)| {
                e.providers
                    .iter()
                    .map(move |(p, _)| Key::CampaignProvider(c.clone(), *p))
            })),
        }
    }

    /// Folds old minutes into hours, drops expired buckets, and evicts keys that saw nothing
    /// within the longest window. Returns how many keys were evicted. Call it about once a
    /// minute; its cost is one pass over the keys.
    pub fn evict_idle(&mut self, now: i64) -> usize {
        let now_minute = minute(now);
        let longest = self.longest;
        let before = self.len();
        self.reasons.evict_idle(now_minute, longest);
        let keep = |s: &mut Series| {
            s.roll(now_minute, longest);
            s.newest_minute().is_some_and(|m| m + longest > now_minute)
        };
        for slot in &mut self.fixed {
            if slot.as_mut().is_some_and(|s| !keep(s)) {
                *slot = None;
            }
        }
        self.campaigns.retain(|_, e| {
            e.providers.retain_mut(|(_, s)| keep(s));
            e.providers.shrink_to_fit();
            e.reasons.evict_idle(now_minute, longest);
            // `all` holds every event of the campaign, so it is idle only when all are.
            keep(&mut e.all)
        });
        before - self.len()
    }

    /// Every event ever recorded, late ones included.
    pub fn totals(&self) -> Counts {
        self.totals
    }

    pub fn late(&self) -> u64 {
        self.late
    }

    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// The running totals of events not simply counted in their own minute.
    pub fn placements(&self) -> Placements {
        Placements {
            late: self.late,
            clamped: self.clamped,
            tests: self.tests,
        }
    }

    pub fn len(&self) -> usize {
        self.fixed.iter().flatten().count()
            + self
                .campaigns
                .values()
                .map(|e| 1 + e.providers.len())
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything the windows hold, for a snapshot.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            series: self.all().map(|(k, s)| (k, s.clone())).collect(),
            reasons: self.reasons.clone(),
            campaign_reasons: self
                .campaigns
                .iter()
                .filter(|(_, e)| !e.reasons.is_empty())
                .map(|(c, e)| (c.clone(), e.reasons.clone()))
                .collect(),
            totals: self.totals,
            late: self.late,
            clamped: self.clamped,
            tests: self.tests,
        }
    }

    /// Windows as a snapshot left them, under the current config.
    pub fn restore(config: &WindowsConfig, snapshot: Snapshot) -> Windows {
        let mut w = Windows::new(config);
        for (key, series) in snapshot.series {
            match key {
                Key::Global | Key::Provider(_) => {
                    if let Some(i) = fixed_index(&key) {
                        w.fixed[i] = Some(series);
                    }
                }
                Key::Campaign(c) => w.campaigns.entry(c).or_default().all = series,
                Key::CampaignProvider(c, p) => w
                    .campaigns
                    .entry(c)
                    .or_default()
                    .providers
                    .push((p, series)),
            }
        }
        w.reasons = snapshot.reasons;
        w.reasons.reindex();
        for (c, reasons) in snapshot.campaign_reasons {
            if let Some(e) = w.campaigns.get_mut(&c) {
                e.reasons = reasons;
            }
        }
        w.totals = snapshot.totals;
        w.late = snapshot.late;
        w.clamped = snapshot.clamped;
        w.tests = snapshot.tests;
        w
    }

    /// Heap bytes held by the buckets (not the map itself), for the memory report.
    pub fn bucket_bytes(&self) -> usize {
        let lists: usize = self
            .campaigns
            .values()
            .map(|e| {
                e.providers.capacity() * std::mem::size_of::<(Provider, Series)>()
                    + e.reasons.heap_bytes()
            })
            .sum();
        lists + self.all().map(|(_, s)| s.heap_bytes()).sum::<usize>()
    }
}

/// The windows' full state, as the pipeline persists it beside its checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    series: Vec<(Key, Series)>,
    #[serde(default)]
    reasons: Reasons,
    /// Each campaign's own reasons; absent from snapshots written before campaigns had them.
    #[serde(default)]
    campaign_reasons: Vec<(CampaignKey, campaign_reasons::CampaignReasons)>,
    totals: Counts,
    late: u64,
    clamped: u64,
    /// Absent from snapshots written before test events were set apart.
    #[serde(default)]
    tests: u64,
}

fn minute(secs: i64) -> u32 {
    (secs.max(0) / 60).min(i64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests;
