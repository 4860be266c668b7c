//! The console's model ([`App`]) and its only mutator, the pure
//! [`update`]`(&mut App, Event)`.
//!
//! Nothing here touches the terminal, the network or the clock: time comes
//! in with [`Event::Tick`] and each message's arrival time, and what the
//! operator asks the bus to do leaves as [`Effect`]s that the console loop
//! hands to the ingest task. So every rule below is unit-tested by feeding
//! events.
//!
//! Memory is bounded by [`Limits`], whatever the message rate and however
//! long the console runs (mqttui #183 and MQTT Explorer #883 are what this
//! avoids): the stream is a ring buffer capped by count and bytes; each
//! topic keeps a short history capped by count and age, and all histories
//! together are capped by count and bytes (a global arrival-order queue
//! evicts the oldest first); topics, listeners, failure records and rate
//! series are capped by count, with an "N more" note beyond. Payloads were
//! already cut to [`crate::event::PAYLOAD_CAP`] before decoding.
//!
//! The Stream view can page back into the recorder's database: see
//! [`history`] (its rows count against the stream's caps).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, FixedOffset, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use signalbox_common::envelope::{Payload, Severity};
use signalbox_common::failed::{FailureRecord, Outcome as ReplayOutcomeKind, ReplayOutcome};
use signalbox_common::health::{HealthReport, Liveness};
use signalbox_common::mqtt::ConnState;
use signalbox_common::topic;

use crate::event::{Event, Incoming, Meaning, Outcome};
use crate::keys::{Action, KeyMap, Scope};
use fields::FieldSeries;
pub use history::{stream_order, HistoryRequest, StreamHistory};
pub use mouse::{Hits, ListHits, RowKey};

/// How much the console keeps. Every collection in [`App`] is capped by one
/// of these; [`Limits::default`] keeps the console well under 150 MB.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Messages kept in the stream.
    pub stream_len: usize,
    /// Approximate bytes kept in the stream.
    pub stream_bytes: usize,
    /// Topics tracked in the tree; further topics are counted, not kept.
    pub topics: usize,
    /// Payloads kept per topic.
    pub history_per_topic: usize,
    /// Payloads older than this are pruned from the topics' histories
    /// (the last small payload of each topic stays, for its preview).
    pub history_age: Duration,
    /// Payloads kept in all topics' histories together.
    pub history_len: usize,
    /// Approximate bytes kept in all topics' histories together.
    pub history_bytes: usize,
    /// Systems with their own rate series; the rest count as "other".
    pub systems: usize,
    /// Listeners tracked.
    pub listeners: usize,
    /// Failure records tracked.
    pub failed: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stream_len: 10_000,
            stream_bytes: 32 << 20,
            topics: 10_000,
            history_per_topic: 50,
            history_age: Duration::minutes(10),
            history_len: 100_000,
            history_bytes: 32 << 20,
            systems: 64,
            listeners: 1_000,
            failed: 10_000,
        }
    }
}

/// A payload at most this large stays as its topic's last value even when
/// the histories are over budget or too old, so that every topic keeps a
/// preview and a detail; 10,000 topics × 2 KiB bounds what this keeps.
const KEEP_LAST_MAX_COST: usize = 2048;
/// Seconds of rate history (the dashboard's sparklines).
pub const RATE_SECONDS: usize = 60;
/// Newest events shown on the dashboard.
pub const DASHBOARD_EVENTS: usize = 50;
/// How long a status-line message stays.
const STATUS_SECONDS: i64 = 6;
/// Exact topics per [`Effect::Subscribe`] (one SUBSCRIBE packet each), as
/// `signalbox failed` reads them: thousands of record topics never go in
/// one packet.
pub const SUBSCRIBE_CHUNK: usize = 100;
/// A failure index is acted on once it is this old: by then a broker that
/// delivers retained messages to wildcard subscriptions has delivered the
/// records it lists too, through `{prefix}/#` with the index, so they are
/// not subscribed to and delivered a second time.
pub const INDEX_SETTLE: Duration = Duration::seconds(1);

/// One received message as the console keeps it (shared between the
/// stream, the topic history and a paused snapshot).
#[derive(Debug)]
pub struct Msg {
    /// Arrival number, from 1; identifies the message in the stream.
    pub seq: u64,
    /// The topic it arrived on.
    pub topic: Arc<str>,
    /// Arrival time.
    pub at: DateTime<Utc>,
    /// Delivered from the broker's retained store.
    pub retain: bool,
    /// Full payload size in bytes.
    pub size: usize,
    /// Whether the payload was cut before decoding.
    pub cut: bool,
    /// The decoded payload.
    pub payload: Payload,
    /// One line for lists (the envelope's summary, compact JSON, …).
    pub summary: Box<str>,
    /// The envelope's severity; `None` for other payloads.
    pub severity: Option<Severity>,
    /// On a reserved topic (`_health`, `_failed`, …).
    pub reserved: bool,
    /// Approximate bytes held, for the memory budgets.
    pub cost: usize,
    /// The signature check (with a trust directory): ✓ / ✗ / unsigned.
    pub signature: Option<signalbox_common::sign::Verdict>,
}

impl Msg {
    fn from_incoming(seq: u64, m: Incoming, reserved: bool) -> Msg {
        let summary: Box<str> = m.payload.summary_line(200).into();
        let kept = m.size.min(crate::event::PAYLOAD_CAP);
        // Decoded JSON takes a few times its text; strings and bytes about
        // their length.
        let factor = if matches!(m.payload, Payload::Json(_) | Payload::Envelope(_)) {
            3
        } else {
            1
        };
        let cost = kept * factor + m.topic.len() + summary.len() + 160;
        Msg {
            seq,
            topic: m.topic.into(),
            at: m.at,
            retain: m.retain,
            size: m.size,
            cut: m.cut,
            severity: m.payload.severity(),
            payload: m.payload,
            summary,
            reserved,
            cost,
            signature: m.signature,
        }
    }

    /// Whether the message shows a problem (error severity).
    pub fn is_problem(&self) -> bool {
        self.severity == Some(Severity::Error)
    }
}

/// The five views (the detail opens over any of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Connection, rates, listener summary, failures, newest events.
    Dashboard,
    /// Every message.
    Stream,
    /// The topic tree.
    Topics,
    /// The listeners' health.
    Listeners,
    /// The failure records.
    Failed,
}

impl View {
    /// In tab order.
    pub const ALL: [View; 5] = [
        View::Dashboard,
        View::Stream,
        View::Topics,
        View::Listeners,
        View::Failed,
    ];

    /// The tab title.
    pub fn title(self) -> &'static str {
        match self {
            View::Dashboard => "Dashboard",
            View::Stream => "Stream",
            View::Topics => "Topics",
            View::Listeners => "Listeners",
            View::Failed => "Failed",
        }
    }

    fn scope(self) -> Scope {
        match self {
            View::Dashboard => Scope::Dashboard,
            View::Stream => Scope::Stream,
            View::Topics => Scope::Topics,
            View::Listeners => Scope::Listeners,
            View::Failed => Scope::Failed,
        }
    }

    fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }
}

/// What the operator asked the bus (or the console) to do; carried out by
/// the console loop and the ingest task, never by `update`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Publish on `_ping`: every listener reports at once.
    Ping,
    /// Subscribe to exact topics (the roster's `_health/{name}` and
    /// `_failed/{name}`, and the records an index lists: some brokers
    /// deliver retained messages to exact subscriptions only). At most
    /// [`SUBSCRIBE_CHUNK`] topics each.
    Subscribe(Vec<String>),
    /// Acknowledge records: an empty retained publish on each topic, and an
    /// `_audit` envelope.
    Ack {
        /// The listener.
        listener: String,
        /// (message id, record topic) pairs.
        records: Vec<(String, String)>,
    },
    /// A replay request on `_replay/{listener}`, and an `_audit` envelope.
    Replay {
        /// The listener.
        listener: String,
        /// The ids; empty means all of the listener's records.
        ids: Vec<String>,
    },
    /// Delete retained topics (empty retained publishes) and audit it.
    DeleteRetained(Vec<String>),
    /// Publish an envelope with this summary (`:pub TOPIC TEXT`).
    Publish {
        /// The topic.
        topic: String,
        /// The summary.
        text: String,
    },
    /// Write bytes to a file in the current directory.
    Export {
        /// The file name.
        file: String,
        /// The contents.
        contents: Vec<u8>,
    },
    /// Switch to a theme (`:theme NAME`).
    Theme(String),
    /// Read a page of older messages from the history database (on a
    /// worker thread; the answer comes back as `Event::History`).
    LoadHistory(HistoryRequest),
}

