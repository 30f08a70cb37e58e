//! Physical time sources: [`PhysicalClock`], [`SystemClock`], `CoarseSystemClock` (Linux),
//! [`ManualClock`] and [`DriftingClock`].

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
#[cfg(not(target_os = "linux"))]
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of physical time in milliseconds since the Unix epoch.
///
/// Physical clocks may jump backwards (NTP steps, a VM resumed); [`Hlc`](crate::Hlc) stays
/// monotonic regardless.
pub trait PhysicalClock {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    fn now_ms(&self) -> u64;
}

impl<T: PhysicalClock + ?Sized> PhysicalClock for &T {
    #[inline]
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

impl<T: PhysicalClock + ?Sized> PhysicalClock for Arc<T> {
    #[inline]
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

impl<T: PhysicalClock + ?Sized> PhysicalClock for Box<T> {
    #[inline]
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

/// The operating system's real-time clock (`CLOCK_REALTIME`, what `SystemTime::now` reads).
/// A time before 1970 reads as 0.
///
/// On Linux it calls libc's `clock_gettime` (through rustix's safe API; libc's, so that
/// libfaketime can still fake it) and converts the `timespec` to milliseconds itself: `SystemTime::now().duration_since(UNIX_EPOCH)` reads
/// the same clock but spends about a fifth of an `Hlc::update` on its out-of-line
/// `Duration` subtraction. Elsewhere it is `SystemTime`.
///
/// ```
/// use meridian_clocks::{PhysicalClock, SystemClock};
/// use std::time::{SystemTime, UNIX_EPOCH};
/// let std_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
/// let ms = SystemClock.now_ms();
/// assert!(ms >= std_ms && ms - std_ms < 1_000, "{ms} vs {std_ms}");
/// ```
#[derive(Copy, Clone, Debug, Default)]
pub struct SystemClock;

impl PhysicalClock for SystemClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        #[cfg(target_os = "linux")]
        {
            timespec_ms(rustix::time::clock_gettime(rustix::time::ClockId::Realtime))
        }
        #[cfg(not(target_os = "linux"))]
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d
                .as_secs()
                .saturating_mul(1000)
                .saturating_add(u64::from(d.subsec_millis())),
            Err(_) => 0,
        }
    }
}

/// Milliseconds since the epoch of a `timespec`; 0 before 1970, saturating far after.
#[cfg(target_os = "linux")]
#[inline]
fn timespec_ms(ts: rustix::time::Timespec) -> u64 {
    match u64::try_from(ts.tv_sec) {
        Ok(s) => s
            .saturating_mul(1000)
            .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000),
        Err(_) => 0,
    }
}

/// The operating system's real-time clock read at tick resolution
/// (`CLOCK_REALTIME_COARSE`, Linux only): an explicit opt-in for callers that stamp more
/// often than they need the time to the millisecond.
///
/// It costs a few nanoseconds where [`SystemClock`] costs tens (no read of the hardware
/// counter; the kernel updates the value once per tick). The price is resolution: the time
/// moves in steps of one kernel tick, [`resolution`](Self::resolution), typically 1 to 4
/// ms (`CONFIG_HZ` 1000 to 250). An [`Hlc`](crate::Hlc) on it stays correct (monotonic,
/// unique, within `max_offset` of real time): between ticks its logical counter orders the
/// timestamps, so they lag true time by at most one tick. Use it where timestamps order
/// events; keep [`SystemClock`] where the physical part is read as a wall time by people.
///
/// ```
/// use meridian_clocks::{CoarseSystemClock, Hlc, PhysicalClock, SystemClock};
/// use std::time::Duration;
/// let hlc = Hlc::new(CoarseSystemClock, Duration::from_millis(500));
/// let (a, b) = (hlc.now(), hlc.now());
/// assert!(a < b);
/// let tick = CoarseSystemClock::resolution();
/// assert!(tick <= Duration::from_millis(10), "{tick:?}");
/// let lag = SystemClock.now_ms().saturating_sub(CoarseSystemClock.now_ms());
/// assert!(lag <= 10 + tick.as_millis() as u64, "{lag} ms behind");
/// ```
#[cfg(target_os = "linux")]
#[derive(Copy, Clone, Debug, Default)]
pub struct CoarseSystemClock;

