//! The engine in backtest: scripted windows and health samples at a scripted clock.

use super::*;
use crate::event::parse_event;
use crate::pipeline::Provider;
use crate::windows::{Key, Windows, WindowsConfig};
use rules::{GroupBy, RuleKind};
use state::Notice;

const NOW: i64 = 1_700_002_800;

fn record(w: &mut Windows, kind: &str, n: usize, provider: Provider, at: i64, extra: &str) {
    for _ in 0..n {
        let e = parse_event(&format!(
            r#"{{"event":"{kind}","time":{at},"email":"x@y.z","mj_campaign_id":7{extra}}}"#
        ))
        .unwrap();
        w.record(&e.brief(), provider, at);
    }
}

/// One built-in rule, by name.
fn default_rule(name: &str) -> RuleConfig {
    defaults::defaults()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no built-in rule {name}"))
}

fn hard_bounce_rule() -> RuleConfig {
    RuleConfig {
        name: "hard".into(),
        kind: RuleKind::Threshold,
        rate: Some(crate::windows::RateKind::HardBounce),
        window: Some(DurationText::from_secs(3600)),
        threshold: Some(0.02),
        min_volume: Some(20),
        ..default_rule("hard-bounce-rate")
    }
}

fn engine(rules: Vec<RuleConfig>) -> Engine {
    AlertsConfig {
        rules,
        ..AlertsConfig::default()
    }
    .engine()
    .unwrap()
}

fn sample(at: i64) -> HealthSample {
    HealthSample {
        at,
        ..Default::default()
    }
}

#[test]
fn two_in_forty_stays_quiet_and_ten_in_two_hundred_fires() {
    let mut w = Windows::new(&WindowsConfig::default());
    record(&mut w, "sent", 38, Provider::Google, NOW, "");
    record(
        &mut w,
        "bounce",
        2,
        Provider::Google,
        NOW,
        r#","hard_bounce":true"#,
    );
    let mut e = engine(vec![hard_bounce_rule()]);
    assert!(
        e.evaluate(NOW, &w, sample(NOW)).is_empty(),
        "2/40: 5 %, lower bound 1.4 %"
    );

    let mut w = Windows::new(&WindowsConfig::default());
    record(&mut w, "sent", 190, Provider::Google, NOW, "");
    record(
        &mut w,
        "bounce",
        10,
        Provider::Google,
        NOW,
        r#","hard_bounce":true"#,
    );
    let out = e.evaluate(NOW, &w, sample(NOW));
    assert_eq!(out.len(), 1, "{out:?}");
    let n = &out[0];
    assert_eq!((n.rule.as_str(), n.notice), ("hard", Notice::Firing));
    let line = &n.alerts[0].observation;
    assert_eq!(line.rate.unwrap().numerator, 10);
    assert_eq!(line.rate.unwrap().denominator, 200);
    assert!(
        (0.027..0.028).contains(&line.lower_bound.unwrap()),
        "{line:?}"
    );
}

#[test]
fn resolves_after_clean_evaluations_and_says_how_long_it_lasted() {
    let mut bad = Windows::new(&WindowsConfig::default());
    record(&mut bad, "sent", 190, Provider::Google, NOW, "");
    record(
        &mut bad,
        "bounce",
        10,
        Provider::Google,
        NOW,
        r#","hard_bounce":true"#,
    );
    let good = Windows::new(&WindowsConfig::default());
    let mut e = engine(vec![hard_bounce_rule()]);
    assert_eq!(e.evaluate(NOW, &bad, sample(NOW)).len(), 1);
    // Still firing: no new message.
    assert!(e.evaluate(NOW + 30, &bad, sample(NOW + 30)).is_empty());
    // Three clean evaluations (the default clear_after) resolve it, once.
    assert!(e.evaluate(NOW + 60, &good, sample(NOW + 60)).is_empty());
    assert!(e.evaluate(NOW + 90, &good, sample(NOW + 90)).is_empty());
    let out = e.evaluate(NOW + 120, &good, sample(NOW + 120));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].notice, Notice::Resolved { lasted_secs: 120 });
    assert!(e.evaluate(NOW + 150, &good, sample(NOW + 150)).is_empty());
    assert!(e.alerts().is_empty());
}

