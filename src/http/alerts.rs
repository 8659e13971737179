//! The alert API: `GET /api/v1/alerts` (active alerts and the recent notifications with their
//! delivery state), and silences (`GET`/`POST /api/v1/silences`, `DELETE
//! /api/v1/silences/{id}`). Behind the same token as the events API. It reads and writes
//! `alerts.sqlite3` on a blocking thread; the alert loop picks silences up at its next
//! evaluation.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::api::{ApiError, bad_request, not_found, store_error};
use crate::alerts::StoredAlert;
use crate::alerts::silence::Silence;
use crate::notify::outbox::{HistoryRow, Outbox};
use crate::pipeline::Provider;

/// Notifications listed as recent history.
const HISTORY: usize = 50;

#[derive(Serialize)]
pub struct AlertsPage {
    /// Pending and firing alerts.
    active: Vec<StoredAlert>,
    /// The newest notifications, one row per channel, newest first.
    recent: Vec<HistoryRow>,
}

/// Runs `f` on the alert store, on a blocking thread.
async fn with_store<T: Send + 'static>(
    state: &AppState,
    write: bool,
    f: impl FnOnce(&Outbox) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let dir = state.server.data_dir.clone();
    tokio::task::spawn_blocking(move || {
        let store = if write {
            Outbox::open(&dir)
        } else {
            Outbox::open_read_only(&dir)
        }
        .map_err(store_error)?;
        f(&store).map_err(store_error)
    })
    .await
    .map_err(store_error)?
}

pub async fn alerts(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<AlertsPage>, ApiError> {
    state.api.check(&headers, peer)?;
    let page = with_store(&state, false, |store| {
        Ok(AlertsPage {
            active: store.load_alerts()?,
            recent: store.history(HISTORY)?,
        })
    })
    .await?;
    Ok(Json(page))
}

pub async fn silences(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Vec<Silence>>, ApiError> {
    state.api.check(&headers, peer)?;
    let now = crate::journal::now_ms();
    Ok(Json(
        with_store(&state, false, move |s| s.silences(now)).await?,
    ))
}

/// `POST /api/v1/silences`: a matcher and how long.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    rule: Option<String>,
    provider: Option<String>,
    campaign: Option<String>,
    /// An RFC 3339 time, e.g. `2026-11-28T08:00:00Z`.
    until: Option<String>,
    /// Or a duration from now, e.g. `2h`.
    #[serde(rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    comment: String,
}

/// The longest silence: anything longer is a rule that should be removed, and a duration that
/// large would not fit a time.
const MAX_SILENCE: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

pub async fn add_silence(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Silence>), ApiError> {
    state.api.check(&headers, peer)?;
    let req: NewSilence = serde_json::from_slice(&body).map_err(|e| {
        bad_request(format!(
            "the body must be JSON like {{\"rule\":\"hard-bounce-rate\",\"provider\":\"google\",\"for\":\"2h\",\"comment\":\"...\"}}: {e}"
        ))
    })?;
    let now = crate::journal::now_ms();
    // Durations are compared as `u128` before they become times: a huge `for` would overflow.
    let until_ms: u128 = match (&req.until, &req.for_) {
        (Some(t), None) => humantime::parse_rfc3339_weak(t)
            .map_err(|e| bad_request(format!("`until` {t:?} is not an RFC 3339 time: {e}")))?
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| bad_request(format!("`until` {t:?} is before 1970")))?
            .as_millis(),
        (None, Some(d)) => {
            now.max(0) as u128
                + humantime::parse_duration(d)
                    .map_err(|e| bad_request(format!("`for` {d:?} is not a duration: {e}")))?
                    .as_millis()
        }
        _ => {
            return Err(bad_request(
                "give either `until` (RFC 3339) or `for` (e.g. \"2h\")".into(),
            ));
        }
    };
    if until_ms <= now.max(0) as u128 {
        return Err(bad_request("the silence would end in the past".into()));
    }
    if until_ms > (now.max(0) as u128) + MAX_SILENCE.as_millis() {
        return Err(bad_request(
            "a silence ends within a year; to stop a rule for good, remove it from alerts.rules"
                .into(),
        ));
    }
    let until_ms = until_ms as i64;
    let provider = match req.provider.as_deref() {
        None => None,
        Some(p) => Some(Provider::parse(p).ok_or_else(|| {
            bad_request(format!(
                "`provider` {p:?} names no provider; use one of: {}",
                Provider::ALL.map(Provider::as_str).join(", ")
            ))
        })?),
    };
    let rule = req.rule.filter(|r| !r.is_empty() && r != "*");
    if let Some(r) = &rule
        && !state.alert_rules.contains(r)
    {
        // A typo would silence nothing while the caller believes the page is muted.
        return Err(bad_request(format!(
            "`rule` {r:?} names no rule; the rules are: {} (or leave `rule` out for all)",
            state.alert_rules.join(", ")
        )));
    }
    let silence = Silence {
        id: 0,
        rule,
        provider,
        campaign: req.campaign,
        until_ms,
        created_ms: now,
        comment: req.comment,
    };
    let stored = with_store(&state, true, move |s| s.add_silence(silence)).await?;
    tracing::info!(id = stored.id, rule = ?stored.rule, "silence added");
    Ok((StatusCode::CREATED, Json(stored)))
}

pub async fn delete_silence(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    state.api.check(&headers, peer)?;
    if with_store(&state, true, move |s| s.delete_silence(id)).await? {
        tracing::info!(id, "silence removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(format!("no silence with id {id}")))
    }
}
