//! The `bouncewatch mailjet ...` commands, as library functions that print to a writer and
//! return the process's exit code: `main` only parses arguments and calls them.

use std::io::Write;

use super::client::{Callback, MailjetClient};
use super::setup::{self, Action, Desired, EVENT_TYPES};
use crate::config::Config;

/// `mailjet setup` options.
pub struct SetupOptions {
    pub url: String,
    pub events: Vec<String>,
    pub backup_url: Option<String>,
    pub version: i64,
    pub dry_run: bool,
    /// Post a test event to `url` afterwards and check the receiver stored it.
    pub check: bool,
}

fn client(config: &Config) -> anyhow::Result<MailjetClient> {
    match config.mailjet.client() {
        Some(c) => Ok(c?),
        None => anyhow::bail!(
            "no Mailjet API credentials: set MAILJET_API_KEY and MAILJET_API_SECRET (or mailjet.api_key / mailjet.api_secret)"
        ),
    }
}

/// The URL Mailjet should call, with this config's webhook credentials in it.
fn callback_url(config: &Config, public: &str) -> anyhow::Result<String> {
    let w = &config.webhook;
    setup::url_with_credentials(public, &w.username, &w.password, &w.token)
        .map_err(|e| anyhow::anyhow!("--url: {e}"))
}

/// Registers the callbacks; returns the exit code.
pub async fn setup(
    config: &Config,
    mut opts: SetupOptions,
    out: &mut impl Write,
) -> anyhow::Result<i32> {
    // `--events sent,sent` is one type: a second create would be refused by Mailjet (MJ18).
    let mut seen = std::collections::HashSet::new();
    opts.events.retain(|e| seen.insert(e.to_ascii_lowercase()));
    for e in &opts.events {
        if !EVENT_TYPES.contains(&e.as_str()) {
            anyhow::bail!(
                "--events: {e:?} is not a Mailjet event type; use {}",
                EVENT_TYPES.join(",")
            );
        }
    }
    if !matches!(opts.version, 1 | 2) {
        anyhow::bail!("--version must be 1 (one event per request) or 2 (grouped)");
    }
    // A URL without credentials works only with a receiver that takes anything; otherwise
    // every post would be a 401, and Mailjet suspends a callback that keeps failing.
    if !config.webhook.has_credentials() && !config.webhook.allow_unauthenticated {
        anyhow::bail!(
            "no webhook credentials to put in the callback URL: set BOUNCEWATCH_WEBHOOK_USERNAME and BOUNCEWATCH_WEBHOOK_PASSWORD (or BOUNCEWATCH_WEBHOOK_TOKEN), the same as the receiver's; or set webhook.allow_unauthenticated = true if the receiver really takes posts without them"
        );
    }
    let url = callback_url(config, &opts.url)?;
    let backup = opts
        .backup_url
        .as_deref()
        .map(|b| callback_url(config, b))
        .transpose()?;
    let mut registered: Vec<&str> = opts.events.iter().map(String::as_str).collect();
    let mut watched: Vec<&str> = config.mailjet.events.iter().map(String::as_str).collect();
    registered.sort_unstable();
    watched.sort_unstable();
    if registered != watched {
        writeln!(
            out,
            "note: `status` and the watch in `serve` expect mailjet.events ({}); set it to {} if these are the types you register",
            config.mailjet.events.join(","),
            opts.events.join(",")
        )?;
    }
    let client = client(config)?;
    let existing = client.list().await?;
    // Registered already (by an earlier setup) is as good as registered now.
    let sent_registered = existing
        .iter()
        .any(|c| !c.is_backup && c.event_type.eq_ignore_ascii_case("sent"));
    if !opts.events.iter().any(|e| e == "sent") && !sent_registered {
        writeln!(
            out,
            "warning: `sent` is not registered: bounce, block and spam rates cannot be computed without it"
        )?;
    }
    let plan = setup::plan(
        &existing,
        &Desired {
            events: &opts.events,
            url: &url,
            backup_url: backup.as_deref(),
            version: opts.version,
        },
    );
    let mut changed = 0;
    let mut revived = Vec::new();
    for action in &plan {
        let line = describe(action);
        if opts.dry_run {
            writeln!(out, "would {line}")?;
            continue;
        }
        match action {
            Action::Keep { .. } => {}
            Action::Create {
                event_type,
                is_backup,
                url,
                version,
            } => {
                client
                    .create(&Callback {
                        id: 0,
                        api_key_id: 0,
                        event_type: event_type.clone(),
                        is_backup: *is_backup,
                        status: String::new(),
                        url: url.clone(),
                        version: *version,
                    })
                    .await?;
                changed += 1;
            }
            Action::Update { id, changes, .. } => {
                if changes.get("Status").is_some() {
                    revived.push(*id);
                }
                if !client.update(*id, changes.clone()).await? {
                    writeln!(out, "{line}: Mailjet changed nothing (304)")?;
                    continue;
                }
                changed += 1;
            }
        }
        writeln!(out, "{line}")?;
    }
    // A suspended callback is revived by updating it, by Mailjet's account; check that it
    // was, rather than report success.
    if !revived.is_empty() && !opts.dry_run {
        let still: Vec<String> = client
            .list()
            .await?
            .into_iter()
            .filter(|c| revived.contains(&c.id) && c.status.eq_ignore_ascii_case("dead"))
            .map(|c| c.event_type)
            .collect();
        if !still.is_empty() {
            writeln!(out, "{changed} callback(s) changed")?;
            writeln!(
                out,
                "still dead after the update: {}. Mailjet did not reactivate them; delete them in Mailjet (Account settings, Event notifications) and run setup again, which creates them anew",
                still.join(", ")
            )?;
            return Ok(1);
        }
    }
    if opts.dry_run {
        writeln!(out, "dry run: nothing changed")?;
    } else {
        writeln!(out, "{changed} callback(s) changed")?;
    }
    if opts.check && !opts.dry_run {
        return self_test(&url, out).await;
    }
    Ok(0)
}

