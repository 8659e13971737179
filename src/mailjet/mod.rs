//! Mailjet's side of the webhooks: registering the callbacks (`mailjet setup`), reporting them
//! (`mailjet status`), and watching them from `serve`.
//!
//! Mailjet suspends a callback URL that keeps failing, and from then on its events go nowhere:
//! the receiver only sees silence. Asking Mailjet's `eventcallbackurl` resource is the only way
//! to tell "no mail was sent" from "Mailjet stopped calling us".

pub mod client;
pub mod commands;
pub mod setup;
pub mod watch;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::config::units::DurationText;

/// `[mailjet]` in the config file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MailjetConfig {
    /// Mailjet's API base (tests and proxies point it elsewhere).
    pub api_url: String,
    /// The API key; empty: `MAILJET_API_KEY`.
    pub api_key: String,
    /// The secret key; empty: `MAILJET_API_SECRET`. A secret.
    pub api_secret: String,
    /// This deployment's webhook URL as Mailjet reaches it (without credentials), e.g.
    /// `https://bouncewatch.example.com/webhooks/mailjet`. `serve` checks that the callbacks
    /// point there.
    pub public_url: String,
    /// The event types this deployment registers: what `mailjet setup` registers without
    /// `--events`, and what `status` and `serve` report missing.
    pub events: Vec<String>,
    /// How often `serve` asks Mailjet about the callbacks (when credentials are set).
    pub poll_interval: DurationText,
    /// Time allowed for one API call.
    pub timeout: DurationText,
}

impl Default for MailjetConfig {
    fn default() -> Self {
        MailjetConfig {
            api_url: "https://api.mailjet.com".into(),
            api_key: String::new(),
            api_secret: String::new(),
            public_url: String::new(),
            events: setup::EVENT_TYPES.iter().map(|e| e.to_string()).collect(),
            poll_interval: DurationText::from_secs(300),
            timeout: DurationText::from_secs(10),
        }
    }
}

impl MailjetConfig {
    /// The key and secret, from the config or `MAILJET_API_KEY` / `MAILJET_API_SECRET`.
    pub fn credentials(&self) -> Option<(String, String)> {
        let pick = |value: &str, var: &str| {
            if value.is_empty() {
                std::env::var(var).unwrap_or_default()
            } else {
                value.to_string()
            }
        };
        let key = pick(&self.api_key, "MAILJET_API_KEY");
        let secret = pick(&self.api_secret, "MAILJET_API_SECRET");
        (!key.is_empty() && !secret.is_empty()).then_some((key, secret))
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if url::Url::parse(&self.api_url).is_err() {
            return Err(ConfigError::Invalid {
                key: "mailjet.api_url",
                message: format!("{:?} is not a URL", self.api_url),
            });
        }
        if !self.public_url.is_empty() && url::Url::parse(&self.public_url).is_err() {
            return Err(ConfigError::Invalid {
                key: "mailjet.public_url",
                message: format!(
                    "{:?} is not a URL; write e.g. https://bouncewatch.example.com/webhooks/mailjet",
                    self.public_url
                ),
            });
        }
        if let Some(e) = self
            .events
            .iter()
            .find(|e| !setup::EVENT_TYPES.contains(&e.as_str()))
        {
            return Err(ConfigError::Invalid {
                key: "mailjet.events",
                message: format!(
                    "{e:?} is not a Mailjet event type; use some of {}",
                    setup::EVENT_TYPES.join(", ")
                ),
            });
        }
        if self.poll_interval.0.as_secs() < 1 {
            return Err(ConfigError::Invalid {
                key: "mailjet.poll_interval",
                message: "must be at least 1s; minutes are plenty (Mailjet rate-limits its API)"
                    .into(),
            });
        }
        Ok(())
    }

    /// A client, if credentials are configured.
    pub fn client(&self) -> Option<Result<client::MailjetClient, client::MailjetError>> {
        let (key, secret) = self.credentials()?;
        Some(client::MailjetClient::new(
            &self.api_url,
            &key,
            &secret,
            self.timeout.0,
        ))
    }
}
