//! A journal written by an older bouncewatch is upgraded in place when the new one starts, and
//! what it stored before the upgrade is still deduplicated after it.

mod common;

use common::{Options, Server, fixture};
use serde_json::Value;

/// The dedup key of schema 1: the event time as 4 big-endian bytes, then the first 12 bytes of
/// xxh3-128 over the length-prefixed (event, time, MessageID, email, url).
fn schema_1_key(raw: &Value) -> Vec<u8> {
    let text = |k: &str| raw[k].as_str().unwrap_or("").to_string();
    let time = raw["time"].as_i64();
    let message_id = raw["MessageID"].as_u64().unwrap_or(0);
    let mut buf = Vec::new();
    for field in [
        text("event").into_bytes(),
        time.unwrap_or(i64::MIN).to_le_bytes().to_vec(),
        message_id.to_le_bytes().to_vec(),
        text("email").into_bytes(),
        text("url").into_bytes(),
    ] {
        buf.extend_from_slice(&(field.len() as u32).to_le_bytes());
        buf.extend_from_slice(&field);
    }
    let hash = xxhash_rust::xxh3::xxh3_128(&buf).to_le_bytes();
    let secs = time.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32;
    let mut key = secs.to_be_bytes().to_vec();
    key.extend_from_slice(&hash[..12]);
    key
}

/// A server that stored `body` (the 9 events of the mixed batch) and was stopped gracefully; its
/// data dir stays until it is dropped.
async fn stored_then_stopped(body: &[u8]) -> Server {
    let mut old = Server::start();
    let (status, text) = old.post("/webhooks/mailjet", body.to_vec()).await;
    assert_eq!(status, 200, "{text}");
    tokio::task::spawn_blocking(move || {
        assert!(old.terminate().success());
        old
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_1_journal_is_upgraded_and_still_recognises_its_events() {
    let body = fixture("v2/mixed-batch.json");
    let old = stored_then_stopped(&body).await;

    // Rewrite the journal as schema 1 left it: its keys and its version.
    let conn = rusqlite::Connection::open(old.data_dir.join("journal.sqlite3")).unwrap();
    let stored: Vec<(i64, String)> = conn
        .prepare("SELECT seq, raw FROM events")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored.len(), 9);
    conn.execute("DELETE FROM dedup", []).unwrap();
    for (seq, raw) in &stored {
        let raw: Value = serde_json::from_str(raw).unwrap();
        conn.execute(
            "INSERT INTO dedup (key, seq) VALUES (?1, ?2)",
            rusqlite::params![schema_1_key(&raw), seq],
        )
        .unwrap();
    }
    conn.execute("CREATE INDEX dedup_seq ON dedup (seq)", [])
        .unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    drop(conn);

    let new = Server::start_with(Options::default().data_dir(&old.data_dir));
    new.wait_log(|l| l.contains("dedup keys recomputed") && l.contains("\"rebuilt\":9"))
        .await;
    let (status, text) = new.post("/webhooks/mailjet", body).await;
    assert_eq!(status, 200, "{text}");
    let receipt: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(receipt["stored"], 0, "{text}");
    assert_eq!(receipt["duplicates"], 9, "{text}");

    let conn = common::open_journal(&old.data_dir);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3);
    let keys: i64 = conn
        .query_row("SELECT count(*) FROM dedup", [], |r| r.get(0))
        .unwrap();
    assert_eq!(keys, 9);
    let indexes: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'dedup_seq'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 0, "schema 2 has no index on dedup.seq");
}

/// Schema 2 kept every key in the table; schema 3 may keep the latest in memory and records up to
/// where the table is complete. The upgrade records that everything stored so far is in it, so
/// the first start recomputes nothing and still recognises every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_2_journal_is_upgraded_with_every_key_in_the_table() {
    let body = fixture("v2/mixed-batch.json");
    let old = stored_then_stopped(&body).await;

    // As schema 2 left it: every key in the table, no `dedup_seq`.
    let conn = rusqlite::Connection::open(old.data_dir.join("journal.sqlite3")).unwrap();
    let keys: i64 = conn
        .query_row("SELECT count(*) FROM dedup", [], |r| r.get(0))
        .unwrap();
    assert_eq!(keys, 9);
    conn.execute("DELETE FROM meta WHERE key = 'dedup_seq'", [])
        .unwrap();
    conn.pragma_update(None, "user_version", 2).unwrap();
    drop(conn);

    let new = Server::start_with(Options::default().data_dir(&old.data_dir));
    let (status, text) = new.post("/webhooks/mailjet", body).await;
    assert_eq!(status, 200, "{text}");
    let receipt: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(receipt["duplicates"], 9, "{text}");
    assert!(
        !new.logs()
            .iter()
            .any(|l| l.contains("dedup keys of the latest events recomputed")),
        "nothing to recompute after the upgrade"
    );
    let conn = common::open_journal(&old.data_dir);
    let (version, swept): (i64, String) = conn
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version), value FROM meta WHERE key = 'dedup_seq'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((version, swept.as_str()), (3, "9"));
}
