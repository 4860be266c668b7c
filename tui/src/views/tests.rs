//! Snapshots of every view with realistic data (envelopes, foreign JSON,
//! binary, long topics, non-ASCII) at 80×24 and 160×48, rendered with
//! ratatui's TestBackend at fixed times.

use crossterm::event::KeyCode;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::app::fixtures::{
    answer, envelope, envelope_with_body, feed, history_request, press, realistic, type_text,
};
use crate::app::{App, StreamHistory};
use crate::theme::Theme;

/// Renders `app` at `w`×`h` with the default theme.
pub fn render(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    let theme = Theme::default();
    terminal
        .draw(|frame| {
            super::draw(frame, app, &theme);
        })
        .expect("draws");
    terminal
}

fn snapshot(name: &str, app: &App) {
    for (w, h) in [(80, 24), (160, 48)] {
        let terminal = render(app, w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), terminal.backend());
    }
}

#[test]
fn dashboard() {
    let app = realistic();
    snapshot("dashboard", &app);
}

#[test]
fn stream_following_and_selected() {
    let mut app = realistic();
    press(&mut app, KeyCode::Char('2'));
    snapshot("stream", &app);
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Char('p'));
    snapshot("stream_paused_selected", &app);
}

#[test]
fn stream_with_rows_from_the_history_database() {
    use signalbox_common::envelope::Severity;
    let mut app = realistic();
    app.history = StreamHistory::new(Ok("/var/lib/signalbox/history.db".into()));
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Char('H'));
    let request = history_request(&mut app);
    let commit = "signalbox/dev/git/kernel/commit";
    let build = "signalbox/dev/koji/build/complete";
    // Last night's messages, and the recorder's copy of one the console
    // holds (left out).
    let rows = [
        (
            commit,
            envelope(
                commit,
                "skvidal pushed to yum (f13)",
                Severity::Info,
                201,
                -86_000,
            ),
            -86_000,
        ),
        (
            build,
            envelope(
                build,
                "yum-3.2.28-1.fc13 FAILED",
                Severity::Error,
                202,
                -85_990,
            ),
            -85_990,
        ),
        (
            "signalbox/dev/app/log/line",
            b"door closed".to_vec(),
            -3_600,
        ),
        (
            commit,
            envelope(
                commit,
                "jkeating pushed to kernel (f14)",
                Severity::Warning,
                203,
                -60,
            ),
            -60,
        ),
        (
            commit,
            envelope(
                commit,
                "jkeating pushed to kernel (f14): \"fix oops in ext4\"",
                Severity::Info,
                1,
                1,
            ),
            1,
        ),
    ];
    answer(&mut app, &request, &rows, true, 1);
    assert_eq!(app.history.rows.len(), 4);
    // The first history row selected: the rows above the separator.
    press(&mut app, KeyCode::Home);
    snapshot("stream_history", &app);
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Enter);
    snapshot("detail_history", &app);
    press(&mut app, KeyCode::Esc);
    // Messages in between evicted (memory bounds): the separator says so.
    app.history.gap = true;
    let screen = crate::app::fixtures::draw(&mut app, 160, 48).join("\n");
    assert!(
        screen.contains("messages in between no longer kept · live ▼"),
        "{screen}"
    );
}

#[test]
fn stream_filtered() {
    let mut app = realistic();
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "sev:warning");
    snapshot("stream_filter_typing", &app);
}

#[test]
fn topics() {
    let mut app = realistic();
    press(&mut app, KeyCode::Char('3'));
    for _ in 0..4 {
        press(&mut app, KeyCode::Down);
    }
    press(&mut app, KeyCode::Right);
    app.topic_selected = Some("signalbox/dev/cron/backup/finished".into());
    snapshot("topics", &app);
}

#[test]
fn topics_with_the_sparkline_of_a_picked_field() {
    let mut app = realistic();
    let topic = "signalbox/dev/sensor/rack-12/env";
    for i in 0..40u32 {
        // A daily-ish curve of temperatures, and a constant humidity.
        let temp = 20.0 + f64::from((i * 7) % 11) * 0.5;
        let body = serde_json::json!({"temp": temp, "humidity": 40.5});
        feed(
            &mut app,
            topic,
            &envelope_with_body(topic, body, 100 + u128::from(i)),
            false,
            15,
        );
    }
    press(&mut app, KeyCode::Char('3'));
    // Open the way to the topic, collapse what is in the way at 80×24.
    for (path, key) in [
        ("signalbox/_health", KeyCode::Left),
        ("signalbox/_failed", KeyCode::Left),
        ("signalbox/dev/sensor", KeyCode::Right),
        ("signalbox/dev/sensor/rack-12", KeyCode::Right),
    ] {
        app.topic_selected = Some(path.into());
        press(&mut app, key);
    }
    app.topic_selected = Some(topic.into());
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.topic_series().map(|s| s.path), Some("body.temp".into()));
    snapshot("topics_sparkline", &app);
}

