//! `signalbox-bridge git`: the post-receive hook.
//!
//! Reads git's `<old> <new> <ref>` lines and publishes, per ref:
//! - `…/git/{repo}/branch/{name}/{created|updated|forced|deleted}`,
//!   `…/git/{repo}/tag/{name}/{created|updated|deleted}` (other refs under
//!   `ref/`), one message each;
//! - one message per commit new to the repository, oldest first, on
//!   `…/git/{repo}/commit` (repo, branch, rev, parents, author, committer,
//!   date, subject, message, stats, agent); past `--max-commits` (1,000) for
//!   the whole push, one summary on `…/git/{repo}/commits_omitted` instead;
//! - for a branch, its head, retained, on `…/git/{repo}/{branch}/head`
//!   (cleared when the branch is deleted).
//!
//! "New to the repository": not reachable from the refs this push did not
//! touch, nor from the old values of the refs it did, nor from refs handled
//! earlier in the same push — so a commit pushed to two branches at once is
//! announced once.
//!
//! Everything comes from the host's real git, in a handful of processes
//! whatever the size of the push (`for-each-ref`, `cat-file --batch`,
//! `rev-list`, `diff-tree --stdin`). The bus gets at most `--timeout`
//! seconds; what it does not confirm is spooled, so a push is never held up
//! longer than that.
//!
//! Exit codes: 0 published or spooled; 65 some input lines were not hook
//! lines (the others were handled); 75 neither published nor spooled; 1 git
//! failed (not a repository); 2 bad flags or configuration.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, FixedOffset};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};
use signalbox_common::envelope::{Envelope, Severity};
use signalbox_common::mqtt::{Publish, Qos};
use signalbox_common::topic;

use crate::cli::{timeout_arg, BridgeError, BridgeResult, GlobalArgs, EXIT_DATAERR, EXIT_TEMPFAIL};
use crate::session::{self, Session, DEFAULT_TIMEOUT_S};

/// Default `--max-commits`.
pub const DEFAULT_MAX_COMMITS: usize = 1000;
/// Files listed at most per commit (the totals count them all).
pub const FILES_MAX: usize = 500;
/// A commit message is carried up to this many bytes.
pub const MESSAGE_MAX: usize = 64 * 1024;

/// Flags of `signalbox-bridge git`.
#[derive(Debug, Args)]
#[command(after_help = "\
Install as the repository's post-receive hook; it reads git's
`<old> <new> <ref>` lines on standard input. The pusher (agent) is $GL_USER,
else $USER.

Exit codes: 0 published or spooled; 65 malformed input lines (the others are
handled); 75 neither published nor spooled; 1 git failed; 2 bad flags or
configuration. A push is never rejected: post-receive runs after it.

Example (install):
  printf '#!/bin/sh\\nexec signalbox-bridge git --repo kernel\\n' > kernel.git/hooks/post-receive
  chmod +x kernel.git/hooks/post-receive")]
pub struct GitArgs {
    /// The repository's name (a topic level) [default: the repository directory without .git]
    #[arg(long, value_name = "NAME")]
    pub repo: Option<String>,
    /// Link for each commit; {repo}, {rev} and {branch} are replaced, e.g. https://git.example.org/{repo}/commit/{rev}
    #[arg(long, value_name = "URL")]
    pub url_template: Option<String>,
    /// Commits published one by one per push; the rest are summed up in one message
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_COMMITS)]
    pub max_commits: usize,
    /// Seconds to spend on the bus before spooling instead
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_S)]
    pub timeout: f64,
}

/// One line of post-receive input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// The old object id (all zeros: the ref is created).
    pub old: String,
    /// The new object id (all zeros: the ref is deleted).
    pub new: String,
    /// The full ref name (`refs/heads/main`).
    pub refname: String,
}

/// Why a hook line was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookLineError {
    /// Not three fields.
    #[error("expected `<old> <new> <ref>`, got {fields} field(s)")]
    Fields {
        /// How many fields there were.
        fields: usize,
    },
    /// An object id is not 40 or 64 hex digits.
    #[error("{which} object id {value:?} is not 40 or 64 hex digits")]
    ObjectId {
        /// `old` or `new`.
        which: &'static str,
        /// The value, cut to 80 characters.
        value: String,
    },
    /// The two ids differ in length (SHA-1 vs SHA-256).
    #[error("old and new object ids differ in length")]
    Mismatch,
    /// Both ids are zero.
    #[error("old and new object ids are both zero")]
    BothZero,
    /// The ref name is not a ref.
    #[error("{value:?} is not a ref name (refs/…)")]
    RefName {
        /// The value, cut to 80 characters.
        value: String,
    },
}

fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_zero(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Parses one hook line; ids are returned in lower case.
pub fn parse_hook_line(line: &str) -> Result<RefUpdate, HookLineError> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let [old, new, refname] = fields[..] else {
        return Err(HookLineError::Fields {
            fields: fields.len(),
        });
    };
    if !is_object_id(old) {
        return Err(HookLineError::ObjectId {
            which: "old",
            value: clip(old),
        });
    }
    if !is_object_id(new) {
        return Err(HookLineError::ObjectId {
            which: "new",
            value: clip(new),
        });
    }
    if old.len() != new.len() {
        return Err(HookLineError::Mismatch);
    }
    if is_zero(old) && is_zero(new) {
        return Err(HookLineError::BothZero);
    }
    let valid_ref = refname.starts_with("refs/")
        && refname.len() > "refs/".len()
        && !refname.ends_with('/')
        && !refname.contains("//")
        && !refname.chars().any(|c| c.is_control());
    if !valid_ref {
        return Err(HookLineError::RefName {
            value: clip(refname),
        });
    }
    Ok(RefUpdate {
        old: old.to_ascii_lowercase(),
        new: new.to_ascii_lowercase(),
        refname: refname.to_string(),
    })
}

/// What kind of ref an update touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// `refs/heads/…`.
    Branch,
    /// `refs/tags/…`.
    Tag,
    /// Anything else (`refs/notes/…`, review systems' refs).
    Other,
}

impl RefKind {
    fn level(self) -> &'static str {
        match self {
            RefKind::Branch => "branch",
            RefKind::Tag => "tag",
            RefKind::Other => "ref",
        }
    }
}

/// What happened to a ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It did not exist.
    Created,
    /// It moved forward (or a tag moved).
    Updated,
    /// It moved to a commit that does not contain the old one.
    Forced,
    /// It was removed.
    Deleted,
}

impl Change {
    fn event(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Forced => "forced",
            Change::Deleted => "deleted",
        }
    }
}

impl RefUpdate {
    /// The kind of ref and its short name (`main`, `v1.0`, `notes/commits`).
    pub fn kind(&self) -> (RefKind, &str) {
        if let Some(name) = self.refname.strip_prefix("refs/heads/") {
            (RefKind::Branch, name)
        } else if let Some(name) = self.refname.strip_prefix("refs/tags/") {
            (RefKind::Tag, name)
        } else {
            (
                RefKind::Other,
                self.refname.strip_prefix("refs/").unwrap_or(&self.refname),
            )
        }
    }

    /// Created, deleted or updated (force is decided with git).
    pub fn change(&self) -> Change {
        if is_zero(&self.old) {
            Change::Created
        } else if is_zero(&self.new) {
            Change::Deleted
        } else {
            Change::Updated
        }
    }
}

/// A person line of a commit object: `Name <email> 1700000000 +0100`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The name.
    pub name: String,
    /// The e-mail address.
    pub email: String,
    /// The time, with the person's offset; `None` when unreadable.
    pub time: Option<DateTime<FixedOffset>>,
}

impl Person {
    /// `Name <email>`.
    pub fn display(&self) -> String {
        format!("{} <{}>", self.name, self.email)
    }
}

/// Parses `Name <email> SECONDS ±HHMM`; lenient (git accepts odd lines).
pub fn parse_person(line: &str) -> Person {
    let (ident, when) = match line.rfind('>') {
        Some(i) => (&line[..=i], line[i + 1..].trim()),
        None => (line, ""),
    };
    let (name, email) = match ident.rfind('<') {
        Some(i) => (
            ident[..i].trim(),
            ident[i + 1..].trim_end_matches('>').trim(),
        ),
        None => (ident.trim(), ""),
    };
    let mut parts = when.split_ascii_whitespace();
    let seconds = parts.next().and_then(|s| s.parse::<i64>().ok());
    let offset = parts.next().and_then(parse_tz);
    let time = match (seconds, offset) {
        (Some(s), Some(o)) => DateTime::from_timestamp(s, 0).map(|t| t.with_timezone(&o)),
        (Some(s), None) => DateTime::from_timestamp(s, 0).map(|t| t.fixed_offset()),
        _ => None,
    };
    Person {
        name: name.to_string(),
        email: email.to_string(),
        time,
    }
}

