//! Every bad input gets one clear line on stderr and a documented exit code
//! (2 usage/configuration, 1 runtime), never a panic or a hang.

mod outbound_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use signalbox_common::envelope::Envelope;
use signalbox_common::mqtt::{Connection, Publish, Qos};
use signalbox_e2e::{
    embedded_broker, free_port, mosquitto, run_with_limit, signalbox, wait_with_limit, Finished,
    KillOnDrop, LineReader,
};

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

// ---------------------------------------------------------------------------
// Edge payloads and topics end to end (issue 10, "Bad input").

/// `depth` nested arrays around `inner`.
fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

/// The deepest envelope serde_json reads back: its body is nested so that
/// the whole document has 127 levels.
fn deepest_envelope(topic: &str) -> Envelope {
    let body: serde_json::Value = serde_json::from_str(&nested(126, "1")).expect("126 levels");
    let e = Envelope::builder(topic, "the deepest envelope")
        .body(body)
        .build()
        .expect("envelope");
    Envelope::from_slice(&e.to_vec()).expect("reads back")
}

/// The payloads every tool must survive, by name.
fn edge_payloads(topic: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", Vec::new()),
        ("invalid-utf8", vec![0xff, 0xfe, 0x00, 0x80]),
        ("nested-100000", nested(100_000, "").into_bytes()),
        (
            "array-1000000",
            format!("[{}0]", "0,".repeat(999_999)).into_bytes(),
        ),
        ("deepest-envelope", deepest_envelope(topic).to_vec()),
    ]
}

