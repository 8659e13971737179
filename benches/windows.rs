//! Windows update throughput on one core, against the cheapest possible counter in the same run.
//!
//! `cargo bench --bench windows` records 1,000,000 pre-parsed events (10,000 campaigns × 5
//! providers) into fresh `Windows`, best of 5 runs, and prints
//! events/s next to a baseline that only adds each event's counts to one total (the floor: what
//! parsing-free counting costs without keys). Target: at least 2,000,000 events/s.
//!
//! Event times span the last hour in arrival order with up to two minutes of jitter, as
//! webhooks arrive; a second pass uses fully shuffled times (late complaints, retries), the
//! worst case for the bucket search.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bouncewatch::event::{Brief, Event, parse_event};
use bouncewatch::pipeline::Provider;
use bouncewatch::windows::{Counts, Windows, WindowsConfig};

const EVENTS: usize = 1_000_000;
const PROVIDERS: [Provider; 5] = [
    Provider::Google,
    Provider::Microsoft,
    Provider::Yahoo,
    Provider::Orange,
    Provider::Other,
];
const NOW: i64 = 1_800_000_000;

fn best_of<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    // Memory first, while the process holds nothing else, so RSS growth is the windows' own.
    memory(&WindowsConfig::default());
    let providers = PROVIDERS;
    let kinds = [
        "sent", "sent", "sent", "sent", "open", "click", "bounce", "blocked", "spam", "unsub",
    ];
    let make = |shuffled: bool| -> Vec<_> {
        (0..EVENTS)
            .map(|i| {
                let time = if shuffled {
                    NOW - (i as i64 * 7919) % 3600
                } else {
                    NOW - 3600 + (i as i64 * 3600) / EVENTS as i64 - (i as i64 * 7919) % 120
                };
                let e = parse_event(&format!(
                    r#"{{"event":"{}","time":{time},"MessageID":{},"email":"u{}@x.io","mj_campaign_id":{}}}"#,
                    kinds[i % kinds.len()],
                    i + 1,
                    i,
                    1 + (i * 31) % 10_000
                ))
                .expect("bench event parses");
                (e, providers[i % providers.len()])
            })
            .collect()
    };
    let (events, shuffled) = (make(false), make(true));
    let (events, shuffled) = (briefs(&events), briefs(&shuffled));

    let baseline = best_of(5, || {
        let mut total = Counts::default();
        for (e, _) in &events {
            total += Counts::of(black_box(e));
        }
        black_box(total);
    });
    let config = WindowsConfig::default();
    let mut keys = 0;
    let mut run = |events: &[(Brief, Provider)]| {
        best_of(5, || {
            let mut w = Windows::new(&config);
            for (e, p) in events {
                w.record(black_box(e), *p, NOW);
            }
            keys = w.len();
            black_box(&w);
        })
    };
    let windows = run(&events);
    let worst = run(&shuffled);

    let rate = |d: Duration| EVENTS as f64 / d.as_secs_f64();
    println!("windows bench: {EVENTS} events, {keys} keys, best of 5, one thread");
    println!(
        "  baseline (one Counts total) {:>12.0} events/s",
        rate(baseline)
    );
    println!(
        "  Windows::record, in order   {:>12.0} events/s",
        rate(windows)
    );
    println!(
        "  Windows::record, shuffled   {:>12.0} events/s",
        rate(worst)
    );
    println!(
        "  ratio windows / baseline    {:>12.3}",
        rate(windows) / rate(baseline)
    );
    let verdict = if rate(windows) >= 2_000_000.0 {
        "PASS"
    } else {
        "FAIL"
    };
    println!("  target >= 2,000,000 events/s: {verdict}");
}

/// Resident memory of the process, from /proc (Linux).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// 100,000 campaigns x 5 providers, each key active in 4 different hours of the last day, and
/// bouncing in each of them, for one of two reasons: every campaign in trouble at every
/// provider, the worst case for the campaigns' own reason lists. Reports the memory per key
/// against the target: under 1 GiB in total.
fn memory(config: &WindowsConfig) {
    let providers = PROVIDERS;
    let before = rss_bytes();
    let mut w = Windows::new(config);
    let mut event =
        parse_event(r#"{"event":"sent","time":0,"email":"u@x.io","mj_campaign_id":1}"#).unwrap();
    let mut bounces = [
        r#"{"event":"bounce","time":0,"email":"u@x.io","error_related_to":"recipient","error":"user unknown"}"#,
        r#"{"event":"bounce","time":0,"email":"u@x.io","error_related_to":"recipient","error":"mailbox inactive"}"#,
    ]
    .map(|text| parse_event(text).unwrap());
    for campaign in 1..=100_000u64 {
        for (p, provider) in providers.iter().enumerate() {
            for k in 0..4u64 {
                let time =
                    Some(NOW - 60 - ((campaign * 7 + p as u64 * 3 + k * 6) % 24) as i64 * 3600);
                event.campaign_id = campaign;
                event.time = time;
                w.record(&event.brief(), *provider, NOW);
                let bounce = &mut bounces[(k % 2) as usize];
                bounce.campaign_id = campaign;
                bounce.time = time;
                w.record(&bounce.brief(), *provider, NOW);
            }
        }
    }
    w.evict_idle(NOW);
    let after = rss_bytes();
    let keys = w.len();
    let total = after.saturating_sub(before);
    println!(
        "memory bench: 100,000 campaigns x 5 providers, 4 active hours each over 24 h, bouncing in each for one of 2 reasons"
    );
    println!(
        "  keys {keys}, bucket heap {} MiB, process RSS growth {} MiB",
        w.bucket_bytes() >> 20,
        total >> 20
    );
    println!(
        "  bytes per key (RSS growth / keys) {}",
        total / keys.max(1) as u64
    );
    let verdict = if total < 1 << 30 { "PASS" } else { "FAIL" };
    println!("  target: under 1 GiB in total: {verdict}");
    black_box(&w);
}

/// What the pipeline hands the windows: each event's brief, borrowed.
fn briefs(events: &[(Event, Provider)]) -> Vec<(Brief<'_>, Provider)> {
    events.iter().map(|(e, p)| (e.brief(), *p)).collect()
}
