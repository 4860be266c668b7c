//! The console end to end: the real `signalbox --embedded` in a detached
//! tmux session (a private server socket), driven with send-keys and read
//! with capture-pane, against real messages published with `signalbox pub`.
//!
//! Skips (loudly) when tmux is missing, unless SIGNALBOX_REQUIRE_TMUX=1.

use std::process::Command;

use signalbox_e2e::tmux::{tmux_available, Tmux};

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");

fn publish(broker: &str, args: &[&str]) {
    let out = Command::new(BIN)
        .args(["--broker", broker, "pub"])
        .args(args)
        .env("SIGNALBOX_CONFIG", "")
        .output()
        .expect("signalbox pub runs");
    assert!(
        out.status.success(),
        "pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn console_shows_views_acknowledges_and_exits_cleanly() {
    if !tmux_available() {
        return;
    }
    let command = format!("'{BIN}' --embedded; echo EXITED rc=$?; sleep 60");
    let tmux = Tmux::start(120, 32, &command).expect("tmux session starts");
    let screen = tmux.wait_for(&["1 Dashboard", "(embedded)", "connected"]);
    let url = screen
        .split_whitespace()
        .find(|w| w.starts_with("mqtt://127.0.0.1:"))
        .expect("the header names the broker")
        .to_string();

    publish(
        &url,
        &[
            "--severity",
            "error",
            "signalbox/dev/koji/build/complete",
            "kernel-6.1 build FAILED",
        ],
    );
    publish(
        &url,
        &[
            "signalbox/dev/git/kernel/commit",
            "jkeating pushed to kernel",
        ],
    );
    let health = r#"{"listener":"mail-notify","state":"up","host":"bus01","pid":1,"version":"0.1.0","started":"2026-11-24T18:00:00.000Z","last_seen":"2026-11-24T19:03:10.004Z","interval_s":10,"counters":{"received":12,"processed":11,"failed":1,"replayed":0,"duplicates":0},"last_error":"smtp: connection refused"}"#;
    publish(
        &url,
        &["--raw", "--retain", "signalbox/_health/mail-notify", health],
    );
    let id = "0193a0b0-0000-7000-8000-000000000001";
    let record = format!(
        r#"{{"listener":"mail-notify","id":"{id}","topic":"signalbox/dev/git/kernel/commit","payload":"hello","payload_base64":false,"error":"smtp: connection refused","attempts":1,"first_failed":"2026-11-24T19:03:02.410Z","last_failed":"2026-11-24T19:03:02.410Z"}}"#
    );
    publish(
        &url,
        &[
            "--raw",
            "--retain",
            &format!("signalbox/_failed/mail-notify/{id}"),
            &record,
        ],
    );

    tmux.wait_for(&["kernel-6.1 build FAILED", "1 failed:"]);
    tmux.keys(&["2"]);
    tmux.wait_for(&[
        "Stream ·",
        "signalbox/dev/git/kernel/commit",
        "jkeating pushed to kernel",
    ]);
    // Filter, then the detail of the one message left.
    tmux.keys(&["/"]);
    tmux.keys(&["koji", "Enter"]);
    tmux.wait_for(&["filter: koji", "kernel-6.1 build FAILED"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["\"severity\": \"error\"", "esc close"]);
    tmux.keys(&["Escape"]);
    tmux.keys(&["4"]);
    tmux.wait_for(&["Listeners ·", "mail-notify", "smtp: connection refused"]);
    tmux.keys(&["5"]);
    tmux.wait_for(&["Failed · 1 records", "mail-notify"]);
    // Acknowledge: confirm, and the record disappears through the broker.
    tmux.keys(&["a"]);
    tmux.wait_for(&["Acknowledge (dismiss) mail-notify/"]);
    tmux.keys(&["y"]);
    tmux.wait_for(&["Failed · 0 records"]);
    tmux.keys(&["1"]);
    tmux.wait_for(&["Connection", "Newest events"]);
    tmux.keys(&["q"]);
    let screen = tmux.wait_for(&["EXITED rc=0"]);
    assert!(
        !screen.contains("Newest events"),
        "the terminal left the console's screen:\n{screen}"
    );
}
