//! The non-interactive commands of `signalbox`: flag definitions, the shared
//! options, and dispatch. One file per command.

mod bridge;
mod broker;
mod completions;
mod config;
mod config_init;
mod discover;
mod failed;
mod health;
mod history;
mod keygen;
mod publish;
mod record;
mod replay;
mod request;
mod tail;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signalbox_common::config::{Config, Overrides};
use signalbox_common::mqtt::{ConnectOptions, Connection};

/// Exit code of a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a runtime failure (broker unreachable, not confirmed…).
pub const EXIT_FAILURE: u8 = 1;

/// An error with the exit code it should produce.
pub struct CliError {
    /// The process exit code.
    pub code: u8,
    /// What went wrong, printed as one line.
    pub error: anyhow::Error,
}

impl CliError {
    /// A usage or configuration error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            code: EXIT_USAGE,
            error: error.into(),
        }
    }

    /// A runtime failure (exit 1).
    pub fn failure(error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            code: EXIT_FAILURE,
            error: error.into(),
        }
    }

    /// Whether the error is a closed stdout (`signalbox tail | head`).
    pub fn is_broken_pipe(&self) -> bool {
        self.error
            .chain()
            .filter_map(|e| e.downcast_ref::<std::io::Error>())
            .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> Self {
        CliError::failure(error)
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        CliError::failure(error)
    }
}

/// Result of a command: the exit code on success.
pub type CliResult = Result<ExitCode, CliError>;

const AFTER_HELP: &str = "\
Configuration: each option comes from its flag, else its SIGNALBOX_* environment
variable, else the config file (--config / SIGNALBOX_CONFIG, default
~/.config/signalbox/config.toml), else the default. `signalbox config` shows the
effective values and where each came from.

Exit codes: 0 success, 1 runtime failure (broker unreachable, publish not
confirmed, …), 2 usage or configuration error.

Examples:
  signalbox broker                         run the embedded broker on 127.0.0.1:1883
  signalbox tail                           print every signalbox message as it arrives
  signalbox pub signalbox/dev/test/hello 'Hello, bus'
  tail -F /var/log/app.log | signalbox pub --stdin signalbox/dev/app/log/line
  signalbox config                         show the effective configuration";

/// signalbox: one MQTT bus for the signals of legacy infrastructure.
#[derive(Debug, Parser)]
#[command(name = "signalbox", version, about, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// Options every command shares.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Console only: start an embedded broker in-process first (127.0.0.1, a free port unless --broker names one) and connect to it
    #[arg(long)]
    pub embedded: bool,
    /// Console only: colour theme, a bundled one (default, light, high-contrast, solarized) or a .toml file; wins over SIGNALBOX_THEME and the config file's [theme] name
    #[arg(long, value_name = "NAME|PATH")]
    pub theme: Option<String>,
}

/// Options shared by every command; see `signalbox config`. The same
/// struct as `signalbox-bridge`'s, so that both binaries take the same flags.
pub use signalbox_bridges::cli::GlobalArgs;

/// The commands of `signalbox`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the embedded MQTT broker (one host; use mosquitto or a cluster beyond)
    Broker(broker::BrokerArgs),
    /// Publish one message, or one per input line with --stdin
    #[command(name = "pub")]
    Pub(publish::PubArgs),
    /// Print messages as they arrive
    Tail(tail::TailArgs),
    /// Publish a request and print the first reply (client/server exchange)
    Request(request::RequestArgs),
    /// Health of every listener and bridge (exit 1 if any is down or stale)
    Health(health::HealthArgs),
    /// Failed messages: list, show, acknowledge, replay
    Failed(failed::FailedArgs),
    /// Show the effective configuration and where each value came from (`config init` writes one)
    Config(config::ConfigArgs),
    /// Query the message history kept by `signalbox-bridge recorder`
    History(history::HistoryArgs),
    /// Make an ed25519 key pair for signing messages (--sign-key, --trust)
    Keygen(keygen::KeygenArgs),
    /// Write messages to a file (JSON Lines, exact payload bytes)
    Record(record::RecordArgs),
    /// Publish a recording again (same bytes, same ids)
    Replay(replay::ReplayArgs),
    /// Print a shell completion script (bash, zsh, fish)
    Completions(completions::CompletionsArgs),
    /// Write man pages for every command
    Man(completions::ManArgs),
    /// The guided demo: a simulated infrastructure on real bridges and listeners, in the console
    Demo(crate::demo::DemoArgs),
    /// The bridges of signalbox-bridge, from this binary (`signalbox bridge git …`)
    #[command(hide = true)]
    Bridge(bridge::BridgeArgs),
}

/// Sets up logging on stderr: warnings by default, more with -v, or the
/// filter in SIGNALBOX_LOG.
pub fn init_logging(verbose: u8) {
    init_logging_to(verbose, std::io::stderr);
}

