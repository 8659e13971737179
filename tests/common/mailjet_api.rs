//! A fake Mailjet REST API for tests: a local HTTP server with the one resource bouncewatch
//! manages, `/v3/REST/eventcallbackurl`, since the real Mailjet cannot be reached from the test
//! machines (and must not be reconfigured by them).
//!
//! It follows `shared/mailjet/EVENTS.md` ("Managing callbacks: the `eventcallbackurl` REST
//! resource") and, where that is silent, Mailjet's own documentation and answers seen on the
//! wire:
//!
//! - HTTP Basic with the API key as user and the secret key as password, checked before anything
//!   is routed. A refused request gets what `api.mailjet.com` was seen to answer on v3: `401`,
//!   `WWW-Authenticate: Basic realm="Provide an apiKey and secretKey"`, `text/html` and an empty
//!   body, not a JSON error (see [`unauthorized`]).
//! - Rows `{"APIKeyID", "EventType", "ID", "IsBackup", "Status", "Url", "Version"}`, answered in
//!   the envelope `{"Count", "Data", "Total"}`; every other error as
//!   `{"ErrorInfo": "", "ErrorMessage": ..., "StatusCode": ...}`.
//! - `GET` lists rows by ID, 10 by default, with the filters `Limit` (at most 1000, `0` meaning
//!   1000), `Offset`, `countOnly` and `EventType`. `Count` and `Total` are both the number of
//!   rows *returned*, as Mailjet documents; only `countOnly=1` gives the number of all rows
//!   (see [`list`]).
//! - A row is named by its `ID` or by its unique key `EventType|IsBackup` (`sent|false`).
//! - `POST` creates (`201`), and a second row for the same `EventType` and `IsBackup` is refused
//!   with Mailjet's `MJ18 ... already exists.` (`400`); `PUT` updates only the fields it names
//!   (`200`, or `304` with no body when nothing changes); `DELETE` answers `204` with no body.
//! - Unknown properties in a body are refused (`400`, `Invalid json input: ...`), as Mailjet's
//!   own JSON reader does; so are values Mailjet would not store: an `EventType` outside the seven
//!   event types, a `Version` other than 1 or 2, a `Url` that is not an absolute http(s) URL.
//!
//! Tests seed and inspect the rows directly ([`FakeMailjet::insert`], [`FakeMailjet::callbacks`],
//! [`FakeMailjet::set_status`] for Mailjet suspending a failing URL), queue failures with
//! [`FakeMailjet::fail_next`] (429s, 5xx, requests never answered) and read back every request
//! with [`FakeMailjet::requests`]. Which fact comes from where is said where it is used.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::proxy::{ProxiedListener, lock};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The only resource served, under `/v3/REST/`.
const RESOURCE: &str = "eventcallbackurl";

/// The `APIKeyID` of rows created through the API or seeded without one. A made-up account id:
/// Mailjet fills the field in from the credentials, and a client can only read it.
pub const API_KEY_ID: i64 = 1_234_567;

/// The event types a callback can be registered for (EVENTS.md: "one of the seven types";
/// Mailjet's staff gave the same list in mailjet/mailjet-apiv3-java#80, saying its older
/// reference, which also listed `typofix`, `parseapi` and others, was out of date).
pub const EVENT_TYPES: [&str; 7] = [
    "sent", "open", "click", "bounce", "blocked", "spam", "unsub",
];

/// Mailjet's internal order of event types, as far as it shows: its duplicate error names the
/// key by number, and `sent` was seen as `7` (Notifuse/notifuse#142). That matches the position
/// of `sent` in this list, the one Mailjet's Java SDK documented, so the other numbers are
/// inferred from it, not seen.
const INTERNAL_EVENT_ORDER: [&str; 8] = [
    "open", "click", "bounce", "spam", "blocked", "unsub", "typofix", "sent",
];

/// Rows per page when `Limit` is not given, and the most a page can hold (EVENTS.md; Mailjet's
/// filtering guide adds that `Limit=0` means the maximum).
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 1000;

/// The challenge `api.mailjet.com` sends with a v3 `401`.
const AUTH_REALM: &str = "Basic realm=\"Provide an apiKey and secretKey\"";

