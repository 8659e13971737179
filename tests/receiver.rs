//! End-to-end tests of the receiver against the real binary: every fixture, exact ids,
//! deduplication, auth, size limits, exposure rules, the read API and graceful shutdown.

mod common;

use base64::Engine;
use common::{Options, Server, client, fixture, fixtures};
use serde_json::Value;
use std::time::Duration;

/// Every event returned by the API for one filter, oldest first.
async fn events(server: &Server, query: &str) -> Vec<Value> {
    let page = server
        .get_json(&format!("/api/v1/events?limit=1000&{query}"))
        .await;
    let mut list = page["events"].as_array().unwrap().clone();
    list.reverse();
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_fixture_is_stored_with_its_parsed_fields() {
    let server = Server::start();
    for kind in [
        "sent", "open", "click", "bounce", "blocked", "spam", "unsub",
    ] {
        let body = fixture(&format!("v1/{kind}.json"));
        let (status, text) = server.post("/webhooks/mailjet", body.clone()).await;
        assert_eq!(status, 200, "{kind}: {text}");
        let sent: Value = serde_json::from_slice(&body).unwrap();
        let stored = events(&server, &format!("event={kind}")).await;
        assert_eq!(stored.len(), 1, "{kind}");
        let e = &stored[0];
        assert_eq!(
            e["message_id"].as_u64(),
            sent["MessageID"].as_u64(),
            "{kind}"
        );
        assert_eq!(e["email"], sent["email"], "{kind}");
        assert_eq!(e["time"], sent["time"], "{kind}");
        assert_eq!(e["raw"], sent, "{kind}: raw JSON kept");
    }
    let bounce = &events(&server, "event=bounce").await[0];
    assert_eq!(bounce["hard_bounce"], true);
    assert_eq!(bounce["blocked"], false);
    assert_eq!(bounce["error_related_to"], "recipient");
    assert_eq!(bounce["error"], "user unknown");
    let click = &events(&server, "event=click").await[0];
    assert_eq!(click["url"], "https://mailjet.com");
    assert_eq!(click["campaign_id"], 7272);
    let unsub = &events(&server, "event=unsub").await[0];
    assert_eq!(unsub["list_id"], 1);
    let spam = &events(&server, "event=spam").await[0];
    assert_eq!(spam["source"], "JMRPP");
    let sent = &events(&server, "event=sent").await[0];
    assert!(sent["smtp_reply"].as_str().unwrap().ends_with("gsmtp)"));
    assert_eq!(
        server
            .metric("bouncewatch_receiver_events_total{event=\"click\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_batch_is_stored_once_even_when_posted_twice() {
    let server = Server::start();
    let body = fixture("v2/mixed-batch.json");
    let (status, text) = server.post("/webhooks/mailjet", body.clone()).await;
    assert_eq!(status, 200, "{text}");
    let receipt: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(receipt["stored"], 9);
    let (status, text) = server.post("/webhooks/mailjet", body).await;
    assert_eq!(status, 200);
    let receipt: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(receipt["stored"], 0);
    assert_eq!(receipt["duplicates"], 9);
    assert_eq!(events(&server, "").await.len(), 9);
    assert_eq!(
        server.metric("bouncewatch_receiver_duplicates_total").await,
        9.0
    );
    let conn = common::open_journal(&server.data_dir);
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 9);
    // Mixed types inside one batch each keep their own fields.
    let blocked = events(&server, "event=blocked").await;
    let categories: Vec<_> = blocked
        .iter()
        .map(|e| e["error_related_to"].as_str().unwrap())
        .collect();
    assert_eq!(categories, ["spam", "mailjet"]);
}

/// A small commit keeps its dedup keys in memory (see `journal/dedup.rs`). After a `kill -9`
/// they are recomputed from the stored events, so a retry is still a duplicate; a graceful stop
/// writes them to the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_keys_held_in_memory_survive_kill_9_and_are_written_at_a_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let keys_in_table = || -> i64 {
        common::open_journal(dir.path())
            .query_row("SELECT count(*) FROM dedup", [], |r| r.get(0))
            .unwrap()
    };
    let body = fixture("v2/mixed-batch.json");
    let server = Server::start_with(Options::default().data_dir(dir.path()));
    let (status, text) = server.post("/webhooks/mailjet", body.clone()).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"stored\":9"), "{text}");
    assert_eq!(
        keys_in_table(),
        0,
        "a 9-event commit keeps its keys in memory"
    );
    server.kill9();

    let mut server = Server::start_with(Options::default().data_dir(dir.path()));
    server
        .wait_log(|l| {
            l.contains("dedup keys of the latest events recomputed") && l.contains("\"keys\":9")
        })
        .await;
    let (status, text) = server.post("/webhooks/mailjet", body).await;
    assert_eq!(status, 200, "{text}");
    let receipt: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (receipt["stored"].as_i64(), receipt["duplicates"].as_i64()),
        (Some(0), Some(9)),
        "{text}"
    );
    assert!(server.terminate().success());
    assert_eq!(keys_in_table(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirky_payloads_are_absorbed() {
    let server = Server::start();
    for file in std::fs::read_dir(fixtures().join("quirks")).unwrap() {
        let path = file.unwrap().path();
        let (status, text) = server
            .post("/webhooks/mailjet", std::fs::read(&path).unwrap())
            .await;
        assert_eq!(status, 200, "{}: {text}", path.display());
        let receipt: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(receipt["stored"], 1, "{}: {text}", path.display());
    }
    let strings = &events(&server, "message_id=288230376151716744").await[0];
    assert_eq!(strings["blocked"], true);
    assert_eq!(strings["hard_bounce"], false);

    let nulls = &events(&server, "email=grace@orange.fr").await[0];
    assert_eq!(nulls["campaign_id"], 0);
    assert_eq!(nulls["custom_id"], Value::Null);

    let test_bounce = &events(&server, "event=bounce&message_id=0").await[0];
    assert_eq!(test_bounce["email"], "");
    assert_eq!(test_bounce["hard_bounce"], Value::Null);
    let test_unsub = &events(&server, "event=unsub").await[0];
    assert_eq!(test_unsub["list_id"], Value::Null);

    let typo = &events(&server, "event=typofix").await[0];
    assert_eq!(typo["email"], "heidi@gmial.com");
    assert_eq!(
        server
            .metric("bouncewatch_receiver_events_total{event=\"unknown\"}")
            .await,
        1.0
    );

    let rfc = &events(&server, "email=ivan@mail.ru").await[0];
    assert_eq!(rfc["custom_campaign"], "=?utf-8?Q?Soldes_d=C3=A9t=C3=A9?=");
    assert_eq!(rfc["custom_campaign_decoded"], "Soldes dété");
    assert_eq!(
        events(&server, "campaign=Soldes%20d%C3%A9t%C3%A9")
            .await
            .len(),
        1
    );

    let policy = &events(&server, "custom_id=helloworld").await[0];
    assert_eq!(policy["error_related_to"], "policy issue");
    assert_eq!(policy["error"], "");

    let missing = &events(&server, "email=someone@example.org").await[0];
    assert_eq!(missing["message_guid"], Value::Null);
    assert_eq!(missing["custom_campaign_decoded"], "mj.nl=58486");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_above_2_pow_60_round_trip_exactly() {
    let server = Server::start();
    let (status, _) = server
        .post("/webhooks/mailjet", fixture("quirks/huge-ids.json"))
        .await;
    assert_eq!(status, 200);
    let id: u64 = 1_152_921_505_370_435_123;
    assert!(id > 1 << 60);
    // Read the API's text, not a parsed f64: the digits themselves must be exact.
    let text = server
        .get_text(&format!("/api/v1/events?message_id={id}"))
        .await;
    assert!(
        text.contains("\"message_id\":1152921505370435123"),
        "{text}"
    );
    assert!(text.contains("\"campaign_id\":5591678702"), "{text}");
    assert!(text.contains("\"contact_id\":9876543210"), "{text}");
    // A neighbour id one apart must not match: the filter is exact too.
    assert!(
        events(&server, &format!("message_id={}", id - 1))
            .await
            .is_empty()
    );
    // The largest u64 survives the signed SQLite integer.
    let max = format!(r#"{{"event":"sent","time":1,"MessageID":{}}}"#, u64::MAX);
    assert_eq!(server.post("/webhooks/mailjet", max).await.0, 200);
    let stored = events(&server, &format!("message_id={}", u64::MAX)).await;
    assert_eq!(stored[0]["message_id"].as_u64(), Some(u64::MAX));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_bodies_are_quarantined_not_lost() {
    let server = Server::start();
    for name in ["form-encoded.txt", "truncated.json", "wrong-types.json"] {
        let body = fixture(&format!("invalid/{name}"));
        let (status, text) = server.post("/webhooks/mailjet", body).await;
        assert_eq!(status, 200, "{name}: {text}");
        assert!(text.contains("\"quarantined\":1"), "{name}: {text}");
    }
    // One bad element inside a good batch: the good ones are stored, the bad one quarantined.
    let batch = r#"[{"event":"sent","time":5,"MessageID":77,"email":"a@b.c"}, "oops"]"#;
    let (status, text) = server.post("/webhooks/mailjet", batch).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("\"stored\":1") && text.contains("\"quarantined\":1"),
        "{text}"
    );

    let page = server.get_json("/api/v1/quarantine").await;
    let rows = page["quarantined"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let bodies: Vec<&str> = rows.iter().map(|r| r["body"].as_str().unwrap()).collect();
    assert!(bodies.contains(&"event=open&time=1700000500"), "{bodies:?}");
    assert!(bodies.contains(&"\"oops\""), "{bodies:?}");
    let wrong = rows
        .iter()
        .find(|r| r["body"].as_str().unwrap().contains("yesterday"))
        .unwrap();
    assert!(
        wrong["reason"].as_str().unwrap().contains("yesterday"),
        "{wrong}"
    );
    assert_eq!(
        server
            .metric("bouncewatch_receiver_quarantined_total")
            .await,
        4.0
    );
    assert_eq!(events(&server, "").await.len(), 1);
}

/// An array of ten thousand elements that are no events makes 101 quarantine rows, not ten
/// thousand: the first 100 one each, the rest one together. The event among them is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_elements_that_are_no_events_make_a_bounded_number_of_rows() {
    let server = Server::start();
    let mut elements = vec!["0".to_string(); 10_000];
    elements[5_000] = r#"{"event":"sent","time":5,"MessageID":78,"email":"a@b.c"}"#.into();
    let body = format!("[{}]", elements.join(","));
    let (status, text) = server.post("/webhooks/mailjet", body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, r#"{"stored":1,"duplicates":0,"quarantined":101}"#);
    let page = server.get_json("/api/v1/quarantine?limit=1000").await;
    let rows = page["quarantined"].as_array().unwrap();
    assert_eq!(rows.len(), 101);
    assert!(
        rows.iter().any(|r| r["reason"]
            .as_str()
            .unwrap()
            .starts_with("9899 more array elements are not events")),
        "{}",
        rows[0]
    );
    assert_eq!(
        server
            .metric("bouncewatch_receiver_quarantined_total")
            .await,
        101.0
    );
    let logged = server
        .logs()
        .iter()
        .filter(|l| l.contains("webhook body quarantined"))
        .count();
    assert_eq!(logged, 101);
    assert_eq!(events(&server, "").await.len(), 1);
}

/// A page of quarantined bodies or events ends after 8 MiB of them, whatever `limit` says, and
/// the cursor goes on from there: one request cannot make an answer of gigabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_large_bodies_or_events_is_bounded_in_bytes() {
    let server = Server::start();
    for i in 0..9u8 {
        let body = vec![b'a' + i; 1 << 20];
        assert_eq!(server.post("/webhooks/mailjet", body).await.0, 200);
    }
    let first = server.get_json("/api/v1/quarantine?limit=1000").await;
    assert_eq!(first["quarantined"].as_array().unwrap().len(), 8);
    let cursor = first["next_cursor"].as_str().expect("a cursor").to_string();
    let rest = server
        .get_json(&format!("/api/v1/quarantine?limit=1000&cursor={cursor}"))
        .await;
    let rows = rest["quarantined"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0]["body"].as_str().unwrap().starts_with('a'));
    assert!(rest["next_cursor"].is_null(), "{}", rest["next_cursor"]);

    // The same for events: four of 3 MiB each, three to the first page.
    for id in 1..=4u64 {
        let big = "x".repeat(3 << 20);
        let event = format!(
            r#"{{"event":"sent","time":5,"MessageID":{id},"email":"a@b.c","Payload":"{big}"}}"#
        );
        assert_eq!(server.post("/webhooks/mailjet", event).await.0, 200);
    }
    let first = server.get_json("/api/v1/events?limit=1000").await;
    assert_eq!(first["events"].as_array().unwrap().len(), 3);
    let cursor = first["next_cursor"].as_str().expect("a cursor").to_string();
    let rest = server
        .get_json(&format!("/api/v1/events?limit=1000&cursor={cursor}"))
        .await;
    assert_eq!(rest["events"].as_array().unwrap().len(), 1);
    assert_eq!(rest["events"][0]["message_id"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_body_keeps_its_route_and_content_type() {
    let server = Server::start();
    let answer = client()
        .post(server.url("/webhooks/mailjet/bounce"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(fixture("invalid/form-encoded.txt"))
        .send()
        .await
        .expect("POST");
    assert_eq!(answer.status(), 200);
    assert_eq!(server.post("/webhooks/mailjet", "[1]").await.0, 200);

    let page = server.get_json("/api/v1/quarantine").await;
    let rows = page["quarantined"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{page}");
    // Newest first: the batch element, then the form body.
    assert_eq!(rows[0]["route"], "/webhooks/mailjet");
    assert_eq!(rows[0]["content_type"], Value::Null, "{}", rows[0]);
    assert_eq!(rows[1]["route"], "/webhooks/mailjet/bounce");
    assert_eq!(rows[1]["content_type"], "application/x-www-form-urlencoded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_quarantined_body_is_cut_and_400_is_configurable() {
    let server = Server::start_with(
        Options::default()
            .env("BOUNCEWATCH_SERVER_INVALID_BODY_STATUS", "400")
            .env("BOUNCEWATCH_JOURNAL_QUARANTINE_MAX_BODY", "1KiB"),
    );
    let (status, _) = server.post("/webhooks/mailjet", "x".repeat(5000)).await;
    assert_eq!(status, 400);
    let page = server.get_json("/api/v1/quarantine").await;
    let row = &page["quarantined"][0];
    assert_eq!(row["body_len"], 5000);
    assert_eq!(row["truncated"], true);
    assert_eq!(row["body"].as_str().unwrap().len(), 1024);
    // Valid events still get 200 under the 400 setting.
    assert_eq!(
        server
            .post("/webhooks/mailjet", fixture("v1/open.json"))
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_bodies_and_empty_arrays_are_answered_200() {
    let server = Server::start();
    assert_eq!(server.post("/webhooks/mailjet", "").await.0, 200);
    assert_eq!(
        server
            .post("/webhooks/mailjet", fixture("v2/empty-array.json"))
            .await
            .0,
        200
    );
    let (status, text) = server.post("/webhooks/mailjet", " [ ] ").await;
    assert_eq!(status, 200);
    assert_eq!(text, r#"{"stored":0,"duplicates":0,"quarantined":0}"#);
    // The README counts both with the empty bodies.
    assert_eq!(
        server
            .metric("bouncewatch_receiver_empty_bodies_total")
            .await,
        3.0
    );
    assert!(events(&server, "").await.is_empty());
    // The per-event URL form, as the seed guide registers one URL per type.
    let (status, _) = server
        .post("/webhooks/mailjet/open", fixture("v1/open.json"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(events(&server, "event=open").await.len(), 1);
}

/// `GET` with a bearer token; the answer must be 200 JSON.
async fn get_with_token(url: &str, token: &str) -> Value {
    let r = client().get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    r.json().await.unwrap()
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_get_401_and_their_body_is_never_stored() {
    let server = Server::start_with(
        Options::default()
            .env("BOUNCEWATCH_WEBHOOK_USERNAME", "mailjet")
            .env("BOUNCEWATCH_WEBHOOK_PASSWORD", "s3cret-pw")
            .env("BOUNCEWATCH_WEBHOOK_TOKEN", "q-token"),
    );
    let url = server.url("/webhooks/mailjet");
    let body = fixture("v1/sent.json");
    let cases = [
        client().post(&url).body(body.clone()),
        client()
            .post(&url)
            .header("authorization", basic("mailjet", "wrong"))
            .body(body.clone()),
        client()
            .post(format!("{url}?token=nope"))
            .body(body.clone()),
        client().post(&url).body("not json at all"),
    ];
    for request in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
    }
    assert_eq!(
        server
            .metric("bouncewatch_receiver_unauthorized_total")
            .await,
        4.0
    );
    let conn = common::open_journal(&server.data_dir);
    let stored: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM quarantine)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        stored, 0,
        "a refused body must not be stored, not even in quarantine"
    );

    let r = client()
        .post(&url)
        .header("authorization", basic("mailjet", "s3cret-pw"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .post(format!("{url}?token=q-token"))
        .body(fixture("v1/open.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The secrets never reach the log.
    let logs = server.logs().join("\n");
    assert!(
        !logs.contains("s3cret-pw") && !logs.contains("q-token"),
        "{logs}"
    );
}

/// Mailjet's batches can pass axum's own 2 MB default body limit; only `server.max_body`
/// (32 MiB by default) applies to the webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_above_axums_default_body_limit_is_taken() {
    let server = Server::start();
    let events: Vec<String> = (0..6000)
        .map(|i| {
            format!(
                r#"{{"event":"open","time":1700000000,"MessageID":{i},"email":"a{i}@example.com","agent":"{}"}}"#,
                "x".repeat(400)
            )
        })
        .collect();
    let big = format!("[{}]", events.join(","));
    assert!(big.len() > 2 << 20);
    let (status, text) = server.post("/webhooks/mailjet", big).await;
    assert_eq!(status, 200, "{text}");
    let receipt: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(receipt["stored"], 6000, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_and_are_counted() {
    let server = Server::start_with(Options::default().env("BOUNCEWATCH_SERVER_MAX_BODY", "64KiB"));
    let big = format!(
        "[{}]",
        vec![String::from_utf8(fixture("v1/open.json")).unwrap(); 400].join(",")
    );
    assert!(big.len() > 64 * 1024);
    let (status, text) = server.post("/webhooks/mailjet", big.clone()).await;
    assert_eq!(status, 413, "{text}");
    // Without a Content-Length (chunked), the limit is enforced while reading.
    let stream = futures_body(big.into_bytes());
    // The server may answer 413 and close before the client has sent everything, which the
    // client sees as a broken connection; the counter below proves the refusal either way.
    let r = client()
        .post(server.url("/webhooks/mailjet"))
        .body(stream)
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    assert_eq!(
        server
            .metric("bouncewatch_receiver_body_too_large_total")
            .await,
        2.0
    );
    assert!(events(&server, "").await.is_empty());
    assert_eq!(
        server
            .post("/webhooks/mailjet", fixture("v1/open.json"))
            .await
            .0,
        200
    );
}

/// A body that reqwest sends chunked, with no Content-Length.
fn futures_body(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(tokio_stream_iter(chunks))
}

fn tokio_stream_iter<T: Send + Unpin + 'static>(
    items: Vec<T>,
) -> impl futures_core::Stream<Item = T> + Send + 'static {
    struct Iter<T>(std::vec::IntoIter<T>);
    impl<T> futures_core::Stream for Iter<T>
    where
        T: Unpin,
    {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Iter(items.into_iter())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_only_loopback_is_allowed() {
    let refused = Server::try_start(Options::default().listen("0.0.0.0:0"));
    let Err((status, logs)) = refused else {
        panic!("bound 0.0.0.0 without credentials")
    };
    assert!(!status.expect("exited").success());
    let logs = logs.join("\n");
    assert!(logs.contains("webhook.allow_unauthenticated"), "{logs}");

    let allowed = Server::start_with(
        Options::default()
            .listen("0.0.0.0:0")
            .env("BOUNCEWATCH_WEBHOOK_ALLOW_UNAUTHENTICATED", "true"),
    );
    assert!(
        allowed
            .logs()
            .iter()
            .any(|l| l.contains("unauthenticated") && l.contains("WARN")),
        "{:?}",
        allowed.logs()
    );
    let url = format!("http://127.0.0.1:{}/webhooks/mailjet", allowed.addr.port());
    let r = client()
        .post(url)
        .body(fixture("v1/open.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let with_creds = Server::start_with(
        Options::default()
            .listen("0.0.0.0:0")
            .env("BOUNCEWATCH_WEBHOOK_USERNAME", "u")
            .env("BOUNCEWATCH_WEBHOOK_PASSWORD", "p"),
    );
    assert!(with_creds.addr.ip().is_unspecified());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_its_token_when_one_is_set_and_pages_newest_first() {
    let server = Server::start_with(Options::default().env("BOUNCEWATCH_API_TOKEN", "api-tok"));
    for i in 0..25u64 {
        let body = format!(
            r#"{{"event":"open","time":{},"MessageID":{},"email":"p@x.io"}}"#,
            1000 + i,
            i + 1
        );
        assert_eq!(server.post("/webhooks/mailjet", body).await.0, 200);
    }
    let r = client()
        .get(server.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(server.url("/api/v1/events"))
        .bearer_auth("bad")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = server.url("/api/v1/events?limit=10&email=p@x.io");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = get_with_token(&url, "api-tok").await;
        for e in page["events"].as_array().unwrap() {
            seen.push(e["message_id"].as_u64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, (1..=25).rev().collect::<Vec<u64>>());

    let url = server.url("/api/v1/events?since=1010&until=1012");
    let page = get_with_token(&url, "api-tok").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 3);
    let url = server.url("/api/v1/events?mesage_id=1");
    let r = client()
        .get(url)
        .bearer_auth("api-tok")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "a misspelt filter is an error, not an unfiltered list"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_api_token_the_api_answers_only_loopback_peers() {
    let server = Server::start_with(
        Options::default()
            .listen("0.0.0.0:0")
            .env("BOUNCEWATCH_WEBHOOK_TOKEN", "t"),
    );
    let loopback = format!("http://127.0.0.1:{}/api/v1/events", server.addr.port());
    assert_eq!(client().get(&loopback).send().await.unwrap().status(), 200);
    // Reach the same socket through a non-loopback address of this machine, if it has one.
    let Some(ip) = non_loopback_ip() else {
        eprintln!(
            "no non-loopback address on this machine; the 403 path is covered by the unit test"
        );
        return;
    };
    let remote = format!("http://{ip}:{}/api/v1/events", server.addr.port());
    assert_eq!(client().get(&remote).send().await.unwrap().status(), 403);
}

/// This machine's own address on its default route, found without sending a packet.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_in_flight_requests_then_exits_cleanly() {
    let server = Server::start();
    let url = server.url("/webhooks/mailjet");
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..200u64 {
                let id = t * 1_000_000 + i + 1;
                let body = format!(r#"{{"event":"sent","time":7,"MessageID":{id}}}"#);
                match client().post(&url).body(body).send().await {
                    Ok(r) if r.status() == 200 => acked.push(id),
                    _ => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (server, status) = tokio::task::spawn_blocking(move || {
        let mut server = server;
        let status = server.terminate();
        (server, status)
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}: {:?}", server.logs());
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(!acked.is_empty());
    let conn = common::open_journal(&server.data_dir);
    for id in acked {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE message_id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "acknowledged event {id} not stored exactly once");
    }
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("everything queued is committed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer() {
    let server = Server::start();
    let r = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_events_older_than_configured() {
    let server = Server::start_with(Options::default().env("BOUNCEWATCH_JOURNAL_RETENTION", "2s"));
    assert_eq!(
        server
            .post("/webhooks/mailjet", fixture("v2/mixed-batch.json"))
            .await
            .0,
        200
    );
    assert_eq!(server.post("/webhooks/mailjet", "{broken").await.0, 200);
    assert_eq!(events(&server, "").await.len(), 9);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = events(&server, "").await.len();
        let quarantined = server.get_json("/api/v1/quarantine").await["quarantined"]
            .as_array()
            .unwrap()
            .len();
        if left == 0 && quarantined == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} events, {quarantined} quarantined still there"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(
        server
            .metric("bouncewatch_journal_retention_deleted_total")
            .await,
        10.0
    );
    // The dedup keys expired with their events: none is left, and the same batch is new again.
    let keys: i64 = common::open_journal(&server.data_dir)
        .query_row("SELECT count(*) FROM dedup", [], |r| r.get(0))
        .unwrap();
    assert_eq!(keys, 0);
    let (status, text) = server
        .post("/webhooks/mailjet", fixture("v2/mixed-batch.json"))
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("\"stored\":9"), "{text}");
    // Sequence numbers keep growing after the table was emptied: the pipeline tails them.
    assert_eq!(
        server
            .post("/webhooks/mailjet", fixture("v1/open.json"))
            .await
            .0,
        200
    );
    assert!(events(&server, "").await[0]["seq"].as_i64().unwrap() > 9);
}

/// Retention deletes about a thousand events per step, so expiring 12,000 takes several steps,
/// taken one after another; every event's dedup key goes with it, found by recomputing it from
/// the stored JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_expires_every_key_over_many_steps() {
    let server = Server::start_with(Options::default().env("BOUNCEWATCH_JOURNAL_RETENTION", "4s"));
    let batches: Vec<String> = (0..12)
        .map(|i| common::gmail_hard_bounces(1_000_000 + i * 1000, 990, 10, 7))
        .collect();
    for batch in &batches {
        let (status, text) = server.post("/webhooks/mailjet", batch.clone()).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"stored\":1000"), "{text}");
    }
    let journal = common::open_journal(&server.data_dir);
    let count = |table: &str| -> i64 {
        journal
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count("dedup"), 12_000);
    common::eventually("retention to start", Duration::from_secs(20), async || {
        count("chunks") < 12
    })
    .await;
    // Once started, a backlog is worked off step after step, not one step per 5 s tick.
    common::eventually(
        "retention to empty the journal",
        Duration::from_secs(4),
        async || count("chunks") == 0 && count("dedup") == 0,
    )
    .await;
    assert_eq!(
        server
            .metric("bouncewatch_journal_retention_deleted_total")
            .await,
        12_000.0
    );
    let (status, text) = server.post("/webhooks/mailjet", batches[5].clone()).await;
    assert_eq!(status, 200);
    assert!(text.contains("\"stored\":1000"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_index_survives_restarts_and_is_rebuilt_when_deleted() {
    let mut server = Server::start();
    assert_eq!(
        server
            .post("/webhooks/mailjet", fixture("v2/mixed-batch.json"))
            .await
            .0,
        200
    );
    assert_eq!(events(&server, "email=bob@outlook.com").await.len(), 3);
    let dir = server.data_dir.clone();
    let keep = tempfile::tempdir().unwrap();
    let data = keep.path().join("data");
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        copy_dir(&dir, &data);
        status
    })
    .await
    .unwrap();
    assert!(status.success());

    let data = keep.path().join("data");
    let server = Server::start_with(Options::default().data_dir(&data));
    assert_eq!(events(&server, "email=bob@outlook.com").await.len(), 3);
    assert_eq!(events(&server, "campaign=spring-sale").await.len(), 9);
    drop(server);

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("index.sqlite3{suffix}")));
    }
    let server = Server::start_with(Options::default().data_dir(&data));
    assert_eq!(events(&server, "custom_id=order-2").await.len(), 3);
    assert_eq!(events(&server, "campaign=4800001").await.len(), 9);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A client stalled halfway through its request does not hold a graceful stop: after
/// `server.shutdown_grace` the server closes it and exits, and what was acknowledged before
/// is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_does_not_hold_the_stop() {
    use std::io::Write;
    let mut server =
        Server::start_with(Options::default().env("BOUNCEWATCH_SERVER_SHUTDOWN_GRACE", "1s"));
    let dir = server.data_dir.clone();
    let addr = server
        .url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (status, _) = server
        .post("/webhooks/mailjet", common::fixture("v1/sent.json"))
        .await;
    assert_eq!(status, 200);
    // Headers begun and never finished.
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(b"POST /webhooks/mailjet HTTP/1.1\r\nHost: x\r\nContent-Len")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    assert!(server.terminate().success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the stop took {:?}",
        started.elapsed()
    );
    assert!(
        server.logs().iter().any(|l| l.contains("shutdown_grace")),
        "says why it closed connections"
    );
    assert_eq!(common::stored_message_ids(&dir).len(), 1);
    drop(stalled);
}

/// A callback URL registered with a trailing slash still works, and one registered wrong
/// leaves a trace: its 404s are counted with the receiver's answers, and so is a `GET` on the
/// webhook URL (`405`, with `Allow: POST`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailing_slash_works_and_a_wrong_path_is_counted() {
    let server = Server::start();
    let (status, text) = server
        .post("/webhooks/mailjet/", common::fixture("v1/open.json"))
        .await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = server
        .post("/webhook/mailjet", common::fixture("v1/open.json"))
        .await;
    assert_eq!(status, 404);
    assert!(
        text.contains("/webhooks/mailjet"),
        "says where to post: {text}"
    );
    assert_eq!(
        server
            .metric(r#"bouncewatch_receiver_requests_total{status="404"}"#)
            .await,
        1.0
    );
    let answer = common::Answer::from(
        common::client()
            .get(server.url("/webhooks/mailjet"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.header("allow"), Some("POST"));
    assert!(answer.text.contains("POST"), "says how: {}", answer.text);
    assert_eq!(
        server
            .metric(r#"bouncewatch_receiver_requests_total{status="405"}"#)
            .await,
        1.0
    );
}

/// Connections are bounded. Headers must arrive within `server.header_timeout` and a webhook
/// body within `server.body_timeout` (`408`); past `server.max_connections` a new connection is
/// closed on arrival and counted. A flood of stalled clients cannot lock the receiver out of
/// its file descriptors, and it answers again once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_surplus_connections_are_closed() {
    use std::io::{Read, Write};
    let server = Server::start_with(
        Options::default()
            .env("BOUNCEWATCH_SERVER_MAX_CONNECTIONS", "4")
            .env("BOUNCEWATCH_SERVER_HEADER_TIMEOUT", "1s")
            .env("BOUNCEWATCH_SERVER_BODY_TIMEOUT", "1s"),
    );
    let addr = server.addr;
    // Reads until the server closes the connection; what it sent, and how long that took.
    let drain = |mut s: std::net::TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = std::time::Instant::now();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        (String::from_utf8_lossy(&got).to_string(), started.elapsed())
    };

    // Headers that never end: closed after the header timeout, with no answer.
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(b"POST /webhooks/mailjet HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let (answer, took) = drain(slow);
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    assert!(!answer.contains("200"), "{answer}");

    // A body that stops halfway: 408.
    let mut half = std::net::TcpStream::connect(addr).unwrap();
    half.write_all(
        b"POST /webhooks/mailjet HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"event\"",
    )
    .unwrap();
    let (answer, took) = drain(half);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");

    // A body cut off by its client: nothing stored, and the 400 nobody reads is counted (see
    // the end) and logged.
    let mut cut = std::net::TcpStream::connect(addr).unwrap();
    cut.write_all(
        b"POST /webhooks/mailjet HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"event\"",
    )
    .unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    drain(cut);
    server
        .wait_log(|l| l.contains("webhook body could not be read"))
        .await;

    // Four stalled connections hold every permit: a fifth is closed without an answer.
    let held: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut surplus = std::net::TcpStream::connect(addr).unwrap();
    surplus
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (answer, _) = drain(surplus);
    assert_eq!(answer, "", "the fifth connection was served");
    // Their header timeout frees the permits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        server
            .metric("bouncewatch_receiver_connections_refused_total")
            .await
            >= 1.0
    );
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("server.max_connections"))
    );
    // Read only now: the client's pooled connection would hold a permit above.
    for status in ["408", "400"] {
        let series = format!(r#"bouncewatch_receiver_requests_total{{status="{status}"}}"#);
        assert_eq!(server.metric(&series).await, 1.0, "{series}");
    }
    drop(held);
}
