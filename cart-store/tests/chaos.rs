//! Chaos with real partitions: three `cart-store serve` processes, each in its own network
//! namespace, joined pairwise by veth links that go down and up (`ip link set`), under a
//! steady load whose every acknowledged write is recorded. `cargo xtask chaos` runs it
//! longer; `cargo xtask test` runs the short version (as root).
//!
//! Scenarios, in order: a symmetric partition (tokyo cut off from both), a non-transitive
//! one (virginia–tokyo down, both still linked to frankfurt), a flapping link, `kill -9`
//! of a node during a partition (restarted while still cut off), and a node restarted with
//! a wiped data dir and a new node id (anti-entropy repairs it). During the symmetric
//! partition, the contract's cart table is played on dedicated carts from both sides.
//!
//! At the end, after healing everything, it checks: every node holds the same carts,
//! within a stated bound; no acknowledged write is lost (every acknowledged add is there,
//! with its quantity, unless its own thread removed or re-set it later); nothing removed
//! comes back; and each row of the cart table holds.
//!
//! The workload is exactly checkable: each load thread owns its skus (`s<thread>-<n>`),
//! writes to one region at a time, and only removes or re-sets a sku whose add that region
//! acknowledged to it, so its own later writes observed it. An operation that was not
//! acknowledged (a timeout, a killed node) is uncertain: either outcome is accepted.
//!
//! `CHAOS_SECS` (default 4) is how long each scenario runs; `CHAOS_SEED` replays a run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::cluster::{lines_of, write_node_config, Lines, Op, Proc, REGIONS};
use common::mesh::Mesh;
use meridian_testkit::SplitMix64 as Rng;
use serde_json::Value;

/// After the last heal, every node must agree within this: a QUIC connection whose link
/// was down longer than its idle timeout (10 s) is replaced after at most the reconnect
/// backoff cap (500 ms here); deltas in flight are resent after 500 ms; anti-entropy needs
/// a few round trips. 30 s is that with a wide margin for a loaded 2-core machine.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(30);

/// What one load thread knows of one of its skus: the outcomes still possible.
#[derive(Clone, Debug, Default)]
struct SkuFate {
    cart: String,
    /// Quantities the sku may end with (0: absent).
    possible: Vec<u64>,
    /// Removed by an acknowledged remove, and not added again.
    removed: bool,
}

