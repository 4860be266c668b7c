//! `signalbox history`: query the recorder's database ("what happened to
//! package X last night?"). The schema and the query code are
//! `signalbox_bridges::history`, shared with the recorder.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use chrono::{Local, Utc};
use clap::Args;
use signalbox_bridges::history::{self, Query, Store, StoredMessage};
use signalbox_common::config::Config;
use signalbox_common::envelope::Severity;
use signalbox_common::topic;

use super::record::payload_json;
use super::{CliError, CliResult};

/// Largest `--limit`: a query answers people and scripts, not exports.
const MAX_LIMIT: usize = 1_000_000;

/// Flags of `signalbox history`.
#[derive(Debug, Args)]
#[command(after_help = "\
Prints the newest --limit matching messages, oldest first, one line each:
DATE TIME TOPIC SUMMARY (local time). --json prints one object per line: id,
time, topic, system, agent, severity, summary, kind and payload (object, string,
or base64 for binary). Every filter given must match. The database is --db, else
`db` in the config file's [history] table, else STATE_DIR/history.db, written by
`signalbox-bridge recorder`.

Times (--since, --until): a duration ago (30m, 1h, 2d, 1w), today, yesterday
(local midnight), a local date or date and time (2026-11-28, '2026-11-28 22:00'),
or RFC 3339 (2026-11-28T22:00:00Z).

Exit codes: 0 (also when nothing matched), 1 the database cannot be read, 2 bad
flags.

Examples:
  signalbox history --grep kernel --since yesterday          what happened to kernel since last night
  signalbox history --system koji --severity error --since 1d
  signalbox history --topic 'signalbox/prod/git/+/commit' --agent jkeating --limit 20
  signalbox history --since '2026-11-28 18:00' --until '2026-11-29 08:00' --json | jq .summary")]
pub struct HistoryArgs {
    /// The history database [default: [history] db, else STATE_DIR/history.db]
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Only this system (third topic level: git, koji, cron…)
    #[arg(long, value_name = "S")]
    system: Option<String>,
    /// Only topics matching this MQTT filter (+ one level, # the rest)
    #[arg(long, value_name = "GLOB")]
    topic: Option<String>,
    /// Only messages caused by this agent
    #[arg(long, value_name = "A")]
    agent: Option<String>,
    /// Only messages whose summary, topic or agent contain TEXT (case-insensitive)
    #[arg(long, value_name = "TEXT")]
    grep: Option<String>,
    /// Only this severity and above: debug, info, warning, error
    #[arg(long, value_name = "S")]
    severity: Option<String>,
    /// Only messages at or after this time
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only messages before this time
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// At most N messages (the newest)
    #[arg(long, short = 'n', value_name = "N", default_value_t = history::DEFAULT_LIMIT)]
    limit: usize,
    /// One JSON object per line
    #[arg(long)]
    json: bool,
}

/// Turns the flags into a query; errors are usage errors.
fn query(args: &HistoryArgs) -> Result<Query, CliError> {
    let usage = |e: String| CliError::usage(anyhow!(e));
    let now = Utc::now();
    let since = match &args.since {
        Some(t) => Some(history::parse_time(t, now).map_err(|e| usage(format!("--since: {e}")))?),
        None => None,
    };
    let until = match &args.until {
        Some(t) => Some(history::parse_time(t, now).map_err(|e| usage(format!("--until: {e}")))?),
        None => None,
    };
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(usage("--since must be before --until".into()));
        }
    }
    if let Some(filter) = &args.topic {
        topic::validate_filter(filter).map_err(|e| usage(format!("--topic: {e}")))?;
    }
    let min_severity = match &args.severity {
        Some(s) => Some(s.parse::<Severity>().map_err(|_| {
            usage(format!(
                "invalid --severity {s:?}: use debug, info, warning or error"
            ))
        })?),
        None => None,
    };
    if args.limit == 0 || args.limit > MAX_LIMIT {
        return Err(usage(format!("--limit must be between 1 and {MAX_LIMIT}")));
    }
    Ok(Query {
        system: args.system.clone(),
        topic: args.topic.clone(),
        agent: args.agent.clone(),
        grep: args.grep.clone().filter(|g| !g.is_empty()),
        min_severity,
        since,
        until,
        limit: args.limit,
    })
}

