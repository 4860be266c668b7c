//! The message history: the SQLite database the recorder
//! (`signalbox-bridge recorder`) writes and `signalbox history` reads.
//! Everything that knows the schema lives here.
//!
//! One table, `messages`, one row per message, in arrival order (`seq`):
//!
//! | column   | type    | what |
//! | -------- | ------- | ---- |
//! | seq      | INTEGER | arrival order (rowid) |
//! | id       | TEXT    | envelope id, or an id made for a raw payload; unique |
//! | time     | INTEGER | envelope time (else arrival), ms since 1970 UTC |
//! | topic    | TEXT    | the topic |
//! | system   | TEXT    | third topic level under `{prefix}/{env}/`, or NULL |
//! | agent    | TEXT    | the envelope's agent, or NULL |
//! | severity | INTEGER | 0 debug, 1 info, 2 warning, 3 error (1 for raw payloads) |
//! | summary  | TEXT    | the envelope's summary, or a one-line excerpt |
//! | payload  | BLOB    | the exact payload bytes |
//!
//! Indexes on time, (topic, time), (system, time) and (agent, time) keep the
//! typical queries (the newest messages of a system, an agent, a subtree of
//! topics, a time window) at index lookups however large the table grows.
//! Two side tables (schema version 2) answer the shapes those indexes
//! cannot:
//!
//! - `topics` (topic, count, last_time): one row per distinct topic, kept
//!   by [`Store::insert`] and a delete trigger. A topic filter with `+`
//!   (`signalbox/prod/+/pkg1234/#`) is matched exactly against these few
//!   thousand rows, and the messages are then read through the
//!   (topic, time) index of just the topics that match.
//! - `messages_text`: a contentless FTS5 index, trigram tokenizer, of
//!   summary, topic and agent. `--grep` looks its trigrams up there to get
//!   the few candidate rows, and checks them exactly with `LIKE`.
//!
//! Both only pre-select: every row a query returns is checked exactly, so
//! their rules err on the side of offering too many rows, never too few.
//! A database of version 1 is upgraded (both tables filled from the
//! messages) when the recorder opens it; until then `signalbox history`
//! reads it the version-1 way (slower, same answers).
//!
//! The database is in WAL mode, so `signalbox history` reads while the
//! recorder writes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension};
use serde::Deserialize;
use signalbox_common::config::Config;
use signalbox_common::envelope::{Payload, Severity};
use signalbox_common::topic;

/// The schema version kept in `PRAGMA user_version`; a database written by
/// a newer recorder is refused rather than misread. Version 2 added the
/// `topics` and `messages_text` tables (see the module documentation).
pub const SCHEMA_VERSION: i64 = 2;
/// Default retention of the recorder: Fedora's operators asked about "last
/// night" and "last release", rarely about last year.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(90 * 86_400);
/// Default number of messages `signalbox history` prints.
pub const DEFAULT_LIMIT: usize = 100;
/// Rows deleted per retention transaction, so pruning a large backlog
/// never holds the write lock for long.
pub const PRUNE_CHUNK: usize = 10_000;
/// Longest summary stored for a payload that is not an envelope.
const RAW_SUMMARY_CHARS: usize = 400;
/// How long a reader waits for the writer's lock (WAL readers rarely wait).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Most `topics` rows a `+` filter is matched against before the query
/// gives up on the topic list and checks each message instead: bounds the
/// cost when a bus makes a new topic per message.
const MAX_TOPICS_EXAMINED: usize = 200_000;
/// Fewest and most `--grep` candidates the trigram index may hand over
/// (see [`Store::grep_candidates`] for the number in between).
const GREP_CANDIDATES: (usize, usize) = (2_000, 100_000);
/// Shortest `--grep` text the trigram index can look up.
const TRIGRAM: usize = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq      INTEGER PRIMARY KEY,
    id       TEXT    NOT NULL,
    time     INTEGER NOT NULL,
    topic    TEXT    NOT NULL,
    system   TEXT,
    agent    TEXT,
    severity INTEGER NOT NULL,
    summary  TEXT    NOT NULL,
    payload  BLOB    NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_id ON messages(id);
CREATE INDEX IF NOT EXISTS messages_time ON messages(time);
CREATE INDEX IF NOT EXISTS messages_topic ON messages(topic, time);
CREATE INDEX IF NOT EXISTS messages_system ON messages(system, time);
CREATE INDEX IF NOT EXISTS messages_agent ON messages(agent, time);
";

/// What version 2 adds. `count` can reach 0 when retention deleted every
/// message of a topic (the row is then removed with the next prune);
/// `last_time` is the newest time ever stored on the topic, an upper bound
/// once messages are deleted, which is all that skipping a topic needs.
/// The FTS index stores no text (`content=''`) and no positions
/// (`detail=none`): it only has to say which rows may contain a text.
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS topics (
    topic     TEXT PRIMARY KEY,
    count     INTEGER NOT NULL,
    last_time INTEGER NOT NULL
) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS messages_text USING fts5(
    summary, topic, agent,
    content = '', detail = none, columnsize = 0, tokenize = 'trigram'
);
CREATE TRIGGER IF NOT EXISTS messages_forget AFTER DELETE ON messages BEGIN
    INSERT INTO messages_text (messages_text, rowid, summary, topic, agent)
        VALUES ('delete', old.seq, old.summary, old.topic, old.agent);
    UPDATE topics SET count = count - 1 WHERE topic = old.topic;
END;
";

/// Fills the version-2 tables from the messages of a version-1 database.
const MIGRATE_V1: &str = "
INSERT INTO topics (topic, count, last_time)
    SELECT topic, count(*), max(time) FROM messages GROUP BY topic;
INSERT INTO messages_text (rowid, summary, topic, agent)
    SELECT seq, summary, topic, agent FROM messages;
";

/// What can go wrong with the history database.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The database file does not exist (nothing was recorded there yet).
    #[error(
        "no history database at {path}: start `signalbox-bridge recorder` (or pass --db FILE)"
    )]
    Missing {
        /// The path looked at.
        path: PathBuf,
    },
    /// SQLite refused to open, read or write the database.
    #[error("history database {path}: {reason}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's explanation.
        reason: String,
    },
    /// The database was written by a newer version of signalbox.
    #[error("history database {path} has schema version {found}; this signalbox knows {SCHEMA_VERSION}: upgrade it")]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: i64,
    },
}

/// One message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Arrival order in this database.
    pub seq: i64,
    /// Envelope id, or an id made for a raw payload.
    pub id: String,
    /// Envelope time, else arrival time.
    pub time: DateTime<Utc>,
    /// The topic it was published to.
    pub topic: String,
    /// The system (third topic level), when the topic is an event topic.
    pub system: Option<String>,
    /// The envelope's agent.
    pub agent: Option<String>,
    /// The envelope's severity (info for raw payloads).
    pub severity: Severity,
    /// One line for people.
    pub summary: String,
    /// The exact payload bytes.
    pub payload: Vec<u8>,
}

