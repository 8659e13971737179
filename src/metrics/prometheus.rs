//! Renders one collection of the OpenTelemetry instruments in the Prometheus text format.
//!
//! The names follow Prometheus' own OTLP translation, so a series has the same name whether it
//! was pushed over OTLP or scraped here: `.` in names and label keys becomes `_`, a monotonic
//! sum gets `_total`, a histogram becomes `_bucket{le}` (cumulative), `_sum` and `_count`. The
//! resource's attributes go into `target_info`, as the translation puts them, and not onto every
//! series: the scraper adds `job` and `instance`.

use std::fmt::Write as _;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};

use super::names::{ALL, Kind, Signal};

/// Renders `rm`, signal by signal in the order of [`ALL`]; a signal without data points still
/// gets its `# HELP` and `# TYPE` lines.
pub fn render(rm: &ResourceMetrics) -> String {
    let mut out = String::with_capacity(16 * 1024);
    render_target_info(&mut out, rm.resource());
    let metrics: Vec<&Metric> = rm.scope_metrics().flat_map(|s| s.metrics()).collect();
    for signal in ALL {
        let _ = writeln!(out, "# HELP {} {}", signal.name, escape_help(signal.help));
        let _ = writeln!(out, "# TYPE {} {}", signal.name, signal.kind.as_str());
        let Some(metric) = metrics.iter().find(|m| m.name() == signal.instrument()) else {
            continue;
        };
        let mut lines = Vec::new();
        match metric.data() {
            AggregatedMetrics::F64(data) => points(signal, data, &mut lines),
            AggregatedMetrics::U64(data) => points(signal, data, &mut lines),
            AggregatedMetrics::I64(data) => points(signal, data, &mut lines),
        }
        lines.sort();
        for line in lines {
            out.push_str(&line);
        }
    }
    out
}

/// A value the text format can print.
trait Number: Copy {
    fn text(self) -> String;
}

impl Number for f64 {
    fn text(self) -> String {
        if self.is_nan() {
            "NaN".into()
        } else if self.is_infinite() {
            if self > 0.0 { "+Inf" } else { "-Inf" }.into()
        } else {
            self.to_string()
        }
    }
}

impl Number for u64 {
    fn text(self) -> String {
        self.to_string()
    }
}

impl Number for i64 {
    fn text(self) -> String {
        self.to_string()
    }
}

fn points<T: Number>(signal: &Signal, data: &MetricData<T>, lines: &mut Vec<String>) {
    let name = signal.name;
    match data {
        MetricData::Sum(sum) => {
            for p in sum.data_points() {
                lines.push(format!(
                    "{name}{} {}\n",
                    labels(p.attributes(), None),
                    p.value().text()
                ));
            }
        }
        MetricData::Gauge(gauge) => {
            for p in gauge.data_points() {
                lines.push(format!(
                    "{name}{} {}\n",
                    labels(p.attributes(), None),
                    p.value().text()
                ));
            }
        }
        MetricData::Histogram(hist) => {
            debug_assert_eq!(signal.kind, Kind::Histogram);
            for p in hist.data_points() {
                // One string per data point keeps its buckets together and in order.
                let mut text = String::new();
                let mut cumulative = 0u64;
                let bounds: Vec<f64> = p.bounds().collect();
                for (i, count) in p.bucket_counts().enumerate() {
                    cumulative += count;
                    let le = bounds.get(i).map_or("+Inf".to_string(), |b| b.text());
                    let _ = writeln!(
                        text,
                        "{name}_bucket{} {cumulative}",
                        labels(p.attributes(), Some(&le))
                    );
                }
                let _ = writeln!(
                    text,
                    "{name}_sum{} {}",
                    labels(p.attributes(), None),
                    p.sum().text()
                );
                let _ = writeln!(
                    text,
                    "{name}_count{} {}",
                    labels(p.attributes(), None),
                    p.count()
                );
                lines.push(text);
            }
        }
        MetricData::ExponentialHistogram(_) => {
            tracing::debug!(name, "exponential histograms are not rendered");
        }
    }
}

/// `{a="1",b="2"}` with keys sorted and sanitized, or nothing for an empty set.
fn labels<'a>(attrs: impl Iterator<Item = &'a KeyValue>, le: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = attrs
        .map(|kv| (sanitize(kv.key.as_str()), kv.value.as_str().into_owned()))
        .collect();
    if let Some(le) = le {
        pairs.push(("le".into(), le.into()));
    }
    if pairs.is_empty() {
        return String::new();
    }
    pairs.sort();
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape_value(v));
    }
    out.push('}');
    out
}

fn render_target_info(out: &mut String, resource: &Resource) {
    out.push_str("# HELP target_info Target metadata\n# TYPE target_info gauge\n");
    let attrs: Vec<KeyValue> = resource
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    let _ = writeln!(out, "target_info{} 1", labels(attrs.iter(), None));
}

/// Prometheus' rule for label names: anything but `[a-zA-Z0-9_]` becomes `_`, and a leading
/// digit gets a `key_` prefix.
pub fn sanitize(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert_str(0, "key_");
    }
    s
}

fn escape_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_are_sanitized_and_values_escaped() {
        let attrs = [
            KeyValue::new("service.instance.id", "a\"b"),
            KeyValue::new("9lives", "x\\y\nz"),
        ];
        assert_eq!(
            labels(attrs.iter(), Some("0.5")),
            r#"{key_9lives="x\\y\nz",le="0.5",service_instance_id="a\"b"}"#
        );
        assert_eq!(labels([].iter(), None), "");
    }
}
