//! What a notification says, in words: shared by the email and Slack channels so both tell the
//! same story. A line per alert gives the key, the rate with its numerator and denominator,
//! the lower bound it was judged on and the baseline; then the top reasons, and a link to the
//! Grafana dashboard with the variables filled in.

use crate::alerts::rules::{RuleKind, WebhookSignal};
use crate::alerts::state::Notice;
use crate::alerts::{AlertLine, Notification};
use crate::windows::{CampaignKey, Key};

/// `FIRING`, `STILL FIRING` or `RESOLVED`, with the severity.
pub fn status(n: &Notification) -> String {
    match n.notice {
        Notice::Firing => format!("FIRING {}", n.severity.as_str()),
        Notice::Repeat => format!("STILL FIRING {}", n.severity.as_str()),
        Notice::Resolved { .. } => "RESOLVED".to_string(),
    }
}

/// One line: `[FIRING critical] hard-bounce-rate: google (and 2 more)`.
pub fn subject(n: &Notification) -> String {
    if n.alerts.is_empty() && n.more == 0 {
        return format!("[{}] {}", status(n), n.rule);
    }
    let first = n
        .alerts
        .first()
        .map(|a| key_text(&a.observation.key))
        .unwrap_or_default();
    let others = n.alerts.len().saturating_sub(1) + n.more;
    let more = if others > 0 {
        format!(" (and {others} more)")
    } else {
        String::new()
    };
    format!("[{}] {}: {first}{more}", status(n), n.rule)
}

/// `global`, `provider google`, `campaign 42 at microsoft`, `webhook`.
pub fn key_text(key: &Option<Key>) -> String {
    match key {
        None => "webhook".into(),
        Some(Key::Global) => "all providers".into(),
        Some(Key::Provider(p)) => format!("provider {}", p.as_str()),
        Some(Key::Campaign(c)) => format!("campaign {}", campaign_text(c)),
        Some(Key::CampaignProvider(c, p)) => {
            format!("campaign {} at {}", campaign_text(c), p.as_str())
        }
    }
}

fn campaign_text(c: &CampaignKey) -> String {
    match c {
        CampaignKey::Name(name) => format!("\"{name}\""),
        other => other.to_string(),
    }
}

fn percent(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

fn duration(secs: i64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs.max(0) as u64)).to_string()
}

/// The evidence of one alert, in one line.
pub fn alert_text(n: &Notification, a: &AlertLine) -> String {
    let o = &a.observation;
    let key = key_text(&o.key);
    let rate_name = n
        .rate
        .map(|r| r.as_str().replace('_', " "))
        .unwrap_or_default();
    match n.kind {
        RuleKind::Threshold | RuleKind::Spike => {
            let Some(rate) = o.rate else {
                return format!("{key}: no traffic in the window");
            };
            let mut s = format!(
                "{key}: {rate_name} rate {} ({} / {}), lower bound {} vs {}",
                percent(rate.value().unwrap_or(0.0)),
                rate.numerator,
                rate.denominator,
                percent(o.lower_bound.unwrap_or(0.0)),
                percent(o.limit),
            );
            if let Some(b) = o.baseline {
                s.push_str(&format!(
                    "; baseline {} ({} / {})",
                    percent(b.value().unwrap_or(0.0)),
                    b.numerator,
                    b.denominator
                ));
            }
            s
        }
        RuleKind::BurnRate => {
            let long = o.baseline.unwrap_or_default();
            let short = o.rate.unwrap_or_default();
            format!(
                "{key}: {rate_name} rate {} ({} / {}) over the long window, {} ({} / {}) over the short one; burn {:.1}x the budget (limit {:.1}x)",
                percent(long.value().unwrap_or(0.0)),
                long.numerator,
                long.denominator,
                percent(short.value().unwrap_or(0.0)),
                short.numerator,
                short.denominator,
                o.value,
                o.limit
            )
        }
        RuleKind::Webhook => {
            let what = match n.signal {
                Some(WebhookSignal::NoEvents) => {
                    format!("no event for {}", duration(o.value as i64))
                }
                Some(WebhookSignal::Unauthorized) => {
                    format!("{} of requests refused with 401", percent(o.value))
                }
                Some(WebhookSignal::Unavailable) => {
                    format!("{} of requests answered 5xx", percent(o.value))
                }
                Some(WebhookSignal::TooLarge) => format!("{} bodies refused with 413", o.value),
                Some(WebhookSignal::Quarantined) => format!("{} bodies quarantined", o.value),
                Some(WebhookSignal::CommitFailures) => {
                    format!("{} journal commits failed", o.value)
                }
                Some(WebhookSignal::DelayP99) => {
                    format!("p99 event delay {}", duration(o.value as i64))
                }
                Some(WebhookSignal::PipelineLag) => {
                    format!("pipeline {} events behind and growing", o.value)
                }
                Some(WebhookSignal::MailjetCallbacks) => format!(
                    "Mailjet callbacks: {}",
                    o.detail.as_deref().unwrap_or("problems")
                ),
                None => format!("{}", o.value),
            };
            format!("{what} (limit {})", o.limit)
        }
    }
}

