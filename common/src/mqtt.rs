//! One MQTT connection, as every signalbox program needs it.
//!
//! rumqttc does the protocol; this module adds what it leaves to its users:
//! - broker URLs (`mqtt://`, `mqtts://` with rustls and an optional CA file,
//!   credentials in the URL or the config) and failover between several;
//! - reconnects with capped exponential backoff and jitter (rumqttc retries
//!   at once, which spins at 100 % CPU while a broker is down);
//! - publish-and-confirm: every QoS 1 publish gets a [`Confirmation`] that
//!   resolves on its PUBACK. Unconfirmed messages are kept here, not in
//!   rumqttc, and are sent again after a reconnect — rumqttc drops its own
//!   pending queue when the broker lost the session;
//! - subscriptions remembered and renewed after a reconnect that lost them;
//! - MQTT 3.1.1 and 5 behind one API.
//!
//! One task (the *driver*) owns the rumqttc `EventLoop` and is the only one
//! that talks to the rumqttc client, so requests and the packet ids the event
//! loop gives them stay in order. The driver never blocks its poll loop on a
//! caller: incoming messages wait in a bounded channel while the driver still
//! serves publish requests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5 as r5;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{mask_url_password, Config};

/// Largest payload accepted or sent (MQTT allows 256 MiB; a bus message
/// above this is a mistake, and the cap bounds memory per message).
pub const MAX_PACKET_SIZE: usize = 64 * 1024 * 1024;
/// Largest packet accepted from a broker: the MQTT maximum. A smaller limit
/// would not stop a broker from sending a larger retained or queued
/// message; it would only make the connection fail on it again and again.
const MAX_INCOMING_PACKET_SIZE: usize = 268_435_455;
/// A connection that lasted this long was healthy: the reconnect backoff
/// starts again from its minimum after it breaks.
const STABLE_CONNECTION: Duration = Duration::from_secs(5);
/// A connection that broke sooner than this after its CONNACK, with a
/// publish in flight, may have been closed because of that publish.
const QUICK_DROP: Duration = Duration::from_secs(2);
/// A publish in flight at this many quick drops in a row is given up: the
/// broker closes the connection whenever it arrives (too large for it, too
/// many topic levels, not allowed), and resending it for ever would stall
/// everything behind it.
const POISON_DROPS: u8 = 3;
/// Requests handed to rumqttc but not yet written: bounded so that a backlog
/// (e.g. after an outage) stays here, in order, instead of in its channel.
const RUMQTT_CHANNEL_CAP: usize = 512;
/// Publishes accepted from callers but not yet confirmed before `publish`
/// starts to wait: bounds memory when the broker is slow or away.
const MAX_UNCONFIRMED: usize = 100_000;
/// Messages buffered between the driver and the consumer.
const INCOMING_CAP: usize = 4096;
/// The re-send window keeps at most this many confirmed publishes...
const RESEND_WINDOW_MAX_MESSAGES: usize = 100_000;
/// ...and at most this many payload bytes, whatever its duration says, so
/// a fast stream cannot make it grow without bound.
const RESEND_WINDOW_MAX_BYTES: usize = 64 * 1024 * 1024;
/// The refusal reason that stands for "the broker's ACL said no": turned
/// into [`MqttError::NotAuthorized`].
const NOT_AUTHORIZED: &str = "not authorized";
/// First reconnect delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Reconnect delays never exceed this, so a broker that comes back is in
/// use again within about two seconds.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Quality of service of a publish or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Qos {
    /// Fire and forget.
    AtMostOnce,
    /// Acknowledged by the broker (PUBACK); may arrive twice.
    AtLeastOnce,
    /// Exactly once (two-step handshake).
    ExactlyOnce,
}

impl Qos {
    /// From the wire number 0, 1 or 2.
    pub fn from_u8(n: u8) -> Option<Qos> {
        match n {
            0 => Some(Qos::AtMostOnce),
            1 => Some(Qos::AtLeastOnce),
            2 => Some(Qos::ExactlyOnce),
            _ => None,
        }
    }
    /// The wire number.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
    fn v4(self) -> rumqttc::QoS {
        match self {
            Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
            Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
            Qos::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
        }
    }
    fn v5(self) -> r5::mqttbytes::QoS {
        match self {
            Qos::AtMostOnce => r5::mqttbytes::QoS::AtMostOnce,
            Qos::AtLeastOnce => r5::mqttbytes::QoS::AtLeastOnce,
            Qos::ExactlyOnce => r5::mqttbytes::QoS::ExactlyOnce,
        }
    }
}

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1 (every broker).
    V311,
    /// MQTT 5 (reason codes, response topics, shared subscriptions).
    V5,
}

/// Errors of a connection; the messages name the broker and what to check.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MqttError {
    /// The broker URL cannot be parsed.
    #[error("invalid broker URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (password masked).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL's scheme is not one signalbox speaks.
    #[error("unsupported broker URL scheme {scheme:?} in {url:?}: use mqtt:// or mqtts://")]
    UnsupportedScheme {
        /// The URL as given (password masked).
        url: String,
        /// The scheme found.
        scheme: String,
    },
    /// The CA file for TLS cannot be read.
    #[error("cannot read CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The client certificate or its key cannot be used.
    #[error("cannot use client certificate {path}: {reason}")]
    ClientCert {
        /// The certificate or key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The broker's access control refused an operation (MQTT 5 reason
    /// code 0x87, or a refused subscription).
    #[error(
        "not authorized to {action} {topic}: the broker's ACL does not allow it for this user"
    )]
    NotAuthorized {
        /// What was refused: "publish to" or "subscribe to".
        action: &'static str,
        /// The topic or filter.
        topic: String,
    },
    /// No broker could be reached (network, TLS, timeout).
    #[error("cannot reach broker {broker}: {reason}")]
    Unreachable {
        /// The broker URL (password masked).
        broker: String,
        /// The underlying error.
        reason: String,
    },
    /// The broker answered but refused the connection.
    #[error("broker {broker} refused the connection: {reason}")]
    Refused {
        /// The broker URL (password masked).
        broker: String,
        /// The refusal reason (bad credentials, not authorized, …).
        reason: String,
    },
    /// A publish was not confirmed in time.
    #[error("broker did not confirm the publish to {topic} within {secs:.1} s")]
    NotConfirmed {
        /// The topic published to.
        topic: String,
        /// The time waited.
        secs: f64,
    },
    /// The broker rejected a publish (MQTT 5 reason code).
    #[error("broker rejected the publish to {topic}: {reason}")]
    PublishRejected {
        /// The topic published to.
        topic: String,
        /// The reason code given.
        reason: String,
    },
    /// The message cannot be one MQTT packet.
    #[error("message to {topic} of {size} bytes is larger than the {MAX_PACKET_SIZE} bytes one MQTT packet may hold")]
    TooLarge {
        /// The topic (cut to 200 bytes).
        topic: String,
        /// Payload bytes.
        size: usize,
    },
    /// The broker closed the connection every time this publish was sent.
    #[error("broker closed the connection each time the message to {topic} was sent ({drops} times): it is too large for the broker, has too many topic levels, or is not allowed")]
    DroppedByBroker {
        /// The topic (cut to 200 bytes).
        topic: String,
        /// Connections lost with it in flight.
        drops: u8,
    },
    /// The broker refused a subscription.
    #[error("broker refused the subscription to {filter}: {reason}")]
    SubscribeRejected {
        /// The filter.
        filter: String,
        /// The reason given (MQTT 3.1.1 only says "failure").
        reason: String,
    },
    /// The subscription was not acknowledged in time.
    #[error("broker did not acknowledge the subscription to {filter} within {secs:.1} s")]
    SubscribeTimeout {
        /// The filter.
        filter: String,
        /// The time waited.
        secs: f64,
    },
    /// The connection was closed by this side; nothing more can be sent.
    #[error("the connection is closed")]
    Closed,
}

/// A broker address parsed from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// The URL with its password masked, for messages.
    pub display: String,
    /// Host name or address.
    pub host: String,
    /// TCP port (1883 for mqtt, 8883 for mqtts by default).
    pub port: u16,
    /// TLS on (`mqtts://`).
    pub tls: bool,
    /// User name from the URL, if any.
    pub username: Option<String>,
    /// Password from the URL, if any.
    pub password: Option<String>,
}

