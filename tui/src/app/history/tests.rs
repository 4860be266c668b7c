//! Paging back into the history database: when a page is asked for and
//! where it ends, de-duplication against memory, the filter as a query,
//! the bounds, and what the status line says. The worker is played by
//! [`answer`]; the last test runs the real one on a real database.

use std::path::PathBuf;

use crossterm::event::KeyCode;
use signalbox_bridges::history::{Before, Query, Store, StoredMessage};
use signalbox_common::envelope::{Payload, Severity};

use super::*;
use crate::app::fixtures::*;
use crate::app::{selected_stream_msg, update, App, Limits, View};
use crate::event::{Event, HistoryPage};

const TOPIC: &str = "signalbox/dev/git/kernel/commit";

/// A console whose database is configured (the worker is not run).
fn with_db(mut app: App) -> App {
    app.history = StreamHistory::new(Ok(PathBuf::from("/var/lib/signalbox/history.db")));
    app
}

/// An envelope `n` on TOPIC, "event {n}", `secs` after t0.
fn event(n: u128, secs: i64) -> Vec<u8> {
    envelope(TOPIC, &format!("event {n}"), Severity::Info, n, secs)
}

/// The summaries of the stream as shown, oldest first.
fn shown(app: &App) -> Vec<String> {
    app.stream_rows()
        .iter()
        .map(|m| m.summary.to_string())
        .collect()
}

fn status(app: &App) -> String {
    app.status
        .as_ref()
        .map(|s| s.text.clone())
        .unwrap_or_default()
}

/// Live events 10..=14 at seconds 10..=14, the stream shown, the oldest
/// row selected.
fn live_at_the_top() -> App {
    let mut app = with_db(app());
    for n in 10..15 {
        feed(&mut app, TOPIC, &event(n, n as i64), false, n as i64);
    }
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Home);
    assert!(app.take_effects().is_empty());
    app
}

/// [`live_at_the_top`], then one more row up: the first page is asked for.
fn first_request() -> (App, HistoryRequest) {
    let mut app = live_at_the_top();
    press(&mut app, KeyCode::Up);
    let request = history_request(&mut app);
    (app, request)
}

#[test]
fn scrolling_past_the_oldest_row_asks_once_for_the_page_before_it() {
    let mut app = with_db(app());
    for n in 10..15 {
        feed(&mut app, TOPIC, &event(n, n as i64), false, n as i64);
    }
    press(&mut app, KeyCode::Char('2'));
    // Moving within the rows asks for nothing.
    for _ in 0..5 {
        press(&mut app, KeyCode::Up);
    }
    assert!(app.take_effects().is_empty());
    assert_eq!(
        selected_stream_msg(&app).map(|m| m.summary.to_string()),
        Some("event 10".into())
    );
    // One more: past the oldest.
    press(&mut app, KeyCode::Up);
    let request = history_request(&mut app);
    assert_eq!(
        request.before,
        Some(Before {
            time: at(10),
            seq: None
        }),
        "the first page ends at the oldest message shown, its millisecond included"
    );
    assert_eq!(request.query.limit, PAGE);
    assert_eq!(request.prefix, "signalbox");
    assert!(app.history.loading);
    assert_eq!(status(&app), "loading history…");
    // While it loads, scrolling, PgUp, Home and the key ask for nothing more.
    for key in [
        KeyCode::Up,
        KeyCode::PageUp,
        KeyCode::Home,
        KeyCode::Char('H'),
    ] {
        press(&mut app, key);
    }
    assert!(app.take_effects().is_empty());
    assert_eq!(
        selected_stream_msg(&app).map(|m| m.summary.to_string()),
        Some("event 10".into()),
        "the selection stays"
    );
}

