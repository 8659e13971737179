//! The configuration: one TOML file, every key overridable from the environment.
//!
//! Each part of the program owns its section (`http` owns `[server]`, `[webhook]`, `[api]` and
//! `[tls]`; `journal` owns `[journal]`) and this module only assembles them. Any key `k` of a
//! section `s` can be set with `BOUNCEWATCH_<S>_<K>` (for example `BOUNCEWATCH_WEBHOOK_PASSWORD`),
//! which wins over the file. Secrets are never printed: [`Config::masked`] is what
//! `check-config` shows and what gets logged.

pub mod units;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::alerts::AlertsConfig;
use crate::http::{ApiConfig, ServerConfig, TlsConfig, WebhookConfig};
use crate::journal::JournalConfig;
use crate::logging::LogConfig;
use crate::mailjet::MailjetConfig;
use crate::metrics::MetricsConfig;
use crate::notify::email::EmailConfig;
use crate::notify::slack::SlackConfig;
use crate::pipeline::ProvidersConfig;
use crate::windows::WindowsConfig;

/// The prefix of every environment variable that sets a config key.
pub const ENV_PREFIX: &str = "BOUNCEWATCH_";

/// Shown in place of a secret that is set.
const MASK: &str = "********";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub webhook: WebhookConfig,
    pub api: ApiConfig,
    pub tls: TlsConfig,
    pub journal: JournalConfig,
    pub log: LogConfig,
    /// Domain → provider overrides, e.g. `"example.com" = "google"`.
    pub providers: ProvidersConfig,
    pub windows: WindowsConfig,
    pub metrics: MetricsConfig,
    pub alerts: AlertsConfig,
    pub email: EmailConfig,
    pub slack: SlackConfig,
    pub mailjet: MailjetConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value of the right name but the wrong form, in the file.
    #[error("config file {path}: `{key}`: {message}")]
    Value {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("environment variable {var} (config `{key}`): {message}")]
    Env {
        var: String,
        key: String,
        message: String,
    },
    #[error("config `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// A loaded configuration and what the loader noticed on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// `BOUNCEWATCH_*` variables that match no key: most likely typos, so they are reported.
    pub unknown_env: Vec<String>,
}