impl BrokerUrl {
    /// Parses `mqtt://[user[:password]@]host[:port]` or `mqtts://…`.
    pub fn parse(raw: &str) -> Result<BrokerUrl, MqttError> {
        let display = mask_url_password(raw.trim());
        let invalid = |reason: &str| MqttError::InvalidUrl {
            url: display.clone(),
            reason: reason.to_string(),
        };
        if !raw.contains("://") {
            return Err(invalid(
                "no scheme; write it as mqtt://HOST:PORT or mqtts://HOST:PORT",
            ));
        }
        let url = url::Url::parse(raw.trim()).map_err(|e| invalid(&e.to_string()))?;
        let (tls, default_port) = match url.scheme() {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" => (true, 8883),
            other => {
                return Err(MqttError::UnsupportedScheme {
                    url: display,
                    scheme: other.to_string(),
                })
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !(url.path().is_empty() || url.path() == "/") {
            return Err(invalid("a broker URL has no path"));
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let username = Some(url.username()).filter(|u| !u.is_empty()).map(decode);
        let password = url.password().map(decode);
        Ok(BrokerUrl {
            display,
            host,
            port: url.port().unwrap_or(default_port),
            tls,
            username,
            password,
        })
    }
}

/// A Last Will: what the broker publishes when this client vanishes.
#[derive(Debug, Clone)]
pub struct Will {
    /// Topic of the will.
    pub topic: String,
    /// Payload of the will.
    pub payload: Bytes,
    /// QoS of the will.
    pub qos: Qos,
    /// Whether the will is retained (health reports are).
    pub retain: bool,
}

/// Everything needed to open a connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Brokers, tried in order; a lost connection moves to the next.
    pub brokers: Vec<BrokerUrl>,
    /// MQTT client id.
    pub client_id: String,
    /// Protocol version.
    pub protocol: Protocol,
    /// Keepalive interval.
    pub keepalive: Duration,
    /// Time allowed for one connection attempt.
    pub connect_timeout: Duration,
    /// Start a fresh session (true) or resume a persistent one (false).
    pub clean_session: bool,
    /// User name (a user in the URL wins).
    pub username: Option<String>,
    /// Password (a password in the URL wins).
    pub password: Option<String>,
    /// CA file (PEM) for TLS; the system's roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that ask for one.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
    /// Last Will.
    pub will: Option<Will>,
    /// Incoming QoS 1 messages are acknowledged only by [`Connection::ack`].
    pub manual_acks: bool,
    /// QoS 1 publishes in flight at once.
    pub inflight: u16,
    /// Keep retrying the first connection (daemons) instead of failing.
    pub retry_initial: bool,
    /// Publishes confirmed this recently before a connection was lost are
    /// sent again after the reconnect (zero: never). A broker killed before
    /// it saved its state loses messages it had already confirmed; the
    /// repeats carry the same message ids, and listeners drop them.
    pub resend_window: Duration,
}

impl ConnectOptions {
    /// Options from the effective configuration, with a client id made of
    /// `role`, the host name and the process id unless one is configured.
    pub fn from_config(config: &Config, role: &str) -> Result<ConnectOptions, MqttError> {
        let brokers = config
            .brokers
            .value
            .iter()
            .map(|b| BrokerUrl::parse(b))
            .collect::<Result<Vec<_>, _>>()?;
        let client_id = config
            .client_id
            .value
            .clone()
            .unwrap_or_else(|| default_client_id(role));
        Ok(ConnectOptions {
            brokers,
            client_id,
            protocol: if config.mqtt_version.value == 5 {
                Protocol::V5
            } else {
                Protocol::V311
            },
            keepalive: Duration::from_secs(config.keepalive.value),
            connect_timeout: Duration::from_secs(config.connect_timeout.value),
            clean_session: true,
            username: config.username.value.clone(),
            password: config.password.value.clone(),
            ca_file: config.ca_file.value.clone(),
            client_cert: config.client_cert.value.clone(),
            client_key: config.client_key.value.clone(),
            will: None,
            manual_acks: false,
            inflight: 100,
            retry_initial: false,
            resend_window: Duration::from_secs(config.resend_window.value),
        })
    }

    /// Options for one broker URL with defaults (tests, the demo).
    pub fn for_url(url: &str, client_id: &str) -> Result<ConnectOptions, MqttError> {
        Ok(ConnectOptions {
            brokers: vec![BrokerUrl::parse(url)?],
            client_id: client_id.to_string(),
            protocol: Protocol::V311,
            keepalive: Duration::from_secs(crate::config::DEFAULT_KEEPALIVE_S),
            connect_timeout: Duration::from_secs(crate::config::DEFAULT_CONNECT_TIMEOUT_S),
            clean_session: true,
            username: None,
            password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            will: None,
            manual_acks: false,
            inflight: 100,
            retry_initial: false,
            resend_window: Duration::from_secs(crate::config::DEFAULT_RESEND_WINDOW_S),
        })
    }
}

/// A topic for an error message: at most 200 bytes, cut at a character
/// boundary (a topic may be 65,535 bytes long).
fn short_topic(topic: &str) -> String {
    const MAX: usize = 200;
    if topic.len() <= MAX {
        return topic.to_string();
    }
    let mut end = MAX;
    while !topic.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &topic[..end], topic.len())
}

/// Refuses a publish that cannot be one MQTT packet (fixed header, topic
/// length, packet id and room for MQTT 5 properties on top of the topic
/// and payload).
fn check_size(publish: &Publish) -> Result<(), MqttError> {
    const OVERHEAD: usize = 5 + 2 + 2 + 16;
    if publish.payload.len() + publish.topic.len() + OVERHEAD > MAX_PACKET_SIZE {
        return Err(MqttError::TooLarge {
            topic: short_topic(&publish.topic),
            size: publish.payload.len(),
        });
    }
    Ok(())
}

/// A client id unique to this process: `{role}-{host}-{pid}` sanitised to the
/// characters every broker accepts, at most 64 bytes.
pub fn default_client_id(role: &str) -> String {
    let host = hostname();
    let raw = format!(
        "sb-{role}-{host}-{}-{:04x}",
        std::process::id(),
        fastrand::u16(..)
    );
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// This machine's host name, or `localhost` when it cannot be read.
pub fn hostname() -> String {
    crate::envelope::local_hostname()
        .unwrap_or("localhost")
        .to_string()
}

/// The state of a connection, for status lines and health reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// The first connection attempt is under way.
    Connecting,
    /// Connected to this broker (display URL).
    Connected {
        /// The broker in use.
        broker: String,
    },
    /// Lost; the next attempt comes after a backoff.
    Reconnecting {
        /// The broker that failed.
        broker: String,
        /// Consecutive failed attempts.
        attempt: u32,
        /// The last error, for the operator.
        error: String,
    },
    /// Closed by this side.
    Closed,
}

/// A message received from the broker.
#[derive(Debug, Clone)]
pub struct Message {
    /// Topic it was published to.
    pub topic: String,
    /// The payload bytes, untouched.
    pub payload: Bytes,
    /// The QoS it was delivered with.
    pub qos: Qos,
    /// Delivered from the broker's retained store (subscription time).
    pub retain: bool,
    /// Redelivery flag.
    pub dup: bool,
    /// MQTT 5 response topic (request/reply).
    pub response_topic: Option<String>,
    /// MQTT 5 correlation data (request/reply).
    pub correlation: Option<Bytes>,
    /// The packet to acknowledge, when manual acks are on.
    ack: Option<Arc<AckHandle>>,
}

/// What acknowledges one received message: the packet, and its place in
/// the order of receipt (acks must go out in that order: MQTT 3.1.1 §4.6;
/// rumqttd drops a client that acks out of order).
#[derive(Debug)]
struct AckHandle {
    /// Receipt order (assigned by the driver).
    seq: u64,
    /// The connection the message came on; acks for an older one are void
    /// (the broker redelivers those messages).
    epoch: u64,
    packet: AckPacket,
}

#[derive(Debug)]
enum AckPacket {
    V4(rumqttc::Publish),
    V5(r5::mqttbytes::v5::Publish),
}

/// A publish request with the optional MQTT 5 request/reply properties.
#[derive(Debug, Clone)]
pub struct Publish {
    /// Topic (validated by the caller).
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: Qos,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 response topic.
    pub response_topic: Option<String>,
    /// MQTT 5 correlation data.
    pub correlation: Option<Bytes>,
}

impl Publish {
    /// A plain publish.
    pub fn new(
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: Qos,
        retain: bool,
    ) -> Publish {
        Publish {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            response_topic: None,
            correlation: None,
        }
    }
}

/// Resolves when the broker confirmed a publish (PUBACK for QoS 1, written
/// to the socket for QoS 0).
#[derive(Debug)]
pub struct Confirmation {
    topic: String,
    rx: oneshot::Receiver<Result<(), MqttError>>,
}

impl Confirmation {
    /// Waits up to `timeout` for the confirmation.
    pub async fn wait(self, timeout: Duration) -> Result<(), MqttError> {
        match tokio::time::timeout(timeout, self.rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(MqttError::Closed),
            Err(_) => Err(MqttError::NotConfirmed {
                topic: self.topic,
                secs: timeout.as_secs_f64(),
            }),
        }
    }

