//! Getting a feed's bytes: HTTP(S) with reqwest and rustls (ring), or a
//! local file.
//!
//! HTTP is done the way feed servers expect: a User-Agent naming signalbox,
//! conditional GET (`If-None-Match` / `If-Modified-Since`, 304 = nothing
//! new), gzip, a bounded number of redirects, a timeout over the whole
//! exchange, and a cap on the (decompressed) body so that an endless or
//! hostile response costs bounded memory. 429 and 503 carry their
//! `Retry-After`, which the scheduler honours.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

/// The User-Agent sent with every request.
pub const USER_AGENT: &str = concat!(
    "signalbox-bridge-rss/",
    env!("CARGO_PKG_VERSION"),
    " (signalbox feed bridge)"
);
/// Redirects followed before giving up (a loop ends here).
pub const MAX_REDIRECTS: usize = 10;
/// Longest Retry-After honoured: a server asking for more is asked again
/// after a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Where a feed comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An http(s) URL.
    Http(String),
    /// A local file (a path, or a `file://` URL).
    File(PathBuf),
}

impl Source {
    /// Reads a feed URL: `http://`, `https://`, `file://` or a path.
    pub fn parse(url: &str) -> Result<Source, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("empty URL".into());
        }
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            reqwest::Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
            Ok(Source::Http(url.to_string()))
        } else if let Some(path) = url.strip_prefix("file://") {
            Ok(Source::File(PathBuf::from(path)))
        } else if url.contains("://") {
            Err(format!(
                "unsupported URL {url:?}: use http://, https://, file:// or a path"
            ))
        } else {
            Ok(Source::File(PathBuf::from(url)))
        }
    }
}

/// What the last full response said, sent back for a conditional GET.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified` (for files: mtime and size).
    pub last_modified: Option<String>,
}

/// The outcome of a successful fetch.
#[derive(Debug)]
pub enum Fetched {
    /// 304 (or an unchanged file): nothing new.
    NotModified,
    /// A body and its validators.
    Body {
        /// The raw bytes (decompressed, not decoded: feed-rs honours the
        /// encoding declared in the document).
        bytes: Vec<u8>,
        /// Validators for the next conditional GET.
        validators: Validators,
    },
}

/// A failed fetch: one line, and when the server asked us to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    /// What went wrong.
    pub message: String,
    /// The server's Retry-After (429, 503), capped.
    pub retry_after: Option<DateTime<Utc>>,
}

