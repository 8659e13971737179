//! Mailbox provider classification.
//!
//! Three sources, strongest first:
//! 1. **Overrides** from `[providers]` in the config (`"example.com" = "google"`).
//! 2. **The built-in table** of consumer domains (gmail.com, outlook.*, yahoo.*, ...).
//! 3. **What was learned** from `sent` events: the receiving server names itself in its SMTP
//!    reply (`... - gsmtp` is Google, `*.protection.outlook.com` is Microsoft 365), so a custom
//!    domain hosted by Google Workspace or Microsoft 365 is counted under that provider, and its
//!    later bounces are classified the same way.
//!
//! Anything else is [`Provider::Other`]. The set is closed on purpose: it becomes a metric
//! label, and a label must not grow without bound.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The mailbox providers bouncewatch reports separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Google,
    Microsoft,
    Yahoo,
    Apple,
    /// GMX and WEB.DE (both United Internet).
    Gmx,
    Orange,
    Free,
    Sfr,
    LaPoste,
    TOnline,
    Comcast,
    MailRu,
    Yandex,
    Qq,
    Other,
}

impl Provider {
    pub const ALL: [Provider; 15] = [
        Provider::Google,
        Provider::Microsoft,
        Provider::Yahoo,
        Provider::Apple,
        Provider::Gmx,
        Provider::Orange,
        Provider::Free,
        Provider::Sfr,
        Provider::LaPoste,
        Provider::TOnline,
        Provider::Comcast,
        Provider::MailRu,
        Provider::Yandex,
        Provider::Qq,
        Provider::Other,
    ];

    /// The label value used in metrics, the API and the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Google => "google",
            Provider::Microsoft => "microsoft",
            Provider::Yahoo => "yahoo",
            Provider::Apple => "apple",
            Provider::Gmx => "gmx",
            Provider::Orange => "orange",
            Provider::Free => "free",
            Provider::Sfr => "sfr",
            Provider::LaPoste => "la_poste",
            Provider::TOnline => "t_online",
            Provider::Comcast => "comcast",
            Provider::MailRu => "mail_ru",
            Provider::Yandex => "yandex",
            Provider::Qq => "qq",
            Provider::Other => "other",
        }
    }

    pub fn parse(name: &str) -> Option<Provider> {
        let name = name.trim().to_ascii_lowercase().replace('-', "_");
        Provider::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// Domains matched exactly.
const EXACT: &[(&str, Provider)] = &[
    ("gmail.com", Provider::Google),
    ("googlemail.com", Provider::Google),
    ("msn.com", Provider::Microsoft),
    ("ymail.com", Provider::Yahoo),
    ("rocketmail.com", Provider::Yahoo),
    ("aol.com", Provider::Yahoo),
    ("icloud.com", Provider::Apple),
    ("me.com", Provider::Apple),
    ("mac.com", Provider::Apple),
    ("web.de", Provider::Gmx),
    ("orange.fr", Provider::Orange),
    ("wanadoo.fr", Provider::Orange),
    ("free.fr", Provider::Free),
    ("sfr.fr", Provider::Sfr),
    ("neuf.fr", Provider::Sfr),
    ("laposte.net", Provider::LaPoste),
    ("t-online.de", Provider::TOnline),
    ("comcast.net", Provider::Comcast),
    ("mail.ru", Provider::MailRu),
    ("bk.ru", Provider::MailRu),
    ("inbox.ru", Provider::MailRu),
    ("list.ru", Provider::MailRu),
    ("yandex.ru", Provider::Yandex),
    ("yandex.com", Provider::Yandex),
    ("ya.ru", Provider::Yandex),
    ("qq.com", Provider::Qq),
];

/// Brands registered under many country domains: `outlook.fr`, `hotmail.co.uk`, `yahoo.de`.
/// The brand must be the whole first label, followed by one or two short labels.
const BRANDS: &[(&str, Provider)] = &[
    ("outlook", Provider::Microsoft),
    ("hotmail", Provider::Microsoft),
    ("live", Provider::Microsoft),
    ("yahoo", Provider::Yahoo),
    ("gmx", Provider::Gmx),
];

/// The built-in table.
pub fn builtin(domain: &str) -> Option<Provider> {
    // A map, not a scan of the table: this runs for nearly every event, and comparing the
    // domain with each entry in turn was a sixth of the pipeline's instructions.
    static EXACT_MAP: std::sync::LazyLock<HashMap<&str, Provider, foldhash::fast::RandomState>> =
        std::sync::LazyLock::new(|| EXACT.iter().copied().collect());
    if let Some(&p) = EXACT_MAP.get(domain) {
        return Some(p);
    }
    let (first, rest) = domain.split_once('.')?;
    // The brand first: most domains are none of these, and need no look at their suffix.
    let &(_, provider) = BRANDS.iter().find(|(brand, _)| *brand == first)?;
    let suffix_ok = !rest.is_empty()
        && rest.split('.').count() <= 2
        && rest
            .split('.')
            .all(|l| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic()));
    suffix_ok.then_some(provider)
}