/// A Mailjet account on `127.0.0.1` holding event callbacks, served from the test's own tokio
/// runtime.
///
/// Dropping it stops the server and closes every connection, including those held by
/// [`Failure::Hang`].
pub struct FakeMailjet {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
    /// One proxy task per accepted connection, so that dropping the fake can cut them all (see
    /// [`ProxiedListener`]).
    connections: Arc<Mutex<JoinSet<()>>>,
    /// Dropped with the fake, which releases the handlers parked by [`Failure::Hang`].
    _shutdown: watch::Sender<()>,
}

/// What the next requests get instead of being served. Failures come before the credentials
/// are checked: they stand for Mailjet (or the way to it) being in trouble, whoever asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// HTTP 429 with `Retry-After: <secs>` and Mailjet's error body. Mailjet documents the 429
    /// but no rate-limit header at all; `Retry-After` is here so clients can be tested against
    /// the standard one.
    RateLimited { retry_after_secs: u64 },
    /// That HTTP status with Mailjet's error body plus an `ErrorIdentifier`, which Mailjet says
    /// its 500s carry.
    ServerError(u16),
    /// The request is read and never answered; the connection stays open until the fake is
    /// dropped, so a client without a timeout hangs.
    Hang,
}

/// One `eventcallbackurl` row. Serialized with Mailjet's spelling by [`Callback::to_json`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// `ID`; `0` in [`FakeMailjet::insert`] means "assign one".
    pub id: i64,
    /// `APIKeyID`; `0` in [`FakeMailjet::insert`] means [`API_KEY_ID`].
    pub api_key_id: i64,
    /// `EventType`: one of [`EVENT_TYPES`].
    pub event_type: String,
    /// `Url`, which may carry `user:pass@` and a port.
    pub url: String,
    /// `Version`: 1, one event per request, or 2, events grouped in arrays.
    pub version: i64,
    /// `IsBackup`: the URL that takes over while the main one is suspended.
    pub is_backup: bool,
    /// `Status`: `alive`, or `dead` once Mailjet has suspended the URL.
    pub status: String,
}

impl Callback {
    /// An `alive`, version 1, non-backup callback, as Mailjet creates one from `EventType` and
    /// `Url` alone. Change fields with struct update syntax.
    pub fn new(event_type: &str, url: &str) -> Callback {
        Callback {
            id: 0,
            api_key_id: 0,
            event_type: event_type.to_owned(),
            url: url.to_owned(),
            version: 1,
            is_backup: false,
            status: "alive".to_owned(),
        }
    }

    /// The row as Mailjet answers it (field names as in the 201 quoted in
    /// mailjet/mailjet-gem#266).
    pub fn to_json(&self) -> Value {
        json!({
            "APIKeyID": self.api_key_id,
            "EventType": self.event_type,
            "ID": self.id,
            "IsBackup": self.is_backup,
            "Status": self.status,
            "Url": self.url,
            "Version": self.version,
        })
    }
}

/// One request the fake read, answered or not.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path as sent, still percent-encoded.
    pub path: String,
    /// The query parameters, decoded, in order, repeats kept.
    pub query: Vec<(String, String)>,
    /// The body parsed as JSON; `Null` when empty, and the text as a JSON string when it is not
    /// JSON.
    pub body: Value,
    /// Whether it carried the fake's key and secret as HTTP Basic credentials.
    pub authorized: bool,
}

/// The state shared between the test and the request handlers.
struct Shared {
    api_key: String,
    secret: String,
    state: Mutex<MailjetState>,
    /// Changes (with an error) only when the fake is dropped.
    shutdown: watch::Receiver<()>,
}

struct MailjetState {
    /// By `ID`, which is also the order Mailjet lists them in.
    rows: BTreeMap<i64, Callback>,
    next_id: i64,
    failures: VecDeque<Failure>,
    requests: Vec<Request>,
    /// Numbers the `ErrorIdentifier`s of injected server errors.
    errors_issued: u64,
    /// `Status` is ignored in a `PUT` (see [`FakeMailjet::ignore_status_updates`]).
    status_read_only: bool,
}