/// An overlay that takes the keyboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    /// Every key, by view.
    Help,
    /// Editing the stream filter.
    Filter(String),
    /// Editing a `:` command.
    Command(String),
    /// A question; `y` carries out the effects.
    Confirm {
        /// The question, one line.
        question: String,
        /// What happens on yes.
        effects: Vec<Effect>,
        /// The status line after yes.
        done: String,
        /// Failure records marked as awaiting the outcome on yes.
        marks: Vec<((String, String), Pending)>,
    },
}

/// How a status-line message reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// It worked.
    Ok,
    /// Information.
    Info,
    /// It failed.
    Error,
}

/// The line shown in the footer for a few seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    /// The text.
    pub text: String,
    /// Its tone.
    pub tone: Tone,
    /// When it was set (it expires after a few seconds).
    pub at: DateTime<Utc>,
}

/// The stream filter: space-separated terms, all of which must match.
/// `sev:warning` (warning and above), `kind:binary`, a topic filter with
/// `/`, `+` or `#` (MQTT wildcards; several are alternatives), anything
/// else is text to find in the topic or summary (case-insensitive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// As typed.
    pub text: String,
    topics: Vec<String>,
    words: Vec<String>,
    min_severity: Option<Severity>,
    kind: Option<String>,
}

impl Filter {
    /// Parses a filter; the error is one line naming the bad term.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut filter = Filter {
            text: text.trim().to_string(),
            ..Filter::default()
        };
        for term in text.split_whitespace() {
            if let Some(sev) = term
                .strip_prefix("sev:")
                .or_else(|| term.strip_prefix("severity:"))
            {
                filter.min_severity =
                    Some(sev.parse().map_err(|_| {
                        format!("`{term}`: severity is debug, info, warning or error")
                    })?);
            } else if let Some(kind) = term.strip_prefix("kind:") {
                if !["envelope", "json", "text", "binary"].contains(&kind) {
                    return Err(format!("`{term}`: kind is envelope, json, text or binary"));
                }
                filter.kind = Some(kind.to_string());
            } else if term.contains(['/', '+', '#']) {
                topic::validate_filter(term).map_err(|e| format!("`{term}`: {e}"))?;
                filter.topics.push(term.to_string());
            } else {
                filter.words.push(term.to_lowercase());
            }
        }
        Ok(filter)
    }

    /// Whether the filter is empty (matches everything).
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
            && self.words.is_empty()
            && self.min_severity.is_none()
            && self.kind.is_none()
    }

    /// Whether `msg` passes.
    pub fn matches(&self, msg: &Msg) -> bool {
        if let Some(min) = self.min_severity {
            if msg.severity.is_none_or(|s| s < min) {
                return false;
            }
        }
        if let Some(kind) = &self.kind {
            if msg.payload.kind() != kind {
                return false;
            }
        }
        if !self.topics.is_empty() && !self.topics.iter().any(|f| topic::matches(f, &msg.topic)) {
            return false;
        }
        self.words
            .iter()
            .all(|w| contains_ci(&msg.topic, w) || contains_ci(&msg.summary, w))
    }
}

/// Case-insensitive `haystack.contains(needle)`; `needle` is lower case.
fn contains_ci(haystack: &str, needle: &str) -> bool {
    if haystack.is_ascii() && needle.is_ascii() {
        haystack
            .as_bytes()
            .windows(needle.len().max(1))
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
            || needle.is_empty()
    } else {
        haystack.to_lowercase().contains(needle)
    }
}

/// A paused stream: what was shown, and what came since.
#[derive(Debug, Clone)]
pub struct Paused {
    /// The messages shown while paused (shared with the ring; at most the
    /// ring's length).
    pub snapshot: Vec<Arc<Msg>>,
    /// Messages that arrived since the pause.
    pub arrived: u64,
}

/// The stream view's state.
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    /// The filter in force.
    pub filter: Filter,
    /// `Some` while paused.
    pub paused: Option<Paused>,
    /// The selected message; `None` follows the newest.
    pub selected: Option<u64>,
}

/// Messages per second over the last minute.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    /// Count per second, oldest first; the last is the current second.
    pub buckets: VecDeque<u64>,
    /// The second (Unix time) of the last bucket.
    pub second: i64,
    /// Messages in all time.
    pub total: u64,
}

impl Rate {
    fn advance(&mut self, second: i64) {
        if self.buckets.is_empty() {
            self.second = second;
            self.buckets.push_back(0);
            return;
        }
        let gap = (second - self.second).clamp(0, RATE_SECONDS as i64);
        for _ in 0..gap {
            self.buckets.push_back(0);
        }
        if second > self.second {
            self.second = second;
        }
        while self.buckets.len() > RATE_SECONDS {
            self.buckets.pop_front();
        }
    }

    fn add(&mut self, second: i64, n: u64) {
        self.advance(second);
        self.total += n;
        // A message stamped before the current second (clock skew between
        // batches) counts in the current one.
        if let Some(last) = self.buckets.back_mut() {
            *last += n;
        }
    }

    /// Messages in the last complete second.
    pub fn per_second(&self) -> u64 {
        let n = self.buckets.len();
        if n >= 2 {
            self.buckets.get(n - 2).copied().unwrap_or(0)
        } else {
            0
        }
    }

    /// The series for a sparkline (complete seconds, oldest first).
    pub fn series(&self) -> Vec<u64> {
        let n = self.buckets.len().saturating_sub(1);
        self.buckets.iter().take(n).copied().collect()
    }
}

/// One topic's data.
#[derive(Debug, Clone)]
pub struct TopicData {
    /// Messages seen on it.
    pub count: u64,
    /// When the last one arrived.
    pub last_at: DateTime<Utc>,
    /// Whether the broker holds a retained value (seen as retained and not
    /// deleted since; a live publish cannot tell, so this is sticky).
    pub retained: bool,
    /// The last payload's size.
    pub size: usize,
    /// The last payload's summary line.
    pub summary: Box<str>,
    /// Recent payloads, oldest first (bounded; see [`Limits`]).
    pub history: VecDeque<Arc<Msg>>,
}

/// A node of the topic tree: one level.
#[derive(Debug, Clone, Default)]
pub struct TopicNode {
    /// The next levels.
    pub children: BTreeMap<String, TopicNode>,
    /// Present when messages arrived on exactly this topic.
    pub data: Option<TopicData>,
    /// Messages in the subtree.
    pub messages: u64,
    /// Topics in the subtree (this one included).
    pub topics: usize,
    /// Children shown.
    pub expanded: bool,
}

impl TopicNode {
    fn find(&self, topic: &str) -> Option<&TopicNode> {
        topic
            .split('/')
            .try_fold(self, |node, level| node.children.get(level))
    }

    fn find_mut(&mut self, topic: &str) -> Option<&mut TopicNode> {
        topic
            .split('/')
            .try_fold(self, |node, level| node.children.get_mut(level))
    }

    /// The retained topics of the subtree rooted here (`path` is this
    /// node's topic).
    pub fn retained_topics(&self, path: &str, out: &mut Vec<String>) {
        if self.data.as_ref().is_some_and(|d| d.retained) {
            out.push(path.to_string());
        }
        for (level, child) in &self.children {
            child.retained_topics(&format!("{path}/{level}"), out);
        }
    }
}

