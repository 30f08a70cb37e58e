//! `cargo xtask bench-node`: a release cart-store node against Redis, in the same run.
//!
//! 1. builds `cart-store` and the load generator `cart-load` in release (RocksDB compiles
//!    once per machine and profile);
//! 2. starts a node on loopback in a temporary directory, waits for `/health`, and runs
//!    `cart-load` against it (default: 64 clients, 20 s, 70% add, 20% read,
//!    10% remove over 100k carts); the load generator shares the machine's cores with the
//!    server, for the node and Redis alike;
//! 3. does the same with `durability = "fsync"` and reads the group-commit counters from
//!    `/metrics`;
//! 4. starts a Debian `redis-server` (installed with apt-get if missing and running as root)
//!    with `appendonly yes` and `appendfsync everysec`, and drives it with the same shape
//!    (HINCRBY / HGETALL / HDEL, one command in flight per client);
//! 5. starts three nodes replicating over QUIC on loopback (`cart-store certs` makes their
//!    certificates; the two peers run under `nice -n 19`, standing for other machines) and
//!    runs the same load against one of them: its throughput with two peers attached
//!    against the single node's, the replication lag its peers acknowledge,
//!    and the bytes of replication frames on the wire per byte of delta shipped;
//! 6. prints the throughputs, p99s and ratios.
//!
//! [`measure`] returns the figures as data ([`NodeFigures`]); `cargo xtask bench-report`
//! calls it with `quiet` set (children's output to log files) and writes them to
//! BENCHMARKS.md.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The flags of `bench-node`, with the defaults.
#[derive(Clone, Debug)]
pub struct Params {
    pub concurrency: u32,
    pub duration_secs: u32,
    pub carts: u32,
    pub mix: String,
    pub skip_fsync: bool,
    pub skip_peers: bool,
    /// Pin the server (node or Redis) to CPU 0 and the load generator to CPU 1 with
    /// `taskset`, instead of letting them share both cores.
    pub pin: bool,
    /// Also measure the node and Redis pinned (see `pin`), after the shared-core runs.
    pub also_pinned: bool,
    /// Send the children's output and this module's progress lines to log files in the
    /// run's directory instead of the terminal (bench-report draws its own progress).
    pub quiet: bool,
}

impl Params {
    pub fn parse(args: &[String]) -> Result<Params, String> {
        let mut p = Params {
            concurrency: 64,
            duration_secs: 20,
            carts: 100_000,
            mix: "add=70,read=20,remove=10".to_owned(),
            skip_fsync: false,
            skip_peers: false,
            pin: false,
            also_pinned: false,
            quiet: false,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            let num = |v: String| {
                v.parse::<u32>()
                    .map_err(|_| format!("{flag} takes a positive integer, not {v:?}"))
            };
            match flag.as_str() {
                "--concurrency" => p.concurrency = num(value()?)?,
                "--duration-secs" => p.duration_secs = num(value()?)?,
                "--carts" => p.carts = num(value()?)?,
                "--mix" => p.mix = value()?,
                "--skip-fsync" => p.skip_fsync = true,
                "--skip-peers" => p.skip_peers = true,
                "--pin" => p.pin = true,
                other => {
                    return Err(format!(
                        "unknown bench-node flag {other:?} (--concurrency N, --duration-secs N, \
                         --carts N, --mix SPEC, --skip-fsync, --skip-peers, --pin)"
                    ))
                }
            }
        }
        Ok(p)
    }

