//! The embedded broker with TLS (issue 11 item 2): `signalbox broker
//! --tls-cert … --tls-key …` as a real process, with certificates made at
//! test time, and real clients: `signalbox pub`/`tail` over `mqtts://`, and
//! mosquitto_pub/mosquitto_sub.
//!
//! Every refusal — an untrusted broker certificate, a missing or foreign
//! client certificate, a wrong password, an unusable certificate or key
//! file — must be a clear one-line error, never a timeout.

mod pki_support;

use std::ffi::OsStr;
use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pki_support::{make_pki, Pki};
use signalbox_e2e::{
    mosquitto_required, run_with_limit, signalbox, signalbox_broker_command,
    start_signalbox_broker, Finished, KillOnDrop, LineReader,
};

/// Every client run is bounded by this.
const LIMIT: Duration = Duration::from_secs(30);
/// A refusal must come well before this (the clients' connect timeout is
/// set to 30 s, so a timeout cannot pass for a refusal).
const PROMPT: Duration = Duration::from_secs(10);

/// A running `signalbox broker` and the addresses it printed.
struct Broker {
    _child: KillOnDrop,
    /// What it printed on startup.
    banner: Vec<String>,
    /// `mqtts://…` of MQTT 3.1.1 over TLS.
    tls: String,
    /// `mqtts://…` of MQTT 5 over TLS, when asked for.
    tls_v5: Option<String>,
    /// `mqtt://…` of the plain MQTT 3.1.1 listener.
    plain: String,
}

/// Certificates in a private directory.
struct Certs {
    dir: tempfile::TempDir,
    pki: Pki,
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    Certs { dir, pki }
}

