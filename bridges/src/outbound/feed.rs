//! `signalbox-bridge feed`: keep an RSS 2.0 or Atom file of the newest
//! matching messages — what the old "write the RSS file from cron" jobs did.
//! Each message becomes an entry (guid = message id, date = message time);
//! the file is rewritten atomically (temporary file, fsync, rename) after
//! every message, and read back on start so a restart keeps the history.
//! `--serve ADDR` also serves it over HTTP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, ValueEnum};
use signalbox_common::listener::{Delivery, HandlerResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::flags::{self, render, ListenerFlags};
use crate::cli::{BridgeError, BridgeResult, GlobalArgs};

/// Largest `--keep`: a feed is read by people and polled by readers; a
/// bigger one only costs every poll.
const MAX_KEEP: usize = 10_000;
/// Most bytes of an HTTP request head the server reads.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a feed reader has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait (a feed is small and cheap).
const MAX_CONNECTIONS: usize = 64;

/// The feed formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// RSS 2.0
    Rss,
    /// Atom (RFC 4287)
    Atom,
}

/// Flags of `signalbox-bridge feed`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each message becomes an entry: title = summary, guid/id = message id, date =
message time, link = the envelope's links.url (else its first link),
category = topic, text = a readable rendering of the envelope. The newest
--keep entries are kept, newest first; a replayed or redelivered message
replaces its entry. The file is rewritten atomically (readers never see half
a file) with mode 0644, and read back on start, so a restart keeps the
history (a file that cannot be parsed is an error: move it away to start
afresh). A message counts as handled once the file is written; a write error
is retried, then recorded as a failure.

Examples:
  signalbox-bridge feed --name commits --filter 'signalbox/prod/git/#' --output /var/www/html/commits.xml
  signalbox-bridge feed --name builds --filter 'signalbox/prod/koji/build/#' --format atom \\
      --output /srv/feeds/builds.atom --keep 200 --title 'Koji builds' --serve 127.0.0.1:8081")]
pub struct FeedArgs {
    /// Flags every listener takes.
    #[command(flatten)]
    listener: ListenerFlags,
    /// The feed file to keep
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// Feed format
    #[arg(long, value_enum, default_value_t = Format::Rss)]
    format: Format,
    /// Entries kept (newest first)
    #[arg(long, value_name = "N", default_value_t = 50)]
    keep: usize,
    /// Feed title [default: "signalbox: NAME"]
    #[arg(long, value_name = "TITLE")]
    title: Option<String>,
    /// The feed's web page (channel link) [default: the --serve URL, else file://OUTPUT]
    #[arg(long, value_name = "URL")]
    link: Option<String>,
    /// Also serve the feed over HTTP on this address (e.g. 127.0.0.1:8081), at any path
    #[arg(long, value_name = "ADDR")]
    serve: Option<String>,
}

/// One feed entry, as written and as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The message id (RSS guid; Atom `urn:uuid:` id).
    pub id: String,
    /// The summary.
    pub title: String,
    /// The main link, if any.
    pub link: Option<String>,
    /// The message time.
    pub time: DateTime<Utc>,
    /// The topic (category).
    pub topic: Option<String>,
    /// The readable text.
    pub text: String,
}

/// The feed as kept in memory: its metadata and entries, newest first.
#[derive(Debug, Clone)]
pub struct Feed {
    /// RSS or Atom.
    pub format: Format,
    /// Title of the channel.
    pub title: String,
    /// The channel link.
    pub link: String,
    /// A stable id for Atom (`urn:signalbox:feed:NAME`).
    pub feed_id: String,
    /// Entries kept.
    pub keep: usize,
    /// Newest first.
    pub entries: Vec<Entry>,
}

impl Feed {
    /// Adds (or replaces, by id) an entry and keeps the newest `keep`.
    pub fn add(&mut self, entry: Entry) {
        self.entries.retain(|e| e.id != entry.id);
        // At the front, and the sort is stable: of entries with equal times
        // (messages sent within one millisecond) the last to arrive is first.
        self.entries.insert(0, entry);
        self.entries.sort_by_key(|e| std::cmp::Reverse(e.time));
        self.entries.truncate(self.keep);
    }

    /// Takes back the entries of a feed file, which lists them newest
    /// first: they are added oldest first, so that entries with equal times
    /// (RSS dates have whole seconds) keep the file's order.
    pub fn load(&mut self, entries: Vec<Entry>) {
        for e in entries.into_iter().rev() {
            self.add(e);
        }
    }

