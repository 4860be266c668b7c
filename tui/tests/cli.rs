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

#[test]
fn the_theme_flag_takes_a_name_or_a_file_and_names_the_bad_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mine.toml");
    for (text, needle) in [
        (
            "selection_bg = \"#112233\"\ndanger_fgg = \"red\"\n",
            "unknown key `danger_fgg`",
        ),
        (
            "ok_fg = \"greenish\"\n",
            "`ok_fg` = \"greenish\" is not a colour",
        ),
        ("ok_fg = 3\n", "`ok_fg` must be a colour string"),
        ("ok_fg = \"green\"\nbroken line\n", "line 2"),
    ] {
        std::fs::write(&file, text).expect("write");
        for args in [vec!["--theme"], vec!["demo", "--theme"]] {
            let out = signalbox()
                .args(&args)
                .arg(&file)
                .write_stdin("")
                .assert()
                .code(2)
                .get_output()
                .clone();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(needle), "{args:?} {text:?}: {stderr}");
            assert!(stderr.contains("mine.toml"), "names the file: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        }
    }
    signalbox()
        .args(["--theme", "nope"])
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(contains(
            "unknown theme `nope` (bundled: default, light, high-contrast, solarized",
        ));
    // A good theme (bundled or a file) gets as far as the terminal check,
    // and the flag wins over a bad SIGNALBOX_THEME.
    std::fs::write(&file, "selection_bg = \"#112233\"\n").expect("write");
    for theme in ["solarized", file.to_str().expect("utf-8 path")] {
        signalbox()
            .args(["--theme", theme])
            .env("SIGNALBOX_THEME", "nope")
            .write_stdin("")
            .assert()
            .code(2)
            .stderr(contains("the console needs a terminal"));
    }
    signalbox()
        .env("SIGNALBOX_THEME", "nope")
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(contains("unknown theme `nope`"));
    signalbox()
        .args(["--theme", "light", "tail"])
        .assert()
        .code(2)
        .stderr(contains("--theme only applies to the console"));
}
