//! `signalbox-bridge webhook`: POST each message to an HTTP endpoint — the
//! bug-tracker update, the chat notification. The payload is sent as it is
//! (the JSON envelope), signed GitHub-style when a secret is set. 2xx is
//! done; 4xx is a failure that retrying will not fix (recorded at once);
//! 5xx, 408, 429, timeouts and connection errors are retried, then recorded.
//! The record names the status and the start of the response body.

use std::time::Duration;

use clap::Args;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use sha2::Sha256;
use signalbox_common::envelope::Payload;
use signalbox_common::failed::one_line;
use signalbox_common::listener::{Delivery, HandlerError, HandlerResult};

use super::flags::{self, ListenerFlags};
use crate::cli::{error_chain, BridgeError, BridgeResult, GlobalArgs};

/// Most of a response body kept for the failure record.
const BODY_EXCERPT: usize = 300;

/// Flags of `signalbox-bridge webhook`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each message is POSTed to --url with its payload as the body (the JSON
envelope: Content-Type application/json; other payloads as they are) and the
headers X-Signalbox-Topic, X-Signalbox-Id, X-Signalbox-Attempt and
X-Signalbox-Replay (1 on an operator's replay). With --secret, the header
X-Signalbox-Signature: sha256=HEX is the HMAC-SHA256 of the body with the
secret (as GitHub's X-Hub-Signature-256), so the receiver can check where it
came from. Redirects are not followed.

Outcome: 2xx = done. 4xx (but 408 and 429) = failed at once, without
retries in process: the request itself is wrong, so the failure record (with
the status and the start of the response body) waits for the operator, who
replays it once the receiver is fixed (`signalbox failed replay NAME --all`).
5xx, 408, 429, a timeout or a connection error = retried --retries times,
then recorded.

Examples:
  signalbox-bridge webhook --name bugzilla --filter 'signalbox/prod/git/#' \\
      --url https://bugzilla.example.org/hooks/signalbox --secret-file /etc/signalbox/bz.secret
  signalbox-bridge webhook --name chat --filter 'signalbox/prod/koji/build/failed' \\
      --url http://127.0.0.1:8065/hooks/abc --header 'Authorization: Bearer TOKEN'")]
pub struct WebhookArgs {
    /// Flags every listener takes.
    #[command(flatten)]
    listener: ListenerFlags,
    /// The endpoint (http:// or https://)
    #[arg(long, value_name = "URL")]
    url: String,
    /// An extra request header, `Name: value` (repeatable)
    #[arg(long = "header", value_name = "K:V")]
    headers: Vec<String>,
    /// Sign each body with HMAC-SHA256 and this secret (visible in `ps`: prefer --secret-file or the environment)
    #[arg(
        long,
        value_name = "SECRET",
        env = "SIGNALBOX_WEBHOOK_SECRET",
        hide_env_values = true,
        conflicts_with = "secret_file"
    )]
    secret: Option<String>,
    /// Read the signing secret from this file (surrounding whitespace ignored)
    #[arg(long, value_name = "FILE")]
    secret_file: Option<std::path::PathBuf>,
    /// Seconds a request may take before it counts as failed (and is retried)
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    timeout: f64,
}

/// Runs the webhook listener until SIGTERM/SIGINT.
pub fn run(global: &GlobalArgs, args: WebhookArgs) -> BridgeResult {
    let (config, options) = args.listener.resolve(global)?;
    let hook = Webhook::from_args(&args).map_err(BridgeError::usage)?;
    let runtime = flags::tokio_runtime()?;
    runtime.block_on(async move {
        let hook = std::sync::Arc::new(hook);
        let handler = move |d: Delivery| {
            let hook = hook.clone();
            async move { hook.post(d).await }
        };
        flags::listen(&config, options, handler).await?;
        Ok(0)
    })
}

/// Parses `Name: value` (or `Name=value`) into a header.
fn parse_header(text: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = text
        .split_once(':')
        .or_else(|| text.split_once('='))
        .ok_or_else(|| anyhow::anyhow!("--header {text:?}: use 'Name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        anyhow::anyhow!("--header {text:?}: {:?} is not a header name", name.trim())
    })?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| {
        anyhow::anyhow!("--header {text:?}: the value has characters a header cannot carry")
    })?;
    Ok((name, value))
}

