//! The listener runtime: what turns "a function that handles a message"
//! into a listener that loses nothing and hides nothing.
//!
//! - A persistent session (clean session off), QoS 1 and manual acks: a
//!   message is acknowledged only after the handler succeeded, or after its
//!   failure record was confirmed by the broker. A listener killed in the
//!   middle gets the message again.
//! - In-process retries with capped backoff, then a retained failure record
//!   on `_failed/{listener}/{id}`, listed in the retained failure index
//!   `_failed/{listener}` so that records can be read by exact topic (and
//!   found again after a restart) on brokers that do not deliver retained
//!   messages to wildcard subscriptions.
//! - De-duplication by envelope id ([`crate::seen::SeenSet`], persisted).
//! - A retained health report every interval, at once on `_ping`, with the
//!   Last Will `down` and `stopped` after a graceful stop; `degraded` while
//!   handler errors or reconnects are recent.
//! - Replays requested on `_replay/{listener}`: the handler runs again on
//!   the stored message; the original topic is never published to again.
//! - The `_roster`: the listener adds its name when it is missing.
//! - Replies: a handler may return a payload, published to the message's
//!   MQTT 5 response topic or its envelope's `reply_to`.
//!
//! Work is sequential (one message at a time, in arrival order), so acks go
//! out in order. Scale out with `share_group` (MQTT 5 shared subscriptions).
//! The protocol is docs/PROTOCOL.md sections 6–9.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::envelope::{Envelope, Payload, Severity};
use crate::failed::{
    one_line, FailureRecord, Outcome, ReplayOutcome, ReplayRequest, ReplayResult,
    DEFAULT_MAX_ATTEMPTS,
};
use crate::health::{Counters, HealthReport, HealthState};
use crate::mqtt::{
    ConnState, ConnectOptions, Connection, Message, MqttError, Publish, Publisher, Qos, Will,
};
use crate::seen::{SeenSet, DEFAULT_CAPACITY};
use crate::sign::{SignError, SignaturePolicy, TrustStore, Verdict};
use crate::topic::{self, Reserved};

/// Time allowed for the broker to confirm a failure record or a report.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// The broker's rewrite of '.' in topic levels is reported once per process.
static DOTS_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// How long the shared-subscription probe waits for its own message.
const SHARE_PROBE_WAIT: Duration = Duration::from_secs(5);
/// Longest wait between two in-process retries.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Jobs queued between the receiving task and the worker. The broker's own
/// in-flight window for unacknowledged messages is smaller than this.
const WORK_QUEUE: usize = 4096;
/// How long to wait for the retained roster before adding our name.
const ROSTER_WAIT: Duration = Duration::from_millis(500);

/// What a handler returns: `Ok(Some(reply))` to answer a request,
/// `Ok(None)` when done, `Err(…)` on failure.
pub type HandlerResult = Result<Option<Bytes>, HandlerError>;

/// A handler's failure: what went wrong, and whether trying again in
/// process could help (a 5xx or a timeout could; a 4xx will not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// The error, for the failure record and the health report.
    pub message: String,
    /// Whether the runtime should retry in process before recording it.
    pub retry: bool,
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            retry: true,
        }
    }

    /// A failure that retrying will not fix: recorded at once (a replay
    /// after the cause is fixed still runs it again).
    pub fn permanent(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            retry: false,
        }
    }
}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        HandlerError::transient(message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        HandlerError::transient(message)
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One message given to a handler.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The topic it arrived on.
    pub topic: String,
    /// The exact payload bytes.
    pub payload: Bytes,
    /// The payload decoded once.
    pub decoded: Arc<Payload>,
    /// The envelope id, or an id made for a raw payload.
    pub id: String,
    /// This run is a replay requested by an operator.
    pub replay: bool,
    /// 1 for the first try, 2 for the first retry, …
    pub attempt: u32,
    /// With debouncing: how many messages this run stands for (the last
    /// of a burst is the one delivered). 1 otherwise.
    pub burst: u32,
    /// The signature check, when the listener has a trust directory
    /// (policy `mark` hands unsigned and invalid messages over with it).
    pub signature: Option<Verdict>,
}

impl Delivery {
    /// The envelope, when the payload is one.
    pub fn envelope(&self) -> Option<&Envelope> {
        self.decoded.envelope()
    }

    /// The one-line summary of the payload.
    pub fn summary(&self) -> String {
        self.decoded.summary_line(400)
    }

    /// The severity, `info` for a payload that is not an envelope.
    pub fn severity(&self) -> Severity {
        self.decoded.severity().unwrap_or_default()
    }
}

/// How a listener runs.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// The listener's name (one topic level).
    pub name: String,
    /// Topic filters to handle.
    pub filters: Vec<String>,
    /// Share the work with other instances: `$share/{group}/{filter}`.
    pub share_group: Option<String>,
    /// Tries per message before a failure record (at least 1).
    pub retries: u32,
    /// First wait between tries; doubles each time.
    pub retry_backoff: Duration,
    /// A record with this many failed attempts is not replayed any more.
    pub max_attempts: u32,
    /// Ids remembered for de-duplication.
    pub dedup_capacity: usize,
    /// Where the de-duplication set is kept; in memory when `None`.
    pub state_dir: Option<PathBuf>,
    /// Run the handler once per burst: after this long without a new
    /// message, on the last message of the burst (fedmsg-trigger's
    /// `--wait-for`, for regeneration jobs). Every message of the burst is
    /// acknowledged once that run succeeded or its failure was recorded.
    pub debounce: Option<Duration>,
    /// Messages handled at once (1: one after the other, in order). More
    /// lets a handler that waits on something shared (a batched database
    /// commit) acknowledge each message only once it is safe, without
    /// handling one per round trip. Acks still go out in receipt order; the
    /// order of handling across messages is not kept, and a redelivered
    /// copy may run beside its original, so the handler must be
    /// idempotent. Not used with `debounce`.
    pub concurrency: usize,
    /// Directory of trusted public keys: signatures are checked when set.
    pub trust_dir: Option<PathBuf>,
    /// With a trust directory: refuse (failure record "bad signature") or
    /// only mark unsigned and invalid messages.
    pub signature_policy: SignaturePolicy,
}

