//! Colours as data: a [`Theme`] of semantic names (`selection_bg`,
//! `danger_fg`…) with a dark default, patched by partial TOML — a bundled
//! theme from `themes/*.toml`, a theme file, and the `[theme]` table of the
//! config file — where only the keys given change (like gitui's theme.ron).
//! `NO_COLOR` turns every colour off and leaves bold/reverse for emphasis.
//!
//! Colour values are ratatui's: a name (`blue`, `lightred`, `darkgray`,
//! `reset`), `#rrggbb`, or an index 0–255.

use std::path::Path;
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};

/// The bundled themes: (name, TOML), compiled into the binary.
pub const BUNDLED: &[(&str, &str)] = &[
    ("default", include_str!("../../themes/default.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
    ("solarized", include_str!("../../themes/solarized.toml")),
];

macro_rules! theme {
    ($( $(#[$doc:meta])* $name:ident = $default:expr, )*) => {
        /// The console's colours, by what they mean.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Theme {
            /// The theme's name, shown by `:theme`.
            pub name: String,
            /// With `NO_COLOR`: emphasis by bold/reverse only.
            pub monochrome: bool,
            $( $(#[$doc])* pub $name: Color, )*
        }

        impl Default for Theme {
            fn default() -> Self {
                Theme { name: "default".into(), monochrome: false, $( $name: $default, )* }
            }
        }

        impl Theme {
            /// The keys a theme file may set.
            pub const KEYS: &'static [&'static str] = &[$( stringify!($name), )*];

            fn slot(&mut self, key: &str) -> Option<&mut Color> {
                match key {
                    $( stringify!($name) => Some(&mut self.$name), )*
                    _ => None,
                }
            }

            fn all_slots(&mut self) -> Vec<&mut Color> {
                vec![$( &mut self.$name, )*]
            }
        }
    };
}

theme! {
    /// Ordinary text.
    fg = Color::Reset,
    /// The background (Reset keeps the terminal's own).
    bg = Color::Reset,
    /// Less important text: times, counts, hints.
    dim_fg = Color::DarkGray,
    /// Titles and the active tab.
    accent_fg = Color::Cyan,
    /// The header and footer bars.
    bar_bg = Color::Indexed(236),
    /// Text on the bars.
    bar_fg = Color::Gray,
    /// The active tab's background.
    tab_active_bg = Color::Cyan,
    /// The active tab's text.
    tab_active_fg = Color::Black,
    /// The selected row.
    selection_bg = Color::Indexed(24),
    /// Text of the selected row.
    selection_fg = Color::White,
    /// Borders of panes.
    border_fg = Color::DarkGray,
    /// Topics.
    topic_fg = Color::Cyan,
    /// Good: up, connected, cleared.
    ok_fg = Color::Green,
    /// Worth a look: warnings, stale, reconnecting.
    warn_fg = Color::Yellow,
    /// Wrong: errors, down, failed.
    danger_fg = Color::LightRed,
    /// Debug-severity messages.
    debug_fg = Color::DarkGray,
    /// Retained markers.
    retained_fg = Color::Magenta,
    /// Keys in hints.
    key_fg = Color::Yellow,
    /// Sparklines.
    sparkline_fg = Color::Cyan,
    /// JSON object keys.
    json_key_fg = Color::LightBlue,
    /// JSON strings.
    json_string_fg = Color::Green,
    /// JSON numbers.
    json_number_fg = Color::LightMagenta,
    /// JSON true/false/null.
    json_literal_fg = Color::Yellow,
    /// JSON punctuation.
    json_punct_fg = Color::DarkGray,
}

/// Why a theme cannot be used; one line naming the bad key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThemeError(pub String);

impl std::fmt::Display for ThemeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ThemeError {}

impl Theme {
    /// A bundled theme by name, or a theme file by path; each patches the
    /// default.
    pub fn named(name_or_path: &str) -> Result<Theme, ThemeError> {
        if let Some((name, text)) = BUNDLED.iter().find(|(n, _)| *n == name_or_path) {
            let mut theme =
                Theme::default().patched_from_str(text, &format!("bundled theme {name}"))?;
            theme.name = (*name).to_string();
            return Ok(theme);
        }
        let path = Path::new(name_or_path);
        if name_or_path.ends_with(".toml") || name_or_path.contains('/') {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ThemeError(format!("theme file {}: {e}", path.display())))?;
            let mut theme = Theme::default()
                .patched_from_str(&text, &format!("theme file {}", path.display()))?;
            theme.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Ok(theme);
        }
        Err(ThemeError(format!(
            "unknown theme `{name_or_path}` (bundled: {}; or a path to a .toml file)",
            BUNDLED
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// The theme for this session: `chosen` (the `--theme` flag, else
    /// `SIGNALBOX_THEME`), else the config's `[theme] name`, else the
    /// default; patched by the other keys of the `[theme]` table, and
    /// monochrome when `no_color`.
    pub fn resolve(
        table: Option<&toml::Table>,
        chosen: Option<&str>,
        no_color: bool,
    ) -> Result<Theme, ThemeError> {
        let table_name = match table.and_then(|t| t.get("name")) {
            Some(toml::Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                return Err(ThemeError(
                    "[theme]: `name` must be a string (a bundled theme or a file)".into(),
                ))
            }
            None => None,
        };
        let mut theme = match chosen.filter(|n| !n.is_empty()).or(table_name) {
            Some(name) => Theme::named(name)?,
            None => Theme::default(),
        };
        if let Some(table) = table {
            theme = theme.patched(table, "[theme] in the config file")?;
        }
        if no_color {
            theme = theme.without_colour();
        }
        Ok(theme)
    }

    /// Applies TOML text of `key = "colour"` lines.
    pub fn patched_from_str(self, text: &str, origin: &str) -> Result<Theme, ThemeError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // The message alone, on one line, with where it is (the full
            // rendering quotes the file over several lines).
            let line = e.span().map(|span| {
                let before = &text.as_bytes()[..span.start.min(text.len())];
                before.iter().filter(|b| **b == b'\n').count() + 1
            });
            let message = e.message().replace('\n', " ");
            match line {
                Some(n) => ThemeError(format!("{origin}, line {n}: {}", message.trim())),
                None => ThemeError(format!("{origin}: {}", message.trim())),
            }
        })?;
        self.patched(&table, origin)
    }

    /// Applies a table of `key = "colour"`; `name` is skipped (it picks the
    /// base). Unknown keys and bad colours are errors naming the key.
    pub fn patched(mut self, table: &toml::Table, origin: &str) -> Result<Theme, ThemeError> {
        for (key, value) in table {
            // Quoted TOML keys may hold control characters: escaped, so
            // that the error stays one line.
            let shown = key.escape_debug();
            if key == "name" {
                continue;
            }
            let text = value.as_str().ok_or_else(|| {
                ThemeError(format!(
                    "{origin}: `{shown}` must be a colour string such as \"blue\" or \"#268bd2\""
                ))
            })?;
            let colour = Color::from_str(text).map_err(|_| {
                ThemeError(format!(
                    "{origin}: `{shown}` = {text:?} is not a colour (a name such as \"blue\", \"#rrggbb\", or 0-255)"
                ))
            })?;
            let slot = self.slot(key).ok_or_else(|| {
                ThemeError(format!(
                    "{origin}: unknown key `{shown}` (known: {})",
                    Theme::KEYS.join(", ")
                ))
            })?;
            *slot = colour;
        }
        Ok(self)
    }

    /// Every colour reset: for `NO_COLOR` and dumb terminals.
    pub fn without_colour(mut self) -> Theme {
        for slot in self.all_slots() {
            *slot = Color::Reset;
        }
        self.monochrome = true;
        self
    }

    /// Ordinary text.
    pub fn text(&self) -> Style {
        Style::new().fg(self.fg).bg(self.bg)
    }

    /// Dim text.
    pub fn dim(&self) -> Style {
        if self.monochrome {
            Style::new().add_modifier(Modifier::DIM)
        } else {
            Style::new().fg(self.dim_fg)
        }
    }

    /// The selected row.
    pub fn selection(&self) -> Style {
        if self.monochrome {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new().bg(self.selection_bg).fg(self.selection_fg)
        }
    }

    /// Text in colour `c`, bold when monochrome and `strong`.
    pub fn fg(&self, c: Color, strong: bool) -> Style {
        let style = Style::new().fg(c);
        if self.monochrome && strong {
            style.add_modifier(Modifier::BOLD)
        } else {
            style
        }
    }

    /// Pane borders.
    pub fn border(&self) -> Style {
        Style::new().fg(self.border_fg)
    }

    /// Pane titles.
    pub fn title(&self) -> Style {
        Style::new().fg(self.accent_fg).add_modifier(Modifier::BOLD)
    }

    /// The header and footer bars.
    pub fn bar(&self) -> Style {
        Style::new().bg(self.bar_bg).fg(self.bar_fg)
    }

    /// The active tab.
    pub fn tab_active(&self) -> Style {
        if self.monochrome {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::new()
                .bg(self.tab_active_bg)
                .fg(self.tab_active_fg)
                .add_modifier(Modifier::BOLD)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_themes_load() {
        for (name, _) in BUNDLED {
            let theme = Theme::named(name).expect(name);
            assert_eq!(theme.name, *name);
        }
        assert_ne!(Theme::named("light").expect("light"), Theme::default());
    }

    #[test]
    fn a_partial_table_patches_only_its_keys() {
        let table: toml::Table = "selection_bg = \"#112233\"\n".parse().expect("toml");
        let theme = Theme::resolve(Some(&table), None, false).expect("valid");
        assert_eq!(theme.selection_bg, Color::Rgb(0x11, 0x22, 0x33));
        assert_eq!(theme.danger_fg, Theme::default().danger_fg);
        let table: toml::Table = "name = \"light\"\ndanger_fg = \"red\"\n"
            .parse()
            .expect("toml");
        let theme = Theme::resolve(Some(&table), None, false).expect("valid");
        assert_eq!(theme.name, "light");
        assert_eq!(theme.danger_fg, Color::Red);
    }

    #[test]
    fn errors_name_the_bad_key() {
        let table: toml::Table = "selction_bg = \"blue\"\n".parse().expect("toml");
        let err = Theme::resolve(Some(&table), None, false).expect_err("unknown key");
        assert!(err.0.contains("unknown key `selction_bg`"), "{err}");
        let table: toml::Table = "selection_bg = \"bluish\"\n".parse().expect("toml");
        let err = Theme::resolve(Some(&table), None, false).expect_err("bad colour");
        assert!(
            err.0.contains("`selection_bg`") && !err.0.contains('\n'),
            "{err}"
        );
        let err = Theme::named("nope").expect_err("unknown theme");
        assert!(err.0.contains("bundled: default, light"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "ok_fg = [1]\n").expect("write");
        let err = Theme::named(path.to_str().expect("utf8")).expect_err("bad value");
        assert!(err.0.contains("`ok_fg`"), "{err}");
    }

    #[test]
    fn no_color_resets_everything() {
        let theme = Theme::resolve(None, Some("solarized"), true).expect("valid");
        assert!(theme.monochrome);
        assert_eq!(theme.danger_fg, Color::Reset);
        assert!(theme.selection().add_modifier.contains(Modifier::REVERSED));
    }
}
