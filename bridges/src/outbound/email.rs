//! `signalbox-bridge email`: one mail per message — the "commit → mail to
//! the package alias" reaction — sent by SMTP (lettre: STARTTLS, implicit
//! TLS, auth), a sendmail binary, or delivered into a Maildir (atomic
//! tmp → new). Subject = summary; body = a readable rendering with links;
//! `X-Signalbox-Topic`, `X-Signalbox-Id` and a `Message-ID` derived from the
//! message id, so a re-send of the same message is recognised as the same
//! mail. `--digest` collects a period's messages into one mail.
//!
//! Digest and acknowledgement: the listener runtime handles one message at
//! a time and acknowledges it when the handler returns, so holding acks
//! for a whole period would stall the listener. Instead each message is
//! appended (fsynced) to `STATE_DIR/listeners/NAME/digest.jsonl` before it
//! is acknowledged; the file is the pending digest. It is reloaded on
//! start, sent every period and once more at a graceful stop, and only the
//! messages of a digest that was sent are removed from it. A crash loses
//! nothing; a digest whose sending fails stays pending and is tried again
//! next period (logged, and not a failure record: its messages were
//! acknowledged already).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::{AsyncSendmailTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use signalbox_common::envelope::format_time;
use signalbox_common::listener::{Delivery, HandlerError, HandlerResult};

use super::exec::parse_duration;
use super::flags::{self, render, ListenerFlags};
use crate::cli::{error_chain, BridgeError, BridgeResult, GlobalArgs};

/// Time an SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Time the last digest may take to go out at a graceful stop.
const FINAL_DIGEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages in one digest mail; more go into the next mail of the same
/// period (a mail of thousands of sections helps nobody).
const MAX_DIGEST_ITEMS: usize = 500;
/// Recipients taken from one message with `--to-field`.
const MAX_FIELD_RECIPIENTS: usize = 100;

/// Flags of `signalbox-bridge email`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("output").required(true).args(["smtp", "maildir", "sendmail"])))]
#[command(group(ArgGroup::new("recipients").required(true).multiple(true).args(["to", "to_field"])))]
#[command(after_help = "\
One mail per message: Subject = the summary, body = the envelope rendered
for people (topic, time, severity, source, links, details), headers
X-Signalbox-Topic and X-Signalbox-Id, and Message-ID <ID@signalbox>, the same
for every re-send of a message (mail readers show a duplicate once).
Recipients: --to, plus those named by --to-field in the message (a JSON
pointer into the envelope to a string or a list of strings); a message with
no recipient at all fails (recorded, not retried).

Outputs: --smtp URL (smtp://host:25, smtp://host:587?tls=required for
STARTTLS, smtps://user:password@host:465 for implicit TLS; or set
SIGNALBOX_SMTP_URL to keep the password out of `ps`), --sendmail PATH
(called as `PATH -i -f FROM -- RCPT…`, the mail on stdin), or --maildir DIR
(DIR/tmp → DIR/new, unique names; tmp, new and cur are created).
SMTP 4xx, timeouts and connection errors are retried, then recorded; SMTP
5xx (an unknown recipient) is recorded at once.

--digest DURATION sends one mail per DURATION (and per set of recipients)
with every message of the period. Each message is written (fsynced) to
STATE_DIR/listeners/NAME/digest.jsonl before it is acknowledged, so a crash
loses nothing: the pending digest is reloaded on start, and sent at the
next period or at a graceful stop. A digest that cannot be sent stays
pending and is tried again every period (see the log); its messages do not
become failure records, since they were acknowledged already.

Examples:
  signalbox-bridge email --name kernel-commits --filter 'signalbox/prod/git/kernel/#' \\
      --smtp smtp://127.0.0.1:25 --to kernel-maintainers@lists.example.org
  signalbox-bridge email --name owners --filter 'signalbox/prod/pkgdb/#' \\
      --sendmail /usr/sbin/sendmail --to-field /body/owner_email --digest 1h
  signalbox-bridge email --name archive --filter 'signalbox/prod/#' --maildir ~/Maildir/.bus --to me@localhost")]