impl FakeMailjet {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime, accepting `api_key` and
    /// `secret` as the Basic credentials.
    pub async fn start(api_key: &str, secret: &str) -> FakeMailjet {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FakeMailjet: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("FakeMailjet: local address");
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        let shared = Arc::new(Shared {
            api_key: api_key.to_owned(),
            secret: secret.to_owned(),
            state: Mutex::new(MailjetState {
                rows: BTreeMap::new(),
                next_id: 1,
                failures: VecDeque::new(),
                requests: Vec::new(),
                errors_issued: 0,
                status_read_only: false,
            }),
            shutdown: shutdown_rx,
        });
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = ProxiedListener {
            inner: listener,
            connections: connections.clone(),
        };
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("FakeMailjet: server stopped: {e}");
            }
        });
        FakeMailjet {
            addr,
            shared,
            server,
            connections,
            _shutdown: shutdown_tx,
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash: append `/v3/REST/eventcallbackurl`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every row, by `ID`.
    pub fn callbacks(&self) -> Vec<Callback> {
        self.shared.state().rows.values().cloned().collect()
    }

    /// Adds a row as if it had been created earlier, and returns its `ID` (assigned when
    /// `c.id` is 0; later IDs are assigned above the highest seen).
    ///
    /// # Panics
    ///
    /// If the `ID` is taken, or a row already has the same `EventType` and `IsBackup`: Mailjet
    /// never holds two, so a test that seeds them is testing nothing real.
    pub fn insert(&self, mut c: Callback) -> i64 {
        let mut state = self.shared.state();
        if c.id == 0 {
            c.id = state.next_id;
        }
        assert!(c.id > 0, "FakeMailjet: ID {} is not positive", c.id);
        assert!(
            !state.rows.contains_key(&c.id),
            "FakeMailjet: ID {} is taken",
            c.id
        );
        if let Some(other) = conflict(&state, &c, None) {
            panic!("FakeMailjet: {c:?} has the same EventType and IsBackup as {other:?}");
        }
        if c.api_key_id == 0 {
            c.api_key_id = API_KEY_ID;
        }
        state.next_id = state.next_id.max(c.id + 1);
        let id = c.id;
        state.rows.insert(id, c);
        id
    }

    /// Makes `Status` read-only in a `PUT`, as a real account may: EVENTS.md says only that
    /// "reactivating a suspended URL takes updating it", not that `Status` is writable.
    pub fn ignore_status_updates(&self) {
        self.shared.state().status_read_only = true;
    }

    /// Sets a row's `Status`, as Mailjet does when it suspends a failing URL (`dead`).
    ///
    /// # Panics
    ///
    /// If there is no such row, or `status` is neither `alive` nor `dead`.
    pub fn set_status(&self, id: i64, status: &str) {
        assert!(
            matches!(status, "alive" | "dead"),
            "FakeMailjet: Status {status:?} is neither \"alive\" nor \"dead\""
        );
        let mut state = self.shared.state();
        let row = state
            .rows
            .get_mut(&id)
            .unwrap_or_else(|| panic!("FakeMailjet: no callback with ID {id}"));
        row.status = status.to_owned();
    }

    /// Deletes a row behind the client's back (someone using Mailjet's web UI).
    ///
    /// # Panics
    ///
    /// If there is no such row.
    pub fn remove(&self, id: i64) {
        let removed = self.shared.state().rows.remove(&id);
        assert!(removed.is_some(), "FakeMailjet: no callback with ID {id}");
    }

    /// Answers the next `n` requests with `failure`. Queued failures are used in the order they
    /// were queued.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        if let Failure::ServerError(code) = failure {
            assert!(
                StatusCode::from_u16(code).is_ok(),
                "FakeMailjet: {code} is not an HTTP status"
            );
        }
        self.shared
            .state()
            .failures
            .extend(std::iter::repeat_n(failure, n));
    }

    /// Every request the fake read, in order, failed or not.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.state().requests.clone()
    }
}

impl Drop for FakeMailjet {
    fn drop(&mut self) {
        self.server.abort();
        // Closes every client connection at once, answered or not; the handlers parked by
        // `Failure::Hang` then return into connections that no longer reach anyone.
        lock(&self.connections).abort_all();
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, MailjetState> {
        lock(&self.state)
    }

    /// Whether `Authorization` is `Basic base64(key:secret)` with this account's key and
    /// secret. The scheme name is case-insensitive (RFC 7617).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        decoded.split_once(':') == Some((self.api_key.as_str(), self.secret.as_str()))
    }
}

