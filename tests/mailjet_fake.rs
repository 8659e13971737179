//! The fake Mailjet of `common/mailjet_api.rs`, checked against the `eventcallbackurl` behaviour
//! it claims to mimic, over real sockets with reqwest, before any bouncewatch test relies on it.
//!
//! The harness is included by path rather than through `mod common`, so that this test does
//! not build (or depend on) the rest of the harness.

mod common;

use common::{Answer, client, mailjet_api};

use std::time::Duration;

use mailjet_api::{API_KEY_ID, Callback, EVENT_TYPES, Failure, FakeMailjet};
use reqwest::Method;
use serde_json::{Value, json};

/// Mailjet's envelope and error body, checked on an [`Answer`].
trait MailjetAnswer {
    fn error(&self, status: u16) -> String;
    fn data(&self, status: u16) -> Vec<Value>;
}

impl MailjetAnswer for Answer {
    /// Asserts the status and Mailjet's v3 REST error body, and returns the `ErrorMessage`.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.header("content-type"), Some("application/json"));
        let body = self.json();
        let fields: Vec<&str> = body
            .as_object()
            .expect("error body is an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            ["ErrorInfo", "ErrorMessage", "StatusCode"],
            "{body}"
        );
        assert_eq!(body["ErrorInfo"], "");
        assert_eq!(body["StatusCode"], status);
        body["ErrorMessage"]
            .as_str()
            .expect("ErrorMessage")
            .to_owned()
    }

    /// Asserts the status and returns the envelope's `Data`, after checking that `Count` and
    /// `Total` both count it.
    fn data(&self, status: u16) -> Vec<Value> {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.header("content-type"), Some("application/json"));
        let body = self.json();
        let data = body["Data"].as_array().expect("Data").clone();
        assert_eq!(body["Count"], data.len(), "{body}");
        assert_eq!(body["Total"], data.len(), "{body}");
        data
    }
}

const KEY: &str = "mj-key";
const SECRET: &str = "mj-secret";
const COLLECTION: &str = "/v3/REST/eventcallbackurl";

/// Sends a request with the fake's credentials; `path` is appended to the base URL.
async fn send(fake: &FakeMailjet, method: Method, path: &str, body: Option<Value>) -> Answer {
    let request = client()
        .request(method, format!("{}{path}", fake.base_url()))
        .basic_auth(KEY, Some(SECRET));
    send_request(request, body).await
}

async fn send_request(mut request: reqwest::RequestBuilder, body: Option<Value>) -> Answer {
    if let Some(body) = body {
        request = request.json(&body);
    }
    Answer::from(request.send().await.expect("request to FakeMailjet")).await
}

/// Sends raw body bytes as JSON, for bodies reqwest's `json` cannot produce.
async fn send_raw(fake: &FakeMailjet, method: Method, path: &str, body: &str) -> Answer {
    let request = client()
        .request(method, format!("{}{path}", fake.base_url()))
        .basic_auth(KEY, Some(SECRET))
        .header("content-type", "application/json")
        .body(body.to_owned());
    send_request(request, None).await
}

async fn get(fake: &FakeMailjet, path: &str) -> Answer {
    send(fake, Method::GET, path, None).await
}

async fn post(fake: &FakeMailjet, body: Value) -> Answer {
    send(fake, Method::POST, COLLECTION, Some(body)).await
}

async fn put(fake: &FakeMailjet, key: &str, body: Value) -> Answer {
    send(
        fake,
        Method::PUT,
        &format!("{COLLECTION}/{key}"),
        Some(body),
    )
    .await
}

/// Seeds one row for each (event type, backup) pair, 14 in all, the most Mailjet can hold.
fn seed_all(fake: &FakeMailjet) {
    for is_backup in [false, true] {
        for event_type in EVENT_TYPES {
            fake.insert(Callback {
                is_backup,
                ..Callback::new(event_type, &format!("https://hooks.example/{event_type}"))
            });
        }
    }
}

fn ids(data: &[Value]) -> Vec<i64> {
    data.iter()
        .map(|row| row["ID"].as_i64().expect("ID"))
        .collect()
}

