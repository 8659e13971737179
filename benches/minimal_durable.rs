//! The least a durable receiver can do: axum and SQLite group commit, and nothing else.
//!
//! `scripts/bench-ingest` runs it next to the bare server and `bouncewatch serve`, with the same
//! single-event bodies. Each request's body is stored as one row, in WAL mode with
//! `synchronous=FULL`, by one writer thread that commits everything queued at once, and the
//! request gets its `200` only after that commit. It does not parse, validate, deduplicate,
//! index, count or export anything. So it shows what the single-event target (0.4 × bare) asks
//! of the machine at the moment of the run, and how much of the gap is bouncewatch's own work.
//!
//! The listen address comes from `MINIMAL_LISTEN` (default `127.0.0.1:18082`), and the database
//! goes into the directory `MINIMAL_DIR` (required; the script gives it a fresh one).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::sync::oneshot;

#[path = "support/server.rs"]
mod support;

const DEFAULT_LISTEN: &str = "127.0.0.1:18082";
/// Requests queued for the writer before the receiver answers 503, as in bouncewatch.
const QUEUE: usize = 8192;

/// A body and the way to tell its request whether it is on disk.
type Job = (Bytes, oneshot::Sender<bool>);

fn main() -> anyhow::Result<()> {
    let listen = std::env::var("MINIMAL_LISTEN").unwrap_or_else(|_| DEFAULT_LISTEN.to_string());
    let listen: SocketAddr = listen.parse().with_context(|| {
        format!("MINIMAL_LISTEN `{listen}` is not an address: use e.g. {DEFAULT_LISTEN}")
    })?;
    let dir = PathBuf::from(
        std::env::var_os("MINIMAL_DIR")
            .context("MINIMAL_DIR is not set: give it an empty directory for the database")?,
    );
    let conn = open(&dir.join("minimal.sqlite3"))?;
    let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
    let writer = std::thread::Builder::new()
        .name("minimal-writer".into())
        .spawn(move || write(conn, rx))
        .context("cannot start the writer thread")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(listen, tx))?;
    // With the runtime gone, so is every sender: the writer drains the queue and ends.
    drop(runtime);
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))
}

fn open(path: &std::path::Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS bodies (
             seq INTEGER PRIMARY KEY,
             received_at_ms INTEGER NOT NULL,
             body BLOB NOT NULL
         );",
    )
    .with_context(|| format!("cannot set up {}", path.display()))?;
    Ok(conn)
}

async fn serve(listen: SocketAddr, tx: mpsc::SyncSender<Job>) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/webhooks/mailjet", post(receive))
        .with_state(tx);
    support::serve_like_bouncewatch(listen, app, "minimal_durable").await
}

/// `200` once the body is committed; `503` when the queue is full or the commit failed.
async fn receive(State(tx): State<mpsc::SyncSender<Job>>, body: Bytes) -> StatusCode {
    let (reply, committed) = oneshot::channel();
    if tx.try_send((body, reply)).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match committed.await {
        Ok(true) => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Group commit: the first queued body, then everything else already queued, in one
/// transaction; the replies go out after `COMMIT` returns.
fn write(mut conn: rusqlite::Connection, rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        batch.extend(rx.try_iter().take(QUEUE));
        let committed = commit(&mut conn, &batch);
        if let Err(e) = &committed {
            eprintln!("minimal_durable: commit failed: {e}");
        }
        for (_, reply) in batch.drain(..) {
            let _ = reply.send(committed.is_ok());
        }
    }
}

fn commit(conn: &mut rusqlite::Connection, batch: &[Job]) -> rusqlite::Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let tx = conn.transaction()?;
    {
        let mut insert =
            tx.prepare_cached("INSERT INTO bodies (received_at_ms, body) VALUES (?1, ?2)")?;
        for (body, _) in batch {
            insert.execute(rusqlite::params![now_ms, &body[..]])?;
        }
    }
    tx.commit()
}
