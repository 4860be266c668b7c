//! `signalbox pub` → `signalbox tail` through the embedded broker and
//! through a real mosquitto, including retained handling, streaming from
//! stdin and every bad input of the foundation issue.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use signalbox_e2e::{
    embedded_broker, mosquitto, run_with_limit, signalbox, KillOnDrop, LineReader,
};

const LIMIT: Duration = Duration::from_secs(30);

fn publish(url: &str, args: &[&str]) {
    signalbox_e2e::publish(url, args);
}

fn tail_ready(url: &str, ready_topic: &str, args: &[&str]) -> (KillOnDrop, LineReader) {
    signalbox_e2e::tail_ready(url, ready_topic, args)
}

#[test]
fn pub_to_tail_through_the_embedded_broker() {
    let broker = embedded_broker();
    let url = broker.url();
    let (_tail, lines) = tail_ready(&url, "signalbox/dev/test/ready", &["signalbox/dev/#"]);
    publish(
        &url,
        &[
            "signalbox/dev/git/kernel/commit",
            "jkeating pushed to kernel",
            "--severity",
            "warning",
        ],
    );
    let line = lines.next_line(LIMIT).expect("tail prints the envelope");
    let re_time = line.get(..12).unwrap_or_default();
    assert!(
        re_time.len() == 12 && re_time.as_bytes()[2] == b':' && re_time.as_bytes()[8] == b'.',
        "line starts with HH:MM:SS.mmm: {line}"
    );
    assert!(
        line.ends_with(" signalbox/dev/git/kernel/commit jkeating pushed to kernel"),
        "{line}"
    );
}

