//! `mailjet setup` and `mailjet status`: what the callbacks should be, what they are, and the
//! smallest set of calls that gets from one to the other.
//!
//! Mailjet keeps one callback per event type (plus a backup), so the plan matches rows by
//! `(EventType, IsBackup)`: a missing row is created, a differing one updated in place with a
//! partial `PUT`, an identical one left alone. Running it twice changes nothing, and it never
//! creates a second row for a type.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::client::Callback;

/// The seven event types Mailjet can post, in its order.
pub const EVENT_TYPES: [&str; 7] = [
    "sent", "open", "click", "bounce", "blocked", "spam", "unsub",
];

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Create {
        event_type: String,
        is_backup: bool,
        url: String,
        version: i64,
    },
    Update {
        id: i64,
        event_type: String,
        is_backup: bool,
        /// Only the fields that differ, as the `PUT` body.
        changes: Value,
    },
    Keep {
        id: i64,
        event_type: String,
        is_backup: bool,
    },
}

/// What the callbacks should look like.
pub struct Desired<'a> {
    pub events: &'a [String],
    pub url: &'a str,
    pub backup_url: Option<&'a str>,
    pub version: i64,
}

/// The calls that make `existing` match `desired`.
pub fn plan(existing: &[Callback], desired: &Desired) -> Vec<Action> {
    let mut out = Vec::new();
    for event_type in desired.events {
        let targets =
            std::iter::once((false, desired.url)).chain(desired.backup_url.map(|u| (true, u)));
        for (is_backup, url) in targets {
            let found = existing.iter().find(|c| {
                c.event_type.eq_ignore_ascii_case(event_type) && c.is_backup == is_backup
            });
            match found {
                None => out.push(Action::Create {
                    event_type: event_type.clone(),
                    is_backup,
                    url: url.to_string(),
                    version: desired.version,
                }),
                Some(row) => {
                    let mut changes = Map::new();
                    if row.url != url {
                        changes.insert("Url".into(), json!(url));
                    }
                    if row.version != desired.version {
                        changes.insert("Version".into(), json!(desired.version));
                    }
                    // A suspended callback comes back by being updated (EVENTS.md).
                    if row.status.eq_ignore_ascii_case("dead") {
                        changes.insert("Url".into(), json!(url));
                        changes.insert("Status".into(), json!("alive"));
                    }
                    if changes.is_empty() {
                        out.push(Action::Keep {
                            id: row.id,
                            event_type: event_type.clone(),
                            is_backup,
                        });
                    } else {
                        out.push(Action::Update {
                            id: row.id,
                            event_type: event_type.clone(),
                            is_backup,
                            changes: Value::Object(changes),
                        });
                    }
                }
            }
        }
    }
    out
}

/// `url` with the password (and a `token` query value) replaced by `****`, for printing.
pub fn mask_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return "<not a URL>".into();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("****"));
    }
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let v = if k.eq_ignore_ascii_case("token") {
                "****".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    if !pairs.is_empty() {
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// The URL Mailjet should call: `public` with the webhook's credentials in it, so that Mailjet
/// sends them (Basic as `user:pass@`, or the token as `?token=`).
pub fn url_with_credentials(
    public: &str,
    username: &str,
    password: &str,
    token: &str,
) -> Result<String, String> {
    let mut u = url::Url::parse(public).map_err(|e| format!("{public:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{public:?} is not an http(s) URL"));
    }
    if !username.is_empty() {
        u.set_username(username)
            .and_then(|()| u.set_password(Some(password)))
            .map_err(|()| format!("{public:?} cannot carry credentials"))?;
    } else if !token.is_empty() {
        u.query_pairs_mut().append_pair("token", token);
    }
    Ok(u.to_string())
}

/// The URL without credentials, to compare a callback with this deployment.
pub fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("token"))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            u.set_query(None);
            if !pairs.is_empty() {
                u.query_pairs_mut().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// What is wrong with the callbacks, as `status` reports it and the watch alerts on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Problems {
    /// Event types whose callback Mailjet marks `dead`.
    pub dead: Vec<String>,
    /// Event types without a (primary) callback.
    pub missing: Vec<String>,
    /// Event types whose callback points somewhere else than `expected_url`.
    pub elsewhere: Vec<String>,
}

impl Problems {
    pub fn any(&self) -> bool {
        !(self.dead.is_empty() && self.missing.is_empty() && self.elsewhere.is_empty())
    }

    pub fn count(&self) -> usize {
        self.dead.len() + self.missing.len() + self.elsewhere.len()
    }

    /// One line for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.dead.is_empty() {
            parts.push(format!("dead: {}", self.dead.join(", ")));
        }
        if !self.missing.is_empty() {
            parts.push(format!("not registered: {}", self.missing.join(", ")));
        }
        if !self.elsewhere.is_empty() {
            parts.push(format!("pointing elsewhere: {}", self.elsewhere.join(", ")));
        }
        parts.join("; ")
    }
}

