//! Tests of the model: `update` is pure, so each rule is checked by feeding
//! events and reading the model.

use crossterm::event::{KeyCode, MouseEventKind};
use signalbox_common::envelope::Severity;
use signalbox_common::health::HealthState;

use super::fixtures::*;
use super::*;
use crate::event::Batch;

#[test]
fn filters_match_topic_globs_text_severity_and_kind() {
    let mut app = app();
    feed(
        &mut app,
        "signalbox/dev/git/kernel/commit",
        &envelope(
            "signalbox/dev/git/kernel/commit",
            "fix oops in EXT4",
            Severity::Info,
            1,
            1,
        ),
        false,
        1,
    );
    feed(
        &mut app,
        "signalbox/dev/qa/depcheck/result",
        &envelope(
            "signalbox/dev/qa/depcheck/result",
            "depcheck failed",
            Severity::Error,
            2,
            2,
        ),
        false,
        2,
    );
    feed(
        &mut app,
        "signalbox/dev/mail/bugzilla/received",
        &envelope(
            "signalbox/dev/mail/bugzilla/received",
            "bug 4711",
            Severity::Warning,
            3,
            3,
        ),
        false,
        3,
    );
    feed(
        &mut app,
        "signalbox/dev/lab/reading",
        &[0, 255, 1],
        false,
        4,
    );
    let shown = |app: &App, filter: &str| -> Vec<String> {
        let filter = Filter::parse(filter).expect("valid filter");
        app.stream
            .iter()
            .filter(|m| filter.matches(m))
            .map(|m| m.topic.to_string())
            .collect()
    };
    assert_eq!(shown(&app, "signalbox/+/git/#").len(), 1);
    assert_eq!(shown(&app, "ext4"), vec!["signalbox/dev/git/kernel/commit"]);
    assert_eq!(shown(&app, "sev:warning").len(), 2);
    assert_eq!(
        shown(&app, "sev:err"),
        vec!["signalbox/dev/qa/depcheck/result"]
    );
    assert_eq!(
        shown(&app, "kind:binary"),
        vec!["signalbox/dev/lab/reading"]
    );
    assert_eq!(shown(&app, "signalbox/dev/qa/# sev:info failed").len(), 1);
    assert_eq!(shown(&app, "signalbox/dev/qa/# bug").len(), 0);
    assert_eq!(
        shown(&app, "signalbox/dev/qa/# signalbox/dev/mail/#").len(),
        2
    );
    assert_eq!(shown(&app, "").len(), 4);
    assert!(Filter::parse("sev:loud")
        .expect_err("bad severity")
        .contains("sev:loud"));
    assert!(Filter::parse("a/#/b").is_err());
    assert!(Filter::parse("kind:pdf").is_err());
}

#[test]
fn typing_a_filter_applies_it_live_and_enter_keeps_it() {
    let mut app = app();
    for i in 0..5 {
        let topic = if i % 2 == 0 {
            "signalbox/dev/git/x/commit"
        } else {
            "signalbox/dev/cron/y/finished"
        };
        feed(&mut app, topic, b"hello", false, i);
    }
    press(&mut app, KeyCode::Char('/'));
    assert_eq!(app.view, View::Stream);
    type_text(&mut app, "cron");
    assert_eq!(app.stream_rows().len(), 2);
    press(&mut app, KeyCode::Enter);
    assert!(app.overlay.is_none());
    assert_eq!(app.stream_state.filter.text, "cron");
    // A half-typed wildcard does not break the filter in force.
    press(&mut app, KeyCode::Char('/'));
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Backspace);
    type_text(&mut app, "a/#/b");
    assert_eq!(app.stream_state.filter.text, "a/#");
    press(&mut app, KeyCode::Enter);
    assert!(
        matches!(app.overlay, Some(Overlay::Filter(_))),
        "an invalid filter stays open"
    );
    assert_eq!(app.status.as_ref().map(|s| s.tone), Some(Tone::Error));
    press(&mut app, KeyCode::Esc);
    assert!(app.overlay.is_none());
}

#[test]
fn pause_freezes_the_stream_and_counts_what_arrives() {
    let mut app = app();
    press(&mut app, KeyCode::Char('2'));
    for i in 0..3 {
        feed(&mut app, "signalbox/dev/a/b", b"x", false, i);
    }
    press(&mut app, KeyCode::Char('p'));
    for i in 0..7 {
        feed(&mut app, "signalbox/dev/a/b", b"y", false, 10 + i);
    }
    let paused = app.stream_state.paused.as_ref().expect("paused");
    assert_eq!(paused.arrived, 7);
    assert_eq!(app.stream_rows().len(), 3, "the paused view does not move");
    assert_eq!(app.stream.len(), 10);
    press(&mut app, KeyCode::Char('p'));
    assert!(app.stream_state.paused.is_none());
    assert_eq!(app.stream_rows().len(), 10);
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.text.contains("7 arrived")));
}

