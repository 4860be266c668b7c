//! The Stream view paging back into the history database, end to end: a
//! database written by the real history `Store` (what the recorder uses)
//! in the console's state directory, the real `signalbox --embedded` in a
//! detached tmux session, two of the stored messages also published live
//! (the same envelopes, so the same ids); `H` pages back until the database
//! has nothing older, and the screen shows every stored message once, in
//! order, with the live copies below the separator only.
//!
//! Bounded: the console runs under `timeout --foreground 120` (a
//! foreground process group, so that it can read the terminal), every wait
//! gives up after 15 s. Skips (loudly) when tmux is missing, unless
//! SIGNALBOX_REQUIRE_TMUX=1.

use std::process::Command;

use chrono::{Duration, Utc};
use signalbox_bridges::history::{Store, StoredMessage};
use signalbox_common::envelope::{Envelope, Payload};
use signalbox_e2e::tmux::{tmux_available, Tmux};

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");
const TOPIC: &str = "signalbox/dev/git/kernel/commit";
/// Stored messages: more than one page (200), so that paging takes two.
const STORED: usize = 260;

fn publish_raw(broker: &str, payload: &str) {
    let out = Command::new(BIN)
        .args(["--broker", broker, "pub", "--raw", TOPIC, payload])
        .env("SIGNALBOX_CONFIG", "")
        .output()
        .expect("signalbox pub runs");
    assert!(
        out.status.success(),
        "pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The numbers of the `stored NNN` rows on the screen, top to bottom, and
/// the line index of each.
fn stored_rows(screen: &str) -> Vec<(usize, usize)> {
    screen
        .lines()
        .enumerate()
        .filter_map(|(line, text)| {
            let at = text.find("stored ")?;
            let n = text[at + 7..].get(..3)?.parse().ok()?;
            Some((line, n))
        })
        .collect()
}

/// Every row on screen follows the one above it by one: in order, none
/// twice, none missing.
fn assert_consecutive(screen: &str) -> Vec<usize> {
    let numbers: Vec<usize> = stored_rows(screen).into_iter().map(|(_, n)| n).collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "rows out of order or twice: {numbers:?}\n{screen}"
    );
    numbers
}

#[test]
fn the_stream_pages_back_into_the_history_database() {
    if !tmux_available() {
        return;
    }
    let state = tempfile::tempdir().expect("state dir");
    let start = Utc::now() - Duration::days(1);
    let payloads: Vec<Vec<u8>> = (0..STORED)
        .map(|n| {
            Envelope::builder(TOPIC, format!("stored {n:03}"))
                .agent("jkeating")
                .time(start + Duration::seconds(n as i64))
                .build()
                .expect("an envelope")
                .to_vec()
        })
        .collect();
    let rows: Vec<StoredMessage> = payloads
        .iter()
        .map(|p| {
            let decoded = Payload::decode(p);
            let id = decoded.envelope().expect("an envelope").id.to_string();
            StoredMessage::from_delivery("signalbox", TOPIC, p, &decoded, &id, start)
        })
        .collect();
    let mut store =
        Store::open_writer(&state.path().join("history.db")).expect("the history database");
    assert_eq!(store.insert(&rows).expect("stored"), STORED);
    drop(store);

    let command = format!(
        "timeout --foreground 120 '{BIN}' --embedded --state-dir '{}'; echo EXITED rc=$?; sleep 60",
        state.path().display()
    );
    let tmux = Tmux::start(120, 40, &command).expect("tmux session starts");
    let screen = tmux.wait_for(&["1 Dashboard", "(embedded)", "connected"]);
    let url = screen
        .split_whitespace()
        .find(|w| w.starts_with("mqtt://127.0.0.1:"))
        .expect("the header names the broker")
        .to_string();
    // The newest two stored messages arrive live too.
    for p in &payloads[STORED - 2..] {
        publish_raw(&url, std::str::from_utf8(p).expect("JSON"));
    }
    tmux.keys(&["2"]);
    tmux.wait_for(&["Stream ·", "stored 259"]);

    // The first page: the 200 newest stored, less the two held live.
    tmux.keys(&["H"]);
    tmux.wait_for(&[
        "198 from history",
        "198 older messages from the history database",
    ]);
    // The second: the 60 oldest, and the database has nothing older.
    tmux.keys(&["H"]);
    tmux.wait_for(&["258 from history", "the oldest it holds"]);

    // The top: the oldest stored message first.
    tmux.keys(&["Home"]);
    let screen = tmux.wait_for(&["stored 000"]);
    let top = assert_consecutive(&screen);
    assert_eq!(top.first(), Some(&0), "{screen}");
    assert!(top.len() > 20, "a screenful of rows: {screen}");

    // Page down through everything: each screen in order, none twice.
    let mut seen_last = 0;
    for _ in 0..(STORED / 20 + 2) {
        tmux.keys(&["PageDown"]);
        // A frame is drawn within 33 ms: let it land before reading.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let screen = tmux.capture();
        let numbers = assert_consecutive(&screen);
        seen_last = seen_last.max(numbers.last().copied().unwrap_or(0));
    }
    assert_eq!(seen_last, STORED - 1, "paged down to the newest");

    // The bottom: the separator between the history rows and the live
    // ones, each stored message once.
    tmux.keys(&["End"]);
    let screen = tmux.wait_for(&["following", "── ▲ history (recorder db)"]);
    let numbers = assert_consecutive(&screen);
    assert_eq!(numbers.last(), Some(&(STORED - 1)), "{screen}");
    let rows = stored_rows(&screen);
    let separator = screen
        .lines()
        .position(|l| l.contains("── ▲ history (recorder db)"))
        .expect("the separator");
    for (line, n) in rows {
        assert_eq!(
            line > separator,
            n >= STORED - 2,
            "stored {n:03} on the wrong side of the separator:\n{screen}"
        );
    }

    // A history row opens in the detail, with its payload.
    tmux.keys(&["Home", "Enter"]);
    tmux.wait_for(&["from the history database", "\"summary\": \"stored 000\""]);
    tmux.keys(&["Escape", "q"]);
    tmux.wait_for(&["EXITED rc=0"]);
}
