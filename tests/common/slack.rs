//! A fake Slack for tests: a local HTTP server that answers the two ways bouncewatch may post
//! alerts, since the real Slack cannot be reached from the test machines.
//!
//! It mimics:
//!
//! - the Web API methods `chat.postMessage` and `chat.update` under [`FakeSlack::api_url`]
//!   (<https://api.slack.com/methods/chat.postMessage>,
//!   <https://api.slack.com/methods/chat.update>): JSON or form-encoded arguments, the token in
//!   `Authorization: Bearer`, and every outcome but rate limiting as HTTP 200 with
//!   `{"ok": bool, ...}`, failures naming their error code (`invalid_auth`, `no_text`, ...);
//! - one incoming webhook at [`FakeSlack::webhook_url`]
//!   (<https://api.slack.com/messaging/webhooks>): a JSON body, `ok` as plain text on success and
//!   otherwise a 4xx status with the bare error code as the body, the statuses being those of
//!   <https://api.slack.com/changelog/2016-05-17-changes-to-errors-for-incoming-webhooks>;
//! - rate limiting (<https://api.slack.com/docs/rate-limits>): HTTP 429 with `Retry-After` in
//!   seconds, and for the Web API the body `{"ok":false,"error":"ratelimited"}`.
//!
//! Tests queue failures with [`FakeSlack::fail_next`] (429s, 5xx, Slack error codes, requests
//! that are never answered) and read back what was posted with [`FakeSlack::received`] and
//! [`FakeSlack::wait_received`]. Only what a sender can observe is modelled: channels are not
//! checked for existence, and a channel given by name gets a made-up but stable id.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::proxy::{ProxiedListener, lock};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

/// The one incoming webhook the fake serves; any other `/services/...` path is `no_service`.
const WEBHOOK_PATH: &str = "/services/T000/B000/XXXXXXXX";

/// The bot token accepted until a test calls [`FakeSlack::set_bot_token`].
const DEFAULT_TOKEN: &str = "xoxb-test";

/// Message timestamps are microseconds since the epoch, rendered `seconds.micros` as Slack
/// renders them. The first one handed out is `1700000000.000100`.
const FIRST_TS_MICROS: u64 = 1_700_000_000_000_000;
const TS_STEP_MICROS: u64 = 100;

/// A Slack workspace on `127.0.0.1`, served from the test's own tokio runtime.
///
/// Dropping it stops the server and closes every connection, including those held by
/// [`Failure::Hang`].
pub struct FakeSlack {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
    /// One proxy task per accepted connection, so that dropping the fake can cut them all (see
    /// [`ProxiedListener`]).
    connections: Arc<Mutex<JoinSet<()>>>,
    /// Dropped with the fake, which releases the handlers parked by [`Failure::Hang`].
    _shutdown: watch::Sender<()>,
}

/// What the next calls (of any endpoint) get instead of being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// HTTP 429 with `Retry-After: <secs>`; the Web API body is
    /// `{"ok":false,"error":"ratelimited"}`, the webhook's is `rate_limited` as plain text.
    RateLimited { retry_after_secs: u64 },
    /// That HTTP status with a short plain-text body that is not JSON, as a load balancer or an
    /// outage would answer.
    ServerError(u16),
    /// A Slack error: for the Web API HTTP 200 `{"ok":false,"error":<code>}`, for the webhook
    /// the status Slack documents for that code (400 when it documents none) and the code as a
    /// plain-text body.
    SlackError(&'static str),
    /// The request is read and never answered; the connection stays open until the fake is
    /// dropped, so a sender without a timeout hangs.
    Hang,
}

/// Which endpoint a call reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Webhook,
    PostMessage,
    Update,
}

