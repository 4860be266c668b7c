//! Faults on purpose: the broker, a listener or the disk fails in the
//! middle of real traffic, and nothing is lost or processed twice.
//!
//! Every test counts what a real listener process (`fault-listener`, the
//! listener runtime writing one ledger line per finished message) did with
//! what real publishers sent: `signalbox pub --stdin` and the mail, cron
//! and git bridges, against a private mosquitto with persistence on. The
//! figures each test prints are the rows of RELIABILITY.md.

mod bridge_support;
mod ledger_support;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bridge_support::{bridge, run_input, LIMIT};
use ledger_support::{
    now_millis, number_in, order_breaks, read_ledger, tally, wait_for_distinct, wait_until_up,
    Entry, FaultListener,
};
use signalbox_e2e::{bin, embedded_broker, mosquitto_persistent, signalbox, KillOnDrop};

/// One run of a one-shot bridge: its state directory and run number in,
/// its exit code out.
type BridgeRun = Box<dyn Fn(&Path, usize) -> i32 + Send>;

/// How long a test waits for everything to arrive after the fault.
const SETTLE: Duration = Duration::from_secs(120);

/// `FAULTS_RESEND_WINDOW=0 cargo test --test faults broker_killed` runs the
/// broker test with the publishers' re-send window off, to show the gap it
/// closes (the test then fails, reporting what was lost).
fn with_resend_window(cmd: &mut Command) -> &mut Command {
    if let Ok(window) = std::env::var("FAULTS_RESEND_WINDOW") {
        cmd.env("SIGNALBOX_RESEND_WINDOW", window);
    }
    cmd
}

/// A `fault-listener` (see `ledger_support`), with the
/// `FAULTS_RESEND_WINDOW` override of [`with_resend_window`].
fn start_listener(
    url: &str,
    state: &Path,
    ledger: &Path,
    filter: &str,
    delay_ms: u64,
    env: &[(&str, &str)],
) -> FaultListener {
    let window = std::env::var("FAULTS_RESEND_WINDOW").ok();
    let mut all = env.to_vec();
    if let Some(window) = &window {
        all.push(("SIGNALBOX_RESEND_WINDOW", window));
    }
    FaultListener::start(url, state, ledger, filter, delay_ms, &all)
}

/// How long a listener may take to report itself up.
const UP_LIMIT: Duration = Duration::from_secs(30);

/// `signalbox pub --stdin` on `topic`, fed `lines` one per `pace`.
fn pub_stream(
    url: &str,
    topic: &str,
    lines: Vec<String>,
    pace: Duration,
) -> std::thread::JoinHandle<signalbox_e2e::Finished> {
    pub_stream_with(url, topic, lines, pace, &[])
}

fn pub_stream_with(
    url: &str,
    topic: &str,
    lines: Vec<String>,
    pace: Duration,
    env: &[(&str, &str)],
) -> std::thread::JoinHandle<signalbox_e2e::Finished> {
    let mut cmd = signalbox(url);
    cmd.envs(env.iter().copied());
    with_resend_window(&mut cmd).args(["pub", "--stdin", "--timeout", "120", topic]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pub");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::spawn(move || {
        for line in lines {
            if writeln!(stdin, "{line}").is_err() {
                break;
            }
            if !pace.is_zero() {
                std::thread::sleep(pace);
            }
        }
        drop(stdin);
        signalbox_e2e::wait_with_limit(child, Duration::from_secs(240))
    })
}

fn mail(n: usize) -> Vec<u8> {
    format!("From: Build <build@example.org>\nTo: ops@example.org\nSubject: mail {n}\n\nbody {n}\n")
        .into_bytes()
}

