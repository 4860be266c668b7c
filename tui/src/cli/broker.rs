//! `signalbox broker`: the embedded broker as a foreground daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use signalbox_common::broker::{BrokerOptions, EmbeddedBroker, ServerTls, TlsOptions};

use super::{CliError, CliResult};

/// Where the plain MQTT 3.1.1 listener goes when none is given.
const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1883);
/// Where MQTT over TLS goes when only the certificate is given.
const DEFAULT_LISTEN_TLS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8883);
/// A plain listener that only the TLS relay needs: loopback, a free port.
const INTERNAL_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Flags of `signalbox broker`.
#[derive(Debug, Args)]
#[command(after_help = "\
The embedded broker keeps retained messages and sessions in memory only and has
no ACLs: for durability, access control or a bus across hosts, run mosquitto
(deploy/mosquitto.conf) or a broker cluster and point --broker at it. With
--passwords every client must log in (a wrong password shows as a closed
connection: rumqttd gives no reason).

TLS: with --tls-cert and --tls-key it accepts MQTT over TLS on --listen-tls
(default 127.0.0.1:8883) and relays each connection to its plain listener.
Without --listen, that plain listener is internal, on a free 127.0.0.1 port;
with --listen, plain MQTT is offered there too. Either way any local user can
reach the plain port (passwords still apply there). --tls-client-ca requires a
client certificate signed by that CA on the TLS port.

Examples:
  signalbox broker                          MQTT 3.1.1 on 127.0.0.1:1883
  signalbox broker --listen 127.0.0.1:0     on a free port (printed)
  signalbox broker --listen-v5 127.0.0.1:1884
  signalbox broker --passwords /etc/signalbox/broker-passwords   (user:password lines, mode 0600)
  signalbox broker --listen-tls 0.0.0.0:8883 --tls-cert bus.pem --tls-key bus.key --passwords FILE
  signalbox broker --tls-cert bus.pem --tls-key bus.key --tls-client-ca ca.pem   (mutual TLS)")]
pub struct BrokerArgs {
    /// Address of the plain MQTT 3.1.1 listener (port 0 picks a free one) [default: 127.0.0.1:1883, or with TLS an internal 127.0.0.1 port]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Also listen for MQTT 5 clients on this address
    #[arg(long, value_name = "ADDR")]
    listen_v5: Option<SocketAddr>,
    /// Require a log-in: a file of user:password lines (mode 0600)
    #[arg(long, value_name = "FILE")]
    passwords: Option<PathBuf>,
    /// Address for MQTT 3.1.1 over TLS (port 0 picks a free one) [default with --tls-cert: 127.0.0.1:8883]
    #[arg(long, value_name = "ADDR", requires = "tls_cert")]
    listen_tls: Option<SocketAddr>,
    /// Address for MQTT 5 over TLS
    #[arg(long, value_name = "ADDR", requires = "tls_cert")]
    listen_tls_v5: Option<SocketAddr>,
    /// The broker's TLS certificate (PEM; its own first, then intermediates)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM, unencrypted)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require TLS clients to present a certificate signed by a CA in this file (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

/// Runs the broker until SIGINT or SIGTERM.
pub async fn run(args: BrokerArgs) -> CliResult {
    // Every file is read and checked before anything listens: a bad one is
    // a usage error, like a bad password file.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let server = ServerTls::load(cert, key, args.tls_client_ca.as_deref())
                .map_err(CliError::usage)?;
            let mut tls = TlsOptions::new(DEFAULT_LISTEN_TLS, server);
            if args.listen_tls.is_some() || args.listen_tls_v5.is_some() {
                tls.listen = args.listen_tls;
                tls.listen_v5 = args.listen_tls_v5;
            }
            Some(tls)
        }
        // clap requires both or neither.
        _ => None,
    };
    // With TLS, a plain listener not asked for is internal: the relay's
    // target, on a free loopback port.
    let tls_v5 = tls.as_ref().is_some_and(|t| t.listen_v5.is_some());
    let listen_internal = args.listen.is_none() && tls.is_some();
    let listen = match args.listen {
        Some(addr) => addr,
        None if listen_internal => INTERNAL_LISTEN,
        None => DEFAULT_LISTEN,
    };
    let listen_v5_internal = args.listen_v5.is_none() && tls_v5;
    let listen_v5 = args.listen_v5.or(tls_v5.then_some(INTERNAL_LISTEN));
    let options = BrokerOptions { listen, listen_v5 };
    let users = match &args.passwords {
        Some(path) => {
            signalbox_common::broker::read_password_file(path).map_err(CliError::usage)?
        }
        None => Default::default(),
    };
    let count = users.len();
    let tls_on = tls.is_some();
    let broker = tokio::task::spawn_blocking(move || match &tls {
        Some(tls) => EmbeddedBroker::start_with_tls(&options, &users, tls),
        None => EmbeddedBroker::start_with_users(&options, &users),
    })
    .await
    .map_err(CliError::failure)?
    .map_err(CliError::failure)?;
    let client_certs = if args.tls_client_ca.is_some() {
        "client certificates required"
    } else {
        "no client certificate asked"
    };
    if let Some(url) = broker.tls_url() {
        println!("signalbox broker: MQTT 3.1.1 over TLS on {url} ({client_certs})");
    }
    if let Some(url) = broker.tls_url_v5() {
        println!("signalbox broker: MQTT 5 over TLS on {url} ({client_certs})");
    }
    let internal_note = " (internal: TLS is relayed to it; local users can reach it)";
    println!(
        "signalbox broker: MQTT 3.1.1 on {}{}",
        broker.url(),
        if listen_internal { internal_note } else { "" }
    );
    if let Some(v5) = broker.url_v5() {
        println!(
            "signalbox broker: MQTT 5 on {v5}{}",
            if listen_v5_internal {
                internal_note
            } else {
                ""
            }
        );
    }
    if count > 0 {
        println!("signalbox broker: {count} user(s) may log in; anonymous clients are refused");
    }
    let missing = if tls_on {
        "no persistence, no ACLs"
    } else {
        "no persistence, no ACLs, no TLS"
    };
    println!("signalbox broker: in-memory only ({missing}); Ctrl-C stops it");
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
