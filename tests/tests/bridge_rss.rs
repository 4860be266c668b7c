//! `signalbox-bridge rss` end to end, against a real HTTP/1.1 server on
//! 127.0.0.1 started by each test (below) and the embedded broker: every
//! feed format and oddity in tests/fixtures/rss, conditional GET (ETag and
//! Last-Modified, 304), a failing feed that recovers (one event each way),
//! a hanging server, an endless body, a gzip bomb, a redirect loop and
//! redirects followed, gzip, ill-formed XML, restarts without duplicates,
//! the spool when the broker is down (`--once`, and the daemon flushing it
//! when the broker comes back), the `[rss]` config table, bounded
//! concurrency, and the daemon's schedules (Retry-After on 429/503 waited
//! out, exponential backoff, other feeds undelayed) and health with
//! per-feed status.

mod bridge_support;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_support::{bridge, dead_broker, events, run_input, spool_files, Got, Subscriber, LIMIT};
use serde_json::Value;
use signalbox_e2e::{embedded_broker, Finished, KillOnDrop};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the test server answers on one path.
#[derive(Clone)]
enum Route {
    /// 200 with this body; with an ETag, `If-None-Match` of it gets 304.
    Feed {
        body: Vec<u8>,
        content_type: &'static str,
        etag: Option<String>,
        gzip: bool,
    },
    /// 200 with this body and `Last-Modified`; `If-Modified-Since` equal
    /// to it gets 304.
    Modified {
        body: Vec<u8>,
        last_modified: String,
    },
    /// Each request takes the next route of the list; the last one stays.
    Sequence(Vec<Route>),
    /// This status, with these headers and a short body.
    Status(u16, Vec<(String, String)>),
    /// Reads the request, then never answers.
    Hang,
    /// 200 and an endless body.
    Endless,
    /// 302 to this location.
    Redirect(String),
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
    /// When the request head was read.
    at: Instant,
}

/// A small HTTP/1.1 server on a free 127.0.0.1 port, on its own thread.
struct HttpServer {
    port: u16,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    requests: Arc<Mutex<Vec<Seen>>>,
}

