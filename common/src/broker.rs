//! The embedded MQTT broker (rumqttd), for one host, the demo and tests.
//!
//! It listens on 127.0.0.1 by default, on a given port or an ephemeral one
//! that it reports. What it does not do: persistence (retained messages and
//! sessions live in memory and are lost when it stops), ACLs, clustering.
//! For those, run mosquitto or a broker cluster and point `--broker` at it.
//!
//! It can require a user name and password of every client
//! ([`EmbeddedBroker::start_with_users`], `signalbox broker --passwords
//! FILE`). It does not do TLS: rumqttd's TLS listener insists on client
//! certificates and adds a certificate parser to every build; a bus that
//! crosses hosts belongs on mosquitto with TLS (deploy/mosquitto.conf).

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
            thread: Some(thread),
        };
        embedded.wait_ready(addr)?;
        if let Some(v5) = addr_v5 {
            embedded.wait_ready(v5)?;
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
}
