//! AMQP coexistence through RabbitMQ: signalbox over MQTT and AMQP 0-9-1
//! clients (pika, `tests/amqp/pika_client.py`) on the same node.
//!
//! RabbitMQ's MQTT plugin publishes every MQTT message to the `amq.topic`
//! exchange with the topic turned into a routing key (`/` ↔ `.`), and
//! delivers to MQTT subscribers what is routed there, so:
//! - an AMQP consumer bound with `signalbox.#` receives signalbox
//!   envelopes byte for byte as MQTT subscribers do;
//! - an AMQP publish to `amq.topic` reaches `signalbox tail`, an envelope
//!   as an envelope, anything else as text, JSON or binary (never a crash).
//!
//! The mapping is docs/AMQP.md. One RabbitMQ node for this binary (it
//! takes 10–15 s to start): one `#[test]`, the scenarios in sequence. Needs
//! rabbitmq-server, python3 and pika: the test fails without them when
//! `SIGNALBOX_REQUIRE_RABBITMQ=1` (CI), else skips loudly.

mod bridge_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bridge_support::Subscriber;
use signalbox_common::envelope::Envelope;
use signalbox_common::mqtt::{ConnectOptions, Connection, Publish, Qos};
use signalbox_e2e::{rabbit, run_with_limit, signalbox, KillOnDrop, LineReader};

const WAIT: Duration = Duration::from_secs(30);

fn pika_client() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("amqp/pika_client.py")
}

/// Whether python3 and pika are there; fails the test when they are
/// required (`SIGNALBOX_REQUIRE_RABBITMQ=1`), else says loudly it skips.
fn pika_installed(test: &str) -> bool {
    let status = Command::new("python3")
        .arg(pika_client())
        .arg("check")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if status.is_ok_and(|s| s.success()) {
        return true;
    }
    assert!(
        !rabbit::rabbitmq_required(),
        "{test}: python3 with pika is required (SIGNALBOX_REQUIRE_RABBITMQ=1) but missing (python3 -m pip install pika)"
    );
    eprintln!(
        "\n!!! SKIPPED {test}: python3 with pika not installed (python3 -m pip install pika) !!!\n"
    );
    false
}

/// Publishes `body` to `amq.topic` with `routing_key` over AMQP and waits
/// for the broker's confirm.
fn amqp_publish(port: u16, routing_key: &str, body: &[u8], delivery_mode: u8, dir: &Path) {
    let file = dir.join(format!("body-{}", signalbox_e2e::free_port()));
    std::fs::write(&file, body).expect("body file");
    let out = run_with_limit(
        Command::new("python3").arg(pika_client()).args([
            "publish",
            &port.to_string(),
            routing_key,
            &file.display().to_string(),
            &delivery_mode.to_string(),
        ]),
        WAIT,
    );
    assert_eq!(out.code, 0, "AMQP publish to {routing_key}: {}", out.stderr);
}

/// Publishes raw bytes over MQTT and waits for the PUBACK.
fn mqtt_publish(url: &str, topic: &str, payload: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let id = format!("amqp-test-pub-{}", signalbox_e2e::free_port());
        let conn = Connection::connect(ConnectOptions::for_url(url, &id).expect("url"))
            .await
            .expect("connect");
        conn.publish_confirmed(
            Publish::new(topic, payload.to_vec(), Qos::AtLeastOnce, false),
            WAIT,
        )
        .await
        .expect("confirmed");
        conn.disconnect().await;
    });
}

/// One message as the AMQP consumer printed it.
#[derive(Debug)]
struct AmqpMessage {
    routing_key: String,
    body: Vec<u8>,
    delivery_mode: Option<u64>,
    headers: serde_json::Value,
}

fn parse_amqp_line(line: &str) -> AmqpMessage {
    let v: serde_json::Value = serde_json::from_str(line).expect("consumer line is JSON");
    AmqpMessage {
        routing_key: v["routing_key"].as_str().unwrap_or_default().to_string(),
        body: base64::engine::general_purpose::STANDARD
            .decode(v["body_b64"].as_str().unwrap_or_default())
            .expect("base64"),
        delivery_mode: v["delivery_mode"].as_u64(),
        headers: v["headers"].clone(),
    }
}

#[test]
fn amqp_clients_and_signalbox_share_the_bus_through_rabbitmq() {
    const TEST: &str = "amqp_clients_and_signalbox_share_the_bus_through_rabbitmq";
    if !pika_installed(TEST) {
        return;
    }
    // Build the binaries first (`bin` runs cargo build once), so that the
    // scenarios' time limits do not include a build.
    signalbox_e2e::bin("signalbox");
    let Some(node) = rabbit::rabbitmq(TEST) else {
        return;
    };
    let url = node.url();
    let work = tempfile::tempdir().expect("tempdir");
    mqtt_to_amqp(&url, node.amqp_port);
    amqp_to_mqtt(&url, node.amqp_port, work.path());
}

