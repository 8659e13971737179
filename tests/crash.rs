//! Crash safety: a `kill -9` in the middle of concurrent ingest loses nothing that got a `200`.
//!
//! Sixteen senders post distinct events (v1 objects and v2 arrays of ten) while the process is
//! killed at a different moment each round: after a random delay, after a number of
//! acknowledgements, and almost at once. After a restart on the same data dir every event that
//! got a `200` must be in the journal exactly once, and nothing that was never posted may be.
//! Then, as Mailjet would, every body that did not get a `200` is posted again; after that every
//! event ever posted is stored exactly once and the row count equals the number of events.
//!
//! MessageIDs sit above 2^60 and above 2^63, so an id that went through an `f64` or a lossy
//! signed conversion would not match the one posted.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Options, Server};

const SENDERS: u64 = 16;
const V2_BATCH: u64 = 10;
/// A sender stops after this many bodies even if the server is never killed.
const MAX_BODIES_PER_SENDER: u64 = 4096;

/// When a round's `kill -9` lands.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// This long after the senders start, while the first requests are still in flight.
    AtOnce(Duration),
    /// This long after the first acknowledgement, while the senders are in full flow.
    AfterFirstAck(Duration),
    /// As soon as this many events have been acknowledged: the sender that sees the count cross
    /// it sends `SIGKILL` itself, microseconds after its `200` arrived, as close to an
    /// acknowledgement as a test can land a crash.
    AfterAcks(usize),
}

/// Counts acknowledged events across the senders, and kills the server on the one that crosses
/// `kill_at`.
struct Tally {
    acked: AtomicUsize,
    kill_at: usize,
    pid: u32,
    killed: AtomicBool,
}

impl Tally {
    fn new(pid: u32, kill_at: usize) -> Tally {
        Tally {
            acked: AtomicUsize::new(0),
            kill_at,
            pid,
            killed: AtomicBool::new(false),
        }
    }

    fn acked(&self, events: usize) {
        let total = self.acked.fetch_add(events, Ordering::SeqCst) + events;
        if total >= self.kill_at && !self.killed.swap(true, Ordering::SeqCst) {
            sigkill(self.pid);
        }
    }
}

unsafe extern "C" {
    /// libc's `kill(2)`; std links libc, and a fork of `kill -9` would cost a millisecond.
    fn kill(pid: i32, signal: i32) -> i32;
}

fn sigkill(pid: u32) {
    const SIGKILL: i32 = 9;
    // SAFETY: kill(2) takes plain integers; the pid is our own child, not yet reaped (the
    // harness waits for it only in `Server::kill9`, which runs after this).
    let rc = unsafe { kill(pid as i32, SIGKILL) };
    assert_eq!(rc, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
}

/// Whether `pid` is a live process (not gone, not a zombie waiting to be reaped).
fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: `123 (bouncewatch) S ...`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| !matches!(state, "Z" | "X")),
        Err(_) => false,
    }
}

/// One webhook body and the MessageIDs of the events in it.
#[derive(Debug, Clone)]
struct Body {
    ids: Vec<u64>,
    json: String,
}

/// What the sender learnt about one body.
#[derive(Debug)]
enum Outcome {
    /// `200`: every event in it must be on disk from now on.
    Acked,
    /// An answer that is not `200` (only `503` is acceptable).
    Refused(u16, String),
    /// No answer: the connection died with the process, or was refused after it.
    Lost,
}

/// Everything posted over all rounds, against one data dir.
#[derive(Default)]
struct Ledger {
    /// Every event ever posted, acknowledged or not.
    posted: HashSet<u64>,
    /// Every event that got a `200`.
    acked: HashSet<u64>,
}

/// A small xorshift generator: the test needs varied kill moments, not cryptography. The seed is
/// printed so a failing round can be replayed with `CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn from_env_or_clock() -> Rng {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x9e37_79b9_7f4a_7c15)
            });
        eprintln!("crash test seed: CRASH_SEED={seed}");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low + 1))
    }
}

/// The MessageID of event `k` of body `n` of sender `task` in `round`. Even senders use ids just
/// above 2^60, odd ones ids above 2^63 (negative once bit-cast to SQLite's signed integer).
fn message_id(round: u64, task: u64, n: u64, k: u64) -> u64 {
    let base: u64 = if task.is_multiple_of(2) {
        (1 << 60) + 1
    } else {
        (1 << 63) + (1 << 61) + 3
    };
    base + (round << 40) + (task << 24) + (n << 4) + k
}

