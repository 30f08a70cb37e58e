//! `HlcTimestamp`: `FromStr`, and serde decoding in JSON and bincode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_fuzz::check_hlc;

fuzz_target!(|data: &[u8]| check_hlc(data));