/// What signalbox publishes over MQTT reaches an AMQP consumer bound to
/// `amq.topic` with `signalbox.#`, byte for byte as an MQTT subscriber
/// gets it, with the topic as the routing key (`/` → `.`, `.` → `/`).
fn mqtt_to_amqp(url: &str, amqp_port: u16) {
    const SENT: usize = 5;
    let mut consumer = KillOnDrop(
        Command::new("python3")
            .arg(pika_client())
            .args(["consume", &amqp_port.to_string(), "signalbox.#"])
            .arg(SENT.to_string())
            .arg("120")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the pika consumer"),
    );
    let lines = LineReader::new(&mut consumer.0);
    assert_eq!(
        lines.next_line(WAIT).as_deref(),
        Some("READY"),
        "the AMQP consumer bound its queue"
    );
    let mqtt = Subscriber::start(url, "signalbox/#");
    let plus = Subscriber::start(url, "signalbox/dev/amqp/+/build");

    // An envelope made by `signalbox pub`, one on a topic with a '.' in a
    // level, a raw UTF-8 payload and a binary one.
    for args in [
        vec!["pub", "signalbox/dev/amqp/hello", "hello from MQTT"],
        vec![
            "pub",
            "signalbox/dev/amqp/v1.2/build",
            "a dotted topic level",
        ],
        vec!["pub", "--raw", "signalbox/dev/amqp/raw", "21.5 °C ✓"],
        vec![
            "pub",
            "--retain",
            "signalbox/dev/amqp/state",
            "a retained state",
        ],
    ] {
        let out = run_with_limit(signalbox(url).args(&args), WAIT);
        assert_eq!(out.code, 0, "signalbox {args:?}: {}", out.stderr);
    }
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    mqtt_publish(url, "signalbox/dev/amqp/binary", &binary);
    let out = run_with_limit(
        signalbox(url).args(["pub", "--raw", "--retain", "signalbox/dev/amqp/state", ""]),
        WAIT,
    );
    assert_eq!(out.code, 0, "clearing the retained state: {}", out.stderr);

    let mut amqp = Vec::new();
    while amqp.len() < SENT {
        let line = lines
            .next_line(WAIT)
            .unwrap_or_else(|| panic!("AMQP consumer got {} of {SENT}: {amqp:?}", amqp.len()));
        amqp.push(parse_amqp_line(&line));
    }
    let mqtt = mqtt.take(SENT, WAIT);
    for (m, a) in mqtt.iter().zip(&amqp) {
        eprintln!(
            "AMQP mapping: MQTT topic {} -> routing key {}, delivery_mode {:?}, headers {}",
            m.topic, a.routing_key, a.delivery_mode, a.headers
        );
    }
    let plus = plus.drain(Duration::from_secs(2));
    eprintln!(
        "AMQP mapping: an MQTT subscriber to signalbox/dev/amqp/+/build got {:?}",
        plus.iter().map(|g| g.topic.as_str()).collect::<Vec<_>>()
    );
    for (m, a) in mqtt.iter().zip(&amqp) {
        assert_eq!(
            a.body, m.payload,
            "{}: the AMQP consumer got the bytes an MQTT subscriber got",
            m.topic
        );
        assert_eq!(a.delivery_mode, Some(2), "QoS 1 is a persistent message");
    }
    let keys: Vec<&str> = amqp.iter().map(|a| a.routing_key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "signalbox.dev.amqp.hello",
            "signalbox.dev.amqp.v1.2.build",
            "signalbox.dev.amqp.raw",
            "signalbox.dev.amqp.state",
            "signalbox.dev.amqp.binary",
        ],
        "'/' becomes '.', and a '.' inside a level stays a '.'"
    );
    // RabbitMQ 3.10 does not swap '.' and '/' (its documentation for
    // later versions says it does): a '.' inside a level becomes a level
    // separator for every subscriber, MQTT ones included, and a '+'
    // filter no longer matches. docs/AMQP.md says so; if this fails, the
    // broker changed: update it.
    let topics: Vec<&str> = mqtt.iter().map(|g| g.topic.as_str()).collect();
    assert_eq!(topics[1], "signalbox/dev/amqp/v1/2/build", "{topics:?}");
    assert!(plus.is_empty(), "'+' matched a level with a '.': {plus:?}");
    let envelope = Envelope::from_slice(&amqp[0].body).expect("an envelope intact over AMQP");
    assert_eq!(
        envelope.topic, "signalbox/dev/amqp/hello",
        "the envelope keeps the topic it was published to"
    );
    let dotted = Envelope::from_slice(&amqp[1].body).expect("an envelope");
    assert_eq!(dotted.topic, "signalbox/dev/amqp/v1.2/build");
    assert_eq!(envelope.summary, "hello from MQTT");
    assert_eq!(amqp[2].body, "21.5 °C ✓".as_bytes());
    assert!(
        Envelope::from_slice(&amqp[3].body).is_ok(),
        "a retained publish reaches AMQP consumers as an ordinary message"
    );
    assert_eq!(amqp[4].body, binary);
}

