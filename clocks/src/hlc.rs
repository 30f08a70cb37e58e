//! [`Hlc`] and [`HlcTimestamp`]: hybrid logical clocks (Kulkarni et al. 2014).

use crate::{ClockError, PhysicalClock};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// The default bound on how far a remote timestamp may lead local physical time: 500 ms, as
/// in CockroachDB and uhlc.
pub const DEFAULT_MAX_OFFSET: Duration = Duration::from_millis(500);

/// A hybrid logical timestamp `(l, c)`: `l` is milliseconds since the Unix epoch (48 bits,
/// enough until the year 10889) and `c` a 16-bit logical counter.
///
/// Packed as `l << 16 | c` in a `u64`, so the integer order *is* the timestamp order.
/// Displayed as RFC 3339 (UTC, milliseconds) and the counter: `2026-11-23T07:30:32.123Z/5`.
/// Serde uses that string in human-readable formats (JSON) and the packed `u64` otherwise
/// (bincode).
///
/// ```
/// use meridian_clocks::HlcTimestamp;
/// let t = HlcTimestamp::new(1_700_000_000_123, 5);
/// assert_eq!(t.to_string(), "2023-11-14T22:13:20.123Z/5");
/// assert_eq!(t.to_string().parse::<HlcTimestamp>()?, t);
/// assert!(HlcTimestamp::from_u64(t.to_u64() + 1) > t);
/// # Ok::<(), meridian_clocks::ParseTimestampError>(())
/// ```
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HlcTimestamp(u64);

impl HlcTimestamp {
    /// The largest physical part representable (48 bits of milliseconds).
    pub const MAX_PHYSICAL_MS: u64 = (1 << (64 - LOGICAL_BITS)) - 1;
    /// The last calendar year that [`MAX_PHYSICAL_MS`](Self::MAX_PHYSICAL_MS) reaches
    /// (it ends on 10889-08-02). Parsing refuses later years.
    pub const MAX_YEAR: u64 = 10_889;
    /// The smallest timestamp.
    pub const ZERO: HlcTimestamp = HlcTimestamp(0);
    /// The largest timestamp.
    pub const MAX: HlcTimestamp = HlcTimestamp(u64::MAX);

    /// The timestamp `(physical_ms, logical)`. A `physical_ms` beyond 48 bits saturates to
    /// [`MAX_PHYSICAL_MS`](Self::MAX_PHYSICAL_MS).
    #[inline]
    pub fn new(physical_ms: u64, logical: u16) -> HlcTimestamp {
        HlcTimestamp(physical_ms.min(Self::MAX_PHYSICAL_MS) << LOGICAL_BITS | u64::from(logical))
    }

    /// `l`: milliseconds since the Unix epoch.
    #[inline]
    pub fn physical_ms(&self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// `c`: the logical counter.
    #[inline]
    pub fn logical(&self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }

    /// The packed form; integer order equals timestamp order.
    #[inline]
    pub fn to_u64(&self) -> u64 {
        self.0
    }

    /// Unpacks [`to_u64`](Self::to_u64). Every `u64` is a valid timestamp.
    #[inline]
    pub fn from_u64(v: u64) -> HlcTimestamp {
        HlcTimestamp(v)
    }
}

impl fmt::Debug for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HlcTimestamp({self})")
    }
}

impl fmt::Display for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.physical_ms();
        let (secs, milli) = (ms / 1000, ms % 1000);
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z/{}",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            self.logical()
        )
    }
}

/// Why a string is not an [`HlcTimestamp`]; the message names the expected shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseTimestampError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for ParseTimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid HLC timestamp {:?}: {} (expected YYYY-MM-DDTHH:MM:SS.mmmZ/COUNTER, \
             e.g. 2026-11-23T07:30:32.123Z/5)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for ParseTimestampError {}

