//! `signalbox-bridge git` as a real post-receive hook in a real bare
//! repository, driven by real pushes with the host's git: a new branch
//! (root commit, binary file, non-UTF-8 message), fast-forward, force push,
//! merge, tags created and deleted, a branch deleted, one commit pushed to
//! two branches at once, and a 1,500-commit push capped at 1,000 plus a
//! summary. Through the embedded broker and through mosquitto.

mod bridge_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bridge_support::{dead_broker, spool_files, Got, Subscriber, LIMIT};
use serde_json::Value;
use signalbox_e2e::{bin, embedded_broker, mosquitto};

/// A bare repository with the hook installed and a working clone.
struct Repos {
    dir: tempfile::TempDir,
    work: PathBuf,
}

impl Repos {
    fn new(broker: &str, extra_hook_args: &str) -> Repos {
        let dir = tempfile::tempdir().expect("tempdir");
        let bare = dir.path().join("kernel.git");
        let work = dir.path().join("work");
        let r = Repos {
            dir,
            work: work.clone(),
        };
        r.git(
            dir_of(&r),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                &bare.to_string_lossy(),
            ],
        );
        let hook = bare.join("hooks/post-receive");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\nexport SIGNALBOX_BROKER='{broker}' SIGNALBOX_STATE_DIR='{state}' SIGNALBOX_CONFIG=''\n\
                 exec '{bin}' git --url-template 'https://git.example.org/{{repo}}/commit/{{rev}}' {extra_hook_args}\n",
                state = r.state().display(),
                bin = bin("signalbox-bridge").display(),
            ),
        )
        .expect("write hook");
        let _ = Command::new("chmod").arg("+x").arg(&hook).status();
        r.git(
            dir_of(&r),
            &[
                "clone",
                "-q",
                &bare.to_string_lossy(),
                &work.to_string_lossy(),
            ],
        );
        r.git(&work, &["config", "user.name", "Jesse Keating"]);
        r.git(&work, &["config", "user.email", "jkeating@example.org"]);
        r
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs git in `cwd` with an isolated environment; returns stdout and
    /// stderr (the hook's output appears on stderr as `remote: …`).
    fn git(&self, cwd: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env("HOME", self.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("USER", "jkeating")
            .env_remove("GL_USER")
            .env_remove("GIT_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("run git");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "git {args:?} failed: {text}");
        text
    }

    fn w(&self, args: &[&str]) -> String {
        self.git(&self.work, args)
    }

    fn commit(&self, file: &str, content: &[u8], message: &str) -> String {
        std::fs::write(self.work.join(file), content).expect("write file");
        self.w(&["add", file]);
        self.w(&["commit", "-q", "-m", message]);
        self.rev("HEAD")
    }

    fn rev(&self, what: &str) -> String {
        self.w(&["rev-parse", what]).trim().to_string()
    }
}

fn dir_of(r: &Repos) -> &Path {
    r.dir.path()
}

fn topics(got: &[Got]) -> Vec<String> {
    got.iter().map(|g| g.topic.clone()).collect()
}

/// Messages of one push: everything until the hook's health report.
fn push_messages(sub: &Subscriber) -> Vec<Got> {
    let mut got = Vec::new();
    loop {
        let m = sub
            .next(LIMIT)
            .expect("the hook's messages and its health report");
        if m.topic.contains("/_health/") {
            assert_eq!(m.json()["state"], "idle");
            return got;
        }
        got.push(m);
    }
}

fn body(g: &Got) -> Value {
    g.json()["body"].clone()
}

const P: &str = "signalbox/dev/git/kernel";

#[test]
fn real_pushes_through_the_post_receive_hook() {
    let broker = embedded_broker();
    let sub = Subscriber::start(&broker.url(), "signalbox/#");
    let r = Repos::new(&broker.url(), "");

    // 1. New branch: a root commit, a binary file, a non-UTF-8 message.
    let root = r.commit("README", b"hello\n", "Initial commit");
    let bin_rev = r.commit("logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\xff", "Add logo");
    r.w(&["config", "i18n.commitEncoding", "ISO-8859-1"]);
    std::fs::write(r.work.join("README"), "hello\nworld\n").expect("write");
    r.w(&["add", "README"]);
    let msg_file = r.dir.path().join("msg");
    std::fs::write(&msg_file, b"Gr\xfc\xdfe aus K\xf6ln\n\nLatin-1 body \xe9\n")
        .expect("write msg");
    r.w(&["commit", "-q", "-F", &msg_file.to_string_lossy()]);
    let latin = r.rev("HEAD");
    r.w(&["config", "--unset", "i18n.commitEncoding"]);
    let out = r.w(&["push", "-q", "origin", "main"]);
    assert!(!out.contains("error"), "hook output: {out}");
    let got = push_messages(&sub);
    assert_eq!(
        topics(&got),
        [
            format!("{P}/branch/main/created"),
            format!("{P}/commit"),
            format!("{P}/commit"),
            format!("{P}/commit"),
            format!("{P}/main/head"),
        ]
    );
    let created = got[0].json();
    assert_eq!(
        created["summary"],
        "jkeating created branch main in kernel (3 new commits)"
    );
    assert_eq!(created["agent"], "jkeating");
    let c0 = body(&got[1]);
    assert_eq!(c0["rev"], root.as_str(), "oldest first");
    assert_eq!(c0["parents"], serde_json::json!([]), "root commit");
    assert_eq!(c0["author"], "Jesse Keating <jkeating@example.org>");
    assert_eq!(c0["subject"], "Initial commit");
    assert_eq!(c0["branch"], "main");
    assert_eq!(
        c0["stats"]["total"],
        serde_json::json!({"files": 1, "additions": 1, "deletions": 0})
    );
    assert_eq!(
        got[1].json()["summary"],
        "jkeating pushed to kernel (main): \"Initial commit\""
    );
    assert_eq!(
        got[1].json()["links"]["commit"],
        format!("https://git.example.org/kernel/commit/{root}")
    );
    let c1 = body(&got[2]);
    assert_eq!(c1["rev"], bin_rev.as_str());
    assert_eq!(c1["stats"]["files"][0]["binary"], true);
    assert_eq!(c1["stats"]["files"][0]["additions"], Value::Null);
    let c2 = body(&got[3]);
    assert_eq!(c2["rev"], latin.as_str());
    assert_eq!(c2["subject"], "Grüße aus Köln");
    assert_eq!(c2["message"], "Grüße aus Köln\n\nLatin-1 body é\n");
    assert_eq!(
        c2["stats"]["total"],
        serde_json::json!({"files": 1, "additions": 1, "deletions": 0})
    );
    assert_eq!(body(&got[4])["rev"], latin.as_str());

    // 2. Fast-forward with GL_USER set (gitolite): two commits.
    let a = r.commit("a.txt", b"a\n", "Add a");
    let b = r.commit("a.txt", b"a\nb\n", "Extend a");
    let out = Command::new("git")
        .args(["push", "-q", "origin", "main"])
        .current_dir(&r.work)
        .env("HOME", r.dir.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GL_USER", "alice")
        .output()
        .expect("push");
    assert!(out.status.success());
    let got = push_messages(&sub);
    assert_eq!(
        topics(&got),
        [
            format!("{P}/branch/main/updated"),
            format!("{P}/commit"),
            format!("{P}/commit"),
            format!("{P}/main/head")
        ]
    );
    assert_eq!(
        got[0].json()["summary"],
        "alice pushed 2 commits to kernel (main)"
    );
    assert_eq!(got[0].json()["agent"], "alice", "GL_USER wins over USER");
    assert_eq!(
        [body(&got[1])["rev"].clone(), body(&got[2])["rev"].clone()],
        [Value::from(a.clone()), Value::from(b.clone())]
    );

    // 3. A new branch from main with one commit: only that commit is new.
    r.w(&["checkout", "-q", "-b", "feature/ext4"]);
    let feat = r.commit("ext4.c", b"int x;\n", "ext4: fix oops");
    r.w(&["push", "-q", "origin", "feature/ext4"]);
    let got = push_messages(&sub);
    assert_eq!(
        topics(&got),
        [
            format!("{P}/branch/feature_ext4/created"),
            format!("{P}/commit"),
            format!("{P}/feature_ext4/head")
        ]
    );
    assert_eq!(body(&got[1])["rev"], feat.as_str());
    assert_eq!(body(&got[1])["branch"], "feature/ext4");

    // 4. Force push: main rewritten.
    r.w(&["checkout", "-q", "main"]);
    r.w(&["reset", "-q", "--hard", &a]);
    // Same change to a.txt as the lost commit (so the merge below is
    // clean), plus a new file: a different commit, and `b` is gone.
    std::fs::write(r.work.join("c.txt"), "c\n").expect("write");
    r.w(&["add", "c.txt"]);
    let rewritten = r.commit("a.txt", b"a\nb\n", "Extend a, better");
    r.w(&["push", "-q", "-f", "origin", "main"]);
    let got = push_messages(&sub);
    assert_eq!(
        topics(&got),
        [
            format!("{P}/branch/main/forced"),
            format!("{P}/commit"),
            format!("{P}/main/head")
        ]
    );
    let forced = got[0].json();
    assert_eq!(forced["severity"], "warning");
    assert_eq!(forced["body"]["forced"], true);
    assert_eq!(forced["body"]["old"], b.as_str());
    assert_eq!(body(&got[1])["rev"], rewritten.as_str());

    // 5. Merge (no fast-forward): only the merge commit is new; stats are
    // against the first parent.
    r.w(&[
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "Merge feature/ext4",
        "feature/ext4",
    ]);
    let merge = r.rev("HEAD");
    r.w(&["push", "-q", "origin", "main"]);
    let got = push_messages(&sub);
    assert_eq!(
        topics(&got),
        [
            format!("{P}/branch/main/updated"),
            format!("{P}/commit"),
            format!("{P}/main/head")
        ]
    );
    let m = body(&got[1]);
    assert_eq!(m["rev"], merge.as_str());
    assert_eq!(m["parents"].as_array().map(Vec::len), Some(2));
    assert_eq!(m["stats"]["files"][0]["path"], "ext4.c");

    // 6. Tags: annotated and lightweight created, then one deleted.
    r.w(&["tag", "-a", "-m", "Release 1.0", "v1.0"]);
    r.w(&["tag", "light"]);
    r.w(&["push", "-q", "origin", "v1.0", "light"]);
    let got = push_messages(&sub);
    let mut t = topics(&got);
    t.sort();
    assert_eq!(
        t,
        [
            format!("{P}/tag/light/created"),
            format!("{P}/tag/v1.0/created")
        ],
        "tags announce no commits"
    );
    assert!(got.iter().all(|g| g.json()["summary"]
        .as_str()
        .unwrap_or_default()
        .contains("tagged kernel")));
    r.w(&["push", "-q", "origin", ":refs/tags/v1.0"]);
    let got = push_messages(&sub);
    assert_eq!(topics(&got), [format!("{P}/tag/v1.0/deleted")]);
    assert_eq!(
        got[0].json()["summary"],
        "jkeating deleted tag v1.0 in kernel"
    );

    // 7. Branch deleted: event, and its retained head cleared.
    r.w(&["push", "-q", "origin", ":feature/ext4"]);
    let got = push_messages(&sub);
    assert_eq!(
        topics(&got),
        [
            format!("{P}/branch/feature_ext4/deleted"),
            format!("{P}/feature_ext4/head")
        ]
    );
    assert!(
        got[1].payload.is_empty(),
        "an empty retained publish clears the head"
    );

    // 8. One commit pushed to two branches at once is announced once.
    let shared = r.commit("s.txt", b"s\n", "Shared work");
    r.w(&["branch", "copy"]);
    r.w(&["push", "-q", "origin", "main", "copy"]);
    let got = push_messages(&sub);
    let commits: Vec<String> = got
        .iter()
        .filter(|g| g.topic.ends_with("/commit"))
        .map(|g| body(g)["rev"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(commits, std::slice::from_ref(&shared));

    // The heads are retained: a new subscriber sees the current ones.
    let late = Subscriber::start(&broker.url(), &format!("{P}/+/head"));
    let heads = late.drain(Duration::from_secs(2));
    assert!(heads.iter().all(|h| h.retain));
    let mut seen: Vec<(String, String)> = heads
        .iter()
        .map(|h| {
            (
                h.topic.clone(),
                body(h)["rev"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (format!("{P}/copy/head"), shared.clone()),
            (format!("{P}/main/head"), shared)
        ]
    );
    assert!(spool_files(&r.state().join("spool")).is_empty());
}

/// Makes `n` commits on top of HEAD quickly with `git fast-import`.
fn fast_import(r: &Repos, n: usize) {
    let parent = r.rev("HEAD");
    let mut stream = String::new();
    for i in 1..=n {
        let msg = format!("bulk commit {i}");
        stream.push_str(&format!(
            "commit refs/heads/main\ncommitter Bulk <bulk@example.org> {} +0000\ndata {}\n{msg}\n",
            1_700_000_000 + i,
            msg.len() + 1
        ));
        if i == 1 {
            stream.push_str(&format!("from {parent}\n"));
        }
        stream.push_str(&format!(
            "M 644 inline bulk.txt\ndata {}\n{i}\n\n",
            i.to_string().len() + 1
        ));
    }
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&r.work)
        .env("HOME", r.dir.path())
        .stdin(Stdio::piped())
        .spawn()
        .expect("fast-import");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(stream.as_bytes()).expect("write stream");
    }
    assert!(child.wait().expect("wait").success());
    r.w(&["reset", "-q", "--hard", "main"]);
}

#[test]
fn a_1500_commit_push_is_capped_at_1000_plus_a_summary() {
    let broker = embedded_broker();
    let sub = Subscriber::start(&broker.url(), "signalbox/#");
    let r = Repos::new(&broker.url(), "");
    r.commit("README", b"x\n", "Initial commit");
    r.w(&["push", "-q", "origin", "main"]);
    assert_eq!(push_messages(&sub).len(), 3);

    fast_import(&r, 1500);
    let started = std::time::Instant::now();
    r.w(&["push", "-q", "origin", "main"]);
    let took = started.elapsed();
    let got = push_messages(&sub);
    assert_eq!(
        got.len(),
        1 + 1000 + 1 + 1,
        "ref event, 1,000 commits, summary, head"
    );
    assert_eq!(got[0].json()["body"]["commits"], 1500);
    assert_eq!(got[0].json()["body"]["omitted"], 500);
    for (i, g) in got[1..=1000].iter().enumerate() {
        assert_eq!(g.topic, format!("{P}/commit"));
        assert_eq!(
            body(g)["subject"],
            format!("bulk commit {}", i + 1),
            "oldest first"
        );
    }
    let summary = &got[1001];
    assert_eq!(summary.topic, format!("{P}/commits_omitted"));
    assert_eq!(body(summary)["omitted"], 500);
    assert_eq!(
        summary.json()["summary"],
        "jkeating pushed 500 more commits to kernel (main), not listed one by one"
    );
    assert_eq!(got[1002].topic, format!("{P}/main/head"));
    eprintln!("push of 1,500 commits with the hook (debug build): {took:?}");
}

#[test]
fn with_the_broker_down_a_push_is_spooled_and_never_rejected() {
    let r = Repos::new(&dead_broker(), "--timeout 2");
    r.commit("README", b"x\n", "Initial commit");
    r.commit("b", b"y\n", "Second");
    let started = std::time::Instant::now();
    let out = r.w(&["push", "origin", "main"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(out.contains("main -> main"), "the push went through: {out}");
    assert!(!out.contains("signalbox-bridge: error"), "{out}");
    assert_eq!(
        spool_files(&r.state().join("spool")).len(),
        4,
        "created, 2 commits, head"
    );
}

#[test]
fn malformed_hook_input_is_reported_and_the_rest_handled() {
    let broker = embedded_broker();
    let sub = Subscriber::start(&broker.url(), "signalbox/dev/git/#");
    let r = Repos::new(&broker.url(), "");
    let rev = r.commit("README", b"x\n", "Initial commit");
    let state = tempfile::tempdir().expect("tempdir");
    let input = format!("garbage line\n{} {rev} refs/heads/main\n", "0".repeat(40));
    // The work tree has the commit; run the hook there by hand.
    let mut cmd = bridge_support::bridge(&broker.url(), state.path());
    cmd.current_dir(&r.work)
        .args(["git", "--repo", "kernel"])
        .env("HOME", r.dir.path());
    let out = bridge_support::run_input(&mut cmd, input.as_bytes(), LIMIT);
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "signalbox-bridge: error: input line 1: expected `<old> <new> <ref>`, got 2 field(s)\n"
    );
    let got = sub.take(3, LIMIT);
    assert_eq!(got[0].topic, format!("{P}/branch/main/created"));

    // Not a repository: one line, exit 1.
    let mut cmd = bridge_support::bridge(&broker.url(), state.path());
    cmd.current_dir(state.path())
        .arg("git")
        .env("GIT_CEILING_DIRECTORIES", state.path());
    let out = bridge_support::run_input(&mut cmd, input.as_bytes(), LIMIT);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .lines()
            .last()
            .unwrap_or_default()
            .contains("not in a git repository"),
        "{}",
        out.stderr
    );
}

#[test]
fn pushes_through_mosquitto() {
    let Some(m) = mosquitto("pushes_through_mosquitto") else {
        return;
    };
    let sub = Subscriber::start(&m.url(), "signalbox/#");
    let r = Repos::new(&m.url(), "");
    r.commit("README", b"x\n", "Initial commit");
    r.w(&["push", "-q", "origin", "main"]);
    let got = push_messages(&sub);
    assert_eq!(
        topics(&got),
        [
            format!("{P}/branch/main/created"),
            format!("{P}/commit"),
            format!("{P}/main/head")
        ]
    );
}
