//! Notifications: the durable outbox and the channels that deliver it (email; Slack).
//!
//! The alert engine writes notifications into the outbox ([`outbox`]) with the alert state
//! that caused them. The [`Notifier`] task takes due rows, sends each through its channel
//! under a timeout, and marks it delivered, or schedules a retry with exponential backoff and
//! jitter (honouring a channel's `Retry-After`). A permanent error, or a row older than
//! [`GIVE_UP_AFTER`], is marked failed and logged; it stays in the table for inspection.

pub mod email;
pub mod message;
pub mod outbox;
pub mod slack;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::alerts::Notification;
use crate::alerts::state::Notice;
use email::EmailSender;
use outbox::{Outbox, Pending, SlackRef};
use slack::SlackSender;

/// A notification not delivered within a day is given up: the incident is history by then.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(10 * 60);

/// Why a send failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    pub message: String,
    pub permanent: bool,
    /// The channel asked to wait this long (Slack's 429 `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl SendError {
    pub fn transient(message: String) -> SendError {
        SendError {
            message,
            permanent: false,
            retry_after: None,
        }
    }

    pub fn permanent(message: String) -> SendError {
        SendError {
            message,
            permanent: true,
            retry_after: None,
        }
    }
}

/// The configured channels, by the names rules use.
#[derive(Default)]
pub struct Channels {
    pub email: Option<EmailSender>,
    pub slack: Option<SlackSender>,
}

impl Channels {
    /// The channel names a notification goes to: the rule's, or every configured one; with
    /// none configured, the log, so that even the embedded default shows its alerts.
    pub fn targets(&self, rule_channels: &[String]) -> Vec<String> {
        let all = self.names();
        if rule_channels.is_empty() {
            let configured: Vec<String> = all
                .iter()
                .filter(|c| **c != "log")
                .map(|s| s.to_string())
                .collect();
            if configured.is_empty() {
                return vec!["log".to_string()];
            }
            return configured;
        }
        rule_channels
            .iter()
            .filter(|c| {
                let known = all.contains(&c.as_str());
                if !known {
                    tracing::warn!(channel = %c, "a rule names a channel that is not configured");
                }
                known
            })
            .cloned()
            .collect()
    }

    /// Every channel a rule may name; `log` always exists.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = vec!["log"];
        if self.email.is_some() {
            names.push("email");
        }
        if self.slack.is_some() {
            names.push("slack");
        }
        names
    }

    /// Sends `n` on `channel`; Slack may thread it under `thread` and says where it posted.
    async fn send(
        &self,
        channel: &str,
        n: &Notification,
        thread: Option<&SlackRef>,
    ) -> Result<Option<SlackRef>, SendError> {
        match channel {
            "log" => {
                log(n);
                Ok(None)
            }
            "email" => match &self.email {
                Some(email) => email.send(n).await.map(|()| None),
                None => Err(SendError::permanent("email is not configured".into())),
            },
            "slack" => match &self.slack {
                Some(slack) => slack.send(n, thread).await,
                None => Err(SendError::permanent("slack is not configured".into())),
            },
            other => Err(SendError::permanent(format!(
                "no channel named {other:?} is configured"
            ))),
        }
    }
}

/// `bouncewatch notify-test`: sends a test message through `channel` and prints what happened;
/// returns the exit code (0 delivered, 1 failed, 2 no such channel).
pub async fn test_message(channels: &Channels, channel: &str) -> i32 {
    if !channels.names().contains(&channel) {
        eprintln!(
            "notify-test: channel {channel:?} is not configured; configured: {}",
            channels.names().join(", ")
        );
        return 2;
    }
    let now = crate::journal::now_ms() / 1000;
    let n = Notification {
        rule: "notify-test: a test message from bouncewatch; nothing is wrong".into(),
        kind: crate::alerts::rules::RuleKind::Webhook,
        rate: None,
        signal: None,
        severity: crate::alerts::Severity::Warning,
        channels: vec![channel.to_string()],
        notice: Notice::Firing,
        at: now,
        alerts: Vec::new(),
        more: 0,
        reasons: Vec::new(),
        window_minutes: 5,
    };
    match channels.send(channel, &n, None).await {
        Ok(_) => {
            println!("notify-test: {channel}: delivered");
            0
        }
        Err(e) => {
            let kind = if e.permanent {
                "permanent: fix the configuration"
            } else {
                "transient: retrying may work"
            };
            println!("notify-test: {channel}: FAILED ({kind}): {}", e.message);
            if let Some(after) = e.retry_after {
                println!("notify-test: {channel}: the channel asks to wait {after:?}");
            }
            1
        }
    }
}

/// The log channel: the whole message as one log line (at `warn` while firing).
fn log(n: &Notification) {
    let text = message::text(n, "");
    match n.notice {
        Notice::Resolved { .. } => {
            tracing::info!(rule = %n.rule, severity = n.severity.as_str(), notice = "resolved", alert = %text, "alert")
        }
        _ => {
            tracing::warn!(rule = %n.rule, severity = n.severity.as_str(), notice = ?n.notice, alert = %text, "alert")
        }
    }
}

