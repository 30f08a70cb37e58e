//! Regression tests for the adversarial review (issue 9 §1): one test per defect, named
//! after the property that broke.

use meridian_clocks::{Dot, HlcTimestamp, ReplicaId};
use meridian_crdt::{
    wire, AwSet, Cart, CausalCounter, DotSet, Error, GCounter, Lattice, MvRegister, OrMap,
    PNCounter, Snapshot, Validate, DOT_COUNTER_MAX,
};

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
    let set = y.set(R2, ts(1), "a", 5).expect("fresh dot");
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

/// Defect 1, across two states: each of `a` and `b` is valid (dot 2:1 appears once in
/// each), but `a` holds it under key 1 and `b` under key 12. Only the join meets them, so
/// validation cannot refuse them; the join itself must stay commutative. The textbook join
/// drops the dot from both keys (each side's context saw it, neither holds it at the other
/// key). Found by the `crdt_awset` fuzz target (fuzz/regressions/crdt_awset/).
#[test]
fn one_dot_under_two_keys_across_two_valid_states_merges_commutatively() {
    let a: AwSet<u32> = serde_json::from_str(
        r#"{"store":{"1":[{"replica":2,"counter":1}]},"cc":{"vv":[[2,1]],"cloud":[]}}"#,
    )
    .expect("decodes");
    let b: AwSet<u32> = serde_json::from_str(
        r#"{"store":{"12":[{"replica":2,"counter":1}]},"cc":{"vv":[[2,1]],"cloud":[]}}"#,
    )
    .expect("decodes");
    assert_eq!(a.validate(), Ok(()));
    assert_eq!(b.validate(), Ok(()));
    assert_eq!(merged(&a, &b), merged(&b, &a));
    assert!(merged(&a, &b).is_empty(), "{:?}", merged(&a, &b));

    let x: Cart = serde_json::from_str(
        r#"{"lines":{"tea":[[{"replica":2,"counter":1},{"Add":1}]]},"cc":{"vv":[[2,1]],"cloud":[]}}"#,
    )
    .expect("decodes");
    let y: Cart = serde_json::from_str(
        r#"{"lines":{"pen":[[{"replica":2,"counter":1},{"Add":3}]]},"cc":{"vv":[[2,1]],"cloud":[]}}"#,
    )
    .expect("decodes");
    assert_eq!(x.validate(), Ok(()));
    assert_eq!(y.validate(), Ok(()));
    assert_eq!(merged(&x, &y), merged(&y, &x));
    assert!(merged(&x, &y).lines().is_empty());
}

