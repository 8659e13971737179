//! `POST /webhooks/mailjet[/{event}]`: the receiver.
//!
//! Order matters here. Credentials are checked before the body is read, so a refused body is
//! never stored. The size limit is enforced while reading, so a 32 MiB+ body is refused without
//! being buffered. Only then is the body parsed, journaled, and answered: `200` strictly after
//! the commit.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::AppState;
use crate::event::{BodyItem, SplitBody, split_body};
use crate::journal::{Append, JournalError, NewEvent, NewQuarantine, now_ms};
use crate::metrics::Unavailable;

/// What the receiver tells the sender. Mailjet ignores it; people running `curl` read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Receipt {
    stored: usize,
    duplicates: usize,
    quarantined: usize,
}

impl Receipt {
    /// The receipt as a JSON response. Three integers are written by hand: serde's serializer
    /// and axum's `Json` were a twentieth of a request's instructions. One stored event, the
    /// answer to nearly every Version 1 request, is a constant that is not even formatted.
    fn into_response(self, status: StatusCode) -> Response {
        const ONE_STORED: &str = r#"{"stored":1,"duplicates":0,"quarantined":0}"#;
        let body = if self
            == (Receipt {
                stored: 1,
                duplicates: 0,
                quarantined: 0,
            }) {
            Body::from(ONE_STORED)
        } else {
            Body::from(format!(
                r#"{{"stored":{},"duplicates":{},"quarantined":{}}}"#,
                self.stored, self.duplicates, self.quarantined
            ))
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

pub async fn receive(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let response = handle(&state, request).await;
    state
        .metrics
        .request(response.status().as_u16(), started.elapsed());
    response
}

async fn handle(state: &AppState, request: Request) -> Response {
    let received_at_ms = now_ms();
    let (parts, body) = request.into_parts();
    if !state.webhook.admits(&parts.headers, parts.uri.query()) {
        state.metrics.unauthorized();
        tracing::warn!(path = %parts.uri.path(), "webhook request refused: wrong or missing credential");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"bouncewatch\"")],
            "unauthorized: this webhook needs the Basic credentials or token configured in bouncewatch\n",
        )
            .into_response();
    }
    let limit = state.server.max_body.0 as usize;
    let deadline = state.server.body_timeout.0;
    let read = match tokio::time::timeout(deadline, read_limited(body, &parts.headers, limit)).await
    {
        Ok(read) => read,
        Err(_) => {
            // A client stalled halfway through its body would hold its connection, and the
            // part already sent, for as long as it likes.
            tracing::warn!(
                ?deadline,
                "webhook body not received within server.body_timeout"
            );
            return (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within server.body_timeout ({}); nothing stored\n",
                    state.server.body_timeout
                ),
            )
                .into_response();
        }
    };
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(response) => {
            if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
                state.metrics.too_large();
                tracing::warn!(limit, "webhook body refused: larger than server.max_body");
            }
            return response;
        }
    };

    let mut append = Append::default();
    match split_body(&bytes) {
        SplitBody::Empty => {
            state.metrics.empty_body();
            return (
                StatusCode::OK,
                "ok: empty body (test button), nothing stored\n",
            )
                .into_response();
        }
        SplitBody::Invalid(reason) => {
            append
                .quarantine
                .push(quarantine(state, &reason, &parts, &bytes, received_at_ms));
        }
        SplitBody::Items(items) => {
            append.events.reserve(items.len());
            for item in items {
                match item {
                    BodyItem::Event {
                        kind,
                        dedup_key,
                        raw,
                        brief,
                    } => {
                        // `raw` is a slice of `bytes`: keep its position, not a copy.
                        let start = raw.as_ptr() as usize - bytes.as_ptr() as usize;
                        append.events.push(NewEvent {
                            range: start..start + raw.len(),
                            dedup_key,
                            received_at_ms,
                            kind,
                            brief,
                        });
                    }
                    BodyItem::Invalid { raw, reason } => {
                        append.quarantine.push(quarantine(
                            state,
                            &reason,
                            &parts,
                            raw.as_bytes(),
                            received_at_ms,
                        ));
                    }
                }
            }
        }
    }
    if append.events.is_empty() && append.quarantine.is_empty() {
        // `[]`: an empty batch, counted with the empty bodies.
        state.metrics.empty_body();
        return Receipt {
            stored: 0,
            duplicates: 0,
            quarantined: 0,
        }
        .into_response(StatusCode::OK);
    }
    append.body = bytes;

    let quarantined = append.quarantine.len();
    match state.journal.append(append).await {
        // The writer has counted the stored events, duplicates and quarantined bodies.
        Ok(outcome) => {
            let receipt = Receipt {
                stored: outcome.stored,
                duplicates: outcome.duplicates,
                quarantined,
            };
            let status = if quarantined > 0 && state.server.invalid_body_status == 400 {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            receipt.into_response(status)
        }
        Err(e) => unavailable(state, e),
    }
}

/// Builds the quarantine row for `bytes`, cut to the configured size. The route and the
/// content type are copied from `parts` here, not for every request.
fn quarantine(
    state: &AppState,
    reason: &str,
    parts: &Parts,
    bytes: &[u8],
    received_at_ms: i64,
) -> NewQuarantine {
    let route = parts.uri.path();
    tracing::warn!(%route, reason, len = bytes.len(), "webhook body quarantined");
    let keep = bytes.len().min(state.quarantine_max_body);
    NewQuarantine {
        reason: reason.to_string(),
        route: route.to_string(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: bytes[..keep].to_vec(),
        original_len: bytes.len(),
        received_at_ms,
    }
}

/// Answers 503 with a `Retry-After`, so Mailjet retries instead of losing the events.
fn unavailable(state: &AppState, e: JournalError) -> Response {
    let (why, retry_after) = match &e {
        JournalError::QueueFull { .. } => (Unavailable::QueueFull, state.server.retry_after_secs),
        JournalError::Closed => (Unavailable::Closed, state.server.retry_after_secs),
        _ => (Unavailable::Storage, 30),
    };
    state.metrics.unavailable(why);
    if why != Unavailable::QueueFull {
        tracing::error!(error = %e, "webhook answered 503: events not stored");
    }
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("unavailable: {e}; retry later\n"),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// Reads the body up to `limit` bytes; a declared or actual larger body is a 413.
async fn read_limited(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<bytes::Bytes, Response> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than the configured limit of {limit} bytes (server.max_body)\n"),
        )
            .into_response()
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => {
            // Most often the client went away halfway through: nobody reads this answer, so
            // the log line is the trace (and Mailjet retries what it did not finish sending).
            tracing::warn!(error = %e, "webhook body could not be read; nothing stored");
            Err((
                StatusCode::BAD_REQUEST,
                format!("could not read the body: {e}\n"),
            )
                .into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn json_of(receipt: Receipt) -> (StatusCode, Option<HeaderValue>, serde_json::Value) {
        let response = receipt.into_response(StatusCode::OK);
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_receipt_is_json_with_its_three_counts() {
        for (stored, duplicates, quarantined) in [(1, 0, 0), (0, 1, 0), (98, 1, 1), (0, 0, 0)] {
            let receipt = Receipt {
                stored,
                duplicates,
                quarantined,
            };
            let (status, content_type, json) = json_of(receipt).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(content_type.unwrap(), "application/json");
            assert_eq!(
                json,
                serde_json::json!({
                    "stored": stored,
                    "duplicates": duplicates,
                    "quarantined": quarantined,
                }),
                "{receipt:?}"
            );
        }
    }
}