#[tokio::test]
async fn credentials_are_checked_before_anything_else() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    let url = format!("{}{COLLECTION}", fake.base_url());

    let refused = [
        client().get(&url),
        client().get(&url).basic_auth(KEY, Some("wrong-secret")),
        client().get(&url).basic_auth("wrong-key", Some(SECRET)),
        client().get(&url).basic_auth(KEY, None::<&str>),
        client().get(&url).bearer_auth(SECRET),
        // Even a resource that does not exist: Mailjet authenticates before it routes.
        client().get(format!("{}/v3/REST/nosuchresource", fake.base_url())),
    ];
    for request in refused {
        let answer = send_request(request, None).await;
        assert_eq!(answer.status, 401, "{}", answer.text);
        assert_eq!(
            answer.header("www-authenticate"),
            Some("Basic realm=\"Provide an apiKey and secretKey\"")
        );
        // v3 REST answers a 401 with an empty HTML body, not a JSON error.
        assert_eq!(answer.header("content-type"), Some("text/html"));
        assert_eq!(answer.text, "");
    }

    // The scheme name is case-insensitive; only the key and secret matter.
    let token = base64_of(&format!("{KEY}:{SECRET}"));
    let answer = send_request(
        client()
            .get(&url)
            .header("authorization", format!("basic {token}")),
        None,
    )
    .await;
    assert_eq!(answer.data(200), Vec::<Value>::new());

    let authorized: Vec<bool> = fake.requests().iter().map(|r| r.authorized).collect();
    assert_eq!(authorized, [false, false, false, false, false, false, true]);
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn list_pages_by_id_ten_rows_at_a_time() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    assert_eq!(
        get(&fake, COLLECTION).await.json(),
        json!({"Count": 0, "Data": [], "Total": 0})
    );

    // Seeded out of order: the list is by ID whatever the insertion order.
    fake.insert(Callback {
        id: 40,
        ..Callback::new("open", "https://hooks.example/open")
    });
    fake.insert(Callback {
        id: 7,
        ..Callback::new("click", "https://hooks.example/click")
    });
    let data = get(&fake, COLLECTION).await.data(200);
    assert_eq!(ids(&data), [7, 40]);
    assert_eq!(
        data[0],
        json!({
            "APIKeyID": API_KEY_ID,
            "EventType": "click",
            "ID": 7,
            "IsBackup": false,
            "Status": "alive",
            "Url": "https://hooks.example/click",
            "Version": 1,
        })
    );
    // IDs handed out later go above the highest seen.
    assert_eq!(
        fake.insert(Callback::new("sent", "https://hooks.example/sent")),
        41
    );

    fake.remove(7);
    fake.remove(40);
    fake.remove(41);
    seed_all(&fake);
    let all: Vec<i64> = fake.callbacks().iter().map(|c| c.id).collect();
    assert_eq!(all.len(), 14);

    // Default page: the first 10 rows, and Count = Total = 10, not 14.
    assert_eq!(ids(&get(&fake, COLLECTION).await.data(200)), all[..10]);
    let page = get(&fake, &format!("{COLLECTION}?Limit=5&Offset=10")).await;
    assert_eq!(ids(&page.data(200)), all[10..]);
    let page = get(&fake, &format!("{COLLECTION}?Limit=3&Offset=2")).await;
    assert_eq!(ids(&page.data(200)), all[2..5]);
    // Limit=0 is the maximum, 1000.
    let page = get(&fake, &format!("{COLLECTION}?Limit=0")).await;
    assert_eq!(ids(&page.data(200)), all);
    let page = get(&fake, &format!("{COLLECTION}?Limit=5000")).await;
    assert_eq!(ids(&page.data(200)), all);
    // Past the end: an empty page, which is how a client knows it has read everything.
    let page = get(&fake, &format!("{COLLECTION}?Offset=14")).await;
    assert_eq!(page.json(), json!({"Count": 0, "Data": [], "Total": 0}));
}

