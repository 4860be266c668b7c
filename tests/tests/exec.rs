//! `signalbox-bridge exec`, the shell listener, as a real process against
//! real brokers: stdin and environment, failures with exit status and
//! stderr, a missing command, timeouts, replies, debouncing, and its health
//! when killed (-9: the will says down) or stopped (SIGTERM: stopped).

mod outbound_support;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use outbound_support::{client, health, record, wait_file, watch, WAIT};
use signalbox_common::envelope::Envelope;
use signalbox_common::health::HealthState;
use signalbox_common::mqtt::{Connection, Publish, Qos};
use signalbox_e2e::{embedded_broker, mosquitto, KillOnDrop};

fn exec(url: &str, state: &Path, name: &str, extra: &[&str], command: &[&str]) -> Child {
    let filter = format!("signalbox/dev/{name}/#");
    let mut args = vec!["exec", "--name", name, "--filter", filter.as_str()];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(command);
    outbound_support::start(url, state, &args)
}

async fn send(p: &Connection, topic: &str, summary: &str) -> Envelope {
    outbound_support::send(p, Envelope::builder(topic, summary).build().expect("env")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_the_command_with_payload_and_environment_and_records_failures() {
    let broker = embedded_broker();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let script = format!(
        r#"body=$(cat); echo "$SIGNALBOX_TOPIC|$SIGNALBOX_SUMMARY|$SIGNALBOX_SEVERITY|$SIGNALBOX_ID|${{#body}}" >> {log}; case "$SIGNALBOX_SUMMARY" in fail*) echo "cannot reach tracker" >&2; exit 3;; slow*) sleep 30;; esac"#,
        log = log.display()
    );
    let mut w = watch(
        &url,
        &["signalbox/_health/hook", "signalbox/_failed/hook/+"],
    )
    .await;
    let _exec = KillOnDrop(exec(
        &url,
        &dir.path().join("state"),
        "hook",
        &["--retries", "2", "--timeout", "1"],
        &["sh", "-c", &script],
    ));
    health(&mut w, "hook", HealthState::Up).await;
    let p = client(&url).await;
    let ok = send(&p, "signalbox/dev/hook/bug/1", "bug 1 changed").await;
    let text = wait_file(&log, |t| t.contains("bug 1 changed")).await;
    let line = text.lines().next().unwrap_or_default().to_string();
    let fields: Vec<&str> = line.split('|').collect();
    assert_eq!(
        fields[..4],
        [
            "signalbox/dev/hook/bug/1",
            "bug 1 changed",
            "info",
            ok.id.to_string().as_str()
        ],
        "{line}"
    );
    assert_eq!(
        fields[4],
        ok.to_vec().len().to_string(),
        "the whole payload on stdin"
    );

    let bad = send(&p, "signalbox/dev/hook/bug/2", "fail: bug 2").await;
    let r = record(&mut w, &bad.id.to_string()).await;
    assert_eq!(r.error, "exit status 3: cannot reach tracker");
    assert_eq!(r.attempts, 1);
    assert_eq!(
        wait_file(&log, |t| t.matches("fail: bug 2").count() == 2)
            .await
            .matches("fail: bug 2")
            .count(),
        2,
        "--retries 2"
    );

    let slow = send(&p, "signalbox/dev/hook/bug/3", "slow bug 3").await;
    let r = record(&mut w, &slow.id.to_string()).await;
    assert_eq!(r.error, "timed out after 1.0 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_command_fails_every_message_visibly() {
    let broker = embedded_broker();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = watch(
        &url,
        &["signalbox/_health/ghost", "signalbox/_failed/ghost/+"],
    )
    .await;
    let _exec = KillOnDrop(exec(
        &url,
        &dir.path().join("state"),
        "ghost",
        &["--retries", "1"],
        &["/nonexistent/notify"],
    ));
    health(&mut w, "ghost", HealthState::Up).await;
    let p = client(&url).await;
    for n in 0..2 {
        let e = send(&p, "signalbox/dev/ghost/x", &format!("message {n}")).await;
        let r = record(&mut w, &e.id.to_string()).await;
        assert!(
            r.error.starts_with("cannot run \"/nonexistent/notify\""),
            "{}",
            r.error
        );
    }
    let degraded = health(&mut w, "ghost", HealthState::Degraded).await;
    assert!(degraded
        .last_error
        .unwrap_or_default()
        .contains("cannot run"));
    assert_eq!(degraded.counters.failed, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_and_debounced_bursts() {
    let broker = embedded_broker();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = watch(&url, &["signalbox/_health/+", "r/#"]).await;
    let _answer = KillOnDrop(exec(
        &url,
        &dir.path().join("s1"),
        "owner",
        &["--reply"],
        &["sh", "-c", "echo \"owner of $SIGNALBOX_SUMMARY: jkeating\""],
    ));
    let log = dir.path().join("regen");
    let regen = format!(
        "echo \"run burst=$SIGNALBOX_BURST last=$SIGNALBOX_SUMMARY\" >> {}",
        log.display()
    );
    let _regen = KillOnDrop(exec(
        &url,
        &dir.path().join("s2"),
        "aliases",
        &["--debounce", "400ms"],
        &["sh", "-c", &regen],
    ));
    health(&mut w, "owner", HealthState::Up).await;
    health(&mut w, "aliases", HealthState::Up).await;

    let p = client(&url).await;
    let e = Envelope::builder("signalbox/dev/owner/query", "kernel")
        .reply_to("r/1")
        .build()
        .expect("env");
    p.publish_confirmed(
        Publish::new(e.topic.clone(), e.to_vec(), Qos::AtLeastOnce, false),
        WAIT,
    )
    .await
    .expect("pub");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = tokio::time::timeout_at(deadline, w.recv())
            .await
            .expect("a reply")
            .expect("open");
        if m.topic == "r/1" {
            assert_eq!(&m.payload[..], b"owner of kernel: jkeating\n");
            break;
        }
    }

    for n in 0..10 {
        send(&p, "signalbox/dev/aliases/owner", &format!("change {n}")).await;
    }
    let text = wait_file(&log, |t| !t.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let text = std::fs::read_to_string(&log).unwrap_or(text);
    assert_eq!(
        text.trim(),
        "run burst=10 last=change 9",
        "one run for the whole burst"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_shows_down_through_the_will_and_sigterm_shows_stopped() {
    let Some(m) = mosquitto("kill_9_shows_down_through_the_will") else {
        return;
    };
    let url = m.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = watch(&url, &["signalbox/_health/victim"]).await;
    let mut child = exec(&url, &dir.path().join("state"), "victim", &[], &["true"]);
    health(&mut w, "victim", HealthState::Up).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let down = health(&mut w, "victim", HealthState::Down).await;
    assert_eq!(down.last_error.as_deref(), Some("connection lost"));
    // The operator's check sees it too, through the retained will.
    let url2 = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        signalbox_e2e::run_with_limit(
            signalbox_e2e::signalbox(&url2).args(["health", "--expect", "victim"]),
            WAIT,
        )
    })
    .await
    .expect("join");
    assert_eq!(
        out.code, 1,
        "health fails while a listener is down: {}",
        out.stdout
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("victim") && l.contains("down")),
        "{}",
        out.stdout
    );

    let child = exec(&url, &dir.path().join("state"), "victim", &[], &["true"]);
    health(&mut w, "victim", HealthState::Up).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || signalbox_e2e::wait_with_limit(child, WAIT))
        .await
        .expect("join");
    assert_eq!(out.code, 0, "a graceful stop exits 0");
    health(&mut w, "victim", HealthState::Stopped).await;
    let _ = &m;
}