/// Starts `signalbox broker ARGS…` and waits for its banner.
fn start_broker(args: &[&OsStr]) -> Broker {
    let (child, banner) = start_signalbox_broker(args);
    let url_after = |marker: &str| {
        banner.iter().find_map(|l| {
            l.split_once(marker).map(|(_, rest)| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
        })
    };
    let tls = url_after("MQTT 3.1.1 over TLS on ").expect("a TLS address");
    let tls_v5 = url_after("MQTT 5 over TLS on ");
    let plain = url_after("MQTT 3.1.1 on ").expect("a plain address");
    Broker {
        _child: child,
        banner,
        tls,
        tls_v5,
        plain,
    }
}

/// The usual TLS arguments: ephemeral TLS port, the test's certificate.
fn tls_args(pki: &Pki) -> Vec<&OsStr> {
    vec![
        OsStr::new("--listen-tls"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--tls-cert"),
        pki.server_cert.as_os_str(),
        OsStr::new("--tls-key"),
        pki.server_key.as_os_str(),
    ]
}

/// A `signalbox` client of `url` that trusts `ca`.
fn client(url: &str, ca: &Path) -> Command {
    let mut cmd = signalbox(url);
    cmd.env("SIGNALBOX_CA_FILE", ca)
        .env("SIGNALBOX_CONNECT_TIMEOUT", "30");
    cmd
}

fn run(mut cmd: Command, args: &[&str]) -> (Finished, Duration) {
    let started = Instant::now();
    let out = run_with_limit(cmd.args(args), LIMIT);
    (out, started.elapsed())
}

/// Asserts a prompt, one-line refusal (exit 1) that says `says`.
fn assert_refused(out: &Finished, took: Duration, says: &str) {
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(says),
        "expected {says:?}: {}",
        out.stderr
    );
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(
        took < PROMPT,
        "a timeout, not a refusal ({took:?}): {}",
        out.stderr
    );
}

#[test]
fn pub_and_tail_round_trip_over_tls_only() {
    let c = certs();
    let mut args = tls_args(&c.pki);
    args.extend([OsStr::new("--listen-tls-v5"), OsStr::new("127.0.0.1:0")]);
    let b = start_broker(&args);
    assert!(b.tls.starts_with("mqtts://127.0.0.1:"), "{:?}", b.banner);
    // TLS only: the plain listener is the relay's, on loopback, and says so.
    assert!(b.plain.starts_with("mqtt://127.0.0.1:"), "{:?}", b.banner);
    let plain_line = b
        .banner
        .iter()
        .find(|l| l.contains("MQTT 3.1.1 on "))
        .expect("plain line");
    assert!(plain_line.contains("internal"), "{plain_line}");
    assert!(
        b.banner
            .iter()
            .any(|l| l.contains("over TLS") && l.contains("no client certificate")),
        "{:?}",
        b.banner
    );
    assert!(
        !b.banner.iter().any(|l| l.contains("no TLS")),
        "{:?}",
        b.banner
    );

    // A live message: tail is known to be subscribed once it printed the
    // retained marker.
    let (ok, _) = run(
        client(&b.tls, &c.pki.ca),
        &["pub", "--retain", "signalbox/dev/tls/ready", "ready"],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let mut tail = client(&b.tls, &c.pki.ca)
        .args(["tail", "signalbox/dev/#"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tail");
    let lines = LineReader::new(&mut tail);
    let _tail = KillOnDrop(tail);
    let first = lines.next_line(LIMIT).expect("the retained marker");
    assert!(first.contains("signalbox/dev/tls/ready ready"), "{first}");
    let (ok, _) = run(
        client(&b.tls, &c.pki.ca),
        &["pub", "signalbox/dev/git/kernel/commit", "pushed over TLS"],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let line = lines.next_line(LIMIT).expect("tail prints the message");
    assert!(
        line.ends_with(" signalbox/dev/git/kernel/commit pushed over TLS"),
        "{line}"
    );

    // MQTT 5 over TLS, on its own port.
    let v5 = b.tls_v5.as_deref().expect("an MQTT 5 TLS address");
    let mut pub5 = client(v5, &c.pki.ca);
    pub5.env("SIGNALBOX_MQTT_VERSION", "5");
    let (ok, _) = run(
        pub5,
        &["pub", "--retain", "signalbox/dev/tls/v5", "over v5"],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let mut tail5 = client(v5, &c.pki.ca);
    tail5.env("SIGNALBOX_MQTT_VERSION", "5");
    let (got, _) = run(
        tail5,
        &[
            "tail",
            "--count",
            "1",
            "--timeout",
            "20",
            "signalbox/dev/tls/v5",
        ],
    );
    assert_eq!(got.code, 0, "{}", got.stderr);
    assert!(
        got.stdout.contains("signalbox/dev/tls/v5 over v5"),
        "{}",
        got.stdout
    );

    // A client that trusts another CA: a certificate error at once.
    let (refused, took) = run(
        client(&b.tls, &c.pki.other_ca),
        &["pub", "signalbox/dev/x/y", "z"],
    );
    assert_refused(&refused, took, "not signed by a trusted CA");
}

#[test]
fn mutual_tls_needs_a_client_certificate_from_the_client_ca() {
    let c = certs();
    let mut args = tls_args(&c.pki);
    args.extend([OsStr::new("--tls-client-ca"), c.pki.ca.as_os_str()]);
    let b = start_broker(&args);
    assert!(
        b.banner
            .iter()
            .any(|l| l.contains("over TLS") && l.contains("client certificates required")),
        "{:?}",
        b.banner
    );
    let with_cert = |cert: &Path, key: &Path| {
        let mut cmd = client(&b.tls, &c.pki.ca);
        cmd.env("SIGNALBOX_CLIENT_CERT", cert)
            .env("SIGNALBOX_CLIENT_KEY", key);
        cmd
    };

    let (refused, took) = run(
        client(&b.tls, &c.pki.ca),
        &["pub", "signalbox/dev/x/y", "z"],
    );
    assert_refused(&refused, took, "requires a client certificate");

    let (refused, took) = run(
        with_cert(&c.pki.stranger_cert, &c.pki.stranger_key),
        &["pub", "signalbox/dev/x/y", "z"],
    );
    assert_refused(&refused, took, "rejected the client certificate");

    let (ok, _) = run(
        with_cert(&c.pki.client_cert, &c.pki.client_key),
        &[
            "pub",
            "--retain",
            "signalbox/dev/mtls/hello",
            "with a certificate",
        ],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let (got, _) = run(
        with_cert(&c.pki.client_cert, &c.pki.client_key),
        &[
            "tail",
            "--count",
            "1",
            "--timeout",
            "20",
            "signalbox/dev/mtls/#",
        ],
    );
    assert_eq!(got.code, 0, "{}", got.stderr);
    assert!(
        got.stdout
            .contains("signalbox/dev/mtls/hello with a certificate"),
        "{}",
        got.stdout
    );
}

#[test]
fn passwords_still_apply_over_tls() {
    use std::os::unix::fs::PermissionsExt;
    const PASSWORD: &str = "tls-s3cret";
    let c = certs();
    let passwords = c.dir.path().join("passwords");
    std::fs::write(&passwords, format!("console:{PASSWORD}\n")).expect("passwords");
    std::fs::set_permissions(&passwords, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let right = c.dir.path().join("right");
    std::fs::write(&right, format!("{PASSWORD}\n")).expect("password file");
    let wrong = c.dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password\n").expect("password file");
    let mut args = tls_args(&c.pki);
    args.extend([OsStr::new("--passwords"), passwords.as_os_str()]);
    let b = start_broker(&args);
    let as_console = |password_file: &Path| {
        let mut cmd = client(&b.tls, &c.pki.ca);
        cmd.env("SIGNALBOX_USERNAME", "console")
            .env("SIGNALBOX_PASSWORD_FILE", password_file);
        cmd
    };

    let (ok, _) = run(
        as_console(&right),
        &["pub", "signalbox/dev/x/y", "logged in"],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);

    let (refused, took) = run(as_console(&wrong), &["pub", "signalbox/dev/x/y", "z"]);
    assert_refused(&refused, took, "user name or password");
    assert!(
        !refused.stderr.contains("not-the-password"),
        "{}",
        refused.stderr
    );

    let (refused, took) = run(
        client(&b.tls, &c.pki.ca),
        &["pub", "signalbox/dev/x/y", "z"],
    );
    assert_refused(&refused, took, "closed the connection before accepting it");

    // The internal plain port asks for the password too.
    let (refused, took) = run(signalbox(&b.plain), &["pub", "signalbox/dev/x/y", "z"]);
    assert_refused(&refused, took, "closed the connection before accepting it");
}

/// Whether mosquitto_pub and mosquitto_sub can run; fails the test when
/// they are required (`SIGNALBOX_REQUIRE_MOSQUITTO=1`) and missing.
fn mosquitto_clients(test: &str) -> bool {
    let runs = |cmd: &str| {
        Command::new(cmd)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if runs("mosquitto_pub") && runs("mosquitto_sub") {
        return true;
    }
    assert!(
        !mosquitto_required(),
        "{test}: mosquitto-clients is required (SIGNALBOX_REQUIRE_MOSQUITTO=1) but not installed"
    );
    eprintln!("\n!!! SKIPPED {test}: mosquitto-clients not installed (apt-get install mosquitto-clients) !!!\n");
    false
}

/// host and port of `mqtts://host:port`.
fn host_port(url: &str) -> (String, String) {
    let rest = url.trim_start_matches("mqtts://");
    let (host, port) = rest.rsplit_once(':').expect("host:port");
    (host.to_string(), port.to_string())
}

fn mosquitto_client(tool: &str, url: &str, pki: &Pki, cert: bool, args: &[&str]) -> Finished {
    let (host, port) = host_port(url);
    let mut cmd = Command::new(tool);
    cmd.args(["-h", &host, "-p", &port, "--cafile"])
        .arg(&pki.ca);
    if cert {
        cmd.arg("--cert")
            .arg(&pki.client_cert)
            .arg("--key")
            .arg(&pki.client_key);
    }
    run_with_limit(cmd.args(args), LIMIT)
}

#[test]
fn mosquitto_pub_and_sub_work_against_it() {
    if !mosquitto_clients("mosquitto_pub_and_sub_work_against_it") {
        return;
    }
    let c = certs();
    let b = start_broker(&tls_args(&c.pki));
    let out = mosquitto_client(
        "mosquitto_pub",
        &b.tls,
        &c.pki,
        false,
        &[
            "-r",
            "-q",
            "1",
            "-t",
            "sensors/a/temp",
            "-m",
            "21.5 degrees",
        ],
    );
    assert_eq!(out.code, 0, "mosquitto_pub: {}", out.stderr);
    let out = mosquitto_client(
        "mosquitto_sub",
        &b.tls,
        &c.pki,
        false,
        &["-t", "sensors/#", "-C", "1", "-W", "10"],
    );
    assert_eq!(out.code, 0, "mosquitto_sub: {}", out.stderr);
    assert_eq!(out.stdout.trim(), "21.5 degrees");
    // What mosquitto_pub sent reaches a signalbox client, and back.
    let (got, _) = run(
        client(&b.tls, &c.pki.ca),
        &["tail", "--count", "1", "--timeout", "20", "sensors/#"],
    );
    assert_eq!(got.code, 0, "{}", got.stderr);
    assert!(
        got.stdout.contains("sensors/a/temp 21.5 degrees"),
        "{}",
        got.stdout
    );

    // Mutual TLS: mosquitto's clients with and without a certificate.
    let c2 = certs();
    let mut args = tls_args(&c2.pki);
    args.extend([OsStr::new("--tls-client-ca"), c2.pki.ca.as_os_str()]);
    let m = start_broker(&args);
    let out = mosquitto_client(
        "mosquitto_pub",
        &m.tls,
        &c2.pki,
        true,
        &[
            "-r",
            "-q",
            "1",
            "-t",
            "signalbox/dev/m/hello",
            "-m",
            "mutual",
        ],
    );
    assert_eq!(
        out.code, 0,
        "mosquitto_pub with a certificate: {}",
        out.stderr
    );
    let out = mosquitto_client(
        "mosquitto_sub",
        &m.tls,
        &c2.pki,
        true,
        &["-t", "signalbox/dev/m/#", "-C", "1", "-W", "10"],
    );
    assert_eq!(
        out.code, 0,
        "mosquitto_sub with a certificate: {}",
        out.stderr
    );
    assert_eq!(out.stdout.trim(), "mutual");
    let started = Instant::now();
    let out = mosquitto_client(
        "mosquitto_pub",
        &m.tls,
        &c2.pki,
        false,
        &["-q", "1", "-t", "signalbox/dev/m/x", "-m", "no certificate"],
    );
    assert_ne!(
        out.code, 0,
        "mosquitto_pub without a certificate: {}",
        out.stderr
    );
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
}

#[test]
fn unusable_tls_files_are_one_line_errors() {
    let c = certs();
    let p = &c.pki;
    let missing = c.dir.path().join("missing.pem");
    let os = |s: &'static str| OsStr::new(s);
    let cases: Vec<(Vec<&OsStr>, &Path, &str)> = vec![
        (
            vec![
                os("--tls-cert"),
                missing.as_os_str(),
                os("--tls-key"),
                p.server_key.as_os_str(),
            ],
            &missing,
            "No such file",
        ),
        (
            vec![
                os("--tls-cert"),
                p.server_cert.as_os_str(),
                os("--tls-key"),
                missing.as_os_str(),
            ],
            &missing,
            "No such file",
        ),
        (
            // The certificate where the key belongs.
            vec![
                os("--tls-cert"),
                p.server_cert.as_os_str(),
                os("--tls-key"),
                p.server_cert.as_os_str(),
            ],
            &p.server_cert,
            "no PEM private key",
        ),
        (
            // A key where the certificate belongs.
            vec![
                os("--tls-cert"),
                p.server_key.as_os_str(),
                os("--tls-key"),
                p.server_key.as_os_str(),
            ],
            &p.server_key,
            "no PEM certificate",
        ),
        (
            // The client's key with the broker's certificate.
            vec![
                os("--tls-cert"),
                p.server_cert.as_os_str(),
                os("--tls-key"),
                p.client_key.as_os_str(),
            ],
            &p.client_key,
            "not the key of the certificate",
        ),
        (
            vec![
                os("--tls-cert"),
                p.server_cert.as_os_str(),
                os("--tls-key"),
                p.server_key.as_os_str(),
                os("--tls-client-ca"),
                missing.as_os_str(),
            ],
            &missing,
            "client CA file",
        ),
    ];
    for (args, names, says) in cases {
        let out = run_with_limit(
            signalbox_broker_command(&args).args(["--listen-tls", "127.0.0.1:0"]),
            LIMIT,
        );
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&names.display().to_string()) && out.stderr.contains(says),
            "{args:?}: expected {says:?}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "nothing listened: {}", out.stdout);
    }

    // Half a TLS configuration is a usage error from the flag parser.
    for args in [
        vec![os("--tls-cert"), p.server_cert.as_os_str()],
        vec![os("--listen-tls"), os("127.0.0.1:0")],
        vec![os("--tls-client-ca"), p.ca.as_os_str()],
    ] {
        let out = run_with_limit(&mut signalbox_broker_command(&args), LIMIT);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("--tls-"), "{args:?}: {}", out.stderr);
    }

    // A TLS port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run_with_limit(
        &mut signalbox_broker_command(&[
            os("--tls-cert"),
            p.server_cert.as_os_str(),
            os("--tls-key"),
            p.server_key.as_os_str(),
            os("--listen-tls"),
            OsStr::new(&addr),
        ]),
        LIMIT,
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("cannot listen on"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
}

#[test]
fn a_client_that_sends_nothing_is_dropped_after_the_handshake_timeout() {
    let c = certs();
    let b = start_broker(&tls_args(&c.pki));
    let (host, port) = host_port(&b.tls);
    let mut silent = TcpStream::connect(format!("{host}:{port}")).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = silent.read(&mut buf);
    let took = started.elapsed();
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
        "closed, not timed out: {read:?} after {took:?}"
    );
    // HANDSHAKE_TIMEOUT is 10 s.
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(20),
        "closed after {took:?}"
    );
}