#[tokio::test]
async fn list_filters_follow_mailjets_rules() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    seed_all(&fake);
    let all: Vec<i64> = fake.callbacks().iter().map(|c| c.id).collect();

    // countOnly: no rows, Count and Total the number of all rows.
    let answer = get(&fake, &format!("{COLLECTION}?countOnly=1")).await;
    assert_eq!(answer.json(), json!({"Count": 14, "Data": [], "Total": 14}));

    // Only the first occurrence of a filter counts.
    let page = get(&fake, &format!("{COLLECTION}?Limit=2&Limit=5")).await;
    assert_eq!(ids(&page.data(200)), all[..2]);

    // Filter names are not case-sensitive.
    let page = get(&fake, &format!("{COLLECTION}?limit=1&OFFSET=3")).await;
    assert_eq!(ids(&page.data(200)), all[3..4]);

    // EventType filters, and combines with countOnly.
    let data = get(&fake, &format!("{COLLECTION}?EventType=bounce"))
        .await
        .data(200);
    let pairs: Vec<(&str, bool)> = data
        .iter()
        .map(|row| {
            (
                row["EventType"].as_str().unwrap(),
                row["IsBackup"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(pairs, [("bounce", false), ("bounce", true)]);
    let answer = get(&fake, &format!("{COLLECTION}?EventType=bounce&countOnly=1")).await;
    assert_eq!(answer.json(), json!({"Count": 2, "Data": [], "Total": 2}));

    // What the fake does not model is refused rather than ignored.
    for query in [
        "Limit=ten",
        "Offset=-1",
        "countOnly=maybe",
        "Sort=ID+DESC",
        "IsBackup=true",
    ] {
        let answer = get(&fake, &format!("{COLLECTION}?{query}")).await;
        let message = answer.error(400);
        assert!(
            message.contains(query.split('=').next().unwrap()),
            "{query}: {message}"
        );
    }
}

#[tokio::test]
async fn a_row_is_found_by_id_or_by_its_unique_key() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    let id = fake.insert(Callback {
        version: 2,
        ..Callback::new("sent", "https://user:pass@hooks.example:8443/sent")
    });
    let backup = fake.insert(Callback {
        is_backup: true,
        ..Callback::new("sent", "https://backup.example/sent")
    });

    let data = get(&fake, &format!("{COLLECTION}/{id}")).await.data(200);
    assert_eq!(data, [fake.callbacks()[0].to_json()]);
    assert_eq!(data[0]["Url"], "https://user:pass@hooks.example:8443/sent");

    for key in ["sent|false", "sent%7Cfalse", "sent%7cfalse"] {
        let data = get(&fake, &format!("{COLLECTION}/{key}")).await.data(200);
        assert_eq!(ids(&data), [id], "{key}");
    }
    let data = get(&fake, &format!("{COLLECTION}/sent|true"))
        .await
        .data(200);
    assert_eq!(ids(&data), [backup]);
    // A trailing slash names the same row.
    let data = get(&fake, &format!("{COLLECTION}/{id}/")).await.data(200);
    assert_eq!(ids(&data), [id]);

    for key in ["999", "open|false", "sent", "sent|maybe", "0"] {
        let answer = get(&fake, &format!("{COLLECTION}/{key}")).await;
        assert_eq!(answer.error(404), "Object not found", "{key}");
    }
}

#[tokio::test]
async fn post_creates_a_row_with_mailjets_defaults() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    let answer = post(
        &fake,
        json!({"EventType": "bounce", "Url": "https://hooks.example/b"}),
    )
    .await;
    let data = answer.data(201);
    assert_eq!(
        data,
        [json!({
            "APIKeyID": API_KEY_ID,
            "EventType": "bounce",
            "ID": 1,
            "IsBackup": false,
            "Status": "alive",
            "Url": "https://hooks.example/b",
            "Version": 1,
        })]
    );

    // Every writable field, Version as Mailjet's SDKs send it (a string), and read-only
    // fields a client echoes back ignored.
    let answer = post(
        &fake,
        json!({
            "EventType": "spam",
            "Url": "http://hooks.example:8080/s",
            "Version": "2",
            "IsBackup": true,
            "Status": "dead",
            "ID": 77,
            "APIKeyID": 5,
        }),
    )
    .await;
    let data = answer.data(201);
    assert_eq!(data[0]["ID"], 2);
    assert_eq!(data[0]["APIKeyID"], API_KEY_ID);
    assert_eq!(data[0]["Version"], 2);
    assert_eq!(data[0]["IsBackup"], true);
    assert_eq!(data[0]["Status"], "dead");

    let rows = fake.callbacks();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[1],
        Callback {
            id: 2,
            api_key_id: API_KEY_ID,
            version: 2,
            is_backup: true,
            status: "dead".to_owned(),
            ..Callback::new("spam", "http://hooks.example:8080/s")
        }
    );

    let last = fake.requests().pop().expect("a request");
    assert_eq!(last.method, "POST");
    assert_eq!(last.path, COLLECTION);
    assert_eq!(last.body["Version"], "2");
    assert!(last.authorized);
}

