//! Alerts: rules over the windows and over the receiver's own health, and the state machine
//! that turns breaches into firing and resolved notifications.
//!
//! The engine ([`engine`]) takes its clock, the windows and a health sample as inputs and
//! returns notifications, so it runs the same live and in a backtest. Rate rules fire on the
//! Wilson lower bound of a rate ([`wilson`]) with a minimum volume, so 2 bounces in 40 sends
//! stay quiet while 10 in 200 fire. Firing alerts resolve only after clean evaluations in a
//! row ([`state`]), so they do not flap. The built-in rules ([`defaults::defaults`]) apply when
//! `[[alerts.rules]]` is empty.

pub mod backtest;
pub mod defaults;
pub mod engine;
pub mod health;
pub mod rules;
pub mod run;
pub mod silence;
pub mod state;
pub mod wilson;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::config::units::DurationText;
pub use engine::{AlertLine, Engine, Notification, StoredAlert};
pub use health::HealthSample;
pub use rules::{Rule, RuleConfig, Severity};

/// `[alerts]` in the config file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often every rule is evaluated.
    pub interval: DurationText,
    /// The confidence of the Wilson lower bound rate rules compare (two-sided).
    pub confidence: f64,
    /// A still-firing alert is notified again after this long.
    pub repeat_interval: DurationText,
    /// Clean evaluations in a row that resolve a firing alert (a rule may set its own).
    pub clear_after: u32,
    /// Keys listed in one message; the rest are counted ("and 12 more").
    pub max_keys_per_message: usize,
    /// Grafana's base URL, for links to the dashboards (e.g. https://grafana.example.com).
    pub grafana_url: String,
    /// The rules. Empty: the built-in defaults.
    pub rules: Vec<RuleConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            interval: DurationText::from_secs(30),
            confidence: 0.95,
            repeat_interval: DurationText::from_secs(4 * 3600),
            clear_after: 3,
            max_keys_per_message: 10,
            grafana_url: String::new(),
            rules: Vec::new(),
        }
    }
}

impl AlertsConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(0.5..1.0).contains(&self.confidence) {
            return Err(ConfigError::Invalid {
                key: "alerts.confidence",
                message: format!("{} is not between 0.5 and 1 (e.g. 0.95)", self.confidence),
            });
        }
        if self.interval.0.as_secs() == 0 {
            return Err(ConfigError::Invalid {
                key: "alerts.interval",
                message: "must be at least 1s; write e.g. \"30s\"".into(),
            });
        }
        // Each listed alert is a Slack block, and Slack takes 50 blocks per message; the header,
        // the reasons, the advice and the links take up to six more.
        if !(1..=40).contains(&self.max_keys_per_message) {
            return Err(ConfigError::Invalid {
                key: "alerts.max_keys_per_message",
                message: format!(
                    "{} is not between 1 and 40 (Slack takes 50 blocks per message)",
                    self.max_keys_per_message
                ),
            });
        }
        let rules = self.compile()?;
        let mut names: Vec<&str> = rules.iter().map(Rule::name).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::Invalid {
                key: "alerts.rules",
                message: format!("two rules are named {:?}; names must be unique", w[0]),
            });
        }
        Ok(())
    }

    /// The configured rules, or the built-in ones when none are configured.
    pub fn compile(&self) -> Result<Vec<Rule>, ConfigError> {
        let configs = if self.rules.is_empty() {
            defaults::defaults()
        } else {
            self.rules.clone()
        };
        configs
            .into_iter()
            .map(|c| Rule::compile(c, self.clear_after))
            .collect()
    }

    /// A ready engine for these settings.
    pub fn engine(&self) -> Result<Engine, ConfigError> {
        Ok(Engine::new(
            self.compile()?,
            self.confidence,
            self.repeat_interval.0.as_secs() as i64,
            self.max_keys_per_message,
        ))
    }
}

#[cfg(test)]
mod tests;
