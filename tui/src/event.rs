//! The one [`Event`] enum of the console, and what a received message is once
//! decoded.
//!
//! Everything that can change the console's model arrives as an `Event` and
//! goes through `app::update` in one loop: keys, mouse, resizes and ticks from
//! the terminal side; batches of messages, connection states and the outcomes
//! of operator actions from the ingest task. Besides the shape in STYLE.md
//! (`Key, Mouse, Resize, Tick, Mqtt, Status`) there is [`Event::Outcome`]: the
//! result of a publish the operator asked for (ack, replay, delete…) comes
//! back here too, so it shows without a refresh key and `update` stays the
//! only place that changes the model; so do the pages of older messages the
//! Stream view reads from the history database ([`Event::History`]).

use chrono::{DateTime, Utc};
use crossterm::event::{KeyEvent, MouseEvent};
use signalbox_common::envelope::Payload;
use signalbox_common::failed::{self, FailureRecord, ReplayOutcome};
use signalbox_common::health::HealthReport;
use signalbox_common::mqtt::ConnState;
use signalbox_common::topic::{self, Reserved};

/// Payloads larger than this are cut before they are decoded (and the cut
/// is shown with the full size): decoding and keeping a 100 MB payload would
/// stall the console and break its memory bound.
pub const PAYLOAD_CAP: usize = 256 * 1024;

/// A failure index larger than this is not read (about 100,000 ids; the
/// console tracks at most 10,000 records anyway).
pub const INDEX_CAP: usize = 4 << 20;

/// Everything that can change the console's model.
#[derive(Debug)]
pub enum Event {
    /// A key was pressed.
    Key(KeyEvent),
    /// The mouse was used (wheel, click).
    Mouse(MouseEvent),
    /// The terminal has a new size (columns, rows).
    Resize(u16, u16),
    /// Time passes: ages, staleness, rates and pruning are judged against
    /// this time (carried in the event so that `update` stays pure).
    Tick(DateTime<Utc>),
    /// Messages received since the last batch, decoded.
    Mqtt(Batch),
    /// The connection changed state (connected, reconnecting with the last
    /// error…).
    Status(ConnState),
    /// An operator action finished (or failed).
    Outcome(Outcome),
    /// A page of older messages read from the history database (the
    /// answer to `Effect::LoadHistory`, from the console's worker thread).
    History(HistoryPage),
}

/// The answer to one request for older messages.
#[derive(Debug)]
pub struct HistoryPage {
    /// The request's generation (an answer to an outdated one is dropped).
    pub generation: u64,
    /// The messages, or why the database could not be read (one line).
    pub result: Result<OlderMessages, String>,
}

/// Messages read from the history database, decoded like received ones.
#[derive(Debug, Default)]
pub struct OlderMessages {
    /// The messages, oldest first; `at` is the stored time (the
    /// envelope's, else when the recorder received it).
    pub rows: Vec<Incoming>,
    /// Whether the database holds older matches still.
    pub more: bool,
    /// Where the next page ends: the position of the oldest row returned
    /// (also when the console leaves that row out as shown already).
    pub next: Option<signalbox_bridges::history::Before>,
}

/// Messages received together, in arrival order.
#[derive(Debug, Default)]
pub struct Batch {
    /// The messages.
    pub messages: Vec<Incoming>,
}

/// What an operator action came to, for the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether it worked.
    pub ok: bool,
    /// One line for the operator.
    pub text: String,
}

/// One received message, decoded once on arrival.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The MQTT topic it arrived on.
    pub topic: String,
    /// When it arrived (the envelope's own time is in the payload).
    pub at: DateTime<Utc>,
    /// Delivered from the broker's retained store.
    pub retain: bool,
    /// The payload's full size in bytes, also when it was cut.
    pub size: usize,
    /// The payload, decoded from at most [`PAYLOAD_CAP`] bytes.
    pub payload: Payload,
    /// Whether the payload was cut before decoding.
    pub cut: bool,
    /// What the bus contract makes of it (health report, failure record…).
    pub meaning: Meaning,
    /// The signature check of an ordinary message, when the console has a
    /// trust directory (checked on the full bytes, before any cut).
    pub signature: Option<signalbox_common::sign::Verdict>,
}

