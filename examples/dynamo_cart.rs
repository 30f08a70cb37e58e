//! # Dynamo's shopping cart: deleted items resurface
//!
//! Amazon's Dynamo paper (DeCandia et al., SOSP 2007, §4.4) stores a cart as vector-clock
//! versioned *siblings*: when two versions are concurrent, the application merges them, and
//! the cart merges by taking the union of items. The paper admits the cost: "deleted items
//! can resurface". A delete is just a version without the item, and the union of that with
//! any concurrent sibling that still holds the item puts it back.
//!
//! This example replays one history against both designs, side by side:
//!
//! 1. The customer adds a book in virginia; it replicates to frankfurt.
//! 2. The link between the regions fails (a partition).
//! 3. In virginia the customer **removes the book**. In frankfurt, concurrently, the customer
//!    adds a pen (a second device, or a retry routed to the other region).
//! 4. The partition heals and the regions exchange state.
//!
//! * **Dynamo-style**: the two versions `[v:2]` (no book) and `[v:1, f:1]` (book + pen) are
//!   concurrent, so both are kept as siblings and the next read merges them by union: the
//!   book is back.
//! * **Meridian's `Cart`**: the remove dropped exactly the dots of the book it had observed;
//!   the merge keeps the unseen pen and the book stays deleted. No tombstone per item is
//!   kept: the removal is recorded in the cart's causal context.
//!
//! What to look for: the `book` row of the final table. Then try `--trials 1000`: random
//! variations of the story (other items, extra adds on both sides, which side removes, and
//! the order of the post-heal exchange) count how often each design resurrects the delete.
//!
//! ```text
//! cargo run --release --example dynamo_cart
//! cargo run --release --example dynamo_cart -- --trials 1000 --seed 7
//! ```
//!
//! The last line, starting `SUMMARY`, is for scripts and tests.

use anyhow::{ensure, Result};
use clap::Parser;
use meridian::clocks::{ReplicaId, VectorClock};
use meridian::crdt::{Cart, Lattice};
use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Replay Dynamo's "deleted items resurface" anomaly against Meridian's cart.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Random variations of the story to run after the narrated one (0: none).
    #[arg(long, default_value_t = 200)]
    trials: u32,
    /// Seed of the variations; the same seed gives the same output.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The item the customer deletes.
    #[arg(long, default_value = "book")]
    item: String,
}

type Items = BTreeMap<String, u32>;

/// One Dynamo replica's copy of a key: the set of concurrent versions (siblings).
#[derive(Clone, Debug, Default)]
struct DynamoKey {
    siblings: Vec<(VectorClock, Items)>,
}

impl DynamoKey {
    /// A read: all siblings and the context (join of their clocks) to write back with.
    fn get(&self) -> (VectorClock, Items) {
        let mut ctx = VectorClock::new();
        let mut merged = Items::new();
        // The cart's application-level reconciliation: union of items (max quantity).
        for (vc, items) in &self.siblings {
            ctx.merge(vc);
            for (sku, q) in items {
                let e = merged.entry(sku.clone()).or_insert(0);
                *e = (*e).max(*q);
            }
        }
        (ctx, merged)
    }

    /// A write by coordinator `r` with the context of an earlier read: the new version
    /// supersedes every sibling that the context covers.
    fn put(&mut self, r: ReplicaId, ctx: &VectorClock, items: Items) {
        let mut vc = ctx.clone();
        vc.increment(r);
        self.siblings.retain(|(v, _)| !vc.dominates(v));
        self.siblings.push((vc, items));
    }

    /// Anti-entropy: keep every version not dominated by another (syntactic reconciliation).
    fn sync_from(&mut self, other: &DynamoKey) {
        for (vc, items) in &other.siblings {
            if self.siblings.iter().any(|(v, _)| vc <= v) {
                continue;
            }
            self.siblings.retain(|(v, _)| !vc.dominates(v));
            self.siblings.push((vc.clone(), items.clone()));
        }
    }
}

