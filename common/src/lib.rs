//! signalbox-common: the bus contract shared by every signalbox program.
//!
//! Nothing here knows about terminals or legacy systems. The modules:
//! - [`envelope`]: the JSON envelope every well-formed message carries, and
//!   [`envelope::Payload`], the decoding of *any* payload (envelope, foreign
//!   JSON, text, binary) that never fails.
//! - [`topic`]: building, sanitising, parsing and matching topics, and the
//!   reserved namespaces (`_health`, `_failed`, `_replay`, `_audit`, `_ping`,
//!   `_roster`).
//! - [`config`]: the layered configuration (flags > `SIGNALBOX_*` environment
//!   > TOML file > defaults) with the source of every value.
//! - [`mqtt`]: one MQTT connection (3.1.1 or 5, plain or TLS) with capped,
//!   jittered reconnects, publish-and-confirm and re-subscription.
//! - [`health`]: health reports and how to judge them (stale, down).
//! - [`failed`]: failure records, replay requests and outcomes.
//! - [`listener`]: the listener runtime (acks, retries, failure records,
//!   de-duplication via [`seen`], health, replay, roster, replies).
//! - [`spool`]: the durable publish spool and [`spool::Outbox`], "publish
//!   confirmed or spool", used by every bridge.
//! - [`broker`]: the embedded broker (rumqttd) for one host, the demo and tests.
//! - [`sign`]: ed25519 keys, the canonical form of an envelope, signing and
//!   verification against a directory of trusted public keys.

pub mod broker;
pub mod config;
pub mod envelope;
pub mod failed;
pub mod health;
pub mod listener;
pub mod mqtt;
pub mod seen;
pub mod sign;
pub mod spool;
pub mod topic;

/// The version of signalbox, as reported in health reports and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
