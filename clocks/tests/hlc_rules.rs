//! The paper's send and receive rules, case by case, and the error and restart paths.

use meridian_clocks::{ClockError, Hlc, HlcTimestamp, ManualClock, PhysicalClock};
use std::time::Duration;

fn hlc_at(ms: u64) -> (ManualClock, Hlc<ManualClock>) {
    let wall = ManualClock::new(ms);
    (wall.clone(), Hlc::new(wall, Duration::from_millis(500)))
}

fn ts(l: u64, c: u16) -> HlcTimestamp {
    HlcTimestamp::new(l, c)
}

#[test]
fn send_takes_physical_time_when_it_moves() {
    let (wall, hlc) = hlc_at(100);
    assert_eq!(hlc.now(), ts(100, 0));
    assert_eq!(hlc.now(), ts(100, 1));
    wall.set(101);
    assert_eq!(hlc.now(), ts(101, 0));
}

#[test]
fn receive_with_equal_l_takes_max_c_plus_one() {
    let (_wall, hlc) = hlc_at(100);
    assert_eq!(hlc.now(), ts(100, 0));
    assert_eq!(hlc.update(ts(100, 7)).unwrap(), ts(100, 8));
    assert_eq!(hlc.update(ts(100, 2)).unwrap(), ts(100, 9));
}

#[test]
fn receive_from_ahead_within_offset_takes_remote_l() {
    let (_wall, hlc) = hlc_at(100);
    assert_eq!(hlc.update(ts(400, 3)).unwrap(), ts(400, 4));
    // Local l now leads pt: sends keep l and count up.
    assert_eq!(hlc.now(), ts(400, 5));
}

#[test]
fn receive_from_behind_takes_physical_time() {
    let (_wall, hlc) = hlc_at(1_000);
    assert_eq!(hlc.update(ts(10, 9)).unwrap(), ts(1_000, 0));
}

#[test]
fn remote_too_far_ahead_is_refused_and_changes_nothing() {
    let (_wall, hlc) = hlc_at(10_000);
    let before = hlc.now();
    let err = hlc.update(ts(10_000 + 3_600_000, 0)).unwrap_err();
    match &err {
        ClockError::RemoteAhead {
            ahead, max_offset, ..
        } => {
            assert_eq!(*ahead, Duration::from_secs(3600));
            assert_eq!(*max_offset, Duration::from_millis(500));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "remote timestamp 1970-01-01T01:00:10.000Z/0 is 3600000 ms ahead of local physical \
         time (max offset 500 ms)"
    );
    assert_eq!(hlc.last(), before);
    // Exactly at the bound is accepted.
    assert!(hlc.update(ts(10_500, 0)).is_ok());
}

#[test]
fn logical_overflow_advances_l_without_panicking() {
    let (_wall, hlc) = hlc_at(100);
    assert_eq!(
        hlc.update(ts(100, u16::MAX - 2)).unwrap(),
        ts(100, u16::MAX - 1)
    );
    assert_eq!(hlc.now(), ts(100, u16::MAX));
    let next = hlc.now();
    assert_eq!(next, ts(101, 0));
    assert_eq!(hlc.update(ts(101, u16::MAX)).unwrap(), ts(102, 0));
}

#[test]
fn saturates_at_the_end_of_time_without_panicking() {
    let wall = ManualClock::new(u64::MAX);
    let hlc = Hlc::new(wall, Duration::from_millis(500));
    let a = hlc.now();
    assert_eq!(a.physical_ms(), HlcTimestamp::MAX_PHYSICAL_MS);
    for _ in 0..70_000 {
        hlc.now();
    }
    assert_eq!(hlc.now(), HlcTimestamp::MAX);
}

#[test]
fn resume_continues_after_the_bound() {
    let (wall, hlc) = hlc_at(50_000);
    let bound = hlc.now();
    wall.set(49_700); // restarted with the clock 300 ms back
    let resumed = Hlc::resume(wall.clone(), Duration::from_millis(500), bound).unwrap();
    assert!(resumed.now() > bound);
    // Bound in the past: start from physical time.
    wall.set(60_000);
    let resumed = Hlc::resume(wall, Duration::from_millis(500), bound).unwrap();
    assert_eq!(resumed.now(), ts(60_000, 0));
}

#[test]
fn resume_refuses_a_bound_far_ahead_and_the_override_accepts_it() {
    let wall = ManualClock::new(1_000_000);
    let bound = ts(1_000_000 + 3_600_000, 0);
    let err = Hlc::resume(wall.clone(), Duration::from_millis(500), bound).unwrap_err();
    assert!(matches!(err, ClockError::BoundAhead { gap, .. } if gap == Duration::from_secs(3600)));
    let msg = err.to_string();
    assert!(
        msg.contains("3600000 ms ahead") && msg.contains("override"),
        "{msg}"
    );
    let forced = Hlc::resume_past_bound_unchecked(wall.clone(), Duration::from_millis(500), bound);
    assert!(forced.now() > bound);
    assert_eq!(wall.now_ms(), 1_000_000);
}

#[test]
fn shared_between_threads_stays_unique_and_monotonic() {
    shared_between_threads(meridian_clocks::SystemClock);
}

/// The same invariants on the coarse clock, whose physical part stands still for a whole
/// kernel tick: the logical counter must carry every timestamp in between.
#[cfg(target_os = "linux")]
#[test]
fn the_coarse_clock_keeps_every_invariant() {
    use meridian_clocks::{CoarseSystemClock, SystemClock};
    shared_between_threads(CoarseSystemClock);
    // Within max_offset of real time, and never ahead of it by more than a tick.
    let hlc = Hlc::new(CoarseSystemClock, Duration::from_millis(500));
    let tick_ms = CoarseSystemClock::resolution().as_millis() as u64 + 1;
    for _ in 0..10_000 {
        let before = SystemClock.now_ms();
        let t = hlc.now();
        let after = SystemClock.now_ms();
        assert!(t.physical_ms() <= after + tick_ms, "{t} ahead of {after}");
        assert!(t.physical_ms() + 500 >= before, "{t} far behind {before}");
    }
    // Receive events follow the same rule: a remote far ahead is refused.
    let remote = HlcTimestamp::new(SystemClock.now_ms() + 3_600_000, 0);
    assert!(hlc.update(remote).is_err());
    let near = HlcTimestamp::new(SystemClock.now_ms() + 100, 7);
    assert!(hlc.update(near).unwrap() > near);
    assert!(hlc.now() > near);
}

fn shared_between_threads<C: PhysicalClock + Send + Sync + 'static>(clock: C) {
    let hlc = std::sync::Arc::new(Hlc::new(clock, Duration::from_millis(500)));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let hlc = hlc.clone();
            std::thread::spawn(move || {
                let mut v = Vec::with_capacity(20_000);
                for _ in 0..20_000 {
                    v.push(hlc.now());
                }
                assert!(v.windows(2).all(|w| w[0] < w[1]));
                v
            })
        })
        .collect();
    let mut all: Vec<HlcTimestamp> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "two threads got the same timestamp");
}

