//! `/metrics` across restarts: each data directory is one replica with its own
//! `service.instance.id`, and the per-campaign event counters neither reset nor double-count
//! after `kill -9`.

mod common;

use std::time::{Duration, Instant};

use common::{Options, Server};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn instance_id(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with("target_info{"))
        .unwrap_or_else(|| panic!("no target_info in\n{text}"));
    let start = line.find("service_instance_id=\"").expect("instance label") + 21;
    line[start..].split('"').next().unwrap().to_string()
}

/// The `bouncewatch_events_total` lines, sorted.
fn event_series(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("bouncewatch_events_total{"))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

async fn wait_counted(server: &Server, seq: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("bouncewatch_pipeline_last_seq").await < seq {
        assert!(
            Instant::now() < deadline,
            "the pipeline did not reach {seq}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_data_dir_has_its_own_instance_id_and_keeps_it() {
    let mut a = Server::start();
    let b = Server::start();
    let fresh = a.get_text("/metrics").await;
    assert!(
        !fresh.contains("\nbouncewatch_receiver_last_event_timestamp_seconds "),
        "no event yet, so no last-event time (not 1970)"
    );
    let id_a = instance_id(&fresh);
    let id_b = instance_id(&b.get_text("/metrics").await);
    assert_ne!(id_a, id_b);
    assert_eq!(id_a.len(), 36, "a UUID: {id_a}");

    a.terminate();
    let dir = a.data_dir.clone();
    let again = Server::start_with(Options::default().data_dir(&dir));
    assert_eq!(instance_id(&again.get_text("/metrics").await), id_a);

    let fixed =
        Server::start_with(Options::default().env("BOUNCEWATCH_METRICS_INSTANCE_ID", "replica-7"));
    assert_eq!(instance_id(&fixed.get_text("/metrics").await), "replica-7");
}

/// New series are held at 0 for `metrics.new_series_delay` (10 s here), so that a store sees
/// them start at 0. Events replayed after `kill -9` are not held again: their series may be in
/// the store at their count already, and a drop to 0 would read as a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_counters_survive_kill9_without_reset_or_double_count() {
    let options = |dir: Option<&std::path::Path>| {
        let o = Options::default()
            .env("BOUNCEWATCH_METRICS_TOP_CAMPAIGNS", "1")
            .env("BOUNCEWATCH_METRICS_NEW_SERIES_DELAY", "10s");
        match dir {
            Some(dir) => o.data_dir(dir),
            None => o,
        }
    };
    let server = Server::start_with(options(None));
    let t = now();
    let batch = |first: u64| {
        let events: Vec<String> = (0..30)
            .map(|i| {
                let campaign = 300 + i % 3;
                format!(
                    r#"{{"event":"sent","time":{t},"MessageID":{},"email":"x{i}@gmail.com","mj_campaign_id":{campaign}}}"#,
                    first + i
                )
            })
            .collect();
        format!("[{}]", events.join(","))
    };
    let posted = Instant::now();
    assert_eq!(server.post("/webhooks/mailjet", batch(1)).await.0, 200);
    wait_counted(&server, 30.0).await;
    let held = event_series(&server.get_text("/metrics").await);
    if posted.elapsed() < Duration::from_secs(9) {
        assert_eq!(
            held,
            vec![
                r#"bouncewatch_events_total{campaign="300",event="sent",provider="google"} 0"#,
                r#"bouncewatch_events_total{campaign="other",event="sent",provider="google"} 0"#,
            ]
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let now = event_series(&server.get_text("/metrics").await);
        if !now.iter().any(|l| l.ends_with(" 0")) {
            break now;
        }
        assert!(Instant::now() < deadline, "still held: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let last_event = server
        .metric("bouncewatch_receiver_last_event_timestamp_seconds")
        .await;
    assert_eq!(
        before,
        vec![
            r#"bouncewatch_events_total{campaign="300",event="sent",provider="google"} 10"#,
            r#"bouncewatch_events_total{campaign="other",event="sent",provider="google"} 20"#,
        ]
    );

    // No snapshot was taken since (they come every minute): the restart replays the journal
    // from the start and must arrive at the same counters, not at zero, not at double.
    let dir = server.data_dir.clone();
    let tmp = server.kill9();
    let server = Server::start_with(options(Some(&dir)));
    wait_counted(&server, 30.0).await;
    assert_eq!(event_series(&server.get_text("/metrics").await), before);
    let remembered = server
        .metric("bouncewatch_receiver_last_event_timestamp_seconds")
        .await;
    assert!(
        (remembered - last_event).abs() < 1.0,
        "the journal remembers the last event: {remembered} vs {last_event}"
    );

    // After a clean stop (which saves a snapshot) the counters carry on from there.
    let mut server = server;
    server.terminate();
    let server = Server::start_with(options(Some(&dir)));
    assert_eq!(event_series(&server.get_text("/metrics").await), before);
    assert_eq!(server.post("/webhooks/mailjet", batch(100)).await.0, 200);
    wait_counted(&server, 60.0).await;
    assert_eq!(
        event_series(&server.get_text("/metrics").await),
        vec![
            r#"bouncewatch_events_total{campaign="300",event="sent",provider="google"} 20"#,
            r#"bouncewatch_events_total{campaign="other",event="sent",provider="google"} 40"#,
        ]
    );
    drop(tmp);
}

/// Retention deletes only events the pipeline's snapshot already holds. After `kill -9` the
/// pipeline replays the journal from its snapshot: an event deleted before it was in one would
/// drop out of every count. With a retention of 2 s, the snapshot (every minute otherwise) is
/// saved as soon as retention waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_never_deletes_what_a_restart_would_replay() {
    let options = |dir: Option<&std::path::Path>| {
        let o = Options::default()
            .env("BOUNCEWATCH_JOURNAL_RETENTION", "2s")
            .env("BOUNCEWATCH_METRICS_NEW_SERIES_DELAY", "0s");
        match dir {
            Some(dir) => o.data_dir(dir),
            None => o,
        }
    };
    let server = Server::start_with(options(None));
    let t = now();
    let events: Vec<String> = (0..30)
        .map(|i| {
            format!(
                r#"{{"event":"sent","time":{t},"MessageID":{},"email":"r{i}@gmail.com","mj_campaign_id":{}}}"#,
                9_000 + i,
                400 + i % 3
            )
        })
        .collect();
    let body = format!("[{}]", events.join(","));
    assert_eq!(server.post("/webhooks/mailjet", body).await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server
        .metric("bouncewatch_journal_retention_deleted_total")
        .await
        < 30.0
    {
        assert!(
            Instant::now() < deadline,
            "retention did not delete the events"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = event_series(&server.get_text("/metrics").await);
    assert_eq!(before.len(), 3, "{before:?}");

    let dir = server.data_dir.clone();
    let tmp = server.kill9();
    let server = Server::start_with(options(Some(&dir)));
    assert_eq!(event_series(&server.get_text("/metrics").await), before);
    let stats = server.get_json("/api/v1/stats?window=1day").await;
    assert_eq!(stats["keys"][0]["counts"]["sent"], 30, "{stats}");
    drop(tmp);
}
