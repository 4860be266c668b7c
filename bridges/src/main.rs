//! `signalbox-bridge`: the bridges between legacy systems and the bus.
//!
//! Thin: parses flags and dispatches to the library; each command returns
//! its exit code, or an error printed as one line with its exit code.

use std::process::ExitCode;

use clap::Parser;
use signalbox_bridges::cli::{init_logging, BridgeError};
use signalbox_bridges::commands::{self, Cli};

/// mimalloc: fewer cycles per message than glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    let result = commands::dispatch(&cli.global, cli.command);
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
