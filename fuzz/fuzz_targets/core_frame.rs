//! Replication frames, as a peer's bytes reach a node: decoded, round-tripped, and fed to a
//! live replica from a connected peer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_fuzz::cart_store_core::check_frame;

fuzz_target!(|data: &[u8]| check_frame(data));