/// One call that succeeded, as the fake understood it.
#[derive(Debug, Clone)]
pub struct Received {
    pub kind: Kind,
    /// The channel id (a name such as `#alerts` is recorded as the id the fake answered with).
    /// `None` for the webhook, whose channel is fixed when it is created.
    pub channel: Option<String>,
    /// The `ts` of the message this call created or updated. `None` for the webhook, which
    /// does not tell the sender the `ts` either.
    pub ts: Option<String>,
    /// The `thread_ts` the call sent, if any.
    pub thread_ts: Option<String>,
    /// The `text` the call sent, if it was a string.
    pub text: Option<String>,
    /// The blocks the call sent, parsed when they came as a form field; `Null` when absent.
    pub blocks: Value,
    /// The body as sent: the JSON object, or the form fields as an object of strings.
    pub body: Value,
    /// Every request header, names in lower case.
    pub headers: Vec<(String, String)>,
}

/// The state shared between the test and the request handlers.
struct Shared {
    state: Mutex<SlackState>,
    /// Woken whenever a call succeeds, for [`FakeSlack::wait_received`].
    received_changed: Notify,
    /// Changes (with an error) only when the fake is dropped.
    shutdown: watch::Receiver<()>,
}

struct SlackState {
    token: String,
    failures: VecDeque<Failure>,
    received: Vec<Received>,
    attempts: usize,
    /// Messages posted through the Web API, by (channel id, ts), for `chat.update`.
    messages: HashMap<(String, String), Message>,
    last_ts_micros: u64,
}

/// A message as `chat.update` sees it.
struct Message {
    text: Option<String>,
    blocks: Value,
    thread_ts: Option<String>,
}

impl FakeSlack {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub async fn start() -> FakeSlack {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FakeSlack: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("FakeSlack: local address");
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        let shared = Arc::new(Shared {
            state: Mutex::new(SlackState {
                token: DEFAULT_TOKEN.to_owned(),
                failures: VecDeque::new(),
                received: Vec::new(),
                attempts: 0,
                messages: HashMap::new(),
                last_ts_micros: FIRST_TS_MICROS,
            }),
            received_changed: Notify::new(),
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
                eprintln!("FakeSlack: server stopped: {e}");
            }
        });
        FakeSlack {
            addr,
            shared,
            server,
            connections,
            _shutdown: shutdown_tx,
        }
    }

    /// The Web API base, with its trailing slash: append the method name.
    pub fn api_url(&self) -> String {
        format!("http://{}/api/", self.addr)
    }

    /// The incoming webhook's URL.
    pub fn webhook_url(&self) -> String {
        format!("http://{}{WEBHOOK_PATH}", self.addr)
    }

    /// Makes `token` the only bearer token the Web API accepts.
    pub fn set_bot_token(&self, token: &str) {
        self.shared.state().token = token.to_owned();
    }

    /// Answers the next `n` calls, whatever their endpoint, with `failure`. Queued failures are
    /// used in the order they were queued.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        if let Failure::ServerError(code) = failure {
            assert!(
                StatusCode::from_u16(code).is_ok(),
                "FakeSlack: {code} is not an HTTP status"
            );
        }
        self.shared
            .state()
            .failures
            .extend(std::iter::repeat_n(failure, n));
    }

    /// Every call that succeeded, in the order they were served.
    pub fn received(&self) -> Vec<Received> {
        self.shared.state().received.clone()
    }

    /// Every call the fake read, failed or not.
    pub fn attempts(&self) -> usize {
        self.shared.state().attempts
    }

    /// Waits until at least `n` calls have succeeded and returns them all.
    ///
    /// # Panics
    ///
    /// After `timeout`, with what was received so far.
    pub async fn wait_received(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before looking, so that a call served in between still wakes us.
            let notified = self.shared.received_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.shared.state();
                if state.received.len() >= n {
                    return state.received.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let state = self.shared.state();
                panic!(
                    "FakeSlack: waited {timeout:?} for {n} successful calls, got {} \
                     ({} attempts):\n{:#?}",
                    state.received.len(),
                    state.attempts,
                    state.received
                );
            }
        }
    }
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.server.abort();
        // Closes every client connection at once, answered or not; the handlers parked by
        // `Failure::Hang` then return into connections that no longer reach anyone.
        lock(&self.connections).abort_all();
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, SlackState> {
        lock(&self.state)
    }
}