/// What a message means to the console beyond its payload: the reserved
/// topics carry health reports, failure records and the roster.
#[derive(Debug, Clone, PartialEq)]
pub enum Meaning {
    /// An ordinary message.
    Plain,
    /// `_health/{listener}`: a report, an unreadable one (the reason), or
    /// `None` for an empty payload (the retained report was deleted).
    Health {
        /// The listener named by the topic.
        listener: String,
        /// The report.
        report: Option<Result<Box<HealthReport>, String>>,
    },
    /// `_failed/{listener}/{id}`: a record, an unreadable one, or `None`
    /// for an empty payload (acknowledged or replayed successfully).
    Failed {
        /// The listener named by the topic.
        listener: String,
        /// The message id named by the topic.
        id: String,
        /// The record.
        record: Option<Result<Box<FailureRecord>, String>>,
    },
    /// `_failed/{listener}`: the listener's failure index, the ids of its
    /// open records (none when the payload is empty), or why it is
    /// unreadable. One level fewer than a record, so never a record.
    FailedIndex {
        /// The listener named by the topic.
        listener: String,
        /// The ids listed.
        ids: Result<Vec<String>, String>,
    },
    /// `_roster`: the listed names, or why the list is unreadable.
    Roster(Result<Vec<String>, String>),
    /// Another reserved topic (`_replay`, `_audit`, `_ping`).
    OtherReserved,
    /// The outcomes of a replay the console asked for (published on the
    /// request's `reply_to`, a `console/replies/…` topic).
    ReplayOutcome(ReplayOutcome),
}

