//! The listener runtime against real brokers (the embedded broker and a
//! mosquitto with persistence): retries, failure records, replay up to the
//! cap, de-duplication, messages published while offline, broker restarts,
//! shared subscriptions, health reports and replies.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use signalbox_common::config::Config;
use signalbox_common::envelope::Envelope;
use signalbox_common::failed::{FailureRecord, Outcome, ReplayOutcome, ReplayRequest};
use signalbox_common::health::{HealthReport, HealthState};
use signalbox_common::listener::{self, Delivery, HandlerResult, ListenerOptions, Summary};
use signalbox_common::mqtt::{ConnectOptions, Connection, Publish, Qos};
use signalbox_common::topic;
use signalbox_e2e::{embedded_broker, mosquitto, mosquitto_persistent, test_config};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(15);

struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Summary>,
}

impl Running {
    async fn stop(self) -> Summary {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("stops in time")
            .expect("task")
    }
}

fn start<H, Fut>(config: &Config, options: ListenerOptions, handler: H) -> Running
where
    H: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = HandlerResult> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let config = config.clone();
    let task = tokio::spawn(async move {
        listener::run(&config, options, handler, async {
            let _ = stopped.await;
        })
        .await
        .expect("listener runs")
    });
    Running { stop, task }
}

fn options(config: &Config, name: &str, filter: &str) -> ListenerOptions {
    let mut o = ListenerOptions::new(name, vec![filter.to_string()], config);
    o.retry_backoff = Duration::from_millis(20);
    o
}

async fn client(url: &str, id: &str) -> Connection {
    Connection::connect(ConnectOptions::for_url(url, id).expect("url"))
        .await
        .expect("connects")
}

async fn publish_envelope(conn: &Connection, topic: &str, summary: &str) -> Envelope {
    let envelope = Envelope::builder(topic, summary).build().expect("envelope");
    conn.publish_confirmed(
        Publish::new(topic, envelope.to_vec(), Qos::AtLeastOnce, false),
        WAIT,
    )
    .await
    .expect("confirmed");
    envelope
}

/// Waits for the listener's health report in `state`.
async fn wait_health(watcher: &mut Connection, name: &str, state: HealthState) -> HealthReport {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = tokio::time::timeout_at(deadline, watcher.recv())
            .await
            .unwrap_or_else(|_| panic!("no {state:?} health report of {name}"))
            .expect("open");
        if m.topic.ends_with(&format!("/_health/{name}")) {
            if let Ok(r) = HealthReport::from_slice(&m.payload) {
                if r.state == state {
                    return r;
                }
            }
        }
    }
}

async fn wait_record(
    watcher: &mut Connection,
    pred: impl Fn(&FailureRecord) -> bool,
) -> FailureRecord {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = tokio::time::timeout_at(deadline, watcher.recv())
            .await
            .expect("a failure record")
            .expect("open");
        if m.topic.contains("/_failed/") {
            if let Ok(r) = FailureRecord::from_slice(&m.payload) {
                if pred(&r) {
                    return r;
                }
            }
        }
    }
}

async fn watcher(url: &str, filters: &[&str]) -> Connection {
    let w = client(url, &format!("watch-{}", uuid_like())).await;
    let f: Vec<(String, Qos)> = filters
        .iter()
        .map(|f| (f.to_string(), Qos::AtLeastOnce))
        .collect();
    w.subscribe(&f, WAIT).await.expect("watch");
    w
}

fn uuid_like() -> String {
    Envelope::builder("x", "x")
        .build()
        .map(|e| e.id.simple().to_string())
        .unwrap_or_default()
}