/// Every request: counted, then failed if a failure is queued, then routed.
async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let api_method = path.strip_prefix("/api/");
    let failure = {
        let mut state = shared.state();
        state.attempts += 1;
        state.failures.pop_front()
    };
    if let Some(failure) = failure {
        return fail(&shared, failure, api_method.is_some()).await;
    }
    if method != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    let headers = headers_of(&headers);
    match api_method {
        Some("chat.postMessage") => post_message(&shared, headers, &body),
        Some("chat.update") => update(&shared, headers, &body),
        Some(other) => {
            api_json(json!({"ok": false, "error": "unknown_method", "req_method": other}))
        }
        None if path == WEBHOOK_PATH => webhook(&shared, headers, &body),
        None if path.starts_with("/services/") => plain(StatusCode::NOT_FOUND, "no_service"),
        None => plain(StatusCode::NOT_FOUND, "not_found"),
    }
}

/// Answers a call with a queued failure, in the form of the endpoint it reached.
async fn fail(shared: &Shared, failure: Failure, web_api: bool) -> Response {
    match failure {
        Failure::RateLimited { retry_after_secs } => {
            let (content_type, body) = if web_api {
                (
                    "application/json; charset=utf-8",
                    json!({"ok": false, "error": "ratelimited"}).to_string(),
                )
            } else {
                ("text/plain; charset=utf-8", "rate_limited".to_owned())
            };
            (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    (header::CONTENT_TYPE, content_type.to_owned()),
                    (header::RETRY_AFTER, retry_after_secs.to_string()),
                ],
                body,
            )
                .into_response()
        }
        Failure::ServerError(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            plain(status, &format!("FakeSlack: injected HTTP {code}"))
        }
        Failure::SlackError(code) if web_api => api_error(code),
        Failure::SlackError(code) => plain(webhook_error_status(code), code),
        Failure::Hang => {
            let mut shutdown = shared.shutdown.clone();
            // Never changes: this returns when the sender is dropped with the fake, by which
            // time the connection is closed and this answer reaches no one.
            while shutdown.changed().await.is_ok() {}
            plain(StatusCode::SERVICE_UNAVAILABLE, "FakeSlack: dropped")
        }
    }
}

/// The status Slack documents for an incoming webhook error.
///
/// From the 2016-05-17 changelog (see the module doc): `invalid_payload` and `user_not_found`
/// 400, `action_prohibited` 403, `channel_not_found` 404, `channel_is_archived` 410,
/// `rollup_error` 500. The others are as published Slack clients handle them (the webhook
/// guide's own error table could not be checked): `no_service` and the like 404,
/// `invalid_token` 403, anything else 400.
fn webhook_error_status(code: &str) -> StatusCode {
    match code {
        "action_prohibited" | "posting_to_general_channel_denied" | "invalid_token" => {
            StatusCode::FORBIDDEN
        }
        "channel_not_found" | "no_service" | "no_team" | "team_disabled" | "no_active_hooks" => {
            StatusCode::NOT_FOUND
        }
        "channel_is_archived" => StatusCode::GONE,
        "rollup_error" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The arguments of a Web API call, whichever encoding they came in.
struct Args {
    body: Value,
    channel: Option<String>,
    ts: Option<String>,
    thread_ts: Option<String>,
    text: Option<String>,
    /// `Null` when absent; otherwise the blocks, still to be validated.
    blocks: Value,
    has_attachments: bool,
}

impl Args {
    /// Reads a JSON body. The error is the code Slack answers with.
    fn from_json(body: &[u8]) -> Result<Args, &'static str> {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return Err("invalid_json");
        };
        let Value::Object(fields) = &value else {
            return Err("json_not_object");
        };
        let string = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_owned);
        Ok(Args {
            channel: string("channel"),
            ts: string("ts"),
            thread_ts: string("thread_ts"),
            text: string("text"),
            blocks: fields.get("blocks").cloned().unwrap_or(Value::Null),
            has_attachments: fields
                .get("attachments")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()),
            body: value,
        })
    }

    /// Reads a form body, where `blocks` and `attachments` are JSON in a string.
    fn from_form(body: &[u8]) -> Result<Args, &'static str> {
        let fields: Map<String, Value> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        let string = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_owned);
        let blocks = match string("blocks") {
            None => Value::Null,
            Some(json) => serde_json::from_str(&json).map_err(|_| "invalid_blocks")?,
        };
        let has_attachments = string("attachments")
            .and_then(|json| serde_json::from_str::<Vec<Value>>(&json).ok())
            .is_some_and(|a| !a.is_empty());
        Ok(Args {
            channel: string("channel"),
            ts: string("ts"),
            thread_ts: string("thread_ts"),
            text: string("text"),
            blocks,
            has_attachments,
            body: Value::Object(fields),
        })
    }

    /// Whether the message says anything: Slack wants text, blocks or attachments.
    fn has_content(&self) -> bool {
        self.text.as_deref().is_some_and(|t| !t.is_empty())
            || self.blocks.as_array().is_some_and(|b| !b.is_empty())
            || self.has_attachments
    }
}

