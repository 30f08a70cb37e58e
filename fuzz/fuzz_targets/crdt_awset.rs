//! `AwSet` from the wire, of `u32` and of the zero-sized `()`, and in the delta-keyed form
//! (`DeltaKeyed`) of `u32` and of `u8` (whose deltas wrap): accept, then the lattice laws
//! with valid sets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_fuzz::{check_lattice, seeds};

fuzz_target!(|data: &[u8]| {
    check_lattice(data, &seeds::awsets());
    check_lattice(data, &seeds::awsets_of_unit());
    check_lattice(data, &seeds::awsets_delta_keyed());
    check_lattice(data, &seeds::awsets_delta_keyed_u8());
});
