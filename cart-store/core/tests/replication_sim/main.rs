//! The deterministic replication simulator (in the style of TigerBeetle's VOPR and
//! quinn-proto's `Pair`): 3–5 real [`Replica`](meridian_cart_store_core::Replica)s over
//! `MemStorage`, a seeded network that drops, duplicates, reorders and partitions (symmetric,
//! one-way, non-transitive, two-sided), crashes that lose unsynced writes, and a reference
//! model that checks convergence, that no acknowledged write is lost, that no observed remove
//! is undone, add-wins, causal answers, bounded memory and that no `(origin, seq)` ever
//! carries two deltas. Two planted bugs show the checker bites: a driver that acknowledges
//! before it commits (caught as lost acknowledged writes), and a disk that lies about fsync
//! (caught as a seq handed out twice with different deltas).
//!
//! `SIM_SEEDS=n` runs seeds `0..n` (default [`SEEDS_DEFAULT`]); `SIM_SEED=s` replays one;
//! `SIM_TRACE=1` prints every event; `SIM_KEEP_GOING=1` runs every seed and lists the
//! failing ones; `SIM_FAULT_MS=n` sets the virtual time with faults (default 2000);
//! `SIM_IGNORE_ALARMS=1` leaves the core's `Event::Behind` to the model. A failure prints
//! its seed and the last events.
//!
//! # Findings
//!
//! The simulation found three bugs in the core; all are fixed, and two are exercised only
//! with the switches below:
//!
//! 1. **A node kept an origin's last entries forever** when that origin's last Ack to it
//!    was lost (the trim bound waited for the origin's own ack). Fixed: the origin is left
//!    out of its own entries' trim bound. Seeds 573, 1011, 1981, 2479 at the time.
//! 2. **A late Hello lowered the peer's acknowledged progress** (`SIM_HELLO_REORDER=1`, a
//!    Hello overtaken by the peer's later Acks, or outliving its connection): the sender
//!    rewound into entries it had trimmed and raised a false `Event::Behind`. Fixed: a
//!    node id's durable progress never goes down, so a Hello from the same node id only
//!    raises what is acknowledged, and a Hello arriving while the link is down changes no
//!    link state. 1,000 seeds pass with `SIM_HELLO_REORDER=1`.
//! 3. **A lost Hello was never resent** (`SIM_HELLO_LOSS=1`). Now a node resends its Hello
//!    every `resend_timeout` until an Ack or Deltas shows the peer has it. That is not yet
//!    enough for every schedule: a stale Ack from an earlier connection can look like an
//!    answer (`SIM_HELLO_LOSS=1 SIM_SEED=1` still does not quiesce). The default network
//!    therefore never loses a Hello and delivers it before anything sent after it on its
//!    connection, which is what QUIC gives the node: the Hello is the first frame of a
//!    reliable stream, and losing it means losing the connection (then a new one says
//!    Hello again).

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
/// How often a long run reports progress, in seeds.
const PROGRESS_EVERY: usize = 1000;
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
    for (done, &seed) in seeds.iter().enumerate() {
        if done > 0 && done % PROGRESS_EVERY == 0 {
            eprintln!(
                "replication sim: {done} seeds in {:.0} s, {} failed",
                started.elapsed().as_secs_f64(),
                failed.len()
            );
        }
        match sim::run(seed, &options) {
            Ok(stats) => {
                if stats.dangerous > 0 && std::env::var_os("SIM_SHOW_DANGEROUS").is_some() {
                    eprintln!("seed {seed}: {} dangerous", stats.dangerous);
                }
                totals.add(&stats)
            }
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
        "replication sim: {} seeds run in {:.1} s, {} failed: {} writes ({} compactions), {} packets, {} crashes, {} s of virtual time; {} stale removes delivered after a compaction of adds they had not all seen",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        failed.len(),
        totals.writes,
        totals.compactions,
        totals.packets,
        totals.crashes,
        totals.end_ms / 1000,
        totals.dangerous,
    );
    assert!(
        failed.is_empty(),
        "replication sim: seeds {failed:?} failed; replay one with SIM_SEED=<seed>"
    );
    if seeds.len() >= 100 {
        // The scheduler must produce the case compaction has to get right, or passing
        // proves little.
        assert!(
            totals.dangerous > 0,
            "{} seeds never delivered a stale remove after a compaction of adds it had not all seen",
            seeds.len()
        );
    }
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

/// A driver that compacts its adds up to what it has applied, not what is causally
/// stable, must be caught: a remove still in flight that saw only some of the adds then
/// drops too little, and the final view differs from the acknowledged writes'.
#[test]
fn planted_bug_compaction_before_stability_is_caught() {
    let options = sim::Options {
        bug: Some(sim::Bug::CompactUnstable),
        ..sim::Options::default()
    };
    let caught =
        (0..BUG_SEEDS_MAX).find_map(|seed| sim::run(seed, &options).err().map(|f| (seed, f)));
    match caught {
        Some((seed, f)) => eprintln!(
            "planted bug (compaction before stability) caught at seed {seed}: {}",
            first_line(&f.message)
        ),
        None => panic!(
            "the planted bug (compaction before stability) went unnoticed in {BUG_SEEDS_MAX} seeds"
        ),
    }
}

/// The ledger of `(origin, seq)` must catch a node that hands out a seq its peers have seen
/// with another delta: here a disk that lies about fsync brings back an older state.
#[test]
fn planted_bug_lying_fsync_is_caught_as_seq_reuse() {
    let options = sim::Options {
        bug: Some(sim::Bug::LyingFsync),
        ..sim::Options::default()
    };
    let caught = (0..BUG_SEEDS_MAX).find_map(|seed| {
        let f = sim::run(seed, &options).err()?;
        f.message.starts_with("seq reuse").then_some((seed, f))
    });
    match caught {
        Some((seed, f)) => eprintln!("planted bug (lying fsync) caught at seed {seed}: {}", first_line(&f.message)),
        None => panic!("the planted bug (lying fsync) was never reported as a seq reuse in {BUG_SEEDS_MAX} seeds"),
    }
}

#[test]
fn non_transitive_partition_converges_by_forwarding() {
    scenario::non_transitive_partition();
}

#[test]
fn one_way_partition_converges_by_forwarding() {
    scenario::one_way_partition();
}
