//! Feed documents → entries: RSS 0.9x/1.0/2.0, Atom and JSON Feed through
//! feed-rs (entities, CDATA, lenient dates, the encoding declared in the
//! XML prolog), each entry with a stable identity and a bounded plain-text
//! summary.
//!
//! Identity is what de-duplication rests on for years, so it never depends
//! on anything random: the entry's own id (Atom `id`, RSS `guid`, JSON
//! Feed `id`), else its first link, else a SHA-256 of title and date.
//! feed-rs would invent an id (sometimes a random UUID) for entries without
//! one; its id generator is replaced by one that returns nothing, so that
//! the choice is made here.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Longest summary text kept (characters): a bus message, not an archive.
pub const SUMMARY_MAX_CHARS: usize = 2_000;
/// Longest title kept (characters).
const TITLE_MAX_CHARS: usize = 500;
/// Ids longer than this (bytes) are stored as their SHA-256: some feeds use
/// whole URLs with tracking parameters, and the seen-set stays bounded.
const ID_MAX_BYTES: usize = 512;

/// A parsed feed: its title and its entries, in document order.
#[derive(Debug, Clone, Default)]
pub struct ParsedFeed {
    /// The feed's own title.
    pub title: Option<String>,
    /// Entries as they appear in the document.
    pub entries: Vec<FeedEntry>,
}

/// One entry, as published in the message body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedEntry {
    /// Stable identity (see the module doc).
    pub entry_id: String,
    /// Title as plain text, one line.
    pub title: String,
    /// The entry's link (the first `alternate`, else the first link).
    pub link: Option<String>,
    /// When it was published.
    pub published: Option<DateTime<Utc>>,
    /// When it was last updated.
    pub updated: Option<DateTime<Utc>>,
    /// Author names (or e-mail addresses when unnamed).
    pub authors: Vec<String>,
    /// Category terms.
    pub categories: Vec<String>,
    /// Summary (or content) as plain text, at most [`SUMMARY_MAX_CHARS`].
    pub summary: String,
}

impl FeedEntry {
    /// The date used to order entries: published, else updated.
    pub fn date(&self) -> Option<DateTime<Utc>> {
        self.published.or(self.updated)
    }
}

/// Why a document is not a feed: one line, for the health report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid feed: {0}")]
pub struct ParseError(pub String);

/// Parses a feed document. Never panics, whatever the bytes (see the
/// property test below).
pub fn parse(bytes: &[u8], base_uri: Option<&str>) -> Result<ParsedFeed, ParseError> {
    let parser = feed_rs::parser::Builder::new()
        .base_uri(base_uri)
        .id_generator(|_, _, _| String::new())
        .build();
    let feed = parser
        .parse(bytes)
        .map_err(|e| ParseError(signalbox_common::envelope::sanitize_summary(&e.to_string())))?;
    let title = feed
        .title
        .as_ref()
        .map(|t| bounded(&one_line(&text_of(t)), TITLE_MAX_CHARS))
        .filter(|t| !t.is_empty());
    let entries = feed.entries.iter().map(entry).collect();
    Ok(ParsedFeed { title, entries })
}

fn entry(e: &feed_rs::model::Entry) -> FeedEntry {
    let title = e
        .title
        .as_ref()
        .map(|t| bounded(&one_line(&text_of(t)), TITLE_MAX_CHARS))
        .unwrap_or_default();
    let link = e
        .links
        .iter()
        .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
        .or_else(|| e.links.first())
        .map(|l| l.href.trim().to_string())
        .filter(|h| !h.is_empty());
    let summary = e
        .summary
        .as_ref()
        .map(text_of)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            e.content
                .as_ref()
                .and_then(|c| c.body.as_deref())
                .map(super::super::mail::html_to_text)
        })
        .map(|s| bounded(s.trim(), SUMMARY_MAX_CHARS))
        .unwrap_or_default();
    let authors = e
        .authors
        .iter()
        .filter_map(|p| {
            p.name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty() && *n != "Unknown")
                .or(p.email.as_deref())
                .map(one_line)
        })
        .collect();
    let categories = e
        .categories
        .iter()
        .map(|c| one_line(c.label.as_deref().unwrap_or(&c.term)))
        .filter(|c| !c.is_empty())
        .collect();
    let mut out = FeedEntry {
        entry_id: String::new(),
        title,
        link,
        published: e.published,
        updated: e.updated,
        authors,
        categories,
        summary,
    };
    out.entry_id = identity(e.id.trim(), &out);
    out
}

