//! `cart-store demo`: three regions in one process, replicating over real QUIC with mutual
//! TLS on loopback, each on real RocksDB in a temporary directory, with simulated WAN
//! latency in the transport (virginia–frankfurt 45 ms, virginia–tokyo 80 ms,
//! frankfurt–tokyo 120 ms one way). It tells the story of a partition as a timeline: carts
//! edited in every region, tokyo cut off, both sides writing (a remove racing an add, a set
//! racing a set), the heal, and the convergence: add wins, nothing removed comes back, and
//! every region ends with identical carts.
//!
//! Every write and read goes through the regions' real HTTP APIs (a minimal hyper client
//! on loopback). With `--serve` the three APIs stay up afterwards for `curl`.

use crate::config::Config;
use crate::server::Server;
use crate::transport::Faults;
use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The demo's regions and node ids.
pub const REGIONS: [(&str, u64); 3] = [("virginia", 1), ("frankfurt", 2), ("tokyo", 3)];

/// One-way latency between two regions, in ms (real figures, rounded).
pub fn latency_ms(a: &str, b: &str) -> u64 {
    let mut pair = [a, b];
    pair.sort_unstable();
    match pair {
        ["frankfurt", "virginia"] => 45,
        ["tokyo", "virginia"] => 80,
        ["frankfurt", "tokyo"] => 120,
        _ => 0,
    }
}

/// How the demo runs.
#[derive(Clone, Debug, Default)]
pub struct DemoOptions {
    /// Keep the three APIs up after the story, until Ctrl-C.
    pub serve: bool,
    /// Simulated latency multiplier in percent (100 = the real figures; 0 = none).
    pub latency_percent: u64,
    /// Keep tokyo partitioned this long under a steady load in every region before the
    /// heal (0: just the story's writes), and report the divergent carts and the time to
    /// converge.
    pub partition_secs: u64,
}

/// Carts the partition load writes to.
const LOAD_CARTS: u64 = 2000;
/// Writes per second per region during the partition load.
const LOAD_RATE_PER_REGION: u64 = 100;

