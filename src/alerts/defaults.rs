//! The built-in rules, active while `[[alerts.rules]]` is empty. Each names its source; the
//! README lists them in a table with the same sources.

use super::rules::{BurnWindow, GroupBy, RuleConfig, RuleKind, Severity, WebhookSignal};
use crate::config::units::DurationText;
use crate::windows::RateKind;

/// The rules active when none are configured. Each names its source (see the README).
pub fn defaults() -> Vec<RuleConfig> {
    let base = |name: &str, kind: RuleKind| RuleConfig {
        name: name.into(),
        kind,
        rate: None,
        group_by: Vec::new(),
        window: None,
        threshold: None,
        min_volume: None,
        baseline_window: None,
        factor: None,
        floor: None,
        objective: None,
        burn_windows: Vec::new(),
        signal: None,
        severity: Severity::Warning,
        channels: Vec::new(),
        for_: None,
        recovery: None,
        clear_after: None,
    };
    let mins = |m: u64| Some(DurationText::from_secs(m * 60));
    let webhook = |name: &str, signal, window: u64, threshold: f64, severity| RuleConfig {
        signal: Some(signal),
        window: mins(window),
        threshold: Some(threshold),
        severity,
        ..base(name, RuleKind::Webhook)
    };
    vec![
        // Gmail's bulk-sender rules: spam below 0.3 % always, target below 0.1 %. The budget is
        // the 0.1 % target; 3x it is the 0.3 % ceiling (critical, fast pair), 1x it over six
        // hours is a warning (slow pair), in the SRE workbook's multi-window manner.
        RuleConfig {
            rate: Some(RateKind::Spam),
            objective: Some(0.001),
            min_volume: Some(1000),
            severity: Severity::Critical,
            burn_windows: vec![BurnWindow {
                long: DurationText::from_secs(3600),
                short: DurationText::from_secs(300),
                factor: 3.0,
            }],
            ..base("spam-rate-critical", RuleKind::BurnRate)
        },
        RuleConfig {
            rate: Some(RateKind::Spam),
            objective: Some(0.001),
            min_volume: Some(1000),
            burn_windows: vec![BurnWindow {
                long: DurationText::from_secs(6 * 3600),
                short: DurationText::from_secs(30 * 60),
                factor: 1.0,
            }],
            ..base("spam-rate-warning", RuleKind::BurnRate)
        },
        // Industry norm: hard bounces under 2 %. ESPs act only past ~100 recipients.
        RuleConfig {
            rate: Some(RateKind::HardBounce),
            window: mins(60),
            threshold: Some(0.02),
            min_volume: Some(100),
            ..base("hard-bounce-rate", RuleKind::Threshold)
        },
        // A provider starting to block: 15 minutes against its own day, 5x and at least 1 %.
        RuleConfig {
            rate: Some(RateKind::Block),
            group_by: vec![GroupBy::Provider],
            window: mins(15),
            baseline_window: mins(24 * 60),
            factor: Some(5.0),
            floor: Some(0.01),
            min_volume: Some(100),
            ..base("provider-block-spike", RuleKind::Spike)
        },
        // The webhook itself. Mailjet retries for a limited time, then suspends the URL.
        RuleConfig {
            min_volume: Some(100),
            ..webhook(
                "no-events",
                WebhookSignal::NoEvents,
                30,
                0.0,
                Severity::Critical,
            )
        },
        webhook(
            "webhook-unauthorized",
            WebhookSignal::Unauthorized,
            10,
            0.1,
            Severity::Warning,
        ),
        webhook(
            "webhook-body-too-large",
            WebhookSignal::TooLarge,
            15,
            0.0,
            Severity::Warning,
        ),
        webhook(
            "webhook-unavailable",
            WebhookSignal::Unavailable,
            5,
            0.05,
            Severity::Critical,
        ),
        webhook(
            "webhook-quarantined",
            WebhookSignal::Quarantined,
            15,
            0.0,
            Severity::Warning,
        ),
        webhook(
            "journal-commit-failures",
            WebhookSignal::CommitFailures,
            5,
            0.0,
            Severity::Critical,
        ),
        // Mailjet retries every 30 s; a p99 delay of 10 minutes means it has been retrying.
        webhook(
            "event-delay",
            WebhookSignal::DelayP99,
            5,
            600.0,
            Severity::Warning,
        ),
        // Mailjet suspends a callback that kept failing; only its API tells.
        webhook(
            "mailjet-callbacks",
            WebhookSignal::MailjetCallbacks,
            5,
            0.0,
            Severity::Critical,
        ),
        webhook(
            "pipeline-stalled",
            WebhookSignal::PipelineLag,
            5,
            10_000.0,
            Severity::Warning,
        ),
    ]
}
