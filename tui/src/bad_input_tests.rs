//! Bad input for the console (issue 10, "Bad input"): theme files and the
//! `[keys]` table under property tests, and the model fed 100,000 distinct
//! topics and the edge payloads through the same decode path as the ingest
//! task, then drawn with ratatui's TestBackend.
//!
//! Timings are printed (they go to RELIABILITY.md), and only generous
//! sanity bounds are asserted: a debug build on a loaded CI machine must
//! pass.

use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use proptest::prelude::*;

use crate::app::fixtures::{app, at, press};
use crate::app::{update, Limits};
use crate::event::{Batch, Event, Incoming, PAYLOAD_CAP};
use crate::keys::{KeyMap, KeySpec, Scope};
use crate::theme::Theme;
use crate::views::tests::render;

/// Cases per property: "a few thousand" (issue 10).
fn cases() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(2_000)
    }
}

/// An error is one line a person reads: no line break, no control character.
fn one_line(text: &str) -> bool {
    !text.is_empty() && !text.chars().any(char::is_control)
}

/// Short text of any characters (cheaper than `any::<String>()`).
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

/// Colour-ish strings: names, `#rrggbb`, indexes, and near misses.
fn colour_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "blue", "lightred", "darkgray", "reset", "Gray", "bleu", ""
        ])
        .prop_map(str::to_string),
        "#[0-9a-fA-F]{6}",
        "#[0-9a-zA-Z]{0,8}",
        (0u32..300).prop_map(|n| n.to_string()),
        text(),
    ]
}

fn toml_value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        4 => colour_text().prop_map(toml::Value::String),
        1 => any::<i64>().prop_map(toml::Value::Integer),
        1 => any::<bool>().prop_map(toml::Value::Boolean),
        1 => prop::collection::vec(colour_text().prop_map(toml::Value::String), 0..3)
            .prop_map(toml::Value::Array),
        1 => Just(toml::Value::Table(toml::Table::new())),
    ]
}

/// Keys a theme or `[keys]` table may hold, and near misses.
fn table_key(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(known).prop_map(str::to_string),
        1 => text(),
        1 => Just("name".to_string()),
    ]
}

const ACTIONS: &[&str] = &[
    "quit",
    "help",
    "ack",
    "replay",
    "replay_all",
    "back",
    "view_1",
    "view_5",
    "pause",
    "filter",
    "akc",
];

/// Key-name-ish strings: real names, modifiers, near misses, anything.
fn key_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "(ctrl-|alt-|c-|m-|CTRL-){0,2}[a-zA-Z0-9?/:]",
        prop::sample::select(vec![
            "enter",
            "esc",
            "tab",
            "backtab",
            "space",
            "up",
            "pgdn",
            "f1",
            "f12",
            "f13",
            "f0",
            "F5",
            "ctrl-",
            "hyper-x",
            "",
            "ctrl-ctrl-",
            "fé",
            "f99999999999999999999",
        ])
        .prop_map(str::to_string),
        text(),
    ]
}

proptest! {
    #![proptest_config(cases())]

    /// Any text as a theme file: a theme, or a one-line error.
    #[test]
    fn theme_any_text_is_a_theme_or_one_line_error(text in "\\PC{0,120}|[ -~\n\"=#\\[\\]]{0,120}") {
        if let Err(e) = Theme::default().patched_from_str(&text, "theme file t.toml") {
            prop_assert!(one_line(&e.0), "{:?}", e.0);
        }
    }

    /// Well-formed tables of known and unknown keys with any values: the
    /// keys given change, the others keep their default, or a one-line
    /// error names the key.
    #[test]
    fn theme_tables_patch_or_name_the_bad_key(
        entries in prop::collection::btree_map(table_key(Theme::KEYS), toml_value(), 0..6),
    ) {
        let table: toml::Table = entries.into_iter().collect();
        let written = toml::to_string(&table).expect("serialise");
        match Theme::default().patched_from_str(&written, "[theme]") {
            Ok(theme) => {
                // Applying it again changes nothing: a theme is data.
                let again = theme.clone().patched(&table, "[theme]").expect("same table");
                prop_assert_eq!(again, theme);
            }
            Err(e) => {
                prop_assert!(one_line(&e.0), "{:?}", e.0);
                prop_assert!(e.0.contains('`'), "names the key: {}", e.0);
            }
        }
    }

    /// Any key name: parsed or refused, never a panic; what parses shows
    /// as a hint.
    #[test]
    fn key_names_parse_or_are_refused(text in key_text()) {
        if let Some(spec) = KeySpec::parse(&text) {
            prop_assert!(!spec.to_string().is_empty());
        }
    }

    /// Any `[keys]` table: a key map whose hints still show, or a one-line
    /// error naming the action.
    #[test]
    fn key_tables_apply_or_name_the_bad_action(
        entries in prop::collection::btree_map(
            table_key(ACTIONS),
            prop_oneof![
                3 => key_text().prop_map(toml::Value::String),
                2 => prop::collection::vec(key_text().prop_map(toml::Value::String), 0..3).prop_map(toml::Value::Array),
                1 => any::<i64>().prop_map(toml::Value::Integer),
            ],
            0..5,
        ),
    ) {
        let table: toml::Table = entries.into_iter().collect();
        match KeyMap::default().with_overrides(&table) {
            Ok(map) => {
                for scope in [Scope::Global, Scope::Stream, Scope::Failed, Scope::Detail] {
                    let _ = map.hints(scope);
                    let _ = map.action(scope, &KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE));
                }
            }
            Err(e) => {
                prop_assert!(one_line(&e.0), "{:?}", e.0);
                prop_assert!(e.0.starts_with("[keys]: "), "{}", e.0);
            }
        }
    }
}

