//! View 5, the failure records: listener, message, attempts, age and error,
//! with the outcome of an acknowledge or replay under way.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};
use ratatui::Frame;
use signalbox_common::failed::DEFAULT_MAX_ATTEMPTS;

use super::{age, fit, pane, row_style, window};
use crate::app::{App, ListHits, Pending, RowKey, View};
use crate::theme::Theme;

/// Draws the failure records in `area`; returns where its rows are.
pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) -> Option<ListHits> {
    let rows = app.failed_rows();
    let mut title = format!(" Failed · {} records ", rows.len());
    if app.failed_dropped > 0 {
        title.push_str(&format!(
            "· {} further records not tracked ",
            app.failed_dropped
        ));
    }
    let block = pane(title, theme);
    if rows.is_empty() {
        let text = "no failed message (records appear here as listeners publish them; P pings)";
        frame.render_widget(
            Paragraph::new(Span::styled(text, theme.dim())).block(block),
            area,
        );
        return None;
    }
    let height = usize::from(area.height.saturating_sub(3));
    let selected = app.failed_selected.min(rows.len() - 1);
    let offset = window(selected, rows.len(), height);
    let wide = area.width >= 120;
    let keys = rows
        .iter()
        .skip(offset)
        .take(height)
        .map(|f| RowKey::Failed(f.listener.clone(), f.id.clone()))
        .collect();
    let table_rows = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(i, f)| {
            let pending = match f.pending {
                Some(Pending::Ack) => Span::styled("acking…", theme.fg(theme.warn_fg, true)),
                Some(Pending::Replay) => Span::styled("replaying…", theme.fg(theme.warn_fg, true)),
                None => Span::raw(""),
            };
            let id: String = f.id.chars().take(if wide { 36 } else { 8 }).collect();
            let mut cells = vec![
                Line::from(Span::styled(
                    f.listener.clone(),
                    theme.fg(theme.topic_fg, false),
                )),
                Line::from(id),
            ];
            match &f.record {
                Ok(r) => {
                    let capped = r.attempts >= DEFAULT_MAX_ATTEMPTS;
                    cells.push(Line::from(Span::styled(
                        format!("{:>3}{}", r.attempts, if capped { "!" } else { " " }),
                        theme.fg(if capped { theme.danger_fg } else { theme.fg }, capped),
                    )));
                    cells.push(Line::from(format!("{:>4}", age(app.now, r.last_failed))));
                    cells.push(Line::from(pending));
                    if wide {
                        cells.push(Line::from(fit(&r.summary(), 60)));
                    }
                    cells.push(Line::from(Span::styled(
                        r.error.clone(),
                        theme.fg(theme.danger_fg, false),
                    )));
                }
                Err(e) => {
                    cells.extend([Line::from(""), Line::from(""), Line::from(pending)]);
                    if wide {
                        cells.push(Line::from(""));
                    }
                    cells.push(Line::from(Span::styled(
                        format!("unreadable record: {e}"),
                        theme.fg(theme.danger_fg, true),
                    )));
                }
            }
            Row::new(cells).style(row_style(i == selected, theme))
        });
    let mut header = vec!["listener", "message", "try", " age", ""];
    let mut widths = vec![
        Constraint::Length(16),
        Constraint::Length(if wide { 36 } else { 8 }),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Length(10),
    ];
    if wide {
        header.push("summary");
        widths.push(Constraint::Length(40));
    }
    header.push("error");
    widths.push(Constraint::Fill(1));
    let table = Table::new(table_rows, widths)
        .header(Row::new(header).style(theme.dim()))
        .block(block)
        .column_spacing(1);
    frame.render_widget(table, area);
    super::table_hits(View::Failed, area, 1, keys)
}
