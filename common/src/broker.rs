//! The embedded MQTT broker (rumqttd), for one host, the demo and tests.
//!
//! It listens on 127.0.0.1 by default, on a given port or an ephemeral one
//! that it reports. What it does not do: persistence (retained messages and
//! sessions live in memory and are lost when it stops), ACLs, clustering.
//! For those, run mosquitto or a broker cluster and point `--broker` at it.
//!
//! It can require a user name and password of every client
//! ([`EmbeddedBroker::start_with_users`], `signalbox broker --passwords
//! FILE`), and it can offer TLS ([`EmbeddedBroker::start_with_tls`],
//! `signalbox broker --tls-cert FILE --tls-key FILE`), with client
//! certificates required when given a client CA (`--tls-client-ca FILE`).
//!
//! TLS is terminated in this process, in front of rumqttd (module `tls`):
//! rumqttd's own TLS listener insists on client certificates. Each TLS
//! connection is relayed to rumqttd's plain listener, so that listener
//! always exists — on an ephemeral 127.0.0.1 port when only TLS is wanted.
//! What that means:
//! - any local user can reach the plain port without TLS and, with mutual
//!   TLS, without a client certificate: TLS protects the network, not the
//!   host (passwords, when set, apply on every port);
//! - a client certificate only decides who may connect: it is not a user
//!   name, and there are still no ACLs;
//! - rumqttd sees every TLS client as coming from 127.0.0.1.
//!
//! A bus that crosses hosts, or needs ACLs or persistence, still belongs on
//! mosquitto with TLS (deploy/mosquitto.conf).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod tls;

pub use tls::{ServerTls, TlsOptions, HANDSHAKE_TIMEOUT, MAX_TLS_CONNECTIONS};

/// How long the broker may take to accept its first connection.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest payload the embedded broker accepts (bounded so that one
/// runaway publisher cannot exhaust memory; a bus message is small).
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// Errors starting the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        reason: String,
    },
    /// The password file cannot be used.
    #[error("password file {path}: {reason}")]
    Passwords {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the line).
        reason: String,
    },
    /// A TLS certificate, key or CA file cannot be used.
    #[error("{what} {path}: {reason}")]
    TlsFile {
        /// Which file it is ("TLS certificate", "TLS key", "client CA
        /// file").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rumqttd rejected its configuration or stopped at once.
    #[error("the embedded broker failed to start: {reason}")]
    Start {
        /// What went wrong.
        reason: String,
    },
}

/// Where the embedded broker should listen.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// MQTT 3.1.1 listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Optional MQTT 5 listener; port 0 picks a free port.
    pub listen_v5: Option<SocketAddr>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            listen_v5: None,
        }
    }
}

impl BrokerOptions {
    /// Ephemeral ports on 127.0.0.1 for both protocols (tests, the demo).
    pub fn ephemeral() -> Self {
        BrokerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            listen_v5: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        }
    }
}

