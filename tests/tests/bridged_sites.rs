//! Bridged sites (issue 13): a site broker and a centre broker joined by
//! mosquitto's own bridge, the one of deploy/mosquitto-site.conf (`topic
//! signalbox/# both 1`, `cleansession false`), with persistence at both
//! ends. Bridges at the site publish to the site broker; listeners and the
//! operator at the centre see everything; pings, replays, replies and
//! acknowledgements cross back. All real processes: two mosquittos, the
//! `signalbox` and `signalbox-bridge` binaries.
//!
//! The retained-state tests pin down what mosquitto 2.0 does after the link
//! comes back (deploy/README.md, "Bridged sites"): on every (re)connection
//! each side hands the other its retained messages, so a retained topic
//! changed on one side while the link was down ends up *swapped* — the
//! other side gets the new value, the side that made the change gets its
//! old value back. Messages (QoS 1) are not affected: none is lost.

mod bridge_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use bridge_support::{bridge, run_input, Subscriber};
use serde_json::Value;
use signalbox_common::envelope::Envelope;
use signalbox_common::health::{HealthReport, HealthState};
use signalbox_e2e::{
    mosquitto_with, run_with_limit, signalbox, wait_with_limit, Finished, KillOnDrop, LineReader,
    Mosquitto,
};

/// The longest any single wait in these tests may take.
const LIMIT: Duration = Duration::from_secs(20);

/// The bridge section of deploy/mosquitto-site.conf (its lines from
/// `connection` on, comments left out), pointed at the centre on
/// 127.0.0.1:`centre_port` and retrying every 1–2 s instead of 2–30 s. Its
/// TLS and account lines are commented out in the file, as the test needs.
fn site_bridge_conf(centre_port: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto-site.conf");
    let text = std::fs::read_to_string(&path).expect("deploy/mosquitto-site.conf");
    let mut conf = String::new();
    for line in text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("connection "))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let line = match line.split_whitespace().next() {
            Some("address") => format!("address 127.0.0.1:{centre_port}"),
            Some("restart_timeout") => "restart_timeout 1 2".to_string(),
            _ => line.to_string(),
        };
        conf.push_str(&line);
        conf.push('\n');
    }
    for wanted in ["topic signalbox/# both 1", "cleansession false"] {
        assert!(conf.contains(wanted), "{}: no `{wanted}`", path.display());
    }
    conf
}

/// A centre broker and a site broker bridged to it, both persistent.
struct Sites {
    centre: Mosquitto,
    site: Mosquitto,
}

impl Sites {
    fn start(test: &str) -> Option<Sites> {
        let centre = mosquitto_with(test, true, "")?;
        let site = mosquitto_with(test, true, &site_bridge_conf(centre.port))?;
        let sites = Sites { centre, site };
        sites.wait_linked();
        Some(sites)
    }

    /// Waits until a message crosses the link both ways.
    fn wait_linked(&self) {
        probe(&self.site.url(), &self.centre.url(), "up");
        probe(&self.centre.url(), &self.site.url(), "down");
    }
}

/// Publishes raw probes at `from` until one arrives at `to`.
fn probe(from: &str, to: &str, direction: &str) {
    let topic = format!("signalbox/dev/probe/{direction}");
    let sub = Subscriber::start(to, &topic);
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        publish(from, &["--raw", &topic, "probe"]);
        if sub.next(Duration::from_millis(500)).is_some() {
            return;
        }
    }
    panic!("no message crossed the bridge {direction} within {LIMIT:?}");
}

/// `signalbox ARGS…` against `url`, to completion.
fn cli(url: &str, args: &[&str]) -> Finished {
    run_with_limit(signalbox(url).args(args), LIMIT)
}

/// `signalbox pub ARGS…` against `url`, which must succeed.
fn publish(url: &str, args: &[&str]) {
    let out = cli(url, &[&["pub"], args].concat());
    assert_eq!(out.code, 0, "pub {args:?}: {}", out.stderr);
}

