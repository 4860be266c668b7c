//! The durable publish spool, and [`Outbox`]: "publish confirmed, or spool".
//!
//! A bridge that cannot get a PUBACK from the broker in time writes the
//! message here instead, and the next run (or `signalbox-bridge spool
//! flush`) publishes it. Nothing is lost between "the legacy system handed
//! it over" and "the broker has it" (docs/PROTOCOL.md section 6).
//!
//! On disk: one JSON file per message, `{nanos}-{pid}-{seq}.msg`, so that the
//! file names sort oldest first. A message is written to a `.tmp-…` name in
//! the same directory, fsynced, renamed into place, and the directory is
//! fsynced: a crash at any point leaves either the whole message or no
//! message (a stray temp file, ignored, and removed once it is old).
//!
//! Flushing publishes oldest first and stops at the first failure, so that
//! the order in which messages were handed over is the order in which the
//! broker first sees them. One flusher at a time holds `.flush.lock`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope::time_ms;
use crate::mqtt::{Confirmation, MqttError, Publish, Publisher, Qos};

/// Extension of a complete spooled message.
const MESSAGE_EXT: &str = "msg";
/// Prefix of a message being written; such files are never read.
const TEMP_PREFIX: &str = ".tmp-";
/// Temp files older than this are left over from a crash and are removed.
const TEMP_MAX_AGE: Duration = Duration::from_secs(3600);
/// The lock a flusher holds so that two runs do not publish the same files.
const LOCK_NAME: &str = ".flush.lock";
/// A flush lock older than this belongs to a process that died: flushes are
/// bounded in time far below it.
const LOCK_MAX_AGE: Duration = Duration::from_secs(600);
/// Sub-directory where unreadable message files are moved, so that one bad
/// file never blocks the spool.
const CORRUPT_DIR: &str = "corrupt";
/// Spooled messages published at once before waiting for their PUBACKs: a
/// window keeps a large backlog fast while a failure loses little progress.
const FLUSH_WINDOW: usize = 100;
/// Version of the file format (field `v`).
const FORMAT_VERSION: u32 = 1;

/// Errors of the spool; each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory could not be created.
    #[error("cannot create spool directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A message could not be written durably.
    #[error("cannot write to spool directory {dir}: {source}")]
    Write {
        /// The spool directory.
        dir: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The spool directory could not be listed.
    #[error("cannot read spool directory {path}: {source}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A message file could not be read or parsed.
    #[error("spool file {path} is unreadable: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A spooled message could not be removed after it was published.
    #[error("cannot remove published spool file {path}: {source}")]
    Remove {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
}

/// A message could be neither published nor spooled: the caller must make
/// the legacy side retry (the mail bridge exits 75).
#[derive(Debug, thiserror::Error)]
#[error("message to {topic} could not be published ({publish}) nor spooled ({spool})")]
pub struct Undeliverable {
    /// The topic of the message.
    pub topic: String,
    /// Why publishing failed (or why it was not attempted).
    pub publish: String,
    /// Why spooling failed.
    pub spool: SpoolError,
}

/// One message waiting in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledMessage {
    /// The file that holds it.
    pub path: PathBuf,
    /// The topic to publish to.
    pub topic: String,
    /// The payload, byte for byte.
    pub payload: Bytes,
    /// The QoS it was to be published with.
    pub qos: Qos,
    /// Whether it is a retained state.
    pub retain: bool,
    /// When it was spooled.
    pub spooled: DateTime<Utc>,
}

impl SpooledMessage {
    /// The publish request that delivers it.
    pub fn to_publish(&self) -> Publish {
        Publish::new(
            self.topic.clone(),
            self.payload.clone(),
            self.qos,
            self.retain,
        )
    }
}

/// The wire form of a spool file.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// Format version, [`FORMAT_VERSION`].
    v: u32,
    topic: String,
    qos: u8,
    retain: bool,
    #[serde(with = "time_ms")]
    spooled: DateTime<Utc>,
    /// The payload as text when it is UTF-8 (readable with `cat`), else
    /// standard base64.
    payload: String,
    #[serde(default)]
    payload_base64: bool,
}

