//! The embedded broker and a share group's only member dying mid-stream.
//!
//! rumqttd 0.20 (the embedded broker) panicked in its router thread when
//! the last member of a shared-subscription group, on a persistent session
//! (every listener's), disconnected with messages in flight: from then on
//! the broker refused every connection while its process kept running.
//! It also forgot an emptied group's place, so messages published while the
//! group had no member never reached it. signalbox carries a patched copy
//! (vendor/rumqttd/SIGNALBOX.md); this test is the proof, against the
//! `signalbox broker` binary.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use signalbox_e2e::{
    bin, free_port, isolate, publish, run_with_limit, signalbox, signalbox_bridge, KillOnDrop,
    LineReader,
};

const LIMIT: Duration = Duration::from_secs(30);
const FILTER: &str = "signalbox/dev/share/#";

/// `signalbox broker` on a free port, once it printed its banner.
fn start_broker() -> (KillOnDrop, String) {
    let port = free_port();
    let mut cmd = std::process::Command::new(bin("signalbox"));
    isolate(&mut cmd);
    let mut child = cmd
        .args(["broker", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn signalbox broker");
    let lines = LineReader::new(&mut child);
    let child = KillOnDrop(child);
    let mut banner = Vec::new();
    loop {
        let line = lines
            .next_line(LIMIT)
            .unwrap_or_else(|| panic!("the broker printed no banner: {banner:?}"));
        let last = line.contains("Ctrl-C stops it");
        banner.push(line);
        if last {
            break;
        }
    }
    (child, format!("mqtt://127.0.0.1:{port}"))
}

/// An exec listener in share group `g` whose handler appends each message
/// to `out`, then sleeps `sleep` seconds; returns once it reports up.
fn start_member(url: &str, state: &Path, out: &Path, sleep: u32) -> KillOnDrop {
    let script = format!(
        "cat >> '{}'; echo >> '{}'; sleep {sleep}",
        out.display(),
        out.display()
    );
    let child = signalbox_bridge(url, state)
        .args([
            "exec",
            "--name",
            "sharer",
            "--share-group",
            "g",
            "--filter",
            FILTER,
        ])
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the exec listener");
    let child = KillOnDrop(child);
    wait_for(|| {
        run_with_limit(signalbox(url).args(["health", "--expect", "sharer"]), LIMIT).code == 0
    });
    child
}

/// Polls `done` every 100 ms for up to a minute.
fn wait_for(mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gave up after a minute"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How often the handler saw message `text`.
fn seen(out: &Path, text: &str) -> usize {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .matches(&format!("\"summary\":\"{text}\""))
        .count()
}

#[test]
fn the_last_member_of_a_share_group_dying_mid_stream_loses_nothing_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let out = dir.path().join("handled.txt");
    let (mut broker, url) = start_broker();

    let mut member = start_member(&url, &state, &out, 5);
    for n in 1..=5 {
        publish(&url, &["signalbox/dev/share/pkg", &format!("m{n}")]);
    }
    // m1 is in its handler (which sleeps), m2… are in flight, unacknowledged.
    wait_for(|| seen(&out, "m1") == 1);
    let status = std::process::Command::new("kill")
        .args(["-KILL", &member.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let _ = member.0.wait();

    // The broker still serves (before the patch: "refused the connection").
    for n in 6..=7 {
        publish(&url, &["signalbox/dev/share/pkg", &format!("m{n}")]);
    }
    assert!(
        broker.0.try_wait().expect("broker status").is_none(),
        "the broker process exited"
    );

    // The member comes back: what was in flight and what came meanwhile
    // all arrive (m1 again: its handler never finished).
    let _member = start_member(&url, &state, &out, 0);
    wait_for(|| (1..=7).all(|n| seen(&out, &format!("m{n}")) >= 1));
    for n in 6..=7 {
        assert_eq!(seen(&out, &format!("m{n}")), 1, "m{n} once");
    }
}
