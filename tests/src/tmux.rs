//! A tmux server of a test's own (private socket, killed on drop) for
//! driving the console end to end: send-keys in, capture-pane out. Used by
//! the console's own tests (tui/tests) and the fault tests.

use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server of its own, killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(width: u16, height: u16, command: &str) -> Option<Tmux> {
        let socket = format!(
            "signalbox-test-{}-{}",
            std::process::id(),
            crate::free_port()
        );
        let status = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .arg(command)
            .env("SIGNALBOX_CONFIG", "")
            .env_remove("SIGNALBOX_BROKER")
            .env_remove("NO_COLOR")
            .env("TERM", "xterm-256color")
            .status()
            .ok()?;
        status.success().then_some(Tmux { socket })
    }

    pub fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        for key in keys {
            let ok = Command::new("tmux")
                .args(["-L", &self.socket, "send-keys", key])
                .status()
                .expect("send-keys");
            assert!(ok.success());
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    /// Waits until the screen contains every text; panics with the screen
    /// after 15 s.
    pub fn wait_for(&self, texts: &[&str]) -> String {
        self.wait_for_within(texts, Duration::from_secs(15))
    }

    /// Like [`Tmux::wait_for`] with a given limit.
    pub fn wait_for_within(&self, texts: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.capture();
            if texts.iter().all(|t| screen.contains(t)) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {texts:?}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

pub fn tmux_available() -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("SIGNALBOX_REQUIRE_TMUX").is_none(),
            "tmux is required (SIGNALBOX_REQUIRE_TMUX) but missing"
        );
        eprintln!("SKIPPED: tmux is not installed; the console's end-to-end test did not run");
    }
    found
}
