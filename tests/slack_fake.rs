//! The fake Slack of `common/slack.rs`, checked against the Slack behaviour it claims to mimic,
//! over real sockets with reqwest, before any bouncewatch test relies on it.
//!
//! The harness is included by path rather than through `mod common`, so that this test does
//! not build (or depend on) the rest of the harness.

mod common;

use common::{Answer, client, slack};

use std::time::Duration;

use serde_json::{Value, json};
use slack::{Failure, FakeSlack, Kind, channel_id};

const TOKEN: &str = "xoxb-test";

/// Calls a Web API method with a JSON body and `token` as the bearer token, if any.
async fn call_with(fake: &FakeSlack, method: &str, token: Option<&str>, body: Value) -> Answer {
    let mut request = client()
        .post(format!("{}{method}", fake.api_url()))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Answer::from(request.send().await.expect("Web API call")).await
}

/// Calls a Web API method with a JSON body and the default token; asserts HTTP 200 and
/// returns the JSON answer.
async fn call(fake: &FakeSlack, method: &str, body: Value) -> Value {
    let answer = call_with(fake, method, Some(TOKEN), body).await;
    assert_eq!(answer.status, 200, "{method}: {}", answer.text);
    assert_eq!(
        answer.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    answer.json()
}

/// Posts raw bytes to the webhook.
async fn post_webhook(fake: &FakeSlack, body: &str) -> Answer {
    let response = client()
        .post(fake.webhook_url())
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("webhook call");
    Answer::from(response).await
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

/// `1700000000.000100` as (seconds, micros), after checking its shape.
fn parse_ts(ts: &str) -> (u64, u64) {
    let (secs, micros) = ts.split_once('.').expect("ts has a dot");
    assert_eq!(micros.len(), 6, "ts {ts}");
    (
        secs.parse().expect("ts seconds"),
        micros.parse().expect("ts micros"),
    )
}

#[tokio::test]
async fn post_message_answers_like_slack_and_is_recorded() {
    let fake = FakeSlack::start().await;
    let blocks = json!([section("*bounce rate* 12%")]);
    let answer = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "#alerts", "text": "bounce rate 12%", "blocks": blocks}),
    )
    .await;

    assert_eq!(answer["ok"], true, "{answer}");
    let channel = answer["channel"].as_str().expect("channel");
    assert_eq!(channel, channel_id("#alerts"));
    assert!(channel.starts_with('C') && channel.len() == 11, "{channel}");
    let ts = answer["ts"].as_str().expect("ts");
    assert_eq!(ts, "1700000000.000100");
    assert_eq!(answer["message"]["type"], "message");
    assert_eq!(answer["message"]["ts"], ts);
    assert_eq!(answer["message"]["text"], "bounce rate 12%");
    assert_eq!(answer["message"]["blocks"], blocks);
    assert!(answer["message"]["bot_id"].is_string());

    let received = fake.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.kind, Kind::PostMessage);
    assert_eq!(r.channel.as_deref(), Some(channel));
    assert_eq!(r.ts.as_deref(), Some(ts));
    assert_eq!(r.thread_ts, None);
    assert_eq!(r.text.as_deref(), Some("bounce rate 12%"));
    assert_eq!(r.blocks, blocks);
    assert_eq!(r.body["channel"], "#alerts");
    assert!(
        r.headers
            .contains(&("authorization".to_owned(), format!("Bearer {TOKEN}"))),
        "{:?}",
        r.headers
    );
    assert!(
        r.headers
            .iter()
            .any(|(n, v)| n == "content-type" && v == "application/json"),
        "{:?}",
        r.headers
    );
    assert_eq!(fake.attempts(), 1);
}