/// Both designs at one region.
#[derive(Clone, Debug, Default)]
struct Region {
    dynamo: DynamoKey,
    cart: Cart,
}

impl Region {
    fn add(&mut self, r: ReplicaId, sku: &str, n: u32) {
        let (ctx, mut items) = self.dynamo.get();
        *items.entry(sku.to_string()).or_insert(0) += n;
        self.dynamo.put(r, &ctx, items);
        // An example's replica makes a few dozen adds, far below DOT_COUNTER_MAX.
        self.cart
            .add(r, sku, n)
            .expect("a fresh replica has dots to spare");
    }

    fn remove(&mut self, r: ReplicaId, sku: &str) {
        let (ctx, mut items) = self.dynamo.get();
        items.remove(sku);
        self.dynamo.put(r, &ctx, items);
        self.cart.remove(sku);
    }

    fn sync_from(&mut self, other: &Region) {
        self.dynamo.sync_from(&other.dynamo);
        self.cart.merge(&other.cart);
    }

    fn dynamo_items(&self) -> Items {
        self.dynamo.get().1
    }

    fn cart_items(&self) -> Items {
        self.cart.lines().into_iter().collect()
    }
}

fn show(items: &Items) -> String {
    if items.is_empty() {
        return "(empty)".to_string();
    }
    items
        .iter()
        .map(|(s, q)| format!("{s}×{q}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn versions(k: &DynamoKey) -> String {
    k.siblings
        .iter()
        .map(|(vc, items)| {
            let clock: Vec<String> = vc
                .iter()
                .map(|(r, c)| format!("{}:{c}", if r.0 == 1 { "v" } else { "f" }))
                .collect();
            format!("[{}] {}", clock.join(", "), show(items))
        })
        .collect::<Vec<_>>()
        .join("  ‖  ")
}

fn narrate(item: &str) -> Result<(bool, bool)> {
    let (v, f) = (ReplicaId(1), ReplicaId(2));
    let mut virginia = Region::default();
    let mut frankfurt = Region::default();
    let step = |n: u32, what: &str, va: &Region, fr: &Region| {
        println!("{n}. {what}");
        println!(
            "   virginia   Dynamo: {:<38} Meridian: {}",
            versions(&va.dynamo),
            show(&va.cart_items())
        );
        println!(
            "   frankfurt  Dynamo: {:<38} Meridian: {}",
            versions(&fr.dynamo),
            show(&fr.cart_items())
        );
    };

    println!(
        "Timeline (Dynamo shows its versions as [vector clock] items; ‖ separates siblings)\n"
    );
    virginia.add(v, item, 1);
    frankfurt.sync_from(&virginia);
    step(
        1,
        &format!("virginia: add {item}; it replicates to frankfurt"),
        &virginia,
        &frankfurt,
    );
    println!("2. -- partition: virginia and frankfurt cannot reach each other --");
    virginia.remove(v, item);
    frankfurt.add(f, "pen", 1);
    step(
        3,
        &format!("virginia: remove {item}   ‖   frankfurt: add pen (concurrently)"),
        &virginia,
        &frankfurt,
    );
    let snapshot = virginia.clone();
    virginia.sync_from(&frankfurt);
    frankfurt.sync_from(&snapshot);
    step(
        4,
        "-- heal: the regions exchange state --",
        &virginia,
        &frankfurt,
    );

    let (dv, df) = (virginia.dynamo_items(), frankfurt.dynamo_items());
    let (mv, mf) = (virginia.cart_items(), frankfurt.cart_items());
    ensure!(dv == df && mv == mf, "a design failed to converge");
    println!("\nFinal carts, as the customer reads them in either region:\n");
    println!(
        "  {:<8} {:>16} {:>16}",
        "sku", "Dynamo (union)", "Meridian Cart"
    );
    let skus: std::collections::BTreeSet<&String> = dv.keys().chain(mv.keys()).collect();
    for sku in skus {
        let d = dv.get(sku).map_or("—".to_string(), |q| q.to_string());
        let m = mv.get(sku).map_or("—".to_string(), |q| q.to_string());
        let note = if sku == item && dv.contains_key(item) && !mv.contains_key(item) {
            "   ← deleted, and back in Dynamo's cart"
        } else {
            ""
        };
        println!("  {sku:<8} {d:>16} {m:>16}{note}");
    }
    Ok((dv.contains_key(item), mv.contains_key(item)))
}

/// A random variation of the story; returns whether each design resurrected the delete.
fn trial(rng: &mut ChaCha8Rng, item: &str) -> Result<(bool, bool)> {
    let ids = [ReplicaId(1), ReplicaId(2)];
    let others = ["pen", "tea", "mug", "ink"];
    let mut regions = [Region::default(), Region::default()];
    // Before the partition: the item and some others, added anywhere, fully replicated.
    for _ in 0..rng.gen_range(1..4) {
        let at = rng.gen_range(0..2);
        let sku = if rng.gen_bool(0.5) {
            item
        } else {
            others.choose(rng).copied().unwrap_or("pen")
        };
        regions[at].add(ids[at], sku, rng.gen_range(1..4));
    }
    let (a, b) = (regions[0].clone(), regions[1].clone());
    regions[0].sync_from(&b);
    regions[1].sync_from(&a);
    if !regions[0].cart_items().contains_key(item) {
        regions[0].add(ids[0], item, 1);
        let a = regions[0].clone();
        regions[1].sync_from(&a);
    }
    // Partition: one side removes the item after seeing it; both sides add other items.
    let remover = rng.gen_range(0..2);
    let other = 1 - remover;
    regions[remover].remove(ids[remover], item);
    for _ in 0..rng.gen_range(1..4) {
        let at = if rng.gen_bool(0.5) { remover } else { other };
        let sku = others.choose(rng).copied().unwrap_or("pen");
        regions[at].add(ids[at], sku, rng.gen_range(1..4));
    }
    // Heal, in a random order.
    let first = rng.gen_range(0..2);
    let snapshot = regions[first].clone();
    let tmp = regions[1 - first].clone();
    regions[first].sync_from(&tmp);
    regions[1 - first].sync_from(&snapshot);
    let (d0, d1) = (regions[0].dynamo_items(), regions[1].dynamo_items());
    let (m0, m1) = (regions[0].cart_items(), regions[1].cart_items());
    ensure!(d0 == d1 && m0 == m1, "a design failed to converge");
    Ok((d0.contains_key(item), m0.contains_key(item)))
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        !args.item.is_empty() && args.item != "pen",
        "--item must be non-empty and not \"pen\" (the story adds a pen)"
    );
    let (dynamo, meridian) = narrate(&args.item)?;
    println!(
        "\nDynamo resurrected the deleted {}: {}. Meridian: {}.",
        args.item,
        if dynamo { "yes" } else { "no" },
        if meridian { "yes" } else { "no" }
    );

    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let (mut d_bad, mut m_bad) = (0u32, 0u32);
    for _ in 0..args.trials {
        let (d, m) = trial(&mut rng, &args.item)?;
        d_bad += u32::from(d);
        m_bad += u32::from(m);
    }
    if args.trials > 0 {
        println!(
            "\n{} random variations (seed {}): the deleted item came back in {} of them with \
             Dynamo-style union merge (whenever the other region also wrote during the \
             partition), and in {} with Meridian's cart.",
            args.trials, args.seed, d_bad, m_bad
        );
    }
    println!(
        "SUMMARY story_dynamo_resurrected={} story_meridian_resurrected={} trials={} \
         trials_dynamo_resurrected={d_bad} trials_meridian_resurrected={m_bad}",
        u8::from(dynamo),
        u8::from(meridian),
        args.trials
    );
    Ok(())
}