#[test]
fn the_stream_ring_is_bounded_by_count_and_bytes() {
    let mut app = app_with(Limits {
        stream_len: 100,
        stream_bytes: 1 << 20,
        ..Limits::default()
    });
    for i in 0..1000 {
        feed(
            &mut app,
            "signalbox/dev/a/b",
            format!("message {i}").as_bytes(),
            false,
            i,
        );
    }
    assert_eq!(app.stream.len(), 100);
    assert_eq!(app.stream.front().map(|m| m.seq), Some(901));
    let mut app = app_with(Limits {
        stream_len: 100,
        stream_bytes: 100_000,
        ..Limits::default()
    });
    let big = vec![b'x'; 10_000];
    for i in 0..50 {
        feed(&mut app, "signalbox/dev/a/b", &big, false, i);
    }
    assert!(app.stream_bytes <= 100_000, "{}", app.stream_bytes);
    assert!(app.stream.len() < 10);
    assert_eq!(
        app.stream_bytes,
        app.stream.iter().map(|m| m.cost).sum::<usize>()
    );
}

#[test]
fn the_topic_tree_counts_messages_and_subtopics_and_marks_retained() {
    let mut app = app();
    feed(
        &mut app,
        "signalbox/dev/cron/backup/finished",
        b"ok",
        true,
        1,
    );
    feed(
        &mut app,
        "signalbox/dev/cron/backup/finished",
        b"ok again",
        false,
        2,
    );
    feed(
        &mut app,
        "signalbox/dev/cron/rotate/finished",
        b"ok",
        false,
        3,
    );
    feed(&mut app, "signalbox/dev/git/kernel/commit", b"c", false, 4);
    let cron = app.topics.node("signalbox/dev/cron").expect("cron");
    assert_eq!((cron.messages, cron.topics), (3, 2));
    let root = app.topics.node("signalbox").expect("root");
    assert_eq!((root.messages, root.topics), (4, 3));
    assert_eq!(app.topics.count, 3);
    let backup = app
        .topics
        .node("signalbox/dev/cron/backup/finished")
        .and_then(|n| n.data.as_ref())
        .expect("data");
    assert!(backup.retained, "seen retained, not deleted since");
    assert_eq!(backup.count, 2);
    assert_eq!(&*backup.summary, "ok again");
    assert_eq!(backup.history.len(), 2);
    feed(
        &mut app,
        "signalbox/dev/cron/backup/finished",
        b"",
        false,
        5,
    );
    let backup = app
        .topics
        .node("signalbox/dev/cron/backup/finished")
        .and_then(|n| n.data.as_ref())
        .expect("data");
    assert!(
        !backup.retained,
        "an empty payload deletes the retained value"
    );
    // The first two levels start expanded, the rest collapsed.
    let rows: Vec<String> = app
        .topics
        .visible_rows()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(
        rows,
        vec![
            "signalbox",
            "signalbox/dev",
            "signalbox/dev/cron",
            "signalbox/dev/git"
        ]
    );
}

#[test]
fn topics_beyond_the_limit_are_counted_not_kept() {
    let mut app = app_with(Limits {
        topics: 10,
        ..Limits::default()
    });
    for i in 0..25 {
        feed(
            &mut app,
            &format!("signalbox/dev/sensor/s{i}/temp"),
            b"21.5",
            false,
            i,
        );
    }
    feed(&mut app, "signalbox/dev/sensor/s3/temp", b"22", false, 30);
    assert_eq!(app.topics.count, 10);
    assert_eq!(app.topics.untracked, 15);
    assert_eq!(
        app.topics
            .node("signalbox/dev/sensor/s3/temp")
            .and_then(|n| n.data.as_ref())
            .map(|d| d.count),
        Some(2)
    );
}

#[test]
fn topic_histories_are_bounded_by_count_and_age_but_keep_a_small_last_value() {
    let mut app = app_with(Limits {
        history_per_topic: 5,
        ..Limits::default()
    });
    for i in 0..20 {
        feed(
            &mut app,
            "signalbox/dev/a/b",
            format!("{i}").as_bytes(),
            false,
            i,
        );
    }
    feed(&mut app, "signalbox/dev/a/c", b"quiet", false, 20);
    let hist = |app: &App, t: &str| {
        app.topics
            .node(t)
            .and_then(|n| n.data.as_ref())
            .map(|d| d.history.len())
            .unwrap_or(0)
    };
    assert_eq!(hist(&app, "signalbox/dev/a/b"), 5);
    update(&mut app, Event::Tick(at(20 + 11 * 60)));
    assert_eq!(
        hist(&app, "signalbox/dev/a/b"),
        1,
        "pruned by age down to the last value"
    );
    assert_eq!(hist(&app, "signalbox/dev/a/c"), 1);
    assert_eq!(app.topics.history_len, 2);
}

#[test]
fn a_million_messages_stay_under_every_cap() {
    let limits = Limits::default();
    let mut app = app_with(limits.clone());
    let mut seq = 0u64;
    let body = vec![b'z'; 3000];
    for batch in 0..1000 {
        let mut messages = Vec::with_capacity(1000);
        for _ in 0..1000 {
            seq += 1;
            let topic = format!("signalbox/dev/sys{}/entity{}/event", seq % 97, seq % 20_011);
            let payload: Vec<u8> = match seq % 10 {
                0 => format!("{{\"n\":{seq},\"v\":\"{}\"}}", "y".repeat(200)).into_bytes(),
                1 => body.clone(),
                2 => vec![0, 1, 2, 255],
                _ => format!("reading {seq}").into_bytes(),
            };
            messages.push(incoming(&topic, &payload, seq.is_multiple_of(7), batch));
        }
        update(&mut app, Event::Mqtt(Batch { messages }));
        if batch % 100 == 0 {
            update(&mut app, Event::Tick(at(batch)));
        }
    }
    assert_eq!(app.seq, 1_000_000);
    assert!(app.stream.len() <= limits.stream_len);
    assert!(app.stream_bytes <= limits.stream_bytes);
    assert!(app.topics.count <= limits.topics);
    assert!(app.topics.untracked > 0);
    assert!(app.topics.history_len <= limits.history_len + limits.topics);
    assert!(app.topics.order_len() <= limits.history_len);
    // Over budget only by the small last values each topic keeps.
    assert!(app.topics.history_bytes <= limits.history_bytes + limits.topics * KEEP_LAST_MAX_COST);
    assert!(app.system_rates.len() <= limits.systems + 1);
    assert_eq!(app.rate.total, 1_000_000);
}

