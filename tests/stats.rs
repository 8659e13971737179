//! The pipeline end to end: events posted to the real binary show up in `/api/v1/stats` per
//! scope, with rates that carry their evidence, and survive `kill -9` counted exactly once.

mod common;

use common::{Options, Server};
use serde_json::Value;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn event(kind: &str, id: u64, email: &str, campaign: u64, extra: &str) -> String {
    format!(
        r#"{{"event":"{kind}","time":{},"MessageID":{id},"email":"{email}","mj_campaign_id":{campaign}{extra}}}"#,
        now()
    )
}

/// 40 sends and 2 hard bounces at Gmail for campaign 7, 10 sends and 5 blocks at Outlook for
/// campaign 8 (one of them Mailjet's own preblock), and a custom domain learned as Google.
fn traffic(first_id: u64) -> String {
    let mut events = Vec::new();
    let mut id = first_id;
    let mut next = || {
        id += 1;
        id
    };
    for _ in 0..40 {
        events.push(event("sent", next(), "a@gmail.com", 7, ""));
    }
    for _ in 0..2 {
        events.push(event(
            "bounce",
            next(),
            "b@gmail.com",
            7,
            r#","hard_bounce":true"#,
        ));
    }
    for _ in 0..10 {
        events.push(event("sent", next(), "c@outlook.com", 8, ""));
    }
    for _ in 0..4 {
        events.push(event(
            "blocked",
            next(),
            "d@outlook.com",
            8,
            r#","error_related_to":"spam""#,
        ));
    }
    events.push(event(
        "blocked",
        next(),
        "e@outlook.com",
        8,
        r#","error_related_to":"mailjet""#,
    ));
    events.push(event(
        "sent",
        next(),
        "ceo@acme.io",
        9,
        r#","smtp_reply":"250 2.0.0 OK 17 x - gsmtp""#,
    ));
    events.push(event("bounce", next(), "cfo@acme.io", 9, ""));
    format!("[{}]", events.join(","))
}

async fn stats(server: &Server, query: &str) -> Value {
    server
        .get_json(&format!("/api/v1/stats?window=1h&{query}"))
        .await
}

fn key<'a>(page: &'a Value, field: &str, value: &str) -> &'a Value {
    page["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k[field] == value)
        .unwrap_or_else(|| panic!("no key with {field}={value} in {page}"))
}

