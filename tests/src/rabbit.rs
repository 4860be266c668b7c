//! Private RabbitMQ nodes (Debian's `rabbitmq-server`, 3.10, with the MQTT
//! plugin) for the tests: one node, or a cluster of nodes on 127.0.0.1.
//!
//! Each node gets its own name, ports, data and log directories, config
//! and plugin files, all in a temporary directory that belongs to the
//! `rabbitmq` user (the server drops to it and dies with `eacces`
//! otherwise). Every listener, the node-to-node port and the port mapper
//! (`epmd`, which this module starts itself on a private port so that it
//! can stop it by pid) listen on 127.0.0.1 only. Nodes are killed by pid
//! when dropped.
//!
//! A node takes 10–15 s to start on this kind of machine: start one per
//! test binary and run the scenarios in sequence on it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{free_port, Finished};

/// How long a node may take to open its MQTT port.
const START_LIMIT: Duration = Duration::from_secs(90);

/// Whether tests must fail rather than skip without RabbitMQ
/// (`SIGNALBOX_REQUIRE_RABBITMQ=1`, which `.ci/run` sets).
pub fn rabbitmq_required() -> bool {
    std::env::var("SIGNALBOX_REQUIRE_RABBITMQ").is_ok_and(|v| v == "1")
}

/// Whether `rabbitmq-server` is installed; when it is not, fails the test
/// if it is required and otherwise says loudly that `test` is skipped.
pub fn rabbitmq_installed(test: &str) -> bool {
    let found = ["rabbitmq-server", "rabbitmqctl", "epmd"]
        .iter()
        .all(|cmd| which(cmd).is_some());
    if found && users_exist() {
        return true;
    }
    assert!(
        !rabbitmq_required(),
        "{test}: rabbitmq-server is required (SIGNALBOX_REQUIRE_RABBITMQ=1) but not installed (apt-get install rabbitmq-server)"
    );
    eprintln!("\n!!! SKIPPED {test}: rabbitmq-server not installed (apt-get install rabbitmq-server) !!!\n");
    false
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(cmd))
            .find(|p| p.is_file())
    })
}

/// The `rabbitmq` user the server runs as.
fn users_exist() -> bool {
    Command::new("id")
        .arg("rabbitmq")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Erlang port mapper for this test's nodes, on a private port;
/// stopped by pid when the last node using it is dropped.
struct Epmd {
    child: Child,
    port: u16,
}

impl Epmd {
    fn start() -> Epmd {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let port = free_port();
            let mut child = Command::new("epmd")
                .args(["-port", &port.to_string(), "-address", "127.0.0.1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start epmd");
            let up = Instant::now() + Duration::from_secs(3);
            while Instant::now() < up {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Epmd { child, port };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken meanwhile
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("epmd did not start");
    }
}

impl Drop for Epmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One private RabbitMQ node; killed by pid on drop.
pub struct RabbitNode {
    /// Erlang node name, `NAME@localhost`.
    pub node: String,
    /// MQTT port.
    pub mqtt_port: u16,
    /// AMQP 0-9-1 port.
    pub amqp_port: u16,
    dist_port: u16,
    /// The `su` wrapper the server runs under.
    child: Option<Child>,
    /// The Erlang VM (beam.smp) itself, from the pid file.
    beam_pid: Option<u32>,
    epmd: Arc<Epmd>,
    dir: tempfile::TempDir,
}

impl RabbitNode {
    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.mqtt_port)
    }

    /// The Erlang VM's process id.
    pub fn pid(&self) -> Option<u32> {
        self.beam_pid
    }

    /// Kills the node outright (SIGKILL to its Erlang VM), as a crash
    /// would, and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(pid) = self.beam_pid.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() {
                if is_zombie(pid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `rabbitmqctl -n NODE ARGS…` against this node (bounded to 60 s).
    pub fn ctl(&self, args: &[&str]) -> Finished {
        let mut cmd = Command::new("rabbitmqctl");
        cmd.arg("-n").arg(&self.node).args(args);
        cmd.env("ERL_EPMD_PORT", self.epmd.port.to_string());
        let finished = crate::run_with_limit(&mut cmd, Duration::from_secs(60));
        assert!(
            finished.code != -1,
            "rabbitmqctl {args:?} ran past 60 s or was killed"
        );
        finished
    }

    /// Makes this node join `other`'s cluster (`stop_app`, `join_cluster`,
    /// `start_app`); panics with rabbitmqctl's output when it fails.
    pub fn join(&self, other: &RabbitNode) {
        for args in [
            vec!["stop_app"],
            vec!["join_cluster", other.node.as_str()],
            vec!["start_app"],
        ] {
            let out = self.ctl(&args);
            assert!(
                out.code == 0,
                "rabbitmqctl {args:?} on {}: {}{}",
                self.node,
                out.stdout,
                out.stderr
            );
        }
        wait_for_port(self.mqtt_port, START_LIMIT)
            .unwrap_or_else(|| panic!("{}: MQTT port closed after joining", self.node));
    }

    /// The node's log (for a failing test's message).
    pub fn log(&self) -> String {
        let dir = self.dir.path().join("log");
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if let Ok(s) = std::fs::read_to_string(entry.path()) {
                    text.push_str(&s);
                }
            }
        }
        text
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.kill();
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn wait_for_port(port: u16, limit: Duration) -> Option<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Starts one private node, or returns `None` (after a loud message) when
/// RabbitMQ is not installed and not required.
pub fn rabbitmq(test: &str) -> Option<RabbitNode> {
    if !rabbitmq_installed(test) {
        return None;
    }
    let epmd = Arc::new(Epmd::start());
    let node = start_node(test, &epmd);
    Some(node)
}

/// Starts `n` private nodes and joins them into one cluster (the first is
/// the one the others join), or `None` as [`rabbitmq`].
pub fn rabbitmq_cluster(test: &str, n: usize) -> Option<Vec<RabbitNode>> {
    if !rabbitmq_installed(test) {
        return None;
    }
    let epmd = Arc::new(Epmd::start());
    // Start them side by side: each takes 10-15 s.
    let nodes: Vec<RabbitNode> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(|| start_node(test, &epmd)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("node start"))
            .collect()
    });
    for node in &nodes[1..] {
        node.join(&nodes[0]);
    }
    Some(nodes)
}

