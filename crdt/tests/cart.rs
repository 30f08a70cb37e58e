//! The cart: one named test per row of DESIGN.md's table "The cart: semantics when regions
//! disagree", and a property test against a naive reference model.

use meridian_clocks::{HlcTimestamp, ReplicaId};
use meridian_crdt::{Cart, Lattice, Validate};
use proptest::prelude::*;
use std::collections::BTreeSet;

const A: ReplicaId = ReplicaId(1);
const B: ReplicaId = ReplicaId(2);
const C: ReplicaId = ReplicaId(3);

fn ts(ms: u64) -> HlcTimestamp {
    HlcTimestamp::new(1_700_000_000_000 + ms, 0)
}

fn lines(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
    pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

/// Merges `states` in every order (all permutations) and checks that every order gives the
/// same cart; returns it.
fn converge(states: &[Cart]) -> Cart {
    fn perms(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![vec![]];
        }
        let mut out = Vec::new();
        for p in perms(n - 1) {
            for i in 0..=p.len() {
                let mut q = p.clone();
                q.insert(i, n - 1);
                out.push(q);
            }
        }
        out
    }
    let mut result: Option<Cart> = None;
    for order in perms(states.len()) {
        let mut c = Cart::default();
        for i in order {
            c.merge(&states[i]);
        }
        c.validate().expect("merged cart is valid");
        match &result {
            None => result = Some(c),
            Some(r) => assert_eq!(&c, r, "merge order changed the result"),
        }
    }
    result.expect("at least one state")
}

/// Row: `add(sku, 1)` ‖ `add(sku, 1)` → quantity 2.
#[test]
fn row_add_add_both_count() {
    let mut a = Cart::default();
    let mut b = Cart::default();
    a.add(A, "tea", 1).expect("fresh dot");
    b.add(B, "tea", 1).expect("fresh dot");
    assert_eq!(converge(&[a, b]).lines(), lines(&[("tea", 2)]));
}

/// Row: `add(sku, n)` ‖ `remove(sku)` → the line stays with the adds the remove had not seen.
#[test]
fn row_add_remove_add_wins() {
    let mut a = Cart::default();
    a.add(A, "tea", 2).expect("fresh dot");
    let mut b = a.clone();
    a.add(A, "tea", 3).expect("fresh dot"); // unseen by the remove
    b.remove("tea");
    assert_eq!(converge(&[a, b]).lines(), lines(&[("tea", 3)]));
}

/// Row: `remove(sku)` after seeing the add, then any partition and heal → gone everywhere
/// and never comes back (no Dynamo-style resurrection).
#[test]
fn row_remove_after_seeing_add_never_resurrects() {
    let mut a = Cart::default();
    let add = a.add(A, "tea", 2).expect("fresh dot");
    let mut b = Cart::default();
    b.merge(&add);
    let mut c = b.clone(); // a stale replica that holds the add and is partitioned away
    let rm = b.remove("tea");
    // Heal in every order, with the delta and the full states, twice.
    let healed = converge(&[a.clone(), b.clone(), c.clone(), rm.clone()]);
    assert_eq!(healed.quantity("tea"), 0);
    c.merge(&rm);
    a.merge(&b);
    assert_eq!((a.quantity("tea"), c.quantity("tea")), (0, 0));
    // The stale copy merged again, later, still does not bring it back.
    let mut stale = Cart::default();
    stale.merge(&add);
    a.merge(&stale);
    assert_eq!(a.lines(), lines(&[]));
    // And the removal leaves no residue: the line is gone from the store.
    assert!(a.is_empty());
}

/// Row: `set(sku, 3)` ‖ `set(sku, 5)` → the later HLC timestamp wins, ties by replica id.
#[test]
fn row_set_set_later_hlc_wins() {
    let mut a = Cart::default();
    let mut b = Cart::default();
    a.set(A, ts(20), "tea", 3).expect("fresh dot");
    b.set(B, ts(10), "tea", 5).expect("fresh dot");
    assert_eq!(converge(&[a, b]).quantity("tea"), 3);

    // Same timestamp: the higher replica id wins, everywhere.
    let mut a = Cart::default();
    let mut b = Cart::default();
    a.set(A, ts(10), "tea", 3).expect("fresh dot");
    b.set(B, ts(10), "tea", 5).expect("fresh dot");
    assert_eq!(converge(&[a, b]).quantity("tea"), 5);
}

