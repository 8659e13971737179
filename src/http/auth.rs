//! Webhook authentication: HTTP Basic and/or a `?token=` secret, compared in constant time.
//!
//! Mailjet does not sign its webhooks. The documented protection is HTTPS plus Basic
//! credentials in the callback URL (`https://user:pass@host/...`), which arrive as a normal
//! `Authorization: Basic` header. A secret query token serves setups that cannot use Basic.
//! When both are configured, either one admits a request.

use std::net::SocketAddr;

use axum::http::HeaderMap;
use base64::Engine;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::config::ConfigError;

/// `[webhook]` in the config file. Set the secrets through the environment:
/// `BOUNCEWATCH_WEBHOOK_USERNAME`, `BOUNCEWATCH_WEBHOOK_PASSWORD`, `BOUNCEWATCH_WEBHOOK_TOKEN`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    pub username: String,
    pub password: String,
    /// A secret accepted as `?token=` on the webhook URL.
    pub token: String,
    /// Serve the webhook without credentials on a non-loopback address. Logs a warning.
    pub allow_unauthenticated: bool,
}

impl WebhookConfig {
    fn basic_configured(&self) -> bool {
        !self.username.is_empty() || !self.password.is_empty()
    }

    pub fn has_credentials(&self) -> bool {
        self.basic_configured() || !self.token.is_empty()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.basic_configured() && (self.username.is_empty() || self.password.is_empty()) {
            let key = if self.username.is_empty() {
                "webhook.username"
            } else {
                "webhook.password"
            };
            return Err(ConfigError::Invalid {
                key,
                message: "Basic auth needs both a username and a password: set \
                          BOUNCEWATCH_WEBHOOK_USERNAME and BOUNCEWATCH_WEBHOOK_PASSWORD"
                    .into(),
            });
        }
        if self.username.contains(':') {
            return Err(ConfigError::Invalid {
                key: "webhook.username",
                message: "must not contain ':' (HTTP Basic separates user and password with it)"
                    .into(),
            });
        }
        Ok(())
    }

    /// Refuses to expose an unauthenticated receiver beyond loopback unless told to.
    pub fn check_exposure(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        if self.has_credentials()
            || listen.ip().to_canonical().is_loopback()
            || self.allow_unauthenticated
        {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: "webhook.allow_unauthenticated",
            message: format!(
                "no webhook credential is configured and server.listen is {listen}, which is not \
                 loopback: set BOUNCEWATCH_WEBHOOK_USERNAME and BOUNCEWATCH_WEBHOOK_PASSWORD (or \
                 BOUNCEWATCH_WEBHOOK_TOKEN), listen on 127.0.0.1, or set \
                 webhook.allow_unauthenticated = true"
            ),
        })
    }
}

/// The credentials in the form the request path checks them.
pub struct WebhookAuth {
    /// The full expected `Authorization` header value, `Basic base64(user:pass)`.
    basic: Option<Vec<u8>>,
    token: Option<Vec<u8>>,
}

impl WebhookAuth {
    pub fn new(config: &WebhookConfig) -> WebhookAuth {
        let basic = config.basic_configured().then(|| {
            let pair = format!("{}:{}", config.username, config.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
            .into_bytes()
        });
        let token = (!config.token.is_empty()).then(|| config.token.clone().into_bytes());
        WebhookAuth { basic, token }
    }

    /// Whether the request carries a configured credential. With none configured, every request
    /// is admitted (the exposure check has already limited who can reach us).
    pub fn admits(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        if self.basic.is_none() && self.token.is_none() {
            return true;
        }
        let basic_ok = match (&self.basic, headers.get(axum::http::header::AUTHORIZATION)) {
            (Some(expected), Some(got)) => {
                constant_time_eq(expected, &normalize_basic(got.as_bytes()))
            }
            _ => false,
        };
        let token_ok = match (&self.token, query) {
            (Some(expected), Some(query)) => query_token_matches(expected, query),
            _ => false,
        };
        basic_ok || token_ok
    }
}

/// Whether `?token=` carries `expected`. Form decoding reads `+` as a space, but a token pasted
/// into Mailjet's URL field keeps its `+` as it is: the value is read both ways, and either
/// matching admits the request (both come from the same bytes the sender chose).
fn query_token_matches(expected: &[u8], query: &str) -> bool {
    let found = |query: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "token")
            .is_some_and(|(_, value)| constant_time_eq(expected, value.as_bytes()))
    };
    found(query) || (query.contains('+') && found(&query.replace('+', "%2B")))
}

/// Accepts any case of the `Basic` scheme name, as RFC 7617 allows.
fn normalize_basic(header: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if header.len() > 6 && header[..6].eq_ignore_ascii_case(b"basic ") && &header[..6] != b"Basic "
    {
        let mut v = b"Basic ".to_vec();
        v.extend_from_slice(&header[6..]);
        std::borrow::Cow::Owned(v)
    } else {
        std::borrow::Cow::Borrowed(header)
    }
}

/// Compares in time independent of where the first difference is. The length of the expected
/// value may leak; its content does not.
pub fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    expected.len() == given.len() && bool::from(expected.ct_eq(given))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn basic_and_token_each_admit() {
        let auth = WebhookAuth::new(&WebhookConfig {
            username: "mj".into(),
            password: "pw".into(),
            token: "t0k".into(),
            allow_unauthenticated: false,
        });
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("mj:pw")
        );
        assert!(auth.admits(&headers(&good), None));
        assert!(auth.admits(&headers(&good.replace("Basic", "basic")), None));
        assert!(!auth.admits(&headers("Basic bWo6bm8="), None));
        assert!(auth.admits(&HeaderMap::new(), Some("a=1&token=t0k")));
        assert!(!auth.admits(&HeaderMap::new(), Some("token=t0")));
    }

    #[test]
    fn a_token_with_a_plus_is_admitted_as_pasted_or_encoded() {
        let auth = WebhookAuth::new(&WebhookConfig {
            token: "a+b c".into(),
            ..WebhookConfig::default()
        });
        assert!(auth.admits(&HeaderMap::new(), Some("token=a+b%20c")));
        assert!(auth.admits(&HeaderMap::new(), Some("token=a%2Bb+c")));
        assert!(auth.admits(&HeaderMap::new(), Some("token=a%2Bb%20c")));
        assert!(!auth.admits(&HeaderMap::new(), Some("token=a+b+d")));
        assert!(!auth.admits(&HeaderMap::new(), Some("token=a%20b%20c")));
        assert!(!auth.admits(&HeaderMap::new(), None));
    }

    #[test]
    fn exposure_needs_credentials_or_explicit_consent() {
        let open = WebhookConfig::default();
        assert!(open.check_exposure("127.0.0.1:1".parse().unwrap()).is_ok());
        let err = open
            .check_exposure("0.0.0.0:1".parse().unwrap())
            .unwrap_err();
        assert!(
            err.to_string().contains("webhook.allow_unauthenticated"),
            "{err}"
        );
        let consent = WebhookConfig {
            allow_unauthenticated: true,
            ..Default::default()
        };
        assert!(consent.check_exposure("0.0.0.0:1".parse().unwrap()).is_ok());
        let token = WebhookConfig {
            token: "x".into(),
            ..Default::default()
        };
        assert!(token.check_exposure("0.0.0.0:1".parse().unwrap()).is_ok());
    }
}
