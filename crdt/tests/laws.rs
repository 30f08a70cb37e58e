//! Lattice laws, delta properties and convergence under chaos, for every type.
//!
//! Each type gets a small operation language ([`Model`]); states for the law checks are
//! reached by random operation sequences on three replicas with random merges (arbitrary
//! structures would not be reachable states: one dot must name one event).

use meridian_clocks::{HlcTimestamp, ReplicaId};
use meridian_crdt::{
    AwSet, Cart, CausalCounter, DotFun, DotSet, GCounter, GSet, Lattice, LwwRegister, MvRegister,
    OrMap, PNCounter, Validate,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt::Debug;

/// A type plus a random operation language for it.
trait Model: Lattice + Validate + Clone + Eq + Debug + Default {
    type Op: Debug + Clone;
    /// A random operation.
    fn arb_op() -> BoxedStrategy<Self::Op>;
    /// The same from a seeded generator (for the chaos simulation).
    fn gen_op(rng: &mut ChaCha8Rng) -> Self::Op;
    /// Applies `op` on behalf of `r`, returning the delta.
    fn apply(&mut self, r: ReplicaId, op: &Self::Op) -> Self;
}

/// Test histories are far too short to exhaust a replica's dots.
const FRESH: &str = "fresh dot";

fn ts(ms: u64) -> HlcTimestamp {
    HlcTimestamp::new(1_700_000_000_000 + ms, 0)
}

impl Model for GCounter {
    type Op = u64;
    fn arb_op() -> BoxedStrategy<u64> {
        (1u64..5).boxed()
    }
    fn gen_op(rng: &mut ChaCha8Rng) -> u64 {
        rng.gen_range(1..5)
    }
    fn apply(&mut self, r: ReplicaId, op: &u64) -> Self {
        self.inc(r, *op)
    }
}

impl Model for PNCounter {
    type Op = (bool, u64);
    fn arb_op() -> BoxedStrategy<(bool, u64)> {
        (any::<bool>(), 1u64..5).boxed()
    }
    fn gen_op(rng: &mut ChaCha8Rng) -> (bool, u64) {
        (rng.gen(), rng.gen_range(1..5))
    }
    fn apply(&mut self, r: ReplicaId, op: &(bool, u64)) -> Self {
        if op.0 {
            self.inc(r, op.1)
        } else {
            self.dec(r, op.1)
        }
    }
}

impl Model for GSet<u8> {
    type Op = u8;
    fn arb_op() -> BoxedStrategy<u8> {
        (0u8..8).boxed()
    }
    fn gen_op(rng: &mut ChaCha8Rng) -> u8 {
        rng.gen_range(0..8)
    }
    fn apply(&mut self, _r: ReplicaId, op: &u8) -> Self {
        self.insert(*op)
    }
}

impl Model for LwwRegister<u8> {
    type Op = (u64, u8);
    fn arb_op() -> BoxedStrategy<(u64, u8)> {
        (0u64..6, 0u8..4).boxed()
    }
    fn gen_op(rng: &mut ChaCha8Rng) -> (u64, u8) {
        (rng.gen_range(0..6), rng.gen_range(0..4))
    }
    fn apply(&mut self, r: ReplicaId, op: &(u64, u8)) -> Self {
        self.set(r, ts(op.0), op.1)
    }
}

impl Model for MvRegister<u8> {
    type Op = u8;
    fn arb_op() -> BoxedStrategy<u8> {
        (0u8..6).boxed()
    }
    fn gen_op(rng: &mut ChaCha8Rng) -> u8 {
        rng.gen_range(0..6)
    }
    fn apply(&mut self, r: ReplicaId, op: &u8) -> Self {
        self.write(r, *op).expect(FRESH)
    }
}

/// AwSet ops: add, remove, clear.
#[derive(Clone, Debug)]
enum SetOp {
    Add(u8),
    Remove(u8),
    Clear,
}

impl Model for AwSet<u8> {
    type Op = SetOp;
    fn arb_op() -> BoxedStrategy<SetOp> {
        prop_oneof![
            4 => (0u8..6).prop_map(SetOp::Add),
            3 => (0u8..6).prop_map(SetOp::Remove),
            1 => Just(SetOp::Clear),
        ]
        .boxed()
    }
    fn gen_op(rng: &mut ChaCha8Rng) -> SetOp {
        match rng.gen_range(0..8) {
            0..=3 => SetOp::Add(rng.gen_range(0..6)),
            4..=6 => SetOp::Remove(rng.gen_range(0..6)),
            _ => SetOp::Clear,
        }
    }
    fn apply(&mut self, r: ReplicaId, op: &SetOp) -> Self {
        match op {
            SetOp::Add(x) => self.add(r, *x).expect(FRESH),
            SetOp::Remove(x) => self.remove(x),
            SetOp::Clear => self.clear(),
        }
    }
}

/// OrMap ops over counters, flags and registers.
#[derive(Clone, Debug)]
enum MapOp {
    Inc(u8, u64),
    Dec(u8, u64),
    Remove(u8),
    Clear,
}

impl Model for OrMap<u8, CausalCounter> {
    type Op = MapOp;
    fn arb_op() -> BoxedStrategy<MapOp> {
        prop_oneof![
            3 => (0u8..5, 1u64..4).prop_map(|(k, n)| MapOp::Inc(k, n)),
            2 => (0u8..5, 1u64..4).prop_map(|(k, n)| MapOp::Dec(k, n)),
            2 => (0u8..5).prop_map(MapOp::Remove),
            1 => Just(MapOp::Clear),
        ]
        .boxed()
    }
    fn gen_op(rng: &mut ChaCha8Rng) -> MapOp {
        let k = rng.gen_range(0..5);
        match rng.gen_range(0..8) {
            0..=2 => MapOp::Inc(k, rng.gen_range(1..4)),
            3..=4 => MapOp::Dec(k, rng.gen_range(1..4)),
            5..=6 => MapOp::Remove(k),
            _ => MapOp::Clear,
        }
    }
    fn apply(&mut self, r: ReplicaId, op: &MapOp) -> Self {
        match op {
            MapOp::Inc(k, n) => self.update(r, *k, |c, m| c.inc(m, *n)).expect(FRESH),
            MapOp::Dec(k, n) => self.update(r, *k, |c, m| c.dec(m, *n)).expect(FRESH),
            MapOp::Remove(k) => self.remove(k),
            MapOp::Clear => self.clear(),
        }
    }
}

/// A map of add-wins flags (`Inc`/`Dec` both enable) shares the counter map's op language.
impl Model for OrMap<u8, DotSet> {
    type Op = MapOp;
    fn arb_op() -> BoxedStrategy<MapOp> {
        <OrMap<u8, CausalCounter> as Model>::arb_op()
    }
    fn gen_op(rng: &mut ChaCha8Rng) -> MapOp {
        <OrMap<u8, CausalCounter> as Model>::gen_op(rng)
    }
    fn apply(&mut self, r: ReplicaId, op: &MapOp) -> Self {
        match op {
            MapOp::Inc(k, _) | MapOp::Dec(k, _) => {
                self.update(r, *k, |s, m| s.enable(m)).expect(FRESH)
            }
            MapOp::Remove(k) => self.remove(k),
            MapOp::Clear => self.clear(),
        }
    }
}

impl Model for OrMap<u8, DotFun<u8>> {
    type Op = MapOp;
    fn arb_op() -> BoxedStrategy<MapOp> {
        <OrMap<u8, CausalCounter> as Model>::arb_op()
    }
    fn gen_op(rng: &mut ChaCha8Rng) -> MapOp {
        <OrMap<u8, CausalCounter> as Model>::gen_op(rng)
    }
    fn apply(&mut self, r: ReplicaId, op: &MapOp) -> Self {
        match op {
            MapOp::Inc(k, n) | MapOp::Dec(k, n) => self
                .update(r, *k, |v, m| v.write(m, *n as u8))
                .expect(FRESH),
            MapOp::Remove(k) => self.remove(k),
            MapOp::Clear => self.clear(),
        }
    }
}

/// Cart ops.
#[derive(Clone, Debug)]
enum CartOp {
    Add(u8, u32),
    Set(u8, u32, u64),
    Remove(u8),
    Clear,
    Checkout,
}

const SKUS: [&str; 4] = ["apple", "bread", "cheese", "dates"];

impl Model for Cart {
    type Op = CartOp;
    fn arb_op() -> BoxedStrategy<CartOp> {
        prop_oneof![
            4 => (0u8..4, 0u32..4).prop_map(|(s, n)| CartOp::Add(s, n)),
            3 => (0u8..4, 0u32..5, 0u64..5).prop_map(|(s, n, t)| CartOp::Set(s, n, t)),
            2 => (0u8..4).prop_map(CartOp::Remove),
            1 => Just(CartOp::Clear),
            1 => Just(CartOp::Checkout),
        ]
        .boxed()
    }
    fn gen_op(rng: &mut ChaCha8Rng) -> CartOp {
        let s = rng.gen_range(0..4);
        match rng.gen_range(0..11) {
            0..=3 => CartOp::Add(s, rng.gen_range(0..4)),
            4..=6 => CartOp::Set(s, rng.gen_range(0..5), rng.gen_range(0..5)),
            7..=8 => CartOp::Remove(s),
            9 => CartOp::Clear,
            _ => CartOp::Checkout,
        }
    }
    fn apply(&mut self, r: ReplicaId, op: &CartOp) -> Self {
        match op {
            CartOp::Add(s, n) => self.add(r, SKUS[*s as usize], *n).expect(FRESH),
            CartOp::Set(s, n, t) => self.set(r, ts(*t), SKUS[*s as usize], *n).expect(FRESH),
            CartOp::Remove(s) => self.remove(SKUS[*s as usize]),
            CartOp::Clear => self.clear(),
            CartOp::Checkout => {
                let snap = self.snapshot();
                self.checkout(&snap)
            }
        }
    }
}

/// One step of a three-replica history.
#[derive(Clone, Debug)]
enum Step<O> {
    Op(usize, O),
    Merge(usize, usize),
}

fn arb_history<T: Model>() -> impl Strategy<Value = Vec<Step<T::Op>>> {
    let step = prop_oneof![
        3 => (0usize..3, T::arb_op()).prop_map(|(r, o)| Step::Op(r, o)),
        1 => (0usize..3, 0usize..3).prop_map(|(a, b)| Step::Merge(a, b)),
    ];
    proptest::collection::vec(step, 0..24)
}

fn rid(i: usize) -> ReplicaId {
    ReplicaId(i as u64 + 1)
}

fn merged<T: Lattice + Clone>(a: &T, b: &T) -> T {
    let mut x = a.clone();
    x.merge(b);
    x
}

/// Runs a history; returns the three final states and every delta produced.
fn run<T: Model>(h: &[Step<T::Op>]) -> ([T; 3], Vec<T>) {
    let mut s: [T; 3] = Default::default();
    let mut deltas = Vec::new();
    for step in h {
        match step {
            Step::Op(r, o) => deltas.push(s[*r].apply(rid(*r), o)),
            Step::Merge(a, b) => {
                let from = s[*a].clone();
                s[*b].merge(&from);
            }
        }
    }
    (s, deltas)
}

/// Commutativity, associativity, idempotence, and validity, over final states and deltas.
fn check_laws<T: Model>(h: &[Step<T::Op>]) -> Result<(), TestCaseError> {
    let ([a, b, c], deltas) = run::<T>(h);
    let mut group = T::default();
    for d in &deltas {
        prop_assert!(d.validate().is_ok(), "invalid delta {:?}", d);
        group.merge(d);
    }
    for x in [&a, &b, &c, &group] {
        prop_assert!(
            x.validate().is_ok(),
            "invalid state {:?}: {:?}",
            x,
            x.validate()
        );
        prop_assert_eq!(&merged(x, x), x, "not idempotent");
    }
    prop_assert_eq!(merged(&a, &b), merged(&b, &a), "not commutative");
    prop_assert_eq!(
        merged(&a, &group),
        merged(&group, &a),
        "not commutative (delta group)"
    );
    prop_assert_eq!(
        merged(&merged(&a, &b), &c),
        merged(&a, &merged(&b, &c)),
        "not associative"
    );
    // Every replica's state is the join of the deltas it has seen, so the join of all
    // deltas is the join of all states (a delta group carries the whole history).
    let all = merged(&merged(&a, &b), &c);
    prop_assert_eq!(
        &merged(&all, &group),
        &all,
        "a delta is not below the states"
    );
    Ok(())
}

/// `apply(op) == merge(delta(op))` on a replica that has seen the op's causal past, and
/// delta ⊑ state.
fn check_delta<T: Model>(h: &[Step<T::Op>], r: usize, op: &T::Op) -> Result<(), TestCaseError> {
    let ([a, b, c], _) = run::<T>(h);
    let states = [a, b, c];
    let before = states[r].clone();
    let mut after = before.clone();
    let delta = after.apply(rid(r), op);
    prop_assert_eq!(
        &merged(&after, &delta),
        &after,
        "delta not below the new state"
    );
    prop_assert_eq!(&merged(&before, &delta), &after, "apply != merge(delta)");
    // Any replica that has seen `before` (here: another replica merged with it).
    let other = &states[(r + 1) % 3];
    let witness = merged(other, &before);
    prop_assert_eq!(
        merged(&witness, &delta),
        merged(other, &after),
        "delta differs from the op on a replica that saw its causal past"
    );
    Ok(())
}

macro_rules! law_tests {
    ($($name:ident: $t:ty;)*) => {$(
        mod $name {
            use super::*;
            proptest! {
                #[test]
                fn lattice_laws(h in arb_history::<$t>()) {
                    check_laws::<$t>(&h)?;
                }

                #[test]
                fn delta_equals_op(h in arb_history::<$t>(), r in 0usize..3, op in <$t as Model>::arb_op()) {
                    check_delta::<$t>(&h, r, &op)?;
                }
            }

            #[test]
            fn converges_under_chaos() {
                super::chaos_cases::<$t>(stringify!($name));
            }
        }
    )*};
}

law_tests! {
    gcounter: GCounter;
    pncounter: PNCounter;
    gset: GSet<u8>;
    lww: LwwRegister<u8>;
    mvreg: MvRegister<u8>;
    awset: AwSet<u8>;
    ormap_counter: OrMap<u8, CausalCounter>;
    ormap_flags: OrMap<u8, DotSet>;
    ormap_mvreg: OrMap<u8, DotFun<u8>>;
    cart: Cart;
}

// ---------------------------------------------------------------------------------------
// Convergence under chaos: seeded by `meridian_testkit::seeds`, replayable with MERIDIAN_SEED.

/// A message in flight.
#[derive(Clone, Debug)]
struct Msg<T> {
    to: usize,
    payload: T,
}

/// One seeded run: 3–5 replicas apply random ops; deltas (and sometimes full states) go to
/// random peers, reordered, duplicated and lost; at the end loss is repaired by full-state
/// merges. Returns an error naming what diverged.
fn chaos<T: Model>(seed: u64) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = rng.gen_range(3..=5);
    let mut replicas: Vec<T> = vec![T::default(); n];
    let mut net: Vec<Msg<T>> = Vec::new();
    let mut all_deltas = T::default();
    let steps = rng.gen_range(20..120);
    for _ in 0..steps {
        match rng.gen_range(0..10) {
            0..=5 => {
                let r = rng.gen_range(0..n);
                let op = T::gen_op(&mut rng);
                let delta = replicas[r].apply(rid(r), &op);
                all_deltas.merge(&delta);
                for to in (0..n).filter(|&to| to != r) {
                    if rng.gen_bool(0.8) {
                        net.push(Msg {
                            to,
                            payload: delta.clone(),
                        });
                    }
                }
            }
            6 => {
                // Full state to one peer.
                let (from, to) = (rng.gen_range(0..n), rng.gen_range(0..n));
                net.push(Msg {
                    to,
                    payload: replicas[from].clone(),
                });
            }
            _ => {
                // Deliver a random message; sometimes keep a duplicate in flight.
                if !net.is_empty() {
                    let i = rng.gen_range(0..net.len());
                    let m = if rng.gen_bool(0.2) {
                        net[i].clone()
                    } else {
                        net.swap_remove(i)
                    };
                    replicas[m.to].merge(&m.payload);
                }
            }
        }
    }
    // Some messages are lost for good; deliver the rest in random order.
    while !net.is_empty() {
        let i = rng.gen_range(0..net.len());
        let m = net.swap_remove(i);
        if rng.gen_bool(0.7) {
            replicas[m.to].merge(&m.payload);
        }
    }
    for (i, r) in replicas.iter().enumerate() {
        r.validate()
            .map_err(|e| format!("replica {i} invalid before repair: {e}"))?;
    }
    // Anti-entropy: every replica sends its full state to replica 0, which sends its
    // merged state back; this repairs all loss.
    for i in 1..n {
        let s = replicas[i].clone();
        replicas[0].merge(&s);
    }
    let all = replicas[0].clone();
    for r in replicas.iter_mut().skip(1) {
        r.merge(&all);
    }
    for (i, r) in replicas.iter().enumerate().skip(1) {
        if *r != replicas[0] {
            return Err(format!(
                "replica {i} differs from replica 0:\n{r:?}\nvs\n{:?}",
                replicas[0]
            ));
        }
    }
    if replicas[0] != all_deltas {
        return Err(format!(
            "converged state is not the join of all deltas:\n{:?}\nvs\n{all_deltas:?}",
            replicas[0]
        ));
    }
    Ok(())
}

fn chaos_cases<T: Model>(name: &str) {
    let test = format!("{name}::converges_under_chaos");
    // A fixed base, so a CI failure reproduces.
    let base = 0x6d65_7269_6469_616e_u64;
    for seed in meridian_testkit::seeds(&test, base..base + 200) {
        if let Err(e) = chaos::<T>(seed) {
            panic!("{}: {e}", meridian_testkit::replay(&test, seed));
        }
    }
}
