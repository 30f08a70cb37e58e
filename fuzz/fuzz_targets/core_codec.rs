//! Every on-disk value of the cart-store core's `codec` module: stored carts, delta log
//! entries (plain and checked), idempotency records and big-endian `u64`s.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_fuzz::cart_store_core::check_codec;

fuzz_target!(|data: &[u8]| check_codec(data));
