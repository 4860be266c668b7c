//! bench-history: fills a history database with N messages (the recorder's
//! schema and insert path, batches of 10,000 rows in one transaction each)
//! and times typical `signalbox history` queries on it: in process through
//! the same query code, and end to end through the `signalbox` binary.
//!
//! Usage: bench-history [N] [DB] [--reuse]   (defaults 10000000, a temporary
//! file; --reuse times the queries on DB as it is, without filling it)
//!
//! The data: 30 days of traffic ending now, evenly spread; 6 systems,
//! 2,000 packages, 200 agents; ~250-byte envelope-like payloads; 1 in 50
//! messages a warning, 1 in 200 an error.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use signalbox_bridges::history::{parse_time, Query, Store, StoredMessage};
use signalbox_common::envelope::Severity;

const BATCH: usize = 10_000;
const SYSTEMS: [&str; 6] = ["git", "koji", "qa", "pkgdb", "cron", "mail"];
const PACKAGES: usize = 2_000;
const AGENTS: usize = 200;
const RUNS: usize = 5;

fn row(i: usize, n: usize, now_ms: i64) -> StoredMessage {
    let span_ms: i64 = 30 * 86_400_000;
    let time = now_ms - span_ms + (i as i64 * span_ms) / n as i64;
    // A cheap deterministic scramble, so packages and agents interleave.
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let system = SYSTEMS[(h >> 7) as usize % SYSTEMS.len()];
    let package = (h >> 17) as usize % PACKAGES;
    let agent = (h >> 37) as usize % AGENTS;
    let topic = match system {
        "koji" => format!("signalbox/prod/koji/build/pkg{package}/complete"),
        "cron" => format!("signalbox/prod/cron/job{}/finished", package % 50),
        "mail" => format!("signalbox/prod/mail/list{}/received", package % 20),
        s => format!("signalbox/prod/{s}/pkg{package}/event"),
    };
    let summary = format!("user{agent} did {system} work on pkg{package} (#{i})");
    let severity = match i % 200 {
        0 => Severity::Error,
        n if n % 50 == 1 => Severity::Warning,
        _ => Severity::Info,
    };
    let payload = format!(
        "{{\"v\":1,\"id\":\"{i:032x}\",\"topic\":\"{topic}\",\"time\":{time},\"agent\":\"user{agent}\",\"summary\":\"{summary}\",\"body\":{{\"n\":{i}}}}}"
    );
    StoredMessage {
        seq: 0,
        id: format!("{i:032x}"),
        time: chrono::DateTime::from_timestamp_millis(time).unwrap_or_default(),
        topic,
        system: Some(system.to_string()),
        agent: Some(format!("user{agent}")),
        severity,
        summary,
        payload: payload.into_bytes(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let keep_dir;
    let db: PathBuf = match args.get(2) {
        Some(p) => PathBuf::from(p),
        None => {
            keep_dir = tempfile::tempdir().expect("tempdir");
            keep_dir.path().join("history.db")
        }
    };
    let mut now = Utc::now();
    let now_ms = now.timestamp_millis();
    if args.get(3).map(String::as_str) == Some("--reuse") {
        // The data end at the fill's "now": time the windows from there.
        let store = Store::open_reader(&db).expect("open");
        if let Some((_, newest)) = store.span().expect("span") {
            now = newest;
        }
        println!(
            "reusing {} as it is: {} messages, newest {now}",
            db.display(),
            store.count().expect("count")
        );
    } else {
        let _ = std::fs::remove_file(&db);

        let mut store = Store::open_writer(&db).expect("open");
        let started = Instant::now();
        let mut i = 0;
        let mut last_report = Instant::now();
        while i < n {
            let end = (i + BATCH).min(n);
            let rows: Vec<StoredMessage> = (i..end).map(|j| row(j, n, now_ms)).collect();
            store.insert(&rows).expect("insert");
            i = end;
            if last_report.elapsed() > Duration::from_secs(30) {
                last_report = Instant::now();
                eprintln!(
                    "  {i} rows, {:.0} rows/s so far",
                    i as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
        let fill = started.elapsed();
        let analyze = Instant::now();
        store.analyze().expect("analyze");
        let analyze = analyze.elapsed();
        drop(store);
        let size: u64 = ["", "-wal", "-shm"]
            .iter()
            .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
            .map(|m| m.len())
            .sum();
        println!(
            "filled {n} messages in {:.1} s: {:.0} inserts/s (batches of {BATCH}); ANALYZE {:.1} s; database {:.2} GB",
            fill.as_secs_f64(),
            n as f64 / fill.as_secs_f64(),
            analyze.as_secs_f64(),
            size as f64 / 1e9
        );
    }

    let last_night = parse_time("12h", now).expect("time");
    let week = parse_time("7d", now).expect("time");
    let queries: Vec<(&str, Vec<&str>, Query)> = vec![
        (
            "newest 100",
            vec![],
            Query {
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "--system koji",
            vec!["--system", "koji"],
            Query {
                system: Some("koji".into()),
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "--agent user42 --since 7d",
            vec!["--agent", "user42", "--since", "7d"],
            Query {
                agent: Some("user42".into()),
                since: Some(week),
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "--topic 'signalbox/prod/git/pkg1234/#'",
            vec!["--topic", "signalbox/prod/git/pkg1234/#"],
            Query {
                topic: Some("signalbox/prod/git/pkg1234/#".into()),
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "--grep pkg1234 --since 12h (package X last night)",
            vec!["--grep", "pkg1234", "--since", "12h"],
            Query {
                grep: Some("pkg1234".into()),
                since: Some(last_night),
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "--topic 'signalbox/prod/+/pkg1234/#' --since 7d",
            vec!["--topic", "signalbox/prod/+/pkg1234/#", "--since", "7d"],
            Query {
                topic: Some("signalbox/prod/+/pkg1234/#".into()),
                since: Some(week),
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "--grep user42 --since 7d (common text)",
            vec!["--grep", "user42", "--since", "7d"],
            Query {
                grep: Some("user42".into()),
                since: Some(week),
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "--topic 'signalbox/prod/cron/+/finished' (many topics)",
            vec!["--topic", "signalbox/prod/cron/+/finished"],
            Query {
                topic: Some("signalbox/prod/cron/+/finished".into()),
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "--severity error --since 1d",
            vec!["--severity", "error", "--since", "1d"],
            Query {
                min_severity: Some(Severity::Error),
                since: Some(parse_time("1d", now).expect("time")),
                limit: 100,
                ..Default::default()
            },
        ),
    ];
    let store = Store::open_reader(&db).expect("open");
    let cli = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("signalbox")))
        .filter(|p| p.exists());
    println!();
    println!("| query | rows | first run | median of {RUNS} (in process) | `signalbox history` wall time (median of {RUNS}) |");
    println!("| --- | --: | --: | --: | --: |");
    for (name, flags, q) in &queries {
        // The binary gets the same window as an absolute time (the data
        // may end before the real now, with --reuse).
        let flags: Vec<String> = flags
            .iter()
            .map(|f| match (*f, q.since) {
                ("12h" | "7d" | "1d", Some(since)) => since.to_rfc3339(),
                (f, _) => f.to_string(),
            })
            .collect();
        let t = Instant::now();
        let first = store.query(q).expect("query");
        let first_time = t.elapsed();
        let times: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                store.query(q).expect("query");
                t.elapsed()
            })
            .collect();
        let cli_time = cli.as_ref().map(|cli| {
            median(
                (0..RUNS)
                    .map(|_| {
                        let t = Instant::now();
                        let out = Command::new(cli)
                            .env("SIGNALBOX_CONFIG", "")
                            .arg("history")
                            .arg("--db")
                            .arg(&db)
                            .args(&flags)
                            .output()
                            .expect("run signalbox history");
                        assert!(
                            out.status.success(),
                            "{}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                        t.elapsed()
                    })
                    .collect(),
            )
        });
        println!(
            "| {name} | {} | {:.1} ms | {:.1} ms | {} |",
            first.messages.len(),
            first_time.as_secs_f64() * 1000.0,
            median(times).as_secs_f64() * 1000.0,
            cli_time
                .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
                .unwrap_or_else(|| "—".into())
        );
    }
}