#[test]
fn a_theme_nested_100_000_levels_deep_is_a_one_line_error() {
    for text in [
        format!("fg = {}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("{} = \"blue\"", vec!["fg"; 100_000].join(".")),
    ] {
        let err = Theme::default()
            .patched_from_str(&text, "theme file deep.toml")
            .expect_err("too deep");
        assert!(one_line(&err.0), "{:?}", err.0);
    }
}

/// `depth` nested arrays around `inner`.
fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn the_console_takes_100_000_distinct_topics_and_edge_payloads_in_bounded_memory() {
    const TOPICS: usize = 100_000;
    const BATCH: usize = 1_000;
    let limits = Limits::default();
    let mut app = app();

    // 100,000 distinct topics under 50 systems, each with a small JSON
    // payload, decoded by the ingest's own decode (capped, classified) and
    // fed in batches as the ingest task does.
    let started = Instant::now();
    for first in (0..TOPICS).step_by(BATCH) {
        let messages = (first..first + BATCH)
            .map(|i| {
                let topic = format!("signalbox/dev/sys{}/entity{i}/changed", i % 50);
                let payload = format!("{{\"n\":{i},\"state\":\"ok\"}}");
                Incoming::decode(
                    "signalbox",
                    &topic,
                    payload.as_bytes(),
                    i % 7 == 0,
                    at((i / 1_000) as i64),
                    PAYLOAD_CAP,
                )
            })
            .collect();
        update(&mut app, Event::Mqtt(Batch { messages }));
    }
    let ingest = started.elapsed();

    // The edge payloads, each the newest message in turn, opened in the
    // detail (pretty-printed JSON, text, hex) and drawn.
    let deep_envelope = {
        let body: serde_json::Value = serde_json::from_str(&nested(126, "1")).expect("126 levels");
        signalbox_common::envelope::Envelope::builder("signalbox/dev/edge/deepest", "deepest")
            .body(body)
            .build()
            .expect("envelope")
            .to_vec()
    };
    let edge: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("invalid-utf8", vec![0xff, 0xfe, 0x00, 0x80]),
        ("nested-100000", nested(100_000, "").into_bytes()),
        ("nested-127", nested(127, "").into_bytes()),
        (
            "array-1000000",
            format!("[{}0]", "0,".repeat(999_999)).into_bytes(),
        ),
        ("deepest-envelope", deep_envelope),
        ("_health/x", nested(100_000, "").into_bytes()),
        ("_failed/x/1", nested(100_000, "").into_bytes()),
    ];
    press(&mut app, KeyCode::Char('2'));
    let mut detail_time = Duration::ZERO;
    for (name, payload) in &edge {
        let topic = if name.starts_with('_') {
            format!("signalbox/{name}")
        } else {
            format!("signalbox/dev/edge/{name}")
        };
        let message = Incoming::decode("signalbox", &topic, payload, false, at(100), PAYLOAD_CAP);
        update(
            &mut app,
            Event::Mqtt(Batch {
                messages: vec![message],
            }),
        );
        app.stream_state.selected = app.stream.back().map(|m| m.seq);
        let t = Instant::now();
        press(&mut app, KeyCode::Enter);
        let detail = app.detail.as_ref().expect("the detail opens");
        assert_eq!(&*detail.msg.topic, topic.as_str());
        press(&mut app, KeyCode::End);
        let _ = render(&app, 160, 48);
        detail_time += t.elapsed();
        press(&mut app, KeyCode::Esc);
    }

    // One frame of every view.
    let mut frames = Vec::new();
    for view in ['1', '2', '3', '4', '5'] {
        press(&mut app, KeyCode::Char(view));
        let t = Instant::now();
        let terminal = render(&app, 160, 48);
        frames.push((view, t.elapsed()));
        let screen = format!("{:?}", terminal.backend());
        assert!(!screen.is_empty());
    }
    update(&mut app, Event::Tick(at(200)));

    eprintln!(
        "100,000 topics: ingest {ingest:?} ({:.0} msg/s); detail of {} edge payloads {detail_time:?}; one frame per view {frames:?}; topics tracked {}, untracked messages {}, stream {} messages / {} bytes, histories {} entries / {} bytes",
        TOPICS as f64 / ingest.as_secs_f64(),
        edge.len(),
        app.topics.count,
        app.topics.untracked,
        app.stream.len(),
        app.stream_bytes,
        app.topics.history_len,
        app.topics.history_bytes,
    );

    // Memory follows the limits, not the number of topics.
    assert!(app.topics.count <= limits.topics, "{}", app.topics.count);
    assert!(app.topics.untracked >= (TOPICS - limits.topics) as u64);
    assert!(app.stream.len() <= limits.stream_len);
    assert!(app.stream_bytes <= limits.stream_bytes + PAYLOAD_CAP);
    assert!(app.topics.history_len <= limits.history_len);
    assert!(app.topics.history_bytes <= limits.history_bytes + limits.topics * 2048);
    // Generous sanity bounds only (debug build, loaded machine).
    assert!(ingest < Duration::from_secs(120), "ingest took {ingest:?}");
    assert!(
        detail_time < Duration::from_secs(60),
        "details took {detail_time:?}"
    );
    for (view, took) in frames {
        assert!(took < Duration::from_secs(10), "view {view} took {took:?}");
    }
}
