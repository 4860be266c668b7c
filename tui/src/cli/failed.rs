//! `signalbox failed list|show|ack|replay`: the operator's view of failed
//! messages. Acknowledge deletes a record (empty retained publish); replay
//! asks the listener to run its handler again. Both publish an `_audit`
//! envelope naming the operator.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use signalbox_common::config::Config;
use signalbox_common::envelope::format_time;
use signalbox_common::failed::{Outcome, ReplayOutcome, ReplayRequest};
use signalbox_common::mqtt::{Connection, Publish, Qos};
use signalbox_common::topic;

use super::discover::{cut, discover, Discovery, Wanted, WILDCARD_NOTE};
use super::{CliError, CliResult};
use crate::operator::{self, operator_name};

use crate::operator::CONFIRM;

/// Flags of `signalbox failed`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  signalbox failed list
  signalbox failed list --listener mail-notify --json
  signalbox failed show 01a20ef0-9f1b-7edc-8eb9-155c24cbc20f
  signalbox failed ack 01a20ef0-9f1b-7edc-8eb9-155c24cbc20f
  signalbox failed ack --listener mail-notify --all
  signalbox failed replay --listener mail-notify --all --wait 30")]
pub struct FailedArgs {
    #[command(subcommand)]
    action: Action,
    /// Seconds to collect records after the ping
    #[arg(long, global = true, value_name = "SECS", default_value_t = 1.0)]
    collect: f64,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List failure records
    List {
        /// Only this listener's records
        #[arg(long, value_name = "L")]
        listener: Option<String>,
        /// One JSON array of records
        #[arg(long)]
        json: bool,
    },
    /// Show one record in full (JSON)
    Show {
        /// The message id
        id: String,
    },
    /// Acknowledge (dismiss) records
    Ack(Targets),
    /// Ask listeners to run their handler again on records
    Replay {
        #[command(flatten)]
        targets: Targets,
        /// Wait up to SECS for the outcomes, print them, exit 1 if any still failed
        #[arg(long, value_name = "SECS")]
        wait: Option<f64>,
    },
}

#[derive(Debug, Args)]
struct Targets {
    /// Message ids
    #[arg(value_name = "ID", required_unless_present = "all")]
    ids: Vec<String>,
    /// Only records of this listener (required with --all)
    #[arg(long, value_name = "L")]
    listener: Option<String>,
    /// Every record of --listener
    #[arg(long, requires = "listener", conflicts_with = "ids")]
    all: bool,
}

/// Runs `signalbox failed …`.
pub async fn run(config: &Config, args: FailedArgs) -> CliResult {
    if !args.collect.is_finite() || args.collect <= 0.0 || args.collect > 60.0 {
        return Err(CliError::usage(anyhow!(
            "--collect must be between 0 and 60 seconds"
        )));
    }
    let collect = Duration::from_secs_f64(args.collect);
    let listener = match &args.action {
        Action::List { listener, .. } => listener.clone(),
        Action::Ack(t) | Action::Replay { targets: t, .. } => t.listener.clone(),
        Action::Show { .. } => None,
    };
    if let Some(l) = &listener {
        if l.is_empty() || l.contains(['/', '+', '#']) {
            return Err(CliError::usage(anyhow!("invalid --listener {l:?}")));
        }
    }
    let mut conn = super::connect(config, "failed", |_| {}).await?;
    let found = discover(
        &mut conn,
        config,
        Wanted {
            health: false,
            failed: Some(listener.as_deref()),
        },
        collect,
    )
    .await?;
    if found.wildcard_missed_retained {
        eprintln!("{WILDCARD_NOTE}");
    }
    let result = match args.action {
        Action::List { json, .. } => list(&found, json),
        Action::Show { id } => show(&found, &id),
        Action::Ack(targets) => ack(&conn, config, &found, &targets).await,
        Action::Replay { targets, wait } => replay(&mut conn, config, &found, &targets, wait).await,
    };
    conn.disconnect().await;
    result
}

