//! `signalbox config`: the effective configuration and where each value
//! came from (flag, environment, file, default), secrets masked.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use signalbox_common::config::{Config, Overrides};

use super::{CliError, CliResult};

/// Flags of `signalbox config`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  signalbox config
  SIGNALBOX_ENV=prod signalbox config --json
  signalbox config init                    write a commented config file")]
pub struct ConfigArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    /// Write a config file instead of showing the configuration
    #[command(subcommand)]
    action: Option<ConfigAction>,
}

/// What `signalbox config` can do besides showing the configuration.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Write a commented config file with every key (defaults active)
    Init(super::config_init::InitArgs),
}

/// Prints the configuration.
pub fn run(overrides: &Overrides, args: ConfigArgs) -> CliResult {
    if let Some(ConfigAction::Init(init)) = args.action {
        return super::config_init::run(overrides, init);
    }
    let config = Config::resolve(overrides).map_err(CliError::usage)?;
    let rows = config.rows();
    let file_state = if config.file_loaded {
        "loaded"
    } else {
        "not present"
    };
    let file_shown = if config.file.as_os_str().is_empty() {
        "none (SIGNALBOX_CONFIG is empty)".to_string()
    } else {
        format!("{} ({file_state})", config.file.display())
    };
    if args.json {
        let settings: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(name, value, origin)| {
                (
                    name.to_string(),
                    serde_json::json!({ "value": value, "source": origin }),
                )
            })
            .collect();
        let doc = serde_json::json!({
            "file": config.file.display().to_string(),
            "file_loaded": config.file_loaded,
            "settings": settings,
        });
        println!("{doc}");
    } else {
        println!("config file: {file_shown}");
        let width = rows.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
        let vwidth = rows
            .iter()
            .map(|(_, v, _)| v.chars().count())
            .max()
            .unwrap_or(0);
        for (name, value, origin) in rows {
            println!("{name:<width$}  {value:<vwidth$}  ({origin})");
        }
    }
    Ok(ExitCode::SUCCESS)
}
