//! Alert evaluation cost on one core, against the cheapest pass over the same keys in the same
//! run.
//!
//! `cargo bench --bench alerts` fills `Windows` with an hour of traffic for 20,000 campaigns ×
//! 5 providers (100,000 campaign × provider keys, 20,000 campaign keys), then times one
//! `Engine::evaluate` with the built-in rules plus a hard-bounce threshold per campaign and one
//! per campaign × provider, best of 5. One campaign in a hundred bounces hard, so the first
//! evaluation also fires and groups alerts; a second evaluation on the same engine is the
//! steady state (alerts already firing). The baseline reads every key's counts once
//! (`Windows::counts` over one hour), the floor of any evaluation that looks at every key.
//! Target: an evaluation under 200 ms on one core.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bouncewatch::alerts::defaults;
use bouncewatch::alerts::rules::{GroupBy, RuleConfig, RuleKind};
use bouncewatch::alerts::{AlertsConfig, Engine, HealthSample};
use bouncewatch::config::units::DurationText;
use bouncewatch::event::parse_event;
use bouncewatch::pipeline::Provider;
use bouncewatch::windows::{Counts, RateKind, Scope, Windows, WindowsConfig};

const CAMPAIGNS: u64 = 20_000;
const PROVIDERS: [Provider; 5] = [
    Provider::Google,
    Provider::Microsoft,
    Provider::Yahoo,
    Provider::Orange,
    Provider::Other,
];
const NOW: i64 = 1_800_000_000;

fn best_of(runs: usize, mut setup: impl FnMut() -> Engine, mut f: impl FnMut(Engine)) -> Duration {
    (0..runs)
        .map(|_| {
            let engine = setup();
            let t = Instant::now();
            f(engine);
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// An hour of traffic: each campaign × provider key sends 10 messages in each of 8 different
/// minutes, with one hard bounce (and at Microsoft one block); every hundredth campaign
/// hard-bounces 10 %.
fn windows() -> Windows {
    let mut w = Windows::new(&WindowsConfig::default());
    let mut event = parse_event(r#"{"event":"sent","time":0,"email":"u@x.io","mj_campaign_id":1}"#)
        .expect("bench event parses");
    let kinds = [
        parse_event(r#"{"event":"sent"}"#).expect("sent"),
        parse_event(r#"{"event":"bounce","hard_bounce":true,"error_related_to":"recipient","error":"user unknown"}"#)
            .expect("bounce"),
        parse_event(r#"{"event":"blocked","error_related_to":"spam","error":"sender blocked"}"#)
            .expect("blocked"),
    ];
    for campaign in 1..=CAMPAIGNS {
        let bad = campaign % 100 == 0;
        for (p, provider) in PROVIDERS.iter().enumerate() {
            for k in 0..8u64 {
                let minute = (campaign * 7 + p as u64 * 13 + k * 11) % 60;
                let (sends, hard) = if bad { (9, 1) } else { (10, u64::from(k == 3)) };
                for i in 0..sends + hard + u64::from(k == 5 && p == 1) {
                    let kind = if i < sends {
                        &kinds[0]
                    } else if i < sends + hard {
                        &kinds[1]
                    } else {
                        &kinds[2]
                    };
                    event.kind = kind.kind;
                    event.event_name.clone_from(&kind.event_name);
                    event.hard_bounce = kind.hard_bounce;
                    event.error_related_to.clone_from(&kind.error_related_to);
                    event.campaign_id = campaign;
                    event.time = Some(NOW - 60 * minute as i64 - 30);
                    w.record(&event.brief(), *provider, NOW);
                }
            }
        }
    }
    w.evict_idle(NOW);
    w
}

fn engine() -> Engine {
    let threshold = |name: &str, group_by: Vec<GroupBy>| RuleConfig {
        name: name.into(),
        kind: RuleKind::Threshold,
        rate: Some(RateKind::HardBounce),
        group_by,
        window: Some(DurationText::from_secs(3600)),
        threshold: Some(0.02),
        min_volume: Some(50),
        ..defaults::defaults()
            .into_iter()
            .find(|r| r.name == "hard-bounce-rate")
            .expect("built-in hard-bounce-rate")
    };
    let mut rules = defaults::defaults();
    rules.push(threshold("campaign-hard-bounce", vec![GroupBy::Campaign]));
    rules.push(threshold(
        "campaign-provider-hard-bounce",
        vec![GroupBy::Campaign, GroupBy::Provider],
    ));
    AlertsConfig {
        rules,
        ..AlertsConfig::default()
    }
    .engine()
    .expect("bench rules compile")
}

fn sample() -> HealthSample {
    HealthSample {
        at: NOW,
        last_event_ms: NOW * 1000,
        ..HealthSample::default()
    }
}

fn main() {
    let w = windows();
    let keys = w.len();
    let scopes = [
        Scope::Global,
        Scope::Provider,
        Scope::Campaign,
        Scope::CampaignProvider,
    ];

    let baseline = best_of(5, engine, |_| {
        let mut total = Counts::default();
        for scope in scopes {
            for key in w.keys(scope) {
                total += w.counts(black_box(&key), 60, NOW);
            }
        }
        black_box(total);
    });
    let mut fired = 0;
    let first = best_of(5, engine, |mut e| {
        let out = e.evaluate(NOW, &w, sample());
        fired = out.iter().map(|n| n.alerts.len() + n.more).sum();
        black_box(out);
    });
    let steady = best_of(
        5,
        || {
            let mut e = engine();
            e.evaluate(NOW, &w, sample());
            e
        },
        |mut e| {
            black_box(e.evaluate(NOW + 30, &w, sample()));
        },
    );
    let campaign_keys = w.keys(Scope::Campaign).count();
    let pair_keys = w.keys(Scope::CampaignProvider).count();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "alerts bench: {keys} keys ({campaign_keys} campaign, {pair_keys} campaign x provider), best of 5, one thread"
    );
    println!(
        "  baseline (counts of every key)       {:>9.2} ms",
        ms(baseline)
    );
    println!(
        "  Engine::evaluate, first ({fired} fire)  {:>9.2} ms",
        ms(first)
    );
    println!(
        "  Engine::evaluate, steady state       {:>9.2} ms",
        ms(steady)
    );
    println!(
        "  ratio evaluate (first) / baseline    {:>9.1}",
        ms(first) / ms(baseline)
    );
    let worst = first.max(steady);
    let verdict = if ms(worst) < 200.0 { "PASS" } else { "FAIL" };
    println!("  target: under 200 ms on one core: {verdict}");
}
