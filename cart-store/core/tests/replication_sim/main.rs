//! The deterministic replication simulator (in the style of TigerBeetle's VOPR and
//! quinn-proto's `Pair`): 3–5 real [`Replica`](meridian_cart_store_core::Replica)s over
//! `MemStorage`, a seeded network that drops, duplicates, reorders and partitions (symmetric,
//! one-way, non-transitive), crashes that lose unsynced writes, and a reference model that
//! checks convergence, that no acknowledged write is lost, that no observed remove is undone,
//! add-wins, causal answers, bounded memory and that no `(origin, seq)` ever carries two
//! deltas.
//!
//! `SIM_SEEDS=n` runs seeds `0..n` (default [`SEEDS_DEFAULT`]); `SIM_SEED=s` replays one;
//! `SIM_TRACE=1` prints every event; `SIM_KEEP_GOING=1` runs every seed and lists the
//! failing ones; `SIM_FAULT_MS=n` sets the virtual time with faults (default 2000). A failure prints its seed and the last events.

mod cluster;
mod model;
mod network;
mod scenario;
mod sim;
mod trace;
mod workload;

use sim::env_u64;

use std::time::Instant;

/// Seeds run by default (CI, debug build).
const SEEDS_DEFAULT: u64 = 500;
/// Seeds the planted bug gets to be caught in.
const BUG_SEEDS_MAX: u64 = 200;

/// The seeds to run: `SIM_SEED` alone, or `0..SIM_SEEDS`.
fn seeds() -> Vec<u64> {
    if let Some(seed) = env_u64("SIM_SEED") {
        eprintln!("replication sim: replaying SIM_SEED={seed}");
        return vec![seed];
    }
    let count = env_u64("SIM_SEEDS").unwrap_or(SEEDS_DEFAULT).max(1);
    eprintln!(
        "replication sim: seeds 0..={}; replay one with SIM_SEED=<seed>",
        count - 1
    );
    (0..count).collect()
}

#[test]
fn replicas_converge_and_lose_nothing_under_faults() {
    let started = Instant::now();
    let options = sim::Options::default();
    let keep_going = std::env::var_os("SIM_KEEP_GOING").is_some();
    let (mut totals, mut failed) = (sim::Stats::default(), Vec::new());
    let seeds = seeds();
    for &seed in &seeds {
        match sim::run(seed, &options) {
            Ok(stats) => totals.add(&stats),
            Err(f) if keep_going => {
                eprintln!("replication sim: seed {seed} failed: {}", first_line(&f.message));
                failed.push(seed);
            }
            Err(f) => panic!(
                "replication sim: seed {seed} failed: {}\nlast events:\n{}replay with SIM_SEED={seed} (SIM_TRACE=1 prints every event)",
                f.message, f.trace
            ),
        }
    }
    eprintln!(
        "replication sim: {} seeds run in {:.1} s, {} failed: {} writes, {} packets, {} crashes, {} s of virtual time",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        failed.len(),
        totals.writes,
        totals.packets,
        totals.crashes,
        totals.end_ms / 1000
    );
    assert!(
        failed.is_empty(),
        "replication sim: seeds {failed:?} failed; replay one with SIM_SEED=<seed>"
    );
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The checker must catch a driver that acknowledges entries before committing them, by
/// the model alone (the core's own `Behind` alarm is not counted).
#[test]
fn planted_bug_ack_before_commit_is_caught() {
    let options = sim::Options {
        bug: Some(sim::Bug::AckBeforeCommit),
        fail_on_alarm: false,
        ..sim::Options::default()
    };
    let caught =
        (0..BUG_SEEDS_MAX).find_map(|seed| sim::run(seed, &options).err().map(|f| (seed, f)));
    match caught {
        Some((seed, f)) => eprintln!(
            "planted bug (ack before commit) caught at seed {seed}: {}",
            f.message
        ),
        None => {
            panic!("the planted bug (ack before commit) went unnoticed in {BUG_SEEDS_MAX} seeds")
        }
    }
}

#[test]
fn non_transitive_partition_converges_by_forwarding() {
    scenario::non_transitive_partition();
}
