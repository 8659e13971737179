//! Alerts end to end over Slack, against a local server that speaks Slack's Web API and
//! incoming-webhook formats (tests/common/slack.rs): Block Kit content, a 429 honoured with its
//! `Retry-After`, the resolution threaded under the incident and the original updated, and
//! permanent errors given up without retry. Secrets never reach the logs. Email beside Slack
//! does not take the thread away.

mod common;

use std::time::Duration;

use common::slack::{Failure, FakeSlack, Kind};
use common::{Options, Server};

/// `sent` sends and `hard` hard bounces at Gmail, stamped now, ids from `first_id`.
fn traffic(first_id: u64, sent: usize, hard: usize) -> String {
    common::gmail_hard_bounces(first_id, sent, hard, 5)
}

/// A server that posts to `slack`'s incoming webhook, fed a hard-bounce spike (10 in 200).
async fn spiking_webhook_server(slack: &FakeSlack) -> Server {
    let server = Server::start_with(
        Options::default()
            .env("BOUNCEWATCH_SLACK_WEBHOOK_URL", &slack.webhook_url())
            .env("BOUNCEWATCH_ALERTS_INTERVAL", "1s"),
    );
    assert_eq!(
        server
            .post("/webhooks/mailjet", traffic(1, 190, 10))
            .await
            .0,
        200
    );
    server
}

