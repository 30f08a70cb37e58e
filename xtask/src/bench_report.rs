//! `cargo xtask bench-report`: every benchmark in one run, written to `BENCHMARKS.md` with
//! SVG plots in `docs/bench/`.
//!
//! 1. the criterion benches of the root package (`benches/clocks.rs`, `benches/crdt.rs`),
//!    with short warm-up and measurement times; the figures are read from criterion's
//!    `new/estimates.json` files (medians and their confidence intervals) written during
//!    this run, and the size lines the crdt bench prints;
//! 2. `bench-node`'s measurements ([`crate::bench_node::measure`]): one node against
//!    redis-server, fsync mode, and three replicating nodes (throughput, latency
//!    percentiles from `cart-load`, replication lag, bytes on the wire per write);
//! 3. convergence after a heal, for each number of divergent carts (cart-load's
//!    `heal_convergence` example: three regions in one process, a real partition through
//!    the transport's `Faults` hook);
//! 4. cart size against the number of adds, before and after `Cart::compact`, in process.
//!
//! Every table states the machine, the date and the commit, and gives ratios next to the
//! absolute figures. Nothing in the report is typed in by hand: what a run could not
//! measure is written as "not measured", with the reason.

use crate::bench_node::{self, NodeFigures, Run};
use crate::plot;
use indicatif::{ProgressBar, ProgressStyle};
use meridian_clocks::ReplicaId;
use meridian_crdt::{Cart, Lattice};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The flags of `bench-report`.
struct Params {
    warm_up_secs: f64,
    measurement_secs: f64,
    node_secs: u32,
    node_concurrency: u32,
    heal_carts: Vec<u64>,
    heal_timeout_secs: u64,
    size_adds: Vec<u64>,
    skip_criterion: bool,
    skip_node: bool,
    skip_heal: bool,
    out: PathBuf,
}

const USAGE: &str = "usage: cargo xtask bench-report [FLAGS]
  --quick                 a shorter pass: criterion 0.5 s warm-up and 1 s measurement, 5 s
                          per bench-node target, 100 and 1,000 carts and adds
  --warm-up-secs S        criterion warm-up per benchmark (default 1)
  --measurement-secs S    criterion measurement per benchmark (default 3)
  --node-secs N           cart-load duration per bench-node target (default 15)
  --node-concurrency N    cart-load clients (default 64)
  --heal-carts N,N,...    divergent carts per convergence point (default 100,1000,10000)
  --heal-timeout-secs S   bound of every wait in a convergence point (default 120)
  --size-adds N,N,...     adds per cart-size point (default 100,1000,10000)
  --skip-criterion, --skip-node, --skip-heal
                          leave a section out (the report says it was not measured)
  --out PATH              where to write the report (default BENCHMARKS.md; the SVGs go
                          to docs/bench/)";

impl Params {
    fn parse(args: &[String]) -> Result<Params, String> {
        let mut p = Params {
            warm_up_secs: 1.0,
            measurement_secs: 3.0,
            node_secs: 15,
            node_concurrency: 64,
            heal_carts: vec![100, 1_000, 10_000],
            heal_timeout_secs: 120,
            size_adds: vec![100, 1_000, 10_000],
            skip_criterion: false,
            skip_node: false,
            skip_heal: false,
            out: crate::workspace_root().join("BENCHMARKS.md"),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            let secs = |v: String| match v.parse::<f64>() {
                Ok(s) if s > 0.0 && s <= 600.0 => Ok(s),
                _ => Err(format!("{flag} takes seconds in (0, 600], not {v:?}")),
            };
            let int = |v: String| match v.parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{flag} takes a positive integer, not {v:?}")),
            };
            let list = |v: String| -> Result<Vec<u64>, String> {
                let l: Vec<u64> = v
                    .split(',')
                    .map(|s| s.trim().parse::<u64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("{flag} takes numbers separated by commas"))?;
                if l.is_empty() || l.iter().any(|&n| n == 0 || n > 1_000_000) {
                    return Err(format!("{flag}: each count must be in 1..=1000000"));
                }
                Ok(l)
            };
            match flag.as_str() {
                "--quick" => {
                    p.warm_up_secs = 0.5;
                    p.measurement_secs = 1.0;
                    p.node_secs = 5;
                    p.heal_carts = vec![100, 1_000];
                    p.size_adds = vec![100, 1_000];
                }
                "--warm-up-secs" => p.warm_up_secs = secs(value()?)?,
                "--measurement-secs" => p.measurement_secs = secs(value()?)?,
                "--node-secs" => p.node_secs = int(value()?)?.min(600),
                "--node-concurrency" => p.node_concurrency = int(value()?)?,
                "--heal-carts" => p.heal_carts = list(value()?)?,
                "--heal-timeout-secs" => p.heal_timeout_secs = u64::from(int(value()?)?.min(600)),
                "--size-adds" => p.size_adds = list(value()?)?,
                "--skip-criterion" => p.skip_criterion = true,
                "--skip-node" => p.skip_node = true,
                "--skip-heal" => p.skip_heal = true,
                "--out" => p.out = PathBuf::from(value()?),
                other => return Err(format!("unknown bench-report flag {other:?}\n\n{USAGE}")),
            }
        }
        Ok(p)
    }

    /// The command line that reproduces this run's settings.
    fn command(&self) -> String {
        let join = |l: &[u64]| l.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let mut c = format!(
            "cargo xtask bench-report --warm-up-secs {} --measurement-secs {} --node-secs {} \
             --node-concurrency {} --heal-carts {} --size-adds {}",
            self.warm_up_secs,
            self.measurement_secs,
            self.node_secs,
            self.node_concurrency,
            join(&self.heal_carts),
            join(&self.size_adds)
        );
        for (skip, flag) in [
            (self.skip_criterion, " --skip-criterion"),
            (self.skip_node, " --skip-node"),
            (self.skip_heal, " --skip-heal"),
        ] {
            if skip {
                c += flag;
            }
        }
        c
    }
}