/// A git repository with `n` commits on `main` (made by `git fast-import`
/// in one process), and their ids, oldest first.
fn repo_with_commits(dir: &Path, n: usize) -> Vec<String> {
    let git = |args: &[&str], input: Option<&[u8]>| {
        let mut child = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("HOME", dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("git");
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(input) = input {
            stdin.write_all(input).expect("git input");
        }
        drop(stdin);
        let out = child.wait_with_output().expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    git(&["init", "-q", "-b", "main"], None);
    let mut stream = String::new();
    for i in 0..n {
        let msg = format!("commit {i}");
        stream.push_str(&format!(
            "commit refs/heads/main\nmark :{}\ncommitter Dev <dev@example.org> {} +0000\ndata {}\n{}\n",
            i + 1,
            1_700_000_000 + i,
            msg.len(),
            msg
        ));
        if i > 0 {
            stream.push_str(&format!("from :{i}\n"));
        }
        stream.push('\n');
    }
    git(&["fast-import", "--quiet"], Some(stream.as_bytes()));
    let revs = git(&["rev-list", "--reverse", "main"], None);
    revs.lines().map(str::to_string).collect()
}

/// Classifies a ledger entry of the broker-kill test by its publisher.
fn source_of(e: &Entry) -> Option<&'static str> {
    if e.topic.ends_with("/faults/stream") {
        Some("pub --stdin")
    } else if e.topic.contains("/mail/") {
        Some("mail")
    } else if e.topic.contains("/cron/") {
        Some("cron")
    } else if e.topic.ends_with("/commit") {
        Some("git")
    } else {
        None
    }
}

/// Fault 1: mosquitto (persistence on) is killed with SIGKILL in the
/// middle of 10,000 messages from `pub --stdin` and the mail, cron and git
/// bridges, and started again 3 s later. Every message is processed once,
/// in order per source.
#[test]
fn broker_killed_mid_stream_loses_and_repeats_nothing() {
    let Some(mut m) = mosquitto_persistent("broker_killed_mid_stream_loses_and_repeats_nothing")
    else {
        return;
    };
    let url = m.url();
    let work = tempfile::tempdir().expect("tempdir");
    let ledger = work.path().join("ledger");
    let listener_state = work.path().join("listener");
    let listener = start_listener(&url, &listener_state, &ledger, "signalbox/dev/#", 0, &[]);
    wait_until_up(&url, "fault", UP_LIMIT);

    const STREAM: usize = 6_000;
    const MAILS: usize = 1_000;
    const CRON_RUNS: usize = 500; // a start and an end message each
    const PUSHES: usize = 20;
    const COMMITS_PER_PUSH: usize = 98; // + a branch update and a head each
    let expected = STREAM + MAILS + 2 * CRON_RUNS + PUSHES * (COMMITS_PER_PUSH + 2);
    assert_eq!(expected, 10_000);

    let repo = work.path().join("repo");
    std::fs::create_dir_all(&repo).expect("repo dir");
    let revs = repo_with_commits(&repo, PUSHES * COMMITS_PER_PUSH);

    let started = Instant::now();
    // About 10 s of traffic from each source; the broker dies at 2 s.
    let stream = pub_stream(
        &url,
        "signalbox/dev/faults/stream",
        (0..STREAM).map(|i| format!("line {i}")).collect(),
        Duration::from_micros(1_500),
    );
    let spawn_runs = |state: PathBuf, runs: usize, pace: Duration, run: BridgeRun| {
        std::thread::spawn(move || {
            let mut codes = Vec::new();
            for i in 0..runs {
                codes.push(run(&state, i));
                std::thread::sleep(pace);
            }
            codes
        })
    };
    let url_mail = url.clone();
    let mails = spawn_runs(
        work.path().join("mail-state"),
        MAILS,
        Duration::from_millis(5),
        Box::new(move |state, i| {
            run_input(
                with_resend_window(&mut bridge(&url_mail, state)).arg("mail"),
                &mail(i),
                LIMIT,
            )
            .code
        }),
    );
    let url_cron = url.clone();
    let crons = spawn_runs(
        work.path().join("cron-state"),
        CRON_RUNS,
        Duration::from_millis(10),
        Box::new(move |state, i| {
            run_input(
                with_resend_window(&mut bridge(&url_cron, state)).args([
                    "cron",
                    "--job",
                    &format!("job{i}"),
                    "--",
                    "true",
                ]),
                b"",
                LIMIT,
            )
            .code
        }),
    );
    let url_git = url.clone();
    let repo_git = repo.clone();
    let pushes = spawn_runs(
        work.path().join("git-state"),
        PUSHES,
        Duration::from_millis(400),
        Box::new(move |state, k| {
            let old = if k == 0 {
                "0".repeat(40)
            } else {
                revs[k * COMMITS_PER_PUSH - 1].clone()
            };
            let new = &revs[(k + 1) * COMMITS_PER_PUSH - 1];
            let line = format!("{old} {new} refs/heads/main\n");
            let mut cmd = bridge(&url_git, state);
            with_resend_window(&mut cmd)
                .current_dir(&repo_git)
                .args(["git", "--repo", "faults"]);
            run_input(&mut cmd, line.as_bytes(), LIMIT).code
        }),
    );

    std::thread::sleep(Duration::from_secs(2).saturating_sub(started.elapsed()));
    m.stop(false);
    let killed_at = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    m.start_again();
    let back_millis = now_millis();
    eprintln!(
        "broker killed (SIGKILL) at +2 s, back after {:?}",
        killed_at.elapsed()
    );

    for (what, handle) in [("mail", mails), ("cron", crons), ("git", pushes)] {
        let codes = handle.join().expect("source thread");
        assert!(
            codes.iter().all(|c| *c == 0),
            "{what} bridge exit codes: {codes:?}"
        );
    }
    let out = stream.join().expect("pub thread");
    assert_eq!(out.code, 0, "pub --stdin: {}", out.stderr);
    // What was spooled while the broker was away goes out now (a later run
    // of each bridge would do the same).
    for state in ["mail-state", "cron-state", "git-state"] {
        let out = signalbox_e2e::run_with_limit(
            bridge(&url, &work.path().join(state)).args(["spool", "flush", "--timeout", "30"]),
            LIMIT,
        );
        assert_eq!(out.code, 0, "spool flush {state}: {}", out.stderr);
    }

    let entries = wait_for_distinct(&ledger, expected, SETTLE);
    listener.kill();
    let t = tally(&entries);
    let resumed = entries
        .iter()
        .map(|e| e.millis)
        .filter(|ms| *ms >= back_millis)
        .min()
        .map(|ms| ms - back_millis);
    let mut per_source: HashMap<&str, HashSet<&str>> = HashMap::new();
    for e in &entries {
        if let Some(s) = source_of(e) {
            per_source.entry(s).or_default().insert(&e.id);
        }
    }
    eprintln!(
        "RELIABILITY broker SIGKILL: sent {expected}, processed {}, distinct {}, processed twice {}, lost {}, first message processed {} ms after the broker was back; per source: {:?}",
        t.processed,
        t.distinct,
        t.twice.len(),
        expected.saturating_sub(t.distinct),
        resumed.map_or("?".into(), |ms| ms.to_string()),
        per_source.iter().map(|(s, ids)| (*s, ids.len())).collect::<Vec<_>>()
    );
    assert!(t.twice.is_empty(), "processed twice: {:?}", t.twice);
    assert_eq!(
        t.distinct,
        expected,
        "lost {} messages",
        expected.saturating_sub(t.distinct)
    );
    let breaks = order_breaks(&entries, source_of);
    assert!(
        breaks.is_empty(),
        "order per source broken {} times, first: {:?}",
        breaks.len(),
        &breaks[..breaks.len().min(10)]
    );
}

/// Fault 2: a listener killed with SIGKILL in the middle of processing
/// processes, once restarted, what it had in hand and what arrived
/// meanwhile, and nothing twice. On both brokers.
#[test]
fn listener_killed_mid_processing_resumes_without_repeats() {
    let embedded = embedded_broker();
    listener_kill_case("embedded", &embedded.url());
    if let Some(m) = mosquitto_persistent("listener_killed_mid_processing_resumes_without_repeats")
    {
        listener_kill_case("mosquitto", &m.url());
    }
}

fn listener_kill_case(broker: &str, url: &str) {
    const FIRST: usize = 600;
    const MEANWHILE: usize = 400;
    let work = tempfile::tempdir().expect("tempdir");
    let ledger = work.path().join("ledger");
    let state = work.path().join("listener");
    let filter = "signalbox/dev/work/#";
    // 5 ms of work per message: the kill lands in the middle of one.
    let listener = start_listener(url, &state, &ledger, filter, 5, &[]);
    wait_until_up(url, "fault", UP_LIMIT);
    let out = pub_stream(
        url,
        "signalbox/dev/work/job",
        (0..FIRST).map(|i| format!("first {i}")).collect(),
        Duration::ZERO,
    )
    .join()
    .expect("pub");
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Kill it once it is about a third through.
    let deadline = Instant::now() + LIMIT;
    while read_ledger(&ledger).len() < FIRST / 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    listener.kill();
    let at_kill = read_ledger(&ledger).len();
    assert!(
        at_kill < FIRST,
        "{broker}: the listener finished before the kill"
    );
    let out = pub_stream(
        url,
        "signalbox/dev/work/job",
        (FIRST..FIRST + MEANWHILE)
            .map(|i| format!("meanwhile {i}"))
            .collect(),
        Duration::ZERO,
    )
    .join()
    .expect("pub");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let restarted = Instant::now();
    let listener = start_listener(url, &state, &ledger, filter, 5, &[]);
    let entries = wait_for_distinct(&ledger, FIRST + MEANWHILE, SETTLE);
    listener.kill();
    let t = tally(&entries);
    eprintln!(
        "RELIABILITY listener SIGKILL ({broker}): sent {}, processed {}, distinct {}, processed twice {}, lost {}, killed after {at_kill}, drained {:?} after restart",
        FIRST + MEANWHILE,
        t.processed,
        t.distinct,
        t.twice.len(),
        (FIRST + MEANWHILE).saturating_sub(t.distinct),
        restarted.elapsed()
    );
    assert!(
        t.twice.is_empty(),
        "{broker}: processed twice: {:?}",
        t.twice
    );
    assert_eq!(t.distinct, FIRST + MEANWHILE, "{broker}: lost messages");
    let breaks = order_breaks(&entries, |_| Some("pub"));
    assert!(breaks.is_empty(), "{broker}: order broken: {breaks:?}");
}

/// Fault 6: SIGTERM stops a listener between messages: the one in hand is
/// finished and acknowledged, the rest wait for the next run.
#[test]
fn sigterm_drains_the_message_in_hand() {
    let broker = embedded_broker();
    let url = broker.url();
    let work = tempfile::tempdir().expect("tempdir");
    let ledger = work.path().join("ledger");
    let state = work.path().join("listener");
    let filter = "signalbox/dev/slow/#";
    const N: usize = 20;
    let listener = start_listener(&url, &state, &ledger, filter, 300, &[]);
    wait_until_up(&url, "fault", UP_LIMIT);
    let out = pub_stream(
        &url,
        "signalbox/dev/slow/job",
        (0..N).map(|i| format!("slow {i}")).collect(),
        Duration::ZERO,
    )
    .join()
    .expect("pub");
    assert_eq!(out.code, 0, "{}", out.stderr);
    // In the middle of the second message.
    std::thread::sleep(Duration::from_millis(450));
    let code = listener.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "SIGTERM: exit code");
    let after_term = read_ledger(&ledger);
    assert!(
        (1..N).contains(&after_term.len()),
        "the message in hand is finished, the rest wait: {} done",
        after_term.len()
    );
    let listener = start_listener(&url, &state, &ledger, filter, 0, &[]);
    let entries = wait_for_distinct(&ledger, N, Duration::from_secs(30));
    listener.kill();
    let t = tally(&entries);
    eprintln!(
        "RELIABILITY SIGTERM listener: sent {N}, processed {}, distinct {}, processed twice {}, finished before exit {}",
        t.processed,
        t.distinct,
        t.twice.len(),
        after_term.len()
    );
    assert!(t.twice.is_empty(), "processed twice: {:?}", t.twice);
    assert_eq!(t.distinct, N);
}