#[tokio::test]
async fn channel_ids_are_stable_per_name_and_ids_pass_through() {
    let fake = FakeSlack::start().await;
    let mut ids = Vec::new();
    for channel in ["#alerts", "alerts", "#ops", "C0TEST"] {
        let answer = call(
            &fake,
            "chat.postMessage",
            json!({"channel": channel, "text": "x"}),
        )
        .await;
        ids.push(answer["channel"].as_str().expect("channel").to_owned());
    }
    assert_eq!(ids[0], ids[1], "a name with and without # is one channel");
    assert_ne!(ids[0], ids[2]);
    assert_eq!(ids[3], "C0TEST");
    let recorded: Vec<_> = fake.received().into_iter().map(|r| r.channel).collect();
    assert_eq!(recorded, ids.into_iter().map(Some).collect::<Vec<_>>());
}

#[tokio::test]
async fn timestamps_are_unique_and_increasing() {
    let fake = FakeSlack::start().await;
    // One client for all the calls: building one per call would dominate the test.
    let client = client();
    let mut last = (0, 0);
    for _ in 0..150 {
        let answer: Value = client
            .post(format!("{}chat.postMessage", fake.api_url()))
            .bearer_auth(TOKEN)
            .json(&json!({"channel": "C0TEST", "text": "x"}))
            .send()
            .await
            .expect("call")
            .json()
            .await
            .expect("JSON answer");
        let ts = parse_ts(answer["ts"].as_str().expect("ts"));
        assert!(ts > last, "{ts:?} after {last:?}");
        last = ts;
    }
}

#[tokio::test]
async fn thread_replies_record_their_parent() {
    let fake = FakeSlack::start().await;
    let parent = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "#alerts", "text": "incident"}),
    )
    .await;
    let parent_ts = parent["ts"].as_str().expect("ts");
    let reply = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "#alerts", "text": "still bouncing", "thread_ts": parent_ts}),
    )
    .await;
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["message"]["thread_ts"], parent_ts);
    assert_ne!(reply["ts"], parent_ts);

    let received = fake.received();
    assert_eq!(received[1].thread_ts.as_deref(), Some(parent_ts));
    assert_eq!(received[1].ts.as_deref(), reply["ts"].as_str());
}

#[tokio::test]
async fn update_changes_an_existing_message_only() {
    let fake = FakeSlack::start().await;
    let posted = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "#alerts", "text": "bounce rate 12%"}),
    )
    .await;
    let (channel, ts) = (posted["channel"].clone(), posted["ts"].clone());

    let blocks = json!([section("resolved")]);
    let updated = call(
        &fake,
        "chat.update",
        json!({"channel": channel, "ts": ts, "text": "resolved", "blocks": blocks}),
    )
    .await;
    assert_eq!(updated["ok"], true, "{updated}");
    assert_eq!(updated["channel"], channel);
    assert_eq!(updated["ts"], ts);
    assert_eq!(updated["text"], "resolved");
    assert_eq!(updated["message"]["blocks"], blocks);

    let received = fake.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].kind, Kind::Update);
    assert_eq!(
        received[1].channel.as_ref(),
        channel.as_str().map(str::to_owned).as_ref()
    );
    assert_eq!(received[1].ts.as_deref(), ts.as_str());
    assert_eq!(received[1].text.as_deref(), Some("resolved"));
    assert_eq!(received[1].blocks, blocks);

    for body in [
        json!({"channel": channel, "ts": "1600000000.000100", "text": "x"}),
        json!({"channel": channel, "text": "x"}),
        json!({"channel": "#other", "ts": ts, "text": "x"}),
    ] {
        let answer = call(&fake, "chat.update", body.clone()).await;
        assert_eq!(
            answer,
            json!({"ok": false, "error": "message_not_found"}),
            "{body}"
        );
    }
    let answer = call(&fake, "chat.update", json!({"ts": ts, "text": "x"})).await;
    assert_eq!(answer["error"], "channel_not_found");
    assert_eq!(fake.received().len(), 2);
}

