//! The test harness: starts the real `bouncewatch` binary on an ephemeral port and talks to it
//! over real sockets.
//!
//! Each test gets its own data directory. The server logs JSON to stderr; the harness keeps
//! every line (a failing test prints them) and reads the bound address from the `listening`
//! line.

#![allow(dead_code)]

pub mod mailjet_api;
pub mod proxy;
pub mod slack;
pub mod smtp;
pub mod vm;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// `../shared/mailjet/fixtures`, beside the repository (or `BOUNCEWATCH_SHARED_DIR`).
pub fn fixtures() -> PathBuf {
    shared_dir().join("mailjet").join("fixtures")
}

pub fn shared_dir() -> PathBuf {
    match std::env::var_os("BOUNCEWATCH_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("shared"),
    }
}

pub fn fixture(rel: &str) -> Vec<u8> {
    let path = fixtures().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// The wall clock, Unix seconds: events "happening now".
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// A Version 2 batch: `sent` sends and `hard` hard bounces (user unknown) at Gmail for
/// `campaign`, stamped now, with MessageIDs counting up from `first_id`.
pub fn gmail_hard_bounces(first_id: u64, sent: usize, hard: usize, campaign: u64) -> String {
    let t = now();
    let events: Vec<String> = (0..sent + hard)
        .map(|i| {
            let id = first_id + i as u64;
            if i < sent {
                format!(
                    r#"{{"event":"sent","time":{t},"MessageID":{id},"email":"s{i}@gmail.com","mj_campaign_id":{campaign}}}"#
                )
            } else {
                format!(
                    r#"{{"event":"bounce","time":{t},"MessageID":{id},"email":"h{i}@gmail.com","mj_campaign_id":{campaign},"hard_bounce":true,"error_related_to":"recipient","error":"user unknown"}}"#
                )
            }
        })
        .collect();
    format!("[{}]", events.join(","))
}

/// An HTTP client for tests; installs the process's rustls provider once.
pub fn client() -> reqwest::Client {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// An HTTP answer read whole: for the fake peers' own tests, which check statuses, headers
/// and bodies byte for byte.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    pub async fn from(response: reqwest::Response) -> Answer {
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            text: response.text().await.expect("answer body"),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }
}

/// Polls `check` every 100 ms until it holds; fails after `within`, naming `what`.
pub async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a prepared command of the binary off the async runtime and returns what it printed.
pub async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run bouncewatch"))
        .await
        .expect("the command's thread")
}

/// How to start one server.
#[derive(Default, Clone)]
pub struct Options {
    pub env: Vec<(String, String)>,
    pub listen: Option<String>,
    pub config_file: Option<PathBuf>,
    /// Reuse a data dir (for restart tests); a fresh temporary one otherwise.
    pub data_dir: Option<PathBuf>,
}

impl Options {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = Some(addr.to_string());
        self
    }
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
    _tmp: Option<tempfile::TempDir>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bouncewatch")
}

/// A `Command` for the binary with a clean `BOUNCEWATCH_*` environment and JSON logs.
pub fn command() -> Command {
    let mut cmd = Command::new(bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("BOUNCEWATCH_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("BOUNCEWATCH_LOG_FORMAT", "json");
    cmd
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Server {
        match Server::try_start(opts) {
            Ok(s) => s,
            Err((status, logs)) => panic!(
                "bouncewatch did not start ({status:?}):\n{}",
                logs.join("\n")
            ),
        }
    }

    /// Starts the server; on failure returns its exit status and everything it logged.
    pub fn try_start(opts: Options) -> Result<Server, (Option<ExitStatus>, Vec<String>)> {
        let (tmp, data_dir) = match opts.data_dir {
            Some(dir) => (None, dir),
            None => {
                let tmp = tempfile::tempdir().expect("tempdir");
                let dir = tmp.path().join("data");
                (Some(tmp), dir)
            }
        };
        let mut cmd = command();
        cmd.arg("serve")
            .arg("--listen")
            .arg(opts.listen.as_deref().unwrap_or("127.0.0.1:0"))
            .arg("--data-dir")
            .arg(&data_dir);
        if let Some(cfg) = &opts.config_file {
            cmd.arg("--config").arg(cfg);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn bouncewatch");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(50)) {
                return Ok(Server {
                    child,
                    addr,
                    data_dir,
                    logs,
                    _tmp: tmp,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                let logs = logs.lock().unwrap().clone();
                return Err((Some(status), logs));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let logs = logs.lock().unwrap().clone();
                return Err((None, logs));
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no shutdown path runs at all.
    pub fn kill9(mut self) -> Option<tempfile::TempDir> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self._tmp.take()
    }

    /// SIGTERM, then waits for the exit. The data dir stays until the `Server` is dropped.
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "bouncewatch did not stop within 30 s of SIGTERM:\n{}",
                    self.logs().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits up to 10 s for a log line that `matches`, and returns it; fails with every line
    /// logged so far.
    pub async fn wait_log(&self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if let Some(line) = logs.iter().find(|l| matches(l)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the awaited line was not logged:\n{}",
                logs.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET` and the body as text, whatever the status.
    pub async fn get_text(&self, path_and_query: &str) -> String {
        client()
            .get(self.url(path_and_query))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body")
    }

    /// Reads one sample from `/metrics` (`name` with its label set, as rendered).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get_text("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}"))
            .parse()
            .unwrap()
    }

    /// Posts `body` to the webhook and returns the status and the body text.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = client()
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// `GET` on the API and the JSON answer.
    pub async fn get_json(&self, path_and_query: &str) -> serde_json::Value {
        let r = client()
            .get(self.url(path_and_query))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200, "GET {path_and_query}");
        r.json().await.expect("JSON")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? != "listening" {
        return None;
    }
    v.get("addr")?.as_str()?.parse().ok()
}

/// Opens the journal database directly, read-only, to check what is on disk.
pub fn open_journal(data_dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        data_dir.join("journal.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open journal")
}

/// Every stored event's `MessageID`, read from the journal file through its `events` view and
/// parsed from the raw JSON, so ids above 2^63 are exact.
pub fn stored_message_ids(data_dir: &Path) -> Vec<u64> {
    let conn = open_journal(data_dir);
    let mut stmt = conn.prepare("SELECT raw FROM events").expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query events")
        .map(|raw| {
            let raw: serde_json::Value =
                serde_json::from_str(&raw.expect("row")).expect("raw is JSON");
            raw["MessageID"].as_u64().expect("MessageID")
        })
        .collect()
}