/// One region of [`start_regions`], running in this process.
pub struct Region {
    /// Its name (one of [`REGIONS`]).
    pub name: &'static str,
    /// Where its HTTP API listens.
    pub http: SocketAddr,
    /// Its transport's cut/heal hook.
    pub faults: Faults,
    /// Send to stop it (gracefully).
    pub stop: tokio::sync::oneshot::Sender<()>,
    /// Its server task; await it after `stop`.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Colours for a terminal; nothing otherwise.
struct Style {
    on: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    fn region(&self, r: &str) -> String {
        let code = match r {
            "virginia" => "1;34",
            "frankfurt" => "1;33",
            _ => "1;35",
        };
        self.paint(code, &format!("{r:>9}"))
    }
}

/// Runs the demo.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let style = Style {
        on: std::io::stdout().is_terminal(),
    };
    let dir = tempfile::Builder::new()
        .prefix("meridian-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let t0 = Instant::now();
    let say = |who: &str, what: String| {
        let at = format!("{:>6.2}s", t0.elapsed().as_secs_f64());
        println!("{} {} {what}", style.paint("2", &at), style.region(who));
    };
    let headline = |s: &str| println!("\n{}", style.paint("1", s));

    headline("Three regions, every one accepting writes, replicating over QUIC with mutual TLS");
    let regions = start_regions(dir.path(), opts.latency_percent).await?;
    for r in &regions {
        say(
            r.name,
            format!(
                "up: http://{}  (RocksDB in {})",
                r.http,
                dir.path().join(r.name).display()
            ),
        );
    }
    wait_until(
        &style,
        "regions connecting",
        Duration::from_secs(20),
        || async { all_connected(&regions).await },
    )
    .await?;
    say("virginia", "all peer links up (virginia–frankfurt 45 ms, virginia–tokyo 80 ms, frankfurt–tokyo 120 ms one way)".into());

    headline("1. Shoppers in three regions edit the same cart");
    let [va, fr, tk] = [&regions[0], &regions[1], &regions[2]];
    let writes = [
        (
            va,
            "POST",
            "/carts/alice/items",
            r#"{"sku":"book","quantity":1}"#,
        ),
        (
            fr,
            "POST",
            "/carts/alice/items",
            r#"{"sku":"pen","quantity":2}"#,
        ),
        (
            tk,
            "POST",
            "/carts/alice/items",
            r#"{"sku":"tea","quantity":3}"#,
        ),
        (
            va,
            "POST",
            "/carts/bob/items",
            r#"{"sku":"lamp","quantity":1}"#,
        ),
    ];
    for (r, method, path, body) in writes {
        let (status, v) = call(r.http, method, path, Some(body)).await?;
        say(
            r.name,
            format!("{method} {path} {body} -> {status} {}", lines(&v)),
        );
    }
    let lag = measure_lag(&regions, opts.latency_percent, &style, &say).await?;
    wait_converged(&regions, &["alice", "bob"], &style).await?;
    show_carts(&regions, "alice", &say).await?;

    headline("2. tokyo is cut off (its links are closed and stay closed)");
    for r in &regions {
        for other in &regions {
            if r.name == "tokyo" && other.name != "tokyo" {
                r.faults.cut(other.name);
            } else if other.name == "tokyo" && r.name != "tokyo" {
                r.faults.cut("tokyo");
            }
        }
    }
    wait_until(
        &style,
        "tokyo's links going down",
        Duration::from_secs(20),
        || async { tokyo_isolated(&regions).await },
    )
    .await?;
    say("tokyo", "partitioned from virginia and frankfurt".into());

    headline("3. Both sides keep taking writes");
    let during = [
        (
            va,
            "DELETE",
            "/carts/alice/items/tea",
            None,
            "removes the tea it has seen (3)",
        ),
        (
            tk,
            "POST",
            "/carts/alice/items",
            Some(r#"{"sku":"tea","quantity":2}"#),
            "adds 2 more tea, concurrently",
        ),
        (
            fr,
            "PUT",
            "/carts/alice/items/pen",
            Some(r#"{"quantity":5}"#),
            "sets pen to 5",
        ),
        (
            tk,
            "PUT",
            "/carts/alice/items/pen",
            Some(r#"{"quantity":1}"#),
            "sets pen to 1, a moment later",
        ),
        (va, "DELETE", "/carts/bob", None, "clears bob's cart"),
        (
            tk,
            "POST",
            "/carts/bob/items",
            Some(r#"{"sku":"rug","quantity":1}"#),
            "adds a rug to bob's cart",
        ),
    ];
    for (r, method, path, body, why) in during {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (status, v) = call(r.http, method, path, body).await?;
        say(
            r.name,
            format!("{why}: {method} {path} -> {status} {}", lines(&v)),
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    show_carts(&regions, "alice", &say).await?;
    println!(
        "{}",
        style.paint(
            "2",
            "          the regions disagree while the partition lasts"
        )
    );

    let mut load_carts = Vec::new();
    if opts.partition_secs > 0 {
        headline(&format!(
            "   …and a steady load in every region for {} s of partition",
            opts.partition_secs
        ));
        load_carts = partition_load(&regions, opts.partition_secs, &style).await?;
        let divergent = count_divergent(&regions, &load_carts).await?;
        say(
            "tokyo",
            format!(
                "{} carts written during the partition; {divergent} differ between regions",
                load_carts.len()
            ),
        );
    }

    headline("4. The network heals");
    for r in &regions {
        for other in &regions {
            if r.name != other.name {
                r.faults.heal(other.name);
            }
        }
    }
    let healed = Instant::now();
    wait_converged(&regions, &["alice", "bob"], &style).await?;
    if !load_carts.is_empty() {
        wait_until(
            &style,
            "every region applying every write",
            Duration::from_secs(120),
            || async { same_progress(&regions).await },
        )
        .await?;
    }
    // Converged: every region has applied the same writes (checked cart by cart below).
    let converge = healed.elapsed();
    if !load_carts.is_empty() {
        let divergent = count_divergent(&regions, &load_carts).await?;
        if divergent > 0 {
            bail!("{divergent} carts still differ after every region applied every write");
        }
        say(
            "tokyo",
            format!(
                "all {} carts written during the partition read the same everywhere",
                load_carts.len()
            ),
        );
    }
    say(
        "tokyo",
        format!(
            "every region holds identical carts {:.2} s after the heal",
            converge.as_secs_f64()
        ),
    );
    show_carts(&regions, "alice", &say).await?;
    show_carts(&regions, "bob", &say).await?;

    headline("5. What the merge did");
    let alice = cart_lines(&call(va.http, "GET", "/carts/alice", None).await?.1);
    let bob = cart_lines(&call(va.http, "GET", "/carts/bob", None).await?.1);
    let check = |ok: bool, text: &str| {
        let mark = if ok {
            style.paint("1;32", "✓")
        } else {
            style.paint("1;31", "✗")
        };
        println!("  {mark} {text}");
        ok
    };
    let mut ok = true;
    ok &= check(
        alice.get("tea") == Some(&2),
        "add wins: tokyo's unseen add of 2 tea survives virginia's remove (tea = 2)",
    );
    ok &= check(
        alice.get("tea") != Some(&5),
        "no resurrection: the 3 tea virginia removed stay removed (not 5)",
    );
    ok &= check(
        alice.get("pen") == Some(&1),
        "set is last-writer-wins by hybrid logical clock: tokyo's later set (pen = 1) wins",
    );
    ok &= check(
        alice.get("book") == Some(&1),
        "virginia's book, written before the partition, is everywhere",
    );
    ok &= check(
        bob.get("rug") == Some(&1) && !bob.contains_key("lamp"),
        "bob: the clear removed the lamp it saw, and tokyo's concurrent rug stays",
    );
    ok &= check(
        true,
        &format!(
            "replication lag, write acknowledged in one region → visible in another: p50 {} ms, \
             p99 {} ms; beyond the one-way latency p50 {} ms, p99 {} ms ({} samples)",
            lag.p50, lag.p99, lag.excess_p50, lag.excess_p99, lag.samples
        ),
    );
    ok &= check(
        true,
        &format!(
            "convergence after the heal: {:.2} s",
            converge.as_secs_f64()
        ),
    );

    if opts.serve {
        headline("The three APIs stay up; try (Ctrl-C to stop):");
        for r in &regions {
            println!("  curl -s http://{}/carts/alice", r.http);
        }
        println!("  curl -s -X POST http://{}/carts/alice/items -H 'content-type: application/json' -d '{{\"sku\":\"mug\",\"quantity\":1}}'", va.http);
        println!("  curl -s http://{}/replication", tk.http);
        let _ = tokio::signal::ctrl_c().await;
    }
    for r in regions {
        let _ = r.stop.send(());
        r.task.await.context("a region's task")??;
    }
    if !ok {
        bail!("the demo's checks failed");
    }
    Ok(())
}

/// The three [`REGIONS`] in this process, with data and development certificates under
/// `dir`, replicating over QUIC on loopback with `latency_percent` of [`latency_ms`] as
/// simulated one-way latency (0: none).
pub async fn start_regions(dir: &Path, latency_percent: u64) -> anyhow::Result<Vec<Region>> {
    let names: Vec<String> = REGIONS.iter().map(|(r, _)| (*r).to_owned()).collect();
    let certs = dir.join("certs");
    crate::certs::write_dev_certs(&certs, &names)?;
    let peer_ports: Vec<u16> = REGIONS
        .iter()
        .map(|_| free_udp_port())
        .collect::<anyhow::Result<_>>()?;
    let mut out = Vec::new();
    for (i, (name, id)) in REGIONS.iter().enumerate() {
        let mut peers = String::new();
        for (j, (other, _)) in REGIONS.iter().enumerate() {
            if i != j {
                let ms = latency_ms(name, other) * latency_percent / 100;
                peers += &format!(
                    "[[peers]]\nregion = \"{other}\"\naddress = \"127.0.0.1:{}\"\nsimulated_latency_ms = {ms}\n",
                    peer_ports[j]
                );
            }
        }
        let text = format!(
            "region = \"{name}\"\nnode_id = {id}\ndata_dir = \"{data}\"\nhttp_listen = \"127.0.0.1:0\"\n\
             peer_listen = \"127.0.0.1:{port}\"\nreplication_forward_after_ms = 500\n\
             peer_reconnect_delay_max_ms = 500\n\
             [tls]\nca_cert = \"{c}/ca.pem\"\ncert = \"{c}/{name}.pem\"\nkey = \"{c}/{name}.key\"\n{peers}",
            data = dir.join(name).display(),
            port = peer_ports[i],
            c = certs.display(),
        );
        let config = Config::parse(&text)?;
        let server = Server::start(&config).await?;
        let faults = server
            .faults()
            .cloned()
            .context("replication did not start")?;
        let listener = tokio::net::TcpListener::bind(config.http_listen).await?;
        let http = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(listener, async move {
                    let _ = stopped.await;
                })
                .await?;
            Ok(())
        });
        out.push(Region {
            name,
            http,
            faults,
            stop,
            task,
        });
    }
    Ok(out)
}

fn free_udp_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

/// One HTTP/1.1 request on a new loopback connection: the status and the JSON body (null
/// if the body is not JSON).
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let (status, _, bytes) = request(addr, method, path, body, &[]).await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// One HTTP/1.1 request with extra `headers` on a new loopback connection: the status, the
/// response headers and the body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, hyper::HeaderMap, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, headers, bytes))
}

fn cart_lines(v: &Value) -> std::collections::BTreeMap<String, u64> {
    v["lines"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .filter_map(|l| Some((l["sku"].as_str()?.to_owned(), l["quantity"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn lines(v: &Value) -> String {
    let l = cart_lines(v);
    if l.is_empty() {
        return "[]".into();
    }
    let parts: Vec<String> = l.iter().map(|(s, q)| format!("{s}×{q}")).collect();
    format!("[{}]", parts.join(", "))
}

async fn show_carts(
    regions: &[Region],
    cart: &str,
    say: &impl Fn(&str, String),
) -> anyhow::Result<()> {
    for r in regions {
        let (_, v) = call(r.http, "GET", &format!("/carts/{cart}"), None).await?;
        say(r.name, format!("{cart}: {}", lines(&v)));
    }
    Ok(())
}

async fn all_connected(regions: &[Region]) -> bool {
    for r in regions {
        let Ok((200, v)) = call(r.http, "GET", "/replication", None).await else {
            return false;
        };
        let peers = v["peers"].as_array().cloned().unwrap_or_default();
        if peers.is_empty() || !peers.iter().all(|p| p["connected"] == Value::Bool(true)) {
            return false;
        }
    }
    true
}

async fn tokyo_isolated(regions: &[Region]) -> bool {
    for r in regions {
        let Ok((200, v)) = call(r.http, "GET", "/replication", None).await else {
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

async fn converged(regions: &[Region], carts: &[&str]) -> bool {
    for cart in carts {
        let mut first = None;
        for r in regions {
            let Ok((200, v)) = call(r.http, "GET", &format!("/carts/{cart}"), None).await else {
                return false;
            };
            let l = cart_lines(&v);
            match &first {
                None => first = Some(l),
                Some(f) if *f != l => return false,
                Some(_) => {}
            }
        }
    }
    true
}

async fn wait_converged(regions: &[Region], carts: &[&str], style: &Style) -> anyhow::Result<()> {
    wait_until(style, "replicating", Duration::from_secs(30), || async {
        converged(regions, carts).await
    })
    .await
}

/// Polls `done` every 5 ms with a spinner, up to `limit`.
async fn wait_until<F, Fut>(
    style: &Style,
    what: &str,
    limit: Duration,
    done: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let mut i = 0usize;
    while !done().await {
        if start.elapsed() > limit {
            bail!("{what}: not done after {} s", limit.as_secs());
        }
        if style.on {
            print!(
                "\r          {} {what} {:.2} s",
                frames[i % frames.len()],
                start.elapsed().as_secs_f64()
            );
            let _ = std::io::stdout().flush();
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if style.on {
        print!("\r\x1b[2K");
        let _ = std::io::stdout().flush();
    }
    Ok(())
}

/// Adds at a steady rate in every region, on the carts `load-0..LOAD_CARTS`, for `secs`.
/// Returns the carts written.
async fn partition_load(
    regions: &[Region],
    secs: u64,
    style: &Style,
) -> anyhow::Result<Vec<String>> {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        let addr = r.http;
        tasks.push(tokio::spawn(async move {
            let mut written = Vec::new();
            let mut n: u64 = i as u64 * 7919;
            let period = Duration::from_micros(1_000_000 / LOAD_RATE_PER_REGION);
            while Instant::now() < until {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let cart = format!("load-{}", (n >> 33) % LOAD_CARTS);
                let (status, _) = call(
                    addr,
                    "POST",
                    &format!("/carts/{cart}/items"),
                    Some(r#"{"sku":"item","quantity":1}"#),
                )
                .await?;
                if status != 200 {
                    bail!("a load write answered {status}");
                }
                written.push(cart);
                tokio::time::sleep(period).await;
            }
            anyhow::Ok(written)
        }));
    }
    let mut carts = Vec::new();
    wait_until(
        style,
        "partition under load",
        Duration::from_secs(secs + 30),
        || async { Instant::now() >= until },
    )
    .await?;
    for t in tasks {
        carts.extend(t.await.context("a load task")??);
    }
    carts.sort();
    carts.dedup();
    Ok(carts)
}

/// How many of `carts` do not read the same in every region.
async fn count_divergent(regions: &[Region], carts: &[String]) -> anyhow::Result<usize> {
    let mut n = 0;
    for cart in carts {
        let mut views = Vec::new();
        for r in regions {
            views.push(cart_lines(
                &call(r.http, "GET", &format!("/carts/{cart}"), None)
                    .await?
                    .1,
            ));
        }
        if views.windows(2).any(|w| w[0] != w[1]) {
            n += 1;
        }
    }
    Ok(n)
}

/// Every region has applied the same writes of every origin (so, the CRDT being
/// convergent, holds the same carts).
async fn same_progress(regions: &[Region]) -> bool {
    let mut first = None;
    for r in regions {
        let Ok((200, v)) = call(r.http, "GET", "/replication", None).await else {
            return false;
        };
        let applied = v["applied"].clone();
        match &first {
            None => first = Some(applied),
            Some(f) if *f != applied => return false,
            Some(_) => {}
        }
    }
    true
}

/// Polls `path` at `addr` until it shows a line: milliseconds since `since`, or `None` after
/// 10 s.
async fn visible_after(
    addr: SocketAddr,
    path: &str,
    since: Instant,
) -> anyhow::Result<Option<u64>> {
    loop {
        let (_, v) = call(addr, "GET", path, None).await?;
        if !cart_lines(&v).is_empty() {
            return Ok(Some(since.elapsed().as_millis() as u64));
        }
        if since.elapsed() > Duration::from_secs(10) {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Acknowledged-write-to-visible lag, ms: overall, and beyond the pair's one-way latency.
struct Lag {
    p50: u64,
    p99: u64,
    excess_p50: u64,
    excess_p99: u64,
    samples: usize,
}

/// Writes in each region and polls each other region until the write shows: the lag from
/// acknowledgement to visibility. Returns (p50 ms, p99 ms, samples).
async fn measure_lag(
    regions: &[Region],
    latency_percent: u64,
    style: &Style,
    say: &impl Fn(&str, String),
) -> anyhow::Result<Lag> {
    let mut samples = Vec::new();
    let mut excess = Vec::new();
    for round in 0..10 {
        for (i, from) in regions.iter().enumerate() {
            let cart = format!("lag-{round}-{}", from.name);
            let (status, _) = call(
                from.http,
                "POST",
                &format!("/carts/{cart}/items"),
                Some(r#"{"sku":"probe","quantity":1}"#),
            )
            .await?;
            if status != 200 {
                bail!("lag probe write answered {status}");
            }
            let acked = Instant::now();
            let mut watchers = Vec::new();
            for (j, to) in regions.iter().enumerate() {
                if i != j {
                    let (addr, path) = (to.http, format!("/carts/{cart}"));
                    let one_way = latency_ms(from.name, to.name) * latency_percent / 100;
                    watchers.push(tokio::spawn(async move {
                        visible_after(addr, &path, acked)
                            .await
                            .map(|v| v.map(|ms| (ms, one_way)))
                    }));
                }
            }
            for w in watchers {
                match w.await.context("a lag watcher")?? {
                    Some((ms, one_way)) => {
                        samples.push(ms);
                        excess.push(ms.saturating_sub(one_way));
                    }
                    None => bail!(
                        "a write in {} did not reach every region in 10 s",
                        from.name
                    ),
                }
            }
        }
    }
    samples.sort_unstable();
    excess.sort_unstable();
    let pct = |v: &[u64], p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    let (p50, p99) = (pct(&samples, 50), pct(&samples, 99));
    let (x50, x99) = (pct(&excess, 50), pct(&excess, 99));
    say(
        "virginia",
        format!(
            "{} writes watched from the other regions: visible after p50 {p50} ms, p99 {p99} ms; \
             beyond the pair's one-way latency: p50 {x50} ms, p99 {x99} ms {}",
            samples.len(),
            style.paint("2", "(batching window, sync, HTTP and 1 ms polling)")
        ),
    );
    Ok(Lag {
        p50,
        p99,
        excess_p50: x50,
        excess_p99: x99,
        samples: samples.len(),
    })
}
