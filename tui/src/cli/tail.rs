//! `signalbox tail`: print messages as they arrive, one line each.
//!
//! Output is buffered and flushed whenever no message is waiting, so a
//! piped tail keeps up with a firehose while an interactive one shows each
//! message at once. Colour only on a terminal.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use base64::Engine;
use chrono::{DateTime, Local, Utc};
use clap::Args;
use signalbox_common::config::Config;
use signalbox_common::envelope::{Payload, Severity};
use signalbox_common::mqtt::{Message, Qos};
use signalbox_common::topic;

use super::{CliError, CliResult};

/// Longest summary printed on one line, in characters.
const MAX_SUMMARY_CHARS: usize = 400;

/// Flags of `signalbox tail`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each line: HH:MM:SS.mmm TOPIC SUMMARY (the envelope's time, else the arrival time;
a retained message is marked [retained]); a payload that is not an envelope is
shown as text or as <N bytes binary>. --json prints one object per line:
{\"topic\",\"retained\",\"qos\",\"kind\":\"envelope|json|text|binary\",\"payload\"} with the
envelope or JSON as an object, text as a string and binary as base64.

With --timeout, tail stops after SECS; with --count as well it exits 1 when fewer
than N messages arrived.

Examples:
  signalbox tail                                   everything under the prefix
  signalbox tail 'signalbox/+/git/#' --count 10
  signalbox tail --json '#' | jq .topic
  signalbox tail --no-retained signalbox/prod/cron/+/finished")]
pub struct TailArgs {
    /// Topic filters (MQTT wildcards + and #) [default: PREFIX/#]
    #[arg(value_name = "FILTER")]
    filters: Vec<String>,
    /// One JSON object per line
    #[arg(long)]
    json: bool,
    /// Exit after N messages
    #[arg(long, short = 'n', value_name = "N")]
    count: Option<u64>,
    /// Stop after SECS seconds
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Skip retained messages (the broker's stored state)
    #[arg(long)]
    no_retained: bool,
    /// Subscription QoS: 0 or 1
    #[arg(long, value_name = "0|1", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
}

/// Runs `signalbox tail`.
pub async fn run(config: &Config, args: TailArgs) -> CliResult {
    let filters = super::filters_or_prefix(config, &args.filters)?;
    let timeout = super::optional_seconds("--timeout", args.timeout)?;
    if args.count == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    let qos = if args.qos == 0 {
        Qos::AtMostOnce
    } else {
        Qos::AtLeastOnce
    };
    let mut conn = super::connect(config, "tail", |_| {}).await?;
    let subs: Vec<(String, Qos)> = filters.iter().map(|f| (f.clone(), qos)).collect();
    conn.subscribe(&subs, Duration::from_secs(10))
        .await
        .map_err(CliError::failure)?;

    let stdout = std::io::stdout();
    let colour = !args.json && stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let printer = Printer {
        json: args.json,
        colour,
        dots_noted: std::cell::Cell::new(false),
    };
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut seen: u64 = 0;
    let mut line = Vec::with_capacity(512);
    'outer: loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, conn.recv()).await {
                Ok(m) => m,
                Err(_) => break,
            },
            None => conn.recv().await,
        };
        let Some(mut message) = next else {
            return Err(CliError::failure(anyhow!(
                "the connection to the broker closed"
            )));
        };
        // Drain whatever is already buffered before flushing.
        loop {
            if !(args.no_retained && message.retain) {
                line.clear();
                printer.format(&message, &mut line);
                out.write_all(&line).context("writing to standard output")?;
                seen += 1;
                if args.count.is_some_and(|n| seen >= n) {
                    break 'outer;
                }
            }
            match conn.try_recv() {
                Some(m) => message = m,
                None => break,
            }
        }
        out.flush().context("writing to standard output")?;
    }
    out.flush().context("writing to standard output")?;
    drop(out);
    conn.disconnect().await;
    match args.count {
        Some(n) if seen < n => Err(CliError::failure(anyhow!(
            "timed out after {seen} of {n} messages"
        ))),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Formats one message as a line.
struct Printer {
    json: bool,
    colour: bool,
    /// The broker's rewrite of '.' in topic levels was reported.
    dots_noted: std::cell::Cell<bool>,
}

impl Printer {
    fn format(&self, message: &Message, out: &mut Vec<u8>) {
        let payload = Payload::decode(&message.payload);
        if let Some(e) = payload.envelope() {
            if topic::dots_rewritten(&e.topic, &message.topic) && !self.dots_noted.replace(true) {
                eprintln!(
                    "note: broker turned '.' in topic levels into '/': {} arrived as {} (RabbitMQ's MQTT plugin does this); filters with + may not match such topics",
                    e.topic, message.topic
                );
            }
        }
        if self.json {
            self.format_json(message, payload, out);
        } else {
            self.format_text(message, &payload, out);
        }
    }

    fn format_text(&self, message: &Message, payload: &Payload, out: &mut Vec<u8>) {
        let time: DateTime<Local> = match payload.envelope() {
            Some(e) => e.time.with_timezone(&Local),
            None => Utc::now().with_timezone(&Local),
        };
        let stamp = time.format("%H:%M:%S%.3f");
        let summary = payload.summary_line(MAX_SUMMARY_CHARS);
        let retained = if message.retain { " [retained]" } else { "" };
        // Writing into a Vec cannot fail.
        if self.colour {
            let sev = match payload.severity() {
                Some(Severity::Error) => "\x1b[31m",
                Some(Severity::Warning) => "\x1b[33m",
                Some(Severity::Debug) => "\x1b[2m",
                _ => "",
            };
            let reset = if sev.is_empty() { "" } else { "\x1b[0m" };
            let _ = writeln!(
                out,
                "\x1b[2m{stamp}\x1b[0m \x1b[36m{}\x1b[0m {sev}{summary}{reset}\x1b[2m{retained}\x1b[0m",
                message.topic
            );
        } else {
            let _ = writeln!(out, "{stamp} {} {summary}{retained}", message.topic);
        }
    }

    fn format_json(&self, message: &Message, payload: Payload, out: &mut Vec<u8>) {
        let (kind, value) = match payload {
            Payload::Envelope(e) => (
                "envelope",
                serde_json::to_value(&*e).unwrap_or(serde_json::Value::Null),
            ),
            Payload::Json(v) => ("json", v),
            Payload::Text(t) => ("text", serde_json::Value::String(t)),
            Payload::Binary(b) => (
                "binary",
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
            ),
        };
        let doc = serde_json::json!({
            "topic": message.topic,
            "retained": message.retain,
            "qos": message.qos.as_u8(),
            "kind": kind,
            "payload": value,
        });
        let _ = serde_json::to_writer(&mut *out, &doc);
        out.push(b'\n');
    }
}