#[test]
fn a_restart_neither_resends_nor_forgets_a_firing_alert() {
    let mut bad = Windows::new(&WindowsConfig::default());
    record(&mut bad, "sent", 190, Provider::Google, NOW, "");
    record(
        &mut bad,
        "bounce",
        10,
        Provider::Google,
        NOW,
        r#","hard_bounce":true"#,
    );
    let mut first = engine(vec![hard_bounce_rule()]);
    assert_eq!(first.evaluate(NOW, &bad, sample(NOW)).len(), 1);
    let stored = first.alerts();
    let json = serde_json::to_string(&stored).unwrap();

    let mut second = engine(vec![hard_bounce_rule()]);
    second.restore(serde_json::from_str(&json).unwrap());
    assert!(second.evaluate(NOW + 30, &bad, sample(NOW + 30)).is_empty());
    let good = Windows::new(&WindowsConfig::default());
    let mut resolved = Vec::new();
    for i in 2..5 {
        resolved.extend(second.evaluate(NOW + 30 * i, &good, sample(NOW + 30 * i)));
    }
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].notice, Notice::Resolved { lasted_secs: 120 });
}

#[test]
fn a_provider_spike_fires_while_the_global_rate_looks_flat() {
    let mut w = Windows::new(&WindowsConfig::default());
    let hour = 3600;
    // A day of 0.2 % blocks everywhere: Gmail 10,000 attempts per hour, Yahoo 1,000.
    for h in 1..24 {
        let at = NOW - h * hour;
        record(&mut w, "sent", 9980, Provider::Google, at, "");
        record(
            &mut w,
            "blocked",
            20,
            Provider::Google,
            at,
            r#","error_related_to":"spam""#,
        );
        record(&mut w, "sent", 998, Provider::Yahoo, at, "");
        record(
            &mut w,
            "blocked",
            2,
            Provider::Yahoo,
            at,
            r#","error_related_to":"spam""#,
        );
    }
    // The last 15 minutes: Yahoo blocks 3 %, Gmail as usual.
    record(&mut w, "sent", 2495, Provider::Google, NOW, "");
    record(
        &mut w,
        "blocked",
        5,
        Provider::Google,
        NOW,
        r#","error_related_to":"spam""#,
    );
    record(&mut w, "sent", 242, Provider::Yahoo, NOW, "");
    record(
        &mut w,
        "blocked",
        8,
        Provider::Yahoo,
        NOW,
        r#","error_related_to":"spam""#,
    );

    let spike = default_rule("provider-block-spike");
    assert_eq!(spike.group_by, vec![GroupBy::Provider]);
    let global_spike = RuleConfig {
        name: "global-block-spike".into(),
        group_by: Vec::new(),
        ..spike.clone()
    };
    let mut e = engine(vec![spike, global_spike]);
    let out = e.evaluate(NOW, &w, sample(NOW));
    assert_eq!(out.len(), 1, "only the provider rule fires: {out:?}");
    assert_eq!(out[0].alerts.len(), 1);
    let obs = &out[0].alerts[0].observation;
    assert_eq!(obs.key, Some(Key::Provider(Provider::Yahoo)));
    let base = obs.baseline.unwrap();
    assert!(base.value().unwrap() < 0.005, "{base:?}");
    assert_eq!(out[0].reasons[0].category, "spam");
}

