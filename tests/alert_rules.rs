//! The Prometheus alerting rules in `alerts/`: promtool accepts them, their unit tests pass,
//! every metric they name is one bouncewatch exports, and their unit tests can fail.
//!
//! promtool is Debian bookworm's (Prometheus 2.42), fetched by `scripts/fetch-tools` into
//! `target/tools/bin` (or `$BOUNCEWATCH_TOOLS/bin`). A missing promtool fails these tests with
//! that instruction: they never skip, or a CI without the tool would pass unchecked rules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The rules, relative to the repository.
const RULES: &str = "alerts/bouncewatch.yml";
/// Their promtool unit tests, which load `bouncewatch.yml` from beside themselves.
const RULE_TESTS: &str = "alerts/bouncewatch.test.yml";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// promtool, from `$BOUNCEWATCH_TOOLS/bin` or `target/tools/bin`. A relative
/// `BOUNCEWATCH_TOOLS` is taken from the repository, as `scripts/fetch-tools` takes it.
fn promtool() -> PathBuf {
    let dir = match std::env::var_os("BOUNCEWATCH_TOOLS") {
        Some(d) => repo().join(d),
        None => repo().join("target/tools"),
    };
    let path = dir.join("bin").join("promtool");
    assert!(
        path.is_file(),
        "{} not found: run scripts/fetch-tools (scripts/test does) to fetch promtool",
        path.display()
    );
    path
}

/// Runs promtool from the repository, so that relative paths are the repository's.
fn run_promtool(args: &[&str]) -> Output {
    let promtool = promtool();
    Command::new(&promtool)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()))
}

/// What promtool said, both streams: it reports test failures on stdout and errors on stderr.
fn said(out: &Output) -> String {
    format!(
        "promtool exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read(path: impl AsRef<Path>) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Syntax, PromQL and templates: what Prometheus itself would refuse to load.
#[test]
fn rules_pass_promtool_check() {
    let out = run_promtool(&["check", "rules", RULES]);
    assert!(out.status.success(), "{}", said(&out));
}

/// Each alert fires where it should and stays quiet where it should, with its exact labels and
/// annotations (see the cases in `alerts/bouncewatch.test.yml`).
#[test]
fn rules_pass_their_unit_tests() {
    let out = run_promtool(&["test", "rules", RULE_TESTS]);
    assert!(out.status.success(), "{}", said(&out));
}

/// Every `bouncewatch_*` token in the rules (expressions and annotations alike) is a metric
/// `src/metrics/names.rs` defines, a histogram's `_bucket`, `_sum` and `_count` standing for
/// the histogram. A metric renamed in the code then breaks this test instead of silently
/// turning its alerts into queries that match nothing, which never fire.
#[test]
fn rules_name_only_exported_metrics() {
    let exported: BTreeSet<String> = read("src/metrics/names.rs")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name: \""))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    assert!(
        exported.contains("bouncewatch_window_rate_numerator"),
        "no metric names read from src/metrics/names.rs: {exported:?}"
    );

    let used = metric_tokens(&read(RULES));
    assert!(
        used.contains("bouncewatch_window_rate_denominator")
            && used.contains("bouncewatch_receiver_requests_total"),
        "too few metrics found in {RULES}: {used:?}"
    );
    let unknown: Vec<&String> = used.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        unknown.is_empty(),
        "{RULES} names metrics that src/metrics/names.rs does not define: {unknown:?}"
    );
}

/// The matches of `bouncewatch_[a-z0-9_]+` in `text`, left to right as a regex finds them,
/// each without a `_bucket`, `_sum` or `_count` suffix.
fn metric_tokens(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "bouncewatch_";
    let is_name_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let bytes = text.as_bytes();
    let mut tokens = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(PREFIX).map(|i| from + i) {
        let rest = at + PREFIX.len();
        let end = rest
            + bytes[rest..]
                .iter()
                .take_while(|&&b| is_name_char(b))
                .count();
        if end == rest {
            from = rest;
            continue;
        }
        let token = &text[at..end];
        let metric = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| token.strip_suffix(s))
            .unwrap_or(token);
        tokens.insert(metric.to_owned());
        from = end;
    }
    tokens
}

/// The unit tests can fail: with the critical spam threshold moved from 0.3 % to 50 %, the cases
/// that expect a critical spam alert must fail. A test file that asserts nothing (an alert name
/// misspelt in it, every `exp_alerts` empty, rules that no longer load) would pass both ways.
#[test]
fn unit_tests_fail_when_a_threshold_changes() {
    let rules = read(RULES);
    let threshold = "> 0.003";
    assert!(
        rules.contains(threshold),
        "{RULES} no longer has the critical spam threshold `{threshold}`; update this test"
    );
    let mutated = rules.replace(threshold, "> 0.5");

    // The test file's rule_files entry is relative to the test file: point it at the mutated
    // copy, under another name so that the original cannot be loaded by mistake.
    let tests = read(RULE_TESTS);
    let entry = "  - bouncewatch.yml\n";
    assert_eq!(
        tests.matches(entry).count(),
        1,
        "{RULE_TESTS} should list `bouncewatch.yml` once under rule_files; update this test"
    );
    let tests = tests.replace(entry, "  - mutated.yml\n");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mutated.yml"), mutated).unwrap();
    let test_file = dir.path().join("bouncewatch.test.yml");
    std::fs::write(&test_file, tests).unwrap();

    let out = run_promtool(&["test", "rules", test_file.to_str().unwrap()]);
    let text = said(&out);
    assert!(
        !out.status.success(),
        "the unit tests still pass with the critical spam threshold at 50 %\n{text}"
    );
    // Failed for the expected reason, on the alert whose threshold moved, and not because the
    // copy could not be loaded.
    assert!(
        text.contains("FAILED") && text.contains("alertname: BouncewatchSpamRateHigh"),
        "{text}"
    );
}
