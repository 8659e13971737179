//! The HTTP edge: the Mailjet webhook receiver, the read API, health and `/metrics`.
//!
//! The promise of the receiver: a request is answered `200` only after every event in it is
//! committed to the journal (or was already there). A full queue or a failing disk answers
//! `503` so that Mailjet retries; a body that is not events is quarantined, never dropped.

mod alerts;
mod api;
mod auth;
mod health;
mod serve;
mod stats;
mod tls;
mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::config::units::{DurationText, SizeText};
use crate::journal::Journal;
use crate::metrics::Metrics;

pub use api::{ApiAuth, ApiConfig};
pub use auth::{WebhookAuth, WebhookConfig};
pub use tls::TlsConfig;

/// `[server]` in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on. Loopback unless webhook credentials are configured.
    pub listen: String,
    /// Where the journal lives.
    pub data_dir: PathBuf,
    /// Bodies above this get `413`. Mailjet's v2 batches can be hundreds of KiB.
    pub max_body: SizeText,
    /// The answer to a body that is not events, after it is quarantined: `200` (Mailjet stops
    /// retrying) or `400` (it retries, and each retry is quarantined again).
    pub invalid_body_status: u16,
    /// `Retry-After` seconds sent with a `503` when the writer queue is full.
    pub retry_after_secs: u32,
    /// How long a graceful stop waits for open connections. A request in flight takes
    /// milliseconds; a client stalled halfway through its request would otherwise hold the stop
    /// for as long as it likes. What is queued is committed and answered either way.
    pub shutdown_grace: DurationText,
    /// Open connections at most. Past this, new ones are closed on arrival and counted, so that
    /// idle or stalled clients cannot use up the process's file descriptors.
    pub max_connections: usize,
    /// How long a request's headers may take to arrive.
    pub header_timeout: DurationText,
    /// How long a webhook body may take to arrive; past it, `408`. Mailjet retries.
    pub body_timeout: DurationText,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./bouncewatch-data"),
            max_body: SizeText(32 << 20),
            invalid_body_status: 200,
            retry_after_secs: 5,
            shutdown_grace: DurationText::from_secs(10),
            max_connections: 4096,
            header_timeout: DurationText::from_secs(30),
            body_timeout: DurationText::from_secs(60),
        }
    }
}

impl ServerConfig {
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| ConfigError::Invalid {
            key: "server.listen",
            message: format!(
                "`{}` is not an address:port ({e}); write e.g. \"127.0.0.1:8080\"",
                self.listen
            ),
        })
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if !matches!(self.invalid_body_status, 200 | 400) {
            return Err(ConfigError::Invalid {
                key: "server.invalid_body_status",
                message: format!(
                    "{} is not allowed: use 200 or 400",
                    self.invalid_body_status
                ),
            });
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "server.max_connections",
                message: "must be at least 1".into(),
            });
        }
        for (key, value) in [
            ("server.header_timeout", &self.header_timeout),
            ("server.body_timeout", &self.body_timeout),
        ] {
            if value.0.is_zero() {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be longer than zero; write e.g. \"30s\"".into(),
                });
            }
        }
        if self.max_body.0 == 0 {
            return Err(ConfigError::Invalid {
                key: "server.max_body",
                message: "must be larger than zero".into(),
            });
        }
        Ok(())
    }
}

/// What every handler shares.
pub struct AppState {
    pub journal: Journal,
    pub metrics: Arc<Metrics>,
    pub server: ServerConfig,
    pub webhook: auth::WebhookAuth,
    pub api: api::ApiAuth,
    pub quarantine_max_body: usize,
    pub pipeline: PipelineView,
    /// The first configured window: what `/api/v1/stats` shows without `window=`.
    pub default_window_minutes: u32,
    /// The longest configured window: how far back buckets go, so the longest `window=`.
    pub longest_window_minutes: u32,
    /// The alert rules' names, so that a silence names one that exists.
    pub alert_rules: Vec<String>,
}

/// What the HTTP layer sees of the pipeline: its counts, and a way to wake it.
pub struct PipelineView {
    pub shared: Arc<crate::pipeline::Shared>,
    pub waker: std::thread::Thread,
}

/// Builds the router with every route.
/// Any other path: `404`, counted with the receiver's answers, so that a callback URL
/// registered wrong shows in `bouncewatch_receiver_requests_total{status="404"}` instead of
/// leaving no trace.
async fn not_found(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    uri: axum::http::Uri,
) -> (axum::http::StatusCode, String) {
    state.metrics.answered(404);
    tracing::debug!(path = %uri.path(), "request to an unknown path");
    (
        axum::http::StatusCode::NOT_FOUND,
        format!(
            "no such path: {}; Mailjet posts to /webhooks/mailjet\n",
            uri.path()
        ),
    )
}

/// A path we serve, with a method it does not take (a `GET` on the webhook URL, typed into a
/// browser or sent by an uptime check): `405` with `Allow`, counted like the `404`s.
async fn wrong_method(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> (axum::http::StatusCode, String) {
    state.metrics.answered(405);
    tracing::debug!(%method, path = %uri.path(), "request with a method the path does not take");
    let hint = if uri.path().starts_with("/webhooks/") {
        "; Mailjet posts its events here with POST"
    } else {
        ""
    };
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not served on {}{hint}\n", uri.path()),
    )
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/webhooks/mailjet", post(webhook::receive))
        // A trailing slash is an easy slip when registering the URL in Mailjet.
        .route("/webhooks/mailjet/", post(webhook::receive))
        .route("/webhooks/mailjet/{event}", post(webhook::receive))
        .route("/api/v1/events", get(api::events))
        .route("/api/v1/quarantine", get(api::quarantine))
        .route("/api/v1/stats", get(stats::stats))
        .route("/api/v1/alerts", get(alerts::alerts))
        .route(
            "/api/v1/silences",
            get(alerts::silences).post(alerts::add_silence),
        )
        .route("/api/v1/silences/{id}", delete(alerts::delete_silence))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .method_not_allowed_fallback(wrong_method)
        .fallback(not_found)
        // No `DefaultBodyLimit` layer: the receiver takes the raw request and enforces
        // `server.max_body` itself, so that a 413 is counted, and the silences API keeps axum's
        // 2 MB default. A layer over every route cost each webhook request six allocations.
        .with_state(state)
}

pub use serve::{Limits, ensure_open_files, serve};
pub use tls::load as load_tls;

impl ServerConfig {
    /// What bounds the connections (see `serve.rs`).
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            header_timeout: self.header_timeout.0,
            shutdown_grace: self.shutdown_grace.0,
        }
    }
}
