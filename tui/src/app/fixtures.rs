//! Builders of models and messages for the tests of `update` and the view
//! snapshots: fixed times, fixed ids, realistic data.

use chrono::{DateTime, Duration, FixedOffset, TimeZone, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use signalbox_common::envelope::{Envelope, Severity};
use signalbox_common::failed::FailureRecord;
use signalbox_common::health::{HealthReport, HealthState};

use super::{update, App, Limits, Settings};
use crate::event::{Batch, Event, Incoming, PAYLOAD_CAP};
use crate::keys::KeyMap;

/// The fixed start time of every test.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 19, 3, 0)
        .single()
        .expect("valid time")
}

/// `secs` after [`t0`].
pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(secs)
}

/// A console with `limits`, prefix `signalbox`, at [`t0`], times in UTC.
pub fn app_with(limits: Limits) -> App {
    App::new(Settings {
        prefix: "signalbox".into(),
        env: "dev".into(),
        broker: "mqtt://127.0.0.1:1883".into(),
        embedded: false,
        limits,
        keys: KeyMap::default(),
        now: t0(),
        offset: FixedOffset::east_opt(0).expect("offset"),
        history_db: Err(NO_HISTORY_DB.into()),
    })
}

/// Why the test console has no history database.
pub const NO_HISTORY_DB: &str =
    "no history database: set `db` in the config file's [history] table";

/// A console with the default limits.
pub fn app() -> App {
    app_with(Limits::default())
}

/// A received message.
pub fn incoming(topic: &str, payload: &[u8], retain: bool, secs: i64) -> Incoming {
    Incoming::decode("signalbox", topic, payload, retain, at(secs), PAYLOAD_CAP)
}

/// Feeds one message.
pub fn feed(app: &mut App, topic: &str, payload: &[u8], retain: bool, secs: i64) {
    update(
        app,
        Event::Mqtt(Batch {
            messages: vec![incoming(topic, payload, retain, secs)],
        }),
    );
}

/// Presses a key.
pub fn press(app: &mut App, code: KeyCode) {
    update(app, Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

/// Draws `app` on a `w`×`h` test terminal, as the console loop does, and
/// remembers where the rows went (for clicks); returns the screen's lines.
pub fn draw(app: &mut App, w: u16, h: u16) -> Vec<String> {
    let mut terminal =
        ratatui::Terminal::new(ratatui::backend::TestBackend::new(w, h)).expect("test terminal");
    let theme = crate::theme::Theme::default();
    let mut hits = None;
    terminal
        .draw(|frame| hits = Some(crate::views::draw(frame, app, &theme)))
        .expect("draws");
    app.remember_hits(hits.expect("drawn"));
    let buffer = terminal.backend().buffer();
    (0..h)
        .map(|y| (0..w).map(|x| buffer[(x, y)].symbol()).collect())
        .collect()
}

/// The screen line (row) of the first line of `screen` containing `text`.
pub fn row_of(screen: &[String], text: &str) -> u16 {
    let row = screen
        .iter()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{text:?} is not on the screen:\n{}", screen.join("\n")));
    u16::try_from(row).expect("a screen row")
}

/// A left click at (`column`, `row`) of the screen.
pub fn click(app: &mut App, column: u16, row: u16) {
    mouse(app, MouseEventKind::Down(MouseButton::Left), column, row);
}

/// A mouse event at (`column`, `row`).
pub fn mouse(app: &mut App, kind: MouseEventKind, column: u16, row: u16) {
    update(
        app,
        Event::Mouse(MouseEvent {
            kind,
            column,
            row,
            modifiers: KeyModifiers::NONE,
        }),
    );
}

/// Types text (each character a key).
pub fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        press(app, KeyCode::Char(c));
    }
}

/// An envelope with a fixed id (from `n`) and time.
pub fn envelope(topic: &str, summary: &str, severity: Severity, n: u128, secs: i64) -> Vec<u8> {
    Envelope::builder(topic, summary)
        .severity(severity)
        .bridge("git")
        .host("pkgs01")
        .agent("jkeating")
        .id(uuid::Uuid::from_u128(
            0x0193_0000_0000_7000_8000_0000_0000_0000 | n,
        ))
        .time(at(secs))
        .body(serde_json::json!({"repo": "kernel", "n": n}))
        .build()
        .expect("valid envelope")
        .to_vec()
}

/// An info envelope on `topic` with `body`, a fixed id (from `n`) and time.
pub fn envelope_with_body(topic: &str, body: serde_json::Value, n: u128) -> Vec<u8> {
    Envelope::builder(topic, format!("reading {n}"))
        .bridge("sensor")
        .host("rack12")
        .id(uuid::Uuid::from_u128(
            0x0193_0000_0000_7000_8000_0000_0000_0000 | n,
        ))
        .time(at(n as i64))
        .body(body)
        .build()
        .expect("valid envelope")
        .to_vec()
}

/// A health report of `listener` in `state`, made `secs` after t0.
pub fn health(listener: &str, state: HealthState, secs: i64) -> Vec<u8> {
    let mut r = HealthReport::new(listener, at(-3600), 10);
    r.state = state;
    r.host = "bus01".into();
    r.pid = 4242;
    r.version = "0.1.0".into();
    r.last_seen = at(secs);
    r.counters.received = 1289;
    r.counters.processed = 1285;
    r.counters.failed = 2;
    if state != HealthState::Up {
        r.last_error = Some("smtp: connection refused by mail01:25".into());
    }
    r.to_vec()
}

