//! Paging the Stream view back into the recorder's database
//! (`signalbox-bridge recorder`, read with `signalbox_bridges::history`).
//!
//! When the operator scrolls past the oldest message the stream holds (or
//! presses the history key), [`request_older`] asks for the page of
//! [`PAGE`] messages just older than the oldest one shown, with the view's
//! filter turned into a history query as far as it maps ([`query_for`]).
//! The query runs on a worker thread of the console loop (never here:
//! `update` stays pure); its answer comes back as [`Event::History`] and
//! [`on_page`] puts the new rows above the others.
//!
//! - Each page ends where the one before began ([`Before`]: time, then the
//!   database's own order), so pages never overlap; the first ends at the
//!   oldest message shown, that one's millisecond included.
//! - Nothing shows twice: a stored message whose envelope id is held in
//!   memory (the live ring, a paused snapshot, an earlier page) is left
//!   out, and a live message that arrives with the id of a history row
//!   replaces it. A payload that is not an envelope has no id in common
//!   with the recorder's copy (the recorder makes one up): it is
//!   recognised by topic, size and summary within [`RAW_DEDUP_WINDOW`].
//! - Memory: history rows count against the stream's own caps
//!   ([`Limits::stream_len`], [`Limits::stream_bytes`]) and may take at
//!   most half of them. Eviction only ever happens between the history and
//!   the live rows (the oldest live message, or the newest history row),
//!   so both the oldest page and the newest messages stay; the separator
//!   line then says that messages in between are no longer kept.
//! - History rows answer one filter: a new filter (or `f`) drops them.
//!
//! [`Event::History`]: crate::event::Event::History

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use signalbox_bridges::history::{Before, Query};
use signalbox_common::envelope::Severity;
use uuid::Uuid;

use super::{App, Filter, Msg, Tone};
use crate::event::HistoryPage;
use crate::keys::{Action, Scope};

/// Messages asked for per page: a few screens, read in milliseconds even
/// from a database of millions (BENCHMARKS.md), small against the stream's
/// cap.
pub const PAGE: usize = 200;
/// A raw (non-envelope) stored message matches a message in memory with
/// the same topic, size and summary when their times are at most this far
/// apart (the recorder's arrival time against the console's).
const RAW_DEDUP_WINDOW: Duration = Duration::seconds(2);
/// History rows get arrival numbers from here down, so that they sort
/// before every live message (whose numbers count up from 1 and never
/// reach it): see [`stream_order`].
pub const HISTORY_SEQ_FLOOR: u64 = 1 << 63;

/// The order of stream rows by their arrival numbers: history rows (the
/// oldest page lowest) before live messages.
pub fn stream_order(seq: u64) -> u64 {
    seq ^ HISTORY_SEQ_FLOOR
}

/// What the console loop runs on its history worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRequest {
    /// Which reset of the history this page is for; an answer for an older
    /// one (the filter changed meanwhile) is dropped.
    pub generation: u64,
    /// The database.
    pub db: PathBuf,
    /// The topic prefix (to decode payloads as the ingest task does).
    pub prefix: String,
    /// The view's filter as a query, with the page size as its limit.
    pub query: Query,
    /// Where the page ends; `None` for the newest messages (nothing is
    /// shown yet).
    pub before: Option<Before>,
}

/// The older messages the Stream view holds from the history database.
#[derive(Debug)]
pub struct StreamHistory {
    /// Where the database is, or why there is none (one line for the
    /// status line: how to configure one).
    pub db: Result<PathBuf, String>,
    /// The rows, oldest first (only those the view's filter shows).
    pub rows: VecDeque<Arc<Msg>>,
    /// Approximate bytes of `rows`, counted against the stream's budget.
    pub bytes: usize,
    /// Envelope ids of `rows`, for de-duplication.
    ids: HashSet<Uuid>,
    /// Where the next page ends: the oldest message of the last page.
    next: Option<Before>,
    /// The database has nothing older (for this filter).
    pub exhausted: bool,
    /// A page was asked for and has not come back yet.
    pub loading: bool,
    /// Messages between the history rows and the live ones were evicted
    /// (memory bounds): the separator says so.
    pub gap: bool,
    /// The last query failed (missing database…): scrolling past the top
    /// stays quiet until the history key asks again.
    failed: bool,
    /// The hint that no database is configured was shown once.
    hinted: bool,
    /// Bumped by every reset; answers carry the one they were asked for.
    generation: u64,
    /// The arrival number of the next (older) history row.
    next_seq: u64,
}

