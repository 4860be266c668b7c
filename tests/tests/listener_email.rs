//! `signalbox-bridge email` as a real process against the embedded broker:
//! mail by SMTP to a minimal SMTP server on 127.0.0.1 (non-ASCII subjects,
//! recipients from the message, a 550 recorded at once), digests that
//! survive a kill -9 and go out at a graceful stop and every period, a
//! Maildir parsed back, a sendmail program, and bad configuration refused
//! at start.

mod outbound_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mail_parser::MessageParser;
use outbound_support::*;
use signalbox_common::envelope::Envelope;
use signalbox_common::health::HealthState;
use signalbox_e2e::{embedded_broker, wait_with_limit, KillOnDrop};

const SUMMARY: &str = "jkeating pushed to kernel (f14): „Überprüfung“ — fix oops in ext4 ✓";

fn parse(data: &[u8]) -> mail_parser::Message<'_> {
    MessageParser::default()
        .parse(data)
        .expect("a parsable mail")
}

fn header(m: &mail_parser::Message<'_>, name: &str) -> String {
    m.header_raw(name)
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

fn pending_lines(state: &Path, name: &str) -> usize {
    std::fs::read_to_string(state.join("listeners").join(name).join("digest.jsonl"))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

async fn wait_pending(state: &Path, name: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while pending_lines(state, name) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} messages pending in the digest"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mails_each_message_by_smtp_with_recipients_from_the_message() {
    let broker = embedded_broker();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut smtp = SmtpServer::start(&["nobody@example.org"]).await;
    let mut w = watch(
        &url,
        &[
            "signalbox/_health/kernel-mail",
            "signalbox/_failed/kernel-mail/+",
        ],
    )
    .await;
    let _listener = KillOnDrop(start(
        &url,
        dir.path(),
        &[
            "email",
            "--name",
            "kernel-mail",
            "--filter",
            "signalbox/dev/git/#",
            "--smtp",
            &smtp.url(),
            "--to",
            "kernel-owner@pkgs.example.org",
            "--to-field",
            "/body/owner_email",
            "--from",
            "signalbox <bus@example.org>",
        ],
    ));
    health(&mut w, "kernel-mail", HealthState::Up).await;

    let out = signalbox_cli(
        &url,
        &[
            "pub",
            "signalbox/dev/git/kernel/commit",
            SUMMARY,
            "--body",
            r#"{"owner_email":"maint@example.org"}"#,
            "--link",
            "url=https://git.example.org/kernel/c/abc123",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mail = smtp.next().await;
    assert_eq!(mail.from, "bus@example.org");
    assert_eq!(
        mail.to,
        ["kernel-owner@pkgs.example.org", "maint@example.org"]
    );
    let m = parse(&mail.data);
    assert_eq!(m.subject(), Some(SUMMARY), "a non-ASCII subject survives");
    let id = header(&m, "X-Signalbox-Id");
    assert_eq!(m.message_id(), Some(format!("{id}@signalbox").as_str()));
    assert_eq!(
        header(&m, "X-Signalbox-Topic"),
        "signalbox/dev/git/kernel/commit"
    );
    let body = m.body_text(0).expect("a text body").to_string();
    assert!(body.contains(SUMMARY), "{body}");
    assert!(
        body.contains("url: https://git.example.org/kernel/c/abc123"),
        "{body}"
    );
    assert!(
        body.contains("maint@example.org"),
        "the details are shown: {body}"
    );

    // 550 at RCPT: permanent, recorded at once, nothing delivered.
    let p = client(&url).await;
    let bad = send(
        &p,
        Envelope::builder("signalbox/dev/git/kernel/commit", "to nobody")
            .body(serde_json::json!({"owner_email": "nobody@example.org"}))
            .build()
            .expect("env"),
    )
    .await;
    let rec = record(&mut w, &bad.id.to_string()).await;
    assert!(rec.error.contains("550"), "{}", rec.error);
    assert_eq!(rec.attempts, 1);
    assert!(smtp.next_within(Duration::from_millis(500)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_survive_a_kill_and_go_out_at_a_stop_and_every_period() {
    let broker = embedded_broker();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let mut smtp = SmtpServer::start(&[]).await;
    let mut w = watch(&url, &["signalbox/_health/digest"]).await;
    let smtp_url = smtp.url();
    let args = |period: &'static str| -> Vec<String> {
        [
            "email",
            "--name",
            "digest",
            "--filter",
            "signalbox/dev/koji/#",
            "--smtp",
            &smtp_url,
            "--to",
            "releng@example.org",
            "--digest",
            period,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let p = client(&url).await;

    // Two messages pending, then kill -9: they are on disk, acknowledged.
    let a: Vec<String> = args("1h");
    let mut first = start(
        &url,
        &state,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    health(&mut w, "digest", HealthState::Up).await;
    for n in 1..=2 {
        send(
            &p,
            Envelope::builder(
                "signalbox/dev/koji/build/complete",
                format!("build {n} of kernel: ✓ grün"),
            )
            .build()
            .expect("env"),
        )
        .await;
    }
    wait_pending(&state, "digest", 2).await;
    first.kill().expect("kill -9");
    let _ = first.wait();
    assert!(
        smtp.next_within(Duration::from_millis(300)).await.is_none(),
        "nothing sent before the period"
    );

    // Restarted: one more, then SIGTERM sends the one digest of three.
    let second = start(
        &url,
        &state,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    health(&mut w, "digest", HealthState::Up).await;
    send(
        &p,
        Envelope::builder("signalbox/dev/koji/build/complete", "build 3 of kernel")
            .build()
            .expect("env"),
    )
    .await;
    wait_pending(&state, "digest", 3).await;
    let status = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || wait_with_limit(second, WAIT))
        .await
        .expect("join");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mail = smtp.next().await;
    let m = parse(&mail.data);
    assert_eq!(header(&m, "X-Signalbox-Digest"), "3");
    assert_eq!(
        m.subject(),
        Some("[signalbox digest] 3 messages: build 1 of kernel: ✓ grün, …")
    );
    let body = m.body_text(0).expect("text").to_string();
    for n in 1..=3 {
        assert!(body.contains(&format!("build {n} of kernel")), "{body}");
    }
    assert_eq!(
        pending_lines(&state, "digest"),
        0,
        "sent digests are forgotten"
    );

    // A short period: sent by the timer.
    let b = args("500ms");
    let _third = KillOnDrop(start(
        &url,
        &state,
        &b.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    health(&mut w, "digest", HealthState::Up).await;
    send(
        &p,
        Envelope::builder("signalbox/dev/koji/build/complete", "build 4 of kernel")
            .build()
            .expect("env"),
    )
    .await;
    let m2 = smtp.next().await;
    let m = parse(&m2.data);
    assert_eq!(m.subject(), Some("[signalbox digest] build 4 of kernel"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_into_a_maildir_and_through_a_sendmail_program() {
    let broker = embedded_broker();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let maildir = dir.path().join("Maildir");
    let captured = dir.path().join("sendmail.out");
    let sendmail = dir.path().join("fake-sendmail");
    std::fs::write(
        &sendmail,
        format!(
            "#!/bin/sh\necho \"ARGS $*\" > {out}.tmp\ncat >> {out}.tmp\nmv {out}.tmp {out}\n",
            out = captured.display()
        ),
    )
    .expect("script");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sendmail, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut w = watch(&url, &["signalbox/_health/+"]).await;
    let _md = KillOnDrop(start(
        &url,
        &dir.path().join("s1"),
        &[
            "email",
            "--name",
            "archive",
            "--filter",
            "signalbox/dev/cron/#",
            "--maildir",
            maildir.to_str().expect("utf8"),
            "--to",
            "ops@example.org",
        ],
    ));
    let _sm = KillOnDrop(start(
        &url,
        &dir.path().join("s2"),
        &[
            "email",
            "--name",
            "via-sendmail",
            "--filter",
            "signalbox/dev/cron/#",
            "--sendmail",
            sendmail.to_str().expect("utf8"),
            "--to",
            "ops@example.org",
            "--from",
            "bus@example.org",
        ],
    ));
    health(&mut w, "archive", HealthState::Up).await;
    health(&mut w, "via-sendmail", HealthState::Up).await;

    let out = signalbox_cli(
        &url,
        &[
            "pub",
            "signalbox/dev/cron/backup/finished",
            "backup fertig: 42 GiB — ok",
            "--severity",
            "warning",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let deadline = tokio::time::Instant::now() + WAIT;
    let file = loop {
        let found = std::fs::read_dir(maildir.join("new"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok());
        if let Some(entry) = found {
            break entry.path();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a mail in Maildir/new"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        std::fs::read_dir(maildir.join("tmp")).expect("tmp").count(),
        0,
        "nothing left in tmp"
    );
    let bytes = std::fs::read(&file).expect("read");
    let m = parse(&bytes);
    assert_eq!(m.subject(), Some("backup fertig: 42 GiB — ok"));
    assert_eq!(
        header(&m, "X-Signalbox-Topic"),
        "signalbox/dev/cron/backup/finished"
    );
    assert!(m.body_text(0).expect("text").contains("Severity:  warning"));

    let text = wait_file(&captured, |t| {
        t.contains("backup fertig") || t.contains("Subject:")
    })
    .await;
    let (args, mail) = text.split_once('\n').expect("args line");
    assert!(
        args.contains("-f bus@example.org") && args.ends_with("ops@example.org"),
        "{args}"
    );
    assert_eq!(
        parse(mail.as_bytes()).subject(),
        Some("backup fertig: 42 GiB — ok")
    );
}

#[test]
fn bad_configuration_is_refused_at_start_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("file");
    let under_file = file.join("Maildir");
    let base = ["email", "--name", "m", "--filter", "signalbox/dev/#"];
    let url = "mqtt://127.0.0.1:9";
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let cases: [(Vec<String>, &str); 6] = [
        (
            with(&["--smtp", "http://mail.example.org", "--to", "a@example.org"]),
            "--smtp",
        ),
        (
            with(&[
                "--maildir",
                under_file.to_str().expect("utf8"),
                "--to",
                "a@example.org",
            ]),
            "--maildir",
        ),
        (
            with(&[
                "--sendmail",
                "/nonexistent/sendmail",
                "--to",
                "a@example.org",
            ]),
            "--sendmail",
        ),
        (
            with(&[
                "--maildir",
                dir.path().join("md").to_str().expect("utf8"),
                "--to",
                "not an address",
            ]),
            "--to",
        ),
        (
            with(&[
                "--maildir",
                dir.path().join("md").to_str().expect("utf8"),
                "--to-field",
                "body.owner",
            ]),
            "--to-field",
        ),
        (with(&["--to", "a@example.org"]), "--smtp"),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_bridge(url, dir.path(), &args);
        if needle == "--smtp" && !args.contains(&"--smtp") {
            // clap's own message for a missing output spans several lines.
            assert_eq!(out.code, 2, "{}", out.stderr);
            assert!(out.stderr.contains("--smtp"), "{}", out.stderr);
            continue;
        }
        assert_config_error(&out, needle);
    }
}
