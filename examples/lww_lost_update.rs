//! # Lost update: last-writer-wins by wall clock drops a write that came *after* the winner
//!
//! Two regions, virginia and frankfurt, each hold a copy of one customer's cart and
//! replicate every write to the other. Frankfurt's clock runs 300 ms behind (`--skew-ms`).
//! The cart is stored three ways, side by side:
//!
//! * **LWW by wall clock**: the whole cart is one value, and the copy with the later
//!   wall-clock timestamp wins. This is how Cassandra resolves a cell and how Redis
//!   Active-Active resolves a string.
//! * **LWW by HLC**: the same register, stamped by a hybrid logical clock that advances
//!   past every timestamp it receives (`meridian::clocks::Hlc`).
//! * **the cart CRDT**: `meridian::crdt::Cart`, which merges adds instead of picking a
//!   winner.
//!
//! Act 1 is the story of the issue: the customer adds a book in virginia; the write
//! replicates; then, routed to frankfurt, the customer sees the book and adds a pen. The
//! pen is causally *after* the book, but frankfurt's clock stamps it 300 ms earlier, so LWW
//! by wall clock keeps the book-only cart everywhere: **the pen is lost**. The HLC stamp of
//! the pen is above the book's (frankfurt's HLC saw the book's stamp), so HLC LWW keeps
//! both, and so does the CRDT.
//!
//! Act 2 shows what HLC does *not* fix: two truly concurrent adds (two devices, before
//! either write replicates). Any last-writer-wins register keeps one of them; only the
//! CRDT keeps both.
//!
//! What to look for: the "lost" row of each final table.
//!
//! ```text
//! cargo run --release --example lww_lost_update
//! cargo run --release --example lww_lost_update -- --skew-ms 50    # skew below the gap: nothing lost
//! cargo run --release --example lww_lost_update -- --gap-ms 400    # the customer waits longer than the skew
//! ```
//!
//! The last line, starting `SUMMARY`, states what each method lost, for scripts and tests.

mod common;

use anyhow::{ensure, Result};
use clap::Parser;
use common::{hlc_rel, rel, T0_MS};
use meridian::clocks::{DriftingClock, Hlc, HlcTimestamp, ManualClock, PhysicalClock, ReplicaId};
use meridian::crdt::{Cart, Lattice, LwwRegister};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::time::Duration;

const REGIONS: [&str; 2] = ["virginia", "frankfurt"];

/// Replay a cart stored as LWW-by-wall-clock, LWW-by-HLC and as a CRDT across two regions.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// How far frankfurt's clock is behind virginia's, in ms (negative: ahead).
    #[arg(long, default_value_t = 300, allow_negative_numbers = true)]
    skew_ms: i64,
    /// One-way replication delay between the regions, in ms.
    #[arg(long, default_value_t = 80)]
    latency_ms: u64,
    /// Act 1: how long after the first add the customer adds again in the other region,
    /// in ms. It must exceed --latency-ms, so that the first add has replicated and the
    /// second is causally after it.
    #[arg(long, default_value_t = 150)]
    gap_ms: u64,
    /// Random seed: picks the items of act 2 (act 1 is always a book, then a pen); the
    /// same seed gives the same output.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// One customer action: at `at_ms` (true time), in `region`, add one `sku`.
struct Op {
    at_ms: u64,
    region: usize,
    sku: String,
}

/// A write on its way to the other region: the deltas of all three stores.
struct Replication {
    arrive_ms: u64,
    to: usize,
    wall: LwwRegister<Vec<String>>,
    hlc: LwwRegister<Vec<String>>,
    cart: Cart,
}

struct Region {
    id: ReplicaId,
    clock: DriftingClock,
    hlc: Hlc<DriftingClock>,
    wall_lww: LwwRegister<Vec<String>>,
    hlc_lww: LwwRegister<Vec<String>>,
    cart: Cart,
}

/// What one act ended with.
struct Outcome {
    added: BTreeSet<String>,
    /// Final contents per method (wall LWW, HLC LWW, CRDT), the same in both regions.
    finals: [BTreeSet<String>; 3],
}