fn list(found: &Discovery, json: bool) -> CliResult {
    if json {
        let rows: Vec<serde_json::Value> = found
            .failed
            .iter()
            .map(|((listener, id), r)| match r {
                Ok(r) => serde_json::to_value(r).unwrap_or_default(),
                Err(e) => serde_json::json!({"listener": listener, "id": id, "invalid": e}),
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    if found.failed.is_empty() {
        println!("no failed messages");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36}  {:<16}  {:>3}  {:<24}  SUMMARY / ERROR",
        "ID", "LISTENER", "TRY", "LAST FAILED"
    );
    for ((listener, id), r) in &found.failed {
        match r {
            Ok(r) => println!(
                "{id:<36}  {:<16}  {:>3}  {:<24}  {} — {}",
                cut(listener, 16),
                r.attempts,
                format_time(&r.last_failed),
                cut(&r.summary(), 60),
                cut(&r.error, 80)
            ),
            Err(e) => println!(
                "{id:<36}  {:<16}  {:>3}  {:<24}  invalid record: {}",
                cut(listener, 16),
                "-",
                "-",
                cut(e, 80)
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(found: &Discovery, id: &str) -> CliResult {
    let matching: Vec<_> = found.failed.iter().filter(|((_, i), _)| i == id).collect();
    let Some(((listener, _), record)) = matching.first() else {
        return Err(CliError::failure(anyhow!("no failure record with id {id}")));
    };
    match record {
        Ok(r) => println!("{}", serde_json::to_string_pretty(r).unwrap_or_default()),
        Err(e) => println!("invalid failure record of {listener}: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The (listener, id) pairs a command acts on.
fn resolve(found: &Discovery, targets: &Targets) -> Result<Vec<(String, String)>, CliError> {
    if targets.all {
        let l = targets.listener.clone().unwrap_or_default();
        return Ok(found
            .failed
            .keys()
            .filter(|(listener, _)| *listener == l)
            .cloned()
            .collect());
    }
    let mut out = Vec::new();
    for id in &targets.ids {
        let hits: Vec<&(String, String)> = found
            .failed
            .keys()
            .filter(|(l, i)| i == id && targets.listener.as_ref().is_none_or(|want| want == l))
            .collect();
        if hits.is_empty() {
            return Err(CliError::failure(anyhow!("no failure record with id {id}")));
        }
        out.extend(hits.into_iter().cloned());
    }
    Ok(out)
}

async fn audit(
    conn: &Connection,
    config: &Config,
    summary: String,
    body: serde_json::Value,
) -> Result<(), CliError> {
    operator::audit(
        &conn.publisher(),
        &config.prefix.value,
        "cli",
        &operator_name(),
        &summary,
        body,
    )
    .await
    .map_err(|e| CliError::failure(anyhow!("the audit event failed: {e}")))
}

fn by_listener(pairs: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (l, id) in pairs {
        map.entry(l.clone()).or_default().push(id.clone());
    }
    map
}

async fn ack(
    conn: &Connection,
    config: &Config,
    found: &Discovery,
    targets: &Targets,
) -> CliResult {
    let pairs = resolve(found, targets)?;
    let prefix = &config.prefix.value;
    let topics: Vec<String> = pairs
        .iter()
        .map(|(l, id)| topic::failed_topic(prefix, l, id))
        .collect();
    operator::clear_retained(&conn.publisher(), &topics)
        .await
        .map_err(|e| CliError::failure(anyhow!("acknowledge failed: {e}")))?;
    for (l, ids) in by_listener(&pairs) {
        let summary = format!(
            "{} acknowledged {} failed message{} of {l}",
            operator_name(),
            ids.len(),
            if ids.len() == 1 { "" } else { "s" }
        );
        audit(
            conn,
            config,
            summary,
            serde_json::json!({"action": "ack", "listener": l, "ids": ids}),
        )
        .await?;
    }
    println!(
        "acknowledged {} failed message{}",
        pairs.len(),
        if pairs.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

async fn replay(
    conn: &mut Connection,
    config: &Config,
    found: &Discovery,
    targets: &Targets,
    wait: Option<f64>,
) -> CliResult {
    let wait = super::optional_seconds("--wait", wait)?;
    let pairs = resolve(found, targets)?;
    if pairs.is_empty() {
        println!("nothing to replay");
        return Ok(ExitCode::SUCCESS);
    }
    let prefix = &config.prefix.value;
    let reply_topic = topic::build(
        prefix,
        &config.env.value,
        "cli",
        &["replies"],
        &uuid::Uuid::now_v7().to_string(),
    );
    if wait.is_some() {
        conn.subscribe(&[(reply_topic.clone(), Qos::AtLeastOnce)], CONFIRM)
            .await
            .map_err(CliError::failure)?;
    }
    let groups = by_listener(&pairs);
    for (l, ids) in &groups {
        let request = ReplayRequest {
            ids: ids.clone(),
            all: false,
            reply_to: wait.map(|_| reply_topic.clone()),
        };
        let mut p = Publish::new(
            topic::replay_topic(prefix, l),
            request.to_vec(),
            Qos::AtLeastOnce,
            false,
        );
        if wait.is_some() {
            p.response_topic = Some(reply_topic.clone());
        }
        conn.publish_confirmed(p, CONFIRM)
            .await
            .map_err(CliError::failure)?;
        let summary = format!(
            "{} asked {l} to replay {} failed message{}",
            operator_name(),
            ids.len(),
            if ids.len() == 1 { "" } else { "s" }
        );
        audit(
            conn,
            config,
            summary,
            serde_json::json!({"action": "replay", "listener": l, "ids": ids}),
        )
        .await?;
    }
    let Some(wait) = wait else {
        println!(
            "replay requested for {} message{}",
            pairs.len(),
            if pairs.len() == 1 { "" } else { "s" }
        );
        return Ok(ExitCode::SUCCESS);
    };
    let mut pending: BTreeSet<String> = groups.keys().cloned().collect();
    let mut any_failed = false;
    let deadline = tokio::time::Instant::now() + wait;
    while !pending.is_empty() {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, conn.recv()).await else {
            break;
        };
        if message.topic != reply_topic {
            continue;
        }
        let Ok(outcome) = serde_json::from_slice::<ReplayOutcome>(&message.payload) else {
            continue;
        };
        pending.remove(&outcome.listener);
        for r in outcome.results {
            any_failed |= r.outcome != Outcome::Replayed;
            let detail = match (r.outcome, &r.error, r.attempts) {
                (Outcome::Failed, Some(e), Some(a)) => format!(" (attempt {a}: {e})"),
                (Outcome::Capped, _, Some(a)) => {
                    format!(" ({a} attempts: acknowledge it, or fix and re-publish)")
                }
                _ => String::new(),
            };
            let word = match r.outcome {
                Outcome::Replayed => "replayed",
                Outcome::Failed => "failed",
                Outcome::Capped => "capped",
                Outcome::Unknown => "unknown",
            };
            println!("{}  {}  {word}{detail}", r.id, outcome.listener);
        }
    }
    for l in &pending {
        any_failed = true;
        println!(
            "{l}: no answer within {:.0} s (is it running? see `signalbox health`)",
            wait.as_secs_f64()
        );
    }
    Ok(if any_failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
