//! `[metrics]`: where OTLP goes, what the resource says, and how many campaigns get a label.
//!
//! The standard `OTEL_EXPORTER_OTLP_*`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME` and
//! `OTEL_METRIC_EXPORT_INTERVAL` variables work as in every OpenTelemetry SDK; a key set here
//! wins over them.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::config::units::DurationText;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// The OTLP/HTTP metrics URL, e.g. `http://collector:4318/v1/metrics`. Empty: taken from
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`; with neither set,
    /// nothing is pushed and `/metrics` is the only export.
    pub otlp_endpoint: String,
    /// How often to push. Left at its default, `OTEL_METRIC_EXPORT_INTERVAL` applies if set.
    pub otlp_interval: DurationText,
    /// Time allowed for one push.
    pub otlp_timeout: DurationText,
    /// Extra HTTP headers for the push, as `name=value` (e.g. an auth header).
    pub otlp_headers: Vec<String>,
    /// Extra resource attributes, as `key=value`, added to those of `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: Vec<String>,
    /// `service.instance.id`. Empty: a random id kept in `data_dir/instance-id`, so each replica
    /// (each data directory) has its own, and keeps it across restarts.
    pub instance_id: String,
    /// Campaigns with their own `campaign` label on `bouncewatch_events_total`, by volume over
    /// the last hour; the rest count as `campaign="other"`.
    pub top_campaigns: usize,
    /// How long a new `bouncewatch_events_total` series (a campaign, provider and event type
    /// seen for the first time) is exported as 0 before its count. A store that scrapes
    /// `/metrics` or receives the OTLP push at least this often then sees the series begin at
    /// 0, and `increase()` counts its first events; Prometheus never counts a series' first
    /// sample. `0s` exports counts at once.
    pub new_series_delay: DurationText,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            otlp_endpoint: String::new(),
            otlp_interval: DurationText::from_secs(30),
            otlp_timeout: DurationText::from_secs(10),
            otlp_headers: Vec::new(),
            resource_attributes: Vec::new(),
            instance_id: String::new(),
            top_campaigns: 50,
            new_series_delay: DurationText::from_secs(120),
        }
    }
}

impl MetricsConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (key, list) in [
            ("metrics.otlp_headers", &self.otlp_headers),
            ("metrics.resource_attributes", &self.resource_attributes),
        ] {
            if let Some(bad) = list.iter().find(|kv| split_pair(kv).is_none()) {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{bad:?} is not of the form name=value"),
                });
            }
        }
        let url = &self.otlp_endpoint;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                key: "metrics.otlp_endpoint",
                message: format!(
                    "{:?} is not an http(s) URL; write e.g. http://collector:4318/v1/metrics",
                    self.otlp_endpoint
                ),
            });
        }
        if self.otlp_interval.0.is_zero() {
            return Err(ConfigError::Invalid {
                key: "metrics.otlp_interval",
                message: "must be longer than zero; write e.g. \"30s\"".into(),
            });
        }
        let delay = self.new_series_delay.0;
        // With the endpoint from `OTEL_*` variables, `Metrics` warns at start instead.
        if !self.otlp_endpoint.is_empty() && !delay.is_zero() && delay < self.otlp_interval.0 {
            return Err(ConfigError::Invalid {
                key: "metrics.new_series_delay",
                message: format!(
                    "{} is shorter than metrics.otlp_interval ({}): a new series would reach \
                     the store at its count, not at 0; make it at least the interval, or 0s",
                    self.new_series_delay, self.otlp_interval
                ),
            });
        }
        Ok(())
    }

    /// The headers with their values masked, for `check-config`.
    pub(crate) fn mask_headers(&mut self, mask: &str) {
        for h in &mut self.otlp_headers {
            if let Some((name, _)) = split_pair(h) {
                *h = format!("{name}={mask}");
            }
        }
    }
}

/// `name=value` → `(name, value)`, both trimmed; `None` without `=` or with an empty name.
pub(crate) fn split_pair(kv: &str) -> Option<(&str, &str)> {
    let (k, v) = kv.split_once('=')?;
    let k = k.trim();
    (!k.is_empty()).then_some((k, v.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delay shorter than the push interval would let a new series reach the store at its
    /// count; with no endpoint configured there is no interval to compare with.
    #[test]
    fn new_series_delay_is_at_least_the_push_interval() {
        let mut c = MetricsConfig {
            otlp_endpoint: "http://127.0.0.1:8428/opentelemetry/v1/metrics".into(),
            otlp_interval: DurationText::from_secs(60),
            new_series_delay: DurationText::from_secs(30),
            ..MetricsConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("metrics.new_series_delay"), "{err}");
        c.new_series_delay = DurationText::from_secs(60);
        c.validate().unwrap();
        c.new_series_delay = DurationText::from_secs(0);
        c.validate().unwrap();
        c.new_series_delay = DurationText::from_secs(30);
        c.otlp_endpoint.clear();
        c.validate().unwrap();
        MetricsConfig::default().validate().unwrap();
    }
}