fn parse_tz(tz: &str) -> Option<FixedOffset> {
    let (sign, digits) = match tz.as_bytes().first()? {
        b'+' => (1, &tz[1..]),
        b'-' => (-1, &tz[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// A parsed commit object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitObject {
    /// Parent ids, in order.
    pub parents: Vec<String>,
    /// The author.
    pub author: Person,
    /// The committer.
    pub committer: Person,
    /// The message, decoded (its `encoding` header honoured, else lossy
    /// UTF-8).
    pub message: String,
}

/// Parses the raw bytes of a commit object (`git cat-file commit`).
pub fn parse_commit(raw: &[u8]) -> CommitObject {
    let split = raw.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(i) => (&raw[..i], &raw[i + 2..]),
        None => (raw, &raw[raw.len()..]),
    };
    let mut parents = Vec::new();
    let mut author = None;
    let mut committer = None;
    let mut encoding = None;
    for line in head.split(|&b| b == b'\n') {
        // Continuation lines of multi-line headers (gpgsig, mergetag).
        if line.first() == Some(&b' ') {
            continue;
        }
        let (key, value) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &line[line.len()..]),
        };
        match key {
            b"parent" => parents.push(String::from_utf8_lossy(value).trim().to_string()),
            b"author" => author = Some(value.to_vec()),
            b"committer" => committer = Some(value.to_vec()),
            b"encoding" => encoding = Some(String::from_utf8_lossy(value).trim().to_string()),
            _ => {}
        }
    }
    let decode = |bytes: &[u8]| -> String {
        if let Ok(text) = std::str::from_utf8(bytes) {
            return text.to_string();
        }
        match encoding
            .as_deref()
            .and_then(|l| encoding_rs::Encoding::for_label(l.as_bytes()))
        {
            Some(enc) => enc.decode_without_bom_handling(bytes).0.into_owned(),
            None => String::from_utf8_lossy(bytes).into_owned(),
        }
    };
    let person = |p: Option<Vec<u8>>| parse_person(&decode(p.as_deref().unwrap_or_default()));
    CommitObject {
        parents,
        author: person(author),
        committer: person(committer),
        message: decode(body),
    }
}

/// Per-file change counts; `None` for binary files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileStat {
    /// Path (lossy UTF-8).
    pub path: String,
    /// Lines added.
    pub additions: Option<u64>,
    /// Lines removed.
    pub deletions: Option<u64>,
    /// Whether git sees the file as binary.
    pub binary: bool,
}

/// The diff stats of one commit against its first parent (or the empty
/// tree for a root commit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Files (at most [`FILES_MAX`]).
    pub files: Vec<FileStat>,
    /// Whether `files` was cut.
    pub files_truncated: bool,
    /// Totals over every file.
    pub total: Totals,
}

/// Totals of [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Files changed.
    pub files: u64,
    /// Lines added (text files).
    pub additions: u64,
    /// Lines removed (text files).
    pub deletions: u64,
}

/// Parses `git diff-tree --stdin -z --numstat --always` output: a commit id
/// token, then `added\tdeleted\tpath` tokens, NUL-separated.
pub fn parse_numstat(out: &[u8]) -> HashMap<String, Stats> {
    let mut stats: HashMap<String, Stats> = HashMap::new();
    let mut current: Option<String> = None;
    for token in out.split(|&b| b == 0) {
        let token = token.strip_prefix(b"\n").unwrap_or(token);
        if token.is_empty() {
            continue;
        }
        let mut fields = token.splitn(3, |&b| b == b'\t');
        let (a, d, path) = (fields.next(), fields.next(), fields.next());
        match (a, d, path) {
            (Some(a), Some(d), Some(path)) => {
                let Some(commit) = &current else { continue };
                let entry = stats.entry(commit.clone()).or_default();
                let num = |b: &[u8]| {
                    std::str::from_utf8(b)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                };
                let binary = a == b"-" && d == b"-";
                let (additions, deletions) = (num(a), num(d));
                entry.total.files += 1;
                entry.total.additions += additions.unwrap_or(0);
                entry.total.deletions += deletions.unwrap_or(0);
                if entry.files.len() < FILES_MAX {
                    entry.files.push(FileStat {
                        path: String::from_utf8_lossy(path).into_owned(),
                        additions,
                        deletions,
                        binary,
                    });
                } else {
                    entry.files_truncated = true;
                }
            }
            _ => {
                let id = String::from_utf8_lossy(token).trim().to_string();
                if is_object_id(&id) {
                    stats.entry(id.clone()).or_default();
                    current = Some(id);
                }
            }
        }
    }
    stats
}

