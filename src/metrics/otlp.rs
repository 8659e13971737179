//! Where the OTLP push goes and what it says about this process: the exporter, the resource
//! attributes, and the replica's `service.instance.id`.

use std::collections::HashMap;
use std::path::Path;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::Temporality;

use super::MetricsError;
use super::config::{self, MetricsConfig};

pub(super) fn otlp_requested(config: &MetricsConfig) -> bool {
    let set = |var: &str| std::env::var(var).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_METRICS_EXPORTER").is_ok_and(|v| v.trim() == "none");
    !disabled
        && (!config.otlp_endpoint.is_empty()
            || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

pub(super) fn build_exporter(
    config: &MetricsConfig,
) -> Result<opentelemetry_otlp::MetricExporter, MetricsError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    // reqwest with rustls and the process's one crypto provider (installed in main), so an
    // https endpoint works without a second TLS stack.
    let client = reqwest::blocking::Client::builder()
        .timeout(config.otlp_timeout.0)
        .build()
        .map_err(|e| MetricsError::Exporter(e.to_string()))?;
    let mut builder = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(config.otlp_timeout.0)
        .with_temporality(Temporality::Cumulative);
    if !config.otlp_endpoint.is_empty() {
        builder = builder.with_endpoint(config.otlp_endpoint.clone());
    }
    if !config.otlp_headers.is_empty() {
        let headers: HashMap<String, String> = config
            .otlp_headers
            .iter()
            .filter_map(|kv| config::split_pair(kv))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        builder = builder.with_headers(headers);
    }
    builder
        .build()
        .map_err(|e| MetricsError::Exporter(e.to_string()))
}

/// The resource: what the environment says (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`),
/// then `service.name` = bouncewatch unless set there, the version, the configured attributes
/// and the instance id.
pub(super) fn resource(config: &MetricsConfig, instance: String) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    let mut builder = Resource::builder();
    if !named {
        builder = builder.with_service_name("bouncewatch");
    }
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .filter_map(|kv| config::split_pair(kv))
                .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string())),
        )
        .with_attribute(KeyValue::new("service.instance.id", instance))
        .build()
}

/// The id kept in `data_dir/instance-id`, created on first use.
pub(super) fn persistent_instance_id(data_dir: &Path) -> String {
    let path = data_dir.join("instance-id");
    if let Ok(text) = std::fs::read_to_string(&path)
        && !text.trim().is_empty()
    {
        return text.trim().to_string();
    }
    let id = random_id();
    let tmp = data_dir.join("instance-id.tmp");
    let written =
        std::fs::write(&tmp, format!("{id}\n")).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the instance id; it will change on restart");
    }
    id
}

/// A random UUID (version 4) from the kernel's generator.
pub(super) fn random_id() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if read.is_err() {
        // Still unique enough per process: the time and the pid.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b.copy_from_slice(&(t ^ (u128::from(std::process::id()) << 64)).to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
