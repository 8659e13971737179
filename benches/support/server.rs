//! Shared by the reference servers of `scripts/bench-ingest`: they serve connections and stop
//! the way `bouncewatch serve` does (its connection layer, `bouncewatch::http::serve`, with the
//! default limits), so that the only difference between the runs is the handler's own work.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

/// Serves `app` on `listen` like `bouncewatch serve` does, until SIGTERM or Ctrl-C.
pub async fn serve_like_bouncewatch(
    listen: SocketAddr,
    app: axum::Router,
    name: &str,
) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("{name} cannot listen on {listen}: is the port in use?"))?;
    listener.set_nonblocking(true)?;
    eprintln!("{name} listening on {}", listener.local_addr()?);
    let limits = bouncewatch::http::ServerConfig::default().limits();
    let metrics = Arc::new(bouncewatch::metrics::Metrics::default());
    bouncewatch::http::serve(listener, app, None, stop_signal(), &limits, metrics)
        .await
        .with_context(|| format!("the {name} HTTP server failed"))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