    /// The document.
    pub fn to_xml(&self) -> String {
        match self.format {
            Format::Rss => self.to_rss(),
            Format::Atom => self.to_atom(),
        }
    }

    fn updated(&self) -> DateTime<Utc> {
        self.entries
            .first()
            .map(|e| e.time)
            .unwrap_or_else(Utc::now)
    }

    fn to_rss(&self) -> String {
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str("<rss version=\"2.0\">\n<channel>\n");
        x.push_str(&format!("  <title>{}</title>\n", escape(&self.title)));
        x.push_str(&format!("  <link>{}</link>\n", escape(&self.link)));
        x.push_str(&format!(
            "  <description>{}</description>\n",
            escape(&self.title)
        ));
        x.push_str(&format!(
            "  <lastBuildDate>{}</lastBuildDate>\n",
            self.updated().to_rfc2822()
        ));
        x.push_str("  <generator>signalbox</generator>\n");
        for e in &self.entries {
            x.push_str("  <item>\n");
            x.push_str(&format!("    <title>{}</title>\n", escape(&e.title)));
            if let Some(link) = &e.link {
                x.push_str(&format!("    <link>{}</link>\n", escape(link)));
            }
            x.push_str(&format!(
                "    <guid isPermaLink=\"false\">{}</guid>\n",
                escape(&e.id)
            ));
            x.push_str(&format!("    <pubDate>{}</pubDate>\n", e.time.to_rfc2822()));
            if let Some(topic) = &e.topic {
                x.push_str(&format!("    <category>{}</category>\n", escape(topic)));
            }
            x.push_str(&format!(
                "    <description>{}</description>\n",
                escape(&e.text)
            ));
            x.push_str("  </item>\n");
        }
        x.push_str("</channel>\n</rss>\n");
        x
    }

    fn to_atom(&self) -> String {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
        x.push_str(&format!("  <title>{}</title>\n", escape(&self.title)));
        x.push_str(&format!("  <id>{}</id>\n", escape(&self.feed_id)));
        x.push_str(&format!("  <updated>{}</updated>\n", time(&self.updated())));
        x.push_str(&format!("  <link href=\"{}\"/>\n", escape(&self.link)));
        x.push_str("  <author><name>signalbox</name></author>\n");
        x.push_str("  <generator>signalbox</generator>\n");
        for e in &self.entries {
            x.push_str("  <entry>\n");
            x.push_str(&format!("    <title>{}</title>\n", escape(&e.title)));
            x.push_str(&format!("    <id>{}</id>\n", escape(&atom_id(&e.id))));
            x.push_str(&format!("    <updated>{}</updated>\n", time(&e.time)));
            x.push_str(&format!("    <published>{}</published>\n", time(&e.time)));
            if let Some(link) = &e.link {
                x.push_str(&format!("    <link href=\"{}\"/>\n", escape(link)));
            }
            if let Some(topic) = &e.topic {
                x.push_str(&format!("    <category term=\"{}\"/>\n", escape(topic)));
            }
            x.push_str(&format!(
                "    <content type=\"text\">{}</content>\n",
                escape(&e.text)
            ));
            x.push_str("  </entry>\n");
        }
        x.push_str("</feed>\n");
        x
    }

    /// Reads the entries of a feed file written before (RSS or Atom).
    pub fn parse_entries(xml: &[u8]) -> Result<Vec<Entry>, String> {
        let parsed = feed_rs::parser::parse(xml).map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        for item in parsed.entries {
            let id = item
                .id
                .strip_prefix("urn:uuid:")
                .unwrap_or(&item.id)
                .to_string();
            let Some(time) = item.published.or(item.updated) else {
                continue;
            };
            let text = item
                .content
                .and_then(|c| c.body)
                .or_else(|| item.summary.map(|s| s.content))
                .unwrap_or_default();
            entries.push(Entry {
                id,
                title: item.title.map(|t| t.content).unwrap_or_default(),
                link: item.links.first().map(|l| l.href.clone()),
                time,
                topic: item.categories.first().map(|c| c.term.clone()),
                text,
            });
        }
        Ok(entries)
    }
}

/// An Atom id for a message id (an IRI is required there).
fn atom_id(id: &str) -> String {
    if uuid::Uuid::parse_str(id).is_ok() {
        format!("urn:uuid:{id}")
    } else {
        id.to_string()
    }
}

