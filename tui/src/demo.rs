//! `signalbox demo`: a simulated legacy infrastructure on the real parts.
//!
//! An embedded broker on a free port; git repositories whose post-receive
//! hooks run the real git bridge; a build system and a QA service that are
//! listeners on the real runtime; a package database whose ownership
//! changes regenerate an aliases and an ACL file through a debounced exec
//! listener; bug-tracker mail through the real mail bridge; cron jobs
//! through the real cron wrapper (one fails now and then); an upstream
//! release feed (a local file) through the real RSS bridge; a bug-tracker
//! hook listener that fails 20 % of the time (so Failed fills and replay
//! works); and one listener killed and restarted now and then (so the
//! console shows down and recovery). Then the console opens on it, or with
//! `--headless` it runs for a while and prints a summary.
//!
//! Bridges and exec listeners run as child processes of this binary
//! (`signalbox bridge …`), exactly as an admin would install them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use clap::Args;
use signalbox_common::broker::{BrokerOptions, EmbeddedBroker};
use signalbox_common::config::{Config, Overrides};
use signalbox_common::envelope::{Envelope, Payload, Severity};
use signalbox_common::failed::{Outcome, ReplayOutcome, ReplayRequest};
use signalbox_common::health::HealthReport;
use signalbox_common::listener::{self, Delivery, ListenerOptions};
use signalbox_common::mqtt::{ConnectOptions, Connection, Publish, Publisher, Qos};
use signalbox_common::topic::{self, Reserved};

use crate::cli::{CliError, CliResult};

/// The deployment environment of the demo's topics.
const ENV: &str = "demo";
/// Packages of the simulated distribution.
const PACKAGES: &[&str] = &["kernel", "glibc", "bash", "openssl", "python3"];
/// Packagers (login, name).
const PEOPLE: &[(&str, &str)] = &[
    ("jkeating", "Jesse Keating"),
    ("dwalsh", "Dan Walsh"),
    ("notting", "Bill Nottingham"),
    ("skvidal", "Seth Vidal"),
    ("mmcgrath", "Mike McGrath"),
];

/// Flags of `signalbox demo`.
#[derive(Debug, Args)]
#[command(after_help = "\
What runs: an embedded broker (address printed: `signalbox --broker URL tail`
from another terminal), git repositories with post-receive hooks, a build system
and a QA service, a package database with an alias/ACL generator, bug-tracker
mail, cron jobs, and listeners — one fails 20% of the time (see the Failed view,
press r to replay), one is restarted now and then (see the Listeners view).
Quitting stops everything and leaves the work directory for inspection.

Examples:
  signalbox demo
  signalbox demo --speed 3 --seed 7
  signalbox demo --headless --duration 60
  signalbox demo --dir /tmp/demo --headless --duration 30 --json")]
pub struct DemoArgs {
    /// Run without the console and print a summary at the end
    #[arg(long)]
    headless: bool,
    /// Seconds to run with --headless
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    duration: f64,
    /// Scale the event rates (2 = twice as many events per second)
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    speed: f64,
    /// Seed of the simulation (same seed, same sequence of events)
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Work directory (default: a new temporary directory, kept)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// With --headless: print the summary as JSON
    #[arg(long, requires = "headless")]
    json: bool,
    /// The console's colour theme: a bundled one (default, light, high-contrast, solarized) or a .toml file
    #[arg(long, value_name = "NAME|PATH", conflicts_with = "headless")]
    theme: Option<String>,
}

