//! The Slack channel: `[slack]`, sent through slack-morphism, as Block Kit messages.
//!
//! Two ways in: an incoming-webhook URL (one channel, no threads), or a bot token with
//! `chat.postMessage` to a channel. With a bot token, a resolved notice is posted in the
//! thread of the message that announced the incident, and that message is updated to say it
//! is resolved. `api_url` points the client elsewhere (tests, proxies).
//!
//! slack-morphism retries nothing unless told to, and its connector has no overall timeout:
//! every call is wrapped in `tokio::time::timeout`, and a 429's `Retry-After` is handed to the
//! outbox, which waits that long before the next attempt.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use super::SendError;
use super::message;
use super::outbox::SlackRef;
use crate::alerts::Notification;
use crate::alerts::state::Notice;
use crate::config::ConfigError;
use crate::config::units::DurationText;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SlackConfig {
    /// An incoming-webhook URL (`https://hooks.slack.com/services/...`); a secret.
    pub webhook_url: String,
    /// A bot token (`xoxb-...`) with `chat:write`; a secret. Takes precedence over the
    /// webhook when both are set.
    pub token: String,
    /// The channel the bot posts to (`#alerts` or an id).
    pub channel: String,
    /// Slack's Web API base.
    pub api_url: String,
    /// Time allowed for one call.
    pub timeout: DurationText,
}

impl Default for SlackConfig {
    fn default() -> Self {
        SlackConfig {
            webhook_url: String::new(),
            token: String::new(),
            channel: String::new(),
            api_url: "https://slack.com/api".into(),
            timeout: DurationText::from_secs(10),
        }
    }
}

impl SlackConfig {
    pub fn enabled(&self) -> bool {
        !self.webhook_url.is_empty() || !self.token.is_empty()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !self.token.is_empty() && self.channel.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "slack.channel",
                message: "a bot token needs a channel to post to: set BOUNCEWATCH_SLACK_CHANNEL (e.g. #alerts)".into(),
            });
        }
        if !self.webhook_url.is_empty() && url::Url::parse(&self.webhook_url).is_err() {
            return Err(ConfigError::Invalid {
                key: "slack.webhook_url",
                message: "is not a URL (the value is not shown: it is a secret)".into(),
            });
        }
        if url::Url::parse(&self.api_url).is_err() {
            return Err(ConfigError::Invalid {
                key: "slack.api_url",
                message: format!("{:?} is not a URL", self.api_url),
            });
        }
        Ok(())
    }
}

type Client = SlackClient<SlackClientHyperConnector<hyper_rustls::HttpsConnector<HttpConnector>>>;
type HttpConnector = hyper_util::client::legacy::connect::HttpConnector;

enum Target {
    Bot {
        token: SlackApiToken,
        channel: SlackChannelId,
    },
    Webhook(url::Url),
}

pub struct SlackSender {
    client: Client,
    /// For the incoming webhook, which answers in plain text (`ok`, `rate_limited`,
    /// `invalid_payload`, ...) that slack-morphism's client reads as JSON and loses.
    http: reqwest::Client,
    target: Target,
    timeout: Duration,
    grafana_url: String,
}

