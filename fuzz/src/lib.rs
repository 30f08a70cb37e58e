//! The checks behind every fuzz target, written once: decode the input the way a node
//! decodes remote bytes, pass what decodes through [`wire::accept`], and hold what was
//! accepted to the laws of its type.
//!
//! A target is one line: `fuzz_target!(|data: &[u8]| meridian_fuzz::check_lattice(data,
//! &bases()))`. Any panic here is a finding: a decoder or `validate` that panics, an
//! accepted value that does not round-trip, or a merge of valid states that breaks a lattice
//! law or stops being valid. libFuzzer's own limits (set by `cargo xtask fuzz`) turn
//! unbounded allocation and super-linear time into findings too.
//!
//! [`cart_store_core`] does the same for the cart store's on-disk values and its
//! `Causal-Token` header.
//!
//! [`seeds`] gives the valid values the committed seed corpus is encoded from
//! (`cargo run --example seed_corpus`).

use meridian_clocks::{CausalContext, Dot, HlcTimestamp, LamportTimestamp, ReplicaId, VectorClock};
use meridian_crdt::{wire, Cart, Lattice, Snapshot, Validate};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// The cart-store core's on-disk values and `Causal-Token` parsing.
pub mod cart_store_core;
pub mod seeds;

/// At most this many values are decoded back to back from one input: enough for the
/// three operands of associativity.
pub const VALUES_PER_INPUT_MAX: usize = 3;

fn cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The bincode encoding Meridian sends (`config::standard()`).
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, cfg()).expect("encoding to a Vec cannot fail")
}

/// Decodes one `T` from the front of `bytes` as a node does (with
/// [`wire::DECODE_BYTES_MAX`] as the limit), returning it and the bytes it used.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Option<(T, usize)> {
    let limited = cfg().with_limit::<{ wire::DECODE_BYTES_MAX }>();
    bincode::serde::decode_from_slice(bytes, limited).ok()
}

/// Every `T` the input holds: up to [`VALUES_PER_INPUT_MAX`] bincode values back to back,
/// then the whole input read as JSON.
pub fn decode_all<T: DeserializeOwned>(data: &[u8]) -> Vec<T> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < VALUES_PER_INPUT_MAX && !rest.is_empty() {
        match decode_prefix::<T>(rest) {
            Some((v, used)) if used > 0 => {
                out.push(v);
                rest = &rest[used..];
            }
            _ => break,
        }
    }
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        out.push(v);
    }
    out
}

/// A value that decoded re-encodes to something that decodes to it, in bincode and (when
/// the type has a JSON form) in JSON.
#[track_caller]
pub fn assert_round_trips<T: Serialize + DeserializeOwned + PartialEq + Debug>(v: &T) {
    let bytes = encode(v);
    let back = decode_prefix::<T>(&bytes);
    assert!(
        back.as_ref()
            .is_some_and(|(b, used)| b == v && *used == bytes.len()),
        "bincode round trip failed for {v:?}: got {back:?}"
    );
    // Some shapes (maps keyed by `()`) have no JSON form; that is not a finding.
    if let Ok(text) = serde_json::to_string(v) {
        let back = serde_json::from_str::<T>(&text);
        assert!(
            back.as_ref().is_ok_and(|b| b == v),
            "JSON round trip failed for {v:?} via {text}: got {back:?}"
        );
    }
}

fn join<T: Lattice + Clone>(a: &T, b: &T) -> T {
    let mut out = a.clone();
    out.merge(b);
    out
}

/// Decodes `data` as `T`, accepts what validates, and checks, on the accepted values and the
/// valid `bases`: round trips, idempotence, commutativity, associativity, and that every
/// merge of valid states validates.
pub fn check_lattice<T>(data: &[u8], bases: &[T])
where
    T: Lattice + Validate + Clone + Eq + Debug + Serialize + DeserializeOwned,
{
    let accepted: Vec<T> = decode_all::<T>(data)
        .into_iter()
        .filter_map(|v| wire::accept(v).ok())
        .collect();
    if accepted.is_empty() {
        return;
    }
    for v in &accepted {
        assert_round_trips(v);
        assert_eq!(&join(v, v), v, "merge is not idempotent");
        for base in bases {
            check_pair(v, base);
        }
    }
    // Associativity on the decoded values first, the bases after them.
    let all: Vec<&T> = accepted.iter().chain(bases).collect();
    for w in all.windows(3).take(2) {
        let (a, b, c) = (w[0], w[1], w[2]);
        check_pair(a, b);
        let left = join(&join(a, b), c);
        let right = join(a, &join(b, c));
        assert_eq!(
            left, right,
            "merge is not associative:\n a = {a:?}\n b = {b:?}\n c = {c:?}"
        );
    }
}