#[test]
fn listeners_come_from_health_reports_and_the_roster_and_go_stale() {
    let mut app = app();
    feed(
        &mut app,
        "signalbox/_health/mail-notify",
        &health("mail-notify", HealthState::Up, 0),
        true,
        0,
    );
    feed(
        &mut app,
        "signalbox/_roster",
        br#"["mail-notify","feed-writer"]"#,
        true,
        0,
    );
    assert_eq!(app.listeners.len(), 2);
    assert_eq!(
        app.take_effects(),
        vec![
            // Seen through its report first: its failure index.
            Effect::Subscribe(vec!["signalbox/_failed/mail-notify".into()]),
            Effect::Subscribe(vec![
                "signalbox/_health/mail-notify".into(),
                "signalbox/_health/feed-writer".into(),
                "signalbox/_failed/feed-writer".into(),
            ])
        ]
    );
    let silent = app.listeners.get("feed-writer").expect("listed");
    assert!(silent.in_roster && silent.report.is_none() && silent.is_problem(app.now));
    update(&mut app, Event::Tick(at(30)));
    assert_eq!(app.listener_summary(), (1, 0, 0, 1));
    update(&mut app, Event::Tick(at(31)));
    assert_eq!(
        app.listener_summary(),
        (0, 1, 0, 1),
        "older than 3 × 10 s is stale"
    );
    feed(
        &mut app,
        "signalbox/_health/mail-notify",
        &health("mail-notify", HealthState::Down, 31),
        true,
        31,
    );
    assert_eq!(app.listener_summary(), (0, 0, 1, 1));
    // A second roster does not subscribe again.
    feed(
        &mut app,
        "signalbox/_roster",
        br#"["mail-notify","feed-writer"]"#,
        true,
        32,
    );
    assert!(app.take_effects().is_empty());
    // `f` shows only problems.
    press(&mut app, KeyCode::Char('4'));
    press(&mut app, KeyCode::Char('f'));
    assert_eq!(app.listener_rows().len(), 2);
    feed(
        &mut app,
        "signalbox/_health/mail-notify",
        &health("mail-notify", HealthState::Up, 32),
        true,
        32,
    );
    assert_eq!(app.listener_rows().len(), 1);
}

