//! `signalbox bridge …`: the bridges of `signalbox-bridge`, reachable from
//! the one `signalbox` binary (hooks and crontabs of hosts where only it is
//! installed, and the demo, which runs the real bridges this way).

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use signalbox_bridges::cli::{BridgeError, GlobalArgs};
use signalbox_bridges::{inbound, outbound, spool};

use super::{CliError, CliResult};

/// Flags of `signalbox bridge`: everything after it goes to the bridge.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct BridgeArgs {
    /// The bridge command and its flags, as for `signalbox-bridge`
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// The bridges, parsed exactly as `signalbox-bridge` parses them.
#[derive(Debug, Parser)]
#[command(name = "signalbox bridge", version)]
struct BridgeCli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: BridgeCommand,
}

#[derive(Debug, Subcommand)]
enum BridgeCommand {
    /// Publish one mail from standard input, or a Maildir's new mail
    Mail(inbound::mail::MailArgs),
    /// Run a command as a cron job and publish its start and finish
    Cron(inbound::cron::CronArgs),
    /// Publish a git push (post-receive hook)
    Git(inbound::git::GitArgs),
    /// Show or publish the messages waiting in the spool
    Spool(spool::SpoolArgs),
    /// Listener: run a command once per message
    Exec(outbound::exec::ExecArgs),
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
    let result = match cli.command {
        BridgeCommand::Mail(a) => inbound::mail::run(&cli.global, a),
        BridgeCommand::Cron(a) => inbound::cron::run(&cli.global, a),
        BridgeCommand::Git(a) => inbound::git::run(&cli.global, a),
        BridgeCommand::Spool(a) => spool::run(&cli.global, a),
        BridgeCommand::Exec(a) => outbound::exec::run(&cli.global, a),
    };
    match result {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(BridgeError { code, error }) => Err(CliError { code, error }),
    }
}