pub struct EmailArgs {
    /// Flags every listener takes.
    #[command(flatten)]
    listener: ListenerFlags,
    /// Send by SMTP: smtp://[user:pass@]host[:port][?tls=required|opportunistic], smtps://…
    #[arg(
        long,
        value_name = "URL",
        env = "SIGNALBOX_SMTP_URL",
        hide_env_values = true
    )]
    smtp: Option<String>,
    /// Deliver into this Maildir (created when missing)
    #[arg(long, value_name = "DIR")]
    maildir: Option<PathBuf>,
    /// Send with this sendmail-compatible program
    #[arg(long, value_name = "PATH")]
    sendmail: Option<PathBuf>,
    /// Recipient (repeatable)
    #[arg(long, value_name = "ADDR")]
    to: Vec<String>,
    /// Recipients from the message: a JSON pointer into the envelope, e.g. /body/owner_email (repeatable)
    #[arg(long, value_name = "JSONPOINTER")]
    to_field: Vec<String>,
    /// Sender [default: signalbox@HOSTNAME]
    #[arg(long, value_name = "ADDR")]
    from: Option<String>,
    /// Send one mail per DURATION with the period's messages (e.g. 15m, 1h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    digest: Option<Duration>,
}

/// Where mail goes.
enum Output {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Sendmail(AsyncSendmailTransport<Tokio1Executor>),
    Maildir(Maildir),
}

/// A Maildir: tmp, new, cur.
pub struct Maildir {
    dir: PathBuf,
    counter: AtomicU64,
    host: String,
}

impl Maildir {
    /// Opens (creating when missing) a Maildir and proves it writable.
    pub fn open(dir: &Path) -> std::io::Result<Maildir> {
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // A colon or slash would break the name's structure.
        let host = signalbox_common::mqtt::hostname().replace(['/', ':'], "_");
        let maildir = Maildir {
            dir: dir.to_path_buf(),
            counter: AtomicU64::new(0),
            host,
        };
        let probe = maildir.dir.join("tmp").join(maildir.unique_name());
        std::fs::write(&probe, b"")?;
        std::fs::remove_file(&probe)?;
        Ok(maildir)
    }

    /// A name unique on this host: `SECS.M<micros>P<pid>Q<n>.HOST`
    /// (the modern form from the Maildir specification).
    fn unique_name(&self) -> String {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            n,
            self.host
        )
    }

    /// Writes a mail to tmp/, fsyncs it, moves it to new/; returns its path.
    pub fn deliver(&self, mail: &[u8]) -> std::io::Result<PathBuf> {
        use std::io::Write;
        let name = self.unique_name();
        let tmp = self.dir.join("tmp").join(&name);
        let new = self.dir.join("new").join(&name);
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            file.write_all(mail)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &new)?;
            // The rename is durable once the directory is synced.
            std::fs::File::open(self.dir.join("new"))?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|_| new)
    }
}

/// One message waiting in the pending digest (a line of digest.jsonl).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DigestItem {
    /// Message id.
    id: String,
    /// Where it was published.
    topic: String,
    /// Its time (the envelope's, else arrival).
    time: DateTime<Utc>,
    /// Its summary.
    summary: String,
    /// The rendering shown in the digest.
    text: String,
    /// Its recipients (digests are grouped by them).
    to: Vec<String>,
}

/// The pending digest: in memory and in its file.
struct Pending {
    items: Vec<DigestItem>,
    file: PathBuf,
}

impl Pending {
    fn load(file: PathBuf) -> std::io::Result<Pending> {
        let mut items = Vec::new();
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    match serde_json::from_str::<DigestItem>(line) {
                        Ok(item) => items.push(item),
                        // A line cut by a crash mid-append was not acknowledged:
                        // the broker delivers that message again.
                        Err(e) => {
                            tracing::warn!("{}: skipping a damaged line: {e}", file.display())
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Pending { items, file })
    }

    /// Appends an item to the file (fsynced) and to memory.
    fn push(&mut self, item: DigestItem) -> std::io::Result<()> {
        use std::io::Write;
        let mut line = serde_json::to_string(&item).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)?;
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        self.items.push(item);
        Ok(())
    }

