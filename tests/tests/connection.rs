//! signalbox-common's MQTT connection against real brokers: confirmed
//! publishes, MQTT 3.1.1 and 5, manual acks, renewal of subscriptions after
//! a broker restart, failover between brokers, and clear connect errors.

use std::time::Duration;

use signalbox_common::mqtt::{
    ConnState, ConnectOptions, Connection, MqttError, Protocol, Publish, Qos,
};
use signalbox_e2e::{embedded_broker, free_port, mosquitto, mosquitto_on_port};

const WAIT: Duration = Duration::from_secs(10);

async fn recv(conn: &mut Connection) -> signalbox_common::mqtt::Message {
    tokio::time::timeout(WAIT, conn.recv())
        .await
        .expect("a message within 10 s")
        .expect("connection open")
}

async fn connect(url: &str, id: &str, protocol: Protocol) -> Connection {
    let mut o = ConnectOptions::for_url(url, id).expect("url");
    o.protocol = protocol;
    Connection::connect(o).await.expect("connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_publish_and_subscribe_on_both_protocol_versions() {
    let broker = embedded_broker();
    for (url, protocol) in [
        (broker.url(), Protocol::V311),
        (broker.url_v5().expect("v5"), Protocol::V5),
    ] {
        let mut sub = connect(&url, &format!("sub-{protocol:?}"), protocol).await;
        let granted = sub
            .subscribe(&[("t/#".to_string(), Qos::AtLeastOnce)], WAIT)
            .await
            .expect("subscribed");
        assert_eq!(granted.len(), 1);
        let publisher = connect(&url, &format!("pub-{protocol:?}"), protocol).await;
        for i in 0..100u32 {
            publisher
                .publish_confirmed(
                    Publish::new(format!("t/{i}"), format!("m{i}"), Qos::AtLeastOnce, false),
                    WAIT,
                )
                .await
                .expect("confirmed");
        }
        for i in 0..100u32 {
            let m = recv(&mut sub).await;
            assert_eq!(m.topic, format!("t/{i}"), "{protocol:?}: order kept");
            assert_eq!(&m.payload[..], format!("m{i}").as_bytes());
        }
        publisher.disconnect().await;
        sub.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_confirmations_in_flight_all_resolve() {
    let broker = embedded_broker();
    let conn = connect(&broker.url(), "burst", Protocol::V311).await;
    let mut pending = Vec::new();
    for i in 0..5000u32 {
        pending.push(
            conn.publish(Publish::new(
                "burst/x",
                i.to_string(),
                Qos::AtLeastOnce,
                false,
            ))
            .await
            .expect("queued"),
        );
    }
    for c in pending {
        c.wait(WAIT).await.expect("every publish confirmed");
    }
    conn.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_request_properties_reach_the_subscriber() {
    let broker = embedded_broker();
    let url = broker.url_v5().expect("v5");
    let mut sub = connect(&url, "v5-sub", Protocol::V5).await;
    sub.subscribe(&[("req/#".to_string(), Qos::AtLeastOnce)], WAIT)
        .await
        .expect("sub");
    let publisher = connect(&url, "v5-pub", Protocol::V5).await;
    let mut p = Publish::new("req/x", "question", Qos::AtLeastOnce, false);
    p.response_topic = Some("reply/x".into());
    p.correlation = Some(bytes_of("abc"));
    publisher
        .publish_confirmed(p, WAIT)
        .await
        .expect("confirmed");
    let m = recv(&mut sub).await;
    assert_eq!(m.response_topic.as_deref(), Some("reply/x"));
    assert_eq!(m.correlation.as_deref(), Some(&b"abc"[..]));
}

fn bytes_of(s: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_acks_hold_a_message_until_acknowledged() {
    let Some(m) = mosquitto("manual_acks_hold_a_message_until_acknowledged") else {
        return;
    };
    let url = m.url();
    let persistent = |id: &str| {
        let mut o = ConnectOptions::for_url(&url, id).expect("url");
        o.clean_session = false;
        o.manual_acks = true;
        o
    };
    // Subscribe with a persistent session, receive without acking, vanish.
    let mut first = Connection::connect(persistent("acker"))
        .await
        .expect("connect");
    first
        .subscribe(&[("work/#".into(), Qos::AtLeastOnce)], WAIT)
        .await
        .expect("sub");
    let publisher = connect(&url, "work-pub", Protocol::V311).await;
    publisher
        .publish_confirmed(Publish::new("work/1", "job", Qos::AtLeastOnce, false), WAIT)
        .await
        .expect("confirmed");
    let got = recv(&mut first).await;
    assert_eq!(&got.payload[..], b"job");
    drop(first); // no ack, no DISCONNECT
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The broker redelivers the unacknowledged message to the same session.
    let mut second = Connection::connect(persistent("acker"))
        .await
        .expect("reconnect");
    let again = recv(&mut second).await;
    assert_eq!(&again.payload[..], b"job");
    second.ack(&again).await.expect("ack");
    tokio::time::sleep(Duration::from_millis(300)).await;
    second.disconnect().await;
    // Acknowledged now: a third session gets nothing more.
    let mut third = Connection::connect(persistent("acker"))
        .await
        .expect("reconnect");
    assert!(
        tokio::time::timeout(Duration::from_millis(800), third.recv())
            .await
            .is_err(),
        "nothing redelivered after the ack"
    );
    third.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_renewed_after_a_broker_restart() {
    let Some(m) = mosquitto("subscriptions_are_renewed_after_a_broker_restart") else {
        return;
    };
    let port = m.port;
    let url = m.url();
    let mut o = ConnectOptions::for_url(&url, "renew").expect("url");
    o.retry_initial = true;
    let mut sub = Connection::connect(o).await.expect("connect");
    let mut state = sub.state_watch();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnState::Connected { .. })),
    )
    .await
    .expect("connected in time")
    .expect("state");
    sub.subscribe(&[("r/#".into(), Qos::AtLeastOnce)], WAIT)
        .await
        .expect("sub");
    drop(m); // kill the broker (no persistence: the session is gone)
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnState::Reconnecting { .. })),
    )
    .await
    .expect("reconnecting shown")
    .expect("state");
    let m2 = mosquitto_on_port("subscriptions_are_renewed_after_a_broker_restart", port)
        .expect("restart");
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnState::Connected { .. })),
    )
    .await
    .expect("reconnected within 10 s")
    .expect("state");
    let publisher = connect(&m2.url(), "renew-pub", Protocol::V311).await;
    // The renewed SUBSCRIBE may still be on its way: publish until it lands.
    let mut got = None;
    for _ in 0..50 {
        publisher
            .publish_confirmed(
                Publish::new("r/x", "after restart", Qos::AtLeastOnce, false),
                WAIT,
            )
            .await
            .expect("confirmed");
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            got = Some(m);
            break;
        }
    }
    let got = got.expect("the subscription was renewed");
    assert_eq!(&got.payload[..], b"after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_next_broker() {
    let broker = embedded_broker();
    let dead = format!("mqtt://127.0.0.1:{}", free_port());
    let mut o = ConnectOptions::for_url(&dead, "failover").expect("url");
    o.brokers
        .push(signalbox_common::mqtt::BrokerUrl::parse(&broker.url()).expect("url"));
    let conn = Connection::connect(o)
        .await
        .expect("the second broker is used");
    match conn.publisher().state() {
        ConnState::Connected { broker: b } => assert_eq!(b, broker.url()),
        other => panic!("not connected: {other:?}"),
    }
    conn.publish_confirmed(Publish::new("f/x", "ok", Qos::AtLeastOnce, false), WAIT)
        .await
        .expect("confirmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_name_the_broker_and_the_reason() {
    let dead = format!("mqtt://127.0.0.1:{}", free_port());
    let err = Connection::connect(ConnectOptions::for_url(&dead, "x").expect("url"))
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, MqttError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach broker {dead}")),
        "{err}"
    );

    let mut o = ConnectOptions::for_url("mqtts://127.0.0.1:1", "x").expect("url");
    o.ca_file = Some("/nonexistent/ca.pem".into());
    let err = Connection::connect(o).await.err().expect("no CA file");
    assert!(
        err.to_string()
            .contains("cannot read CA file /nonexistent/ca.pem"),
        "{err}"
    );
}

