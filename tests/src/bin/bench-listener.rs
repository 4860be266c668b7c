//! bench-listener: how fast the listener runtime drains a queue, side by
//! side with `mosquitto_sub` doing the same at QoS 1.
//!
//! For each broker (a private mosquitto, and the embedded broker), N
//! envelopes are queued at QoS 1 for an offline persistent session, then the
//! consumer connects and is timed until it has handled all N:
//! - `signalbox runtime, no-op handler`: the full runtime (manual acks after
//!   processing, de-duplication persisted, counters, health);
//! - `mosquitto_sub -c -q 1 -C N` (mosquitto only): the client library's
//!   automatic acks, output to /dev/null — a floor, not a listener;
//! - `signalbox-bridge exec -- true`: one process spawn per message (fewer
//!   messages: it is spawn bound);
//! - `signalbox-bridge recorder`: every message into a SQLite history
//!   database, acknowledged once its row is committed — into a fresh
//!   database, and into RECORDER_DB when given (e.g. one filled with 10
//!   million messages by `bench-history`; it gains the N messages).
//!
//! Usage: cargo run --release -p signalbox-e2e --bin bench-listener -- [N] [EXEC_N] [RECORDER_DB]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signalbox_common::envelope::Envelope;
use signalbox_common::listener::{self, Delivery, ListenerOptions};
use signalbox_common::mqtt::{ConnectOptions, Connection, Publish, Qos};
use signalbox_e2e::{embedded_broker, free_port, isolate, mosquitto_with, test_config};

const LIMIT: Duration = Duration::from_secs(300);
/// How often a listener process is asked for a fresh health report while
/// it drains (each `_ping` is a retained health report through the broker).
const PING_EVERY_MS: u64 = 250;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(100_000);
    let exec_n = args.get(1).copied().unwrap_or(2_000);
    let recorder_db = std::env::args().nth(3).map(std::path::PathBuf::from);
    println!("bench-listener: {n} envelopes queued at QoS 1, then drained (exec: {exec_n})");
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!();
    println!(
        "{:<12} {:<40} {:>10} {:>12}",
        "broker", "consumer", "messages", "msg/s"
    );

    // BENCH_MOSQUITTO_CONF: extra mosquitto.conf lines (e.g.
    // "max_inflight_messages 100"; the last value of an option wins).
    let extra = std::env::var("BENCH_MOSQUITTO_CONF").unwrap_or_default();
    // BENCH_RECORDER_ONLY=1: only the recorder into RECORDER_DB through
    // mosquitto (to compare recorder settings run after run).
    let recorder_only = std::env::var_os("BENCH_RECORDER_ONLY").is_some();
    if let Some(m) = mosquitto_with("bench-listener", false, &extra.replace("\\n", "\n")) {
        let url = m.url();
        if !recorder_only {
            other_consumers(&url, m.port, n, exec_n).await;
        }
        let fresh = tempfile::tempdir().expect("tempdir");
        let mut dbs = if recorder_only {
            Vec::new()
        } else {
            vec![
                (
                    "fresh db".to_string(),
                    fresh.path().join("history.db"),
                    &[][..],
                ),
                (
                    "fresh db, --ack-on-queue".to_string(),
                    fresh.path().join("history-q.db"),
                    &["--ack-on-queue"][..],
                ),
            ]
        };
        if let Some(db) = &recorder_db {
            dbs.push((format!("db {}", db.display()), db.clone(), &[][..]));
        }
        for (label, db, flags) in dbs {
            let rate = process_drain_counted(
                &url,
                n,
                &["recorder".into(), "--db".into(), db.display().to_string()],
                flags,
                Some(&db),
            )
            .await;
            println!(
                "{:<12} {:<40} {:>10} {:>12.0}",
                "mosquitto",
                format!("signalbox-bridge recorder, {label}"),
                n,
                rate
            );
        }
    }
    if recorder_only {
        return;
    }
    let broker = embedded_broker();
    let rate = runtime_drain(&broker.url(), n).await;
    println!(
        "{:<12} {:<40} {:>10} {:>12.0}",
        "embedded", "signalbox runtime, no-op handler", n, rate
    );
    let fresh = tempfile::tempdir().expect("tempdir");
    let db = fresh.path().join("history.db");
    let rate = process_drain_counted(
        &broker.url(),
        n,
        &["recorder".into(), "--db".into(), db.display().to_string()],
        &[],
        Some(&db),
    )
    .await;
    println!(
        "{:<12} {:<40} {:>10} {:>12.0}",
        "embedded", "signalbox-bridge recorder, fresh db", n, rate
    );
}

