//! The cart-store core's on-disk values and its `Causal-Token` header.

use crate::{assert_round_trips, check_pair, seeds};
use meridian_cart_store_core::codec::{self, DeltaRecord, IdempotencyRecord};
use meridian_cart_store_core::CausalToken;

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