    /// Non-blocking check: `None` while still pending.
    pub fn try_result(&mut self) -> Option<Result<(), MqttError>> {
        match self.rx.try_recv() {
            Ok(result) => Some(result),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(MqttError::Closed)),
        }
    }
}

/// Resolves a publish's [`Confirmation`].
type Waiter = oneshot::Sender<Result<(), MqttError>>;

enum Command {
    Publish(Publish, oneshot::Sender<Result<(), MqttError>>),
    /// Many publishes in one command (streaming); a waiter per publish
    /// only when the caller wants confirmations.
    PublishBatch(Vec<(Publish, Option<Waiter>)>),
    Subscribe(
        Vec<(String, Qos)>,
        oneshot::Sender<Result<Vec<Qos>, MqttError>>,
    ),
    Ack(Arc<AckHandle>),
    Disconnect(oneshot::Sender<()>),
}

/// A live connection. Cheap handles for publishing are made with
/// [`Connection::publisher`]; incoming messages are read with
/// [`Connection::recv`].
pub struct Connection {
    publisher: Publisher,
    incoming: mpsc::Receiver<Message>,
    state: watch::Receiver<ConnState>,
    driver: Option<tokio::task::JoinHandle<()>>,
}

/// A cloneable handle that publishes, subscribes and acknowledges through a
/// connection.
#[derive(Clone)]
pub struct Publisher {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<ConnState>,
}

impl Publisher {
    /// Queues a publish; the returned [`Confirmation`] resolves on PUBACK.
    /// Waits only when [`MAX_UNCONFIRMED`] messages are already pending.
    pub async fn publish(&self, publish: Publish) -> Result<Confirmation, MqttError> {
        check_size(&publish)?;
        let (tx, rx) = oneshot::channel();
        let topic = publish.topic.clone();
        self.commands
            .send(Command::Publish(publish, tx))
            .await
            .map_err(|_| MqttError::Closed)?;
        Ok(Confirmation { topic, rx })
    }

    /// Queues many publishes at once (one hand-over for the whole batch:
    /// what streaming publishers use). With `confirm`, one [`Confirmation`]
    /// per publish, in order; without, none (QoS 0 fire and forget).
    pub async fn publish_batch(
        &self,
        batch: Vec<Publish>,
        confirm: bool,
    ) -> Result<Vec<Confirmation>, MqttError> {
        let mut confirmations = Vec::new();
        let mut items = Vec::with_capacity(batch.len());
        for publish in &batch {
            check_size(publish)?;
        }
        for publish in batch {
            if confirm {
                let (tx, rx) = oneshot::channel();
                confirmations.push(Confirmation {
                    topic: publish.topic.clone(),
                    rx,
                });
                items.push((publish, Some(tx)));
            } else {
                items.push((publish, None));
            }
        }
        self.commands
            .send(Command::PublishBatch(items))
            .await
            .map_err(|_| MqttError::Closed)?;
        Ok(confirmations)
    }

    /// Publishes and waits up to `timeout` for the broker's confirmation.
    pub async fn publish_confirmed(
        &self,
        publish: Publish,
        timeout: Duration,
    ) -> Result<(), MqttError> {
        self.publish(publish).await?.wait(timeout).await
    }

    /// Subscribes and waits up to `timeout` for the SUBACK; returns the
    /// granted QoS per filter, or the first refusal. The subscription is
    /// renewed automatically after a reconnect that lost the session.
    pub async fn subscribe(
        &self,
        filters: &[(String, Qos)],
        timeout: Duration,
    ) -> Result<Vec<Qos>, MqttError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Subscribe(filters.to_vec(), tx))
            .await
            .map_err(|_| MqttError::Closed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(MqttError::Closed),
            Err(_) => Err(MqttError::SubscribeTimeout {
                filter: filters
                    .iter()
                    .map(|(f, _)| f.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                secs: timeout.as_secs_f64(),
            }),
        }
    }

    /// Acknowledges a message received with manual acks on. A message
    /// without an ack handle (QoS 0, or automatic acks) is ignored.
    pub async fn ack(&self, message: &Message) -> Result<(), MqttError> {
        if let Some(handle) = &message.ack {
            self.commands
                .send(Command::Ack(handle.clone()))
                .await
                .map_err(|_| MqttError::Closed)?;
        }
        Ok(())
    }

    /// The current connection state.
    pub fn state(&self) -> ConnState {
        self.state.borrow().clone()
    }
}

impl Connection {
    /// Connects and waits for the first CONNACK. With `retry_initial` off,
    /// a failure of the first attempt (on every broker listed) is returned
    /// as an error within the connect timeout; with it on, the connection
    /// keeps trying in the background and this returns at once.
    pub async fn connect(options: ConnectOptions) -> Result<Connection, MqttError> {
        if options.brokers.is_empty() {
            return Err(MqttError::InvalidUrl {
                url: String::new(),
                reason: "no broker URL given".into(),
            });
        }
        let ca = TlsFiles::read(&options)?;
        if options.brokers.iter().any(|b| b.tls) {
            // rustls needs a process-wide crypto provider before it builds
            // a client config (rumqttc builds one per connection); ring is
            // the one the workspace compiles in. Installing twice is a
            // harmless error.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (msg_tx, msg_rx) = mpsc::channel(INCOMING_CAP);
        let (state_tx, state_rx) = watch::channel(ConnState::Connecting);
        let (first_tx, first_rx) = oneshot::channel();
        let retry_initial = options.retry_initial;
        let driver = Driver::new(options, ca, cmd_rx, msg_tx, state_tx, first_tx);
        let handle = tokio::spawn(driver.run());
        if !retry_initial {
            match first_rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    handle.abort();
                    return Err(e);
                }
                Err(_) => return Err(MqttError::Closed),
            }
        }
        Ok(Connection {
            publisher: Publisher {
                commands: cmd_tx,
                state: state_rx.clone(),
            },
            incoming: msg_rx,
            state: state_rx,
            driver: Some(handle),
        })
    }

    /// A cloneable publishing handle.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Shorthand for [`Publisher::publish`].
    pub async fn publish(&self, publish: Publish) -> Result<Confirmation, MqttError> {
        self.publisher.publish(publish).await
    }

    /// Shorthand for [`Publisher::publish_confirmed`].
    pub async fn publish_confirmed(
        &self,
        publish: Publish,
        timeout: Duration,
    ) -> Result<(), MqttError> {
        self.publisher.publish_confirmed(publish, timeout).await
    }

    /// Shorthand for [`Publisher::subscribe`].
    pub async fn subscribe(
        &self,
        filters: &[(String, Qos)],
        timeout: Duration,
    ) -> Result<Vec<Qos>, MqttError> {
        self.publisher.subscribe(filters, timeout).await
    }

    /// Shorthand for [`Publisher::ack`].
    pub async fn ack(&self, message: &Message) -> Result<(), MqttError> {
        self.publisher.ack(message).await
    }

    /// The next incoming message; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Message> {
        self.incoming.recv().await
    }

    /// The next incoming message if one is already buffered.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.incoming.try_recv().ok()
    }

    /// A receiver of state changes (for status lines).
    pub fn state_watch(&self) -> watch::Receiver<ConnState> {
        self.state.clone()
    }

    /// Splits into the incoming stream and a publishing handle, for
    /// programs that read and publish from different tasks.
    pub fn split(mut self) -> (mpsc::Receiver<Message>, Publisher) {
        self.driver = None;
        let (_, placeholder) = mpsc::channel(1);
        let incoming = std::mem::replace(&mut self.incoming, placeholder);
        (incoming, self.publisher.clone())
    }

    /// Sends DISCONNECT (so no Last Will is published) after everything
    /// already queued was written, and waits (at most 10 s) for the driver
    /// to finish. QoS 1 publishes not yet confirmed are abandoned: wait for
    /// their confirmations first.
    pub async fn disconnect(mut self) {
        let (tx, rx) = oneshot::channel();
        if self
            .publisher
            .commands
            .send(Command::Disconnect(tx))
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
        if let Some(handle) = self.driver.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), handle).await;
        }
    }
}

/// The sending half of the two rumqttc clients behind one face.
enum Sender {
    V4(rumqttc::AsyncClient),
    V5(r5::AsyncClient),
}