fn rate<'a>(key: &'a Value, name: &str) -> &'a Value {
    key["rates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rate"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_counts_and_rates_per_scope() {
    let server = Server::start();
    assert_eq!(server.post("/webhooks/mailjet", traffic(1000)).await.0, 200);

    let global = stats(&server, "").await;
    let all = &global["keys"][0];
    assert_eq!(all["counts"]["sent"], 51);
    assert_eq!(all["counts"]["bounce"], 3);

    let by_provider = stats(&server, "scope=provider").await;
    let google = key(&by_provider, "provider", "google");
    assert_eq!(
        google["counts"]["sent"], 41,
        "acme.io was learned as Google from its gsmtp reply"
    );
    assert_eq!(rate(google, "hard_bounce")["numerator"], 2);
    assert_eq!(rate(google, "hard_bounce")["denominator"], 44);
    assert_eq!(rate(google, "bounce")["numerator"], 3);
    let microsoft = key(&by_provider, "provider", "microsoft");
    // Mailjet's preblock is neither a block nor an attempt.
    assert_eq!(rate(microsoft, "block")["numerator"], 4);
    assert_eq!(rate(microsoft, "block")["denominator"], 14);

    let reasons = microsoft["top_reasons"].as_array().unwrap();
    assert_eq!(reasons[0]["event"], "blocked");
    assert_eq!(reasons[0]["category"], "spam");
    assert_eq!(reasons[0]["count"], 4);
    assert_eq!(reasons[1]["category"], "mailjet");

    let campaign = stats(
        &server,
        "scope=campaign_provider&campaign=8&provider=microsoft",
    )
    .await;
    assert_eq!(campaign["keys"].as_array().unwrap().len(), 1);
    assert_eq!(campaign["keys"][0]["counts"]["blocked"], 5);
    // A campaign's own reasons: campaign 8's blocks, without campaign 9's bounce at Google.
    let reasons = campaign["keys"][0]["top_reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(
        (&reasons[0]["category"], &reasons[0]["count"]),
        (&"spam".into(), &4.into())
    );
    let by_campaign = stats(&server, "scope=campaign").await;
    let seven = key(&by_campaign, "campaign", "7");
    let reasons = seven["top_reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(
        (&reasons[0]["event"], &reasons[0]["count"]),
        (&"bounce".into(), &2.into())
    );
    let nine = key(&by_campaign, "campaign", "9");
    assert_eq!(nine["top_reasons"][0]["count"], 1);

    let bad = common::client()
        .get(server.url("/api/v1/stats?scope=planet"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Refused with the parameter named, not answered with something that looks right:
    // - buckets go back as far as the longest window (a day by default), so a longer window
    //   would silently count only the last day, and a huge one wrapped around;
    // - a filter the scope has no field for would answer an empty list.
    for (query, named) in [
        ("window=48h", "window=48h"),
        ("window=100000000h", "window=100000000h"),
        ("scope=global&provider=google", "`provider`"),
        ("scope=provider&campaign=8", "`campaign`"),
    ] {
        let bad = common::client()
            .get(server.url(&format!("/api/v1/stats?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400, "{query}");
        let text = bad.text().await.unwrap();
        assert!(text.contains(named), "{query}: {text}");
    }
    let day = stats(&server, "scope=global&window=24h").await;
    assert_eq!(day["window_minutes"], 1440);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_sends_says_so() {
    let server = Server::start();
    let body = event("bounce", 5, "x@yahoo.fr", 0, "");
    assert_eq!(server.post("/webhooks/mailjet", body).await.0, 200);
    let page = stats(&server, "scope=provider&provider=yahoo").await;
    assert_eq!(page["keys"][0]["has_sends"], false);
    assert_eq!(page["keys"][0]["campaign"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_survive_restarts_exactly_once() {
    let mut server = Server::start();
    let dir = server.data_dir.clone();
    assert_eq!(server.post("/webhooks/mailjet", traffic(1000)).await.0, 200);
    let before = stats(&server, "scope=campaign_provider").await["keys"].clone();

    // A clean stop saves a snapshot; the next run restores it.
    let (server, status) = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (server, status)
    })
    .await
    .unwrap();
    assert!(status.success());
    let tmp = server.kill9();
    let server = Server::start_with(Options::default().data_dir(&dir));
    assert_eq!(
        stats(&server, "scope=campaign_provider").await["keys"],
        before
    );
    let restored = server
        .logs()
        .into_iter()
        .find(|l| l.contains("pipeline restored"))
        .unwrap();
    assert!(
        restored.contains("\"seq\":59"),
        "the snapshot covered all 59 events: {restored}"
    );

    // More traffic, then kill -9: no snapshot covers it, so it is replayed from the journal.
    let more = traffic(5000);
    assert_eq!(server.post("/webhooks/mailjet", more.clone()).await.0, 200);
    // A retried batch changes nothing.
    assert_eq!(server.post("/webhooks/mailjet", more).await.0, 200);
    let expected = stats(&server, "").await["keys"][0]["counts"].clone();
    assert_eq!(expected["sent"], 102);
    server.kill9();
    let server = Server::start_with(Options::default().data_dir(&dir));
    assert_eq!(stats(&server, "").await["keys"][0]["counts"], expected);
    let google = stats(&server, "scope=provider&provider=google").await;
    assert_eq!(
        google["keys"][0]["counts"]["sent"], 82,
        "the learned domain survives too"
    );
    drop(tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_and_pipeline_lag_are_exported() {
    let server = Server::start();
    let old = r#"{"event":"spam","time":1700000000,"MessageID":77,"email":"a@gmail.com"}"#;
    let future = format!(
        r#"{{"event":"open","time":{},"MessageID":78,"email":"a@gmail.com"}}"#,
        now() + 86_400
    );
    assert_eq!(
        server
            .post("/webhooks/mailjet", format!("[{old},{future}]"))
            .await
            .0,
        200
    );
    // Waits for the pipeline to count both.
    let page = stats(&server, "").await;
    assert_eq!(
        page["keys"][0]["counts"]["open"], 1,
        "the clamped event is in the window"
    );
    assert_eq!(page["keys"][0]["counts"]["spam"], 0, "the late one is not");
    assert_eq!(server.metric("bouncewatch_events_late_total").await, 1.0);
    assert_eq!(server.metric("bouncewatch_events_clamped_total").await, 1.0);
    assert_eq!(server.metric("bouncewatch_journal_last_seq").await, 2.0);
    assert_eq!(server.metric("bouncewatch_pipeline_lag_events").await, 0.0);
}

/// The placeholder events of Mailjet's "send test" button (MessageID 0, no address, no campaign) are stored,
/// but they move no window, no rate and no `bouncewatch_events_total`: testing the callback URL
/// must not look like a bounce. They are counted on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailjet_test_events_are_stored_but_counted_apart() {
    let server = Server::start();
    let mut body = Vec::new();
    for name in ["test-event-bounce.json", "test-event-unsub.json"] {
        let mut event: Value =
            serde_json::from_slice(&common::fixture(&format!("quirks/{name}"))).unwrap();
        // Sent now, so that only being a test keeps it out of the windows.
        event["time"] = now().into();
        body.push(event);
    }
    body.push(serde_json::json!({
        "event": "sent", "time": now(), "MessageID": 9, "email": "a@gmail.com",
    }));
    let (status, text) = server
        .post("/webhooks/mailjet", serde_json::to_string(&body).unwrap())
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains(r#""stored":3"#),
        "all three are stored: {text}"
    );

    let all = &stats(&server, "").await["keys"][0];
    assert_eq!(all["counts"]["sent"], 1);
    assert_eq!(all["counts"]["bounce"], 0, "{all}");
    assert_eq!(all["counts"]["unsub"], 0, "{all}");
    assert_eq!(server.metric("bouncewatch_events_test_total").await, 2.0);
    let metrics = server.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"event="sent""#),
        "the real event is exported: {metrics}"
    );
    for kind in ["bounce", "unsub"] {
        assert!(
            !metrics
                .lines()
                .any(|l| l.starts_with("bouncewatch_events_total{")
                    && l.contains(&format!(r#"event="{kind}""#))),
            "no {kind} series: {metrics}"
        );
    }
    assert_eq!(
        server
            .metric(r#"bouncewatch_receiver_events_total{event="bounce"}"#)
            .await,
        1.0,
        "the receiver stored it"
    );
}

/// Events Mailjet held back for 40 minutes show up in the delay quantiles, by receipt time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_the_delay_of_recent_events() {
    let server = Server::start();
    let empty = stats(&server, "").await;
    assert!(empty.get("event_delay").is_none(), "{empty}");

    let held = now() - 40 * 60;
    let events: Vec<String> = (0..100)
        .map(|i| {
            // One in ten was retried for 40 minutes; the rest arrive at once.
            let time = if i % 10 == 0 { held } else { now() };
            format!(
                r#"{{"event":"sent","time":{time},"MessageID":{},"email":"d@gmail.com","mj_campaign_id":1}}"#,
                9000 + i
            )
        })
        .collect();
    let body = format!("[{}]", events.join(","));
    assert_eq!(server.post("/webhooks/mailjet", body).await.0, 200);

    let page = stats(&server, "").await;
    let delay = &page["event_delay"];
    assert_eq!(delay["count"], 100, "{page}");
    assert!(delay["p50_seconds"].as_f64().unwrap() < 5.0, "{delay}");
    let p99 = delay["p99_seconds"].as_f64().unwrap();
    assert!((2390.0..2420.0).contains(&p99), "{delay}");
}
