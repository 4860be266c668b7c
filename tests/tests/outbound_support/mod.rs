//! Helpers shared by the outbound listener tests (`listener_email.rs`,
//! `listener_feed.rs`, `listener_webhook.rs`): starting `signalbox-bridge
//! email|feed|webhook` as a process, watching health and failure records,
//! publishing with `signalbox pub`, and the two receivers a test needs — a
//! minimal SMTP server and a scripted HTTP endpoint, both on 127.0.0.1.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signalbox_common::envelope::Envelope;
use signalbox_common::failed::FailureRecord;
use signalbox_common::health::{HealthReport, HealthState};
use signalbox_common::mqtt::{ConnectOptions, Connection, Publish, Qos};
use signalbox_e2e::{bin, free_port, isolate, run_with_limit, signalbox, Finished};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// The longest any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// `signalbox-bridge ARGS…` with a private state directory, the broker at
/// `url` and a 1 s health interval; stdout and stdin closed.
pub fn bridge_cmd(url: &str, state: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("signalbox-bridge"));
    isolate(&mut cmd);
    cmd.env("SIGNALBOX_BROKER", url)
        .env("SIGNALBOX_STATE_DIR", state)
        .env("SIGNALBOX_HEALTH_INTERVAL", "1")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

/// Starts a listener process (kill it by wrapping in `KillOnDrop`).
pub fn start(url: &str, state: &Path, args: &[&str]) -> Child {
    bridge_cmd(url, state, args)
        .spawn()
        .expect("spawn signalbox-bridge")
}

/// Runs `signalbox-bridge ARGS…` expecting it to exit at start; returns
/// its output.
pub fn run_bridge(url: &str, state: &Path, args: &[&str]) -> Finished {
    run_with_limit(&mut bridge_cmd(url, state, args), WAIT)
}

/// Asserts a one-line configuration error with exit code 2 that mentions
/// `needle`.
pub fn assert_config_error(out: &Finished, needle: &str) {
    assert_eq!(
        out.code, 2,
        "exit 2 for a configuration error; stderr: {}",
        out.stderr
    );
    let stderr = out.stderr.trim();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains(needle), "{needle:?} in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `signalbox ARGS…` run to completion (off the async runtime).
pub async fn signalbox_cli(url: &str, args: &[&str]) -> Finished {
    let mut cmd = signalbox(url);
    cmd.args(args);
    tokio::task::spawn_blocking(move || run_with_limit(&mut cmd, WAIT))
        .await
        .expect("join")
}

/// A connected test client.
pub async fn client(url: &str) -> Connection {
    Connection::connect(ConnectOptions::for_url(url, &format!("t-{}", free_port())).expect("url"))
        .await
        .expect("connect")
}

/// A client subscribed to `filters`.
pub async fn watch(url: &str, filters: &[&str]) -> Connection {
    let c = client(url).await;
    let f: Vec<(String, Qos)> = filters
        .iter()
        .map(|f| (f.to_string(), Qos::AtLeastOnce))
        .collect();
    c.subscribe(&f, WAIT).await.expect("subscribe");
    c
}

/// Waits for a health report of `name` in `state`.
pub async fn health(w: &mut Connection, name: &str, state: HealthState) -> HealthReport {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = tokio::time::timeout_at(deadline, w.recv())
            .await
            .unwrap_or_else(|_| panic!("{name}: no {state:?} report"))
            .expect("open");
        if m.topic == format!("signalbox/_health/{name}") {
            if let Ok(r) = HealthReport::from_slice(&m.payload) {
                if r.state == state {
                    return r;
                }
            }
        }
    }
}

/// Waits for the failure record of `id` (non-empty).
pub async fn record(w: &mut Connection, id: &str) -> FailureRecord {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = tokio::time::timeout_at(deadline, w.recv())
            .await
            .expect("a failure record")
            .expect("open");
        if m.topic.ends_with(id) && !m.payload.is_empty() {
            return FailureRecord::from_slice(&m.payload).expect("record");
        }
    }
}

/// Waits until the failure record of `id` is cleared (an empty retained
/// publish).
pub async fn record_cleared(w: &mut Connection, id: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = tokio::time::timeout_at(deadline, w.recv())
            .await
            .expect("the record cleared")
            .expect("open");
        if m.topic.ends_with(id) && m.payload.is_empty() {
            return;
        }
    }
}

/// Publishes an envelope and waits for the broker's confirmation.
pub async fn send(p: &Connection, envelope: Envelope) -> Envelope {
    p.publish_confirmed(
        Publish::new(
            envelope.topic.clone(),
            envelope.to_vec(),
            Qos::AtLeastOnce,
            false,
        ),
        WAIT,
    )
    .await
    .expect("publish");
    envelope
}

/// One mail received by [`SmtpServer`].
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// MAIL FROM.
    pub from: String,
    /// RCPT TO, in order.
    pub to: Vec<String>,
    /// The DATA, dot-unstuffed, CRLF line ends.
    pub data: Vec<u8>,
}

/// A minimal SMTP receiver on 127.0.0.1 (RFC 5321: EHLO/HELO, MAIL, RCPT,
/// DATA, RSET, NOOP, QUIT; no TLS, no auth). Recipients listed in
/// `reject` get `550` at RCPT.
pub struct SmtpServer {
    /// Its port.
    pub port: u16,
    mails: mpsc::UnboundedReceiver<ReceivedMail>,
}