/// Sets up logging like [`init_logging`], into `writer` (e.g. a file).
pub fn init_logging_to<W>(verbose: u8, writer: W)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let default = match verbose {
        // rumqttc warns about every refused publish it sees; signalbox
        // reports those itself, as one clear line. rustls warns about
        // every client that sends an IP address as its TLS server name
        // (mosquitto_pub -h 127.0.0.1 does), which is harmless.
        0 => "warn,rumqttd=off,rumqttc=error,rustls=error",
        1 => "info,rumqttd=warn",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIGNALBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .try_init();
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> CliResult {
    let Some(command) = cli.command else {
        // No command: the operator console.
        return crate::console::run(
            &load(&cli.global.overrides())?,
            cli.embedded,
            cli.theme.as_deref(),
        );
    };
    if cli.theme.is_some() {
        return Err(CliError::usage(anyhow::anyhow!(
            "--theme only applies to the console (`signalbox --theme NAME`); the demo takes its own (`signalbox demo --theme NAME`)"
        )));
    }
    if cli.embedded {
        return Err(CliError::usage(anyhow::anyhow!(
            "--embedded only applies to the console (`signalbox --embedded`); for a standalone broker run `signalbox broker`"
        )));
    }
    // These run their own runtimes (bridges, the demo's console).
    let command = match command {
        Command::Bridge(args) => return bridge::run(args),
        Command::History(args) => return history::run(&load(&cli.global.overrides())?, args),
        Command::Completions(args) => return completions::completions(args),
        Command::Man(args) => return completions::man(args),
        Command::Demo(args) => return crate::demo::run(&load(&cli.global.overrides())?, args),
        other => other,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::failure)?;
    let overrides = cli.global.overrides();
    runtime.block_on(async move {
        match command {
            Command::Broker(args) => broker::run(args).await,
            Command::Config(args) => config::run(&overrides, args),
            Command::Keygen(args) => keygen::run(&load(&overrides)?, args),
            Command::Pub(args) => publish::run(&load(&overrides)?, args).await,
            Command::Tail(args) => tail::run(&load(&overrides)?, args).await,
            Command::Request(args) => request::run(&load(&overrides)?, args).await,
            Command::Health(args) => health::run(&load(&overrides)?, args).await,
            Command::Failed(args) => failed::run(&load(&overrides)?, args).await,
            Command::Record(args) => record::run(&load(&overrides)?, args).await,
            Command::Replay(args) => replay::run(&load(&overrides)?, args).await,
            Command::Demo(_)
            | Command::Bridge(_)
            | Command::History(_)
            | Command::Completions(_)
            | Command::Man(_) => Err(CliError::failure(anyhow::anyhow!(
                "internal: this command runs before the runtime"
            ))),
        }
    })
}

/// `FLAG SECS` as a duration: a positive, finite number of seconds, else a
/// usage error naming the flag.
fn positive_seconds(flag: &str, secs: f64) -> Result<std::time::Duration, CliError> {
    if !secs.is_finite() || secs <= 0.0 {
        return Err(CliError::usage(anyhow::anyhow!(
            "{flag} must be a positive number of seconds"
        )));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// The same for a flag that may be absent.
fn optional_seconds(
    flag: &str,
    secs: Option<f64>,
) -> Result<Option<std::time::Duration>, CliError> {
    secs.map(|s| positive_seconds(flag, s)).transpose()
}

/// The topic filters given, or everything under the prefix; each must be
/// a valid filter (a usage error otherwise).
fn filters_or_prefix(config: &Config, given: &[String]) -> Result<Vec<String>, CliError> {
    let filters = if given.is_empty() {
        vec![format!("{}/#", config.prefix.value)]
    } else {
        given.to_vec()
    };
    for f in &filters {
        signalbox_common::topic::validate_filter(f).map_err(CliError::usage)?;
    }
    Ok(filters)
}

/// Resolves the configuration; a bad value is a usage error.
fn load(overrides: &Overrides) -> Result<Config, CliError> {
    Config::resolve(overrides).map_err(CliError::usage)
}

/// Connects with the configuration's options for the role `role`; a bad
/// URL is a usage error, an unreachable broker a runtime failure.
async fn connect(
    config: &Config,
    role: &str,
    tune: impl FnOnce(&mut ConnectOptions),
) -> Result<Connection, CliError> {
    let mut options = ConnectOptions::from_config(config, role).map_err(CliError::usage)?;
    tune(&mut options);
    Connection::connect(options).await.map_err(|e| match e {
        signalbox_common::mqtt::MqttError::CaFile { .. }
        | signalbox_common::mqtt::MqttError::ClientCert { .. } => CliError::usage(e),
        other => CliError::failure(other),
    })
}