#[test]
fn pgup_and_home_at_the_top_and_the_history_key_ask_too() {
    for key in [KeyCode::PageUp, KeyCode::Home, KeyCode::Char('H')] {
        let mut app = live_at_the_top();
        press(&mut app, key);
        history_request(&mut app);
    }
    // The key asks from anywhere in the stream, also when following.
    let mut app = with_db(app());
    feed(&mut app, TOPIC, &event(1, 1), false, 1);
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Char('H'));
    history_request(&mut app);
}

#[test]
fn a_page_shows_above_in_order_and_nothing_twice() {
    let (mut app, request) = first_request();
    let rows = vec![
        (TOPIC, event(5, 5), 5),
        (TOPIC, event(6, 6), 6),
        // A raw payload, and its copy in memory below.
        ("signalbox/dev/app/log/line", b"door opened".to_vec(), 8),
        // The recorder's copies of messages the ring holds (same ids).
        (TOPIC, event(10, 10), 10),
        (TOPIC, event(11, 11), 11),
    ];
    // The live copy of the raw line arrived a second after the recorder's.
    feed(
        &mut app,
        "signalbox/dev/app/log/line",
        b"door opened",
        false,
        9,
    );
    answer(&mut app, &request, &rows, true, 41);
    assert_eq!(
        shown(&app),
        [
            "event 5",
            "event 6",
            "event 10",
            "event 11",
            "event 12",
            "event 13",
            "event 14",
            "door opened"
        ]
    );
    let rows = app.stream_rows();
    assert!(rows[0].is_from_history() && rows[1].is_from_history());
    assert!(rows[2..].iter().all(|m| !m.is_from_history()));
    assert!(
        rows.windows(2)
            .all(|w| stream_order(w[0].seq) < stream_order(w[1].seq)),
        "history rows sort before live ones"
    );
    assert_eq!(app.history.rows.len(), 2);
    assert!(!app.history.loading);
    assert_eq!(
        status(&app),
        "2 older messages from the history database (H for more)"
    );
    assert_eq!(
        selected_stream_msg(&app).map(|m| m.summary.to_string()),
        Some("event 10".into()),
        "the selection stays on the message it was on"
    );
    // Up walks into the history rows; Enter opens one with its payload.
    press(&mut app, KeyCode::Up);
    let selected = selected_stream_msg(&app).expect("selected");
    assert_eq!(&*selected.summary, "event 6");
    press(&mut app, KeyCode::Enter);
    let detail = app.detail.as_ref().expect("the detail opens");
    assert!(detail.msg.is_from_history());
    assert!(matches!(&detail.msg.payload, Payload::Envelope(e) if e.summary == "event 6"));
    press(&mut app, KeyCode::Esc);
    // Past the oldest again: the next page ends where this one began.
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Up);
    let next = history_request(&mut app);
    assert_eq!(
        next.before,
        Some(Before {
            time: at(5),
            seq: Some(41)
        })
    );
    answer(
        &mut app,
        &next,
        &[(TOPIC, event(3, 3), 3), (TOPIC, event(4, 4), 4)],
        false,
        30,
    );
    assert_eq!(
        &shown(&app)[..4],
        ["event 3", "event 4", "event 5", "event 6"]
    );
    assert_eq!(
        status(&app),
        "2 older messages from the history database: the oldest it holds"
    );
    // Nothing older: scrolling stays quiet, the key asks (and is told).
    press(&mut app, KeyCode::Home);
    press(&mut app, KeyCode::Up);
    assert!(app.take_effects().is_empty());
    press(&mut app, KeyCode::Char('H'));
    let last = history_request(&mut app);
    answer(&mut app, &last, &[], false, 0);
    assert_eq!(status(&app), "no older messages in the history database");
    assert_eq!(app.stream_rows().len(), 10);
}

