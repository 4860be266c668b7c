//! View 3, the topic tree: every topic seen (retained ones marked), with
//! message and subtopic counts, last time and a preview; on the right the
//! selected topic's recent history and what changed since the previous
//! payload, and a sparkline of one numeric JSON field the operator picks
//! (`s`/`S` cycle through the fields found in the recent payloads).

use std::collections::BTreeMap;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Sparkline, Table};
use ratatui::Frame;
use serde_json::Value;
use signalbox_common::envelope::Payload;

use super::{age, bytes, clock, fit, pane, row_style, window};
use crate::app::fields::FieldSeries;
use crate::app::{App, ListHits, Msg, RowKey, TopicData, View};
use crate::theme::Theme;

/// Draws the topic tree in `area`; returns where its rows are.
pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) -> Option<ListHits> {
    let wide = area.width >= 100;
    let [tree_area, side] = if wide {
        Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)]).areas(area)
    } else {
        Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(area)
    };
    draw_side(frame, side, app, theme);
    draw_tree(frame, tree_area, app, theme)
}

fn draw_tree(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) -> Option<ListHits> {
    let rows = app.topics.visible_rows();
    let mut title = format!(" Topics · {} ", app.topics.count);
    if app.topics.untracked > 0 {
        title.push_str(&format!(
            "(limit reached: {} more messages on untracked topics) ",
            app.topics.untracked
        ));
    }
    let block = pane(title, theme);
    if rows.is_empty() {
        frame.render_widget(
            Paragraph::new(Span::styled("no topic seen yet", theme.dim())).block(block),
            area,
        );
        return None;
    }
    let height = usize::from(area.height.saturating_sub(3));
    let selected = app
        .topic_selected
        .as_ref()
        .and_then(|s| rows.iter().position(|r| &r.path == s));
    let offset = window(selected.unwrap_or(0), rows.len(), height);
    let name_w = (usize::from(area.width) / 2).clamp(16, 70);
    let keys = rows
        .iter()
        .skip(offset)
        .take(height)
        .map(|r| RowKey::Topic(r.path.clone()))
        .collect();
    let table_rows = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(i, r)| {
            let node = r.node;
            let twisty = if node.children.is_empty() {
                "  "
            } else if node.expanded {
                "▾ "
            } else {
                "▸ "
            };
            let name = format!("{}{twisty}{}", "  ".repeat(r.depth), r.name);
            let retained = node.data.as_ref().is_some_and(|d| d.retained);
            let mut name_spans = vec![Span::styled(
                fit(&name, name_w),
                theme.fg(theme.topic_fg, false),
            )];
            if retained {
                name_spans.push(Span::styled(" R", theme.fg(theme.retained_fg, true)));
            }
            let subtopics = if node.children.is_empty() {
                String::new()
            } else {
                format!("{}t", node.topics)
            };
            let (last, preview) = match &node.data {
                Some(d) => (age(app.now, d.last_at), d.summary.to_string()),
                None => (String::new(), String::new()),
            };
            Row::new(vec![
                Line::from(name_spans),
                Line::from(Span::styled(format!("{:>7}", node.messages), theme.dim())),
                Line::from(Span::styled(format!("{subtopics:>6}"), theme.dim())),
                Line::from(Span::styled(format!("{last:>4}"), theme.dim())),
                Line::from(preview),
            ])
            .style(row_style(selected == Some(i), theme))
        });
    let header =
        Row::new(["topic", "   msgs", "  subs", "last", "last payload"]).style(theme.dim());
    let table = Table::new(
        table_rows,
        [
            Constraint::Length(name_w as u16 + 2),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(4),
            Constraint::Fill(1),
        ],
    )
    .header(header)
    .block(block)
    .column_spacing(1);
    frame.render_widget(table, area);
    super::table_hits(View::Topics, area, 1, keys)
}