/// The runtime, mosquitto_sub and exec draining the same queue.
async fn other_consumers(url: &str, port: u16, n: usize, exec_n: usize) {
    let rate = runtime_drain(url, n).await;
    println!(
        "{:<12} {:<40} {:>10} {:>12.0}",
        "mosquitto", "signalbox runtime, no-op handler", n, rate
    );
    let rate = mosquitto_sub_drain(url, port, n).await;
    println!(
        "{:<12} {:<40} {:>10} {:>12.0}",
        "mosquitto", "mosquitto_sub -c -q 1 (auto acks)", n, rate
    );
    let rate = process_drain(url, exec_n, &["exec".into()], &["--", "true"]).await;
    println!(
        "{:<12} {:<40} {:>10} {:>12.0}",
        "mosquitto", "signalbox-bridge exec -- true", exec_n, rate
    );
}

/// Queues `n` envelopes for an offline persistent session subscribed to
/// `filter` (created by `subscribe_offline` beforehand).
async fn queue(url: &str, topic: &str, n: usize) {
    let conn = Connection::connect(
        ConnectOptions::for_url(url, &format!("bench-pub-{}", free_port())).expect("url"),
    )
    .await
    .expect("publisher connects");
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let e = Envelope::builder(topic, format!("bench message {i}"))
            .bridge("bench")
            .build()
            .expect("envelope");
        pending.push(
            conn.publish(Publish::new(topic, e.to_vec(), Qos::AtLeastOnce, false))
                .await
                .expect("queued"),
        );
    }
    for c in pending {
        c.wait(LIMIT).await.expect("confirmed");
    }
    conn.disconnect().await;
}

async fn runtime_drain(url: &str, n: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(url, dir.path(), 10);
    let name = format!("bench{}", free_port());
    let filter = format!("bench/{name}/#");
    let done = Arc::new(AtomicU64::new(0));
    let (finished_tx, finished_rx) = tokio::sync::oneshot::channel::<Instant>();
    let finished_tx = Arc::new(std::sync::Mutex::new(Some(finished_tx)));
    let run = |stop: tokio::sync::oneshot::Receiver<()>| {
        let config = config.clone();
        let options = ListenerOptions::new(&name, vec![filter.clone()], &config);
        let done = done.clone();
        let finished_tx = finished_tx.clone();
        tokio::spawn(async move {
            let handler = move |_d: Delivery| {
                let done = done.clone();
                let finished_tx = finished_tx.clone();
                async move {
                    if done.fetch_add(1, Ordering::Relaxed) + 1 == n as u64 {
                        if let Some(tx) = finished_tx.lock().ok().and_then(|mut t| t.take()) {
                            let _ = tx.send(Instant::now());
                        }
                    }
                    Ok(None)
                }
            };
            listener::run(&config, options, handler, async {
                let _ = stop.await;
            })
            .await
            .expect("listener")
        })
    };
    // First run creates the persistent session and its subscription: wait
    // until it reports up.
    let mut watcher = Connection::connect(
        ConnectOptions::for_url(url, &format!("bench-w-{}", free_port())).expect("url"),
    )
    .await
    .expect("watcher");
    watcher
        .subscribe(
            &[(format!("signalbox/_health/{name}"), Qos::AtMostOnce)],
            LIMIT,
        )
        .await
        .expect("sub");
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let first = run(stopped);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, watcher.recv()).await {
        if signalbox_common::health::HealthReport::from_slice(&m.payload)
            .is_ok_and(|r| r.state == signalbox_common::health::HealthState::Up)
        {
            break;
        }
    }
    let _ = stop.send(());
    let _ = first.await;
    queue(url, &format!("bench/{name}/x"), n).await;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let started = Instant::now();
    let second = run(stopped);
    let finished = tokio::time::timeout(LIMIT, finished_rx)
        .await
        .expect("drained in time")
        .expect("finished");
    let _ = stop.send(());
    let _ = second.await;
    n as f64 / finished.duration_since(started).as_secs_f64()
}