/// Row: `set(sku, 3)` ‖ `add(sku, 1)` → 4.
#[test]
fn row_set_add_adds_on_top() {
    let mut a = Cart::default();
    a.add(A, "tea", 7).expect("fresh dot");
    let mut b = a.clone();
    a.set(A, ts(1), "tea", 3).expect("fresh dot"); // replaces the 7 it saw
    b.add(B, "tea", 1).expect("fresh dot"); // unseen by the set
    assert_eq!(converge(&[a, b]).quantity("tea"), 4);
}

/// Row: `set(sku, 3)` ‖ `remove(sku)` → 3: the remove drops only what it observed.
#[test]
fn row_set_remove_set_survives() {
    let mut a = Cart::default();
    a.add(A, "tea", 1).expect("fresh dot");
    let mut b = a.clone();
    a.set(A, ts(1), "tea", 3).expect("fresh dot");
    b.remove("tea");
    assert_eq!(converge(&[a, b]).quantity("tea"), 3);
}

/// Row: `set(sku, 0)` is the same as remove.
#[test]
fn row_set_zero_is_remove() {
    let mut a = Cart::default();
    a.add(A, "tea", 2).expect("fresh dot");
    a.set(A, ts(1), "coffee", 4).expect("fresh dot");
    let mut x = a.clone();
    let mut y = a.clone();
    let dx = x.set(B, ts(5), "tea", 0).expect("fresh dot");
    let dy = y.remove("tea");
    assert_eq!(x, y);
    assert_eq!(dx, dy);
    assert_eq!(x.lines(), lines(&[("coffee", 4)]));
    // Also against a concurrent add: both keep only the unseen add.
    let mut c = a.clone();
    c.add(C, "tea", 1).expect("fresh dot");
    assert_eq!(converge(&[x, c.clone()]), converge(&[y, c]));
}

/// Row: `clear()` ‖ `add(sku, 1)` → the cart keeps only that add.
#[test]
fn row_clear_add_keeps_only_the_add() {
    let mut a = Cart::default();
    a.add(A, "tea", 2).expect("fresh dot");
    a.set(A, ts(1), "coffee", 3).expect("fresh dot");
    let mut b = a.clone();
    a.clear();
    b.add(B, "tea", 1).expect("fresh dot");
    assert_eq!(converge(&[a, b]).lines(), lines(&[("tea", 1)]));
}

/// Row: `checkout` ‖ `add(sku, 1)` elsewhere → the order holds exactly what checkout
/// observed; the concurrent add stays in the cart.
#[test]
fn row_checkout_add_elsewhere_stays() {
    let mut a = Cart::default();
    a.add(A, "tea", 2).expect("fresh dot");
    a.set(A, ts(1), "coffee", 3).expect("fresh dot");
    let mut b = a.clone();
    let snap = a.snapshot();
    a.checkout(&snap);
    b.add(B, "tea", 1).expect("fresh dot");
    assert_eq!(snap.lines(), lines(&[("coffee", 3), ("tea", 2)]));
    let merged = converge(&[a, b]);
    assert_eq!(merged.lines(), lines(&[("tea", 1)]));
}

/// Checkout removes exactly the snapshot, even when the cart changed in between.
#[test]
fn checkout_removes_exactly_the_snapshot() {
    let mut a = Cart::default();
    a.add(A, "tea", 2).expect("fresh dot");
    let snap = a.snapshot();
    a.add(A, "tea", 5).expect("fresh dot"); // after the snapshot, before the checkout
    let delta = a.checkout(&snap);
    assert_eq!(a.lines(), lines(&[("tea", 5)]));
    assert!(delta.is_empty(), "a checkout delta carries no entries");
    assert!(Cart::default().snapshot().is_empty());
}

/// Quantities saturate in the view, and the state stays valid.
#[test]
fn quantities_saturate() {
    let mut a = Cart::default();
    a.add(A, "tea", u32::MAX).expect("fresh dot");
    a.add(A, "tea", u32::MAX).expect("fresh dot");
    assert_eq!(a.quantity("tea"), u32::MAX);
    assert_eq!(a.validate(), Ok(()));
    assert_eq!(Cart::default().add(A, "tea", 0), Ok(Cart::default()));
}

// ---------------------------------------------------------------------------------------
// Reference model: full histories, tombstones, obviously correct and slow.

#[derive(Clone, Debug)]
enum Kind {
    Add { sku: usize, n: u32 },
    Set { sku: usize, n: u32, ts: u64 },
    Remove { sku: usize },
    Clear,
    Checkout,
}

/// An operation as the model records it: who, what, and everything its replica had seen.
#[derive(Clone, Debug)]
struct Op {
    replica: ReplicaId,
    kind: Kind,
    observed: BTreeSet<usize>,
}