#[test]
fn retained_messages_are_marked_or_omitted() {
    let broker = embedded_broker();
    let url = broker.url();
    publish(
        &url,
        &[
            "--retain",
            "signalbox/dev/cron/backup/finished",
            "backup ok",
        ],
    );
    let out = run_with_limit(
        signalbox(&url).args([
            "tail",
            "--count",
            "1",
            "--timeout",
            "10",
            "signalbox/dev/cron/#",
        ]),
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("signalbox/dev/cron/backup/finished backup ok [retained]"),
        "{}",
        out.stdout
    );

    // With --no-retained the stored state is skipped and only live messages show.
    let mut child = signalbox(&url)
        .args([
            "tail",
            "--no-retained",
            "--count",
            "1",
            "--timeout",
            "20",
            "signalbox/dev/cron/#",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tail");
    let lines = LineReader::new(&mut child);
    let _guard = KillOnDrop(child);
    let mut got = None;
    for _ in 0..50 {
        publish(&url, &["signalbox/dev/cron/backup/started", "live"]);
        if let Some(line) = lines.next_line(Duration::from_millis(300)) {
            got = Some(line);
            break;
        }
    }
    let line = got.expect("a live message within 50 tries");
    assert!(
        line.ends_with("signalbox/dev/cron/backup/started live"),
        "{line}"
    );
    assert!(!line.contains("retained"), "{line}");
}

#[test]
fn tail_json_prints_envelopes_text_and_binary() {
    let broker = embedded_broker();
    let url = broker.url();
    let (_tail, lines) = tail_ready(&url, "x/ready", &["--json", "x/#"]);
    publish(
        &url,
        &["x/env", "an envelope", "--body", r#"{"nvr":"kernel-6.1"}"#],
    );
    publish(&url, &["--raw", "x/text", "plain words"]);
    let env: serde_json::Value =
        serde_json::from_str(&lines.next_line(LIMIT).expect("envelope line")).expect("json");
    assert_eq!(env["kind"], "envelope");
    assert_eq!(env["retained"], false);
    assert_eq!(env["payload"]["summary"], "an envelope");
    assert_eq!(env["payload"]["body"]["nvr"], "kernel-6.1");
    assert_eq!(env["payload"]["source"]["bridge"], "cli");
    assert_eq!(env["payload"]["v"], 1);
    let text: serde_json::Value =
        serde_json::from_str(&lines.next_line(LIMIT).expect("text line")).expect("json");
    assert_eq!(text["kind"], "text");
    assert_eq!(text["payload"], "plain words");
}

#[test]
fn pub_stdin_streams_every_line_whole_and_in_order() {
    let broker = embedded_broker();
    let url = broker.url();
    let (_tail, lines) = tail_ready(&url, "s/ready", &["--json", "s/#"]);
    let long = "L".repeat(100_000);
    let mut input = String::new();
    for i in 0..2000 {
        input.push_str(&format!("line {i}\n"));
        if i == 1000 {
            input.push('\n'); // empty lines are skipped
            input.push_str(&long);
            input.push_str("\r\n");
        }
    }
    input.push_str("last line without newline");
    let mut child = signalbox(&url)
        .args(["pub", "--stdin", "--raw", "s/lines"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pub");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = signalbox_e2e::wait_with_limit(child, LIMIT);
    assert_eq!(out.code, 0, "pub --stdin failed: {}", out.stderr);
    let mut payloads = Vec::new();
    while payloads.len() < 2002 {
        let line = lines.next_line(LIMIT).expect("every line arrives");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        payloads.push(v["payload"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(payloads[0], "line 0");
    assert_eq!(payloads[1001], long, "a 100 kB line arrives whole");
    assert_eq!(payloads[1002], "line 1001");
    assert_eq!(payloads[2000], "line 1999");
    assert_eq!(payloads[2001], "last line without newline");
    assert!(
        lines.next_line(Duration::from_millis(300)).is_none(),
        "nothing extra (empty line skipped)"
    );
}

#[test]
fn topic_per_line_feeds_many_topics_over_one_connection() {
    let broker = embedded_broker();
    let url = broker.url();
    let (_tail, lines) = tail_ready(&url, "m/ready", &["m/#"]);
    let mut child = signalbox(&url)
        .args(["pub", "--stdin", "--topic-per-line"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pub");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"m/a first message\nm/+ has a wildcard and is skipped\nm/b second message\n")
        .expect("write");
    let out = signalbox_e2e::wait_with_limit(child, LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("skipping line 2"), "{}", out.stderr);
    let a = lines.next_line(LIMIT).expect("first");
    let b = lines.next_line(LIMIT).expect("second");
    assert!(a.ends_with("m/a first message"), "{a}");
    assert!(b.ends_with("m/b second message"), "{b}");
}

#[test]
fn mosquitto_sub_receives_signalbox_envelopes() {
    let Some(m) = mosquitto("mosquitto_sub_receives_signalbox_envelopes") else {
        return;
    };
    publish(
        &m.url(),
        &[
            "--retain",
            "signalbox/dev/koji/build/complete",
            "kernel built",
            "--body",
            r#"{"nvr":"k-1"}"#,
        ],
    );
    let out = run_with_limit(
        Command::new("mosquitto_sub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &m.port.to_string(),
            "-t",
            "signalbox/#",
            "-C",
            "1",
            "-W",
            "10",
        ]),
        LIMIT,
    );
    assert_eq!(out.code, 0, "mosquitto_sub: {}", out.stderr);
    let env: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).expect("an envelope in JSON");
    assert_eq!(env["v"], 1);
    assert_eq!(env["topic"], "signalbox/dev/koji/build/complete");
    assert_eq!(env["summary"], "kernel built");
    assert_eq!(env["body"]["nvr"], "k-1");
    let time = env["time"].as_str().unwrap_or_default();
    assert!(
        time.ends_with('Z') && time.len() == 24,
        "millisecond RFC 3339 UTC: {time}"
    );
    let id = env["id"].as_str().unwrap_or_default();
    assert_eq!(id.as_bytes().get(14), Some(&b'7'), "a UUIDv7: {id}");
}

#[test]
fn signalbox_tail_shows_mosquitto_pub_text_and_binary() {
    let Some(m) = mosquitto("signalbox_tail_shows_mosquitto_pub_text_and_binary") else {
        return;
    };
    let port = m.port.to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let bin_file = dir.path().join("blob");
    std::fs::write(&bin_file, [0u8, 159, 146, 150, 255, 1, 2, 3]).expect("write blob");
    let mpub = |args: &[&str]| {
        let out = run_with_limit(
            Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port])
                .args(args),
            LIMIT,
        );
        assert_eq!(out.code, 0, "mosquitto_pub {args:?}: {}", out.stderr);
    };
    mpub(&["-r", "-t", "sensors/a/temp", "-m", "21.5 degrees"]);
    mpub(&[
        "-r",
        "-t",
        "sensors/b/blob",
        "-f",
        bin_file.to_str().unwrap_or_default(),
    ]);
    let out = run_with_limit(
        signalbox(&m.url()).args(["tail", "--count", "2", "--timeout", "10", "sensors/#"]),
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("sensors/a/temp 21.5 degrees [retained]"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("sensors/b/blob <8 bytes binary> [retained]"),
        "{}",
        out.stdout
    );

    let out = run_with_limit(
        signalbox(&m.url()).args([
            "tail",
            "--json",
            "--count",
            "2",
            "--timeout",
            "10",
            "sensors/#",
        ]),
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let blob = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["topic"] == "sensors/b/blob")
        .expect("the blob line");
    assert_eq!(blob["kind"], "binary");
    assert_eq!(blob["payload"], "AJ+Slv8BAgM=");
    assert_eq!(blob["retained"], true);
}

#[test]
fn pub_stdin_survives_a_broker_restart() {
    let Some(mut m) = mosquitto("pub_stdin_survives_a_broker_restart") else {
        return;
    };
    let url = m.url();
    let port = m.port;
    let mut child = signalbox(&url)
        .args(["pub", "--stdin", "--raw", "--timeout", "30", "r/lines"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pub");
    let mut stdin = child.stdin.take().expect("stdin");
    for i in 0..500 {
        writeln!(stdin, "before {i}").expect("write");
    }
    stdin.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(500));
    // Kill the broker and bring a new one up on the same port.
    drop(m);
    std::thread::sleep(Duration::from_millis(500));
    m = signalbox_e2e::mosquitto_on_port("pub_stdin_survives_a_broker_restart", port)
        .expect("mosquitto restarts");
    let started = Instant::now();
    let (tail, lines) = {
        let mut tail = signalbox(&m.url())
            // The 500 lines from before may come again first: the
            // publisher re-sends what the dead broker confirmed in the last
            // seconds (it may have lost them).
            .args(["tail", "--count", "1000", "--timeout", "20", "r/lines"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tail");
        let lines = LineReader::new(&mut tail);
        (KillOnDrop(tail), lines)
    };
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..500 {
        writeln!(stdin, "after {i}").expect("write");
    }
    drop(stdin);
    let out = signalbox_e2e::wait_with_limit(child, LIMIT);
    assert_eq!(out.code, 0, "pub --stdin across a restart: {}", out.stderr);
    let mut after = 0;
    while let Some(line) = lines.next_line(Duration::from_secs(5)) {
        if line.contains(" r/lines after ") {
            after += 1;
        }
        if after == 500 {
            break;
        }
    }
    assert_eq!(after, 500, "every line written after the restart arrives");
    assert!(started.elapsed() < LIMIT);
    drop(tail);
}
