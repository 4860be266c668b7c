//! `signalbox config init [PATH]`: write a commented config file with
//! every key the loader accepts (defaults active, the rest commented out),
//! so an admin edits rather than writes one. The tests below load it — and
//! a copy with every commented key switched on — through the real loaders.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Args;
use signalbox_common::config::{default_config_file, Overrides};

use super::{CliError, CliResult};

/// Flags of `signalbox config init`.
#[derive(Debug, Args)]
#[command(after_help = "\
Writes a commented config file: the defaults are active, every other key is
shown commented out with an example. The file is PATH, else --config, else
$SIGNALBOX_CONFIG, else ~/.config/signalbox/config.toml. An existing file is
kept unless --force.

Examples:
  signalbox config init
  sudo signalbox config init /etc/signalbox/config.toml
  signalbox config init - | less")]
pub struct InitArgs {
    /// Where to write it (- for standard output)
    #[arg(value_name = "PATH")]
    path: Option<PathBuf>,
    /// Replace an existing file
    #[arg(long)]
    force: bool,
}

/// The commented configuration file.
pub const TEMPLATE: &str = r##"# signalbox configuration, read by `signalbox` and `signalbox-bridge`.
# Each setting comes from its flag, else its SIGNALBOX_* environment variable,
# else this file, else the default shown. `signalbox config` prints the
# effective values and where each came from. Unknown keys are an error.

# Broker URL(s): mqtt://[user[:pass]@]host[:port] or mqtts://…; a list fails
# over in turn.                                            (SIGNALBOX_BROKER)
broker = "mqtt://127.0.0.1:1883"
# broker = ["mqtts://bus1.example.org", "mqtts://bus2.example.org"]

# Topics are {prefix}/{env}/{system}/{entity…}/{event}.
env = "dev"                                              # SIGNALBOX_ENV
prefix = "signalbox"                                     # SIGNALBOX_PREFIX

# State: spool, de-duplication sets, the history database.
# state_dir = "/var/lib/signalbox"                       # SIGNALBOX_STATE_DIR [default: ~/.local/state/signalbox]
# spool = "/var/lib/signalbox/spool"                     # SIGNALBOX_SPOOL [default: STATE_DIR/spool]

# Seconds between the health reports of daemons and listeners.
health_interval = 10                                     # SIGNALBOX_HEALTH_INTERVAL

# MQTT connection.
# client_id = "signalbox-pkgs01"                         # SIGNALBOX_CLIENT_ID [default: generated]
# username = "console"                                   # SIGNALBOX_USERNAME (a user in the URL wins)
# password_file = "/etc/signalbox/password"              # SIGNALBOX_PASSWORD_FILE (prefer it to `password`)
# password = "secret"                                    # SIGNALBOX_PASSWORD
# ca_file = "/etc/signalbox/ca.pem"                      # SIGNALBOX_CA_FILE [default: system roots]
# A client certificate, for brokers that require one (with ca_file).
# client_cert = "/etc/signalbox/client.pem"              # SIGNALBOX_CLIENT_CERT
# client_key = "/etc/signalbox/client.key"               # SIGNALBOX_CLIENT_KEY

# Signed messages (README "Securing the bus"): sign what this host publishes,
# and check what listeners and the console receive.
# sign_key = "/etc/signalbox/keys/pkgs01.key"            # SIGNALBOX_SIGN_KEY (from `signalbox keygen`)
# trust_dir = "/etc/signalbox/trusted"                   # SIGNALBOX_TRUST: directory of *.pub files
# signature_policy = "require"                           # SIGNALBOX_SIGNATURE_POLICY: require or mark [default: mark]
mqtt_version = 3                                         # SIGNALBOX_MQTT_VERSION: 3 (3.1.1) or 5
keepalive = 30                                           # SIGNALBOX_KEEPALIVE, seconds
connect_timeout = 5                                      # SIGNALBOX_CONNECT_TIMEOUT, seconds
# Seconds of confirmed publishes sent again after a reconnect (a broker that
# dies may lose what it acknowledged last); 0 turns it off.
# resend_window = 10                                     # SIGNALBOX_RESEND_WINDOW

# The message history: `signalbox-bridge recorder` writes it, `signalbox
# history` reads it.
[history]
# db = "/var/lib/signalbox/history.db"                   # [default: STATE_DIR/history.db]
# keep = "90d"                                           # retention: 12h, 30d, 2w, or "forever"

# The RSS/Atom bridge (`signalbox-bridge rss`).
[rss]
# interval = "15m"                                       # default poll interval: 90s, 15m, 1h, 1d
# concurrency = 8                                        # feeds fetched at once
# http_timeout = "30s"                                   # one HTTP exchange, body included
# max_bytes = 10485760                                   # largest feed accepted
# name = "rss"                                           # health report name: _health/rss

[rss.feeds]
# koji = "https://koji.example.org/koji/recentbuilds?feed=rss"
# planet = { url = "https://planet.example.org/atom.xml", interval = "1h" }

