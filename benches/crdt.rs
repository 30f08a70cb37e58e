//! CRDT benches, each against its peer in the same run (so ratios survive a noisy machine):
//!
//! | bench | peer | target |
//! |---|---|---|
//! | `awset_merge_10k`: merge two 10k-element replicas that diverged by 10% | `crdts::Orswot` | ≥ 5× faster |
//! | `sizes`: bincode size of a 10k-element set built by 3 replicas, own form and `DeltaKeyed` (printed) | `crdts::Orswot` | ≤ 1/3 |
//! | `ormap_counters_1k_merge`: merge two maps of 1k counters that diverged by 100 ops | `crdts::Map<_, PNCounter>` | ≥ 3× faster |
//! | `ormap_counters_1k_apply`: one increment (`OrMap::inc`, the allocation-free path; `update` shown too) | `crdts::Map<_, PNCounter>` | ≥ 3× faster |
//! | `sizes`: cart `add` delta vs a 20-line cart (printed) | — | ≤ 48 bytes and ≥ 10× smaller |
//! | `cart_merge_delta_50`: merge a single-line delta into a 50-line cart | — | < 1 µs |
//!
//! Sizes use bincode 2 with `config::standard()` (varint), the wire codec. Before criterion,
//! `OrMap::inc` and `crdts::Map` are also timed *paired* (alternating rounds, the ratio taken
//! per round; see `common/mod.rs`) and printed as a `paired` line, which load from other
//! users of the machine cannot skew the way it can skew criterion's one-after-the-other
//! timings.
//!
//! Run: `cargo bench --bench crdt -- --warm-up-time 1 --measurement-time 3`.

