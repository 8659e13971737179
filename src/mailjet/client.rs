//! A small client for Mailjet's `eventcallbackurl` REST resource (EVENTS.md).
//!
//! HTTP Basic with the API key and secret; the `{"Count","Data","Total"}` envelope; the
//! `ErrorInfo` / `ErrorMessage` error body. Lists page with `Limit` / `Offset` past Mailjet's
//! default of 10 rows. Every call runs under a timeout, and a `429` is retried after its
//! `Retry-After` a few times before it is reported.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Rows asked per page (Mailjet allows up to 1000).
const PAGE: usize = 100;
/// How often a 429 is retried before giving up.
const RATE_LIMIT_RETRIES: u32 = 3;
/// The longest `Retry-After` honoured; longer ones are reported instead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// One `eventcallbackurl` row, spelled as Mailjet spells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    #[serde(rename = "ID", default)]
    pub id: i64,
    #[serde(rename = "APIKeyID", default)]
    pub api_key_id: i64,
    #[serde(rename = "EventType")]
    pub event_type: String,
    #[serde(rename = "IsBackup", default)]
    pub is_backup: bool,
    #[serde(rename = "Status", default)]
    pub status: String,
    #[serde(rename = "Url")]
    pub url: String,
    #[serde(rename = "Version", default)]
    pub version: i64,
}

#[derive(Debug, Deserialize)]
struct Envelope<T> {
    #[serde(rename = "Count", default)]
    #[allow(dead_code)]
    count: usize,
    #[serde(rename = "Data", default = "Vec::new")]
    data: Vec<T>,
    #[serde(rename = "Total", default)]
    #[allow(dead_code)]
    total: usize,
}

#[derive(Debug, Deserialize, Default)]
struct ErrorBody {
    #[serde(rename = "ErrorInfo", default)]
    info: String,
    #[serde(rename = "ErrorMessage", default)]
    message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailjetError {
    #[error(
        "Mailjet refused the API key and secret (401): check MAILJET_API_KEY and MAILJET_API_SECRET"
    )]
    Unauthorized,
    #[error("Mailjet answered {status}: {message}{}", if info.is_empty() { String::new() } else { format!(" ({info})") })]
    Api {
        status: u16,
        message: String,
        info: String,
    },
    #[error("Mailjet kept rate limiting the calls (429); try again later")]
    RateLimited,
    #[error("Mailjet did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach Mailjet at {url}: {source}")]
    Network { url: String, source: reqwest::Error },
    #[error("Mailjet's answer is not what its API documents: {0}")]
    Protocol(String),
}

pub struct MailjetClient {
    http: reqwest::Client,
    base: String,
    key: String,
    secret: String,
    timeout: Duration,
}

impl MailjetClient {
    /// `base` is e.g. `https://api.mailjet.com`.
    pub fn new(
        base: &str,
        key: &str,
        secret: &str,
        timeout: Duration,
    ) -> Result<MailjetClient, MailjetError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| MailjetError::Protocol(format!("cannot build an HTTP client: {e}")))?;
        Ok(MailjetClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
            secret: secret.to_string(),
            timeout,
        })
    }

    fn url(&self, id: Option<i64>) -> String {
        match id {
            Some(id) => format!("{}/v3/REST/eventcallbackurl/{id}", self.base),
            None => format!("{}/v3/REST/eventcallbackurl", self.base),
        }
    }

    /// Every callback row, all pages.
    pub async fn list(&self) -> Result<Vec<Callback>, MailjetError> {
        let mut rows = Vec::new();
        loop {
            let url = format!("{}?Limit={PAGE}&Offset={}", self.url(None), rows.len());
            let page: Envelope<Callback> = self
                .call(reqwest::Method::GET, &url, None)
                .await?
                .ok_or_else(|| MailjetError::Protocol("an empty answer to a list".into()))?;
            // `Total` counts the rows of this page, not all rows (Mailjet's filtering guide),
            // so a short page is the only sign of the end.
            let got = page.data.len();
            rows.extend(page.data);
            if got < PAGE {
                return Ok(rows);
            }
        }
    }

    /// Creates a row; Mailjet answers `201` with it.
    pub async fn create(&self, c: &Callback) -> Result<Callback, MailjetError> {
        let body = serde_json::json!({
            "EventType": c.event_type,
            "Url": c.url,
            "Version": c.version,
            "IsBackup": c.is_backup,
        });
        self.one(reqwest::Method::POST, &self.url(None), Some(body))
            .await
    }

    /// Changes some fields of row `id` (a partial `PUT`). Returns whether Mailjet changed
    /// anything: it answers `304` without a body when nothing changed.
    pub async fn update(&self, id: i64, changes: serde_json::Value) -> Result<bool, MailjetError> {
        self.call::<serde_json::Value>(reqwest::Method::PUT, &self.url(Some(id)), Some(changes))
            .await
            .map(|answer| answer.is_some())
    }

    pub async fn delete(&self, id: i64) -> Result<(), MailjetError> {
        self.call::<serde_json::Value>(reqwest::Method::DELETE, &self.url(Some(id)), None)
            .await
            .map(|_| ())
    }

    async fn one(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Callback, MailjetError> {
        let env: Envelope<Callback> = self
            .call(method, url, body)
            .await?
            .ok_or_else(|| MailjetError::Protocol("an empty answer".into()))?;
        env.data
            .into_iter()
            .next()
            .ok_or_else(|| MailjetError::Protocol("an envelope without its row".into()))
    }

    /// One request with the timeout, the 429 retries and the error mapping; `None` for an
    /// empty body (`204`).
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Option<T>, MailjetError> {
        let mut rate_limited = 0;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url)
                .basic_auth(&self.key, Some(&self.secret));
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_string());
            }
            let sent = tokio::time::timeout(self.timeout, req.send()).await;
            let resp = match sent {
                Err(_) => return Err(MailjetError::Timeout(self.timeout)),
                Ok(Err(e)) if e.is_timeout() => return Err(MailjetError::Timeout(self.timeout)),
                Ok(Err(source)) => {
                    return Err(MailjetError::Network {
                        url: self.base.clone(),
                        source,
                    });
                }
                Ok(Ok(r)) => r,
            };
            let status = resp.status();
            if status.as_u16() == 429 {
                let wait = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(Duration::from_secs(1));
                rate_limited += 1;
                if rate_limited > RATE_LIMIT_RETRIES || wait > MAX_RETRY_AFTER {
                    return Err(MailjetError::RateLimited);
                }
                tracing::debug!(?wait, "Mailjet rate limited the call; waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
            let text = tokio::time::timeout(self.timeout, resp.text())
                .await
                .map_err(|_| MailjetError::Timeout(self.timeout))?
                .map_err(|source| MailjetError::Network {
                    url: self.base.clone(),
                    source,
                })?;
            if status.as_u16() == 401 {
                return Err(MailjetError::Unauthorized);
            }
            if status.as_u16() == 304 {
                return Ok(None);
            }
            if !status.is_success() {
                let err: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
                return Err(MailjetError::Api {
                    status: status.as_u16(),
                    message: if err.message.is_empty() {
                        text.chars().take(200).collect()
                    } else {
                        err.message
                    },
                    info: err.info,
                });
            }
            if text.trim().is_empty() {
                return Ok(None);
            }
            return serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| MailjetError::Protocol(e.to_string()));
        }
    }
}
