//! `signalbox-bridge rss`: feeds (RSS 0.9x/1.0/2.0, Atom, JSON Feed, over
//! HTTP(S) or from local files) → one bus message per new entry, exactly
//! once, for years of uptime.
//!
//! - [`fetch`]: HTTP done right (conditional GET, gzip, redirects, timeouts,
//!   a body cap, Retry-After) and local files.
//! - [`parse`]: feed-rs, entry identity, HTML summaries to bounded text.
//! - [`state`]: per-feed seen entries, validators and failure streak,
//!   persisted atomically in `STATE_DIR/rss/`.
//! - this file: the flags and the `[rss]` config table, one poll of one
//!   feed ([`poll_feed`]), `--once`, and the daemon (per-feed jittered
//!   schedules, bounded concurrency, exponential backoff, health with
//!   per-feed status, a Last Will, `_ping` and `_roster`, and the spool
//!   sent as soon as the broker is back).
//!
//! A feed's failure never stops the bridge: it is reported (health,
//! one `broken` event when it starts failing, one `recovered` when it works
//! again) and retried later.

pub mod fetch;
pub mod parse;
pub mod state;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Deserialize;
use serde_json::{json, Value};
use signalbox_common::config::Config;
use signalbox_common::envelope::{format_time, Envelope, Severity};
use signalbox_common::health::{HealthReport, HealthState};
use signalbox_common::mqtt::{
    ConnState, ConnectOptions, Connection, Publish, Publisher, Qos, Will,
};
use signalbox_common::spool::{Outbox, Sent, Spool, Undeliverable};
use signalbox_common::topic::{self, Reserved};
use tokio::sync::{watch, Notify, Semaphore};

use crate::cli::{timeout_arg, BridgeError, BridgeResult, GlobalArgs, EXIT_FAILURE};
use crate::session::{Session, DEFAULT_TIMEOUT_S};
use fetch::{Fetched, Fetcher, Source, Validators};
use parse::FeedEntry;
use state::FeedState;

/// Default polling interval of a feed.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Shortest interval accepted: tests poll every second; feeds never need less.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Default number of feeds fetched at once: enough to poll hundreds of
/// feeds in seconds, few enough not to look like a flood to one server.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Most feeds fetched at once.
const MAX_CONCURRENCY: usize = 256;
/// Default time allowed for one HTTP exchange, body included.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on a feed's (decompressed) size: real feeds are far below.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Entries of one document considered (document order, newest first in
/// practice): half the seen-set, so that a huge feed cannot push its own
/// entries out of the seen-set and have them republished.
const MAX_ENTRIES_PER_POLL: usize = state::MAX_SEEN / 2;
/// Longest wait between two polls of a failing feed.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// The first poll of each feed in a daemon starts within this (or one
/// interval, if shorter), spread so that feeds do not all start at once.
const START_SPREAD: Duration = Duration::from_secs(10);
/// Schedules vary by ±this fraction so that feeds drift apart.
const JITTER: f64 = 0.1;
/// Time allowed to publish the `stopped` report on a clean stop.
const STOP_REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for polls in hand to finish after SIGTERM before giving up on them.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Longest one flush of the spool by the daemon may hold the bus (it runs
/// when the broker comes back and at each heartbeat while messages wait):
/// a long backlog is flushed in slices, so new entries are not held back.
const SPOOL_FLUSH_BUDGET: Duration = Duration::from_secs(30);

/// Flags of `signalbox-bridge rss`.
#[derive(Debug, Args)]
#[command(after_help = "\
Polls each feed and publishes every new entry on {prefix}/{env}/rss/{feed}/entry
(feed, feed_title, feed_url, entry_id, title, link, published, updated, authors,
categories, summary; summary line `[feed] title`). A feed's first poll marks its
entries seen without publishing them (unless --backfill N). When a feed starts
failing, one warning on .../rss/{feed}/broken; when it works again, one event on
.../rss/{feed}/recovered. Seen entries and HTTP validators are kept in
STATE_DIR/rss/{feed}.json.

Feeds come from --feed flags, else from the [rss] table of the config file:
  [rss]
  interval = \"15m\"
  [rss.feeds]
  koji = \"https://koji.example.org/koji/recentbuilds?feed=rss\"
  planet = { url = \"https://planet.example.org/atom.xml\", interval = \"1h\" }
  local = \"/srv/www/status/feed.xml\"

Exit codes: --once: 0 every feed polled, 1 a feed failed; 2 bad flags or config.
The daemon runs until SIGINT/SIGTERM (exit 0) and never stops for a bad feed.

Examples:
  signalbox-bridge rss --feed koji=https://koji.example.org/rss --once
  signalbox-bridge rss --config /etc/signalbox/config.toml
  signalbox-bridge rss --feed status=/srv/www/status.xml --interval 5m --backfill 3")]
pub struct RssArgs {
    /// A feed to poll: NAME (one topic level) = URL (http(s), file:// or a path); repeatable
    #[arg(long = "feed", value_name = "NAME=URL")]
    pub feeds: Vec<String>,
    /// Time between polls of a feed: 90s, 15m, 1h, 1d [default: 15m, or [rss] interval]
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// Poll every feed once, publish, print one line per feed, and exit
    #[arg(long)]
    pub once: bool,
    /// On a feed's first poll, publish its N newest entries (the rest are marked seen)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub backfill: usize,
    /// Feeds fetched at once [default: 8, or [rss] concurrency]
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Time allowed for one HTTP exchange, body included [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub http_timeout: Option<String>,
    /// Largest feed accepted, in bytes after decompression [default: 10485760]
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: Option<u64>,
    /// Name of this bridge's health report (_health/NAME) [default: rss]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Seconds between health reports of the daemon [env: SIGNALBOX_HEALTH_INTERVAL] [default: 10]
    #[arg(long, value_name = "SECS")]
    pub health_interval: Option<u64>,
    /// Seconds a publish may wait for the broker before the message is spooled
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_S)]
    pub timeout: f64,
}

/// One feed to poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSpec {
    /// Its name: a topic level and a file name.
    pub name: String,
    /// The URL as given.
    pub url: String,
    /// Where it is read from.
    pub source: Source,
    /// Time between polls.
    pub interval: Duration,
}

