//! The cart: the cart table of `docs/CONTRACT.md` ("Cart semantics") as a scenario table,
//! one line per row at least, and a property test against a naive reference model.

mod scenario;

use meridian_clocks::{HlcTimestamp, ReplicaId, VectorClock};
use meridian_crdt::{Cart, Lattice, Validate};
use proptest::prelude::*;
use std::collections::BTreeSet;

const A: ReplicaId = ReplicaId(1);
const B: ReplicaId = ReplicaId(2);

fn ts(ms: u64) -> HlcTimestamp {
    HlcTimestamp::new(1_700_000_000_000 + ms, 0)
}

fn lines(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
    pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

/// The cart table of `docs/CONTRACT.md` ("Cart semantics"), one line or more per row; the
/// language is described in `scenario/mod.rs`. Replica ids follow first mention:
/// virginia=1, then tokyo or frankfurt.
const CART_TABLE: &str = "
# add(sku, 1) ‖ add(sku, 1): quantity 2, both adds count
virginia: add tea 1 | tokyo: add tea 1 | sync  =>  tea=2

# add(sku, n) ‖ remove(sku): the line keeps the adds the remove had not seen (add wins)
virginia: add tea 2 | sync | virginia: add tea 3 | tokyo: remove tea | sync  =>  tea=3
virginia: add tea 1 | tokyo: remove tea | sync  =>  tea=1

# remove(sku) after seeing the add, then partition and heal: gone everywhere, for good,
# even when a stale replica that still holds the add delivers it again
virginia: add tea 2 | virginia -> frankfurt | virginia -> tokyo | tokyo: remove tea | tokyo -> virginia  =>  virginia: empty; frankfurt: tea=2; tokyo: empty
virginia: add tea 2 | virginia -> frankfurt | virginia -> tokyo | tokyo: remove tea | tokyo -> virginia | frankfurt -> virginia  =>  virginia: empty; frankfurt: tea=2; tokyo: empty
virginia: add tea 2 | virginia -> frankfurt | tokyo: add coffee 1 | virginia -> tokyo | tokyo: remove tea | sync | frankfurt -> tokyo  =>  coffee=1

# set(sku, 3) ‖ set(sku, 5): the later HLC timestamp wins; a tie goes to the higher replica id
virginia: set tea 3 @20 | tokyo: set tea 5 @10 | sync  =>  tea=3
virginia: set tea 3 @10 | tokyo: set tea 5 @10 | sync  =>  tea=5

# set(sku, 3) ‖ add(sku, 1): 4, the set fixes the base and the unseen add adds on top
virginia: add tea 7 | sync | virginia: set tea 3 | tokyo: add tea 1 | sync  =>  tea=4

# set(sku, 3) ‖ remove(sku): 3, the remove drops only what it observed
virginia: add tea 1 | sync | virginia: set tea 3 | tokyo: remove tea | sync  =>  tea=3

# set(sku, 0): the same as remove, alone and against a concurrent add
virginia: add tea 2, set coffee 4 | sync | tokyo: set tea 0 | sync  =>  coffee=4
virginia: add tea 2, set coffee 4 | sync | tokyo: remove tea | sync  =>  coffee=4
virginia: add tea 2 | sync | tokyo: set tea 0 | frankfurt: add tea 1 | sync  =>  tea=1
virginia: add tea 2 | sync | tokyo: remove tea | frankfurt: add tea 1 | sync  =>  tea=1

# clear() ‖ add(sku, 1): the cart keeps only that add
virginia: add tea 2, set coffee 3 | sync | virginia: clear | tokyo: add tea 1 | sync  =>  tea=1

# checkout ‖ add(sku, 1) elsewhere: the order holds exactly what checkout observed, and the
# concurrent add stays in the cart
virginia: add tea 2, set coffee 3 | sync | virginia: checkout | tokyo: add tea 1 | sync  =>  tea=1; virginia ordered coffee=3 tea=2
virginia: add tea 2 | virginia: checkout | virginia: checkout  =>  empty; virginia ordered tea=2; virginia ordered nothing
";

#[test]
fn cart_table() {
    scenario::check_table(CART_TABLE);
}

/// The table checker reports a wrong outcome (and a malformed line) instead of passing.
#[test]
fn cart_table_catches_a_wrong_outcome() {
    assert_eq!(
        scenario::run("virginia: add tea 1 | tokyo: add tea 1 | sync"),
        Ok("tea=2".to_string())
    );
    assert_eq!(
        scenario::run("virginia: add tea 1 | tokyo: add tea 2 | tokyo -> frankfurt"),
        Ok("virginia: tea=1; tokyo: tea=2; frankfurt: tea=2".to_string())
    );
    assert!(scenario::run("virginia: buy tea 1").is_err());
    let wrong =
        std::panic::catch_unwind(|| scenario::check_table("virginia: add tea 1  =>  tea=2"));
    assert!(wrong.is_err());
}

/// `set(sku, 0)` is `remove(sku)`, down to the delta.
#[test]
fn set_zero_gives_the_remove_delta() {
    let mut a = Cart::default();
    a.add(A, "tea", 2).expect("fresh dot");
    let (mut x, mut y) = (a.clone(), a.clone());
    assert_eq!(x.set(B, ts(5), "tea", 0), Ok(y.remove("tea")));
    assert_eq!(x, y);
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

/// The counter up to which replica `q`'s dots are causally stable at replica `x`: every
/// replica has seen the ops that created them, and every op `x` has not yet seen observed
/// them. (Ops of one replica create its dots in counter order.)
fn stable_frontier(
    log: &[Op],
    dots: &[Option<meridian_clocks::Dot>],
    seen: &[BTreeSet<usize>; 3],
    x: usize,
) -> meridian_clocks::VectorClock {
    let mut f = meridian_clocks::VectorClock::new();
    for q in 0..3u64 {
        let q = ReplicaId(q + 1);
        let mut c = 0;
        for (o, d) in dots.iter().enumerate() {
            let Some(d) = d.filter(|d| d.replica == q) else {
                continue;
            };
            let everywhere = seen.iter().all(|s| s.contains(&o));
            let observed_by_all_unseen =
                (0..log.len()).all(|u| seen[x].contains(&u) || log[u].observed.contains(&o));
            if !(everywhere && observed_by_all_unseen) {
                break;
            }
            c = d.counter;
        }
        f.observe(q, c);
    }
    f
}

#[derive(Clone, Debug)]
enum CStep {
    Op(usize, Kind),
    Merge(usize, usize),
    Compact(usize),
}

fn arb_compaction_steps() -> impl Strategy<Value = Vec<CStep>> {
    let step = prop_oneof![
        4 => (0usize..3, arb_kind()).prop_map(|(r, k)| CStep::Op(r, k)),
        3 => (0usize..3, 0usize..3).prop_map(|(a, b)| CStep::Merge(a, b)),
        2 => (0usize..3).prop_map(CStep::Compact),
    ];
    proptest::collection::vec(step, 0..60)
}

proptest! {
    /// Compaction at causal stability, at any replica and any time, never changes any
    /// replica's view: on random histories of three replicas (ops, merges in any order,
    /// compactions with the true stable frontier), every replica's `lines()` equal the
    /// reference model's after every step, the compacted states validate, and they converge.
    #[test]
    fn compaction_at_causal_stability_keeps_every_view(steps in arb_compaction_steps()) {
        let mut log: Vec<Op> = Vec::new();
        let mut dots: Vec<Option<meridian_clocks::Dot>> = Vec::new();
        let mut seen: [BTreeSet<usize>; 3] = Default::default();
        let mut carts: [Cart; 3] = Default::default();
        for step in &steps {
            match step {
                CStep::Op(r, kind) => {
                    let rid = ReplicaId(*r as u64 + 1);
                    let cart = &mut carts[*r];
                    let delta = match *kind {
                        Kind::Add { sku, n } => cart.add(rid, SKUS[sku], n).expect("fresh dot"),
                        Kind::Set { sku, n, ts: t } => cart.set(rid, ts(t), SKUS[sku], n).expect("fresh dot"),
                        Kind::Remove { sku } => cart.remove(SKUS[sku]),
                        Kind::Clear => cart.clear(),
                        Kind::Checkout => {
                            let snap = cart.snapshot();
                            cart.checkout(&snap)
                        }
                    };
                    let fresh = delta.lines().iter().flat_map(|(s, _)| delta.entries(s)).map(|(d, _)| *d).next();
                    log.push(Op { replica: rid, kind: kind.clone(), observed: seen[*r].clone() });
                    dots.push(fresh);
                    seen[*r].insert(log.len() - 1);
                }
                CStep::Merge(a, b) => {
                    let from = carts[*a].clone();
                    carts[*b].merge(&from);
                    let s = seen[*a].clone();
                    seen[*b].extend(s);
                }
                CStep::Compact(x) => {
                    let f = stable_frontier(&log, &dots, &seen, *x);
                    let before = carts[*x].clone();
                    let delta = carts[*x].compact(&f);
                    prop_assert!(delta.validate().is_ok());
                    prop_assert!(carts[*x].validate().is_ok());
                    let mut via_delta = before.clone();
                    via_delta.merge(&delta);
                    prop_assert_eq!(&via_delta, &carts[*x], "compact == merge(its delta)");
                    prop_assert_eq!(before.lines(), carts[*x].lines(), "compaction changed the view");
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

/// Three regions: a remove in tokyo observed the first of virginia's two adds, and is
/// still on its way to frankfurt. Compacting both adds there only once they are stable
/// keeps the answer; compacting them at once (the frontier of what frankfurt has applied,
/// not what is stable) makes the late remove miss, and the removed add comes back.
#[test]
fn compaction_before_stability_resurrects_a_removed_add() {
    let (v, t, f) = (ReplicaId(1), ReplicaId(2), ReplicaId(3));
    let mut virginia = Cart::default();
    virginia.add(v, "tea", 1).expect("fresh dot");
    let mut tokyo = virginia.clone();
    let mut frankfurt = virginia.clone();
    let late_remove = tokyo.remove("tea"); // observed the first add only
    virginia.add(v, "tea", 1).expect("fresh dot");
    frankfurt.merge(&virginia);
    let _ = (t, f);
    // The truth: the first add is removed, the second (unseen by the remove) stays.
    let mut truth = frankfurt.clone();
    truth.merge(&late_remove);
    assert_eq!(truth.quantity("tea"), 1);

    // Stable at frankfurt: counter 1 (tokyo has it, and the unseen remove observed it).
    let mut stable = VectorClock::new();
    stable.observe(v, 1);
    let mut right = frankfurt.clone();
    assert!(
        right.compact(&stable).is_empty(),
        "one stable add: nothing to coalesce"
    );
    right.merge(&late_remove);
    assert_eq!(right.quantity("tea"), 1);

    // The planted bug: what frankfurt has applied is not stable.
    let mut applied = VectorClock::new();
    applied.observe(v, 2);
    let mut wrong = frankfurt.clone();
    assert!(!wrong.compact(&applied).is_empty());
    wrong.merge(&late_remove);
    assert_eq!(wrong.quantity("tea"), 2, "the removed add came back");
}

/// What compaction is for: 10,000 adds of one sku spread over three regions, merged, then
/// compacted once stable, hold one entry per region instead of 10,000.
#[test]
fn ten_thousand_adds_compact_to_one_entry_per_region() {
    let regions = [ReplicaId(1), ReplicaId(2), ReplicaId(3)];
    let mut carts: [Cart; 3] = Default::default();
    for i in 0..10_000usize {
        let r = i % 3;
        let delta = carts[r].add(regions[r], "tea", 1).expect("fresh dot");
        for (j, c) in carts.iter_mut().enumerate() {
            if j != r {
                c.merge(&delta);
            }
        }
    }
    let size = |c: &Cart| {
        bincode::serde::encode_to_vec(c, bincode::config::standard())
            .expect("encodes")
            .len()
    };
    let before = size(&carts[0]);
    assert_eq!(carts[0].entries("tea").len(), 10_000);
    let stable = carts[0].context().version_vector().clone();
    let mut deltas = Vec::new();
    for c in carts.iter_mut() {
        deltas.push(c.compact(&stable));
    }
    for c in carts.iter_mut() {
        for d in &deltas {
            c.merge(d);
        }
    }
    assert!(carts.iter().all(|c| *c == carts[0]));
    assert_eq!(carts[0].quantity("tea"), 10_000);
    assert_eq!(carts[0].entries("tea").len(), 3);
    let after = size(&carts[0]);
    println!(
        "cart of one sku after 10,000 adds over 3 regions: {before} bytes, compacted {after} bytes"
    );
    assert!(after < 100, "{after} bytes");
}