#[test]
fn listeners() {
    let mut app = realistic();
    press(&mut app, KeyCode::Char('4'));
    snapshot("listeners", &app);
}

#[test]
fn failed_and_confirmation() {
    let mut app = realistic();
    press(&mut app, KeyCode::Char('5'));
    snapshot("failed", &app);
    press(&mut app, KeyCode::Char('a'));
    snapshot("failed_confirm_ack", &app);
}

#[test]
fn detail_of_envelope_json_text_and_binary() {
    let mut app = realistic();
    press(&mut app, KeyCode::Char('2'));
    app.stream_state.selected = Some(1);
    press(&mut app, KeyCode::Enter);
    snapshot("detail_envelope", &app);
    press(&mut app, KeyCode::Esc);
    app.stream_state.selected = Some(8);
    press(&mut app, KeyCode::Enter);
    snapshot("detail_binary", &app);
}

#[test]
fn help_overlay() {
    let mut app = realistic();
    press(&mut app, KeyCode::Char('?'));
    snapshot("help", &app);
}

#[test]
fn no_color_theme_draws_without_colours() {
    let app = realistic();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("test terminal");
    let theme = Theme::default().without_colour();
    terminal
        .draw(|frame| {
            super::draw(frame, &app, &theme);
        })
        .expect("draws");
    let buffer = terminal.backend().buffer();
    assert!(buffer
        .content()
        .iter()
        .all(|c| c.fg == ratatui::style::Color::Reset && c.bg == ratatui::style::Color::Reset));
}

#[test]
fn tabs_are_hit_by_mouse_columns() {
    assert_eq!(super::tab_at(0), Some(crate::app::View::Dashboard));
    assert_eq!(super::tab_at(14), Some(crate::app::View::Stream));
    assert_eq!(super::tab_at(200), None);
}

#[test]
fn sparkline_figures_read_well() {
    use super::topics::number;
    assert_eq!(number(21.0), "21");
    assert_eq!(number(0.1 + 0.2), "0.3");
    assert_eq!(number(-3.25), "-3.25");
    assert_eq!(number(1e20), "1.000e20");
    assert_eq!(number(0.00001), "1.000e-5");
    assert_eq!(number(0.0), "0");
}

#[test]
fn every_view_draws_at_300_columns_and_at_tiny_sizes() {
    let long_topic =
        "signalbox/dev/cron/very-long-job-name-for-nightly-backup-of-the-package-database/finished";
    for (w, h) in [(300, 60), (300, 24), (40, 10), (10, 3), (1, 1)] {
        let mut app = realistic();
        crate::app::update(&mut app, crate::event::Event::Resize(w, h));
        for key in ['1', '2', '3', '4', '5'] {
            press(&mut app, KeyCode::Char(key));
            let screen = crate::app::fixtures::draw(&mut app, w, h);
            if w == 300 && h == 60 {
                let text = screen.join("\n");
                assert!(
                    screen[0].contains("connecting to mqtt://127.0.0.1:1883"),
                    "the header has room for the whole connection: {}",
                    screen[0]
                );
                match key {
                    '2' => assert!(text.contains(long_topic), "long topics in full:\n{text}"),
                    '4' => assert!(text.contains("smtp: connection refused by mail01:25")),
                    '5' => assert!(text.contains("0193a0b0-0000-7000-8000-000000000002")),
                    _ => {}
                }
                // Nothing is drawn beyond the screen's width (the buffer
                // would panic) and the footer spans it.
                assert!(screen.iter().all(|l| l.chars().count() == 300));
            }
        }
        press(&mut app, KeyCode::Char('2'));
        press(&mut app, KeyCode::Enter);
        crate::app::fixtures::draw(&mut app, w, h);
        press(&mut app, KeyCode::Char('?'));
        crate::app::fixtures::draw(&mut app, w, h);
    }
}