impl StreamHistory {
    /// No history rows yet; `db` is the database, or why there is none.
    pub fn new(db: Result<PathBuf, String>) -> StreamHistory {
        StreamHistory {
            db,
            rows: VecDeque::new(),
            bytes: 0,
            ids: HashSet::new(),
            next: None,
            exhausted: false,
            loading: false,
            gap: false,
            failed: false,
            hinted: false,
            generation: 0,
            next_seq: u64::MAX,
        }
    }

    /// Forgets every row and any page under way (the filter changed).
    pub fn reset(&mut self) {
        self.rows.clear();
        self.bytes = 0;
        self.ids.clear();
        self.next = None;
        self.exhausted = false;
        self.loading = false;
        self.gap = false;
        self.generation += 1;
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn pop_newest(&mut self) {
        if let Some(old) = self.rows.pop_back() {
            self.bytes -= old.cost;
            if let Some(id) = envelope_id(&old) {
                self.ids.remove(&id);
            }
            self.gap = true;
        }
    }
}

impl Msg {
    /// Whether the message was read from the history database.
    pub fn is_from_history(&self) -> bool {
        self.seq >= HISTORY_SEQ_FLOOR
    }
}

fn envelope_id(m: &Msg) -> Option<Uuid> {
    m.payload.envelope().map(|e| e.id)
}

/// The history query for what the Stream view shows, as far as it maps:
/// one topic filter (several are alternatives a query cannot say), the
/// lowest severity (error when only problems show), and the longest ASCII
/// text term (the database's case-insensitivity is ASCII only). The rest
/// of the filter is checked on each row that comes back, so the query
/// only has to offer every row the filter could keep.
pub fn query_for(filter: &Filter, problems_only: bool) -> Query {
    let problems = problems_only.then_some(Severity::Error);
    Query {
        topic: match filter.topics.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        },
        grep: filter
            .words
            .iter()
            .filter(|w| w.is_ascii() && !w.is_empty())
            .max_by_key(|w| w.len())
            .cloned(),
        min_severity: filter.min_severity.max(problems),
        limit: PAGE,
        ..Query::default()
    }
}

/// The keys of `action` in the stream, for status lines.
fn key_of(app: &App, action: Action) -> String {
    app.keys
        .bindings
        .iter()
        .find(|b| b.action == action && b.scope == Scope::Stream)
        .and_then(|b| b.keys.first())
        .map(ToString::to_string)
        .unwrap_or_else(|| action.name())
}

/// Asks for the page older than the oldest message shown. `explicit`: the
/// operator pressed the history key (always answered); otherwise they
/// scrolled past the top, which stays quiet once the database turned out
/// missing, empty or unconfigured.
pub(super) fn request_older(app: &mut App, explicit: bool) {
    let h = &app.history;
    if h.loading {
        return;
    }
    let db = match &h.db {
        Ok(db) => db.clone(),
        Err(why) => {
            if explicit || !h.hinted {
                let text = why.clone();
                app.history.hinted = true;
                app.set_status(Tone::Info, text);
            }
            return;
        }
    };
    if !explicit && (h.exhausted || h.failed) {
        return;
    }
    let before = match h.next {
        // Where the last page ended (also when none of its rows was kept).
        Some(next) => Some(next),
        // The first page: older than the oldest message shown (or the
        // newest messages when none is).
        None => app.stream_rows().first().map(|m| Before {
            time: m.at,
            seq: None,
        }),
    };
    let request = HistoryRequest {
        generation: app.history.generation,
        db,
        prefix: app.prefix.clone(),
        query: query_for(&app.stream_state.filter, app.problems_only),
        before,
    };
    app.history.loading = true;
    app.effects.push(super::Effect::LoadHistory(request));
    app.set_status(Tone::Info, "loading history…");
}