/// Which provider's server wrote this SMTP reply, if it says. Only signatures that name the
/// provider's own infrastructure count, so a reply from an unrelated relay teaches nothing.
pub fn from_smtp_reply(reply: &str) -> Option<Provider> {
    let r = reply.to_ascii_lowercase();
    let has = |s: &str| r.contains(s);
    if r.trim_end_matches(|c: char| c == ')' || c.is_whitespace())
        .ends_with("- gsmtp")
        || has("mx.google.com")
    {
        Some(Provider::Google)
    } else if has("protection.outlook.com") || has("outlook.com") || has("hotmail.com") {
        Some(Provider::Microsoft)
    } else if has("yahoo.com") || has("yahoodns.net") {
        Some(Provider::Yahoo)
    } else if has("icloud.com") || has("apple.com") {
        Some(Provider::Apple)
    } else if has("gmx.net") || has("web.de") || has("kundenserver.de") {
        Some(Provider::Gmx)
    } else if has("mail.ru") {
        Some(Provider::MailRu)
    } else if has("yandex") {
        Some(Provider::Yandex)
    } else {
        None
    }
}

/// The domain part of an address, lower-cased; `None` when there is none. Borrowed from the
/// address when it is lower case already, as nearly every one is: this runs for every event.
pub fn domain_of(email: &str) -> Option<Cow<'_, str>> {
    let (_, domain) = email.rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.');
    if domain.is_empty() {
        None
    } else if domain.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(domain.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(domain))
    }
}

/// `[providers]` in the config file: domain = provider name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct ProvidersConfig(pub BTreeMap<String, String>);

impl ProvidersConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.resolve().map(|_| ())
    }

    fn resolve(&self) -> Result<DomainMap, ConfigError> {
        self.0
            .iter()
            .map(|(domain, name)| {
                let provider = Provider::parse(name).ok_or_else(|| ConfigError::Invalid {
                    key: "providers",
                    message: format!(
                        "`{domain}` = \"{name}\" names no provider; use one of: {}",
                        Provider::ALL.map(Provider::as_str).join(", ")
                    ),
                })?;
                Ok((domain.trim().to_ascii_lowercase(), provider))
            })
            .collect()
    }
}

/// A map looked up for every event: foldhash, as in the windows (SipHash showed in the
/// pipeline's profile). Its seed is random per process, like SipHash's.
type DomainMap = HashMap<String, Provider, foldhash::fast::RandomState>;

/// Classifies addresses, and learns from SMTP replies.
#[derive(Debug, Default)]
pub struct Classifier {
    overrides: DomainMap,
    learned: DomainMap,
}

impl Classifier {
    pub fn new(config: &ProvidersConfig) -> Result<Classifier, ConfigError> {
        Ok(Classifier {
            overrides: config.resolve()?,
            learned: DomainMap::default(),
        })
    }

    /// Restores what was learned before (from the pipeline's state).
    pub fn restore(&mut self, learned: impl IntoIterator<Item = (String, Provider)>) {
        self.learned.extend(learned);
    }

    pub fn classify(&self, email: &str) -> Provider {
        domain_of(email)
            .map(|d| self.classify_domain(&d))
            .unwrap_or(Provider::Other)
    }

    pub fn classify_domain(&self, domain: &str) -> Provider {
        self.overrides
            .get(domain)
            .copied()
            .or_else(|| builtin(domain))
            .or_else(|| self.learned.get(domain).copied())
            .unwrap_or(Provider::Other)
    }

    /// Learns from a `sent` event's SMTP reply. Returns the pair when it is new or changed, so
    /// the caller can persist it; built-in and overridden domains are never re-learned.
    pub fn learn(&mut self, email: &str, smtp_reply: &str) -> Option<(String, Provider)> {
        let domain = domain_of(email)?;
        if self.overrides.contains_key(&*domain) || builtin(&domain).is_some() {
            return None;
        }
        let provider = from_smtp_reply(smtp_reply)?;
        if self.learned.get(&*domain) == Some(&provider) {
            return None;
        }
        let domain = domain.into_owned();
        self.learned.insert(domain.clone(), provider);
        Some((domain, provider))
    }

