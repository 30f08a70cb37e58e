//! Valid values of every fuzzed type, built with the crates' own mutators: the bases the
//! targets merge decoded values with, and what `examples/seed_corpus.rs` encodes into the
//! committed corpus.

use meridian_clocks::{CausalContext, Dot, HlcTimestamp, LamportTimestamp, ReplicaId, VectorClock};
use meridian_crdt::{
    AwSet, Cart, CausalCounter, DeltaKeyed, DotFun, DotMap, DotSet, GCounter, GSet, Lattice,
    LwwRegister, MvRegister, OrMap, PNCounter, Snapshot,
};

const R1: ReplicaId = ReplicaId(1);
const R2: ReplicaId = ReplicaId(2);
const R3: ReplicaId = ReplicaId(3);

fn ts(ms: u64, c: u16) -> HlcTimestamp {
    HlcTimestamp::new(1_700_000_000_000 + ms, c)
}

/// States and the deltas that built them, in order: small, then larger, then merged.
fn history<T: Lattice + Clone + Default>(ops: &[&dyn Fn(&mut T) -> T]) -> Vec<T> {
    let mut state = T::default();
    let mut out = vec![T::default()];
    for op in ops {
        let delta = op(&mut state);
        out.push(delta);
        out.push(state.clone());
    }
    out
}

/// A mutator that may allocate a dot (a seed replica never runs out of them).
type TryOp<'a, T> = &'a dyn Fn(&mut T) -> Result<T, meridian_crdt::Error>;

