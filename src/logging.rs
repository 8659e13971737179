//! Logging setup: `tracing` to stderr, as text for people or JSON lines for log shippers.
//!
//! Secrets never reach a log line: the config is logged only through `Config::masked`, and the
//! receiver logs request metadata, never bodies or credentials.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// `[log]` in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A `tracing` filter such as `info` or `bouncewatch=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: stderr is as often a file, a pipe or journald, where the
    // escape codes would land in the log as text. `NO_COLOR` turns them off anywhere.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let result = if config.format.eq_ignore_ascii_case("json") {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("logging was already initialised: {e}");
    }
}
