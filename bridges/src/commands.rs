//! The `signalbox-bridge` command line as a library: the flags of every
//! bridge and the dispatch, shared by the `signalbox-bridge` binary and
//! `signalbox bridge …` (hosts where only `signalbox` is installed, and the
//! demo).

use clap::{Parser, Subcommand};

use crate::cli::{BridgeResult, GlobalArgs};
use crate::{inbound, outbound, spool};

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
  signalbox-bridge rss --feed koji=https://koji.example.org/rss --once
  signalbox-bridge spool list
  signalbox-bridge exec --name notify --filter 'signalbox/dev/git/#' -- ./notify.sh
  signalbox-bridge email --name commits --filter 'signalbox/dev/git/#' --smtp smtp://127.0.0.1:25 --to dev@example.org
  signalbox-bridge feed --name commits --filter 'signalbox/dev/git/#' --output commits.xml
  signalbox-bridge webhook --name tracker --filter 'signalbox/dev/git/#' --url http://127.0.0.1:8080/hook
  signalbox-bridge recorder --db /var/lib/signalbox/history.db --keep 90d";

/// signalbox-bridge: turn the signals of legacy systems (mail, cron jobs, git
/// pushes) into messages on the signalbox bus.
#[derive(Debug, Parser)]
#[command(name = "signalbox-bridge", version, about, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// Options every command shares.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The bridge to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of `signalbox-bridge`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish one mail from standard input (procmail, sendmail), or a Maildir's new mail
    Mail(inbound::mail::MailArgs),
    /// Run a command as a cron job and publish its start and finish
    Cron(inbound::cron::CronArgs),
    /// Publish a git push (post-receive hook: `<old> <new> <ref>` lines on stdin)
    Git(inbound::git::GitArgs),
    /// Poll RSS/Atom/JSON feeds and publish each new entry (daemon, or --once)
    Rss(inbound::rss::RssArgs),
    /// Show or publish the messages waiting in the spool
    Spool(spool::SpoolArgs),
    /// Listener: run a command once per message (payload on stdin)
    Exec(outbound::exec::ExecArgs),
    /// Listener: send a mail per message, or a digest (SMTP, sendmail, Maildir)
    Email(outbound::email::EmailArgs),
    /// Listener: keep an RSS or Atom file of the newest messages (optionally served over HTTP)
    Feed(outbound::feed::FeedArgs),
    /// Listener: POST each message to an HTTP endpoint (HMAC-signed)
    Webhook(outbound::webhook::WebhookArgs),
    /// Listener: store every message in the SQLite history (`signalbox history`)
    Recorder(outbound::recorder::RecorderArgs),
}

/// Runs one bridge command.
pub fn dispatch(global: &GlobalArgs, command: Command) -> BridgeResult {
    // The signing key first: a bridge asked to sign must not run unsigned.
    // (A configuration that does not resolve is reported by the command.)
    if let Ok(config) = global.resolve() {
        crate::session::load_signer(&config)
            .map_err(|e| crate::cli::BridgeError::usage(anyhow::anyhow!(e)))?;
    }
    match command {
        Command::Mail(args) => inbound::mail::run(global, args),
        Command::Cron(args) => inbound::cron::run(global, args),
        Command::Git(args) => inbound::git::run(global, args),
        Command::Rss(args) => inbound::rss::run(global, args),
        Command::Spool(args) => spool::run(global, args),
        Command::Exec(args) => outbound::exec::run(global, args),
        Command::Email(args) => outbound::email::run(global, args),
        Command::Feed(args) => outbound::feed::run(global, args),
        Command::Webhook(args) => outbound::webhook::run(global, args),
        Command::Recorder(args) => outbound::recorder::run(global, args),
    }
}
