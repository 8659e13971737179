//! A real metrics store for the tests: VictoriaMetrics from Debian trixie, started on an
//! ephemeral port with OTLP ingestion and Prometheus naming, optionally scraping a target.
//!
//! `scripts/fetch-tools` puts the binaries in `target/tools/bin` (or `$BOUNCEWATCH_TOOLS/bin`).
//! A missing binary fails the test with that instruction: these tests never skip.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client;

/// A binary fetched by `scripts/fetch-tools`.
pub fn tool(name: &str) -> PathBuf {
    let dir = match std::env::var_os("BOUNCEWATCH_TOOLS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools"),
    };
    let path = dir.join("bin").join(name);
    assert!(
        path.exists(),
        "{} not found: run scripts/fetch-tools (scripts/test does) to fetch the real peers",
        path.display()
    );
    path
}

/// A port that was free a moment ago, for a peer that cannot bind port 0 and report it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct VictoriaMetrics {
    child: Child,
    pub base: String,
    /// Basic credentials every request needs (`-httpAuth.*`), if any.
    auth: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

/// The job name of series VictoriaMetrics scraped from `/metrics`.
pub const SCRAPE_JOB: &str = "bouncewatch-scrape";

impl VictoriaMetrics {
    /// Starts on `port` (see [`free_port`]); scrapes `scrape` (host:port) every second if given.
    pub fn start(port: u16, scrape: Option<&str>) -> VictoriaMetrics {
        VictoriaMetrics::start_with(port, scrape, None)
    }

    /// As [`VictoriaMetrics::start`], and with `auth`, every request (the OTLP push too) must
    /// carry these Basic credentials.
    pub fn start_with(
        port: u16,
        scrape: Option<&str>,
        auth: Option<(&str, &str)>,
    ) -> VictoriaMetrics {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(tool("victoria-metrics"));
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("data").display()
            ))
            .arg("-opentelemetry.usePrometheusNaming")
            .arg("-search.latencyOffset=0s")
            .arg("-search.disableCache")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(target) = scrape {
            let config = dir.path().join("scrape.yml");
            std::fs::write(
                &config,
                format!(
                    "scrape_configs:\n  - job_name: {SCRAPE_JOB}\n    scrape_interval: 1s\n    \
                     static_configs:\n      - targets: [\"{target}\"]\n"
                ),
            )
            .expect("write scrape config");
            cmd.arg(format!("-promscrape.config={}", config.display()));
        }
        if let Some((user, password)) = auth {
            cmd.arg(format!("-httpAuth.username={user}"))
                .arg(format!("-httpAuth.password={password}"));
        }
        let child = cmd.spawn().expect("start victoria-metrics");
        let vm = VictoriaMetrics {
            child,
            base: format!("http://127.0.0.1:{port}"),
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "victoria-metrics did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        vm
    }

    /// Where bouncewatch's OTLP exporter should push.
    pub fn otlp_endpoint(&self) -> String {
        format!("{}/opentelemetry/v1/metrics", self.base)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let r = client().get(format!("{}{path}", self.base));
        match &self.auth {
            Some((user, password)) => r.basic_auth(user, Some(password)),
            None => r,
        }
    }

    /// An instant PromQL query; the `result` array.
    pub async fn query(&self, promql: &str) -> Vec<Value> {
        let r = self
            .get("/api/v1/query")
            .query(&[("query", promql)])
            .send()
            .await
            .expect("query victoria-metrics");
        let status = r.status();
        let body: Value = r.json().await.expect("PromQL answer is JSON");
        assert!(status.is_success(), "{promql}: {status} {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of a query that must return one series.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).await;
        let first = result.first()?;
        first["value"][1].as_str()?.parse().ok()
    }

    /// Polls `promql` until its single value equals `want`; panics with the last value after
    /// `timeout`.
    pub async fn wait_value(&self, promql: &str, want: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.value(promql).await;
            if got.is_some_and(|v| (v - want).abs() < 1e-9) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: wanted {want}, last got {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The metric names of the series matching `selector`.
    pub async fn names(&self, selector: &str) -> std::collections::BTreeSet<String> {
        let r: Value = self
            .get("/api/v1/label/__name__/values")
            .query(&[("match[]", selector)])
            .send()
            .await
            .expect("names")
            .json()
            .await
            .expect("JSON");
        r["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