#[tokio::test]
async fn a_second_callback_for_the_same_key_is_mailjets_mj18() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    let sent = json!({"EventType": "sent", "Url": "https://hooks.example/sent"});
    post(&fake, sent.clone()).await.data(201);

    let answer = post(&fake, sent).await;
    assert_eq!(
        answer.error(400),
        "MJ18 A EventCallbackURL resource with value \"7|false\" for EventType|Backup already \
         exists."
    );
    // The backup slot is a different key.
    post(
        &fake,
        json!({"EventType": "sent", "Url": "https://b.example/", "IsBackup": true}),
    )
    .await
    .data(201);
    let answer = post(
        &fake,
        json!({"EventType": "sent", "Url": "https://c.example/", "IsBackup": true}),
    )
    .await;
    assert!(answer.error(400).contains("\"7|true\""));
    assert_eq!(fake.callbacks().len(), 2);
}

#[tokio::test]
async fn invalid_bodies_are_refused_and_nothing_is_stored() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    let url = "https://hooks.example/x";
    let bad_values = [
        json!({"EventType": "typofix", "Url": url}),
        json!({"EventType": "SENT", "Url": url}),
        json!({"EventType": "delivered", "Url": url}),
        json!({"EventType": "open", "Url": url, "Version": 3}),
        json!({"EventType": "open", "Url": url, "Version": 0}),
        json!({"EventType": "open", "Url": url, "Version": "3"}),
        json!({"EventType": "open", "Url": "ftp://hooks.example/x"}),
        json!({"EventType": "open", "Url": "hooks.example/x"}),
        json!({"EventType": "open", "Url": ""}),
        json!({"EventType": "open", "Url": url, "Status": "suspended"}),
    ];
    for body in bad_values {
        let message = post(&fake, body.clone()).await.error(400);
        assert!(
            message.starts_with("Invalid value for property"),
            "{body}: {message}"
        );
    }

    let missing = [json!({"Url": url}), json!({"EventType": "open"}), json!({})];
    for body in missing {
        let message = post(&fake, body.clone()).await.error(400);
        assert!(message.contains("mandatory"), "{body}: {message}");
    }

    let bad_json = [
        (
            json!({"EventType": "open", "Url": url, "CallbackUrl": url}).to_string(),
            "has no property \"CallbackUrl\"",
        ),
        (
            json!({"eventType": "open", "Url": url}).to_string(),
            "has no property \"eventType\"",
        ),
        (
            json!({"EventType": 1, "Url": url}).to_string(),
            "\"EventType\" must be a string",
        ),
        (
            json!({"EventType": "open", "Url": url, "IsBackup": "true"}).to_string(),
            "\"IsBackup\" must be a boolean",
        ),
        (
            json!({"EventType": "open", "Url": url, "Version": "two"}).to_string(),
            "\"Version\" must be an integer",
        ),
        (
            json!([{"EventType": "open", "Url": url}]).to_string(),
            "an object was expected",
        ),
        ("{\"EventType\": ".to_owned(), "Invalid json input: "),
        (
            String::new(),
            "unexpected end of stream at stream position 0",
        ),
    ];
    for (body, expected) in bad_json {
        let message = send_raw(&fake, Method::POST, COLLECTION, &body)
            .await
            .error(400);
        assert!(
            message.starts_with("Invalid json input: "),
            "{body}: {message}"
        );
        assert!(message.contains(expected), "{body}: {message}");
    }

    assert!(fake.callbacks().is_empty());
    // Every refused request is still recorded, bodies as sent.
    let requests = fake.requests();
    assert_eq!(requests.len(), 21);
    assert_eq!(
        requests[18].body,
        json!([{"EventType": "open", "Url": url}])
    );
    assert_eq!(
        requests[19].body,
        Value::String("{\"EventType\": ".to_owned())
    );
    assert_eq!(requests[20].body, Value::Null);
}

