//! The full demo in a terminal: `signalbox demo` in a detached tmux
//! session shows the dashboard with traffic from every simulated system,
//! the listeners, and quits cleanly (everything it started stops).

use std::time::Duration;

use signalbox_e2e::tmux::{tmux_available, Tmux};

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");

#[test]
fn the_demo_fills_the_dashboard_and_quits_cleanly() {
    if !tmux_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let command = format!(
        "'{BIN}' demo --speed 4 --seed 3 --dir '{}'; echo EXITED rc=$?; sleep 60",
        dir.path().display()
    );
    let tmux = Tmux::start(140, 40, &command).expect("tmux session starts");
    // Traffic from the simulated systems reaches the dashboard.
    tmux.wait_for_within(
        &["1 Dashboard", "connected", "Messages/s", "git", "koji"],
        Duration::from_secs(60),
    );
    // The overall rate is non-zero while the simulation runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let screen = tmux.capture();
        let all = screen
            .lines()
            .find(|l| l.contains("│all "))
            .unwrap_or_default()
            .to_string();
        if !all.is_empty() && !all.contains(" 0/s ") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no traffic on the dashboard:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    tmux.keys(&["4"]);
    tmux.wait_for_within(
        &["Listeners ·", "koji", "bugzilla-hook", "aliases"],
        Duration::from_secs(30),
    );
    tmux.keys(&["q"]);
    let screen = tmux.wait_for_within(&["EXITED rc=0"], Duration::from_secs(30));
    assert!(screen.contains("signalbox demo: stopped"), "{screen}");
    // Every listener process the demo started is gone (their scripts name
    // the work directory).
    let leftover = std::process::Command::new("pgrep")
        .args([
            "-f",
            &format!("bridge exec --name .*{}", dir.path().display()),
        ])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&leftover.stdout).trim().is_empty(),
        "processes left running: {}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}
