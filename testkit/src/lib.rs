//! Test helpers shared by Meridian's crates, written once.
//!
//! - [`seeds`]: the one way a seeded test picks its seeds. `MERIDIAN_SEED=n` replays one
//!   seed; a malformed value is refused with a clear message instead of being ignored.
//! - [`SplitMix64`]: a tiny, fast, seeded generator for choosing operations.
//! - [`hex`]: lower-case hex of bytes, for golden vectors and messages.
//! - [`free_port`]: a loopback TCP port that was free a moment ago.
//!
//! ```
//! use meridian_testkit::{seeds, SplitMix64};
//!
//! for seed in seeds("doc example", 0..3) {
//!     let mut rng = SplitMix64::new(seed);
//!     assert!(rng.below(10) < 10);
//! }
//! ```
#![deny(missing_docs)]

use std::fmt::Write as _;

/// The environment variable that replays one seed.
pub const SEED_VAR: &str = "MERIDIAN_SEED";

/// The seeds a seeded test runs: the one in `MERIDIAN_SEED` if it is set, else `default`.
///
/// Prints which seeds run (cargo shows it for a failing test) and how to replay one.
///
/// # Panics
///
/// If `MERIDIAN_SEED` is set but is not a `u64` (decimal, or hex with `0x`): a typo must
/// not silently run the default seeds instead of the one asked for.
pub fn seeds(test: &str, default: impl IntoIterator<Item = u64>) -> Vec<u64> {
    match std::env::var(SEED_VAR) {
        Ok(s) => {
            let seed = parse_seed(&s).unwrap_or_else(|| {
                panic!("{SEED_VAR}={s:?} is not a u64 (decimal, or hex with 0x); refusing to guess")
            });
            eprintln!("{test}: replaying {SEED_VAR}={seed}");
            vec![seed]
        }
        Err(std::env::VarError::NotUnicode(s)) => panic!("{SEED_VAR}={s:?} is not a u64"),
        Err(std::env::VarError::NotPresent) => {
            let seeds: Vec<u64> = default.into_iter().collect();
            match (seeds.first(), seeds.last()) {
                (Some(a), Some(b)) => eprintln!(
                    "{test}: {} seeds, {a}..={b}; replay one with {SEED_VAR}=<seed>",
                    seeds.len()
                ),
                _ => eprintln!("{test}: no seeds"),
            }
            seeds
        }
    }
}

/// A message for a failed seed: names it and says how to replay it.
pub fn replay(test: &str, seed: u64) -> String {
    format!("{test}: failed with seed {seed}; replay with {SEED_VAR}={seed}")
}

fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16).ok(),
        None => s.replace('_', "").parse().ok(),
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014): a tiny seeded generator, enough to pick
/// operations. Not for cryptography.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (Lemire's multiply-shift; `n` must be non-zero).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SplitMix64::below(0)");
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A loopback TCP port that was free when asked (the listener is dropped at once, so
/// another process may take it: fine for tests that retry or fail loudly).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_hex_and_underscores() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed("0x2a"), Some(42));
        assert_eq!(parse_seed("1_000"), Some(1000));
        assert_eq!(parse_seed("forty"), None);
        assert_eq!(parse_seed("-1"), None);
    }

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // First outputs for seed 0 from the reference implementation.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = SplitMix64::new(7);
        assert!((0..1000).all(|_| r.below(3) < 3));
    }

    #[test]
    fn hex_is_lower_case_pairs() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
