//! What the email, feed and webhook listeners share: their common flags,
//! the rendering of a message for people (mail bodies, feed entries), and
//! the way a listener daemon is started and its errors mapped to exit codes.

use std::future::Future;

use clap::Args;
use signalbox_common::config::Config;
use signalbox_common::envelope::{format_time, Payload};
use signalbox_common::listener::{self, Delivery, HandlerResult, ListenerOptions};

use crate::cli::{BridgeError, GlobalArgs};

/// Most bytes of a payload that is not an envelope shown to a person.
const RAW_EXCERPT: usize = 4096;

/// Flags every outbound listener takes.
#[derive(Debug, Args)]
pub struct ListenerFlags {
    /// Listener name (health, failure records, replay)
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Topic filter to handle (repeatable)
    #[arg(long = "filter", value_name = "FILTER", required = true)]
    pub filters: Vec<String>,
    /// Tries per message before a failure record
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,
    /// Replays stop after this many failed attempts
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_attempts: u32,
    /// Share the work with other instances ($share/GROUP/…)
    #[arg(long, value_name = "GROUP")]
    pub share_group: Option<String>,
    /// Seconds between health reports [env: SIGNALBOX_HEALTH_INTERVAL] [default: 10]
    #[arg(long, value_name = "SECS")]
    pub health_interval: Option<u64>,
}

impl ListenerFlags {
    /// The effective configuration and the listener's options; a bad
    /// configuration is a usage error (exit 2).
    pub fn resolve(&self, global: &GlobalArgs) -> Result<(Config, ListenerOptions), BridgeError> {
        let mut overrides = global.overrides();
        overrides.health_interval = self.health_interval;
        let config = Config::resolve(&overrides).map_err(BridgeError::usage)?;
        let mut options = ListenerOptions::new(&self.name, self.filters.clone(), &config);
        options.retries = self.retries.max(1);
        options.max_attempts = self.max_attempts.max(1);
        options.share_group = self.share_group.clone();
        Ok((config, options))
    }
}

/// The runtime of a listener daemon (two workers: the work is sequential).
pub fn tokio_runtime() -> Result<tokio::runtime::Runtime, BridgeError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BridgeError::failure)
}

/// Runs the listener until SIGTERM/SIGINT; a bad name or filter is a usage
/// error (exit 2), a connection that cannot be set up a failure (exit 1).
pub async fn listen<H, Fut>(
    config: &Config,
    options: ListenerOptions,
    handler: H,
) -> Result<(), BridgeError>
where
    H: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    listener::run(config, options, handler, listener::shutdown_signal())
        .await
        .map(|_| ())
        .map_err(|e| match e {
            listener::ListenerError::Mqtt(_) => BridgeError::failure(e),
            other => BridgeError::usage(other),
        })
}

/// A message rendered for a person: a mail body, a feed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line: the envelope's summary, or the start of a raw payload.
    pub summary: String,
    /// The main link (`links.url`, else the first link), if any.
    pub link: Option<String>,
    /// The readable text: topic, time, severity, source, links, body.
    pub text: String,
}

/// Renders a delivery for people; never fails (a foreign payload is shown
/// as text, or as hex when it is binary).
pub fn render(d: &Delivery) -> Rendered {
    let summary = d.summary();
    let mut text = String::new();
    let mut link = None;
    match d.decoded.as_ref() {
        Payload::Envelope(e) => {
            text.push_str(&e.summary);
            text.push_str("\n\n");
            text.push_str(&format!("Topic:     {}\n", d.topic));
            text.push_str(&format!("Time:      {}\n", format_time(&e.time)));
            text.push_str(&format!("Severity:  {}\n", e.severity.as_str()));
            let mut source = e.source.bridge.clone();
            if let Some(host) = &e.source.host {
                source.push_str(&format!(" on {host}"));
            }
            if let Some(user) = &e.source.user {
                source.push_str(&format!(" as {user}"));
            }
            text.push_str(&format!("Source:    {source}\n"));
            if let Some(agent) = &e.agent {
                text.push_str(&format!("Agent:     {agent}\n"));
            }
            if !e.links.is_empty() {
                text.push_str("\nLinks:\n");
                for (name, target) in &e.links {
                    text.push_str(&format!("  {name}: {target}\n"));
                }
                link = e
                    .links
                    .get("url")
                    .or_else(|| e.links.values().next())
                    .cloned();
            }
            if !e.body.is_null() && e.body != serde_json::json!({}) {
                text.push_str("\nDetails:\n");
                let pretty = serde_json::to_string_pretty(&e.body).unwrap_or_default();
                for line in pretty.lines() {
                    text.push_str("  ");
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        _ => {
            text.push_str(&format!("Topic:     {}\n\n", d.topic));
            let shown = &d.payload[..d.payload.len().min(RAW_EXCERPT)];
            match std::str::from_utf8(shown) {
                Ok(s) => text.push_str(s),
                Err(_) => {
                    for chunk in shown.chunks(32) {
                        let line: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                        text.push_str(&line.join(" "));
                        text.push('\n');
                    }
                }
            }
            if d.payload.len() > RAW_EXCERPT {
                text.push_str(&format!(
                    "\n[… {} more bytes]\n",
                    d.payload.len() - RAW_EXCERPT
                ));
            }
        }
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("\nMessage id: {}\n", d.id));
    Rendered {
        summary,
        link,
        text,
    }
}