fn draw_side(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let Some(path) = &app.topic_selected else {
        let text = "↑↓ select a topic · → expand · ← collapse · ↵ detail · d delete retained";
        frame.render_widget(
            Paragraph::new(Span::styled(text, theme.dim())).block(pane(" Topic ", theme)),
            area,
        );
        return;
    };
    let node = app.topics.node(path);
    let mut lines = Vec::new();
    let data = node.and_then(|n| n.data.as_ref());
    match data {
        None => {
            let (messages, topics) = node.map(|n| (n.messages, n.topics)).unwrap_or_default();
            lines.push(Line::from(format!(
                "{messages} messages on {topics} topics below"
            )));
        }
        Some(data) => side_lines(app, data, theme, &mut lines),
    }
    let title = format!(
        " {} ",
        super::fit_left(path, usize::from(area.width.saturating_sub(4)))
    );
    let block = pane(title, theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let series = data.and_then(|_| app.topic_series());
    let text_area = match series {
        // A tall pane: the field's line, then a sparkline of three lines.
        Some(series) if inner.height >= 14 => {
            let [head, spark, rest] = Layout::vertical([
                Constraint::Length(1),
                Constraint::Length(3),
                Constraint::Min(0),
            ])
            .areas(inner);
            draw_field(frame, head, &series, theme);
            draw_sparkline(frame, spark, &series, theme);
            rest
        }
        // A small one (80×24): one line, the sparkline before the figures.
        Some(series) if inner.height >= 3 => {
            let [line, rest] =
                Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
            let width = (series.values.len() as u16).clamp(1, line.width / 4);
            let [spark, head] =
                Layout::horizontal([Constraint::Length(width + 1), Constraint::Min(0)]).areas(line);
            draw_sparkline(frame, spark, &series, theme);
            draw_field(frame, head, &series, theme);
            rest
        }
        _ => inner,
    };
    frame.render_widget(Paragraph::new(lines), text_area);
}

/// The picked numeric field: a line naming it with its last, lowest and
/// highest value.
fn draw_field(frame: &mut Frame, head: Rect, series: &FieldSeries, theme: &Theme) {
    let mut spans = vec![
        Span::styled(series.path.clone(), theme.fg(theme.accent_fg, true)),
        Span::raw(" "),
    ];
    if let (Some(last), Some((lo, hi))) = (series.values.last(), series.range()) {
        spans.push(Span::raw(number(*last)));
        spans.push(Span::styled(
            format!(
                " · min {} · max {} · {} pts",
                number(lo),
                number(hi),
                series.values.len()
            ),
            theme.dim(),
        ));
    }
    spans.push(Span::styled(
        format!(" · s field {}/{}", series.index + 1, series.count),
        theme.dim(),
    ));
    frame.render_widget(Paragraph::new(Line::from(spans)), head);
}

/// The picked field's sparkline: the newest values that fit in `area`
/// (one column is left blank on the right, as a gap to the text).
fn draw_sparkline(frame: &mut Frame, area: Rect, series: &FieldSeries, theme: &Theme) {
    let spark = Rect {
        width: area.width.saturating_sub(1),
        ..area
    };
    let scaled = series.scaled();
    let shown = &scaled[scaled.len().saturating_sub(usize::from(spark.width))..];
    frame.render_widget(
        Sparkline::default()
            .data(shown)
            .max(100)
            .style(theme.fg(theme.sparkline_fg, false)),
        spark,
    );
}

/// A number for people: integers without a fraction, others with at most
/// four decimals (no `0.30000000000000004`).
pub fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x.abs() >= 1e15 || (x != 0.0 && x.abs() < 1e-4) {
        format!("{x:.3e}")
    } else {
        let text = format!("{x:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn side_lines(app: &App, data: &TopicData, theme: &Theme, lines: &mut Vec<Line<'static>>) {
    lines.push(Line::from(vec![
        Span::raw(format!(
            "{} msgs · last {} ago · {}",
            data.count,
            age(app.now, data.last_at),
            bytes(data.size)
        )),
        if data.retained {
            Span::styled(" · retained", theme.fg(theme.retained_fg, true))
        } else {
            Span::raw("")
        },
    ]));
    let history = &data.history;
    lines.push(Line::from(Span::styled(
        format!(
            "history: {} kept (bounded by count, age and memory)",
            history.len()
        ),
        theme.dim(),
    )));
    if let (Some(last), Some(prev)) = (
        history.back(),
        history.len().checked_sub(2).and_then(|i| history.get(i)),
    ) {
        lines.push(Line::from(Span::styled(
            "changed since the previous payload:",
            theme.title(),
        )));
        let changes = diff(prev, last);
        if changes.is_empty() {
            lines.push(Line::from(Span::styled("  (identical)", theme.dim())));
        }
        for (sign, text) in changes.into_iter().take(8) {
            let colour = match sign {
                '+' => theme.ok_fg,
                '-' => theme.danger_fg,
                _ => theme.warn_fg,
            };
            lines.push(Line::from(Span::styled(
                format!("  {sign} {text}"),
                theme.fg(colour, false),
            )));
        }
    }
    lines.push(Line::from(Span::styled("recent:", theme.title())));
    for m in history.iter().rev().take(20) {
        lines.push(Line::from(vec![
            Span::styled(format!("{} ", clock(m.at, app.offset)), theme.dim()),
            Span::raw(m.summary.to_string()),
        ]));
    }
}

/// What changed from `old` to `new`: `+` added, `-` removed, `~` changed,
/// as (sign, text) lines. JSON is compared field by field (flattened
/// paths), text line by line, binary by size and first differing byte.
pub fn diff(old: &Msg, new: &Msg) -> Vec<(char, String)> {
    match (json_of(&old.payload), json_of(&new.payload)) {
        (Some(a), Some(b)) => {
            let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
            flatten("", &a, &mut fa);
            flatten("", &b, &mut fb);
            let mut out = Vec::new();
            for (k, v) in &fb {
                match fa.get(k) {
                    None => out.push(('+', format!("{k}: {v}"))),
                    Some(old) if old != v => out.push(('~', format!("{k}: {old} → {v}"))),
                    _ => {}
                }
            }
            for (k, v) in &fa {
                if !fb.contains_key(k) {
                    out.push(('-', format!("{k}: {v}")));
                }
            }
            out
        }
        _ => match (&old.payload, &new.payload) {
            (Payload::Binary(a), Payload::Binary(b)) => {
                let at = a
                    .iter()
                    .zip(b.iter())
                    .position(|(x, y)| x != y)
                    .or((a.len() != b.len()).then(|| a.len().min(b.len())));
                match at {
                    Some(at) => vec![(
                        '~',
                        format!(
                            "{} → {} bytes, first difference at byte {at}",
                            a.len(),
                            b.len()
                        ),
                    )],
                    None => Vec::new(),
                }
            }
            (Payload::Text(a), Payload::Text(b)) => {
                let old: Vec<&str> = a.lines().collect();
                let new: Vec<&str> = b.lines().collect();
                let mut out: Vec<(char, String)> = old
                    .iter()
                    .filter(|l| !new.contains(l))
                    .map(|l| ('-', fit(l, 200)))
                    .collect();
                out.extend(
                    new.iter()
                        .filter(|l| !old.contains(l))
                        .map(|l| ('+', fit(l, 200))),
                );
                out
            }
            _ => vec![(
                '~',
                format!("{} → {}", old.payload.kind(), new.payload.kind()),
            )],
        },
    }
}

fn json_of(payload: &Payload) -> Option<Value> {
    match payload {
        Payload::Envelope(e) => serde_json::to_value(&**e).ok(),
        Payload::Json(v) => Some(v.clone()),
        _ => None,
    }
}

/// Flattens JSON into `path = compact value` (bounded: large documents are
/// compared on their first 500 leaves).
fn flatten(path: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    if out.len() >= 500 {
        return;
    }
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{path}[{i}]"), v, out);
            }
        }
        leaf => {
            out.insert(
                if path.is_empty() {
                    "(value)".into()
                } else {
                    path.to_string()
                },
                fit(&leaf.to_string(), 80),
            );
        }
    }
}