/// The event-loop half, polled by the driver alone. Kept apart from
/// [`Sender`] so that requests can be handed over while a poll is pending.
enum Loop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<r5::EventLoop>),
}

/// What the driver needs to know of an event, for both protocols.
enum Ev {
    ConnAck {
        session_present: bool,
        refused: Option<String>,
    },
    // Boxed: a message is far larger than the other events.
    Incoming(Box<(Message, Option<AckPacket>)>),
    PubAck {
        pkid: u16,
        rejected: Option<String>,
    },
    SubAck {
        pkid: u16,
        granted: Vec<Result<Qos, String>>,
    },
    OutgoingPublish(u16),
    OutgoingSubscribe(u16),
    OutgoingDisconnect,
    Other,
}

enum PollError {
    Refused(String),
    Network(String),
}

impl Loop {
    async fn poll(&mut self, manual_acks: bool) -> Result<Ev, PollError> {
        match self {
            Loop::V4(el) => match el.poll().await {
                Ok(ev) => Ok(convert_v4(ev, manual_acks)),
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                    Err(PollError::Refused(explain_refusal(&format!("{code:?}"))))
                }
                Err(e) => Err(PollError::Network(explain_network_error(e.to_string()))),
            },
            Loop::V5(el) => match el.poll().await {
                Ok(ev) => Ok(convert_v5(ev, manual_acks)),
                Err(r5::ConnectionError::ConnectionRefused(code)) => {
                    Err(PollError::Refused(explain_refusal(&format!("{code:?}"))))
                }
                Err(e) => Err(PollError::Network(explain_network_error(e.to_string()))),
            },
        }
    }

    /// Drops rumqttc's own resend queue: the driver resends what is
    /// unconfirmed itself, in order, whatever the broker kept.
    fn clear_pending(&mut self) {
        // Events rumqttc buffered before the connection broke (outgoing
        // packet ids, PUBACKs, deliveries) belong to the dead connection:
        // yielded after the next CONNACK they would pair old packet ids
        // with new publishes and leave one of them unconfirmed for ever.
        match self {
            Loop::V4(el) => {
                el.pending.clear();
                el.state.events.clear();
            }
            Loop::V5(el) => {
                el.pending.clear();
                el.state.events.clear();
            }
        }
    }
}

impl Sender {
    fn try_publish(&self, p: &Publish) -> bool {
        match self {
            Sender::V4(c) => c
                .try_publish(p.topic.clone(), p.qos.v4(), p.retain, p.payload.clone())
                .is_ok(),
            Sender::V5(c) => {
                let props = if p.response_topic.is_some() || p.correlation.is_some() {
                    Some(r5::mqttbytes::v5::PublishProperties {
                        response_topic: p.response_topic.clone(),
                        correlation_data: p.correlation.clone(),
                        ..Default::default()
                    })
                } else {
                    None
                };
                match props {
                    Some(props) => c
                        .try_publish_with_properties(
                            p.topic.clone(),
                            p.qos.v5(),
                            p.retain,
                            p.payload.clone(),
                            props,
                        )
                        .is_ok(),
                    None => c
                        .try_publish(p.topic.clone(), p.qos.v5(), p.retain, p.payload.clone())
                        .is_ok(),
                }
            }
        }
    }

    fn try_subscribe(&self, filters: &[(String, Qos)]) -> bool {
        match self {
            Sender::V4(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), q.v4())),
                )
                .is_ok(),
            Sender::V5(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| r5::mqttbytes::v5::Filter::new(f.clone(), q.v5())),
                )
                .is_ok(),
        }
    }

    fn try_ack(&self, handle: &AckHandle) {
        match (self, &handle.packet) {
            (Sender::V4(c), AckPacket::V4(p)) => {
                let _ = c.try_ack(p);
            }
            (Sender::V5(c), AckPacket::V5(p)) => {
                let _ = c.try_ack(p);
            }
            _ => {}
        }
    }

    fn try_disconnect(&self) -> bool {
        match self {
            Sender::V4(c) => c.try_disconnect().is_ok(),
            Sender::V5(c) => c.try_disconnect().is_ok(),
        }
    }
}

fn qos_from_v4(q: rumqttc::QoS) -> Qos {
    match q {
        rumqttc::QoS::AtMostOnce => Qos::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => Qos::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => Qos::ExactlyOnce,
    }
}

fn qos_from_v5(q: r5::mqttbytes::QoS) -> Qos {
    match q {
        r5::mqttbytes::QoS::AtMostOnce => Qos::AtMostOnce,
        r5::mqttbytes::QoS::AtLeastOnce => Qos::AtLeastOnce,
        r5::mqttbytes::QoS::ExactlyOnce => Qos::ExactlyOnce,
    }
}

fn convert_v4(ev: rumqttc::Event, manual_acks: bool) -> Ev {
    use rumqttc::{Event, Outgoing, Packet};
    match ev {
        Event::Incoming(Packet::ConnAck(ack)) => Ev::ConnAck {
            session_present: ack.session_present,
            refused: (ack.code != rumqttc::ConnectReturnCode::Success)
                .then(|| explain_refusal(&format!("{:?}", ack.code))),
        },
        Event::Incoming(Packet::Publish(p)) => {
            let ack = (manual_acks && p.qos != rumqttc::QoS::AtMostOnce)
                .then(|| AckPacket::V4(p.clone()));
            Ev::Incoming(Box::new((
                Message {
                    topic: p.topic,
                    payload: p.payload,
                    qos: qos_from_v4(p.qos),
                    retain: p.retain,
                    dup: p.dup,
                    response_topic: None,
                    correlation: None,
                    ack: None,
                },
                ack,
            )))
        }
        Event::Incoming(Packet::PubAck(ack)) => Ev::PubAck {
            pkid: ack.pkid,
            rejected: None,
        },
        Event::Incoming(Packet::SubAck(ack)) => Ev::SubAck {
            pkid: ack.pkid,
            granted: ack
                .return_codes
                .into_iter()
                .map(|c| match c {
                    rumqttc::SubscribeReasonCode::Success(q) => Ok(qos_from_v4(q)),
                    // MQTT 3.1.1 gives no reason; for a valid filter the
                    // broker's ACL is what refuses (mosquitto answers 0x80).
                    rumqttc::SubscribeReasonCode::Failure => Err(NOT_AUTHORIZED.into()),
                })
                .collect(),
        },
        Event::Outgoing(Outgoing::Publish(pkid)) => Ev::OutgoingPublish(pkid),
        Event::Outgoing(Outgoing::Subscribe(pkid)) => Ev::OutgoingSubscribe(pkid),
        Event::Outgoing(Outgoing::Disconnect) => Ev::OutgoingDisconnect,
        _ => Ev::Other,
    }
}

fn convert_v5(ev: r5::Event, manual_acks: bool) -> Ev {
    use r5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason, SubscribeReasonCode};
    use r5::Event;
    use rumqttc::Outgoing;
    match ev {
        Event::Incoming(Packet::ConnAck(ack)) => Ev::ConnAck {
            session_present: ack.session_present,
            refused: (ack.code != ConnectReturnCode::Success)
                .then(|| explain_refusal(&format!("{:?}", ack.code))),
        },
        Event::Incoming(Packet::Publish(p)) => {
            let ack = (manual_acks && p.qos != r5::mqttbytes::QoS::AtMostOnce)
                .then(|| AckPacket::V5(p.clone()));
            let (response_topic, correlation) = match &p.properties {
                Some(props) => (props.response_topic.clone(), props.correlation_data.clone()),
                None => (None, None),
            };
            Ev::Incoming(Box::new((
                Message {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload,
                    qos: qos_from_v5(p.qos),
                    retain: p.retain,
                    dup: p.dup,
                    response_topic,
                    correlation,
                    ack: None,
                },
                ack,
            )))
        }
        Event::Incoming(Packet::PubAck(ack)) => Ev::PubAck {
            pkid: ack.pkid,
            rejected: match ack.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                PubAckReason::NotAuthorized => Some(NOT_AUTHORIZED.into()),
                other => Some(format!(
                    "{other:?}{}",
                    ack.properties
                        .and_then(|p| p.reason_string)
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )),
            },
        },
        Event::Incoming(Packet::SubAck(ack)) => Ev::SubAck {
            pkid: ack.pkid,
            granted: ack
                .return_codes
                .into_iter()
                .map(|c| match c {
                    SubscribeReasonCode::Success(q) => Ok(qos_from_v5(q)),
                    SubscribeReasonCode::NotAuthorized => Err(NOT_AUTHORIZED.into()),
                    other => Err(format!("{other:?}")),
                })
                .collect(),
        },
        Event::Outgoing(Outgoing::Publish(pkid)) => Ev::OutgoingPublish(pkid),
        Event::Outgoing(Outgoing::Subscribe(pkid)) => Ev::OutgoingSubscribe(pkid),
        Event::Outgoing(Outgoing::Disconnect) => Ev::OutgoingDisconnect,
        _ => Ev::Other,
    }
}

