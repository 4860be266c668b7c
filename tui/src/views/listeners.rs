//! View 4, the listeners' health table: state (as judged now: stale and
//! down highlighted), host, last-seen age, counters and the last error.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};
use ratatui::Frame;
use signalbox_common::health::Liveness;

use super::{age, fit, pane, row_style, window};
use crate::app::{App, ListHits, RowKey, View};
use crate::theme::Theme;

/// Draws the health table in `area`; returns where its rows are.
pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) -> Option<ListHits> {
    let rows = app.listener_rows();
    let (up, stale, down, other) = app.listener_summary();
    let mut title =
        format!(" Listeners · {up} up · {stale} stale · {down} down · {other} degraded/unknown ");
    if app.listeners_dropped > 0 {
        title.push_str(&format!(
            "· {} reports of further listeners not tracked ",
            app.listeners_dropped
        ));
    }
    let block = pane(title, theme);
    if rows.is_empty() {
        let text = if app.problems_only {
            "no listener has a problem (f shows all)"
        } else {
            "no listener has reported yet (P pings them)"
        };
        frame.render_widget(
            Paragraph::new(Span::styled(text, theme.dim())).block(block),
            area,
        );
        return None;
    }
    let height = usize::from(area.height.saturating_sub(3));
    let selected = app.listener_selected.min(rows.len() - 1);
    let offset = window(selected, rows.len(), height);
    let wide = area.width >= 120;
    let keys = rows
        .iter()
        .skip(offset)
        .take(height)
        .map(|l| RowKey::Listener(l.name.clone()))
        .collect();
    // At 80 columns the host and the processed count give way to the error.
    let narrow = area.width < 100;
    let table_rows = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(i, l)| {
            let liveness = l.liveness(app.now);
            let (state, colour) = match (&l.report, liveness) {
                (Some(Err(_)), _) => ("invalid".to_string(), theme.danger_fg),
                (None, _) => ("no report".to_string(), theme.warn_fg),
                (_, Some(live)) => (
                    live.as_str().to_string(),
                    match live {
                        Liveness::Up | Liveness::Idle => theme.ok_fg,
                        Liveness::Stopped => theme.dim_fg,
                        Liveness::Degraded | Liveness::Stale => theme.warn_fg,
                        Liveness::Down => theme.danger_fg,
                    },
                ),
                _ => (String::new(), theme.fg),
            };
            let strong = liveness.is_none_or(Liveness::is_problem);
            let mut cells = vec![
                Line::from(Span::styled(
                    l.name.clone(),
                    theme.fg(theme.topic_fg, false),
                )),
                Line::from(Span::styled(state, theme.fg(colour, strong))),
            ];
            match &l.report {
                Some(Ok(r)) => {
                    let c = r.counters;
                    if !narrow {
                        cells.push(Line::from(r.host.clone()));
                    }
                    cells.push(Line::from(format!("{:>5}", age(app.now, r.last_seen))));
                    if narrow {
                        cells.push(Line::from(format!("{:>7} {:>5}", c.received, c.failed)));
                    } else {
                        cells.push(Line::from(format!(
                            "{:>7} {:>7} {:>5}",
                            c.received, c.processed, c.failed
                        )));
                    }
                    if wide {
                        cells.push(Line::from(format!("{:>5} {:>5}", c.replayed, c.duplicates)));
                    }
                    let error = r.last_error.clone().unwrap_or_default();
                    cells.push(Line::from(Span::styled(
                        error,
                        theme.fg(theme.danger_fg, false),
                    )));
                }
                Some(Err(e)) => {
                    cells.extend([Line::from(""), Line::from("")]);
                    if !narrow {
                        cells.push(Line::from(""));
                    }
                    if wide {
                        cells.push(Line::from(""));
                    }
                    cells.push(Line::from(Span::styled(
                        fit(e, 200),
                        theme.fg(theme.danger_fg, false),
                    )));
                }
                None => {
                    cells.extend([Line::from(""), Line::from("")]);
                    if !narrow {
                        cells.push(Line::from(""));
                    }
                    if wide {
                        cells.push(Line::from(""));
                    }
                    let text = if l.in_roster {
                        "listed in _roster; no health report seen"
                    } else {
                        ""
                    };
                    cells.push(Line::from(Span::styled(text, theme.dim())));
                }
            }
            Row::new(cells).style(row_style(i == selected, theme))
        });
    let (mut header, mut widths) = if narrow {
        (
            vec!["listener", "state", " seen", "   recv  fail"],
            vec![
                Constraint::Length(16),
                Constraint::Length(9),
                Constraint::Length(5),
                Constraint::Length(13),
            ],
        )
    } else {
        (
            vec![
                "listener",
                "state",
                "host",
                " seen",
                "   recv    proc  fail",
            ],
            vec![
                Constraint::Length(18),
                Constraint::Length(9),
                Constraint::Length(12),
                Constraint::Length(5),
                Constraint::Length(21),
            ],
        )
    };
    if wide {
        header.push("repl   dup");
        widths.push(Constraint::Length(11));
    }
    header.push("last error");
    widths.push(Constraint::Fill(1));
    let table = Table::new(table_rows, widths)
        .header(Row::new(header).style(theme.dim()))
        .block(block)
        .column_spacing(1);
    frame.render_widget(table, area);
    super::table_hits(View::Listeners, area, 1, keys)
}