/// The entry's identity: its id, else its link, else a hash of title and
/// date; long ids are hashed.
pub fn identity(id: &str, entry: &FeedEntry) -> String {
    let id = if !id.is_empty() {
        id.to_string()
    } else if let Some(link) = &entry.link {
        link.clone()
    } else {
        let date = entry.date().map(|d| d.to_rfc3339()).unwrap_or_default();
        return format!(
            "sha256:{}",
            sha256_hex(format!("{}\n{date}", entry.title).as_bytes())
        );
    };
    if id.len() > ID_MAX_BYTES {
        format!("sha256:{}", sha256_hex(id.as_bytes()))
    } else {
        id
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A text construct as plain text: HTML converted, plain text as it is.
fn text_of(text: &feed_rs::model::Text) -> String {
    let is_html = text.content_type.subty() == "html"
        || text.content_type.subty() == "xhtml"
        || text.content_type.suffix().is_some_and(|s| s == "xml");
    if is_html || looks_like_html(&text.content) {
        super::super::mail::html_to_text(&text.content)
    } else {
        text.content.clone()
    }
}

/// RSS says nothing of the type of `description`; most are HTML.
fn looks_like_html(s: &str) -> bool {
    let s = s.trim_start();
    s.starts_with('<')
        || s.contains("</")
        || s.contains("<br")
        || s.contains("<p>")
        || s.contains("&lt;") && s.contains("&gt;")
}

fn one_line(s: &str) -> String {
    signalbox_common::envelope::sanitize_summary(s)
}

/// At most `max` characters of `s`, with `…` when cut.
pub fn bounded(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((end, _)) => {
            let mut cut = s[..end].trim_end().to_string();
            cut.push('…');
            cut
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RSS2: &str = r#"<?xml version="1.0"?>
<rss version="2.0"><channel><title>Koji &amp; friends</title>
<item><title>build &lt;ok&gt;</title><guid>tag:1</guid><link>https://x/1</link>
<description><![CDATA[<p>Hello <b>world</b></p>]]></description>
<pubDate>Tue, 24 Nov 2026 19:03:00 GMT</pubDate><category>builds</category>
<author>jk@example.org (J K)</author></item>
<item><title>no id</title><link>https://x/2</link></item>
<item><title>nothing</title><pubDate>Tue, 24 Nov 2026 19:03:00 +0000</pubDate></item>
</channel></rss>"#;

    #[test]
    fn rss2_entries_get_text_and_stable_identities() {
        let feed = parse(RSS2.as_bytes(), None).expect("parses");
        assert_eq!(feed.title.as_deref(), Some("Koji & friends"));
        let e = &feed.entries;
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].entry_id, "tag:1");
        assert_eq!(e[0].title, "build <ok>");
        assert_eq!(e[0].summary, "Hello world");
        assert_eq!(e[0].categories, vec!["builds"]);
        assert!(e[0].published.is_some());
        assert_eq!(e[1].entry_id, "https://x/2");
        assert!(e[2].entry_id.starts_with("sha256:"), "{}", e[2].entry_id);
        let again = parse(RSS2.as_bytes(), None).expect("parses");
        assert_eq!(
            again.entries[2].entry_id, e[2].entry_id,
            "hash ids are stable"
        );
    }

    #[test]
    fn long_ids_are_hashed_and_text_is_bounded() {
        let entry = FeedEntry {
            entry_id: String::new(),
            title: "t".into(),
            link: None,
            published: None,
            updated: None,
            authors: vec![],
            categories: vec![],
            summary: String::new(),
        };
        let long = "x".repeat(1000);
        assert_eq!(identity(&long, &entry).len(), "sha256:".len() + 64);
        assert_eq!(bounded("héllo", 3), "hél…");
        assert_eq!(bounded("hé", 3), "hé");
    }

    #[test]
    fn declared_windows_1252_and_utf_16_are_decoded() {
        // windows-1252 differs from ISO-8859-1 in 0x80-0x9F: € and curly quotes.
        let cp1252 = b"<?xml version=\"1.0\" encoding=\"windows-1252\"?><rss version=\"2.0\"><channel><title>Caf\xe9</title><item><title>\x93quoted\x94 \x80 5</title><guid>w-1</guid></item></channel></rss>".to_vec();
        let feed = parse(&cp1252, None).expect("parses");
        assert_eq!(feed.title.as_deref(), Some("Café"));
        assert_eq!(feed.entries[0].title, "\u{201c}quoted\u{201d} € 5");
        let utf16: Vec<u8> = "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-16\"?><rss version=\"2.0\"><channel><title>Straße</title><item><title>naïve ☃</title><guid>u-1</guid></item></channel></rss>"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let feed = parse(&utf16, None).expect("parses UTF-16");
        assert_eq!(feed.title.as_deref(), Some("Straße"));
        assert_eq!(feed.entries[0].title, "naïve ☃");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"", None).is_err());
        assert!(parse(b"<html><body>not a feed</body></html>", None).is_err());
        assert!(parse(b"<rss version=\"2.0\"><channel><item><title>x</ti", None).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&bytes, None);
        }

        #[test]
        fn random_bytes_inside_a_feed_never_panic(junk in proptest::collection::vec(any::<u8>(), 0..512)) {
            for prefix in [&b"<rss version=\"2.0\"><channel><item><title>"[..], b"<feed><entry><title>", b"{\"version\":\"https://jsonfeed.org/version/1.1\",\"items\":[{\"id\":"] {
                let mut doc = prefix.to_vec();
                doc.extend_from_slice(&junk);
                let _ = parse(&doc, Some("https://example.org/"));
            }
        }
    }
}
