//! Anti-entropy between real `cart-store serve` processes: a new empty region, a region
//! offline past the log's retention, and a replaced node (wiped data dir, new node id) all
//! converge to the full data set, and the bytes shipped are measured against shipping
//! everything.
//!
//! `AE_CARTS` (default 3,000) sets how many carts virginia and frankfurt hold; the closing
//! figures of issue 12 come from `AE_CARTS=100000`:
//!
//! ```text
//! AE_CARTS=100000 cargo test -p meridian-cart-store --test anti_entropy -- --nocapture
//! ```

use std::time::{Duration, Instant};

mod common;

use common::cluster::{Cluster, Op};
use serde_json::Value;

const TOKYO: usize = 2;

fn carts_wanted() -> usize {
    std::env::var("AE_CARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

/// Writes `ops` spread over `threads` threads to node `i` of `cluster`, each acknowledged.
fn write_all(cluster: &Cluster, i: usize, ops: Vec<Op>, threads: usize) {
    let node = cluster.node(i);
    let chunk = ops.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for part in ops.chunks(chunk) {
            let handle = common::cluster::Proc::detached(&node.region, &node.base);
            s.spawn(move || {
                for op in part {
                    handle.write(op);
                }
            });
        }
    });
}

/// `/replication`'s view of `peer` at node `i`: its anti-entropy counters.
fn ae_of(cluster: &Cluster, i: usize, peer: &str) -> Value {
    let r = cluster.node(i).replication();
    r["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["region"] == peer)
        .map(|p| p["anti_entropy"].clone())
        .unwrap_or(Value::Null)
}

fn counter(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Bytes of cart states virginia and frankfurt have shipped to tokyo so far, and the
/// carts.
fn shipped_to_tokyo(cluster: &Cluster) -> (u64, u64) {
    let mut bytes = 0;
    let mut carts = 0;
    for i in 0..2 {
        let ae = ae_of(cluster, i, "tokyo");
        bytes += counter(&ae, "bytes_sent");
        carts += counter(&ae, "carts_sent");
    }
    (bytes, carts)
}

/// Bytes of comparison messages between tokyo and the others so far, both ways.
fn compared_with_tokyo(cluster: &Cluster) -> u64 {
    let mut bytes = 0;
    for i in 0..2 {
        bytes += counter(&ae_of(cluster, i, "tokyo"), "compare_bytes_sent");
    }
    for peer in ["virginia", "frankfurt"] {
        bytes += counter(&ae_of(cluster, TOKYO, peer), "compare_bytes_sent");
    }
    bytes
}

/// Waits until every node's digest root is the same: they hold the same carts.
fn wait_same_digest(cluster: &Cluster, within: Duration) -> Duration {
    let (_, t) = cluster.wait_for("every node's digest root equal", within, || {
        let roots: Vec<(String, String, u64)> = cluster
            .nodes
            .iter()
            .map(|n| {
                let r = n.try_replication()?;
                Ok((
                    n.region.clone(),
                    r["digest"].as_str().unwrap_or("").to_owned(),
                    r["carts"].as_u64().unwrap_or(0),
                ))
            })
            .collect::<Result<_, String>>()?;
        if roots.iter().all(|r| r.1 == roots[0].1) {
            Ok(())
        } else {
            Err(format!("roots: {roots:?}"))
        }
    });
    t
}

/// Every node's log lines about anti-entropy since the last call (for the record).
fn ae_log(cluster: &Cluster) {
    for n in &cluster.nodes {
        for line in n.log_tail(256 << 10).lines() {
            if line.contains("anti-entropy") {
                eprintln!(
                    "    {}: {}",
                    n.region,
                    line.chars().take(300).collect::<String>()
                );
            }
        }
    }
}

/// Replaces tokyo's node: kill -9, wipe its data dir, a new node id (ids are never
/// reused), start.
fn replace_tokyo(cluster: &mut Cluster, new_id: u64) {
    let node = &mut cluster.nodes[TOKYO];
    node.kill9();
    let config = std::fs::read_to_string(&node.config).unwrap();
    let data_dir = config
        .lines()
        .find_map(|l| l.strip_prefix("data_dir = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("data_dir in the config");
    std::fs::remove_dir_all(&data_dir).unwrap();
    let old = format!("node_id = {}", node.node_id);
    assert!(config.contains(&old), "{config}");
    std::fs::write(
        &node.config,
        config.replace(&old, &format!("node_id = {new_id}")),
    )
    .unwrap();
    node.node_id = new_id;
    node.restart();
}

/// The three cases of issue 12 §3 on one cluster, with a retention of 100 log entries:
/// 1. tokyo is new and empty while the others hold `AE_CARTS` carts: it gets all of them;
/// 2. tokyo is offline while 2% of the carts change (past retention): it gets about the
///    carts that changed, not all of them;
/// 3. tokyo's disk is replaced (wiped, new node id): it gets everything again.
#[test]
fn new_far_behind_and_replaced_regions_converge_by_anti_entropy() {
    let n = carts_wanted();
    let mut cluster = Cluster::start_with(
        3,
        None,
        "replication_log_retention_entries = 100\nanti_entropy_bytes_per_sec = 67108864\n",
    );
    cluster.wait_connected(Duration::from_secs(20));
    // tokyo is "new": it starts empty after the others have the data.
    cluster.kill9(TOKYO);
    let ops: Vec<Op> = (0..n)
        .map(|i| {
            Op::add(
                &format!("cart-{i:06}"),
                ["tea", "pen", "cup"][i % 3],
                1 + (i % 5) as u64,
            )
        })
        .collect();
    let t = Instant::now();
    let mut va = Vec::new();
    let mut fr = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        if i % 2 == 0 {
            va.push(op);
        } else {
            fr.push(op);
        }
    }
    std::thread::scope(|s| {
        s.spawn(|| write_all(&cluster, 0, va, 4));
        s.spawn(|| write_all(&cluster, 1, fr, 4));
    });
    cluster.say(&format!(
        "{n} carts written in virginia and frankfurt in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let bound = Duration::from_secs(60 + n as u64 / 500);

    // 1. A new region.
    cluster.restart(TOKYO);
    let t = Instant::now();
    wait_same_digest(&cluster, bound);
    let new_compare = compared_with_tokyo(&cluster);
    let new_secs = t.elapsed().as_secs_f64();
    cluster.wait_caught_up(Duration::from_secs(30));
    let (full_bytes, full_carts) = shipped_to_tokyo(&cluster);
    ae_log(&cluster);
    let tokyo = cluster.node(TOKYO).replication();
    assert_eq!(tokyo["carts"].as_u64(), Some(n as u64), "{tokyo}");
    // One repairer at a time (`AeBusy`): each cart ships once, give or take a session
    // restarted after a lost message.
    assert!(
        (n as u64..n as u64 * 5 / 4).contains(&full_carts),
        "shipped {full_carts} carts for {n}"
    );
    cluster.say(&format!(
        "new region: {full_carts} carts, {full_bytes} bytes of states and {new_compare} bytes \
         of digests shipped, converged in {new_secs:.2} s"
    ));
    for c in ["cart-000000", "cart-000001", &format!("cart-{:06}", n - 1)] {
        assert_eq!(cluster.node(TOKYO).cart(c), cluster.node(0).cart(c), "{c}");
    }

    // 2. Offline past retention while 2% of the carts change.
    cluster.kill9(TOKYO);
    // The comparison counters of the restarted tokyo start over: count them from here.
    let others_compare: u64 = (0..2)
        .map(|i| counter(&ae_of(&cluster, i, "tokyo"), "compare_bytes_sent"))
        .sum();
    let changed = (n / 50).max(150);
    let ops: Vec<Op> = (0..changed)
        .map(|i| Op::add(&format!("cart-{:06}", (i * 7919) % n), "extra", 1))
        .collect();
    write_all(&cluster, 0, ops, 4);
    // Retention trims every 100 ms: wait until virginia no longer holds what tokyo needs,
    // or tokyo would simply catch up from the log.
    cluster.wait_for(
        "virginia's log trimmed to its retention",
        Duration::from_secs(20),
        || {
            let entries = cluster.node(0).replication()["log_entries"]
                .as_u64()
                .unwrap_or(u64::MAX);
            if entries <= 100 {
                Ok(())
            } else {
                Err(format!("{entries} log entries"))
            }
        },
    );
    cluster.restart(TOKYO);
    let t = Instant::now();
    wait_same_digest(&cluster, bound);
    let behind_secs = t.elapsed().as_secs_f64();
    cluster.wait_caught_up(Duration::from_secs(30));
    let (bytes, carts) = shipped_to_tokyo(&cluster);
    let (part_bytes, part_carts) = (bytes - full_bytes, carts - full_carts);
    let part_compare = compared_with_tokyo(&cluster) - others_compare;
    let part_total = part_bytes + part_compare;
    cluster.say(&format!(
        "offline past retention: {changed} carts changed; {part_carts} carts: {part_bytes} bytes \
         of states + {part_compare} of digests = {part_total} bytes, {:.1}% of shipping \
         every state ({full_bytes}); converged in {behind_secs:.2} s",
        100.0 * part_total as f64 / full_bytes as f64
    ));
    assert!(
        part_carts >= changed as u64 && part_carts < (changed as u64) * 3 + 50,
        "shipped {part_carts} carts for {changed} changed"
    );
    assert!(part_total < full_bytes / 2, "{part_total} of {full_bytes}");
    let c = format!("cart-{:06}", 7919 % n);
    assert_eq!(cluster.node(TOKYO).cart(&c).get("extra"), Some(&1), "{c}");

    // 3. A replaced node: wiped, new node id.
    replace_tokyo(&mut cluster, 13);
    let t = Instant::now();
    wait_same_digest(&cluster, bound);
    let replaced_secs = t.elapsed().as_secs_f64();
    cluster.wait_caught_up(Duration::from_secs(30));
    let (bytes, carts) = shipped_to_tokyo(&cluster);
    cluster.say(&format!(
        "replaced node: {} carts, {} bytes shipped, converged in {replaced_secs:.2} s",
        carts - full_carts - part_carts,
        bytes - full_bytes - part_bytes
    ));
    let tokyo = cluster.node(TOKYO).replication();
    assert_eq!(tokyo["node_id"].as_u64(), Some(13));
    assert_eq!(tokyo["carts"].as_u64(), Some(n as u64), "{tokyo}");
    // The old node id's progress is known to the new node (its writes arrived as state).
    // And the new node's writes replicate as usual.
    let w = cluster
        .node(TOKYO)
        .write(&Op::add("after-replace", "tea", 2));
    assert_eq!(w.get("tea"), Some(&2));
    cluster.wait_converged(&["after-replace".to_owned()], Duration::from_secs(20));
    println!(
        "AE figures: carts={n} new_region_bytes={full_bytes} new_region_secs={new_secs:.2} \
         new_region_digest_bytes={new_compare} behind_changed={changed} \
         behind_state_bytes={part_bytes} behind_digest_bytes={part_compare} \
         behind_secs={behind_secs:.2} \
         replaced_secs={replaced_secs:.2}"
    );
}
