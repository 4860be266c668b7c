//! `signalbox-bridge mail`: one mail from a procmail / sendmail pipe, or
//! every new mail of a Maildir, as a message on
//! `{prefix}/{env}/mail/{list}/received`.
//!
//! The list is the List-Id's label (RFC 2919: `devel` in
//! `<devel.lists.example.org>`), else `--system`, else the recipient's local
//! part (Delivered-To, X-Original-To, Envelope-To, else the first To).
//!
//! Parsing is mail-parser's (RFC 5322, MIME, RFC 2047 encoded words in any
//! charset, quoted-printable and base64, HTML converted to text); this module
//! only picks the fields. What does not look like a mail at all (no header
//! line first) is still published, as base64, with severity `warning`:
//! nothing handed to the bridge is dropped.
//!
//! Exit codes: 0 published (PUBACK) or durably spooled; 65 (EX_DATAERR)
//! empty input; 75 (EX_TEMPFAIL) neither published nor spooled (the MTA
//! retries), also when the configuration cannot be read; 2 bad flags.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use base64::Engine as _;
use clap::Args;
use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders};
use serde::Serialize;
use serde_json::json;
use signalbox_common::envelope::{Envelope, Severity};
use signalbox_common::mqtt::{Publish, Qos};
use signalbox_common::spool::Delivery;
use signalbox_common::topic;

use crate::cli::{timeout_arg, BridgeError, BridgeResult, GlobalArgs, EXIT_DATAERR, EXIT_TEMPFAIL};
use crate::session::{self, Session, DEFAULT_TIMEOUT_S};

/// The body's `text` holds at most this many bytes of the mail's text.
pub const TEXT_MAX: usize = 8 * 1024;
/// At most this much of the input is kept in memory and parsed; the rest is
/// counted (so `size` is right) but not read into memory. A 50 MB mail fits;
/// memory stays bounded for any input.
pub const INPUT_MAX: usize = 64 * 1024 * 1024;
/// Input that is not a mail is carried whole up to this size (base64 makes
/// it a third larger; brokers commonly cap messages at 16 MiB or less).
pub const RAW_MAX: usize = 4 * 1024 * 1024;
/// HTML rendered to text at most (see [`html_to_text`]).
pub const HTML_MAX: usize = 256 * 1024;
/// Line width of HTML rendered to text: wide, so that paragraphs wrap
/// rarely (a reader's terminal wraps them again anyway).
const HTML_WIDTH: usize = 200;
/// Attachments listed at most (a mail with thousands of parts must not make
/// a huge message).
pub const ATTACHMENTS_MAX: usize = 200;
/// A subject is carried up to this many bytes (a header can be huge).
pub const SUBJECT_MAX: usize = 2048;
/// Display names and addresses are carried up to this many bytes.
pub const NAME_MAX: usize = 512;
/// Addresses (and References ids) listed at most per field.
pub const ADDRESSES_MAX: usize = 100;

/// Flags of `signalbox-bridge mail`.
#[derive(Debug, Args)]
#[command(after_help = "\
Reads one RFC 5322 mail on standard input (a procmail or sendmail pipe), or with
--maildir publishes every mail in DIR/new and moves each to DIR/cur once it is
published or spooled.

Topic: {prefix}/{env}/mail/{list}/received, list = the List-Id's label, else
--system, else the recipient's local part. Body: from, to, cc, subject, date,
message_id, in_reply_to, references, list_id, text (first 8 KiB), attachments
(name, type, size), size.

Exit codes: 0 published or spooled, 65 empty input, 75 neither (the MTA should
retry), 2 bad flags.

Examples (procmailrc):
  :0 c
  | signalbox-bridge mail --system bugzilla

  signalbox-bridge mail --maildir ~/Maildir")]
pub struct MailArgs {
    /// The list (topic level) when the mail has no List-Id
    #[arg(long, value_name = "NAME")]
    pub system: Option<String>,
    /// Publish every mail in DIR/new (then moved to DIR/cur) instead of stdin
    #[arg(long, value_name = "DIR")]
    pub maildir: Option<PathBuf>,
    /// Seconds to spend on the bus before spooling instead
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_S)]
    pub timeout: f64,
}

