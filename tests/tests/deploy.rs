//! The deployment kit (deploy/): every systemd unit parses, has the
//! restart policy and hardening we promise, starts a command line our
//! binaries accept, and passes `systemd-analyze verify` where systemd's
//! tools are installed; the example hook and crontab are valid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use signalbox_e2e::{bin, run_with_limit};

/// `section -> key -> values` (a key may repeat).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn units() -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("systemd"))
        .expect("deploy/systemd")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "service" || e == "target")
        })
        .collect();
    units.sort();
    units
}

/// A strict INI reading of a unit file: comments, `[Section]`, `Key=Value`;
/// anything else fails the test.
fn parse(path: &Path) -> Unit {
    let text = std::fs::read_to_string(path).expect("read unit");
    let mut unit = Unit::new();
    let mut section = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_string());
            unit.entry(name.to_string()).or_default();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}:{}: not Key=Value: {line}", path.display(), n + 1));
        let section = section
            .clone()
            .unwrap_or_else(|| panic!("{}:{}: key before any section", path.display(), n + 1));
        unit.entry(section)
            .or_default()
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    unit
}

fn one<'u>(unit: &'u Unit, section: &str, key: &str, path: &Path) -> &'u str {
    unit.get(section)
        .and_then(|s| s.get(key))
        .and_then(|v| v.last())
        .unwrap_or_else(|| panic!("{}: [{section}] {key}= missing", path.display()))
}

#[test]
fn every_unit_has_restart_hardening_and_a_valid_command() {
    let units = units();
    let names: Vec<String> = units
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    for wanted in [
        "signalbox-broker.service",
        "signalbox-rss.service",
        "signalbox-recorder.service",
        "signalbox-exec@.service",
        "signalbox-email@.service",
        "signalbox-feed@.service",
        "signalbox-webhook@.service",
        "signalbox.target",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "deploy/systemd/{wanted} missing"
        );
    }
    for path in units
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
    {
        let unit = parse(path);
        one(&unit, "Unit", "Description", path);
        one(&unit, "Install", "WantedBy", path);
        let restart = one(&unit, "Service", "Restart", path);
        assert!(
            ["always", "on-failure"].contains(&restart),
            "{}: Restart={restart}",
            path.display()
        );
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("StateDirectory", "signalbox"),
            ("User", "signalbox"),
        ] {
            assert_eq!(
                one(&unit, "Service", key, path),
                value,
                "{}: {key}",
                path.display()
            );
        }
        // The command line is one our binaries accept: run it with --help
        // (instance name and per-instance ARGS left out).
        let exec = one(&unit, "Service", "ExecStart", path);
        let mut words = exec.split_whitespace();
        let program = words.next().expect("program");
        let name = program.strip_prefix("/usr/local/bin/").unwrap_or_else(|| {
            panic!(
                "{}: ExecStart outside /usr/local/bin: {exec}",
                path.display()
            )
        });
        let args: Vec<String> = words
            .filter(|w| *w != "$ARGS")
            .map(|w| w.replace("%i", "test"))
            .collect();
        let mut cmd = Command::new(bin(name));
        signalbox_e2e::isolate(&mut cmd);
        cmd.args(&args).arg("--help");
        let out = run_with_limit(&mut cmd, Duration::from_secs(20));
        assert_eq!(
            out.code,
            0,
            "{}: `{name} {}` is not accepted: {}",
            path.display(),
            args.join(" "),
            out.stderr
        );
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        // The parse test above still checks every unit.
        eprintln!("\n!!! SKIPPED systemd-analyze verify: systemd-analyze not installed (apt-get install systemd) !!!\n");
        return;
    }
    // verify wants the programs to exist: point the units at the built ones.
    let dir = tempfile::tempdir().expect("tempdir");
    let bin_dir = bin("signalbox").parent().expect("target dir").to_path_buf();
    for path in units() {
        let text = std::fs::read_to_string(&path)
            .expect("read")
            .replace("/usr/local/bin/", &format!("{}/", bin_dir.display()));
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        std::fs::write(dir.path().join(&name), text).expect("copy");
    }
    for path in units() {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        // A template is verified as an instance of itself.
        let target = dir.path().join(name.replace("@.", "@test."));
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&target)
            .env("SYSTEMD_LOG_LEVEL", "warning")
            .output()
            .expect("run systemd-analyze");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // It exits 0 on unknown keys and bad values, but says so: any
        // line about our unit is a failure.
        let complaints: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(dir.path().to_str().expect("utf8")) || l.contains("signalbox"))
            .collect();
        assert!(
            out.status.success() && complaints.is_empty(),
            "systemd-analyze verify {name}:\n{stderr}"
        );
    }
}

#[test]
fn the_example_hook_and_crontab_are_valid() {
    let hook = deploy_dir().join("examples/post-receive");
    let out = Command::new("sh")
        .arg("-n")
        .arg(&hook)
        .output()
        .expect("sh -n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&hook).expect("hook").permissions().mode();
        assert!(mode & 0o111 != 0, "the hook is executable");
    }
    // Every crontab line: five time fields and a command through the cron
    // wrapper with a job name.
    let crontab = std::fs::read_to_string(deploy_dir().join("examples/crontab")).expect("crontab");
    let jobs: Vec<&str> = crontab
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.contains('='))
        .collect();
    assert!(!jobs.is_empty());
    for line in jobs {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() > 5, "{line}");
        assert!(line.contains(" signalbox-bridge "), "{line}");
    }
    assert!(crontab.contains("signalbox-bridge cron --job backup -- "));
}
