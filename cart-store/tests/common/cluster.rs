//! A cluster of real `cart-store serve` processes replicating over QUIC with mutual TLS:
//! regions virginia, frankfurt and tokyo (node ids 1..=3), dev certificates in a tempdir,
//! short resend, forwarding and reconnect timers. On loopback by default, or in network
//! namespaces ([`Netns`]) so that a partition is a link really going down.
//!
//! Every wait is bounded and panics naming what did not happen, with the nodes' stderr.

use super::{client, free_port, BIN};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The regions, in node-id order (node `i` has id `i + 1`).
pub const REGIONS: [&str; 3] = ["virginia", "frankfurt", "tokyo"];

/// A cart's lines: sku → quantity.
pub type Lines = BTreeMap<String, u64>;

/// The replication keys every cluster node gets: timers short enough for tests.
pub const REPLICATION_KEYS: &str = "replication_resend_timeout_ms = 500\n\
     replication_forward_after_ms = 500\n\
     peer_reconnect_delay_max_ms = 500\n";

/// A write.
#[derive(Clone, Debug)]
pub enum Op {
    /// `POST /carts/{cart}/items`
    Add(String, String, u64),
    /// `PUT /carts/{cart}/items/{sku}`
    Set(String, String, u64),
    /// `DELETE /carts/{cart}/items/{sku}`
    Remove(String, String),
    /// `DELETE /carts/{cart}`
    Clear(String),
}

impl Op {
    pub fn add(cart: &str, sku: &str, q: u64) -> Op {
        Op::Add(cart.into(), sku.into(), q)
    }
    pub fn set(cart: &str, sku: &str, q: u64) -> Op {
        Op::Set(cart.into(), sku.into(), q)
    }
    pub fn remove(cart: &str, sku: &str) -> Op {
        Op::Remove(cart.into(), sku.into())
    }
    pub fn clear(cart: &str) -> Op {
        Op::Clear(cart.into())
    }
    fn request(&self) -> (reqwest::Method, String, Option<Value>) {
        use reqwest::Method;
        match self {
            Op::Add(c, s, q) => (
                Method::POST,
                format!("/carts/{c}/items"),
                Some(json!({"sku": s, "quantity": q})),
            ),
            Op::Set(c, s, q) => (
                Method::PUT,
                format!("/carts/{c}/items/{s}"),
                Some(json!({ "quantity": q })),
            ),
            Op::Remove(c, s) => (Method::DELETE, format!("/carts/{c}/items/{s}"), None),
            Op::Clear(c) => (Method::DELETE, format!("/carts/{c}"), None),
        }
    }
}