/// A publish the broker has not confirmed yet.
struct Unconfirmed {
    publish: Publish,
    waiter: Option<oneshot::Sender<Result<(), MqttError>>>,
    /// Connections that broke soon after it was sent (see POISON_DROPS).
    quick_drops: u8,
}

/// A publish the broker confirmed recently, kept for the re-send window.
struct Confirmed {
    /// Its sequence number: a re-send takes its original place in the order.
    seq: u64,
    at: Instant,
    publish: Publish,
}

/// The publishes confirmed within the last `window`, oldest first, bounded
/// in count and bytes. While disconnected nothing ages out: what counts is
/// how long before the connection was lost a message was confirmed.
struct ResendWindow {
    window: Duration,
    entries: VecDeque<Confirmed>,
    bytes: usize,
}

impl ResendWindow {
    fn new(window: Duration) -> ResendWindow {
        ResendWindow {
            window,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Remembers a confirmed publish (QoS 0 ones were never confirmed and
    /// are not kept).
    fn push(&mut self, seq: u64, publish: Publish) {
        if self.window.is_zero() || publish.qos == Qos::AtMostOnce {
            return;
        }
        self.bytes += publish.payload.len() + publish.topic.len();
        self.entries.push_back(Confirmed {
            seq,
            at: Instant::now(),
            publish,
        });
        while self.entries.len() > RESEND_WINDOW_MAX_MESSAGES
            || self.bytes > RESEND_WINDOW_MAX_BYTES
        {
            self.pop();
        }
    }

    /// Forgets what was confirmed longer than the window ago.
    fn expire(&mut self, now: Instant) {
        while self
            .entries
            .front()
            .is_some_and(|c| now.duration_since(c.at) > self.window)
        {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(c) = self.entries.pop_front() {
            self.bytes -= c.publish.payload.len() + c.publish.topic.len();
        }
    }

    /// Everything kept, oldest first; the window is empty afterwards.
    fn take(&mut self) -> Vec<Confirmed> {
        self.bytes = 0;
        self.entries.drain(..).collect()
    }
}

struct PendingSubscribe {
    filters: Vec<(String, Qos)>,
    waiter: Option<oneshot::Sender<Result<Vec<Qos>, MqttError>>>,
}

/// Either kind of request handed to rumqttc, in the order handed.
enum Handed {
    Publish { seq: u64, qos: Qos },
    Subscribe { seq: u64 },
}

struct Driver {
    el: Loop,
    core: Core,
}

/// Everything of the driver but the event loop, so that commands can be
/// applied while a poll borrows the loop.
struct Core {
    options: ConnectOptions,
    ca: TlsFiles,
    sender: Sender,
    broker_index: usize,
    commands: mpsc::Receiver<Command>,
    commands_open: bool,
    incoming: mpsc::Sender<Message>,
    state: watch::Sender<ConnState>,
    first: Option<oneshot::Sender<Result<(), MqttError>>>,
    connected: bool,
    attempt: u32,
    next_seq: u64,
    /// Every unconfirmed publish, by sequence (the order callers gave).
    unconfirmed: BTreeMap<u64, Unconfirmed>,
    /// Recently confirmed publishes, sent again after a reconnect.
    resend: ResendWindow,
    /// A connection was made before: the next CONNACK is a reconnect.
    was_connected: bool,
    /// When the current connection's CONNACK came.
    connected_at: Option<Instant>,
    /// Sequence numbers waiting to be handed to rumqttc, in order.
    backlog: VecDeque<u64>,
    /// Requests handed to rumqttc whose packet id is not known yet.
    handed: VecDeque<Handed>,
    /// Packet id → publish sequence, for PUBACKs.
    publish_pkids: HashMap<u16, u64>,
    /// Subscriptions waiting for their SUBACK.
    subscribes: BTreeMap<u64, PendingSubscribe>,
    subscribe_pkids: HashMap<u16, u64>,
    subscribe_backlog: VecDeque<u64>,
    /// Every filter ever subscribed, renewed when a session is lost.
    subscriptions: Vec<(String, Qos)>,
    disconnect_waiter: Option<oneshot::Sender<()>>,
    /// DISCONNECT was handed to rumqttc.
    disconnect_sent: bool,
    /// Manual acks: receipt sequence numbers not yet acknowledged, in
    /// order, and the acks given for some of them (sent once every earlier
    /// one was given too).
    ack_order: VecDeque<u64>,
    acks_ready: HashMap<u64, Arc<AckHandle>>,
    next_receipt: u64,
    /// Counts connections; acks of messages from an older one are dropped.
    epoch: u64,
    /// Set when the next attempt goes to another broker: the client is
    /// rebuilt for it.
    rebuild: bool,
}

impl Driver {
    fn new(
        options: ConnectOptions,
        ca: TlsFiles,
        commands: mpsc::Receiver<Command>,
        incoming: mpsc::Sender<Message>,
        state: watch::Sender<ConnState>,
        first: oneshot::Sender<Result<(), MqttError>>,
    ) -> Driver {
        let (sender, el) = build_client(&options, &options.brokers[0], &ca);
        let resend = ResendWindow::new(options.resend_window);
        Driver {
            el,
            core: Core {
                options,
                ca,
                sender,
                broker_index: 0,
                commands,
                commands_open: true,
                incoming,
                state,
                first: Some(first),
                connected: false,
                attempt: 0,
                next_seq: 0,
                unconfirmed: BTreeMap::new(),
                resend,
                was_connected: false,
                connected_at: None,
                backlog: VecDeque::new(),
                handed: VecDeque::new(),
                publish_pkids: HashMap::new(),
                subscribes: BTreeMap::new(),
                subscribe_pkids: HashMap::new(),
                subscribe_backlog: VecDeque::new(),
                subscriptions: Vec::new(),
                disconnect_waiter: None,
                disconnect_sent: false,
                ack_order: VecDeque::new(),
                acks_ready: HashMap::new(),
                next_receipt: 0,
                epoch: 0,
                rebuild: false,
            },
        }
    }

    async fn run(mut self) {
        let manual_acks = self.core.options.manual_acks;
        let core = &mut self.core;
        loop {
            // Poll the event loop and, while it waits, hand new requests to
            // rumqttc. The poll future is never dropped half-way (rumqttc's
            // poll is not cancel-safe).
            let event = {
                let poll = self.el.poll(manual_acks);
                tokio::pin!(poll);
                loop {
                    let accept = core.commands_open && core.unconfirmed.len() < MAX_UNCONFIRMED;
                    tokio::select! {
                        biased;
                        ev = &mut poll => break ev,
                        cmd = core.commands.recv(), if accept => match cmd {
                            Some(cmd) => {
                                core.command(cmd);
                                // Take whatever else is queued in one go.
                                while core.unconfirmed.len() < MAX_UNCONFIRMED {
                                    match core.commands.try_recv() {
                                        Ok(cmd) => core.command(cmd),
                                        Err(_) => break,
                                    }
                                }
                                core.pump();
                            }
                            None => core.commands_open = false,
                        },
                    }
                }
            };
            let go_on = match event {
                Ok(ev) => core.event(ev).await,
                Err(err) => core.lost(err).await,
            };
            if !go_on {
                break;
            }
            if core.rebuild {
                core.rebuild = false;
                let broker = core.broker().clone();
                let (sender, el) = build_client(&core.options, &broker, &core.ca);
                core.sender = sender;
                self.el = el;
            }
            if !core.connected {
                // A failed poll moved rumqttc's in-flight publishes into its
                // own resend queue; this driver resends them itself, in
                // order, after the next CONNACK.
                self.el.clear_pending();
            }
            core.pump();
            if core.disconnect_waiter.is_some() && !core.connected {
                // Asked to disconnect while not connected: nothing to send.
                break;
            }
            if !core.commands_open
                && core.unconfirmed.is_empty()
                && core.disconnect_waiter.is_none()
                && core.incoming.is_closed()
            {
                // Nobody can use this connection any more.
                let _ = core.sender.try_disconnect();
                break;
            }
        }
        let _ = core.state.send(ConnState::Closed);
        if let Some(w) = core.disconnect_waiter.take() {
            let _ = w.send(());
        }
    }
}

impl Core {
    fn broker(&self) -> &BrokerUrl {
        &self.options.brokers[self.broker_index]
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish(publish, waiter) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.unconfirmed.insert(
                    seq,
                    Unconfirmed {
                        publish,
                        waiter: Some(waiter),
                        quick_drops: 0,
                    },
                );
                self.backlog.push_back(seq);
            }
            Command::PublishBatch(batch) => {
                for (publish, waiter) in batch {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.unconfirmed.insert(
                        seq,
                        Unconfirmed {
                            publish,
                            waiter,
                            quick_drops: 0,
                        },
                    );
                    self.backlog.push_back(seq);
                }
            }
            Command::Subscribe(filters, waiter) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                for f in &filters {
                    if !self.subscriptions.contains(f) {
                        self.subscriptions.push(f.clone());
                    }
                }
                self.subscribes.insert(
                    seq,
                    PendingSubscribe {
                        filters,
                        waiter: Some(waiter),
                    },
                );
                self.subscribe_backlog.push_back(seq);
            }
            Command::Ack(handle) => {
                if handle.epoch == self.epoch && self.ack_order.contains(&handle.seq) {
                    self.acks_ready.insert(handle.seq, handle);
                    self.flush_acks();
                }
            }
            Command::Disconnect(waiter) => {
                // Requests queued before the DISCONNECT go out first (QoS 0
                // streams have no confirmation to wait for); `pump` sends the
                // DISCONNECT once the backlog is handed over.
                self.disconnect_waiter = Some(waiter);
                self.commands_open = false;
            }
        }
    }

    /// Sends the acks that are next in receipt order.
    fn flush_acks(&mut self) {
        while let Some(front) = self.ack_order.front().copied() {
            let Some(handle) = self.acks_ready.remove(&front) else {
                break;
            };
            if self.connected {
                self.sender.try_ack(&handle);
            }
            self.ack_order.pop_front();
        }
    }

    /// After a requested disconnect: send DISCONNECT once everything queued
    /// was handed to rumqttc (it keeps the order).
    fn finish_disconnect(&mut self) {
        if self.disconnect_waiter.is_some()
            && !self.disconnect_sent
            && self.connected
            && self.backlog.is_empty()
        {
            self.disconnect_sent = self.sender.try_disconnect();
        }
    }

    /// Hands queued requests to rumqttc, in order, while connected and while
    /// its channel has room.
    fn pump(&mut self) {
        if !self.connected || self.disconnect_sent {
            return;
        }
        self.pump_requests();
        self.finish_disconnect();
    }

    fn pump_requests(&mut self) {
        while self.handed.len() < RUMQTT_CHANNEL_CAP {
            if let Some(seq) = self.subscribe_backlog.front().copied() {
                let Some(sub) = self.subscribes.get(&seq) else {
                    self.subscribe_backlog.pop_front();
                    continue;
                };
                if !self.sender.try_subscribe(&sub.filters) {
                    return;
                }
                self.subscribe_backlog.pop_front();
                self.handed.push_back(Handed::Subscribe { seq });
                continue;
            }
            let Some(seq) = self.backlog.front().copied() else {
                return;
            };
            let Some(entry) = self.unconfirmed.get(&seq) else {
                self.backlog.pop_front();
                continue;
            };
            if !self.sender.try_publish(&entry.publish) {
                return;
            }
            let qos = entry.publish.qos;
            self.backlog.pop_front();
            self.handed.push_back(Handed::Publish { seq, qos });
        }
    }

    /// Handles one event; false ends the driver.
    async fn event(&mut self, ev: Ev) -> bool {
        match ev {
            Ev::ConnAck {
                session_present,
                refused,
            } => {
                if let Some(reason) = refused {
                    return self.refused(reason).await;
                }
                self.connected = true;
                // The backoff starts again only once this connection has
                // proved stable (see `lost`): a broker that closes every
                // connection at once must not cause a reconnect storm.
                self.connected_at = Some(Instant::now());
                let _ = self.state.send(ConnState::Connected {
                    broker: self.broker().display.clone(),
                });
                if let Some(first) = self.first.take() {
                    let _ = first.send(Ok(()));
                }
                self.resend_after_connect(session_present);
            }
            Ev::OutgoingPublish(pkid) => {
                // The next handed request is a publish: pair it with its id.
                if let Some(pos) = self
                    .handed
                    .iter()
                    .position(|h| matches!(h, Handed::Publish { .. }))
                {
                    if let Some(Handed::Publish { seq, qos }) = self.handed.remove(pos) {
                        if qos == Qos::AtMostOnce {
                            if let Some(mut entry) = self.unconfirmed.remove(&seq) {
                                if let Some(w) = entry.waiter.take() {
                                    let _ = w.send(Ok(()));
                                }
                            }
                        } else {
                            self.publish_pkids.insert(pkid, seq);
                        }
                    }
                }
            }
            Ev::PubAck { pkid, rejected } => {
                if let Some(seq) = self.publish_pkids.remove(&pkid) {
                    if let Some(mut entry) = self.unconfirmed.remove(&seq) {
                        let result = match rejected {
                            None => Ok(()),
                            Some(reason) if reason == NOT_AUTHORIZED => {
                                Err(MqttError::NotAuthorized {
                                    action: "publish to",
                                    topic: entry.publish.topic.clone(),
                                })
                            }
                            Some(reason) => Err(MqttError::PublishRejected {
                                topic: entry.publish.topic.clone(),
                                reason,
                            }),
                        };
                        let accepted = result.is_ok();
                        if let Some(w) = entry.waiter.take() {
                            let _ = w.send(result);
                        }
                        if accepted {
                            self.resend.expire(Instant::now());
                            self.resend.push(seq, entry.publish);
                        }
                    }
                }
            }
            Ev::OutgoingSubscribe(pkid) => {
                if let Some(pos) = self
                    .handed
                    .iter()
                    .position(|h| matches!(h, Handed::Subscribe { .. }))
                {
                    if let Some(Handed::Subscribe { seq }) = self.handed.remove(pos) {
                        self.subscribe_pkids.insert(pkid, seq);
                    }
                }
            }
            Ev::SubAck { pkid, granted } => {
                if let Some(seq) = self.subscribe_pkids.remove(&pkid) {
                    if let Some(mut sub) = self.subscribes.remove(&seq) {
                        let mut result = Ok(Vec::new());
                        for (i, g) in granted.into_iter().enumerate() {
                            match (g, &mut result) {
                                (Ok(q), Ok(v)) => v.push(q),
                                (Err(reason), Ok(_)) => {
                                    let filter =
                                        sub.filters.get(i).map(|f| f.0.clone()).unwrap_or_default();
                                    self.subscriptions.retain(|(f, _)| *f != filter);
                                    result = Err(if reason == NOT_AUTHORIZED {
                                        MqttError::NotAuthorized {
                                            action: "subscribe to",
                                            topic: filter,
                                        }
                                    } else {
                                        MqttError::SubscribeRejected { filter, reason }
                                    });
                                }
                                _ => {}
                            }
                        }
                        if let Some(w) = sub.waiter.take() {
                            let _ = w.send(result);
                        }
                    }
                }
            }
            Ev::Incoming(incoming) => {
                let (mut message, packet) = *incoming;
                if let Some(packet) = packet {
                    let seq = self.next_receipt;
                    self.next_receipt += 1;
                    self.ack_order.push_back(seq);
                    message.ack = Some(Arc::new(AckHandle {
                        seq,
                        epoch: self.epoch,
                        packet,
                    }));
                }
                // Deliver, but keep serving commands while the consumer is
                // slow, so a consumer that publishes cannot deadlock.
                let message = match self.incoming.try_send(message) {
                    Ok(()) => return true,
                    Err(mpsc::error::TrySendError::Closed(_)) => return true,
                    Err(mpsc::error::TrySendError::Full(message)) => message,
                };
                let incoming = self.incoming.clone();
                loop {
                    tokio::select! {
                        permit = incoming.reserve() => {
                            if let Ok(permit) = permit { permit.send(message); }
                            break;
                        }
                        cmd = self.commands.recv(), if self.commands_open => match cmd {
                            Some(cmd) => { self.command(cmd); self.pump(); }
                            None => self.commands_open = false,
                        },
                    }
                }
            }
            Ev::OutgoingDisconnect => {
                return false;
            }
            Ev::Other => {}
        }
        true
    }

    /// After a CONNACK: everything not confirmed goes out again, in the
    /// order callers gave it; subscriptions are renewed when the broker did
    /// not keep the session.
    fn resend_after_connect(&mut self, session_present: bool) {
        // A reconnect: the broker may have lost what it confirmed shortly
        // before the connection broke (it confirms before it saves), even
        // when it kept the session. The recently confirmed publishes take
        // their original places in the order again.
        if std::mem::replace(&mut self.was_connected, true) {
            let again = self.resend.take();
            if !again.is_empty() {
                tracing::info!(
                    messages = again.len(),
                    "re-sending the publishes confirmed shortly before the connection was lost"
                );
            }
            for c in again {
                self.unconfirmed.insert(
                    c.seq,
                    Unconfirmed {
                        publish: c.publish,
                        waiter: None,
                        quick_drops: 0,
                    },
                );
            }
        }
        self.handed.clear();
        self.publish_pkids.clear();
        self.subscribe_pkids.clear();
        self.backlog = self.unconfirmed.keys().copied().collect();
        let waiting: Vec<u64> = self.subscribes.keys().copied().collect();
        self.subscribe_backlog = waiting.into();
        if !session_present && !self.subscriptions.is_empty() {
            let known: Vec<(String, Qos)> = self
                .subscribes
                .values()
                .flat_map(|s| s.filters.iter().cloned())
                .collect();
            let renew: Vec<(String, Qos)> = self
                .subscriptions
                .iter()
                .filter(|f| !known.contains(f))
                .cloned()
                .collect();
            if !renew.is_empty() {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.subscribes.insert(
                    seq,
                    PendingSubscribe {
                        filters: renew,
                        waiter: None,
                    },
                );
                self.subscribe_backlog.push_back(seq);
            }
        }
    }

    async fn refused(&mut self, reason: String) -> bool {
        let broker = self.broker().display.clone();
        if let Some(first) = self.first.take() {
            if !self.options.retry_initial {
                let _ = first.send(Err(MqttError::Refused { broker, reason }));
                return false;
            }
        }
        self.lost(PollError::Refused(reason)).await
    }

    /// The connection failed or was lost: back off (serving commands
    /// meanwhile) and try the next broker. False ends the driver.
    /// The connection broke soon after its CONNACK: every publish then in
    /// flight counts one quick drop, and one that reaches POISON_DROPS is
    /// given up with an error naming it instead of being resent for ever.
    fn count_quick_drop(&mut self) {
        let in_flight: Vec<u64> = self
            .handed
            .iter()
            .filter_map(|h| match h {
                Handed::Publish { seq, .. } => Some(*seq),
                Handed::Subscribe { .. } => None,
            })
            .chain(self.publish_pkids.values().copied())
            .collect();
        for seq in in_flight {
            let Some(entry) = self.unconfirmed.get_mut(&seq) else {
                continue;
            };
            entry.quick_drops += 1;
            if entry.quick_drops >= POISON_DROPS {
                if let Some(mut entry) = self.unconfirmed.remove(&seq) {
                    let error = MqttError::DroppedByBroker {
                        topic: short_topic(&entry.publish.topic),
                        drops: entry.quick_drops,
                    };
                    tracing::error!("{error}");
                    if let Some(w) = entry.waiter.take() {
                        let _ = w.send(Err(error));
                    }
                }
            }
        }
    }

    async fn lost(&mut self, err: PollError) -> bool {
        if let Some(at) = self.connected_at.take() {
            if at.elapsed() >= STABLE_CONNECTION {
                self.attempt = 0;
            } else if at.elapsed() < QUICK_DROP {
                self.count_quick_drop();
            }
        }
        if self.connected {
            // The window is measured back from the moment the connection
            // broke, however long the reconnect takes.
            self.resend.expire(Instant::now());
        }
        self.connected = false;
        // Unacknowledged messages come again on the next connection.
        self.epoch += 1;
        self.ack_order.clear();
        self.acks_ready.clear();
        if self.disconnect_waiter.is_some() {
            return false;
        }
        let broker = self.broker().display.clone();
        let reason = match &err {
            PollError::Refused(r) => r.clone(),
            // Never accepted yet: say what a close without CONNACK means.
            PollError::Network(r) if self.first.is_some() && r.contains("closed by peer") => {
                closed_before_connack(self.options.protocol, r)
            }
            PollError::Network(r) => r.clone(),
        };
        self.attempt = self.attempt.saturating_add(1);
        if self.first.is_some() && !self.options.retry_initial {
            // Fail fast only after every listed broker was tried once.
            if self.attempt as usize >= self.options.brokers.len() {
                let error = match err {
                    PollError::Refused(reason) => MqttError::Refused { broker, reason },
                    PollError::Network(raw) if raw.contains("closed by peer") => {
                        // Brokers that refuse a log-in without a CONNACK
                        // (rumqttd, the embedded broker) look like this,
                        // and so does a broker that does not speak MQTT 5.
                        MqttError::Refused { broker, reason }
                    }
                    PollError::Network(reason) => MqttError::Unreachable { broker, reason },
                };
                if let Some(first) = self.first.take() {
                    let _ = first.send(Err(error));
                }
                return false;
            }
        } else {
            tracing::warn!(broker = %broker, attempt = self.attempt, "MQTT connection lost: {reason}");
            let _ = self.state.send(ConnState::Reconnecting {
                broker,
                attempt: self.attempt,
                error: reason,
            });
            let delay = backoff(self.attempt);
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    cmd = self.commands.recv(), if self.commands_open => match cmd {
                        Some(Command::Disconnect(w)) => {
                            self.disconnect_waiter = Some(w);
                            return false;
                        }
                        Some(cmd) => self.command(cmd),
                        None => {
                            self.commands_open = false;
                            if self.unconfirmed.is_empty() && self.incoming.is_closed() {
                                return false;
                            }
                        }
                    },
                }
            }
        }
        if self.options.brokers.len() > 1 {
            self.broker_index = (self.broker_index + 1) % self.options.brokers.len();
            self.rebuild = true;
        }
        true
    }
}

