//! Property tests: vector-clock order against a brute-force model, join laws, causal
//! context compaction, HLC monotonicity under backward jumps, and the packed `u64` order.

use meridian_clocks::{
    CausalContext, Dot, Hlc, HlcTimestamp, LamportClock, LamportTimestamp, ManualClock, ReplicaId,
    VectorClock,
};
use proptest::prelude::*;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

const REPLICAS: u64 = 6;

fn vclock() -> impl Strategy<Value = VectorClock> {
    prop::collection::vec((0..REPLICAS, 0u64..5), 0..8)
        .prop_map(|v| v.into_iter().map(|(r, c)| (ReplicaId(r), c)).collect())
}

/// The textbook definition over a dense array.
fn model_cmp(a: &VectorClock, b: &VectorClock) -> Option<Ordering> {
    let dense = |v: &VectorClock| {
        (0..REPLICAS)
            .map(|r| v.get(ReplicaId(r)))
            .collect::<Vec<_>>()
    };
    let (a, b) = (dense(a), dense(b));
    let le = a.iter().zip(&b).all(|(x, y)| x <= y);
    let ge = a.iter().zip(&b).all(|(x, y)| x >= y);
    match (le, ge) {
        (true, true) => Some(Ordering::Equal),
        (true, false) => Some(Ordering::Less),
        (false, true) => Some(Ordering::Greater),
        (false, false) => None,
    }
}

fn dots() -> impl Strategy<Value = Vec<Dot>> {
    prop::collection::vec((0..4u64, 1u64..12), 0..30).prop_map(|v| {
        v.into_iter()
            .map(|(r, c)| Dot::new(ReplicaId(r), c))
            .collect()
    })
}

fn context_of(ds: &[Dot]) -> CausalContext {
    let mut cc = CausalContext::new();
    for d in ds {
        cc.insert(*d);
    }
    cc
}

fn all_dots() -> impl Iterator<Item = Dot> {
    (0..4u64).flat_map(|r| (1..14).map(move |c| Dot::new(ReplicaId(r), c)))
}

