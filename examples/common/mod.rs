//! Helpers shared by the examples, written once: the simulated start of time and how the
//! tables print times relative to it.
//!
//! Included by each example with `mod common;` (a directory, so that Cargo does not take it
//! for an example of its own). Not every example uses every helper.
#![allow(dead_code)]

use meridian::clocks::HlcTimestamp;

/// True time at the start of every simulation: 2023-11-14T22:13:20Z, in ms since the
/// epoch. Tables print times relative to it.
pub const T0_MS: u64 = 1_700_000_000_000;

/// A time in ms since the epoch, relative to [`T0_MS`] and signed: `+1234` or `-56`.
pub fn rel(ms: u64) -> String {
    let d = i128::from(ms) - i128::from(T0_MS);
    format!("{d:+}")
}

/// An HLC timestamp with its physical part relative to [`T0_MS`]: `+1234/2`.
pub fn hlc_rel(t: HlcTimestamp) -> String {
    format!("{}/{}", rel(t.physical_ms()), t.logical())
}

/// A check mark for a table cell.
pub fn mark(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}
