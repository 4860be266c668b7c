//! The `signalbox` binary's flags: help with examples, version, and what
//! happens without a command (the console, which needs a terminal).
//! (Broker-backed behaviour is tested end to end in the signalbox-e2e
//! crate; this target also makes `cargo test` build the binary those tests
//! run.)

use assert_cmd::Command;
use predicates::str::contains;

fn signalbox() -> Command {
    let mut cmd = Command::cargo_bin("signalbox").expect("binary built");
    cmd.env("SIGNALBOX_CONFIG", "")
        .env_remove("SIGNALBOX_BROKER");
    cmd
}

#[test]
fn help_lists_commands_and_examples() {
    signalbox()
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("pub"))
        .stdout(contains("tail"))
        .stdout(contains("broker"))
        .stdout(contains("Examples:"))
        .stdout(contains("SIGNALBOX_BROKER"));
    for cmd in ["pub", "tail", "broker", "config"] {
        signalbox()
            .args([cmd, "--help"])
            .assert()
            .success()
            .stdout(contains("Examples:"));
    }
}

#[test]
fn version_is_printed() {
    signalbox()
        .arg("--version")
        .assert()
        .success()
        .stdout(contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn no_command_opens_the_console_which_needs_a_terminal() {
    // Without a terminal (CI, a pipe) the console says so in one line and
    // exits 2 at once instead of hanging; the console itself is tested in
    // tmux (console_tmux.rs).
    let out = signalbox()
        .write_stdin("")
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the console needs a terminal"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    signalbox()
        .arg("--embedded")
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(contains("needs a terminal"));
}

#[test]
fn an_invalid_theme_or_key_table_is_a_one_line_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    for (text, needle) in [
        (
            "[theme]\nselction_bg = \"blue\"\n",
            "unknown key `selction_bg`",
        ),
        ("[theme]\nselection_bg = \"bluish\"\n", "`selection_bg`"),
        ("[theme]\nname = \"nope\"\n", "unknown theme `nope`"),
        ("[keys]\nack = \"hyper-a\"\n", "`ack`"),
    ] {
        std::fs::write(&config, text).expect("write");
        // Checked before the terminal, so a bad file is reported anywhere.
        let out = signalbox()
            .arg("--config")
            .arg(&config)
            .write_stdin("")
            .assert()
            .code(2)
            .get_output()
            .clone();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{text}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
}