fn state(dir: &Path) -> std::path::PathBuf {
    dir.join("state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_failing_twice_then_succeeding_leaves_no_record() {
    let broker = embedded_broker();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(&broker.url(), &state(dir.path()), 1);
    let tries = Arc::new(AtomicU32::new(0));
    let t = tries.clone();
    let running = start(
        &config,
        options(&config, "flaky", "signalbox/dev/t/#"),
        move |_d| {
            let t = t.clone();
            async move {
                if t.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err("transient".into())
                } else {
                    Ok(None)
                }
            }
        },
    );
    let mut w = watcher(
        &broker.url(),
        &["signalbox/_health/flaky", "signalbox/_failed/#"],
    )
    .await;
    wait_health(&mut w, "flaky", HealthState::Up).await;
    let p = client(&broker.url(), "p1").await;
    publish_envelope(&p, "signalbox/dev/t/x", "hello").await;
    let summary_deadline = tokio::time::Instant::now() + WAIT;
    while tries.load(Ordering::SeqCst) < 3 && tokio::time::Instant::now() < summary_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let summary = running.stop().await;
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    assert_eq!(
        (summary.counters.processed, summary.counters.failed),
        (1, 0)
    );
    // No failure record was written.
    let seen = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            let m = w.recv().await.expect("open");
            if m.topic.contains("/_failed/") {
                return m;
            }
        }
    })
    .await;
    assert!(seen.is_err(), "no failure record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_recorded_replayed_up_to_the_cap_and_cleared_once_fixed_on_the_embedded_broker(
) {
    let broker = embedded_broker();
    failures_are_recorded_replayed_up_to_the_cap_and_cleared_once_fixed(&broker.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_recorded_replayed_up_to_the_cap_and_cleared_once_fixed_on_mosquitto() {
    let Some(m) = mosquitto("failures_are_recorded_replayed_up_to_the_cap_and_cleared_once_fixed")
    else {
        return;
    };
    failures_are_recorded_replayed_up_to_the_cap_and_cleared_once_fixed(&m.url()).await;
}

async fn failures_are_recorded_replayed_up_to_the_cap_and_cleared_once_fixed(url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(url, &state(dir.path()), 1);
    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let mut o = options(&config, "broken", "signalbox/dev/b/#");
    o.max_attempts = 3;
    let running = start(&config, o, move |d: Delivery| {
        let f = f.clone();
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            if f.load(Ordering::SeqCst) || d.summary() == "fine" {
                Ok(None)
            } else {
                Err(format!("cannot handle {}", d.summary()).into())
            }
        }
    });
    let mut w = watcher(
        url,
        &[
            "signalbox/_health/broken",
            "signalbox/_failed/broken/+",
            "replies/#",
        ],
    )
    .await;
    wait_health(&mut w, "broken", HealthState::Up).await;
    let p = client(url, "p2").await;
    let env = publish_envelope(&p, "signalbox/dev/b/x", "bad input").await;
    let id = env.id.to_string();
    let record = wait_record(&mut w, |r| r.id == id).await;
    assert_eq!(record.attempts, 1);
    assert_eq!(record.error, "cannot handle bad input");
    assert_eq!(record.topic, "signalbox/dev/b/x");
    assert_eq!(
        record.envelope.as_ref().map(|e| e.summary.as_str()),
        Some("bad input")
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "3 in-process tries before the record"
    );

    let replay = |reply: &str| ReplayRequest {
        ids: vec![id.clone()],
        all: false,
        reply_to: Some(reply.to_string()),
    };
    // Replays while still failing raise attempts, up to the cap.
    for (n, expected) in [
        (2u32, Outcome::Failed),
        (3, Outcome::Failed),
        (3, Outcome::Capped),
    ] {
        let reply = format!("replies/{n}-{expected:?}");
        p.publish_confirmed(
            Publish::new(
                "signalbox/_replay/broken",
                replay(&reply).to_vec(),
                Qos::AtLeastOnce,
                false,
            ),
            WAIT,
        )
        .await
        .expect("replay sent");
        let deadline = tokio::time::Instant::now() + WAIT;
        let outcome = loop {
            let m = tokio::time::timeout_at(deadline, w.recv())
                .await
                .expect("an outcome")
                .expect("open");
            if m.topic == reply {
                break serde_json::from_slice::<ReplayOutcome>(&m.payload).expect("outcome json");
            }
        };
        assert_eq!(outcome.results[0].outcome, expected);
        assert_eq!(outcome.results[0].attempts, Some(n));
    }
    // Capped records stay; once the fault is fixed, a replay of another
    // (uncapped) record clears it, and an unknown id is reported.
    fixed.store(true, Ordering::SeqCst);
    let runs_before = runs.load(Ordering::SeqCst);
    p.publish_confirmed(
        Publish::new(
            "signalbox/_replay/broken",
            ReplayRequest {
                ids: vec![id.clone(), "nope".into()],
                all: false,
                reply_to: Some("replies/final".into()),
            }
            .to_vec(),
            Qos::AtLeastOnce,
            false,
        ),
        WAIT,
    )
    .await
    .expect("sent");
    let deadline = tokio::time::Instant::now() + WAIT;
    let outcome = loop {
        let m = tokio::time::timeout_at(deadline, w.recv())
            .await
            .expect("outcome")
            .expect("open");
        if m.topic == "replies/final" {
            break serde_json::from_slice::<ReplayOutcome>(&m.payload).expect("json");
        }
    };
    assert_eq!(
        outcome.results[0].outcome,
        Outcome::Capped,
        "a capped record is not run again"
    );
    assert_eq!(outcome.results[1].outcome, Outcome::Unknown);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        runs_before,
        "the handler did not run for capped/unknown"
    );

    fixed.store(false, Ordering::SeqCst);
    let second = publish_envelope(&p, "signalbox/dev/b/y", "second bad").await;
    let sid = second.id.to_string();
    wait_record(&mut w, |r| r.id == sid).await;
    fixed.store(true, Ordering::SeqCst);
    p.publish_confirmed(
        Publish::new(
            "signalbox/_replay/broken",
            ReplayRequest {
                ids: vec![],
                all: true,
                reply_to: Some("replies/all".into()),
            }
            .to_vec(),
            Qos::AtLeastOnce,
            false,
        ),
        WAIT,
    )
    .await
    .expect("sent");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut cleared = false;
    let mut outcome = None;
    while !(cleared && outcome.is_some()) {
        let m = tokio::time::timeout_at(deadline, w.recv())
            .await
            .expect("clear + outcome")
            .expect("open");
        if m.topic == format!("signalbox/_failed/broken/{sid}") && m.payload.is_empty() {
            cleared = true;
        }
        if m.topic == "replies/all" {
            outcome = Some(serde_json::from_slice::<ReplayOutcome>(&m.payload).expect("json"));
        }
    }
    let outcome = outcome.expect("outcome");
    let of = |i: &str| {
        outcome
            .results
            .iter()
            .find(|r| r.id == i)
            .map(|r| r.outcome)
    };
    assert_eq!(of(&sid), Some(Outcome::Replayed));
    assert_eq!(of(&id), Some(Outcome::Capped));
    let summary = running.stop().await;
    assert_eq!(
        summary.counters.replayed, 3,
        "two failed replays and one success"
    );
    assert!(summary.counters.failed >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_twice_is_processed_once_even_across_restarts_on_the_embedded_broker() {
    let broker = embedded_broker();
    the_same_id_twice_is_processed_once_even_across_restarts(&broker.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_twice_is_processed_once_even_across_restarts_on_mosquitto() {
    let Some(m) = mosquitto("the_same_id_twice_is_processed_once_even_across_restarts") else {
        return;
    };
    the_same_id_twice_is_processed_once_even_across_restarts(&m.url()).await;
}

async fn the_same_id_twice_is_processed_once_even_across_restarts(url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(url, &state(dir.path()), 1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = |seen: Arc<Mutex<Vec<String>>>| {
        move |d: Delivery| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("lock").push(d.id.clone());
                Ok(None)
            }
        }
    };
    let mut w = watcher(url, &["signalbox/_health/dedup"]).await;
    let running = start(
        &config,
        options(&config, "dedup", "signalbox/dev/d/#"),
        handler(seen.clone()),
    );
    wait_health(&mut w, "dedup", HealthState::Up).await;
    let p = client(url, "p3").await;
    let env = publish_envelope(&p, "signalbox/dev/d/x", "once").await;
    p.publish_confirmed(
        Publish::new("signalbox/dev/d/x", env.to_vec(), Qos::AtLeastOnce, false),
        WAIT,
    )
    .await
    .expect("again");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let summary = running.stop().await;
    assert_eq!(summary.counters.duplicates, 1);
    assert_eq!(summary.counters.processed, 1);
    // A restarted listener remembers the id.
    let running = start(
        &config,
        options(&config, "dedup", "signalbox/dev/d/#"),
        handler(seen.clone()),
    );
    wait_health(&mut w, "dedup", HealthState::Up).await;
    p.publish_confirmed(
        Publish::new("signalbox/dev/d/x", env.to_vec(), Qos::AtLeastOnce, false),
        WAIT,
    )
    .await
    .expect("third time");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let summary = running.stop().await;
    assert_eq!(summary.counters.duplicates, 1);
    assert_eq!(seen.lock().expect("lock").len(), 1, "handled exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_while_offline_are_processed_on_return_and_stop_is_reported() {
    let Some(m) = mosquitto_persistent("messages_published_while_offline") else {
        return;
    };
    let url = m.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(&url, &state(dir.path()), 1);
    let count = Arc::new(AtomicU32::new(0));
    let handler = |c: Arc<AtomicU32>| {
        move |_d: Delivery| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(None)
            }
        }
    };
    let mut w = watcher(&url, &["signalbox/_health/offline"]).await;
    let running = start(
        &config,
        options(&config, "offline", "signalbox/dev/o/#"),
        handler(count.clone()),
    );
    wait_health(&mut w, "offline", HealthState::Up).await;
    running.stop().await;
    let stopped = wait_health(&mut w, "offline", HealthState::Stopped).await;
    assert_eq!(stopped.listener, "offline");
    let p = client(&url, "p4").await;
    for i in 0..20 {
        publish_envelope(&p, "signalbox/dev/o/x", &format!("while away {i}")).await;
    }
    let running = start(
        &config,
        options(&config, "offline", "signalbox/dev/o/#"),
        handler(count.clone()),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while count.load(Ordering::SeqCst) < 20 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let summary = running.stop().await;
    assert_eq!(count.load(Ordering::SeqCst), 20);
    assert_eq!(summary.counters.processed, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_is_survived_without_operator_action() {
    let Some(mut m) = mosquitto_persistent("a_broker_restart_is_survived") else {
        return;
    };
    let url = m.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(&url, &state(dir.path()), 1);
    let count = Arc::new(AtomicU32::new(0));
    let c = count.clone();
    let mut w = watcher(&url, &["signalbox/_health/restart"]).await;
    let running = start(
        &config,
        options(&config, "restart", "signalbox/dev/r/#"),
        move |_d| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(None)
            }
        },
    );
    wait_health(&mut w, "restart", HealthState::Up).await;
    drop(w);
    m.restart(true);
    let p = client(&url, "p5").await;
    for i in 0..10 {
        publish_envelope(&p, "signalbox/dev/r/x", &format!("after restart {i}")).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while count.load(Ordering::SeqCst) < 10 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        10,
        "resumed after the restart"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_group_splits_the_work_exactly_once() {
    let Some(m) = mosquitto("a_share_group_splits_the_work") else {
        return;
    };
    let url = m.url();
    let ids = Arc::new(Mutex::new(Vec::<(u8, String)>::new()));
    let mut running = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = watcher(&url, &["signalbox/_health/shared"]).await;
    for instance in 0..2u8 {
        let config = test_config(&url, &dir.path().join(format!("state{instance}")), 1);
        let mut o = options(&config, "shared", "signalbox/dev/s/#");
        o.share_group = Some("workers".into());
        let ids = ids.clone();
        running.push(start(&config, o, move |d: Delivery| {
            let ids = ids.clone();
            async move {
                ids.lock().expect("lock").push((instance, d.id.clone()));
                Ok(None)
            }
        }));
        wait_health(&mut w, "shared", HealthState::Up).await;
    }
    let p = client(&url, "p6").await;
    let mut pending = Vec::new();
    let mut sent = Vec::new();
    for i in 0..1000 {
        let env = Envelope::builder("signalbox/dev/s/x", format!("job {i}"))
            .build()
            .expect("env");
        sent.push(env.id.to_string());
        pending.push(
            p.publish(Publish::new(
                "signalbox/dev/s/x",
                env.to_vec(),
                Qos::AtLeastOnce,
                false,
            ))
            .await
            .expect("queued"),
        );
    }
    for c in pending {
        c.wait(WAIT).await.expect("confirmed");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while ids.lock().expect("lock").len() < 1000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in running {
        r.stop().await;
    }
    let ids = ids.lock().expect("lock").clone();
    let mut handled: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
    handled.sort();
    sent.sort();
    assert_eq!(handled, sent, "every message exactly once");
    let first = ids.iter().filter(|(i, _)| *i == 0).count();
    assert!(
        first > 0 && first < 1000,
        "both instances took part: {first} / {}",
        1000 - first
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_and_replies_reach_the_requester() {
    let broker = embedded_broker();
    let url = broker.url_v5().expect("v5");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(&url, &state(dir.path()), 60);
    config.mqtt_version.value = 5;
    let running = start(
        &config,
        options(&config, "answer", "signalbox/dev/q/#"),
        |d: Delivery| async move { Ok(Some(Bytes::from(format!("answer to {}", d.summary())))) },
    );
    let mut o = ConnectOptions::for_url(&url, "req").expect("url");
    o.protocol = signalbox_common::mqtt::Protocol::V5;
    let mut w = Connection::connect(o).await.expect("connect");
    w.subscribe(
        &[
            ("signalbox/_health/answer".into(), Qos::AtLeastOnce),
            ("r/#".into(), Qos::AtLeastOnce),
        ],
        WAIT,
    )
    .await
    .expect("sub");
    let first = wait_health(&mut w, "answer", HealthState::Up).await;
    // With a 60 s interval, only a ping makes a new report now.
    w.publish_confirmed(
        Publish::new(
            topic::ping_topic("signalbox"),
            Vec::new(),
            Qos::AtLeastOnce,
            false,
        ),
        WAIT,
    )
    .await
    .expect("ping");
    let second = wait_health(&mut w, "answer", HealthState::Up).await;
    assert!(second.last_seen >= first.last_seen);
    // Request/reply over MQTT 5 properties.
    let env = Envelope::builder("signalbox/dev/q/ask", "the question")
        .reply_to("r/1")
        .build()
        .expect("env");
    let mut p = Publish::new("signalbox/dev/q/ask", env.to_vec(), Qos::AtLeastOnce, false);
    p.response_topic = Some("r/1".into());
    p.correlation = Some(Bytes::from_static(b"corr-1"));
    w.publish_confirmed(p, WAIT).await.expect("request");
    let deadline = tokio::time::Instant::now() + WAIT;
    let reply = loop {
        let m = tokio::time::timeout_at(deadline, w.recv())
            .await
            .expect("a reply")
            .expect("open");
        if m.topic == "r/1" {
            break m;
        }
    };
    assert_eq!(&reply.payload[..], b"answer to the question");
    assert_eq!(reply.correlation.as_deref(), Some(&b"corr-1"[..]));
    running.stop().await;
}

/// Regression: a persistent session with a large queue delivers it before
/// the SUBACK; the listener must read while it subscribes, or the
/// connection stalls (seen with the embedded broker and 2,000 queued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_queue_waiting_for_a_returning_listener_is_drained() {
    let broker = embedded_broker();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(&url, &state(dir.path()), 1);
    let count = Arc::new(AtomicU32::new(0));
    let handler = |c: Arc<AtomicU32>| {
        move |_d: Delivery| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(None)
            }
        }
    };
    let mut w = watcher(&url, &["signalbox/_health/backlog"]).await;
    let running = start(
        &config,
        options(&config, "backlog", "signalbox/dev/q/#"),
        handler(count.clone()),
    );
    wait_health(&mut w, "backlog", HealthState::Up).await;
    running.stop().await;
    let p = client(&url, "p-backlog").await;
    let mut pending = Vec::new();
    for i in 0..5000 {
        let e = Envelope::builder("signalbox/dev/q/x", format!("queued {i}"))
            .build()
            .expect("env");
        pending.push(
            p.publish(Publish::new(
                "signalbox/dev/q/x",
                e.to_vec(),
                Qos::AtLeastOnce,
                false,
            ))
            .await
            .expect("queued"),
        );
    }
    for c in pending {
        c.wait(WAIT).await.expect("confirmed");
    }
    let running = start(
        &config,
        options(&config, "backlog", "signalbox/dev/q/#"),
        handler(count.clone()),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::SeqCst) < 5000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        5000,
        "the whole queue was handled"
    );
    running.stop().await;
}

/// An old copy of a failure record the operator acknowledged — re-sent by
/// the listener's connection after a reconnect (its re-send window), or
/// handed back by a bridged broker after a link outage — is cleared again
/// by the listener instead of standing as an open record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_copy_of_an_acknowledged_record_is_cleared_again() {
    let broker = embedded_broker();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(&url, &state(dir.path()), 1);
    let running = start(
        &config,
        options(&config, "ghost", "signalbox/dev/g/#"),
        |_d: Delivery| async { Err("the tracker is down".into()) },
    );
    let mut w = watcher(
        &url,
        &[
            "signalbox/_health/ghost",
            "signalbox/_failed/ghost/+",
            "signalbox/_failed/ghost",
        ],
    )
    .await;
    wait_health(&mut w, "ghost", HealthState::Up).await;
    let p = client(&url, "p-ghost").await;
    let env = publish_envelope(&p, "signalbox/dev/g/x", "doomed").await;
    let id = env.id.to_string();
    let record = wait_record(&mut w, |r| r.id == id).await;
    let record_topic = topic::failed_topic("signalbox", "ghost", &id);

    // The operator acknowledges it (what `signalbox failed ack` publishes).
    p.publish_confirmed(
        Publish::new(&record_topic, Vec::new(), Qos::AtLeastOnce, true),
        WAIT,
    )
    .await
    .expect("ack confirmed");
    // The listener has taken the ack in once its failure index no longer
    // lists the record (republished at its next heartbeat).
    let index_topic = topic::failed_index_topic("signalbox", "ghost");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = tokio::time::timeout_at(deadline, w.recv())
            .await
            .expect("the index without the record")
            .expect("open");
        if m.topic == index_topic && m.payload.as_ref() == b"[]" {
            break;
        }
    }

    // The old copy comes back, retained.
    p.publish_confirmed(
        Publish::new(&record_topic, record.to_vec(), Qos::AtLeastOnce, true),
        WAIT,
    )
    .await
    .expect("old copy confirmed");
    let mut cleared_again = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, w.recv()).await {
        if m.topic == record_topic && m.payload.is_empty() {
            cleared_again = true;
            break;
        }
    }
    assert!(cleared_again, "the listener clears the old copy again");
    // Nothing is retained there any more: a new subscriber gets nothing.
    let mut fresh = watcher(&url, &[record_topic.as_str()]).await;
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), fresh.recv()).await {
        assert!(
            m.payload.is_empty(),
            "no record retained on {record_topic}: {:?}",
            String::from_utf8_lossy(&m.payload)
        );
    }
    running.stop().await;
}
