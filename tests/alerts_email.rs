//! Alerts end to end over email: the real binary evaluates the built-in rules every second and
//! mails a real SMTP server (aiosmtpd). Small samples stay quiet, a real spike mails once,
//! a refused delivery is retried, and a restart does not mail the same incident again.

mod common;

use std::time::Duration;

use common::smtp::{SmtpOptions, SmtpServer};
use common::{Options, Server};

/// `sent` sends and `hard` hard bounces at Gmail, stamped now, ids from `first_id`.
fn traffic(first_id: u64, sent: usize, hard: usize) -> String {
    common::gmail_hard_bounces(first_id, sent, hard, 77)
}

fn options(smtp: &SmtpServer) -> Options {
    Options::default()
        .env("BOUNCEWATCH_EMAIL_SMTP_HOST", "127.0.0.1")
        .env("BOUNCEWATCH_EMAIL_SMTP_PORT", &smtp.port.to_string())
        .env("BOUNCEWATCH_EMAIL_TLS", "none")
        .env("BOUNCEWATCH_EMAIL_USERNAME", "bw")
        .env("BOUNCEWATCH_EMAIL_PASSWORD", "smtp-s3cret")
        .env("BOUNCEWATCH_EMAIL_FROM", "bouncewatch <alerts@example.com>")
        .env(
            "BOUNCEWATCH_EMAIL_TO",
            "oncall@example.com,team@example.com",
        )
        .env("BOUNCEWATCH_ALERTS_INTERVAL", "1s")
        .env(
            "BOUNCEWATCH_ALERTS_GRAFANA_URL",
            "https://grafana.example.com/",
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_bounce_spike_is_mailed_once_and_small_samples_stay_quiet() {
    // The first delivery is refused with a 451: the outbox must retry it.
    let smtp = SmtpServer::start(SmtpOptions {
        auth: Some(("bw".into(), "smtp-s3cret".into())),
        fail_first: 1,
        ..SmtpOptions::default()
    });
    let server = Server::start_with(options(&smtp));

    // 2 hard bounces in 40: 5 %, but the lower bound (1.4 %) is under 2 %. Nothing is sent.
    assert_eq!(
        server.post("/webhooks/mailjet", traffic(1, 38, 2)).await.0,
        200
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.attempts(), 0, "2/40 must not page anyone");

    // 10 in 200 (2.7 % lower bound): one mail, to both recipients, after one retry.
    assert_eq!(
        server
            .post("/webhooks/mailjet", traffic(100_000, 152, 8))
            .await
            .0,
        200
    );
    let mails = smtp.wait_messages(1, Duration::from_secs(20));
    let mail = &mails[0];
    assert_eq!(smtp.attempts(), 2, "refused once, then delivered");
    assert_eq!(mail.auth_login.as_deref(), Some("bw"));
    let mut to = mail.to.clone();
    to.sort();
    assert_eq!(to, vec!["oncall@example.com", "team@example.com"]);
    let subject = mail.header("Subject").unwrap();
    assert_eq!(
        subject, "[FIRING warning] hard-bounce-rate: all providers",
        "{}",
        mail.data
    );
    // Gmail's servers refuse mail without a Message-ID, and not every relay adds one.
    let id = mail.header("Message-ID").expect("a Message-ID");
    assert!(id.starts_with('<') && id.contains('@'), "{id}");
    assert!(mail.header("Date").is_some(), "{}", mail.data);
    let body = mail.part("text/plain").expect("a text part");
    let html = mail
        .part("text/html")
        .expect("an HTML part with the same content");
    assert!(html.contains("lower bound 2.74 %"), "{html}");
    assert!(
        body.contains("hard bounce rate 5.00 % (10 / 200), lower bound 2.74 % vs 2.00 %"),
        "{body}"
    );
    assert!(
        body.contains("bounce recipient / user unknown: 10"),
        "{body}"
    );
    assert!(
        body.contains("https://grafana.example.com/d/bouncewatch-overview?from=now-120m&to=now"),
        "{body}"
    );

    // Still firing: no second mail for the same incident.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.messages().len(), 1);
    let logs = server.logs().join("\n");
    assert!(!logs.contains("smtp-s3cret"), "the SMTP password leaked");

    // After kill -9 the firing state comes back from disk: no repeat of the same mail.
    let dir = server.data_dir.clone();
    let tmp = server.kill9();
    let _again = Server::start_with(options(&smtp).data_dir(&dir));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        smtp.messages().len(),
        1,
        "a restart must not re-send a firing alert"
    );
    drop(tmp);
}

/// Without any channel configured, alerts go to the log: the embedded default shows them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_channel_alerts_are_logged() {
    let server = Server::start_with(Options::default().env("BOUNCEWATCH_ALERTS_INTERVAL", "1s"));
    assert_eq!(
        server
            .post("/webhooks/mailjet", traffic(1, 190, 10))
            .await
            .0,
        200
    );
    let line = server
        .wait_log(|l| {
            l.contains(r#""message":"alert""#) && l.contains(r#""rule":"hard-bounce-rate""#)
        })
        .await;
    assert!(line.contains("(10 / 200)"), "{line}");
    assert!(line.contains(r#""level":"WARN""#), "{line}");
}

/// `kill -9` while a notification is being sent (the SMTP server never answers), then a
/// restart with a working server: the notification, already in the outbox, arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_in_flight_at_kill9_is_delivered_once_after_restart() {
    let hanging = SmtpServer::start(SmtpOptions {
        hang: true,
        ..SmtpOptions::default()
    });
    let server = Server::start_with(
        options(&hanging)
            .env("BOUNCEWATCH_EMAIL_USERNAME", "")
            .env("BOUNCEWATCH_EMAIL_PASSWORD", "")
            .env("BOUNCEWATCH_EMAIL_TIMEOUT", "60s"),
    );
    assert_eq!(
        server
            .post("/webhooks/mailjet", traffic(1, 190, 10))
            .await
            .0,
        200
    );
    // Wait until the alert is queued (and its send is hanging).
    server
        .wait_log(|l| l.contains("alert notification queued"))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dir = server.data_dir.clone();
    let tmp = server.kill9();

    let smtp = SmtpServer::start(SmtpOptions::default());
    let _again = Server::start_with(
        options(&smtp)
            .env("BOUNCEWATCH_EMAIL_USERNAME", "")
            .env("BOUNCEWATCH_EMAIL_PASSWORD", "")
            .data_dir(&dir),
    );
    let mails = smtp.wait_messages(1, Duration::from_secs(15));
    assert_eq!(
        mails[0].header("Subject").as_deref(),
        Some("[FIRING warning] hard-bounce-rate: all providers")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.messages().len(), 1, "delivered exactly once");
    drop(tmp);
}

/// `notify-test --channel email` delivers a test message, and names wrong SMTP credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_sends_one_mail_or_says_why_not() {
    let smtp = SmtpServer::start(SmtpOptions {
        auth: Some(("bw".into(), "smtp-s3cret".into())),
        ..SmtpOptions::default()
    });
    let run = |password: &'static str, port: u16| {
        let mut cmd = common::command();
        cmd.args(["notify-test", "--channel", "email"])
            .env("BOUNCEWATCH_EMAIL_SMTP_HOST", "127.0.0.1")
            .env("BOUNCEWATCH_EMAIL_SMTP_PORT", port.to_string())
            .env("BOUNCEWATCH_EMAIL_TLS", "none")
            .env("BOUNCEWATCH_EMAIL_USERNAME", "bw")
            .env("BOUNCEWATCH_EMAIL_PASSWORD", password)
            .env("BOUNCEWATCH_EMAIL_FROM", "bouncewatch <alerts@example.com>")
            .env("BOUNCEWATCH_EMAIL_TO", "oncall@example.com");
        common::output(cmd)
    };
    let ok = run("smtp-s3cret", smtp.port).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let mails = smtp.wait_messages(1, Duration::from_secs(5));
    let subject = mails[0].header("Subject").unwrap();
    assert!(
        subject.contains("notify-test") && subject.contains("a test message"),
        "says it is a test: {subject}"
    );
    assert!(!subject.ends_with(": "), "{subject}");

    let bad = run("wrong", smtp.port).await;
    let out = String::from_utf8_lossy(&bad.stdout).to_string();
    assert_eq!(bad.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAILED (permanent") && out.contains("535"),
        "{out}"
    );
}

/// The SMTP server is down when the alert fires: the notification waits in the outbox, is
/// retried, and arrives once the server is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_is_delivered_once_the_smtp_server_comes_up() {
    let port = common::vm::free_port();
    let server = Server::start_with(
        Options::default()
            .env("BOUNCEWATCH_EMAIL_SMTP_HOST", "127.0.0.1")
            .env("BOUNCEWATCH_EMAIL_SMTP_PORT", &port.to_string())
            .env("BOUNCEWATCH_EMAIL_TLS", "none")
            .env("BOUNCEWATCH_EMAIL_FROM", "bouncewatch <alerts@example.com>")
            .env("BOUNCEWATCH_EMAIL_TO", "oncall@example.com")
            .env("BOUNCEWATCH_ALERTS_INTERVAL", "1s"),
    );
    assert_eq!(
        server
            .post("/webhooks/mailjet", traffic(1, 190, 10))
            .await
            .0,
        200
    );
    server.wait_log(|l| l.contains("will retry")).await;
    let smtp = SmtpServer::start(SmtpOptions {
        port: Some(port),
        ..SmtpOptions::default()
    });
    let mails = smtp.wait_messages(1, Duration::from_secs(30));
    assert_eq!(
        mails[0].header("Subject").as_deref(),
        Some("[FIRING warning] hard-bounce-rate: all providers")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.messages().len(), 1, "delivered exactly once");
}
