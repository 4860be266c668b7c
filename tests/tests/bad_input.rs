//! Every bad input gets one clear line on stderr and a documented exit code
//! (2 usage/configuration, 1 runtime), never a panic or a hang.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use signalbox_e2e::{embedded_broker, free_port, run_with_limit, signalbox, Finished};

const LIMIT: Duration = Duration::from_secs(30);

fn assert_one_line_error(out: &Finished, code: i32, needle: &str) {
    assert_eq!(out.code, code, "exit code; stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one line on stderr: {:?}",
        out.stderr
    );
    assert!(lines[0].starts_with("signalbox: error: "), "{}", lines[0]);
    assert!(
        lines[0].contains(needle),
        "expected {needle:?} in {:?}",
        lines[0]
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn malformed_and_unsupported_broker_urls_are_usage_errors() {
    for (url, needle) in [
        ("mqtt://", "invalid broker URL"),
        ("mqtt://host:notaport", "invalid broker URL"),
        (
            "http://127.0.0.1:1883",
            "unsupported broker URL scheme \"http\"",
        ),
        ("127.0.0.1:1883", "no scheme; write it as mqtt://"),
    ] {
        let out = run_with_limit(signalbox(url).args(["pub", "a/b", "hello"]), LIMIT);
        assert_one_line_error(&out, 2, needle);
    }
}

#[test]
fn an_unreachable_broker_fails_within_the_connect_timeout() {
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let mut cmd = signalbox(&url);
    cmd.args(["pub", "a/b", "hello"]);
    let started = Instant::now();
    let out = run_with_limit(&mut cmd, LIMIT);
    assert_one_line_error(&out, 1, "cannot reach broker mqtt://127.0.0.1:");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    // A black-holed address (nothing answers the SYN): the connect timeout applies.
    let mut cmd = signalbox("mqtt://10.255.255.1:1883");
    cmd.env("SIGNALBOX_CONNECT_TIMEOUT", "2")
        .args(["tail", "x/#"]);
    let started = Instant::now();
    let out = run_with_limit(&mut cmd, LIMIT);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach broker"), "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn bad_pub_arguments_are_usage_errors() {
    let broker = embedded_broker();
    let url = broker.url();
    let cases: &[(&[&str], &str)] = &[
        (
            &["pub", "a/b", "x", "--body", "{not json"],
            "--body is not valid JSON",
        ),
        (&["pub", "a/+/b", "x"], "wildcard"),
        (&["pub", "a/#", "x"], "wildcard"),
        (&["pub", "", "x"], "empty"),
        (
            &["pub", "a/b", "x", "--severity", "loud"],
            "invalid --severity",
        ),
        (&["pub", "a/b"], "MESSAGE is missing"),
        (&["pub", "a/b", "x", "--link", "nourl"], "invalid --link"),
        (&["pub", "a/b", "x", "--timeout=0"], "--timeout"),
        (&["tail", "a/#/b"], "#"),
        (&["tail", "a/b+"], "+"),
    ];
    for (args, needle) in cases {
        let out = run_with_limit(signalbox(&url).args(*args), LIMIT);
        assert_one_line_error(&out, 2, needle);
    }
    // clap's own usage errors exit 2 as well.
    let out = run_with_limit(
        signalbox(&url).args(["pub", "--qos", "7", "a/b", "x"]),
        LIMIT,
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"));
}

#[test]
fn invalid_config_files_are_rejected_with_their_reason() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("invalid_configs");
    let cases = [
        ("unknown_key.toml", "unknown key `brokr`"),
        ("wrong_type.toml", "is invalid"),
        ("not_toml.toml", "is invalid"),
        ("bad_mqtt_version.toml", "3 (MQTT 3.1.1) or 5"),
        ("wildcard_prefix.toml", "invalid prefix"),
    ];
    for (file, needle) in cases {
        let path = dir.join(file);
        let mut cmd = signalbox("mqtt://127.0.0.1:1");
        cmd.env_remove("SIGNALBOX_BROKER")
            .arg("--config")
            .arg(&path)
            .args(["pub", "a/b", "x"]);
        let out = run_with_limit(&mut cmd, LIMIT);
        assert_one_line_error(&out, 2, needle);
        assert!(
            out.stderr.contains(file) || needle.starts_with("invalid") || needle.starts_with('3'),
            "{}",
            out.stderr
        );
    }
    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.env_remove("SIGNALBOX_BROKER")
        .arg("--config")
        .arg(dir.join("bad_scheme.toml"))
        .args(["pub", "a/b", "x"]);
    assert_one_line_error(
        &run_with_limit(&mut cmd, LIMIT),
        2,
        "unsupported broker URL scheme",
    );
    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.arg("--config")
        .arg(dir.join("missing.toml"))
        .arg("config");
    assert_one_line_error(&run_with_limit(&mut cmd, LIMIT), 2, "does not exist");
}

#[test]
fn config_shows_each_value_with_its_source_and_masks_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "env = \"prod\"\npassword = \"hunter2\"\n").expect("write");
    let out = run_with_limit(
        signalbox("mqtt://u:sekrit@127.0.0.1:1883")
            .env("SIGNALBOX_PREFIX", "corp")
            .arg("--config")
            .arg(&file)
            .args(["--env", "stage", "config"]),
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.stdout;
    assert!(
        text.contains(&format!("config file: {} (loaded)", file.display())),
        "{text}"
    );
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        row("env").contains("stage") && row("env").ends_with("(flag)"),
        "{text}"
    );
    assert!(
        row("prefix").contains("corp") && row("prefix").ends_with("(env SIGNALBOX_PREFIX)"),
        "{text}"
    );
    assert!(row("health_interval").ends_with("(default)"), "{text}");
    assert!(
        row("password").contains("********") && row("password").contains("(file "),
        "{text}"
    );
    assert!(
        !text.contains("hunter2") && !text.contains("sekrit"),
        "{text}"
    );
}

#[test]
fn the_demo_without_a_terminal_points_to_headless() {
    let out = run_with_limit(signalbox("mqtt://127.0.0.1:1").arg("demo"), LIMIT);
    assert_one_line_error(&out, 2, "use `signalbox demo --headless`");
    let out = run_with_limit(
        signalbox("mqtt://127.0.0.1:1").args(["demo", "--headless", "--speed", "0"]),
        LIMIT,
    );
    assert_one_line_error(&out, 2, "--speed must be between 0 and 100");
}

#[test]
fn embedded_with_a_command_is_a_usage_error() {
    let out = run_with_limit(
        signalbox("mqtt://127.0.0.1:1").args(["--embedded", "tail"]),
        LIMIT,
    );
    assert_one_line_error(&out, 2, "--embedded only applies to the console");
}