/// A row of the topic tree as shown.
#[derive(Debug, Clone)]
pub struct TopicRow<'a> {
    /// The full topic of the node.
    pub path: String,
    /// Its last level.
    pub name: &'a str,
    /// Its depth (0 for the first level).
    pub depth: usize,
    /// The node.
    pub node: &'a TopicNode,
}

/// Every topic seen, as a tree, with bounded histories.
#[derive(Debug, Clone, Default)]
pub struct Topics {
    /// The root (no level of its own).
    pub root: TopicNode,
    /// Topics tracked.
    pub count: usize,
    /// Messages on topics beyond [`Limits::topics`].
    pub untracked: u64,
    /// History entries in arrival order, for global eviction: (topic, seq).
    order: VecDeque<(Arc<str>, u64)>,
    /// Entries in all histories.
    pub history_len: usize,
    /// Approximate bytes in all histories.
    pub history_bytes: usize,
}

impl Topics {
    fn record(&mut self, msg: &Arc<Msg>, limits: &Limits) {
        if self.count >= limits.topics
            && self.root.find(&msg.topic).is_none_or(|n| n.data.is_none())
        {
            self.untracked += 1;
            return;
        }
        let mut node = &mut self.root;
        node.messages += 1;
        let mut created = false;
        for (depth, level) in msg.topic.split('/').enumerate() {
            // Looked up before inserting: a known level costs no allocation.
            if !node.children.contains_key(level) {
                node.children.insert(
                    level.to_string(),
                    TopicNode {
                        // The first levels (prefix, env) open, so systems
                        // show.
                        expanded: depth < 2,
                        ..TopicNode::default()
                    },
                );
            }
            let Some(next) = node.children.get_mut(level) else {
                return;
            };
            node = next;
            node.messages += 1;
        }
        let empty = msg.size == 0;
        let data = node.data.get_or_insert_with(|| {
            created = true;
            TopicData {
                count: 0,
                last_at: msg.at,
                retained: false,
                size: 0,
                summary: Box::from(""),
                history: VecDeque::new(),
            }
        });
        data.count += 1;
        data.last_at = msg.at;
        data.size = msg.size;
        data.summary = msg.summary.clone();
        if msg.retain && !empty {
            data.retained = true;
        } else if empty {
            // An empty payload deletes the retained value.
            data.retained = false;
        }
        data.history.push_back(msg.clone());
        self.history_len += 1;
        self.history_bytes += msg.cost;
        while data.history.len() > limits.history_per_topic {
            if let Some(old) = data.history.pop_front() {
                self.history_len -= 1;
                self.history_bytes -= old.cost;
            }
        }
        self.order.push_back((msg.topic.clone(), msg.seq));
        if created {
            self.count += 1;
            let mut node = &mut self.root;
            node.topics += 1;
            for level in msg.topic.split('/') {
                match node.children.get_mut(level) {
                    Some(next) => node = next,
                    None => break,
                }
                node.topics += 1;
            }
        }
        while self.order.len() > limits.history_len
            || (self.history_bytes > limits.history_bytes && !self.order.is_empty())
        {
            self.evict_oldest();
        }
    }

    /// Drops the oldest history entry (unless it is its topic's small last
    /// value, which stays for the preview).
    fn evict_oldest(&mut self) {
        let Some((topic, seq)) = self.order.pop_front() else {
            return;
        };
        let Some(data) = self.root.find_mut(&topic).and_then(|n| n.data.as_mut()) else {
            return;
        };
        let is_front = data.history.front().is_some_and(|m| m.seq == seq);
        let keep_as_last = data.history.len() == 1
            && data
                .history
                .front()
                .is_some_and(|m| m.cost <= KEEP_LAST_MAX_COST);
        if is_front && !keep_as_last {
            if let Some(old) = data.history.pop_front() {
                self.history_len -= 1;
                self.history_bytes -= old.cost;
            }
        }
    }

    fn prune(&mut self, now: DateTime<Utc>, limits: &Limits) {
        let cutoff = now - limits.history_age;
        while let Some((topic, seq)) = self.order.front() {
            let old = self
                .root
                .find(topic)
                .and_then(|n| n.data.as_ref())
                .and_then(|d| {
                    d.history
                        .iter()
                        .find(|m| m.seq == *seq)
                        .map(|m| m.at < cutoff)
                })
                .unwrap_or(true);
            if !old {
                break;
            }
            let _ = seq;
            self.evict_oldest();
        }
    }

    /// Entries in the global eviction queue (for tests of the bound).
    #[cfg(test)]
    pub fn order_len(&self) -> usize {
        self.order.len()
    }

    /// The node of `topic`.
    pub fn node(&self, topic: &str) -> Option<&TopicNode> {
        self.root.find(topic)
    }

    /// The rows shown: every node whose ancestors are expanded.
    pub fn visible_rows(&self) -> Vec<TopicRow<'_>> {
        fn walk<'a>(node: &'a TopicNode, path: &str, depth: usize, out: &mut Vec<TopicRow<'a>>) {
            for (name, child) in &node.children {
                let child_path = if depth == 0 {
                    name.clone()
                } else {
                    format!("{path}/{name}")
                };
                out.push(TopicRow {
                    path: child_path.clone(),
                    name,
                    depth,
                    node: child,
                });
                if child.expanded {
                    walk(child, &child_path, depth + 1, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, "", 0, &mut out);
        out
    }
}

/// A listener as the console knows it.
#[derive(Debug, Clone)]
pub struct ListenerEntry {
    /// Its name.
    pub name: String,
    /// Its last report, or why it could not be read; `None` when only the
    /// roster names it.
    pub report: Option<Result<Box<HealthReport>, String>>,
    /// The message that carried the report (for the detail).
    pub msg: Option<Arc<Msg>>,
    /// Named in `_roster`.
    pub in_roster: bool,
}

impl ListenerEntry {
    /// How it is judged at `now`; `None` when there is no readable report.
    pub fn liveness(&self, now: DateTime<Utc>) -> Option<Liveness> {
        match &self.report {
            Some(Ok(r)) => Some(r.liveness(now)),
            _ => None,
        }
    }

    /// Whether it needs attention: down, stale, degraded, unreadable or
    /// listed without a report.
    pub fn is_problem(&self, now: DateTime<Utc>) -> bool {
        self.liveness(now).is_none_or(Liveness::is_problem)
    }
}

/// What the console asked for about a record and is waiting to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Acknowledged; waiting for the broker to echo the deletion.
    Ack,
    /// Replay requested; waiting for the record to clear or change.
    Replay,
}

/// A failure record as the console knows it.
#[derive(Debug, Clone)]
pub struct FailedEntry {
    /// The listener.
    pub listener: String,
    /// The message id.
    pub id: String,
    /// The record's own MQTT topic.
    pub topic: String,
    /// The record, or why it could not be read.
    pub record: Result<Box<FailureRecord>, String>,
    /// The message that carried it (for the detail).
    pub msg: Arc<Msg>,
    /// What the operator asked for and awaits.
    pub pending: Option<Pending>,
}

/// The connection as shown.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The broker URL(s), passwords masked.
    pub broker: String,
    /// Whether the broker runs inside this process (`--embedded`).
    pub embedded: bool,
    /// The current state.
    pub state: ConnState,
    /// The last connection error and when it happened; kept after a
    /// reconnect, so a flapping link shows.
    pub last_error: Option<(String, DateTime<Utc>)>,
    /// Since when the state holds.
    pub since: DateTime<Utc>,
}

