//! Failover across a two-node RabbitMQ cluster on 127.0.0.1.
//!
//! Bridges publish to node A, a listener consumes from node B with a
//! persistent session (an MQTT QoS 1 persistent session on RabbitMQ is a
//! durable queue on the node where the session was created: B); node A is
//! killed with SIGKILL in the middle of 5,000 messages and the publishers,
//! given `--broker A,B`, move to node B. The real listener's ledger
//! (`fault-listener`) says what was sent, processed, processed twice and
//! lost; the figures printed are RELIABILITY.md's cluster row.
//!
//! One cluster per test binary (two Erlang VMs on a 2-core machine are
//! heavy): one `#[test]`.

mod bridge_support;
mod ledger_support;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge_support::{bridge, run_input, LIMIT};
use ledger_support::{
    now_millis, order_breaks, tally, wait_for_distinct, wait_until_up, Entry, FaultListener,
};
use signalbox_common::mqtt::{BrokerUrl, ConnState, ConnectOptions, Connection, Publish, Qos};
use signalbox_e2e::{rabbit, signalbox};

/// Lines of `signalbox pub --stdin`.
const STREAM: usize = 4_000;
/// Runs of the cron bridge (a start and an end message each).
const CRON_RUNS: usize = 500;
/// Everything the publishers send.
const EXPECTED: usize = STREAM + 2 * CRON_RUNS;
/// Node A dies this long after the publishers start.
const KILL_AFTER: Duration = Duration::from_secs(2);
/// How long the test waits for everything to arrive after the kill.
const SETTLE: Duration = Duration::from_secs(120);
/// The failover target.
const FAILOVER_TARGET: Duration = Duration::from_secs(5);

/// `CLUSTER_RESEND_WINDOW=0 cargo test --test rabbit_cluster` runs the
/// publishers with their re-send window off, to see what RabbitMQ's own
/// confirms guarantee across the failover.
fn with_resend_window(cmd: &mut Command) -> &mut Command {
    if let Ok(window) = std::env::var("CLUSTER_RESEND_WINDOW") {
        cmd.env("SIGNALBOX_RESEND_WINDOW", window);
    }
    cmd
}

/// The repeats the listener `fault` dropped by id (its health report's
/// `counters.duplicates`).
fn duplicates_dropped(url: &str) -> Option<u64> {
    let out = signalbox_e2e::run_with_limit(
        signalbox(url).args(["health", "--json", "--wait", "0.5"]),
        Duration::from_secs(20),
    );
    let reports: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    reports
        .as_array()?
        .iter()
        .find(|r| r["listener"] == "fault")?["counters"]["duplicates"]
        .as_u64()
}

fn source_of(e: &Entry) -> &'static str {
    if e.topic.ends_with("/cluster/stream") {
        "pub --stdin"
    } else {
        "cron"
    }
}

