//! Checkout `Snapshot`s from the wire: accept, then check out of valid carts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_fuzz::{check_snapshot, seeds};

fuzz_target!(|data: &[u8]| check_snapshot(data, &seeds::carts()));