/// A person or mailbox in an address field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mailbox {
    /// Display name, decoded (`Jesse Keating`).
    pub name: Option<String>,
    /// The address (`jkeating@example.org`).
    pub address: Option<String>,
}

impl Mailbox {
    /// `Name <addr>`, `addr` or `Name`.
    pub fn display(&self) -> String {
        match (&self.name, &self.address) {
            (Some(n), Some(a)) => format!("{n} <{a}>"),
            (Some(n), None) => n.clone(),
            (None, Some(a)) => a.clone(),
            (None, None) => String::new(),
        }
    }
}

/// An attachment: what it is, never its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// File name, decoded (RFC 2231 / 2047), if given.
    pub name: Option<String>,
    /// MIME type, lower case (`application/pdf`).
    #[serde(rename = "type")]
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: u64,
}

/// The fields of a mail that go into the message body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MailFields {
    /// The sender (first From).
    pub from: Option<Mailbox>,
    /// Recipients.
    pub to: Vec<Mailbox>,
    /// Copies.
    pub cc: Vec<Mailbox>,
    /// The subject, decoded, one line.
    pub subject: Option<String>,
    /// The Date header as RFC 3339 (with its own offset), when valid.
    pub date: Option<String>,
    /// Message-ID with angle brackets.
    pub message_id: Option<String>,
    /// The first In-Reply-To id with angle brackets.
    pub in_reply_to: Option<String>,
    /// References ids with angle brackets, oldest first.
    pub references: Vec<String>,
    /// The List-Id's identifier (`devel.lists.example.org`).
    pub list_id: Option<String>,
    /// The first text part (HTML converted to text), at most [`TEXT_MAX`]
    /// bytes.
    pub text: String,
    /// Whether `text` was cut.
    pub text_truncated: bool,
    /// Attachments (at most [`ATTACHMENTS_MAX`]).
    pub attachments: Vec<Attachment>,
    /// Size of the whole mail in bytes.
    pub size: u64,
    /// The input was larger than [`INPUT_MAX`]: only its start was parsed.
    pub truncated: bool,
    /// The recipient from the delivery headers (Delivered-To, X-Original-To,
    /// Envelope-To), used for the topic when there is no List-Id.
    #[serde(skip)]
    pub delivered_to: Option<String>,
}

/// What the input turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A mail.
    Mail(Box<MailFields>),
    /// Not a mail: published raw.
    NotMail {
        /// Why it is not taken for a mail.
        reason: String,
    },
}

/// Input read from a pipe or a file: at most [`INPUT_MAX`] bytes kept, the
/// total counted.
#[derive(Debug, Clone)]
pub struct Input {
    /// The bytes kept.
    pub bytes: Vec<u8>,
    /// The total size of the input.
    pub size: u64,
}

impl Input {
    /// Reads everything from `reader`, keeping at most [`INPUT_MAX`] bytes.
    pub fn read(mut reader: impl Read) -> std::io::Result<Input> {
        let mut bytes = Vec::new();
        (&mut reader)
            .take(INPUT_MAX as u64)
            .read_to_end(&mut bytes)?;
        let mut size = bytes.len() as u64;
        // Drain the rest, so that the sender is not cut off mid-write and
        // `size` is the real size.
        let mut sink = [0u8; 64 * 1024];
        loop {
            match reader.read(&mut sink) {
                Ok(0) => break,
                Ok(n) => size += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Input { bytes, size })
    }

    /// Whether only part of the input was kept.
    pub fn truncated(&self) -> bool {
        self.size > self.bytes.len() as u64
    }
}

/// Strips an mbox `From ` envelope line (procmail passes one).
fn strip_from_line(raw: &[u8]) -> &[u8] {
    if raw.starts_with(b"From ") {
        match raw.iter().position(|&b| b == b'\n') {
            Some(i) => &raw[i + 1..],
            None => &[],
        }
    } else {
        raw
    }
}

/// Whether the first line is a header field (`Name: value`, RFC 5322 ftext
/// name, obsolete whitespace before the colon allowed).
pub fn starts_with_header(raw: &[u8]) -> bool {
    let line_end = raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len());
    let line = &raw[..line_end];
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = &line[..colon];
    let name_end = name
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    name_end > 0
        && name[..name_end]
            .iter()
            .all(|&b| (33..=126).contains(&b) && b != b':')
}