#[test]
fn node_killed_mid_stream_bridges_fail_over_and_nothing_is_lost_or_repeated() {
    const TEST: &str = "node_killed_mid_stream_bridges_fail_over_and_nothing_is_lost_or_repeated";
    let Some(mut nodes) = rabbit::rabbitmq_cluster(TEST, 2) else {
        return;
    };
    // Build the binaries first (`bin` runs cargo build once), so that the
    // timings below do not include a build.
    signalbox_e2e::bin("fault-listener");
    let (a_url, b_url) = (nodes[0].url(), nodes[1].url());
    let both = format!("{a_url},{b_url}");
    let work = tempfile::tempdir().expect("tempdir");
    let ledger = work.path().join("ledger");
    let listener = FaultListener::start(
        &b_url,
        &work.path().join("listener"),
        &ledger,
        "signalbox/dev/#",
        0,
        &[],
    );
    wait_until_up(&b_url, "fault", Duration::from_secs(60));

    // A probe connection listing both nodes, as the publishers do,
    // publishing outside the listener's filter: when it is connected to B
    // and its first publish B confirmed say how long the failover took.
    let probe = Probe::start(&both, &b_url);
    // `pub --stdin`, one line per 1.5 ms.
    let mut pub_cmd = signalbox(&both);
    with_resend_window(&mut pub_cmd).env("SIGNALBOX_LOG", "signalbox_common=info");
    let mut child = pub_cmd
        .args([
            "pub",
            "--stdin",
            "--timeout",
            "120",
            "signalbox/dev/cluster/stream",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pub");
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        for i in 0..STREAM {
            if writeln!(stdin, "line {i}").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_micros(1_500));
        }
        drop(stdin);
        signalbox_e2e::wait_with_limit(child, Duration::from_secs(240))
    });
    // The cron bridge, one run after another, each a new process given
    // both nodes: after the kill, each tries A (refused) and then B.
    let cron_state = work.path().join("cron-state");
    let crons = {
        let (both, state) = (both.clone(), cron_state.clone());
        std::thread::spawn(move || {
            let mut codes = Vec::new();
            for i in 0..CRON_RUNS {
                let out = run_input(
                    with_resend_window(&mut bridge(&both, &state)).args([
                        "cron",
                        "--job",
                        &format!("job{i}"),
                        "--",
                        "true",
                    ]),
                    b"",
                    LIMIT,
                );
                codes.push((out.code, out.stderr));
                std::thread::sleep(Duration::from_millis(5));
            }
            codes
        })
    };

    std::thread::sleep(KILL_AFTER);
    let killed_ms = now_millis();
    nodes[0].kill();
    eprintln!("node A killed (SIGKILL) at +2 s");
    let (connected_b_ms, confirmed_b_ms) = probe.finish(Duration::from_secs(30));

    let out = feeder.join().expect("pub thread");
    assert_eq!(out.code, 0, "pub --stdin: {}", out.stderr);
    for line in out
        .stderr
        .lines()
        .filter(|l| l.contains("lost") || l.contains("re-sending") || l.contains("onnect"))
    {
        eprintln!("pub --stdin: {line}");
    }
    let codes = crons.join().expect("cron thread");
    let failed: Vec<_> = codes.iter().filter(|(code, _)| *code != 0).collect();
    assert!(failed.is_empty(), "cron bridge runs failed: {failed:?}");
    // Anything a run had to spool (none is expected: B was there) goes out
    // now, as the next run would send it.
    let out = signalbox_e2e::run_with_limit(
        bridge(&b_url, &cron_state).args(["spool", "flush", "--timeout", "30"]),
        LIMIT,
    );
    assert_eq!(out.code, 0, "spool flush: {}", out.stderr);

    let entries = wait_for_distinct(&ledger, EXPECTED, SETTLE);
    let repeats = duplicates_dropped(&b_url);
    listener.kill();
    let t = tally(&entries);
    // Failover: from the SIGKILL to the probe's first publish confirmed by
    // node B; and, as the listener saw it, the longest pause in the
    // processing of the stream (the re-send window's repeats go first).
    let after_kill = |ms: Option<u128>| ms.map(|ms| ms.saturating_sub(killed_ms));
    let failover_ms = after_kill(confirmed_b_ms);
    let mut stream_times: Vec<u128> = entries
        .iter()
        .filter(|e| source_of(e) == "pub --stdin")
        .map(|e| e.millis)
        .collect();
    stream_times.sort_unstable();
    let longest_pause = stream_times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(0);
    let per_source = entries.iter().fold(HashMap::new(), |mut m, e| {
        m.entry(source_of(e))
            .or_insert_with(HashSet::new)
            .insert(e.id.clone());
        m
    });
    let breaks = order_breaks(&entries, |e| Some(source_of(e)));
    eprintln!(
        "RELIABILITY RabbitMQ cluster node SIGKILL: sent {EXPECTED}, processed {}, distinct {}, processed twice {}, lost {}, failover: connected to B {} ms and first publish confirmed by B {} ms after the SIGKILL, longest pause in the stream {longest_pause} ms, repeats dropped by the listener {}, order breaks {}; per source: {:?}",
        t.processed,
        t.distinct,
        t.twice.len(),
        EXPECTED.saturating_sub(t.distinct),
        after_kill(connected_b_ms).map_or("?".into(), |ms| ms.to_string()),
        failover_ms.map_or("?".into(), |ms| ms.to_string()),
        repeats.map_or("?".into(), |n| n.to_string()),
        breaks.len(),
        per_source
            .iter()
            .map(|(s, ids)| (*s, ids.len()))
            .collect::<Vec<_>>()
    );
    assert!(t.twice.is_empty(), "processed twice: {:?}", t.twice);
    assert_eq!(
        t.distinct,
        EXPECTED,
        "lost {} messages; node B's log:\n{}",
        EXPECTED.saturating_sub(t.distinct),
        tail_of(&nodes[1].log())
    );
    let failover = Duration::from_millis(failover_ms.expect("the probe failed over to B") as u64);
    assert!(
        failover < FAILOVER_TARGET,
        "failover took {failover:?} (target {FAILOVER_TARGET:?})"
    );
    assert!(
        breaks.is_empty(),
        "order per source broken {} times, first: {:?}",
        breaks.len(),
        &breaks[..breaks.len().min(10)]
    );
}