/// A page came back from the worker.
pub(super) fn on_page(app: &mut App, page: HistoryPage) {
    if page.generation != app.history.generation {
        // Asked for under another filter: nothing of it applies.
        return;
    }
    app.history.loading = false;
    let found = match page.result {
        Ok(found) => found,
        Err(e) => {
            app.history.failed = true;
            app.set_status(Tone::Error, e);
            return;
        }
    };
    app.history.failed = false;
    let returned = found.rows.len();
    if let Some(next) = found.next {
        app.history.next = Some(next);
    }
    if !found.more {
        app.history.exhausted = true;
    }
    // What memory already holds, to leave out.
    let live: Vec<&Arc<Msg>> = match &app.stream_state.paused {
        Some(p) => app.stream.iter().chain(p.snapshot.iter()).collect(),
        None => app.stream.iter().collect(),
    };
    let held_ids: HashSet<Uuid> = live.iter().filter_map(|m| envelope_id(m)).collect();
    let mut held_raw: HashMap<(&str, usize, &str), Vec<DateTime<Utc>>> = HashMap::new();
    if found.rows.iter().any(|r| r.payload.envelope().is_none()) {
        for m in live.iter().filter(|m| envelope_id(m).is_none()) {
            held_raw
                .entry((&m.topic, m.size, &m.summary))
                .or_default()
                .push(m.at);
        }
    }
    let mut kept = Vec::with_capacity(found.rows.len());
    for incoming in found.rows {
        let msg = Msg::from_incoming(0, incoming, false);
        let held = match envelope_id(&msg) {
            Some(id) => held_ids.contains(&id) || app.history.ids.contains(&id),
            None => held_raw
                .get(&(&*msg.topic, msg.size, &*msg.summary))
                .is_some_and(|times| {
                    times
                        .iter()
                        .any(|t| (*t - msg.at).abs() <= RAW_DEDUP_WINDOW)
                }),
        };
        if !held && app.shows(&msg) {
            kept.push(msg);
        }
    }
    drop(held_raw);
    drop(live);
    let added = kept.len();
    // Oldest first: numbered so that the oldest sorts first, below every
    // earlier page.
    let h = &mut app.history;
    let first = h.next_seq - added as u64;
    for (i, mut msg) in kept.into_iter().enumerate().rev() {
        msg.seq = first + 1 + i as u64;
        if let Some(id) = envelope_id(&msg) {
            h.ids.insert(id);
        }
        h.bytes += msg.cost;
        h.rows.push_front(Arc::new(msg));
    }
    h.next_seq = first;
    trim(app);
    let key = key_of(app, Action::History);
    let text = match (returned, added, app.history.exhausted) {
        (0, _, _) => "no older messages in the history database".to_string(),
        (_, 0, false) => format!(
            "{returned} older messages were shown already or do not match the filter; {key} reads further back"
        ),
        (_, 0, true) => {
            "no older messages in the history database that are not shown already".to_string()
        }
        (_, n, false) => format!("{n} older messages from the history database ({key} for more)"),
        (_, n, true) => {
            format!("{n} older messages from the history database: the oldest it holds")
        }
    };
    app.set_status(if added > 0 { Tone::Ok } else { Tone::Info }, text);
}

/// Keeps the stream and its history rows within the stream's budget.
/// Eviction happens only between the two: the newest history rows beyond
/// their half of the budget, then the oldest live messages (the ring
/// keeps at least its newest one, as it always did).
pub(super) fn trim(app: &mut App) {
    let limits = &app.limits;
    let h = &mut app.history;
    while h.rows.len() > limits.stream_len / 2
        || (h.bytes > limits.stream_bytes / 2 && !h.rows.is_empty())
    {
        h.pop_newest();
    }
    let len_cap = limits.stream_len.saturating_sub(h.rows.len());
    let bytes_cap = limits.stream_bytes.saturating_sub(h.bytes);
    while app.stream.len() > limits.stream_len
        || (app.stream.len() > 1 && (app.stream.len() > len_cap || app.stream_bytes > bytes_cap))
    {
        let Some(old) = app.stream.pop_front() else {
            break;
        };
        app.stream_bytes -= old.cost;
        if !h.rows.is_empty()
            && app.stream_state.filter.matches(&old)
            && (!app.problems_only || old.is_problem())
        {
            h.gap = true;
        }
    }
}

/// A live message arrived: a history row with its envelope id goes (the
/// message shows once, where it arrived now).
pub(super) fn forget_live_duplicate(app: &mut App, msg: &Msg) {
    let h = &mut app.history;
    let Some(id) = envelope_id(msg) else {
        return;
    };
    if !h.ids.remove(&id) {
        return;
    }
    if let Some(index) = h.rows.iter().position(|m| envelope_id(m) == Some(id)) {
        if let Some(old) = h.rows.remove(index) {
            h.bytes -= old.cost;
        }
    }
}

impl App {
    /// Whether the Stream view shows `msg` (its filter, and only problems
    /// when asked).
    pub fn shows(&self, msg: &Msg) -> bool {
        self.stream_state.filter.matches(msg) && (!self.problems_only || msg.is_problem())
    }
}

#[cfg(test)]
mod tests;
