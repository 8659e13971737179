//! The ceiling of the HTTP stack: an axum server that answers `200` to
//! `POST /webhooks/mailjet` without reading the body, parsing or journaling anything.
//!
//! `scripts/bench-ingest` runs it next to the real receiver in the same invocation, so the
//! receiver's requests/s read as a fraction of what axum + hyper + tokio can do on this machine.
//! It is built the way `bouncewatch serve` is (multi-thread runtime, the same connection layer,
//! `bouncewatch::http::serve`, graceful stop on SIGTERM), so the only difference between the two runs is the receiver's own work.
//!
//! The listen address comes from `BARE_LISTEN` (default `127.0.0.1:18081`).

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;

#[path = "support/server.rs"]
mod support;

const DEFAULT_LISTEN: &str = "127.0.0.1:18081";

fn main() -> anyhow::Result<()> {
    let listen = std::env::var("BARE_LISTEN").unwrap_or_else(|_| DEFAULT_LISTEN.to_string());
    let listen: SocketAddr = listen.parse().with_context(|| {
        format!("BARE_LISTEN `{listen}` is not an address: use e.g. {DEFAULT_LISTEN}")
    })?;
    // Same runtime as `bouncewatch serve`: one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(listen))
}

async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    // The handler takes no extractor, so the request body is never read: only hyper's own
    // handling of an unread body remains, which is the floor any receiver pays.
    let app = Router::new().route("/webhooks/mailjet", post(|| async { StatusCode::OK }));
    support::serve_like_bouncewatch(listen, app, "bare_axum").await
}
