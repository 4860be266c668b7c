//! The message history end to end: `signalbox-bridge recorder` as a real
//! process under a 100,000-message burst (nothing lost, nothing twice, a
//! graceful stop commits everything), and `signalbox history` with each
//! filter against a known data set, from --db and from the config file.

mod outbound_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use outbound_support::*;
use signalbox_bridges::history::{Query, Store, StoredMessage};
use signalbox_common::envelope::Severity;
use signalbox_common::health::HealthState;
use signalbox_e2e::{isolate, mosquitto, run_with_limit, signalbox, wait_with_limit, KillOnDrop};

/// Messages in the burst.
const BURST: usize = 100_000;

fn count(db: &std::path::Path) -> u64 {
    Store::open_reader(db).and_then(|s| s.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_keeps_every_message_of_a_burst() {
    let Some(broker) = mosquitto("the_recorder_keeps_every_message_of_a_burst") else {
        return;
    };
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("history.db");
    let mut w = watch(&url, &["signalbox/_health/recorder"]).await;
    let recorder = KillOnDrop(start(
        &url,
        &dir.path().join("state"),
        &[
            "recorder",
            "--db",
            db.to_str().expect("utf8"),
            "--keep",
            "forever",
        ],
    ));
    health(&mut w, "recorder", HealthState::Up).await;

    // 100,000 envelopes over 500 topics (packages) in 4 systems.
    let mut input = String::with_capacity(BURST * 60);
    let systems = ["git", "koji", "qa", "pkgdb"];
    for i in 0..BURST {
        input.push_str(&format!(
            "signalbox/dev/{}/pkg{}/event message {i}\n",
            systems[i % 4],
            i % 500
        ));
    }
    let started = Instant::now();
    let mut publish = signalbox(&url);
    publish
        .args(["pub", "--stdin", "--topic-per-line", "--timeout", "60"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = publish.spawn().expect("spawn pub");
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = tokio::task::spawn_blocking(move || wait_with_limit(child, Duration::from_secs(120)))
        .await
        .expect("join");
    feeder.join().expect("feeder").expect("write stdin");
    assert_eq!(out.code, 0, "pub: {}", out.stderr);
    let published = started.elapsed();

    // Every message committed, within a bounded wait.
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&db) < BURST as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = started.elapsed();
    eprintln!(
        "recorder: {BURST} messages published in {:.2} s, all stored after {:.2} s ({:.0} msg/s end to end)",
        published.as_secs_f64(),
        drained.as_secs_f64(),
        BURST as f64 / drained.as_secs_f64()
    );
    assert_eq!(count(&db), BURST as u64, "every message stored");

    // A graceful stop, then nothing more and nothing twice.
    let mut recorder = recorder;
    let pid = recorder.0.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let status = tokio::task::spawn_blocking(move || recorder.0.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "recorder exit: {status:?}");
    let store = Store::open_reader(&db).expect("open");
    assert_eq!(store.count().expect("count"), BURST as u64);
    let newest = store
        .query(&Query {
            system: Some("qa".into()),
            limit: 3,
            ..Default::default()
        })
        .expect("query");
    // The newest qa messages, oldest first. The recorder handles many
    // messages at once, so messages of the same millisecond may be stored
    // in another order than they arrived: check by time, not by number.
    let numbers: Vec<u64> = newest
        .messages
        .iter()
        .filter_map(|m| m.summary.strip_prefix("message ")?.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 3, "{:?}", newest.messages);
    assert!(
        numbers.iter().all(|n| n % 4 == 2 && *n >= 99_950),
        "qa messages from the end of the burst: {numbers:?}"
    );
    assert!(
        newest.messages.windows(2).all(|w| w[0].time <= w[1].time),
        "oldest first"
    );
    assert!(newest.truncated);
    let one = store
        .query(&Query {
            topic: Some("signalbox/dev/git/pkg0/event".into()),
            limit: 1000,
            ..Default::default()
        })
        .expect("query");
    assert_eq!(one.messages.len(), BURST / 500, "one topic's messages");
    assert!(one
        .messages
        .iter()
        .all(|m| m.system.as_deref() == Some("git") && m.payload.starts_with(b"{")));
}

/// The known data set: 12 messages, one per 10 minutes, ending 5 minutes
/// ago.
fn dataset(now: DateTime<Utc>) -> Vec<StoredMessage> {
    let rows = [
        (
            "signalbox/prod/git/kernel/commit",
            Some("jkeating"),
            Severity::Info,
            "jkeating pushed to kernel",
        ),
        (
            "signalbox/prod/koji/build/kernel/complete",
            Some("jkeating"),
            Severity::Info,
            "build kernel-6.1 completed",
        ),
        (
            "signalbox/prod/qa/kernel/result",
            None,
            Severity::Error,
            "QA of kernel-6.1: FAILED rpmlint",
        ),
        (
            "signalbox/prod/git/bash/commit",
            Some("skvidal"),
            Severity::Info,
            "skvidal pushed to bash",
        ),
        (
            "signalbox/prod/koji/build/bash/complete",
            Some("skvidal"),
            Severity::Info,
            "build bash-5.2 completed",
        ),
        (
            "signalbox/prod/cron/backup/finished",
            None,
            Severity::Warning,
            "backup finished in 7.9 s (exit 1)",
        ),
        (
            "signalbox/prod/pkgdb/kernel/owner",
            Some("admin"),
            Severity::Info,
            "kernel now owned by Seth Vidal",
        ),
        (
            "signalbox/prod/git/glibc/commit",
            Some("jkeating"),
            Severity::Debug,
            "jkeating pushed to glibc",
        ),
        (
            "signalbox/dev/git/kernel/commit",
            Some("tester"),
            Severity::Info,
            "tester pushed to kernel (dev)",
        ),
        ("sensors/rack-12/temp", None, Severity::Info, "21.5"),
        (
            "signalbox/prod/mail/bugzilla/received",
            None,
            Severity::Info,
            "[Bug 4205] openssl crashes: 100%_cpu",
        ),
        (
            "signalbox/prod/koji/build/glibc/failed",
            Some("jkeating"),
            Severity::Error,
            "build glibc-2.40 failed",
        ),
    ];
    rows.iter()
        .enumerate()
        .map(|(i, (topic, agent, severity, summary))| StoredMessage {
            seq: 0,
            id: format!("m{i:02}"),
            time: now - chrono::Duration::minutes(5 + 10 * (11 - i as i64)),
            topic: topic.to_string(),
            system: signalbox_common::topic::parse("signalbox", topic).map(|p| p.system),
            agent: agent.map(str::to_string),
            severity: *severity,
            summary: summary.to_string(),
            payload: if i == 9 {
                vec![0xff, 0x00]
            } else {
                summary.as_bytes().to_vec()
            },
        })
        .collect()
}

fn history(db: &std::path::Path, args: &[&str]) -> (Vec<String>, String) {
    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.arg("history")
        .arg("--db")
        .arg(db)
        .args(args)
        .arg("--json");
    let out = run_with_limit(&mut cmd, WAIT);
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    let ids = out
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["id"].as_str().expect("id").to_string()
        })
        .collect();
    (ids, out.stdout)
}

#[test]
fn each_history_filter_finds_what_it_should() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("history.db");
    let now = Utc::now();
    Store::open_writer(&db)
        .expect("open")
        .insert(&dataset(now))
        .expect("insert");
    let ids = |args: &[&str]| history(&db, args).0;
    let all: Vec<String> = (0..12).map(|i| format!("m{i:02}")).collect();
    assert_eq!(ids(&[]), all, "everything, oldest first");
    assert_eq!(ids(&["--system", "koji"]), ["m01", "m04", "m11"]);
    assert_eq!(ids(&["--agent", "jkeating"]), ["m00", "m01", "m07", "m11"]);
    assert_eq!(
        ids(&["--topic", "signalbox/prod/git/#"]),
        ["m00", "m03", "m07"]
    );
    assert_eq!(
        ids(&["--topic", "signalbox/+/git/kernel/commit"]),
        ["m00", "m08"]
    );
    assert_eq!(
        ids(&["--topic", "+/+/+/kernel/#"]),
        ["m00", "m02", "m06", "m08"]
    );
    assert_eq!(ids(&["--topic", "sensors/rack-12/temp"]), ["m09"]);
    assert_eq!(
        ids(&["--grep", "KERNEL"]),
        ["m00", "m01", "m02", "m06", "m08"]
    );
    assert_eq!(ids(&["--grep", "100%_"]), ["m10"], "% and _ are literal");
    assert_eq!(ids(&["--severity", "warning"]), ["m02", "m05", "m11"]);
    assert_eq!(ids(&["--since", "30m"]), ["m09", "m10", "m11"]);
    assert_eq!(ids(&["--until", "100m"]), ["m00", "m01"]);
    let since = (now - chrono::Duration::minutes(60)).to_rfc3339();
    let until = (now - chrono::Duration::minutes(30)).to_rfc3339();
    assert_eq!(
        ids(&["--since", &since, "--until", &until]),
        ["m06", "m07", "m08"]
    );
    assert_eq!(ids(&["--limit", "2"]), ["m10", "m11"], "the newest two");
    assert_eq!(
        ids(&["--grep", "kernel", "--agent", "jkeating", "--system", "git"]),
        ["m00"]
    );
    assert_eq!(ids(&["--system", "nothing"]), Vec::<String>::new());

    // --json carries the payload: text, or base64 for binary.
    let (_, json) = history(&db, &["--topic", "sensors/#"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("json");
    assert_eq!(v["kind"], "binary");
    assert_eq!(v["payload"], "/wA=");
    assert_eq!(v["system"], serde_json::Value::Null);

    // The text form: one line per message.
    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.args(["history", "--db"])
        .arg(&db)
        .args(["--system", "qa"]);
    let out = run_with_limit(&mut cmd, WAIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 1);
    assert!(
        out.stdout
            .contains(" signalbox/prod/qa/kernel/result QA of kernel-6.1: FAILED rpmlint"),
        "{}",
        out.stdout
    );
}

#[test]
fn history_finds_its_database_through_the_config_file_and_explains_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("elsewhere.db");
    Store::open_writer(&db)
        .expect("open")
        .insert(&dataset(Utc::now()))
        .expect("insert");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[history]\ndb = {:?}\n", db.to_str().expect("utf8")),
    )
    .expect("config");
    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.env("SIGNALBOX_CONFIG", &config)
        .args(["history", "--agent", "skvidal"]);
    let out = run_with_limit(&mut cmd, WAIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);

    // Without a database: exit 1, one line saying what to do.
    let mut cmd = Command::new(signalbox_e2e::bin("signalbox"));
    isolate(&mut cmd);
    cmd.env("SIGNALBOX_STATE_DIR", dir.path().join("empty-state"))
        .arg("history");
    let out = run_with_limit(&mut cmd, WAIT);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("no history database"), "{}", out.stderr);

    // Bad flags and a bad [history] table: exit 2, one line.
    for (args, needle) in [
        (
            vec!["history", "--since", "last tuesday"],
            "--since: invalid time",
        ),
        (vec!["history", "--topic", "a/#/b"], "--topic"),
    ] {
        let mut cmd = signalbox("mqtt://127.0.0.1:1");
        cmd.args(&args);
        let out = run_with_limit(&mut cmd, WAIT);
        assert_config_error(&out, needle);
    }
    std::fs::write(&config, "[history]\nretention = \"1d\"\n").expect("config");
    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.env("SIGNALBOX_CONFIG", &config).arg("history");
    assert_config_error(&run_with_limit(&mut cmd, WAIT), "unknown field `retention`");
}