/// Fault 3: the spool cannot be written while the broker is away. The mail
/// bridge makes the MTA retry (exit 75), the cron wrapper keeps the job's
/// own exit code, and both say why in one line.
#[test]
fn an_unwritable_spool_makes_mail_retry_and_keeps_the_cron_exit_code() {
    let work = tempfile::tempdir().expect("tempdir");
    let state = work.path().join("state");
    std::fs::create_dir_all(&state).expect("state");
    // A file where the spool directory should be: no process, root
    // included, can create spool files under it.
    let spool = work.path().join("spool-is-a-file");
    std::fs::write(&spool, "not a directory").expect("file");
    let dead = bridge_support::dead_broker();
    let run = |args: &[&str], input: &[u8]| {
        let mut cmd = bridge(&dead, &state);
        cmd.env("SIGNALBOX_SPOOL", &spool).args(args);
        run_input(&mut cmd, input, LIMIT)
    };
    let out = run(&["mail"], &mail(1));
    assert_eq!(out.code, 75, "mail: exit code; stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("spool"),
        "mail names the spool: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);

    let out = run(
        &[
            "cron",
            "--job",
            "backup",
            "--",
            "sh",
            "-c",
            "echo done; exit 3",
        ],
        b"",
    );
    assert_eq!(
        out.code, 3,
        "cron keeps the job's exit code; stderr: {}",
        out.stderr
    );
    assert!(
        out.stdout.contains("done"),
        "the job's output passes through: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("spool"),
        "cron names the spool: {}",
        out.stderr
    );

    let out = run(&["cron", "--job", "backup", "--", "true"], b"");
    assert_eq!(
        out.code, 0,
        "a job that succeeded still exits 0: {}",
        out.stderr
    );
    assert!(out.stderr.contains("spool"), "{}", out.stderr);
}

/// The listener's health state as `signalbox health --json` reports it.
fn health_state(url: &str, name: &str) -> Option<String> {
    let out = signalbox_e2e::run_with_limit(
        signalbox(url).args(["health", "--json", "--wait", "0.3"]),
        Duration::from_secs(20),
    );
    let reports: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    reports
        .as_array()?
        .iter()
        .find(|r| r["listener"] == name)
        .and_then(|r| r["state"].as_str())
        .map(str::to_string)
}

/// Fault 4: a network partition, simulated by freezing the broker
/// (SIGSTOP: connections stay open, nothing answers) for 60 s. The
/// listener and a publisher stay up, the console shows "reconnecting", and
/// everything recovers without anyone acting: the listener reports
/// `degraded` once back, then `up`, and every message published during the
/// partition is processed once.
#[test]
fn a_60_s_partition_degrades_then_recovers_on_its_own() {
    if !signalbox_e2e::tmux::tmux_available() {
        return;
    }
    let Some(m) = mosquitto_persistent("a_60_s_partition_degrades_then_recovers_on_its_own") else {
        return;
    };
    let url = m.url();
    // Keepalive 5 s: a frozen broker is noticed within about 10 s.
    let env = [("SIGNALBOX_KEEPALIVE", "5"), ("FAULT_HEALTH_INTERVAL", "3")];
    let work = tempfile::tempdir().expect("tempdir");
    let ledger = work.path().join("ledger");
    let mut listener = start_listener(
        &url,
        &work.path().join("listener"),
        &ledger,
        "signalbox/dev/part/#",
        0,
        &env,
    );
    wait_until_up(&url, "fault", UP_LIMIT);
    // A daemon bridge too: the RSS bridge polling a local feed file.
    let feed = work.path().join("feed.xml");
    std::fs::write(
        &feed,
        "<rss version=\"2.0\"><channel><title>t</title><item><guid>a</guid><title>a</title></item></channel></rss>",
    )
    .expect("feed");
    let mut rss_cmd = bridge(&url, &work.path().join("rss-state"));
    let mut rss = KillOnDrop(
        rss_cmd
            .envs(env.iter().copied())
            .args([
                "rss",
                "--interval",
                "5s",
                "--health-interval",
                "3",
                "--feed",
            ])
            .arg(format!("local={}", feed.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rss bridge"),
    );
    wait_until_up(&url, "rss", UP_LIMIT);
    let console = format!(
        "SIGNALBOX_KEEPALIVE=5 '{}' --broker {url}; sleep 60",
        bin("signalbox").display()
    );
    let tmux = signalbox_e2e::tmux::Tmux::start(120, 30, &console).expect("tmux");
    tmux.wait_for(&["1 Dashboard", "connected"]);

    const LINES: usize = 700; // one per 100 ms: before, during and after
    let stream = pub_stream_with(
        &url,
        "signalbox/dev/part/stream",
        (0..LINES).map(|i| format!("line {i}")).collect(),
        Duration::from_millis(100),
        &env,
    );
    std::thread::sleep(Duration::from_secs(5));
    m.pause();
    let paused = Instant::now();
    tmux.wait_for_within(&["reconnecting"], Duration::from_secs(30));
    let noticed = paused.elapsed();
    std::thread::sleep(Duration::from_secs(60).saturating_sub(paused.elapsed()));
    assert!(
        listener.running(),
        "the listener stays up during the partition"
    );
    assert!(
        matches!(rss.0.try_wait(), Ok(None)),
        "the RSS bridge stays up during the partition"
    );
    assert!(
        !stream.is_finished(),
        "the publisher stays up during the partition"
    );
    m.resume();
    let resumed = Instant::now();

    // Degraded once back (the outage is reported), then up again: the
    // listener and the RSS bridge.
    let recovered = |states: &[String]| {
        states.last().map(String::as_str) == Some("up") && states.iter().any(|s| s == "degraded")
    };
    let mut states: Vec<String> = Vec::new();
    let mut rss_states: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !(recovered(&states) && recovered(&rss_states)) {
        for (name, seen) in [("fault", &mut states), ("rss", &mut rss_states)] {
            if let Some(state) = health_state(&url, name) {
                if seen.last() != Some(&state) {
                    seen.push(state);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let recovered_in = resumed.elapsed();
    let screen = tmux.wait_for_within(&["connected"], Duration::from_secs(30));
    assert!(
        !screen.contains("reconnecting"),
        "the console recovered:\n{screen}"
    );
    let console_back = resumed.elapsed();

    let out = stream.join().expect("pub");
    assert_eq!(
        out.code, 0,
        "pub --stdin across the partition: {}",
        out.stderr
    );
    let entries = wait_for_distinct(&ledger, LINES, SETTLE);
    listener.kill();
    drop(rss);
    let t = tally(&entries);
    eprintln!(
        "RELIABILITY partition 60 s: sent {LINES}, processed {}, distinct {}, processed twice {}, lost {}, noticed after {noticed:?}, listener health {states:?}, RSS bridge health {rss_states:?}, both within {recovered_in:?}, console connected again {console_back:?} after the broker answered",
        t.processed,
        t.distinct,
        t.twice.len(),
        LINES.saturating_sub(t.distinct)
    );
    assert!(
        recovered(&states),
        "listener health went degraded then up: {states:?}"
    );
    assert!(
        recovered(&rss_states),
        "RSS bridge health went degraded then up: {rss_states:?}"
    );
    assert!(t.twice.is_empty(), "processed twice: {:?}", t.twice);
    assert_eq!(t.distinct, LINES, "lost messages");
    let breaks = order_breaks(&entries, |_| Some("pub"));
    assert!(breaks.is_empty(), "order broken: {breaks:?}");
}

/// Resident memory of a process, in KiB (VmRSS).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The listener's health report (`signalbox health --json`).
fn health_report(url: &str, name: &str) -> Option<serde_json::Value> {
    let out = signalbox_e2e::run_with_limit(
        signalbox(url).args(["health", "--json", "--wait", "0.5"]),
        Duration::from_secs(20),
    );
    let reports: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    reports
        .as_array()?
        .iter()
        .find(|r| r["listener"] == name)
        .cloned()
}

/// Fault 5: a slow consumer (1 s per message) under 100 msg/s for 30 s.
/// Memory stays bounded on every side (the broker holds the backlog, the
/// listener only its in-flight window), the listener's health shows how
/// far behind it is, and once it is fast again it catches up with nothing
/// lost or repeated.
#[test]
fn a_slow_consumer_stays_bounded_and_shows_its_lag() {
    let Some(m) = mosquitto_persistent("a_slow_consumer_stays_bounded_and_shows_its_lag") else {
        return;
    };
    let url = m.url();
    let work = tempfile::tempdir().expect("tempdir");
    let ledger = work.path().join("ledger");
    let state = work.path().join("listener");
    let filter = "signalbox/dev/slowc/#";
    let listener = start_listener(&url, &state, &ledger, filter, 1_000, &[]);
    wait_until_up(&url, "fault", UP_LIMIT);
    const N: usize = 3_000; // 100 msg/s for 30 s
    let mut pub_cmd = signalbox(&url);
    let mut publisher = pub_cmd
        .args([
            "pub",
            "--stdin",
            "--timeout",
            "120",
            "signalbox/dev/slowc/job",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pub");
    let pub_pid = publisher.id();
    let mut stdin = publisher.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        for i in 0..N {
            let _ = writeln!(stdin, "job {i}");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let (mut peak_listener, mut peak_pub, mut peak_broker) = (0, 0, 0);
    let mut samples = Vec::new();
    while !feeder.is_finished() {
        peak_listener = peak_listener.max(rss_kib(listener.pid()).unwrap_or(0));
        peak_pub = peak_pub.max(rss_kib(pub_pid).unwrap_or(0));
        peak_broker = peak_broker.max(rss_kib(m.pid()).unwrap_or(0));
        samples.push(rss_kib(listener.pid()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(500));
    }
    feeder.join().expect("feeder");
    let out = signalbox_e2e::wait_with_limit(publisher, Duration::from_secs(60));
    assert_eq!(out.code, 0, "pub: {}", out.stderr);
    let report = health_report(&url, "fault").expect("a health report");
    let lag = report["lag_s"].as_f64().unwrap_or(0.0);
    let done_slow = read_ledger(&ledger).len();
    eprintln!(
        "RELIABILITY slow consumer: sent {N} at 100 msg/s, handled {done_slow} at 1 s each; peak RSS listener {} MiB, pub {} MiB, mosquitto {} MiB; health lag_s {lag}, backlog {}",
        peak_listener / 1024,
        peak_pub / 1024,
        peak_broker / 1024,
        report["backlog"]
    );
    // The listener holds only what the broker lets it have in flight.
    assert!(
        peak_listener < 100 * 1024,
        "listener RSS {peak_listener} KiB"
    );
    assert!(peak_pub < 100 * 1024, "publisher RSS {peak_pub} KiB");
    let half = samples.len() / 2;
    let (early, late) = (
        samples[..half].iter().max().copied().unwrap_or(0),
        samples[half..].iter().max().copied().unwrap_or(0),
    );
    assert!(
        late < early + 16 * 1024,
        "listener memory grows with the backlog: {early} KiB then {late} KiB"
    );
    assert!(lag > 5.0, "health shows the lag: {report}");
    // Fast again: it catches up, nothing lost, nothing twice.
    listener.kill();
    let listener = start_listener(&url, &state, &ledger, filter, 0, &[]);
    let entries = wait_for_distinct(&ledger, N, SETTLE);
    listener.kill();
    let t = tally(&entries);
    eprintln!(
        "RELIABILITY slow consumer catch-up: processed {}, distinct {}, processed twice {}, lost {}",
        t.processed,
        t.distinct,
        t.twice.len(),
        N.saturating_sub(t.distinct)
    );
    assert!(t.twice.is_empty(), "processed twice: {:?}", t.twice);
    assert_eq!(t.distinct, N);
}

/// Fault 6, the publisher side: `signalbox pub --stdin` stopped with
/// SIGTERM while its input is still open stops reading, waits for the
/// broker to confirm what it read, and exits 0: what reached the bus is a
/// gapless prefix of the input.
#[test]
fn sigterm_stops_pub_stdin_after_what_it_read_is_confirmed() {
    let broker = embedded_broker();
    let url = broker.url();
    let work = tempfile::tempdir().expect("tempdir");
    let ledger = work.path().join("ledger");
    let listener = start_listener(
        &url,
        &work.path().join("l"),
        &ledger,
        "signalbox/dev/term/#",
        0,
        &[],
    );
    wait_until_up(&url, "fault", UP_LIMIT);
    let mut child = signalbox(&url)
        .args(["pub", "--stdin", "signalbox/dev/term/line"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pub");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        for i in 0..100_000 {
            if writeln!(stdin, "line {i}").is_err() {
                return i;
            }
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        100_000
    });
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let out = signalbox_e2e::wait_with_limit(child, Duration::from_secs(30));
    let written = feeder.join().expect("feeder");
    assert_eq!(out.code, 0, "pub after SIGTERM: {}", out.stderr);
    assert!(
        out.stderr.contains("stopping"),
        "says it stops: {}",
        out.stderr
    );
    std::thread::sleep(Duration::from_secs(1));
    let entries = read_ledger(&ledger);
    listener.kill();
    let numbers: Vec<u64> = entries
        .iter()
        .filter_map(|e| number_in(&e.summary))
        .collect();
    eprintln!(
        "RELIABILITY SIGTERM pub --stdin: {} lines written before the pipe closed, {} confirmed and processed",
        written,
        numbers.len()
    );
    assert!(!numbers.is_empty(), "something was sent before SIGTERM");
    assert!(
        numbers.iter().enumerate().all(|(i, n)| *n == i as u64),
        "the bus got a gapless prefix of the input, once each"
    );
}

/// Fault 1, the listener away: mosquitto is killed while it holds a
/// stream's messages queued for a listener that is not connected. What it
/// confirmed since its last save is gone from its queue; the publisher's
/// re-send window puts it back. (With `FAULTS_RESEND_WINDOW=0` this test
/// fails and reports how many messages the broker lost.)
#[test]
fn broker_killed_while_the_listener_is_away_loses_nothing() {
    let Some(mut m) =
        mosquitto_persistent("broker_killed_while_the_listener_is_away_loses_nothing")
    else {
        return;
    };
    let url = m.url();
    let work = tempfile::tempdir().expect("tempdir");
    let ledger = work.path().join("ledger");
    let state = work.path().join("listener");
    let filter = "signalbox/dev/away/#";
    // Create the listener's persistent session, then stop it cleanly.
    let listener = start_listener(&url, &state, &ledger, filter, 0, &[]);
    wait_until_up(&url, "fault", UP_LIMIT);
    assert_eq!(listener.terminate(Duration::from_secs(10)), Some(0));

    const LINES: usize = 4_000; // one per millisecond, more or less
    let stream = pub_stream(
        &url,
        "signalbox/dev/away/line",
        (0..LINES).map(|i| format!("line {i}")).collect(),
        Duration::from_millis(1),
    );
    std::thread::sleep(Duration::from_millis(2_500));
    m.stop(false);
    std::thread::sleep(Duration::from_secs(3));
    m.start_again();
    let out = stream.join().expect("pub");
    assert_eq!(out.code, 0, "pub --stdin: {}", out.stderr);

    let listener = start_listener(&url, &state, &ledger, filter, 0, &[]);
    let entries = wait_for_distinct(&ledger, LINES, Duration::from_secs(60));
    listener.kill();
    let t = tally(&entries);
    eprintln!(
        "RELIABILITY broker SIGKILL, listener away: sent {LINES}, processed {}, distinct {}, processed twice {}, lost {}",
        t.processed,
        t.distinct,
        t.twice.len(),
        LINES.saturating_sub(t.distinct)
    );
    assert!(t.twice.is_empty(), "processed twice: {:?}", t.twice);
    assert_eq!(
        t.distinct,
        LINES,
        "lost {}",
        LINES.saturating_sub(t.distinct)
    );
    let breaks = order_breaks(&entries, |_| Some("pub"));
    assert!(breaks.is_empty(), "order broken: {breaks:?}");
}
