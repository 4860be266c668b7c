//! `signalbox record FILE`: write the messages of the bus to a file, one
//! JSON object per line, with their exact payload bytes — and the format
//! itself, which `signalbox replay` reads back.
//!
//! One line per message:
//! `{"topic":…, "payload":"<UTF-8 text>" | "payload_base64":"…", "retain":…,
//! "qos":…, "received":"<RFC 3339>", "id":"<envelope id>",
//! "response_topic":…, "correlation_base64":…}`.
//! A payload that is valid UTF-8 is kept as a JSON string (JSON escapes
//! carry every byte of it exactly); anything else is base64. `id` is
//! informational (it is inside the payload); the MQTT 5 properties appear
//! only when the message had them.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::{Deserialize, Serialize};
use signalbox_common::config::Config;
use signalbox_common::envelope::{format_time, Payload};
use signalbox_common::mqtt::{Message, Qos};
use signalbox_common::topic;

use super::{CliError, CliResult};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Flags of `signalbox record`.
#[derive(Debug, Args)]
#[command(after_help = "\
Writes one JSON object per line: topic, payload (the exact bytes: a string when
they are UTF-8, else payload_base64), retain (delivered from the broker's
retained store), qos, received (arrival time), id (the envelope's, if any), and
the MQTT 5 response_topic / correlation_base64 when present. Runs until --count
messages, --timeout, or Ctrl-C / SIGTERM; the file is flushed and synced either
way. `signalbox replay FILE` publishes it again.

Examples:
  signalbox record incident.jsonl --count 1000
  signalbox record koji.jsonl 'signalbox/prod/koji/#' --timeout 3600
  signalbox record - --count 5 | jq .topic")]
pub struct RecordArgs {
    /// The file to write (- for standard output)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Topic filters (MQTT wildcards + and #) [default: PREFIX/#]
    #[arg(value_name = "FILTER")]
    filters: Vec<String>,
    /// Stop after N messages
    #[arg(long, short = 'n', value_name = "N")]
    count: Option<u64>,
    /// Stop after SECS seconds
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Skip retained messages (the broker's stored state)
    #[arg(long)]
    no_retained: bool,
    /// Append to FILE instead of replacing it
    #[arg(long)]
    append: bool,
}

/// One line of a recording, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
    #[serde(default)]
    retain: bool,
    #[serde(default = "default_qos")]
    qos: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    received: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_base64: Option<String>,
}

fn default_qos() -> u8 {
    1
}

/// A recorded message, decoded: what `signalbox replay` publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The topic it was published to.
    pub topic: String,
    /// The exact payload bytes.
    pub payload: Bytes,
    /// Whether it came from the retained store (replayed retained).
    pub retain: bool,
    /// The QoS it was delivered with.
    pub qos: Qos,
    /// When it arrived, if recorded.
    pub received: Option<DateTime<Utc>>,
    /// MQTT 5 response topic.
    pub response_topic: Option<String>,
    /// MQTT 5 correlation data.
    pub correlation: Option<Bytes>,
}

impl Recorded {
    /// The recording of a received message.
    pub fn from_message(message: &Message, received: DateTime<Utc>) -> Recorded {
        Recorded {
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            retain: message.retain,
            qos: message.qos,
            received: Some(received),
            response_topic: message.response_topic.clone(),
            correlation: message.correlation.clone(),
        }
    }