/// What an AMQP client publishes to `amq.topic` shows in `signalbox tail`:
/// an envelope as an envelope; a body that is not one as text, JSON or
/// binary, and tail goes on.
fn amqp_to_mqtt(url: &str, amqp_port: u16, dir: &Path) {
    let mut tail = KillOnDrop(
        signalbox(url)
            .args(["tail", "--json", "--qos", "1", "signalbox/dev/amqp/#"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tail"),
    );
    let lines = LineReader::new(&mut tail.0);
    let next = || -> serde_json::Value {
        let line = lines.next_line(WAIT).expect("a line from tail");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("tail --json line {line:?}: {e}"))
    };
    // tail gives no sign that it subscribed: probe until a probe shows.
    let deadline = Instant::now() + WAIT;
    loop {
        amqp_publish(amqp_port, "signalbox.dev.amqp.probe", b"probe", 2, dir);
        if let Some(line) = lines.next_line(Duration::from_millis(500)) {
            assert!(line.contains("signalbox/dev/amqp/probe"), "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "tail never got a probe");
    }
    while lines.next_line(Duration::from_millis(500)).is_some() {}

    let envelope = Envelope::builder("signalbox/dev/amqp/from-amqp", "published over AMQP")
        .bridge("pika")
        .build()
        .expect("envelope");
    amqp_publish(
        amqp_port,
        "signalbox.dev.amqp.from-amqp",
        &envelope.to_vec(),
        2,
        dir,
    );
    let got = next();
    eprintln!("AMQP mapping: persistent AMQP envelope -> tail {got}");
    assert_eq!(got["topic"], "signalbox/dev/amqp/from-amqp");
    assert_eq!(got["kind"], "envelope", "{got}");
    assert_eq!(got["payload"]["id"], envelope.id.to_string());
    assert_eq!(got["payload"]["summary"], "published over AMQP");
    let persistent_qos = got["qos"].clone();

    // A transient message (delivery mode 1).
    amqp_publish(
        amqp_port,
        "signalbox.dev.amqp.transient",
        &envelope.to_vec(),
        1,
        dir,
    );
    let got = next();
    eprintln!(
        "AMQP mapping: delivery mode 2 -> QoS {persistent_qos}, delivery mode 1 -> QoS {} (tail subscribed at QoS 1)",
        got["qos"]
    );
    assert_eq!(got["topic"], "signalbox/dev/amqp/transient");
    assert_eq!(got["kind"], "envelope", "{got}");
    assert_eq!(
        (persistent_qos, got["qos"].clone()),
        (serde_json::json!(1), serde_json::json!(1)),
        "both come at the subscription's QoS"
    );

    // A '/' inside a routing key word stays a '/': one more topic level.
    amqp_publish(amqp_port, "signalbox.dev.amqp.v1/2", b"dotted", 2, dir);
    let got = next();
    eprintln!(
        "AMQP mapping: routing key signalbox.dev.amqp.v1/2 -> MQTT topic {}",
        got["topic"]
    );

    // Bodies that are not envelopes: shown for what they are.
    for (body, kind) in [
        (&b"not an envelope {"[..], "text"),
        (&br#"{"v":1,"id":"not-a-uuid"}"#[..], "json"),
        (&[0xff, 0xfe, 0x00, 0x01][..], "binary"),
    ] {
        amqp_publish(amqp_port, "signalbox.dev.amqp.foreign", body, 2, dir);
        let got = next();
        eprintln!("AMQP foreign body {body:?} -> tail {got}");
        assert_eq!(got["kind"], kind, "{got}");
        if kind == "binary" {
            assert_eq!(
                got["payload"],
                base64::engine::general_purpose::STANDARD.encode(body)
            );
        }
    }
    assert!(
        matches!(tail.0.try_wait(), Ok(None)),
        "tail is still running after foreign bodies"
    );
}
