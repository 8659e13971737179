//! A listener for the fake peers (Slack, Mailjet): each accepted TCP connection is handed to
//! axum as one end of an in-memory pipe, copied to the socket by a task the fake owns.
//!
//! `axum::serve` runs every connection in a detached task, so nothing could otherwise close a
//! connection whose request is parked by a "hang" failure. Aborting the copying tasks closes
//! the sockets, which is what a client sees when the peer goes away.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::DuplexStream;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Locks, ignoring poisoning: a test that panicked mid-update leaves state that is still worth
/// reporting.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct ProxiedListener {
    pub inner: TcpListener,
    /// The copying tasks; abort them all to cut every connection.
    pub connections: Arc<Mutex<JoinSet<()>>>,
}

impl axum::serve::Listener for ProxiedListener {
    type Io = DuplexStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((mut socket, addr)) => {
                    let _ = socket.set_nodelay(true);
                    let (served, mut proxied) = tokio::io::duplex(64 * 1024);
                    let mut connections = lock(&self.connections);
                    while connections.try_join_next().is_some() {}
                    connections.spawn(async move {
                        // Ends when either side closes; a reset by the client is no error here.
                        let _ = tokio::io::copy_bidirectional(&mut socket, &mut proxied).await;
                    });
                    return (served, addr);
                }
                // Such as running out of file descriptors: wait, as axum's own listener does.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