    /// Everything learned so far, for persistence and inspection.
    pub fn learned(&self) -> impl Iterator<Item = (&str, Provider)> {
        self.learned.iter().map(|(d, p)| (d.as_str(), *p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_is_lower_cased_and_borrowed_when_it_already_is() {
        assert_eq!(domain_of("a@Gmail.COM. ").as_deref(), Some("gmail.com"));
        assert!(matches!(domain_of("a@b@x.io"), Some(Cow::Borrowed("x.io"))));
        assert_eq!(domain_of("no-at-sign"), None);
        assert_eq!(domain_of("a@ ."), None);
    }

    #[test]
    fn the_builtin_table_covers_the_consumer_domains() {
        let cases = [
            ("a@gmail.com", Provider::Google),
            ("a@GoogleMail.com", Provider::Google),
            ("a@outlook.fr", Provider::Microsoft),
            ("a@hotmail.co.uk", Provider::Microsoft),
            ("a@live.com", Provider::Microsoft),
            ("a@msn.com", Provider::Microsoft),
            ("a@yahoo.fr", Provider::Yahoo),
            ("a@ymail.com", Provider::Yahoo),
            ("a@rocketmail.com", Provider::Yahoo),
            ("a@aol.com", Provider::Yahoo),
            ("a@icloud.com", Provider::Apple),
            ("a@me.com", Provider::Apple),
            ("a@mac.com", Provider::Apple),
            ("a@gmx.de", Provider::Gmx),
            ("a@web.de", Provider::Gmx),
            ("a@orange.fr", Provider::Orange),
            ("a@free.fr", Provider::Free),
            ("a@sfr.fr", Provider::Sfr),
            ("a@laposte.net", Provider::LaPoste),
            ("a@t-online.de", Provider::TOnline),
            ("a@comcast.net", Provider::Comcast),
            ("a@mail.ru", Provider::MailRu),
            ("a@yandex.ru", Provider::Yandex),
            ("a@qq.com", Provider::Qq),
            ("a@example.com", Provider::Other),
            ("not-an-address", Provider::Other),
            ("", Provider::Other),
        ];
        let c = Classifier::default();
        for (email, want) in cases {
            assert_eq!(c.classify(email), want, "{email}");
        }
    }

    #[test]
    fn brands_match_only_as_the_whole_first_label_of_a_country_domain() {
        assert_eq!(builtin("outlook.com"), Some(Provider::Microsoft));
        assert_eq!(builtin("outlookfans.com"), None);
        assert_eq!(builtin("live.example.org.uk"), None);
        assert_eq!(builtin("livemusic.de"), None);
        assert_eq!(builtin("mail.live.com"), None);
    }

    #[test]
    fn smtp_replies_name_their_provider() {
        assert_eq!(
            from_smtp_reply("sent (250 2.0.0 OK 1433333948 fa5si855896wjc.199 - gsmtp)"),
            Some(Provider::Google)
        );
        assert_eq!(
            from_smtp_reply(
                "250 2.6.0 <x@y> [InternalId=1, Hostname=AM0PR01MB.eurprd01.prod.protection.outlook.com] Queued"
            ),
            Some(Provider::Microsoft)
        );
        assert_eq!(
            from_smtp_reply("250 ok dirdel mta1001.mail.gq1.yahoo.com"),
            Some(Provider::Yahoo)
        );
        assert_eq!(from_smtp_reply("250 OK id=1qXyZ-000abc-De"), None);
        assert_eq!(from_smtp_reply("250 2.0.0 Ok: queued as 4B3C2"), None);
    }

    #[test]
    fn custom_domains_are_learned_from_sent_replies() {
        let mut c = Classifier::default();
        assert_eq!(c.classify("ceo@acme.io"), Provider::Other);
        let learned = c.learn("ceo@acme.io", "250 2.0.0 OK 1700000000 x - gsmtp");
        assert_eq!(learned, Some(("acme.io".to_string(), Provider::Google)));
        assert_eq!(c.classify("cfo@ACME.io"), Provider::Google);
        // The same fact again is not news; a built-in domain is never re-learned.
        assert_eq!(c.learn("x@acme.io", "250 ok - gsmtp"), None);
        assert_eq!(c.learn("x@gmail.com", "250 protection.outlook.com"), None);
        assert_eq!(c.classify("x@gmail.com"), Provider::Google);
        // A reply that names nobody teaches nothing.
        assert_eq!(c.learn("x@other.io", "250 OK"), None);
    }

    #[test]
    fn overrides_win_and_bad_names_are_refused() {
        let config = ProvidersConfig(
            [
                ("acme.io".to_string(), "microsoft".to_string()),
                ("gmail.com".to_string(), "other".to_string()),
            ]
            .into_iter()
            .collect(),
        );
        let mut c = Classifier::new(&config).unwrap();
        assert_eq!(c.classify("a@acme.io"), Provider::Microsoft);
        assert_eq!(c.classify("a@gmail.com"), Provider::Other);
        assert_eq!(c.learn("a@acme.io", "250 - gsmtp"), None);
        assert_eq!(c.classify("a@acme.io"), Provider::Microsoft);

        let bad = ProvidersConfig(
            [("x.io".to_string(), "gogle".to_string())]
                .into_iter()
                .collect(),
        );
        let err = Classifier::new(&bad).unwrap_err().to_string();
        assert!(
            err.contains("providers") && err.contains("gogle") && err.contains("google"),
            "{err}"
        );
    }

    #[test]
    fn restored_knowledge_classifies_like_fresh_learning() {
        let mut c = Classifier::default();
        c.restore([("acme.io".to_string(), Provider::Microsoft)]);
        assert_eq!(c.classify("a@acme.io"), Provider::Microsoft);
        assert_eq!(
            c.learned().collect::<Vec<_>>(),
            vec![("acme.io", Provider::Microsoft)]
        );
    }
}