/// Runs git in the current repository (the hook's GIT_DIR), feeding
/// `input` on stdin from a thread so that large inputs and outputs cannot
/// deadlock.
fn git(args: &[&str], input: Option<Vec<u8>>) -> anyhow::Result<Vec<u8>> {
    let mut child = Command::new("git")
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run git (is it installed and on PATH?)")?;
    let writer = match (input, child.stdin.take()) {
        (Some(bytes), Some(mut stdin)) => Some(std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        })),
        _ => None,
    };
    let out = child.wait_with_output().context("git did not finish")?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        bail!(
            "git {} failed: {}",
            args.first().unwrap_or(&""),
            first.trim()
        );
    }
    Ok(out.stdout)
}

/// Peels each id to a commit (`id^{commit}`): annotated tags to their
/// commit; ids that are no commit (or missing) map to nothing.
fn peel_to_commits(ids: &[String]) -> anyhow::Result<HashMap<String, String>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let input: String = ids.iter().map(|id| format!("{id}^{{commit}}\n")).collect();
    let out = git(
        &["cat-file", "--batch-check=%(objectname)"],
        Some(input.into_bytes()),
    )?;
    let mut map = HashMap::new();
    for (id, line) in ids.iter().zip(String::from_utf8_lossy(&out).lines()) {
        let line = line.trim();
        if is_object_id(line) {
            map.insert(id.clone(), line.to_string());
        }
    }
    Ok(map)
}

/// Reads commit objects in one `git cat-file --batch`.
fn read_commits(ids: &[String]) -> anyhow::Result<HashMap<String, CommitObject>> {
    let mut map = HashMap::new();
    if ids.is_empty() {
        return Ok(map);
    }
    let input: String = ids.iter().map(|id| format!("{id}\n")).collect();
    let out = git(&["cat-file", "--batch"], Some(input.into_bytes()))?;
    let mut rest = &out[..];
    while !rest.is_empty() {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            break;
        };
        let header = String::from_utf8_lossy(&rest[..nl]).into_owned();
        rest = &rest[nl + 1..];
        let parts: Vec<&str> = header.split(' ').collect();
        let [id, kind, size] = parts[..] else {
            continue;
        }; // `<id> missing`
        let size: usize = size.parse().context("git cat-file: bad object size")?;
        if rest.len() < size {
            bail!("git cat-file: output cut short");
        }
        if kind == "commit" {
            map.insert(id.to_string(), parse_commit(&rest[..size]));
        }
        rest = &rest[size..];
        rest = rest.strip_prefix(b"\n").unwrap_or(rest);
    }
    Ok(map)
}

/// The repository's name: the git directory's name without `.git` (its
/// parent's name for a non-bare `.git`).
fn repo_name() -> anyhow::Result<String> {
    let out = git(&["rev-parse", "--absolute-git-dir"], None)
        .context("not in a git repository (run as a hook, or set GIT_DIR)")?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out).trim());
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = if base == ".git" {
        dir.parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        base.strip_suffix(".git").unwrap_or(&base).to_string()
    };
    if name.is_empty() {
        bail!(
            "cannot tell the repository's name from {}; use --repo",
            dir.display()
        );
    }
    Ok(name)
}

/// Everything needed to turn updates into messages.
struct Push {
    repo: String,
    agent: String,
    url_template: Option<String>,
    prefix: String,
    env: String,
}

impl Push {
    fn topic(&self, entity: &[&str], event: &str) -> String {
        let mut levels = vec![self.repo.as_str()];
        levels.extend_from_slice(entity);
        topic::build(&self.prefix, &self.env, "git", &levels, event)
    }

    fn envelope(
        &self,
        topic: String,
        summary: String,
        severity: Severity,
        body: Value,
    ) -> anyhow::Result<Envelope> {
        let mut builder = Envelope::builder(topic, summary)
            .bridge("git")
            .severity(severity)
            .agent(self.agent.clone())
            .body(body);
        if let Some(user) = session::os_user() {
            builder = builder.user(user);
        }
        Ok(builder.build()?)
    }

    fn link(&self, rev: &str, branch: &str) -> Option<String> {
        self.url_template.as_ref().map(|t| {
            t.replace("{repo}", &self.repo)
                .replace("{rev}", rev)
                .replace("{branch}", branch)
        })
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(7)]
}

