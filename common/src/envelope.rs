//! The envelope every well-formed signalbox message carries, and the
//! decoding of *any* payload.
//!
//! An envelope is one UTF-8 JSON object:
//!
//! ```json
//! {"v":1, "id":"0193…", "topic":"signalbox/prod/git/kernel/commit",
//!  "time":"2026-11-24T19:03:00.123Z",
//!  "source":{"bridge":"git","host":"pkgs01","user":"jkeating"},
//!  "agent":"jkeating", "severity":"info", "summary":"one line",
//!  "links":{"url":"https://…"}, "body":{…}, "reply_to":"optional topic"}
//! ```
//!
//! This module owns its Rust shape ([`Envelope`], [`Source`], [`Severity`]),
//! building one ([`EnvelopeBuilder`]), the wire format (parsing with an
//! error a person can act on, [`EnvelopeError`]; writing `time` with exactly
//! millisecond precision) and [`Payload`]: what a received message is when it
//! may be an envelope, foreign JSON, text or binary. Decoding a payload never
//! fails, so no tool ever crashes on what a foreign publisher sends.
//!
//! Unknown fields, at the top level and in `source`, are kept in `extra` and
//! written back, so a newer producer's fields survive an older relay.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::topic::{self, TopicError};

/// The envelope format version this code reads and writes (field `v`).
pub const ENVELOPE_VERSION: u32 = 1;

/// The `source.bridge` of an envelope built without naming one: the
/// command line (`signalbox pub`).
pub const DEFAULT_BRIDGE: &str = "cli";

/// The top-level fields the envelope defines; any other is kept in
/// [`Envelope::extra`].
const ENVELOPE_FIELDS: [&str; 11] = [
    "v", "id", "topic", "time", "source", "agent", "severity", "summary", "links", "body",
    "reply_to",
];

/// The fields of `source` the envelope defines; any other is kept in
/// [`Source::extra`].
const SOURCE_FIELDS: [&str; 3] = ["bridge", "host", "user"];

/// How much a message matters. Ordered: `Debug < Info < Warning < Error`,
/// so a filter "warning and above" is a comparison.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Detail for whoever debugs a bridge or listener.
    Debug,
    /// An ordinary event (a commit, a build, a mail); the default.
    #[default]
    Info,
    /// Something a person may want to look at.
    Warning,
    /// Something failed.
    Error,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 4] = [
        Severity::Debug,
        Severity::Info,
        Severity::Warning,
        Severity::Error,
    ];

    /// The wire name: `debug`, `info`, `warning` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A severity name that is none of debug, info, warning (warn), error
/// (err).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity `{value}`; expected debug, info, warning or error")]
pub struct ParseSeverityError {
    /// The text that was given.
    pub value: String,
}

impl FromStr for Severity {
    type Err = ParseSeverityError;

    /// Parses a severity name, ignoring case and surrounding whitespace;
    /// `warn` and `err` are accepted as the short forms people type.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" => Ok(Severity::Debug),
            "info" => Ok(Severity::Info),
            "warning" | "warn" => Ok(Severity::Warning),
            "error" | "err" => Ok(Severity::Error),
            _ => Err(ParseSeverityError {
                value: s.to_owned(),
            }),
        }
    }
}

/// Why a payload is not a valid envelope, or an envelope cannot be built.
/// Each message names the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The payload does not parse as JSON.
    #[error("payload is not JSON, so it is not a signalbox envelope: {reason}")]
    NotJson {
        /// The JSON parser's explanation, with line and column.
        reason: String,
    },
    /// The payload is JSON, but not an object (`[1,2]`, `"text"`, `42`).
    #[error("payload is JSON but not an object, so it is not a signalbox envelope")]
    NotAnObject,
    /// A required field is absent.
    #[error("envelope has no `{field}` field")]
    MissingField {
        /// The missing field (`source.bridge` for nested ones).
        field: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("envelope field `{field}` must be {expected}, not {found}")]
    WrongType {
        /// The field (`source.host` for nested ones).
        field: &'static str,
        /// What it must be, e.g. "a string".
        expected: &'static str,
        /// What it is, e.g. "a number".
        found: &'static str,
    },
    /// `v` is a version this code does not know.
    #[error(
        "envelope version {found} is not supported; this signalbox reads version \
         {ENVELOPE_VERSION}"
    )]
    UnsupportedVersion {
        /// The version found in the envelope.
        found: u64,
    },
    /// `id` is not a UUID.
    #[error("envelope field `id` is not a UUID: {value:?}")]
    InvalidId {
        /// The text found.
        value: String,
    },
    /// `id` is the nil UUID, which cannot tell messages apart.
    #[error("envelope field `id` is the nil UUID; every message needs its own id (a UUIDv7)")]
    NilId,
    /// `time` is not an RFC 3339 timestamp.
    #[error("envelope field `time` is not an RFC 3339 timestamp: {value:?}")]
    InvalidTime {
        /// The text found.
        value: String,
    },
    /// `severity` is not a known severity name.
    #[error("envelope field `severity` is {value:?}; expected debug, info, warning or error")]
    InvalidSeverity {
        /// The text found.
        value: String,
    },
    /// `topic` is not a topic one can publish on.
    #[error("envelope field `topic` is not a topic to publish on: {reason}")]
    InvalidTopic {
        /// The topic found.
        topic: String,
        /// What is wrong with it.
        reason: TopicError,
    },
    /// `reply_to` is present but not a topic one can publish on.
    #[error("envelope field `reply_to` is not a topic to publish on: {reason}")]
    InvalidReplyTo {
        /// The reply topic found.
        topic: String,
        /// What is wrong with it.
        reason: TopicError,
    },
    /// `summary` is empty or only whitespace.
    #[error("envelope field `summary` is empty; every message needs a one-line summary")]
    EmptySummary,
    /// `summary` contains a line break; it is shown on one line in the
    /// console and in mail subjects.
    #[error(
        "envelope field `summary` spans several lines, but a summary is one line: {summary:?}"
    )]
    MultiLineSummary {
        /// The summary found.
        summary: String,
    },
    /// `summary` contains a control character (other than tab), which would
    /// garble a terminal.
    #[error("envelope field `summary` contains control characters: {summary:?}")]
    ControlCharInSummary {
        /// The summary found.
        summary: String,
    },
    /// `source.bridge` is empty or only whitespace.
    #[error("envelope field `source.bridge` is empty; it names the bridge or tool that published")]
    EmptyBridge,
}

/// Who published a message: the bridge (or tool), and where it ran.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    /// The bridge or tool that published (`git`, `mail`, `cron`, `cli`);
    /// never empty in a valid envelope.
    pub bridge: String,
    /// The host it ran on, to find the legacy system behind a message.
    pub host: Option<String>,
    /// The local user it ran as, when that matters (a hook, a cron job).
    pub user: Option<String>,
    /// Fields of `source` this version does not know, kept so that a round
    /// trip loses nothing.
    pub extra: Map<String, Value>,
}

/// One signalbox message: the wire envelope, parsed and validated.
///
/// Build one with [`Envelope::builder`]; read one with
/// [`Envelope::from_slice`] or [`Payload::decode`]; write one with
/// [`Envelope::to_vec`]. Serde (de)serialisation uses the same wire format
/// and validation, so an envelope can be embedded in other records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The format version, [`ENVELOPE_VERSION`].
    pub v: u32,
    /// A unique id (a UUIDv7 when signalbox made it), for dedup, failure
    /// records and replay.
    pub id: Uuid,
    /// The topic the message was published on.
    pub topic: String,
    /// When the event happened. Written as RFC 3339 UTC with exactly three
    /// fractional digits; read from any RFC 3339 time.
    pub time: DateTime<Utc>,
    /// Who published it.
    pub source: Source,
    /// The person (or account) who caused the event, when there is one.
    pub agent: Option<String>,
    /// How much it matters.
    pub severity: Severity,
    /// One line a person reads in the console and in mail subjects.
    pub summary: String,
    /// Named links to more detail (`url`, `diff`, `build_log`, ...);
    /// omitted on the wire when empty.
    pub links: BTreeMap<String, String>,
    /// Bridge-specific data; omitted on the wire when null.
    pub body: Value,
    /// A topic to answer on, for request/reply exchanges.
    pub reply_to: Option<String>,
    /// Top-level fields this version does not know, kept so that a round
    /// trip loses nothing.
    pub extra: Map<String, Value>,
}

