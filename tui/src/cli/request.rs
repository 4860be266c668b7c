//! `signalbox request`: the client/server exchange. Publishes an envelope
//! with a reply topic (envelope `reply_to`; on MQTT 5 also the Response
//! Topic and Correlation Data properties) and prints the first reply.

use std::process::ExitCode;

use anyhow::anyhow;
use clap::Args;
use signalbox_common::config::Config;
use signalbox_common::envelope::{Envelope, Payload};
use signalbox_common::mqtt::{Publish, Qos};
use signalbox_common::topic;

use super::{CliError, CliResult};

/// Flags of `signalbox request`.
#[derive(Debug, Args)]
#[command(after_help = "\
A listener whose handler returns a reply (e.g. `signalbox-bridge exec --reply`)
answers on the reply topic. Exit 0 with the reply printed, 1 on timeout.

Examples:
  signalbox request signalbox/dev/koji/build/status 'status of build 88123?' --body '{\"build\":88123}'
  signalbox request --json signalbox/dev/pkgdb/owner/query kernel")]
pub struct RequestArgs {
    /// Topic of the request (no wildcards)
    #[arg(value_name = "TOPIC")]
    topic: String,
    /// The request's summary
    #[arg(value_name = "MESSAGE", default_value = "request")]
    message: String,
    /// JSON for the envelope's body
    #[arg(long, value_name = "JSON")]
    body: Option<String>,
    /// Seconds to wait for the reply
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    timeout: f64,
    /// Print the reply as JSON (envelope object, JSON, or string)
    #[arg(long)]
    json: bool,
}

/// Runs `signalbox request`.
pub async fn run(config: &Config, args: RequestArgs) -> CliResult {
    topic::validate_topic_name(&args.topic).map_err(CliError::usage)?;
    let timeout = super::positive_seconds("--timeout", args.timeout)?;
    let body = match &args.body {
        Some(text) => Some(
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| CliError::usage(anyhow!("--body is not valid JSON: {e}")))?,
        ),
        None => None,
    };
    let id = uuid::Uuid::now_v7();
    let reply_topic = topic::build(
        &config.prefix.value,
        &config.env.value,
        "cli",
        &["replies"],
        &id.to_string(),
    );
    let mut builder = Envelope::builder(args.topic.clone(), args.message.clone())
        .id(id)
        .bridge("cli")
        .reply_to(reply_topic.clone());
    if let Some(user) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        builder = builder.agent(user.clone()).user(user);
    }
    if let Some(body) = body {
        builder = builder.body(body);
    }
    let envelope = builder.build().map_err(CliError::usage)?;
    let mut conn = super::connect(config, "request", |_| {}).await?;
    conn.subscribe(&[(reply_topic.clone(), Qos::AtLeastOnce)], timeout)
        .await
        .map_err(CliError::failure)?;
    let mut publish = Publish::new(
        args.topic.clone(),
        envelope.to_vec(),
        Qos::AtLeastOnce,
        false,
    );
    publish.response_topic = Some(reply_topic.clone());
    publish.correlation = Some(id.to_string().into_bytes().into());
    conn.publish_confirmed(publish, timeout)
        .await
        .map_err(CliError::failure)?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, conn.recv()).await else {
            conn.disconnect().await;
            return Err(CliError::failure(anyhow!(
                "no reply on {reply_topic} within {:.1} s",
                args.timeout
            )));
        };
        if message.topic != reply_topic {
            continue;
        }
        let payload = Payload::decode(&message.payload);
        if args.json {
            let value = match &payload {
                Payload::Envelope(e) => serde_json::to_value(e).unwrap_or_default(),
                Payload::Json(v) => v.clone(),
                other => serde_json::Value::String(other.summary_line(usize::MAX)),
            };
            println!("{value}");
        } else {
            match &payload {
                Payload::Text(t) => print!("{t}{}", if t.ends_with('\n') { "" } else { "\n" }),
                other => println!("{}", other.summary_line(10_000)),
            }
        }
        conn.disconnect().await;
        return Ok(ExitCode::SUCCESS);
    }
}
