//! `signalbox-bridge feed` as a real process against the embedded broker:
//! an RSS file from `signalbox pub`, validated by parsing it back with
//! feed-rs, kept to the newest N, served over HTTP, surviving a restart
//! (history reloaded); Atom likewise; bad configuration refused at start.

mod outbound_support;

use std::process::Command;

use outbound_support::*;
use signalbox_common::envelope::Envelope;
use signalbox_common::health::HealthState;
use signalbox_e2e::{embedded_broker, free_port, wait_with_limit, KillOnDrop};

fn parse_feed(xml: &str) -> feed_rs::model::Feed {
    feed_rs::parser::parse(xml.as_bytes()).unwrap_or_else(|e| panic!("a valid feed: {e}\n{xml}"))
}

fn titles(feed: &feed_rs::model::Feed) -> Vec<String> {
    feed.entries
        .iter()
        .map(|e| {
            e.title
                .as_ref()
                .map(|t| t.content.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_an_rss_file_serves_it_and_keeps_its_history_across_a_restart() {
    let broker = embedded_broker();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("www/commits.xml");
    std::fs::create_dir_all(output.parent().expect("parent")).expect("www");
    let addr = format!("127.0.0.1:{}", free_port());
    let args = [
        "feed",
        "--name",
        "commits",
        "--filter",
        "signalbox/dev/git/#",
        "--output",
        output.to_str().expect("utf8"),
        "--keep",
        "3",
        "--title",
        "Commits & pushes",
        "--serve",
        &addr,
    ];
    let mut w = watch(&url, &["signalbox/_health/commits"]).await;
    let first = start(&url, &dir.path().join("state"), &args);
    health(&mut w, "commits", HealthState::Up).await;

    let out = signalbox_cli(
        &url,
        &[
            "pub",
            "signalbox/dev/git/kernel/commit",
            "jkeating pushed <b>kernel</b> & \"ext4\" — Überprüfung ✓",
            "--link",
            "url=https://git.example.org/kernel/c/1?a=1&b=2",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let xml = wait_file(&output, |t| t.contains("<item>")).await;
    let feed = parse_feed(&xml);
    assert_eq!(feed.feed_type, feed_rs::model::FeedType::RSS2);
    assert_eq!(
        feed.title.as_ref().map(|t| t.content.as_str()),
        Some("Commits & pushes")
    );
    let entry = &feed.entries[0];
    assert_eq!(
        titles(&feed),
        ["jkeating pushed <b>kernel</b> & \"ext4\" — Überprüfung ✓"]
    );
    assert_eq!(
        entry.links[0].href,
        "https://git.example.org/kernel/c/1?a=1&b=2"
    );
    assert_eq!(entry.categories[0].term, "signalbox/dev/git/kernel/commit");
    let first_id = entry.id.clone();
    assert!(uuid_like(&first_id), "guid = message id: {first_id}");

    let p = client(&url).await;
    for n in 2..=4 {
        send(
            &p,
            Envelope::builder("signalbox/dev/git/kernel/commit", format!("push {n}"))
                .build()
                .expect("env"),
        )
        .await;
    }
    let xml = wait_file(&output, |t| t.contains("push 4")).await;
    let feed = parse_feed(&xml);
    assert_eq!(
        titles(&feed),
        ["push 4", "push 3", "push 2"],
        "the newest 3, newest first"
    );
    assert!(feed.entries.iter().all(|e| e.published.is_some()));

    // Served over HTTP.
    let (status, body) = http_get(&addr, "/commits.xml").await;
    assert_eq!(status, 200);
    assert_eq!(titles(&parse_feed(&body)), ["push 4", "push 3", "push 2"]);

    // Restart: the history is read back and kept.
    let status = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || wait_with_limit(first, WAIT))
        .await
        .expect("join");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let _second = KillOnDrop(start(&url, &dir.path().join("state"), &args));
    health(&mut w, "commits", HealthState::Up).await;
    send(
        &p,
        Envelope::builder(
            "signalbox/dev/git/kernel/commit",
            "push 5 after the restart",
        )
        .build()
        .expect("env"),
    )
    .await;
    let xml = wait_file(&output, |t| t.contains("push 5")).await;
    assert_eq!(
        titles(&parse_feed(&xml)),
        ["push 5 after the restart", "push 4", "push 3"]
    );
    let (status, body) = http_get(&addr, "/").await;
    assert_eq!(status, 200);
    assert_eq!(titles(&parse_feed(&body)).len(), 3);
}

fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_atom_when_asked() {
    let broker = embedded_broker();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("builds.atom");
    let mut w = watch(&url, &["signalbox/_health/builds"]).await;
    let _listener = KillOnDrop(start(
        &url,
        &dir.path().join("state"),
        &[
            "feed",
            "--name",
            "builds",
            "--filter",
            "signalbox/dev/koji/#",
            "--output",
            output.to_str().expect("utf8"),
            "--format",
            "atom",
        ],
    ));
    health(&mut w, "builds", HealthState::Up).await;
    let p = client(&url).await;
    let e = send(
        &p,
        Envelope::builder("signalbox/dev/koji/build/complete", "kernel-2.6.35 built ✓")
            .link("url", "https://koji.example.org/b/1")
            .build()
            .expect("env"),
    )
    .await;
    let xml = wait_file(&output, |t| t.contains("<entry>")).await;
    let feed = parse_feed(&xml);
    assert_eq!(feed.feed_type, feed_rs::model::FeedType::Atom);
    assert_eq!(titles(&feed), ["kernel-2.6.35 built ✓"]);
    assert_eq!(feed.entries[0].id, format!("urn:uuid:{}", e.id));
    assert_eq!(feed.entries[0].published, Some(e.time));
}

#[test]
fn bad_configuration_is_refused_at_start_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("file");
    let corrupt = dir.path().join("corrupt.xml");
    std::fs::write(&corrupt, "<rss><channel><item>").expect("file");
    let good = dir.path().join("good.xml");
    let base = ["feed", "--name", "f", "--filter", "signalbox/dev/#"];
    let url = "mqtt://127.0.0.1:9";
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let cases: [(Vec<String>, &str); 5] = [
        (
            with(&["--output", file.join("feed.xml").to_str().expect("utf8")]),
            "a-file/feed.xml: Not a directory",
        ),
        (
            with(&[
                "--output",
                dir.path().join("missing/feed.xml").to_str().expect("utf8"),
            ]),
            "cannot write the feed",
        ),
        (
            with(&["--output", corrupt.to_str().expect("utf8")]),
            "move it away",
        ),
        (
            with(&[
                "--output",
                good.to_str().expect("utf8"),
                "--serve",
                "not-an-address",
            ]),
            "--serve",
        ),
        (
            with(&["--output", good.to_str().expect("utf8"), "--keep", "0"]),
            "--keep",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_config_error(&run_bridge(url, dir.path(), &args), needle);
    }
    // An unknown format: clap's usage error, exit 2, naming the choices.
    let out = run_bridge(
        url,
        dir.path(),
        &with(&["--output", "x.xml", "--format", "json"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .lines()
            .next()
            .unwrap_or_default()
            .contains("invalid value 'json' for '--format"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("rss, atom"), "{}", out.stderr);
}