fn subject_of(message: &str) -> String {
    let first = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    signalbox_common::envelope::sanitize_summary(first)
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// Turns the push into the messages to publish, in order.
fn messages(
    push: &Push,
    updates: &[RefUpdate],
    max_commits: usize,
) -> anyhow::Result<Vec<Publish>> {
    // The refs as they are now, after the push.
    let refs_out = git(&["for-each-ref", "--format=%(objectname) %(refname)"], None)?;
    let touched: HashSet<&str> = updates.iter().map(|u| u.refname.as_str()).collect();
    let mut untouched: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&refs_out).lines() {
        if let Some((id, name)) = line.split_once(' ') {
            if !touched.contains(name) {
                untouched.push(id.to_string());
            }
        }
    }
    let mut candidates: Vec<String> = untouched.clone();
    for u in updates {
        for id in [&u.old, &u.new] {
            if !is_zero(id) {
                candidates.push(id.clone());
            }
        }
    }
    candidates.sort();
    candidates.dedup();
    let commit_of = peel_to_commits(&candidates)?;
    let peel = |id: &str| commit_of.get(id).cloned();

    let mut excluded: Vec<String> = untouched.iter().filter_map(|id| peel(id)).collect();
    excluded.extend(
        updates
            .iter()
            .filter(|u| !is_zero(&u.old))
            .filter_map(|u| peel(&u.old)),
    );
    excluded.sort();
    excluded.dedup();

    let mut out = Vec::new();
    let mut budget = max_commits;
    for update in updates {
        let (kind, name) = update.kind();
        let mut change = update.change();
        let new_commit = if is_zero(&update.new) {
            None
        } else {
            peel(&update.new)
        };
        let old_commit = if is_zero(&update.old) {
            None
        } else {
            peel(&update.old)
        };
        let mut error = None;

        // New commits, oldest first.
        let mut revs: Vec<String> = Vec::new();
        if let Some(new) = &new_commit {
            let mut input = format!("{new}\n");
            for id in &excluded {
                input.push_str(&format!("^{id}\n"));
            }
            match git(
                &["rev-list", "--reverse", "--topo-order", "--stdin"],
                Some(input.into_bytes()),
            ) {
                Ok(list) => {
                    revs = String::from_utf8_lossy(&list)
                        .lines()
                        .map(str::trim)
                        .filter(|l| is_object_id(l))
                        .map(str::to_string)
                        .collect()
                }
                Err(e) => error = Some(format!("{e:#}")),
            }
            if change == Change::Updated && kind == RefKind::Branch {
                if let Some(old) = &old_commit {
                    let ancestor = Command::new("git")
                        .args(["merge-base", "--is-ancestor", old, new])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .context("cannot run git merge-base")?;
                    if ancestor.code() == Some(1) {
                        change = Change::Forced;
                    }
                }
            }
            // Later updates of this push do not announce these again.
            excluded.push(new.clone());
        }
        let listed = revs.len().min(budget);
        budget -= listed;
        let omitted = revs.len() - listed;

        // The ref event.
        let subject = |kind: RefKind| match kind {
            RefKind::Branch => "branch",
            RefKind::Tag => "tag",
            RefKind::Other => "ref",
        };
        let (agent, repo) = (&push.agent, &push.repo);
        let new_commits = plural(revs.len(), "new commit");
        let summary = match (kind, change) {
            (_, Change::Created) if kind == RefKind::Tag => {
                format!("{agent} tagged {repo} {name} at {}", short(&update.new))
            }
            (_, Change::Created) => format!(
                "{agent} created {} {name} in {repo} ({new_commits})",
                subject(kind)
            ),
            (_, Change::Deleted) => format!("{agent} deleted {} {name} in {repo}", subject(kind)),
            (RefKind::Tag, _) => format!(
                "{agent} moved tag {name} in {repo} to {}",
                short(&update.new)
            ),
            (_, Change::Forced) => format!(
                "{agent} force-pushed {repo} ({name}): {}..{}, {new_commits}",
                short(&update.old),
                short(&update.new)
            ),
            (_, Change::Updated) => format!(
                "{agent} pushed {} to {repo} ({name})",
                plural(revs.len(), "commit")
            ),
        };
        let severity = if change == Change::Forced {
            Severity::Warning
        } else {
            Severity::Info
        };
        let mut body = json!({
            "repo": repo, "ref": update.refname, "kind": kind.level(), "name": name,
            "change": change.event(), "old": update.old, "new": update.new,
            "forced": change == Change::Forced, "agent": agent,
            "commits": revs.len(), "omitted": omitted,
        });
        if let Some(e) = &error {
            body["error"] = json!(e);
        }
        let envelope = push.envelope(
            push.topic(&[kind.level(), name], change.event()),
            summary,
            severity,
            body,
        )?;
        out.push(Publish::new(
            envelope.topic.clone(),
            envelope.to_vec(),
            Qos::AtLeastOnce,
            false,
        ));

        // One message per commit.
        let listed_revs = &revs[..listed];
        let objects = read_commits(listed_revs)?;
        let diff_input: String = listed_revs
            .iter()
            .map(
                |rev| match objects.get(rev).and_then(|c| c.parents.first()) {
                    Some(parent) => format!("{rev} {parent}\n"),
                    None => format!("{rev}\n"),
                },
            )
            .collect();
        let stats = if listed_revs.is_empty() {
            HashMap::new()
        } else {
            parse_numstat(&git(
                &[
                    "diff-tree",
                    "--stdin",
                    "-r",
                    "--numstat",
                    "-z",
                    "--no-renames",
                    "--root",
                    "--always",
                ],
                Some(diff_input.into_bytes()),
            )?)
        };
        for rev in listed_revs {
            let Some(commit) = objects.get(rev) else {
                continue;
            };
            let subject = subject_of(&commit.message);
            let (message, message_truncated) = cut(&commit.message, MESSAGE_MAX);
            let mut body = json!({
                "repo": repo, "branch": name, "ref": update.refname, "rev": rev,
                "parents": commit.parents,
                "author": commit.author.display(),
                "committer": commit.committer.display(),
                "date": commit.author.time.map(|t| t.to_rfc3339()),
                "commit_date": commit.committer.time.map(|t| t.to_rfc3339()),
                "subject": subject, "message": message,
                "stats": stats.get(rev).cloned().unwrap_or_default(),
                "agent": agent,
            });
            if message_truncated {
                body["message_truncated"] = json!(true);
            }
            let quoted = if subject.is_empty() {
                "(no message)".to_string()
            } else {
                format!("\"{subject}\"")
            };
            let mut envelope = push.envelope(
                push.topic(&[], "commit"),
                format!("{agent} pushed to {repo} ({name}): {quoted}"),
                Severity::Info,
                body,
            )?;
            if let Some(url) = push.link(rev, name) {
                envelope.links.insert("commit".into(), url);
            }
            out.push(Publish::new(
                envelope.topic.clone(),
                envelope.to_vec(),
                Qos::AtLeastOnce,
                false,
            ));
        }
        if omitted > 0 {
            let body = json!({
                "repo": repo, "branch": name, "ref": update.refname, "omitted": omitted,
                "first_omitted": revs[listed], "last_omitted": revs[revs.len() - 1],
                "listed": listed, "max_commits": max_commits, "agent": agent,
            });
            let summary = format!(
                "{agent} pushed {} to {repo} ({name}), not listed one by one",
                plural(omitted, "more commit")
            );
            let envelope = push.envelope(
                push.topic(&[], "commits_omitted"),
                summary,
                Severity::Info,
                body,
            )?;
            out.push(Publish::new(
                envelope.topic.clone(),
                envelope.to_vec(),
                Qos::AtLeastOnce,
                false,
            ));
        }

        // The branch head, retained (cleared on delete).
        if kind == RefKind::Branch {
            let head_topic = push.topic(&[name], "head");
            match &new_commit {
                None if change == Change::Deleted => {
                    out.push(Publish::new(head_topic, Vec::new(), Qos::AtLeastOnce, true))
                }
                // A branch pointing at something that is not a commit has
                // no head to announce.
                None => {}
                Some(new) => {
                    let head = match objects.get(new) {
                        Some(c) => Some(c.clone()),
                        None => read_commits(std::slice::from_ref(new))?.remove(new),
                    };
                    let subject = head
                        .as_ref()
                        .map(|c| subject_of(&c.message))
                        .unwrap_or_default();
                    let body = json!({
                        "repo": repo, "branch": name, "rev": new,
                        "subject": subject,
                        "author": head.as_ref().map(|c| c.author.display()),
                        "date": head.as_ref().and_then(|c| c.author.time).map(|t| t.to_rfc3339()),
                        "pushed_by": agent,
                    });
                    let mut envelope = push.envelope(
                        head_topic,
                        format!("{repo} ({name}) is at {}: \"{subject}\"", short(new)),
                        Severity::Info,
                        body,
                    )?;
                    if let Some(url) = push.link(new, name) {
                        envelope.links.insert("commit".into(), url);
                    }
                    out.push(Publish::new(
                        envelope.topic.clone(),
                        envelope.to_vec(),
                        Qos::AtLeastOnce,
                        true,
                    ));
                }
            }
        }
    }
    Ok(out)
}

