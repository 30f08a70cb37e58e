//! The cart-store core's on-disk values and its `Causal-Token` header.

use crate::{assert_round_trips, check_pair, seeds};
use meridian_cart_store_core::codec::{self, DeltaRecord, IdempotencyRecord};
use meridian_cart_store_core::replication::wire;
use meridian_cart_store_core::{
    CausalToken, Durability, MemStorage, Node, NodeConfig, Replica, ReplicationConfig,
};
use meridian_clocks::{ManualClock, ReplicaId};
use std::time::{Duration, Instant};

/// Every on-disk value of the core's `codec` module, read from the same bytes: whatever
/// decodes re-encodes to what decodes to it, a stored cart is valid and merges lawfully,
/// and a checked delta log entry carries a valid delta.
pub fn check_codec(data: &[u8]) {
    if let Ok(cart) = codec::decode_cart(data) {
        let again = codec::decode_cart(&codec::encode_cart(&cart));
        assert_eq!(again.as_ref(), Ok(&cart), "stored cart does not round-trip");
        for base in seeds::carts() {
            check_pair(&cart, &base);
        }
    }
    if let Ok(d) = codec::decode_delta(data) {
        let again: Result<DeltaRecord, _> = codec::decode_delta(&codec::encode_delta(&d));
        assert_eq!(
            again.as_ref(),
            Ok(&d),
            "delta log entry does not round-trip"
        );
        assert_round_trips(&d.delta);
    }
    if let Ok(d) = codec::decode_delta_checked(data) {
        if let Err(e) = meridian_crdt::Validate::validate(&d.delta) {
            panic!("decode_delta_checked returned an invalid delta ({e}): {d:?}");
        }
        for base in seeds::carts() {
            check_pair(&d.delta, &base);
        }
    }
    if let Ok(r) = codec::decode_idempotency(data) {
        let again: Result<IdempotencyRecord, _> =
            codec::decode_idempotency(&codec::encode_idempotency(&r));
        assert_eq!(
            again.as_ref(),
            Ok(&r),
            "idempotency record does not round-trip"
        );
    }
    if let Ok(v) = codec::decode_u64("fuzz", data) {
        assert_eq!(codec::encode_u64(v).as_slice(), data);
    }
}

/// `Causal-Token` header values: any text that parses displays as a token that parses back
/// to the same token, no longer than the text, and within the stated bounds.
pub fn check_token(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = s.parse::<CausalToken>() else {
        return;
    };
    let text = t.to_string();
    assert!(text.len() <= s.len(), "{s:?} displays longer: {text:?}");
    assert_eq!(
        text.parse::<CausalToken>().as_ref(),
        Ok(&t),
        "{text} does not parse back"
    );
    let entries = t.entries();
    assert!(
        entries.len() <= meridian_cart_store_core::token::TOKEN_ENTRIES_MAX,
        "{} entries",
        entries.len()
    );
    assert!(
        entries.windows(2).all(|w| w[0].0 < w[1].0),
        "unsorted: {s:?}"
    );
}

/// Replication frame bodies, as a peer's bytes reach a node: whatever decodes re-encodes to a
/// frame that decodes to the same message; and a replica that takes the message from a
/// connected peer, commits and times out neither panics nor stores a cart it cannot read
/// back, nor moves its progress past what is contiguous.
pub fn check_frame(data: &[u8]) {
    let Ok(msg) = wire::decode_body(data) else {
        return;
    };
    let frame = wire::encode_frame(&msg);
    assert_eq!(
        wire::decode_frame(&frame).as_ref(),
        Ok(&msg),
        "frame does not round-trip"
    );
    let clock = ManualClock::new(1_700_000_000_000);
    let node = Node::open(MemStorage::new(), clock, NodeConfig::new(ReplicaId(1)))
        .expect("a fresh node opens");
    let config = ReplicationConfig::new("here", vec!["peer".into()], Durability::Fsync);
    let now = Instant::now();
    let mut r = Replica::new(node, config, now);
    r.handle_connect(now, "peer");
    let accepted = r.handle_message(now, "peer", msg.clone()).is_ok();
    r.commit(now, Vec::new());
    r.handle_timeout(now + Duration::from_secs(1));
    while r.poll_transmit(now + Duration::from_secs(1)).is_some() {}
    if let wire::Message::Deltas { entries, .. } = &msg {
        for (origin, seq) in r.node().progress() {
            if origin == ReplicaId(1) {
                continue;
            }
            // Applied progress is contiguous from 1: every seq up to it came in this message.
            let got: Vec<u64> = entries
                .iter()
                .filter(|e| e.origin == origin)
                .map(|e| e.seq)
                .collect();
            assert!(accepted, "a refused message applied entries");
            assert!(
                (1..=seq).all(|s| got.contains(&s)),
                "progress {seq} of origin {} without every earlier seq: {got:?}",
                origin.0
            );
        }
        for e in entries {
            if let Ok(d) = codec::decode_delta_checked(&e.record) {
                if let Ok(view) = r.node().read(&d.cart) {
                    assert!(view.lines.iter().all(|l| l.quantity >= 1));
                }
            }
        }
    }
}
