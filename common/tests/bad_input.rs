//! Bad input for every parser of the bus contract (issue 10, "Bad input"):
//! the layered TOML config, envelopes, health reports, failure records and
//! replay requests. Each property: never a panic, a one-line error, and a
//! round trip to identity wherever a serialiser exists.
//!
//! Each property runs a few thousand cases ([`CASES`]); inputs are kept
//! small so that the whole file takes seconds.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use signalbox_common::config::{Config, ConfigError, Origin, Overrides};
use signalbox_common::envelope::{Envelope, Payload, Severity};
use signalbox_common::failed::{FailureRecord, ReplayRequest};
use signalbox_common::health::{Counters, HealthReport, HealthState};
use signalbox_common::topic::{self, MAX_TOPIC_LEN};

/// Cases per property: "a few thousand" (issue 10).
const CASES: u32 = 2_000;

fn config() -> ProptestConfig {
    ProptestConfig {
        // Shrinking a failure is worth a while, but not forever.
        max_shrink_iters: 2_000,
        // Failures are reported with their minimal input; no regression
        // files are written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::with_cases(CASES)
    }
}

/// An error is one line a person reads: no line break, no control character.
fn assert_one_line(what: &str, text: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !text.is_empty() && !text.chars().any(char::is_control),
        "{} error is not one line: {:?}",
        what,
        text
    );
    Ok(())
}

/// Byte-level damage to a valid document: flip, delete, insert, truncate,
/// duplicate a slice. `ops` are (kind, position, length, byte).
fn mutate(valid: &[u8], ops: &[(u8, usize, usize, u8)]) -> Vec<u8> {
    let mut out = valid.to_vec();
    for &(kind, pos, len, byte) in ops {
        let at = if out.is_empty() {
            0
        } else {
            pos % (out.len() + 1)
        };
        let end = (at + len % 16).min(out.len());
        match kind % 5 {
            0 if at < out.len() => out[at] ^= byte | 1,
            1 => {
                out.drain(at..end);
            }
            2 => out
                .splice(at..at, std::iter::repeat_n(byte, len % 8 + 1))
                .for_each(drop),
            3 => out.truncate(at),
            _ => {
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy).for_each(drop);
            }
        }
    }
    out
}

fn mutations() -> impl Strategy<Value = Vec<(u8, usize, usize, u8)>> {
    prop::collection::vec(
        (any::<u8>(), any::<usize>(), any::<usize>(), any::<u8>()),
        1..6,
    )
}

/// Any short text: any characters (control characters, line breaks,
/// non-characters), and much cheaper to make than `any::<String>()`.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..16).prop_map(String::from_iter)
}

/// JSON of any shape (no floats, which need not print back identically).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A time with millisecond precision, as every wire format carries it.
fn wire_time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_102_444_800_000)
        .prop_map(|ms| Utc.timestamp_millis_opt(ms).single().unwrap_or_default())
}

// ---------------------------------------------------------------------------
// The layered config file.

/// A directory for this test binary's config files (one file per property,
/// rewritten for every case: proptest runs a property's cases on one thread).
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path()
}

/// Resolves a config whose file holds `text`, with nothing from the
/// environment.
fn resolve_file(name: &str, text: &[u8]) -> Result<Config, ConfigError> {
    let path: PathBuf = scratch().join(name);
    std::fs::write(&path, text).expect("write config");
    let flags = Overrides {
        config_file: Some(path),
        state_dir: Some(scratch().to_path_buf()),
        ..Default::default()
    };
    Config::resolve_with(&flags, |_| None)
}

const VALID_CONFIG: &str = r##"# a full config file
broker = ["mqtt://bus01:1883", "mqtts://u:p@bus02:8883"]
env = "prod"
prefix = "corp/bus"
health_interval = 15
keepalive = 30
connect_timeout = 5
mqtt_version = 5
client_id = "console-1"
username = "ops"
password = "hunter2"

[theme]
name = "light"
selection_bg = "#112233"

[keys]
ack = ["a", "ctrl-a"]
"##;