impl StoredMessage {
    /// The row for a message received on `topic`: what the recorder stores.
    /// `id` is the listener runtime's id (the envelope's, or one it made),
    /// `received` the arrival time used when the payload has none.
    pub fn from_delivery(
        prefix: &str,
        topic_name: &str,
        payload: &[u8],
        decoded: &Payload,
        id: &str,
        received: DateTime<Utc>,
    ) -> StoredMessage {
        let envelope = decoded.envelope();
        StoredMessage {
            seq: 0,
            id: id.to_string(),
            time: envelope.map(|e| e.time).unwrap_or(received),
            topic: topic_name.to_string(),
            system: topic::parse(prefix, topic_name).map(|p| p.system),
            agent: envelope.and_then(|e| e.agent.clone()),
            severity: decoded.severity().unwrap_or_default(),
            summary: decoded.summary_line(RAW_SUMMARY_CHARS),
            payload: payload.to_vec(),
        }
    }
}

/// A history query; every field given narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only this system (third topic level).
    pub system: Option<String>,
    /// Only topics matching this MQTT filter (`+`, `#`).
    pub topic: Option<String>,
    /// Only this agent.
    pub agent: Option<String>,
    /// Only messages whose summary, topic or agent contain this text
    /// (ASCII case-insensitive).
    pub grep: Option<String>,
    /// Only this severity and above.
    pub min_severity: Option<Severity>,
    /// Only messages at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only messages before this time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many (the newest).
    pub limit: usize,
}

/// A position in the history's order (time, then `seq`) that a page of
/// older messages ends before: the console pages back with it, from the
/// oldest message it shows to the oldest message of the page before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Before {
    /// Only messages at or before this time (to the millisecond)…
    pub time: DateTime<Utc>,
    /// …and, of those at exactly `time`, only those stored before this row.
    /// `None` keeps every message at `time`: the first page, older than a
    /// message that did not come from this database (whose copy, if the
    /// recorder stored it, the caller recognises by its id).
    pub seq: Option<i64>,
}

impl Before {
    /// The position of a stored message: the next page is what is older.
    pub fn message(m: &StoredMessage) -> Before {
        Before {
            time: m.time,
            seq: Some(m.seq),
        }
    }
}

/// What a query found: the newest matches, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryResult {
    /// The messages, oldest first.
    pub messages: Vec<StoredMessage>,
    /// Whether older matches exist beyond the limit.
    pub truncated: bool,
}

/// An open history database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Whether the version-2 tables exist (false for a version-1 database
    /// opened read-only: queries then scan as version 1 did).
    indexed: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn severity_code(s: Severity) -> i64 {
    match s {
        Severity::Debug => 0,
        Severity::Info => 1,
        Severity::Warning => 2,
        Severity::Error => 3,
    }
}

fn severity_of(code: i64) -> Severity {
    match code {
        0 => Severity::Debug,
        2 => Severity::Warning,
        c if c >= 3 => Severity::Error,
        _ => Severity::Info,
    }
}

/// The oldest and the newest time in the store.
pub type TimeSpan = (DateTime<Utc>, DateTime<Utc>);