/// `signalbox pub --stdin TOPIC`: one envelope per line, each confirmed by
/// the broker at `url`.
fn publish_lines(url: &str, topic: &str, lines: &[String]) {
    let mut child = signalbox(url)
        .args(["pub", "--stdin", topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pub --stdin");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{}\n", lines.join("\n")).as_bytes())
        .expect("write lines");
    drop(stdin);
    let out = wait_with_limit(child, LIMIT);
    assert_eq!(out.code, 0, "pub --stdin: {}", out.stderr);
}

/// `signalbox-bridge exec --name NAME --filter FILTER EXTRA… -- sh -c
/// SCRIPT` against `url`, killed (by pid) when dropped.
fn exec_listener(
    url: &str,
    state: &Path,
    name: &str,
    filter: &str,
    extra: &[&str],
    script: &str,
) -> KillOnDrop {
    let child: Child = bridge(url, state)
        .args(["exec", "--name", name, "--filter", filter])
        .args(extra)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn signalbox-bridge exec");
    KillOnDrop(child)
}

/// A shell line that appends `ID SUMMARY` to `ledger`.
fn ledger_script(ledger: &Path) -> String {
    format!(
        r#"printf '%s %s\n' "$SIGNALBOX_ID" "$SIGNALBOX_SUMMARY" >> '{}'"#,
        ledger.display()
    )
}