impl ListenerOptions {
    /// Defaults: 3 tries from 200 ms, cap 5 attempts, state under the
    /// config's state directory.
    pub fn new(name: &str, filters: Vec<String>, config: &Config) -> ListenerOptions {
        ListenerOptions {
            name: name.to_string(),
            filters,
            share_group: None,
            retries: 3,
            retry_backoff: Duration::from_millis(200),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            dedup_capacity: DEFAULT_CAPACITY,
            state_dir: Some(config.state_dir.value.join("listeners").join(name)),
            debounce: None,
            concurrency: 1,
            trust_dir: config.trust_dir.value.clone(),
            signature_policy: config.signature_policy.value,
        }
    }
}

/// Why a listener could not run.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The name cannot be one topic level.
    #[error("invalid listener name {name:?}: use letters, digits, '-', '_' or '.'")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// A filter is not a valid MQTT filter.
    #[error("invalid filter {filter:?}: {reason}")]
    InvalidFilter {
        /// The filter.
        filter: String,
        /// Why.
        reason: String,
    },
    /// No filter given.
    #[error("a listener needs at least one --filter")]
    NoFilter,
    /// The connection could not be set up (bad URL, CA file…).
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    /// The trust directory cannot be read.
    #[error(transparent)]
    Trust(#[from] SignError),
    /// The broker took a shared subscription but delivered nothing
    /// through it (RabbitMQ 3.10 accepts `$share/…` and stays silent).
    #[error("broker {broker} accepted the shared subscription $share/{group}/… but delivered nothing through it within {secs} s: it does not support shared subscriptions (RabbitMQ 3.10 does not); run a single instance without --share-group")]
    SharedSubscriptionsUnsupported {
        /// The broker (password masked).
        broker: String,
        /// The share group asked for.
        group: String,
        /// How long the probe waited.
        secs: u64,
    },
    /// The de-duplication state cannot be opened.
    #[error("cannot open the de-duplication state {path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What a listener did, returned after a graceful stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// The counters at the stop.
    pub counters: Counters,
}

/// A job for the worker.
enum Job {
    Message(Message),
    Replay(ReplayRequest),
}

/// State shared by the receiving task and the worker.
struct Shared {
    counters: Counters,
    last_error: Option<String>,
    /// When something last went wrong (handler failure, reconnect).
    last_trouble: Option<DateTime<Utc>>,
    /// Jobs waiting for the worker, as of the last heartbeat.
    backlog: u64,
    /// How old (by its envelope time) the last message was when its
    /// handling began: grows when the listener falls behind the bus.
    lag_s: Option<f64>,
    /// The connection to the broker is lost: degraded until it is back
    /// (the reports made meanwhile reach the broker after the reconnect).
    disconnected: bool,
    /// Open failure records of this listener, by id.
    records: BTreeMap<String, FailureRecord>,
    /// The roster as last received.
    roster: Option<Vec<String>>,
    /// A record was removed since the failure index was last published:
    /// republish it at the next heartbeat (an id left over in the index
    /// costs a reader one empty exact read; a missing one would hide a
    /// record, so additions are published at once).
    index_stale: bool,
    /// Ids of our records cleared (acknowledged, or fixed by a replay)
    /// while running, newest last: a record for one of them that comes
    /// back is an old copy — re-sent after a reconnect, re-published by a
    /// `_ping` answer that crossed the acknowledgement, or handed back by
    /// a bridged broker — and is cleared again.
    cleared: ClearedIds,
}

struct Runtime {
    name: String,
    prefix: String,
    interval: Duration,
    started: DateTime<Utc>,
    subscriptions: Vec<String>,
    options: ListenerOptions,
    /// Trusted keys, when signatures are checked.
    trust: Option<TrustStore>,
    shared: Mutex<Shared>,
    publisher: Publisher,
}