/// The lines of a cart answer (`{"lines":[{"sku","quantity"}]}`).
pub fn lines_of(v: &Value) -> Lines {
    v["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines in {v}"))
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().unwrap().to_owned(),
                l["quantity"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// `{"a": 1}`-style lines from pairs, for assertions.
pub fn lines(pairs: &[(&str, u64)]) -> Lines {
    pairs.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect()
}

/// One `cart-store serve` process (restartable with the same config and data dir).
pub struct Proc {
    pub region: String,
    pub node_id: u64,
    /// `http://host:port`
    pub base: String,
    /// The QUIC address peers dial.
    pub peer_addr: String,
    pub config: PathBuf,
    netns: Option<String>,
    /// Extra environment for the next start (e.g. libfaketime's).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    log: Arc<Mutex<Vec<u8>>>,
    client: reqwest::blocking::Client,
}

const LOG_KEEP: usize = 256 << 10;

impl Proc {
    /// Spawns the node (in `netns` if given) and waits until `/health` answers.
    pub fn spawn(
        region: &str,
        node_id: u64,
        config: PathBuf,
        base: String,
        peer_addr: String,
        netns: Option<String>,
    ) -> Proc {
        let mut p = Proc {
            region: region.to_owned(),
            node_id,
            base,
            peer_addr,
            config,
            netns,
            env: Vec::new(),
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
            client: client(),
        };
        p.start();
        p
    }

    /// A handle on a node started elsewhere (for another thread): requests only; it
    /// neither starts nor kills anything.
    pub fn detached(region: &str, base: &str) -> Proc {
        Proc {
            region: region.to_owned(),
            node_id: 0,
            base: base.to_owned(),
            peer_addr: String::new(),
            config: PathBuf::new(),
            netns: None,
            env: Vec::new(),
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
            client: client(),
        }
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.region);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        let level = std::env::var("MERIDIAN_TEST_LOG").unwrap_or_else(|_| "info".into());
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", level)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {} ({}): {e}", BIN, self.region));
        let mut stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                l.extend_from_slice(&buf[..n]);
                if l.len() > 2 * LOG_KEEP {
                    let cut = l.len() - LOG_KEEP;
                    l.drain(..cut);
                }
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.client.get(self.url("/health")).send() {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // let the reader finish
                panic!(
                    "{} (node {}) exited before answering /health ({status}):\n{}",
                    self.region,
                    self.node_id,
                    self.log_tail(16 << 10)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} (node {}) did not answer /health at {} within 20 s:\n{}",
                self.region,
                self.node_id,
                self.base,
                self.log_tail(16 << 10)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn note(&self, what: &str) {
        let mut l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        l.extend_from_slice(format!("----- test: {what} -----\n").as_bytes());
    }

    /// SIGKILL, and wait for the exit.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.note("kill -9");
    }

    /// Starts the node again: same config, data dir and node id.
    pub fn restart(&mut self) {
        self.note("restart");
        self.start();
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The last `bytes` of what the node (all its incarnations) wrote on stderr.
    pub fn log_tail(&self, bytes: usize) -> String {
        let l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let from = l.len().saturating_sub(bytes);
        String::from_utf8_lossy(&l[from..]).into_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /carts/{cart}`, or why not.
    pub fn try_cart(&self, cart: &str) -> Result<Lines, String> {
        let r = self
            .client
            .get(self.url(&format!("/carts/{cart}")))
            .send()
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let text = r.text().map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{status}: {text}"));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        Ok(lines_of(&v))
    }

    pub fn cart(&self, cart: &str) -> Lines {
        self.try_cart(cart)
            .unwrap_or_else(|e| panic!("GET /carts/{cart} on {}: {e}", self.region))
    }

    /// `GET /replication`, or why not.
    pub fn try_replication(&self) -> Result<Value, String> {
        let r = self
            .client
            .get(self.url("/replication"))
            .send()
            .map_err(|e| e.to_string())?;
        if r.status() != 200 {
            return Err(format!("{}", r.status()));
        }
        r.json().map_err(|e| e.to_string())
    }

    pub fn replication(&self) -> Value {
        self.try_replication()
            .unwrap_or_else(|e| panic!("GET /replication on {}: {e}", self.region))
    }

    /// One attempt at `op`, with an optional `Idempotency-Key`: the cart after it, or why
    /// not (the status and body, or the transport error).
    pub fn try_write(&self, op: &Op, key: Option<&str>) -> Result<Lines, String> {
        let (method, path, body) = op.request();
        let mut req = self.client.request(method, self.url(&path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().map_err(|e| format!("{e}"))?;
        let status = r.status();
        let text = r.text().map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{status}: {text}"));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        Ok(lines_of(&v))
    }

    /// `op`, which must be acknowledged (200) at once.
    pub fn write(&self, op: &Op) -> Lines {
        self.try_write(op, None)
            .unwrap_or_else(|e| panic!("{op:?} on {}: {e}", self.region))
    }

    /// `op` under `Idempotency-Key: key`, retried (same key: applied at most once) on
    /// transport errors and 5xx until acknowledged or `within` has passed (then `Err`). A
    /// 4xx is an `Err` at once.
    pub fn write_retrying(&self, op: &Op, key: &str, within: Duration) -> Result<Lines, String> {
        let deadline = Instant::now() + within;
        loop {
            match self.try_write(op, Some(key)) {
                Ok(l) => return Ok(l),
                Err(e) if e.starts_with('4') => return Err(e),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("not acknowledged within {within:?}: {e}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes a node's config file.
#[allow(clippy::too_many_arguments)]
pub fn write_node_config(
    path: &Path,
    region: &str,
    node_id: u64,
    data_dir: &Path,
    http_listen: &str,
    peer_listen: &str,
    certs: &Path,
    peers: &[(&str, &str)],
    extra: &str,
) {
    let mut text = format!(
        "region = \"{region}\"\nnode_id = {node_id}\ndata_dir = \"{}\"\n\
         http_listen = \"{http_listen}\"\npeer_listen = \"{peer_listen}\"\n{REPLICATION_KEYS}{extra}\n\
         [tls]\nca_cert = \"{c}/ca.pem\"\ncert = \"{c}/{region}.pem\"\nkey = \"{c}/{region}.key\"\n",
        data_dir.display(),
        c = certs.display(),
    );
    for (r, a) in peers {
        text += &format!("\n[[peers]]\nregion = \"{r}\"\naddress = \"{a}\"\n");
    }
    std::fs::write(path, text).unwrap();
}

/// A free UDP port on loopback (for `peer_listen`).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// N nodes, all peers of each other. Dropping it kills the nodes, then removes the
/// namespaces (if any).
pub struct Cluster {
    pub nodes: Vec<Proc>,
    pub dir: tempfile::TempDir,
    pub net: Option<Netns>,
    started: Instant,
}

impl Cluster {
    /// `n` (1..=3) nodes on loopback.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, None, "")
    }

    /// `n` nodes, in `net`'s namespaces if given; `extra` goes into every config.
    pub fn start_with(n: usize, net: Option<Netns>, extra: &str) -> Cluster {
        assert!((1..=REGIONS.len()).contains(&n));
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("meridian-cluster-")
            .tempdir()
            .unwrap();
        let certs = dir.path().join("certs");
        let regions: Vec<String> = REGIONS[..n].iter().map(|r| (*r).to_owned()).collect();
        meridian_cart_store::certs::write_dev_certs(&certs, &regions).unwrap();
        // (http_listen, peer address) per node.
        let addrs: Vec<(String, String)> = (0..n)
            .map(|i| match &net {
                Some(net) => (
                    format!("{}:8080", net.http_ip(i)),
                    format!("{}:7000", net.peer_ip(i)),
                ),
                None => (
                    format!("127.0.0.1:{}", free_port()),
                    format!("127.0.0.1:{}", free_udp_port()),
                ),
            })
            .collect();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir,
            net,
            started,
        };
        for i in 0..n {
            let region = REGIONS[i];
            let peers: Vec<(&str, &str)> = (0..n)
                .filter(|j| *j != i)
                .map(|j| (REGIONS[j], addrs[j].1.as_str()))
                .collect();
            let config = cluster.dir.path().join(format!("{region}.toml"));
            write_node_config(
                &config,
                region,
                i as u64 + 1,
                &cluster.dir.path().join(region),
                &addrs[i].0,
                &addrs[i].1,
                &certs,
                &peers,
                extra,
            );
            let netns = cluster.net.as_ref().map(|n| n.ns[i].clone());
            let node = Proc::spawn(
                region,
                i as u64 + 1,
                config,
                format!("http://{}", addrs[i].0),
                addrs[i].1.clone(),
                netns,
            );
            cluster.nodes.push(node);
        }
        cluster.say(&format!(
            "{n} nodes up ({})",
            if cluster.net.is_some() {
                "network namespaces"
            } else {
                "loopback"
            }
        ));
        cluster
    }

    /// A progress line on stderr, stamped with the time since the cluster started.
    pub fn say(&self, what: &str) {
        eprintln!("[{:>6.2}s] {what}", self.started.elapsed().as_secs_f64());
    }

    pub fn node(&self, i: usize) -> &Proc {
        &self.nodes[i]
    }

    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].kill9();
        self.say(&format!("kill -9 {}", self.nodes[i].region));
    }

    pub fn restart(&mut self, i: usize) {
        self.nodes[i].restart();
        self.say(&format!("{} restarted", self.nodes[i].region));
    }

    /// Every node's stderr tail and `/replication`, for a failure message.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let rep = n
                .try_replication()
                .map(|v| v.to_string())
                .unwrap_or_else(|e| format!("unavailable: {e}"));
            out += &format!(
                "\n===== {} (node {}) /replication: {rep}\n----- stderr (tail):\n{}",
                n.region,
                n.node_id,
                n.log_tail(6 << 10)
            );
        }
        out
    }

    /// Polls `check` every 50 ms until it returns `Ok`; panics after `within` with its last
    /// `Err`, naming `what`, and the diagnostics. Returns the time it took.
    pub fn wait_for<T>(
        &self,
        what: &str,
        within: Duration,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> (T, Duration) {
        let start = Instant::now();
        loop {
            match check() {
                Ok(t) => return (t, start.elapsed()),
                Err(e) if start.elapsed() > within => panic!(
                    "{what}: not within {:.1} s; last state: {e}\n{}",
                    within.as_secs_f64(),
                    self.diagnostics()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Which `(node, peer region)` links are not connected, per `/replication`.
    pub fn unconnected_links(&self) -> Vec<String> {
        let mut bad = Vec::new();
        for n in &self.nodes {
            match n.try_replication() {
                Err(e) => bad.push(format!("{}: /replication {e}", n.region)),
                Ok(v) => {
                    let peers = v["peers"].as_array().cloned().unwrap_or_default();
                    if peers.len() + 1 != self.nodes.len() {
                        bad.push(format!("{}: {} peers listed", n.region, peers.len()));
                    }
                    for p in peers {
                        if p["connected"] != true {
                            bad.push(format!("{} -> {}", n.region, p["region"]));
                        }
                    }
                }
            }
        }
        bad
    }

    /// Waits until every node reports every peer connected.
    pub fn wait_connected(&self, within: Duration) -> Duration {
        let ((), t) = self.wait_for("every peer link connected", within, || {
            let bad = self.unconnected_links();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(format!("not connected: {bad:?}"))
            }
        });
        self.say(&format!(
            "all peer links connected after {:.2} s",
            t.as_secs_f64()
        ));
        t
    }

    /// Every node's lines for each of `carts` (`nodes[i][cart]`), or why not.
    pub fn read_all(&self, nodes: &[usize], carts: &[String]) -> Result<Vec<Vec<Lines>>, String> {
        nodes
            .iter()
            .map(|&i| {
                carts
                    .iter()
                    .map(|c| self.nodes[i].try_cart(c))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect()
    }

    /// Whether `nodes` hold identical lines for every one of `carts`: the lines, or a
    /// description of the first differences.
    pub fn agree(&self, nodes: &[usize], carts: &[String]) -> Result<Vec<Lines>, String> {
        let all = self.read_all(nodes, carts)?;
        let mut diffs = Vec::new();
        for (k, cart) in carts.iter().enumerate() {
            if all.iter().any(|per_node| per_node[k] != all[0][k]) {
                let views: Vec<String> = nodes
                    .iter()
                    .zip(&all)
                    .map(|(&i, per_node)| format!("{}={:?}", self.nodes[i].region, per_node[k]))
                    .collect();
                diffs.push(format!("{cart}: {}", views.join(" ")));
            }
        }
        if diffs.is_empty() {
            Ok(all.into_iter().next().unwrap_or_default())
        } else {
            let n = diffs.len();
            diffs.truncate(5);
            Err(format!("{n} carts differ, e.g. {diffs:?}"))
        }
    }

    /// Waits until every node returns identical lines for every one of `carts`; returns the
    /// converged lines (in `carts` order) and the time it took.
    pub fn wait_converged(&self, carts: &[String], within: Duration) -> (Vec<Lines>, Duration) {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        let (l, t) = self.wait_for(
            &format!("{} carts identical on every node", carts.len()),
            within,
            || self.agree(&all, carts),
        );
        self.say(&format!(
            "{} carts identical on all {} nodes after {:.2} s",
            carts.len(),
            self.nodes.len(),
            t.as_secs_f64()
        ));
        (l, t)
    }

    /// Waits until every node's `/replication` `applied` progress (zero entries ignored) is
    /// the same: every node has applied every origin's every write.
    pub fn wait_caught_up(&self, within: Duration) -> Duration {
        let (_, t) = self.wait_for("every node's applied progress equal", within, || {
            let mut maps = Vec::new();
            for n in &self.nodes {
                let v = n.try_replication()?;
                let m: BTreeMap<String, u64> = v["applied"]
                    .as_object()
                    .ok_or("no applied")?
                    .iter()
                    .filter_map(|(k, s)| Some((k.clone(), s.as_u64()?)))
                    .filter(|(_, s)| *s > 0)
                    .collect();
                maps.push((n.region.clone(), m));
            }
            if maps.iter().all(|(_, m)| *m == maps[0].1) {
                Ok(())
            } else {
                Err(format!("applied: {maps:?}"))
            }
        });
        self.say(&format!(
            "every node applied every origin's writes after {:.2} s",
            t.as_secs_f64()
        ));
        t
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Already in the panic message for waits; for failed assertions print it here.
            eprintln!("cluster at panic:{}", self.diagnostics());
        }
        // Kill the nodes before their namespaces go.
        self.nodes.clear();
        self.net.take();
    }
}

/// Three network namespaces for the nodes: a bridge in the root namespace joins them on a
/// private /24 for peer (QUIC) traffic, and each has its own veth pair to the root
/// namespace for HTTP, so a node cut off from its peers still answers the test. Dropping it
/// deletes everything it made.
pub struct Netns {
    prefix: String,
    octet: u32,
    /// The namespaces' names, one per node.
    pub ns: Vec<String>,
    made_links: Vec<String>,
}

/// Runs `ip ARGS`: its stdout, or why it failed.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const NETNS_PREFIX: &str = "mrd";

impl Netns {
    /// Sets up `n` namespaces, or says why it cannot (not root, no `ip`, no netns or bridge
    /// support). Panics if a later step fails.
    pub fn setup(n: usize) -> Result<Netns, String> {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            })
            .unwrap_or_default();
        if uid != "0" {
            return Err(format!("uid {uid:?} is not root"));
        }
        Self::remove_stale();
        let pid = std::process::id();
        let prefix = format!("{NETNS_PREFIX}{pid}");
        let used = ip(&["-o", "-4", "addr", "show"])?;
        let mut octet = pid % 200;
        for _ in 0..200 {
            if !used.contains(&format!("10.231.{octet}."))
                && !used.contains(&format!("10.232.{octet}."))
            {
                break;
            }
            octet = (octet + 1) % 200;
        }
        let mut net = Netns {
            prefix: prefix.clone(),
            octet,
            ns: Vec::new(),
            made_links: Vec::new(),
        };
        // Whether this machine can do it at all: a namespace and a bridge. Past these two,
        // a failure is a test failure, not a reason to skip.
        let first = format!("{prefix}a");
        ip(&["netns", "add", &first])?;
        net.ns.push(first);
        let br = format!("{prefix}br");
        ip(&["link", "add", &br, "type", "bridge"])?;
        net.made_links.push(br.clone());
        let must = |args: &[&str]| {
            ip(args).unwrap_or_else(|e| panic!("setting up network namespaces: {e}"));
        };
        must(&["link", "set", &br, "up"]);
        for i in 0..n {
            let l = (b'a' + i as u8) as char;
            let ns = format!("{prefix}{l}");
            if i > 0 {
                must(&["netns", "add", &ns]);
                net.ns.push(ns.clone());
            }
            must(&["-n", &ns, "link", "set", "lo", "up"]);
            // Peer traffic: ns <-> bridge.
            let (p, q) = (format!("{prefix}p{l}"), format!("{prefix}q{l}"));
            must(&["link", "add", &p, "type", "veth", "peer", "name", &q]);
            net.made_links.push(p.clone());
            must(&["link", "set", &q, "netns", &ns]);
            must(&["link", "set", &p, "master", &br]);
            must(&["link", "set", &p, "up"]);
            let peer_cidr = format!("{}/24", net.peer_ip(i));
            must(&["-n", &ns, "addr", "add", &peer_cidr, "dev", &q]);
            must(&["-n", &ns, "link", "set", &q, "up"]);
            // HTTP: ns <-> root namespace, a /30 of its own.
            let (h, k) = (format!("{prefix}h{l}"), format!("{prefix}i{l}"));
            must(&["link", "add", &h, "type", "veth", "peer", "name", &k]);
            net.made_links.push(h.clone());
            must(&["link", "set", &k, "netns", &ns]);
            let root_cidr = format!("10.232.{octet}.{}/30", 4 * i + 1);
            must(&["addr", "add", &root_cidr, "dev", &h]);
            must(&["link", "set", &h, "up"]);
            let ns_cidr = format!("{}/30", net.http_ip(i));
            must(&["-n", &ns, "addr", "add", &ns_cidr, "dev", &k]);
            must(&["-n", &ns, "link", "set", &k, "up"]);
        }
        Ok(net)
    }

    /// Node `i`'s address on the peer bridge.
    pub fn peer_ip(&self, i: usize) -> String {
        format!("10.231.{}.{}", self.octet, i + 1)
    }

    /// Node `i`'s HTTP address (reachable from the root namespace).
    pub fn http_ip(&self, i: usize) -> String {
        format!("10.232.{}.{}", self.octet, 4 * i + 2)
    }

    fn bridge_port(&self, i: usize) -> String {
        format!("{}p{}", self.prefix, (b'a' + i as u8) as char)
    }

    /// Takes node `i`'s bridge port down: no peer traffic to or from it.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.bridge_port(i), "down"]).unwrap();
    }

    /// Brings node `i`'s bridge port back up.
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.bridge_port(i), "up"]).unwrap();
    }

    /// Deletes namespaces and links named `mrd<pid>…` whose process is gone (a test killed
    /// before its cleanup ran). Those of live processes (a concurrent run) are left alone.
    fn remove_stale() {
        let stale = |name: &str| -> bool {
            let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
                return false;
            };
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            !digits.is_empty()
                && digits.len() < rest.len()
                && !Path::new(&format!("/proc/{digits}")).exists()
        };
        if let Ok(list) = ip(&["netns", "list"]) {
            for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
                if stale(name) {
                    eprintln!("removing stale network namespace {name}");
                    let _ = ip(&["netns", "del", name]);
                }
            }
        }
        if let Ok(list) = ip(&["-o", "link", "show"]) {
            for l in list.lines() {
                let Some(name) = l.split(": ").nth(1) else {
                    continue;
                };
                let name = name.split('@').next().unwrap_or(name);
                if stale(name) {
                    eprintln!("removing stale link {name}");
                    let _ = ip(&["link", "del", name]);
                }
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.ns {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
        // Deleting a namespace deletes its ends of the veth pairs, and so the pairs; the
        // bridge is ours to delete.
        for link in &self.made_links {
            if ip(&["link", "show", link]).is_ok() {
                if let Err(e) = ip(&["link", "del", link]) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
    }
}
