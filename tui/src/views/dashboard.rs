//! View 1, the dashboard: the connection (reconnecting and the last error
//! shown, not hidden), messages per second overall and per system with
//! 60-second sparklines, the listeners (up / stale / down), the failed
//! count per listener, and the newest events coloured by severity.

use std::collections::BTreeMap;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Sparkline, Table};
use ratatui::Frame;
use signalbox_common::envelope::Severity;
use signalbox_common::mqtt::ConnState;

use super::{age, clock, fit, fit_left, pane};
use crate::app::{App, Msg, DASHBOARD_EVENTS};
use crate::theme::Theme;

/// Draws the dashboard in `area`.
pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    // Rates get what the newest events can spare: at 24 rows, four systems.
    let room = (area.height.saturating_sub(7) / 2).saturating_sub(3).max(1);
    let systems = (app.system_rates.len() as u16).clamp(1, room);
    let [top, rates, events] = Layout::vertical([
        Constraint::Length(7),
        Constraint::Length(3 + systems),
        Constraint::Min(3),
    ])
    .areas(area);
    let [conn, health] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
    draw_connection(frame, conn, app, theme);
    draw_health(frame, health, app, theme);
    draw_rates(frame, rates, app, theme);
    draw_events(frame, events, app, theme);
}

fn draw_connection(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let (state, colour) = match &app.conn.state {
        ConnState::Connecting => ("connecting".to_string(), theme.warn_fg),
        ConnState::Connected { .. } => ("connected".to_string(), theme.ok_fg),
        ConnState::Reconnecting { attempt, .. } => {
            (format!("reconnecting (attempt {attempt})"), theme.danger_fg)
        }
        ConnState::Closed => ("closed".to_string(), theme.danger_fg),
    };
    let mut lines = vec![
        Line::from(vec![
            Span::styled("broker  ", theme.dim()),
            Span::raw(app.conn.broker.clone()),
        ]),
        Line::from(vec![
            Span::styled("bus     ", theme.dim()),
            Span::raw(format!("{}/{}", app.prefix, app.env)),
            Span::styled(
                format!(" · console up {}", age(app.now, app.started)),
                theme.dim(),
            ),
        ]),
        Line::from(vec![
            Span::styled("state   ", theme.dim()),
            Span::styled(state, theme.fg(colour, true)),
            Span::styled(
                format!(" for {}", age(app.now, app.conn.since)),
                theme.dim(),
            ),
        ]),
    ];
    match &app.conn.last_error {
        Some((error, at)) => lines.push(Line::from(vec![
            Span::styled("error   ", theme.dim()),
            Span::styled(format!("{} ago: ", age(app.now, *at)), theme.dim()),
            Span::styled(error.clone(), theme.fg(theme.danger_fg, false)),
        ])),
        None => lines.push(Line::from(Span::styled("error   none", theme.dim()))),
    }
    let topics = if app.topics.untracked > 0 {
        format!(
            "{} topics (+{} msgs on untracked topics)",
            app.topics.count, app.topics.untracked
        )
    } else {
        format!("{} topics", app.topics.count)
    };
    lines.push(Line::from(vec![
        Span::styled("seen    ", theme.dim()),
        Span::raw(format!("{} messages, {topics}", app.seq)),
    ]));
    let title = match app.conn.state {
        ConnState::Connected { .. } => " Connection ",
        _ => " Connection (not connected) ",
    };
    frame.render_widget(Paragraph::new(lines).block(pane(title, theme)), area);
}

fn draw_health(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let (up, stale, down, other) = app.listener_summary();
    let mut lines = vec![Line::from(vec![
        Span::styled(format!("{up} up"), theme.fg(theme.ok_fg, false)),
        Span::raw("  "),
        Span::styled(
            format!("{stale} stale"),
            theme.fg(
                if stale > 0 {
                    theme.warn_fg
                } else {
                    theme.dim_fg
                },
                stale > 0,
            ),
        ),
        Span::raw("  "),
        Span::styled(
            format!("{down} down"),
            theme.fg(
                if down > 0 {
                    theme.danger_fg
                } else {
                    theme.dim_fg
                },
                down > 0,
            ),
        ),
        Span::raw("  "),
        Span::styled(
            format!("{other} degraded/unknown"),
            theme.fg(
                if other > 0 {
                    theme.warn_fg
                } else {
                    theme.dim_fg
                },
                other > 0,
            ),
        ),
    ])];
    let mut per_listener: BTreeMap<&str, usize> = BTreeMap::new();
    for f in app.failed.values() {
        *per_listener.entry(f.listener.as_str()).or_default() += 1;
    }
    if per_listener.is_empty() {
        lines.push(Line::from(Span::styled("no failed messages", theme.dim())));
    } else {
        let total: usize = per_listener.values().sum();
        lines.push(Line::from(Span::styled(
            format!("{total} failed:"),
            theme.fg(theme.danger_fg, true),
        )));
        let mut parts = Vec::new();
        for (listener, n) in per_listener {
            parts.push(Span::raw(format!("{listener} {n}  ")));
        }
        lines.push(Line::from(parts));
    }
    frame.render_widget(
        Paragraph::new(lines).block(pane(" Listeners · Failed ", theme)),
        area,
    );
}