impl HttpServer {
    fn start() -> HttpServer {
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let requests: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let (r, q) = (routes.clone(), requests.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(serve(stream, r.clone(), q.clone()));
                }
            });
        });
        HttpServer {
            port,
            routes,
            requests,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn route(&self, path: &str, route: Route) {
        self.routes
            .lock()
            .expect("routes")
            .insert(path.to_string(), route);
    }

    fn feed(&self, path: &str, body: &[u8]) {
        self.route(
            path,
            Route::Feed {
                body: body.to_vec(),
                content_type: "application/rss+xml",
                etag: None,
                gzip: false,
            },
        );
    }

    fn requests_to(&self, path: &str) -> Vec<Seen> {
        self.requests
            .lock()
            .expect("requests")
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    requests: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_string();
    let headers: HashMap<String, String> = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    requests.lock().expect("requests").push(Seen {
        path: path.clone(),
        headers: headers.clone(),
        at: Instant::now(),
    });
    let route = match routes.lock().expect("routes").get_mut(&path) {
        Some(Route::Sequence(steps)) if steps.len() > 1 => Some(steps.remove(0)),
        Some(Route::Sequence(steps)) => steps.first().cloned(),
        other => other.cloned(),
    };
    let head = |status: &str, extra: &str, len: Option<usize>| {
        let len = len
            .map(|n| format!("Content-Length: {n}\r\n"))
            .unwrap_or_default();
        format!("HTTP/1.1 {status}\r\nConnection: close\r\n{extra}{len}\r\n")
    };
    match route {
        // A sequence inside a sequence is not a route the tests use.
        None | Some(Route::Sequence(_)) => {
            let _ = stream
                .write_all(head("404 Not Found", "", Some(0)).as_bytes())
                .await;
        }
        Some(Route::Modified {
            body,
            last_modified,
        }) => {
            let extra = format!("Last-Modified: {last_modified}\r\n");
            if headers.get("if-modified-since") == Some(&last_modified) {
                let _ = stream
                    .write_all(head("304 Not Modified", &extra, None).as_bytes())
                    .await;
                return;
            }
            let extra = format!("Content-Type: application/rss+xml\r\n{extra}");
            let _ = stream
                .write_all(head("200 OK", &extra, Some(body.len())).as_bytes())
                .await;
            let _ = stream.write_all(&body).await;
        }
        Some(Route::Feed {
            body,
            content_type,
            etag,
            gzip,
        }) => {
            if etag.is_some() && headers.get("if-none-match") == etag.as_ref() {
                let extra = format!("ETag: {}\r\n", etag.unwrap_or_default());
                let _ = stream
                    .write_all(head("304 Not Modified", &extra, None).as_bytes())
                    .await;
                return;
            }
            let mut extra = format!("Content-Type: {content_type}\r\n");
            if let Some(tag) = &etag {
                extra.push_str(&format!("ETag: {tag}\r\n"));
            }
            let body = if gzip {
                assert!(headers
                    .get("accept-encoding")
                    .is_some_and(|v| v.contains("gzip")));
                extra.push_str("Content-Encoding: gzip\r\n");
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(&body).expect("gzip");
                enc.finish().expect("gzip")
            } else {
                body
            };
            let _ = stream
                .write_all(head("200 OK", &extra, Some(body.len())).as_bytes())
                .await;
            let _ = stream.write_all(&body).await;
        }
        Some(Route::Status(code, hs)) => {
            let extra: String = hs.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
            let body = format!("status {code}\n");
            let _ = stream
                .write_all(head(&format!("{code} Whatever"), &extra, Some(body.len())).as_bytes())
                .await;
            let _ = stream.write_all(body.as_bytes()).await;
        }
        Some(Route::Hang) => {
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        Some(Route::Endless) => {
            let _ = stream
                .write_all(head("200 OK", "Content-Type: application/rss+xml\r\n", None).as_bytes())
                .await;
            let _ = stream
                .write_all(b"<?xml version=\"1.0\"?><rss version=\"2.0\"><channel>")
                .await;
            let junk = b"<item><title>again</title></item>".repeat(1000);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(120) {
                if stream.write_all(&junk).await.is_err() {
                    return;
                }
            }
        }
        Some(Route::Redirect(to)) => {
            let extra = format!("Location: {to}\r\n");
            let _ = stream
                .write_all(head("302 Found", &extra, Some(0)).as_bytes())
                .await;
        }
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/rss")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `signalbox-bridge rss --once ARGS`.
fn once(broker: &str, state: &Path, args: &[&str]) -> Finished {
    run_input(
        bridge(broker, state).args(["rss", "--once"]).args(args),
        b"",
        LIMIT,
    )
}

/// The summary line of `feed` in a `--once` output.
fn line<'a>(out: &'a Finished, feed: &str) -> &'a str {
    let prefix = format!("{feed}: ");
    out.stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| {
            panic!(
                "no line for {feed} in {:?} (stderr {:?})",
                out.stdout, out.stderr
            )
        })
}

/// Entry messages among `got`, by feed.
fn entries(got: &[Got]) -> Vec<Value> {
    got.iter()
        .filter(|g| g.topic.ends_with("/entry"))
        .map(Got::json)
        .collect()
}

fn with_title<'a>(got: &'a [Value], title: &str) -> &'a Value {
    got.iter()
        .find(|v| v["body"]["title"] == title)
        .unwrap_or_else(|| {
            panic!(
                "no entry titled {title:?} in {:#?}",
                got.iter().map(|v| &v["body"]["title"]).collect::<Vec<_>>()
            )
        })
}

const FORMATS: [(&str, &str); 9] = [
    ("rss091", "rss091.xml"),
    ("rss10", "rss10.rdf"),
    ("rss20", "rss20.xml"),
    ("atom", "atom.xml"),
    ("json", "feed.json"),
    ("entities", "entities.xml"),
    ("dates", "odd-dates.xml"),
    ("latin1", "latin1.xml"),
    ("noids", "no-ids.xml"),
];

