//! `signalbox-bridge mail` end to end: the fixture corpus (RFC 5322 and
//! RFC 2047 examples, charsets, MIME structures, broken headers) checked
//! field by field through the embedded broker and mosquitto; the real
//! procmail delivering through a procmailrc; a Maildir; exit codes 0, 65,
//! 75; and bounded memory for a 50 MB mail.

mod bridge_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bridge_support::{
    bridge, dead_broker, events, procmail_installed, run_input, spool_files, Subscriber, LIMIT,
};
use serde_json::Value;
use signalbox_common::envelope::Envelope;
use signalbox_e2e::{bin, embedded_broker, mosquitto, wait_with_limit};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mail")
}

/// Every fixture with its expectation: `NAME.eml` (or `.bin`) + `NAME.json`.
fn corpus() -> Vec<(String, Vec<u8>, Value)> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml" || x == "bin"))
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let expect_path = path.with_extension("json");
        let expect: Value =
            serde_json::from_slice(&std::fs::read(&expect_path).expect("expectation file"))
                .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));
        out.push((name, std::fs::read(&path).expect("fixture"), expect));
    }
    assert!(out.len() >= 20, "the corpus has {} mails", out.len());
    out
}

/// Compares a published envelope with the expectation, field by field, so
/// a failure names the fixture and the field.
fn check(name: &str, payload: &[u8], expect: &Value) {
    let envelope = Envelope::from_slice(payload)
        .unwrap_or_else(|e| panic!("{name}: not a valid envelope: {e}"));
    assert_eq!(envelope.source.bridge, "mail", "{name}: source.bridge");
    let actual: Value = serde_json::from_slice(payload).expect("json");
    for field in ["topic", "summary", "severity", "agent"] {
        assert_eq!(
            actual.get(field).unwrap_or(&Value::Null),
            &expect[field],
            "{name}: field {field}"
        );
    }
    let (Some(body), Some(expect_body)) = (actual["body"].as_object(), expect["body"].as_object())
    else {
        panic!("{name}: body missing");
    };
    for (key, want) in expect_body {
        assert_eq!(
            body.get(key).unwrap_or(&Value::Null),
            want,
            "{name}: body.{key}"
        );
    }
    let extra: Vec<&String> = body
        .keys()
        .filter(|k| !expect_body.contains_key(*k))
        .collect();
    assert!(extra.is_empty(), "{name}: unexpected body fields {extra:?}");
}

fn run_corpus(url: &str, only: Option<&[&str]>) {
    let sub = Subscriber::start(url, "signalbox/dev/mail/#");
    let state = tempfile::tempdir().expect("tempdir");
    for (name, raw, expect) in corpus() {
        if only.is_some_and(|o| !o.iter().any(|n| name.starts_with(n))) {
            continue;
        }
        let out = run_input(bridge(url, state.path()).arg("mail"), &raw, LIMIT);
        assert_eq!(out.code, 0, "{name}: exit code; stderr: {}", out.stderr);
        assert!(out.stderr.is_empty(), "{name}: stderr: {}", out.stderr);
        let got = sub.take(1, LIMIT);
        assert!(!got[0].retain, "{name}: a mail is an event, not retained");
        check(&name, &got[0].payload, &expect);
    }
    assert!(
        spool_files(&state.path().join("spool")).is_empty(),
        "nothing spooled with the broker up"
    );
}

#[test]
fn the_corpus_is_published_field_by_field_through_the_embedded_broker() {
    let broker = embedded_broker();
    run_corpus(&broker.url(), None);
}

#[test]
fn the_corpus_is_published_field_by_field_through_mosquitto() {
    let Some(m) = mosquitto("the_corpus_is_published_field_by_field_through_mosquitto") else {
        return;
    };
    run_corpus(&m.url(), None);
}

