//! Tests for the SMTP test harness (`tests/common/smtp.rs` and `tests/smtp_server.py`).
//!
//! The alert mailer's tests will trust this server to record exactly what arrived and to
//! refuse, fail and hang on cue, so each of those behaviours is checked here first with a
//! minimal SMTP client written over `std::net::TcpStream`: no mail library between the
//! test and the wire.

#[path = "common/smtp.rs"]
mod smtp;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use smtp::{Mail, SmtpOptions, SmtpServer};

/// A bare SMTP client: one command, one (possibly multi-line) reply.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects and reads the `220` greeting.
    fn connect(server: &SmtpServer) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        // A broken server should fail the test, not hang it.
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut client = Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let (code, text) = client.reply();
        assert_eq!(code, 220, "greeting: {text}");
        client
    }

    /// Sends one command line and returns the reply.
    fn cmd(&mut self, line: &str) -> (u16, String) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }

    /// Reads one reply: lines `250-...` continue it, `250 ...` ends it. The text keeps
    /// every line's text, joined by `\n`.
    fn reply(&mut self) -> (u16, String) {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read a reply");
            assert!(line.len() >= 4, "short reply line {line:?}");
            let code: u16 = line[..3].parse().expect("reply code");
            lines.push(line[4..].trim_end().to_string());
            if line.as_bytes()[3] == b' ' {
                return (code, lines.join("\n"));
            }
        }
    }

    /// EHLO; returns the advertised extensions.
    fn ehlo(&mut self) -> String {
        let (code, text) = self.cmd("EHLO client.test");
        assert_eq!(code, 250, "EHLO: {text}");
        text
    }

    fn auth_plain(&mut self, user: &str, password: &str) -> (u16, String) {
        let token = BASE64.encode(format!("\0{user}\0{password}"));
        self.cmd(&format!("AUTH PLAIN {token}"))
    }

    /// MAIL, RCPT for each recipient, DATA, then the message (dot-stuffed, CRLF line ends).
    /// Returns the reply to the end of DATA, where the server accepts or refuses.
    fn send(&mut self, from: &str, to: &[&str], message: &str) -> (u16, String) {
        let (code, text) = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert_eq!(code, 250, "MAIL FROM: {text}");
        for rcpt in to {
            let (code, text) = self.cmd(&format!("RCPT TO:<{rcpt}>"));
            assert_eq!(code, 250, "RCPT TO: {text}");
        }
        let (code, text) = self.cmd("DATA");
        assert_eq!(code, 354, "DATA: {text}");
        let mut wire = String::new();
        for line in message.lines() {
            if line.starts_with('.') {
                wire.push('.');
            }
            wire.push_str(line);
            wire.push_str("\r\n");
        }
        wire.push_str(".\r\n");
        self.writer.write_all(wire.as_bytes()).unwrap();
        self.reply()
    }

    fn quit(mut self) {
        let (code, text) = self.cmd("QUIT");
        assert_eq!(code, 221, "QUIT: {text}");
    }
}

const ALERT: &str = "From: Bouncewatch <alerts@bouncewatch.test>
To: ops@example.test
Subject: Bounce rate
 above 5% for
\tcampaign 42
content-type: text/plain; charset=utf-8
Content-Transfer-Encoding: Quoted-Printable

Soft bounces d=C3=A9tect=C3=A9es: a long line that the sender wrapped with a s=
oft break, and 3=3D3.
.a line that starts with a dot
";