/// The outcome of a flush.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FlushReport {
    /// Messages published (confirmed) and removed from the spool.
    pub flushed: u64,
    /// Messages still waiting.
    pub remaining: u64,
    /// Unreadable files moved to `corrupt/`.
    pub quarantined: u64,
    /// Why the flush stopped early, if it did.
    pub error: Option<String>,
}

/// Creates `dir` and its missing parents with mode 0700: spools, seen-sets
/// and keys are nobody else's business (messages may carry secrets, and a
/// key directory must not be listable by others). An existing directory
/// is left as it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// The spool in `dir` (created when the first message is written).
    pub fn new(dir: impl Into<PathBuf>) -> Spool {
        Spool { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ensure_dir(&self) -> Result<(), SpoolError> {
        create_private_dir(&self.dir).map_err(|source| SpoolError::CreateDir {
            path: self.dir.clone(),
            source,
        })
    }

    /// Writes one message durably (temp name, fsync, rename, fsync of the
    /// directory) and returns its path.
    pub fn write(&self, publish: &Publish) -> Result<PathBuf, SpoolError> {
        self.ensure_dir()?;
        let now = Utc::now();
        let payload = &publish.payload[..];
        let (payload, payload_base64) = match std::str::from_utf8(payload) {
            Ok(text) => (text.to_string(), false),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(payload),
                true,
            ),
        };
        let record = Record {
            v: FORMAT_VERSION,
            topic: publish.topic.clone(),
            qos: publish.qos.as_u8(),
            retain: publish.retain,
            spooled: now,
            payload,
            payload_base64,
        };
        let bytes =
            serde_json::to_vec(&record).map_err(|e| self.write_error(io::Error::other(e)))?;
        let name = next_name(now);
        let final_path = self.dir.join(format!("{name}.{MESSAGE_EXT}"));
        let temp_path = self.dir.join(format!("{TEMP_PREFIX}{name}"));
        let written = (|| -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp_path)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&temp_path, &final_path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp_path);
            return Err(self.write_error(e));
        }
        Ok(final_path)
    }

    fn write_error(&self, source: io::Error) -> SpoolError {
        SpoolError::Write {
            dir: self.dir.clone(),
            source,
        }
    }

    /// The paths of the complete messages, oldest first. A missing
    /// directory is an empty spool. Temp files left over from a crash are
    /// skipped, and removed when old.
    pub fn paths(&self) -> Result<Vec<PathBuf>, SpoolError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(SpoolError::ReadDir {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| SpoolError::ReadDir {
                path: self.dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMP_PREFIX) {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > TEMP_MAX_AGE);
                if old {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            if name.ends_with(&format!(".{MESSAGE_EXT}")) && !name.starts_with('.') {
                paths.push(entry.path());
            }
        }
        paths.sort();
        Ok(paths)
    }

    /// Number of messages waiting (0 when the directory cannot be read).
    pub fn depth(&self) -> u64 {
        self.paths().map(|p| p.len() as u64).unwrap_or(0)
    }

    /// Reads one message file.
    pub fn read(path: &Path) -> Result<SpooledMessage, SpoolError> {
        let corrupt = |reason: String| SpoolError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = fs::read(path).map_err(|e| corrupt(e.to_string()))?;
        let record: Record = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if record.v != FORMAT_VERSION {
            return Err(corrupt(format!("unknown format version {}", record.v)));
        }
        let payload = if record.payload_base64 {
            base64::engine::general_purpose::STANDARD
                .decode(record.payload.as_bytes())
                .map_err(|e| corrupt(format!("payload is not base64: {e}")))?
        } else {
            record.payload.into_bytes()
        };
        let qos = Qos::from_u8(record.qos)
            .ok_or_else(|| corrupt(format!("invalid qos {}", record.qos)))?;
        Ok(SpooledMessage {
            path: path.to_path_buf(),
            topic: record.topic,
            payload: Bytes::from(payload),
            qos,
            retain: record.retain,
            spooled: record.spooled,
        })
    }

    /// Every readable message, oldest first, and the errors of the
    /// unreadable ones.
    pub fn list(&self) -> Result<(Vec<SpooledMessage>, Vec<SpoolError>), SpoolError> {
        let mut messages = Vec::new();
        let mut errors = Vec::new();
        for path in self.paths()? {
            match Spool::read(&path) {
                Ok(m) => messages.push(m),
                // Published and removed by a concurrent flush meanwhile.
                Err(_) if !path.exists() => {}
                Err(e) => errors.push(e),
            }
        }
        Ok((messages, errors))
    }

    fn quarantine(&self, path: &Path) -> bool {
        let dir = self.dir.join(CORRUPT_DIR);
        let moved = create_private_dir(&dir).is_ok()
            && path
                .file_name()
                .is_some_and(|name| fs::rename(path, dir.join(name)).is_ok());
        moved
    }

    /// Publishes the spooled messages oldest first, each confirmed within
    /// the time left until `deadline`, removing each once confirmed; stops
    /// at the first failure (so the order is kept) or at the deadline. New
    /// files written meanwhile are picked up too. When another process is
    /// flushing, returns at once with `remaining` > 0 unless the spool is
    /// empty.
    pub async fn flush(&self, publisher: &Publisher, deadline: Instant) -> FlushReport {
        let mut report = FlushReport::default();
        let Some(_lock) = FlushLock::acquire(&self.dir) else {
            report.remaining = self.depth();
            if report.remaining > 0 {
                report.error = Some("another process is flushing this spool".into());
            }
            return report;
        };
        'outer: loop {
            let paths = match self.paths() {
                Ok(p) => p,
                Err(e) => {
                    report.error = Some(e.to_string());
                    break;
                }
            };
            if paths.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                report.error = Some("flush time budget used up".into());
                break;
            }
            let mut batch: Vec<(PathBuf, Confirmation)> = Vec::new();
            for path in paths.into_iter().take(FLUSH_WINDOW) {
                let message = match Spool::read(&path) {
                    Ok(m) => m,
                    Err(_) if !path.exists() => continue,
                    Err(e) => {
                        tracing::warn!("{e}; moved to {}/", self.dir.join(CORRUPT_DIR).display());
                        if self.quarantine(&path) {
                            report.quarantined += 1;
                            continue;
                        }
                        report.error = Some(e.to_string());
                        break 'outer;
                    }
                };
                let mut publish = message.to_publish();
                // A spooled message is one that must be confirmed.
                publish.qos = publish.qos.max(Qos::AtLeastOnce);
                match publisher.publish(publish).await {
                    Ok(confirmation) => batch.push((path, confirmation)),
                    Err(e) => {
                        report.error = Some(e.to_string());
                        break;
                    }
                }
            }
            let mut failed = report.error.is_some();
            for (path, confirmation) in batch {
                if failed {
                    // Left in the spool; a duplicate at worst if it did
                    // reach the broker.
                    continue;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match confirmation.wait(left.max(Duration::from_millis(1))).await {
                    Ok(()) => match fs::remove_file(&path) {
                        Ok(()) => report.flushed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => report.flushed += 1,
                        Err(source) => {
                            report.error = Some(SpoolError::Remove { path, source }.to_string());
                            failed = true;
                        }
                    },
                    Err(e @ MqttError::NotAuthorized { .. }) => {
                        // The broker's ACL will refuse it every time: set
                        // it aside (with an error in the log) rather than
                        // block every later message behind it.
                        tracing::error!("{e}; moved to {}/", self.dir.join(CORRUPT_DIR).display());
                        if self.quarantine(&path) {
                            report.quarantined += 1;
                        } else {
                            report.error = Some(e.to_string());
                            failed = true;
                        }
                    }
                    Err(e) => {
                        report.error = Some(e.to_string());
                        failed = true;
                    }
                }
            }
            if failed {
                break;
            }
        }
        if report.flushed > 0 {
            // Make the removals durable; losing them would only re-send.
            if let Ok(dir) = File::open(&self.dir) {
                let _ = dir.sync_all();
            }
        }
        report.remaining = self.depth();
        report
    }
}

