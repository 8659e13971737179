//! The read API: `GET /api/v1/events` and `GET /api/v1/quarantine`.
//!
//! These answers expose recipients' addresses, so they sit behind their own bearer token
//! (`BOUNCEWATCH_API_TOKEN`), separate from the webhook's credentials. With no token configured
//! they answer only to loopback peers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::constant_time_eq;
use crate::journal::{EventFilter, EventPage, JournalError, QuarantineFilter, QuarantinePage};

/// `[api]` in the config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer token for the read API; set it with `BOUNCEWATCH_API_TOKEN`.
    pub token: String,
}

/// The API's access rule in checkable form.
pub struct ApiAuth {
    expected: Option<Vec<u8>>,
}

impl ApiAuth {
    pub fn new(config: &ApiConfig) -> ApiAuth {
        ApiAuth {
            expected: (!config.token.is_empty()).then(|| config.token.clone().into_bytes()),
        }
    }

    pub(super) fn check(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<(), ApiError> {
        match &self.expected {
            Some(expected) => {
                // The scheme is case-insensitive (RFC 9110), the token is not.
                let given = headers
                    .get(header::AUTHORIZATION)
                    .map(|v| v.as_bytes())
                    .and_then(|v| {
                        let (scheme, token) = v.split_at(v.len().min(7));
                        scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
                    })
                    .unwrap_or(b"");
                if constant_time_eq(expected, given) {
                    Ok(())
                } else {
                    Err(ApiError {
                        status: StatusCode::UNAUTHORIZED,
                        message: "send Authorization: Bearer <BOUNCEWATCH_API_TOKEN>".into(),
                        challenge: Some("Bearer"),
                    })
                }
            }
            // `::ffff:127.0.0.1` is an IPv4 loopback client on a dual-stack listener.
            None if peer.ip().to_canonical().is_loopback() => Ok(()),
            None => Err(ApiError {
                status: StatusCode::FORBIDDEN,
                message: "without BOUNCEWATCH_API_TOKEN the API answers only on loopback".into(),
                challenge: None,
            }),
        }
    }
}

/// An API refusal: a status and a message that says what to change.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    challenge: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

pub(super) fn not_found(message: String) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message,
        challenge: None,
    }
}

/// The alert store failed; the message names it.
pub(super) fn store_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "alert store query failed");
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!("the alert store (alerts.sqlite3) failed: {e}"),
        challenge: None,
    }
}

pub(super) fn bad_request(message: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        message,
        challenge: None,
    }
}

impl From<JournalError> for ApiError {
    fn from(e: JournalError) -> ApiError {
        tracing::error!(error = %e, "API query failed");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: e.to_string(),
            challenge: None,
        }
    }
}

/// Parses the query string into `(key, value)` pairs, refusing keys the endpoint does not know,
/// so a typo (`mesage_id=`) is an error instead of a silently unfiltered list.
pub(super) fn params(
    query: Option<&str>,
    known: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(bad_request(format!(
            "unknown parameter `{k}`; known: {}",
            known.join(", ")
        )));
    }
    Ok(pairs)
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ApiError> {
    value
        .parse()
        .map_err(|_| bad_request(format!("`{key}={value}` is not a whole number")))
}

/// Unix seconds or RFC 3339 (`2026-11-27T04:00:00Z`, `2026-11-27T05:00:00+01:00`).
fn instant(key: &str, value: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = value.parse::<i64>() {
        return Ok(secs);
    }
    rfc3339_secs(value).ok_or_else(|| {
        bad_request(format!(
            "`{key}={value}` is neither Unix seconds nor RFC 3339"
        ))
    })
}

/// An RFC 3339 time with any UTC offset, in Unix seconds. humantime reads only `Z` (and
/// `+00:00`): the offset is taken off here and applied after.
fn rfc3339_secs(value: &str) -> Option<i64> {
    let value = value.trim();
    let at = |t: &str| {
        humantime::parse_rfc3339_weak(t)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
    };
    let Some(date_and_time) = value.find(['T', 't', ' ']) else {
        return at(value);
    };
    let Some(zone) = value[date_and_time..]
        .rfind(['+', '-'])
        .map(|z| z + date_and_time)
    else {
        return at(value); // `Z`
    };
    let Some((hours, minutes)) = value[zone + 1..].split_once(':') else {
        return at(value);
    };
    let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    let offset = (hours * 60 + minutes) * 60;
    let local = at(&format!("{}Z", &value[..zone]))?;
    Some(if &value[zone..=zone] == "+" {
        local - offset
    } else {
        local + offset
    })
}

const DEFAULT_LIMIT: usize = 100;

