//! Convergence time after a heal, as a function of the number of divergent carts.
//!
//! For each `N` of `--carts` (default `100,1000,10000`) it starts three fresh regions in
//! this process (real RocksDB in a temporary directory, real QUIC with mutual TLS on
//! loopback, no simulated latency: `cart-store demo`'s setup), cuts tokyo off from the
//! other two with the transport's `Faults` hook, and writes every cart `div-0..N` on both
//! sides of the partition: one add in tokyo and one in virginia or frankfurt (alternately),
//! through the regions' HTTP APIs. It checks that the `N` carts differ between the sides,
//! heals, and times how long until every region has applied the same writes of every origin
//! and the three digest roots (`GET /replication`) are equal. Then, outside the timing, it
//! reads every cart in every region and checks they are identical and hold both adds.
//!
//! A measurement tool for `cargo xtask bench-report` (it is not part of the node binary):
//!
//! ```text
//! cargo run --release -p meridian-cart-load --example heal_convergence -- \
//!     --carts 100,1000 --json heal.json
//! ```
//!
//! Every step is bounded: writes by count, and each wait by `--timeout-secs` (default 120).

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use meridian_cart_store::demo::{call, start_regions, Region};
use serde::Serialize;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Concurrent writers per region.
const WRITERS: usize = 8;

/// One measured point.
#[derive(Serialize)]
struct Point {
    /// Carts written on both sides of the partition.
    carts: u64,
    /// Of those, how many read differently between tokyo and virginia before the heal.
    divergent_before: u64,
    /// Writes made during the partition (two per cart).
    writes: u64,
    /// Seconds the partition writes took.
    write_secs: f64,
    /// Heal → every peer link up again, seconds: when the check that saw it ended.
    reconnect_secs: f64,
    /// When the last check that saw a link down began (0 if the first check saw them up):
    /// the links came up between this and `reconnect_secs`.
    reconnect_after_secs: f64,
    /// Heal → every region applied the same writes and the digest roots are equal, seconds:
    /// when the poll round that saw it ended.
    converge_secs: f64,
    /// When the last poll round that saw a difference began (0 if the first saw none): the
    /// regions converged between this and `converge_secs`.
    converge_after_secs: f64,
    /// Carts that still differ after convergence (read back in every region): must be 0.
    divergent_after: u64,
    /// Anti-entropy sessions started during the heal (summed over regions).
    anti_entropy_sessions: u64,
}

#[derive(Serialize)]
struct Summary {
    setup: &'static str,
    points: Vec<Point>,
}

