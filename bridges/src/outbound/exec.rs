//! `signalbox-bridge exec`: run a command once per message — the shell
//! listener. The payload goes to the command's stdin; topic, id, summary
//! and severity go into its environment. A non-zero exit or a timeout is a
//! failure (retried, then recorded with the exit status and the tail of
//! stderr). `--reply` answers requests with the command's stdout;
//! `--debounce` runs it once per burst (alias/ACL regeneration jobs).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use signalbox_common::listener::{self, Delivery, HandlerResult, ListenerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{BridgeError, BridgeResult, GlobalArgs};

/// Most stdout kept for a reply.
const MAX_REPLY: usize = 1024 * 1024;
/// Tail of stderr kept for the failure record.
const STDERR_TAIL: usize = 2048;

/// Flags of `signalbox-bridge exec`.
#[derive(Debug, Args)]
#[command(after_help = "\
The command gets the payload on stdin and SIGNALBOX_TOPIC, SIGNALBOX_ID,
SIGNALBOX_SUMMARY, SIGNALBOX_SEVERITY, SIGNALBOX_ATTEMPT, SIGNALBOX_REPLAY
(1 on an operator's replay) and SIGNALBOX_BURST (messages in a debounced burst)
in its environment. Exit 0 = handled; anything else (or --timeout) = failed:
retried --retries times, then kept as a failure record that the operator can
replay (`signalbox failed replay`) or acknowledge. The listener runs until
SIGTERM/SIGINT, finishing the message in hand, and reports its health on
{prefix}/_health/NAME.

Examples:
  signalbox-bridge exec --name notify --filter 'signalbox/prod/koji/build/#' -- /usr/local/bin/notify-build
  signalbox-bridge exec --name aliases --filter 'signalbox/prod/pkgdb/#' --debounce 5s -- make -C /srv/aliases
  signalbox-bridge exec --name owner --filter 'signalbox/prod/pkgdb/owner/query' --reply -- pkgdb-owner
  signalbox-bridge exec --name thumbs --filter 'signalbox/prod/media/#' --share-group thumbs -- thumbnail")]
pub struct ExecArgs {
    /// Listener name (health, failure records, replay)
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Topic filter to handle (repeatable)
    #[arg(long = "filter", value_name = "FILTER", required = true)]
    filters: Vec<String>,
    /// Seconds a run may take before it is killed and counted as failed
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    timeout: f64,
    /// Tries per message before a failure record
    #[arg(long, value_name = "N", default_value_t = 3)]
    retries: u32,
    /// Replays stop after this many failed attempts
    #[arg(long, value_name = "N", default_value_t = 5)]
    max_attempts: u32,
    /// Answer requests with the command's stdout
    #[arg(long)]
    reply: bool,
    /// Run once after a burst: when no message came for DURATION (e.g. 500ms, 5s, 1m)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    debounce: Option<Duration>,
    /// Share the work with other instances ($share/GROUP/…)
    #[arg(long, value_name = "GROUP")]
    share_group: Option<String>,
    /// Seconds between health reports [env: SIGNALBOX_HEALTH_INTERVAL] [default: 10]
    #[arg(long, value_name = "SECS")]
    health_interval: Option<u64>,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Parses `500ms`, `5s`, `2m`, `1h` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 5s, 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit in {text:?}: use ms, s, m or h")),
    };
    if !seconds.is_finite() || !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("{text:?} is out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Runs the exec listener until SIGTERM/SIGINT.
pub fn run(global: &GlobalArgs, args: ExecArgs) -> BridgeResult {
    let mut overrides = global.overrides();
    overrides.health_interval = args.health_interval;
    let config =
        signalbox_common::config::Config::resolve(&overrides).map_err(BridgeError::usage)?;
    if !args.timeout.is_finite() || args.timeout <= 0.0 {
        return Err(BridgeError::usage(anyhow::anyhow!(
            "--timeout must be a positive number of seconds"
        )));
    }
    let mut options = ListenerOptions::new(&args.name, args.filters.clone(), &config);
    options.retries = args.retries.max(1);
    options.max_attempts = args.max_attempts.max(1);
    options.share_group = args.share_group.clone();
    options.debounce = args.debounce;
    let program = args.command[0].clone();
    if resolve_program(&program).is_none() {
        // Not fatal: it may appear later (a deploy in progress), and every
        // message that finds it missing fails visibly with a record.
        tracing::error!("command {program:?} not found: every message will fail until it exists");
        eprintln!("signalbox-bridge: warning: command {program:?} not found; messages will fail (and be recorded) until it exists");
    }
    let runner = Runner {
        command: args.command.clone(),
        timeout: Duration::from_secs_f64(args.timeout),
        reply: args.reply,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BridgeError::failure)?;
    runtime.block_on(async move {
        let runner = std::sync::Arc::new(runner);
        let handler = move |d: Delivery| {
            let runner = runner.clone();
            async move { runner.run(d).await }
        };
        listener::run(&config, options, handler, listener::shutdown_signal())
            .await
            .map_err(|e| match e {
                listener::ListenerError::Mqtt(_) => BridgeError::failure(e),
                other => BridgeError::usage(other),
            })?;
        Ok(0)
    })
}

/// Where `program` would be found: itself when it has a slash, else on PATH.
fn resolve_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or(None)
}

/// Runs the command for one delivery.
struct Runner {
    command: Vec<String>,
    timeout: Duration,
    reply: bool,
}

impl Runner {
    async fn run(&self, d: Delivery) -> HandlerResult {
        let mut cmd = tokio::process::Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .env("SIGNALBOX_TOPIC", &d.topic)
            .env("SIGNALBOX_ID", &d.id)
            .env("SIGNALBOX_SUMMARY", d.summary())
            .env("SIGNALBOX_SEVERITY", d.severity().as_str())
            .env("SIGNALBOX_ATTEMPT", d.attempt.to_string())
            .env("SIGNALBOX_REPLAY", if d.replay { "1" } else { "0" })
            .env("SIGNALBOX_BURST", d.burst.to_string());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {:?}: {e}", self.command[0]))?;
        let pgid = child.id();
        let mut stdin = child.stdin.take();
        let payload = d.payload.clone();
        let writer = tokio::spawn(async move {
            if let Some(stdin) = stdin.as_mut() {
                // A command that does not read its stdin closes the pipe:
                // that is not a failure.
                let _ = stdin.write_all(&payload).await;
                let _ = stdin.shutdown().await;
            }
        });
        let mut stdout = child.stdout.take();
        let keep_stdout = self.reply;
        let out_reader = tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut buf = [0u8; 8192];
            if let Some(out) = stdout.as_mut() {
                while let Ok(n) = out.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if keep_stdout && kept.len() < MAX_REPLY {
                        let room = MAX_REPLY - kept.len();
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
            kept
        });
        let mut stderr = child.stderr.take();
        let err_reader = tokio::spawn(async move {
            let mut tail: Vec<u8> = Vec::new();
            let mut buf = [0u8; 8192];
            if let Some(err) = stderr.as_mut() {
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
            }
            tail
        });
        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(status) => status.map_err(|e| format!("waiting for {:?}: {e}", self.command[0]))?,
            Err(_) => {
                if let Some(pid) = pgid {
                    // The whole process group: a shell's children too.
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill().await;
                return Err(format!("timed out after {:.1} s", self.timeout.as_secs_f64()).into());
            }
        };
        let _ = writer.await;
        let stdout = out_reader.await.unwrap_or_default();
        let stderr = err_reader.await.unwrap_or_default();
        if status.success() {
            return Ok(self.reply.then(|| Bytes::from(stdout)));
        }
        let how = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "failed".to_string(),
        };
        let tail = String::from_utf8_lossy(&stderr);
        let tail = tail.trim();
        Err(if tail.is_empty() {
            how
        } else {
            format!("{how}: {tail}")
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("48h").is_err());
    }

    #[test]
    fn programs_are_found_on_the_path_or_by_path() {
        assert!(resolve_program("sh").is_some());
        assert!(resolve_program("/bin/sh").is_some());
        assert!(resolve_program("/nonexistent/tool").is_none());
        assert!(resolve_program("no-such-program-signalbox").is_none());
    }
}