/// What to do about it, for webhook alerts; rate alerts point at the dashboard.
pub fn advice(n: &Notification) -> Option<&'static str> {
    Some(match n.signal? {
        WebhookSignal::NoEvents => {
            "Check that Mailjet still posts to this URL (Event notifications in Mailjet, or `bouncewatch mailjet status`): a callback that kept failing may be suspended; updating its URL reactivates it."
        }
        WebhookSignal::Unauthorized => {
            "The credentials in Mailjet's callback URL do not match webhook.username/password or webhook.token."
        }
        WebhookSignal::TooLarge => "Raise server.max_body: Mailjet's batches are larger.",
        WebhookSignal::Unavailable => {
            "The journal cannot take events (queue full or disk failing); Mailjet retries for a limited time only."
        }
        WebhookSignal::Quarantined => {
            "Bodies that are not events arrive; see GET /api/v1/quarantine."
        }
        WebhookSignal::CommitFailures => {
            "The journal cannot commit: check the disk of server.data_dir (full, read-only, I/O errors)."
        }
        WebhookSignal::DelayP99 => "Mailjet has been retrying: the endpoint was failing or slow.",
        WebhookSignal::PipelineLag => "The pipeline thread is not keeping up; see the logs.",
        WebhookSignal::MailjetCallbacks => {
            "Mailjet no longer posts these events here. Run `bouncewatch mailjet setup --url <this webhook URL>`: updating a suspended callback's URL reactivates it, and missing ones are registered."
        }
    })
}

/// A link to the Grafana dashboard that shows this alert, with its variables filled in.
pub fn dashboard_link(grafana_url: &str, n: &Notification) -> Option<String> {
    let base = grafana_url.trim_end_matches('/');
    if base.is_empty() {
        return None;
    }
    let first = n.alerts.first().and_then(|a| a.observation.key.as_ref());
    let from = format!("now-{}m", (n.window_minutes * 2).max(60));
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("from", &from).append_pair("to", "now");
    let path = match first {
        None => "d/bouncewatch-receiver-health",
        Some(Key::Campaign(c)) => {
            q.append_pair("var-campaign", &c.to_string());
            "d/bouncewatch-campaign"
        }
        Some(Key::CampaignProvider(c, p)) => {
            q.append_pair("var-campaign", &c.to_string());
            q.append_pair("var-provider", p.as_str());
            "d/bouncewatch-campaign"
        }
        Some(Key::Provider(p)) => {
            q.append_pair("var-provider", p.as_str());
            "d/bouncewatch-overview"
        }
        Some(Key::Global) => "d/bouncewatch-overview",
    };
    Some(format!("{base}/{path}?{}", q.finish()))
}

/// The whole message as plain text (the email body, and Slack's fallback text).
pub fn text(n: &Notification, grafana_url: &str) -> String {
    let mut out = subject(n);
    out.push_str("\n\n");
    if let Notice::Resolved { lasted_secs } = n.notice {
        out.push_str(&format!("Resolved after {}.\n\n", duration(lasted_secs)));
    }
    for a in &n.alerts {
        out.push_str("- ");
        out.push_str(&alert_text(n, a));
        out.push('\n');
    }
    if n.more > 0 {
        out.push_str(&format!("- and {} more\n", n.more));
    }
    if !n.reasons.is_empty() {
        out.push_str("\nTop reasons:\n");
        for r in &n.reasons {
            out.push_str(&format!(
                "- {} {} / {}: {}\n",
                r.event, r.category, r.error, r.count
            ));
        }
    }
    if let Some(advice) = advice(n) {
        out.push('\n');
        out.push_str(advice);
        out.push('\n');
    }
    if let Some(link) = dashboard_link(grafana_url, n) {
        out.push_str(&format!("\nDashboard: {link}\n"));
    }
    out
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The same content as [`text`], as a small HTML document for mail clients.
pub fn html(n: &Notification, grafana_url: &str) -> String {
    let mut out = String::from("<!DOCTYPE html><html><body style=\"font-family:sans-serif\">");
    out.push_str(&format!("<h2>{}</h2>", escape_html(&subject(n))));
    if let Notice::Resolved { lasted_secs } = n.notice {
        out.push_str(&format!(
            "<p>Resolved after {}.</p>",
            escape_html(&duration(lasted_secs))
        ));
    }
    out.push_str("<ul>");
    for a in &n.alerts {
        out.push_str(&format!("<li>{}</li>", escape_html(&alert_text(n, a))));
    }
    if n.more > 0 {
        out.push_str(&format!("<li>and {} more</li>", n.more));
    }
    out.push_str("</ul>");
    if !n.reasons.is_empty() {
        out.push_str("<p><b>Top reasons</b></p><ul>");
        for r in &n.reasons {
            out.push_str(&format!(
                "<li>{} {} / {}: {}</li>",
                escape_html(&r.event),
                escape_html(&r.category),
                escape_html(&r.error),
                r.count
            ));
        }
        out.push_str("</ul>");
    }
    if let Some(advice) = advice(n) {
        out.push_str(&format!("<p>{}</p>", escape_html(advice)));
    }
    if let Some(link) = dashboard_link(grafana_url, n) {
        out.push_str(&format!(
            "<p><a href=\"{}\">Open the dashboard</a></p>",
            escape_html(&link)
        ));
    }
    out.push_str("</body></html>");
    out
}