#[test]
fn every_format_and_oddity_is_published_once_and_a_restart_republishes_nothing() {
    let broker = embedded_broker();
    let server = HttpServer::start();
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/rss/#");
    let state = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["--backfill".to_string(), "100".to_string()];
    for (name, file) in FORMATS {
        server.feed(&format!("/{file}"), &fixture(file));
        args.push("--feed".into());
        args.push(format!("{name}={}", server.url(&format!("/{file}"))));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = once(&broker.url(), state.path(), &args);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let got = entries(&sub.drain(Duration::from_secs(2)));
    assert_eq!(
        got.len(),
        2 + 2 + 3 + 2 + 2 + 2 + 5 + 1 + 4,
        "{:#?}",
        got.iter().map(|v| &v["summary"]).collect::<Vec<_>>()
    );
    for v in &got {
        let feed = v["body"]["feed"].as_str().expect("feed");
        assert_eq!(v["topic"], format!("signalbox/dev/rss/{feed}/entry"));
        assert_eq!(v["source"]["bridge"], "rss");
        let summary = v["summary"].as_str().expect("summary");
        assert!(summary.starts_with(&format!("[{feed}] ")), "{summary}");
        for field in [
            "feed_title",
            "entry_id",
            "title",
            "link",
            "published",
            "updated",
            "authors",
            "categories",
            "summary",
        ] {
            assert!(v["body"].get(field).is_some(), "{field} missing in {v}");
        }
    }
    // RSS 2.0: HTML description to text, categories, author, oldest first.
    let kernel = with_title(&got, "kernel-2.6.31.5-127.fc12 complete");
    assert_eq!(kernel["body"]["entry_id"], "koji-build-3");
    assert_eq!(kernel["body"]["summary"], "Build complete on [x86_64]");
    assert_eq!(
        kernel["body"]["categories"],
        serde_json::json!(["kernel", "f12"])
    );
    assert_eq!(
        kernel["body"]["authors"],
        serde_json::json!(["kernel-maint"])
    );
    assert_eq!(kernel["body"]["published"], "2009-11-24T19:05:00.000Z");
    assert_eq!(
        kernel["links"]["url"],
        "https://koji.example.org/buildinfo?buildID=3"
    );
    let koji: Vec<&Value> = got
        .iter()
        .filter(|v| v["body"]["feed"] == "rss20")
        .collect();
    assert_eq!(koji[0]["body"]["entry_id"], "koji-build-1", "oldest first");
    // RSS 0.91 and 1.0.
    assert_eq!(
        with_title(&got, "Mirror sync finished")["body"]["entry_id"],
        "http://status.example.org/2001/mirror-sync"
    );
    let bug = with_title(&got, "Bug 101 - kernel oops in ext4");
    assert_eq!(bug["body"]["authors"], serde_json::json!(["jkeating"]));
    assert_eq!(bug["body"]["feed_title"], "Bug tracker");
    // Atom: HTML title, XHTML summary, relative link resolved, alternate link.
    let party = with_title(&got, "Release party");
    assert_eq!(party["body"]["summary"], "Come to the release party!");
    assert_eq!(
        party["body"]["link"],
        "https://planet.example.org/2009/party"
    );
    assert_eq!(
        party["body"]["authors"],
        serde_json::json!(["Máirín Duffy"])
    );
    assert_eq!(party["body"]["updated"], "2009-11-25T07:00:00.000Z");
    let plain = with_title(&got, "Plain");
    assert_eq!(plain["body"]["summary"], "Only content, no summary");
    assert_eq!(plain["body"]["link"], server.url("/relative/plain.html"));
    // JSON Feed.
    let json = with_title(&got, "Second évent");
    assert_eq!(json["body"]["summary"], "HTML content");
    assert_eq!(
        json["body"]["categories"],
        serde_json::json!(["ops", "json"])
    );
    // Entities and CDATA.
    assert_eq!(
        with_title(&got, "CDATA <title> & friends")["body"]["summary"],
        "Inside CDATA & still HTML"
    );
    with_title(&got, "AT&T <rocks> © 2009 €5");
    assert_eq!(
        with_title(&got, "AT&T <rocks> © 2009 €5")["body"]["feed_title"],
        "Tom & Jerry’s ☃ feed"
    );
    // Odd dates: lenient, and a date that cannot be read is null, not an error.
    assert_eq!(
        with_title(&got, "two-digit year")["body"]["published"],
        "2009-11-25T00:03:00.000Z"
    );
    assert_eq!(
        with_title(&got, "no weekday")["body"]["published"],
        "2009-11-24T18:03:00.000Z"
    );
    assert_eq!(
        with_title(&got, "garbage date")["body"]["published"],
        Value::Null
    );
    // ISO-8859-1 declared in the prolog.
    let cafe = with_title(&got, "Café crème à la gare");
    assert_eq!(cafe["body"]["summary"], "Prêt à £ 5, © Société");
    assert_eq!(cafe["body"]["feed_title"], "Café news");
    // No ids: the link, else a hash of title and date — distinct and stable.
    let noids: Vec<String> = got
        .iter()
        .filter(|v| v["body"]["feed"] == "noids")
        .map(|v| {
            v["body"]["entry_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        noids.contains(&"https://noid.example.org/a".to_string()),
        "{noids:?}"
    );
    assert_eq!(
        noids.iter().filter(|i| i.starts_with("sha256:")).count(),
        3,
        "{noids:?}"
    );
    let unique: std::collections::HashSet<_> = noids.iter().collect();
    assert_eq!(unique.len(), 4);

    // A restart (a second run) republishes nothing.
    let again = once(&broker.url(), state.path(), &args);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert!(
        entries(&sub.drain(Duration::from_secs(2))).is_empty(),
        "nothing new: {}",
        again.stdout
    );
    assert_eq!(
        line(&again, "noids"),
        "noids: 4 entries, 0 new (0 published, 0 spooled)"
    );
}

#[test]
fn a_new_feed_marks_its_entries_seen_and_only_later_entries_are_published() {
    let broker = embedded_broker();
    let server = HttpServer::start();
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/rss/#");
    let state = tempfile::tempdir().expect("tempdir");
    let rss = String::from_utf8(fixture("rss20.xml")).expect("utf8");
    server.feed("/koji", rss.as_bytes());
    let feed = format!("koji={}", server.url("/koji"));
    let out = once(&broker.url(), state.path(), &["--feed", &feed]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        line(&out, "koji"),
        "koji: first poll, 3 entries marked seen, 0 backfilled (0 published, 0 spooled)"
    );
    assert!(entries(&sub.drain(Duration::from_millis(500))).is_empty());

    // A new entry on top, and the oldest one dropped.
    let newer = rss
        .replacen(
            "<item>",
            "<item><title>glibc complete</title><guid>koji-build-4</guid><link>https://koji.example.org/4</link></item><item>",
            1,
        )
        .replace("koji-build-1", "koji-build-gone");
    server.feed("/koji", newer.as_bytes());
    let out = once(&broker.url(), state.path(), &["--feed", &feed]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got = entries(&sub.drain(Duration::from_secs(1)));
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|v| v["body"]["entry_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec!["koji-build-gone", "koji-build-4"],
        "{}",
        out.stdout
    );
    assert_eq!(got[1]["summary"], "[koji] glibc complete");

    // The dropped entry comes back: not new.
    server.feed("/koji", rss.as_bytes());
    let out = once(&broker.url(), state.path(), &["--feed", &feed]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        entries(&sub.drain(Duration::from_millis(500))).is_empty(),
        "{}",
        out.stdout
    );
    let saved: Value =
        serde_json::from_slice(&std::fs::read(state.path().join("rss/koji.json")).expect("state"))
            .expect("json");
    assert_eq!(saved["seen"].as_object().map(|m| m.len()), Some(5));
}

#[test]
fn etag_gives_a_conditional_get_and_304_publishes_nothing() {
    let broker = embedded_broker();
    let server = HttpServer::start();
    let state = tempfile::tempdir().expect("tempdir");
    server.route(
        "/f",
        Route::Feed {
            body: fixture("atom.xml"),
            content_type: "application/atom+xml",
            etag: Some("\"v1\"".into()),
            gzip: false,
        },
    );
    let feed = format!("f={}", server.url("/f"));
    let first = once(&broker.url(), state.path(), &["--feed", &feed]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let second = once(&broker.url(), state.path(), &["--feed", &feed]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(line(&second, "f"), "f: not modified");
    let seen = server.requests_to("/f");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers.get("if-none-match"), None);
    assert_eq!(
        seen[1].headers.get("if-none-match").map(String::as_str),
        Some("\"v1\"")
    );
    let ua = seen[0]
        .headers
        .get("user-agent")
        .cloned()
        .unwrap_or_default();
    assert!(ua.contains("signalbox"), "{ua}");
}

#[test]
fn gzip_bodies_are_decompressed() {
    let broker = embedded_broker();
    let server = HttpServer::start();
    let state = tempfile::tempdir().expect("tempdir");
    server.route(
        "/gz",
        Route::Feed {
            body: fixture("rss20.xml"),
            content_type: "application/rss+xml",
            etag: None,
            gzip: true,
        },
    );
    let out = once(
        &broker.url(),
        state.path(),
        &["--feed", &format!("gz={}", server.url("/gz"))],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        line(&out, "gz").starts_with("gz: first poll, 3 entries"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_failing_feed_sends_one_event_when_it_breaks_and_one_when_it_recovers() {
    let broker = embedded_broker();
    let server = HttpServer::start();
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/rss/#");
    let state = tempfile::tempdir().expect("tempdir");
    server.route("/f", Route::Status(500, vec![]));
    server.feed("/ok", &fixture("rss20.xml"));
    let args = [
        "--feed",
        &format!("f={}", server.url("/f")),
        "--feed",
        &format!("ok={}", server.url("/ok")),
    ];
    let args: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
    for run in 0..2 {
        let out = once(&broker.url(), state.path(), &args);
        assert_eq!(out.code, 1, "run {run}: {}", out.stdout);
        assert!(line(&out, "f").contains("HTTP 500"), "{}", out.stdout);
        assert!(
            line(&out, "ok").starts_with("ok: "),
            "the good feed is polled: {}",
            out.stdout
        );
    }
    let got = events(sub.drain(Duration::from_secs(1)));
    let broken: Vec<Value> = got
        .iter()
        .filter(|g| g.topic.ends_with("/broken"))
        .map(Got::json)
        .collect();
    assert_eq!(broken.len(), 1, "one event for two failed polls");
    assert_eq!(broken[0]["severity"], "warning");
    assert_eq!(broken[0]["topic"], "signalbox/dev/rss/f/broken");
    assert!(broken[0]["body"]["error"]
        .as_str()
        .unwrap_or_default()
        .contains("500"));
    // --once publishes its own `idle` report, with the per-feed status.
    let health = Subscriber::start(&broker.url(), "signalbox/_health/rss");
    let report = health
        .next(Duration::from_secs(10))
        .expect("a retained report");
    let report = report.json();
    assert_eq!(report["state"], "idle", "{report}");
    assert_eq!(report["feeds"]["f"]["status"], "failing", "{report}");
    assert_eq!(report["feeds"]["f"]["failures"], 2, "{report}");
    assert!(
        report["feeds"]["f"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("500"),
        "{report}"
    );
    assert_eq!(report["feeds"]["ok"]["status"], "ok", "{report}");
    assert_eq!(report["feeds"]["ok"]["entries_seen"], 3, "{report}");

    server.feed("/f", &fixture("rss20.xml"));
    let out = once(&broker.url(), state.path(), &args);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let out = once(&broker.url(), state.path(), &args);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let got = events(sub.drain(Duration::from_secs(1)));
    let recovered: Vec<&Got> = got
        .iter()
        .filter(|g| g.topic.ends_with("/recovered"))
        .collect();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].json()["body"]["failures"], 2);
    assert!(!got.iter().any(|g| g.topic.ends_with("/broken")));
}

#[test]
fn hanging_endless_looping_throttled_and_ill_formed_feeds_fail_alone_and_in_bounded_time() {
    let broker = embedded_broker();
    let server = HttpServer::start();
    let state = tempfile::tempdir().expect("tempdir");
    server.route("/hang", Route::Hang);
    server.route("/endless", Route::Endless);
    server.route("/loop", Route::Redirect("/loop2".into()));
    server.route("/loop2", Route::Redirect("/loop".into()));
    server.route(
        "/busy",
        Route::Status(503, vec![("Retry-After".into(), "3600".into())]),
    );
    server.feed("/broken", &fixture("broken.xml"));
    server.feed("/html", b"<html><body>an error page</body></html>");
    server.feed("/good", &fixture("rss20.xml"));
    let mut args = vec![
        "--http-timeout".to_string(),
        "2s".into(),
        "--max-bytes".into(),
        "200000".into(),
    ];
    for name in ["hang", "endless", "loop", "busy", "broken", "html", "good"] {
        args.push("--feed".into());
        args.push(format!("{name}={}", server.url(&format!("/{name}"))));
    }
    args.push("--feed".into());
    args.push("missing=/nonexistent/feed.xml".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let out = once(&broker.url(), state.path(), &args);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded: {:?}",
        started.elapsed()
    );
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(line(&out, "hang").contains("within 2 s"), "{}", out.stdout);
    assert!(
        line(&out, "endless").contains("larger than 200000 bytes"),
        "{}",
        out.stdout
    );
    assert!(line(&out, "loop").contains("redirects"), "{}", out.stdout);
    assert!(line(&out, "busy").contains("HTTP 503"), "{}", out.stdout);
    assert!(
        line(&out, "broken").contains("not a valid feed"),
        "{}",
        out.stdout
    );
    assert!(
        line(&out, "html").contains("not a valid feed"),
        "{}",
        out.stdout
    );
    assert!(
        line(&out, "missing").contains("cannot read /nonexistent/feed.xml"),
        "{}",
        out.stdout
    );
    assert!(
        line(&out, "good").starts_with("good: first poll, 3 entries"),
        "{}",
        out.stdout
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);

    // Retry-After is honoured across runs: the busy feed is not asked again.
    let before = server.requests_to("/busy").len();
    let out = once(
        &broker.url(),
        state.path(),
        &["--feed", &format!("busy={}", server.url("/busy"))],
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        line(&out, "busy").contains("deferred until"),
        "{}",
        out.stdout
    );
    assert_eq!(server.requests_to("/busy").len(), before);
}

#[test]
fn entries_are_spooled_when_the_broker_is_down_and_flushed_by_the_next_run() {
    let broker = embedded_broker();
    let state = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("feed.xml");
    std::fs::write(&path, fixture("rss20.xml")).expect("write");
    let feed = format!("local={}", path.display());
    let out = once(
        &dead_broker(),
        state.path(),
        &["--feed", &feed, "--backfill", "2"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        line(&out, "local"),
        "local: first poll, 3 entries marked seen, 2 backfilled (0 published, 2 spooled)"
    );
    assert_eq!(spool_files(&state.path().join("spool")).len(), 2);

    let sub = Subscriber::start(&broker.url(), "signalbox/dev/rss/#");
    let out = once(&broker.url(), state.path(), &["--feed", &feed]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        line(&out, "local"),
        "local: not modified",
        "an unchanged file is not read again"
    );
    let got = entries(&sub.drain(Duration::from_secs(1)));
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|v| v["body"]["entry_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec!["koji-build-2", "koji-build-3"],
        "the spool was flushed: --backfill 2 is the 2 newest, oldest first"
    );
    assert!(spool_files(&state.path().join("spool")).is_empty());
}

#[test]
fn feeds_come_from_the_rss_table_of_the_config_file_and_bad_config_is_exit_2() {
    let broker = embedded_broker();
    let server = HttpServer::start();
    let state = tempfile::tempdir().expect("tempdir");
    server.feed("/a", &fixture("rss20.xml"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "env = \"prod\"\n[rss]\ninterval = \"5m\"\nconcurrency = 2\n[rss.feeds]\nkoji = \"{}\"\nplanet = {{ url = \"{}\", interval = \"1h\" }}\n",
            server.url("/a"),
            server.url("/a")
        ),
    )
    .expect("write");
    let sub = Subscriber::start(&broker.url(), "signalbox/prod/rss/#");
    let out = run_input(
        bridge(&broker.url(), state.path())
            .env("SIGNALBOX_CONFIG", &config)
            .args(["rss", "--once", "--backfill", "1"]),
        b"",
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        entries(&sub.take(2, LIMIT)).len(),
        2,
        "one backfilled entry per feed"
    );

    for (bad, want) in [
        (
            "[rss]\nfeeds = { \"a/b\" = \"http://x/\" }\n",
            "invalid feed name",
        ),
        (
            "[rss]\ninterval = \"soon\"\nfeeds = { a = \"http://x/\" }\n",
            "invalid duration",
        ),
        ("[rss]\nfeeds = { a = \"ftp://x/\" }\n", "unsupported URL"),
        ("[rss]\nbogus = 1\n", "bogus"),
        ("[rss]\n", "no feeds"),
    ] {
        std::fs::write(&config, bad).expect("write");
        let out = run_input(
            bridge(&broker.url(), state.path())
                .env("SIGNALBOX_CONFIG", &config)
                .args(["rss", "--once"]),
            b"",
            LIMIT,
        );
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{bad}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
    }
    let out = once(&broker.url(), state.path(), &["--feed", "nourl"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("NAME=URL"), "{}", out.stderr);
}

/// The daemon's health reports for `name`, as they arrive.
fn next_health(sub: &Subscriber, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(g) = sub.next(Duration::from_secs(1)) {
            if g.topic == "signalbox/_health/rss" {
                let v = g.json();
                if until(&v) {
                    return v;
                }
            }
        }
    }
    panic!("no matching health report within 30 s");
}

#[test]
fn the_daemon_reports_per_feed_health_degrades_on_a_broken_feed_and_recovers() {
    let broker = embedded_broker();
    let server = HttpServer::start();
    let state = tempfile::tempdir().expect("tempdir");
    server.feed("/good", &fixture("rss20.xml"));
    server.route("/bad", Route::Status(500, vec![]));
    let health = Subscriber::start(&broker.url(), "signalbox/_health/rss");
    let events_sub = Subscriber::start(&broker.url(), "signalbox/dev/rss/#");
    let child = bridge(&broker.url(), state.path())
        .args(["rss", "--interval", "1s", "--health-interval", "1"])
        .args(["--feed", &format!("good={}", server.url("/good"))])
        .args(["--feed", &format!("bad={}", server.url("/bad"))])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut guard = KillOnDrop(child);

    let degraded = next_health(&health, |v| v["state"] == "degraded");
    assert_eq!(degraded["feeds"]["bad"]["status"], "failing", "{degraded}");
    assert!(degraded["feeds"]["bad"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .contains("500"));
    let ok = next_health(&health, |v| v["feeds"]["good"]["status"] == "ok");
    assert!(ok["feeds"]["good"]["entries_seen"] == 3, "{ok}");
    assert!(ok["feeds"]["good"]["next_poll"].is_string());

    // A new entry in the good feed is published by the next poll.
    let newer = String::from_utf8(fixture("rss20.xml"))
        .expect("utf8")
        .replacen(
            "<item>",
            "<item><title>new one</title><guid>n-1</guid></item><item>",
            1,
        );
    server.feed("/good", newer.as_bytes());
    server.feed("/bad", &fixture("atom.xml"));
    let up = next_health(&health, |v| {
        v["state"] == "up" && v["feeds"]["bad"]["status"] == "ok"
    });
    assert_eq!(up["feeds"]["bad"]["failures"], 0);
    std::thread::sleep(Duration::from_secs(3));
    let got = events(events_sub.drain(Duration::from_millis(500)));
    let count = |suffix: &str| got.iter().filter(|g| g.topic.ends_with(suffix)).count();
    assert_eq!(
        count("/bad/broken"),
        1,
        "{:?}",
        got.iter().map(|g| &g.topic).collect::<Vec<_>>()
    );
    assert_eq!(count("/bad/recovered"), 1);
    assert_eq!(count("/good/entry"), 1, "the new entry, once");
    assert!(
        server.requests_to("/bad").len() >= 3,
        "polled again and again"
    );

    // SIGTERM: a clean stop, reported.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let stopped = next_health(&health, |v| v["state"] == "stopped");
    assert_eq!(stopped["listener"], "rss");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0));
}

/// Times of the requests the server saw on `path`.
fn request_times(server: &HttpServer, path: &str) -> Vec<Instant> {
    server.requests_to(path).iter().map(|s| s.at).collect()
}

/// Waits until `path` was requested `n` times (panics after `limit`).
fn wait_for_requests(server: &HttpServer, path: &str, n: usize, limit: Duration) -> Vec<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        let times = request_times(server, path);
        if times.len() >= n {
            return times;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: {} requests within {limit:?}, wanted {n}",
            times.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_daemon_waits_out_retry_after_and_backs_off_a_failing_feed_without_delaying_the_others() {
    let broker = embedded_broker();
    let server = HttpServer::start();
    let state = tempfile::tempdir().expect("tempdir");
    let ok = || Route::Feed {
        body: fixture("rss20.xml"),
        content_type: "application/rss+xml",
        etag: None,
        gzip: false,
    };
    let wait =
        |code: u16, secs: &str| Route::Status(code, vec![("Retry-After".into(), secs.into())]);
    server.route("/throttled", Route::Sequence(vec![wait(429, "3"), ok()]));
    server.route("/busy", Route::Sequence(vec![wait(503, "2"), ok()]));
    server.route("/down", Route::Status(500, vec![]));
    server.feed("/steady", &fixture("atom.xml"));
    let mut cmd = bridge(&broker.url(), state.path());
    cmd.args(["rss", "--interval", "1s", "--health-interval", "1"]);
    for name in ["throttled", "busy", "down", "steady"] {
        cmd.args([
            "--feed",
            &format!("{name}={}", server.url(&format!("/{name}"))),
        ]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let _guard = KillOnDrop(child);

    // 429 Retry-After: 3 — the next request comes no sooner than 3 s later,
    // then the feed is back on its 1 s interval (±10 %).
    let throttled = wait_for_requests(&server, "/throttled", 3, Duration::from_secs(15));
    let gap = throttled[1] - throttled[0];
    assert!(gap >= Duration::from_secs(3), "asked again after {gap:?}");
    assert!(
        gap < Duration::from_millis(4500),
        "waited {gap:?}, not ~3 s"
    );
    let gap = throttled[2] - throttled[1];
    assert!(
        gap < Duration::from_millis(1500),
        "interval after recovery: {gap:?}"
    );
    // 503 Retry-After: 2 likewise.
    let busy = wait_for_requests(&server, "/busy", 2, Duration::from_secs(10));
    let gap = busy[1] - busy[0];
    assert!(gap >= Duration::from_secs(2), "asked again after {gap:?}");
    assert!(
        gap < Duration::from_millis(3500),
        "waited {gap:?}, not ~2 s"
    );
    // The other feeds kept their own 1 s schedule meanwhile.
    let steady: Vec<Instant> = request_times(&server, "/steady")
        .into_iter()
        .filter(|t| *t >= throttled[0] && *t <= throttled[1])
        .collect();
    assert!(
        steady.len() >= 2,
        "the steady feed was held back: {steady:?}"
    );
    for pair in steady.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap < Duration::from_millis(1500), "steady feed gap {gap:?}");
    }
    // A feed failing without Retry-After backs off: the interval doubled
    // per failure (1, 2, 4 s, each ±10 %; the upper bounds leave room for
    // a loaded machine but not for the next doubling).
    let down = wait_for_requests(&server, "/down", 4, Duration::from_secs(15));
    let gaps: Vec<Duration> = down.windows(2).map(|p| p[1] - p[0]).collect();
    assert!(
        gaps[0] >= Duration::from_millis(850) && gaps[0] < Duration::from_millis(1500),
        "{gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(1750) && gaps[1] < Duration::from_millis(3000),
        "{gaps:?}"
    );
    assert!(
        gaps[2] >= Duration::from_millis(3500) && gaps[2] < Duration::from_millis(6000),
        "{gaps:?}"
    );
}

#[test]
fn last_modified_gives_if_modified_since_redirects_are_followed_and_a_gzip_bomb_hits_the_cap() {
    let broker = embedded_broker();
    let server = HttpServer::start();
    let state = tempfile::tempdir().expect("tempdir");
    let stamp = "Tue, 24 Nov 2009 19:05:00 GMT";
    server.route(
        "/lm",
        Route::Modified {
            body: fixture("rss20.xml"),
            last_modified: stamp.into(),
        },
    );
    server.feed("/target", &fixture("atom.xml"));
    server.route("/moved", Route::Redirect("/hop".into()));
    server.route("/hop", Route::Redirect(server.url("/target")));
    // 4 MB of feed that gzip squeezes into a few KB: the cap applies to
    // what it decompresses to, not to what crosses the wire.
    let mut bomb = b"<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>".to_vec();
    bomb.resize(4 * 1024 * 1024, b'x');
    server.route(
        "/bomb",
        Route::Feed {
            body: bomb,
            content_type: "application/rss+xml",
            etag: None,
            gzip: true,
        },
    );
    let feeds = [
        format!("lm={}", server.url("/lm")),
        format!("moved={}", server.url("/moved")),
        format!("bomb={}", server.url("/bomb")),
    ];
    let mut args = vec!["--max-bytes", "200000"];
    for f in &feeds {
        args.extend(["--feed", f.as_str()]);
    }
    let out = once(&broker.url(), state.path(), &args);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        line(&out, "lm").starts_with("lm: first poll, 3 entries"),
        "{}",
        out.stdout
    );
    assert!(
        line(&out, "moved").starts_with("moved: first poll, 2 entries"),
        "two redirects followed: {}",
        out.stdout
    );
    assert!(
        line(&out, "bomb").contains("larger than 200000 bytes"),
        "{}",
        out.stdout
    );
    assert_eq!(server.requests_to("/target").len(), 1);

    let out = once(&broker.url(), state.path(), &["--feed", &feeds[0]]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(line(&out, "lm"), "lm: not modified");
    let seen = server.requests_to("/lm");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers.get("if-modified-since"), None);
    assert_eq!(
        seen[1].headers.get("if-modified-since").map(String::as_str),
        Some(stamp)
    );
}

/// A TCP relay on a free 127.0.0.1 port to `target`: while down it drops
/// every connection at once (a broker that cannot be reached); once up it
/// relays. Lets a subscriber be in place on the real broker before the
/// bridge can reach it.
struct Relay {
    port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(target: String) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = up.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, up }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn open(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn the_daemon_spools_while_the_broker_is_away_and_flushes_once_it_is_back() {
    let broker = embedded_broker();
    let relay = Relay::start(broker.url().trim_start_matches("mqtt://").to_string());
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/rss/#");
    let state = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("feed.xml");
    std::fs::write(&path, fixture("rss20.xml")).expect("write");
    let child = bridge(&relay.url(), state.path())
        .args([
            "rss",
            "--interval",
            "1s",
            "--backfill",
            "2",
            "--timeout",
            "1",
        ])
        .args(["--feed", &format!("local={}", path.display())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let _guard = KillOnDrop(child);
    let spool = state.path().join("spool");
    let deadline = Instant::now() + Duration::from_secs(15);
    while spool_files(&spool).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the backfilled entries were not spooled: {:?}",
            spool_files(&spool)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The feed does not change again: the spool must be flushed because
    // the broker came back, not because a new entry needed the bus.
    relay.open();
    let got = entries(&sub.take(2, Duration::from_secs(15)));
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|v| v["body"]["entry_id"].as_str())
        .collect();
    assert_eq!(ids, vec!["koji-build-2", "koji-build-3"], "oldest first");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !spool_files(&spool).is_empty() {
        assert!(Instant::now() < deadline, "the spool was not emptied");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        entries(&sub.drain(Duration::from_secs(2))).is_empty(),
        "nothing twice"
    );
}

#[test]
fn concurrency_bounds_the_feeds_fetched_at_once() {
    let broker = embedded_broker();
    let server = HttpServer::start();
    let state = tempfile::tempdir().expect("tempdir");
    let mut args = vec![
        "--concurrency".to_string(),
        "1".into(),
        "--http-timeout".into(),
        "1s".into(),
    ];
    for name in ["h1", "h2", "h3"] {
        server.route(&format!("/{name}"), Route::Hang);
        args.push("--feed".into());
        args.push(format!("{name}={}", server.url(&format!("/{name}"))));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = once(&broker.url(), state.path(), &args);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    // One at a time: each request arrives only once the one before it
    // timed out.
    let mut times: Vec<Instant> = ["/h1", "/h2", "/h3"]
        .iter()
        .flat_map(|p| request_times(&server, p))
        .collect();
    times.sort();
    assert_eq!(times.len(), 3);
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(950),
            "overlapping fetches: {gap:?}"
        );
    }
}
