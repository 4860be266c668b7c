//! `signalbox-bridge spool list|flush`: look at, or publish, the messages
//! that bridge runs spooled while the broker was away.
//!
//! `list` prints one line per message, oldest first (`--json`: one object
//! per line). `flush` publishes them oldest first, each confirmed, and
//! stops at the first failure so the order is kept. Exit codes: 0 (for
//! flush: the spool is empty now), 1 messages remain (broker unreachable or
//! not confirming), 2 bad flags or configuration.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::{Args, Subcommand};
use serde_json::json;
use signalbox_common::envelope::{format_time, Payload};
use signalbox_common::spool::{FlushReport, Spool};

use crate::cli::{timeout_arg, BridgeError, BridgeResult, GlobalArgs, EXIT_FAILURE};
use crate::session;

/// Default `--timeout` of `spool flush`: a backlog may be large.
pub const DEFAULT_FLUSH_TIMEOUT_S: f64 = 60.0;

/// Flags of `signalbox-bridge spool`.
#[derive(Debug, Args)]
#[command(after_help = "\
The spool is --spool (SIGNALBOX_SPOOL), default STATE_DIR/spool. Every bridge run
flushes it first for a bounded time; `flush` empties it on demand.

Exit codes: 0 success (flush: nothing left), 1 messages remain, 2 bad flags or
configuration.

Examples:
  signalbox-bridge spool list
  signalbox-bridge spool list --json | jq -r .topic
  signalbox-bridge spool flush --timeout 300")]
pub struct SpoolArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: SpoolAction,
}

/// `spool` actions.
#[derive(Debug, Subcommand)]
pub enum SpoolAction {
    /// Print the spooled messages, oldest first
    List {
        /// One JSON object per line: file, topic, qos, retain, spooled, size, summary
        #[arg(long)]
        json: bool,
    },
    /// Publish the spooled messages, oldest first, and remove each once confirmed
    Flush {
        /// Print the outcome as one JSON object
        #[arg(long)]
        json: bool,
        /// Seconds to spend before giving up (what is left stays spooled)
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_FLUSH_TIMEOUT_S)]
        timeout: f64,
    },
}

/// Runs `signalbox-bridge spool`.
pub fn run(global: &GlobalArgs, args: SpoolArgs) -> BridgeResult {
    let config = global.resolve().map_err(BridgeError::usage)?;
    let spool = Spool::new(config.spool.value.clone());
    match args.action {
        SpoolAction::List { json } => list(&spool, json),
        SpoolAction::Flush { json, timeout } => {
            let budget = timeout_arg(timeout)?;
            let runtime = session::runtime().map_err(BridgeError::failure)?;
            let report = runtime.block_on(async {
                let started = Instant::now();
                // Connecting gets at most a tenth of the budget (and at
                // least a second): the rest is for publishing.
                let connect_budget = (budget / 10).max(Duration::from_secs(1)).min(budget);
                match session::connect(&config, "spool", connect_budget).await {
                    Ok(conn) => {
                        let report = spool.flush(&conn.publisher(), started + budget).await;
                        conn.disconnect().await;
                        report
                    }
                    Err(why) => FlushReport {
                        remaining: spool.depth(),
                        error: Some(why),
                        ..Default::default()
                    },
                }
            });
            print_flush(&report, json)?;
            if report.remaining > 0 {
                return Err(BridgeError::new(
                    EXIT_FAILURE,
                    anyhow!(
                        "{} message(s) remain in {}: {}",
                        report.remaining,
                        spool.dir().display(),
                        report.error.as_deref().unwrap_or("not flushed")
                    ),
                ));
            }
            Ok(0)
        }
    }
}

fn list(spool: &Spool, as_json: bool) -> BridgeResult {
    let (messages, errors) = spool.list().map_err(BridgeError::failure)?;
    let mut out = std::io::stdout().lock();
    for m in &messages {
        let summary = Payload::decode(&m.payload).summary_line(200);
        let file = m
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let line = if as_json {
            json!({
                "file": file, "topic": m.topic, "qos": m.qos.as_u8(), "retain": m.retain,
                "spooled": format_time(&m.spooled), "size": m.payload.len(), "summary": summary,
            })
            .to_string()
        } else {
            format!(
                "{} {}{} {}",
                format_time(&m.spooled),
                m.topic,
                if m.retain { " [retained]" } else { "" },
                summary
            )
        };
        writeln!(out, "{line}").map_err(BridgeError::failure)?;
    }
    out.flush().map_err(BridgeError::failure)?;
    for e in &errors {
        eprintln!("signalbox-bridge: warning: {e}");
    }
    Ok(0)
}

fn print_flush(report: &FlushReport, as_json: bool) -> Result<(), BridgeError> {
    let mut out = std::io::stdout().lock();
    let line = if as_json {
        serde_json::to_string(report).map_err(BridgeError::failure)?
    } else {
        let mut line = format!("flushed {}, remaining {}", report.flushed, report.remaining);
        if report.quarantined > 0 {
            line.push_str(&format!(
                ", {} unreadable moved to corrupt/",
                report.quarantined
            ));
        }
        line
    };
    writeln!(out, "{line}").map_err(BridgeError::failure)?;
    Ok(())
}