impl Store {
    /// Opens (creating when needed, with its directory) the database for
    /// writing: WAL, `synchronous = NORMAL` (a commit is durable against a
    /// crash of the process; the last ones may be lost on power failure).
    pub fn open_writer(path: &Path) -> Result<Store, HistoryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| HistoryError::Sqlite {
                path: path.to_path_buf(),
                reason: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        let conn = Connection::open(path).map_err(|e| sqlite(path, e))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            indexed: false,
        };
        let found = store.check_version()?;
        store
            .conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sqlite(path, e))?;
        store
            .conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| sqlite(path, e))?;
        store
            .conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| sqlite(path, e))?;
        store.migrate(found)?;
        store.indexed = true;
        Ok(store)
    }

    /// Creates the schema, or upgrades one of version `found`, in one
    /// transaction (an interrupted upgrade leaves version 1 intact).
    fn migrate(&mut self, found: i64) -> Result<(), HistoryError> {
        let path = self.path.clone();
        let err = |e| sqlite(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute_batch(SCHEMA).map_err(err)?;
        if found < 2 {
            tx.execute_batch(SCHEMA_V2).map_err(err)?;
            if found == 1 {
                // Minutes for tens of millions of messages, once.
                tracing::info!(
                    "upgrading history database {} to schema version {SCHEMA_VERSION} (indexing topics and text)",
                    path.display()
                );
                tx.execute_batch(MIGRATE_V1).map_err(err)?;
            }
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Opens an existing database read-only.
    pub fn open_reader(path: &Path) -> Result<Store, HistoryError> {
        if !path.exists() {
            return Err(HistoryError::Missing {
                path: path.to_path_buf(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sqlite(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sqlite(path, e))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            indexed: false,
        };
        store.indexed = store.check_version()? >= 2;
        Ok(store)
    }

    /// The database's schema version, refused when newer than this code.
    fn check_version(&self) -> Result<i64, HistoryError> {
        let found: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| sqlite(&self.path, e))?;
        if found > SCHEMA_VERSION {
            return Err(HistoryError::NewerSchema {
                path: self.path.clone(),
                found,
            });
        }
        Ok(found)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores messages in one transaction; a message whose id is already
    /// stored (a redelivery) is skipped. Returns how many were new.
    ///
    /// The text index and the topic list are kept here rather than by
    /// insert triggers: the topics of a batch are counted in memory and
    /// written once per batch each, not once per message.
    pub fn insert<'a>(
        &mut self,
        messages: impl IntoIterator<Item = &'a StoredMessage>,
    ) -> Result<usize, HistoryError> {
        let path = self.path.clone();
        let err = |e| sqlite(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let mut added = 0;
        // topic -> (new messages, newest time), written after the batch.
        let mut topics: std::collections::HashMap<&str, (i64, i64)> =
            std::collections::HashMap::new();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO messages
                     (id, time, topic, system, agent, severity, summary, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(err)?;
            let mut index_text = tx
                .prepare_cached(
                    "INSERT INTO messages_text (rowid, summary, topic, agent)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(err)?;
            for m in messages {
                let time = m.time.timestamp_millis();
                let new = insert
                    .execute(rusqlite::params![
                        m.id,
                        time,
                        m.topic,
                        m.system,
                        m.agent,
                        severity_code(m.severity),
                        m.summary,
                        m.payload,
                    ])
                    .map_err(err)?;
                if new == 0 {
                    continue;
                }
                added += new;
                index_text
                    .execute(rusqlite::params![
                        tx.last_insert_rowid(),
                        m.summary,
                        m.topic,
                        m.agent
                    ])
                    .map_err(err)?;
                let entry = topics.entry(m.topic.as_str()).or_insert((0, time));
                entry.0 += 1;
                entry.1 = entry.1.max(time);
            }
            let mut count_topic = tx
                .prepare_cached(
                    "INSERT INTO topics (topic, count, last_time) VALUES (?1, ?2, ?3)
                     ON CONFLICT (topic) DO UPDATE SET count = count + excluded.count,
                         last_time = max(last_time, excluded.last_time)",
                )
                .map_err(err)?;
            for (topic_name, (count, last_time)) in topics {
                count_topic
                    .execute(rusqlite::params![topic_name, count, last_time])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(added)
    }

    /// Deletes up to [`PRUNE_CHUNK`] messages older than `before`, in one
    /// transaction; call again while it returns a full chunk. (A trigger
    /// takes them out of the text index and the topic counts.)
    pub fn prune_chunk(&mut self, before: DateTime<Utc>) -> Result<usize, HistoryError> {
        let path = self.path.clone();
        let err = |e| sqlite(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let deleted = tx
            .execute(
                "DELETE FROM messages WHERE seq IN
                 (SELECT seq FROM messages WHERE time < ?1 ORDER BY time LIMIT ?2)",
                rusqlite::params![before.timestamp_millis(), PRUNE_CHUNK as i64],
            )
            .map_err(err)?;
        if deleted > 0 {
            tx.execute("DELETE FROM topics WHERE count <= 0", [])
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(deleted)
    }

    /// Lets SQLite refresh its planner statistics (cheap; run now and then
    /// by the recorder so that queries keep choosing the right index).
    pub fn optimize(&self) -> Result<(), HistoryError> {
        self.conn
            .execute_batch("PRAGMA optimize;")
            .map_err(|e| sqlite(&self.path, e))
    }

    /// Full planner statistics (the benchmark runs it after a bulk fill).
    pub fn analyze(&self) -> Result<(), HistoryError> {
        self.conn
            .execute_batch("ANALYZE;")
            .map_err(|e| sqlite(&self.path, e))
    }

    /// Number of messages stored.
    pub fn count(&self) -> Result<u64, HistoryError> {
        self.conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| sqlite(&self.path, e))
    }

    /// The arrival number of the newest message (0 when empty): rows are
    /// numbered in order, so it grows by one per stored message.
    pub fn newest_seq(&self) -> Result<i64, HistoryError> {
        self.conn
            .query_row("SELECT coalesce(max(seq), 0) FROM messages", [], |r| {
                r.get(0)
            })
            .map_err(|e| sqlite(&self.path, e))
    }

    /// The time of the oldest and the newest message.
    pub fn span(&self) -> Result<Option<TimeSpan>, HistoryError> {
        let row: Option<(Option<i64>, Option<i64>)> = self
            .conn
            // Two subqueries, each answered from the time index (one
            // SELECT of both min() and max() reads the whole table).
            .query_row(
                "SELECT (SELECT min(time) FROM messages), (SELECT max(time) FROM messages)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| sqlite(&self.path, e))?;
        Ok(match row {
            Some((Some(a), Some(b))) => Some((millis(a), millis(b))),
            _ => None,
        })
    }

    /// Runs a query: the newest `limit` matches, returned oldest first.
    ///
    /// In two steps, in one read transaction: the first finds the matches'
    /// sequence numbers, reading only indexes and the columns filtered on;
    /// the second reads those (at most `limit`) messages whole, so no
    /// payload is read for a row that is filtered out. How the first step
    /// narrows is [`Store::plan`]'s choice; a topic filter SQL cannot say
    /// exactly is checked on each row as the rows stream in newest first.
    pub fn query(&self, q: &Query) -> Result<QueryResult, HistoryError> {
        self.run(q, None)
    }

    /// Runs a query over the messages older than `before` (the console's
    /// paging back): the newest `limit` of them, returned oldest first.
    /// Paging with [`Before::message`] of each page's oldest message
    /// visits every match once, also when many share a millisecond.
    pub fn query_before(&self, q: &Query, before: Before) -> Result<QueryResult, HistoryError> {
        self.run(q, Some(before))
    }

    fn run(&self, q: &Query, before: Option<Before>) -> Result<QueryResult, HistoryError> {
        let err = |e| sqlite(&self.path, e);
        // One snapshot for both steps, so that retention running in
        // between cannot take a found message away.
        let snapshot = self.conn.unchecked_transaction().map_err(err)?;
        let plan = self.plan(q, before)?;
        let mut seqs = Vec::new();
        let mut truncated = false;
        {
            let mut stmt = snapshot.prepare(&plan.sql).map_err(err)?;
            let mut rows = stmt
                .query(params_from_iter(plan.params.iter()))
                .map_err(err)?;
            while let Some(row) = rows.next().map_err(err)? {
                if let Some(filter) = &plan.exact_filter {
                    let topic_name = row.get_ref(1).map_err(err)?;
                    let topic_name = topic_name.as_str().map_err(|e| err(e.into()))?;
                    if !topic::matches(filter, topic_name) {
                        continue;
                    }
                }
                if seqs.len() == q.limit {
                    truncated = true;
                    break;
                }
                seqs.push(row.get::<_, i64>(0).map_err(err)?);
            }
        }
        let mut fetch = snapshot
            .prepare_cached(
                "SELECT seq, id, time, topic, system, agent, severity, summary, payload
                 FROM messages WHERE seq = ?1",
            )
            .map_err(err)?;
        let mut messages = Vec::with_capacity(seqs.len());
        for seq in seqs.iter().rev() {
            let m = fetch
                .query_row([seq], |row| {
                    Ok(StoredMessage {
                        seq: row.get(0)?,
                        id: row.get(1)?,
                        time: millis(row.get(2)?),
                        topic: row.get(3)?,
                        system: row.get(4)?,
                        agent: row.get(5)?,
                        severity: severity_of(row.get(6)?),
                        summary: row.get(7)?,
                        payload: row.get(8)?,
                    })
                })
                .map_err(err)?;
            messages.push(m);
        }
        Ok(QueryResult {
            messages,
            truncated,
        })
    }

    /// Chooses how a query's first step narrows (measured in BENCHMARKS.md):
    /// - `--grep` of at least three characters whose trigrams are rare
    ///   enough: the rows the text index offers, each checked exactly;
    /// - a topic filter with `+` (or a leading `#`) whose topics carry few
    ///   enough messages: the (topic, time) index of just those topics;
    /// - otherwise the indexes SQLite picks (time, system, agent, the
    ///   literal start of the topic filter), newest first. When the text or
    ///   the topics are common this finds `limit` matches within a few
    ///   thousand rows, sooner than reading every candidate would.
    fn plan(&self, q: &Query, before: Option<Before>) -> Result<Plan, HistoryError> {
        if !self.indexed {
            return Ok(Plan::new(q, before, None, TopicPick::Unknown));
        }
        let mut total = None;
        let mut approx_total = || -> Result<f64, HistoryError> {
            if total.is_none() {
                total = Some(self.approx_count()?);
            }
            Ok(total.unwrap_or(0.0))
        };
        let mut topics = TopicPick::Unknown;
        if let Some(filter) = &q.topic {
            if let TopicSql::Prefix(start) = topic_range(filter) {
                topics = self.matching_topics(filter, &start, q, &mut approx_total)?;
            }
        }
        let mut rows = None;
        if let Some(text) = &q.grep {
            rows = self.grep_candidates(text, q.limit, &mut approx_total)?;
        }
        Ok(Plan::new(q, before, rows, topics))
    }

    /// About how many messages are stored, at the cost of two index
    /// lookups (`count(*)` would read a whole index).
    fn approx_count(&self) -> Result<f64, HistoryError> {
        self.conn
            .query_row(
                // Two subqueries: SQLite answers a lone min() or max() from
                // the index, but both in one SELECT scan the table.
                "SELECT coalesce((SELECT max(seq) FROM messages)
                                 - (SELECT min(seq) FROM messages) + 1, 0)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as f64)
            .map_err(|e| sqlite(&self.path, e))
    }

    /// The topics `filter` matches that have messages at or after the
    /// query's `since`, when reading their (topic, time) index is cheaper
    /// than checking messages newest first.
    ///
    /// `start` is the filter's literal start, which narrows the topic list.
    fn matching_topics(
        &self,
        filter: &str,
        start: &str,
        q: &Query,
        approx_total: &mut dyn FnMut() -> Result<f64, HistoryError>,
    ) -> Result<TopicPick, HistoryError> {
        use rusqlite::types::Value;
        let err = |e| sqlite(&self.path, e);
        let since = q.since.map_or(i64::MIN, |t| t.timestamp_millis());
        let mut sql =
            String::from("SELECT topic, count FROM topics WHERE last_time >= ?1 AND count > 0");
        let mut params = vec![Value::Integer(since)];
        if !start.is_empty() {
            sql.push_str(" AND topic >= ?2 AND topic < ?3");
            params.push(Value::Text(start.to_string()));
            params.push(Value::Text(successor(start)));
        }
        let mut stmt = self.conn.prepare_cached(&sql).map_err(err)?;
        let mut rows = stmt.query(params_from_iter(params.iter())).map_err(err)?;
        let mut topics = Vec::new();
        let mut messages: i64 = 0;
        let mut examined = 0;
        while let Some(row) = rows.next().map_err(err)? {
            examined += 1;
            if examined > MAX_TOPICS_EXAMINED {
                return Ok(TopicPick::Unknown);
            }
            let name = row.get_ref(0).map_err(err)?;
            let name = name.as_str().map_err(|e| err(e.into()))?;
            if topic::matches(filter, name) {
                topics.push(name.to_string());
                messages = messages.saturating_add(row.get::<_, i64>(1).map_err(err)?);
            }
        }
        // Newest first, limit + 1 matches take about this many rows.
        let scan = (q.limit as f64 + 1.0) * approx_total()? / messages.max(1) as f64;
        Ok(if messages as f64 <= scan * TOPIC_ROW_COST {
            TopicPick::Listed(topics)
        } else {
            TopicPick::Common
        })
    }

    /// The rows that may contain `text` in their summary, topic or agent:
    /// those holding its rarest trigrams (a superset), when there are few
    /// enough of them; `None` for text shorter than a trigram or common
    /// text.
    ///
    /// Which trigrams: FTS5 intersects posting lists by walking them, so an
    /// AND with a trigram every message has (`pkg` in `pkg1234`) reads the
    /// whole index. Each trigram is counted in the newest
    /// [`TRIGRAM_SAMPLE`] messages (a rowid range FTS5 seeks to), and the
    /// [`RAREST_TRIGRAMS`] rarest are intersected over all messages.
    ///
    /// "Few enough": reading `c` candidates costs about `c` row lookups;
    /// checking rows newest first finds limit + 1 matches after about
    /// (limit + 1) × total / c rows. The two are equal at
    /// c = √((limit + 1) × total), the cap used (within
    /// [`GREP_CANDIDATES`]).
    fn grep_candidates(
        &self,
        text: &str,
        limit: usize,
        approx_total: &mut dyn FnMut() -> Result<f64, HistoryError>,
    ) -> Result<Option<Vec<i64>>, HistoryError> {
        let grams = trigrams(text);
        if grams.is_empty() {
            return Ok(None);
        }
        let err = |e| sqlite(&self.path, e);
        let total = approx_total()?;
        let cap = ((limit as f64 + 1.0) * total)
            .sqrt()
            .clamp(GREP_CANDIDATES.0 as f64, GREP_CANDIDATES.1 as f64) as usize;
        let newest = self.newest_seq()?;
        let mut sample = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM messages_text WHERE messages_text MATCH ?1 AND rowid > ?2",
            )
            .map_err(err)?;
        let mut counted: Vec<(i64, &String)> = Vec::with_capacity(grams.len());
        for gram in &grams {
            let n: i64 = sample
                .query_row(
                    rusqlite::params![fts_term(gram), newest - TRIGRAM_SAMPLE],
                    |r| r.get(0),
                )
                .map_err(err)?;
            counted.push((n, gram));
        }
        counted.sort();
        let rarest = counted[0].0 as f64 / TRIGRAM_SAMPLE.min(newest.max(1)) as f64;
        if rarest * total > (MAX_POSTINGS_READ * cap) as f64 {
            // Even the rarest trigram is everywhere: its posting list
            // would cost more than checking messages newest first.
            return Ok(None);
        }
        let expression: Vec<String> = counted
            .iter()
            .take(RAREST_TRIGRAMS)
            .map(|(_, g)| fts_term(g))
            .collect();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT rowid FROM messages_text WHERE messages_text MATCH ?1 LIMIT ?2")
            .map_err(err)?;
        let rows: Vec<i64> = stmt
            .query_map(
                rusqlite::params![expression.join(" AND "), cap as i64 + 1],
                |r| r.get(0),
            )
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        Ok((rows.len() <= cap).then_some(rows))
    }
}

/// How many of the newest messages `--grep` counts each trigram in, to
/// find the rarest.
const TRIGRAM_SAMPLE: i64 = 20_000;
/// How many of the rarest trigrams are intersected: more narrow better,
/// but each adds its whole posting list to read.
const RAREST_TRIGRAMS: usize = 2;
/// Most posting-list entries per candidate allowed (the rarest trigram's
/// estimated list length against the candidate cap).
const MAX_POSTINGS_READ: usize = 20;

/// How much more a row costs when checked newest first (a time-index
/// entry, a table lookup, a topic match in Rust) than when read from the
/// (topic, time) index of a known topic: an estimate, see
/// [`Store::matching_topics`].
const TOPIC_ROW_COST: f64 = 4.0;

/// The distinct trigrams of `text` (none when it is shorter than one).
fn trigrams(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut grams: Vec<String> = chars.windows(TRIGRAM).map(|w| w.iter().collect()).collect();
    grams.sort();
    grams.dedup();
    grams
}

/// One trigram as an FTS5 term (a quoted string).
fn fts_term(gram: &str) -> String {
    format!("\"{}\"", gram.replace('"', "\"\""))
}

/// GLOB patterns, any of which a topic matching the MQTT `filter` matches
/// (a superset: `*` also crosses `/`); `None` when the filter is `#`.
fn topic_globs(filter: &str) -> Option<Vec<String>> {
    let levels: Vec<&str> = filter.split('/').collect();
    let (levels, subtree) = match levels.split_last() {
        Some((&"#", rest)) => (rest, true),
        _ => (&levels[..], false),
    };
    if levels.is_empty() {
        return None;
    }
    let mut pattern = String::new();
    for (i, level) in levels.iter().enumerate() {
        if i > 0 {
            pattern.push('/');
        }
        if *level == "+" {
            pattern.push('*');
        } else {
            for c in level.chars() {
                match c {
                    '*' | '?' | '[' => {
                        pattern.push('[');
                        pattern.push(c);
                        pattern.push(']');
                    }
                    c => pattern.push(c),
                }
            }
        }
    }
    Some(if subtree {
        // `a/#` is `a` itself and everything under it.
        vec![format!("{pattern}/*"), pattern]
    } else {
        vec![pattern]
    })
}

/// What the topic list says about a filter with wildcards.
#[derive(Debug)]
enum TopicPick {
    /// Exactly the topics it matches, whose messages are few.
    Listed(Vec<String>),
    /// Its topics carry so many messages that checking messages newest
    /// first finds the newest matches soonest.
    Common,
    /// Not looked at (version-1 database, too many topics).
    Unknown,
}

/// A query turned into SQL: its first step, which yields `seq` and `topic`
/// of the candidates, newest first.
#[derive(Debug)]
struct Plan {
    sql: String,
    params: Vec<rusqlite::types::Value>,
    /// The topic filter to check on each row (when SQL cannot say it
    /// exactly).
    exact_filter: Option<String>,
}

impl Plan {
    /// `before`: where the page ends (paging back); `rows`: the only rows
    /// that can match (from the text index); `topics`: what the topic list
    /// said.
    fn new(q: &Query, before: Option<Before>, rows: Option<Vec<i64>>, topics: TopicPick) -> Plan {
        use rusqlite::types::Value;
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        // Adds a parameter and returns its placeholder.
        fn param(params: &mut Vec<Value>, value: Value) -> String {
            params.push(value);
            format!("?{}", params.len())
        }
        // Lists travel as one JSON parameter: no limit on their length.
        fn json<T: serde::Serialize>(list: &T) -> Value {
            Value::Text(serde_json::to_string(list).unwrap_or_else(|_| "[]".into()))
        }
        // Which index leads: SQLite's statistics cannot know how few rows
        // the text index or the topic list leave, so the plan says it.
        let source = if let Some(rows) = &rows {
            let p = param(&mut params, json(rows));
            clauses.push(format!("seq IN (SELECT value FROM json_each({p}))"));
            // Rowid lookups only (NOT INDEXED still allows those).
            "messages NOT INDEXED"
        } else if matches!(topics, TopicPick::Listed(_)) {
            "messages INDEXED BY messages_topic"
        } else {
            "messages"
        };
        if let Some(s) = &q.system {
            let p = param(&mut params, Value::Text(s.clone()));
            clauses.push(format!("system = {p}"));
        }
        if let Some(a) = &q.agent {
            let p = param(&mut params, Value::Text(a.clone()));
            clauses.push(format!("agent = {p}"));
        }
        if let Some(t) = q.since {
            let p = param(&mut params, Value::Integer(t.timestamp_millis()));
            clauses.push(format!("time >= {p}"));
        }
        if let Some(t) = q.until {
            let p = param(&mut params, Value::Integer(t.timestamp_millis()));
            clauses.push(format!("time < {p}"));
        }
        if let Some(before) = before {
            let t = param(&mut params, Value::Integer(before.time.timestamp_millis()));
            // `time <= t` alone leads, so the time index (or the topic's)
            // still answers it as a range.
            match before.seq {
                Some(seq) => {
                    let s = param(&mut params, Value::Integer(seq));
                    clauses.push(format!("time <= {t} AND (time < {t} OR seq < {s})"));
                }
                None => clauses.push(format!("time <= {t}")),
            }
        }
        if let Some(s) = q.min_severity {
            let p = param(&mut params, Value::Integer(severity_code(s)));
            clauses.push(format!("severity >= {p}"));
        }
        if let Some(text) = &q.grep {
            let p = param(&mut params, Value::Text(format!("%{}%", escape_like(text))));
            clauses.push(format!(
                "(summary LIKE {p} ESCAPE '\\' OR topic LIKE {p} ESCAPE '\\' OR agent LIKE {p} ESCAPE '\\')"
            ));
        }
        let mut exact_filter = None;
        if let TopicPick::Listed(topics) = &topics {
            let p = param(&mut params, json(topics));
            clauses.push(format!("topic IN (SELECT value FROM json_each({p}))"));
        } else if let Some(filter) = &q.topic {
            match topic_range(filter) {
                TopicSql::Exact(t) => {
                    let p = param(&mut params, Value::Text(t));
                    clauses.push(format!("topic = {p}"));
                }
                TopicSql::Subtree(base) => {
                    // `a/b/#` is `a/b` itself and everything under `a/b/`;
                    // '0' is the character after '/'.
                    let eq = param(&mut params, Value::Text(base.clone()));
                    let lo = param(&mut params, Value::Text(format!("{base}/")));
                    let hi = param(&mut params, Value::Text(format!("{base}0")));
                    clauses.push(format!(
                        "(topic = {eq} OR (topic >= {lo} AND topic < {hi}))"
                    ));
                }
                TopicSql::Prefix(start) => {
                    // When its topics are common, the literal start must
                    // not lead (SQLite would read all of its messages to
                    // sort them by time): `+topic` filters without an
                    // index, and the time index leads.
                    let column = match topics {
                        TopicPick::Common => "+topic",
                        _ => "topic",
                    };
                    if !start.is_empty() {
                        let hi = successor(&start);
                        let lo = param(&mut params, Value::Text(start));
                        let hi = param(&mut params, Value::Text(hi));
                        clauses.push(format!("({column} >= {lo} AND {column} < {hi})"));
                    }
                    // SQL drops most non-matches itself; Rust decides.
                    if let Some(globs) = topic_globs(filter) {
                        let any: Vec<String> = globs
                            .into_iter()
                            .map(|g| {
                                format!("{column} GLOB {}", param(&mut params, Value::Text(g)))
                            })
                            .collect();
                        clauses.push(format!("({})", any.join(" OR ")));
                    }
                    exact_filter = Some(filter.clone());
                }
            }
        }
        let mut sql = format!("SELECT seq, topic FROM {source}");
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(" ORDER BY time DESC, seq DESC");
        if exact_filter.is_none() {
            // One more than asked, to know whether older matches exist.
            sql.push_str(&format!(" LIMIT {}", q.limit.saturating_add(1)));
        }
        Plan {
            sql,
            params,
            exact_filter,
        }
    }
}

/// How much of a topic filter SQL can say by itself.
#[derive(Debug, PartialEq, Eq)]
enum TopicSql {
    /// No wildcard: this exact topic.
    Exact(String),
    /// `base/#`: base and everything under it.
    Subtree(String),
    /// A `+` (or a leading `#`): topics starting with this text, checked
    /// exactly afterwards.
    Prefix(String),
}

fn topic_range(filter: &str) -> TopicSql {
    let levels: Vec<&str> = filter.split('/').collect();
    let first_wild = levels.iter().position(|l| *l == "+" || *l == "#");
    match first_wild {
        None => TopicSql::Exact(filter.to_string()),
        Some(i) if levels[i] == "#" && i > 0 => TopicSql::Subtree(levels[..i].join("/")),
        Some(i) => {
            let mut start = levels[..i].join("/");
            if i > 0 {
                start.push('/');
            }
            TopicSql::Prefix(start)
        }
    }
}

/// The smallest string greater than every string starting with `s`
/// (`s` non-empty): its last character plus one.
fn successor(s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return chars.into_iter().collect();
        }
    }
    // Only reachable with a string of U+10FFFF: no upper bound needed,
    // but an empty string would match nothing, so use the largest one.
    char::MAX.to_string().repeat(s.chars().count() + 1)
}

fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

fn sqlite(path: &Path, e: rusqlite::Error) -> HistoryError {
    HistoryError::Sqlite {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The `[history]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistorySection {
    db: Option<PathBuf>,
    keep: Option<String>,
}

/// Where the history is and how long the recorder keeps it, from the
/// config file's `[history]` table (`db`, `keep`) or the defaults
/// (`STATE_DIR/history.db`, 90 days).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySettings {
    /// The database file.
    pub db: PathBuf,
    /// How long messages are kept; `None` keeps them forever.
    pub keep: Option<Duration>,
}

/// Reads the `[history]` settings; errors are one line naming the key.
pub fn settings(config: &Config) -> Result<HistorySettings, String> {
    let section: HistorySection = match config.sections.get("history") {
        Some(value) => value.clone().try_into().map_err(|e| {
            format!(
                "[history] in {}: {}",
                config.file.display(),
                signalbox_common::failed::one_line(&e.to_string())
            )
        })?,
        None => HistorySection::default(),
    };
    let db = section
        .db
        .unwrap_or_else(|| config.state_dir.value.join("history.db"));
    let keep = match section.keep {
        Some(text) => parse_keep(&text).map_err(|e| format!("[history] keep: {e}"))?,
        None => Some(DEFAULT_KEEP),
    };
    Ok(HistorySettings { db, keep })
}

/// Parses a retention: a duration (`90d`), or `forever` (`None`).
pub fn parse_keep(text: &str) -> Result<Option<Duration>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    let d = parse_duration(t)?;
    if d < Duration::from_secs(60) {
        return Err(format!(
            "retention {text:?} is shorter than a minute (use e.g. 90d, or forever)"
        ));
    }
    Ok(Some(d))
}

/// Parses a duration: one or more `NUMBER UNIT` parts, units `s`, `m`,
/// `h`, `d`, `w` (`90d`, `1h30m`, `45s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: use e.g. 45s, 30m, 1h, 1h30m, 7d, 2w");
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "s" | "sec" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .filter(|s| *s <= MAX_DURATION_S)
            .ok_or_else(|| format!("duration {text:?} is too long"))?;
    }
    Ok(Duration::from_secs(total))
}

/// Longest duration accepted: a thousand years is "forever" for a bus.
const MAX_DURATION_S: u64 = 1000 * 366 * 86_400;

/// Parses a point in time for `--since`/`--until`, relative to `now`:
/// a duration ago (`1h`, `2d`), `now`, `today` or `yesterday` (local
/// midnight), a local date (`2026-11-28`), a local date and time
/// (`2026-11-28 22:00`, `2026-11-28T22:00:05`), or RFC 3339 with an offset
/// (`2026-11-28T22:00:00Z`).
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    let local_midnight = |days_back: i64| -> Result<DateTime<Utc>, String> {
        let day = now.with_timezone(&Local).date_naive() - chrono::Duration::days(days_back);
        local_to_utc(day.and_time(NaiveTime::MIN), text)
    };
    match t.to_ascii_lowercase().as_str() {
        "now" => return Ok(now),
        "today" => return local_midnight(0),
        "yesterday" => return local_midnight(1),
        _ => {}
    }
    if t.starts_with(|c: char| c.is_ascii_digit()) && t.ends_with(|c: char| c.is_ascii_alphabetic())
    {
        if let Ok(d) = parse_duration(t) {
            let d =
                chrono::Duration::from_std(d).map_err(|_| format!("{text:?} is too far back"))?;
            return now
                .checked_sub_signed(d)
                .ok_or_else(|| format!("{text:?} is too far back"));
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(t) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, format) {
            return local_to_utc(naive, text);
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return local_to_utc(day.and_time(NaiveTime::MIN), text);
    }
    Err(format!(
        "invalid time {text:?}: use a duration ago (1h, 2d), today, yesterday, 2026-11-28, '2026-11-28 22:00' or RFC 3339"
    ))
}

fn local_to_utc(naive: NaiveDateTime, text: &str) -> Result<DateTime<Utc>, String> {
    // A time skipped by a DST change does not exist; one repeated is
    // taken at its first occurrence.
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("{text:?} does not exist in the local time zone"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(i: i64, topic_name: &str, agent: Option<&str>, summary: &str) -> StoredMessage {
        StoredMessage {
            seq: 0,
            id: format!("id-{i}"),
            time: millis(1_700_000_000_000 + i * 1000),
            topic: topic_name.into(),
            system: topic::parse("signalbox", topic_name).map(|p| p.system),
            agent: agent.map(str::to_string),
            severity: if i % 5 == 0 {
                Severity::Error
            } else {
                Severity::Info
            },
            summary: summary.into(),
            payload: vec![i as u8, 0xff],
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_writer(&dir.path().join("h.db")).unwrap();
        (dir, store)
    }

    fn ids(r: &QueryResult) -> Vec<String> {
        r.messages.iter().map(|m| m.id.clone()).collect()
    }

    #[test]
    fn insert_query_and_duplicates() {
        let (_dir, mut s) = store();
        let rows = vec![
            message(
                1,
                "signalbox/prod/git/kernel/commit",
                Some("jk"),
                "kernel fix",
            ),
            message(
                2,
                "signalbox/prod/koji/build/kernel/complete",
                None,
                "built",
            ),
            message(
                3,
                "signalbox/prod/git/bash/commit",
                Some("ab"),
                "bash 100%_done",
            ),
            message(4, "other/topic", None, "foreign"),
        ];
        assert_eq!(s.insert(&rows).unwrap(), 4);
        assert_eq!(s.insert(&rows[..1]).unwrap(), 0, "a redelivery is skipped");
        assert_eq!(s.count().unwrap(), 4);
        let q = |f: &dyn Fn(&mut Query)| {
            let mut q = Query {
                limit: 10,
                ..Default::default()
            };
            f(&mut q);
            ids(&s.query(&q).unwrap())
        };
        assert_eq!(q(&|_| {}), ["id-1", "id-2", "id-3", "id-4"]);
        assert_eq!(q(&|q| q.system = Some("git".into())), ["id-1", "id-3"]);
        assert_eq!(q(&|q| q.agent = Some("jk".into())), ["id-1"]);
        assert_eq!(q(&|q| q.grep = Some("KERNEL".into())), ["id-1", "id-2"]);
        assert_eq!(
            q(&|q| q.grep = Some("%_".into())),
            ["id-3"],
            "LIKE metacharacters are literal"
        );
        assert_eq!(
            q(&|q| q.topic = Some("signalbox/+/git/#".into())),
            ["id-1", "id-3"]
        );
        assert_eq!(
            q(&|q| q.topic = Some("signalbox/prod/git/#".into())),
            ["id-1", "id-3"]
        );
        assert_eq!(q(&|q| q.topic = Some("+/+/+/kernel/#".into())), ["id-1"]);
        assert_eq!(q(&|q| q.topic = Some("#".into())).len(), 4);
        assert_eq!(q(&|q| q.topic = Some("other/topic".into())), ["id-4"]);
        assert_eq!(
            q(&|q| q.min_severity = Some(Severity::Warning)),
            Vec::<String>::new()
        );
        assert_eq!(
            q(&|q| q.since = Some(millis(1_700_000_002_000))),
            ["id-2", "id-3", "id-4"]
        );
        assert_eq!(q(&|q| q.until = Some(millis(1_700_000_002_000))), ["id-1"]);
        let limited = s
            .query(&Query {
                limit: 2,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ids(&limited), ["id-3", "id-4"], "the newest, oldest first");
        assert!(limited.truncated);
        assert_eq!(limited.messages[0].payload, vec![3, 0xff]);
    }

    /// Regression guard of the console's paging back (issue 12): pages
    /// older than a position, each from the oldest of the page before,
    /// visit every match exactly once, in order, also when many messages
    /// share a millisecond and whatever plan the query takes.
    #[test]
    fn paging_back_visits_every_match_once() {
        let (_dir, mut s) = store();
        let rows: Vec<_> = (0..40)
            .map(|i| {
                let mut m = message(
                    i,
                    if i % 3 == 0 {
                        "signalbox/prod/git/kernel/commit"
                    } else {
                        "signalbox/prod/koji/build/bash/complete"
                    },
                    None,
                    &format!("event {i} kernel"),
                );
                // Four messages per millisecond.
                m.time = millis(1_700_000_000_000 + i / 4);
                m
            })
            .collect();
        s.insert(&rows).unwrap();
        for (filter, grep) in [
            (None, None),
            (Some("signalbox/+/git/#"), None),
            (Some("signalbox/prod/koji/#"), None),
            (None, Some("kernel")),
        ] {
            let q = Query {
                topic: filter.map(str::to_string),
                grep: grep.map(str::to_string),
                limit: 3,
                ..Default::default()
            };
            let all = s
                .query(&Query {
                    limit: 1000,
                    ..q.clone()
                })
                .unwrap();
            // The first page: older than a message of another source at
            // the newest millisecond (its own copy included).
            let mut before = Before {
                time: millis(1_700_000_000_009),
                seq: None,
            };
            let mut paged: Vec<StoredMessage> = Vec::new();
            loop {
                let page = s.query_before(&q, before).unwrap();
                let Some(oldest) = page.messages.first() else {
                    break;
                };
                before = Before::message(oldest);
                let more = page.truncated;
                paged.splice(0..0, page.messages);
                if !more {
                    break;
                }
            }
            assert_eq!(
                ids(&QueryResult {
                    messages: paged,
                    truncated: false
                }),
                ids(&all),
                "{filter:?} {grep:?}"
            );
        }
        // At a millisecond boundary: `seq: None` keeps the whole millisecond.
        let q = Query {
            limit: 100,
            ..Default::default()
        };
        let at_ms = Before {
            time: millis(1_700_000_000_001),
            seq: None,
        };
        assert_eq!(s.query_before(&q, at_ms).unwrap().messages.len(), 8);
        // The page is read from the time index, not by sorting the table.
        let plan = s.plan(&q, Some(at_ms)).unwrap();
        let mut stmt = s
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", plan.sql))
            .unwrap();
        let details: Vec<String> = stmt
            .query_map(params_from_iter(plan.params.iter()), |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let details = details.join("; ");
        assert!(details.contains("messages_time"), "{details}");
        assert!(!details.contains("TEMP B-TREE"), "{details}");
    }

    #[test]
    fn prune_removes_only_old_messages() {
        let (_dir, mut s) = store();
        let rows: Vec<_> = (0..25).map(|i| message(i, "a/b", None, "x")).collect();
        s.insert(&rows).unwrap();
        assert_eq!(s.prune_chunk(millis(1_700_000_010_000)).unwrap(), 10);
        assert_eq!(s.count().unwrap(), 15);
        assert_eq!(s.span().unwrap().unwrap().0, millis(1_700_000_010_000));
        let topic_count = |s: &Store| -> Vec<(String, i64)> {
            let mut stmt = s.conn.prepare("SELECT topic, count FROM topics").unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(topic_count(&s), [("a/b".to_string(), 15)]);
        s.prune_chunk(millis(1_800_000_000_000)).unwrap();
        assert_eq!(topic_count(&s), [], "a topic without messages is forgotten");
        // The text index forgot them too (a contentless index would
        // otherwise offer their rowids forever).
        let indexed: i64 = s
            .conn
            .query_row(
                "SELECT count(*) FROM messages_text WHERE messages_text MATCH '\"a/b\"'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexed, 0);
        assert_eq!(
            s.insert(&rows[..3]).unwrap(),
            3,
            "pruned ids may come again"
        );
        assert_eq!(topic_count(&s), [("a/b".to_string(), 3)]);
    }

    #[test]
    fn reader_refuses_missing_and_newer_databases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.db");
        let e = Store::open_reader(&path).unwrap_err();
        assert!(e.to_string().contains("no history database"), "{e}");
        let s = Store::open_writer(&path).unwrap();
        s.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        let e = Store::open_reader(&path).unwrap_err();
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }

    /// The SQL of a query's first step, and SQLite's plan for it.
    fn explain(s: &Store, q: &Query) -> String {
        let plan = s.plan(q, None).unwrap();
        let mut stmt = s
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", plan.sql))
            .unwrap();
        let details: Vec<String> = stmt
            .query_map(params_from_iter(plan.params.iter()), |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        details.join("; ")
    }

    #[test]
    fn rare_topics_and_text_are_read_through_their_indexes() {
        let (_dir, mut s) = store();
        let rows: Vec<_> = (0..3000)
            .map(|i| {
                let topic_name = format!("signalbox/prod/git/pkg{}/commit", i % 300);
                message(
                    i,
                    &topic_name,
                    Some("jk"),
                    &format!("pushed to pkg{}", i % 300),
                )
            })
            .collect();
        s.insert(&rows).unwrap();
        s.analyze().unwrap();
        let rare_topic = Query {
            topic: Some("signalbox/prod/+/pkg7/#".into()),
            limit: 100,
            ..Default::default()
        };
        let plan = explain(&s, &rare_topic);
        assert!(
            plan.contains("USING COVERING INDEX messages_topic (topic=?"),
            "{plan}"
        );
        assert_eq!(s.query(&rare_topic).unwrap().messages.len(), 10);
        let common_topic = Query {
            topic: Some("signalbox/+/git/#".into()),
            limit: 100,
            ..Default::default()
        };
        let plan = explain(&s, &common_topic);
        assert!(!plan.contains("messages_topic (topic=?"), "{plan}");
        assert!(plan.contains("messages_time"), "newest first: {plan}");
        assert!(s.plan(&common_topic, None).unwrap().exact_filter.is_some());
        let rare_text = Query {
            grep: Some("pkg17".into()),
            limit: 100,
            ..Default::default()
        };
        let plan = explain(&s, &rare_text);
        assert!(
            plan.contains("USING INTEGER PRIMARY KEY (rowid=?)"),
            "{plan}"
        );
        assert_eq!(
            s.query(&rare_text).unwrap().messages.len(),
            100,
            "pkg17 and pkg170..pkg179"
        );
        assert!(s.query(&rare_text).unwrap().truncated);
    }

    #[test]
    fn a_version_1_database_is_read_as_is_and_upgraded_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            for i in 0..20i64 {
                conn.execute(
                    "INSERT INTO messages (id, time, topic, system, agent, severity, summary, payload)
                     VALUES (?1, ?2, ?3, 'git', 'jk', 1, ?4, x'00')",
                    rusqlite::params![
                        format!("id-{i}"),
                        1_700_000_000_000 + i,
                        format!("signalbox/prod/git/pkg{}/commit", i % 4),
                        format!("pushed to pkg{}", i % 4)
                    ],
                )
                .unwrap();
            }
        }
        let queries = [
            Query {
                topic: Some("signalbox/+/+/pkg1/#".into()),
                limit: 100,
                ..Default::default()
            },
            Query {
                grep: Some("PKG2".into()),
                limit: 100,
                ..Default::default()
            },
        ];
        let reader = Store::open_reader(&path).unwrap();
        assert!(!reader.indexed);
        let before: Vec<Vec<String>> = queries
            .iter()
            .map(|q| ids(&reader.query(q).unwrap()))
            .collect();
        assert_eq!(before[0].len(), 5);
        assert_eq!(before[1].len(), 5);
        drop(reader);
        let mut writer = Store::open_writer(&path).unwrap();
        writer
            .insert(&[message(
                99,
                "signalbox/prod/git/pkg1/commit",
                None,
                "pkg1 again",
            )])
            .unwrap();
        drop(writer);
        let reader = Store::open_reader(&path).unwrap();
        assert!(reader.indexed);
        let topics: i64 = reader
            .conn
            .query_row(
                "SELECT count FROM topics WHERE topic = 'signalbox/prod/git/pkg1/commit'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(topics, 6, "5 migrated, 1 new");
        let after: Vec<Vec<String>> = queries
            .iter()
            .map(|q| ids(&reader.query(q).unwrap()))
            .collect();
        assert_eq!(
            after[0][..5],
            before[0][..],
            "the old rows, then the new one"
        );
        assert_eq!(after[0].len(), 6);
        assert_eq!(after[1], before[1]);
    }

    #[test]
    fn trigram_queries_cover_the_text() {
        assert!(trigrams("ab").is_empty());
        assert_eq!(trigrams("abcab"), ["abc", "bca", "cab"]);
        assert_eq!(fts_term("a\"b"), "\"a\"\"b\"");
        assert_eq!(topic_globs("#"), None);
        assert_eq!(topic_globs("a/+/b*/#").unwrap(), ["a/*/b[*]/*", "a/*/b[*]"]);
    }

    #[test]
    fn topic_filters_become_ranges() {
        assert_eq!(topic_range("a/b"), TopicSql::Exact("a/b".into()));
        assert_eq!(topic_range("a/b/#"), TopicSql::Subtree("a/b".into()));
        assert_eq!(topic_range("a/+/c"), TopicSql::Prefix("a/".into()));
        assert_eq!(topic_range("#"), TopicSql::Prefix(String::new()));
        assert_eq!(successor("a/"), "a0");
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration(" 2w ").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        for bad in [
            "",
            "h",
            "10",
            "1x",
            "1h 30m",
            "-1h",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_keep("forever").unwrap(), None);
        assert!(parse_keep("10s").is_err());
        let now = millis(1_700_000_000_000);
        assert_eq!(
            parse_time("1h", now).unwrap(),
            millis(1_700_000_000_000 - 3_600_000)
        );
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(
            parse_time("2026-11-28T22:00:00Z", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 28, 22, 0, 0).unwrap()
        );
        let local = parse_time("2026-11-28 22:00", now).unwrap();
        assert_eq!(
            local.with_timezone(&Local).format("%H:%M").to_string(),
            "22:00"
        );
        let day = parse_time("2026-11-28", now).unwrap();
        assert_eq!(
            day.with_timezone(&Local).format("%F %T").to_string(),
            "2026-11-28 00:00:00"
        );
        assert!(parse_time("yesterday", now).unwrap() < parse_time("today", now).unwrap());
        for bad in ["", "soon", "2026-13-01", "1h ago", "12:00"] {
            let e = parse_time(bad, now).unwrap_err();
            assert!(e.starts_with("invalid time"), "{bad:?}: {e}");
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC{0,40}") {
            let now = Utc::now();
            let _ = parse_duration(&text);
            let _ = parse_keep(&text);
            let _ = parse_time(&text, now);
        }

        #[test]
        fn durations_round_trip(d in 0u64..1000, h in 0u64..24, m in 0u64..60, s in 0u64..60) {
            let text = format!("{d}d{h}h{m}m{s}s");
            prop_assert_eq!(parse_duration(&text).unwrap().as_secs(), d * 86_400 + h * 3600 + m * 60 + s);
        }

        #[test]
        fn rfc3339_times_round_trip(ms in 0i64..4_000_000_000_000) {
            let t = millis(ms);
            let text = t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            prop_assert_eq!(parse_time(&text, Utc::now()).unwrap(), t);
        }

        /// Both ways of narrowing a `+` filter (the topic list, and the
        /// literal start plus GLOB then an exact check) find exactly what
        /// the MQTT matcher accepts.
        #[test]
        fn sql_topic_narrowing_agrees_with_mqtt_matching(
            filter in "(a|b|\\+)(/(a|b|\\+)){0,2}(/#)?",
            topic_names in prop::collection::vec("(a|b|ab)(/(a|b|ab)){0,3}", 1..6),
        ) {
            let (_dir, mut s) = store();
            let rows: Vec<_> = topic_names
                .iter()
                .enumerate()
                .map(|(i, t)| message(i as i64, t, None, "x"))
                .collect();
            s.insert(&rows).unwrap();
            let want: Vec<String> = rows
                .iter()
                .filter(|m| topic::matches(&filter, &m.topic))
                .map(|m| m.id.clone())
                .collect();
            let q = Query { topic: Some(filter.clone()), limit: 10, ..Default::default() };
            for indexed in [true, false] {
                s.indexed = indexed;
                prop_assert_eq!(&ids(&s.query(&q).unwrap()), &want, "indexed: {}", indexed);
            }
        }

        /// The GLOB pre-filter never drops a topic the filter matches,
        /// whatever characters the literal levels hold.
        #[test]
        fn topic_globs_never_exclude_a_match(
            levels in prop::collection::vec("\\$?[ab*?\\[\\]]{0,2}", 1..5),
            wild in prop::collection::vec(any::<bool>(), 5),
            cut in 0usize..8,
        ) {
            // A filter made from the topic: some levels `+`, maybe cut
            // short with `#`.
            let topic_name = levels.join("/");
            let mut filter: Vec<String> = levels
                .iter()
                .zip(&wild)
                .map(|(l, w)| if *w { "+".to_string() } else { l.clone() })
                .collect();
            if cut <= filter.len() {
                filter.truncate(cut);
                filter.push("#".into());
            }
            let filter = filter.join("/");
            prop_assume!(topic::matches(&filter, &topic_name));
            let globs = topic_globs(&filter);
            let conn = Connection::open_in_memory().unwrap();
            let any = globs.is_none_or(|globs| {
                globs.iter().any(|g| {
                    conn.query_row("SELECT ?1 GLOB ?2", [&topic_name, g], |r| r.get::<_, bool>(0))
                        .unwrap()
                })
            });
            prop_assert!(any, "{} does not pass the GLOB of {}", topic_name, filter);
        }

        /// `--grep` through the trigram index finds exactly what an
        /// ASCII-case-insensitive substring search of summary, topic and
        /// agent finds.
        #[test]
        fn grep_index_agrees_with_substring_search(
            summaries in prop::collection::vec("[abAB\"%_é ]{0,8}", 1..6),
            text in "[abAB\"%_é]{1,4}",
        ) {
            let (_dir, mut s) = store();
            let rows: Vec<_> = summaries
                .iter()
                .enumerate()
                .map(|(i, summary)| message(i as i64, "t/b", Some("Ab"), summary))
                .collect();
            s.insert(&rows).unwrap();
            let lower = text.to_ascii_lowercase();
            let want: Vec<String> = rows
                .iter()
                .filter(|m| {
                    [m.summary.as_str(), m.topic.as_str(), m.agent.as_deref().unwrap_or("")]
                        .iter()
                        .any(|field| field.to_ascii_lowercase().contains(&lower))
                })
                .map(|m| m.id.clone())
                .collect();
            let q = Query { grep: Some(text.clone()), limit: 10, ..Default::default() };
            for indexed in [true, false] {
                s.indexed = indexed;
                prop_assert_eq!(&ids(&s.query(&q).unwrap()), &want, "indexed: {}", indexed);
            }
        }
    }
}
