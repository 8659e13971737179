//! A real SMTP server for tests: runs `tests/smtp_server.py` (aiosmtpd, Debian's
//! `python3-aiosmtpd`) on an ephemeral loopback port and reads back what it accepted.
//!
//! The alert mailer speaks SMTP through `lettre`; testing it against a real server over a real
//! socket checks what a mock cannot: the dialogue, AUTH, transient refusals and timeouts. Each
//! server gets its own temporary maildir; the server writes every accepted message there as
//! `<n>.json` before answering `250`, so a test can look as soon as its send returns.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What to tell a reader whose machine lacks the server's Python module.
const INSTALL_HINT: &str = "apt-get install python3-aiosmtpd (scripts/test installs it)";

/// Debian installs `python3-aiosmtpd` for the system interpreter, not for a pyenv or venv
/// `python3` that may come first on `PATH`.
const PYTHON: &str = "/usr/bin/python3";

/// How long the server may take to report its port; generous, since tests build in parallel.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One running SMTP server; dropping it kills the process and removes the maildir.
pub struct SmtpServer {
    /// The loopback port it listens on (host `127.0.0.1`).
    pub port: u16,
    child: Child,
    maildir: tempfile::TempDir,
    /// Everything the server wrote to stderr (one line per SMTP command), for failure messages.
    log: Arc<Mutex<String>>,
}

/// How the server behaves; `SmtpOptions::default()` accepts everything without AUTH.
#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// Require AUTH (PLAIN or LOGIN) with this user and password before `MAIL`.
    pub auth: Option<(String, String)>,
    /// Answer the end of `DATA` of the first N messages with `451 4.3.0 try again later`.
    pub fail_first: usize,
    /// Accept connections but never send the greeting.
    pub hang: bool,
    /// Listen on this port (for a server that "comes back"); `None`: one the OS picks.
    pub port: Option<u16>,
}

/// One accepted message, as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The envelope sender (`MAIL FROM`), not the `From:` header.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), in order.
    pub to: Vec<String>,
    /// The whole message as sent after `DATA`: headers and body, CRLF line ends.
    pub data: String,
    /// The user the session authenticated as, if it did.
    pub auth_login: Option<String>,
}

impl SmtpServer {
    /// Starts a server and waits until it listens; panics with its stderr if it cannot.
    pub fn start(opts: SmtpOptions) -> SmtpServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
        let maildir = tempfile::tempdir().expect("tempdir for the SMTP maildir");
        let mut cmd = Command::new(PYTHON);
        // -I: ignore PYTHONPATH and user site-packages, which may belong to another Python.
        cmd.arg("-I")
            .arg(&script)
            .arg("--maildir")
            .arg(maildir.path());
        if let Some((user, password)) = &opts.auth {
            cmd.arg("--auth").arg(format!("{user}:{password}"));
        }
        if opts.fail_first > 0 {
            cmd.arg("--fail-first").arg(opts.fail_first.to_string());
        }
        if opts.hang {
            cmd.arg("--hang");
        }
        if let Some(port) = opts.port {
            cmd.arg("--port").arg(port.to_string());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e}; {INSTALL_HINT}"));

