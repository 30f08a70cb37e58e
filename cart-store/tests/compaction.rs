//! Causal-stability compaction across three real `cart-store serve` processes: a line that
//! every region keeps adding to stays small, so a busy cart never reaches
//! `409 cart_too_large`; with compaction off, the same load does.
//!
//! `COMPACTION_ADDS` (default 4,000) sets the number of adds of one sku, spread round-robin
//! over the three regions; issue 13's figure comes from `COMPACTION_ADDS=10000`:
//!
//! ```text
//! COMPACTION_ADDS=10000 cargo test -p meridian-cart-store --test compaction -- --nocapture
//! ```

use std::time::{Duration, Instant};

mod common;

use common::cluster::{Cluster, Op};
use meridian_cart_store::rocks::RocksStorage;
use meridian_cart_store_core::{codec, Cf, Storage};

const CART: &str = "busy";
const SKU: &str = "tea";
/// Small enough that the adds, kept one dot each (about 6 bytes), pass it well before the
/// end; large enough for the adds that are not yet stable under this load (a few hundred
/// per region: the stability lag is a few round trips plus a compaction interval).
const CART_BYTES_MAX: usize = 16 * 1024;

fn adds_wanted() -> usize {
    std::env::var("COMPACTION_ADDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000)
}

/// Each region adds `n / 3` of `SKU` from its own thread; returns the refusals.
fn add_everywhere(cluster: &Cluster, n: usize) -> Vec<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let node = cluster.node(i);
                let handle = common::cluster::Proc::detached(&node.region, &node.base);
                s.spawn(move || {
                    let mut refused = Vec::new();
                    for _ in (i..n).step_by(3) {
                        if let Err(e) = handle.try_write(&Op::add(CART, SKU, 1), None) {
                            refused.push(e);
                        }
                    }
                    refused
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer thread"))
            .collect()
    })
}

/// The stored cart's encoded bytes and the line's entries, read from a stopped node's
/// data dir.
fn stored(cluster: &Cluster, region: &str) -> (usize, usize) {
    let db = RocksStorage::open(&cluster.dir.path().join(region)).expect("open data dir");
    let bytes = db
        .get(Cf::Carts, CART.as_bytes())
        .expect("read")
        .expect("the cart is stored");
    let cart = codec::decode_cart(&bytes).expect("decodes");
    (bytes.len(), cart.entries(SKU).len())
}

#[test]
fn a_busy_line_stays_small_in_every_region() {
    let n = adds_wanted();
    let mut cluster = Cluster::start_with(
        3,
        None,
        &format!(
            "cart_bytes_max = {CART_BYTES_MAX}\ncompaction_interval_ms = 50\n\
             compaction_line_adds_min = 2\n"
        ),
    );
    cluster.wait_connected(Duration::from_secs(30));
    let started = Instant::now();
    let refused = add_everywhere(&cluster, n);
    cluster.say(&format!(
        "{n} adds over 3 regions in {:.2} s, {} refused",
        started.elapsed().as_secs_f64(),
        refused.len()
    ));
    assert!(
        refused.is_empty(),
        "with compaction, no add may be refused: {:?}",
        &refused[..refused.len().min(3)]
    );
    let carts = vec![CART.to_owned()];
    let (views, took) = cluster.wait_converged(&carts, Duration::from_secs(60));
    assert_eq!(views[0], common::cluster::lines(&[(SKU, n as u64)]));
    cluster.say(&format!("converged in {:.2} s", took.as_secs_f64()));
    // Quiescent: every region's queue drained (everything stable, everything compacted).
    let (drained, _) = cluster.wait_for("compaction queues drain", Duration::from_secs(30), || {
        let r: Vec<_> = (0..3).map(|i| cluster.node(i).replication()).collect();
        let queued: u64 = r
            .iter()
            .map(|r| r["compaction"]["queued"].as_u64().unwrap_or(u64::MAX))
            .sum();
        let writes: Vec<u64> = r
            .iter()
            .map(|r| r["compaction"]["writes"].as_u64().unwrap_or(0))
            .collect();
        if queued == 0 {
            Ok(writes)
        } else {
            Err(format!(
                "{queued} adds queued; compaction writes {writes:?}"
            ))
        }
    });
    cluster.say(&format!("compaction writes per region: {drained:?}"));
    // Let the last compactions replicate, then stop and look at what is stored.
    cluster.wait_converged(&carts, Duration::from_secs(30));
    cluster.wait_caught_up(Duration::from_secs(30));
    for i in 0..3 {
        cluster.kill9(i);
    }
    for region in ["virginia", "frankfurt", "tokyo"] {
        let (bytes, entries) = stored(&cluster, region);
        cluster.say(&format!(
            "{region}: {CART} stored in {bytes} bytes, {entries} entries for {SKU} after {n} adds"
        ));
        assert!(
            entries <= 3,
            "{region}: {entries} entries for {SKU}: not compacted"
        );
        assert!(bytes < 200, "{region}: {bytes} bytes");
    }
}