#[test]
fn parse_errors_say_what_is_expected() {
    for bad in [
        "",
        "2026-11-23T07:30:32.123Z",
        "2026-11-23T07:30:32.123/5",
        "2026-13-23T07:30:32.123Z/5",
        "2026-02-30T07:30:32.123Z/5",
        "2026-11-23T24:00:00.000Z/5",
        "2026-11-23T07:30:32Z/5",
        "2026-11-23T07:30:32.123Z/70000",
        "1969-12-31T23:59:59.999Z/0",
        "99999-01-01T00:00:00.000Z/0",
    ] {
        let err = bad.parse::<HlcTimestamp>().unwrap_err().to_string();
        assert!(
            err.contains("expected YYYY-MM-DDTHH:MM:SS.mmmZ/COUNTER"),
            "{bad}: {err}"
        );
    }
    assert_eq!(
        "2024-02-29T23:59:59.999Z/65535"
            .parse::<HlcTimestamp>()
            .unwrap(),
        ts(1_709_251_199_999, 65535)
    );
}

/// Issue 9 §1 defect 6: a year of 19 digits overflowed the day count, panicking in debug
/// builds and, in release, parsing as 1973. Every year after 10889 (the last of 48-bit
/// milliseconds) is an error that says so.
#[test]
fn defect_6_huge_year_is_an_error_not_an_overflow() {
    for year in [
        "8434413465874031200",
        "18446744073709551615",
        "99999999999999999999999",
        "10890",
        "99999",
    ] {
        let s = format!("{year}-01-01T00:00:00.000Z/0");
        let err = s.parse::<HlcTimestamp>().unwrap_err().to_string();
        assert!(err.contains("year after 10889"), "{s}: {err}");
    }
    // The last representable instant parses; one millisecond (or one day) later does not.
    let max = HlcTimestamp::new(HlcTimestamp::MAX_PHYSICAL_MS, u16::MAX);
    assert_eq!(max.to_string(), "10889-08-02T05:31:50.655Z/65535");
    assert_eq!(max.to_string().parse::<HlcTimestamp>().unwrap(), max);
    assert_eq!(HlcTimestamp::MAX, max);
    for beyond in [
        "10889-08-02T05:31:50.656Z/0",
        "10889-08-03T00:00:00.000Z/0",
        "10889-12-31T23:59:59.999Z/0",
    ] {
        let err = beyond.parse::<HlcTimestamp>().unwrap_err().to_string();
        assert!(
            err.contains("beyond the 48-bit millisecond range"),
            "{beyond}: {err}"
        );
    }
}

/// Only the displayed form parses, so that everything that parses displays back
/// identically: no sign, no leading zeros, no short or padded year.
#[test]
fn only_the_canonical_form_parses() {
    for bad in [
        "2024-02-29T23:59:59.999Z/+5",
        "2024-02-29T23:59:59.999Z/05",
        "2024-02-29T23:59:59.999Z/",
        "02024-02-29T23:59:59.999Z/5",
        "+2024-02-29T23:59:59.999Z/5",
        "970-01-01T00:00:00.000Z/5",
        "1970-1-01T00:00:00.000Z/5",
    ] {
        assert!(bad.parse::<HlcTimestamp>().is_err(), "{bad} parsed");
    }
    assert_eq!(
        "1970-01-01T00:00:00.000Z/0".parse::<HlcTimestamp>(),
        Ok(HlcTimestamp::ZERO)
    );
}
