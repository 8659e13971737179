//! Silences: "do not notify about this rule and key until then".
//!
//! A silence matches a rule (or every rule) and, optionally, a provider and a campaign. The
//! engine keeps evaluating silenced alerts, so their state stays right and a resolution after
//! the silence ends is still sent; only the notifications are suppressed, and counted.

use serde::{Deserialize, Serialize};

use crate::pipeline::Provider;
use crate::windows::Key;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: i64,
    /// The rule's name; `None` matches every rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// A campaign id or name, as the stats API shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Unix ms after which the silence no longer applies.
    pub until_ms: i64,
    pub created_ms: i64,
    #[serde(default)]
    pub comment: String,
}

impl Silence {
    pub fn active(&self, now_ms: i64) -> bool {
        now_ms < self.until_ms
    }

    /// Whether this silence covers an alert of `rule` on `key` (`None`: a webhook alert).
    pub fn matches(&self, rule: &str, key: Option<&Key>) -> bool {
        if self.rule.as_deref().is_some_and(|r| r != rule) {
            return false;
        }
        let (provider, campaign) = match key {
            Some(Key::Provider(p)) => (Some(*p), None),
            Some(Key::Campaign(c)) => (None, Some(c.to_string())),
            Some(Key::CampaignProvider(c, p)) => (Some(*p), Some(c.to_string())),
            Some(Key::Global) | None => (None, None),
        };
        if self.provider.is_some() && self.provider != provider {
            return false;
        }
        if self.campaign.is_some() && self.campaign != campaign {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::CampaignKey;

    fn silence(rule: Option<&str>, provider: Option<Provider>, campaign: Option<&str>) -> Silence {
        Silence {
            id: 1,
            rule: rule.map(str::to_string),
            provider,
            campaign: campaign.map(str::to_string),
            until_ms: 2_000,
            created_ms: 0,
            comment: String::new(),
        }
    }

    #[test]
    fn matchers() {
        let yahoo = Key::Provider(Provider::Yahoo);
        let c7 = Key::CampaignProvider(CampaignKey::Id(7), Provider::Google);
        let all = silence(None, None, None);
        assert!(all.matches("any", Some(&yahoo)) && all.matches("any", None));
        let rule = silence(Some("spike"), None, None);
        assert!(rule.matches("spike", Some(&yahoo)) && !rule.matches("other", Some(&yahoo)));
        let provider = silence(Some("spike"), Some(Provider::Yahoo), None);
        assert!(provider.matches("spike", Some(&yahoo)));
        assert!(!provider.matches("spike", Some(&Key::Provider(Provider::Google))));
        assert!(!provider.matches("spike", Some(&Key::Global)));
        let campaign = silence(None, None, Some("7"));
        assert!(campaign.matches("hard", Some(&c7)));
        assert!(!campaign.matches("hard", Some(&yahoo)));
        assert!(all.active(1_999) && !all.active(2_000));
    }
}