/// Everything the bridge runs with, flags and `[rss]` merged.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The feeds, in the order given.
    pub feeds: Vec<FeedSpec>,
    /// Feeds fetched at once.
    pub concurrency: usize,
    /// Time allowed for one HTTP exchange.
    pub http_timeout: Duration,
    /// Largest body accepted.
    pub max_bytes: u64,
    /// Health report name.
    pub name: String,
    /// Entries published on a feed's first poll.
    pub backfill: usize,
    /// Time a publish may wait for the broker.
    pub bus_timeout: Duration,
}

/// The `[rss]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RssSection {
    interval: Option<String>,
    concurrency: Option<usize>,
    http_timeout: Option<String>,
    max_bytes: Option<u64>,
    name: Option<String>,
    #[serde(default)]
    feeds: BTreeMap<String, FeedConfig>,
}

/// A feed in `[rss.feeds]`: a URL, or a table with its own interval.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FeedConfig {
    Url(String),
    Table(FeedTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedTable {
    url: String,
    interval: Option<String>,
}

/// Parses `90`, `90s`, `15m`, `1h`, `1d` (and `500ms`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: use e.g. 90s, 15m, 1h, 1d"))?;
    let secs = match unit.trim() {
        "" | "s" => Some(n),
        "m" | "min" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        "ms" => return Ok(Duration::from_millis(n)),
        _ => {
            return Err(format!(
                "invalid duration {text:?}: use e.g. 90s, 15m, 1h, 1d"
            ))
        }
    };
    secs.map(Duration::from_secs)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}

fn interval_of(text: &str, what: &str) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| format!("{what}: {e}"))?;
    if d < MIN_INTERVAL {
        return Err(format!("{what}: at least 1s, not {text:?}"));
    }
    Ok(d)
}

/// Checks a feed name: one topic level that is also a file name.
pub fn check_feed_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid feed name {name:?}: 1-64 letters, digits, '-', '_' or '.', not starting with '.'"
        ))
    }
}

/// Merges the flags and the config's `[rss]` table; errors are one line.
pub fn settings(args: &RssArgs, config: &Config) -> Result<Settings, String> {
    let section: RssSection = match config.sections.get("rss") {
        Some(value) => value.clone().try_into().map_err(|e| {
            format!(
                "[rss] in {}: {}",
                config.file.display(),
                one_line(&e.to_string())
            )
        })?,
        None => RssSection::default(),
    };
    let interval = match (&args.interval, &section.interval) {
        (Some(t), _) => interval_of(t, "--interval")?,
        (None, Some(t)) => interval_of(t, "[rss] interval")?,
        (None, None) => DEFAULT_INTERVAL,
    };
    let mut feeds = Vec::new();
    if !args.feeds.is_empty() {
        for spec in &args.feeds {
            let (name, url) = spec
                .split_once('=')
                .ok_or_else(|| format!("--feed {spec:?}: use NAME=URL"))?;
            feeds.push((name.trim().to_string(), url.trim().to_string(), interval));
        }
    } else {
        for (name, feed) in &section.feeds {
            let (url, own) = match feed {
                FeedConfig::Url(url) => (url.clone(), None),
                FeedConfig::Table(t) => (t.url.clone(), t.interval.clone()),
            };
            let interval = match own {
                Some(t) => interval_of(&t, &format!("[rss.feeds] {name}: interval"))?,
                None => interval,
            };
            feeds.push((name.clone(), url, interval));
        }
    }
    if feeds.is_empty() {
        let file = if config.file.as_os_str().is_empty() {
            "none in use".to_string()
        } else {
            config.file.display().to_string()
        };
        return Err(format!(
            "no feeds: give --feed NAME=URL, or a [rss.feeds] table in the config file ({file})"
        ));
    }
    let mut seen = HashSet::new();
    let mut specs = Vec::with_capacity(feeds.len());
    for (name, url, interval) in feeds {
        check_feed_name(&name)?;
        if !seen.insert(name.clone()) {
            return Err(format!("feed {name:?} is given twice"));
        }
        let source = Source::parse(&url).map_err(|e| format!("feed {name}: {e}"))?;
        specs.push(FeedSpec {
            name,
            url,
            source,
            interval,
        });
    }
    let concurrency = args
        .concurrency
        .or(section.concurrency)
        .unwrap_or(DEFAULT_CONCURRENCY);
    if concurrency == 0 || concurrency > MAX_CONCURRENCY {
        return Err(format!(
            "concurrency must be between 1 and {MAX_CONCURRENCY}, not {concurrency}"
        ));
    }
    let http_timeout = match (&args.http_timeout, &section.http_timeout) {
        (Some(t), _) => interval_of(t, "--http-timeout")?,
        (None, Some(t)) => interval_of(t, "[rss] http_timeout")?,
        (None, None) => DEFAULT_HTTP_TIMEOUT,
    };
    let max_bytes = args
        .max_bytes
        .or(section.max_bytes)
        .unwrap_or(DEFAULT_MAX_BYTES);
    if max_bytes == 0 {
        return Err("max_bytes must be positive".into());
    }
    let name = args
        .name
        .clone()
        .or(section.name)
        .unwrap_or_else(|| "rss".into());
    check_feed_name(&name).map_err(|e| e.replace("feed name", "--name"))?;
    let bus_timeout = timeout_arg(args.timeout).map_err(|e| format!("{:#}", e.error))?;
    Ok(Settings {
        feeds: specs,
        concurrency,
        http_timeout,
        max_bytes,
        name,
        backfill: args.backfill,
        bus_timeout,
    })
}

