//! Signature marks in the console: with a trust directory (`--trust DIR`,
//! `trust_dir`), every message is checked once, on arrival, and the stream
//! and the detail view show ✓ NAME, ✗ NAME or `unsigned`. Without one the
//! console shows no marks (it could not tell a forgery from the real thing).
//!
//! The trust store is process-wide: the console loads it once at start and
//! the decoding of each message reads it.

use std::sync::OnceLock;

use signalbox_common::config::Config;
use signalbox_common::sign::{SignError, TrustStore, Verdict};

static TRUST: OnceLock<TrustStore> = OnceLock::new();

/// Loads the configured trust directory, if any (a bad one is an error, so
/// that the console never shows ✗ for a key it failed to read).
pub fn init(config: &Config) -> Result<(), SignError> {
    if let Some(dir) = &config.trust_dir.value {
        let store = TrustStore::load(dir)?;
        let _ = TRUST.set(store);
    }
    Ok(())
}

/// The verdict on a payload, when a trust directory is loaded.
pub fn check(bytes: &[u8]) -> Option<Verdict> {
    TRUST.get().map(|t| t.verify(bytes))
}