/// Defect 2: a validated context holding counter `u64::MAX` made `next_dot` saturate, so a
/// replica handed out one dot forever. Validation now bounds counters by `DOT_COUNTER_MAX`.
#[test]
fn counter_above_dot_counter_max_is_rejected() {
    let poison = format!(r#"{{"vv":[[1,{}]],"cloud":[]}}"#, u64::MAX);
    let cart: Cart =
        serde_json::from_str(&format!(r#"{{"lines":{{}},"cc":{poison}}}"#)).expect("decodes");
    assert_eq!(
        cart.validate(),
        Err(Error::CounterTooLarge {
            dot: Dot::new(R1, u64::MAX)
        })
    );
    let snap: Snapshot =
        serde_json::from_str(&format!(r#"{{"lines":[],"observed":{poison}}}"#)).expect("decodes");
    assert!(matches!(
        snap.validate(),
        Err(Error::CounterTooLarge { .. })
    ));
    let cloud = format!(
        r#"{{"store":{{}},"cc":{{"vv":[],"cloud":[{{"replica":1,"counter":{}}}]}}}}"#,
        DOT_COUNTER_MAX + 1
    );
    let set: AwSet<u8> = serde_json::from_str(&cloud).expect("decodes");
    assert!(matches!(set.validate(), Err(Error::CounterTooLarge { .. })));
}

/// Defect 2, the other half: at the limit, a replica's mutators fail loudly and change
/// nothing, instead of reusing a dot (two adds with one dot: both lost, peers diverge).
#[test]
fn replica_at_dot_counter_max_fails_instead_of_reusing_a_dot() {
    let at_max = format!(r#"{{"vv":[[1,{DOT_COUNTER_MAX}]],"cloud":[]}}"#);
    // The limit itself is valid, in a cart and in a snapshot handed to checkout.
    let snap: Snapshot =
        serde_json::from_str(&format!(r#"{{"lines":[],"observed":{at_max}}}"#)).expect("decodes");
    assert_eq!(snap.validate(), Ok(()));
    let mut cart = Cart::default();
    cart.add(R1, "tea", 1).expect("fresh dot");
    cart.checkout(&snap);
    assert_eq!(cart.validate(), Ok(()));
    let before = cart.clone();
    let exhausted = Err(Error::DotsExhausted { replica: R1 });
    assert_eq!(cart.add(R1, "tea", 1), exhausted);
    assert_eq!(cart.set(R1, ts(1), "tea", 2), exhausted);
    assert_eq!(cart, before, "a failed mutator changes nothing");
    // Other replicas are unaffected, and what they build stays valid.
    let d = cart.add(R2, "tea", 1).expect("fresh dot");
    assert_eq!((d.validate(), cart.validate()), (Ok(()), Ok(())));
    assert_eq!(cart.quantity("tea"), 1);

    let mut set: AwSet<u8> =
        serde_json::from_str(&format!(r#"{{"store":{{}},"cc":{at_max}}}"#)).expect("decodes");
    assert_eq!(set.validate(), Ok(()));
    assert_eq!(set.add(R1, 7), Err(Error::DotsExhausted { replica: R1 }));
    assert!(set.is_empty());
    let mut map: OrMap<u8, CausalCounter> =
        serde_json::from_str(&format!(r#"{{"store":{{}},"cc":{at_max}}}"#)).expect("decodes");
    assert_eq!(
        map.update(R1, 7, |c, m| c.inc(m, 1)),
        Err(Error::DotsExhausted { replica: R1 })
    );
    assert!(map.is_empty());
    let mut reg: MvRegister<u8> =
        serde_json::from_str(&format!(r#"{{"store":[],"cc":{at_max}}}"#)).expect("decodes");
    assert_eq!(reg.write(R1, 7), Err(Error::DotsExhausted { replica: R1 }));
    assert!(reg.read().is_empty());
}

/// Defect 3: two valid adds, of `u32::MAX` and of 1, merged into a line above `u32::MAX`
/// that `validate()` then rejected, so anti-entropy would refuse the cart forever. One rule
/// now: what merge can produce, validate accepts; the view saturates.
#[test]
fn merged_line_above_u32_max_still_validates() {
    let (mut x, mut y) = (Cart::default(), Cart::default());
    let dx = x.add(R1, "tea", u32::MAX).expect("fresh dot");
    let dy = y.add(R2, "tea", 1).expect("fresh dot");
    assert_eq!((dx.validate(), dy.validate()), (Ok(()), Ok(())));
    x.merge(&dy);
    y.merge(&dx);
    assert_eq!(x, y);
    assert_eq!(x.validate(), Ok(()));
    assert_eq!(x.quantity("tea"), u32::MAX, "the view saturates");
    let snap = x.snapshot();
    assert_eq!(snap.lines(), [("tea".to_string(), u32::MAX)]);
    assert_eq!(snap.validate(), Ok(()));
    x.checkout(&snap);
    assert!(x.is_empty(), "checkout removes every dot it observed");
}

/// Defect 3, for `GCounter`: `u64::MAX / 2 + 1` at two replicas merged into a counter that
/// failed validation. Now it validates; `value` saturates and `total` is exact.
#[test]
fn merged_gcounter_above_u64_max_still_validates() {
    let half = u64::MAX / 2 + 1;
    let (mut x, mut y) = (GCounter::new(), GCounter::new());
    let dx = x.inc(R1, half);
    let dy = y.inc(R2, half);
    x.merge(&dy);
    y.merge(&dx);
    assert_eq!(x, y);
    assert_eq!(x.validate(), Ok(()));
    assert_eq!(x.value(), u64::MAX);
    assert_eq!(x.total(), 2 * u128::from(half));
    let mut p = PNCounter::new();
    p.inc(R1, half);
    p.inc(R2, half);
    p.dec(R1, 1);
    assert_eq!(p.validate(), Ok(()));
    assert_eq!(p.value(), 2 * i128::from(half) - 1, "exact, not saturated");
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).expect("encodes")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let cfg = bincode::config::standard().with_limit::<{ wire::DECODE_BYTES_MAX }>();
    match bincode::serde::decode_from_slice::<T, _>(bytes, cfg) {
        Ok((v, used)) if used == bytes.len() => Ok(v),
        Ok((_, used)) => Err(format!("{} trailing bytes", bytes.len() - used)),
        Err(e) => Err(e.to_string()),
    }
}

/// An `AwSet<()>` in binary form: an empty context, then one run per `(replica, start,
/// length)`; `()` elements cost no bytes, so only the lengths are written.
fn zst_runs(runs: &[(u64, u64, u64)]) -> Vec<u8> {
    let mut bytes = encode(&meridian_clocks::CausalContext::new());
    bytes.extend(encode(&(runs.len() as u64)));
    for (r, start, len) in runs {
        bytes.extend(encode(&(r, start, len)));
    }
    bytes
}

/// Defect 4: ten bytes decoded into 16 million dots (256 MiB) of an `AwSet<()>`, because
/// `DECODE_BYTES_MAX` counts no bytes for zero-sized elements. The decoder now counts
/// dots, up to `wire::DECODE_DOTS_MAX` across all runs.
#[test]
fn zero_sized_awset_decode_is_bounded() {
    let ten = zst_runs(&[(1, 1, 1 << 24)]);
    assert_eq!(ten.len(), 10);
    let err = decode::<AwSet<()>>(&ten).expect_err("16M dots must not decode");
    assert!(err.contains("DECODE_DOTS_MAX"), "{err}");
    // A length the decoder would otherwise loop over for ever.
    assert!(decode::<AwSet<()>>(&zst_runs(&[(1, 1, u64::MAX)])).is_err());
    // The limit counts across runs.
    let half = wire::DECODE_DOTS_MAX as u64 / 2;
    assert!(decode::<AwSet<()>>(&zst_runs(&[(1, 1, half), (2, 1, half + 1)])).is_err());
    // At the limit exactly, it decodes.
    let at = decode::<AwSet<()>>(&zst_runs(&[(1, 1, half), (2, 1, half)])).expect("decodes");
    assert_eq!(
        at.dots(&()).map(|d| d.dots().len()),
        Some(wire::DECODE_DOTS_MAX)
    );
}

/// Defect 5: a set whose run ends at counter `u64::MAX` encoded but did not decode: the
/// run check used `start + len`, and the last dot is `start + len - 1`.
#[test]
fn awset_run_ending_at_u64_max_decodes() {
    for top in [u64::MAX, DOT_COUNTER_MAX] {
        let json = format!(
            r#"{{"store":{{"7":[{{"replica":1,"counter":{a}}}],"8":[{{"replica":1,"counter":{top}}}],"9":[{{"replica":2,"counter":1}}]}},"cc":{{"vv":[[1,{top}],[2,1]],"cloud":[]}}}}"#,
            a = top - 1
        );
        let s: AwSet<u8> = serde_json::from_str(&json).expect("decodes");
        let back: AwSet<u8> = decode(&encode(&s)).expect("a run ending at the top decodes");
        assert_eq!(back, s);
        let expect = if top == DOT_COUNTER_MAX {
            Ok(())
        } else {
            Err(Error::CounterTooLarge {
                dot: Dot::new(R1, top),
            })
        };
        assert_eq!(s.validate(), expect, "top {top}");
    }
    // A run that would pass u64::MAX is still refused.
    let past = zst_runs(&[(1, u64::MAX, 2)]);
    assert!(decode::<AwSet<()>>(&past).is_err());
}
