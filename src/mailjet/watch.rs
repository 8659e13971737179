//! `serve`'s watch on Mailjet: every `mailjet.poll_interval` it lists the callbacks and keeps
//! what it found for the alert loop (the `mailjet-callbacks` rule) and the
//! `bouncewatch_mailjet_callback_alive` metric. A failed poll is logged and changes nothing:
//! the last answer stands until Mailjet answers again.

use std::sync::{Arc, Mutex};

use super::MailjetConfig;
use super::client::{Callback, MailjetClient};
use super::setup::{Problems, problems};

/// The last answer, shared with the alert loop and the metrics.
#[derive(Debug, Default)]
pub struct Watched {
    pub rows: Vec<Callback>,
    pub problems: Problems,
    /// Unix ms of the last successful poll; 0 before the first.
    pub checked_ms: i64,
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
                let found = problems(&rows, expected.as_deref());
                if found.any() {
                    tracing::warn!(problems = %found.describe(), "Mailjet callbacks need attention");
                }
                let mut w = shared.lock().unwrap_or_else(|p| p.into_inner());
                *w = Watched {
                    rows,
                    problems: found,
                    checked_ms: crate::journal::now_ms(),
                };
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "cannot ask Mailjet about the callbacks; will retry");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(config.poll_interval.0) => {}
        }
    }
}
