//! `AwSet` from the wire, of `u32` and of the zero-sized `()`: accept, then the lattice laws
//! with valid sets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_fuzz::{check_lattice, seeds};

fuzz_target!(|data: &[u8]| {
    check_lattice(data, &seeds::awsets());
    check_lattice(data, &seeds::awsets_of_unit());
});
