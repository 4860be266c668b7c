//! `signalbox record` → `signalbox replay` against the embedded broker:
//! every payload (envelopes, text, binary, empty) comes back byte for
//! byte, retained ones retained, in order, under a new prefix when asked;
//! `--dry-run` publishes nothing; a bad file names its line.

mod outbound_support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use outbound_support::*;
use signalbox_common::envelope::Envelope;
use signalbox_common::mqtt::{Publish, Qos};
use signalbox_e2e::{embedded_broker, run_with_limit, signalbox, wait_with_limit};

/// The messages recorded: (topic, payload, retain). The retained one is
/// published before the recording starts, so it reaches the recorder from
/// the broker's retained store (flagged retained); the others live.
fn messages() -> Vec<(String, Vec<u8>, bool)> {
    let envelope = Envelope::builder(
        "signalbox/dev/git/kernel/commit",
        "jkeating pushed to kernel",
    )
    .agent("jkeating")
    .build()
    .expect("envelope");
    vec![
        (
            "signalbox/dev/cron/backup/finished".into(),
            b"backup ok".to_vec(),
            true,
        ),
        (
            "signalbox/dev/git/kernel/commit".into(),
            envelope.to_vec(),
            false,
        ),
        (
            "signalbox/dev/sensor/raw".into(),
            vec![0xff, 0x00, 0xfe, 0x0a, 0x0d],
            false,
        ),
        (
            "signalbox/dev/app/log/line".into(),
            "naïve\ttext \"quoted\"\r\n".as_bytes().to_vec(),
            false,
        ),
        ("signalbox/dev/empty".into(), Vec::new(), false),
        (
            "signalbox/dev/json/not-envelope".into(),
            br#"{"temp": 21.5}"#.to_vec(),
            false,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_then_replay_is_byte_identical() {
    let broker = embedded_broker();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rec.jsonl");
    let sent = messages();
    let publisher = client(&url).await;
    let publish = |(topic, payload, retain): &(String, Vec<u8>, bool)| {
        Publish::new(topic.clone(), payload.clone(), Qos::AtLeastOnce, *retain)
    };
    publisher
        .publish_confirmed(publish(&sent[0]), WAIT)
        .await
        .expect("publish the retained message");

    let mut record = signalbox(&url);
    record
        .arg("record")
        .arg(&file)
        .args([
            "signalbox/dev/#",
            "--count",
            &sent.len().to_string(),
            "--timeout",
            "20",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = record.spawn().expect("spawn record");
    // Wait until it is subscribed (it says so on stderr).
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    tokio::task::block_in_place(|| stderr.read_line(&mut line)).expect("read");
    assert!(line.starts_with("recording "), "{line}");

    for m in &sent[1..] {
        publisher
            .publish_confirmed(publish(m), WAIT)
            .await
            .expect("publish");
    }
    let out = tokio::task::spawn_blocking(move || {
        let out = wait_with_limit(child, WAIT);
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        (out, rest)
    })
    .await
    .expect("join");
    assert_eq!(out.0.code, 0, "record: {}", out.1);
    let text = std::fs::read_to_string(&file).expect("recording");
    assert_eq!(text.lines().count(), sent.len(), "{text}");
    assert!(
        text.contains(r#""payload_base64":"/wD+Cg0=""#),
        "binary as base64: {text}"
    );
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.contains(r#""retain":true"#)),
        "the retained message first, flagged: {text}"
    );

    // Replay under another prefix, watched by a fresh subscriber.
    let mut w = watch(&url, &["replayed/#"]).await;
    let out = signalbox_cli(
        &url,
        &[
            "replay",
            file.to_str().expect("utf8"),
            "--to-topic-prefix",
            "replayed",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "replay: {}", out.stderr);
    assert!(out.stderr.contains("replayed 6 messages"), "{}", out.stderr);
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let m = tokio::time::timeout(WAIT, w.recv())
            .await
            .expect("a replayed message")
            .expect("open");
        got.push((m.topic, m.payload));
    }
    let expected: Vec<(String, Bytes)> = sent
        .iter()
        .map(|(t, p, _)| {
            (
                t.replacen("signalbox/", "replayed/", 1),
                Bytes::from(p.clone()),
            )
        })
        .collect();
    assert_eq!(got, expected, "same bytes, same order");

    // The retained message was replayed retained: a new subscriber gets it.
    let mut late = watch(&url, &["replayed/dev/cron/backup/finished"]).await;
    let m = tokio::time::timeout(WAIT, late.recv())
        .await
        .expect("the retained message")
        .expect("open");
    assert!(m.retain);
    assert_eq!(&m.payload[..], b"backup ok");

    // A replay on the original topics carries the original envelope id, so
    // a listener that saw the message once skips it.
    let replayed = Envelope::from_slice(&got[1].1).expect("envelope");
    let original = Envelope::from_slice(&sent[1].1).expect("envelope");
    assert_eq!(replayed.id, original.id);
}

#[test]
fn dry_run_publishes_nothing_and_bad_files_name_their_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rec.jsonl");
    std::fs::write(
        &file,
        "{\"topic\":\"signalbox/dev/a\",\"payload\":\"x\",\"retain\":true,\"qos\":1}\n\
         {\"topic\":\"signalbox/dev/b\",\"payload_base64\":\"/wA=\",\"qos\":0}\n",
    )
    .expect("write");
    // No broker listens on port 1: a dry run must not need one.
    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.arg("replay")
        .arg(&file)
        .args(["--dry-run", "--to-topic-prefix", "sandbox/x"]);
    let out = run_with_limit(&mut cmd, Duration::from_secs(20));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "sandbox/x/dev/a (1 bytes, qos 1 retain)\nsandbox/x/dev/b (2 bytes, qos 0)\n"
    );

    std::fs::write(&file, "{\"topic\":\"a\",\"payload\":\"x\"}\nnot json\n").expect("write");
    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.arg("replay").arg(&file);
    let out = run_with_limit(&mut cmd, Duration::from_secs(20));
    assert_config_error(&out, "line 2:");

    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.arg("replay").arg(&file).args(["--rate", "0"]);
    assert_config_error(&run_with_limit(&mut cmd, Duration::from_secs(20)), "--rate");
}
