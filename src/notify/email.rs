//! The email channel: `[email]`, sent through lettre's async SMTP transport.
//!
//! lettre's own timeout covers only the connection, so every send is wrapped in
//! `tokio::time::timeout`; retries are the outbox's, not lettre's. A 4xx answer is transient
//! (retried), a 5xx permanent (given up), as SMTP means them.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use super::SendError;
use super::message;
use crate::alerts::Notification;
use crate::config::ConfigError;
use crate::config::units::DurationText;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server. Empty: no email channel.
    pub smtp_host: String,
    /// 0: the port `tls` implies (see [`EmailConfig::port`]).
    pub smtp_port: u16,
    /// `starttls` (port 587), `tls` (implicit TLS, port 465) or `none` (plain; loopback or
    /// a trusted relay only).
    pub tls: String,
    pub username: String,
    pub password: String,
    /// The sender, e.g. `bouncewatch <alerts@example.com>`.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Time allowed for one message, connection included.
    pub timeout: DurationText,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            smtp_host: String::new(),
            smtp_port: 0,
            tls: "starttls".into(),
            username: String::new(),
            password: String::new(),
            from: String::new(),
            to: Vec::new(),
            timeout: DurationText::from_secs(30),
        }
    }
}

impl EmailConfig {
    pub fn enabled(&self) -> bool {
        !self.smtp_host.is_empty()
    }

    /// `smtp_port`, or when it is 0 the usual port for `tls`: 465 for implicit TLS, 587 for
    /// STARTTLS (submission), 25 for plain SMTP.
    pub fn port(&self) -> u16 {
        match (self.smtp_port, self.tls.as_str()) {
            (0, "tls") => 465,
            (0, "none") => 25,
            (0, _) => 587,
            (port, _) => port,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if !matches!(self.tls.as_str(), "starttls" | "tls" | "none") {
            return invalid(
                "email.tls",
                format!("{:?}: use starttls, tls or none", self.tls),
            );
        }
        if self.from.parse::<Mailbox>().is_err() {
            return invalid(
                "email.from",
                format!(
                    "{:?} is not an address; write e.g. \"bouncewatch <alerts@example.com>\"",
                    self.from
                ),
            );
        }
        if self.to.is_empty() {
            return invalid(
                "email.to",
                "list at least one recipient, or leave email.smtp_host empty".into(),
            );
        }
        if let Some(bad) = self.to.iter().find(|t| t.parse::<Mailbox>().is_err()) {
            return invalid("email.to", format!("{bad:?} is not an address"));
        }
        if self.username.is_empty() != self.password.is_empty() {
            return invalid(
                "email.password",
                "set email.username and email.password together (BOUNCEWATCH_EMAIL_PASSWORD)"
                    .into(),
            );
        }
        Ok(())
    }
}

pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    timeout: Duration,
    grafana_url: String,
}

impl EmailSender {
    pub fn new(config: &EmailConfig, grafana_url: &str) -> Result<EmailSender, ConfigError> {
        config.validate()?;
        let invalid = |message: String| ConfigError::Invalid {
            key: "email.smtp_host",
            message,
        };
        let host = config.smtp_host.as_str();
        let builder = match config.tls.as_str() {
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| invalid(format!("{host}: {e}")))?,
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| invalid(format!("{host}: {e}")))?,
            _ => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        };
        let mut builder = builder.port(config.port()).timeout(Some(config.timeout.0));
        if !config.username.is_empty() {
            builder = builder.credentials(Credentials::new(
                config.username.clone(),
                config.password.clone(),
            ));
        }
        let parse = |s: &str| s.parse::<Mailbox>().map_err(|e| invalid(e.to_string()));
        Ok(EmailSender {
            transport: builder.build(),
            from: parse(&config.from)?,
            to: config
                .to
                .iter()
                .map(|t| parse(t))
                .collect::<Result<_, _>>()?,
            timeout: config.timeout.0,
            grafana_url: grafana_url.to_string(),
        })
    }

    pub async fn send(&self, n: &Notification) -> Result<(), SendError> {
        // A Message-ID of our own: some receiving servers (Gmail's) refuse mail without one,
        // and not every relay adds it.
        let mut builder = Message::builder()
            .message_id(None)
            .from(self.from.clone())
            .subject(message::subject(n));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        // Text and HTML with the same content: clients show the one they prefer.
        let email = builder
            .multipart(MultiPart::alternative_plain_html(
                message::text(n, &self.grafana_url),
                message::html(n, &self.grafana_url),
            ))
            .map_err(|e| SendError::permanent(format!("cannot build the message: {e}")))?;
        match tokio::time::timeout(self.timeout, self.transport.send(email)).await {
            Err(_) => Err(SendError::transient(format!(
                "no answer from the SMTP server within {:?}",
                self.timeout
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => Err(SendError::permanent(format!("SMTP: {e}"))),
            Ok(Err(e)) => Err(SendError::transient(format!("SMTP: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EmailConfig;

    /// Without a port, the one `tls` implies: implicit TLS is 465, not STARTTLS's 587.
    #[test]
    fn the_port_follows_tls_unless_set() {
        let with = |tls: &str, smtp_port: u16| EmailConfig {
            tls: tls.into(),
            smtp_port,
            ..EmailConfig::default()
        };
        assert_eq!(with("tls", 0).port(), 465);
        assert_eq!(with("starttls", 0).port(), 587);
        assert_eq!(with("none", 0).port(), 25);
        assert_eq!(with("tls", 2465).port(), 2465);
        assert_eq!(EmailConfig::default().port(), 587);
    }
}
