//! TLS in front of the embedded broker.
//!
//! rumqttd's own TLS listener insists on client certificates, so signalbox
//! terminates TLS itself (tokio-rustls, with the ring provider the client
//! side already uses) and forwards each connection, as plain bytes, to
//! rumqttd's plain listener on the same host. The relay never looks at MQTT:
//! passwords, keep-alive and the CONNECT timeout are rumqttd's as on the
//! plain port.
//!
//! Bounded on purpose: a client has [`HANDSHAKE_TIMEOUT`] to finish its
//! handshake, at most [`MAX_TLS_CONNECTIONS`] are relayed at once (more are
//! closed at once rather than queued), and once either side closes, the
//! other gets [`CLOSE_GRACE`] to follow.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::BrokerError;

/// How long a client may take from connecting to a finished TLS handshake.
/// Long enough for a slow link and a client certificate; short enough that
/// clients which connect and send nothing do not pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most TLS connections relayed at once, handshakes included. Each costs
/// three file descriptors in this process (the TLS socket, the relay's
/// socket to rumqttd and rumqttd's end of it), so this stays well inside
/// a raised `ulimit -n`; a one-host bus has tens of clients, not thousands.
pub const MAX_TLS_CONNECTIONS: usize = 1024;

/// After one side of a relayed connection closed, how long the other side
/// may take to close too before the relay drops both.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Pause after a failed accept (out of file descriptors, typically), so
/// the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one "connection limit reached" warning per this interval.
const LIMIT_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The broker's TLS identity — certificate chain and key, and the CA that
/// client certificates must be signed by, if any — checked and ready.
#[derive(Clone)]
pub struct ServerTls {
    /// The rustls configuration every handshake uses.
    config: Arc<rustls::ServerConfig>,
    /// Whether clients must present a certificate (mutual TLS).
    client_auth: bool,
}

impl std::fmt::Debug for ServerTls {
    // Only what is safe to log: the configuration holds the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the certificate chain (PEM, the broker's certificate first),
    /// its private key (PEM: PKCS#8, PKCS#1 or SEC1) and, for mutual TLS,
    /// the CA certificates that client certificates must chain to. Every
    /// problem — a missing file, no PEM in it, a key that belongs to
    /// another certificate — is an error naming the file.
    pub fn load(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<ServerTls, BrokerError> {
        let chain = certificates("TLS certificate", cert)?;
        let key_pem = read("TLS key", key)?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            pem::Error::NoItemsFound => file_error(
                "TLS key",
                key,
                "no PEM private key in it (-----BEGIN PRIVATE KEY-----, RSA or EC; encrypted keys are not supported)",
            ),
            e => file_error("TLS key", key, format!("not valid PEM: {}", pem_reason(&e))),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| BrokerError::Start {
                reason: format!("TLS: {e}"),
            })?;
        let builder = match client_ca {
            Some(ca_path) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in certificates("client CA file", ca_path)? {
                    roots.add(ca).map_err(|e| {
                        file_error(
                            "client CA file",
                            ca_path,
                            format!("not a usable CA certificate: {e}"),
                        )
                    })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| file_error("client CA file", ca_path, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(chain, private_key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    file_error(
                        "TLS key",
                        key,
                        format!("not the key of the certificate in {}", cert.display()),
                    )
                }
                rustls::Error::InvalidCertificate(e) => file_error(
                    "TLS certificate",
                    cert,
                    format!("not a usable certificate ({e})"),
                ),
                e => file_error("TLS key", key, format!("not a usable private key: {e}")),
            })?;
        Ok(ServerTls {
            config: Arc::new(config),
            client_auth: client_ca.is_some(),
        })
    }

    /// Whether clients must present a certificate signed by the client CA.
    pub fn requires_client_certificates(&self) -> bool {
        self.client_auth
    }
}

/// Where the embedded broker accepts TLS, and with which identity.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// MQTT 3.1.1 over TLS, forwarded to the broker's MQTT 3.1.1 listener;
    /// port 0 picks a free port.
    pub listen: Option<SocketAddr>,
    /// MQTT 5 over TLS, forwarded to the broker's MQTT 5 listener (which
    /// must then be configured); port 0 picks a free port.
    pub listen_v5: Option<SocketAddr>,
    /// Certificate, key and client CA.
    pub server: ServerTls,
    /// How long a client may take to finish its handshake.
    pub handshake_timeout: Duration,
    /// Most TLS connections at once, handshakes included; more are closed
    /// as soon as they are accepted.
    pub max_connections: usize,
}

impl TlsOptions {
    /// MQTT 3.1.1 over TLS on `listen`, with the default limits.
    pub fn new(listen: SocketAddr, server: ServerTls) -> TlsOptions {
        TlsOptions {
            listen: Some(listen),
            listen_v5: None,
            server,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_connections: MAX_TLS_CONNECTIONS,
        }
    }
}