impl SmtpServer {
    /// Starts accepting on a free port (the task ends with the runtime).
    pub async fn start(reject: &[&str]) -> SmtpServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind smtp");
        let port = listener.local_addr().expect("addr").port();
        let (tx, mails) = mpsc::unbounded_channel();
        let reject: Arc<Vec<String>> = Arc::new(reject.iter().map(|r| r.to_string()).collect());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                let reject = reject.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(60),
                        smtp_session(stream, tx, reject),
                    )
                    .await;
                });
            }
        });
        SmtpServer { port, mails }
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The next mail, within [`WAIT`].
    pub async fn next(&mut self) -> ReceivedMail {
        tokio::time::timeout(WAIT, self.mails.recv())
            .await
            .expect("a mail in time")
            .expect("server running")
    }

    /// A mail arriving within `limit`, if any.
    pub async fn next_within(&mut self, limit: Duration) -> Option<ReceivedMail> {
        tokio::time::timeout(limit, self.mails.recv())
            .await
            .ok()
            .flatten()
    }
}

/// The address inside `MAIL FROM:<a@b> …` / `RCPT TO:<a@b>`.
fn angle_address(line: &str) -> String {
    match (line.find('<'), line.rfind('>')) {
        (Some(a), Some(b)) if a < b => line[a + 1..b].to_string(),
        _ => line
            .split(':')
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

async fn smtp_session(
    stream: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<ReceivedMail>,
    reject: Arc<Vec<String>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write
        .write_all(b"220 test.invalid ESMTP signalbox-e2e\r\n")
        .await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let upper = line.trim_end().to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            write
                .write_all(b"250-test.invalid\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                .await?;
        } else if upper.starts_with("HELO") {
            write.write_all(b"250 test.invalid\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = angle_address(&line);
            to.clear();
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = angle_address(&line);
            if reject.contains(&rcpt) {
                write.write_all(b"550 5.1.1 no such user here\r\n").await?;
            } else {
                to.push(rcpt);
                write.write_all(b"250 OK\r\n").await?;
            }
        } else if upper == "DATA" {
            if to.is_empty() {
                write.write_all(b"554 no valid recipients\r\n").await?;
                continue;
            }
            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = Vec::new();
            loop {
                let mut raw = Vec::new();
                if lines.read_until(b'\n', &mut raw).await? == 0 {
                    return Ok(());
                }
                if raw == b".\r\n" || raw == b".\n" {
                    break;
                }
                let unstuffed = if raw.starts_with(b"..") {
                    &raw[1..]
                } else {
                    &raw[..]
                };
                data.extend_from_slice(unstuffed);
            }
            let _ = tx.send(ReceivedMail {
                from: from.clone(),
                to: std::mem::take(&mut to),
                data,
            });
            write.write_all(b"250 OK queued\r\n").await?;
        } else if upper == "RSET" || upper == "NOOP" {
            write.write_all(b"250 OK\r\n").await?;
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"502 command not implemented\r\n").await?;
        }
    }
}

/// One request received by [`HttpReceiver`].
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// GET, POST, …
    pub method: String,
    /// The request target.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body (Content-Length).
    pub body: Vec<u8>,
    /// The status answered.
    pub status: u16,
}

/// A scripted HTTP/1.1 endpoint on 127.0.0.1: answers the statuses of
/// `script` in order, then the last one for ever.
pub struct HttpReceiver {
    /// Its port.
    pub port: u16,
    requests: mpsc::UnboundedReceiver<ReceivedRequest>,
    script: Arc<Mutex<Vec<u16>>>,
}

impl HttpReceiver {
    /// Starts on a free port.
    pub async fn start(script: &[u16]) -> HttpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind http");
        let port = listener.local_addr().expect("addr").port();
        let (tx, requests) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(script.to_vec()));
        let s = script.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                let s = s.clone();
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(30), http_session(stream, tx, s))
                            .await;
                });
            }
        });
        HttpReceiver {
            port,
            requests,
            script,
        }
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Replaces the statuses still to answer.
    pub fn script(&self, statuses: &[u16]) {
        *self.script.lock().expect("script") = statuses.to_vec();
    }

    /// The next request, within [`WAIT`].
    pub async fn next(&mut self) -> ReceivedRequest {
        tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("a request in time")
            .expect("server running")
    }

    /// A request arriving within `limit`, if any.
    pub async fn next_within(&mut self, limit: Duration) -> Option<ReceivedRequest> {
        tokio::time::timeout(limit, self.requests.recv())
            .await
            .ok()
            .flatten()
    }
}

async fn http_session(
    stream: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<ReceivedRequest>,
    script: Arc<Mutex<Vec<u16>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await?;
        let status = {
            let mut s = script.lock().expect("script");
            if s.len() > 1 {
                s.remove(0)
            } else {
                s.first().copied().unwrap_or(200)
            }
        };
        let text = format!("status {status} from the test receiver\n");
        let head = format!(
            "HTTP/1.1 {status} Scripted\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            text.len()
        );
        write.write_all(head.as_bytes()).await?;
        write.write_all(text.as_bytes()).await?;
        let _ = tx.send(ReceivedRequest {
            method,
            path,
            headers,
            body,
            status,
        });
    }
}

/// An HTTP GET of `http://ADDR/PATH` with a plain TCP stream: status and
/// body.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut all))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&all).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Waits until `pred` holds for the text of `path`.
pub async fn wait_file(path: &Path, pred: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: {text:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