/// Every request: recorded, then failed if a failure is queued, then authenticated, then routed.
async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let authorized = shared.authorized(&headers);
    let failure = {
        let mut state = shared.state();
        state.requests.push(Request {
            method: method.as_str().to_owned(),
            path: uri.path().to_owned(),
            query: query.clone(),
            body: recorded_body(&body),
            authorized,
        });
        state.failures.pop_front()
    };
    if let Some(failure) = failure {
        return fail(&shared, failure).await;
    }
    // Mailjet checks credentials before it routes: an unknown resource is a 401 too.
    if !authorized {
        return unauthorized();
    }
    route(&shared, &method, uri.path(), &query, &body)
}

fn recorded_body(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Sends an authenticated request to its handler.
fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
) -> Response {
    let Some(rest) = path.strip_prefix("/v3/REST/") else {
        // Outside the REST API Mailjet's front server answers an HTML 404
        // (mailjet/mailjet-gem#134).
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>404 Not Found</h1></body></html>",
        )
            .into_response();
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (resource, key) = match rest.split_once('/') {
        Some((resource, key)) => (resource, Some(key)),
        None => (rest, None),
    };
    // Mailjet's status table: 400 is "unknown resource or action", 405 "the method requested
    // on the resource does not exist".
    if resource != RESOURCE {
        return mj_error(
            StatusCode::BAD_REQUEST,
            &format!("Unknown resource: \"{resource}\""),
        );
    }
    if let Some(key) = key
        && key.contains('/')
    {
        return mj_error(
            StatusCode::BAD_REQUEST,
            &format!("Unknown action: \"{key}\""),
        );
    }
    match (method.as_str(), key) {
        ("GET", None) => list(shared, query),
        ("POST", None) => create(shared, body),
        ("GET", Some(key)) => get_one(shared, key),
        ("PUT", Some(key)) => update(shared, key, body),
        ("DELETE", Some(key)) => delete(shared, key),
        _ => mj_error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("Method {method} is not allowed on this resource"),
        ),
    }
}

/// `GET /eventcallbackurl`: a page of rows by `ID`.
///
/// Filters, from Mailjet's filtering guide unless said otherwise: `Limit` (default 10, at most
/// 1000, `0` meaning 1000; larger values are capped here, which the guide does not cover),
/// `Offset`, `countOnly` (`Data` empty, `Count` and `Total` the number of matching rows) and
/// `EventType` (exact match; seen working in mailjet/mailjet-apiv3-java#80, not in the guide).
/// Only the first occurrence of a filter counts, as documented. Filter names are matched
/// case-insensitively because Mailjet answered `?eventType=blocked` in that issue. Any other
/// filter, and a value that is not a number, is refused with a 400: the fake would otherwise
/// answer as if the filter had been applied.
///
/// Without `countOnly`, `Count` and `Total` are both the number of rows in `Data`: "When you
/// call a resource without the filter countOnly, Count and Total will only show you the number
/// of elements extracted and not the global number" (filtering guide; Mailjet's support said
/// the same in mailjet/mailjet-apiv3-dotnet#48).
fn list(shared: &Shared, query: &[(String, String)]) -> Response {
    let mut limit = DEFAULT_LIMIT;
    let mut offset = 0;
    let mut count_only = false;
    let mut event_type: Option<&str> = None;
    let mut seen = HashSet::new();
    for (name, value) in query {
        let name_lower = name.to_ascii_lowercase();
        if !seen.insert(name_lower.clone()) {
            continue;
        }
        match name_lower.as_str() {
            "limit" => match value.parse::<usize>() {
                Ok(0) => limit = MAX_LIMIT,
                Ok(n) => limit = n.min(MAX_LIMIT),
                Err(_) => return bad_filter_value(name, value),
            },
            "offset" => match value.parse::<usize>() {
                Ok(n) => offset = n,
                Err(_) => return bad_filter_value(name, value),
            },
            "countonly" => match value.as_str() {
                "1" | "true" => count_only = true,
                "0" | "false" => count_only = false,
                _ => return bad_filter_value(name, value),
            },
            "eventtype" => event_type = Some(value),
            _ => {
                return mj_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Unknown filter: \"{name}\" (FakeMailjet does not model it)"),
                );
            }
        }
    }
    let state = shared.state();
    let matching: Vec<&Callback> = state
        .rows
        .values()
        .filter(|row| event_type.is_none_or(|t| row.event_type == t))
        .collect();
    if count_only {
        return envelope(StatusCode::OK, Vec::new(), matching.len());
    }
    let page: Vec<Value> = matching
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(Callback::to_json)
        .collect();
    let count = page.len();
    envelope(StatusCode::OK, page, count)
}

