//! A scripted sequence with late, future and out-of-order events, checked to the count.

use super::*;
use crate::event::owned_brief;

const NOW: i64 = 1_700_002_800; // a whole hour

fn ev(kind: &str, time: i64, email: &str, campaign: u64) -> Brief<'static> {
    owned_brief(&format!(
        r#"{{"event":"{kind}","time":{time},"email":"{email}","mj_campaign_id":{campaign},"hard_bounce":true,"error_related_to":"recipient"}}"#
    ))
}

fn windows() -> Windows {
    Windows::new(&WindowsConfig::default())
}

#[test]
fn a_scripted_sequence_gives_exact_counts_and_rates() {
    let mut w = windows();
    let google = Provider::Google;
    // 40 sends and 2 hard bounces in the last five minutes, for campaign 7 at Google.
    for i in 0..40 {
        assert_eq!(
            w.record(
                &ev("sent", NOW - 60 * (i % 5), "a@gmail.com", 7),
                google,
                NOW
            ),
            Placement::InWindow
        );
    }
    w.record(&ev("bounce", NOW - 30, "b@gmail.com", 7), google, NOW);
    w.record(&ev("bounce", NOW - 200, "c@gmail.com", 7), google, NOW);
    // An hour-old spam complaint arriving now lands in its own minute, not in the last five.
    w.record(&ev("spam", NOW - 3000, "a@gmail.com", 7), google, NOW);
    // A future event beyond tolerance is clamped to now.
    assert_eq!(
        w.record(&ev("sent", NOW + 3600, "d@gmail.com", 7), google, NOW),
        Placement::Clamped
    );
    // A two-day-old event counts in the totals only.
    assert_eq!(
        w.record(&ev("sent", NOW - 2 * 86_400, "e@gmail.com", 7), google, NOW),
        Placement::Late
    );

    let five = w.counts(&Key::Provider(google), 5, NOW);
    assert_eq!(five.sent, 41);
    assert_eq!(five.bounce, 2);
    assert_eq!(five.spam, 0);
    assert_eq!(five.hard_bounce_rate(), Rate::new(2, 43));
    let hour = w.counts(&Key::Campaign(CampaignKey::Id(7)), 60, NOW);
    assert_eq!(hour.spam, 1);
    assert_eq!(hour.spam_rate(), Rate::new(1, 41));
    assert_eq!(w.counts(&Key::Global, 24 * 60, NOW).sent, 41);
    assert_eq!(w.totals().sent, 42, "the late event is in the totals");
    assert_eq!((w.late(), w.clamped()), (1, 1));
    // A placeholder from Mailjet's "send test": no address and MessageID 0. Counted apart.
    let test = owned_brief(&format!(
        r#"{{"event":"bounce","time":{NOW},"MessageID":0,"email":"","mj_campaign_id":0}}"#
    ));
    assert_eq!(w.record(&test, Provider::Other, NOW), Placement::Test);
    assert_eq!(w.counts(&Key::Global, 5, NOW).bounce, 2);
    assert_eq!(w.totals().bounce, 2);
    assert_eq!(
        w.placements(),
        Placements {
            late: 1,
            clamped: 1,
            tests: 1
        }
    );
    // The four scopes each have their key.
    assert_eq!(
        w.counts(&Key::CampaignProvider(CampaignKey::Id(7), google), 5, NOW),
        five
    );
    assert_eq!(w.keys(Scope::Campaign).count(), 1);
}

#[test]
fn rates_of_a_scope_are_the_sum_of_its_parts() {
    let mut w = windows();
    for _ in 0..100 {
        w.record(&ev("sent", NOW, "a@gmail.com", 1), Provider::Google, NOW);
    }
    w.record(&ev("bounce", NOW, "a@gmail.com", 1), Provider::Google, NOW);
    for _ in 0..10 {
        w.record(&ev("sent", NOW, "a@yahoo.fr", 1), Provider::Yahoo, NOW);
    }
    for _ in 0..9 {
        w.record(&ev("bounce", NOW, "a@yahoo.fr", 1), Provider::Yahoo, NOW);
    }
    let global = w.counts(&Key::Global, 5, NOW).bounce_rate();
    let parts = w
        .counts(&Key::Provider(Provider::Google), 5, NOW)
        .bounce_rate()
        + w.counts(&Key::Provider(Provider::Yahoo), 5, NOW)
            .bounce_rate();
    assert_eq!(global, parts);
    assert_eq!(global, Rate::new(10, 120));
}