#[test]
fn alerts_of_one_rule_in_one_evaluation_are_one_message_with_a_capped_list() {
    let mut w = Windows::new(&WindowsConfig::default());
    for p in Provider::ALL {
        record(&mut w, "sent", 150, p, NOW, "");
        record(&mut w, "bounce", 50, p, NOW, r#","hard_bounce":true"#);
    }
    let per_provider = RuleConfig {
        group_by: vec![GroupBy::Provider],
        ..hard_bounce_rule()
    };
    let mut e = AlertsConfig {
        rules: vec![per_provider],
        max_keys_per_message: 4,
        ..AlertsConfig::default()
    }
    .engine()
    .unwrap();
    let out = e.evaluate(NOW, &w, sample(NOW));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].alerts.len(), 4);
    assert_eq!(out[0].more, Provider::ALL.len() - 4);
}

#[test]
fn burn_rate_needs_both_windows_of_a_pair() {
    let mut w = Windows::new(&WindowsConfig::default());
    // 0.5 % complaints over the last hour, but none in the last 5 minutes: the fast pair
    // (1 h and 5 m at 3x the 0.1 % budget) does not fire, the fire is out.
    for m in 10..60 {
        record(&mut w, "sent", 100, Provider::Microsoft, NOW - m * 60, "");
    }
    record(&mut w, "spam", 25, Provider::Microsoft, NOW - 1800, "");
    record(&mut w, "sent", 500, Provider::Microsoft, NOW - 60, "");
    let mut e = engine(vec![default_rule("spam-rate-critical")]);
    assert!(e.evaluate(NOW, &w, sample(NOW)).is_empty());
    // Complaints still coming in the last 5 minutes: it fires.
    record(&mut w, "spam", 5, Provider::Microsoft, NOW - 60, "");
    let out = e.evaluate(NOW + 1, &w, sample(NOW + 1));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].severity, Severity::Critical);
}

#[test]
fn no_events_fires_only_when_events_were_expected() {
    let mut e = engine(vec![default_rule("no-events")]);
    let w = Windows::new(&WindowsConfig::default());
    let quiet = |at: i64, events_24h: u64| HealthSample {
        at,
        last_event_ms: (NOW - 3600) * 1000,
        events_24h,
        ..Default::default()
    };
    assert!(
        e.evaluate(NOW, &w, quiet(NOW, 50)).is_empty(),
        "a small sender"
    );
    let out = e.evaluate(NOW + 30, &w, quiet(NOW + 30, 5000));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].alerts[0].observation.value, 3630.0);
}

/// A long outage stays firing: a day of silence empties the 24 hours that said events were
/// expected, and that must not read as recovery. It resolves when events arrive again.
#[test]
fn no_events_stays_firing_through_a_long_outage() {
    let mut e = engine(vec![default_rule("no-events")]);
    let w = Windows::new(&WindowsConfig::default());
    let last = NOW - 3600;
    let s = |at: i64, last_event: i64, events_24h: u64| HealthSample {
        at,
        last_event_ms: last_event * 1000,
        events_24h,
        ..Default::default()
    };
    let out = e.evaluate(NOW, &w, s(NOW, last, 5000));
    assert_eq!(out[0].notice, Notice::Firing);
    // 26 hours on, nothing in the last 24 hours: still silent, so still firing.
    for hour in 1..=26 {
        let at = NOW + hour * 3600;
        let out = e.evaluate(at, &w, s(at, last, 0));
        assert!(
            out.iter()
                .all(|n| !matches!(n.notice, Notice::Resolved { .. })),
            "resolved after {hour} h of silence"
        );
    }
    let back = NOW + 27 * 3600;
    let mut resolved = false;
    for step in 0..10 {
        let at = back + step * 60;
        let out = e.evaluate(at, &w, s(at, at, 10));
        resolved |= out
            .iter()
            .any(|n| matches!(n.notice, Notice::Resolved { .. }));
    }
    assert!(resolved, "events came back");
}

