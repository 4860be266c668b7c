//! Failure records, replay requests and replay outcomes: the retained
//! `{prefix}/_failed/{listener}/{id}` records a listener writes when a
//! message keeps failing, and the messages on `{prefix}/_replay/{listener}`
//! that ask it to try again.
//!
//! The wire format is docs/PROTOCOL.md section 8.

use base64::Engine;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope::{time_ms, Envelope, Payload};

/// Replays stop once a record has this many failed attempts.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// One failed message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// The listener that failed.
    pub listener: String,
    /// The message id (envelope id, or one made up for a raw payload).
    pub id: String,
    /// The topic the message arrived on.
    pub topic: String,
    /// The message, when it is an envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<Envelope>,
    /// The message, when it is not an envelope: text, or base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Whether `payload` is base64 of the exact bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<bool>,
    /// The last error, one line.
    pub error: String,
    /// Failed attempts: 1 when written, +1 per failed replay.
    pub attempts: u32,
    /// When it first failed.
    #[serde(with = "time_ms")]
    pub first_failed: DateTime<Utc>,
    /// When it last failed.
    #[serde(with = "time_ms")]
    pub last_failed: DateTime<Utc>,
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid failure record: {reason}")]
pub struct FailedError {
    /// What is wrong.
    pub reason: String,
}

impl FailureRecord {
    /// A first record for a message that failed with `error`.
    pub fn new(
        listener: &str,
        id: &str,
        topic: &str,
        payload: &[u8],
        error: &str,
        now: DateTime<Utc>,
    ) -> FailureRecord {
        let (envelope, text, base64) = match Payload::decode(payload) {
            // An envelope nested nearly as deep as serde_json reads would be
            // one level too deep once embedded here: the record could not
            // be read back. Such an envelope is kept as its exact text.
            Payload::Envelope(e) if embeddable(&e) => (Some(*e), None, None),
            _ => match std::str::from_utf8(payload) {
                Ok(text) => (None, Some(text.to_string()), Some(false)),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(payload)),
                    Some(true),
                ),
            },
        };
        FailureRecord {
            listener: listener.to_string(),
            id: id.to_string(),
            topic: topic.to_string(),
            envelope,
            payload: text,
            payload_base64: base64,
            error: one_line(error),
            attempts: 1,
            // The wire carries milliseconds: truncated so that the record
            // equals itself after a round trip.
            first_failed: now.trunc_subsecs(3),
            last_failed: now.trunc_subsecs(3),
        }
    }

    /// Parses a payload; never panics. Exactly one of `envelope` and
    /// `payload` must be present.
    pub fn from_slice(bytes: &[u8]) -> Result<FailureRecord, FailedError> {
        let record: FailureRecord = serde_json::from_slice(bytes).map_err(|e| FailedError {
            reason: escape_controls(&e.to_string()),
        })?;
        if record.envelope.is_some() == record.payload.is_some() {
            return Err(FailedError {
                reason: "exactly one of `envelope` and `payload` must be present".into(),
            });
        }
        Ok(record)
    }

    /// The wire form.
    pub fn to_vec(&self) -> Vec<u8> {
        // Plain data with string keys: cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The stored message as bytes, for re-running a handler.
    pub fn message_bytes(&self) -> Result<Vec<u8>, FailedError> {
        match (&self.envelope, &self.payload) {
            (Some(e), _) => Ok(e.to_vec()),
            (None, Some(p)) if self.payload_base64 == Some(true) => {
                base64::engine::general_purpose::STANDARD
                    .decode(p)
                    .map_err(|e| FailedError {
                        reason: format!("payload is not valid base64: {e}"),
                    })
            }
            (None, Some(p)) => Ok(p.as_bytes().to_vec()),
            (None, None) => Err(FailedError {
                reason: "no message stored".into(),
            }),
        }
    }

    /// The summary line of the stored message.
    pub fn summary(&self) -> String {
        match &self.envelope {
            Some(e) => e.summary.clone(),
            None => match self.message_bytes() {
                Ok(bytes) => Payload::decode(&bytes).summary_line(200),
                Err(_) => "<unreadable payload>".into(),
            },
        }
    }
}

/// Arrays and objects serde_json reads nested in one document (its
/// recursion limit of 128 allows 127).
const MAX_JSON_NESTING: usize = 127;

/// Whether `envelope` can be embedded in a record: the record's object
/// adds one level of nesting.
fn embeddable(envelope: &Envelope) -> bool {
    serde_json::to_value(envelope).is_ok_and(|v| json_nesting(&v) < MAX_JSON_NESTING)
}

