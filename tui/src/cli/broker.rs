//! `signalbox broker`: the embedded broker as a foreground daemon.

use std::net::SocketAddr;

use clap::Args;
use signalbox_common::broker::{BrokerOptions, EmbeddedBroker};

use super::{CliError, CliResult};

/// Flags of `signalbox broker`.
#[derive(Debug, Args)]
#[command(after_help = "\
The embedded broker keeps retained messages and sessions in memory only, has no
ACLs and no TLS: for durability, access control, encryption or more than one
host, run mosquitto (deploy/mosquitto.conf) or a broker cluster and point
--broker at it. With --passwords every client must log in (a wrong password
shows as a closed connection: rumqttd gives no reason).

Examples:
  signalbox broker                          MQTT 3.1.1 on 127.0.0.1:1883
  signalbox broker --listen 127.0.0.1:0     on a free port (printed)
  signalbox broker --listen-v5 127.0.0.1:1884
  signalbox broker --passwords /etc/signalbox/broker-passwords   (user:password lines, mode 0600)")]
pub struct BrokerArgs {
    /// Address of the MQTT 3.1.1 listener (port 0 picks a free one)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1883")]
    listen: SocketAddr,
    /// Also listen for MQTT 5 clients on this address
    #[arg(long, value_name = "ADDR")]
    listen_v5: Option<SocketAddr>,
    /// Require a log-in: a file of user:password lines (mode 0600)
    #[arg(long, value_name = "FILE")]
    passwords: Option<std::path::PathBuf>,
}

/// Runs the broker until SIGINT or SIGTERM.
pub async fn run(args: BrokerArgs) -> CliResult {
    let options = BrokerOptions {
        listen: args.listen,
        listen_v5: args.listen_v5,
    };
    let users = match &args.passwords {
        Some(path) => {
            signalbox_common::broker::read_password_file(path).map_err(CliError::usage)?
        }
        None => Default::default(),
    };
    let count = users.len();
    let broker =
        tokio::task::spawn_blocking(move || EmbeddedBroker::start_with_users(&options, &users))
            .await
            .map_err(CliError::failure)?
            .map_err(CliError::failure)?;
    println!("signalbox broker: MQTT 3.1.1 on {}", broker.url());
    if let Some(v5) = broker.url_v5() {
        println!("signalbox broker: MQTT 5 on {v5}");
    }
    if count > 0 {
        println!("signalbox broker: {count} user(s) may log in; anonymous clients are refused");
    }
    println!("signalbox broker: in-memory only (no persistence, no ACLs, no TLS); Ctrl-C stops it");
    let mut watcher = tokio::task::spawn_blocking(move || broker.wait());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(CliError::failure)?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        result = &mut watcher => {
            result.map_err(CliError::failure)?.map_err(CliError::failure)?;
            return Err(CliError::failure(anyhow::anyhow!("the embedded broker stopped")));
        }
    }
    eprintln!("signalbox broker: stopping");
    // rumqttd cannot be stopped gracefully; leaving the process ends it.
    std::process::exit(0)
}