fn describe(a: &Action) -> String {
    let which = |event_type: &str, backup: bool| {
        if backup {
            format!("{event_type} (backup)")
        } else {
            event_type.to_string()
        }
    };
    match a {
        Action::Create {
            event_type,
            is_backup,
            url,
            version,
        } => format!(
            "create {} -> {} (Version {version})",
            which(event_type, *is_backup),
            setup::mask_url(url)
        ),
        Action::Update {
            id,
            event_type,
            is_backup,
            changes,
        } => {
            let fields: Vec<String> = changes
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| match v.as_str() {
                            Some(s) if k == "Url" => format!("Url = {}", setup::mask_url(s)),
                            _ => format!("{k} = {v}"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "update {} (ID {id}): {}",
                which(event_type, *is_backup),
                fields.join(", ")
            )
        }
        Action::Keep {
            id,
            event_type,
            is_backup,
        } => format!("keep {} (ID {id})", which(event_type, *is_backup)),
    }
}

/// Posts a test event to the callback URL as Mailjet would, and reads the answer. It is shaped
/// like the placeholders of Mailjet's own "send test" (`MessageID` 0, no address, no campaign), so that the
/// receiver stores it but counts it in no window or rate (`bouncewatch_events_test_total`).
async fn self_test(url: &str, out: &mut impl Write) -> anyhow::Result<i32> {
    let body = format!(
        r#"{{"event":"sent","time":{},"MessageID":0,"email":"","CustomID":"bouncewatch-setup-check"}}"#,
        crate::journal::now_ms() / 1000
    );
    let parsed = url::Url::parse(url)?;
    let mut plain = parsed.clone();
    let _ = plain.set_username("");
    let _ = plain.set_password(None);
    let mut req = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()?
        .post(plain.as_str())
        .header("Content-Type", "application/json")
        .body(body);
    if !parsed.username().is_empty() {
        let password = parsed.password().map(percent_decode);
        req = req.basic_auth(percent_decode(parsed.username()), password);
    }
    let masked = setup::mask_url(url);
    match req.send().await {
        Err(e) => {
            // reqwest's message repeats the URL it was given, token included.
            let e = e.without_url();
            writeln!(out, "check FAILED: {masked} is unreachable: {e}")?;
            Ok(3)
        }
        Ok(r) if r.status().as_u16() == 401 => {
            writeln!(
                out,
                "check FAILED: {masked} refused the credentials (401): webhook.username/password or webhook.token differ from the receiver's"
            )?;
            Ok(4)
        }
        Ok(r) if r.status().as_u16() != 200 => {
            let status = r.status();
            let text: String = r
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            writeln!(
                out,
                "check FAILED: {masked} answered {status}, not 200; Mailjet retries anything else: {text}"
            )?;
            Ok(5)
        }
        Ok(r) => {
            let text = r.text().await.unwrap_or_default();
            let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let stored =
                answer["stored"].as_u64().unwrap_or(0) + answer["duplicates"].as_u64().unwrap_or(0);
            if stored >= 1 {
                writeln!(out, "check passed: {masked} stored a test event")?;
                Ok(0)
            } else {
                writeln!(
                    out,
                    "check FAILED: {masked} answered 200 but did not store the test event ({answer}); is it bouncewatch?"
                )?;
                Ok(5)
            }
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Prints every callback; returns 0 only when all seven types are registered and alive.
pub async fn status(config: &Config, out: &mut impl Write) -> anyhow::Result<i32> {
    let client = client(config)?;
    let rows = client.list().await?;
    writeln!(
        out,
        "{:<8} {:<7} {:<6} {:<7} url",
        "event", "version", "backup", "status"
    )?;
    let mut sorted = rows.clone();
    sorted.sort_by_key(|c| {
        (
            EVENT_TYPES
                .iter()
                .position(|e| c.event_type.eq_ignore_ascii_case(e))
                .unwrap_or(99),
            c.is_backup,
        )
    });
    for c in &sorted {
        writeln!(
            out,
            "{:<8} {:<7} {:<6} {:<7} {}",
            c.event_type,
            c.version,
            if c.is_backup { "yes" } else { "no" },
            c.status,
            setup::mask_url(&c.url)
        )?;
    }
    let expected =
        (!config.mailjet.public_url.is_empty()).then_some(config.mailjet.public_url.as_str());
    let problems = setup::problems(&rows, expected, &config.mailjet.events);
    if problems.any() {
        writeln!(out, "problems: {}", problems.describe())?;
        writeln!(
            out,
            "to repair: bouncewatch mailjet setup --url URL (updating a dead callback's URL reactivates it)"
        )?;
        Ok(1)
    } else {
        writeln!(
            out,
            "all {} event types registered and alive",
            EVENT_TYPES.len()
        )?;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    /// A check that cannot reach the URL says so without the token in the URL's query.
    #[tokio::test]
    async fn an_unreachable_check_does_not_print_the_token() {
        // As `main` does before any TLS client is built.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut out = Vec::new();
        let code = super::self_test(
            "http://u:pw-SECRET@127.0.0.1:1/webhooks/mailjet?token=tok-SECRET",
            &mut out,
        )
        .await
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(code, 3, "{out}");
        assert!(out.contains("unreachable"), "{out}");
        assert!(!out.contains("SECRET"), "{out}");
    }
}