/// An exclusive flush lock: a file created with `create_new`, removed on
/// drop; a lock older than [`LOCK_MAX_AGE`] or whose process is gone is
/// taken over.
struct FlushLock {
    path: PathBuf,
}

impl FlushLock {
    fn acquire(dir: &Path) -> Option<FlushLock> {
        let path = dir.join(LOCK_NAME);
        for _ in 0..2 {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut file) => {
                    let _ = write!(file, "{}", std::process::id());
                    return Some(FlushLock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !lock_is_stale(&path) {
                        return None;
                    }
                    let _ = fs::remove_file(&path);
                }
                // No spool directory (nothing to flush) or not writable.
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for FlushLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn lock_is_stale(path: &Path) -> bool {
    let too_old = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > LOCK_MAX_AGE);
    let owner_gone = fs::read_to_string(path)
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
    too_old || owner_gone
}

/// A file name that sorts after every name this process made before:
/// nanoseconds since the epoch (never going back within the process),
/// the process id and a counter.
fn next_name(now: DateTime<Utc>) -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = now.timestamp_nanos_opt().unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    });
    let nanos = u64::try_from(nanos).unwrap_or(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    let stamp = loop {
        let next = nanos.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(actual) => prev = actual,
        }
    };
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{stamp:020}-{:010}-{seq:010}", std::process::id())
}

