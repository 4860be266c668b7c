//! View 2, the stream: every message with time, topic and summary, newest
//! at the bottom; the filter, pause state and counts in the title. Messages
//! read from the history database show above the live ones, marked `H`,
//! with a separator line between the two.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};
use ratatui::Frame;
use signalbox_common::envelope::Severity;

use super::dashboard::severity_colour;
use super::{clock, fit, fit_left, pane, row_style, window};
use crate::app::{stream_index, App, ListHits, Msg, RowKey, View};
use crate::theme::Theme;

/// Draws the stream in `area`; returns where its rows are.
pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) -> Option<ListHits> {
    let rows = app.stream_rows();
    let state = &app.stream_state;
    let mut title = vec![Span::styled(
        format!(" Stream · {} shown of {} received ", rows.len(), app.seq),
        theme.title(),
    )];
    if !state.filter.is_empty() {
        title.push(Span::styled(
            format!("· filter: {} ", state.filter.text),
            theme.fg(theme.accent_fg, true),
        ));
    }
    // History rows come first (they sort before every live message).
    let older = rows.iter().take_while(|m| m.is_from_history()).count();
    if app.history.loading {
        title.push(Span::styled(
            "· loading history… ",
            theme.fg(theme.accent_fg, false),
        ));
    } else if older > 0 {
        title.push(Span::styled(
            format!("· {older} from history "),
            theme.fg(theme.accent_fg, false),
        ));
    }
    if let Some(p) = &state.paused {
        title.push(Span::styled(
            format!("· PAUSED, {} new (p resumes) ", p.arrived),
            theme.fg(theme.warn_fg, true),
        ));
    } else if state.selected.is_none() {
        title.push(Span::styled("· following ", theme.dim()));
    }
    let block = pane(Line::from(title), theme);
    if rows.is_empty() {
        let text = if app.seq == 0 {
            "waiting for messages…"
        } else {
            "no message matches (/ edits the filter)"
        };
        frame.render_widget(
            Paragraph::new(Span::styled(text, theme.dim())).block(block),
            area,
        );
        return None;
    }
    // Lines: the history rows, the separator (when there are any), the
    // live rows.
    let separator = (older > 0).then_some(older);
    let lines = rows.len() + usize::from(separator.is_some());
    let line_of = |index: usize| match separator {
        Some(s) if index >= s => index + 1,
        _ => index,
    };
    let height = usize::from(area.height.saturating_sub(2));
    let selected = match state.selected {
        Some(seq) => stream_index(&rows, seq),
        None => rows.len() - 1,
    };
    let offset = if state.selected.is_none() {
        lines.saturating_sub(height)
    } else {
        window(line_of(selected), lines, height)
    };
    let topic_w = (usize::from(area.width) * 2 / 5).clamp(16, 120);
    let mut keys = Vec::new();
    let mut table_rows = Vec::new();
    let mut separator_at = None;
    for line in offset..(offset + height).min(lines) {
        let index = match separator {
            Some(s) if line == s => {
                keys.push(RowKey::Separator);
                separator_at = Some(line - offset);
                table_rows.push(Row::new(Vec::<Line>::new()));
                continue;
            }
            Some(s) if line > s => line - 1,
            _ => line,
        };
        let m = rows[index];
        keys.push(RowKey::Stream(m.seq));
        let is_selected = state.selected.is_some() && index == selected;
        table_rows.push(message_row(m, app, theme, topic_w).style(row_style(is_selected, theme)));
    }
    let table = Table::new(
        table_rows,
        [
            Constraint::Length(8),
            Constraint::Length(1),
            Constraint::Length(topic_w as u16),
            Constraint::Fill(1),
        ],
    )
    .block(block)
    .column_spacing(1);
    frame.render_widget(table, area);
    if let Some(at) = separator_at {
        let line = Rect {
            x: area.x.saturating_add(1),
            y: area.y.saturating_add(1 + at as u16),
            width: area.width.saturating_sub(2),
            height: 1,
        };
        let text = separator_text(&rows[..older], app, usize::from(line.width));
        frame.render_widget(
            Paragraph::new(Span::styled(text, theme.fg(theme.accent_fg, false))),
            line,
        );
    }
    super::table_hits(View::Stream, area, 0, keys)
}

/// One message as a table row.
fn message_row<'a>(m: &Msg, app: &App, theme: &Theme, topic_w: usize) -> Row<'a> {
    let marker = if m.is_from_history() {
        Span::styled("H", theme.fg(theme.accent_fg, false))
    } else if m.retain {
        Span::styled("R", theme.fg(theme.retained_fg, true))
    } else {
        Span::raw(" ")
    };
    let colour = severity_colour(m.severity, theme);
    let mut summary = if m.cut {
        format!("{} [cut: {}]", m.summary, super::bytes(m.size))
    } else {
        m.summary.to_string()
    };
    if let Some(verdict) = &m.signature {
        // With a trust directory: ✓ NAME, ✗ NAME or unsigned.
        summary = format!("{} · {summary}", verdict.mark());
    }
    Row::new(vec![
        Line::from(Span::styled(clock(m.at, app.offset), theme.dim())),
        Line::from(marker),
        Line::from(Span::styled(
            fit_left(&m.topic, topic_w),
            theme.fg(theme.topic_fg, false),
        )),
        Line::from(Span::styled(
            summary,
            theme.fg(colour, m.severity >= Some(Severity::Warning)),
        )),
    ])
}

/// The line between the history rows (`older`, oldest first) and the live
/// ones: what the rows above are, their time span (with dates: they may be
/// days old), and whether messages in between were evicted.
fn separator_text(older: &[&std::sync::Arc<Msg>], app: &App, width: usize) -> String {
    let stamp = |m: &Msg| {
        m.at.with_timezone(&app.offset)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let span = match (older.first(), older.last()) {
        (Some(a), Some(b)) => format!(" {} – {}", stamp(a), stamp(b)),
        _ => String::new(),
    };
    let gap = if app.history.gap {
        " · messages in between no longer kept"
    } else {
        ""
    };
    let text = format!("── ▲ history (recorder db){span}{gap} · live ▼ ");
    let used = text.chars().count();
    fit(
        &format!("{text}{}", "─".repeat(width.saturating_sub(used))),
        width,
    )
}
