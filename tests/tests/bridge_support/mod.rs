//! Helpers shared by the bridge tests (`bridge_*.rs`, `spool.rs`): running
//! `signalbox-bridge` with a private state directory and input on stdin, a
//! subscriber that collects what reaches the broker, and the procmail check.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use signalbox_common::mqtt::{ConnectOptions, Connection, Qos};
use signalbox_e2e::{mosquitto_required, wait_with_limit, Finished};

/// Every bridge run in these tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A `signalbox-bridge` command with a private configuration, state and
/// spool under `state`, publishing to `broker`.
pub fn bridge(broker: &str, state: &Path) -> Command {
    signalbox_e2e::signalbox_bridge(broker, state)
}

/// Runs a command with `input` on its stdin, killing it after `limit`.
pub fn run_input(cmd: &mut Command, input: &[u8], limit: Duration) -> Finished {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let finished = wait_with_limit(child, limit);
    let _ = writer.join();
    finished
}

/// One message as it reached a subscriber.
#[derive(Debug, Clone)]
pub struct Got {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Delivered from the retained store.
    pub retain: bool,
}

impl Got {
    /// The payload as JSON (panics with the payload when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "{}: not JSON ({e}): {}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

/// A subscriber on its own thread, collecting messages into a channel.
pub struct Subscriber {
    rx: mpsc::Receiver<Got>,
}

impl Subscriber {
    /// Subscribes to `filter` at QoS 1 and returns once the broker
    /// acknowledged the subscription.
    pub fn start(url: &str, filter: &str) -> Subscriber {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let url = url.to_string();
        let filter = filter.to_string();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let id = format!("test-sub-{}", signalbox_e2e::free_port());
                let options = ConnectOptions::for_url(&url, &id).expect("url");
                let mut conn = Connection::connect(options)
                    .await
                    .expect("subscriber connects");
                conn.subscribe(&[(filter, Qos::AtLeastOnce)], Duration::from_secs(10))
                    .await
                    .expect("subscribed");
                let _ = ready_tx.send(());
                while let Some(m) = conn.recv().await {
                    let got = Got {
                        topic: m.topic.clone(),
                        payload: m.payload.to_vec(),
                        retain: m.retain,
                    };
                    if tx.send(got).is_err() {
                        break;
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("subscriber ready");
        Subscriber { rx }
    }

    /// The next message within `limit`.
    pub fn next(&self, limit: Duration) -> Option<Got> {
        self.rx.recv_timeout(limit).ok()
    }

    /// Exactly `n` messages (panics, naming what arrived, when fewer come
    /// within `limit`).
    pub fn take(&self, n: usize, limit: Duration) -> Vec<Got> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) => got.push(m),
                Err(_) => panic!(
                    "expected {n} messages, got {}: {:?}",
                    got.len(),
                    got.iter().map(|g| g.topic.as_str()).collect::<Vec<_>>()
                ),
            }
        }
        got
    }

    /// Messages until none arrives for `quiet`.
    pub fn drain(&self, quiet: Duration) -> Vec<Got> {
        let mut got = Vec::new();
        while let Ok(m) = self.rx.recv_timeout(quiet) {
            got.push(m);
        }
        got
    }
}

/// Messages that are not bridges' own health reports.
pub fn events(got: Vec<Got>) -> Vec<Got> {
    got.into_iter()
        .filter(|g| !g.topic.contains("/_health/"))
        .collect()
}

/// Whether procmail is installed; like mosquitto, its absence fails the
/// test when `SIGNALBOX_REQUIRE_MOSQUITTO=1` (CI) and is a loud skip
/// otherwise.
pub fn procmail_installed(test: &str) -> bool {
    let found = Command::new("procmail")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return true;
    }
    assert!(
        !mosquitto_required(),
        "{test}: procmail is required (SIGNALBOX_REQUIRE_MOSQUITTO=1) but not installed"
    );
    eprintln!("\n!!! SKIPPED {test}: procmail not installed (apt-get install procmail) !!!\n");
    false
}

/// The JSON files of a spool directory, oldest first.
pub fn spool_files(spool: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(spool)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "msg"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A URL on which nothing listens (connection refused at once).
pub fn dead_broker() -> String {
    format!("mqtt://127.0.0.1:{}", signalbox_e2e::free_port())
}
