//! A listener in Rust on the signalbox runtime: reacts to commits by
//! updating a bug tracker (here: appending to a file).
//!
//! Run: cargo run -p signalbox-common --example listener -- /tmp/tracker.log
//! (with a broker at SIGNALBOX_BROKER, e.g. `signalbox broker`).

use signalbox_common::config::{Config, Overrides};
use signalbox_common::listener::{self, Delivery, ListenerOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let log = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tracker.log".into());
    let config = Config::resolve(&Overrides::default())?;
    let filter = format!("{}/{}/git/#", config.prefix.value, config.env.value);
    let options = ListenerOptions::new("bug-updater", vec![filter], &config);
    let summary = listener::run(
        &config,
        options,
        move |d: Delivery| {
            let log = log.clone();
            async move {
                // Not an envelope: nothing to do (and nothing to retry).
                let Some(commit) = d.envelope() else {
                    return Ok(None);
                };
                // An Err is retried, then kept as a failure record.
                update_tracker(&log, &commit.summary)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(None)
            }
        },
        listener::shutdown_signal(),
    )
    .await?;
    eprintln!("stopped after {} messages", summary.counters.processed);
    Ok(())
}

async fn update_tracker(log: &str, line: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .await?;
    f.write_all(format!("{line}\n").as_bytes()).await
}