/// One TLS listener and the plain listener its connections go to.
pub(super) struct Route {
    /// Bound already, so that the address (and a free port) is known
    /// before rumqttd starts.
    pub listener: std::net::TcpListener,
    /// rumqttd's plain listener, as this host reaches it.
    pub backend: SocketAddr,
}

/// Starts relaying on a thread of its own, with its own runtime, so that
/// the embedded broker works the same from blocking and async callers. Like
/// rumqttd, it runs until the process exits.
pub(super) fn spawn(routes: Vec<Route>, options: &TlsOptions) -> Result<(), BrokerError> {
    let failed = |e: std::io::Error| BrokerError::Start {
        reason: format!("TLS listener: {e}"),
    };
    for route in &routes {
        route.listener.set_nonblocking(true).map_err(failed)?;
    }
    // One thread is plenty for a one-host bus: the relay only copies bytes
    // and rumqttd does the MQTT work on its own threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(failed)?;
    let acceptor = TlsAcceptor::from(options.server.config.clone());
    let limit = options.max_connections;
    let slots = Arc::new(Semaphore::new(limit));
    let handshake_timeout = options.handshake_timeout;
    std::thread::Builder::new()
        .name("signalbox-broker-tls".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut loops = tokio::task::JoinSet::new();
                for route in routes {
                    let listener = match TcpListener::from_std(route.listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::error!("TLS listener: {e}");
                            continue;
                        }
                    };
                    loops.spawn(accept_loop(
                        listener,
                        route.backend,
                        acceptor.clone(),
                        slots.clone(),
                        limit,
                        handshake_timeout,
                    ));
                }
                while loops.join_next().await.is_some() {}
            });
        })
        .map_err(failed)?;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    backend: SocketAddr,
    acceptor: TlsAcceptor,
    slots: Arc<Semaphore>,
    limit: usize,
    handshake_timeout: Duration,
) {
    let mut last_limit_warning: Option<Instant> = None;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("TLS listener: cannot accept a connection: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closing at once tells the client now; queueing would leave it
            // waiting on a handshake that may never come.
            if last_limit_warning.is_none_or(|t| t.elapsed() > LIMIT_WARNING_INTERVAL) {
                tracing::warn!(
                    "TLS listener: {limit} connections open (the limit); closing new ones until some end"
                );
                last_limit_warning = Some(Instant::now());
            }
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(reason) = relay(tcp, backend, acceptor, handshake_timeout).await {
                tracing::info!("TLS client {peer}: {reason}");
            }
        });
    }
}

/// Completes the handshake within `handshake_timeout`, connects to rumqttd
/// and copies bytes both ways until one side closes.
async fn relay(
    tcp: TcpStream,
    backend: SocketAddr,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
) -> Result<(), String> {
    // MQTT packets are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    let tls = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| format!("no TLS handshake within {handshake_timeout:?}"))?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let broker = tokio::time::timeout(handshake_timeout, TcpStream::connect(backend))
        .await
        .map_err(|_| {
            format!("the broker at {backend} did not accept within {handshake_timeout:?}")
        })?
        .map_err(|e| format!("cannot reach the broker at {backend}: {e}"))?;
    let _ = broker.set_nodelay(true);
    let (mut from_client, mut to_client) = tokio::io::split(tls);
    let (mut from_broker, mut to_broker) = broker.into_split();
    let upstream = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_broker).await;
        let _ = to_broker.shutdown().await;
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut from_broker, &mut to_client).await;
        // A TLS close_notify, so that the client reads a clean end of
        // stream: that is how a refused log-in looks (rumqttd closes without
        // a CONNACK), and signalbox explains it as such.
        let _ = to_client.shutdown().await;
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        // The broker closed: nothing the client still sends matters.
        () = &mut downstream => {}
        // The client closed: rumqttd sees the end of stream and closes too.
        () = &mut upstream => {
            let _ = tokio::time::timeout(CLOSE_GRACE, downstream).await;
        }
    }
    Ok(())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, BrokerError> {
    std::fs::read(path).map_err(|e| file_error(what, path, e.to_string()))
}

/// Every certificate in a PEM file, in order; at least one.
fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, BrokerError> {
    let text = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, format!("not valid PEM: {}", pem_reason(&e))))?;
    if certs.is_empty() {
        return Err(file_error(
            what,
            path,
            "no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// A PEM parse error in words (the parser's own text dumps bytes).
fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no -----END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a malformed -----BEGIN line".into(),
        pem::Error::Base64Decode(_) => "a section is not valid base64".into(),
        e => e.to_string(),
    }
}

fn file_error(what: &'static str, path: &Path, reason: impl Into<String>) -> BrokerError {
    BrokerError::TlsFile {
        what,
        path: PathBuf::from(path),
        reason: reason.into(),
    }
}