/// How a message was handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The broker confirmed it (PUBACK).
    Published,
    /// It waits in the spool.
    Spooled,
}

/// Counts of a batch handed to [`Outbox::send_all`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Confirmed by the broker.
    pub published: usize,
    /// Written to the spool.
    pub spooled: usize,
}

/// "Publish confirmed, or spool": what every one-shot bridge hands its
/// messages to.
///
/// Built with the connection (or `None` when the broker could not be
/// reached) and a deadline. It first flushes older spooled messages; while
/// any remain, new messages go to the spool behind them, so the broker
/// sees every message in the order it was handed over. A publish that is
/// not confirmed before the deadline is spooled, and every later message
/// goes straight to the spool, so a broker that is away costs at most the
/// time to the deadline once.
pub struct Outbox {
    spool: Spool,
    publisher: Option<Publisher>,
    deadline: Instant,
    /// Older messages are still spooled: new ones must queue behind them.
    backlog: bool,
    /// Why the broker is not used (unreachable, not confirming).
    broker_error: Option<String>,
    /// Signs every envelope handed over (before it is published or
    /// spooled), when the bridge has a signing key.
    signer: Option<std::sync::Arc<crate::sign::SigningKey>>,
}

impl Outbox {
    /// An outbox over `spool`, publishing through `publisher` (`None`: the
    /// broker is unreachable, for `why`) until `deadline`. Flushes older
    /// spooled messages first, for at most `flush_budget`.
    pub async fn open(
        spool: Spool,
        publisher: Result<Publisher, String>,
        deadline: Instant,
        flush_budget: Duration,
    ) -> Outbox {
        let (publisher, broker_error) = match publisher {
            Ok(p) => (Some(p), None),
            Err(why) => (None, Some(why)),
        };
        let mut outbox = Outbox {
            backlog: spool.depth() > 0,
            spool,
            publisher,
            deadline,
            broker_error,
            signer: None,
        };
        if outbox.backlog {
            let until = deadline.min(Instant::now() + flush_budget);
            outbox.flush_until(until).await;
        }
        outbox
    }

    /// Signs every envelope handed over from now on with `key` (payloads
    /// that are not envelopes, and envelopes already signed, are left as
    /// they are).
    pub fn set_signer(&mut self, key: std::sync::Arc<crate::sign::SigningKey>) {
        self.signer = Some(key);
    }

    fn sign(&self, mut publish: Publish) -> Publish {
        if let Some(key) = &self.signer {
            let unsigned = crate::envelope::Envelope::from_slice(&publish.payload)
                .is_ok_and(|e| !e.extra.contains_key(crate::sign::SIG_FIELD));
            if unsigned {
                if let Ok(signed) = key.sign_payload(&publish.payload) {
                    publish.payload = signed.into();
                }
            }
        }
        publish
    }

    /// Moves the deadline (a cron job's events are due when it ends).
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// Whether the broker is in use (connected and not failed).
    pub fn broker_usable(&self) -> bool {
        self.publisher.is_some()
    }

    /// Why the broker is not in use, if it is not.
    pub fn broker_error(&self) -> Option<&str> {
        self.broker_error.as_deref()
    }