/// Parses a mail; never panics, whatever the bytes.
pub fn parse(input: &Input) -> Parsed {
    let raw = strip_from_line(&input.bytes);
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Parsed::NotMail {
            reason: "no content".into(),
        };
    }
    if !starts_with_header(raw) {
        return Parsed::NotMail {
            reason: "input does not start with a mail header".into(),
        };
    }
    // mail-parser is written never to panic; a panic would still lose the
    // mail, so it is contained here and the input published raw instead.
    let fields = std::panic::catch_unwind(|| extract(raw, input));
    match fields {
        Ok(Some(fields)) => Parsed::Mail(Box::new(fields)),
        Ok(None) => Parsed::NotMail {
            reason: "no mail header found".into(),
        },
        Err(_) => Parsed::NotMail {
            reason: "the mail parser failed on this input".into(),
        },
    }
}

fn extract(raw: &[u8], input: &Input) -> Option<MailFields> {
    let message = MessageParser::default().parse(raw)?;
    if message.headers().is_empty() {
        return None;
    }
    let text = match message.text_part(0) {
        Some(part) if part.is_text_html() => message.body_html(0).map(|html| html_to_text(&html)),
        _ => message.body_text(0).map(|t| t.replace("\r\n", "\n")),
    };
    let (text, text_truncated) = match text {
        Some(text) => cut(text.trim_end(), TEXT_MAX),
        None => (String::new(), false),
    };
    let attachments = message
        .attachments()
        .take(ATTACHMENTS_MAX)
        .map(|part| Attachment {
            name: part
                .attachment_name()
                .map(one_line)
                .filter(|n| !n.is_empty()),
            content_type: part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into())
                .to_ascii_lowercase(),
            size: part.contents().len() as u64,
        })
        .collect();
    let date = message.date().and_then(|d| {
        chrono::DateTime::parse_from_rfc3339(&d.to_rfc3339())
            .ok()
            .map(|t| t.to_rfc3339())
    });
    Some(MailFields {
        from: message.from().and_then(|a| mailboxes(a).into_iter().next()),
        to: message
            .all_to()
            .flat_map(mailboxes)
            .take(ADDRESSES_MAX)
            .collect(),
        cc: message
            .all_cc()
            .flat_map(mailboxes)
            .take(ADDRESSES_MAX)
            .collect(),
        subject: message.subject().map(|s| cut(&one_line(s), SUBJECT_MAX).0),
        date,
        message_id: message.message_id().map(bracket),
        in_reply_to: ids(message.in_reply_to()).into_iter().next(),
        references: ids(message.references()),
        list_id: message.header_raw("List-Id").and_then(list_id),
        text,
        text_truncated,
        attachments,
        size: input.size,
        truncated: input.truncated(),
        delivered_to: ["Delivered-To", "X-Original-To", "Envelope-To"]
            .iter()
            .find_map(|h| message.header_raw(*h))
            .map(|v| {
                v.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .trim()
                    .to_string()
            })
            .filter(|v| !v.is_empty()),
    })
}

fn mailboxes(address: &Address<'_>) -> Vec<Mailbox> {
    address
        .iter()
        .map(|a| Mailbox {
            name: a.name().map(one_line).filter(|n| !n.is_empty()),
            address: a
                .address()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        })
        .filter(|m| m.name.is_some() || m.address.is_some())
        .collect()
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(id) => vec![bracket(id)],
        HeaderValue::TextList(list) => list
            .iter()
            .take(ADDRESSES_MAX)
            .map(|id| bracket(id))
            .collect(),
        _ => Vec::new(),
    }
}

fn bracket(id: &str) -> String {
    format!(
        "<{}>",
        id.trim().trim_start_matches('<').trim_end_matches('>')
    )
}