/// What the console needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Topic prefix.
    pub prefix: String,
    /// Environment (the console's own `:pub` and reply topics go there).
    pub env: String,
    /// The broker(s), for display.
    pub broker: String,
    /// Whether the broker is embedded.
    pub embedded: bool,
    /// Memory limits.
    pub limits: Limits,
    /// Key bindings.
    pub keys: KeyMap,
    /// The start time.
    pub now: DateTime<Utc>,
    /// The time zone times are shown in.
    pub offset: FixedOffset,
    /// The history database the Stream view pages back into, or why there
    /// is none (one line telling how to configure one).
    pub history_db: Result<PathBuf, String>,
}

/// The whole state of the console.
#[derive(Debug)]
pub struct App {
    /// Topic prefix.
    pub prefix: String,
    /// Environment.
    pub env: String,
    /// Limits in force.
    pub limits: Limits,
    /// Key bindings.
    pub keys: KeyMap,
    /// The latest time seen (ticks).
    pub now: DateTime<Utc>,
    /// When the console started.
    pub started: DateTime<Utc>,
    /// The time zone times are shown in (fixed at start, so tests and
    /// snapshots can pin it).
    pub offset: FixedOffset,
    /// Terminal size (columns, rows).
    pub size: (u16, u16),
    /// The view shown.
    pub view: View,
    /// The overlay that takes the keyboard, if any.
    pub overlay: Option<Overlay>,
    /// The detail open over the view, if any.
    pub detail: Option<Detail>,
    /// Show only problems.
    pub problems_only: bool,
    /// The connection.
    pub conn: ConnInfo,
    /// Messages received in all.
    pub seq: u64,
    /// The stream ring, oldest first.
    pub stream: VecDeque<Arc<Msg>>,
    /// Approximate bytes in the stream ring.
    pub stream_bytes: usize,
    /// The stream view's state.
    pub stream_state: StreamState,
    /// Older messages the stream read from the history database, shown
    /// above the ring (bounded with it).
    pub history: StreamHistory,
    /// All messages per second.
    pub rate: Rate,
    /// Per system (second topic level after the prefix), bounded.
    pub system_rates: HashMap<String, Rate>,
    /// The topic tree.
    pub topics: Topics,
    /// The selected topic (full path).
    pub topic_selected: Option<String>,
    /// The numeric field picked for the sparkline, as (topic, field path);
    /// other topics show their first numeric field.
    pub topic_field: Option<(String, String)>,
    /// Listeners by name.
    pub listeners: BTreeMap<String, ListenerEntry>,
    /// Index of the selected listener row.
    pub listener_selected: usize,
    /// Listener reports beyond [`Limits::listeners`].
    pub listeners_dropped: u64,
    /// Names in the last roster.
    pub roster: Vec<String>,
    /// `_health/{name}` topics subscribed exactly.
    pub health_subscribed: BTreeSet<String>,
    /// Listeners whose failure index (`_failed/{name}`) is subscribed
    /// exactly (the roster's and every listener seen; at most
    /// [`Limits::listeners`]).
    pub index_subscribed: BTreeSet<String>,
    /// The last index of each listener not acted on yet, with its arrival
    /// time (see [`INDEX_SETTLE`]); at most [`Limits::listeners`] entries
    /// of at most [`Limits::failed`] ids.
    pub indexes_pending: BTreeMap<String, (DateTime<Utc>, Vec<String>)>,
    /// Record topics (`_failed/{name}/{id}`) subscribed exactly because an
    /// index listed them: each once, at most [`Limits::failed`]. Kept after
    /// the record goes (the subscription stays), so a stale index does not
    /// subscribe again.
    pub records_subscribed: BTreeSet<String>,
    /// Exact topics to subscribe to, sent as [`Effect::Subscribe`] chunks
    /// once the batch or tick that found them is applied.
    subscribe_queue: Vec<String>,
    /// Failure records by (listener, id).
    pub failed: BTreeMap<(String, String), FailedEntry>,
    /// Index of the selected failure row.
    pub failed_selected: usize,
    /// Records beyond [`Limits::failed`].
    pub failed_dropped: u64,
    /// The footer's status line.
    pub status: Option<StatusLine>,
    /// What the loop must carry out; drained with [`App::take_effects`].
    pub effects: Vec<Effect>,
    /// Where the last frame drew the rows a click can select.
    pub hits: Hits,
    /// Something changed since the last draw.
    pub dirty: bool,
    /// The operator asked to quit.
    pub quit: bool,
}

/// The open detail.
#[derive(Debug, Clone)]
pub struct Detail {
    /// The message.
    pub msg: Arc<Msg>,
    /// Text lines (pretty JSON or text); empty for binary (hex is made per
    /// visible line when drawn).
    pub lines: Vec<String>,
    /// Whether `lines` is JSON (coloured).
    pub json: bool,
    /// First line shown.
    pub scroll: usize,
}

impl Detail {
    /// Opens `msg`: pretty JSON for envelopes and JSON, text lines for
    /// text, nothing precomputed for binary.
    pub fn open(msg: Arc<Msg>) -> Detail {
        let (lines, json) = match &msg.payload {
            Payload::Envelope(e) => (pretty(&**e), true),
            Payload::Json(v) => (pretty(v), true),
            Payload::Text(t) => (t.lines().map(str::to_string).collect(), false),
            Payload::Binary(_) => (Vec::new(), false),
        };
        Detail {
            msg,
            lines,
            json,
            scroll: 0,
        }
    }

    /// Lines in all (hex lines for binary).
    pub fn line_count(&self) -> usize {
        match &self.msg.payload {
            Payload::Binary(b) => b.len().div_ceil(16),
            _ => self.lines.len(),
        }
    }
}

fn pretty<T: serde::Serialize + ?Sized>(value: &T) -> Vec<String> {
    serde_json::to_string_pretty(value)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

impl App {
    /// A fresh console.
    pub fn new(settings: Settings) -> App {
        App {
            prefix: settings.prefix,
            env: settings.env,
            limits: settings.limits,
            keys: settings.keys,
            now: settings.now,
            started: settings.now,
            offset: settings.offset,
            size: (80, 24),
            view: View::Dashboard,
            overlay: None,
            detail: None,
            problems_only: false,
            conn: ConnInfo {
                broker: settings.broker,
                embedded: settings.embedded,
                state: ConnState::Connecting,
                last_error: None,
                since: settings.now,
            },
            seq: 0,
            stream: VecDeque::new(),
            stream_bytes: 0,
            stream_state: StreamState::default(),
            history: StreamHistory::new(settings.history_db),
            rate: Rate::default(),
            system_rates: HashMap::new(),
            topics: Topics::default(),
            topic_selected: None,
            topic_field: None,
            listeners: BTreeMap::new(),
            listener_selected: 0,
            listeners_dropped: 0,
            roster: Vec::new(),
            health_subscribed: BTreeSet::new(),
            index_subscribed: BTreeSet::new(),
            indexes_pending: BTreeMap::new(),
            records_subscribed: BTreeSet::new(),
            subscribe_queue: Vec::new(),
            failed: BTreeMap::new(),
            failed_selected: 0,
            failed_dropped: 0,
            status: None,
            effects: Vec::new(),
            hits: Hits::default(),
            dirty: true,
            quit: false,
        }
    }

    /// The effects to carry out, leaving none.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The key scope in focus.
    pub fn scope(&self) -> Scope {
        if self.detail.is_some() {
            Scope::Detail
        } else {
            self.view.scope()
        }
    }

    /// The stream as shown: the rows read from the history database, then
    /// the paused snapshot or the ring, filtered (and only errors when
    /// showing problems), oldest first.
    pub fn stream_rows(&self) -> Vec<&Arc<Msg>> {
        let keep = |m: &&Arc<Msg>| self.shows(m);
        let older = self.history.rows.iter().filter(keep);
        match &self.stream_state.paused {
            Some(p) => older.chain(p.snapshot.iter().filter(keep)).collect(),
            None => older.chain(self.stream.iter().filter(keep)).collect(),
        }
    }

    /// The listener rows as shown (problems only when asked).
    pub fn listener_rows(&self) -> Vec<&ListenerEntry> {
        self.listeners
            .values()
            .filter(|l| !self.problems_only || l.is_problem(self.now))
            .collect()
    }

    /// The failure rows as shown.
    pub fn failed_rows(&self) -> Vec<&FailedEntry> {
        self.failed.values().collect()
    }

    /// The sparkline of the selected topic: the numeric field the operator
    /// picked for it (or its first one) over the topic's kept history;
    /// `None` when the topic's payloads hold no number.
    pub fn topic_series(&self) -> Option<FieldSeries> {
        let path = self.topic_selected.as_ref()?;
        let data = self.topics.node(path)?.data.as_ref()?;
        let fields = fields::numeric_fields(&data.history);
        let index = match &self.topic_field {
            Some((topic, field)) if topic == path => {
                fields.iter().position(|f| f == field).unwrap_or(0)
            }
            _ => 0,
        };
        let field = fields.get(index)?;
        Some(FieldSeries {
            path: field.clone(),
            index,
            count: fields.len(),
            values: fields::series(&data.history, field),
        })
    }

    /// Rows of a list body at the current terminal size (for paging).
    pub fn page(&self) -> usize {
        usize::from(self.size.1).saturating_sub(6).max(1)
    }

    /// Counts of listeners by how they are judged now: (up, stale, down,
    /// other problems).
    pub fn listener_summary(&self) -> (usize, usize, usize, usize) {
        let mut counts = (0, 0, 0, 0);
        for l in self.listeners.values() {
            match l.liveness(self.now) {
                Some(Liveness::Up) | Some(Liveness::Idle) | Some(Liveness::Stopped) => {
                    counts.0 += 1
                }
                Some(Liveness::Stale) => counts.1 += 1,
                Some(Liveness::Down) => counts.2 += 1,
                Some(Liveness::Degraded) | None => counts.3 += 1,
            }
        }
        counts
    }

    fn set_status(&mut self, tone: Tone, text: impl Into<String>) {
        self.status = Some(StatusLine {
            text: text.into(),
            tone,
            at: self.now,
        });
    }

    /// The system of a topic, for the rates: the level after `env`, or the
    /// reserved namespace, or `(other)` outside the prefix.
    fn system_of<'t>(&self, topic: &'t str) -> &'t str {
        let Some(rest) = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return "(other)";
        };
        let mut levels = rest.split('/');
        match levels.next() {
            Some(first) if first.starts_with('_') => first,
            Some(_) => levels.next().unwrap_or("(none)"),
            None => "(none)",
        }
    }
}