    /// The spool.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// The publishing handle, while the broker is usable.
    pub fn publisher(&self) -> Option<&Publisher> {
        self.publisher.as_ref()
    }

    async fn flush_until(&mut self, until: Instant) -> FlushReport {
        let Some(publisher) = &self.publisher else {
            return FlushReport {
                remaining: self.spool.depth(),
                ..Default::default()
            };
        };
        let report = self.spool.flush(publisher, until).await;
        self.backlog = report.remaining > 0;
        if let Some(e) = &report.error {
            tracing::info!("spool flush stopped: {e}");
        }
        report
    }

    fn give_up_broker(&mut self, why: String) {
        tracing::warn!("broker not usable, spooling: {why}");
        self.publisher = None;
        self.broker_error = Some(why);
    }

    fn spool_one(&self, publish: &Publish, why: &str) -> Result<Delivery, Undeliverable> {
        match self.spool.write(publish) {
            Ok(_) => Ok(Delivery::Spooled),
            Err(spool) => Err(Undeliverable {
                topic: publish.topic.clone(),
                publish: why.to_string(),
                spool,
            }),
        }
    }

    /// Publishes one message and waits for its PUBACK until the deadline,
    /// or spools it. An error means it is neither published nor spooled.
    pub async fn send(&mut self, publish: Publish) -> Result<Delivery, Undeliverable> {
        let sent = self.send_all(vec![publish]).await?;
        Ok(if sent.published == 1 {
            Delivery::Published
        } else {
            Delivery::Spooled
        })
    }