impl SlackSender {
    pub fn new(config: &SlackConfig, grafana_url: &str) -> Result<SlackSender, ConfigError> {
        config.validate()?;
        let invalid = |key, message: String| ConfigError::Invalid { key, message };
        // http too, not only https: tests and local proxies speak plain HTTP.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| {
                invalid(
                    "slack.api_url",
                    format!("cannot load root certificates: {e}"),
                )
            })?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let connector = SlackClientHyperConnector::with_connector(https)
            .with_slack_api_url(config.api_url.trim_end_matches('/'));
        let target = if !config.token.is_empty() {
            Target::Bot {
                token: SlackApiToken::new(config.token.clone().into()),
                channel: SlackChannelId::new(config.channel.trim().to_string()),
            }
        } else {
            Target::Webhook(
                url::Url::parse(&config.webhook_url)
                    .map_err(|_| invalid("slack.webhook_url", "is not a URL".into()))?,
            )
        };
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| invalid("slack.webhook_url", format!("cannot build a client: {e}")))?;
        Ok(SlackSender {
            client: SlackClient::new(connector),
            http,
            target,
            timeout: config.timeout.0,
            grafana_url: grafana_url.to_string(),
        })
    }

    /// Whether resolutions can be threaded (a bot token, not a webhook).
    pub fn threads(&self) -> bool {
        matches!(self.target, Target::Bot { .. })
    }

    /// Sends `n`; with a bot token, a resolution goes into `thread` and updates its message.
    /// Returns where the message went (bot only), to thread the resolution later.
    pub async fn send(
        &self,
        n: &Notification,
        thread: Option<&SlackRef>,
    ) -> Result<Option<SlackRef>, SendError> {
        let content = self.content(n);
        match &self.target {
            Target::Webhook(url) => {
                let req = SlackApiPostWebhookMessageRequest::new(content);
                let body = serde_json::to_vec(&req).map_err(|e| {
                    SendError::permanent(format!("cannot write the Slack message: {e}"))
                })?;
                let post = self
                    .http
                    .post(url.as_str())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send();
                let answer = match tokio::time::timeout(self.timeout, post).await {
                    Err(_) => {
                        return Err(SendError::transient(format!(
                            "Slack did not answer within {:?}",
                            self.timeout
                        )));
                    }
                    // Without the URL: it is the secret.
                    Ok(Err(e)) => {
                        return Err(SendError::transient(format!("Slack: {}", e.without_url())));
                    }
                    Ok(Ok(answer)) => answer,
                };
                let status = answer.status();
                let retry_after = answer
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = tokio::time::timeout(self.timeout, answer.text())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                webhook_outcome(status.as_u16(), &text, retry_after)?;
                Ok(None)
            }
            Target::Bot { token, channel } => {
                let session = self.client.open_session(token);
                let resolved = matches!(n.notice, Notice::Resolved { .. });
                let mut req = SlackApiChatPostMessageRequest::new(channel.clone(), content);
                if let (true, Some(t)) = (resolved, thread) {
                    req = req.with_thread_ts(SlackTs::new(t.ts.clone()));
                    let update = SlackApiChatUpdateRequest::new(
                        SlackChannelId::new(t.channel.clone()),
                        SlackMessageContent::new()
                            .with_text(format!("RESOLVED: {}", message::subject(n))),
                        SlackTs::new(t.ts.clone()),
                    );
                    // The thread reply is what matters; a failed update is only logged.
                    if let Err(e) = self.timed(session.chat_update(&update)).await {
                        tracing::warn!(error = %e.message, "cannot mark the Slack incident message resolved");
                    }
                }
                let posted = self.timed(session.chat_post_message(&req)).await?;
                Ok(Some(SlackRef {
                    channel: posted.channel.to_string(),
                    ts: posted.ts.to_string(),
                }))
            }
        }
    }

    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, SlackClientError>>,
    ) -> Result<T, SendError> {
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(SendError::transient(format!(
                "Slack did not answer within {:?}",
                self.timeout
            ))),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(e)),
        }
    }

    fn content(&self, n: &Notification) -> SlackMessageContent {
        let mut blocks: Vec<SlackBlock> =
            vec![SlackHeaderBlock::new(pt!(truncate(&message::subject(n), 150))).into()];
        if let Notice::Resolved { lasted_secs } = n.notice {
            let lasted = humantime::format_duration(Duration::from_secs(lasted_secs.max(0) as u64));
            blocks.push(
                SlackSectionBlock::new()
                    .with_text(md!("Resolved after {}.", lasted))
                    .into(),
            );
        }
        for a in &n.alerts {
            blocks.push(
                SlackSectionBlock::new()
                    .with_text(md!("• {}", message::alert_text(n, a)))
                    .into(),
            );
        }
        if n.more > 0 {
            blocks.push(
                SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
                    SlackBlockMarkDownText::new(format!("and {} more", n.more)),
                )])
                .into(),
            );
        }
        if !n.reasons.is_empty() {
            let lines: Vec<String> = n
                .reasons
                .iter()
                .map(|r| format!("• {} `{}` / {}: {}", r.event, r.category, r.error, r.count))
                .collect();
            blocks.push(
                SlackSectionBlock::new()
                    .with_text(md!("*Top reasons*\n{}", lines.join("\n")))
                    .into(),
            );
        }
        if let Some(advice) = message::advice(n) {
            blocks.push(SlackSectionBlock::new().with_text(md!("{}", advice)).into());
        }
        if let Some(link) = message::dashboard_link(&self.grafana_url, n) {
            blocks.push(
                SlackSectionBlock::new()
                    .with_text(md!("<{}|Open the dashboard>", link))
                    .into(),
            );
        }
        SlackMessageContent::new()
            .with_text(message::subject(n))
            .with_blocks(blocks)
    }
}