/// Regression: on a broker that does not deliver retained messages to
/// wildcard subscriptions (RabbitMQ 3.10), the records of a dead listener
/// never reached the Failed view; the console now reads each listener's
/// failure index and the records it lists by their exact topics.
#[test]
fn failure_indexes_are_read_and_their_records_subscribed_exactly_once() {
    let mut app = app();
    let ids = [
        "0193a0b0-0000-7000-8000-000000000001",
        "0193a0b0-0000-7000-8000-000000000002",
        "0193a0b0-0000-7000-8000-000000000003",
    ];
    let record_topic = |id: &str| format!("signalbox/_failed/dead-one/{id}");
    feed(&mut app, "signalbox/_roster", br#"["dead-one"]"#, true, 0);
    assert_eq!(
        app.take_effects(),
        vec![Effect::Subscribe(vec![
            "signalbox/_health/dead-one".into(),
            "signalbox/_failed/dead-one".into(),
        ])]
    );
    // One record came through the wildcard already.
    feed(
        &mut app,
        &record_topic(ids[0]),
        &record("dead-one", ids[0], b"t", 1, 0),
        true,
        0,
    );
    let index = serde_json::to_vec(&ids).expect("json");
    feed(&mut app, "signalbox/_failed/dead-one", &index, true, 0);
    // The index is not a record.
    assert_eq!(app.failed.len(), 1);
    assert!(app
        .stream
        .back()
        .is_some_and(|m| m.reserved && &*m.topic == "signalbox/_failed/dead-one"));
    assert!(
        app.take_effects().is_empty(),
        "waits for the index to settle"
    );
    update(&mut app, Event::Tick(t0() + Duration::milliseconds(500)));
    assert!(app.take_effects().is_empty(), "not settled yet");
    update(&mut app, Event::Tick(at(1)));
    assert_eq!(
        app.take_effects(),
        vec![Effect::Subscribe(vec![
            record_topic(ids[1]),
            record_topic(ids[2])
        ])],
        "the records not held, by their exact topics"
    );
    // The same index again (a resubscription delivers it): nothing new.
    feed(&mut app, "signalbox/_failed/dead-one", &index, true, 2);
    update(&mut app, Event::Tick(at(4)));
    assert!(app.take_effects().is_empty());
    assert!(app.indexes_pending.is_empty());
    // The records arrive, one of them twice (the wildcard and the exact
    // subscription on a broker that delivers to both): each lands once.
    for (id, secs) in [(ids[1], 5), (ids[2], 5), (ids[1], 6)] {
        feed(
            &mut app,
            &record_topic(id),
            &record("dead-one", id, b"t", 1, secs),
            true,
            secs,
        );
    }
    assert_eq!(
        app.failed
            .keys()
            .map(|(_, id)| id.as_str())
            .collect::<Vec<_>>(),
        ids.to_vec()
    );
    assert!(app.failed.keys().all(|(l, _)| l == "dead-one"));
    // Acknowledging a record read this way works as before.
    press(&mut app, KeyCode::Char('5'));
    press(&mut app, KeyCode::Char('G'));
    press(&mut app, KeyCode::Char('a'));
    press(&mut app, KeyCode::Char('y'));
    assert_eq!(
        app.take_effects(),
        vec![Effect::Ack {
            listener: "dead-one".into(),
            records: vec![(ids[2].into(), record_topic(ids[2]))]
        }]
    );
    feed(&mut app, &record_topic(ids[2]), b"", true, 7);
    assert_eq!(app.failed.len(), 2);
    // The dead listener's index still lists it: not subscribed again.
    feed(&mut app, "signalbox/_failed/dead-one", &index, true, 8);
    update(&mut app, Event::Tick(at(9)));
    assert!(app.take_effects().is_empty());
    // A listener seen through its report has its index read too.
    feed(
        &mut app,
        "signalbox/_health/mail-notify",
        &health("mail-notify", HealthState::Up, 9),
        true,
        9,
    );
    assert_eq!(
        app.take_effects(),
        vec![Effect::Subscribe(vec![
            "signalbox/_failed/mail-notify".into()
        ])]
    );
}

#[test]
fn exact_record_subscriptions_go_in_chunks_within_the_cap() {
    let mut app = app_with(Limits {
        failed: 250,
        ..Limits::default()
    });
    let ids: Vec<String> = (0..400)
        .map(|n| format!("0193a0b0-0000-7000-8000-{n:012}"))
        .collect();
    feed(
        &mut app,
        "signalbox/_failed/busy",
        &serde_json::to_vec(&ids).expect("json"),
        true,
        0,
    );
    assert!(app.take_effects().is_empty());
    update(&mut app, Event::Tick(at(1)));
    let chunks: Vec<usize> = app
        .take_effects()
        .into_iter()
        .map(|e| match e {
            Effect::Subscribe(topics) => topics.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(chunks, vec![100, 100, 50], "at most the record cap");
    assert_eq!(app.records_subscribed.len(), 250);
    // An unreadable index says so and subscribes nothing.
    feed(&mut app, "signalbox/_failed/busy", b"{}", true, 2);
    update(&mut app, Event::Tick(at(3)));
    assert!(app.take_effects().is_empty());
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.text.contains("failure index of busy")));
}

#[test]
fn bad_payloads_never_crash_and_show_as_unreadable() {
    let mut app = app();
    feed(&mut app, "signalbox/_health/x", b"{not json", true, 0);
    feed(&mut app, "signalbox/_health/y", &[0xff, 0xfe, 0], true, 0);
    feed(&mut app, "signalbox/_failed/x/1", b"[]", true, 0);
    feed(&mut app, "signalbox/_roster", b"{\"a\":1}", true, 0);
    feed(
        &mut app,
        "signalbox/dev/a/b",
        &vec![0u8; 3 * crate::event::PAYLOAD_CAP],
        false,
        0,
    );
    feed(
        &mut app,
        "signalbox/dev/a/b",
        &vec![b'{'; 2 * crate::event::PAYLOAD_CAP],
        false,
        0,
    );
    assert!(matches!(
        app.listeners.get("x").and_then(|l| l.report.as_ref()),
        Some(Err(_))
    ));
    assert!(app
        .listeners
        .get("y")
        .is_some_and(|l| l.is_problem(app.now)));
    assert!(app.failed.values().all(|f| f.record.is_err()));
    assert!(app
        .stream
        .iter()
        .any(|m| m.cut && m.size == 3 * crate::event::PAYLOAD_CAP));
    // Every view and the detail of each of them draws.
    for view in ["1", "2", "3", "4", "5"] {
        type_text(&mut app, view);
        press(&mut app, KeyCode::Enter);
        let _ = crate::views::tests::render(&app, 80, 24);
        press(&mut app, KeyCode::Esc);
    }
}

#[test]
fn acknowledge_asks_then_publishes_and_the_echo_removes_the_record() {
    let mut app = app();
    let id = "0193a0b0-0000-7000-8000-000000000001";
    let topic = format!("signalbox/_failed/mail-notify/{id}");
    feed(
        &mut app,
        &topic,
        &record("mail-notify", id, b"plain text", 1, 0),
        true,
        0,
    );
    assert_eq!(app.failed.len(), 1);
    // A record's listener has its failure index read.
    assert_eq!(
        app.take_effects(),
        vec![Effect::Subscribe(vec![
            "signalbox/_failed/mail-notify".into()
        ])]
    );
    press(&mut app, KeyCode::Char('5'));
    press(&mut app, KeyCode::Char('a'));
    assert!(matches!(app.overlay, Some(Overlay::Confirm { .. })));
    assert!(
        app.effects.is_empty(),
        "nothing happens before the confirmation"
    );
    press(&mut app, KeyCode::Char('n'));
    assert!(app.take_effects().is_empty());
    press(&mut app, KeyCode::Char('a'));
    press(&mut app, KeyCode::Char('y'));
    assert_eq!(
        app.take_effects(),
        vec![Effect::Ack {
            listener: "mail-notify".into(),
            records: vec![(id.into(), topic.clone())]
        }]
    );
    assert_eq!(
        app.failed.values().next().and_then(|f| f.pending),
        Some(Pending::Ack)
    );
    feed(&mut app, &topic, b"", false, 1);
    assert!(app.failed.is_empty());
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.text.contains("acknowledged")));
}

