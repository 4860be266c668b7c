//! Key bindings as data: which key does what in which part of the console,
//! the footer hints generated from them (so the hints never lie), and the
//! `[keys]` table of the config file that remaps them.
//!
//! A binding belongs to a [`Scope`]: the global one (view switching, help,
//! quit…) or one view's. A key is looked up in the focused view's scope
//! first, then in the global one. Text input (the `/` filter, the `:`
//! command line) and confirmations are not remappable: they read keys
//! literally.

use std::collections::BTreeMap;
use std::fmt;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everywhere (unless a view binds the same key).
    Global,
    /// The dashboard.
    Dashboard,
    /// The message stream.
    Stream,
    /// The topic tree.
    Topics,
    /// The listeners' health table.
    Listeners,
    /// The failure records.
    Failed,
    /// The detail of one message.
    Detail,
}

/// Something the operator can ask for with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Leave the console.
    Quit,
    /// Next view (Tab).
    NextView,
    /// Previous view (Shift-Tab).
    PrevView,
    /// Go to view 1…5.
    View(u8),
    /// Show every key.
    Help,
    /// Open the `:` command line.
    Command,
    /// Edit the stream filter.
    Filter,
    /// Pause or resume the stream.
    Pause,
    /// Show only what is wrong (down/stale listeners, failures, errors).
    Problems,
    /// Selection up.
    Up,
    /// Selection down.
    Down,
    /// A page up.
    PageUp,
    /// A page down.
    PageDown,
    /// First row.
    Top,
    /// Last row (and, in the stream, follow new messages).
    Bottom,
    /// Open the selection (detail, expand).
    Open,
    /// Close the detail or overlay, collapse.
    Back,
    /// Expand a topic.
    Expand,
    /// Collapse a topic (or go to its parent).
    Collapse,
    /// Acknowledge the selected failure record.
    Ack,
    /// Replay the selected failure record.
    Replay,
    /// Replay every record of the selected listener.
    ReplayAll,
    /// Ask every listener to report (`_ping`).
    Ping,
    /// Delete the selected retained topic or subtree.
    Delete,
    /// Write the payload (or the topic's history) to a file.
    Export,
    /// Plot the next numeric field of the selected topic.
    NextField,
    /// Plot the previous numeric field of the selected topic.
    PrevField,
    /// Read older messages from the history database into the stream
    /// (scrolling up past the oldest row does it too).
    History,
}

impl Action {
    /// The name used in the config file's `[keys]` table.
    pub fn name(self) -> String {
        match self {
            Action::Quit => "quit".into(),
            Action::NextView => "next_view".into(),
            Action::PrevView => "prev_view".into(),
            Action::View(n) => format!("view_{n}"),
            Action::Help => "help".into(),
            Action::Command => "command".into(),
            Action::Filter => "filter".into(),
            Action::Pause => "pause".into(),
            Action::Problems => "problems".into(),
            Action::Up => "up".into(),
            Action::Down => "down".into(),
            Action::PageUp => "page_up".into(),
            Action::PageDown => "page_down".into(),
            Action::Top => "top".into(),
            Action::Bottom => "bottom".into(),
            Action::Open => "open".into(),
            Action::Back => "back".into(),
            Action::Expand => "expand".into(),
            Action::Collapse => "collapse".into(),
            Action::Ack => "ack".into(),
            Action::Replay => "replay".into(),
            Action::ReplayAll => "replay_all".into(),
            Action::Ping => "ping".into(),
            Action::Delete => "delete".into(),
            Action::Export => "export".into(),
            Action::NextField => "next_field".into(),
            Action::PrevField => "prev_field".into(),
            Action::History => "history".into(),
        }
    }
}

/// One key, as written in the config file: `q`, `Q`, `?`, `ctrl-c`,
/// `enter`, `esc`, `tab`, `backtab`, `up`, `pgdn`, `f1`…
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeySpec {
    /// The key.
    pub code: KeyCode,
    /// Only Ctrl and Alt count; Shift is in the character itself.
    pub modifiers: KeyModifiers,
}

