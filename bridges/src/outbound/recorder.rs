//! `signalbox-bridge recorder`: keep every message in a SQLite history
//! (`signalbox history` queries it) — signalbox's datanommer.
//!
//! It is a listener like the others (health, `_ping`, roster, failure
//! records, de-duplication by id, graceful stop). What it adds is a writer
//! thread: a SQLite commit per message tops out near 5,000 messages/s, so
//! handlers only queue their rows and the writer commits whatever is queued
//! in one transaction (group commit: the more traffic, the larger the
//! batches).
//!
//! Durability, by mode:
//! - default: each handler waits for the commit of its row, so a message is
//!   acknowledged only once it is on disk; the runtime runs up to [`QUEUE`]
//!   handlers at once (acks still in receipt order), which is what lets the
//!   writer batch. A crash loses nothing: unacknowledged messages come
//!   again, and a row stored twice is skipped by its id. Rows are ordered
//!   by their time; messages of the same millisecond may be stored in
//!   another order than they arrived.
//! - `--ack-on-queue`: the handler returns (and the message is
//!   acknowledged) once the row is queued; at most [`QUEUE`] acknowledged
//!   rows wait for their commit. A graceful stop commits them all; a crash
//!   (SIGKILL, power loss) can lose that window.
//!
//! Opening a database written by an older recorder upgrades its schema
//! first (`history::Store::open_writer`: the topic list and the text index
//! are built from the stored messages, once — minutes for tens of millions
//! of messages, during which nothing is consumed and the broker queues).
//!
//! While the database cannot be written (disk full, locked), the writer
//! keeps the failed batch and retries it, and the handler refuses new
//! messages with an error, so they are retried and then kept as failure
//! records (`signalbox failed list`), never dropped silently.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use signalbox_common::config::Config;
use signalbox_common::listener::{Delivery, HandlerError, HandlerResult, ListenerOptions};
use tokio::sync::{mpsc, oneshot};

use crate::cli::{BridgeError, BridgeResult, GlobalArgs};
use crate::history::{self, Store, StoredMessage};

/// Rows queued between the handler and the writer. Bounds memory and, in
/// the default mode, the acknowledged rows not yet committed.
pub const QUEUE: usize = 4096;
/// Most rows committed in one transaction.
const MAX_BATCH: usize = 4096;
/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often SQLite refreshes its planner statistics.
const OPTIMIZE_EVERY: Duration = Duration::from_secs(3600);
/// Longest wait between two tries of a failed commit.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Flags of `signalbox-bridge recorder`.
#[derive(Debug, Args)]
#[command(after_help = "\
Stores every message (topic, id, time, system, agent, severity, summary and the
exact payload bytes) in a SQLite database, for `signalbox history`. The database
is --db, else `db` in the config file's [history] table, else
STATE_DIR/history.db; messages older than --keep (else [history] keep, else 90d)
are deleted every minute. Reserved topics (_health, _failed, …) are not stored.

A message is acknowledged only once its row is committed; up to 4096 messages
are handled at once so that commits are batched. --ack-on-queue acknowledges
once the row is queued for the next commit (a crash can lose up to 4096 rows;
a graceful stop commits them all). Run one recorder per database; scale out with --share-group
and one database each only if one cannot keep up.

Examples:
  signalbox-bridge recorder
  signalbox-bridge recorder --db /var/lib/signalbox/history.db --keep 30d
  signalbox-bridge recorder --filter 'signalbox/prod/#' --keep forever")]
pub struct RecorderArgs {
    /// The SQLite database [default: [history] db, else STATE_DIR/history.db]
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// How long messages are kept: 90d, 12h, 2w, or forever [default: [history] keep, else 90d]
    #[arg(long, value_name = "DURATION")]
    keep: Option<String>,
    /// Listener name (health, failure records, replay)
    #[arg(long, value_name = "NAME", default_value = "recorder")]
    name: String,
    /// Topic filter to store (repeatable) [default: PREFIX/#]
    #[arg(long = "filter", value_name = "FILTER")]
    filters: Vec<String>,
    /// Acknowledge a message once its row is queued, not committed (a crash can lose the queue)
    #[arg(long)]
    ack_on_queue: bool,
    /// Share the work with other instances ($share/GROUP/…)
    #[arg(long, value_name = "GROUP")]
    share_group: Option<String>,
    /// Seconds between health reports [env: SIGNALBOX_HEALTH_INTERVAL] [default: 10]
    #[arg(long, value_name = "SECS")]
    health_interval: Option<u64>,
}

