//! Drawing: one file per view, each `fn draw(frame, area, &App, &Theme)`
//! that reads the model and never changes it. This module draws the frame
//! around them — the header (tabs, connection), the footer (hints generated
//! from the key bindings of the focus, the status line, the `/` and `:`
//! input lines) and the overlays (help, confirmation).
//!
//! Scrolling is stateless: a list shows its selected row in the middle of
//! the page (or the page that ends with it near the end), computed from the
//! selection and the area, so views need no mutable scroll state.

pub mod dashboard;
pub mod detail;
pub mod failed;
pub mod listeners;
pub mod stream;
pub mod topics;

use chrono::{DateTime, FixedOffset, Utc};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;
use signalbox_common::mqtt::ConnState;

use crate::app::{App, Hits, ListHits, Overlay, RowKey, Tone, View};
use crate::keys::Scope;
use crate::theme::Theme;

/// Draws the whole screen; returns where the rows a click can select are.
pub fn draw(frame: &mut Frame, app: &App, theme: &Theme) -> Hits {
    let area = frame.area();
    frame.render_widget(Block::new().style(theme.text()), area);
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, app, theme);
    let list = match &app.detail {
        Some(detail) => {
            detail::draw(frame, body, app, detail, theme);
            None
        }
        None => match app.view {
            View::Dashboard => {
                dashboard::draw(frame, body, app, theme);
                None
            }
            View::Stream => stream::draw(frame, body, app, theme),
            View::Topics => topics::draw(frame, body, app, theme),
            View::Listeners => listeners::draw(frame, body, app, theme),
            View::Failed => failed::draw(frame, body, app, theme),
        },
    };
    draw_footer(frame, footer, app, theme);
    match &app.overlay {
        Some(Overlay::Help) => draw_help(frame, body, app, theme),
        Some(Overlay::Confirm { question, .. }) => draw_confirm(frame, body, question, theme),
        _ => {}
    }
    Hits { list }
}

/// The hits of a table drawn in `area` inside a border, below `header`
/// lines, showing `rows` from its first line.
pub fn table_hits(view: View, area: Rect, header: u16, rows: Vec<RowKey>) -> Option<ListHits> {
    let top = area.y.saturating_add(1 + header);
    let bottom = area.y.saturating_add(area.height.saturating_sub(1));
    let area = Rect {
        x: area.x.saturating_add(1),
        y: top,
        width: area.width.saturating_sub(2),
        height: bottom.saturating_sub(top).min(rows.len() as u16),
    };
    (area.height > 0).then_some(ListHits { view, area, rows })
}

fn tab_label(index: usize, view: View) -> String {
    format!(" {} {} ", index + 1, view.title())
}

/// The view whose tab is at `column` of the header (for mouse clicks).
pub fn tab_at(column: u16) -> Option<View> {
    let mut x = 0u16;
    for (i, view) in View::ALL.iter().enumerate() {
        let w = tab_label(i, *view).chars().count() as u16;
        if column >= x && column < x + w {
            return Some(*view);
        }
        x += w;
    }
    None
}

fn draw_header(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let mut spans = Vec::new();
    for (i, view) in View::ALL.iter().enumerate() {
        let style = if *view == app.view && app.detail.is_none() {
            theme.tab_active()
        } else {
            theme.bar()
        };
        let mut label = tab_label(i, *view);
        // Counts that need attention, on the tabs themselves.
        if *view == View::Failed && !app.failed.is_empty() {
            label = format!(" 5 Failed ({}) ", app.failed.len());
        }
        spans.push(Span::styled(label, style));
    }
    let left = Line::from(spans);
    let (text, colour) = conn_text(app, theme);
    let right = Line::from(vec![
        Span::styled(text, theme.fg(colour, true).bg(theme.bar_bg)),
        Span::styled(" ", theme.bar()),
    ]);
    frame.render_widget(Paragraph::new(left).style(theme.bar()), area);
    let width = right.width() as u16;
    let tabs_width = left_width(app);
    if area.width > tabs_width + 2 {
        let w = width.min(area.width - tabs_width - 1);
        let r = Rect {
            x: area.x + area.width - w,
            y: area.y,
            width: w,
            height: 1,
        };
        frame.render_widget(Paragraph::new(right).style(theme.bar()), r);
    }
}

fn left_width(app: &App) -> u16 {
    let mut w: usize = View::ALL
        .iter()
        .enumerate()
        .map(|(i, v)| tab_label(i, *v).chars().count())
        .sum();
    if !app.failed.is_empty() {
        w += format!("({}) ", app.failed.len()).len();
    }
    w as u16
}

/// The connection state in words, and its colour.
pub fn conn_text(app: &App, theme: &Theme) -> (String, ratatui::style::Color) {
    let embedded = if app.conn.embedded { " (embedded)" } else { "" };
    match &app.conn.state {
        ConnState::Connecting => (
            format!("connecting to {}{embedded}…", app.conn.broker),
            theme.warn_fg,
        ),
        ConnState::Connected { broker } => (format!("● {broker}{embedded}"), theme.ok_fg),
        ConnState::Reconnecting { attempt, error, .. } => (
            format!("reconnecting (attempt {attempt}): {error}"),
            theme.danger_fg,
        ),
        ConnState::Closed => ("connection closed".into(), theme.danger_fg),
    }
}

