//! `bouncewatch mailjet setup` and `status` against a local server that implements Mailjet's
//! `eventcallbackurl` resource (tests/common/mailjet_api.rs): idempotent setup, in-place
//! updates, paging past 10 rows, dead callbacks, rate limits, the self-test, no secrets shown.

mod common;

use std::process::Output;

use common::mailjet_api::{Callback, Failure, FakeMailjet};
use common::{Server, command};

const KEY: &str = "mj-key";
const SECRET: &str = "mj-very-secret";
const PASSWORD: &str = "hook-pass-123";
const WAIT: std::time::Duration = std::time::Duration::from_secs(15);
const URL: &str = "https://bw.example.com/webhooks/mailjet";

/// Runs `bouncewatch mailjet ARGS` against `fake`, with webhook credentials configured.
async fn mailjet(fake: &FakeMailjet, args: &[&str]) -> Output {
    let mut cmd = command();
    cmd.arg("mailjet")
        .args(args)
        .env("MAILJET_API_KEY", KEY)
        .env("MAILJET_API_SECRET", SECRET)
        .env("BOUNCEWATCH_MAILJET_API_URL", fake.base_url())
        .env("BOUNCEWATCH_WEBHOOK_USERNAME", "mailjet")
        .env("BOUNCEWATCH_WEBHOOK_PASSWORD", PASSWORD);
    common::output(cmd).await
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn no_secrets(out: &Output) {
    let t = text(out);
    assert!(!t.contains(SECRET), "the API secret leaked:\n{t}");
    assert!(!t.contains(PASSWORD), "the webhook password leaked:\n{t}");
}

fn writes(fake: &FakeMailjet) -> usize {
    fake.requests().iter().filter(|r| r.method != "GET").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_creates_seven_callbacks_once_and_updates_in_place() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    let out = mailjet(&fake, &["setup", "--url", URL]).await;
    assert!(out.status.success(), "{}", text(&out));
    no_secrets(&out);
    let rows = fake.callbacks();
    assert_eq!(rows.len(), 7);
    let with_credentials = format!("https://mailjet:{PASSWORD}@bw.example.com/webhooks/mailjet");
    for row in &rows {
        assert_eq!(row.version, 2, "{row:?}");
        assert!(!row.is_backup);
        assert_eq!(row.url, with_credentials);
    }
    assert!(
        text(&out).contains("https://mailjet:****@bw.example.com"),
        "{}",
        text(&out)
    );

    // Again: nothing to do.
    let before = writes(&fake);
    let out = mailjet(&fake, &["setup", "--url", URL]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(writes(&fake), before, "a second setup must change nothing");
    assert!(text(&out).contains("0 callback(s) changed"));
    // A type named twice is one type, not a second create Mailjet would refuse.
    let out = mailjet(&fake, &["setup", "--url", URL, "--events", "sent,sent"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(writes(&fake), before);

    // A new URL: the same rows, updated with PUT.
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let out = mailjet(&fake, &["setup", "--url", "https://new.example.com/hook"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let after = fake.callbacks();
    assert_eq!(after.len(), 7);
    assert_eq!(after.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
    assert!(
        after
            .iter()
            .all(|r| r.url.contains("@new.example.com/hook"))
    );
    let puts = fake.requests().iter().filter(|r| r.method == "PUT").count();
    assert_eq!(puts, 7);
    no_secrets(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_ten_rows_are_all_seen_and_dry_run_changes_nothing() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    let url = format!("https://mailjet:{PASSWORD}@bw.example.com/webhooks/mailjet");
    let backup = format!("https://mailjet:{PASSWORD}@backup.example.com/webhooks/mailjet");
    for e in common::mailjet_api::EVENT_TYPES {
        fake.insert(Callback {
            version: 2,
            ..Callback::new(e, &url)
        });
        fake.insert(Callback {
            version: 2,
            is_backup: true,
            ..Callback::new(e, &backup)
        });
    }
    // 14 rows: past Mailjet's default page of 10. Everything matches, so nothing is created
    // (which would conflict) and nothing updated.
    let out = mailjet(
        &fake,
        &[
            "setup",
            "--url",
            URL,
            "--backup-url",
            "https://backup.example.com/webhooks/mailjet",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(writes(&fake), 0, "{}", text(&out));

    let out = mailjet(
        &fake,
        &["setup", "--url", "https://moved.example.com/h", "--dry-run"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(writes(&fake), 0, "a dry run changes nothing");
    assert!(text(&out).contains("would update sent"), "{}", text(&out));
    no_secrets(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_dead_callbacks_and_exits_non_zero() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    // A rate limit first: the client waits and carries on.
    fake.fail_next(
        1,
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    let out = mailjet(&fake, &["setup", "--url", URL]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = mailjet(&fake, &["status"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("all 7 event types registered and alive"));

    let bounce = fake
        .callbacks()
        .into_iter()
        .find(|c| c.event_type == "bounce")
        .unwrap();
    fake.set_status(bounce.id, "dead");
    let out = mailjet(&fake, &["status"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("dead: bounce"), "{t}");
    assert!(t.contains("bounce   2       no     dead"), "{t}");
    no_secrets(&out);

    // setup reactivates it by updating it.
    let out = mailjet(&fake, &["setup", "--url", URL]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = mailjet(&fake, &["status"]).await;
    assert!(out.status.success(), "{}", text(&out));

    // An account where the update does not revive it (Status read-only, so Mailjet answers
    // 304): setup says it is still dead and what to do, and fails.
    fake.set_status(bounce.id, "dead");
    fake.ignore_status_updates();
    let out = mailjet(&fake, &["setup", "--url", URL]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("Mailjet changed nothing (304)"), "{t}");
    assert!(t.contains("still dead after the update: bounce"), "{t}");
    assert!(t.contains("0 callback(s) changed"), "{t}");

    // Bad credentials are named as such.
    let mut cmd = command();
    cmd.args(["mailjet", "status"])
        .env("MAILJET_API_KEY", KEY)
        .env("MAILJET_API_SECRET", "wrong")
        .env("BOUNCEWATCH_MAILJET_API_URL", fake.base_url());
    let out = common::output(cmd).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("MAILJET_API_KEY"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_warns_without_sent_and_its_check_tells_failures_apart() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    let out = mailjet(
        &fake,
        &[
            "setup",
            "--url",
            URL,
            "--events",
            "bounce,blocked",
            "--dry-run",
        ],
    )
    .await;
    assert!(out.status.success());
    assert!(
        text(&out).contains("warning: `sent` is not registered"),
        "{}",
        text(&out)
    );
    // Once `sent` is registered, adding other types does not warn about it.
    let out = mailjet(&fake, &["setup", "--url", URL, "--events", "sent"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = mailjet(
        &fake,
        &["setup", "--url", URL, "--events", "bounce", "--dry-run"],
    )
    .await;
    assert!(
        !text(&out).contains("warning: `sent`"),
        "sent is registered: {}",
        text(&out)
    );

    // A real receiver with the same credentials: the check passes.
    let server = Server::start_with(
        common::Options::default()
            .env("BOUNCEWATCH_WEBHOOK_USERNAME", "mailjet")
            .env("BOUNCEWATCH_WEBHOOK_PASSWORD", PASSWORD),
    );
    let public = server.url("/webhooks/mailjet");
    let out = mailjet(&fake, &["setup", "--url", &public, "--check"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("check passed"), "{}", text(&out));
    no_secrets(&out);
    // Stored, and counted as a test: the check moves no rate.
    common::eventually("the check counted as a test", WAIT, async || {
        server.metric("bouncewatch_events_test_total").await == 1.0
    })
    .await;
    assert!(
        !server
            .get_text("/metrics")
            .await
            .contains("bouncewatch_events_total{"),
        "the check is in no events_total series"
    );

    // The receiver wants other credentials: refused, and said so.
    let strict = Server::start_with(
        common::Options::default()
            .env("BOUNCEWATCH_WEBHOOK_USERNAME", "mailjet")
            .env("BOUNCEWATCH_WEBHOOK_PASSWORD", "another-one"),
    );
    let out = mailjet(
        &fake,
        &[
            "setup",
            "--url",
            &strict.url("/webhooks/mailjet"),
            "--check",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("refused the credentials"),
        "{}",
        text(&out)
    );

    // Nothing listens there: unreachable.
    let closed = format!(
        "http://127.0.0.1:{}/webhooks/mailjet",
        common::vm::free_port()
    );
    let out = mailjet(&fake, &["setup", "--url", &closed, "--check"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("unreachable"), "{}", text(&out));

    // Not the webhook: answered, but not with 200.
    let other = server.url("/healthz");
    let out = mailjet(&fake, &["setup", "--url", &other, "--check"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("not 200"), "{}", text(&out));
}

/// `serve` with Mailjet credentials watches the callbacks: a callback turning dead raises the
/// `mailjet-callbacks` alert (here through the log channel) and the gauge drops to 0; alive
/// again, the alert resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_alerts_when_a_callback_dies_and_resolves_when_it_lives() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    let public = "https://bw.example.com/webhooks/mailjet";
    for e in common::mailjet_api::EVENT_TYPES {
        fake.insert(Callback {
            version: 2,
            ..Callback::new(
                e,
                &format!("https://mailjet:{PASSWORD}@bw.example.com/webhooks/mailjet"),
            )
        });
    }
    let server = Server::start_with(
        common::Options::default()
            .env("MAILJET_API_KEY", KEY)
            .env("MAILJET_API_SECRET", SECRET)
            .env("BOUNCEWATCH_MAILJET_API_URL", &fake.base_url())
            .env("BOUNCEWATCH_MAILJET_PUBLIC_URL", public)
            .env("BOUNCEWATCH_MAILJET_POLL_INTERVAL", "1s")
            .env("BOUNCEWATCH_ALERTS_INTERVAL", "1s")
            .env("BOUNCEWATCH_ALERTS_CLEAR_AFTER", "2"),
    );
    let gauge = r#"bouncewatch_mailjet_callback_alive{backup="false",event_type="bounce"}"#;
    let alert_line = |notice: &'static str| {
        move |l: &str| {
            l.contains(r#""message":"alert""#)
                && l.contains(r#""rule":"mailjet-callbacks""#)
                && l.contains(notice)
        }
    };
    common::eventually("the gauge at 1", WAIT, async || {
        server
            .get_text("/metrics")
            .await
            .contains(&format!("{gauge} 1"))
    })
    .await;
    assert!(
        !server.logs().iter().any(|l| alert_line("")(l)),
        "all alive: no alert"
    );

    let bounce = fake
        .callbacks()
        .into_iter()
        .find(|c| c.event_type == "bounce")
        .unwrap();
    fake.set_status(bounce.id, "dead");
    let line = server.wait_log(alert_line("dead: bounce")).await;
    assert!(
        server
            .get_text("/metrics")
            .await
            .contains(&format!("{gauge} 0"))
    );
    assert!(
        line.contains("bouncewatch mailjet setup"),
        "says how to repair: {line}"
    );
    assert!(line.contains(r#""level":"WARN""#), "{line}");

    fake.set_status(bounce.id, "alive");
    server.wait_log(alert_line(r#""notice":"resolved""#)).await;
    assert!(
        !server.logs().join("\n").contains(SECRET),
        "the API secret leaked"
    );
}

/// A watch that cannot ask Mailjet (its API down, a revoked key) is not "all healthy": after
/// three failed polls in a row the rule fires with the reason, the gauge of the last answer
/// stays put, and it resolves once Mailjet answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_alerts_when_mailjet_stops_answering() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    for e in common::mailjet_api::EVENT_TYPES {
        fake.insert(Callback {
            version: 2,
            ..Callback::new(e, "https://bw.example.com/webhooks/mailjet")
        });
    }
    // The first polls all fail; from the sixth on, Mailjet answers.
    fake.fail_next(5, common::mailjet_api::Failure::ServerError(503));
    let server = Server::start_with(
        common::Options::default()
            .env("MAILJET_API_KEY", KEY)
            .env("MAILJET_API_SECRET", SECRET)
            .env("BOUNCEWATCH_MAILJET_API_URL", &fake.base_url())
            .env("BOUNCEWATCH_MAILJET_POLL_INTERVAL", "1s")
            .env("BOUNCEWATCH_ALERTS_INTERVAL", "1s")
            .env("BOUNCEWATCH_ALERTS_CLEAR_AFTER", "2"),
    );
    let alert = |notice: &'static str| {
        move |l: &str| {
            l.contains(r#""message":"alert""#)
                && l.contains(r#""rule":"mailjet-callbacks""#)
                && l.contains(notice)
        }
    };
    let line = server.wait_log(alert("has not answered since")).await;
    assert!(line.contains("503"), "says why: {line}");
    assert!(
        server
            .get_text("/metrics")
            .await
            .contains("bouncewatch_mailjet_checked_timestamp_seconds 0"),
        "no answer yet"
    );
    server.wait_log(alert(r#""notice":"resolved""#)).await;
    let metrics = server.get_text("/metrics").await;
    assert!(
        !metrics.contains("bouncewatch_mailjet_checked_timestamp_seconds 0"),
        "{metrics}"
    );
}

/// Without webhook credentials the callback URL would be refused by the receiver (401) until
/// Mailjet suspends it: setup refuses, says what to set, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_without_webhook_credentials_is_refused() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    let mut cmd = command();
    cmd.args(["mailjet", "setup", "--url", URL])
        .env("MAILJET_API_KEY", KEY)
        .env("MAILJET_API_SECRET", SECRET)
        .env("BOUNCEWATCH_MAILJET_API_URL", fake.base_url());
    let out = common::output(cmd).await;
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("BOUNCEWATCH_WEBHOOK_USERNAME"), "{t}");
    assert!(fake.requests().is_empty(), "nothing asked of Mailjet");
}