/// Runs `signalbox history`.
pub fn run(config: &Config, args: HistoryArgs) -> CliResult {
    let q = query(&args)?;
    let db = match &args.db {
        Some(db) => db.clone(),
        None => {
            history::settings(config)
                .map_err(|e| CliError::usage(anyhow!(e)))?
                .db
        }
    };
    let store = Store::open_reader(&db).map_err(CliError::failure)?;
    let found = store.query(&q).map_err(CliError::failure)?;
    let stdout = std::io::stdout();
    let colour = !args.json && stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for m in &found.messages {
        if args.json {
            write_json(&mut out, m)
        } else {
            write_line(&mut out, m, colour)
        }
        .context("writing to standard output")?;
    }
    out.flush().context("writing to standard output")?;
    if found.truncated && !args.json {
        eprintln!(
            "(older matches not shown: raise --limit {} or narrow with --since)",
            args.limit
        );
    }
    if found.messages.is_empty() && !args.json {
        eprintln!("no matching messages in {}", db.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn write_line(out: &mut impl Write, m: &StoredMessage, colour: bool) -> std::io::Result<()> {
    let stamp = m.time.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S%.3f");
    if colour {
        let sev = match m.severity {
            Severity::Error => "\x1b[31m",
            Severity::Warning => "\x1b[33m",
            Severity::Debug => "\x1b[2m",
            Severity::Info => "",
        };
        let reset = if sev.is_empty() { "" } else { "\x1b[0m" };
        writeln!(
            out,
            "\x1b[2m{stamp}\x1b[0m \x1b[36m{}\x1b[0m {sev}{}{reset}",
            m.topic, m.summary
        )
    } else {
        writeln!(out, "{stamp} {} {}", m.topic, m.summary)
    }
}

fn write_json(out: &mut impl Write, m: &StoredMessage) -> std::io::Result<()> {
    let (kind, payload) = payload_json(&m.payload);
    let doc = serde_json::json!({
        "id": m.id,
        "time": signalbox_common::envelope::format_time(&m.time),
        "topic": m.topic,
        "system": m.system,
        "agent": m.agent,
        "severity": m.severity.as_str(),
        "summary": m.summary,
        "kind": kind,
        "payload": payload,
    });
    serde_json::to_writer(&mut *out, &doc)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: HistoryArgs,
    }

    fn parse(argv: &[&str]) -> Result<Query, String> {
        let wrap = Wrap::try_parse_from(std::iter::once("history").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        query(&wrap.args).map_err(|e| format!("{:#}", e.error))
    }

    #[test]
    fn flags_become_a_query() {
        let q = parse(&[
            "--system",
            "git",
            "--topic",
            "a/+/b",
            "--grep",
            "x",
            "--severity",
            "warning",
            "-n",
            "5",
        ])
        .unwrap();
        assert_eq!(q.system.as_deref(), Some("git"));
        assert_eq!(q.topic.as_deref(), Some("a/+/b"));
        assert_eq!(q.min_severity, Some(Severity::Warning));
        assert_eq!(q.limit, 5);
        assert!(parse(&["--since", "1h"]).unwrap().since.is_some());
    }

    #[test]
    fn bad_flags_are_one_line_errors() {
        for (argv, needle) in [
            (vec!["--since", "soon"], "--since: invalid time"),
            (vec!["--until", "x"], "--until: invalid time"),
            (vec!["--since", "1h", "--until", "2h"], "before --until"),
            (vec!["--topic", "a/#/b"], "--topic"),
            (vec!["--severity", "loud"], "invalid --severity"),
            (vec!["--limit", "0"], "--limit"),
        ] {
            let e = parse(&argv).unwrap_err();
            assert!(e.contains(needle), "{argv:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }
}