/// A connection like the publishers' (both nodes listed) publishing a
/// confirmed probe every 20 ms on a topic no listener takes, noting when
/// it got to node B and when B first confirmed one of its publishes.
struct Probe {
    stop: Arc<AtomicBool>,
    /// When B first confirmed a probe (Unix ms).
    confirmed_b: Arc<Mutex<Option<u128>>>,
    /// When the connection reached B (Unix ms).
    thread: std::thread::JoinHandle<Option<u128>>,
}

impl Probe {
    fn start(brokers: &str, b_url: &str) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let confirmed_b = Arc::new(Mutex::new(None));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut options = ConnectOptions::for_url(b_url, "cluster-probe").expect("url");
        options.brokers = brokers
            .split(',')
            .map(|b| BrokerUrl::parse(b).expect("broker URL"))
            .collect();
        let b_url = b_url.to_string();
        let (flag, confirmed) = (stop.clone(), confirmed_b.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let conn = Connection::connect(options)
                    .await
                    .expect("the probe connects to A");
                let mut state = conn.state_watch();
                let on_b = b_url.clone();
                let connected_b = tokio::spawn(async move {
                    state
                        .wait_for(
                            |s| matches!(s, ConnState::Connected { broker } if *broker == on_b),
                        )
                        .await
                        .ok()?;
                    Some(now_millis())
                });
                let _ = ready_tx.send(());
                while !flag.load(Ordering::SeqCst) {
                    let sent = conn
                        .publish_confirmed(
                            Publish::new("probe/cluster", "probe", Qos::AtLeastOnce, false),
                            Duration::from_secs(10),
                        )
                        .await;
                    let on_b = matches!(
                        conn.publisher().state(),
                        ConnState::Connected { broker } if broker == b_url
                    );
                    if sent.is_ok() && on_b {
                        confirmed
                            .lock()
                            .expect("probe")
                            .get_or_insert_with(now_millis);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let connected_b = tokio::time::timeout(Duration::from_secs(1), connected_b)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten();
                conn.disconnect().await;
                connected_b
            })
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the probe connected");
        Probe {
            stop,
            confirmed_b,
            thread,
        }
    }

    /// Waits (at most `limit`) until B confirmed a probe, then stops;
    /// returns when the probe reached B and when B first confirmed one.
    fn finish(self, limit: Duration) -> (Option<u128>, Option<u128>) {
        let deadline = std::time::Instant::now() + limit;
        while self.confirmed_b.lock().expect("probe").is_none()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::SeqCst);
        let connected_b = self.thread.join().expect("probe thread");
        let confirmed_b = *self.confirmed_b.lock().expect("probe");
        (connected_b, confirmed_b)
    }
}

fn tail_of(log: &str) -> &str {
    let start = log.len().saturating_sub(3000);
    let start = (start..=log.len())
        .find(|&i| log.is_char_boundary(i))
        .unwrap_or(log.len());
    &log[start..]
}
