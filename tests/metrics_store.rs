//! Metrics against a real store: bouncewatch pushes OTLP to VictoriaMetrics (from Debian
//! trixie, with Prometheus naming), VictoriaMetrics also scrapes `/metrics`, and PromQL answers
//! must show the expected series and values on both paths, under the same names.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bouncewatch::metrics::names::{self, Kind};
use common::vm::{SCRAPE_JOB, VictoriaMetrics, free_port};
use common::{Options, Server, client};

const TOKEN: &str = "metrics-token";
const WAIT: Duration = Duration::from_secs(30);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Per campaign (101, 102, 103) and provider (Gmail, Outlook, Yahoo): 40 sends, 2 opens, a
/// click, a hard and a soft bounce, 2 blocks, a complaint and an unsubscribe, all stamped now.
fn traffic() -> String {
    let mut events = Vec::new();
    let mut id = 5_000_000_000_000_000_000u64;
    let t = now();
    for campaign in [101, 102, 103] {
        for domain in ["gmail.com", "outlook.com", "yahoo.com"] {
            let mut add = |kind: &str, n: usize, extra: &str| {
                for _ in 0..n {
                    id += 1;
                    events.push(format!(
                        r#"{{"event":"{kind}","time":{t},"MessageID":{id},"email":"u{id}@{domain}","mj_campaign_id":{campaign}{extra}}}"#
                    ));
                }
            };
            add("sent", 40, "");
            add("open", 2, "");
            add("click", 1, r#","url":"https://example.com/""#);
            add(
                "bounce",
                1,
                r#","hard_bounce":true,"error_related_to":"recipient","error":"user unknown""#,
            );
            add(
                "bounce",
                1,
                r#","hard_bounce":false,"error_related_to":"domain","error":"mailbox inactive""#,
            );
            add(
                "blocked",
                2,
                r#","error_related_to":"spam","error":"sender blocked""#,
            );
            add("spam", 1, r#","source":"JMRPP""#);
            add("unsub", 1, "");
        }
    }
    format!("[{}]", events.join(","))
}

/// Options for a server that pushes OTLP to the store on `vm_port` every second, and exports
/// a new campaign series as 0 for `new_series_delay`.
fn pushing_to(vm_port: u16, new_series_delay: &str) -> Options {
    Options::default()
        .env(
            "BOUNCEWATCH_METRICS_OTLP_ENDPOINT",
            &format!("http://127.0.0.1:{vm_port}/opentelemetry/v1/metrics"),
        )
        .env("BOUNCEWATCH_METRICS_OTLP_INTERVAL", "1s")
        .env("BOUNCEWATCH_METRICS_NEW_SERIES_DELAY", new_series_delay)
}

/// A server pushing to a fresh store every second, with two campaign labels, that received
/// the traffic twice (the second time as Mailjet retries), a 401, a 413 and a non-event.
async fn store_with_traffic() -> (VictoriaMetrics, Server) {
    let vm_port = free_port();
    let server = Server::start_with(
        pushing_to(vm_port, "2s")
            .env("BOUNCEWATCH_METRICS_TOP_CAMPAIGNS", "2")
            .env("BOUNCEWATCH_WEBHOOK_TOKEN", TOKEN)
            .env("BOUNCEWATCH_SERVER_MAX_BODY", "1MiB"),
    );
    let vm = VictoriaMetrics::start(vm_port, Some(&server.addr.to_string()));
    let url = server.url(&format!("/webhooks/mailjet?token={TOKEN}"));
    let body = traffic();
    for _ in 0..2 {
        let r = client().post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let wrong = client()
        .post(server.url("/webhooks/mailjet?token=wrong"))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let big = client()
        .post(&url)
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let junk = client().post(&url).body("not json").send().await.unwrap();
    assert_eq!(junk.status(), 200);
    (vm, server)
}

/// Every name a signal shows up under in PromQL; the Mailjet watch's gauges only exist while
/// `serve` has Mailjet API credentials, which these tests do not give it.
fn expected_names() -> BTreeSet<String> {
    names::ALL
        .iter()
        .filter(|s| {
            s.name != names::MAILJET_CALLBACK_ALIVE.name && s.name != names::MAILJET_CHECKED.name
        })
        .flat_map(|s| match s.kind {
            Kind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{}{suffix}", s.name))
                .collect(),
            _ => vec![s.name.to_string()],
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_push_and_scrape_give_the_same_names_and_values() {
    let (vm, server) = store_with_traffic().await;
    let pushed = r#"service_name="bouncewatch",service_instance_id!="""#;
    let scraped = format!(r#"job="{SCRAPE_JOB}""#);

    // Exact counts through OTLP: campaigns 101 and 102 have labels, 103 rolls up into other,
    // and the retried batch is counted once.
    for (campaign, provider, want) in [
        ("101", "google", 40.0),
        ("102", "microsoft", 40.0),
        ("other", "yahoo", 40.0),
    ] {
        let q = format!(
            r#"sum(bouncewatch_events_total{{{pushed},event="sent",campaign="{campaign}",provider="{provider}"}})"#
        );
        vm.wait_value(&q, want, WAIT).await;
    }
    let campaigns = vm
        .query(&format!(
            r#"count by (campaign) (bouncewatch_events_total{{{pushed}}})"#
        ))
        .await;
    let labels: BTreeSet<&str> = campaigns
        .iter()
        .filter_map(|s| s["metric"]["campaign"].as_str())
        .collect();
    assert_eq!(labels, BTreeSet::from(["101", "102", "other"]));
    vm.wait_value(
        &format!(r#"sum(bouncewatch_receiver_duplicates_total{{{pushed}}})"#),
        441.0,
        WAIT,
    )
    .await;

    // The window gauges carry the same numbers as the stats API: 3 hard bounces over 126
    // Gmail deliveries tried (120 sends and 6 bounces, as EVENTS.md defines the rate).
    let stats = common_stats(&server).await;
    for (series, want) in [
        ("bouncewatch_window_rate_numerator", 3.0),
        ("bouncewatch_window_rate_denominator", 126.0),
        ("bouncewatch_window_rate", stats),
    ] {
        vm.wait_value(
            &format!(
                r#"sum({series}{{{pushed},rate="hard_bounce",window="1h",provider="google"}})"#
            ),
            want,
            WAIT,
        )
        .await;
    }
    vm.wait_value(
        &format!(
            r#"sum(bouncewatch_window_reason_events{{{pushed},window="5m",event="bounce",error="user unknown"}})"#
        ),
        // Global (9) plus one series per provider (3 each).
        18.0,
        WAIT,
    )
    .await;
    vm.wait_value(
        &format!(r#"sum(bouncewatch_receiver_requests_total{{{pushed},status="401"}})"#),
        1.0,
        WAIT,
    )
    .await;

    // The scrape path: the same values...
    vm.wait_value(
        &format!(
            r#"sum(bouncewatch_events_total{{{scraped},event="sent",campaign="101",provider="google"}})"#
        ),
        40.0,
        WAIT,
    )
    .await;
    vm.wait_value(
        &format!(r#"sum(bouncewatch_receiver_body_too_large_total{{{scraped}}})"#),
        1.0,
        WAIT,
    )
    .await;

    // ...and the same names, every one that names.rs defines, on both paths.
    let want = expected_names();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let by_push = vm
            .names(&format!(r#"{{__name__=~"bouncewatch_.+",{pushed}}}"#))
            .await;
        let by_scrape = vm
            .names(&format!(r#"{{__name__=~"bouncewatch_.+",{scraped}}}"#))
            .await;
        if by_push == want && by_scrape == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "names differ\nwant: {want:?}\npush: {by_push:?}\nscrape: {by_scrape:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The Gmail hard bounce rate that `/api/v1/stats` reports.
async fn common_stats(server: &Server) -> f64 {
    let page = server
        .get_json("/api/v1/stats?scope=provider&provider=google&window=1h")
        .await;
    page["keys"][0]["rates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rate"] == "hard_bounce")
        .and_then(|r| r["value"].as_f64())
        .unwrap_or_else(|| panic!("no hard_bounce rate in {page}"))
}

/// A new campaign's first events are in `increase()`, through the push and the scrape. A store
/// never counts a series' first sample (VictoriaMetrics does when it is small next to what
/// follows; 150 sent at once, and nothing after, is not), so the series must reach it at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increase_counts_a_new_campaigns_first_events() {
    let vm_port = free_port();
    let server = Server::start_with(pushing_to(vm_port, "4s"));
    let vm = VictoriaMetrics::start(vm_port, Some(&server.addr.to_string()));
    let t = now();
    let events: Vec<String> = (0..150u64)
        .map(|i| {
            format!(
                r#"{{"event":"sent","time":{t},"MessageID":{},"email":"n{i}@gmail.com","mj_campaign_id":777}}"#,
                7_000_000_000 + i
            )
        })
        .collect();
    let body = format!("[{}]", events.join(","));
    assert_eq!(server.post("/webhooks/mailjet", body).await.0, 200);
    let pushed = r#"service_name="bouncewatch",service_instance_id!="""#;
    let scraped = format!(r#"job="{SCRAPE_JOB}""#);
    for selector in [pushed.to_string(), scraped] {
        let series = format!(r#"bouncewatch_events_total{{{selector},campaign="777"}}"#);
        vm.wait_value(&format!("sum({series})"), 150.0, WAIT).await;
        // A few more samples at 150, so that the store has seen the series settle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        vm.wait_value(&format!("sum(increase({series}[10m]))"), 150.0, WAIT)
            .await;
    }
}

/// Only the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, `/v1/metrics` is
/// appended), `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_RESOURCE_ATTRIBUTES`; plus bouncewatch's own
/// headers and attributes. The store demands Basic auth, so the push only lands if the
/// configured header is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_otel_variables_and_configured_headers_reach_the_store() {
    use base64::Engine as _;
    let port = free_port();
    let vm = VictoriaMetrics::start_with(port, None, Some(("otlp", "push-secret")));
    let basic = base64::engine::general_purpose::STANDARD.encode("otlp:push-secret");
    let server = Server::start_with(
        Options::default()
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                &format!("http://127.0.0.1:{port}/opentelemetry"),
            )
            .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
            .env("BOUNCEWATCH_METRICS_NEW_SERIES_DELAY", "1s")
            .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci")
            .env(
                "BOUNCEWATCH_METRICS_OTLP_HEADERS",
                &format!("Authorization=Basic {basic}"),
            )
            .env("BOUNCEWATCH_METRICS_RESOURCE_ATTRIBUTES", "team=email")
            .env("BOUNCEWATCH_METRICS_INSTANCE_ID", "replica-a"),
    );
    assert_eq!(server.post("/webhooks/mailjet", traffic()).await.0, 200);
    vm.wait_value(
        r#"sum(bouncewatch_events_total{event="sent",deployment_environment="ci",team="email",service_instance_id="replica-a"})"#,
        360.0,
        WAIT,
    )
    .await;
    let logs = server.logs().join("\n");
    assert!(
        !logs.contains("push-secret") && !logs.contains(&basic),
        "{logs}"
    );
}

/// Every target of every panel, with its dashboard and panel title.
fn dashboard_queries() -> Vec<(String, String, String)> {
    fn walk(file: &str, panels: &[serde_json::Value], out: &mut Vec<(String, String, String)>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: panel {title} must use the datasource variable"
            );
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: {title}: a target without expr"));
                out.push((file.to_string(), title.clone(), expr.to_string()));
            }
            if let Some(inner) = panel["panels"].as_array() {
                walk(file, inner, out);
            }
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dashboards/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        3,
        "overview, campaign drill-down, receiver health"
    );
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let dashboard: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
        let variables: Vec<&str> = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert!(variables.contains(&"datasource"), "{file}: {variables:?}");
        walk(&file, dashboard["panels"].as_array().unwrap(), &mut out);
    }
    out
}

/// The names a query uses must be exported ones, so renaming a metric breaks this test.
fn assert_known_names(expr: &str) {
    let known = expected_names();
    let mut rest = expr;
    while let Some(i) = rest.find("bouncewatch_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(known.contains(&name), "{name} in {expr} is not exported");
        rest = &rest[i + name.len()..];
    }
}

/// After a traffic run, every panel query of every dashboard returns data from the store,
/// the way Grafana would ask (placeholders substituted as Grafana does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_shows_data_after_traffic() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 30, "{} queries", queries.len());
    for (_, _, expr) in &queries {
        assert_known_names(expr);
    }
    let (vm, _server) = store_with_traffic().await;
    let promql = |expr: &str| {
        expr.replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$provider", ".*")
            .replace("$campaign", "101")
    };
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut empty = Vec::new();
        for (file, title, expr) in &queries {
            if vm.query(&promql(expr)).await.is_empty() {
                empty.push(format!("{file}: {title}: {expr}"));
            }
        }
        if empty.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "panels without data:\n{}",
            empty.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The overview's top-campaign tables rank rates, and 2 bounces in 4 tries is not one: a
/// campaign under 100 deliveries tried in the range is left out, however high its ratio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_campaign_tables_leave_out_campaigns_under_100_deliveries() {
    let vm_port = free_port();
    let server = Server::start_with(pushing_to(vm_port, "2s"));
    let vm = VictoriaMetrics::start(vm_port, None);
    let t = now();
    let mut events = Vec::new();
    let mut id = 8_000_000u64;
    for (campaign, sent, bounced) in [(201, 200, 10), (202, 2, 2)] {
        for kind in std::iter::repeat_n("sent", sent).chain(std::iter::repeat_n("bounce", bounced))
        {
            id += 1;
            events.push(format!(
                r#"{{"event":"{kind}","time":{t},"MessageID":{id},"email":"b{id}@gmail.com","mj_campaign_id":{campaign},"hard_bounce":true,"error_related_to":"recipient","error":"user unknown"}}"#
            ));
        }
    }
    let body = format!("[{}]", events.join(","));
    assert_eq!(server.post("/webhooks/mailjet", body).await.0, 200);
    let (_, _, expr) = dashboard_queries()
        .into_iter()
        .find(|(_, title, _)| title == "Top campaigns by bounce rate")
        .expect("the panel");
    let expr = expr.replace("$__range", "1h").replace("$provider", ".*");
    // Both campaigns are in the store, and only the larger one is ranked.
    vm.wait_value(
        r#"count(count by (campaign) (bouncewatch_events_total{campaign=~"201|202"}))"#,
        2.0,
        WAIT,
    )
    .await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let ranked: Vec<String> = vm
            .query(&expr)
            .await
            .iter()
            .filter_map(|s| s["metric"]["campaign"].as_str().map(str::to_string))
            .collect();
        if ranked == ["201"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "ranked {ranked:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
