//! A share group's member dying mid-stream, on the embedded broker and on
//! mosquitto; and members of one group side by side.
//!
//! rumqttd 0.20 (the embedded broker) panicked in its router thread when
//! the last member of a shared-subscription group, on a persistent session
//! (every listener's), disconnected with messages in flight: from then on
//! the broker refused every connection while its process kept running.
//! It also forgot an emptied group's place, so messages published while the
//! group had no member never reached it. signalbox carries a patched copy
//! (vendor/rumqttd/SIGNALBOX.md); the first test is the proof, against the
//! `signalbox broker` binary.
//!
//! On mosquitto, a member used to take a new client id at every start, so
//! what was in flight to a killed member (and what mosquitto queued for its
//! session afterwards) stayed in an abandoned session: a member now takes
//! an instance slot in its state directory and with it a stable client id.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use signalbox_e2e::{
    free_port, mosquitto, publish, run_with_limit, signalbox, signalbox_bridge,
    start_signalbox_broker, KillOnDrop,
};

const LIMIT: Duration = Duration::from_secs(30);
const FILTER: &str = "signalbox/dev/share/#";

/// `signalbox broker` on a free port, once it printed its banner.
fn start_broker() -> (KillOnDrop, String) {
    let port = free_port();
    let (child, _banner) = start_signalbox_broker(&["--listen", &format!("127.0.0.1:{port}")]);
    (child, format!("mqtt://127.0.0.1:{port}"))
}

/// An exec listener in share group `g` whose handler appends each message
/// (and its listener's pid) to `out`, then sleeps `sleep` seconds; returns
/// once it reports up.
fn start_member(url: &str, state: &Path, out: &Path, sleep: u32) -> KillOnDrop {
    let script = format!(
        "cat >> '{o}'; echo \" by $PPID\" >> '{o}'; sleep {sleep}",
        o = out.display()
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
    let (mut broker, url) = start_broker();
    member_killed_and_back(&url);
    assert!(
        broker.0.try_wait().expect("broker status").is_none(),
        "the broker process exited"
    );
}

#[test]
fn on_mosquitto_a_member_killed_mid_stream_gets_its_messages_back_when_it_returns() {
    let Some(m) = mosquitto("share_group_killed") else {
        return;
    };
    member_killed_and_back(&m.url());
}

#[test]
fn members_sharing_a_state_directory_each_get_their_own_session() {
    let Some(m) = mosquitto("share_group_two") else {
        return;
    };
    let url = m.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let out = dir.path().join("handled.txt");
    let a = start_member(&url, &state, &out, 0);
    let b = start_member(&url, &state, &out, 0);
    for n in 1..=20 {
        publish(&url, &["signalbox/dev/share/pkg", &format!("m{n}")]);
    }
    wait_for(|| (1..=20).all(|n| seen(&out, &format!("m{n}")) >= 1));
    let text = std::fs::read_to_string(&out).expect("handled");
    // With one client id the two would take turns throwing each other off
    // the broker; with their own, the group splits the work between them.
    for member in [&a, &b] {
        let by = format!(" by {}", member.0.id());
        assert!(
            text.contains(&by),
            "member {} handled nothing: {text}",
            member.0.id()
        );
    }
    for n in 1..=20 {
        assert_eq!(seen(&out, &format!("m{n}")), 1, "m{n} once");
    }
}

/// The only member of group `g` is killed with messages in flight, more
/// are published while it is gone, and it comes back with the same state
/// directory: every message is handled (m1 again: its handler never
/// finished), the later ones exactly once, and the broker keeps serving.
fn member_killed_and_back(url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let out = dir.path().join("handled.txt");

    let mut member = start_member(url, &state, &out, 5);
    for n in 1..=5 {
        publish(url, &["signalbox/dev/share/pkg", &format!("m{n}")]);
    }
    // m1 is in its handler (which sleeps), m2… are in flight, unacknowledged.
    wait_for(|| seen(&out, "m1") == 1);
    member.0.kill().expect("SIGKILL the member");
    let _ = member.0.wait();

    // The broker still serves (the embedded one before its patch: "refused
    // the connection").
    for n in 6..=7 {
        publish(url, &["signalbox/dev/share/pkg", &format!("m{n}")]);
    }

    let _member = start_member(url, &state, &out, 0);
    wait_for(|| (1..=7).all(|n| seen(&out, &format!("m{n}")) >= 1));
    for n in 6..=7 {
        assert_eq!(seen(&out, &format!("m{n}")), 1, "m{n} once");
    }
}