fn event_json(id: u64, task: u64, n: u64, k: u64) -> String {
    let time = 1_780_000_000 + n as i64;
    let common = format!(
        r#""time":{time},"MessageID":{id},"Message_GUID":"guid-{id}","email":"r{task}.{n}.{k}@example.com","mj_campaign_id":7,"mj_contact_id":{contact},"customcampaign":"crash-test","CustomID":"c-{id}","Payload":"""#,
        contact = 1000 + task,
    );
    match (n + k) % 5 {
        0 => format!(r#"{{"event":"sent",{common},"smtp_reply":"250 OK"}}"#),
        1 => format!(r#"{{"event":"open",{common},"ip":"192.0.2.1","geo":"FR","agent":"test"}}"#),
        2 => format!(
            r#"{{"event":"click",{common},"url":"https://example.com/{id}","ip":"192.0.2.1"}}"#
        ),
        3 => format!(
            r#"{{"event":"bounce",{common},"blocked":false,"hard_bounce":true,"error_related_to":"recipient","error":"user unknown"}}"#
        ),
        _ => format!(r#"{{"event":"spam",{common},"source":"JMRPP"}}"#),
    }
}

/// Body `n` of a sender: a v1 object every third body, a v2 array of ten otherwise.
fn body(round: u64, task: u64, n: u64) -> Body {
    let count = if n.is_multiple_of(3) { 1 } else { V2_BATCH };
    let ids: Vec<u64> = (0..count).map(|k| message_id(round, task, n, k)).collect();
    let events: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(k, &id)| event_json(id, task, n, k as u64))
        .collect();
    let json = if count == 1 {
        events[0].clone()
    } else {
        format!("[{}]", events.join(","))
    };
    Body { ids, json }
}

/// Which time a body is posted, and so what its `200` receipt may say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Posting {
    /// Never posted before: every event is new.
    First,
    /// Posted before without a `200`: each event may or may not have been committed.
    Retry,
    /// Posted before and acknowledged: every event is a duplicate.
    AfterAck,
}

/// Checks a `200` receipt: every event counted once, as stored or as duplicate.
fn check_receipt(body: &Body, text: &str, posting: Posting) {
    let receipt: serde_json::Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("200 receipt is not JSON ({e}): {text}"));
    let stored = receipt["stored"].as_u64().expect("receipt.stored");
    let duplicates = receipt["duplicates"].as_u64().expect("receipt.duplicates");
    assert_eq!(
        receipt["quarantined"], 0,
        "nothing should be quarantined: {text}"
    );
    assert_eq!(
        stored + duplicates,
        body.ids.len() as u64,
        "receipt does not account for every event: {text}"
    );
    match posting {
        Posting::First => assert_eq!(duplicates, 0, "a first post holds no duplicate: {text}"),
        Posting::Retry => {}
        Posting::AfterAck => assert_eq!(stored, 0, "acknowledged events stored again: {text}"),
    }
}

/// Posts this sender's bodies one after another until the server stops answering.
async fn sender(
    client: reqwest::Client,
    url: String,
    round: u64,
    task: u64,
    tally: Arc<Tally>,
) -> Vec<(Body, Outcome)> {
    let mut results = Vec::new();
    for n in 0..MAX_BODIES_PER_SENDER {
        let body = body(round, task, n);
        let sent = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.json.clone())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(_) => {
                results.push((body, Outcome::Lost));
                break;
            }
        };
        let status = response.status().as_u16();
        // A 200 is the acknowledgement, whether or not its receipt arrives whole.
        let text = response.text().await.unwrap_or_default();
        if status == 200 {
            if !text.is_empty() {
                check_receipt(&body, &text, Posting::First);
            }
            tally.acked(body.ids.len());
            results.push((body, Outcome::Acked));
        } else {
            results.push((body, Outcome::Refused(status, text)));
        }
    }
    results
}