#[test]
fn delivers_messages_in_order_and_parses_them() {
    let server = SmtpServer::start(SmtpOptions::default());
    let mut client = Client::connect(&server);
    let extensions = client.ehlo();
    assert!(
        !extensions.contains("AUTH"),
        "AUTH advertised without --auth: {extensions}"
    );
    let (code, text) = client.send(
        "bounces@bouncewatch.test",
        &["ops@example.test", "oncall@example.test"],
        ALERT,
    );
    assert_eq!(code, 250, "{text}");
    // Without Content-Transfer-Encoding, `=41` is just text.
    let plain = "Subject: second\n\nplain =41 body\n";
    let (code, text) = client.send("bounces@bouncewatch.test", &["ops@example.test"], plain);
    assert_eq!(code, 250, "{text}");
    client.quit();

    let mails = server.wait_messages(2, Duration::from_secs(5));
    assert_eq!(mails.len(), 2);
    let alert = &mails[0];
    assert_eq!(alert.from, "bounces@bouncewatch.test");
    assert_eq!(alert.to, ["ops@example.test", "oncall@example.test"]);
    assert_eq!(alert.auth_login, None);
    assert!(
        alert
            .data
            .starts_with("From: Bouncewatch <alerts@bouncewatch.test>\r\n"),
        "data is the message as sent, CRLF and all: {:?}",
        alert.data
    );
    assert_eq!(
        alert.header("subject").as_deref(),
        Some("Bounce rate above 5% for\tcampaign 42")
    );
    assert_eq!(
        alert.header("Content-Type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(alert.header("X-Missing"), None);
    assert_eq!(
        alert.body(),
        "Soft bounces détectées: a long line that the sender wrapped with a soft break, \
         and 3=3.\n.a line that starts with a dot\n"
    );

    assert_eq!(mails[1].header("Subject").as_deref(), Some("second"));
    assert_eq!(mails[1].body(), "plain =41 body\n");
    assert_eq!(server.attempts(), 2);
    assert_eq!(server.messages(), mails);
}

#[test]
fn requires_auth_and_refuses_a_wrong_password() {
    let opts = SmtpOptions {
        auth: Some(("alerts".into(), "s3cret".into())),
        ..SmtpOptions::default()
    };
    let server = SmtpServer::start(opts);

    let mut client = Client::connect(&server);
    let extensions = client.ehlo();
    let auth = extensions
        .lines()
        .find(|l| l.starts_with("AUTH "))
        .unwrap_or_else(|| panic!("no AUTH in {extensions}"));
    assert!(auth.contains("PLAIN") && auth.contains("LOGIN"), "{auth}");
    let (code, text) = client.cmd("MAIL FROM:<bounces@bouncewatch.test>");
    assert_eq!(code, 530, "MAIL before AUTH: {text}");
    let (code, text) = client.auth_plain("alerts", "wrong");
    assert_eq!(code, 535, "wrong password: {text}");
    let (code, text) = client.auth_plain("alerts", "s3cret");
    assert_eq!(code, 235, "right password: {text}");
    let (code, text) = client.send("bounces@bouncewatch.test", &["ops@example.test"], "\nhi\n");
    assert_eq!(code, 250, "{text}");
    client.quit();

    // AUTH LOGIN too, the other mechanism lettre may pick.
    let mut client = Client::connect(&server);
    client.ehlo();
    assert_eq!(client.cmd("AUTH LOGIN").0, 334);
    assert_eq!(client.cmd(&BASE64.encode("alerts")).0, 334);
    let (code, text) = client.cmd(&BASE64.encode("s3cret"));
    assert_eq!(code, 235, "AUTH LOGIN: {text}");
    client.quit();

    let mails = server.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].auth_login.as_deref(), Some("alerts"));
}

#[test]
fn fails_the_first_attempts_then_accepts_the_retry() {
    let opts = SmtpOptions {
        fail_first: 2,
        ..SmtpOptions::default()
    };
    let server = SmtpServer::start(opts);
    assert_eq!(server.attempts(), 0);
    let message = "Subject: retried\n\nbody\n";

    // Each attempt on a fresh connection, as a client retrying later would.
    for attempt in 1..=3 {
        let mut client = Client::connect(&server);
        client.ehlo();
        let (code, text) = client.send("bounces@bouncewatch.test", &["ops@example.test"], message);
        if attempt <= 2 {
            assert_eq!((code, text.as_str()), (451, "4.3.0 try again later"));
            assert!(
                server.messages().is_empty(),
                "refused messages are not kept"
            );
        } else {
            assert_eq!(code, 250, "{text}");
        }
        assert_eq!(server.attempts(), attempt);
        client.quit();
    }
    let mails = server.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].header("Subject").as_deref(), Some("retried"));
}

#[test]
fn hang_accepts_but_never_greets() {
    let opts = SmtpOptions {
        hang: true,
        ..SmtpOptions::default()
    };
    let server = SmtpServer::start(opts);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect succeeds");
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!(
            "expected no greeting within 1 s, got {other:?} {:?}",
            &buf[..]
        ),
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[test]
fn drop_stops_the_server() {
    let server = SmtpServer::start(SmtpOptions::default());
    let port = server.port;
    drop(server);
    let err = TcpStream::connect(("127.0.0.1", port)).expect_err("nothing listens after drop");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn parses_a_hand_made_mail() {
    // No server: header() and body() on edge cases the wire tests do not reach.
    let mail = Mail {
        from: String::new(),
        to: Vec::new(),
        data: "X-A: one\nx-a: two\nContent-Transfer-Encoding: quoted-printable\n\n\
               =E2=9C=93 =ZZ =4\n"
            .into(),
        auth_login: None,
    };
    assert_eq!(mail.header("X-A").as_deref(), Some("one"), "the first wins");
    assert_eq!(mail.body(), "✓ =ZZ =4\n", "malformed escapes are kept");

    let headers_only = Mail {
        data: "Subject: nothing else".into(),
        ..mail
    };
    assert_eq!(
        headers_only.header("subject").as_deref(),
        Some("nothing else")
    );
    assert_eq!(headers_only.body(), "");
}