/// Applies one event to the model. Pure: no I/O, no clock; effects are
/// queued in [`App::effects`].
pub fn update(app: &mut App, event: Event) {
    match event {
        Event::Key(key) => {
            if key.kind != KeyEventKind::Release {
                on_key(app, key);
                app.dirty = true;
            }
        }
        Event::Mouse(mouse) => mouse::on_mouse(app, mouse),
        Event::Resize(w, h) => {
            app.size = (w, h);
            app.dirty = true;
        }
        Event::Tick(now) => on_tick(app, now),
        Event::Mqtt(batch) => {
            for m in batch.messages {
                ingest(app, m);
            }
            flush_subscriptions(app);
            app.dirty = true;
        }
        Event::Status(state) => {
            if let ConnState::Reconnecting { error, .. } = &state {
                app.conn.last_error = Some((error.clone(), app.now));
            }
            if std::mem::discriminant(&state) != std::mem::discriminant(&app.conn.state) {
                app.conn.since = app.now;
            }
            app.conn.state = state;
            app.dirty = true;
        }
        Event::Outcome(Outcome { ok, text }) => {
            app.set_status(if ok { Tone::Ok } else { Tone::Error }, text);
            app.dirty = true;
        }
        Event::History(page) => {
            history::on_page(app, page);
            app.dirty = true;
        }
    }
}

fn on_tick(app: &mut App, now: DateTime<Utc>) {
    app.now = now;
    let second = now.timestamp();
    app.rate.advance(second);
    for rate in app.system_rates.values_mut() {
        rate.advance(second);
    }
    app.topics.prune(now, &app.limits);
    if !app.indexes_pending.is_empty() {
        read_indexed_records(app);
        flush_subscriptions(app);
    }
    if app
        .status
        .as_ref()
        .is_some_and(|s| now - s.at > Duration::seconds(STATUS_SECONDS))
    {
        app.status = None;
    }
    // Ages and staleness change with time.
    app.dirty = true;
}

fn ingest(app: &mut App, m: Incoming) {
    app.seq += 1;
    let second = m.at.timestamp();
    let mut m = m;
    let meaning = std::mem::replace(&mut m.meaning, Meaning::Plain);
    let reserved = !matches!(meaning, Meaning::Plain | Meaning::ReplayOutcome(_));
    app.rate.add(second, 1);
    // Looked up by &str: a firehose allocates no key per message.
    let system = app.system_of(&m.topic);
    if let Some(rate) = app.system_rates.get_mut(system) {
        rate.add(second, 1);
    } else {
        let key = if app.system_rates.len() < app.limits.systems {
            system.to_string()
        } else {
            "(more)".to_string()
        };
        app.system_rates.entry(key).or_default().add(second, 1);
    }
    let msg = Arc::new(Msg::from_incoming(app.seq, m, reserved));
    match meaning {
        Meaning::Plain | Meaning::OtherReserved => {}
        Meaning::Health { listener, report } => on_health(app, listener, report, &msg),
        Meaning::Failed {
            listener,
            id,
            record,
        } => on_failed(app, listener, id, record, &msg),
        Meaning::FailedIndex { listener, ids } => on_failed_index(app, listener, ids, msg.at),
        Meaning::Roster(names) => on_roster(app, names),
        Meaning::ReplayOutcome(outcome) => on_replay_outcome(app, outcome),
    }
    app.topics.record(&msg, &app.limits);
    if let Some(p) = &mut app.stream_state.paused {
        p.arrived += 1;
    }
    if !app.history.is_empty() {
        history::forget_live_duplicate(app, &msg);
    }
    app.stream_bytes += msg.cost;
    app.stream.push_back(msg);
    history::trim(app);
}

fn on_health(
    app: &mut App,
    listener: String,
    report: Option<Result<Box<HealthReport>, String>>,
    msg: &Arc<Msg>,
) {
    let Some(report) = report else {
        // The retained report was deleted: forget it unless the roster
        // still names the listener.
        if let Some(entry) = app.listeners.get_mut(&listener) {
            entry.report = None;
            entry.msg = None;
            if !entry.in_roster {
                app.listeners.remove(&listener);
            }
        }
        return;
    };
    if !app.listeners.contains_key(&listener) && app.listeners.len() >= app.limits.listeners {
        app.listeners_dropped += 1;
        return;
    }
    watch_index(app, &listener);
    let entry = app
        .listeners
        .entry(listener.clone())
        .or_insert_with(|| ListenerEntry {
            name: listener,
            report: None,
            msg: None,
            in_roster: false,
        });
    entry.report = Some(report);
    entry.msg = Some(msg.clone());
}

fn on_failed(
    app: &mut App,
    listener: String,
    id: String,
    record: Option<Result<Box<FailureRecord>, String>>,
    msg: &Arc<Msg>,
) {
    let key = (listener.clone(), id.clone());
    watch_index(app, &listener);
    let Some(record) = record else {
        if let Some(old) = app.failed.remove(&key) {
            let what = match old.pending {
                Some(Pending::Ack) => "acknowledged",
                Some(Pending::Replay) => "replayed: cleared",
                None => "cleared",
            };
            app.set_status(Tone::Ok, format!("{listener}/{id}: {what}"));
        }
        app.failed_selected = app.failed_selected.min(app.failed.len().saturating_sub(1));
        return;
    };
    if let Some(old) = app.failed.get(&key) {
        if old.pending == Some(Pending::Replay) {
            let attempts = record.as_ref().map(|r| r.attempts).unwrap_or(0);
            app.set_status(
                Tone::Error,
                format!("{listener}/{id}: replay failed again (attempts {attempts})"),
            );
        }
    } else if app.failed.len() >= app.limits.failed {
        app.failed_dropped += 1;
        return;
    }
    app.failed.insert(
        key,
        FailedEntry {
            listener,
            id,
            topic: msg.topic.to_string(),
            record,
            msg: msg.clone(),
            pending: None,
        },
    );
}

