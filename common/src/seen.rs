//! The de-duplication set of a listener: the ids of the most recent
//! messages it finished, bounded in count and kept on disk so that a
//! restart does not process a redelivered message again.
//!
//! On disk it is an append-only file of one id per line, rewritten (temp
//! file + rename) when it grows past twice the capacity. Each id is written
//! (to the OS, not fsynced: a process crash loses nothing, a power cut may
//! lose the last ids) before the message is acknowledged.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Default number of ids remembered: far more than a broker redelivers
/// after a reconnect (its in-flight window), small enough to load at once.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A bounded, persisted set of message ids.
pub struct SeenSet {
    capacity: usize,
    order: VecDeque<String>,
    members: HashSet<String>,
    path: Option<PathBuf>,
    file: Option<File>,
    lines_in_file: usize,
}

impl SeenSet {
    /// An in-memory set (tests, listeners without a state directory).
    pub fn in_memory(capacity: usize) -> SeenSet {
        SeenSet {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            members: HashSet::new(),
            path: None,
            file: None,
            lines_in_file: 0,
        }
    }

    /// Opens (or creates) the set stored at `path`.
    pub fn open(path: &Path, capacity: usize) -> std::io::Result<SeenSet> {
        if let Some(dir) = path.parent() {
            // State of a listener: readable by its own user only.
            crate::spool::create_private_dir(dir)?;
        }
        let mut set = SeenSet::in_memory(capacity);
        let mut lines = 0;
        match File::open(path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    let Ok(line) = line else { break };
                    let id = line.trim();
                    if !id.is_empty() {
                        set.remember(id.to_string());
                        lines += 1;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        set.path = Some(path.to_path_buf());
        set.lines_in_file = lines;
        if lines > 2 * set.capacity {
            set.compact()?;
        } else {
            set.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)?,
            );
        }
        Ok(set)
    }

    /// Whether `id` was seen.
    pub fn contains(&self, id: &str) -> bool {
        self.members.contains(id)
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Records `id` (in memory and on disk). Returns false if it was
    /// already there.
    pub fn insert(&mut self, id: &str) -> std::io::Result<bool> {
        if self.members.contains(id) {
            return Ok(false);
        }
        self.remember(id.to_string());
        if let Some(file) = &mut self.file {
            writeln!(file, "{id}")?;
            self.lines_in_file += 1;
            if self.lines_in_file > 2 * self.capacity {
                self.compact()?;
            }
        }
        Ok(true)
    }

    fn remember(&mut self, id: String) {
        if self.members.insert(id.clone()) {
            self.order.push_back(id);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.members.remove(&old);
                }
            }
        }
    }

    /// Rewrites the file with only the remembered ids.
    fn compact(&mut self) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut out = std::io::BufWriter::new(file);
            for id in &self.order {
                writeln!(out, "{id}")?;
            }
            out.flush()?;
            out.get_ref().sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        self.file = Some(OpenOptions::new().append(true).open(&path)?);
        self.lines_in_file = self.order.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_across_reopen_and_forgets_the_oldest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l/seen");
        let mut set = SeenSet::open(&path, 3).expect("open");
        for id in ["a", "b", "c", "d"] {
            assert!(set.insert(id).expect("insert"));
        }
        assert!(!set.insert("d").expect("insert"), "a duplicate is reported");
        assert!(
            !set.contains("a"),
            "the oldest is forgotten beyond capacity"
        );
        drop(set);
        let set = SeenSet::open(&path, 3).expect("reopen");
        assert!(set.contains("b") && set.contains("c") && set.contains("d"));
        assert!(!set.contains("a"));
    }

    #[test]
    fn the_file_is_compacted_and_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seen");
        let mut set = SeenSet::open(&path, 10).expect("open");
        for i in 0..1000 {
            set.insert(&i.to_string()).expect("insert");
        }
        let lines = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count();
        assert!(lines <= 21, "{lines} lines on disk");
        let set = SeenSet::open(&path, 10).expect("reopen");
        assert_eq!(set.len(), 10);
        assert!(set.contains("999") && !set.contains("989"));
    }
}
