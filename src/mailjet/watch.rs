//! `serve`'s watch on Mailjet: every `mailjet.poll_interval` it lists the callbacks and keeps
//! what it found for the alert loop (the `mailjet-callbacks` rule) and the
//! `bouncewatch_mailjet_callback_alive` metric. A failed poll is logged and leaves the last
//! answer standing, but a watch that cannot see is no watch: after [`UNANSWERED_POLLS`] failed
//! polls in a row the `mailjet-callbacks` rule fires with the reason, as for a dead callback,
//! and `bouncewatch_mailjet_checked_timestamp_seconds` shows since when nothing came back.

use std::sync::{Arc, Mutex};

use super::MailjetConfig;
use super::client::{Callback, MailjetClient};
use super::setup::{Problems, problems};

/// Failed polls in a row after which the watch counts as blind (a revoked key, Mailjet down):
/// one failure is a blip, three at the default interval are 15 minutes without an answer.
pub const UNANSWERED_POLLS: u32 = 3;

/// The last answer, shared with the alert loop and the metrics.
#[derive(Debug, Default)]
pub struct Watched {
    pub rows: Vec<Callback>,
    pub problems: Problems,
    /// Unix ms of the last successful poll; 0 before the first.
    pub checked_ms: i64,
    /// Failed polls since the last successful one, and when and why the first of them failed.
    /// (The first: the alert's detail must not change with every poll, or each would be told
    /// as news, and Mailjet's errors carry a new `ErrorIdentifier` each time.)
    pub failures: u32,
    pub failing_since_ms: i64,
    pub first_error: String,
}

impl Watched {
    /// What the `mailjet-callbacks` rule sees: how many problems, and what they are. `None`
    /// before Mailjet has answered once, unless it has failed too often to wait any longer.
    pub fn callbacks(&self) -> Option<(u32, String)> {
        let blind = (self.failures >= UNANSWERED_POLLS).then(|| {
            let since = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(self.failing_since_ms.max(0) as u64),
            );
            format!(
                "Mailjet's API has not answered since {since} ({})",
                self.first_error
            )
        });
        match (self.checked_ms > 0, blind) {
            (false, None) => None,
            (false, Some(blind)) => Some((1, blind)),
            (true, None) => Some((self.problems.count() as u32, self.problems.describe())),
            (true, Some(blind)) => {
                let known = self.problems.describe();
                let what = if known.is_empty() {
                    blind
                } else {
                    format!("{blind}; last known: {known}")
                };
                Some((self.problems.count() as u32 + 1, what))
            }
        }
    }
}

pub type Shared = Arc<Mutex<Watched>>;

/// Polls until `stop` resolves.
pub async fn run(
    client: MailjetClient,
    config: MailjetConfig,
    shared: Shared,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let expected = (!config.public_url.is_empty()).then(|| config.public_url.clone());
    let mut failing = false;
    loop {
        match client.list().await {
            Ok(rows) => {
                let found = problems(&rows, expected.as_deref(), &config.events);
                if found.any() {
                    tracing::warn!(problems = %found.describe(), "Mailjet callbacks need attention");
                }
                let mut w = shared.lock().unwrap_or_else(|p| p.into_inner());
                *w = Watched {
                    rows,
                    problems: found,
                    checked_ms: crate::journal::now_ms(),
                    failures: 0,
                    failing_since_ms: 0,
                    first_error: String::new(),
                };
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "cannot ask Mailjet about the callbacks; will retry");
                }
                failing = true;
                let mut w = shared.lock().unwrap_or_else(|p| p.into_inner());
                if w.failures == 0 {
                    w.failing_since_ms = crate::journal::now_ms();
                    w.first_error = e.to_string();
                }
                w.failures += 1;
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(config.poll_interval.0) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watch that cannot reach Mailjet says so once it has failed often enough, before or
    /// after a first answer, and keeps what it last knew.
    #[test]
    fn a_blind_watch_is_a_problem() {
        let mut w = Watched::default();
        assert_eq!(w.callbacks(), None, "nothing known yet");
        w.failures = UNANSWERED_POLLS - 1;
        w.failing_since_ms = 1_764_000_000_000;
        w.first_error = "Mailjet refused the API key".into();
        assert_eq!(w.callbacks(), None, "a blip");
        w.failures = UNANSWERED_POLLS;
        let (n, what) = w.callbacks().unwrap();
        assert_eq!(n, 1);
        assert!(
            what.contains("has not answered since 2025-11-24T16:00:00Z")
                && what.contains("refused"),
            "{what}"
        );
        w.failures += 1;
        assert_eq!(w.callbacks().unwrap().1, what, "the same news a poll later");

        w.checked_ms = 1;
        w.problems.dead.push("click".into());
        let (n, what) = w.callbacks().unwrap();
        assert_eq!(n, 2);
        assert!(what.contains("last known: dead: click"), "{what}");
        w.failures = 0;
        assert_eq!(w.callbacks(), Some((1, "dead: click".to_string())));
    }
}