/// The identifier of a List-Id value: what is inside the last `<…>`, else
/// the whole value trimmed.
pub fn list_id(raw: &str) -> Option<String> {
    let value = match (raw.rfind('<'), raw.rfind('>')) {
        (Some(open), Some(close)) if open < close => &raw[open + 1..close],
        _ => raw,
    };
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// The list label of a List-Id identifier (RFC 2919): up to the first dot.
pub fn list_label(list_id: &str) -> &str {
    list_id.split('.').next().unwrap_or(list_id)
}

/// Free text as one line: line breaks and control characters become
/// spaces, runs collapse.
fn one_line(text: &str) -> String {
    signalbox_common::envelope::sanitize_summary(text)
}

/// Renders HTML as plain text (html2text, no markup decorations). Only
/// the first [`HTML_MAX`] bytes are rendered: the text is cut to
/// [`TEXT_MAX`] anyway, and a DOM of a huge page costs a lot of memory.
pub fn html_to_text(html: &str) -> String {
    let (html, _) = cut(html, HTML_MAX);
    html2text::config::plain_no_decorate()
        .link_footnotes(false)
        .string_from_read(html.as_bytes(), HTML_WIDTH)
        .unwrap_or_else(|_| mail_parser::decoders::html::html_to_text(&html))
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_string(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_string(), true)
}

/// The list (topic level) of a mail: List-Id label, else `system`, else
/// the recipient's local part, else `unknown`.
pub fn list_name(fields: Option<&MailFields>, system: Option<&str>) -> String {
    let from_list = fields
        .and_then(|f| f.list_id.as_deref())
        .map(list_label)
        .filter(|l| !l.is_empty());
    let recipient = || {
        fields.and_then(|f| {
            f.delivered_to
                .clone()
                .or_else(|| f.to.iter().find_map(|m| m.address.clone()))
                .map(|a| a.split('@').next().unwrap_or_default().to_string())
                .filter(|l| !l.is_empty())
        })
    };
    from_list
        .map(str::to_string)
        .or_else(|| system.map(str::to_string).filter(|s| !s.trim().is_empty()))
        .or_else(recipient)
        .unwrap_or_else(|| "unknown".into())
}

/// The summary: `Name <addr>: Subject`.
pub fn summary(fields: &MailFields) -> String {
    let from = fields
        .from
        .as_ref()
        .map(Mailbox::display)
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "(unknown sender)".into());
    let subject = fields
        .subject
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "(no subject)".into());
    format!("{from}: {subject}")
}

/// Builds the envelope for one input.
pub fn envelope(
    input: &Input,
    system: Option<&str>,
    prefix: &str,
    env: &str,
) -> Result<Envelope, anyhow::Error> {
    let parsed = parse(input);
    let fields = match &parsed {
        Parsed::Mail(f) => Some(f.as_ref()),
        Parsed::NotMail { .. } => None,
    };
    let list = list_name(fields, system);
    let topic = topic::build(prefix, env, "mail", &[&list], "received");
    let mut builder = match &parsed {
        Parsed::Mail(fields) => {
            let mut b = Envelope::builder(topic, summary(fields))
                .body(serde_json::to_value(fields.as_ref())?);
            if let Some(address) = fields.from.as_ref().and_then(|m| m.address.clone()) {
                b = b.agent(address);
            }
            b
        }
        Parsed::NotMail { reason } => {
            let kept = &input.bytes[..input.bytes.len().min(RAW_MAX)];
            let body = json!({
                "raw": base64::engine::general_purpose::STANDARD.encode(kept),
                "raw_base64": true,
                "size": input.size,
                "truncated": (kept.len() as u64) < input.size,
                "error": reason,
            });
            Envelope::builder(
                topic,
                format!("input that is not a mail ({} bytes): {reason}", input.size),
            )
            .severity(Severity::Warning)
            .body(body)
        }
    };
    builder = builder.bridge("mail");
    if let Some(user) = session::os_user() {
        builder = builder.user(user);
    }
    Ok(builder.build()?)
}

