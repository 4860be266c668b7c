//! The detail of one message: pretty, coloured JSON for envelopes and JSON;
//! text as text; binary as a hex dump. Only the visible lines are styled
//! (and long lines are cut before styling), so a large payload opens and
//! scrolls without a stall; a payload cut on arrival says so, with its size.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use signalbox_common::envelope::{format_time, Payload};

use super::{bytes, pane};
use crate::app::{App, Detail};
use crate::event::PAYLOAD_CAP;
use crate::theme::Theme;

/// Draws the detail in `area`.
pub fn draw(frame: &mut Frame, area: Rect, app: &App, detail: &Detail, theme: &Theme) {
    let msg = &detail.msg;
    // A cut payload gets a line of its own saying so (with the full size),
    // so that no width hides it.
    let info_height = if msg.cut { 4 } else { 3 };
    let [info, body] =
        Layout::vertical([Constraint::Length(info_height), Constraint::Min(1)]).areas(area);
    let mut facts = vec![
        Span::styled(
            format_time(&msg.at.with_timezone(&chrono::Utc)),
            theme.dim(),
        ),
        Span::raw(format!(" · {} · {}", bytes(msg.size), msg.payload.kind())),
    ];
    if msg.retain {
        facts.push(Span::styled(
            " · retained",
            theme.fg(theme.retained_fg, true),
        ));
    }
    if msg.is_from_history() {
        facts.push(Span::styled(
            " · from the history database",
            theme.fg(theme.accent_fg, false),
        ));
    }
    if let Some(verdict) = &msg.signature {
        let colour = if verdict.is_valid() {
            theme.accent_fg
        } else {
            theme.warn_fg
        };
        facts.push(Span::styled(
            format!(" · {}", verdict.describe()),
            theme.fg(colour, !verdict.is_valid()),
        ));
    }
    let mut info_lines = vec![Line::from(facts)];
    if msg.cut {
        info_lines.insert(
            0,
            Line::from(Span::styled(
                format!(
                    "CUT: showing the first {} of {} bytes",
                    PAYLOAD_CAP, msg.size
                ),
                theme.fg(theme.warn_fg, true),
            )),
        );
    }
    frame.render_widget(
        Paragraph::new(info_lines).block(pane(format!(" {} ", msg.topic), theme)),
        info,
    );
    let total = detail.line_count();
    let height = usize::from(body.height.saturating_sub(2));
    let width = usize::from(body.width.saturating_sub(2));
    let first = detail.scroll.min(total.saturating_sub(1));
    let last = (first + height).min(total);
    let lines: Vec<Line> = match &msg.payload {
        Payload::Binary(b) => (first..last).map(|i| hex_line(b, i, theme)).collect(),
        _ if detail.json => detail.lines[first..last]
            .iter()
            .map(|l| json_line(cut(l, width), theme))
            .collect(),
        _ => detail.lines[first..last]
            .iter()
            .map(|l| Line::from(cut(l, width).to_string()))
            .collect(),
    };
    let title = format!(
        " {} lines {}-{} of {} · ↑↓ pgup pgdn scroll · e export · esc close ",
        kind_title(&msg.payload),
        first + 1,
        last,
        total
    );
    frame.render_widget(Paragraph::new(lines).block(pane(title, theme)), body);
    let _ = app;
}

fn kind_title(payload: &Payload) -> &'static str {
    match payload {
        Payload::Envelope(_) => "envelope",
        Payload::Json(_) => "JSON",
        Payload::Text(_) => "text",
        Payload::Binary(_) => "hex",
    }
}

/// `line` cut to about `width` characters (a line of a 256 KiB string is
/// not styled whole to show 200 columns of it).
fn cut(line: &str, width: usize) -> &str {
    match line.char_indices().nth(width.max(1)) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// Line `i` of the hex dump: offset, 16 bytes in hex, and ASCII.
pub fn hex_line(bytes: &[u8], i: usize, theme: &Theme) -> Line<'static> {
    let start = i * 16;
    let chunk = &bytes[start.min(bytes.len())..(start + 16).min(bytes.len())];
    let mut hex = String::with_capacity(50);
    for (j, b) in chunk.iter().enumerate() {
        if j == 8 {
            hex.push(' ');
        }
        hex.push_str(&format!("{b:02x} "));
    }
    let ascii: String = chunk
        .iter()
        .map(|b| {
            if b.is_ascii_graphic() || *b == b' ' {
                *b as char
            } else {
                '.'
            }
        })
        .collect();
    Line::from(vec![
        Span::styled(format!("{start:08x}  "), theme.dim()),
        Span::raw(format!("{hex:<49} ")),
        Span::styled(format!("|{ascii}|"), theme.fg(theme.json_string_fg, false)),
    ])
}

/// Colours one line of pretty-printed JSON: keys, strings, numbers,
/// literals and punctuation.
pub fn json_line(line: &str, theme: &Theme) -> Line<'static> {
    let mut spans = Vec::new();
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(chars.len());
            let text: String = chars[start..i].iter().collect();
            let is_key = chars[i..].iter().find(|c| !c.is_whitespace()) == Some(&':');
            let colour = if is_key {
                theme.json_key_fg
            } else {
                theme.json_string_fg
            };
            spans.push(Span::styled(text, theme.fg(colour, false)));
        } else if c == '-' || c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || "+-.eE".contains(chars[i])) {
                i += 1;
            }
            spans.push(Span::styled(
                chars[start..i].iter().collect::<String>(),
                theme.fg(theme.json_number_fg, false),
            ));
        } else if c.is_ascii_alphabetic() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            spans.push(Span::styled(
                chars[start..i].iter().collect::<String>(),
                theme.fg(theme.json_literal_fg, false),
            ));
        } else {
            let start = i;
            while i < chars.len()
                && !(chars[i] == '"' || chars[i] == '-' || chars[i].is_ascii_alphanumeric())
            {
                i += 1;
            }
            spans.push(Span::styled(
                chars[start..i].iter().collect::<String>(),
                theme.fg(theme.json_punct_fg, false),
            ));
        }
    }
    Line::from(spans)
}
