//! `signalbox demo --headless`: every simulated system produces messages
//! through the real bridges, the alias/ACL files are regenerated from the
//! package database, mail lands in the Maildir, the RSS file parses, failed
//! messages are recorded and a replay clears some.

use std::time::Duration;

use signalbox_e2e::{isolate, run_with_limit};

#[test]
fn a_headless_demo_exercises_every_part() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = std::process::Command::new(signalbox_e2e::bin("signalbox"));
    isolate(&mut cmd);
    cmd.args([
        "demo",
        "--headless",
        "--json",
        "--duration",
        "20",
        "--speed",
        "4",
        "--seed",
        "1",
        "--dir",
    ])
    .arg(dir.path());
    let out = run_with_limit(&mut cmd, Duration::from_secs(120));
    assert_eq!(out.code, 0, "demo failed: {}", out.stderr);
    let json_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON summary line");
    let s: serde_json::Value = serde_json::from_str(json_line).expect("summary JSON");
    for system in ["git", "koji", "qa", "pkgdb", "mail", "cron", "rss"] {
        assert!(
            s["messages"][system].as_u64().unwrap_or(0) > 0,
            "{system} produced messages: {s}"
        );
    }
    for listener in [
        "koji",
        "qa",
        "aliases",
        "bugzilla-hook",
        "mail-notify",
        "feed-writer",
    ] {
        let state = s["listeners"][listener].as_str().unwrap_or("missing");
        assert!(
            ["up", "degraded"].contains(&state),
            "{listener} is running: {state}"
        );
    }
    assert!(
        s["listeners"]["git-kernel"].is_string() || s["listeners"]["git-glibc"].is_string(),
        "the git bridge reported: {s}"
    );
    // Ownership changes regenerated the aliases and ACL files from the database.
    assert!(s["files"]["alias_runs"].as_u64().unwrap_or(0) >= 1, "{s}");
    let owners = std::fs::read_to_string(dir.path().join("pkgdb/owners.txt")).expect("owners");
    let aliases = std::fs::read_to_string(dir.path().join("out/aliases")).expect("aliases");
    let acl = std::fs::read_to_string(dir.path().join("out/acl")).expect("acl");
    for line in owners.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(
            aliases.contains(&format!("{}-owner: {}", f[0], f[2])),
            "aliases follow the database:\n{aliases}\n{owners}"
        );
        assert!(
            acl.contains(&format!("avail | {} | rpms/{}", f[1], f[0])),
            "{acl}"
        );
    }
    // The flaky hook filled Failed, and the operator's replay cleared some.
    assert!(s["failed_records"].as_u64().unwrap_or(0) > 0, "{s}");
    assert!(s["replays"]["replayed"].as_u64().unwrap_or(0) > 0, "{s}");
    // Mail went to the Maildir; the RSS file of commits and builds parses.
    let mails: Vec<_> = std::fs::read_dir(dir.path().join("mail/new"))
        .expect("maildir")
        .flatten()
        .collect();
    assert!(!mails.is_empty(), "mail in the Maildir");
    let mail = std::fs::read(mails[0].path()).expect("a mail");
    let parsed = mail_parser::MessageParser::default()
        .parse(&mail)
        .expect("a mail that parses");
    assert!(parsed.subject().is_some_and(|s| !s.is_empty()));
    let feed = std::fs::read(dir.path().join("out/feed.xml")).expect("feed file");
    let feed = feed_rs::parser::parse(&feed[..]).expect("the RSS file parses");
    assert!(!feed.entries.is_empty(), "the feed has entries");
    assert!(dir.path().join("summary.json").exists());
}
