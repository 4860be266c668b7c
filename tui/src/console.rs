//! `signalbox` with no command: the operator console.
//!
//! The loop (the Elm shape of STYLE.md): a terminal-input thread and the
//! ingest task feed events; the loop applies them with `app::update`,
//! draining everything pending once per wake-up, hands the resulting
//! effects to the ingest task (or carries out the local ones: export,
//! theme), and redraws only when something changed, at most every
//! [`FRAME`], with a one-second tick for ages and rates. Input is polled
//! before messages, so a firehose never delays a key by more than a frame.
//! Pages of older messages for the Stream view are read from the history
//! database (the one `signalbox history` reads: `db` in the config file's
//! `[history]` table, else `STATE_DIR/history.db`) on a worker thread
//! (`ingest::history`) and come back as events too.
//!
//! The terminal is restored on every exit path: `ratatui::init` installs a
//! panic hook, and errors pass through the same restore.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use chrono::{Local, Offset, Utc};
use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use signalbox_common::broker::{BrokerOptions, EmbeddedBroker};
use signalbox_common::config::{Config, Origin};
use signalbox_common::mqtt::{BrokerUrl, ConnectOptions};
use tokio::sync::mpsc;

use crate::app::{update, App, Effect, Limits, Settings};
use crate::cli::{CliError, CliResult};
use crate::event::{Event, Outcome};
use crate::ingest::{self, Identity};
use crate::keys::KeyMap;
use crate::theme::Theme;

/// Shortest time between two frames (30 fps at most).
const FRAME: Duration = Duration::from_millis(33);
/// Ages, staleness and rates move on this tick.
const TICK: Duration = Duration::from_secs(1);
/// Longest time spent applying waiting messages before the loop looks at
/// the keyboard and the frame again (a batch of `ingest::BATCH_MAX`
/// messages takes a few milliseconds).
const DRAIN: Duration = Duration::from_millis(10);
/// Terminal events waiting for the loop.
const INPUT_CAP: usize = 256;
/// Pages of history waiting for the loop (the app asks for one at a time).
const HISTORY_CAP: usize = 4;

