//! Golden vectors: the serde JSON and bincode (2.x, `config::standard()`) encodings of every
//! public type. A failure here means the wire or disk format changed: make that change
//! deliberate (and versioned) or revert it.

use meridian_clocks::{CausalContext, Dot, HlcTimestamp, LamportTimestamp, ReplicaId, VectorClock};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

fn bincode_hex<T: Serialize>(v: &T) -> String {
    let bytes = bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap();
    meridian_testkit::hex(&bytes)
}

fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Encodes `v` both ways, compares with the golden strings, and decodes them back.
fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(v: T, json: &str, bin: &str) {
    assert_eq!(serde_json::to_string(&v).unwrap(), json, "JSON of {v:?}");
    assert_eq!(bincode_hex(&v), bin, "bincode of {v:?}");
    assert_eq!(serde_json::from_str::<T>(json).unwrap(), v);
    let (back, used): (T, usize) =
        bincode::serde::decode_from_slice(&from_hex(bin), bincode::config::standard()).unwrap();
    assert_eq!((back, used), (v, bin.len() / 2));
}

fn vc() -> VectorClock {
    [(ReplicaId(1), 3), (ReplicaId(7), 300)]
        .into_iter()
        .collect()
}

#[test]
fn replica_id() {
    check(ReplicaId(42), "42", "2a");
}

#[test]
fn lamport_timestamp() {
    check(
        LamportTimestamp {
            counter: 9,
            replica: ReplicaId(2),
        },
        r#"{"counter":9,"replica":2}"#,
        "0902",
    );
}

#[test]
fn vector_clock() {
    check(vc(), "[[1,3],[7,300]]", "02010307fb2c01");
    check(VectorClock::new(), "[]", "00");
}

#[test]
fn dot() {
    check(
        Dot::new(ReplicaId(3), 17),
        r#"{"replica":3,"counter":17}"#,
        "0311",
    );
}

#[test]
fn causal_context() {
    let mut cc = CausalContext::from(vc());
    cc.insert(Dot::new(ReplicaId(2), 5));
    check(
        cc,
        r#"{"vv":[[1,3],[7,300]],"cloud":[{"replica":2,"counter":5}]}"#,
        "02010307fb2c01010205",
    );
}

#[test]
fn hlc_timestamp() {
    check(
        HlcTimestamp::new(1_700_000_000_123, 5),
        r#""2023-11-14T22:13:20.123Z/5""#,
        "fd05007b68e5cf8b01",
    );
}

#[test]
fn decoding_rejects_non_canonical_vector_clocks() {
    for (bad, why) in [
        ("[[7,1],[1,1]]", "not strictly sorted"),
        ("[[1,1],[1,2]]", "not strictly sorted"),
        ("[[1,0]]", "counter 0"),
    ] {
        let err = serde_json::from_str::<VectorClock>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn decoding_garbage_is_an_error_not_a_panic() {
    let garbage: [&[u8]; 4] = [&[], &[0xff], &[0x02, 0x01], &[0xfd, 0x01]];
    for g in garbage {
        let r: Result<(CausalContext, usize), _> =
            bincode::serde::decode_from_slice(g, bincode::config::standard());
        assert!(r.is_err(), "{g:?} decoded");
    }
    assert!(serde_json::from_str::<HlcTimestamp>("\"yesterday\"").is_err());
    assert!(serde_json::from_str::<HlcTimestamp>("12").is_err());
}
