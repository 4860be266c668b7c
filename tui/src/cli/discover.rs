//! Finding listeners and their failure records on any broker: subscribe,
//! `_ping`, collect for a moment, then read each roster name's health by its
//! exact topic (some brokers do not deliver retained messages to wildcard
//! subscriptions, and a dead listener answers no ping).

use std::collections::BTreeMap;
use std::time::Duration;

use signalbox_common::config::Config;
use signalbox_common::failed::{self, FailureRecord};
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
    /// Retained state that the wildcard subscriptions did not deliver but an
    /// exact-topic read did: the broker does not deliver retained messages
    /// to wildcard subscriptions (RabbitMQ's MQTT plugin).
    pub wildcard_missed_retained: bool,
}

/// What `signalbox` says, once, when [`Discovery::wildcard_missed_retained`].
pub const WILDCARD_NOTE: &str = "note: broker does not deliver retained messages to wildcard subscriptions (RabbitMQ's MQTT plugin does not): reading each listener by its exact topic";

/// Most exact topics subscribed to in one SUBSCRIBE packet.
const EXACT_CHUNK: usize = 100;

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
    }
    // The roster names the listeners whose state is read by exact topic
    // (health reports, and the index of failure records).
    filters.push((topic::roster_topic(prefix), Qos::AtLeastOnce));
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
    let mut indexes = BTreeMap::new();
    collect(conn, prefix, &mut found, &mut indexes, wait, false).await;
    let exact_wait = wait.min(Duration::from_millis(500));
    let roster: Vec<String> = found.roster.clone().unwrap_or_default();
    if wanted.health {
        // Roster names without a report yet: read their exact topics.
        let missing: Vec<String> = roster
            .iter()
            .filter(|name| !found.health.contains_key(*name))
            .map(|name| topic::health_topic(prefix, name))
            .collect();
        read_exact(conn, prefix, &mut found, &mut indexes, missing, exact_wait).await?;
    }
    if let Some(only) = wanted.failed {
        // Listeners that answered no ping (dead, or stopped) keep their
        // records, which a broker that does not deliver retained messages to
        // wildcards hides: read each one's index, then each listed record,
        // by exact topic.
        let names: Vec<&String> = roster
            .iter()
            .filter(|name| only.is_none_or(|l| l == name.as_str()))
            .collect();
        let index_topics = names
            .iter()
            .map(|name| topic::failed_index_topic(prefix, name))
            .collect();
        read_exact(
            conn,
            prefix,
            &mut found,
            &mut indexes,
            index_topics,
            exact_wait,
        )
        .await?;
        let records: Vec<String> = indexes
            .iter()
            .flat_map(|(listener, ids)| ids.iter().map(move |id| (listener, id)))
            .filter(|(listener, id)| {
                !found
                    .failed
                    .contains_key(&((*listener).clone(), (*id).clone()))
            })
            .map(|(listener, id)| topic::failed_topic(prefix, listener, id))
            .collect();
        read_exact(conn, prefix, &mut found, &mut indexes, records, exact_wait).await?;
    }
    Ok(found)
}

/// Subscribes to `topics` (exact topics, in chunks) and collects what
/// comes for `wait`; retained messages that arrive this way are marked
/// as missed by the wildcards.
async fn read_exact(
    conn: &mut Connection,
    prefix: &str,
    found: &mut Discovery,
    indexes: &mut BTreeMap<String, Vec<String>>,
    topics: Vec<String>,
    wait: Duration,
) -> Result<(), CliError> {
    if topics.is_empty() {
        return Ok(());
    }
    for chunk in topics.chunks(EXACT_CHUNK) {
        let filters: Vec<(String, Qos)> = chunk
            .iter()
            .map(|t| (t.clone(), Qos::AtLeastOnce))
            .collect();
        conn.subscribe(&filters, SUBSCRIBE_TIMEOUT)
            .await
            .map_err(CliError::failure)?;
    }
    collect(conn, prefix, found, indexes, wait, true).await;
    Ok(())
}

/// Collects for `wait`. `exact` marks the read of exact topics after the
/// wildcards had their chance: a retained health report or failure record
/// that arrives then was not delivered to the wildcard subscription.
async fn collect(
    conn: &mut Connection,
    prefix: &str,
    found: &mut Discovery,
    indexes: &mut BTreeMap<String, Vec<String>>,
    wait: Duration,
    exact: bool,
) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, conn.recv()).await {
        let missed = exact && message.retain && !message.payload.is_empty();
        if let Some(listener) = topic::failed_index_listener(prefix, &message.topic) {
            if let Ok(ids) = failed::parse_index(&message.payload) {
                indexes.insert(listener, ids);
            }
            continue;
        }
        match topic::classify(prefix, &message.topic) {
            Some(Reserved::Health { listener }) => {
                if message.payload.is_empty() {
                    found.health.remove(&listener);
                } else {
                    if missed && !found.health.contains_key(&listener) {
                        found.wildcard_missed_retained = true;
                    }
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
                    if missed && !found.failed.contains_key(&key) {
                        found.wildcard_missed_retained = true;
                    }
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
