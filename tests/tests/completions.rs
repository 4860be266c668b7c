//! Generated operator aids: shell completions for each shell, man pages for
//! every command of both binaries, and `signalbox config init` writing a
//! file the real loader accepts.

use std::time::Duration;

use signalbox_e2e::{run_with_limit, signalbox};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn completions_generate_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        for bridge in [false, true] {
            let mut cmd = signalbox("mqtt://127.0.0.1:1");
            cmd.args(["completions", shell]);
            if bridge {
                cmd.arg("--bridge");
            }
            let out = run_with_limit(&mut cmd, LIMIT);
            assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
            let words: &[&str] = if bridge {
                &["recorder", "keep", "webhook"]
            } else {
                &[
                    "history",
                    "since",
                    "replay",
                    "to-topic-prefix",
                    "completions",
                ]
            };
            for word in words {
                assert!(
                    out.stdout.contains(word),
                    "{shell} (bridge: {bridge}) completes {word}"
                );
            }
            if shell == "bash" {
                // The script is valid bash.
                let dir = tempfile::tempdir().expect("tempdir");
                let file = dir.path().join("completion.bash");
                std::fs::write(&file, &out.stdout).expect("write");
                let status = std::process::Command::new("bash")
                    .arg("-n")
                    .arg(&file)
                    .status()
                    .expect("bash -n");
                assert!(status.success(), "bash -n on the completion script");
            }
        }
    }
    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.args(["completions", "tcsh"]);
    let out = run_with_limit(&mut cmd, LIMIT);
    assert_eq!(out.code, 2, "an unknown shell is a usage error");
}

#[test]
fn man_pages_generate_for_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let man = dir.path().join("man1");
    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.arg("man").arg(&man);
    let out = run_with_limit(&mut cmd, LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for page in [
        "signalbox.1",
        "signalbox-history.1",
        "signalbox-record.1",
        "signalbox-replay.1",
        "signalbox-failed-replay.1",
        "signalbox-config-init.1",
        "signalbox-bridge.1",
        "signalbox-bridge-recorder.1",
        "signalbox-bridge-mail.1",
    ] {
        let path = man.join(page);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is roff"
        );
        assert!(
            out.stdout.contains(&path.display().to_string()),
            "{page} listed"
        );
    }
    let history = std::fs::read_to_string(man.join("signalbox-history.1")).expect("page");
    assert!(history.contains("since"), "flags documented");
    assert!(
        !man.join("signalbox-help.1").exists(),
        "no page for the help pseudo-command"
    );
    assert!(!man.join("signalbox-bridge-help.1").exists());
}

#[test]
fn config_init_writes_a_file_the_loader_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("etc/signalbox/config.toml");
    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.args(["config", "init"]).arg(&path);
    let out = run_with_limit(&mut cmd, LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&path).expect("written");
    assert!(text.contains("[history]"));

    // The real loader reads it (every value from the file, none from env).
    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.env_remove("SIGNALBOX_BROKER")
        .env("SIGNALBOX_CONFIG", &path)
        .args(["config", "--json"]);
    let out = run_with_limit(&mut cmd, LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(doc["file_loaded"], true);
    assert_eq!(doc["settings"]["broker"]["value"], "mqtt://127.0.0.1:1883");
    assert!(
        doc["settings"]["broker"]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("file")),
        "{doc}"
    );

    // Not overwritten without --force.
    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.args(["config", "init"]).arg(&path);
    let out = run_with_limit(&mut cmd, LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    let mut cmd = signalbox("mqtt://127.0.0.1:1");
    cmd.args(["config", "init", "--force"]).arg(&path);
    assert_eq!(run_with_limit(&mut cmd, LIMIT).code, 0);
}
