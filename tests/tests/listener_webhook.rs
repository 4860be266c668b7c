//! `signalbox-bridge webhook` as a real process against the embedded
//! broker and a scripted HTTP endpoint on 127.0.0.1: signed POSTs from a
//! `signalbox pub`, a 5xx retried then recorded and replayed once the
//! endpoint answers 200, a 4xx recorded at once without retries, and bad
//! configuration refused at start.

mod outbound_support;

use std::time::Duration;

use hmac::{Hmac, Mac};
use outbound_support::*;
use sha2::Sha256;
use signalbox_common::envelope::Envelope;
use signalbox_common::health::HealthState;
use signalbox_e2e::{embedded_broker, KillOnDrop};

fn expected_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("key");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_signed_envelopes_retries_5xx_records_and_replays_and_does_not_retry_4xx() {
    let broker = embedded_broker();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut hook = HttpReceiver::start(&[200]).await;
    let mut w = watch(
        &url,
        &["signalbox/_health/tracker", "signalbox/_failed/tracker/+"],
    )
    .await;
    let _listener = KillOnDrop(start(
        &url,
        dir.path(),
        &[
            "webhook",
            "--name",
            "tracker",
            "--filter",
            "signalbox/dev/git/#",
            "--url",
            &hook.url(),
            "--secret",
            "s3cret",
            "--header",
            "Authorization: Bearer t0ken",
            "--retries",
            "2",
        ],
    ));
    health(&mut w, "tracker", HealthState::Up).await;

    // End to end from `signalbox pub`.
    let out = signalbox_cli(
        &url,
        &[
            "pub",
            "signalbox/dev/git/kernel/commit",
            "jkeating pushed to kernel: \"fix oops in ext4\" ✓",
            "--link",
            "url=https://git.example.org/kernel/c/1",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = hook.next().await;
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hook"));
    let envelope = Envelope::from_slice(&r.body).expect("the body is the envelope");
    assert_eq!(
        envelope.summary,
        "jkeating pushed to kernel: \"fix oops in ext4\" ✓"
    );
    assert_eq!(
        r.headers.get("x-signalbox-signature"),
        Some(&expected_signature(b"s3cret", &r.body))
    );
    assert_eq!(
        r.headers.get("x-signalbox-id"),
        Some(&envelope.id.to_string())
    );
    assert_eq!(
        r.headers.get("x-signalbox-topic").map(String::as_str),
        Some("signalbox/dev/git/kernel/commit")
    );
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(
        r.headers.get("authorization").map(String::as_str),
        Some("Bearer t0ken")
    );

    // 500: retried (--retries 2), then recorded with status and body.
    hook.script(&[500]);
    let p = client(&url).await;
    let bad = send(
        &p,
        Envelope::builder("signalbox/dev/git/kernel/commit", "second push")
            .build()
            .expect("env"),
    )
    .await;
    assert_eq!(hook.next().await.status, 500);
    assert_eq!(hook.next().await.status, 500);
    let rec = record(&mut w, &bad.id.to_string()).await;
    assert!(rec.error.starts_with("HTTP 500"), "{}", rec.error);
    assert!(
        rec.error.contains("status 500 from the test receiver"),
        "{}",
        rec.error
    );

    // Fixed: `signalbox failed replay` runs it again and clears the record.
    hook.script(&[200]);
    let out = signalbox_cli(
        &url,
        &["failed", "replay", &bad.id.to_string(), "--wait", "10"],
    )
    .await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let again = hook.next().await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.headers.get("x-signalbox-replay").map(String::as_str),
        Some("1")
    );
    assert_eq!(again.body, bad.to_vec(), "the stored message, unchanged");
    record_cleared(&mut w, &bad.id.to_string()).await;

    // 404: recorded at once, no retries in process.
    hook.script(&[404]);
    let gone = send(
        &p,
        Envelope::builder("signalbox/dev/git/kernel/commit", "third push")
            .build()
            .expect("env"),
    )
    .await;
    assert_eq!(hook.next().await.status, 404);
    let rec = record(&mut w, &gone.id.to_string()).await;
    assert!(rec.error.starts_with("HTTP 404"), "{}", rec.error);
    assert_eq!(rec.attempts, 1);
    assert!(
        hook.next_within(Duration::from_millis(1500))
            .await
            .is_none(),
        "a 4xx is not retried"
    );
}

#[test]
fn bad_configuration_is_refused_at_start_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = ["webhook", "--name", "w", "--filter", "signalbox/dev/#"];
    let url = "mqtt://127.0.0.1:9"; // never contacted: the checks come first
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let cases: [(Vec<String>, &str); 4] = [
        (with(&["--url", "not a url"]), "--url"),
        (
            with(&["--url", "ftp://example.org/x"]),
            "http:// or https://",
        ),
        (
            with(&["--url", "http://127.0.0.1/x", "--header", "no separator"]),
            "--header",
        ),
        (
            with(&[
                "--url",
                "http://127.0.0.1/x",
                "--secret-file",
                "/nonexistent/secret",
            ]),
            "--secret-file",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_bridge(url, dir.path(), &args);
        assert_config_error(&out, needle);
    }
}
