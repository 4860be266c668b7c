//! `signalbox health`: the health of every listener and bridge, as a table
//! or JSON, with a monitoring-friendly exit code (0 all well, 1 a problem,
//! 2 the broker cannot be reached).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use chrono::Utc;
use clap::Args;
use signalbox_common::config::Config;

use super::discover::{age, cut, discover, Discovery, Wanted, WILDCARD_NOTE};
use super::{CliError, CliResult, EXIT_USAGE};

/// Flags of `signalbox health`.
#[derive(Debug, Args)]
#[command(after_help = "\
Pings every listener and daemon (`_ping`), collects their health reports for a
moment, and reads each name of the `_roster` by its exact topic, so that a
listener killed outright still shows as down through its Last Will.

A report is stale when older than 3 × its interval. Exit codes: 0 all up (or
idle/stopped), 1 any down, stale, degraded, invalid or --expect'ed but never
seen, 2 the broker cannot be reached (Nagios-style: usable as a check).

Examples:
  signalbox health
  signalbox health --json | jq '.[] | select(.liveness != \"up\")'
  signalbox health --expect mail-notify --expect feed-writer
  signalbox health --watch")]
pub struct HealthArgs {
    /// One JSON array of reports (with `liveness` and `age_s`)
    #[arg(long)]
    json: bool,
    /// Refresh every 2 seconds until interrupted
    #[arg(long, conflicts_with = "json")]
    watch: bool,
    /// Fail when this listener was never seen (repeatable)
    #[arg(long, value_name = "NAME")]
    expect: Vec<String>,
    /// Seconds to collect answers after the ping
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    wait: f64,
}

/// Runs `signalbox health`.
pub async fn run(config: &Config, args: HealthArgs) -> CliResult {
    if !args.wait.is_finite() || args.wait <= 0.0 || args.wait > 60.0 {
        return Err(CliError::usage(anyhow!(
            "--wait must be between 0 and 60 seconds"
        )));
    }
    let wait = Duration::from_secs_f64(args.wait);
    let mut conn = super::connect(config, "health", |_| {})
        .await
        .map_err(|e| CliError {
            code: if e.code == EXIT_USAGE { EXIT_USAGE } else { 2 },
            error: e.error,
        })?;
    // Said once, not at every refresh of --watch.
    let mut noted = false;
    loop {
        let found = discover(
            &mut conn,
            config,
            Wanted {
                health: true,
                failed: None,
            },
            wait,
        )
        .await?;
        if found.wildcard_missed_retained && !noted {
            eprintln!("{WILDCARD_NOTE}");
            noted = true;
        }
        let (text, problems) = render(&found, &args, Utc::now());
        if args.watch {
            print!("\x1b[2J\x1b[H{text}");
        } else {
            print!("{text}");
        }
        if !args.watch {
            conn.disconnect().await;
            return Ok(if problems {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            });
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                conn.disconnect().await;
                return Ok(ExitCode::SUCCESS);
            }
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// The output and whether any problem was found.
fn render(found: &Discovery, args: &HealthArgs, now: chrono::DateTime<Utc>) -> (String, bool) {
    let mut problems = false;
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let mut table = vec![[
        "LISTENER".to_string(),
        "STATE".into(),
        "HOST".into(),
        "SEEN".into(),
        "RECV".into(),
        "DONE".into(),
        "FAIL".into(),
        "REPLAY".into(),
        "DUP".into(),
        "LAST ERROR".into(),
    ]];
    for (name, report) in &found.health {
        match report {
            Ok(r) => {
                let liveness = r.liveness(now);
                problems |= liveness.is_problem();
                let age_s = r.age(now).num_seconds();
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("liveness".into(), liveness.as_str().into());
                    o.insert("age_s".into(), age_s.into());
                }
                rows.push(v);
                let c = r.counters;
                table.push([
                    name.clone(),
                    liveness.as_str().into(),
                    r.host.clone(),
                    format!("{} ago", age(age_s)),
                    c.received.to_string(),
                    c.processed.to_string(),
                    c.failed.to_string(),
                    c.replayed.to_string(),
                    c.duplicates.to_string(),
                    cut(r.last_error.as_deref().unwrap_or("-"), 60),
                ]);
            }
            Err(reason) => {
                problems = true;
                rows.push(
                    serde_json::json!({"listener": name, "liveness": "invalid", "error": reason}),
                );
                table.push([
                    name.clone(),
                    "invalid".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    cut(reason, 60),
                ]);
            }
        }
    }
    let known = |name: &str| found.health.contains_key(name);
    let mut never_seen: Vec<&str> = args
        .expect
        .iter()
        .map(String::as_str)
        .filter(|n| !known(n))
        .collect();
    for name in found.roster.iter().flatten() {
        if !known(name) && !never_seen.contains(&name.as_str()) {
            never_seen.push(name);
        }
    }
    for name in &never_seen {
        // Expected or on the roster, yet no report at all.
        problems = true;
        rows.push(
            serde_json::json!({"listener": name, "liveness": "unknown", "error": "never seen"}),
        );
        let mut row: [String; 10] = Default::default();
        row[0] = name.to_string();
        row[1] = "unknown".into();
        row[9] = "no health report (never started, or lost with a non-persistent broker)".into();
        for cell in row.iter_mut().skip(2).take(7) {
            *cell = "-".into();
        }
        table.push(row);
    }
    if args.json {
        return (format!("{}\n", serde_json::Value::Array(rows)), problems);
    }
    if table.len() == 1 {
        return (
            "no listeners found (none running, or none reachable on this broker)\n".into(),
            problems,
        );
    }
    let mut widths = [0usize; 10];
    for row in &table {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 9 {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    (out, problems)
}
