//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! ```text
//! cargo xtask test [ARGS]   check prerequisites, then run every test (unit, property,
//!                           integration, examples' smoke tests, benches in test mode, doc tests)
//! cargo xtask demo [ARGS]   check prerequisites, then run the demo
//! cargo xtask bench [ARGS]  run the criterion benches (release profile)
//! cargo xtask bench-node    a release node under `cart-load`, against Redis
//!                           (flags: --concurrency N --duration-secs N --carts N --mix SPEC
//!                           --skip-fsync --skip-peers --pin: server on CPU 0, load on CPU 1)
//! cargo xtask bench-report [--quick] [FLAGS]
//!                           every benchmark in one run (criterion, bench-node, convergence
//!                           after a heal, cart size before and after compaction), with a
//!                           progress display: writes BENCHMARKS.md and docs/bench/*.svg
//!                           (about 15 min at most by default; `--help` lists the flags)
//! cargo xtask fuzz [--seconds N] [--keep-going] [TARGET...]
//!                           fuzz every decoder (cargo-fuzz, nightly) for N s per target
//!                           (default 60); --keep-going continues past crashes;
//!                           `fuzz --smoke` is the short pass that ends `xtask test`
//! cargo xtask chaos [--secs N] [--seed S]
//!                           three nodes in network namespaces under load, through real
//!                           partitions, kill -9 and a wiped disk (needs root and iproute2)
//! cargo xtask setup         only check (and, as root, install) prerequisites
//! ```
//!
//! Prerequisites: `librocksdb-sys` (cart-store's storage) needs libclang to generate its
//! bindings. When it is missing, `xtask` installs `libclang-dev` with apt-get if it runs as
//! root, and otherwise prints the one command to run. The OpenAPI fuzz test
//! (`cart-store/tests/schemathesis.rs`) uses schemathesis from PyPI, and the clock-skew tests
//! (`cart-store/tests/skew.rs`) use libfaketime (Debian's `faketime`): as root (with pip,
//! with apt-get) `xtask` installs them; otherwise it prints the commands, and those tests
//! skip.

mod bench_node;
mod bench_report;
mod fuzz;
mod plot;