#[test]
fn unauthorized_share_uses_counter_increases() {
    let mut e = engine(vec![default_rule("webhook-unauthorized")]);
    let w = Windows::new(&WindowsConfig::default());
    let s = |at: i64, requests: u64, unauthorized: u64| HealthSample {
        at,
        requests,
        unauthorized,
        ..Default::default()
    };
    // An old burst of 401s, before the 10-minute window, does not count.
    assert!(
        e.evaluate(NOW, &w, s(NOW, 1000, 900)).is_empty(),
        "one sample: no increase"
    );
    assert!(
        e.evaluate(NOW + 600, &w, s(NOW + 600, 2000, 901))
            .is_empty(),
        "1 of 1000 since"
    );
    let out = e.evaluate(NOW + 1200, &w, s(NOW + 1200, 2100, 951));
    assert_eq!(out.len(), 1, "50 of 100 in the last 10 minutes");
}

#[test]
fn the_built_in_rules_compile_and_invalid_ones_are_refused() {
    assert!(AlertsConfig::default().validate().is_ok());
    let bad = AlertsConfig {
        rules: vec![RuleConfig {
            threshold: None,
            ..hard_bounce_rule()
        }],
        ..AlertsConfig::default()
    };
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("threshold"), "{err}");
    let twice = AlertsConfig {
        rules: vec![hard_bounce_rule(), hard_bounce_rule()],
        ..AlertsConfig::default()
    };
    assert!(twice.validate().unwrap_err().to_string().contains("unique"));
}

/// While firing, a change in what is wrong (another callback died) is told at once, not at
/// the next repeat hours later; the same detail again sends nothing.
#[test]
fn a_firing_alert_whose_detail_changes_says_so_at_once() {
    let mut e = engine(vec![default_rule("mailjet-callbacks")]);
    let w = Windows::new(&WindowsConfig::default());
    let s = |at: i64, n: u32, what: &str| HealthSample {
        at,
        callbacks: Some((n, what.to_string())),
        ..Default::default()
    };
    let mut at = NOW;
    let fired = loop {
        let out = e.evaluate(at, &w, s(at, 1, "dead: click"));
        if !out.is_empty() {
            break out;
        }
        at += 30;
        assert!(at < NOW + 3600, "never fired");
    };
    assert_eq!(fired[0].notice, Notice::Firing);
    at += 30;
    assert!(e.evaluate(at, &w, s(at, 1, "dead: click")).is_empty());

    at += 30;
    let changed = e.evaluate(at, &w, s(at, 2, "dead: click; not registered: sent"));
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].notice, Notice::Repeat);
    assert_eq!(
        changed[0].alerts[0].observation.detail.as_deref(),
        Some("dead: click; not registered: sent")
    );
    at += 30;
    assert!(
        e.evaluate(at, &w, s(at, 2, "dead: click; not registered: sent"))
            .is_empty()
    );
}

/// More alerts per message than Slack's 50 blocks can hold is refused, naming the key.
#[test]
fn max_keys_per_message_fits_a_slack_message() {
    let with = |n: usize| AlertsConfig {
        max_keys_per_message: n,
        ..AlertsConfig::default()
    };
    assert!(with(40).validate().is_ok());
    for n in [0, 45] {
        let e = with(n).validate().unwrap_err().to_string();
        assert!(e.contains("alerts.max_keys_per_message"), "{e}");
    }
}