/// `a ⊔ b` = `b ⊔ a`, is valid, and absorbs both (`(a ⊔ b) ⊔ a = a ⊔ b`).
#[track_caller]
pub fn check_pair<T>(a: &T, b: &T)
where
    T: Lattice + Validate + Clone + Eq + Debug,
{
    let ab = join(a, b);
    if let Err(e) = ab.validate() {
        panic!("merge of valid states is invalid ({e}):\n a = {a:?}\n b = {b:?}\n a ⊔ b = {ab:?}");
    }
    assert_eq!(
        ab,
        join(b, a),
        "merge is not commutative:\n a = {a:?}\n b = {b:?}"
    );
    assert_eq!(
        join(&ab, a),
        ab,
        "a ⊔ b does not absorb a:\n a = {a:?}\n b = {b:?}"
    );
}

/// A checkout snapshot from the wire: accepted snapshots round-trip, and checking one out
/// of a valid cart leaves a valid cart and returns a valid delta that the cart absorbs.
pub fn check_snapshot(data: &[u8], carts: &[Cart]) {
    for snap in decode_all::<Snapshot>(data) {
        let Ok(snap) = wire::accept(snap) else {
            continue;
        };
        assert_round_trips(&snap);
        for cart in carts {
            let mut after = cart.clone();
            let delta = after.checkout(&snap);
            if let Err(e) = after.validate().and_then(|()| delta.validate()) {
                panic!("checkout of an accepted snapshot is invalid ({e}):\n cart = {cart:?}\n snapshot = {snap:?}");
            }
            assert_eq!(
                join(&after, &delta),
                after,
                "the cart does not absorb its delta"
            );
            assert_eq!(join(cart, &delta), after, "the delta is not the checkout");
        }
    }
}

/// HLC timestamps: any text that parses displays back as itself; every packed `u64`
/// displays as text that parses back to it; JSON and bincode round-trip.
pub fn check_hlc(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = s.parse::<HlcTimestamp>() {
            assert_eq!(t.to_string(), s, "parsed {s:?} displays differently");
        }
    }
    let mut stamps: Vec<HlcTimestamp> = decode_all(data);
    if let Some(first) = data.first_chunk::<8>() {
        stamps.push(HlcTimestamp::from_u64(u64::from_le_bytes(*first)));
    }
    for t in stamps {
        let text = t.to_string();
        assert_eq!(
            text.parse::<HlcTimestamp>(),
            Ok(t),
            "{text} does not parse back"
        );
        assert_round_trips(&t);
    }
}

/// The other clock types on the wire: vector clocks, causal contexts, dots and Lamport
/// timestamps. Whatever decodes round-trips and keeps the join laws; a causal context's
/// `contains`, `compact`, `includes` and `try_next_dot` agree with each other.
pub fn check_clock_wire(data: &[u8]) {
    let vcs: Vec<VectorClock> = decode_all(data);
    let base_vcs = seeds::vector_clocks();
    for v in &vcs {
        assert_round_trips(v);
        for w in vcs.iter().chain(&base_vcs) {
            let mut vw = v.clone();
            vw.merge(w);
            let mut wv = w.clone();
            wv.merge(v);
            assert_eq!(vw, wv, "vector clock merge is not commutative");
            assert!(
                vw.dominates(v) && vw.dominates(w),
                "the join does not dominate"
            );
            let (a, b) = (v.partial_cmp(w), w.partial_cmp(v));
            assert_eq!(a, b.map(std::cmp::Ordering::reverse), "{v:?} vs {w:?}");
        }
    }
    let ccs: Vec<CausalContext> = decode_all(data);
    let base_ccs = seeds::contexts();
    for c in &ccs {
        assert_round_trips(c);
        // Decoding does not promise compactness; compaction must not change the set.
        let mut compacted = c.clone();
        compacted.compact();
        let probes: Vec<Dot> = c
            .cloud()
            .chain(
                c.version_vector()
                    .iter()
                    .flat_map(|(r, n)| [Dot::new(r, n), Dot::new(r, n.saturating_add(1))]),
            )
            .take(64)
            .collect();
        for d in &probes {
            assert_eq!(c.contains(d), compacted.contains(d), "compact changed {d}");
        }
        assert!(c.includes(&compacted) && compacted.includes(c));
        for o in ccs.iter().chain(&base_ccs) {
            let mut co = c.clone();
            co.merge(o);
            let mut oc = o.clone();
            oc.merge(c);
            assert_eq!(co, oc, "causal context merge is not commutative");
            assert!(
                co.includes(c) && co.includes(o),
                "the join does not include both"
            );
        }
        for r in c
            .version_vector()
            .iter()
            .map(|(r, _)| r)
            .chain([ReplicaId(1)])
        {
            let mut next = c.clone();
            match next.try_next_dot(r) {
                Ok(d) => assert!(!c.contains(&d) && next.contains(&d), "{d} was not fresh"),
                Err(_) => assert_eq!(&next, c, "a failed allocation changed the context"),
            }
        }
    }
    for d in decode_all::<Dot>(data) {
        assert_round_trips(&d);
    }
    for t in decode_all::<LamportTimestamp>(data) {
        assert_round_trips(&t);
    }
}