        // Drain both pipes for the server's whole life: a full pipe would block it mid-session.
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = drain(child.stderr.take().expect("stderr"), log.clone());
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(port.trim().parse::<u16>());
                }
            }
        });

        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(port)) => SmtpServer {
                port,
                child,
                maildir,
                log,
            },
            outcome => {
                let _ = child.kill();
                let status = child.wait();
                let _ = stderr.join();
                let log = log.lock().unwrap().clone();
                let hint = if log.contains("No module named") {
                    format!("\n{INSTALL_HINT}")
                } else {
                    String::new()
                };
                panic!(
                    "the SMTP test server did not start ({outcome:?}, {status:?}); stderr:\n\
                     {log}{hint}"
                )
            }
        }
    }

    /// Every message accepted so far, in arrival order.
    pub fn messages(&self) -> Vec<Mail> {
        let dir = self.maildir.path();
        let mut numbered: Vec<(usize, std::path::PathBuf)> = std::fs::read_dir(dir)
            .expect("read the SMTP maildir")
            .map(|entry| entry.expect("maildir entry").path())
            .filter_map(|path| {
                // `<n>.json` only: skips `attempts` and the server's `*.tmp` files.
                let n = path.file_name()?.to_str()?.strip_suffix(".json")?.parse();
                Some((n.ok()?, path))
            })
            .collect();
        numbered.sort();
        numbered
            .into_iter()
            .map(|(_, path)| read_mail(&path))
            .collect()
    }

    /// How many times a client reached the end of `DATA`, refused attempts included.
    pub fn attempts(&self) -> usize {
        match std::fs::read_to_string(self.maildir.path().join("attempts")) {
            Ok(text) => text.trim().parse().expect("attempts file holds a number"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => panic!("cannot read the SMTP attempts file: {e}"),
        }
    }

    /// Waits until at least `n` messages have arrived and returns all of them; for senders
    /// that deliver in the background. Panics with what did arrive on timeout.
    pub fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if Instant::now() >= deadline {
                panic!(
                    "expected {n} messages within {timeout:?}, the SMTP server has {} \
                     ({} DATA attempts): {messages:#?}\nserver log:\n{}",
                    messages.len(),
                    self.attempts(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's stderr so far: one line per SMTP command it received.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies a pipe into `log` until it closes.
fn drain(pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    })
}

fn read_mail(path: &Path) -> Mail {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let string = |v: &serde_json::Value| {
        v.as_str()
            .unwrap_or_else(|| panic!("{}: expected a string, got {v}", path.display()))
            .to_string()
    };
    Mail {
        from: string(&json["mail_from"]),
        to: json["rcpt_tos"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: rcpt_tos is not a list", path.display()))
            .iter()
            .map(string)
            .collect(),
        data: string(&json["data"]),
        auth_login: json["auth_login"].as_str().map(str::to_string),
    }
}

impl Mail {
    /// The first header called `name` (case-insensitive), unfolded and trimmed. RFC 2047
    /// encoded words (`=?utf-8?...?=`) are returned as they are.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut found: Option<String> = None;
        for line in self.split().0.lines() {
            if line.starts_with([' ', '\t']) {
                // A continuation line: unfolding drops the line break, keeps the whitespace.
                if let Some(value) = &mut found {
                    value.push_str(line);
                }
                continue;
            }
            if found.is_some() {
                break;
            }
            if let Some((key, value)) = line.split_once(':')
                && key.trim().eq_ignore_ascii_case(name)
            {
                found = Some(value.to_string());
            }
        }
        found.map(|value| value.trim().to_string())
    }

    /// The text after the first blank line with `\n` line ends, quoted-printable decoded when
    /// `Content-Transfer-Encoding` says so (multipart bodies are not taken apart), so tests
    /// can assert on what a reader of the mail would see.
    pub fn body(&self) -> String {
        let body = self.split().1.replace("\r\n", "\n");
        let qp = self
            .header("Content-Transfer-Encoding")
            .is_some_and(|cte| cte.eq_ignore_ascii_case("quoted-printable"));
        let base64 = self
            .header("Content-Transfer-Encoding")
            .is_some_and(|cte| cte.eq_ignore_ascii_case("base64"));
        if qp {
            decode_quoted_printable(&body)
        } else if base64 {
            use base64::Engine as _;
            let compact: String = body.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or(body)
        } else {
            body
        }
    }

    /// The decoded body of the first part whose `Content-Type` starts with `mime` (e.g.
    /// `text/plain`), looking inside `multipart/*` bodies one level deep; the whole body when
    /// the message itself has that type.
    pub fn part(&self, mime: &str) -> Option<String> {
        let content_type = self.header("Content-Type").unwrap_or_default();
        if content_type.to_ascii_lowercase().starts_with(mime) {
            return Some(self.body());
        }
        let boundary = content_type
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))?
            .trim_matches('"')
            .to_string();
        let raw = self.split().1.replace("\r\n", "\n");
        raw.split(&format!("--{boundary}"))
            .skip(1)
            .map(|chunk| Mail {
                from: String::new(),
                to: Vec::new(),
                data: chunk.trim_start_matches('\n').to_string(),
                auth_login: None,
            })
            .find(|part| {
                part.header("Content-Type")
                    .is_some_and(|t| t.to_ascii_lowercase().starts_with(mime))
            })
            .map(|part| part.body())
    }

    /// Header section and body, split at the first blank line (CRLF on the wire, but a
    /// hand-made `Mail` may use `\n`). Without a blank line it is all header.
    fn split(&self) -> (&str, &str) {
        let blank = [("\r\n\r\n", 4), ("\n\n", 2)]
            .into_iter()
            .filter_map(|(sep, len)| Some((self.data.find(sep)?, len)))
            .min();
        match blank {
            Some((at, len)) => (&self.data[..at], &self.data[at + len..]),
            None => (&self.data, ""),
        }
    }
}

/// Decodes quoted-printable (RFC 2045 §6.7): `=` at a line end is a soft break, `=XX` a byte.
/// A malformed `=` is kept as it is; bytes that are not UTF-8 come out as U+FFFD.
fn decode_quoted_printable(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'=' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\n') {
            i += 2;
        } else if let Some(&[hi, lo]) = bytes.get(i + 1..i + 3)
            && hi.is_ascii_hexdigit()
            && lo.is_ascii_hexdigit()
        {
            let hex = |b: u8| (b as char).to_digit(16).unwrap() as u8;
            out.push(hex(hi) << 4 | hex(lo));
            i += 3;
        } else {
            out.push(b'=');
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