/// The lines of a ledger.
fn ledger(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until the ledger holds `n` lines (or `limit` passed); returns them.
fn wait_ledger(path: &Path, n: usize, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let lines = ledger(path);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits on `sub` for a health report of `name` in `state`.
fn wait_health(sub: &Subscriber, name: &str, state: HealthState) -> HealthReport {
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        let Some(got) = sub.next(Duration::from_millis(200)) else {
            continue;
        };
        if got.topic == format!("signalbox/_health/{name}") {
            if let Ok(report) = HealthReport::from_slice(&got.payload) {
                if report.state == state {
                    return report;
                }
            }
        }
    }
    panic!("no {state:?} health report of {name} within {LIMIT:?}");
}

/// The retained message of `topic` at `url`, if any.
fn retained(url: &str, topic: &str) -> Option<Vec<u8>> {
    let sub = Subscriber::start(url, topic);
    sub.next(Duration::from_secs(1))
        .filter(|got| got.retain)
        .map(|got| got.payload)
}

/// The summary of a retained envelope at `url`.
fn retained_summary(url: &str, topic: &str) -> Option<String> {
    retained(url, topic)
        .and_then(|p| Envelope::from_slice(&p).ok())
        .map(|e| e.summary)
}

/// `signalbox failed list --json` at `url`: the records by summary.
fn failed_records(url: &str) -> BTreeMap<String, Value> {
    let out = cli(url, &["failed", "list", "--json", "--collect", "0.5"]);
    assert_eq!(out.code, 0, "failed list: {}", out.stderr);
    let rows: Vec<Value> = serde_json::from_str(&out.stdout).expect("failed list --json");
    rows.into_iter()
        .map(|r| {
            let summary = r["envelope"]["summary"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (summary, r)
        })
        .collect()
}

/// Waits until the failure records at `url` are exactly `summaries`.
fn wait_records(url: &str, where_: &str, summaries: &[&str]) -> BTreeMap<String, Value> {
    let want: BTreeSet<String> = summaries.iter().map(|s| s.to_string()).collect();
    let deadline = Instant::now() + LIMIT;
    loop {
        let records = failed_records(url);
        let have: BTreeSet<String> = records.keys().cloned().collect();
        if have == want {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "failure records at the {where_}: {have:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The id of a record.
fn id(record: &Value) -> String {
    record["id"].as_str().expect("record id").to_string()
}

/// `signalbox health --json` at `url`: exit code and rows by listener.
fn health(url: &str) -> (i32, BTreeMap<String, Value>) {
    let out = cli(url, &["health", "--json", "--wait", "2"]);
    assert!(
        out.code == 0 || out.code == 1,
        "health: {}{}",
        out.stdout,
        out.stderr
    );
    let rows: Vec<Value> = serde_json::from_str(&out.stdout).expect("health --json");
    let rows = rows
        .into_iter()
        .map(|r| (r["listener"].as_str().unwrap_or_default().to_string(), r))
        .collect();
    (out.code, rows)
}

/// (a) A real bridge at the site (the cron wrapper) publishes to the site
/// broker; the centre gets the very same bytes once, live and retained, and
/// `signalbox tail` there prints them; nothing is echoed back to the site.
#[test]
fn a_bridge_at_the_site_reaches_the_centre_byte_for_byte() {
    let Some(sites) = Sites::start("a_bridge_at_the_site_reaches_the_centre_byte_for_byte") else {
        return;
    };
    let (centre, site) = (sites.centre.url(), sites.site.url());
    let at_site = Subscriber::start(&site, "signalbox/dev/cron/#");
    let at_centre = Subscriber::start(&centre, "signalbox/dev/cron/#");
    // The operator's tail at the centre, known to be subscribed once it
    // printed a retained marker.
    publish(&centre, &["--retain", "signalbox/dev/ready/tail", "ready"]);
    let mut tail = signalbox(&centre)
        .args([
            "tail",
            "--json",
            "signalbox/dev/ready/#",
            "signalbox/dev/cron/#",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tail");
    let lines = LineReader::new(&mut tail);
    let _tail = KillOnDrop(tail);
    let first = lines.next_line(LIMIT).expect("tail prints the marker");
    assert!(first.contains("signalbox/dev/ready/tail"), "{first}");

    let state = tempfile::tempdir().expect("tempdir");
    let out = run_input(
        bridge(&site, state.path()).args(["cron", "--job", "backup", "--", "sh", "-c", "echo ok"]),
        b"",
        LIMIT,
    );
    assert_eq!(out.code, 0, "cron bridge at the site: {}", out.stderr);

    let sent = at_site.take(2, LIMIT);
    let got = at_centre.take(2, LIMIT);
    for (s, g) in sent.iter().zip(&got) {
        assert_eq!(g.topic, s.topic);
        assert_eq!(
            g.payload, s.payload,
            "{}: the same bytes at both ends",
            s.topic
        );
        assert!(!g.retain, "{}: delivered live at the centre", g.topic);
    }
    assert_eq!(got[0].topic, "signalbox/dev/cron/backup/started");
    assert_eq!(got[1].topic, "signalbox/dev/cron/backup/finished");
    // No loop: each end got each message once.
    assert!(at_site.drain(Duration::from_millis(500)).is_empty());
    assert!(at_centre.drain(Duration::from_millis(10)).is_empty());

    // tail at the centre shows the envelopes the site bridge published.
    for s in &sent {
        let line = lines.next_line(LIMIT).expect("tail prints the message");
        let v: Value = serde_json::from_str(&line).expect("tail --json");
        assert_eq!(v["topic"], s.topic.as_str());
        assert_eq!(v["kind"], "envelope");
        assert_eq!(v["payload"], s.json(), "tail shows the envelope as sent");
    }

    // The retained state crossed with its retain flag: a client arriving at
    // the centre later gets it from the centre's own store.
    let finished = &sent[1];
    assert_eq!(
        retained(&centre, "signalbox/dev/cron/backup/finished").as_deref(),
        Some(&finished.payload[..]),
        "the retained `finished` at the centre, byte for byte"
    );
    let out = cli(
        &centre,
        &[
            "tail",
            "--count",
            "1",
            "--timeout",
            "10",
            "signalbox/dev/cron/backup/finished",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("backup finished in") && out.stdout.contains("[retained]"),
        "{}",
        out.stdout
    );
    // The one-shot bridge's own health report (idle) is seen at the centre.
    let (_, rows) = health(&centre);
    let report = rows.get("cron-backup").unwrap_or(&Value::Null);
    assert_eq!(report["state"], "idle", "{rows:?}");
}

/// (b) A listener at the centre handles what is published at the site, and
/// `signalbox health` at the SITE sees it: the roster and health crossed,
/// the `_ping` reached the centre and its answer came back (with a 60 s
/// heartbeat only a ping answer carries the new counters), and a listener
/// killed at the centre shows as down at the site through its will.
#[test]
fn a_centre_listener_handles_site_messages_and_health_at_the_site_sees_it() {
    let Some(sites) =
        Sites::start("a_centre_listener_handles_site_messages_and_health_at_the_site_sees_it")
    else {
        return;
    };
    let (centre, site) = (sites.centre.url(), sites.site.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let book = dir.path().join("ledger");
    let watch = Subscriber::start(&site, "signalbox/_health/centre-hook");
    let roster = Subscriber::start(&site, "signalbox/_roster");
    let mut listener = exec_listener(
        &centre,
        &dir.path().join("state"),
        "centre-hook",
        "signalbox/dev/site1/#",
        &["--health-interval", "60"],
        &ledger_script(&book),
    );
    let up = wait_health(&watch, "centre-hook", HealthState::Up);
    assert_eq!(up.counters.processed, 0);
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = roster.next(Duration::from_millis(500));
        let listed = got
            .and_then(|g| serde_json::from_slice::<Vec<String>>(&g.payload).ok())
            .is_some_and(|names| names.iter().any(|n| n == "centre-hook"));
        if listed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the roster at the site lists centre-hook"
        );
    }

    let summaries: Vec<String> = (1..=3).map(|n| format!("site event {n}")).collect();
    publish_lines(&site, "signalbox/dev/site1/event", &summaries);
    let lines = wait_ledger(&book, 3, LIMIT);
    let done: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once(' ').map(|(_, s)| s))
        .collect();
    assert_eq!(done, ["site event 1", "site event 2", "site event 3"]);

    // The ledger line is written before the listener counts the message:
    // ask until the count caught up.
    let deadline = Instant::now() + LIMIT;
    loop {
        let (code, rows) = health(&site);
        let row = rows.get("centre-hook").unwrap_or(&Value::Null);
        if row["counters"]["processed"] == 3 {
            assert_eq!(code, 0, "health at the site: {rows:?}");
            assert_eq!(row["liveness"], "up", "{row}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ping answer with 3 processed reached the site: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Killed outright: the centre publishes its will, which crosses too.
    let _ = listener.0.kill();
    let _ = listener.0.wait();
    let deadline = Instant::now() + LIMIT;
    loop {
        let (code, rows) = health(&site);
        let row = rows.get("centre-hook").unwrap_or(&Value::Null);
        if code == 1 && row["liveness"] == "down" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "centre-hook down at the site: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (c) Failure records cross the bridge both ways, and `signalbox failed
/// replay|ack` work from the far end: records of a centre listener replayed
/// and acknowledged at the site, records of a site listener replayed and
/// acknowledged at the centre; afterwards no end holds a record and no
/// listener answers a ping with one.
#[test]
fn failure_records_cross_and_replay_and_ack_work_from_either_end() {
    let Some(sites) = Sites::start("failure_records_cross_and_replay_and_ack_work_from_either_end")
    else {
        return;
    };
    let (centre, site) = (sites.centre.url(), sites.site.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let fixed = dir.path().join("fixed");
    let script = |book: &Path| {
        format!(
            "if [ -e '{}' ]; then {}; else echo 'tracker down' >&2; exit 3; fi",
            fixed.display(),
            ledger_script(book)
        )
    };
    let (centre_book, site_book) = (dir.path().join("centre"), dir.path().join("site"));
    let watch = Subscriber::start(&site, "signalbox/_health/+");
    let _centre_hook = exec_listener(
        &centre,
        &dir.path().join("s1"),
        "centre-hook",
        "signalbox/dev/site1/#",
        &["--retries", "1", "--health-interval", "2"],
        &script(&centre_book),
    );
    let _site_hook = exec_listener(
        &site,
        &dir.path().join("s2"),
        "site-hook",
        "signalbox/dev/centre1/#",
        &["--retries", "1", "--health-interval", "2"],
        &script(&site_book),
    );
    wait_health(&watch, "centre-hook", HealthState::Up);
    wait_health(&watch, "site-hook", HealthState::Up);

    // A and B published at the site fail at the centre; C and D published
    // at the centre fail at the site.
    publish(&site, &["signalbox/dev/site1/ticket", "ticket A"]);
    publish(&site, &["signalbox/dev/site1/ticket", "ticket B"]);
    publish(&centre, &["signalbox/dev/centre1/ticket", "ticket C"]);
    publish(&centre, &["signalbox/dev/centre1/ticket", "ticket D"]);
    let all = ["ticket A", "ticket B", "ticket C", "ticket D"];
    let at_site = wait_records(&site, "site", &all);
    let at_centre = wait_records(&centre, "centre", &all);
    for summary in all {
        let (s, c) = (&at_site[summary], &at_centre[summary]);
        assert_eq!(s, c, "{summary}: the same record at both ends");
        assert_eq!(s["error"], "exit status 3: tracker down");
    }
    assert_eq!(at_site["ticket A"]["listener"], "centre-hook");
    assert_eq!(at_site["ticket C"]["listener"], "site-hook");

    std::fs::write(&fixed, "").expect("fix the tracker");
    // At the site: replay A (the request crosses to the centre listener,
    // its outcome comes back) and acknowledge B.
    let out = cli(
        &site,
        &[
            "failed",
            "replay",
            &id(&at_site["ticket A"]),
            "--wait",
            "10",
        ],
    );
    assert_eq!(
        out.code, 0,
        "replay at the site: {}{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stdout.contains("centre-hook  replayed"),
        "{}",
        out.stdout
    );
    let out = cli(&site, &["failed", "ack", &id(&at_site["ticket B"])]);
    assert_eq!(out.code, 0, "ack at the site: {}", out.stderr);
    // At the centre: replay C and acknowledge D of the site listener.
    let out = cli(
        &centre,
        &[
            "failed",
            "replay",
            &id(&at_centre["ticket C"]),
            "--wait",
            "10",
        ],
    );
    assert_eq!(
        out.code, 0,
        "replay at the centre: {}{}",
        out.stdout, out.stderr
    );
    assert!(out.stdout.contains("site-hook  replayed"), "{}", out.stdout);
    let out = cli(&centre, &["failed", "ack", &id(&at_centre["ticket D"])]);
    assert_eq!(out.code, 0, "ack at the centre: {}", out.stderr);

    // Nothing left anywhere; each `failed list` pings, so a listener still
    // holding a record would have published it again.
    wait_records(&site, "site", &[]);
    wait_records(&centre, "centre", &[]);
    let done = |book: &Path| -> Vec<String> {
        ledger(book)
            .iter()
            .filter_map(|l| l.split_once(' ').map(|(_, s)| s.to_string()))
            .collect()
    };
    assert_eq!(
        done(&centre_book),
        ["ticket A"],
        "A replayed once, B not run"
    );
    assert_eq!(done(&site_book), ["ticket C"], "C replayed once, D not run");
}

/// (d) The link goes down (the centre broker stops) and comes back: every
/// QoS 1 message published at the site meanwhile reaches the centre
/// listener, each processed once. The site's retained state written during
/// the outage reaches the centre, while the site gets the centre's older
/// copy back (mosquitto 2.0; deploy/README.md) until the topic is written
/// again.
#[test]
fn the_link_going_down_and_back_loses_no_qos1_message_published_at_the_site() {
    let Some(mut sites) =
        Sites::start("the_link_going_down_and_back_loses_no_qos1_message_published_at_the_site")
    else {
        return;
    };
    let (centre, site) = (sites.centre.url(), sites.site.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let book = dir.path().join("ledger");
    let watch = Subscriber::start(&centre, "signalbox/_health/ledger");
    let _listener = exec_listener(
        &centre,
        &dir.path().join("state"),
        "ledger",
        "signalbox/dev/site1/#",
        &["--health-interval", "1"],
        &ledger_script(&book),
    );
    wait_health(&watch, "ledger", HealthState::Up);

    const BEFORE: usize = 20;
    const DURING: usize = 200;
    let before: Vec<String> = (0..BEFORE).map(|n| format!("before {n}")).collect();
    publish_lines(&site, "signalbox/dev/site1/event", &before);
    publish(
        &site,
        &["--retain", "signalbox/dev/site1/state", "state v1"],
    );
    assert_eq!(wait_ledger(&book, BEFORE + 1, LIMIT).len(), BEFORE + 1);

    // The link drops: the centre stops (SIGTERM, so that its persistent
    // sessions, the listener's among them, are saved).
    sites.centre.stop(true);
    let during: Vec<String> = (0..DURING).map(|n| format!("during {n}")).collect();
    publish_lines(&site, "signalbox/dev/site1/event", &during);
    publish(
        &site,
        &["--retain", "signalbox/dev/site1/state", "state v2"],
    );
    // Let the site's bridge fail to reconnect at least once.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ledger(&book).len(), BEFORE + 1, "nothing crossed meanwhile");
    let back = Instant::now();
    sites.centre.start_again();

    let total = BEFORE + 1 + DURING + 1;
    let lines = wait_ledger(&book, total, Duration::from_secs(30));
    let delivered_after = back.elapsed();
    let ids: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once(' ').map(|(id, _)| id))
        .collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    let summaries: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.split_once(' ').map(|(_, s)| s))
        .collect();
    let lost: Vec<&String> = during
        .iter()
        .filter(|s| !summaries.contains(s.as_str()))
        .collect();
    assert!(lost.is_empty(), "lost while the link was down: {lost:?}");
    assert!(summaries.contains("state v2"));
    assert_eq!(ids.len(), distinct.len(), "each message processed once");
    assert_eq!(lines.len(), total);

    // Retained state after the link returned: the centre has the site's
    // new value; the site got the centre's old one back.
    let topic = "signalbox/dev/site1/state";
    assert_eq!(
        retained_summary(&centre, topic).as_deref(),
        Some("state v2")
    );
    let site_copy = retained_summary(&site, topic);
    assert_eq!(
        site_copy.as_deref(),
        Some("state v1"),
        "mosquitto 2.0 hands the site the centre's older retained copy on \
         reconnection (if this changed, update deploy/README.md)"
    );
    // The next write heals both ends.
    publish(&site, &["--retain", topic, "state v3"]);
    let deadline = Instant::now() + LIMIT;
    while retained_summary(&centre, topic).as_deref() != Some("state v3") {
        assert!(Instant::now() < deadline, "state v3 at the centre");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(retained_summary(&site, topic).as_deref(), Some("state v3"));

    // The listener's own count, asked from the site (the ping crosses).
    let deadline = Instant::now() + LIMIT;
    let row = loop {
        let (_, rows) = health(&site);
        if let Some(row) = rows.get("ledger") {
            if row["counters"]["processed"] == total + 1 {
                break row.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "ledger counters at the site: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "bridged sites: {DURING} messages + 1 retained state published at the site while \
         the link was down, {} of them processed at the centre {:.1} s after it came back; \
         listener counters {}",
        DURING + 1 - lost.len(),
        delivered_after.as_secs_f64(),
        row["counters"]
    );
}

/// (e) The site cut off (its broker stopped) while the operator works at
/// the centre: the site's listener goes stale there; a replay requested for
/// it gets no answer but waits in the site's session and runs once the link
/// is back. An acknowledgement made at the centre meanwhile is undone when
/// the link returns: the site hands its retained copy of the record back,
/// and the centre's listener takes it as its own again; acknowledging again
/// clears it for good (mosquitto 2.0; deploy/README.md says so).
#[test]
fn while_the_site_is_cut_off_replays_wait_and_an_ack_holds() {
    let Some(mut sites) = Sites::start("while_the_site_is_cut_off_replays_wait_and_an_ack_holds")
    else {
        return;
    };
    let (centre, site) = (sites.centre.url(), sites.site.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let fixed = dir.path().join("fixed");
    let site_book = dir.path().join("site");
    let watch = Subscriber::start(&centre, "signalbox/_health/+");
    let _centre_hook = exec_listener(
        &centre,
        &dir.path().join("s1"),
        "centre-hook",
        "signalbox/dev/site1/#",
        &["--retries", "1", "--health-interval", "2"],
        "echo 'tracker down' >&2; exit 3",
    );
    let _site_hook = exec_listener(
        &site,
        &dir.path().join("s2"),
        "site-hook",
        "signalbox/dev/centre1/#",
        &["--retries", "1", "--health-interval", "1"],
        &format!(
            "if [ -e '{}' ]; then {}; else echo 'tracker down' >&2; exit 3; fi",
            fixed.display(),
            ledger_script(&site_book)
        ),
    );
    wait_health(&watch, "centre-hook", HealthState::Up);
    wait_health(&watch, "site-hook", HealthState::Up);
    publish(&site, &["signalbox/dev/site1/ticket", "ticket X"]);
    publish(&centre, &["signalbox/dev/centre1/ticket", "ticket Y"]);
    let records = wait_records(&centre, "centre", &["ticket X", "ticket Y"]);
    let (x, y) = (id(&records["ticket X"]), id(&records["ticket Y"]));

    sites.site.stop(true);
    // At the centre meanwhile: the site listener is reported as a problem
    // (down: the stopping site broker published its will and the bridge
    // carried it over before closing, as measured; or stale: 3 × its 1 s
    // interval without a report, as on a cut link), a replay for it gets
    // no answer, and X is acknowledged.
    let deadline = Instant::now() + LIMIT;
    let liveness = loop {
        let (code, rows) = health(&centre);
        let liveness = rows
            .get("site-hook")
            .and_then(|row| row["liveness"].as_str())
            .unwrap_or_default()
            .to_string();
        if code == 1 && (liveness == "down" || liveness == "stale") {
            break liveness;
        }
        assert!(
            Instant::now() < deadline,
            "site-hook down or stale at the centre: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("bridged sites: the site broker stopped, its listener is {liveness} at the centre");
    std::fs::write(&fixed, "").expect("fix the tracker");
    let out = cli(&centre, &["failed", "replay", &y, "--wait", "2"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("site-hook: no answer"),
        "{}",
        out.stdout
    );
    let out = cli(&centre, &["failed", "ack", &x]);
    assert_eq!(out.code, 0, "ack at the centre: {}", out.stderr);
    wait_records(&centre, "centre", &["ticket Y"]);

    sites.site.start_again();
    sites.wait_linked();
    // The replay request waited in the site's session at the centre.
    let done = wait_ledger(&site_book, 1, LIMIT);
    assert_eq!(done.len(), 1, "Y replayed once the link was back");
    assert!(done[0].ends_with(" ticket Y"), "{done:?}");
    // The site hands its old copy of X back over the link (mosquitto
    // exchanges retained messages on every reconnection); the listener
    // that owns X saw it acknowledged and clears the copy again, at both
    // ends, without a second ack.
    wait_records(&centre, "centre", &[]);
    wait_records(&site, "site", &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        failed_records(&centre).is_empty(),
        "X stays acknowledged at the centre"
    );
    assert!(
        failed_records(&site).is_empty(),
        "X stays acknowledged at the site"
    );
}
