//! `signalbox-bridge cron --job NAME -- CMD [ARGS…]`: the crontab wrapper.
//!
//! Runs CMD at once, its stdout and stderr passed through (so cron's own
//! mail still works) and captured: an interleaved tail of the last N bytes
//! and the total count. Meanwhile it connects to the bus and publishes
//! `{prefix}/{env}/cron/{job}/started`; when CMD ends, the retained
//! `…/cron/{job}/finished` with the outcome.
//!
//! The job comes first: the wrapper never keeps CMD from running, not even
//! when its own configuration is broken (it says so on stderr and runs CMD
//! without events), and the bus being down only means the events are
//! spooled. It exits with CMD's exit code, 128+N when CMD was killed by
//! signal N, 127 when CMD does not exist and 126 when it cannot be run.
//! SIGTERM and SIGHUP sent to the wrapper are passed on to CMD.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{Seek, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;
use signalbox_common::config::Config;
use signalbox_common::envelope::{format_time, Envelope, Severity};
use signalbox_common::mqtt::{Publish, Qos};
use signalbox_common::topic;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::cli::{timeout_arg, BridgeError, BridgeResult, GlobalArgs};
use crate::session::{self, Session, DEFAULT_TIMEOUT_S};

/// Exit code when CMD does not exist (as in sh).
pub const EXIT_NOT_FOUND: u8 = 127;
/// Exit code when CMD exists but cannot be run (as in sh).
pub const EXIT_CANNOT_RUN: u8 = 126;
/// Default `--tail-bytes`.
pub const DEFAULT_TAIL_BYTES: usize = 10_000;
/// Largest `--tail-bytes`: the tail travels in one message.
pub const MAX_TAIL_BYTES: usize = 1024 * 1024;

/// Flags of `signalbox-bridge cron`.
#[derive(Debug, Args)]
#[command(after_help = "\
Runs CMD with its output passed through and publishes
{prefix}/{env}/cron/{job}/started and the retained .../cron/{job}/finished
(command, run_id, exit_code, signal, duration_ms, started, finished, host,
output_tail, output_bytes; severity error when it failed).

Exit code: CMD's own; 128+N when it was killed by signal N; 127 when CMD is not
found, 126 when it cannot be run; 2 for bad flags. The bus being down never
blocks or fails the job: events are spooled.

Examples (crontab):
  15 2 * * *  signalbox-bridge cron --job backup -- /usr/local/bin/backup --all
  */5 * * * * signalbox-bridge cron --job sync --quiet -- rsync -a src/ dst/")]
pub struct CronArgs {
    /// The job's name (a topic level)
    #[arg(long, value_name = "NAME")]
    pub job: String,
    /// Keep this many bytes of the end of the output (stdout and stderr interleaved)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TAIL_BYTES)]
    pub tail_bytes: usize,
    /// Hold CMD's output back unless it fails (like cronic)
    #[arg(long)]
    pub quiet: bool,
    /// Seconds to spend on the bus, at the start and at the end, before spooling instead
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_S)]
    pub timeout: f64,
    /// The command and its arguments (after --)
    #[arg(value_name = "CMD", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

/// The body of `finished` (and, partly, of `started`).
#[derive(Debug, Clone, Serialize)]
pub struct CronRun {
    /// The job's name as given.
    pub job: String,
    /// CMD and its arguments (lossy UTF-8).
    pub command: Vec<String>,
    /// Shared by the `started` and `finished` events of one run.
    pub run_id: String,
    /// CMD's exit code; `None` when it was killed by a signal.
    pub exit_code: Option<i32>,
    /// The signal that killed CMD.
    pub signal: Option<i32>,
    /// Wall time of CMD.
    pub duration_ms: u64,
    /// When CMD started (RFC 3339 UTC).
    pub started: String,
    /// When CMD ended.
    pub finished: String,
    /// This host.
    pub host: String,
    /// The last bytes of the output (lossy UTF-8).
    pub output_tail: String,
    /// Total bytes written by CMD on stdout and stderr.
    pub output_bytes: u64,
    /// Why CMD could not be run, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The last `cap` bytes of a stream, plus the total count.
#[derive(Debug, Default)]
pub struct Tail {
    cap: usize,
    bytes: VecDeque<u8>,
    total: u64,
}

impl Tail {
    /// Keeps at most `cap` bytes.
    pub fn new(cap: usize) -> Tail {
        Tail {
            cap,
            bytes: VecDeque::with_capacity(cap.min(64 * 1024)),
            total: 0,
        }
    }

