//! `LwwRegister<String>` from the wire: accept, then the lattice laws with valid registers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_fuzz::{check_lattice, seeds};

fuzz_target!(|data: &[u8]| check_lattice(data, &seeds::lww_registers()));