impl FromStr for HlcTimestamp {
    type Err = ParseTimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseTimestampError {
            input: s.chars().take(64).collect(),
            reason,
        };
        let (time, counter) = s
            .rsplit_once('/')
            .ok_or_else(|| err("missing '/COUNTER'"))?;
        let logical = parse_counter(counter).ok_or_else(|| {
            err("counter is not an integer in 0..=65535 (decimal, no sign, no leading zeros)")
        })?;
        let time = time
            .strip_suffix('Z')
            .ok_or_else(|| err("time must be UTC, ending in 'Z'"))?;
        let (date, clock) = time.split_once('T').ok_or_else(|| err("missing 'T'"))?;
        let mut date_parts = date.rsplitn(3, '-');
        let (d, m, y) = (date_parts.next(), date_parts.next(), date_parts.next());
        let num = |p: Option<&str>, digits: Option<usize>| -> Option<u64> {
            let p = p?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            if digits.is_some_and(|n| p.len() != n) {
                return None;
            }
            p.parse().ok()
        };
        let year = parse_year(y.unwrap_or_default()).map_err(err)?;
        let month = num(m, Some(2))
            .filter(|m| (1..=12).contains(m))
            .ok_or_else(|| err("bad month"))?;
        let day = num(d, Some(2))
            .filter(|d| (1..=days_in_month(year, month)).contains(d))
            .ok_or_else(|| err("bad day"))?;
        let (hms, milli) = clock
            .split_once('.')
            .ok_or_else(|| err("missing '.mmm' milliseconds"))?;
        let milli =
            num(Some(milli), Some(3)).ok_or_else(|| err("milliseconds must be 3 digits"))?;
        let mut hms = hms.split(':');
        let h = num(hms.next(), Some(2))
            .filter(|h| *h < 24)
            .ok_or_else(|| err("bad hour"))?;
        let min = num(hms.next(), Some(2))
            .filter(|m| *m < 60)
            .ok_or_else(|| err("bad minute"))?;
        let sec = num(hms.next(), Some(2))
            .filter(|s| *s < 60)
            .ok_or_else(|| err("bad second"))?;
        if hms.next().is_some() {
            return Err(err("bad time of day"));
        }
        // `parse_year` bounded the year, so none of this can overflow; the checks are for
        // the last months of year 10889, which lie beyond the 48-bit range.
        let days = u64::try_from(days_from_civil(year as i64, month, day))
            .map_err(|_| err("before the Unix epoch"))?;
        let ms = days
            .checked_mul(86_400_000)
            .and_then(|v| v.checked_add(((h * 60 + min) * 60 + sec) * 1000 + milli))
            .filter(|v| *v <= HlcTimestamp::MAX_PHYSICAL_MS)
            .ok_or_else(|| err("beyond the 48-bit millisecond range"))?;
        Ok(HlcTimestamp::new(ms, logical))
    }
}

impl Serialize for HlcTimestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for HlcTimestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            u64::deserialize(d).map(HlcTimestamp)
        }
    }
}

/// Parses the year of a displayed timestamp: the canonical digits (4, or 5 from 10000 on,
/// no sign, no leading zero) of a year in `1970..=`[`MAX_YEAR`](HlcTimestamp::MAX_YEAR).
///
/// The range is checked on the digits, before any arithmetic: a year of 20 digits once
/// overflowed the day count (a panic in debug builds, a wrong timestamp in release).
fn parse_year(y: &str) -> Result<u64, &'static str> {
    const YEAR_DIGITS_MAX: usize = 5; // HlcTimestamp::MAX_YEAR has 5 digits.
    if y.is_empty() || !y.bytes().all(|b| b.is_ascii_digit()) {
        return Err("bad year");
    }
    let beyond = "year after 10889, the end of the 48-bit millisecond range";
    if y.len() > YEAR_DIGITS_MAX {
        return Err(beyond);
    }
    let year: u64 = y.parse().map_err(|_| "bad year")?;
    if year > HlcTimestamp::MAX_YEAR {
        return Err(beyond);
    }
    if year < 1970 {
        return Err("year before 1970, the start of the Unix epoch");
    }
    if y.starts_with('0') {
        return Err("year has a leading zero");
    }
    Ok(year)
}

/// Parses the counter of a displayed timestamp: canonical decimal (no sign, no leading
/// zeros), so that every string that parses displays back identically.
fn parse_counter(c: &str) -> Option<u16> {
    const COUNTER_DIGITS_MAX: usize = 5; // "65535"
    let canonical = !c.is_empty()
        && c.len() <= COUNTER_DIGITS_MAX
        && c.bytes().all(|b| b.is_ascii_digit())
        && (c == "0" || !c.starts_with('0'));
    if canonical {
        c.parse().ok()
    } else {
        None
    }
}

