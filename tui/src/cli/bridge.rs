//! `signalbox bridge …`: the bridges of `signalbox-bridge`, reachable from
//! the one `signalbox` binary (hooks and crontabs of hosts where only it is
//! installed, and the demo, which runs the real bridges this way).

use std::process::ExitCode;

use clap::{Args, Parser};
use signalbox_bridges::cli::BridgeError;
use signalbox_bridges::commands::{dispatch, Cli as BridgeCli};

use super::{CliError, CliResult};

/// Flags of `signalbox bridge`: everything after it goes to the bridge.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct BridgeArgs {
    /// The bridge command and its flags, as for `signalbox-bridge`
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

/// Runs a bridge in this process (its own runtime; call outside any).
pub fn run(args: BridgeArgs) -> CliResult {
    let argv = std::iter::once("signalbox bridge".to_string()).chain(args.args);
    let cli = match BridgeCli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Ok(ExitCode::from(if e.use_stderr() { 2 } else { 0 }));
        }
    };
    match dispatch(&cli.global, cli.command) {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(BridgeError { code, error }) => Err(CliError { code, error }),
    }
}