struct Args {
    carts: Vec<u64>,
    json: Option<PathBuf>,
    timeout: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        carts: vec![100, 1000, 10_000],
        json: None,
        timeout: Duration::from_secs(120),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--carts" => {
                a.carts = value()?
                    .split(',')
                    .map(|s| s.trim().parse::<u64>())
                    .collect::<Result<_, _>>()
                    .context("--carts takes numbers separated by commas")?;
                if a.carts.iter().any(|&n| n == 0 || n > 1_000_000) {
                    bail!("--carts: each count must be in 1..=1000000");
                }
            }
            "--json" => a.json = Some(value()?.into()),
            "--timeout-secs" => {
                a.timeout = Duration::from_secs(value()?.parse().context("--timeout-secs")?)
            }
            "-h" | "--help" => {
                println!(
                    "heal_convergence [--carts N,N,...] [--json PATH] [--timeout-secs S]\n\
                     convergence time after a heal for N divergent carts (three regions in \
                     one process)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (--carts, --json, --timeout-secs)"),
        }
    }
    Ok(a)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut points = Vec::new();
    for &n in &args.carts {
        let dir = std::env::temp_dir().join(format!("meridian-heal-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let point = measure(&dir, n, args.timeout).await;
        let _ = std::fs::remove_dir_all(&dir);
        let point = point.with_context(|| format!("{n} divergent carts"))?;
        println!(
            "heal: {n} carts ({} divergent before the heal, {} writes in {:.2} s): links up \
             {:.3}–{:.3} s, converged {:.3}–{:.3} s after the heal; {} differ after; {} \
             anti-entropy sessions",
            point.divergent_before,
            point.writes,
            point.write_secs,
            point.reconnect_after_secs,
            point.reconnect_secs,
            point.converge_after_secs,
            point.converge_secs,
            point.divergent_after,
            point.anti_entropy_sessions
        );
        points.push(point);
    }
    if let Some(path) = &args.json {
        let summary = Summary {
            setup: "three regions in one process: RocksDB (durability \"process\"), QUIC with \
                    mutual TLS on loopback, no simulated latency, tokyo cut off from virginia \
                    and frankfurt",
            points,
        };
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn measure(dir: &Path, n: u64, timeout: Duration) -> anyhow::Result<Point> {
    let regions = start_regions(dir, 0).await?;
    let result = measure_on(&regions, n, timeout).await;
    for r in regions {
        let _ = r.stop.send(());
        match tokio::time::timeout(Duration::from_secs(20), r.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("heal: {} stopped with an error: {e:#}", r.name),
            Ok(Err(e)) => eprintln!("heal: {} panicked: {e}", r.name),
            Err(_) => eprintln!("heal: {} did not stop within 20 s", r.name),
        }
    }
    result
}

async fn measure_on(regions: &[Region], n: u64, timeout: Duration) -> anyhow::Result<Point> {
    wait_until("regions connecting", timeout, || all_connected(regions)).await?;
    let [va, fr, tk] = [&regions[0], &regions[1], &regions[2]];
    for (a, b) in [(tk, va), (tk, fr)] {
        a.faults.cut(b.name);
        b.faults.cut(a.name);
    }
    wait_until("tokyo cut off", timeout, || tokyo_isolated(regions)).await?;

    let started = Instant::now();
    // Tokyo writes sku "t" to every cart; virginia and frankfurt write sku "m" to the even
    // and the odd carts respectively.
    let mut jobs = Vec::new();
    let parts: [(SocketAddr, &'static str, u64, u64); 3] = [
        (tk.http, "t", 0, 1),
        (va.http, "m", 0, 2),
        (fr.http, "m", 1, 2),
    ];
    for (addr, sku, first, step) in parts {
        for w in 0..WRITERS as u64 {
            jobs.push(tokio::spawn(write_carts(
                addr,
                sku,
                first + w * step,
                step * WRITERS as u64,
                n,
                started + timeout,
            )));
        }
    }
    let mut writes = 0;
    for j in jobs {
        writes += j.await.context("a writer task")??;
    }
    let write_secs = started.elapsed().as_secs_f64();
    let divergent_before = count_divergent(&[va, tk], n, false).await?;

    let sessions_before = anti_entropy_sessions(regions).await?;
    let healed = Instant::now();
    for (a, b) in [(tk, va), (tk, fr)] {
        a.faults.heal(b.name);
        b.faults.heal(a.name);
    }
    // Each check reads every region once, which takes longer while the nodes are busy
    // applying: a state change lies between the start of the last check that did not see it
    // and the end of the first that did.
    let mut reconnect_secs = None;
    let mut reconnect_after_secs = 0.0;
    let mut converge_after_secs = 0.0;
    let converge_secs = loop {
        if reconnect_secs.is_none() {
            let began = healed.elapsed().as_secs_f64();
            if all_connected(regions).await {
                reconnect_secs = Some(healed.elapsed().as_secs_f64());
            } else {
                reconnect_after_secs = began;
            }
        }
        let began = healed.elapsed().as_secs_f64();
        if converged(regions).await {
            break healed.elapsed().as_secs_f64();
        }
        converge_after_secs = began;
        if healed.elapsed() > timeout {
            bail!(
                "convergence after the heal: not done after {} s",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let anti_entropy = anti_entropy_sessions(regions).await? - sessions_before;
    let divergent_after = count_divergent(&regions.iter().collect::<Vec<_>>(), n, true).await?;
    Ok(Point {
        carts: n,
        divergent_before,
        writes,
        write_secs,
        reconnect_secs: reconnect_secs.unwrap_or(converge_secs),
        reconnect_after_secs,
        converge_secs,
        converge_after_secs,
        divergent_after,
        anti_entropy_sessions: anti_entropy,
    })
}

/// Adds one `sku` to the carts `first, first+step, … < n` over one keep-alive connection.
async fn write_carts(
    addr: SocketAddr,
    sku: &'static str,
    first: u64,
    step: u64,
    n: u64,
    deadline: Instant,
) -> anyhow::Result<u64> {
    let mut conn = Conn::open(addr).await?;
    let body = format!(r#"{{"sku":"{sku}","quantity":1}}"#);
    let mut written = 0;
    let mut i = first;
    while i < n {
        if Instant::now() > deadline {
            bail!("the partition writes did not finish in time");
        }
        let (status, _) = conn
            .send("POST", &format!("/carts/div-{i}/items"), &body)
            .await?;
        if status != 200 {
            bail!("a write to div-{i} answered {status}");
        }
        written += 1;
        i += step;
    }
    Ok(written)
}

/// An HTTP/1.1 keep-alive connection to one node.
struct Conn {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn { addr, sender })
    }

    async fn send(&mut self, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, Value)> {
        if self.sender.ready().await.is_err() {
            *self = Conn::open(self.addr).await?;
        }
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.sender.send_request(req))
            .await
            .context("a request took over 30 s")??;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

/// The lines of cart `div-i` in each region, compared: how many carts differ. With
/// `complete`, a cart also counts as differing unless it holds both sides' adds.
async fn count_divergent(regions: &[&Region], n: u64, complete: bool) -> anyhow::Result<u64> {
    let mut conns = Vec::new();
    for r in regions {
        conns.push(Conn::open(r.http).await?);
    }
    let mut differ = 0;
    for i in 0..n {
        let mut views = Vec::new();
        for c in &mut conns {
            let (status, v) = c.send("GET", &format!("/carts/div-{i}"), "").await?;
            if status != 200 {
                bail!("reading div-{i} answered {status}");
            }
            views.push(lines(&v));
        }
        let same = views.windows(2).all(|w| w[0] == w[1]);
        let full = views[0].get("t") == Some(&1) && views[0].get("m") == Some(&1);
        if !same || (complete && !full) {
            differ += 1;
        }
    }
    Ok(differ)
}

fn lines(v: &Value) -> std::collections::BTreeMap<String, u64> {
    v["lines"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .filter_map(|l| Some((l["sku"].as_str()?.to_owned(), l["quantity"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

async fn replication(r: &Region) -> Option<Value> {
    match call(r.http, "GET", "/replication", None).await {
        Ok((200, v)) => Some(v),
        _ => None,
    }
}

async fn all_connected(regions: &[Region]) -> bool {
    for r in regions {
        let Some(v) = replication(r).await else {
            return false;
        };
        let peers = v["peers"].as_array().cloned().unwrap_or_default();
        if peers.len() != 2 || !peers.iter().all(|p| p["connected"] == Value::Bool(true)) {
            return false;
        }
    }
    true
}

async fn tokyo_isolated(regions: &[Region]) -> bool {
    for r in regions {
        let Some(v) = replication(r).await else {
            return false;
        };
        for p in v["peers"].as_array().cloned().unwrap_or_default() {
            let involves_tokyo = r.name == "tokyo" || p["region"] == "tokyo";
            if involves_tokyo && p["connected"] == Value::Bool(true) {
                return false;
            }
        }
    }
    true
}

/// Every region applied the same writes of every origin and holds the same carts (equal
/// digest roots).
async fn converged(regions: &[Region]) -> bool {
    let mut first: Option<(Value, Value)> = None;
    for r in regions {
        let Some(v) = replication(r).await else {
            return false;
        };
        let view = (v["applied"].clone(), v["digest"].clone());
        match &first {
            None => first = Some(view),
            Some(f) if *f != view => return false,
            Some(_) => {}
        }
    }
    true
}

async fn anti_entropy_sessions(regions: &[Region]) -> anyhow::Result<u64> {
    let mut n = 0;
    for r in regions {
        let v = replication(r).await.context("GET /replication")?;
        for p in v["peers"].as_array().cloned().unwrap_or_default() {
            n += p["anti_entropy"]["sessions_started"].as_u64().unwrap_or(0);
        }
    }
    Ok(n)
}

/// Polls `done` every 10 ms, up to `limit`.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        if start.elapsed() > limit {
            bail!("{what}: not done after {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