async fn mosquitto_sub_drain(url: &str, port: u16, n: usize) -> f64 {
    let id = format!("bench-sub-{}", free_port());
    let topic = format!("bench/{id}/x");
    let sub = |count: usize| {
        Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-c",
                "-i",
                &id,
                "-q",
                "1",
                "-t",
                &topic,
            ])
            .args(["-C", &count.to_string(), "-W", "300"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub")
    };
    // Create the session (it exits after 1 message or its wait).
    let mut first = sub(1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = first.kill();
    let _ = first.wait();
    queue(url, &topic, n).await;
    let started = Instant::now();
    let mut second = sub(n);
    let status = tokio::task::spawn_blocking(move || second.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "mosquitto_sub did not receive all {n}");
    n as f64 / started.elapsed().as_secs_f64()
}

/// Times a listener process (`signalbox-bridge KIND…`, then `--name`,
/// `--filter` and `tail`) draining `n` queued
/// messages, counted through its health report's `processed`.
async fn process_drain(url: &str, n: usize, kind: &[String], tail: &[&str]) -> f64 {
    process_drain_counted(url, n, kind, tail, None).await
}

/// [`process_drain`], done when `db` holds `n` rows, when given (the
/// recorder: a row is committed before its message is acknowledged).
/// Without it, completions are counted through health reports: asked for
/// with `_ping`, which reaches a listener only behind its queue, and sent
/// every second besides, so the figure is exact to about a second.
async fn process_drain_counted(
    url: &str,
    n: usize,
    kind: &[String],
    tail: &[&str],
    db: Option<&std::path::Path>,
) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("benchproc{}", free_port());
    let spawn = || {
        let mut cmd = Command::new(signalbox_e2e::bin("signalbox-bridge"));
        isolate(&mut cmd);
        cmd.env("SIGNALBOX_BROKER", url)
            .env("SIGNALBOX_STATE_DIR", dir.path())
            .env("SIGNALBOX_HEALTH_INTERVAL", "1")
            .args(kind)
            .args(["--name", &name, "--filter", &format!("bench/{name}/#")])
            .args(tail)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("listener process")
    };
    // Completions are counted through the health report's `processed`.
    let mut watcher = Connection::connect(
        ConnectOptions::for_url(url, &format!("bench-w-{}", free_port())).expect("url"),
    )
    .await
    .expect("watcher");
    let health = format!("signalbox/_health/{name}");
    watcher
        .subscribe(&[(health.clone(), Qos::AtMostOnce)], LIMIT)
        .await
        .expect("sub");
    // The first run creates the persistent session: wait until it is up.
    let mut first = spawn();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, watcher.recv()).await {
        if signalbox_common::health::HealthReport::from_slice(&m.payload)
            .is_ok_and(|r| r.state == signalbox_common::health::HealthState::Up)
        {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status();
    let _ = first.wait();
    queue(url, &format!("bench/{name}/x"), n).await;
    // A prefilled database gains the n messages: counted by arrival number
    // (one index lookup; a count(*) of 10 million rows would take a core
    // from the recorder).
    let reader = db.map(|db| {
        let store = signalbox_bridges::history::Store::open_reader(db).ok();
        let base = store
            .as_ref()
            .and_then(|s| s.newest_seq().ok())
            .unwrap_or(0);
        (db, base, store)
    });
    let started = Instant::now();
    let mut child = spawn();
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut elapsed = None;
    if let Some((db, base, mut store)) = reader {
        // A fresh database is created by the recorder: opened once it exists.
        while elapsed.is_none() && tokio::time::Instant::now() < deadline {
            if store.is_none() {
                store = signalbox_bridges::history::Store::open_reader(db).ok();
            }
            let newest = store.as_ref().and_then(|s| s.newest_seq().ok());
            if newest.is_some_and(|seq| seq - base >= n as i64) {
                elapsed = Some(started.elapsed());
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    while elapsed.is_none() {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, watcher.recv()).await else {
            break;
        };
        if let Ok(r) = signalbox_common::health::HealthReport::from_slice(&m.payload) {
            if r.counters.processed >= n as u64 {
                elapsed = Some(started.elapsed());
            } else {
                // Ask for a fresh report.
                let _ = watcher
                    .publish(Publish::new(
                        "signalbox/_ping",
                        Vec::new(),
                        Qos::AtMostOnce,
                        false,
                    ))
                    .await;
                tokio::time::sleep(Duration::from_millis(PING_EVERY_MS)).await;
            }
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let elapsed = elapsed.expect("the listener process drained in time");
    n as f64 / elapsed.as_secs_f64()
}