impl KeySpec {
    /// Parses a key name; `None` when it is not one.
    pub fn parse(text: &str) -> Option<KeySpec> {
        let mut modifiers = KeyModifiers::NONE;
        let mut rest = text;
        loop {
            let lower = rest.to_ascii_lowercase();
            if let Some(r) = lower
                .strip_prefix("ctrl-")
                .or_else(|| lower.strip_prefix("c-"))
            {
                modifiers |= KeyModifiers::CONTROL;
                rest = &rest[rest.len() - r.len()..];
            } else if let Some(r) = lower
                .strip_prefix("alt-")
                .or_else(|| lower.strip_prefix("m-"))
            {
                modifiers |= KeyModifiers::ALT;
                rest = &rest[rest.len() - r.len()..];
            } else {
                break;
            }
        }
        let mut chars = rest.chars();
        let code = match (chars.next(), chars.next()) {
            (Some(c), None) => KeyCode::Char(if modifiers.is_empty() {
                c
            } else {
                c.to_ascii_lowercase()
            }),
            _ => match rest.to_ascii_lowercase().as_str() {
                "enter" | "return" => KeyCode::Enter,
                "esc" | "escape" => KeyCode::Esc,
                "tab" => KeyCode::Tab,
                "backtab" | "shift-tab" => KeyCode::BackTab,
                "space" => KeyCode::Char(' '),
                "up" => KeyCode::Up,
                "down" => KeyCode::Down,
                "left" => KeyCode::Left,
                "right" => KeyCode::Right,
                "pgup" | "pageup" => KeyCode::PageUp,
                "pgdn" | "pagedown" => KeyCode::PageDown,
                "home" => KeyCode::Home,
                "end" => KeyCode::End,
                "backspace" => KeyCode::Backspace,
                "delete" | "del" => KeyCode::Delete,
                f if f.starts_with('f') => {
                    KeyCode::F(f[1..].parse().ok().filter(|n| (1..=12).contains(n))?)
                }
                _ => return None,
            },
        };
        Some(KeySpec { code, modifiers })
    }

    /// The spec a key event matches.
    pub fn of(key: &KeyEvent) -> KeySpec {
        let modifiers = key.modifiers & (KeyModifiers::CONTROL | KeyModifiers::ALT);
        let code = match key.code {
            KeyCode::Char(c) if !modifiers.is_empty() => KeyCode::Char(c.to_ascii_lowercase()),
            other => other,
        };
        KeySpec { code, modifiers }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.modifiers.contains(KeyModifiers::CONTROL) {
            f.write_str("^")?;
        }
        if self.modifiers.contains(KeyModifiers::ALT) {
            f.write_str("M-")?;
        }
        match self.code {
            KeyCode::Char(' ') => f.write_str("space"),
            KeyCode::Char(c) => write!(f, "{c}"),
            KeyCode::Enter => f.write_str("↵"),
            KeyCode::Esc => f.write_str("esc"),
            KeyCode::Tab => f.write_str("tab"),
            KeyCode::BackTab => f.write_str("S-tab"),
            KeyCode::Up => f.write_str("↑"),
            KeyCode::Down => f.write_str("↓"),
            KeyCode::Left => f.write_str("←"),
            KeyCode::Right => f.write_str("→"),
            KeyCode::PageUp => f.write_str("pgup"),
            KeyCode::PageDown => f.write_str("pgdn"),
            KeyCode::Home => f.write_str("home"),
            KeyCode::End => f.write_str("end"),
            KeyCode::F(n) => write!(f, "F{n}"),
            _ => f.write_str("?"),
        }
    }
}

/// One binding: keys, the action, where, and the hint shown in the footer
/// (none for keys too obvious to spend footer space on).
#[derive(Debug, Clone)]
pub struct Binding {
    /// Where it applies.
    pub scope: Scope,
    /// What it does.
    pub action: Action,
    /// The keys; the first is the one shown in hints.
    pub keys: Vec<KeySpec>,
    /// The footer hint, e.g. "ack".
    pub hint: Option<&'static str>,
    /// The line in the help overlay.
    pub help: &'static str,
}

/// Why a `[keys]` table could not be used; names the bad key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfigError(pub String);

impl fmt::Display for KeyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyConfigError {}

/// Every binding of the console.
#[derive(Debug, Clone)]
pub struct KeyMap {
    /// The bindings, in the order the help overlay lists them.
    pub bindings: Vec<Binding>,
}

/// A default binding: (scope, action, keys, footer hint, help line).
type DefaultBinding = (
    Scope,
    Action,
    &'static [&'static str],
    Option<&'static str>,
    &'static str,
);