#[test]
fn replay_and_replay_all_request_and_show_the_outcome() {
    let mut app = app();
    let ids = [
        "0193a0b0-0000-7000-8000-000000000001",
        "0193a0b0-0000-7000-8000-000000000002",
    ];
    for id in ids {
        feed(
            &mut app,
            &format!("signalbox/_failed/mail-notify/{id}"),
            &record("mail-notify", id, b"t", 1, 0),
            true,
            0,
        );
    }
    app.take_effects();
    press(&mut app, KeyCode::Char('5'));
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Char('r'));
    press(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_effects(),
        vec![Effect::Replay {
            listener: "mail-notify".into(),
            ids: vec![ids[1].into()]
        }]
    );
    // Failed again: the listener republishes the record with attempts + 1.
    feed(
        &mut app,
        &format!("signalbox/_failed/mail-notify/{}", ids[1]),
        &record("mail-notify", ids[1], b"t", 2, 5),
        true,
        5,
    );
    assert!(
        app.status
            .as_ref()
            .is_some_and(|s| s.text.contains("failed again (attempts 2)")),
        "{:?}",
        app.status
    );
    press(&mut app, KeyCode::Char('R'));
    assert!(
        matches!(&app.overlay, Some(Overlay::Confirm { question, .. }) if question.contains("all 2"))
    );
    press(&mut app, KeyCode::Char('y'));
    assert_eq!(
        app.take_effects(),
        vec![Effect::Replay {
            listener: "mail-notify".into(),
            ids: vec![]
        }]
    );
    assert!(app
        .failed
        .values()
        .all(|f| f.pending == Some(Pending::Replay)));
    feed(
        &mut app,
        &format!("signalbox/_failed/mail-notify/{}", ids[0]),
        b"",
        false,
        6,
    );
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.text.contains("replayed: cleared")));
    // A capped outcome ends the wait.
    let outcome = format!(
        r#"{{"listener":"mail-notify","results":[{{"id":"{}","outcome":"capped","attempts":5}}]}}"#,
        ids[1]
    );
    feed(
        &mut app,
        "signalbox/dev/console/replies/x",
        outcome.as_bytes(),
        false,
        7,
    );
    assert_eq!(app.failed.values().next().and_then(|f| f.pending), None);
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.text.contains("capped")));
}

#[test]
fn selection_moves_and_the_stream_follows_until_asked() {
    let mut app = app();
    press(&mut app, KeyCode::Char('2'));
    for i in 0..10 {
        feed(
            &mut app,
            "signalbox/dev/a/b",
            format!("m{i}").as_bytes(),
            false,
            i,
        );
    }
    assert_eq!(app.stream_state.selected, None);
    press(&mut app, KeyCode::Up);
    assert_eq!(
        app.stream_state.selected,
        Some(10),
        "the first Up selects the newest"
    );
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Char('k'));
    assert_eq!(app.stream_state.selected, Some(8));
    press(&mut app, KeyCode::Home);
    assert_eq!(app.stream_state.selected, Some(1));
    feed(&mut app, "signalbox/dev/a/b", b"new", false, 11);
    assert_eq!(
        app.stream_state.selected,
        Some(1),
        "the selection stays on its message"
    );
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.detail.as_ref().map(|d| d.msg.seq), Some(1));
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::End);
    assert_eq!(app.stream_state.selected, None, "End follows again");
    // Lists clamp.
    press(&mut app, KeyCode::Char('4'));
    press(&mut app, KeyCode::Down);
    assert_eq!(app.listener_selected, 0);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.view, View::Failed);
    press(&mut app, KeyCode::BackTab);
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.view, View::Topics);
}

#[test]
fn topics_expand_collapse_open_and_delete_retained_with_confirmation() {
    let mut app = app();
    feed(
        &mut app,
        "signalbox/dev/cron/backup/finished",
        b"ok",
        true,
        1,
    );
    feed(
        &mut app,
        "signalbox/dev/cron/rotate/finished",
        b"ok",
        true,
        2,
    );
    feed(&mut app, "signalbox/dev/cron/live/event", b"ok", false, 3);
    press(&mut app, KeyCode::Char('3'));
    press(&mut app, KeyCode::Down);
    assert_eq!(app.topic_selected.as_deref(), Some("signalbox"));
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.topic_selected.as_deref(), Some("signalbox/dev/cron"));
    press(&mut app, KeyCode::Right);
    assert_eq!(app.topics.visible_rows().len(), 6);
    press(&mut app, KeyCode::Left);
    assert_eq!(app.topics.visible_rows().len(), 3);
    press(&mut app, KeyCode::Left);
    assert_eq!(
        app.topic_selected.as_deref(),
        Some("signalbox/dev"),
        "left on a collapsed node goes to the parent"
    );
    press(&mut app, KeyCode::Char('d'));
    let Some(Overlay::Confirm { question, .. }) = &app.overlay else {
        panic!("confirmation expected")
    };
    assert!(question.contains("2 retained topics"), "{question}");
    press(&mut app, KeyCode::Char('y'));
    let effects = app.take_effects();
    assert_eq!(
        effects,
        vec![Effect::DeleteRetained(vec![
            "signalbox/dev/cron/backup/finished".into(),
            "signalbox/dev/cron/rotate/finished".into()
        ])]
    );
    // Enter on a leaf opens its last payload.
    app.topic_selected = Some("signalbox/dev/cron/live/event".into());
    press(&mut app, KeyCode::Enter);
    assert_eq!(
        app.detail.as_ref().map(|d| d.lines.clone()),
        Some(vec!["ok".to_string()])
    );
}

