//! The ingest task: the only owner of the console's MQTT connection.
//!
//! It subscribes to everything under the prefix (and the `_roster` by its
//! exact topic), pings the listeners once subscribed and after every
//! reconnect, and then only forwards: messages are decoded here, off the
//! drawing thread, and sent in batches into one bounded channel together
//! with connection states. A full channel makes this task wait, which
//! pushes back to the connection and the broker instead of growing memory.
//!
//! Operator actions ([`Effect`]s) come in on a second channel; each is
//! carried out in its own task (never blocking the forwarding loop) and its
//! outcome comes back as [`Event::Outcome`]. Re-subscribing after a
//! reconnect is done by `signalbox_common::mqtt`.

use std::time::Duration;

use chrono::Utc;
use signalbox_common::envelope::Envelope;
use signalbox_common::failed::ReplayRequest;
use signalbox_common::mqtt::{ConnState, ConnectOptions, Connection, Publish, Publisher, Qos};
use signalbox_common::topic;
use tokio::sync::mpsc;

use crate::app::Effect;
use crate::event::{Batch, Event, Incoming, Outcome, PAYLOAD_CAP};

/// Messages per batch: large enough that a firehose costs one channel send
/// per few hundred messages, small enough that a batch is applied well
/// within a frame.
pub const BATCH_MAX: usize = 512;
/// Batches (and states) waiting for the console loop.
pub const CHANNEL_CAP: usize = 32;
use crate::operator::{self, CONFIRM as CONFIRM_TIMEOUT};
/// After a reconnect, listeners are pinged once the subscriptions had a
/// moment to be renewed.
const PING_AFTER_RECONNECT: Duration = Duration::from_millis(500);

/// Who the console is on the bus.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Topic prefix.
    pub prefix: String,
    /// Environment, for the console's own topics (replies, `:pub`).
    pub env: String,
    /// The operator, named in audit envelopes (`$USER`).
    pub user: String,
}

/// The handle the console loop keeps: where to send effects.
#[derive(Debug, Clone)]
pub struct Ingest {
    effects: mpsc::Sender<Effect>,
}

impl Ingest {
    /// Hands an effect to the task; false when it is gone or too busy
    /// (the caller tells the operator).
    pub fn send(&self, effect: Effect) -> bool {
        self.effects.try_send(effect).is_ok()
    }
}

/// Starts the ingest task on the current runtime. `events` is the bounded
/// channel into the console loop.
pub fn spawn(
    mut options: ConnectOptions,
    identity: Identity,
    events: mpsc::Sender<Event>,
) -> Ingest {
    // The console waits for the broker rather than failing: it shows
    // "connecting" and "reconnecting" instead.
    options.retry_initial = true;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(run(options, identity, events, rx));
    Ingest { effects: tx }
}

async fn run(
    options: ConnectOptions,
    id: Identity,
    events: mpsc::Sender<Event>,
    mut effects: mpsc::Receiver<Effect>,
) {
    let conn = match Connection::connect(options).await {
        Ok(conn) => conn,
        Err(e) => {
            let _ = events.send(Event::Status(ConnState::Closed)).await;
            let _ = events
                .send(Event::Outcome(Outcome {
                    ok: false,
                    text: e.to_string(),
                }))
                .await;
            return;
        }
    };
    let mut state = conn.state_watch();
    let (mut incoming, publisher) = conn.split();
    {
        let publisher = publisher.clone();
        let id = id.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let filters = vec![
                (
                    format!("{}/#", topic::sanitize_prefix(&id.prefix)),
                    Qos::AtMostOnce,
                ),
                (topic::roster_topic(&id.prefix), Qos::AtMostOnce),
            ];
            // Waits as long as the broker is away; the connection sends the
            // subscription once it is back.
            match publisher
                .subscribe(&filters, Duration::from_secs(24 * 3600))
                .await
            {
                Ok(_) => ping(&publisher, &id).await,
                Err(e) => {
                    let _ = events
                        .send(Event::Outcome(Outcome {
                            ok: false,
                            text: e.to_string(),
                        }))
                        .await;
                }
            }
        });
    }
    let initial = state.borrow_and_update().clone();
    let mut connected_once = matches!(initial, ConnState::Connected { .. });
    let mut lost = false;
    if events.send(Event::Status(initial)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            message = incoming.recv() => {
                let Some(first) = message else { break };
                let at = Utc::now();
                let mut messages = Vec::with_capacity(64);
                let mut next = Some(first);
                while let Some(m) = next {
                    messages.push(Incoming::decode(&id.prefix, &m.topic, &m.payload, m.retain, at, PAYLOAD_CAP));
                    if messages.len() >= BATCH_MAX {
                        break;
                    }
                    next = incoming.try_recv().ok();
                }
                if events.send(Event::Mqtt(Batch { messages })).await.is_err() {
                    break;
                }
            }
            changed = state.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = state.borrow_and_update().clone();
                match &now {
                    ConnState::Connected { .. } if connected_once && lost => {
                        lost = false;
                        let publisher = publisher.clone();
                        let id = id.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(PING_AFTER_RECONNECT).await;
                            ping(&publisher, &id).await;
                        });
                    }
                    ConnState::Connected { .. } => connected_once = true,
                    _ => lost = true,
                }
                if events.send(Event::Status(now)).await.is_err() {
                    break;
                }
            }
            effect = effects.recv() => {
                let Some(effect) = effect else { break };
                tokio::spawn(execute(publisher.clone(), id.clone(), effect, events.clone()));
            }
        }
    }
}

async fn ping(publisher: &Publisher, id: &Identity) {
    let _ = publisher
        .publish(Publish::new(
            topic::ping_topic(&id.prefix),
            Vec::new(),
            Qos::AtLeastOnce,
            false,
        ))
        .await;
}