fn bad_filter_value(name: &str, value: &str) -> Response {
    mj_error(
        StatusCode::BAD_REQUEST,
        &format!("Invalid value for filter \"{name}\": \"{value}\""),
    )
}

/// `GET /eventcallbackurl/{ID or EventType|IsBackup}`: that row, or Mailjet's 404.
fn get_one(shared: &Shared, key: &str) -> Response {
    let state = shared.state();
    match resolve(&state, key) {
        Some(id) => envelope(StatusCode::OK, vec![state.rows[&id].to_json()], 1),
        None => not_found(),
    }
}

/// `POST /eventcallbackurl`: a new row from `EventType` and `Url`, with `Version` 1,
/// `IsBackup` false and `Status` alive unless the body says otherwise (EVENTS.md: version 1 is
/// the default; mailjet/mailjet-gem#266 shows a new row `alive`).
fn create(shared: &Shared, body: &[u8]) -> Response {
    let patch = match Patch::parse(body) {
        Ok(patch) => patch,
        Err(message) => return mj_error(StatusCode::BAD_REQUEST, &message),
    };
    let (Some(event_type), Some(url)) = (patch.event_type, patch.url) else {
        return mj_error(
            StatusCode::BAD_REQUEST,
            "EventType and Url are mandatory to create an eventcallbackurl",
        );
    };
    let mut row = Callback {
        id: 0,
        api_key_id: API_KEY_ID,
        event_type,
        url,
        version: patch.version.unwrap_or(1),
        is_backup: patch.is_backup.unwrap_or(false),
        status: patch.status.unwrap_or_else(|| "alive".to_owned()),
    };
    let mut state = shared.state();
    if conflict(&state, &row, None).is_some() {
        return duplicate(&row);
    }
    row.id = state.next_id;
    state.next_id += 1;
    let answer = row.to_json();
    state.rows.insert(row.id, row);
    envelope(StatusCode::CREATED, vec![answer], 1)
}

