//! The ledger of a `fault-listener` process, for tests that count what a
//! real listener did with what real publishers sent (sent / processed /
//! processed twice / lost): starting the listener, reading its ledger,
//! waiting for it to fill. Shared by `faults.rs` and `rabbit_cluster.rs`.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use signalbox_e2e::{bin, isolate, signalbox, KillOnDrop};

/// One line of a listener's ledger.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The envelope id.
    pub id: String,
    /// The topic it came on.
    pub topic: String,
    /// The envelope's summary (carries the source's sequence number).
    pub summary: String,
    /// When the listener finished it (Unix milliseconds).
    pub millis: u128,
}

/// Every whole line of the ledger at `path`.
pub fn read_ledger(path: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, '\t');
            Some(Entry {
                id: parts.next()?.to_string(),
                topic: parts.next()?.to_string(),
                summary: parts.next()?.to_string(),
                millis: parts.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// What a ledger says: messages processed, distinct, and processed twice.
#[derive(Debug)]
pub struct Tally {
    /// Lines in the ledger.
    pub processed: usize,
    /// Distinct envelope ids.
    pub distinct: usize,
    /// Ids written more than once.
    pub twice: Vec<String>,
}

/// Counts a ledger.
pub fn tally(entries: &[Entry]) -> Tally {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for e in entries {
        *count.entry(&e.id).or_default() += 1;
    }
    Tally {
        processed: entries.len(),
        distinct: count.len(),
        twice: count
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| id.to_string())
            .collect(),
    }
}

/// Waits until the ledger holds `want` distinct messages (or `limit`
/// passes), then a little longer so that late repeats would show.
pub fn wait_for_distinct(path: &Path, want: usize, limit: Duration) -> Vec<Entry> {
    let deadline = Instant::now() + limit;
    loop {
        let entries = read_ledger(path);
        if tally(&entries).distinct >= want || Instant::now() > deadline {
            std::thread::sleep(Duration::from_secs(2));
            return read_ledger(path);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first run of digits in `s`: the sequence number each source puts
/// in its summaries ("line 17", "job17 finished…").
pub fn number_in(s: &str) -> Option<u64> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let digits: String = s[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Sources whose sequence numbers went backwards in the ledger (first
/// processing of each message only: a repeat is counted elsewhere).
/// `source_of` names an entry's publisher (`None`: not counted).
pub fn order_breaks(
    entries: &[Entry],
    source_of: impl Fn(&Entry) -> Option<&'static str>,
) -> Vec<String> {
    let mut last: HashMap<&'static str, u64> = HashMap::new();
    let mut seen = HashSet::new();
    let mut breaks = Vec::new();
    for e in entries {
        if !seen.insert(e.id.clone()) {
            continue;
        }
        let (Some(source), Some(n)) = (source_of(e), number_in(&e.summary)) else {
            continue;
        };
        // A cron run's start comes before its end, both with its number.
        let n = 2 * n + u64::from(!e.summary.contains(" started"));
        if let Some(prev) = last.insert(source, n) {
            if n <= prev {
                breaks.push(format!("{source}: {n} after {prev} ({})", e.summary));
            }
        }
    }
    breaks
}

/// Now, in Unix milliseconds (the ledger's clock).
pub fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// A `fault-listener` process (named `fault`) on `filter`, killed by pid
/// when dropped.
pub struct FaultListener {
    child: KillOnDrop,
}

impl FaultListener {
    /// Starts it against `url` with its state in `state`, appending to
    /// `ledger`, taking `delay_ms` per message; `env` adds `SIGNALBOX_*`
    /// (and `FAULT_*`) settings.
    pub fn start(
        url: &str,
        state: &Path,
        ledger: &Path,
        filter: &str,
        delay_ms: u64,
        env: &[(&str, &str)],
    ) -> FaultListener {
        let mut cmd = Command::new(bin("fault-listener"));
        isolate(&mut cmd);
        let child = cmd
            .envs(env.iter().copied())
            .arg(url)
            .arg(state)
            .arg(ledger)
            .arg(filter)
            .arg(delay_ms.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fault-listener");
        FaultListener {
            child: KillOnDrop(child),
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// SIGKILL, and wait for it.
    pub fn kill(mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// SIGTERM, then the exit code (None when it did not exit in time).
    pub fn terminate(mut self, limit: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.0.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Waits (at most `limit`) until the listener `name` reports itself up on
/// the bus at `url`.
pub fn wait_until_up(url: &str, name: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let out = signalbox_e2e::run_with_limit(
            signalbox(url).args(["health", "--expect", name, "--wait", "0.5"]),
            Duration::from_secs(30),
        );
        if out.code == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "listener {name} not up: {}{}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