impl Outcome {
    fn lost(&self, method: usize) -> Vec<String> {
        self.added
            .difference(&self.finals[method])
            .cloned()
            .collect()
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.skew_ms.unsigned_abs() <= 3_600_000,
        "--skew-ms must be within an hour"
    );
    ensure!(
        args.gap_ms > args.latency_ms,
        "--gap-ms ({}) must exceed --latency-ms ({}): the second add must come after the \
         first has replicated, or it is not causally after it",
        args.gap_ms,
        args.latency_ms
    );
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let items = ["mug", "tea", "lamp", "sock", "map", "pin", "kite", "soap"];
    let mut pick = || items[rng.gen_range(0..items.len())];
    let (first, second) = ("book", "pen");
    let (third, mut fourth) = (pick(), pick());
    while fourth == third {
        fourth = pick();
    }

    println!(
        "lww_lost_update: frankfurt's clock is {} ms {} virginia's; replication takes {} ms; \
         seed {}.",
        args.skew_ms.unsigned_abs(),
        if args.skew_ms >= 0 {
            "behind"
        } else {
            "ahead of"
        },
        args.latency_ms,
        args.seed
    );
    println!("Times are ms since the start, as true time and as each region's clock reads it.\n");

    println!(
        "Act 1: the customer adds {first} in virginia, then ({} ms later, after it has \
         replicated) adds {second} in frankfurt.\n",
        args.gap_ms
    );
    let act1 = play(
        &args,
        &[
            Op {
                at_ms: 0,
                region: 0,
                sku: first.into(),
            },
            Op {
                at_ms: args.gap_ms,
                region: 1,
                sku: second.into(),
            },
        ],
    )?;

    println!(
        "\nAct 2: two devices, truly concurrent: {third} in virginia and {fourth} in frankfurt \
         at the same moment, before either write replicates.\n"
    );
    let act2 = play(
        &args,
        &[
            Op {
                at_ms: 0,
                region: 0,
                sku: third.into(),
            },
            Op {
                at_ms: 0,
                region: 1,
                sku: fourth.into(),
            },
        ],
    )?;

    println!(
        "\nWall-clock LWW can lose a write that came causally after the winner (act 1). HLC \
         stamps respect causality, so that cannot happen, but a register still keeps only \
         one of two concurrent writes (act 2). The cart CRDT merges both in every case."
    );
    let names = |v: Vec<String>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(",")
        }
    };
    println!(
        "SUMMARY act1_added={first},{second} act1_wall_lww_lost={} act1_hlc_lww_lost={} \
         act1_crdt_lost={} act2_wall_lww_lost={} act2_hlc_lww_lost={} act2_crdt_lost={}",
        names(act1.lost(0)),
        names(act1.lost(1)),
        names(act1.lost(2)),
        names(act2.lost(0)),
        names(act2.lost(1)),
        names(act2.lost(2)),
    );
    Ok(())
}

fn show(v: Option<&Vec<String>>) -> String {
    match v {
        Some(items) if !items.is_empty() => items.join(", "),
        _ => "(empty)".into(),
    }
}