/// How many arrays and objects are nested in `value`, counted without
/// recursion.
fn json_nesting(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    let mut deepest = 0;
    let mut pending = vec![(value, 1)];
    while let Some((value, depth)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(depth);
        pending.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

/// Why a failure index could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid failure index: {reason}")]
pub struct IndexError {
    /// What is wrong.
    pub reason: String,
}

/// The ids a failure index lists (the retained JSON array of a listener's
/// open record ids on `{prefix}/_failed/{listener}`, PROTOCOL.md 8.1).
/// An empty payload, the index deleted, lists none. Never panics.
pub fn parse_index(bytes: &[u8]) -> Result<Vec<String>, IndexError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(bytes).map_err(|e| IndexError {
        reason: escape_controls(&e.to_string()),
    })
}

/// A request on `_replay/{listener}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRequest {
    /// The ids to replay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// Replay every record of the listener.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// Where to publish the outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

impl ReplayRequest {
    /// Parses a request; never panics.
    pub fn from_slice(bytes: &[u8]) -> Result<ReplayRequest, FailedError> {
        let r: ReplayRequest = serde_json::from_slice(bytes).map_err(|e| FailedError {
            reason: escape_controls(&e.to_string()),
        })?;
        if r.ids.is_empty() && !r.all {
            return Err(FailedError {
                reason: "a replay request names `ids` or sets `all`".into(),
            });
        }
        Ok(r)
    }

    /// The wire form.
    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What a replay did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The handler succeeded; the record was deleted.
    Replayed,
    /// The handler failed again; attempts went up.
    Failed,
    /// Not run: the attempts cap was reached.
    Capped,
    /// No such record.
    Unknown,
}

/// The outcome for one id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayResult {
    /// The record's id.
    pub id: String,
    /// What happened.
    pub outcome: Outcome,
    /// The new error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The attempts after this replay, when it failed or was capped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// The answer published on a replay request's `reply_to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayOutcome {
    /// The listener that replayed.
    pub listener: String,
    /// One result per id.
    pub results: Vec<ReplayResult>,
}

/// `text` with its control characters escaped (`\n`, `\u{0}`): the JSON
/// parser's errors quote what they did not expect as it was, and an error
/// is one line that must not garble a terminal.
pub(crate) fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Reduces an error text to one line (errors go into one-line fields).
pub fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 1000 {
        line.chars().take(999).chain(['…']).collect()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T19:03:02.410Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time")
    }

    #[test]
    fn an_index_lists_ids_and_an_empty_one_none() {
        assert_eq!(
            parse_index(br#"["01a2","01a3"]"#).expect("parses"),
            vec!["01a2".to_string(), "01a3".to_string()]
        );
        assert!(parse_index(b"").expect("deleted index").is_empty());
        for bad in [&b"{}"[..], b"[1]", b"\xff", b"[\"a\""] {
            let e = parse_index(bad).expect_err("invalid");
            assert!(e.to_string().starts_with("invalid failure index"), "{e}");
        }
    }

    #[test]
    fn envelopes_text_and_binary_are_stored_and_restored() {
        let env = crate::envelope::Envelope::builder("a/b", "hello")
            .build()
            .expect("envelope");
        let r = FailureRecord::new(
            "l",
            &env.id.to_string(),
            "a/b",
            &env.to_vec(),
            "boom\nline two",
            now(),
        );
        assert!(r.envelope.is_some() && r.payload.is_none());
        assert_eq!(r.error, "boom line two");
        assert_eq!(FailureRecord::from_slice(&r.to_vec()).expect("parses"), r);
        assert_eq!(
            crate::envelope::Envelope::from_slice(&r.message_bytes().expect("bytes")).expect("env"),
            env
        );

        let r = FailureRecord::new("l", "x", "a/b", b"plain text", "e", now());
        assert_eq!(r.payload_base64, Some(false));
        assert_eq!(r.message_bytes().expect("bytes"), b"plain text");
        let r = FailureRecord::new("l", "x", "a/b", &[0, 255, 3], "e", now());
        assert_eq!(r.payload_base64, Some(true));
        assert_eq!(r.message_bytes().expect("bytes"), vec![0, 255, 3]);
        assert_eq!(r.summary(), "<3 bytes binary>");
    }

    #[test]
    fn records_need_exactly_one_message_field() {
        let r = FailureRecord::new("l", "x", "a/b", b"t", "e", now());
        let mut v: serde_json::Value = serde_json::from_slice(&r.to_vec()).expect("json");
        v.as_object_mut().map(|o| o.remove("payload"));
        assert!(FailureRecord::from_slice(v.to_string().as_bytes()).is_err());
    }

    #[test]
    fn replay_requests_name_ids_or_all() {
        assert!(ReplayRequest::from_slice(br#"{"ids":["a"]}"#).is_ok());
        assert!(ReplayRequest::from_slice(br#"{"all":true,"reply_to":"x/y"}"#).is_ok());
        assert!(ReplayRequest::from_slice(b"{}").is_err());
        assert!(ReplayRequest::from_slice(b"not json").is_err());
    }

    proptest! {
        #[test]
        fn any_payload_survives_a_record_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let r = FailureRecord::new("l", "x", "a/b", &payload, "e", now());
            let back = FailureRecord::from_slice(&r.to_vec()).expect("parses");
            if back.envelope.is_none() {
                prop_assert_eq!(back.message_bytes().expect("bytes"), payload);
            }
        }

        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = FailureRecord::from_slice(&bytes);
            let _ = ReplayRequest::from_slice(&bytes);
            let _ = crate::health::HealthReport::from_slice(&bytes);
        }
    }
}