impl Envelope {
    /// Starts building an envelope for `topic` with `summary`; see
    /// [`EnvelopeBuilder`] for the defaults.
    pub fn builder(topic: impl Into<String>, summary: impl Into<String>) -> EnvelopeBuilder {
        EnvelopeBuilder::new(topic.into(), summary.into())
    }

    /// Checks the rules a parsed envelope must follow: `v` is
    /// [`ENVELOPE_VERSION`], `id` is not nil (any UUID version is accepted,
    /// for foreign producers), `topic` (and `reply_to`, if any) is a topic
    /// one can publish on, `summary` is one non-empty line, `source.bridge`
    /// is not empty.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if self.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion {
                found: u64::from(self.v),
            });
        }
        if self.id.is_nil() {
            return Err(EnvelopeError::NilId);
        }
        topic::validate_topic_name(&self.topic).map_err(|reason| EnvelopeError::InvalidTopic {
            topic: self.topic.clone(),
            reason,
        })?;
        validate_summary(&self.summary)?;
        if self.source.bridge.trim().is_empty() {
            return Err(EnvelopeError::EmptyBridge);
        }
        if let Some(reply_to) = &self.reply_to {
            topic::validate_topic_name(reply_to).map_err(|reason| {
                EnvelopeError::InvalidReplyTo {
                    topic: reply_to.clone(),
                    reason,
                }
            })?;
        }
        Ok(())
    }

    /// Parses and validates an envelope from its wire bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| EnvelopeError::NotJson {
            reason: e.to_string(),
        })?;
        Envelope::from_value(&value)
    }

    /// Reads and validates an envelope from already-parsed JSON, checking
    /// every field so that the error names exactly what is wrong.
    pub fn from_value(value: &Value) -> Result<Envelope, EnvelopeError> {
        let Value::Object(map) = value else {
            return Err(EnvelopeError::NotAnObject);
        };
        let envelope = Envelope {
            v: read_version(map)?,
            id: read_id(map)?,
            topic: required_str(map, "topic")?.to_owned(),
            time: read_time(map)?,
            source: read_source(map)?,
            agent: optional_str(map, "agent")?,
            severity: read_severity(map)?,
            summary: required_str(map, "summary")?.to_owned(),
            links: read_links(map)?,
            body: map.get("body").cloned().unwrap_or(Value::Null),
            reply_to: optional_str(map, "reply_to")?,
            extra: unknown_fields(map, &ENVELOPE_FIELDS),
        };
        envelope.validate()?;
        Ok(envelope)
    }

    /// The wire bytes: compact UTF-8 JSON.
    pub fn to_vec(&self) -> Vec<u8> {
        // Cannot fail: every field is a string, a number, a map with string
        // keys or a serde_json::Value, all of which JSON can hold.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The wire form as a string: compact JSON.
    pub fn to_json_string(&self) -> String {
        // Cannot fail, as for `to_vec`.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The wire form as indented JSON, for a person to read.
    pub fn to_json_pretty(&self) -> String {
        // Cannot fail, as for `to_vec`.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Writes `time` the way the envelope carries it: RFC 3339, UTC, exactly
/// three fractional digits (truncated) and `Z`, e.g.
/// `2026-11-24T19:03:00.123Z`.
pub fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serde adapter for `DateTime<Utc>` fields written like the envelope's
/// `time` (RFC 3339, UTC, milliseconds, `Z`) and read from any RFC 3339
/// time: `#[serde(with = "crate::envelope::time_ms")]`.
pub mod time_ms {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the time with millisecond precision.
    pub fn serialize<S: Serializer>(
        time: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_time(time))
    }

    /// Reads any RFC 3339 time.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time: {e}")))
    }

    /// The same for `Option<DateTime<Utc>>`.
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes the time with millisecond precision, or null.
        pub fn serialize<S: Serializer>(
            time: &Option<DateTime<Utc>>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match time {
                Some(t) => serializer.serialize_str(&super::super::format_time(t)),
                None => serializer.serialize_none(),
            }
        }

        /// Reads any RFC 3339 time, or null.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            match Option::<String>::deserialize(deserializer)? {
                None => Ok(None),
                Some(text) => DateTime::parse_from_rfc3339(&text)
                    .map(|t| Some(t.with_timezone(&Utc)))
                    .map_err(|e| {
                        serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time: {e}"))
                    }),
            }
        }
    }
}

/// Turns arbitrary text into a valid one-line summary: every control
/// character and line or paragraph separator becomes a space, a run of
/// whitespace that held one collapses to a single space (so a folded mail
/// subject reads naturally), and the ends are trimmed. The result may be
/// empty, which [`Envelope::validate`] rejects.
pub fn sanitize_summary(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // The whitespace seen since the last visible character, and whether it
    // held something that had to be replaced.
    let mut gap = String::new();
    let mut gap_replaced = false;
    for c in text.chars() {
        if breaks_a_line(c) || c.is_control() {
            gap_replaced = true;
        } else if c.is_whitespace() {
            gap.push(c);
        } else {
            if gap_replaced {
                out.push(' ');
            } else {
                out.push_str(&gap);
            }
            gap.clear();
            gap_replaced = false;
            out.push(c);
        }
    }
    // The trailing gap is dropped: trimming. Leading whitespace is trimmed
    // here as well.
    let leading = out.len() - out.trim_start().len();
    out.drain(..leading);
    out
}

/// Characters that end a line for some reader (terminals, mail clients,
/// Unicode line breaking).
fn breaks_a_line(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// A summary is one non-empty line free of control characters (tab aside).
fn validate_summary(summary: &str) -> Result<(), EnvelopeError> {
    if summary.trim().is_empty() {
        return Err(EnvelopeError::EmptySummary);
    }
    if summary.chars().any(breaks_a_line) {
        return Err(EnvelopeError::MultiLineSummary {
            summary: summary.to_owned(),
        });
    }
    if summary.chars().any(|c| c.is_control() && c != '\t') {
        return Err(EnvelopeError::ControlCharInSummary {
            summary: summary.to_owned(),
        });
    }
    Ok(())
}

/// The name of a JSON value's type, for [`EnvelopeError::WrongType`].
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(field: &'static str, expected: &'static str, found: &Value) -> EnvelopeError {
    EnvelopeError::WrongType {
        field,
        expected,
        found: json_type(found),
    }
}

/// A required field, which must be present (null counts as present, and
/// is then reported as the wrong type).
fn required<'m>(
    map: &'m Map<String, Value>,
    field: &'static str,
) -> Result<&'m Value, EnvelopeError> {
    map.get(field).ok_or(EnvelopeError::MissingField { field })
}

/// A required string field. `name` is the key in `map`; `field` the name
/// reported (they differ for nested fields such as `source.bridge`).
fn required_str_as<'m>(
    map: &'m Map<String, Value>,
    name: &str,
    field: &'static str,
) -> Result<&'m str, EnvelopeError> {
    match map.get(name) {
        None => Err(EnvelopeError::MissingField { field }),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(wrong_type(field, "a string", other)),
    }
}

fn required_str<'m>(
    map: &'m Map<String, Value>,
    field: &'static str,
) -> Result<&'m str, EnvelopeError> {
    required_str_as(map, field, field)
}

/// An optional string field: absent or null is `None`.
fn optional_str_as(
    map: &Map<String, Value>,
    name: &str,
    field: &'static str,
) -> Result<Option<String>, EnvelopeError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(field, "a string", other)),
    }
}

