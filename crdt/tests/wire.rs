//! The wire format: golden bincode and JSON vectors for every type, decoding of garbage and
//! truncated input (errors, never panics), and `validate()` on malformed remote states.

use meridian_clocks::{CausalContext, Dot, HlcTimestamp, ReplicaId};
use meridian_crdt::{
    wire, AwSet, Cart, CausalCounter, DeltaKeyed, Error, GCounter, GSet, IntegerKey, Lattice,
    LwwRegister, MvRegister, OrMap, PNCounter, Snapshot, Validate,
};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

const R1: ReplicaId = ReplicaId(1);
const R2: ReplicaId = ReplicaId(2);

fn cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, cfg()).expect("encoding to a Vec cannot fail")
}

/// Decoding must bound what a length prefix can make it allocate: without the limit, a
/// garbage length aborts the process (found by `garbage_never_panics`).
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let cfg = cfg().with_limit::<{ wire::DECODE_BYTES_MAX }>();
    match bincode::serde::decode_from_slice::<T, _>(bytes, cfg) {
        Ok((v, used)) if used == bytes.len() => Ok(v),
        Ok((_, used)) => Err(format!("{} trailing bytes", bytes.len() - used)),
        Err(e) => Err(e.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Golden vector check: the bincode bytes (hex) and the JSON text must not drift, and both
/// must round-trip to an equal, valid value.
#[track_caller]
fn check<T>(value: &T, bincode_hex: &str, json: &str)
where
    T: Serialize + DeserializeOwned + Eq + Debug + Validate,
{
    let bytes = encode(value);
    let text = serde_json::to_string(value).expect("json");
    assert_eq!(
        (hex(&bytes).as_str(), text.as_str()),
        (bincode_hex, json),
        "wire format drifted for {value:?}; if deliberate, bump wire::FORMAT_VERSION"
    );
    assert_eq!(&decode::<T>(&bytes).expect("bincode round trip"), value);
    assert_eq!(
        &serde_json::from_str::<T>(&text).expect("json round trip"),
        value
    );
    value.validate().expect("golden values are valid");
}

fn ts() -> HlcTimestamp {
    HlcTimestamp::new(1_700_000_000_123, 1)
}

fn sample_cart() -> Cart {
    let mut c = Cart::default();
    c.add(R1, "tea", 2).expect("fresh dot");
    c.set(R2, ts(), "coffee", 3).expect("fresh dot");
    c
}

#[test]
fn golden_gcounter() {
    let mut c = GCounter::new();
    c.inc(R1, 3);
    c.inc(R2, 300);
    check(&c, "02010302fb2c01", r#"[[1,3],[2,300]]"#);
}

#[test]
fn golden_pncounter() {
    let mut c = PNCounter::new();
    c.inc(R1, 5);
    c.dec(R2, 2);
    check(&c, "010105010202", r#"{"p":[[1,5]],"n":[[2,2]]}"#);
}

#[test]
fn golden_gset() {
    let mut s = GSet::new();
    s.insert("a".to_string());
    s.insert("b".to_string());
    check(&s, "0201610162", r#"["a","b"]"#);
}

#[test]
fn golden_lww_register() {
    let mut r = LwwRegister::new();
    r.set(R1, ts(), "x".to_string());
    check(
        &r,
        "01fd01007b68e5cf8b01010178",
        r#"["2023-11-14T22:13:20.123Z/1",1,"x"]"#,
    );
    check(&LwwRegister::<String>::new(), "00", r#"null"#);
}

#[test]
fn golden_mv_register() {
    let mut a = MvRegister::new();
    a.write(R1, "a".to_string()).expect("fresh dot");
    let mut b = MvRegister::new();
    b.write(R2, "b".to_string()).expect("fresh dot");
    a.merge(&b);
    check(
        &a,
        "020101016102010162020101020100",
        r#"{"store":[[{"replica":1,"counter":1},"a"],[{"replica":2,"counter":1},"b"]],"cc":{"vv":[[1,1],[2,1]],"cloud":[]}}"#,
    );
}

#[test]
fn golden_awset() {
    let mut s = AwSet::new();
    s.add(R1, "x".to_string()).expect("fresh dot");
    s.add(R2, "y".to_string()).expect("fresh dot");
    s.remove(&"x".to_string());
    check(
        &s,
        "020101020100010201010179",
        r#"{"store":{"y":[{"replica":2,"counter":1}]},"cc":{"vv":[[1,1],[2,1]],"cloud":[]}}"#,
    );
}

/// Binary runs: gaps, several replicas, an element with two dots.
#[test]
fn golden_awset_runs() {
    let mut a = AwSet::new();
    for x in [10u32, 11, 12, 13] {
        a.add(R1, x).expect("fresh dot");
    }
    a.remove(&11);
    let mut b = AwSet::new();
    b.add(R2, 10u32).expect("fresh dot");
    a.merge(&b);
    check(
        &a,
        "020104020100030101010a0103020c0d0201010a",
        r#"{"store":{"10":[{"replica":1,"counter":1},{"replica":2,"counter":1}],"12":[{"replica":1,"counter":3}],"13":[{"replica":1,"counter":4}]},"cc":{"vv":[[1,4],[2,1]],"cloud":[]}}"#,
    );
}

proptest! {
    /// Any reachable set round-trips through both encodings.
    #[test]
    fn awset_round_trips(ops in proptest::collection::vec((0u64..3, any::<bool>(), 0u8..12), 0..60)) {
        let mut reps: [AwSet<u8>; 3] = Default::default();
        for (i, (r, add, x)) in ops.iter().enumerate() {
            let r = *r as usize;
            if *add { reps[r].add(ReplicaId(r as u64), *x).expect("fresh dot"); } else { reps[r].remove(x); }
            if i % 5 == 0 { let o = reps[r].clone(); reps[(r + 1) % 3].merge(&o); }
        }
        for s in &reps {
            prop_assert_eq!(&decode::<AwSet<u8>>(&encode(s)).expect("bincode"), s);
            let j = serde_json::to_string(s).expect("json");
            prop_assert_eq!(&serde_json::from_str::<AwSet<u8>>(&j).expect("json"), s);
        }
    }
}

#[test]
fn golden_ormap() {
    let mut m: OrMap<String, CausalCounter> = OrMap::new();
    m.update(R1, "k".to_string(), |c, d| c.inc(d, 2))
        .expect("fresh dot");
    m.update(R2, "k".to_string(), |c, d| c.dec(d, 1))
        .expect("fresh dot");
    check(
        &m,
        "01016b020101020002010001020101020100",
        r#"{"store":{"k":[[{"replica":1,"counter":1},[2,0]],[{"replica":2,"counter":1},[0,1]]]},"cc":{"vv":[[1,1],[2,1]],"cloud":[]}}"#,
    );
}

#[test]
fn golden_cart_and_deltas() {
    let mut c = sample_cart();
    check(
        &c,
        "0206636f666665650102010103fd01007b68e5cf8b01037465610101010002020101020100",
        r#"{"lines":{"coffee":[[{"replica":2,"counter":1},{"Set":{"n":3,"ts":"2023-11-14T22:13:20.123Z/1"}}]],"tea":[[{"replica":1,"counter":1},{"Add":2}]]},"cc":{"vv":[[1,1],[2,1]],"cloud":[]}}"#,
    );
    let add = c.add(R1, "tea", 1).expect("fresh dot");
    check(
        &add,
        "0103746561010102000100010102",
        r#"{"lines":{"tea":[[{"replica":1,"counter":2},{"Add":1}]]},"cc":{"vv":[],"cloud":[{"replica":1,"counter":2}]}}"#,
    );
    let rm = c.remove("tea");
    check(
        &rm,
        "0001010200",
        r#"{"lines":{},"cc":{"vv":[[1,2]],"cloud":[]}}"#,
    );
    let snap: Snapshot = c.snapshot();
    check(
        &snap,
        "0106636f666665650301020100",
        r#"{"lines":[["coffee",3]],"observed":{"vv":[[2,1]],"cloud":[]}}"#,
    );
}

/// The `add` delta is at most 48 bytes and at least 10x smaller than a 20-line cart.
#[test]
fn cart_add_delta_is_small() {
    let mut c = Cart::default();
    for i in 0..20 {
        c.add(ReplicaId(1 + i % 3), &format!("sku-{i:04}"), 1 + i as u32)
            .expect("fresh dot");
    }
    let delta = c.add(R1, "sku-0007", 1).expect("fresh dot");
    let (d, s) = (encode(&delta).len(), encode(&c).len());
    println!("add delta {d} bytes, 20-line cart {s} bytes");
    assert!(d <= 48, "delta is {d} bytes");
    assert!(d * 10 <= s, "delta {d} bytes vs state {s} bytes");
}

#[test]
fn truncated_encodings_are_errors() {
    let c = sample_cart();
    let bytes = encode(&c);
    for n in 0..bytes.len() {
        assert!(
            decode::<Cart>(&bytes[..n]).is_err(),
            "prefix of {n} bytes decoded"
        );
    }
    let mut s = AwSet::new();
    for i in 0..10u32 {
        s.add(ReplicaId(u64::from(i % 3)), i).expect("fresh dot");
    }
    let bytes = encode(&s);
    for n in 0..bytes.len() {
        assert!(
            decode::<AwSet<u32>>(&bytes[..n]).is_err(),
            "prefix of {n} bytes decoded"
        );
    }
}

/// Decodes `bytes` as `T`; if that succeeds, validates, and merges the value into a valid
/// state if it validates. Nothing here may panic.
fn poke<T: DeserializeOwned + Validate + Lattice + Clone>(bytes: &[u8], base: &T) {
    if let Ok(v) = decode::<T>(bytes) {
        if let Ok(v) = wire::accept(v) {
            let mut b = base.clone();
            b.merge(&v);
            b.validate().expect("valid ⊔ valid is valid");
        }
    }
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        poke::<Cart>(&bytes, &sample_cart());
        poke::<AwSet<u32>>(&bytes, &AwSet::new());
        poke::<OrMap<u8, CausalCounter>>(&bytes, &OrMap::new());
        poke::<MvRegister<u8>>(&bytes, &MvRegister::new());
        poke::<GCounter>(&bytes, &GCounter::new());
        poke::<PNCounter>(&bytes, &PNCounter::new());
        poke::<LwwRegister<u8>>(&bytes, &LwwRegister::new());
        let _ = serde_json::from_slice::<Cart>(&bytes);
    }

    /// Flipping bytes of a real encoding: decode fails or yields something `validate`
    /// judges; never a panic.
    #[test]
    fn corrupted_encodings_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut bytes = encode(&sample_cart());
        for (i, b) in flips {
            let n = bytes.len();
            bytes[i % n] ^= b;
        }
        poke::<Cart>(&bytes, &sample_cart());
    }
}

#[test]
fn validate_rejects_dot_outside_context() {
    let s: AwSet<u32> = serde_json::from_str(
        r#"{"store":{"7":[{"replica":1,"counter":5}]},"cc":{"vv":[[1,4]],"cloud":[]}}"#,
    )
    .expect("decodes");
    assert_eq!(
        s.validate(),
        Err(Error::DotOutsideContext {
            dot: Dot::new(R1, 5)
        })
    );
    assert!(wire::accept(s).is_err());
}

#[test]
fn validate_rejects_non_compact_context() {
    let s: AwSet<u32> = serde_json::from_str(
        r#"{"store":{},"cc":{"vv":[[1,4]],"cloud":[{"replica":1,"counter":5}]}}"#,
    )
    .expect("decodes");
    assert_eq!(
        s.validate(),
        Err(Error::ContextNotCompact {
            dot: Dot::new(R1, 5)
        })
    );
}

#[test]
fn validate_rejects_zero_counter_dot() {
    let s: AwSet<u32> = serde_json::from_str(
        r#"{"store":{"1":[{"replica":1,"counter":0}]},"cc":{"vv":[[1,4]],"cloud":[]}}"#,
    )
    .expect("decodes");
    assert_eq!(
        s.validate(),
        Err(Error::ZeroCounter {
            dot: Dot::new(R1, 0)
        })
    );
}

#[test]
fn validate_rejects_zero_entries() {
    let zero: Cart = serde_json::from_str(
        r#"{"lines":{"tea":[[{"replica":1,"counter":1},{"Add":0}]]},"cc":{"vv":[[1,1]],"cloud":[]}}"#,
    )
    .expect("decodes");
    assert!(matches!(zero.validate(), Err(Error::Malformed { .. })));
}

#[test]
fn decoding_rejects_unsorted_dot_stores() {
    let r = serde_json::from_str::<AwSet<u32>>(
        r#"{"store":{"1":[{"replica":1,"counter":2},{"replica":1,"counter":1}]},"cc":{"vv":[[1,2]],"cloud":[]}}"#,
    );
    assert!(r.unwrap_err().to_string().contains("sorted"));
}

#[test]
fn an_empty_context_is_valid() {
    assert_eq!(Cart::default().validate(), Ok(()));
    assert!(CausalContext::new().is_empty());
}

// ---------------------------------------------------------------------------------------
// The delta-keyed binary form of `AwSet` (opt-in per element type, `IntegerKey`).

/// Golden vectors of `DeltaKeyed`: its JSON is the set's own, its bincode the set's runs
/// with each element as the zigzag difference from the previous one in its run.
#[test]
fn golden_awset_delta_keyed() {
    // Runs (1, 1, [1000, 1001, 999]) and (2, 1, [7]): codes 2000, +1 → 2, −2 → 3; 7 → 14.
    let mut a = AwSet::new();
    for x in [1000u32, 1001, 999] {
        a.add(R1, x).expect("fresh dot");
    }
    let mut b = AwSet::new();
    b.add(R2, 7u32).expect("fresh dot");
    a.merge(&b);
    check(
        &DeltaKeyed(a.clone()),
        "02010302010002010103fbd00702030201010e",
        r#"{"store":{"7":[{"replica":2,"counter":1}],"999":[{"replica":1,"counter":3}],"1000":[{"replica":1,"counter":1}],"1001":[{"replica":1,"counter":2}]},"cc":{"vv":[[1,3],[2,1]],"cloud":[]}}"#,
    );
    assert_eq!(
        serde_json::to_string(&DeltaKeyed(&a)).expect("json"),
        serde_json::to_string(&a).expect("json")
    );
    // The set's own encoding is unchanged by the opt-in.
    assert_eq!(
        hex(&encode(&a)),
        "02010302010002010103fbe803fbe903fbe70302010107"
    );

    // Deltas wrap modulo 2^BITS: 250 is −6 from 0 (code 11), then 3 is +9 (code 18), not −247.
    let mut s = AwSet::new();
    s.add(R1, 250u8).expect("fresh dot");
    s.add(R1, 3u8).expect("fresh dot");
    check(
        &DeltaKeyed(s),
        "01010200010101020b12",
        r#"{"store":{"3":[{"replica":1,"counter":2}],"250":[{"replica":1,"counter":1}]},"cc":{"vv":[[1,2]],"cloud":[]}}"#,
    );
    // Signed keys: −1 is one step below 0 (code 1), then +2 (code 4).
    let mut s = AwSet::new();
    s.add(R1, -1i32).expect("fresh dot");
    s.add(R1, 1i32).expect("fresh dot");
    check(
        &DeltaKeyed(s),
        "01010200010101020104",
        r#"{"store":{"-1":[{"replica":1,"counter":1}],"1":[{"replica":1,"counter":2}]},"cc":{"vv":[[1,2]],"cloud":[]}}"#,
    );
}

/// Hostile delta-keyed input: a code no key gives, a run claiming more dots than
/// `DECODE_DOTS_MAX`, truncation and garbage are errors, never panics.
#[test]
fn delta_keyed_decode_is_bounded_and_validated() {
    // (empty context, one run (1, 1, [code])): a u8 code must be below 256.
    let run = |code: &[u8]| {
        let mut b = vec![0, 0, 1, 1, 1, 1];
        b.extend(code);
        b
    };
    assert!(decode::<DeltaKeyed<AwSet<u8>>>(&run(&[0x14])).is_ok());
    let err = decode::<DeltaKeyed<AwSet<u8>>>(&run(&[0xfb, 0x00, 0x02])).expect_err("512");
    assert!(err.contains("wider than the key type"), "{err}");
    assert!(decode::<DeltaKeyed<AwSet<u16>>>(&run(&[0xfb, 0x00, 0x02])).is_ok());
    // A run claiming 2^21 elements is refused before any is read.
    let claim = [0, 0, 1, 1, 1, 0xfc, 0, 0, 0x20, 0];
    let err = decode::<DeltaKeyed<AwSet<u32>>>(&claim).expect_err("2^21 elements");
    assert!(err.contains("DECODE_DOTS_MAX"), "{err}");
    // Run order, overlap and empty runs are checked as in the set's own form.
    let overlap = [0, 0, 2, 1, 1, 1, 2, 1, 1, 1, 4];
    assert!(decode::<DeltaKeyed<AwSet<u32>>>(&overlap).is_err());
    let mut s = AwSet::new();
    for i in 0..10u32 {
        s.add(ReplicaId(u64::from(i % 3)), 7 * i)
            .expect("fresh dot");
    }
    let bytes = encode(&DeltaKeyed(&s));
    for n in 0..bytes.len() {
        assert!(
            decode::<DeltaKeyed<AwSet<u32>>>(&bytes[..n]).is_err(),
            "prefix of {n} bytes decoded"
        );
    }
}

/// An element type whose `to_integer` breaks its promise cannot encode silently wrong.
#[test]
fn delta_keyed_refuses_a_key_wider_than_bits() {
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
    struct Liar(u16);
    impl IntegerKey for Liar {
        const BITS: u32 = 8;
        fn to_integer(&self) -> u64 {
            u64::from(self.0)
        }
        fn from_integer(v: u64) -> Option<Self> {
            u16::try_from(v).ok().map(Liar)
        }
    }
    let mut s = AwSet::new();
    s.add(R1, Liar(300)).expect("fresh dot");
    assert!(bincode::serde::encode_to_vec(DeltaKeyed(&s), cfg()).is_err());
}

/// A set of `n` sequential ids added round robin by three replicas.
fn sequential_ids<T: IntegerKey>(ids: impl Iterator<Item = T>) -> AwSet<T> {
    let mut s = AwSet::new();
    for (i, x) in ids.enumerate() {
        s.add(ReplicaId(i as u64 % 3 + 1), x).expect("fresh dot");
    }
    s
}

#[test]
fn delta_keyed_is_smaller_for_sequential_ids() {
    let s = sequential_ids(0u64..10_000);
    let (plain, compact) = (encode(&s).len(), encode(&DeltaKeyed(&s)).len());
    assert!(compact * 2 < plain, "{compact} vs {plain}");
    let s = sequential_ids(u64::MAX - 999..=u64::MAX);
    let (plain, compact) = (encode(&s).len(), encode(&DeltaKeyed(&s)).len());
    assert!(compact * 4 < plain, "{compact} vs {plain}");
}

/// Any reachable set of `T` round-trips through `DeltaKeyed`, in bincode and JSON.
fn delta_keyed_round_trips<T>(ops: &[(u64, bool, T)]) -> Result<(), TestCaseError>
where
    T: IntegerKey + Serialize + DeserializeOwned,
{
    let mut reps: [AwSet<T>; 3] = Default::default();
    for (i, (r, add, x)) in ops.iter().enumerate() {
        let r = *r as usize;
        if *add {
            reps[r]
                .add(ReplicaId(r as u64 + 1), x.clone())
                .expect("fresh dot");
        } else {
            reps[r].remove(x);
        }
        if i % 5 == 0 {
            let o = reps[r].clone();
            reps[(r + 1) % 3].merge(&o);
        }
    }
    for s in reps {
        let back = decode::<DeltaKeyed<AwSet<T>>>(&encode(&DeltaKeyed(&s))).expect("bincode");
        prop_assert_eq!(&back.0, &s);
        let j = serde_json::to_string(&DeltaKeyed(&s)).expect("json");
        prop_assert_eq!(
            &serde_json::from_str::<DeltaKeyed<AwSet<T>>>(&j)
                .expect("json")
                .0,
            &s
        );
        prop_assert_eq!(wire::accept(back).map(|b| b.0), Ok(s));
    }
    Ok(())
}

proptest! {
    #[test]
    fn awset_delta_keyed_round_trips(
        small in proptest::collection::vec((0u64..3, any::<bool>(), 0u16..40), 0..60),
        bytes in proptest::collection::vec((0u64..3, any::<bool>(), any::<i8>()), 0..60),
        wide in proptest::collection::vec((0u64..3, any::<bool>(), any::<u64>()), 0..30),
        near_top in proptest::collection::vec((0u64..3, any::<bool>(), 0u64..20), 0..30),
    ) {
        delta_keyed_round_trips(&small)?;
        delta_keyed_round_trips(&bytes)?;
        delta_keyed_round_trips(&wide)?;
        let near_top: Vec<_> = near_top.into_iter().map(|(r, a, x)| (r, a, u64::MAX - x)).collect();
        delta_keyed_round_trips(&near_top)?;
        let signed: Vec<_> = small.iter().map(|(r, a, x)| (*r, *a, i64::from(*x) - 20)).collect();
        delta_keyed_round_trips(&signed)?;
    }

    #[test]
    fn delta_keyed_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        poke::<DeltaKeyed<AwSet<u32>>>(&bytes, &DeltaKeyed(AwSet::new()));
        poke::<DeltaKeyed<AwSet<u8>>>(&bytes, &DeltaKeyed(AwSet::new()));
        poke::<DeltaKeyed<AwSet<i64>>>(&bytes, &DeltaKeyed(AwSet::new()));
    }
}
