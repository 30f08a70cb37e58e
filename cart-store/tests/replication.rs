//! Replication between real `cart-store serve` processes over real QUIC with mutual TLS:
//! convergence under concurrent writes in every region, a real partition and heal (network
//! namespaces, a link taken down), `kill -9` under load, and a node with a foreign CA kept
//! out. Every wait is bounded; the tests run one at a time (each starts its own cluster).
//!
//! Run with `--nocapture` to see the progress lines.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod common;

use common::cluster::{lines, write_node_config, Cluster, Lines, Netns, Op, Proc, REGIONS};

/// One cluster at a time: the machine may have two cores.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn carts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Concurrent writes in every region: 6 threads (two per region), 300 writes over 40 carts.
/// The 20 `sum-*` carts only take adds: once converged, every node holds exactly the sum of
/// the acknowledged adds per line. The 20 `mix-*` carts take adds, sets, removes and
/// clears from every region: every node ends with identical lines.
#[test]
fn concurrent_writes_in_every_region_converge_to_the_reference_sums() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    cluster.wait_connected(Duration::from_secs(20));

    const THREADS: usize = 6;
    const WRITES_PER_THREAD: usize = 50;
    let sum_carts = carts("sum", 20);
    let mix_carts = carts("mix", 20);
    let skus = ["apple", "bread", "cheese"];
    let expected: Mutex<BTreeMap<(String, String), u64>> = Mutex::new(BTreeMap::new());
    let mixed_ops = AtomicU64::new(0);
    let load = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (cluster, expected, mixed_ops) = (&cluster, &expected, &mixed_ops);
            let (sum_carts, mix_carts) = (&sum_carts, &mix_carts);
            s.spawn(move || {
                let node = cluster.node(t % 3);
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
                for w in 0..WRITES_PER_THREAD {
                    let sku = skus[rng.below(3) as usize];
                    let key = format!("conv-{t}-{w}");
                    let op = if rng.below(2) == 0 {
                        let cart = &sum_carts[rng.below(20) as usize];
                        Op::add(cart, sku, 1 + rng.below(5))
                    } else {
                        let cart = &mix_carts[rng.below(20) as usize];
                        mixed_ops.fetch_add(1, Ordering::Relaxed);
                        match rng.below(10) {
                            0..=3 => Op::add(cart, sku, 1 + rng.below(3)),
                            4..=6 => Op::set(cart, sku, rng.below(6)),
                            7..=8 => Op::remove(cart, sku),
                            _ => Op::clear(cart),
                        }
                    };
                    // The same Idempotency-Key on a retry: applied exactly once.
                    node.write_retrying(&op, &key, Duration::from_secs(20))
                        .unwrap_or_else(|e| panic!("{op:?} on {}: {e}", node.region));
                    if let Op::Add(cart, sku, q) = op {
                        *expected.lock().unwrap().entry((cart, sku)).or_default() += q;
                    }
                }
            });
        }
    });
    let expected = expected.into_inner().unwrap();
    cluster.say(&format!(
        "{} writes acknowledged in {:.2} s ({} on mixed carts, {} add-only lines)",
        THREADS * WRITES_PER_THREAD,
        load.elapsed().as_secs_f64(),
        mixed_ops.load(Ordering::Relaxed),
        expected.len()
    ));

    let all: Vec<String> = sum_carts.iter().chain(&mix_carts).cloned().collect();
    let (converged, took) = cluster.wait_converged(&all, Duration::from_secs(10));
    eprintln!(
        "converged {:.2} s after the last acknowledged write (bound 10 s)",
        took.as_secs_f64()
    );

    // The add-only carts: exactly the acknowledged adds, on every node (they agree).
    let mut model: BTreeMap<String, Lines> = BTreeMap::new();
    for ((cart, sku), q) in &expected {
        model
            .entry(cart.clone())
            .or_default()
            .insert(sku.clone(), *q);
    }
    for (cart, got) in sum_carts.iter().zip(&converged) {
        let want = model.get(cart).cloned().unwrap_or_default();
        assert_eq!(
            got, &want,
            "{cart}: converged lines are not the sum of the acknowledged adds"
        );
    }
    let nonempty_mixed = converged[sum_carts.len()..]
        .iter()
        .filter(|l| !l.is_empty())
        .count();
    eprintln!(
        "add-only carts equal the model on every node; {nonempty_mixed} of 20 mixed carts non-empty and identical everywhere"
    );
    cluster.wait_caught_up(Duration::from_secs(5));
}