fn optional_str(
    map: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, EnvelopeError> {
    optional_str_as(map, field, field)
}

fn read_version(map: &Map<String, Value>) -> Result<u32, EnvelopeError> {
    let value = required(map, "v")?;
    let Some(found) = value.as_u64() else {
        return Err(wrong_type("v", "a positive integer", value));
    };
    u32::try_from(found)
        .ok()
        .filter(|v| *v == ENVELOPE_VERSION)
        .ok_or(EnvelopeError::UnsupportedVersion { found })
}

fn read_id(map: &Map<String, Value>) -> Result<Uuid, EnvelopeError> {
    let text = required_str(map, "id")?;
    Uuid::parse_str(text).map_err(|_| EnvelopeError::InvalidId {
        value: text.to_owned(),
    })
}

fn read_time(map: &Map<String, Value>) -> Result<DateTime<Utc>, EnvelopeError> {
    let text = required_str(map, "time")?;
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| EnvelopeError::InvalidTime {
            value: text.to_owned(),
        })
}

fn read_source(map: &Map<String, Value>) -> Result<Source, EnvelopeError> {
    let value = required(map, "source")?;
    let Value::Object(source) = value else {
        return Err(wrong_type("source", "an object", value));
    };
    Ok(Source {
        bridge: required_str_as(source, "bridge", "source.bridge")?.to_owned(),
        host: optional_str_as(source, "host", "source.host")?,
        user: optional_str_as(source, "user", "source.user")?,
        extra: unknown_fields(source, &SOURCE_FIELDS),
    })
}

/// Absent or null is the default severity; names are read as
/// [`Severity::from_str`] does (any case, `warn`, `err`).
fn read_severity(map: &Map<String, Value>) -> Result<Severity, EnvelopeError> {
    match map.get("severity") {
        None | Some(Value::Null) => Ok(Severity::default()),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| EnvelopeError::InvalidSeverity { value: s.clone() }),
        Some(other) => Err(wrong_type("severity", "a string", other)),
    }
}

/// Absent or null is no links; otherwise an object of strings.
fn read_links(map: &Map<String, Value>) -> Result<BTreeMap<String, String>, EnvelopeError> {
    const EXPECTED: &str = "an object whose values are strings";
    match map.get("links") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(links)) => links
            .iter()
            .map(|(name, target)| match target {
                Value::String(s) => Ok((name.clone(), s.clone())),
                other => Err(wrong_type("links", EXPECTED, other)),
            })
            .collect(),
        Some(other) => Err(wrong_type("links", EXPECTED, other)),
    }
}

fn unknown_fields(map: &Map<String, Value>, known: &[&str]) -> Map<String, Value> {
    map.iter()
        .filter(|(name, _)| !known.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

// Serialisation is written by hand rather than derived with
// `#[serde(flatten)]`: a key in `extra` that names a defined field (put there
// by code, never by parsing) must not produce a duplicate key that would
// override the real field for some readers.
impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("v", &self.v)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("topic", &self.topic)?;
        map.serialize_entry("time", &format_time(&self.time))?;
        map.serialize_entry("source", &self.source)?;
        if let Some(agent) = &self.agent {
            map.serialize_entry("agent", agent)?;
        }
        map.serialize_entry("severity", &self.severity)?;
        map.serialize_entry("summary", &self.summary)?;
        if !self.links.is_empty() {
            map.serialize_entry("links", &self.links)?;
        }
        if !self.body.is_null() {
            map.serialize_entry("body", &self.body)?;
        }
        if let Some(reply_to) = &self.reply_to {
            map.serialize_entry("reply_to", reply_to)?;
        }
        for (name, value) in &self.extra {
            if !ENVELOPE_FIELDS.contains(&name.as_str()) {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("bridge", &self.bridge)?;
        if let Some(host) = &self.host {
            map.serialize_entry("host", host)?;
        }
        if let Some(user) = &self.user {
            map.serialize_entry("user", user)?;
        }
        for (name, value) in &self.extra {
            if !SOURCE_FIELDS.contains(&name.as_str()) {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Envelope {
    /// Reads the wire format with the same checks as
    /// [`Envelope::from_value`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Envelope::from_value(&value).map_err(serde::de::Error::custom)
    }
}

/// Builds a valid [`Envelope`]; start with [`Envelope::builder`].
///
/// Defaults: severity `info`, bridge [`DEFAULT_BRIDGE`] (`cli`), host this
/// machine's hostname, no agent, user, links, body or reply topic, a fresh
/// UUIDv7 id, and the current time.
#[derive(Debug, Clone)]
#[must_use = "an EnvelopeBuilder does nothing until .build() is called"]
pub struct EnvelopeBuilder {
    /// The topic the envelope will be published on.
    topic: String,
    /// The summary as given; sanitised by `build`.
    summary: String,
    severity: Severity,
    agent: Option<String>,
    bridge: String,
    /// `None` means "this machine's hostname".
    host: Option<String>,
    user: Option<String>,
    body: Value,
    links: BTreeMap<String, String>,
    reply_to: Option<String>,
    /// `None` means a fresh UUIDv7.
    id: Option<Uuid>,
    /// `None` means now.
    time: Option<DateTime<Utc>>,
}

impl EnvelopeBuilder {
    fn new(topic: String, summary: String) -> Self {
        EnvelopeBuilder {
            topic,
            summary,
            severity: Severity::default(),
            agent: None,
            bridge: DEFAULT_BRIDGE.to_owned(),
            host: None,
            user: None,
            body: Value::Null,
            links: BTreeMap::new(),
            reply_to: None,
            id: None,
            time: None,
        }
    }

    /// Sets the severity (default `info`).
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// Sets the person or account who caused the event.
    pub fn agent(mut self, agent: impl Into<String>) -> Self {
        self.agent = Some(agent.into());
        self
    }

    /// Sets `source.bridge`, the bridge or tool publishing (default `cli`).
    pub fn bridge(mut self, bridge: impl Into<String>) -> Self {
        self.bridge = bridge.into();
        self
    }

    /// Sets `source.host` (default: this machine's hostname).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Sets `source.user`.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the bridge-specific body (null, the default, is omitted).
    pub fn body(mut self, body: Value) -> Self {
        self.body = body;
        self
    }

    /// Adds a named link (`url`, `diff`, ...); a second link with the same
    /// name replaces the first.
    pub fn link(mut self, name: impl Into<String>, target: impl Into<String>) -> Self {
        self.links.insert(name.into(), target.into());
        self
    }

    /// Sets the topic a reply should be published on.
    pub fn reply_to(mut self, topic: impl Into<String>) -> Self {
        self.reply_to = Some(topic.into());
        self
    }

    /// Sets the id instead of a fresh UUIDv7 (for tests, or to re-publish a
    /// message under its own id).
    pub fn id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the time instead of now; it is truncated to milliseconds, the
    /// precision of the wire format.
    pub fn time(mut self, time: DateTime<Utc>) -> Self {
        self.time = Some(time);
        self
    }

    /// Finishes the envelope: fills in the id and time, makes the summary
    /// one line ([`sanitize_summary`]) and validates the result
    /// ([`Envelope::validate`]), so an empty summary, an empty bridge or an
    /// unpublishable topic is an error here rather than on the bus.
    pub fn build(self) -> Result<Envelope, EnvelopeError> {
        let envelope = Envelope {
            v: ENVELOPE_VERSION,
            id: self.id.unwrap_or_else(Uuid::now_v7),
            topic: self.topic,
            // Truncated so that the envelope equals itself after a round
            // trip through the wire format.
            time: self.time.unwrap_or_else(Utc::now).trunc_subsecs(3),
            source: Source {
                bridge: self.bridge,
                host: self.host.or_else(|| local_hostname().map(str::to_owned)),
                user: self.user,
                extra: Map::new(),
            },
            agent: self.agent,
            severity: self.severity,
            summary: sanitize_summary(&self.summary),
            links: self.links,
            body: self.body,
            reply_to: self.reply_to,
            extra: Map::new(),
        };
        envelope.validate()?;
        Ok(envelope)
    }
}

/// This machine's hostname, looked up once; `None` if it is empty.
pub fn local_hostname() -> Option<&'static str> {
    static HOSTNAME: OnceLock<Option<String>> = OnceLock::new();
    HOSTNAME
        .get_or_init(|| {
            let name = gethostname::gethostname()
                .to_string_lossy()
                .trim()
                .to_owned();
            (!name.is_empty()).then_some(name)
        })
        .as_deref()
}

/// A received payload, decoded once on arrival into what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A valid signalbox envelope.
    Envelope(Box<Envelope>),
    /// JSON that is not a valid envelope (a foreign publisher, or an
    /// envelope that failed validation).
    Json(Value),
    /// UTF-8 text without control characters other than tab, CR and LF.
    Text(String),
    /// Anything else; shown as hex.
    Binary(Vec<u8>),
}

impl Payload {
    /// Decodes any payload; never fails. A valid envelope is
    /// [`Payload::Envelope`]; other JSON (including an object that is an
    /// invalid envelope, and bare JSON scalars such as `42`) is
    /// [`Payload::Json`]; UTF-8 text without control characters other than
    /// tab, CR and LF is [`Payload::Text`] (the empty payload is empty
    /// text); anything else is [`Payload::Binary`].
    pub fn decode(bytes: &[u8]) -> Payload {
        if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
            return match Envelope::from_value(&value) {
                Ok(envelope) => Payload::Envelope(Box::new(envelope)),
                Err(_) => Payload::Json(value),
            };
        }
        match std::str::from_utf8(bytes) {
            Ok(text) if is_plain_text(text) => Payload::Text(text.to_owned()),
            _ => Payload::Binary(bytes.to_vec()),
        }
    }

    /// Decodes at most `cap` bytes, so a huge payload costs no more than
    /// `cap`. Returns the payload and whether it was cut. A cut payload is
    /// never parsed as JSON: it is the text of the first `cap` bytes (less a
    /// character split by the cut) when that is plain text, or else
    /// [`Payload::Binary`] of the first `cap` bytes.
    pub fn decode_capped(bytes: &[u8], cap: usize) -> (Payload, bool) {
        let Some(cut) = bytes.get(..cap).filter(|_| cap < bytes.len()) else {
            return (Payload::decode(bytes), false);
        };
        let text = match std::str::from_utf8(cut) {
            Ok(text) => Some(text),
            // The cut fell inside a character: keep the text before it.
            Err(e) if e.error_len().is_none() => cut
                .get(..e.valid_up_to())
                .and_then(|valid| std::str::from_utf8(valid).ok()),
            Err(_) => None,
        };
        let payload = match text {
            Some(text) if is_plain_text(text) => Payload::Text(text.to_owned()),
            _ => Payload::Binary(cut.to_vec()),
        };
        (payload, true)
    }

    /// One line describing the payload, at most `max_chars` characters
    /// (ending in `…` when cut), with control characters shown as spaces:
    /// an envelope's summary, compact JSON, the first non-blank line of
    /// text, or `<N bytes binary>`.
    pub fn summary_line(&self, max_chars: usize) -> String {
        let line = match self {
            Payload::Envelope(envelope) => truncate_chars(&envelope.summary, max_chars),
            Payload::Json(value) => {
                truncate_chars(&compact_json_prefix(value, max_chars), max_chars)
            }
            Payload::Text(text) => {
                let first = text
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or("");
                truncate_chars(first, max_chars)
            }
            Payload::Binary(bytes) => {
                truncate_chars(&format!("<{} bytes binary>", bytes.len()), max_chars)
            }
        };
        line.chars()
            .map(|c| {
                if c.is_control() || breaks_a_line(c) {
                    ' '
                } else {
                    c
                }
            })
            .collect()
    }

    /// The envelope's severity; `None` for anything that is not an
    /// envelope.
    pub fn severity(&self) -> Option<Severity> {
        self.envelope().map(|e| e.severity)
    }

    /// The envelope, if the payload is one.
    pub fn envelope(&self) -> Option<&Envelope> {
        match self {
            Payload::Envelope(envelope) => Some(envelope),
            _ => None,
        }
    }

    /// A short name of the kind: `envelope`, `json`, `text` or `binary`.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::Envelope(_) => "envelope",
            Payload::Json(_) => "json",
            Payload::Text(_) => "text",
            Payload::Binary(_) => "binary",
        }
    }
}