use crdts::{CmRDT, CvRDT};
use criterion::{criterion_group, BatchSize, Criterion};
use meridian::clocks::{HlcTimestamp, ReplicaId};
use meridian::crdt::{AwSet, Cart, CausalCounter, DeltaKeyed, Lattice, OrMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

mod common;

const ELEMENTS: u64 = 10_000;
const REPLICAS: u64 = 3;
const SEED: u64 = 42;

/// A bench replica makes far fewer writes than `DOT_COUNTER_MAX`.
const DOTS: &str = "a bench replica has dots to spare";

fn bincode_len<T: serde::Serialize>(v: &T) -> usize {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .expect("encode")
        .len()
}

/// One set, both implementations: 10k elements added round-robin by 3 replicas, fully
/// synchronised. Returns (ours, theirs) for each replica.
fn base_sets() -> (Vec<AwSet<u64>>, Vec<crdts::Orswot<u64, u64>>) {
    let mut ours: Vec<AwSet<u64>> = vec![AwSet::new(); REPLICAS as usize];
    let mut theirs: Vec<crdts::Orswot<u64, u64>> = vec![Default::default(); REPLICAS as usize];
    for x in 0..ELEMENTS {
        let r = (x % REPLICAS) as usize;
        ours[r].add(ReplicaId(r as u64 + 1), x).expect(DOTS);
        let ctx = theirs[r].read_ctx().derive_add_ctx(r as u64 + 1);
        let op = theirs[r].add(x, ctx);
        theirs[r].apply(op);
    }
    let (mut o, mut t) = (AwSet::new(), crdts::Orswot::default());
    for r in 0..REPLICAS as usize {
        o.merge(&ours[r]);
        t.merge(theirs[r].clone());
    }
    (
        vec![o.clone(); REPLICAS as usize],
        vec![t.clone(); REPLICAS as usize],
    )
}

/// Diverges replica `r` by `ops` random operations: 60% adds of new elements, 40% removes.
fn diverge(
    o: &mut AwSet<u64>,
    t: &mut crdts::Orswot<u64, u64>,
    r: u64,
    ops: usize,
    rng: &mut ChaCha8Rng,
) {
    for _ in 0..ops {
        if rng.gen_bool(0.6) {
            let x = ELEMENTS + rng.gen_range(0..ELEMENTS);
            o.add(ReplicaId(r), x).expect(DOTS);
            let ctx = t.read_ctx().derive_add_ctx(r);
            let op = t.add(x, ctx);
            t.apply(op);
        } else {
            let x = rng.gen_range(0..ELEMENTS);
            o.remove(&x);
            let ctx = t.contains(&x).derive_rm_ctx();
            let op = t.rm(x, ctx);
            t.apply(op);
        }
    }
}

fn awset_merge(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let (mut ours, mut theirs) = base_sets();
    // 10% divergence: 1000 operations, half on each side.
    let (o1, rest) = ours.split_at_mut(1);
    let (t1, trest) = theirs.split_at_mut(1);
    diverge(&mut o1[0], &mut t1[0], 1, 500, &mut rng);
    diverge(&mut rest[0], &mut trest[0], 2, 500, &mut rng);
    let mut g = c.benchmark_group("awset_merge_10k");
    g.bench_function("meridian::AwSet", |b| {
        b.iter_batched(
            || ours[0].clone(),
            |mut a| {
                a.merge(&ours[1]);
                a
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("crdts::Orswot", |b| {
        b.iter_batched(
            || (theirs[0].clone(), theirs[1].clone()),
            |(mut a, other)| {
                a.merge(other);
                a
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
    // Both sides agree on the result.
    let mut a = ours[0].clone();
    a.merge(&ours[1]);
    let mut t = theirs[0].clone();
    t.merge(theirs[1].clone());
    assert_eq!(a.len(), t.read().val.len());
}

/// Maps of 1k counters, three replicas' worth of increments, then 10% divergence.
type OurMap = OrMap<u64, CausalCounter>;
type TheirMap = crdts::Map<u64, crdts::PNCounter<u64>, u64>;

fn counter_maps() -> (Vec<OurMap>, Vec<TheirMap>) {
    const KEYS: u64 = 1_000;
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut o: OurMap = OrMap::new();
    let mut t: TheirMap = crdts::Map::new();
    for k in 0..KEYS {
        let r = k % REPLICAS + 1;
        o.update(ReplicaId(r), k, |c, m| c.inc(m, 1)).expect(DOTS);
        let ctx = t.read_ctx().derive_add_ctx(r);
        let op = t.update(k, ctx, |v, ctx| v.inc(ctx.dot.actor));
        t.apply(op);
    }
    let mut ours = vec![o.clone(), o];
    let mut theirs = vec![t.clone(), t];
    for side in 0..2 {
        let r = side as u64 + 1;
        for _ in 0..50 {
            let k = rng.gen_range(0..KEYS);
            if rng.gen_bool(0.8) {
                ours[side]
                    .update(ReplicaId(r), k, |c, m| c.inc(m, 1))
                    .expect(DOTS);
                let ctx = theirs[side].read_ctx().derive_add_ctx(r);
                let op = theirs[side].update(k, ctx, |v, ctx| v.inc(ctx.dot.actor));
                theirs[side].apply(op);
            } else {
                ours[side].remove(&k);
                let ctx = theirs[side].get(&k).derive_rm_ctx();
                let op = theirs[side].rm(k, ctx);
                theirs[side].apply(op);
            }
        }
    }
    (ours, theirs)
}

fn ormap_counters(c: &mut Criterion) {
    let (ours, theirs) = counter_maps();
    let mut g = c.benchmark_group("ormap_counters_1k_merge");
    g.bench_function("meridian::OrMap<CausalCounter>", |b| {
        b.iter_batched(
            || ours[0].clone(),
            |mut a| {
                a.merge(&ours[1]);
                a
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("crdts::Map<PNCounter>", |b| {
        b.iter_batched(
            || (theirs[0].clone(), theirs[1].clone()),
            |(mut a, other)| {
                a.merge(other);
                a
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    // One increment at one of the 1k keys, returning its delta. `inc` is the allocation-free
    // small-delta path; `update` the general one (a closure returning the value's delta).
    let mut g = c.benchmark_group("ormap_counters_1k_apply");
    let mut o = ours[0].clone();
    let mut k = 0u64;
    g.bench_function("meridian::OrMap<CausalCounter>::inc", |b| {
        b.iter(|| {
            k = (k + 7) % 1_000;
            black_box(o.inc(ReplicaId(1), k, 1))
        })
    });
    let mut o = ours[0].clone();
    g.bench_function("meridian::OrMap<CausalCounter>::update", |b| {
        b.iter(|| {
            k = (k + 7) % 1_000;
            black_box(o.update(ReplicaId(1), k, |c, m| c.inc(m, 1)))
        })
    });
    let mut t = theirs[0].clone();
    g.bench_function("crdts::Map<PNCounter>", |b| {
        b.iter(|| {
            k = (k + 7) % 1_000;
            let ctx = t.read_ctx().derive_add_ctx(1);
            let op = t.update(k, ctx, |v, ctx| v.inc(ctx.dot.actor));
            t.apply(black_box(op));
        })
    });
    g.finish();
}

fn cart_with_lines(n: usize) -> Cart {
    let mut c = Cart::default();
    for i in 0..n {
        let r = ReplicaId(1 + (i as u64) % REPLICAS);
        if i % 4 == 0 {
            c.set(
                r,
                HlcTimestamp::new(1_700_000_000_000 + i as u64, 0),
                &format!("sku-{i:04}"),
                2,
            )
            .expect(DOTS);
        }
        c.add(r, &format!("sku-{i:04}"), 1).expect(DOTS);
    }
    c
}

fn cart_merge(c: &mut Criterion) {
    let mut cart = cart_with_lines(50);
    let mut other = cart.clone();
    let delta = other.add(ReplicaId(2), "sku-0007", 1).expect(DOTS);
    let mut g = c.benchmark_group("cart_merge_delta_50");
    g.bench_function("meridian::Cart", |b| {
        b.iter_batched_ref(
            || cart.clone(),
            |c| c.merge(black_box(&delta)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    cart.merge(&delta);
    assert_eq!(cart.quantity("sku-0007"), 2);
}

fn sizes() {
    let (mut ours, mut theirs) = base_sets();
    let (o, t) = (bincode_len(&ours[0]), bincode_len(&theirs[0]));
    let k = bincode_len(&DeltaKeyed(&ours[0]));
    println!(
        "size  awset 10k elements / 3 replicas: meridian::AwSet {o} B (ratio {:.3}), \
         DeltaKeyed<AwSet> {k} B (ratio {:.3}), crdts::Orswot {t} B",
        o as f64 / t as f64,
        k as f64 / t as f64,
    );
    // The same after 500 random adds (of new, unsequenced elements) and removes.
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    diverge(&mut ours[0], &mut theirs[0], 1, 500, &mut rng);
    let (o, t) = (bincode_len(&ours[0]), bincode_len(&theirs[0]));
    let k = bincode_len(&DeltaKeyed(&ours[0]));
    println!(
        "size  awset diverged by 500 random ops: meridian::AwSet {o} B (ratio {:.3}), \
         DeltaKeyed<AwSet> {k} B (ratio {:.3}), crdts::Orswot {t} B",
        o as f64 / t as f64,
        k as f64 / t as f64,
    );
    let mut cart = cart_with_lines(20);
    let state = bincode_len(&cart);
    let delta = bincode_len(&cart.add(ReplicaId(1), "sku-0007", 1).expect(DOTS));
    println!(
        "size  cart add delta {delta} B, 20-line cart state {state} B, ratio 1/{:.1}",
        state as f64 / delta as f64
    );
}

/// `ormap_counters_1k_apply`, paired: `OrMap::inc` against `crdts::Map` (and `update`
/// against `crdts::Map`), one increment per call at keys 7 apart.
fn ormap_apply_paired() {
    let (ours, theirs) = counter_maps();
    let (mut o, mut t) = (ours[0].clone(), theirs[0].clone());
    let (mut i, mut j) = (0u64, 0u64);
    let mut crdts_inc = move || {
        j = (j + 7) % 1_000;
        let ctx = t.read_ctx().derive_add_ctx(1);
        let op = t.update(j, ctx, |v, ctx| v.inc(ctx.dot.actor));
        t.apply(black_box(op));
    };
    common::paired(
        41,
        100_000,
        || {
            i = (i + 7) % 1_000;
            let _ = black_box(o.inc(ReplicaId(1), i, 1));
        },
        &mut crdts_inc,
    )
    .print(
        "ormap_counters_1k_apply",
        "meridian::OrMap::inc",
        "crdts::Map",
    );
    let mut o = ours[0].clone();
    common::paired(
        41,
        100_000,
        || {
            i = (i + 7) % 1_000;
            let _ = black_box(o.update(ReplicaId(1), i, |c, m| c.inc(m, 1)));
        },
        &mut crdts_inc,
    )
    .print(
        "ormap_counters_1k_apply",
        "meridian::OrMap::update",
        "crdts::Map",
    );
}

criterion_group!(benches, awset_merge, ormap_counters, cart_merge);

fn main() {
    sizes();
    ormap_apply_paired();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