/// Carries out one effect and reports the outcome.
async fn execute(publisher: Publisher, id: Identity, effect: Effect, events: mpsc::Sender<Event>) {
    let outcome = match effect {
        Effect::Ping => {
            ping(&publisher, &id).await;
            None
        }
        Effect::Subscribe(topics) => {
            let filters: Vec<(String, Qos)> =
                topics.into_iter().map(|t| (t, Qos::AtMostOnce)).collect();
            publisher
                .subscribe(&filters, Duration::from_secs(30))
                .await
                .err()
                .map(|e| fail(e.to_string()))
        }
        Effect::Ack { listener, records } => Some(ack(&publisher, &id, &listener, &records).await),
        Effect::Replay { listener, ids } => Some(replay(&publisher, &id, &listener, ids).await),
        Effect::DeleteRetained(topics) => Some(delete(&publisher, &id, &topics).await),
        Effect::Publish { topic: t, text } => {
            Some(match envelope(&id, &t, &text, serde_json::Value::Null) {
                Ok(env) => match publisher
                    .publish_confirmed(
                        Publish::new(t.clone(), env.to_vec(), Qos::AtLeastOnce, false),
                        CONFIRM_TIMEOUT,
                    )
                    .await
                {
                    Ok(()) => ok(format!("published to {t}")),
                    Err(e) => fail(e.to_string()),
                },
                Err(e) => fail(e),
            })
        }
        // Carried out by the console loop itself.
        Effect::Export { .. } | Effect::Theme(_) | Effect::LoadHistory(_) => None,
    };
    if let Some(outcome) = outcome {
        let _ = events.send(Event::Outcome(outcome)).await;
    }
}

fn ok(text: String) -> Outcome {
    Outcome { ok: true, text }
}

fn fail(text: String) -> Outcome {
    Outcome { ok: false, text }
}

/// An envelope from the console, by the operator.
fn envelope(
    id: &Identity,
    topic_name: &str,
    summary: &str,
    body: serde_json::Value,
) -> Result<Envelope, String> {
    Envelope::builder(topic_name, summary)
        .bridge("console")
        .agent(id.user.clone())
        .user(id.user.clone())
        .body(body)
        .build()
        .map_err(|e| e.to_string())
}

async fn audit(
    publisher: &Publisher,
    id: &Identity,
    summary: &str,
    body: serde_json::Value,
) -> Result<(), String> {
    operator::audit(publisher, &id.prefix, "console", &id.user, summary, body).await
}

async fn ack(
    publisher: &Publisher,
    id: &Identity,
    listener: &str,
    records: &[(String, String)],
) -> Outcome {
    let topics: Vec<String> = records.iter().map(|(_, t)| t.clone()).collect();
    if let Err(e) = operator::clear_retained(publisher, &topics).await {
        return fail(format!("acknowledge failed: {e}"));
    }
    let ids: Vec<&str> = records.iter().map(|(i, _)| i.as_str()).collect();
    let summary = format!(
        "{} acknowledged {} failed message(s) of {listener}",
        id.user,
        ids.len()
    );
    let body = serde_json::json!({"action": "ack", "listener": listener, "ids": ids});
    match audit(publisher, id, &summary, body).await {
        Ok(()) => ok(format!(
            "acknowledged {} record(s) of {listener}",
            ids.len()
        )),
        Err(e) => fail(format!("acknowledged, but the audit event failed: {e}")),
    }
}

async fn replay(publisher: &Publisher, id: &Identity, listener: &str, ids: Vec<String>) -> Outcome {
    let reply_to = topic::build(
        &id.prefix,
        &id.env,
        "console",
        &["replies"],
        &uuid::Uuid::now_v7().to_string(),
    );
    let all = ids.is_empty();
    let request = ReplayRequest {
        ids: ids.clone(),
        all,
        reply_to: Some(reply_to),
    };
    let t = topic::replay_topic(&id.prefix, listener);
    if let Err(e) = publisher
        .publish_confirmed(
            Publish::new(t, request.to_vec(), Qos::AtLeastOnce, false),
            CONFIRM_TIMEOUT,
        )
        .await
    {
        return fail(format!("replay request failed: {e}"));
    }
    let what = if all {
        "all failed messages".to_string()
    } else {
        format!("{} failed message(s)", ids.len())
    };
    let summary = format!("{} asked {listener} to replay {what}", id.user);
    let body = if all {
        serde_json::json!({"action": "replay", "listener": listener, "all": true})
    } else {
        serde_json::json!({"action": "replay", "listener": listener, "ids": ids})
    };
    match audit(publisher, id, &summary, body).await {
        Ok(()) => ok(format!(
            "replay of {what} requested from {listener}; waiting for the outcome…"
        )),
        Err(e) => fail(format!("replay requested, but the audit event failed: {e}")),
    }
}

async fn delete(publisher: &Publisher, id: &Identity, topics: &[String]) -> Outcome {
    let n = match operator::clear_retained(publisher, topics).await {
        Ok(n) => n,
        Err(e) => return fail(format!("delete failed: {e}")),
    };
    // The audit event names the topics, up to a bound (a subtree may hold
    // thousands).
    let named: Vec<&String> = topics.iter().take(100).collect();
    let summary = format!("{} deleted {n} retained topic(s)", id.user);
    let body = serde_json::json!({"action": "clear", "topics": named, "count": n});
    match audit(publisher, id, &summary, body).await {
        Ok(()) => ok(format!("deleted {n} retained topic(s)")),
        Err(e) => fail(format!(
            "deleted {n} retained topic(s), but the audit event failed: {e}"
        )),
    }
}

pub mod history;
#[cfg(test)]
mod tests;