/// [`Payload::decode_capped`] as a free function.
pub fn decode_capped(bytes: &[u8], cap: usize) -> (Payload, bool) {
    Payload::decode_capped(bytes, cap)
}

/// Text the console may show as text: no control characters but tab, CR,
/// LF.
fn is_plain_text(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
}

/// `text` cut to at most `max_chars` characters, the last being `…` when
/// something was cut.
fn truncate_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some(_) => {
            let keep = max_chars.saturating_sub(1);
            let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
            let mut out = text.get(..end).unwrap_or_default().to_owned();
            if max_chars > 0 {
                out.push('…');
            }
            out
        }
    }
}

/// The beginning of `value`'s compact JSON, long enough to hold more than
/// `max_chars` characters when there are that many: a large payload is not
/// serialised in full for one line.
fn compact_json_prefix(value: &Value, max_chars: usize) -> String {
    /// Collects bytes up to a limit, then refuses more, which stops the
    /// serialiser early.
    struct Bounded {
        bytes: Vec<u8>,
        limit: usize,
    }
    impl io::Write for Bounded {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = self.limit.saturating_sub(self.bytes.len());
            if room == 0 {
                return Err(io::Error::other("enough for one line"));
            }
            let take = buf.len().min(room);
            self.bytes
                .extend_from_slice(buf.get(..take).unwrap_or_default());
            Ok(take)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    // A character is at most 4 bytes: this holds max_chars + 1 whole
    // characters, enough to know whether to cut.
    let limit = max_chars.saturating_add(2).saturating_mul(4);
    let mut out = Bounded {
        bytes: Vec::new(),
        limit,
    };
    // An error only means the limit was reached.
    let _ = serde_json::to_writer(&mut out, value);
    String::from_utf8_lossy(&out.bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    const ID: &str = "0193c3a4-5b6e-7f00-8a1b-2c3d4e5f6a7b";

    /// The envelope from the design document, as a JSON value.
    fn design_example() -> Value {
        json!({
            "v": 1,
            "id": ID,
            "topic": "signalbox/prod/git/kernel/commit",
            "time": "2026-11-24T19:03:00.123Z",
            "source": {"bridge": "git", "host": "pkgs01", "user": "jkeating"},
            "agent": "jkeating",
            "severity": "info",
            "summary": "jkeating pushed to kernel (f14): \"fix oops in ext4\"",
            "links": {"url": "https://pkgs.example.org/kernel/c/abc"},
            "body": {"commit": "abc", "branch": "f14"}
        })
    }

    /// The design example with one field changed (or removed when `value`
    /// is `None`).
    fn example_with(field: &str, value: Option<Value>) -> Vec<u8> {
        let mut example = design_example();
        if let Some(map) = example.as_object_mut() {
            match value {
                Some(value) => {
                    map.insert(field.to_owned(), value);
                }
                None => {
                    map.remove(field);
                }
            }
        }
        serde_json::to_vec(&example).unwrap_or_default()
    }

    fn parse_err(bytes: &[u8]) -> EnvelopeError {
        match Envelope::from_slice(bytes) {
            Ok(envelope) => panic!("expected an error, parsed {envelope:?}"),
            Err(e) => e,
        }
    }

    fn sample() -> Envelope {
        Envelope::builder("signalbox/prod/git/kernel/commit", "pushed")
            .id(Uuid::parse_str(ID).expect("test id"))
            .time(Utc.with_ymd_and_hms(2026, 11, 24, 19, 3, 0).unwrap())
            .bridge("git")
            .host("pkgs01")
            .build()
            .expect("valid")
    }

    // ---- Severity ----

    #[test]
    fn severity_order_default_and_names() {
        assert!(Severity::Debug < Severity::Info);
        assert!(Severity::Info < Severity::Warning);
        assert!(Severity::Warning < Severity::Error);
        assert_eq!(Severity::default(), Severity::Info);
        for s in Severity::ALL {
            assert_eq!(s.to_string(), s.as_str());
            assert_eq!(s.as_str().parse::<Severity>(), Ok(s));
            assert_eq!(serde_json::to_value(s).ok(), Some(json!(s.as_str())));
            assert_eq!(
                serde_json::from_value::<Severity>(json!(s.as_str())).ok(),
                Some(s)
            );
        }
        assert_eq!(format!("{:>8}", Severity::Info), "    info");
    }

    #[test]
    fn severity_parsing_is_forgiving() {
        assert_eq!("WARN".parse(), Ok(Severity::Warning));
        assert_eq!(" Warning ".parse(), Ok(Severity::Warning));
        assert_eq!("err".parse(), Ok(Severity::Error));
        assert_eq!("ERROR".parse(), Ok(Severity::Error));
        assert_eq!("Debug".parse(), Ok(Severity::Debug));
        let err = "fatal".parse::<Severity>().unwrap_err();
        assert_eq!(err.value, "fatal");
        assert_eq!(
            err.to_string(),
            "unknown severity `fatal`; expected debug, info, warning or error"
        );
    }

    // ---- parsing ----

    #[test]
    fn parses_the_design_example() {
        let bytes = serde_json::to_vec(&design_example()).unwrap();
        let e = Envelope::from_slice(&bytes).expect("valid");
        assert_eq!(e.v, 1);
        assert_eq!(e.id.to_string(), ID);
        assert_eq!(e.topic, "signalbox/prod/git/kernel/commit");
        assert_eq!(format_time(&e.time), "2026-11-24T19:03:00.123Z");
        assert_eq!(e.source.bridge, "git");
        assert_eq!(e.source.host.as_deref(), Some("pkgs01"));
        assert_eq!(e.source.user.as_deref(), Some("jkeating"));
        assert_eq!(e.agent.as_deref(), Some("jkeating"));
        assert_eq!(e.severity, Severity::Info);
        assert_eq!(
            e.links.get("url").map(String::as_str),
            Some("https://pkgs.example.org/kernel/c/abc")
        );
        assert_eq!(e.body["branch"], "f14");
        assert_eq!(e.reply_to, None);
        assert!(e.extra.is_empty() && e.source.extra.is_empty());
        // And back: the same JSON.
        assert_eq!(
            serde_json::from_slice::<Value>(&e.to_vec()).unwrap(),
            design_example()
        );
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let minimal = json!({"v":1, "id":ID, "topic":"a/b", "time":"2026-01-01T00:00:00Z",
            "source":{"bridge":"x"}, "summary":"s"});
        let e = Envelope::from_value(&minimal).expect("valid");
        assert_eq!(e.severity, Severity::Info);
        assert_eq!(
            (e.agent, e.reply_to, e.source.host, e.source.user),
            (None, None, None, None)
        );
        assert!(e.links.is_empty());
        assert!(e.body.is_null());
        let nulls = json!({"v":1, "id":ID, "topic":"a/b", "time":"2026-01-01T00:00:00Z",
            "source":{"bridge":"x", "host":null, "user":null}, "summary":"s", "agent":null,
            "severity":null, "links":null, "body":null, "reply_to":null});
        assert!(Envelope::from_value(&nulls).is_ok());
    }

    #[test]
    fn error_not_json() {
        let err = parse_err(b"{\"v\":1,");
        assert!(matches!(err, EnvelopeError::NotJson { .. }), "{err:?}");
        assert!(err.to_string().starts_with("payload is not JSON"));
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(matches!(
            parse_err(b"\xff\xfe"),
            EnvelopeError::NotJson { .. }
        ));
        assert!(matches!(parse_err(b""), EnvelopeError::NotJson { .. }));
    }

    #[test]
    fn error_not_an_object() {
        for bytes in [&b"[1,2]"[..], b"\"text\"", b"42", b"null", b"true"] {
            assert_eq!(parse_err(bytes), EnvelopeError::NotAnObject);
        }
    }

    #[test]
    fn error_missing_fields() {
        for field in ["v", "id", "topic", "time", "source", "summary"] {
            assert_eq!(
                parse_err(&example_with(field, None)),
                EnvelopeError::MissingField { field },
                "{field}"
            );
        }
        let err = parse_err(&example_with("source", Some(json!({"host": "h"}))));
        assert_eq!(
            err,
            EnvelopeError::MissingField {
                field: "source.bridge"
            }
        );
        assert_eq!(err.to_string(), "envelope has no `source.bridge` field");
    }

    #[test]
    fn error_wrong_types() {
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            ("v", json!("1"), "v", "a string"),
            ("v", json!(-1), "v", "a number"),
            ("v", json!(1.5), "v", "a number"),
            ("id", json!(7), "id", "a number"),
            ("topic", json!(null), "topic", "null"),
            ("time", json!(1_700_000_000), "time", "a number"),
            ("source", json!("git"), "source", "a string"),
            ("source", json!({"bridge": 1}), "source.bridge", "a number"),
            (
                "source",
                json!({"bridge": "git", "host": ["a"]}),
                "source.host",
                "an array",
            ),
            (
                "source",
                json!({"bridge": "git", "user": {}}),
                "source.user",
                "an object",
            ),
            ("agent", json!(true), "agent", "a boolean"),
            ("severity", json!(3), "severity", "a number"),
            ("summary", json!(["a"]), "summary", "an array"),
            ("links", json!(["a"]), "links", "an array"),
            ("links", json!({"url": 1}), "links", "a number"),
            ("reply_to", json!(5), "reply_to", "a number"),
        ];
        for (key, value, field, found) in cases {
            match parse_err(&example_with(key, Some(value.clone()))) {
                EnvelopeError::WrongType {
                    field: f,
                    found: fo,
                    ..
                } => {
                    assert_eq!((f, fo), (field, found), "{key} = {value}");
                }
                other => panic!("{key} = {value}: {other:?}"),
            }
        }
        assert_eq!(
            parse_err(&example_with("time", Some(json!(5)))).to_string(),
            "envelope field `time` must be a string, not a number"
        );
    }

    #[test]
    fn error_unsupported_version() {
        for (v, found) in [
            (json!(2), 2),
            (json!(0), 0),
            (json!(1u64 << 40), 1u64 << 40),
        ] {
            assert_eq!(
                parse_err(&example_with("v", Some(v))),
                EnvelopeError::UnsupportedVersion { found }
            );
        }
        assert_eq!(
            EnvelopeError::UnsupportedVersion { found: 2 }.to_string(),
            "envelope version 2 is not supported; this signalbox reads version 1"
        );
        let mut e = sample();
        e.v = 3;
        assert_eq!(
            e.validate(),
            Err(EnvelopeError::UnsupportedVersion { found: 3 })
        );
    }

    #[test]
    fn error_invalid_and_nil_id() {
        let err = parse_err(&example_with("id", Some(json!("not-a-uuid"))));
        assert_eq!(
            err,
            EnvelopeError::InvalidId {
                value: "not-a-uuid".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "envelope field `id` is not a UUID: \"not-a-uuid\""
        );
        assert_eq!(
            parse_err(&example_with("id", Some(json!(Uuid::nil().to_string())))),
            EnvelopeError::NilId
        );
        // Any other version is accepted, for foreign producers.
        let v4 = "4f1b1c9e-3f0a-4b6e-9c4a-2a8b7c6d5e4f";
        assert!(Envelope::from_slice(&example_with("id", Some(json!(v4)))).is_ok());
    }

    #[test]
    fn error_invalid_time() {
        for bad in [
            "yesterday",
            "2026-11-24",
            "2026-11-24T19:03:00",
            "2026-13-01T00:00:00Z",
            "",
        ] {
            assert_eq!(
                parse_err(&example_with("time", Some(json!(bad)))),
                EnvelopeError::InvalidTime { value: bad.into() },
                "{bad}"
            );
        }
        assert_eq!(
            EnvelopeError::InvalidTime {
                value: "yesterday".into()
            }
            .to_string(),
            "envelope field `time` is not an RFC 3339 timestamp: \"yesterday\""
        );
    }

    #[test]
    fn error_invalid_severity() {
        let err = parse_err(&example_with("severity", Some(json!("fatal"))));
        assert_eq!(
            err,
            EnvelopeError::InvalidSeverity {
                value: "fatal".into()
            }
        );
        assert!(err
            .to_string()
            .contains("expected debug, info, warning or error"));
        // The forgiving names are read, and written back canonically.
        let bytes = example_with("severity", Some(json!("WARN")));
        let e = Envelope::from_slice(&bytes).expect("valid");
        assert_eq!(e.severity, Severity::Warning);
        assert!(e.to_json_string().contains("\"severity\":\"warning\""));
    }

    #[test]
    fn error_invalid_topic_and_reply_to() {
        let err = parse_err(&example_with("topic", Some(json!("a/+/b"))));
        assert_eq!(
            err,
            EnvelopeError::InvalidTopic {
                topic: "a/+/b".into(),
                reason: TopicError::Wildcard {
                    topic: "a/+/b".into()
                }
            }
        );
        assert_eq!(
            err.to_string(),
            "envelope field `topic` is not a topic to publish on: topic `a/+/b` contains a \
             wildcard (`+` or `#`); publish needs a concrete topic"
        );
        assert!(matches!(
            parse_err(&example_with("topic", Some(json!("")))),
            EnvelopeError::InvalidTopic {
                reason: TopicError::Empty,
                ..
            }
        ));
        assert!(matches!(
            parse_err(&example_with("topic", Some(json!("a\u{0}b")))),
            EnvelopeError::InvalidTopic {
                reason: TopicError::Nul,
                ..
            }
        ));
        assert_eq!(
            parse_err(&example_with("reply_to", Some(json!("replies/#")))),
            EnvelopeError::InvalidReplyTo {
                topic: "replies/#".into(),
                reason: TopicError::Wildcard {
                    topic: "replies/#".into()
                }
            }
        );
        let ok = Envelope::from_slice(&example_with("reply_to", Some(json!("signalbox/_reply/x"))));
        assert_eq!(
            ok.map(|e| e.reply_to),
            Ok(Some("signalbox/_reply/x".to_owned()))
        );
    }

    #[test]
    fn error_summaries() {
        for empty in ["", "   ", "\t"] {
            assert_eq!(
                parse_err(&example_with("summary", Some(json!(empty)))),
                EnvelopeError::EmptySummary
            );
        }
        for multi in ["one\ntwo", "one\r\ntwo", "a\u{2028}b", "trailing\n"] {
            assert_eq!(
                parse_err(&example_with("summary", Some(json!(multi)))),
                EnvelopeError::MultiLineSummary {
                    summary: multi.into()
                },
                "{multi:?}"
            );
        }
        assert_eq!(
            parse_err(&example_with(
                "summary",
                Some(json!("red \u{1b}[31m alert"))
            )),
            EnvelopeError::ControlCharInSummary {
                summary: "red \u{1b}[31m alert".into()
            }
        );
        // A tab is not a line break.
        assert!(Envelope::from_slice(&example_with("summary", Some(json!("a\tb")))).is_ok());
        assert!(EnvelopeError::EmptySummary
            .to_string()
            .contains("one-line summary"));
        assert!(EnvelopeError::MultiLineSummary {
            summary: "a\nb".into()
        }
        .to_string()
        .contains("\"a\\nb\""));
    }

    #[test]
    fn error_empty_bridge() {
        let err = parse_err(&example_with("source", Some(json!({"bridge": " "}))));
        assert_eq!(err, EnvelopeError::EmptyBridge);
        assert!(err.to_string().contains("source.bridge"));
        assert_eq!(
            Envelope::builder("a/b", "s").bridge("").build(),
            Err(EnvelopeError::EmptyBridge)
        );
    }

    // ---- time ----

    #[test]
    fn time_is_written_with_milliseconds_and_z() {
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 19, 3, 0).unwrap();
        assert_eq!(format_time(&t), "2026-11-24T19:03:00.000Z");
        let t = t + chrono::Duration::nanoseconds(123_456_789);
        assert_eq!(format_time(&t), "2026-11-24T19:03:00.123Z");
        let mut e = sample();
        e.time = t;
        let json: Value = serde_json::from_slice(&e.to_vec()).unwrap();
        assert_eq!(json["time"], "2026-11-24T19:03:00.123Z");
    }

    #[test]
    fn time_reads_any_rfc3339() {
        for (text, expect) in [
            ("2026-11-24T19:03:00Z", "2026-11-24T19:03:00.000Z"),
            ("2026-11-24T19:03:00.1Z", "2026-11-24T19:03:00.100Z"),
            ("2026-11-24T19:03:00.123456789Z", "2026-11-24T19:03:00.123Z"),
            ("2026-11-24T20:03:00.5+01:00", "2026-11-24T19:03:00.500Z"),
            ("2026-11-24T14:03:00-05:00", "2026-11-24T19:03:00.000Z"),
            ("2026-11-24t19:03:00z", "2026-11-24T19:03:00.000Z"),
        ] {
            let e = Envelope::from_slice(&example_with("time", Some(json!(text))))
                .unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(format_time(&e.time), expect, "{text}");
        }
    }

    #[test]
    fn builder_truncates_time_to_milliseconds() {
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::nanoseconds(987_654_321);
        let e = Envelope::builder("a/b", "s").time(t).build().unwrap();
        assert_eq!(e.time.timestamp_subsec_nanos(), 987_000_000);
        let now = Envelope::builder("a/b", "s").build().unwrap();
        assert_eq!(now.time.timestamp_subsec_nanos() % 1_000_000, 0);
    }

    // ---- builder ----

    #[test]
    fn builder_defaults() {
        let before = Utc::now().trunc_subsecs(3);
        let e = Envelope::builder("signalbox/dev/cli/test", "hello")
            .build()
            .expect("valid");
        let after = Utc::now();
        assert_eq!(e.v, ENVELOPE_VERSION);
        assert_eq!(e.id.get_version_num(), 7);
        assert!(
            e.time >= before && e.time <= after,
            "{} not in [{before}, {after}]",
            e.time
        );
        assert_eq!(e.topic, "signalbox/dev/cli/test");
        assert_eq!(e.summary, "hello");
        assert_eq!(e.severity, Severity::Info);
        assert_eq!(e.source.bridge, "cli");
        assert_eq!(e.source.host.as_deref(), local_hostname());
        assert_eq!(e.source.user, None);
        assert_eq!(e.agent, None);
        assert!(e.links.is_empty());
        assert_eq!(e.body, Value::Null);
        assert_eq!(e.reply_to, None);
        assert!(e.extra.is_empty());
        // Two builds get different ids, in time order.
        let e2 = Envelope::builder("a", "b").build().unwrap();
        assert!(e2.id > e.id);
    }

    #[test]
    fn builder_sets_everything() {
        let id = Uuid::now_v7();
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 19, 3, 0).unwrap();
        let e = Envelope::builder("signalbox/prod/git/kernel/commit", "pushed")
            .severity(Severity::Warning)
            .agent("jkeating")
            .bridge("git")
            .host("pkgs01")
            .user("root")
            .body(json!({"commit": "abc"}))
            .link("url", "https://x")
            .link("diff", "https://y")
            .link("url", "https://z")
            .reply_to("signalbox/prod/replies/1")
            .id(id)
            .time(t)
            .build()
            .expect("valid");
        assert_eq!(e.severity, Severity::Warning);
        assert_eq!(e.agent.as_deref(), Some("jkeating"));
        assert_eq!(e.source.bridge, "git");
        assert_eq!(e.source.host.as_deref(), Some("pkgs01"));
        assert_eq!(e.source.user.as_deref(), Some("root"));
        assert_eq!(e.body, json!({"commit": "abc"}));
        assert_eq!(e.links.len(), 2);
        assert_eq!(e.links["url"], "https://z");
        assert_eq!(e.reply_to.as_deref(), Some("signalbox/prod/replies/1"));
        assert_eq!(e.id, id);
        assert_eq!(e.time, t);
        assert_eq!(Envelope::from_slice(&e.to_vec()), Ok(e));
    }

    #[test]
    fn builder_makes_the_summary_one_line() {
        let e = Envelope::builder("a/b", "  Re: [bug 123]\r\n\tsegfault in\u{1b}[1m ext4  \n")
            .build()
            .unwrap();
        assert_eq!(e.summary, "Re: [bug 123] segfault in [1m ext4");
        assert_eq!(
            Envelope::builder("a/b", " \n\t\r ").build(),
            Err(EnvelopeError::EmptySummary)
        );
    }

    #[test]
    fn builder_rejects_bad_topics() {
        assert!(matches!(
            Envelope::builder("a/#", "s").build(),
            Err(EnvelopeError::InvalidTopic { .. })
        ));
        assert!(matches!(
            Envelope::builder("", "s").build(),
            Err(EnvelopeError::InvalidTopic {
                reason: TopicError::Empty,
                ..
            })
        ));
        assert!(matches!(
            Envelope::builder("a", "s").reply_to("+").build(),
            Err(EnvelopeError::InvalidReplyTo { .. })
        ));
        assert_eq!(
            Envelope::builder("a", "s").id(Uuid::nil()).build(),
            Err(EnvelopeError::NilId)
        );
    }

    #[test]
    fn sanitize_summary_examples() {
        assert_eq!(sanitize_summary("plain"), "plain");
        assert_eq!(
            sanitize_summary("keep  inner   spaces"),
            "keep  inner   spaces"
        );
        assert_eq!(sanitize_summary("a \n b"), "a b");
        assert_eq!(sanitize_summary("a\u{2029}b\u{85}c"), "a b c");
        assert_eq!(sanitize_summary("\u{0}x\u{7f}"), "x");
        assert_eq!(sanitize_summary("日本\t語"), "日本 語");
        assert_eq!(sanitize_summary("\u{3000}wide\u{3000}"), "wide");
        assert_eq!(sanitize_summary(""), "");
    }

    // ---- wire format ----

    #[test]
    fn unknown_fields_are_preserved() {
        let mut example = design_example();
        example["x_trace"] = json!({"span": 7, "tags": ["a", "b"]});
        example["priority"] = json!(3);
        example["source"]["pid"] = json!(4242);
        example["source"]["site"] = json!("phx2");
        let bytes = serde_json::to_vec(&example).unwrap();
        let e = Envelope::from_slice(&bytes).expect("valid");
        assert_eq!(e.extra.len(), 2);
        assert_eq!(e.extra["priority"], 3);
        assert_eq!(e.source.extra["pid"], 4242);
        assert_eq!(e.source.extra["site"], "phx2");
        let back: Value = serde_json::from_slice(&e.to_vec()).unwrap();
        assert_eq!(back, example);
        assert_eq!(Envelope::from_slice(&e.to_vec()), Ok(e));
    }

    #[test]
    fn absent_optional_fields_are_not_written() {
        let mut e = Envelope::builder("a/b", "s").bridge("git").build().unwrap();
        e.source.host = None;
        let json: Value = serde_json::from_str(&e.to_json_string()).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["id", "severity", "source", "summary", "time", "topic", "v"]
        );
        assert_eq!(json["source"], json!({"bridge": "git"}));
    }

    #[test]
    fn extra_cannot_override_defined_fields() {
        let mut e = sample();
        e.extra.insert("topic".into(), json!("evil/topic"));
        e.extra.insert("custom".into(), json!(1));
        e.source.extra.insert("bridge".into(), json!("evil"));
        let text = e.to_json_string();
        assert_eq!(text.matches("\"topic\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"bridge\"").count(), 1, "{text}");
        let back = Envelope::from_slice(text.as_bytes()).unwrap();
        assert_eq!(back.topic, "signalbox/prod/git/kernel/commit");
        assert_eq!(back.source.bridge, "git");
        assert_eq!(back.extra["custom"], 1);
    }

    #[test]
    fn serde_uses_the_wire_format_and_validates() {
        let e = sample();
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(text, e.to_json_string());
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
        // Embedded in another record.
        let record = json!({"attempts": 2, "envelope": e});
        #[derive(Deserialize)]
        struct Record {
            envelope: Envelope,
        }
        let r: Record = serde_json::from_value(record).unwrap();
        assert_eq!(r.envelope, e);
        let err = serde_json::from_str::<Envelope>(r#"{"v":2}"#).unwrap_err();
        assert!(
            err.to_string().contains("version 2 is not supported"),
            "{err}"
        );
        let pretty = e.to_json_pretty();
        assert!(pretty.contains('\n'));
        assert_eq!(Envelope::from_slice(pretty.as_bytes()), Ok(e));
    }

    // ---- Payload ----

    #[test]
    fn decode_recognises_each_kind() {
        let e = sample();
        assert_eq!(
            Payload::decode(&e.to_vec()),
            Payload::Envelope(Box::new(e.clone()))
        );
        // An object that is not a valid envelope is JSON, kept whole.
        let bad = example_with("summary", Some(json!("")));
        assert_eq!(
            Payload::decode(&bad),
            Payload::Json(serde_json::from_slice(&bad).unwrap())
        );
        assert_eq!(
            Payload::decode(b"{\"temp\":21.5}"),
            Payload::Json(json!({"temp": 21.5}))
        );
        assert_eq!(Payload::decode(b"42"), Payload::Json(json!(42)));
        assert_eq!(Payload::decode(b" [1, 2] \n"), Payload::Json(json!([1, 2])));
        assert_eq!(
            Payload::decode(b"hello world"),
            Payload::Text("hello world".into())
        );
        assert_eq!(
            Payload::decode(b"line1\r\n\tline2\n"),
            Payload::Text("line1\r\n\tline2\n".into())
        );
        assert_eq!(
            Payload::decode("größe".as_bytes()),
            Payload::Text("größe".into())
        );
        assert_eq!(Payload::decode(b""), Payload::Text(String::new()));
        assert_eq!(
            Payload::decode(b"{\"v\":1,"),
            Payload::Text("{\"v\":1,".into())
        );
        assert_eq!(
            Payload::decode(b"\x1b[31mred"),
            Payload::Binary(b"\x1b[31mred".to_vec())
        );
        assert_eq!(Payload::decode(b"a\0b"), Payload::Binary(b"a\0b".to_vec()));
        assert_eq!(
            Payload::decode(&[0xff, 0xfe, 0x00]),
            Payload::Binary(vec![0xff, 0xfe, 0x00])
        );
        assert_eq!(
            Payload::decode("c1\u{85}".as_bytes()),
            Payload::Binary("c1\u{85}".as_bytes().to_vec())
        );
    }

    #[test]
    fn payload_accessors() {
        let mut e = sample();
        e.severity = Severity::Error;
        let p = Payload::decode(&e.to_vec());
        assert_eq!(p.kind(), "envelope");
        assert_eq!(p.severity(), Some(Severity::Error));
        assert_eq!(p.envelope(), Some(&e));
        for (p, kind) in [
            (Payload::Json(json!(1)), "json"),
            (Payload::Text("t".into()), "text"),
            (Payload::Binary(vec![0]), "binary"),
        ] {
            assert_eq!(p.kind(), kind);
            assert_eq!(p.severity(), None);
            assert_eq!(p.envelope(), None);
        }
    }

    #[test]
    fn summary_lines() {
        let e = sample();
        assert_eq!(Payload::decode(&e.to_vec()).summary_line(80), "pushed");
        assert_eq!(
            Payload::Json(json!({"a": [1, 2], "b": "x"})).summary_line(80),
            r#"{"a":[1,2],"b":"x"}"#
        );
        assert_eq!(
            Payload::Json(json!({"a": "0123456789"})).summary_line(8),
            "{\"a\":\"0…"
        );
        assert_eq!(
            Payload::Text("\n  first  \nsecond".into()).summary_line(80),
            "first"
        );
        assert_eq!(
            Payload::Text("tab\there".into()).summary_line(80),
            "tab here"
        );
        assert_eq!(Payload::Text(String::new()).summary_line(80), "");
        assert_eq!(Payload::Text("abcdef".into()).summary_line(4), "abc…");
        assert_eq!(Payload::Text("abcd".into()).summary_line(4), "abcd");
        assert_eq!(
            Payload::Text("日本語テキスト".into()).summary_line(3),
            "日本…"
        );
        assert_eq!(Payload::Text("abc".into()).summary_line(0), "");
        assert_eq!(Payload::Text("abc".into()).summary_line(1), "…");
        assert_eq!(
            Payload::Binary(vec![0; 1234]).summary_line(80),
            "<1234 bytes binary>"
        );
        // JSON strings may hold control characters a terminal must not see.
        assert_eq!(
            Payload::Json(json!("a\u{7f}\u{9b}b")).summary_line(80),
            "\"a  b\""
        );
        // A large JSON payload is not serialised in full.
        let big = Payload::Json(json!(vec!["x".repeat(100); 10_000]));
        let line = big.summary_line(20);
        assert_eq!(line.chars().count(), 20);
        assert!(line.ends_with('…'));
    }

    #[test]
    fn decode_capped_cuts_and_says_so() {
        let e = sample();
        let bytes = e.to_vec();
        // Small enough: decoded whole.
        assert_eq!(
            decode_capped(&bytes, bytes.len()),
            (Payload::Envelope(Box::new(e.clone())), false)
        );
        // Cut: never an envelope, the text of the first cap bytes.
        let (p, cut) = decode_capped(&bytes, 10);
        assert!(cut);
        assert_eq!(
            p,
            Payload::Text(String::from_utf8(bytes[..10].to_vec()).unwrap())
        );
        // A cut inside a character keeps the text before it.
        let (p, cut) = Payload::decode_capped("aé".as_bytes(), 2);
        assert_eq!((p, cut), (Payload::Text("a".into()), true));
        // Binary stays binary, cut to cap bytes.
        let (p, cut) = Payload::decode_capped(&[0xff; 100], 16);
        assert_eq!((p, cut), (Payload::Binary(vec![0xff; 16]), true));
        let (p, cut) = Payload::decode_capped(b"ab\0cd", 3);
        assert_eq!((p, cut), (Payload::Binary(b"ab\0".to_vec()), true));
        // Zero cap.
        assert_eq!(
            Payload::decode_capped(b"x", 0),
            (Payload::Text(String::new()), true)
        );
        assert_eq!(
            Payload::decode_capped(b"", 0),
            (Payload::Text(String::new()), false)
        );
    }

    // ---- properties ----

    /// Arbitrary JSON values whose numbers survive a text round trip
    /// exactly (integers and short binary fractions).
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-1_000_000i32..1_000_000).prop_map(|n| json!(f64::from(n) / 8.0)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn is_json(bytes: &[u8]) -> bool {
        serde_json::from_slice::<Value>(bytes).is_ok()
    }

    fn is_text(bytes: &[u8]) -> bool {
        std::str::from_utf8(bytes).is_ok_and(is_plain_text)
    }

    proptest! {
        #[test]
        fn builder_wire_round_trip(
            summary in any::<String>(),
            agent in proptest::option::of(any::<String>()),
            user in proptest::option::of(any::<String>()),
            body in json_value(),
            links in prop::collection::btree_map(any::<String>(), any::<String>(), 0..4),
            severity in prop::sample::select(Severity::ALL.to_vec()),
            nanos in 0u32..1_000_000_000,
        ) {
            let mut builder = Envelope::builder("signalbox/dev/prop/test", summary.clone())
                .severity(severity)
                .body(body)
                .time(Utc.timestamp_opt(1_790_000_000, nanos).single().unwrap_or_default());
            if let Some(agent) = agent {
                builder = builder.agent(agent);
            }
            if let Some(user) = user {
                builder = builder.user(user);
            }
            for (name, target) in links {
                builder = builder.link(name, target);
            }
            match builder.build() {
                Ok(e) => {
                    prop_assert_eq!(Envelope::from_slice(&e.to_vec()), Ok(e.clone()));
                    prop_assert_eq!(Payload::decode(&e.to_vec()), Payload::Envelope(Box::new(e)));
                }
                Err(err) => {
                    prop_assert_eq!(err, EnvelopeError::EmptySummary);
                    prop_assert!(sanitize_summary(&summary).is_empty());
                }
            }
        }

        #[test]
        fn sanitized_summaries_are_one_valid_line(text in any::<String>()) {
            let s = sanitize_summary(&text);
            prop_assert!(!s.chars().any(|c| c.is_control() || breaks_a_line(c)));
            prop_assert_eq!(s.trim(), s.as_str());
            prop_assert_eq!(sanitize_summary(&s), s.clone());
            if s.is_empty() {
                prop_assert_eq!(validate_summary(&s), Err(EnvelopeError::EmptySummary));
            } else {
                prop_assert_eq!(validate_summary(&s), Ok(()));
            }
        }

        #[test]
        fn sanitized_summaries_of_line_noise(text in "[a\t\r\n\u{0b}\u{0c}\u{85}\u{2028}\u{1b}]{0,40}") {
            let s = sanitize_summary(&text);
            prop_assert!(!s.contains("  "), "{:?} -> {:?}", text, s);
            prop_assert!(!s.chars().any(|c| c.is_control() || breaks_a_line(c)));
        }

        #[test]
        fn decode_never_panics_and_binary_means_neither_json_nor_text(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let payload = Payload::decode(&bytes);
            let binary = matches!(payload, Payload::Binary(_));
            prop_assert_eq!(binary, !is_json(&bytes) && !is_text(&bytes));
            match &payload {
                Payload::Json(_) | Payload::Envelope(_) => prop_assert!(is_json(&bytes)),
                Payload::Text(t) => prop_assert_eq!(t.as_bytes(), &bytes[..]),
                Payload::Binary(b) => prop_assert_eq!(b, &bytes),
            }
            let _ = payload.summary_line(40);
            let _ = decode_capped(&bytes, 17);
        }

        #[test]
        fn decode_classifies_texty_input(text in "[ -~\t\n\r\u{1}\u{7f}é]{0,64}") {
            let bytes = text.as_bytes();
            let payload = Payload::decode(bytes);
            prop_assert_eq!(matches!(payload, Payload::Binary(_)), !is_json(bytes) && !is_text(bytes));
            prop_assert_eq!(matches!(payload, Payload::Text(_)), !is_json(bytes) && is_text(bytes));
        }

        #[test]
        fn decode_capped_is_bounded_and_never_an_envelope_when_cut(
            bytes in prop::collection::vec(any::<u8>(), 0..128),
            cap in 0usize..160,
        ) {
            let (payload, cut) = decode_capped(&bytes, cap);
            prop_assert_eq!(cut, bytes.len() > cap);
            if cut {
                match &payload {
                    Payload::Text(t) => {
                        prop_assert!(t.len() <= cap && cap - t.len() < 4);
                        prop_assert!(bytes.starts_with(t.as_bytes()));
                    }
                    Payload::Binary(b) => prop_assert_eq!(&b[..], &bytes[..cap]),
                    other => prop_assert!(false, "cut payload decoded as {:?}", other),
                }
            } else {
                prop_assert_eq!(payload, Payload::decode(&bytes));
            }
        }

        #[test]
        fn summary_line_respects_the_width(
            text in any::<String>(),
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            max in 0usize..50,
        ) {
            for payload in [Payload::Text(text.clone()), Payload::Json(json!({"t": text})), Payload::decode(&bytes)] {
                let line = payload.summary_line(max);
                prop_assert!(line.chars().count() <= max);
                prop_assert!(!line.chars().any(|c| c.is_control() || breaks_a_line(c)));
            }
        }
    }
}