#[tokio::test]
async fn put_changes_only_the_fields_it_names() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    let id = fake.insert(Callback::new("open", "https://old.example/open"));
    fake.set_status(id, "dead");

    let data = put(
        &fake,
        &id.to_string(),
        json!({"Url": "https://new.example/open"}),
    )
    .await
    .data(200);
    let expected = Callback {
        id,
        api_key_id: API_KEY_ID,
        status: "dead".to_owned(),
        ..Callback::new("open", "https://new.example/open")
    };
    assert_eq!(data, [expected.to_json()]);
    assert_eq!(fake.callbacks(), [expected]);

    // Reactivating a suspended URL, and switching to grouped events, by the unique key.
    let data = put(
        &fake,
        "open|false",
        json!({"Status": "alive", "Version": 2}),
    )
    .await
    .data(200);
    assert_eq!(data[0]["Status"], "alive");
    assert_eq!(data[0]["Version"], 2);
    assert_eq!(data[0]["Url"], "https://new.example/open");

    // Nothing changes: 304 and no body.
    for body in [
        json!({}),
        json!({"Status": "alive", "Url": "https://new.example/open"}),
    ] {
        let answer = put(&fake, &id.to_string(), body).await;
        assert_eq!(answer.status, 304);
        assert_eq!(answer.text, "");
    }

    // Moving onto another row's key is the duplicate error.
    fake.insert(Callback::new("click", "https://hooks.example/click"));
    let answer = put(&fake, &id.to_string(), json!({"EventType": "click"})).await;
    assert_eq!(
        answer.error(400),
        "MJ18 A EventCallbackURL resource with value \"1|false\" for EventType|Backup already \
         exists."
    );
    // An invalid field refuses the whole update.
    let answer = put(
        &fake,
        &id.to_string(),
        json!({"Url": "https://other.example/", "Version": 9}),
    )
    .await;
    answer.error(400);
    let row = &fake.callbacks()[0];
    assert_eq!(
        (row.event_type.as_str(), row.url.as_str(), row.version),
        ("open", "https://new.example/open", 2)
    );

    let answer = put(&fake, "999", json!({"Url": "https://x.example/"})).await;
    assert_eq!(answer.error(404), "Object not found");
}

#[tokio::test]
async fn delete_answers_204_with_no_body() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    let id = fake.insert(Callback::new("unsub", "https://hooks.example/unsub"));
    fake.insert(Callback {
        is_backup: true,
        ..Callback::new("unsub", "https://backup.example/unsub")
    });

    let path = format!("{COLLECTION}/{id}");
    let answer = send(&fake, Method::DELETE, &path, None).await;
    assert_eq!(answer.status, 204);
    assert_eq!(answer.text, "");
    assert_eq!(get(&fake, &path).await.error(404), "Object not found");
    let again = send(&fake, Method::DELETE, &path, None).await;
    assert_eq!(again.error(404), "Object not found");

    let answer = send(
        &fake,
        Method::DELETE,
        &format!("{COLLECTION}/unsub|true"),
        None,
    )
    .await;
    assert_eq!(answer.status, 204);
    assert!(fake.callbacks().is_empty());
}

#[tokio::test]
async fn unknown_resources_actions_and_methods_are_refused() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    let id = fake.insert(Callback::new("open", "https://hooks.example/open"));

    let answer = get(&fake, "/v3/REST/parseroute").await;
    assert!(answer.error(400).contains("parseroute"));
    let answer = get(&fake, &format!("{COLLECTION}/{id}/test")).await;
    assert!(answer.error(400).contains("test"));

    let not_allowed = [
        (Method::PUT, COLLECTION.to_owned()),
        (Method::DELETE, COLLECTION.to_owned()),
        (Method::POST, format!("{COLLECTION}/{id}")),
        (Method::PATCH, format!("{COLLECTION}/{id}")),
    ];
    for (method, path) in not_allowed {
        let answer = send(&fake, method.clone(), &path, Some(json!({}))).await;
        answer.error(405);
    }

    let answer = get(&fake, "/v3.1/REST/eventcallbackurl").await;
    assert_eq!(answer.status, 404);
    assert_eq!(fake.callbacks().len(), 1);
}

