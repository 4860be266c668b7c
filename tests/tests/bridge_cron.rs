//! `signalbox-bridge cron` end to end: success, failure, a signal, a
//! command that does not exist, 1 MB of output, `--quiet`, SIGTERM passed
//! on, a broken configuration, and the bus down or hung — the job always
//! runs and its exit code always comes through.

mod bridge_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bridge_support::{bridge, dead_broker, events, run_input, spool_files, Subscriber, LIMIT};
use serde_json::Value;
use signalbox_e2e::{embedded_broker, mosquitto, wait_with_limit};

fn cron(url: &str, state: &std::path::Path, args: &[&str]) -> signalbox_e2e::Finished {
    run_input(bridge(url, state).arg("cron").args(args), b"", LIMIT)
}

/// The `started` and `finished` envelopes of one run.
fn started_and_finished(sub: &Subscriber) -> (Value, Value) {
    let got = events(sub.take(2, LIMIT));
    assert_eq!(got.len(), 2);
    assert!(got[0].topic.ends_with("/started"), "{}", got[0].topic);
    assert!(got[1].topic.ends_with("/finished"), "{}", got[1].topic);
    (got[0].json(), got[1].json())
}

#[test]
fn a_successful_job_passes_its_output_through_and_publishes_both_events() {
    let broker = embedded_broker();
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/cron/#");
    let state = tempfile::tempdir().expect("tempdir");
    let out = cron(
        &broker.url(),
        state.path(),
        &[
            "--job",
            "backup",
            "--",
            "sh",
            "-c",
            "echo hello; echo oops >&2",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(out.stderr, "oops\n");
    let (started, finished) = started_and_finished(&sub);
    assert_eq!(started["topic"], "signalbox/dev/cron/backup/started");
    assert_eq!(
        started["body"]["command"],
        serde_json::json!(["sh", "-c", "echo hello; echo oops >&2"])
    );
    let body = &finished["body"];
    assert_eq!(finished["topic"], "signalbox/dev/cron/backup/finished");
    assert_eq!(finished["severity"], "info");
    assert_eq!(
        body["run_id"], started["body"]["run_id"],
        "one run id for both events"
    );
    assert_eq!(body["exit_code"], 0);
    assert_eq!(body["signal"], Value::Null);
    assert_eq!(body["output_bytes"], 11);
    let tail = body["output_tail"].as_str().unwrap_or_default();
    assert!(
        tail.contains("hello\n") && tail.contains("oops\n"),
        "{tail:?}"
    );
    for field in ["duration_ms", "started", "finished", "host"] {
        assert!(!body[field].is_null(), "{field}: {body}");
    }
    assert!(
        finished["summary"]
            .as_str()
            .unwrap_or_default()
            .starts_with("backup finished in "),
        "{finished}"
    );

    // `finished` is a state: a later subscriber gets it, retained.
    let late = Subscriber::start(&broker.url(), "signalbox/dev/cron/backup/finished");
    let got = late.take(1, LIMIT);
    assert!(got[0].retain);
    assert_eq!(got[0].json()["body"]["run_id"], body["run_id"]);
}

#[test]
fn failure_signal_and_missing_command_give_the_shell_exit_codes() {
    let broker = embedded_broker();
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/cron/#");
    let state = tempfile::tempdir().expect("tempdir");

    let out = cron(
        &broker.url(),
        state.path(),
        &["--job", "fails", "--", "sh", "-c", "echo bad; exit 3"],
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    let (_, finished) = started_and_finished(&sub);
    assert_eq!(finished["severity"], "error");
    assert_eq!(finished["body"]["exit_code"], 3);
    assert!(
        finished["summary"]
            .as_str()
            .unwrap_or_default()
            .starts_with("fails failed in "),
        "{finished}"
    );

    let out = cron(
        &broker.url(),
        state.path(),
        &["--job", "killed", "--", "sh", "-c", "kill -TERM $$"],
    );
    assert_eq!(out.code, 128 + 15, "{}", out.stderr);
    let (_, finished) = started_and_finished(&sub);
    assert_eq!(finished["severity"], "error");
    assert_eq!(finished["body"]["signal"], 15);
    assert_eq!(finished["body"]["exit_code"], Value::Null);
    assert!(
        finished["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("killed by SIGTERM"),
        "{finished}"
    );

    let out = cron(
        &broker.url(),
        state.path(),
        &["--job", "typo", "--", "/no/such/program", "--flag"],
    );
    assert_eq!(out.code, 127, "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "signalbox-bridge: error: command not found: /no/such/program\n"
    );
    let got = events(sub.take(1, LIMIT));
    let finished = got[0].json();
    assert_eq!(
        got[0].topic, "signalbox/dev/cron/typo/finished",
        "no `started` for a job that never started"
    );
    assert_eq!(finished["severity"], "error");
    assert_eq!(finished["body"]["exit_code"], 127);
    assert_eq!(
        finished["body"]["error"],
        "command not found: /no/such/program"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let not_executable = dir.path().join("script.sh");
    std::fs::write(&not_executable, "#!/bin/sh\necho hi\n").expect("write");
    let out = cron(
        &broker.url(),
        state.path(),
        &["--job", "noexec", "--", &not_executable.to_string_lossy()],
    );
    assert_eq!(out.code, 126, "{}", out.stderr);
    let got = events(sub.take(1, LIMIT));
    assert_eq!(got[0].json()["body"]["exit_code"], 126);
}

#[test]
fn one_megabyte_of_output_passes_through_and_the_tail_is_kept() {
    let broker = embedded_broker();
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/cron/#");
    let state = tempfile::tempdir().expect("tempdir");
    // 1 MiB on stdout (lines "0123456789"), then a marker on stderr. The
    // two pipes are read concurrently, so the tail is interleaved in the
    // order the bridge reads them: the pause keeps that order certain.
    let script = "yes 0123456789 | head -c 1048576; sleep 0.3; echo END >&2";
    let out = cron(
        &broker.url(),
        state.path(),
        &["--job", "chatty", "--", "sh", "-c", script],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.len(), 1_048_576, "all of stdout passed through");
    assert_eq!(out.stderr, "END\n");
    let (_, finished) = started_and_finished(&sub);
    let body = &finished["body"];
    assert_eq!(body["output_bytes"], 1_048_576 + 4);
    let tail = body["output_tail"].as_str().unwrap_or_default();
    assert!(tail.len() <= 10_000 && tail.len() > 9_990, "{}", tail.len());
    assert!(
        tail.ends_with("END\n"),
        "{:?}",
        &tail[tail.len().saturating_sub(40)..]
    );

    let out = cron(
        &broker.url(),
        state.path(),
        &[
            "--job",
            "small",
            "--tail-bytes",
            "5",
            "--",
            "echo",
            "abcdefgh",
        ],
    );
    assert_eq!(out.code, 0);
    let (_, finished) = started_and_finished(&sub);
    assert_eq!(finished["body"]["output_tail"], "efgh\n");
}

#[test]
fn quiet_holds_output_back_unless_the_job_fails() {
    let broker = embedded_broker();
    let state = tempfile::tempdir().expect("tempdir");
    let out = cron(
        &broker.url(),
        state.path(),
        &[
            "--job",
            "q",
            "--quiet",
            "--",
            "sh",
            "-c",
            "echo fine; echo warn >&2",
        ],
    );
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "", "")
    );
    let out = cron(
        &broker.url(),
        state.path(),
        &[
            "--job",
            "q",
            "--quiet",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 4",
        ],
    );
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (4, "out\n", "err\n")
    );
}

#[test]
fn sigterm_to_the_wrapper_reaches_the_job_and_is_reported() {
    let broker = embedded_broker();
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/cron/#");
    let state = tempfile::tempdir().expect("tempdir");
    let child = bridge(&broker.url(), state.path())
        .args(["cron", "--job", "long", "--", "sleep", "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait until the job is running (its `started` event).
    let got = events(sub.take(1, LIMIT));
    assert!(got[0].topic.ends_with("/started"));
    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = wait_with_limit(child, LIMIT);
    assert_eq!(out.code, 143, "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the job stopped at once"
    );
    let finished = events(sub.take(1, LIMIT))[0].json();
    assert_eq!(finished["body"]["signal"], 15);
}

#[test]
fn with_the_bus_down_the_job_runs_and_its_events_are_spooled() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut cmd = bridge(&dead_broker(), state.path());
    cmd.args([
        "cron",
        "--job",
        "offline",
        "--",
        "sh",
        "-c",
        "echo ran; exit 7",
    ]);
    let started = Instant::now();
    let out = run_input(&mut cmd, b"", LIMIT);
    assert_eq!(out.code, 7);
    assert_eq!(out.stdout, "ran\n");
    assert_eq!(
        out.stderr, "",
        "a bus that is down is not the job's problem"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let files = spool_files(&state.path().join("spool"));
    assert_eq!(files.len(), 2, "started and finished spooled");

    // A hung broker (accepts, never answers): bounded by --timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("mqtt://{}", listener.local_addr().expect("addr"));
    let state = tempfile::tempdir().expect("tempdir");
    let mut cmd = bridge(&url, state.path());
    cmd.args(["cron", "--job", "hung", "--timeout", "2", "--", "true"]);
    let started = Instant::now();
    let out = run_input(&mut cmd, b"", LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(spool_files(&state.path().join("spool")).len(), 2);
}

#[test]
fn a_broken_configuration_does_not_stop_the_job() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut cmd = bridge(&dead_broker(), state.path());
    cmd.env("SIGNALBOX_CONFIG", state.path().join("missing.toml"))
        .args([
            "cron",
            "--job",
            "x",
            "--",
            "sh",
            "-c",
            "echo still ran; exit 5",
        ]);
    let out = run_input(&mut cmd, b"", LIMIT);
    assert_eq!(out.code, 5);
    assert_eq!(out.stdout, "still ran\n");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("does not exist") && out.stderr.contains("running the job without"),
        "{}",
        out.stderr
    );
}

#[test]
fn wrapper_usage_errors_exit_2() {
    let state = tempfile::tempdir().expect("tempdir");
    for (args, needle) in [
        (&["--", "true"][..], "--job"),
        (&["--job", "x"][..], "CMD"),
        (&["--job", " ", "--", "true"][..], "--job must not be empty"),
        (
            &["--job", "x", "--tail-bytes", "99999999", "--", "true"][..],
            "--tail-bytes",
        ),
        (
            &["--job", "x", "--timeout", "-1", "--", "true"][..],
            "--timeout",
        ),
    ] {
        let out = cron(&dead_broker(), state.path(), args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn cron_events_through_mosquitto() {
    let Some(m) = mosquitto("cron_events_through_mosquitto") else {
        return;
    };
    let sub = Subscriber::start(&m.url(), "signalbox/dev/cron/#");
    let state = tempfile::tempdir().expect("tempdir");
    let out = cron(
        &m.url(),
        state.path(),
        &["--job", "nightly", "--", "sh", "-c", "exit 2"],
    );
    assert_eq!(out.code, 2);
    let (started, finished) = started_and_finished(&sub);
    assert_eq!(started["body"]["run_id"], finished["body"]["run_id"]);
    assert_eq!(finished["body"]["exit_code"], 2);
}