# The console's colours: a bundled theme (default, light, high-contrast,
# solarized) or a file, then single colours ("blue", "#rrggbb", 0-255).
[theme]
# name = "light"
# selection_bg = "#d0e0ff"

# The console's keys: action = "key" or a list.
[keys]
# quit = ["q", "ctrl-q"]
# ack = "A"
"##;

/// Runs `signalbox config init`.
pub fn run(overrides: &Overrides, args: InitArgs) -> CliResult {
    let path = args
        .path
        .clone()
        .or_else(|| overrides.config_file.clone())
        .or_else(|| {
            std::env::var_os("SIGNALBOX_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(default_config_file)
        .ok_or_else(|| CliError::usage(anyhow!("no config directory: give a PATH")))?;
    if path.as_os_str() == "-" {
        print!("{TEMPLATE}");
        return Ok(ExitCode::SUCCESS);
    }
    if path.exists() && !args.force {
        return Err(CliError::usage(anyhow!(
            "{} exists; use --force to replace it",
            path.display()
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {}", dir.display()))
            .map_err(CliError::usage)?;
    }
    // Written whole or not at all: a temporary file renamed into place.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, TEMPLATE)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))
        .map_err(CliError::usage)?;
    eprintln!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use signalbox_common::config::Config;

    /// The template with every commented `key = value` line switched on
    /// (only the first of two alternatives for the same key).
    fn everything_on() -> String {
        let mut seen_in_table = std::collections::HashSet::new();
        let mut table = String::new();
        let mut out = String::new();
        for line in TEMPLATE.lines() {
            if line.starts_with('[') {
                table = line.to_string();
            }
            let candidate = line.strip_prefix("# ").filter(|rest| {
                rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                })
            });
            let key_line = candidate.unwrap_or(line);
            let key = key_line
                .split_once(" = ")
                .map(|(k, _)| k.trim().to_string());
            match (candidate, key) {
                (Some(on), Some(key)) if seen_in_table.insert(format!("{table}.{key}")) => {
                    out.push_str(on)
                }
                (None, Some(key))
                    if !line.starts_with('#') && seen_in_table.insert(format!("{table}.{key}")) =>
                {
                    out.push_str(line);
                }
                (None, Some(_)) if !line.starts_with('#') => {}
                (None, _) => out.push_str(line),
                _ => {}
            }
            out.push('\n');
        }
        out
    }

    fn load(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let flags = Overrides {
            config_file: Some(path),
            ..Default::default()
        };
        Config::resolve_with(&flags, |_| None).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// Checks the tables that belong to other parts through their own
    /// loaders.
    fn check_sections(config: &Config) {
        history_settings(config);
        let bridge =
            signalbox_bridges::commands::Cli::try_parse_from(["signalbox-bridge", "rss"]).unwrap();
        if let signalbox_bridges::commands::Command::Rss(args) = bridge.command {
            if let Err(e) = signalbox_bridges::inbound::rss::settings(&args, config) {
                // A template without feeds is fine; anything else is a key
                // the loader does not accept.
                assert!(e.starts_with("no feeds"), "[rss]: {e}");
            }
        }
        let table = |name: &str| match config.sections.get(name) {
            Some(toml::Value::Table(t)) => t.clone(),
            other => panic!("[{name}] missing or not a table: {other:?}"),
        };
        crate::theme::Theme::resolve(Some(&table("theme")), None, false).expect("[theme]");
        crate::keys::KeyMap::default()
            .with_overrides(&table("keys"))
            .expect("[keys]");
    }

    fn history_settings(config: &Config) -> signalbox_bridges::history::HistorySettings {
        signalbox_bridges::history::settings(config).expect("[history]")
    }

    #[test]
    fn the_template_loads_as_it_is() {
        let config = load(TEMPLATE);
        assert_eq!(config.env.value, "dev");
        assert_eq!(config.brokers.value, ["mqtt://127.0.0.1:1883"]);
        check_sections(&config);
    }

    #[test]
    fn every_commented_key_is_accepted_too() {
        let text = everything_on();
        assert!(text.contains("\npassword_file = "), "{text}");
        let config = load(&text);
        assert_eq!(config.state_dir.value, PathBuf::from("/var/lib/signalbox"));
        assert_eq!(
            history_settings(&config).keep,
            Some(std::time::Duration::from_secs(90 * 86_400))
        );
        check_sections(&config);
        let bridge =
            signalbox_bridges::commands::Cli::try_parse_from(["signalbox-bridge", "rss"]).unwrap();
        if let signalbox_bridges::commands::Command::Rss(args) = bridge.command {
            let rss = signalbox_bridges::inbound::rss::settings(&args, &config).expect("[rss]");
            assert_eq!(rss.feeds.len(), 2);
        }
    }

    #[test]
    fn every_setting_of_the_loader_is_in_the_template() {
        let config = load("");
        for (name, _, _) in config.rows() {
            assert!(
                TEMPLATE.contains(&format!("\n{name} = "))
                    || TEMPLATE.contains(&format!("\n# {name} = ")),
                "setting {name} is missing from the template"
            );
        }
    }
}
