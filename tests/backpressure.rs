//! A full writer queue answers `503` with `Retry-After`, and nothing answered `503` is stored.

mod common;

use common::{Options, Server, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_and_acknowledges_nothing_unwritten() {
    let server = Server::start_with(
        Options::default()
            .env("BOUNCEWATCH_JOURNAL_QUEUE_CAPACITY", "1")
            .env("BOUNCEWATCH_JOURNAL_MAX_BATCH_EVENTS", "1")
            .env("BOUNCEWATCH_SERVER_RETRY_AFTER_SECS", "7"),
    );
    let url = server.url("/webhooks/mailjet");
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for round in 0..4u64 {
                let first = (t * 100 + round) * 1000 + 1;
                let body = format!(
                    "[{}]",
                    (first..first + 200)
                        .map(|id| format!(r#"{{"event":"sent","time":9,"MessageID":{id}}}"#))
                        .collect::<Vec<_>>()
                        .join(",")
                );
                let r = client().post(&url).body(body).send().await.unwrap();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                results.push((first, r.status().as_u16(), retry_after));
            }
            results
        }));
    }
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for task in tasks {
        for (first, status, retry_after) in task.await.unwrap() {
            match status {
                200 => acked.push(first),
                503 => {
                    assert_eq!(retry_after.as_deref(), Some("7"));
                    refused.push(first);
                }
                other => panic!("unexpected status {other}"),
            }
        }
    }
    assert!(
        !refused.is_empty(),
        "a queue of 1 under 32 concurrent batches never filled"
    );
    assert!(!acked.is_empty());
    let stored = common::stored_message_ids(&server.data_dir);
    let count = |first: u64| {
        stored
            .iter()
            .filter(|&&id| (first..first + 200).contains(&id))
            .count()
    };
    for first in &acked {
        assert_eq!(count(*first), 200, "acknowledged batch {first} incomplete");
    }
    for first in &refused {
        assert_eq!(count(*first), 0, "refused batch {first} was partly stored");
    }
    let metric = server
        .metric("bouncewatch_receiver_unavailable_total{reason=\"queue_full\"}")
        .await;
    assert_eq!(metric, refused.len() as f64);
}