proptest! {
    #[test]
    fn vclock_order_matches_model(a in vclock(), b in vclock()) {
        prop_assert_eq!(a.partial_cmp(&b), model_cmp(&a, &b));
        prop_assert_eq!(a.is_concurrent(&b), model_cmp(&a, &b).is_none());
        prop_assert_eq!(a == b, model_cmp(&a, &b) == Some(Ordering::Equal));
    }

    #[test]
    fn vclock_merge_is_a_join(a in vclock(), b in vclock(), c in vclock()) {
        let join = |x: &VectorClock, y: &VectorClock| { let mut z = x.clone(); z.merge(y); z };
        prop_assert_eq!(join(&a, &b), join(&b, &a));
        prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
        prop_assert_eq!(join(&a, &a), a.clone());
        let ab = join(&a, &b);
        prop_assert!(ab >= a && ab >= b);
        // The least upper bound: pointwise maximum.
        for r in 0..REPLICAS {
            let r = ReplicaId(r);
            prop_assert_eq!(ab.get(r), a.get(r).max(b.get(r)));
        }
    }

    #[test]
    fn vclock_increment_moves_strictly_forward(a in vclock(), r in 0..REPLICAS) {
        let mut b = a.clone();
        let n = b.increment(ReplicaId(r));
        prop_assert_eq!(n, a.get(ReplicaId(r)) + 1);
        prop_assert!(a < b);
    }

    #[test]
    fn compact_never_changes_contains(ds in dots()) {
        let mut cc = CausalContext::new();
        // Build a deliberately uncompacted context through serde, then compact it.
        let raw = serde_json::json!({"vv": [], "cloud": ds.iter().collect::<std::collections::BTreeSet<_>>()});
        let mut loose: CausalContext = serde_json::from_value(raw).unwrap();
        for d in &ds { cc.insert(*d); }
        let before: Vec<bool> = all_dots().map(|d| loose.contains(&d)).collect();
        loose.compact();
        let after: Vec<bool> = all_dots().map(|d| loose.contains(&d)).collect();
        prop_assert_eq!(&before, &after);
        // insert keeps the context compact, so both routes give the same value.
        prop_assert_eq!(&loose, &cc);
        for d in all_dots() { prop_assert_eq!(cc.contains(&d), ds.contains(&d)); }
    }

    #[test]
    fn causal_context_merge_is_union(a in dots(), b in dots()) {
        let (mut x, y) = (context_of(&a), context_of(&b));
        x.merge(&y);
        for d in all_dots() {
            prop_assert_eq!(x.contains(&d), a.contains(&d) || b.contains(&d));
        }
        prop_assert!(x.includes(&context_of(&a)) && x.includes(&y));
        let mut yx = y.clone();
        yx.merge(&context_of(&a));
        prop_assert_eq!(x, yx);
    }

    #[test]
    fn next_dot_is_fresh(ds in dots(), r in 0..4u64) {
        let mut cc = context_of(&ds);
        let before = cc.clone();
        let d = cc.next_dot(ReplicaId(r));
        prop_assert!(!before.contains(&d));
        prop_assert!(cc.contains(&d));
    }

    /// Strictly monotonic even when physical time jumps backwards, and `l ≥ pt` always.
    #[test]
    fn hlc_strictly_monotonic(steps in prop::collection::vec((any::<bool>(), -2_000i64..2_000, 0u64..3_000, 0u16..4), 1..200)) {
        let wall = ManualClock::new(1_000_000);
        let hlc = Hlc::new(wall.clone(), Duration::from_millis(500));
        let mut last = HlcTimestamp::ZERO;
        for (is_send, jump, remote_l, remote_c) in steps {
            wall.set((wall.now_ms_i64() + jump).max(0) as u64);
            let pt = meridian_clocks::PhysicalClock::now_ms(&wall);
            let t = if is_send {
                hlc.now()
            } else {
                match hlc.update(HlcTimestamp::new(pt.saturating_sub(1_000) + remote_l, remote_c)) {
                    Ok(t) => t,
                    Err(_) => { prop_assert_eq!(hlc.last(), last); continue; }
                }
            };
            prop_assert!(t > last, "{t} not after {last}");
            prop_assert!(t.physical_ms() >= pt);
            last = t;
        }
    }

    #[test]
    fn packed_u64_preserves_order(a in any::<u64>(), b in any::<u64>()) {
        let (ta, tb) = (HlcTimestamp::from_u64(a), HlcTimestamp::from_u64(b));
        prop_assert_eq!(ta.cmp(&tb), a.cmp(&b));
        prop_assert_eq!(ta.cmp(&tb), (ta.physical_ms(), ta.logical()).cmp(&(tb.physical_ms(), tb.logical())));
        prop_assert_eq!(HlcTimestamp::new(ta.physical_ms(), ta.logical()), ta);
        prop_assert_eq!(HlcTimestamp::from_u64(ta.to_u64()), ta);
    }

    #[test]
    fn display_round_trips(l in 0..=HlcTimestamp::MAX_PHYSICAL_MS, c in any::<u16>()) {
        let t = HlcTimestamp::new(l, c);
        prop_assert_eq!(t.to_string().parse::<HlcTimestamp>().unwrap(), t);
    }

    /// Any string either errors or parses to a timestamp that displays back as that very
    /// string; never a panic. Three sources: arbitrary text, the timestamp grammar with
    /// digit runs of any length (the huge years of defect 6), and valid strings with a
    /// few characters replaced.
    #[test]
    fn any_string_parses_canonically_or_errors(s in prop_oneof![
        ".{0,40}",
        "[+0-9]{0,24}-[0-9]{1,3}-[0-9]{1,3}T[0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}\\.[0-9]{1,4}Z/[+0-9]{0,7}",
        near_valid(),
    ]) {
        if let Ok(t) = s.parse::<HlcTimestamp>() {
            prop_assert_eq!(t.to_string(), s);
        }
    }

    /// The full valid range, edges included, round-trips through Display and FromStr.
    #[test]
    fn display_round_trips_at_the_edges(l in prop_oneof![
        0..1_000u64,
        HlcTimestamp::MAX_PHYSICAL_MS - 1_000..=HlcTimestamp::MAX_PHYSICAL_MS,
    ], c in prop_oneof![Just(0u16), Just(u16::MAX), any::<u16>()]) {
        let t = HlcTimestamp::new(l, c);
        prop_assert_eq!(t.to_string().parse::<HlcTimestamp>(), Ok(t));
    }

    /// A context that has seen `u64::MAX` refuses to allocate and stays unchanged.
    #[test]
    fn try_next_dot_fails_loudly_at_the_top(below in 0u64..3, r in 0..4u64) {
        let r = ReplicaId(r);
        let mut cc = CausalContext::from(VectorClock::from_iter([(r, u64::MAX - below)]));
        for _ in 0..below {
            prop_assert!(cc.try_next_dot(r).is_ok());
        }
        let before = cc.clone();
        prop_assert_eq!(cc.try_next_dot(r), Err(meridian_clocks::DotsExhausted { replica: r }));
        prop_assert_eq!(cc, before);
    }

    #[test]
    fn lamport_extends_happened_before(ops in prop::collection::vec((0..3usize, 0..3usize), 1..100)) {
        let mut clocks: Vec<LamportClock> = (0..3).map(|r| LamportClock::new(ReplicaId(r))).collect();
        let mut history: BTreeMap<usize, LamportTimestamp> = BTreeMap::new();
        for (from, to) in ops {
            let sent = clocks[from].tick();
            prop_assert!(history.get(&from).is_none_or(|p| *p < sent));
            let got = clocks[to].observe(sent);
            prop_assert!(sent < got);
            history.insert(from, sent);
            history.insert(to, got);
        }
    }
}

/// A displayed timestamp with up to three characters replaced by digits, signs or
/// separators.
fn near_valid() -> impl Strategy<Value = String> {
    let edit = (any::<usize>(), prop::sample::select(&b"0159+-/:.TZ"[..]));
    (any::<u64>(), prop::collection::vec(edit, 1..4)).prop_map(|(v, edits)| {
        let mut b = HlcTimestamp::from_u64(v).to_string().into_bytes();
        for (i, c) in edits {
            let n = b.len();
            b[i % n] = c;
        }
        String::from_utf8(b).expect("ASCII")
    })
}

trait NowI64 {
    fn now_ms_i64(&self) -> i64;
}
impl NowI64 for ManualClock {
    fn now_ms_i64(&self) -> i64 {
        meridian_clocks::PhysicalClock::now_ms(self) as i64
    }
}