fn draw_footer(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let line = match &app.overlay {
        Some(Overlay::Filter(text)) => Line::from(vec![
            Span::styled("/", theme.fg(theme.key_fg, true)),
            Span::raw(text.clone()),
            Span::styled("█", theme.dim()),
            Span::styled(
                "  topic/+/#  text  sev:warning  kind:binary · ↵ keep · esc close",
                theme.dim(),
            ),
        ]),
        Some(Overlay::Command(text)) => Line::from(vec![
            Span::styled(":", theme.fg(theme.key_fg, true)),
            Span::raw(text.clone()),
            Span::styled("█", theme.dim()),
            Span::styled(
                "  pub TOPIC TEXT · filter EXPR · theme NAME · ping · q",
                theme.dim(),
            ),
        ]),
        Some(Overlay::Confirm { .. }) => Line::from(vec![
            Span::styled("y", theme.fg(theme.key_fg, true)),
            Span::raw(" yes  "),
            Span::styled("n", theme.fg(theme.key_fg, true)),
            Span::raw(" no"),
        ]),
        _ => match &app.status {
            Some(status) => {
                let colour = match status.tone {
                    Tone::Ok => theme.ok_fg,
                    Tone::Info => theme.fg,
                    Tone::Error => theme.danger_fg,
                };
                Line::from(Span::styled(status.text.clone(), theme.fg(colour, true)))
            }
            None => hints_line(app, theme),
        },
    };
    frame.render_widget(Paragraph::new(line).style(theme.bar()), area);
}

fn hints_line(app: &App, theme: &Theme) -> Line<'static> {
    let scope = app.scope();
    let mut spans = Vec::new();
    for (key, hint) in app.keys.hints(scope) {
        spans.push(Span::styled(
            key,
            theme.fg(theme.key_fg, true).bg(theme.bar_bg),
        ));
        spans.push(Span::styled(format!(" {hint}  "), theme.bar()));
    }
    if app.problems_only && scope != Scope::Detail {
        spans.insert(
            0,
            Span::styled(
                "[problems only] ",
                theme.fg(theme.warn_fg, true).bg(theme.bar_bg),
            ),
        );
    }
    Line::from(spans)
}

/// A rectangle of at most `w`×`h` centred in `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn draw_confirm(frame: &mut Frame, body: Rect, question: &str, theme: &Theme) {
    let width = (question.chars().count() as u16 + 4).clamp(30, body.width.max(30));
    let area = centered(body, width, 5);
    frame.render_widget(Clear, area);
    let block = Block::bordered()
        .title(Span::styled(" Confirm ", theme.title()))
        .border_style(theme.fg(theme.warn_fg, true));
    let text = vec![
        Line::from(question.to_string()),
        Line::from(vec![
            Span::styled("y", theme.fg(theme.key_fg, true)),
            Span::raw(" yes   "),
            Span::styled("n", theme.fg(theme.key_fg, true)),
            Span::raw(" no"),
        ]),
    ];
    frame.render_widget(
        Paragraph::new(text)
            .block(block)
            .style(theme.text())
            .wrap(Wrap { trim: true }),
        area,
    );
}

fn draw_help(frame: &mut Frame, body: Rect, app: &App, theme: &Theme) {
    let area = centered(body, 100, body.height);
    frame.render_widget(Clear, area);
    let mut lines = Vec::new();
    let scopes = [
        (Scope::Global, "Everywhere"),
        (Scope::Dashboard, "1 Dashboard"),
        (Scope::Stream, "2 Stream"),
        (Scope::Topics, "3 Topics"),
        (Scope::Listeners, "4 Listeners"),
        (Scope::Failed, "5 Failed"),
        (Scope::Detail, "Detail"),
    ];
    // Compact: one wrapped paragraph of `keys what` per scope, so that
    // every key fits on an 80×24 screen.
    for (scope, title) in scopes {
        let mut spans = vec![Span::styled(format!("{title}: "), theme.title())];
        for b in app.keys.bindings.iter().filter(|b| b.scope == scope) {
            let keys = b
                .keys
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("/");
            spans.push(Span::styled(keys, theme.fg(theme.key_fg, true)));
            spans.push(Span::raw(format!(" {} · ", b.help)));
        }
        lines.push(Line::from(spans));
    }
    lines.push(Line::from(Span::styled(
        "Any key closes this help. Keys are remappable in the config file's [keys] table (see README).",
        theme.dim(),
    )));
    let block = Block::new()
        .borders(Borders::ALL)
        .title(Span::styled(" Help ", theme.title()))
        .border_style(theme.border());
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .style(theme.text())
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// A pane with a title.
pub fn pane<'a>(title: impl Into<Line<'a>>, theme: &Theme) -> Block<'a> {
    Block::bordered()
        .title(title)
        .title_style(theme.title())
        .border_style(theme.border())
}

/// First row to show so that `selected` is visible in `height` rows of a
/// list of `len` (centred where possible).
pub fn window(selected: usize, len: usize, height: usize) -> usize {
    if len <= height || height == 0 {
        return 0;
    }
    selected.saturating_sub(height / 2).min(len - height)
}

/// `HH:MM:SS` of `time` in the console's time zone.
pub fn clock(time: DateTime<Utc>, offset: FixedOffset) -> String {
    time.with_timezone(&offset).format("%H:%M:%S").to_string()
}

/// A short age: `4s`, `12m`, `3h`, `2d`; `-` for the future.
pub fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds();
    match secs {
        s if s < 0 => "-".into(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A byte count for people: `512 B`, `12.3 KiB`, `5.0 MiB`.
pub fn bytes(n: usize) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
    }
}

/// `text` cut to `width` characters with `…`.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` cut from the left (long topics keep their informative end).
pub fn fit_left(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= width {
        return text.to_string();
    }
    let mut out = String::from("…");
    out.extend(text.chars().skip(n - width.saturating_sub(1)));
    out
}

/// The style of a row that may be selected.
pub fn row_style(selected: bool, theme: &Theme) -> Style {
    if selected {
        theme.selection()
    } else {
        Style::new()
    }
}

/// Bold.
pub fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

#[cfg(test)]
pub mod tests;