/// Runs a listener until `shutdown` resolves, then finishes the message in
/// hand, publishes `stopped` and disconnects.
pub async fn run<H, Fut>(
    config: &Config,
    options: ListenerOptions,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, ListenerError>
where
    H: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    validate(&options)?;
    let trust = match &options.trust_dir {
        Some(dir) => Some(TrustStore::load(dir)?),
        None => None,
    };
    let seen = match &options.state_dir {
        Some(dir) => {
            let path = dir.join("seen");
            SeenSet::open(&path, options.dedup_capacity).map_err(|e| ListenerError::State {
                path,
                reason: e.to_string(),
            })?
        }
        None => SeenSet::in_memory(options.dedup_capacity),
    };
    let prefix = config.prefix.value.clone();
    let started = Utc::now();
    let interval = Duration::from_secs(config.health_interval.value.max(1));
    let subscriptions: Vec<String> = options
        .filters
        .iter()
        .map(|f| match &options.share_group {
            Some(g) => format!("$share/{g}/{f}"),
            None => f.clone(),
        })
        .collect();

    let mut will_report = HealthReport::new(&options.name, started, interval.as_secs());
    will_report.state = HealthState::Down;
    will_report.subscriptions = subscriptions.clone();
    will_report.last_error = Some("connection lost".into());
    let mut connect = ConnectOptions::from_config(config, &options.name)?;
    // Held while the listener runs: this instance's slot (share groups).
    let mut _instance_lock = None;
    if config.client_id.value.is_none() {
        // A persistent session needs the same client id at every start;
        // instances of a share group each need their own.
        connect.client_id = match (&options.share_group, &options.state_dir) {
            (Some(_), Some(dir)) => match instance_slot(dir) {
                Ok(Some((slot, lock))) => {
                    _instance_lock = Some(lock);
                    member_client_id(&options.name, dir, slot)
                }
                Ok(None) => crate::mqtt::default_client_id(&options.name),
                Err(e) => {
                    return Err(ListenerError::State {
                        path: dir.clone(),
                        reason: format!("cannot take an instance slot: {e}"),
                    })
                }
            },
            (Some(_), None) => crate::mqtt::default_client_id(&options.name),
            (None, _) => format!("sb-{}-{}", options.name, crate::mqtt::hostname()),
        };
    }
    connect.clean_session = false;
    connect.manual_acks = true;
    connect.retry_initial = true;
    connect.will = Some(Will {
        topic: topic::health_topic(&prefix, &options.name),
        payload: Bytes::from(will_report.to_vec()),
        qos: Qos::AtLeastOnce,
        retain: true,
    });
    let probe_options = connect.clone();
    let mut conn = Connection::connect(connect).await?;
    if let Some(group) = &options.share_group {
        probe_shared_subscriptions(probe_options, &prefix, group).await?;
    }
    let runtime = Arc::new(Runtime {
        name: options.name.clone(),
        prefix: prefix.clone(),
        interval,
        started,
        subscriptions: subscriptions.clone(),
        options: options.clone(),
        trust,
        shared: Mutex::new(Shared {
            counters: Counters::default(),
            last_error: None,
            last_trouble: None,
            disconnected: false,
            backlog: 0,
            lag_s: None,
            records: BTreeMap::new(),
            roster: None,
            index_stale: false,
            cleared: ClearedIds::default(),
        }),
        publisher: conn.publisher(),
    });

    // Control topics first, so that no failure record or ping is missed,
    // then the work.
    let mut control = vec![
        (topic::ping_topic(&prefix), Qos::AtLeastOnce),
        (topic::roster_topic(&prefix), Qos::AtLeastOnce),
        (
            topic::replay_topic(&prefix, &options.name),
            Qos::AtLeastOnce,
        ),
        (
            topic::failed_filter(&prefix, Some(&options.name)),
            Qos::AtLeastOnce,
        ),
        // Our own index, by its exact topic: on a broker that does not
        // deliver retained messages to the wildcard above, it is how a
        // restarted listener finds its open records again.
        (
            topic::failed_index_topic(&prefix, &options.name),
            Qos::AtLeastOnce,
        ),
    ];
    control.extend(subscriptions.iter().map(|f| (f.clone(), Qos::AtLeastOnce)));
    let mut state = conn.state_watch();
    let mut shutdown = std::pin::pin!(shutdown);
    // Messages queued for a persistent session arrive before the SUBACK:
    // subscribe in the background and read from the start, or the queue
    // would stall the connection.
    let subscribe = subscribe_until_done(
        runtime.publisher.clone(),
        control,
        conn.state_watch(),
        options.name.clone(),
    );
    tokio::pin!(subscribe);
    let mut subscribed = false;

    let (work_tx, work_rx) = mpsc::channel::<Job>(WORK_QUEUE);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = tokio::spawn(worker(
        runtime.clone(),
        handler,
        work_rx,
        seen,
        stop.clone(),
    ));

    let mut heartbeat = tokio::time::interval(interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    let roster_check = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(roster_check);
    let mut roster_checked = false;
    let mut was_connected = true;
    let mut failure = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            result = &mut subscribe, if !subscribed => match result {
                Ok(()) => {
                    subscribed = true;
                    tracing::info!(listener = %runtime.name, "listening on {}", runtime.subscriptions.join(" "));
                    runtime.publish_health(HealthState::Up);
                    roster_check.as_mut().reset(tokio::time::Instant::now() + ROSTER_WAIT);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            },
            _ = heartbeat.tick(), if subscribed => {
                runtime.lock().backlog = (work_tx.max_capacity() - work_tx.capacity()) as u64;
                runtime.publish_health(runtime.current_state());
                runtime.ensure_on_roster();
                let stale = std::mem::take(&mut runtime.lock().index_stale);
                if stale {
                    runtime.publish_index().await;
                }
            }
            _ = &mut roster_check, if subscribed && !roster_checked => {
                roster_checked = true;
                runtime.ensure_on_roster();
            }
            changed = state.changed() => {
                if changed.is_err() { break; }
                let now = state.borrow().clone();
                match now {
                    ConnState::Reconnecting { error, .. } => {
                        if was_connected {
                            runtime.trouble(format!("connection lost: {error}"));
                            runtime.lock().disconnected = true;
                        }
                        was_connected = false;
                    }
                    ConnState::Connected { .. } => {
                        if !was_connected {
                            // Degraded for one more interval after an outage,
                            // so that monitoring sees it happened.
                            {
                                let mut shared = runtime.lock();
                                if shared.disconnected {
                                    shared.last_trouble = Some(Utc::now());
                                }
                                shared.disconnected = false;
                            }
                            runtime.publish_health(runtime.current_state());
                        }
                        was_connected = true;
                    }
                    _ => {}
                }
            }
            message = conn.recv() => {
                let Some(message) = message else { break };
                if let Some(job) = runtime.route(message).await {
                    if work_tx.send(job).await.is_err() { break; }
                }
            }
        }
    }
    // Graceful stop: the worker finishes the message in hand and takes no
    // more; what is queued is not acknowledged and comes back next time.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(work_tx);
    let _ = worker.await;
    if let Some(e) = failure {
        conn.disconnect().await;
        return Err(e);
    }
    let report = runtime.report(HealthState::Stopped);
    let _ = runtime
        .publisher
        .publish_confirmed(
            Publish::new(
                topic::health_topic(&prefix, &runtime.name),
                report.to_vec(),
                Qos::AtLeastOnce,
                true,
            ),
            CONFIRM_TIMEOUT,
        )
        .await;
    let counters = runtime.lock().counters;
    conn.disconnect().await;
    tracing::info!(listener = %runtime.name, "stopped");
    Ok(Summary { counters })
}

/// Subscribes, retrying after connection trouble; a refusal by the broker
/// is final.
async fn subscribe_until_done(
    publisher: Publisher,
    filters: Vec<(String, Qos)>,
    mut state: tokio::sync::watch::Receiver<ConnState>,
    name: String,
) -> Result<(), ListenerError> {
    loop {
        match publisher.subscribe(&filters, CONFIRM_TIMEOUT).await {
            Ok(_) => return Ok(()),
            Err(MqttError::SubscribeRejected { filter, reason }) => {
                return Err(ListenerError::InvalidFilter {
                    filter,
                    reason: format!("the broker refused it: {reason}"),
                })
            }
            Err(e @ MqttError::NotAuthorized { .. }) => return Err(ListenerError::Mqtt(e)),
            Err(MqttError::Closed) => return Err(ListenerError::Mqtt(MqttError::Closed)),
            Err(e) => {
                tracing::warn!(listener = %name, "subscribing failed, retrying: {e}");
                let _ = tokio::time::timeout(CONFIRM_TIMEOUT, state.changed()).await;
            }
        }
    }
}