impl FetchError {
    fn new(message: impl Into<String>) -> FetchError {
        FetchError {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Fetches feeds; one per bridge (it holds the connection pool).
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    max_bytes: u64,
    timeout: Duration,
}

impl Fetcher {
    /// A fetcher with a whole-exchange `timeout` and a body cap of
    /// `max_bytes`.
    pub fn new(timeout: Duration, max_bytes: u64) -> Result<Fetcher, String> {
        // reqwest is built without a crypto provider: the workspace uses
        // ring everywhere (no aws-lc). Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .gzip(true)
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {}", chain(&e)))?;
        Ok(Fetcher {
            client,
            max_bytes,
            timeout,
        })
    }

    /// Fetches `source`, conditionally when validators are known.
    pub async fn fetch(
        &self,
        source: &Source,
        validators: &Validators,
    ) -> Result<Fetched, FetchError> {
        match source {
            Source::Http(url) => self.fetch_http(url, validators).await,
            Source::File(path) => self.fetch_file(path.clone(), validators).await,
        }
    }

    async fn fetch_http(&self, url: &str, validators: &Validators) -> Result<Fetched, FetchError> {
        let mut request = self.client.get(url);
        if let Some(etag) = &validators.etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(modified) = &validators.last_modified {
            request = request.header(reqwest::header::IF_MODIFIED_SINCE, modified);
        }
        let mut response = request.send().await.map_err(|e| self.request_error(&e))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            let retry_after = if status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::SERVICE_UNAVAILABLE
            {
                response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, Utc::now()))
            } else {
                None
            };
            return Err(FetchError {
                message: format!("HTTP {status}"),
                retry_after,
            });
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let validators = Validators {
            etag: header(reqwest::header::ETAG),
            last_modified: header(reqwest::header::LAST_MODIFIED),
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes)
        {
            return Err(self.too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.request_error(&e))? {
            if (bytes.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(self.too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body { bytes, validators })
    }

    async fn fetch_file(
        &self,
        path: PathBuf,
        validators: &Validators,
    ) -> Result<Fetched, FetchError> {
        let max = self.max_bytes;
        let known = validators.last_modified.clone();
        let read = tokio::task::spawn_blocking(move || -> Result<Fetched, FetchError> {
            let meta = std::fs::metadata(&path)
                .map_err(|e| FetchError::new(format!("cannot read {}: {e}", path.display())))?;
            if !meta.is_file() {
                return Err(FetchError::new(format!("{} is not a file", path.display())));
            }
            let stamp = file_stamp(meta.modified().ok(), meta.len());
            if known.as_deref() == Some(stamp.as_str()) {
                return Ok(Fetched::NotModified);
            }
            if meta.len() > max {
                return Err(FetchError::new(format!("feed larger than {max} bytes")));
            }
            let bytes = std::fs::read(&path)
                .map_err(|e| FetchError::new(format!("cannot read {}: {e}", path.display())))?;
            if bytes.len() as u64 > max {
                return Err(FetchError::new(format!("feed larger than {max} bytes")));
            }
            Ok(Fetched::Body {
                bytes,
                validators: Validators {
                    etag: None,
                    last_modified: Some(stamp),
                },
            })
        });
        read.await
            .unwrap_or_else(|e| Err(FetchError::new(format!("file reader failed: {e}"))))
    }

    fn too_large(&self) -> FetchError {
        FetchError::new(format!(
            "response larger than {} bytes (--max-bytes)",
            self.max_bytes
        ))
    }

    fn request_error(&self, e: &reqwest::Error) -> FetchError {
        if e.is_timeout() {
            FetchError::new(format!(
                "no complete answer within {:.0} s",
                self.timeout.as_secs_f64()
            ))
        } else if e.is_redirect() {
            FetchError::new(format!(
                "more than {MAX_REDIRECTS} redirects (a redirect loop?)"
            ))
        } else {
            FetchError::new(chain(e))
        }
    }
}

/// A file's validator: modification time (ns) and size.
fn file_stamp(modified: Option<SystemTime>, len: u64) -> String {
    let nanos = modified
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("file:{nanos}:{len}")
}

/// An error and its causes on one line, fit for a summary.
fn chain(e: &dyn std::error::Error) -> String {
    signalbox_common::envelope::sanitize_summary(&crate::cli::error_chain(e))
}

/// A Retry-After value (seconds or an HTTP date) as a moment, capped at
/// [`MAX_RETRY_AFTER`] from `now`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let value = value.trim();
    let cap = now
        + chrono::Duration::from_std(MAX_RETRY_AFTER).unwrap_or_else(|_| chrono::Duration::days(1));
    let at = if let Ok(secs) = value.parse::<u64>() {
        now + chrono::Duration::seconds(secs.min(MAX_RETRY_AFTER.as_secs()) as i64)
    } else {
        DateTime::parse_from_rfc2822(value)
            .ok()?
            .with_timezone(&Utc)
    };
    Some(at.clamp(now, cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_urls_or_paths() {
        assert_eq!(
            Source::parse("https://x.org/f"),
            Ok(Source::Http("https://x.org/f".into()))
        );
        assert_eq!(
            Source::parse("/srv/f.xml"),
            Ok(Source::File("/srv/f.xml".into()))
        );
        assert_eq!(
            Source::parse("file:///srv/f.xml"),
            Ok(Source::File("/srv/f.xml".into()))
        );
        assert!(Source::parse("ftp://x/f").is_err());
        assert!(Source::parse("http://").is_err());
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T19:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("t");
        assert_eq!(
            parse_retry_after("120", now),
            Some(now + chrono::Duration::seconds(120))
        );
        assert_eq!(
            parse_retry_after("Tue, 24 Nov 2026 19:05:00 GMT", now),
            Some(now + chrono::Duration::minutes(5))
        );
        assert_eq!(
            parse_retry_after("99999999", now),
            Some(now + chrono::Duration::days(1))
        );
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2001 00:00:00 GMT", now),
            Some(now)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
