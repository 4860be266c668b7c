//! `signalbox-bridge`: the bridges between legacy systems and the bus.
//!
//! Thin: parses flags and dispatches to the library; each command returns
//! its exit code, or an error printed as one line with its exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signalbox_bridges::cli::{init_logging, BridgeError, GlobalArgs};
use signalbox_bridges::{inbound, outbound, spool};

const AFTER_HELP: &str = "\
Configuration: each option comes from its flag, else its SIGNALBOX_* environment
variable, else the config file (--config / SIGNALBOX_CONFIG, default
~/.config/signalbox/config.toml), else the default (see `signalbox config`).

Exit codes: see each command's --help. Messages the broker does not confirm in
time are kept in the spool (--spool, default STATE_DIR/spool) and published by
the next run or by `signalbox-bridge spool flush`.

Examples:
  signalbox-bridge mail --system bugzilla < message.eml
  signalbox-bridge cron --job backup -- /usr/local/bin/backup --all
  signalbox-bridge git --repo kernel          (as hooks/post-receive)
  signalbox-bridge spool list
  signalbox-bridge exec --name notify --filter 'signalbox/dev/git/#' -- ./notify.sh";

/// signalbox-bridge: turn the signals of legacy systems (mail, cron jobs, git
/// pushes) into messages on the signalbox bus.
#[derive(Debug, Parser)]
#[command(name = "signalbox-bridge", version, about, after_help = AFTER_HELP, propagate_version = true)]
struct Cli {
    /// Options every command shares.
    #[command(flatten)]
    global: GlobalArgs,
    /// The bridge to run.
    #[command(subcommand)]
    command: Command,
}

/// The commands of `signalbox-bridge`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Publish one mail from standard input (procmail, sendmail), or a Maildir's new mail
    Mail(inbound::mail::MailArgs),
    /// Run a command as a cron job and publish its start and finish
    Cron(inbound::cron::CronArgs),
    /// Publish a git push (post-receive hook: `<old> <new> <ref>` lines on stdin)
    Git(inbound::git::GitArgs),
    /// Show or publish the messages waiting in the spool
    Spool(spool::SpoolArgs),
    /// Listener: run a command once per message (payload on stdin)
    Exec(outbound::exec::ExecArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    let result = match cli.command {
        Command::Mail(args) => inbound::mail::run(&cli.global, args),
        Command::Cron(args) => inbound::cron::run(&cli.global, args),
        Command::Git(args) => inbound::git::run(&cli.global, args),
        Command::Spool(args) => spool::run(&cli.global, args),
        Command::Exec(args) => outbound::exec::run(&cli.global, args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(BridgeError { code, error }) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("signalbox-bridge: error: {error:#}");
            ExitCode::from(code)
        }
    }
}

/// Whether the error is a closed stdout (`signalbox-bridge spool list | head`).
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