    /// Appends a chunk, dropping the oldest bytes beyond the cap.
    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        if self.cap == 0 {
            return;
        }
        let chunk = &chunk[chunk.len().saturating_sub(self.cap)..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.cap);
        self.bytes.drain(..overflow);
        self.bytes.extend(chunk);
    }

    /// Total bytes pushed.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The kept bytes as text: lossy UTF-8, without a character cut at the
    /// start.
    pub fn text(&self) -> String {
        let bytes: Vec<u8> = self.bytes.iter().copied().collect();
        let cut = if self.total > self.bytes.len() as u64 {
            bytes
                .iter()
                .take(3)
                .take_while(|&&b| (0x80..0xC0).contains(&b))
                .count()
        } else {
            0
        };
        String::from_utf8_lossy(&bytes[cut..]).into_owned()
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signalled(i32),
    /// Could not be started (exit 127 or 126).
    NotRun(u8),
}

impl Outcome {
    /// The wrapper's exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Exited(code) => u8::try_from(code & 0xff).unwrap_or(1),
            Outcome::Signalled(sig) => u8::try_from((128 + sig) & 0xff).unwrap_or(1),
            Outcome::NotRun(code) => code,
        }
    }

    /// Whether the job failed.
    pub fn failed(self) -> bool {
        self != Outcome::Exited(0)
    }
}

/// The name of a signal (`SIGTERM`), or its number.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// Seconds with one decimal.
fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The one-line summary of a finished run.
pub fn finished_summary(
    job: &str,
    outcome: Outcome,
    duration: Duration,
    error: Option<&str>,
) -> String {
    match outcome {
        Outcome::Exited(0) => format!("{job} finished in {} (exit 0)", secs(duration)),
        Outcome::Exited(code) => format!("{job} failed in {} (exit {code})", secs(duration)),
        Outcome::Signalled(sig) => {
            format!(
                "{job} killed by {} after {}",
                signal_name(sig),
                secs(duration)
            )
        }
        Outcome::NotRun(_) => format!(
            "{job} could not start: {}",
            error.unwrap_or("cannot run the command")
        ),
    }
}

/// Reads one output stream of CMD: passes it on (or into the hold-back
/// file with `--quiet`) and into the shared tail. A closed stdout of our
/// own does not stop the job: the output is still captured.
async fn pump<R: AsyncRead + Unpin, W: tokio::io::AsyncWrite + Unpin>(
    mut from: R,
    mut to: Option<W>,
    mut held: Option<&mut std::fs::File>,
    tail: &RefCell<Tail>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        tail.borrow_mut().push(chunk);
        if let Some(file) = held.as_mut() {
            if file.write_all(chunk).is_err() {
                held = None;
            }
        } else if let Some(out) = to.as_mut() {
            if out.write_all(chunk).await.is_err() || out.flush().await.is_err() {
                to = None;
            }
        }
    }
}

