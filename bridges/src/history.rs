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
/// a newer recorder is refused rather than misread.
pub const SCHEMA_VERSION: i64 = 1;
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
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.check_version()?;
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
        store
            .conn
            .execute_batch(SCHEMA)
            .map_err(|e| sqlite(path, e))?;
        store
            .conn
            .pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| sqlite(path, e))?;
        Ok(store)
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
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.check_version()?;
        Ok(store)
    }

    fn check_version(&self) -> Result<(), HistoryError> {
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
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores messages in one transaction; a message whose id is already
    /// stored (a redelivery) is skipped. Returns how many were new.
    pub fn insert(&mut self, messages: &[StoredMessage]) -> Result<usize, HistoryError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sqlite(&path, e))?;
        let mut added = 0;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO messages
                     (id, time, topic, system, agent, severity, summary, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(|e| sqlite(&path, e))?;
            for m in messages {
                added += insert
                    .execute(rusqlite::params![
                        m.id,
                        m.time.timestamp_millis(),
                        m.topic,
                        m.system,
                        m.agent,
                        severity_code(m.severity),
                        m.summary,
                        m.payload,
                    ])
                    .map_err(|e| sqlite(&path, e))?;
            }
        }
        tx.commit().map_err(|e| sqlite(&path, e))?;
        Ok(added)
    }

    /// Deletes up to [`PRUNE_CHUNK`] messages older than `before`, in one
    /// transaction; call again while it returns a full chunk.
    pub fn prune_chunk(&mut self, before: DateTime<Utc>) -> Result<usize, HistoryError> {
        self.conn
            .execute(
                "DELETE FROM messages WHERE seq IN
                 (SELECT seq FROM messages WHERE time < ?1 ORDER BY time LIMIT ?2)",
                rusqlite::params![before.timestamp_millis(), PRUNE_CHUNK as i64],
            )
            .map_err(|e| sqlite(&self.path, e))
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

    /// The time of the oldest and the newest message.
    pub fn span(&self) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, HistoryError> {
        let row: Option<(Option<i64>, Option<i64>)> = self
            .conn
            .query_row("SELECT min(time), max(time) FROM messages", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| sqlite(&self.path, e))?;
        Ok(match row {
            Some((Some(a), Some(b))) => Some((millis(a), millis(b))),
            _ => None,
        })
    }

    /// Runs a query: the newest `limit` matches, returned oldest first.
    ///
    /// SQL narrows by the indexed columns (system, agent, time, the literal
    /// start of the topic filter, the text); the exact MQTT match of the
    /// topic filter is applied to the rows as they stream in newest first,
    /// so wildcards in the middle of a filter cost no more than a scan of
    /// what SQL already narrowed.
    pub fn query(&self, q: &Query) -> Result<QueryResult, HistoryError> {
        let plan = Plan::new(q);
        let mut stmt = self
            .conn
            .prepare(&plan.sql)
            .map_err(|e| sqlite(&self.path, e))?;
        let mut rows = stmt
            .query(params_from_iter(plan.params.iter()))
            .map_err(|e| sqlite(&self.path, e))?;
        let mut messages = Vec::new();
        let mut truncated = false;
        while let Some(row) = rows.next().map_err(|e| sqlite(&self.path, e))? {
            let topic_name: String = row.get(3).map_err(|e| sqlite(&self.path, e))?;
            if let Some(filter) = &plan.exact_filter {
                if !topic::matches(filter, &topic_name) {
                    continue;
                }
            }
            if messages.len() == q.limit {
                truncated = true;
                break;
            }
            let get = |e| sqlite(&self.path, e);
            messages.push(StoredMessage {
                seq: row.get(0).map_err(get)?,
                id: row.get(1).map_err(get)?,
                time: millis(row.get(2).map_err(get)?),
                topic: topic_name,
                system: row.get(4).map_err(get)?,
                agent: row.get(5).map_err(get)?,
                severity: severity_of(row.get(6).map_err(get)?),
                summary: row.get(7).map_err(get)?,
                payload: row.get(8).map_err(get)?,
            });
        }
        messages.reverse();
        Ok(QueryResult {
            messages,
            truncated,
        })
    }
}

/// A query turned into SQL.
#[derive(Debug)]
struct Plan {
    sql: String,
    params: Vec<rusqlite::types::Value>,
    /// The topic filter to check on each row (when SQL cannot say it
    /// exactly).
    exact_filter: Option<String>,
}

impl Plan {
    fn new(q: &Query) -> Plan {
        use rusqlite::types::Value;
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        // Adds a parameter and returns its placeholder.
        fn param(params: &mut Vec<Value>, value: Value) -> String {
            params.push(value);
            format!("?{}", params.len())
        }
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
        if let Some(filter) = &q.topic {
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
                    if !start.is_empty() {
                        let hi = successor(&start);
                        let lo = param(&mut params, Value::Text(start));
                        let hi = param(&mut params, Value::Text(hi));
                        clauses.push(format!("(topic >= {lo} AND topic < {hi})"));
                    }
                    exact_filter = Some(filter.clone());
                }
            }
        }
        let mut sql = String::from(
            "SELECT seq, id, time, topic, system, agent, severity, summary, payload FROM messages",
        );
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

    #[test]
    fn prune_removes_only_old_messages() {
        let (_dir, mut s) = store();
        let rows: Vec<_> = (0..25).map(|i| message(i, "a/b", None, "x")).collect();
        s.insert(&rows).unwrap();
        assert_eq!(s.prune_chunk(millis(1_700_000_010_000)).unwrap(), 10);
        assert_eq!(s.count().unwrap(), 15);
        assert_eq!(s.span().unwrap().unwrap().0, millis(1_700_000_010_000));
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

        #[test]
        fn sql_topic_narrowing_agrees_with_mqtt_matching(
            filter in "(a|b|\\+)(/(a|b|\\+)){0,2}(/#)?",
            topic_name in "(a|b|ab)(/(a|b|ab)){0,3}",
        ) {
            let (_dir, mut s) = store();
            s.insert(&[message(1, &topic_name, None, "x")]).unwrap();
            let found = s.query(&Query { topic: Some(filter.clone()), limit: 5, ..Default::default() }).unwrap();
            prop_assert_eq!(found.messages.len() == 1, topic::matches(&filter, &topic_name));
        }
    }
}