#[tokio::test]
async fn form_encoded_post_message_is_read_like_json() {
    let fake = FakeSlack::start().await;
    let blocks = json!([section("from a form")]);
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("channel", "#alerts")
        .append_pair("text", "from a form")
        .append_pair("blocks", &blocks.to_string())
        .append_pair("thread_ts", "1700000000.000100")
        .finish();
    let response = client()
        .post(format!("{}chat.postMessage", fake.api_url()))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("form call");
    let answer = Answer::from(response).await;
    assert_eq!(answer.status, 200);
    let answer = answer.json();
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["channel"], channel_id("#alerts"));

    let r = &fake.received()[0];
    assert_eq!(r.kind, Kind::PostMessage);
    assert_eq!(r.text.as_deref(), Some("from a form"));
    assert_eq!(r.blocks, blocks, "blocks are parsed from their JSON string");
    assert_eq!(r.body["blocks"], blocks.to_string(), "the body is as sent");
    assert_eq!(r.thread_ts.as_deref(), Some("1700000000.000100"));

    let bad_blocks = form_urlencoded::Serializer::new(String::new())
        .append_pair("channel", "#alerts")
        .append_pair("blocks", "[{\"type\":")
        .finish();
    let response = client()
        .post(format!("{}chat.postMessage", fake.api_url()))
        .bearer_auth(TOKEN)
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(bad_blocks)
        .send()
        .await
        .expect("form call");
    let answer = Answer::from(response).await.json();
    assert_eq!(answer, json!({"ok": false, "error": "invalid_blocks"}));
}

#[tokio::test]
async fn auth_errors_are_http_200_with_ok_false() {
    let fake = FakeSlack::start().await;
    let body = json!({"channel": "#alerts", "text": "x"});

    let missing = call_with(&fake, "chat.postMessage", None, body.clone()).await;
    assert_eq!(missing.status, 200);
    assert_eq!(missing.json(), json!({"ok": false, "error": "not_authed"}));

    let wrong = call_with(&fake, "chat.postMessage", Some("xoxb-wrong"), body.clone()).await;
    assert_eq!(wrong.status, 200);
    assert_eq!(wrong.json(), json!({"ok": false, "error": "invalid_auth"}));

    fake.set_bot_token("xoxb-rotated");
    let old = call_with(&fake, "chat.update", Some(TOKEN), body.clone()).await;
    assert_eq!(old.json()["error"], "invalid_auth");
    let new = call_with(&fake, "chat.postMessage", Some("xoxb-rotated"), body).await;
    assert_eq!(new.json()["ok"], true);

    assert_eq!(fake.received().len(), 1);
    assert_eq!(fake.attempts(), 4);
}

#[tokio::test]
async fn malformed_web_api_calls_get_slack_error_codes() {
    let fake = FakeSlack::start().await;
    let cases = [
        (json!({"text": "x"}), "channel_not_found"),
        (json!({"channel": "", "text": "x"}), "channel_not_found"),
        (json!({"channel": "#alerts"}), "no_text"),
        (json!({"channel": "#alerts", "text": ""}), "no_text"),
        (json!({"channel": "#alerts", "blocks": []}), "no_text"),
        (
            json!({"channel": "#alerts", "text": "x", "blocks": "[]"}),
            "invalid_blocks",
        ),
        (
            json!({"channel": "#alerts", "text": "x", "blocks": [{"text": "no type"}]}),
            "invalid_blocks",
        ),
        (
            json!({"channel": "#alerts", "text": "x", "blocks": ["section"]}),
            "invalid_blocks",
        ),
        (json!(["not", "an", "object"]), "json_not_object"),
    ];
    let attempts = cases.len();
    for (body, error) in cases {
        let answer = call(&fake, "chat.postMessage", body.clone()).await;
        assert_eq!(answer, json!({"ok": false, "error": error}), "{body}");
    }

    let answer = call(
        &fake,
        "chat.delete",
        json!({"channel": "C0TEST", "ts": "1.2"}),
    )
    .await;
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["error"], "unknown_method");

    let invalid_json = client()
        .post(format!("{}chat.postMessage", fake.api_url()))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"channel\":")
        .send()
        .await
        .expect("call");
    let answer = Answer::from(invalid_json).await.json();
    assert_eq!(answer, json!({"ok": false, "error": "invalid_json"}));

    let attachments_only = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "#alerts", "attachments": [{"fallback": "x", "text": "x"}]}),
    )
    .await;
    assert_eq!(
        attachments_only["ok"], true,
        "Slack accepts attachments alone"
    );

    assert_eq!(fake.received().len(), 1);
    assert_eq!(fake.attempts(), attempts + 3);
}