#[test]
fn command_line_publishes_filters_and_quits() {
    let mut app = app();
    press(&mut app, KeyCode::Char(':'));
    type_text(&mut app, "pub signalbox/dev/ops/note hello bus");
    press(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_effects(),
        vec![Effect::Publish {
            topic: "signalbox/dev/ops/note".into(),
            text: "hello bus".into()
        }]
    );
    press(&mut app, KeyCode::Char(':'));
    type_text(&mut app, "filter sev:error");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.view, View::Stream);
    assert_eq!(app.stream_state.filter.text, "sev:error");
    press(&mut app, KeyCode::Char(':'));
    type_text(&mut app, "frobnicate");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.status.as_ref().map(|s| s.tone), Some(Tone::Error));
    press(&mut app, KeyCode::Char(':'));
    type_text(&mut app, "theme light");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.take_effects(), vec![Effect::Theme("light".into())]);
    press(&mut app, KeyCode::Char(':'));
    type_text(&mut app, "q");
    press(&mut app, KeyCode::Enter);
    assert!(app.quit);
}

#[test]
fn help_opens_and_any_key_closes_it_and_q_quits() {
    let mut app = app();
    press(&mut app, KeyCode::Char('?'));
    assert_eq!(app.overlay, Some(Overlay::Help));
    press(&mut app, KeyCode::Char('q'));
    assert_eq!(app.overlay, None);
    assert!(!app.quit, "the key that closes help does nothing else");
    press(&mut app, KeyCode::Char('q'));
    assert!(app.quit);
    let mut app = super::fixtures::app();
    press(&mut app, KeyCode::Char('/'));
    update(
        &mut app,
        Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
    );
    assert!(app.quit, "ctrl-c quits even while typing a filter");
}

#[test]
fn detail_of_binary_is_hex_and_scrolls_within_bounds() {
    let mut app = app();
    press(&mut app, KeyCode::Char('2'));
    feed(
        &mut app,
        "signalbox/dev/lab/reading",
        &[0x89; 100],
        false,
        0,
    );
    press(&mut app, KeyCode::Enter);
    let detail = app.detail.as_ref().expect("open");
    assert_eq!(detail.line_count(), 7);
    for _ in 0..20 {
        press(&mut app, KeyCode::Down);
    }
    assert_eq!(app.detail.as_ref().map(|d| d.scroll), Some(6));
    press(&mut app, KeyCode::Char('e'));
    assert!(
        matches!(app.take_effects().as_slice(), [Effect::Export { file, contents }] if file.ends_with(".bin") && contents.len() == 100)
    );
}

#[test]
fn rates_count_per_second_and_per_system() {
    let mut app = app();
    for i in 0..5 {
        feed(&mut app, "signalbox/dev/git/a/commit", b"x", false, i / 5);
    }
    feed(
        &mut app,
        "signalbox/_health/l",
        &health("l", HealthState::Up, 0),
        true,
        0,
    );
    feed(&mut app, "elsewhere/x", b"x", false, 0);
    update(&mut app, Event::Tick(at(1)));
    assert_eq!(app.rate.per_second(), 7);
    assert_eq!(app.system_rates.get("git").map(Rate::per_second), Some(5));
    assert_eq!(app.system_rates.get("_health").map(|r| r.total), Some(1));
    assert_eq!(app.system_rates.get("(other)").map(|r| r.total), Some(1));
    update(&mut app, Event::Tick(at(100)));
    assert_eq!(app.rate.per_second(), 0);
    assert!(app.rate.buckets.len() <= RATE_SECONDS);
}

#[test]
fn connection_states_keep_the_last_error() {
    let mut app = app();
    update(
        &mut app,
        Event::Status(ConnState::Connected { broker: "b".into() }),
    );
    update(&mut app, Event::Tick(at(5)));
    update(
        &mut app,
        Event::Status(ConnState::Reconnecting {
            broker: "b".into(),
            attempt: 2,
            error: "connection refused".into(),
        }),
    );
    assert_eq!(app.conn.since, at(5));
    update(&mut app, Event::Tick(at(9)));
    update(
        &mut app,
        Event::Status(ConnState::Connected { broker: "b".into() }),
    );
    assert_eq!(
        app.conn.last_error,
        Some(("connection refused".to_string(), at(5)))
    );
    assert_eq!(app.conn.since, at(9));
}