/// Runs the console until the operator quits. `theme` is the `--theme`
/// flag (a bundled name or a file), which wins over `SIGNALBOX_THEME` and
/// the config file's `[theme] name`.
pub fn run(config: &Config, embedded: bool, theme: Option<&str>) -> CliResult {
    let theme_table = section(config, "theme")?;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let env_theme = std::env::var("SIGNALBOX_THEME").ok();
    let chosen = theme.or(env_theme.as_deref()).filter(|n| !n.is_empty());
    let theme = Theme::resolve(theme_table.as_ref(), chosen, no_color).map_err(CliError::usage)?;
    let keys = match section(config, "keys")? {
        Some(table) => KeyMap::default()
            .with_overrides(&table)
            .map_err(CliError::usage)?,
        None => KeyMap::default(),
    };
    let mut options = ConnectOptions::from_config(config, "console").map_err(CliError::usage)?;
    crate::signature::init(config).map_err(CliError::usage)?;
    // After the configuration, so that a bad file is reported anywhere.
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        return Err(CliError::usage(anyhow!(
            "the console needs a terminal (standard input and output are not one); use `signalbox tail` to print messages"
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::failure)?;
    // Kept alive for as long as the console runs (rumqttd cannot be
    // stopped; it ends with the process).
    let mut _broker = None;
    if embedded {
        let listen = match config.brokers.origin {
            Origin::Flag => {
                let url = config
                    .brokers
                    .value
                    .first()
                    .map(String::as_str)
                    .unwrap_or_default();
                let parsed = BrokerUrl::parse(url).map_err(CliError::usage)?;
                let ip = parsed.host.parse().map_err(|_| {
                    CliError::usage(anyhow!(
                        "--embedded listens on an IP address; --broker has host {:?}",
                        parsed.host
                    ))
                })?;
                SocketAddr::new(ip, parsed.port)
            }
            _ => SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let broker = EmbeddedBroker::start(&BrokerOptions {
            listen,
            listen_v5: None,
        })
        .context("starting the embedded broker")
        .map_err(CliError::failure)?;
        options.brokers = vec![BrokerUrl::parse(&broker.url()).map_err(CliError::failure)?];
        _broker = Some(broker);
    }
    let broker_display = options
        .brokers
        .iter()
        .map(|b| b.display.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let identity = Identity {
        prefix: config.prefix.value.clone(),
        env: config.env.value.clone(),
        user: crate::operator::operator_name(),
    };
    let settings = Settings {
        prefix: config.prefix.value.clone(),
        env: config.env.value.clone(),
        broker: broker_display,
        embedded,
        limits: Limits::default(),
        keys,
        now: Utc::now(),
        offset: Local::now().offset().fix(),
        // The same resolution as `signalbox history`; whether the file
        // exists is asked at each page, so a recorder started after the
        // console is found.
        history_db: signalbox_bridges::history::settings(config)
            .map(|h| h.db)
            .map_err(|e| format!("no history database: {e}")),
    };
    runtime.block_on(console(settings, options, identity, theme))
}

/// A table of the config file (`[theme]`, `[keys]`), if present.
fn section(config: &Config, name: &str) -> Result<Option<toml::Table>, CliError> {
    match config.sections.get(name) {
        None => Ok(None),
        Some(toml::Value::Table(t)) => Ok(Some(t.clone())),
        Some(_) => Err(CliError::usage(anyhow!(
            "config file {}: `{name}` must be a table",
            config.file.display()
        ))),
    }
}

async fn console(
    settings: Settings,
    options: ConnectOptions,
    identity: Identity,
    theme: Theme,
) -> CliResult {
    let (events_tx, events_rx) = mpsc::channel(ingest::CHANNEL_CAP);
    let ingest = ingest::spawn(options, identity, events_tx);
    let (input_tx, input_rx) = mpsc::channel(INPUT_CAP);
    let stop = Arc::new(AtomicBool::new(false));
    let input = spawn_input(input_tx, stop.clone());

    let mut terminal = ratatui::init();
    let _ = crossterm::execute!(std::io::stdout(), EnableMouseCapture);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
        previous(info);
    }));
    let size = terminal.size().unwrap_or_default();
    let mut app = App::new(settings);
    update(&mut app, Event::Resize(size.width, size.height));
    let channels = Channels {
        events: events_rx,
        input: input_rx,
        history: mpsc::channel(HISTORY_CAP),
    };
    let result = event_loop(&mut terminal, &mut app, theme, &ingest, channels).await;
    let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
    stop.store(true, Ordering::Relaxed);
    let _ = input.join();
    result
        .map(|()| ExitCode::SUCCESS)
        .map_err(CliError::failure)
}

/// What feeds the loop.
struct Channels {
    /// From the ingest task: messages, connection states, outcomes.
    events: mpsc::Receiver<Event>,
    /// From the terminal-input thread.
    input: mpsc::Receiver<Event>,
    /// Pages read from the history database, and where the workers send
    /// them.
    history: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    mut theme: Theme,
    ingest: &ingest::Ingest,
    channels: Channels,
) -> anyhow::Result<()> {
    let Channels {
        mut events,
        mut input,
        history: (history_tx, mut history_rx),
    } = channels;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_draw = Instant::now() - FRAME;
    let mut ingest_open = true;
    loop {
        let next_frame = tokio::time::Instant::from_std(last_draw + FRAME);
        let mut operator = false;
        tokio::select! {
            // Keys first, then time, then messages: a firehose never
            // starves the keyboard or the clock.
            biased;
            event = input.recv() => match event {
                Some(event) => {
                    update(app, event);
                    operator = true;
                }
                None => return Err(anyhow!("the terminal input stopped")),
            },
            _ = tick.tick() => update(app, Event::Tick(Utc::now())),
            // The loop holds a sender: this channel never closes.
            Some(page) = history_rx.recv() => update(app, page),
            _ = tokio::time::sleep_until(next_frame), if app.dirty => {}
            event = events.recv(), if ingest_open => match event {
                Some(event) => update(app, event),
                None => ingest_open = false,
            },
        }
        // Every key already waiting.
        while let Ok(event) = input.try_recv() {
            update(app, event);
            operator = true;
        }
        // Messages already waiting, for at most DRAIN (bounded by time, not
        // count, so that under a firehose a key waits for one short drain
        // and a frame, never for a backlog); none when the operator just
        // did something: its frame comes first.
        let drain_until = Instant::now() + if operator { Duration::ZERO } else { DRAIN };
        while Instant::now() < drain_until {
            match events.try_recv() {
                Ok(event) => update(app, event),
                Err(_) => break,
            }
        }
        for effect in app.take_effects() {
            if let Effect::LoadHistory(request) = effect {
                ingest::history::spawn(request, history_tx.clone());
                continue;
            }
            if let Some(outcome) = carry_out(effect, ingest, &mut theme) {
                update(app, Event::Outcome(outcome));
            }
        }
        if app.quit {
            return Ok(());
        }
        if app.dirty && last_draw.elapsed() >= FRAME {
            let mut hits = None;
            terminal
                .draw(|frame| hits = Some(crate::views::draw(frame, app, &theme)))
                .context("drawing the console")?;
            app.remember_hits(hits.unwrap_or_default());
            app.dirty = false;
            last_draw = Instant::now();
        }
    }
}

/// Carries out an effect: locally (export, theme) or through the ingest
/// task. Returns an outcome to show at once, if any.
fn carry_out(effect: Effect, ingest: &ingest::Ingest, theme: &mut Theme) -> Option<Outcome> {
    match effect {
        Effect::Export { file, contents } => Some(match std::fs::write(&file, &contents) {
            Ok(()) => Outcome {
                ok: true,
                text: format!("wrote {} bytes to {file}", contents.len()),
            },
            Err(e) => Outcome {
                ok: false,
                text: format!("cannot write {file}: {e}"),
            },
        }),
        Effect::Theme(name) => Some(match Theme::named(&name) {
            Ok(t) => {
                let monochrome = theme.monochrome;
                *theme = if monochrome { t.without_colour() } else { t };
                Outcome {
                    ok: true,
                    text: format!("theme {name}"),
                }
            }
            Err(e) => Outcome {
                ok: false,
                text: e.0,
            },
        }),
        other => (!ingest.send(other)).then(|| Outcome {
            ok: false,
            text: "the connection task is busy; try again".into(),
        }),
    }
}

/// Reads terminal events on their own thread (crossterm's read blocks) and
/// forwards them; stops when `stop` is set or the loop is gone.
fn spawn_input(tx: mpsc::Sender<Event>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use crossterm::event as ct;
        while !stop.load(Ordering::Relaxed) {
            match ct::poll(Duration::from_millis(100)) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => break,
            }
            let event = match ct::read() {
                Ok(ct::Event::Key(key)) => Event::Key(key),
                Ok(ct::Event::Mouse(mouse)) => Event::Mouse(mouse),
                Ok(ct::Event::Resize(w, h)) => Event::Resize(w, h),
                Ok(_) => continue,
                Err(_) => break,
            };
            if tx.blocking_send(event).is_err() {
                break;
            }
        }
    })
}
