//! `OrMap` from the wire, of causal counters, of nested dot maps and of dot functions:
//! accept, then the lattice laws with valid maps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_fuzz::{check_lattice, seeds};

fuzz_target!(|data: &[u8]| {
    check_lattice(data, &seeds::ormaps());
    check_lattice(data, &seeds::nested_ormaps());
    check_lattice(data, &seeds::dotfun_ormaps());
});