/// Regression: acks given out of order (a listener acks control messages at
/// once and work after processing) go out in receipt order; rumqttd drops a
/// client whose PUBACKs are out of order (MQTT 3.1.1 §4.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_acks_go_out_in_receipt_order() {
    let broker = embedded_broker();
    let url = broker.url();
    let mut o = ConnectOptions::for_url(&url, "ordered-acks").expect("url");
    o.clean_session = false;
    o.manual_acks = true;
    let mut sub = Connection::connect(o).await.expect("connect");
    sub.subscribe(&[("o/#".into(), Qos::AtLeastOnce)], WAIT)
        .await
        .expect("sub");
    let mut state = sub.state_watch();
    let publisher = connect(&url, "ordered-pub", Protocol::V311).await;
    for i in 0..3 {
        publisher
            .publish_confirmed(
                Publish::new("o/x", format!("m{i}"), Qos::AtLeastOnce, false),
                WAIT,
            )
            .await
            .expect("confirmed");
    }
    let got = [
        recv(&mut sub).await,
        recv(&mut sub).await,
        recv(&mut sub).await,
    ];
    for m in got.iter().rev() {
        sub.ack(m).await.expect("ack");
    }
    publisher
        .publish_confirmed(Publish::new("o/x", "m3", Qos::AtLeastOnce, false), WAIT)
        .await
        .expect("confirmed");
    let fourth = recv(&mut sub).await;
    assert_eq!(
        &fourth.payload[..],
        b"m3",
        "no redelivery: the acks were accepted"
    );
    sub.ack(&fourth).await.expect("ack");
    let dropped = tokio::time::timeout(
        Duration::from_millis(500),
        state.wait_for(|s| !matches!(s, ConnState::Connected { .. })),
    )
    .await;
    assert!(dropped.is_err(), "the broker kept the connection");
}