/// Capped exponential backoff with jitter: 100 ms, 200 ms, 400 ms, … up to
/// [`BACKOFF_MAX`], each scaled by a random factor in [0.5, 1.0].
pub fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_MIN.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(BACKOFF_MAX);
    capped.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// The PEM files a TLS connection needs, read once when connecting so that
/// a missing or wrong file is a clear error at once, not a failed
/// handshake later.
#[derive(Debug, Clone, Default)]
struct TlsFiles {
    /// CA certificates (PEM); the system's roots when absent.
    ca: Option<Vec<u8>>,
    /// Client certificate chain and private key (PEM).
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    fn read(options: &ConnectOptions) -> Result<TlsFiles, MqttError> {
        let ca = match &options.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| MqttError::CaFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                if !contains(&pem, b"-----BEGIN CERTIFICATE-----") {
                    return Err(MqttError::CaFile {
                        path: path.clone(),
                        reason: "no PEM certificate in it (-----BEGIN CERTIFICATE-----)".into(),
                    });
                }
                Some(pem)
            }
            None => None,
        };
        let client = match (&options.client_cert, &options.client_key) {
            (Some(cert_path), Some(key_path)) => {
                let read = |path: &PathBuf| {
                    std::fs::read(path).map_err(|e| MqttError::ClientCert {
                        path: path.clone(),
                        reason: e.to_string(),
                    })
                };
                let cert = read(cert_path)?;
                let key = read(key_path)?;
                if !contains(&cert, b"-----BEGIN CERTIFICATE-----") {
                    return Err(MqttError::ClientCert {
                        path: cert_path.clone(),
                        reason: "no PEM certificate in it (-----BEGIN CERTIFICATE-----)".into(),
                    });
                }
                if !contains(&key, b"PRIVATE KEY-----") {
                    return Err(MqttError::ClientCert {
                        path: key_path.clone(),
                        reason: "no PEM private key in it (-----BEGIN … PRIVATE KEY-----)".into(),
                    });
                }
                if ca.is_none() {
                    return Err(MqttError::ClientCert {
                        path: cert_path.clone(),
                        reason: "a client certificate needs ca_file too (the CA that signed the broker's certificate)".into(),
                    });
                }
                Some((cert, key))
            }
            (Some(path), None) | (None, Some(path)) => {
                return Err(MqttError::ClientCert {
                    path: path.clone(),
                    reason: "a client certificate needs both the certificate and its key".into(),
                })
            }
            (None, None) => None,
        };
        Ok(TlsFiles { ca, client })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What a refusal code means, for a person (the codes are rumqttc's
/// `Debug` names of the CONNACK return or reason code).
fn explain_refusal(code: &str) -> String {
    match code {
        "BadUserNamePassword" => {
            "bad user name or password (check username and password_file)".into()
        }
        "NotAuthorized" => {
            "not authorized: the broker does not let this user or client id connect".into()
        }
        "BadClientId" | "ClientIdentifierNotValid" => {
            "the broker refused the client id (set another with --client-id)".into()
        }
        "ServiceUnavailable" | "ServerUnavailable" | "ServerBusy" => {
            "the broker is unavailable or busy".into()
        }
        "BadAuthenticationMethod" => "the broker wants another authentication method".into(),
        "Banned" => "this client is banned by the broker".into(),
        other => other.to_string(),
    }
}

/// A network error made readable: TLS failures say what to check.
fn explain_network_error(reason: String) -> String {
    let lower = reason.to_ascii_lowercase();
    let hint = if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
        Some("TLS: the broker's certificate is not signed by a trusted CA (check --ca-file / ca_file)")
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        Some("TLS: the broker's certificate is not valid for this host name (connect with the name in its certificate)")
    } else if lower.contains("expired") {
        Some("TLS: the broker's certificate has expired")
    } else if lower.contains("certificaterequired") || lower.contains("certificate required") {
        Some("TLS: the broker requires a client certificate (set client_cert and client_key)")
    } else if lower.contains("badcertificate")
        || lower.contains("unknownca")
        || lower.contains("unknown ca")
    {
        Some("TLS: the broker rejected the client certificate (not signed by a CA it trusts)")
    } else if lower.contains("invalidcontenttype") || lower.contains("corrupt message") {
        Some(
            "TLS: the broker did not answer in TLS (is this an mqtt:// port rather than mqtts://?)",
        )
    } else {
        None
    };
    match hint {
        Some(hint) => format!("{hint}; {reason}"),
        None => reason,
    }
}

