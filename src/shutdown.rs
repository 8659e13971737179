//! The shutdown signal: SIGTERM or SIGINT (Ctrl-C) starts a graceful stop.
//!
//! A graceful stop means: stop accepting connections, let every in-flight request finish (each
//! waits for its commit and gets its real answer), commit what is queued, then exit. Connections
//! still open `server.shutdown_grace` after the signal (a client stalled mid-request) are
//! closed rather than waited for. `kill -9`
//! skips all of this, and the journal's durability alone keeps acknowledged events safe.

/// Resolves when the process is asked to stop.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received: shutting down gracefully"),
        _ = term => tracing::info!("SIGTERM received: shutting down gracefully"),
    }
}
