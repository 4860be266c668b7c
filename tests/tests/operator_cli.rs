//! The operator's commands against a live listener: `signalbox health`
//! (exit codes for up, stale, invalid, never seen, unreachable),
//! `signalbox failed list|show|ack|replay --wait` with `_audit` events, and
//! `signalbox request` answered by a listener's reply.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use signalbox_common::config::Config;
use signalbox_common::envelope::Envelope;
use signalbox_common::health::{HealthReport, HealthState};
use signalbox_common::listener::{self, Delivery, ListenerOptions};
use signalbox_common::mqtt::{ConnectOptions, Connection, Publish, Qos};
use signalbox_e2e::{
    embedded_broker, free_port, mosquitto, run_with_limit, signalbox, test_config,
};
use tokio::sync::oneshot;

const LIMIT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(10);

fn spawn_listener(
    config: &Config,
    name: &str,
    filter: &str,
    fixed: Arc<AtomicBool>,
) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let config = config.clone();
    let mut options = ListenerOptions::new(name, vec![filter.to_string()], &config);
    options.retry_backoff = Duration::from_millis(10);
    tokio::spawn(async move {
        let handler = move |d: Delivery| {
            let fixed = fixed.clone();
            async move {
                if fixed.load(Ordering::SeqCst) {
                    Ok(Some(Bytes::from(format!("done: {}", d.summary()))))
                } else {
                    Err("webhook answered 503".into())
                }
            }
        };
        let _ = listener::run(&config, options, handler, async {
            let _ = stopped.await;
        })
        .await;
    });
    stop
}

async fn client(url: &str) -> Connection {
    let id = format!("op-{}", free_port());
    Connection::connect(ConnectOptions::for_url(url, &id).expect("url"))
        .await
        .expect("connect")
}

/// Runs the signalbox binary off the async runtime's threads.
async fn cli(url: &str, args: &[&str]) -> signalbox_e2e::Finished {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || run_with_limit(signalbox(&url).args(&args), LIMIT))
        .await
        .expect("join")
}

