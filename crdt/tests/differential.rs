//! Differential tests against the `crdts` crate: on the same random operation sequences and
//! merges, our types observe the same values as `crdts::GCounter`, `PNCounter`, `Orswot` and
//! `MVReg`, where the semantics coincide (all of these: add-wins set, max-per-replica
//! counters, multi-value register with "a write replaces what it saw").

use crdts::{CmRDT, CvRDT};
use meridian_clocks::ReplicaId;
use meridian_crdt::{AwSet, GCounter, Lattice, MvRegister, PNCounter};
use proptest::prelude::*;
use std::collections::BTreeSet;

#[derive(Clone, Debug)]
enum Step<O> {
    Op(usize, O),
    Merge(usize, usize),
}

fn arb_steps<O: Clone + std::fmt::Debug>(
    op: impl Strategy<Value = O> + Clone,
) -> impl Strategy<Value = Vec<Step<O>>> {
    let step = prop_oneof![
        3 => (0usize..3, op).prop_map(|(r, o)| Step::Op(r, o)),
        2 => (0usize..3, 0usize..3).prop_map(|(a, b)| Step::Merge(a, b)),
    ];
    proptest::collection::vec(step, 0..40)
}

fn rid(r: usize) -> ReplicaId {
    ReplicaId(r as u64 + 1)
}

proptest! {
    #[test]
    fn gcounter_matches_crdts(steps in arb_steps(1u64..5)) {
        let mut ours: [GCounter; 3] = Default::default();
        let mut theirs: [crdts::GCounter<u64>; 3] = Default::default();
        for s in &steps {
            match s {
                Step::Op(r, n) => {
                    ours[*r].inc(rid(*r), *n);
                    let op = theirs[*r].inc_many(*r as u64 + 1, *n);
                    theirs[*r].apply(op);
                }
                Step::Merge(a, b) => {
                    let (o, t) = (ours[*a].clone(), theirs[*a].clone());
                    ours[*b].merge(&o);
                    theirs[*b].merge(t);
                }
            }
            for r in 0..3 {
                // `crdts` reads big integers; both sides stay far below `u64` here.
                let v: u64 = theirs[r].read().to_string().parse().expect("decimal");
                prop_assert_eq!(ours[r].value(), v);
            }
        }
    }

    #[test]
    fn pncounter_matches_crdts(steps in arb_steps((any::<bool>(), 1u64..5))) {
        let mut ours: [PNCounter; 3] = Default::default();
        let mut theirs: [crdts::PNCounter<u64>; 3] = Default::default();
        for s in &steps {
            match s {
                Step::Op(r, (up, n)) => {
                    let actor = *r as u64 + 1;
                    if *up {
                        ours[*r].inc(rid(*r), *n);
                        let op = theirs[*r].inc_many(actor, *n);
                        theirs[*r].apply(op);
                    } else {
                        ours[*r].dec(rid(*r), *n);
                        let op = theirs[*r].dec_many(actor, *n);
                        theirs[*r].apply(op);
                    }
                }
                Step::Merge(a, b) => {
                    let (o, t) = (ours[*a].clone(), theirs[*a].clone());
                    ours[*b].merge(&o);
                    theirs[*b].merge(t);
                }
            }
            for r in 0..3 {
                let v: i128 = theirs[r].read().to_string().parse().expect("decimal");
                prop_assert_eq!(ours[r].value(), v);
            }
        }
    }

    #[test]
    fn awset_matches_orswot(steps in arb_steps((any::<bool>(), 0u8..6))) {
        let mut ours: [AwSet<u8>; 3] = Default::default();
        let mut theirs: [crdts::Orswot<u8, u64>; 3] = Default::default();
        for s in &steps {
            match s {
                Step::Op(r, (add, x)) => {
                    let actor = *r as u64 + 1;
                    if *add {
                        ours[*r].add(rid(*r), *x).expect("fresh dot");
                        let ctx = theirs[*r].read_ctx().derive_add_ctx(actor);
                        let op = theirs[*r].add(*x, ctx);
                        theirs[*r].apply(op);
                    } else {
                        ours[*r].remove(x);
                        let ctx = theirs[*r].contains(x).derive_rm_ctx();
                        let op = theirs[*r].rm(*x, ctx);
                        theirs[*r].apply(op);
                    }
                }
                Step::Merge(a, b) => {
                    let (o, t) = (ours[*a].clone(), theirs[*a].clone());
                    ours[*b].merge(&o);
                    theirs[*b].merge(t);
                }
            }
            for r in 0..3 {
                let mine: BTreeSet<u8> = ours[r].iter().copied().collect();
                let other: BTreeSet<u8> = theirs[r].read().val.into_iter().collect();
                prop_assert_eq!(mine, other, "replica {}", r);
            }
        }
    }

    #[test]
    fn mvregister_matches_mvreg(steps in arb_steps(0u8..5)) {
        let mut ours: [MvRegister<u8>; 3] = Default::default();
        let mut theirs: [crdts::MVReg<u8, u64>; 3] = Default::default();
        for s in &steps {
            match s {
                Step::Op(r, v) => {
                    ours[*r].write(rid(*r), *v).expect("fresh dot");
                    let ctx = theirs[*r].read_ctx().derive_add_ctx(*r as u64 + 1);
                    let op = theirs[*r].write(*v, ctx);
                    theirs[*r].apply(op);
                }
                Step::Merge(a, b) => {
                    let (o, t) = (ours[*a].clone(), theirs[*a].clone());
                    ours[*b].merge(&o);
                    theirs[*b].merge(t);
                }
            }
            for r in 0..3 {
                let mine: BTreeSet<u8> = ours[r].read().into_iter().copied().collect();
                let other: BTreeSet<u8> = theirs[r].read().val.into_iter().collect();
                prop_assert_eq!(mine, other, "replica {}", r);
            }
        }
    }
}