#[tokio::test]
async fn webhook_accepts_json_and_answers_ok_as_text() {
    let fake = FakeSlack::start().await;
    let blocks = json!([section("bounce rate 12%")]);
    let body = json!({"text": "bounce rate 12%", "blocks": blocks});
    let answer = post_webhook(&fake, &body.to_string()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text, "ok");
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    let r = &fake.received()[0];
    assert_eq!(r.kind, Kind::Webhook);
    assert_eq!(r.channel, None);
    assert_eq!(r.ts, None);
    assert_eq!(r.text.as_deref(), Some("bounce rate 12%"));
    assert_eq!(r.blocks, blocks);
    assert_eq!(r.body, body);
    assert!(
        !r.headers.iter().any(|(n, _)| n == "authorization"),
        "a webhook needs no token"
    );
}

#[tokio::test]
async fn webhook_errors_are_4xx_with_the_code_as_text() {
    let fake = FakeSlack::start().await;
    let cases = [
        ("{\"text\":", 400, "invalid_payload"),
        ("\"just a string\"", 400, "invalid_payload"),
        ("{}", 400, "no_text"),
        ("{\"text\": \"\"}", 400, "no_text"),
        ("{\"text\": \"x\", \"blocks\": {}}", 400, "invalid_blocks"),
    ];
    for (body, status, error) in cases {
        let answer = post_webhook(&fake, body).await;
        assert_eq!(
            (answer.status, answer.text.as_str()),
            (status, error),
            "{body}"
        );
    }

    let unknown = fake.webhook_url().replace("/XXXXXXXX", "/WRONG");
    let response = client()
        .post(unknown)
        .json(&json!({"text": "x"}))
        .send()
        .await
        .expect("call");
    let answer = Answer::from(response).await;
    assert_eq!((answer.status, answer.text.as_str()), (404, "no_service"));

    assert!(fake.received().is_empty());
    assert_eq!(fake.attempts(), cases.len() + 1);
}

#[tokio::test]
async fn rate_limiting_answers_429_with_retry_after() {
    let fake = FakeSlack::start().await;
    fake.fail_next(
        2,
        Failure::RateLimited {
            retry_after_secs: 7,
        },
    );
    let body = json!({"channel": "#alerts", "text": "x"});
    for _ in 0..2 {
        let answer = call_with(&fake, "chat.postMessage", Some(TOKEN), body.clone()).await;
        assert_eq!(answer.status, 429);
        assert_eq!(answer.header("retry-after"), Some("7"));
        assert_eq!(answer.json(), json!({"ok": false, "error": "ratelimited"}));
    }
    assert_eq!(call(&fake, "chat.postMessage", body).await["ok"], true);

    fake.fail_next(
        1,
        Failure::RateLimited {
            retry_after_secs: 30,
        },
    );
    let answer = post_webhook(&fake, "{\"text\": \"x\"}").await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("30"));
    assert_eq!(post_webhook(&fake, "{\"text\": \"x\"}").await.status, 200);

    assert_eq!(fake.attempts(), 5);
    let kinds: Vec<_> = fake.received().iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [Kind::PostMessage, Kind::Webhook]);
}

#[tokio::test]
async fn server_errors_answer_that_status_with_a_short_body() {
    let fake = FakeSlack::start().await;
    fake.fail_next(1, Failure::ServerError(503));
    fake.fail_next(1, Failure::ServerError(500));
    let body = json!({"channel": "#alerts", "text": "x"});

    let answer = call_with(&fake, "chat.postMessage", Some(TOKEN), body.clone()).await;
    assert_eq!(answer.status, 503);
    assert!(
        !answer.text.is_empty() && answer.text.len() < 100,
        "{:?}",
        answer.text
    );
    assert!(
        serde_json::from_str::<Value>(&answer.text).is_err(),
        "not JSON"
    );

    let answer = post_webhook(&fake, "{\"text\": \"x\"}").await;
    assert_eq!(answer.status, 500);

    assert_eq!(call(&fake, "chat.postMessage", body).await["ok"], true);
    assert_eq!(fake.attempts(), 3);
    assert_eq!(fake.received().len(), 1);
}