/// The default bindings.
const DEFAULTS: &[DefaultBinding] = &[
    (Scope::Global, Action::View(1), &["1"], None, "dashboard"),
    (Scope::Global, Action::View(2), &["2"], None, "stream"),
    (Scope::Global, Action::View(3), &["3"], None, "topic tree"),
    (Scope::Global, Action::View(4), &["4"], None, "listeners"),
    (Scope::Global, Action::View(5), &["5"], None, "failed"),
    (Scope::Global, Action::NextView, &["tab"], None, "next view"),
    (
        Scope::Global,
        Action::PrevView,
        &["backtab"],
        None,
        "previous view",
    ),
    (Scope::Global, Action::Up, &["up", "k"], None, "up"),
    (Scope::Global, Action::Down, &["down", "j"], None, "down"),
    (
        Scope::Global,
        Action::PageUp,
        &["pgup", "ctrl-b"],
        None,
        "page up",
    ),
    (
        Scope::Global,
        Action::PageDown,
        &["pgdn", "ctrl-f"],
        None,
        "page down",
    ),
    (Scope::Global, Action::Top, &["home", "g"], None, "first"),
    (Scope::Global, Action::Bottom, &["end", "G"], None, "last"),
    (
        Scope::Global,
        Action::Problems,
        &["f"],
        Some("problems"),
        "only problems (toggle)",
    ),
    (
        Scope::Global,
        Action::Filter,
        &["/"],
        None,
        "filter the stream",
    ),
    (
        Scope::Global,
        Action::Ping,
        &["P"],
        None,
        "ping the listeners",
    ),
    (Scope::Global, Action::Command, &[":"], None, "command line"),
    (
        Scope::Global,
        Action::Help,
        &["?", "f1"],
        Some("help"),
        "this help",
    ),
    (Scope::Global, Action::Back, &["esc"], None, "close, back"),
    (
        Scope::Global,
        Action::Quit,
        &["q", "ctrl-c"],
        Some("quit"),
        "quit",
    ),
    (
        Scope::Dashboard,
        Action::Open,
        &["enter"],
        None,
        "newest event",
    ),
    (
        Scope::Stream,
        Action::Filter,
        &["/"],
        Some("filter"),
        "filter: topic/+/#, text, sev:warning, kind:binary",
    ),
    (
        Scope::Stream,
        Action::Pause,
        &["p", "space"],
        Some("pause"),
        "pause / resume",
    ),
    (
        Scope::Stream,
        Action::Open,
        &["enter"],
        Some("detail"),
        "detail",
    ),
    (
        Scope::Stream,
        Action::Export,
        &["e"],
        None,
        "export payload",
    ),
    (
        Scope::Stream,
        Action::History,
        &["H"],
        Some("older"),
        "older messages from the history db (also ↑ on the oldest row)",
    ),
    (
        Scope::Topics,
        Action::Open,
        &["enter"],
        Some("detail"),
        "last payload",
    ),
    (
        Scope::Topics,
        Action::Expand,
        &["right", "l"],
        Some("expand"),
        "expand",
    ),
    (
        Scope::Topics,
        Action::Collapse,
        &["left", "h"],
        Some("collapse"),
        "collapse / parent",
    ),
    (
        Scope::Topics,
        Action::Delete,
        &["d"],
        Some("delete retained"),
        "delete retained (subtree)",
    ),
    (
        Scope::Topics,
        Action::Export,
        &["e"],
        None,
        "export history",
    ),
    (
        Scope::Topics,
        Action::NextField,
        &["s"],
        None,
        "sparkline: next numeric field",
    ),
    (
        Scope::Topics,
        Action::PrevField,
        &["S"],
        None,
        "sparkline: previous numeric field",
    ),
    (
        Scope::Listeners,
        Action::Open,
        &["enter"],
        Some("report"),
        "whole report",
    ),
    (
        Scope::Listeners,
        Action::Ping,
        &["P"],
        Some("ping"),
        "ping the listeners",
    ),
    (
        Scope::Failed,
        Action::Ack,
        &["a"],
        Some("ack"),
        "acknowledge",
    ),
    (
        Scope::Failed,
        Action::Replay,
        &["r"],
        Some("replay"),
        "replay",
    ),
    (
        Scope::Failed,
        Action::ReplayAll,
        &["R"],
        Some("replay all"),
        "replay all of the listener",
    ),
    (
        Scope::Failed,
        Action::Open,
        &["enter"],
        Some("detail"),
        "record",
    ),
    (
        Scope::Detail,
        Action::Back,
        &["esc", "q"],
        Some("close"),
        "close",
    ),
    (
        Scope::Detail,
        Action::Export,
        &["e"],
        Some("export"),
        "export to a file",
    ),
];

impl Default for KeyMap {
    fn default() -> Self {
        let bindings = DEFAULTS
            .iter()
            .map(|(scope, action, keys, hint, help)| Binding {
                scope: *scope,
                action: *action,
                // The defaults are all valid names (tested).
                keys: keys.iter().filter_map(|k| KeySpec::parse(k)).collect(),
                hint: *hint,
                help,
            })
            .collect();
        KeyMap { bindings }
    }
}

impl KeyMap {
    /// The action of `key` in `scope` (falling back to the global scope).
    pub fn action(&self, scope: Scope, key: &KeyEvent) -> Option<Action> {
        let spec = KeySpec::of(key);
        let find = |s: Scope| {
            self.bindings
                .iter()
                .find(|b| b.scope == s && b.keys.contains(&spec))
                .map(|b| b.action)
        };
        find(scope).or_else(|| {
            (scope != Scope::Global)
                .then(|| find(Scope::Global))
                .flatten()
        })
    }