fn one_line(text: &str) -> String {
    signalbox_common::envelope::sanitize_summary(text)
}

/// Where messages go: the one-shot session's outbox, or, in the daemon, a
/// fresh outbox per batch over the long-lived connection (it flushes what
/// was spooled while the broker was away before publishing anew).
enum Bus {
    Once(Box<tokio::sync::Mutex<Session>>),
    Daemon {
        publisher: Publisher,
        state: watch::Receiver<ConnState>,
        spool: Spool,
        /// One batch at a time, so the broker sees messages in order.
        lock: tokio::sync::Mutex<()>,
    },
}

impl Bus {
    async fn send(&self, batch: Vec<Publish>, timeout: Duration) -> Result<Sent, Undeliverable> {
        if batch.is_empty() {
            return Ok(Sent::default());
        }
        match self {
            Bus::Once(session) => {
                let mut session = session.lock().await;
                session.outbox.set_deadline(Instant::now() + timeout);
                session.outbox.send_all(batch).await
            }
            Bus::Daemon {
                publisher,
                state,
                spool,
                lock,
            } => {
                let _turn = lock.lock().await;
                let connected = matches!(*state.borrow(), ConnState::Connected { .. });
                let publisher = if connected {
                    Ok(publisher.clone())
                } else {
                    Err("not connected to the broker".to_string())
                };
                let mut outbox =
                    Outbox::open(spool.clone(), publisher, Instant::now() + timeout, timeout).await;
                if let Some(key) = crate::session::signer() {
                    outbox.set_signer(key);
                }
                outbox.set_deadline(Instant::now() + timeout);
                outbox.send_all(batch).await
            }
        }
    }
}

impl Bus {
    /// Daemon: publishes what waits in the spool (oldest first, for at most
    /// `budget`) when the broker is connected. Without this, entries
    /// spooled while the broker was away would wait for the next new entry.
    async fn flush_spool(&self, budget: Duration) {
        let Bus::Daemon {
            publisher,
            state,
            spool,
            lock,
        } = self
        else {
            return;
        };
        let _turn = lock.lock().await;
        let connected = matches!(*state.borrow(), ConnState::Connected { .. });
        if !connected || spool.depth() == 0 {
            return;
        }
        let report = spool.flush(publisher, Instant::now() + budget).await;
        match report.error {
            Some(e) if report.remaining > 0 => tracing::warn!(
                "spool: {} flushed, {} still waiting: {e}",
                report.flushed,
                report.remaining
            ),
            _ => tracing::info!("spool: {} flushed", report.flushed),
        }
    }
}

/// What one poll of one feed shares with the others.
struct Ctx {
    settings: Settings,
    fetcher: Fetcher,
    /// `STATE_DIR/rss`.
    state_dir: PathBuf,
    prefix: String,
    env: String,
    bus: Bus,
}

/// How a poll ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// The server said 304, or the file did not change.
    NotModified,
    /// A document was read.
    Updated {
        /// Entries in the document.
        entries: usize,
        /// Entries not seen before.
        new: usize,
        /// Confirmed by the broker.
        published: usize,
        /// Written to the spool.
        spooled: usize,
        /// A first poll: entries were marked seen (beyond `--backfill`).
        first: bool,
    },
    /// Not polled: the server asked to wait (Retry-After) until then.
    Deferred(DateTime<Utc>),
    /// The poll failed.
    Failed(String),
}

impl PollOutcome {
    /// The `--once` summary line of feed `name`.
    pub fn line(&self, name: &str) -> String {
        match self {
            PollOutcome::NotModified => format!("{name}: not modified"),
            PollOutcome::Updated { entries, published, spooled, first: true, .. } => format!(
                "{name}: first poll, {entries} entries marked seen, {} backfilled ({published} published, {spooled} spooled)",
                published + spooled
            ),
            PollOutcome::Updated { entries, new, published, spooled, first: false } => format!(
                "{name}: {entries} entries, {new} new ({published} published, {spooled} spooled)"
            ),
            PollOutcome::Deferred(until) => format!("{name}: deferred until {} (Retry-After)", format_time(until)),
            PollOutcome::Failed(e) => format!("{name}: failed: {e}"),
        }
    }
}

/// A poll's error, before it is recorded.
struct PollError {
    message: String,
    retry_after: Option<DateTime<Utc>>,
}

impl From<String> for PollError {
    fn from(message: String) -> Self {
        PollError {
            message,
            retry_after: None,
        }
    }
}