#[derive(Default)]
struct Record {
    skus: BTreeMap<String, SkuFate>,
    acked: u64,
    uncertain: u64,
    per_node: [u64; 3],
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn say(start: Instant, what: &str) {
    eprintln!("[{:>6.2}s] {what}", start.elapsed().as_secs_f64());
}

/// One load thread: until `stop`, writes to `node()` (a region it may switch), recording
/// each outcome in `rec`.
fn load_thread(
    t: usize,
    seed: u64,
    bases: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    rec: Arc<Mutex<Record>>,
) {
    let mut rng = Rng::new(seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut mine: Vec<String> = Vec::new();
    let mut n = 0u64;
    let node = t % 3;
    let proc_ = Proc::detached(REGIONS[node], &bases[node]);
    while !stop.load(Ordering::Relaxed) {
        let choice = rng.below(10);
        let key = format!("chaos-{seed}-{t}-{n}");
        n += 1;
        let (op, sku, quantity) = if choice < 6 || mine.is_empty() {
            let sku = format!("s{t}-{n}");
            let cart = format!("load-{}", rng.below(12));
            let q = 1 + rng.below(3);
            rec.lock().unwrap().skus.insert(
                sku.clone(),
                SkuFate {
                    cart: cart.clone(),
                    possible: vec![0],
                    removed: false,
                },
            );
            (Op::add(&cart, &sku, q), sku, q)
        } else {
            let sku = mine[rng.below(mine.len() as u64) as usize].clone();
            let cart = rec.lock().unwrap().skus[&sku].cart.clone();
            if choice < 8 {
                let q = 1 + rng.below(5);
                (Op::set(&cart, &sku, q), sku, q)
            } else {
                (Op::remove(&cart, &sku), sku, 0)
            }
        };
        let result = proc_.write_retrying(&op, &key, Duration::from_secs(8));
        let mut r = rec.lock().unwrap();
        let fate = r.skus.get_mut(&sku).expect("recorded above");
        match result {
            Ok(_) => {
                fate.possible = vec![quantity];
                fate.removed = quantity == 0;
                if quantity == 0 {
                    mine.retain(|s| *s != sku);
                } else if !mine.contains(&sku) {
                    mine.push(sku);
                }
                r.acked += 1;
                r.per_node[node] += 1;
            }
            Err(_) => {
                // Applied or not: both outcomes stay possible, and the thread leaves the
                // sku alone from now on (a later write of it might not have observed it).
                if !fate.possible.contains(&quantity) {
                    fate.possible.push(quantity);
                }
                fate.removed = false;
                mine.retain(|s| *s != sku);
                r.uncertain += 1;
            }
        }
        drop(r);
        std::thread::sleep(Duration::from_millis(rng.below(15)));
    }
}

/// The nodes, their configs and the mesh.
struct Chaos {
    mesh: Mesh,
    nodes: Vec<Proc>,
    dir: tempfile::TempDir,
    start: Instant,
    next_id: u64,
}

impl Chaos {
    /// Every node's peer links and the namespaces' links and routes, for a failure.
    fn dump(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            if let Ok(r) = n.try_replication() {
                for p in r["peers"].as_array().into_iter().flatten() {
                    eprintln!(
                        "{} -> {}: connected {} last_contact_ms_ago {} acked {} inflight {}",
                        n.region,
                        p["region"],
                        p["connected"],
                        p["last_contact_ms_ago"],
                        p["acked"],
                        p["inflight_bytes"]
                    );
                }
            }
            for what in [&["link"][..], &["-4", "addr"][..], &["route"][..]] {
                let out = std::process::Command::new("ip")
                    .args(["-n", &self.mesh.ns[i]])
                    .args(what)
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                eprintln!("{} ip {what:?}:\n{out}", n.region);
            }
            eprintln!("{} log tail:\n{}", n.region, n.log_tail(3000));
        }
    }

    fn node(&self, i: usize) -> &Proc {
        &self.nodes[i]
    }

    fn say(&self, what: &str) {
        say(self.start, what);
    }

    /// Waits until every node returns the same lines for every cart in `carts`.
    fn wait_converged(
        &self,
        carts: &[String],
        within: Duration,
    ) -> Result<(Vec<Lines>, Duration), String> {
        let t = Instant::now();
        let mut last = String::new();
        while t.elapsed() < within {
            match self.agree(carts) {
                Ok(l) => return Ok((l, t.elapsed())),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("not converged within {within:?}: {last}"))
    }

    fn agree(&self, carts: &[String]) -> Result<Vec<Lines>, String> {
        let mut out = Vec::new();
        for c in carts {
            let first = self.node(0).try_cart(c)?;
            for n in &self.nodes[1..] {
                let other = n.try_cart(c)?;
                if other != first {
                    return Err(format!(
                        "{c}: {} {first:?} vs {} {other:?}",
                        REGIONS[0], n.region
                    ));
                }
            }
            out.push(first);
        }
        Ok(out)
    }
}

fn call(proc_: &Proc, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = common::client().request(method, proc_.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req
        .send()
        .unwrap_or_else(|e| panic!("{path} on {}: {e}", proc_.region));
    let status = r.status();
    let v: Value = r.json().unwrap_or(Value::Null);
    assert_eq!(status, 200, "{path} on {}: {v}", proc_.region);
    v
}

#[test]
fn chaos_with_real_partitions_loses_nothing_and_converges() {
    let mesh = match Mesh::setup() {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIP: chaos needs root and iproute2 (network namespaces): {why}");
            return;
        }
    };
    let secs = env_u64("CHAOS_SECS", 4);
    let seed = env_u64(
        "CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            % 1_000_000,
    );
    let start = Instant::now();
    say(
        start,
        &format!("chaos: seed {seed} (replay with CHAOS_SEED={seed}), {secs} s per scenario"),
    );
    let mut rng = Rng::new(seed.wrapping_add(1));
    let dir = tempfile::Builder::new()
        .prefix("meridian-chaos-")
        .tempdir()
        .unwrap();
    let certs = dir.path().join("certs");
    let regions: Vec<String> = REGIONS.iter().map(|r| (*r).to_owned()).collect();
    meridian_cart_store::certs::write_dev_certs(&certs, &regions).unwrap();
    let mut nodes = Vec::new();
    for (i, region) in REGIONS.iter().enumerate() {
        let peers: Vec<(String, String)> = (0..3)
            .filter(|j| *j != i)
            .map(|j| {
                (
                    REGIONS[j].to_owned(),
                    format!("{}:7000", mesh.peer_ip(j, i)),
                )
            })
            .collect();
        let peers: Vec<(&str, &str)> = peers
            .iter()
            .map(|(r, a)| (r.as_str(), a.as_str()))
            .collect();
        let config = dir.path().join(format!("{region}.toml"));
        let http = format!("{}:8080", mesh.http_ip(i));
        write_node_config(
            &config,
            region,
            i as u64 + 1,
            &dir.path().join(region),
            &http,
            "0.0.0.0:7000",
            &certs,
            &peers,
            "replication_log_retention_entries = 200\n",
        );
        nodes.push(Proc::spawn(
            region,
            i as u64 + 1,
            config,
            format!("http://{http}"),
            String::new(),
            Some(mesh.ns[i].clone()),
        ));
    }
    let mut chaos = Chaos {
        mesh,
        nodes,
        dir,
        start,
        next_id: 4,
    };
    chaos.say("3 nodes up, each in its own network namespace, linked pairwise");
    let bases: Arc<Vec<String>> = Arc::new(chaos.nodes.iter().map(|n| n.base.clone()).collect());
    // Wait until every link is up.
    let t = Instant::now();
    loop {
        let ok = chaos.nodes.iter().all(|n| {
            n.try_replication().is_ok_and(|r| {
                r["peers"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().all(|p| p["connected"] == true))
            })
        });
        if ok {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "links did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Mutex::new(Record::default()));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let (bases, stop, rec) = (bases.clone(), stop.clone(), rec.clone());
            std::thread::spawn(move || load_thread(t, seed, bases, stop, rec))
        })
        .collect();
    let scenario = Duration::from_secs(secs);
    let mut timeline: Vec<(String, Duration)> = Vec::new();
    let converge = |chaos: &Chaos, what: &str, timeline: &mut Vec<(String, Duration)>| {
        // Under load the carts keep changing, so converged means caught up: every node has
        // applied every write each region had made when the heal came.
        let t = Instant::now();
        // Each region's own progress now. A node busy catching up may be slow to answer
        // (the writer answers /replication between rounds): ask again within the bound.
        let target: Vec<(String, u64)> = chaos
            .nodes
            .iter()
            .map(|n| loop {
                match n.try_replication() {
                    Ok(r) => {
                        let id = r["node_id"].as_u64().unwrap().to_string();
                        let seq = r["applied"][&id].as_u64().unwrap_or(0);
                        break (id, seq);
                    }
                    Err(e) if t.elapsed() < CONVERGENCE_BOUND => {
                        chaos.say(&format!("{}: /replication: {e}; asking again", n.region));
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => panic!("{what}: {} /replication: {e}", n.region),
                }
            })
            .collect();
        loop {
            let behind: Vec<String> = chaos
                .nodes
                .iter()
                .filter_map(|n| {
                    let r = n.try_replication().ok()?;
                    let lag: Vec<String> = target
                        .iter()
                        .filter(|(o, s)| r["applied"][o.as_str()].as_u64().unwrap_or(0) < *s)
                        .map(|(o, s)| format!("{o}<{s}"))
                        .collect();
                    (!lag.is_empty()).then(|| format!("{}: {lag:?}", n.region))
                })
                .collect();
            if behind.is_empty() {
                break;
            }
            if t.elapsed() >= CONVERGENCE_BOUND {
                chaos.dump();
                panic!("{what}: not caught up within {CONVERGENCE_BOUND:?}: {behind:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let took = t.elapsed();
        chaos.say(&format!(
            "{what}: every node caught up {:.2} s after the heal",
            took.as_secs_f64()
        ));
        timeline.push((what.to_owned(), took));
    };

    // 1. Symmetric partition: tokyo cut off. Meanwhile, the cart table from both sides.
    std::thread::sleep(scenario / 2);
    let (va, fr, to) = (0, 1, 2);
    let table_setup = [
        ("t-add-remove", "x", 1u64),
        ("t-set-add", "x", 1),
        ("t-set-remove", "x", 1),
        ("t-clear-add", "y", 1),
        ("t-checkout-add", "y", 2),
    ];
    for (cart, sku, q) in table_setup {
        chaos.node(va).write(&Op::add(cart, sku, q));
    }
    let t = Instant::now();
    while chaos
        .agree(
            &table_setup
                .iter()
                .map(|(c, _, _)| (*c).to_owned())
                .collect::<Vec<_>>(),
        )
        .is_err()
    {
        assert!(
            t.elapsed() < CONVERGENCE_BOUND,
            "table setup did not replicate"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    chaos.mesh.isolate(to);
    chaos.say("symmetric partition: tokyo cut off from virginia and frankfurt");
    let (v, k) = (chaos.node(va), chaos.node(to));
    v.write(&Op::add("t-add-add", "x", 1));
    k.write(&Op::add("t-add-add", "x", 1));
    k.write(&Op::remove("t-add-remove", "x"));
    v.write(&Op::add("t-add-remove", "x", 2));
    v.write(&Op::set("t-set-set", "x", 3));
    std::thread::sleep(Duration::from_millis(20));
    k.write(&Op::set("t-set-set", "x", 5));
    v.write(&Op::set("t-set-add", "x", 3));
    k.write(&Op::add("t-set-add", "x", 1));
    v.write(&Op::set("t-set-remove", "x", 3));
    k.write(&Op::remove("t-set-remove", "x"));
    v.write(&Op::clear("t-clear-add"));
    k.write(&Op::add("t-clear-add", "x", 1));
    let order = call(
        v,
        reqwest::Method::POST,
        "/carts/t-checkout-add/checkout",
        None,
    );
    k.write(&Op::add("t-checkout-add", "x", 1));
    std::thread::sleep(scenario);
    chaos.mesh.heal_all();
    chaos.say("healed");
    converge(&chaos, "symmetric partition", &mut timeline);

    // 2. Non-transitive: virginia–tokyo down, both still linked to frankfurt.
    chaos.mesh.cut(va, to);
    chaos.say("non-transitive partition: virginia–tokyo down, frankfurt linked to both");
    std::thread::sleep(scenario);
    // Frankfurt forwards: tokyo catches up on virginia's writes while the link is still down.
    converge(
        &chaos,
        "non-transitive partition (still cut, forwarded)",
        &mut timeline,
    );
    chaos.mesh.heal(va, to);

    // 3. A flapping link: frankfurt–tokyo down and up every 300–700 ms.
    chaos.say("flapping frankfurt–tokyo");
    let until = Instant::now() + scenario;
    let mut flaps = 0;
    while Instant::now() < until {
        chaos.mesh.cut(fr, to);
        std::thread::sleep(Duration::from_millis(300 + rng.below(400)));
        chaos.mesh.heal(fr, to);
        std::thread::sleep(Duration::from_millis(300 + rng.below(400)));
        flaps += 1;
    }
    chaos.say(&format!("{flaps} flaps"));
    converge(&chaos, "flapping link", &mut timeline);

    // 4. kill -9 during a partition: frankfurt cut off, killed, restarted still cut off.
    chaos.mesh.isolate(fr);
    chaos.say("frankfurt cut off");
    std::thread::sleep(scenario / 2);
    chaos.nodes[fr].kill9();
    chaos.say("kill -9 frankfurt (cut off)");
    std::thread::sleep(Duration::from_millis(500));
    chaos.nodes[fr].restart();
    chaos.say("frankfurt restarted, still cut off");
    std::thread::sleep(scenario / 2);
    chaos.mesh.heal_all();
    chaos.say("healed");
    converge(&chaos, "kill -9 during a partition", &mut timeline);

    // 5. A wiped data dir and a new node id: anti-entropy repairs it. The load pauses while
    // virginia is replaced (its acknowledged writes must have reached the others first: a
    // wiped disk loses whatever only it held, which is not what this checks).
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    converge(&chaos, "load stopped", &mut timeline);
    let new_id = chaos.next_id;
    chaos.next_id += 1;
    {
        let node = &mut chaos.nodes[va];
        node.kill9();
        let config = std::fs::read_to_string(&node.config).unwrap();
        std::fs::remove_dir_all(chaos.dir.path().join(REGIONS[va])).unwrap();
        let old = format!("node_id = {}", node.node_id);
        std::fs::write(
            &node.config,
            config.replace(&old, &format!("node_id = {new_id}")),
        )
        .unwrap();
        node.node_id = new_id;
        node.restart();
    }
    chaos.say(&format!(
        "virginia replaced: wiped data dir, node id {new_id}"
    ));
    let t = Instant::now();
    loop {
        let d: Vec<String> = chaos
            .nodes
            .iter()
            .filter_map(|n| n.try_replication().ok())
            .map(|r| r["digest"].as_str().unwrap_or("").to_owned())
            .collect();
        if d.len() == 3 && d.iter().all(|x| *x == d[0]) {
            break;
        }
        assert!(
            t.elapsed() < CONVERGENCE_BOUND,
            "the replaced node did not converge: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    chaos.say(&format!(
        "replaced node holds every cart {:.2} s later",
        t.elapsed().as_secs_f64()
    ));
    timeline.push(("wiped data dir, new node id".into(), t.elapsed()));

    // The checks.
    let rec = rec.lock().unwrap();
    let mut carts: Vec<String> = (0..12).map(|i| format!("load-{i}")).collect();
    let table = [
        "t-add-add",
        "t-add-remove",
        "t-set-set",
        "t-set-add",
        "t-set-remove",
        "t-clear-add",
        "t-checkout-add",
    ];
    carts.extend(table.iter().map(|c| (*c).to_owned()));
    let (lines, _) = chaos
        .wait_converged(&carts, CONVERGENCE_BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    let by_cart: BTreeMap<&str, &Lines> =
        carts.iter().map(String::as_str).zip(lines.iter()).collect();
    let mut lost = Vec::new();
    let mut resurrected = Vec::new();
    for (sku, fate) in &rec.skus {
        let have = by_cart[fate.cart.as_str()].get(sku).copied().unwrap_or(0);
        if !fate.possible.contains(&have) {
            if fate.removed {
                resurrected.push(format!("{}/{sku} = {have}", fate.cart));
            } else {
                lost.push(format!(
                    "{}/{sku} = {have}, expected one of {:?}",
                    fate.cart, fate.possible
                ));
            }
        }
    }
    let row = |cart: &str| by_cart[cart].clone();
    let l = |pairs: &[(&str, u64)]| -> Lines {
        pairs.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect()
    };
    let rows = [
        ("add ‖ add sums", row("t-add-add") == l(&[("x", 2)])),
        (
            "add ‖ remove keeps the unseen add",
            row("t-add-remove") == l(&[("x", 2)]),
        ),
        (
            "set ‖ set: the later HLC wins, everywhere",
            row("t-set-set") == l(&[("x", 5)]),
        ),
        ("set ‖ add adds on top", row("t-set-add") == l(&[("x", 4)])),
        (
            "set ‖ remove: the set survives",
            row("t-set-remove") == l(&[("x", 3)]),
        ),
        (
            "clear ‖ add keeps only the add",
            row("t-clear-add") == l(&[("x", 1)]),
        ),
        (
            "checkout ‖ add: the order has what it saw, the add stays",
            row("t-checkout-add") == l(&[("x", 1)]) && lines_of(&order) == l(&[("y", 2)]),
        ),
    ];
    eprintln!("\nchaos summary (seed {seed}):");
    eprintln!(
        "  operations acknowledged: {} (virginia {}, frankfurt {}, tokyo {}); uncertain: {}",
        rec.acked, rec.per_node[0], rec.per_node[1], rec.per_node[2], rec.uncertain
    );
    eprintln!("  skus checked: {}", rec.skus.len());
    for (what, took) in &timeline {
        eprintln!(
            "  {what:<48} converged in {:>6.2} s (bound {} s)",
            took.as_secs_f64(),
            CONVERGENCE_BOUND.as_secs()
        );
    }
    eprintln!("  acknowledged writes lost: {}", lost.len());
    eprintln!("  resurrections: {}", resurrected.len());
    for (what, ok) in &rows {
        eprintln!(
            "  table row {what:<56} {}",
            if *ok { "ok" } else { "FAILED" }
        );
    }
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(resurrected.is_empty(), "resurrected: {resurrected:?}");
    for (what, ok) in rows {
        assert!(
            ok,
            "table row {what}: {:?}",
            carts
                .iter()
                .zip(&lines)
                .filter(|(c, _)| c.starts_with("t-"))
                .collect::<Vec<_>>()
        );
    }
    assert!(rec.acked > 0, "no load was acknowledged");
}