/// Runs `signalbox-bridge mail`.
pub fn run(global: &GlobalArgs, args: MailArgs) -> BridgeResult {
    let budget = timeout_arg(args.timeout)?;
    if let Some(dir) = &args.maildir {
        return run_maildir(global, &args, dir, budget);
    }
    let input = Input::read(std::io::stdin().lock()).map_err(|e| {
        BridgeError::new(
            EXIT_TEMPFAIL,
            anyhow!(e).context("reading the mail from standard input"),
        )
    })?;
    if input.size == 0 {
        return Err(BridgeError::new(
            EXIT_DATAERR,
            anyhow!("empty input: expected one mail on standard input"),
        ));
    }
    let config = global
        .resolve()
        .map_err(|e| BridgeError::new(EXIT_TEMPFAIL, e))?;
    let envelope = envelope(
        &input,
        args.system.as_deref(),
        &config.prefix.value,
        &config.env.value,
    )
    .map_err(|e| BridgeError::new(EXIT_TEMPFAIL, e))?;
    let health = format!("mail-{}", health_level(&envelope.topic));
    let runtime = session::runtime().map_err(|e| BridgeError::new(EXIT_TEMPFAIL, e))?;
    runtime.block_on(async move {
        let mut session = Session::open(config, "mail", budget).await;
        let publish = Publish::new(
            envelope.topic.clone(),
            envelope.to_vec(),
            Qos::AtLeastOnce,
            false,
        );
        let outcome = session.outbox.send(publish).await;
        session.close(&health).await;
        match outcome {
            Ok(Delivery::Published) => Ok(0),
            Ok(Delivery::Spooled) => {
                tracing::info!("spooled: the broker is not reachable");
                Ok(0)
            }
            Err(e) => Err(BridgeError::new(EXIT_TEMPFAIL, e)),
        }
    })
}

/// The list level of a mail topic (`…/mail/{list}/received`).
fn health_level(topic: &str) -> &str {
    topic.rsplit('/').nth(1).unwrap_or("unknown")
}

/// `--maildir DIR`: every file of DIR/new, oldest name first; each is moved
/// to DIR/cur once published or spooled. Stops (exit 75) at the first that
/// can be neither.
fn run_maildir(global: &GlobalArgs, args: &MailArgs, dir: &Path, budget: Duration) -> BridgeResult {
    let new = dir.join("new");
    let cur = dir.join("cur");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&new)
        .with_context(|| format!("cannot read Maildir {}", new.display()))
        .map_err(BridgeError::usage)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    files.sort();
    if !cur.is_dir() {
        return Err(BridgeError::usage(anyhow!(
            "{} is not a Maildir: {} is missing",
            dir.display(),
            cur.display()
        )));
    }
    if files.is_empty() {
        return Ok(0);
    }
    let config = global
        .resolve()
        .map_err(|e| BridgeError::new(EXIT_TEMPFAIL, e))?;
    let runtime = session::runtime().map_err(|e| BridgeError::new(EXIT_TEMPFAIL, e))?;
    let system = args.system.clone();
    runtime.block_on(async move {
        let prefix = config.prefix.value.clone();
        let env = config.env.value.clone();
        let mut session = Session::open(config, "mail", budget).await;
        let mut lists = Vec::new();
        let mut failure = None;
        for path in files {
            let input = match std::fs::File::open(&path).and_then(Input::read) {
                Ok(input) => input,
                // Taken by a concurrent reader of the Maildir.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    failure = Some(BridgeError::new(
                        EXIT_TEMPFAIL,
                        anyhow!("cannot read {}: {e}", path.display()),
                    ));
                    break;
                }
            };
            if input.size == 0 {
                tracing::warn!(
                    "{}: empty file, moved to cur/ without publishing",
                    path.display()
                );
            } else {
                let envelope = match envelope(&input, system.as_deref(), &prefix, &env) {
                    Ok(e) => e,
                    Err(e) => {
                        failure = Some(BridgeError::new(EXIT_TEMPFAIL, e));
                        break;
                    }
                };
                let list = health_level(&envelope.topic).to_string();
                let publish = Publish::new(
                    envelope.topic.clone(),
                    envelope.to_vec(),
                    Qos::AtLeastOnce,
                    false,
                );
                if let Err(e) = session.outbox.send(publish).await {
                    failure = Some(BridgeError::new(EXIT_TEMPFAIL, e));
                    break;
                }
                if !lists.contains(&list) {
                    lists.push(list);
                }
            }
            if let Err(e) = move_to_cur(&path, &cur) {
                failure = Some(BridgeError::new(EXIT_TEMPFAIL, e));
                break;
            }
        }
        let health = match lists.as_slice() {
            [one] => format!("mail-{one}"),
            _ => "mail-maildir".to_string(),
        };
        session.close(&health).await;
        match failure {
            Some(e) => Err(e),
            None => Ok(0),
        }
    })
}