#[test]
fn the_topic_sparkline_plots_a_numeric_field_the_operator_cycles() {
    let mut app = app();
    let topic = "signalbox/dev/sensor/rack-12/env";
    for i in 0..5u32 {
        let body = serde_json::json!({"temp": 20 + i, "humidity": 40.5, "unit": "C"});
        feed(
            &mut app,
            topic,
            &envelope_with_body(topic, body, u128::from(i)),
            false,
            i64::from(i),
        );
    }
    // A foreign reading without the field is skipped, not plotted as 0.
    feed(&mut app, topic, br#"{"humidity": 41}"#, false, 6);
    feed(
        &mut app,
        "signalbox/dev/app/log/line",
        b"door 12 opened",
        false,
        7,
    );
    press(&mut app, KeyCode::Char('3'));
    assert_eq!(app.topic_series(), None, "nothing selected yet");

    app.topic_selected = Some(topic.into());
    let series = app.topic_series().expect("numeric fields");
    assert_eq!(
        (series.path.as_str(), series.index, series.count),
        ("body.humidity", 0, 3),
        "the first field by path: {series:?}"
    );
    assert_eq!(series.values, [40.5; 5]);
    press(&mut app, KeyCode::Char('s'));
    let series = app.topic_series().expect("numeric fields");
    assert_eq!((series.path.as_str(), series.index), ("body.temp", 1));
    assert_eq!(series.values, [20.0, 21.0, 22.0, 23.0, 24.0]);
    press(&mut app, KeyCode::Char('s'));
    let series = app.topic_series().expect("numeric fields");
    assert_eq!(series.path, "humidity", "the foreign JSON's own field");
    assert_eq!(series.values, [41.0]);
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.topic_series().map(|s| s.index), Some(0), "wraps around");
    press(&mut app, KeyCode::Char('S'));
    assert_eq!(
        app.topic_series().map(|s| s.path),
        Some("humidity".to_string()),
        "S goes back"
    );

    // The pick belongs to its topic: another topic starts at its first
    // field, and one without numbers says so.
    app.topic_selected = Some("signalbox/dev/app/log/line".into());
    assert_eq!(app.topic_series(), None);
    press(&mut app, KeyCode::Char('s'));
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.text.contains("no numeric JSON field")));
    app.topic_selected = Some(topic.into());
    assert_eq!(
        app.topic_series().map(|s| s.path),
        Some("humidity".to_string()),
        "the pick is remembered for its topic"
    );
    // `s` means nothing outside the topics view.
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(
        app.topic_field.as_ref().map(|(_, f)| f.as_str()),
        Some("humidity")
    );
}

#[test]
fn a_click_selects_the_row_under_the_pointer_and_a_second_click_opens_it() {
    for (w, h) in [(80, 24), (160, 48)] {
        let mut app = realistic();
        update(&mut app, Event::Resize(w, h));

        // The stream: rows are found by what the screen shows there.
        press(&mut app, KeyCode::Char('2'));
        let screen = draw(&mut app, w, h);
        let row = row_of(&screen, "[Bug 4711]");
        click(&mut app, 30, row);
        let selected = selected_stream_msg(&app).expect("a selection");
        assert!(selected.summary.contains("[Bug 4711]"), "{w}x{h}");
        assert!(app.detail.is_none(), "the first click only selects");
        // Messages arriving between the frame and the click do not move
        // what the click hits.
        feed(&mut app, "signalbox/dev/git/x/commit", b"late", false, 21);
        let screen = draw(&mut app, w, h);
        let row = row_of(&screen, "[Bug 4711]");
        click(&mut app, 30, row);
        assert!(
            app.detail
                .as_ref()
                .is_some_and(|d| d.msg.summary.contains("[Bug 4711]")),
            "a click on the selected row opens it ({w}x{h})"
        );
        press(&mut app, KeyCode::Esc);

        // The topic tree: a click selects a node; on the selected inner node
        // it expands or collapses it, as Enter does.
        press(&mut app, KeyCode::Char('3'));
        let screen = draw(&mut app, w, h);
        click(&mut app, 5, row_of(&screen, "▾ _health"));
        assert_eq!(app.topic_selected.as_deref(), Some("signalbox/_health"));
        let screen = draw(&mut app, w, h);
        click(&mut app, 5, row_of(&screen, "▾ _health"));
        let screen = draw(&mut app, w, h);
        assert!(screen.iter().any(|l| l.contains("▸ _health")), "collapsed");

        // Listeners and failure records.
        press(&mut app, KeyCode::Char('4'));
        let screen = draw(&mut app, w, h);
        click(&mut app, 3, row_of(&screen, "sensor-archive"));
        assert_eq!(
            app.listener_rows()
                .get(app.listener_selected)
                .map(|l| l.name.as_str()),
            Some("sensor-archive")
        );
        press(&mut app, KeyCode::Char('5'));
        let screen = draw(&mut app, w, h);
        click(&mut app, 3, row_of(&screen, "sensor-archive"));
        assert_eq!(
            app.failed_rows()
                .get(app.failed_selected)
                .map(|f| f.listener.as_str()),
            Some("sensor-archive")
        );
        // Outside the rows (the header line of the table, the border) a
        // click selects nothing.
        click(&mut app, 3, row_of(&screen, "listener"));
        click(&mut app, 0, 1);
        assert_eq!(app.failed_selected, 1);
        assert!(app.detail.is_none());
    }
}