/// A TOML value of any type, for keys that expect one particular type.
fn toml_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        text().prop_map(toml::Value::String),
        any::<i64>().prop_map(toml::Value::Integer),
        any::<bool>().prop_map(toml::Value::Boolean),
        (-1e9f64..1e9).prop_map(toml::Value::Float),
        Just(toml::Value::Float(f64::NAN)),
        Just(toml::Value::String("mqtt://h:1".into())),
        Just(toml::Value::Integer(3)),
        Just(toml::Value::Integer(0)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

const CONFIG_KEYS: &[&str] = &[
    "broker",
    "env",
    "prefix",
    "state_dir",
    "spool",
    "health_interval",
    "client_id",
    "username",
    "password",
    "mqtt_version",
    "keepalive",
    "connect_timeout",
    "theme",
    "keys",
    "brokr",
];

proptest! {
    #![proptest_config(config())]

    /// Any bytes as the config file: a config or a one-line error.
    #[test]
    fn config_any_bytes_is_a_config_or_one_line_error(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        if let Err(e) = resolve_file("any-bytes.toml", &bytes) {
            assert_one_line("config", &e.to_string())?;
        }
    }

    /// A valid file, damaged byte by byte: never a panic, one-line errors.
    #[test]
    fn config_mutated_valid_file_is_a_config_or_one_line_error(ops in mutations()) {
        let text = mutate(VALID_CONFIG.as_bytes(), &ops);
        if let Err(e) = resolve_file("mutated.toml", &text) {
            assert_one_line("config", &e.to_string())?;
        }
    }

    /// Well-formed TOML with every key, each of any type: wrong types and
    /// unknown keys are one-line errors naming the problem.
    #[test]
    fn config_wrongly_typed_values_are_one_line_errors(
        table in prop::collection::btree_map(prop::sample::select(CONFIG_KEYS), toml_value(), 0..6),
    ) {
        let table: toml::Table = table.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let Ok(text) = toml::to_string(&table) else {
            // NaN inside an array has no TOML spelling; nothing to test.
            return Ok(());
        };
        if let Err(e) = resolve_file("typed.toml", text.as_bytes()) {
            assert_one_line("config", &e.to_string())?;
        }
    }

    /// Values written by a TOML serialiser are read back exactly, from the
    /// file.
    #[test]
    fn config_written_values_are_read_back(
        brokers in prop::collection::vec("mqtts?://[a-z]{1,10}:[0-9]{1,5}", 1..4),
        env in "[a-z][a-z0-9_.-]{0,15}",
        prefix in "[a-z]{1,8}(/[a-z0-9]{1,8}){0,2}",
        health_interval in 1u64..1_000_000,
        keepalive in 5u64..100_000,
        mqtt_version in prop::sample::select(vec![3u8, 5]),
        client_id in text(),
        username in proptest::option::of(text()),
    ) {
        let mut table = toml::Table::new();
        table.insert("broker".into(), toml::Value::Array(brokers.iter().cloned().map(toml::Value::String).collect()));
        table.insert("env".into(), toml::Value::String(env.clone()));
        table.insert("prefix".into(), toml::Value::String(prefix.clone()));
        table.insert("health_interval".into(), toml::Value::Integer(health_interval as i64));
        table.insert("keepalive".into(), toml::Value::Integer(keepalive as i64));
        table.insert("mqtt_version".into(), toml::Value::Integer(i64::from(mqtt_version)));
        table.insert("client_id".into(), toml::Value::String(client_id.clone()));
        if let Some(u) = &username {
            table.insert("username".into(), toml::Value::String(u.clone()));
        }
        let text = toml::to_string(&table).expect("serialise");
        let cfg = resolve_file("written.toml", text.as_bytes()).expect("a written config resolves");
        prop_assert_eq!(&cfg.brokers.value, &brokers);
        prop_assert!(matches!(cfg.brokers.origin, Origin::File(_)));
        prop_assert_eq!(&cfg.env.value, &env);
        prop_assert_eq!(&cfg.prefix.value, &prefix);
        prop_assert_eq!(cfg.health_interval.value, health_interval);
        prop_assert_eq!(cfg.keepalive.value, keepalive);
        prop_assert_eq!(cfg.mqtt_version.value, mqtt_version);
        prop_assert_eq!(cfg.client_id.value, Some(client_id));
        prop_assert_eq!(cfg.username.value, username);
    }
}

#[test]
fn config_nested_100_000_levels_deep_is_a_one_line_error() {
    for text in [
        format!("env = {}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("env = {}", "{a=".repeat(100_000)),
        format!("{} = 1", vec!["a"; 100_000].join(".")),
        format!("[{}]", vec!["t"; 100_000].join(".")),
    ] {
        let err = resolve_file("deep.toml", text.as_bytes()).expect_err("too deep");
        assert_one_line("config", &err.to_string()).expect("one line");
    }
}

#[test]
fn config_key_with_a_line_break_is_a_one_line_error() {
    // Regression: a quoted key holding a newline put the newline into the
    // "unknown key" message.
    let err = resolve_file("newline-key.toml", b"\"bro\\nker\" = 1\n").expect_err("unknown key");
    assert_one_line("config", &err.to_string()).expect("one line");
    assert!(err.to_string().contains("unknown key `bro\\nker`"), "{err}");
}

// ---------------------------------------------------------------------------
// Envelopes.

fn valid_envelope_value() -> impl Strategy<Value = Value> {
    (
        text(),
        json_value(),
        wire_time(),
        prop::sample::select(Severity::ALL.to_vec()),
        proptest::option::of(text()),
    )
        .prop_filter_map(
            "summary sanitises to nothing",
            |(summary, body, time, severity, agent)| {
                let mut b = Envelope::builder("signalbox/dev/prop/x", summary)
                    .body(body)
                    .time(time)
                    .severity(severity);
                if let Some(agent) = agent {
                    b = b.agent(agent);
                }
                let e = b.build().ok()?;
                serde_json::to_value(&e).ok()
            },
        )
}

const ENVELOPE_FIELDS: &[&str] = &[
    "v", "id", "topic", "time", "source", "agent", "severity", "summary", "links", "body",
    "reply_to", "extra",
];

proptest! {
    #![proptest_config(config())]

    /// Any JSON value: an envelope that round-trips, or a one-line error.
    #[test]
    fn envelope_any_json_value_is_an_envelope_or_one_line_error(value in json_value()) {
        match Envelope::from_value(&value) {
            Ok(e) => prop_assert_eq!(Envelope::from_slice(&e.to_vec()), Ok(e)),
            Err(err) => assert_one_line("envelope", &err.to_string())?,
        }
    }

    /// A valid envelope with one field replaced by any JSON value (or
    /// removed): an envelope that round-trips, or a one-line error.
    #[test]
    fn envelope_with_a_replaced_field_round_trips_or_is_one_line_error(
        valid in valid_envelope_value(),
        field in prop::sample::select(ENVELOPE_FIELDS),
        replacement in proptest::option::of(json_value()),
        nested in any::<bool>(),
    ) {
        let mut value = valid;
        let target = if nested && field == "source" {
            value.get_mut("source").and_then(Value::as_object_mut).map(|s| (s, "bridge"))
        } else {
            value.as_object_mut().map(|o| (o, field))
        };
        if let Some((object, name)) = target {
            match replacement {
                Some(r) => object.insert(name.to_string(), r),
                None => object.remove(name),
            };
        }
        match Envelope::from_value(&value) {
            Ok(e) => {
                prop_assert_eq!(Envelope::from_slice(&e.to_vec()), Ok(e.clone()));
                prop_assert_eq!(Payload::decode(&e.to_vec()), Payload::Envelope(Box::new(e)));
            }
            Err(err) => assert_one_line("envelope", &err.to_string())?,
        }
    }

    /// A valid envelope's bytes, damaged: never a panic.
    #[test]
    fn envelope_mutated_bytes_never_panic(valid in valid_envelope_value(), ops in mutations()) {
        let bytes = mutate(&serde_json::to_vec(&valid).expect("json"), &ops);
        match Envelope::from_slice(&bytes) {
            Ok(e) => prop_assert_eq!(Envelope::from_slice(&e.to_vec()), Ok(e)),
            Err(err) => assert_one_line("envelope", &err.to_string())?,
        }
        let payload = Payload::decode(&bytes);
        prop_assert!(payload.summary_line(80).chars().count() <= 80);
    }
}

/// `depth` nested arrays around `inner`.
fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn envelope_deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let deep = nested(100_000, "");
    let err = Envelope::from_slice(deep.as_bytes()).expect_err("too deep");
    assert!(err.to_string().contains("recursion limit"), "{err}");
    assert_one_line("envelope", &err.to_string()).expect("one line");
    // Not JSON to serde_json, so it shows as text.
    assert_eq!(Payload::decode(deep.as_bytes()).kind(), "text");
    let body = format!("{{\"v\":1,\"body\":{}}}", nested(100_000, "1"));
    assert!(Envelope::from_slice(body.as_bytes()).is_err());
    assert_eq!(Payload::decode(body.as_bytes()).kind(), "text");
}

#[test]
fn envelope_with_a_huge_array_body_round_trips() {
    let body = Value::Array((0..1_000_000u32).map(Value::from).collect());
    let e = Envelope::builder("signalbox/dev/big/array", "a million numbers")
        .body(body)
        .build()
        .expect("envelope");
    let bytes = e.to_vec();
    assert!(bytes.len() > 6_000_000);
    assert_eq!(Envelope::from_slice(&bytes).expect("parses"), e);
    assert_eq!(
        Payload::decode(&bytes).summary_line(40),
        "a million numbers"
    );
}

#[test]
fn topics_of_the_mqtt_maximum_are_valid_and_one_byte_more_is_an_error() {
    let max = "a/".repeat(MAX_TOPIC_LEN / 2) + "a";
    assert_eq!(max.len(), MAX_TOPIC_LEN);
    assert_eq!(topic::validate_topic_name(&max), Ok(()));
    assert_eq!(topic::validate_filter(&max), Ok(()));
    let e = Envelope::builder(max.clone(), "long topic")
        .build()
        .expect("valid");
    assert_eq!(Envelope::from_slice(&e.to_vec()).expect("parses"), e);
    let over = max + "a";
    let err = topic::validate_topic_name(&over).expect_err("too long");
    assert_one_line("topic", &err.to_string()).expect("one line");
    let err = Envelope::builder(over, "too long")
        .build()
        .expect_err("too long");
    assert!(err.to_string().contains("65535"), "{err}");
}

// ---------------------------------------------------------------------------
// Health reports.

fn extra_fields() -> impl Strategy<Value = Map<String, Value>> {
    // `extra` holds the fields this version does not know; a known name
    // would be read into its own field instead.
    prop::collection::btree_map("x_[a-z]{1,6}", json_value(), 0..3)
        .prop_map(|m| m.into_iter().collect())
}

fn health_report() -> impl Strategy<Value = HealthReport> {
    (
        (
            text(),
            prop::sample::select(vec![
                HealthState::Up,
                HealthState::Degraded,
                HealthState::Down,
                HealthState::Stopped,
                HealthState::Idle,
            ]),
            text(),
            any::<u32>(),
            text(),
        ),
        (
            wire_time(),
            wire_time(),
            any::<u64>(),
            prop::collection::vec(text(), 0..3),
        ),
        (
            any::<[u64; 5]>(),
            proptest::option::of(text()),
            proptest::option::of(wire_time()),
            proptest::option::of(any::<u64>()),
        ),
        extra_fields(),
    )
        .prop_map(
            |(
                (listener, state, host, pid, version),
                (started, last_seen, interval_s, subscriptions),
                (c, last_error, last_run, spool_depth),
                extra,
            )| {
                HealthReport {
                    listener,
                    state,
                    host,
                    pid,
                    version,
                    started,
                    last_seen,
                    interval_s,
                    subscriptions,
                    counters: Counters {
                        received: c[0],
                        processed: c[1],
                        failed: c[2],
                        replayed: c[3],
                        duplicates: c[4],
                    },
                    last_error,
                    last_run,
                    spool_depth,
                    extra,
                }
            },
        )
}

proptest! {
    #![proptest_config(config())]

    /// Serialise then parse is the identity.
    #[test]
    fn health_report_round_trips(report in health_report()) {
        prop_assert_eq!(HealthReport::from_slice(&report.to_vec()).expect("parses"), report);
    }

    /// Damaged reports: never a panic, one-line errors; what still parses
    /// round-trips.
    #[test]
    fn health_report_mutated_is_a_report_or_one_line_error(report in health_report(), ops in mutations()) {
        let bytes = mutate(&report.to_vec(), &ops);
        match HealthReport::from_slice(&bytes) {
            // Times are written with millisecond precision: a damaged time
            // with more digits is cut once, then stays.
            Ok(r) => {
                let once = HealthReport::from_slice(&r.to_vec()).expect("parses");
                prop_assert_eq!(HealthReport::from_slice(&once.to_vec()).expect("parses"), once);
            }
            Err(e) => assert_one_line("health", &e.to_string())?,
        }
    }

    /// A report with one field replaced by any JSON value.
    #[test]
    fn health_report_with_a_replaced_field_is_one_line_error_or_round_trips(
        report in health_report(),
        field in prop::sample::select(vec!["listener", "state", "pid", "started", "last_seen", "interval_s", "subscriptions", "counters", "last_error", "last_run", "spool_depth"]),
        replacement in json_value(),
    ) {
        let mut value = serde_json::to_value(&report).expect("json");
        value[field] = replacement;
        match HealthReport::from_slice(value.to_string().as_bytes()) {
            Ok(r) => prop_assert_eq!(HealthReport::from_slice(&r.to_vec()).expect("parses"), r),
            Err(e) => assert_one_line("health", &e.to_string())?,
        }
    }
}

// ---------------------------------------------------------------------------
// Failure records and replay requests.

/// A failed message: arbitrary bytes, text, JSON or an envelope.
fn failed_message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        text().prop_map(String::into_bytes),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        valid_envelope_value().prop_map(|v| v.to_string().into_bytes()),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Serialise then parse is the identity, and the stored message comes
    /// back: byte for byte, or as the same envelope.
    #[test]
    fn failure_record_round_trips(
        listener in text(),
        id in text(),
        message in failed_message(),
        error in text(),
        now in wire_time(),
    ) {
        let record = FailureRecord::new(&listener, &id, "signalbox/dev/a/b", &message, &error, now);
        let back = FailureRecord::from_slice(&record.to_vec()).expect("a written record parses");
        prop_assert_eq!(&back, &record);
        let bytes = back.message_bytes().expect("message");
        match &back.envelope {
            Some(e) => prop_assert_eq!(&Envelope::from_slice(&bytes).expect("envelope"), e),
            None => prop_assert_eq!(bytes, message),
        }
        prop_assert!(!back.error.contains('\n'));
        let _ = back.summary();
    }

    /// Damaged records: never a panic, one-line errors.
    #[test]
    fn failure_record_mutated_is_a_record_or_one_line_error(message in failed_message(), ops in mutations()) {
        let record = FailureRecord::new("l", "id", "a/b", &message, "boom", Utc::now());
        let bytes = mutate(&record.to_vec(), &ops);
        match FailureRecord::from_slice(&bytes) {
            Ok(r) => {
                let _ = r.message_bytes();
                let _ = r.summary();
            }
            Err(e) => assert_one_line("failure record", &e.to_string())?,
        }
    }

    /// Replay requests: round trip of valid ones, one-line errors otherwise.
    #[test]
    fn replay_request_round_trips_or_is_one_line_error(
        ids in prop::collection::vec(text(), 0..4),
        all in any::<bool>(),
        reply_to in proptest::option::of(text()),
        junk in json_value(),
    ) {
        let request = ReplayRequest { ids, all, reply_to };
        match ReplayRequest::from_slice(&request.to_vec()) {
            Ok(r) => prop_assert_eq!(r, request),
            Err(e) => {
                prop_assert!(request.ids.is_empty() && !request.all);
                assert_one_line("replay request", &e.to_string())?;
            }
        }
        if let Err(e) = ReplayRequest::from_slice(junk.to_string().as_bytes()) {
            assert_one_line("replay request", &e.to_string())?;
        }
    }
}

#[test]
fn failure_record_of_the_deepest_envelope_round_trips() {
    // Regression: serde_json reads at most 127 nested arrays/objects. An
    // envelope nested just within that limit was embedded one level deeper
    // in its failure record, which then could not be read back (so it could
    // be neither listed nor replayed). The record keeps such an envelope as
    // its exact text instead.
    let mut deepest = None;
    for depth in (100..130).rev() {
        let body: Value = serde_json::from_str(&nested(depth, "1")).unwrap_or(Value::Null);
        if body.is_null() {
            continue;
        }
        let e = Envelope::builder("signalbox/dev/deep/x", "deep body")
            .body(body)
            .build()
            .expect("envelope");
        if Envelope::from_slice(&e.to_vec()).is_ok() {
            deepest = Some(e);
            break;
        }
    }
    let e = deepest.expect("some depth parses");
    let wire = e.to_vec();
    let record = FailureRecord::new("l", &e.id.to_string(), &e.topic, &wire, "boom", Utc::now());
    let back = FailureRecord::from_slice(&record.to_vec()).expect("record parses");
    assert_eq!(back, record);
    assert_eq!(back.message_bytes().expect("bytes"), wire);
    assert_eq!(back.summary(), "deep body");
    // A 100,000-level payload is stored as text and comes back as it was.
    let deep = nested(100_000, "");
    let record = FailureRecord::new("l", "x", "a/b", deep.as_bytes(), "boom", Utc::now());
    let back = FailureRecord::from_slice(&record.to_vec()).expect("record parses");
    assert_eq!(back.message_bytes().expect("bytes"), deep.as_bytes());
    let err = FailureRecord::from_slice(deep.as_bytes()).expect_err("not a record");
    assert_one_line("failure record", &err.to_string()).expect("one line");
}

#[test]
fn health_report_and_replay_request_100_000_levels_deep_are_errors() {
    let deep = nested(100_000, "");
    for text in [deep.clone(), format!("{{\"ids\":{deep}}}")] {
        let err = HealthReport::from_slice(text.as_bytes()).expect_err("too deep");
        assert_one_line("health", &err.to_string()).expect("one line");
        let err = ReplayRequest::from_slice(text.as_bytes()).expect_err("too deep");
        assert_one_line("replay request", &err.to_string()).expect("one line");
    }
}
