//! `Causal-Token` header parsing (the cart-store core's `token` module).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_fuzz::cart_store_core::check_token;

fuzz_target!(|data: &[u8]| check_token(data));
