//! What the bridge remembers of each feed between polls and across
//! restarts: the entries already seen (so a restart republishes nothing and
//! an entry that drops out of the feed and comes back is not new), the
//! HTTP validators for conditional GET, and the feed's failure streak (so
//! the "broken" and "recovered" events are sent once, even from cron).
//!
//! One JSON file per feed, `STATE_DIR/rss/{feed}.json`, replaced atomically
//! (temp file in the same directory, fsync, rename): a crash leaves the old
//! state or the new one, never half of one.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use signalbox_common::envelope::time_ms;

/// Ids remembered per feed. A feed shows tens of entries; this covers
/// years of a busy one that keeps old entries, and bounds the file (~1 MB).
pub const MAX_SEEN: usize = 10_000;
/// An id not seen in the feed for this long is forgotten: by then the feed
/// has long dropped it.
pub const SEEN_MAX_AGE_DAYS: i64 = 180;
/// Version of the file format.
const FORMAT_VERSION: u32 = 1;

/// The remembered state of one feed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedState {
    /// Format version.
    pub v: u32,
    /// The URL the validators belong to; a changed URL drops them.
    pub url: String,
    /// Whether a poll ever succeeded: the first one marks entries seen
    /// instead of publishing them.
    #[serde(default)]
    pub initialized: bool,
    /// `ETag` of the last full response.
    #[serde(default)]
    pub etag: Option<String>,
    /// `Last-Modified` of the last full response (for files: mtime and size).
    #[serde(default)]
    pub last_modified: Option<String>,
    /// Entry id → when it was last seen in the feed (Unix seconds).
    #[serde(default)]
    pub seen: HashMap<String, i64>,
    /// When the feed was last polled.
    #[serde(
        default,
        with = "time_ms::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_poll: Option<DateTime<Utc>>,
    /// When a poll last succeeded.
    #[serde(
        default,
        with = "time_ms::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_success: Option<DateTime<Utc>>,
    /// The error of the last poll, if it failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Consecutive failed polls (0 when healthy).
    #[serde(default)]
    pub failures: u32,
    /// Do not poll before this (a server's Retry-After).
    #[serde(
        default,
        with = "time_ms::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after: Option<DateTime<Utc>>,
    /// Entries published (or spooled) since the state was created.
    #[serde(default)]
    pub published: u64,
}

impl FeedState {
    /// The state of a feed never polled.
    pub fn new(url: &str) -> FeedState {
        FeedState {
            v: FORMAT_VERSION,
            url: url.to_string(),
            initialized: false,
            etag: None,
            last_modified: None,
            seen: HashMap::new(),
            last_poll: None,
            last_success: None,
            last_error: None,
            failures: 0,
            retry_after: None,
            published: 0,
        }
    }

    /// Loads the state of `feed`, or a fresh one; a state for another URL
    /// keeps its seen entries but not its validators. An unreadable file is
    /// an error (not silently a new feed, which would hide its entries).
    pub fn load(dir: &Path, feed: &str, url: &str) -> Result<FeedState, String> {
        let path = path_of(dir, feed);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FeedState::new(url)),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut state: FeedState = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{} is not a feed state ({e}); move it away to start over",
                path.display()
            )
        })?;
        if state.url != url {
            state.url = url.to_string();
            state.etag = None;
            state.last_modified = None;
        }
        Ok(state)
    }

    /// Writes the state atomically.
    pub fn save(&self, dir: &Path, feed: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path_of(dir, feed)).map_err(|e| e.error)?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// Whether `id` was seen.
    pub fn is_seen(&self, id: &str) -> bool {
        self.seen.contains_key(id)
    }

    /// Records ids as seen now (present in the feed), then forgets ids
    /// older than the age limit and, past [`MAX_SEEN`], the least recently
    /// seen.
    pub fn mark_seen<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>, now: DateTime<Utc>) {
        let stamp = now.timestamp();
        for id in ids {
            self.seen.insert(id.to_string(), stamp);
        }
        let oldest = (now - Duration::days(SEEN_MAX_AGE_DAYS)).timestamp();
        self.seen.retain(|_, t| *t >= oldest);
        if self.seen.len() > MAX_SEEN {
            let mut stamps: Vec<i64> = self.seen.values().copied().collect();
            stamps.sort_unstable_by(|a, b| b.cmp(a));
            let cutoff = stamps[MAX_SEEN - 1];
            self.seen.retain(|_, t| *t >= cutoff);
            // Ties at the cutoff may leave a few more; trim them arbitrarily.
            if self.seen.len() > MAX_SEEN {
                let extra: Vec<String> = self
                    .seen
                    .iter()
                    .filter(|(_, t)| **t == cutoff)
                    .map(|(k, _)| k.clone())
                    .take(self.seen.len() - MAX_SEEN)
                    .collect();
                for k in extra {
                    self.seen.remove(&k);
                }
            }
        }
    }
}

/// Where the state of `feed` lives.
pub fn path_of(dir: &Path, feed: &str) -> PathBuf {
    dir.join(format!("{feed}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids_survive_a_reload_and_are_bounded_by_age_and_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Utc::now();
        let mut s = FeedState::new("https://x/feed");
        s.mark_seen(["a", "b"], now - Duration::days(SEEN_MAX_AGE_DAYS + 1));
        s.mark_seen(["b", "c"], now);
        assert!(!s.is_seen("a") && s.is_seen("b") && s.is_seen("c"));
        s.etag = Some("\"v1\"".into());
        s.save(dir.path(), "f").expect("saves");
        let again = FeedState::load(dir.path(), "f", "https://x/feed").expect("loads");
        assert!(again.is_seen("b") && again.etag.is_some());
        let moved = FeedState::load(dir.path(), "f", "https://y/feed").expect("loads");
        assert!(
            moved.is_seen("b") && moved.etag.is_none(),
            "a new URL drops validators only"
        );

        let ids: Vec<String> = (0..MAX_SEEN + 50).map(|i| format!("id{i}")).collect();
        let mut big = FeedState::new("u");
        big.mark_seen(
            ids[..60].iter().map(String::as_str),
            now - Duration::days(1),
        );
        big.mark_seen(ids[60..].iter().map(String::as_str), now);
        assert_eq!(big.seen.len(), MAX_SEEN);
        // Every recently seen id stays; of the 60 older ones (all seen at
        // the same moment), which 50 are forgotten is arbitrary.
        assert!(ids[60..].iter().all(|id| big.is_seen(id)));
        assert_eq!(ids[..60].iter().filter(|id| big.is_seen(id)).count(), 10);
    }

    #[test]
    fn a_corrupt_state_is_an_error_not_a_new_feed() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(path_of(dir.path(), "f"), b"{not json").expect("write");
        assert!(FeedState::load(dir.path(), "f", "u").is_err());
    }
}
