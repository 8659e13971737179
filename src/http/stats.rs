//! `GET /api/v1/stats`: the windows' counts and rates, per key of one scope.
//!
//! Every rate comes with its numerator and denominator, because 2/40 and 200/4000 are both 5 %
//! and mean very different things. A key without `sent` events says so (`has_sends: false`)
//! instead of showing a 100 % bounce rate. Global and provider keys list their top bounce and
//! block reasons. Behind the same token as the events API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use serde::Serialize;

use super::AppState;
use super::api::{ApiError, bad_request, params};
use crate::pipeline::Provider;
use crate::windows::{Counts, Key, Rate, RateKind, ReasonCount, Scope};

#[derive(Serialize)]
pub struct StatsPage {
    scope: Scope,
    /// The window, in minutes.
    window_minutes: u32,
    /// The clock the window ends at, Unix seconds.
    now: i64,
    /// The last journal `seq` counted.
    seq: i64,
    /// Receipt time minus event time of the events received in the window (an hour at most):
    /// long delays mean Mailjet held events back and retried. Absent without events.
    #[serde(skip_serializing_if = "Option::is_none")]
    event_delay: Option<crate::metrics::DelaySummary>,
    keys: Vec<KeyStats>,
}

#[derive(Serialize)]
struct KeyStats {
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<Provider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    campaign: Option<String>,
    counts: Counts,
    /// Without `sent` events the rates mean nothing: check that Mailjet sends them.
    has_sends: bool,
    rates: Vec<RateStats>,
    /// The most frequent bounce and block reasons, for the global and provider scopes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    top_reasons: Vec<ReasonCount>,
}

/// How many reasons each key lists.
const TOP_REASONS: usize = 5;

#[derive(Serialize)]
struct RateStats {
    rate: RateKind,
    numerator: u64,
    denominator: u64,
    value: Option<f64>,
}

impl RateStats {
    fn new(rate: RateKind, r: Rate) -> RateStats {
        RateStats {
            rate,
            numerator: r.numerator,
            denominator: r.denominator,
            value: r.value(),
        }
    }
}

pub async fn stats(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<StatsPage>, ApiError> {
    state.api.check(&headers, peer)?;
    let mut scope = Scope::Global;
    let mut window_minutes = state.default_window_minutes;
    let (mut campaign, mut provider) = (None, None);
    for (k, v) in params(
        query.as_deref(),
        &["scope", "campaign", "provider", "window"],
    )? {
        match k.as_str() {
            "scope" => {
                scope =
                    serde_json::from_value(serde_json::Value::String(v.clone())).map_err(|_| {
                        bad_request(format!(
                            "`scope={v}`: use global, provider, campaign or campaign_provider"
                        ))
                    })?
            }
            "campaign" => campaign = Some(v),
            "provider" => {
                provider = Some(Provider::parse(&v).ok_or_else(|| {
                    bad_request(format!(
                        "`provider={v}` names no provider; use one of: {}",
                        Provider::ALL.map(Provider::as_str).join(", ")
                    ))
                })?)
            }
            _ => {
                let d = humantime::parse_duration(&v)
                    .map_err(|e| bad_request(format!("`window={v}` is not a duration ({e})")))?;
                if d.as_secs() < 60 || d.as_secs() % 60 != 0 {
                    return Err(bad_request(format!(
                        "`window={v}` must be a whole number of minutes"
                    )));
                }
                let longest = state.longest_window_minutes;
                if d.as_secs() / 60 > u64::from(longest) {
                    // Older buckets are gone: a longer window would silently count less.
                    return Err(bad_request(format!(
                        "`window={v}` is longer than the longest configured window ({}); \
                         see windows.windows",
                        humantime::format_duration(std::time::Duration::from_secs(
                            u64::from(longest) * 60
                        ))
                    )));
                }
                window_minutes = (d.as_secs() / 60) as u32;
            }
        }
    }

    // A filter the scope has no field for would answer an empty list, as if nothing matched.
    let has = |field| {
        matches!(
            (scope, field),
            (Scope::Provider, "provider")
                | (Scope::Campaign, "campaign")
                | (Scope::CampaignProvider, _)
        )
    };
    for (field, given) in [
        ("provider", provider.is_some()),
        ("campaign", campaign.is_some()),
    ] {
        if given && !has(field) {
            return Err(bad_request(format!(
                "`{field}` filters scope={field} or scope=campaign_provider, not this scope"
            )));
        }
    }

    // Read your writes: the counts include everything committed before this request.
    state
        .journal
        .wait_for(&state.pipeline.shared.seq, &state.pipeline.waker)
        .await;

    let now = crate::journal::now_ms() / 1000;
    let windows = state
        .pipeline
        .shared
        .windows
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut keys: Vec<(Key, Counts)> = windows
        .keys(scope)
        .filter(|key| matches(key, campaign.as_deref(), provider))
        .map(|key| {
            let counts = windows.counts(&key, window_minutes, now);
            (key, counts)
        })
        .filter(|(_, counts)| counts.total() > 0)
        .collect();
    keys.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then_with(|| a.0.cmp(&b.0)));
    let keys = keys
        .into_iter()
        .map(|(key, counts)| {
            let (provider, campaign) = match &key {
                Key::Global => (None, None),
                Key::Provider(p) => (Some(*p), None),
                Key::Campaign(c) => (None, Some(c.to_string())),
                Key::CampaignProvider(c, p) => (Some(*p), Some(c.to_string())),
            };
            let top_reasons = windows.top_reasons(&key, window_minutes, now, TOP_REASONS);
            KeyStats {
                provider,
                campaign,
                top_reasons,
                counts,
                has_sends: counts.has_sends(),
                rates: counts
                    .rates()
                    .into_iter()
                    .map(|(k, r)| RateStats::new(k, r))
                    .collect(),
            }
        })
        .collect();
    Ok(Json(StatsPage {
        scope,
        window_minutes,
        now,
        seq: state.pipeline.shared.seq.load(Ordering::Acquire),
        event_delay: state.metrics.event_delay_summary(window_minutes),
        keys,
    }))
}

fn matches(key: &Key, campaign: Option<&str>, provider: Option<Provider>) -> bool {
    let (p, c) = match key {
        Key::Global => (None, None),
        Key::Provider(p) => (Some(*p), None),
        Key::Campaign(c) => (None, Some(c)),
        Key::CampaignProvider(c, p) => (Some(*p), Some(c)),
    };
    provider.is_none_or(|want| p == Some(want))
        && campaign.is_none_or(|want| c.is_some_and(|c| c.to_string() == want))
}