    fn load_args(&self) -> Vec<String> {
        [
            "--concurrency",
            &self.concurrency.to_string(),
            "--duration",
            &format!("{}s", self.duration_secs),
            "--carts",
            &self.carts.to_string(),
            "--mix",
            &self.mix,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// Kills the child on drop, so that an error path leaves no server behind.
struct Guard(Child, &'static str);

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGTERM first: the node shuts down cleanly; then make sure.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("xtask: {} did not stop on SIGTERM; killing it", self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, String> {
    meridian_testkit::free_port().map_err(|e| format!("no free port: {e}"))
}

/// A minimal HTTP/1.1 GET over loopback (xtask stays dependency-free).
fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    if !out.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "GET {path}: {}",
            out.lines().next().unwrap_or("no answer")
        ));
    }
    Ok(out)
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{what} did not come up within 30 s"))
}

/// The number in `"key": <number>` of a flat JSON summary (`cart-load --json`).
fn json_number(json: &str, key: &str) -> Result<f64, String> {
    let at = json
        .find(&format!("\"{key}\""))
        .ok_or_else(|| format!("summary has no {key}"))?;
    let rest = &json[at + key.len() + 2..];
    let rest = rest.trim_start().trim_start_matches(':').trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .map_err(|_| format!("{key} is not a number in the summary"))
}

/// A metric's value from Prometheus text (sum over its label sets).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// One `cart-load` run's figures (its JSON summary), plus the node's fsync counters.
#[derive(Clone, Debug)]
pub struct Run {
    pub requests: f64,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub errors: f64,
    /// fsync mode: (fsyncs per second, writes per fsync), from the node's metrics.
    pub fsyncs: Option<(f64, f64)>,
}

/// Prints a progress line, unless the run is quiet.
fn say(p: &Params, msg: &str) {
    if !p.quiet {
        eprintln!("xtask: {msg}");
    }
}

/// `program` as a command, pinned to `cpu` with `taskset` when `p.pin`.
fn pinned(program: impl AsRef<std::ffi::OsStr>, cpu: u32, p: &Params) -> Command {
    if p.pin {
        let mut c = Command::new("taskset");
        c.args(["-c", &cpu.to_string()]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// With `--pin`: the server's core and the load generator's.
const SERVER_CPU: u32 = 0;
const LOAD_CPU: u32 = 1;

fn run_load(bin: &Path, target: &[String], p: &Params, json: &Path) -> Result<Run, String> {
    let mut cmd = pinned(bin, LOAD_CPU, p);
    cmd.args(target).args(p.load_args()).arg("--json").arg(json);
    if p.quiet {
        let log = std::fs::File::create(json.with_extension("log")).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        cmd.stdout(log).stderr(err);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cart-load: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cart-load failed ({status}; output in {})",
            json.with_extension("log").display()
        ));
    }
    let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    Ok(Run {
        requests: json_number(&text, "requests")?,
        throughput: json_number(&text, "throughput")?,
        p50_ms: json_number(&text, "p50_ms")?,
        p99_ms: json_number(&text, "p99_ms")?,
        p999_ms: json_number(&text, "p999_ms")?,
        errors: json_number(&text, "errors")?,
        fsyncs: None,
    })
}

fn node_run(
    bin: &Path,
    load_bin: &Path,
    dir: &Path,
    durability: &str,
    p: &Params,
) -> Result<Run, String> {
    let data = dir.join(format!("data-{durability}"));
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = dir.join(format!("node-{durability}.toml"));
    std::fs::write(
        &config,
        format!(
            "region = \"bench\"\nnode_id = 1\ndata_dir = {:?}\nhttp_listen = \"{addr}\"\n\
             durability = \"{durability}\"\n",
            data.display().to_string()
        ),
    )
    .map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join(format!("node-{durability}.log")))
        .map_err(|e| e.to_string())?;
    let child = pinned(bin, SERVER_CPU, p)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start cart-store: {e}"))?;
    let _guard = Guard(child, "cart-store");
    wait_until("cart-store", || http_get(addr, "/health").is_ok())?;
    say(p, &format!("node ({durability}) up on {addr}; loading it"));
    let counters = |text: &str| {
        (
            metric(text, "cart_store_fsyncs_total"),
            metric(text, "cart_store_write_batch_size_sum"),
        )
    };
    let before = counters(&http_get(addr, "/metrics")?);
    let started = Instant::now();
    let mut run = run_load(
        load_bin,
        &["--target".to_owned(), format!("http://{addr}")],
        p,
        &dir.join(format!("node-{durability}.json")),
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = counters(&http_get(addr, "/metrics")?);
    if durability == "fsync" {
        let (fsyncs, writes) = (after.0 - before.0, after.1 - before.1);
        run.fsyncs = Some((
            fsyncs / elapsed,
            if fsyncs > 0.0 { writes / fsyncs } else { 0.0 },
        ));
    }
    Ok(run)
}

fn redis_run(load_bin: &Path, dir: &Path, p: &Params) -> Result<Run, String> {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        if crate::is_root() && crate::has("apt-get") {
            say(p, "installing redis-server with apt-get");
            let ok = Command::new("sh")
                .args([
                    "-c",
                    "apt-get update -q && apt-get install -y -q redis-server",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err("installing redis-server failed".to_owned());
            }
        } else {
            return Err("redis-server is missing: sudo apt-get install -y redis-server".to_owned());
        }
    }
    let port = free_port()?;
    let redis_dir = dir.join("redis");
    std::fs::create_dir_all(&redis_dir).map_err(|e| e.to_string())?;
    let child = pinned("redis-server", SERVER_CPU, p)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&redis_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let _guard = Guard(child, "redis-server");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until("redis-server", || TcpStream::connect(addr).is_ok())?;
    say(p, &format!("redis-server up on {addr}; loading it"));
    run_load(
        load_bin,
        &["--redis".to_owned(), format!("redis://{addr}/")],
        p,
        &dir.join("redis.json"),
    )
}

/// What a replicated run measured besides the load's own figures.
#[derive(Clone, Debug)]
pub struct Replicated {
    pub run: Run,
    /// Replication frame bytes (both directions) per byte of delta shipped.
    pub wire_per_delta: f64,
    /// Replication frame bytes received by all three nodes (both directions, acks
    /// included, QUIC headers not).
    pub wire_bytes: f64,
    /// Delta bytes shipped to the peers.
    pub delta_bytes: f64,
    /// Deltas shipped to the peers.
    pub deltas: f64,
    /// Local writes the node committed (its last seq): the load's writes plus the
    /// node's own compaction writes.
    pub writes: f64,
    /// Of those, compaction writes (`cart_store_compaction_writes_total`).
    pub compaction_writes: f64,
    /// Commit → peer acknowledgement, p50, p90 and p99 upper bucket bounds, ms.
    pub lag_ms: (f64, f64, f64),
}

/// Everything one `bench-node` run measured.
#[derive(Clone, Debug)]
pub struct NodeFigures {
    pub params: Params,
    /// One node, `durability = "process"`.
    pub node: Run,
    /// One node, `durability = "fsync"` (None with `--skip-fsync`).
    pub fsync: Option<Run>,
    /// redis-server, `appendonly yes`, `appendfsync everysec`.
    pub redis: Run,
    /// The first of three replicating nodes (None with `--skip-peers`).
    pub replicated: Option<Replicated>,
    /// With `also_pinned`: the node (process) and Redis, each pinned to CPU 0 with the load
    /// generator on CPU 1.
    pub pinned: Option<(Run, Run)>,
    /// Raw summaries and logs.
    pub dir: PathBuf,
}

/// The `q` quantile's upper bucket bound of a Prometheus histogram (summed over labels), ms.
fn histogram_quantile_ms(text: &str, name: &str, q: f64) -> f64 {
    let mut buckets: std::collections::BTreeMap<u64, f64> = Default::default();
    for l in text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
    {
        let Some(le) = l.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let key = if le == "+Inf" {
            u64::MAX
        } else {
            (le.parse::<f64>().unwrap_or(0.0) * 1e6) as u64
        };
        *buckets.entry(key).or_default() += v;
    }
    let total = buckets.get(&u64::MAX).copied().unwrap_or(0.0);
    if total == 0.0 {
        return f64::NAN;
    }
    for (le, count) in &buckets {
        if *count >= q * total {
            return if *le == u64::MAX {
                f64::INFINITY
            } else {
                *le as f64 / 1000.0
            };
        }
    }
    f64::INFINITY
}

/// Three nodes replicating over QUIC on loopback; the load drives the first.
fn replicated_run(
    bin: &Path,
    load_bin: &Path,
    dir: &Path,
    p: &Params,
) -> Result<Replicated, String> {
    let regions = ["bench-a", "bench-b", "bench-c"];
    let certs = dir.join("certs");
    let ok = Command::new(bin)
        .args(["certs", "--out"])
        .arg(&certs)
        .args(["--regions", &regions.join(",")])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run cart-store certs: {e}"))?;
    if !ok.success() {
        return Err("cart-store certs failed".into());
    }
    let http: Vec<SocketAddr> = (0..3)
        .map(|_| free_port().map(|port| SocketAddr::from(([127, 0, 0, 1], port))))
        .collect::<Result<_, _>>()?;
    let quic: Vec<SocketAddr> = (0..3)
        .map(|_| {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut guards = Vec::new();
    for (i, region) in regions.iter().enumerate() {
        let mut text = format!(
            "region = \"{region}\"\nnode_id = {}\ndata_dir = {:?}\nhttp_listen = \"{}\"\n\
             peer_listen = \"{}\"\n[tls]\nca_cert = {:?}\ncert = {:?}\nkey = {:?}\n",
            i + 1,
            dir.join(format!("data-{region}")).display().to_string(),
            http[i],
            quic[i],
            certs.join("ca.pem").display().to_string(),
            certs.join(format!("{region}.pem")).display().to_string(),
            certs.join(format!("{region}.key")).display().to_string(),
        );
        for (j, other) in regions.iter().enumerate() {
            if i != j {
                text += &format!(
                    "[[peers]]\nregion = \"{other}\"\naddress = \"{}\"\n",
                    quic[j]
                );
            }
        }
        let config = dir.join(format!("{region}.toml"));
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.join(format!("{region}.log"))).map_err(|e| e.to_string())?;
        // The peers stand for other machines: on this one they run at the lowest priority,
        // on the CPU the node under test and the load generator leave idle.
        let mut cmd = if i == 0 {
            Command::new(bin)
        } else {
            let mut c = Command::new("nice");
            c.args(["-n", "19"]).arg(bin);
            c
        };
        let child = cmd
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start cart-store: {e}"))?;
        guards.push(Guard(child, "cart-store"));
    }
    for a in &http {
        wait_until("cart-store", || http_get(*a, "/health").is_ok())?;
    }
    wait_until("the peer links", || {
        http.iter().all(|a| {
            http_get(*a, "/replication")
                .map(|t| t.matches("\"connected\":true").count() == 2)
                .unwrap_or(false)
        })
    })?;
    say(
        p,
        &format!("three replicating nodes up; loading {}", http[0]),
    );
    let run = run_load(
        load_bin,
        &["--target".to_owned(), format!("http://{}", http[0])],
        p,
        &dir.join("replicated.json"),
    )?;
    // Let the last batches be acknowledged, then count.
    std::thread::sleep(Duration::from_secs(2));
    let texts: Vec<String> = http
        .iter()
        .map(|a| http_get(*a, "/metrics"))
        .collect::<Result<_, _>>()?;
    let delta_bytes = metric(&texts[0], "cart_store_peer_delta_bytes_sent_total");
    let deltas = metric(&texts[0], "cart_store_peer_deltas_sent_total");
    let wire: f64 = texts
        .iter()
        .map(|t| metric(t, "cart_store_peer_bytes_received_total"))
        .sum();
    let lag = "cart_store_replication_lag_seconds";
    Ok(Replicated {
        run,
        wire_per_delta: if delta_bytes > 0.0 {
            wire / delta_bytes
        } else {
            f64::NAN
        },
        wire_bytes: wire,
        delta_bytes,
        deltas,
        writes: metric(&texts[0], "cart_store_applied_seq"),
        compaction_writes: metric(&texts[0], "cart_store_compaction_writes_total"),
        lag_ms: (
            histogram_quantile_ms(&texts[0], lag, 0.5),
            histogram_quantile_ms(&texts[0], lag, 0.9),
            histogram_quantile_ms(&texts[0], lag, 0.99),
        ),
    })
}

/// The release binaries the measurements run: `cart-store`, `cart-load`, and cart-load's
/// `heal_convergence` example (bench-report's convergence measurement). One cargo
/// invocation, so features unify the same way for all of them and nothing rebuilds
/// between `bench-node` and `bench-report`.
pub struct Binaries {
    pub node: PathBuf,
    pub load: PathBuf,
    pub heal: PathBuf,
}

pub fn build_release() -> Result<Binaries, String> {
    crate::cargo(&[
        "build",
        "--release",
        "-p",
        "meridian-cart-store",
        "-p",
        "meridian-cart-load",
        "--bins",
        "--example",
        "heal_convergence",
    ])?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    let release = target.join("release");
    Ok(Binaries {
        node: release.join("cart-store"),
        load: release.join("cart-load"),
        heal: release.join("examples").join("heal_convergence"),
    })
}

/// Runs every measurement of `bench-node` with the binaries already built; `step` is
/// called before each one with its name (bench-report's progress display).
pub fn measure(
    bins: &Binaries,
    p: &Params,
    mut step: impl FnMut(&str),
) -> Result<NodeFigures, String> {
    let dir = std::env::temp_dir().join(format!("meridian-bench-node-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    step("one node (durability = process)");
    let node = node_run(&bins.node, &bins.load, &dir, "process", p)?;
    let fsync = if p.skip_fsync {
        None
    } else {
        step("one node (durability = fsync)");
        Some(node_run(&bins.node, &bins.load, &dir, "fsync", p)?)
    };
    step("redis-server (appendfsync everysec)");
    let redis = redis_run(&bins.load, &dir, p)?;
    let replicated = if p.skip_peers {
        None
    } else {
        step("three replicating nodes");
        Some(replicated_run(&bins.node, &bins.load, &dir, p)?)
    };
    let pinned = if p.also_pinned && !p.pin {
        let pp = Params {
            pin: true,
            ..p.clone()
        };
        std::fs::create_dir_all(dir.join("pinned")).map_err(|e| e.to_string())?;
        step("one node pinned to CPU 0, the load to CPU 1");
        let node = node_run(&bins.node, &bins.load, &dir.join("pinned"), "process", &pp)?;
        step("redis-server pinned to CPU 0, the load to CPU 1");
        let redis = redis_run(&bins.load, &dir.join("pinned"), &pp)?;
        Some((node, redis))
    } else {
        None
    };
    Ok(NodeFigures {
        params: p.clone(),
        node,
        fsync,
        redis,
        replicated,
        pinned,
        dir,
    })
}

/// Runs the whole comparison and prints it.
pub fn bench_node(args: &[String]) -> Result<(), String> {
    let p = Params::parse(args)?;
    let bins = build_release()?;
    let f = measure(&bins, &p, |_| {})?;
    print(&f);
    Ok(())
}

fn print(f: &NodeFigures) {
    let (p, node, fsync, redis, replicated) =
        (&f.params, &f.node, &f.fsync, &f.redis, &f.replicated);
    println!();
    println!(
        "bench-node: {} clients, {} s, mix {}, {} carts",
        p.concurrency, p.duration_secs, p.mix, p.carts
    );
    println!(
        "  {:<28} {:>12} {:>10} {:>8}",
        "target", "ops/s", "p99 ms", "errors"
    );
    let row = |name: &str, r: &Run| {
        println!(
            "  {name:<28} {:>12.0} {:>10.2} {:>8}",
            r.throughput, r.p99_ms, r.errors
        )
    };
    row("cart-store (process)", node);
    if let Some(f) = &fsync {
        row("cart-store (fsync)", f);
    }
    row("redis (appendfsync everysec)", redis);
    if let Some(r) = &replicated {
        row("cart-store (process, 2 peers)", &r.run);
    }
    println!(
        "  ratio cart-store/redis throughput: {:.2}× (target ≥ 0.5×); p99 {:.2} ms (target < 5 ms)",
        node.throughput / redis.throughput,
        node.p99_ms
    );
    if let Some((n, r)) = &f.pinned {
        row("cart-store (process), pinned", n);
        row("redis, pinned", r);
        println!(
            "  pinned (server on CPU 0, load on CPU 1): cart-store/redis {:.2}×",
            n.throughput / r.throughput
        );
    }
    if let Some((ops, (per_sec, per_fsync))) = fsync
        .as_ref()
        .and_then(|f| f.fsyncs.map(|x| (f.throughput, x)))
    {
        println!(
            "  fsync mode: {ops:.0} ops/s with {per_sec:.0} fsyncs/s ({per_fsync:.1} writes per fsync)"
        );
    }
    if let Some(r) = &replicated {
        println!(
            "  with two peers attached: {:.2}× the single node's throughput (target ≥ 0.8×)",
            r.run.throughput / node.throughput
        );
        println!(
            "  replication: {:.0} deltas shipped; {:.2} bytes of frames on the wire (both \
             directions, acks included, QUIC headers not) per byte of delta (target ≤ 1.5×); \
             commit → peer acknowledgement p50 ≤ {} ms, p99 ≤ {} ms (histogram bucket bounds)",
            r.deltas, r.wire_per_delta, r.lag_ms.0, r.lag_ms.2
        );
    }
    println!("  raw summaries and node logs: {}", f.dir.display());
}
