//! One run of a one-shot bridge on the bus: connect within a time budget,
//! flush what older runs spooled, hand messages to the [`Outbox`] (publish
//! confirmed, or spool), and at the end publish the bridge's own health
//! report (state `idle`, `last_run`, `spool_depth`) and disconnect.
//!
//! The budget is what keeps a bridge from ever holding up the legacy side:
//! with the broker down (refused at once) messages are spooled at once;
//! with a broker that does not answer, after at most the budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use signalbox_common::config::Config;
use signalbox_common::health::{HealthReport, HealthState};
use signalbox_common::mqtt::{ConnectOptions, Connection, MqttError, Publish, Qos};
use signalbox_common::sign::SigningKey;
use signalbox_common::spool::{Outbox, Spool};
use signalbox_common::topic;

/// Default for `--timeout`: seconds a run may spend on the bus (connect,
/// flush, confirmations) before it spools what is left.
pub const DEFAULT_TIMEOUT_S: f64 = 5.0;
/// Longest wait for the broker to confirm the health report.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest wait for a clean disconnect.
const DISCONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The signing key of this process (`--sign-key`), loaded once by
/// [`load_signer`] before any bridge runs.
static SIGNER: std::sync::OnceLock<Option<Arc<SigningKey>>> = std::sync::OnceLock::new();

/// Loads the configured signing key, if any, for every outbox of this
/// process. A key that cannot be used is an error: a bridge asked to sign
/// must not publish unsigned messages instead.
pub fn load_signer(config: &Config) -> Result<(), String> {
    let key = match &config.sign_key.value {
        Some(path) => Some(Arc::new(
            SigningKey::load(path).map_err(|e| format!("--sign-key: {e}"))?,
        )),
        None => None,
    };
    let _ = SIGNER.set(key);
    Ok(())
}

/// The signing key loaded by [`load_signer`].
pub fn signer() -> Option<Arc<SigningKey>> {
    SIGNER.get().cloned().flatten()
}

/// A bridge run's connection and outbox.
pub struct Session {
    /// The effective configuration.
    pub config: Config,
    /// When the run started (the health report's `started`).
    pub started: DateTime<Utc>,
    /// Where messages go.
    pub outbox: Outbox,
    conn: Option<Connection>,
}

/// Connects with the configuration's options, the connect timeout capped
/// by `budget`; the error is one line for logs.
pub async fn connect(config: &Config, role: &str, budget: Duration) -> Result<Connection, String> {
    let mut options = ConnectOptions::from_config(config, role).map_err(|e| {
        tracing::warn!("{e}");
        e.to_string()
    })?;
    options.connect_timeout = options
        .connect_timeout
        .min(budget)
        .max(Duration::from_secs(1));
    let attempt = Connection::connect(options);
    match tokio::time::timeout(budget.max(Duration::from_millis(100)), attempt).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => {
            if matches!(
                e,
                MqttError::CaFile { .. }
                    | MqttError::InvalidUrl { .. }
                    | MqttError::UnsupportedScheme { .. }
            ) {
                tracing::warn!("{e}");
            } else {
                tracing::info!("{e}");
            }
            Err(e.to_string())
        }
        Err(_) => Err(format!(
            "no answer from the broker within {:.1} s",
            budget.as_secs_f64()
        )),
    }
}

impl Session {
    /// Connects (giving up after `budget`), then flushes older spooled
    /// messages for at most half the budget. Never fails: without a broker
    /// every message is spooled.
    pub async fn open(config: Config, role: &str, budget: Duration) -> Session {
        let started = Utc::now();
        let deadline = Instant::now() + budget;
        let spool = Spool::new(config.spool.value.clone());
        let conn = connect(&config, role, budget).await;
        let publisher = conn
            .as_ref()
            .map(Connection::publisher)
            .map_err(Clone::clone);
        let mut outbox = Outbox::open(spool, publisher, deadline, budget / 2).await;
        if let Some(key) = signer() {
            outbox.set_signer(key);
        }
        Session {
            config,
            started,
            outbox,
            conn: conn.ok(),
        }
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.config.prefix.value
    }

    /// The configured environment.
    pub fn env(&self) -> &str {
        &self.config.env.value
    }

    /// Flushes what is left while time remains, publishes the health report
    /// of `health_name` (best effort, never failing the run) and
    /// disconnects. Returns the spool depth.
    pub async fn close(self, health_name: &str) -> u64 {
        self.close_with(health_name, serde_json::Map::new()).await
    }

    /// [`Session::close`] with fields of this bridge added to the health
    /// report (the RSS bridge's per-feed status).
    pub async fn close_with(
        mut self,
        health_name: &str,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> u64 {
        let depth = self.outbox.finish().await;
        if let Some(publisher) = self.outbox.publisher() {
            let mut report =
                HealthReport::new(health_name, self.started, self.config.health_interval.value);
            report.state = HealthState::Idle;
            report.last_seen = Utc::now();
            report.last_run = Some(report.last_seen);
            report.spool_depth = Some(depth);
            report.last_error = self.outbox.broker_error().map(str::to_string);
            report.extra = extra;
            let topic = topic::health_topic(&self.config.prefix.value, health_name);
            let publish = Publish::new(topic, Bytes::from(report.to_vec()), Qos::AtLeastOnce, true);
            if let Err(e) = publisher.publish_confirmed(publish, HEALTH_TIMEOUT).await {
                tracing::info!("health report not published: {e}");
            }
        }
        if let Some(conn) = self.conn.take() {
            let _ = tokio::time::timeout(DISCONNECT_TIMEOUT * 2, conn.disconnect()).await;
        }
        depth
    }
}

/// A current-thread runtime: a one-shot bridge does one thing at a time,
/// and starts faster without a thread pool.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The account the bridge runs as (`$USER`, else `$LOGNAME`).
pub fn os_user() -> Option<String> {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok())
        .filter(|u| !u.trim().is_empty())
}