static NODE_SEQ: AtomicU32 = AtomicU32::new(0);

fn start_node(test: &str, epmd: &Arc<Epmd>) -> RabbitNode {
    let seq = NODE_SEQ.fetch_add(1, Ordering::SeqCst);
    let name = format!("sbx{}n{seq}", std::process::id());
    let node = format!("{name}@localhost");
    let dir = tempfile::Builder::new()
        .prefix("signalbox-rabbit")
        .tempdir()
        .expect("tempdir");
    let (mqtt_port, amqp_port, dist_port) = (free_port(), free_port(), free_port());
    let mnesia = dir.path().join("mnesia");
    let logs = dir.path().join("log");
    std::fs::create_dir_all(&mnesia).expect("mnesia dir");
    std::fs::create_dir_all(&logs).expect("log dir");
    let conf = dir.path().join("rabbitmq.conf");
    std::fs::write(
        &conf,
        format!(
            "listeners.tcp.default = 127.0.0.1:{amqp_port}\n\
             mqtt.listeners.tcp.default = 127.0.0.1:{mqtt_port}\n\
             mqtt.allow_anonymous = true\n\
             loopback_users = none\n"
        ),
    )
    .expect("write rabbitmq.conf");
    let plugins = dir.path().join("enabled_plugins");
    std::fs::write(&plugins, "[rabbitmq_mqtt].\n").expect("write enabled_plugins");
    let pid_file = dir.path().join("pid");
    let chown = Command::new("chown")
        .args(["-R", "rabbitmq:rabbitmq"])
        .arg(dir.path())
        .status()
        .expect("chown");
    assert!(chown.success(), "{test}: chown the RabbitMQ directory");
    let child = Command::new("rabbitmq-server")
        .env("RABBITMQ_NODENAME", &node)
        .env("RABBITMQ_NODE_PORT", amqp_port.to_string())
        .env("RABBITMQ_DIST_PORT", dist_port.to_string())
        .env("RABBITMQ_MNESIA_BASE", &mnesia)
        .env("RABBITMQ_LOG_BASE", &logs)
        .env("RABBITMQ_CONFIG_FILE", &conf)
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
        .env("RABBITMQ_PID_FILE", &pid_file)
        .env("ERL_EPMD_PORT", epmd.port.to_string())
        .env(
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rabbitmq-server");
    let mut rabbit = RabbitNode {
        node,
        mqtt_port,
        amqp_port,
        dist_port,
        child: Some(child),
        beam_pid: None,
        epmd: Arc::clone(epmd),
        dir,
    };
    let up = wait_for_port(mqtt_port, START_LIMIT);
    rabbit.beam_pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    if up.is_none() || rabbit.beam_pid.is_none() {
        let log = rabbit.log();
        panic!(
            "{test}: RabbitMQ node {} did not open MQTT port {mqtt_port} within {START_LIMIT:?} (pid file: {:?}); its log:\n{}",
            rabbit.node,
            rabbit.beam_pid,
            tail(&log, 3000)
        );
    }
    let _ = rabbit.dist_port;
    rabbit
}

fn tail(text: &str, max: usize) -> &str {
    let start = text.len().saturating_sub(max);
    let start = (start..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[start..]
}
