//! `/healthz` (the process answers), `/readyz` (the journal commits), `/metrics` (counters).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready only if a real write commits right now: a full or read-only disk makes this 503.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.journal.probe().await {
        Ok(()) => (StatusCode::OK, "ready: the journal commits\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
