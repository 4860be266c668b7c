//! fault-listener: a listener process for the fault tests
//! (`tests/tests/faults.rs`), built on the real listener runtime.
//!
//! Each message it finishes is appended to a ledger file as one line,
//! `ID<TAB>TOPIC<TAB>SUMMARY<TAB>UNIX_MS`, in one `write` on a file opened
//! for appending, so a SIGKILL leaves whole lines only. The ledger is what
//! the tests count: lost (never written), processed twice (written twice),
//! order per source.
//!
//! Usage: fault-listener BROKER_URL STATE_DIR LEDGER FILTER [DELAY_MS] [NAME]
//!
//! DELAY_MS is the work each message takes before its line is written
//! (default 0). SIGTERM or SIGINT stop it gracefully: the message in hand
//! is finished first. Environment: `SIGNALBOX_*` settings apply (e.g.
//! `SIGNALBOX_RESEND_WINDOW`), `FAULT_HEALTH_INTERVAL` sets the health
//! interval (default 1 s); `SIGNALBOX_TEST_LOG=info` logs to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signalbox_common::config::{Config, Overrides};
use signalbox_common::listener::{self, Delivery, ListenerOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: fault-listener BROKER_URL STATE_DIR LEDGER FILTER [DELAY_MS] [NAME]");
        std::process::exit(2);
    }
    if let Ok(filter) = std::env::var("SIGNALBOX_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let state = PathBuf::from(&args[1]);
    let delay = Duration::from_millis(args.get(4).and_then(|d| d.parse().ok()).unwrap_or(0));
    let name = args.get(5).cloned().unwrap_or_else(|| "fault".into());
    std::fs::create_dir_all(&state).expect("state dir");
    let empty = state.join("empty-config.toml");
    std::fs::write(&empty, "").expect("config file");
    let flags = Overrides {
        config_file: Some(empty),
        broker: Some(args[0].clone()),
        state_dir: Some(state.clone()),
        health_interval: Some(
            std::env::var("FAULT_HEALTH_INTERVAL")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1),
        ),
        ..Default::default()
    };
    let config = Config::resolve_with(&flags, |k| std::env::var(k).ok()).expect("config");
    let ledger = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args[2])
        .expect("ledger");
    let ledger = Arc::new(Mutex::new(ledger));
    let options = ListenerOptions::new(&name, vec![args[3].clone()], &config);
    let handler = move |d: Delivery| {
        let ledger = ledger.clone();
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let summary = d.envelope().map(|e| e.summary.clone()).unwrap_or_default();
            let millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|t| t.as_millis())
                .unwrap_or(0);
            let line = format!("{}\t{}\t{}\t{}\n", d.id, d.topic, summary, millis);
            if let Ok(mut file) = ledger.lock() {
                file.write_all(line.as_bytes())
                    .map_err(|e| listener::HandlerError::transient(format!("ledger: {e}")))?;
            }
            Ok(None)
        }
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    match listener::run(&config, options, handler, shutdown).await {
        Ok(summary) => eprintln!("fault-listener: stopped: {summary:?}"),
        Err(e) => {
            eprintln!("fault-listener: {e}");
            std::process::exit(1);
        }
    }
}