#[test]
fn rfc2047_example_decodes_as_the_rfc_says() {
    // Independent of the expectation files: the decodings RFC 2047
    // section 8 gives.
    let broker = embedded_broker();
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/mail/#");
    let state = tempfile::tempdir().expect("tempdir");
    let raw = std::fs::read(fixtures().join("rfc2047-examples.eml")).expect("fixture");
    let out = run_input(bridge(&broker.url(), state.path()).arg("mail"), &raw, LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let body = sub.take(1, LIMIT)[0].json()["body"].clone();
    assert_eq!(
        body["subject"],
        "If you can read this you understand the example."
    );
    assert_eq!(body["to"][0]["name"], "Keld Jørn Simonsen");
    assert_eq!(body["cc"][0]["name"], "André Pirard");
    assert_eq!(body["from"]["name"], "Keith Moore");
}

#[test]
fn the_health_report_of_a_run_is_idle_and_retained() {
    let broker = embedded_broker();
    let state = tempfile::tempdir().expect("tempdir");
    let raw = std::fs::read(fixtures().join("mailing-list.eml")).expect("fixture");
    let out = run_input(bridge(&broker.url(), state.path()).arg("mail"), &raw, LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Subscribing afterwards: the report must be retained.
    let sub = Subscriber::start(&broker.url(), "signalbox/_health/mail-devel");
    let got = sub.take(1, LIMIT);
    assert!(got[0].retain);
    let report = got[0].json();
    assert_eq!(report["state"], "idle");
    assert_eq!(report["listener"], "mail-devel");
    assert_eq!(report["spool_depth"], 0);
    assert!(report["last_run"].is_string(), "{report}");
}

#[test]
fn empty_input_exits_65_with_one_line() {
    let state = tempfile::tempdir().expect("tempdir");
    let out = run_input(bridge(&dead_broker(), state.path()).arg("mail"), b"", LIMIT);
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("signalbox-bridge: error: empty input"),
        "{}",
        out.stderr
    );
}

#[test]
fn with_the_broker_down_the_mail_is_spooled_and_the_exit_is_0() {
    let state = tempfile::tempdir().expect("tempdir");
    let raw = std::fs::read(fixtures().join("bugzilla.eml")).expect("fixture");
    let mut cmd = bridge(&dead_broker(), state.path());
    cmd.arg("mail");
    let started = Instant::now();
    let out = run_input(&mut cmd, &raw, LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.is_empty(),
        "spooling is normal operation, not an error: {}",
        out.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a refused connection spools at once: {:?}",
        started.elapsed()
    );
    let files = spool_files(&state.path().join("spool"));
    assert_eq!(files.len(), 1);
    let record: Value =
        serde_json::from_slice(&std::fs::read(&files[0]).expect("read")).expect("json");
    assert_eq!(record["topic"], "signalbox/dev/mail/bugs/received");
    let envelope =
        Envelope::from_slice(record["payload"].as_str().expect("text payload").as_bytes())
            .expect("envelope");
    assert_eq!(
        envelope.summary,
        "bugzilla-daemon@example.org: [Bug 4711] New: kernel oops on umount"
    );
}

#[test]
fn neither_published_nor_spooled_exits_75() {
    let state = tempfile::tempdir().expect("tempdir");
    let raw = std::fs::read(fixtures().join("bugzilla.eml")).expect("fixture");
    // A spool under a regular file can never be created, not even by root.
    let out = run_input(
        bridge(&dead_broker(), state.path()).args(["mail", "--spool", "/dev/null/spool"]),
        &raw,
        LIMIT,
    );
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("could not be published") && out.stderr.contains("/dev/null/spool"),
        "{}",
        out.stderr
    );

    // An unreadable configuration is a temporary failure too: the MTA keeps
    // the mail until it is fixed.
    let mut cmd = bridge(&dead_broker(), state.path());
    cmd.env("SIGNALBOX_CONFIG", state.path().join("missing.toml"))
        .arg("mail");
    let out = run_input(&mut cmd, &raw, LIMIT);
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
}

#[test]
fn a_broker_that_never_answers_costs_at_most_the_timeout() {
    // Accepts the TCP connection, never sends CONNACK.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("mqtt://{}", listener.local_addr().expect("addr"));
    let state = tempfile::tempdir().expect("tempdir");
    let raw = std::fs::read(fixtures().join("bugzilla.eml")).expect("fixture");
    let mut cmd = bridge(&url, state.path());
    cmd.args(["mail", "--timeout", "2"]);
    let started = Instant::now();
    let out = run_input(&mut cmd, &raw, LIMIT);
    let took = started.elapsed();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert_eq!(spool_files(&state.path().join("spool")).len(), 1);
    drop(listener);
}