#[cfg(target_os = "linux")]
impl CoarseSystemClock {
    /// How far apart the readings step: one kernel tick.
    pub fn resolution() -> std::time::Duration {
        let ts = rustix::time::clock_getres(rustix::time::ClockId::RealtimeCoarse);
        std::time::Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    }
}

#[cfg(target_os = "linux")]
impl PhysicalClock for CoarseSystemClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        timespec_ms(rustix::time::clock_gettime(
            rustix::time::ClockId::RealtimeCoarse,
        ))
    }
}

/// A settable clock for tests and simulations. Clones share one time.
///
/// ```
/// use meridian_clocks::{ManualClock, PhysicalClock};
/// let clock = ManualClock::new(1_000);
/// let handle = clock.clone();
/// handle.advance(5);
/// assert_eq!(clock.now_ms(), 1_005);
/// handle.set(10); // backwards jumps are allowed
/// assert_eq!(clock.now_ms(), 10);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> Self {
        ManualClock {
            ms: Arc::new(AtomicU64::new(ms)),
        }
    }

    /// Sets the time (forwards or backwards).
    pub fn set(&self, ms: u64) {
        self.ms.store(ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `ms` (saturating).
    pub fn advance(&self, ms: u64) {
        let _ = self
            .ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_add(ms))
            });
    }
}

impl PhysicalClock for ManualClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// A simulated imperfect clock: true time (a shared [`ManualClock`]) seen through a fixed
/// rate error (`drift_ppm`, parts per million) and an offset that NTP-style corrections can
/// step, forwards or backwards.
///
/// `reading = true + offset + (true − start) · drift_ppm / 10⁶`, floored at 0.
///
/// ```
/// use meridian_clocks::{DriftingClock, ManualClock, PhysicalClock};
/// let truth = ManualClock::new(1_000_000);
/// let fast = DriftingClock::new(truth.clone(), 50, 1_000); // 50 ms ahead, gains 1 ms/s
/// truth.advance(10_000);
/// assert_eq!(fast.now_ms(), 1_010_060);
/// fast.step(-80); // an NTP correction jumps it back
/// assert_eq!(fast.now_ms(), 1_009_980);
/// ```
#[derive(Clone, Debug)]
pub struct DriftingClock {
    truth: ManualClock,
    start_ms: u64,
    drift_ppm: i64,
    offset_ms: Arc<AtomicI64>,
}

impl DriftingClock {
    /// A clock `offset_ms` off true time now, gaining `drift_ppm` per million (negative: losing).
    pub fn new(truth: ManualClock, offset_ms: i64, drift_ppm: i64) -> Self {
        let start_ms = truth.now_ms();
        DriftingClock {
            truth,
            start_ms,
            drift_ppm,
            offset_ms: Arc::new(AtomicI64::new(offset_ms)),
        }
    }

    /// Steps the clock by `delta_ms` (an NTP correction; negative jumps backwards).
    pub fn step(&self, delta_ms: i64) {
        self.offset_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }

    /// The current error `reading − true time`, in ms.
    pub fn error_ms(&self) -> i64 {
        self.now_ms() as i64 - self.truth.now_ms() as i64
    }
}

impl PhysicalClock for DriftingClock {
    fn now_ms(&self) -> u64 {
        let t = self.truth.now_ms() as i128;
        let elapsed = t - self.start_ms as i128;
        let drift = elapsed * self.drift_ppm as i128 / 1_000_000;
        let v = t + self.offset_ms.load(Ordering::SeqCst) as i128 + drift;
        v.clamp(0, u64::MAX as i128) as u64
    }
}
