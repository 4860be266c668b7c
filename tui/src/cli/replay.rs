//! `signalbox replay FILE`: publish a recording (`signalbox record`)
//! again, byte for byte — envelope ids included, so listeners' de-duplication
//! and any signature inside a payload still hold.
//!
//! The file is checked whole before the first publish, so a bad line
//! stops the replay before anything was sent. Publishing keeps many QoS 1
//! messages in flight (as `signalbox pub --stdin` does) and exits 1 unless
//! the broker confirmed every one.

use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;
use signalbox_common::config::Config;
use signalbox_common::mqtt::{Confirmation, Publish, Qos};
use signalbox_common::topic;

use super::record::Recorded;
use super::{CliError, CliResult};

/// Publishes handed to the connection at once, without --rate.
const BATCH: usize = 256;
/// Largest recording line accepted (a payload of up to ~48 MiB in base64).
const MAX_LINE: usize = 64 * 1024 * 1024;

/// Flags of `signalbox replay`.
#[derive(Debug, Args)]
#[command(after_help = "\
Publishes every message of FILE (written by `signalbox record`) with its exact
payload bytes, retain flag and QoS, in file order. Ids are the ones inside the
payloads, so listeners that already handled a message skip it (de-duplication);
to make them handle it again, use `signalbox failed replay` instead. The whole
file is checked first: a bad line is an error naming it, and nothing is sent.

--to-topic-prefix P moves the messages under P: the configured prefix (--prefix,
default signalbox) at the start of a topic is replaced by P, and any other topic
gets P/ in front (the payload, and so the envelope's own topic field, is not
changed). Use it to replay into a sandbox that live listeners do not watch.

Exit codes: 0 every message confirmed (or --dry-run), 1 not confirmed, 2 a bad
file or flag.

Examples:
  signalbox replay incident.jsonl --dry-run
  signalbox replay incident.jsonl --to-topic-prefix sandbox --rate 100
  signalbox --broker mqtt://staging:1883 replay koji.jsonl")]
pub struct ReplayArgs {
    /// The recording (- for standard input)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Messages per second [default: as fast as the broker confirms]
    #[arg(long, value_name = "N")]
    rate: Option<f64>,
    /// Publish under this topic prefix instead of the recorded one
    #[arg(long, value_name = "P")]
    to_topic_prefix: Option<String>,
    /// Print what would be published (topic, bytes, retain, qos), publish nothing
    #[arg(long)]
    dry_run: bool,
    /// Seconds to wait for the broker's confirmations at the end
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    timeout: f64,
}

/// Reads and checks a whole recording; the error names the bad line.
pub fn read_recording(path: &Path) -> Result<Vec<Recorded>, CliError> {
    let source: Box<dyn std::io::Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open {}", path.display()))
            .map_err(CliError::usage)?;
        Box::new(file)
    };
    // Limited per line, so one huge line cannot exhaust memory.
    let mut reader = std::io::BufReader::with_capacity(256 * 1024, source.take(0));
    let mut messages = Vec::new();
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        reader.get_mut().set_limit(MAX_LINE as u64 + 1);
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("{}: line {}", path.display(), number + 1))
            .map_err(CliError::usage)?;
        if n == 0 {
            break;
        }
        number += 1;
        if n > MAX_LINE {
            return Err(CliError::usage(anyhow!(
                "{}: line {number} is longer than {MAX_LINE} bytes",
                path.display()
            )));
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        let recorded = Recorded::parse_line(text)
            .map_err(|e| CliError::usage(anyhow!("{}: line {number}: {e}", path.display())))?;
        messages.push(recorded);
    }
    Ok(messages)
}

/// The topic a message is replayed on.
pub fn retarget(topic_name: &str, config_prefix: &str, to: Option<&str>) -> String {
    let Some(to) = to else {
        return topic_name.to_string();
    };
    match topic_name
        .strip_prefix(config_prefix)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    {
        Some(rest) => format!("{to}{rest}"),
        None => format!("{to}/{topic_name}"),
    }
}