/// The journal's rows per MessageID, read from the SQLite file itself. Also checks that each
/// row's `message_id` column is exactly the `MessageID` in its stored raw JSON.
fn stored_counts(dir: &Path) -> HashMap<u64, usize> {
    let conn = common::open_journal(dir);
    let mut stmt = conn
        .prepare("SELECT message_id, raw FROM events")
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .expect("query events");
    let mut counts = HashMap::new();
    for row in rows {
        let (column, raw) = row.expect("row");
        // The view's `message_id` is the JSON text of the id: exact at any size.
        let id: u64 = column
            .parse()
            .expect("message_id column is an unsigned integer");
        let raw: serde_json::Value = serde_json::from_str(&raw).expect("raw column is JSON");
        assert_eq!(
            raw["MessageID"].as_u64(),
            Some(id),
            "message_id column {id} differs from the raw MessageID: {raw}"
        );
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

fn tail(logs: &[String]) -> String {
    let start = logs.len().saturating_sub(40);
    logs[start..].join("\n")
}

/// Acknowledged events are stored once; nothing stored was never posted; nothing is stored twice.
fn check_after_crash(dir: &Path, ledger: &Ledger, logs: &[String], what: &str) {
    let counts = stored_counts(dir);
    let mut missing: Vec<u64> = ledger
        .acked
        .iter()
        .filter(|id| !counts.contains_key(id))
        .copied()
        .collect();
    missing.sort_unstable();
    assert!(
        missing.is_empty(),
        "{what}: {} acknowledged events are not in the journal (first: {:?}); server log tail:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        tail(logs)
    );
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: events stored more than once: {twice:?}"
    );
    let unknown: Vec<_> = counts
        .keys()
        .filter(|id| !ledger.posted.contains(id))
        .collect();
    assert!(
        unknown.is_empty(),
        "{what}: rows for events never posted: {unknown:?}"
    );
}

/// After the re-posts: every event posted is stored exactly once, and nothing else is.
fn check_exactly_once(dir: &Path, ledger: &Ledger, what: &str) {
    let counts = stored_counts(dir);
    let mut missing: Vec<u64> = ledger
        .posted
        .iter()
        .filter(|id| !counts.contains_key(id))
        .copied()
        .collect();
    missing.sort_unstable();
    assert!(
        missing.is_empty(),
        "{what}: {} posted events are not stored after the re-post (first: {:?})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: events stored more than once: {twice:?}"
    );
    let total: usize = counts.values().sum();
    assert_eq!(
        total,
        ledger.posted.len(),
        "{what}: row count vs distinct events posted"
    );
}

/// Waits up to 15 s for `done`; fails with the server's log tail otherwise.
async fn wait_until(server: &Server, tally: &Tally, done: impl Fn(&Tally) -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done(tally) {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 15 s ({} events acknowledged); log tail:\n{}",
            tally.acked.load(Ordering::SeqCst),
            tail(&server.logs())
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One round: start, load, `kill -9`, restart, check, re-post what was not acknowledged, check.
async fn round(dir: &Path, round: u64, kill: Kill, ledger: &mut Ledger) {
    let server = Server::start_with(Options::default().data_dir(dir));
    let url = server.url("/webhooks/mailjet");
    let kill_at = match kill {
        Kill::AfterAcks(n) => n,
        _ => usize::MAX,
    };
    let tally = Arc::new(Tally::new(server.pid(), kill_at));
    // Built before the clock starts: building a client takes long enough to skew an early kill.
    let client = common::client();
    let senders: Vec<_> = (0..SENDERS)
        .map(|task| {
            tokio::spawn(sender(
                client.clone(),
                url.clone(),
                round,
                task,
                tally.clone(),
            ))
        })
        .collect();

    let started = Instant::now();
    let mut first_ack = None;
    match kill {
        Kill::AtOnce(delay) => tokio::time::sleep(delay).await,
        Kill::AfterFirstAck(delay) => {
            let first = |t: &Tally| t.acked.load(Ordering::SeqCst) > 0;
            wait_until(&server, &tally, first, "a first 200").await;
            first_ack = Some(started.elapsed());
            tokio::time::sleep(delay).await;
        }
        Kill::AfterAcks(_) => {
            let killed = |t: &Tally| t.killed.load(Ordering::SeqCst);
            wait_until(&server, &tally, killed, "the kill on ack").await
        }
    }
    let killed_after = started.elapsed();
    let acked_at_kill = tally.acked.load(Ordering::Relaxed);
    let logs = server.logs();
    if !matches!(kill, Kill::AfterAcks(_)) {
        // Otherwise a server that died by itself would pass for one we killed.
        assert!(
            is_running(server.pid()),
            "round {round}: the server died before the kill:\n{}",
            tail(&logs)
        );
    }
    server.kill9();

    let mut retry = Vec::new();
    // Each sender's last acknowledged body: Mailjet sometimes retries those too (a timeout on
    // its side), and posting them again proves deduplication on every round.
    let mut last_acked = Vec::new();
    let (mut acked_bodies, mut lost, mut refused) = (0, 0, 0);
    for handle in senders {
        let mut last = None;
        for (body, outcome) in handle.await.expect("sender task") {
            ledger.posted.extend(body.ids.iter().copied());
            match outcome {
                Outcome::Acked => {
                    acked_bodies += 1;
                    ledger.acked.extend(body.ids.iter().copied());
                    last = Some(body);
                }
                Outcome::Refused(status, text) => {
                    assert_eq!(status, 503, "round {round}: unexpected answer: {text}");
                    refused += 1;
                    retry.push(body);
                }
                Outcome::Lost => {
                    lost += 1;
                    retry.push(body);
                }
            }
        }
        last_acked.extend(last);
    }

    let server = Server::start_with(Options::default().data_dir(dir));
    check_after_crash(dir, ledger, &logs, &format!("round {round} after kill -9"));
    let retry_ids: usize = retry.iter().map(|b| b.ids.len()).sum();
    let committed_unacked = {
        let counts = stored_counts(dir);
        retry
            .iter()
            .flat_map(|b| &b.ids)
            .filter(|id| counts.contains_key(id))
            .count()
    };
    eprintln!(
        "round {round}: {kill:?}, first ack after {first_ack:?}, killed after {killed_after:?} \
         with {acked_at_kill} events acked; \
         {acked_bodies} bodies acked, {refused} refused, {lost} lost ({retry_ids} events to \
         re-post, {committed_unacked} of them committed but unacknowledged)"
    );

    // Mailjet retries whatever did not get a 200.
    for body in &retry {
        let (status, text) = server.post("/webhooks/mailjet", body.json.clone()).await;
        assert_eq!(status, 200, "round {round}: re-post refused: {text}");
        check_receipt(body, &text, Posting::Retry);
        ledger.acked.extend(body.ids.iter().copied());
    }
    for body in &last_acked {
        let (status, text) = server.post("/webhooks/mailjet", body.json.clone()).await;
        assert_eq!(
            status, 200,
            "round {round}: re-post of an acknowledged body: {text}"
        );
        check_receipt(body, &text, Posting::AfterAck);
    }
    check_exactly_once(dir, ledger, &format!("round {round} after re-post"));

    // The API reads the same ids back exactly, above 2^63 too.
    let samples = [message_id(round, 0, 0, 0), message_id(round, 1, 1, 9)];
    for id in samples {
        if !ledger.posted.contains(&id) {
            continue;
        }
        let page = server
            .get_json(&format!("/api/v1/events?message_id={id}"))
            .await;
        let events = page["events"].as_array().expect("events array");
        assert_eq!(events.len(), 1, "API rows for MessageID {id}: {page}");
        assert_eq!(
            events[0]["message_id"].as_u64(),
            Some(id),
            "API MessageID: {page}"
        );
    }
    server.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_concurrent_ingest_loses_no_acknowledged_event() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let mut rng = Rng::from_env_or_clock();
    let kills = [
        Kill::AfterFirstAck(rng.millis(150, 600)),
        Kill::AfterAcks(200 + rng.next() as usize % 800),
        Kill::AtOnce(rng.millis(5, 60)),
        Kill::AfterFirstAck(rng.millis(150, 600)),
        Kill::AfterAcks(1 + rng.next() as usize % 20),
        Kill::AfterFirstAck(rng.millis(20, 150)),
    ];
    let started = Instant::now();
    let mut ledger = Ledger::default();
    for (i, kill) in kills.into_iter().enumerate() {
        round(&dir, i as u64, kill, &mut ledger).await;
    }
    eprintln!(
        "{} rounds, {} distinct events posted, all stored exactly once, in {:?}",
        kills.len(),
        ledger.posted.len(),
        started.elapsed()
    );
    assert_eq!(
        ledger.acked.len(),
        ledger.posted.len(),
        "every event ends acknowledged"
    );
}