#[test]
fn a_page_of_rows_shown_already_moves_the_cursor_on() {
    let (mut app, request) = first_request();
    answer(&mut app, &request, &[(TOPIC, event(10, 10), 10)], true, 7);
    assert!(app.history.rows.is_empty());
    assert_eq!(
        status(&app),
        "1 older messages were shown already or do not match the filter; H reads further back"
    );
    press(&mut app, KeyCode::Char('H'));
    let next = history_request(&mut app);
    assert_eq!(
        next.before,
        Some(Before {
            time: at(10),
            seq: Some(7)
        }),
        "not the same page again"
    );
}

#[test]
fn the_filter_becomes_the_query_and_a_new_filter_drops_the_history() {
    let filter = Filter::parse("signalbox/+/git/# sev:warning KERNEL oops kind:envelope").unwrap();
    let q = query_for(&filter, false);
    assert_eq!(
        q,
        Query {
            topic: Some("signalbox/+/git/#".into()),
            grep: Some("kernel".into()),
            min_severity: Some(Severity::Warning),
            limit: PAGE,
            ..Query::default()
        }
    );
    // Several topic filters are alternatives: checked on the rows instead.
    // Non-ASCII text is left to the rows too (the database folds ASCII).
    let q = query_for(&Filter::parse("a/# b/# größe").unwrap(), true);
    assert_eq!((q.topic, q.grep), (None, None));
    assert_eq!(q.min_severity, Some(Severity::Error), "only problems");

    let (mut app, request) = first_request();
    // The page arrives with rows the filter does not show: left out.
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "sev:warning");
    press(&mut app, KeyCode::Enter);
    let stale = request;
    answer(&mut app, &stale, &[(TOPIC, event(5, 5), 5)], true, 1);
    assert!(
        app.history.rows.is_empty(),
        "an answer for the old filter is dropped"
    );
    assert!(!app.history.loading, "and no longer awaited");
    app.stream_state.filter = Filter::default();
    press(&mut app, KeyCode::Char('H'));
    let request = history_request(&mut app);
    let warning = envelope(TOPIC, "warned", Severity::Warning, 6, 6);
    answer(
        &mut app,
        &request,
        &[(TOPIC, event(5, 5), 5), (TOPIC, warning.clone(), 6)],
        true,
        1,
    );
    assert_eq!(app.history.rows.len(), 2);
    // A new filter: the rows were read for the old one.
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "sev:warning");
    press(&mut app, KeyCode::Enter);
    assert!(app.history.rows.is_empty());
    press(&mut app, KeyCode::Char('H'));
    let request = history_request(&mut app);
    assert_eq!(request.query.min_severity, Some(Severity::Warning));
    answer(
        &mut app,
        &request,
        &[(TOPIC, event(5, 5), 5), (TOPIC, warning, 6)],
        true,
        1,
    );
    assert_eq!(
        shown(&app),
        ["warned"],
        "rows the filter does not show are not kept"
    );
    // `f` (only problems) is another filter too.
    press(&mut app, KeyCode::Char('f'));
    assert!(app.history.rows.is_empty());
}