/// Polls one feed: fetch, parse, publish what is new, remember it, and
/// send the `broken` / `recovered` event on a change of health. The state
/// is saved before returning.
async fn poll_feed(ctx: &Ctx, spec: &FeedSpec, state: &mut FeedState) -> PollOutcome {
    let now = Utc::now();
    if let Some(until) = state.retry_after {
        if until > now {
            return PollOutcome::Deferred(until);
        }
    }
    state.last_poll = Some(now);
    let result = fetch_and_publish(ctx, spec, state).await;
    let was_failing = state.failures > 0;
    let outcome = match result {
        Ok(outcome) => {
            if was_failing {
                tracing::info!(feed = %spec.name, "feed recovered");
                let event = transition_event(ctx, spec, state, false, None);
                send_event(ctx, event).await;
            }
            state.failures = 0;
            state.last_error = None;
            state.retry_after = None;
            state.last_success = Some(Utc::now());
            outcome
        }
        Err(e) => {
            state.failures = state.failures.saturating_add(1);
            state.last_error = Some(one_line(&e.message));
            state.retry_after = e.retry_after;
            if !was_failing {
                let event = transition_event(ctx, spec, state, true, Some(&e.message));
                send_event(ctx, event).await;
            }
            if was_failing {
                tracing::debug!(feed = %spec.name, "still failing: {}", e.message);
            } else {
                tracing::warn!(feed = %spec.name, "feed broken: {}", e.message);
            }
            PollOutcome::Failed(one_line(&e.message))
        }
    };
    if let Err(e) = state.save(&ctx.state_dir, &spec.name) {
        let why = format!(
            "cannot save {}: {e}",
            state::path_of(&ctx.state_dir, &spec.name).display()
        );
        tracing::error!(feed = %spec.name, "{why}");
        state.last_error = Some(why.clone());
        return PollOutcome::Failed(why);
    }
    outcome
}

async fn fetch_and_publish(
    ctx: &Ctx,
    spec: &FeedSpec,
    state: &mut FeedState,
) -> Result<PollOutcome, PollError> {
    let validators = if state.initialized {
        Validators {
            etag: state.etag.clone(),
            last_modified: state.last_modified.clone(),
        }
    } else {
        Validators::default()
    };
    let fetched = ctx
        .fetcher
        .fetch(&spec.source, &validators)
        .await
        .map_err(|e| PollError {
            message: e.message,
            retry_after: e.retry_after,
        })?;
    let (bytes, validators) = match fetched {
        Fetched::NotModified => return Ok(PollOutcome::NotModified),
        Fetched::Body { bytes, validators } => (bytes, validators),
    };
    let base = match &spec.source {
        Source::Http(url) => Some(url.clone()),
        Source::File(_) => None,
    };
    let parsed = tokio::task::spawn_blocking(move || parse::parse(&bytes, base.as_deref()))
        .await
        .map_err(|e| format!("parser failed: {e}"))?
        .map_err(|e| e.to_string())?;
    let mut entries = parsed.entries;
    entries.truncate(MAX_ENTRIES_PER_POLL);
    let feed_title = parsed.title;

    let first = !state.initialized;
    let mut in_doc = HashSet::new();
    let mut fresh: Vec<&FeedEntry> = entries
        .iter()
        .filter(|e| in_doc.insert(e.entry_id.as_str()) && !state.is_seen(&e.entry_id))
        .collect();
    let new = fresh.len();
    // Oldest first: by date when every entry has one, else the reverse of
    // the document (feeds list the newest first).
    if fresh.iter().all(|e| e.date().is_some()) {
        fresh.sort_by_key(|e| e.date());
    } else {
        fresh.reverse();
    }
    if first {
        let skip = fresh.len().saturating_sub(ctx.settings.backfill);
        fresh.drain(..skip);
    }
    let batch: Vec<Publish> = fresh
        .iter()
        .map(|e| entry_publish(ctx, spec, feed_title.as_deref(), e))
        .collect::<Result<_, _>>()?;
    let sent = ctx
        .bus
        .send(batch, ctx.settings.bus_timeout)
        .await
        .map_err(|e| format!("entries neither published nor spooled: {e}"))?;
    state.mark_seen(entries.iter().map(|e| e.entry_id.as_str()), Utc::now());
    state.published += (sent.published + sent.spooled) as u64;
    state.initialized = true;
    state.etag = validators.etag;
    state.last_modified = validators.last_modified;
    Ok(PollOutcome::Updated {
        entries: entries.len(),
        new,
        published: sent.published,
        spooled: sent.spooled,
        first,
    })
}

/// The message of one entry.
fn entry_publish(
    ctx: &Ctx,
    spec: &FeedSpec,
    feed_title: Option<&str>,
    e: &FeedEntry,
) -> Result<Publish, String> {
    let topic = topic::build(&ctx.prefix, &ctx.env, "rss", &[&spec.name], "entry");
    let title = if e.title.is_empty() {
        "(untitled)"
    } else {
        e.title.as_str()
    };
    let body = json!({
        "feed": spec.name,
        "feed_title": feed_title,
        "feed_url": spec.url,
        "entry_id": e.entry_id,
        "title": e.title,
        "link": e.link,
        "published": e.published.as_ref().map(format_time),
        "updated": e.updated.as_ref().map(format_time),
        "authors": e.authors,
        "categories": e.categories,
        "summary": e.summary,
    });
    let mut builder = Envelope::builder(topic.clone(), format!("[{}] {title}", spec.name))
        .bridge("rss")
        .body(body);
    if let Some(author) = e.authors.first() {
        builder = builder.agent(author.clone());
    }
    if let Some(link) = &e.link {
        builder = builder.link("url", link.clone());
    }
    let envelope = builder
        .build()
        .map_err(|err| format!("entry {:?}: {err}", e.entry_id))?;
    Ok(Publish::new(
        topic,
        envelope.to_vec(),
        Qos::AtLeastOnce,
        false,
    ))
}

