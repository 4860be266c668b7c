//! The ingest task against the embedded broker: what is published reaches
//! the model, and the operator's acknowledge reaches the broker.

use std::time::Duration;

use signalbox_common::broker::{BrokerOptions, EmbeddedBroker};
use signalbox_common::health::HealthState;
use signalbox_common::mqtt::{ConnState, ConnectOptions, Connection, Publish, Qos};
use tokio::sync::mpsc;

use super::*;
use crate::app::fixtures::{app, health, record};
use crate::app::{update, App, Effect};

/// Applies events until `done` holds or 10 s pass.
async fn until(
    app: &mut App,
    rx: &mut mpsc::Receiver<Event>,
    what: &str,
    done: impl Fn(&App) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(app) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) => update(app, event),
            Ok(None) => panic!("ingest stopped while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_health_failure_and_ack_round_trip_through_the_broker() {
    let broker = tokio::task::spawn_blocking(|| EmbeddedBroker::start(&BrokerOptions::ephemeral()))
        .await
        .expect("join")
        .expect("broker starts");
    let url = broker.url();
    let (tx, mut rx) = mpsc::channel(CHANNEL_CAP);
    let identity = Identity {
        prefix: "signalbox".into(),
        env: "dev".into(),
        user: "ops".into(),
    };
    let ingest = spawn(
        ConnectOptions::for_url(&url, "console-test").expect("url"),
        identity,
        tx,
    );
    let mut app = app();
    until(&mut app, &mut rx, "connected", |a| {
        matches!(a.conn.state, ConnState::Connected { .. })
    })
    .await;
    // The console pings once subscribed: its own ping shows that the
    // subscription is in place.
    until(&mut app, &mut rx, "the first ping", |a| {
        a.stream.iter().any(|m| &*m.topic == "signalbox/_ping")
    })
    .await;

    let publisher =
        Connection::connect(ConnectOptions::for_url(&url, "test-publisher").expect("url"))
            .await
            .expect("connects");
    let send = |topic: &str, payload: Vec<u8>, retain: bool| {
        Publish::new(topic.to_string(), payload, Qos::AtLeastOnce, retain)
    };
    let t = Duration::from_secs(5);
    publisher
        .publish_confirmed(
            send("signalbox/dev/git/kernel/commit", b"hello".to_vec(), false),
            t,
        )
        .await
        .expect("pub");
    publisher
        .publish_confirmed(
            send("signalbox/dev/lab/reading", vec![0, 0xff, 0x89], false),
            t,
        )
        .await
        .expect("pub");
    publisher
        .publish_confirmed(
            send("signalbox/_health/broken", b"{\"state\":1}".to_vec(), true),
            t,
        )
        .await
        .expect("pub");
    publisher
        .publish_confirmed(
            send(
                "signalbox/_health/mail-notify",
                health("mail-notify", HealthState::Up, 0),
                true,
            ),
            t,
        )
        .await
        .expect("pub");
    let id = "0193a0b0-0000-7000-8000-000000000001";
    let record_topic = format!("signalbox/_failed/mail-notify/{id}");
    publisher
        .publish_confirmed(
            send(
                &record_topic,
                record("mail-notify", id, b"text", 1, 0),
                true,
            ),
            t,
        )
        .await
        .expect("pub");

    until(&mut app, &mut rx, "the message", |a| {
        a.stream
            .iter()
            .any(|m| &*m.topic == "signalbox/dev/git/kernel/commit" && &*m.summary == "hello")
    })
    .await;
    until(&mut app, &mut rx, "the listener rows", |a| {
        a.listeners.len() == 2
    })
    .await;
    assert!(app
        .listeners
        .get("mail-notify")
        .and_then(|l| l.report.as_ref())
        .is_some_and(|r| r.is_ok()));
    assert!(app
        .listeners
        .get("broken")
        .and_then(|l| l.report.as_ref())
        .is_some_and(|r| r.is_err()));
    until(&mut app, &mut rx, "the failed row", |a| a.failed.len() == 1).await;
    assert!(app.stream.iter().any(|m| m.payload.kind() == "binary"));

    // Acknowledge: the record disappears when the broker echoes the
    // deletion, and the audit envelope is on the bus.
    assert!(ingest.send(Effect::Ack {
        listener: "mail-notify".into(),
        records: vec![(id.into(), record_topic.clone())]
    }));
    until(&mut app, &mut rx, "the record to go", |a| {
        a.failed.is_empty()
    })
    .await;
    until(&mut app, &mut rx, "the audit envelope", |a| {
        a.stream
            .iter()
            .any(|m| &*m.topic == "signalbox/_audit" && m.summary.contains("ops acknowledged 1"))
    })
    .await;
    // A new subscriber sees no retained record any more.
    let mut check = Connection::connect(ConnectOptions::for_url(&url, "test-check").expect("url"))
        .await
        .expect("connects");
    check
        .subscribe(&[(record_topic.clone(), Qos::AtMostOnce)], t)
        .await
        .expect("subscribes");
    let retained = tokio::time::timeout(Duration::from_millis(500), check.recv()).await;
    assert!(
        retained.is_err()
            || retained
                .ok()
                .flatten()
                .is_some_and(|m| m.payload.is_empty())
    );

    // Replay: a ReplayRequest reaches `_replay/{listener}`.
    assert!(ingest.send(Effect::Replay {
        listener: "mail-notify".into(),
        ids: vec![id.into()]
    }));
    until(&mut app, &mut rx, "the replay request", |a| {
        a.stream
            .iter()
            .any(|m| &*m.topic == "signalbox/_replay/mail-notify")
    })
    .await;
    let request = app
        .stream
        .iter()
        .find(|m| &*m.topic == "signalbox/_replay/mail-notify")
        .map(|m| m.summary.to_string());
    assert!(request.is_some_and(|s| s.contains(id) && s.contains("reply_to")));
}