/// Runs `signalbox replay`.
pub async fn run(config: &Config, args: ReplayArgs) -> CliResult {
    if let Some(p) = &args.to_topic_prefix {
        let ok = !p.is_empty()
            && !p.starts_with('/')
            && !p.ends_with('/')
            && topic::validate_topic_name(p).is_ok();
        if !ok {
            return Err(CliError::usage(anyhow!(
                "invalid --to-topic-prefix {p:?}: one or more topic levels without wildcards, no leading or trailing /"
            )));
        }
    }
    let pace = match args.rate {
        Some(r) if !r.is_finite() || r <= 0.0 || r > 1_000_000.0 => {
            return Err(CliError::usage(anyhow!(
                "--rate must be a number of messages per second between 0 and 1000000"
            )))
        }
        Some(r) => Some(Duration::from_secs_f64(1.0 / r)),
        None => None,
    };
    let timeout = super::positive_seconds("--timeout", args.timeout)?;
    let file = args.file.clone();
    let messages = tokio::task::spawn_blocking(move || read_recording(&file))
        .await
        .map_err(|e| CliError::failure(anyhow!("reading the recording: {e}")))??;
    let publishes: Vec<Publish> = messages
        .into_iter()
        .map(|m| {
            let mut p = Publish::new(
                retarget(
                    &m.topic,
                    &config.prefix.value,
                    args.to_topic_prefix.as_deref(),
                ),
                m.payload,
                m.qos,
                m.retain,
            );
            p.response_topic = m.response_topic;
            p.correlation = m.correlation;
            p
        })
        .collect();
    if args.dry_run {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for p in &publishes {
            let retained = if p.retain { " retain" } else { "" };
            writeln!(
                out,
                "{} ({} bytes, qos {}{retained})",
                p.topic,
                p.payload.len(),
                p.qos.as_u8()
            )
            .context("writing to standard output")?;
        }
        out.flush().context("writing to standard output")?;
        eprintln!("dry run: {} messages would be published", publishes.len());
        return Ok(ExitCode::SUCCESS);
    }
    let total = publishes.len();
    let conn = super::connect(config, "replay", |o| o.inflight = 1000).await?;
    let publisher = conn.publisher();
    let mut pending: VecDeque<Confirmation> = VecDeque::new();
    let mut failed = 0usize;
    let mut first_error = None;
    let mut note = |result: Result<(), signalbox_common::mqtt::MqttError>| {
        if let Err(e) = result {
            failed += 1;
            first_error.get_or_insert_with(|| e.to_string());
        }
    };
    let started = tokio::time::Instant::now();
    let mut iter = publishes.into_iter().enumerate();
    loop {
        let batch: Vec<Publish> = match pace {
            Some(gap) => match iter.next() {
                Some((i, p)) => {
                    // Paced from the start, so the rate does not drift.
                    let at = started + gap.mul_f64(i as f64);
                    tokio::time::sleep_until(at).await;
                    vec![p]
                }
                None => Vec::new(),
            },
            None => iter.by_ref().take(BATCH).map(|(_, p)| p).collect(),
        };
        if batch.is_empty() {
            break;
        }
        let confirm: Vec<bool> = batch.iter().map(|p| p.qos != Qos::AtMostOnce).collect();
        // QoS 0 messages have nothing to confirm; send them in their own
        // batches so that confirmations line up with QoS 1 ones.
        let (acked, fire): (Vec<_>, Vec<_>) = batch.into_iter().zip(confirm).partition(|(_, c)| *c);
        if !fire.is_empty() {
            publisher
                .publish_batch(fire.into_iter().map(|(p, _)| p).collect(), false)
                .await
                .map_err(CliError::failure)?;
        }
        if !acked.is_empty() {
            let confirmations = publisher
                .publish_batch(acked.into_iter().map(|(p, _)| p).collect(), true)
                .await
                .map_err(CliError::failure)?;
            pending.extend(confirmations);
        }
        while let Some(front) = pending.front_mut() {
            match front.try_result() {
                Some(result) => {
                    note(result);
                    pending.pop_front();
                }
                None => break,
            }
        }
    }
    let deadline = Instant::now() + timeout;
    while let Some(confirmation) = pending.pop_front() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        note(confirmation.wait(left).await);
    }
    conn.disconnect().await;
    if failed > 0 {
        return Err(CliError::failure(anyhow!(
            "{failed} of {total} messages were not confirmed by the broker ({})",
            first_error.unwrap_or_default()
        )));
    }
    eprintln!("replayed {total} messages");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retarget_replaces_the_prefix_or_prepends() {
        assert_eq!(
            retarget("signalbox/prod/git/x", "signalbox", None),
            "signalbox/prod/git/x"
        );
        assert_eq!(
            retarget("signalbox/prod/git/x", "signalbox", Some("sandbox")),
            "sandbox/prod/git/x"
        );
        assert_eq!(
            retarget("signalboxes/a", "signalbox", Some("s")),
            "s/signalboxes/a"
        );
        assert_eq!(
            retarget("sensor/t", "signalbox", Some("s/x")),
            "s/x/sensor/t"
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(
            &path,
            "{\"topic\":\"a\",\"payload\":\"x\"}\n\n{\"topic\":\"a\"}\n",
        )
        .unwrap();
        let e = read_recording(&path).err().unwrap();
        let text = format!("{:#}", e.error);
        assert!(text.contains("line 3: no payload"), "{text}");
        std::fs::write(&path, "{\"topic\":\"a\",\"payload\":\"x\"}\r\n").unwrap();
        assert_eq!(read_recording(&path).ok().unwrap().len(), 1);
    }
}