fn show_cart(c: &Cart) -> String {
    let lines = c.lines();
    if lines.is_empty() {
        return "(empty)".into();
    }
    lines
        .iter()
        .map(|(sku, n)| {
            if *n == 1 {
                sku.clone()
            } else {
                format!("{sku}×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn stamp(reg: &LwwRegister<Vec<String>>, hlc: bool) -> String {
    match reg.stamp() {
        Some((ts, _)) if hlc => hlc_rel(ts),
        Some((ts, _)) => rel(ts.physical_ms()),
        None => "-".into(),
    }
}

/// Plays the customer's operations and the replication they cause, narrating each step.
fn play(args: &Args, ops: &[Op]) -> Result<Outcome> {
    let truth = ManualClock::new(T0_MS);
    let mut regions: Vec<Region> = [0, -args.skew_ms]
        .iter()
        .enumerate()
        .map(|(i, &offset)| {
            let clock = DriftingClock::new(truth.clone(), offset, 0);
            Region {
                id: ReplicaId(i as u64 + 1),
                // A generous max offset: this example is about ordering, not refusal.
                hlc: Hlc::new(clock.clone(), Duration::from_secs(3600)),
                clock,
                wall_lww: LwwRegister::new(),
                hlc_lww: LwwRegister::new(),
                cart: Cart::default(),
            }
        })
        .collect();

    println!(
        "{:>6}  {:<10} {:>10} {:>10}  what happens",
        "true", "region", "wall stamp", "HLC stamp"
    );
    let mut in_flight: Vec<Replication> = Vec::new();
    let mut next_op = 0;
    loop {
        // The next thing to happen: a customer op or an arriving replication (ops first on
        // ties, so that "concurrent" really means neither had seen the other).
        let op_at = ops.get(next_op).map(|o| o.at_ms);
        let rep = in_flight
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| r.arrive_ms)
            .map(|(i, r)| (i, r.arrive_ms));
        match (op_at, rep) {
            (Some(at), r) if r.is_none_or(|(_, ra)| at <= ra) => {
                truth.set(T0_MS + at);
                let op = &ops[next_op];
                next_op += 1;
                let region = &mut regions[op.region];
                let seen = show_cart(&region.cart);
                let wall_now = region.clock.now_ms();
                let hlc_now = region.hlc.now();
                // Read-modify-write of the whole cart, as a register-backed store does.
                let mut wall_items = region.wall_lww.get().cloned().unwrap_or_default();
                wall_items.push(op.sku.clone());
                let mut hlc_items = region.hlc_lww.get().cloned().unwrap_or_default();
                hlc_items.push(op.sku.clone());
                let wall =
                    region
                        .wall_lww
                        .set(region.id, HlcTimestamp::new(wall_now, 0), wall_items);
                let hlc = region.hlc_lww.set(region.id, hlc_now, hlc_items);
                let cart = region
                    .cart
                    .add(region.id, &op.sku, 1)
                    .expect("a fresh replica has dots to spare");
                println!(
                    "{:>6}  {:<10} {:>10} {:>10}  customer sees {seen}, adds {}",
                    rel(T0_MS + at),
                    REGIONS[op.region],
                    rel(wall_now),
                    hlc_rel(hlc_now),
                    op.sku
                );
                in_flight.push(Replication {
                    arrive_ms: at + args.latency_ms,
                    to: 1 - op.region,
                    wall,
                    hlc,
                    cart,
                });
            }
            (_, Some((i, at))) => {
                truth.set(T0_MS + at);
                let r = in_flight.swap_remove(i);
                let region = &mut regions[r.to];
                let before = (stamp(&region.wall_lww, false), stamp(&region.hlc_lww, true));
                if let Some((ts, _)) = r.hlc.stamp() {
                    region.hlc.update(ts)?;
                }
                let incoming = (stamp(&r.wall, false), stamp(&r.hlc, true));
                region.wall_lww.merge(&r.wall);
                region.hlc_lww.merge(&r.hlc);
                region.cart.merge(&r.cart);
                let verdict = |before: &str, incoming: &str, after: String| {
                    if before == "-" || after == incoming && before != incoming {
                        "takes it"
                    } else {
                        "keeps its own"
                    }
                };
                println!(
                    "{:>6}  {:<10} {:>10} {:>10}  gets {}'s write: wall LWW {}, HLC LWW {}",
                    rel(T0_MS + at),
                    REGIONS[r.to],
                    incoming.0,
                    incoming.1,
                    REGIONS[1 - r.to],
                    verdict(&before.0, &incoming.0, stamp(&region.wall_lww, false)),
                    verdict(&before.1, &incoming.1, stamp(&region.hlc_lww, true)),
                );
            }
            _ => break,
        }
    }

    let set = |v: Option<&Vec<String>>| v.cloned().unwrap_or_default().into_iter().collect();
    let finals = |r: &Region| -> [BTreeSet<String>; 3] {
        [
            set(r.wall_lww.get()),
            set(r.hlc_lww.get()),
            r.cart.lines().into_iter().map(|(sku, _)| sku).collect(),
        ]
    };
    let (a, b) = (finals(&regions[0]), finals(&regions[1]));
    ensure!(a == b, "the regions did not converge: {a:?} vs {b:?}");
    println!(
        "\n{:<12} {:<22} {:<22} {:<22}",
        "", "LWW by wall clock", "LWW by HLC", "cart CRDT"
    );
    for r in &regions {
        println!(
            "{:<12} {:<22} {:<22} {:<22}",
            REGIONS[(r.id.0 - 1) as usize],
            show(r.wall_lww.get()),
            show(r.hlc_lww.get()),
            show_cart(&r.cart)
        );
    }
    let outcome = Outcome {
        added: ops.iter().map(|o| o.sku.clone()).collect(),
        finals: a,
    };
    let lost = |m: usize| {
        let l = outcome.lost(m);
        if l.is_empty() {
            "nothing".to_string()
        } else {
            l.join(", ")
        }
    };
    println!(
        "{:<12} {:<22} {:<22} {:<22}",
        "lost",
        lost(0),
        lost(1),
        lost(2)
    );
    Ok(outcome)
}