/// [`history`] of mutators that allocate dots.
fn history_try<T: Lattice + Clone + Default>(ops: &[TryOp<'_, T>]) -> Vec<T> {
    let mut state = T::default();
    let mut out = vec![T::default()];
    for op in ops {
        out.push(op(&mut state).expect(DOTS));
        out.push(state.clone());
    }
    out
}

const DOTS: &str = "a seed replica has dots to spare";

/// Grow-only counters.
pub fn gcounters() -> Vec<GCounter> {
    history(&[
        &|c: &mut GCounter| c.inc(R1, 1),
        &|c| c.inc(R2, 300),
        &|c| c.inc(R1, 1 << 40),
        &|c| c.inc(R3, 7),
    ])
}

/// Positive-negative counters.
pub fn pncounters() -> Vec<PNCounter> {
    history(&[
        &|c: &mut PNCounter| c.inc(R1, 5),
        &|c| c.dec(R2, 2),
        &|c| c.dec(R1, 1 << 33),
        &|c| c.inc(R3, 1),
    ])
}

/// Grow-only sets of strings.
pub fn gsets() -> Vec<GSet<String>> {
    history(&[
        &|s: &mut GSet<String>| s.insert("a".into()),
        &|s| s.insert("b".into()),
        &|s| s.insert(String::new()),
        &|s| s.insert("sku-0042".into()),
    ])
}

/// Last-writer-wins registers of strings.
pub fn lww_registers() -> Vec<LwwRegister<String>> {
    history(&[
        &|r: &mut LwwRegister<String>| r.set(R1, ts(0, 0), "x".into()),
        &|r| r.set(R2, ts(5, 1), "y".into()),
        &|r| r.set(R1, ts(5, 1), "z".into()),
    ])
}

/// Multi-value registers of small integers, with concurrent writes.
pub fn mv_registers() -> Vec<MvRegister<u8>> {
    let mut out = history_try(&[&|r: &mut MvRegister<u8>| r.write(R1, 1), &|r| {
        r.write(R1, 2)
    }]);
    let mut a = out.last().cloned().unwrap_or_default();
    let mut b = a.clone();
    out.push(a.write(R1, 3).expect(DOTS));
    out.push(b.write(R2, 4).expect(DOTS));
    a.merge(&b);
    out.push(a);
    out
}

/// Add-wins sets of small integers: adds, removes, a clear, concurrent adds.
pub fn awsets() -> Vec<AwSet<u32>> {
    let mut out = history_try(&[
        &|s: &mut AwSet<u32>| s.add(R1, 10),
        &|s| s.add(R1, 11),
        &|s| s.add(R2, 12),
        &|s| Ok(s.remove(&11)),
        &|s| s.add(R1, 13),
    ]);
    let mut a = out.last().cloned().unwrap_or_default();
    let mut b = a.clone();
    out.push(a.clear());
    out.push(b.add(R3, 10).expect(DOTS));
    a.merge(&b);
    out.push(a);
    out
}

/// Add-wins sets of a zero-sized element: the shape whose decoding once allocated without
/// bound (a length prefix costs bytes, the elements cost none).
pub fn awsets_of_unit() -> Vec<AwSet<()>> {
    history_try(&[
        &|s: &mut AwSet<()>| s.add(R1, ()),
        &|s| s.add(R2, ()),
        &|s| Ok(s.remove(&())),
    ])
}

/// The same sets in the delta-keyed binary form.
pub fn awsets_delta_keyed() -> Vec<DeltaKeyed<AwSet<u32>>> {
    awsets().into_iter().map(DeltaKeyed).collect()
}

/// Delta-keyed sets of `u8`, whose deltas wrap modulo 256 (250, then 3, then 251).
pub fn awsets_delta_keyed_u8() -> Vec<DeltaKeyed<AwSet<u8>>> {
    history_try(&[
        &|s: &mut AwSet<u8>| s.add(R1, 250),
        &|s| s.add(R1, 3),
        &|s| s.add(R2, 251),
        &|s| Ok(s.remove(&3)),
    ])
    .into_iter()
    .map(DeltaKeyed)
    .collect()
}

/// Observed-remove maps of causal counters.
pub fn ormaps() -> Vec<OrMap<String, CausalCounter>> {
    history_try(&[
        &|m: &mut OrMap<String, CausalCounter>| m.update(R1, "k".into(), |c, d| c.inc(d, 2)),
        &|m| m.update(R2, "k".into(), |c, d| c.dec(d, 1)),
        &|m| m.update(R1, "j".into(), |c, d| c.inc(d, 5)),
        &|m| Ok(m.remove(&"k".to_string())),
    ])
}

/// Observed-remove maps of nested dot stores (maps of dot sets, and dot functions).
pub fn nested_ormaps() -> Vec<OrMap<u8, DotMap<u8, DotSet>>> {
    history_try(&[
        &|m: &mut OrMap<u8, DotMap<u8, DotSet>>| {
            m.update(R1, 1, |_, d| {
                Ok(DotMap::single(7, DotSet::single(d.next_dot()?)))
            })
        },
        &|m| {
            m.update(R2, 1, |_, d| {
                Ok(DotMap::single(8, DotSet::single(d.next_dot()?)))
            })
        },
        &|m| {
            m.update(R1, 2, |_, d| {
                Ok(DotMap::single(7, DotSet::single(d.next_dot()?)))
            })
        },
        &|m| Ok(m.remove(&1)),
    ])
}

/// Observed-remove maps of dot functions (the cart's line shape, generic).
pub fn dotfun_ormaps() -> Vec<OrMap<u8, DotFun<u16>>> {
    history_try(&[
        &|m: &mut OrMap<u8, DotFun<u16>>| {
            m.update(R1, 1, |_, d| Ok(DotFun::single(d.next_dot()?, 5)))
        },
        &|m| m.update(R2, 1, |_, d| Ok(DotFun::single(d.next_dot()?, 6))),
        &|m| Ok(m.remove(&1)),
        &|m| m.update(R2, 3, |_, d| Ok(DotFun::single(d.next_dot()?, 1))),
    ])
}

/// Carts: adds, sets, removes, a checkout, concurrent edits merged.
pub fn carts() -> Vec<Cart> {
    let mut out = history_try(&[
        &|c: &mut Cart| c.add(R1, "tea", 2),
        &|c| c.set(R2, ts(0, 1), "coffee", 3),
        &|c| c.add(R1, "tea", 1),
        &|c| Ok(c.remove("tea")),
        &|c| c.set(R1, ts(9, 0), "coffee", 1),
        &|c| c.add(R3, "book", 1),
    ]);
    let mut a = out.last().cloned().unwrap_or_default();
    let mut b = a.clone();
    let snap = a.snapshot();
    out.push(a.checkout(&snap));
    out.push(b.add(R2, "pen", 4).expect(DOTS));
    out.push(b.clear());
    a.merge(&b);
    out.push(a);
    out
}

/// Checkout snapshots of every cart above.
pub fn snapshots() -> Vec<Snapshot> {
    carts().iter().map(Cart::snapshot).collect()
}

/// HLC timestamps across the range, the edges included.
pub fn timestamps() -> Vec<HlcTimestamp> {
    vec![
        HlcTimestamp::ZERO,
        ts(0, 0),
        ts(123, 5),
        ts(86_400_000 * 366, u16::MAX),
        HlcTimestamp::new(253_402_300_799_999, 0), // 9999-12-31T23:59:59.999Z
        HlcTimestamp::new(253_402_300_800_000, 1), // 10000-01-01: five-digit years
        HlcTimestamp::MAX,
    ]
}

/// Vector clocks: empty, sparse, concurrent, large counters.
pub fn vector_clocks() -> Vec<VectorClock> {
    vec![
        VectorClock::new(),
        VectorClock::from_iter([(R1, 1)]),
        VectorClock::from_iter([(R1, 3), (R2, 1)]),
        VectorClock::from_iter([(R2, 5), (R3, 2)]),
        VectorClock::from_iter([(ReplicaId(0), 1), (ReplicaId(u64::MAX), u64::MAX)]),
    ]
}

/// Causal contexts: compact prefixes, and clouds of out-of-order dots.
pub fn contexts() -> Vec<CausalContext> {
    let mut with_cloud = CausalContext::from(VectorClock::from_iter([(R1, 2)]));
    with_cloud.insert(Dot::new(R1, 5));
    with_cloud.insert(Dot::new(R2, 3));
    vec![
        CausalContext::new(),
        CausalContext::from(VectorClock::from_iter([(R1, 4), (R2, 1)])),
        with_cloud,
        CausalContext::from(VectorClock::from_iter([(R3, u64::MAX - 1)])),
    ]
}

/// Dots and Lamport timestamps.
pub fn dots() -> Vec<Dot> {
    vec![
        Dot::new(R1, 1),
        Dot::new(R2, 300),
        Dot::new(ReplicaId(u64::MAX), u64::MAX),
    ]
}

/// Lamport timestamps.
pub fn lamport_timestamps() -> Vec<LamportTimestamp> {
    let mut a = meridian_clocks::LamportClock::new(R1);
    let mut b = meridian_clocks::LamportClock::new(R2);
    let (t1, t2) = (a.tick(), b.tick());
    vec![
        t1,
        t2,
        b.observe(t1),
        a.observe(LamportTimestamp::default()),
    ]
}