#[test]
fn clicks_on_tabs_switch_views_and_stale_hits_hit_nothing() {
    let mut app = realistic();
    press(&mut app, KeyCode::Char('2'));
    let screen = draw(&mut app, 80, 24);
    let row = row_of(&screen, "[Bug 4711]");
    // The header's tabs, also from the detail.
    press(&mut app, KeyCode::Enter);
    let col = screen[0].find("3 Topics").expect("tab shown");
    click(
        &mut app,
        u16::try_from(screen[0][..col].chars().count()).expect("col"),
        0,
    );
    assert_eq!(app.view, View::Topics);
    assert!(app.detail.is_none());
    // The stream's rows were drawn, but the topics view was not yet: a
    // click there must not select a stream message.
    click(&mut app, 30, row);
    assert_eq!(app.stream_state.selected, None);
    assert_eq!(app.topic_selected, None);
    // Overlays: a click closes the help; a confirmation ignores clicks.
    press(&mut app, KeyCode::Char('?'));
    click(&mut app, 30, 5);
    assert_eq!(app.overlay, None);
    press(&mut app, KeyCode::Char('5'));
    press(&mut app, KeyCode::Char('a'));
    click(&mut app, 30, 5);
    assert!(matches!(app.overlay, Some(Overlay::Confirm { .. })));
    // The wheel scrolls three rows, but not under an overlay.
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Char('2'));
    mouse(&mut app, MouseEventKind::ScrollUp, 30, 5);
    let rows = app.stream_rows();
    let newest = rows.len() - 1;
    assert_eq!(
        app.stream_state.selected,
        rows.get(newest - 2).map(|m| m.seq)
    );
}

#[test]
fn a_5_mb_payload_opens_at_once_and_says_it_was_cut() {
    let mut app = app();
    update(&mut app, Event::Resize(80, 24));
    press(&mut app, KeyCode::Char('2'));
    // 5 MB of JSON (one long line, as publishers send it), then 5 MB of
    // binary, then JSON just under the cap (pretty-printed in full).
    let items: Vec<String> = (0..400_000).map(|i| format!("{{\"i\":{i}}}")).collect();
    let json = format!("[{}]", items.join(","));
    assert!(json.len() > 5_000_000);
    let binary: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let small: Vec<serde_json::Value> = (0..8_000)
        .map(|i| serde_json::json!({"i": i, "ok": true}))
        .collect();
    let under = serde_json::to_vec(&small).expect("json");
    assert!(under.len() < crate::event::PAYLOAD_CAP);
    for (payload, kind, cut) in [
        (json.as_bytes(), "text", true),
        (&binary[..], "binary", true),
        (&under[..], "json", false),
    ] {
        let started = std::time::Instant::now();
        feed(&mut app, "signalbox/dev/big/dump", payload, false, 1);
        app.stream_state.selected = None;
        press(&mut app, KeyCode::Enter);
        let screen = draw(&mut app, 80, 24).join("\n");
        for _ in 0..50 {
            press(&mut app, KeyCode::PageDown);
        }
        draw(&mut app, 80, 24);
        let took = started.elapsed();
        let detail = app.detail.as_ref().expect("the detail opens");
        assert_eq!(detail.msg.payload.kind(), kind);
        assert_eq!(detail.msg.cut, cut);
        if cut {
            assert!(
                screen.contains(&format!(
                    "CUT: showing the first {} of {} bytes",
                    crate::event::PAYLOAD_CAP,
                    payload.len()
                )),
                "the cut is said, with the full size:\n{screen}"
            );
        } else {
            assert!(detail.json && detail.lines.len() > 8_000, "pretty JSON");
            assert!(!screen.contains("CUT"));
        }
        // Generous for a debug build on a loaded machine; a stall (decoding
        // or laying out megabytes per frame) takes far longer.
        assert!(took < std::time::Duration::from_secs(5), "{kind}: {took:?}");
        press(&mut app, KeyCode::Char('e'));
        assert!(matches!(
            app.take_effects().as_slice(),
            [Effect::Export { contents, .. }] if !contents.is_empty() && contents.len() <= crate::event::PAYLOAD_CAP * 2
        ));
        press(&mut app, KeyCode::Esc);
    }
}

#[test]
fn export_writes_the_selected_payload_or_the_topic_history() {
    let mut app = app();
    let topic = "signalbox/dev/sensor/rack-12/temp";
    feed(&mut app, topic, br#"{"temp": 21.5}"#, false, 1);
    feed(&mut app, topic, br#"{"temp": 22}"#, true, 2);
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Char('e'));
    let effects = app.take_effects();
    let [Effect::Export { file, contents }] = effects.as_slice() else {
        panic!("one export: {effects:?}")
    };
    assert_eq!(file, "signalbox-message-2.json");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(contents).expect("json"),
        serde_json::json!({"temp": 22})
    );
    press(&mut app, KeyCode::Char('3'));
    app.topic_selected = Some(topic.into());
    press(&mut app, KeyCode::Char('e'));
    let effects = app.take_effects();
    let [Effect::Export { file, contents }] = effects.as_slice() else {
        panic!("one export: {effects:?}")
    };
    assert!(
        file.starts_with("signalbox-history-") && file.ends_with(".jsonl"),
        "{file}"
    );
    let lines: Vec<serde_json::Value> = contents
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["payload"], serde_json::json!({"temp": 22}));
    assert_eq!(lines[1]["retained"], serde_json::json!(true));
    // Nothing selected, nothing exported (and no panic).
    app.topic_selected = Some("signalbox/dev".into());
    press(&mut app, KeyCode::Char('e'));
    assert!(app.take_effects().is_empty());
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.text.contains("no message on this topic itself")));
}
