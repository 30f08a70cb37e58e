//! `cargo xtask fuzz`: coverage-guided fuzzing of every decoder with cargo-fuzz (libFuzzer),
//! and the short smoke pass that `cargo xtask test` ends with.
//!
//! The targets live in `fuzz/` (its own workspace; nightly only). Each run reads the
//! committed seeds, `fuzz/corpus/<target>/`, and writes what it learns to a scratch corpus
//! under the target directory, so the committed seeds only change on purpose. Minimized
//! crash inputs go to `fuzz/regressions/<target>/`, which both passes replay first.

use std::collections::BTreeSet;
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Seconds per target for `cargo xtask fuzz` without `--seconds`.
const SECONDS_DEFAULT: u64 = 60;
/// Seconds of fresh fuzzing per target in the smoke pass, after replaying the committed
/// corpus: 11 targets stay well under three minutes once built.
const SMOKE_SECONDS: u64 = 5;
/// libFuzzer's limits. A run that crosses one is a finding, like a panic.
/// Resident memory of the whole process.
const RSS_MB_MAX: u64 = 512;
/// Any single allocation: decoding is bounded by `wire::DECODE_BYTES_MAX` (1 MiB), and no
/// merge of inputs of at most `INPUT_BYTES_MAX` needs anywhere near this.
const MALLOC_MB_MAX: u64 = 64;
/// One input: linear work on 64 KiB takes milliseconds, so seconds mean super-linear.
const INPUT_SECONDS_MAX: u64 = 2;
/// The largest input libFuzzer generates: big enough for quadratic work to show.
const INPUT_BYTES_MAX: u64 = 65_536;

/// `cargo xtask fuzz [--seconds N] [--keep-going] [TARGET...]`, or `cargo xtask fuzz
/// --smoke` for the smoke pass alone.
pub fn fuzz(root: &Path, args: &[String]) -> Result<(), String> {
    let mut seconds = SECONDS_DEFAULT;
    let mut keep_going = false;
    let mut wanted = Vec::new();
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|s| *s > 0)
                    .ok_or("--seconds needs a positive number of seconds")?;
            }
            "--keep-going" => keep_going = true,
            "--smoke" => return fuzz_smoke(root),
            flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
            target => wanted.push(target.to_owned()),
        }
    }
    if !has_nightly() {
        return Err(
            "fuzzing needs the nightly toolchain: rustup toolchain install nightly".to_owned(),
        );
    }
    ensure_cargo_fuzz()?;
    let targets = select(root, &wanted)?;
    run_all(root, &targets, seconds, keep_going)
}

/// The smoke pass of `cargo xtask test`: every target replays its regressions and committed
/// corpus, then fuzzes for [`SMOKE_SECONDS`]. Skipped, saying so, without nightly, or
/// without cargo-fuzz when not root (as root it is installed).
pub fn fuzz_smoke(root: &Path) -> Result<(), String> {
    if !has_nightly() {
        eprintln!(
            "xtask: SKIPPING the fuzz smoke pass: the nightly toolchain is not installed \
             (rustup toolchain install nightly)"
        );
        return Ok(());
    }
    if !has_cargo_fuzz() && !crate::is_root() {
        eprintln!(
            "xtask: SKIPPING the fuzz smoke pass: cargo-fuzz is not installed \
             (cargo install cargo-fuzz --locked, or run `cargo xtask fuzz` once)"
        );
        return Ok(());
    }
    // As root (CI on a fresh machine), install it like the other prerequisites.
    ensure_cargo_fuzz()?;
    let targets = select(root, &[])?;
    run_all(root, &targets, SMOKE_SECONDS, false)
}

struct Outcome {
    target: String,
    execs: String,
    cov: String,
    findings: Vec<PathBuf>,
    ok: bool,
}

fn run_all(root: &Path, targets: &[String], seconds: u64, keep_going: bool) -> Result<(), String> {
    status(&mut fuzz_cmd(root, &["build"]), "cargo fuzz build")?;
    let scratch = target_dir(root).join("fuzz-corpus");
    let mut outcomes = Vec::new();
    for t in targets {
        outcomes.push(run_one(root, &scratch, t, seconds, keep_going)?);
    }
    eprintln!("\nxtask: fuzz summary ({seconds} s per target)");
    eprintln!("{:<16} {:>12} {:>7}  findings", "target", "execs", "cov");
    for o in &outcomes {
        eprintln!(
            "{:<16} {:>12} {:>7}  {}",
            o.target,
            o.execs,
            o.cov,
            o.findings.len()
        );
        for f in &o.findings {
            eprintln!(
                "    {} (reproduce: cargo +nightly fuzz run {} {}; minimize with \
                 cargo +nightly fuzz tmin {} {}, then keep it in fuzz/regressions/{}/)",
                f.display(),
                o.target,
                f.display(),
                o.target,
                f.display(),
                o.target
            );
        }
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.target.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzz targets failed: {}", failed.join(", ")))
    }
}