fn validate(options: &ListenerOptions) -> Result<(), ListenerError> {
    let name_ok = !options.name.is_empty()
        && options.name.len() <= 128
        && options
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(ListenerError::InvalidName {
            name: options.name.clone(),
        });
    }
    if options.filters.is_empty() {
        return Err(ListenerError::NoFilter);
    }
    for f in &options.filters {
        topic::validate_filter(f).map_err(|e| ListenerError::InvalidFilter {
            filter: f.clone(),
            reason: e.to_string(),
        })?;
    }
    if let Some(g) = &options.share_group {
        let ok = !g.is_empty() && !g.contains(['/', '+', '#']);
        if !ok {
            return Err(ListenerError::InvalidFilter {
                filter: format!("$share/{g}/…"),
                reason: "a share group is one non-empty level without wildcards".into(),
            });
        }
    }
    Ok(())
}

/// Checks that the broker delivers through a shared subscription before a
/// listener relies on one: a private connection subscribes to
/// `$share/{group}/{prefix}/_ping/share-probe-{token}` (no other member of
/// the group has that filter) and publishes one message there. A broker
/// without shared subscriptions may refuse the filter (an error at once)
/// or, like RabbitMQ 3.10, accept it and never deliver: that is reported
/// here, once, instead of a listener that silently receives nothing. A
/// connection problem during the probe is left to the listener's own
/// connection, which retries.
async fn probe_shared_subscriptions(
    mut connect: ConnectOptions,
    prefix: &str,
    group: &str,
) -> Result<(), ListenerError> {
    let broker = connect
        .brokers
        .first()
        .map(|b| b.display.clone())
        .unwrap_or_default();
    connect.client_id = crate::mqtt::default_client_id("share-probe");
    connect.clean_session = true;
    connect.manual_acks = false;
    connect.retry_initial = false;
    connect.will = None;
    let mut conn = match Connection::connect(connect).await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!("shared subscription probe skipped: {e}");
            return Ok(());
        }
    };
    let token = uuid::Uuid::now_v7().simple().to_string();
    let probe_topic = format!(
        "{}/_ping/share-probe-{token}",
        topic::sanitize_prefix(prefix)
    );
    let filter = format!("$share/{group}/{probe_topic}");
    let outcome = async {
        conn.subscribe(&[(filter, Qos::AtLeastOnce)], CONFIRM_TIMEOUT)
            .await?;
        conn.publish_confirmed(
            Publish::new(&probe_topic, b"probe".to_vec(), Qos::AtLeastOnce, false),
            CONFIRM_TIMEOUT,
        )
        .await?;
        let deadline = tokio::time::Instant::now() + SHARE_PROBE_WAIT;
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, conn.recv()).await {
            if m.topic == probe_topic {
                return Ok(true);
            }
        }
        Ok::<bool, MqttError>(false)
    }
    .await;
    conn.disconnect().await;
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(ListenerError::SharedSubscriptionsUnsupported {
            broker,
            group: group.to_string(),
            secs: SHARE_PROBE_WAIT.as_secs(),
        }),
        Err(e @ (MqttError::SubscribeRejected { .. } | MqttError::NotAuthorized { .. })) => {
            Err(e.into())
        }
        Err(e) => {
            tracing::warn!("shared subscription probe inconclusive: {e}");
            Ok(())
        }
    }
}

/// Most cleared record ids remembered (see `Shared::cleared`).
const CLEARED_IDS: usize = 10_000;

/// A bounded set of ids, the oldest forgotten first.
#[derive(Default)]
struct ClearedIds {
    order: std::collections::VecDeque<String>,
    ids: std::collections::HashSet<String>,
}