/// `s` in at most `max` characters, the ellipsis included (Slack refuses a longer header).
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let keep = s
        .char_indices()
        .nth(max.saturating_sub(1))
        .map_or(s.len(), |(i, _)| i);
    format!("{}…", &s[..keep])
}

/// Which failures are worth retrying: rate limits (after `Retry-After`), 5xx and network
/// trouble. A refused token, an unknown channel or a malformed message will not get better.
fn classify(e: SlackClientError) -> SendError {
    match &e {
        SlackClientError::RateLimitError(r) => SendError {
            message: format!("Slack rate limit: {e}"),
            permanent: false,
            retry_after: r.retry_after,
        },
        SlackClientError::ApiError(api) => {
            let transient = matches!(
                api.code.as_str(),
                "ratelimited"
                    | "internal_error"
                    | "fatal_error"
                    | "service_unavailable"
                    | "request_timeout"
            );
            SendError {
                message: format!("Slack refused the message: {}", api.code),
                permanent: !transient,
                retry_after: None,
            }
        }
        SlackClientError::HttpError(http) => SendError {
            message: format!("Slack answered HTTP {}", http.status_code),
            permanent: http.status_code.is_client_error(),
            retry_after: None,
        },
        _ => SendError::transient(format!("Slack: {e}")),
    }
}

/// What an incoming webhook's answer means. Slack answers `ok` with 200, and otherwise a code
/// in plain text: 429 `rate_limited` with `Retry-After`, 400 `invalid_payload`, 403
/// `action_prohibited`, 404 `no_service` or `channel_not_found`, 410 `channel_is_archived`,
/// 500 `rollup_error`. Client errors will not get better; 429 and 5xx will.
fn webhook_outcome(
    status: u16,
    text: &str,
    retry_after: Option<Duration>,
) -> Result<(), SendError> {
    let code: String = text.trim().chars().take(100).collect();
    match status {
        200..=299 => Ok(()),
        429 => Err(SendError {
            message: format!("Slack rate limit (HTTP 429 {code})"),
            permanent: false,
            retry_after,
        }),
        400..=499 => Err(SendError::permanent(format!(
            "Slack refused the message: HTTP {status} {code}"
        ))),
        _ => Err(SendError::transient(format!(
            "Slack answered HTTP {status} {code}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// The webhook's plain-text answers: the code is kept, a 429's `Retry-After` honoured, and
    /// only 429 and 5xx are retried.
    #[test]
    fn webhook_answers_keep_slacks_code() {
        assert!(super::webhook_outcome(200, "ok", None).is_ok());
        let limited =
            super::webhook_outcome(429, "rate_limited", Some(Duration::from_secs(6))).unwrap_err();
        assert!(!limited.permanent && limited.message.contains("rate_limited"));
        assert_eq!(limited.retry_after, Some(Duration::from_secs(6)));
        let bad = super::webhook_outcome(400, "invalid_payload", None).unwrap_err();
        assert!(
            bad.permanent && bad.message.contains("invalid_payload"),
            "{}",
            bad.message
        );
        let gone = super::webhook_outcome(404, "no_service", None).unwrap_err();
        assert!(gone.permanent && gone.message.contains("no_service"));
        let down = super::webhook_outcome(500, "rollup_error", None).unwrap_err();
        assert!(!down.permanent && down.message.contains("rollup_error"));
    }

    /// Slack's header block takes at most 150 characters: a longer subject is cut to 150 with
    /// its ellipsis, not 150 plus one.
    #[test]
    fn a_long_header_fits_slacks_limit() {
        let long = "é".repeat(200);
        let cut = super::truncate(&long, 150);
        assert_eq!(cut.chars().count(), 150);
        assert!(cut.ends_with('…'));
        assert_eq!(super::truncate("short", 150), "short");
        let exact = "x".repeat(150);
        assert_eq!(super::truncate(&exact, 150), exact);
    }
}
