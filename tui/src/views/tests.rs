//! Snapshots of every view with realistic data (envelopes, foreign JSON,
//! binary, long topics, non-ASCII) at 80×24 and 160×48, rendered with
//! ratatui's TestBackend at fixed times.

use crossterm::event::KeyCode;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::app::fixtures::{press, realistic, type_text};
use crate::app::App;
use crate::theme::Theme;

/// Renders `app` at `w`×`h` with the default theme.
pub fn render(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    let theme = Theme::default();
    terminal
        .draw(|frame| super::draw(frame, app, &theme))
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
        .draw(|frame| super::draw(frame, &app, &theme))
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
