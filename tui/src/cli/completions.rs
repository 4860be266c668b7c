//! `signalbox completions SHELL` and `signalbox man [DIR]`: shell
//! completions and man pages generated from the clap definitions, so they
//! never drift from the flags.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, ValueEnum};
use clap_complete::Shell;

use super::{Cli, CliError, CliResult};

/// The shells completions are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    /// bash (bash-completion)
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

impl From<CompletionShell> for Shell {
    fn from(s: CompletionShell) -> Shell {
        match s {
            CompletionShell::Bash => Shell::Bash,
            CompletionShell::Zsh => Shell::Zsh,
            CompletionShell::Fish => Shell::Fish,
        }
    }
}

/// Flags of `signalbox completions`.
#[derive(Debug, Args)]
#[command(after_help = "\
Prints the completion script on standard output.

Examples:
  signalbox completions bash > /etc/bash_completion.d/signalbox
  signalbox completions bash --bridge > /etc/bash_completion.d/signalbox-bridge
  signalbox completions zsh > \"${fpath[1]}/_signalbox\"
  signalbox completions fish > ~/.config/fish/completions/signalbox.fish")]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum, value_name = "SHELL")]
    shell: CompletionShell,
    /// Complete `signalbox-bridge` instead of `signalbox`
    #[arg(long)]
    bridge: bool,
}

/// Flags of `signalbox man`.
#[derive(Debug, Args)]
#[command(after_help = "\
Writes one page per command: signalbox.1, signalbox-pub.1, …, and
signalbox-bridge.1, signalbox-bridge-mail.1, … for the bridges.

Examples:
  signalbox man /usr/local/share/man/man1 && mandb -q
  signalbox man target/man && man -l target/man/signalbox-history.1")]
pub struct ManArgs {
    /// The directory to write the pages to (created if missing)
    #[arg(value_name = "DIR", default_value = ".")]
    dir: PathBuf,
}

/// The `signalbox` command definition (with its hidden `bridge` command).
fn signalbox_command() -> clap::Command {
    Cli::command()
}

/// The `signalbox-bridge` command definition.
fn bridge_command() -> clap::Command {
    signalbox_bridges::commands::Cli::command()
}

/// Runs `signalbox completions`.
pub fn completions(args: CompletionsArgs) -> CliResult {
    let (mut cmd, name) = if args.bridge {
        (bridge_command(), "signalbox-bridge")
    } else {
        (signalbox_command(), "signalbox")
    };
    let mut out = Vec::new();
    clap_complete::generate(Shell::from(args.shell), &mut cmd, name, &mut out);
    use std::io::Write;
    std::io::stdout()
        .write_all(&out)
        .context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `signalbox man`.
pub fn man(args: ManArgs) -> CliResult {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))
        .map_err(CliError::usage)?;
    let mut written = Vec::new();
    for cmd in [signalbox_command(), bridge_command()] {
        let mut cmd = cmd.disable_help_subcommand(true);
        // Building names each subcommand `parent-child` (its page's name).
        cmd.build();
        write_pages(cmd, &args.dir, &mut written)?;
    }
    for path in &written {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the page of `cmd` and of each visible subcommand.
fn write_pages(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<(), CliError> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, written)?;
    }
    let path = clap_mangen::Man::new(cmd)
        .generate_to(dir)
        .with_context(|| format!("cannot write a man page into {}", dir.display()))?;
    written.push(path);
    Ok(())
}
