//! Finding listeners and their failure records on any broker: subscribe,
//! `_ping`, collect for a moment, then read each roster name's health by its
//! exact topic (some brokers do not deliver retained messages to wildcard
//! subscriptions, and a dead listener answers no ping).

use std::collections::BTreeMap;
use std::time::Duration;

use signalbox_common::config::Config;
use signalbox_common::failed::FailureRecord;
use signalbox_common::health::HealthReport;
use signalbox_common::mqtt::{Connection, Publish, Qos};
use signalbox_common::topic::{self, Reserved};

use super::CliError;

/// Time allowed for subscriptions to be acknowledged.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What was found.
#[derive(Default)]
pub struct Discovery {
    /// Health reports by listener name; `Err` holds why a payload was not a
    /// valid report.
    pub health: BTreeMap<String, Result<HealthReport, String>>,
    /// The roster, when one was received.
    pub roster: Option<Vec<String>>,
    /// Failure records by (listener, id); `Err` for invalid payloads.
    pub failed: BTreeMap<(String, String), Result<FailureRecord, String>>,
}

/// What to collect.
pub struct Wanted<'a> {
    /// Health reports and the roster.
    pub health: bool,
    /// Failure records, of one listener or all.
    pub failed: Option<Option<&'a str>>,
}

/// Connects, subscribes, pings and collects for `wait`.
pub async fn discover(
    conn: &mut Connection,
    config: &Config,
    wanted: Wanted<'_>,
    wait: Duration,
) -> Result<Discovery, CliError> {
    let prefix = &config.prefix.value;
    let mut filters = Vec::new();
    if wanted.health {
        filters.push((topic::health_filter(prefix), Qos::AtLeastOnce));
        filters.push((topic::roster_topic(prefix), Qos::AtLeastOnce));
    }
    if let Some(listener) = wanted.failed {
        filters.push((topic::failed_filter(prefix, listener), Qos::AtLeastOnce));
    }
    conn.subscribe(&filters, SUBSCRIBE_TIMEOUT)
        .await
        .map_err(CliError::failure)?;
    conn.publish_confirmed(
        Publish::new(
            topic::ping_topic(prefix),
            Vec::new(),
            Qos::AtLeastOnce,
            false,
        ),
        SUBSCRIBE_TIMEOUT,
    )
    .await
    .map_err(CliError::failure)?;
    let mut found = Discovery::default();
    collect(conn, prefix, &mut found, wait).await;
    if wanted.health {
        // Roster names without a report yet: read their exact topics.
        let missing: Vec<(String, Qos)> = found
            .roster
            .iter()
            .flatten()
            .filter(|name| !found.health.contains_key(*name))
            .map(|name| (topic::health_topic(prefix, name), Qos::AtLeastOnce))
            .collect();
        if !missing.is_empty() {
            conn.subscribe(&missing, SUBSCRIBE_TIMEOUT)
                .await
                .map_err(CliError::failure)?;
            collect(
                conn,
                prefix,
                &mut found,
                wait.min(Duration::from_millis(500)),
            )
            .await;
        }
    }
    Ok(found)
}

async fn collect(conn: &mut Connection, prefix: &str, found: &mut Discovery, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, conn.recv()).await {
        match topic::classify(prefix, &message.topic) {
            Some(Reserved::Health { listener }) => {
                if message.payload.is_empty() {
                    found.health.remove(&listener);
                } else {
                    let report =
                        HealthReport::from_slice(&message.payload).map_err(|e| e.to_string());
                    found.health.insert(listener, report);
                }
            }
            Some(Reserved::Roster) => {
                found.roster = serde_json::from_slice::<Vec<String>>(&message.payload).ok();
            }
            Some(Reserved::Failed { listener, id }) => {
                let key = (listener, id);
                if message.payload.is_empty() {
                    found.failed.remove(&key);
                } else {
                    let record =
                        FailureRecord::from_slice(&message.payload).map_err(|e| e.to_string());
                    found.failed.insert(key, record);
                }
            }
            _ => {}
        }
    }
}

/// A short human age: `4s`, `3m`, `2h`, `5d`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Cuts `text` to `max` characters with an ellipsis.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        text.chars()
            .take(max.saturating_sub(1))
            .chain(['…'])
            .collect()
    }
}