fn draw_rates(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let block = pane(
        format!(" Messages/s · {} now ", app.rate.per_second()),
        theme,
    );
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let name_w = 14u16;
    let num_w = 16u16;
    let spark_w = inner.width.saturating_sub(name_w + num_w + 2);
    let mut systems: Vec<(&String, &crate::app::Rate)> = app.system_rates.iter().collect();
    systems.sort_by(|a, b| b.1.total.cmp(&a.1.total).then(a.0.cmp(b.0)));
    let mut rows: Vec<(String, &crate::app::Rate)> = vec![("all".into(), &app.rate)];
    rows.extend(
        systems
            .into_iter()
            .map(|(n, r)| (n.clone(), r))
            .take(usize::from(inner.height.saturating_sub(1))),
    );
    for (i, (name, rate)) in rows.iter().enumerate() {
        let y = inner.y + i as u16;
        if y >= inner.y + inner.height {
            break;
        }
        let label = Rect {
            x: inner.x,
            y,
            width: name_w.min(inner.width),
            height: 1,
        };
        let style = if i == 0 { super::bold() } else { theme.text() };
        frame.render_widget(
            Paragraph::new(Span::styled(fit(name, name_w as usize - 1), style)),
            label,
        );
        let numbers = format!("{:>6}/s {:>7}", rate.per_second(), short(rate.total));
        let num = Rect {
            x: inner.x + name_w,
            y,
            width: num_w.min(inner.width.saturating_sub(name_w)),
            height: 1,
        };
        frame.render_widget(Paragraph::new(Span::styled(numbers, theme.dim())), num);
        if spark_w > 4 {
            let series = rate.series();
            let start = series.len().saturating_sub(usize::from(spark_w));
            // Right-aligned: the current second is always at the right edge.
            let shown = (series.len() - start) as u16;
            let spark = Rect {
                x: inner.x + name_w + num_w + 1 + (spark_w - shown),
                y,
                width: shown,
                height: 1,
            };
            frame.render_widget(
                Sparkline::default()
                    .data(series[start..].iter().copied())
                    .style(theme.fg(theme.sparkline_fg, false)),
                spark,
            );
        }
    }
}

/// `1234567` as `1.2M`.
fn short(n: u64) -> String {
    match n {
        n if n < 10_000 => n.to_string(),
        n if n < 1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        n => format!("{:.1}M", n as f64 / 1e6),
    }
}

fn draw_events(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let height = usize::from(area.height.saturating_sub(2));
    let newest: Vec<&std::sync::Arc<Msg>> = app
        .stream
        .iter()
        .rev()
        .filter(|m| !m.reserved && (!app.problems_only || m.is_problem()))
        .take(height.min(DASHBOARD_EVENTS))
        .collect();
    let topic_w = (area.width as usize / 3).clamp(12, 60);
    let rows = newest.iter().rev().map(|m| {
        let colour = severity_colour(m.severity, theme);
        Row::new(vec![
            Line::from(Span::styled(clock(m.at, app.offset), theme.dim())),
            Line::from(Span::styled(
                fit_left(&m.topic, topic_w),
                theme.fg(theme.topic_fg, false),
            )),
            Line::from(Span::styled(
                m.summary.to_string(),
                theme.fg(colour, m.severity >= Some(Severity::Warning)),
            )),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(topic_w as u16),
            Constraint::Fill(1),
        ],
    )
    .block(pane(" Newest events ", theme))
    .column_spacing(1);
    frame.render_widget(table, area);
}

/// The colour of a severity (non-envelopes are ordinary text).
pub fn severity_colour(severity: Option<Severity>, theme: &Theme) -> ratatui::style::Color {
    match severity {
        Some(Severity::Error) => theme.danger_fg,
        Some(Severity::Warning) => theme.warn_fg,
        Some(Severity::Debug) => theme.debug_fg,
        _ => theme.fg,
    }
}