#[test]
fn bad_flags_are_usage_errors() {
    let state = tempfile::tempdir().expect("tempdir");
    for (args, needle) in [
        (&["mail", "--timeout", "0"][..], "--timeout"),
        (&["mail", "--bogus"][..], "unexpected argument"),
        (
            &["mail", "--maildir", "/nonexistent/Maildir"][..],
            "cannot read Maildir",
        ),
    ] {
        let out = run_input(bridge(&dead_broker(), state.path()).args(args), b"x", LIMIT);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

#[test]
fn a_maildir_is_published_in_order_and_moved_to_cur() {
    let broker = embedded_broker();
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/mail/#");
    let state = tempfile::tempdir().expect("tempdir");
    let maildir = tempfile::tempdir().expect("maildir");
    for sub_dir in ["new", "cur", "tmp"] {
        std::fs::create_dir(maildir.path().join(sub_dir)).expect("mkdir");
    }
    let names = [
        "rfc5322-a1-1-simple.eml",
        "rfc2047-examples.eml",
        "mailing-list.eml",
    ];
    for (i, name) in names.iter().enumerate() {
        std::fs::copy(
            fixtures().join(name),
            maildir.path().join(format!("new/100{i}.M1P1.host")),
        )
        .expect("copy");
    }
    let out = run_input(
        bridge(&broker.url(), state.path())
            .arg("mail")
            .arg("--maildir")
            .arg(maildir.path()),
        b"",
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got = events(sub.take(3, LIMIT));
    let summaries: Vec<String> = got
        .iter()
        .map(|g| g.json()["summary"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        summaries,
        [
            "John Doe <jdoe@machine.example>: Saying Hello",
            "Keith Moore <moore@cs.utk.edu>: If you can read this you understand the example.",
            "Adam Williamson <adamwill@fedoraproject.org>: [devel] Fedora 40 Beta blocker status",
        ]
    );
    assert_eq!(
        std::fs::read_dir(maildir.path().join("new"))
            .expect("new")
            .count(),
        0
    );
    let mut cur: Vec<String> = std::fs::read_dir(maildir.path().join("cur"))
        .expect("cur")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cur.sort();
    assert_eq!(
        cur,
        [
            "1000.M1P1.host:2,",
            "1001.M1P1.host:2,",
            "1002.M1P1.host:2,"
        ]
    );
}

/// Writes a procmailrc that delivers to a Maildir and pipes a copy to the
/// bridge, with every variable the bridge needs set in the rc itself
/// (procmail exports its variables to the commands it runs).
fn procmailrc(dir: &Path, broker: &str, state: &Path) -> PathBuf {
    let rc = dir.join("procmailrc");
    let maildir = dir.join("Maildir");
    for sub_dir in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub_dir)).expect("mkdir");
    }
    let text = format!(
        "SHELL=/bin/sh\nLOGFILE={log}\nVERBOSE=yes\nSIGNALBOX_BROKER={broker}\nSIGNALBOX_STATE_DIR={state}\n\
         SIGNALBOX_CONFIG=\nXDG_CONFIG_HOME={state}/config\nDEFAULT={maildir}/\n\n\
         :0 c\n| {bin} mail --system procmail-test\n\n:0\n{maildir}/\n",
        log = dir.join("procmail.log").display(),
        state = state.display(),
        maildir = maildir.display(),
        bin = bin("signalbox-bridge").display(),
    );
    std::fs::write(&rc, text).expect("write procmailrc");
    rc
}

fn run_procmail(rc: &Path, mail: &[u8]) -> signalbox_e2e::Finished {
    let mut cmd = Command::new("procmail");
    cmd.arg("-m").arg(rc);
    signalbox_e2e::isolate(&mut cmd);
    run_input(&mut cmd, mail, LIMIT)
}

#[test]
fn procmail_pipes_a_copy_to_the_bridge_and_still_delivers() {
    if !procmail_installed("procmail_pipes_a_copy_to_the_bridge_and_still_delivers") {
        return;
    }
    let broker = embedded_broker();
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/mail/#");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let rc = procmailrc(dir.path(), &broker.url(), &state);
    let mut mail = b"From bugzilla-daemon@example.org  Thu Apr  4 10:00:00 2024\n".to_vec();
    mail.extend_from_slice(
        &std::fs::read(fixtures().join("rfc5322-a1-1-simple.eml")).expect("fixture"),
    );
    let out = run_procmail(&rc, &mail);
    let log = std::fs::read_to_string(dir.path().join("procmail.log")).unwrap_or_default();
    assert_eq!(out.code, 0, "procmail: {}\nlog:\n{log}", out.stderr);
    let got = sub.take(1, LIMIT);
    let envelope = got[0].json();
    assert_eq!(
        envelope["topic"], "signalbox/dev/mail/procmail-test/received",
        "--system from the rc"
    );
    assert_eq!(
        envelope["summary"],
        "John Doe <jdoe@machine.example>: Saying Hello"
    );
    assert!(
        log.contains("signalbox-bridge"),
        "procmail ran the bridge:\n{log}"
    );
    let delivered = std::fs::read_dir(dir.path().join("Maildir/new"))
        .expect("Maildir")
        .count();
    assert_eq!(delivered, 1, "the mail itself is still delivered:\n{log}");

    // Broker down: the bridge spools, procmail is content, the mail is
    // delivered all the same.
    let rc = procmailrc(dir.path(), &dead_broker(), &state);
    let out = run_procmail(&rc, &mail);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Without the `w` flag procmail does not wait for a `c` pipe: wait for
    // the bridge's spool file.
    let deadline = Instant::now() + LIMIT;
    while spool_files(&state.join("spool")).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        spool_files(&state.join("spool")).len(),
        1,
        "spooled by the bridge under procmail"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("Maildir/new"))
            .expect("Maildir")
            .count(),
        2
    );
}