/// Where and when: stated on every table.
struct Provenance {
    cpu: String,
    cores: usize,
    memory_gib: f64,
    date: String,
    commit: String,
}

impl Provenance {
    fn collect() -> Provenance {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
        let date = capture("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
            .unwrap_or_else(|| "unknown date".to_owned());
        let root = crate::workspace_root();
        let root_s = root.display().to_string();
        let hash = capture("git", &["-C", &root_s, "rev-parse", "--short", "HEAD"])
            .unwrap_or_else(|| "unknown".to_owned());
        // The report's own outputs do not make the measured tree dirty.
        let status = Command::new("git")
            .args(["-C", &root_s, "status", "--porcelain"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        // Porcelain lines are "XY PATH": not trimmed, since X may be a space.
        let dirty = status.as_deref().unwrap_or("").lines().any(|l| {
            let path = l.get(3..).unwrap_or("");
            path != "BENCHMARKS.md" && !path.starts_with("docs/bench/")
        });
        let commit = if status.is_none() {
            format!("`{hash}` (git status failed: clean or dirty unknown)")
        } else if dirty {
            format!("`{hash}` (dirty: uncommitted changes besides the report)")
        } else {
            format!("`{hash}` (clean)")
        };
        Provenance {
            cpu,
            cores,
            memory_gib,
            date,
            commit,
        }
    }

    fn line(&self) -> String {
        format!(
            "*Machine: {}, {} cores, {:.1} GiB; {}; commit {}.*\n",
            self.cpu, self.cores, self.memory_gib, self.date, self.commit
        )
    }
}

fn capture(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One criterion result: the median and its confidence interval, ns.
#[derive(Clone, Debug)]
struct Estimate {
    median: f64,
    lower: f64,
    upper: f64,
    confidence: f64,
}

/// Criterion's results: (group, function, parameter) → estimate, and the crdt bench's
/// printed size lines.
#[derive(Default)]
struct CriterionResults {
    estimates: BTreeMap<(String, String, String), Estimate>,
    size_lines: Vec<String>,
}

impl CriterionResults {
    fn get(&self, group: &str, function: &str, param: &str) -> Option<&Estimate> {
        self.estimates
            .get(&(group.to_owned(), function.to_owned(), param.to_owned()))
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
}

/// Runs the benches, showing each benchmark's name on the progress bar, then reads what
/// criterion wrote during the run.
fn run_criterion(
    p: &Params,
    bar: &ProgressBar,
    log_dir: &Path,
) -> Result<CriterionResults, String> {
    let started = SystemTime::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut child = Command::new(&cargo)
        .args([
            "bench", "-p", "meridian", "--bench", "clocks", "--bench", "crdt", "--",
        ])
        .args(["--warm-up-time", &p.warm_up_secs.to_string()])
        .args(["--measurement-time", &p.measurement_secs.to_string()])
        .current_dir(crate::workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo bench: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout from cargo bench")?;
    let stderr = child.stderr.take().ok_or("no stderr from cargo bench")?;
    let mut out_log =
        std::fs::File::create(log_dir.join("criterion.stdout.log")).map_err(|e| e.to_string())?;
    let mut err_log =
        std::fs::File::create(log_dir.join("criterion.stderr.log")).map_err(|e| e.to_string())?;
    let mut results = CriterionResults::default();
    std::thread::scope(|scope| {
        // The results and the crdt bench's size lines arrive on stdout...
        let sizes = &mut results.size_lines;
        scope.spawn(move || {
            use std::io::Write as _;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(out_log, "{line}");
                if let Some(size) = line.strip_prefix("size  ") {
                    sizes.push(size.to_owned());
                }
            }
        });
        // ...and criterion's "Benchmarking NAME: ..." progress on stderr.
        use std::io::Write as _;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(err_log, "{line}");
            if let Some(rest) = line.strip_prefix("Benchmarking ") {
                if let Some(name) = rest.split(':').next() {
                    bar.set_message(format!("criterion: {name}"));
                }
            }
        }
    });
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!(
            "cargo bench failed ({status}); see {}",
            log_dir.join("criterion.stderr.log").display()
        ));
    }
    let root = target_dir().join("criterion");
    let mut files = Vec::new();
    find_files(&root, "benchmark.json", &mut files);
    for bench in files {
        let dir = bench.parent().expect("a file has a parent");
        if dir.file_name().is_none_or(|n| n != "new") {
            continue;
        }
        let fresh = std::fs::metadata(&bench)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= started);
        if !fresh {
            continue;
        }
        let read = |name: &str| -> Result<serde_json::Value, String> {
            let path = dir.join(name);
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
        };
        let id = read("benchmark.json")?;
        let est = read("estimates.json")?;
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
        let m = &est["median"];
        let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        results.estimates.insert(
            (
                s(&id["group_id"]),
                s(&id["function_id"]),
                s(&id["value_str"]),
            ),
            Estimate {
                median: num(&m["point_estimate"]),
                lower: num(&m["confidence_interval"]["lower_bound"]),
                upper: num(&m["confidence_interval"]["upper_bound"]),
                confidence: num(&m["confidence_interval"]["confidence_level"]),
            },
        );
    }
    if results.estimates.is_empty() {
        return Err(format!(
            "cargo bench ran, but no criterion estimates under {} were written by this run",
            root.display()
        ));
    }
    Ok(results)
}

fn find_files(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            find_files(&path, name, out);
        } else if path.file_name().is_some_and(|n| n == name) {
            out.push(path);
        }
    }
}