/// The recorder killed with SIGKILL in the middle of a stream loses
/// nothing: a message is acknowledged only once its row is committed, so
/// what was in hand comes again after the restart, and a row stored twice
/// is skipped by its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_killed_mid_stream_loses_nothing() {
    let Some(broker) = mosquitto("a_recorder_killed_mid_stream_loses_nothing") else {
        return;
    };
    const N: usize = 20_000;
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("history.db");
    let state = dir.path().join("state");
    let args = [
        "recorder",
        "--db",
        db.to_str().expect("utf8"),
        "--keep",
        "forever",
    ];
    let mut w = watch(&url, &["signalbox/_health/recorder"]).await;
    let recorder = KillOnDrop(start(&url, &state, &args));
    health(&mut w, "recorder", HealthState::Up).await;

    let mut publish = signalbox(&url);
    publish
        .args([
            "pub",
            "--stdin",
            "--timeout",
            "60",
            "signalbox/dev/crash/event",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = publish.spawn().expect("spawn pub");
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        for i in 0..N {
            writeln!(stdin, "message {i}")?;
            if i % 1_000 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok::<(), std::io::Error>(())
    });
    // Kill it once it has stored some, in the middle of the stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&db) < 2_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut recorder = recorder;
    let _ = recorder.0.kill();
    let _ = recorder.0.wait();
    let at_kill = count(&db);
    let out = tokio::task::spawn_blocking(move || wait_with_limit(child, Duration::from_secs(120)))
        .await
        .expect("join");
    feeder.join().expect("feeder").expect("write stdin");
    assert_eq!(out.code, 0, "pub: {}", out.stderr);

    let _again = KillOnDrop(start(&url, &state, &args));
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&db) < N as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A moment more: nothing beyond N may arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored = count(&db);
    eprintln!("recorder SIGKILL: {at_kill} stored at the kill, {stored} of {N} after the restart");
    assert!(
        at_kill < N as u64,
        "killed in the middle ({at_kill} stored)"
    );
    assert_eq!(stored, N as u64, "every message stored once");
}