/// The delay before retry number `attempt` (1 for the first retry): doubling from 5 s to at
/// most 10 minutes, with ±20 % jitter so that many rows do not retry in lockstep.
pub fn backoff(attempt: u32, jitter_seed: u64) -> Duration {
    let base = FIRST_RETRY.as_millis() as u64;
    let exp = base.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(MAX_RETRY.as_millis() as u64);
    // A cheap deterministic spread in [0.8, 1.2) from the row id and attempt.
    let spread = (jitter_seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(attempt))
        >> 40)
        % 400;
    Duration::from_millis(capped * (800 + spread) / 1000)
}

/// Delivers the outbox.
pub struct Notifier {
    outbox: Outbox,
    channels: Arc<Channels>,
    wake: Arc<Notify>,
    metrics: Arc<crate::metrics::Metrics>,
    /// A channel that answered "rate limited, retry after T" takes nothing before T: its
    /// limit is per workspace or webhook, not per message. Channel → Unix ms.
    paused: std::collections::HashMap<String, i64>,
}

impl Notifier {
    pub fn new(
        outbox: Outbox,
        channels: Arc<Channels>,
        wake: Arc<Notify>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Notifier {
        metrics.notification_channels(&channels.names());
        Notifier {
            outbox,
            channels,
            wake,
            metrics,
            paused: std::collections::HashMap::new(),
        }
    }

    /// Runs until `stop` resolves. Rows left undelivered are picked up after a restart.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            self.deliver_due().await;
            let now = crate::journal::now_ms();
            let wait = match self.outbox.next_due_ms() {
                Ok(Some(next)) => Duration::from_millis((next - now).clamp(0, 1000) as u64),
                _ => Duration::from_secs(1),
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn deliver_due(&mut self) {
        let now = crate::journal::now_ms();
        let due = match self.outbox.due(now, 50) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the notification outbox");
                return;
            }
        };
        for row in due {
            if let Some(&until) = self.paused.get(&row.channel)
                && crate::journal::now_ms() < until
            {
                if let Err(e) = self.outbox.postpone(row.id, until) {
                    tracing::error!(id = row.id, error = %e, "cannot postpone a notification");
                }
                continue;
            }
            self.deliver(row).await;
        }
    }

    /// The alert keys of a notification, as the outbox stores them.
    fn key_ids(n: &Notification) -> Vec<String> {
        n.alerts
            .iter()
            .map(|a| serde_json::to_string(&a.observation.key).unwrap_or_default())
            .collect()
    }

    async fn deliver(&mut self, row: Pending) {
        let n = &row.notification;
        let keys = Notifier::key_ids(n);
        let resolved = matches!(n.notice, Notice::Resolved { .. });
        let thread = if row.channel == "slack" && resolved {
            keys.iter()
                .find_map(|k| self.outbox.slack_ref(&n.rule, k).ok().flatten())
        } else {
            None
        };
        let result = self.channels.send(&row.channel, n, thread.as_ref()).await;
        let now = crate::journal::now_ms();
        let marked = match result {
            Ok(posted) => {
                tracing::info!(id = row.id, channel = %row.channel, rule = %n.rule, "notification delivered");
                self.metrics.notification(&row.channel, true);
                // Only Slack's own delivery moves its thread reference: an email of the same
                // resolution, delivered first, would otherwise take the thread away from it.
                for k in keys.iter().filter(|_| row.channel == "slack") {
                    let kept = match (&posted, resolved) {
                        (_, true) => self.outbox.forget_slack_ref(&n.rule, k),
                        (Some(r), false) => self.outbox.set_slack_ref(&n.rule, k, r),
                        (None, false) => Ok(()),
                    };
                    if let Err(e) = kept {
                        tracing::warn!(error = %e, "cannot record where the Slack message went");
                    }
                }
                self.outbox.delivered(row.id, now)
            }
            Err(e) => {
                let too_old = now - row.created_ms > GIVE_UP_AFTER.as_millis() as i64;
                if e.permanent || too_old {
                    tracing::error!(id = row.id, channel = %row.channel, rule = %n.rule, error = %e.message, "notification given up");
                    self.metrics.notification(&row.channel, false);
                    self.outbox.fail(row.id, now, &e.message)
                } else {
                    if let Some(wait) = e.retry_after {
                        self.paused
                            .insert(row.channel.clone(), now + wait.as_millis() as i64);
                    }
                    let delay = e
                        .retry_after
                        .unwrap_or_else(|| backoff(row.attempts + 1, row.id as u64));
                    tracing::warn!(id = row.id, channel = %row.channel, error = %e.message, retry_in = ?delay, "notification not delivered; will retry");
                    self.outbox
                        .retry_at(row.id, now + delay.as_millis() as i64, &e.message)
                }
            }
        };
        if let Err(e) = marked {
            tracing::error!(id = row.id, error = %e, "cannot record a delivery attempt in the outbox");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for seed in 0..50 {
            let first = backoff(1, seed).as_millis();
            assert!((4000..6000).contains(&first), "{first}");
            let third = backoff(3, seed).as_millis();
            assert!((16_000..24_000).contains(&third), "{third}");
            let late = backoff(30, seed).as_millis();
            assert!((480_000..720_000).contains(&late), "{late}");
        }
        let spread: std::collections::HashSet<u128> =
            (0..50).map(|s| backoff(2, s).as_millis()).collect();
        assert!(spread.len() > 10, "jitter spreads retries");
    }
}