/// Checks the rows against the event types this deployment registers (`mailjet.events`) and,
/// if given, its URL. A callback at the URL plus `/{event type}` (one URL per type, as the
/// receiver accepts) points here too.
pub fn problems(rows: &[Callback], expected_url: Option<&str>, events: &[String]) -> Problems {
    let mut p = Problems::default();
    let expected = expected_url.map(without_credentials);
    for event_type in EVENT_TYPES {
        let primary = rows
            .iter()
            .find(|c| !c.is_backup && c.event_type.eq_ignore_ascii_case(event_type));
        match primary {
            None if !events.iter().any(|e| e.eq_ignore_ascii_case(event_type)) => {}
            None => p.missing.push(event_type.to_string()),
            Some(c) => {
                if c.status.eq_ignore_ascii_case("dead") {
                    p.dead.push(event_type.to_string());
                }
                let here = |e: &str| {
                    let url = without_credentials(&c.url);
                    url == e || url == format!("{}/{event_type}", e.trim_end_matches('/'))
                };
                if expected.as_deref().is_some_and(|e| !here(e)) {
                    p.elsewhere.push(event_type.to_string());
                }
            }
        }
    }
    for c in rows
        .iter()
        .filter(|c| c.is_backup && c.status.eq_ignore_ascii_case("dead"))
    {
        p.dead.push(format!("{} (backup)", c.event_type));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, event: &str, url: &str, version: i64) -> Callback {
        Callback {
            id,
            api_key_id: 1,
            event_type: event.into(),
            is_backup: false,
            status: "alive".into(),
            url: url.into(),
            version,
        }
    }

    #[test]
    fn the_plan_creates_updates_and_keeps() {
        let events: Vec<String> = EVENT_TYPES.iter().map(|s| s.to_string()).collect();
        let url = "https://u:p@bw.example.com/webhooks/mailjet";
        let existing = vec![
            row(1, "sent", url, 2),
            row(2, "open", "https://old.example.com/hook", 2),
            row(3, "click", url, 1),
        ];
        let plan = plan(
            &existing,
            &Desired {
                events: &events,
                url,
                backup_url: None,
                version: 2,
            },
        );
        assert_eq!(plan.len(), 7);
        assert!(matches!(plan[0], Action::Keep { id: 1, .. }));
        assert!(
            matches!(&plan[1], Action::Update { id: 2, changes, .. } if changes == &json!({"Url": url}))
        );
        assert!(
            matches!(&plan[2], Action::Update { id: 3, changes, .. } if changes == &json!({"Version": 2}))
        );
        assert_eq!(
            plan.iter()
                .filter(|a| matches!(a, Action::Create { .. }))
                .count(),
            4
        );
    }

    #[test]
    fn urls_carry_and_hide_credentials() {
        let with = url_with_credentials(
            "https://bw.example.com/webhooks/mailjet",
            "mj",
            "s3cr:t",
            "",
        )
        .unwrap();
        assert_eq!(with, "https://mj:s3cr%3At@bw.example.com/webhooks/mailjet");
        assert_eq!(
            mask_url(&with),
            "https://mj:****@bw.example.com/webhooks/mailjet"
        );
        let tok = url_with_credentials("https://bw.example.com/h", "", "", "tk").unwrap();
        assert_eq!(tok, "https://bw.example.com/h?token=tk");
        assert_eq!(mask_url(&tok), "https://bw.example.com/h?token=****");
        assert_eq!(
            without_credentials(&with),
            "https://bw.example.com/webhooks/mailjet"
        );
        assert_eq!(without_credentials(&tok), "https://bw.example.com/h");
    }

    #[test]
    fn problems_name_dead_missing_and_foreign_callbacks() {
        let mut rows: Vec<Callback> = EVENT_TYPES
            .iter()
            .enumerate()
            .map(|(i, e)| row(i as i64 + 1, e, "https://a:b@bw.example.com/h", 2))
            .collect();
        let all: Vec<String> = EVENT_TYPES.iter().map(|e| e.to_string()).collect();
        assert!(!problems(&rows, Some("https://bw.example.com/h"), &all).any());
        rows[0].status = "dead".into();
        rows[1].url = "https://elsewhere.example.com/h".into();
        rows.remove(6);
        let p = problems(&rows, Some("https://bw.example.com/h"), &all);
        assert_eq!(p.dead, vec!["sent"]);
        assert_eq!(p.elsewhere, vec!["open"]);
        assert_eq!(p.missing, vec!["unsub"]);
        assert_eq!(p.count(), 3);
    }

    /// A deployment that registers only some types (`mailjet.events`) is not told the others
    /// are missing, and one URL per type (`…/webhooks/mailjet/sent`) points here.
    #[test]
    fn only_the_configured_types_are_missed_and_per_type_urls_point_here() {
        let rows = vec![
            row(1, "sent", "https://a:b@bw.example.com/h/sent", 2),
            row(2, "bounce", "https://a:b@bw.example.com/h/bounce", 2),
            row(3, "open", "https://a:b@bw.example.com/h/click", 2),
        ];
        let wanted = |list: &[&str]| list.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        let p = problems(
            &rows,
            Some("https://bw.example.com/h"),
            &wanted(&["sent", "bounce", "open", "blocked"]),
        );
        assert_eq!(p.missing, vec!["blocked"]);
        assert_eq!(p.elsewhere, vec!["open"], "open's URL is click's");
        assert!(p.dead.is_empty());
    }
}
