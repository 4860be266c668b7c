//! The broker compatibility matrix (issue 13): one list of end-to-end
//! scenarios, run in sequence against each broker — the embedded rumqttd,
//! mosquitto 2.0 and RabbitMQ 3.10 with its MQTT plugin — each broker
//! started once per test (a RabbitMQ node takes 10–15 s).
//!
//! Every scenario drives the real binaries (`signalbox`, `signalbox-bridge`)
//! and takes only the broker's URL, so a scenario that passes here works on
//! every broker of the matrix. What differs between brokers is stated in
//! [`Traits`] and checked, not skipped: RabbitMQ 3.10 does not deliver
//! retained messages to wildcard subscriptions and does not speak MQTT 5.
//!
//! RabbitMQ tests fail rather than skip when `SIGNALBOX_REQUIRE_RABBITMQ=1`,
//! mosquitto tests when `SIGNALBOX_REQUIRE_MOSQUITTO=1`.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;
use signalbox_e2e::tmux::{tmux_available, Tmux};
use signalbox_e2e::{
    bin, embedded_broker, publish, rabbit, run_with_limit, signalbox, signalbox_bridge, tail_ready,
    Finished, KillOnDrop, LineReader,
};

/// The longest one CLI run may take.
const RUN: Duration = Duration::from_secs(30);
/// The longest a scenario waits for something to show.
const WAIT: Duration = Duration::from_secs(30);
/// `signalbox health` must see a listener killed with SIGKILL within this.
const DOWN_WITHIN: Duration = Duration::from_secs(60);
/// The note `signalbox` prints (once) on a broker that does not deliver
/// retained messages to wildcard subscriptions.
const WILDCARD_NOTE: &str = "broker does not deliver retained messages to wildcard subscriptions";

/// What a broker of the matrix does differently, as measured.
#[derive(Debug, Clone)]
struct Traits {
    /// Retained messages reach wildcard subscriptions.
    retained_to_wildcards: bool,
    /// Where it accepts MQTT 5 connections (the embedded broker has a port
    /// of its own for them), or `None`: it does not speak MQTT 5.
    mqtt5_url: Option<String>,
    /// It delivers through shared subscriptions (`$share/{group}/…`).
    shared_subscriptions: bool,
    /// It turns a `.` inside a topic level into a level separator
    /// (RabbitMQ maps `/` to AMQP's `.` and back).
    dots_become_levels: bool,
}

#[test]
fn embedded() {
    let broker = embedded_broker();
    scenarios(
        "embedded",
        &broker.url(),
        Traits {
            retained_to_wildcards: true,
            mqtt5_url: broker.url_v5(),
            shared_subscriptions: true,
            dots_become_levels: false,
        },
    );
}

#[test]
fn mosquitto() {
    let Some(m) = signalbox_e2e::mosquitto("matrix::mosquitto") else {
        return;
    };
    scenarios(
        "mosquitto",
        &m.url(),
        Traits {
            retained_to_wildcards: true,
            mqtt5_url: Some(m.url()),
            shared_subscriptions: true,
            dots_become_levels: false,
        },
    );
}

#[test]
fn rabbitmq() {
    let Some(node) = rabbit::rabbitmq("matrix::rabbitmq") else {
        return;
    };
    scenarios(
        "rabbitmq",
        &node.url(),
        Traits {
            retained_to_wildcards: false,
            mqtt5_url: None,
            shared_subscriptions: false,
            dots_become_levels: true,
        },
    );
    drop(node);
}

/// Every scenario, in order, against one broker.
fn scenarios(broker: &str, url: &str, traits: Traits) {
    let started = Instant::now();
    let step = |name: &str| {
        eprintln!(
            "[matrix {broker}] {name} ({:.1} s)",
            started.elapsed().as_secs_f64()
        )
    };
    step("retained delivery to wildcards");
    retained_delivery_is_as_measured(url, &traits);
    step("protocol version");
    mqtt_version(url, &traits);
    step("pub → tail");
    pub_to_tail_byte_identical(url);
    step("a '.' in a topic level");
    dots_in_topic_levels(url, &traits);
    step("cron bridge");
    cron_bridge(url);
    step("git bridge");
    git_bridge(url);
    step("listener, failed, ack, replay, console, SIGKILL");
    listener_lifecycle(broker, url, &traits);
    step("health --expect");
    health_expect_never_seen(url);
    step("--share-group");
    share_group(url, &traits);
    step("done");
}

