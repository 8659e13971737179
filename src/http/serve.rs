//! The connection layer under the router: how connections are taken, timed and stopped, the
//! same for plain HTTP and in-process TLS.
//!
//! - Every connection holds one of `server.max_connections` permits. Past that, a new
//!   connection is closed at once, counted and logged: a flood of idle or stalled clients
//!   cannot use up the process's file descriptors and lock out Mailjet, `/healthz` and the
//!   journal's own files.
//! - A request's headers must arrive within `server.header_timeout`, so a client that sends
//!   them a byte at a time (before any credential is checked) gives its permit back. The
//!   receiver bounds its body read itself (`server.body_timeout`).
//! - A stop stops accepting, lets requests in flight finish for up to `server.shutdown_grace`,
//!   then closes the rest.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Open files kept for the journal, its indexes, the state files and outgoing connections,
/// beside the webhook's connections.
const RESERVED_FILES: u64 = 256;

/// Raises the soft limit on open files to the hard limit, as servers do (systemd's soft default
/// is 1024), and warns when `max_connections` would still not fit under it: the cap is then
/// not what protects the process.
pub fn ensure_open_files(max_connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` and `setrlimit` only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let soft = limit.rlim_cur;
    if (max_connections as u64).saturating_add(RESERVED_FILES) > soft {
        tracing::warn!(
            max_connections,
            open_files_limit = soft,
            "server.max_connections does not fit under the open-files limit: lower it, or \
             raise the limit (LimitNOFILE= in a systemd unit)"
        );
    }
}

/// What bounds the connections.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until `shutdown` resolves.
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<RustlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: &Limits,
    metrics: Arc<Metrics>,
) -> io::Result<()> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    let grace = limits.shutdown_grace;
    tokio::spawn(async move {
        shutdown.await;
        // No deadline given to axum-server: its own would race this task, which must log
        // before the connections go (the process exits soon after they do).
        stopper.graceful_shutdown(None);
        tokio::time::sleep(grace).await;
        let open = stopper.connection_count();
        if open > 0 {
            tracing::warn!(
                open,
                ?grace,
                "connections still open after server.shutdown_grace: closing them"
            );
            stopper.shutdown();
        }
    });
    let capped = Capped::new(limits.max_connections, metrics);
    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let mut server = axum_server::from_tcp(listener)?
        .acceptor(capped)
        .handle(handle);
    server
        .http_builder()
        .http1()
        .header_read_timeout(limits.header_timeout);
    match tls {
        // The TLS handshake runs on a connection that already holds its permit.
        Some(config) => {
            server
                .map(|capped| RustlsAcceptor::new(config).acceptor(capped))
                .serve(make_service)
                .await
        }
        None => server.serve(make_service).await,
    }
}

/// An acceptor that gives each connection a permit, and closes the connection when none is
/// left.
#[derive(Clone)]
struct Capped {
    permits: Arc<Semaphore>,
    max: usize,
    metrics: Arc<Metrics>,
    /// Refusals not yet logged, and when the last log line was written (Unix seconds): one line
    /// per ten seconds at most, however many connections are refused.
    unlogged: Arc<AtomicU64>,
    logged_at: Arc<AtomicI64>,
}

impl Capped {
    fn new(max: usize, metrics: Arc<Metrics>) -> Capped {
        Capped {
            permits: Arc::new(Semaphore::new(max)),
            max,
            metrics,
            unlogged: Arc::new(AtomicU64::new(0)),
            logged_at: Arc::new(AtomicI64::new(0)),
        }
    }

    fn refused(&self) {
        self.metrics.connection_refused();
        let n = self.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let now = crate::journal::now_ms() / 1000;
        let last = self.logged_at.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.unlogged.fetch_sub(n, Ordering::Relaxed);
            tracing::warn!(
                refused = n,
                max = self.max,
                "connections refused: server.max_connections are open"
            );
        }
    }
}

impl<S> Accept<tokio::net::TcpStream, S> for Capped {
    type Stream = Permitted<tokio::net::TcpStream>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        let accepted = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                DefaultAcceptor
                    .accept(stream, service)
                    .into_inner()
                    .map(|(inner, service)| {
                        (
                            Permitted {
                                inner,
                                _permit: permit,
                            },
                            service,
                        )
                    })
            }
            Err(_) => {
                self.refused();
                // Dropping the stream closes the connection.
                Err(io::Error::other("server.max_connections reached"))
            }
        };
        std::future::ready(accepted)
    }
}

/// A connection and the permit it holds until it closes.
pub struct Permitted<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Permitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Permitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    /// Passed through: hyper writes a response's head and body in one `writev` only when the
    /// stream says it can.
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