#[tokio::test]
async fn rate_limiting_answers_429_with_retry_after_then_recovers() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    fake.fail_next(
        2,
        Failure::RateLimited {
            retry_after_secs: 7,
        },
    );

    for _ in 0..2 {
        let answer = post(
            &fake,
            json!({"EventType": "open", "Url": "https://h.example/"}),
        )
        .await;
        assert_eq!(answer.header("retry-after"), Some("7"));
        assert!(answer.error(429).contains("maximum number of calls"));
    }
    // Nothing was created by the refused calls; the next one goes through.
    assert!(fake.callbacks().is_empty());
    post(
        &fake,
        json!({"EventType": "open", "Url": "https://h.example/"}),
    )
    .await
    .data(201);
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn server_errors_answer_that_status_in_mailjets_shape() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    fake.fail_next(1, Failure::ServerError(500));
    fake.fail_next(1, Failure::ServerError(503));

    // Failures come before the credentials are checked.
    let unauthenticated = client().get(format!("{}{COLLECTION}", fake.base_url()));
    let first = send_request(unauthenticated, None).await;
    let second = get(&fake, COLLECTION).await;
    let mut identifiers = Vec::new();
    for (answer, status) in [(first, 500), (second, 503)] {
        assert_eq!(answer.status, status);
        let body = answer.json();
        assert_eq!(body["StatusCode"], status);
        assert_eq!(body["ErrorInfo"], "");
        assert!(
            body["ErrorMessage"]
                .as_str()
                .unwrap()
                .contains(&status.to_string())
        );
        let identifier = body["ErrorIdentifier"].as_str().expect("ErrorIdentifier");
        assert_eq!(identifier.len(), 36, "UUID-shaped: {identifier}");
        identifiers.push(identifier.to_owned());
    }
    assert_ne!(identifiers[0], identifiers[1]);

    get(&fake, COLLECTION).await.data(200);
    let authorized: Vec<bool> = fake.requests().iter().map(|r| r.authorized).collect();
    assert_eq!(authorized, [false, true, true]);
}

#[tokio::test]
async fn hang_holds_the_request_until_the_fake_is_dropped() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    fake.fail_next(1, Failure::Hang);
    let url = format!("{}{COLLECTION}", fake.base_url());
    let request = tokio::spawn(async move {
        reqwest::Client::builder()
            .build()
            .expect("client without timeout")
            .get(url)
            .basic_auth(KEY, Some(SECRET))
            .send()
            .await
    });

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fake.requests().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!request.is_finished(), "a hanging request was answered");

    // The queue is used up: other requests are served meanwhile.
    get(&fake, COLLECTION).await.data(200);

    drop(fake);
    let outcome = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("the request ends once the fake is dropped")
        .expect("request task");
    assert!(
        outcome.is_err(),
        "no answer, only a closed connection: {outcome:?}"
    );
}

#[tokio::test]
async fn requests_record_method_path_query_body_and_credentials() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    get(&fake, &format!("{COLLECTION}?Limit=5&EventType=open%20x")).await;
    put(&fake, "sent%7Cfalse", json!({"Url": "https://h.example/"})).await;
    send_request(
        client()
            .delete(format!("{}{COLLECTION}/3", fake.base_url()))
            .basic_auth(KEY, Some("nope")),
        None,
    )
    .await;

    let requests = fake.requests();
    let summary: Vec<(&str, &str, bool)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str(), r.authorized))
        .collect();
    assert_eq!(
        summary,
        [
            ("GET", COLLECTION, true),
            ("PUT", "/v3/REST/eventcallbackurl/sent%7Cfalse", true),
            ("DELETE", "/v3/REST/eventcallbackurl/3", false),
        ]
    );
    assert_eq!(
        requests[0].query,
        [
            ("Limit".to_owned(), "5".to_owned()),
            ("EventType".to_owned(), "open x".to_owned())
        ]
    );
    assert_eq!(requests[0].body, Value::Null);
    assert_eq!(requests[1].body, json!({"Url": "https://h.example/"}));
    assert!(requests[1].query.is_empty());
}

#[tokio::test]
async fn test_side_changes_are_what_clients_see() {
    let fake = FakeMailjet::start(KEY, SECRET).await;
    let id = fake.insert(Callback::new("blocked", "https://hooks.example/blocked"));
    assert_eq!(fake.callbacks()[0].api_key_id, API_KEY_ID);

    // Mailjet suspends the URL.
    fake.set_status(id, "dead");
    let data = get(&fake, &format!("{COLLECTION}/{id}")).await.data(200);
    assert_eq!(data[0]["Status"], "dead");

    // Someone deletes it in the web UI.
    fake.remove(id);
    assert_eq!(get(&fake, COLLECTION).await.data(200), Vec::<Value>::new());
}

#[test]
#[should_panic(expected = "has the same EventType and IsBackup")]
fn seeding_a_duplicate_key_panics() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let fake = FakeMailjet::start(KEY, SECRET).await;
        fake.insert(Callback::new("open", "https://a.example/"));
        fake.insert(Callback::new("open", "https://b.example/"));
    });
}
