//! Health reports: what every listener and daemon publishes, retained, on
//! `{prefix}/_health/{name}` (and as its Last Will with state `down`), and
//! how a reader judges them (stale = older than 3 × interval).
//!
//! The wire format is docs/PROTOCOL.md section 7.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope::time_ms;

/// A report older than this many intervals is stale.
pub const STALE_FACTOR: u32 = 3;

/// The state a report declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Running and handling messages.
    Up,
    /// Running, but something is wrong (see `last_error`).
    Degraded,
    /// The connection died without a clean stop (the Last Will).
    Down,
    /// Stopped cleanly.
    Stopped,
    /// A one-shot bridge between runs.
    Idle,
}

impl HealthState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Up => "up",
            HealthState::Degraded => "degraded",
            HealthState::Down => "down",
            HealthState::Stopped => "stopped",
            HealthState::Idle => "idle",
        }
    }
}

/// Counters since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Deliveries, duplicates included.
    pub received: u64,
    /// Handled successfully.
    pub processed: u64,
    /// Ended in a failure record (replays included).
    pub failed: u64,
    /// Replays run, whatever the outcome.
    pub replayed: u64,
    /// Deliveries dropped by de-duplication.
    pub duplicates: u64,
}

/// One health report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The listener's name (the topic's last level).
    pub listener: String,
    /// Declared state.
    pub state: HealthState,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Program version.
    pub version: String,
    /// When the process started.
    #[serde(with = "time_ms")]
    pub started: DateTime<Utc>,
    /// When this report was made.
    #[serde(with = "time_ms")]
    pub last_seen: DateTime<Utc>,
    /// Seconds between reports.
    pub interval_s: u64,
    /// The filters it subscribes to.
    #[serde(default)]
    pub subscriptions: Vec<String>,
    /// Counters since `started`.
    #[serde(default)]
    pub counters: Counters,
    /// The most recent error, one line.
    #[serde(default)]
    pub last_error: Option<String>,
    /// One-shot bridges: when they last ran.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time_ms::option"
    )]
    pub last_run: Option<DateTime<Utc>>,
    /// One-shot bridges: messages waiting in the spool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_depth: Option<u64>,
    /// Fields of particular daemons (e.g. per-feed status of the RSS
    /// bridge), kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// How a reader judges a report at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Liveness {
    /// Up and fresh.
    Up,
    /// Declares itself degraded (and is fresh).
    Degraded,
    /// Declares up or degraded but is older than 3 × interval.
    Stale,
    /// Its will fired.
    Down,
    /// Stopped cleanly.
    Stopped,
    /// A one-shot bridge between runs.
    Idle,
}

impl Liveness {
    /// Lower-case name for tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Up => "up",
            Liveness::Degraded => "degraded",
            Liveness::Stale => "stale",
            Liveness::Down => "down",
            Liveness::Stopped => "stopped",
            Liveness::Idle => "idle",
        }
    }

    /// Whether a monitoring check should fail on it.
    pub fn is_problem(self) -> bool {
        matches!(self, Liveness::Degraded | Liveness::Stale | Liveness::Down)
    }
}

/// Why a health payload could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid health report: {reason}")]
pub struct HealthError {
    /// The JSON parser's explanation.
    pub reason: String,
}

impl HealthReport {
    /// A fresh report for this process.
    pub fn new(listener: &str, started: DateTime<Utc>, interval_s: u64) -> HealthReport {
        HealthReport {
            listener: listener.to_string(),
            state: HealthState::Up,
            host: crate::envelope::local_hostname()
                .unwrap_or("localhost")
                .to_string(),
            pid: std::process::id(),
            version: crate::VERSION.to_string(),
            started,
            last_seen: started,
            interval_s,
            subscriptions: Vec::new(),
            counters: Counters::default(),
            last_error: None,
            last_run: None,
            spool_depth: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Parses a payload; never panics.
    pub fn from_slice(bytes: &[u8]) -> Result<HealthReport, HealthError> {
        serde_json::from_slice(bytes).map_err(|e| HealthError {
            reason: crate::failed::escape_controls(&e.to_string()),
        })
    }

    /// The wire form.
    pub fn to_vec(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Age of the report at `now` (zero if it claims to be from the future).
    pub fn age(&self, now: DateTime<Utc>) -> chrono::Duration {
        (now - self.last_seen).max(chrono::Duration::zero())
    }

    /// Whether an `up`/`degraded` report is older than 3 × its interval.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        matches!(self.state, HealthState::Up | HealthState::Degraded)
            && self.age(now)
                > chrono::Duration::seconds(
                    (self.interval_s.max(1) * u64::from(STALE_FACTOR)) as i64,
                )
    }

    /// How the report should be judged at `now`.
    pub fn liveness(&self, now: DateTime<Utc>) -> Liveness {
        if self.is_stale(now) {
            return Liveness::Stale;
        }
        match self.state {
            HealthState::Up => Liveness::Up,
            HealthState::Degraded => Liveness::Degraded,
            HealthState::Down => Liveness::Down,
            HealthState::Stopped => Liveness::Stopped,
            HealthState::Idle => Liveness::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"listener":"mail-notify","state":"up","host":"bus01","pid":48213,"version":"0.1.0",
      "started":"2026-11-24T18:00:00.000Z","last_seen":"2026-11-24T19:03:10.004Z","interval_s":10,
      "subscriptions":["signalbox/prod/git/#"],
      "counters":{"received":1289,"processed":1285,"failed":2,"replayed":1,"duplicates":2},
      "last_error":"smtp: connection refused","feeds":{"a":1}}"#;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .expect("time")
    }

    #[test]
    fn the_protocol_example_round_trips_with_extra_fields() {
        let r = HealthReport::from_slice(EXAMPLE.as_bytes()).expect("parses");
        assert_eq!(r.counters.processed, 1285);
        assert_eq!(r.extra.get("feeds"), Some(&serde_json::json!({"a": 1})));
        let again = HealthReport::from_slice(&r.to_vec()).expect("round trip");
        assert_eq!(r, again);
        let text = String::from_utf8(r.to_vec()).expect("utf8");
        assert!(
            text.contains("\"last_seen\":\"2026-11-24T19:03:10.004Z\""),
            "{text}"
        );
        assert!(
            !text.contains("last_run"),
            "absent optional fields are omitted: {text}"
        );
    }

    #[test]
    fn staleness_is_three_intervals_and_only_for_running_states() {
        let mut r = HealthReport::from_slice(EXAMPLE.as_bytes()).expect("parses");
        assert_eq!(r.liveness(at("2026-11-24T19:03:40.004Z")), Liveness::Up);
        assert_eq!(r.liveness(at("2026-11-24T19:03:40.005Z")), Liveness::Stale);
        r.state = HealthState::Degraded;
        assert_eq!(r.liveness(at("2026-11-24T19:03:11Z")), Liveness::Degraded);
        r.state = HealthState::Stopped;
        assert_eq!(r.liveness(at("2026-12-24T00:00:00Z")), Liveness::Stopped);
        r.state = HealthState::Down;
        assert!(r.liveness(at("2026-11-24T19:03:11Z")).is_problem());
    }

    #[test]
    fn invalid_payloads_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"null",
            b"{}",
            b"{\"listener\":1}",
            b"\xff\xfe",
            br#"{"listener":"x","state":"sleeping"}"#,
        ] {
            assert!(HealthReport::from_slice(bad).is_err());
        }
    }
}