fn run_one(
    root: &Path,
    scratch: &Path,
    target: &str,
    seconds: u64,
    keep_going: bool,
) -> Result<Outcome, String> {
    let artifacts = root.join("fuzz/artifacts").join(target);
    let before = files(&artifacts);
    let mut ok = true;

    let regressions = files(&root.join("fuzz/regressions").join(target));
    if !regressions.is_empty() {
        eprintln!(
            "xtask: {target}: replaying {} regression input(s)",
            regressions.len()
        );
        let mut args = vec!["run".to_owned(), target.to_owned()];
        args.extend(regressions.iter().map(|p| p.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = fuzz_cmd(root, &args)
            .output()
            .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
        if !out.status.success() {
            ok = false;
            eprintln!(
                "xtask: {target}: a regression input still fails:\n{}",
                tail(&String::from_utf8_lossy(&out.stderr), 40)
            );
        }
    }

    let corpus = scratch.join(target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let seeds = root.join("fuzz/corpus").join(target);
    let limits = [
        format!("-max_total_time={seconds}"),
        format!("-rss_limit_mb={RSS_MB_MAX}"),
        format!("-malloc_limit_mb={MALLOC_MB_MAX}"),
        format!("-timeout={INPUT_SECONDS_MAX}"),
        format!("-max_len={INPUT_BYTES_MAX}"),
        "-print_final_stats=1".to_owned(),
    ];
    let mut args: Vec<String> = vec![
        "run".into(),
        target.into(),
        corpus.display().to_string(),
        seeds.display().to_string(),
        "--".into(),
    ];
    args.extend(limits);
    if keep_going {
        args.extend(
            [
                "-fork=1",
                "-ignore_crashes=1",
                "-ignore_timeouts=1",
                "-ignore_ooms=1",
            ]
            .map(String::from),
        );
    }
    eprintln!("xtask: {target}: fuzzing for {seconds} s");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = fuzz_cmd(root, &args)
        .output()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        ok = false;
        eprintln!(
            "xtask: {target}: FAILED ({})\n{}",
            out.status,
            tail(&log, 60)
        );
    }
    let (execs, cov) = final_stats(&log);
    eprintln!("xtask: {target}: {execs} executions, cov {cov}");
    let findings: Vec<PathBuf> = files(&artifacts)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    ok &= findings.is_empty();
    Ok(Outcome {
        target: target.to_owned(),
        execs,
        cov,
        findings,
        ok,
    })
}

/// The executions (`#N`) and coverage (`cov: N`) of libFuzzer's last status line.
fn final_stats(log: &str) -> (String, String) {
    let line = log
        .lines()
        .rfind(|l| l.starts_with('#') && l.contains("cov: "))
        .unwrap_or_default();
    let execs = line
        .split_whitespace()
        .next()
        .map(|s| s.trim_start_matches('#').trim_end_matches(':'))
        .unwrap_or("?");
    let cov = line
        .split_once("cov: ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .unwrap_or("?");
    (execs.to_owned(), cov.to_owned())
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn files(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The fuzz targets, all or those asked for.
fn select(root: &Path, wanted: &[String]) -> Result<Vec<String>, String> {
    let out = fuzz_cmd(root, &["list"])
        .output()
        .map_err(|e| format!("cannot run cargo fuzz list: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let all: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if wanted.is_empty() {
        return Ok(all);
    }
    match wanted.iter().find(|w| !all.contains(w)) {
        Some(bad) => Err(format!(
            "no fuzz target {bad:?}; the targets are: {}",
            all.join(", ")
        )),
        None => Ok(wanted.to_vec()),
    }
}

/// `cargo fuzz ARGS` on the nightly toolchain, in the workspace root (cargo-fuzz finds
/// `fuzz/` there). The variables that stable cargo set for xtask would pin the nested cargo
/// to stable, so they are cleared.
fn fuzz_cmd(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo", "fuzz"])
        .args(args)
        .current_dir(root);
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "CARGO_MANIFEST_DIR",
    ] {
        c.env_remove(var);
    }
    c
}

fn status(c: &mut Command, what: &str) -> Result<(), String> {
    let s = c.status().map_err(|e| format!("cannot run {what}: {e}"))?;
    if s.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({s})"))
    }
}

fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn has_cargo_fuzz() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .env_remove("CARGO")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs cargo-fuzz as root; otherwise says how.
fn ensure_cargo_fuzz() -> Result<(), String> {
    if has_cargo_fuzz() {
        return Ok(());
    }
    let install = "cargo install cargo-fuzz --locked";
    if !crate::is_root() {
        return Err(format!(
            "cargo-fuzz is missing. Install it with:\n\n    {install}"
        ));
    }
    eprintln!("xtask: cargo-fuzz is missing; running {install}");
    status(
        Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .env_remove("CARGO"),
        install,
    )
}