/// The `broken` (warning) or `recovered` (info) event of a feed.
fn transition_event(
    ctx: &Ctx,
    spec: &FeedSpec,
    state: &FeedState,
    broken: bool,
    error: Option<&str>,
) -> Option<Publish> {
    let event = if broken { "broken" } else { "recovered" };
    let topic = topic::build(&ctx.prefix, &ctx.env, "rss", &[&spec.name], event);
    let summary = if broken {
        format!(
            "[{}] feed broken: {}",
            spec.name,
            error.unwrap_or("unknown error")
        )
    } else {
        format!(
            "[{}] feed recovered after {} failed polls",
            spec.name, state.failures
        )
    };
    let body = json!({
        "feed": spec.name,
        "feed_url": spec.url,
        "error": error.map(one_line).or_else(|| state.last_error.clone()),
        "failures": state.failures,
        "last_success": state.last_success.as_ref().map(format_time),
    });
    let envelope = Envelope::builder(topic.clone(), summary)
        .severity(if broken {
            Severity::Warning
        } else {
            Severity::Info
        })
        .bridge("rss")
        .body(body)
        .build()
        .ok()?;
    Some(Publish::new(
        topic,
        envelope.to_vec(),
        Qos::AtLeastOnce,
        false,
    ))
}

async fn send_event(ctx: &Ctx, event: Option<Publish>) {
    if let Some(event) = event {
        if let Err(e) = ctx.bus.send(vec![event], ctx.settings.bus_timeout).await {
            tracing::error!("{e}");
        }
    }
}

/// The per-feed status in health reports.
fn feed_status(spec: &FeedSpec, state: &FeedState, next_poll: Option<DateTime<Utc>>) -> Value {
    let status = if state.failures > 0 {
        "failing"
    } else if state.last_success.is_some() {
        "ok"
    } else {
        "pending"
    };
    let mut v = json!({
        "url": spec.url,
        "status": status,
        "last_poll": state.last_poll.as_ref().map(format_time),
        "last_success": state.last_success.as_ref().map(format_time),
        "last_error": state.last_error,
        "failures": state.failures,
        "entries_seen": state.seen.len(),
        "published": state.published,
    });
    if let Some(next) = next_poll {
        v["next_poll"] = json!(format_time(&next));
    }
    v
}

/// Runs `signalbox-bridge rss`.
pub fn run(global: &GlobalArgs, args: RssArgs) -> BridgeResult {
    let mut config = global.resolve().map_err(BridgeError::usage)?;
    if let Some(secs) = args.health_interval {
        if secs == 0 {
            return Err(BridgeError::usage(anyhow!(
                "--health-interval must be at least 1"
            )));
        }
        config.health_interval.value = secs;
    }
    let settings = settings(&args, &config).map_err(|e| BridgeError::usage(anyhow!(e)))?;
    let fetcher = Fetcher::new(settings.http_timeout, settings.max_bytes)
        .map_err(|e| BridgeError::failure(anyhow!(e)))?;
    let state_dir = config.state_dir.value.join("rss");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BridgeError::failure(anyhow!("cannot start the runtime: {e}")))?;
    if args.once {
        runtime.block_on(run_once(config, settings, fetcher, state_dir))
    } else {
        runtime.block_on(run_daemon(config, settings, fetcher, state_dir))
    }
}

/// Loads every feed's state; an unreadable one is a configuration error.
fn load_states(settings: &Settings, dir: &Path) -> Result<Vec<FeedState>, BridgeError> {
    settings
        .feeds
        .iter()
        .map(|f| FeedState::load(dir, &f.name, &f.url).map_err(|e| BridgeError::usage(anyhow!(e))))
        .collect()
}