/// Block Kit, checked only as far as a sender can get the shape wrong: an array of objects
/// that each name their `type`.
fn blocks_valid(blocks: &Value) -> bool {
    match blocks {
        Value::Null => true,
        Value::Array(blocks) => blocks
            .iter()
            .all(|b| b.get("type").is_some_and(Value::is_string)),
        _ => false,
    }
}

/// Checks what `chat.postMessage` and `chat.update` check alike: the token, the encoding and
/// the message. Returns the arguments and the channel id, or the error code to answer with.
fn web_api_args(
    shared: &Shared,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(Args, String), &'static str> {
    let token = header_value(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or("not_authed")?;
    if token != shared.state().token {
        return Err("invalid_auth");
    }
    let content_type = header_value(headers, "content-type").ok_or("missing_post_type")?;
    let args = match media_type(content_type).as_str() {
        "application/json" => Args::from_json(body)?,
        "application/x-www-form-urlencoded" => Args::from_form(body)?,
        _ => return Err("invalid_post_type"),
    };
    let channel = match args.channel.as_deref() {
        Some(channel) if !channel.is_empty() => channel_id(channel),
        _ => return Err("channel_not_found"),
    };
    if !blocks_valid(&args.blocks) {
        return Err("invalid_blocks");
    }
    if !args.has_content() {
        return Err("no_text");
    }
    Ok((args, channel))
}

/// `chat.postMessage`: a new message, with a fresh `ts`, in the channel or a thread of it.
fn post_message(shared: &Shared, headers: Vec<(String, String)>, body: &[u8]) -> Response {
    let (args, channel) = match web_api_args(shared, &headers, body) {
        Ok(checked) => checked,
        Err(code) => return api_error(code),
    };
    let mut state = shared.state();
    state.last_ts_micros += TS_STEP_MICROS;
    let ts = render_ts(state.last_ts_micros);
    let message = Message {
        text: args.text.clone(),
        blocks: args.blocks.clone(),
        thread_ts: args.thread_ts.clone(),
    };
    let answer = json!({
        "ok": true,
        "channel": channel,
        "ts": ts,
        "message": message.to_json(&ts),
    });
    state
        .messages
        .insert((channel.clone(), ts.clone()), message);
    let received = Received {
        kind: Kind::PostMessage,
        channel: Some(channel),
        ts: Some(ts),
        thread_ts: args.thread_ts,
        text: args.text,
        blocks: args.blocks,
        body: args.body,
        headers,
    };
    record(shared, state, received);
    api_json(answer)
}

/// `chat.update`: a message posted earlier, named by channel and `ts`, gets new content.
fn update(shared: &Shared, headers: Vec<(String, String)>, body: &[u8]) -> Response {
    let (args, channel) = match web_api_args(shared, &headers, body) {
        Ok(checked) => checked,
        Err(code) => return api_error(code),
    };
    let Some(ts) = args.ts.clone() else {
        return api_error("message_not_found");
    };
    let mut state = shared.state();
    let Some(message) = state.messages.get_mut(&(channel.clone(), ts.clone())) else {
        return api_error("message_not_found");
    };
    // As documented: blocks are replaced when given, and dropped when only text is.
    if !args.blocks.is_null() {
        message.blocks = args.blocks.clone();
    } else if args.text.is_some() {
        message.blocks = Value::Null;
    }
    if args.text.is_some() {
        message.text = args.text.clone();
    }
    let answer = json!({
        "ok": true,
        "channel": channel,
        "ts": ts,
        "text": message.text.clone().unwrap_or_default(),
        "message": message.to_json(&ts),
    });
    let received = Received {
        kind: Kind::Update,
        channel: Some(channel),
        ts: Some(ts),
        thread_ts: args.thread_ts,
        text: args.text,
        blocks: args.blocks,
        body: args.body,
        headers,
    };
    record(shared, state, received);
    api_json(answer)
}

/// Adds a successful call and wakes [`FakeSlack::wait_received`].
fn record(shared: &Shared, mut state: MutexGuard<'_, SlackState>, received: Received) {
    state.received.push(received);
    drop(state);
    shared.received_changed.notify_waiters();
}

impl Message {
    /// The `message` object of a Web API answer, as a bot token's message looks.
    fn to_json(&self, ts: &str) -> Value {
        let mut message = json!({
            "type": "message",
            "user": "U0BOT",
            "bot_id": "B0BOT",
            "team": "T000",
            "ts": ts,
            "text": self.text.clone().unwrap_or_default(),
        });
        if !self.blocks.is_null() {
            message["blocks"] = self.blocks.clone();
        }
        if let Some(thread_ts) = &self.thread_ts {
            message["thread_ts"] = Value::String(thread_ts.clone());
        }
        message
    }
}

/// The incoming webhook.
fn webhook(shared: &Shared, headers: Vec<(String, String)>, body: &[u8]) -> Response {
    let Ok(args) = Args::from_json(body) else {
        return plain(StatusCode::BAD_REQUEST, "invalid_payload");
    };
    if !blocks_valid(&args.blocks) {
        return plain(StatusCode::BAD_REQUEST, "invalid_blocks");
    }
    if !args.has_content() {
        return plain(StatusCode::BAD_REQUEST, "no_text");
    }
    let received = Received {
        kind: Kind::Webhook,
        channel: None,
        ts: None,
        thread_ts: args.thread_ts,
        text: args.text,
        blocks: args.blocks,
        body: args.body,
        headers,
    };
    record(shared, shared.state(), received);
    plain(StatusCode::OK, "ok")
}

/// The id for a channel argument: ids (`C…`, `G…`, `D…` in capitals and digits) as given,
/// names (with or without `#`) as `C` and ten hex digits of their FNV-1a hash, so the same name
/// always gets the same id and tests can predict it.
pub fn channel_id(channel: &str) -> String {
    let mut chars = channel.chars();
    let is_id = matches!(chars.next(), Some('C' | 'G' | 'D'))
        && channel.len() > 1
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if is_id {
        return channel.to_owned();
    }
    let name = channel.strip_prefix('#').unwrap_or(channel);
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("C{:010X}", hash & 0xFF_FFFF_FFFF)
}

/// `1700000000.000100` from microseconds.
fn render_ts(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

fn headers_of(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect()
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `application/json` from `Application/JSON; charset=utf-8`.
fn media_type(content_type: &str) -> String {
    let essence = content_type.split(';').next().unwrap_or_default();
    essence.trim().to_ascii_lowercase()
}

fn api_json(value: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        value.to_string(),
    )
        .into_response()
}

fn api_error(code: &str) -> Response {
    api_json(json!({"ok": false, "error": code}))
}

fn plain(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_owned(),
    )
        .into_response()
}