/// Moves a delivered file from new/ to cur/ with the Maildir info suffix
/// `:2,` (no flags: not yet seen by a person).
fn move_to_cur(path: &Path, cur: &Path) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = if name.contains(":2,") {
        name
    } else {
        format!("{name}:2,")
    };
    std::fs::rename(path, cur.join(&name))
        .with_context(|| format!("cannot move {} to {}", path.display(), cur.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input(raw: &[u8]) -> Input {
        Input {
            bytes: raw.to_vec(),
            size: raw.len() as u64,
        }
    }

    fn mail(raw: &str) -> MailFields {
        match parse(&input(raw.as_bytes())) {
            Parsed::Mail(f) => *f,
            Parsed::NotMail { reason } => panic!("not a mail: {reason}"),
        }
    }

    #[test]
    fn rfc5322_appendix_a1_1_simple_addressing() {
        let f = mail(
            "From: John Doe <jdoe@machine.example>\r\nTo: Mary Smith <mary@example.net>\r\nSubject: Saying Hello\r\n\
             Date: Fri, 21 Nov 1997 09:55:06 -0600\r\nMessage-ID: <1234@local.machine.example>\r\n\r\n\
             This is a message just to say hello.\r\nSo, \"Hello\".\r\n",
        );
        assert_eq!(
            f.from.as_ref().map(Mailbox::display).as_deref(),
            Some("John Doe <jdoe@machine.example>")
        );
        assert_eq!(
            f.to,
            vec![Mailbox {
                name: Some("Mary Smith".into()),
                address: Some("mary@example.net".into())
            }]
        );
        assert_eq!(f.subject.as_deref(), Some("Saying Hello"));
        assert_eq!(f.date.as_deref(), Some("1997-11-21T09:55:06-06:00"));
        assert_eq!(
            f.message_id.as_deref(),
            Some("<1234@local.machine.example>")
        );
        assert_eq!(
            f.text,
            "This is a message just to say hello.\nSo, \"Hello\"."
        );
        assert_eq!(summary(&f), "John Doe <jdoe@machine.example>: Saying Hello");
    }

    #[test]
    fn an_mbox_from_line_is_skipped() {
        let f = mail("From jdoe@machine.example Fri Nov 21 09:55:06 1997\nFrom: a@b.example\nSubject: x\n\nbody\n");
        assert_eq!(f.subject.as_deref(), Some("x"));
        assert_eq!(
            f.from.and_then(|m| m.address).as_deref(),
            Some("a@b.example")
        );
    }

    #[test]
    fn list_id_gives_the_label() {
        assert_eq!(
            list_id("Fedora devel <devel.lists.fedoraproject.org>").as_deref(),
            Some("devel.lists.fedoraproject.org")
        );
        assert_eq!(list_id(" <x.y> ").as_deref(), Some("x.y"));
        assert_eq!(
            list_id("plain.example.org").as_deref(),
            Some("plain.example.org")
        );
        assert_eq!(list_id("  "), None);
        assert_eq!(list_label("devel.lists.fedoraproject.org"), "devel");
    }

    #[test]
    fn the_list_falls_back_to_system_then_recipient() {
        let f = mail("From: a@b.example\nTo: Ops <ops-alerts@example.org>\nSubject: x\n\nbody\n");
        assert_eq!(list_name(Some(&f), Some("bugzilla")), "bugzilla");
        assert_eq!(list_name(Some(&f), None), "ops-alerts");
        let f =
            mail("Delivered-To: koji@example.org\nFrom: a@b.example\nTo: x@example.org\n\nbody\n");
        assert_eq!(list_name(Some(&f), None), "koji");
        assert_eq!(list_name(None, None), "unknown");
    }

    #[test]
    fn what_is_not_a_mail_is_recognised() {
        for raw in [
            &b"hello world\n"[..],
            b"\x89PNG\r\n\x1a\n\0\0",
            b"   \n\n",
            b"no colon here\nFrom: x\n",
        ] {
            assert!(
                matches!(parse(&input(raw)), Parsed::NotMail { .. }),
                "{raw:?}"
            );
        }
        assert!(starts_with_header(b"Subject : obsolete space\n"));
        assert!(!starts_with_header(b": no name\n"));
    }

    #[test]
    fn text_is_cut_at_a_character_boundary() {
        let (t, cut_) = cut(&"é".repeat(5000), TEXT_MAX);
        assert!(cut_ && t.len() <= TEXT_MAX && t.len() >= TEXT_MAX - 1);
    }

    /// RFC 2047 encodes `text` as one encoded word in `charset` (B or Q).
    fn encode_word(text: &str, q: bool) -> String {
        if q {
            let mut out = String::from("=?UTF-8?Q?");
            for b in text.bytes() {
                match b {
                    b' ' => out.push('_'),
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => out.push(b as char),
                    _ => out.push_str(&format!("={b:02X}")),
                }
            }
            out.push_str("?=");
            out
        } else {
            format!(
                "=?UTF-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(text)
            )
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes at all: never a panic, and a mail or not-a-mail.
        #[test]
        fn any_input_parses_without_panicking(raw in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let parsed = parse(&input(&raw));
            if let Parsed::Mail(f) = parsed {
                prop_assert!(f.text.len() <= TEXT_MAX);
                prop_assert_eq!(f.size, raw.len() as u64);
            }
        }

        /// Header-shaped garbage: headers of random names and values.
        #[test]
        fn random_headers_parse_without_panicking(
            headers in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,20}", "[ -~\t\u{80}-\u{10FFFF}]{0,80}"), 1..12),
            body in "[ -~\n]{0,200}",
        ) {
            let mut raw = String::new();
            for (name, value) in &headers {
                raw.push_str(&format!("{name}: {value}\r\n"));
            }
            raw.push_str("\r\n");
            raw.push_str(&body);
            let parsed = parse(&input(raw.as_bytes()));
            prop_assert!(matches!(parsed, Parsed::Mail(_)), "header lines make a mail");
            if let Parsed::Mail(f) = parsed {
                if let Some(s) = &f.subject {
                    prop_assert!(!s.contains('\n') && !s.contains('\r'));
                }
            }
        }

        /// An encoded-word subject and display name decode to the original
        /// text, folded or not, in B or Q encoding.
        #[test]
        fn encoded_words_decode_to_the_original(
            subject in "[a-zA-Z0-9äöüßéèñçøåЖжЯя日本語中文한국어 .,!?-]{1,40}",
            name in "[a-zA-Zäöüéñ日本]{1,20}",
            q in any::<bool>(),
            fold in any::<bool>(),
        ) {
            let subject = subject.trim().to_string();
            prop_assume!(!subject.is_empty());
            let sep = if fold { "\r\n " } else { " " };
            // Split the subject in two encoded words: whitespace between
            // adjacent encoded words is dropped by the decoder (RFC 2047 6.2).
            let mid = subject.char_indices().nth(subject.chars().count() / 2).map_or(0, |(i, _)| i);
            let (a, b) = subject.split_at(mid);
            let encoded = if a.is_empty() {
                encode_word(b, q)
            } else {
                format!("{}{sep}{}", encode_word(a, q), encode_word(b, !q))
            };
            let raw = format!(
                "From: {} <x@example.org>\r\nSubject: {encoded}\r\n\r\nbody\r\n",
                encode_word(&name, q)
            );
            let f = mail(&raw);
            prop_assert_eq!(f.subject.as_deref(), Some(subject.as_str()));
            let from_name = f.from.and_then(|m| m.name);
            prop_assert_eq!(from_name.as_deref(), Some(name.as_str()));
        }
    }
}