/// Escapes text for XML content and attribute values, and drops the
/// characters XML 1.0 cannot carry at all (most C0 controls, U+FFFE/FFFF).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, fsynced, mode 0644, renamed over the old one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".signalbox-feed-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // Web servers and feed readers run as other users.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Runs the feed listener until SIGTERM/SIGINT.
pub fn run(global: &GlobalArgs, args: FeedArgs) -> BridgeResult {
    let (config, options) = args.listener.resolve(global)?;
    if args.keep == 0 || args.keep > MAX_KEEP {
        return Err(BridgeError::usage(anyhow::anyhow!(
            "--keep must be between 1 and {MAX_KEEP}"
        )));
    }
    let serve_addr: Option<std::net::SocketAddr> = match &args.serve {
        Some(a) => Some(a.parse().map_err(|_| {
            BridgeError::usage(anyhow::anyhow!(
                "--serve {a:?}: use an address like 127.0.0.1:8081"
            ))
        })?),
        None => None,
    };
    let output = &args.output;
    let entries = match std::fs::read(output) {
        Ok(bytes) => Feed::parse_entries(&bytes).map_err(|e| {
            BridgeError::usage(anyhow::anyhow!(
                "cannot read the existing feed {}: {e} (move it away to start afresh)",
                output.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(BridgeError::usage(anyhow::anyhow!(
                "cannot read {}: {e}",
                output.display()
            )))
        }
    };
    let link = args.link.clone().unwrap_or_else(|| match serve_addr {
        Some(addr) => format!("http://{addr}/"),
        None => {
            let absolute = std::path::absolute(output).unwrap_or_else(|_| output.clone());
            format!("file://{}", absolute.display())
        }
    });
    let mut feed = Feed {
        format: args.format,
        title: args
            .title
            .clone()
            .unwrap_or_else(|| format!("signalbox: {}", args.listener.name)),
        link,
        feed_id: format!("urn:signalbox:feed:{}", args.listener.name),
        keep: args.keep,
        entries: Vec::new(),
    };
    feed.load(entries);
    // Writing it now proves the place is writable (exit 2 at start rather
    // than a failure record per message) and converts a changed --format.
    write_atomically(output, feed.to_xml().as_bytes()).map_err(|e| {
        BridgeError::usage(anyhow::anyhow!(
            "cannot write the feed {}: {e}",
            output.display()
        ))
    })?;
    tracing::info!(
        "feed {} holds {} entries",
        output.display(),
        feed.entries.len()
    );

    let runtime = flags::tokio_runtime()?;
    runtime.block_on(async move {
        if let Some(addr) = serve_addr {
            let server = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| BridgeError::usage(anyhow::anyhow!("--serve {addr}: {e}")))?;
            tokio::spawn(serve(server, args.output.clone(), args.format));
        }
        let writer = Arc::new(FeedWriter {
            feed: Mutex::new(feed),
            output: args.output.clone(),
        });
        let handler = move |d: Delivery| {
            let writer = writer.clone();
            async move { writer.add(d).await }
        };
        flags::listen(&config, options, handler).await?;
        Ok(0)
    })
}

/// The feed and its file.
struct FeedWriter {
    feed: Mutex<Feed>,
    output: PathBuf,
}

impl FeedWriter {
    async fn add(&self, d: Delivery) -> HandlerResult {
        let rendered = render(&d);
        let entry = Entry {
            id: d.id.clone(),
            title: rendered.summary,
            link: rendered.link,
            time: d.envelope().map(|e| e.time).unwrap_or_else(Utc::now),
            topic: Some(d.topic.clone()),
            text: rendered.text,
        };
        let xml = {
            // Poisoned only if a render panicked; the feed is still whole.
            let mut feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
            feed.add(entry);
            feed.to_xml()
        };
        let output = self.output.clone();
        tokio::task::spawn_blocking(move || write_atomically(&output, xml.as_bytes()))
            .await
            .map_err(|e| format!("writing the feed: {e}"))?
            .map_err(|e| format!("cannot write the feed {}: {e}", self.output.display()))?;
        Ok(None)
    }
}

/// Serves the feed file to every GET (any path), until the process ends.
async fn serve(server: tokio::net::TcpListener, path: PathBuf, format: Format) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match server.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("feed server: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let path = path.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &path, format)).await;
            drop(permit);
        });
    }
}