async fn wait_for(mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_messages_are_listed_shown_replayed_and_acknowledged() {
    let Some(m) = mosquitto("failed_messages_are_listed_shown_replayed_and_acknowledged") else {
        return;
    };
    let url = m.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(&url, dir.path(), 2);
    let fixed = Arc::new(AtomicBool::new(false));
    let _stop = spawn_listener(
        &config,
        "bugzilla-hook",
        "signalbox/dev/bug/#",
        fixed.clone(),
    );
    let mut audit = client(&url).await;
    audit
        .subscribe(&[("signalbox/_audit".into(), Qos::AtLeastOnce)], WAIT)
        .await
        .expect("sub");
    // Wait until the listener is subscribed (its health report is up).
    let mut out = cli(&url, &["health", "--expect", "bugzilla-hook"]).await;
    for _ in 0..20 {
        if out.code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        out = cli(&url, &["health", "--expect", "bugzilla-hook"]).await;
    }
    assert_eq!(out.code, 0, "listener up: {}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("bugzilla-hook") && out.stdout.contains(" up "),
        "{}",
        out.stdout
    );

    let p = client(&url).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let e = Envelope::builder(
            "signalbox/dev/bug/123/comment",
            format!("comment {n} on bug 123"),
        )
        .build()
        .expect("env");
        p.publish_confirmed(
            Publish::new(e.topic.clone(), e.to_vec(), Qos::AtLeastOnce, false),
            WAIT,
        )
        .await
        .expect("pub");
        ids.push(e.id.to_string());
    }
    let mut listed = String::new();
    wait_for(|| {
        let out = run_with_limit(signalbox(&url).args(["failed", "list"]), LIMIT);
        listed = out.stdout;
        ids.iter().all(|id| listed.contains(id.as_str()))
    })
    .await;
    assert!(
        listed.contains("comment 0 on bug 123 — webhook answered 503"),
        "{listed}"
    );

    let out = cli(
        &url,
        &["failed", "list", "--json", "--listener", "bugzilla-hook"],
    )
    .await;
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(3));
    assert_eq!(rows[0]["attempts"], 1);

    let out = cli(&url, &["failed", "show", &ids[0]]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let shown: serde_json::Value = serde_json::from_str(&out.stdout).expect("pretty json");
    assert_eq!(shown["envelope"]["summary"], "comment 0 on bug 123");

    // Replay while still broken: reported as failed, exit 1, attempts 2.
    let out = cli(&url, &["failed", "replay", &ids[0], "--wait", "10"]).await;
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "{}  bugzilla-hook  failed (attempt 2: webhook answered 503)",
            ids[0]
        )),
        "{}",
        out.stdout
    );

    // Fixed: replay all clears them.
    fixed.store(true, Ordering::SeqCst);
    let out = cli(
        &url,
        &[
            "failed",
            "replay",
            "--listener",
            "bugzilla-hook",
            "--all",
            "--wait",
            "10",
            &ids[2],
        ],
    )
    .await;
    assert_eq!(out.code, 2, "--all and ids conflict: {}", out.stderr);
    let out = cli(
        &url,
        &[
            "failed",
            "replay",
            ids[0].as_str(),
            ids[1].as_str(),
            "--wait",
            "10",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout.matches(" replayed").count(), 2, "{}", out.stdout);

    // Acknowledge the last one.
    let out = cli(&url, &["failed", "ack", &ids[2]]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("acknowledged 1 failed message"),
        "{}",
        out.stdout
    );
    let out = cli(&url, &["failed", "list"]).await;
    assert!(out.stdout.contains("no failed messages"), "{}", out.stdout);
    let out = cli(&url, &["failed", "ack", "no-such-id"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no failure record with id no-such-id"),
        "{}",
        out.stderr
    );

    // Both operator actions left an audit trail naming the operator.
    let mut actions = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), audit.recv()).await {
        if let Ok(e) = Envelope::from_slice(&msg.payload) {
            actions.push(e.body["action"].as_str().unwrap_or_default().to_string());
            assert!(e.agent.is_some());
        }
    }
    assert!(
        actions.contains(&"replay".to_string()) && actions.contains(&"ack".to_string()),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exit_codes_follow_the_state_of_every_listener() {
    let broker = embedded_broker();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(&url, dir.path(), 2);
    let stop = spawn_listener(
        &config,
        "mail-notify",
        "signalbox/dev/x/#",
        Arc::new(AtomicBool::new(true)),
    );
    let mut out = cli(&url, &["health", "--json"]).await;
    for _ in 0..20 {
        if out.stdout.contains("mail-notify") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        out = cli(&url, &["health", "--json"]).await;
    }
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(rows[0]["listener"], "mail-notify");
    assert_eq!(rows[0]["liveness"], "up");

    let out = cli(&url, &["health", "--expect", "never-started"]).await;
    assert_eq!(
        out.code, 1,
        "an expected listener that was never seen fails the check"
    );
    assert!(
        out.stdout.contains("never-started") && out.stdout.contains("unknown"),
        "{}",
        out.stdout
    );

    // A clean stop is not a problem.
    let _ = stop.send(());
    let mut stopped = false;
    for _ in 0..50 {
        let out = cli(&url, &["health"]).await;
        if out.stdout.contains("stopped") {
            assert_eq!(out.code, 0, "{}", out.stdout);
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stopped, "the stopped report is shown");

    // A stale report (a listener that stopped reporting) and an invalid one.
    let p = client(&url).await;
    let mut stale = HealthReport::new(
        "hung",
        chrono::Utc::now() - chrono::Duration::minutes(10),
        10,
    );
    stale.last_seen = chrono::Utc::now() - chrono::Duration::minutes(5);
    p.publish_confirmed(
        Publish::new(
            "signalbox/_health/hung",
            stale.to_vec(),
            Qos::AtLeastOnce,
            true,
        ),
        WAIT,
    )
    .await
    .expect("pub");
    p.publish_confirmed(
        Publish::new(
            "signalbox/_health/garbled",
            &b"{not json"[..],
            Qos::AtLeastOnce,
            true,
        ),
        WAIT,
    )
    .await
    .expect("pub");
    let out = cli(&url, &["health"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    let line = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("hung").contains("stale") && line("hung").contains("5m ago"),
        "{}",
        out.stdout
    );
    assert!(line("garbled").contains("invalid"), "{}", out.stdout);
    let mut down = stale.clone();
    down.state = HealthState::Down;
    down.listener = "hung".into();
    p.publish_confirmed(
        Publish::new(
            "signalbox/_health/hung",
            down.to_vec(),
            Qos::AtLeastOnce,
            true,
        ),
        WAIT,
    )
    .await
    .expect("pub");
    let out = cli(&url, &["health"]).await;
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("hung") && l.contains("down")),
        "{}",
        out.stdout
    );

    // Exit 2 when the broker cannot be reached at all.
    let out = cli(&format!("mqtt://127.0.0.1:{}", free_port()), &["health"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach broker"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_prints_the_reply_of_a_listener() {
    let broker = embedded_broker();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(&url, dir.path(), 2);
    let _stop = spawn_listener(
        &config,
        "status",
        "signalbox/dev/koji/build/status",
        Arc::new(AtomicBool::new(true)),
    );
    let mut out = cli(
        &url,
        &[
            "request",
            "--timeout",
            "2",
            "signalbox/dev/koji/build/status",
            "status of 88123?",
        ],
    )
    .await;
    for _ in 0..10 {
        if out.code == 0 {
            break;
        }
        out = cli(
            &url,
            &[
                "request",
                "--timeout",
                "2",
                "signalbox/dev/koji/build/status",
                "status of 88123?",
            ],
        )
        .await;
    }
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "done: status of 88123?");
    let out = cli(
        &url,
        &[
            "request",
            "--timeout",
            "1",
            "signalbox/dev/nobody/home",
            "anyone?",
        ],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no reply on"), "{}", out.stderr);
}