impl ClearedIds {
    fn insert(&mut self, id: &str) {
        if self.ids.insert(id.to_string()) {
            self.order.push_back(id.to_string());
            while self.order.len() > CLEARED_IDS {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn remove(&mut self, id: &str) {
        if self.ids.remove(id) {
            self.order.retain(|o| o != id);
        }
    }
}

impl Runtime {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A poisoned lock only means another task panicked mid-update of
        // counters; the data is still usable.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a payload's signature when a trust directory is set.
    fn verdict(&self, payload: &[u8]) -> Option<Verdict> {
        self.trust.as_ref().map(|t| t.verify(payload))
    }

    /// Why the handler must not run on a message, under policy `require`.
    fn refusal(&self, verdict: &Option<Verdict>) -> Option<String> {
        if self.options.signature_policy != SignaturePolicy::Require {
            return None;
        }
        match verdict {
            Some(Verdict::Valid { .. }) | None => None,
            Some(Verdict::Unsigned) => {
                Some("unsigned message: this listener requires signed messages".into())
            }
            Some(v @ Verdict::Invalid { .. }) => Some(v.describe()),
        }
    }

    fn trouble(&self, error: String) {
        let mut s = self.lock();
        s.last_error = Some(one_line(&error));
        s.last_trouble = Some(Utc::now());
    }

    /// Up, or degraded while trouble is recent (within one interval).
    fn current_state(&self) -> HealthState {
        let s = self.lock();
        let window = chrono::Duration::from_std(self.interval)
            .unwrap_or_else(|_| chrono::Duration::seconds(10));
        match s.last_trouble {
            _ if s.disconnected => HealthState::Degraded,
            Some(t) if Utc::now() - t < window => HealthState::Degraded,
            _ => HealthState::Up,
        }
    }

    fn report(&self, state: HealthState) -> HealthReport {
        let s = self.lock();
        let mut r = HealthReport::new(&self.name, self.started, self.interval.as_secs());
        r.state = state;
        r.last_seen = Utc::now();
        r.subscriptions = self.subscriptions.clone();
        r.counters = s.counters;
        r.last_error = s.last_error.clone();
        // Back-pressure, for operators: what waits here, and how far
        // behind the bus the handler is.
        r.extra.insert("backlog".into(), s.backlog.into());
        if let Some(lag) = s.lag_s {
            r.extra
                .insert("lag_s".into(), ((lag * 10.0).round() / 10.0).into());
        }
        r
    }

    /// Publishes the health report without waiting for the broker.
    fn publish_health(&self, state: HealthState) {
        let report = self.report(state);
        let publisher = self.publisher.clone();
        let topic = topic::health_topic(&self.prefix, &self.name);
        tokio::spawn(async move {
            let _ = publisher
                .publish(Publish::new(topic, report.to_vec(), Qos::AtLeastOnce, true))
                .await;
        });
    }

    /// Adds our name to the roster when it is missing from the last list
    /// received (or when none arrived).
    fn ensure_on_roster(&self) {
        let list = {
            let s = self.lock();
            let mut list = s.roster.clone().unwrap_or_default();
            if list.contains(&self.name) {
                return;
            }
            list.push(self.name.clone());
            list.sort();
            list.dedup();
            list
        };
        let payload = serde_json::to_vec(&list).unwrap_or_default();
        let publisher = self.publisher.clone();
        let topic = topic::roster_topic(&self.prefix);
        tokio::spawn(async move {
            let _ = publisher
                .publish(Publish::new(topic, payload, Qos::AtLeastOnce, true))
                .await;
        });
    }

    /// Publishes the retained index of our open failure records (a JSON
    /// array of ids on `{prefix}/_failed/{name}`).
    async fn publish_index(&self) {
        let ids: Vec<String> = self.lock().records.keys().cloned().collect();
        let payload = serde_json::to_vec(&ids).unwrap_or_default();
        let _ = self
            .publisher
            .publish(Publish::new(
                topic::failed_index_topic(&self.prefix, &self.name),
                payload,
                Qos::AtLeastOnce,
                true,
            ))
            .await;
    }

    /// Our index came back (at start, retained): read each record it names
    /// that we do not hold by its exact topic, since the broker may not
    /// deliver them to our wildcard subscription.
    fn read_indexed_records(&self, payload: &[u8]) {
        let Ok(ids) = serde_json::from_slice::<Vec<String>>(payload) else {
            return;
        };
        let filters: Vec<(String, Qos)> = {
            let s = self.lock();
            ids.iter()
                .filter(|id| !s.records.contains_key(*id))
                .map(|id| {
                    (
                        topic::failed_topic(&self.prefix, &self.name, id),
                        Qos::AtLeastOnce,
                    )
                })
                .collect()
        };
        if filters.is_empty() {
            return;
        }
        let publisher = self.publisher.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            for chunk in filters.chunks(100) {
                if let Err(e) = publisher.subscribe(chunk, CONFIRM_TIMEOUT).await {
                    tracing::warn!(listener = %name, "reading indexed failure records: {e}");
                }
            }
        });
    }

    /// Handles control topics at once; returns work for the worker.
    async fn route(&self, message: Message) -> Option<Job> {
        if topic::failed_index_listener(&self.prefix, &message.topic).as_deref() == Some(&self.name)
        {
            self.read_indexed_records(&message.payload);
            let _ = self.publisher.ack(&message).await;
            return None;
        }
        match topic::classify(&self.prefix, &message.topic) {
            Some(Reserved::Ping) => {
                self.publish_health(self.current_state());
                let records: Vec<FailureRecord> = self.lock().records.values().cloned().collect();
                for r in records {
                    let t = topic::failed_topic(&self.prefix, &self.name, &r.id);
                    let _ = self
                        .publisher
                        .publish(Publish::new(t, r.to_vec(), Qos::AtLeastOnce, true))
                        .await;
                }
                let _ = self.publisher.ack(&message).await;
                None
            }
            Some(Reserved::Roster) => {
                if let Ok(list) = serde_json::from_slice::<Vec<String>>(&message.payload) {
                    self.lock().roster = Some(list);
                } else if message.payload.is_empty() {
                    self.lock().roster = Some(Vec::new());
                }
                let _ = self.publisher.ack(&message).await;
                None
            }
            Some(Reserved::Failed { listener, id }) if listener == self.name => {
                let mut stale_copy = false;
                {
                    let mut s = self.lock();
                    if message.payload.is_empty() {
                        if s.records.remove(&id).is_some() {
                            s.index_stale = true;
                        }
                        s.cleared.insert(&id);
                    } else if s.cleared.contains(&id) && !s.records.contains_key(&id) {
                        stale_copy = true;
                    } else if let Ok(record) = FailureRecord::from_slice(&message.payload) {
                        s.records.insert(id.clone(), record);
                    }
                }
                if stale_copy {
                    tracing::info!(listener = %self.name, id = %id, "an old copy of a cleared failure record came back; clearing it again");
                    let _ = self
                        .publisher
                        .publish(Publish::new(
                            topic::failed_topic(&self.prefix, &self.name, &id),
                            Vec::new(),
                            Qos::AtLeastOnce,
                            true,
                        ))
                        .await;
                }
                let _ = self.publisher.ack(&message).await;
                None
            }
            Some(Reserved::Replay { listener }) if listener == self.name => {
                let _ = self.publisher.ack(&message).await;
                match ReplayRequest::from_slice(&message.payload) {
                    Ok(request) => Some(Job::Replay(request)),
                    Err(e) => {
                        self.audit_warning(
                            &format!("{}: ignored a replay request: {e}", self.name),
                            serde_json::json!({}),
                        );
                        None
                    }
                }
            }
            Some(_) => {
                // Another namespace matched a broad filter: not our work.
                let _ = self.publisher.ack(&message).await;
                None
            }
            None => Some(Job::Message(message)),
        }
    }

    fn audit_warning(&self, summary: &str, body: serde_json::Value) {
        let built = Envelope::builder(topic::audit_topic(&self.prefix), summary)
            .severity(Severity::Warning)
            .bridge("listener")
            .agent(self.name.clone())
            .body(body)
            .build();
        if let Ok(envelope) = built {
            let publisher = self.publisher.clone();
            let topic = topic::audit_topic(&self.prefix);
            tokio::spawn(async move {
                let _ = publisher
                    .publish(Publish::new(
                        topic,
                        envelope.to_vec(),
                        Qos::AtLeastOnce,
                        false,
                    ))
                    .await;
            });
        }
    }

    /// Publishes a record, retained, and waits until the broker has it,
    /// retrying until it does (the original is not acknowledged before).
    async fn store_record(
        &self,
        record: &FailureRecord,
        stop: &std::sync::atomic::AtomicBool,
    ) -> bool {
        let t = topic::failed_topic(&self.prefix, &self.name, &record.id);
        // Our own new record for this id is not an old copy (it may come
        // back through our subscription before the confirmation).
        self.lock().cleared.remove(&record.id);
        let mut attempt = 0;
        loop {
            match self
                .publisher
                .publish_confirmed(
                    Publish::new(t.clone(), record.to_vec(), Qos::AtLeastOnce, true),
                    CONFIRM_TIMEOUT,
                )
                .await
            {
                Ok(()) => {
                    self.lock()
                        .records
                        .insert(record.id.clone(), record.clone());
                    return true;
                }
                Err(e) => {
                    tracing::warn!(listener = %self.name, "failure record not confirmed yet: {e}");
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return false;
                    }
                    attempt += 1;
                    tokio::time::sleep(crate::mqtt::backoff(attempt)).await;
                }
            }
        }
    }