/// Answers one HTTP/1.x request and closes the connection.
async fn answer(
    mut stream: tokio::net::TcpStream,
    path: &Path,
    format: Format,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"too large\n",
                true,
            )
            .await;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let method = line
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let with_body = match method.as_str() {
        "GET" => true,
        "HEAD" => false,
        _ => {
            return respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                b"GET or HEAD only\n",
                true,
            )
            .await
        }
    };
    let content_type = match format {
        Format::Rss => "application/rss+xml; charset=utf-8",
        Format::Atom => "application/atom+xml; charset=utf-8",
    };
    match tokio::fs::read(path).await {
        Ok(bytes) => respond(&mut stream, "200 OK", content_type, &bytes, with_body).await,
        Err(e) => {
            let text = format!("feed not readable: {e}\n");
            respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                text.as_bytes(),
                with_body,
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    with_body: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if with_body {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64, title: &str) -> Entry {
        Entry {
            id: uuid::Uuid::now_v7().to_string(),
            title: title.to_string(),
            link: Some(format!("https://example.org/{n}?a=1&b=2")),
            time: DateTime::from_timestamp(1_790_000_000 + n, 0).expect("time"),
            topic: Some("signalbox/dev/git/kernel/commit".into()),
            text: format!("line one <b>&amp;</b>\nline two \u{1} end {n}"),
        }
    }

    fn feed(format: Format) -> Feed {
        Feed {
            format,
            title: "commits & builds".into(),
            link: "http://127.0.0.1:8081/".into(),
            feed_id: "urn:signalbox:feed:test".into(),
            keep: 3,
            entries: Vec::new(),
        }
    }

    #[test]
    fn keeps_the_newest_n_newest_first_and_replaces_by_id() {
        let mut f = feed(Format::Rss);
        for n in 0..5 {
            f.add(entry(n, &format!("e{n}")));
        }
        let titles: Vec<&str> = f.entries.iter().map(|e| e.title.as_str()).collect();
        assert_eq!(titles, ["e4", "e3", "e2"]);
        let mut again = f.entries[1].clone();
        again.title = "e3 replayed".into();
        f.add(again);
        assert_eq!(f.entries.len(), 3);
        assert_eq!(f.entries[1].title, "e3 replayed");
    }

    #[test]
    fn entries_with_equal_times_are_newest_arrival_first() {
        let mut f = feed(Format::Rss);
        f.add(entry(0, "older"));
        for n in 2..=4 {
            f.add(entry(1, &format!("push {n}")));
        }
        let titles: Vec<&str> = f.entries.iter().map(|e| e.title.as_str()).collect();
        assert_eq!(titles, ["push 4", "push 3", "push 2"]);
        // Read back from the file after a restart: the same order.
        for format in [Format::Rss, Format::Atom] {
            f.format = format;
            let mut again = feed(format);
            again.load(Feed::parse_entries(f.to_xml().as_bytes()).expect("parses"));
            let back: Vec<&str> = again.entries.iter().map(|e| e.title.as_str()).collect();
            assert_eq!(back, titles, "{format:?}");
        }
    }

    #[test]
    fn both_formats_parse_back_to_the_same_entries() {
        for format in [Format::Rss, Format::Atom] {
            let mut f = feed(format);
            f.add(entry(
                1,
                "jkeating pushed to kernel: \"fix <oops> & ümlaut ✓\"",
            ));
            f.add(entry(2, "second"));
            let back = Feed::parse_entries(f.to_xml().as_bytes()).expect("parses");
            assert_eq!(back.len(), 2, "{format:?}");
            for (a, b) in f.entries.iter().zip(&back) {
                assert_eq!(a.id, b.id, "{format:?}");
                assert_eq!(a.title, b.title, "{format:?}");
                assert_eq!(a.link, b.link, "{format:?}");
                assert_eq!(a.time, b.time, "{format:?}");
                assert_eq!(a.topic, b.topic, "{format:?}");
                assert_eq!(
                    b.text,
                    a.text.replace('\u{1}', ""),
                    "{format:?}: control characters dropped"
                );
            }
        }
    }

    #[test]
    fn escaping_covers_markup_and_invalid_characters() {
        assert_eq!(
            escape("a<b>&\"'\u{0}\u{1b}\tz"),
            "a&lt;b&gt;&amp;&quot;&apos;\tz"
        );
    }
}