impl Incoming {
    /// Decodes a received payload: caps it at `cap` bytes, decodes it once
    /// into a [`Payload`], and reads what the reserved topics under `prefix`
    /// carry. Never fails and never panics, whatever the bytes.
    pub fn decode(
        prefix: &str,
        topic: &str,
        bytes: &[u8],
        retain: bool,
        at: DateTime<Utc>,
        cap: usize,
    ) -> Incoming {
        let (payload, cut) = Payload::decode_capped(bytes, cap);
        // `_failed/{listener}` is no shape of `classify`: the index, one
        // level above the records, is never taken for a record.
        let meaning = if let Some(listener) = topic::failed_index_listener(prefix, topic) {
            Meaning::FailedIndex {
                listener,
                ids: if bytes.len() > INDEX_CAP {
                    Err(format!(
                        "index of {} bytes is too large to read",
                        bytes.len()
                    ))
                } else {
                    // From the whole payload: an index of a few thousand
                    // ids is larger than the display cap.
                    failed::parse_index(bytes).map_err(|e| e.to_string())
                },
            }
        } else {
            match topic::classify(prefix, topic) {
                None if !cut && topic.contains("/console/replies/") => {
                    serde_json::from_slice::<ReplayOutcome>(bytes)
                        .map(Meaning::ReplayOutcome)
                        .unwrap_or(Meaning::Plain)
                }
                None => Meaning::Plain,
                Some(Reserved::Health { listener }) => Meaning::Health {
                    listener,
                    report: (!bytes.is_empty()).then(|| {
                        if cut {
                            Err(format!(
                                "report of {} bytes is too large to read",
                                bytes.len()
                            ))
                        } else {
                            HealthReport::from_slice(bytes)
                                .map(Box::new)
                                .map_err(|e| e.to_string())
                        }
                    }),
                },
                Some(Reserved::Failed { listener, id }) => Meaning::Failed {
                    listener,
                    id,
                    record: (!bytes.is_empty()).then(|| {
                        if cut {
                            Err(format!(
                                "record of {} bytes is too large to read",
                                bytes.len()
                            ))
                        } else {
                            FailureRecord::from_slice(bytes)
                                .map(Box::new)
                                .map_err(|e| e.to_string())
                        }
                    }),
                },
                Some(Reserved::Roster) => Meaning::Roster(if bytes.is_empty() {
                    Ok(Vec::new())
                } else {
                    serde_json::from_slice::<Vec<String>>(bytes)
                        .map_err(|e| format!("invalid roster: {e}"))
                }),
                Some(_) => Meaning::OtherReserved,
            }
        };
        let signature = match meaning {
            Meaning::Plain => crate::signature::check(bytes),
            _ => None,
        };
        Incoming {
            signature,
            topic: topic.to_string(),
            at,
            retain,
            size: bytes.len(),
            payload,
            cut,
            meaning,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T19:03:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time")
    }

    #[test]
    fn bad_payloads_decode_without_panicking() {
        let huge = vec![b'x'; PAYLOAD_CAP * 3];
        let m = Incoming::decode(
            "signalbox",
            "signalbox/dev/a/b",
            &huge,
            false,
            at(),
            PAYLOAD_CAP,
        );
        assert!(m.cut);
        assert_eq!(m.size, PAYLOAD_CAP * 3);
        assert!(matches!(m.payload, Payload::Text(ref t) if t.len() == PAYLOAD_CAP));
        let m = Incoming::decode(
            "signalbox",
            "signalbox/dev/a/b",
            &[0, 159, 146, 150],
            false,
            at(),
            PAYLOAD_CAP,
        );
        assert_eq!(m.payload.kind(), "binary");
        for bad in [
            &b"{not json"[..],
            b"[]",
            b"\xff",
            b"{\"listener\":\"x\",\"state\":\"sleeping\"}",
        ] {
            let m = Incoming::decode(
                "signalbox",
                "signalbox/_health/x",
                bad,
                true,
                at(),
                PAYLOAD_CAP,
            );
            assert!(
                matches!(
                    m.meaning,
                    Meaning::Health {
                        report: Some(Err(_)),
                        ..
                    }
                ),
                "{bad:?}"
            );
            let m = Incoming::decode(
                "signalbox",
                "signalbox/_failed/x/1",
                bad,
                true,
                at(),
                PAYLOAD_CAP,
            );
            assert!(
                matches!(
                    m.meaning,
                    Meaning::Failed {
                        record: Some(Err(_)),
                        ..
                    }
                ),
                "{bad:?}"
            );
            let m = Incoming::decode(
                "signalbox",
                "signalbox/_roster",
                bad,
                true,
                at(),
                PAYLOAD_CAP,
            );
            assert_eq!(
                matches!(m.meaning, Meaning::Roster(Err(_))),
                bad != b"[]",
                "{bad:?}"
            );
        }
        let m = Incoming::decode(
            "signalbox",
            "signalbox/_failed/x/1",
            b"",
            true,
            at(),
            PAYLOAD_CAP,
        );
        assert_eq!(
            m.meaning,
            Meaning::Failed {
                listener: "x".into(),
                id: "1".into(),
                record: None
            }
        );
        let huge_health = vec![b' '; PAYLOAD_CAP + 1];
        let m = Incoming::decode(
            "signalbox",
            "signalbox/_health/x",
            &huge_health,
            true,
            at(),
            PAYLOAD_CAP,
        );
        assert!(matches!(
            m.meaning,
            Meaning::Health {
                report: Some(Err(_)),
                ..
            }
        ));
    }

    #[test]
    fn a_failure_index_is_not_taken_for_a_record() {
        let decode = |topic: &str, bytes: &[u8]| {
            Incoming::decode("signalbox", topic, bytes, true, at(), PAYLOAD_CAP).meaning
        };
        assert_eq!(
            decode("signalbox/_failed/mail-notify", br#"["01a2","01a3"]"#),
            Meaning::FailedIndex {
                listener: "mail-notify".into(),
                ids: Ok(vec!["01a2".into(), "01a3".into()])
            }
        );
        assert_eq!(
            decode("signalbox/_failed/mail-notify", b""),
            Meaning::FailedIndex {
                listener: "mail-notify".into(),
                ids: Ok(Vec::new())
            }
        );
        assert!(matches!(
            decode("signalbox/_failed/mail-notify", b"{}"),
            Meaning::FailedIndex { ids: Err(_), .. }
        ));
        // An index larger than the display cap is still read whole.
        let many: Vec<String> = (0..10_000)
            .map(|n| format!("0193a0b0-0000-7000-8000-{n:012}"))
            .collect();
        let bytes = serde_json::to_vec(&many).expect("json");
        assert!(bytes.len() > PAYLOAD_CAP);
        assert!(matches!(
            decode("signalbox/_failed/mail-notify", &bytes),
            Meaning::FailedIndex { ids: Ok(ref ids), .. } if ids.len() == 10_000
        ));
        assert!(matches!(
            decode("signalbox/_failed/mail-notify/01a2", b""),
            Meaning::Failed { .. }
        ));
    }
}