    /// A message failed for good: note the trouble, write its first
    /// failure record and count it. False when the record could not be
    /// stored (stopping): the message must then stay unacknowledged.
    async fn record_failure(
        &self,
        id: &str,
        topic: &str,
        payload: &[u8],
        error: &str,
        stop: &std::sync::atomic::AtomicBool,
    ) -> bool {
        self.trouble(format!("{id}: {error}"));
        let mut record = FailureRecord::new(&self.name, id, topic, payload, error, Utc::now());
        keep_signed_content(&mut record, payload);
        if !self.store_record(&record, stop).await {
            return false;
        }
        // A new record: indexed before the original is acknowledged, so
        // that a listener killed right after still lists it.
        self.publish_index().await;
        self.lock().counters.failed += 1;
        true
    }

    async fn clear_record(&self, id: &str) -> bool {
        let t = topic::failed_topic(&self.prefix, &self.name, id);
        let ok = self
            .publisher
            .publish_confirmed(
                Publish::new(t, Bytes::new(), Qos::AtLeastOnce, true),
                CONFIRM_TIMEOUT,
            )
            .await
            .is_ok();
        if ok && self.lock().records.remove(id).is_some() {
            self.publish_index().await;
        }
        ok
    }

    async fn reply(
        &self,
        message_topic: &str,
        response_topic: Option<String>,
        correlation: Option<Bytes>,
        reply: Bytes,
    ) {
        let Some(to) = response_topic else { return };
        if topic::validate_topic_name(&to).is_err() {
            tracing::warn!(listener = %self.name, "not replying to an invalid reply topic {to:?} (request on {message_topic})");
            return;
        }
        let mut p = Publish::new(to, reply, Qos::AtLeastOnce, false);
        p.correlation = correlation;
        let _ = self.publisher.publish(p).await;
    }
}

/// A record embeds an envelope as parsed, and a replay re-serialises it.
/// For a signed message whose canonical form would change on that trip (a
/// foreign producer's time with microseconds, a `"warn"` severity, an
/// explicit `null`), the record keeps the exact payload text instead, so
/// that the signature still verifies after a replay.
fn keep_signed_content(record: &mut FailureRecord, payload: &[u8]) {
    let Ok(serde_json::Value::Object(original)) = serde_json::from_slice(payload) else {
        return;
    };
    if !original.contains_key(crate::sign::SIG_FIELD) || record.envelope.is_none() {
        return;
    }
    let stable = record
        .message_bytes()
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|again| {
            crate::sign::canonical_json(&again)
                == crate::sign::canonical_json(&serde_json::Value::Object(original.clone()))
        });
    if !stable {
        if let Ok(text) = std::str::from_utf8(payload) {
            record.envelope = None;
            record.payload = Some(text.to_string());
            record.payload_base64 = Some(false);
        }
    }
}

