//! The `signalbox` binary's flags: help with examples, version, and the
//! exit code of a missing command. (Broker-backed behaviour is tested end to
//! end in the signalbox-e2e crate; this target also makes `cargo test`
//! build the binary those tests run.)

use assert_cmd::Command;
use predicates::str::contains;

fn signalbox() -> Command {
    let mut cmd = Command::cargo_bin("signalbox").expect("binary built");
    cmd.env("SIGNALBOX_CONFIG", "").env_remove("SIGNALBOX_BROKER");
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
        signalbox().args([cmd, "--help"]).assert().success().stdout(contains("Examples:"));
    }
}

#[test]
fn version_is_printed() {
    signalbox().arg("--version").assert().success().stdout(contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn no_command_is_a_usage_error_for_now() {
    signalbox().assert().code(2).stderr(contains("console is not built yet"));
}