    /// Publishes a batch in order, many in flight, each confirmed before
    /// the deadline; spools those that are not (and everything after the
    /// first failure). Stops at the first message that can be neither
    /// published nor spooled.
    pub async fn send_all(&mut self, batch: Vec<Publish>) -> Result<Sent, Undeliverable> {
        let batch: Vec<Publish> = batch.into_iter().map(|p| self.sign(p)).collect();
        let mut sent = Sent::default();
        let publisher = match (&self.publisher, self.backlog) {
            (Some(p), false) => p.clone(),
            _ => {
                let why = if self.backlog {
                    "older messages are still spooled".to_string()
                } else {
                    self.broker_error
                        .clone()
                        .unwrap_or_else(|| "broker unreachable".into())
                };
                for publish in &batch {
                    self.spool_one(publish, &why)?;
                    sent.spooled += 1;
                }
                self.backlog = self.backlog || sent.spooled > 0;
                return Ok(sent);
            }
        };
        let mut in_flight: Vec<(Publish, Option<Confirmation>)> = Vec::with_capacity(batch.len());
        let mut failure: Option<String> = None;
        for publish in batch {
            let confirmation = if failure.is_none() {
                match publisher.publish(publish.clone()).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        failure = Some(e.to_string());
                        None
                    }
                }
            } else {
                None
            };
            in_flight.push((publish, confirmation));
        }
        for (publish, confirmation) in in_flight {
            let result = match (confirmation, &failure) {
                (Some(mut c), Some(_)) => c.try_result().unwrap_or(Err(MqttError::Closed)),
                (Some(c), None) => {
                    let left = self.deadline.saturating_duration_since(Instant::now());
                    c.wait(left.max(Duration::from_millis(1))).await
                }
                (None, _) => Err(MqttError::Closed),
            };
            match result {
                Ok(()) => sent.published += 1,
                Err(e) => {
                    let why = failure.get_or_insert_with(|| e.to_string()).clone();
                    self.spool_one(&publish, &why)?;
                    sent.spooled += 1;
                }
            }
        }
        if let Some(why) = failure {
            self.give_up_broker(why);
            self.backlog = true;
        }
        Ok(sent)
    }

    /// At the end of a run: flushes what waits in the spool while the
    /// broker is usable and time is left. Returns the spool's depth.
    pub async fn finish(&mut self) -> u64 {
        if self.publisher.is_some() && self.spool.depth() > 0 && Instant::now() < self.deadline {
            self.flush_until(self.deadline).await;
        }
        self.spool.depth()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(topic: &str, payload: &[u8], retain: bool) -> Publish {
        Publish::new(topic, payload.to_vec(), Qos::AtLeastOnce, retain)
    }

    #[test]
    fn messages_round_trip_and_list_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path().join("spool"));
        assert_eq!(spool.depth(), 0, "a missing directory is an empty spool");
        for i in 0..50u32 {
            spool
                .write(&publish(
                    &format!("a/{i}"),
                    format!("m{i}").as_bytes(),
                    i % 2 == 0,
                ))
                .expect("write");
        }
        spool
            .write(&publish("bin/x", &[0xff, 0x00, 0xfe], false))
            .expect("write binary");
        let (messages, errors) = spool.list().expect("list");
        assert!(errors.is_empty());
        assert_eq!(messages.len(), 51);
        for (i, m) in messages.iter().take(50).enumerate() {
            assert_eq!(m.topic, format!("a/{i}"));
            assert_eq!(&m.payload[..], format!("m{i}").as_bytes());
            assert_eq!(m.retain, i % 2 == 0);
            assert_eq!(m.qos, Qos::AtLeastOnce);
        }
        assert_eq!(&messages[50].payload[..], &[0xff, 0x00, 0xfe]);
    }

    #[test]
    fn names_sort_in_creation_order_even_when_the_clock_stands_still() {
        let now = Utc::now();
        let names: Vec<String> = (0..1000).map(|_| next_name(now)).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn temp_files_are_ignored_and_corrupt_files_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path());
        spool
            .write(&publish("a/b", b"whole", false))
            .expect("write");
        // What a crash mid-write leaves: a temp file with part of a record.
        fs::write(
            dir.path().join(".tmp-00000000000000000001-1-1"),
            b"{\"v\":1,\"top",
        )
        .expect("temp");
        fs::write(
            dir.path().join("00000000000000000002-1-1.msg"),
            b"{not json",
        )
        .expect("corrupt");
        let (messages, errors) = spool.list().expect("list");
        assert_eq!(messages.len(), 1);
        assert_eq!(&messages[0].payload[..], b"whole");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("unreadable"),
            "{}",
            errors[0]
        );
        assert_eq!(spool.depth(), 2);
    }

    #[test]
    fn a_stale_lock_is_taken_over_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = FlushLock::acquire(dir.path()).expect("first lock");
        assert!(
            FlushLock::acquire(dir.path()).is_none(),
            "held by this live process"
        );
        drop(held);
        fs::write(dir.path().join(LOCK_NAME), "4294967295").expect("dead owner");
        assert!(FlushLock::acquire(dir.path()).is_some(), "owner gone");
    }

    #[test]
    fn an_unwritable_spool_is_an_error_naming_the_directory() {
        let err = Spool::new("/proc/signalbox-spool-test")
            .write(&publish("a/b", b"x", false))
            .expect_err("fails");
        assert!(
            err.to_string().contains("/proc/signalbox-spool-test"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_outbox_without_a_broker_spools_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path());
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut outbox = Outbox::open(
            spool.clone(),
            Err("down".into()),
            deadline,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(
            outbox
                .send(publish("a/1", b"1", false))
                .await
                .expect("spooled"),
            Delivery::Spooled
        );
        let sent = outbox
            .send_all(vec![
                publish("a/2", b"2", false),
                publish("a/3", b"3", true),
            ])
            .await
            .expect("spooled");
        assert_eq!(
            sent,
            Sent {
                published: 0,
                spooled: 2
            }
        );
        assert_eq!(outbox.finish().await, 3);
        let topics: Vec<String> = spool
            .list()
            .expect("list")
            .0
            .into_iter()
            .map(|m| m.topic)
            .collect();
        assert_eq!(topics, ["a/1", "a/2", "a/3"]);
    }

    #[tokio::test]
    async fn neither_published_nor_spooled_is_an_error() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut outbox = Outbox::open(
            Spool::new("/proc/nope/spool"),
            Err("down".into()),
            deadline,
            Duration::ZERO,
        )
        .await;
        let err = outbox
            .send(publish("a/1", b"1", false))
            .await
            .expect_err("undeliverable");
        let text = err.to_string();
        assert!(
            text.contains("down") && text.contains("/proc/nope/spool"),
            "{text}"
        );
    }
}