/// Runs the demo.
pub fn run(_user_config: &Config, args: DemoArgs) -> CliResult {
    if !args.speed.is_finite() || args.speed <= 0.0 || args.speed > 100.0 {
        return Err(CliError::usage(anyhow!(
            "--speed must be between 0 and 100"
        )));
    }
    if !args.duration.is_finite() || args.duration <= 0.0 {
        return Err(CliError::usage(anyhow!(
            "--duration must be a positive number of seconds"
        )));
    }
    // A bad theme is reported before anything starts.
    if let Some(theme) = &args.theme {
        crate::theme::Theme::named(theme).map_err(CliError::usage)?;
    }
    if !args.headless {
        use std::io::IsTerminal;
        if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
            return Err(CliError::usage(anyhow!(
                "the demo opens the console, which needs a terminal; use `signalbox demo --headless` otherwise"
            )));
        }
    }
    for tool in ["git", "sh"] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
            && Command::new(tool).arg("-c").arg("true").status().is_err()
        {
            return Err(CliError::failure(anyhow!(
                "the demo needs `{tool}` on PATH"
            )));
        }
    }
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.canonicalize()
                .with_context(|| format!("resolving {}", d.display()))?
        }
        None => tempfile::Builder::new()
            .prefix("signalbox-demo-")
            .tempdir()
            .context("creating a work directory")?
            .keep(),
    };
    if args.headless {
        crate::cli::init_logging(0);
    } else if let Ok(file) = std::fs::File::create(dir.join("demo.log")) {
        crate::cli::init_logging_to(0, Mutex::new(file));
    }
    let broker = EmbeddedBroker::start(&BrokerOptions {
        listen: ([127, 0, 0, 1], 0).into(),
        listen_v5: None,
    })
    .map_err(CliError::failure)?;
    let url = broker.url();
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let sim = Arc::new(Sim::new(&dir, &url, seed, args.speed)?);
    println!("signalbox demo");
    println!("  broker:    {url}   (from another terminal: signalbox --broker {url} tail)");
    println!("  work dir:  {}", dir.display());
    println!("  seed:      {seed}   speed: {}", args.speed);
    if !args.headless {
        println!("  starting the infrastructure, then the console (q quits and stops everything)…");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::failure)?;
    let mut started = runtime
        .block_on(sim.clone().start())
        .map_err(CliError::failure)?;
    let outcome = if args.headless {
        runtime.block_on(async {
            tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
            // Let the systems fall quiet and the debounced regeneration run,
            // then do what an operator would: replay the failed messages.
            started.quiet().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            sim.operator_replays().await
        })
    } else {
        // The console runs its own runtime on this thread; the simulation
        // goes on in the demo's runtime meanwhile.
        let config = sim.config.clone();
        let result = crate::console::run(&config, false, args.theme.as_deref());
        result.map(|_| BTreeMap::new())
    };
    // The summary sees the listeners as they run, then everything stops.
    let replays = outcome.map_err(|e| CliError {
        code: e.code,
        error: e.error,
    })?;
    let summary = runtime.block_on(sim.summary(replays));
    runtime.block_on(started.stop());
    sim.stop_children();
    std::fs::write(dir.join("summary.json"), format!("{summary:#}\n"))
        .context("writing summary.json")?;
    if args.headless {
        if args.json {
            println!("{summary}");
        } else {
            print_summary(&summary);
        }
    }
    println!(
        "signalbox demo: stopped; the work directory stays: {}",
        dir.display()
    );
    drop(broker);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &serde_json::Value) {
    println!();
    println!("messages per system:");
    if let Some(map) = s["messages"].as_object() {
        for (system, n) in map {
            println!("  {system:<10} {n}");
        }
    }
    println!("listeners:");
    if let Some(map) = s["listeners"].as_object() {
        for (name, state) in map {
            println!("  {name:<16} {}", state.as_str().unwrap_or("?"));
        }
    }
    println!("failed: {} failure records written", s["failed_records"]);
    println!(
        "operator replay of bugzilla-hook's records: {}",
        s["replays"]
    );
    println!("files:");
    if let Some(map) = s["files"].as_object() {
        for (name, v) in map {
            println!("  {name:<10} {v}");
        }
    }
}

/// One event of a simulated system.
struct SystemEvent<'a> {
    topic: String,
    summary: String,
    severity: Severity,
    agent: &'a str,
    body: serde_json::Value,
}

/// The simulation and what it started.
struct Sim {
    exe: PathBuf,
    dir: PathBuf,
    url: String,
    speed: f64,
    rng: Mutex<fastrand::Rng>,
    env: Vec<(String, String)>,
    config: Config,
    children: Mutex<BTreeMap<String, Child>>,
    counts: Mutex<BTreeMap<String, u64>>,
    failed_records: AtomicU64,
    restarts: AtomicU64,
    bug_number: AtomicU64,
}