/// The control: without compaction the same load fills the cart, so the test above
/// would fail if compaction did nothing.
#[test]
fn without_compaction_the_same_line_fills_the_cart() {
    let n = adds_wanted();
    let cluster = Cluster::start_with(
        3,
        None,
        &format!("cart_bytes_max = {CART_BYTES_MAX}\ncompaction_interval_ms = 0\n"),
    );
    cluster.wait_connected(Duration::from_secs(30));
    let refused = add_everywhere(&cluster, n);
    cluster.say(&format!(
        "compaction off: {} of {n} adds refused",
        refused.len()
    ));
    assert!(
        refused.iter().any(|e| e.contains("cart_too_large")),
        "expected 409 cart_too_large without compaction, got {:?}",
        &refused[..refused.len().min(3)]
    );
}

/// Stability needs every region: with tokyo down, virginia's adds wait in the compaction
/// queue and `/replication` shows for how long; once tokyo is back they are compacted.
#[test]
fn a_region_away_stalls_compaction_visibly_and_it_resumes() {
    let mut cluster = Cluster::start_with(
        3,
        None,
        "compaction_interval_ms = 50\ncompaction_line_adds_min = 2\n",
    );
    cluster.wait_connected(Duration::from_secs(30));
    const TOKYO: usize = 2;
    cluster.kill9(TOKYO);
    for _ in 0..20 {
        cluster.node(0).write(&Op::add(CART, SKU, 1));
    }
    std::thread::sleep(Duration::from_millis(1_500));
    let r = cluster.node(0).replication();
    let (queued, oldest_ms) = (
        r["compaction"]["queued"].as_u64().unwrap(),
        r["compaction"]["oldest_ms"].as_u64().unwrap(),
    );
    cluster.say(&format!(
        "tokyo down: virginia has {queued} adds queued, the oldest {oldest_ms} ms old; stable {}",
        r["stable"]
    ));
    assert!(queued >= 19, "{queued} queued");
    assert!(oldest_ms >= 1_000, "stall of {oldest_ms} ms");
    let metrics = reqwest::blocking::get(cluster.node(0).url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cart_store_compaction_oldest_ms ") && !l.ends_with(" 0")),
        "the stall shows in the metric"
    );
    cluster.restart(TOKYO);
    let (_, took) = cluster.wait_for("virginia's queue drains", Duration::from_secs(30), || {
        let r = cluster.node(0).replication();
        match r["compaction"]["queued"].as_u64() {
            Some(0) => Ok(()),
            q => Err(format!("{q:?} queued")),
        }
    });
    cluster.say(&format!(
        "tokyo back: compaction resumed, queue empty after {:.2} s",
        took.as_secs_f64()
    ));
    let carts = vec![CART.to_owned()];
    let (views, _) = cluster.wait_converged(&carts, Duration::from_secs(30));
    assert_eq!(views[0], common::cluster::lines(&[(SKU, 20)]));
}