/// A real partition: each node in its own network namespace, peers on a bridge, tokyo's
/// bridge port taken down. Both sides write; tokyo must not see the other side; after the
/// heal every node converges to CONTRACT.md's answers.
#[test]
fn a_real_partition_heals_to_the_contract_answers() {
    let _serial = serial();
    let net = match Netns::setup(3) {
        Ok(net) => net,
        Err(why) => {
            eprintln!("SKIP (not root / no netns): {why}");
            return;
        }
    };
    eprintln!("partition mode: netns");
    let cluster = Cluster::start_with(3, Some(net), "");
    cluster.wait_connected(Duration::from_secs(20));
    let [va, fr, tk] = [cluster.node(0), cluster.node(1), cluster.node(2)];
    let cart = "alice";
    let names = |cs: &[&str]| cs.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();

    // Before: everyone sees tea 3, pen 2, cup 2, book 1.
    tk.write(&Op::add(cart, "tea", 3));
    fr.write(&Op::add(cart, "pen", 2));
    va.write(&Op::add(cart, "cup", 2));
    va.write(&Op::add(cart, "book", 1));
    let (before, _) = cluster.wait_converged(&names(&[cart]), Duration::from_secs(10));
    let before_lines = lines(&[("book", 1), ("cup", 2), ("pen", 2), ("tea", 3)]);
    assert_eq!(before[0], before_lines);

    let net = cluster.net.as_ref().unwrap();
    net.cut(2);
    cluster.say("tokyo's bridge port is down");
    // Both sides write.
    assert_eq!(va.write(&Op::remove(cart, "tea")).get("tea"), None);
    assert_eq!(tk.write(&Op::add(cart, "tea", 2)).get("tea"), Some(&5));
    assert_eq!(fr.write(&Op::set(cart, "pen", 5)).get("pen"), Some(&5));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(tk.write(&Op::set(cart, "pen", 1)).get("pen"), Some(&1));
    assert_eq!(va.write(&Op::set(cart, "cup", 4)).get("cup"), Some(&4));
    assert_eq!(tk.write(&Op::add(cart, "cup", 1)).get("cup"), Some(&3));
    va.write(&Op::add("probe", "ping", 1));
    // The majority side still replicates: virginia and frankfurt agree, with frankfurt's
    // pen = 5 and virginia's remove and set.
    let ((), t) = cluster.wait_for(
        "virginia and frankfurt agreeing while tokyo is cut",
        Duration::from_secs(10),
        || {
            let l = cluster.agree(&[0, 1], &names(&[cart, "probe"]))?;
            let want = lines(&[("book", 1), ("cup", 4), ("pen", 5)]);
            if l[0] == want && l[1] == lines(&[("ping", 1)]) {
                Ok(())
            } else {
                Err(format!("{l:?}"))
            }
        },
    );
    cluster.say(&format!(
        "virginia and frankfurt agree after {:.2} s",
        t.as_secs_f64()
    ));
    // Tokyo sees none of it: the partition is real. Its QUIC connections stay open until
    // the idle timeout (10 s) notices the silence: wait for that too, so the heal goes
    // through reconnecting and Hello, not just retransmission.
    let tokyo_view = lines(&[("book", 1), ("cup", 3), ("pen", 1), ("tea", 5)]);
    let ((), t) = cluster.wait_for(
        "tokyo noticing both peer links dead",
        Duration::from_secs(30),
        || {
            assert_eq!(
                tk.cart(cart),
                tokyo_view,
                "tokyo saw the other side's writes through a downed link"
            );
            assert_eq!(tk.cart("probe"), Lines::new(), "tokyo saw virginia's probe");
            let rep = tk.try_replication()?;
            let up: Vec<String> = rep["peers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["connected"] == true)
                .map(|p| p["region"].to_string())
                .collect();
            if up.is_empty() {
                Ok(())
            } else {
                Err(format!("tokyo still connected to {up:?}"))
            }
        },
    );
    cluster.say(&format!(
        "tokyo's links timed out {:.2} s later; it saw none of virginia's and frankfurt's writes",
        t.as_secs_f64()
    ));
    assert_eq!(tk.cart(cart), tokyo_view);

    net.heal(2);
    cluster.say("tokyo's bridge port is up");
    cluster.wait_connected(Duration::from_secs(15));
    let (after, took) = cluster.wait_converged(&names(&[cart, "probe"]), Duration::from_secs(20));
    eprintln!(
        "converged {:.2} s after the heal: {:?}",
        took.as_secs_f64(),
        after[0]
    );
    let got = &after[0];
    assert_eq!(
        got.get("tea"),
        Some(&2),
        "add ‖ remove: tokyo's unseen add of 2 survives, the removed 3 stay removed"
    );
    assert_eq!(
        got.get("pen"),
        Some(&1),
        "set ‖ set: the later set (tokyo's pen = 1) wins"
    );
    assert_eq!(
        got.get("cup"),
        Some(&5),
        "set(4) ‖ add(1): the set fixes the base, the unseen add counts on top (4 + 1)"
    );
    assert_eq!(got.get("book"), Some(&1));
    assert_eq!(after[1], lines(&[("ping", 1)]));
    cluster.wait_caught_up(Duration::from_secs(10));
}

/// `kill -9` of frankfurt while it and virginia take writes; it restarts on the same data
/// dir and keeps taking them. Every acknowledged add (durability "process": the WAL
/// survives `kill -9`) ends up on all three nodes, and frankfurt catches up.
#[test]
fn kill_9_under_load_loses_no_acknowledged_write() {
    let _serial = serial();
    let mut cluster = Cluster::start(3);
    cluster.wait_connected(Duration::from_secs(20));
    let stop = AtomicBool::new(false);

    // Writers: each thread writes to its node only, retrying a failed write under the
    // same Idempotency-Key until acknowledged (frankfurt's writer rides out the crash).
    let (model, total) = std::thread::scope(|s| {
        let writers: Vec<_> = [0, 1]
            .map(|i| {
                let node = Proc::detached(&cluster.node(i).region, &cluster.node(i).base);
                let stop = &stop;
                s.spawn(move || {
                    let region = node.region.clone();
                    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let cart = format!("k9-{}", n % 10);
                        let op = Op::add(&cart, &region, 1);
                        let key = format!("k9-{region}-{n}");
                        node.write_retrying(&op, &key, Duration::from_secs(30))
                            .unwrap_or_else(|e| panic!("{op:?} on {region}: {e}"));
                        *acked.entry(cart).or_default() += 1;
                        n += 1;
                    }
                    (region, acked, n)
                })
            })
            .into();
        std::thread::sleep(Duration::from_millis(1500));
        cluster.kill9(1);
        std::thread::sleep(Duration::from_millis(700));
        cluster.restart(1);
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        let mut model: BTreeMap<String, Lines> = BTreeMap::new();
        let mut total = 0;
        for w in writers {
            let (region, acked, n) = w.join().expect("a writer thread panicked");
            eprintln!("{region}: {n} adds acknowledged");
            for (cart, q) in acked {
                total += q;
                model.entry(cart).or_default().insert(region.clone(), q);
            }
        }
        (model, total)
    });
    cluster.say(&format!(
        "{total} adds acknowledged (virginia and frankfurt, frankfurt killed and restarted mid-load)"
    ));
    assert!(total >= 20, "too few writes to mean anything: {total}");
    let carts: Vec<String> = model.keys().cloned().collect();
    let (converged, _) = cluster.wait_converged(&carts, Duration::from_secs(15));
    for (cart, got) in carts.iter().zip(&converged) {
        assert_eq!(
            got, &model[cart],
            "{cart}: not every acknowledged add survived (or one counted twice)"
        );
    }
    cluster.wait_caught_up(Duration::from_secs(10));
    cluster.wait_connected(Duration::from_secs(10));
}

