//! The durable spool end to end: the broker down → messages from mail, cron
//! and git runs spooled → `spool list` → flushed later (by `spool flush`
//! and by the next bridge run) with nothing lost and the order kept; a
//! flush that cannot reach the broker; and a bridge killed with SIGKILL in
//! the middle of spooling leaves no partial message.

mod bridge_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bridge_support::{bridge, dead_broker, events, run_input, spool_files, Subscriber, LIMIT};
use serde_json::Value;
use signalbox_e2e::{embedded_broker, free_port, mosquitto, mosquitto_on_port};

fn mail(n: usize) -> Vec<u8> {
    format!("From: Sender <s@example.org>\nTo: ops@example.org\nSubject: message {n}\n\nbody {n}\n")
        .into_bytes()
}

fn summaries(got: &[bridge_support::Got]) -> Vec<String> {
    got.iter()
        .map(|g| g.json()["summary"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Spools 5 mails and two cron runs (the second's retained `finished`
/// must win) while nothing listens on `url`.
fn spool_while_down(url: &str, state: &std::path::Path) {
    for i in 0..5 {
        let out = run_input(bridge(url, state).arg("mail"), &mail(i), LIMIT);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    for code in ["1", "0"] {
        let out = run_input(
            bridge(url, state).args([
                "cron",
                "--job",
                "backup",
                "--",
                "sh",
                "-c",
                &format!("exit {code}"),
            ]),
            b"",
            LIMIT,
        );
        assert_eq!(out.code.to_string(), code);
    }
    assert_eq!(spool_files(&state.join("spool")).len(), 9);
}

fn expected_order() -> Vec<String> {
    let mut want: Vec<String> = (0..5)
        .map(|i| format!("Sender <s@example.org>: message {i}"))
        .collect();
    want.push("backup started".into());
    want.push("backup failed".into());
    want.push("backup started".into());
    want.push("backup finished".into());
    want
}

fn check_order(got: &[bridge_support::Got]) {
    let got = summaries(got);
    let want = expected_order();
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(&want) {
        assert!(g.starts_with(w.as_str()), "order: got {got:?}");
    }
}

#[test]
fn spooled_while_down_then_flushed_in_order_with_nothing_lost() {
    // The broker's port is chosen now; nothing listens there yet.
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let state = tempfile::tempdir().expect("tempdir");
    spool_while_down(&url, state.path());

    let out = run_input(
        bridge(&url, state.path()).args(["spool", "list", "--json"]),
        b"",
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let listed: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(listed.len(), 9);
    assert_eq!(listed[0]["topic"], "signalbox/dev/mail/ops/received");
    assert_eq!(listed[8]["topic"], "signalbox/dev/cron/backup/finished");
    assert_eq!(listed[8]["retain"], true);
    let human = run_input(
        bridge(&url, state.path()).args(["spool", "list"]),
        b"",
        LIMIT,
    );
    assert_eq!(human.stdout.lines().count(), 9);
    assert!(
        human
            .stdout
            .lines()
            .next()
            .unwrap_or_default()
            .contains("Sender <s@example.org>: message 0"),
        "{}",
        human.stdout
    );

    // Flushing with the broker still down: exit 1, one line, nothing lost.
    let out = run_input(
        bridge(&url, state.path()).args(["spool", "flush", "--timeout", "3"]),
        b"",
        LIMIT,
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("9 message(s) remain"), "{}", out.stderr);
    assert_eq!(spool_files(&state.path().join("spool")).len(), 9);

    // The broker comes up (mosquitto on that port when installed, else an
    // embedded broker elsewhere).
    let (url, _guard_m, _guard_e) = match mosquitto_on_port("spooled_while_down_then_flushed", port)
    {
        Some(m) => (m.url(), Some(m), None),
        None => {
            let b = embedded_broker();
            (b.url(), None, Some(b))
        }
    };
    let sub = Subscriber::start(&url, "signalbox/dev/#");
    let out = run_input(
        bridge(&url, state.path()).args(["spool", "flush", "--json"]),
        b"",
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: Value = serde_json::from_str(out.stdout.trim()).expect("json report");
    assert_eq!(report["flushed"], 9);
    assert_eq!(report["remaining"], 0);
    check_order(&sub.take(9, LIMIT));
    assert!(spool_files(&state.path().join("spool")).is_empty());

    // The retained state is the last run's.
    let late = Subscriber::start(&url, "signalbox/dev/cron/backup/finished");
    let got = late.take(1, LIMIT);
    assert!(got[0].retain);
    assert_eq!(got[0].json()["body"]["exit_code"], 0);
}

#[test]
fn the_next_bridge_run_flushes_older_messages_first() {
    let state = tempfile::tempdir().expect("tempdir");
    spool_while_down(&dead_broker(), state.path());
    let broker = embedded_broker();
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/#");
    let out = run_input(
        bridge(&broker.url(), state.path()).arg("mail"),
        &mail(99),
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got = events(sub.take(10, LIMIT));
    check_order(&got[..9]);
    assert_eq!(
        summaries(&got[9..]),
        ["Sender <s@example.org>: message 99"],
        "the new mail comes after the backlog"
    );
    assert!(spool_files(&state.path().join("spool")).is_empty());
    // Its health report says the spool is empty now.
    let health = Subscriber::start(&broker.url(), "signalbox/_health/mail-ops");
    assert_eq!(health.take(1, LIMIT)[0].json()["spool_depth"], 0);
}

#[test]
fn spooled_git_push_is_flushed_through_mosquitto() {
    let Some(m) = mosquitto("spooled_git_push_is_flushed_through_mosquitto") else {
        return;
    };
    let state = tempfile::tempdir().expect("tempdir");
    let repo = tempfile::tempdir().expect("repo");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(repo.path())
            .env("HOME", repo.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&[
        "-c",
        "user.name=A",
        "-c",
        "user.email=a@example.org",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "one",
    ]);
    git(&[
        "-c",
        "user.name=A",
        "-c",
        "user.email=a@example.org",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "two",
    ]);
    let head = git(&["rev-parse", "HEAD"]);
    let line = format!("{} {head} refs/heads/main\n", "0".repeat(40));
    let mut cmd = bridge(&dead_broker(), state.path());
    cmd.current_dir(repo.path()).args(["git", "--repo", "demo"]);
    let out = run_input(&mut cmd, line.as_bytes(), LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(spool_files(&state.path().join("spool")).len(), 4);

    let sub = Subscriber::start(&m.url(), "signalbox/dev/git/#");
    let out = run_input(
        bridge(&m.url(), state.path()).args(["spool", "flush"]),
        b"",
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "flushed 4, remaining 0");
    let got = sub.take(4, LIMIT);
    let subjects: Vec<Value> = got
        .iter()
        .map(|g| g.json()["body"]["subject"].clone())
        .collect();
    assert_eq!(got[0].topic, "signalbox/dev/git/demo/branch/main/created");
    assert_eq!(subjects[1..3], [Value::from("one"), Value::from("two")]);
    assert_eq!(got[3].topic, "signalbox/dev/git/demo/main/head");
}

#[test]
fn a_bridge_killed_while_spooling_leaves_no_partial_message() {
    // A Maildir of 400 mails, the broker down: the bridge spools one after
    // the other and is killed with SIGKILL in the middle.
    let state = tempfile::tempdir().expect("tempdir");
    let maildir = tempfile::tempdir().expect("maildir");
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir(maildir.path().join(d)).expect("mkdir");
    }
    for i in 0..400 {
        std::fs::write(
            maildir.path().join(format!("new/{i:05}.M1P1.host")),
            mail(i),
        )
        .expect("write");
    }
    let spool = state.path().join("spool");
    let mut child = bridge(&dead_broker(), state.path())
        .arg("mail")
        .arg("--maildir")
        .arg(maildir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + LIMIT;
    while spool_files(&spool).len() < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let _ = child.wait();
    let spooled = spool_files(&spool);
    let moved = std::fs::read_dir(maildir.path().join("cur"))
        .expect("cur")
        .count();
    assert!(
        spooled.len() >= 50 && spooled.len() < 400,
        "killed mid-way: {} spooled",
        spooled.len()
    );
    // Each mail is moved to cur/ after it is spooled: a kill in between
    // leaves at most one mail both spooled and still in new/ (it will be
    // published twice: at least once, never zero times).
    assert!(
        spooled.len() == moved || spooled.len() == moved + 1,
        "spooled {} moved {moved}",
        spooled.len()
    );

    // Every spooled file is whole.
    let out = run_input(
        bridge(&dead_broker(), state.path()).args(["spool", "list", "--json"]),
        b"",
        LIMIT,
    );
    assert_eq!(out.code, 0);
    assert_eq!(out.stderr, "", "no unreadable spool file");
    assert_eq!(out.stdout.lines().count(), spooled.len());
    for (i, line) in out.stdout.lines().enumerate() {
        let v: Value = serde_json::from_str(line).expect("json");
        assert_eq!(
            v["summary"],
            format!("Sender <s@example.org>: message {i}"),
            "oldest first"
        );
    }
    // And all of it, plus the rest of the Maildir, reaches a broker later.
    let broker = embedded_broker();
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/mail/#");
    let out = run_input(
        bridge(&broker.url(), state.path())
            .arg("mail")
            .arg("--maildir")
            .arg(maildir.path()),
        b"",
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got = sub.take(400 + spooled.len() - moved, LIMIT);
    let mut seen: Vec<String> = summaries(&got);
    seen.dedup();
    let want: Vec<String> = (0..400)
        .map(|i| format!("Sender <s@example.org>: message {i}"))
        .collect();
    assert_eq!(seen, want, "every mail, in order");
}