    /// The footer hints for `scope`: the view's own first, then the global
    /// ones, as (key, hint) pairs.
    pub fn hints(&self, scope: Scope) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        for s in [scope, Scope::Global] {
            for b in self.bindings.iter().filter(|b| b.scope == s) {
                if let (Some(hint), Some(key)) = (b.hint, b.keys.first()) {
                    if !out.iter().any(|(_, h)| *h == hint) {
                        out.push((key.to_string(), hint));
                    }
                }
            }
            if scope == Scope::Detail {
                break;
            }
        }
        out
    }

    /// Applies a `[keys]` table: `action = "key"` or `action = ["k1",
    /// "k2"]`, replacing that action's keys in every scope it has.
    pub fn with_overrides(mut self, table: &toml::Table) -> Result<KeyMap, KeyConfigError> {
        let names: BTreeMap<String, Action> = self
            .bindings
            .iter()
            .map(|b| (b.action.name(), b.action))
            .collect();
        for (name, value) in table {
            // Quoted TOML keys may hold control characters: escaped, so
            // that the error stays one line.
            let shown = name.escape_debug();
            let action = *names.get(name).ok_or_else(|| {
                KeyConfigError(format!(
                    "[keys]: unknown action `{shown}` (known: {})",
                    names.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
            let texts: Vec<&str> = match value {
                toml::Value::String(s) => vec![s.as_str()],
                toml::Value::Array(items) => items.iter().filter_map(toml::Value::as_str).collect(),
                _ => Vec::new(),
            };
            if texts.is_empty() {
                return Err(KeyConfigError(format!(
                    "[keys]: `{shown}` must be a key name or a list of key names"
                )));
            }
            let mut keys = Vec::new();
            for text in texts {
                keys.push(KeySpec::parse(text).ok_or_else(|| {
                    KeyConfigError(format!("[keys]: `{shown}` = {text:?} is not a key (examples: \"a\", \"ctrl-r\", \"enter\", \"f2\")"))
                })?);
            }
            for b in self.bindings.iter_mut().filter(|b| b.action == action) {
                b.keys = keys.clone();
            }
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn every_default_key_parses() {
        for (_, action, keys, _, _) in DEFAULTS {
            for k in *keys {
                assert!(KeySpec::parse(k).is_some(), "{action:?}: {k}");
            }
        }
    }

    #[test]
    fn view_scope_wins_then_global() {
        let map = KeyMap::default();
        assert_eq!(
            map.action(Scope::Failed, &key(KeyCode::Char('a'))),
            Some(Action::Ack)
        );
        assert_eq!(map.action(Scope::Stream, &key(KeyCode::Char('a'))), None);
        assert_eq!(
            map.action(Scope::Stream, &key(KeyCode::Char('q'))),
            Some(Action::Quit)
        );
        assert_eq!(
            map.action(Scope::Detail, &key(KeyCode::Char('q'))),
            Some(Action::Back)
        );
        assert_eq!(
            map.action(Scope::Failed, &key(KeyCode::Char('R'))),
            Some(Action::ReplayAll)
        );
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(map.action(Scope::Topics, &ctrl_c), Some(Action::Quit));
    }

    #[test]
    fn hints_follow_the_bindings() {
        let map = KeyMap::default();
        let hints = map.hints(Scope::Failed);
        assert_eq!(hints.first(), Some(&("a".to_string(), "ack")));
        assert!(hints.iter().any(|(k, h)| k == "q" && *h == "quit"));
        let mut table = toml::Table::new();
        table.insert("ack".into(), toml::Value::String("x".into()));
        let map = map.with_overrides(&table).expect("valid");
        assert_eq!(
            map.hints(Scope::Failed).first(),
            Some(&("x".to_string(), "ack"))
        );
        assert_eq!(
            map.action(Scope::Failed, &key(KeyCode::Char('x'))),
            Some(Action::Ack)
        );
        assert_eq!(map.action(Scope::Failed, &key(KeyCode::Char('a'))), None);
    }

    #[test]
    fn bad_key_tables_name_the_key() {
        let mut table = toml::Table::new();
        table.insert("akc".into(), toml::Value::String("x".into()));
        let err = KeyMap::default()
            .with_overrides(&table)
            .expect_err("unknown");
        assert!(err.0.contains("`akc`"), "{err}");
        let mut table = toml::Table::new();
        table.insert("ack".into(), toml::Value::String("hyper-x".into()));
        let err = KeyMap::default()
            .with_overrides(&table)
            .expect_err("bad key");
        assert!(err.0.contains("`ack`"), "{err}");
    }
}
