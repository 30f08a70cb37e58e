//! Regression tests for the adversarial review (issue 9 §1): one test per defect, named
//! after the property that broke.

use meridian_clocks::{Dot, HlcTimestamp, ReplicaId};
use meridian_crdt::{AwSet, Cart, DotSet, Error, Lattice, OrMap, Validate};

const R1: ReplicaId = ReplicaId(1);
const R2: ReplicaId = ReplicaId(2);

fn ts(ms: u64) -> HlcTimestamp {
    HlcTimestamp::new(1_700_000_000_000 + ms, 0)
}

fn merged<T: Lattice + Clone>(a: &T, b: &T) -> T {
    let mut x = a.clone();
    x.merge(b);
    x
}

/// Defect 1: a dot under two keys passed `validate()`, and merge stopped commuting.
#[test]
fn dot_under_two_keys_is_rejected() {
    // Dot 1:1 under both `a` and `b`.
    let x: Cart = serde_json::from_str(
        r#"{"lines":{"a":[[{"replica":1,"counter":1},{"Add":1}]],"b":[[{"replica":1,"counter":1},{"Add":1}]]},"cc":{"vv":[[1,1]],"cloud":[]}}"#,
    )
    .expect("decodes");
    // A `set` on `a` that observed 1:1.
    let mut y = Cart::default();
    y.merge(&serde_json::from_str(r#"{"lines":{"a":[[{"replica":1,"counter":1},{"Add":1}]]},"cc":{"vv":[[1,1]],"cloud":[]}}"#).expect("decodes"));
    let set = y.set(R2, ts(1), "a", 5);
    // Why it must be rejected: the small-delta path of the join assumes one key per dot.
    assert_ne!(merged(&x, &set).lines(), merged(&set, &x).lines());
    assert_eq!(
        x.validate(),
        Err(Error::DuplicateDot {
            dot: Dot::new(R1, 1)
        })
    );

    let s: AwSet<u8> = serde_json::from_str(
        r#"{"store":{"1":[{"replica":1,"counter":1}],"2":[{"replica":1,"counter":1}]},"cc":{"vv":[[1,1]],"cloud":[]}}"#,
    )
    .expect("decodes");
    assert!(matches!(s.validate(), Err(Error::DuplicateDot { .. })));

    let m: OrMap<u8, DotSet> = serde_json::from_str(
        r#"{"store":{"1":[{"replica":1,"counter":1}],"2":[{"replica":1,"counter":1}]},"cc":{"vv":[[1,1]],"cloud":[]}}"#,
    )
    .expect("decodes");
    assert!(matches!(m.validate(), Err(Error::DuplicateDot { .. })));
}