    /// Removes sent items, rewriting the file atomically.
    fn remove(&mut self, sent: &[String]) -> std::io::Result<()> {
        use std::io::Write;
        self.items.retain(|i| !sent.contains(&i.id));
        let dir = self.file.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        for item in &self.items {
            let line = serde_json::to_string(item).map_err(std::io::Error::other)?;
            writeln!(tmp, "{line}")?;
        }
        tmp.as_file().sync_all()?;
        tmp.persist(&self.file).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The configured mailer.
struct Mailer {
    name: String,
    output: Output,
    from: Mailbox,
    to: Vec<Mailbox>,
    to_fields: Vec<String>,
    pending: Option<Arc<Mutex<Pending>>>,
}

/// Runs the email listener until SIGTERM/SIGINT.
pub fn run(global: &GlobalArgs, args: EmailArgs) -> BridgeResult {
    let (config, options) = args.listener.resolve(global)?;
    let state_dir = options.state_dir.clone();
    let mailer = Mailer::from_args(&args, state_dir.as_deref()).map_err(BridgeError::usage)?;
    let runtime = flags::tokio_runtime()?;
    runtime.block_on(async move {
        let mailer = Arc::new(mailer);
        let flusher = match (args.digest, mailer.pending.is_some()) {
            (Some(period), true) => {
                let m = mailer.clone();
                Some(tokio::spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        m.flush_digest().await;
                    }
                }))
            }
            _ => None,
        };
        let m = mailer.clone();
        let handler = move |d: Delivery| {
            let m = m.clone();
            async move { m.handle(d).await }
        };
        let result = flags::listen(&config, options, handler).await;
        if let Some(flusher) = flusher {
            flusher.abort();
            let _ = flusher.await;
            if tokio::time::timeout(FINAL_DIGEST_TIMEOUT, mailer.flush_digest())
                .await
                .is_err()
            {
                tracing::error!(
                    "{}: the last digest did not go out in time; it stays pending",
                    mailer.name
                );
            }
        }
        result.map(|_| 0)
    })
}

/// Parses an address (`a@b` or `Name <a@b>`).
fn mailbox(text: &str, flag: &str) -> anyhow::Result<Mailbox> {
    text.trim()
        .parse::<Mailbox>()
        .map_err(|e| anyhow::anyhow!("{flag} {text:?} is not a mail address: {e}"))
}