fn build_client(options: &ConnectOptions, broker: &BrokerUrl, files: &TlsFiles) -> (Sender, Loop) {
    let username = broker.username.clone().or_else(|| options.username.clone());
    let password = broker.password.clone().or_else(|| options.password.clone());
    let tls = broker.tls.then(|| match (&files.ca, &files.client) {
        (Some(ca), client) => rumqttc::TlsConfiguration::Simple {
            ca: ca.clone(),
            alpn: None,
            client_auth: client.clone(),
        },
        // TlsFiles::read refuses a client certificate without a CA file.
        (None, _) => rumqttc::TlsConfiguration::default(),
    });
    let timeout_s = options.connect_timeout.as_secs().max(1);
    let cap = RUMQTT_CHANNEL_CAP + 64;
    match options.protocol {
        Protocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(
                options.client_id.clone(),
                broker.host.clone(),
                broker.port,
            );
            o.set_keep_alive(options.keepalive)
                .set_clean_session(options.clean_session)
                .set_manual_acks(options.manual_acks)
                .set_inflight(options.inflight.max(1))
                .set_max_packet_size(MAX_INCOMING_PACKET_SIZE, MAX_PACKET_SIZE)
                .set_request_channel_capacity(cap)
                .set_pending_throttle(Duration::ZERO);
            if let (Some(u), p) = (&username, &password) {
                o.set_credentials(u.clone(), p.clone().unwrap_or_default());
            }
            if let Some(w) = &options.will {
                o.set_last_will(rumqttc::LastWill::new(
                    w.topic.clone(),
                    w.payload.clone(),
                    w.qos.v4(),
                    w.retain,
                ));
            }
            if let Some(tls) = tls {
                o.set_transport(rumqttc::Transport::tls_with_config(tls));
            }
            let (client, mut el) = rumqttc::AsyncClient::new(o, cap);
            el.network_options.set_connection_timeout(timeout_s);
            el.network_options.set_tcp_nodelay(true);
            (Sender::V4(client), Loop::V4(Box::new(el)))
        }
        Protocol::V5 => {
            let mut o =
                r5::MqttOptions::new(options.client_id.clone(), broker.host.clone(), broker.port);
            o.set_keep_alive(options.keepalive)
                .set_clean_start(options.clean_session)
                .set_manual_acks(options.manual_acks)
                .set_outgoing_inflight_upper_limit(options.inflight.max(1))
                .set_max_packet_size(Some(MAX_INCOMING_PACKET_SIZE as u32))
                .set_request_channel_capacity(cap)
                .set_pending_throttle(Duration::ZERO)
                .set_connection_timeout(timeout_s);
            if !options.clean_session {
                // Keep the session for a week while the listener is away.
                o.set_session_expiry_interval(Some(7 * 24 * 3600));
            }
            if let (Some(u), p) = (&username, &password) {
                o.set_credentials(u.clone(), p.clone().unwrap_or_default());
            }
            if let Some(w) = &options.will {
                o.set_last_will(r5::mqttbytes::v5::LastWill::new(
                    w.topic.clone(),
                    w.payload.clone(),
                    w.qos.v5(),
                    w.retain,
                    None,
                ));
            }
            if let Some(tls) = tls {
                o.set_transport(rumqttc::Transport::tls_with_config(tls));
            }
            let (client, el) = r5::AsyncClient::new(o, cap);
            (Sender::V5(client), Loop::V5(Box::new(el)))
        }
    }
}