/// A running embedded broker. rumqttd has no way to stop it: it runs until
/// the process exits.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    addr_v5: Option<SocketAddr>,
    /// The MQTT 3.1.1 TLS listener, when TLS was asked for.
    tls_addr: Option<SocketAddr>,
    /// The MQTT 5 TLS listener, when asked for.
    tls_addr_v5: Option<SocketAddr>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl EmbeddedBroker {
    /// Starts the broker on its own threads and returns once it accepts
    /// connections.
    pub fn start(options: &BrokerOptions) -> Result<EmbeddedBroker, BrokerError> {
        Self::start_with_users(options, &BTreeMap::new())
    }

    /// Like [`EmbeddedBroker::start`], requiring every client to log in as
    /// one of `users` (user name → password) when it is not empty. rumqttd
    /// closes a connection with wrong credentials without a CONNACK: the
    /// client sees the connection closed, not a reason.
    pub fn start_with_users(
        options: &BrokerOptions,
        users: &BTreeMap<String, String>,
    ) -> Result<EmbeddedBroker, BrokerError> {
        Self::start_inner(options, users, None)
    }

    /// Like [`EmbeddedBroker::start_with_users`], also accepting MQTT over
    /// TLS on `tls.listen` (relayed to `options.listen`) and `tls.listen_v5`
    /// (relayed to `options.listen_v5`, which must be set). The plain
    /// listeners stay open: put them on `127.0.0.1:0` when only TLS is
    /// wanted.
    pub fn start_with_tls(
        options: &BrokerOptions,
        users: &BTreeMap<String, String>,
        tls: &TlsOptions,
    ) -> Result<EmbeddedBroker, BrokerError> {
        Self::start_inner(options, users, Some(tls))
    }

    fn start_inner(
        options: &BrokerOptions,
        users: &BTreeMap<String, String>,
        tls: Option<&TlsOptions>,
    ) -> Result<EmbeddedBroker, BrokerError> {
        // The TLS listeners are bound first and kept: their addresses are
        // known, and a taken port fails before rumqttd (which cannot be
        // stopped) starts.
        let mut tls_listeners = (None, None);
        if let Some(tls) = tls {
            if tls.listen.is_none() && tls.listen_v5.is_none() {
                return Err(BrokerError::Start {
                    reason: "TLS asked for without an address to listen on".into(),
                });
            }
            if tls.listen_v5.is_some() && options.listen_v5.is_none() {
                return Err(BrokerError::Start {
                    reason: "MQTT 5 over TLS needs an MQTT 5 listener to relay to (listen_v5)"
                        .into(),
                });
            }
            tls_listeners = (
                tls.listen.map(bind).transpose()?,
                tls.listen_v5.map(bind).transpose()?,
            );
        }
        let addr = reserve(options.listen)?;
        let addr_v5 = options.listen_v5.map(reserve).transpose()?;
        let mut config = rumqttd_config(addr, addr_v5)?;
        if !users.is_empty() {
            let auth: HashMap<String, String> =
                users.iter().map(|(u, p)| (u.clone(), p.clone())).collect();
            for servers in [&mut config.v4, &mut config.v5].into_iter().flatten() {
                for server in servers.values_mut() {
                    server.connections.auth = Some(auth.clone());
                }
            }
        }
        let mut broker = rumqttd::Broker::new(config);
        let thread = std::thread::Builder::new()
            .name("signalbox-broker".into())
            .spawn(move || broker.start().map_err(|e| e.to_string()))
            .map_err(|e| BrokerError::Start {
                reason: e.to_string(),
            })?;
        let mut embedded = EmbeddedBroker {
            addr,
            addr_v5,
            tls_addr: None,
            tls_addr_v5: None,
            thread: Some(thread),
        };
        embedded.wait_ready(addr)?;
        if let Some(v5) = addr_v5 {
            embedded.wait_ready(v5)?;
        }
        if let Some(tls) = tls {
            let local_addr = |l: &TcpListener| {
                l.local_addr().map_err(|e| BrokerError::Start {
                    reason: format!("TLS listener: {e}"),
                })
            };
            let mut routes = Vec::new();
            if let Some(listener) = tls_listeners.0 {
                embedded.tls_addr = Some(local_addr(&listener)?);
                routes.push(tls::Route {
                    listener,
                    backend: reachable(addr),
                });
            }
            if let (Some(listener), Some(v5)) = (tls_listeners.1, addr_v5) {
                embedded.tls_addr_v5 = Some(local_addr(&listener)?);
                routes.push(tls::Route {
                    listener,
                    backend: reachable(v5),
                });
            }
            tls::spawn(routes, tls)?;
        }
        Ok(embedded)
    }

    /// The MQTT 3.1.1 address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MQTT 5 address, when one was asked for.
    pub fn addr_v5(&self) -> Option<SocketAddr> {
        self.addr_v5
    }

    /// `mqtt://host:port` of the MQTT 3.1.1 listener.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// `mqtt://host:port` of the MQTT 5 listener.
    pub fn url_v5(&self) -> Option<String> {
        self.addr_v5.map(|a| format!("mqtt://{a}"))
    }

    /// The MQTT 3.1.1 TLS address, when TLS was asked for.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The MQTT 5 TLS address, when asked for.
    pub fn tls_addr_v5(&self) -> Option<SocketAddr> {
        self.tls_addr_v5
    }

    /// `mqtts://host:port` of the MQTT 3.1.1 TLS listener. Clients must
    /// connect with a host name the certificate names.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_addr.map(|a| format!("mqtts://{a}"))
    }

    /// `mqtts://host:port` of the MQTT 5 TLS listener.
    pub fn tls_url_v5(&self) -> Option<String> {
        self.tls_addr_v5.map(|a| format!("mqtts://{a}"))
    }

    /// Blocks the calling thread while the broker runs; returns its error
    /// if its servers stop.
    pub fn wait(mut self) -> Result<(), BrokerError> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Ok(()))) | None => Ok(()),
            Some(Ok(Err(reason))) => Err(BrokerError::Start { reason }),
            Some(Err(_)) => Err(BrokerError::Start {
                reason: "the broker thread panicked".into(),
            }),
        }
    }

    fn wait_ready(&mut self, addr: SocketAddr) -> Result<(), BrokerError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                let reason = match self.thread.take().map(JoinHandle::join) {
                    Some(Ok(Err(reason))) => reason,
                    _ => "its servers stopped at once (is the address in use?)".into(),
                };
                return Err(BrokerError::Start { reason });
            }
            if Instant::now() > deadline {
                return Err(BrokerError::Start {
                    reason: format!(
                        "not accepting connections on {addr} after {STARTUP_TIMEOUT:?}"
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Reads the embedded broker's password file: one `user:password` per
/// line, `#` comments. The passwords are in clear text, so the file must
/// be readable by its owner only (mode 0600).
pub fn read_password_file(path: &Path) -> Result<BTreeMap<String, String>, BrokerError> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |reason: String| BrokerError::Passwords {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "readable by other users (mode {mode:04o}): run chmod 600 {}",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let mut users = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, password)) if !user.trim().is_empty() && !password.is_empty() => {
                users.insert(user.trim().to_string(), password.to_string());
            }
            // Never echo the line: it holds a password.
            _ => return Err(bad(format!("line {}: expected user:password", n + 1))),
        }
    }
    if users.is_empty() {
        return Err(bad("no user:password line".into()));
    }
    Ok(users)
}