const SKUS: [&str; 3] = ["apple", "bread", "cheese"];

/// The model of one replica's state: the set of operation ids it has seen.
fn model_lines(log: &[Op], seen: &BTreeSet<usize>) -> Vec<(String, u32)> {
    let dropped = |x: usize, sku: usize| {
        seen.iter().any(|&y| {
            log[y].observed.contains(&x)
                && match log[y].kind {
                    Kind::Set { sku: s, .. } | Kind::Remove { sku: s } => s == sku,
                    Kind::Clear | Kind::Checkout => true,
                    Kind::Add { .. } => false,
                }
        })
    };
    let mut out = Vec::new();
    for (si, sku) in SKUS.iter().enumerate() {
        let mut base: Option<(u64, ReplicaId, u32)> = None;
        let mut adds: u64 = 0;
        for &x in seen {
            match log[x].kind {
                Kind::Add { sku: s, n } if s == si && !dropped(x, si) => adds += u64::from(n),
                Kind::Set { sku: s, n, ts } if s == si && n > 0 && !dropped(x, si) => {
                    let cand = (ts, log[x].replica, n);
                    if base.is_none_or(|b| (cand.0, cand.1) > (b.0, b.1)) {
                        base = Some(cand);
                    }
                }
                _ => {}
            }
        }
        let q = base.map_or(0, |b| u64::from(b.2)) + adds;
        if q > 0 {
            out.push((sku.to_string(), u32::try_from(q).unwrap_or(u32::MAX)));
        }
    }
    out
}

#[derive(Clone, Debug)]
enum Step {
    Op(usize, Kind),
    Merge(usize, usize),
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => (0usize..3, 1u32..4).prop_map(|(sku, n)| Kind::Add { sku, n }),
        3 => (0usize..3, 0u32..5, 0u64..4).prop_map(|(sku, n, ts)| Kind::Set { sku, n, ts }),
        2 => (0usize..3).prop_map(|sku| Kind::Remove { sku }),
        1 => Just(Kind::Clear),
        1 => Just(Kind::Checkout),
    ]
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        3 => (0usize..3, arb_kind()).prop_map(|(r, k)| Step::Op(r, k)),
        2 => (0usize..3, 0usize..3).prop_map(|(a, b)| Step::Merge(a, b)),
    ];
    proptest::collection::vec(step, 0..40)
}

proptest! {
    /// On random concurrent histories of three replicas, the cart's `lines()` equal the
    /// reference model's at every replica after every step, checkout orders equal the
    /// model's view, and the fully merged cart equals the model of all operations.
    #[test]
    fn cart_agrees_with_reference_model(steps in arb_steps()) {
        let mut log: Vec<Op> = Vec::new();
        let mut seen: [BTreeSet<usize>; 3] = Default::default();
        let mut carts: [Cart; 3] = Default::default();
        for step in &steps {
            match step {
                Step::Op(r, kind) => {
                    let rid = ReplicaId(*r as u64 + 1);
                    let cart = &mut carts[*r];
                    match *kind {
                        Kind::Add { sku, n } => { cart.add(rid, SKUS[sku], n).expect("fresh dot"); }
                        Kind::Set { sku, n, ts: t } => { cart.set(rid, ts(t), SKUS[sku], n).expect("fresh dot"); }
                        Kind::Remove { sku } => { cart.remove(SKUS[sku]); }
                        Kind::Clear => { cart.clear(); }
                        Kind::Checkout => {
                            let snap = cart.snapshot();
                            prop_assert_eq!(snap.lines(), &model_lines(&log, &seen[*r])[..]);
                            cart.checkout(&snap);
                        }
                    }
                    log.push(Op { replica: rid, kind: kind.clone(), observed: seen[*r].clone() });
                    seen[*r].insert(log.len() - 1);
                }
                Step::Merge(a, b) => {
                    let from = carts[*a].clone();
                    carts[*b].merge(&from);
                    let s = seen[*a].clone();
                    seen[*b].extend(s);
                }
            }
            for r in 0..3 {
                prop_assert_eq!(carts[r].lines(), model_lines(&log, &seen[r]), "replica {}", r);
            }
        }
        let mut all = Cart::default();
        for c in &carts {
            all.merge(c);
        }
        let everything: BTreeSet<usize> = (0..log.len()).collect();
        prop_assert_eq!(all.lines(), model_lines(&log, &everything));
        prop_assert!(all.validate().is_ok());
    }
}
