//! In-process TLS: with `tls.cert` and `tls.key` set, the receiver speaks HTTPS only.

mod common;

use common::{Options, Server, fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_served_with_the_configured_certificate() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    let server = Server::start_with(
        Options::default()
            .env("BOUNCEWATCH_TLS_CERT", cert_path.to_str().unwrap())
            .env("BOUNCEWATCH_TLS_KEY", key_path.to_str().unwrap()),
    );
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", server.addr)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/webhooks/mailjet", server.addr.port());
    let r = client
        .post(&url)
        .body(fixture("v1/bounce.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server.metric_tls(&client).await, 1.0);

    // Plain HTTP on the TLS port is refused rather than served.
    let plain = common::client()
        .post(server.url("/webhooks/mailjet"))
        .body(fixture("v1/open.json"))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
}

#[test]
fn a_missing_key_file_fails_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("nope.pem");
    let result = Server::try_start(
        Options::default()
            .env("BOUNCEWATCH_TLS_CERT", cert.to_str().unwrap())
            .env("BOUNCEWATCH_TLS_KEY", cert.to_str().unwrap()),
    );
    let Err((status, logs)) = result else {
        panic!("started without a certificate")
    };
    assert!(!status.expect("exited").success());
    assert!(logs.join("\n").contains("nope.pem"), "{logs:?}");
}

trait TlsMetric {
    async fn metric_tls(&self, client: &reqwest::Client) -> f64;
}

impl TlsMetric for Server {
    async fn metric_tls(&self, client: &reqwest::Client) -> f64 {
        let url = format!("https://localhost:{}/metrics", self.addr.port());
        let text = client.get(url).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("bouncewatch_receiver_events_total{event=\"bounce\"} "))
            .unwrap()
            .parse()
            .unwrap()
    }
}
