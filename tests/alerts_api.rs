//! The alert API on the real binary: silences suppress notifications (and are counted) while
//! the alert still fires, `GET /api/v1/alerts` shows active alerts and delivered history, and
//! the firing gauge follows.

mod common;

use std::time::Duration;

use common::{Options, Server, client, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

async fn post_json(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_suppress_notifications_and_the_api_shows_alerts() {
    let server = Server::start_with(
        Options::default()
            .env("BOUNCEWATCH_ALERTS_INTERVAL", "1s")
            .env("BOUNCEWATCH_SERVER_MAX_BODY", "64KiB"),
    );

    // Bad silences are refused with a reason.
    let (status, body) = post_json(&server, "/api/v1/silences", json!({"rule": "x"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("`until`"),
        "{body}"
    );
    let (status, _) = post_json(
        &server,
        "/api/v1/silences",
        json!({"provider": "hotmail", "for": "1h"}),
    )
    .await;
    assert_eq!(status, 400);
    // A duration too long to be a time, or longer than a year, is refused, not wrapped.
    for long in ["18446744073713151s 616ms", "300000000years", "2years"] {
        let (status, body) = post_json(&server, "/api/v1/silences", json!({"for": long})).await;
        assert_eq!(status, 400, "{long}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("within a year"),
            "{long}: {body}"
        );
    }
    let (status, body) = post_json(
        &server,
        "/api/v1/silences",
        json!({"until": "9999-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // A rule that does not exist would silence nothing.
    let (status, body) = post_json(
        &server,
        "/api/v1/silences",
        json!({"rule": "hard-bounce-rat", "for": "1h"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("hard-bounce-rat") && error.contains("hard-bounce-rate"),
        "{error}"
    );

    let (status, silence) = post_json(
        &server,
        "/api/v1/silences",
        json!({"rule": "hard-bounce-rate", "for": "1h", "comment": "list cleanup in progress"}),
    )
    .await;
    assert_eq!(status, 201, "{silence}");
    let id = silence["id"].as_i64().unwrap();
    let listed = server.get_json("/api/v1/silences").await;
    assert_eq!(listed[0]["comment"], "list cleanup in progress");

    // The spike fires, but the silence keeps it out of every channel, and counts it.
    assert_eq!(
        server
            .post(
                "/webhooks/mailjet",
                common::gmail_hard_bounces(1, 190, 10, 3)
            )
            .await
            .0,
        200
    );
    eventually("the firing gauge", WAIT, async || {
        server
            .get_text("/metrics")
            .await
            .contains(r#"bouncewatch_alerts_firing{rule="hard-bounce-rate",severity="warning"} 1"#)
    })
    .await;
    eventually("the silenced counter", WAIT, async || {
        server
            .metric("bouncewatch_alert_notifications_silenced_total")
            .await
            == 1.0
    })
    .await;
    let page = server.get_json("/api/v1/alerts").await;
    let active = page["active"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{page}");
    assert_eq!(active[0]["rule"], "hard-bounce-rate");
    assert_eq!(active[0]["state"]["phase"], "firing");
    assert!(page["recent"].as_array().unwrap().is_empty(), "{page}");
    assert!(
        !server
            .logs()
            .iter()
            .any(|l| l.contains(r#""message":"alert""#)),
        "a silenced alert was logged as a notification"
    );

    // Not silenced: a 413 fires the body-too-large rule, which is delivered to the log and
    // shows up in the history with its delivery time.
    let big = client()
        .post(server.url("/webhooks/mailjet"))
        .body(vec![b' '; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    eventually("a delivered notification", WAIT, async || {
        let page = server.get_json("/api/v1/alerts").await;
        page["recent"].as_array().unwrap().iter().any(|r| {
            r["notification"]["rule"] == "webhook-body-too-large"
                && r["channel"] == "log"
                && r["delivered_ms"].is_i64()
        })
    })
    .await;

    // Silences end on DELETE; a second DELETE finds nothing.
    let url = server.url(&format!("/api/v1/silences/{id}"));
    assert_eq!(client().delete(&url).send().await.unwrap().status(), 204);
    assert_eq!(client().delete(&url).send().await.unwrap().status(), 404);
    assert_eq!(server.get_json("/api/v1/silences").await, json!([]));
}

/// The webhook rules count what the process saw, and a new process starts its counters at 0.
/// Their history is stored with the alert state: a quarantined body keeps its alert firing
/// through a `kill -9`, and a 413 answered just before a clean stop, after the last
/// evaluation, fires in the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_alerts_survive_restarts() {
    let options = |interval: &str, dir: Option<&std::path::Path>| {
        let o = Options::default()
            .env("BOUNCEWATCH_ALERTS_INTERVAL", interval)
            .env("BOUNCEWATCH_SERVER_MAX_BODY", "64KiB");
        match dir {
            Some(dir) => o.data_dir(dir),
            None => o,
        }
    };
    let firing = async |server: &Server, rule: &str| {
        let page = server.get_json("/api/v1/alerts").await;
        page["active"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == rule && a["state"]["phase"] == "firing")
    };
    let resolved = async |server: &Server, rule: &str| {
        let page = server.get_json("/api/v1/alerts").await;
        page["recent"].as_array().unwrap().iter().any(|r| {
            r["notification"]["rule"] == rule
                && r["notification"]["notice"].get("resolved").is_some()
        })
    };

    let server = Server::start_with(options("1s", None));
    let dir = server.data_dir.clone();

    assert_eq!(server.post("/webhooks/mailjet", "not json").await.0, 200);
    eventually("webhook-quarantined firing", WAIT, async || {
        firing(&server, "webhook-quarantined").await
    })
    .await;
    let tmp = server.kill9();

    // One evaluation at start, then none for an hour.
    let mut server = Server::start_with(options("1h", Some(&dir)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(firing(&server, "webhook-quarantined").await);
    assert!(!resolved(&server, "webhook-quarantined").await);
    let big = vec![b' '; 100 << 10];
    assert_eq!(server.post("/webhooks/mailjet", big).await.0, 413);
    assert!(server.terminate().success());

    let server = Server::start_with(options("1s", Some(&dir)));
    eventually("webhook-body-too-large firing", WAIT, async || {
        firing(&server, "webhook-body-too-large").await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(firing(&server, "webhook-quarantined").await);
    assert!(!resolved(&server, "webhook-quarantined").await);
    drop(tmp);
}