/// Tasks of a running simulation.
struct Started {
    /// Stops the simulated systems (no new events).
    quiet: tokio::sync::watch::Sender<bool>,
    quiet_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Stops the in-process listeners and connections.
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Started {
    /// No new events from the simulated systems; what is under way ends.
    async fn quiet(&mut self) {
        let _ = self.quiet.send(true);
        for t in self.quiet_tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }

    async fn stop(mut self) {
        self.quiet().await;
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Sim {
    fn new(dir: &Path, url: &str, seed: u64, speed: f64) -> anyhow::Result<Sim> {
        let exe = std::env::current_exe().context("locating the signalbox binary")?;
        for sub in ["git", "work", "pkgdb", "out", "state", "mail"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}/{sub}", dir.display()))?;
        }
        let env: Vec<(String, String)> = vec![
            ("SIGNALBOX_BROKER".into(), url.into()),
            ("SIGNALBOX_ENV".into(), ENV.into()),
            ("SIGNALBOX_PREFIX".into(), "signalbox".into()),
            ("SIGNALBOX_CONFIG".into(), String::new()),
            (
                "SIGNALBOX_STATE_DIR".into(),
                dir.join("state").display().to_string(),
            ),
            ("SIGNALBOX_HEALTH_INTERVAL".into(), "2".into()),
            ("SIGNALBOX_LOG".into(), "error".into()),
        ];
        let lookup: BTreeMap<String, String> = env.iter().cloned().collect();
        let config = Config::resolve_with(&Overrides::default(), |k| lookup.get(k).cloned())
            .map_err(|e| anyhow!("demo configuration: {e}"))?;
        Ok(Sim {
            exe,
            dir: dir.to_path_buf(),
            url: url.to_string(),
            speed,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            env,
            config,
            children: Mutex::new(BTreeMap::new()),
            counts: Mutex::new(BTreeMap::new()),
            failed_records: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            bug_number: AtomicU64::new(4200),
        })
    }

    fn rng<T>(&self, f: impl FnOnce(&mut fastrand::Rng) -> T) -> T {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut rng)
    }

    /// A period of `base` seconds at speed 1, jittered ±30 %.
    fn every(&self, base: f64) -> Duration {
        let jitter = self.rng(|r| 0.7 + r.f64() * 0.6);
        Duration::from_secs_f64((base * jitter / self.speed).max(0.05))
    }

    fn topic(&self, system: &str, entity: &[&str], event: &str) -> String {
        topic::build("signalbox", ENV, system, entity, event)
    }

    /// `signalbox bridge ARGS…` with the demo's environment.
    fn bridge(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("bridge").args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    fn spawn_listener(&self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        self.spawn_listener_kind("exec", name, args)
    }

    fn spawn_listener_kind(&self, kind: &str, name: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec![kind, "--name", name];
        full.extend_from_slice(args);
        let child = self
            .bridge(&full)
            .spawn()
            .with_context(|| format!("starting listener {name}"))?;
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.insert(name.to_string(), child);
        Ok(())
    }

    /// The alias/ACL generator: a debounced exec listener on the package
    /// database's messages that rewrites `out/aliases` and `out/acl` from
    /// `pkgdb/owners.txt`.
    fn spawn_aliases(&self) -> anyhow::Result<()> {
        let aliases_script = format!(
            "awk '{{print $1\"-owner: \"$3}}' {db} > {out}/aliases.tmp && mv {out}/aliases.tmp {out}/aliases && \
             awk '{{print \"avail | \"$2\" | rpms/\"$1}}' {db} > {out}/acl.tmp && mv {out}/acl.tmp {out}/acl && \
             echo run >> {out}/aliases.runs",
            db = self.dir.join("pkgdb/owners.txt").display(),
            out = self.dir.join("out").display()
        );
        self.spawn_listener(
            "aliases",
            &[
                "--filter",
                "signalbox/demo/pkgdb/#",
                "--debounce",
                "1s",
                "--",
                "sh",
                "-c",
                &aliases_script,
            ],
        )
    }

    fn kill_listener(&self, name: &str) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut child) = children.remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn stop_children(&self) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        for (_, mut child) in std::mem::take(&mut *children) {
            // SIGTERM: the listener finishes its message and reports stopped.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn start(self: Arc<Self>) -> anyhow::Result<Started> {
        self.setup_git()?;
        self.write_owners(&self.initial_owners())?;
        let publisher = Connection::connect(ConnectOptions::for_url(&self.url, "demo-systems")?)
            .await
            .context("connecting the simulated systems")?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();

        // Listeners as separate processes, as an admin would run them.
        self.spawn_aliases()?;
        // The bug tracker: a small HTTP service here, behind the webhook
        // listener. It answers 503 for about one commit in five (by the
        // id's last hex digit) and for one replay in sixteen.
        let tracker = bug_tracker(self.dir.join("out/bugzilla-comments.log")).await?;
        let tracker_url = format!("http://{tracker}/hook");
        self.spawn_listener_kind(
            "webhook",
            "bugzilla-hook",
            &[
                "--filter",
                "signalbox/demo/git/+/commit",
                "--retries",
                "1",
                "--url",
                &tracker_url,
                "--secret",
                "demo-secret",
            ],
        )?;
        // Mail to a Maildir: commits to the packagers' list, builds to the
        // package's alias; an RSS file of commits and builds.
        let maildir = self.dir.join("mail").display().to_string();
        self.spawn_listener_kind(
            "email",
            "mail-notify",
            &[
                "--filter",
                "signalbox/demo/git/+/commit",
                "--filter",
                "signalbox/demo/koji/build/+/complete",
                "--filter",
                "signalbox/demo/koji/build/+/failed",
                "--maildir",
                &maildir,
                "--to",
                "packagers@lists.example.org",
                "--to-field",
                "/body/alias",
                "--from",
                "signalbox-demo@example.org",
            ],
        )?;
        let feed = self.dir.join("out/feed.xml").display().to_string();
        self.spawn_listener_kind(
            "feed",
            "feed-writer",
            &[
                "--filter",
                "signalbox/demo/git/+/commit",
                "--filter",
                "signalbox/demo/koji/build/+/complete",
                "--output",
                &feed,
                "--keep",
                "100",
                "--title",
                "signalbox demo: commits and builds",
            ],
        )?;

        // The build system and QA: listeners on the runtime, in process.
        let systems = publisher.publisher();
        tasks.push(self.clone().spawn_runtime_listener(
            "koji",
            "signalbox/demo/git/+/commit",
            systems.clone(),
            stop_rx.clone(),
        ));
        tasks.push(self.clone().spawn_runtime_listener(
            "qa",
            "signalbox/demo/koji/build/+/complete",
            systems.clone(),
            stop_rx.clone(),
        ));

        // Counting what crosses the bus, for the summary.
        let mut counter =
            Connection::connect(ConnectOptions::for_url(&self.url, "demo-counter")?).await?;
        counter
            .subscribe(
                &[
                    ("signalbox/demo/#".into(), Qos::AtMostOnce),
                    ("signalbox/_failed/#".into(), Qos::AtMostOnce),
                ],
                Duration::from_secs(10),
            )
            .await?;
        let sim = self.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    m = counter.recv() => {
                        let Some(m) = m else { break };
                        if let Some(Reserved::Failed { .. }) = topic::classify("signalbox", &m.topic) {
                            if !m.payload.is_empty() && !m.retain {
                                sim.failed_records.fetch_add(1, Ordering::Relaxed);
                            }
                        } else if let Some(p) = topic::parse("signalbox", &m.topic) {
                            *sim.counts.lock().unwrap_or_else(|e| e.into_inner()).entry(p.system).or_default() += 1;
                        }
                    }
                }
            }
        }));

        // The legacy systems, each on its own schedule.
        let (quiet_tx, quiet_rx) = tokio::sync::watch::channel(false);
        let quiet_tasks = vec![
            self.clone().schedule(
                quiet_rx.clone(),
                5.0,
                |sim| async move { sim.git_push().await },
            ),
            self.clone().schedule(quiet_rx.clone(), 12.0, move |sim| {
                let p = systems.clone();
                async move { sim.owner_change(&p).await }
            }),
            self.clone().schedule(
                quiet_rx.clone(),
                8.0,
                |sim| async move { sim.bug_mail().await },
            ),
            self.clone().schedule(
                quiet_rx.clone(),
                10.0,
                |sim| async move { sim.cron_job().await },
            ),
            self.clone()
                .schedule(quiet_rx.clone(), 9.0, |sim| async move {
                    sim.upstream_release().await
                }),
            self.clone().schedule(quiet_rx, 40.0, |sim| async move {
                sim.restart_a_listener().await
            }),
        ];
        // The publisher connection lives as long as the tasks.
        tasks.push(tokio::spawn(async move {
            let mut stop = stop_rx;
            let _ = stop.changed().await;
            publisher.disconnect().await;
        }));
        Ok(Started {
            quiet: quiet_tx,
            quiet_tasks,
            stop: stop_tx,
            tasks,
        })
    }

    /// Runs `step` every `base` seconds (scaled, jittered) until stopped.
    fn schedule<F, Fut>(
        self: Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        base: f64,
        step: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn(Arc<Sim>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
    {
        tokio::spawn(async move {
            // The first event comes soon, so that every view fills quickly.
            let mut wait = self.every(base * 0.2);
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                if let Err(e) = step(self.clone()).await {
                    tracing::warn!("demo: {e:#}");
                }
                wait = self.every(base);
            }
        })
    }

    /// The build system (koji) and QA, as listeners on the runtime: a
    /// commit is a build request; a finished build goes to QA.
    fn spawn_runtime_listener(
        self: Arc<Self>,
        name: &'static str,
        filter: &str,
        systems: Publisher,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let config = self.config.clone();
        let options = ListenerOptions::new(name, vec![filter.to_string()], &config);
        tokio::spawn(async move {
            let sim = self.clone();
            let handler = move |d: Delivery| {
                let sim = sim.clone();
                let systems = systems.clone();
                async move {
                    match name {
                        "koji" => sim.build(&systems, &d).await,
                        _ => sim.qa(&systems, &d).await,
                    }
                    .map_err(|e| e.to_string().into())
                }
            };
            let shutdown = async move {
                let _ = stop.changed().await;
            };
            if let Err(e) = listener::run(&config, options, handler, shutdown).await {
                tracing::warn!("demo listener {name}: {e}");
            }
        })
    }

    /// Publishes one event of a simulated system; `retain` for states.
    async fn publish(
        &self,
        p: &Publisher,
        event: SystemEvent<'_>,
        retain: bool,
    ) -> anyhow::Result<()> {
        let bridge = event.topic.split('/').nth(2).unwrap_or("demo").to_string();
        let e = Envelope::builder(event.topic.clone(), event.summary)
            .severity(event.severity)
            .bridge(bridge)
            .agent(event.agent)
            .body(event.body)
            .build()?;
        p.publish_confirmed(
            Publish::new(
                event.topic,
                Bytes::from(e.to_vec()),
                Qos::AtLeastOnce,
                retain,
            ),
            Duration::from_secs(10),
        )
        .await?;
        Ok(())
    }

    async fn build(&self, p: &Publisher, d: &Delivery) -> anyhow::Result<Option<Bytes>> {
        let Some(commit) = d.envelope() else {
            return Ok(None);
        };
        let package = d.topic.split('/').nth(3).unwrap_or("unknown").to_string();
        let who = commit.agent.clone().unwrap_or_else(|| "koji".into());
        let build = format!("{package}-{}", self.rng(|r| r.u32(100..999)));
        self.publish(
            p,
            SystemEvent {
                topic: self.topic("koji", &["build", &package], "started"),
                summary: format!("build {build} started for {who}"),
                severity: Severity::Info,
                agent: &who,
                body: serde_json::json!({"package": package, "nvr": build}),
            },
            false,
        )
        .await?;
        tokio::time::sleep(self.every(2.0)).await;
        let ok = self.rng(|r| r.f64()) > 0.15;
        let (event, severity, text) = if ok {
            ("complete", Severity::Info, "completed")
        } else {
            ("failed", Severity::Error, "FAILED")
        };
        self.publish(
            p,
            SystemEvent {
                topic: self.topic("koji", &["build", &package], event),
                summary: format!("build {build} {text}"),
                severity,
                agent: &who,
                body: serde_json::json!({"package": package, "nvr": build, "owner": who}),
            },
            true,
        )
        .await?;
        Ok(None)
    }

    async fn qa(&self, p: &Publisher, d: &Delivery) -> anyhow::Result<Option<Bytes>> {
        let Some(build) = d.envelope() else {
            return Ok(None);
        };
        let nvr = build.body["nvr"].as_str().unwrap_or("?").to_string();
        let package = build.body["package"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        tokio::time::sleep(self.every(1.0)).await;
        let passed = self.rng(|r| r.f64()) > 0.2;
        let (severity, verdict) = if passed {
            (Severity::Info, "PASSED")
        } else {
            (Severity::Warning, "FAILED rpmlint")
        };
        self.publish(
            p,
            SystemEvent {
                topic: self.topic("qa", &[&package], "result"),
                summary: format!("QA of {nvr}: {verdict}"),
                severity,
                agent: "autoqa",
                body: serde_json::json!({"nvr": nvr, "passed": passed}),
            },
            true,
        )
        .await?;
        Ok(None)
    }

    fn setup_git(&self) -> anyhow::Result<()> {
        for package in PACKAGES {
            let bare = self.dir.join("git").join(format!("{package}.git"));
            if bare.exists() {
                continue;
            }
            git(
                &self.dir,
                &["init", "-q", "--bare", &bare.display().to_string()],
            )?;
            let hook = bare.join("hooks/post-receive");
            std::fs::write(
                &hook,
                format!("#!/bin/sh\n# signalbox: every push goes on the bus\nexec \"{}\" bridge git --repo {package}\n", self.exe.display()),
            )?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
            let work = self.dir.join("work").join(package);
            git(
                &self.dir,
                &[
                    "clone",
                    "-q",
                    &bare.display().to_string(),
                    &work.display().to_string(),
                ],
            )?;
            std::fs::write(
                work.join(format!("{package}.spec")),
                format!("Name: {package}\nVersion: 1.0\nRelease: 1\n"),
            )?;
            git(&work, &["add", "."])?;
            git_as(
                &work,
                PEOPLE[0],
                &[
                    "commit",
                    "-q",
                    "-m",
                    &format!("Initial import of {package}"),
                ],
            )?;
            git(&work, &["branch", "-M", "main"])?;
        }
        Ok(())
    }

    async fn git_push(self: Arc<Self>) -> anyhow::Result<()> {
        let sim = self.clone();
        tokio::task::spawn_blocking(move || {
            let package = sim.rng(|r| PACKAGES[r.usize(..PACKAGES.len())]);
            let person = sim.rng(|r| PEOPLE[r.usize(..PEOPLE.len())]);
            let work = sim.dir.join("work").join(package);
            let commits = sim.rng(|r| r.usize(1..=3));
            for _ in 0..commits {
                let release = sim.rng(|r| r.u32(2..500));
                let what = sim.rng(|r| {
                    [
                        "fix oops in ext4",
                        "rebase to upstream",
                        "add patch for CVE",
                        "fix build on aarch64",
                        "drop obsolete patch",
                    ][r.usize(..5)]
                });
                std::fs::write(
                    work.join(format!("{package}.spec")),
                    format!("Name: {package}\nVersion: 1.0\nRelease: {release}\n"),
                )?;
                git(&work, &["add", "."])?;
                git_as(
                    &work,
                    person,
                    &[
                        "commit",
                        "-q",
                        "-m",
                        &format!("{what} ({package}-1.0-{release})"),
                    ],
                )?;
            }
            let mut push = Command::new("git");
            push.current_dir(&work)
                .args(["push", "-q", "origin", "main"])
                .env("GL_USER", person.0);
            for (k, v) in &sim.env {
                push.env(k, v);
            }
            let out = push.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
            if !out.status.success() {
                return Err(anyhow!(
                    "git push failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(())
        })
        .await?
    }

    fn initial_owners(&self) -> Vec<(String, String, String)> {
        PACKAGES
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (login, _) = PEOPLE[i % PEOPLE.len()];
                (
                    p.to_string(),
                    login.to_string(),
                    format!("{login}@example.org"),
                )
            })
            .collect()
    }

    fn write_owners(&self, owners: &[(String, String, String)]) -> anyhow::Result<()> {
        let text: String = owners
            .iter()
            .map(|(p, o, e)| format!("{p} {o} {e}\n"))
            .collect();
        let path = self.dir.join("pkgdb/owners.txt");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    fn read_owners(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(self.dir.join("pkgdb/owners.txt"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((
                    f.next()?.to_string(),
                    f.next()?.to_string(),
                    f.next()?.to_string(),
                ))
            })
            .collect()
    }

    /// The package database: an ownership change is a message, and the
    /// database file changes (the alias listener regenerates from it).
    async fn owner_change(&self, p: &Publisher) -> anyhow::Result<()> {
        let mut owners = self.read_owners();
        if owners.is_empty() {
            owners = self.initial_owners();
        }
        let i = self.rng(|r| r.usize(..owners.len()));
        let (login, name) = self.rng(|r| PEOPLE[r.usize(..PEOPLE.len())]);
        let old = owners[i].1.clone();
        owners[i].1 = login.to_string();
        owners[i].2 = format!("{login}@example.org");
        self.write_owners(&owners)?;
        let package = owners[i].0.clone();
        self.publish(
            p,
            SystemEvent {
                topic: self.topic("pkgdb", &[&package], "owner"),
                summary: format!("{package} now owned by {name} (was {old})"),
                severity: Severity::Info,
                agent: "pkgdb-admin",
                body: serde_json::json!({"package": package, "owner": login, "owner_email": format!("{login}@example.org"), "previous": old}),
            },
            true,
        )
        .await
    }

    /// Bug-tracker mail, piped into the mail bridge as procmail would.
    async fn bug_mail(self: Arc<Self>) -> anyhow::Result<()> {
        let bug = self.bug_number.fetch_add(1, Ordering::Relaxed);
        let package = self.rng(|r| PACKAGES[r.usize(..PACKAGES.len())]);
        let (login, name) = self.rng(|r| PEOPLE[r.usize(..PEOPLE.len())]);
        let what = self.rng(|r| {
            [
                "crashes on start",
                "segfault in the test suite",
                "wrong license tag",
                "update to the latest release",
            ][r.usize(..4)]
        });
        let mail = format!(
            "From: bugzilla@example.org\r\nTo: {login}@example.org\r\nSubject: [Bug {bug}] New: {package} {what}\r\n\
             List-Id: <bugzilla.example.org>\r\nMessage-ID: <bug-{bug}@bugzilla.example.org>\r\n\
             Date: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
             https://bugzilla.example.org/show_bug.cgi?id={bug}\r\n\r\n{name} reported: {package} {what}.\r\n",
            chrono::Utc::now().to_rfc2822()
        );
        let sim = self.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut child = sim
                .bridge(&["mail", "--system", "bugzilla"])
                .stdin(Stdio::piped())
                .spawn()?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(mail.as_bytes())?;
            }
            let status = child.wait()?;
            if !status.success() {
                return Err(anyhow!("mail bridge exited with {status}"));
            }
            Ok(())
        })
        .await?
    }

    /// Cron jobs through the wrapper; the mirror sync fails now and then.
    async fn cron_job(self: Arc<Self>) -> anyhow::Result<()> {
        let sim = self.clone();
        let fail = self.rng(|r| r.f64()) < 0.3;
        let nightly = self.rng(|r| r.bool());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let (job, script) = if nightly {
                (
                    "backup",
                    "echo 'dumping pkgdb'; echo 'rsync to backup01: 1234 files'".to_string(),
                )
            } else if fail {
                (
                    "mirror-sync",
                    "echo 'syncing mirror'; echo 'rsync: connection reset by peer' >&2; exit 23"
                        .to_string(),
                )
            } else {
                (
                    "mirror-sync",
                    "echo 'syncing mirror'; echo '42 packages updated'".to_string(),
                )
            };
            let _ = sim
                .bridge(&["cron", "--job", job, "--", "sh", "-c", &script])
                .status()?;
            Ok(())
        })
        .await?
    }

    /// An upstream project's release feed (a local file, as a mirror of
    /// it would be) gains an entry; the RSS bridge polls it once, as from
    /// cron, and publishes what is new.
    async fn upstream_release(self: Arc<Self>) -> anyhow::Result<()> {
        let sim = self.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let feeds = sim.dir.join("feeds");
            std::fs::create_dir_all(&feeds)?;
            let log = feeds.join("releases.log");
            let package = sim.rng(|r| PACKAGES[r.usize(..PACKAGES.len())]);
            let version = format!("{}.{}.{}", sim.rng(|r| r.u32(1..7)), sim.rng(|r| r.u32(0..20)), sim.rng(|r| r.u32(0..10)));
            let now = chrono::Utc::now();
            let mut releases = std::fs::read_to_string(&log).unwrap_or_default();
            releases.push_str(&format!("{}\t{package}\t{version}\n", now.to_rfc2822()));
            std::fs::write(&log, &releases)?;
            // The newest 20 releases as RSS 2.0.
            let items: String = releases
                .lines()
                .rev()
                .take(20)
                .filter_map(|l| {
                    let mut f = l.split('\t');
                    let (date, package, version) = (f.next()?, f.next()?, f.next()?);
                    Some(format!(
                        "<item><title>{package} {version} released</title><link>https://upstream.example.org/{package}/{version}</link>\
                         <guid>{package}-{version}</guid><pubDate>{date}</pubDate><description>&lt;p&gt;{package} {version} is out.&lt;/p&gt;</description></item>\n"
                    ))
                })
                .collect();
            let rss = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel><title>Upstream releases</title>\
                 <link>https://upstream.example.org/</link><description>New upstream releases</description>\n{items}</channel></rss>\n"
            );
            let path = feeds.join("upstream.xml");
            let tmp = feeds.join("upstream.xml.tmp");
            std::fs::write(&tmp, rss)?;
            std::fs::rename(&tmp, &path)?;
            let feed = format!("upstream={}", path.display());
            let _ = sim.bridge(&["rss", "--once", "--backfill", "5", "--feed", &feed]).status()?;
            Ok(())
        })
        .await?
    }

    /// Kills the alias listener (as a crash would) and starts it again a
    /// little later: the console shows it down, then up.
    async fn restart_a_listener(self: Arc<Self>) -> anyhow::Result<()> {
        self.kill_listener("aliases");
        tokio::time::sleep(self.every(8.0)).await;
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.spawn_aliases()
    }

    /// What an operator does at the end of a headless run: replay every
    /// failed message of the flaky hook and count the outcomes.
    async fn operator_replays(&self) -> Result<BTreeMap<String, u64>, CliError> {
        let mut conn = Connection::connect(
            ConnectOptions::for_url(&self.url, "demo-operator").map_err(CliError::failure)?,
        )
        .await
        .map_err(CliError::failure)?;
        let reply = format!("signalbox/_demo/replies/{}", uuid::Uuid::now_v7());
        conn.subscribe(
            &[(reply.clone(), Qos::AtLeastOnce)],
            Duration::from_secs(10),
        )
        .await
        .map_err(CliError::failure)?;
        let request = ReplayRequest {
            ids: Vec::new(),
            all: true,
            reply_to: Some(reply.clone()),
        };
        conn.publish_confirmed(
            Publish::new(
                topic::replay_topic("signalbox", "bugzilla-hook"),
                request.to_vec(),
                Qos::AtLeastOnce,
                false,
            ),
            Duration::from_secs(10),
        )
        .await
        .map_err(CliError::failure)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut result = BTreeMap::new();
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, conn.recv()).await {
            if m.topic == reply {
                if let Ok(outcome) = serde_json::from_slice::<ReplayOutcome>(&m.payload) {
                    for r in outcome.results {
                        let word = match r.outcome {
                            Outcome::Replayed => "replayed",
                            Outcome::Failed => "failed",
                            Outcome::Capped => "capped",
                            Outcome::Unknown => "unknown",
                        };
                        *result.entry(word.to_string()).or_default() += 1;
                    }
                }
                break;
            }
        }
        conn.disconnect().await;
        Ok(result)
    }

    async fn summary(&self, replays: BTreeMap<String, u64>) -> serde_json::Value {
        let mut listeners = serde_json::Map::new();
        if let Ok(opts) = ConnectOptions::for_url(&self.url, "demo-summary") {
            if let Ok(mut conn) = Connection::connect(opts).await {
                let _ = conn
                    .subscribe(
                        &[(topic::health_filter("signalbox"), Qos::AtLeastOnce)],
                        Duration::from_secs(5),
                    )
                    .await;
                let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
                while let Ok(Some(m)) = tokio::time::timeout_at(deadline, conn.recv()).await {
                    if let Ok(r) = HealthReport::from_slice(&m.payload) {
                        listeners.insert(r.listener.clone(), r.state.as_str().into());
                    }
                }
                conn.disconnect().await;
            }
        }
        let out = self.dir.join("out");
        let lines = |p: &Path| {
            std::fs::read_to_string(p)
                .map(|t| t.lines().count())
                .unwrap_or(0)
        };
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        serde_json::json!({
            "work_dir": self.dir.display().to_string(),
            "messages": counts,
            "listeners": listeners,
            "failed_records": self.failed_records.load(Ordering::Relaxed),
            "replays": replays,
            "listener_restarts": self.restarts.load(Ordering::Relaxed),
            "files": {
                "aliases": lines(&out.join("aliases")),
                "acl": lines(&out.join("acl")),
                "alias_runs": lines(&out.join("aliases.runs")),
                "bug_comments": lines(&out.join("bugzilla-comments.log")),
                "maildir_mails": std::fs::read_dir(self.dir.join("mail/new")).map(|d| d.count()).unwrap_or(0),
                "feed_bytes": std::fs::metadata(out.join("feed.xml")).map(|m| m.len()).unwrap_or(0),
            },
        })
    }
}

