//! Fixed scenarios.

use crate::network::{Faults, Partition};
use crate::sim::{config_for, Options, Sim};
use meridian_cart_store_core::replication::TRIM_INTERVAL;
use meridian_cart_store_core::{Durability, WriteRequest};
use meridian_testkit::SplitMix64 as Rng;
use std::time::Duration;

const DELAY_MS: u64 = 10;
const BATCH_WINDOW_MS: u64 = 5;
const FORWARD_AFTER_MS: u64 = 300;

fn three_nodes() -> Sim {
    let specs = (0..3)
        .map(|i| {
            let mut config = config_for(i, 3, Durability::Fsync);
            config.batch_window = Duration::from_millis(BATCH_WINDOW_MS);
            config.forward_after = Duration::from_millis(FORWARD_AFTER_MS);
            config.resend_timeout = Duration::from_millis(200);
            crate::cluster::NodeSpec { config, skew_ms: 0 }
        })
        .collect();
    Sim::new(
        Rng::new(0),
        specs,
        Faults::none(DELAY_MS),
        Options::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn quantity(sim: &Sim, node: usize, cart: &str, sku: &str) -> u32 {
    let r = sim.cluster.nodes[node].replica.as_ref().expect("up");
    let view = r.node().read(cart).expect("read");
    view.lines
        .iter()
        .find(|l| l.sku == sku)
        .map_or(0, |l| l.quantity)
}

/// Runs until `node` shows `sku` in `cart`; returns how long it took, in ms.
fn time_to_see(sim: &mut Sim, node: usize, cart: &str, sku: &str, limit_ms: u64) -> u64 {
    let start_ms = sim.now_ms;
    while quantity(sim, node, cart, sku) == 0 {
        assert!(
            sim.now_ms - start_ms <= limit_ms,
            "r{node} did not see {cart}/{sku} within {limit_ms} ms\n{}",
            sim.trace.dump()
        );
        let next_ms = sim.now_ms + 1;
        sim.run_until(next_ms)
            .unwrap_or_else(|e| panic!("{e}\n{}", sim.trace.dump()));
    }
    sim.now_ms - start_ms
}

/// r0–r2 cut both ways while r0–r1 and r1–r2 are up: r1 must forward each side's writes
/// to the other within `forward_after`, plus the wait for r1's next timer (the trim
/// interval), plus a few hops of delay, batch window and commit.
pub fn non_transitive_partition() {
    let mut sim = three_nodes();
    sim.run_until(200).unwrap_or_else(|e| panic!("{e}"));
    sim.add_partition(Partition::Cut(0, 2));
    sim.run_until(300).unwrap_or_else(|e| panic!("{e}"));
    let hop_ms = DELAY_MS + BATCH_WINDOW_MS + 5;
    let bound_ms = FORWARD_AFTER_MS + TRIM_INTERVAL.as_millis() as u64 + 4 * hop_ms;
    for (from, to, sku) in [(0, 2, "s0"), (2, 0, "s1")] {
        sim.submit(from, WriteRequest::add("c0", sku, 1).expect("valid"));
        let took_ms = time_to_see(&mut sim, to, "c0", sku, bound_ms);
        eprintln!("non-transitive partition: r{from}'s write reached r{to} in {took_ms} ms (bound {bound_ms} ms)");
    }
    sim.heal_and_check()
        .unwrap_or_else(|e| panic!("{e}\n{}", sim.trace.dump()));
}