#[test]
fn campaigns_without_an_id_go_by_their_name() {
    let e = owned_brief(
        r#"{"event":"sent","mj_campaign_id":0,"customcampaign":"=?utf-8?Q?caf=C3=A9?="}"#,
    );
    assert_eq!(CampaignKey::of(&e), CampaignKey::Name("café".into()));
    let e = owned_brief(r#"{"event":"sent","mj_campaign_id":0,"customcampaign":""}"#);
    assert_eq!(CampaignKey::of(&e), CampaignKey::None);
    let e = owned_brief(r#"{"event":"sent","mj_campaign_id":5591678702,"customcampaign":"x"}"#);
    assert_eq!(CampaignKey::of(&e), CampaignKey::Id(5_591_678_702));
}

#[test]
fn buckets_expire_and_idle_keys_are_evicted() {
    let mut w = windows();
    w.record(&ev("sent", NOW, "a@gmail.com", 1), Provider::Google, NOW);
    w.record(
        &ev("sent", NOW + 3 * 3600, "a@gmail.com", 2),
        Provider::Google,
        NOW + 3 * 3600,
    );
    assert_eq!(
        w.len(),
        6,
        "global, google, two campaigns, two campaign×provider"
    );
    let later = NOW + 3 * 3600 + 60;
    assert_eq!(w.evict_idle(later), 0);
    assert_eq!(w.counts(&Key::Global, 24 * 60, later).sent, 2);
    assert_eq!(w.counts(&Key::Global, 60, later).sent, 1);
    // A day after campaign 1's only event (plus the hour resolution of old buckets), its keys
    // go; campaign 2's stay.
    let next_day = NOW + 86_400 + 3600;
    assert_eq!(w.evict_idle(next_day), 2);
    assert!(
        w.counts(&Key::Campaign(CampaignKey::Id(1)), 24 * 60, next_day)
            .sent
            == 0
    );
    assert_eq!(
        w.counts(&Key::Campaign(CampaignKey::Id(2)), 24 * 60, next_day)
            .sent,
        1
    );
    assert_eq!(w.totals().sent, 2, "eviction never touches the totals");
}

#[test]
fn memory_follows_activity() {
    let mut w = windows();
    for c in 0..1000u64 {
        w.record(
            &ev("sent", NOW, "a@gmail.com", c + 1),
            Provider::Google,
            NOW,
        );
    }
    // 1000 one-event campaigns: one bucket in each of their two keys, not a 24 h ring.
    let per_key = w.bucket_bytes() / w.len();
    assert!(
        per_key <= 4 * std::mem::size_of::<(u32, Counts)>(),
        "{per_key} bytes per key"
    );
}

#[test]
fn windows_must_be_whole_minutes() {
    let mut c = WindowsConfig::default();
    c.validate().unwrap();
    c.windows = vec![DurationText::from_secs(90)];
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("windows.windows")
    );
    c.windows.clear();
    assert!(c.validate().is_err());
}

#[test]
fn a_snapshot_restores_the_same_counts() {
    let mut w = windows();
    w.record(&ev("sent", NOW, "a@gmail.com", 3), Provider::Google, NOW);
    let named = owned_brief(r#"{"event":"bounce","time":1700002790,"customcampaign":"spring"}"#);
    w.record(&named, Provider::Other, NOW);
    w.record(
        &ev("sent", NOW - 2 * 86_400, "a@gmail.com", 3),
        Provider::Google,
        NOW,
    );
    let json = serde_json::to_string(&w.snapshot()).unwrap();
    let back = Windows::restore(
        &WindowsConfig::default(),
        serde_json::from_str(&json).unwrap(),
    );
    for key in [
        Key::Global,
        Key::Provider(Provider::Google),
        Key::Campaign(CampaignKey::Id(3)),
        Key::CampaignProvider(CampaignKey::Name("spring".into()), Provider::Other),
    ] {
        assert_eq!(
            back.counts(&key, 60, NOW),
            w.counts(&key, 60, NOW),
            "{key:?}"
        );
    }
    assert_eq!(
        (back.totals(), back.late(), back.len()),
        (w.totals(), w.late(), w.len())
    );
    // The campaign's own reasons come back too (the bounce has neither category nor error).
    let spring = Key::Campaign(CampaignKey::Name("spring".into()));
    assert_eq!(w.top_reasons(&spring, 60, NOW, 5).len(), 1);
    assert_eq!(
        back.top_reasons(&spring, 60, NOW, 5),
        w.top_reasons(&spring, 60, NOW, 5)
    );
}

/// A campaign's reasons are its own, and they go when the campaign is evicted.
#[test]
fn campaign_reasons_are_per_campaign_and_evicted_with_it() {
    let mut w = windows();
    w.record(&ev("bounce", NOW, "a@gmail.com", 1), Provider::Google, NOW);
    w.record(&ev("sent", NOW, "a@gmail.com", 2), Provider::Google, NOW);
    let one = Key::Campaign(CampaignKey::Id(1));
    let reasons = w.top_reasons(&one, 5, NOW, 5);
    assert_eq!(reasons.len(), 1);
    assert_eq!(
        (reasons[0].category.as_str(), reasons[0].count),
        ("recipient", 1)
    );
    assert!(
        w.top_reasons(&Key::Campaign(CampaignKey::Id(2)), 5, NOW, 5)
            .is_empty()
    );
    assert!(
        w.top_reasons(
            &Key::CampaignProvider(CampaignKey::Id(1), Provider::Yahoo),
            5,
            NOW,
            5
        )
        .is_empty()
    );
    let before = w.bucket_bytes();
    w.evict_idle(NOW + 3 * 86_400);
    assert!(w.is_empty());
    assert!(w.top_reasons(&one, 24 * 60, NOW + 3 * 86_400, 5).is_empty());
    assert!(w.bucket_bytes() < before);
}

/// Campaign id 42 and a campaign named "42" are two campaigns, and so are the name "none" and
/// no campaign: each shows under its own label.
#[test]
fn campaigns_that_look_alike_get_their_own_labels() {
    let shown = |k: CampaignKey| k.to_string();
    assert_eq!(shown(CampaignKey::Id(42)), "42");
    assert_eq!(shown(CampaignKey::Name("42".into())), "name:42");
    assert_eq!(shown(CampaignKey::None), "none");
    assert_eq!(shown(CampaignKey::Name("none".into())), "name:none");
    assert_eq!(shown(CampaignKey::Name("other".into())), "name:other");
    assert_eq!(shown(CampaignKey::Name("name:42".into())), "name:name:42");
    assert_eq!(
        shown(CampaignKey::Name("spring sale".into())),
        "spring sale"
    );
    assert_eq!(shown(CampaignKey::Name("42a".into())), "42a");
}