fn is_leap(y: u64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u64, u64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01; Howard Hinnant's `days_from_civil`.
fn days_from_civil(y: i64, m: u64, d: u64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * if m > 2 { m - 3 } else { m + 9 } + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A hybrid logical clock: logical time that stays within `max_offset` of physical time.
///
/// Follows Kulkarni, Demirbas et al., "Logical Physical Clocks and Consistent Snapshots in
/// Globally Distributed Databases" (2014). With the packed representation the paper's rules
/// become one line each, applied with a compare-and-swap so that `now` takes `&self`, is
/// lock-free, and can be shared between threads:
///
/// * send or local event: `t = max(t + 1, pt << 16)`;
/// * receive event: `t = max(t + 1, remote + 1, pt << 16)`.
///
/// When the logical counter would overflow, the `+ 1` carries into `l`: `l` advances by
/// 1 ms, and the clock stays strictly monotonic without panicking.
///
/// ```
/// use meridian_clocks::{Hlc, ManualClock};
/// use std::time::Duration;
///
/// let wall = ManualClock::new(1_000);
/// let hlc = Hlc::new(wall.clone(), Duration::from_millis(500));
/// let a = hlc.now();
/// wall.set(900); // the physical clock jumps backwards...
/// let b = hlc.now();
/// assert!(b > a); // ...the HLC does not
/// assert_eq!((b.physical_ms(), b.logical()), (1_000, 1));
///
/// // A remote timestamp from a clock 2 s ahead is refused and changes nothing.
/// let skewed = meridian_clocks::HlcTimestamp::new(2_900, 0);
/// let err = hlc.update(skewed).unwrap_err();
/// assert!(err.to_string().contains("2000 ms ahead"));
/// assert_eq!(hlc.last(), b);
/// ```
#[derive(Debug)]
pub struct Hlc<C: PhysicalClock> {
    clock: C,
    max_offset: Duration,
    max_offset_ms: u64,
    last: AtomicU64,
}

impl<C: PhysicalClock> Hlc<C> {
    /// A clock reading `clock`, refusing remote timestamps more than `max_offset` ahead.
    pub fn new(clock: C, max_offset: Duration) -> Self {
        Hlc {
            clock,
            max_offset,
            max_offset_ms: u64::try_from(max_offset.as_millis()).unwrap_or(u64::MAX),
            last: AtomicU64::new(0),
        }
    }

    /// A clock that will only issue timestamps above `bound`, an upper bound on what the
    /// previous incarnation issued (persisted before it acknowledged anything stamped).
    ///
    /// Rather than sleeping until physical time passes `bound` (CockroachDB's approach), the
    /// clock continues from `bound`: its `l` then leads physical time by at most
    /// `max_offset` until physical time catches up, which stays inside the HLC's bound.
    ///
    /// If `bound` leads physical time by more than `max_offset`, the clock was badly wrong
    /// before the restart (or is wrong now), and this returns
    /// [`ClockError::BoundAhead`] naming the gap.
    /// [`resume_past_bound_unchecked`](Self::resume_past_bound_unchecked) is the explicit
    /// override.
    pub fn resume(clock: C, max_offset: Duration, bound: HlcTimestamp) -> Result<Self, ClockError> {
        let hlc = Self::new(clock, max_offset);
        let pt = hlc.clock.now_ms();
        if bound.physical_ms() > pt.saturating_add(hlc.max_offset_ms) {
            return Err(ClockError::BoundAhead {
                bound,
                physical_ms: pt,
                gap: Duration::from_millis(bound.physical_ms() - pt),
                max_offset,
            });
        }
        hlc.last.store(bound.0, Ordering::SeqCst);
        Ok(hlc)
    }

    /// Like [`resume`](Self::resume) but continues after `bound` however far ahead it is.
    /// Local timestamps stay monotonic, but peers will hold back this node's messages (they
    /// look `gap` ahead) until physical time catches up with the bound.
    pub fn resume_past_bound_unchecked(
        clock: C,
        max_offset: Duration,
        bound: HlcTimestamp,
    ) -> Self {
        let hlc = Self::new(clock, max_offset);
        hlc.last.store(bound.0, Ordering::SeqCst);
        hlc
    }

    /// The maximum offset accepted from remote timestamps.
    pub fn max_offset(&self) -> Duration {
        self.max_offset
    }

    /// The physical clock.
    pub fn physical_clock(&self) -> &C {
        &self.clock
    }

    /// The latest timestamp issued or received, without advancing. Persist this (or a later
    /// value) as the upper bound to hand to [`resume`](Self::resume) after a restart.
    pub fn last(&self) -> HlcTimestamp {
        HlcTimestamp(self.last.load(Ordering::Acquire))
    }

    #[inline]
    fn physical_part(&self) -> u64 {
        self.clock.now_ms().min(HlcTimestamp::MAX_PHYSICAL_MS) << LOGICAL_BITS
    }

    #[inline]
    fn advance(&self, floor: u64) -> HlcTimestamp {
        let mut old = self.last.load(Ordering::Acquire);
        loop {
            let new = old.saturating_add(1).max(floor);
            match self
                .last
                .compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return HlcTimestamp(new),
                Err(seen) => old = seen,
            }
        }
    }

    /// A local or send event: `l = max(l, pt)`, and `c` is incremented if `l` did not move,
    /// else reset to 0.
    #[inline]
    pub fn now(&self) -> HlcTimestamp {
        self.advance(self.physical_part())
    }

    /// A receive event: `l = max(l, l_m, pt)`, with `c` per the paper (e.g. with
    /// `l = l' = l_m`, `c = max(c, c_m) + 1`). Returns the receive event's timestamp.
    ///
    /// A remote timestamp whose `l` exceeds local physical time by more than `max_offset`
    /// returns [`ClockError::RemoteAhead`] and leaves the clock unchanged.
    pub fn update(&self, remote: HlcTimestamp) -> Result<HlcTimestamp, ClockError> {
        let pt = self.clock.now_ms().min(HlcTimestamp::MAX_PHYSICAL_MS);
        if remote.physical_ms() > pt.saturating_add(self.max_offset_ms) {
            return Err(ClockError::RemoteAhead {
                remote,
                physical_ms: pt,
                ahead: Duration::from_millis(remote.physical_ms() - pt),
                max_offset: self.max_offset,
            });
        }
        Ok(self.advance((pt << LOGICAL_BITS).max(remote.0.saturating_add(1))))
    }
}