/// A row for the writer, and who waits for its commit (the default mode).
struct Item {
    row: StoredMessage,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Runs the recorder until SIGTERM/SIGINT.
pub fn run(global: &GlobalArgs, args: RecorderArgs) -> BridgeResult {
    let mut overrides = global.overrides();
    overrides.health_interval = args.health_interval;
    let config = Config::resolve(&overrides).map_err(BridgeError::usage)?;
    let settings =
        history::settings(&config).map_err(|e| BridgeError::usage(anyhow::anyhow!(e)))?;
    let db = args.db.clone().unwrap_or(settings.db);
    let keep = match &args.keep {
        Some(text) => history::parse_keep(text)
            .map_err(|e| BridgeError::usage(anyhow::anyhow!("--keep: {e}")))?,
        None => settings.keep,
    };
    let filters = if args.filters.is_empty() {
        vec![format!("{}/#", config.prefix.value)]
    } else {
        args.filters.clone()
    };
    let mut options = ListenerOptions::new(&args.name, filters, &config);
    options.share_group = args.share_group.clone();
    let store = Store::open_writer(&db).map_err(BridgeError::usage)?;
    let runtime = super::flags::tokio_runtime()?;
    let recorder = Recorder::start(store, keep)?;
    let prefix = config.prefix.value.clone();
    let sync = !args.ack_on_queue;
    // Waiting handlers, many at once: the writer commits them together.
    options.concurrency = if sync { QUEUE } else { 1 };
    let queue = recorder.queue.clone();
    let trouble = recorder.trouble.clone();
    let handler = move |d: Delivery| {
        let queue = queue.clone();
        let trouble = trouble.clone();
        let prefix = prefix.clone();
        async move { record(&queue, &trouble, &prefix, d, sync).await }
    };
    let outcome = runtime.block_on(super::flags::listen(&config, options, handler));
    // The runtime is stopped: every handler has returned. Commit what is
    // queued before exiting.
    drop(runtime);
    let lost = recorder.finish();
    if lost > 0 {
        return Err(BridgeError::failure(anyhow::anyhow!(
            "{lost} acknowledged messages could not be written to {}",
            db.display()
        )));
    }
    outcome.map(|()| 0)
}

/// The handler: queue the row (and, unless --ack-on-queue, wait for its commit).
async fn record(
    queue: &mpsc::Sender<Item>,
    trouble: &Mutex<Option<String>>,
    prefix: &str,
    d: Delivery,
    sync: bool,
) -> HandlerResult {
    // (handlers waiting for their commit learn of a failed one from the commit itself.)
    if !sync {
        if let Some(error) = trouble.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(HandlerError::transient(format!(
                "history database not writable: {error}"
            )));
        }
    }
    let row =
        StoredMessage::from_delivery(prefix, &d.topic, &d.payload, &d.decoded, &d.id, Utc::now());
    let (done, wait) = if sync {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    queue
        .send(Item { row, done })
        .await
        .map_err(|_| HandlerError::transient("the history writer has stopped"))?;
    if let Some(wait) = wait {
        wait.await
            .map_err(|_| HandlerError::transient("the history writer has stopped"))?
            .map_err(HandlerError::transient)?;
    }
    Ok(None)
}

/// The writer thread and its queue.
struct Recorder {
    queue: mpsc::Sender<Item>,
    /// The writer's current error, while commits fail.
    trouble: Arc<Mutex<Option<String>>>,
    writer: std::thread::JoinHandle<usize>,
}

impl Recorder {
    fn start(store: Store, keep: Option<Duration>) -> Result<Recorder, BridgeError> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let trouble = Arc::new(Mutex::new(None));
        let writer = {
            let trouble = trouble.clone();
            std::thread::Builder::new()
                .name("history-writer".into())
                .spawn(move || write_loop(store, rx, keep, &trouble))
                .map_err(BridgeError::failure)?
        };
        Ok(Recorder {
            queue,
            trouble,
            writer,
        })
    }