/// The simulated bug tracker: accepts webhook POSTs on 127.0.0.1 (a free
/// port), appends each accepted comment to `log`, and fails some with 503.
async fn bug_tracker(log: PathBuf) -> anyhow::Result<std::net::SocketAddr> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("starting the bug tracker")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut headers = BTreeMap::new();
                let mut line = String::new();
                // Request line, then headers up to the empty line (bounded).
                for _ in 0..100 {
                    line.clear();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let length: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
                    .min(1 << 20);
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).await.is_err() {
                    return;
                }
                let id = headers.get("x-signalbox-id").cloned().unwrap_or_default();
                let replay = headers.get("x-signalbox-replay").is_some_and(|v| v == "1");
                let last = id.chars().last().unwrap_or('f');
                let second = id.chars().rev().nth(1).unwrap_or('f');
                let fail = if replay {
                    second == '0'
                } else {
                    matches!(last, '0' | '1' | '2')
                };
                let (status, text) = if fail {
                    ("503 Service Unavailable", "bugzilla: database is busy")
                } else {
                    let summary = Payload::decode(&body).summary_line(200);
                    if let Ok(mut f) = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                    {
                        let _ = writeln!(f, "{summary}");
                    }
                    ("200 OK", "ok")
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = reader.get_mut().write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    git_as(dir, ("demo", "signalbox demo"), args)
}

/// Runs git in `dir` as `person` (login, name), without the system's git
/// configuration.
fn git_as(dir: &Path, person: (&str, &str), args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", person.1)
        .env("GIT_AUTHOR_EMAIL", format!("{}@example.org", person.0))
        .env("GIT_COMMITTER_NAME", person.1)
        .env("GIT_COMMITTER_EMAIL", format!("{}@example.org", person.0))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running git")?;
    if !out.status.success() {
        return Err(anyhow!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}