    /// One JSON line (without the newline).
    pub fn to_line(&self) -> String {
        let (payload, payload_base64) = match std::str::from_utf8(&self.payload) {
            Ok(text) => (Some(text.to_string()), None),
            Err(_) => (None, Some(B64.encode(&self.payload))),
        };
        let id = Payload::decode(&self.payload)
            .envelope()
            .map(|e| e.id.to_string());
        let line = Line {
            topic: self.topic.clone(),
            payload,
            payload_base64,
            retain: self.retain,
            qos: self.qos.as_u8(),
            received: self.received.as_ref().map(format_time),
            id,
            response_topic: self.response_topic.clone(),
            correlation_base64: self.correlation.as_ref().map(|c| B64.encode(c)),
        };
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// Parses one line; the error says what is wrong, in one line.
    pub fn parse_line(text: &str) -> Result<Recorded, String> {
        let line: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
        topic::validate_topic_name(&line.topic).map_err(|e| format!("topic: {e}"))?;
        let payload = match (line.payload, line.payload_base64) {
            (Some(text), None) => Bytes::from(text.into_bytes()),
            (None, Some(b64)) => Bytes::from(
                B64.decode(b64.as_bytes())
                    .map_err(|e| format!("payload_base64: {e}"))?,
            ),
            (None, None) => return Err("no payload or payload_base64".into()),
            (Some(_), Some(_)) => return Err("both payload and payload_base64".into()),
        };
        let qos = match line.qos {
            0 => Qos::AtMostOnce,
            1 | 2 => Qos::AtLeastOnce,
            n => return Err(format!("qos {n}: use 0, 1 or 2")),
        };
        let received = match line.received {
            Some(t) => Some(
                DateTime::parse_from_rfc3339(&t)
                    .map_err(|e| format!("received {t:?}: {e}"))?
                    .with_timezone(&Utc),
            ),
            None => None,
        };
        if let Some(t) = &line.response_topic {
            topic::validate_topic_name(t).map_err(|e| format!("response_topic: {e}"))?;
        }
        let correlation = match line.correlation_base64 {
            Some(c) => Some(Bytes::from(
                B64.decode(c.as_bytes())
                    .map_err(|e| format!("correlation_base64: {e}"))?,
            )),
            None => None,
        };
        Ok(Recorded {
            topic: line.topic,
            payload,
            retain: line.retain,
            qos,
            received,
            response_topic: line.response_topic,
            correlation,
        })
    }
}

/// A payload for JSON output (`history --json`): its kind and the
/// envelope or JSON as an object, text as a string, binary as base64.
pub fn payload_json(bytes: &[u8]) -> (&'static str, serde_json::Value) {
    let payload = Payload::decode(bytes);
    let kind = payload.kind();
    let value = match payload {
        Payload::Envelope(e) => serde_json::to_value(&*e).unwrap_or(serde_json::Value::Null),
        Payload::Json(v) => v,
        Payload::Text(t) => serde_json::Value::String(t),
        Payload::Binary(b) => serde_json::Value::String(B64.encode(b)),
    };
    (kind, value)
}

/// Runs `signalbox record`.
pub async fn run(config: &Config, args: RecordArgs) -> CliResult {
    let filters = super::filters_or_prefix(config, &args.filters)?;
    let timeout = super::optional_seconds("--timeout", args.timeout)?;
    let to_stdout = args.file.as_os_str() == "-";
    let (mut out, file): (Box<dyn Write>, Option<std::fs::File>) = if to_stdout {
        (Box::new(std::io::stdout().lock()), None)
    } else {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(args.append)
            .truncate(!args.append)
            .open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))
            .map_err(CliError::usage)?;
        let writer = file.try_clone().map_err(CliError::failure)?;
        (
            Box::new(std::io::BufWriter::with_capacity(256 * 1024, writer)),
            Some(file),
        )
    };
    if args.count == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    let mut conn = super::connect(config, "record", |_| {}).await?;
    // QoS 1 so that each message keeps the QoS it was published with.
    let subs: Vec<(String, Qos)> = filters
        .iter()
        .map(|f| (f.clone(), Qos::AtLeastOnce))
        .collect();
    conn.subscribe(&subs, Duration::from_secs(10))
        .await
        .map_err(CliError::failure)?;
    eprintln!(
        "recording {} to {} (Ctrl-C to stop)",
        filters.join(" "),
        args.file.display()
    );
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut stop = std::pin::pin!(signalbox_common::listener::shutdown_signal());
    let mut written: u64 = 0;
    let mut closed = false;
    'outer: loop {
        let next = tokio::select! {
            _ = &mut stop => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            m = conn.recv() => m,
        };
        let Some(mut message) = next else {
            closed = true;
            break;
        };
        loop {
            if !(args.no_retained && message.retain) {
                let line = Recorded::from_message(&message, Utc::now()).to_line();
                out.write_all(line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                    .context("writing the recording")?;
                written += 1;
                if args.count.is_some_and(|n| written >= n) {
                    break 'outer;
                }
            }
            match conn.try_recv() {
                Some(m) => message = m,
                None => break,
            }
        }
        out.flush().context("writing the recording")?;
    }
    out.flush().context("writing the recording")?;
    drop(out);
    if let Some(file) = file {
        file.sync_all().context("syncing the recording")?;
    }
    conn.disconnect().await;
    if !to_stdout {
        eprintln!("recorded {written} messages to {}", args.file.display());
    }
    if closed {
        return Err(CliError::failure(anyhow!(
            "the connection to the broker closed after {written} messages"
        )));
    }
    match args.count {
        Some(n) if written < n => Err(CliError::failure(anyhow!(
            "stopped after {written} of {n} messages"
        ))),
        _ => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn recorded(payload: &[u8]) -> Recorded {
        Recorded {
            topic: "signalbox/dev/a/b".into(),
            payload: Bytes::copy_from_slice(payload),
            retain: true,
            qos: Qos::AtLeastOnce,
            received: Some(Utc::now()),
            response_topic: Some("reply/here".into()),
            correlation: Some(Bytes::from_static(b"\x00\x01")),
        }
    }

    #[test]
    fn text_stays_readable_and_binary_is_base64() {
        let line = recorded(b"hello \"bus\"\n").to_line();
        assert!(line.contains(r#""payload":"hello \"bus\"\n""#), "{line}");
        let line = recorded(&[0xff, 0x00, 0x10]).to_line();
        assert!(line.contains(r#""payload_base64":"/wAQ""#), "{line}");
    }

    #[test]
    fn bad_lines_are_explained() {
        for (text, needle) in [
            ("", "EOF"),
            ("{}", "missing field `topic`"),
            (r#"{"topic":"a/#","payload":""}"#, "topic"),
            (r#"{"topic":"a"}"#, "no payload"),
            (
                r#"{"topic":"a","payload":"x","payload_base64":"eA=="}"#,
                "both",
            ),
            (r#"{"topic":"a","payload_base64":"!!"}"#, "payload_base64"),
            (r#"{"topic":"a","payload":"x","qos":7}"#, "qos 7"),
            (
                r#"{"topic":"a","payload":"x","received":"then"}"#,
                "received",
            ),
            (r#"{"topic":"a","payload":"x","extra":1}"#, "unknown field"),
        ] {
            let e = Recorded::parse_line(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
    }

    proptest! {
        #[test]
        fn any_message_round_trips_byte_for_byte(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            retain in any::<bool>(),
            qos0 in any::<bool>(),
            correlation in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        ) {
            let mut r = recorded(&payload);
            r.retain = retain;
            r.qos = if qos0 { Qos::AtMostOnce } else { Qos::AtLeastOnce };
            r.correlation = correlation.map(Bytes::from);
            r.received = r.received.map(|t| DateTime::parse_from_rfc3339(&format_time(&t)).unwrap().with_timezone(&Utc));
            let line = r.to_line();
            prop_assert!(!line.contains('\n'));
            prop_assert_eq!(Recorded::parse_line(&line).unwrap(), r);
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,200}") {
            let _ = Recorded::parse_line(&text);
        }

        #[test]
        fn parsing_json_shaped_garbage_never_panics(
            topic_name in "\\PC{0,20}", payload in "\\PC{0,20}", qos in any::<u8>(), b64 in "[A-Za-z0-9+/=]{0,12}"
        ) {
            let line = serde_json::json!({"topic": topic_name, "payload_base64": b64, "qos": qos}).to_string();
            let _ = Recorded::parse_line(&line);
            let line = serde_json::json!({"topic": topic_name, "payload": payload, "received": b64}).to_string();
            let _ = Recorded::parse_line(&line);
        }
    }
}