/// `PUT /eventcallbackurl/{key}`: changes the fields the body names and keeps the others, as
/// every Mailjet `PUT` does (API overview: "all PUT requests behave like PATCH requests").
/// `Status` changes only when the body sets it. A `PUT` that changes nothing is `304 Not
/// Modified` with no body ("The PUT request didn't affect any record", status table).
fn update(shared: &Shared, key: &str, body: &[u8]) -> Response {
    let mut state = shared.state();
    let Some(id) = resolve(&state, key) else {
        return not_found();
    };
    let patch = match Patch::parse(body) {
        Ok(patch) => patch,
        Err(message) => return mj_error(StatusCode::BAD_REQUEST, &message),
    };
    let old = state.rows[&id].clone();
    let new = Callback {
        event_type: patch.event_type.unwrap_or_else(|| old.event_type.clone()),
        url: patch.url.unwrap_or_else(|| old.url.clone()),
        version: patch.version.unwrap_or(old.version),
        is_backup: patch.is_backup.unwrap_or(old.is_backup),
        status: match patch.status {
            Some(status) if !state.status_read_only => status,
            _ => old.status.clone(),
        },
        ..old.clone()
    };
    if new == old {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    if conflict(&state, &new, Some(id)).is_some() {
        return duplicate(&new);
    }
    let answer = new.to_json();
    state.rows.insert(id, new);
    envelope(StatusCode::OK, vec![answer], 1)
}

/// `DELETE /eventcallbackurl/{key}`: `204` with an empty body, or Mailjet's 404.
fn delete(shared: &Shared, key: &str) -> Response {
    let mut state = shared.state();
    match resolve(&state, key) {
        Some(id) => {
            state.rows.remove(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found(),
    }
}

/// The row a path names: a number is an `ID`; `EventType|IsBackup` (`sent|false`, the `|`
/// possibly percent-encoded) is the unique key, as Mailjet's filtering guide documents for this
/// resource. Anything else names nothing.
fn resolve(state: &MailjetState, key: &str) -> Option<i64> {
    let key = percent_decode(key);
    if let Ok(id) = key.parse::<i64>() {
        return state.rows.contains_key(&id).then_some(id);
    }
    let (event_type, backup) = key.split_once('|')?;
    let is_backup = match backup {
        "true" => true,
        "false" => false,
        _ => return None,
    };
    state
        .rows
        .values()
        .find(|row| row.event_type == event_type && row.is_backup == is_backup)
        .map(|row| row.id)
}

/// The other row with the same `EventType` and `IsBackup`, Mailjet's unique key ("One callback
/// per EventType (plus a backup)", EVENTS.md).
fn conflict<'a>(
    state: &'a MailjetState,
    row: &Callback,
    except: Option<i64>,
) -> Option<&'a Callback> {
    state.rows.values().find(|other| {
        Some(other.id) != except
            && other.event_type == row.event_type
            && other.is_backup == row.is_backup
    })
}

/// Mailjet's answer to a second row for the same key, word for word as seen on the wire
/// (Notifuse/notifuse#142: `MJ18 A EventCallbackURL resource with value "7|false" for
/// EventType|Backup already exists.` for `sent`); see [`INTERNAL_EVENT_ORDER`] for the number.
fn duplicate(row: &Callback) -> Response {
    let number = INTERNAL_EVENT_ORDER
        .iter()
        .position(|t| *t == row.event_type)
        .expect("EventType was validated");
    mj_error(
        StatusCode::BAD_REQUEST,
        &format!(
            "MJ18 A EventCallbackURL resource with value \"{number}|{}\" for EventType|Backup \
             already exists.",
            row.is_backup
        ),
    )
}

/// The writable fields of a `POST` or `PUT` body, each validated when present.
#[derive(Default)]
struct Patch {
    event_type: Option<String>,
    url: Option<String>,
    version: Option<i64>,
    is_backup: Option<bool>,
    status: Option<String>,
}

impl Patch {
    /// Reads a body as Mailjet does: JSON whatever the `Content-Type` (mailjet/mailjet-gem#36:
    /// a form-encoded body was parsed as JSON and refused). The error is the `ErrorMessage` of
    /// the 400 to answer.
    ///
    /// Malformed JSON, a property the resource does not have and a value of the wrong JSON type
    /// are `Invalid json input: ...`, the message Mailjet's reader gives (an unknown property:
    /// `Invalid json input: object ""->"TContactData" has no property "unique"`,
    /// mailjet/mailjet-apiv3-php-simple#16; the class name here follows that pattern). Values of
    /// the right type that Mailjet would not store get messages of the fake's own, since
    /// Mailjet's are not published.
    fn parse(body: &[u8]) -> Result<Patch, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            // Seen as the reason phrase of such a 400 in mailjet/mailjet-apiv3-java#136.
            return Err(invalid_json(
                "unexpected end of stream at stream position 0 ...|...",
            ));
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| invalid_json(&e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(invalid_json("an object was expected"));
        };
        let mut patch = Patch::default();
        for (name, value) in &fields {
            match name.as_str() {
                "EventType" => {
                    let event_type = string_field(&fields, name)?;
                    if !EVENT_TYPES.contains(&event_type.as_str()) {
                        return Err(invalid_value(name, value, "one of the seven event types"));
                    }
                    patch.event_type = Some(event_type);
                }
                "Url" => {
                    let url = string_field(&fields, name)?;
                    if !is_http_url(&url) {
                        return Err(invalid_value(name, value, "an absolute http(s) URL"));
                    }
                    patch.url = Some(url);
                }
                "Version" => {
                    // A number or a numeric string: Mailjet's own examples send both
                    // (`"Version": 2` with curl, `"Version": "2"` from its SDKs).
                    let version = match value {
                        Value::Number(n) => n.as_i64(),
                        Value::String(s) => s.trim().parse::<i64>().ok(),
                        _ => None,
                    };
                    let Some(version) = version else {
                        return Err(wrong_type(name, "an integer"));
                    };
                    if !matches!(version, 1 | 2) {
                        return Err(invalid_value(name, value, "1 or 2"));
                    }
                    patch.version = Some(version);
                }
                "IsBackup" => {
                    let Value::Bool(is_backup) = value else {
                        return Err(wrong_type(name, "a boolean"));
                    };
                    patch.is_backup = Some(*is_backup);
                }
                "Status" => {
                    let status = string_field(&fields, name)?;
                    if !matches!(status.as_str(), "alive" | "dead") {
                        return Err(invalid_value(name, value, "\"alive\" or \"dead\""));
                    }
                    patch.status = Some(status);
                }
                // Read-only: a client that sends back a row it read is not refused, and the
                // values are not taken.
                "ID" | "APIKeyID" => {}
                _ => {
                    return Err(invalid_json(&format!(
                        "object \"\"->\"TEventCallbackUrl\" has no property \"{name}\""
                    )));
                }
            }
        }
        Ok(patch)
    }
}