    /// Closes the queue, waits for the last commit; returns the rows that
    /// could not be written.
    fn finish(self) -> usize {
        drop(self.queue);
        self.writer.join().unwrap_or(0)
    }
}

/// Commits batches until the queue closes; prunes and optimizes on timers.
/// Returns how many queued rows were never written (the database failed
/// at the very end).
fn write_loop(
    mut store: Store,
    mut rx: mpsc::Receiver<Item>,
    keep: Option<Duration>,
    trouble: &Mutex<Option<String>>,
) -> usize {
    let set_trouble = |e: Option<String>| *trouble.lock().unwrap_or_else(|p| p.into_inner()) = e;
    let clock = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(clock) => clock,
        Err(e) => {
            set_trouble(Some(format!("cannot start the writer's timer: {e}")));
            return 0;
        }
    };
    let mut next_prune = Instant::now();
    let mut next_optimize = Instant::now() + OPTIMIZE_EVERY;
    let mut batch: Vec<Item> = Vec::with_capacity(MAX_BATCH);
    let mut closed = false;
    let mut failures: u32 = 0;
    loop {
        if batch.is_empty() {
            if closed {
                return 0;
            }
            // Wake up for the timers even when no message comes.
            match recv_timeout(&clock, &mut rx, Duration::from_secs(1)) {
                Recv::Item(item) => batch.push(item),
                Recv::Closed => closed = true,
                Recv::Timeout => {}
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            match store.insert(batch.iter().map(|i| &i.row)) {
                Ok(_) => {
                    if failures > 0 {
                        tracing::info!("history database writable again");
                        set_trouble(None);
                    }
                    failures = 0;
                    for item in batch.drain(..) {
                        if let Some(done) = item.done {
                            let _ = done.send(Ok(()));
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    let text = e.to_string();
                    tracing::error!("cannot commit {} messages: {text}", batch.len());
                    set_trouble(Some(text.clone()));
                    // waiting handlers get the error (their messages are
                    // retried, then recorded); queued ones are kept here.
                    batch.retain_mut(|item| match item.done.take() {
                        Some(done) => {
                            let _ = done.send(Err(text.clone()));
                            false
                        }
                        None => true,
                    });
                    if closed && failures >= 3 {
                        return batch.len();
                    }
                    std::thread::sleep(
                        Duration::from_millis(100)
                            .saturating_mul(1 << failures.min(6))
                            .min(RETRY_MAX),
                    );
                    continue;
                }
            }
        }
        let now = Instant::now();
        if let (Some(keep), true) = (keep, now >= next_prune) {
            next_prune = now + PRUNE_EVERY;
            prune(&mut store, keep);
        }
        if now >= next_optimize {
            next_optimize = now + OPTIMIZE_EVERY;
            if let Err(e) = store.optimize() {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Deletes what is older than `keep`, a chunk per transaction.
fn prune(store: &mut Store, keep: Duration) {
    let Ok(keep) = chrono::Duration::from_std(keep) else {
        return;
    };
    let Some(before) = Utc::now().checked_sub_signed(keep) else {
        return;
    };
    let mut deleted = 0;
    loop {
        match store.prune_chunk(before) {
            Ok(n) => {
                deleted += n;
                if n < history::PRUNE_CHUNK {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!("retention: {e}");
                break;
            }
        }
    }
    if deleted > 0 {
        tracing::info!("retention: deleted {deleted} messages older than {before}");
    }
}

enum Recv {
    Item(Item),
    Closed,
    Timeout,
}

/// A blocking receive with a timeout: the writer is a plain thread, with
/// a minimal runtime of its own for the timer.
fn recv_timeout(
    clock: &tokio::runtime::Runtime,
    rx: &mut mpsc::Receiver<Item>,
    timeout: Duration,
) -> Recv {
    match clock.block_on(async { tokio::time::timeout(timeout, rx.recv()).await }) {
        Ok(Some(item)) => Recv::Item(item),
        Ok(None) => Recv::Closed,
        Err(_) => Recv::Timeout,
    }
}