/// One point of the convergence series (the example's JSON).
#[derive(Clone, Debug, serde::Deserialize)]
struct HealPoint {
    carts: u64,
    divergent_before: u64,
    writes: u64,
    write_secs: f64,
    reconnect_secs: f64,
    reconnect_after_secs: f64,
    converge_secs: f64,
    converge_after_secs: f64,
    divergent_after: u64,
    anti_entropy_sessions: u64,
}

#[derive(serde::Deserialize)]
struct HealSummary {
    setup: String,
    points: Vec<HealPoint>,
}

fn run_heal(bin: &Path, carts: u64, p: &Params, dir: &Path) -> Result<HealSummary, String> {
    let json = dir.join(format!("heal-{carts}.json"));
    let log_path = dir.join(format!("heal-{carts}.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let status = Command::new(bin)
        .args(["--carts", &carts.to_string()])
        .args(["--timeout-secs", &p.heal_timeout_secs.to_string()])
        .arg("--json")
        .arg(&json)
        .env("RUST_LOG", "warn")
        .stdout(log)
        .stderr(err)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !status.success() {
        let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(3).collect();
        return Err(format!(
            "heal_convergence --carts {carts} failed ({status}): {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    let text = std::fs::read_to_string(&json).map_err(|e| format!("{}: {e}", json.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))
}

/// One point of the cart-size series.
#[derive(Clone, Debug)]
struct SizePoint {
    adds: u64,
    before: usize,
    /// The compacted state's size.
    after: usize,
    /// The compaction delta's size.
    delta: usize,
}

fn encoded_len(cart: &Cart) -> Result<usize, String> {
    bincode::serde::encode_to_vec(cart, bincode::config::standard())
        .map(|b| b.len())
        .map_err(|e| format!("encoding a cart: {e}"))
}

/// `adds` adds of 1 to one sku, round-robin over replicas 1, 2 and 3, each replica merging
/// the others' deltas; then replica 1's cart, encoded as the node stores it (bincode,
/// `config::standard()`), before and after compaction with its full version vector as the
/// stable frontier.
fn cart_size(adds: u64) -> Result<SizePoint, String> {
    let mut replicas = [Cart::default(), Cart::default(), Cart::default()];
    for i in 0..adds {
        let r = (i % 3) as usize;
        let delta = replicas[r]
            .add(ReplicaId(r as u64 + 1), "book", 1)
            .map_err(|e| format!("add: {e}"))?;
        for (j, other) in replicas.iter_mut().enumerate() {
            if j != r {
                other.merge(&delta);
            }
        }
    }
    if replicas.iter().any(|c| *c != replicas[0]) {
        return Err("the three replicas did not converge".to_owned());
    }
    if u64::from(replicas[0].quantity("book")) != adds {
        return Err(format!(
            "quantity {} after {adds} adds of 1",
            replicas[0].quantity("book")
        ));
    }
    let before = encoded_len(&replicas[0])?;
    // Every replica has applied every add: the full version vector is stable.
    let stable = replicas[0].context().version_vector().clone();
    let [first, second, _] = &mut replicas;
    let delta = first.compact(&stable);
    let after = encoded_len(first)?;
    // The compaction must not change what the cart says, and a replica that merges its
    // delta must end in the same state.
    if u64::from(first.quantity("book")) != adds {
        return Err(format!(
            "compaction changed the quantity: {} after {adds} adds of 1",
            first.quantity("book")
        ));
    }
    second.merge(&delta);
    if second != first {
        return Err("a replica merging the compaction delta did not converge".to_owned());
    }
    Ok(SizePoint {
        adds,
        before,
        after,
        delta: encoded_len(&delta)?,
    })
}

/// The whole report.
pub fn bench_report(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let p = Params::parse(args)?;
    let started = Instant::now();
    let provenance = Provenance::collect();
    let bins = if p.skip_node && p.skip_heal {
        None
    } else {
        Some(bench_node::build_release()?)
    };
    if !p.skip_criterion {
        // Compile the benches before the clock of the progress bar starts.
        crate::cargo(&["bench", "-p", "meridian", "--no-run"])?;
    }
    let log_dir =
        std::env::temp_dir().join(format!("meridian-bench-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir).map_err(|e| e.to_string())?;

    let steps = u64::from(!p.skip_criterion)
        + if p.skip_node { 0 } else { 6 }
        + if p.skip_heal {
            0
        } else {
            p.heal_carts.len() as u64
        }
        + p.size_adds.len() as u64
        + 1;
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {wide_msg}",
        )
        .map_err(|e| e.to_string())?,
    );
    bar.enable_steady_tick(Duration::from_millis(120));

    let criterion = if p.skip_criterion {
        Err("not measured in this run (--skip-criterion)".to_owned())
    } else {
        bar.set_message("criterion benches");
        let r = run_criterion(&p, &bar, &log_dir);
        bar.inc(1);
        r
    };

    let node = match (&bins, p.skip_node) {
        (Some(bins), false) => {
            let np = bench_node::Params {
                duration_secs: p.node_secs,
                concurrency: p.node_concurrency,
                also_pinned: true,
                quiet: true,
                ..bench_node::Params::parse(&[])?
            };
            let mut first = true;
            let r = bench_node::measure(bins, &np, |name| {
                if !first {
                    bar.inc(1);
                }
                first = false;
                bar.set_message(format!("bench-node: {name}, {} s", np.duration_secs));
            });
            bar.inc(1);
            if r.is_err() {
                bar.set_position(bar.position().max(u64::from(!p.skip_criterion) + 6));
            }
            r
        }
        _ => Err("not measured in this run (--skip-node)".to_owned()),
    };

    let heal = match (&bins, p.skip_heal) {
        (Some(bins), false) => {
            let mut setup = String::new();
            let mut points = Vec::new();
            let mut failure = None;
            for &n in &p.heal_carts {
                bar.set_message(format!("convergence after a heal: {n} divergent carts"));
                match run_heal(&bins.heal, n, &p, &log_dir) {
                    Ok(s) => {
                        setup = s.setup;
                        points.extend(s.points);
                    }
                    Err(e) => failure = Some(e),
                }
                bar.inc(1);
            }
            Ok((setup, points, failure))
        }
        _ => Err("not measured in this run (--skip-heal)".to_owned()),
    };

    let mut sizes = Vec::new();
    for &n in &p.size_adds {
        bar.set_message(format!("cart size: {n} adds"));
        sizes.push(cart_size(n));
        bar.inc(1);
    }

    bar.set_message("writing BENCHMARKS.md and docs/bench/*.svg");
    let svg_dir = crate::workspace_root().join("docs").join("bench");
    std::fs::create_dir_all(&svg_dir).map_err(|e| e.to_string())?;
    let report = Report {
        p: &p,
        provenance: &provenance,
        criterion: &criterion,
        node: &node,
        heal: &heal,
        sizes: &sizes,
        svg_dir: &svg_dir,
    };
    let text = report.render(started)?;
    std::fs::write(&p.out, text).map_err(|e| format!("{}: {e}", p.out.display()))?;
    bar.inc(1);
    bar.finish_with_message(format!(
        "wrote {} in {:.0} s",
        p.out.display(),
        started.elapsed().as_secs_f64()
    ));
    eprintln!("xtask: logs of this run: {}", log_dir.display());
    let failures: Vec<&str> = [
        criterion.as_ref().err(),
        node.as_ref().err(),
        heal.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    .filter(|e| !e.starts_with("not measured in this run"))
    .map(String::as_str)
    .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the report was written, but some measurements failed: {}",
            failures.join("; ")
        ))
    }
}

type HealResult = Result<(String, Vec<HealPoint>, Option<String>), String>;

struct Report<'a> {
    p: &'a Params,
    provenance: &'a Provenance,
    criterion: &'a Result<CriterionResults, String>,
    node: &'a Result<NodeFigures, String>,
    heal: &'a HealResult,
    sizes: &'a [Result<SizePoint, String>],
    svg_dir: &'a Path,
}

/// A duration in ns, with a unit that suits it.
fn ns(v: f64) -> String {
    if !v.is_finite() {
        "n/a".to_owned()
    } else if v < 1_000.0 {
        format!("{v:.1} ns")
    } else if v < 1_000_000.0 {
        format!("{:.2} µs", v / 1e3)
    } else {
        format!("{:.2} ms", v / 1e6)
    }
}

/// "1.40× faster" / "2.10× slower" for `ours` against `peer` (times: lower is faster).
fn speed_ratio(peer: f64, ours: f64) -> String {
    if !(peer.is_finite() && ours.is_finite()) || ours <= 0.0 || peer <= 0.0 {
        return "n/a".to_owned();
    }
    let r = peer / ours;
    if r >= 1.0 {
        format!("{r:.2}× faster")
    } else {
        format!("{:.2}× slower", 1.0 / r)
    }
}

/// The criterion tables: (title, group, peer function, what the bench does).
const CRITERION_TABLES: &[(&str, &str, &str, &str)] = &[
    (
        "`Hlc::now`, one thread",
        "hlc_now_1thread",
        "uhlc",
        "one timestamp; `SystemTime::now` is the bare clock read underneath",
    ),
    (
        "`Hlc::now`, two threads on one clock",
        "hlc_now_2threads",
        "uhlc",
        "two threads stamping on one shared clock (time per timestamp pair)",
    ),
    (
        "`Hlc::update`",
        "hlc_update",
        "uhlc",
        "merge a remote timestamp",
    ),
    (
        "Vector clock compare",
        "vclock_compare",
        "crdts",
        "compare two clocks of n replicas, concurrent only at the last entries",
    ),
    (
        "Vector clock merge",
        "vclock_merge",
        "crdts",
        "merge two clocks of n replicas (the crdts routine includes cloning its argument, \
         which its by-value API needs)",
    ),
    (
        "Lamport clock",
        "lamport_tick_x1000",
        "bare_add",
        "1000 ticks; `bare_add` is a saturating add on a `u64`",
    ),
    (
        "AwSet merge",
        "awset_merge_10k",
        "crdts::Orswot",
        "merge two 10k-element replicas that diverged by 10%",
    ),
    (
        "OrMap of counters: merge",
        "ormap_counters_1k_merge",
        "crdts::Map<PNCounter>",
        "merge two maps of 1k counters",
    ),
    (
        "OrMap of counters: apply",
        "ormap_counters_1k_apply",
        "crdts::Map<PNCounter>",
        "one increment on a map of 1k counters",
    ),
    (
        "Cart merge",
        "cart_merge_delta_50",
        "",
        "merge a one-line delta into a 50-line cart (no peer crate has a cart)",
    ),
];

impl Report<'_> {
    fn render(&self, started: Instant) -> Result<String, String> {
        let mut md = String::new();
        let prov = self.provenance.line();
        let w = &mut md;
        let _ = writeln!(w, "# Meridian benchmarks\n");
        let _ = writeln!(
            w,
            "Generated by `cargo xtask bench-report` (xtask/src/bench_report.rs): every figure \
             below was measured in one run, each against its peer in the same run, on the \
             machine named under each table. Medians unless stated; ratios are this crate \
             against the peer. This run's settings, spelled out:\n\n```sh\n{}\n```\n\n\
             `cargo xtask bench-report` alone uses the defaults (about 15 minutes at most on \
             a 2-core machine), `--quick` is a shorter pass, and `cargo xtask bench-report \
             --help` lists the flags. This run took {:.0} s in total, with the load \
             generator, the nodes and the peers sharing this machine's cores. The machine is \
             not reserved for the run: other work on it shows as noise, which the confidence \
             intervals of the criterion figures make visible; compare ratios within one run \
             rather than figures across runs.\n",
            self.p.command(),
            started.elapsed().as_secs_f64()
        );
        let _ = writeln!(w, "{prov}");

        // 1. criterion
        let _ = writeln!(w, "## Clocks and CRDTs (criterion)\n");
        match self.criterion {
            Err(e) => {
                let _ = writeln!(w, "{prov}**{e}**\n");
            }
            Ok(c) => {
                let _ = writeln!(
                    w,
                    "criterion {} s warm-up and {} s measurement per benchmark \
                     (`benches/clocks.rs`, `benches/crdt.rs`); median with its confidence \
                     interval, read from `target/criterion/**/new/estimates.json`.\n",
                    self.p.warm_up_secs, self.p.measurement_secs
                );
                let mut bars = Vec::new();
                for (title, group, peer, what) in CRITERION_TABLES {
                    self.criterion_table(w, c, title, group, peer, what, &prov, &mut bars);
                }
                if !c.size_lines.is_empty() {
                    let _ = writeln!(w, "### Encoded sizes (printed by `benches/crdt.rs`)\n");
                    let _ = writeln!(w, "{prov}");
                    for l in &c.size_lines {
                        let _ = writeln!(w, "- {l}");
                    }
                    let _ = writeln!(w);
                }
                if !bars.is_empty() {
                    let path = self.svg_dir.join("criterion.svg");
                    plot::ratio_bars(
                        &path,
                        "meridian against its peer in the same run (medians)",
                        &bars,
                    )?;
                    let _ = writeln!(
                        w,
                        "![Speed-up of each meridian benchmark over its peer](docs/bench/criterion.svg)\n"
                    );
                }
            }
        }

        // 2. node
        self.node_section(w, &prov)?;
        // 3. heal
        self.heal_section(w, &prov)?;
        // 4. cart size
        self.size_section(w, &prov)?;
        Ok(md)
    }

    #[allow(clippy::too_many_arguments)]
    fn criterion_table(
        &self,
        w: &mut String,
        c: &CriterionResults,
        title: &str,
        group: &str,
        peer: &str,
        what: &str,
        prov: &str,
        bars: &mut Vec<(String, f64)>,
    ) {
        let rows: Vec<(&(String, String, String), &Estimate)> = c
            .estimates
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .collect();
        let _ = writeln!(w, "### {title}\n");
        let _ = writeln!(w, "{what}.\n");
        let _ = writeln!(w, "{prov}");
        if rows.is_empty() {
            let _ = writeln!(
                w,
                "**not measured: criterion wrote no `{group}` results in this run**\n"
            );
            return;
        }
        let with_peer = !peer.is_empty();
        if with_peer {
            let _ = writeln!(
                w,
                "| benchmark | n | median | {:.0}% CI | time / `{peer}`'s | against `{peer}` |",
                rows[0].1.confidence * 100.0
            );
            let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
        } else {
            let _ = writeln!(
                w,
                "| benchmark | n | median | {:.0}% CI |",
                rows[0].1.confidence * 100.0
            );
            let _ = writeln!(w, "|---|---:|---:|---:|");
        }
        // meridian's rows first, then the peers, each in parameter order.
        let mut sorted = rows.clone();
        let param_key = |s: &str| s.parse::<u64>().unwrap_or(u64::MAX);
        sorted.sort_by_key(|((_, f, v), _)| (!f.starts_with("meridian"), f.clone(), param_key(v)));
        for ((_, f, v), e) in sorted {
            let n = if v.is_empty() {
                "—".to_owned()
            } else {
                v.clone()
            };
            let ci = format!("{} – {}", ns(e.lower), ns(e.upper));
            if with_peer {
                let ratio = if f == peer {
                    "1.00 | (the peer)".to_owned()
                } else {
                    match c.get(group, peer, v) {
                        Some(pe) => {
                            if f.starts_with("meridian") {
                                bars.push((
                                    format!(
                                        "{group} {f}{}",
                                        if v.is_empty() {
                                            String::new()
                                        } else {
                                            format!(" n={v}")
                                        }
                                    ),
                                    pe.median / e.median,
                                ));
                            }
                            format!(
                                "{:.2} | {}",
                                e.median / pe.median,
                                speed_ratio(pe.median, e.median)
                            )
                        }
                        None => "n/a | no peer result".to_owned(),
                    }
                };
                let _ = writeln!(w, "| `{f}` | {n} | {} | {ci} | {ratio} |", ns(e.median));
            } else {
                let _ = writeln!(w, "| `{f}` | {n} | {} | {ci} |", ns(e.median));
            }
        }
        if group == "hlc_now_1thread" {
            if let Some(bare) = c.get(group, "SystemTime::now", "") {
                for f in ["meridian", "meridian (coarse clock)", "uhlc"] {
                    if let Some(e) = c.get(group, f, "") {
                        let diff = e.median - bare.median;
                        let _ = writeln!(
                            w,
                            "\n`{f}` costs {:.2}× a bare `SystemTime::now` ({} {} it).",
                            e.median / bare.median,
                            ns(diff.abs()),
                            if diff >= 0.0 {
                                "more than"
                            } else {
                                "less than"
                            }
                        );
                    }
                }
            }
        }
        let _ = writeln!(w);
    }

    fn node_section(&self, w: &mut String, prov: &str) -> Result<(), String> {
        let _ = writeln!(w, "## The node against Redis (`bench-node`)\n");
        let f = match self.node {
            Err(e) => {
                let _ = writeln!(w, "{prov}**not measured: {e}**\n");
                return Ok(());
            }
            Ok(f) => f,
        };
        let p = &f.params;
        let _ = writeln!(
            w,
            "A release `cart-store` node on loopback under `cart-load` ({} clients, {} s per \
             target, mix {}, {} carts), against `redis-server` (`appendonly yes`, \
             `appendfsync everysec`) driven with the same shape (HINCRBY / HGETALL / HDEL, \
             one command in flight per client). The load generator shares the cores with \
             the server in every row. Latency percentiles are `cart-load`'s (HdrHistogram, \
             request sent to answer read).\n",
            p.concurrency, p.duration_secs, p.mix, p.carts
        );
        let _ = writeln!(w, "### Throughput and latency\n");
        let _ = writeln!(w, "{prov}");
        let _ = writeln!(
            w,
            "| target | requests | ops/s | × redis | p50 | p99 | p99.9 | p99 × redis | errors |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let redis = &f.redis;
        // One table row, with ratios against `base` (Redis, in the same setup).
        let row_against = |w: &mut String, name: &str, r: &Run, base: &Run| {
            let _ = writeln!(
                w,
                "| {name} | {:.0} | {:.0} | {:.2}× | {:.3} ms | {:.3} ms | {:.3} ms | {:.2}× | {:.0} |",
                r.requests,
                r.throughput,
                r.throughput / base.throughput,
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.p99_ms / base.p99_ms,
                r.errors
            );
        };
        let row = |w: &mut String, name: &str, r: &Run| row_against(w, name, r, redis);
        row(w, "cart-store, `durability = \"process\"`", &f.node);
        if let Some(r) = &f.fsync {
            row(w, "cart-store, `durability = \"fsync\"`", r);
        }
        if let Some(r) = &f.replicated {
            row(w, "cart-store (process) with two peers attached", &r.run);
        }
        row(w, "redis-server (`appendfsync everysec`)", redis);
        let _ = writeln!(w);
        if let Some((node, pinned_redis)) = &f.pinned {
            let _ = writeln!(
                w,
                "Pinned with `taskset`: the server (node or Redis) on CPU 0, the load \
                 generator on CPU 1, the same load; ratios against pinned Redis.\n"
            );
            let _ = writeln!(w, "| target (pinned) | requests | ops/s | × redis | p50 | p99 | p99.9 | p99 × redis | errors |");
            let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            for (name, r) in [
                ("cart-store, `durability = \"process\"`, on one core", node),
                ("redis-server, on one core", pinned_redis),
            ] {
                row_against(w, name, r, pinned_redis);
            }
            let _ = writeln!(w);
        }
        if let Some((per_sec, per_fsync)) = f.fsync.as_ref().and_then(|r| r.fsyncs) {
            let _ = writeln!(
                w,
                "fsync mode: {per_sec:.0} fsyncs/s, {per_fsync:.1} writes per fsync (group \
                 commit), {:.2}× the throughput of `process` mode.\n",
                f.fsync.as_ref().map_or(f64::NAN, |r| r.throughput) / f.node.throughput
            );
        }
        let mut series = vec![("cart-store (process)".to_owned(), f.node.clone())];
        if let Some(r) = &f.fsync {
            series.push(("cart-store (fsync)".to_owned(), r.clone()));
        }
        if let Some(r) = &f.replicated {
            series.push(("cart-store, 2 peers".to_owned(), r.run.clone()));
        }
        series.push(("redis".to_owned(), f.redis.clone()));
        let groups: Vec<(String, Vec<f64>)> = series
            .iter()
            .map(|(n, r)| (n.clone(), vec![r.p50_ms, r.p99_ms, r.p999_ms]))
            .collect();
        plot::grouped_bars(
            &self.svg_dir.join("latency.svg"),
            "request latency percentiles under load (ms)",
            &["p50", "p99", "p99.9"],
            &groups,
        )?;
        let _ = writeln!(
            w,
            "![Latency percentiles, node against Redis](docs/bench/latency.svg)\n"
        );

        let _ = writeln!(w, "### Replication lag and bytes on the wire\n");
        let _ = writeln!(w, "{prov}");
        match &f.replicated {
            None => {
                let _ = writeln!(w, "**not measured in this run (--skip-peers)**\n");
            }
            Some(r) => {
                let _ = writeln!(
                    w,
                    "Three nodes replicating over QUIC with mutual TLS on loopback (the two \
                     peers under `nice -n 19`, standing for other machines); the load drives \
                     the first. Lag is commit → peer acknowledgement (durable at the peer), \
                     from the node's `cart_store_replication_lag_seconds` histogram: the \
                     figures are the upper bounds of the buckets the percentiles fall in.\n"
                );
                let _ = writeln!(w, "| lag p50 | lag p90 | lag p99 |");
                let _ = writeln!(w, "|---:|---:|---:|");
                let _ = writeln!(
                    w,
                    "| ≤ {} ms | ≤ {} ms | ≤ {} ms |\n",
                    r.lag_ms.0, r.lag_ms.1, r.lag_ms.2
                );
                let per_write = r.wire_bytes / r.writes;
                let _ = writeln!(
                    w,
                    "| local writes (of which compaction) | deltas shipped | deltas per write \
                     per peer | delta bytes per delta | frame bytes on the wire per write \
                     (both peers, both directions) | frame bytes per delta byte |"
                );
                let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|");
                let _ = writeln!(
                    w,
                    "| {:.0} ({:.0}) | {:.0} | {:.2} | {:.1} B | {:.1} B | {:.2}× |\n",
                    r.writes,
                    r.compaction_writes,
                    r.deltas,
                    r.deltas / (2.0 * r.writes),
                    r.delta_bytes / r.deltas,
                    per_write,
                    r.wire_per_delta
                );
                let _ = writeln!(
                    w,
                    "Local writes are the node's committed seqs: the load's writes plus the \
                     compaction writes the node makes itself. Deltas per write per peer above \
                     1 are resends: a peer that does not acknowledge within \
                     `replication_resend_timeout_ms` is sent the entries again.\n"
                );
                let per_peer = r.deltas / (2.0 * r.writes);
                if per_peer > 1.05 {
                    let _ = writeln!(
                        w,
                        "In this run each write went to each peer {per_peer:.2} times: the \
                         peers, at the lowest priority on cores the node and the load \
                         generator keep busy, fell behind, and the lag above measures their \
                         backlog rather than the protocol's round trip. Both vary from run to \
                         run on a shared 2-core machine.\n"
                    );
                }
                let _ = writeln!(
                    w,
                    "Frame bytes are the replication protocol's frames received by the three \
                     nodes (deltas, acks, hellos), QUIC and UDP headers not included. With \
                     two peers attached the node ran at {:.2}× its single-node throughput.\n",
                    r.run.throughput / f.node.throughput
                );
            }
        }
        Ok(())
    }

    fn heal_section(&self, w: &mut String, prov: &str) -> Result<(), String> {
        let _ = writeln!(w, "## Convergence after a heal\n");
        let (setup, points, failure) = match self.heal {
            Err(e) => {
                let _ = writeln!(w, "{prov}**{e}**\n");
                return Ok(());
            }
            Ok(x) => x,
        };
        let _ = writeln!(
            w,
            "`cart-store/load/examples/heal_convergence.rs`: {setup}. For N carts, tokyo adds \
             one sku to each and virginia or frankfurt another, so all N differ between the \
             sides; then the link heals, and the clock runs until every region has applied the \
             same writes of every origin and the three digest roots are equal, polled every \
             10 ms on `GET /replication`. A poll round reads all three regions and takes \
             longer while they are busy applying, so each time is an interval: from the start \
             of the last round that still saw a difference to the end of the first that saw \
             none. Afterwards every cart is read in every region and must be identical and \
             hold both adds.\n"
        );
        let _ = writeln!(w, "{prov}");
        if points.is_empty() {
            let _ = writeln!(
                w,
                "**not measured: {}**\n",
                failure.as_deref().unwrap_or("no point completed")
            );
            return Ok(());
        }
        let base = &points[0];
        let _ = writeln!(
            w,
            "| divergent carts | writes in the partition | links up between | converged \
             between | upper bound × the {}-cart one | differing after | anti-entropy \
             sessions |",
            base.carts
        );
        let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|");
        for pt in points {
            let _ = writeln!(
                w,
                "| {} | {} ({:.2} s) | {:.3} – {:.3} s | {:.3} – {:.3} s | {:.2}× | {} | {} |",
                pt.divergent_before,
                pt.writes,
                pt.write_secs,
                pt.reconnect_after_secs,
                pt.reconnect_secs,
                pt.converge_after_secs,
                pt.converge_secs,
                pt.converge_secs / base.converge_secs,
                pt.divergent_after,
                pt.anti_entropy_sessions
            );
        }
        let _ = writeln!(w);
        if let Some(e) = failure {
            let _ = writeln!(w, "**A point failed and is missing above: {e}**\n");
        }
        let x = |p: &HealPoint| p.divergent_before.max(1) as f64;
        let upper: Vec<(f64, f64)> = points.iter().map(|p| (x(p), p.converge_secs)).collect();
        let lower: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (x(p), p.converge_after_secs))
            .collect();
        plot::log_lines(
            &self.svg_dir.join("convergence.svg"),
            "convergence after a heal",
            "divergent carts",
            "seconds after the heal",
            &[
                ("converged by (upper bound)", upper),
                ("still differing at (lower bound)", lower),
            ],
            false,
        )?;
        let _ = writeln!(
            w,
            "![Convergence time against divergent carts](docs/bench/convergence.svg)\n"
        );
        Ok(())
    }

    fn size_section(&self, w: &mut String, prov: &str) -> Result<(), String> {
        let _ = writeln!(w, "## Cart size against the number of adds\n");
        let _ = writeln!(
            w,
            "N adds of quantity 1 to one sku, round-robin over three replicas (ReplicaId 1, \
             2, 3), each replica merging the others' deltas; the size is replica 1's cart \
             encoded as the node stores it (bincode 2, `config::standard()`), before and \
             after `Cart::compact` with the cart's full version vector as the stable \
             frontier (every replica has applied every add). Each point checks that the \
             quantity is unchanged and that a second replica merging the compaction delta \
             ends in the same state.\n"
        );
        let _ = writeln!(w, "{prov}");
        let _ = writeln!(
            w,
            "| adds | before | bytes per add | after compaction | after / before | compaction delta |"
        );
        let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|");
        let mut before = Vec::new();
        let mut after = Vec::new();
        for s in self.sizes {
            match s {
                Err(e) => {
                    let _ = writeln!(w, "| — | not measured: {e} | | | | |");
                }
                Ok(s) => {
                    before.push((s.adds as f64, s.before as f64));
                    after.push((s.adds as f64, s.after as f64));
                    let _ = writeln!(
                        w,
                        "| {} | {} B | {:.2} B | {} B | {:.3}× ({:.1}× smaller) | {} B |",
                        s.adds,
                        s.before,
                        s.before as f64 / s.adds as f64,
                        s.after,
                        s.after as f64 / s.before as f64,
                        s.before as f64 / s.after as f64,
                        s.delta
                    );
                }
            }
        }
        let _ = writeln!(w);
        if !before.is_empty() {
            let series = [("before compaction", before), ("after compaction", after)];
            plot::log_lines(
                &self.svg_dir.join("cart_size.svg"),
                "cart size against adds",
                "adds",
                "encoded bytes",
                &series,
                true,
            )?;
            let _ = writeln!(w, "![Cart size against adds](docs/bench/cart_size.svg)\n");
        }
        Ok(())
    }
}
