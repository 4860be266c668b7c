//! signalbox-e2e: helpers for the end-to-end tests in `tests/tests/`.
//!
//! The tests drive the real binaries against real brokers on 127.0.0.1:
//! the embedded broker in-process, and a private mosquitto started per test
//! on a free port and killed by its pid when the guard drops. When
//! mosquitto is not installed, tests that need it fail if
//! `SIGNALBOX_REQUIRE_MOSQUITTO=1` (as in CI) and otherwise say loudly that
//! they skipped.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use signalbox_common::broker::{BrokerOptions, EmbeddedBroker};

pub mod rabbit;
pub mod tmux;

/// A free TCP port on 127.0.0.1 (released before return; the window until
/// the caller binds it is short).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Starts an embedded broker on ephemeral ports (it lives until the test
/// process exits).
pub fn embedded_broker() -> EmbeddedBroker {
    EmbeddedBroker::start(&BrokerOptions::ephemeral()).expect("embedded broker starts")
}

/// Path of a workspace binary (`signalbox`, `signalbox-bridge`). The first
/// call per test process runs `cargo build --bins` so that a test never runs
/// a stale binary (a no-op when it is fresh).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = target_dir().file_name().is_some_and(|n| n == "release");
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--workspace", "--bins"])
            .args(release.then_some("--release"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bins failed");
    });
    let path = target_dir().join(name);
    assert!(path.exists(), "binary {} not found", path.display());
    path
}

fn target_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps/, bench binaries in
    // target/<profile>/.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("directory of the executable");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()
            .map(Path::to_path_buf)
            .expect("target directory")
    } else {
        dir.to_path_buf()
    }
}

/// A `Command` for the `signalbox` binary with a private, empty
/// configuration (no user config file leaks into tests).
pub fn signalbox(broker_url: &str) -> Command {
    let mut cmd = Command::new(bin("signalbox"));
    isolate(&mut cmd);
    cmd.env("SIGNALBOX_BROKER", broker_url);
    cmd
}

/// A `Command` for the `signalbox-bridge` binary with a private
/// configuration, state and spool under `state`, publishing to `broker`.
pub fn signalbox_bridge(broker: &str, state: &Path) -> Command {
    let mut cmd = Command::new(bin("signalbox-bridge"));
    isolate(&mut cmd);
    cmd.env("SIGNALBOX_BROKER", broker)
        .env("SIGNALBOX_STATE_DIR", state);
    cmd
}

/// Runs `signalbox pub ARGS…` against `url`; panics unless it exits 0.
pub fn publish(url: &str, args: &[&str]) {
    let out = run_with_limit(
        signalbox(url).arg("pub").args(args),
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 0, "pub {args:?} failed: {}", out.stderr);
}

/// Starts `signalbox tail ARGS…` and waits until it printed the retained
/// marker message published beforehand on `ready_topic`, so that it is
/// known to be subscribed. `args` must include a filter that matches
/// `ready_topic`; on a broker that delivers retained messages only to
/// exact subscriptions (RabbitMQ), pass `ready_topic` itself as a filter.
pub fn tail_ready(url: &str, ready_topic: &str, args: &[&str]) -> (KillOnDrop, LineReader) {
    publish(url, &["--retain", ready_topic, "ready"]);
    let mut child = signalbox(url)
        .arg("tail")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tail");
    let lines = LineReader::new(&mut child);
    let child = KillOnDrop(child);
    let first = lines
        .next_line(Duration::from_secs(30))
        .expect("tail prints the retained ready message");
    assert!(
        first.contains(ready_topic) && first.contains("ready"),
        "{first}"
    );
    (child, lines)
}

/// A `Command` for `signalbox broker ARGS…` (the embedded broker as its own
/// process) with a private configuration.
pub fn signalbox_broker_command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new(bin("signalbox"));
    isolate(&mut cmd);
    cmd.arg("broker").args(args);
    cmd
}

/// Starts `signalbox broker ARGS…` and waits for the banner's last line;
/// returns the process (killed by pid on drop) and the banner's lines.
pub fn start_signalbox_broker<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (KillOnDrop, Vec<String>) {
    let mut child = signalbox_broker_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn signalbox broker");
    let lines = LineReader::new(&mut child);
    let child = KillOnDrop(child);
    let mut banner = Vec::new();
    loop {
        let line = lines
            .next_line(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the broker printed no banner: {banner:?}"));
        let last = line.contains("Ctrl-C stops it");
        banner.push(line);
        if last {
            return (child, banner);
        }
    }
}

/// Clears `SIGNALBOX_*` variables and points config and state at a
/// directory that holds nothing.
pub fn isolate(cmd: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("SIGNALBOX_") {
            cmd.env_remove(key);
        }
    }
    let empty = empty_dir();
    cmd.env("SIGNALBOX_CONFIG", "")
        .env("XDG_CONFIG_HOME", empty.join("config"))
        .env("SIGNALBOX_STATE_DIR", empty.join("state"))
        .env("NO_COLOR", "1");
}

fn empty_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path()
}

/// Output of a finished process.
pub struct Finished {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs a command to completion, killing it after `limit`.
pub fn run_with_limit(cmd: &mut Command, limit: Duration) -> Finished {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_with_limit(child, limit)
}

/// Waits for a spawned child (stdout/stderr piped), killing it after
/// `limit`.
pub fn wait_with_limit(mut child: Child, limit: Duration) -> Finished {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    let code = status.and_then(|s| s.code()).unwrap_or(-1);
    Finished {
        code,
        stdout,
        stderr,
    }
}

/// A child process killed (by pid) when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads lines from a child's stdout on a thread, so tests can wait for
/// output with a deadline.
pub struct LineReader {
    rx: std::sync::mpsc::Receiver<String>,
}

impl LineReader {
    /// Starts reading the child's stdout (which must be piped).
    pub fn new(child: &mut Child) -> LineReader {
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineReader { rx }
    }