/// Why a broker may close the connection before its CONNACK: the text of
/// the error (or of the reconnecting state) for `raw`, rumqttc's reason.
/// RabbitMQ 3.10's MQTT plugin answers an MQTT 5 CONNECT this way, with no
/// reason given, so with MQTT 5 that is named as a likely cause.
fn closed_before_connack(protocol: Protocol, raw: &str) -> String {
    match protocol {
        Protocol::V5 => format!(
            "it closed the connection before accepting it (a wrong user name or password, a client id it refuses, or it does not speak MQTT 5, e.g. RabbitMQ 3.10: set mqtt_version = 3); {raw}"
        ),
        Protocol::V311 => format!(
            "it closed the connection before accepting it (a wrong user name or password, or a client id it refuses); {raw}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13: RabbitMQ 3.10 closes an MQTT 5 connection without a
    /// CONNACK; the error names that cause and the fix.
    #[test]
    fn a_close_before_connack_names_mqtt_5_as_a_cause() {
        let raw = "Mqtt state: Connection closed by peer abruptly";
        let v5 = closed_before_connack(Protocol::V5, raw);
        assert!(v5.contains("does not speak MQTT 5"), "{v5}");
        assert!(v5.contains("set mqtt_version = 3"), "{v5}");
        assert!(v5.contains("wrong user name or password"), "{v5}");
        assert!(v5.ends_with(raw), "{v5}");
        let v3 = closed_before_connack(Protocol::V311, raw);
        assert!(!v3.contains("MQTT 5"), "{v3}");
        assert!(v3.contains("wrong user name or password"), "{v3}");
    }

    #[test]
    fn urls_parse_with_defaults_and_credentials() {
        let u = BrokerUrl::parse("mqtt://127.0.0.1").expect("parses");
        assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 1883, false));
        let u = BrokerUrl::parse("mqtts://bob:s%40cret@broker.example:9999").expect("parses");
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("broker.example", 9999, true)
        );
        assert_eq!(u.username.as_deref(), Some("bob"));
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert!(!u.display.contains("cret"), "{}", u.display);
        let u = BrokerUrl::parse("mqtt://[::1]:1884").expect("parses");
        assert_eq!((u.host.as_str(), u.port), ("::1", 1884));
    }

    #[test]
    fn bad_urls_are_rejected_clearly() {
        for (raw, needle) in [
            ("http://h", "unsupported broker URL scheme \"http\""),
            ("127.0.0.1:1883", "no scheme"),
            ("localhost:1883", "no scheme"),
            ("mqtt://", "invalid broker URL"),
            ("mqtt://h:99999", "invalid broker URL"),
            ("mqtt://h/topic", "no path"),
            ("not a url", "invalid broker URL"),
        ] {
            let err = BrokerUrl::parse(raw).expect_err(raw).to_string();
            assert!(err.contains(needle), "{raw}: {err}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..40 {
            let d = backoff(attempt);
            assert!(d <= BACKOFF_MAX, "{attempt}: {d:?}");
            assert!(d >= BACKOFF_MIN / 2, "{attempt}: {d:?}");
        }
        assert!(backoff(1) <= BACKOFF_MIN);
        assert!(backoff(30) >= BACKOFF_MAX / 2);
    }

    #[test]
    fn client_ids_are_broker_safe() {
        let id = default_client_id("tail/ü x");
        assert!(id.len() <= 64);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{id}"
        );
    }
}