/// A failure record of `listener` for message `id`.
pub fn record(listener: &str, id: &str, payload: &[u8], attempts: u32, secs: i64) -> Vec<u8> {
    let mut r = FailureRecord::new(
        listener,
        id,
        "signalbox/dev/git/kernel/commit",
        payload,
        "smtp: connection refused",
        at(secs),
    );
    r.attempts = attempts;
    r.to_vec()
}

/// A realistic console: envelopes of every severity, foreign JSON, text,
/// binary, a long topic, non-ASCII, retained state, listeners up, stale,
/// down and unreadable, a roster naming a silent one, failure records.
pub fn realistic() -> App {
    let mut app = app();
    let mut n = 0u128;
    let mut env = |topic: &str, summary: &str, sev: Severity, secs: i64| {
        n += 1;
        (
            topic.to_string(),
            envelope(topic, summary, sev, n, secs),
            secs,
        )
    };
    let mut messages = vec![
        env("signalbox/dev/git/kernel/commit", "jkeating pushed to kernel (f14): \"fix oops in ext4\"", Severity::Info, 1),
        env("signalbox/dev/koji/build/complete", "kernel-6.1.0-1.fc14 built", Severity::Info, 2),
        env("signalbox/dev/mail/bugzilla/received", "[Bug 4711] New: kernel oops on umount", Severity::Warning, 3),
        env("signalbox/dev/qa/depcheck/result", "depcheck FAILED for kernel-6.1.0-1.fc14", Severity::Error, 4),
        env("signalbox/dev/git/größe/Ω-日本/commit", "Jürgen pushed to größe: „Umlaute überall“", Severity::Info, 5),
        env("signalbox/dev/cron/very-long-job-name-for-nightly-backup-of-the-package-database/finished", "backup finished in 7.9 s (exit 0)", Severity::Debug, 6),
    ];
    messages.push((
        "signalbox/dev/sensor/rack-12/temp".into(),
        br#"{"temp": 21.5, "unit": "C"}"#.to_vec(),
        7,
    ));
    messages.push((
        "signalbox/dev/lab/rack-12/reading".into(),
        vec![0x89, b'P', b'N', b'G', 0, 0xff, 3, 4],
        8,
    ));
    messages.push((
        "signalbox/dev/app/log/line".into(),
        b"door opened".to_vec(),
        9,
    ));
    for (topic, payload, secs) in messages {
        feed(&mut app, &topic, &payload, false, secs);
    }
    feed(
        &mut app,
        "signalbox/dev/cron/backup/finished",
        &envelope(
            "signalbox/dev/cron/backup/finished",
            "backup ok",
            Severity::Info,
            90,
            10,
        ),
        true,
        10,
    );
    feed(
        &mut app,
        "signalbox/dev/cron/backup/finished",
        &envelope(
            "signalbox/dev/cron/backup/finished",
            "backup ok in 8.4 s",
            Severity::Info,
            91,
            11,
        ),
        false,
        11,
    );
    feed(
        &mut app,
        "signalbox/_roster",
        br#"["feed-writer","mail-notify","rss-poller","sensor-archive"]"#,
        true,
        12,
    );
    feed(
        &mut app,
        "signalbox/_health/mail-notify",
        &health("mail-notify", HealthState::Up, 12),
        true,
        12,
    );
    feed(
        &mut app,
        "signalbox/_health/rss-poller",
        &health("rss-poller", HealthState::Up, -100),
        true,
        12,
    );
    feed(
        &mut app,
        "signalbox/_health/sensor-archive",
        &health("sensor-archive", HealthState::Down, 5),
        true,
        12,
    );
    feed(
        &mut app,
        "signalbox/_health/broken",
        br#"{"listener":"broken","state":"sleeping"}"#,
        true,
        12,
    );
    let id1 = "0193a0b0-0000-7000-8000-000000000001";
    let id2 = "0193a0b0-0000-7000-8000-000000000002";
    let env1 = envelope(
        "signalbox/dev/git/kernel/commit",
        "jkeating pushed to kernel (f14)",
        Severity::Info,
        1,
        1,
    );
    feed(
        &mut app,
        &format!("signalbox/_failed/mail-notify/{id1}"),
        &record("mail-notify", id1, &env1, 1, 13),
        true,
        13,
    );
    feed(
        &mut app,
        &format!("signalbox/_failed/sensor-archive/{id2}"),
        &record("sensor-archive", id2, &[0x89, 0, 0xff], 5, 14),
        true,
        14,
    );
    update(&mut app, Event::Tick(at(20)));
    app
}

/// The history request the last key asked for (taken from the effects);
/// panics when there is none.
pub fn history_request(app: &mut App) -> super::HistoryRequest {
    let mut found = None;
    for effect in app.take_effects() {
        if let super::Effect::LoadHistory(request) = effect {
            found = Some(request);
        }
    }
    found.expect("a history request")
}

/// Answers `request` with `rows` (topic, payload, seconds after t0; oldest
/// first), as the worker would: `more` says whether older ones exist, and
/// the next page ends at the first row (database position `db_seq`).
pub fn answer(
    app: &mut App,
    request: &super::HistoryRequest,
    rows: &[(&str, Vec<u8>, i64)],
    more: bool,
    db_seq: i64,
) {
    let next = rows
        .first()
        .map(|(_, _, secs)| signalbox_bridges::history::Before {
            time: at(*secs),
            seq: Some(db_seq),
        });
    let rows = rows
        .iter()
        .map(|(topic, payload, secs)| incoming(topic, payload, false, *secs))
        .collect();
    update(
        app,
        Event::History(crate::event::HistoryPage {
            generation: request.generation,
            result: Ok(crate::event::OlderMessages { rows, more, next }),
        }),
    );
}
