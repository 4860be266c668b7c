//! `signalbox pub`: publish one envelope, or stream one per input line.
//!
//! Streaming (`--stdin`) keeps many QoS 1 publishes in flight instead of
//! waiting for each PUBACK, then waits for every confirmation and fails if
//! any is missing. Lines of any length are read whole, the last line needs
//! no newline, empty lines are skipped, and a broker restart mid-stream is
//! survived: the connection resends what was not confirmed.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;
use signalbox_common::config::Config;
use signalbox_common::envelope::{Envelope, Severity};
use signalbox_common::mqtt::{Confirmation, Publish, Publisher, Qos, MAX_PACKET_SIZE};
use signalbox_common::topic;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{CliError, CliResult};

/// Flags of `signalbox pub`.
#[derive(Debug, Args)]
#[command(after_help = "\
Unless --raw, MESSAGE becomes the summary of an envelope (source.bridge \"cli\",
agent $USER); --body adds structured data. Exit 0 once the broker confirmed every
message (QoS 1), 1 if any was not confirmed within --timeout, 2 on bad input.

Examples:
  signalbox pub signalbox/dev/koji/build/complete 'kernel-6.1 built' --body '{\"nvr\":\"kernel-6.1\"}'
  signalbox pub --retain signalbox/dev/cron/backup/finished 'backup ok'
  signalbox pub --raw signalbox/dev/sensor/temp 21.5
  journalctl -f -o cat | signalbox pub --stdin signalbox/dev/host/journal/line
  printf 'a/b hello\\na/c world\\n' | signalbox pub --stdin --topic-per-line --raw")]
pub struct PubArgs {
    /// Topic to publish to (no wildcards); omit with --topic-per-line
    #[arg(value_name = "TOPIC", required_unless_present = "topic_per_line")]
    topic: Option<String>,
    /// The message: the envelope's summary, or the payload with --raw
    #[arg(value_name = "MESSAGE")]
    message: Option<String>,
    /// JSON for the envelope's body
    #[arg(long, value_name = "JSON", conflicts_with = "raw")]
    body: Option<String>,
    /// Severity: debug, info, warning or error
    #[arg(long, value_name = "S", default_value = "info", conflicts_with = "raw")]
    severity: String,
    /// Who caused the event [default: $USER]
    #[arg(long, value_name = "NAME", conflicts_with = "raw")]
    agent: Option<String>,
    /// A link of the envelope, NAME=URL (repeatable)
    #[arg(long, value_name = "NAME=URL", conflicts_with = "raw")]
    link: Vec<String>,
    /// Ask the broker to retain the message (state topics)
    #[arg(long)]
    retain: bool,
    /// Quality of service: 0 (fire and forget) or 1 (confirmed)
    #[arg(long, value_name = "0|1", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Publish MESSAGE (or each line) as it is, without an envelope
    #[arg(long)]
    raw: bool,
    /// Publish one message per line of standard input, streaming
    #[arg(long, conflicts_with = "message")]
    stdin: bool,
    /// With --stdin: each line is `TOPIC MESSAGE`
    #[arg(long, requires = "stdin")]
    topic_per_line: bool,
    /// Seconds to wait for the broker's confirmations
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    timeout: f64,
}

/// How to turn a message text into a payload.
struct Shaper {
    raw: bool,
    severity: Severity,
    agent: Option<String>,
    body: Option<serde_json::Value>,
    links: Vec<(String, String)>,
    /// Signs each envelope (`--sign-key`); raw payloads are never signed.
    signer: Option<signalbox_common::sign::SigningKey>,
}

impl Shaper {
    fn payload(&self, topic: &str, message: &str) -> Result<Vec<u8>, CliError> {
        if self.raw {
            return Ok(message.as_bytes().to_vec());
        }
        let mut builder = Envelope::builder(topic, message)
            .severity(self.severity)
            .bridge("cli");
        if let Some(agent) = &self.agent {
            builder = builder.agent(agent.clone()).user(agent.clone());
        }
        if let Some(body) = &self.body {
            builder = builder.body(body.clone());
        }
        for (name, url) in &self.links {
            builder = builder.link(name.clone(), url.clone());
        }
        let mut envelope = builder.build().map_err(CliError::usage)?;
        if let Some(signer) = &self.signer {
            signer.sign_envelope(&mut envelope);
        }
        Ok(envelope.to_vec())
    }
}

