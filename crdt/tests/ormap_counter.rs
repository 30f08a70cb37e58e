//! The allocation-free counter path of `OrMap` (`inc`, `dec`) against the general one
//! (`update` with `CausalCounter::inc`/`dec`): the same state after every operation, the
//! same delta (as a map and as bytes), and the same refusal when dots run out. On random
//! histories of three replicas with merges, and on random valid states, including those a
//! history never reaches (a replica holding two dots at a key).

use meridian_clocks::{CausalContext, Dot, ReplicaId};
use meridian_crdt::{CausalCounter, Error, Lattice, OrMap, Validate, DOT_COUNTER_MAX};
use proptest::prelude::*;
use std::collections::BTreeMap;

type Map = OrMap<u8, CausalCounter>;

#[derive(Clone, Debug)]
enum Op {
    Inc(usize, u8, u64),
    Dec(usize, u8, u64),
    Remove(usize, u8),
    /// `a` merges `b`'s state.
    Merge(usize, usize),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..3, 0u8..5, 0u64..4).prop_map(|(r, k, n)| Op::Inc(r, k, n)),
        2 => (0usize..3, 0u8..5, 0u64..4).prop_map(|(r, k, n)| Op::Dec(r, k, n)),
        1 => (0usize..3, 0u8..5).prop_map(|(r, k)| Op::Remove(r, k)),
        2 => (0usize..3, 0usize..3).prop_map(|(a, b)| Op::Merge(a, b)),
    ]
}

fn bincode(v: &impl serde::Serialize) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).expect("encode")
}

/// Applies `inc`/`dec` both ways to copies of `state` and checks they agree.
fn check_count(state: &Map, r: ReplicaId, k: u8, n: u64, inc: bool) -> Result<Map, TestCaseError> {
    let (mut fast, mut general) = (state.clone(), state.clone());
    let (d_fast, d_general) = if inc {
        (fast.inc(r, k, n), general.update(r, k, |c, m| c.inc(m, n)))
    } else {
        (fast.dec(r, k, n), general.update(r, k, |c, m| c.dec(m, n)))
    };
    prop_assert_eq!(&fast, &general, "state after the op");
    match (d_fast, d_general) {
        (Ok(d_fast), Ok(d_general)) => {
            prop_assert_eq!(&d_fast.to_map(), &d_general, "delta");
            prop_assert_eq!(bincode(&d_fast), bincode(&d_general), "delta bytes");
            prop_assert_eq!(
                serde_json::to_string(&d_fast).expect("json"),
                serde_json::to_string(&d_general).expect("json")
            );
            // apply == merge(delta), for the fast path too.
            let mut merged = state.clone();
            merged.merge(&d_fast.clone().into_map());
            prop_assert_eq!(&merged, &fast, "merge(delta) = apply");
            prop_assert_eq!(fast.validate(), Ok(()));
        }
        (Err(a), Err(b)) => {
            prop_assert_eq!(a, b);
            prop_assert_eq!(&fast, state, "a refused op changes nothing");
        }
        (a, b) => prop_assert!(false, "fast {a:?} vs general {b:?}"),
    }
    Ok(fast)
}

/// A random valid state over keys 0..4, dots (replica 1..=3, counter 1..=6): each dot under
/// at most one key, payloads random, the context the store's dots plus random others.
fn arb_state() -> impl Strategy<Value = Map> {
    (
        proptest::collection::vec((0u8..5, 0u64..9, 0u64..9), 18),
        proptest::collection::btree_set(0usize..18, 0..18),
    )
        .prop_map(|(at, extra)| {
            let dot = |i: usize| Dot::new(ReplicaId(i as u64 / 6 + 1), i as u64 % 6 + 1);
            let mut store: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
            let mut cc = CausalContext::new();
            for (i, &(k, p, n)) in at.iter().enumerate() {
                if k < 4 {
                    // key 4 means "not in the store"
                    store
                        .entry(k.to_string())
                        .or_default()
                        .push(serde_json::json!([dot(i), [p, n]]));
                    cc.insert(dot(i));
                }
            }
            extra.iter().for_each(|&i| cc.insert(dot(i)));
            let json = serde_json::json!({ "store": store, "cc": cc });
            let m: Map = serde_json::from_value(json).expect("decodes");
            assert_eq!(m.validate(), Ok(()));
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fast_counter_path_equals_update_on_histories(ops in proptest::collection::vec(arb_op(), 0..80)) {
        let mut reps: [Map; 3] = Default::default();
        for op in ops {
            match op {
                Op::Inc(r, k, n) => {
                    reps[r] = check_count(&reps[r], ReplicaId(r as u64 + 1), k, n, true)?;
                }
                Op::Dec(r, k, n) => {
                    reps[r] = check_count(&reps[r], ReplicaId(r as u64 + 1), k, n, false)?;
                }
                Op::Remove(r, k) => {
                    reps[r].remove(&k);
                }
                Op::Merge(a, b) => {
                    let other = reps[b].clone();
                    reps[a].merge(&other);
                }
            }
        }
    }

    #[test]
    fn fast_counter_path_equals_update_on_valid_states(
        state in arb_state(),
        r in 1u64..5,
        k in 0u8..5,
        n in 0u64..4,
        inc in any::<bool>(),
    ) {
        check_count(&state, ReplicaId(r), k, n, inc)?;
    }
}

/// A replica holding two dots at one key (valid, but no history of local updates makes it)
/// takes the general path, and the result is still the general one.
#[test]
fn two_own_dots_take_the_general_path() {
    let m: Map = serde_json::from_str(
        r#"{"store":{"3":[[{"replica":1,"counter":1},[2,0]],[{"replica":1,"counter":2},[5,1]]]},
            "cc":{"vv":[[1,2]],"cloud":[]}}"#,
    )
    .expect("decodes");
    assert_eq!(m.validate(), Ok(()));
    check_count(&m, ReplicaId(1), 3, 1, true).expect("agrees");
    let mut fast = m.clone();
    fast.inc(ReplicaId(1), 3, 1).expect("fresh dot");
    assert_eq!(fast.get(&3).map(CausalCounter::value), Some(2 + 5 + 1 - 1));
}

/// Out of dots: both paths refuse and change nothing.
#[test]
fn exhausted_dots_are_refused_by_both_paths() {
    let json = format!(
        r#"{{"store":{{"1":[[{{"replica":1,"counter":{DOT_COUNTER_MAX}}},[1,0]]]}},
            "cc":{{"vv":[[1,{DOT_COUNTER_MAX}]],"cloud":[]}}}}"#
    );
    let m: Map = serde_json::from_str(&json).expect("decodes");
    assert_eq!(m.validate(), Ok(()));
    let mut fast = m.clone();
    assert_eq!(
        fast.inc(ReplicaId(1), 1, 1),
        Err(Error::DotsExhausted {
            replica: ReplicaId(1)
        })
    );
    assert_eq!(fast, m);
    check_count(&m, ReplicaId(1), 1, 1, true).expect("agrees");
    check_count(&m, ReplicaId(2), 1, 1, false).expect("agrees");
}