/// Runs `signalbox-bridge cron`.
pub fn run(global: &GlobalArgs, args: CronArgs) -> BridgeResult {
    let budget = timeout_arg(args.timeout)?;
    if args.job.trim().is_empty() {
        return Err(BridgeError::usage(anyhow!("--job must not be empty")));
    }
    if args.tail_bytes > MAX_TAIL_BYTES {
        return Err(BridgeError::usage(anyhow!(
            "--tail-bytes must be at most {MAX_TAIL_BYTES}"
        )));
    }
    // The job runs even when the configuration is broken: say why there
    // are no events, on stderr (cron mails it), and go on.
    let config = match global.resolve() {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("signalbox-bridge: error: {e} (running the job without publishing events)");
            None
        }
    };
    let runtime = session::runtime().map_err(BridgeError::failure)?;
    Ok(runtime.block_on(run_job(config, args, budget)))
}

async fn run_job(config: Option<Config>, args: CronArgs, budget: Duration) -> u8 {
    let run_id = Uuid::now_v7();
    let started = Utc::now();
    let clock = Instant::now();
    let command: Vec<String> = args
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let job = args.job.clone();

    let mut cmd = tokio::process::Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let spawned = cmd.spawn();
    let spawned_ok = spawned.is_ok();

    let prefix_env = config
        .as_ref()
        .map(|c| (c.prefix.value.clone(), c.env.value.clone()));
    let topic_of = |event: &str| {
        prefix_env
            .as_ref()
            .map(|(prefix, env)| topic::build(prefix, env, "cron", &[&job], event))
    };

    // The bus side, started with the job and bounded by the budget: connect,
    // flush, publish `started`.
    let started_topic = topic_of("started");
    let bus = async {
        let config = config.clone()?;
        let mut session = Session::open(config, "cron", budget).await;
        if spawned_ok {
            if let Some(topic) = &started_topic {
                let body = serde_json::json!({
                    "job": job, "command": command, "run_id": run_id.to_string(),
                    "started": format_time(&started), "host": host(),
                });
                match event(
                    topic,
                    &format!("{job} started"),
                    Severity::Debug,
                    body,
                    started,
                ) {
                    Ok(p) => {
                        if let Err(e) = session.outbox.send(p).await {
                            eprintln!("signalbox-bridge: error: {e}");
                        }
                    }
                    Err(e) => eprintln!("signalbox-bridge: error: {e:#}"),
                }
            }
        }
        Some(session)
    };

    let tail = RefCell::new(Tail::new(args.tail_bytes));
    let mut hold_out = None;
    let mut hold_err = None;
    let job_run = async {
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let (code, why) = match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        (EXIT_NOT_FOUND, format!("command not found: {}", command[0]))
                    }
                    _ => (EXIT_CANNOT_RUN, format!("cannot run {}: {e}", command[0])),
                };
                return (Outcome::NotRun(code), Some(why));
            }
        };
        if args.quiet {
            hold_out = tempfile::tempfile().ok();
            hold_err = tempfile::tempfile().ok();
        }
        let forward = forward_signals(child.id());
        let out = child.stdout.take();
        let err = child.stderr.take();
        let pumps = async {
            let a = async {
                if let Some(o) = out {
                    pump(o, Some(tokio::io::stdout()), hold_out.as_mut(), &tail).await;
                }
            };
            let b = async {
                if let Some(e) = err {
                    pump(e, Some(tokio::io::stderr()), hold_err.as_mut(), &tail).await;
                }
            };
            tokio::join!(a, b);
        };
        let (status, ()) = tokio::join!(child.wait(), pumps);
        if let Some(forward) = forward {
            forward.abort();
        }
        match status {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => (Outcome::Exited(code), None),
                (None, Some(sig)) => (Outcome::Signalled(sig), None),
                (None, None) => (Outcome::Exited(1), None),
            },
            Err(e) => (
                Outcome::Exited(1),
                Some(format!("cannot wait for the command: {e}")),
            ),
        }
    };

    let (session, (outcome, error)) = tokio::join!(bus, job_run);
    let finished = Utc::now();
    let duration = clock.elapsed();
    if let Some(why) = &error {
        eprintln!("signalbox-bridge: error: {why}");
    }
    if args.quiet && outcome.failed() {
        replay_held(hold_out, &mut std::io::stdout());
        replay_held(hold_err, &mut std::io::stderr());
    }

    if let (Some(mut session), Some(topic)) = (session, topic_of("finished")) {
        session.outbox.set_deadline(Instant::now() + budget);
        let tail = tail.into_inner();
        let run = CronRun {
            job: job.clone(),
            command: command.clone(),
            run_id: run_id.to_string(),
            exit_code: match outcome {
                Outcome::Exited(code) => Some(code),
                Outcome::Signalled(_) => None,
                Outcome::NotRun(code) => Some(i32::from(code)),
            },
            signal: match outcome {
                Outcome::Signalled(sig) => Some(sig),
                _ => None,
            },
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            started: format_time(&started),
            finished: format_time(&finished),
            host: host(),
            output_tail: tail.text(),
            output_bytes: tail.total(),
            error: error.clone(),
        };
        let severity = if outcome.failed() {
            Severity::Error
        } else {
            Severity::Info
        };
        let summary = finished_summary(&job, outcome, duration, error.as_deref());
        match serde_json::to_value(&run)
            .map_err(anyhow::Error::from)
            .and_then(|body| event(&topic, &summary, severity, body, finished))
        {
            Ok(mut publish) => {
                publish.retain = true;
                if let Err(e) = session.outbox.send(publish).await {
                    eprintln!("signalbox-bridge: error: {e}");
                }
            }
            Err(e) => eprintln!("signalbox-bridge: error: {e:#}"),
        }
        session.close(&format!("cron-{job}")).await;
    }
    outcome.exit_code()
}