async fn run_once(
    config: Config,
    settings: Settings,
    fetcher: Fetcher,
    state_dir: PathBuf,
) -> BridgeResult {
    let states = load_states(&settings, &state_dir)?;
    let name = settings.name.clone();
    let session = Session::open(config.clone(), &name, settings.bus_timeout).await;
    let ctx = Arc::new(Ctx {
        prefix: session.prefix().to_string(),
        env: session.env().to_string(),
        settings,
        fetcher,
        state_dir,
        bus: Bus::Once(Box::new(tokio::sync::Mutex::new(session))),
    });
    let permits = Arc::new(Semaphore::new(ctx.settings.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut state) in states.into_iter().enumerate() {
        let ctx = ctx.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire().await;
            let spec = &ctx.settings.feeds[i];
            let outcome = poll_feed(&ctx, spec, &mut state).await;
            (i, outcome, state)
        });
    }
    let mut results: Vec<Option<(PollOutcome, FeedState)>> = vec![None; ctx.settings.feeds.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, outcome, state)) => results[i] = Some((outcome, state)),
            Err(e) => tracing::error!("a poll task failed: {e}"),
        }
    }
    let mut failed = false;
    let mut feeds = serde_json::Map::new();
    let mut out = String::new();
    for (spec, result) in ctx.settings.feeds.iter().zip(&results) {
        let line = match result {
            Some((outcome, state)) => {
                failed |= matches!(outcome, PollOutcome::Failed(_));
                feeds.insert(spec.name.clone(), feed_status(spec, state, None));
                outcome.line(&spec.name)
            }
            None => {
                failed = true;
                format!("{}: failed: the poll did not finish", spec.name)
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    let ctx = Arc::into_inner(ctx)
        .ok_or_else(|| BridgeError::failure(anyhow!("a poll task is still running")))?;
    if let Bus::Once(session) = ctx.bus {
        let mut extra = serde_json::Map::new();
        extra.insert("feeds".into(), Value::Object(feeds));
        session.into_inner().close_with(&name, extra).await;
    }
    use std::io::Write as _;
    std::io::stdout().write_all(out.as_bytes()).map_err(|e| {
        BridgeError::failure(anyhow::Error::new(e).context("cannot write the summary"))
    })?;
    Ok(if failed { EXIT_FAILURE } else { 0 })
}

/// The daemon's shared view of every feed, for health reports.
struct Board {
    name: String,
    started: DateTime<Utc>,
    interval_s: u64,
    feeds: Mutex<BTreeMap<String, Value>>,
    counters: Mutex<signalbox_common::health::Counters>,
    last_error: Mutex<Option<String>>,
    failing: Mutex<HashSet<String>>,
    /// The broker connection: lost since (None while connected), and
    /// when it came back. Degraded from the loss until one interval after.
    broker: Mutex<BrokerLink>,
}

#[derive(Default)]
struct BrokerLink {
    lost: bool,
    back_at: Option<std::time::Instant>,
}

impl Board {
    fn report(&self, state: Option<HealthState>) -> HealthReport {
        let mut r = HealthReport::new(&self.name, self.started, self.interval_s);
        let failing = !lock(&self.failing).is_empty() || {
            let link = lock(&self.broker);
            link.lost
                || link
                    .back_at
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(self.interval_s))
        };
        r.state = state.unwrap_or(if failing {
            HealthState::Degraded
        } else {
            HealthState::Up
        });
        r.last_seen = Utc::now();
        r.counters = *lock(&self.counters);
        r.last_error = lock(&self.last_error).clone();
        let feeds: serde_json::Map<String, Value> = lock(&self.feeds).clone().into_iter().collect();
        r.extra.insert("feeds".into(), Value::Object(feeds));
        r
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a task panicked mid-update of a status.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Delay before the next poll after `failures` consecutive failures:
/// the interval doubled per failure, capped (but never below the interval).
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    interval
        .saturating_mul(factor)
        .min(MAX_BACKOFF.max(interval))
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 - JITTER + 2.0 * JITTER * fastrand::f64())
}

async fn run_daemon(
    config: Config,
    settings: Settings,
    fetcher: Fetcher,
    state_dir: PathBuf,
) -> BridgeResult {
    let states = load_states(&settings, &state_dir)?;
    let name = settings.name.clone();
    let prefix = config.prefix.value.clone();
    let started = Utc::now();
    let interval = Duration::from_secs(config.health_interval.value.max(1));
    let board = Arc::new(Board {
        name: name.clone(),
        started,
        interval_s: interval.as_secs(),
        feeds: Mutex::new(BTreeMap::new()),
        counters: Mutex::new(Default::default()),
        last_error: Mutex::new(None),
        failing: Mutex::new(HashSet::new()),
        broker: Mutex::new(BrokerLink::default()),
    });
    let mut will = board.report(Some(HealthState::Down));
    will.last_error = Some("connection lost".into());
    let mut options = ConnectOptions::from_config(&config, &name).map_err(BridgeError::usage)?;
    options.retry_initial = true;
    options.will = Some(Will {
        topic: topic::health_topic(&prefix, &name),
        payload: Bytes::from(will.to_vec()),
        qos: Qos::AtLeastOnce,
        retain: true,
    });
    let mut conn = Connection::connect(options)
        .await
        .map_err(BridgeError::usage)?;
    let publisher = conn.publisher();
    let ctx = Arc::new(Ctx {
        prefix: prefix.clone(),
        env: config.env.value.clone(),
        fetcher,
        state_dir,
        bus: Bus::Daemon {
            publisher: publisher.clone(),
            state: conn.state_watch(),
            spool: Spool::new(config.spool.value.clone()),
            lock: tokio::sync::Mutex::new(()),
        },
        settings,
    });

    let changed = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(ctx.settings.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, state) in states.into_iter().enumerate() {
        let spec = &ctx.settings.feeds[i];
        lock(&board.feeds).insert(spec.name.clone(), feed_status(spec, &state, None));
        if state.failures > 0 {
            lock(&board.failing).insert(spec.name.clone());
        }
        tasks.spawn(feed_loop(
            ctx.clone(),
            i,
            state,
            board.clone(),
            permits.clone(),
            changed.clone(),
            stop_rx.clone(),
        ));
    }

    // Control topics, subscribed in the background (renewed by the
    // connection after a reconnect).
    let control = vec![
        (topic::ping_topic(&prefix), Qos::AtLeastOnce),
        (topic::roster_topic(&prefix), Qos::AtLeastOnce),
    ];
    let subscriber = publisher.clone();
    tokio::spawn(async move {
        while subscriber
            .subscribe(&control, Duration::from_secs(10))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let health_topic = topic::health_topic(&prefix, &name);
    let publish_health = |state: Option<HealthState>| {
        let report = board.report(state);
        let publisher = publisher.clone();
        let topic = health_topic.clone();
        tokio::spawn(async move {
            let _ = publisher
                .publish(Publish::new(topic, report.to_vec(), Qos::AtLeastOnce, true))
                .await;
        });
    };
    let mut roster: Option<Vec<String>> = None;
    let ensure_on_roster = |roster: &Option<Vec<String>>| {
        let mut list = roster.clone().unwrap_or_default();
        if list.contains(&name) {
            return;
        }
        list.push(name.clone());
        list.sort();
        list.dedup();
        let publisher = publisher.clone();
        let topic = topic::roster_topic(&prefix);
        tokio::spawn(async move {
            let payload = serde_json::to_vec(&list).unwrap_or_default();
            let _ = publisher
                .publish(Publish::new(topic, payload, Qos::AtLeastOnce, true))
                .await;
        });
    };

    let mut heartbeat = tokio::time::interval(interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let roster_check = tokio::time::sleep(Duration::from_millis(500));
    tokio::pin!(roster_check);
    let mut roster_checked = false;
    let mut conn_state = conn.state_watch();
    // One spool flush at a time, in the background.
    let mut flushing: Option<tokio::task::JoinHandle<()>> = None;
    let flush_spool = |flushing: &mut Option<tokio::task::JoinHandle<()>>| {
        if flushing.as_ref().is_none_or(|f| f.is_finished()) {
            let ctx = ctx.clone();
            *flushing = Some(tokio::spawn(async move {
                ctx.bus.flush_spool(SPOOL_FLUSH_BUDGET).await;
            }));
        }
    };
    let shutdown = signalbox_common::listener::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = heartbeat.tick() => {
                publish_health(None);
                if roster_checked {
                    ensure_on_roster(&roster);
                }
                flush_spool(&mut flushing);
            }
            _ = &mut roster_check, if !roster_checked => {
                roster_checked = true;
                ensure_on_roster(&roster);
            }
            _ = changed.notified() => publish_health(None),
            moved = conn_state.changed() => {
                if moved.is_err() { break; }
                let now = conn_state.borrow().clone();
                match now {
                    ConnState::Connected { .. } => {
                        {
                            let mut link = lock(&board.broker);
                            if link.lost {
                                link.back_at = Some(std::time::Instant::now());
                            }
                            link.lost = false;
                        }
                        publish_health(None);
                        flush_spool(&mut flushing);
                    }
                    ConnState::Reconnecting { error, .. } => {
                        let mut link = lock(&board.broker);
                        if !link.lost {
                            link.lost = true;
                            *lock(&board.last_error) = Some(format!("connection lost: {error}"));
                        }
                    }
                    _ => {}
                }
            }
            message = conn.recv() => {
                let Some(message) = message else { break };
                match topic::classify(&prefix, &message.topic) {
                    Some(Reserved::Ping) => publish_health(None),
                    Some(Reserved::Roster) => {
                        if let Ok(list) = serde_json::from_slice::<Vec<String>>(&message.payload) {
                            roster = Some(list);
                        } else if message.payload.is_empty() {
                            roster = Some(Vec::new());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    // Graceful stop: polls in hand finish (bounded), then `stopped`.
    let _ = stop_tx.send(true);
    let grace = ctx.settings.http_timeout + STOP_GRACE;
    let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    // A flush cut short leaves its messages spooled (removed only once
    // confirmed): the next run sends them.
    if let Some(flush) = flushing {
        flush.abort();
    }
    let report = board.report(Some(HealthState::Stopped));
    let _ = publisher
        .publish_confirmed(
            Publish::new(
                health_topic.clone(),
                report.to_vec(),
                Qos::AtLeastOnce,
                true,
            ),
            STOP_REPORT_TIMEOUT,
        )
        .await;
    conn.disconnect().await;
    Ok(0)
}

/// One feed's schedule in the daemon: poll, record, wait (interval, or
/// backoff after failures, or the server's Retry-After; jittered), again.
async fn feed_loop(
    ctx: Arc<Ctx>,
    index: usize,
    mut state: FeedState,
    board: Arc<Board>,
    permits: Arc<Semaphore>,
    changed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let spec = &ctx.settings.feeds[index];
    let spread = spec.interval.min(START_SPREAD).mul_f64(fastrand::f64());
    let mut wait = spread;
    if let Some(until) = state.retry_after {
        let left = (until - Utc::now()).to_std().unwrap_or_default();
        wait = wait.max(left);
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let permit = tokio::select! {
            p = permits.acquire() => p,
            _ = stop.wait_for(|s| *s) => return,
        };
        let was_failing = state.failures > 0;
        let outcome = poll_feed(&ctx, spec, &mut state).await;
        drop(permit);
        {
            let mut counters = lock(&board.counters);
            match &outcome {
                PollOutcome::Updated {
                    published,
                    spooled,
                    new,
                    first,
                    ..
                } => {
                    if !first {
                        counters.received += *new as u64;
                    }
                    counters.processed += (*published + *spooled) as u64;
                }
                PollOutcome::Failed(e) => {
                    counters.failed += 1;
                    *lock(&board.last_error) = Some(format!("{}: {e}", spec.name));
                }
                _ => {}
            }
        }
        wait = match &outcome {
            PollOutcome::Deferred(until) => (*until - Utc::now()).to_std().unwrap_or(MIN_INTERVAL),
            _ => {
                let mut d = jittered(backoff(spec.interval, state.failures));
                if let Some(until) = state.retry_after {
                    d = d.max((until - Utc::now()).to_std().unwrap_or_default());
                }
                d
            }
        };
        let next = Utc::now()
            + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::days(1));
        lock(&board.feeds).insert(spec.name.clone(), feed_status(spec, &state, Some(next)));
        let failing = state.failures > 0;
        {
            let mut set = lock(&board.failing);
            if failing {
                set.insert(spec.name.clone());
            } else {
                set.remove(&spec.name);
            }
        }
        if failing != was_failing {
            changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_backoff() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(
            parse_duration("soon").is_err()
                && parse_duration("5w").is_err()
                && parse_duration("").is_err()
        );
        let i = Duration::from_secs(900);
        assert_eq!(backoff(i, 0), i);
        assert_eq!(backoff(i, 1), i);
        assert_eq!(backoff(i, 3), i * 4);
        assert_eq!(backoff(i, 30), MAX_BACKOFF);
        assert_eq!(
            backoff(Duration::from_secs(86_400), 5),
            Duration::from_secs(86_400)
        );
    }

    /// A file of the workspace, read at run time (so that a moved file
    /// fails this test, not the build).
    fn workspace_file(path: &str) -> String {
        let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
    }

    /// The fenced block of `lang` in `text` whose first line is `first`.
    fn fenced_block(text: &str, lang: &str, first: &str) -> String {
        let opening = format!("```{lang}\n{first}\n");
        let start = text
            .find(&opening)
            .unwrap_or_else(|| panic!("no ```{lang} block starting with {first:?}"))
            + opening.len()
            - first.len()
            - 1;
        let len = text[start..].find("```").expect("the block is closed");
        text[start..start + len].to_string()
    }

    /// The values of `Key=` in a systemd unit, in order.
    fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
        let prefix = format!("{key}=");
        unit.lines()
            .filter_map(|l| l.trim().strip_prefix(&prefix))
            .map(str::trim)
            .collect()
    }

    /// Checks a systemd unit of the rss bridge against the README's config
    /// example (at `example_file`, resolved as `config`): it runs the
    /// daemon with flags that parse and that file, and systemd makes the
    /// example's state directory writable.
    fn check_unit(what: &str, unit: &str, example_file: &str, config: &Config) {
        use clap::Parser as _;
        let env = unit_values(unit, "Environment");
        assert!(
            env.contains(&format!("SIGNALBOX_CONFIG={example_file}").as_str()),
            "{what}: Environment= does not name {example_file}: {env:?}"
        );
        let exec = unit_values(unit, "ExecStart");
        assert_eq!(exec.len(), 1, "{what}: one ExecStart=");
        let words: Vec<&str> = exec[0].split_whitespace().collect();
        assert!(words[0].ends_with("/signalbox-bridge"), "{what}: {exec:?}");
        let cli = crate::commands::Cli::try_parse_from(&words)
            .unwrap_or_else(|e| panic!("{what}: ExecStart={}: {e}", exec[0]));
        let crate::commands::Command::Rss(args) = cli.command else {
            panic!("{what}: ExecStart={} does not run the rss bridge", exec[0]);
        };
        assert!(!args.once, "{what}: the unit runs the daemon");
        settings(&args, config).unwrap_or_else(|e| panic!("{what}: with the README's config: {e}"));
        let state_dir = config.state_dir.value.display().to_string();
        for set in env
            .iter()
            .filter_map(|e| e.strip_prefix("SIGNALBOX_STATE_DIR="))
        {
            assert_eq!(set, state_dir, "{what}: SIGNALBOX_STATE_DIR");
        }
        // ProtectSystem=strict leaves StateDirectory= (and ReadWritePaths=) writable.
        let dirs = unit_values(unit, "StateDirectory");
        assert!(
            dirs.iter().any(|d| format!("/var/lib/{d}") == state_dir),
            "{what}: StateDirectory= is not {state_dir}: {dirs:?}"
        );
        for paths in unit_values(unit, "ReadWritePaths") {
            assert!(
                paths.split_whitespace().any(|p| p == state_dir),
                "{what}: ReadWritePaths={paths}"
            );
        }
    }

    /// The README's config example and systemd unit are the real thing:
    /// the example parses and its `[rss]` table gives the settings its
    /// comments promise; the README's unit and the one shipped in
    /// deploy/systemd/ run the daemon with flags that parse, that file and
    /// its state directory.
    #[test]
    fn the_readme_config_example_and_systemd_units_match_the_real_flags_and_keys() {
        let readme = workspace_file("README.md");
        let section = &readme[readme
            .find("### `signalbox-bridge rss`")
            .expect("the README's RSS section")..];
        let example_file = "/etc/signalbox/config.toml";
        let example = fenced_block(section, "toml", &format!("# {example_file}"));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &example).expect("write");
        let config = Config::resolve_with(
            &signalbox_common::config::Overrides {
                config_file: Some(path),
                ..Default::default()
            },
            |_| None,
        )
        .expect("the README's config example is a valid config file");
        use clap::Parser as _;
        let cli = crate::commands::Cli::try_parse_from(["signalbox-bridge", "rss"])
            .expect("rss without flags parses");
        let crate::commands::Command::Rss(args) = cli.command else {
            panic!("not the rss command");
        };
        let settings = settings(&args, &config).expect("the example's [rss] table is valid");

        // What the example's comments say.
        assert_eq!(config.env.value, "prod");
        assert_eq!(config.brokers.value, vec!["mqtt://bus01.example.org:1883"]);
        let names: Vec<&str> = settings.feeds.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["koji", "planet", "status"]);
        let by_name = |n: &str| settings.feeds.iter().find(|f| f.name == n).expect("feed");
        assert_eq!(by_name("koji").interval, Duration::from_secs(15 * 60));
        assert_eq!(by_name("planet").interval, Duration::from_secs(3600));
        assert_eq!(
            by_name("status").source,
            Source::File("/srv/www/status/feed.xml".into())
        );
        assert_eq!(settings.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(settings.http_timeout, DEFAULT_HTTP_TIMEOUT);
        assert_eq!(settings.max_bytes, DEFAULT_MAX_BYTES);
        assert_eq!(settings.name, "rss");

        let unit = fenced_block(
            section,
            "ini",
            "# /etc/systemd/system/signalbox-rss.service",
        );
        check_unit("the README's unit", &unit, example_file, &config);
        let shipped = "deploy/systemd/signalbox-rss.service";
        check_unit(shipped, &workspace_file(shipped), example_file, &config);
    }

    #[test]
    fn feed_names_are_one_safe_level() {
        assert!(check_feed_name("koji-builds_2.x").is_ok());
        for bad in ["", ".hidden", "a/b", "a+b", "a#", "sp ace", &"x".repeat(65)] {
            assert!(check_feed_name(bad).is_err(), "{bad:?}");
        }
    }
}