/// Outcomes that change no record (capped, unknown) are only known from
/// the reply: they end the wait here. Replayed and failed ones show through
/// the records themselves.
fn on_replay_outcome(app: &mut App, outcome: ReplayOutcome) {
    let mut notes = Vec::new();
    for result in &outcome.results {
        let key = (outcome.listener.clone(), result.id.clone());
        match result.outcome {
            ReplayOutcomeKind::Capped => notes.push(format!(
                "{} capped after {} attempts (acknowledge it)",
                result.id,
                result.attempts.unwrap_or(0)
            )),
            ReplayOutcomeKind::Unknown => {
                notes.push(format!("{} unknown to {}", result.id, outcome.listener))
            }
            ReplayOutcomeKind::Replayed | ReplayOutcomeKind::Failed => continue,
        }
        if let Some(f) = app.failed.get_mut(&key) {
            f.pending = None;
        }
    }
    if !notes.is_empty() {
        app.set_status(Tone::Error, format!("replay: {}", notes.join("; ")));
    }
}

fn on_roster(app: &mut App, names: Result<Vec<String>, String>) {
    let names = match names {
        Ok(names) => names,
        Err(e) => {
            app.set_status(Tone::Error, format!("_roster: {e}"));
            return;
        }
    };
    for entry in app.listeners.values_mut() {
        entry.in_roster = names.contains(&entry.name);
    }
    for name in names.iter().take(app.limits.listeners) {
        if !app.listeners.contains_key(name) && app.listeners.len() < app.limits.listeners {
            app.listeners.insert(
                name.clone(),
                ListenerEntry {
                    name: name.clone(),
                    report: None,
                    msg: None,
                    in_roster: true,
                },
            );
        }
        if app.health_subscribed.len() < app.limits.listeners
            && app.health_subscribed.insert(name.clone())
        {
            app.subscribe_queue
                .push(topic::health_topic(&app.prefix, name));
        }
        // A dead listener answers no ping: its records are found through
        // its index.
        watch_index(app, name);
    }
    app.listeners
        .retain(|_, l| l.in_roster || l.report.is_some());
    app.roster = names;
}

/// Subscribes to `listener`'s failure index by its exact topic, once.
fn watch_index(app: &mut App, listener: &str) {
    if app.index_subscribed.len() < app.limits.listeners && !app.index_subscribed.contains(listener)
    {
        app.index_subscribed.insert(listener.to_string());
        app.subscribe_queue
            .push(topic::failed_index_topic(&app.prefix, listener));
    }
}

/// A listener's failure index: kept until it settles (the records it lists
/// are then read by their exact topics, see [`read_indexed_records`]).
fn on_failed_index(
    app: &mut App,
    listener: String,
    ids: Result<Vec<String>, String>,
    at: DateTime<Utc>,
) {
    let mut ids = match ids {
        Ok(ids) => ids,
        Err(e) => {
            app.set_status(Tone::Error, format!("failure index of {listener}: {e}"));
            return;
        }
    };
    if !app.indexes_pending.contains_key(&listener)
        && app.indexes_pending.len() >= app.limits.listeners
    {
        return;
    }
    ids.truncate(app.limits.failed);
    app.indexes_pending.insert(listener, (at, ids));
}

/// Subscribes to the exact topic of each record that a settled index lists
/// and the console does not hold: on a broker that does not deliver
/// retained messages to wildcard subscriptions (RabbitMQ's MQTT plugin),
/// this is how the records of a listener that answers no `_ping` (dead)
/// are found. Each topic once, and no more than [`Limits::failed`].
fn read_indexed_records(app: &mut App) {
    let settled: Vec<String> = app
        .indexes_pending
        .iter()
        .filter(|(_, (at, _))| app.now - *at >= INDEX_SETTLE)
        .map(|(listener, _)| listener.clone())
        .collect();
    for listener in settled {
        let Some((_, ids)) = app.indexes_pending.remove(&listener) else {
            continue;
        };
        for id in ids {
            if app.records_subscribed.len() >= app.limits.failed
                || app.failed.len() >= app.limits.failed
            {
                // Beyond the caps: the rest is not tracked (settled indexes
                // are still dropped, so none waits forever).
                break;
            }
            // The record's topic level, as the listener wrote it.
            let level = topic::sanitize_segment(&id);
            let record = topic::failed_topic(&app.prefix, &listener, &id);
            if app.failed.contains_key(&(listener.clone(), level))
                || topic::validate_topic_name(&record).is_err()
                || !app.records_subscribed.insert(record.clone())
            {
                continue;
            }
            app.subscribe_queue.push(record);
        }
    }
}

/// Hands the queued exact topics to the ingest task, in chunks.
fn flush_subscriptions(app: &mut App) {
    if app.subscribe_queue.is_empty() {
        return;
    }
    let queued = std::mem::take(&mut app.subscribe_queue);
    app.effects.extend(
        queued
            .chunks(SUBSCRIBE_CHUNK)
            .map(|chunk| Effect::Subscribe(chunk.to_vec())),
    );
}

fn on_key(app: &mut App, key: KeyEvent) {
    // Ctrl-C quits from anywhere, overlays included.
    if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
        app.quit = true;
        return;
    }
    if let Some(overlay) = app.overlay.take() {
        app.overlay = on_overlay_key(app, overlay, key);
        return;
    }
    if let Some(action) = app.keys.action(app.scope(), &key) {
        apply(app, action);
    }
}

/// A key while an overlay is open; returns the overlay that stays open.
fn on_overlay_key(app: &mut App, overlay: Overlay, key: KeyEvent) -> Option<Overlay> {
    match overlay {
        Overlay::Help => None,
        Overlay::Confirm {
            question,
            effects,
            done,
            marks,
        } => match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => {
                app.effects.extend(effects);
                // Marked at once: the operator sees the request is under
                // way; the broker's echo (deletion or new attempts) settles
                // it.
                for (key, pending) in marks {
                    if let Some(f) = app.failed.get_mut(&key) {
                        f.pending = Some(pending);
                    }
                }
                app.set_status(Tone::Info, done);
                None
            }
            KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc | KeyCode::Char('q') => {
                app.set_status(Tone::Info, "cancelled");
                None
            }
            _ => Some(Overlay::Confirm {
                question,
                effects,
                done,
                marks,
            }),
        },
        Overlay::Filter(mut text) => match key.code {
            KeyCode::Enter => match Filter::parse(&text) {
                Ok(filter) => {
                    set_filter(app, filter);
                    None
                }
                Err(e) => {
                    app.set_status(Tone::Error, format!("filter {e}"));
                    Some(Overlay::Filter(text))
                }
            },
            KeyCode::Esc => None,
            _ => {
                edit_line(&mut text, key);
                // Filter as the operator types, whenever the text parses.
                if let Ok(filter) = Filter::parse(&text) {
                    set_filter(app, filter);
                }
                Some(Overlay::Filter(text))
            }
        },
        Overlay::Command(mut text) => match key.code {
            KeyCode::Enter => {
                run_command(app, &text);
                None
            }
            KeyCode::Esc => None,
            KeyCode::Backspace if text.is_empty() => None,
            _ => {
                edit_line(&mut text, key);
                Some(Overlay::Command(text))
            }
        },
    }
}

fn edit_line(text: &mut String, key: KeyEvent) {
    match key.code {
        KeyCode::Backspace => {
            text.pop();
        }
        KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => text.clear(),
        KeyCode::Char(c)
            if !key
                .modifiers
                .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
                && text.chars().count() < 1000 =>
        {
            text.push(c)
        }
        _ => {}
    }
}