/// Checks that `addr` can be listened on and resolves port 0 to a free port.
/// The socket is released again for rumqttd to bind; the window in between
/// is a few milliseconds.
fn reserve(addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let listener = TcpListener::bind(addr).map_err(|e| BrokerError::Listen {
        addr,
        reason: e.to_string(),
    })?;
    listener.local_addr().map_err(|e| BrokerError::Listen {
        addr,
        reason: e.to_string(),
    })
}

/// Binds a listener that is kept (unlike [`reserve`]).
fn bind(addr: SocketAddr) -> Result<TcpListener, BrokerError> {
    TcpListener::bind(addr).map_err(|e| BrokerError::Listen {
        addr,
        reason: e.to_string(),
    })
}

/// The address this host reaches a listener at: a wildcard address means
/// the loopback of its family.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

fn rumqttd_config(
    addr: SocketAddr,
    addr_v5: Option<SocketAddr>,
) -> Result<rumqttd::Config, BrokerError> {
    // rumqttd's own configuration format; built as TOML so that it reads
    // like the rumqttd.toml its users know.
    let server = |kind: &str, addr: SocketAddr| {
        format!(
            r#"
[{kind}.1]
name = "{kind}-1"
listen = "{addr}"
next_connection_delay_ms = 1
    [{kind}.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = {MAX_PAYLOAD}
    max_inflight_count = 1000
    dynamic_filters = true
"#
        )
    };
    let mut text = String::from(
        r#"
id = 0
[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
"#,
    );
    text.push_str(&server("v4", addr));
    if let Some(v5) = addr_v5 {
        text.push_str(&server("v5", v5));
    }
    toml::from_str(&text).map_err(|e| BrokerError::Start {
        reason: format!("bad broker configuration: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_an_ephemeral_port_and_reports_it() {
        let broker = EmbeddedBroker::start(&BrokerOptions::ephemeral()).expect("starts");
        assert_ne!(broker.addr().port(), 0);
        assert!(broker.url().starts_with("mqtt://127.0.0.1:"));
        assert!(TcpStream::connect(broker.addr()).is_ok());
        assert!(broker
            .addr_v5()
            .is_some_and(|a| TcpStream::connect(a).is_ok()));
    }

    #[test]
    fn password_files_are_private_and_well_formed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("passwords");
        std::fs::write(
            &path,
            "# users\nconsole:s3cret:with:colons\nbridge-git:pw\n",
        )
        .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let users = read_password_file(&path).expect("reads");
        assert_eq!(
            users.get("console").map(String::as_str),
            Some("s3cret:with:colons")
        );
        assert_eq!(users.len(), 2);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_password_file(&path).expect_err("open").to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::write(&path, "no-colon-secret\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = read_password_file(&path)
            .expect_err("malformed")
            .to_string();
        assert!(err.contains("line 1") && !err.contains("secret"), "{err}");
    }

    #[test]
    fn an_address_in_use_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let options = BrokerOptions {
            listen: taken.local_addr().expect("addr"),
            listen_v5: None,
        };
        let err = EmbeddedBroker::start(&options)
            .err()
            .expect("address in use");
        assert!(err.to_string().contains("cannot listen on"), "{err}");
    }

    /// A CA and a certificate it signed for 127.0.0.1, as PEM files, plus
    /// the key of another certificate (which must not fit).
    struct TestPki {
        _dir: tempfile::TempDir,
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
        other_key: PathBuf,
    }

    fn test_pki() -> TestPki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "broker test CA");
        let ca = ca.self_signed(&ca_key).expect("CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("signed");
        let other = rcgen::KeyPair::generate().expect("key");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        TestPki {
            ca: write("ca.pem", ca.pem()),
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
            other_key: write("other.key", other.serialize_pem()),
            _dir: dir,
        }
    }

    fn start_tls(pki: &TestPki, configure: impl FnOnce(&mut TlsOptions)) -> EmbeddedBroker {
        let server = ServerTls::load(&pki.cert, &pki.key, None).expect("loads");
        let mut tls = TlsOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), server);
        configure(&mut tls);
        let options = BrokerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            listen_v5: None,
        };
        EmbeddedBroker::start_with_tls(&options, &BTreeMap::new(), &tls).expect("starts")
    }

    /// Reads until the server closes; how long that took.
    fn time_until_closed(stream: &mut TcpStream) -> Duration {
        use std::io::Read;
        let started = Instant::now();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return started.elapsed(),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    panic!("not closed after {:?}", started.elapsed())
                }
                Err(_) => return started.elapsed(),
            }
        }
    }

    #[test]
    fn tls_files_that_cannot_be_used_are_errors_naming_the_file() {
        let pki = test_pki();
        let missing = pki.cert.with_file_name("missing.pem");
        let cases: [(&Path, &Path, Option<&Path>, &Path, &str); 6] = [
            (&missing, &pki.key, None, &missing, "No such file"),
            (&pki.key, &pki.key, None, &pki.key, "no PEM certificate"),
            (&pki.cert, &pki.cert, None, &pki.cert, "no PEM private key"),
            (
                &pki.cert,
                &pki.other_key,
                None,
                &pki.other_key,
                "not the key of the certificate",
            ),
            (
                &pki.cert,
                &pki.key,
                Some(&pki.key),
                &pki.key,
                "no PEM certificate",
            ),
            (
                &pki.cert,
                &pki.key,
                Some(&missing),
                &missing,
                "client CA file",
            ),
        ];
        for (cert, key, ca, named, says) in cases {
            let err = ServerTls::load(cert, key, ca)
                .expect_err("refused")
                .to_string();
            assert!(
                err.contains(&named.display().to_string()) && err.contains(says),
                "{err}"
            );
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        let garbled = pki.cert.with_file_name("garbled.pem");
        std::fs::write(
            &garbled,
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let err = ServerTls::load(&garbled, &pki.key, None)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("garbled.pem") && err.lines().count() == 1,
            "{err}"
        );
        assert!(ServerTls::load(&pki.cert, &pki.key, Some(&pki.ca))
            .expect("mutual TLS loads")
            .requires_client_certificates());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_round_trip_through_the_relay() {
        use crate::mqtt::{ConnectOptions, Connection, Publish, Qos};
        let pki = test_pki();
        let broker = start_tls(&pki, |_| {});
        let url = broker.tls_url().expect("TLS url");
        assert!(url.starts_with("mqtts://127.0.0.1:"), "{url}");
        let mut options = ConnectOptions::for_url(&url, "tls-unit").expect("url");
        options.ca_file = Some(pki.ca.clone());
        let wait = Duration::from_secs(10);
        let mut conn = Connection::connect(options)
            .await
            .expect("connects over TLS");
        conn.subscribe(&[("t/tls".into(), Qos::AtLeastOnce)], wait)
            .await
            .expect("subscribes");
        conn.publish_confirmed(
            Publish::new("t/tls", &b"through the relay"[..], Qos::AtLeastOnce, false),
            wait,
        )
        .await
        .expect("confirmed");
        let got = tokio::time::timeout(wait, conn.recv())
            .await
            .expect("delivered")
            .expect("open");
        assert_eq!(&got.payload[..], b"through the relay");
        conn.disconnect().await;
    }

    #[test]
    fn a_client_that_never_starts_the_handshake_is_dropped() {
        let pki = test_pki();
        let broker = start_tls(&pki, |tls| {
            tls.handshake_timeout = Duration::from_millis(300);
        });
        let mut silent = TcpStream::connect(broker.tls_addr().expect("TLS addr")).expect("connect");
        let took = time_until_closed(&mut silent);
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(5),
            "closed after {took:?}"
        );
    }

    #[test]
    fn connections_beyond_the_limit_are_closed_at_once() {
        let pki = test_pki();
        let broker = start_tls(&pki, |tls| {
            tls.max_connections = 1;
        });
        let addr = broker.tls_addr().expect("TLS addr");
        // The first one holds the only slot while it dawdles in the
        // handshake.
        let _first = TcpStream::connect(addr).expect("connect");
        std::thread::sleep(Duration::from_millis(100));
        let mut second = TcpStream::connect(addr).expect("connect");
        let took = time_until_closed(&mut second);
        assert!(took < Duration::from_secs(2), "closed after {took:?}");
    }

    #[test]
    fn tls_for_mqtt_5_needs_an_mqtt_5_listener() {
        let pki = test_pki();
        let server = ServerTls::load(&pki.cert, &pki.key, None).expect("loads");
        let mut tls = TlsOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), server);
        tls.listen_v5 = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        let options = BrokerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            listen_v5: None,
        };
        let err = EmbeddedBroker::start_with_tls(&options, &BTreeMap::new(), &tls)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("listen_v5"), "{err}");
    }
}