fn cut(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_string(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_string(), true)
}

/// Runs `signalbox-bridge git`.
pub fn run(global: &GlobalArgs, args: GitArgs) -> BridgeResult {
    let budget = timeout_arg(args.timeout)?;
    let config = global.resolve().map_err(BridgeError::usage)?;
    let mut updates = Vec::new();
    let mut malformed = 0usize;
    for (n, line) in std::io::stdin().lock().split(b'\n').enumerate() {
        let line =
            line.map_err(|e| BridgeError::failure(anyhow!(e).context("reading the hook input")))?;
        let line = String::from_utf8_lossy(&line);
        if line.trim().is_empty() {
            continue;
        }
        match parse_hook_line(&line) {
            Ok(u) => updates.push(u),
            Err(e) => {
                malformed += 1;
                eprintln!("signalbox-bridge: error: input line {}: {e}", n + 1);
            }
        }
    }
    if updates.is_empty() {
        return Ok(if malformed > 0 { EXIT_DATAERR } else { 0 });
    }
    let repo = match &args.repo {
        Some(r) if !r.trim().is_empty() => r.clone(),
        Some(_) => return Err(BridgeError::usage(anyhow!("--repo must not be empty"))),
        None => repo_name().map_err(BridgeError::failure)?,
    };
    let agent = ["GL_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let push = Push {
        repo: repo.clone(),
        agent,
        url_template: args.url_template.clone(),
        prefix: config.prefix.value.clone(),
        env: config.env.value.clone(),
    };
    let publishes = messages(&push, &updates, args.max_commits).map_err(BridgeError::failure)?;
    let runtime = session::runtime().map_err(BridgeError::failure)?;
    runtime.block_on(async move {
        let mut session = Session::open(config, "git", budget).await;
        let sent = session.outbox.send_all(publishes).await;
        session.close(&format!("git-{repo}")).await;
        match sent {
            Ok(_) if malformed > 0 => Ok(EXIT_DATAERR),
            Ok(_) => Ok(0),
            Err(e) => Err(BridgeError::new(EXIT_TEMPFAIL, e)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "3f2a9c1d0b7e4a51c9f0e2d8b6a4c3e1f0a9b8c7";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn hook_lines_parse_and_classify() {
        let u = parse_hook_line(&format!("{Z} {A} refs/heads/feature/ext4\n")).expect("parses");
        assert_eq!(u.kind(), (RefKind::Branch, "feature/ext4"));
        assert_eq!(u.change(), Change::Created);
        let u = parse_hook_line(&format!("{A} {Z} refs/tags/v1.0")).expect("parses");
        assert_eq!(
            (u.kind(), u.change()),
            ((RefKind::Tag, "v1.0"), Change::Deleted)
        );
        let u = parse_hook_line(&format!("{A} {} refs/notes/commits", A.to_uppercase()))
            .expect("parses");
        assert_eq!(
            (u.kind(), u.change()),
            ((RefKind::Other, "notes/commits"), Change::Updated)
        );
        assert_eq!(u.new, A, "ids are lower-cased");
    }

    #[test]
    fn bad_hook_lines_are_rejected_with_a_reason() {
        let cases = [
            (String::new(), "0 field"),
            (format!("{A} {A}"), "2 field"),
            (format!("{A} {A} refs/heads/x extra"), "4 field"),
            (format!("xyz {A} refs/heads/x"), "old object id"),
            (format!("{A} {} refs/heads/x", &A[..39]), "new object id"),
            (
                format!("{A} {}{} refs/heads/x", A, &A[..24]),
                "differ in length",
            ),
            (format!("{Z} {Z} refs/heads/x"), "both zero"),
            (format!("{A} {A} heads/x"), "not a ref name"),
            (format!("{A} {A} refs/"), "not a ref name"),
        ];
        for (line, needle) in cases {
            let err = parse_hook_line(&line).expect_err(&line).to_string();
            assert!(err.contains(needle), "{line:?}: {err}");
        }
    }

    #[test]
    fn person_lines_parse_leniently() {
        let p = parse_person("Jesse Keating <jkeating@example.org> 1700000000 +0100");
        assert_eq!(p.display(), "Jesse Keating <jkeating@example.org>");
        assert_eq!(
            p.time.map(|t| t.to_rfc3339()).as_deref(),
            Some("2023-11-14T23:13:20+01:00")
        );
        let p = parse_person("<> 0 -0000");
        assert_eq!((p.name.as_str(), p.email.as_str()), ("", ""));
        let p = parse_person("no email at all");
        assert_eq!((p.name.as_str(), p.time), ("no email at all", None));
    }

    #[test]
    fn commit_objects_parse_with_signatures_and_encodings() {
        let mut raw = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent aaaa\nparent bbbb\n\
author J\xf6rg <j@example.org> 1700000000 +0000\ncommitter C <c@example.org> 1700000001 -0230\n\
encoding ISO-8859-1\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n abc\n -----END PGP SIGNATURE-----\n\n"
            .to_vec();
        raw.extend_from_slice(b"Gr\xfc\xdfe\n\nbody\n");
        let c = parse_commit(&raw);
        assert_eq!(c.parents, ["aaaa", "bbbb"]);
        assert_eq!(c.author.name, "Jörg");
        assert_eq!(c.message, "Grüße\n\nbody\n");
        assert_eq!(
            c.committer.time.map(|t| t.to_rfc3339()).as_deref(),
            Some("2023-11-14T19:43:21-02:30")
        );
    }

    #[test]
    fn numstat_output_is_split_per_commit() {
        let out = format!("{A}\0-\t-\tb.bin\x001\t0\tf\0{}\0\0", "b".repeat(40));
        let stats = parse_numstat(out.as_bytes());
        let s = &stats[A];
        assert_eq!(
            s.total,
            Totals {
                files: 2,
                additions: 1,
                deletions: 0
            }
        );
        assert!(s.files[0].binary && s.files[0].additions.is_none());
        assert_eq!(stats[&"b".repeat(40)], Stats::default());
    }

    fn hex_id() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::string::string_regex("[0-9a-f]{40}").unwrap(),
            proptest::string::string_regex("[0-9a-f]{64}").unwrap()
        ]
    }

    proptest! {
        /// Any text: a result, never a panic.
        #[test]
        fn any_line_parses_or_is_rejected(line in "\\PC{0,200}") {
            let _ = parse_hook_line(&line);
        }

        /// Well-formed lines round-trip, whatever the whitespace.
        #[test]
        fn valid_lines_round_trip(
            ids in hex_id().prop_flat_map(|a| (Just(a.clone()), proptest::string::string_regex(&format!("[0-9a-f]{{{}}}", a.len())).unwrap())),
            name in "[a-zA-Z0-9._-]{1,20}(/[a-zA-Z0-9._-]{1,20}){0,3}",
            kind in prop_oneof![Just("heads"), Just("tags"), Just("notes")],
            sep in "[ \t]{1,3}",
        ) {
            let (old, new) = ids;
            prop_assume!(!(is_zero(&old) && is_zero(&new)));
            let refname = format!("refs/{kind}/{name}");
            let u = parse_hook_line(&format!("{old}{sep}{new}{sep}{refname}\r\n")).expect("valid");
            prop_assert_eq!(&u.old, &old);
            prop_assert_eq!(&u.new, &new);
            prop_assert_eq!(&u.refname, &refname);
            let (k, short) = u.kind();
            let expect_short = if kind == "notes" { format!("notes/{name}") } else { name.clone() };
            prop_assert_eq!(short, expect_short.as_str());
            prop_assert_eq!(k, match kind { "heads" => RefKind::Branch, "tags" => RefKind::Tag, _ => RefKind::Other });
        }

        /// Person lines with any name and offset parse back.
        #[test]
        fn person_lines_round_trip(
            name in "[^<>\n]{0,30}",
            email in "[a-z0-9.@+-]{0,30}",
            secs in 0i64..4_000_000_000,
            east in any::<bool>(), hh in 0i32..14, mm in 0i32..60,
        ) {
            let tz = format!("{}{hh:02}{mm:02}", if east { '+' } else { '-' });
            let p = parse_person(&format!("{name} <{email}> {secs} {tz}"));
            prop_assert_eq!(p.name, name.trim());
            prop_assert_eq!(p.email, email);
            prop_assert_eq!(p.time.map(|t| t.timestamp()), Some(secs));
            prop_assert_eq!(p.time.map(|t| t.offset().local_minus_utc()), Some((if east { 1 } else { -1 }) * (hh * 3600 + mm * 60)));
        }

        /// Arbitrary commit bytes never panic.
        #[test]
        fn any_commit_bytes_parse(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_commit(&raw);
            let _ = parse_numstat(&raw);
        }
    }
}