fn host() -> String {
    signalbox_common::envelope::local_hostname()
        .unwrap_or("localhost")
        .to_string()
}

fn event(
    topic: &str,
    summary: &str,
    severity: Severity,
    body: serde_json::Value,
    time: DateTime<Utc>,
) -> anyhow::Result<Publish> {
    let mut builder = Envelope::builder(topic, summary)
        .bridge("cron")
        .severity(severity)
        .body(body)
        .time(time);
    if let Some(user) = session::os_user() {
        builder = builder.user(user.clone()).agent(user);
    }
    let envelope = builder.build()?;
    Ok(Publish::new(
        envelope.topic.clone(),
        envelope.to_vec(),
        Qos::AtLeastOnce,
        false,
    ))
}

/// Writes what `--quiet` held back.
fn replay_held(file: Option<std::fs::File>, to: &mut impl Write) {
    if let Some(mut file) = file {
        if file.rewind().is_ok() {
            let _ = std::io::copy(&mut file, to);
            let _ = to.flush();
        }
    }
}

/// Passes SIGTERM and SIGHUP on to the job while it runs (the wrapper
/// itself survives them, to report the outcome). SIGINT from a terminal
/// reaches the job directly (same process group), so it is only caught.
fn forward_signals(pid: Option<u32>) -> Option<tokio::task::JoinHandle<()>> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use tokio::signal::unix::{signal, SignalKind};
    let pid = Pid::from_raw(i32::try_from(pid?).ok()?);
    let mut term = signal(SignalKind::terminate()).ok()?;
    let mut hup = signal(SignalKind::hangup()).ok()?;
    let mut int = signal(SignalKind::interrupt()).ok()?;
    Some(tokio::spawn(async move {
        loop {
            let sig = tokio::select! {
                _ = term.recv() => Signal::SIGTERM,
                _ = hup.recv() => Signal::SIGHUP,
                _ = int.recv() => continue,
            };
            let _ = kill(pid, sig);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_tail_keeps_the_last_bytes_and_counts_all() {
        let mut t = Tail::new(10);
        t.push(b"0123456789abc");
        assert_eq!(t.text(), "3456789abc");
        t.push(b"de");
        assert_eq!(t.text(), "56789abcde");
        assert_eq!(t.total(), 15);
        let mut zero = Tail::new(0);
        zero.push(b"abc");
        assert_eq!((zero.text().as_str(), zero.total()), ("", 3));
    }

    #[test]
    fn a_character_cut_at_the_start_of_the_tail_is_dropped() {
        let mut t = Tail::new(5);
        t.push("aé€x".as_bytes()); // a, é (2 bytes), € (3 bytes), x
        assert_eq!(t.text(), "€x");
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(Outcome::Exited(3).exit_code(), 3);
        assert_eq!(Outcome::Signalled(15).exit_code(), 143);
        assert_eq!(Outcome::NotRun(127).exit_code(), 127);
        assert!(!Outcome::Exited(0).failed());
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(
            finished_summary(
                "backup",
                Outcome::Signalled(15),
                Duration::from_millis(1234),
                None
            ),
            "backup killed by SIGTERM after 1.2 s"
        );
    }

    proptest! {
        #[test]
        fn the_tail_equals_the_end_of_the_concatenation(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..20),
            cap in 0usize..100,
        ) {
            let mut t = Tail::new(cap);
            let mut all = Vec::new();
            for c in &chunks {
                t.push(c);
                all.extend_from_slice(c);
            }
            let expect: Vec<u8> = all[all.len().saturating_sub(cap)..].to_vec();
            prop_assert_eq!(t.bytes.iter().copied().collect::<Vec<u8>>(), expect);
            prop_assert_eq!(t.total(), all.len() as u64);
        }
    }

    /// Flags and words a crontab line may hold, and near misses.
    fn cron_word() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "--job",
                "--tail-bytes",
                "--quiet",
                "--timeout",
                "--",
                "-v",
                "--env",
                "x",
                "0",
                "-1",
                "1e9",
                "NaN",
                "inf",
                "1048577",
                "18446744073709551616",
                "",
            ])
            .prop_map(str::to_string),
            proptest::collection::vec(any::<char>(), 0..10).prop_map(String::from_iter),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(2_000) })]

        /// Any arguments after `cron`: clap accepts them or says why, and
        /// what it accepts is checked (timeout, job, tail size) with a
        /// usage error; a valid job name always makes valid events.
        #[test]
        fn cron_arguments_parse_or_are_usage_errors(
            words in proptest::collection::vec(cron_word(), 0..8),
            job in proptest::collection::vec(any::<char>(), 0..20).prop_map(String::from_iter),
            error in proptest::option::of(proptest::collection::vec(any::<char>(), 0..20).prop_map(String::from_iter)),
            code in any::<i32>(),
        ) {
            use clap::Parser;
            let argv = ["signalbox-bridge", "cron"].into_iter().map(String::from).chain(words);
            if let Ok(cli) = crate::commands::Cli::try_parse_from(argv) {
                if let crate::commands::Command::Cron(args) = cli.command {
                    let checked = timeout_arg(args.timeout).map(|_| ());
                    if let Err(e) = checked {
                        prop_assert_eq!(e.code, crate::cli::EXIT_USAGE);
                        prop_assert!(!e.error.to_string().contains('\n'));
                    }
                    prop_assert!(!args.command.is_empty());
                }
            }
            prop_assume!(!job.trim().is_empty());
            let topic = topic::build("signalbox", "dev", "cron", &[&job], "finished");
            prop_assert_eq!(topic::validate_topic_name(&topic), Ok(()));
            let outcome = [
                Outcome::Exited(code),
                Outcome::Signalled(code),
                Outcome::NotRun(127),
            ][(code as u32 % 3) as usize];
            let summary = finished_summary(&job, outcome, Duration::from_millis(1), error.as_deref());
            let published = event(&topic, &summary, Severity::Info, serde_json::json!({"job": job}), Utc::now());
            let publish = published.map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
            let envelope = Envelope::from_slice(&publish.payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(envelope.topic, topic.clone());
            let _ = outcome.exit_code();
        }
    }
}