use std::env;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let result = match task.as_str() {
        "test" => setup().and_then(|()| test(&rest)),
        "demo" => setup().and_then(|()| demo(&rest)),
        "bench" => cargo(&[&["bench", "-p", "meridian"], &strs(&rest)[..]].concat()),
        "bench-node" => setup().and_then(|()| bench_node::bench_node(&rest)),
        "bench-report" => setup().and_then(|()| bench_report::bench_report(&rest)),
        "fuzz" => fuzz::fuzz(&workspace_root(), &rest),
        "chaos" => setup().and_then(|()| chaos(&rest)),
        "setup" => setup(),
        "" | "help" | "-h" | "--help" => {
            println!("{}", USAGE);
            Ok(())
        }
        other => Err(format!("unknown task {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str =
    "usage: cargo xtask <test|demo|bench|bench-node|bench-report|fuzz|chaos|setup> [ARGS]
  test   check prerequisites, then run every test in the workspace
  demo   check prerequisites, then run the demo
  bench  run the criterion benches of the root package (release profile)
  bench-node  a release cart-store node under load, against redis-server, in one run
  bench-report  [--quick] [FLAGS]: every benchmark in one run, written to BENCHMARKS.md
         and docs/bench/*.svg (bench-report --help lists the flags)
  fuzz   [--seconds N] [--keep-going] [TARGET...]: fuzz every decoder, N s per target
         (--smoke: only the short pass that ends `test`)
  chaos  [--secs N] [--seed S]: partitions, kill -9 and a wiped node under load, in
         network namespaces, N s per scenario (default 20; needs root and iproute2)
  setup  check prerequisites (as root: libclang-dev and faketime with apt-get, schemathesis
         with pip)";

/// `cargo xtask chaos`: the chaos test (`cart-store/tests/chaos.rs`), longer than the
/// short run `cargo xtask test` includes. It cannot run without root and iproute2, and
/// then fails rather than report a skip as a pass.
fn chaos(args: &[String]) -> Result<(), String> {
    let mut secs = "20".to_owned();
    let mut seed = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => secs = it.next().ok_or("--secs needs a value")?.clone(),
            "--seed" => seed = Some(it.next().ok_or("--seed needs a value")?.clone()),
            other => return Err(format!("chaos: unknown argument {other:?}")),
        }
    }
    secs.parse::<u64>()
        .map_err(|_| format!("--secs {secs:?} is not a number"))?;
    if !is_root() {
        return Err("chaos needs root (network namespaces); it did not run".into());
    }
    let netns_ok = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !netns_ok {
        return Err(
            "chaos needs iproute2 with network namespaces (`ip netns`); it did not run".into(),
        );
    }
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "test",
        "-p",
        "meridian-cart-store",
        "--test",
        "chaos",
        "--",
        "--nocapture",
    ])
    .env("CHAOS_SECS", &secs)
    .current_dir(workspace_root());
    if let Some(s) = &seed {
        cmd.env("CHAOS_SEED", s);
    }
    eprintln!("xtask: running the chaos test, {secs} s per scenario");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("the chaos test failed (its output above has the seed to replay)".into())
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("xtask: running cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed ({status})", args.join(" ")))
    }
}

/// The workspace being worked on. Read at run time: `cargo run` sets `CARGO_MANIFEST_DIR`
/// for the process, while the compile-time value can belong to another checkout that shares
/// the target directory (the uplifted `target/debug/xtask` is shared between them).
fn workspace_root() -> PathBuf {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Every test: all targets (libs, bins, integration tests, examples' smoke tests, and the
/// benches run once each in test mode), then the doc tests, which `--all-targets` skips,
/// then a short pass over every fuzz target (skipped, saying so, without nightly).
fn test(rest: &[String]) -> Result<(), String> {
    check_architecture()?;
    let rest = strs(rest);
    // The examples' smoke tests (tests/examples.rs) run the example binaries, which
    // `cargo test --all-targets` builds only in test mode.
    cargo(&["build", "-p", "meridian", "--examples"])?;
    cargo(&[&["test", "--workspace", "--all-targets"], &rest[..]].concat())?;
    cargo(&[&["test", "--workspace", "--doc"], &rest[..]].concat())?;
    fuzz::fuzz_smoke(&workspace_root())
}

/// ARCHITECTURE.md's deliberate absences: the embeddable crates and the cart store's sans-IO
/// core pull in no async runtime, network stack, storage engine or C/C++ build, and the node
/// binary carries no load-generator crates.
fn check_architecture() -> Result<(), String> {
    const SANS_IO_FORBIDDEN: &[&str] = &[
        "tokio",
        "quinn",
        "rustls",
        "rocksdb",
        "librocksdb-sys",
        "cc",
        "bindgen",
        "cmake",
    ];
    const LOAD_TOOLS: &[&str] = &["redis", "indicatif", "hdrhistogram"];
    let checks: [(&str, &[&str], &str); 4] = [
        ("meridian-clocks", SANS_IO_FORBIDDEN, "embeddable crates build without an async runtime, network stack or C/C++ toolchain"),
        ("meridian-crdt", SANS_IO_FORBIDDEN, "embeddable crates build without an async runtime, network stack or C/C++ toolchain"),
        ("meridian-cart-store-core", SANS_IO_FORBIDDEN, "the sans-IO core builds and simulates without a runtime, sockets or RocksDB"),
        ("meridian-cart-store", LOAD_TOOLS, "the production node carries no load-generator crates (they live in meridian-cart-load)"),
    ];
    for (krate, forbidden, why) in checks {
        let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = Command::new(&cargo)
            .args([
                "tree",
                "-p",
                krate,
                "--all-features",
                "-e",
                "normal,build",
                "--prefix",
                "none",
                "-f",
                "{p}",
            ])
            .current_dir(workspace_root())
            .output()
            .map_err(|e| format!("cannot run cargo tree: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo tree -p {krate} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        let bad: Vec<&str> = tree
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| forbidden.contains(name))
            .collect();
        if !bad.is_empty() {
            return Err(format!(
                "architecture invariant broken: {krate} depends on {bad:?}; {why}"
            ));
        }
        let deps: std::collections::BTreeSet<&str> = tree.lines().skip(1).collect();
        eprintln!(
            "xtask: {krate}: {} dependencies, none forbidden",
            deps.len()
        );
    }
    Ok(())
}

fn demo(rest: &[String]) -> Result<(), String> {
    let mut args = vec![
        "run",
        "-p",
        "meridian-cart-store",
        "--bin",
        "cart-store",
        "--",
        "demo",
    ];
    args.extend(strs(rest));
    cargo(&args)
}

fn setup() -> Result<(), String> {
    setup_libclang()?;
    setup_schemathesis();
    setup_faketime();
    Ok(())
}

/// Where Debian's `faketime` package puts libfaketime (`cart-store/tests/skew.rs` looks
/// there too).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// libfaketime (Debian's `faketime`) runs a node with its clock an hour ahead in the
/// clock-skew tests. Optional: without it those tests print SKIP. As root with apt-get,
/// install it; otherwise print the command.
fn setup_faketime() {
    if std::path::Path::new(LIBFAKETIME).exists() {
        eprintln!("xtask: libfaketime found at {LIBFAKETIME}");
        return;
    }
    let install = "apt-get update && apt-get install -y faketime";
    if !is_root() || !has("apt-get") {
        eprintln!(
            "xtask: libfaketime is missing, so the clock-skew tests will skip. Install it \
             with:\n\n    sudo sh -c '{install}'\n"
        );
        return;
    }
    eprintln!("xtask: libfaketime is missing; installing faketime with apt-get");
    let ok = |mut c: Command| c.status().map(|s| s.success()).unwrap_or(false);
    let mut get = Command::new("apt-get");
    get.args(["install", "-y", "-q", "--no-install-recommends", "faketime"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    if !ok(get) {
        // The package lists may be stale on a fresh machine.
        let mut update = Command::new("apt-get");
        update.args(["update", "-q"]);
        let mut get = Command::new("apt-get");
        get.args(["install", "-y", "-q", "--no-install-recommends", "faketime"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        if !ok(update) || !ok(get) {
            eprintln!("xtask: installing faketime failed; run `{install}` by hand");
            return;
        }
    }
    eprintln!("xtask: faketime installed");
}

/// The schemathesis release range `cart-store/tests/schemathesis.rs` is written against.
const SCHEMATHESIS: &str = "schemathesis>=4.32.5,<4.33";

/// schemathesis (PyPI) fuzzes a running node against its OpenAPI document. Optional: without
/// it that test prints SKIP. As root with pip, install it; otherwise print the command.
fn setup_schemathesis() {
    let version = Command::new("python3")
        .args(["-m", "schemathesis.cli", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if let Some(v) = version.as_deref().filter(|v| v.contains("version 4.")) {
        eprintln!("xtask: schemathesis found ({v})");
        return;
    }
    let install = format!("python3 -m pip install -q '{SCHEMATHESIS}'");
    let has_pip = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !is_root() || !has_pip {
        eprintln!(
            "xtask: schemathesis 4 is missing, so the OpenAPI fuzz test will skip. Install it \
             with:\n\n    {install}\n"
        );
        return;
    }
    eprintln!("xtask: installing schemathesis: {install}");
    let pip = |extra: &[&str]| {
        Command::new("python3")
            .args(["-m", "pip", "install", "-q", SCHEMATHESIS])
            .args(extra)
            .env("PIP_ROOT_USER_ACTION", "ignore")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .output()
    };
    let mut out = pip(&[]);
    // A distribution's own Python (PEP 668) refuses pip; on a disposable CI machine, as
    // root, install into it anyway.
    if let Ok(o) = &out {
        if !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("externally-managed-environment")
        {
            out = pip(&["--break-system-packages"]);
        }
    }
    match out {
        Ok(o) if o.status.success() => eprintln!("xtask: schemathesis installed"),
        Ok(o) => eprintln!(
            "xtask: installing schemathesis failed, so the OpenAPI fuzz test will skip; run \
             `{install}` by hand:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("xtask: cannot run python3: {e}"),
    }
}

/// librocksdb-sys needs libclang: as root with apt-get, install it; otherwise say how.
fn setup_libclang() -> Result<(), String> {
    if let Some(found) = find_libclang() {
        eprintln!("xtask: libclang found at {}", found.display());
        return Ok(());
    }
    let install = "apt-get update && apt-get install -y libclang-dev";
    if !is_root() || !has("apt-get") {
        return Err(format!(
            "libclang is missing (librocksdb-sys needs it to build). Install it with:\n\n    \
             sudo sh -c '{install}'\n\nor set LIBCLANG_PATH to the directory holding libclang.so"
        ));
    }
    eprintln!("xtask: libclang is missing; installing libclang-dev with apt-get");
    let ok = |mut c: Command| c.status().map(|s| s.success()).unwrap_or(false);
    let mut update = Command::new("apt-get");
    update.args(["update", "-q"]);
    let mut get = Command::new("apt-get");
    get.args([
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "libclang-dev",
    ])
    .env("DEBIAN_FRONTEND", "noninteractive");
    if !ok(update) || !ok(get) {
        return Err(format!(
            "installing libclang-dev failed; run `{install}` by hand"
        ));
    }
    match find_libclang() {
        Some(found) => {
            eprintln!("xtask: libclang installed at {}", found.display());
            Ok(())
        }
        None => Err("libclang-dev installed, but no libclang.so was found".to_owned()),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Looks where clang-sys (used by librocksdb-sys's bindgen) looks.
fn find_libclang() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(p) = env::var_os("LIBCLANG_PATH") {
        dirs.push(PathBuf::from(p));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        let mut llvm: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("llvm"))
            })
            .map(|p| p.join("lib"))
            .collect();
        llvm.sort();
        dirs.extend(llvm.into_iter().rev());
    }
    for d in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/local/lib",
        "/usr/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().find_map(|dir| {
        std::fs::read_dir(&dir).ok()?.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_libclang = name.starts_with("libclang.so")
                || (name.starts_with("libclang-")
                    && !name.starts_with("libclang-cpp")
                    && name.contains(".so"));
            is_libclang.then(|| e.path())
        })
    })
}
