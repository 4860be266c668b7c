//! `signalbox`: the operator's command line (and, later, console).
//!
//! Thin: parses flags, resolves the configuration and dispatches to
//! `cli::*`, then turns the outcome into one line on stderr and a
//! documented exit code (0 ok, 1 runtime failure, 2 usage or configuration
//! error; a broken pipe is not an error).

mod app;
#[cfg(test)]
mod bad_input_tests;
mod cli;
mod console;
mod demo;
mod event;
mod ingest;
mod keys;
mod operator;
mod signature;
mod theme;
mod views;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: fewer cycles per message than glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // The console owns the screen: log lines on stderr would garble it (the
    // demo logs to a file in its work directory while the console runs).
    if matches!(args.command, Some(ref c) if !matches!(c, cli::Command::Demo(_))) {
        cli::init_logging(args.global.verbose);
    }
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            if err.is_broken_pipe() {
                return ExitCode::SUCCESS;
            }
            eprintln!("signalbox: error: {:#}", err.error);
            ExitCode::from(err.code)
        }
    }
}