/// `signalbox ARGS…` to completion.
fn cli(url: &str, args: &[&str]) -> Finished {
    run_with_limit(signalbox(url).args(args), RUN)
}

/// Retries `attempt` every 300 ms until it returns `Some`, or panics with
/// `what` and the last failure after `limit`.
fn eventually<T>(what: &str, limit: Duration, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match attempt() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: not within {limit:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

/// The matrix's premise, measured rather than assumed: a retained message
/// reaches a wildcard subscription on rumqttd and mosquitto, not on
/// RabbitMQ 3.10; an exact subscription gets it everywhere.
fn retained_delivery_is_as_measured(url: &str, traits: &Traits) {
    publish(
        url,
        &["--retain", "signalbox/dev/matrix/probe", "retained probe"],
    );
    let wildcard = cli(
        url,
        &[
            "tail",
            "--count",
            "1",
            "--timeout",
            "3",
            "signalbox/dev/matrix/+",
        ],
    );
    assert_eq!(
        wildcard.stdout.contains("retained probe"),
        traits.retained_to_wildcards,
        "retained to a wildcard: {}{}",
        wildcard.stdout,
        wildcard.stderr
    );
    let exact = cli(
        url,
        &[
            "tail",
            "--count",
            "1",
            "--timeout",
            "10",
            "signalbox/dev/matrix/probe",
        ],
    );
    assert!(
        exact.stdout.contains("retained probe [retained]"),
        "retained to an exact subscription: {}{}",
        exact.stdout,
        exact.stderr
    );
    publish(
        url,
        &["--retain", "--raw", "signalbox/dev/matrix/probe", ""],
    );
}

/// MQTT 5 where the broker has it; where it does not, one clear error that
/// names the cause and the fix.
fn mqtt_version(url: &str, traits: &Traits) {
    let out = run_with_limit(
        signalbox(traits.mqtt5_url.as_deref().unwrap_or(url))
            .env("SIGNALBOX_MQTT_VERSION", "5")
            .args(["pub", "signalbox/dev/matrix/v5", "over MQTT 5"]),
        RUN,
    );
    if traits.mqtt5_url.is_some() {
        assert_eq!(out.code, 0, "MQTT 5 pub: {}", out.stderr);
    } else {
        assert_ne!(out.code, 0, "MQTT 5 pub must fail: {}", out.stdout);
        let err = out.stderr.trim();
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.contains("does not speak MQTT 5") && err.contains("set mqtt_version = 3"),
            "{err}"
        );
    }
}

/// `signalbox pub` → `signalbox tail --qos 1`: a raw text payload and an
/// envelope come out exactly as they went in.
fn pub_to_tail_byte_identical(url: &str) {
    let (_tail, lines) = tail_ready(
        url,
        "signalbox/dev/matrix/ready-pub",
        &[
            "--json",
            "--qos",
            "1",
            "signalbox/dev/matrix/ready-pub",
            "signalbox/dev/matrix/pub/#",
        ],
    );
    let text = "héllo, wörld \u{1F980} \"quoted\"\ttabbed";
    publish(url, &["--raw", "signalbox/dev/matrix/pub/raw", text]);
    let envelope = serde_json::json!({
        "v": 1,
        "id": "01a20ef0-9f1b-7edc-8eb9-155c24cbc20f",
        "topic": "signalbox/dev/matrix/pub/env",
        "time": "2026-11-24T19:03:00.123Z",
        "source": {"bridge": "matrix", "host": "h", "user": "u"},
        "severity": "warning",
        "summary": "an envelope, byte for byte",
        "body": {"n": 1, "list": [1, 2, 3], "unicode": "ü"}
    });
    publish(
        url,
        &[
            "--raw",
            "signalbox/dev/matrix/pub/env",
            &envelope.to_string(),
        ],
    );
    let raw = json_line(&lines);
    assert_eq!(raw["topic"], "signalbox/dev/matrix/pub/raw");
    assert_eq!(raw["qos"], 1, "{raw}");
    assert_eq!(raw["kind"], "text");
    assert_eq!(raw["payload"], text);
    let env = json_line(&lines);
    assert_eq!(env["topic"], "signalbox/dev/matrix/pub/env");
    assert_eq!(env["kind"], "envelope", "{env}");
    assert_eq!(env["payload"], envelope);
}

/// A `.` inside a topic level: where the broker turns it into `/`
/// (RabbitMQ), `tail` still shows the message and says so once on stderr;
/// elsewhere the topic arrives unchanged and nothing is said.
fn dots_in_topic_levels(url: &str, traits: &Traits) {
    let ready = "signalbox/dev/matrix/ready-dots";
    publish(url, &["--retain", ready, "ready"]);
    let mut child = signalbox(url)
        .args(["tail", "--json", "--count", "3", "--timeout", "30"])
        .args([ready, "signalbox/dev/matrix/dots/#"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tail");
    let lines = LineReader::new(&mut child);
    let first = lines.next_line(WAIT).expect("tail prints the ready marker");
    assert!(first.contains(ready), "{first}");
    for _ in 0..2 {
        publish(
            url,
            &["signalbox/dev/matrix/dots/pkg/v1.2/build", "built v1.2"],
        );
    }
    let topics: Vec<String> = (0..2)
        .map(|_| {
            json_line(&lines)["topic"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let out = signalbox_e2e::wait_with_limit(child, RUN);
    assert_eq!(out.code, 0, "tail: {}", out.stderr);
    let notes = out
        .stderr
        .matches("turned '.' in topic levels into '/'")
        .count();
    if traits.dots_become_levels {
        assert!(
            topics
                .iter()
                .all(|t| t == "signalbox/dev/matrix/dots/pkg/v1/2/build"),
            "{topics:?}"
        );
        assert_eq!(notes, 1, "said once: {}", out.stderr);
    } else {
        assert!(
            topics
                .iter()
                .all(|t| t == "signalbox/dev/matrix/dots/pkg/v1.2/build"),
            "{topics:?}"
        );
        assert_eq!(notes, 0, "nothing to say: {}", out.stderr);
    }
}

fn json_line(lines: &LineReader) -> Value {
    let line = lines.next_line(WAIT).expect("tail prints a line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// `signalbox-bridge cron`: the job runs, its exit code passes through and
/// its `started` and `finished` events arrive.
fn cron_bridge(url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_tail, lines) = tail_ready(
        url,
        "signalbox/dev/matrix/ready-cron",
        &[
            "--json",
            "signalbox/dev/matrix/ready-cron",
            "signalbox/dev/cron/matrix-job/#",
        ],
    );
    let out = run_with_limit(
        signalbox_bridge(url, dir.path()).args([
            "cron",
            "--job",
            "matrix-job",
            "--",
            "sh",
            "-c",
            "echo done; exit 3",
        ]),
        RUN,
    );
    assert_eq!(out.code, 3, "the job's exit code: {}", out.stderr);
    assert_eq!(out.stdout, "done\n");
    let started = json_line(&lines);
    assert_eq!(
        started["topic"], "signalbox/dev/cron/matrix-job/started",
        "{started}"
    );
    let finished = json_line(&lines);
    assert_eq!(
        finished["topic"], "signalbox/dev/cron/matrix-job/finished",
        "{finished}"
    );
    assert_eq!(finished["payload"]["body"]["exit_code"], 3, "{finished}");
}

/// `signalbox-bridge git` as a real post-receive hook: a push publishes
/// its commit.
fn git_bridge(url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = |cwd: &Path, args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env("GIT_AUTHOR_NAME", "Jesse Keating")
            .env("GIT_AUTHOR_EMAIL", "jkeating@example.org")
            .env("GIT_COMMITTER_NAME", "Jesse Keating")
            .env("GIT_COMMITTER_EMAIL", "jkeating@example.org")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", cwd)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let bare = dir.path().join("kernel.git");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    git(dir.path(), &["init", "--quiet", "--bare", "kernel.git"]);
    git(&work, &["init", "--quiet", "-b", "main"]);
    let state = dir.path().join("state");
    let hook = bare.join("hooks/post-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nexec env -u SIGNALBOX_CONFIG SIGNALBOX_CONFIG= SIGNALBOX_BROKER='{url}' SIGNALBOX_STATE_DIR='{}' '{}' git\n",
            state.display(),
            bin("signalbox-bridge").display()
        ),
    )
    .expect("write hook");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let (_tail, lines) = tail_ready(
        url,
        "signalbox/dev/matrix/ready-git",
        &[
            "--json",
            "signalbox/dev/matrix/ready-git",
            "signalbox/dev/git/#",
        ],
    );
    std::fs::write(work.join("README"), "fix oops in ext4\n").expect("write");
    git(&work, &["add", "README"]);
    git(&work, &["commit", "--quiet", "-m", "fix oops in ext4"]);
    git(
        &work,
        &[
            "push",
            "--quiet",
            bare.to_str().expect("utf-8 path"),
            "main",
        ],
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let line = lines
            .next_line(deadline.saturating_duration_since(Instant::now()))
            .expect("the push's commit message arrives");
        let v: Value = serde_json::from_str(&line).unwrap_or_default();
        let summary = v["payload"]["summary"].as_str().unwrap_or_default();
        if v["topic"].as_str().is_some_and(|t| t.ends_with("/commit")) {
            assert!(summary.contains("fix oops in ext4"), "{v}");
            break;
        }
    }
}

/// The listener runtime end to end with `signalbox-bridge exec`: health
/// through `_ping`, a failure record listed, acknowledged and replayed,
/// the console's ingest, and `signalbox health` failing within a minute of
/// a SIGKILL thanks to the `_roster` and the exact `_health/{name}` read.
fn listener_lifecycle(broker: &str, url: &str, traits: &Traits) {
    let name = "matrix-exec";
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("handled");
    let healed = dir.path().join("healed");
    // Messages whose summary starts with "fail" fail until `healed` exists.
    let script = format!(
        r#"echo "$SIGNALBOX_SUMMARY" >> '{log}'; case "$SIGNALBOX_SUMMARY" in fail*) [ -e '{healed}' ] || {{ echo "tracker unreachable" >&2; exit 3; }};; esac"#,
        log = log.display(),
        healed = healed.display()
    );
    let start = || -> Child {
        signalbox_bridge(url, &dir.path().join("state"))
            .env("SIGNALBOX_HEALTH_INTERVAL", "2")
            .args([
                "exec",
                "--name",
                name,
                "--filter",
                "signalbox/dev/matrix/work/#",
                "--retries",
                "1",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn exec listener")
    };
    let mut listener = KillOnDrop(start());

    // Health through `_ping`: listed, up, exit 0.
    eventually("health lists the listener as up", WAIT, || {
        let out = cli(url, &["health", "--expect", name]);
        let up = out
            .stdout
            .lines()
            .any(|l| l.starts_with(name) && l.contains(" up "));
        (out.code == 0 && up)
            .then_some(())
            .ok_or(format!("exit {}: {}{}", out.code, out.stdout, out.stderr))
    });

    // A message is processed.
    publish(url, &["signalbox/dev/matrix/work/a", "fine message"]);
    eventually("the listener handles a message", WAIT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("fine message").then_some(()).ok_or(text)
    });

    // Two failing messages: two records that `signalbox failed` lists.
    publish(url, &["signalbox/dev/matrix/work/b", "fail one"]);
    publish(url, &["signalbox/dev/matrix/work/c", "fail two"]);
    let records = failed_records(url, 2);
    let id_of = |summary: &str| -> String {
        records
            .iter()
            .find(|r| r["envelope"]["summary"] == summary)
            .and_then(|r| r["id"].as_str())
            .unwrap_or_else(|| panic!("no record of {summary:?}: {records:?}"))
            .to_string()
    };
    let (first, second) = (id_of("fail one"), id_of("fail two"));
    for r in &records {
        assert_eq!(r["listener"], name, "{r}");
        assert_eq!(r["error"], "exit status 3: tracker unreachable", "{r}");
    }

    // The console's ingest: a message, the listener and the records.
    console_sees(url, name);

    // Acknowledge one: gone from the list.
    let out = cli(url, &["failed", "ack", &first]);
    assert_eq!(out.code, 0, "ack: {}{}", out.stdout, out.stderr);
    // Replay the other once the handler can succeed: replayed, gone.
    std::fs::write(&healed, "").expect("heal");
    let out = cli(
        url,
        &[
            "failed",
            "replay",
            "--listener",
            name,
            "--all",
            "--wait",
            "20",
        ],
    );
    assert_eq!(out.code, 0, "replay: {}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("replayed"), "{}", out.stdout);
    let left = failed_records(url, 0);
    assert!(left.is_empty(), "after ack and replay: {left:?}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(text.matches("fail two").count(), 2, "handled twice: {text}");

    // A record left open while the listener dies must stay visible.
    std::fs::remove_file(&healed).expect("unheal");
    publish(url, &["signalbox/dev/matrix/work/d", "fail three"]);
    let open = failed_records(url, 1);
    let third = open[0]["id"].as_str().expect("id").to_string();

    // SIGKILL: no goodbye, no ping answer. Health must fail within a
    // minute, through the roster and the will on the exact topic.
    listener.0.kill().expect("SIGKILL the listener");
    let _ = listener.0.wait();
    let killed = Instant::now();
    let out = eventually("health fails after the SIGKILL", DOWN_WITHIN, || {
        let out = cli(url, &["health"]);
        let down = out
            .stdout
            .lines()
            .any(|l| l.starts_with(name) && l.contains(" down "));
        (out.code == 1 && down)
            .then_some(out)
            .ok_or_else(|| String::from("not down yet"))
    });
    let took = killed.elapsed();
    eprintln!(
        "[matrix {broker}] health exit 1 {:.1} s after SIGKILL",
        took.as_secs_f64()
    );
    assert!(took < DOWN_WITHIN, "{took:?}");
    let notes = out.stderr.matches(WILDCARD_NOTE).count();
    assert_eq!(
        notes,
        usize::from(!traits.retained_to_wildcards),
        "the wildcard note, once where it applies: {}",
        out.stderr
    );

    // The dead listener's open record is still listed, by the CLI and by a
    // console started now (no ping answer: through the failure index).
    let out = cli(url, &["failed", "list", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let listed: Vec<Value> = serde_json::from_str(&out.stdout).expect("JSON");
    assert!(
        listed.iter().any(|r| r["id"] == third.as_str()),
        "a dead listener's record: {listed:?} {}",
        out.stderr
    );
    assert_eq!(
        out.stderr.matches(WILDCARD_NOTE).count(),
        usize::from(!traits.retained_to_wildcards),
        "{}",
        out.stderr
    );
    if console_acks_dead_record(url, name, &third) {
        let left = failed_records(url, 0);
        assert!(left.is_empty(), "after the console's ack: {left:?}");
    } else {
        let out = cli(url, &["failed", "ack", &third]);
        assert_eq!(out.code, 0, "ack: {}{}", out.stdout, out.stderr);
    }
    let _ = second;
}

/// `signalbox failed list --json` until it lists exactly `n` records.
fn failed_records(url: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} failure records listed"), WAIT, || {
        let out = cli(url, &["failed", "list", "--json"]);
        if out.code != 0 {
            return Err(out.stderr);
        }
        let rows: Vec<Value> =
            serde_json::from_str(&out.stdout).map_err(|e| format!("{e}: {}", out.stdout))?;
        (rows.len() == n).then_some(rows).ok_or(out.stdout)
    })
}

/// The console against this broker in a private tmux, connected; `None`
/// without tmux. The directory is its state directory.
fn console(url: &str) -> Option<(Tmux, tempfile::TempDir)> {
    if !tmux_available() {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let command = format!(
        "env SIGNALBOX_CONFIG= SIGNALBOX_STATE_DIR='{}' '{}' --broker '{url}'; echo EXITED rc=$?; sleep 30",
        dir.path().display(),
        bin("signalbox").display()
    );
    let tmux = Tmux::start(140, 36, &command).expect("tmux session starts");
    tmux.wait_for_within(&["1 Dashboard", "connected"], WAIT);
    Some((tmux, dir))
}

/// The console against this broker: a new message shows in the stream, the
/// listener in the listeners view and its two records in the failed view.
fn console_sees(url: &str, listener: &str) {
    let Some((tmux, _dir)) = console(url) else {
        return;
    };
    publish(
        url,
        &["signalbox/dev/matrix/console", "seen by the console"],
    );
    tmux.keys(&["2"]);
    tmux.wait_for_within(&["Stream ·", "seen by the console"], WAIT);
    tmux.keys(&["4"]);
    tmux.wait_for_within(&["Listeners ·", listener], WAIT);
    tmux.keys(&["5"]);
    tmux.wait_for_within(&["Failed · 2 records", listener], WAIT);
    tmux.keys(&["q"]);
    tmux.wait_for_within(&["EXITED rc=0"], WAIT);
}

/// A console started after `listener` was killed shows its open record
/// `id` (on RabbitMQ only through the listener's failure index and the
/// record's exact topic: no wildcard delivers it, no ping answers), and
/// acknowledges it. False without tmux.
fn console_acks_dead_record(url: &str, listener: &str, id: &str) -> bool {
    let Some((tmux, _dir)) = console(url) else {
        return false;
    };
    tmux.keys(&["5"]);
    tmux.wait_for_within(&["Failed · 1 records", listener, id, "fail three"], WAIT);
    tmux.keys(&["a"]);
    tmux.wait_for_within(&["Acknowledge (dismiss)"], WAIT);
    tmux.keys(&["y"]);
    tmux.wait_for_within(&["Failed · 0 records"], WAIT);
    tmux.keys(&["q"]);
    tmux.wait_for_within(&["EXITED rc=0"], WAIT);
    true
}

/// `signalbox health --expect NAME` fails for a listener never seen.
fn health_expect_never_seen(url: &str) {
    let out = cli(url, &["health", "--expect", "never-seen"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("never-seen") && l.contains("unknown")),
        "{}",
        out.stdout
    );
}

/// A listener with `--share-group` works where the broker delivers through
/// shared subscriptions, and where it does not (RabbitMQ 3.10 accepts the
/// subscription and stays silent) exits at once with one clear line
/// instead of running deaf.
fn share_group(url: &str, traits: &Traits) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("handled");
    let start = || {
        signalbox_bridge(url, &dir.path().join("state"))
            .env("SIGNALBOX_HEALTH_INTERVAL", "2")
            .args([
                "exec",
                "--name",
                "matrix-share",
                "--share-group",
                "workers",
                "--filter",
                "signalbox/dev/matrix/shared/#",
                "--",
                "sh",
                "-c",
                &format!("echo \"$SIGNALBOX_SUMMARY\" >> '{}'", log.display()),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn shared exec listener")
    };
    if traits.shared_subscriptions {
        let _listener = KillOnDrop(start());
        eventually("the shared listener handles a message", WAIT, || {
            publish(url, &["signalbox/dev/matrix/shared/job", "shared work"]);
            std::fs::read_to_string(&log)
                .ok()
                .filter(|s| s.contains("shared work"))
                .ok_or_else(|| "nothing handled yet".to_string())
        });
    } else {
        let out = signalbox_e2e::wait_with_limit(start(), RUN);
        assert_ne!(out.code, 0, "exits non-zero: {}", out.stderr);
        assert!(
            out.stderr.contains("does not support shared subscriptions")
                && out.stderr.contains("--share-group"),
            "one clear line: {}",
            out.stderr
        );
        assert_eq!(
            out.stderr
                .matches("does not support shared subscriptions")
                .count(),
            1,
            "said once: {}",
            out.stderr
        );
    }
}