/// A fourth node with certificates from another CA, calling itself tokyo, dials virginia
/// and frankfurt. It takes a write locally; the cluster never lets it in: no cart `evil`
/// anywhere, no connected peer with its node id, and replication among the real nodes goes
/// on.
#[test]
fn a_node_with_a_foreign_ca_is_kept_out() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    cluster.wait_connected(Duration::from_secs(20));

    // A certificate for "tokyo" signed by another CA. The node trusts the cluster's CA (its
    // certificate is public), so it accepts the cluster's server certificates and the
    // refusal must come from the cluster verifying the client certificate it presents.
    let foreign_certs = cluster.dir.path().join("foreign-certs");
    meridian_cart_store::certs::write_dev_certs(&foreign_certs, &["tokyo".into()]).unwrap();
    std::fs::copy(
        cluster.dir.path().join("certs/ca.pem"),
        foreign_certs.join("ca.pem"),
    )
    .unwrap();
    let config = cluster.dir.path().join("foreign.toml");
    let http = format!("127.0.0.1:{}", common::free_port());
    let peer = format!("127.0.0.1:{}", common::cluster::free_udp_port());
    let peers: Vec<(&str, &str)> = (0..2)
        .map(|i| (REGIONS[i], cluster.node(i).peer_addr.as_str()))
        .collect();
    write_node_config(
        &config,
        "tokyo",
        4,
        &cluster.dir.path().join("foreign-data"),
        &http,
        &peer,
        &foreign_certs,
        &peers,
        "",
    );
    let foreign = Proc::spawn("tokyo", 4, config, format!("http://{http}"), peer, None);
    cluster.say("foreign-CA node up");
    assert_eq!(
        foreign.write(&Op::add("evil", "malware", 7)),
        lines(&[("malware", 7)])
    );

    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(4) {
        for n in &cluster.nodes {
            assert_eq!(n.cart("evil"), Lines::new(), "{} has cart evil", n.region);
            let rep = n.replication();
            for p in rep["peers"].as_array().unwrap() {
                assert_ne!(
                    p["node_id"], 4,
                    "{} lists the foreign node as a peer: {p}",
                    n.region
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let frep = foreign.replication();
    assert!(
        frep["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["connected"] == false),
        "the foreign node connected to someone: {frep}\n{}",
        foreign.log_tail(4096)
    );
    cluster.say("4 s: no cart evil anywhere, the foreign node never connected");
    let flog = foreign.log_tail(64 << 10);
    eprintln!("foreign node's stderr (tail):\n{}", tail_lines(&flog, 2));
    assert!(
        flog.contains("handshake") && flog.contains("virginia") && flog.contains("frankfurt"),
        "the foreign node's handshakes with virginia and frankfurt were not refused:\n{flog}"
    );

    // The cluster is unaffected.
    cluster.wait_connected(Duration::from_secs(10));
    cluster.node(0).write(&Op::add("after-evil", "tea", 1));
    let (l, _) = cluster.wait_converged(&["after-evil".into()], Duration::from_secs(10));
    assert_eq!(l[0], lines(&[("tea", 1)]));
    for n in &cluster.nodes {
        assert_eq!(n.cart("evil"), Lines::new(), "{} has cart evil", n.region);
    }
}

fn tail_lines(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}
