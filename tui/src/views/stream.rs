//! View 2, the stream: every message with time, topic and summary, newest
//! at the bottom; the filter, pause state and counts in the title.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};
use ratatui::Frame;
use signalbox_common::envelope::Severity;

use super::dashboard::severity_colour;
use super::{clock, fit_left, pane, row_style, window};
use crate::app::{App, ListHits, RowKey, View};
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
    let height = usize::from(area.height.saturating_sub(2));
    let selected = match state.selected {
        Some(seq) => rows
            .iter()
            .position(|m| m.seq >= seq)
            .unwrap_or(rows.len() - 1),
        None => rows.len() - 1,
    };
    let offset = if state.selected.is_none() {
        rows.len().saturating_sub(height)
    } else {
        window(selected, rows.len(), height)
    };
    let topic_w = (usize::from(area.width) * 2 / 5).clamp(16, 120);
    let keys = rows
        .iter()
        .skip(offset)
        .take(height)
        .map(|m| RowKey::Stream(m.seq))
        .collect();
    let table_rows = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(i, m)| {
            let is_selected = state.selected.is_some() && i == selected;
            let marker = if m.retain {
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
            .style(row_style(is_selected, theme))
        });
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
    super::table_hits(View::Stream, area, 0, keys)
}