/// A page size from 1 to [`crate::journal::MAX_LIMIT`]; anything else is said, not changed.
fn limit(key: &str, value: &str) -> Result<usize, ApiError> {
    let n: usize = number(key, value)?;
    let max = crate::journal::MAX_LIMIT;
    if !(1..=max).contains(&n) {
        return Err(bad_request(format!("`{key}={value}` must be 1 to {max}")));
    }
    Ok(n)
}

pub async fn events(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<EventPage>, ApiError> {
    state.api.check(&headers, peer)?;
    let known = [
        "email",
        "message_id",
        "campaign",
        "event",
        "custom_id",
        "since",
        "until",
        "limit",
        "cursor",
    ];
    let mut f = EventFilter {
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    for (k, v) in params(query.as_deref(), &known)? {
        match k.as_str() {
            "email" => f.email = Some(v),
            "message_id" => f.message_id = Some(number(&k, &v)?),
            "campaign" => f.campaign = Some(v),
            "event" => f.event = Some(v),
            "custom_id" => f.custom_id = Some(v),
            "since" => f.since = Some(instant(&k, &v)?),
            "until" => f.until = Some(instant(&k, &v)?),
            "limit" => f.limit = limit(&k, &v)?,
            _ => f.before = Some(number(&k, &v)?),
        }
    }
    Ok(Json(state.journal.events(f).await?))
}

pub async fn quarantine(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<QuarantinePage>, ApiError> {
    state.api.check(&headers, peer)?;
    let mut f = QuarantineFilter {
        limit: DEFAULT_LIMIT,
        before: None,
    };
    for (k, v) in params(query.as_deref(), &["limit", "cursor"])? {
        match k.as_str() {
            "limit" => f.limit = limit(&k, &v)?,
            _ => f.before = Some(number(&k, &v)?),
        }
    }
    Ok(Json(state.journal.quarantined(f).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn peer(ip: &str) -> SocketAddr {
        format!("{ip}:40000").parse().unwrap()
    }

    #[test]
    fn without_a_token_only_loopback_peers_are_served() {
        let open = ApiAuth::new(&ApiConfig::default());
        assert!(open.check(&HeaderMap::new(), peer("127.0.0.1")).is_ok());
        assert!(open.check(&HeaderMap::new(), peer("[::1]")).is_ok());
        // An IPv4 client on a dual-stack listener.
        assert!(
            open.check(&HeaderMap::new(), peer("[::ffff:127.0.0.1]"))
                .is_ok()
        );
        assert!(
            open.check(&HeaderMap::new(), peer("[::ffff:192.0.2.7]"))
                .is_err()
        );
        let refused = open
            .check(&HeaderMap::new(), peer("192.0.2.7"))
            .unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn with_a_token_every_peer_needs_it() {
        let auth = ApiAuth::new(&ApiConfig {
            token: "s3cret".into(),
        });
        let mut good = HeaderMap::new();
        good.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(auth.check(&good, peer("192.0.2.7")).is_ok());
        let missing = auth
            .check(&HeaderMap::new(), peer("127.0.0.1"))
            .unwrap_err();
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        assert_eq!(missing.challenge, Some("Bearer"));
        let mut wrong = HeaderMap::new();
        wrong.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cre"),
        );
        assert!(auth.check(&wrong, peer("127.0.0.1")).is_err());
        // The scheme in any case; the token exactly.
        for (value, ok) in [
            ("bearer s3cret", true),
            ("BEARER s3cret", true),
            ("Bearer S3CRET", false),
            ("Basic s3cret", false),
            ("s3cret", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(auth.check(&h, peer("192.0.2.7")).is_ok(), ok, "{value}");
        }
    }

    /// RFC 3339 with any offset, not only `Z`.
    #[test]
    fn times_take_any_utc_offset() {
        let z = instant("since", "2023-11-14T22:13:20Z").unwrap();
        assert_eq!(z, 1_700_000_000);
        assert_eq!(instant("since", "2023-11-14T23:13:20+01:00").unwrap(), z);
        assert_eq!(instant("since", "2023-11-14T17:13:20-05:00").unwrap(), z);
        assert_eq!(instant("since", "2023-11-14T22:13:20+00:00").unwrap(), z);
        assert_eq!(instant("since", "1700000000").unwrap(), z);
        assert!(instant("since", "2023-11-14T22:13:20+25:00").is_err());
        assert!(instant("since", "yesterday").is_err());
    }

    /// A page size out of range is a 400 naming it, not silently changed.
    #[test]
    fn a_limit_out_of_range_is_refused() {
        assert_eq!(limit("limit", "1").unwrap(), 1);
        assert_eq!(limit("limit", "1000").unwrap(), 1000);
        for bad in ["0", "1001", "-1", "abc"] {
            let e = limit("limit", bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains("limit"), "{}", e.message);
        }
    }
}