fn string_field(fields: &Map<String, Value>, name: &str) -> Result<String, String> {
    match fields.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(wrong_type(name, "a string")),
    }
}

/// Absolute, `http` or `https`, with a host; credentials and a port are allowed (EVENTS.md).
fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    })
}

fn invalid_json(detail: &str) -> String {
    format!("Invalid json input: {detail}")
}

fn wrong_type(name: &str, expected: &str) -> String {
    invalid_json(&format!("property \"{name}\" must be {expected}"))
}

fn invalid_value(name: &str, value: &Value, expected: &str) -> String {
    format!("Invalid value for property \"{name}\": {value} (expected {expected})")
}

/// Decodes `%XX` escapes; anything malformed is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || {
            let digits = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            u8::from_str_radix(digits, 16).ok()
        };
        match (bytes[i], hex()) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers a request with a queued failure.
async fn fail(shared: &Shared, failure: Failure) -> Response {
    match failure {
        Failure::RateLimited { retry_after_secs } => {
            // The status table's own wording for a 429.
            let mut response = mj_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Oops! You have reached the maximum number of calls allowed per minute by our \
                 API. Please review your integration to reduce the number of calls issued by \
                 your system.",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_secs.into());
            response
        }
        Failure::ServerError(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let n = {
                let mut state = shared.state();
                state.errors_issued += 1;
                state.errors_issued
            };
            let body = json!({
                "ErrorIdentifier": format!("00000000-0000-4000-8000-{n:012x}"),
                "ErrorInfo": "",
                "ErrorMessage": format!("FakeMailjet: injected HTTP {code}"),
                "StatusCode": code,
            });
            json_response(status, &body)
        }
        Failure::Hang => {
            let mut shutdown = shared.shutdown.clone();
            // Never changes: this returns when the sender is dropped with the fake, by which
            // time the connection is closed and this answer reaches no one.
            while shutdown.changed().await.is_ok() {}
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Missing or wrong credentials, as `api.mailjet.com` answers them on v3: a `401` with the
/// Basic challenge, `Content-Type: text/html` and no JSON. Seen on the wire (the headers of
/// `GET /v3/REST/apikey`, quoted in the w6w Mailjet app's notes); the body was empty in the
/// one v3 REST 401 printed in full (mailjet/mailjet-gem#54). JSON 401s with `ErrorIdentifier`
/// and `ErrorCode` come from the v3.1 Send API, not from this resource.
fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, AUTH_REALM),
            (header::CONTENT_TYPE, "text/html"),
        ],
    )
        .into_response()
}

/// The 404 of a missing row, word for word as Mailjet's v3 REST answers it
/// (mailjet/mailjet-apiv3-nodejs#213).
fn not_found() -> Response {
    mj_error(StatusCode::NOT_FOUND, "Object not found")
}

/// `{"Count": count, "Data": data, "Total": count}`.
fn envelope(status: StatusCode, data: Vec<Value>, count: usize) -> Response {
    json_response(
        status,
        &json!({"Count": count, "Data": data, "Total": count}),
    )
}

/// Mailjet's v3 REST error body (EVENTS.md; every v3 REST error quoted in Mailjet's issue
/// trackers has exactly these three fields, `ErrorInfo` empty).
fn mj_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({"ErrorInfo": "", "ErrorMessage": message, "StatusCode": status.as_u16()}),
    )
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