/// Makes text safe for one header line.
fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Mailer {
    fn from_args(args: &EmailArgs, state_dir: Option<&Path>) -> anyhow::Result<Mailer> {
        let output = if let Some(url) = &args.smtp {
            let shown = signalbox_common::config::mask_url_password(url);
            let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                .map_err(|e| anyhow::anyhow!("--smtp {shown:?}: {e}"))?
                .timeout(Some(SMTP_TIMEOUT))
                .build();
            Output::Smtp(transport)
        } else if let Some(path) = &args.sendmail {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path)
                .map_err(|e| anyhow::anyhow!("--sendmail {}: {e}", path.display()))?;
            if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                anyhow::bail!("--sendmail {}: not an executable file", path.display());
            }
            Output::Sendmail(AsyncSendmailTransport::<Tokio1Executor>::new_with_command(
                path,
            ))
        } else if let Some(dir) = &args.maildir {
            let maildir = Maildir::open(dir)
                .map_err(|e| anyhow::anyhow!("--maildir {}: {e}", dir.display()))?;
            Output::Maildir(maildir)
        } else {
            anyhow::bail!("one of --smtp, --sendmail or --maildir is needed");
        };
        let from = match &args.from {
            Some(f) => mailbox(f, "--from")?,
            None => format!("signalbox@{}", signalbox_common::mqtt::hostname())
                .parse()
                .or_else(|_| "signalbox@localhost".parse())
                .map_err(|e| anyhow::anyhow!("no default sender: {e}; use --from"))?,
        };
        let to = args
            .to
            .iter()
            .map(|t| mailbox(t, "--to"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for pointer in &args.to_field {
            if !pointer.starts_with('/') {
                anyhow::bail!(
                    "--to-field {pointer:?}: use a JSON pointer such as /body/owner_email"
                );
            }
        }
        let pending = match args.digest {
            Some(period) if period.is_zero() => anyhow::bail!("--digest must be longer than 0"),
            Some(_) => {
                let dir =
                    state_dir.ok_or_else(|| anyhow::anyhow!("--digest needs a state directory"))?;
                let file = dir.join("digest.jsonl");
                let pending = Pending::load(file.clone()).map_err(|e| {
                    anyhow::anyhow!("cannot open the pending digest {}: {e}", file.display())
                })?;
                Some(Arc::new(Mutex::new(pending)))
            }
            None => None,
        };
        Ok(Mailer {
            name: args.listener.name.clone(),
            output,
            from,
            to,
            to_fields: args.to_field.clone(),
            pending,
        })
    }

    /// The recipients of one message: --to plus --to-field's.
    fn recipients(&self, d: &Delivery) -> Result<Vec<Mailbox>, HandlerError> {
        let mut all = self.to.clone();
        if !self.to_fields.is_empty() {
            let value = d.envelope().and_then(|e| serde_json::to_value(e).ok());
            for pointer in &self.to_fields {
                let found = value.as_ref().and_then(|v| v.pointer(pointer));
                let texts: Vec<&str> = match found {
                    Some(serde_json::Value::String(s)) => s.split(',').collect(),
                    Some(serde_json::Value::Array(list)) => {
                        list.iter().filter_map(|v| v.as_str()).collect()
                    }
                    _ => Vec::new(),
                };
                for text in texts
                    .into_iter()
                    .filter(|t| !t.trim().is_empty())
                    .take(MAX_FIELD_RECIPIENTS)
                {
                    let mb = text.trim().parse::<Mailbox>().map_err(|e| {
                        HandlerError::permanent(format!(
                            "{pointer}: {text:?} is not a mail address: {e}"
                        ))
                    })?;
                    if !all.contains(&mb) {
                        all.push(mb);
                    }
                }
            }
        }
        if all.is_empty() {
            return Err(HandlerError::permanent(format!(
                "no recipient: the message has no address at {}",
                self.to_fields.join(" or ")
            )));
        }
        Ok(all)
    }

    async fn handle(&self, d: Delivery) -> HandlerResult {
        let to = self.recipients(&d)?;
        let rendered = render(&d);
        match &self.pending {
            Some(pending) => {
                let item = DigestItem {
                    id: d.id.clone(),
                    topic: d.topic.clone(),
                    time: d.envelope().map(|e| e.time).unwrap_or_else(Utc::now),
                    summary: rendered.summary,
                    text: rendered.text,
                    to: to.iter().map(ToString::to_string).collect(),
                };
                let pending = pending.clone();
                tokio::task::spawn_blocking(move || {
                    pending.lock().unwrap_or_else(|p| p.into_inner()).push(item)
                })
                .await
                .map_err(|e| format!("adding to the digest: {e}"))?
                .map_err(|e| format!("cannot write the pending digest: {e}"))?;
                Ok(None)
            }
            None => {
                let mut builder = Message::builder()
                    .from(self.from.clone())
                    .subject(header_text(&rendered.summary))
                    .message_id(Some(format!("<{}@signalbox>", d.id)))
                    .raw_header(HeaderValue::new(
                        HeaderName::new_from_ascii_str("X-Signalbox-Topic"),
                        header_text(&d.topic),
                    ))
                    .raw_header(HeaderValue::new(
                        HeaderName::new_from_ascii_str("X-Signalbox-Id"),
                        header_text(&d.id),
                    ))
                    .header(ContentType::TEXT_PLAIN);
                if let Some(e) = d.envelope() {
                    builder = builder.date(SystemTime::from(e.time));
                }
                for mb in to {
                    builder = builder.to(mb);
                }
                let body = format!("{}\n-- \nsignalbox listener {}\n", rendered.text, self.name);
                let message = builder
                    .body(body)
                    .map_err(|e| HandlerError::permanent(format!("cannot build the mail: {e}")))?;
                self.send(message).await.map(|_| None)
            }
        }
    }

    async fn send(&self, message: Message) -> Result<(), HandlerError> {
        match &self.output {
            Output::Smtp(t) => t.send(message).await.map(|_| ()).map_err(|e| {
                let text = format!("SMTP: {}", error_chain(&e));
                if e.is_permanent() {
                    HandlerError::permanent(text)
                } else {
                    HandlerError::transient(text)
                }
            }),
            Output::Sendmail(t) => t
                .send(message)
                .await
                .map_err(|e| HandlerError::transient(format!("sendmail: {}", error_chain(&e)))),
            Output::Maildir(m) => {
                let bytes = message.formatted();
                let dir = m.dir.clone();
                let result = tokio::task::block_in_place(|| m.deliver(&bytes));
                result
                    .map(|_| ())
                    .map_err(|e| HandlerError::transient(format!("Maildir {}: {e}", dir.display())))
            }
        }
    }

    /// Sends the pending digest: one mail per set of recipients; removes
    /// what was sent. Failures are logged and retried next period.
    async fn flush_digest(&self) {
        let Some(pending) = &self.pending else { return };
        let items = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .items
            .clone();
        if items.is_empty() {
            return;
        }
        let mut groups: BTreeMap<Vec<String>, Vec<DigestItem>> = BTreeMap::new();
        for item in items {
            groups.entry(item.to.clone()).or_default().push(item);
        }
        let mut sent: Vec<String> = Vec::new();
        for (to, group) in groups {
            for chunk in group.chunks(MAX_DIGEST_ITEMS) {
                match self.digest_mail(&to, chunk) {
                    Ok(message) => match self.send(message).await {
                        Ok(()) => sent.extend(chunk.iter().map(|i| i.id.clone())),
                        Err(e) => {
                            tracing::error!("{}: digest of {} messages to {} not sent (kept for the next period): {e}", self.name, chunk.len(), to.join(", "));
                        }
                    },
                    Err(e) => tracing::error!(
                        "{}: cannot build a digest to {}: {e}",
                        self.name,
                        to.join(", ")
                    ),
                }
            }
        }
        if sent.is_empty() {
            return;
        }
        let pending = pending.clone();
        let result = tokio::task::spawn_blocking(move || {
            pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&sent)
        })
        .await;
        if let Ok(Err(e)) | Err(e) = result.map_err(std::io::Error::other) {
            // Sent but still in the file: the next start would send them again.
            tracing::error!("{}: cannot update the pending digest: {e}", self.name);
        }
    }

    fn digest_mail(&self, to: &[String], items: &[DigestItem]) -> anyhow::Result<Message> {
        let first = &items[0];
        let last = &items[items.len() - 1];
        let subject = match items.len() {
            1 => format!("[signalbox digest] {}", first.summary),
            n => format!("[signalbox digest] {n} messages: {}, …", first.summary),
        };
        let mut body = format!(
            "{} message{} from {} to {}\n\n",
            items.len(),
            if items.len() == 1 { "" } else { "s" },
            format_time(&first.time),
            format_time(&last.time)
        );
        for (n, item) in items.iter().enumerate() {
            body.push_str(&format!("{}. {}  ({})\n", n + 1, item.summary, item.topic));
        }
        for item in items {
            body.push_str(
                "\n========================================================================\n",
            );
            body.push_str(&item.text);
        }
        body.push_str(&format!(
            "\n-- \nsignalbox listener {} (digest)\n",
            self.name
        ));
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(header_text(&subject))
            .message_id(Some(format!(
                "<digest.{}.{}@signalbox>",
                first.id,
                items.len()
            )))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Signalbox-Digest"),
                items.len().to_string(),
            ))
            .header(ContentType::TEXT_PLAIN);
        for t in to {
            builder = builder.to(mailbox(t, "digest recipient")?);
        }
        Ok(builder.body(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maildir_delivery_is_tmp_then_new_with_unique_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = Maildir::open(&dir.path().join("Maildir")).expect("open");
        let a = md.deliver(b"Subject: a\r\n\r\nA\r\n").expect("deliver");
        let b = md.deliver(b"Subject: b\r\n\r\nB\r\n").expect("deliver");
        assert_ne!(a, b);
        assert!(a.starts_with(dir.path().join("Maildir/new")));
        assert_eq!(
            std::fs::read_dir(dir.path().join("Maildir/tmp"))
                .expect("tmp")
                .count(),
            0
        );
        assert_eq!(std::fs::read(&b).expect("read"), b"Subject: b\r\n\r\nB\r\n");
    }

    #[test]
    fn the_pending_digest_survives_a_reload_and_forgets_what_was_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("l/digest.jsonl");
        let mut p = Pending::load(file.clone()).expect("load");
        for n in 0..3 {
            p.push(DigestItem {
                id: format!("id{n}"),
                topic: "t".into(),
                time: Utc::now(),
                summary: format!("s{n}"),
                text: "x".into(),
                to: vec!["a@example.org".into()],
            })
            .expect("push");
        }
        // A line cut by a crash is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"id\":\"cut"))
            .expect("append");
        let mut again = Pending::load(file.clone()).expect("reload");
        assert_eq!(again.items.len(), 3);
        again.remove(&["id0".into(), "id2".into()]).expect("remove");
        let ids: Vec<String> = Pending::load(file)
            .expect("reload")
            .items
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids, ["id1"]);
    }

    #[test]
    fn header_text_is_one_line() {
        assert_eq!(header_text("a\r\nBcc: x@y"), "a  Bcc: x@y");
    }
}