impl Config {
    /// Reads `path` (or starts from the embedded defaults), then applies `env` on top.
    pub fn load(
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Loaded, ConfigError> {
        let origin = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("<defaults>"));
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Parse {
                        path: p.to_path_buf(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        let (unknown_env, from_env) = apply_env(&mut table, env)?;
        // The key of a value that does not read is named, and the variable that set it if it
        // came from the environment: toml's own message says only what is wrong with the value.
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(
            |e: serde_path_to_error::Error<toml::de::Error>| {
                let key = e.path().to_string();
                let message = e.inner().message().to_string();
                // An element of a list is named below its key (`windows.windows[1]`).
                let set_by = |k: &String| {
                    key == *k
                        || key.starts_with(&format!("{k}["))
                        || key.starts_with(&format!("{k}."))
                };
                match from_env.iter().find(|(k, _)| set_by(k)) {
                    Some((_, var)) => ConfigError::Env {
                        var: var.clone(),
                        key,
                        message,
                    },
                    None if key == "." => ConfigError::Parse {
                        path: origin,
                        message,
                    },
                    None => ConfigError::Value {
                        path: origin,
                        key,
                        message,
                    },
                }
            },
        )?;
        Ok(Loaded {
            config,
            unknown_env,
        })
    }

    /// Checks what types alone cannot: values in range, pairs set together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.webhook.validate()?;
        self.tls.validate()?;
        self.providers.validate()?;
        self.windows.validate()?;
        self.metrics.validate()?;
        self.alerts.validate()?;
        self.email.validate()?;
        self.slack.validate()?;
        self.mailjet.validate()?;
        self.check_rules_against_the_rest()?;
        if self.journal.queue_capacity == 0 {
            return Err(ConfigError::Invalid {
                key: "journal.queue_capacity",
                message: "must be at least 1".into(),
            });
        }
        if self.journal.retention.0.is_zero() {
            return Err(ConfigError::Invalid {
                key: "journal.retention",
                message: "must be longer than zero; write e.g. \"30d\"".into(),
            });
        }
        Ok(())
    }

    /// What a rule needs from other sections: buckets kept as far back as it reads, and the
    /// channels it names configured. Either missing, it would page less than it says, or
    /// nobody.
    fn check_rules_against_the_rest(&self) -> Result<(), ConfigError> {
        let kept = u64::from(self.windows.longest_minutes()) * 60;
        for rule in self.alerts.compile()? {
            if rule.longest_window_secs() > kept {
                return Err(ConfigError::Invalid {
                    key: "alerts.rules",
                    message: format!(
                        "rule {:?} reads {} back, but the windows keep {} (the longest of windows.windows); lengthen windows.windows or shorten the rule",
                        rule.name(),
                        humantime::format_duration(std::time::Duration::from_secs(
                            rule.longest_window_secs()
                        )),
                        humantime::format_duration(std::time::Duration::from_secs(kept))
                    ),
                });
            }
            for channel in &rule.config.channels {
                let (configured, how) = match channel.as_str() {
                    "slack" => (self.slack.enabled(), "set slack.token or slack.webhook_url"),
                    "email" => (self.email.enabled(), "set email.smtp_host"),
                    _ => (true, ""),
                };
                if !configured {
                    return Err(ConfigError::Invalid {
                        key: "alerts.rules",
                        message: format!(
                            "rule {:?} sends to {channel}, which is not configured: {how}, or remove it from the rule's channels",
                            rule.name()
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// A copy with every secret replaced by a mask, safe to print and log.
    pub fn masked(&self) -> Config {
        let mut c = self.clone();
        for secret in [
            &mut c.webhook.password,
            &mut c.webhook.token,
            &mut c.api.token,
            &mut c.email.password,
            &mut c.slack.token,
            &mut c.slack.webhook_url,
            &mut c.mailjet.api_secret,
        ] {
            if !secret.is_empty() {
                *secret = MASK.to_string();
            }
        }
        c.metrics.mask_headers(MASK);
        // The port that will be used, not 0 for "the usual one"; the Mailjet key that will be
        // used, from MAILJET_API_KEY if the file has none (its secret stays masked).
        c.email.smtp_port = c.email.port();
        if let Some((key, _)) = self.mailjet.credentials() {
            c.mailjet.api_key = key;
            c.mailjet.api_secret = MASK.to_string();
        }
        c
    }

    /// The masked configuration as TOML, for `check-config`.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(&self.masked()).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// A key set from the environment (`section.key`) and the variable that set it.
type EnvKey = (String, String);

/// Overlays `BOUNCEWATCH_<SECTION>_<KEY>` variables on `table`. The keys that exist are read off
/// the defaults, so a new config field is settable from the environment with no extra code.
/// Returns the variables that match no key, and the keys set (`section.key`) with the variable
/// that set each.
fn apply_env(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
) -> Result<(Vec<String>, Vec<EnvKey>), ConfigError> {
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut known = Vec::new();
    for (section, value) in &defaults {
        if let toml::Value::Table(keys) = value {
            for (key, default) in keys {
                known.push((section.clone(), key.clone(), default.clone()));
            }
        }
    }
    let mut unknown = Vec::new();
    let mut applied = Vec::new();
    for (var, text) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let found = known
            .iter()
            .find(|(section, key, _)| rest.eq_ignore_ascii_case(&format!("{section}_{key}")));
        let Some((section, key, default)) = found else {
            unknown.push(var.clone());
            continue;
        };
        let value = env_value(text, default).map_err(|message| ConfigError::Env {
            var: var.clone(),
            key: format!("{section}.{key}"),
            message,
        })?;
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key.clone(), value);
                applied.push((format!("{section}.{key}"), var.clone()));
            }
            _ => {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    key: section.clone(),
                    message: format!("the config file sets `{section}` to a value, not a section"),
                });
            }
        }
    }
    Ok((unknown, applied))
}

/// Reads an environment string as the type the key's default has.
fn env_value(text: &str, default: &toml::Value) -> Result<toml::Value, String> {
    match default {
        toml::Value::Boolean(_) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("`{text}` is not a boolean (true or false)")),
        },
        toml::Value::Integer(_) => text
            .trim()
            .parse()
            .map(toml::Value::Integer)
            .map_err(|_| format!("`{text}` is not an integer")),
        toml::Value::Float(_) => text
            .trim()
            .parse()
            .map(toml::Value::Float)
            .map_err(|_| format!("`{text}` is not a number (e.g. 0.95)")),
        // A list is written comma-separated: BOUNCEWATCH_WINDOWS_WINDOWS=5m,1h,24h
        toml::Value::Array(_) => Ok(toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_string()))
                .collect(),
        )),
        _ => Ok(toml::Value::String(text.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_listen_on_loopback_8080() {
        let c = Config::load(None, &env(&[])).unwrap().config;
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.server.data_dir, PathBuf::from("./bouncewatch-data"));
        assert_eq!(c.server.max_body.0, 32 << 20);
        c.validate().unwrap();
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[webhook]\nusername = \"file\"\n[journal]\nqueue_capacity = 7\n",
        )
        .unwrap();
        let loaded = Config::load(
            Some(&path),
            &env(&[
                ("BOUNCEWATCH_WEBHOOK_USERNAME", "env"),
                ("BOUNCEWATCH_WEBHOOK_PASSWORD", "s3cret"),
                ("BOUNCEWATCH_WEBHOOK_ALLOW_UNAUTHENTICATED", "true"),
                ("BOUNCEWATCH_JOURNAL_RETENTION", "2d"),
                ("BOUNCEWATCH_WINDOWS_WINDOWS", "15m, 6h"),
                ("BOUNCEWATCH_TYPO_KEY", "x"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        let c = loaded.config;
        assert_eq!(c.webhook.username, "env");
        assert_eq!(c.webhook.password, "s3cret");
        assert!(c.webhook.allow_unauthenticated);
        assert_eq!(c.journal.queue_capacity, 7);
        assert_eq!(c.journal.retention.0.as_secs(), 2 * 86_400);
        assert_eq!(c.windows.longest_minutes(), 6 * 60);
        assert_eq!(c.windows.windows.len(), 2);
        assert_eq!(loaded.unknown_env, vec!["BOUNCEWATCH_TYPO_KEY".to_string()]);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load(
            None,
            &env(&[("BOUNCEWATCH_JOURNAL_QUEUE_CAPACITY", "many")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("journal.queue_capacity"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[webhook]\npasword = \"x\"\n").unwrap();
        let e = Config::load(Some(&path), &env(&[])).unwrap_err();
        assert!(e.to_string().contains("pasword"), "{e}");
    }

    /// Every kind of key reads from the environment: a decimal (`alerts.confidence`) too, and
    /// TLS files that cannot be read are caught by check-config, not only at start.
    #[test]
    fn decimals_read_from_the_environment_and_tls_files_must_exist() {
        let c = Config::load(None, &env(&[("BOUNCEWATCH_ALERTS_CONFIDENCE", "0.9")]))
            .unwrap()
            .config;
        assert_eq!(c.alerts.confidence, 0.9);
        let e = Config::load(None, &env(&[("BOUNCEWATCH_ALERTS_CONFIDENCE", "high")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("BOUNCEWATCH_ALERTS_CONFIDENCE"), "{e}");

        let c = Config::load(
            None,
            &env(&[
                ("BOUNCEWATCH_TLS_CERT", "/nonexistent/cert.pem"),
                ("BOUNCEWATCH_TLS_KEY", "/nonexistent/key.pem"),
            ]),
        )
        .unwrap()
        .config;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("tls.cert") && e.contains("/nonexistent/cert.pem"),
            "{e}"
        );
    }

    /// A value that does not read (a size, a duration, a number written as text) names its key,
    /// and the variable that set it when it came from the environment.
    #[test]
    fn a_value_that_does_not_read_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        for (text, key) in [
            ("[server]\nmax_body = \"lots\"\n", "server.max_body"),
            (
                "[server]\nretry_after_secs = \"x\"\n",
                "server.retry_after_secs",
            ),
            ("[journal]\nretention = \"forever\"\n", "journal.retention"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Config::load(Some(&path), &env(&[])).unwrap_err();
            let shown = e.to_string();
            assert!(shown.contains(&format!("`{key}`")), "{shown}");
            assert!(shown.contains(&path.display().to_string()), "{shown}");
        }
        std::fs::write(&path, "[server]\nmax_body = \"1MiB\"\n").unwrap();
        let e = Config::load(
            Some(&path),
            &env(&[("BOUNCEWATCH_SERVER_MAX_BODY", "lots")]),
        )
        .unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.contains("BOUNCEWATCH_SERVER_MAX_BODY") && shown.contains("`server.max_body`"),
            "{shown}"
        );
        // A list from the environment: the element is named, and the variable.
        let e =
            Config::load(None, &env(&[("BOUNCEWATCH_WINDOWS_WINDOWS", "5m,soon")])).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.contains("BOUNCEWATCH_WINDOWS_WINDOWS") && shown.contains("`windows.windows[1]`"),
            "{shown}"
        );
    }

    /// Rules that could never page, or page on nothing, are refused by check-config with the
    /// rule's name and what is wrong, instead of a WARN line when they fire.
    #[test]
    fn rules_that_cannot_page_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let rule = |fields: &str| {
            format!(
                "[[alerts.rules]]\nname = \"r\"\nkind = \"threshold\"\nrate = \"hard_bounce\"\nthreshold = 0.02\n{fields}\n"
            )
        };
        let spike = |fields: &str| {
            format!(
                "[[alerts.rules]]\nname = \"r\"\nkind = \"spike\"\nrate = \"block\"\nfactor = 3.0\n{fields}\n"
            )
        };
        let burn = |windows: &str, objective: &str| {
            format!(
                "[[alerts.rules]]\nname = \"r\"\nkind = \"burn_rate\"\nrate = \"spam\"\nobjective = {objective}\nburn_windows = [{windows}]\n"
            )
        };
        let cases = [
            (rule("channels = [\"slak\"]"), "\"slak\" is not one of"),
            (
                rule("channels = [\"slack\"]"),
                "slack, which is not configured",
            ),
            (
                rule("channels = [\"email\"]"),
                "email, which is not configured",
            ),
            (rule("window = \"0s\""), "`window` must be at least 1m"),
            (rule("window = \"7d\""), "the windows keep 1day"),
            (rule("recovery = 1.5"), "`recovery` = 1.5 is a rate"),
            (
                rule("").replace("threshold = 0.02", "threshold = 2.0"),
                "`threshold` = 2 is a rate",
            ),
            (
                rule("").replace("threshold = 0.02", "threshold = -1.0"),
                "`threshold` = -1 is a rate",
            ),
            (
                spike("").replace("factor = 3.0", "factor = -1.0"),
                "above 1",
            ),
            (
                burn("{ long = \"1h\", short = \"5m\", factor = 3.0 }", "0.0"),
                "`objective` = 0 is a rate",
            ),
            (
                burn("{ long = \"5m\", short = \"1h\", factor = 3.0 }", "0.001"),
                "must be longer than `short`",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&path, &text).unwrap();
            let e = Config::load(Some(&path), &env(&[]))
                .and_then(|l| l.config.validate())
                .expect_err(&text)
                .to_string();
            assert!(e.contains(want), "{text}\n→ {e}");
            assert!(e.contains("alerts.rules") && e.contains("\"r\""), "{e}");
        }
        // The same rules, with what they need, pass.
        for text in [
            rule("channels = [\"log\"]"),
            rule("window = \"1d\""),
            spike(""),
            burn("{ long = \"1h\", short = \"5m\", factor = 3.0 }", "0.001"),
        ] {
            std::fs::write(&path, &text).unwrap();
            let loaded = Config::load(Some(&path), &env(&[])).unwrap();
            loaded
                .config
                .validate()
                .unwrap_or_else(|e| panic!("{text}\n→ {e}"));
        }
    }

    #[test]
    fn provider_overrides_load_and_unknown_providers_name_the_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[providers]\n\"acme.io\" = \"google\"\n").unwrap();
        let c = Config::load(Some(&path), &env(&[])).unwrap().config;
        c.validate().unwrap();
        let classifier = crate::pipeline::Classifier::new(&c.providers).unwrap();
        assert_eq!(
            classifier.classify("a@acme.io"),
            crate::pipeline::Provider::Google
        );
        std::fs::write(&path, "[providers]\n\"acme.io\" = \"altavista\"\n").unwrap();
        let e = Config::load(Some(&path), &env(&[]))
            .unwrap()
            .config
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("config `providers`"), "{e}");
    }

    #[test]
    fn masked_output_hides_every_secret() {
        let mut c = Config::default();
        c.webhook.password = "hunter2".into();
        c.webhook.token = "tok-abc".into();
        c.api.token = "api-xyz".into();
        c.metrics.otlp_headers = vec!["Authorization=Bearer otlp-secret".into()];
        c.email.password = "smtp-pw".into();
        c.slack.token = "xoxb-slack".into();
        c.slack.webhook_url = "https://hooks.slack.com/services/T/B/hook-secret".into();
        c.mailjet.api_secret = "mj-secret".into();
        let text = c.to_masked_toml();
        assert!(text.contains("Authorization="), "{text}");
        for secret in [
            "hunter2",
            "tok-abc",
            "api-xyz",
            "otlp-secret",
            "smtp-pw",
            "xoxb-slack",
            "hook-secret",
            "mj-secret",
        ] {
            assert!(!text.contains(secret), "{secret} leaked:\n{text}");
        }
        assert!(text.contains(MASK));
    }
}