/// Runs `signalbox pub`.
pub async fn run(config: &Config, args: PubArgs) -> CliResult {
    if let Some(t) = &args.topic {
        topic::validate_topic_name(t).map_err(CliError::usage)?;
    }
    let timeout = super::positive_seconds("--timeout", args.timeout)?;
    let severity: Severity = args.severity.parse().map_err(|_| {
        CliError::usage(anyhow!(
            "invalid --severity {:?}: use debug, info, warning or error",
            args.severity
        ))
    })?;
    let body = match &args.body {
        Some(text) => Some(
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| CliError::usage(anyhow!("--body is not valid JSON: {e}")))?,
        ),
        None => None,
    };
    let links = args
        .link
        .iter()
        .map(|l| {
            l.split_once('=')
                .filter(|(n, u)| !n.is_empty() && !u.is_empty())
                .map(|(n, u)| (n.to_string(), u.to_string()))
                .ok_or_else(|| CliError::usage(anyhow!("invalid --link {l:?}: expected NAME=URL")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let shaper = Shaper {
        raw: args.raw,
        severity,
        agent: args
            .agent
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .filter(|a| !a.is_empty()),
        body,
        links,
        signer: match &config.sign_key.value {
            Some(path) => Some(
                signalbox_common::sign::SigningKey::load(path)
                    .map_err(|e| CliError::usage(anyhow!("--sign-key: {e}")))?,
            ),
            None => None,
        },
    };
    let qos = if args.qos == 0 {
        Qos::AtMostOnce
    } else {
        Qos::AtLeastOnce
    };

    if !args.stdin {
        let topic = args.topic.clone().unwrap_or_default();
        let message = match (&args.message, args.raw) {
            (Some(m), _) => m.clone(),
            (None, true) => String::new(),
            (None, false) => {
                return Err(CliError::usage(anyhow!(
                    "MESSAGE is missing (or use --stdin, or --raw for an empty payload)"
                )))
            }
        };
        let payload = shaper.payload(&topic, &message)?;
        check_size(&topic, &payload).map_err(|e| CliError::usage(anyhow!(e)))?;
        let conn = super::connect(config, "pub", |_| {}).await?;
        conn.publish_confirmed(Publish::new(topic, payload, qos, args.retain), timeout)
            .await
            .map_err(CliError::failure)?;
        conn.disconnect().await;
        return Ok(ExitCode::SUCCESS);
    }

    let conn = super::connect(config, "pub", |o| o.inflight = 1000).await?;
    let publisher = conn.publisher();
    let outcome = stream_stdin(&publisher, &shaper, &args, qos, timeout).await;
    conn.disconnect().await;
    let stats = outcome?;
    if stats.failed > 0 {
        return Err(CliError::failure(anyhow!(
            "{} of {} messages were not confirmed by the broker ({})",
            stats.failed,
            stats.sent,
            stats.first_error.unwrap_or_default()
        )));
    }
    tracing::info!(
        sent = stats.sent,
        skipped = stats.skipped,
        "all messages confirmed"
    );
    Ok(ExitCode::SUCCESS)
}

/// Checks that `payload` on `topic` fits in one packet of
/// [`MAX_PACKET_SIZE`] (with the fixed header, topic length, packet id and
/// room for MQTT 5 properties). A larger message would make the connection
/// fail on every attempt until `--timeout`; this says why at once.
fn check_size(topic: &str, payload: &[u8]) -> Result<(), String> {
    const OVERHEAD: usize = 5 + 2 + 2 + 16;
    if payload.len() + topic.len() + OVERHEAD > MAX_PACKET_SIZE {
        return Err(format!(
            "message of {} bytes is larger than the {MAX_PACKET_SIZE} bytes one MQTT packet may hold",
            payload.len()
        ));
    }
    Ok(())
}

/// Lines handed to the connection at once when input is plentiful.
const BATCH: usize = 256;

/// Turns one input line into a publish, or counts it as skipped (with a
/// warning naming the line).
fn shape_line(
    line: &[u8],
    fixed_topic: &str,
    shaper: &Shaper,
    args: &PubArgs,
    qos: Qos,
    stats: &mut StreamStats,
) -> Option<Publish> {
    let text = String::from_utf8_lossy(line);
    let (topic, message) = if args.topic_per_line {
        match text.split_once([' ', '\t']) {
            Some((t, m)) => (t.to_string(), m.trim_start().to_string()),
            None => (text.to_string(), String::new()),
        }
    } else {
        (fixed_topic.to_string(), text.into_owned())
    };
    let number = stats.sent + stats.skipped + stats.shaped + 1;
    if args.topic_per_line {
        if let Err(e) = topic::validate_topic_name(&topic) {
            tracing::warn!("skipping line {number}: {e}");
            stats.skipped += 1;
            return None;
        }
    }
    match shaper.payload(&topic, &message) {
        Ok(payload) => {
            if let Err(e) = check_size(&topic, &payload) {
                // Not a malformed line but a message that cannot be sent:
                // it counts as failed, so the exit code says so.
                tracing::warn!("line {number} not sent: {e}");
                stats.sent += 1;
                stats.failed += 1;
                stats
                    .first_error
                    .get_or_insert(format!("line {number}: {e}"));
                return None;
            }
            stats.shaped += 1;
            Some(Publish::new(topic, payload, qos, args.retain))
        }
        Err(e) => {
            tracing::warn!("skipping line {number}: {:#}", e.error);
            stats.skipped += 1;
            None
        }
    }
}

#[derive(Default)]
struct StreamStats {
    /// Lines turned into publishes but not yet handed over (for numbering).
    shaped: u64,
    sent: u64,
    failed: u64,
    skipped: u64,
    first_error: Option<String>,
}

impl StreamStats {
    fn record(&mut self, result: Result<(), signalbox_common::mqtt::MqttError>) {
        if let Err(e) = result {
            self.failed += 1;
            if self.first_error.is_none() {
                self.first_error = Some(e.to_string());
            }
        }
    }
}

async fn stream_stdin(
    publisher: &Publisher,
    shaper: &Shaper,
    args: &PubArgs,
    qos: Qos,
    timeout: Duration,
) -> Result<StreamStats, CliError> {
    let mut stdin = BufReader::with_capacity(256 * 1024, tokio::io::stdin());
    let mut line = Vec::with_capacity(4096);
    let mut pending: VecDeque<Confirmation> = VecDeque::new();
    let mut batch: Vec<Publish> = Vec::with_capacity(BATCH);
    let mut stats = StreamStats::default();
    // QoS 0 has nothing to confirm: the connection writes the queue out
    // before it disconnects.
    let confirm = qos != Qos::AtMostOnce;
    let fixed_topic = args.topic.clone().unwrap_or_default();
    // SIGTERM or Ctrl-C: stop reading, and see what was read confirmed.
    let shutdown = signalbox_common::listener::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        line.clear();
        // read_until keeps reading however long the line is, and returns the
        // last line even without a trailing newline.
        let n = tokio::select! {
            read = stdin.read_until(b'\n', &mut line) => read.context("reading standard input")?,
            _ = &mut shutdown => {
                if !line.is_empty() {
                    tracing::warn!("stopping: an unfinished last line ({} bytes) is not sent", line.len());
                }
                tracing::warn!("stopping on a signal: the rest of the input is not read; waiting for the broker to confirm what was");
                line.clear();
                0
            }
        };
        if n > 0 {
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if line.is_empty() {
                stats.skipped += 1;
            } else if let Some(publish) =
                shape_line(&line, &fixed_topic, shaper, args, qos, &mut stats)
            {
                batch.push(publish);
            }
        }
        // Hand lines over in batches, and at once whenever the input has
        // nothing more buffered (so a slow producer's lines go out at once).
        if !batch.is_empty() && (n == 0 || batch.len() >= BATCH || stdin.buffer().is_empty()) {
            stats.shaped -= batch.len() as u64;
            stats.sent += batch.len() as u64;
            let confirmations = publisher
                .publish_batch(
                    std::mem::replace(&mut batch, Vec::with_capacity(BATCH)),
                    confirm,
                )
                .await
                .map_err(CliError::failure)?;
            pending.extend(confirmations);
            // Drop what is already confirmed, so memory follows the
            // in-flight window rather than the length of the input.
            while let Some(front) = pending.front_mut() {
                match front.try_result() {
                    Some(result) => {
                        stats.record(result);
                        pending.pop_front();
                    }
                    None => break,
                }
            }
        }
        if n == 0 {
            break;
        }
    }
    let deadline = Instant::now() + timeout;
    while let Some(confirmation) = pending.pop_front() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        stats.record(confirmation.wait(left).await);
    }
    Ok(stats)
}