#[tokio::test]
async fn slack_errors_take_each_endpoints_form() {
    let fake = FakeSlack::start().await;
    fake.fail_next(1, Failure::SlackError("is_archived"));
    fake.fail_next(1, Failure::SlackError("channel_is_archived"));
    fake.fail_next(1, Failure::SlackError("invalid_token"));
    fake.fail_next(1, Failure::SlackError("no_service"));

    let answer = call_with(
        &fake,
        "chat.postMessage",
        Some(TOKEN),
        json!({"channel": "#alerts", "text": "x"}),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json!({"ok": false, "error": "is_archived"}));

    for (status, error) in [
        (410, "channel_is_archived"),
        (403, "invalid_token"),
        (404, "no_service"),
    ] {
        let answer = post_webhook(&fake, "{\"text\": \"x\"}").await;
        assert_eq!((answer.status, answer.text.as_str()), (status, error));
    }
    assert!(fake.received().is_empty());
    assert_eq!(fake.attempts(), 4);
}

#[tokio::test]
async fn attempts_count_every_call_and_received_only_successes() {
    let fake = FakeSlack::start().await;
    let body = json!({"channel": "#alerts", "text": "x"});
    fake.fail_next(1, Failure::ServerError(502));
    call_with(&fake, "chat.postMessage", Some(TOKEN), body.clone()).await;
    call_with(&fake, "chat.postMessage", Some("xoxb-wrong"), body.clone()).await;
    call(&fake, "chat.postMessage", body.clone()).await;
    post_webhook(&fake, "not json").await;
    post_webhook(&fake, "{\"text\": \"x\"}").await;
    assert_eq!(fake.attempts(), 5);
    let kinds: Vec<_> = fake.received().iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [Kind::PostMessage, Kind::Webhook]);
}

#[tokio::test]
async fn hang_holds_the_request_until_the_fake_is_dropped() {
    let fake = FakeSlack::start().await;
    fake.fail_next(1, Failure::Hang);
    let url = format!("{}chat.postMessage", fake.api_url());
    let request = tokio::spawn(async move {
        reqwest::Client::builder()
            .build()
            .expect("client without timeout")
            .post(url)
            .bearer_auth(TOKEN)
            .json(&json!({"channel": "#alerts", "text": "x"}))
            .send()
            .await
    });

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fake.attempts() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!request.is_finished(), "a hanging call was answered");

    // The queue is used up: other calls are served meanwhile.
    assert_eq!(post_webhook(&fake, "{\"text\": \"x\"}").await.status, 200);

    drop(fake);
    let outcome = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("the call ends once the fake is dropped")
        .expect("request task");
    assert!(
        outcome.is_err(),
        "no answer, only a closed connection: {outcome:?}"
    );
}

#[tokio::test]
async fn wait_received_returns_once_enough_calls_succeeded() {
    let fake = FakeSlack::start().await;
    let url = fake.webhook_url();
    tokio::spawn(async move {
        for i in 0..3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = client()
                .post(&url)
                .json(&json!({ "text": format!("alert {i}") }))
                .send()
                .await;
        }
    });
    let received = fake.wait_received(3, Duration::from_secs(10)).await;
    let texts: Vec<_> = received.iter().filter_map(|r| r.text.as_deref()).collect();
    assert_eq!(texts, ["alert 0", "alert 1", "alert 2"]);
    assert_eq!(fake.wait_received(2, Duration::ZERO).await.len(), 3);
}

#[tokio::test]
#[should_panic(expected = "FakeSlack: waited 200ms for 2 successful calls, got 1")]
async fn wait_received_panics_with_what_it_has_on_timeout() {
    let fake = FakeSlack::start().await;
    post_webhook(&fake, "{\"text\": \"only one\"}").await;
    fake.wait_received(2, Duration::from_millis(200)).await;
}