/// A silenced alert is not lost: when the silence ends while it still fires, it is announced;
/// one that fired and cleared entirely under a silence sends nothing at all, not a resolution
/// of something nobody was told about.
#[test]
fn a_silence_that_ends_while_firing_announces_the_alert() {
    let mut e = engine(vec![default_rule("no-events")]);
    let w = Windows::new(&WindowsConfig::default());
    let silent = |at: i64| HealthSample {
        at,
        last_event_ms: (NOW - 3600) * 1000,
        events_24h: 5000,
        ..Default::default()
    };
    let all: &dyn Fn(&str, Option<&Key>) -> bool = &|_, _| true;
    let none: &dyn Fn(&str, Option<&Key>) -> bool = &|_, _| false;
    let (out, held) = e.evaluate_silenced(NOW, &w, silent(NOW), all);
    assert!(out.is_empty());
    assert_eq!(held.len(), 1, "the firing notice was held back");
    let (out, _) = e.evaluate_silenced(NOW + 30, &w, silent(NOW + 30), all);
    assert!(out.is_empty());

    // The silence ends; events are still missing: announced now.
    let (out, held) = e.evaluate_silenced(NOW + 60, &w, silent(NOW + 60), none);
    assert!(held.is_empty());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].notice, Notice::Firing);
    let (out, _) = e.evaluate_silenced(NOW + 90, &w, silent(NOW + 90), none);
    assert!(out.is_empty(), "announced once");

    // Another incident that fires and clears under a silence: nothing, resolution included.
    let back = |at: i64| HealthSample {
        at,
        last_event_ms: at * 1000,
        events_24h: 5000,
        ..Default::default()
    };
    let mut e = engine(vec![default_rule("no-events")]);
    e.evaluate_silenced(NOW, &w, silent(NOW), all);
    let mut resolved_at = None;
    for step in 1..10 {
        let at = NOW + step * 60;
        let (out, _) = e.evaluate_silenced(at, &w, back(at), all);
        assert!(out.is_empty(), "step {step}: {out:?}");
        let firing: u64 = e.firing_counts().iter().map(|&(_, _, n)| n).sum();
        if firing == 0 && resolved_at.is_none() {
            resolved_at = Some(step);
        }
    }
    let resolved_at = resolved_at.expect("it resolved under the silence");

    // The same incident, with the silence ending at the very evaluation that resolves it:
    // there is no chance to announce it first, and the resolution of what nobody was told
    // about is not sent either.
    let mut e = engine(vec![default_rule("no-events")]);
    e.evaluate_silenced(NOW, &w, silent(NOW), all);
    for step in 1..10 {
        let at = NOW + step * 60;
        let silence = if step < resolved_at { all } else { none };
        let (out, held) = e.evaluate_silenced(at, &w, back(at), silence);
        assert!(out.is_empty(), "step {step}: {out:?}");
        assert!(
            step < resolved_at || held.is_empty(),
            "step {step}: not silenced, not sent"
        );
    }
}

/// A campaign's alert names that campaign's reasons, not the mix of every campaign's.
#[test]
fn a_campaign_alert_carries_the_campaigns_own_reasons() {
    let mut w = Windows::new(&WindowsConfig::default());
    // Campaign 7: 10 of 200 hard bounces, mailboxes unknown.
    record(&mut w, "sent", 190, Provider::Google, NOW, "");
    record(
        &mut w,
        "bounce",
        10,
        Provider::Google,
        NOW,
        r#","hard_bounce":true,"error_related_to":"recipient","error":"user unknown""#,
    );
    // Campaign 8, much larger and healthy by rate, bounces for another reason.
    for i in 0..5_000 {
        let (kind, extra) = if i % 100 == 0 {
            (
                "bounce",
                r#","error_related_to":"domain","error":"no mail host""#,
            )
        } else {
            ("sent", "")
        };
        let e = parse_event(&format!(
            r#"{{"event":"{kind}","time":{NOW},"email":"x@y.z","mj_campaign_id":8{extra}}}"#
        ))
        .unwrap();
        w.record(&e.brief(), Provider::Google, NOW);
    }
    let rule = RuleConfig {
        group_by: vec![GroupBy::Campaign],
        ..hard_bounce_rule()
    };
    let mut e = engine(vec![rule]);
    let out = e.evaluate(NOW, &w, sample(NOW));
    assert_eq!(out.len(), 1, "{out:?}");
    let key = &out[0].alerts[0].observation.key;
    assert_eq!(
        key,
        &Some(Key::Campaign(crate::windows::CampaignKey::Id(7)))
    );
    let reasons: Vec<_> = out[0]
        .reasons
        .iter()
        .map(|r| (r.error.as_str(), r.count))
        .collect();
    assert_eq!(reasons, vec![("user unknown", 10)]);
}