#[test]
fn history_rows_count_against_the_stream_cap_and_eviction_keeps_both_ends() {
    let mut app = with_db(app_with(Limits {
        stream_len: 10,
        ..Limits::default()
    }));
    for n in 100..110 {
        feed(&mut app, TOPIC, &event(n, n as i64), false, n as i64);
    }
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Char('H'));
    let request = history_request(&mut app);
    let rows: Vec<_> = (0..8)
        .map(|n| (TOPIC, event(n, n as i64), n as i64))
        .collect();
    answer(&mut app, &request, &rows, true, 1);
    // History takes at most half; the newest history rows went (the page
    // the operator asked for keeps its oldest end), and the ring made room
    // by its oldest messages.
    assert_eq!(app.history.rows.len(), 5);
    assert_eq!(app.stream.len(), 5);
    assert_eq!(
        shown(&app),
        [
            "event 0",
            "event 1",
            "event 2",
            "event 3",
            "event 4",
            "event 105",
            "event 106",
            "event 107",
            "event 108",
            "event 109"
        ]
    );
    assert!(
        app.history.gap,
        "the separator says messages in between are gone"
    );
    // New messages: the ring turns over; the history rows stay.
    for n in 110..120 {
        feed(&mut app, TOPIC, &event(n, n as i64), false, n as i64);
    }
    assert_eq!(app.history.rows.len() + app.stream.len(), 10);
    assert_eq!(
        shown(&app)[..5],
        ["event 0", "event 1", "event 2", "event 3", "event 4"]
    );
    assert_eq!(shown(&app)[9], "event 119");
    // Bytes too, and the counts stay exact.
    let mut app = with_db(app_with(Limits {
        stream_len: 1000,
        stream_bytes: 60_000,
        ..Limits::default()
    }));
    let big = |n: i64| (TOPIC, vec![b'x'; 5_000 + n as usize], n);
    for n in 100..105 {
        let (t, p, s) = big(n);
        feed(&mut app, t, &p, false, s);
    }
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Char('H'));
    let request = history_request(&mut app);
    let rows: Vec<_> = (0..20).map(big).collect();
    answer(&mut app, &request, &rows, true, 1);
    assert!(app.history.bytes <= 30_000, "{}", app.history.bytes);
    assert_eq!(
        app.history.bytes,
        app.history.rows.iter().map(|m| m.cost).sum::<usize>()
    );
    assert!(app.stream_bytes + app.history.bytes <= 60_000);
    assert_eq!(
        app.stream_bytes,
        app.stream.iter().map(|m| m.cost).sum::<usize>()
    );
}

#[test]
fn a_live_message_replaces_its_history_copy() {
    let (mut app, request) = first_request();
    answer(
        &mut app,
        &request,
        &[(TOPIC, event(5, 5), 5), (TOPIC, event(6, 6), 6)],
        true,
        1,
    );
    // Delivered again (a retained message after a reconnect, a replay).
    feed(&mut app, TOPIC, &event(5, 5), false, 30);
    let summaries = shown(&app);
    assert_eq!(summaries.iter().filter(|s| *s == "event 5").count(), 1);
    assert_eq!(summaries.last().map(String::as_str), Some("event 5"));
    assert_eq!(app.history.rows.len(), 1);
}

#[test]
fn without_a_database_scrolling_says_once_how_to_configure_one() {
    let mut app = app();
    for n in 10..12 {
        feed(&mut app, TOPIC, &event(n, n as i64), false, n as i64);
    }
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Home);
    press(&mut app, KeyCode::Up);
    assert_eq!(status(&app), NO_HISTORY_DB);
    app.status = None;
    press(&mut app, KeyCode::Up);
    assert_eq!(app.status, None, "once");
    press(&mut app, KeyCode::Char('H'));
    assert_eq!(status(&app), NO_HISTORY_DB, "the key always answers");
    assert!(app.take_effects().is_empty());
}

#[test]
fn a_failed_read_is_one_status_line_and_quiets_scrolling() {
    let (mut app, request) = first_request();
    update(
        &mut app,
        Event::History(HistoryPage {
            generation: request.generation,
            result: Err("history database /x.db: database is locked".into()),
        }),
    );
    assert_eq!(status(&app), "history database /x.db: database is locked");
    assert_eq!(app.status.as_ref().map(|s| s.tone), Some(Tone::Error));
    assert!(!app.history.loading);
    press(&mut app, KeyCode::Up);
    assert!(app.take_effects().is_empty(), "scrolling does not retry");
    press(&mut app, KeyCode::Char('H'));
    history_request(&mut app);
}

#[test]
fn the_history_key_is_bound_in_the_stream_and_in_its_help() {
    let map = crate::keys::KeyMap::default();
    let h =
        crossterm::event::KeyEvent::new(KeyCode::Char('H'), crossterm::event::KeyModifiers::NONE);
    assert_eq!(map.action(Scope::Stream, &h), Some(Action::History));
    assert_eq!(map.action(Scope::Topics, &h), None);
    assert!(map
        .hints(Scope::Stream)
        .iter()
        .any(|(k, hint)| k == "H" && *hint == "older"));
}