/// The HMAC-SHA256 of `body` with `secret`, as `sha256=<hex>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// A configured endpoint.
struct Webhook {
    url: reqwest::Url,
    client: reqwest::Client,
    secret: Option<Vec<u8>>,
}

impl Webhook {
    fn from_args(args: &WebhookArgs) -> anyhow::Result<Webhook> {
        let url = reqwest::Url::parse(&args.url)
            .map_err(|e| anyhow::anyhow!("--url {:?}: {e}", args.url))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            anyhow::bail!(
                "--url {:?}: use an http:// or https:// URL with a host",
                args.url
            );
        }
        if !args.timeout.is_finite() || args.timeout <= 0.0 {
            anyhow::bail!("--timeout must be a positive number of seconds");
        }
        let mut headers = HeaderMap::new();
        for h in &args.headers {
            let (name, value) = parse_header(h)?;
            headers.append(name, value);
        }
        let secret = match (&args.secret, &args.secret_file) {
            (Some(s), _) => Some(s.as_bytes().to_vec()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read --secret-file {}: {e}", path.display())
                })?;
                Some(text.trim().as_bytes().to_vec())
            }
            (None, None) => None,
        };
        if secret.as_ref().is_some_and(Vec::is_empty) {
            anyhow::bail!("the webhook secret is empty");
        }
        // rustls needs its crypto provider chosen once per process: ring, as
        // everywhere in signalbox. An error only means one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs_f64(args.timeout))
            .user_agent(concat!("signalbox-webhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))?;
        Ok(Webhook {
            url,
            client,
            secret,
        })
    }

    async fn post(&self, d: Delivery) -> HandlerResult {
        let content_type = match d.decoded.as_ref() {
            Payload::Envelope(_) | Payload::Json(_) => "application/json",
            Payload::Text(_) => "text/plain; charset=utf-8",
            Payload::Binary(_) => "application/octet-stream",
        };
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, content_type)
            .header("X-Signalbox-Id", d.id.as_str())
            .header("X-Signalbox-Attempt", d.attempt.to_string())
            .header("X-Signalbox-Replay", if d.replay { "1" } else { "0" });
        // A topic is UTF-8; a header value may not be: send it when it fits.
        if let Ok(topic) = HeaderValue::from_str(&d.topic) {
            request = request.header("X-Signalbox-Topic", topic);
        }
        if let Some(secret) = &self.secret {
            request = request.header("X-Signalbox-Signature", signature(secret, &d.payload));
        }
        let response = request.body(d.payload.clone()).send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out".to_string()
            } else {
                error_chain(&e)
            };
            HandlerError::transient(format!("POST {}: {what}", self.url))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(None);
        }
        let excerpt = body_excerpt(response).await;
        let mut message = format!("HTTP {status}");
        if status.is_redirection() {
            message.push_str(" (redirects are not followed: fix --url)");
        }
        if !excerpt.is_empty() {
            message.push_str(": ");
            message.push_str(&excerpt);
        }
        let retry = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
        Err(if retry {
            HandlerError::transient(message)
        } else {
            HandlerError::permanent(message)
        })
    }
}

/// The start of a response body, on one line.
async fn body_excerpt(mut response: reqwest::Response) -> String {
    let mut kept: Vec<u8> = Vec::new();
    while kept.len() < BODY_EXCERPT {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let cut = kept.len() > BODY_EXCERPT;
    kept.truncate(BODY_EXCERPT);
    let text = String::from_utf8_lossy(&kept).into_owned();
    let mut line = one_line(text.trim());
    if cut {
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_githubs_documented_example() {
        // docs.github.com "Validating webhook deliveries", test values.
        assert_eq!(
            signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn headers_parse_or_explain() {
        let (n, v) = parse_header("Authorization: Bearer abc").expect("header");
        assert_eq!(n.as_str(), "authorization");
        assert_eq!(v.to_str().ok(), Some("Bearer abc"));
        assert!(parse_header("no separator").is_err());
        assert!(parse_header("bad name: x").is_err());
    }
}