/// Peak resident memory of a child (VmHWM), polled until it exits.
fn run_measuring_memory(cmd: &mut Command, input: Vec<u8>) -> (signalbox_e2e::Finished, u64) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    });
    let watcher = std::thread::spawn(move || {
        let mut peak_kb = 0u64;
        let status = format!("/proc/{pid}/status");
        let deadline = Instant::now() + LIMIT;
        while Instant::now() < deadline {
            let Ok(text) = std::fs::read_to_string(&status) else {
                break;
            };
            if text.contains("State:\tZ") {
                break;
            }
            if let Some(kb) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        peak_kb
    });
    let finished = wait_with_limit(child, LIMIT);
    let _ = writer.join();
    (finished, watcher.join().unwrap_or(0) * 1024)
}

/// A mail of about `size` bytes: headers, a text part and one base64
/// attachment.
fn big_mail(size: usize) -> Vec<u8> {
    let mut mail = b"From: Big <big@example.org>\r\nTo: ops@example.org\r\nSubject: big\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n\
--b\r\nContent-Type: application/octet-stream; name=\"blob.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n"; // 72 chars = 54 bytes
    while mail.len() + line.len() + 8 < size {
        mail.extend_from_slice(line);
    }
    mail.extend_from_slice(b"--b--\r\n");
    mail
}

#[test]
fn a_50_mb_mail_is_published_with_bounded_memory() {
    let broker = embedded_broker();
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/mail/#");
    let state = tempfile::tempdir().expect("tempdir");
    let mail = big_mail(50 * 1024 * 1024);
    let size = mail.len() as u64;
    let (out, peak) = run_measuring_memory(bridge(&broker.url(), state.path()).arg("mail"), mail);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let body = sub.take(1, LIMIT)[0].json()["body"].clone();
    assert_eq!(body["size"], size);
    assert_eq!(body["truncated"], false);
    assert_eq!(body["attachments"][0]["name"], "blob.bin");
    assert!(
        body["attachments"][0]["size"].as_u64().unwrap_or(0) > 35 * 1024 * 1024,
        "{body}"
    );
    eprintln!(
        "peak RSS for a {size}-byte mail: {} MiB",
        peak / 1024 / 1024
    );
    assert!(peak > 0, "memory was measured");
    assert!(
        peak < 400 * 1024 * 1024,
        "peak RSS {} MiB",
        peak / 1024 / 1024
    );

    // Beyond the in-memory cap (64 MiB) the start is parsed, the size is
    // still exact, and memory does not grow with the input.
    let mail = big_mail(70 * 1024 * 1024);
    let size = mail.len() as u64;
    let (out, peak) = run_measuring_memory(bridge(&broker.url(), state.path()).arg("mail"), mail);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let body = sub.take(1, LIMIT)[0].json()["body"].clone();
    assert_eq!(body["size"], size);
    assert_eq!(body["truncated"], true);
    eprintln!(
        "peak RSS for a {size}-byte mail: {} MiB",
        peak / 1024 / 1024
    );
    assert!(
        peak < 400 * 1024 * 1024,
        "peak RSS {} MiB",
        peak / 1024 / 1024
    );
}