/// The whole way on a real database written by the real `Store`: the
/// worker reads it (the code the console runs on its thread), the app
/// pages back until nothing is older, and every stored message shows once,
/// in order, above the live ones it does not repeat.
#[test]
fn paging_back_through_a_real_database_shows_every_message_once_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("history.db");
    let mut store = Store::open_writer(&db).expect("a new database");
    // 450 messages the recorder stored, a second apart, ending a minute
    // before the console started; the newest three also reach the console
    // live (the same envelopes, so the same ids).
    let total: u128 = 450;
    let payloads: Vec<Vec<u8>> = (0..total)
        .map(|n| {
            let secs = n as i64 - total as i64 - 60;
            envelope(TOPIC, &format!("stored {n:03}"), Severity::Info, n, secs)
        })
        .collect();
    let rows: Vec<StoredMessage> = payloads
        .iter()
        .map(|p| {
            let decoded = Payload::decode(p);
            let id = decoded.envelope().map(|e| e.id.to_string()).unwrap();
            StoredMessage::from_delivery("signalbox", TOPIC, p, &decoded, &id, at(0))
        })
        .inspect(|m| assert!(m.time < at(0)))
        .collect::<Vec<_>>();
    assert_eq!(store.insert(&rows).expect("stored"), rows.len());
    drop(store);

    let mut app = app();
    app.history = StreamHistory::new(Ok(db));
    for (i, p) in payloads[payloads.len() - 3..].iter().enumerate() {
        feed(&mut app, TOPIC, p, false, i as i64);
    }
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Home);
    press(&mut app, KeyCode::Up);
    let mut pages = 0;
    loop {
        let request = history_request(&mut app);
        let page = crate::ingest::history::load(&request);
        update(&mut app, Event::History(page));
        pages += 1;
        assert!(pages < 10, "paging ends");
        if app.history.exhausted {
            break;
        }
        press(&mut app, KeyCode::Char('H'));
    }
    assert_eq!(pages, 3, "pages of {PAGE}");
    let expected: Vec<String> = (0..total).map(|n| format!("stored {n:03}")).collect();
    assert_eq!(shown(&app), expected, "in order, each once");
    assert_eq!(app.history.rows.len(), total as usize - 3);
    assert_eq!(
        status(&app),
        "50 older messages from the history database: the oldest it holds"
    );
    // Drawn: history rows marked, the separator between them and the live.
    app.view = View::Stream;
    app.stream_state.selected = None;
    let screen = draw(&mut app, 100, 12).join("\n");
    assert!(screen.contains("447 from history"), "{screen}");
    assert!(screen.contains("── ▲ history (recorder db)"), "{screen}");
    assert!(screen.contains("stored 449"), "{screen}");
    // The oldest: selected and opened, with its payload.
    press(&mut app, KeyCode::Home);
    press(&mut app, KeyCode::Enter);
    let detail = app.detail.as_ref().expect("detail");
    assert_eq!(detail.msg.payload, Payload::decode(&payloads[0]));
    // A missing database is one line that says what to do.
    let mut request = history_request_for_missing(&dir);
    request.generation = app.history.generation;
    let page = crate::ingest::history::load(&request);
    let e = page.result.expect_err("no database");
    assert!(e.starts_with("no history database at "), "{e}");
    assert!(e.contains("signalbox-bridge recorder"), "{e}");
}

fn history_request_for_missing(dir: &tempfile::TempDir) -> HistoryRequest {
    HistoryRequest {
        generation: 0,
        db: dir.path().join("none.db"),
        prefix: "signalbox".into(),
        query: Query {
            limit: PAGE,
            ..Query::default()
        },
        before: None,
    }
}
