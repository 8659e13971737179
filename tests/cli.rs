//! The command line: `check-config` validates, masks secrets and names the failing key; text
//! logs carry no colour codes when stderr is not a terminal.

mod common;

#[test]
fn check_config_prints_effective_settings_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bouncewatch.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"0.0.0.0:9000\"\n[webhook]\nusername = \"mj\"\n",
    )
    .unwrap();
    let out = common::command()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("BOUNCEWATCH_WEBHOOK_PASSWORD", "pw-from-env")
        .env("BOUNCEWATCH_API_TOKEN", "api-secret")
        .env("MAILJET_API_KEY", "mj-key-1")
        .env("MAILJET_API_SECRET", "mj-secret-1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The Mailjet key that will be used, from MAILJET_API_KEY; its secret masked.
    assert!(stdout.contains("api_key = \"mj-key-1\""), "{stdout}");
    assert!(!stdout.contains("mj-secret-1"), "{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("listen = \"0.0.0.0:9000\""), "{stdout}");
    assert!(stdout.contains("username = \"mj\""), "{stdout}");
    assert!(
        !stdout.contains("pw-from-env") && !stdout.contains("api-secret"),
        "{stdout}"
    );
    assert!(stdout.contains("********"), "{stdout}");
}

#[test]
fn check_config_fails_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    // A value out of range, and a value of the wrong form.
    for (text, key) in [
        (
            "[server]\ninvalid_body_status = 500\n",
            "server.invalid_body_status",
        ),
        ("[server]\nmax_body = \"lots\"\n", "`server.max_body`"),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = common::command()
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{stderr}");
    }

    let out = common::command()
        .args(["check-config"])
        .env("BOUNCEWATCH_SERVER_LISTEN", "0.0.0.0:8080")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "exposed without credentials must fail"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("BOUNCEWATCH_WEBHOOK_USERNAME"));
}

#[test]
fn the_example_config_is_valid() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bouncewatch.example.toml");
    let out = common::command()
        .args(["check-config", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The README's worked example of alert rules is a config `check-config` accepts, and a rule
/// missing its threshold is refused by name.
#[test]
fn the_readme_rules_example_is_valid() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let after = readme
        .split("**Writing rules.**")
        .nth(1)
        .expect("the README has a rules example");
    let toml = after
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a toml block");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, toml).unwrap();
    let out = common::command()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    for name in ["microsoft-blocks", "campaign-bounces", "spam", "no-events"] {
        assert!(printed.contains(&format!("name = \"{name}\"")), "{printed}");
    }

    std::fs::write(&path, toml.replace("threshold = 0.03", "")).unwrap();
    let out = common::command()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("microsoft-blocks") && err.contains("threshold"),
        "{err}"
    );
}

/// Text logs written to a pipe or a file (journald, `2> log`) are plain text: the escape codes
/// that colour them on a terminal would land in the file as text.
#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::command()
        .env("BOUNCEWATCH_LOG_FORMAT", "text")
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let listening = line.contains("listening");
        seen.push(line);
        if listening {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = seen.join("\n");
    assert!(text.contains("listening"), "{text}");
    assert!(text.contains(" INFO "), "not the text format: {text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a piped log: {text:?}"
    );
}