/// Runs the handler up to `tries` times with capped exponential backoff.
async fn run_handler<H, Fut>(
    handler: &H,
    runtime: &Runtime,
    base: Delivery,
    tries: u32,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Option<Bytes>, String>
where
    H: Fn(Delivery) -> Fut,
    Fut: Future<Output = HandlerResult>,
{
    let mut last = String::new();
    for attempt in 1..=tries.max(1) {
        let mut d = base.clone();
        d.attempt = attempt;
        match handler(d).await {
            Ok(reply) => return Ok(reply),
            Err(e) => {
                last = one_line(&e.message);
                tracing::debug!(listener = %runtime.name, id = %base.id, attempt, "handler failed: {last}");
                if !e.retry {
                    break;
                }
                if attempt < tries && !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let wait = runtime
                        .options
                        .retry_backoff
                        .saturating_mul(1 << (attempt - 1).min(16))
                        .min(RETRY_BACKOFF_MAX);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    Err(last)
}

async fn worker<H, Fut>(
    runtime: Arc<Runtime>,
    handler: H,
    mut jobs: mpsc::Receiver<Job>,
    seen: SeenSet,
    stop: Arc<std::sync::atomic::AtomicBool>,
) where
    H: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    let debounce = runtime.options.debounce;
    let concurrency = if debounce.is_some() {
        1
    } else {
        runtime.options.concurrency.max(1)
    };
    let handler = Arc::new(handler);
    let seen = Arc::new(Mutex::new(seen));
    let mut burst: Vec<Message> = Vec::new();
    // With concurrency above 1: the messages being handled at once.
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        let job = match debounce {
            Some(quiet) if !burst.is_empty() => {
                match tokio::time::timeout(quiet, jobs.recv()).await {
                    Ok(job) => job,
                    Err(_) => {
                        handle_burst(
                            &runtime,
                            &*handler,
                            &seen,
                            std::mem::take(&mut burst),
                            &stop,
                        )
                        .await;
                        continue;
                    }
                }
            }
            _ => jobs.recv().await,
        };
        let Some(job) = job else { break };
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        match job {
            Job::Message(message) if debounce.is_some() => burst.push(message),
            Job::Message(message) if concurrency > 1 => {
                while in_flight.len() >= concurrency {
                    in_flight.join_next().await;
                }
                let (runtime, handler, seen, stop) =
                    (runtime.clone(), handler.clone(), seen.clone(), stop.clone());
                in_flight.spawn(async move {
                    handle_message(&runtime, &*handler, &seen, message, &stop).await
                });
            }
            Job::Message(message) => {
                handle_message(&runtime, &*handler, &seen, message, &stop).await
            }
            Job::Replay(request) => {
                while in_flight.join_next().await.is_some() {}
                if !burst.is_empty() {
                    handle_burst(
                        &runtime,
                        &*handler,
                        &seen,
                        std::mem::take(&mut burst),
                        &stop,
                    )
                    .await;
                }
                replay(&runtime, &*handler, request, &stop).await;
            }
        }
    }
    // Stopping: the messages in hand are finished.
    while in_flight.join_next().await.is_some() {}
}

/// The de-duplication set, even if a handler task panicked holding it.
fn lock_seen(seen: &Mutex<SeenSet>) -> MutexGuard<'_, SeenSet> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

/// Debounced work: one handler run for a burst of messages, on the last.
async fn handle_burst<H, Fut>(
    runtime: &Runtime,
    handler: &H,
    seen: &Mutex<SeenSet>,
    burst: Vec<Message>,
    stop: &std::sync::atomic::AtomicBool,
) where
    H: Fn(Delivery) -> Fut,
    Fut: Future<Output = HandlerResult>,
{
    let mut fresh = Vec::new();
    for message in burst {
        runtime.lock().counters.received += 1;
        let decoded = Payload::decode(&message.payload);
        let id = decoded.envelope().map(|e| e.id.to_string());
        let duplicate = id.as_ref().is_some_and(|id| lock_seen(seen).contains(id));
        match id {
            Some(_) if duplicate => {
                runtime.lock().counters.duplicates += 1;
                let _ = runtime.publisher.ack(&message).await;
            }
            id => fresh.push((message, id)),
        }
    }
    let Some((last, last_id)) = fresh.last() else {
        return;
    };
    let id = last_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let signature = runtime.verdict(&last.payload);
    let refused = runtime.refusal(&signature);
    let delivery = Delivery {
        topic: last.topic.clone(),
        payload: last.payload.clone(),
        decoded: Arc::new(Payload::decode(&last.payload)),
        id: id.clone(),
        replay: false,
        attempt: 1,
        burst: fresh.len() as u32,
        signature,
    };
    let outcome = match refused {
        Some(reason) => Err(reason),
        None => run_handler(handler, runtime, delivery, runtime.options.retries, stop).await,
    };
    match outcome {
        Ok(_) => runtime.lock().counters.processed += fresh.len() as u64,
        Err(error) => {
            if !runtime
                .record_failure(&id, &last.topic, &last.payload, &error, stop)
                .await
            {
                return;
            }
            runtime.lock().counters.processed += fresh.len() as u64 - 1;
        }
    }
    for (message, id) in &fresh {
        if let Some(id) = id {
            let inserted = lock_seen(seen).insert(id);
            if let Err(e) = inserted {
                runtime.trouble(format!("cannot persist the de-duplication state: {e}"));
            }
        }
        let _ = runtime.publisher.ack(message).await;
    }
}

async fn handle_message<H, Fut>(
    runtime: &Runtime,
    handler: &H,
    seen: &Mutex<SeenSet>,
    message: Message,
    stop: &std::sync::atomic::AtomicBool,
) where
    H: Fn(Delivery) -> Fut,
    Fut: Future<Output = HandlerResult>,
{
    runtime.lock().counters.received += 1;
    let decoded = Arc::new(Payload::decode(&message.payload));
    let envelope_id = decoded.envelope().map(|e| e.id.to_string());
    if let Some(e) = decoded.envelope() {
        let lag = (Utc::now() - e.time).num_milliseconds().max(0) as f64 / 1000.0;
        runtime.lock().lag_s = Some(lag);
        if topic::dots_rewritten(&e.topic, &message.topic)
            && !DOTS_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                listener = %runtime.name,
                "broker turned '.' in topic levels into '/': {} arrived as {} (RabbitMQ's MQTT plugin does this); filters with + may not match such topics: avoid '.' in topic levels on this broker",
                e.topic,
                message.topic
            );
        }
    }
    if let Some(id) = &envelope_id {
        let duplicate = lock_seen(seen).contains(id);
        if duplicate {
            runtime.lock().counters.duplicates += 1;
            let _ = runtime.publisher.ack(&message).await;
            return;
        }
    }
    let id = envelope_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let reply_to = message
        .response_topic
        .clone()
        .or_else(|| decoded.envelope().and_then(|e| e.reply_to.clone()));
    let correlation = message.correlation.clone().or_else(|| {
        // MQTT 5 requesters correlate by the request id.
        envelope_id
            .as_ref()
            .map(|i| Bytes::from(i.clone().into_bytes()))
    });
    let signature = runtime.verdict(&message.payload);
    let refused = runtime.refusal(&signature);
    let delivery = Delivery {
        topic: message.topic.clone(),
        payload: message.payload.clone(),
        decoded,
        id: id.clone(),
        replay: false,
        attempt: 1,
        burst: 1,
        signature,
    };
    let outcome = match refused {
        Some(reason) => Err(reason),
        None => run_handler(handler, runtime, delivery, runtime.options.retries, stop).await,
    };
    match outcome {
        Ok(reply) => {
            runtime.lock().counters.processed += 1;
            if let Some(reply) = reply {
                runtime
                    .reply(&message.topic, reply_to, correlation, reply)
                    .await;
            }
        }
        Err(error) => {
            if !runtime
                .record_failure(&id, &message.topic, &message.payload, &error, stop)
                .await
            {
                // Not stored and stopping: leave the message unacknowledged
                // so that the broker hands it over again next time.
                return;
            }
            runtime.publish_health(runtime.current_state());
        }
    }
    if envelope_id.is_some() {
        let inserted = lock_seen(seen).insert(&id);
        if let Err(e) = inserted {
            runtime.trouble(format!("cannot persist the de-duplication state: {e}"));
        }
    }
    let _ = runtime.publisher.ack(&message).await;
}

