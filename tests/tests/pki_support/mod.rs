//! Certificates made at test time (rcgen) for the TLS tests
//! (`security.rs` against mosquitto, `embedded_tls.rs` against the
//! embedded broker): a CA, a broker certificate for 127.0.0.1 and
//! localhost, client certificates, and a CA that signed nothing the broker
//! trusts.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The test's certificate authority, the broker's certificate (for
/// 127.0.0.1 and localhost) and a client certificate, as PEM files.
pub struct Pki {
    /// The CA that signed the broker's and the client's certificates.
    pub ca: PathBuf,
    /// The broker's certificate, for 127.0.0.1 and localhost.
    pub server_cert: PathBuf,
    /// Its private key.
    pub server_key: PathBuf,
    /// A client certificate (CN "console") signed by `ca`.
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
    /// A CA that signed nothing here: trusting it must fail.
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca`: a broker that trusts
    /// only `ca` must refuse it.
    pub stranger_cert: PathBuf,
    /// Its private key.
    pub stranger_key: PathBuf,
}

/// A self-signed CA certificate named `name`, and its key.
pub fn make_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).expect("CA certificate"), key)
}

/// A certificate for `names` signed by `ca`, as PEM: (certificate, key).
fn issue(
    ca: &rcgen::Certificate,
    ca_key: &rcgen::KeyPair,
    names: Vec<String>,
    cn: &str,
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca, ca_key).expect("signed");
    (cert.pem(), key.serialize_pem())
}

/// Writes a fresh [`Pki`] into `dir`.
pub fn make_pki(dir: &Path) -> Pki {
    let (ca, ca_key) = make_ca("signalbox test CA");
    let (server_pem, server_key) = issue(
        &ca,
        &ca_key,
        vec!["127.0.0.1".into(), "localhost".into()],
        "127.0.0.1",
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_pem, client_key) = issue(
        &ca,
        &ca_key,
        Vec::new(),
        "console",
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (other, other_key) = make_ca("somebody else's CA");
    let (stranger_pem, stranger_key) = issue(
        &other,
        &other_key,
        Vec::new(),
        "stranger",
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write PEM");
        path
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server.pem", &server_pem),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_pem),
        client_key: write("client.key", &client_key),
        other_ca: write("other-ca.pem", &other.pem()),
        stranger_cert: write("stranger.pem", &stranger_pem),
        stranger_key: write("stranger.key", &stranger_key),
    }
}