/// Starts `signalbox tail --json FILTER` and waits until it is subscribed
/// (it prints the retained marker published on `ready`).
fn tail_json(url: &str, ready: &str, filter: &str) -> (KillOnDrop, LineReader) {
    let out = run_with_limit(
        signalbox(url).args(["pub", "--retain", ready, "ready"]),
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut child = signalbox(url)
        .args(["tail", "--json", filter, ready])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tail");
    let lines = LineReader::new(&mut child);
    let first = lines
        .next_line(LIMIT)
        .expect("tail prints the ready marker");
    assert!(first.contains(ready), "{first}");
    (KillOnDrop(child), lines)
}

async fn connect(url: &str) -> Connection {
    outbound_support::client(url).await
}

async fn publish_all(url: &str, payloads: &[(&str, Vec<u8>)], topic_of: impl Fn(&str) -> String) {
    let c = connect(url).await;
    for (name, payload) in payloads {
        c.publish_confirmed(
            Publish::new(topic_of(name), payload.clone(), Qos::AtLeastOnce, false),
            LIMIT,
        )
        .await
        .unwrap_or_else(|e| panic!("publish {name}: {e}"));
    }
    c.disconnect().await;
}

/// What `tail --json` printed for each edge payload: kind and payload.
fn check_tail_lines(lines: &LineReader, topic: &str) {
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 5 {
        let line = lines
            .next_line(LIMIT)
            .unwrap_or_else(|| panic!("tail printed only {:?}", seen.keys()));
        // The deepest envelope, embedded in tail's own object, is one level
        // deeper than serde_json reads: look at its kind without parsing.
        if line.contains("\"the deepest envelope\"") {
            assert!(line.contains("\"kind\":\"envelope\""), "{}", &line[..200]);
            seen.insert("deepest-envelope".to_string(), String::new());
            continue;
        }
        let doc: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
        let name = doc["topic"]
            .as_str()
            .and_then(|t| t.strip_prefix(&format!("{topic}/")))
            .expect("topic")
            .to_string();
        let kind = doc["kind"].as_str().unwrap_or_default();
        match name.as_str() {
            "empty" => assert_eq!((kind, &doc["payload"]), ("text", &serde_json::json!(""))),
            "invalid-utf8" => {
                assert_eq!(
                    (kind, &doc["payload"]),
                    ("binary", &serde_json::json!("//4AgA=="))
                )
            }
            "nested-100000" => {
                assert_eq!(kind, "text", "too deep for JSON: shown as text");
                assert_eq!(doc["payload"].as_str().map(str::len), Some(200_000));
            }
            "array-1000000" => {
                assert_eq!(kind, "json");
                assert_eq!(doc["payload"].as_array().map(Vec::len), Some(1_000_000));
            }
            other => panic!("unexpected topic {other}"),
        }
        seen.insert(name, kind.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_payloads_reach_tail_intact_through_the_embedded_broker() {
    let broker = embedded_broker();
    let url = broker.url();
    let topic = "signalbox/dev/edge/embedded";
    let (_tail, lines) = tokio::task::block_in_place(|| {
        tail_json(&url, "signalbox/dev/edge/ready", &format!("{topic}/#"))
    });
    publish_all(&url, &edge_payloads(topic), |n| format!("{topic}/{n}")).await;
    tokio::task::block_in_place(|| check_tail_lines(&lines, topic));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_payloads_reach_tail_intact_through_mosquitto() {
    let Some(broker) = mosquitto("edge_payloads_reach_tail_intact_through_mosquitto") else {
        return;
    };
    let url = broker.url();
    let topic = "signalbox/dev/edge/mosquitto";
    let (_tail, lines) = tokio::task::block_in_place(|| {
        tail_json(&url, "signalbox/dev/edge/ready", &format!("{topic}/#"))
    });
    publish_all(&url, &edge_payloads(topic), |n| format!("{topic}/{n}")).await;
    tokio::task::block_in_place(|| check_tail_lines(&lines, topic));
}

/// A topic of exactly 65,535 bytes (the MQTT maximum) in 101 levels.
fn longest_topic() -> String {
    let head = "signalbox/dev/long/".to_string() + &"a/".repeat(97);
    let topic = head.clone() + &"b".repeat(65_535 - head.len());
    assert_eq!(topic.len(), 65_535);
    topic
}

fn check_longest_topic(url: &str) {
    let topic = longest_topic();
    let (_tail, lines) = tail_json(url, "signalbox/dev/long-ready", "signalbox/dev/long/#");
    let out = run_with_limit(signalbox(url).args(["pub", &topic, "longest topic"]), LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = lines.next_line(LIMIT).expect("tail prints the message");
    let doc: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(doc["topic"].as_str(), Some(topic.as_str()));
    assert_eq!(doc["payload"]["summary"], "longest topic");
    // One byte more: a usage error before any connection.
    let out = run_with_limit(
        signalbox(url).args(["pub", &format!("{topic}b"), "too long"]),
        LIMIT,
    );
    assert_one_line_error(
        &out,
        2,
        "topic is 65536 bytes long; MQTT allows at most 65535",
    );
    let out = run_with_limit(signalbox(url).args(["tail", &format!("{topic}/#")]), LIMIT);
    assert_one_line_error(&out, 2, "MQTT allows at most 65535");
}

#[test]
fn a_topic_of_65535_bytes_works_and_one_byte_more_is_a_usage_error() {
    let broker = embedded_broker();
    check_longest_topic(&broker.url());
    if let Some(m) = mosquitto("a_topic_of_65535_bytes_works_and_one_byte_more_is_a_usage_error") {
        check_longest_topic(&m.url());
    }
}

/// Sends CONNECT, then a PUBLISH whose fixed header declares the MQTT
/// maximum remaining length (268,435,455 bytes, "256 MB"), followed by only
/// 1 KiB. Returns whether the broker closed the connection within `limit`.
fn declare_256_mb(port: u16, limit: Duration) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(limit)).expect("timeout");
    let id = b"declares-256mb";
    let mut connect = b"\x00\x04MQTT\x04\x02\x00\x3c".to_vec();
    connect.extend_from_slice(&(id.len() as u16).to_be_bytes());
    connect.extend_from_slice(id);
    s.write_all(&[0x10, connect.len() as u8]).expect("write");
    s.write_all(&connect).expect("write");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "accepted");
    let mut publish = vec![0x30, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x03, b'a', b'/', b'b'];
    publish.extend(std::iter::repeat_n(b'x', 1024));
    // The broker may close while we write.
    let _ = s.write_all(&publish);
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn a_packet_declaring_256_mb_is_refused_and_the_broker_keeps_serving() {
    let broker = embedded_broker();
    // The embedded broker caps payloads at 16 MiB: it drops the connection
    // as soon as it reads the header.
    let started = Instant::now();
    assert!(
        declare_256_mb(broker.addr().port(), Duration::from_secs(5)),
        "the embedded broker closes the connection"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let (_tail, lines) = tail_json(
        &broker.url(),
        "signalbox/dev/after-ready",
        "signalbox/dev/after/#",
    );
    let out = run_with_limit(
        signalbox(&broker.url()).args(["pub", "signalbox/dev/after/x", "still serving"]),
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(lines
        .next_line(LIMIT)
        .is_some_and(|l| l.contains("still serving")));

    // mosquitto (message_size_limit 0 = the protocol maximum) waits for
    // the rest of the packet; the sender gives up, and it serves others.
    if let Some(m) = mosquitto("a_packet_declaring_256_mb_is_refused_and_the_broker_keeps_serving")
    {
        let _ = declare_256_mb(m.port, Duration::from_secs(1));
        let (_tail, lines) = tail_json(
            &m.url(),
            "signalbox/dev/after-ready",
            "signalbox/dev/after/#",
        );
        let out = run_with_limit(
            signalbox(&m.url()).args(["pub", "signalbox/dev/after/x", "still serving"]),
            LIMIT,
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(lines
            .next_line(LIMIT)
            .is_some_and(|l| l.contains("still serving")));
    }
}

#[test]
fn pub_of_a_message_above_the_packet_limit_is_a_clear_error() {
    // 64 MiB + 1 byte of text on one line: above what the client sends
    // (mqtt::MAX_PACKET_SIZE); refused before any broker is contacted.
    let broker = embedded_broker();
    let mut child = signalbox(&broker.url())
        .args(["pub", "--stdin", "--raw", "signalbox/dev/big/x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pub");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            let _ = stdin.write_all(&chunk);
        }
        let _ = stdin.write_all(b"x\nsmall line\n");
    });
    let out = signalbox_e2e::wait_with_limit(child, LIMIT);
    let _ = writer.join();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("line 1: message of 67108865 bytes is larger than the 67108864 bytes"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// A message the broker answers by closing the connection (17 MB to the
/// embedded broker, whose limit is 16 MiB) is given up after three quick
/// drops with an error that says so, instead of being resent until the
/// timeout in a reconnect storm.
#[test]
fn a_message_the_broker_closes_the_connection_for_is_given_up_clearly() {
    let broker = embedded_broker();
    let mut child = signalbox(&broker.url())
        .args(["pub", "--stdin", "--raw", "--timeout", "60", "big/one"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pub");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let line = vec![b'x'; 17 * 1024 * 1024];
        let _ = stdin.write_all(&line);
        let _ = stdin.write_all(b"\n");
    });
    let started = Instant::now();
    let out = wait_with_limit(child, Duration::from_secs(60));
    let _ = writer.join();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("closed the connection each time"),
        "says why: {}",
        out.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "given up long before the timeout: {:?}",
        started.elapsed()
    );
    let reconnects = out.stderr.matches("connection lost").count();
    assert!(
        reconnects <= 5,
        "no reconnect storm: {reconnects} reconnects\n{}",
        out.stderr
    );
}
