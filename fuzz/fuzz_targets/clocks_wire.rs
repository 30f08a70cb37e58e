//! `VectorClock`, `CausalContext`, `Dot` and `LamportTimestamp` from the wire.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_fuzz::check_clock_wire;

fuzz_target!(|data: &[u8]| check_clock_wire(data));
