//! Operator actions on the bus, shared by the commands (`signalbox failed`)
//! and the console: who the operator is, deleting retained messages
//! (acknowledging failure records), and the `_audit` envelope every action
//! leaves behind.

use std::time::Duration;

use signalbox_common::envelope::Envelope;
use signalbox_common::mqtt::{Publish, Publisher, Qos};
use signalbox_common::topic;

/// How long a publish of an operator action may wait for its PUBACK.
pub const CONFIRM: Duration = Duration::from_secs(10);

/// The operator named in audit envelopes: `$USER`, else "operator".
pub fn operator_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "operator".into())
}

/// Publishes empty retained messages on `topics` (all in flight at once)
/// and waits for every confirmation; the number confirmed, or the first
/// error.
pub async fn clear_retained(publisher: &Publisher, topics: &[String]) -> Result<usize, String> {
    let mut confirmations = Vec::with_capacity(topics.len());
    for t in topics {
        let c = publisher
            .publish(Publish::new(t.clone(), Vec::new(), Qos::AtLeastOnce, true))
            .await
            .map_err(|e| e.to_string())?;
        confirmations.push(c);
    }
    for c in confirmations {
        c.wait(CONFIRM).await.map_err(|e| e.to_string())?;
    }
    Ok(topics.len())
}

/// Publishes the `_audit` envelope of an action by `operator`, from
/// `bridge` (`cli` or `console`), and waits for the broker's confirmation.
pub async fn audit(
    publisher: &Publisher,
    prefix: &str,
    bridge: &str,
    operator: &str,
    summary: &str,
    body: serde_json::Value,
) -> Result<(), String> {
    let t = topic::audit_topic(prefix);
    let envelope = Envelope::builder(t.clone(), summary)
        .bridge(bridge)
        .agent(operator)
        .user(operator)
        .body(body)
        .build()
        .map_err(|e| e.to_string())?;
    publisher
        .publish_confirmed(
            Publish::new(t, envelope.to_vec(), Qos::AtLeastOnce, false),
            CONFIRM,
        )
        .await
        .map_err(|e| e.to_string())
}
