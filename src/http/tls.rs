//! Optional in-process TLS (rustls). Plain HTTP behind a TLS-terminating proxy stays the
//! default; set `tls.cert` and `tls.key` (PEM files) to serve HTTPS directly.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `[tls]` in the config file. Both paths or neither.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let (cert, key) = (
            self.cert.as_os_str().is_empty(),
            self.key.as_os_str().is_empty(),
        );
        if cert != key {
            return Err(ConfigError::Invalid {
                key: if cert { "tls.cert" } else { "tls.key" },
                message: "set both tls.cert and tls.key, or neither for plain HTTP".into(),
            });
        }
        // So that check-config catches a wrong path, not only the start.
        for (key, path) in [("tls.cert", &self.cert), ("tls.key", &self.key)] {
            if !path.as_os_str().is_empty()
                && let Err(e) = std::fs::File::open(path)
            {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("cannot read {}: {e}", path.display()),
                });
            }
        }
        Ok(())
    }
}

pub use axum_server::tls_rustls::RustlsConfig;

/// Reads the certificate and key, so that a bad path fails the start, before anything listens.
pub async fn load(config: &TlsConfig) -> std::io::Result<RustlsConfig> {
    RustlsConfig::from_pem_file(&config.cert, &config.key)
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot load tls.cert {} / tls.key {}: {e}",
                    config.cert.display(),
                    config.key.display()
                ),
            )
        })
}
