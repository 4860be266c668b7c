//! The mouse: the wheel scrolls, a click on a tab switches the view, a click
//! on a row of a list selects it, and a click on the selected row opens it
//! (like Enter).
//!
//! Where things are on screen is known from the last frame: drawing records
//! the rows each list showed ([`Hits`]), the console loop hands them to
//! [`App::remember_hits`], and a click is resolved against them. Rows are
//! recorded by what they show (a message's arrival number, a topic's path,
//! a listener's name, a record's key), not by index, so a click still hits
//! the row that was under the pointer even if messages arrived since.

use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use super::{apply, open, App, Overlay, View};
use crate::keys::Action;

/// Rows scrolled per wheel notch.
const WHEEL_ROWS: usize = 3;

/// What a row of a list shows, to find it again in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowKey {
    /// A stream message, by arrival number.
    Stream(u64),
    /// A line between rows that selects nothing (the stream's separator
    /// between history and live messages).
    Separator,
    /// A node of the topic tree, by its full path.
    Topic(String),
    /// A listener, by name.
    Listener(String),
    /// A failure record, by (listener, message id).
    Failed(String, String),
}

/// The rows a list showed in the last frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListHits {
    /// The view that drew them (a click after a view switch that was not
    /// drawn yet hits nothing).
    pub view: View,
    /// The screen area of the rows (one terminal line each, top to bottom).
    pub area: Rect,
    /// What each row shows, top to bottom.
    pub rows: Vec<RowKey>,
}

/// What the last frame put where, for mouse hit-testing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hits {
    /// The list of the view in focus, when one was drawn.
    pub list: Option<ListHits>,
}

impl App {
    /// Records where the last frame drew what (called by the console loop
    /// after each draw; it changes nothing that is shown, so the model
    /// stays clean).
    pub fn remember_hits(&mut self, hits: Hits) {
        self.hits = hits;
    }
}

/// A mouse event.
pub(super) fn on_mouse(app: &mut App, mouse: MouseEvent) {
    match mouse.kind {
        MouseEventKind::ScrollUp | MouseEventKind::ScrollDown => {
            if app.overlay.is_some() {
                return;
            }
            let action = if mouse.kind == MouseEventKind::ScrollUp {
                Action::Up
            } else {
                Action::Down
            };
            for _ in 0..WHEEL_ROWS {
                apply(app, action);
            }
            app.dirty = true;
        }
        MouseEventKind::Down(MouseButton::Left) => {
            click(app, mouse.column, mouse.row);
        }
        _ => {}
    }
}

fn click(app: &mut App, column: u16, row: u16) {
    match app.overlay {
        // A click anywhere closes the help, as any key does.
        Some(Overlay::Help) => {
            app.overlay = None;
            app.dirty = true;
            return;
        }
        // Confirmations and input lines want the keyboard.
        Some(_) => return,
        None => {}
    }
    if row == 0 {
        // The header: a tab (also leaves the detail).
        if let Some(view) = crate::views::tab_at(column) {
            app.view = view;
            app.detail = None;
            app.dirty = true;
        }
        return;
    }
    if app.detail.is_some() {
        return;
    }
    let Some(list) = &app.hits.list else {
        return;
    };
    if list.view != app.view || !list.area.contains(Position::new(column, row)) {
        return;
    }
    let Some(key) = list.rows.get(usize::from(row - list.area.y)).cloned() else {
        return;
    };
    if select(app, key) {
        // A click on the selected row opens it, like Enter.
        open(app);
    }
    app.dirty = true;
}

/// Selects the row showing `key`; true when it was selected already.
fn select(app: &mut App, key: RowKey) -> bool {
    match key {
        RowKey::Separator => false,
        RowKey::Stream(seq) => {
            let again = app.stream_state.selected == Some(seq);
            app.stream_state.selected = Some(seq);
            again
        }
        RowKey::Topic(path) => {
            let again = app.topic_selected.as_ref() == Some(&path);
            app.topic_selected = Some(path);
            again
        }
        RowKey::Listener(name) => {
            let Some(index) = app.listener_rows().iter().position(|l| l.name == name) else {
                return false;
            };
            let again = app.listener_selected == index;
            app.listener_selected = index;
            again
        }
        RowKey::Failed(listener, id) => {
            let Some(index) = app
                .failed_rows()
                .iter()
                .position(|f| f.listener == listener && f.id == id)
            else {
                return false;
            };
            let again = app.failed_selected == index;
            app.failed_selected = index;
            again
        }
    }
}