fn blocks_text(blocks: &serde_json::Value) -> String {
    serde_json::to_string(blocks).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_posts_the_incident_and_threads_its_resolution() {
    let slack = FakeSlack::start().await;
    slack.set_bot_token("xoxb-secret-token");
    // The first post is rate limited for one second.
    slack.fail_next(
        1,
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    // Email too: the resolution must still be threaded when the email goes out first.
    let smtp = common::smtp::SmtpServer::start(common::smtp::SmtpOptions::default());
    let server = Server::start_with(
        Options::default()
            .env("BOUNCEWATCH_EMAIL_SMTP_HOST", "127.0.0.1")
            .env("BOUNCEWATCH_EMAIL_SMTP_PORT", &smtp.port.to_string())
            .env("BOUNCEWATCH_EMAIL_TLS", "none")
            .env("BOUNCEWATCH_EMAIL_FROM", "alerts@example.com")
            .env("BOUNCEWATCH_EMAIL_TO", "oncall@example.com")
            .env("BOUNCEWATCH_SLACK_TOKEN", "xoxb-secret-token")
            .env("BOUNCEWATCH_SLACK_CHANNEL", "#alerts")
            .env("BOUNCEWATCH_SLACK_API_URL", &slack.api_url())
            .env("BOUNCEWATCH_ALERTS_INTERVAL", "1s")
            .env("BOUNCEWATCH_ALERTS_CLEAR_AFTER", "2")
            .env(
                "BOUNCEWATCH_ALERTS_GRAFANA_URL",
                "https://grafana.example.com",
            ),
    );
    assert_eq!(
        server
            .post("/webhooks/mailjet", traffic(1, 190, 10))
            .await
            .0,
        200
    );

    let got = slack.wait_received(1, Duration::from_secs(15)).await;
    let firing = &got[0];
    assert_eq!(firing.kind, Kind::PostMessage);
    assert_eq!(
        firing.channel.as_deref(),
        Some(common::slack::channel_id("#alerts").as_str())
    );
    assert_eq!(
        firing.text.as_deref(),
        Some("[FIRING warning] hard-bounce-rate: all providers")
    );
    let blocks = blocks_text(&firing.blocks);
    assert!(blocks.contains(r#""type":"header""#), "{blocks}");
    assert!(
        blocks.contains("(10 / 200), lower bound 2.74 %"),
        "{blocks}"
    );
    assert!(blocks.contains("user unknown"), "{blocks}");
    assert!(
        blocks.contains("https://grafana.example.com/d/bouncewatch-overview"),
        "{blocks}"
    );
    assert_eq!(slack.attempts(), 2, "one 429, then delivered");
    let logs = server.logs().join("\n");
    assert!(
        logs.contains(r#""retry_in":"1s""#),
        "Retry-After honoured:\n{logs}"
    );

    // Enough clean sends bring the lower bound under 2 %: after two clean evaluations the
    // incident resolves, in the thread of its message, which is updated.
    assert_eq!(
        server
            .post("/webhooks/mailjet", traffic(100_000, 3000, 0))
            .await
            .0,
        200
    );
    let got = slack.wait_received(3, Duration::from_secs(15)).await;
    let update = got
        .iter()
        .find(|r| r.kind == Kind::Update)
        .expect("an update");
    assert_eq!(update.ts, firing.ts);
    assert!(
        update.text.as_deref().unwrap().starts_with("RESOLVED"),
        "{update:?}"
    );
    let reply = got
        .iter()
        .skip(1)
        .find(|r| r.kind == Kind::PostMessage)
        .expect("a resolution");
    assert_eq!(reply.thread_ts, firing.ts);
    assert_eq!(
        reply.text.as_deref(),
        Some("[RESOLVED] hard-bounce-rate: all providers")
    );
    assert!(blocks_text(&reply.blocks).contains("Resolved after"));
    assert_eq!(
        smtp.wait_messages(2, Duration::from_secs(15)).len(),
        2,
        "the incident and its resolution by email as well"
    );

    let logs = server.logs().join("\n");
    assert!(!logs.contains("xoxb-secret-token"), "the bot token leaked");
}

/// The webhook's 429 is plain text (`rate_limited`) with `Retry-After`: the retry waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_webhook_is_retried_after_its_retry_after() {
    let slack = FakeSlack::start().await;
    slack.fail_next(
        1,
        Failure::RateLimited {
            retry_after_secs: 3,
        },
    );
    let server = spiking_webhook_server(&slack).await;
    slack.wait_received(1, Duration::from_secs(20)).await;
    assert_eq!(slack.attempts(), 2, "one 429, then delivered");
    let logs = server.logs().join("\n");
    assert!(
        logs.contains(r#""retry_in":"3s""#),
        "Retry-After honoured:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_retried_after_a_5xx_and_given_up_on_a_permanent_error() {
    let slack = FakeSlack::start().await;
    slack.fail_next(1, Failure::ServerError(503));
    let server = spiking_webhook_server(&slack).await;
    let got = slack.wait_received(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].kind, Kind::Webhook);
    assert!(blocks_text(&got[0].blocks).contains("hard bounce rate"));
    assert_eq!(slack.attempts(), 2);
    let delivered = r#"bouncewatch_alert_notifications_total{channel="slack",outcome="delivered"}"#;
    common::eventually("the delivery counted", Duration::from_secs(5), async || {
        server.metric(delivered).await == 1.0
    })
    .await;
    let logs = server.logs().join("\n");
    assert!(
        !logs.contains("XXXXXXXX"),
        "the webhook URL is a secret:\n{logs}"
    );

    // A second incident meets a refused webhook (404 no_service): given up, not retried.
    slack.fail_next(1, Failure::SlackError("no_service"));
    let attempts = slack.attempts();
    let other = spiking_webhook_server(&slack).await;
    let given_up = other
        .wait_log(|l| l.contains("notification given up"))
        .await;
    assert!(
        given_up.contains("no_service"),
        "Slack's code is kept: {given_up}"
    );
    assert_eq!(
        other
            .metric(r#"bouncewatch_alert_notifications_total{channel="slack",outcome="given_up"}"#)
            .await,
        1.0
    );
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        slack.attempts(),
        attempts + 1,
        "a permanent error is not retried"
    );
}

/// `notify-test` reports delivery, and names a refused token as a permanent failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_says_what_failed() {
    let slack = FakeSlack::start().await;
    let run = |token: &'static str, api: String| {
        let mut cmd = common::command();
        cmd.args(["notify-test", "--channel", "slack"])
            .env("BOUNCEWATCH_SLACK_TOKEN", token)
            .env("BOUNCEWATCH_SLACK_CHANNEL", "#alerts")
            .env("BOUNCEWATCH_SLACK_API_URL", api);
        common::output(cmd)
    };
    let ok = run("xoxb-test", slack.api_url()).await;
    let out = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(ok.status.success(), "{out}");
    assert!(out.contains("slack: delivered"), "{out}");
    assert_eq!(slack.received().len(), 1);

    let bad = run("xoxb-wrong", slack.api_url()).await;
    let out = String::from_utf8_lossy(&bad.stdout).to_string();
    assert_eq!(bad.status.code(), Some(1), "{out}");
    assert!(out.contains("FAILED (permanent"), "{out}");
    assert!(out.contains("invalid_auth"), "{out}");
    assert!(!out.contains("xoxb-wrong"), "{out}");

    let mut cmd = common::command();
    cmd.args(["notify-test", "--channel", "email"]);
    let none = common::output(cmd).await;
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("not configured"));
}

/// Slack's rate limit is per workspace, not per message: after a 429 with `Retry-After`, the
/// next notification waits too instead of being sent straight into the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_429_the_next_notification_waits_too() {
    let slack = FakeSlack::start().await;
    slack.set_bot_token("xoxb-secret-token");
    slack.fail_next(
        1,
        Failure::RateLimited {
            retry_after_secs: 3,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rules.toml");
    let rule = |name: &str| {
        format!(
            "[[alerts.rules]]\nname = \"{name}\"\nkind = \"threshold\"\nrate = \"hard_bounce\"\nthreshold = 0.02\nmin_volume = 20\n"
        )
    };
    std::fs::write(&config, rule("hard-a") + &rule("hard-b")).unwrap();
    let mut options = Options::default()
        .env("BOUNCEWATCH_SLACK_TOKEN", "xoxb-secret-token")
        .env("BOUNCEWATCH_SLACK_CHANNEL", "#alerts")
        .env("BOUNCEWATCH_SLACK_API_URL", &slack.api_url())
        .env("BOUNCEWATCH_ALERTS_INTERVAL", "1s");
    options.config_file = Some(config);
    let server = Server::start_with(options);
    assert_eq!(
        server
            .post("/webhooks/mailjet", traffic(1, 190, 10))
            .await
            .0,
        200
    );
    let limited = tokio::time::Instant::now() + Duration::from_secs(20);
    while slack.attempts() == 0 {
        assert!(tokio::time::Instant::now() < limited, "nothing sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        slack.attempts(),
        1,
        "the second waits for the first's Retry-After"
    );
    let got = slack.wait_received(2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2, "both delivered after the pause");
}