    /// The next line, or `None` after `limit`.
    pub fn next_line(&self, limit: Duration) -> Option<String> {
        self.rx.recv_timeout(limit).ok()
    }
}

/// A private mosquitto on a free 127.0.0.1 port, killed by pid on drop.
pub struct Mosquitto {
    child: Child,
    /// Its port.
    pub port: u16,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the broker (SIGKILL, or SIGTERM when `graceful`, which lets a
    /// persistent mosquitto save its state) and starts it again on the same
    /// port with the same configuration and data.
    pub fn restart(&mut self, graceful: bool) {
        self.stop(graceful);
        self.start_again();
    }

    /// Stops the broker (SIGKILL, or SIGTERM when `graceful`) and waits
    /// for it to exit; [`Mosquitto::start_again`] brings it back.
    pub fn stop(&mut self, graceful: bool) {
        if graceful {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
        } else {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing
    /// answers, as in a network partition. [`Mosquitto::resume`] ends it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(sig)
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} mosquitto");
    }

    /// Starts the broker again on the same port with the same
    /// configuration and data (after [`Mosquitto::stop`]).
    pub fn start_again(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = launch(&self.conf, self.port) {
                self.child = child;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("mosquitto did not restart on port {}", self.port);
    }
}

/// Starts mosquitto with `conf` and waits until it listens on `port`.
fn launch(conf: &Path, port: u16) -> Option<Child> {
    let mut child = Command::new("mosquitto")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        if let Ok(Some(_)) = child.try_wait() {
            return None; // the port is taken
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether tests must fail rather than skip without mosquitto.
pub fn mosquitto_required() -> bool {
    std::env::var("SIGNALBOX_REQUIRE_MOSQUITTO").is_ok_and(|v| v == "1")
}

/// Starts a private mosquitto on a free port, or returns `None` (after a
/// loud message) when it is not installed and not required.
pub fn mosquitto(test: &str) -> Option<Mosquitto> {
    start_mosquitto(test, None, false, "")
}

/// Like [`mosquitto`], with `persistence true` in a private directory (so
/// that sessions and retained messages survive [`Mosquitto::restart`]).
pub fn mosquitto_persistent(test: &str) -> Option<Mosquitto> {
    start_mosquitto(test, None, true, "")
}

/// Starts a private mosquitto on `port` (e.g. to restart a killed one).
pub fn mosquitto_on_port(test: &str, port: u16) -> Option<Mosquitto> {
    start_mosquitto(test, Some(port), false, "")
}

/// Like [`mosquitto`] (with persistence when `persistent`), with
/// `extra_conf` appended to the configuration file: e.g. a bridge to
/// another broker (`connection`, `address`, `topic`, …; mosquitto applies
/// each bridge option to the `connection` line above it, so they come
/// after the general options).
pub fn mosquitto_with(test: &str, persistent: bool, extra_conf: &str) -> Option<Mosquitto> {
    start_mosquitto(test, None, persistent, extra_conf)
}

fn start_mosquitto(
    test: &str,
    port: Option<u16>,
    persistent: bool,
    extra_conf: &str,
) -> Option<Mosquitto> {
    if !mosquitto_installed(test) {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // mosquitto started as root drops to its own user, which must be able
    // to write its persistence file here.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777));
    }
    let conf = dir.path().join("mosquitto.conf");
    // A fixed port may take a moment to be free again; a free one may be
    // taken meanwhile: retry either way.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let port = port.unwrap_or_else(free_port);
        let persistence = if persistent {
            format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                dir.path().display()
            )
        } else {
            "persistence false\n".to_string()
        };
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}max_inflight_messages 1000\nmax_queued_messages 1000000\n{extra_conf}\n"
            ),
        )
        .expect("write mosquitto.conf");
        if let Some(child) = launch(&conf, port) {
            return Some(Mosquitto {
                child,
                port,
                conf,
                _dir: dir,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{test}: mosquitto did not start");
}

fn mosquitto_installed(test: &str) -> bool {
    let runs = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if runs("mosquitto", "-h") && runs("mosquitto_pub", "--help") {
        return true;
    }
    assert!(
        !mosquitto_required(),
        "{test}: mosquitto and mosquitto-clients are required (SIGNALBOX_REQUIRE_MOSQUITTO=1) but not installed"
    );
    eprintln!("\n!!! SKIPPED {test}: mosquitto/mosquitto-clients not installed (apt-get install mosquitto mosquitto-clients) !!!\n");
    false
}

/// Logs of in-process components on stderr when `SIGNALBOX_TEST_LOG` holds
/// a filter (e.g. `debug`), for debugging a test.
pub fn test_logging() {
    if let Ok(filter) = std::env::var("SIGNALBOX_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A configuration for in-process listeners and clients: `broker`, a
/// private state directory, a short health interval, nothing from the
/// environment or the user's files.
pub fn test_config(
    broker: &str,
    state_dir: &Path,
    health_interval: u64,
) -> signalbox_common::config::Config {
    test_logging();
    let file = state_dir.join("empty-config.toml");
    std::fs::create_dir_all(state_dir).expect("state dir");
    std::fs::write(&file, "").expect("config file");
    let flags = signalbox_common::config::Overrides {
        config_file: Some(file),
        broker: Some(broker.to_string()),
        state_dir: Some(state_dir.to_path_buf()),
        health_interval: Some(health_interval),
        ..Default::default()
    };
    signalbox_common::config::Config::resolve_with(&flags, |_| None).expect("test config")
}