fn set_filter(app: &mut App, filter: Filter) {
    if filter != app.stream_state.filter {
        // The rows read for the old filter are not those of the new one.
        app.history.reset();
    }
    app.stream_state.filter = filter;
    app.stream_state.selected = None;
}

/// Runs a `:` command line.
fn run_command(app: &mut App, line: &str) {
    let line = line.trim();
    let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    match cmd {
        "" => {}
        "q" | "quit" | "q!" => app.quit = true,
        "help" => app.overlay = Some(Overlay::Help),
        "ping" => {
            app.effects.push(Effect::Ping);
            app.set_status(Tone::Info, "ping sent: listeners report now");
        }
        "filter" | "f" => match Filter::parse(rest) {
            Ok(filter) => {
                set_filter(app, filter);
                app.view = View::Stream;
            }
            Err(e) => app.set_status(Tone::Error, format!("filter {e}")),
        },
        "theme" if !rest.is_empty() => app.effects.push(Effect::Theme(rest.to_string())),
        "pub" => {
            let (topic_name, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            match topic::validate_topic_name(topic_name) {
                _ if text.trim().is_empty() => app.set_status(Tone::Error, ":pub TOPIC TEXT needs a topic and a text"),
                Err(e) => app.set_status(Tone::Error, format!(":pub: {e}")),
                Ok(()) => app.effects.push(Effect::Publish { topic: topic_name.to_string(), text: text.trim().to_string() }),
            }
        }
        view if View::ALL.iter().any(|v| v.title().eq_ignore_ascii_case(view)) => {
            if let Some(v) = View::ALL.iter().find(|v| v.title().eq_ignore_ascii_case(view)) {
                app.view = *v;
                app.detail = None;
            }
        }
        other => app.set_status(
            Tone::Error,
            format!("unknown command `{other}`: try :pub TOPIC TEXT, :filter EXPR, :theme NAME, :ping, :q"),
        ),
    }
}

/// Carries out one action.
fn apply(app: &mut App, action: Action) {
    match action {
        Action::Quit => app.quit = true,
        Action::View(n) => {
            if let Some(view) = View::ALL.get(usize::from(n).saturating_sub(1)) {
                app.view = *view;
                app.detail = None;
            }
        }
        Action::NextView | Action::PrevView => {
            let step = if action == Action::NextView {
                1
            } else {
                View::ALL.len() - 1
            };
            app.view = View::ALL[(app.view.index() + step) % View::ALL.len()];
            app.detail = None;
        }
        Action::Help => app.overlay = Some(Overlay::Help),
        Action::Command => app.overlay = Some(Overlay::Command(String::new())),
        Action::Filter => {
            app.view = View::Stream;
            app.overlay = Some(Overlay::Filter(app.stream_state.filter.text.clone()));
        }
        Action::Problems => {
            app.problems_only = !app.problems_only;
            app.listener_selected = 0;
            app.stream_state.selected = None;
            app.history.reset();
            let text = if app.problems_only {
                "showing only problems (f: show all)"
            } else {
                "showing everything"
            };
            app.set_status(Tone::Info, text);
        }
        Action::Pause => toggle_pause(app),
        Action::Ping => {
            app.effects.push(Effect::Ping);
            app.set_status(Tone::Info, "ping sent: listeners report now");
        }
        Action::Back => {
            if app.detail.is_some() {
                app.detail = None;
            } else if app.view == View::Stream && app.stream_state.selected.is_some() {
                app.stream_state.selected = None;
            } else if app.view == View::Topics {
                collapse(app);
            }
        }
        Action::Up
        | Action::Down
        | Action::PageUp
        | Action::PageDown
        | Action::Top
        | Action::Bottom => move_selection(app, action),
        Action::Open => open(app),
        Action::Expand => set_expanded(app, true),
        Action::Collapse => collapse(app),
        Action::Ack | Action::Replay | Action::ReplayAll => failed_action(app, action),
        Action::Delete => delete_retained(app),
        Action::NextField | Action::PrevField => cycle_field(app, action == Action::NextField),
        Action::Export => export(app),
        Action::History => history::request_older(app, true),
    }
}

fn toggle_pause(app: &mut App) {
    if let Some(p) = app.stream_state.paused.take() {
        app.set_status(
            Tone::Info,
            format!("resumed: {} arrived while paused", p.arrived),
        );
    } else {
        app.stream_state.paused = Some(Paused {
            snapshot: app.stream.iter().cloned().collect(),
            arrived: 0,
        });
    }
}

/// Moves `index` in a list of `len` rows.
fn step(index: usize, len: usize, action: Action, page: usize) -> usize {
    let last = len.saturating_sub(1);
    match action {
        Action::Up => index.saturating_sub(1),
        Action::Down => (index + 1).min(last),
        Action::PageUp => index.saturating_sub(page),
        Action::PageDown => (index + page).min(last),
        Action::Top => 0,
        _ => last,
    }
}

fn move_selection(app: &mut App, action: Action) {
    let page = app.page();
    if let Some(detail) = &mut app.detail {
        let last = detail.line_count().saturating_sub(1);
        detail.scroll = step(detail.scroll, last + 1, action, page);
        return;
    }
    match app.view {
        View::Dashboard => {}
        View::Stream => {
            let rows = app.stream_rows();
            if rows.is_empty() {
                return;
            }
            let current = match app.stream_state.selected {
                Some(seq) => stream_index(&rows, seq),
                // Following: the newest row is where selection starts.
                None => rows.len() - 1,
            };
            // Past the oldest row: read older messages from the history
            // database (the selection stays; they appear above it).
            if app.stream_state.selected.is_some()
                && current == 0
                && matches!(action, Action::Up | Action::PageUp | Action::Top)
            {
                history::request_older(app, false);
                return;
            }
            let next = if app.stream_state.selected.is_none() && action == Action::Up {
                current
            } else {
                step(current, rows.len(), action, page)
            };
            let following = action == Action::Bottom;
            app.stream_state.selected = if following {
                None
            } else {
                rows.get(next).map(|m| m.seq)
            };
        }
        View::Topics => {
            let rows = app.topics.visible_rows();
            if rows.is_empty() {
                return;
            }
            let current = app
                .topic_selected
                .as_ref()
                .and_then(|s| rows.iter().position(|r| &r.path == s))
                .unwrap_or(0);
            let next = if app.topic_selected.is_none() {
                0
            } else {
                step(current, rows.len(), action, page)
            };
            app.topic_selected = rows.get(next).map(|r| r.path.clone());
        }
        View::Listeners => {
            let len = app.listener_rows().len();
            app.listener_selected = step(app.listener_selected, len, action, page);
        }
        View::Failed => {
            let len = app.failed.len();
            app.failed_selected = step(app.failed_selected, len, action, page);
        }
    }
}

/// The index in `rows` (stream rows, oldest first) of the message `seq`,
/// or of the next newer one when it is gone (evicted, filtered out).
pub fn stream_index(rows: &[&Arc<Msg>], seq: u64) -> usize {
    rows.iter()
        .position(|m| stream_order(m.seq) >= stream_order(seq))
        .unwrap_or(rows.len().saturating_sub(1))
}

/// The selected stream message (the newest when following).
pub fn selected_stream_msg(app: &App) -> Option<Arc<Msg>> {
    let rows = app.stream_rows();
    match app.stream_state.selected {
        Some(seq) => rows.iter().find(|m| m.seq == seq).map(|m| Arc::clone(m)),
        None => rows.last().map(|m| Arc::clone(m)),
    }
}

fn open(app: &mut App) {
    let msg = match app.view {
        View::Dashboard => app.stream.iter().rev().find(|m| !m.reserved).cloned(),
        View::Stream => selected_stream_msg(app),
        View::Topics => {
            let Some(path) = app.topic_selected.clone() else {
                return;
            };
            let node = app.topics.node(&path);
            if node.is_some_and(|n| n.data.is_none()) {
                set_expanded(app, !node.is_some_and(|n| n.expanded));
                return;
            }
            match node
                .and_then(|n| n.data.as_ref())
                .and_then(|d| d.history.back().cloned())
            {
                Some(m) => Some(m),
                None => {
                    app.set_status(
                        Tone::Info,
                        "no payload of this topic is kept any more (memory limits)",
                    );
                    return;
                }
            }
        }
        View::Listeners => app
            .listener_rows()
            .get(app.listener_selected)
            .and_then(|l| l.msg.clone()),
        View::Failed => app
            .failed_rows()
            .get(app.failed_selected)
            .map(|f| f.msg.clone()),
    };
    if let Some(msg) = msg {
        app.detail = Some(Detail::open(msg));
    }
}

fn set_expanded(app: &mut App, expanded: bool) {
    if app.view != View::Topics {
        return;
    }
    if let Some(node) = app
        .topic_selected
        .clone()
        .and_then(|p| app.topics.root.find_mut(&p))
    {
        node.expanded = expanded;
    }
}

fn collapse(app: &mut App) {
    if app.view != View::Topics {
        return;
    }
    let Some(path) = app.topic_selected.clone() else {
        return;
    };
    match app.topics.root.find_mut(&path) {
        Some(node) if node.expanded && !node.children.is_empty() => node.expanded = false,
        _ => {
            // Already collapsed: go to the parent.
            if let Some((parent, _)) = path.rsplit_once('/') {
                app.topic_selected = Some(parent.to_string());
            }
        }
    }
}

fn failed_action(app: &mut App, action: Action) {
    let Some(entry) = app
        .failed_rows()
        .get(app.failed_selected)
        .map(|e| (*e).clone())
    else {
        app.set_status(Tone::Info, "no failure record selected");
        return;
    };
    let key = (entry.listener.clone(), entry.id.clone());
    let (question, effects, done, marks) = match action {
        Action::Ack => (
            format!(
                "Acknowledge (dismiss) {}/{}? It will not be replayed.",
                entry.listener, entry.id
            ),
            vec![Effect::Ack {
                listener: entry.listener.clone(),
                records: vec![(entry.id.clone(), entry.topic.clone())],
            }],
            format!("acknowledging {}/{}…", entry.listener, entry.id),
            vec![(key, Pending::Ack)],
        ),
        Action::Replay => (
            format!(
                "Replay {}/{} in listener {}?",
                entry.listener, entry.id, entry.listener
            ),
            vec![Effect::Replay {
                listener: entry.listener.clone(),
                ids: vec![entry.id.clone()],
            }],
            format!("replay of {}/{} requested…", entry.listener, entry.id),
            vec![(key, Pending::Replay)],
        ),
        _ => {
            let marks: Vec<_> = app
                .failed
                .keys()
                .filter(|(l, _)| *l == entry.listener)
                .map(|k| (k.clone(), Pending::Replay))
                .collect();
            (
                format!(
                    "Replay all {} failed messages of {}?",
                    marks.len(),
                    entry.listener
                ),
                vec![Effect::Replay {
                    listener: entry.listener.clone(),
                    ids: Vec::new(),
                }],
                format!("replay of all records of {} requested…", entry.listener),
                marks,
            )
        }
    };
    app.overlay = Some(Overlay::Confirm {
        question,
        effects,
        done,
        marks,
    });
}

/// Picks the next (or previous) numeric field of the selected topic for
/// its sparkline.
fn cycle_field(app: &mut App, forward: bool) {
    if app.view != View::Topics {
        return;
    }
    let Some(path) = app.topic_selected.clone() else {
        app.set_status(Tone::Info, "select a topic first");
        return;
    };
    let fields = app
        .topics
        .node(&path)
        .and_then(|n| n.data.as_ref())
        .map(|d| fields::numeric_fields(&d.history))
        .unwrap_or_default();
    if fields.is_empty() {
        app.set_status(
            Tone::Info,
            format!("{path}: no numeric JSON field in its recent payloads"),
        );
        return;
    }
    let current = app.topic_series().map(|s| s.index).unwrap_or(0);
    let next = if forward {
        (current + 1) % fields.len()
    } else {
        (current + fields.len() - 1) % fields.len()
    };
    app.topic_field = Some((path, fields[next].clone()));
}

fn delete_retained(app: &mut App) {
    let Some(path) = app.topic_selected.clone() else {
        app.set_status(Tone::Info, "select a topic first");
        return;
    };
    let mut topics = Vec::new();
    if let Some(node) = app.topics.node(&path) {
        node.retained_topics(&path, &mut topics);
    }
    if topics.is_empty() {
        app.set_status(Tone::Info, format!("{path}: no retained topic here"));
        return;
    }
    let question = if topics.len() == 1 && topics[0] == path {
        format!("Delete the retained message of {path}?")
    } else {
        format!("Delete {} retained topics under {path}?", topics.len())
    };
    let done = format!("deleting {} retained topic(s)…", topics.len());
    app.overlay = Some(Overlay::Confirm {
        question,
        effects: vec![Effect::DeleteRetained(topics)],
        done,
        marks: Vec::new(),
    });
}

fn export(app: &mut App) {
    let (file, contents) = if let Some(detail) = &app.detail {
        export_msg(&detail.msg)
    } else if app.view == View::Stream {
        match selected_stream_msg(app) {
            Some(m) => export_msg(&m),
            None => return,
        }
    } else if app.view == View::Topics {
        let Some(path) = app.topic_selected.clone() else {
            app.set_status(Tone::Info, "select a topic first");
            return;
        };
        let Some(data) = app.topics.node(&path).and_then(|n| n.data.as_ref()) else {
            app.set_status(
                Tone::Info,
                format!("{path}: no message on this topic itself (select one below)"),
            );
            return;
        };
        let mut out = Vec::new();
        for m in &data.history {
            let line = serde_json::json!({
                "topic": &*m.topic,
                "time": signalbox_common::envelope::format_time(&m.at),
                "retained": m.retain,
                "size": m.size,
                "cut": m.cut,
                "kind": m.payload.kind(),
                "payload": payload_json(&m.payload),
            });
            out.extend_from_slice(line.to_string().as_bytes());
            out.push(b'\n');
        }
        (
            format!(
                "signalbox-history-{}.jsonl",
                topic::sanitize_segment(&path.replace('/', "_"))
            ),
            out,
        )
    } else {
        return;
    };
    app.effects.push(Effect::Export { file, contents });
}

fn payload_json(payload: &Payload) -> serde_json::Value {
    use base64::Engine;
    match payload {
        Payload::Envelope(e) => serde_json::to_value(&**e).unwrap_or_default(),
        Payload::Json(v) => v.clone(),
        Payload::Text(t) => serde_json::Value::String(t.clone()),
        Payload::Binary(b) => {
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
    }
}

fn export_msg(m: &Msg) -> (String, Vec<u8>) {
    let (ext, bytes) = match &m.payload {
        Payload::Envelope(e) => ("json", e.to_json_pretty().into_bytes()),
        Payload::Json(v) => ("json", serde_json::to_vec_pretty(v).unwrap_or_default()),
        Payload::Text(t) => ("txt", t.clone().into_bytes()),
        Payload::Binary(b) => ("bin", b.clone()),
    };
    let name = match m.payload.envelope() {
        // History rows are numbered from the top of the range: their id
        // names them better.
        Some(e) if m.is_from_history() => e.id.to_string(),
        _ if m.is_from_history() => format!("history-{}", u64::MAX - m.seq),
        _ => m.seq.to_string(),
    };
    (format!("signalbox-message-{name}.{ext}"), bytes)
}

pub mod fields;
#[cfg(test)]
pub mod fixtures;
pub mod history;
mod mouse;
#[cfg(test)]
mod tests;