/// Failover in use: with two brokers listed, a connection on the first
/// moves to the second when the first is killed (SIGKILL), within the
/// capped backoff; it renews its subscriptions there and sends its re-send
/// window (the publishes the first confirmed just before it died) to the
/// second, in order. Two independent mosquittos share no state, so this
/// checks the client's behaviour; tests/tests/rabbit_cluster.rs checks
/// persistence across a failover inside one cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_lost_in_use_moves_the_connection_to_the_next_with_its_resend_window() {
    const TEST: &str =
        "a_broker_lost_in_use_moves_the_connection_to_the_next_with_its_resend_window";
    let Some(mut first) = mosquitto(TEST) else {
        return;
    };
    let Some(second) = mosquitto(TEST) else {
        return;
    };
    let mut o = ConnectOptions::for_url(&first.url(), "mover").expect("url");
    o.brokers
        .push(signalbox_common::mqtt::BrokerUrl::parse(&second.url()).expect("url"));
    let mut conn = Connection::connect(o).await.expect("connects");
    assert_eq!(
        conn.publisher().state(),
        ConnState::Connected {
            broker: first.url()
        },
        "the first broker listed is used first"
    );
    conn.subscribe(&[("mv/#".into(), Qos::AtLeastOnce)], WAIT)
        .await
        .expect("sub");
    let mut watcher = connect(&second.url(), "mv-watch", Protocol::V311).await;
    watcher
        .subscribe(&[("mv/#".into(), Qos::AtLeastOnce)], WAIT)
        .await
        .expect("sub");
    for i in 0..3 {
        conn.publish_confirmed(
            Publish::new("mv/before", format!("b{i}"), Qos::AtLeastOnce, false),
            WAIT,
        )
        .await
        .expect("confirmed by the first broker");
        assert_eq!(
            &recv(&mut conn).await.payload[..],
            format!("b{i}").as_bytes()
        );
    }
    let mut state = conn.state_watch();
    first.stop(false);
    let killed = std::time::Instant::now();
    let second_url = second.url();
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| matches!(s, ConnState::Connected { broker } if *broker == second_url)),
    )
    .await
    .expect("connected to the second broker within 5 s")
    .expect("state");
    eprintln!(
        "failover to the second broker {:?} after the first was killed",
        killed.elapsed()
    );
    // The re-send window went to the new broker, in order.
    for i in 0..3 {
        assert_eq!(
            &recv(&mut watcher).await.payload[..],
            format!("b{i}").as_bytes(),
            "re-sent to the second broker"
        );
    }
    // The subscription was renewed there (the renewal may still be on its
    // way: publish until it lands; repeats of the window may come first).
    let mut renewed = false;
    'outer: for _ in 0..50 {
        watcher
            .publish_confirmed(Publish::new("mv/after", "a", Qos::AtLeastOnce, false), WAIT)
            .await
            .expect("confirmed");
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), conn.recv()).await
        {
            if m.topic == "mv/after" {
                renewed = true;
                break 'outer;
            }
        }
    }
    assert!(renewed, "the subscription was renewed on the second broker");
    conn.disconnect().await;
}