async fn replay<H, Fut>(
    runtime: &Runtime,
    handler: &H,
    request: ReplayRequest,
    stop: &std::sync::atomic::AtomicBool,
) where
    H: Fn(Delivery) -> Fut,
    Fut: Future<Output = HandlerResult>,
{
    let ids: Vec<String> = if request.all {
        runtime.lock().records.keys().cloned().collect()
    } else {
        request.ids.clone()
    };
    let mut results = Vec::new();
    for id in ids {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let record = runtime.lock().records.get(&id).cloned();
        let Some(mut record) = record else {
            results.push(ReplayResult {
                id: id.clone(),
                outcome: Outcome::Unknown,
                error: None,
                attempts: None,
            });
            runtime.audit_warning(
                &format!("{}: replay requested for unknown id {id}", runtime.name),
                serde_json::json!({"action": "replay", "listener": runtime.name, "ids": [id], "outcome": "unknown"}),
            );
            continue;
        };
        if record.attempts >= runtime.options.max_attempts {
            results.push(ReplayResult {
                id,
                outcome: Outcome::Capped,
                error: None,
                attempts: Some(record.attempts),
            });
            continue;
        }
        let bytes = match record.message_bytes() {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                results.push(ReplayResult {
                    id,
                    outcome: Outcome::Failed,
                    error: Some(e.to_string()),
                    attempts: Some(record.attempts),
                });
                continue;
            }
        };
        runtime.lock().counters.replayed += 1;
        let signature = runtime.verdict(&bytes);
        let refused = runtime.refusal(&signature);
        let delivery = Delivery {
            topic: record.topic.clone(),
            decoded: Arc::new(Payload::decode(&bytes)),
            payload: bytes,
            id: id.clone(),
            replay: true,
            attempt: record.attempts + 1,
            burst: 1,
            signature,
        };
        let outcome = match refused {
            Some(reason) => Err(reason),
            None => run_handler(handler, runtime, delivery, 1, stop).await,
        };
        match outcome {
            Ok(_) => {
                runtime.clear_record(&id).await;
                results.push(ReplayResult {
                    id,
                    outcome: Outcome::Replayed,
                    error: None,
                    attempts: None,
                });
            }
            Err(error) => {
                runtime.trouble(format!("{id}: {error}"));
                record.attempts += 1;
                record.error = one_line(&error);
                record.last_failed = Utc::now();
                runtime.lock().counters.failed += 1;
                runtime.store_record(&record, stop).await;
                results.push(ReplayResult {
                    id,
                    outcome: Outcome::Failed,
                    error: Some(record.error.clone()),
                    attempts: Some(record.attempts),
                });
            }
        }
    }
    runtime.publish_health(runtime.current_state());
    if let Some(to) = request.reply_to {
        if topic::validate_topic_name(&to).is_ok() {
            let outcome = ReplayOutcome {
                listener: runtime.name.clone(),
                results,
            };
            let payload = serde_json::to_vec(&outcome).unwrap_or_default();
            let _ = runtime
                .publisher
                .publish(Publish::new(to, payload, Qos::AtLeastOnce, false))
                .await;
        }
    }
}

/// A future that resolves on SIGINT or SIGTERM: the graceful stop of a
/// listener daemon.
pub async fn shutdown_signal() {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Most instances of one share-group listener sharing a state directory
/// that get a stable client id; more fall back to a random one.
const INSTANCE_SLOTS: u32 = 64;

/// The instance slot of a share-group member: the first
/// `instance-N.lock` in its state directory that no running instance
/// holds locked (the lock lives as long as the returned value).
///
/// A member's client id comes from its slot, so a member that restarts
/// (even after SIGKILL) resumes its own persistent session, with what was
/// in flight to it and what the broker queued for it meanwhile; with a new
/// id at every start, as before, those stayed in an abandoned session on
/// the broker (mosquitto) and the group never got them. Members running at
/// once hold different slots, hence different ids.
fn instance_slot(
    dir: &std::path::Path,
) -> std::io::Result<Option<(u32, nix::fcntl::Flock<std::fs::File>)>> {
    use std::os::unix::fs::OpenOptionsExt;
    crate::spool::create_private_dir(dir)?;
    for slot in 0..INSTANCE_SLOTS {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(format!("instance-{slot}.lock")))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some((slot, lock))),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => continue,
            Err((_, e)) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// The client id of share-group member `slot` of listener `name` with
/// state directory `dir`: the directory's hash tells apart members on one
/// host with their own directories.
fn member_client_id(name: &str, dir: &std::path::Path, slot: u32) -> String {
    // The same directory however it was named (relative, through links).
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let digest = ring::digest::digest(&ring::digest::SHA256, dir.as_os_str().as_encoded_bytes());
    let hash: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sb-{name}-{}-{hash}-{slot}", crate::mqtt::hostname())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_slots_are_distinct_while_held_and_reused_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("listeners/sharer");
        let (a, lock_a) = instance_slot(&state).expect("slot").expect("free");
        let (b, _lock_b) = instance_slot(&state).expect("slot").expect("free");
        assert_eq!((a, b), (0, 1));
        drop(lock_a);
        let (again, _lock) = instance_slot(&state).expect("slot").expect("free");
        assert_eq!(again, 0, "a restarted instance takes the freed slot");

        let id = member_client_id("sharer", &state, 0);
        assert_eq!(id, member_client_id("sharer", &state.join("."), 0));
        assert_ne!(id, member_client_id("sharer", &state, 1));
        assert_ne!(id, member_client_id("sharer", dir.path(), 0));
        assert!(id.starts_with("sb-sharer-"), "{id}");
    }
}
